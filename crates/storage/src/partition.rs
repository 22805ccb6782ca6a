//! The rules of a partition log, as a pure state machine: offset assignment, idempotent
//! producer de-duplication, and the fencing of producers by epoch.
//!
//! Every replica applies the same committed batches in the same order, so every replica
//! assigns the same offsets and takes the same de-duplication decisions. The leader also runs
//! these rules over its own uncommitted log tail to predict the outcome of a batch when it
//! acknowledges before commit (AP mode): its log is never truncated while it leads, so the
//! prediction is what commit will decide.
//!
//! # The rules, for a batch of an idempotent producer (id ≠ 0)
//! 1. A producer this partition does not know (new, or forgotten) is accepted at any
//!    sequence, and its epoch is remembered.
//! 2. A batch of an **older epoch** than the producer's latest here is *fenced*: a newer
//!    instance of the same named producer has written to this partition (Kafka's
//!    `InvalidProducerEpoch`/`ProducerFenced`). Nothing of it is appended.
//! 3. A batch of a **newer epoch** starts the producer afresh: it must start at sequence 0,
//!    and the older epoch's batches are forgotten (a retry of one is fenced by rule 2).
//! 4. Within an epoch, a batch whose `(base sequence, record count)` matches one of the
//!    producer's last [`RETAINED_BATCHES_PER_PRODUCER`] batches is a *duplicate* (answered with
//!    the original offset) if its records are the same (same CRC-32C), and *refused* if they
//!    are not: two writers sharing a producer id, whose second batch must not be mistaken for a
//!    retry and silently dropped.
//! 5. Else a batch at the producer's next sequence is appended, any other is *out of order*.
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
    /// The producer's epoch: 0 for an unnamed producer; a named producer's grows each time it
    /// is initialised again.
    pub producer_epoch: u16,
    pub base_sequence: u32,
    pub record_count: u32,
    /// CRC-32C of the batch's records: tells a retry (same records) from another writer's
    /// batch under the same producer id and sequence.
    pub crc32c: u32,
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
    /// Refused: the batch's epoch is older than `current`, the producer's latest epoch here.
    Fenced { epoch: u16, current: u16 },
    /// Refused: the producer's batch at this sequence, appended at `base_offset`, holds other
    /// records.
    SequenceReused {
        base_sequence: u32,
        base_offset: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenBatch {
    base_sequence: u32,
    record_count: u32,
    base_offset: u64,
    /// `None` for a batch remembered from a checkpoint written before CRCs were kept: it is
    /// recognised by its sequence alone.
    crc32c: Option<u32>,
}

/// What a partition remembers of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: u16,
    /// Its latest batches, oldest first; never empty.
    batches: VecDeque<SeenBatch>,
}

/// The committed (or, on a leader, predicted) state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The offset the next appended record gets (the high watermark once committed).
    pub next_offset: u64,
    producers: BTreeMap<u64, ProducerEntry>,
    /// The first offset still readable: raised by retention and DeleteRecords (a replicated
    /// [`PartitionState::delete_before`]), never above `next_offset`, never lowered.
    pub log_start_offset: u64,
    /// Record bytes appended since the partition began: the position the next batch starts at.
    /// Retention by size compares positions (as Kafka compares segment file positions).
    pub next_position: u64,
    /// The largest record timestamp appended so far (Kafka's time index: it only grows, so a
    /// search by time is monotonic even when producers' clocks disagree). `None` before the
    /// first batch, and for a log written before timestamps were indexed.
    pub max_timestamp_ms: Option<i64>,
}

/// Where an appended batch sits in the partition, beyond its offsets: what the batch index
/// and the time index record of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The record bytes appended before it.
    pub position: u64,
    /// `Some(ts)` when the batch raised the partition's largest timestamp to `ts`: the time
    /// index gains `ts → base offset`.
    pub raised_time: Option<i64>,
}

/// [`PartitionState`] as checkpoints written before retention encode it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStateV2 {
    next_offset: u64,
    producers: BTreeMap<u64, ProducerEntry>,
}

impl PartitionStateV2 {
    /// The state, with its log start at 0, its position at `next_position` (what the batch
    /// index knew) and no timestamp seen.
    pub fn upgrade(self, next_position: u64) -> PartitionState {
        PartitionState {
            next_offset: self.next_offset,
            producers: self.producers,
            next_position,
            ..PartitionState::default()
        }
    }
}

