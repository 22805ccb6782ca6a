//! The load of a benchmark: producers that send records and time their acknowledgements,
//! consumers that read records and time fetches or stamped records, and the [`Counters`]
//! they share with the progress line and the report.
//!
//! What must hold: a record is counted once, when acknowledged (produced) or received within
//! the consumers' target (consumed); the first error stops the run; every queue is bounded
//! (deliveries awaited per producer: [`MAX_UNAWAITED_DELIVERIES`]; fetches at once:
//! [`MAX_CONCURRENT_FETCHES`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use fjord_client::{
    Client, ClientError, Consumer, Delivery, FetchOptions, Producer, ProducerConfig,
    ProducerRecord, ReadMode, StartFrom,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::{ProduceArgs, StoppedBy};

/// Bytes at the start of every `e2e` value: a magic, the run's id and the send time.
pub const STAMP_BYTES: usize = 16;

/// Bytes at the start of every value with `--index-values`: the record's index in the run,
/// in decimal, zero-padded (u64::MAX has 20 digits).
pub const INDEX_VALUE_BYTES: usize = 20;
const STAMP_MAGIC: [u8; 4] = *b"FJBE";
/// Deliveries one producer awaits at once (its own budgets bound them too).
pub const MAX_UNAWAITED_DELIVERIES: usize = 100_000;
/// Fetches in flight at once, whatever the partition count.
pub const MAX_CONCURRENT_FETCHES: usize = 16;

/// Microseconds since the Unix epoch by the wall clock (comparable across processes).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Marks the values of one `e2e` run with their send time, so its consumers time them and
/// skip anything else in the topic.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    run: u32,
}

impl Stamp {
    pub fn new() -> Self {
        Stamp {
            run: rand::random(),
        }
    }

    fn encode(&self, sent_micros: u64) -> [u8; STAMP_BYTES] {
        let mut b = [0u8; STAMP_BYTES];
        b[..4].copy_from_slice(&STAMP_MAGIC);
        b[4..8].copy_from_slice(&self.run.to_le_bytes());
        b[8..].copy_from_slice(&sent_micros.to_le_bytes());
        b
    }

    /// The send time of a value stamped by this run.
    fn decode(&self, value: &[u8]) -> Option<u64> {
        let head = value.get(..STAMP_BYTES)?;
        (head[..4] == STAMP_MAGIC && head[4..8] == self.run.to_le_bytes())
            .then(|| u64::from_le_bytes(head[8..].try_into().expect("8 bytes")))
    }
}

/// What producers and consumers did, and whether (and why) they must stop.
#[derive(Debug, Default)]
pub struct Counters {
    produced: Arc<AtomicU64>,
    produced_bytes: AtomicU64,
    consumed: Arc<AtomicU64>,
    consumed_bytes: AtomicU64,
    errors: AtomicU64,
    /// Consumers stop once they counted this many records.
    target: AtomicU64,
    /// The first reason to stop, as `StoppedBy as u8 + 1`; 0 while running.
    reason: AtomicU8,
    producing_stopped: AtomicBool,
    consuming_stopped: AtomicBool,
}

