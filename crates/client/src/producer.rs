//! The producer: partition choice, per-partition batching and idempotent delivery.
//!
//! # Flow
//! [`Producer::enqueue`] reserves room in the producer's two budgets (records and bytes; it
//! waits while they are spent), picks the partition (explicit, else the key's murmur2 hash,
//! else a sticky round-robin one) and hands the record to that partition's task through a
//! bounded queue. Each partition task owns an `Accumulator` and the partition's window of
//! batches in flight ([`crate::sequencer`]): it cuts a batch when it is full or has lingered
//! `linger_ms` (and the window has room), sends up to `max_in_flight_batches` batches at
//! once, and completes every record's [`Delivery`] in order. Budget is returned when a
//! record's batch is acknowledged or has failed.
//!
//! # What must hold
//! - Batches of a partition are appended in the order their records were enqueued, and
//!   acknowledged in that order at increasing offsets, however many are in flight (a batch
//!   that failed with an unknown outcome may land late, after later batches).
//! - Every attempt of a batch carries the same producer id and base sequence, so a retry
//!   after a timeout or a leader change is answered as a duplicate, never appended twice. A
//!   batch goes under a fresh producer id only when no attempt of it can still be appended
//!   (the sequencer's rule 8).
//! - A partition's batches take consecutive sequences; a batch that may have been appended
//!   but was given up on (or that was refused as out of order with nothing before it in
//!   flight) moves the partition to a fresh producer id, so later batches are never refused
//!   because of a gap the client cannot know about.
//! - Records, bytes, queues, batches and batches in flight are all bounded (see
//!   [`crate::config`]).
//! - A batch refused because the leader's disk is low on space fails at once with
//!   [`ClientError::DiskFull`] (nothing written; not retried, so a producer does not spin
//!   against a full disk): the caller sends its records again later.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fjord_proto::partitioner::partition_for_key;
use fjord_proto::v1;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use prost::Message;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::{Client, Route, request};
use crate::config::ProducerConfig;
use crate::error::ClientError;
use crate::sequencer::{Action, BatchId, Sequencer};

/// Capacity of each partition task's queue, in commands. The producer's record and byte
/// budgets bound memory; this only bounds how far a partition's queue runs ahead.
pub const PARTITION_QUEUE_CAPACITY: usize = 4_096;
/// Bytes a record adds to a batch body beyond its own encoding: its field tag (1 byte) and
/// length prefix (at most 5 bytes for lengths under 32 GiB).
const RECORD_FRAMING_BYTES: usize = 6;
/// How far away "never" is for the linger timer of an empty accumulator.
const IDLE_WAKE: Duration = Duration::from_secs(3_600);

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Records with the same key go to the same partition (unless `partition` is set).
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch; 0 lets the server set its append time.
    pub timestamp_ms: i64,
    /// Sends to this partition, whatever the key.
    pub partition: Option<u32>,
}

impl ProducerRecord {
    /// A record with this value and nothing else set.
    pub fn new(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: value.into(),
            ..Default::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: u64,
}

/// The acknowledgement of one enqueued record: resolves once its batch is acknowledged or
/// has failed. Dropping it does not cancel the record.
#[derive(Debug)]
pub struct Delivery {
    rx: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A dropped sender means the partition task is gone (runtime shut down, or a panic),
        // perhaps after sending the record: its outcome is unknown, not refused.
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(abandoned())))
    }
}

/// What a [`Delivery`] whose partition task is gone resolves to.
fn abandoned() -> ClientError {
    ClientError::Abandoned(
        "the producer's task for this partition stopped (runtime shut down or a panic) \
         before the record was acknowledged; it may have been written"
            .into(),
    )
}

// ---- pure decisions ------------------------------------------------------------------------

/// When a batch is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    pub max_bytes: usize,
    pub max_records: usize,
    pub linger: Duration,
}

/// Record headers one batch may hold: the server takes at most this many in one produce
/// request, and a batch goes alone.
pub(crate) const MAX_BATCH_HEADERS: usize = fjord_proto::prescan::MAX_HEADERS;

/// Records waiting to become one batch.
///
/// Invariants: `bytes` is the sum of the items' sizes, `headers` of their headers;
/// `opened_at` is set exactly when there are items; a batch never exceeds `max_records`, nor
/// `max_bytes` or [`MAX_BATCH_HEADERS`] unless it is one record.
#[derive(Debug)]
pub(crate) struct Accumulator<T> {
    limits: BatchLimits,
    items: Vec<T>,
    bytes: usize,
    headers: usize,
    opened_at: Option<Instant>,
}