/// [`PartitionState`] as checkpoints written before producer epochs encode it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStateV1 {
    next_offset: u64,
    producers: BTreeMap<u64, VecDeque<SeenBatchV1>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenBatchV1 {
    base_sequence: u32,
    record_count: u32,
    base_offset: u64,
}

impl From<PartitionStateV1> for PartitionState {
    fn from(v: PartitionStateV1) -> Self {
        PartitionState {
            next_offset: v.next_offset,
            producers: v
                .producers
                .into_iter()
                .map(|(pid, seen)| {
                    let batches = seen
                        .into_iter()
                        .map(|s| SeenBatch {
                            base_sequence: s.base_sequence,
                            record_count: s.record_count,
                            base_offset: s.base_offset,
                            crc32c: None,
                        })
                        .collect();
                    (pid, ProducerEntry { epoch: 0, batches })
                })
                .collect(),
            ..PartitionState::default()
        }
    }
}

impl PartitionState {
    /// Decides what happens to `batch` and updates the state accordingly.
    pub fn apply(&mut self, batch: &BatchHeader) -> Outcome {
        let outcome = self.decide(batch);
        if let Outcome::Appended { base_offset } = outcome {
            self.next_offset = base_offset + batch.record_count as u64;
            if batch.producer_id != 0 {
                self.remember(batch, base_offset);
            }
        }
        debug_assert_eq!(self.validate(), Ok(()));
        outcome
    }

    /// Records where an appended batch of `record_bytes` bytes whose largest record timestamp
    /// is `max_timestamp_ms` sits; call right after [`PartitionState::apply`] answered
    /// `Appended` for it.
    pub fn place(&mut self, record_bytes: u64, max_timestamp_ms: i64) -> Placement {
        let position = self.next_position;
        self.next_position += record_bytes;
        let raised = self.max_timestamp_ms.is_none_or(|m| max_timestamp_ms > m);
        if raised {
            self.max_timestamp_ms = Some(max_timestamp_ms);
        }
        Placement {
            position,
            raised_time: raised.then_some(max_timestamp_ms),
        }
    }

    /// Moves the log start offset up to `offset` (clamped to `next_offset`; a start already
    /// past it stays). Returns the log start offset after.
    pub fn delete_before(&mut self, offset: u64) -> u64 {
        self.log_start_offset = self.log_start_offset.max(offset.min(self.next_offset));
        self.log_start_offset
    }

    /// [`PartitionState::delete_before`], only if the position has reached `min_position`
    /// (a move decided by counting appends that may not have come to pass); else nothing.
    /// Returns the log start offset after.
    pub fn delete_before_at(&mut self, offset: u64, min_position: u64) -> u64 {
        if self.next_position >= min_position {
            self.delete_before(offset);
        }
        self.log_start_offset
    }

