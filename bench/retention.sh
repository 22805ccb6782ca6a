#!/usr/bin/env bash
# Retention: each replica's disk use under retention, and what deleting costs produces, on a
# fresh 3-node `fjord dev` cluster per run (bench/fjord.sh; release build).
#
#   bench/retention.sh bytes [PARTITIONS]  # retention_bytes (64 MiB), 2 GiB of 1 KiB CP writes
#   bench/retention.sh time [PARTITIONS]   # retention_ms (10 s), CP writes for 60 s
#   bench/retention.sh ab [ROUNDS]         # CP produce throughput, retention deleting vs none
#   bench/retention.sh latency [ROUNDS]    # one-at-a-time CP latency, retention deleting vs none
#   bench/retention.sh peer-bytes          # the peer: a JetStream R3 stream, max_bytes 64 MiB, 2 GiB
#   bench/retention.sh peer-time           # the peer: max_age 10 s, publishing for 60 s
#
# bytes/time: the topic (RF 3) is created, each node's data dir measured (the fixed overhead:
# a node with the topic and no records), then `fjord bench produce` writes while every node's
# data dir (its disk space, `du -s -B1`) and fjord.redb (its length) are sampled every second
# (a file's disk space grows as pages are first written and falls only when redb shortens
# the file, so the samples miss little of its peak), and every replica's log start offset and high watermark
# every OFFSETS_EVERY seconds (ListOffsets, AP, from each node itself:
# bench/replica_offsets.py). Once the load ends, the run waits (<= 60 s) for the replicas'
# start offsets to settle, then takes their final offsets and sizes.
# ab/latency: per round, the same load on a topic with retention_bytes small enough that
# deletion runs all the time (AB_RETENTION_BYTES, LAT_RETENTION_BYTES per partition) and on
# one without, each on a fresh cluster, alternating (which goes first alternates too). ab:
# AB_RECORDS records of RECORD_SIZE, PRODUCERS producers, windowed; latency: one record at a
# time (--linger-ms 0), LAT_RECORDS records of LAT_RECORD_SIZE.
#
# peer-bytes/peer-time: bench/jetstream.sh's 3-node cluster (install-server first; NATS_BIN as
# there), one R3 file stream with max_bytes RETENTION_BYTES or max_age RETENTION_MS
# (discard old), acknowledged publishes of RECORD_SIZE bytes, at most 256 outstanding, from
# bench/jetstream_retention.py (nats-py); the store dirs sampled as above (the second column:
# the streams directory).
#
# Every run writes JSON lines to $BENCH_BASE/retention-<time>.jsonl (printed at the end) and
# its samples to $BENCH_BASE/retention-<time>-<run>.{disk,offsets}; summarize with
# `python3 bench/retention_summary.py FILE.jsonl`.
#
# Environment (defaults): BENCH_BASE [/tmp/fjord-bench], FJORD_BASE_PORT [17101],
# FJORD_SERVE_ARGS [none] (e.g. "--retention-check-interval-ms 200"), RECORD_SIZE [1024],
# RETENTION_BYTES [67108864], WRITE_BYTES [2147483648], RETENTION_MS [10000], TIME_SECS [60],
# AB_RETENTION_BYTES [8388608], AB_RECORDS [1500000], AB_PARTITIONS [3] (also latency's),
# LAT_RECORDS [10000], LAT_RECORD_SIZE [16384], LAT_RETENTION_BYTES [1048576] (deletion every
# round even one record at a time: the leader deletes once a partition holds 1 MiB over),
# OFFSETS_EVERY [0.1]: seconds between two rounds of asking every replica its offsets,
# PRODUCERS [2], MAX_SECS [600] (each load's --duration-max-secs), PRODUCE_ARGS [none]: more
# `fjord bench produce` flags for bytes/time (time: "--in-flight 1 --batch-max-bytes 65536
# --linger-ms 1", with TIME_PRODUCERS [1] producers: a lighter load), KEEP_DATA [0]:
# 1 keeps a bytes/time run's data dirs (stopped) in $BENCH_BASE/retention-<time>-<run>.data.
set -Eeuo pipefail
trap 'echo "bench/retention.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
source "$HERE/cluster.sh"
RECORD_SIZE="${RECORD_SIZE:-1024}"
RETENTION_BYTES="${RETENTION_BYTES:-67108864}"
WRITE_BYTES="${WRITE_BYTES:-2147483648}"
RETENTION_MS="${RETENTION_MS:-10000}"
TIME_SECS="${TIME_SECS:-60}"
AB_RETENTION_BYTES="${AB_RETENTION_BYTES:-8388608}"
AB_RECORDS="${AB_RECORDS:-1500000}"
AB_PARTITIONS="${AB_PARTITIONS:-3}"
LAT_RECORDS="${LAT_RECORDS:-10000}"
LAT_RECORD_SIZE="${LAT_RECORD_SIZE:-16384}"
LAT_RETENTION_BYTES="${LAT_RETENTION_BYTES:-1048576}"
PRODUCERS="${PRODUCERS:-2}"
OFFSETS_EVERY="${OFFSETS_EVERY:-0.1}"
MAX_SECS="${MAX_SECS:-600}"
# Bounds of the waits below, in seconds.
SETTLE_SECS=60
NATS_URLS="nats://127.0.0.1:24222,nats://127.0.0.1:24223,nats://127.0.0.1:24224"
MODE="${1:-}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$BENCH_BASE/retention-$STAMP.jsonl"

