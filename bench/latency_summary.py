#!/usr/bin/env python3
"""Where one-at-a-time latency goes, from bench/latency.sh results: medians over rounds.

    python3 bench/latency_summary.py /tmp/fjord-bench/latency-<time>.jsonl

Prints the p50 and p99 of each (disk, acks) case, median [min..max] over rounds, and the
stages they imply, each computed per round and then taken as the median:
  fsync           the disk's own 4 KiB append + fdatasync
  software path   tmpfs AP (no fsync cost): gRPC in and out, the Raft core, the writer, the reply
  leader commit   disk AP - tmpfs AP: the redb commit and its fdatasync on the disk
  replication     CP - AP on the disk: a follower's append and fsync, and the way back
Standard library only.
"""
import json
import statistics
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["disk"], r["acks"]), {})[r["round"]] = r["report"]
    loads = [r["loadavg_1m"] for r in rows]
    rounds = sorted({r["round"] for r in rows})
    print(f"{len(rounds)} rounds; 1-min load average {min(loads):.2f}..{max(loads):.2f}\n")
    print("| case | p50 ms | p99 ms |")
    print("|---|---|---|")
    for key in [("disk", "fsync"), ("disk", "ap"), ("disk", "cp"), ("tmpfs", "ap"), ("tmpfs", "cp")]:
        runs = by.get(key, {})
        if not runs:
            continue
        cells = []
        for q in ("latency_ms_p50", "latency_ms_p99"):
            v = sorted(x[q] for x in runs.values())
            cells.append(f"{statistics.median(v):.3f} [{v[0]:.3f}..{v[-1]:.3f}]")
        print(f"| {key[0]} {key[1]} | {cells[0]} | {cells[1]} |")

    def stage(a, b=None, q="latency_ms_p50"):
        out = []
        for rnd in rounds:
            try:
                x = by[a][rnd][q] - (by[b][rnd][q] if b else 0)
            except KeyError:
                continue
            out.append(x)
        return f"{statistics.median(out):.3f}" if out else "n/a"

    print("\n| stage (p50, per round, median) | ms |")
    print("|---|---|")
    print(f"| the disk's fsync (4 KiB append + fdatasync) | {stage(('disk', 'fsync'))} |")
    print(f"| software path: tmpfs AP | {stage(('tmpfs', 'ap'))} |")
    print(f"| the leader's commit on the disk: disk AP - tmpfs AP | {stage(('disk', 'ap'), ('tmpfs', 'ap'))} |")
    print(f"| replication: disk CP - disk AP | {stage(('disk', 'cp'), ('disk', 'ap'))} |")
    print(f"| replication without fsync cost: tmpfs CP - tmpfs AP | {stage(('tmpfs', 'cp'), ('tmpfs', 'ap'))} |")
    print(f"| total: disk CP | {stage(('disk', 'cp'))} |")


if __name__ == "__main__":
    main()
