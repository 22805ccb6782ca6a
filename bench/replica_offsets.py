"""Each node's own view of a topic's partitions: log start offset and high watermark.

    python3 bench/replica_offsets.py --topic T --partitions N --nodes HOST:PORT,HOST:PORT,...
        [--every SECS --count N]

Asks every node ListOffsets (earliest) with `read: AP`, which a replica answers from what it
has applied, without going to the leader: so the answers show whether the log start offset
moved alike on every replica. Prints one JSON object per node, partition and round:
  {"t": unix secs, "node": address, "node_id", "partition", "log_start_offset",
   "high_watermark"}  (or "error": "...")
With --every, repeats every SECS seconds, at most --count rounds. The Python stubs are
generated from proto/fjord.proto with grpcio-tools into a temporary directory.
"""

import argparse
import json
import os
import sys
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 5

sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from fjord_stubs import pb, rpc  # noqa: E402 (generates them)


def one_round(stubs, topic, partitions):
    for addr, stub in stubs:
        for p in range(partitions):
            row = {"t": round(time.time(), 3), "node": addr, "partition": p}
            req = pb.ListOffsetsRequest(topic=topic, partition=p,
                                        query=pb.OFFSET_EARLIEST, read=pb.READ_AP)
            try:
                a = stub.ListOffsets(req, timeout=TIMEOUT_S)
                row.update(node_id=a.node_id, log_start_offset=a.log_start_offset,
                           high_watermark=a.high_watermark)
            except grpc.RpcError as e:
                row["error"] = f"{e.code()} {e.details()}"
            print(json.dumps(row), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--nodes", required=True, help="comma-separated HOST:PORT list")
    ap.add_argument("--every", type=float, default=0, help="seconds between rounds (0: one)")
    ap.add_argument("--count", type=int, default=100000, help="most rounds with --every")
    args = ap.parse_args()
    stubs = [(a, rpc.FjordStub(grpc.insecure_channel(a))) for a in args.nodes.split(",")]
    rounds = args.count if args.every > 0 else 1
    for i in range(rounds):
        one_round(stubs, args.topic, args.partitions)
        if i + 1 < rounds:
            time.sleep(args.every)


if __name__ == "__main__":
    main()