impl<T> Accumulator<T> {
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Accumulator {
            limits,
            items: Vec::new(),
            bytes: 0,
            headers: 0,
            opened_at: None,
        }
    }

    /// Adds an item of `size` bytes without headers (see [`Accumulator::push_with`]).
    #[cfg(test)]
    pub(crate) fn push(&mut self, item: T, size: usize, now: Instant) -> Option<Vec<T>> {
        self.push_with(item, size, 0, now)
    }

    /// Adds an item of `size` bytes holding `headers` record headers. When it does not fit
    /// beside what is there, the batch so far is returned (to be sent first) and the item
    /// starts the next one.
    pub(crate) fn push_with(
        &mut self,
        item: T,
        size: usize,
        headers: usize,
        now: Instant,
    ) -> Option<Vec<T>> {
        let would_overflow = self.bytes.saturating_add(size) > self.limits.max_bytes
            || self.headers.saturating_add(headers) > MAX_BATCH_HEADERS
            || self.items.len() >= self.limits.max_records;
        let cut = if would_overflow { self.take() } else { None };
        if self.items.is_empty() {
            self.opened_at = Some(now);
        }
        self.items.push(item);
        self.bytes += size;
        self.headers += headers;
        self.debug_validate();
        cut
    }

    /// Whether the batch should be sent now: full, or lingered long enough.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        !self.items.is_empty()
            && (self.items.len() >= self.limits.max_records
                || self.bytes >= self.limits.max_bytes
                || self.deadline().is_some_and(|d| d <= now))
    }

    /// When the current batch's linger ends; `None` when empty.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.limits.linger)
    }

    /// Takes the current batch, if any.
    pub(crate) fn take(&mut self) -> Option<Vec<T>> {
        if self.items.is_empty() {
            return None;
        }
        self.bytes = 0;
        self.headers = 0;
        self.opened_at = None;
        Some(std::mem::take(&mut self.items))
    }

    fn debug_validate(&self) {
        debug_assert!(
            self.items.len() <= self.limits.max_records,
            "a batch holds at most max_records records"
        );
        debug_assert!(
            self.items.len() <= 1 || self.bytes <= self.limits.max_bytes,
            "only a single-record batch may exceed max_bytes"
        );
        debug_assert_eq!(
            self.opened_at.is_some(),
            !self.items.is_empty(),
            "the linger clock runs exactly while records wait"
        );
    }
}

/// Spreads keyless records without an explicit partition: sticks to one partition until
/// about a batch worth of records went there, then moves to the next (round-robin), so that
/// batches fill up instead of every partition getting one-record batches (Kafka's "uniform
/// sticky" partitioner).
#[derive(Debug, Clone)]
pub(crate) struct StickyPartitioner {
    current: Option<u32>,
    next: u32,
    bytes: usize,
    records: usize,
    switch_bytes: usize,
    switch_records: usize,
}

impl StickyPartitioner {
    pub(crate) fn new(start: u32, switch_bytes: usize, switch_records: usize) -> Self {
        StickyPartitioner {
            current: None,
            next: start,
            bytes: 0,
            records: 0,
            switch_bytes,
            switch_records,
        }
    }

    pub(crate) fn choose(&mut self, partitions: u32, size: usize) -> u32 {
        let p = match self.current {
            Some(p) if p < partitions => p,
            _ => {
                let p = self.next % partitions;
                self.next = p.wrapping_add(1);
                self.current = Some(p);
                self.bytes = 0;
                self.records = 0;
                p
            }
        };
        self.bytes = self.bytes.saturating_add(size);
        self.records += 1;
        if self.bytes >= self.switch_bytes || self.records >= self.switch_records {
            self.current = None;
        }
        p
    }
}

/// The partition of a record: explicit, else by key hash, else sticky.
pub(crate) fn choose_partition(
    topic: &str,
    explicit: Option<u32>,
    key: Option<&[u8]>,
    partitions: u32,
    sticky: &mut StickyPartitioner,
    size: usize,
) -> Result<u32, ClientError> {
    if partitions == 0 {
        return Err(ClientError::Protocol(format!(
            "topic {topic:?} has no partitions"
        )));
    }
    match (explicit, key) {
        (Some(p), _) if p < partitions => Ok(p),
        (Some(p), _) => Err(ClientError::NotFound(format!(
            "topic {topic:?} has {partitions} partitions; there is no partition {p}"
        ))),
        (None, Some(key)) => Ok(partition_for_key(key, partitions)),
        (None, None) => Ok(sticky.choose(partitions, size)),
    }
}

