#!/usr/bin/env bash
# Measures what an idle cluster costs: starts a local 3-node cluster (`fjord dev`), creates
# PARTITIONS partitions with replication 3 (topics of at most 1,000 partitions), waits until
# every partition has a leader and SETTLE_SECS more, then reads each node's CPU time
# (utime + stime from /proc/<pid>/stat) over SECS seconds and its RSS. Stops the cluster and
# deletes its data directory on exit.
#
# usage: scripts/idle-cost.sh [PARTITIONS=1000] [SECS=30] [SETTLE_SECS=20]   (0 partitions: the fixed cost)
# env:   FJORD_BIN (default target/release/fjord), BASE_PORT (default 7301),
#        BATCH (partitions per topic, default 1000; each topic waits for its leaders before
#        the next is created)
set -euo pipefail

PARTITIONS=${1:-1000}
SECS=${2:-30}
SETTLE_SECS=${3:-20}
BIN=${FJORD_BIN:-target/release/fjord}
BASE_PORT=${BASE_PORT:-7301}
BATCH=${BATCH:-1000}
DIR=$(mktemp -d /tmp/fjord-idle.XXXXXX)
BROKERS="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
HZ=$(getconf CLK_TCK)

"$BIN" dev --data-dir "$DIR" --base-port "$BASE_PORT" >"$DIR/dev.out" 2>&1 &
DEV=$!
cleanup() {
  kill -TERM "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

until "$BIN" --brokers "$BROKERS" cluster status >/dev/null 2>&1; do sleep 0.5; done
PIDS=$(pgrep -P "$DEV")
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
declare -A empty
sleep 2
for p in $PIDS; do empty[$p]=$(rss "$p"); done
leaders() {
  "$BIN" --brokers "$BROKERS" --format json cluster status 2>/dev/null |
    grep -o '"leader":[1-9]' | wc -l
}
start=$(date +%s)
left=$PARTITIONS
made=0
i=0
while [ "$left" -gt 0 ]; do
  n=$((left > BATCH ? BATCH : left))
  # Starting many groups can outlast the client's deadline: the topic is created anyway.
  "$BIN" --brokers "$BROKERS" topic create "idle$i" --partitions "$n" --replication 3 >/dev/null ||
    echo "topic create idle$i answered an error; waiting for its partitions anyway"
  left=$((left - n))
  made=$((made + n))
  i=$((i + 1))
  until [ "$(leaders)" -ge "$made" ]; do sleep 1; done
done
echo "all $PARTITIONS partitions have leaders after $(($(date +%s) - start)) s; settling ${SETTLE_SECS} s"
sleep "$SETTLE_SECS"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A before
for p in $PIDS; do before[$p]=$(ticks "$p"); done
sleep "$SECS"
total=0
for p in $PIDS; do
  used=$(($(ticks "$p") - before[$p]))
  total=$((total + used))
  r=$(rss "$p")
  printf 'pid %s: %s%% of a core, RSS %s MiB (%s MiB with no topic: %s KiB per replica)\n' "$p" \
    "$(echo "scale=2; 100 * $used / $HZ / $SECS" | bc)" "$((r / 1024))" "$((empty[$p] / 1024))" \
    "$(((r - empty[$p]) / (PARTITIONS > 0 ? PARTITIONS : 1)))"
done
printf 'all nodes: %s%% of one core over %s s\n' "$(echo "scale=2; 100 * $total / $HZ / $SECS" | bc)" "$SECS"
for log in "$DIR"/node*.log; do
  last=$(grep -h "quiet partition replicas" "$log" | tail -1 | grep -o 'quiet=[0-9]* replicas=[0-9]* leading=[0-9]* hibernated=[0-9]*' || true)
  echo "$(basename "$log" .log): ${last:-no quiet replicas logged}"
done
