//! The data paths: produce (validate, batch, propose, acknowledge per mode) and fetch (read
//! committed batches from the log, long-polling on the high watermark).
//!
//! Limits are named here; every refusal says which one applied.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use fjord_meta::{Topic, group_id};
use fjord_proto::batch;
use fjord_proto::partitioner::partition_for_key;
use fjord_proto::v1::{
    Acks, FetchRequest, FetchResponse, FetchedBatch, PartitionResult, ProduceRequest, ReadMode,
    Record,
};
use fjord_raft::codec;
use fjord_raft::{GroupError, PartitionHandle, StoredBatch};
use fjord_storage::partition::Outcome;

use crate::error::ApiError;
use crate::node::Node;

/// Bytes of record data in one produce request, at most (also the gRPC message limit, plus
/// framing).
pub const MAX_PRODUCE_REQUEST_BYTES: usize = 8 << 20;
/// Records in one batch, at most.
pub const MAX_BATCH_RECORDS: usize = 100_000;
/// Default and largest acknowledgement wait of a produce.
pub const DEFAULT_PRODUCE_TIMEOUT_MS: u32 = 10_000;
pub const MAX_PRODUCE_TIMEOUT_MS: u32 = 60_000;
/// Default and largest bytes of one fetch answer.
pub const DEFAULT_FETCH_BYTES: u32 = 1 << 20;
pub const MAX_FETCH_BYTES: u32 = 64 << 20;
/// Largest long-poll wait of a fetch.
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;
/// Batches in one fetch answer, at most.
pub const MAX_FETCH_BATCHES: usize = 1024;
/// How long a fetch waits for this node's own write of batches already below the high
/// watermark (see `fetch`), at most.
const STORED_WAIT: Duration = Duration::from_secs(2);

fn find_topic(node: &Node, name: &str) -> Result<Topic, ApiError> {
    node.view()
        .state
        .topic(name)
        .cloned()
        .ok_or_else(|| ApiError::UnknownTopic(name.to_string()))
}

fn check_partition(topic: &Topic, partition: u32) -> Result<(), ApiError> {
    if (partition as usize) < topic.partitions.len() {
        Ok(())
    } else {
        Err(ApiError::UnknownPartition {
            topic: topic.name.clone(),
            partition,
            count: topic.partitions.len() as u32,
        })
    }
}

fn leader_hint(node: &Node, leader: Option<u64>) -> Option<(u64, String)> {
    leader.and_then(|l| node.address_of(l).map(|a| (l, a)))
}

fn not_leader(node: &Node, topic: &Topic, partition: u32, leader: Option<u64>) -> ApiError {
    ApiError::NotLeader {
        this: node.id,
        what: format!("partition {partition} of topic {:?}", topic.name),
        leader: leader_hint(node, leader),
    }
}

/// The local Raft of a partition, or the error that sends the client to the right node.
fn local_partition(
    node: &Node,
    topic: &Topic,
    partition: u32,
) -> Result<PartitionHandle, ApiError> {
    let g = group_id(topic.id, partition);
    match node.registry.partition(g) {
        Some(x) => Ok(x),
        None => {
            let p = &topic.partitions[partition as usize];
            if p.leader.is_some() {
                Err(not_leader(node, topic, partition, p.leader))
            } else {
                Err(ApiError::NotReplica {
                    topic: topic.name.clone(),
                    partition,
                    this: node.id,
                    replicas: p.replicas.clone(),
                })
            }
        }
    }
}

/// The partition a request's unkeyed records go to: in turn among the partitions this node
/// leads (so a client that sends to one node is served there), else in turn among all
/// (the answer then names the leader). One partition per request: a request's unkeyed
/// records stay together.
pub fn unkeyed_partition(turn: u32, led: &[u32], count: u32) -> u32 {
    if led.is_empty() {
        turn % count
    } else {
        led[turn as usize % led.len()]
    }
}

fn check_records(topic: &Topic, records: &[Record]) -> Result<usize, ApiError> {
    let limit = topic.config.effective_max_record_bytes() as usize;
    let mut total = 0;
    for (i, r) in records.iter().enumerate() {
        let size = batch::record_size(r);
        if size > limit {
            return Err(ApiError::Invalid(format!(
                "record {i} is {size} bytes (key + value + headers), over the topic's max_record_bytes of {limit}"
            )));
        }
        total += size;
    }
    if records.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::Invalid(format!(
            "a batch has {} records, over the limit of {MAX_BATCH_RECORDS}",
            records.len()
        )));
    }
    Ok(total)
}

