//! The recorded history of a run: one JSON object per line, in the order events happened.
//!
//! Every operation is an `invoke` followed by exactly one completion from the same `process`:
//! `ok` (it happened), `fail` (it definitely did not happen) or `info` (unknown: it timed out
//! or the connection broke, so it may or may not have happened). A process has at most one
//! operation outstanding, so an invoke and its completion are paired by process.
//!
//! What must hold: `index` counts up from 0 with no gaps; `time_ns` never goes backwards; a
//! completion's op has the same `f`, `partition` and (for produce) `value` as its invoke
//! (for the consumer-group operations: the same `member` and `incarnation`, and for a commit
//! the same `offsets`; for a `delete_records` the same `before`, for a `retention` the same
//! `retention_ms`).
//!
//! [`pair`] joins each invoke with its completion into an [`Operation`]; it never fails, but
//! reports every way the history breaks these rules as a [`PairingError`], so a checker can
//! say the history itself is untrustworthy instead of guessing.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Which phase of an operation an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// A record read back: its partition offset and the unique value it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadRecord {
    pub offset: u64,
    pub value: u64,
}

/// What an operation does and, on its `ok` completion, what it observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// Append one unique `value` to `partition`. On `ok`, `offset` is the acknowledged offset.
    Produce {
        partition: u32,
        value: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The record's own timestamp (ms since the Unix epoch) when the producer set one;
        /// `None`: the leader stamps its append time. Retention by time goes by it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp_ms: Option<i64>,
        /// The record's key, by its number in the run's key space (runs with compaction,
        /// `crate::compaction`); `None`: an unkeyed record. Compaction keeps the latest
        /// record of each key in its partition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<u32>,
    },
    /// One consumer poll of `partition` starting at `from_offset`. On `ok`, `records` is what
    /// came back (in offset order) and `high_watermark` is what the answering replica said.
    Poll {
        partition: u32,
        from_offset: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        records: Vec<ReadRecord>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        high_watermark: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u64>,
        /// The partition's log start offset as the answering replica reported it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_start_offset: Option<u64>,
    },
    /// The read of a whole partition from its log start (offset 0 while nothing was
    /// deleted) after the faults have healed (CP read).
    FinalRead {
        partition: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        records: Vec<ReadRecord>,
        /// The highest log start offset its answers reported; `None` in histories without
        /// the log lifecycle (then the read started at 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_start_offset: Option<u64>,
    },
    /// The retention the run set on its topic (`AlterTopicConfig`): records whose running
    /// largest timestamp is older than `retention_ms` may be deleted (`None`: retention
    /// turned off again). With it, what the checker needs to judge deletions by time:
    /// `start_wall_ms`, the harness's wall clock (ms since the Unix epoch) at `time_ns` 0 of
    /// the history, and `max_clock_skew_ms`, how far a node's wall clock may run ahead of
    /// the harness's (the clock faults' bound plus a tolerance).
    /// With `retention_bytes`, a partition may also delete a batch once more than
    /// `crate::retention::size_kept` of it was written after the batch began (`None`: no
    /// retention by size; histories before it have none).
    Retention {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_bytes: Option<u64>,
        max_clock_skew_ms: u64,
        start_wall_ms: i64,
    },
    /// The compaction the run set on its topic (`AlterTopicConfig`, before the workload):
    /// `cleanup_policy` (`compact` or `compact,delete`), and how long a record stays
    /// uncompacted (`min_compaction_lag_ms`). With it, a keyed record may be removed once a
    /// later record of its key is in its partition; the rest keep their offsets.
    Compaction {
        cleanup_policy: String,
        min_compaction_lag_ms: u64,
    },
    /// A `DeleteRecords` of `partition`'s records below `before`. On `ok`, the log start
    /// offset the leader answered with.
    DeleteRecords {
        partition: u32,
        before: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_start_offset: Option<u64>,
    },
    /// A `ListOffsets` of `partition`'s earliest offset (a reader finding where its log now
    /// starts). On `ok`, the log start offset and high watermark answered.
    ListEarliest {
        partition: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_start_offset: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        high_watermark: Option<u64>,
    },
    /// After the run healed and went quiet: each replica's own bounds of `partition`
    /// (`ListOffsets` earliest, AP, asked of that node alone). On `ok`, every replica that
    /// answered.
    ReplicaStarts {
        partition: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<ReplicaBounds>,
    },
    /// Node `node`'s process exited without the harness stopping it (a panic, an abort, an
    /// error exit), outside the exits a fault causes on purpose (a refused data directory, a
    /// fail-stop on a full disk): recorded as one `ok` operation when the harness saw it.
    NodeExited { node: u64, status: String },
    /// After the final reads: one replica's own copy of `partition` (AP fetches asked of
    /// node `node` alone), from its log start to its high watermark. On `ok`, what it holds:
    /// every record of it must be the final read's at that offset, and it must hold every
    /// record of the final read between its start and its high watermark.
    ReplicaRead {
        partition: u32,
        node: u64,
        #[serde(default)]
        log_start_offset: u64,
        #[serde(default)]
        high_watermark: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        records: Vec<ReadRecord>,
    },
    /// One `poll` of a consumer-group member: the harness's member number `member` (stable
    /// across restarts) in its `incarnation` (a new one after each simulated crash). On `ok`,
    /// `records` is what it handed out, in order; every completion carries `owned`, the
    /// member's state right after the call (see [`Membership`]).
    GroupPoll {
        member: u32,
        incarnation: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        records: Vec<GroupRecord>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owned: Option<Membership>,
    },
    /// One synchronous offset commit of a member: the offsets it sends, on the invoke and the
    /// completion alike.
    GroupCommit {
        member: u32,
        incarnation: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        offsets: Vec<PartitionOffset>,
    },
    /// The members reading on, after the faults healed and the writes ended, until the group
    /// has handed out every partition up to its end. On `ok`, `ends` are those ends (each
    /// partition's high watermark when the drain began); `fail` if the deadline passed first.
    GroupDrain {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ends: Vec<PartitionOffset>,
    },
}

