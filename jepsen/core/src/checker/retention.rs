//! The log-lifecycle rules, over the `retention`, `delete_records`, `list_earliest` and
//! `replica_starts` operations and the log start offsets reads report.
//!
//! # What is known
//! - An *observation* of a partition's log start: an `ok` poll, `list_earliest`,
//!   `delete_records` (the start it answered), final read or `replica_starts`, at its
//!   completion. A log start only moves by a committed `DeleteRecords` entry (the RPC's or
//!   retention's), so once any replica reported a start above offset `o`, the record at `o`
//!   was deleted by then. The *gone point* of `(p, o)` is the first observation (in history
//!   order) of a start above `o`.
//! - A `DeleteRecords` *covers* offset `o` of `p` before a gone point if it asked for
//!   `before > o` and was invoked before the gone point's completion, whatever its outcome:
//!   one that failed or timed out may still have been applied.
//! - The retention: the smallest `retention_ms` any `retention` operation set (none: no
//!   retention by time) and the smallest `retention_bytes` (none: no retention by size),
//!   with the largest `max_clock_skew_ms`. A record's *timestamp* is
//!   the one its produce set; without one, the time its produce was invoked minus the skew
//!   (the leader's append time is no earlier).
//!
//! # Rules
//! - **expired** (never a violation): an acknowledged record that no final read returned, at
//!   an offset below a log start some observation reported, and either covered by a
//!   `DeleteRecords` before its gone point, or old enough to have expired by then: its
//!   timestamp plus `retention_ms` is below the gone point's wall time plus
//!   `max_clock_skew_ms`. A leader deletes by its own clock, which the clock faults move
//!   ahead, so the rule lets it be ahead by the skew and no more. Or, with retention by
//!   size, it may have had more than `size_kept(retention_bytes)` written after its batch
//!   began: a move by size applies at a log index where that much was appended after the
//!   batch, so the partition's offsets then ended below the first offset acknowledged to a
//!   produce invoked after the gone point, or, when none was, below the highest end anything
//!   showed (a poll's high watermark, past an acknowledged offset, past a final read's last
//!   record: a committed end only grows, so in CP that bounds it): the *end bound*; and at most
//!   `(end bound - offset) * R + PRODUCER_MAX_BATCH_BYTES` bytes were written from its batch
//!   on, `R` being the largest `record_bytes_bound` of any record produced to the partition.
//! - **lost** (the checker's class): such a record that is neither: it was deleted while no
//!   `DeleteRecords` asked for it, while it was too young for any clock the cluster could
//!   have had, and before enough was written after it for retention by size.
//! - **below-log-start**: an `ok` poll that returned a record below the log start the same
//!   answer reported (the replica served a record it says is deleted).
//! - **log-start-regressed**: an observation of a partition's log start lower than one the
//!   same process observed before (its operations are sequential). A violation for CP
//!   reads, which are linearizable; an AP replica may be behind another, or restart from an
//!   older checkpoint.
//! - **diverged-start**: an `ok` `replica_starts` whose replicas disagree on the log
//!   start: after the run healed and went quiet, every replica applied the same
//!   `DeleteRecords` entries, so all must report the same start.
//!
//! Not judged here: compaction (records removed above the log start) is `compaction`'s.

use std::collections::HashMap;

use super::{Anomaly, CheckResult};
use crate::history::{EventType, Op, Operation, ReadRecord, ReplicaBounds};
use crate::retention::{PRODUCER_MAX_BATCH_BYTES, record_bytes_bound, size_kept};

/// What the run set, for the rules by time and size.
#[derive(Debug, Clone, Copy)]
struct Policy {
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    max_clock_skew_ms: u64,
    start_wall_ms: i64,
}

/// A `DeleteRecords` on its partition's timeline, by invoke; `before` is the running maximum.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeletePoint {
    /// The invoke's index (the timeline's key).
    at: u64,
    pub before: u64,
    /// The invoke of the delete that asked for `before`, and its outcome.
    pub event: u64,
    pub outcome: EventType,
}

