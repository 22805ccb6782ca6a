//! AP writes a leader takes while no majority answers it: the minority side of a network
//! partition.
//!
//! openraft's leader refuses every write once its lease has lapsed (no quorum acknowledged it
//! for one lease), so a leader cut off with a minority could take no AP write at all, and AP's
//! promise (available wherever a leader is) would not hold. Such a leader instead holds the AP
//! batches it is sent, in order, in memory ([`SideQueue`]), and acknowledges each at the offset
//! the partition rules predict for it after its log's last entry. When a majority answers it
//! again *in the same term*, it proposes them, in order, before any other write: its log has not
//! changed meanwhile (it still leads, nothing else was proposed), so each gets the offset it was
//! acknowledged with. If the term moved on (another leader was elected, or it restarted), they
//! are discarded: that is the loss AP allows, and the fault harness counts it. Kafka's `acks=1`
//! does the same to writes a leader took after it was cut off: they are truncated on rejoin.
//!
//! The queue is bounded ([`MAX_SIDE_BATCHES`], [`MAX_SIDE_BYTES`]); beyond it AP writes are
//! refused as busy. While it holds batches, CP writes are refused (they would overtake them).
//!
//! The decisions are pure: [`SideQueue::push`] decides a batch's outcome, [`decide`] what the
//! drain does next. [`crate::handle::PartitionHandle`] performs them.

use std::collections::VecDeque;

use fjord_storage::partition::{Outcome, PartitionState};

use crate::StoredBatch;

/// AP batches a leader without a majority holds per partition, at most.
pub const MAX_SIDE_BATCHES: usize = 16_384;
/// Bytes of records a leader without a majority holds per partition, at most.
pub const MAX_SIDE_BYTES: usize = 64 << 20;

/// Why a batch could not be held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this leader reaches no majority and already holds {batches} AP batches ({bytes} bytes) for \
     the partition, the limit being {MAX_SIDE_BATCHES} batches and {MAX_SIDE_BYTES} bytes: retry \
     once the partition heals"
)]
pub struct SideFull {
    pub batches: usize,
    pub bytes: usize,
}

/// The AP batches a leader holds while no majority answers it.
#[derive(Debug, Default)]
pub struct SideQueue {
    /// The term the batches were taken in, as its leader; `None`: inactive.
    term: Option<u64>,
    /// The partition rules' state after the last held batch.
    state: PartitionState,
    queue: VecDeque<StoredBatch>,
    bytes: usize,
    /// A drain is running.
    pub(crate) draining: bool,
}

/// What the drain does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// Nothing is held: stop, the queue is inactive again.
    Done,
    /// This node still leads in the term the batches were taken in: propose them.
    Propose,
    /// The term moved on: the batches can no longer get the offsets they were acknowledged
    /// with. Drop them.
    Discard,
    /// Not leading right now, in the same term (a restarting instance): look again later.
    Wait,
}

/// The drain's next step, from what is held and how this replica sees the group: the term it
/// leads in (if it leads) and its current term.
pub fn decide(held: usize, taken_in: Option<u64>, leading_in: Option<u64>, term: u64) -> DrainStep {
    let Some(taken_in) = taken_in else {
        return DrainStep::Done;
    };
    if held == 0 {
        return DrainStep::Done;
    }
    if term > taken_in || leading_in.is_some_and(|t| t != taken_in) {
        return DrainStep::Discard;
    }
    if leading_in == Some(taken_in) {
        DrainStep::Propose
    } else {
        DrainStep::Wait
    }
}

impl SideQueue {
    /// Whether batches are held (or being proposed): AP writes join the queue, CP writes wait.
    pub fn active(&self) -> bool {
        self.term.is_some()
    }

    /// Starts holding batches, taken as leader of `term`, after a log whose rules' state is
    /// `state`.
    pub fn enter(&mut self, term: u64, state: PartitionState) {
        self.term = Some(term);
        self.state = state;
        self.queue.clear();
        self.bytes = 0;
    }