impl Op {
    /// The partition the operation is about; 0 for the consumer-group operations, which span
    /// partitions, and for the retention setting, which is the topic's.
    pub fn partition(&self) -> u32 {
        match self {
            Op::Produce { partition, .. }
            | Op::Poll { partition, .. }
            | Op::FinalRead { partition, .. }
            | Op::DeleteRecords { partition, .. }
            | Op::ListEarliest { partition, .. }
            | Op::ReplicaStarts { partition, .. }
            | Op::ReplicaRead { partition, .. } => *partition,
            Op::GroupPoll { .. }
            | Op::GroupCommit { .. }
            | Op::GroupDrain { .. }
            | Op::NodeExited { .. }
            | Op::Retention { .. }
            | Op::Compaction { .. } => 0,
        }
    }
}

/// A record a consumer-group member handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupRecord {
    pub partition: u32,
    pub offset: u64,
    pub value: u64,
}

/// One replica's bounds of a partition, as it answered for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaBounds {
    pub node: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

/// An offset of a partition: a commit's, or where a drain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub partition: u32,
    pub offset: u64,
}

/// A group member's state after a call: its member epoch, its `session` (how many times it
/// dropped every partition, fenced or silent for a session timeout, and joined again) and
/// the partitions it owns. A member owns a partition *continuously* between two calls when
/// both list it and the session is the same: a partition cannot be lost and won back within
/// one call otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    pub epoch: i32,
    pub session: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<u32>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the run began (the harness's monotonic clock).
    pub time_ns: u64,
    /// The logical client process; one outstanding operation per process.
    pub process: u32,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(flatten)]
    pub op: Op,
    /// Why an operation failed or is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The named producer instance that performed a produce (the fencing workload); `None`
    /// for unnamed producers and other operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
}

/// One instance of a named producer: the name's number in the run and the epoch its
/// `InitProducer` returned. A newer epoch of the same name fences the older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Instance {
    pub name: u32,
    pub epoch: u16,
}

impl Event {
    /// The event as one line of a JSONL history (without the newline).
    pub fn to_jsonl(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }
}

/// Reads a history written as JSON lines.
pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

/// One operation: an invoke and, if the history holds it, its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation<'a> {
    pub invoke: &'a Event,
    /// `None` when the history ended (or the process invoked again) before it completed.
    pub completion: Option<&'a Event>,
}

impl Operation<'_> {
    /// `ok`, `fail` or `info`; an operation that never completed is `info` (unknown).
    pub fn outcome(&self) -> EventType {
        self.completion.map_or(EventType::Info, |c| c.kind)
    }

    /// Completion time minus invoke time; `None` if it never completed.
    pub fn latency_ns(&self) -> Option<u64> {
        self.completion
            .map(|c| c.time_ns.saturating_sub(self.invoke.time_ns))
    }

    /// The completion if it is `ok`: the event carrying what the operation observed.
    pub fn ok(&self) -> Option<&Event> {
        self.completion.filter(|c| c.kind == EventType::Ok)
    }
}

