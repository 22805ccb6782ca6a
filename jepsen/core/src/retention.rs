//! The log-lifecycle workload's model, as far as it is pure: the run's retention (a short
//! `retention_ms` on its topic), the deleter (a process issuing `DeleteRecords` now and then,
//! at an offset below what was acknowledged, drawn from its own seeded stream), what the
//! readers learn of each partition's log start, the history's operations
//! ([`set_retention`], [`delete`], [`deleted`], [`list_earliest`], [`listed`],
//! [`replica_starts`]) and the clock bound the checker judges deletions by time with
//! ([`clock_bound_ms`]). The checker's rules for it are `checker`'s `retention` rules
//! (`expired`, `lost` below the log start, `below-log-start`, `log-start-regressed`,
//! `diverged-start`).
//!
//! Each tier that runs it: sets the retention on its topic before the workload and records
//! it; stamps every produced record with the harness's wall clock (so a record's age is
//! known exactly, whatever a node's clock says); runs the deleter beside the producers;
//! lets readers that fall below the log start move to it (recording what start they saw);
//! turns retention off once the writes end, so that the final reads and the replicas'
//! final bounds are not a moving target; then asks every replica for its bounds.
//!
//! What must hold: a deleter's choice is a function of the seed and what it was told; it
//! never asks for an offset above the highest acknowledged one of the partition (so never
//! above the high watermark of a leader that acknowledged it).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use rand::rngs::StdRng;

use crate::fault::{FaultKind, max_clock_ahead_ms};
use crate::history::{Op, ReplicaBounds};

/// The run's `retention_ms` unless told otherwise: short, so that records expire by time
/// within a run.
pub const DEFAULT_RETENTION_MS: u64 = 20_000;
/// The run's `retention_bytes` unless told otherwise: the smallest a topic may have, so that
/// a partition moves its start by size many times within a run.
pub const DEFAULT_RETENTION_BYTES: u64 = 1 << 20;
/// The largest batch the harness's producers send, in bytes as the client counts them: a
/// record's batch began at most this far before it ([`size_kept`]'s rule in the checker).
pub const PRODUCER_MAX_BATCH_BYTES: usize = 16 << 10;
/// The most bytes the harness's record carrying `value` (with `key`, in runs with
/// compaction) takes in a stored batch: fjord stores a record as the prost encoding of a
/// `Record` within the batch's `RecordList` (a tag and a length, then the key, the value and
/// a timestamp of at most 10 varint bytes, each field with its tag and length).
pub fn record_bytes_bound(value: u64, key: Option<u32>) -> u64 {
    fn varint_len(n: u64) -> u64 {
        u64::from((64 - n.max(1).leading_zeros()).div_ceil(7))
    }
    let field = |len: u64| 1 + varint_len(len) + len;
    let value_len = crate::workload::encode(value).len() as u64;
    let key_len = key.map_or(0, |k| field(crate::compaction::key_bytes(k).len() as u64));
    let record = field(value_len) + key_len + 1 + 10;
    field(record)
}

/// What a partition whose `retention_bytes` is `limit` keeps, at least, after fjord's
/// retention by size moved its start: a batch goes only once more than this was written
/// after it began (fjord's `retention::size_kept`: the limit less an eighth).
pub fn size_kept(limit: u64) -> u64 {
    limit - limit / 8
}

/// `--retention-check-interval-ms` of the harness's nodes when retention is on: each
/// partition leader's retention round (and every replica's purge) this often.
pub const CHECK_INTERVAL_MS: u64 = 500;
/// The deleter waits a time drawn from this range (ms) between two `DeleteRecords`: seldom
/// enough that records also live to expire by time.
pub const DELETE_EVERY_MS: (u64, u64) = (2_000, 6_000);
/// The process that issues the workload's `DeleteRecords`.
pub const DELETER: u32 = u32::MAX - 3;
/// The process that sets and unsets the retention and asks the replicas for their bounds.
pub const SETTER: u32 = u32::MAX - 4;
/// The process recording the `DeleteRecords` the nemesis issues (a follower held down across
/// one, a power loss during one).
pub const NEMESIS: u32 = u32::MAX - 5;
/// How far a node's real clock and the harness's mapping of its monotonic clock to wall
/// time may disagree besides the clock faults, in ms: the two read the same system clock,
/// but NTP may slew it (at most 500 ppm; see [`clock_bound_ms`]) and a millisecond is
/// rounded here and there.
pub const CLOCK_TOLERANCE_MS: u64 = 1_000;

