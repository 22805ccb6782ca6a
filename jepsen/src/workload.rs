//! The workload: concurrent producers writing unique values and consumers following every
//! partition, through fjord's own Rust client, each operation recorded in the history; then a
//! final read of every partition from offset 0 once the faults have healed. The operations,
//! the values, the producers' partition choices and the final read's end are the shared
//! model's (`fjord_harness::workload`); this module runs them against real processes.
//!
//! What must hold: every operation is recorded as an invoke and then exactly one completion
//! by the same process; an operation whose outcome is unknown (timeout, broken connection,
//! or the harness's own deadline) is `info`, never `fail`; produced values are unique across
//! the run; every loop stops by itself at the run's end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fjord_client::{
    Acks, Client, ClientError, FetchOptions, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    ReadMode,
};
use fjord_harness::compaction;
use fjord_harness::history::{Event, EventType};
use fjord_harness::retention::Bounds;
use fjord_harness::workload::{self as model, FINAL_READER, FinalRead, Values};
use tokio::sync::watch;

/// Writes the history as events happen.
///
/// A `std::sync::Mutex`: the critical section assigns the index and time and writes one
/// line into a buffer, with no `.await` inside; the lock also makes index order, time order
/// and file order the same.
pub struct Recorder {
    start: Instant,
    /// The wall clock (ms since the Unix epoch) at `start`.
    start_wall_ms: i64,
    inner: Mutex<(u64, BufWriter<File>)>,
}