    /// Decides `batch`'s outcome after the held ones, and holds it if it is appended.
    pub fn push(&mut self, batch: StoredBatch) -> Result<Outcome, SideFull> {
        let header = batch.header();
        let size = batch.records.len();
        let mut probe = self.state.clone();
        let outcome = probe.apply(&header);
        if let Outcome::Appended { .. } = outcome {
            if self.queue.len() >= MAX_SIDE_BATCHES || self.bytes + size > MAX_SIDE_BYTES {
                return Err(SideFull {
                    batches: self.queue.len(),
                    bytes: self.bytes,
                });
            }
            self.queue.push_back(batch);
            self.bytes += size;
        }
        self.state = probe;
        Ok(outcome)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// The first `n` held batches, to propose (they stay held until [`SideQueue::proposed`]).
    pub fn front(&self, n: usize) -> Vec<StoredBatch> {
        self.queue.iter().take(n).cloned().collect()
    }

    /// The first `n` held batches are in the log now.
    pub fn proposed(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(b) = self.queue.pop_front() {
                self.bytes -= b.records.len();
            }
        }
    }

    /// Stops holding: every held batch is dropped. Returns `(batches, records)` dropped.
    pub fn leave(&mut self) -> (usize, u64) {
        let dropped = (
            self.queue.len(),
            self.queue.iter().map(|b| b.record_count as u64).sum(),
        );
        self.term = None;
        self.queue.clear();
        self.bytes = 0;
        self.state = PartitionState::default();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(producer_id: u64, base_sequence: u32, count: u32) -> StoredBatch {
        StoredBatch {
            token: 0,
            producer_id,
            producer_epoch: 0,
            base_sequence,
            record_count: count,
            crc32c: 0,
            append_time_ms: 0,
            max_timestamp_ms: 0,
            records: Bytes::from(vec![0u8; 10]),
            compaction: None,
        }
    }

    #[test]
    fn held_batches_get_the_offsets_after_the_log() {
        let mut log = PartitionState::default();
        log.apply(&batch(7, 0, 3).header());
        let mut side = SideQueue::default();
        side.enter(4, log);
        assert_eq!(
            side.push(batch(7, 3, 2)),
            Ok(Outcome::Appended { base_offset: 3 })
        );
        assert_eq!(
            side.push(batch(0, 0, 1)),
            Ok(Outcome::Appended { base_offset: 5 })
        );
        // A retry of a batch in the log or in the queue is a duplicate, not held twice.
        assert_eq!(
            side.push(batch(7, 0, 3)),
            Ok(Outcome::Duplicate { base_offset: 0 })
        );
        assert_eq!(
            side.push(batch(7, 3, 2)),
            Ok(Outcome::Duplicate { base_offset: 3 })
        );
        assert_eq!(
            side.push(batch(7, 9, 1)),
            Ok(Outcome::OutOfOrder {
                expected: 5,
                got: 9
            })
        );
        assert_eq!(side.len(), 2);
        side.proposed(1);
        assert_eq!(side.front(5).len(), 1);
        assert_eq!(side.leave(), (1, 1));
        assert!(!side.active());
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut side = SideQueue::default();
        side.enter(1, PartitionState::default());
        for i in 0..MAX_SIDE_BATCHES {
            side.push(batch(0, 0, 1))
                .unwrap_or_else(|e| panic!("{i}: {e}"));
        }
        let e = side.push(batch(0, 0, 1)).unwrap_err();
        assert_eq!(e.batches, MAX_SIDE_BATCHES);
        // A refused batch takes no offset: the next one after a drain gets the next offset.
        side.proposed(1);
        assert_eq!(
            side.push(batch(0, 0, 1)),
            Ok(Outcome::Appended {
                base_offset: MAX_SIDE_BATCHES as u64
            })
        );
    }

    #[test]
    fn the_drain_proposes_only_in_the_term_the_batches_were_taken_in() {
        assert_eq!(decide(0, Some(3), Some(3), 3), DrainStep::Done);
        assert_eq!(decide(5, None, Some(3), 3), DrainStep::Done);
        assert_eq!(decide(5, Some(3), Some(3), 3), DrainStep::Propose);
        // Deposed: a newer term, led by another node or by nobody yet.
        assert_eq!(decide(5, Some(3), None, 4), DrainStep::Discard);
        // Elected again in a later term: the log may hold another leader's entries.
        assert_eq!(decide(5, Some(3), Some(5), 5), DrainStep::Discard);
        // Same term, not leading at this instant (a hibernated instance restarting).
        assert_eq!(decide(5, Some(3), None, 3), DrainStep::Wait);
    }
}
