//! The workload, run by the simulated client host with the real `fjord-client`: create the
//! topic, produce unique values in CP mode from a few writer tasks while one poller per
//! partition follows it, then, once the nemesis has healed everything, read every partition
//! from offset 0 to its end. Everything seen goes into the [`History`].
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
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{History, LeaderSeen, Read, ReaderLog, Write, WriteOutcome};
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

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn now_ms() -> u64 {
    now().as_millis() as u64
}

type Shared = Arc<Mutex<History>>;

/// Each partition's leader of the highest term seen, shared with the nemesis.
pub type Leaders = Arc<Mutex<BTreeMap<u32, LeaderSeen>>>;

fn record(history: &Shared, f: impl FnOnce(&mut History)) {
    f(&mut history.lock().unwrap_or_else(PoisonError::into_inner));
}

fn client_config(seed: u64) -> ClientConfig {
    ClientConfig {
        request_timeout_ms: 2_000,
        connect_timeout_ms: 500,
        max_retries: 4,
        retry_backoff_ms_initial: 50,
        retry_backoff_ms_max: 500,
        rng_seed: Some(seed),
    }
}

/// The client host's software.
pub async fn run(w: Workload, history: Shared, leaders: Leaders) -> turmoil::Result {
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
    let client = Client::connect_with(
        w.brokers.clone(),
        client_config(w.seed),
        Arc::new(ClientConnect),
    )?;
    loop {
        match client
            .create_topic(&w.topic, w.partitions, w.replication)
            .await
        {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => break,
            Err(e) if now() > CREATE_TOPIC_DEADLINE => {
                record(&history, |h| {
                    h.stuck.push(format!("the topic could not be created: {e}"))
                });
                return Ok(());
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }

    let producer = client.producer(
        w.topic.clone(),
        ProducerConfig {
            acks: Acks::Cp,
            linger_ms: 2,
            ..Default::default()
        },
    )?;
    let mut tasks = Vec::new();
    for writer in 0..w.writers {
        let producer = producer.clone();
        let history = history.clone();
        let w = w.clone();
        let mut rng = StdRng::seed_from_u64(w.seed ^ (writer as u64 + 1) << 32);
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while now() < w.writes_until {
                k += 1;
                let value = format!("w{writer}.{k}");
                let partition = rng.gen_range(0..w.partitions);
                let invoked_ms = now_ms();
                let sent = producer
                    .send(ProducerRecord::new(value.clone()).with_partition(partition))
                    .await;
                let outcome = match sent {
                    Ok(at) if at.partition == partition => WriteOutcome::Acked(at.offset),
                    Ok(at) => WriteOutcome::Failed(format!(
                        "acknowledged in partition {} instead",
                        at.partition
                    )),
                    Err(e) if e.is_outcome_unknown() => WriteOutcome::Unknown(e.to_string()),
                    Err(e) => WriteOutcome::Failed(e.to_string()),
                };
                let completed_ms = now_ms();
                record(&history, |h| {
                    h.writes.push(Write {
                        value,
                        partition,
                        invoked_ms,
                        completed_ms,
                        outcome,
                    })
                });
                let pause = rng.gen_range(WRITER_PAUSE_MS_MIN..=WRITER_PAUSE_MS_MAX);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    for partition in 0..w.partitions {
        let client = client.clone();
        let history = history.clone();
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("poll-p{partition}");
            let options = FetchOptions {
                max_wait_ms: POLL_WAIT_MS,
                read: ReadMode::Cp,
                ..Default::default()
            };
            let mut next = 0u64;
            while now() < w.writes_until {
                let invoked_ms = now_ms();
                match client.fetch(&w.topic, partition, next, options).await {
                    Ok(r) => {
                        let read = read_of(invoked_ms, next, &r);
                        record(&history, |h| log_of(h, &name, partition, false).push(read));
                        next = r.next_offset;
                    }
                    Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    producer.flush().await;

    while now() < w.heal_at {
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    let deadline = w.heal_at + w.settle;
    for partition in 0..w.partitions {
        read_to_end(&client, &w.topic, partition, deadline, &history).await;
    }
    Ok(())
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

fn log_of<'h>(h: &'h mut History, name: &str, partition: u32, is_final: bool) -> &'h mut Vec<Read> {
    &mut h
        .readers
        .entry(name.to_string())
        .or_insert_with(|| ReaderLog {
            partition,
            is_final,
            ..Default::default()
        })
        .reads
}

/// Reads `partition` from offset 0 up to the high watermark its first successful read gives,
/// retrying until `deadline`.
async fn read_to_end(
    client: &Client,
    topic: &str,
    partition: u32,
    deadline: Duration,
    history: &Shared,
) {
    let name = format!("final-p{partition}");
    record(history, |h| {
        log_of(h, &name, partition, true);
    });
    let options = FetchOptions {
        max_wait_ms: 0,
        read: ReadMode::Cp,
        ..Default::default()
    };
    let mut next = 0u64;
    let mut end: Option<u64> = None;
    loop {
        if end.is_some_and(|end| next >= end) {
            record(history, |h| {
                if let Some(log) = h.readers.get_mut(&name) {
                    log.reached_end = true;
                }
            });
            return;
        }
        if now() > deadline {
            let why = format!(
                "partition {partition} was not read to its end ({end:?}) by {deadline:?}; read up to {next}"
            );
            record(history, |h| h.stuck.push(why));
            return;
        }
        let invoked_ms = now_ms();
        match client.fetch(topic, partition, next, options).await {
            Ok(r) => {
                let end = *end.get_or_insert(r.high_watermark);
                let read = read_of(invoked_ms, next, &r);
                let progressed = r.next_offset > next;
                next = r.next_offset;
                record(history, |h| log_of(h, &name, partition, true).push(read));
                if !progressed && next < end {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// The history's record of a fetch from `from`, sent at `invoked_ms` and answered now.
fn read_of(invoked_ms: u64, from: u64, r: &fjord_client::FetchResult) -> Read {
    Read {
        invoked_ms,
        at_ms: now_ms(),
        from,
        high_watermark: r.high_watermark,
        records: r
            .records
            .iter()
            .map(|c| (c.offset, String::from_utf8_lossy(&c.value).into_owned()))
            .collect(),
    }
}
