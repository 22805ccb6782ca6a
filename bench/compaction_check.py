"""What compaction left on each replica, and how fast the cleaner went: bench/compaction.sh's
checker.

    python3 bench/compaction_check.py passes --logs N1.log,N2.log,N3.log
    python3 bench/compaction_check.py replicas --topic T --nodes HOST:PORT,... \
        --records N --keys K [--partition P] --logs N1.log,N2.log,N3.log [--consumed FILE]

passes: every compaction pass in the nodes' logs ("compaction pass started" then "compacted"
for a group): per node, one JSON object {"node", "passes": [{"group", "start", "end",
"secs", "upto", "rewritten", "keys"}...]} (start/end: unix seconds).

replicas: reads partition P of each node's own replica from its log start to its high
watermark (Fetch with `read: AP`, asked of that node alone, as bench/replica_offsets.py asks
ListOffsets), and checks it against what `fjord bench produce --keys K --index-values
--producers 1` wrote: record i has key "key-{i % K}" and a value starting with i (20 digits),
written in order. The producer's last write of key k is then the largest i < N with
i % K == k. Per node, one JSON object:
  {"node", "node_id", "log_start_offset", "high_watermark", "records",   # records read
   "clean_upto",            # the last "compacted" upto of the partition in the node's log
   "below_upto", "below_upto_keys", "below_upto_duplicate_keys",         # the compacted part
   "tail",                  # records read at offsets >= clean_upto: the uncompacted tail
   "tail_span",             # high_watermark - clean_upto (all of them, if none is missing)
   "latest_ok",             # each key's last record read is the producer's last write of it
   "keys_missing", "keys_stale",   # keys without a record; keys whose last read is older
   "offsets_increase", "digest"}   # digest: of every (offset, key, index) read, per replica
then one {"summary": ...} with whether all replicas hold the same records. With --consumed
(the output of `fjord consume --format json --from-beginning`, a CP consumer), the same
latest-value check on what that consumer read. Exit status 1 if a check fails.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 10
FETCH_MAX_BYTES = 4 << 20
INDEX_BYTES = 20
# Bound on fetches per replica: a replica's records are read in at most this many requests.
MAX_FETCHES = 200_000

START_RE = re.compile(r"^(\S+)\s.*compaction pass started.*\bgroup=(\d+)\s+upto=(\d+)")
DONE_RE = re.compile(
    r"^(\S+)\s.*\bcompacted\b.*\bgroup=(\d+)\s+upto=(\d+)\s+rewritten=(\d+)\s+keys=(\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def unix(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def passes_of(log):
    """The compaction passes in one node's log, in order."""
    started, out = {}, []
    with open(log, errors="replace") as f:
        for line in f:
            line = ANSI_RE.sub("", line)
            m = START_RE.search(line)
            if m:
                started[int(m.group(2))] = unix(m.group(1))
                continue
            m = DONE_RE.search(line)
            if m:
                group, end = int(m.group(2)), unix(m.group(1))
                start = started.pop(group, None)
                out.append({"group": group, "start": start, "end": end,
                            "secs": None if start is None else round(end - start, 3),
                            "upto": int(m.group(3)), "rewritten": int(m.group(4)),
                            "keys": int(m.group(5))})
    return out


def cmd_passes(args):
    for i, log in enumerate(args.logs.split(","), 1):
        print(json.dumps({"node": i, "passes": passes_of(log)}))
    return 0


def read_replica(stub, pb, topic, partition):
    """Every record of one node's replica, AP from that node: (start, hw, node_id, records)
    with records as (offset, key, index)."""
    listed = stub.ListOffsets(pb.ListOffsetsRequest(
        topic=topic, partition=partition, query=pb.OFFSET_EARLIEST, read=pb.READ_AP),
        timeout=TIMEOUT_S)
    start, hw = listed.log_start_offset, listed.high_watermark
    out, offset = [], start
    for _ in range(MAX_FETCHES):
        if offset >= hw:
            break
        r = stub.Fetch(pb.FetchRequest(topic=topic, partition=partition, offset=offset,
                                       max_bytes=FETCH_MAX_BYTES, read=pb.READ_AP),
                       timeout=TIMEOUT_S)
        if not r.batches:
            break
        for b in r.batches:
            records = pb.RecordList.FromString(b.records).records
            deltas = list(b.offset_deltas) or list(range(len(records)))
            for d, rec in zip(deltas, records):
                o = b.base_offset + d
                if o >= offset:
                    out.append((o, rec.key.decode(), int(rec.value[:INDEX_BYTES])))
            offset = b.base_offset + b.record_count
    else:
        raise RuntimeError(f"more than {MAX_FETCHES} fetches")
    return start, hw, listed.node_id, out


