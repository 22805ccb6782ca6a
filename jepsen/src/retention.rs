//! The log-lifecycle workload against real processes (the shared model:
//! `fjord_harness::retention`): the run's retention set and unset on its topic, the deleter's
//! `DeleteRecords`, the lookups of a partition's log start, and, once the run is quiet, every
//! replica's own bounds. Each is recorded in the history.
//!
//! What must hold: each process here has at most one operation outstanding; a
//! `DeleteRecords` that returned an error is `fail` only when the client says it did not
//! happen (a timeout or broken connection is `info`), and the checker takes every attempt as
//! possibly applied anyway; every loop ends by itself (the run's stop, or a deadline).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fjord_client::{Client, ClientError, ClientTls, OffsetSpec, ReadMode};
use fjord_harness::history::{EventType, ReplicaBounds};
use fjord_harness::retention::{self as model, Bounds, Deleter};
use fjord_proto::v1;
use fjord_proto::v1::fjord_client::FjordClient;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::workload::Recorder;

/// The log line of a replica that installs a snapshot (it was behind its leader's purge).
pub const SNAPSHOT_INSTALL_LINE: &str = "installing a partition snapshot";
/// The log line of a replica that purges its Raft log behind a snapshot.
const PURGE_LINE: &str = "purging the log";
/// How long the replicas may take to agree on their bounds once the run is quiet.
pub const REPLICAS_AGREE_WITHIN: Duration = Duration::from_secs(30);
/// Pause between two rounds of asking the replicas.
const REPLICAS_ASK_EVERY: Duration = Duration::from_millis(500);
/// How long one replica may take to answer.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(2);

fn classify(e: &ClientError) -> EventType {
    if e.is_outcome_unknown() {
        EventType::Info
    } else {
        EventType::Fail
    }
}

/// Sets the topic's `retention_ms` and `retention_bytes` (`None`: no limit) and records them,
/// with the clock bound the checker judges deletions by time with.
pub async fn set(
    client: &Client,
    topic: &str,
    (retention_ms, retention_bytes): (Option<u64>, Option<u64>),
    max_clock_skew_ms: u64,
    rec: &Recorder,
) -> Result<()> {
    let op = model::set_retention(
        retention_ms,
        retention_bytes,
        max_clock_skew_ms,
        rec.start_wall_ms(),
    );
    rec.record(model::SETTER, EventType::Invoke, op.clone(), None);
    let text = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let (value, bytes) = (text(retention_ms), text(retention_bytes));
    let set = [
        ("retention_ms", value.as_str()),
        ("retention_bytes", bytes.as_str()),
    ];
    match client.alter_topic_config(topic, &set, &[] as &[&str]).await {
        Ok(_) => {
            rec.record(model::SETTER, EventType::Ok, op, None);
            Ok(())
        }
        Err(e) => {
            rec.record(model::SETTER, classify(&e), op, Some(e.to_string()));
            bail!("setting retention_ms = {value}, retention_bytes = {bytes} on {topic}: {e}")
        }
    }
}

/// One `DeleteRecords` of `partition` below `before` by `process`, recorded; the log start
/// offset answered, if it succeeded.
pub async fn delete(
    client: &Client,
    topic: &str,
    (partition, before): (u32, u64),
    rec: &Recorder,
    process: u32,
    timeout: Duration,
) -> Option<u64> {
    let invoke = model::delete(partition, before);
    rec.record(process, EventType::Invoke, invoke.clone(), None);
    let answer = tokio::time::timeout(
        timeout,
        client.delete_records(topic, partition, Some(before)),
    )
    .await;
    match answer {
        Ok(Ok(start)) => {
            rec.record(
                process,
                EventType::Ok,
                model::deleted(partition, before, start),
                None,
            );
            Some(start)
        }
        Ok(Err(e)) => {
            rec.record(process, classify(&e), invoke, Some(e.to_string()));
            None
        }
        Err(_) => {
            let why = "no answer within the operation timeout".to_string();
            rec.record(process, EventType::Info, invoke, Some(why));
            None
        }
    }
}

