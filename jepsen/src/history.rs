//! The recorded history of a run: one JSON object per line, in the order events happened.
//!
//! Every operation is an `invoke` followed by exactly one completion from the same `process`:
//! `ok` (it happened), `fail` (it definitely did not happen) or `info` (unknown: it timed out
//! or the connection broke, so it may or may not have happened). A process has at most one
//! operation outstanding, so an invoke and its completion are paired by process.
//!
//! What must hold: `index` counts up from 0 with no gaps; `time_ns` never goes backwards; a
//! completion's op has the same `f`, `partition` and (for produce) `value` as its invoke.

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
    },
    /// The read of a whole partition from offset 0 after the faults have healed (CP read).
    FinalRead {
        partition: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        records: Vec<ReadRecord>,
    },
}

impl Op {
    pub fn partition(&self) -> u32 {
        match self {
            Op::Produce { partition, .. }
            | Op::Poll { partition, .. }
            | Op::FinalRead { partition, .. } => *partition,
        }
    }
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
}

/// Reads a history written as JSON lines.
pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
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
            },
            error: None,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"index":3,"time_ns":42,"process":7,"type":"ok","f":"produce","partition":1,"value":9,"offset":4}"#
        );
        assert_eq!(parse_jsonl(&line).unwrap(), vec![e]);
    }
}