def expected_last(records, keys):
    """key -> the index of the producer's last write of it."""
    return {f"key-{i % keys}": i for i in range(max(0, records - keys), records)}


def latest_check(read, want):
    """(missing, stale) keys of what was read, in offset order, against `want`."""
    last = {}
    for _, key, index in read:
        last[key] = index
    missing = sorted(k for k in want if k not in last)
    stale = sorted(k for k in want if k in last and last[k] != want[k])
    return missing, stale


def check_replica(node, got, want, clean_upto):
    start, hw, node_id, read = got
    below = [r for r in read if clean_upto is not None and r[0] < clean_upto]
    below_keys = {}
    for _, key, _ in below:
        below_keys[key] = below_keys.get(key, 0) + 1
    missing, stale = latest_check(read, want)
    digest = hashlib.sha256(json.dumps(read).encode()).hexdigest()[:16]
    return {
        "node": node, "node_id": node_id, "log_start_offset": start, "high_watermark": hw,
        "records": len(read), "clean_upto": clean_upto,
        "below_upto": len(below), "below_upto_keys": len(below_keys),
        "below_upto_duplicate_keys": sum(1 for n in below_keys.values() if n > 1),
        "tail": None if clean_upto is None else len(read) - len(below),
        "tail_span": None if clean_upto is None else hw - clean_upto,
        "latest_ok": not missing and not stale,
        "keys_missing": len(missing), "keys_stale": len(stale),
        "stale_examples": stale[:5],
        "offsets_increase": all(a[0] < b[0] for a, b in zip(read, read[1:])),
        "digest": digest,
    }


def cmd_replicas(args):
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
    import grpc
    from fjord_stubs import pb, rpc  # generates them

    want = expected_last(args.records, args.keys)
    logs = args.logs.split(",") if args.logs else []
    rows, ok = [], True
    for i, addr in enumerate(args.nodes.split(","), 1):
        stub = rpc.FjordStub(grpc.insecure_channel(
            addr, options=[("grpc.max_receive_message_length", 64 << 20)]))
        passes = passes_of(logs[i - 1]) if len(logs) >= i else []
        clean_upto = max((p["upto"] for p in passes), default=None)
        row = check_replica(i, read_replica(stub, pb, args.topic, args.partition), want,
                            clean_upto)
        ok &= row["latest_ok"] and row["offsets_increase"] \
            and row["below_upto_duplicate_keys"] == 0
        rows.append(row)
        print(json.dumps(row), flush=True)
    same = len({r["digest"] for r in rows}) == 1
    summary = {"replicas_identical": same, "all_ok": ok and same,
               "keys": args.keys, "records_written": args.records}
    if args.consumed:
        read = []
        with open(args.consumed) as f:
            for line in f:
                r = json.loads(line)
                if r.get("partition") == args.partition:
                    read.append((r["offset"], r["key"], int(r["value"][:INDEX_BYTES])))
        missing, stale = latest_check(read, want)
        summary["consumer"] = {"records": len(read), "keys_missing": len(missing),
                               "keys_stale": len(stale), "latest_ok": not missing and not stale}
        summary["all_ok"] &= summary["consumer"]["latest_ok"]
    print(json.dumps({"summary": summary}))
    return 0 if summary["all_ok"] else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("passes")
    p.add_argument("--logs", required=True)
    r = sub.add_parser("replicas")
    r.add_argument("--topic", required=True)
    r.add_argument("--partition", type=int, default=0)
    r.add_argument("--nodes", required=True)
    r.add_argument("--records", type=int, required=True)
    r.add_argument("--keys", type=int, required=True)
    r.add_argument("--logs", default="")
    r.add_argument("--consumed")
    args = ap.parse_args()
    sys.exit(cmd_passes(args) if args.cmd == "passes" else cmd_replicas(args))


if __name__ == "__main__":
    main()