/// A way the history breaks the pairing rules of this module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum PairingError {
    /// A completion from a process with nothing outstanding; it is ignored.
    CompletionWithoutInvoke { event: u64, process: u32 },
    /// An invoke from a process that still had `outstanding` open; that one becomes unknown.
    InvokeWhileOutstanding {
        event: u64,
        process: u32,
        outstanding: u64,
    },
    /// A completion whose `f`, `partition`, `value` or `from_offset` (a group operation's
    /// `member`, `incarnation` or `offsets`) differ from its invoke's.
    MismatchedCompletion { invoke: u64, completion: u64 },
    /// An `index` that does not count up by one from 0 (the history is paired in index order).
    IndexGap { event: u64, expected: u64 },
}

impl PairingError {
    /// The event the error is about.
    pub fn event(&self) -> u64 {
        match self {
            PairingError::CompletionWithoutInvoke { event, .. }
            | PairingError::InvokeWhileOutstanding { event, .. }
            | PairingError::IndexGap { event, .. } => *event,
            PairingError::MismatchedCompletion { completion, .. } => *completion,
        }
    }
}

impl fmt::Display for PairingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairingError::CompletionWithoutInvoke { event, process } => write!(
                f,
                "event {event}: completion from process {process}, which had nothing outstanding"
            ),
            PairingError::InvokeWhileOutstanding {
                event,
                process,
                outstanding,
            } => write!(
                f,
                "event {event}: process {process} invoked while event {outstanding} was still \
                 outstanding (that one is taken as unknown)"
            ),
            PairingError::MismatchedCompletion { invoke, completion } => write!(
                f,
                "event {completion}: completion does not match its invoke (event {invoke})"
            ),
            PairingError::IndexGap { event, expected } => {
                write!(f, "event {event}: index should be {expected}")
            }
        }
    }
}

impl std::error::Error for PairingError {}

/// The operations of a history, in invoke order, and what was wrong with it.
#[derive(Debug, Clone, Default)]
pub struct Paired<'a> {
    pub operations: Vec<Operation<'a>>,
    pub errors: Vec<PairingError>,
}

/// Whether a completion's op describes the same operation as the invoke's.
fn same_operation(invoke: &Op, completion: &Op) -> bool {
    match (invoke, completion) {
        (
            Op::Produce {
                partition: p1,
                value: v1,
                ..
            },
            Op::Produce {
                partition: p2,
                value: v2,
                ..
            },
        ) => p1 == p2 && v1 == v2,
        (
            Op::Poll {
                partition: p1,
                from_offset: f1,
                ..
            },
            Op::Poll {
                partition: p2,
                from_offset: f2,
                ..
            },
        ) => p1 == p2 && f1 == f2,
        (Op::FinalRead { partition: p1, .. }, Op::FinalRead { partition: p2, .. }) => p1 == p2,
        (
            Op::GroupPoll {
                member: m1,
                incarnation: i1,
                ..
            },
            Op::GroupPoll {
                member: m2,
                incarnation: i2,
                ..
            },
        ) => (m1, i1) == (m2, i2),
        (
            Op::GroupCommit {
                member: m1,
                incarnation: i1,
                offsets: o1,
            },
            Op::GroupCommit {
                member: m2,
                incarnation: i2,
                offsets: o2,
            },
        ) => (m1, i1, o1) == (m2, i2, o2),
        (Op::GroupDrain { .. }, Op::GroupDrain { .. }) => true,
        (
            Op::Compaction {
                cleanup_policy: c1,
                min_compaction_lag_ms: l1,
            },
            Op::Compaction {
                cleanup_policy: c2,
                min_compaction_lag_ms: l2,
            },
        ) => (c1, l1) == (c2, l2),
        (
            Op::Retention {
                retention_ms: r1,
                retention_bytes: b1,
                ..
            },
            Op::Retention {
                retention_ms: r2,
                retention_bytes: b2,
                ..
            },
        ) => (r1, b1) == (r2, b2),
        (
            Op::DeleteRecords {
                partition: p1,
                before: b1,
                ..
            },
            Op::DeleteRecords {
                partition: p2,
                before: b2,
                ..
            },
        ) => (p1, b1) == (p2, b2),
        (Op::ListEarliest { partition: p1, .. }, Op::ListEarliest { partition: p2, .. })
        | (Op::ReplicaStarts { partition: p1, .. }, Op::ReplicaStarts { partition: p2, .. }) => {
            p1 == p2
        }
        (
            Op::ReplicaRead {
                partition: p1,
                node: n1,
                ..
            },
            Op::ReplicaRead {
                partition: p2,
                node: n2,
                ..
            },
        ) => (p1, n1) == (p2, n2),
        (Op::NodeExited { node: n1, .. }, Op::NodeExited { node: n2, .. }) => n1 == n2,
        _ => false,
    }
}