/// The base offset of `partition`'s batch in a produce answer, or why it failed.
pub(crate) fn interpret_produce(
    answer: v1::ProduceResponse,
    partition: u32,
    count: u32,
) -> Result<u64, ClientError> {
    let result = answer
        .results
        .into_iter()
        .find(|r| r.partition == partition)
        .ok_or_else(|| {
            ClientError::Protocol(format!(
                "produce answer has no result for partition {partition}"
            ))
        })?;
    if let Some(e) = result.error.as_ref().filter(|e| e.code != 0) {
        return Err(ClientError::from_partition_error(e));
    }
    if result.record_count != 0 && result.record_count != count {
        return Err(ClientError::Protocol(format!(
            "partition {partition}: sent {count} records, the answer acknowledges {}",
            result.record_count
        )));
    }
    // Every record's offset must fit: an answer that places the batch past the end of the
    // offset space is not one (the records would be told wrapped offsets).
    if result
        .base_offset
        .checked_add(u64::from(count))
        .is_none_or(|end| end > i64::MAX as u64)
    {
        return Err(ClientError::Protocol(format!(
            "partition {partition}: the answer places {count} records at offset {}, past the \
             end of the offset space",
            result.base_offset
        )));
    }
    if result.duplicate {
        debug!(
            partition,
            base_offset = result.base_offset,
            "batch was already appended by an earlier attempt"
        );
    }
    Ok(result.base_offset)
}

/// The longest acknowledgement wait a produce may ask of the server (ProduceRequest's
/// `timeout_ms`: more is INVALID_ARGUMENT).
const MAX_PRODUCE_TIMEOUT_MS: u64 = 60_000;

/// The `timeout_ms` a produce asks for: the client's request timeout, at most the server's
/// limit (a longer request timeout still waits that long for the answer: the server answers
/// DEADLINE_EXCEEDED at its limit, and the batch is retried).
fn produce_timeout_ms(request_timeout_ms: u64) -> u32 {
    request_timeout_ms.min(MAX_PRODUCE_TIMEOUT_MS) as u32
}

/// Whether a produce attempt that failed with `e` may have appended its batch all the same:
/// only one that reached a node (`sent`: before it, a timeout or a lost connection belongs
/// to a metadata lookup, and nothing was asked to append), and then unless `e` is a refusal
/// of the batch given before anything is proposed (NOT_FOUND, INVALID_ARGUMENT, a sequence
/// gap or reuse, a full disk, a fenced producer, a refused principal, the client's own
/// configuration). Everything else may follow a proposal: UNAVAILABLE (a proposal cut short
/// by a lost leadership or a stopping group answers so), a timeout, a lost connection, an
/// answer the client cannot read or cannot take (too large: tonic's OUT_OF_RANGE), a server
/// error.
pub(crate) fn may_have_appended(e: &ClientError, sent: bool) -> bool {
    sent && !matches!(
        e,
        ClientError::NotFound(_)
            | ClientError::InvalidArgument(_)
            | ClientError::OutOfOrderSequence(_)
            | ClientError::FailedPrecondition(_)
            | ClientError::DiskFull(_)
            | ClientError::ProducerFenced(_)
            | ClientError::Unauthenticated(_)
            | ClientError::PermissionDenied(_)
            | ClientError::Config(_)
            | ClientError::AlreadyExists(_)
    )
}

// ---- effects -------------------------------------------------------------------------------

struct Pending {
    record: v1::Record,
    size: usize,
    reply: Reply,
    /// Returned to the producer's budgets when the record's fate is known.
    budget: Budget,
}

enum Command {
    Record(Pending),
    /// Send what is batched now; answer once it is acknowledged or failed.
    Flush(oneshot::Sender<()>),
}

/// What the partition tasks share. Holds no queue sender, so the tasks stop once every
/// [`Producer`] clone is dropped and their queues are drained.
struct Shared {
    client: Client,
    topic: String,
    config: ProducerConfig,
    /// The producer id and epoch of partitions that have not needed a fresh id, fetched
    /// once (for a named producer, the only one it ever has).
    producer_id: OnceCell<(u64, u16)>,
    /// Set once a batch was refused as fenced: later requests for a fresh id fail so too.
    fenced: std::sync::OnceLock<String>,
}

impl Shared {
    /// The epoch batches under `producer_id` carry: the initialised one for the producer's
    /// own id, 0 for a fresh unnamed id.
    fn epoch_of(&self, producer_id: u64) -> u16 {
        match self.producer_id.get() {
            Some(&(id, epoch)) if id == producer_id => epoch,
            _ => 0,
        }
    }

    /// A fresh producer id for a partition whose session ended: an unnamed id, except for a
    /// named producer, which must stay under its name to stay fenceable.
    async fn fresh_producer_id(&self) -> Result<u64, ClientError> {
        if let Some(why) = self.fenced.get() {
            return Err(ClientError::ProducerFenced(why.clone()));
        }
        match &self.config.producer_name {
            None => self.client.init_producer().await,
            Some(name) => Err(ClientError::FailedPrecondition(format!(
                "named producer {name:?}: an earlier batch of this partition failed for good, \
                 and a named producer does not move later batches to a fresh producer id (it \
                 would escape fencing); create the producer again"
            ))),
        }
    }
}

impl Shared {
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_bytes: self.config.max_batch_bytes,
            max_records: self.config.max_batch_records,
            linger: Duration::from_millis(self.config.linger_ms),
        }
    }
}

