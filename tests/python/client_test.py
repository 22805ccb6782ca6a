"""fjord from Python: a client generated from proto/fjord.proto with grpcio-tools.

Run by tests/tests/python_client.rs against a real 3-node cluster:

    python3 tests/python/client_test.py HOST:PORT [HOST:PORT ...]

The first address is "the single node" every unkeyed request goes to. Keyed records follow
the leader hint in the answer, as any leader-aware client does. Every loop is bounded.
Exits non-zero, saying what failed, on the first wrong outcome.
"""

import sys
import time

import grpc
from fjord_stubs import pb, rpc  # generates the modules from the proto

TOPIC = "python-client"
PARTITIONS = 3
UNKEYED = 30
KEYED = 12
ATTEMPTS = 50  # per request, for transient UNAVAILABLE only


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def stub(addr):
    return rpc.FjordStub(grpc.insecure_channel(addr))


def call(fn, req, what, timeout=10):
    """One RPC, retried (bounded) while the cluster says UNAVAILABLE."""
    for _ in range(ATTEMPTS):
        try:
            return fn(req, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                fail(f"{what}: {e.code()} {e.details()}")
            time.sleep(0.1)
    fail(f"{what}: still UNAVAILABLE after {ATTEMPTS} attempts")


def produce_result(node, req, what):
    """Produces `req` at `node`, following UNAVAILABLE partition errors (and their leader
    hint); returns the partition's result, acknowledged or refused for good."""
    target = node
    for _ in range(ATTEMPTS):
        resp = call(stub(target).Produce, req, what)
        (result,) = resp.results
        err = result.error
        if not result.HasField("error") or err.code != grpc.StatusCode.UNAVAILABLE.value[0]:
            return result
        if err.leader_address:
            target = err.leader_address
        time.sleep(0.05)
    fail(f"{what}: not acknowledged: {err.message}")


def produce(node, req, what):
    """Produces `req` at `node` until it is acknowledged."""
    result = produce_result(node, req, what)
    if result.HasField("error"):
        fail(f"{what}: refused: {result.error.code} {result.error.message}")
    return result


def one_batch(producer_id, epoch, seq, value):
    body = pb.RecordList(records=[pb.Record(value=value)]).SerializeToString()
    return pb.ProduceRequest(topic=TOPIC, acks=pb.ACKS_CP, batches=[pb.RecordBatch(
        partition=0, producer_id=producer_id, producer_epoch=epoch, base_sequence=seq,
        record_count=1, crc32c=crc32c(body), records=body)])


def crc32c(data):
    """CRC-32C (Castagnoli), as RecordBatch.crc32c wants it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def main():
    addrs = sys.argv[1:]
    node = addrs[0]
    one = stub(node)

    call(one.CreateTopic, pb.CreateTopicRequest(
        name=TOPIC, partitions=PARTITIONS, replication_factor=3), "create topic")

    # Every partition has a leader (as the node describes the topic), bounded.
    for _ in range(ATTEMPTS):
        topic = call(one.DescribeTopic, pb.DescribeTopicRequest(name=TOPIC), "describe").topic
        if all(p.leader for p in topic.partitions):
            break
        time.sleep(0.1)
    else:
        fail(f"partitions without a leader: {topic}")

    # Unkeyed records, every request to the one node: each is acknowledged there.
    redirected = 0
    sent = {}
    for i in range(UNKEYED):
        value = f"unkeyed-{i}".encode()
        req = pb.ProduceRequest(topic=TOPIC, acks=pb.ACKS_CP,
                                records=[pb.Record(value=value)])
        resp = call(one.Produce, req, f"unkeyed produce {i}")
        (result,) = resp.results
        if result.HasField("error"):
            redirected += 1
            result = produce(node, req, f"unkeyed produce {i}")
        sent[value] = (result.partition, result.base_offset)
    if redirected > 2:
        fail(f"{redirected} of {UNKEYED} unkeyed produces to one node were not served there")

    # Keyed records: murmur2 placement, the same key always in the same partition.
    for i in range(KEYED):
        key = f"key-{i % 4}".encode()
        value = f"keyed-{i}".encode()
        req = pb.ProduceRequest(topic=TOPIC, acks=pb.ACKS_CP,
                                records=[pb.Record(key=key, value=value)])
        result = produce(node, req, f"keyed produce {i}")
        sent[value] = (result.partition, result.base_offset)
    by_key = {}
    for value, (p, _) in sent.items():
        if value.startswith(b"keyed-"):
            key = int(value.split(b"-")[1]) % 4
            if by_key.setdefault(key, p) != p:
                fail(f"key-{key} went to partitions {by_key[key]} and {p}")

    # Everything reads back, at the offsets the acknowledgements gave.
    seen = {}
    for p in range(PARTITIONS):
        offset = 0
        for _ in range(ATTEMPTS):
            req = pb.FetchRequest(topic=TOPIC, partition=p, offset=offset, read=pb.READ_AP)
            resp = call(one.Fetch, req, f"fetch p{p}")
            for b in resp.batches:
                records = pb.RecordList.FromString(b.records).records
                for k, r in enumerate(records):
                    if b.base_offset + k >= offset:
                        seen[r.value] = (p, b.base_offset + k)
                offset = max(offset, b.base_offset + len(records))
            if offset >= resp.high_watermark:
                break
    for value, at in sent.items():
        if seen.get(value) != at:
            fail(f"{value!r} acknowledged at {at}, read back at {seen.get(value)}")

    # A 1 ms deadline: done or DEADLINE_EXCEEDED, never CANCELLED.
    codes = {}
    for i in range(20):
        for what, fn, req in [
            ("create", one.CreateTopic, pb.CreateTopicRequest(
                name=f"deadline-{i}", partitions=1, replication_factor=3)),
            ("produce", one.Produce, pb.ProduceRequest(
                topic=TOPIC, acks=pb.ACKS_CP, records=[pb.Record(value=b"deadline")])),
        ]:
            try:
                fn(req, timeout=0.001)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
                if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    fail(f"{what} with a 1 ms deadline: {e.code()} {e.details()}")
            codes[code] = codes.get(code, 0) + 1

    # A body that does not decode: INVALID_ARGUMENT.
    raw = grpc.insecure_channel(node).unary_unary("/fjord.v1.Fjord/Produce")
    try:
        raw(b"\xff\xff\xff\xff", timeout=10)
        fail("an undecodable body was accepted")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            fail(f"undecodable body: {e.code()} {e.details()}")

    # A message over the size limit (9 MiB for the client API): RESOURCE_EXHAUSTED.
    big = pb.ProduceRequest(topic=TOPIC, acks=pb.ACKS_CP,
                            records=[pb.Record(value=b"x" * (10 << 20))])
    try:
        one.Produce(big, timeout=30)
        fail("an oversized message was accepted")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            fail(f"oversized message: {e.code()} {e.details()}")

    # A named producer initialised again fences its earlier instance (a zombie).
    first = call(one.InitProducer, pb.InitProducerRequest(producer_name="py-writer"), "init")
    again = call(stub(addrs[-1]).InitProducer,
                 pb.InitProducerRequest(producer_name="py-writer"), "init again")
    if (again.producer_id, again.producer_epoch) != (first.producer_id, first.producer_epoch + 1):
        fail(f"re-initialising a name gave {again}, after {first}")
    pid = first.producer_id
    produce(node, one_batch(pid, again.producer_epoch, 0, b"successor"), "successor's batch")
    zombie = produce_result(node, one_batch(pid, first.producer_epoch, 1, b"zombie"), "zombie")
    if (not zombie.HasField("error")
            or zombie.error.code != grpc.StatusCode.FAILED_PRECONDITION.value[0]
            or zombie.error.reason != pb.PRODUCER_FENCED):
        fail(f"the zombie's batch was not fenced: {zombie}")
    # A producer id nobody allocated.
    forged = produce_result(node, one_batch(1 << 52, 0, 0, b"forged"), "forged id")
    if forged.error.reason != pb.UNKNOWN_PRODUCER_ID:
        fail(f"a forged producer id was not refused: {forged}")

    groups = group_member(addrs)
    configured = group_config(addrs)
    topic_configured = topic_config(addrs)
    lifecycle_checked = lifecycle(addrs)

    print(f"ok: {len(sent)} records produced and read back; unkeyed redirected {redirected}; "
          f"1 ms deadlines: {codes}; zombie fenced: {zombie.error.message}; {groups}; "
          f"{configured}; {topic_configured}; {lifecycle_checked}")


def coordinator_call(addrs, method, req, what):
    """A group RPC at the group's coordinator, following NOT_COORDINATOR hints (bounded)."""
    target = call(stub(addrs[0]).FindCoordinator,
                  pb.FindCoordinatorRequest(group=req.group), "find coordinator").address
    for _ in range(ATTEMPTS):
        try:
            return getattr(stub(target), method)(req, timeout=10)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            hint = dict(e.trailing_metadata()).get("fjord-leader-address")
            if hint:
                target = hint
            time.sleep(0.1)
    fail(f"{what}: coordinator still UNAVAILABLE after {ATTEMPTS} attempts")


def group_member(addrs):
    """A consumer group member written against the proto alone: join, own every partition,
    commit, read the commit back; a second member takes partitions only once the first gave
    them up; a stale epoch and a removed member are refused with their reason."""
    g = "py-group"
    sub = pb.Subscription(topics=[TOPIC])

    def beat(member_id, epoch, owned, what):
        return coordinator_call(addrs, "GroupHeartbeat", pb.GroupHeartbeatRequest(
            group=g, member_id=member_id, member_epoch=epoch, subscription=sub,
            owned=pb.OwnedPartitions(partitions=owned)), what)

    a = beat("", 0, [], "join a")
    if sum(len(t.partitions) for t in a.assignment) != PARTITIONS:
        fail(f"a lone member should own all {PARTITIONS} partitions: {a}")
    owned_a = list(a.assignment)
    coordinator_call(addrs, "CommitOffsets", pb.CommitOffsetsRequest(
        group=g, member_id=a.member_id, member_epoch=a.member_epoch,
        offsets=[pb.OffsetCommit(topic=TOPIC, partition=owned_a[0].partitions[0], offset=1)]),
        "commit")
    got = coordinator_call(addrs, "FetchOffsets", pb.FetchOffsetsRequest(
        group=g, member_id=a.member_id, member_epoch=a.member_epoch), "fetch offsets")
    if [o.offset for o in got.offsets] != [1]:
        fail(f"the committed offset did not read back: {got}")
    # Lag in records and in time, from the server: every partition shows both.
    d = coordinator_call(addrs, "DescribeGroup", pb.DescribeGroupRequest(group=g), "describe")
    for o in d.offsets:
        if not o.HasField("lag_ms") or (o.lag_records == 0 and o.lag_ms != 0) or o.lag_ms < 0:
            fail(f"DescribeGroup's lag of {o.topic}/{o.partition} is not what it says: {o}")

    # b joins: nothing for b until a gives something up.
    b = beat("", 0, [], "join b")
    b = beat(b.member_id, b.member_epoch, [], "b again")
    if b.assignment:
        fail(f"b was given partitions a still owns: {b}")
    a2 = beat(a.member_id, a.member_epoch, owned_a, "a learns of b")
    beat(a2.member_id, a2.member_epoch, list(a2.assignment), "a gave up")
    b = beat(b.member_id, b.member_epoch, [], "b after a gave up")
    owned_b = sum(len(t.partitions) for t in b.assignment)
    owned_a = sum(len(t.partitions) for t in a2.assignment)
    if owned_b == 0 or owned_a + owned_b != PARTITIONS:
        fail(f"after a gave up, a owns {owned_a} and b {owned_b} of {PARTITIONS}")

    # A stale epoch is fenced; a member that left is unknown.
    for epoch, reason in [(a2.member_epoch + 5, "FENCED_MEMBER_EPOCH")]:
        try:
            beat(a.member_id, epoch, [], "stale epoch")
            fail("a heartbeat with a wrong epoch was accepted")
        except grpc.RpcError as e:
            if (e.code(), dict(e.trailing_metadata()).get("fjord-reason")) != (
                    grpc.StatusCode.FAILED_PRECONDITION, reason):
                fail(f"wrong epoch: {e.code()} {e.trailing_metadata()}")
    beat(b.member_id, -1, [], "b leaves")
    try:
        coordinator_call(addrs, "CommitOffsets", pb.CommitOffsetsRequest(
            group=g, member_id=b.member_id, member_epoch=b.member_epoch,
            offsets=[pb.OffsetCommit(topic=TOPIC, partition=0, offset=0)]), "left member commits")
        fail("a member that left could commit")
    except grpc.RpcError as e:
        if dict(e.trailing_metadata()).get("fjord-reason") != "UNKNOWN_MEMBER_ID":
            fail(f"a left member's commit: {e.code()} {e.trailing_metadata()}")
    return f"group: {PARTITIONS} partitions shared, commits fenced"



def group_config(addrs):
    """AlterGroupConfig: a group configured before it has a member shows its own settings in
    DescribeGroup; a value outside its limits, or a setting both set and reset, is
    INVALID_ARGUMENT; a reset is the server's default again."""
    g = "py-configured"
    got = coordinator_call(addrs, "AlterGroupConfig", pb.AlterGroupConfigRequest(
        group=g, session_timeout_ms=2000, heartbeat_interval_ms=500, assignor="range"),
        "alter group config")
    if (got.session_timeout_ms, got.heartbeat_interval_ms, got.assignor) != (2000, 500, "range") \
            or not (got.session_timeout_override and got.heartbeat_interval_override
                    and got.assignor_override):
        fail(f"the group's own settings were not in force: {got}")
    d = coordinator_call(addrs, "DescribeGroup", pb.DescribeGroupRequest(group=g), "describe")
    if (d.state, d.session_timeout_ms, d.session_timeout_override, d.assignor) != (
            "EMPTY", 2000, True, "range"):
        fail(f"DescribeGroup does not show the group's own settings: {d}")
    bad = [
        (pb.AlterGroupConfigRequest(group=g, session_timeout_ms=10), "MIN_SESSION_TIMEOUT_MS"),
        (pb.AlterGroupConfigRequest(group=g, heartbeat_interval_ms=5000), "session timeout"),
        (pb.AlterGroupConfigRequest(group=g, assignor="sticky"), "uniform"),
        (pb.AlterGroupConfigRequest(group=g, session_timeout_ms=3000,
                                    reset_session_timeout=True), "both set and reset"),
        (pb.AlterGroupConfigRequest(group=g), "changes nothing"),
    ]
    for req, says in bad:
        try:
            coordinator_call(addrs, "AlterGroupConfig", req, "bad group config")
            fail(f"a bad group config was accepted: {req}")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT or says not in e.details():
                fail(f"bad group config {req}: {e.code()} {e.details()}")
    reset = coordinator_call(addrs, "AlterGroupConfig", pb.AlterGroupConfigRequest(
        group=g, reset_session_timeout=True, reset_heartbeat_interval=True, reset_assignor=True),
        "reset group config")
    if reset.session_timeout_override or reset.heartbeat_interval_override \
            or reset.assignor_override:
        fail(f"a reset left an override: {reset}")
    return f"group config: set, shown, {len(bad)} bad ones refused, reset"


def topic_config(addrs):
    """AlterTopicConfig on the live topic: set two settings and reset one; every node's
    DescribeTopic shows the topic's own values and the values in force; a value outside its
    limits is INVALID_ARGUMENT naming the limit."""
    one = stub(addrs[0])
    got = call(one.AlterTopicConfig, pb.AlterTopicConfigRequest(
        name=TOPIC, set={"retention_ms": "60000", "cleanup_policy": "compact,delete"},
        reset=["retention_bytes"]), "alter topic config").topic
    if (got.config.retention_ms, got.config.cleanup_policy) != (60000, "compact,delete") \
            or got.config.HasField("retention_bytes") or got.effective.retention_bytes != -1:
        fail(f"the alter's answer does not show the change: {got}")
    for addr in addrs:
        for _ in range(ATTEMPTS):
            t = call(stub(addr).DescribeTopic, pb.DescribeTopicRequest(name=TOPIC),
                     f"describe at {addr}").topic
            if t.config.HasField("retention_ms") and t.config.retention_ms == 60000 \
                    and t.effective.retention_ms == 60000 \
                    and t.effective.cleanup_policy == "compact,delete":
                break
            time.sleep(0.1)
        else:
            fail(f"{addr} does not describe the altered config: {t}")
    try:
        one.AlterTopicConfig(pb.AlterTopicConfigRequest(
            name=TOPIC, set={"retention_ms": "0"}), timeout=10)
        fail("retention_ms = 0 was accepted")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT \
                or "MAX_CONFIG_DURATION_MS" not in e.details():
            fail(f"retention_ms = 0: {e.code()} {e.details()}")
    return "topic config: altered, shown on every node, a bad value refused"


def at_leader(addrs, method, req, what):
    """Calls `method` on each node until one answers (the others are not the leader)."""
    last = None
    for _ in range(ATTEMPTS):
        for addr in addrs:
            try:
                return getattr(stub(addr), method)(req, timeout=10), addr
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    fail(f"{what} at {addr}: {e.code()} {e.details()}")
                last = e
        time.sleep(0.1)
    fail(f"{what}: no leader answered: {last}")


def lifecycle(addrs):
    """DeleteRecords moves partition 0's log start offset (CP, at its leader); a fetch below
    it is OUT_OF_RANGE with the start in `fjord-log-start-offset`; ListOffsets answers the
    earliest, the latest and by time; an unknown offset query is INVALID_ARGUMENT."""
    latest, leader = at_leader(addrs, "ListOffsets", pb.ListOffsetsRequest(
        topic=TOPIC, partition=0, query=pb.OFFSET_LATEST), "list latest")
    if latest.high_watermark < 2:
        fail(f"partition 0 holds too few records for the check: {latest}")
    cut = latest.high_watermark // 2
    deleted = call(stub(leader).DeleteRecords, pb.DeleteRecordsRequest(
        topic=TOPIC, partition=0, before_offset=cut), "delete records")
    if deleted.log_start_offset != cut:
        fail(f"DeleteRecords before {cut} answered {deleted}")
    try:
        stub(leader).Fetch(pb.FetchRequest(topic=TOPIC, partition=0, offset=0), timeout=10)
        fail("a fetch below the log start offset was answered")
    except grpc.RpcError as e:
        start = dict(e.trailing_metadata() or ()).get("fjord-log-start-offset")
        if e.code() != grpc.StatusCode.OUT_OF_RANGE or start != str(cut):
            fail(f"fetch below the start: {e.code()} {e.details()} (start {start})")
    earliest = call(stub(leader).ListOffsets, pb.ListOffsetsRequest(
        topic=TOPIC, partition=0, query=pb.OFFSET_EARLIEST), "list earliest")
    by_time = call(stub(leader).ListOffsets, pb.ListOffsetsRequest(
        topic=TOPIC, partition=0, query=pb.OFFSET_BY_TIME, timestamp_ms=0), "list by time")
    if earliest.offset != cut or not by_time.found or by_time.offset != cut:
        fail(f"after the deletion: earliest {earliest}, by time {by_time}")
    try:
        stub(leader).ListOffsets(pb.ListOffsetsRequest(topic=TOPIC, partition=0, query=9),
                                 timeout=10)
        fail("an unknown offset query was accepted")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            fail(f"unknown offset query: {e.code()} {e.details()}")
    return f"lifecycle: log start moved to {cut}, reads below it OUT_OF_RANGE"


if __name__ == "__main__":
    main()