/// Joins invokes with their completions by process, walking the history in `index` order.
///
/// A completion that does not match its invoke is still paired (and reported); one of a
/// different `f` is dropped, leaving the operation unknown, since its data cannot be trusted.
pub fn pair(history: &[Event]) -> Paired<'_> {
    let mut ordered: Vec<&Event> = history.iter().collect();
    if !ordered.is_sorted_by_key(|e| e.index) {
        ordered.sort_by_key(|e| e.index);
    }
    let mut out = Paired::default();
    // process -> position in `out.operations` of its outstanding invoke.
    let mut outstanding: HashMap<u32, usize> = HashMap::new();
    for (expected, e) in (0u64..).zip(ordered) {
        if e.index != expected {
            out.errors.push(PairingError::IndexGap {
                event: e.index,
                expected,
            });
        }
        if e.kind == EventType::Invoke {
            if let Some(prev) = outstanding.insert(e.process, out.operations.len()) {
                out.errors.push(PairingError::InvokeWhileOutstanding {
                    event: e.index,
                    process: e.process,
                    outstanding: out.operations[prev].invoke.index,
                });
            }
            out.operations.push(Operation {
                invoke: e,
                completion: None,
            });
            continue;
        }
        let Some(at) = outstanding.remove(&e.process) else {
            out.errors.push(PairingError::CompletionWithoutInvoke {
                event: e.index,
                process: e.process,
            });
            continue;
        };
        let op = &mut out.operations[at];
        if !same_operation(&op.invoke.op, &e.op) {
            out.errors.push(PairingError::MismatchedCompletion {
                invoke: op.invoke.index,
                completion: e.index,
            });
            if std::mem::discriminant(&op.invoke.op) != std::mem::discriminant(&e.op) {
                continue;
            }
        }
        op.completion = Some(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_through_one_json_line() {
        let e = Event {
            index: 3,
            time_ns: 42,
            process: 7,
            kind: EventType::Ok,
            op: Op::Produce {
                partition: 1,
                value: 9,
                offset: Some(4),
                timestamp_ms: None,
                key: None,
            },
            error: None,
            instance: None,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"index":3,"time_ns":42,"process":7,"type":"ok","f":"produce","partition":1,"value":9,"offset":4}"#
        );
        assert_eq!(parse_jsonl(&line).unwrap(), vec![e]);
    }

    fn ev(index: u64, process: u32, kind: EventType, op: Op) -> Event {
        Event {
            index,
            time_ns: index * 10,
            process,
            kind,
            op,
            error: None,
            instance: None,
        }
    }

    fn produce(value: u64) -> Op {
        Op::Produce {
            partition: 0,
            value,
            offset: None,
            timestamp_ms: None,
            key: None,
        }
    }

    #[test]
    fn pairing_joins_by_process_and_reports_broken_histories() {
        let h = vec![
            ev(0, 1, EventType::Invoke, produce(10)),
            ev(1, 2, EventType::Invoke, produce(20)),
            ev(2, 2, EventType::Fail, produce(20)),
            ev(3, 1, EventType::Invoke, produce(11)),
            ev(4, 3, EventType::Ok, produce(30)),
            ev(5, 1, EventType::Ok, produce(99)),
        ];
        let p = pair(&h);
        assert_eq!(p.operations.len(), 3);
        assert_eq!(p.operations[0].invoke.index, 0);
        assert_eq!(p.operations[0].outcome(), EventType::Info);
        assert_eq!(p.operations[1].completion.map(|c| c.index), Some(2));
        assert_eq!(p.operations[1].latency_ns(), Some(10));
        assert_eq!(p.operations[2].completion.map(|c| c.index), Some(5));
        assert_eq!(
            p.errors,
            vec![
                PairingError::InvokeWhileOutstanding {
                    event: 3,
                    process: 1,
                    outstanding: 0
                },
                PairingError::CompletionWithoutInvoke {
                    event: 4,
                    process: 3
                },
                PairingError::MismatchedCompletion {
                    invoke: 3,
                    completion: 5
                },
            ]
        );
    }
}