/// An observation of a log start on its partition's timeline, by completion; `start` is the
/// running maximum, and `event`/`time_ns` are those of the observation that raised it.
#[derive(Debug, Clone, Copy)]
pub(super) struct StartPoint {
    at: u64,
    pub start: u64,
    pub event: u64,
    pub time_ns: u64,
}

/// The lifecycle's facts, gathered in one pass over the operations.
#[derive(Default)]
pub(super) struct Lifecycle {
    policy: Option<Policy>,
    deletes: HashMap<u32, Vec<DeletePoint>>,
    starts: HashMap<u32, Vec<StartPoint>>,
    /// Per partition, `(invoke, offset)` of each acknowledged produce; once indexed, sorted
    /// by invoke and `offset` the lowest from there on.
    acked: HashMap<u32, Vec<(u64, u64)>>,
    /// Per partition, the most bytes any record produced to it takes stored.
    record_max: HashMap<u32, u64>,
    /// Per partition, the highest end of its log anything showed: a poll's high watermark,
    /// past an acknowledged offset, past the last record of a final read.
    ends: HashMap<u32, u64>,
    /// Per (process, partition), the highest start it observed and the event observing it.
    seen_by: HashMap<(u32, u32), (u64, u64)>,
    pub totals: super::RetentionTotals,
}

/// How an acknowledged record below the log start went.
pub(super) enum Fate {
    ByDelete(DeletePoint),
    ByTime {
        latest_clock_ms: i64,
    },
    /// At most `most_bytes` could have been written from its batch on by then, more than
    /// retention by size keeps.
    BySize {
        most_bytes: u64,
    },
    Lost {
        latest_clock_ms: Option<i64>,
        most_bytes: Option<u64>,
    },
}

fn outcome_name(o: EventType) -> &'static str {
    match o {
        EventType::Ok => "ok",
        EventType::Fail => "failed",
        EventType::Info | EventType::Invoke => "unknown",
    }
}

impl Lifecycle {
    /// Takes one operation's lifecycle facts; judges the rules that need only it.
    pub fn operation(&mut self, op: &Operation<'_>, out: &mut CheckResult) {
        let done = op.ok();
        match (&op.invoke.op, done.map(|d| &d.op)) {
            (
                &Op::Retention {
                    retention_ms,
                    retention_bytes,
                    max_clock_skew_ms,
                    start_wall_ms,
                },
                _,
            ) => self.policy(
                (retention_ms, retention_bytes),
                max_clock_skew_ms,
                start_wall_ms,
            ),
            (
                &Op::DeleteRecords {
                    partition, before, ..
                },
                answer,
            ) => {
                self.delete(op, partition, before);
                if let Some(Op::DeleteRecords {
                    log_start_offset: Some(s),
                    ..
                }) = answer
                {
                    self.observe(op, partition, *s, out);
                }
            }
            (
                &Op::Poll { partition, .. },
                Some(Op::Poll {
                    log_start_offset,
                    records,
                    node,
                    high_watermark,
                    ..
                }),
            ) => {
                if let Some(hw) = *high_watermark {
                    self.end(partition, hw);
                }
                if let Some(s) = *log_start_offset {
                    self.observe(op, partition, s, out);
                    below_log_start(op, partition, s, records, *node, out);
                }
            }
            (
                &Op::ListEarliest { partition, .. },
                Some(Op::ListEarliest {
                    log_start_offset: Some(s),
                    ..
                }),
            ) => self.observe(op, partition, *s, out),
            (
                &Op::FinalRead { partition, .. },
                Some(Op::FinalRead {
                    log_start_offset,
                    records,
                    ..
                }),
            ) => {
                if let Some(last) = records.last() {
                    self.end(partition, last.offset.saturating_add(1));
                }
                if let Some(s) = *log_start_offset {
                    self.observe(op, partition, s, out);
                }
            }
            (&Op::ReplicaStarts { partition, .. }, Some(Op::ReplicaStarts { replicas, .. })) => {
                for r in replicas {
                    self.push_start(op, partition, r.log_start_offset);
                }
                diverged(op, partition, replicas, out);
            }
            _ => {}
        }
    }

