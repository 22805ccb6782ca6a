//! The workload, run by the simulated client host with the real `fjord-client`: create the
//! topic, produce unique values in CP mode from a few writer tasks while one poller per
//! partition follows it, then, once the nemesis has healed everything, read every partition
//! from offset 0 to its end. Every operation goes into the [`History`] in the shared format.
//! The operations, the values, the writers' partition choices and the final read's end are
//! the shared model's (`fjord_harness::workload`), as in the process tier.
//!
//! The consumer group's members (`crate::group`) read the topic beside them, and once the
//! final reads know each partition's end, read on until the group has handed out everything.
//!
//! Processes: writer `k` is process `k`, the poller of partition `p` is process
//! `writers + p`, then the fencing writers, then the group's members; the final reads are
//! [`FINAL_READER`]'s.
//!
//! A leader watch asks every node, each on its own, for the topic's leaders every
//! [`LEADER_WATCH_EVERY`], and keeps for each partition the leader of the highest term
//! reported ([`Leaders`]): the nemesis resolves its "leader of a partition" targets with it,
//! and the history records each change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fjord_client::{
    Acks, Client, ClientConfig, ClientError, FetchOptions, ProducerConfig, ProducerRecord, ReadMode,
};
use fjord_harness::history::{EventType, Op};
use fjord_harness::workload::{self as model, FINAL_READER, FinalRead, Values};
use rand::Rng;

use crate::history::{History, LeaderSeen};
use crate::net::ClientConnect;

/// What the client does, and when (simulated time since the start).
#[derive(Debug, Clone)]
pub struct Workload {
    pub seed: u64,
    pub brokers: Vec<String>,
    pub topic: String,
    pub partitions: u32,
    pub replication: u32,
    pub writers: usize,
    /// Named-producer writers of the fencing workload.
    pub fencing_writers: u32,
    /// Members of the consumer-group workload (`crate::group`).
    pub group_members: u32,
    /// Writers and pollers stop here.
    pub writes_until: Duration,
    /// The nemesis has healed everything by then; the final reads start after it.
    pub heal_at: Duration,
    /// How long after the heal every partition must be readable to its end.
    pub settle: Duration,
}

/// Pause between two sends of a writer, at least and at most.
const WRITER_PAUSE_MS_MIN: u64 = 10;
const WRITER_PAUSE_MS_MAX: u64 = 50;
/// Long-poll wait of the pollers' fetches.
const POLL_WAIT_MS: u32 = 300;
/// Pause after a failed fetch or topic creation.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often the leader watch asks each node.
pub const LEADER_WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long the leader watch waits for one node's answer.
const LEADER_WATCH_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the topic creation may take.
const CREATE_TOPIC_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn now_ms() -> u64 {
    now().as_millis() as u64
}

fn now_ns() -> u64 {
    now().as_nanos() as u64
}

pub(crate) type Shared = Arc<Mutex<History>>;

/// Each partition's leader of the highest term seen, shared with the nemesis.
pub type Leaders = Arc<Mutex<BTreeMap<u32, LeaderSeen>>>;

pub(crate) fn record(history: &Shared, f: impl FnOnce(&mut History)) {
    f(&mut history.lock().unwrap_or_else(PoisonError::into_inner));
}

/// Records one event of `process` now.
pub(crate) fn event(
    history: &Shared,
    process: u32,
    kind: EventType,
    op: Op,
    error: Option<String>,
) {
    record(history, |h| h.record(now_ns(), process, kind, op, error));
}

/// How an operation that ended in `e` is recorded: unknown or failed.
pub(crate) fn outcome_of(e: &ClientError) -> EventType {
    if e.is_outcome_unknown() {
        EventType::Info
    } else {
        EventType::Fail
    }
}

