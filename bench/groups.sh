#!/usr/bin/env bash
# Consumer groups: fjord's three group measurements, and the peer's idle durable consumers.
#
#   bench/groups.sh [ROUNDS]     # default 3; prints the results file (one JSON line per run)
#
# 1. consume vs group-consume (fresh 3-node fjord cluster, bench/fjord.sh): GC_RECORDS records of
#    GC_SIZE bytes are produced into a topic of GC_PARTITIONS partitions (RF 3); then ROUNDS times,
#    alternating, `fjord bench consume` and `fjord bench group-consume --members GC_MEMBERS` read
#    all of it from the start with the same --read cp and fetch sizes (each group-consume run uses
#    a fresh group, measured once the group is settled).
# 2. group-rebalance: RB_MEMBERS-1 members on a topic of RB_PARTITIONS partitions, then the
#    RB_MEMBERS-th joins, RB_REPEATS times (min/median/max ms). The time is bounded below by the
#    server's --group-heartbeat-interval-ms (5 s by default): set it with FJORD_SERVE_ARGS.
# 3. group-idle (a fresh cluster, so the groups above do not count): IDLE_GROUPS groups with
#    committed offsets and no members; the servers' CPU over IDLE_SECS and RSS per group.
# 4. Peer (PEER=1, the default): a fresh 3-node JetStream cluster (bench/jetstream.sh), IDLE_GROUPS
#    durable R3 pull consumers each with an acked message and no client
#    (bench/jetstream_consumers.py), measured the same way. JetStream's consume through a durable
#    consumer is already in bench/compare.sh's natsbench runs (its "consume" phase reads through a
#    durable pull consumer); JetStream has no counterpart of a group rebalance to time the same way.
#
# Environment: ROUNDS via $1; GC_RECORDS [200000], GC_SIZE [1024], GC_PARTITIONS [3],
# GC_MEMBERS [3]; RB_PARTITIONS [100], RB_MEMBERS [10], RB_REPEATS [5]; IDLE_GROUPS [10000],
# IDLE_SECS [60], IDLE_BASELINE_SECS [30], IDLE_SETTLE_SECS [10], IDLE_CONCURRENCY [64];
# MAX_SECS [120] (bound of each consume run and of each wait for a group to settle); PEER [1];
# FJORD_SERVE_ARGS (e.g. "--group-heartbeat-interval-ms 500"), FJORD_BIN, BENCH_BASE: see
# bench/fjord.sh. A trap stops and wipes both clusters on exit, error or Ctrl-C.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROUNDS="${1:-3}"
GC_RECORDS="${GC_RECORDS:-200000}" GC_SIZE="${GC_SIZE:-1024}"
GC_PARTITIONS="${GC_PARTITIONS:-3}" GC_MEMBERS="${GC_MEMBERS:-3}"
RB_PARTITIONS="${RB_PARTITIONS:-100}" RB_MEMBERS="${RB_MEMBERS:-10}" RB_REPEATS="${RB_REPEATS:-5}"
IDLE_GROUPS="${IDLE_GROUPS:-10000}" IDLE_SECS="${IDLE_SECS:-60}"
IDLE_BASELINE_SECS="${IDLE_BASELINE_SECS:-30}" IDLE_SETTLE_SECS="${IDLE_SETTLE_SECS:-10}"
IDLE_CONCURRENCY="${IDLE_CONCURRENCY:-64}"
MAX_SECS="${MAX_SECS:-120}" PEER="${PEER:-1}"
(( ROUNDS >= 1 && ROUNDS <= 10 )) || die "ROUNDS must be 1..10"
# The idle measurement alone takes baseline + settle + measure, plus the creation: bound it all.
IDLE_TIMEOUT=$(( IDLE_BASELINE_SECS + IDLE_SETTLE_SECS + IDLE_SECS + 3600 ))
NATS_URLS="nats://127.0.0.1:24222,nats://127.0.0.1:24223,nats://127.0.0.1:24224"