mkdir -p "$BENCH_BASE"
cleanup() {
  cluster wipe >/dev/null 2>&1 || true
  if [[ "$MODE" == peer-* ]]; then "$HERE/jetstream.sh" wipe >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT



# settle TOPIC PARTITIONS: waits (<= SETTLE_SECS) until every replica answers with the same log
# start offset and high watermark, per partition, on two rounds 3 s apart; prints the last
# round (JSON lines).
settle() {
  local topic="$1" parts="$2" deadline=$((SECONDS + SETTLE_SECS)) prev="" cur="" key
  while (( SECONDS < deadline )); do
    cur="$(python3 "$HERE/replica_offsets.py" --topic "$topic" --partitions "$parts" --nodes "$BROKERS")"
    key="$(jq -sc 'if any(.error) then "error" else group_by(.partition)
                   | map([.[0].partition, (map([.log_start_offset, .high_watermark]) | unique)]) end' <<< "$cur")"
    if [[ "$key" == "$prev" ]] && jq -e 'all(.[]; .[1] | length == 1)' <<< "$key" >/dev/null 2>&1; then
      break
    fi
    prev="$key"
    sleep 3
  done
  echo "$cur"
}

# disk_run NAME PARTITIONS RECORDS|- SECS CONFIG...: the bytes/time runs.
disk_run() {
  local name="$1" parts="$2" records="$3" secs="$4"; shift 4
  local run="$name-p$parts" topic="ret-$name"
  local disk="$BENCH_BASE/retention-$STAMP-$run.disk" offs="$BENCH_BASE/retention-$STAMP-$run.offsets"
  fresh_cluster
  create_topic "$topic" "$parts" "$@"
  local empty; empty="$(node_sizes)"
  log "$run: empty node sizes $empty; writing"
  "$FJORD" bench produce --brokers "$BROKERS" --format json --topic "$topic" --partitions "$parts" \
    --replication-factor 3 --acks cp --record-size "$RECORD_SIZE" --records "$records" \
    --producers "$PRODUCERS" --duration-max-secs "$secs" ${PRODUCE_ARGS:-} > "$BENCH_BASE/last.out" &
  local bench_pid=$!
  sample_disk "$disk" "$bench_pid" "$FJORD_DIR" node fjord.redb &
  local sampler=$!
  python3 "$HERE/replica_offsets.py" --topic "$topic" --partitions "$parts" --nodes "$BROKERS" \
    --every "$OFFSETS_EVERY" --count "$((SAMPLE_MAX * 10))" > "$offs" 2>/dev/null &
  local offs_pid=$!
  local rc=0; wait "$bench_pid" || rc=$?
  wait "$sampler" || true
  local produced; produced="$(cat "$BENCH_BASE/last.out")"
  log "$run: load done (exit $rc): $(jq -c '{records_produced, mb_per_sec, elapsed_secs, errors}' <<< "$produced")"
  local final; final="$(settle "$topic" "$parts")"
  kill "$offs_pid" 2>/dev/null || true; wait "$offs_pid" 2>/dev/null || true
  local after; after="$(node_sizes)"
  local warn; warn="$({ grep -hcE ' (WARN|ERROR) ' "$FJORD_DIR"/node?.log || true; } | paste -sd, -)"
  jq -nc --arg run "$run" --argjson produce "$produced" --argjson empty "$empty" \
    --argjson after "$after" --arg disk "$disk" --arg offs "$offs" \
    --argjson final "$(jq -sc . <<< "$final")" --arg config "$*" --arg serve "${FJORD_SERVE_ARGS:-}" \
    --argjson warn "[$warn]" --argjson rc "$rc" \
    '{run: $run, config: $config, serve_args: $serve, exit: $rc, produce: $produce,
      empty_sizes: $empty, sizes_after: $after, final_offsets: $final,
      warn_error_lines_per_node: $warn, disk_samples: $disk, offset_samples: $offs}' >> "$RESULTS"
  for i in 1 2 3; do cp "$FJORD_DIR/node$i.log" "$BENCH_BASE/retention-$STAMP-$run.node$i.log"; done
  if [[ "${KEEP_DATA:-0}" == 1 ]]; then
    cluster stop; mv "$FJORD_DIR" "$BENCH_BASE/retention-$STAMP-$run.data"
    log "$run: data kept in $BENCH_BASE/retention-$STAMP-$run.data"
  fi
}

