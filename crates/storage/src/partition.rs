//! The rules of a partition log, as a pure state machine: offset assignment and idempotent
//! producer de-duplication.
//!
//! Every replica applies the same committed batches in the same order, so every replica
//! assigns the same offsets and takes the same de-duplication decisions. The leader also runs
//! these rules over its own uncommitted log tail to predict the outcome of a batch when it
//! acknowledges before commit (AP mode): its log is never truncated while it leads, so the
//! prediction is what commit will decide.
//!
//! What must hold ([`PartitionState::validate`]): offsets are dense and increasing (a batch of
//! n records takes `next_offset..next_offset + n`, a duplicate or refused batch takes none);
//! a producer's retained batches are in increasing sequence and offset order.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Batches remembered per producer, so that a retry of any of the last few in-flight batches
/// is recognised (Kafka keeps 5).
pub const RETAINED_BATCHES_PER_PRODUCER: usize = 5;
/// Producers remembered per partition; beyond it the one idle longest is forgotten.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// What the rules need to know of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// 0 for a producer that is not idempotent.
    pub producer_id: u64,
    pub base_sequence: u32,
    pub record_count: u32,
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Appended: its records have offsets `base_offset..base_offset + record_count`.
    Appended { base_offset: u64 },
    /// A retry of a batch already appended at `base_offset`; not appended again.
    Duplicate { base_offset: u64 },
    /// Refused: the producer's next batch must start at sequence `expected`.
    OutOfOrder { expected: u32, got: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenBatch {
    base_sequence: u32,
    record_count: u32,
    base_offset: u64,
}

/// The committed (or, on a leader, predicted) state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The offset the next appended record gets (the high watermark once committed).
    pub next_offset: u64,
    producers: BTreeMap<u64, VecDeque<SeenBatch>>,
}

impl PartitionState {
    /// Decides what happens to `batch` and updates the state accordingly.
    pub fn apply(&mut self, batch: &BatchHeader) -> Outcome {
        let outcome = self.decide(batch);
        if let Outcome::Appended { base_offset } = outcome {
            self.next_offset = base_offset + batch.record_count as u64;
            if batch.producer_id != 0 {
                if !self.producers.contains_key(&batch.producer_id)
                    && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
                {
                    self.evict_idlest();
                }
                let seen = self.producers.entry(batch.producer_id).or_default();
                if seen.len() == RETAINED_BATCHES_PER_PRODUCER {
                    seen.pop_front();
                }
                seen.push_back(SeenBatch {
                    base_sequence: batch.base_sequence,
                    record_count: batch.record_count,
                    base_offset,
                });
            }
        }
        debug_assert_eq!(self.validate(), Ok(()));
        outcome
    }

    fn decide(&self, batch: &BatchHeader) -> Outcome {
        let append = Outcome::Appended {
            base_offset: self.next_offset,
        };
        if batch.producer_id == 0 {
            return append;
        }
        let Some(seen) = self.producers.get(&batch.producer_id) else {
            // A producer this partition does not know (new, or forgotten): accept its batch.
            return append;
        };
        if let Some(dup) = seen.iter().find(|s| {
            s.base_sequence == batch.base_sequence && s.record_count == batch.record_count
        }) {
            return Outcome::Duplicate {
                base_offset: dup.base_offset,
            };
        }
        let last = seen.back().expect("a known producer has a batch");
        let expected = last.base_sequence.wrapping_add(last.record_count);
        if batch.base_sequence == expected {
            append
        } else {
            Outcome::OutOfOrder {
                expected,
                got: batch.base_sequence,
            }
        }
    }

    fn evict_idlest(&mut self) {
        let idlest = self
            .producers
            .iter()
            .min_by_key(|(pid, seen)| (seen.back().map_or(0, |s| s.base_offset), **pid))
            .map(|(pid, _)| *pid);
        if let Some(pid) = idlest {
            self.producers.remove(&pid);
        }
    }

    /// Producers currently remembered.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Checks the invariants; one error per broken fact.
    pub fn validate(&self) -> Result<(), Broken> {
        if self.producers.len() > MAX_PRODUCERS_PER_PARTITION {
            return Err(Broken::TooManyProducers {
                retained: self.producers.len(),
            });
        }
        for (pid, seen) in &self.producers {
            if seen.is_empty() || seen.len() > RETAINED_BATCHES_PER_PRODUCER {
                return Err(Broken::RetainedBatches {
                    producer_id: *pid,
                    retained: seen.len(),
                });
            }
            for w in seen.iter().collect::<Vec<_>>().windows(2) {
                if w[1].base_offset < w[0].base_offset + w[0].record_count as u64 {
                    return Err(Broken::OffsetsNotIncreasing { producer_id: *pid });
                }
            }
            let last = seen.back().unwrap();
            if last.base_offset + last.record_count as u64 > self.next_offset {
                return Err(Broken::BeyondNextOffset {
                    producer_id: *pid,
                    next_offset: self.next_offset,
                });
            }
        }
        Ok(())
    }
}

