//! The checker: a pure function from a recorded history to the anomalies it proves.
//!
//! [`check`] never performs I/O and never panics on a malformed history: what it cannot trust
//! it reports as `malformed`. It runs in time linear in the history (hash maps, one pass over
//! the produces and one over the reads, a binary search per poll), so a history of millions of
//! events checks in seconds.
//!
//! # Rules
//! An *acknowledged* record is a produce whose completion is `ok`; its completion's `offset`
//! is where fjord said it lives. A *read* is an `ok` poll or an `ok` final read; every record
//! it returns is an *observation* of `(partition, offset, value)`. A produce completing `info`
//! is unknown: reading its value is fine, not reading it is fine, it is never failed or lost.
//!
//! - **lost**: acknowledged at offset `o` of partition `p`, its value never observed at
//!   `(p, o)` (not at all, or only elsewhere), while some read observed an offset `> o` of `p`;
//!   or observed at `(p, o)` but missing from an `ok` final read of `p` (the log lost it after
//!   it was read: its tail cut, or the offset given to another record), unless a log start
//!   seen is above `o` or compaction removed it (the lifecycle rules below judge those).
//! - **unseen**: acknowledged, its value never observed at `(p, o)`, and no read observed an
//!   offset `> o` of `p` (the reads simply never reached it). Under CP acks with a successful final read
//!   of `p` this is a loss at the tail; without a final read it is inconclusive (see
//!   [`Totals::partitions_without_final_read`]).
//! - **duplicate**: one value observed at two or more distinct `(partition, offset)`s.
//! - **inconsistent**: one `(partition, offset)` holding two or more distinct values across
//!   produce acknowledgements and observations. Reported once per `(partition, offset)`.
//! - **nonmonotonic**: within one `ok` poll of partition `p` from `from_offset = f` returning
//!   records `r0, r1, ...`: `r0.offset` must be `f` and each `r(i+1).offset` must be
//!   `r(i).offset + 1`. A higher offset is a *skip*, a lower or equal one a *rewind*; each
//!   break is one anomaly. Between polls: if a process's previous poll of `p` that returned
//!   records ended at offset `l` and this poll asks for `f = l + 1`, the rule above already
//!   demands `r0 = l + 1`; if `f != l + 1` the consumer *seeked* (the runners do that after
//!   errors and past a log start that moved, and in compacting runs go where the answer
//!   said; otherwise they go on from `l + 1`, so a server that skipped records shows it in
//!   the next poll: [`crate::workload::next_poll_from`]), which is counted in
//!   [`Totals::seeks`] and is not an anomaly. Empty polls do not
//!   move `l`. Final reads are not held to this rule (a gap there is counted in
//!   [`Totals::final_read_gaps`] and shows up as `lost` if it hides an acknowledged record).
//! - **aborted**: a value whose produce completed `fail` (definitely not written), observed.
//! - **stale**: an `ok` poll of `p` from `f` whose invoke comes after (in history order) the
//!   `ok` completion of a produce acknowledged at some `o >= f` on `p`, yet whose
//!   `high_watermark <= o`. Equivalently, with `m` the highest offset acknowledged on `p`
//!   before the poll was invoked: `m >= f && high_watermark <= m`. Polls without a high
//!   watermark are not judged. Also stale: an `ok` poll of `p` whose `high_watermark` is
//!   below the highest one an earlier `ok` poll of `p` by the same process answered (the
//!   earlier poll completed before this one was invoked, so the log it showed committed
//!   must still be there); reported only when the first rule did not already report the poll,
//!   with the two watermarks as its offsets. Counted in every mode; a violation only for CP
//!   reads.
//! - **phantom**: a value observed that no produce ever invoked, or observed in a partition
//!   other than the one its produce named.
//! - **zombie**: in a partition's final read, a record of a named producer's instance (epoch
//!   `e`) at an offset after a record of a newer instance of the same name (epoch `> e`): the
//!   newer instance had fenced it there, so the partition must refuse its later writes.
//!   Records of the same name must appear in non-decreasing epoch order. One anomaly per such
//!   record.
//! - With the log lifecycle (`DeleteRecords`, retention): an acknowledged record that no
//!   final read returned, at an offset below a log start some read reported, is **expired**
//!   (allowed) if a `DeleteRecords` asked for it or it was old enough to expire by time, and
//!   **lost** otherwise; these rules and **below-log-start**, **log-start-regressed** and
//!   **diverged-start** are `retention`'s, in its module doc. The lost and unseen
//!   rules above judge the records at or above every log start seen.
//! - The consumer-group rules (**poll-skip**, **nonmonotonic-poll**, **duplicate-delivery**,
//!   **committed-too-far**, **fenced-commit**, **lost-write**) are `group`'s, in its module doc. The records a
//!   member handed out are observations too (of the rules above that judge observations:
//!   lost, unseen, duplicate, inconsistent, aborted, phantom).
//! - With compaction (a keyed workload on a compacting topic): an acknowledged keyed record
//!   missing from the final read is **compacted** (allowed) if a later record of its key is
//!   known at a higher offset of its partition, and **compacted-latest** if it is the latest
//!   of its key yet some read had seen it; polls may skip removed offsets. These rules are
//!   `compaction`'s, in its module doc.
//! - **replica-diverged**: a replica's own copy of a partition, read after the final reads,
//!   that holds another record than the final read at some offset, or lacks one within its
//!   own range (`replicas`' rule, in its module doc). A violation in every mode.
//! - **crashed**: a node that exited on its own (`node_exited`): no fault asked for it, so
//!   it is a bug, in every mode, even when the others kept serving.
//! - **unrecovered**: a partition some operation touched that no final read covered. The
//!   final reads come once every fault has healed (every node up and connected), so in any
//!   mode a partition not read back then did not recover: a violation (a cluster that
//!   stopped serving would otherwise pass, its unseen records inconclusive).
//! - **malformed**: the history breaks its own rules (see
//!   [`crate::history::PairingError`]), a value invoked by two produces, or an `ok` produce
//!   without an offset. Any of these makes the other verdicts untrustworthy.
//!
//! What must hold: every class's `count` is exact; at most [`MAX_EXAMPLES_PER_CLASS`]
//! anomalies are kept per class (the first ones in a deterministic order), each naming at most
//! [`MAX_VALUES_PER_ANOMALY`] places or values, so a pathological run cannot exhaust memory
//! through its report.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::history::{Event, EventType, Op, Operation, ReadRecord, pair};

mod compaction;
mod group;
mod replicas;
mod retention;

/// Anomalies kept (with explanations) per class; the count is always exact.
pub const MAX_EXAMPLES_PER_CLASS: usize = 1_000;
/// Distinct offsets (of a duplicate) or values (of an inconsistent offset) kept per anomaly.
pub const MAX_VALUES_PER_ANOMALY: usize = 16;

/// A class of anomaly the checker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Lost,
    Unseen,
    Duplicate,
    Inconsistent,
    NonMonotonic,
    Aborted,
    Stale,
    Phantom,
    Malformed,
    Zombie,
    PollSkip,
    NonMonotonicPoll,
    DuplicateDelivery,
    CommittedTooFar,
    FencedCommit,
    LostWrite,
    Expired,
    BelowLogStart,
    LogStartRegressed,
    DivergedStart,
    Compacted,
    CompactedLatest,
    Unrecovered,
    ReplicaDiverged,
    Crashed,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 25] = [
        AnomalyKind::Lost,
        AnomalyKind::Unseen,
        AnomalyKind::Duplicate,
        AnomalyKind::Inconsistent,
        AnomalyKind::NonMonotonic,
        AnomalyKind::Aborted,
        AnomalyKind::Stale,
        AnomalyKind::Phantom,
        AnomalyKind::Malformed,
        AnomalyKind::Zombie,
        AnomalyKind::PollSkip,
        AnomalyKind::NonMonotonicPoll,
        AnomalyKind::DuplicateDelivery,
        AnomalyKind::CommittedTooFar,
        AnomalyKind::FencedCommit,
        AnomalyKind::LostWrite,
        AnomalyKind::Expired,
        AnomalyKind::BelowLogStart,
        AnomalyKind::LogStartRegressed,
        AnomalyKind::DivergedStart,
        AnomalyKind::Compacted,
        AnomalyKind::CompactedLatest,
        AnomalyKind::Unrecovered,
        AnomalyKind::ReplicaDiverged,
        AnomalyKind::Crashed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Lost => "lost",
            AnomalyKind::Unseen => "unseen",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::Inconsistent => "inconsistent",
            AnomalyKind::NonMonotonic => "nonmonotonic",
            AnomalyKind::Aborted => "aborted",
            AnomalyKind::Stale => "stale",
            AnomalyKind::Phantom => "phantom",
            AnomalyKind::Malformed => "malformed",
            AnomalyKind::Zombie => "zombie",
            AnomalyKind::PollSkip => "poll-skip",
            AnomalyKind::NonMonotonicPoll => "nonmonotonic-poll",
            AnomalyKind::DuplicateDelivery => "duplicate-delivery",
            AnomalyKind::CommittedTooFar => "committed-too-far",
            AnomalyKind::FencedCommit => "fenced-commit",
            AnomalyKind::LostWrite => "lost-write",
            AnomalyKind::Expired => "expired",
            AnomalyKind::BelowLogStart => "below-log-start",
            AnomalyKind::LogStartRegressed => "log-start-regressed",
            AnomalyKind::DivergedStart => "diverged-start",
            AnomalyKind::Compacted => "compacted",
            AnomalyKind::CompactedLatest => "compacted-latest",
            AnomalyKind::Unrecovered => "unrecovered",
            AnomalyKind::ReplicaDiverged => "replica-diverged",
            AnomalyKind::Crashed => "crashed",
        }
    }

    /// Whether an anomaly of this class breaks what a run configured with `g` promises.
    ///
    /// AP acks (leader-only) may lose records, and may see an acknowledged offset later
    /// overwritten; AP reads (any replica) may be stale and may show a replica's divergent,
    /// later truncated suffix. Nothing excuses duplicates, aborted reads, phantoms, skips or
    /// rewinds within a replica's dense log, or a malformed history. A group member reading
    /// AP may follow a replica's divergent suffix (so may skip, rewind or redeliver); nothing
    /// excuses a commit beyond what a member was handed, or one acknowledged to a member
    /// that had lost its partition (commits are CP in every mode).
    /// An expired record was deleted by policy, which is no anomaly in any mode (it is a
    /// class to count them, and to show why each was allowed). A log start going down for
    /// one reader is stale (AP replicas lag); a compacted record was superseded, which is
    /// no anomaly either, but the latest record of a key gone is a lost one; a replica serving records below its own start,
    /// or replicas disagreeing on the start once quiet, break the replicated log itself.
    pub fn is_violation(self, g: Guarantees) -> bool {
        match self {
            AnomalyKind::Expired | AnomalyKind::Compacted => false,
            AnomalyKind::LogStartRegressed => g.linearizable_reads,
            AnomalyKind::BelowLogStart | AnomalyKind::DivergedStart => true,
            AnomalyKind::Lost
            | AnomalyKind::Unseen
            | AnomalyKind::LostWrite
            | AnomalyKind::CompactedLatest => g.durable_acks,
            AnomalyKind::PollSkip
            | AnomalyKind::NonMonotonicPoll
            | AnomalyKind::DuplicateDelivery => g.linearizable_reads,
            AnomalyKind::Inconsistent => g.durable_acks && g.linearizable_reads,
            AnomalyKind::Stale => g.linearizable_reads,
            AnomalyKind::Duplicate
            | AnomalyKind::NonMonotonic
            | AnomalyKind::Aborted
            | AnomalyKind::Phantom
            | AnomalyKind::Malformed
            | AnomalyKind::Zombie
            | AnomalyKind::CommittedTooFar
            | AnomalyKind::FencedCommit
            | AnomalyKind::Unrecovered
            | AnomalyKind::ReplicaDiverged
            | AnomalyKind::Crashed => true,
        }
    }
}

