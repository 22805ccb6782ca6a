//! The data paths: produce (validate, batch, propose, acknowledge per mode) and fetch (read
//! committed batches from the log, long-polling on the high watermark), on the domain types
//! of [`crate::wire`], which converts the gRPC messages at the edge. The committed batches
//! themselves are read below, next to the log ([`fjord_raft::read`]).
//!
//! Limits are named here and in [`crate::wire`]; every refusal says which one applied.

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_meta::{Topic, group_id};
use fjord_proto::batch;
use fjord_proto::partitioner::partition_for_key;
use fjord_proto::v1::Record;
use fjord_raft::{GroupError, PartitionHandle, ReadLimits, StoredBatch, committed_batches};
use fjord_storage::partition::Outcome;

use crate::error::{ApiError, Invalid, NoLeaderCause, Subject};
use crate::node::Node;
pub use crate::wire::MAX_FETCH_BYTES;
use crate::wire::{Acks, Fetch, Fetched, Produce, ProduceBody, Produced, ProducerBatch, ReadMode};
use crate::wire::{DeleteRecords, ListOffsets, OffsetFound, OffsetQuery};

/// Bytes of record data in one produce request, at most (also the gRPC message limit, plus
/// framing).
pub const MAX_PRODUCE_REQUEST_BYTES: usize = 8 << 20;
/// Records in one batch, at most.
pub const MAX_BATCH_RECORDS: usize = fjord_proto::prescan::MAX_RECORDS;
/// Batches in one fetch answer, at most.
pub const MAX_FETCH_BATCHES: usize = 1024;
/// How long a fetch waits for this node's own write of batches already below the high
/// watermark (see `fetch`), at most.
pub(crate) const STORED_WAIT: Duration = Duration::from_secs(2);

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
    leader.and_then(|l| node.client_address_of(l).map(|a| (l, a)))
}

fn not_leader(node: &Node, topic: &Topic, partition: u32, leader: Option<u64>) -> ApiError {
    ApiError::NotLeader {
        this: node.id(),
        of: partition_subject(topic, partition),
        leader: leader_hint(node, leader),
    }
}

fn partition_subject(topic: &Topic, partition: u32) -> Subject {
    Subject::Partition {
        topic: topic.name.clone(),
        partition,
    }
}

