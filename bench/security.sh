#!/usr/bin/env bash
# What TLS and metrics cost produces, on fresh 3-node `fjord dev` clusters (bench/fjord.sh;
# release build), the two sides of each comparison alternating round by round (which goes
# first alternates too), so that the machine's drift (fsync here swings between ~0.2 ms and
# ~4 ms for minutes at a time) hits both alike.
#
#   bench/security.sh tls [ROUNDS]      # TLS on both ports (mutual TLS between nodes) vs plaintext
#   bench/security.sh metrics [ROUNDS]  # --metrics-listen scraped every second vs no metrics port
#   bench/security.sh scrape-cost [N]   # the nodes' CPU per scrape of /metrics (N scrapes of each)
#
# Each side, per round: CP produce throughput (THR_RECORDS records of 1 KiB, 2 producers,
# 3 partitions, RF 3) and one-at-a-time CP latency (LAT_RECORDS records of 100 B,
# --linger-ms 0), each on a fresh cluster. TLS: a CA and one node certificate (IP SAN
# 127.0.0.1) made by openssl in $BENCH_BASE/tls; the nodes get FJORD_TLS_CERT/KEY/CA, the load
# generator trusts the CA (FJORD_TLS_CA). Metrics: a scraper fetches every node's /metrics
# once a second for the whole load (Prometheus scrapes every 15-60 s: this is the heavy case).
# The request-path counters and histograms are recorded in both sides of `metrics` (they are
# always on): that side's cost is measured against the build before them (FJORD_BIN_BASE, a
# release build of the commit before, when given: `bench/security.sh metrics-build ROUNDS`).
#
# Results: JSON lines in $BENCH_BASE/security-<time>.jsonl (printed at the end); summarize
# with `python3 bench/security_summary.py FILE`.
#
# Environment (defaults): BENCH_BASE [/tmp/fjord-bench], FJORD_BIN [target/release/fjord],
# FJORD_BIN_BASE [none], THR_RECORDS [300000], LAT_RECORDS [3000], MAX_SECS [120].
set -Eeuo pipefail
trap 'echo "bench/security.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
export BENCH_BASE FJORD_BASE_PORT="${FJORD_BASE_PORT:-17101}"
FJORD_B="${FJORD_BIN:-$ROOT/target/release/fjord}"
FJORD_DIR="$BENCH_BASE/fjord"
BROKERS="127.0.0.1:$FJORD_BASE_PORT,127.0.0.1:$((FJORD_BASE_PORT + 1)),127.0.0.1:$((FJORD_BASE_PORT + 2))"
THR_RECORDS="${THR_RECORDS:-300000}"
LAT_RECORDS="${LAT_RECORDS:-3000}"
MAX_SECS="${MAX_SECS:-120}"
MODE="${1:-}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$BENCH_BASE/security-$STAMP.jsonl"
TLS_DIR="$BENCH_BASE/tls"
METRICS_BASE_PORT=19101
mkdir -p "$BENCH_BASE"
command -v jq >/dev/null || die "jq is needed (Debian: jq)"

cluster() { FJORD_BIN="$FJORD" "$HERE/fjord.sh" "$@"; }
scraper_pid=""
cleanup() {
  [[ -n "$scraper_pid" ]] && kill "$scraper_pid" 2>/dev/null || true
  cluster wipe >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A CA and a node certificate for 127.0.0.1, once.
make_certs() {
  [[ -s "$TLS_DIR/node.crt" ]] && return 0
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=fjord bench CA" -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=fjord-node" \
    -keyout "$TLS_DIR/node.key" -out "$TLS_DIR/node.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
    > "$TLS_DIR/ext.cnf"
  openssl x509 -req -in "$TLS_DIR/node.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 30 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/node.crt" 2>/dev/null
}

# Every node's /metrics once a second until killed (bounded: at most MAX_SECS * 4 rounds).
scrape_loop() {
  local n
  for n in $(seq 1 $((MAX_SECS * 4))); do
    for p in 0 1 2; do
      curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$((METRICS_BASE_PORT + p))/metrics" || true
    done
    sleep 1
  done
}

# run LABEL SIDE KIND: a fresh cluster on SIDE's settings, then the KIND load (thr | lat).
run() {
  local label="$1" side="$2" kind="$3"
  local env=() dev_args=""
  FJORD="$FJORD_B"
  case "$side" in
    tls) env=(FJORD_TLS_CERT="$TLS_DIR/node.crt" FJORD_TLS_KEY="$TLS_DIR/node.key"
              FJORD_TLS_CA="$TLS_DIR/ca.crt") ;;
    scraped) dev_args="--metrics-base-port $METRICS_BASE_PORT" ;;
    base) FJORD="${FJORD_BIN_BASE:?metrics-build needs FJORD_BIN_BASE}" ;;
    plain|unscraped) ;;
  esac
  cluster wipe >/dev/null 2>&1 || true
  env "${env[@]}" FJORD_BIN="$FJORD" FJORD_DEV_ARGS="$dev_args" "$HERE/fjord.sh" start
  [[ "$side" == scraped ]] && { scrape_loop & scraper_pid=$!; }
  local pids; pids="$(cluster pids | tr '\n' ' ')"
  local load=()
  if [[ "$kind" == thr ]]; then
    load=(--record-size 1024 --records "$THR_RECORDS" --producers 2)
  else
    load=(--record-size 100 --records "$LAT_RECORDS" --one-at-a-time --linger-ms 0)
  fi
  local client_env=()
  [[ "$side" == tls ]] && client_env=(FJORD_TLS_CA="$TLS_DIR/ca.crt")
  local m; m="$(measure "$pids" -- env "${client_env[@]}" "$FJORD" bench produce --brokers "$BROKERS" \
    --format json --topic "sec-$label" --partitions 3 --replication-factor 3 --acks cp \
    --duration-max-secs "$MAX_SECS" "${load[@]}")"
  if [[ -n "$scraper_pid" ]]; then kill "$scraper_pid" 2>/dev/null || true; wait "$scraper_pid" 2>/dev/null || true; scraper_pid=""; fi
  jq -nc --arg run "$label" --arg side "$side" --arg kind "$kind" --argjson measure "$m" \
    --argjson produce "$(cat "$BENCH_BASE/last.out")" \
    '{run: $run, side: $side, kind: $kind, measure: $measure, produce: $produce}' >> "$RESULTS"
  log "$label: $(jq -c '{mb_per_sec, records_per_sec, latency_ms_p50, latency_ms_p99}' "$BENCH_BASE/last.out")"
  cluster wipe >/dev/null 2>&1 || true
}