    /// Something showed `partition`'s log reaching `end`.
    fn end(&mut self, partition: u32, end: u64) {
        let e = self.ends.entry(partition).or_default();
        *e = (*e).max(end);
    }

    fn policy(
        &mut self,
        (retention_ms, retention_bytes): (Option<u64>, Option<u64>),
        skew: u64,
        start_wall_ms: i64,
    ) {
        let p = self.policy.get_or_insert(Policy {
            retention_ms,
            retention_bytes,
            max_clock_skew_ms: skew,
            start_wall_ms,
        });
        let least = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        p.retention_ms = least(p.retention_ms, retention_ms);
        p.retention_bytes = least(p.retention_bytes, retention_bytes);
        p.max_clock_skew_ms = p.max_clock_skew_ms.max(skew);
        self.totals.retention_ms = p.retention_ms;
        self.totals.retention_bytes = p.retention_bytes;
        self.totals.max_clock_skew_ms = p.max_clock_skew_ms;
    }

    fn delete(&mut self, op: &Operation<'_>, partition: u32, before: u64) {
        let t = &mut self.totals;
        t.deletes_attempted += 1;
        match op.outcome() {
            EventType::Ok => t.deletes_ok += 1,
            EventType::Fail => t.deletes_failed += 1,
            EventType::Info | EventType::Invoke => t.deletes_unknown += 1,
        }
        self.deletes
            .entry(partition)
            .or_default()
            .push(DeletePoint {
                at: op.invoke.index,
                before,
                event: op.invoke.index,
                outcome: op.outcome(),
            });
    }

    fn push_start(&mut self, op: &Operation<'_>, partition: u32, start: u64) {
        let Some(done) = op.completion else {
            return;
        };
        self.totals.start_observations += 1;
        self.starts.entry(partition).or_default().push(StartPoint {
            at: done.index,
            start,
            event: done.index,
            time_ns: done.time_ns,
        });
    }

    /// An observation by the operation's process: on the timeline, and held to the
    /// process's earlier ones (log-start-regressed).
    fn observe(&mut self, op: &Operation<'_>, partition: u32, start: u64, out: &mut CheckResult) {
        self.push_start(op, partition, start);
        let done = op.completion.map_or(op.invoke.index, |c| c.index);
        let process = op.invoke.process;
        let highest = self
            .seen_by
            .entry((process, partition))
            .or_insert((start, done));
        let (before, by) = *highest;
        if start >= before {
            *highest = (start, done);
            return;
        }
        out.log_start_regressed.push(|| Anomaly {
            events: vec![by, done],
            partition,
            offsets: vec![start, before],
            values: vec![],
            explanation: format!(
                "process {process} saw partition {partition}'s log start at {start} (event \
                 {done}), below the {before} it saw before (event {by})"
            ),
        });
    }