/// What a run's configuration promises, which decides which anomalies are violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guarantees {
    /// `acks=cp`: an acknowledged record is committed by a quorum and never lost.
    pub durable_acks: bool,
    /// `read=cp`: reads are linearizable (never stale, never uncommitted).
    pub linearizable_reads: bool,
}

impl Guarantees {
    pub const CP: Guarantees = Guarantees {
        durable_acks: true,
        linearizable_reads: true,
    };
    pub const AP: Guarantees = Guarantees {
        durable_acks: false,
        linearizable_reads: false,
    };

    /// From the run's mode strings: `"cp"` (any case) is the strong mode, anything else weak.
    pub fn from_modes(acks: &str, read: &str) -> Guarantees {
        Guarantees {
            durable_acks: acks.eq_ignore_ascii_case("cp"),
            linearizable_reads: read.eq_ignore_ascii_case("cp"),
        }
    }
}

/// One anomaly: the events proving it, where it happened, and why it is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Indexes of the events involved, as each rule in the module doc lists them.
    pub events: Vec<u64>,
    pub partition: u32,
    /// The offsets involved (e.g. expected then actual for a skip; every place of a duplicate).
    pub offsets: Vec<u64>,
    /// The values involved (e.g. every value seen at an inconsistent offset).
    pub values: Vec<u64>,
    pub explanation: String,
}

/// All anomalies of one class: the exact count, and the first [`MAX_EXAMPLES_PER_CLASS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyClass {
    pub count: u64,
    pub ops: Vec<Anomaly>,
}

impl AnomalyClass {
    /// Counts one anomaly, building it (and its explanation) only if it will be kept.
    fn push(&mut self, make: impl FnOnce() -> Anomaly) {
        self.count += 1;
        if self.ops.len() < MAX_EXAMPLES_PER_CLASS {
            self.ops.push(make());
        }
    }
}

/// Totals that put the anomaly counts in proportion; none of them is an anomaly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub produces_ok: u64,
    pub produces_failed: u64,
    /// Produces completing `info` or never completing.
    pub produces_unknown: u64,
    /// Acknowledged produces whose value some read observed at its acknowledged offset.
    pub acknowledged_read: u64,
    /// Unknown produces whose value some read observed (so they did happen).
    pub unknown_read: u64,
    pub polls_ok: u64,
    pub final_reads_ok: u64,
    /// Observations: records returned by all reads.
    pub records_read: u64,
    pub distinct_values_read: u64,
    /// Polls whose `from_offset` was not one past the process's last record on that partition.
    pub seeks: u64,
    /// Places where a final read's offsets were not dense from 0.
    pub final_read_gaps: u64,
    /// Partitions some operation touched but no final read succeeded on, ascending.
    pub partitions_without_final_read: Vec<u32>,
    /// Consumer-group members' `ok` polls, and the records they handed out.
    #[serde(default)]
    pub group_polls_ok: u64,
    #[serde(default)]
    pub group_records: u64,
    /// Members' commits acknowledged, and not (`fail` or unknown: fenced, not owned, no
    /// coordinator).
    #[serde(default)]
    pub group_commits_ok: u64,
    #[serde(default)]
    pub group_commits_not_ok: u64,
    /// Stretches of one member incarnation owning one partition (see the group rules).
    #[serde(default)]
    pub group_ownerships: u64,
    /// Whether the group drained every partition to its end (`None`: no drain in the
    /// history; the lost-write rule judges only after a successful one).
    #[serde(default)]
    pub group_drained: Option<bool>,
    /// The log lifecycle's operations and what the expiry rules decided.
    #[serde(default)]
    pub retention: RetentionTotals,
    /// Compaction, when the history's topic compacts.
    #[serde(default)]
    pub compaction: CompactionTotals,
}

/// Compaction in a history (see `compaction`'s rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionTotals {
    /// The `cleanup_policy` the history set (`None`: its topic does not compact).
    pub cleanup_policy: Option<String>,
    pub min_compaction_lag_ms: u64,
    /// Acknowledged records that carried a key.
    pub keyed_acked: u64,
    /// Acknowledged records compaction removed (superseded by a later one of their key).
    pub compacted: u64,
    /// Places where a poll's records skipped offsets (removed by compaction).
    pub poll_gaps: u64,
}

/// The log lifecycle in a history (see `retention`'s rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionTotals {
    /// The smallest `retention_ms` the history set (`None`: no retention by time).
    pub retention_ms: Option<u64>,
    /// The smallest `retention_bytes` the history set (`None`: no retention by size).
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// How far ahead of the harness a node's clock may have been, in ms.
    pub max_clock_skew_ms: u64,
    pub deletes_attempted: u64,
    pub deletes_ok: u64,
    pub deletes_failed: u64,
    pub deletes_unknown: u64,
    /// Log start offsets observed (polls, lookups, deletes, final reads, replicas).
    pub start_observations: u64,
    /// Expired records: by a `DeleteRecords`, and by time.
    pub expired_by_delete: u64,
    pub expired_by_time: u64,
    /// Expired records that only retention by size explains.
    #[serde(default)]
    pub expired_by_size: u64,
}

/// Everything [`check`] found, one field per class (see the module doc for the rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub totals: Totals,
    pub lost: AnomalyClass,
    pub unseen: AnomalyClass,
    pub duplicate: AnomalyClass,
    pub inconsistent: AnomalyClass,
    pub nonmonotonic: AnomalyClass,
    pub aborted: AnomalyClass,
    pub stale: AnomalyClass,
    pub phantom: AnomalyClass,
    pub malformed: AnomalyClass,
    #[serde(default)]
    pub zombie: AnomalyClass,
    #[serde(default)]
    pub poll_skip: AnomalyClass,
    #[serde(default)]
    pub nonmonotonic_poll: AnomalyClass,
    #[serde(default)]
    pub duplicate_delivery: AnomalyClass,
    #[serde(default)]
    pub committed_too_far: AnomalyClass,
    #[serde(default)]
    pub fenced_commit: AnomalyClass,
    #[serde(default)]
    pub lost_write: AnomalyClass,
    #[serde(default)]
    pub expired: AnomalyClass,
    #[serde(default)]
    pub below_log_start: AnomalyClass,
    #[serde(default)]
    pub log_start_regressed: AnomalyClass,
    #[serde(default)]
    pub diverged_start: AnomalyClass,
    #[serde(default)]
    pub compacted: AnomalyClass,
    #[serde(default)]
    pub compacted_latest: AnomalyClass,
    #[serde(default)]
    pub unrecovered: AnomalyClass,
    /// Histories before replica reads have none.
    #[serde(default)]
    pub replica_diverged: AnomalyClass,
    /// A node that exited on its own: histories before it have none.
    #[serde(default)]
    pub crashed: AnomalyClass,
}

impl CheckResult {
    pub fn class(&self, kind: AnomalyKind) -> &AnomalyClass {
        match kind {
            AnomalyKind::Lost => &self.lost,
            AnomalyKind::Unseen => &self.unseen,
            AnomalyKind::Duplicate => &self.duplicate,
            AnomalyKind::Inconsistent => &self.inconsistent,
            AnomalyKind::NonMonotonic => &self.nonmonotonic,
            AnomalyKind::Aborted => &self.aborted,
            AnomalyKind::Stale => &self.stale,
            AnomalyKind::Phantom => &self.phantom,
            AnomalyKind::Malformed => &self.malformed,
            AnomalyKind::Zombie => &self.zombie,
            AnomalyKind::PollSkip => &self.poll_skip,
            AnomalyKind::NonMonotonicPoll => &self.nonmonotonic_poll,
            AnomalyKind::DuplicateDelivery => &self.duplicate_delivery,
            AnomalyKind::CommittedTooFar => &self.committed_too_far,
            AnomalyKind::FencedCommit => &self.fenced_commit,
            AnomalyKind::LostWrite => &self.lost_write,
            AnomalyKind::Expired => &self.expired,
            AnomalyKind::BelowLogStart => &self.below_log_start,
            AnomalyKind::LogStartRegressed => &self.log_start_regressed,
            AnomalyKind::DivergedStart => &self.diverged_start,
            AnomalyKind::Compacted => &self.compacted,
            AnomalyKind::CompactedLatest => &self.compacted_latest,
            AnomalyKind::Unrecovered => &self.unrecovered,
            AnomalyKind::ReplicaDiverged => &self.replica_diverged,
            AnomalyKind::Crashed => &self.crashed,
        }
    }

    /// The classes with at least one anomaly, and their counts.
    pub fn found(&self) -> Vec<(AnomalyKind, u64)> {
        AnomalyKind::ALL
            .into_iter()
            .map(|k| (k, self.class(k).count))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// The classes with anomalies that break what `g` promises.
    pub fn violations(&self, g: Guarantees) -> Vec<(AnomalyKind, u64)> {
        self.found()
            .into_iter()
            .filter(|(k, _)| k.is_violation(g))
            .collect()
    }

    pub fn is_valid(&self, g: Guarantees) -> bool {
        self.violations(g).is_empty()
    }

    /// The anomaly counts as both tiers print them: one line per class, marked a violation
    /// of `g` or allowed, with the share of the operations it concerns, then the totals that
    /// put them in proportion.
    pub fn counts_text(&self, g: Guarantees) -> String {
        let mut t = String::new();
        let acked = self.totals.produces_ok;
        for k in AnomalyKind::ALL {
            let n = self.class(k).count;
            let verdict = match (n, k.is_violation(g)) {
                (0, _) => "",
                (_, true) => "  VIOLATION",
                (_, false) if k == AnomalyKind::Expired => "  deleted by policy: allowed",
                (_, false) if k == AnomalyKind::Compacted => "  superseded: allowed",
                (_, false) => "  allowed in this mode",
            };
            let share = match k {
                AnomalyKind::Lost
                | AnomalyKind::Unseen
                | AnomalyKind::Expired
                | AnomalyKind::Compacted
                    if n > 0 && acked > 0 =>
                {
                    format!(" ({:.2}% of acknowledged)", 100.0 * n as f64 / acked as f64)
                }
                AnomalyKind::Stale if n > 0 && self.totals.polls_ok > 0 => format!(
                    " ({:.2}% of ok polls)",
                    100.0 * n as f64 / self.totals.polls_ok as f64
                ),
                _ => String::new(),
            };
            // Names longer than the column eat into the count's width, keeping the counts
            // aligned.
            let width = 21usize.saturating_sub(k.name().len().max(13)).max(1);
            let _ = writeln!(t, "  {:<13} {n:>width$}{share}{verdict}", k.name());
        }
        if !self.totals.partitions_without_final_read.is_empty() {
            let _ = writeln!(
                t,
                "  note: no final read of partitions {:?}; unseen there is inconclusive",
                self.totals.partitions_without_final_read
            );
        }
        let _ = writeln!(
            t,
            "  ({} acknowledged read back, {} of {} unknown produces found written, {} seeks)",
            self.totals.acknowledged_read,
            self.totals.unknown_read,
            self.totals.produces_unknown,
            self.totals.seeks
        );
        let t_ = &self.totals;
        lifecycle_text(&mut t, &t_.retention);
        if let Some(policy) = &t_.compaction.cleanup_policy {
            let c = &t_.compaction;
            let _ = writeln!(
                t,
                "  (compaction: cleanup_policy {policy}, min_compaction_lag_ms {}; {} keyed \
                 records acknowledged, {} compacted; {} gaps skipped by polls)",
                c.min_compaction_lag_ms, c.keyed_acked, c.compacted, c.poll_gaps
            );
        }
        if t_.group_polls_ok > 0 {
            let drained = match t_.group_drained {
                Some(true) => "drained",
                Some(false) => "NOT drained: lost-write is inconclusive",
                None => "no drain",
            };
            let _ = writeln!(
                t,
                "  (group: {} polls handed out {} records in {} ownerships; {} commits \
                 acknowledged, {} not; {drained})",
                t_.group_polls_ok,
                t_.group_records,
                t_.group_ownerships,
                t_.group_commits_ok,
                t_.group_commits_not_ok
            );
        }
        t
    }

    /// Up to `per_class` anomalies of each class found, with the events that prove them.
    pub fn examples_text(&self, per_class: usize) -> String {
        let mut t = String::new();
        for (k, n) in self.found() {
            let _ = writeln!(t, "  {} ({n}):", k.name());
            for a in self.class(k).ops.iter().take(per_class) {
                let _ = writeln!(t, "    - {} [events {:?}]", a.explanation, a.events);
            }
        }
        t
    }
}

/// The log lifecycle's line of the counts, when the history has one.
fn lifecycle_text(t: &mut String, r: &RetentionTotals) {
    if r.deletes_attempted == 0 && r.retention_ms.is_none() && r.retention_bytes.is_none() {
        return;
    }
    let retention = r
        .retention_ms
        .map_or("off".to_string(), |ms| format!("{ms} ms"));
    let by_size = r
        .retention_bytes
        .map_or("off".to_string(), |b| format!("{b} bytes"));
    let _ = writeln!(
        t,
        "  (log lifecycle: retention {retention}, by size {by_size}, clocks up to {} ms ahead; \
         {} DeleteRecords: {} ok, {} failed, {} unknown; {} expired by a DeleteRecords, {} by \
         time, {} by size; {} log starts observed)",
        r.max_clock_skew_ms,
        r.deletes_attempted,
        r.deletes_ok,
        r.deletes_failed,
        r.deletes_unknown,
        r.expired_by_delete,
        r.expired_by_time,
        r.expired_by_size,
        r.start_observations
    );
}

/// Checks a history; see the module doc for the exact rules.
pub fn check(history: &[Event]) -> CheckResult {
    let paired = pair(history);
    let mut c = Checker::default();
    // One pass to name the partition of each erroneous event, instead of a search per error.
    let mut partitions: HashMap<u64, u32> = paired.errors.iter().map(|e| (e.event(), 0)).collect();
    if !partitions.is_empty() {
        for e in history {
            if let Some(p) = partitions.get_mut(&e.index) {
                *p = e.op.partition();
            }
        }
    }
    for err in &paired.errors {
        let event = err.event();
        let partition = partitions.get(&event).copied().unwrap_or(0);
        c.out.malformed.push(|| Anomaly {
            events: vec![event],
            partition,
            offsets: vec![],
            values: vec![],
            explanation: err.to_string(),
        });
    }
    for op in &paired.operations {
        c.produce(op);
    }
    c.index_acks();
    for op in &paired.operations {
        c.read(op);
        c.lifecycle.operation(op, &mut c.out);
    }
    c.lifecycle.index(&c.produces);
    // A record below a log start some read saw was deleted: whether by policy is the
    // lifecycle rules' to say, not lost-write's.
    let acked: Vec<group::Acked> = c
        .produce_order
        .iter()
        .filter_map(|value| {
            let p = &c.produces[value];
            if c.lifecycle.gone(p.partition, p.offset?).is_some() {
                return None;
            }
            Some(group::Acked {
                value: *value,
                partition: p.partition,
                offset: p.offset?,
                events: [p.invoke, p.completion?],
            })
        })
        .collect();
    group::check(&paired.operations, &acked, &mut c.out);
    replicas::check(&paired.operations, &mut c.out);
    for op in &paired.operations {
        if let Some(done) = op.completion
            && let Op::NodeExited { node, status } = &done.op
        {
            c.out.crashed.push(|| Anomaly {
                events: vec![done.index],
                partition: 0,
                offsets: vec![],
                values: vec![],
                explanation: format!(
                    "node {node} exited on its own ({status}): a panic, an abort or an error \
                     exit no fault asked for"
                ),
            });
        }
    }
    c.finish()
}

/// Where a read came from, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Ack,
    Poll,
    FinalRead,
    GroupPoll,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Ack => "produce ack",
            Source::Poll => "poll",
            Source::FinalRead => "final read",
            Source::GroupPoll => "group poll",
        }
    }
}