impl Client {
    /// A producer for `topic`. Records are batched per partition and sent by background
    /// tasks, so this must be called within a Tokio runtime's context before the first send.
    pub fn producer(
        &self,
        topic: impl Into<String>,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        Producer::new(self.clone(), topic.into(), config)
    }
}

/// Produces records to one topic. Cheap to clone; clones share batches and budgets.
/// Records enqueued before the last clone is dropped are still sent (within the runtime's
/// life); call [`Producer::flush`] to wait for them.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

struct ProducerInner {
    shared: Arc<Shared>,
    records_budget: Arc<Semaphore>,
    bytes_budget: Arc<Semaphore>,
    /// A std mutex: one short, await-free choice per record.
    partitioner: Mutex<StickyPartitioner>,
    /// Partition → its task's queue. A std mutex: lookups and task spawns never await.
    queues: Mutex<HashMap<u32, mpsc::Sender<Command>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.inner.shared.topic)
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub(crate) fn new(
        client: Client,
        topic: String,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        config.validate()?;
        let partitioner = StickyPartitioner::new(
            client.random_u32(),
            config.max_batch_bytes,
            config.max_batch_records,
        );
        Ok(Producer {
            inner: Arc::new(ProducerInner {
                records_budget: Arc::new(Semaphore::new(config.max_pending_records)),
                bytes_budget: Arc::new(Semaphore::new(config.max_pending_bytes)),
                partitioner: Mutex::new(partitioner),
                queues: Mutex::new(HashMap::new()),
                shared: Arc::new(Shared {
                    client,
                    topic,
                    config,
                    producer_id: OnceCell::new(),
                    fenced: std::sync::OnceLock::new(),
                }),
            }),
        })
    }

    pub fn topic(&self) -> &str {
        &self.inner.shared.topic
    }

    /// Initialises the producer's id and epoch now rather than at its first send, and
    /// returns them. For a named producer ([`ProducerConfig::producer_name`]) this is the
    /// moment every earlier instance is fenced (Kafka's `initTransactions`).
    pub async fn init(&self) -> Result<(u64, u16), ClientError> {
        let shared = &self.inner.shared;
        let name = shared.config.producer_name.as_deref();
        shared
            .producer_id
            .get_or_try_init(|| shared.client.init_producer_as(name))
            .await
            .copied()
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.inner.shared.config
    }

    /// Sends a record and waits for its acknowledgement. To keep many records in flight
    /// (and batches full), use [`enqueue`](Producer::enqueue) and await the deliveries later.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata, ClientError> {
        self.enqueue(record).await?.await
    }

    /// Queues a record for sending, waiting while the producer's budgets are spent, and
    /// returns the future of its acknowledgement. Records enqueued one after another by one
    /// caller are appended in that order within a partition.
    pub async fn enqueue(&self, record: ProducerRecord) -> Result<Delivery, ClientError> {
        let shared = &self.inner.shared;
        let explicit = record.partition;
        let wire = v1::Record {
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|(key, value)| v1::Header { key, value })
                .collect(),
            timestamp_ms: record.timestamp_ms,
        };
        let size = wire.encoded_len() + RECORD_FRAMING_BYTES;
        if wire.headers.len() > MAX_BATCH_HEADERS {
            return Err(ClientError::InvalidArgument(format!(
                "a record of {} headers exceeds the {MAX_BATCH_HEADERS} headers one produce \
                 request may hold",
                wire.headers.len()
            )));
        }
        if size > crate::config::MAX_BATCH_BYTES_LIMIT {
            // Alone in its batch, still more than one produce request may hold.
            return Err(ClientError::InvalidArgument(format!(
                "a record of {size} encoded bytes exceeds the {} bytes of records one produce \
                 request may hold",
                crate::config::MAX_BATCH_BYTES_LIMIT
            )));
        }
        let byte_permits = u32::try_from(size)
            .ok()
            .filter(|_| size <= shared.config.max_pending_bytes)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "a record of {size} encoded bytes exceeds the producer's max_pending_bytes ({})",
                    shared.config.max_pending_bytes
                ))
            })?;

        let partitions = shared.client.partition_count(&shared.topic).await?;
        let partition = {
            let mut sticky = self
                .inner
                .partitioner
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            choose_partition(
                &shared.topic,
                explicit,
                wire.key.as_deref(),
                partitions,
                &mut sticky,
                size,
            )?
        };

        let records_permit = Arc::clone(&self.inner.records_budget)
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        let bytes_permit = Arc::clone(&self.inner.bytes_budget)
            .acquire_many_owned(byte_permits)
            .await
            .map_err(|_| ClientError::Closed)?;

        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            record: wire,
            size,
            reply,
            budget: (records_permit, bytes_permit),
        };
        self.queue(partition)
            .send(Command::Record(pending))
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(Delivery { rx })
    }

    /// Sends every batched record now and waits until all records enqueued before this call
    /// are acknowledged or failed (their own results tell which).
    pub async fn flush(&self) {
        let queues: Vec<mpsc::Sender<Command>> = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut done = Vec::with_capacity(queues.len());
        for q in queues {
            let (tx, rx) = oneshot::channel();
            if q.send(Command::Flush(tx)).await.is_ok() {
                done.push(rx);
            }
        }
        for rx in done {
            // An error means the task is gone, and with it everything it held.
            let _ = rx.await;
        }
    }

    /// The queue of `partition`'s task, starting the task if needed.
    fn queue(&self, partition: u32) -> mpsc::Sender<Command> {
        let mut queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A closed queue: its task is gone (its runtime shut down, or it panicked) with batches
        // perhaps in flight under the shared producer id, so its successor takes a fresh id
        // rather than reusing sequences the partition may hold (a reused sequence with the
        // same count and checksum would be answered as a duplicate, at the old records' offset).
        let replaces = match queues.get(&partition) {
            Some(q) if !q.is_closed() => return q.clone(),
            Some(_) => true,
            None => false,
        };
        let (tx, rx) = mpsc::channel(PARTITION_QUEUE_CAPACITY);
        let shared = Arc::clone(&self.inner.shared);
        tokio::spawn(run_partition(shared, partition, rx, replaces));
        queues.insert(partition, tx.clone());
        tx
    }
}

