#!/usr/bin/env bash
# Compaction: what a compacted topic keeps on each replica, how fast the cleaner goes, and
# what compaction costs produces, on a fresh 3-node `fjord dev` cluster per run
# (bench/fjord.sh; release build).
#
#   bench/compaction.sh proof [RECORDS] [KEYS]  # 1,000,000 records over 1,000 keys, then check
#   bench/compaction.sh ab [ROUNDS]             # CP produce throughput, compact vs delete topic
#   bench/compaction.sh latency [ROUNDS]        # one-at-a-time CP latency after a preload,
#                                               # compact vs delete topic
#
# proof: a topic (1 partition, RF 3) with cleanup_policy=compact takes RECORDS records of
# RECORD_SIZE bytes over KEYS keys from one producer (`fjord bench produce --keys KEYS
# --index-values`: record i has key "key-{i % KEYS}" and a value starting with i, written in
# order, so the last write of each key is known), each node's data dir sampled every second
# (as bench/retention.sh does). Once the load ends, the run waits (<= SETTLE_SECS) until
# compaction has settled: every node logged "compacted" for the same `upto` and no pass is
# under way, unchanged over 3 checks 2 s apart (the leader asks for the next pass only once
# the records since the last are at least 64 KiB and at least what the last pass kept, so
# what is written after the last request, the uncompacted tail, stays). Then
# bench/compaction_check.py reads every replica (AP, asked of that node alone) and a CP
# consumer (`fjord consume --from-beginning --format json`) reads the partition from offset
# 0, and both are checked against the producer's writes: each key's latest value present,
# below the last pass's `upto` one record per key, and the tail measured. The cleaner's passes
# (their times, from each node's log) go in the results too. Then TAIL_RECORDS more records
# (continuing the indexes: `--index-base RECORDS`), fewer than the next pass waits for, and
# the same check again: they stay as the uncompacted tail after the last pass's upto.
#
# ab/latency: per round, the same load on a compacted topic (KEYS keys) and on a topic with
# the default policy (delete, no limit), each on a fresh cluster, alternating (which goes
# first alternates too). ab: AB_RECORDS keyed records of RECORD_SIZE, PRODUCERS producers,
# windowed; latency: PRELOAD records written first (windowed, so that compaction passes have
# a large log to go through while latency is measured), then LAT_RECORDS keyed records one
# at a time (--linger-ms 0). The passes each node ran during the measured load are counted.
#
# Every run writes JSON lines to $BENCH_BASE/compaction-<time>.jsonl (printed at the end);
# summarize with `python3 bench/compaction_summary.py FILE.jsonl`.
#
# Environment (defaults): BENCH_BASE [/tmp/fjord-bench], FJORD_BASE_PORT [17101],
# FJORD_SERVE_ARGS [none], RECORD_SIZE [1024], KEYS [1000], PARTITIONS [1], SETTLE_SECS [900],
# TAIL_RECORDS [500], AB_RECORDS [500000], PRODUCERS [2], PRELOAD [300000], LAT_RECORDS [10000],
# MAX_SECS [600] (each load's --duration-max-secs).
set -Eeuo pipefail
trap 'echo "bench/compaction.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
source "$HERE/cluster.sh"
RECORD_SIZE="${RECORD_SIZE:-1024}"
KEYS="${KEYS:-1000}"
PARTITIONS="${PARTITIONS:-1}"
SETTLE_SECS="${SETTLE_SECS:-900}"
AB_RECORDS="${AB_RECORDS:-500000}"
PRODUCERS="${PRODUCERS:-2}"
PRELOAD="${PRELOAD:-300000}"
LAT_RECORDS="${LAT_RECORDS:-10000}"
TAIL_RECORDS="${TAIL_RECORDS:-500}"
MAX_SECS="${MAX_SECS:-600}"
MODE="${1:-}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$BENCH_BASE/compaction-$STAMP.jsonl"
LOGS="$FJORD_DIR/node1.log,$FJORD_DIR/node2.log,$FJORD_DIR/node3.log"

mkdir -p "$BENCH_BASE"
trap 'cluster wipe >/dev/null 2>&1 || true' EXIT

# compaction_state: per node "passes-started passes-done last-upto", one line.
compaction_state() {
  local i out=""
  for i in 1 2 3; do
    local log="$FJORD_DIR/node$i.log" s d u
    s="$(grep -c 'compaction pass started' "$log" || true)"
    d="$(grep -c 'compacted group=' "$log" || true)"
    u="$(grep 'compacted group=' "$log" | tail -1 | grep -o 'upto=[0-9]*' || true)"
    out+="$s/$d/${u:-none} "
  done
  echo "$out"
}

