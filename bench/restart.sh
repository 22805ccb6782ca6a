#!/usr/bin/env bash
# Restart time of a cluster holding data: fills a fresh 3-node cluster (3 `fjord serve`
# processes, data under $BENCH_BASE/restart) with SIZE_GIB GiB of 1 KiB records in a topic of
# PARTITIONS partitions (replication 3, so each node holds SIZE_GIB), stops every node
# (SIGTERM, as an operator would), starts them again and times, for each round, how long until
# a CP read of the last record of every partition succeeds.
#
#   bench/restart.sh [ROUNDS=3]       env: SIZE_GIB [10], PARTITIONS [3]
#
# Needs about 3 x SIZE_GIB of free disk under $BENCH_BASE. Every wait is bounded; the nodes
# are stopped and the data deleted on exit.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
FJORD="$ROOT/target/release/fjord"
ROUNDS="${1:-3}"
SIZE_GIB="${SIZE_GIB:-10}"
PARTITIONS="${PARTITIONS:-3}"
PORT="${FJORD_BASE_PORT:-17101}"
BROKERS="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
# The nodes' peer ports (--peers), 100 above their client ports (as `fjord dev`).
PEERS="1=127.0.0.1:$((PORT + 100)),2=127.0.0.1:$((PORT + 101)),3=127.0.0.1:$((PORT + 102))"
DIR="$BENCH_BASE/restart"
[[ -x "$FJORD" ]] || die "no $FJORD: run 'bench/fjord.sh build'"
(( ROUNDS >= 1 && ROUNDS <= 10 )) || die "ROUNDS must be 1..10"

declare -A PID
stop_all() {
  local sig="${1:-TERM}"
  for p in "${PID[@]}"; do kill "-$sig" "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PID=()
}
trap 'stop_all KILL; [[ -n "${KEEP:-}" ]] || rm -rf "$DIR"' EXIT
trap 'exit 130' INT TERM
start_all() {
  for id in 1 2 3; do
    "$FJORD" serve --id "$id" --listen "127.0.0.1:$((PORT + id - 1))" --data-dir "$DIR/node$id" \
      --peers "$PEERS" >> "$DIR/node$id.log" 2>&1 < /dev/null &
    PID[$id]=$!
  done
}
# Seconds (fractional) since the epoch.
now() { date +%s.%N; }

rm -rf "$DIR"; mkdir -p "$DIR"
start_all
for _ in $(seq 1 300); do
  "$FJORD" --brokers "$BROKERS" cluster status > /dev/null 2>&1 && break
  sleep 0.1
done
# Until every node has registered, a replication factor of 3 is refused: retry (bounded).
for _ in $(seq 1 100); do
  "$FJORD" --brokers "$BROKERS" topic create restart --partitions "$PARTITIONS" --replication 3 \
    > /dev/null 2>&1 && break
  sleep 0.2
done
# The controller balances the new partitions' leaders in its first rounds (every 3 s); let it,
# so that the fill does not race leader moves.
sleep 10
records=$(( SIZE_GIB * 1024 * 1024 ))
log "filling: $records records of 1 KiB ($SIZE_GIB GiB per node)"
"$FJORD" bench produce --brokers "$BROKERS" --topic restart --acks cp --record-size 1024 \
  --records "$records" --producers 2 --duration-max-secs 3600 --format json | grep '^{' | tail -1
log "data per node: $(du -sh "$DIR/node1" | cut -f1)"

times=()
# A partition serves once a CP produce to it is acknowledged and CP reads return both that
# record (behind all the data) and its first record.
serves() {
  local p=$1 out off
  out="$(echo restarted | "$FJORD" --brokers "$BROKERS" --format json produce restart \
    --partition "$p" --acks cp 2>/dev/null)" || return 1
  off="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1].splitlines()[-1])["offset"])' "$out")" || return 1
  for o in "$off" 0; do
    "$FJORD" --brokers "$BROKERS" consume restart --partition "$p" --offset "$o" --count 1 \
      --read cp --max-wait-ms 0 > /dev/null 2>&1 || return 1
  done
}
for round in $(seq 1 "$ROUNDS"); do
  stop_all TERM
  t0="$(now)"
  start_all
  for p in $(seq 0 $((PARTITIONS - 1))); do
    ok=""
    for _ in $(seq 1 600); do
      if serves "$p"; then ok=1; break; fi
      sleep 0.05
    done
    [[ -n "$ok" ]] || die "round $round: partition $p does not serve after 600 attempts"
  done
  t="$(python3 -c "print(f'{$(now) - $t0:.2f}')")"
  echo "{\"round\": $round, \"gib_per_node\": $SIZE_GIB, \"restart_to_reads_secs\": $t}"
  times+=("$t")
done
python3 - "${times[@]}" <<'PY'
import statistics, sys
v = sorted(float(x) for x in sys.argv[1:])
print(f"restart to CP reads of every partition's last record (s): median {statistics.median(v):.2f}, "
      f"min {v[0]:.2f}, max {v[-1]:.2f}, rounds {len(v)}")
PY