    /// Sorts the timelines and makes them running maxima; takes the run's produces (by
    /// value) for the rule by size: each partition's acknowledgements by invoke, made suffix
    /// minima, and its largest record.
    pub fn index<'a>(&mut self, produces: impl IntoIterator<Item = (&'a u64, &'a super::Produce)>) {
        for (&value, p) in produces {
            let max = self.record_max.entry(p.partition).or_default();
            *max = (*max).max(record_bytes_bound(value, p.key));
            if let Some(o) = p.offset {
                self.acked
                    .entry(p.partition)
                    .or_default()
                    .push((p.invoke, o));
                self.end(p.partition, o.saturating_add(1));
            }
        }
        for acked in self.acked.values_mut() {
            acked.sort_unstable();
            let mut lowest = u64::MAX;
            for a in acked.iter_mut().rev() {
                lowest = lowest.min(a.1);
                a.1 = lowest;
            }
        }
        for timeline in self.deletes.values_mut() {
            timeline.sort_by_key(|d| d.at);
            let mut best: Option<DeletePoint> = None;
            for d in timeline.iter_mut() {
                if best.is_none_or(|b| d.before > b.before) {
                    best = Some(*d);
                }
                let b = best.expect("set above");
                (d.before, d.event, d.outcome) = (b.before, b.event, b.outcome);
            }
        }
        for timeline in self.starts.values_mut() {
            timeline.sort_by_key(|s| s.at);
            let mut best: Option<StartPoint> = None;
            for s in timeline.iter_mut() {
                if best.is_none_or(|b| s.start > b.start) {
                    best = Some(*s);
                }
                let b = best.expect("set above");
                (s.start, s.event, s.time_ns) = (b.start, b.event, b.time_ns);
            }
        }
    }

    /// The first observation of `partition`'s log start above `offset`, if any.
    pub fn gone(&self, partition: u32, offset: u64) -> Option<StartPoint> {
        let timeline = self.starts.get(&partition)?;
        let i = timeline.partition_point(|s| s.start <= offset);
        timeline.get(i).copied()
    }

    /// The most record bytes `partition` can have had from the batch of `offset` on when an
    /// observation completed at event `by` (the end bound: see the module doc); `None` when
    /// nothing bounds its log's end.
    fn most_written_from(&self, partition: u32, offset: u64, by: u64) -> Option<u64> {
        let after = self.acked.get(&partition).and_then(|acked| {
            let i = acked.partition_point(|(invoke, _)| *invoke <= by);
            acked.get(i).map(|a| a.1)
        });
        let end = after.or_else(|| self.ends.get(&partition).copied())?;
        let record = self.record_max.get(&partition).copied().unwrap_or(u64::MAX);
        Some(
            end.saturating_sub(offset)
                .saturating_mul(record)
                .saturating_add(PRODUCER_MAX_BATCH_BYTES as u64),
        )
    }

    /// The highest `DeleteRecords` of `partition` invoked before event `by`, if it asked for
    /// more than `offset`.
    fn covering(&self, partition: u32, offset: u64, by: u64) -> Option<DeletePoint> {
        let timeline = self.deletes.get(&partition)?;
        let n = timeline.partition_point(|d| d.at < by);
        let d = timeline[..n].last()?;
        (d.before > offset).then_some(*d)
    }

    /// How the record acknowledged at `offset` of `partition`, with the timestamp
    /// `timestamp_ms` (or invoked at `invoke_ns` without one), went by its gone point.
    pub fn fate(
        &self,
        partition: u32,
        offset: u64,
        (timestamp_ms, invoke_ns): (Option<i64>, u64),
        gone: StartPoint,
    ) -> Fate {
        if let Some(d) = self.covering(partition, offset, gone.event) {
            return Fate::ByDelete(d);
        }
        let Some(p) = self.policy else {
            return Fate::Lost {
                latest_clock_ms: None,
                most_bytes: None,
            };
        };
        let skew = i64::try_from(p.max_clock_skew_ms).unwrap_or(i64::MAX);
        let wall = |ns: u64| p.start_wall_ms.saturating_add((ns / 1_000_000) as i64);
        let latest_clock_ms = wall(gone.time_ns).saturating_add(skew);
        if let Some(retention) = p.retention_ms {
            let stamped = timestamp_ms.unwrap_or_else(|| wall(invoke_ns).saturating_sub(skew));
            let retention = i64::try_from(retention).unwrap_or(i64::MAX);
            if stamped.saturating_add(retention) < latest_clock_ms {
                return Fate::ByTime { latest_clock_ms };
            }
        }
        let mut most_bytes = None;
        if let Some(limit) = p.retention_bytes {
            let most = self.most_written_from(partition, offset, gone.event);
            if most.is_none_or(|m| m > size_kept(limit)) {
                return Fate::BySize {
                    most_bytes: most.unwrap_or(u64::MAX),
                };
            }
            most_bytes = most;
        }
        Fate::Lost {
            latest_clock_ms: p.retention_ms.map(|_| latest_clock_ms),
            most_bytes,
        }
    }

    /// The words for why a record at `offset`, stamped `timestamp_ms`, went as it did.
    pub fn explain(&self, fate: &Fate, offset: u64, timestamp_ms: Option<i64>) -> String {
        let stamp = match timestamp_ms {
            Some(t) => format!("its timestamp {t}"),
            None => "its produce's invoke time less the clock skew".to_string(),
        };
        let retention = self.policy.and_then(|p| p.retention_ms);
        let by_size = self.policy.and_then(|p| p.retention_bytes);
        match fate {
            Fate::ByDelete(d) => format!(
                "a DeleteRecords below {} (event {}, {}) asked for it",
                d.before,
                d.event,
                outcome_name(d.outcome)
            ),
            Fate::ByTime { latest_clock_ms } => format!(
                "it expired by time: {stamp} plus retention_ms {} is before {latest_clock_ms}, \
                 the latest clock a node could have had then",
                retention.unwrap_or(0)
            ),
            Fate::BySize { most_bytes } => format!(
                "it may have expired by size: up to {most_bytes} bytes could have been written \
                 from its batch on by then, more than the {} that retention_bytes {} keeps",
                by_size.map_or(0, size_kept),
                by_size.unwrap_or(0)
            ),
            Fate::Lost {
                latest_clock_ms,
                most_bytes,
            } => {
                let time = match (retention, latest_clock_ms) {
                    (Some(r), Some(c)) => format!(
                        "it was too young to expire: {stamp} plus retention_ms {r} is not \
                         before {c}, the latest clock a node could have had then"
                    ),
                    _ => "no retention by time was set".to_string(),
                };
                let size = match (by_size, most_bytes) {
                    (Some(limit), Some(m)) => format!(
                        "and at most {m} bytes could have been written from its batch on by \
                         then, not more than the {} that retention_bytes {limit} keeps",
                        size_kept(limit)
                    ),
                    _ => "and no retention by size was set".to_string(),
                };
                format!(
                    "no DeleteRecords invoked before then asked for offset {offset}, {time}, \
                     {size}"
                )
            }
        }
    }
}