/// How far ahead of the harness's clock a node's clock may be during a run of `run_ms` under
/// `kinds` (the `max_clock_skew_ms` a run records with its retention): the clock faults'
/// bound ([`max_clock_ahead_ms`]), [`CLOCK_TOLERANCE_MS`], and 500 ppm of the run for NTP
/// slewing.
pub fn clock_bound_ms(kinds: &BTreeSet<FaultKind>, run_ms: u64) -> u64 {
    max_clock_ahead_ms(kinds, run_ms) + CLOCK_TOLERANCE_MS + run_ms / 2_000
}

/// What the workload knows of each partition's bounds, shared by its tasks: the highest
/// offset acknowledged and the highest log start offset seen. Lock-free: each is a running
/// maximum.
#[derive(Debug)]
pub struct Bounds {
    /// Per partition, the highest acknowledged offset plus one (0: none yet).
    acked: Vec<AtomicU64>,
    /// Per partition, the highest log start offset seen.
    start: Vec<AtomicU64>,
}

impl Bounds {
    pub fn new(partitions: u32) -> Bounds {
        Bounds {
            acked: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            start: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A produce to `partition` was acknowledged at `offset`.
    pub fn acked(&self, partition: u32, offset: u64) {
        if let Some(a) = self.acked.get(partition as usize) {
            a.fetch_max(offset.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// Some answer reported `partition`'s log start as `start`.
    pub fn started(&self, partition: u32, start: u64) {
        if let Some(s) = self.start.get(partition as usize) {
            s.fetch_max(start, Ordering::Relaxed);
        }
    }

    /// The highest offset acknowledged on `partition`, if any.
    pub fn highest_acked(&self, partition: u32) -> Option<u64> {
        let a = self.acked.get(partition as usize)?.load(Ordering::Relaxed);
        a.checked_sub(1)
    }

    /// The highest log start offset seen on `partition`.
    pub fn start(&self, partition: u32) -> u64 {
        self.start
            .get(partition as usize)
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }
}

/// The deleter's seeded choices.
#[derive(Debug)]
pub struct Deleter {
    rng: StdRng,
    partitions: u32,
}

impl Deleter {
    pub fn new(seed: u64, partitions: u32) -> Deleter {
        Deleter {
            rng: crate::workload::producer_rng(seed, 3 << 24),
            partitions: partitions.max(1),
        }
    }

    /// How long to wait before the next `DeleteRecords`, in ms.
    pub fn next_delay_ms(&mut self) -> u64 {
        self.rng.gen_range(DELETE_EVERY_MS.0..=DELETE_EVERY_MS.1)
    }

    /// The next `DeleteRecords`: a partition, and an offset drawn between its known log start
    /// and its highest acknowledged offset (so the record there, acknowledged, stays, and at
    /// least half the time some of the recent records go); `None` when the drawn partition
    /// has nothing acknowledged above its start yet.
    pub fn next(&mut self, bounds: &Bounds) -> Option<(u32, u64)> {
        let partition = self.rng.gen_range(0..self.partitions);
        let acked = bounds.highest_acked(partition)?;
        let start = bounds.start(partition);
        (start < acked).then(|| (partition, self.rng.gen_range(start..=acked)))
    }
}

/// The retention set on the run's topic (`None`: turned off), invoke and completion alike.
pub fn set_retention(
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    max_clock_skew_ms: u64,
    start_wall_ms: i64,
) -> Op {
    Op::Retention {
        retention_ms,
        retention_bytes,
        max_clock_skew_ms,
        start_wall_ms,
    }
}

/// The invoke of a `DeleteRecords` of `partition` below `before`, and its completion if not
/// `ok`.
pub fn delete(partition: u32, before: u64) -> Op {
    Op::DeleteRecords {
        partition,
        before,
        log_start_offset: None,
    }
}

/// The `ok` completion of a `DeleteRecords`: the log start offset answered.
pub fn deleted(partition: u32, before: u64, log_start_offset: u64) -> Op {
    Op::DeleteRecords {
        partition,
        before,
        log_start_offset: Some(log_start_offset),
    }
}

/// The invoke of a `ListOffsets` earliest of `partition`, and its completion if not `ok`.
pub fn list_earliest(partition: u32) -> Op {
    Op::ListEarliest {
        partition,
        log_start_offset: None,
        high_watermark: None,
    }
}

/// The `ok` completion of a `ListOffsets` earliest.
pub fn listed(partition: u32, log_start_offset: u64, high_watermark: u64) -> Op {
    Op::ListEarliest {
        partition,
        log_start_offset: Some(log_start_offset),
        high_watermark: Some(high_watermark),
    }
}

/// Every replica's own bounds of `partition` (empty for the invoke).
pub fn replica_starts(partition: u32, replicas: Vec<ReplicaBounds>) -> Op {
    Op::ReplicaStarts {
        partition,
        replicas,
    }
}

/// Whether replicas' answers agree on the log start and the high watermark (what the tier
/// waits for, at most a deadline, before it records them).
pub fn replicas_agree(replicas: &[ReplicaBounds]) -> bool {
    replicas.windows(2).all(|w| {
        (w[0].log_start_offset, w[0].high_watermark) == (w[1].log_start_offset, w[1].high_watermark)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::parse_faults;

    #[test]
    fn the_deleter_asks_between_the_known_start_and_the_highest_acknowledged_offset() {
        let bounds = Bounds::new(2);
        assert!(
            (0..20).all(|_| Deleter::new(7, 2).next(&bounds).is_none()),
            "nothing acked"
        );
        let mut d = Deleter::new(7, 2);
        bounds.acked(0, 100);
        bounds.acked(0, 40);
        bounds.started(0, 60);
        bounds.started(0, 10);
        assert_eq!((bounds.highest_acked(0), bounds.start(0)), (Some(100), 60));
        let picks: Vec<(u32, u64)> = (0..200).filter_map(|_| d.next(&bounds)).collect();
        assert!(!picks.is_empty());
        assert!(
            picks
                .iter()
                .all(|&(p, b)| p == 0 && (60..=100).contains(&b))
        );
        let again: Vec<_> = {
            let mut d = Deleter::new(7, 2);
            (0..200).filter_map(|_| d.next(&bounds)).collect()
        };
        assert_eq!(picks, again, "seeded");
        let delays: Vec<u64> = (0..100).map(|_| d.next_delay_ms()).collect();
        assert!(
            delays
                .iter()
                .all(|ms| (DELETE_EVERY_MS.0..=DELETE_EVERY_MS.1).contains(ms))
        );
    }

    #[test]
    fn the_clock_bound_is_the_tolerance_without_clock_faults() {
        let none = parse_faults("kill,power-loss").unwrap();
        assert_eq!(clock_bound_ms(&none, 60_000), CLOCK_TOLERANCE_MS + 30);
        let clock = parse_faults("clock-jump").unwrap();
        assert_eq!(
            clock_bound_ms(&clock, 60_000),
            600_000 + CLOCK_TOLERANCE_MS + 30
        );
    }

    #[test]
    fn replicas_agree_on_both_bounds_or_not_at_all() {
        let r = |node, s, h| ReplicaBounds {
            node,
            log_start_offset: s,
            high_watermark: h,
        };
        assert!(replicas_agree(&[r(1, 5, 9), r(2, 5, 9), r(3, 5, 9)]));
        assert!(!replicas_agree(&[r(1, 5, 9), r(2, 4, 9)]));
        assert!(!replicas_agree(&[r(1, 5, 9), r(2, 5, 8)]));
        assert!(replicas_agree(&[]));
    }
}
