#!/usr/bin/env bash
# Failover time under CP load: for each round, a fresh cluster of 3 `fjord serve` processes
# (started here, not by `fjord dev`, which stops the cluster when a node dies), a topic with
# one partition (replication 3), and a one-at-a-time CP producer on it (`fjord bench produce
# --one-at-a-time`, each record waits for its acknowledgement). After WARM_SECS the partition
# leader's process is SIGKILLed. The produce in flight at the kill, or sent right after it, is
# acknowledged only once a new leader took over and the client found it, so the run's largest
# produce latency bounds the time from the kill to the next acknowledged produce from above
# (by at most one normal produce latency, a few ms).
#
#   bench/failover.sh [ROUNDS=5]
#   SERVE_ARGS="--heartbeat-interval-ms 50 --election-timeout-ms 200" bench/failover.sh 5
#
# Prints one JSON line per round and, at the end, the median, min and max. Every wait is
# bounded; the cluster is stopped and wiped on exit.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
FJORD="$ROOT/target/release/fjord"
ROUNDS="${1:-5}"
WARM_SECS="${WARM_SECS:-3}"
RUN_SECS="${RUN_SECS:-10}"
PORT="${FJORD_BASE_PORT:-17101}"
BROKERS="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
(( ROUNDS >= 1 && ROUNDS <= 20 )) || die "ROUNDS must be 1..20"
[[ -x "$FJORD" ]] || die "no $FJORD: run 'bench/fjord.sh build'"

DIR="$BENCH_BASE/failover"
# The nodes' peer ports (--peers), 100 above their client ports (as `fjord dev`).
PEERS="1=127.0.0.1:$((PORT + 100)),2=127.0.0.1:$((PORT + 101)),3=127.0.0.1:$((PORT + 102))"
declare -A PID
stop_all() {
  for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
  PID=()
}
# The last round's data and logs stay in $DIR for a look.
trap stop_all EXIT
trap 'exit 130' INT TERM
start_all() {
  rm -rf "$DIR"; mkdir -p "$DIR"
  for id in 1 2 3; do
    "$FJORD" serve --id "$id" --listen "127.0.0.1:$((PORT + id - 1))" --data-dir "$DIR/node$id" \
      --peers "$PEERS" ${SERVE_ARGS:-} > "$DIR/node$id.log" 2>&1 < /dev/null &
    PID[$id]=$!
  done
  for _ in $(seq 1 300); do
    "$FJORD" --brokers "$BROKERS" cluster status > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the cluster did not come up in 30 s; see $DIR/node*.log"
}
results=()
for round in $(seq 1 "$ROUNDS"); do
  stop_all
  start_all
  # Until every node has registered, a replication factor of 3 is refused: retry (bounded).
  for _ in $(seq 1 100); do
    "$FJORD" --brokers "$BROKERS" topic create failover --partitions 1 --replication 3 \
      > /dev/null 2>&1 && break
    sleep 0.2
  done
  leader=""
  for _ in $(seq 1 100); do
    leader="$("$FJORD" --brokers "$BROKERS" --format json topic describe failover 2>/dev/null |
      python3 -c 'import json,sys; p=json.load(sys.stdin)["partitions"][0]; print(p.get("leader") or "")' 2>/dev/null || true)"
    [[ -n "$leader" ]] && break
    sleep 0.1
  done
  [[ -n "$leader" ]] || die "round $round: the partition has no leader"
  pid="${PID[$leader]}"
  "$FJORD" bench produce --brokers "$BROKERS" --topic failover --acks cp --record-size 100 \
    --records 1000000 --one-at-a-time --linger-ms 0 --duration-max-secs "$RUN_SECS" --format json \
    > "$BENCH_BASE/failover.out" 2> "$BENCH_BASE/failover.err" &
  bench=$!
  sleep "$WARM_SECS"
  kill -KILL "$pid"
  log "round $round: killed node $leader (pid $pid), the partition's leader"
  wait "$bench" || die "round $round: fjord bench failed: $(tail -3 "$BENCH_BASE/failover.err")"
  line="$(grep '^{' "$BENCH_BASE/failover.out" | tail -1)"
  ms="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["latency_ms_max"])' "$line")"
  errors="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$line")"
  echo "{\"round\": $round, \"killed_node\": $leader, \"failover_ms\": $ms, \"errors\": $errors}"
  results+=("$ms")
  stop_all
done
python3 - "${results[@]}" <<'PY'
import statistics, sys
v = sorted(float(x) for x in sys.argv[1:])
print(f"failover (kill to next acknowledged produce, ms): median {statistics.median(v):.0f}, "
      f"min {v[0]:.0f}, max {v[-1]:.0f}, rounds {len(v)}")
PY