/// A batch cut from the accumulator: its encoded body and the records waiting on it.
struct Batch {
    body: Bytes,
    crc32c: u32,
    count: u32,
    /// Each record's reply and budget, in offset order.
    waiting: Vec<(Reply, Budget)>,
}

type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;
/// A record's share of the producer's record and byte budgets.
type Budget = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl Batch {
    fn encode(pending: Vec<Pending>) -> Batch {
        let mut records = Vec::with_capacity(pending.len());
        let mut waiting = Vec::with_capacity(pending.len());
        for p in pending {
            records.push(p.record);
            waiting.push((p.reply, p.budget));
        }
        let count = records.len() as u32;
        let body = fjord_proto::batch::encode(&records);
        let crc32c = fjord_proto::batch::checksum(&body);
        // The body holds the only copy of the records from here on.
        Batch {
            body,
            crc32c,
            count,
            waiting,
        }
    }
}

/// What a partition task's background calls report.
enum Event {
    Answer {
        id: BatchId,
        result: Result<u64, ClientError>,
        maybe_appended: bool,
    },
    ProducerId(Result<u64, ClientError>),
}

/// The partition task's state: the open batch, the window, and what waits on them.
struct PartitionTask {
    shared: Arc<Shared>,
    partition: u32,
    batches: Accumulator<Pending>,
    window: Sequencer<Batch>,
    /// Sends and producer id requests under way; at most the window size plus one.
    calls: FuturesUnordered<BoxFuture<'static, Event>>,
    /// Flushes, each done once every batch below its id is resolved.
    flushes: Vec<(BatchId, oneshot::Sender<()>)>,
}

/// One partition's task: batches what arrives and keeps up to `max_in_flight_batches` of
/// them in flight, in order (see [`crate::sequencer`]).
async fn run_partition(
    shared: Arc<Shared>,
    partition: u32,
    mut queue: mpsc::Receiver<Command>,
    replaces: bool,
) {
    let mut window = Sequencer::new(
        shared.config.max_in_flight_batches,
        shared.config.idempotent,
    );
    if replaces {
        window.start_fresh();
    }
    let mut task = PartitionTask {
        batches: Accumulator::new(shared.limits()),
        window,
        shared,
        partition,
        calls: FuturesUnordered::new(),
        flushes: Vec::new(),
    };
    let mut open = true;
    loop {
        // A lingered (or full) batch is cut only when it can go out at once; otherwise it
        // keeps filling while the window is full.
        if task.window.accepting() && task.batches.ready(Instant::now()) {
            task.cut();
        }
        task.perform();
        if !open && task.batches.deadline().is_none() && task.window.is_idle() {
            return;
        }
        let linger = task.batches.deadline().filter(|_| task.window.accepting());
        tokio::select! {
            // A cut batch waiting for room stops intake: the queue and the producer's
            // budgets push back on the caller.
            command = queue.recv(), if open && !task.window.has_unsent() => match command {
                Some(Command::Record(p)) => {
                    let (size, headers) = (p.size, p.record.headers.len());
                    if let Some(b) = task.batches.push_with(p, size, headers, Instant::now()) {
                        task.push(b);
                    }
                }
                Some(Command::Flush(done)) => {
                    task.cut();
                    task.flushes.push((task.window.pushed(), done));
                }
                None => {
                    // Every producer handle is gone: send what is left, then stop.
                    open = false;
                    task.cut();
                }
            },
            _ = tokio::time::sleep_until(linger.unwrap_or_else(|| Instant::now() + IDLE_WAKE)),
                if linger.is_some() => task.cut(),
            Some(event) = task.calls.next(), if !task.calls.is_empty() => match event {
                Event::Answer { id, result, maybe_appended } => {
                    if let Err(ClientError::OutOfOrderSequence(why)) = &result {
                        debug!(partition = task.partition, batch = id, %why, "sequence gap");
                    }
                    if let Err(ClientError::ProducerFenced(why)) = &result {
                        let _ = task.shared.fenced.set(why.clone());
                    }
                    task.window.on_answer(id, result, maybe_appended)
                }
                Event::ProducerId(result) => task.window.on_producer_id(result),
            },
            else => {
                // Unreachable by the sequencer's rules (an unsettled window always has a
                // call under way); stop rather than spin.
                debug_assert!(false, "partition task with nothing to wait for");
                warn!(partition = task.partition, "producer partition task stalled; stopping");
                return;
            }
        }
    }
}

