#!/usr/bin/env bash
# A full disk on a real 3-node `fjord dev` cluster (bench/fjord.sh; release build): what a
# producer sees, that reads go on, and that retention frees space and produces resume by
# themselves. Needs root (it mounts a tmpfs per node).
#
#   bench/disk_full.sh
#
# Each node's data dir ($BENCH_BASE/fjord/node<i>) is its own tmpfs of FS_BYTES (the logs stay
# outside, in $BENCH_BASE/fjord); the nodes run with --min-free-disk-bytes MIN_FREE (and the
# default --disk-check-interval-ms 500, --retention-check-interval-ms 1000). A topic of
# PARTITIONS partitions, RF 3, no retention:
#  1. before: BEFORE_RECORDS records of RECORD_SIZE, CP, windowed (`fjord bench produce`);
#  2. fill: the same load with no end; bench/disk_probe.py samples each node's free space
#     (statvfs, every 20 ms) and notes when it first went below MIN_FREE; the load stops at
#     its first refused record (the bench's exit 1); the time from the first sample below the
#     threshold to that refusal, and the nodes' "refusing produces" log lines, are kept;
#  3. refused: tests/python/disk_full_check.py (a grpcio client) sends one record and prints
#     the refusal; a CP consumer reads the partition from the start and AP reads ask each
#     node its offsets (bench/replica_offsets.py): reads while refused;
#  4. free: `fjord topic alter --set retention_bytes=1048576`, then one record a
#     PROBE_EVERY seconds (`fjord produce`) until one is accepted (<= 120 s): the time from the
#     alter to the first accepted produce;
#  5. after: BEFORE_RECORDS records again, as in 1.
# Then the cluster stops and the tmpfs mounts go. Results: $BENCH_BASE/disk-full-<time>.jsonl.
#
# Environment (defaults): BENCH_BASE [/tmp/fjord-bench], FJORD_BASE_PORT [17101],
# FS_BYTES [1073741824], MIN_FREE [268435456], RECORD_SIZE [1024], PARTITIONS [3],
# PRODUCERS [2], BEFORE_RECORDS [150000], PROBE_EVERY [0.1].
set -Eeuo pipefail
trap 'echo "bench/disk_full.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROOT="$(cd "$HERE/.." && pwd)"
source "$HERE/cluster.sh"
FS_BYTES="${FS_BYTES:-1073741824}"
MIN_FREE="${MIN_FREE:-268435456}"
RECORD_SIZE="${RECORD_SIZE:-1024}"
PARTITIONS="${PARTITIONS:-3}"
PRODUCERS="${PRODUCERS:-2}"
BEFORE_RECORDS="${BEFORE_RECORDS:-150000}"
PROBE_EVERY="${PROBE_EVERY:-0.1}"
TOPIC=fill
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$BENCH_BASE/disk-full-$STAMP.jsonl"
OUT="$BENCH_BASE/disk-full-$STAMP"

[[ "$(id -u)" == 0 ]] || die "needs root (mounts a tmpfs per node)"
mkdir -p "$BENCH_BASE"
now() { date +%s.%N | cut -c1-14; }

unmount_all() {
  local i
  for i in 1 2 3; do
    if mountpoint -q "$FJORD_DIR/node$i"; then umount "$FJORD_DIR/node$i" || true; fi
  done
}
cleanup() {
  "$HERE/fjord.sh" stop >/dev/null 2>&1 || true
  [[ -n "${PROBE_PID:-}" ]] && kill "$PROBE_PID" 2>/dev/null || true
  unmount_all
  rm -rf "${FJORD_DIR:?}"
}
trap cleanup EXIT

cleanup
mkdir -p "$FJORD_DIR"
for i in 1 2 3; do
  mkdir -p "$FJORD_DIR/node$i"
  mount -t tmpfs -o "size=$FS_BYTES" "fjord-disk-full-$i" "$FJORD_DIR/node$i"
done
FJORD_SERVE_ARGS="--min-free-disk-bytes $MIN_FREE" "$HERE/fjord.sh" start
fjord topic create "$TOPIC" --partitions "$PARTITIONS" --replication 3 >&2
deadline=$((SECONDS + 30))
until ! python3 "$HERE/replica_offsets.py" --topic "$TOPIC" --partitions "$PARTITIONS" \
    --nodes "$BROKERS" | grep -q '"error"'; do
  (( SECONDS < deadline )) || die "topic not served by every node after 30 s"
  sleep 0.5
done
PIDS="$("$HERE/fjord.sh" pids | tr '\n' ' ')"

# produce_load RECORDS: the windowed load; prints the measure line and leaves the report in
# $BENCH_BASE/last.out, its stderr in $OUT.produce.err.
produce_load() {
  measure "$PIDS" -- "$FJORD" bench produce --brokers "$BROKERS" --format json --topic "$TOPIC" \
    --partitions "$PARTITIONS" --replication-factor 3 --acks cp --record-size "$RECORD_SIZE" \
    --records "$1" --producers "$PRODUCERS" --duration-max-secs 600 2>> "$OUT.produce.err"
}

free_bytes() { local i o=""; for i in 1 2 3; do o+="${o:+,}$(stat -f -c '%a*%S' "$FJORD_DIR/node$i" | bc)"; done; echo "[$o]"; }