/// Validates a produce request and turns it into one batch per partition.
fn build_batches(
    node: &Node,
    topic: &Topic,
    req: ProduceRequest,
) -> Result<Vec<(u32, StoredBatch)>, ApiError> {
    let now = node.clock.now_ms();
    let count = topic.partitions.len() as u32;
    if !req.records.is_empty() && !req.batches.is_empty() {
        return Err(ApiError::Invalid(
            "a produce request carries either `records` or `batches`, not both".into(),
        ));
    }
    let mut out = Vec::new();
    let mut total = 0usize;
    if !req.records.is_empty() {
        if let Some(p) = req.partition {
            check_partition(topic, p)?;
        }
        total += check_records(topic, &req.records)?;
        // Only a request with unkeyed records and no partition looks at which partitions
        // this node leads.
        let unkeyed = req.partition.is_none() && req.records.iter().any(|r| r.key.is_none());
        let sticky = if unkeyed {
            let turn = node
                .round_robin
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let led: Vec<u32> = (0..count)
                .filter(|p| {
                    node.registry
                        .partition(group_id(topic.id, *p))
                        .is_some_and(|h| h.leadership().leader == Some(node.id))
                })
                .collect();
            unkeyed_partition(turn, &led, count)
        } else {
            0
        };
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        for r in req.records {
            let p = match (req.partition, &r.key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, count),
                (None, None) => sticky,
            };
            by_partition.entry(p).or_default().push(r);
        }
        for (p, records) in by_partition {
            let body = batch::encode(&records);
            out.push((
                p,
                StoredBatch {
                    token: node.token(),
                    producer_id: 0,
                    base_sequence: 0,
                    record_count: records.len() as u32,
                    crc32c: batch::checksum(&body),
                    append_time_ms: now,
                    records: body,
                },
            ));
        }
    } else {
        let mut seen = std::collections::BTreeSet::new();
        for (i, b) in req.batches.into_iter().enumerate() {
            check_partition(topic, b.partition)?;
            if !seen.insert(b.partition) {
                return Err(ApiError::Invalid(format!(
                    "batch {i} is the second batch for partition {} in one request: send one batch per partition",
                    b.partition
                )));
            }
            let records = batch::decode(&b.records, b.crc32c).map_err(|e| match e {
                batch::BatchError::Checksum { .. } => {
                    ApiError::Corrupt(format!("batch {i} (partition {}): {e}", b.partition))
                }
                other => {
                    ApiError::Invalid(format!("batch {i} (partition {}): {other}", b.partition))
                }
            })?;
            if records.is_empty() {
                return Err(ApiError::Invalid(format!(
                    "batch {i} (partition {}) has no records",
                    b.partition
                )));
            }
            if records.len() != b.record_count as usize {
                return Err(ApiError::Invalid(format!(
                    "batch {i} (partition {}) declares {} records but holds {}",
                    b.partition,
                    b.record_count,
                    records.len()
                )));
            }
            total += check_records(topic, &records)?;
            out.push((
                b.partition,
                StoredBatch {
                    token: node.token(),
                    producer_id: b.producer_id,
                    base_sequence: b.base_sequence,
                    record_count: b.record_count,
                    crc32c: b.crc32c,
                    append_time_ms: now,
                    records: b.records,
                },
            ));
        }
    }
    if out.is_empty() {
        return Err(ApiError::Invalid(
            "the produce request has no records: send at least one record or batch".into(),
        ));
    }
    if total > MAX_PRODUCE_REQUEST_BYTES {
        return Err(ApiError::Invalid(format!(
            "the produce request holds {total} bytes of records, over the limit of {MAX_PRODUCE_REQUEST_BYTES}"
        )));
    }
    Ok(out)
}

