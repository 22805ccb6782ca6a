//! The workload model both tiers run, as far as it is pure: what an operation is (the
//! history's [`Op`]s, built here), how values are chosen (unique integers from 1, written as
//! their decimal text), how a producer picks partitions (its own seeded stream), which
//! process the final reader is, and when a final read is done.
//!
//! Each tier drives this with fjord's client against its cluster (`fjord-jepsen`: real
//! processes; `fjord-sim`: turmoil hosts) and records what happened in the history.
//!
//! What must hold: a value is produced at most once in a run (one [`Values`] per run); a
//! record whose bytes are not a value reads as [`NOT_A_VALUE`], which no produce writes, so
//! the checker calls it a phantom.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Instance, Op, ReadRecord};

/// What a record that does not hold a value reads as.
pub const NOT_A_VALUE: u64 = u64::MAX;

/// The process that does the final reads (apart from producers' and consumers' numbers).
pub const FINAL_READER: u32 = u32::MAX - 1;

/// The run's unique values, from 1, shared by its producers.
#[derive(Debug)]
pub struct Values(AtomicU64);

impl Default for Values {
    fn default() -> Self {
        Values(AtomicU64::new(1))
    }
}

impl Values {
    /// A value no one produced before in this run.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A value as a record's payload.
pub fn encode(value: u64) -> String {
    value.to_string()
}

/// A record's payload as a value; [`NOT_A_VALUE`] if it is not one.
pub fn decode(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(NOT_A_VALUE)
}

/// A record read back at `offset`.
pub fn read_record(offset: u64, payload: &[u8]) -> ReadRecord {
    ReadRecord {
        offset,
        value: decode(payload),
    }
}

/// The random stream of the producer numbered `stream` (each tier numbers its own), from
/// which it draws its partitions.
pub fn producer_rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ (stream << 32))
}

/// The partition a producer sends its next value to.
pub fn pick_partition(rng: &mut impl Rng, partitions: u32) -> u32 {
    rng.gen_range(0..partitions)
}

/// The invoke of a produce of `value` to `partition`, and its completion if not `ok`.
pub fn produce(partition: u32, value: u64) -> Op {
    produce_at(partition, value, None)
}

/// The `ok` completion of a produce acknowledged at `offset`.
pub fn produced(partition: u32, value: u64, offset: u64) -> Op {
    produced_at(partition, value, offset, None)
}

/// [`produce`] of a record the producer stamped with `timestamp_ms` (when `Some`).
pub fn produce_at(partition: u32, value: u64, timestamp_ms: Option<i64>) -> Op {
    Op::Produce {
        partition,
        value,
        offset: None,
        timestamp_ms,
        key: None,
    }
}

/// [`produced`] of a record the producer stamped with `timestamp_ms` (when `Some`).
pub fn produced_at(partition: u32, value: u64, offset: u64, timestamp_ms: Option<i64>) -> Op {
    Op::Produce {
        partition,
        value,
        offset: Some(offset),
        timestamp_ms,
        key: None,
    }
}

/// The invoke of a poll of `partition` from `from_offset`, and its completion if not `ok`.
pub fn poll(partition: u32, from_offset: u64) -> Op {
    Op::Poll {
        partition,
        from_offset,
        records: vec![],
        high_watermark: None,
        node: None,
        log_start_offset: None,
    }
}

/// The `ok` completion of a poll: what `node` answered.
pub fn polled(
    partition: u32,
    from_offset: u64,
    records: Vec<ReadRecord>,
    high_watermark: u64,
    node: u64,
) -> Op {
    Op::Poll {
        partition,
        from_offset,
        records,
        high_watermark: Some(high_watermark),
        node: Some(node),
        log_start_offset: None,
    }
}

/// [`polled`], with the log start offset the answer reported.
pub fn polled_from(
    partition: u32,
    from_offset: u64,
    records: Vec<ReadRecord>,
    (high_watermark, log_start_offset): (u64, u64),
    node: u64,
) -> Op {
    Op::Poll {
        partition,
        from_offset,
        records,
        high_watermark: Some(high_watermark),
        node: Some(node),
        log_start_offset: Some(log_start_offset),
    }
}

/// Where a reader goes on from `at` after an answer that reported the log start `start`:
/// to the start when `at` fell below it (its records were deleted), else nowhere else.
pub fn past_log_start(at: u64, start: u64) -> u64 {
    at.max(start)
}

/// Where a consumer that polled from `from` goes on: after the last record the answer held
/// (`last_read`), or from `from` again when it held none; then past the log start the answer
/// reported. Not where the answer said to go on (`next_offset`), unless compaction may have
/// removed offsets (`compacting`): a server that skipped records in its answer must then show
/// the gap in the next poll, which the checker's order rule judges; a consumer that took its
/// word would count it as a seek.
pub fn next_poll_from(
    from: u64,
    last_read: Option<u64>,
    next_offset: u64,
    log_start: u64,
    compacting: bool,
) -> u64 {
    let at = match (compacting, last_read) {
        (true, _) => next_offset,
        (false, Some(last)) => last.saturating_add(1),
        (false, None) => from,
    };
    past_log_start(at, log_start)
}