/// below-log-start: an `ok` poll's records below the start its answer reported.
fn below_log_start(
    op: &Operation<'_>,
    partition: u32,
    start: u64,
    records: &[ReadRecord],
    node: Option<u64>,
    out: &mut CheckResult,
) {
    let below: Vec<&ReadRecord> = records.iter().filter(|r| r.offset < start).collect();
    let Some(first) = below.first() else {
        return;
    };
    let done = op.completion.map_or(op.invoke.index, |c| c.index);
    let node = node.map_or("the replica".to_string(), |n| format!("node {n}"));
    out.below_log_start.push(|| Anomaly {
        events: vec![op.invoke.index, done],
        partition,
        offsets: below
            .iter()
            .take(super::MAX_VALUES_PER_ANOMALY)
            .map(|r| r.offset)
            .collect(),
        values: below
            .iter()
            .take(super::MAX_VALUES_PER_ANOMALY)
            .map(|r| r.value)
            .collect(),
        explanation: format!(
            "{node} answered a poll of partition {partition} (event {done}) with {} records \
             below the log start {start} it reported, the first at offset {}",
            below.len(),
            first.offset
        ),
    });
}

/// diverged-start: the replicas' final log starts differ.
fn diverged(op: &Operation<'_>, partition: u32, replicas: &[ReplicaBounds], out: &mut CheckResult) {
    let Some(first) = replicas.first() else {
        return;
    };
    if replicas
        .iter()
        .all(|r| r.log_start_offset == first.log_start_offset)
    {
        return;
    }
    let done = op.completion.map_or(op.invoke.index, |c| c.index);
    let listed = replicas
        .iter()
        .map(|r| {
            format!(
                "n{} start {} high watermark {}",
                r.node, r.log_start_offset, r.high_watermark
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    out.diverged_start.push(|| Anomaly {
        events: vec![done],
        partition,
        offsets: replicas.iter().map(|r| r.log_start_offset).collect(),
        values: vec![],
        explanation: format!(
            "after the run healed, the replicas of partition {partition} report different log \
             starts (event {done}): {listed}"
        ),
    });
}