# settle_compaction: waits (<= SETTLE_SECS) until every node's last pass is done and ended
# at the same upto, unchanged over 3 checks 2 s apart; prints the seconds it waited.
settle_compaction() {
  local t0=$SECONDS deadline=$((SECONDS + SETTLE_SECS)) prev="" same=0 cur
  while (( SECONDS < deadline )); do
    cur="$(compaction_state)"
    if [[ "$cur" == "$prev" ]] && awk '{
          for (i = 1; i <= NF; i++) { split($i, a, "/"); if (a[1] != a[2] || a[3] == "none") bad = 1; u[a[3]] = 1 }
          n = 0; for (k in u) n++; exit (bad || n != 1) }' <<< "$cur"; then
      same=$((same + 1))
      (( same >= 2 )) && { echo $((SECONDS - t0)); return 0; }
    else
      same=0
    fi
    prev="$cur"
    sleep 2
  done
  log "compaction did not settle in ${SETTLE_SECS} s: $cur"
  echo -1
}

proof() {
  local records="$1" keys="$2" topic="compacted" run="proof"
  local disk="$BENCH_BASE/compaction-$STAMP-$run.disk"
  fresh_cluster
  create_topic "$topic" "$PARTITIONS" cleanup_policy=compact
  local empty; empty="$(node_sizes)"
  log "$run: $records records over $keys keys; load average $(loadavg_1m)"
  local load_before; load_before="$(loadavg_1m)"
  local t0; t0="$(date +%s.%N)"
  "$FJORD" bench produce --brokers "$BROKERS" --format json --topic "$topic" \
    --partitions "$PARTITIONS" --replication-factor 3 --acks cp --record-size "$RECORD_SIZE" \
    --records "$records" --keys "$keys" --index-values --producers 1 \
    --duration-max-secs "$MAX_SECS" > "$BENCH_BASE/last.out" &
  local bench_pid=$!
  sample_disk "$disk" "$bench_pid" "$FJORD_DIR" node fjord.redb &
  local sampler=$!
  local rc=0; wait "$bench_pid" || rc=$?
  local t_end; t_end="$(date +%s.%N)"
  wait "$sampler" || true
  local produced; produced="$(cat "$BENCH_BASE/last.out")"
  log "$run: load done (exit $rc): $(jq -c '{records_produced, mb_per_sec, elapsed_secs, errors}' <<< "$produced")"
  local at_load_end; at_load_end="$(node_sizes)"
  local waited; waited="$(settle_compaction)"
  log "$run: compaction settled after ${waited} s: $(compaction_state)"
  local after; after="$(node_sizes)"
  local hw
  hw="$(python3 "$HERE/replica_offsets.py" --topic "$topic" --partitions 1 --nodes "$BROKERS" | jq -s 'map(.high_watermark) | max')"
  # A CP consumer from offset 0: stops after the high watermark's worth of records or 60 s
  # (a compacted partition holds fewer; timeout ends it once it has read to the end).
  timeout 60 "$FJORD" consume "$topic" --brokers "$BROKERS" --partition 0 --from-beginning \
    --format json --max-wait-ms 1000 --count "$hw" > "$BENCH_BASE/compaction-$STAMP-consumed.jsonl" || true
  local check crc=0
  check="$(python3 "$HERE/compaction_check.py" replicas --topic "$topic" --nodes "$BROKERS" \
    --records "$records" --keys "$keys" --logs "$LOGS" \
    --consumed "$BENCH_BASE/compaction-$STAMP-consumed.jsonl")" || crc=$?
  echo "$check" >&2
  # The tail: TAIL_RECORDS more records (continuing the indexes), fewer than the leader waits
  # for before it asks for the next pass, stay uncompacted after the last pass's upto.
  local tail_check="" trc=0
  "$FJORD" bench produce --brokers "$BROKERS" --format json --topic "$topic" --acks cp \
    --record-size "$RECORD_SIZE" --records "$TAIL_RECORDS" --keys "$keys" --index-values \
    --index-base "$records" --producers 1 > "$BENCH_BASE/tail.out"
  local tail_waited; tail_waited="$(settle_compaction)"
  log "$run: $TAIL_RECORDS more records; settled after ${tail_waited} s: $(compaction_state)"
  tail_check="$(python3 "$HERE/compaction_check.py" replicas --topic "$topic" --nodes "$BROKERS" \
    --records $((records + TAIL_RECORDS)) --keys "$keys" --logs "$LOGS")" || trc=$?
  echo "$tail_check" >&2
  local passes; passes="$(python3 "$HERE/compaction_check.py" passes --logs "$LOGS" | jq -sc .)"
  for i in 1 2 3; do cp "$FJORD_DIR/node$i.log" "$BENCH_BASE/compaction-$STAMP-$run.node$i.log"; done
  local warn; warn="$({ grep -hcE ' (WARN|ERROR) ' "$FJORD_DIR"/node?.log || true; } | paste -sd, -)"
  jq -nc --arg run "$run" --argjson produce "$produced" --argjson empty "$empty" \
    --argjson at_load_end "$at_load_end" --argjson after "$after" --arg disk "$disk" \
    --argjson check "$(jq -sc . <<< "$check")" --argjson passes "$passes" \
    --argjson t0 "$t0" --argjson t_end "$t_end" --argjson waited "$waited" \
    --argjson load "$load_before" --argjson records "$records" --argjson keys "$keys" \
    --argjson record_size "$RECORD_SIZE" --arg serve "${FJORD_SERVE_ARGS:-}" \
    --argjson warn "[$warn]" --argjson rc "$rc" --argjson check_rc "$crc" \
    --argjson tail_check "$(jq -sc . <<< "$tail_check")" --argjson tail_rc "$trc" \
    --argjson tail_records "$TAIL_RECORDS" \
    '{run: $run, records: $records, keys: $keys, record_size: $record_size,
      serve_args: $serve, loadavg_1m_before: $load, exit: $rc, check_exit: $check_rc,
      produce: $produce, load_start: $t0, load_end: $t_end, settle_waited_s: $waited,
      empty_sizes: $empty, sizes_at_load_end: $at_load_end, sizes_after: $after,
      check: $check, tail_records: $tail_records, tail_check: $tail_check,
      tail_check_exit: $tail_rc, passes: $passes, warn_error_lines_per_node: $warn,
      disk_samples: $disk}' >> "$RESULTS"
}

