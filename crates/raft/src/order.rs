//! Proposal order by producer sequence, on a partition's leader.
//!
//! A producer keeps several batches of a partition in flight, and the server handles its
//! produce requests concurrently (one task per HTTP/2 stream), so a batch can reach Raft
//! before the one sent just ahead of it; the partition rules then refuse it for a sequence
//! gap and the client sends it again. To make that rare, a batch whose base sequence is
//! ahead of the next one this node proposed for its producer waits, at most
//! [`MAX_ORDER_WAIT`], for the batches before it to be proposed.
//!
//! This is an optimisation, never a rule: correctness comes from the partition rules and the
//! client's sequences. A batch that waited in vain (its predecessor went to another node, or
//! was lost) is proposed anyway, and the partition rules decide as before. The state is
//! per node and starts empty on a new leader, where the first batches pass unordered.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Longest a batch waits for the batches before it to be proposed.
pub const MAX_ORDER_WAIT: Duration = Duration::from_millis(50);
/// Producers tracked per partition; beyond it the one proposed least recently is forgotten
/// (its next batch then passes unordered).
pub const MAX_TRACKED_PRODUCERS: usize = 10_000;

/// Whether a batch may be proposed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Now,
    /// An earlier batch of the producer has not been proposed here yet.
    Wait,
}

/// The next sequence this node proposed per producer (pure).
#[derive(Debug, Default)]
pub struct SequenceOrder {
    /// Producer id → (next sequence, proposal counter at its last proposal).
    next: HashMap<u64, (u32, u64)>,
    proposals: u64,
}

impl SequenceOrder {
    /// Whether a batch of `producer_id` starting at `base_sequence` may be proposed now: it
    /// may unless it is ahead of the producer's next sequence. Non-idempotent batches
    /// (producer 0), unknown producers, retries and re-sends never wait.
    pub fn turn(&self, producer_id: u64, base_sequence: u32) -> Turn {
        match self.next.get(&producer_id) {
            Some(&(next, _)) if producer_id != 0 && base_sequence > next => Turn::Wait,
            _ => Turn::Now,
        }
    }

    /// Notes that the batch was proposed.
    pub fn proposed(&mut self, producer_id: u64, base_sequence: u32, record_count: u32) {
        if producer_id == 0 {
            return;
        }
        self.proposals += 1;
        let Some(end) = base_sequence.checked_add(record_count) else {
            // The producer's sequences are used up; its client moves to a new id.
            self.next.remove(&producer_id);
            return;
        };
        if !self.next.contains_key(&producer_id) && self.next.len() >= MAX_TRACKED_PRODUCERS {
            let idlest = self
                .next
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(pid, _)| *pid);
            if let Some(pid) = idlest {
                self.next.remove(&pid);
            }
        }
        let entry = self.next.entry(producer_id).or_insert((end, 0));
        // A retry of an earlier batch does not move the producer back.
        entry.0 = entry.0.max(end);
        entry.1 = self.proposals;
        debug_assert!(self.next.len() <= MAX_TRACKED_PRODUCERS);
    }
}

/// [`SequenceOrder`] shared by a partition's produce requests, with a way to wait.
#[derive(Debug)]
pub struct ProposalOrder {
    /// A std mutex: every access is a map lookup or update, never across an await.
    order: Mutex<SequenceOrder>,
    /// Bumped after each proposal, to wake waiters.
    proposed: watch::Sender<u64>,
}

impl Default for ProposalOrder {
    fn default() -> Self {
        ProposalOrder {
            order: Mutex::default(),
            proposed: watch::channel(0).0,
        }
    }
}

impl ProposalOrder {
    /// Waits until the batch's turn, or [`MAX_ORDER_WAIT`].
    pub async fn wait_turn(&self, producer_id: u64, base_sequence: u32) {
        let deadline = Instant::now() + MAX_ORDER_WAIT;
        // Subscribed before the check, so a proposal after it is not missed.
        let mut proposals = self.proposed.subscribe();
        loop {
            let turn = self
                .order
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .turn(producer_id, base_sequence);
            if turn == Turn::Now {
                return;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, proposals.changed()).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }

    /// Notes that the batch was handed to Raft, letting the next one go.
    pub fn proposed(&self, producer_id: u64, base_sequence: u32, record_count: u32) {
        if producer_id == 0 {
            return;
        }
        self.order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .proposed(producer_id, base_sequence, record_count);
        self.proposed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn only_a_batch_ahead_of_its_producer_waits() {
        let mut o = SequenceOrder::default();
        assert_eq!(o.turn(7, 10), Turn::Now, "an unknown producer passes");
        assert_eq!(o.turn(0, 10), Turn::Now, "so does a non-idempotent batch");
        o.proposed(7, 0, 4);
        assert_eq!(o.turn(7, 4), Turn::Now, "its turn");
        assert_eq!(o.turn(7, 6), Turn::Wait, "ahead: 4..6 not proposed yet");
        assert_eq!(o.turn(7, 0), Turn::Now, "a retry");
        o.proposed(7, 4, 2);
        assert_eq!(o.turn(7, 6), Turn::Now);
        // A late retry of the first batch does not move the producer back.
        o.proposed(7, 0, 4);
        assert_eq!(o.turn(7, 6), Turn::Now);
        assert_eq!(o.turn(8, 6), Turn::Now, "producers are independent");
        o.proposed(7, u32::MAX - 1, 5);
        assert_eq!(
            o.turn(7, 100),
            Turn::Now,
            "forgotten when sequences run out"
        );
    }

    #[test]
    fn producers_tracked_are_bounded_and_the_idlest_goes() {
        let mut o = SequenceOrder::default();
        for pid in 1..=MAX_TRACKED_PRODUCERS as u64 {
            o.proposed(pid, 0, 1);
        }
        o.proposed(1, 1, 1);
        o.proposed(u64::MAX, 0, 1);
        assert_eq!(o.next.len(), MAX_TRACKED_PRODUCERS);
        assert_eq!(o.turn(1, 5), Turn::Wait, "recently used: kept");
        assert_eq!(o.turn(2, 5), Turn::Now, "idlest: forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_batch_goes_once_its_predecessor_is_proposed() {
        let order = Arc::new(ProposalOrder::default());
        order.proposed(7, 0, 1);
        let started = Instant::now();
        let waiter = tokio::spawn({
            let order = Arc::clone(&order);
            async move { order.wait_turn(7, 2).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "sequence 1 is not proposed yet");
        order.proposed(7, 1, 1);
        waiter.await.unwrap();
        assert!(started.elapsed() < MAX_ORDER_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_predecessor_never_comes_waits_a_bounded_time() {
        let order = ProposalOrder::default();
        order.proposed(7, 0, 1);
        let started = Instant::now();
        order.wait_turn(7, 5).await;
        assert_eq!(started.elapsed(), MAX_ORDER_WAIT);
        // Another producer's proposals do not release it early either, nor hold it longer.
        let started = Instant::now();
        let wait = order.wait_turn(7, 5);
        tokio::pin!(wait);
        tokio::select! {
            _ = &mut wait => panic!("released early"),
            _ = tokio::time::sleep(MAX_ORDER_WAIT / 2) => order.proposed(8, 0, 1),
        }
        wait.await;
        assert_eq!(started.elapsed(), MAX_ORDER_WAIT);
    }
}
