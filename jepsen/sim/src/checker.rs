//! The checker: CP properties of a partitioned log, judged from a [`History`].
//!
//! - **Acknowledged writes survive where they were acknowledged**: every CP-acknowledged
//!   value is in the final read of its partition, once, at its acknowledged offset.
//! - **No duplicates**: no value is seen at two offsets (or in two partitions).
//! - **One value per offset**: every reader that saw an offset saw the same value there.
//! - **No phantoms**: every value read was written, to that partition, and its produce did not
//!   definitely fail.
//! - **Readers see a contiguous, growing log**: a reader's records start at 0 and each is the
//!   offset after the previous one; its high watermark never goes backwards.
//! - **CP reads are not stale**: a read sent after a write to its partition was acknowledged
//!   at offset `o` answers a high watermark above `o` (linearizable reads).
//! - **Liveness after the heal**: every partition became readable again.
//!
//! Timeouts and lost connections are unknown outcomes: such a value may be present once, or
//! absent, and either is fine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{History, WriteOutcome};

/// A violated property, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// An acknowledged value is missing from the final read, or is at another offset.
    LostWrite {
        value: String,
        partition: u32,
        acked_offset: u64,
        found: Option<u64>,
    },
    /// A value at more than one place.
    Duplicate { value: String, at: Vec<(u32, u64)> },
    /// Two readers disagree about an offset.
    Divergence {
        partition: u32,
        offset: u64,
        values: Vec<String>,
    },
    /// Two values acknowledged at the same offset.
    AckCollision {
        partition: u32,
        offset: u64,
        values: Vec<String>,
    },
    /// A value read that no one wrote to that partition.
    Phantom {
        value: String,
        partition: u32,
        offset: u64,
    },
    /// A value read whose produce definitely failed.
    ReadOfFailedWrite {
        value: String,
        partition: u32,
        offset: u64,
        error: String,
    },
    /// A reader's records skipped or repeated offsets.
    NotContiguous {
        reader: String,
        expected: u64,
        got: u64,
    },
    /// A reader's high watermark went backwards.
    WatermarkRegressed { reader: String, from: u64, to: u64 },
    /// A read sent after an acknowledgement answered a high watermark that misses it.
    StaleRead {
        reader: String,
        invoked_ms: u64,
        high_watermark: u64,
        acked_value: String,
        acked_offset: u64,
        acked_ms: u64,
    },
    /// Something never recovered after the heal.
    Stuck(String),
    /// A task of a host panicked.
    Panic(String),
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::LostWrite {
                value,
                partition,
                acked_offset,
                found,
            } => write!(
                f,
                "lost write: {value} acknowledged at p{partition}@{acked_offset}, final read has it at {found:?}"
            ),
            Anomaly::Duplicate { value, at } => write!(f, "duplicate: {value} at {at:?}"),
            Anomaly::Divergence {
                partition,
                offset,
                values,
            } => write!(f, "divergence: p{partition}@{offset} read as {values:?}"),
            Anomaly::AckCollision {
                partition,
                offset,
                values,
            } => write!(
                f,
                "ack collision: p{partition}@{offset} acknowledged for {values:?}"
            ),
            Anomaly::Phantom {
                value,
                partition,
                offset,
            } => write!(
                f,
                "phantom: {value} read at p{partition}@{offset}, never written there"
            ),
            Anomaly::ReadOfFailedWrite {
                value,
                partition,
                offset,
                error,
            } => write!(
                f,
                "read of a failed write: {value} at p{partition}@{offset}, its produce failed with {error}"
            ),
            Anomaly::NotContiguous {
                reader,
                expected,
                got,
            } => write!(
                f,
                "not contiguous: reader {reader} expected offset {expected}, got {got}"
            ),
            Anomaly::WatermarkRegressed { reader, from, to } => write!(
                f,
                "watermark regressed: reader {reader} saw {from}, then {to}"
            ),
            Anomaly::StaleRead {
                reader,
                invoked_ms,
                high_watermark,
                acked_value,
                acked_offset,
                acked_ms,
            } => write!(
                f,
                "stale read: reader {reader} sent at {invoked_ms} ms got high watermark {high_watermark}, but {acked_value} was acknowledged at offset {acked_offset} at {acked_ms} ms"
            ),
            Anomaly::Stuck(s) => write!(f, "stuck: {s}"),
            Anomaly::Panic(s) => write!(f, "panic: {s}"),
        }
    }
}

/// An acknowledgement: `(completion ms, offset, value)`.
type Ack<'h> = (u64, u64, &'h str);

/// Counts of what the history holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Records in the final reads.
    pub final_records: usize,
    /// Unknown writes found in the final reads.
    pub unknown_present: usize,
}