# scrape_cost SCRAPES: on a fresh cluster with metrics ports and SCRAPE_TOPICS topics of 3
# partitions, the nodes' CPU over SCRAPES scrapes of each node (one after the other) against
# their CPU over as long without scrapes; prints the CPU seconds one scrape of one node costs.
# From it, what scraping costs at any interval: per-scrape CPU / interval, as a share of a core.
scrape_cost() {
  local scrapes="$1" t p pids before mid after t0 t1 t2
  FJORD="$FJORD_B"
  cluster wipe >/dev/null 2>&1 || true
  FJORD_BIN="$FJORD_B" FJORD_DEV_ARGS="--metrics-base-port $METRICS_BASE_PORT" "$HERE/fjord.sh" start
  for t in $(seq 1 "${SCRAPE_TOPICS:-10}"); do
    "$FJORD_B" topic create "scrape-$t" --partitions 3 --replication-factor 3 --brokers "$BROKERS" >/dev/null
  done
  pids="$(cluster pids | tr '
' ' ')"
  ticks() { local s=0 q; for q in $pids; do s=$((s + $(proc_ticks "$q"))); done; echo "$s"; }
  t0="$(date +%s.%N)"; before="$(ticks)"
  for _ in $(seq 1 "$scrapes"); do
    for p in 0 1 2; do
      curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$((METRICS_BASE_PORT + p))/metrics"
    done
  done
  t1="$(date +%s.%N)"; mid="$(ticks)"
  sleep "$(echo "$t1 - $t0" | bc)"
  t2="$(date +%s.%N)"; after="$(ticks)"
  local hz; hz="$(getconf CLK_TCK)"
  jq -nc --argjson scrapes "$scrapes" --argjson busy "$((mid - before))" --argjson idle "$((after - mid))" \
    --argjson hz "$hz" --arg secs "$(echo "$t1 - $t0" | bc)" --arg bytes \
    "$(curl -s "http://127.0.0.1:$METRICS_BASE_PORT/metrics" | wc -c)" \
    '{scrapes: $scrapes, nodes: 3, scrape_secs: ($secs|tonumber), node_ticks_scraping: $busy,
      node_ticks_idle_as_long: $idle, clk_tck: $hz, exposition_bytes: ($bytes|tonumber),
      cpu_secs_per_scrape: ((($busy - $idle) / $hz) / ($scrapes * 3))}' | tee -a "$RESULTS"
  cluster wipe >/dev/null 2>&1 || true
}

# alternate ROUNDS SIDE_A SIDE_B: both loads on each side, in turn.
alternate() {
  local rounds="$1" a="$2" b="$3" r kind
  for r in $(seq 1 "$rounds"); do
    local order=("$a" "$b")
    (( r % 2 == 0 )) && order=("$b" "$a")
    for kind in thr lat; do
      for side in "${order[@]}"; do run "$side-$kind-r$r" "$side" "$kind"; done
    done
  done
}

case "$MODE" in
  tls) make_certs; alternate "${2:-3}" tls plain ;;
  metrics) alternate "${2:-3}" scraped unscraped ;;
  metrics-build) alternate "${2:-3}" unscraped base ;;
  scrape-cost) scrape_cost "${2:-300}" ;;
  *) echo "usage: $0 tls [ROUNDS] | metrics [ROUNDS] | metrics-build [ROUNDS] | scrape-cost [SCRAPES]" >&2; exit 2 ;;
esac
log "results: $RESULTS"
echo "$RESULTS"
