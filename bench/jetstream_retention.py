#!/usr/bin/env python3
"""The peer's side of bench/retention.sh: a JetStream R3 file stream with a size or age limit,
written to with acknowledged publishes.

Creates stream STREAM (subjects STREAM.>, 3 replicas, file storage, discard old) with
--max-bytes or --max-age-secs, waits until it is ready, prints one JSON line
{"phase": "ready"}, waits --start-delay-secs (2), then publishes --bytes of --size-byte messages (or for --duration-secs),
at most --window acks outstanding, on a connection to the stream's leader, and prints one
JSON object: messages and bytes acknowledged, seconds, MB/s, errors, and the stream's state
(first and last sequence, bytes) as the leader reports it at the end.

usage: bench/jetstream_retention.py --urls nats://127.0.0.1:24222,... (--max-bytes N |
         --max-age-secs S) [--bytes N | --duration-secs S] [--size 1024] [--window 256]
Needs nats-py (bench/jetstream.sh install-server installs it). Every wait is bounded: each
publish by --request-timeout, the whole run by --max-secs.
"""

import argparse
import asyncio
import json
import time

import nats
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

MAX_WINDOW = 4096


async def leader_connection(urls, stream, timeout):
    """A connection to the node that leads the stream (publishes go to the leader anyway)."""
    nc = await nats.connect(servers=urls)
    js = nc.jetstream(timeout=timeout)
    info = await js.stream_info(stream)
    leader = info.cluster.leader if info.cluster else None
    for url in urls:
        probe = await nats.connect(servers=[url])
        name = probe._server_info.get("server_name")
        await probe.close()
        if name == leader:
            await nc.close()
            nc = await nats.connect(servers=[url])
            return nc, nc.jetstream(timeout=timeout), leader
    return nc, js, leader


async def run(a):
    urls = a.urls.split(",")
    admin = await nats.connect(servers=urls)
    ajs = admin.jetstream(timeout=a.request_timeout)
    try:
        await ajs.delete_stream(a.stream)
    except Exception:
        pass
    cfg = StreamConfig(name=a.stream, subjects=[f"{a.stream}.>"], num_replicas=3,
                       storage=StorageType.FILE, discard=DiscardPolicy.OLD,
                       max_bytes=a.max_bytes if a.max_bytes else -1,
                       max_age=a.max_age_secs if a.max_age_secs else None)
    await ajs.add_stream(cfg)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = await ajs.stream_info(a.stream)
        if info.cluster and info.cluster.leader:
            break
        await asyncio.sleep(0.2)
    await admin.close()
    nc, js, leader = await leader_connection(urls, a.stream, a.request_timeout)
    print(json.dumps({"phase": "ready", "leader": leader}), flush=True)
    # The caller measures the empty store meanwhile.
    await asyncio.sleep(a.start_delay_secs)

    payload = b"x" * a.size
    total = a.bytes // a.size if a.bytes else None
    sent = acked = errors = 0
    window = asyncio.Semaphore(a.window)
    start = time.monotonic()
    stop_at = start + (a.duration_secs if a.duration_secs else a.max_secs)
    subject = f"{a.stream}.x"

    async def one():
        nonlocal acked, errors
        try:
            await js.publish(subject, payload, timeout=a.request_timeout)
            acked += 1
        except Exception:
            errors += 1
        finally:
            window.release()

    tasks = set()
    while (total is None or sent < total) and time.monotonic() < stop_at and errors == 0:
        await window.acquire()
        t = asyncio.ensure_future(one())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        sent += 1
    if tasks:
        await asyncio.wait(tasks, timeout=a.request_timeout + 5)
    secs = time.monotonic() - start
    info = await js.stream_info(a.stream)
    s = info.state
    print(json.dumps({
        "tool": "nats-py " + nats.__dict__.get("__version__", ""), "stream": a.stream,
        "leader": leader, "size": a.size, "messages_acked": acked, "errors": errors,
        "bytes_acked": acked * a.size, "secs": round(secs, 3),
        "mb_per_sec": round(acked * a.size / secs / 1e6, 3) if secs > 0 else 0,
        "max_bytes": a.max_bytes, "max_age_secs": a.max_age_secs,
        "state": {"first_seq": s.first_seq, "last_seq": s.last_seq, "messages": s.messages,
                  "bytes": s.bytes},
    }), flush=True)
    await nc.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--urls", required=True)
    p.add_argument("--stream", default="RET")
    p.add_argument("--max-bytes", type=int, default=0)
    p.add_argument("--max-age-secs", type=float, default=0)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--duration-secs", type=float, default=0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--request-timeout", type=float, default=10)
    p.add_argument("--max-secs", type=float, default=600)
    p.add_argument("--start-delay-secs", type=float, default=2)
    a = p.parse_args()
    if not (a.max_bytes or a.max_age_secs):
        p.error("--max-bytes or --max-age-secs")
    if not (a.bytes or a.duration_secs):
        p.error("--bytes or --duration-secs")
    if not 1 <= a.window <= MAX_WINDOW:
        p.error(f"--window must be 1 to {MAX_WINDOW}")
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
