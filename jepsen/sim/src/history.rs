//! What the simulated client saw: every produce with its outcome, every read, and the final
//! reads of whole partitions. The checker judges it; its text form is the run's trace.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How a produce ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged in CP mode at this offset.
    Acked(u64),
    /// Failed with an error that says the record was not appended.
    Failed(String),
    /// Timed out or lost its connection: it may or may not have been appended.
    Unknown(String),
}

/// One produce of one unique value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub value: String,
    pub partition: u32,
    /// Simulated ms since the start.
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub outcome: WriteOutcome,
}

/// One successful fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// When the fetch was sent and when it was answered (simulated ms since the start).
    pub invoked_ms: u64,
    pub at_ms: u64,
    /// The offset asked for.
    pub from: u64,
    pub high_watermark: u64,
    /// `(offset, value)` in the order returned.
    pub records: Vec<(u64, String)>,
}

/// The reads of one reader, in order. A reader follows one partition from offset 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderLog {
    pub partition: u32,
    /// A final reader reads the whole partition once the cluster is healed.
    pub is_final: bool,
    /// A final reader got to the high watermark its first read answered.
    pub reached_end: bool,
    pub reads: Vec<Read>,
}

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
    pub writes: Vec<Write>,
    /// By reader name.
    pub readers: BTreeMap<String, ReaderLog>,
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
    /// The run as text, one event per line: two runs of a seed are the same run when their
    /// traces are byte-identical.
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
        for w in &self.writes {
            let _ = writeln!(
                out,
                "{:>8} write {} p{} done {} {:?}",
                w.invoked_ms, w.value, w.partition, w.completed_ms, w.outcome
            );
        }
        for (name, log) in &self.readers {
            for r in &log.reads {
                let offsets: Vec<u64> = r.records.iter().map(|(o, _)| *o).collect();
                let _ = writeln!(
                    out,
                    "{:>8} read {name} from {} hw {} sent {} {offsets:?}",
                    r.at_ms, r.from, r.high_watermark, r.invoked_ms
                );
            }
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