cleanup() {
  [[ "$PEER" == 1 ]] && { "$HERE/jetstream.sh" wipe || true; }
  "$HERE/fjord.sh" wipe || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BENCH_BASE"
OUT="$BENCH_BASE/groups-$(date +%Y%m%d-%H%M%S).jsonl"
[[ -x "${FJORD_BIN:-$HERE/../target/release/fjord}" ]] || "$HERE/fjord.sh" build
log "machine: $NCPU cores; $(uptime); serve flags: ${FJORD_SERVE_ARGS:-none}; results -> $OUT"

# record SYSTEM CASE ROUND [CPU_FILE]: append the last run's JSON report (and, if given, what
# lib.sh `measure` saw) to $OUT as one line.
record() {
  python3 - "$1" "$2" "$3" "$BENCH_BASE/last.out" "${4:-}" "${FJORD_SERVE_ARGS:-}" >> "$OUT" <<'PY'
import json, sys
system, case, rnd, out, cpu, serve = sys.argv[1:]
lines = [l for l in open(out).read().splitlines() if l.startswith("{")]
line = {"system": system, "case": case, "round": int(rnd),
        "report": json.loads(lines[-1]) if lines else None}
if system == "fjord":
    line["serve_args"] = serve
if cpu:
    line["measure"] = json.loads(open(cpu).read())
print(json.dumps(line))
PY
  log "$1 $2 round $3: $(tail -1 "$OUT" | cut -c1-400)"
}

settle() { sync; sleep 2; }

fresh_fjord() { "$HERE/fjord.sh" wipe; "$HERE/fjord.sh" start; }

log "=== fjord: consume vs group-consume"
fresh_fjord
servers="$("$HERE/fjord.sh" pids | tr '\n' ' ')"
"$HERE/fjord.sh" bench produce --topic groups-consume --partitions "$GC_PARTITIONS" --replication-factor 3 \
  --acks cp --record-size "$GC_SIZE" --records "$GC_RECORDS" --producers 2 --duration-max-secs "$MAX_SECS" \
  > "$BENCH_BASE/last.out"
record fjord produce-for-consume 0
for round in $(seq 1 "$ROUNDS"); do
  settle
  measure "$servers" -- "$HERE/fjord.sh" bench consume --topic groups-consume --read cp \
    --records "$GC_RECORDS" --duration-max-secs "$MAX_SECS" > "$BENCH_BASE/last.cpu"
  record fjord consume "$round" "$BENCH_BASE/last.cpu"
  settle
  measure "$servers" -- "$HERE/fjord.sh" bench group-consume --topic groups-consume --read cp \
    --members "$GC_MEMBERS" --records "$GC_RECORDS" --duration-max-secs "$MAX_SECS" > "$BENCH_BASE/last.cpu"
  record fjord group-consume "$round" "$BENCH_BASE/last.cpu"
done

log "=== fjord: group-rebalance"
settle
timeout $(( MAX_SECS * (2 * RB_REPEATS + 1) + 300 )) "$HERE/fjord.sh" bench group-rebalance \
  --topic groups-rebalance --partitions "$RB_PARTITIONS" --replication-factor 3 \
  --members "$RB_MEMBERS" --repeats "$RB_REPEATS" --settle-max-secs "$MAX_SECS" > "$BENCH_BASE/last.out"
record fjord group-rebalance 1

log "=== fjord: group-idle (fresh cluster)"
fresh_fjord
pids="$("$HERE/fjord.sh" pids | paste -sd, -)"
timeout "$IDLE_TIMEOUT" "$HERE/fjord.sh" bench group-idle --groups "$IDLE_GROUPS" \
  --concurrency "$IDLE_CONCURRENCY" --pids "$pids" --baseline-secs "$IDLE_BASELINE_SECS" \
  --settle-secs "$IDLE_SETTLE_SECS" --duration-secs "$IDLE_SECS" > "$BENCH_BASE/last.out"
record fjord group-idle 1
"$HERE/fjord.sh" wipe

if [[ "$PEER" == 1 ]]; then
  log "=== jetstream: idle durable R3 consumers"
  "$HERE/jetstream.sh" install-server
  "$HERE/jetstream.sh" wipe
  "$HERE/jetstream.sh" start
  pids="$("$HERE/jetstream.sh" pids | paste -sd, -)"
  timeout "$IDLE_TIMEOUT" python3 "$HERE/jetstream_consumers.py" --urls "$NATS_URLS" --pids "$pids" \
    --consumers "$IDLE_GROUPS" --concurrency "$IDLE_CONCURRENCY" --baseline-secs "$IDLE_BASELINE_SECS" \
    --settle-secs "$IDLE_SETTLE_SECS" --duration-secs "$IDLE_SECS" > "$BENCH_BASE/last.out"
  record jetstream durable-idle 1
  "$HERE/jetstream.sh" wipe
fi
log "done: $(uptime)"
cat "$OUT"
echo "$OUT"