impl Counters {
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }
    pub fn produced_bytes(&self) -> u64 {
        self.produced_bytes.load(Ordering::Relaxed)
    }
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }
    pub fn consumed_bytes(&self) -> u64 {
        self.consumed_bytes.load(Ordering::Relaxed)
    }
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    pub fn produced_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.produced)
    }
    pub fn consumed_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.consumed)
    }
    pub fn set_target(&self, records: u64) {
        self.target.store(records, Ordering::Relaxed);
    }

    pub fn stopped_by(&self) -> Option<StoppedBy> {
        match self.reason.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(StoppedBy::Count),
            2 => Some(StoppedBy::Time),
            3 => Some(StoppedBy::Signal),
            _ => Some(StoppedBy::Error),
        }
    }

    fn note_reason(&self, why: StoppedBy) {
        let code = match why {
            StoppedBy::Count => 1,
            StoppedBy::Time => 2,
            StoppedBy::Signal => 3,
            StoppedBy::Error => 4,
        };
        // The first reason is the one reported.
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Stops producers and consumers.
    pub fn stop(&self, why: StoppedBy) {
        self.note_reason(why);
        self.producing_stopped.store(true, Ordering::Relaxed);
        self.consuming_stopped.store(true, Ordering::Relaxed);
    }

    /// Stops producers only; consumers go on to their target.
    pub fn stop_producing(&self, why: StoppedBy) {
        self.note_reason(why);
        self.producing_stopped.store(true, Ordering::Relaxed);
    }

    pub fn fail(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.stop(StoppedBy::Error);
    }

    /// Counts received records, given their value sizes, within the target; returns how
    /// many were counted (the first ones).
    pub fn count_consumed(&self, sizes: &[u64]) -> u64 {
        let counted = self.claim_consumed(sizes.len() as u64);
        let bytes: u64 = sizes[..counted as usize].iter().sum();
        self.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
        counted
    }

    /// The consumers' target, in records.
    pub fn target(&self) -> u64 {
        self.target.load(Ordering::Relaxed)
    }

    /// Counts up to `n` received records within the target; returns how many were counted.
    fn claim_consumed(&self, n: u64) -> u64 {
        let target = self.target.load(Ordering::Relaxed);
        let before = self
            .consumed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(n).min(target.max(c)))
            })
            .expect("the update always succeeds");
        before.saturating_add(n).min(target.max(before)) - before
    }

    pub fn consumers_done(&self) -> bool {
        self.consuming_stopped.load(Ordering::Relaxed)
            || self.consumed() >= self.target.load(Ordering::Relaxed)
    }
}

/// Producers sending `records` records between them.
pub struct ProduceLoad {
    client: Client,
    topic: String,
    config: ProducerConfig,
    records: u64,
    filler: Bytes,
    keys: Option<u64>,
    index_values: bool,
    index_base: u64,
    partition: Option<u32>,
    producers: u64,
    one_at_a_time: bool,
    stamp: Option<Stamp>,
}

impl ProduceLoad {
    pub fn new(
        client: &Client,
        topic: &str,
        args: &ProduceArgs,
        config: ProducerConfig,
        records: u64,
        one_at_a_time: bool,
        stamp: Option<Stamp>,
    ) -> Self {
        ProduceLoad {
            client: client.clone(),
            topic: topic.to_string(),
            config,
            records,
            filler: Bytes::from(vec![b'x'; args.record_size as usize]),
            keys: args.keys,
            index_values: args.index_values,
            index_base: args.index_base,
            partition: args.partition,
            producers: args.producers,
            one_at_a_time,
            stamp,
        }
    }

    /// The `i`-th record of the run (its index: `i` from --index-base on).
    fn record(&self, i: u64) -> ProducerRecord {
        let i = self.index_base.saturating_add(i);
        let value = match self.stamp {
            Some(stamp) => {
                let mut v = BytesMut::with_capacity(self.filler.len());
                v.extend_from_slice(&stamp.encode(now_micros()));
                v.extend_from_slice(&self.filler[STAMP_BYTES..]);
                v.freeze()
            }
            None if self.index_values => {
                let mut v = BytesMut::with_capacity(self.filler.len());
                v.extend_from_slice(format!("{i:0w$}", w = INDEX_VALUE_BYTES).as_bytes());
                v.extend_from_slice(&self.filler[INDEX_VALUE_BYTES.min(self.filler.len())..]);
                v.freeze()
            }
            None => self.filler.clone(),
        };
        let mut record = ProducerRecord::new(value);
        record.key = self.keys.map(|n| Bytes::from(format!("key-{}", i % n)));
        record.partition = self.partition;
        record
    }

    /// Runs the producers until every record is acknowledged or the run stops; returns the
    /// acknowledgement latencies (µs), or the first error.
    pub async fn run(self, counters: Arc<Counters>) -> anyhow::Result<Histogram> {
        let load = Arc::new(self);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..load.producers {
            let producer = load
                .client
                .producer(load.topic.clone(), load.config.clone())?;
            let (load, next, counters) =
                (Arc::clone(&load), Arc::clone(&next), Arc::clone(&counters));
            tasks.spawn(async move {
                if load.one_at_a_time {
                    one_at_a_time(&load, producer, &next, &counters).await
                } else {
                    pipelined(&load, producer, &next, &counters).await
                }
            });
        }
        let mut latencies = Histogram::default();
        let mut first_error: Option<anyhow::Error> = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((h, error)) => {
                    latencies.merge(&h);
                    if let Some(e) = error {
                        first_error.get_or_insert(e.into());
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(anyhow::anyhow!("a producer task failed: {e}"));
                }
            }
        }
        if counters.produced() >= load.records {
            counters.stop_producing(StoppedBy::Count);
        }
        match first_error {
            Some(e) => Err(e).context("a record was not written"),
            None => Ok(latencies),
        }
    }
}

