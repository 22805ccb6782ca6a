"""Summarizes bench/security.sh results: python3 bench/security_summary.py FILE.jsonl

For each side (tls / plain, scraped / unscraped, unscraped / base) and load (thr: CP 1 KiB
throughput; lat: one-at-a-time CP latency): the median over rounds of MB/s, or of p50 and p99
in ms, and the ratio of the first side to the second in the same round (median of the
per-round ratios), with the load average seen at the start of each run.
"""

import json
import statistics
import sys
from collections import defaultdict

PAIRS = [("tls", "plain"), ("scraped", "unscraped"), ("unscraped", "base")]


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = defaultdict(dict)  # (kind, round) -> side -> produce
    loads = defaultdict(list)
    for r in rows:
        rnd = r["run"].rsplit("-r", 1)[1]
        by[(r["kind"], rnd)][r["side"]] = r["produce"]
        loads[r["side"]].append(r["measure"].get("loadavg_1m_before"))
    sides = {r["side"] for r in rows}
    for a, b in PAIRS:
        if not {a, b} <= sides:
            continue
        print(f"== {a} vs {b}")
        for kind, fields in (("thr", ["mb_per_sec"]), ("lat", ["latency_ms_p50", "latency_ms_p99"])):
            for f in fields:
                va, vb, ratios = [], [], []
                for (k, rnd), s in sorted(by.items()):
                    if k != kind or a not in s or b not in s:
                        continue
                    x, y = s[a].get(f), s[b].get(f)
                    if x is None or y is None:
                        continue
                    va.append(x)
                    vb.append(y)
                    if y:
                        ratios.append(x / y)
                if not va:
                    continue
                print(
                    f"  {kind} {f}: {a} median {statistics.median(va):.3f} {va}, "
                    f"{b} median {statistics.median(vb):.3f} {vb}, "
                    f"ratio {a}/{b} median {statistics.median(ratios):.3f} {[round(r, 3) for r in ratios]}"
                )
        print(f"  load average at start: {a} {loads[a]}, {b} {loads[b]}")


if __name__ == "__main__":
    main(sys.argv[1])