    fn remember(&mut self, batch: &BatchHeader, base_offset: u64) {
        if !self.producers.contains_key(&batch.producer_id)
            && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
        {
            self.evict_idlest();
        }
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.producer_epoch,
                batches: VecDeque::new(),
            });
        if batch.producer_epoch != entry.epoch {
            // Rule 3: a newer epoch starts afresh (an older one never gets here).
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == RETAINED_BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(SeenBatch {
            base_sequence: batch.base_sequence,
            record_count: batch.record_count,
            base_offset,
            crc32c: Some(batch.crc32c),
        });
    }

    fn decide(&self, batch: &BatchHeader) -> Outcome {
        let append = Outcome::Appended {
            base_offset: self.next_offset,
        };
        if batch.producer_id == 0 {
            return append;
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // Rule 1: a producer this partition does not know (new, or forgotten).
            return append;
        };
        if batch.producer_epoch < entry.epoch {
            return Outcome::Fenced {
                epoch: batch.producer_epoch,
                current: entry.epoch,
            };
        }
        if batch.producer_epoch > entry.epoch {
            return if batch.base_sequence == 0 {
                append
            } else {
                Outcome::OutOfOrder {
                    expected: 0,
                    got: batch.base_sequence,
                }
            };
        }
        if let Some(same) = entry.batches.iter().find(|s| {
            s.base_sequence == batch.base_sequence && s.record_count == batch.record_count
        }) {
            return match same.crc32c {
                Some(crc) if crc != batch.crc32c => Outcome::SequenceReused {
                    base_sequence: batch.base_sequence,
                    base_offset: same.base_offset,
                },
                _ => Outcome::Duplicate {
                    base_offset: same.base_offset,
                },
            };
        }
        let last = entry.batches.back().expect("a known producer has a batch");
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
            .min_by_key(|(pid, e)| (e.batches.back().map_or(0, |s| s.base_offset), **pid))
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
        if self.log_start_offset > self.next_offset {
            return Err(Broken::StartBeyondEnd {
                log_start_offset: self.log_start_offset,
                next_offset: self.next_offset,
            });
        }
        if self.producers.len() > MAX_PRODUCERS_PER_PARTITION {
            return Err(Broken::TooManyProducers {
                retained: self.producers.len(),
            });
        }
        for (pid, entry) in &self.producers {
            let seen = &entry.batches;
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
    #[error("log start offset {log_start_offset} beyond next_offset {next_offset}")]
    StartBeyondEnd {
        log_start_offset: u64,
        next_offset: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A batch of epoch 0 whose records are the same whenever it is sent again.
    fn b(pid: u64, seq: u32, n: u32) -> BatchHeader {
        e(pid, 0, seq, n)
    }

    fn e(pid: u64, epoch: u16, seq: u32, n: u32) -> BatchHeader {
        BatchHeader {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: n,
            crc32c: (pid as u32) ^ seq.rotate_left(8) ^ n.rotate_left(20) ^ u32::from(epoch),
        }
    }

    #[test]
    fn an_older_epoch_is_fenced_once_a_newer_one_wrote() {
        let mut s = PartitionState::default();
        assert_eq!(
            s.apply(&e(7, 0, 0, 2)),
            Outcome::Appended { base_offset: 0 }
        );
        // The zombie keeps writing until its successor reaches the partition.
        assert_eq!(
            s.apply(&e(7, 0, 2, 1)),
            Outcome::Appended { base_offset: 2 }
        );
        // The successor (epoch 1) starts at sequence 0 ...
        assert_eq!(
            s.apply(&e(7, 1, 5, 1)),
            Outcome::OutOfOrder {
                expected: 0,
                got: 5
            }
        );
        assert_eq!(
            s.apply(&e(7, 1, 0, 1)),
            Outcome::Appended { base_offset: 3 }
        );
        // ... and from then on the zombie is refused, new batches and retries alike.
        assert_eq!(
            s.apply(&e(7, 0, 3, 1)),
            Outcome::Fenced {
                epoch: 0,
                current: 1
            }
        );
        assert_eq!(
            s.apply(&e(7, 0, 0, 2)),
            Outcome::Fenced {
                epoch: 0,
                current: 1
            }
        );
        assert_eq!(
            s.apply(&e(7, 1, 0, 1)),
            Outcome::Duplicate { base_offset: 3 }
        );
        assert_eq!(
            s.apply(&e(7, 1, 1, 1)),
            Outcome::Appended { base_offset: 4 }
        );
        assert_eq!(s.next_offset, 5);
    }

    #[test]
    fn another_writers_batch_under_the_same_sequence_is_refused_not_dropped() {
        // Regression: two writers sharing a producer id (a copied id) had the second one's
        // batch answered as a duplicate of the first, and its records silently dropped.
        let mut s = PartitionState::default();
        assert_eq!(s.apply(&b(3, 0, 2)), Outcome::Appended { base_offset: 0 });
        let mut other = b(3, 0, 2);
        other.crc32c ^= 1;
        assert_eq!(
            s.apply(&other),
            Outcome::SequenceReused {
                base_sequence: 0,
                base_offset: 0
            }
        );
        assert_eq!(s.apply(&b(3, 0, 2)), Outcome::Duplicate { base_offset: 0 });
        assert_eq!(s.next_offset, 2);
    }

    #[test]
    fn a_checkpoint_from_before_epochs_still_recognises_retries() {
        let mut v1 = PartitionStateV1 {
            next_offset: 4,
            ..Default::default()
        };
        v1.producers.insert(
            9,
            VecDeque::from([SeenBatchV1 {
                base_sequence: 0,
                record_count: 4,
                base_offset: 0,
            }]),
        );
        let mut s = PartitionState::from(v1);
        assert_eq!(s.validate(), Ok(()));
        // Its CRC was not kept: recognised by the sequence alone, as before.
        assert_eq!(s.apply(&b(9, 0, 4)), Outcome::Duplicate { base_offset: 0 });
        assert_eq!(s.apply(&b(9, 4, 1)), Outcome::Appended { base_offset: 4 });
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
