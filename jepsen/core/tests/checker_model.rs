//! The checker against a model: histories generated from a correct log are clean, and each
//! single, targeted corruption of one is reported as exactly its anomaly class.
//!
//! The model: a few partitions, each a dense in-memory log. Producers invoke, and complete in
//! whatever order the script picks; an `ok` produce appends at completion (so concurrent
//! produces get dense offsets in commit order), a `fail` does not, and an `info` may or may not
//! have appended. Consumers poll from their position and get a contiguous slice of the log
//! with the log's length as high watermark, as of either the poll's invoke or its completion
//! (so a poll may miss a produce acknowledged while it was outstanding, as it is allowed to);
//! after a failed poll a consumer may seek anywhere.
//! The run ends with every outstanding operation completed and a final read of each partition.
//!
//! A failing case prints proptest's minimal script; proptest also saves its seed under
//! `proptest-regressions/` and replays it first on the next run.

use std::collections::HashMap;

use fjord_harness::checker::{AnomalyKind, CheckResult, Guarantees, check};
use fjord_harness::history::{Event, EventType, Op, ReadRecord};
use proptest::prelude::*;
use proptest::sample::Index;

/// The process doing the final reads.
const FINAL_READER: u32 = 10_000;
/// The process owning synthetic produces added by mutations.
const SYNTHETIC: u32 = 20_000;

/// One step of a script: which process acts, which outcome, and a free parameter (partition,
/// poll size, seek target).
type Step = (u8, u8, u8);

#[derive(Debug, Clone)]
enum Pending {
    Produce {
        partition: u32,
        value: u64,
    },
    Poll {
        partition: u32,
        from_offset: u64,
        /// The log's length when the poll read it, if it read at invoke rather than at
        /// completion (both are valid linearization points).
        read_at_invoke: Option<u64>,
    },
}

#[derive(Debug, Clone)]
struct Model {
    events: Vec<Event>,
    /// The committed log of each partition.
    logs: Vec<Vec<u64>>,
    /// Next unused produce value.
    next_value: u64,
}

impl Model {
    fn push(&mut self, process: u32, kind: EventType, op: Op) -> usize {
        let index = self.events.len();
        self.events.push(Event {
            index: index as u64,
            time_ns: index as u64 * 1_000,
            process,
            kind,
            op,
            error: None,
            instance: None,
        });
        index
    }

    /// The position of the invoke that `completion` completes.
    fn invoke_of(&self, completion: usize) -> usize {
        let process = self.events[completion].process;
        (0..completion)
            .rev()
            .find(|&i| {
                self.events[i].process == process && self.events[i].kind == EventType::Invoke
            })
            .expect("every completion has an invoke")
    }

    fn final_read(&self, partition: u32) -> usize {
        self.events
            .iter()
            .position(|e| {
                e.kind == EventType::Ok
                    && matches!(e.op, Op::FinalRead { partition: p, .. } if p == partition)
            })
            .expect("a final read of every partition")
    }

    fn records_mut(&mut self, at: usize) -> &mut Vec<ReadRecord> {
        match &mut self.events[at].op {
            Op::Poll { records, .. } | Op::FinalRead { records, .. } => records,
            _ => panic!("event {at} is not a read"),
        }
    }

    /// Appends an invoke and a completion of a produce of `value`, after everything else.
    fn synthetic_produce(&mut self, partition: u32, value: u64, kind: EventType) {
        let op = Op::Produce {
            partition,
            value,
            offset: None,
            timestamp_ms: None,
            key: None,
        };
        self.push(SYNTHETIC, EventType::Invoke, op.clone());
        self.push(SYNTHETIC, kind, op);
    }

    /// Positions of `ok` poll completions returning at least one record.
    fn nonempty_polls(&self) -> Vec<usize> {
        (0..self.events.len())
            .filter(|&i| {
                let e = &self.events[i];
                e.kind == EventType::Ok
                    && matches!(&e.op, Op::Poll { records, .. } if !records.is_empty())
            })
            .collect()
    }
}

