"""fjord's health service and server reflection from Python, with the standard packages
(grpcio-health-checking, grpcio-reflection) and nothing generated from fjord's proto.

Run by tests/tests/python_client.rs against a real 3-node cluster:

    python3 tests/python/health_reflection_test.py HOST:PORT [HOST:PORT ...]

On every node:
- grpc.health.v1.Health answers SERVING for "" and "fjord.v1.Fjord", NOT_FOUND for a
  service it does not know;
- reflection (v1alpha through grpcio-reflection's descriptor database, v1 on the same
  messages: the two are the same on the wire) lists fjord.v1.Fjord, the health service and
  reflection, and not the node-to-node service (fjord.raft.v1.RaftTransport);
- a client that knows nothing but what reflection told it calls ListTopics and finds the
  topic created by CreateTopic, messages built from the reflected descriptors.

Every loop is bounded. Exits non-zero, saying what failed, on the first wrong outcome.
"""

import sys
import time

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

ATTEMPTS = 100  # per check, while a node is still starting
TOPIC = "reflected"
EXPECTED = {"fjord.v1.Fjord", "grpc.health.v1.Health"}
INTERNAL = "fjord.raft.v1.RaftTransport"


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def health(addr):
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(addr))
    for service in ["", "fjord.v1.Fjord"]:
        status = None
        for _ in range(ATTEMPTS):
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            except grpc.RpcError as e:
                status = e.code()
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.1)
        else:
            fail(f"{addr}: health of {service!r} is {status}, not SERVING")
    try:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        fail(f"{addr}: health of an unknown service answered")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            fail(f"{addr}: health of an unknown service: {e.code()}, not NOT_FOUND")
    print(f"{addr}: health SERVING for '' and fjord.v1.Fjord")


def services_v1(channel):
    """The services listed by grpc.reflection.v1 (the v1alpha messages, a v1 method path)."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    return {s.name for a in answers for s in a.list_services_response.service}


def reflection(addr):
    channel = grpc.insecure_channel(addr)
    db = ProtoReflectionDescriptorDatabase(channel)
    listed = set(db.get_services())
    if not EXPECTED <= listed:
        fail(f"{addr}: v1alpha reflection lists {sorted(listed)}, not all of {sorted(EXPECTED)}")
    if INTERNAL in listed:
        fail(f"{addr}: v1alpha reflection lists the internal {INTERNAL}")
    listed_v1 = services_v1(channel)
    if not EXPECTED <= listed_v1 or INTERNAL in listed_v1:
        fail(f"{addr}: v1 reflection lists {sorted(listed_v1)}")
    pool = descriptor_pool.DescriptorPool(db)
    fjord = pool.FindServiceByName("fjord.v1.Fjord")
    methods = set(fjord.methods_by_name)
    for m in ["Produce", "Fetch", "CreateTopic", "ListTopics", "GroupHeartbeat"]:
        if m not in methods:
            fail(f"{addr}: reflection's fjord.v1.Fjord has no {m}: {sorted(methods)}")
    print(f"{addr}: reflection lists {sorted(listed)} (v1 too), fjord.v1.Fjord with {len(methods)} methods")
    return pool


def unary(channel, pool, method):
    """A callable for `fjord.v1.Fjord/method` built from reflected descriptors only."""
    m = pool.FindServiceByName("fjord.v1.Fjord").methods_by_name[method]
    request = message_factory.GetMessageClass(m.input_type)
    response = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/fjord.v1.Fjord/{method}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return request, call


def call_by_reflection(addr, pool):
    channel = grpc.insecure_channel(addr)
    create_req, create = unary(channel, pool, "CreateTopic")
    for _ in range(ATTEMPTS):
        try:
            create(create_req(name=TOPIC, partitions=1, replication_factor=3), timeout=10)
            break
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                break
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                fail(f"{addr}: CreateTopic by reflection: {e.code()} {e.details()}")
            time.sleep(0.1)
    else:
        fail(f"{addr}: CreateTopic by reflection: still UNAVAILABLE")
    list_req, list_topics = unary(channel, pool, "ListTopics")
    for _ in range(ATTEMPTS):
        names = [t.name for t in list_topics(list_req(), timeout=10).topics]
        if TOPIC in names:
            print(f"{addr}: ListTopics by reflection finds {TOPIC!r}")
            return
        time.sleep(0.1)
    fail(f"{addr}: ListTopics by reflection does not show {TOPIC!r}: {names}")


def main():
    addrs = sys.argv[1:]
    if not addrs:
        fail("usage: health_reflection_test.py HOST:PORT [HOST:PORT ...]")
    for addr in addrs:
        health(addr)
        pool = reflection(addr)
        call_by_reflection(addr, pool)
    print("ok: health and reflection on every node")


if __name__ == "__main__":
    main()