/// Judges `history`: the anomalies found (none is a pass) and a summary.
pub fn check(history: &History) -> (Vec<Anomaly>, Summary) {
    let mut anomalies = Vec::new();
    let mut summary = Summary::default();
    let writes: BTreeMap<&str, (u32, &WriteOutcome)> = history
        .writes
        .iter()
        .map(|w| (w.value.as_str(), (w.partition, &w.outcome)))
        .collect();

    // Per reader: contiguity and watermark; everywhere: what is at each offset.
    let mut at_offset: BTreeMap<(u32, u64), BTreeSet<&str>> = BTreeMap::new();
    for (name, log) in &history.readers {
        let mut expected = 0u64;
        let mut hw = 0u64;
        for read in &log.reads {
            if read.high_watermark < hw {
                anomalies.push(Anomaly::WatermarkRegressed {
                    reader: name.clone(),
                    from: hw,
                    to: read.high_watermark,
                });
            }
            hw = hw.max(read.high_watermark);
            for (offset, value) in &read.records {
                if *offset != expected {
                    anomalies.push(Anomaly::NotContiguous {
                        reader: name.clone(),
                        expected,
                        got: *offset,
                    });
                }
                expected = offset + 1;
                at_offset
                    .entry((log.partition, *offset))
                    .or_default()
                    .insert(value);
            }
        }
    }
    let mut places: BTreeMap<&str, BTreeSet<(u32, u64)>> = BTreeMap::new();
    for ((partition, offset), values) in &at_offset {
        if values.len() > 1 {
            anomalies.push(Anomaly::Divergence {
                partition: *partition,
                offset: *offset,
                values: values.iter().map(|v| v.to_string()).collect(),
            });
        }
        for value in values {
            places
                .entry(value)
                .or_default()
                .insert((*partition, *offset));
            match writes.get(value) {
                Some((p, _)) if p != partition => anomalies.push(Anomaly::Phantom {
                    value: value.to_string(),
                    partition: *partition,
                    offset: *offset,
                }),
                None => anomalies.push(Anomaly::Phantom {
                    value: value.to_string(),
                    partition: *partition,
                    offset: *offset,
                }),
                Some((_, WriteOutcome::Failed(error))) => {
                    anomalies.push(Anomaly::ReadOfFailedWrite {
                        value: value.to_string(),
                        partition: *partition,
                        offset: *offset,
                        error: error.clone(),
                    })
                }
                Some(_) => {}
            }
        }
    }

    // Acknowledged offsets: what the client was told.
    let mut acked_at: BTreeMap<(u32, u64), Vec<&str>> = BTreeMap::new();
    for w in &history.writes {
        match &w.outcome {
            WriteOutcome::Acked(offset) => {
                summary.acked += 1;
                acked_at
                    .entry((w.partition, *offset))
                    .or_default()
                    .push(&w.value);
                places
                    .entry(&w.value)
                    .or_default()
                    .insert((w.partition, *offset));
            }
            WriteOutcome::Failed(_) => summary.failed += 1,
            WriteOutcome::Unknown(_) => summary.unknown += 1,
        }
    }
    for ((partition, offset), values) in &acked_at {
        if values.len() > 1 {
            anomalies.push(Anomaly::AckCollision {
                partition: *partition,
                offset: *offset,
                values: values.iter().map(|v| v.to_string()).collect(),
            });
        }
    }
    for (value, at) in &places {
        if at.len() > 1 {
            anomalies.push(Anomaly::Duplicate {
                value: value.to_string(),
                at: at.iter().copied().collect(),
            });
        }
    }

    // Stale reads: per partition, acknowledgements in completion order with the greatest
    // offset acknowledged so far; a read must cover every acknowledgement completed before
    // it was sent.
    let mut acks: BTreeMap<u32, Vec<Ack<'_>>> = BTreeMap::new();
    for w in &history.writes {
        if let WriteOutcome::Acked(offset) = w.outcome {
            acks.entry(w.partition)
                .or_default()
                .push((w.completed_ms, offset, &w.value));
        }
    }
    // Per partition: (completion ms, the acknowledgement with the greatest offset so far).
    let mut floors: BTreeMap<u32, Vec<(u64, Ack<'_>)>> = BTreeMap::new();
    for (partition, mut list) in acks {
        list.sort_unstable();
        let floor = floors.entry(partition).or_default();
        let mut best = list[0];
        for ack in list {
            if ack.1 > best.1 {
                best = ack;
            }
            floor.push((ack.0, best));
        }
    }
    for (name, log) in &history.readers {
        let Some(floor) = floors.get(&log.partition) else {
            continue;
        };
        for read in &log.reads {
            // Acknowledgements completed strictly before the read was sent.
            let before = floor.partition_point(|(ms, _)| *ms < read.invoked_ms);
            if let Some(&(_, (acked_ms, acked_offset, value))) =
                before.checked_sub(1).map(|i| &floor[i])
                && read.high_watermark <= acked_offset
            {
                anomalies.push(Anomaly::StaleRead {
                    reader: name.clone(),
                    invoked_ms: read.invoked_ms,
                    high_watermark: read.high_watermark,
                    acked_value: value.to_string(),
                    acked_offset,
                    acked_ms,
                });
            }
        }
    }

    // The final reads: every acknowledged value at its offset.
    let mut finals: BTreeMap<u32, BTreeMap<&str, u64>> = BTreeMap::new();
    for log in history
        .readers
        .values()
        .filter(|l| l.is_final && l.reached_end)
    {
        let entry = finals.entry(log.partition).or_default();
        for (offset, value) in log.reads.iter().flat_map(|r| r.records.iter()) {
            entry.insert(value, *offset);
        }
    }
    summary.final_records = finals.values().map(BTreeMap::len).sum();
    for w in &history.writes {
        let found = finals
            .get(&w.partition)
            .and_then(|f| f.get(w.value.as_str()))
            .copied();
        match &w.outcome {
            // A partition never read to the end is reported as stuck, not as loss.
            WriteOutcome::Acked(offset)
                if found != Some(*offset) && finals.contains_key(&w.partition) =>
            {
                anomalies.push(Anomaly::LostWrite {
                    value: w.value.clone(),
                    partition: w.partition,
                    acked_offset: *offset,
                    found,
                });
            }
            WriteOutcome::Unknown(_) if found.is_some() => summary.unknown_present += 1,
            _ => {}
        }
    }
    anomalies.extend(history.stuck.iter().cloned().map(Anomaly::Stuck));
    anomalies.extend(history.panics.iter().cloned().map(Anomaly::Panic));
    (anomalies, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Read, ReaderLog, Write};

    fn write(value: &str, partition: u32, outcome: WriteOutcome) -> Write {
        Write {
            value: value.into(),
            partition,
            invoked_ms: 0,
            completed_ms: 1,
            outcome,
        }
    }

    fn reader(partition: u32, is_final: bool, reads: Vec<(u64, Vec<(u64, &str)>)>) -> ReaderLog {
        ReaderLog {
            partition,
            is_final,
            reached_end: is_final,
            reads: reads
                .into_iter()
                .map(|(hw, records)| Read {
                    invoked_ms: 10,
                    at_ms: 10,
                    from: records.first().map_or(0, |r| r.0),
                    high_watermark: hw,
                    records: records
                        .into_iter()
                        .map(|(o, v)| (o, v.to_string()))
                        .collect(),
                })
                .collect(),
        }
    }

    fn history(writes: Vec<Write>, readers: Vec<(&str, ReaderLog)>) -> History {
        History {
            writes,
            readers: readers
                .into_iter()
                .map(|(n, l)| (n.to_string(), l))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let h = history(
            vec![
                write("a", 0, WriteOutcome::Acked(0)),
                write("b", 0, WriteOutcome::Unknown("timeout".into())),
                write("c", 0, WriteOutcome::Acked(2)),
                write("d", 0, WriteOutcome::Unknown("timeout".into())),
                write("e", 0, WriteOutcome::Failed("not found".into())),
            ],
            vec![
                (
                    "poll",
                    reader(0, false, vec![(3, vec![(0, "a"), (1, "b")])]),
                ),
                (
                    "final",
                    reader(0, true, vec![(3, vec![(0, "a"), (1, "b"), (2, "c")])]),
                ),
            ],
        );
        let (anomalies, summary) = check(&h);
        assert_eq!(anomalies, vec![]);
        assert_eq!(summary.acked, 2);
        assert_eq!(summary.unknown_present, 1);
    }

    #[test]
    fn each_property_is_caught() {
        let h = history(
            vec![
                write("lost", 0, WriteOutcome::Acked(0)),
                write("dup", 0, WriteOutcome::Unknown("t".into())),
                write("x", 0, WriteOutcome::Acked(5)),
                write("y", 0, WriteOutcome::Acked(5)),
                write("failed", 0, WriteOutcome::Failed("no".into())),
            ],
            vec![
                (
                    "poll",
                    reader(
                        0,
                        false,
                        vec![(3, vec![(0, "other"), (1, "dup")]), (2, vec![(3, "dup")])],
                    ),
                ),
                (
                    "final",
                    reader(0, true, vec![(6, vec![(0, "ghost"), (1, "failed")])]),
                ),
            ],
        );
        let (anomalies, _) = check(&h);
        let text: Vec<String> = anomalies.iter().map(|a| a.to_string()).collect();
        let has = |prefix: &str| text.iter().any(|t| t.starts_with(prefix));
        for prefix in [
            "lost write: lost",
            "duplicate: dup",
            "divergence: p0@0",
            "ack collision: p0@5",
            "phantom: ghost",
            "phantom: other",
            "read of a failed write: failed",
            "not contiguous: reader poll expected offset 2, got 3",
            "watermark regressed: reader poll saw 3, then 2",
            "stale read: reader poll sent at 10 ms got high watermark 3, but x was acknowledged at offset 5",
        ] {
            assert!(has(prefix), "{prefix} not in {text:#?}");
        }
    }
}