# 1. before
log "before: free $(free_bytes); load average $(loadavg_1m)"
m_before="$(produce_load "$BEFORE_RECORDS")"; p_before="$(cat "$BENCH_BASE/last.out")"
log "before: $(jq -c '{records_per_sec, mb_per_sec, latency_ms_p99, errors}' <<< "$p_before")"

# 2. fill
python3 "$HERE/disk_probe.py" --dirs "$FJORD_DIR/node1,$FJORD_DIR/node2,$FJORD_DIR/node3" \
  --threshold "$MIN_FREE" --every 0.02 > "$OUT.probe" &
PROBE_PID=$!
log "fill: free $(free_bytes)"
t_fill="$(now)"
m_fill="$(produce_load 100000000)"; t_refused="$(now)"; p_fill="$(cat "$BENCH_BASE/last.out")"
kill "$PROBE_PID" 2>/dev/null || true; wait "$PROBE_PID" 2>/dev/null || true; PROBE_PID=""
log "fill: $(jq -c '{records_produced, errors, stopped_by}' <<< "$p_fill"); free $(free_bytes)"
err_text="$(grep -v '^\s*$' "$OUT.produce.err" | tail -5)"
refusing_logs="$(grep -h 'refusing produces' "$FJORD_DIR"/node?.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-400 | jq -Rsc 'split("\n") | map(select(length > 0))')"

# 3. refused: what a client sees, and reads
py_check="$(cd "$ROOT/tests/python" && python3 disk_full_check.py "$TOPIC" ${BROKERS//,/ } 2>&1 || true)"
cli_err="$(echo one-record | fjord produce "$TOPIC" --partition 0 2>&1 >/dev/null || true)"
t0="$(now)"
consumed="$(timeout 120 "$FJORD" consume "$TOPIC" --brokers "$BROKERS" --from-beginning --format json \
  --max-wait-ms 500 --count 100000 | wc -l || true)"
t1="$(now)"
ap_offsets="$(python3 "$HERE/replica_offsets.py" --topic "$TOPIC" --partitions "$PARTITIONS" --nodes "$BROKERS" | jq -sc .)"
log "refused: python: $py_check"
log "refused: cli: $cli_err"
log "refused: consumed $consumed records CP in $(echo "$t1 - $t0" | bc) s"

# 4. free: retention deletes, and produces resume by themselves
t_alter="$(now)"
fjord topic alter "$TOPIC" --set retention_bytes=1048576 >&2
attempts=0; t_accepted=""
deadline=$((SECONDS + 120))
while (( SECONDS < deadline )); do
  attempts=$((attempts + 1))
  if echo "probe-$attempts" | fjord produce "$TOPIC" --partition 0 >/dev/null 2>&1; then
    t_accepted="$(now)"; break
  fi
  sleep "$PROBE_EVERY"
done
[[ -n "$t_accepted" ]] || log "free: no produce accepted within 120 s of the alter"
resume_logs="$(grep -h 'has space again' "$FJORD_DIR"/node?.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | jq -Rsc 'split("\n") | map(select(length > 0))')"
log "free: accepted $(echo "${t_accepted:-0} - $t_alter" | bc) s after the alter ($attempts attempts); free $(free_bytes)"

# 5. after
m_after="$(produce_load "$BEFORE_RECORDS")"; p_after="$(cat "$BENCH_BASE/last.out")"
log "after: $(jq -c '{records_per_sec, mb_per_sec, latency_ms_p99, errors}' <<< "$p_after")"
sizes="$(for i in 1 2 3; do du -sb "$FJORD_DIR/node$i" | cut -f1; done | jq -sc .)"
for i in 1 2 3; do cp "$FJORD_DIR/node$i.log" "$OUT.node$i.log"; done

jq -nc --argjson fs "$FS_BYTES" --argjson min_free "$MIN_FREE" \
  --argjson m_before "$m_before" --argjson p_before "$p_before" \
  --argjson m_fill "$m_fill" --argjson p_fill "$p_fill" \
  --argjson m_after "$m_after" --argjson p_after "$p_after" \
  --argjson t_fill "$t_fill" --argjson t_refused "$t_refused" --argjson t_alter "$t_alter" \
  --argjson t_accepted "${t_accepted:-null}" --argjson attempts "$attempts" \
  --argjson probe "$(jq -sc . "$OUT.probe")" --arg err "$err_text" --arg py "$py_check" \
  --arg cli "$cli_err" --argjson consumed "$consumed" --argjson consume_s "$(echo "$t1 - $t0" | bc)" \
  --argjson ap "$ap_offsets" --argjson refusing "$refusing_logs" --argjson resume "$resume_logs" \
  --argjson sizes "$sizes" \
  '{fs_bytes: $fs, min_free_bytes: $min_free,
    before: {measure: $m_before, produce: $p_before},
    fill: {measure: $m_fill, produce: $p_fill, started: $t_fill, refused_at: $t_refused,
           probe: $probe, producer_stderr: $err, refusing_log_lines: $refusing},
    refused: {python_client: $py, cli_produce: $cli, cp_consumed: $consumed,
              cp_consume_secs: $consume_s, ap_offsets: $ap},
    free: {alter_at: $t_alter, first_accepted_at: $t_accepted, attempts: $attempts,
           resume_log_lines: $resume},
    after: {measure: $m_after, produce: $p_after}, data_dir_bytes_at_end: $sizes}' >> "$RESULTS"
log "results: $RESULTS"
echo "$RESULTS"