impl Recorder {
    pub fn create(path: &Path, start: Instant) -> Result<Recorder> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the wall clock is before 1970")?;
        let start_wall_ms = now.saturating_sub(start.elapsed()).as_millis() as i64;
        Ok(Recorder {
            start,
            start_wall_ms,
            inner: Mutex::new((0, BufWriter::new(file))),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The wall clock at the history's time 0, in ms since the Unix epoch.
    pub fn start_wall_ms(&self) -> i64 {
        self.start_wall_ms
    }

    /// The wall clock now, in ms since the Unix epoch, as the history's clock counts it
    /// (what the producers stamp records with: the checker maps it back exactly).
    pub fn wall_ms(&self) -> i64 {
        self.start_wall_ms + (self.now_ns() / 1_000_000) as i64
    }

    pub fn record(
        &self,
        process: u32,
        kind: EventType,
        op: fjord_harness::history::Op,
        error: Option<String>,
    ) {
        self.record_as(process, kind, op, error, None)
    }

    /// As [`Recorder::record`], for an operation of a named producer's `instance`.
    pub fn record_as(
        &self,
        process: u32,
        kind: EventType,
        op: fjord_harness::history::Op,
        error: Option<String>,
        instance: Option<fjord_harness::history::Instance>,
    ) {
        let mut inner = self.inner.lock().expect("recorder lock");
        let event = Event {
            index: inner.0,
            time_ns: self.now_ns(),
            process,
            kind,
            op,
            error,
            instance,
        };
        inner.0 += 1;
        let line = event.to_jsonl();
        // A failed write of the history is fatal to the run's meaning: stop loudly.
        writeln!(inner.1, "{line}").expect("writing the history");
    }

    pub fn flush(&self) {
        let mut inner = self.inner.lock().expect("recorder lock");
        inner.1.flush().expect("flushing the history");
    }
}

/// What the workload does.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub topic: String,
    pub partitions: u32,
    pub acks: Acks,
    pub read: ReadMode,
    /// Concurrent producing processes (each with one operation outstanding).
    pub producers: u32,
    /// Producer instances (producer ids) the producing processes share.
    pub producer_instances: u32,
    /// Processes writing as named producers that fence their own earlier instances (the
    /// fencing workload, see `fjord_harness::workload::fencing_step`).
    pub fencing_writers: u32,
    /// Consumers per partition.
    pub consumers_per_partition: u32,
    /// A produce or poll that has not completed after this long is recorded as `info`.
    pub op_timeout: Duration,
    /// Pause between a producing process's operations (0 = as fast as acknowledgements come).
    pub produce_interval: Duration,
    pub seed: u64,
    /// With the log lifecycle (`fjord_harness::retention`): what the workload learns of
    /// each partition's bounds. Producers then stamp their records with the harness's wall
    /// clock, and the deleter runs beside them.
    pub lifecycle: Option<Arc<Bounds>>,
    /// With the log lifecycle: whether the deleter runs (off, deletions come from retention
    /// and the nemesis alone).
    pub deleter: bool,
    /// With compaction (`fjord_harness::compaction`): every record carries the key of its
    /// value, recorded with its produce.
    pub keyed: bool,
}

fn classify(e: &ClientError) -> EventType {
    if e.is_outcome_unknown() {
        EventType::Info
    } else {
        EventType::Fail
    }
}

/// Runs producers and consumers until `stop` turns true; returns when all have stopped.
pub async fn run(
    client: Client,
    options: WorkloadOptions,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let values = Arc::new(Values::default());
    let producers: Vec<Producer> = (0..options.producer_instances.max(1))
        .map(|_| {
            client.producer(
                options.topic.clone(),
                ProducerConfig {
                    acks: options.acks,
                    linger_ms: 2,
                    max_batch_bytes: fjord_harness::retention::PRODUCER_MAX_BATCH_BYTES,
                    ..ProducerConfig::default()
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut process = 0u32;
    for i in 0..options.producers {
        let producer = producers[i as usize % producers.len()].clone();
        let rec = recorder.clone();
        let opts = options.clone();
        let values = values.clone();
        let stop = stop.clone();
        let p = process;
        process += 1;
        tasks.spawn(producing(producer, opts, rec, values, stop, p));
    }
    for partition in 0..options.partitions {
        for _ in 0..options.consumers_per_partition {
            let p = process;
            process += 1;
            tasks.spawn(consuming(
                client.clone(),
                options.clone(),
                recorder.clone(),
                stop.clone(),
                p,
                partition,
            ));
        }
    }
    for name in 0..options.fencing_writers {
        let p = process;
        process += 1;
        tasks.spawn(fencing_writer(
            client.clone(),
            options.clone(),
            recorder.clone(),
            values.clone(),
            stop.clone(),
            p,
            name,
        ));
    }
    if let Some(bounds) = options.lifecycle.as_ref().filter(|_| options.deleter) {
        let deleter = crate::retention::DeleterOptions {
            topic: options.topic.clone(),
            partitions: options.partitions,
            seed: options.seed,
            op_timeout: options.op_timeout,
        };
        tasks.spawn(crate::retention::deleter(
            client.clone(),
            deleter,
            bounds.clone(),
            recorder.clone(),
            stop.clone(),
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a workload task panicked")?;
    }
    // Producers still holding records keep retrying them in the background; give them the
    // operation timeout to settle so that the final read sees their outcome.
    for producer in &producers {
        let _ = tokio::time::timeout(options.op_timeout, producer.flush()).await;
    }
    Ok(())
}

/// Producing process `p`: sends one new value at a time to a drawn partition, recording
/// each send and its outcome, until `stop`.
async fn producing(
    producer: Producer,
    opts: WorkloadOptions,
    rec: Arc<Recorder>,
    values: Arc<Values>,
    mut stop: watch::Receiver<bool>,
    p: u32,
) {
    let mut rng = model::producer_rng(opts.seed, u64::from(p));
    while !*stop.borrow() {
        let partition = model::pick_partition(&mut rng, opts.partitions);
        let value = values.next();
        let (record, stamp) = new_record(&opts, &rec, partition, value);
        let invoke = keyed(&opts, model::produce_at(partition, value, stamp), value);
        rec.record(p, EventType::Invoke, invoke.clone(), None);
        match tokio::time::timeout(opts.op_timeout, producer.send(record)).await {
            Ok(Ok(meta)) => {
                acked(&opts, partition, meta.offset);
                let done = model::produced_at(partition, value, meta.offset, stamp);
                let done = keyed(&opts, done, value);
                rec.record(p, EventType::Ok, done, None)
            }
            Ok(Err(e)) => rec.record(p, classify(&e), invoke, Some(e.to_string())),
            Err(_) => rec.record(
                p,
                EventType::Info,
                invoke,
                Some("no acknowledgement within the operation timeout".into()),
            ),
        }
        if !opts.produce_interval.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(opts.produce_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// The record carrying `value` to `partition`, stamped with the harness's wall clock when the
/// run has retention (its timestamp, to record with the produce).
fn new_record(
    opts: &WorkloadOptions,
    rec: &Recorder,
    partition: u32,
    value: u64,
) -> (ProducerRecord, Option<i64>) {
    let mut record = ProducerRecord::new(model::encode(value)).with_partition(partition);
    if opts.keyed {
        record = record.with_key(compaction::key_bytes(compaction::key_of(value)));
    }
    match opts.lifecycle {
        Some(_) => {
            let now = rec.wall_ms();
            (record.with_timestamp_ms(now), Some(now))
        }
        None => (record, None),
    }
}

/// A produce's `op` with the key of its `value`, in runs with compaction.
fn keyed(
    opts: &WorkloadOptions,
    op: fjord_harness::history::Op,
    value: u64,
) -> fjord_harness::history::Op {
    match opts.keyed {
        true => compaction::keyed(op, compaction::key_of(value)),
        false => op,
    }
}

/// A produce to `partition` was acknowledged at `offset`: the deleter may delete below it.
fn acked(opts: &WorkloadOptions, partition: u32, offset: u64) {
    if let Some(bounds) = &opts.lifecycle {
        bounds.acked(partition, offset);
    }
}

/// Consuming process `p`: polls `partition` from its start onwards, recording each poll, what
/// it read and the log start the answer reported, until `stop`. A position below the log
/// start (its records were deleted) moves to the start, which it looks up (recorded).
async fn consuming(
    client: Client,
    opts: WorkloadOptions,
    rec: Arc<Recorder>,
    stop: watch::Receiver<bool>,
    p: u32,
    partition: u32,
) {
    let mut from = 0u64;
    let fetch_options = FetchOptions {
        read: opts.read,
        max_wait_ms: 200,
        max_bytes: 64 * 1024,
    };
    while !*stop.borrow() {
        let invoke = model::poll(partition, from);
        rec.record(p, EventType::Invoke, invoke.clone(), None);
        let fetched = tokio::time::timeout(
            opts.op_timeout,
            client.fetch(&opts.topic, partition, from, fetch_options),
        )
        .await;
        match fetched {
            Ok(Ok(result)) => {
                let records = result
                    .records
                    .iter()
                    .map(|r| model::read_record(r.offset, &r.value))
                    .collect();
                let bounds = (result.high_watermark, result.log_start_offset);
                let op = model::polled_from(partition, from, records, bounds, result.node_id);
                rec.record(p, EventType::Ok, op, None);
                if let Some(b) = &opts.lifecycle {
                    b.started(partition, result.log_start_offset);
                }
                let last = result.records.last().map(|r| r.offset);
                from = model::next_poll_from(
                    from,
                    last,
                    result.next_offset,
                    result.log_start_offset,
                    opts.keyed,
                );
            }
            Ok(Err(e @ ClientError::OffsetOutOfRange(_))) => {
                rec.record(p, classify(&e), invoke, Some(e.to_string()));
                let lookup = (p, opts.op_timeout);
                let start = crate::retention::list_earliest(
                    &client,
                    &opts.topic,
                    partition,
                    opts.read,
                    &rec,
                    lookup,
                )
                .await;
                let moved = start.map(|s| model::past_log_start(from, s));
                match moved {
                    Some(to) if to != from => from = to,
                    // Not below the start (past the end?), or no answer: do not spin.
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            Ok(Err(e)) => {
                rec.record(p, classify(&e), invoke, Some(e.to_string()));
                // Do not spin on an unreachable cluster.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => rec.record(
                p,
                EventType::Info,
                invoke,
                Some("no answer within the operation timeout".into()),
            ),
        }
    }
}

/// One fencing process (see `fjord_harness::workload::fencing_step`): writes as the named
/// producer `name`, starts a new instance of it every few writes, and lets the fenced one
/// write in between, recording each write with the instance that made it.
async fn fencing_writer(
    client: Client,
    opts: WorkloadOptions,
    rec: Arc<Recorder>,
    values: Arc<Values>,
    mut stop: watch::Receiver<bool>,
    p: u32,
    name: u32,
) {
    let config = ProducerConfig {
        acks: opts.acks,
        linger_ms: 0,
        max_batch_bytes: fjord_harness::retention::PRODUCER_MAX_BATCH_BYTES,
        producer_name: Some(model::fencing_name(name)),
        ..ProducerConfig::default()
    };
    let mut rng = model::fencing_rng(opts.seed, name);
    let mut instances = model::FencingInstances::new(name);
    while !*stop.borrow() {
        if instances.needs_new() {
            let fresh = client
                .producer(opts.topic.clone(), config.clone())
                .expect("a valid producer config");
            match tokio::time::timeout(opts.op_timeout, fresh.init()).await {
                Ok(Ok((_, epoch))) => instances.started(fresh, epoch),
                _ => {
                    // No metadata majority now: try again, without counting a write.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
        }
        let (producer, instance) = instances.next_writer().expect("an instance was started");
        let instance = Some(instance);
        let partition = model::pick_partition(&mut rng, opts.partitions);
        let value = values.next();
        let (record, stamp) = new_record(&opts, &rec, partition, value);
        let invoke = keyed(&opts, model::produce_at(partition, value, stamp), value);
        rec.record_as(p, EventType::Invoke, invoke.clone(), None, instance);
        let (kind, op, error) =
            match tokio::time::timeout(opts.op_timeout, producer.send(record)).await {
                Ok(Ok(meta)) => {
                    acked(&opts, partition, meta.offset);
                    let done = model::produced_at(partition, value, meta.offset, stamp);
                    let done = keyed(&opts, done, value);
                    (EventType::Ok, done, None)
                }
                Ok(Err(e)) => (classify(&e), invoke, Some(e.to_string())),
                Err(_) => (
                    EventType::Info,
                    invoke,
                    Some("no acknowledgement within the operation timeout".into()),
                ),
            };
        rec.record_as(p, kind, op, error, instance);
        if !opts.produce_interval.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(opts.produce_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// A final read whose offset was out of range: deleted below where it got to, so it goes on
/// from the log start (looked up, CP); why not, if it cannot (the start is not above it, or
/// no answer).
async fn to_log_start(client: &Client, topic: &str, read: &mut FinalRead) -> Result<(), String> {
    let partition = read.partition();
    let at = read.next_offset();
    let listed = client
        .list_offset(topic, partition, OffsetSpec::Earliest, ReadMode::Cp)
        .await
        .map_err(|e| e.to_string())?;
    read.log_start(listed.log_start_offset);
    if read.next_offset() == at {
        return Err(format!("offset {at} out of range"));
    }
    Ok(())
}

/// What the final reads found.
#[derive(Debug, Clone, Default)]
pub struct FinalReads {
    /// Partitions not read to their end by the deadline.
    pub unread: Vec<u32>,
    /// The end (high watermark) each partition was read to.
    pub ends: BTreeMap<u32, u64>,
}

/// Reads every partition from its log start (offset 0 unless records were deleted) up to its
/// high watermark with CP reads, retrying until `deadline`; records each as one
/// `final_read` operation, with the highest log start its answers reported.
pub async fn final_reads(
    client: &Client,
    topic: &str,
    partitions: u32,
    recorder: &Recorder,
    deadline: Instant,
) -> Result<FinalReads> {
    let process = FINAL_READER;
    let mut unread = Vec::new();
    let mut ends = BTreeMap::new();
    for partition in 0..partitions {
        let mut read = FinalRead::new(partition);
        let invoke = read.invoke();
        recorder.record(process, EventType::Invoke, invoke.clone(), None);
        let mut last_error = None;
        let done = loop {
            if Instant::now() > deadline {
                break false;
            }
            let options = FetchOptions {
                read: ReadMode::Cp,
                max_wait_ms: 0,
                max_bytes: 4 * 1024 * 1024,
            };
            match client
                .fetch(topic, partition, read.next_offset(), options)
                .await
            {
                Ok(result) => {
                    let records = result
                        .records
                        .iter()
                        .map(|r| model::read_record(r.offset, &r.value));
                    let done = read.absorb(records, result.next_offset, result.high_watermark);
                    read.log_start(result.log_start_offset);
                    if done {
                        break true;
                    }
                }
                Err(ClientError::OffsetOutOfRange(_)) => {
                    if let Err(why) = to_log_start(client, topic, &mut read).await {
                        last_error = Some(why);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(e) => {
                    last_error = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        if done {
            ends.insert(partition, read.next_offset());
            recorder.record(process, EventType::Ok, read.into_op(), None);
        } else {
            unread.push(partition);
            recorder.record(process, EventType::Fail, invoke, last_error);
        }
    }
    recorder.flush();
    Ok(FinalReads { unread, ends })
}