pub async fn produce(node: &Node, req: ProduceRequest) -> Result<Vec<PartitionResult>, ApiError> {
    let topic = find_topic(node, &req.topic)?;
    let acks = Acks::try_from(req.acks)
        .map_err(|_| ApiError::Invalid(format!("unknown acks mode {}", req.acks)))?;
    let timeout_ms = match req.timeout_ms {
        0 => DEFAULT_PRODUCE_TIMEOUT_MS,
        t if t > MAX_PRODUCE_TIMEOUT_MS => {
            return Err(ApiError::Invalid(format!(
                "timeout_ms {t} is over the limit of {MAX_PRODUCE_TIMEOUT_MS}"
            )));
        }
        t => t,
    };
    let batches = build_batches(node, &topic, req)?;
    let timeout = Duration::from_millis(timeout_ms as u64);
    let futs = batches.into_iter().map(|(p, b)| {
        let topic = &topic;
        async move {
            let count = b.record_count;
            let producer_id = b.producer_id;
            let mut result = PartitionResult {
                partition: p,
                record_count: count,
                ..Default::default()
            };
            match produce_partition(node, topic, p, b, acks, timeout).await {
                Ok(Outcome::Appended { base_offset }) => result.base_offset = base_offset,
                Ok(Outcome::Duplicate { base_offset }) => {
                    result.base_offset = base_offset;
                    result.duplicate = true;
                }
                Ok(Outcome::OutOfOrder { expected, got }) => {
                    result.error = Some(
                        ApiError::OutOfOrder {
                            producer_id,
                            expected,
                            got,
                        }
                        .to_partition_error(),
                    );
                }
                Err(e) => result.error = Some(e.to_partition_error()),
            }
            result
        }
    });
    Ok(futures::future::join_all(futs).await)
}

async fn produce_partition(
    node: &Node,
    topic: &Topic,
    partition: u32,
    b: StoredBatch,
    acks: Acks,
    timeout: Duration,
) -> Result<Outcome, ApiError> {
    let handle = local_partition(node, topic, partition)?;
    let leader = handle.leadership().leader;
    if leader != Some(node.id) {
        return Err(not_leader(node, topic, partition, leader));
    }
    let proposal = async {
        match acks {
            Acks::Cp => handle.propose_cp(b).await,
            Acks::Ap => handle.propose_ap(b).await,
        }
    };
    match tokio::time::timeout(timeout, proposal).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Err(group_error(node, topic, partition, e)),
        Err(_) => Err(ApiError::Timeout(format!(
            "partition {partition} of topic {:?}: not acknowledged within {} ms; the outcome is unknown \
             (retry with the same producer id and sequence to avoid a duplicate)",
            topic.name,
            timeout.as_millis()
        ))),
    }
}

fn group_error(node: &Node, topic: &Topic, partition: u32, e: GroupError) -> ApiError {
    match e {
        GroupError::NotLeader { leader, .. } => not_leader(node, topic, partition, leader),
        GroupError::Unavailable(why) => ApiError::NoLeader(format!(
            "partition {partition} of topic {:?} ({why})",
            topic.name
        )),
        GroupError::Busy(why) => ApiError::Busy(why.to_string()),
        GroupError::Internal(why) => ApiError::Internal(why.to_string()),
    }
}