/// Completes `op` of `process` with the outcome the script picked.
fn complete(
    m: &mut Model,
    position: &mut HashMap<(u32, u32), u64>,
    op: Pending,
    process: u32,
    outcome: u8,
    param: u8,
) {
    match op {
        Pending::Produce { partition, value } => {
            let log = &mut m.logs[partition as usize];
            let (kind, offset) = match outcome % 10 {
                0..=6 => {
                    log.push(value);
                    (EventType::Ok, Some(log.len() as u64 - 1))
                }
                7 => (EventType::Fail, None),
                8 => {
                    log.push(value);
                    (EventType::Info, None)
                }
                _ => (EventType::Info, None),
            };
            let op = Op::Produce {
                partition,
                value,
                offset,
                timestamp_ms: None,
                key: None,
            };
            m.push(process, kind, op);
        }
        Pending::Poll {
            partition,
            from_offset,
            read_at_invoke,
        } => {
            let log = &m.logs[partition as usize];
            // The log only grows, so its prefix as of the read is still there.
            let len = read_at_invoke.unwrap_or(log.len() as u64);
            if outcome % 10 <= 7 {
                let end = len.min(from_offset + 1 + u64::from(param % 4));
                let records: Vec<ReadRecord> = (from_offset..end)
                    .map(|o| ReadRecord {
                        offset: o,
                        value: log[o as usize],
                    })
                    .collect();
                position.insert((process, partition), from_offset.max(end));
                let op = Op::Poll {
                    partition,
                    from_offset,
                    records,
                    high_watermark: Some(len),
                    node: Some(u64::from(param % 3)),
                    log_start_offset: None,
                };
                m.push(process, EventType::Ok, op);
            } else {
                if param.is_multiple_of(2) {
                    position.insert((process, partition), u64::from(param) % (len + 1));
                }
                let kind = if outcome % 10 == 8 {
                    EventType::Fail
                } else {
                    EventType::Info
                };
                let op = Op::Poll {
                    partition,
                    from_offset,
                    records: vec![],
                    high_watermark: None,
                    node: None,
                    log_start_offset: None,
                };
                m.push(process, kind, op);
            }
        }
    }
}

fn simulate(partitions: u32, producers: u32, consumers: u32, steps: &[Step]) -> Model {
    let mut m = Model {
        events: Vec::new(),
        logs: vec![Vec::new(); partitions as usize],
        next_value: 0,
    };
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut position: HashMap<(u32, u32), u64> = HashMap::new();
    let processes = producers + consumers;
    for &(who, outcome, param) in steps {
        let process = u32::from(who) % processes;
        if let Some(op) = pending.remove(&process) {
            complete(&mut m, &mut position, op, process, outcome, param);
            continue;
        }
        let partition = u32::from(param) % partitions;
        if process < producers {
            let value = m.next_value;
            m.next_value += 1;
            let op = Op::Produce {
                partition,
                value,
                offset: None,
                timestamp_ms: None,
                key: None,
            };
            m.push(process, EventType::Invoke, op);
            pending.insert(process, Pending::Produce { partition, value });
        } else {
            let from_offset = position.get(&(process, partition)).copied().unwrap_or(0);
            let op = Op::Poll {
                partition,
                from_offset,
                records: vec![],
                high_watermark: None,
                node: None,
                log_start_offset: None,
            };
            m.push(process, EventType::Invoke, op);
            let len = m.logs[partition as usize].len() as u64;
            let read_at_invoke = (param & 0x80 == 0).then_some(len);
            pending.insert(
                process,
                Pending::Poll {
                    partition,
                    from_offset,
                    read_at_invoke,
                },
            );
        }
    }
    let mut outstanding: Vec<u32> = pending.keys().copied().collect();
    outstanding.sort_unstable();
    for process in outstanding {
        let op = pending.remove(&process).expect("outstanding");
        complete(&mut m, &mut position, op, process, 0, 0);
    }
    for partition in 0..partitions {
        let op = Op::FinalRead {
            partition,
            records: vec![],
            log_start_offset: None,
        };
        m.push(FINAL_READER, EventType::Invoke, op);
        let records = m.logs[partition as usize]
            .iter()
            .zip(0..)
            .map(|(&value, offset)| ReadRecord { offset, value })
            .collect();
        m.push(
            FINAL_READER,
            EventType::Ok,
            Op::FinalRead {
                partition,
                records,
                log_start_offset: None,
            },
        );
    }
    m
}