# peer_run NAME LIMIT_ARGS... -- LOAD_ARGS...: the peer's counterpart of disk_run: a JetStream R3
# file stream with that limit (bench/jetstream_retention.py), its store dirs sampled alike.
peer_run() {
  local name="$1"; shift
  local limit=() load=()
  while (( $# )) && [[ "$1" != "--" ]]; do limit+=("$1"); shift; done
  [[ "${1:-}" == "--" ]] && shift
  load=("$@")
  local run="peer-$name" nats_dir="$BENCH_BASE/nats"
  local disk="$BENCH_BASE/retention-$STAMP-$run.disk" out="$BENCH_BASE/retention-$STAMP-$run.out"
  "$HERE/jetstream.sh" wipe >/dev/null 2>&1 || true
  "$HERE/jetstream.sh" start
  # Its start finds a meta leader on the ports even if another cluster holds them: ours must run.
  [[ "$("$HERE/jetstream.sh" pids | wc -l)" == 3 ]] || die "$run: not all 3 nats-server nodes run"
  python3 "$HERE/jetstream_retention.py" --urls "$NATS_URLS" "${limit[@]}" "${load[@]}" > "$out" &
  local py=$!
  local deadline=$((SECONDS + 60))
  until grep -q '"phase": "ready"' "$out" 2>/dev/null; do
    kill -0 "$py" 2>/dev/null || die "$run: the publisher exited: $(cat "$out")"
    (( SECONDS < deadline )) || die "$run: stream not ready after 60 s"
    sleep 0.2
  done
  local empty="" i
  for i in 1 2 3; do empty+="${empty:+,}$(size_of "$nats_dir/n$i")"; done
  log "$run: empty store dirs [$empty]; writing"
  sample_disk "$disk" "$py" "$nats_dir" n 'jetstream/$G/streams' &
  local sampler=$!
  local rc=0; wait "$py" || rc=$?
  wait "$sampler" || true
  local after=""
  for i in 1 2 3; do after+="${after:+,}$(size_of "$nats_dir/n$i")"; done
  jq -nc --arg run "$run" --argjson produce "$(tail -1 "$out")" --argjson empty "[$empty]" \
    --argjson after "[$after]" --arg disk "$disk" --arg config "${limit[*]}" --argjson rc "$rc" \
    '{run: $run, peer: true, config: $config, exit: $rc, produce: $produce, empty_sizes: $empty,
      sizes_after: $after, disk_samples: $disk}' >> "$RESULTS"
  log "$run: $(jq -c '{messages_acked, mb_per_sec, errors, state}' <<< "$(tail -1 "$out")")"
  "$HERE/jetstream.sh" wipe >/dev/null 2>&1 || true
}

# load_run LABEL TOPIC PARTITIONS ARGS... -- CONFIG...: one produce load on a fresh cluster.
load_run() {
  local label="$1" topic="$2" parts="$3"; shift 3
  local args=()
  while (( $# )) && [[ "$1" != "--" ]]; do args+=("$1"); shift; done
  [[ "${1:-}" == "--" ]] && shift
  fresh_cluster
  create_topic "$topic" "$parts" "$@"
  local pids; pids="$(cluster pids | tr '\n' ' ')"
  local m; m="$(measure "$pids" -- "$FJORD" bench produce --brokers "$BROKERS" --format json \
    --topic "$topic" --partitions "$parts" --replication-factor 3 --acks cp "${args[@]}")"
  local final; final="$(settle "$topic" "$parts")"
  local warn; warn="$({ grep -hcE ' (WARN|ERROR) ' "$FJORD_DIR"/node?.log || true; } | paste -sd, -)"
  jq -nc --arg name "$label" --argjson measure "$m" --argjson produce "$(cat "$BENCH_BASE/last.out")" \
    --argjson final "$(jq -sc . <<< "$final")" --argjson sizes "$(node_sizes)" \
    --arg config "$*" --argjson warn "[$warn]" \
    '{run: $name, config: $config, measure: $measure, produce: $produce, final_offsets: $final,
      sizes_after: $sizes, warn_error_lines_per_node: $warn}' >> "$RESULTS"
  log "$label: $(jq -c '{mb_per_sec, records_per_sec, latency_ms_p50, latency_ms_p99}' "$BENCH_BASE/last.out")"
  for i in 1 2 3; do cp "$FJORD_DIR/node$i.log" "$BENCH_BASE/retention-$STAMP-$label.node$i.log"; done
}

# alternate ROUNDS KIND RETENTION_BYTES ARGS...: the load ARGS on a topic with that
# retention_bytes and on one without, in turn; which goes first alternates.
alternate() {
  local rounds="$1" kind="$2" bytes="$3"; shift 3
  local r
  for r in $(seq 1 "$rounds"); do
    local order=(retention none)
    (( r % 2 == 0 )) && order=(none retention)
    local o
    for o in "${order[@]}"; do
      if [[ "$o" == retention ]]; then
        load_run "$kind-retention-r$r" "ab-ret-$r" "$AB_PARTITIONS" "$@" -- "retention_bytes=$bytes"
      else
        load_run "$kind-none-r$r" "ab-none-$r" "$AB_PARTITIONS" "$@" --
      fi
    done
  done
}

case "${1:-}" in
  bytes)
    disk_run bytes "${2:-1}" $((WRITE_BYTES / RECORD_SIZE)) "$MAX_SECS" "retention_bytes=$RETENTION_BYTES" ;;
  time)
    # A lighter load (about 25 MB/s here), so that what 10 s of it keeps stays small on disk.
    PRODUCERS="${TIME_PRODUCERS:-1}"
    PRODUCE_ARGS="${PRODUCE_ARGS:---in-flight 1 --batch-max-bytes 65536 --linger-ms 1}"
    disk_run time "${2:-1}" 1000000000 "$TIME_SECS" "retention_ms=$RETENTION_MS" ;;
  peer-bytes)
    peer_run bytes --max-bytes "$RETENTION_BYTES" -- --bytes "$WRITE_BYTES" --size "$RECORD_SIZE" \
      --max-secs "$MAX_SECS" ;;
  peer-time)
    peer_run time --max-age-secs "$((RETENTION_MS / 1000))" -- --duration-secs "$TIME_SECS" \
      --size "$RECORD_SIZE" ;;
  ab)
    alternate "${2:-3}" ab "$AB_RETENTION_BYTES" --record-size "$RECORD_SIZE" --records "$AB_RECORDS" \
      --producers "$PRODUCERS" --duration-max-secs "$MAX_SECS" ;;
  latency)
    alternate "${2:-3}" latency "$LAT_RETENTION_BYTES" --record-size "$LAT_RECORD_SIZE" \
      --records "$LAT_RECORDS" --one-at-a-time \
      --linger-ms 0 --duration-max-secs "$MAX_SECS" ;;
  *) echo "usage: $0 bytes [PARTITIONS]|time [PARTITIONS]|peer-bytes|peer-time|ab [ROUNDS]|latency [ROUNDS]" >&2
     exit 2 ;;
esac
log "results: $RESULTS"
echo "$RESULTS"
