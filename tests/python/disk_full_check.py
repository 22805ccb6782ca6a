"""fjord from Python: a produce refused for a full disk, as a grpcio client sees it.

Run by tests/tests/disk_full.rs while every node of a real 3-node cluster is below its
--min-free-disk-bytes:

    python3 tests/python/disk_full_check.py TOPIC HOST:PORT [HOST:PORT ...]

Sends one record to partition 0 at each node; the leader's answer must carry, for the
partition, RESOURCE_EXHAUSTED with reason DISK_FULL and a message naming the setting (the
other nodes answer UNAVAILABLE, not the leader). Exits non-zero, saying what failed.
"""

import os
import subprocess
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


def generate_stubs():
    """Generates the Python modules from the proto into a temporary directory (never committed)."""
    out = tempfile.mkdtemp(prefix="fjord-py-")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
         f"--python_out={out}", f"--grpc_python_out={out}",
         os.path.join(PROTO_DIR, "fjord.proto")],
        check=True,
    )
    sys.path.insert(0, out)


generate_stubs()
import fjord_pb2 as pb  # noqa: E402
import fjord_pb2_grpc as rpc  # noqa: E402


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
