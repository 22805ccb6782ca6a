//! The compaction rules, over keyed produces (`crate::compaction`) in a history whose topic
//! compacts (a `compaction` operation set it).
//!
//! # What is known
//! - A record's *key* is the one its produce recorded. A record of key `k` at offset `o` of
//!   partition `p` is *superseded* when a record of the same key is known at a higher offset
//!   of `p`: acknowledged there, or observed there by any read (a produce whose outcome was
//!   unknown counts once read). Compaction may remove a superseded record and nothing else
//!   (tombstones aside, which the workload does not write); what it keeps keeps its offset.
//!
//! # Rules
//! - **compacted** (never a violation): an acknowledged keyed record that no final read
//!   returned (and that is not below a log start: the retention rules judge those),
//!   superseded. Without a final read of the partition, only if no read saw it either:
//!   compaction may remove a superseded record at any time, so polls may have skipped it.
//! - **compacted-latest**: such a record that is not superseded (the latest of its key), that
//!   the partition's `ok` final read did not return, yet some read had observed at its
//!   acknowledged offset: the latest value of a key is gone. A violation with durable
//!   acknowledgements (it was committed there). One that no read ever observed is **lost** or
//!   **unseen** by the general rules, as is any latest record without a final read.
//! - Polls of a compacting topic skip the removed offsets: a skip (a record above the offset
//!   expected) is counted as a compaction gap, not nonmonotonic; a rewind still is. A record
//!   read at another offset than its acknowledged one stays **lost**/**inconsistent**.

use std::collections::HashMap;

use super::{Anomaly, Checker, Seen, events_of};
use crate::history::EventType;

/// Per `(partition, key)`, the highest offset a record of the key is known at, and its value.
pub(super) fn latest_by_key(
    produces: &HashMap<u64, super::Produce>,
    reads: &HashMap<u64, Seen>,
) -> HashMap<(u32, u32), (u64, u64)> {
    let mut latest: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    let mut note = |partition: u32, key: u32, offset: u64, value: u64| {
        let e = latest.entry((partition, key)).or_insert((offset, value));
        if offset > e.0 {
            *e = (offset, value);
        }
    };
    for (&value, p) in produces {
        let Some(key) = p.key else { continue };
        if let (EventType::Ok, Some(o)) = (p.outcome, p.offset) {
            note(p.partition, key, o, value);
        }
        if let Some(s) = reads.get(&value) {
            let places = std::iter::once((s.partition, s.offset)).chain(
                s.more
                    .iter()
                    .map(|&(partition, offset, _)| (partition, offset)),
            );
            for (partition, offset) in places.filter(|&(part, _)| part == p.partition) {
                note(partition, key, offset, value);
            }
        }
    }
    latest
}

impl Checker {
    /// The compaction rules for acknowledged `value` (see the module doc); whether they
    /// judged it (else the general rules do).
    pub(super) fn compaction_fate(&mut self, value: u64, p: &super::Produce) -> bool {
        let (EventType::Ok, Some(o), Some(key)) = (p.outcome, p.offset, p.key) else {
            return false;
        };
        let partition = p.partition;
        let finally_read = self.touched.get(&partition).copied().unwrap_or(false);
        if !self.compacting || self.final_in_place.contains(&value) {
            return false;
        }
        // Without a final read, one read in place is read back, whatever came after.
        if !finally_read && self.acked_read_in_place.contains_key(&value) {
            return false;
        }
        let acked = p.completion.unwrap_or(p.invoke);
        match self.latest_key.get(&(partition, key)).copied() {
            Some((later, by)) if later > o => {
                self.out.totals.compaction.compacted += 1;
                self.out.compacted.push(|| Anomaly {
                    events: events_of(p),
                    partition,
                    offsets: vec![o, later],
                    values: vec![value, by],
                    explanation: format!(
                        "value {value} (key {key}) acknowledged at offset {o} of partition \
                         {partition} (event {acked}) is not in the final read: compacted, \
                         superseded by value {by} of the same key at offset {later}"
                    ),
                });
                true
            }
            _ if finally_read && self.acked_read_in_place.contains_key(&value) => {
                self.out.compacted_latest.push(|| Anomaly {
                    events: events_of(p),
                    partition,
                    offsets: vec![o],
                    values: vec![value],
                    explanation: format!(
                        "value {value} (key {key}) acknowledged at offset {o} of partition \
                         {partition} (event {acked}) was read there, is the latest record of \
                         its key, and is not in the final read: the latest value of a key is \
                         gone"
                    ),
                });
                true
            }
            _ => false,
        }
    }
}