/// One `ListOffsets` earliest of `partition` by `process` in mode `read`, recorded; the log
/// start answered, if any.
pub async fn list_earliest(
    client: &Client,
    topic: &str,
    partition: u32,
    read: ReadMode,
    rec: &Recorder,
    (process, timeout): (u32, Duration),
) -> Option<u64> {
    let invoke = model::list_earliest(partition);
    rec.record(process, EventType::Invoke, invoke.clone(), None);
    let answer = tokio::time::timeout(
        timeout,
        client.list_offset(topic, partition, OffsetSpec::Earliest, read),
    )
    .await;
    match answer {
        Ok(Ok(l)) => {
            let op = model::listed(partition, l.log_start_offset, l.high_watermark);
            rec.record(process, EventType::Ok, op, None);
            Some(l.log_start_offset)
        }
        Ok(Err(e)) => {
            rec.record(process, classify(&e), invoke, Some(e.to_string()));
            None
        }
        Err(_) => {
            let why = "no answer within the operation timeout".to_string();
            rec.record(process, EventType::Info, invoke, Some(why));
            None
        }
    }
}

/// What the deleter needs of the run.
#[derive(Debug, Clone)]
pub struct DeleterOptions {
    pub topic: String,
    pub partitions: u32,
    pub seed: u64,
    pub op_timeout: Duration,
}

/// The deleter: now and then a `DeleteRecords` below an acknowledged offset (see
/// `fjord_harness::retention::Deleter`), until `stop`.
pub async fn deleter(
    client: Client,
    opts: DeleterOptions,
    bounds: Arc<Bounds>,
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    let mut plan = Deleter::new(opts.seed, opts.partitions);
    while !*stop.borrow() {
        let wait = Duration::from_millis(plan.next_delay_ms());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let Some(target) = plan.next(&bounds) else {
            continue;
        };
        let timeout = opts.op_timeout;
        let answered = delete(&client, &opts.topic, target, &rec, model::DELETER, timeout).await;
        if let Some(start) = answered {
            bounds.started(target.0, start);
        }
    }
}

/// One replica's own bounds of `partition`, asked of node `address` alone (AP), over TLS
/// with the run's client settings `tls` when it has them.
async fn replica_bounds(
    address: &str,
    tls: Option<&ClientTls>,
    topic: &str,
    partition: u32,
) -> Option<(u64, u64)> {
    let endpoint = crate::tls::endpoint(address, tls, REPLICA_TIMEOUT).ok()?;
    let channel = tokio::time::timeout(REPLICA_TIMEOUT, endpoint.connect())
        .await
        .ok()?
        .ok()?;
    own_bounds(&mut FjordClient::new(channel), topic, partition)
        .await
        .ok()
}