/// A produce, by value.
#[derive(Debug, Clone, Copy)]
struct Produce {
    partition: u32,
    invoke: u64,
    /// When it was invoked, and the timestamp it set on its record, if any.
    invoke_ns: u64,
    timestamp_ms: Option<i64>,
    completion: Option<u64>,
    outcome: EventType,
    /// The acknowledged offset (only for `ok`).
    offset: Option<u64>,
    /// The record's key (compaction runs).
    key: Option<u32>,
}

/// An acknowledgement on the per-partition timeline; `offset` is the running maximum.
#[derive(Debug, Clone, Copy)]
struct AckPoint {
    /// Index of the completion event that acknowledged the maximum so far.
    event: u64,
    /// Index of this point's own completion event (the timeline's sort key).
    at: u64,
    offset: u64,
    value: u64,
}

/// Where a value was first observed, and any other places it was observed.
#[derive(Debug, Clone)]
struct Seen {
    partition: u32,
    offset: u64,
    event: u64,
    /// Further distinct `(partition, offset, event)`s, at most `MAX_VALUES_PER_ANOMALY - 1`.
    more: Vec<(u32, u64, u64)>,
}

/// The first value known at a `(partition, offset)`, and any different ones.
#[derive(Debug, Clone)]
struct Slot {
    value: u64,
    event: u64,
    source: Source,
    /// Further distinct `(value, event, source)`s, at most `MAX_VALUES_PER_ANOMALY - 1`.
    more: Vec<(u64, u64, Source)>,
}

/// A produce's events: its invoke and its completion, if any.
fn events_of(p: &Produce) -> Vec<u64> {
    let mut v = vec![p.invoke];
    v.extend(p.completion);
    v
}

/// Value `value`, acknowledged at offset `o`, was never read there: lost if a read reached
/// past it (`max_read`: the highest offset read in its partition, and by which event), else
/// unseen.
fn unread_ack(
    out: &mut CheckResult,
    value: u64,
    p: &Produce,
    o: u64,
    seen: Option<&Seen>,
    max_read: Option<(u64, u64)>,
) {
    let partition = p.partition;
    let acked = p.completion.unwrap_or(p.invoke);
    // Read, but only at other places: the duplicate or phantom rules say where.
    let never_read = match seen {
        None => "was never read".to_string(),
        Some(s) => format!(
            "was never read there (only elsewhere, first at offset {} of \
             partition {}, event {})",
            s.offset, s.partition, s.event
        ),
    };
    match max_read {
        Some((m, by)) if m > o => out.lost.push(|| {
            let explanation = format!(
                "value {value} acknowledged at offset {o} of partition {partition} (event \
                 {acked}) {never_read}, though a read (event {by}) reached offset {m}"
            );
            read_anomaly(p, by, (partition, o, value), explanation)
        }),
        highest => out.unseen.push(|| Anomaly {
            events: events_of(p),
            partition,
            offsets: vec![o],
            values: vec![value],
            explanation: format!(
                "value {value} acknowledged at offset {o} of partition \
                 {partition} (event {acked}) {never_read}, and no read got \
                 past it (highest offset read: {})",
                highest.map_or("none".to_string(), |h| h.0.to_string())
            ),
        }),
    }
}

/// Value `value`, acknowledged at offset `o` and read there (first by event `read_at`), is not in
/// the final read of its partition at or above every log start seen, nor compacted away: the
/// log lost it after it was read (its tail cut, or the offset given to another record).
fn vanished(out: &mut CheckResult, value: u64, p: &Produce, o: u64, read_at: u64) {
    let partition = p.partition;
    let acked = p.completion.unwrap_or(p.invoke);
    out.lost.push(|| {
        let explanation = format!(
            "value {value} acknowledged at offset {o} of partition {partition} (event {acked}) \
             was read there (event {read_at}), but the final read of partition {partition} \
             does not hold it: the log lost it after it was read"
        );
        read_anomaly(p, read_at, (partition, o, value), explanation)
    });
}

/// An anomaly about value `value` of produce `p`, at `offset` of `partition`, shown by the
/// read `read` (its events: the produce's, then the read's).
fn read_anomaly(
    p: &Produce,
    read: u64,
    (partition, offset, value): (u32, u64, u64),
    explanation: String,
) -> Anomaly {
    let mut events = events_of(p);
    events.push(read);
    Anomaly {
        events,
        partition,
        offsets: vec![offset],
        values: vec![value],
        explanation,
    }
}

/// Value `value`'s produce failed (definitely not written), yet a read found it (`s`).
fn read_after_failure(out: &mut CheckResult, value: u64, p: &Produce, s: &Seen) {
    let (partition, offset, by) = (s.partition, s.offset, s.event);
    out.aborted.push(|| {
        let explanation = format!(
            "value {value}'s produce failed (definitely not written), yet a read (event {by}) \
             found it at offset {offset} of partition {partition}"
        );
        read_anomaly(p, by, (partition, offset, value), explanation)
    });
}

#[derive(Default)]
struct Checker {
    out: CheckResult,
    produces: HashMap<u64, Produce>,
    /// Produce values in invoke order, for deterministic reports.
    produce_order: Vec<u64>,
    /// Per partition, acknowledgements sorted by completion index with a running max offset.
    acks: HashMap<u32, Vec<AckPoint>>,
    reads: HashMap<u64, Seen>,
    slots: HashMap<(u32, u64), Slot>,
    /// Per partition, the highest offset observed and the event observing it.
    max_read: HashMap<u32, (u64, u64)>,
    /// Per (process, partition), the last offset its polls returned and that poll's completion.
    last_polled: HashMap<(u32, u32), (u64, u64)>,
    /// Per (process, partition), the highest high watermark its polls answered, and that
    /// poll's completion.
    highest_watermark: HashMap<(u32, u32), (u64, u64)>,
    /// Acknowledged values observed at their acknowledged `(partition, offset)`: the first
    /// such observation's event.
    acked_read_in_place: HashMap<u64, u64>,
    /// Produced values observed in a partition other than their produce's: the first such
    /// `(partition, offset, event)`.
    misplaced: HashMap<u64, (u32, u64, u64)>,
    /// Per partition any operation touched, whether an `ok` final read covered it.
    touched: HashMap<u32, bool>,
    /// The named producer instance of each value produced by one.
    instances: HashMap<u64, crate::history::Instance>,
    /// Acknowledged values a final read returned at their acknowledged place.
    final_in_place: HashSet<u64>,
    lifecycle: retention::Lifecycle,
    /// Whether the history's topic compacts (a `compaction` operation set it).
    compacting: bool,
    /// Per (partition, key), the highest offset a record of the key is known at, and its
    /// value (filled before the lost rules run).
    latest_key: HashMap<(u32, u32), (u64, u64)>,
}

impl Checker {
    fn produce(&mut self, op: &Operation<'_>) {
        if let Op::Compaction {
            cleanup_policy,
            min_compaction_lag_ms,
        } = &op.invoke.op
        {
            self.compacting = true;
            let c = &mut self.out.totals.compaction;
            c.cleanup_policy = Some(cleanup_policy.clone());
            c.min_compaction_lag_ms = *min_compaction_lag_ms;
            return;
        }
        let Op::Produce {
            partition,
            value,
            timestamp_ms,
            key,
            ..
        } = op.invoke.op
        else {
            return;
        };
        self.touched.entry(partition).or_insert(false);
        if let Some(instance) = op.invoke.instance {
            self.instances.insert(value, instance);
        }
        let outcome = op.outcome();
        let offset = match op.ok().map(|c| &c.op) {
            Some(Op::Produce { offset, .. }) => *offset,
            _ => None,
        };
        if outcome == EventType::Ok && key.is_some() {
            self.out.totals.compaction.keyed_acked += 1;
        }
        match outcome {
            EventType::Ok => self.out.totals.produces_ok += 1,
            EventType::Fail => self.out.totals.produces_failed += 1,
            EventType::Info | EventType::Invoke => self.out.totals.produces_unknown += 1,
        }
        let completion = op.completion.map(|c| c.index);
        let invoke = op.invoke.index;
        if outcome == EventType::Ok && offset.is_none() {
            self.out.malformed.push(|| Anomaly {
                events: vec![invoke, completion.unwrap_or(invoke)],
                partition,
                offsets: vec![],
                values: vec![value],
                explanation: format!("produce of value {value} completed ok without an offset"),
            });
        }
        let p = Produce {
            partition,
            invoke,
            invoke_ns: op.invoke.time_ns,
            timestamp_ms,
            completion,
            outcome,
            offset,
            key,
        };
        match self.produces.entry(value) {
            Entry::Occupied(first) => {
                let first = first.get().invoke;
                self.out.malformed.push(|| Anomaly {
                    events: vec![first, invoke],
                    partition,
                    offsets: vec![],
                    values: vec![value],
                    explanation: format!(
                        "value {value} was produced twice (events {first} and {invoke}); \
                         values must be unique, so the second is ignored"
                    ),
                });
                return;
            }
            Entry::Vacant(v) => {
                v.insert(p);
            }
        }
        self.produce_order.push(value);
        if let (Some(o), Some(c)) = (offset, completion) {
            self.acks.entry(partition).or_default().push(AckPoint {
                event: c,
                at: c,
                offset: o,
                value,
            });
            self.observe_slot(partition, o, value, c, Source::Ack);
        }
    }

