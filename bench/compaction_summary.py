"""Summarizes bench/compaction.sh and bench/disk_full.sh results.

    python3 bench/compaction_summary.py FILE.jsonl [FILE.jsonl ...]

proof runs: the load, the wait for compaction to settle, what each replica and the CP
consumer read, and the cleaner's passes: per node, how many, during the load and after it,
their durations, and its throughput: the records (and MB of values) the passes compacted
(each pass's `upto` minus the previous one's: the dirty part it mapped), over the time the
passes took, and the offsets they scanned (each pass reads the partition from its start to
`upto`) per second. ab/latency runs: one row per run, then the median per kind. disk-full
runs: the phases.
"""

import json
import statistics
import sys

MB = 1_000_000


def cleaner(passes, load_end, record_size):
    """Figures of one node's passes."""
    done = [p for p in passes if p["secs"] is not None]
    prev, dirty, scanned, secs = 0, 0, 0, 0.0
    for p in done:
        dirty += max(0, p["upto"] - prev)
        scanned += p["upto"]
        secs += p["secs"]
        prev = p["upto"]
    after = [p for p in done if p["end"] > load_end]
    return {
        "passes": len(done),
        "passes_ending_after_load": len(after),
        "pass_secs_median": round(statistics.median([p["secs"] for p in done]), 3) if done else None,
        "pass_secs_max": max((p["secs"] for p in done), default=None),
        "busy_secs": round(secs, 2),
        "dirty_records_per_sec": round(dirty / secs) if secs else None,
        "dirty_value_mb_per_sec": round(dirty * record_size / MB / secs, 1) if secs else None,
        "scanned_offsets_per_sec": round(scanned / secs) if secs else None,
        "last_pass_end_after_load_secs": round(done[-1]["end"] - load_end, 2) if done else None,
        "last_upto": done[-1]["upto"] if done else None,
    }


def proof(r):
    p = r["produce"]
    print(f"proof: {r['records']:,} records of {r['record_size']} B over {r['keys']:,} keys, "
          f"load average before {r['loadavg_1m_before']}, exit {r['exit']}, "
          f"check exit {r['check_exit']}")
    print(f"  load: {p['records_produced']:,} records in {p['elapsed_secs']:.1f} s "
          f"({p['records_per_sec']:,.0f}/s, {p['mb_per_sec']:.1f} MB/s), errors {p['errors']}, "
          f"ack p50 {p['latency_ms_p50']} ms p99 {p['latency_ms_p99']} ms")
    print(f"  compaction settled {r['settle_waited_s']} s after the load ended (checks 2 s apart)")
    for label in ("empty_sizes", "sizes_at_load_end", "sizes_after"):
        print(f"  {label}: " + ", ".join(f"{d / 2**20:.1f} MiB (redb {f / 2**20:.1f})"
                                         for d, f in r[label]))
    for row in r["check"]:
        if "summary" in row:
            print(f"  summary: {json.dumps(row['summary'])}")
            continue
        print(f"  node {row['node']}: hw {row['high_watermark']:,}, start "
              f"{row['log_start_offset']}, read {row['records']:,}: below upto "
              f"{row['clean_upto']}: {row['below_upto']:,} ({row['below_upto_keys']:,} keys, "
              f"{row['below_upto_duplicate_keys']} duplicated), tail {row['tail']:,} "
              f"(span {row['tail_span']:,}); latest_ok {row['latest_ok']} (missing "
              f"{row['keys_missing']}, stale {row['keys_stale']}); digest {row['digest']}")
    for row in r.get("tail_check") or []:
        if "summary" in row:
            print(f"  after {r['tail_records']} more records: {json.dumps(row['summary'])}")
        else:
            print(f"  node {row['node']}: read {row['records']:,}: below upto {row['clean_upto']}: "
                  f"{row['below_upto']:,} ({row['below_upto_duplicate_keys']} keys duplicated), "
                  f"tail {row['tail']:,} (span {row['tail_span']:,}); latest_ok {row['latest_ok']}")
    for n in r["passes"]:
        c = cleaner(n["passes"], r["load_end"], r["record_size"])
        print(f"  cleaner node {n['node']}: {json.dumps(c)}")


