#!/usr/bin/env bash
# fjord: a 3-node `fjord dev` cluster on 127.0.0.1 and `fjord bench` against it.
#
#   bench/fjord.sh build          # cargo build --release -p fjord-cli
#   bench/fjord.sh start          # fjord dev --data-dir $BENCH_BASE/fjord, waits <= 60 s for "ready"
#   bench/fjord.sh pids           # the three `fjord serve` pids, one per line
#   bench/fjord.sh bench ARGS...  # target/release/fjord bench ARGS --brokers ... --format json
#   bench/fjord.sh stop           # SIGTERM `fjord dev` (it stops its nodes), KILL after 20 s
#   bench/fjord.sh wipe           # stop, then delete the data dir
#
# Environment: BENCH_BASE [/tmp/fjord-bench], FJORD_BASE_PORT [17101] (clients 17101-17103, peers 17201-17203, away
# from the dev default 7101 so a developer's cluster is not hit), FJORD_BIN [target/release/fjord],
# FJORD_SERVE_ARGS [none]: flags for every node's `fjord serve` (`fjord dev -- FLAGS`), split on
# spaces, e.g. FJORD_SERVE_ARGS="--group-heartbeat-interval-ms 500"; FJORD_DEV_ARGS [none]:
# flags for `fjord dev` itself, e.g. FJORD_DEV_ARGS="--metrics-base-port 19101".
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
FJORD="${FJORD_BIN:-$ROOT/target/release/fjord}"
FJORD_DIR="$BENCH_BASE/fjord"
FJORD_BASE_PORT="${FJORD_BASE_PORT:-17101}"
BROKERS="127.0.0.1:$FJORD_BASE_PORT,127.0.0.1:$((FJORD_BASE_PORT + 1)),127.0.0.1:$((FJORD_BASE_PORT + 2))"

build() { (cd "$ROOT" && timeout 3000 cargo build --release -p fjord-cli >&2); }

dev_pid() { cat "$BENCH_BASE/fjord-dev.pid" 2>/dev/null || true; }

start() {
  [[ -x "$FJORD" ]] || die "no $FJORD: run '$0 build'"
  local p; p="$(dev_pid)"
  [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null && die "fjord dev already running (pid $p)"
  mkdir -p "$FJORD_DIR"
  local serve=() dev=()
  if [[ -n "${FJORD_DEV_ARGS:-}" ]]; then read -r -a dev <<< "$FJORD_DEV_ARGS"; fi
  if [[ -n "${FJORD_SERVE_ARGS:-}" ]]; then read -r -a serve <<< "$FJORD_SERVE_ARGS"; serve=(-- "${serve[@]}"); fi
  setsid "$FJORD" dev --data-dir "$FJORD_DIR" --base-port "$FJORD_BASE_PORT" "${dev[@]}" "${serve[@]}" \
    > "$BENCH_BASE/fjord-dev.out" 2> "$BENCH_BASE/fjord-dev.err" < /dev/null &
  echo $! > "$BENCH_BASE/fjord-dev.pid"
  local deadline=$((SECONDS + 60))
  while (( SECONDS < deadline )); do
    if grep -q '^ready' "$BENCH_BASE/fjord-dev.out" 2>/dev/null; then
      log "fjord up: $(grep '^ready' "$BENCH_BASE/fjord-dev.out")"; return 0
    fi
    kill -0 "$(dev_pid)" 2>/dev/null || { cat "$BENCH_BASE/fjord-dev.err" >&2; die "fjord dev exited"; }
    sleep 0.5
  done
  die "fjord dev not ready after 60 s; see $BENCH_BASE/fjord-dev.err and $FJORD_DIR/node*.log"
}

pids() { local p; p="$(dev_pid)"; [[ -n "$p" ]] && pgrep -P "$p" || true; }

bench() { "$FJORD" bench "$@" --brokers "$BROKERS" --format json; }

stop() {
  local p; p="$(dev_pid)"; [[ -z "$p" ]] && return 0
  if kill -0 "$p" 2>/dev/null; then
    local children; children="$(pgrep -P "$p" || true)"
    kill -TERM "$p"
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    # fjord dev stops its nodes; make sure, by pid, that none outlived it.
    for c in $children; do kill -0 "$c" 2>/dev/null && kill -KILL "$c"; done
  fi
  rm -f "$BENCH_BASE/fjord-dev.pid"
}

wipe() { stop; rm -rf "${FJORD_DIR:?}"; }

case "${1:-}" in
  build) build ;;
  start) start ;;
  pids) pids ;;
  bench) shift; bench "$@" ;;
  stop) stop ;;
  wipe) wipe ;;
  *) echo "usage: $0 build|start|pids|bench ARGS|stop|wipe" >&2; exit 2 ;;
esac