    /// Sorts each partition's acknowledgements by completion and makes the offsets a running
    /// maximum, so "highest offset acknowledged before index i" is one binary search.
    fn index_acks(&mut self) {
        for timeline in self.acks.values_mut() {
            timeline.sort_by_key(|a| a.at);
            let mut best: Option<AckPoint> = None;
            for a in timeline.iter_mut() {
                if best.is_none_or(|b| a.offset > b.offset) {
                    best = Some(*a);
                }
                let b = best.expect("set above");
                a.event = b.event;
                a.offset = b.offset;
                a.value = b.value;
            }
        }
    }

    /// The highest acknowledgement on `partition` completed before event index `before`.
    fn acked_before(&self, partition: u32, before: u64) -> Option<AckPoint> {
        let timeline = self.acks.get(&partition)?;
        let n = timeline.partition_point(|a| a.at < before);
        n.checked_sub(1).map(|i| timeline[i])
    }

    fn read(&mut self, op: &Operation<'_>) {
        let Some(done) = op.ok() else {
            if let Op::Poll { partition, .. } | Op::FinalRead { partition, .. } = op.invoke.op {
                self.touched.entry(partition).or_insert(false);
            }
            return;
        };
        match (&op.invoke.op, &done.op) {
            (
                &Op::Poll {
                    partition,
                    from_offset,
                    ..
                },
                Op::Poll {
                    records,
                    high_watermark,
                    ..
                },
            ) => {
                self.touched.entry(partition).or_insert(false);
                self.out.totals.polls_ok += 1;
                self.poll_order(op, partition, from_offset, records);
                if let Some(hw) = *high_watermark
                    && !self.stale(op, partition, from_offset, hw)
                {
                    self.watermark_regressed(op, partition, from_offset, hw);
                }
                for r in records {
                    self.observe(partition, *r, done.index, Source::Poll);
                }
            }
            (
                &Op::FinalRead { partition, .. },
                Op::FinalRead {
                    records,
                    log_start_offset,
                    ..
                },
            ) => {
                self.touched.insert(partition, true);
                self.out.totals.final_reads_ok += 1;
                self.zombies(partition, records, done.index);
                let mut expected = log_start_offset.unwrap_or(0);
                for r in records {
                    if r.offset != expected {
                        self.out.totals.final_read_gaps += 1;
                    }
                    expected = r.offset.saturating_add(1);
                    self.observe(partition, *r, done.index, Source::FinalRead);
                }
            }
            // Its own rules are `group`'s; what it handed out is observed like any read.
            (Op::GroupPoll { .. }, Op::GroupPoll { records, .. }) => {
                for r in records {
                    let read = ReadRecord {
                        offset: r.offset,
                        value: r.value,
                    };
                    self.observe(r.partition, read, done.index, Source::GroupPoll);
                }
            }
            _ => {}
        }
    }

    fn poll_order(
        &mut self,
        op: &Operation<'_>,
        partition: u32,
        from_offset: u64,
        records: &[ReadRecord],
    ) {
        let invoke = op.invoke.index;
        let done = op.completion.map_or(invoke, |c| c.index);
        let process = op.invoke.process;
        let key = (process, partition);
        // Previous poll's last record, if this poll continues from it (else it is a seek).
        let mut continues = None;
        if let Some(&(last, event)) = self.last_polled.get(&key) {
            if last.checked_add(1) == Some(from_offset) {
                continues = Some((last, event));
            } else {
                self.out.totals.seeks += 1;
            }
        }
        let mut expected = from_offset;
        let mut previous: Option<ReadRecord> = None;
        for r in records {
            if r.offset > expected && self.compacting {
                // Offsets compaction removed (see `compaction`'s rules).
                self.out.totals.compaction.poll_gaps += 1;
            } else if r.offset != expected {
                let kind = if r.offset > expected {
                    "skip"
                } else {
                    "rewind"
                };
                let mut events = vec![invoke, done];
                let explanation = match (previous, continues) {
                    (Some(p), _) => format!(
                        "{kind}: process {process}'s poll of partition {partition} returned \
                         offset {} right after offset {}",
                        r.offset, p.offset
                    ),
                    (None, Some((last, event))) => {
                        events.push(event);
                        format!(
                            "{kind}: process {process}'s previous poll of partition {partition} \
                             ended at offset {last} (event {event}) and this poll asked for \
                             {from_offset}, but its first record is at offset {}",
                            r.offset
                        )
                    }
                    (None, None) => format!(
                        "{kind}: process {process}'s poll of partition {partition} from offset \
                         {from_offset} returned offset {} first",
                        r.offset
                    ),
                };
                let offsets = vec![expected, r.offset];
                self.out.nonmonotonic.push(|| Anomaly {
                    events,
                    partition,
                    offsets,
                    values: vec![r.value],
                    explanation,
                });
            }
            expected = r.offset.saturating_add(1);
            previous = Some(*r);
        }
        if let Some(last) = records.last() {
            self.last_polled.insert(key, (last.offset, done));
        }
    }

    /// The first stale rule (an acknowledgement the poll misses); whether it reported one.
    fn stale(&mut self, op: &Operation<'_>, partition: u32, from_offset: u64, hw: u64) -> bool {
        let invoke = op.invoke.index;
        let Some(m) = self.acked_before(partition, invoke) else {
            return false;
        };
        if m.offset < from_offset || hw > m.offset {
            return false;
        }
        let done = op.completion.map_or(invoke, |c| c.index);
        let node = match op.completion.map(|c| &c.op) {
            Some(Op::Poll { node: Some(n), .. }) => format!("node {n}"),
            _ => "the replica".to_string(),
        };
        self.out.stale.push(|| Anomaly {
            events: vec![m.event, invoke, done],
            partition,
            offsets: vec![m.offset],
            values: vec![m.value],
            explanation: format!(
                "poll of partition {partition} from offset {from_offset} was invoked (event \
                 {invoke}) after offset {} (value {}) was acknowledged (event {}), yet {node} \
                 answered with high watermark {hw}",
                m.offset, m.value, m.event
            ),
        });
        true
    }

    /// The second stale rule: the high watermark went down between two polls of one process.
    fn watermark_regressed(
        &mut self,
        op: &Operation<'_>,
        partition: u32,
        from_offset: u64,
        hw: u64,
    ) {
        let invoke = op.invoke.index;
        let done = op.completion.map_or(invoke, |c| c.index);
        let process = op.invoke.process;
        let highest = self
            .highest_watermark
            .entry((process, partition))
            .or_insert((hw, done));
        let (before, by) = *highest;
        if hw >= before {
            *highest = (hw, done);
            return;
        }
        let node = match op.completion.map(|c| &c.op) {
            Some(Op::Poll { node: Some(n), .. }) => format!("node {n}"),
            _ => "the replica".to_string(),
        };
        self.out.stale.push(|| Anomaly {
            events: vec![by, invoke, done],
            partition,
            offsets: vec![hw, before],
            values: vec![],
            explanation: format!(
                "poll of partition {partition} from offset {from_offset} (event {invoke}) was \
                 answered by {node} with high watermark {hw}, below the {before} process \
                 {process}'s earlier poll of it was answered with (event {by})"
            ),
        });
    }

    fn observe(&mut self, partition: u32, r: ReadRecord, event: u64, source: Source) {
        self.out.totals.records_read += 1;
        if let Some(p) = self.produces.get(&r.value) {
            if p.partition != partition {
                self.misplaced
                    .entry(r.value)
                    .or_insert((partition, r.offset, event));
            } else if p.offset == Some(r.offset) {
                self.acked_read_in_place.entry(r.value).or_insert(event);
                if source == Source::FinalRead {
                    self.final_in_place.insert(r.value);
                }
            }
        }
        let max = self.max_read.entry(partition).or_insert((r.offset, event));
        if r.offset > max.0 {
            *max = (r.offset, event);
        }
        self.observe_slot(partition, r.offset, r.value, event, source);
        match self.reads.entry(r.value) {
            Entry::Vacant(v) => {
                v.insert(Seen {
                    partition,
                    offset: r.offset,
                    event,
                    more: Vec::new(),
                });
            }
            Entry::Occupied(mut o) => {
                let s = o.get_mut();
                let same = |&(p, off, _): &(u32, u64, u64)| p == partition && off == r.offset;
                if (s.partition, s.offset) != (partition, r.offset)
                    && !s.more.iter().any(same)
                    && s.more.len() + 1 < MAX_VALUES_PER_ANOMALY
                {
                    s.more.push((partition, r.offset, event));
                }
            }
        }
    }

    fn observe_slot(&mut self, partition: u32, offset: u64, value: u64, event: u64, src: Source) {
        match self.slots.entry((partition, offset)) {
            Entry::Vacant(v) => {
                v.insert(Slot {
                    value,
                    event,
                    source: src,
                    more: Vec::new(),
                });
            }
            Entry::Occupied(mut o) => {
                let s = o.get_mut();
                if s.value != value
                    && !s.more.iter().any(|m| m.0 == value)
                    && s.more.len() + 1 < MAX_VALUES_PER_ANOMALY
                {
                    s.more.push((value, event, src));
                }
            }
        }
    }

    /// The zombie rule over one final read of `partition` (records in offset order).
    fn zombies(&mut self, partition: u32, records: &[ReadRecord], event: u64) {
        // Per name, the newest epoch seen so far and the offset it was first seen at.
        let mut newest: HashMap<u32, (u16, u64)> = HashMap::new();
        for r in records {
            let Some(i) = self.instances.get(&r.value).copied() else {
                continue;
            };
            match newest.get(&i.name).copied() {
                Some((epoch, at)) if i.epoch < epoch => self.out.zombie.push(|| Anomaly {
                    events: vec![event],
                    partition,
                    offsets: vec![at, r.offset],
                    values: vec![r.value],
                    explanation: format!(
                        "value {} of producer {} epoch {} is at offset {}, after epoch {epoch} \
                         wrote at offset {at}: a fenced instance's write was appended",
                        r.value, i.name, i.epoch, r.offset
                    ),
                }),
                Some((epoch, _)) if i.epoch == epoch => {}
                _ => {
                    newest.insert(i.name, (i.epoch, r.offset));
                }
            }
        }
    }

    fn finish(mut self) -> CheckResult {
        self.lost_and_aborted();
        self.duplicates_and_phantoms();
        self.inconsistent();
        let t = &mut self.out.totals;
        t.distinct_values_read = self.reads.len() as u64;
        t.retention = std::mem::take(&mut self.lifecycle.totals);
        let mut missing: Vec<u32> = self
            .touched
            .iter()
            .filter(|&(_, &finally_read)| !finally_read)
            .map(|(&p, _)| p)
            .collect();
        missing.sort_unstable();
        for &p in &missing {
            self.out.unrecovered.push(|| Anomaly {
                events: Vec::new(),
                partition: p,
                offsets: Vec::new(),
                values: Vec::new(),
                explanation: format!(
                    "partition {p}: no final read of it succeeded once the faults had healed \
                     (every node up and connected): it did not recover, and whether its \
                     acknowledged records survived is unknown"
                ),
            });
        }
        self.out.totals.partitions_without_final_read = missing;
        self.out
    }

