#!/usr/bin/env python3
"""The peer's idle cost of durable consumers: JetStream's counterpart of `fjord bench group-idle`.

Creates one R3 file stream (STREAM, subjects STREAM.>) with one message, then CONSUMERS durable
pull consumers on it (AckPolicy explicit, replicas = the stream's 3). Each one fetches the message
and acks it, so it ends with an ack floor (a committed position) and no client bound to it: the
state of an idle Kafka group (committed offsets, no members). Then it samples the given
nats-server processes' CPU (utime+stime from /proc/PID/stat) and RSS (VmRSS from
/proc/PID/status) the way group-idle does: a baseline before the consumers are created, then
after SETTLE seconds, DURATION seconds with them. Prints one JSON object.

usage: bench/jetstream_consumers.py --urls nats://127.0.0.1:24222,... --pids 1,2,3
         [--consumers 10000] [--concurrency 64] [--baseline-secs 30] [--settle-secs 10]
         [--duration-secs 60] [--stream IDLE]
Needs nats-py (`pip install nats-py`; bench/jetstream.sh install does it).
Every wait is bounded: each request by --request-timeout, the whole creation by --max-secs.
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time

MAX_CONSUMERS = 100_000
MAX_CONCURRENCY = 1_024
MAX_PIDS = 64


def stat_ticks(text):
    """utime + stime of a /proc/PID/stat line, counted after the command name's last ')'."""
    fields = text[text.rindex(")") + 1:].split()
    return int(fields[11]) + int(fields[12])


def status_rss_kib(text):
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS")


def sample(pids):
    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            ticks = stat_ticks(f.read())
        with open(f"/proc/{pid}/status") as f:
            rss = status_rss_kib(f.read())
        out.append((ticks, rss))
    return out


def cpu_use(before, after, secs, hz):
    per = [max(0, a[0] - b[0]) for b, a in zip(before, after)]
    pct = lambda t: round(100.0 * t / hz / secs, 2) if secs > 0 else 0.0
    return {"secs": round(secs, 2), "core_pct": pct(sum(per)), "core_pct_per_pid": [pct(t) for t in per]}


async def measure(pids, secs, hz):
    before = sample(pids)
    started = time.monotonic()
    await asyncio.sleep(secs)
    after = sample(pids)
    return cpu_use(before, after, time.monotonic() - started, hz), after


# Attempts at creating one consumer before the run fails.
CREATE_ATTEMPTS = 20


async def create_consumers(js, args, prefix):
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import AckPolicy, ConsumerConfig
    from nats.js.errors import ServiceUnavailableError

    slots = asyncio.Semaphore(args.concurrency)
    done = 0

    async def one(i):
        nonlocal done
        name = f"{prefix}{i}"
        async with slots:
            # The meta leader answers "no responders" (503) or nothing while it is busy
            # creating others: retry, a bounded number of times (creating is idempotent).
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    await js.add_consumer(args.stream, ConsumerConfig(
                        durable_name=name, ack_policy=AckPolicy.EXPLICIT, num_replicas=3),
                        timeout=args.request_timeout)
                    break
                except (ServiceUnavailableError, NatsTimeoutError, asyncio.TimeoutError):
                    if attempt + 1 == CREATE_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            # A new consumer answers once its own Raft group elected a leader: until then a
            # fetch gets "no responders" too.
            for attempt in range(CREATE_ATTEMPTS):
                sub = await js.pull_subscribe_bind(durable=name, stream=args.stream)
                try:
                    msgs = await sub.fetch(1, timeout=args.request_timeout)
                    for m in msgs:
                        await m.ack_sync(timeout=args.request_timeout)
                    break
                except (ServiceUnavailableError, NatsTimeoutError, asyncio.TimeoutError):
                    if attempt + 1 == CREATE_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
                finally:
                    await sub.unsubscribe()
            done += 1

    tasks = [asyncio.create_task(one(i)) for i in range(args.consumers)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.max_secs)
    except BaseException:
        for t in tasks:
            t.cancel()
        print(f"jetstream_consumers: created {done} of {args.consumers} consumers", file=sys.stderr)
        raise


async def check_consumer(js, stream, name):
    info = await js.consumer_info(stream, name)
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    if floor < 1 or (info.num_waiting or 0) > 0:
        raise SystemExit(f"consumer {name}: ack floor {floor}, {info.num_waiting} waiting pulls: "
                         "expected an acked message and no client")


async def run(args):
    import nats
    from nats.js.api import StorageType

    hz = os.sysconf("SC_CLK_TCK")
    rss_before = [r for _, r in sample(args.pids)]
    nc = await nats.connect(servers=args.urls.split(","), connect_timeout=args.request_timeout)
    js = nc.jetstream(timeout=args.request_timeout)
    # nats-server 2.15 gives a stream 1,000 consumers at most unless the stream sets a
    # limit of its own (a value <= 0 means its default): set one above the count.
    await js.add_stream(name=args.stream, subjects=[f"{args.stream}.>"], num_replicas=3,
                        storage=StorageType.FILE, max_consumers=max(args.consumers, 1000) + 1)
    await js.publish(f"{args.stream}.m", b"jetstream_consumers", timeout=args.request_timeout)
    baseline = (await measure(args.pids, args.baseline_secs, hz))[0] if args.baseline_secs > 0 else None
    prefix = f"idle{random.randrange(16**8):08x}-"
    started = time.monotonic()
    await create_consumers(js, args, prefix)
    create_secs = time.monotonic() - started
    await check_consumer(js, args.stream, f"{prefix}0")
    await nc.close()  # only the servers are measured
    await asyncio.sleep(args.settle_secs)
    idle, after = await measure(args.pids, args.duration_secs, hz)
    rss_after = [r for _, r in after]
    added_kib = sum(rss_after) - sum(rss_before)
    return {
        "mode": "jetstream-durable-idle", "stream": args.stream, "replicas": 3,
        "consumers": args.consumers, "consumer_prefix": prefix, "create_secs": round(create_secs, 2),
        "consumers_per_sec": round(args.consumers / max(create_secs, 1e-9), 2), "pids": args.pids,
        "baseline": baseline, "idle": idle,
        "core_pct_added": round(idle["core_pct"] - baseline["core_pct"], 2) if baseline else None,
        "rss_kib_before": rss_before, "rss_kib_after": rss_after,
        "rss_bytes_per_consumer": round(added_kib * 1024 / args.consumers, 2),
        "settle_secs": args.settle_secs,
    }


def bounded(lo, hi):
    def parse(s):
        v = int(s)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be {lo} to {hi}, got {v}")
        return v
    return parse


def pid_list(s):
    pids = [int(p) for p in s.split(",") if p.strip()]
    if not 1 <= len(pids) <= MAX_PIDS or len(set(pids)) != len(pids) or min(pids) <= 0:
        raise argparse.ArgumentTypeError(f"1 to {MAX_PIDS} distinct positive pids, got {s!r}")
    return pids


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--urls", required=True)
    p.add_argument("--pids", required=True, type=pid_list)
    p.add_argument("--stream", default="IDLE")
    p.add_argument("--consumers", type=bounded(1, MAX_CONSUMERS), default=10_000)
    p.add_argument("--concurrency", type=bounded(1, MAX_CONCURRENCY), default=64)
    p.add_argument("--baseline-secs", type=bounded(0, 3600), default=30)
    p.add_argument("--settle-secs", type=bounded(0, 3600), default=10)
    p.add_argument("--duration-secs", type=bounded(1, 3600), default=60)
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--max-secs", type=bounded(1, 86_400), default=3600,
                   help="the creation of all consumers fails after this many seconds")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