def load_rows(rows):
    kinds = {}
    for r in rows:
        p, m = r["produce"], r["measure"]
        kind = r["run"].rsplit("-r", 1)[0]
        kinds.setdefault(kind, []).append(r)
        print(f"{r['run']:<22} load {m['loadavg_1m_before']:>5}  {p['records_per_sec']:>9,.0f} rec/s "
              f"{p['mb_per_sec']:>6.1f} MB/s  p50 {p['latency_ms_p50']:>8} p99 "
              f"{p['latency_ms_p99']:>8} p99.9 {p['latency_ms_p999']:>8} max "
              f"{p['latency_ms_max']:>8} ms  errors {p['errors']}  passes "
              f"{r['compaction_state_before'].strip()} -> {r['compaction_state_after'].strip()}")
    for kind, rs in kinds.items():
        med = lambda k: statistics.median(x["produce"][k] for x in rs)  # noqa: E731
        print(f"median {kind:<15} {med('records_per_sec'):>9,.0f} rec/s {med('mb_per_sec'):>6.1f} "
              f"MB/s  p50 {med('latency_ms_p50'):.3f} p99 {med('latency_ms_p99'):.3f} p99.9 "
              f"{med('latency_ms_p999'):.3f} ms  ({len(rs)} runs)")


def disk_full(r):
    def rate(x):
        p = x["produce"]
        return (f"{p['records_produced']:,} records, {p['records_per_sec']:,.0f} rec/s, "
                f"{p['mb_per_sec']:.1f} MB/s, p99 {p['latency_ms_p99']} ms, errors {p['errors']}, "
                f"load average {x['measure']['loadavg_1m_before']}")
    f = r["fill"]
    below = [x for x in f["probe"] if x.get("below")]
    first_below = min((x["t"] for x in below), default=None)
    print(f"disk-full: {r['fs_bytes'] / 2**20:.0f} MiB tmpfs per node, threshold "
          f"{r['min_free_bytes'] / 2**20:.0f} MiB")
    print(f"  before: {rate(r['before'])}")
    print(f"  fill: {rate(f)}; stopped by {f['produce']['stopped_by']}")
    if first_below:
        print(f"  first sample below the threshold {first_below - f['started']:.2f} s into the "
              f"fill; the load's refusal (its exit) {f['refused_at'] - first_below:.2f} s after it")
        print(f"  lowest free space sampled: "
              f"{min(min(x.get('lowest') or x['available']) for x in f['probe'] if isinstance(x.get('available'), list)) / 2**20:.1f} MiB")
    for line in f["refusing_log_lines"]:
        print(f"  log: {line[:120]}... {line.split('dir=')[-1]}")
    print(f"  producer: {f['producer_stderr']}")
    q = r["refused"]
    print(f"  refused: CP consumer read {q['cp_consumed']:,} records in {q['cp_consume_secs']} s; "
          f"AP offsets answered by {sum(1 for x in q['ap_offsets'] if 'error' not in x)} of "
          f"{len(q['ap_offsets'])} (node, partition) asks")
    fr = r["free"]
    if fr["first_accepted_at"]:
        print(f"  free: first produce accepted {fr['first_accepted_at'] - fr['alter_at']:.2f} s "
              f"after the alter ({fr['attempts']} attempts)")
    for line in fr["resume_log_lines"]:
        print(f"  log: {line[:30]} ... {line.split('produces')[-1]}")
    print(f"  after: {rate(r['after'])}")


def main():
    loads = []
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r.get("run") == "proof":
                    proof(r)
                elif "fs_bytes" in r:
                    disk_full(r)
                else:
                    loads.append(r)
    if loads:
        load_rows(loads)


if __name__ == "__main__":
    main()
