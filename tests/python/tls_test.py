"""fjord from Python over TLS: the generated client (grpcio) with grpc.ssl_channel_credentials.

Run by tests/tests/python_client.rs against a real 3-node cluster with TLS on:

    python3 tests/python/tls_test.py CA.pem CERT.pem KEY.pem HOST:PORT [HOST:PORT ...]

Checks: a plaintext channel is refused; a channel trusting the CA, presenting the client
certificate, creates a topic, produces (following leader hints) and reads the record back.
Every loop is bounded. Exits non-zero, saying what failed, on the first wrong outcome.
"""

import sys
import time

import grpc
from fjord_stubs import pb, rpc  # generates the modules from the proto

TOPIC = "python-tls"
ATTEMPTS = 50  # per request, for transient UNAVAILABLE only


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ca, cert, key = (open(p, "rb").read() for p in sys.argv[1:4])
    addrs = sys.argv[4:]
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert)

    def stub(addr):
        return rpc.FjordStub(grpc.secure_channel(addr, creds))

    def call(fn, req, what):
        for _ in range(ATTEMPTS):
            try:
                return fn(req, timeout=10)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    fail(f"{what}: {e.code()} {e.details()}")
                time.sleep(0.1)
        fail(f"{what}: still UNAVAILABLE after {ATTEMPTS} attempts")

    # Plaintext is refused.
    try:
        rpc.FjordStub(grpc.insecure_channel(addrs[0])).Metadata(pb.MetadataRequest(), timeout=5)
        fail("a plaintext channel was served")
    except grpc.RpcError as e:
        print(f"plaintext refused: {e.code()}")

    one = stub(addrs[0])
    call(one.CreateTopic, pb.CreateTopicRequest(
        name=TOPIC, partitions=1, replication_factor=3), "create topic")
    req = pb.ProduceRequest(topic=TOPIC, acks=pb.ACKS_CP,
                            records=[pb.Record(value=b"over-tls")])
    target = addrs[0]
    for _ in range(ATTEMPTS):
        (result,) = call(stub(target).Produce, req, "produce").results
        if not result.HasField("error"):
            break
        if result.error.leader_address:
            target = result.error.leader_address
        time.sleep(0.1)
    else:
        fail(f"produce not acknowledged: {result.error.message}")
    fetched = call(stub(target).Fetch, pb.FetchRequest(
        topic=TOPIC, partition=result.partition, offset=result.base_offset,
        max_bytes=1 << 20, read=pb.READ_CP), "fetch")
    if not fetched.batches:
        fail(f"nothing read back at {result.base_offset}")
    print(f"produced and fetched over TLS at offset {result.base_offset} via {target}")


if __name__ == "__main__":
    main()