/// The next record index, unless the run is over.
fn claim(load: &ProduceLoad, next: &AtomicU64, counters: &Counters) -> Option<u64> {
    if counters.producing_stopped.load(Ordering::Relaxed) {
        return None;
    }
    let i = next.fetch_add(1, Ordering::Relaxed);
    (i < load.records).then_some(i)
}

/// One producer sending a record at a time.
async fn one_at_a_time(
    load: &ProduceLoad,
    producer: Producer,
    next: &AtomicU64,
    counters: &Counters,
) -> (Histogram, Option<ClientError>) {
    let mut latencies = Histogram::default();
    while let Some(i) = claim(load, next, counters) {
        let record = load.record(i);
        let size = record.value.len() as u64;
        let sent = Instant::now();
        match producer.send(record).await {
            Ok(_) => {
                latencies.record(micros(sent.elapsed()));
                counters.produced_bytes.fetch_add(size, Ordering::Relaxed);
                counters.produced.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.fail();
                return (latencies, Some(e));
            }
        }
    }
    (latencies, None)
}

/// One producer enqueueing records as fast as its budgets allow, while a second loop
/// awaits the deliveries and times each from its send call.
async fn pipelined(
    load: &ProduceLoad,
    producer: Producer,
    next: &AtomicU64,
    counters: &Counters,
) -> (Histogram, Option<ClientError>) {
    let (tx, mut rx) = mpsc::channel::<(Instant, u64, Delivery)>(MAX_UNAWAITED_DELIVERIES);
    let send = async {
        let tx = tx;
        while let Some(i) = claim(load, next, counters) {
            let record = load.record(i);
            let size = record.value.len() as u64;
            let sent = Instant::now();
            match producer.enqueue(record).await {
                Ok(d) => {
                    if tx.send((sent, size, d)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    counters.fail();
                    return Some(e);
                }
            }
        }
        drop(tx);
        // Send the last batches now rather than after their linger.
        producer.flush().await;
        None
    };
    let collect = async {
        let mut latencies = Histogram::default();
        let mut error = None;
        let mut pending = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                queued = rx.recv(), if open => match queued {
                    Some((sent, size, d)) => pending.push(async move {
                        let result = d.await;
                        (sent.elapsed(), size, result)
                    }),
                    None => open = false,
                },
                Some((took, size, result)) = pending.next(), if !pending.is_empty() => match result {
                    Ok(_) => {
                        latencies.record(micros(took));
                        counters.produced_bytes.fetch_add(size, Ordering::Relaxed);
                        counters.produced.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counters.fail();
                        error.get_or_insert(e);
                    }
                },
                else => break,
            }
        }
        (latencies, error)
    };
    let (send_error, (latencies, ack_error)) = tokio::join!(send, collect);
    (latencies, send_error.or(ack_error))
}

/// Each partition's `(partition, log start, high watermark)`, asked of the leader when known
/// (an AP read beyond the end answers at once with the bounds).
pub async fn partition_bounds(
    client: &Client,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<Vec<(u32, u64, u64)>> {
    let probe = FetchOptions {
        max_bytes: 1,
        max_wait_ms: 0,
        read: ReadMode::Ap,
    };
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let r = client
            .fetch(topic, p, u64::MAX, probe)
            .await
            .with_context(|| format!("cannot read the bounds of partition {p} of {topic:?}"))?;
        out.push((p, r.log_start_offset, r.high_watermark));
    }
    Ok(out)
}