/// The local Raft of a partition, or the error that sends the client to the right node.
fn local_partition(
    node: &Node,
    topic: &Topic,
    partition: u32,
) -> Result<PartitionHandle, ApiError> {
    let g = group_id(topic.id, partition);
    match node.partition(g) {
        Some(x) => Ok(x),
        None => {
            let p = &topic.partitions[partition as usize];
            if p.leader.is_some() {
                Err(not_leader(node, topic, partition, p.leader))
            } else {
                Err(ApiError::NotReplica {
                    topic: topic.name.clone(),
                    partition,
                    this: node.id(),
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
            return Err(Invalid::RecordTooLarge {
                index: i,
                bytes: size,
                limit,
            }
            .into());
        }
        total += size;
    }
    if records.len() > MAX_BATCH_RECORDS {
        return Err(Invalid::TooManyRecords {
            count: records.len(),
            limit: MAX_BATCH_RECORDS,
        }
        .into());
    }
    Ok(total)
}

pub use fjord_raft::types::MAX_TIMESTAMP_AHEAD_MS;

/// The largest timestamp of `records`, a record without one (0) counting as `append_time_ms`
/// (as a consumer sees it), at most [`MAX_TIMESTAMP_AHEAD_MS`] past `append_time_ms`.
fn max_timestamp(records: &[Record], append_time_ms: i64) -> i64 {
    records
        .iter()
        .map(|r| {
            if r.timestamp_ms != 0 {
                r.timestamp_ms
            } else {
                append_time_ms
            }
        })
        .max()
        .unwrap_or(append_time_ms)
        .min(append_time_ms.saturating_add(MAX_TIMESTAMP_AHEAD_MS))
}

/// The records of a request in the simple form, placed and encoded: one batch per partition.
fn record_batches(
    node: &Node,
    topic: &Topic,
    records: Vec<Record>,
    partition: Option<u32>,
) -> Result<(Vec<(u32, StoredBatch)>, usize), ApiError> {
    let count = topic.partitions.len() as u32;
    if let Some(p) = partition {
        check_partition(topic, p)?;
    }
    let total = check_records(topic, &records)?;
    // Only a request with unkeyed records and no partition looks at which partitions this
    // node leads.
    let unkeyed = partition.is_none() && records.iter().any(|r| r.key.is_none());
    let sticky = if unkeyed {
        let turn = node.next_turn();
        let led: Vec<u32> = (0..count)
            .filter(|p| node.leads(group_id(topic.id, *p)))
            .collect();
        unkeyed_partition(turn, &led, count)
    } else {
        0
    };
    let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for r in records {
        let p = match (partition, &r.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => sticky,
        };
        by_partition.entry(p).or_default().push(r);
    }
    let now = node.now_ms();
    let out = by_partition
        .into_iter()
        .map(|(p, records)| {
            let body = batch::encode(&records);
            let batch = StoredBatch {
                token: node.token(),
                producer_id: 0,
                producer_epoch: 0,
                base_sequence: 0,
                record_count: records.len() as u32,
                crc32c: batch::checksum(&body),
                append_time_ms: now,
                max_timestamp_ms: max_timestamp(&records, now),
                records: body,
                compaction: None,
            };
            (p, batch)
        })
        .collect();
    Ok((out, total))
}

/// The batches of a request in the producer-encoded form, each checked against its CRC, its
/// declared count and the topic's limits.
fn producer_batches(
    node: &Node,
    topic: &Topic,
    batches: Vec<ProducerBatch>,
) -> Result<(Vec<(u32, StoredBatch)>, usize), ApiError> {
    // Counted on the wire before any is decoded: each batch's records, and the headers of all
    // (decoding makes a struct of each, many times its bytes when empty).
    let mut counted = fjord_proto::prescan::Counts::default();
    for b in &batches {
        let c = fjord_proto::prescan::record_list(&b.records);
        counted.records = counted.records.max(c.records);
        counted.headers += c.headers;
    }
    if let Some(why) = counted.over_limit() {
        return Err(Invalid::OverWireLimit(why).into());
    }
    let now = node.now_ms();
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut seen = std::collections::BTreeSet::new();
    for (i, b) in batches.into_iter().enumerate() {
        let partition = b.partition;
        check_partition(topic, partition)?;
        if !seen.insert(partition) {
            return Err(Invalid::SecondBatch {
                batch: i,
                partition,
            }
            .into());
        }
        let records = batch::decode(&b.records, b.crc32c).map_err(|source| match source {
            batch::BatchError::Checksum { .. } => ApiError::CorruptBatch {
                batch: i,
                partition,
                source,
            },
            source => Invalid::Malformed {
                batch: i,
                partition,
                source,
            }
            .into(),
        })?;
        if records.is_empty() {
            return Err(Invalid::EmptyBatch {
                batch: i,
                partition,
            }
            .into());
        }
        if records.len() != b.record_count as usize {
            return Err(Invalid::CountMismatch {
                batch: i,
                partition,
                declared: b.record_count,
                held: records.len(),
            }
            .into());
        }
        total += check_records(topic, &records)?;
        out.push((
            b.partition,
            StoredBatch {
                token: node.token(),
                producer_id: b.producer_id,
                producer_epoch: b.producer_epoch,
                base_sequence: b.base_sequence,
                record_count: b.record_count,
                crc32c: b.crc32c,
                append_time_ms: now,
                max_timestamp_ms: max_timestamp(&records, now),
                records: b.records,
                compaction: None,
            },
        ));
    }
    Ok((out, total))
}

/// Appends a produce's batches, each to its partition, concurrently; one answer per batch.
pub async fn produce(node: &Node, req: Produce) -> Result<Vec<Produced>, ApiError> {
    let topic = find_topic(node, &req.topic)?;
    let (batches, total) = match req.body {
        ProduceBody::Records { records, partition } => {
            record_batches(node, &topic, records, partition)?
        }
        ProduceBody::Batches(batches) => producer_batches(node, &topic, batches)?,
    };
    if batches.is_empty() {
        return Err(Invalid::NoRecords.into());
    }
    if total > MAX_PRODUCE_REQUEST_BYTES {
        return Err(Invalid::RequestTooLarge {
            bytes: total,
            limit: MAX_PRODUCE_REQUEST_BYTES,
        }
        .into());
    }
    let (acks, timeout) = (req.acks, req.timeout);
    let futs = batches.into_iter().map(|(p, b)| {
        let topic = &topic;
        async move {
            let record_count = b.record_count;
            let bytes = b.records.len() as u64;
            let (producer_id, epoch) = (b.producer_id, b.producer_epoch);
            let result = produce_partition(node, topic, p, b, acks, timeout)
                .await
                .and_then(|outcome| match outcome {
                    Outcome::Appended { base_offset } => {
                        node.metrics().appended(u64::from(record_count), bytes);
                        Ok((base_offset, false))
                    }
                    Outcome::Duplicate { base_offset } => Ok((base_offset, true)),
                    Outcome::OutOfOrder { expected, got } => Err(ApiError::OutOfOrder {
                        producer_id,
                        expected,
                        got,
                    }),
                    Outcome::Fenced { epoch, current } => Err(ApiError::ProducerFenced {
                        producer_id,
                        epoch,
                        current,
                    }),
                    Outcome::SequenceReused {
                        base_sequence,
                        base_offset,
                    } => Err(ApiError::SequenceReused {
                        producer_id,
                        epoch,
                        base_sequence,
                        base_offset,
                    }),
                });
            Produced {
                partition: p,
                record_count,
                result,
            }
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
    if leader != Some(node.id()) {
        return Err(not_leader(node, topic, partition, leader));
    }
    // Only here, at the leader of a client produce: replication, consumer group writes and
    // deletes are never refused for space (see `crate::disk`).
    node.disk().check_produce()?;
    let proposal = async {
        // The producer's id and epoch, against the metadata (a metadata read only for an id
        // this node's view has not seen allocated).
        crate::producer_ids::check_batch(node, &node.view().state, b.producer_id, b.producer_epoch)
            .await?;
        match acks {
            Acks::Cp => handle.propose_cp(b).await,
            Acks::Ap => handle.propose_ap(b).await,
        }
        .map_err(|e| group_error(node, partition_subject(topic, partition), e))
    };
    match tokio::time::timeout(timeout, proposal).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Timeout {
            topic: topic.name.clone(),
            partition,
            timeout,
        }),
    }
}

/// A local group's refusal as the client's error about `of`: a leader hint when this node
/// does not lead, "no leader, retry" when the group cannot answer now.
pub(crate) fn group_error(node: &Node, of: Subject, e: GroupError) -> ApiError {
    match e {
        GroupError::NotLeader { leader, .. } => ApiError::NotLeader {
            this: node.id(),
            of,
            leader: leader_hint(node, leader),
        },
        GroupError::Unavailable(why) => ApiError::no_leader(of, NoLeaderCause::Unavailable(why)),
        GroupError::Busy(why) => ApiError::Busy(why),
        GroupError::Internal(why) => ApiError::Internal(why),
    }
}

/// Waits until the high watermark passes `offset`, at most `max_wait`, and returns it.
async fn long_poll(
    node: &Node,
    shared: &fjord_raft::partition_sm::PartitionShared,
    offset: u64,
    max_wait: Duration,
) -> u64 {
    let mut rx = shared.subscribe();
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        let hw = *rx.borrow_and_update();
        if hw > offset {
            return hw;
        }
        // A shutting-down node answers long polls at once, so it can drain and stop.
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.changed()) => if !matches!(r, Ok(Ok(()))) { return hw },
            _ = node.stopping() => return hw,
        }
    }
}

/// This node's replica of a partition, ready to be read in `read` mode: for CP, a ReadIndex
/// read confirmed that it leads (a majority answered it after the call began), so its
/// committed state is current.
async fn readable_partition(
    node: &Node,
    topic: &str,
    partition: u32,
    read: ReadMode,
) -> Result<(Topic, PartitionHandle), ApiError> {
    let topic = find_topic(node, topic)?;
    check_partition(&topic, partition)?;
    let handle = local_partition(node, &topic, partition)?;
    if read == ReadMode::Cp {
        handle
            .linearizable_read()
            .await
            .map_err(|e| group_error(node, partition_subject(&topic, partition), e))?;
    }
    Ok((topic, handle))
}

/// Reads committed batches of one partition, long-polling on its high watermark.
pub async fn fetch(node: &Node, req: Fetch) -> Result<Fetched, ApiError> {
    let (topic, handle) = readable_partition(node, &req.topic, req.partition, req.read).await?;
    let shared = handle.shared();
    let group = shared.group();
    let mut hw = shared.high_watermark();
    let log_start = shared.log_start_offset();
    if req.offset < log_start {
        return Err(ApiError::BelowLogStart {
            topic: topic.name,
            partition: req.partition,
            offset: req.offset,
            log_start,
        });
    }
    if req.offset > hw && req.read == ReadMode::Cp {
        return Err(ApiError::BeyondEnd {
            topic: topic.name,
            partition: req.partition,
            offset: req.offset,
            high_watermark: hw,
        });
    }
    if req.offset >= hw && !req.max_wait.is_zero() {
        hw = long_poll(node, shared, req.offset, req.max_wait).await;
    }
    // A leader applies (raising the high watermark) once a majority other than itself has a
    // batch; its own write may still be on its way to redb, where the read looks. Wait for it
    // (a fsync, normally well under a millisecond): an answer without the batches below the
    // high watermark it reports would look like a lost acknowledged record. If the disk is
    // stuck, answer with what is stored; the client asks again from where it got to.
    let batches = if req.offset < hw {
        shared
            .wait_stored(hw, tokio::time::Instant::now() + STORED_WAIT)
            .await;
        let limits = ReadLimits {
            max_bytes: req.max_bytes,
            max_batches: MAX_FETCH_BATCHES,
        };
        committed_batches(node.store(), group, req.offset, hw, limits)?
    } else {
        Vec::new()
    };
    let (records, bytes) = batches.iter().fold((0u64, 0u64), |(r, b), batch| {
        let kept = if batch.offset_deltas.is_empty() {
            u64::from(batch.record_count)
        } else {
            batch.offset_deltas.len() as u64
        };
        (r + kept, b + batch.records.len() as u64)
    });
    node.metrics().fetched(records, bytes);
    Ok(Fetched {
        batches,
        high_watermark: hw,
        log_start_offset: log_start,
        node_id: node.id(),
    })
}

/// Deletes a partition's records below an offset (CP, on its leader): the new log start offset.
pub async fn delete_records(node: &Node, req: DeleteRecords) -> Result<u64, ApiError> {
    // Leadership first, with a current high watermark: a follower, or a new leader still
    // applying, must not answer "beyond the end" for an offset the partition holds.
    let (topic, handle) = readable_partition(node, &req.topic, req.partition, ReadMode::Cp).await?;
    let hw = handle.shared().high_watermark();
    let before = req.before.unwrap_or(hw);
    if before > hw {
        return Err(ApiError::BeyondEnd {
            topic: topic.name,
            partition: req.partition,
            offset: before,
            high_watermark: hw,
        });
    }
    match tokio::time::timeout(req.timeout, handle.delete_records(before, 0)).await {
        Ok(result) => {
            result.map_err(|e| group_error(node, partition_subject(&topic, req.partition), e))
        }
        Err(_) => Err(ApiError::Timeout {
            topic: topic.name.clone(),
            partition: req.partition,
            timeout: req.timeout,
        }),
    }
}

/// Finds an offset of a partition: earliest, latest, or the first record at or after a time.
pub async fn list_offsets(node: &Node, req: ListOffsets) -> Result<OffsetFound, ApiError> {
    let (_, handle) = readable_partition(node, &req.topic, req.partition, req.read).await?;
    let shared = handle.shared();
    let hw = shared.high_watermark();
    let log_start = shared.log_start_offset();
    let mut found = OffsetFound {
        offset: None,
        timestamp_ms: -1,
        log_start_offset: log_start,
        high_watermark: hw,
        node_id: node.id(),
    };
    match req.query {
        OffsetQuery::Latest => found.offset = Some(hw),
        OffsetQuery::Earliest => found.offset = Some(log_start),
        OffsetQuery::ByTime(ts) => {
            shared
                .wait_stored(hw, tokio::time::Instant::now() + STORED_WAIT)
                .await;
            if let Some((offset, at)) = offset_for_time(node, shared, ts, log_start, hw)? {
                found.offset = Some(offset);
                found.timestamp_ms = at;
            }
        }
    }
    Ok(found)
}

/// The first committed offset at or after time `ts` in this node's replica of a partition
/// (as applied here), or `None` when no record is that recent.
pub(crate) async fn local_offset_for_time(
    node: &Node,
    handle: &PartitionHandle,
    ts: i64,
) -> Result<Option<u64>, ApiError> {
    let shared = handle.shared();
    let (start, hw) = (shared.log_start_offset(), shared.high_watermark());
    shared
        .wait_stored(hw, tokio::time::Instant::now() + STORED_WAIT)
        .await;
    Ok(offset_for_time(node, shared, ts, start, hw)?.map(|(o, _)| o))
}

/// The first committed record at or after `log_start` whose timestamp is at least `ts`, found
/// through the time index: the first batch whose running largest timestamp reached `ts` holds
/// a record that reached it; later records may be older (producers' clocks), earlier ones are
/// all older. With the record's timestamp, or -1 for the position after a record that reached
/// `ts` and is no longer stored (see the end).
fn offset_for_time(
    node: &Node,
    shared: &fjord_raft::partition_sm::PartitionShared,
    ts: i64,
    log_start: u64,
    hw: u64,
) -> Result<Option<(u64, i64)>, ApiError> {
    let group = shared.group();
    let Some(row) = shared.offset_for_time(ts)? else {
        return Ok(None);
    };
    let from = row.base_offset.max(log_start);
    if from >= hw {
        return Ok(None);
    }
    let limits = ReadLimits {
        max_bytes: 1 << 20,
        max_batches: TIME_SEARCH_BATCHES,
    };
    let batches = committed_batches(node.store(), group, from, hw, limits)?;
    for b in &batches {
        let records = batch::decode_unchecked(&b.records).map_err(|source| {
            fjord_raft::ReadError::Corrupt {
                group,
                what: fjord_raft::read::Corruption::Batch {
                    base_offset: b.base_offset,
                    source,
                },
            }
        })?;
        for (i, r) in records.iter().enumerate() {
            // A compacted batch lists its records' offsets.
            let delta = b.offset_deltas.get(i).map_or(i as u64, |d| u64::from(*d));
            let offset = b.base_offset + delta;
            let at = if r.timestamp_ms != 0 {
                r.timestamp_ms
            } else {
                b.append_time_ms
            };
            if offset >= from && at >= ts {
                return Ok(Some((offset, at)));
            }
        }
    }
    // The record that raised the largest timestamp to `ts` is no longer stored (deleted below
    // the log start, or compacted away) and no record of the next batches reaches it: the
    // first record kept after it, where a replay from `ts` misses nothing, with no timestamp
    // (-1): its own is older than `ts`.
    Ok(batches.first().map(|b| (from.max(b.base_offset), -1)))
}

/// Batches a search by time reads past the time index's answer, at most.
const TIME_SEARCH_BATCHES: usize = 16;

#[cfg(test)]
mod tests {
    use super::{MAX_TIMESTAMP_AHEAD_MS, Record, max_timestamp, unkeyed_partition};

    #[test]
    fn a_timestamp_far_ahead_counts_at_most_an_hour_ahead() {
        let at = |ts: i64| Record {
            timestamp_ms: ts,
            ..Record::default()
        };
        assert_eq!(max_timestamp(&[at(5_000), at(0)], 9_000), 9_000);
        assert_eq!(max_timestamp(&[at(12_000)], 9_000), 12_000);
        // One record stamped for the year 292,278,994 would hold retention by time back for
        // ever (the partition's largest timestamp only grows).
        assert_eq!(
            max_timestamp(&[at(i64::MAX), at(1)], 9_000),
            9_000 + MAX_TIMESTAMP_AHEAD_MS
        );
    }

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
