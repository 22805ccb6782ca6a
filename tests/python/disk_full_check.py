"""fjord from Python: a produce refused for a full disk, as a grpcio client sees it.

Run by tests/tests/disk_full.rs while every node of a real 3-node cluster is below its
--min-free-disk-bytes:

    python3 tests/python/disk_full_check.py TOPIC HOST:PORT [HOST:PORT ...]

Sends one record to partition 0 at each node; the leader's answer must carry, for the
partition, RESOURCE_EXHAUSTED with reason DISK_FULL and a message naming the setting (the
other nodes answer UNAVAILABLE, not the leader). Exits non-zero, saying what failed.
"""

import sys

import grpc
from fjord_stubs import pb, rpc  # generates the modules from the proto


def main():
    topic, addrs = sys.argv[1], sys.argv[2:]
    answers = []
    for addr in addrs:
        stub = rpc.FjordStub(grpc.insecure_channel(addr))
        req = pb.ProduceRequest(topic=topic, records=[pb.Record(value=b"from-python")], partition=0)
        resp = stub.Produce(req, timeout=10)
        err = resp.results[0].error
        answers.append((addr, err.code, err.reason, err.message))
        if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]:
            if err.reason != pb.DISK_FULL:
                sys.exit(f"FAIL: {addr}: RESOURCE_EXHAUSTED with reason {err.reason}, not DISK_FULL")
            if "--min-free-disk-bytes" not in err.message:
                sys.exit(f"FAIL: {addr}: the message does not name the setting: {err.message}")
            print(f"ok: {addr} refused with DISK_FULL: {err.message}")
            return
    sys.exit(f"FAIL: no node refused the produce with RESOURCE_EXHAUSTED: {answers}")


main()
