# The fjord side of the benchmarks that start their own 3-node `fjord dev` cluster through
# bench/fjord.sh and look at its data dirs (retention.sh, compaction.sh, disk_full.sh). Sourced
# after lib.sh, with HERE and ROOT set.
#
# Environment: FJORD_BIN [target/release/fjord], FJORD_BASE_PORT [17101], BENCH_BASE (lib.sh),
# SAMPLE_MAX [7200]: at most this many samples of `sample_disk`.
FJORD="${FJORD_BIN:-$ROOT/target/release/fjord}"
export BENCH_BASE FJORD_BASE_PORT="${FJORD_BASE_PORT:-17101}"
FJORD_DIR="$BENCH_BASE/fjord"
BROKERS="127.0.0.1:$FJORD_BASE_PORT,127.0.0.1:$((FJORD_BASE_PORT + 1)),127.0.0.1:$((FJORD_BASE_PORT + 2))"
SAMPLE_MAX="${SAMPLE_MAX:-7200}"

cluster() { "$HERE/fjord.sh" "$@"; }
fjord() { "$FJORD" --brokers "$BROKERS" "$@"; }
fresh_cluster() { cluster wipe; cluster start; }

# create_topic NAME PARTITIONS [KEY=VALUE...]: RF 3, and waits (<= 30 s) until every node
# answers ListOffsets for each partition.
create_topic() {
  local name="$1" parts="$2"; shift 2
  local cfg=() kv
  for kv in "$@"; do cfg+=(--config "$kv"); done
  fjord topic create "$name" --partitions "$parts" --replication 3 "${cfg[@]}" >&2
  local deadline=$((SECONDS + 30))
  while (( SECONDS < deadline )); do
    if ! python3 "$HERE/replica_offsets.py" --topic "$name" --partitions "$parts" --nodes "$BROKERS" \
        | grep -q '"error"'; then return 0; fi
    sleep 0.5
  done
  die "topic $name not served by every node after 30 s"
}

# size_of PATH: `du -sb` of PATH (apparent size: a file's length, holes included), 0 if it
# is not there.
size_of() { local b; b="$(du -sb "$1" 2>/dev/null | cut -f1 || true)"; echo "${b:-0}"; }

# used_by PATH: the disk space PATH takes, in bytes (`du -s -B1`: allocated blocks, what `df`
# counts and what fills a disk; a file grown by ftruncate takes none for its unwritten part).
used_by() { local b; b="$(du -s -B1 "$1" 2>/dev/null | cut -f1 || true)"; echo "${b:-0}"; }

# node_sizes: one JSON array per node: [disk space of the data dir, length of fjord.redb].
node_sizes() {
  local i out=""
  for i in 1 2 3; do
    out+="${out:+,}[$(used_by "$FJORD_DIR/node$i"),$(size_of "$FJORD_DIR/node$i/fjord.redb")]"
  done
  echo "[$out]"
}

# sample_disk FILE PID DIR SUB: every second while PID lives (<= SAMPLE_MAX samples), a line
# "unix_secs du1 sub1 du2 sub2 du3 sub3": per node i, the disk space DIR/node-dir i takes
# (`used_by`) and the apparent size of SUB in it (fjord: DIR=$FJORD_DIR, node<i>, fjord.redb; the peer: $NATS_DIR, n<i>, the
# stream's directory).
sample_disk() {
  local file="$1" pid="$2" dir="$3" prefix="$4" sub="$5" n=0
  while kill -0 "$pid" 2>/dev/null && (( n < SAMPLE_MAX )); do
    local line i
    line="$(date +%s.%N | cut -c1-14)"
    for i in 1 2 3; do
      line+=" $(used_by "$dir/$prefix$i") $(size_of "$dir/$prefix$i/$sub")"
    done
    echo "$line" >> "$file"
    n=$((n + 1)); sleep 1
  done
}