pub async fn fetch(node: &Node, req: FetchRequest) -> Result<FetchResponse, ApiError> {
    let topic = find_topic(node, &req.topic)?;
    check_partition(&topic, req.partition)?;
    let mode = ReadMode::try_from(req.read)
        .map_err(|_| ApiError::Invalid(format!("unknown read mode {}", req.read)))?;
    let max_bytes = match req.max_bytes {
        0 => DEFAULT_FETCH_BYTES,
        b if b > MAX_FETCH_BYTES => {
            return Err(ApiError::Invalid(format!(
                "max_bytes {b} is over the limit of {MAX_FETCH_BYTES}"
            )));
        }
        b => b,
    } as usize;
    if req.max_wait_ms > MAX_FETCH_WAIT_MS {
        return Err(ApiError::Invalid(format!(
            "max_wait_ms {} is over the limit of {MAX_FETCH_WAIT_MS}",
            req.max_wait_ms
        )));
    }
    let handle = local_partition(node, &topic, req.partition)?;
    if mode == ReadMode::ReadCp {
        // A ReadIndex read: a majority answered this node, as leader, after the fetch
        // arrived, so its committed state is current.
        handle
            .linearizable_read()
            .await
            .map_err(|e| group_error(node, &topic, req.partition, e))?;
    }
    let shared = handle.shared();
    let group = shared.group();
    let mut hw = shared.high_watermark();
    let log_start = node
        .store
        .first_offset(group)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .unwrap_or(hw);
    if req.offset < log_start {
        return Err(ApiError::OutOfRange(format!(
            "offset {} is below the log start offset {log_start} of partition {} of topic {:?}",
            req.offset, req.partition, topic.name
        )));
    }
    if req.offset > hw && mode == ReadMode::ReadCp {
        return Err(ApiError::OutOfRange(format!(
            "offset {} is beyond the end of partition {} of topic {:?} (high watermark {hw})",
            req.offset, req.partition, topic.name
        )));
    }
    if req.offset >= hw && req.max_wait_ms > 0 {
        let mut rx = shared.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms as u64);
        loop {
            hw = *rx.borrow_and_update();
            if hw > req.offset {
                break;
            }
            // A shutting-down node answers long polls at once, so it can drain and stop.
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.changed()) => if !matches!(r, Ok(Ok(()))) { break },
                _ = node.shutdown.cancelled() => break,
            }
        }
    }
    // A leader applies (raising the high watermark) once a majority other than itself has a
    // batch; its own write may still be on its way to redb, where the read looks. Wait for it
    // (a fsync, normally well under a millisecond): an answer without the batches below the
    // high watermark it reports would look like a lost acknowledged record. If the disk is
    // stuck, answer with what is stored; the client asks again from where it got to.
    if req.offset < hw {
        shared
            .wait_stored(hw, tokio::time::Instant::now() + STORED_WAIT)
            .await;
    }
    let batches = if req.offset < hw {
        read_batches(node, group, req.offset, hw, max_bytes)?
    } else {
        Vec::new()
    };
    Ok(FetchResponse {
        batches,
        high_watermark: hw,
        log_start_offset: log_start,
        node_id: node.id,
    })
}

/// Committed batches of `group` from the one holding `offset` on, below `hw`.
fn read_batches(
    node: &Node,
    group: u64,
    offset: u64,
    hw: u64,
    max_bytes: usize,
) -> Result<Vec<FetchedBatch>, ApiError> {
    let internal = |e: fjord_storage::StorageError| ApiError::Internal(e.to_string());
    let Some((first_base, _, _)) = node.store.find_offset(group, offset).map_err(internal)? else {
        return Ok(Vec::new());
    };
    let index: Vec<(u64, u64, u32)> = node
        .store
        .offsets_from(group, first_base, MAX_FETCH_BATCHES)
        .map_err(internal)?
        .into_iter()
        .filter(|(base, _, _)| *base < hw)
        .collect();
    let (Some(first), Some(last)) = (index.first(), index.last()) else {
        return Ok(Vec::new());
    };
    let wanted: HashMap<u64, (u64, u32)> = index.iter().map(|(b, i, c)| (*i, (*b, *c))).collect();
    let entries = node
        .store
        .read_log(
            group,
            first.1..=last.1,
            MAX_FETCH_BATCHES * 4,
            max_bytes + 4096,
        )
        .map_err(internal)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (idx, raw) in entries {
        let Some((base, count)) = wanted.get(&idx).copied() else {
            continue;
        };
        let b = codec::stored_batch(&raw)
            .map_err(|e| ApiError::Corrupt(e.to_string()))?
            .ok_or_else(|| {
                ApiError::Corrupt(format!(
                    "group {group}: offset index points at a non-batch entry {idx}"
                ))
            })?;
        batch::verify(&b.records, b.crc32c).map_err(|e| {
            ApiError::Corrupt(format!(
                "stored batch at offset {base} of group {group}: {e}"
            ))
        })?;
        if !out.is_empty() && bytes + b.records.len() > max_bytes {
            break;
        }
        bytes += b.records.len();
        out.push(FetchedBatch {
            base_offset: base,
            record_count: count,
            crc32c: b.crc32c,
            records: Bytes::clone(&b.records),
            append_time_ms: b.append_time_ms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::unkeyed_partition;

    #[test]
    fn unkeyed_records_go_to_the_partitions_this_node_leads_in_turn() {
        let picks: Vec<u32> = (0..4).map(|t| unkeyed_partition(t, &[1, 3], 4)).collect();
        assert_eq!(picks, [1, 3, 1, 3]);
        // Leading none: every partition in turn (the answer names each one's leader).
        let picks: Vec<u32> = (0..5).map(|t| unkeyed_partition(t, &[], 4)).collect();
        assert_eq!(picks, [0, 1, 2, 3, 0]);
        assert_eq!(unkeyed_partition(u32::MAX, &[2], 4), 2);
    }
}