fn model() -> impl Strategy<Value = Model> {
    (
        1u32..=3,
        1u32..=4,
        1u32..=3,
        prop::collection::vec(any::<Step>(), 1..300),
    )
        .prop_map(|(partitions, producers, consumers, steps)| {
            simulate(partitions, producers, consumers, &steps)
        })
}

/// Exactly one anomaly of `kind`, and nothing else.
fn only(r: &CheckResult, kind: AnomalyKind) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.found(), vec![(kind, 1)], "{:#?}", r);
    Ok(())
}

/// Drops one acknowledged record that has a successor from the final read and every poll,
/// keeping each poll well-formed: a poll starting at it now asks for the next offset, and a
/// poll returning it later stops just before it (its consumer's next poll is then a seek).
fn drop_acknowledged(m: &mut Model, pick: Index) -> Option<()> {
    let candidates: Vec<(u32, u64, u64)> = m
        .events
        .iter()
        .filter_map(|e| match e.op {
            Op::Produce {
                partition,
                value,
                offset: Some(o),
                ..
            } if e.kind == EventType::Ok && o + 1 < m.logs[partition as usize].len() as u64 => {
                Some((partition, o, value))
            }
            _ => None,
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let (partition, offset, _) = candidates[pick.index(candidates.len())];
    let fr = m.final_read(partition);
    m.records_mut(fr).retain(|r| r.offset != offset);
    for at in 0..m.events.len() {
        let e = &m.events[at];
        let Op::Poll {
            partition: p,
            records,
            ..
        } = &e.op
        else {
            continue;
        };
        if e.kind != EventType::Ok || *p != partition {
            continue;
        }
        let Some(k) = records.iter().position(|r| r.offset == offset) else {
            continue;
        };
        if k > 0 {
            m.records_mut(at).truncate(k);
            continue;
        }
        m.records_mut(at).remove(0);
        let invoke = m.invoke_of(at);
        for i in [invoke, at] {
            if let Op::Poll { from_offset, .. } = &mut m.events[i].op {
                *from_offset = offset + 1;
            }
        }
    }
    Some(())
}

proptest! {
    #[test]
    fn histories_of_a_correct_log_have_no_anomalies(m in model()) {
        let r = check(&m.events);
        prop_assert_eq!(r.found(), vec![], "{:#?}", r);
        prop_assert!(r.is_valid(Guarantees::CP));
        let t = &r.totals;
        prop_assert_eq!(t.acknowledged_read, t.produces_ok);
        let committed: usize = m.logs.iter().map(Vec::len).sum();
        prop_assert_eq!(t.distinct_values_read, committed as u64);
        prop_assert_eq!(t.final_reads_ok, m.logs.len() as u64);
        prop_assert_eq!(t.final_read_gaps, 0);
        prop_assert!(t.partitions_without_final_read.is_empty());
    }

    #[test]
    fn an_acknowledged_record_no_read_returns_is_lost(mut m in model(), pick in any::<Index>()) {
        prop_assume!(drop_acknowledged(&mut m, pick).is_some());
        let r = check(&m.events);
        only(&r, AnomalyKind::Lost)?;
        prop_assert!(!r.is_valid(Guarantees::CP));
    }

    #[test]
    fn a_value_read_at_a_second_offset_is_a_duplicate(
        mut m in model(),
        pick in any::<Index>(),
    ) {
        let partitions: Vec<u32> = (0..m.logs.len() as u32)
            .filter(|&p| !m.logs[p as usize].is_empty())
            .collect();
        prop_assume!(!partitions.is_empty());
        let p = partitions[pick.index(partitions.len())];
        let log = &m.logs[p as usize];
        let record = ReadRecord { offset: log.len() as u64, value: log[pick.index(log.len())] };
        let fr = m.final_read(p);
        m.records_mut(fr).push(record);
        let r = check(&m.events);
        only(&r, AnomalyKind::Duplicate)?;
        prop_assert_eq!(&r.duplicate.ops[0].values, &vec![record.value]);
    }

    #[test]
    fn a_read_disagreeing_on_an_offset_is_inconsistent(
        mut m in model(),
        pick in any::<Index>(),
    ) {
        let polls = m.nonempty_polls();
        prop_assume!(!polls.is_empty());
        let at = polls[pick.index(polls.len())];
        let partition = m.events[at].op.partition();
        // A value that was invoked but whose outcome is unknown: reading it is no anomaly in
        // itself, so the only thing wrong is the disagreement.
        let value = m.next_value;
        m.next_value += 1;
        m.synthetic_produce(partition, value, EventType::Info);
        let records = m.records_mut(at);
        let k = pick.index(records.len());
        records[k].value = value;
        let offset = records[k].offset;
        let r = check(&m.events);
        only(&r, AnomalyKind::Inconsistent)?;
        prop_assert_eq!(&r.inconsistent.ops[0].offsets, &vec![offset]);
        prop_assert!(r.inconsistent.ops[0].values.contains(&value));
    }

    #[test]
    fn reading_a_failed_produce_is_aborted(mut m in model(), pick in any::<Index>()) {
        let failed: Vec<(u32, u64)> = m
            .events
            .iter()
            .filter_map(|e| match e.op {
                Op::Produce { partition, value, .. } if e.kind == EventType::Fail => {
                    Some((partition, value))
                }
                _ => None,
            })
            .collect();
        let (partition, value) = if failed.is_empty() {
            let value = m.next_value;
            m.next_value += 1;
            m.synthetic_produce(0, value, EventType::Fail);
            (0, value)
        } else {
            failed[pick.index(failed.len())]
        };
        let offset = m.logs[partition as usize].len() as u64;
        let fr = m.final_read(partition);
        m.records_mut(fr).push(ReadRecord { offset, value });
        let r = check(&m.events);
        only(&r, AnomalyKind::Aborted)?;
        prop_assert_eq!(&r.aborted.ops[0].values, &vec![value]);
    }

    #[test]
    fn a_poll_behind_an_earlier_acknowledgement_is_stale(
        mut m in model(),
        pick in any::<Index>(),
    ) {
        // (completion position, highest offset acknowledged before the poll was invoked)
        let mut candidates: Vec<(usize, u64)> = Vec::new();
        let mut acked: HashMap<u32, u64> = HashMap::new();
        let mut at_invoke: HashMap<u32, Option<u64>> = HashMap::new();
        for (i, e) in m.events.iter().enumerate() {
            match (&e.op, e.kind) {
                (Op::Produce { partition, offset: Some(o), .. }, EventType::Ok) => {
                    let max = acked.entry(*partition).or_insert(*o);
                    *max = (*max).max(*o);
                }
                (Op::Poll { partition, .. }, EventType::Invoke) => {
                    at_invoke.insert(e.process, acked.get(partition).copied());
                }
                (Op::Poll { from_offset, .. }, EventType::Ok) => {
                    if let Some(Some(max)) = at_invoke.get(&e.process)
                        && max >= from_offset
                    {
                        candidates.push((i, *max));
                    }
                }
                _ => {}
            }
        }
        prop_assume!(!candidates.is_empty());
        let (at, max) = candidates[pick.index(candidates.len())];
        if let Op::Poll { high_watermark, .. } = &mut m.events[at].op {
            *high_watermark = Some(max);
        }
        let r = check(&m.events);
        only(&r, AnomalyKind::Stale)?;
        prop_assert_eq!(r.stale.ops[0].events[2], at as u64);
        prop_assert!(r.is_valid(Guarantees::AP));
        prop_assert!(!r.is_valid(Guarantees::CP));
    }
}
