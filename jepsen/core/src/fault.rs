//! The fault plans: which faults a run suffers and when, decided from the seed before the run
//! starts. Pure functions of their inputs; each tier carries the faults out (`fjord-jepsen`:
//! namespaces, nftables, signals, lazyfs; `fjord-sim`: turmoil's links and hosts, simulated
//! disks) and resolves what depends on the cluster's state when the fault strikes ("the
//! leader of partition 2").
//!
//! Two shapes of plan, one per way of running a cluster:
//! - [`steps`]: steps of a few seconds, each naming its [`FaultKind`]s and a seed from which
//!   the tier draws the step's own choices (which node, which half, how long until a
//!   restart) as it starts the step. The process tier's plan: real faults take real time,
//!   and targets come from the live cluster.
//! - [`timeline`]: single faults at simulated milliseconds, every choice drawn up front, and
//!   restarts as faults of their own. The simulation's plan: replaying a seed replays the
//!   faults to the millisecond.
//!
//! [`FaultKind`] is the harness's vocabulary of fault classes (`partition-leader`, `kill`,
//! `crash-unsynced`, ...), as `--faults` takes them and reports name them.

pub mod steps;
pub mod timeline;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Cut the leader of one partition off from the other nodes (clients still reach it).
    PartitionLeader,
    /// Cut the metadata leader off from the other nodes.
    PartitionMetaLeader,
    /// Split the nodes into a majority and a minority.
    PartitionHalves,
    /// Two halves that cannot talk to each other, and one node that talks to both.
    PartitionBridge,
    /// One node's packets to the others are dropped; theirs to it still arrive.
    PartitionOneWay,
    /// A partition leader (or any node) cannot call the other nodes (the connections it
    /// opens to their peer ports stall), while their calls to it go through and are
    /// answered; or, drawn half the time, the reverse: no node can call it, and it can call
    /// them.
    PartitionCalls,
    /// The clients cannot reach one node.
    PartitionClient,
    /// A share of the packets between nodes is dropped.
    PacketLoss,
    /// kill -9 a minority of nodes; restart them when the step ends.
    Kill,
    /// SIGSTOP a minority of nodes; SIGCONT them when the step ends.
    Pause,
    /// Move one node's wall clock by up to ±10 minutes.
    ClockJump,
    /// Make one node's wall clock run at 0.25-4 times the real rate.
    ClockSkew,
    /// kill -9 a node and drop the writes its disk had not fsynced.
    CrashUnsynced,
    /// Every node crashes at once and loses its unsynced writes, as in a power cut.
    PowerLoss,
    /// One node's disk refuses writes (ENOSPC).
    DiskFull,
    /// kill -9 a node, flip random bits in its data file, restart it.
    Bitflip,
    /// A partition leader's fsyncs answer tens to hundreds of ms late, so its followers
    /// flush first; often followed, in the same step, by a crash-unsynced of that leader or
    /// a power loss.
    SlowDisk,
    /// Cut one node that leads nothing (if any) off from the other nodes for 1-3 s, heal, and
    /// check that the partitions it only followed kept their leader and term.
    PartitionFollower,
    /// kill -9 a node, delete its data directory (a lost disk), restart it (after 0-1.5 s, or
    /// at the step's end). A node that refuses its empty directory is started again with
    /// `--rebuild`.
    DiskLoss,
    /// The first time for a node: kill -9 it, copy its data directory (a backup), restart it.
    /// The next time: kill -9 it, put the copy back (a restored old backup), restart it; one
    /// that refuses the old copy is started again with `--rebuild`.
    StaleCopy,
    /// kill -9 a follower of a partition and keep it down across a move of that partition's
    /// log start (a `DeleteRecords`, in runs with retention) until its leader purged its log
    /// behind the start; then restart it: it is behind the purge and must install a
    /// snapshot. Without retention, a follower killed for the step.
    FollowerBehindPurge,
}

impl FaultKind {
    pub const ALL: [FaultKind; 21] = [
        FaultKind::PartitionLeader,
        FaultKind::PartitionMetaLeader,
        FaultKind::PartitionHalves,
        FaultKind::PartitionBridge,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionCalls,
        FaultKind::PartitionClient,
        FaultKind::PacketLoss,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ClockJump,
        FaultKind::ClockSkew,
        FaultKind::CrashUnsynced,
        FaultKind::PowerLoss,
        FaultKind::DiskFull,
        FaultKind::Bitflip,
        FaultKind::SlowDisk,
        FaultKind::PartitionFollower,
        FaultKind::DiskLoss,
        FaultKind::StaleCopy,
        FaultKind::FollowerBehindPurge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionMetaLeader => "partition-meta-leader",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionCalls => "partition-calls",
            FaultKind::PartitionClient => "partition-client",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::CrashUnsynced => "crash-unsynced",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Bitflip => "bitflip",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::PartitionFollower => "partition-follower",
            FaultKind::DiskLoss => "disk-loss",
            FaultKind::StaleCopy => "stale-copy",
            FaultKind::FollowerBehindPurge => "follower-behind-purge",
        }
    }

    /// Whether the fault needs the nodes' data on a lazy filesystem.
    pub fn needs_lazy_disk(self) -> bool {
        matches!(
            self,
            FaultKind::CrashUnsynced
                | FaultKind::PowerLoss
                | FaultKind::DiskFull
                | FaultKind::SlowDisk
        )
    }

    /// Whether the fault takes node processes down or stops them.
    pub fn is_process(self) -> bool {
        matches!(
            self,
            FaultKind::Kill
                | FaultKind::Pause
                | FaultKind::CrashUnsynced
                | FaultKind::PowerLoss
                | FaultKind::Bitflip
                | FaultKind::DiskLoss
                | FaultKind::StaleCopy
                | FaultKind::FollowerBehindPurge
        )
    }

    /// Whether the fault is in the network (partitions, packet loss).
    pub fn is_network(self) -> bool {
        self.name().starts_with("partition") || self == FaultKind::PacketLoss
    }
}

