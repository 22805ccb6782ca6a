#!/usr/bin/env bash
# One-at-a-time produce latency while a consumer replays records no cache holds: a fresh
# 3-node cluster (`bench/fjord.sh start`), a topic `cold` of 3 partitions (one led by each
# node) filled with COLD_RECORDS records of 1 KiB, then per round:
#   1. `alone`: HOT_RECORDS records of 100 B, one at a time, CP, into topic `hot` (1 partition);
#   2. the page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`: needs root), then
#      `replay`: a consumer reading `cold` from offset 0 (`fjord bench consume`) and, as soon
#      as it started, the same one-at-a-time produce into `hot`.
# Each node's own redb cache (--cache-size-mib, 64 MiB) holds only the newest pages, so the
# replay reads from the disk.
#
#   bench/cold_read.sh [ROUNDS=3]   env: COLD_RECORDS [2000000], HOT_RECORDS [3000], FJORD_BIN
#
# docs/benchmarks.md, "Replay from the disk beside one-at-a-time produces", has its figures.
#
# Output: one JSON line per measurement in $BENCH_BASE/cold-read-<time>.jsonl (round, phase,
# load average, the `fjord bench` report). Every run is bounded (--duration-max-secs).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROUNDS="${1:-3}"
COLD_RECORDS="${COLD_RECORDS:-2000000}"
HOT_RECORDS="${HOT_RECORDS:-3000}"
(( ROUNDS >= 1 && ROUNDS <= 10 )) || die "ROUNDS must be 1..10"
[[ -w /proc/sys/vm/drop_caches ]] || die "dropping the page cache needs root"

trap '"$HERE/fjord.sh" wipe || true' EXIT
trap 'exit 130' INT TERM
mkdir -p "$BENCH_BASE"
OUT="$BENCH_BASE/cold-read-$(date +%Y%m%d-%H%M%S).jsonl"
log "machine: $NCPU cores; $(uptime); results -> $OUT"

# emit ROUND PHASE REPORT_JSON
emit() {
  python3 - "$@" >> "$OUT" <<'PY'
import json, sys
rnd, phase, report = sys.argv[1:]
load = float(open("/proc/loadavg").read().split()[0])
print(json.dumps({"round": int(rnd), "phase": phase, "loadavg_1m": load,
                  "report": json.loads(report)}))
PY
  log "round $1 $2: $(tail -1 "$OUT" | cut -c1-300)"
}

hot() {
  "$HERE/fjord.sh" bench produce --topic hot --partitions 1 --replication-factor 3 --acks cp \
    --record-size 100 --records "$HOT_RECORDS" --one-at-a-time --linger-ms 0 \
    --duration-max-secs 120 | tail -1
}

"$HERE/fjord.sh" wipe
"$HERE/fjord.sh" start
"$HERE/fjord.sh" bench produce --topic cold --partitions 3 --replication-factor 3 --acks cp \
  --record-size 1024 --records "$COLD_RECORDS" --producers 2 --duration-max-secs 600 > /dev/null
for round in $(seq 1 "$ROUNDS"); do
  emit "$round" alone "$(hot)"
  sync
  echo 3 > /proc/sys/vm/drop_caches
  "$HERE/fjord.sh" bench consume --topic cold --records "$COLD_RECORDS" \
    --duration-max-secs 300 > "$BENCH_BASE/cold-consume.out" &
  consumer=$!
  emit "$round" replay "$(hot)"
  wait "$consumer"
  emit "$round" consume "$(tail -1 "$BENCH_BASE/cold-consume.out")"
done