    fn lost_and_aborted(&mut self) {
        if self.compacting {
            self.latest_key = compaction::latest_by_key(&self.produces, &self.reads);
        }
        let order = std::mem::take(&mut self.produce_order);
        for &value in &order {
            let p = self.produces[&value];
            let gone = match p.offset {
                Some(o) if !self.final_in_place.contains(&value) => {
                    self.lifecycle.gone(p.partition, o)
                }
                _ => None,
            };
            if let (EventType::Ok, Some(o), Some(gone)) = (p.outcome, p.offset, gone) {
                self.below_start(value, &p, o, gone);
                continue;
            }
            if self.compaction_fate(value, &p) {
                continue;
            }
            let seen = self.reads.get(&value);
            match (p.outcome, p.offset, seen) {
                (EventType::Ok, Some(o), seen)
                    if !self.acked_read_in_place.contains_key(&value) =>
                {
                    let max_read = self.max_read.get(&p.partition).copied();
                    unread_ack(&mut self.out, value, &p, o, seen, max_read);
                }
                (EventType::Ok, Some(o), Some(_))
                    if self.touched.get(&p.partition) == Some(&true)
                        && !self.final_in_place.contains(&value) =>
                {
                    let read_at = self.acked_read_in_place[&value];
                    vanished(&mut self.out, value, &p, o, read_at);
                }
                (EventType::Ok, _, Some(_)) => self.out.totals.acknowledged_read += 1,
                (EventType::Fail, _, Some(s)) => read_after_failure(&mut self.out, value, &p, s),
                (EventType::Info | EventType::Invoke, _, Some(_)) => {
                    self.out.totals.unknown_read += 1;
                }
                _ => {}
            }
        }
        self.produce_order = order;
    }

    /// An acknowledged record no final read returned, below a log start seen at `gone`:
    /// expired or lost, as the lifecycle rules say.
    fn below_start(&mut self, value: u64, p: &Produce, o: u64, gone: retention::StartPoint) {
        let partition = p.partition;
        let fate = self
            .lifecycle
            .fate(partition, o, (p.timestamp_ms, p.invoke_ns), gone);
        let why = self.lifecycle.explain(&fate, o, p.timestamp_ms);
        let acked = p.completion.unwrap_or(p.invoke);
        let mut events = events_of(p);
        events.push(gone.event);
        let explanation = format!(
            "value {value} acknowledged at offset {o} of partition {partition} (event {acked}) \
             is below the log start {} seen by event {}: {why}",
            gone.start, gone.event
        );
        let anomaly = || Anomaly {
            events,
            partition,
            offsets: vec![o],
            values: vec![value],
            explanation,
        };
        let totals = &mut self.lifecycle.totals;
        match fate {
            retention::Fate::ByDelete(_) => {
                totals.expired_by_delete += 1;
                self.out.expired.push(anomaly);
            }
            retention::Fate::ByTime { .. } => {
                totals.expired_by_time += 1;
                self.out.expired.push(anomaly);
            }
            retention::Fate::BySize { .. } => {
                totals.expired_by_size += 1;
                self.out.expired.push(anomaly);
            }
            retention::Fate::Lost { .. } => self.out.lost.push(anomaly),
        }
    }

