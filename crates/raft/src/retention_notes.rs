//! What a partition's apply tells the node's retention task, so that it acts at once rather
//! than at its next round:
//! - **moved**: applying an entry moved this replica's log start offset. Every replica applies
//!   a start move (a DeleteRecords entry) at the same log index; its log can be purged behind
//!   the new start once a snapshot covers it. Asking for that snapshot only at the next round
//!   left up to two check intervals of writes in every replica's log (docs/benchmarks.md,
//!   "Disk use under retention"); a replica now notes the move when it applies it.
//! - **grown**: on a leader, the applied records passed the position at which the partition
//!   holds more than its `retention_bytes` and slack (the trigger the retention task set,
//!   [`crate::partition_sm::PartitionShared::arm_size_trigger`]). Deciding by size only at the
//!   next round let a partition hold one check interval of writes over its limit (147 MB at
//!   the rate of the measurement); the leader now decides as soon as the limit is passed.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// The groups noted since the retention task last took them (sets: bounded by the partitions
/// the node holds), and a wake-up for that task.
#[derive(Debug, Default)]
pub struct RetentionNotes {
    noted: Mutex<Noted>,
    wake: Notify,
}

/// Groups noted since the last [`RetentionNotes::next`], each once, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Noted {
    /// Groups whose applied log start offset moved.
    pub moved: BTreeSet<u64>,
    /// Groups (this node leads) whose records passed their size trigger.
    pub grown: BTreeSet<u64>,
}

impl Noted {
    fn is_empty(&self) -> bool {
        self.moved.is_empty() && self.grown.is_empty()
    }
}

impl RetentionNotes {
    /// Notes that `group`'s applied log start offset moved.
    pub fn note_moved(&self, group: u64) {
        self.noted.lock().unwrap().moved.insert(group);
        // A permit is kept if nobody waits: the next `next` returns at once.
        self.wake.notify_one();
    }

    /// Notes that `group`'s records (appended or applied) passed its size trigger.
    pub fn note_grown(&self, group: u64) {
        self.noted.lock().unwrap().grown.insert(group);
        self.wake.notify_one();
    }

    /// Waits until some group was noted, and takes every group noted since the last call.
    pub async fn next(&self) -> Noted {
        loop {
            let taken = std::mem::take(&mut *self.noted.lock().unwrap());
            if !taken.is_empty() {
                return taken;
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn groups_noted_before_the_wait_are_taken_once_each() {
        let m = RetentionNotes::default();
        m.note_moved(7);
        m.note_moved(3);
        m.note_moved(7);
        m.note_grown(7);
        let got = m.next().await;
        assert_eq!(got.moved.into_iter().collect::<Vec<_>>(), vec![3, 7]);
        assert_eq!(got.grown.into_iter().collect::<Vec<_>>(), vec![7]);
        let waiting = tokio::spawn(async move {
            let m = std::sync::Arc::new(m);
            let w = m.clone();
            let t = tokio::spawn(async move { w.next().await });
            m.note_grown(9);
            t.await.unwrap()
        });
        let got = waiting.await.unwrap();
        assert!(got.moved.is_empty());
        assert_eq!(got.grown.into_iter().collect::<Vec<_>>(), vec![9]);
    }
}