# load_run LABEL TOPIC PRELOAD ARGS... -- CONFIG...: on a fresh cluster, a topic with CONFIG,
# PRELOAD keyed records first (if > 0, windowed, not measured), then the measured load ARGS.
load_run() {
  local label="$1" topic="$2" preload="$3"; shift 3
  local args=()
  while (( $# )) && [[ "$1" != "--" ]]; do args+=("$1"); shift; done
  [[ "${1:-}" == "--" ]] && shift
  fresh_cluster
  create_topic "$topic" "$PARTITIONS" "$@"
  if (( preload > 0 )); then
    "$FJORD" bench produce --brokers "$BROKERS" --format json --topic "$topic" \
      --partitions "$PARTITIONS" --replication-factor 3 --acks cp --record-size "$RECORD_SIZE" \
      --records "$preload" --keys "$KEYS" --producers "$PRODUCERS" \
      --duration-max-secs "$MAX_SECS" > "$BENCH_BASE/preload.out"
  fi
  local before; before="$(compaction_state)"
  local pids; pids="$(cluster pids | tr '\n' ' ')"
  local m; m="$(measure "$pids" -- "$FJORD" bench produce --brokers "$BROKERS" --format json \
    --topic "$topic" --partitions "$PARTITIONS" --replication-factor 3 --acks cp \
    --keys "$KEYS" --record-size "$RECORD_SIZE" "${args[@]}")"
  local during; during="$(compaction_state)"
  local warn; warn="$({ grep -hcE ' (WARN|ERROR) ' "$FJORD_DIR"/node?.log || true; } | paste -sd, -)"
  jq -nc --arg name "$label" --argjson measure "$m" --argjson produce "$(cat "$BENCH_BASE/last.out")" \
    --arg config "$*" --arg before "$before" --arg during "$during" --argjson preload "$preload" \
    --argjson sizes "$(node_sizes)" --argjson warn "[$warn]" \
    '{run: $name, config: $config, preload: $preload, measure: $measure, produce: $produce,
      compaction_state_before: $before, compaction_state_after: $during,
      sizes_after: $sizes, warn_error_lines_per_node: $warn}' >> "$RESULTS"
  log "$label: $(jq -c '{mb_per_sec, records_per_sec, latency_ms_p50, latency_ms_p99}' "$BENCH_BASE/last.out") passes $before -> $during"
  for i in 1 2 3; do cp "$FJORD_DIR/node$i.log" "$BENCH_BASE/compaction-$STAMP-$label.node$i.log"; done
}

# alternate ROUNDS KIND PRELOAD ARGS...: the load on a compacted topic and on a delete topic,
# in turn; which goes first alternates.
alternate() {
  local rounds="$1" kind="$2" preload="$3"; shift 3
  local r o
  for r in $(seq 1 "$rounds"); do
    local order=(compact delete)
    (( r % 2 == 0 )) && order=(delete compact)
    for o in "${order[@]}"; do
      if [[ "$o" == compact ]]; then
        load_run "$kind-compact-r$r" "ab-compact-$r" "$preload" "$@" -- cleanup_policy=compact
      else
        load_run "$kind-delete-r$r" "ab-delete-$r" "$preload" "$@" -- cleanup_policy=delete
      fi
    done
  done
}

case "$MODE" in
  proof) proof "${2:-1000000}" "${3:-$KEYS}" ;;
  ab)
    alternate "${2:-3}" ab 0 --records "$AB_RECORDS" --producers "$PRODUCERS" \
      --duration-max-secs "$MAX_SECS" ;;
  latency)
    alternate "${2:-3}" latency "$PRELOAD" --records "$LAT_RECORDS" --one-at-a-time \
      --linger-ms 0 --duration-max-secs "$MAX_SECS" ;;
  *) echo "usage: $0 proof [RECORDS] [KEYS]|ab [ROUNDS]|latency [ROUNDS]" >&2; exit 2 ;;
esac
log "results: $RESULTS"
echo "$RESULTS"