/// Reads `partitions` (each from its start up to its end, when it has one) until the
/// consumers' target is reached or the run stops. Without `stamp`, returns fetch latencies
/// (µs) and counts every record; with it, counts and times only this run's stamped records.
pub async fn consume(
    client: &Client,
    topic: &str,
    partitions: Vec<(u32, StartFrom, Option<u64>)>,
    options: FetchOptions,
    stamp: Option<Stamp>,
    counters: Arc<Counters>,
) -> anyhow::Result<Histogram> {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_FETCHES));
    let mut tasks = JoinSet::new();
    for (p, start, end) in partitions {
        let consumer = client.consumer(topic, p, start, options);
        let (counters, slots) = (Arc::clone(&counters), Arc::clone(&slots));
        tasks.spawn(async move {
            consume_partition(consumer, end, stamp, &counters, &slots)
                .await
                .with_context(|| format!("cannot read partition {p}"))
        });
    }
    let mut latencies = Histogram::default();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(h)) => latencies.merge(&h),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("a consumer task failed: {e}"));
            }
        }
    }
    if counters.consumed() >= counters.target.load(Ordering::Relaxed) {
        counters.stop(StoppedBy::Count);
    }
    first_error.map_or(Ok(latencies), Err)
}

async fn consume_partition(
    mut consumer: Consumer,
    end: Option<u64>,
    stamp: Option<Stamp>,
    counters: &Counters,
    slots: &Semaphore,
) -> Result<Histogram, ClientError> {
    let mut latencies = Histogram::default();
    while !counters.consumers_done() {
        if let (Some(end), Some(position)) = (end, consumer.position())
            && position >= end
        {
            break;
        }
        let (took, polled) = {
            let _slot = slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let started = Instant::now();
            let polled = consumer.poll().await;
            (started.elapsed(), polled)
        };
        let records = match polled {
            Ok(records) => records,
            // The client already retried with backoff; an election or a restart ends.
            Err(e) if e.is_retryable() => continue,
            Err(e) => {
                counters.fail();
                return Err(e);
            }
        };
        if stamp.is_none() && !records.is_empty() {
            latencies.record(micros(took));
        }
        let received = now_micros();
        let mut wanted = Vec::with_capacity(records.len());
        for r in &records {
            if end.is_some_and(|e| r.offset >= e) {
                break;
            }
            match stamp {
                Some(s) => {
                    if let Some(sent) = s.decode(&r.value) {
                        wanted.push((r.value.len() as u64, Some(received.saturating_sub(sent))));
                    }
                }
                None => wanted.push((r.value.len() as u64, None)),
            }
        }
        let counted = counters.claim_consumed(wanted.len() as u64) as usize;
        for (size, latency) in &wanted[..counted] {
            counters.consumed_bytes.fetch_add(*size, Ordering::Relaxed);
            if let Some(us) = latency {
                latencies.record(*us);
            }
        }
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_ignore_other_runs() {
        let a = Stamp { run: 1 };
        let b = Stamp { run: 2 };
        let mut value = a.encode(1_700_000_000_123_456).to_vec();
        value.extend_from_slice(b"payload");
        assert_eq!(a.decode(&value), Some(1_700_000_000_123_456));
        assert_eq!(b.decode(&value), None);
        assert_eq!(a.decode(&value[..STAMP_BYTES - 1]), None);
        assert_eq!(a.decode(b"FJBE but not a stamp of this run"), None);
    }

    #[test]
    fn consumers_count_up_to_their_target_once() {
        let c = Counters::default();
        c.set_target(10);
        assert_eq!(c.claim_consumed(4), 4);
        assert_eq!(c.claim_consumed(4), 4);
        assert_eq!(c.claim_consumed(4), 2, "only what fits");
        assert_eq!(c.claim_consumed(4), 0);
        assert_eq!(c.consumed(), 10);
        assert!(c.consumers_done());
    }

    #[test]
    fn the_first_reason_to_stop_is_reported() {
        let c = Counters::default();
        assert_eq!(c.stopped_by(), None);
        c.stop_producing(StoppedBy::Time);
        assert!(!c.consuming_stopped.load(Ordering::Relaxed));
        c.stop(StoppedBy::Signal);
        assert_eq!(c.stopped_by(), Some(StoppedBy::Time));
        assert!(c.consuming_stopped.load(Ordering::Relaxed));
    }
}