/// The log start and high watermark of `partition` as the node `c` is connected to holds
/// them itself (ListOffsets earliest, AP).
pub(crate) async fn own_bounds(
    c: &mut FjordClient<tonic::transport::Channel>,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64), tonic::Status> {
    let answer = c
        .list_offsets(v1::ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            query: v1::OffsetQuery::OffsetEarliest as i32,
            read: v1::ReadMode::ReadAp as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((answer.log_start_offset, answer.high_watermark))
}

/// Every replica of every partition: its own log start and high watermark, asked until all
/// replicas up agree or [`REPLICAS_AGREE_WITHIN`] passed; then recorded, one
/// `replica_starts` per partition (`fail` when no replica answered). `replicas`: each
/// partition's replicas; `addresses`: each node's, dialed with the run's client TLS settings
/// `tls` if any; `down`: nodes left down.
pub async fn replica_starts(
    topic: &str,
    replicas: &BTreeMap<u32, Vec<u64>>,
    (addresses, tls): (&BTreeMap<u64, String>, Option<&ClientTls>),
    down: &BTreeSet<u64>,
    rec: &Recorder,
) {
    let until = Instant::now() + REPLICAS_AGREE_WITHIN;
    let mut answers: BTreeMap<u32, Vec<ReplicaBounds>> = BTreeMap::new();
    // Bounded: one round per REPLICAS_ASK_EVERY until the deadline.
    loop {
        answers.clear();
        let mut settled = true;
        for (&partition, nodes) in replicas {
            let mut got = Vec::new();
            for &node in nodes.iter().filter(|n| !down.contains(n)) {
                let Some(address) = addresses.get(&node) else {
                    continue;
                };
                match replica_bounds(address, tls, topic, partition).await {
                    Some((log_start_offset, high_watermark)) => got.push(ReplicaBounds {
                        node,
                        log_start_offset,
                        high_watermark,
                    }),
                    None => settled = false,
                }
            }
            settled &= model::replicas_agree(&got);
            answers.insert(partition, got);
        }
        if settled || Instant::now() > until {
            break;
        }
        tokio::time::sleep(REPLICAS_ASK_EVERY).await;
    }
    for (partition, got) in answers {
        rec.record(
            model::SETTER,
            EventType::Invoke,
            model::replica_starts(partition, vec![]),
            None,
        );
        if got.is_empty() {
            let why = "no replica answered".to_string();
            let op = model::replica_starts(partition, vec![]);
            rec.record(model::SETTER, EventType::Fail, op, Some(why));
        } else {
            let op = model::replica_starts(partition, got);
            rec.record(model::SETTER, EventType::Ok, op, None);
        }
    }
}

/// How many times `log` (a node's log from some point on) says the Raft log of a data
/// topic's `partition` was purged: purge lines of a group whose low half is the partition and
/// whose high half (the topic's id) is not 0 (the metadata group). The run has one data topic.
pub fn partition_purges(log: &str, partition: u32) -> usize {
    log.lines()
        .filter(|l| l.contains(PURGE_LINE))
        .filter(|l| {
            let group = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("group="))
                .and_then(|g| g.parse::<u64>().ok());
            group.is_some_and(|g| g >> 32 != 0 && g as u32 == partition)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker's rule by size counts on `record_bytes_bound` being at least what fjord
    /// stores of each harness record.
    #[test]
    fn a_harness_record_is_stored_in_no_more_than_its_bound() {
        for value in [1, 99, 123_456, u64::MAX - 1] {
            for key in [None, Some(0), Some(49)] {
                for timestamp_ms in [0, 1_796_616_804_863, i64::MIN, i64::MAX] {
                    let record = v1::Record {
                        key: key.map(|k| fjord_harness::compaction::key_bytes(k).into()),
                        value: fjord_harness::workload::encode(value).into_bytes().into(),
                        headers: vec![],
                        timestamp_ms,
                    };
                    let stored = fjord_proto::batch::encode(&[record]).len() as u64;
                    let bound = model::record_bytes_bound(value, key);
                    assert!(
                        stored <= bound,
                        "{value} {key:?} {timestamp_ms}: {stored} > {bound}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_purge_line_names_its_partition_by_its_group() {
        let log = "2026-12-06T15:34:58Z  INFO fjord_raft::log_store: purging the log \
                   group=4294967298 upto=37\n\
                   2026-12-06T15:35:00Z  INFO fjord_raft::log_store: purging the log group=0 upto=9";
        assert_eq!(partition_purges(log, 2), 1);
        assert_eq!(partition_purges(log, 1), 0);
        assert_eq!(
            partition_purges(log, 0),
            0,
            "the metadata group is no partition"
        );
        assert_eq!(partition_purges("nothing here group=4294967298", 2), 0);
    }
}

/// A `follower-behind-purge` fault, as it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeLag {
    /// The follower held down, and the partition whose log start moved.
    pub node: u64,
    pub partition: u32,
    /// The log start the `DeleteRecords` answered, if it succeeded.
    pub start: Option<u64>,
    /// Whether the partition's leader purged its log after the `DeleteRecords`.
    pub purged: bool,
    /// How long it was down, in ms.
    pub down_ms: u64,
    /// Whether it logged installing a partition snapshot after its restart.
    pub installed_snapshot: bool,
}

impl PurgeLag {
    /// What happened up to the follower's restart, for the fault's window.
    pub fn so_far(&self) -> String {
        let start = match self.start {
            Some(start) => format!(
                "a DeleteRecords moved partition {}'s log start to {start}",
                self.partition
            ),
            None => "the DeleteRecords did not succeed".to_string(),
        };
        let purge = if self.purged {
            "the leader purged its log behind it"
        } else {
            "no purge by the leader seen"
        };
        format!("{start}; {purge}; restarted after {} ms", self.down_ms)
    }

    /// The fault's outcome, for the run's notes.
    pub fn describe(&self) -> String {
        let start = self
            .start
            .map_or("the DeleteRecords did not succeed".to_string(), |s| {
                format!("partition {}'s log start moved to {s}", self.partition)
            });
        format!(
            "follower-behind-purge: n{} down {} ms; {start}; {}; after its restart it {}",
            self.node,
            self.down_ms,
            if self.purged {
                "the leader purged its log behind the new start"
            } else {
                "no purge seen in time"
            },
            if self.installed_snapshot {
                "installed a partition snapshot"
            } else {
                "did NOT install a partition snapshot"
            }
        )
    }
}
