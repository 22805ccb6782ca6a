//! Compaction against real processes (the shared model: `fjord_harness::compaction`): the
//! run's topic set to compact before the workload (recorded), and the node log lines that
//! tell when a replica's compaction pass is under way, by which the nemesis times its power
//! losses (`power-loss` during compaction).
//!
//! What must hold: a power loss counts as striking a compaction only when the node's log,
//! read after it was killed, shows a pass started and not finished for some partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fjord_client::{Acks, Client, ClientError, Producer, ProducerConfig, ProducerRecord};
use fjord_harness::compaction as model;
use fjord_harness::history::EventType;
use fjord_harness::workload::{encode, produce, produced};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::db::Db;
use crate::workload::Recorder;

/// How long, past `min_compaction_lag_ms`, the filler waits for a compaction covering it.
const COVER_WAIT: Duration = Duration::from_secs(20);
/// Pause between two looks at the node logs meanwhile.
const COVER_POLL: Duration = Duration::from_millis(250);

/// The log line of a replica starting a compaction pass of a partition (`group=` follows).
pub const PASS_START_LINE: &str = "compaction pass started";
/// The log line of a replica that finished one (`fjord_raft::compaction`'s "compacted").
pub const PASS_DONE_LINE: &str = "compaction: compacted";
/// The process that sets the topic's compaction.
pub const SETTER: u32 = u32::MAX - 6;

/// A run's compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionOptions {
    /// The topic's `min_compaction_lag_ms`.
    pub min_compaction_lag_ms: u64,
}

/// How the power losses of a compaction run went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionHits {
    /// Power losses in the run.
    pub power_losses: u64,
    /// Of those, the ones that waited for a pass to start and saw one.
    pub timed_by_a_pass: u64,
    /// Of those, the ones that struck while some node was mid-pass (its log shows a pass
    /// started and not finished).
    pub mid_pass: u64,
}

impl CompactionHits {
    pub fn describe(&self) -> String {
        format!(
            "power loss during compaction: {} power losses, {} right after a compaction pass \
             started, {} while a node was mid-pass",
            self.power_losses, self.timed_by_a_pass, self.mid_pass
        )
    }
}

fn classify(e: &ClientError) -> EventType {
    if e.is_outcome_unknown() {
        EventType::Info
    } else {
        EventType::Fail
    }
}

/// Sets the topic's `cleanup_policy` (`compact`, or `compact,delete` with retention) and
/// `min_compaction_lag_ms`, and records it.
pub async fn set(
    client: &Client,
    topic: &str,
    opts: CompactionOptions,
    with_retention: bool,
    rec: &Recorder,
) -> Result<()> {
    let policy = model::cleanup_policy(with_retention);
    let op = model::set_compaction(policy, opts.min_compaction_lag_ms);
    rec.record(SETTER, EventType::Invoke, op.clone(), None);
    let lag = opts.min_compaction_lag_ms.to_string();
    let set = [
        ("cleanup_policy", policy),
        ("min_compaction_lag_ms", lag.as_str()),
    ];
    match client.alter_topic_config(topic, &set, &[] as &[&str]).await {
        Ok(_) => {
            rec.record(SETTER, EventType::Ok, op, None);
            Ok(())
        }
        Err(e) => {
            rec.record(SETTER, classify(&e), op, Some(e.to_string()));
            bail!("setting cleanup_policy = {policy} on {topic}: {e}")
        }
    }
}

/// The `group=` of a log line, if it has one.
fn group_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("group="))
        .and_then(|g| g.parse().ok())
}

/// The groups (partitions) whose compaction pass `log` (a node's log from some point on)
/// shows started and not finished.
pub fn mid_pass(log: &str) -> Vec<u64> {
    let mut open: BTreeMap<u64, bool> = BTreeMap::new();
    for line in log.lines() {
        let started = line.contains(PASS_START_LINE);
        if !started && !line.contains(PASS_DONE_LINE) {
            continue;
        }
        if let Some(g) = group_of(line) {
            open.insert(g, started);
        }
    }
    open.into_iter()
        .filter(|&(_, o)| o)
        .map(|(g, _)| g)
        .collect()
}

/// Node `id`'s log after byte `from`, read from there only (the nemesis reads it every few
/// ms while it waits for a pass; the whole log may be megabytes). Empty if unreadable.
pub fn log_after(db: &crate::db::Db, id: u64, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Some(node) = db.nodes.get(&id) else {
        return String::new();
    };
    let mut bytes = Vec::new();
    let read = std::fs::File::open(node.log_path()).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// The `upto=` of a log line, if it has one.
fn upto_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("upto="))
        .and_then(|g| g.parse().ok())
}

/// The highest `upto` of the compactions `log` shows finished on a data topic's `partition`
/// (a group whose low half is the partition and whose high half, the topic's id, is not 0).
pub fn compacted_upto(log: &str, partition: u32) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains(PASS_DONE_LINE))
        .filter(|l| group_of(l).is_some_and(|g| g >> 32 != 0 && g as u32 == partition))
        .filter_map(upto_of)
        .max()
}

