//! Partitions whose applied log start offset moved: the node's retention task purges their
//! logs as soon as each replica applies the move, instead of at its next round.
//!
//! Every replica applies a start move (a DeleteRecords entry) at the same log index; its log
//! can be purged behind the new start once a snapshot covers it. Asking for that snapshot only
//! at the next retention round left up to two check intervals of writes in every replica's
//! log (docs/benchmarks.md, "Disk use under retention"); a replica now notes the move when it
//! applies it, and the retention task asks at once.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// The groups whose start moved since the retention task last took them (a set: bounded by
/// the partitions the node holds), and a wake-up for that task.
#[derive(Debug, Default)]
pub struct StartMoves {
    moved: Mutex<BTreeSet<u64>>,
    wake: Notify,
}

impl StartMoves {
    /// Notes that `group`'s applied log start offset moved.
    pub fn note(&self, group: u64) {
        self.moved.lock().unwrap().insert(group);
        // A permit is kept if nobody waits: the next `next` returns at once.
        self.wake.notify_one();
    }

    /// Waits until some group's start moved, and takes every group noted since the last call.
    pub async fn next(&self) -> Vec<u64> {
        loop {
            let taken = std::mem::take(&mut *self.moved.lock().unwrap());
            if !taken.is_empty() {
                return taken.into_iter().collect();
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moves_noted_before_the_wait_are_taken_once_each() {
        let m = StartMoves::default();
        m.note(7);
        m.note(3);
        m.note(7);
        assert_eq!(m.next().await, vec![3, 7]);
        let waiting = tokio::spawn(async move {
            let m = std::sync::Arc::new(m);
            let w = m.clone();
            let t = tokio::spawn(async move { w.next().await });
            m.note(9);
            t.await.unwrap()
        });
        assert_eq!(waiting.await.unwrap(), vec![9]);
    }
}
