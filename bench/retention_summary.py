"""Summarizes bench/retention.sh results: python3 bench/retention_summary.py FILE.jsonl [...]

bytes/time runs: per node, the largest disk space of the data dir (`du -s -B1`: allocated blocks) and length of fjord.redb seen during the
load, against the bound 1.25 x (what retention keeps) + the fixed overhead (the node's data
dir with the topic and no records); what retention keeps is retention_bytes x partitions, or
for retention_ms the most bytes written within any retention_ms of the run (from the per-second
samples of the high watermark: each sample against the high watermark retention_ms before it,
linear between samples, per partition, summed; the average rate x retention_ms is printed beside it, and
understates what was kept when the rate rose during the run); the most record bytes one replica held
(high watermark - log start offset, x the record size, the largest sample per partition,
summed); and whether every replica ended with the same log start offset and high watermark.
peer-bytes/peer-time runs (JetStream): the same for the stream's store dirs.
ab/latency runs: the median over rounds of each side, and the ratio retention / none.
"""

import json
import statistics
import sys

MIB = 1024 * 1024


def disk_samples(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 7:
                rows.append([float(x) for x in parts])
    return rows


def offset_samples(path):
    """The replicas' answers in an offsets sample file (lines that are not one are skipped)."""
    with open(path) as f:
        for line in f:
            try:
                o = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "error" not in o:
                yield o


def held_bytes(path, record_size):
    """The largest (hw - start) per partition over the samples of the leader's answers, summed
    over partitions (each partition's largest, wherever it was)."""
    most = {}
    for o in offset_samples(path):
        held = (o["high_watermark"] - o["log_start_offset"]) * record_size
        most[o["partition"]] = max(most.get(o["partition"], 0), held)
    return sum(most.values())


def most_written_within(path, record_size, ms):
    """The most record bytes written within any `ms` of the run: per partition, for each
    sample, the highest high watermark any replica had answered by then, against that
    running high watermark `ms` earlier (linear between the two samples around that time;
    none before the first sample); the largest, summed over partitions."""
    series = {}
    for o in offset_samples(path):
        series.setdefault(o["partition"], []).append((o["t"], o["high_watermark"]))
    total = 0
    for points in series.values():
        points.sort()
        # The running highest watermark: a lagging replica's answer does not lower it.
        best, hw = [], 0
        for t, h in points:
            hw = max(hw, h)
            best.append((t, hw))
        most, j = 0, 0
        for t, h in best:
            at = t - ms / 1000
            if at < best[0][0]:
                continue
            while best[j + 1][0] < at:
                j += 1
            (t0, h0), (t1, h1) = best[j], best[j + 1]
            then = h0 if t1 == t0 else h0 + (h1 - h0) * (at - t0) / (t1 - t0)
            most = max(most, h - then)
        total += most * record_size
    return total


def disk_run(r):
    cfg = dict(kv.split("=", 1) for kv in r["config"].split())
    p = r["produce"]
    size = p["settings"]["record_size_bytes"]
    parts = p["partitions"]
    if "retention_bytes" in cfg:
        kept = int(cfg["retention_bytes"]) * parts
        kept_what = f"retention_bytes {int(cfg['retention_bytes']) / MIB:.0f} MiB x {parts}"
    else:
        ms = int(cfg["retention_ms"])
        average = p["mb_per_sec"] * 1e6 * ms / 1000
        kept = most_written_within(r["offset_samples"], size, ms)
        kept_what = (f"the most written within {ms} ms; the average rate, {p['mb_per_sec']:.1f} "
                     f"MB/s x {ms} ms, is {average / MIB:.1f} MiB")
    samples = disk_samples(r["disk_samples"])
    overhead = max(e[0] for e in r["empty_sizes"])
    bound = 1.25 * kept + overhead
    print(f"## {r['run']}  config: {r['config']}  serve: {r['serve_args'] or '(defaults)'}")
    print(f"  written: {p['records_produced'] * size / MIB:.0f} MiB in {p['elapsed_secs']:.1f} s "
          f"({p['mb_per_sec']:.1f} MB/s, {p['errors']} errors, exit {r['exit']})")
    print(f"  kept by retention: {kept / MIB:.1f} MiB ({kept_what}); fixed overhead "
          f"{overhead} B; bound 1.25 x kept + overhead = {bound / MIB:.1f} MiB")
    print(f"  most record bytes held (hw - start, per partition, summed): "
          f"{held_bytes(r['offset_samples'], size) / MIB:.1f} MiB")
    for n in range(3):
        du = max(s[1 + 2 * n] for s in samples) if samples else 0
        redb = max(s[2 + 2 * n] for s in samples) if samples else 0
        after = r["sizes_after"][n][0]
        print(f"  node{n + 1}: max disk use {du / MIB:.1f} MiB, max fjord.redb length {redb / MIB:.1f} MiB "
              f"({du / kept:.2f}x kept; {'within' if du <= bound else 'OVER'} the bound); "
              f"after settling {after / MIB:.1f} MiB; WARN/ERROR log lines "
              f"{r['warn_error_lines_per_node'][n]}")
    finals = {}
    for o in r["final_offsets"]:
        finals.setdefault(o["partition"], set()).add(
            (o.get("log_start_offset"), o.get("high_watermark")))
    for part, seen in sorted(finals.items()):
        alike = "alike on every replica" if len(seen) == 1 else "DIFFERENT across replicas"
        print(f"  partition {part}: (log start, high watermark) {sorted(seen)}: {alike}")


def peer_run(r):
    p = r["produce"]
    if p.get("max_bytes"):
        kept = p["max_bytes"]
        kept_what = f"max_bytes {kept / MIB:.0f} MiB"
    else:
        kept = p["mb_per_sec"] * 1e6 * p["max_age_secs"]
        kept_what = f"{p['mb_per_sec']:.1f} MB/s x {p['max_age_secs']:.0f} s"
    samples = disk_samples(r["disk_samples"])
    overhead = max(r["empty_sizes"])
    bound = 1.25 * kept + overhead
    print(f"## {r['run']} (JetStream R3 file stream)  config: {r['config']}")
    print(f"  written: {p['bytes_acked'] / MIB:.0f} MiB in {p['secs']:.1f} s ({p['mb_per_sec']:.1f} MB/s, "
          f"{p['errors']} errors, exit {r['exit']}); stream at the end: {p['state']}")
    print(f"  kept by the limit: {kept / MIB:.1f} MiB ({kept_what}); fixed overhead {overhead} B; "
          f"bound 1.25 x kept + overhead = {bound / MIB:.1f} MiB")
    for n in range(3):
        du = max(s[1 + 2 * n] for s in samples) if samples else 0
        print(f"  n{n + 1}: max disk use {du / MIB:.1f} MiB ({du / kept:.2f}x kept; "
              f"{'within' if du <= bound else 'OVER'} the bound); after {r['sizes_after'][n] / MIB:.1f} MiB")


def load_runs(rows):
    kinds = {}
    for r in rows:
        kind, side, _ = r["run"].rsplit("-", 2)
        kinds.setdefault(kind, {}).setdefault(side, []).append(r)
    for kind, sides in kinds.items():
        print(f"## {kind}: median over rounds [min..max]")
        med = {}
        for side in ("retention", "none"):
            runs = sides.get(side, [])
            if not runs:
                continue
            vals = {k: [r["produce"][k] for r in runs if r["produce"][k] is not None]
                    for k in ("mb_per_sec", "records_per_sec", "latency_ms_p50", "latency_ms_p99")}
            med[side] = {k: statistics.median(v) for k, v in vals.items() if v}
            errs = sum(r["produce"]["errors"] for r in runs)
            loads = [r["measure"]["loadavg_1m_before"] for r in runs]
            starts = [max(o["log_start_offset"] for o in r["final_offsets"]) for r in runs]
            print(f"  {side}: {len(runs)} runs, errors {errs}, load avg before {min(loads)}-{max(loads)}, "
                  f"final log start offsets {starts}")
            for k, v in vals.items():
                if v:
                    print(f"    {k}: {statistics.median(v):.3f} [{min(v):.3f}..{max(v):.3f}]")
        if "retention" in med and "none" in med:
            for k in med["none"]:
                if med["none"][k]:
                    print(f"  ratio retention / none, {k}: {med['retention'][k] / med['none'][k]:.3f}")


def main():
    rows = []
    for path in sys.argv[1:]:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    for r in rows:
        if r.get("peer"):
            peer_run(r)
        elif "disk_samples" in r:
            disk_run(r)
    load_runs([r for r in rows if "measure" in r])


if __name__ == "__main__":
    main()
