# Shared helpers for bench/*.sh (sourced, not run).
#
# Everything a benchmark writes goes under $BENCH_BASE (default /tmp/fjord-bench): rendered
# configs, pid files, logs, store dirs, the downloaded peer binary and results.jsonl.
# Every wait below is bounded in count and time.

BENCH_BASE="${BENCH_BASE:-/tmp/fjord-bench}"
HZ="$(getconf CLK_TCK)"
NCPU="$(nproc)"

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# 1-minute load average, as `uptime` shows it.
loadavg_1m() { cut -d' ' -f1 /proc/loadavg; }

# Machine-wide CPU jiffies: "busy iowait steal total" from /proc/stat.
cpu_snap() { head -1 /proc/stat | awk '{print $2+$3+$4+$7+$8, $6, $9, $2+$3+$4+$5+$6+$7+$8+$9}'; }

# utime+stime of one process, in jiffies (0 if it is gone).
proc_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# utime+stime of this shell's waited-for children (cutime+cstime): the load generator's CPU.
# $1 is the shell's own pid ($BASHPID taken outside any command substitution).
children_ticks() { awk '{print $16+$17}' "/proc/$1/stat"; }

# measure LABEL PIDS -- CMD...: run CMD (its stdout to $BENCH_BASE/last.out), then print one JSON
# object: load average before, wall seconds, machine busy/iowait %, and the CPU of each server pid
# and of the client, each as % of one core over the run (100 = one core saturated).
measure() {
  local pids="$1"; shift; [[ "$1" == "--" ]] && shift
  local p b0 w0 s0 t0 b1 w1 s1 t1 c0 c1 load rc=0 me=$BASHPID
  declare -A before
  load="$(loadavg_1m)"
  for p in $pids; do before[$p]="$(proc_ticks "$p")"; done
  read -r b0 w0 s0 t0 < <(cpu_snap); c0="$(children_ticks "$me")"
  "$@" > "$BENCH_BASE/last.out" || rc=$?
  read -r b1 w1 s1 t1 < <(cpu_snap); c1="$(children_ticks "$me")"
  local wall procs="" i=0
  wall="$(awk -v t=$((t1 - t0)) -v n="$NCPU" -v hz="$HZ" 'BEGIN{printf "%.3f", t/n/hz}')"
  for p in $pids; do
    i=$((i + 1))
    procs+="$(awk -v d=$(( $(proc_ticks "$p") - ${before[$p]} )) -v w="$wall" -v hz="$HZ" -v i=$i \
      'BEGIN{printf "\"server%d_core_pct\":%.0f,", i, (w>0 ? 100*d/hz/w : 0)}')"
  done
  awk -v b=$((b1 - b0)) -v io=$((w1 - w0)) -v st=$((s1 - s0)) -v t=$((t1 - t0)) -v c=$((c1 - c0)) \
      -v w="$wall" -v hz="$HZ" -v load="$load" -v procs="$procs" -v rc="$rc" \
    'BEGIN{printf "{\"loadavg_1m_before\":%s,\"wall_s\":%s,\"machine_busy_pct\":%.0f,\"iowait_pct\":%.0f,\"steal_pct\":%.0f,%s\"client_core_pct\":%.0f,\"exit\":%d}\n",
      load, w, (t>0?100*b/t:0), (t>0?100*io/t:0), (t>0?100*st/t:0), procs, (w>0?100*c/hz/w:0), rc}'
}
