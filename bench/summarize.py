#!/usr/bin/env python3
"""Markdown tables from bench/compare.sh results: median [min..max] over rounds, fjord vs JetStream.

    python3 bench/summarize.py /tmp/fjord-bench/results-<time>.jsonl

Ratios are fjord / JetStream, of the medians; "per round" is the range of the ratios of runs in
the same round (the two systems measured minutes apart). Standard library only.
"""
import json
import statistics
import sys


def load(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if r.get("report")]


def pick(rows, system, case, fn):
    """{round: value} for one system/case."""
    out = {}
    for r in rows:
        if r["system"] == system and r["case"] == case:
            try:
                v = fn(r)
            except (KeyError, TypeError):
                continue
            if v is not None:
                out[r["round"]] = v
    return out


def fmt(v, digits):
    return f"{v:,.{digits}f}"


def stat(vals, digits):
    if not vals:
        return "n/a"
    vs = sorted(vals.values())
    return f"{fmt(statistics.median(vs), digits)} [{fmt(vs[0], digits)}..{fmt(vs[-1], digits)}]"


# (name, unit, digits, fjord case, fjord value, peer case, peer value, target, met(ratio, fjord median))
METRICS = [
    ("CP produce, 1 KiB records", "MB/s", 1,
     "produce-1k", lambda r: r["report"]["mb_per_sec"],
     "size-1024", lambda r: r["report"]["async"]["mb_per_s"],
     "≥3× JetStream and ≥60 MB/s", lambda q, f: q >= 3 and f >= 60),
    ("CP produce, 1 KiB records", "records/s", 0,
     "produce-1k", lambda r: r["report"]["records_per_sec"],
     "size-1024", lambda r: r["report"]["async"]["msgs_per_s"], "", None),
    ("CP produce, 100 B records", "records/s", 0,
     "produce-100", lambda r: r["report"]["records_per_sec"],
     "size-100", lambda r: r["report"]["async"]["msgs_per_s"],
     "≥5× JetStream", lambda q, f: q >= 5),
    ("one-at-a-time produce latency p50, 100 B", "ms", 3,
     "latency", lambda r: r["report"]["latency_ms_p50"],
     "size-100", lambda r: r["report"]["sync"]["lat"]["p50_us"] / 1000,
     "≤0.5× JetStream", lambda q, f: q <= 0.5),
    ("one-at-a-time produce latency p99, 100 B", "ms", 3,
     "latency", lambda r: r["report"]["latency_ms_p99"],
     "size-100", lambda r: r["report"]["sync"]["lat"]["p99_us"] / 1000,
     "≤0.5× JetStream", lambda q, f: q <= 0.5),
    ("consume, 1 KiB records", "MB/s", 1,
     "consume-1k", lambda r: r["report"]["mb_per_sec"],
     "size-1024", lambda r: r["report"]["consume"]["mb_per_s"],
     "≥2× JetStream", lambda q, f: q >= 2),
]

# The produce cases again, fjord with ONE partition (one Raft group) against the peer's one stream.
METRICS += [
    (name + ", 1 partition", unit, d, fc + "-p1", ff, pc, pf, target, met)
    for name, unit, d, fc, ff, pc, pf, target, met in METRICS
    if fc in ("produce-1k", "produce-100", "latency")
]

CPU_CASES = [("fjord", "produce-1k"), ("fjord", "produce-100"), ("fjord", "latency"),
             ("fjord", "consume-1k"), ("fjord", "produce-1k-p1"), ("fjord", "produce-100-p1"),
             ("fjord", "latency-p1"), ("jetstream", "size-1024"), ("jetstream", "size-100")]


def main():
    rows = load(sys.argv[1])
    rounds = sorted({r["round"] for r in rows})
    tools = sorted({r["tool"] for r in rows if r["system"] == "jetstream"})
    loads = [r["measure"]["loadavg_1m_before"] for r in rows]
    print(f"{len(rounds)} rounds; peer load generator: {', '.join(tools)}; "
          f"1-min load average before the runs: {min(loads):.2f}..{max(loads):.2f} "
          f"(median {statistics.median(loads):.2f})\n")
    print("| metric | unit | fjord | JetStream | fjord / JetStream | per round | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    for name, unit, d, fc, ff, pc, pf, target, met in METRICS:
        f, p = pick(rows, "fjord", fc, ff), pick(rows, "jetstream", pc, pf)
        if f and p:
            q = statistics.median(f.values()) / statistics.median(p.values())
            per = sorted(f[k] / p[k] for k in f if k in p and p[k])
            per_s = f"{per[0]:.2f}..{per[-1]:.2f}" if per else "n/a"
            verdict = "" if met is None else ("**met**" if met(q, statistics.median(f.values())) else "**missed**")
            print(f"| {name} | {unit} | {stat(f, d)} | {stat(p, d)} | {q:.2f} | {per_s} | {target} | {verdict} |")
        else:
            print(f"| {name} | {unit} | {stat(f, d)} | {stat(p, d)} | n/a | n/a | {target} | |")

    print("\nCPU during each run, median over rounds (% of one core; 200 = both cores):\n")
    print("| system | case | load avg before | machine busy % | iowait % | server 1 | server 2 | server 3 | client | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for system, case in CPU_CASES:
        ms = [r["measure"] for r in rows if r["system"] == system and r["case"] == case]
        if not ms:
            continue
        med = lambda k: statistics.median(m.get(k, 0) for m in ms)
        print(f"| {system} | {case} | {med('loadavg_1m_before'):.2f} | {med('machine_busy_pct'):.0f} | "
              f"{med('iowait_pct'):.0f} | {med('server1_core_pct'):.0f} | {med('server2_core_pct'):.0f} | "
              f"{med('server3_core_pct'):.0f} | {med('client_core_pct'):.0f} | {med('wall_s'):.1f} |")


if __name__ == "__main__":
    main()