    fn duplicates_and_phantoms(&mut self) {
        let mut dups: Vec<(u64, &Seen)> = Vec::new();
        // (event, value, partition, offset, the partition its produce named, if any)
        let mut phantoms: Vec<(u64, u64, u32, u64, Option<u32>)> = Vec::new();
        for (&value, seen) in &self.reads {
            if !seen.more.is_empty() {
                dups.push((value, seen));
            }
            if !self.produces.contains_key(&value) {
                phantoms.push((seen.event, value, seen.partition, seen.offset, None));
            }
        }
        for (&value, &(partition, offset, event)) in &self.misplaced {
            let named = self.produces.get(&value).map(|p| p.partition);
            phantoms.push((event, value, partition, offset, named));
        }
        dups.sort_unstable_by_key(|&(v, s)| (s.event, v));
        phantoms.sort_unstable();
        for (value, s) in dups {
            self.out.duplicate.push(|| {
                let places = std::iter::once((s.partition, s.offset, s.event))
                    .chain(s.more.iter().copied())
                    .collect::<Vec<_>>();
                let listed = places
                    .iter()
                    .map(|(p, o, e)| format!("partition {p} offset {o} (event {e})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Anomaly {
                    events: places.iter().map(|p| p.2).collect(),
                    partition: s.partition,
                    offsets: places.iter().map(|p| p.1).collect(),
                    values: vec![value],
                    explanation: format!("value {value} was read at {listed}"),
                }
            });
        }
        for (event, value, partition, offset, named) in phantoms {
            let why = match named {
                None => "no produce ever wrote it".to_string(),
                Some(p) => format!("its produce wrote it to partition {p}"),
            };
            self.out.phantom.push(|| Anomaly {
                events: vec![event],
                partition,
                offsets: vec![offset],
                values: vec![value],
                explanation: format!(
                    "value {value} was read at offset {offset} of partition {partition} (event \
                     {event}) but {why}"
                ),
            });
        }
    }

    fn inconsistent(&mut self) {
        let mut bad: Vec<(&(u32, u64), &Slot)> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.more.is_empty())
            .collect();
        bad.sort_unstable_by_key(|&(k, _)| *k);
        for (&(partition, offset), s) in bad {
            self.out.inconsistent.push(|| {
                let all = std::iter::once((s.value, s.event, s.source))
                    .chain(s.more.iter().copied())
                    .collect::<Vec<_>>();
                let listed = all
                    .iter()
                    .map(|(v, e, src)| format!("{v} ({} event {e})", src.name()))
                    .collect::<Vec<_>>()
                    .join(", ");
                Anomaly {
                    events: all.iter().map(|a| a.1).collect(),
                    partition,
                    offsets: vec![offset],
                    values: all.iter().map(|a| a.0).collect(),
                    explanation: format!(
                        "offset {offset} of partition {partition} holds {} values: {listed}",
                        all.len()
                    ),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType as T, ReadRecord};

    /// A hand-written history; every event is 1ms after the previous one (plus what
    /// [`H::wait`] added).
    #[derive(Default)]
    struct H {
        events: Vec<Event>,
        waited_ns: u64,
    }

    impl H {
        /// Lets `ms` pass before the next event.
        fn wait(&mut self, ms: u64) {
            self.waited_ns += ms * 1_000_000;
        }

        fn push(&mut self, process: u32, kind: T, op: Op) -> u64 {
            let index = self.events.len() as u64;
            self.events.push(Event {
                index,
                time_ns: index * 1_000_000 + self.waited_ns,
                process,
                kind,
                op,
                error: None,
                instance: None,
            });
            index
        }

        fn invoke_produce(&mut self, process: u32, partition: u32, value: u64) -> u64 {
            let op = Op::Produce {
                partition,
                value,
                offset: None,
                timestamp_ms: None,
                key: None,
            };
            self.push(process, T::Invoke, op)
        }

        fn complete_produce(
            &mut self,
            process: u32,
            partition: u32,
            value: u64,
            kind: T,
            offset: Option<u64>,
        ) -> u64 {
            let op = Op::Produce {
                partition,
                value,
                offset,
                timestamp_ms: None,
                key: None,
            };
            self.push(process, kind, op)
        }

        /// An acknowledged produce; returns (invoke, completion).
        fn ack(&mut self, process: u32, partition: u32, value: u64, offset: u64) -> (u64, u64) {
            let i = self.invoke_produce(process, partition, value);
            let d = self.complete_produce(process, partition, value, T::Ok, Some(offset));
            (i, d)
        }

        fn produce_ends(
            &mut self,
            process: u32,
            partition: u32,
            value: u64,
            kind: T,
        ) -> (u64, u64) {
            let i = self.invoke_produce(process, partition, value);
            let d = self.complete_produce(process, partition, value, kind, None);
            (i, d)
        }

        fn invoke_poll(&mut self, process: u32, partition: u32, from_offset: u64) -> u64 {
            let op = Op::Poll {
                partition,
                from_offset,
                records: vec![],
                high_watermark: None,
                node: None,
                log_start_offset: None,
            };
            self.push(process, T::Invoke, op)
        }

        fn complete_poll(
            &mut self,
            process: u32,
            partition: u32,
            from_offset: u64,
            records: &[(u64, u64)],
            high_watermark: u64,
        ) -> u64 {
            let op = Op::Poll {
                partition,
                from_offset,
                records: recs(records),
                high_watermark: Some(high_watermark),
                node: Some(2),
                log_start_offset: None,
            };
            self.push(process, T::Ok, op)
        }

        fn poll(
            &mut self,
            process: u32,
            partition: u32,
            from_offset: u64,
            records: &[(u64, u64)],
            high_watermark: u64,
        ) -> (u64, u64) {
            let i = self.invoke_poll(process, partition, from_offset);
            let d = self.complete_poll(process, partition, from_offset, records, high_watermark);
            (i, d)
        }

        /// An operation of `process` that completed as `kind`: (invoke, completion).
        fn op(&mut self, process: u32, invoke: Op, kind: T, done: Op) -> (u64, u64) {
            let i = self.push(process, T::Invoke, invoke);
            let d = self.push(process, kind, done);
            (i, d)
        }

        /// The run's retention: `ms` (`None`: none by time), clocks up to `skew` ms ahead,
        /// the history's time 0 at wall time 0.
        fn retention(&mut self, ms: Option<u64>, skew: u64) {
            let op = crate::retention::set_retention(ms, None, skew, 0);
            self.op(900, op.clone(), T::Ok, op);
        }

        /// The run's retention by size: `bytes` per partition, none by time.
        fn retention_by_size(&mut self, bytes: u64) {
            let op = crate::retention::set_retention(None, Some(bytes), 0, 0);
            self.op(900, op.clone(), T::Ok, op);
        }

        /// A DeleteRecords of `before` on `partition` that completed as `kind` (`ok`:
        /// answering `before` as the new start).
        fn delete(&mut self, partition: u32, before: u64, kind: T) -> (u64, u64) {
            let done = match kind {
                T::Ok => crate::retention::deleted(partition, before, before),
                _ => crate::retention::delete(partition, before),
            };
            self.op(901, crate::retention::delete(partition, before), kind, done)
        }

        /// An `ok` poll by `process` whose answer reported the log start `start`.
        fn poll_at_start(
            &mut self,
            process: u32,
            partition: u32,
            from: u64,
            records: &[(u64, u64)],
            start: u64,
        ) -> (u64, u64) {
            let done = crate::workload::polled_from(partition, from, recs(records), (99, start), 2);
            self.op(process, crate::workload::poll(partition, from), T::Ok, done)
        }

        /// A final read of `partition` from the log start `start`.
        fn final_read_from(
            &mut self,
            partition: u32,
            start: u64,
            records: &[(u64, u64)],
        ) -> (u64, u64) {
            let done = Op::FinalRead {
                partition,
                records: recs(records),
                log_start_offset: Some(start),
            };
            let invoke = Op::FinalRead {
                partition,
                records: vec![],
                log_start_offset: None,
            };
            self.op(1_000, invoke, T::Ok, done)
        }

        /// A produce acknowledged at `offset`, stamped with the wall time it was invoked at
        /// (the history's time 0 is wall time 0).
        fn ack_stamped(&mut self, partition: u32, value: u64, offset: u64) -> (u64, u64) {
            let now_ms = (self.events.len() as u64 * 1_000_000 + self.waited_ns) / 1_000_000;
            let ts = Some(now_ms as i64);
            let invoke = crate::workload::produce_at(partition, value, ts);
            let done = crate::workload::produced_at(partition, value, offset, ts);
            self.op(1, invoke, T::Ok, done)
        }

        /// One replica's own copy of `partition`, read from node `node`.
        fn replica_read(
            &mut self,
            partition: u32,
            node: u64,
            (start, hw): (u64, u64),
            records: &[(u64, u64)],
        ) -> (u64, u64) {
            let read = |records| Op::ReplicaRead {
                partition,
                node,
                log_start_offset: start,
                high_watermark: hw,
                records,
            };
            self.op(1_100, read(vec![]), T::Ok, read(recs(records)))
        }

        fn final_read(&mut self, partition: u32, records: &[(u64, u64)]) -> (u64, u64) {
            let process = 1_000;
            let i = self.push(
                process,
                T::Invoke,
                Op::FinalRead {
                    partition,
                    records: vec![],
                    log_start_offset: None,
                },
            );
            let d = self.push(
                process,
                T::Ok,
                Op::FinalRead {
                    partition,
                    records: recs(records),
                    log_start_offset: None,
                },
            );
            (i, d)
        }
    }

    fn recs(records: &[(u64, u64)]) -> Vec<ReadRecord> {
        records
            .iter()
            .map(|&(offset, value)| ReadRecord { offset, value })
            .collect()
    }

    /// Asserts where `a` happened: its partition, offsets and values.
    fn is_at(a: &Anomaly, partition: u32, offsets: &[u64], values: &[u64]) {
        assert_eq!(
            (a.partition, &a.offsets[..], &a.values[..]),
            (partition, offsets, values)
        );
    }

    /// Asserts that `a`'s explanation says `text`.
    fn says(a: &Anomaly, text: &str) {
        assert!(a.explanation.contains(text), "{}", a.explanation);
    }

    /// Asserts that exactly `kind` was found, `n` times.
    fn only(r: &CheckResult, kind: AnomalyKind, n: u64) {
        assert_eq!(r.found(), vec![(kind, n)], "{r:#?}");
    }

    /// Marks the produce invoked at event `invoke` as done by `name`'s instance at `epoch`.
    fn by(h: &mut H, invoke: u64, name: u32, epoch: u16) {
        h.events[invoke as usize].instance = Some(crate::history::Instance { name, epoch });
    }

    #[test]
    fn a_fenced_instance_written_after_its_successor_is_a_zombie() {
        let mut h = H::default();
        // Epoch 0 writes, epoch 1 takes over, then a write of epoch 0 lands after it.
        let (a, _) = h.ack(1, 0, 10, 0);
        by(&mut h, a, 7, 0);
        let (b, _) = h.ack(2, 0, 11, 1);
        by(&mut h, b, 7, 1);
        let (c, _) = h.ack(1, 0, 12, 2);
        by(&mut h, c, 7, 0);
        // Another name, and an unnamed producer, interleave freely.
        let (d, _) = h.ack(3, 0, 13, 3);
        by(&mut h, d, 8, 4);
        h.ack(4, 0, 14, 4);
        let (_, read) = h.final_read(0, &[(0, 10), (1, 11), (2, 12), (3, 13), (4, 14)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Zombie, 1);
        let z = &r.zombie.ops[0];
        is_at(z, 0, &[1, 2], &[12]);
        assert_eq!(z.events, vec![read]);
        says(
            z,
            "producer 7 epoch 0 is at offset 2, after epoch 1 wrote at offset 1",
        );
        assert!(
            !r.is_valid(Guarantees::from_modes("ap", "ap")),
            "a violation in AP too"
        );
    }

    #[test]
    fn an_older_epoch_before_the_newer_ones_first_write_is_no_zombie() {
        let mut h = H::default();
        let (a, _) = h.ack(1, 0, 10, 0);
        by(&mut h, a, 7, 1);
        let (b, _) = h.ack(2, 0, 11, 1);
        by(&mut h, b, 7, 1);
        // The zombie's write in another partition, before the successor reached it.
        let (c, _) = h.ack(1, 1, 12, 0);
        by(&mut h, c, 7, 0);
        let (d, _) = h.ack(2, 1, 13, 1);
        by(&mut h, d, 7, 1);
        h.final_read(0, &[(0, 10), (1, 11)]);
        h.final_read(1, &[(0, 12), (1, 13)]);
        assert_eq!(check(&h.events).found(), vec![]);
    }

    #[test]
    fn an_acknowledged_record_read_and_then_cut_from_the_tail_is_lost() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let (_, acked) = h.ack(1, 0, 11, 1);
        let (_, polled) = h.poll(5, 0, 0, &[(0, 10), (1, 11)], 2);
        h.final_read(0, &[(0, 10)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Lost, 1);
        let l = &r.lost.ops[0];
        is_at(l, 0, &[1], &[11]);
        assert!(l.events.contains(&acked) && l.events.contains(&polled));
        says(
            l,
            "was read there (event 5), but the final read of partition 0 does not hold it",
        );
        assert!(!r.is_valid(Guarantees::from_modes("cp", "cp")));
        assert!(
            !r.is_valid(Guarantees::from_modes("cp", "ap")),
            "a CP acknowledgement lost whatever the reads"
        );
        assert!(
            r.is_valid(Guarantees::from_modes("ap", "ap")),
            "AP may lose it"
        );
    }

    #[test]
    fn an_acknowledged_record_read_and_then_overwritten_is_lost_under_ap_reads_too() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.poll(5, 0, 0, &[(0, 10)], 1);
        h.produce_ends(2, 0, 20, T::Info);
        h.final_read(0, &[(0, 20)]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Lost, 1), (AnomalyKind::Inconsistent, 1)]
        );
        assert!(!r.is_valid(Guarantees::from_modes("cp", "ap")));
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let mut h = H::default();
        h.ack(1, 0, 100, 0);
        h.invoke_produce(1, 0, 101);
        h.poll(5, 0, 0, &[(0, 100)], 1);
        h.complete_produce(1, 0, 101, T::Ok, Some(1));
        h.produce_ends(2, 0, 102, T::Fail);
        h.produce_ends(2, 0, 103, T::Info); // written, as the reads show
        h.produce_ends(2, 0, 104, T::Info); // not written
        h.ack(3, 1, 200, 0);
        h.poll(5, 0, 1, &[(1, 101), (2, 103)], 3);
        h.poll(5, 0, 3, &[], 3);
        h.poll(6, 1, 0, &[(0, 200)], 1);
        h.final_read(0, &[(0, 100), (1, 101), (2, 103)]);
        h.final_read(1, &[(0, 200)]);
        let r = check(&h.events);
        assert_eq!(r.found(), vec![], "{r:#?}");
        assert!(r.is_valid(Guarantees::CP));
        let t = &r.totals;
        assert_eq!(
            (t.produces_ok, t.produces_failed, t.produces_unknown),
            (3, 1, 2)
        );
        assert_eq!((t.acknowledged_read, t.unknown_read), (3, 1));
        assert_eq!((t.polls_ok, t.final_reads_ok, t.records_read), (4, 2, 8));
        assert_eq!(
            (t.distinct_values_read, t.seeks, t.final_read_gaps),
            (4, 0, 0)
        );
        assert!(t.partitions_without_final_read.is_empty());
    }

    /// A partition that no final read covered did not recover once the faults healed: a
    /// violation in every mode (a cluster that stopped serving would otherwise pass).
    #[test]
    fn a_partition_never_read_back_is_unrecovered_in_every_mode() {
        let mut h = H::default();
        h.ack(1, 0, 100, 0);
        h.ack(2, 1, 200, 0);
        h.poll(5, 1, 0, &[(0, 200)], 1);
        h.final_read(0, &[(0, 100)]);
        let r = check(&h.events);
        assert_eq!(r.found(), vec![(AnomalyKind::Unrecovered, 1)]);
        assert_eq!(r.unrecovered.ops[0].partition, 1);
        assert_eq!(r.totals.partitions_without_final_read, vec![1]);
        assert!(!r.is_valid(Guarantees::CP));
        assert!(!r.is_valid(Guarantees::AP));
        h.final_read(1, &[(0, 200)]);
        assert_eq!(check(&h.events).found(), vec![]);
    }

    #[test]
    fn an_acknowledged_record_skipped_by_every_read_is_lost() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let (i, d) = h.ack(1, 0, 11, 1);
        h.ack(1, 0, 12, 2);
        let (_, fr) = h.final_read(0, &[(0, 10), (2, 12)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Lost, 1);
        let a = &r.lost.ops[0];
        assert_eq!(a.events, vec![i, d, fr]);
        is_at(a, 0, &[1], &[11]);
        says(a, "reached offset 2");
        assert_eq!(r.totals.final_read_gaps, 1);
        assert!(!r.is_valid(Guarantees::CP));
        assert!(r.is_valid(Guarantees::AP), "AP acks may lose records");
    }

    #[test]
    fn an_acknowledged_record_past_every_read_is_unseen() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let (i, d) = h.ack(1, 0, 11, 1);
        h.poll(5, 0, 0, &[(0, 10)], 2);
        h.final_read(0, &[(0, 10)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Unseen, 1);
        let a = &r.unseen.ops[0];
        assert_eq!(a.events, vec![i, d]);
        is_at(a, 0, &[1], &[11]);
        says(a, "highest offset read: 0");
    }

    #[test]
    fn one_value_at_two_offsets_is_a_duplicate() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.ack(1, 0, 11, 1);
        let (_, p) = h.poll(5, 0, 0, &[(0, 10), (1, 11), (2, 10)], 3);
        let (_, fr) = h.final_read(0, &[(0, 10), (1, 11), (2, 10)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Duplicate, 1);
        let a = &r.duplicate.ops[0];
        assert_eq!(a.events, vec![p, p]);
        is_at(a, 0, &[0, 2], &[10]);
        assert_ne!(fr, p);
    }

    #[test]
    fn two_values_at_one_offset_are_inconsistent() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let (_, ack) = h.ack(1, 0, 11, 1);
        h.produce_ends(2, 0, 12, T::Info);
        h.produce_ends(2, 1, 20, T::Info);
        h.produce_ends(2, 1, 21, T::Info);
        // Offset 1 of partition 0: the ack says 11, a poll says 12 (an unknown produce).
        let (_, p) = h.poll(5, 0, 0, &[(0, 10), (1, 12)], 2);
        // Offset 0 of partition 1: two reads disagree, no ack involved.
        let (_, q) = h.poll(6, 1, 0, &[(0, 20)], 1);
        h.final_read(0, &[(0, 10), (1, 11)]);
        let (_, fr1) = h.final_read(1, &[(0, 21)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Inconsistent, 2);
        let a = &r.inconsistent.ops[0];
        assert_eq!(a.events, vec![ack, p]);
        is_at(a, 0, &[1], &[11, 12]);
        says(a, "11 (produce ack");
        let b = &r.inconsistent.ops[1];
        assert_eq!(b.events, vec![q, fr1]);
        is_at(b, 1, &[0], &[20, 21]);
        assert!(r.is_valid(Guarantees::from_modes("cp", "ap")));
        assert!(!r.is_valid(Guarantees::CP));
    }

    #[test]
    fn skips_and_rewinds_between_returned_records_are_nonmonotonic_but_seeks_are_not() {
        let mut h = H::default();
        for (v, o) in (10..16).zip(0..) {
            h.ack(1, 0, v, o);
        }
        let (_, p1) = h.poll(5, 0, 0, &[(0, 10), (1, 11)], 6);
        // Continues from 1 and asks for 2, but the first record is 3: a skip.
        let (i2, p2) = h.poll(5, 0, 2, &[(3, 13)], 6);
        // Within one poll: 4 then 4 again (rewind), then 5.
        let (i3, p3) = h.poll(5, 0, 4, &[(4, 14), (4, 14), (5, 15)], 6);
        // A seek back to 0 after an error is fine, as is the fresh run of records after it.
        h.poll(5, 0, 0, &[(0, 10), (1, 11), (2, 12)], 6);
        // A poll starting before its from_offset: rewind, not after a previous poll's end.
        let (i4, p4) = h.poll(6, 0, 2, &[(1, 11), (2, 12)], 6);
        // A gap within one poll: skip.
        let (i5, p5) = h.poll(7, 0, 0, &[(0, 10), (2, 12)], 6);
        h.final_read(0, &[(0, 10), (1, 11), (2, 12), (3, 13), (4, 14), (5, 15)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::NonMonotonic, 4);
        let got: Vec<_> = r
            .nonmonotonic
            .ops
            .iter()
            .map(|a| (a.events.clone(), a.offsets.clone(), a.values.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![i2, p2, p1], vec![2, 3], vec![13]),
                (vec![i3, p3], vec![5, 4], vec![14]),
                (vec![i4, p4], vec![2, 1], vec![11]),
                (vec![i5, p5], vec![1, 2], vec![12]),
            ]
        );
        assert!(r.nonmonotonic.ops[0].explanation.starts_with("skip: "));
        assert!(r.nonmonotonic.ops[1].explanation.starts_with("rewind: "));
        assert_eq!(r.totals.seeks, 1);
        assert!(!r.is_valid(Guarantees::AP));
    }

    #[test]
    fn reading_a_failed_produce_is_an_aborted_read() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let (i, f) = h.produce_ends(1, 0, 11, T::Fail);
        let (_, fr) = h.final_read(0, &[(0, 10), (1, 11)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Aborted, 1);
        let a = &r.aborted.ops[0];
        assert_eq!(a.events, vec![i, f, fr]);
        is_at(a, 0, &[1], &[11]);
    }

    #[test]
    fn a_poll_missing_an_earlier_acknowledgement_is_stale() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        // Concurrent with the ack of offset 1: allowed not to see it.
        let i0 = h.invoke_poll(5, 0, 1);
        let (_, ack) = h.ack(1, 0, 11, 1);
        h.complete_poll(5, 0, 1, &[], 1);
        // Invoked after the ack of offset 1, from 1, with high watermark 1: stale.
        let (i1, p1) = h.poll(6, 0, 1, &[], 1);
        // From 2: nothing acknowledged at or past 2, so not stale.
        h.poll(7, 0, 2, &[], 1);
        // From 0 with high watermark 2: has everything acknowledged.
        h.poll(7, 0, 0, &[(0, 10), (1, 11)], 2);
        h.final_read(0, &[(0, 10), (1, 11)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Stale, 1);
        let a = &r.stale.ops[0];
        assert_eq!(a.events, vec![ack, i1, p1]);
        is_at(a, 0, &[1], &[11]);
        assert!(
            a.explanation
                .contains("node 2 answered with high watermark 1")
        );
        assert!(i0 < ack);
        assert!(r.is_valid(Guarantees::from_modes("CP", "ap")));
        assert!(!r.is_valid(Guarantees::from_modes("ap", "cp")));
    }

    #[test]
    fn a_high_watermark_going_down_between_two_polls_is_stale() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.ack(1, 0, 11, 1);
        let (_, p1) = h.poll(5, 0, 0, &[(0, 10), (1, 11)], 2);
        // From 2, so no acknowledgement is missed; but the earlier poll showed 2 committed.
        let (i2, p2) = h.poll(5, 0, 2, &[], 1);
        h.final_read(0, &[(0, 10), (1, 11)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Stale, 1);
        let a = &r.stale.ops[0];
        assert_eq!(a.events, vec![p1, i2, p2]);
        assert_eq!((a.partition, &a.offsets), (0, &vec![1, 2]));
        assert!(
            a.explanation
                .contains("node 2 with high watermark 1, below the 2"),
            "{}",
            a.explanation
        );
        assert!(r.is_valid(Guarantees::from_modes("cp", "ap")));
        assert!(!r.is_valid(Guarantees::CP));
    }

    #[test]
    fn an_acknowledged_value_read_only_at_another_offset_is_lost() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let (i, d) = h.ack(1, 0, 11, 1);
        h.ack(1, 0, 12, 2);
        let (_, fr) = h.final_read(0, &[(0, 10), (2, 12), (3, 11)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Lost, 1);
        let a = &r.lost.ops[0];
        assert_eq!(a.events, vec![i, d, fr]);
        assert_eq!((&a.offsets, &a.values), (&vec![1], &vec![11]));
        says(a, "only elsewhere, first at offset 3");
    }

    #[test]
    fn a_value_read_in_another_partition_than_its_produce_is_a_phantom() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.ack(1, 1, 20, 0);
        h.final_read(0, &[(0, 10)]);
        let (_, fr) = h.final_read(1, &[(0, 20), (1, 10)]);
        let r = check(&h.events);
        // At two places, too.
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Duplicate, 1), (AnomalyKind::Phantom, 1)],
            "{r:#?}"
        );
        let a = &r.phantom.ops[0];
        assert_eq!(a.events, vec![fr]);
        is_at(a, 1, &[1], &[10]);
        assert!(
            a.explanation
                .contains("its produce wrote it to partition 0"),
            "{}",
            a.explanation
        );
    }

    #[test]
    fn a_value_nobody_produced_is_a_phantom() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let (_, fr) = h.final_read(0, &[(0, 10), (1, 999)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Phantom, 1);
        let a = &r.phantom.ops[0];
        assert_eq!(a.events, vec![fr]);
        is_at(a, 0, &[1], &[999]);
    }

    #[test]
    fn a_broken_history_is_malformed() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        let orphan = h.complete_produce(2, 0, 11, T::Ok, Some(1));
        let (_, no_offset) = h.produce_ends(1, 0, 12, T::Ok);
        let (again, _) = h.produce_ends(1, 0, 10, T::Info);
        h.final_read(0, &[(0, 10)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Malformed, 3);
        let events: Vec<_> = r.malformed.ops.iter().map(|a| a.events.clone()).collect();
        assert_eq!(
            events,
            vec![vec![orphan], vec![no_offset - 1, no_offset], vec![0, again]]
        );
    }

    #[test]
    fn counts_stay_exact_when_examples_are_capped() {
        let mut h = H::default();
        let n = MAX_EXAMPLES_PER_CLASS as u64 + 5;
        for v in 0..n {
            h.ack(1, 0, v, v);
        }
        h.final_read(0, &[]);
        let r = check(&h.events);
        assert_eq!(r.unseen.count, n);
        assert_eq!(r.unseen.ops.len(), MAX_EXAMPLES_PER_CLASS);
        assert_eq!(r.unseen.ops[0].values, vec![0]);
    }

    #[test]
    fn the_counts_say_which_classes_break_the_guarantees() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.ack(1, 0, 11, 1);
        h.final_read(0, &[(0, 10)]);
        let r = check(&h.events);
        let line = |g| {
            r.counts_text(g)
                .lines()
                .find(|l| l.trim_start().starts_with("unseen"))
                .map(str::to_string)
        };
        assert_eq!(
            line(Guarantees::CP).as_deref(),
            Some("  unseen               1 (50.00% of acknowledged)  VIOLATION")
        );
        assert!(
            line(Guarantees::AP)
                .unwrap()
                .ends_with("allowed in this mode")
        );
        let examples = r.examples_text(3);
        assert!(
            examples.starts_with("  unseen (1):\n    - value 11 "),
            "{examples}"
        );
    }

    #[test]
    fn the_result_round_trips_through_json() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.final_read(0, &[(0, 10), (1, 10)]);
        let r = check(&h.events);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""duplicate":{"count":1"#), "{json}");
        assert_eq!(serde_json::from_str::<CheckResult>(&json).unwrap(), r);
    }

    #[test]
    fn a_record_below_the_log_start_that_no_delete_asked_for_and_not_old_is_lost() {
        let mut h = H::default();
        h.retention(Some(20_000), 1_000);
        h.ack_stamped(0, 10, 0);
        let (i1, d1) = h.ack_stamped(0, 11, 1);
        h.ack_stamped(0, 12, 2);
        h.ack_stamped(0, 13, 3);
        // Asked to delete below 1: offset 0 goes by policy; the start then moves to 3.
        h.delete(0, 1, T::Ok);
        let (_, seen) = h.poll_at_start(5, 0, 3, &[(3, 13)], 3);
        h.final_read_from(0, 3, &[(3, 13)]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Lost, 2), (AnomalyKind::Expired, 1)],
            "{r:#?}"
        );
        let lost = &r.lost.ops[0];
        assert_eq!(lost.events, vec![i1, d1, seen]);
        is_at(lost, 0, &[1], &[11]);
        says(lost, "below the log start 3 seen by event");
        says(
            lost,
            "no DeleteRecords invoked before then asked for offset 1",
        );
        says(lost, "too young to expire");
        is_at(&r.expired.ops[0], 0, &[0], &[10]);
        says(&r.expired.ops[0], "a DeleteRecords below 1");
        let t = &r.totals.retention;
        assert_eq!((t.expired_by_delete, t.expired_by_time), (1, 0));
        assert_eq!((t.deletes_attempted, t.deletes_ok), (1, 1));
        assert!(!r.is_valid(Guarantees::CP));
        assert!(r.is_valid(Guarantees::AP), "AP acks may lose records");
    }

    #[test]
    fn without_retention_a_record_below_the_start_is_lost_unless_a_delete_asked_for_it() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.ack(1, 0, 11, 1);
        h.wait(3_600_000);
        h.final_read_from(0, 2, &[]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Lost, 2);
        says(&r.lost.ops[0], "no retention by time was set");
    }

    #[test]
    fn a_record_older_than_the_retention_expired_by_time() {
        let mut h = H::default();
        h.retention(Some(20_000), 1_000);
        h.ack_stamped(0, 10, 0);
        h.ack_stamped(0, 11, 1);
        h.wait(21_000);
        h.ack_stamped(0, 12, 2);
        // Retention moved the start past both old records.
        h.final_read_from(0, 2, &[(2, 12)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Expired, 2);
        says(&r.expired.ops[0], "it expired by time");
        assert_eq!(r.totals.retention.expired_by_time, 2);
        assert!(r.is_valid(Guarantees::CP));
        let text = r.counts_text(Guarantees::CP);
        assert!(
            text.contains(
                "  expired              2 (66.67% of acknowledged)  deleted by policy: allowed"
            ),
            "{text}"
        );
        assert!(text.contains("log lifecycle: retention 20000 ms"), "{text}");
    }

    #[test]
    fn by_size_a_record_expires_only_once_enough_could_have_been_written_after_it() {
        use crate::retention::{PRODUCER_MAX_BATCH_BYTES, record_bytes_bound, size_kept};
        let limit = 1 << 20;
        // Offsets a partition's end must have passed for offset 0 to go by size (the
        // partitions' largest records carry values 11 and 21).
        let record = record_bytes_bound(21, None);
        assert_eq!(record, record_bytes_bound(11, None));
        let enough = (size_kept(limit) - PRODUCER_MAX_BATCH_BYTES as u64) / record;
        let mut h = H::default();
        h.retention_by_size(limit);
        h.ack(1, 0, 10, 0);
        h.ack(1, 1, 20, 0);
        // Both partitions seen to start past offset 0; then a produce acknowledged in each:
        // partition 0's far enough on that its start may have moved by size, partition 1's
        // not (its end was below that when the start moved).
        h.poll_at_start(2, 0, 1, &[], 1);
        h.poll_at_start(2, 1, 1, &[], 1);
        h.ack(1, 0, 11, enough + 1);
        h.ack(1, 1, 21, enough);
        h.final_read_from(0, 1, &[(enough + 1, 11)]);
        h.final_read_from(1, 1, &[(enough, 21)]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Lost, 1), (AnomalyKind::Expired, 1)],
            "{r:#?}"
        );
        is_at(&r.expired.ops[0], 0, &[0], &[10]);
        says(&r.expired.ops[0], "it may have expired by size");
        is_at(&r.lost.ops[0], 1, &[0], &[20]);
        says(
            &r.lost.ops[0],
            "bytes could have been written from its batch on",
        );
        assert_eq!(r.totals.retention.expired_by_size, 1);
        assert!(!r.is_valid(Guarantees::CP));
        let text = r.counts_text(Guarantees::CP);
        assert!(text.contains("by size 1048576 bytes"), "{text}");
    }

    #[test]
    fn by_size_a_deletion_seen_after_the_last_produce_is_bounded_by_the_log_s_end() {
        let mut h = H::default();
        h.retention_by_size(1 << 20);
        h.ack(1, 0, 10, 0);
        h.ack(1, 0, 11, 1);
        h.ack(1, 0, 12, 2);
        // No produce after the deletion was seen: the log ended at 3 (a final read shows
        // it), three small records, far below what retention by size keeps.
        h.final_read_from(0, 2, &[(2, 12)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Lost, 2);
        says(
            &r.lost.ops[0],
            "bytes could have been written from its batch on",
        );
        assert!(!r.is_valid(Guarantees::CP));
    }

    #[test]
    fn clocks_ahead_let_a_record_expire_early_by_the_skew_and_no_more() {
        let mut h = H::default();
        h.retention(Some(20_000), 10_000);
        h.ack_stamped(0, 10, 0);
        h.ack_stamped(1, 20, 0);
        // Partition 0's record was seen gone at ~12 s: a node 10 s ahead may have seen it
        // 22 s old. Partition 1's at ~9 s: at most 19 s old for any node.
        h.wait(9_000);
        h.final_read_from(1, 1, &[]);
        h.wait(3_000);
        h.final_read_from(0, 1, &[]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Lost, 1), (AnomalyKind::Expired, 1)],
            "{r:#?}"
        );
        is_at(&r.lost.ops[0], 1, &[0], &[20]);
        is_at(&r.expired.ops[0], 0, &[0], &[10]);
    }

    #[test]
    fn any_delete_invoked_before_the_start_passed_covers_but_a_later_one_does_not() {
        let mut h = H::default();
        h.retention(Some(20_000), 1_000);
        for (v, o) in (10..16).zip(0..) {
            h.ack_stamped(0, v, o);
        }
        // Failed and unknown deletes may have been applied: they cover.
        h.delete(0, 2, T::Fail);
        h.delete(0, 4, T::Info);
        h.poll_at_start(5, 0, 5, &[(5, 15)], 5);
        // Too late: offset 4 was already seen gone.
        h.delete(0, 5, T::Ok);
        h.final_read_from(0, 5, &[(5, 15)]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Lost, 1), (AnomalyKind::Expired, 4)],
            "{r:#?}"
        );
        is_at(&r.lost.ops[0], 0, &[4], &[14]);
        says(&r.expired.ops[0], "a DeleteRecords below 4");
        says(&r.expired.ops[0], "unknown");
        let t = &r.totals.retention;
        assert_eq!(
            (t.deletes_ok, t.deletes_failed, t.deletes_unknown),
            (1, 1, 1)
        );
    }

    #[test]
    fn records_below_a_reported_start_starts_going_back_and_diverged_replicas_are_anomalies() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.ack(1, 0, 11, 1);
        h.ack(1, 0, 12, 2);
        h.delete(0, 1, T::Ok);
        // A replica answering with a record below the start it reports.
        let (_, bad) = h.poll_at_start(5, 0, 0, &[(0, 10), (1, 11)], 1);
        // The same process then sees the start lower.
        h.poll_at_start(5, 0, 2, &[(2, 12)], 1);
        let (_, back) = h.poll_at_start(5, 0, 3, &[], 0);
        h.final_read_from(0, 1, &[(1, 11), (2, 12)]);
        let replicas = [(1, 1), (2, 1), (3, 0)]
            .map(|(node, start)| crate::history::ReplicaBounds {
                node,
                log_start_offset: start,
                high_watermark: 3,
            })
            .to_vec();
        let (_, quiet) = h.op(
            902,
            crate::retention::replica_starts(0, vec![]),
            T::Ok,
            crate::retention::replica_starts(0, replicas),
        );
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![
                (AnomalyKind::Expired, 1),
                (AnomalyKind::BelowLogStart, 1),
                (AnomalyKind::LogStartRegressed, 1),
                (AnomalyKind::DivergedStart, 1)
            ],
            "{r:#?}"
        );
        is_at(&r.below_log_start.ops[0], 0, &[0], &[10]);
        assert_eq!(r.below_log_start.ops[0].events[1], bad);
        says(&r.log_start_regressed.ops[0], "at 0 (event");
        assert_eq!(r.log_start_regressed.ops[0].events[1], back);
        says(&r.diverged_start.ops[0], "n3 start 0 high watermark 3");
        assert_eq!(r.diverged_start.ops[0].events, vec![quiet]);
        let ap = r.violations(Guarantees::AP);
        assert_eq!(
            ap,
            vec![
                (AnomalyKind::BelowLogStart, 1),
                (AnomalyKind::DivergedStart, 1)
            ],
            "an AP reader may see an older start"
        );
        assert_eq!(r.violations(Guarantees::CP).len(), 3);
    }

    /// A keyed acknowledged produce of `value` (key `key`) at `offset` of `partition`.
    fn ack_keyed(h: &mut H, partition: u32, value: u64, key: u32, offset: u64) -> (u64, u64) {
        use crate::compaction::keyed;
        let invoke = keyed(crate::workload::produce(partition, value), key);
        let done = keyed(crate::workload::produced(partition, value, offset), key);
        h.op(1, invoke, T::Ok, done)
    }

    fn compacting(h: &mut H) {
        let op = crate::compaction::set_compaction("compact", 2_000);
        h.op(902, op.clone(), T::Ok, op);
    }

    #[test]
    fn a_superseded_record_missing_from_the_final_read_is_compacted_and_allowed() {
        let mut h = H::default();
        compacting(&mut h);
        ack_keyed(&mut h, 0, 10, 1, 0);
        ack_keyed(&mut h, 0, 11, 2, 1);
        ack_keyed(&mut h, 0, 12, 1, 2);
        ack_keyed(&mut h, 0, 13, 2, 3);
        // A poll saw the log before compaction, the final read after: gaps at 0 and 1.
        h.poll(5, 0, 0, &[(0, 10), (1, 11), (2, 12), (3, 13)], 4);
        h.poll(6, 0, 0, &[(2, 12), (3, 13)], 4);
        h.final_read(0, &[(2, 12), (3, 13)]);
        let r = check(&h.events);
        only(&r, AnomalyKind::Compacted, 2);
        is_at(&r.compacted.ops[0], 0, &[0, 2], &[10, 12]);
        says(&r.compacted.ops[0], "superseded by value 12");
        assert!(r.is_valid(Guarantees::CP));
        let c = &r.totals.compaction;
        assert_eq!((c.keyed_acked, c.compacted, c.poll_gaps), (4, 2, 1));
        assert!(
            r.counts_text(Guarantees::CP)
                .contains("superseded: allowed")
        );
    }

    #[test]
    fn the_latest_record_of_a_key_gone_is_compacted_latest_or_lost() {
        let mut h = H::default();
        compacting(&mut h);
        ack_keyed(&mut h, 0, 10, 1, 0);
        ack_keyed(&mut h, 0, 11, 2, 1);
        ack_keyed(&mut h, 0, 12, 3, 2);
        ack_keyed(&mut h, 0, 13, 4, 3);
        // Offset 0 (key 1's latest) was read, then is gone; offset 1 (key 2's latest) was
        // never read: lost.
        h.poll(5, 0, 0, &[(0, 10)], 4);
        h.final_read(0, &[(2, 12), (3, 13)]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Lost, 1), (AnomalyKind::CompactedLatest, 1)]
        );
        is_at(&r.compacted_latest.ops[0], 0, &[0], &[10]);
        says(
            &r.compacted_latest.ops[0],
            "the latest value of a key is gone",
        );
        is_at(&r.lost.ops[0], 0, &[1], &[11]);
        assert!(!r.is_valid(Guarantees::CP));
        assert!(r.is_valid(Guarantees::AP));
    }

    #[test]
    fn without_a_final_read_a_superseded_record_skipped_by_polls_is_compacted() {
        let mut h = H::default();
        compacting(&mut h);
        ack_keyed(&mut h, 0, 10, 1, 0);
        ack_keyed(&mut h, 0, 11, 2, 1);
        ack_keyed(&mut h, 0, 12, 1, 2);
        ack_keyed(&mut h, 0, 13, 2, 3);
        // A lagging consumer reads after compaction removed 0 and 1, each superseded (1 by
        // the acknowledged 3, never read): compacted. Key 2's latest (3) is not reached.
        h.poll(5, 0, 0, &[(2, 12)], 4);
        let r = check(&h.events);
        // Without a final read the partition counts as unrecovered.
        assert_eq!(
            r.found(),
            vec![
                (AnomalyKind::Unseen, 1),
                (AnomalyKind::Compacted, 2),
                (AnomalyKind::Unrecovered, 1)
            ]
        );
        assert_eq!(r.totals.compaction.poll_gaps, 1);
        // A read past it: key 2's latest, never read, is lost.
        ack_keyed(&mut h, 0, 14, 3, 4);
        h.poll(5, 0, 3, &[(4, 14)], 5);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![
                (AnomalyKind::Lost, 1),
                (AnomalyKind::Compacted, 2),
                (AnomalyKind::Unrecovered, 1)
            ]
        );
        is_at(&r.lost.ops[0], 0, &[3], &[13]);
    }

    #[test]
    fn without_compaction_keys_change_nothing_and_skips_stay_nonmonotonic() {
        let mut h = H::default();
        ack_keyed(&mut h, 0, 10, 1, 0);
        ack_keyed(&mut h, 0, 11, 1, 1);
        h.poll(5, 0, 0, &[(1, 11)], 2);
        h.final_read(0, &[(1, 11)]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::Lost, 1), (AnomalyKind::NonMonotonic, 1)]
        );
    }

    #[test]
    fn a_record_read_at_another_offset_stays_inconsistent_under_compaction() {
        let mut h = H::default();
        compacting(&mut h);
        ack_keyed(&mut h, 0, 10, 1, 0);
        ack_keyed(&mut h, 0, 11, 1, 1);
        // The latest record of key 1 moved to offset 0.
        h.final_read(0, &[(0, 11)]);
        let r = check(&h.events);
        assert_eq!(r.inconsistent.count, 1, "{r:#?}");
        // Value 11 is not at its acknowledged offset 1, and no read reached past 0.
        is_at(&r.unseen.ops[0], 0, &[1], &[11]);
        assert!(!r.is_valid(Guarantees::CP));
    }

    #[test]
    fn a_replica_whose_copy_differs_from_the_final_read_has_diverged() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.ack(1, 0, 11, 1);
        h.ack(1, 0, 12, 2);
        h.final_read(0, &[(0, 10), (1, 11), (2, 12)]);
        // A replica with the same records, one behind (its high watermark 2), and one whose
        // log starts later: the same log.
        h.replica_read(0, 1, (0, 3), &[(0, 10), (1, 11), (2, 12)]);
        h.replica_read(0, 2, (0, 2), &[(0, 10), (1, 11)]);
        h.replica_read(0, 3, (1, 3), &[(1, 11), (2, 12)]);
        // A replica whose end is below the final read's start (retention moved it since):
        // nothing to compare, no panic.
        h.ack(1, 1, 20, 5);
        h.final_read_from(1, 5, &[(5, 20)]);
        h.replica_read(1, 2, (0, 3), &[(0, 17), (1, 18), (2, 19)]);
        assert!(check(&h.events).found().is_empty());

        // Another record at an offset, and a hole: both diverged, in every mode.
        h.replica_read(0, 2, (0, 3), &[(0, 10), (1, 99), (2, 12)]);
        h.replica_read(0, 3, (0, 3), &[(0, 10), (2, 12)]);
        let r = check(&h.events);
        assert_eq!(
            r.found(),
            vec![(AnomalyKind::ReplicaDiverged, 2)],
            "{:?}",
            r.replica_diverged
        );
        let first = &r.replica_diverged.ops[0];
        assert!(
            first.explanation.contains("value 99"),
            "{}",
            first.explanation
        );
        assert!(AnomalyKind::ReplicaDiverged.is_violation(Guarantees::AP));
        assert!(!r.is_valid(Guarantees::AP));
    }

    #[test]
    fn a_node_that_exited_on_its_own_is_a_crash_in_every_mode() {
        let mut h = H::default();
        h.ack(1, 0, 10, 0);
        h.final_read(0, &[(0, 10)]);
        assert_eq!(check(&h.events).crashed.count, 0);
        let exited = Op::NodeExited {
            node: 2,
            status: "signal: 6 (SIGABRT)".into(),
        };
        h.op(1_200, exited.clone(), T::Ok, exited);
        let r = check(&h.events);
        only(&r, AnomalyKind::Crashed, 1);
        assert!(r.crashed.ops[0].explanation.contains("node 2"));
        assert!(!r.is_valid(Guarantees::AP));
    }
}
