#!/usr/bin/env bash
# fjord vs NATS JetStream, side by side on this machine, in one session.
#
#   bench/compare.sh [ROUNDS]     # default 3; then: python3 bench/summarize.py <results file>
#
# Installs and builds what is missing (bench/jetstream.sh install, bench/fjord.sh build), then
# runs ROUNDS rounds; each round starts a fresh 3-node JetStream cluster, runs the peer at 1 KiB
# and 100 B, wipes it, starts a fresh 3-node fjord cluster, runs fjord's four cases, wipes it.
# Interleaving the rounds spreads the shared machine's load changes over both systems.
#
# Per round (sizes in bytes of record value / message payload):
#   jetstream SIZE=1024, SIZE=100   one natsbench run each: SYNC_N one-at-a-time publishes,
#                                   ASYNC_N windowed publishes (WINDOW acks outstanding), then a
#                                   pull consumer reads the stream back (see bench/jetstream.sh)
#   fjord produce-1k    --acks cp --record-size 1024 --records FJ_RECORDS_1K --producers FJ_PRODUCERS
#   fjord produce-100   --acks cp --record-size 100  --records FJ_RECORDS_100 --producers FJ_PRODUCERS
#   fjord latency       --acks cp --record-size 100  --records FJ_RECORDS_LAT --one-at-a-time
#                       --linger-ms 0 (the default 5 ms linger would add 5 ms to every record)
#   fjord consume-1k    --read cp, the produce-1k topic from the beginning
#   fjord produce-1k-p1, produce-100-p1, latency-p1: the three produce cases again into a topic
#                       of ONE partition, against the peer's one stream (the cases above use
#                       FJ_PARTITIONS, default 3, each its own Raft group; set P1=0 to skip)
# Every fjord run is bounded by --duration-max-secs MAX_SECS, every peer phase by MAX_SECS.
#
# Output: one JSON line per run in $BENCH_BASE/results-<time>.jsonl: system, round, case, the
# tool's own JSON report, and what bench/lib.sh `measure` saw (load average before the run, machine
# busy/iowait %, each server's and the client's CPU as % of one core).
# A trap stops and wipes both clusters on exit, error or Ctrl-C.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROUNDS="${1:-3}"
export MAX_SECS="${MAX_SECS:-60}" SYNC_N="${SYNC_N:-5000}" ASYNC_N="${ASYNC_N:-100000}" WINDOW="${WINDOW:-256}"
FJ_RECORDS_1K="${FJ_RECORDS_1K:-100000}"
FJ_RECORDS_100="${FJ_RECORDS_100:-200000}"
FJ_RECORDS_LAT="${FJ_RECORDS_LAT:-3000}"
FJ_PRODUCERS="${FJ_PRODUCERS:-2}"
FJ_PARTITIONS="${FJ_PARTITIONS:-3}"
P1="${P1:-1}"
(( ROUNDS >= 1 && ROUNDS <= 10 )) || die "ROUNDS must be 1..10"