fn client_config(seed: u64) -> ClientConfig {
    ClientConfig {
        request_timeout_ms: 2_000,
        connect_timeout_ms: 500,
        max_retries: 4,
        retry_backoff_ms_initial: 50,
        retry_backoff_ms_max: 500,
        rng_seed: Some(seed),
        token: None,
        tls: None,
    }
}

/// The client host's software.
/// The writers (plain and fencing) and one poller per partition.
fn spawn_writers_and_pollers(
    client: &Client,
    producer: &fjord_client::Producer,
    w: &Workload,
    history: &Shared,
    values: &Arc<Values>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for writer in 0..w.writers {
        tasks.push(tokio::spawn(write_values(
            producer.clone(),
            w.clone(),
            history.clone(),
            values.clone(),
            writer,
        )));
    }
    for partition in 0..w.partitions {
        tasks.push(tokio::spawn(poll_partition(
            client.clone(),
            w.clone(),
            history.clone(),
            partition,
        )));
    }
    for name in 0..w.fencing_writers {
        let process = w.writers as u32 + w.partitions + name;
        tasks.push(tokio::spawn(fencing_writer(
            client.clone(),
            w.clone(),
            history.clone(),
            values.clone(),
            process,
            name,
        )));
    }
    tasks
}

/// The consumer group's members.
fn spawn_members(
    client: &Client,
    w: &Workload,
    history: &Shared,
    group: &Arc<crate::group::Group>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let first_member = w.writers as u32 + w.partitions + w.fencing_writers;
    (0..w.group_members)
        .map(|m| {
            tokio::spawn(crate::group::member(
                client.clone(),
                w.clone(),
                history.clone(),
                group.clone(),
                m,
                fjord_harness::group::member_process(first_member, m),
            ))
        })
        .collect()
}