/// Writer `i` of the filler: its share of every partition's filler records, one at a time,
/// each recorded; per partition, the lowest offset acknowledged.
async fn fill(
    producer: Producer,
    (partitions, i): (u32, u32),
    rec: Arc<Recorder>,
    timeout: Duration,
) -> BTreeMap<u32, u64> {
    let process = model::FILLER_PROCESS - i;
    let mut first = BTreeMap::new();
    let mine = (0..partitions)
        .flat_map(|p| (0..model::FILLER_RECORDS).map(move |n| (p, n)))
        .skip(i as usize)
        .step_by(model::FILLER_WRITERS as usize);
    for (partition, n) in mine {
        let (value, key) = model::filler(partition, n);
        let record = ProducerRecord::new(encode(value))
            .with_partition(partition)
            .with_key(model::key_bytes(key));
        let invoke = model::keyed(produce(partition, value), key);
        rec.record(process, EventType::Invoke, invoke.clone(), None);
        match tokio::time::timeout(timeout, producer.send(record)).await {
            Ok(Ok(meta)) => {
                let done = model::keyed(produced(partition, value, meta.offset), key);
                rec.record(process, EventType::Ok, done, None);
                let f = first.entry(partition).or_insert(meta.offset);
                *f = (*f).min(meta.offset);
            }
            Ok(Err(e)) => rec.record(process, classify(&e), invoke, Some(e.to_string())),
            Err(_) => {
                let why = "no acknowledgement within the operation timeout".to_string();
                rec.record(process, EventType::Info, invoke, Some(why));
            }
        }
    }
    first
}

/// Once the writes ended and the faults healed: the filler (see
/// `fjord_harness::compaction::FILLER_RECORDS`), then a wait (at most the lag plus
/// [`COVER_WAIT`]) until some node finished a compaction of each partition past the filler's
/// first record, so that the final read sees a log compacted through every record the
/// workload wrote. What to note.
pub async fn settle(
    client: &Client,
    topic: &str,
    (partitions, opts, timeout): (u32, CompactionOptions, Duration),
    rec: &Arc<Recorder>,
    db: &Mutex<Db>,
) -> Result<Vec<String>> {
    let config = ProducerConfig {
        acks: Acks::Cp,
        linger_ms: 2,
        max_batch_bytes: fjord_harness::retention::PRODUCER_MAX_BATCH_BYTES,
        ..ProducerConfig::default()
    };
    let producer = client.producer(topic.to_string(), config)?;
    let from: BTreeMap<u64, u64> = {
        let db = db.lock().await;
        db.ids()
            .into_iter()
            .map(|id| (id, db.log_len(id)))
            .collect()
    };
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..model::FILLER_WRITERS {
        let (producer, rec) = (producer.clone(), rec.clone());
        writers.spawn(fill(producer, (partitions, i), rec, timeout));
    }
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    while let Some(done) = writers.join_next().await {
        for (p, o) in done? {
            let f = first.entry(p).or_insert(o);
            *f = (*f).min(o);
        }
    }
    rec.flush();
    let began = Instant::now();
    let deadline = began + Duration::from_millis(opts.min_compaction_lag_ms) + COVER_WAIT;
    // Bounded by the deadline.
    let uncovered = loop {
        let logs: Vec<String> = {
            let db = db.lock().await;
            from.iter()
                .map(|(&id, &at)| log_after(&db, id, at))
                .collect()
        };
        let uncovered: Vec<u32> = first
            .iter()
            .filter(|&(&p, &f)| {
                !logs
                    .iter()
                    .any(|l| compacted_upto(l, p).is_some_and(|u| u > f))
            })
            .map(|(&p, _)| p)
            .collect();
        if uncovered.is_empty() || Instant::now() > deadline {
            break uncovered;
        }
        tokio::time::sleep(COVER_POLL).await;
    };
    let waited = began.elapsed().as_millis();
    Ok(vec![if uncovered.is_empty() {
        format!(
            "compaction: after the filler, a compaction covered every record the workload \
             wrote in every partition {first:?} (filler's first offsets) within {waited} ms"
        )
    } else {
        format!(
            "compaction: partitions {uncovered:?} were not compacted past the filler within \
             {waited} ms: their final reads check fewer latest records"
        )
    }])
}

/// Whether `log` shows a compaction pass started.
pub fn pass_started(log: &str) -> bool {
    log.contains(PASS_START_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_under_way_from_its_start_line_to_its_compacted_line() {
        let log = "2026-12-06T15:34:58Z  INFO fjord_raft::compaction: compaction pass started \
                   group=4294967298 upto=37\n\
                   2026-12-06T15:34:58Z  INFO fjord_raft::compaction: compaction pass started \
                   group=4294967297 upto=12\n\
                   2026-12-06T15:34:58Z  INFO fjord_raft::compaction: compacted \
                   group=4294967297 upto=12 rewritten=3 keys=50\n";
        assert_eq!(mid_pass(log), vec![4294967298]);
        assert!(pass_started(log));
        assert!(mid_pass("").is_empty());
        let done = format!(
            "{log}2026-12-06T15:34:59Z  INFO fjord_raft::compaction: compacted \
             group=4294967298 upto=37 rewritten=1 keys=50\n"
        );
        assert!(mid_pass(&done).is_empty());
        assert!(!pass_started("purging the log group=1"));
    }

    #[test]
    fn the_highest_finished_compaction_of_a_partition_is_read_from_its_lines() {
        let log = "INFO fjord_raft::compaction: compacted group=4294967298 upto=37 rewritten=1\n\
                   INFO fjord_raft::compaction: compacted group=4294967298 upto=90 rewritten=1\n\
                   INFO fjord_raft::compaction: compaction pass started group=4294967298 upto=120\n\
                   INFO fjord_raft::compaction: compacted group=2 upto=500 rewritten=1\n";
        assert_eq!(compacted_upto(log, 2), Some(90));
        assert_eq!(compacted_upto(log, 1), None);
    }
}
