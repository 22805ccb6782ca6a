#!/usr/bin/env bash
# Where one-at-a-time produce latency goes: the same 3-node cluster and client, with the data
# on this machine's disk and on tmpfs (fsync costs nothing there), acks AP (the leader's own
# durable append) and CP (a majority's), and the disk's own fsync measured in between.
#
#   bench/latency.sh [ROUNDS]     # default 3; then: python3 bench/latency_summary.py <results file>
#
# Per round, in this order: `fsync` (a loop of 4 KiB append + fdatasync on the data disk, the
# physical floor of one durable write), then for DISK in disk, tmpfs: a fresh `fjord dev`
# cluster with its data dir there, `fjord bench produce --one-at-a-time --linger-ms 0` of
# LAT_RECORDS 100 B records into a 1-partition topic with --acks ap, then --acks cp, then wipe.
# Comparing the four fjord runs of a round: tmpfs AP is the software path alone (gRPC in and
# out, openraft's core, the storage writer, the state machine); disk AP - tmpfs AP is what the
# leader's commit costs on the disk; CP - AP is replication (a follower's append and fsync and
# the way back).
#
# Environment: BENCH_BASE [/tmp/fjord-bench] (the disk runs' data dir is under it), TMPFS_BASE
# [/dev/shm/fjord-bench], LAT_RECORDS [3000], FJORD_BIN (bench/fjord.sh). Output: one JSON line
# per run in $BENCH_BASE/latency-<time>.jsonl. Every run is bounded (--duration-max-secs 120).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ROUNDS="${1:-3}"
LAT_RECORDS="${LAT_RECORDS:-3000}"
TMPFS_BASE="${TMPFS_BASE:-/dev/shm/fjord-bench}"
(( ROUNDS >= 1 && ROUNDS <= 20 )) || die "ROUNDS must be 1..20"
DISK_BASE="$BENCH_BASE"

cleanup() {
  BENCH_BASE="$DISK_BASE" "$HERE/fjord.sh" wipe || true
  BENCH_BASE="$TMPFS_BASE" "$HERE/fjord.sh" wipe || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$DISK_BASE" "$TMPFS_BASE"
OUT="$DISK_BASE/latency-$(date +%Y%m%d-%H%M%S).jsonl"
log "machine: $NCPU cores; $(uptime); results -> $OUT"

# fsync_probe: p50/p99 of 2,000 4 KiB appends each followed by fdatasync, in the disk runs' dir.
fsync_probe() {
  python3 - "$DISK_BASE/fsync-probe" <<'PY'
import json, os, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
lat = []
try:
    for _ in range(2000):
        t = time.perf_counter()
        os.write(fd, b"x" * 4096)
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1000)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
print(json.dumps({"latency_ms_p50": lat[len(lat) // 2], "latency_ms_p99": lat[len(lat) * 99 // 100]}))
PY
}

# emit ROUND DISK ACKS REPORT_JSON
emit() {
  python3 - "$@" >> "$OUT" <<'PY'
import json, sys
rnd, disk, acks, report = sys.argv[1:]
load = float(open("/proc/loadavg").read().split()[0])
print(json.dumps({"round": int(rnd), "disk": disk, "acks": acks, "loadavg_1m": load,
                  "report": json.loads(report)}))
PY
  log "round $1 $2 $3: $(tail -1 "$OUT" | cut -c1-300)"
}

for round in $(seq 1 "$ROUNDS"); do
  emit "$round" disk fsync "$(fsync_probe)"
  for disk in disk tmpfs; do
    base="$DISK_BASE"; [[ "$disk" == tmpfs ]] && base="$TMPFS_BASE"
    export BENCH_BASE="$base"
    "$HERE/fjord.sh" wipe
    "$HERE/fjord.sh" start
    for acks in ap cp; do
      report="$("$HERE/fjord.sh" bench produce --topic "lat-$acks" --partitions 1 \
        --replication-factor 3 --acks "$acks" --record-size 100 --records "$LAT_RECORDS" \
        --one-at-a-time --linger-ms 0 --duration-max-secs 120 | grep '^{' | tail -1)"
      emit "$round" "$disk" "$acks" "$report"
    done
    "$HERE/fjord.sh" wipe
  done
  export BENCH_BASE="$DISK_BASE"
done
log "done: $(uptime); summarize with: python3 $HERE/latency_summary.py $OUT"
echo "$OUT"