/// The farthest a `clock-jump` moves a node's wall clock, either way, in seconds.
pub const CLOCK_JUMP_MAX_SECS: i64 = 600;
/// The rates a `clock-skew` makes a node's wall clock run at.
pub const CLOCK_RATES: [f64; 4] = [0.25, 0.5, 2.0, 4.0];
/// Time a node may run before the workload starts (start-up, the topic's creation), which a
/// skewed clock also counts: see [`max_clock_ahead_ms`].
pub const CLOCK_SETUP_SLACK_MS: u64 = 120_000;

/// How far ahead of the real time a node's wall clock may be at any moment of a run of
/// `run_ms` under `kinds`, in ms: 0 without clock faults. A `clock-jump` moves it by up to
/// [`CLOCK_JUMP_MAX_SECS`]; a `clock-skew` at rate `r` puts it `(r - 1)` times the node's
/// uptime ahead at once (libfaketime applies the rate to the time since the process
/// started: measured, a node running 4 s and then set to 4x reads 13 s ahead), and the
/// uptime is at most the run plus [`CLOCK_SETUP_SLACK_MS`]. One clock fault at a time (a
/// step's clocks are reset at its end), so the larger of the two.
pub fn max_clock_ahead_ms(kinds: &BTreeSet<FaultKind>, run_ms: u64) -> u64 {
    let mut ahead = 0;
    if kinds.contains(&FaultKind::ClockJump) {
        ahead = CLOCK_JUMP_MAX_SECS as u64 * 1_000;
    }
    if kinds.contains(&FaultKind::ClockSkew) {
        let fastest = CLOCK_RATES.iter().copied().fold(1.0, f64::max);
        let uptime = run_ms.saturating_add(CLOCK_SETUP_SLACK_MS);
        ahead = ahead.max(((fastest - 1.0) * uptime as f64).ceil() as u64);
    }
    ahead
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a comma-separated list of fault kinds and groups: `partition` or `network` (every
/// network fault), `process` (kill, pause), `clock`, `disk` (crash-unsynced, power-loss,
/// disk-full, bitflip, slow-disk, disk-loss, stale-copy), `all`, `none`.
pub fn parse_faults(s: &str) -> Result<BTreeSet<FaultKind>, String> {
    let mut set = BTreeSet::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "none" => {}
            "all" => set.extend(FaultKind::ALL),
            "partition" | "network" => {
                set.extend(FaultKind::ALL.into_iter().filter(|k| k.is_network()))
            }
            "process" => set.extend([FaultKind::Kill, FaultKind::Pause]),
            "clock" => set.extend([FaultKind::ClockJump, FaultKind::ClockSkew]),
            "disk" => set.extend([
                FaultKind::CrashUnsynced,
                FaultKind::PowerLoss,
                FaultKind::DiskFull,
                FaultKind::Bitflip,
                FaultKind::SlowDisk,
                FaultKind::DiskLoss,
                FaultKind::StaleCopy,
            ]),
            other => {
                let kind = FaultKind::ALL
                    .into_iter()
                    .find(|k| k.name() == other)
                    .ok_or_else(|| {
                        format!(
                            "unknown fault {other:?}: use all, none, partition, process, clock, disk, or one of {}",
                            FaultKind::ALL.map(FaultKind::name).join(", ")
                        )
                    })?;
                set.insert(kind);
            }
        }
    }
    Ok(set)
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let set = parse_faults(s)?;
        match set.len() {
            1 => Ok(*set.iter().next().expect("one")),
            _ => Err(format!("{s:?} is not a single fault kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_parse_and_unknown_ones_are_refused() {
        assert_eq!(parse_faults("kill,pause").unwrap().len(), 2);
        assert!(
            parse_faults("disk")
                .unwrap()
                .contains(&FaultKind::PowerLoss)
        );
        let err = parse_faults("explode").unwrap_err();
        assert!(err.contains("unknown fault \"explode\""), "{err}");
        assert_eq!("clock-jump".parse::<FaultKind>(), Ok(FaultKind::ClockJump));
        assert_eq!(
            "follower-behind-purge".parse::<FaultKind>(),
            Ok(FaultKind::FollowerBehindPurge)
        );
    }

    #[test]
    fn clocks_run_ahead_only_under_clock_faults_and_by_the_larger_bound() {
        let run = 60_000;
        assert_eq!(
            max_clock_ahead_ms(&parse_faults("all").unwrap(), run),
            600_000
        );
        assert_eq!(max_clock_ahead_ms(&parse_faults("kill").unwrap(), run), 0);
        // 4x for 60 s plus the set-up slack: 3 × 180 s.
        assert_eq!(
            max_clock_ahead_ms(&parse_faults("clock-skew").unwrap(), run),
            540_000
        );
        assert_eq!(
            max_clock_ahead_ms(&parse_faults("clock").unwrap(), 1_800_000),
            3 * 1_920_000
        );
    }
}
