//! What the simulated client saw and what the nemesis did. The client's operations are in
//! the shared history format (`fjord_harness::history`, the one the process tier writes to
//! `history.jsonl`) and are judged by the shared checker; beside them, what only the
//! simulation records: the faults as applied, the nodes they struck, the partitions' leaders
//! as they changed, and liveness failures. Its text form is the run's trace.
//!
//! What must hold: events are recorded in the order they happen (the simulation runs on one
//! thread), so their indexes count up from 0 and their times never go backwards.

use std::fmt::Write as _;

use fjord_harness::history::{Event, EventType, Op};

/// A partition's leader as the client's leader watch saw it change: the leader of the
/// highest term any node reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSeen {
    /// Simulated ms since the start.
    pub at_ms: u64,
    pub partition: u32,
    pub leader: u64,
    pub term: u64,
}

/// Everything the client saw in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The client's operations, in the shared format, in the order they happened.
    pub events: Vec<Event>,
    /// Faults as the driver applied them: `(simulated ms, what)`.
    pub faults: Vec<(u64, String)>,
    /// Which node each fault with a target struck: `(simulated ms, fault and node)`.
    pub struck: Vec<(u64, String)>,
    /// Partitions' leaders as they changed.
    pub leaders: Vec<LeaderSeen>,
    /// Things that went wrong outside the checked properties (a partition never became
    /// readable after the heal, the topic could not be created): liveness failures.
    pub stuck: Vec<String>,
    /// Panics of any host's task.
    pub panics: Vec<String>,
}

impl History {
    /// Appends one event at `time_ns` (simulated ns since the start); it takes the next index.
    pub fn record(
        &mut self,
        time_ns: u64,
        process: u32,
        kind: EventType,
        op: Op,
        error: Option<String>,
    ) {
        self.record_as(time_ns, process, kind, op, error, None)
    }

    /// As [`History::record`], for an operation of a named producer's `instance`.
    pub fn record_as(
        &mut self,
        time_ns: u64,
        process: u32,
        kind: EventType,
        op: Op,
        error: Option<String>,
        instance: Option<fjord_harness::history::Instance>,
    ) {
        self.events.push(Event {
            index: self.events.len() as u64,
            time_ns,
            process,
            kind,
            op,
            error,
            instance,
        });
    }

    /// The run as text, one fact per line (each operation's event as its JSON line): two
    /// runs of a seed are the same run when their traces are byte-identical.
    pub fn trace(&self) -> String {
        let mut out = String::new();
        for (at, what) in &self.faults {
            let _ = writeln!(out, "{at:>8} fault {what}");
        }
        for (at, what) in &self.struck {
            let _ = writeln!(out, "{at:>8} nemesis {what}");
        }
        for l in &self.leaders {
            let _ = writeln!(
                out,
                "{:>8} leader p{} node{} term {}",
                l.at_ms, l.partition, l.leader, l.term
            );
        }
        for e in &self.events {
            let _ = writeln!(out, "{:>8} {}", e.time_ns / 1_000_000, e.to_jsonl());
        }
        for s in &self.stuck {
            let _ = writeln!(out, "stuck {s}");
        }
        for p in &self.panics {
            let _ = writeln!(out, "panic {p}");
        }
        out
    }
}
