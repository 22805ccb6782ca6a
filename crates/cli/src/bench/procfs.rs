//! The CPU time and resident memory of server processes, from Linux's `/proc/<pid>/stat`
//! (utime + stime) and `/proc/<pid>/status` (VmRSS): what `group-idle` reports, read the
//! same way as `bench/lib.sh` and `scripts/idle-cost.sh` do.

use anyhow::Context;
use serde::Serialize;

/// Processes one run samples, at most.
pub const MAX_PIDS: usize = 64;

/// One process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (field 3) ... utime (14), stime (15).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a `/proc/<pid>/status` text, in KiB.
pub fn status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples `pid` now.
pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .with_context(|| format!("cannot read /proc/{pid}/{file}: is process {pid} running?"))
    };
    let ticks = stat_ticks(&read("stat")?)
        .with_context(|| format!("/proc/{pid}/stat has no utime and stime"))?;
    let rss_kib = status_rss_kib(&read("status")?)
        .with_context(|| format!("/proc/{pid}/status has no VmRSS"))?;
    Ok(Sample { ticks, rss_kib })
}

/// Samples every pid, in order.
pub fn sample_all(pids: &[u32]) -> anyhow::Result<Vec<Sample>> {
    pids.iter().map(|p| sample(*p)).collect()
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
}

/// CPU used between two samples of each process, as % of one core (100 = one core busy).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUse {
    pub secs: f64,
    /// All processes together.
    pub core_pct: f64,
    pub core_pct_per_pid: Vec<f64>,
}

/// The CPU use of each process from `before` to `after` over `secs` seconds.
pub fn cpu_use(before: &[Sample], after: &[Sample], secs: f64, hz: u64) -> CpuUse {
    let pct = |ticks: u64| {
        if secs > 0.0 && hz > 0 {
            round2(100.0 * ticks as f64 / hz as f64 / secs)
        } else {
            0.0
        }
    };
    let per: Vec<u64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| a.ticks.saturating_sub(b.ticks))
        .collect();
    CpuUse {
        secs: round2(secs),
        core_pct: pct(per.iter().sum()),
        core_pct_per_pid: per.into_iter().map(pct).collect(),
    }
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (fjord serve) (x)) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    123 45 0 0 20 0 9 0 100 2000000 3000 18446744073709551615";
        assert_eq!(stat_ticks(stat), Some(168));
        assert_eq!(stat_ticks("4242 (fjord) S 1 2"), None, "too short");
        assert_eq!(stat_ticks("no name here"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tfjord\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(status_rss_kib(status), Some(51_234));
        assert_eq!(status_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn cpu_use_is_per_process_and_summed_as_percent_of_a_core() {
        let s = |ticks| Sample { ticks, rss_kib: 0 };
        let u = cpu_use(&[s(100), s(0)], &[s(150), s(25)], 10.0, 100);
        assert_eq!(u.core_pct_per_pid, vec![5.0, 2.5]);
        assert_eq!(u.core_pct, 7.5);
        // A counter going backwards (a recycled pid) counts as nothing, not as a wrap.
        assert_eq!(cpu_use(&[s(10)], &[s(5)], 1.0, 100).core_pct, 0.0);
        assert_eq!(cpu_use(&[s(0)], &[s(5)], 0.0, 100).core_pct, 0.0);
    }
}