cleanup() {
  "$HERE/jetstream.sh" wipe || true
  "$HERE/fjord.sh" wipe || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BENCH_BASE"
OUT="$BENCH_BASE/results-$(date +%Y%m%d-%H%M%S).jsonl"
"$HERE/jetstream.sh" install
[[ -x "$HERE/../target/release/fjord" ]] || "$HERE/fjord.sh" build
TOOL="$("$HERE/jetstream.sh" tool)"
log "machine: $NCPU cores; $(uptime); results -> $OUT"

# record SYSTEM ROUND CASE: append the last run (its JSON report and $BENCH_BASE/last.cpu) to $OUT.
record() {
  python3 - "$1" "$2" "$3" "$TOOL" "$BENCH_BASE/last.out" "$BENCH_BASE/last.cpu" >> "$OUT" <<'PY'
import json, sys
system, rnd, case, tool, out, cpu = sys.argv[1:]
lines = [l for l in open(out).read().splitlines() if l.startswith("{")]
report = json.loads(lines[-1]) if lines else None
print(json.dumps({"system": system, "round": int(rnd), "case": case,
                  "tool": tool if system == "jetstream" else "fjord bench",
                  "measure": json.loads(open(cpu).read()), "report": report}))
PY
  log "$1 round $2 $3: $(tail -1 "$OUT" | cut -c1-400)"
}

settle() { sync; sleep 2; }

for round in $(seq 1 "$ROUNDS"); do
  log "=== round $round/$ROUNDS: jetstream"
  "$HERE/jetstream.sh" wipe
  "$HERE/jetstream.sh" start
  for size in 1024 100; do
    settle
    measure "$("$HERE/jetstream.sh" pids | tr '\n' ' ')" -- "$HERE/jetstream.sh" run "$size" > "$BENCH_BASE/last.cpu"
    record jetstream "$round" "size-$size"
  done
  "$HERE/jetstream.sh" wipe

  log "=== round $round/$ROUNDS: fjord"
  "$HERE/fjord.sh" wipe
  "$HERE/fjord.sh" start
  servers="$("$HERE/fjord.sh" pids | tr '\n' ' ')"
  common=(--partitions "$FJ_PARTITIONS" --replication-factor 3 --duration-max-secs "$MAX_SECS")
  settle
  measure "$servers" -- "$HERE/fjord.sh" bench produce --topic "bench-r$round-1k" "${common[@]}" \
    --acks cp --record-size 1024 --records "$FJ_RECORDS_1K" --producers "$FJ_PRODUCERS" > "$BENCH_BASE/last.cpu"
  record fjord "$round" produce-1k
  settle
  measure "$servers" -- "$HERE/fjord.sh" bench produce --topic "bench-r$round-100" "${common[@]}" \
    --acks cp --record-size 100 --records "$FJ_RECORDS_100" --producers "$FJ_PRODUCERS" > "$BENCH_BASE/last.cpu"
  record fjord "$round" produce-100
  settle
  measure "$servers" -- "$HERE/fjord.sh" bench produce --topic "bench-r$round-lat" "${common[@]}" \
    --acks cp --record-size 100 --records "$FJ_RECORDS_LAT" --one-at-a-time --linger-ms 0 > "$BENCH_BASE/last.cpu"
  record fjord "$round" latency
  settle
  measure "$servers" -- "$HERE/fjord.sh" bench consume --topic "bench-r$round-1k" --read cp \
    --records "$FJ_RECORDS_1K" --duration-max-secs "$MAX_SECS" > "$BENCH_BASE/last.cpu"
  record fjord "$round" consume-1k
  if [[ "$P1" == 1 ]]; then
    one=(--partitions 1 --replication-factor 3 --duration-max-secs "$MAX_SECS")
    settle
    measure "$servers" -- "$HERE/fjord.sh" bench produce --topic "bench-r$round-1k-p1" "${one[@]}" \
      --acks cp --record-size 1024 --records "$FJ_RECORDS_1K" --producers "$FJ_PRODUCERS" > "$BENCH_BASE/last.cpu"
    record fjord "$round" produce-1k-p1
    settle
    measure "$servers" -- "$HERE/fjord.sh" bench produce --topic "bench-r$round-100-p1" "${one[@]}" \
      --acks cp --record-size 100 --records "$FJ_RECORDS_100" --producers "$FJ_PRODUCERS" > "$BENCH_BASE/last.cpu"
    record fjord "$round" produce-100-p1
    settle
    measure "$servers" -- "$HERE/fjord.sh" bench produce --topic "bench-r$round-lat-p1" "${one[@]}" \
      --acks cp --record-size 100 --records "$FJ_RECORDS_LAT" --one-at-a-time --linger-ms 0 > "$BENCH_BASE/last.cpu"
    record fjord "$round" latency-p1
  fi
  "$HERE/fjord.sh" wipe
done
log "done: $(uptime); summarize with: python3 $HERE/summarize.py $OUT"
echo "$OUT"