impl PartitionTask {
    /// Moves the open batch, if any, to the window.
    fn cut(&mut self) {
        if let Some(b) = self.batches.take() {
            self.push(b);
        }
    }

    fn push(&mut self, pending: Vec<Pending>) {
        let batch = Batch::encode(pending);
        let count = batch.count;
        self.window.push(batch, count);
    }

    /// Performs what the window asks for, then completes the flushes it allows.
    fn perform(&mut self) {
        for action in self.window.poll_actions() {
            match action {
                Action::Send {
                    id,
                    producer_id,
                    base_sequence,
                } => self.send(id, producer_id, base_sequence),
                Action::RequestProducerId { fresh } => self.request_producer_id(fresh),
                Action::Ack { batch, base_offset } => self.ack(batch, base_offset),
                Action::Fail { batch, error } => self.fail(batch, error),
            }
        }
        let oldest = self.window.oldest_unresolved();
        for (_, done) in self
            .flushes
            .extract_if(.., |(below, _)| oldest.is_none_or(|o| o >= *below))
        {
            let _ = done.send(());
        }
    }

    /// Sends batch `id` of the window under `producer_id` from `base_sequence`; its answer
    /// comes back as an [`Event::Answer`].
    fn send(&mut self, id: BatchId, producer_id: u64, base_sequence: u32) {
        let b = self
            .window
            .batch(id)
            .expect("a sent batch is in the window");
        let req = v1::ProduceRequest {
            topic: self.shared.topic.clone(),
            acks: v1::Acks::from(self.shared.config.acks) as i32,
            records: vec![],
            partition: None,
            batches: vec![v1::RecordBatch {
                partition: self.partition,
                producer_id,
                producer_epoch: u32::from(self.shared.epoch_of(producer_id)),
                base_sequence,
                record_count: b.count,
                crc32c: b.crc32c,
                records: Bytes::clone(&b.body),
            }],
            timeout_ms: produce_timeout_ms(self.shared.client.config().request_timeout_ms),
        };
        let shared = Arc::clone(&self.shared);
        let partition = self.partition;
        self.calls.push(Box::pin(async move {
            let (result, maybe_appended) = send_batch(&shared, partition, req).await;
            Event::Answer {
                id,
                result,
                maybe_appended,
            }
        }));
    }

    /// Gets a producer id (a fresh one, or the producer's shared one); it comes back as an
    /// [`Event::ProducerId`].
    fn request_producer_id(&mut self, fresh: bool) {
        let shared = Arc::clone(&self.shared);
        self.calls.push(Box::pin(async move {
            let result = if fresh {
                shared.fresh_producer_id().await
            } else {
                let name = shared.config.producer_name.as_deref();
                shared
                    .producer_id
                    .get_or_try_init(|| shared.client.init_producer_as(name))
                    .await
                    .map(|&(id, _)| id)
            };
            Event::ProducerId(result)
        }));
    }

    /// Answers each record of an appended batch with its offset.
    fn ack(&self, batch: Batch, base_offset: u64) {
        for (i, (reply, _budget)) in batch.waiting.into_iter().enumerate() {
            let _ = reply.send(Ok(RecordMetadata {
                partition: self.partition,
                offset: base_offset + i as u64,
            }));
        }
    }