/// A final read of one partition in progress: from its log start (0 unless told otherwise)
/// to the high watermark of the latest answer. The invoke is [`FinalRead::invoke`], the `ok`
/// completion [`FinalRead::into_op`] once [`FinalRead::absorb`] said it is done.
#[derive(Debug, Clone)]
pub struct FinalRead {
    partition: u32,
    records: Vec<ReadRecord>,
    next: u64,
    /// The highest log start offset seen, when the tier reports them.
    log_start: Option<u64>,
}

impl FinalRead {
    pub fn new(partition: u32) -> FinalRead {
        FinalRead {
            partition,
            records: Vec::new(),
            next: 0,
            log_start: None,
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The invoke (and a completion that is not `ok`).
    pub fn invoke(&self) -> Op {
        Op::FinalRead {
            partition: self.partition,
            records: vec![],
            log_start_offset: None,
        }
    }

    /// The offset to ask for next.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// An answer (or a `ListOffsets`) reported the log start `start`: remembered, and the
    /// read goes on from it if it had fallen below (the records in between were deleted).
    pub fn log_start(&mut self, start: u64) {
        self.log_start = Some(self.log_start.map_or(start, |s| s.max(start)));
        self.next = past_log_start(self.next, start);
    }

    /// Takes one answer: its records, the offset it says to ask next, and its high
    /// watermark. True when the read has reached that high watermark.
    pub fn absorb(
        &mut self,
        records: impl IntoIterator<Item = ReadRecord>,
        next_offset: u64,
        high_watermark: u64,
    ) -> bool {
        self.records.extend(records);
        self.next = next_offset;
        self.next >= high_watermark
    }

    /// The `ok` completion: every record read.
    pub fn into_op(self) -> Op {
        Op::FinalRead {
            partition: self.partition,
            records: self.records,
            log_start_offset: self.log_start,
        }
    }
}

/// The fencing workload: a process writes as a named producer, and every
/// [`FENCING_ROTATE_EVERY`] writes starts a new instance of the name (which fences the one
/// before). Its next `2 × FENCING_ZOMBIE_WRITES` writes alternate between the new instance
/// (first) and the fenced one, a zombie that goes on writing as a paused or cut-off process
/// would; then the new instance writes alone. The checker's `zombie` rule judges the result.
pub const FENCING_ROTATE_EVERY: u64 = 20;
/// Writes the fenced instance attempts after each rotation.
pub const FENCING_ZOMBIE_WRITES: u64 = 3;

/// Which instance of its name a fencing process's write goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The newest instance.
    Current,
    /// The instance the newest one fenced.
    Zombie,
}

/// For a fencing process's `n`-th write (from 0): whether to start a new instance first, and
/// which instance writes.
pub fn fencing_step(n: u64) -> (bool, Writer) {
    let rotate = n > 0 && n.is_multiple_of(FENCING_ROTATE_EVERY);
    let k = n % FENCING_ROTATE_EVERY;
    let writer = if n >= FENCING_ROTATE_EVERY && k < 2 * FENCING_ZOMBIE_WRITES && k % 2 == 1 {
        Writer::Zombie
    } else {
        Writer::Current
    };
    (rotate, writer)
}

/// A fencing process's instances of its name (`P`: the tier's producer handle) and its count
/// of writes: which instance writes next, and when a new one must be started.
#[derive(Debug)]
pub struct FencingInstances<P> {
    name: u32,
    current: Option<(P, u16)>,
    zombie: Option<(P, u16)>,
    writes: u64,
}

impl<P> FencingInstances<P> {
    pub fn new(name: u32) -> Self {
        FencingInstances {
            name,
            current: None,
            zombie: None,
            writes: 0,
        }
    }

    /// Whether a new instance must be started before the next write.
    pub fn needs_new(&self) -> bool {
        self.current.is_none() || fencing_step(self.writes).0
    }

    /// A new instance at `epoch` was started: the current one becomes the zombie.
    pub fn started(&mut self, producer: P, epoch: u16) {
        self.zombie = self.current.replace((producer, epoch));
    }

    /// The instance the next write goes through, and what to record it as; counts the write.
    /// `None` until an instance was started.
    pub fn next_writer(&mut self) -> Option<(&P, Instance)> {
        let (_, writer) = fencing_step(self.writes);
        let chosen = match (writer, &self.zombie) {
            (Writer::Zombie, Some(z)) => Some(z),
            _ => self.current.as_ref(),
        };
        let (producer, epoch) = chosen?;
        self.writes += 1;
        let instance = Instance {
            name: self.name,
            epoch: *epoch,
        };
        Some((producer, instance))
    }

