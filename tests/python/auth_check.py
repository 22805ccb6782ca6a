"""fjord from Python with a bearer token, on a cluster run with `--authentication required
--authorization acl`. Run by tests/tests/python_client.rs:

    FJORD_TOKEN=<token> python3 tests/python/auth_check.py TOPIC HOST:PORT [HOST:PORT ...]

The token's user may write TOPIC (and so describe it) and nothing else. Checks: a call
without the token is UNAUTHENTICATED; with it, the topic is listed and a record is produced
at the partition's leader; a fetch is PERMISSION_DENIED with `fjord-reason: NOT_AUTHORIZED`.
Every loop is bounded; exits non-zero, saying what failed, on the first wrong outcome.
"""

import os
import sys
import time

import grpc
from fjord_stubs import pb, rpc  # generates the modules from the proto

ATTEMPTS = 50  # for transient UNAVAILABLE only


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    topic, addrs = sys.argv[1], sys.argv[2:]
    token = os.environ["FJORD_TOKEN"]
    auth = [("authorization", f"Bearer {token}")]
    one = rpc.FjordStub(grpc.insecure_channel(addrs[0]))

    try:
        one.Metadata(pb.MetadataRequest(), timeout=10)
        fail("a call without a token was answered")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            fail(f"no token: {e.code()} {e.details()}")
        reason = dict(e.trailing_metadata() or ()).get("fjord-reason")
        if reason != "NOT_AUTHENTICATED":
            fail(f"no token: fjord-reason {reason!r}")

    leader = None
    for _ in range(ATTEMPTS):
        md = one.Metadata(pb.MetadataRequest(), metadata=auth, timeout=10)
        names = [t.name for t in md.topics]
        if names != [topic]:
            fail(f"the token's user should see only {topic}: {names}")
        leader = md.topics[0].partitions[0].leader
        if leader:
            break
        time.sleep(0.1)
    address = {n.id: n.address for n in md.nodes}[leader]
    at_leader = rpc.FjordStub(grpc.insecure_channel(address))

    req = pb.ProduceRequest(topic=topic, partition=0, records=[pb.Record(value=b"from python")])
    for _ in range(ATTEMPTS):
        (result,) = at_leader.Produce(req, metadata=auth, timeout=10).results
        if not result.HasField("error"):
            break
        if result.error.code != grpc.StatusCode.UNAVAILABLE.value[0]:
            fail(f"produce refused: {result.error.message}")
        time.sleep(0.1)
    else:
        fail("produce: still UNAVAILABLE")
    print(f"produced at offset {result.base_offset} of {topic}/0 with a token")

    try:
        at_leader.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=0, max_bytes=4096),
                        metadata=auth, timeout=10)
        fail("a fetch without read permission was answered")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.PERMISSION_DENIED:
            fail(f"fetch: {e.code()} {e.details()}")
        reason = dict(e.trailing_metadata() or ()).get("fjord-reason")
        if reason != "NOT_AUTHORIZED" or "read" not in e.details():
            fail(f"fetch: {reason!r} {e.details()}")
    print("OK: token, produce, and refusals as documented")


if __name__ == "__main__":
    main()