    /// Answers each record of a failed batch with the error.
    fn fail(&self, batch: Batch, error: ClientError) {
        warn!(topic = %self.shared.topic, partition = self.partition, records = batch.count, error = %error, "produce failed");
        for (reply, _budget) in batch.waiting {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// Sends one batch to the partition's leader until it is acknowledged, fails fatally or runs
/// out of retries; returns its base offset, and whether some attempt's outcome was unknown.
async fn send_batch(
    shared: &Shared,
    partition: u32,
    req: v1::ProduceRequest,
) -> (Result<u64, ClientError>, bool) {
    let client = &shared.client;
    let count = req.batches[0].record_count;
    let deadline = client.produce_deadline();
    let give_up_at =
        tokio::time::Instant::now() + Duration::from_millis(shared.config.delivery_timeout_ms);
    let mut maybe_appended = false;
    let result = client
        .partition_call_until(
            &shared.topic,
            partition,
            (Route::Leader, deadline, Some(give_up_at)),
            |mut c| {
                let req = req.clone();
                async move { c.produce(request(req, deadline)).await }
            },
            |answer| interpret_produce(answer, partition, count),
            |e, sent| maybe_appended |= may_have_appended(e, sent),
        )
        .await;
    (result, maybe_appended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delivery_whose_task_is_gone_is_an_unknown_outcome() {
        // The partition task may have sent the record before it stopped: "closed" would tell
        // the caller it was not written.
        let (reply, rx) = oneshot::channel::<Result<RecordMetadata, ClientError>>();
        drop(reply);
        let e = Delivery { rx }.await.unwrap_err();
        assert!(matches!(e, ClientError::Abandoned(_)), "{e:?}");
        assert!(e.is_outcome_unknown() && !e.is_retryable(), "{e:?}");
    }

    fn limits(max_bytes: usize, max_records: usize, linger_ms: u64) -> BatchLimits {
        BatchLimits {
            max_bytes,
            max_records,
            linger: Duration::from_millis(linger_ms),
        }
    }

    #[test]
    fn a_batch_is_cut_before_it_holds_more_headers_than_a_request_may() {
        let now = Instant::now();
        let mut a = Accumulator::new(limits(1 << 30, 1_000, 10));
        assert_eq!(a.push_with(1, 10, MAX_BATCH_HEADERS - 5, now), None);
        assert_eq!(a.push_with(2, 10, 5, now), None);
        assert_eq!(a.push_with(3, 10, 1, now), Some(vec![1, 2]));
        assert_eq!(a.take(), Some(vec![3]));
    }

    #[test]
    fn a_batch_is_cut_at_max_records() {
        let now = Instant::now();
        let mut a = Accumulator::new(limits(1_000, 3, 10));
        assert_eq!(a.push(1, 10, now), None);
        assert_eq!(a.push(2, 10, now), None);
        assert!(!a.ready(now));
        assert_eq!(a.push(3, 10, now), None);
        assert!(a.ready(now), "full at max_records");
        // Pushing past the limit cuts first.
        assert_eq!(a.push(4, 10, now), Some(vec![1, 2, 3]));
        assert_eq!(a.take(), Some(vec![4]));
        assert_eq!(a.take(), None);
    }

    #[test]
    fn a_batch_never_exceeds_max_bytes_unless_one_record_does() {
        let now = Instant::now();
        let mut a = Accumulator::new(limits(100, 1_000, 10));
        assert_eq!(a.push("a", 60, now), None);
        assert_eq!(
            a.push("b", 60, now),
            Some(vec!["a"]),
            "a+b would be 120 > 100"
        );
        assert_eq!(a.push("c", 40, now), None);
        assert!(a.ready(now), "exactly max_bytes is full");
        assert_eq!(a.take(), Some(vec!["b", "c"]));
        // An oversized record goes alone.
        assert_eq!(a.push("big", 500, now), None);
        assert!(a.ready(now));
        assert_eq!(a.push("d", 1, now), Some(vec!["big"]));
    }

    #[test]
    fn linger_starts_with_the_first_record() {
        let t0 = Instant::now();
        let mut a = Accumulator::new(limits(1_000, 1_000, 10));
        assert_eq!(a.deadline(), None);
        assert!(
            !a.ready(t0 + Duration::from_secs(60)),
            "an empty batch is never ready"
        );
        a.push(1, 1, t0);
        a.push(2, 1, t0 + Duration::from_millis(8));
        assert_eq!(a.deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(!a.ready(t0 + Duration::from_millis(9)));
        assert!(a.ready(t0 + Duration::from_millis(10)));
        a.take();
        a.push(3, 1, t0 + Duration::from_millis(50));
        assert_eq!(a.deadline(), Some(t0 + Duration::from_millis(60)));
    }

    #[test]
    fn zero_linger_is_ready_at_once() {
        let now = Instant::now();
        let mut a = Accumulator::new(limits(1_000, 1_000, 0));
        a.push(1, 1, now);
        assert!(a.ready(now));
    }

    fn sticky() -> StickyPartitioner {
        StickyPartitioner::new(0, 100, 1_000)
    }

    #[test]
    fn explicit_partition_wins_and_is_checked() {
        let mut s = sticky();
        assert_eq!(
            choose_partition("t", Some(2), Some(b"k"), 3, &mut s, 1).unwrap(),
            2
        );
        let e = choose_partition("t", Some(3), None, 3, &mut s, 1).unwrap_err();
        assert!(matches!(e, ClientError::NotFound(_)), "{e:?}");
        assert!(choose_partition("t", None, None, 0, &mut s, 1).is_err());
    }

    #[test]
    fn keys_hash_like_kafka() {
        let mut s = sticky();
        for key in [&b"21"[..], b"foobar", b"", b"a-little-bit-long-string"] {
            for n in [1, 3, 7, 1024] {
                assert_eq!(
                    choose_partition("t", None, Some(key), n, &mut s, 1).unwrap(),
                    partition_for_key(key, n)
                );
            }
        }
        // murmur2("foobar") = -790332482; & 0x7fffffff = 1357151166; % 3 = 0.
        assert_eq!(
            choose_partition("t", None, Some(b"foobar"), 3, &mut s, 1).unwrap(),
            0
        );
    }

    #[test]
    fn keyless_records_stick_then_rotate() {
        let mut s = StickyPartitioner::new(1, 100, 3);
        let picks: Vec<u32> = (0..9)
            .map(|_| choose_partition("t", None, None, 3, &mut s, 10).unwrap())
            .collect();
        assert_eq!(picks, [1, 1, 1, 2, 2, 2, 0, 0, 0]);
        // A byte budget moves on too.
        let mut s = StickyPartitioner::new(0, 100, 1_000);
        let picks: Vec<u32> = (0..4).map(|_| s.choose(2, 60)).collect();
        assert_eq!(picks, [0, 0, 1, 1]);
        // Fewer partitions than the current choice (topic recreated): start again in range.
        let mut s = StickyPartitioner::new(5, 100, 1_000);
        assert_eq!(s.choose(8, 1), 5);
        assert_eq!(s.choose(2, 1), 0);
    }

    fn produce_answer(result: v1::PartitionResult) -> v1::ProduceResponse {
        v1::ProduceResponse {
            results: vec![result],
        }
    }

    #[test]
    fn only_answers_given_before_proposing_prove_nothing_was_appended() {
        let unavailable = ClientError::Unavailable {
            message: "not the leader".into(),
            leader: None,
        };
        assert!(may_have_appended(&unavailable, true));
        assert!(!may_have_appended(&unavailable, false), "never sent");
        // A timeout or lost connection before any produce went out (a metadata lookup).
        assert!(!may_have_appended(&ClientError::Timeout("t".into()), false));
        assert!(may_have_appended(&ClientError::Timeout("t".into()), true));
        // An answer the client could not take: the batch may be in the log.
        assert!(may_have_appended(
            &ClientError::OffsetOutOfRange("response too large".into()),
            true
        ));
        for definite in [
            ClientError::NotFound("topic".into()),
            ClientError::InvalidArgument("big".into()),
            ClientError::OutOfOrderSequence("gap".into()),
            ClientError::DiskFull("full".into()),
            ClientError::ProducerFenced("old".into()),
        ] {
            assert!(!may_have_appended(&definite, true), "{definite:?}");
        }
    }

    #[test]
    fn produce_answers_are_interpreted() {
        let ok = v1::PartitionResult {
            partition: 2,
            base_offset: 100,
            record_count: 5,
            duplicate: true,
            error: None,
        };
        assert_eq!(
            interpret_produce(produce_answer(ok.clone()), 2, 5).unwrap(),
            100
        );
        assert!(matches!(
            interpret_produce(produce_answer(ok.clone()), 1, 5),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            interpret_produce(produce_answer(ok), 2, 4),
            Err(ClientError::Protocol(_))
        ));
        let not_leader = v1::PartitionResult {
            partition: 2,
            error: Some(v1::PartitionError {
                code: tonic::Code::Unavailable as i32,
                message: "not the leader".into(),
                leader_id: 3,
                leader_address: "h3:7101".into(),
                reason: 0,
            }),
            ..Default::default()
        };
        let e = interpret_produce(produce_answer(not_leader), 2, 5).unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.leader_hint().and_then(|h| h.id), Some(3));
        let gap = v1::PartitionResult {
            partition: 2,
            error: Some(v1::PartitionError {
                code: tonic::Code::FailedPrecondition as i32,
                message: "expected sequence 5".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            interpret_produce(produce_answer(gap), 2, 5),
            Err(ClientError::OutOfOrderSequence(_))
        ));
        // An offset the batch's records cannot all have (a buggy or hostile server): no
        // panic, no wrapped offsets.
        for base_offset in [u64::MAX - 2, i64::MAX as u64] {
            let past = v1::PartitionResult {
                partition: 2,
                base_offset,
                record_count: 5,
                ..Default::default()
            };
            let e = interpret_produce(produce_answer(past), 2, 5).unwrap_err();
            assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
        }
    }
}