pub async fn run(w: Workload, history: Shared, leaders: Leaders) -> turmoil::Result {
    watch_every_node(&w, &history, &leaders)?;
    let client = Client::connect_with(
        w.brokers.clone(),
        client_config(w.seed),
        Arc::new(ClientConnect),
    )?;
    if !create_topic(&client, &w, &history).await {
        return Ok(());
    }
    let producer = client.producer(
        w.topic.clone(),
        ProducerConfig {
            acks: Acks::Cp,
            linger_ms: 2,
            max_batch_bytes: fjord_harness::retention::PRODUCER_MAX_BATCH_BYTES,
            ..Default::default()
        },
    )?;
    let values = Arc::new(Values::default());
    let tasks = spawn_writers_and_pollers(&client, &producer, &w, &history, &values);
    let group = Arc::new(crate::group::Group::default());
    let members = spawn_members(&client, &w, &history, &group);
    for t in tasks {
        t.await?;
    }
    producer.flush().await;

    while now() < w.heal_at {
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    let deadline = w.heal_at + w.settle;
    let mut ends = BTreeMap::new();
    for partition in 0..w.partitions {
        if let Some(end) = read_to_end(&client, &w.topic, partition, deadline, &history).await {
            ends.insert(partition, end);
        }
    }
    if w.group_members > 0 && ends.len() == w.partitions as usize {
        crate::group::drain(&group, ends, deadline, &history).await;
    }
    group.stop();
    for m in members {
        m.await?;
    }
    Ok(())
}

/// Starts a leader watch on each node, each through a client of its own.
fn watch_every_node(w: &Workload, history: &Shared, leaders: &Leaders) -> turmoil::Result {
    for broker in &w.brokers {
        let client = Client::connect_with(
            vec![broker.clone()],
            client_config(w.seed),
            Arc::new(ClientConnect),
        )?;
        // The nemesis needs leaders until the heal; a little longer shows who leads after it.
        let until = w.writes_until;
        tokio::spawn(watch_leaders(
            client,
            w.topic.clone(),
            until,
            leaders.clone(),
            history.clone(),
        ));
    }
    Ok(())
}

/// Creates the topic, retrying until [`CREATE_TOPIC_DEADLINE`]; false (and the history says
/// why) if it could not be.
async fn create_topic(client: &Client, w: &Workload, history: &Shared) -> bool {
    loop {
        match client
            .create_topic(&w.topic, w.partitions, w.replication)
            .await
        {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => return true,
            Err(e) if now() > CREATE_TOPIC_DEADLINE => {
                record(history, |h| {
                    h.stuck.push(format!("the topic could not be created: {e}"))
                });
                return false;
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Writer `writer` (process `writer`): sends new values to drawn partitions, a short drawn
/// pause apart, until the writes end.
async fn write_values(
    producer: fjord_client::Producer,
    w: Workload,
    history: Shared,
    values: Arc<Values>,
    writer: usize,
) {
    let process = writer as u32;
    // The writers' streams are numbered from 1.
    let mut rng = model::producer_rng(w.seed, writer as u64 + 1);
    while now() < w.writes_until {
        let value = values.next();
        let partition = model::pick_partition(&mut rng, w.partitions);
        let invoke = model::produce(partition, value);
        event(&history, process, EventType::Invoke, invoke.clone(), None);
        let sent = producer
            .send(ProducerRecord::new(model::encode(value)).with_partition(partition))
            .await;
        let (kind, op, error) = match sent {
            Ok(at) if at.partition == partition => (
                EventType::Ok,
                model::produced(partition, value, at.offset),
                None,
            ),
            Ok(at) => (
                EventType::Fail,
                invoke,
                Some(format!(
                    "acknowledged in partition {} instead",
                    at.partition
                )),
            ),
            Err(e) => (outcome_of(&e), invoke, Some(e.to_string())),
        };
        event(&history, process, kind, op, error);
        let pause = rng.gen_range(WRITER_PAUSE_MS_MIN..=WRITER_PAUSE_MS_MAX);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The poller of `partition` (process `writers + partition`): follows it from offset 0
/// until the writes end.
async fn poll_partition(client: Client, w: Workload, history: Shared, partition: u32) {
    let process = w.writers as u32 + partition;
    let options = FetchOptions {
        max_wait_ms: POLL_WAIT_MS,
        read: ReadMode::Cp,
        ..Default::default()
    };
    let mut next = 0u64;
    while now() < w.writes_until {
        let invoke = model::poll(partition, next);
        event(&history, process, EventType::Invoke, invoke.clone(), None);
        match client.fetch(&w.topic, partition, next, options).await {
            Ok(r) => {
                let op =
                    model::polled(partition, next, records_of(&r), r.high_watermark, r.node_id);
                event(&history, process, EventType::Ok, op, None);
                let last = r.records.last().map(|r| r.offset);
                next = model::next_poll_from(next, last, r.next_offset, r.log_start_offset, false);
            }
            Err(e) => {
                event(
                    &history,
                    process,
                    outcome_of(&e),
                    invoke,
                    Some(e.to_string()),
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// One fencing writer (see `fjord_harness::workload::fencing_step`): writes as the named
/// producer `name`, starts a new instance of it every few writes, and lets the fenced one
/// write in between, recording each write with the instance that made it.
async fn fencing_writer(
    client: Client,
    w: Workload,
    history: Shared,
    values: Arc<Values>,
    process: u32,
    name: u32,
) {
    let config = ProducerConfig {
        acks: Acks::Cp,
        linger_ms: 0,
        max_batch_bytes: fjord_harness::retention::PRODUCER_MAX_BATCH_BYTES,
        producer_name: Some(model::fencing_name(name)),
        ..Default::default()
    };
    let mut rng = model::fencing_rng(w.seed, name);
    let mut instances = model::FencingInstances::new(name);
    while now() < w.writes_until {
        if instances.needs_new() {
            let fresh = client
                .producer(w.topic.clone(), config.clone())
                .expect("a valid producer config");
            match fresh.init().await {
                Ok((_, epoch)) => instances.started(fresh, epoch),
                Err(_) => {
                    // No metadata majority now: try again, without counting a write.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
        }
        let (producer, instance) = instances.next_writer().expect("an instance was started");
        let instance = Some(instance);
        let value = values.next();
        let partition = model::pick_partition(&mut rng, w.partitions);
        let invoke = model::produce(partition, value);
        record(&history, |h| {
            h.record_as(
                now_ns(),
                process,
                EventType::Invoke,
                invoke.clone(),
                None,
                instance,
            )
        });
        let sent = producer
            .send(ProducerRecord::new(model::encode(value)).with_partition(partition))
            .await;
        let (kind, op, error) = match sent {
            Ok(at) => (
                EventType::Ok,
                model::produced(partition, value, at.offset),
                None,
            ),
            Err(e) => (outcome_of(&e), invoke, Some(e.to_string())),
        };
        record(&history, |h| {
            h.record_as(now_ns(), process, kind, op, error, instance)
        });
        let pause = rng.gen_range(WRITER_PAUSE_MS_MIN..=WRITER_PAUSE_MS_MAX);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    for p in instances.all() {
        p.flush().await;
    }
}

/// Asks one node for the topic's leaders until `until`, and keeps in `leaders` those of a
/// higher term than known.
async fn watch_leaders(
    client: Client,
    topic: String,
    until: Duration,
    leaders: Leaders,
    history: Shared,
) {
    while now() < until {
        if let Ok(Ok(topic)) =
            tokio::time::timeout(LEADER_WATCH_TIMEOUT, client.describe_topic(&topic)).await
        {
            let at_ms = now_ms();
            let mut known = leaders.lock().unwrap_or_else(PoisonError::into_inner);
            for p in &topic.partitions {
                let Some(leader) = p.leader else { continue };
                let seen = LeaderSeen {
                    at_ms,
                    partition: p.partition,
                    leader,
                    term: p.leader_epoch,
                };
                let newer = known.get(&p.partition).is_none_or(|k| k.term < seen.term);
                if newer {
                    known.insert(p.partition, seen);
                    record(&history, |h| h.leaders.push(seen));
                }
            }
        }
        tokio::time::sleep(LEADER_WATCH_EVERY).await;
    }
}

/// Reads `partition` from offset 0 to its end (the shared model's [`FinalRead`]), retrying
/// until `deadline`; one operation of the [`FINAL_READER`]. Returns the partition's end (its
/// high watermark then), if it was read to it.
async fn read_to_end(
    client: &Client,
    topic: &str,
    partition: u32,
    deadline: Duration,
    history: &Shared,
) -> Option<u64> {
    let mut read = FinalRead::new(partition);
    let invoke = read.invoke();
    event(
        history,
        FINAL_READER,
        EventType::Invoke,
        invoke.clone(),
        None,
    );
    let options = FetchOptions {
        max_wait_ms: 0,
        read: ReadMode::Cp,
        ..Default::default()
    };
    loop {
        if now() > deadline {
            let why = format!(
                "partition {partition} was not read to its end by {deadline:?}; read up to {}",
                read.next_offset()
            );
            event(
                history,
                FINAL_READER,
                EventType::Fail,
                invoke,
                Some(why.clone()),
            );
            record(history, |h| h.stuck.push(why));
            return None;
        }
        let from = read.next_offset();
        match client.fetch(topic, partition, from, options).await {
            Ok(r) => {
                if read.absorb(records_of(&r), r.next_offset, r.high_watermark) {
                    let end = read.next_offset();
                    event(history, FINAL_READER, EventType::Ok, read.into_op(), None);
                    return Some(end);
                }
                if r.next_offset <= from {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// The records a fetch returned, as the history holds them.
fn records_of(r: &fjord_client::FetchResult) -> Vec<fjord_harness::history::ReadRecord> {
    r.records
        .iter()
        .map(|c| model::read_record(c.offset, &c.value))
        .collect()
}
