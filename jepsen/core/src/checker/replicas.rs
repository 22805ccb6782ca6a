//! The replicas' own copies against the final read (**replica-diverged**, a violation in
//! every mode): once the run healed and the final reads are done, each replica of each
//! partition is read on its own (AP fetches asked of that node alone). A record a replica
//! holds must be the final read's record at that offset, and a replica must hold every record
//! of the final read between its own log start and its own high watermark: a replica that
//! kept other records (a wiped or restored directory, a bit flip taken for data, a snapshot
//! installed over a divergent tail) is a log that would serve them as soon as it led, or to
//! any AP reader. Only the part both cover is compared: above the final read's log start
//! (retention may have moved it since), below both ends. Runs with compaction record no
//! replica reads (replicas may still be compacting, with more records than the leader).

use std::collections::BTreeMap;

use crate::history::{Op, Operation};

use super::{Anomaly, CheckResult};

/// What the final read of a partition showed: its log start and each offset's value.
struct Final {
    event: u64,
    start: u64,
    end: u64,
    values: BTreeMap<u64, u64>,
}

pub(super) fn check(operations: &[Operation<'_>], out: &mut CheckResult) {
    let mut finals: BTreeMap<u32, Final> = BTreeMap::new();
    for op in operations {
        if let (
            &Op::FinalRead { partition, .. },
            Some(Op::FinalRead {
                records,
                log_start_offset,
                ..
            }),
        ) = (
            &op.invoke.op,
            op.completion
                .filter(|c| c.kind == crate::history::EventType::Ok)
                .map(|c| &c.op),
        ) {
            let start = log_start_offset.unwrap_or(0);
            finals.insert(
                partition,
                Final {
                    event: op.completion.map_or(op.invoke.index, |c| c.index),
                    start,
                    end: records.last().map_or(start, |r| r.offset.saturating_add(1)),
                    values: records.iter().map(|r| (r.offset, r.value)).collect(),
                },
            );
        }
    }
    for op in operations {
        let Some(done) = op
            .completion
            .filter(|c| c.kind == crate::history::EventType::Ok)
        else {
            continue;
        };
        let Op::ReplicaRead {
            partition,
            node,
            log_start_offset,
            high_watermark,
            records,
        } = &done.op
        else {
            continue;
        };
        let Some(f) = finals.get(partition) else {
            continue;
        };
        let from = f.start.max(*log_start_offset);
        let to = f.end.min(*high_watermark);
        if from >= to {
            // Nothing both cover (a replica behind the final read's start, an emptied log).
            continue;
        }
        let held: BTreeMap<u64, u64> = records
            .iter()
            .filter(|r| r.offset >= from && r.offset < to)
            .map(|r| (r.offset, r.value))
            .collect();
        let mut wrong: Vec<(u64, Option<u64>, Option<u64>)> = Vec::new();
        for (&offset, &value) in &held {
            let leader = f.values.get(&offset).copied();
            if leader != Some(value) {
                wrong.push((offset, Some(value), leader));
            }
        }
        for (&offset, &value) in f.values.range(from..to) {
            if !held.contains_key(&offset) {
                wrong.push((offset, None, Some(value)));
            }
        }
        if wrong.is_empty() {
            continue;
        }
        wrong.sort_unstable();
        let (offset, replica, leader) = wrong[0];
        let show = |v: Option<u64>| v.map_or("nothing".to_string(), |v| format!("value {v}"));
        out.replica_diverged.push(|| Anomaly {
            events: vec![f.event, done.index],
            partition: *partition,
            offsets: wrong
                .iter()
                .take(super::MAX_VALUES_PER_ANOMALY)
                .map(|w| w.0)
                .collect(),
            values: [replica, leader].into_iter().flatten().collect(),
            explanation: format!(
                "node {node}'s own copy of partition {partition} differs from the final read \
                 at {} offset(s) within [{from}, {to}); first at offset {offset}: the replica \
                 holds {}, the final read {}",
                wrong.len(),
                show(replica),
                show(leader)
            ),
        });
    }
}