/// A broken invariant of [`PartitionState`] (a bug), one fact each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("{retained} producers retained, limit {MAX_PRODUCERS_PER_PARTITION}")]
    TooManyProducers { retained: usize },
    #[error("producer {producer_id} retains {retained} batches")]
    RetainedBatches { producer_id: u64, retained: usize },
    #[error("producer {producer_id}: batch offsets not increasing")]
    OffsetsNotIncreasing { producer_id: u64 },
    #[error("producer {producer_id}: batch beyond next_offset {next_offset}")]
    BeyondNextOffset { producer_id: u64, next_offset: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(pid: u64, seq: u32, n: u32) -> BatchHeader {
        BatchHeader {
            producer_id: pid,
            base_sequence: seq,
            record_count: n,
        }
    }

    #[test]
    fn offsets_are_dense_and_retries_are_duplicates() {
        let mut s = PartitionState::default();
        assert_eq!(s.apply(&b(1, 0, 3)), Outcome::Appended { base_offset: 0 });
        assert_eq!(s.apply(&b(0, 0, 2)), Outcome::Appended { base_offset: 3 });
        assert_eq!(s.apply(&b(1, 3, 1)), Outcome::Appended { base_offset: 5 });
        // Retry of the first batch after a timeout: same offsets, nothing appended.
        assert_eq!(s.apply(&b(1, 0, 3)), Outcome::Duplicate { base_offset: 0 });
        assert_eq!(s.apply(&b(1, 3, 1)), Outcome::Duplicate { base_offset: 5 });
        assert_eq!(s.next_offset, 6);
        // A gap in the sequence is refused.
        assert_eq!(
            s.apply(&b(1, 9, 1)),
            Outcome::OutOfOrder {
                expected: 4,
                got: 9
            }
        );
        assert_eq!(s.next_offset, 6);
    }

    #[test]
    fn producers_are_bounded() {
        let mut s = PartitionState::default();
        for pid in 1..=(MAX_PRODUCERS_PER_PARTITION as u64 + 10) {
            s.apply(&b(pid, 0, 1));
        }
        assert_eq!(s.producer_count(), MAX_PRODUCERS_PER_PARTITION);
        // The oldest producers were forgotten, the newest kept.
        assert_eq!(
            s.apply(&b(MAX_PRODUCERS_PER_PARTITION as u64 + 10, 0, 1)),
            Outcome::Duplicate {
                base_offset: MAX_PRODUCERS_PER_PARTITION as u64 + 9
            }
        );
    }

    proptest! {
        /// A model: each producer sends batches in sequence, any of which may be retried any
        /// number of times in any interleaving (but each batch is first sent in order). Every
        /// record must get exactly one offset, offsets dense, retries answered with the
        /// original offset.
        #[test]
        fn retries_never_duplicate(ops in proptest::collection::vec((1u64..4, 1u32..4, any::<bool>(), 0usize..3), 1..200)) {
            let mut s = PartitionState::default();
            let mut next_seq: BTreeMap<u64, u32> = BTreeMap::new();
            let mut sent: BTreeMap<u64, Vec<(u32, u32, u64)>> = BTreeMap::new();
            let mut appended_records = 0u64;
            for (pid, n, retry, back) in ops {
                let hist = sent.entry(pid).or_default();
                if retry && !hist.is_empty() {
                    let back = back.min(hist.len() - 1);
                    let (seq, count, off) = hist[hist.len() - 1 - back];
                    prop_assert_eq!(s.apply(&b(pid, seq, count)), Outcome::Duplicate { base_offset: off });
                } else {
                    let seq = *next_seq.get(&pid).unwrap_or(&0);
                    let out = s.apply(&b(pid, seq, n));
                    prop_assert_eq!(out, Outcome::Appended { base_offset: appended_records });
                    hist.push((seq, n, appended_records));
                    appended_records += n as u64;
                    next_seq.insert(pid, seq + n);
                }
                prop_assert_eq!(s.next_offset, appended_records);
            }
        }
    }
}