    /// Every instance still held: the newest and the zombie.
    pub fn all(&self) -> impl Iterator<Item = &P> {
        self.current
            .iter()
            .chain(self.zombie.iter())
            .map(|(p, _)| p)
    }
}

/// The producer name of the run's fencing process number `name`.
pub fn fencing_name(name: u32) -> String {
    format!("jepsen-fencing-{name}")
}

/// The random stream a fencing process draws its partitions from (apart from producers').
pub fn fencing_rng(seed: u64, name: u32) -> StdRng {
    producer_rng(seed, (1 << 24) | u64::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_instances_hand_the_writes_to_the_new_instance_and_its_zombie_in_turn() {
        let mut f = FencingInstances::new(4);
        assert!(f.needs_new());
        assert!(f.next_writer().is_none(), "no instance yet");
        f.started("a", 0);
        for _ in 0..FENCING_ROTATE_EVERY {
            assert!(!f.needs_new());
            let (p, i) = f.next_writer().unwrap();
            assert_eq!((*p, i), ("a", Instance { name: 4, epoch: 0 }));
        }
        assert!(f.needs_new(), "every 20 writes a new instance");
        f.started("b", 1);
        let writers: Vec<&str> = (0..7).map(|_| *f.next_writer().unwrap().0).collect();
        assert_eq!(writers, ["b", "a", "b", "a", "b", "a", "b"]);
        assert_eq!(f.all().copied().collect::<Vec<_>>(), ["b", "a"]);
    }

    #[test]
    fn a_fencing_process_rotates_then_lets_the_zombie_write_between_the_new_ones() {
        let steps: Vec<(bool, Writer)> = (0..FENCING_ROTATE_EVERY + 8).map(fencing_step).collect();
        assert!(
            steps[..FENCING_ROTATE_EVERY as usize]
                .iter()
                .all(|s| *s == (false, Writer::Current))
        );
        use Writer::*;
        let after: Vec<(bool, Writer)> = steps[FENCING_ROTATE_EVERY as usize..].to_vec();
        assert_eq!(
            after,
            [
                (true, Current),
                (false, Zombie),
                (false, Current),
                (false, Zombie),
                (false, Current),
                (false, Zombie),
                (false, Current),
                (false, Current)
            ]
        );
    }

    #[test]
    fn values_are_unique_and_round_trip_through_a_payload() {
        let values = Values::default();
        let (a, b) = (values.next(), values.next());
        assert_eq!((a, b), (1, 2));
        assert_eq!(decode(encode(b).as_bytes()), b);
        assert_eq!(decode(b"w0.1"), NOT_A_VALUE);
    }

    #[test]
    fn a_consumer_goes_on_after_what_it_read_not_where_the_answer_said() {
        // Records 0 and 1 read, the answer claiming the next is 4: the next poll asks for 2,
        // so that a server skipping 2 and 3 shows it to the checker.
        assert_eq!(next_poll_from(0, Some(1), 4, 0, false), 2);
        // Nothing read: the same offset again, past a log start that moved.
        assert_eq!(next_poll_from(2, None, 9, 0, false), 2);
        assert_eq!(next_poll_from(2, None, 9, 5, false), 5);
        // Compaction removes offsets: the answer's word is taken.
        assert_eq!(next_poll_from(0, Some(1), 4, 0, true), 4);
    }

    #[test]
    fn a_final_read_ends_at_the_latest_high_watermark() {
        let mut read = FinalRead::new(2);
        assert!(!read.absorb([read_record(0, b"7")], 1, 3));
        assert_eq!(read.next_offset(), 1);
        assert!(read.absorb([read_record(1, b"8"), read_record(2, b"9")], 3, 3));
        match read.into_op() {
            Op::FinalRead {
                partition,
                records,
                log_start_offset,
            } => {
                assert_eq!((partition, log_start_offset), (2, None));
                assert_eq!(
                    records.iter().map(|r| r.value).collect::<Vec<_>>(),
                    [7, 8, 9]
                );
            }
            op => panic!("{op:?}"),
        }
    }

    #[test]
    fn a_final_read_goes_on_from_a_log_start_that_passed_it() {
        let mut read = FinalRead::new(0);
        read.log_start(5);
        assert_eq!(read.next_offset(), 5);
        assert!(!read.absorb([read_record(5, b"1"), read_record(6, b"2")], 7, 20));
        // Deleted meanwhile up to 10: the read skips ahead; a lower start later changes nothing.
        read.log_start(10);
        read.log_start(8);
        assert_eq!(read.next_offset(), 10);
        assert!(read.absorb([read_record(10, b"3")], 11, 11));
        match read.into_op() {
            Op::FinalRead {
                records,
                log_start_offset,
                ..
            } => {
                assert_eq!(records.len(), 3);
                assert_eq!(log_start_offset, Some(10));
            }
            op => panic!("{op:?}"),
        }
    }

    #[test]
    fn a_producer_stream_is_a_function_of_the_seed_and_its_number() {
        let draw = |seed, stream| {
            let mut rng = producer_rng(seed, stream);
            (0..20)
                .map(|_| pick_partition(&mut rng, 3))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5, 1), draw(5, 1));
        assert_ne!(draw(5, 1), draw(5, 2));
    }
}
