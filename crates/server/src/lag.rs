//! A group's lag in time, as DescribeGroup shows it: for each partition, the age of the
//! oldest record the group has not consumed (the record at its committed offset).
//!
//! The coordinator's runner answers a description from memory; this reads one record per
//! partition afterwards, outside the runner (it never holds up the group's other requests):
//! from this node's replica when it has one, else from the partition's leader over the
//! node-to-node service ([`crate::partition_read`], `ReadPartition` on the peer port, with
//! this node's identity: no client credential travels). At most [`MAX_LAG_PROBES`]
//! partitions per description, [`PROBES_AT_ONCE`] at a time, each within [`PROBE_TIMEOUT`];
//! a partition not read has no `lag_ms`. Only partitions of topics the requester may read
//! are read: the caller checks that (`readable`) before anything is asked of a peer.
//!
//! The metrics' lag in seconds ([`crate::metrics`]) reads this node's replicas with
//! [`read_replica`], without waiting and without the network.

use std::sync::Arc;
use std::time::Duration;

use fjord_proto::v1::PartitionOffset;
use fjord_raft::peer::wire::PartitionRead;
use fjord_raft::{CommittedBatch, PartitionHandle, ReadLimits, committed_batches};
use futures::stream::{self, StreamExt};

use crate::error::{ApiError, Subject};
use crate::node::Node;

/// Partitions of one description whose lag in time is read, at most.
pub const MAX_LAG_PROBES: usize = 1_000;
/// Partitions read at once.
pub const PROBES_AT_ONCE: usize = 16;
/// How long one partition's read may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Batches of the log one read of a record's timestamp reads, at most (the one holding the
/// offset, returned whole).
pub const PROBE_BATCHES: usize = 1;

/// What one read of a partition at the group's committed offset found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub high_watermark: u64,
    /// The timestamp of the record at the offset read, if the read found it.
    pub oldest_ms: Option<i64>,
}

/// Reads each partition's oldest unconsumed record and fills in `lag_ms` (and a fresher high
/// watermark and `lag_records`), for the topics `readable` allows (the requester's rights,
/// checked here before any read).
pub async fn fill(
    node: &Arc<Node>,
    offsets: &mut [PartitionOffset],
    readable: impl Fn(&str) -> bool,
) {
    let wanted: Vec<Option<(String, u32, u64)>> = offsets
        .iter()
        .take(MAX_LAG_PROBES)
        .map(|o| {
            readable(&o.topic).then(|| {
                (
                    o.topic.clone(),
                    o.partition,
                    o.committed_offset.unwrap_or(0),
                )
            })
        })
        .collect();
    let found: Vec<Option<Probe>> = stream::iter(wanted)
        .map(|w| {
            let node = node.clone();
            async move {
                let (topic, partition, offset) = w?;
                let read = probe(&node, topic, partition, offset);
                tokio::time::timeout(PROBE_TIMEOUT, read).await.ok()?
            }
        })
        .buffered(PROBES_AT_ONCE)
        .collect()
        .await;
    let now_ms = node.now_ms();
    for (o, p) in offsets.iter_mut().zip(found) {
        if let Some(p) = p {
            apply(o, p, now_ms);
        }
    }
}

/// Folds what a read found into a partition's entry.
pub fn apply(o: &mut PartitionOffset, p: Probe, now_ms: i64) {
    o.high_watermark = o.high_watermark.max(p.high_watermark);
    let records = o
        .high_watermark
        .saturating_sub(o.committed_offset.unwrap_or(0));
    o.lag_records = Some(records);
    o.lag_ms = lag_ms(records, p.oldest_ms, now_ms);
}

/// The lag in time: 0 with nothing to consume, else the oldest unconsumed record's age (never
/// negative: a producer's clock ahead of this node's counts as no lag).
pub fn lag_ms(lag_records: u64, oldest_ms: Option<i64>, now_ms: i64) -> Option<i64> {
    if lag_records == 0 {
        return Some(0);
    }
    oldest_ms.map(|t| now_ms.saturating_sub(t).max(0))
}

/// One record of `topic`/`partition` at `offset`: from this node's replica, else its leader's
/// (over the peer port).
async fn probe(node: &Node, topic: String, partition: u32, offset: u64) -> Option<Probe> {
    let view = node.view();
    let t = view.state.topic(&topic)?;
    let group = fjord_meta::group_id(t.id, partition);
    if let Some(h) = node.partition(group) {
        return probe_replica(node, &h, offset).await.ok();
    }
    let leader = t.partitions.get(partition as usize)?.leader?;
    let req = PartitionRead {
        group_id: group,
        offset_for_time: None,
        record_time_at: Some(offset),
    };
    let of = Subject::Partition { topic, partition };
    let r = crate::partition_read::ask(node, leader, of, req)
        .await
        .ok()?;
    Some(Probe {
        high_watermark: r.high_watermark,
        oldest_ms: r.timestamp_ms,
    })
}

/// The high watermark of this node's replica of a partition and the timestamp of its record at
/// `offset` (the first kept at or after it, and at or after the log start), from the store
/// alone: no wait, no network. No timestamp when the offset is at or past the high watermark,
/// or the record is not stored here yet.
pub fn read_replica(node: &Node, handle: &PartitionHandle, offset: u64) -> Result<Probe, ApiError> {
    let shared = handle.shared();
    let high_watermark = shared.high_watermark();
    let from = offset.max(shared.log_start_offset());
    if from >= high_watermark {
        return Ok(Probe {
            high_watermark,
            oldest_ms: None,
        });
    }
    let limits = ReadLimits {
        max_bytes: 1,
        max_batches: PROBE_BATCHES,
    };
    let batches = committed_batches(node.store(), shared.group(), from, high_watermark, limits)?;
    Ok(Probe {
        high_watermark,
        oldest_ms: record_time(&batches, from),
    })
}

/// [`read_replica`] once this node's own write of the records below the high watermark is
/// stored (a leader applies a batch once a majority other than itself has it; its own write
/// may still be on its way), waiting at most [`crate::data::STORED_WAIT`].
pub async fn probe_replica(
    node: &Node,
    handle: &PartitionHandle,
    offset: u64,
) -> Result<Probe, ApiError> {
    let shared = handle.shared();
    let deadline = tokio::time::Instant::now() + crate::data::STORED_WAIT;
    shared.wait_stored(shared.high_watermark(), deadline).await;
    read_replica(node, handle, offset)
}

/// The timestamp of the first record at or after `offset` in `batches` (a record without one
/// counts as its batch's append time).
pub fn record_time(batches: &[CommittedBatch], offset: u64) -> Option<i64> {
    batches.iter().find_map(|b| {
        let end = b.base_offset.checked_add(u64::from(b.record_count))?;
        if offset >= end {
            return None;
        }
        let records = fjord_proto::batch::decode_unchecked(&b.records).ok()?;
        // A compacted batch lists its records' offsets: the first kept at or after `offset`.
        let at = if b.offset_deltas.is_empty() {
            offset.saturating_sub(b.base_offset) as usize
        } else {
            b.offset_deltas
                .iter()
                .position(|d| b.base_offset + u64::from(*d) >= offset)?
        };
        let r = records.get(at)?;
        Some(if r.timestamp_ms != 0 {
            r.timestamp_ms
        } else {
            b.append_time_ms
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_proto::v1::Record;

    fn batch(base_offset: u64, stamps: &[i64], append_time_ms: i64) -> CommittedBatch {
        let records: Vec<Record> = stamps
            .iter()
            .map(|&timestamp_ms| Record {
                value: b"v".to_vec().into(),
                timestamp_ms,
                ..Default::default()
            })
            .collect();
        let body = fjord_proto::batch::encode(&records);
        CommittedBatch {
            base_offset,
            record_count: records.len() as u32,
            crc32c: fjord_proto::batch::checksum(&body),
            records: body,
            append_time_ms,
            offset_deltas: Vec::new(),
        }
    }

    #[test]
    fn the_record_at_the_offset_gives_the_age_or_its_batch_s_append_time() {
        let batches = [batch(10, &[1_000, 2_000, 0], 2_500)];
        assert_eq!(record_time(&batches, 11), Some(2_000));
        assert_eq!(record_time(&batches, 12), Some(2_500));
        assert_eq!(record_time(&batches, 13), None);
        // Below the batch (deleted or compacted away): its first record.
        assert_eq!(record_time(&batches, 9), Some(1_000));
        let mut compacted = batch(20, &[3_000, 4_000], 4_500);
        compacted.record_count = 5;
        compacted.offset_deltas = vec![1, 4];
        assert_eq!(record_time(&[compacted.clone()], 22), Some(4_000));
        assert_eq!(record_time(&[compacted], 20), Some(3_000));
    }

    #[test]
    fn lag_is_zero_when_caught_up_and_never_negative() {
        assert_eq!(lag_ms(0, None, 5_000), Some(0));
        assert_eq!(lag_ms(3, Some(4_000), 5_000), Some(1_000));
        assert_eq!(lag_ms(3, Some(6_000), 5_000), Some(0));
        assert_eq!(lag_ms(3, None, 5_000), None);
    }

    #[test]
    fn a_probe_raises_a_stale_high_watermark_and_the_lag_with_it() {
        let mut o = PartitionOffset {
            committed_offset: Some(4),
            high_watermark: 4,
            ..Default::default()
        };
        apply(
            &mut o,
            Probe {
                high_watermark: 10,
                oldest_ms: Some(900),
            },
            1_000,
        );
        assert_eq!(
            (o.high_watermark, o.lag_records, o.lag_ms),
            (10, Some(6), Some(100))
        );
    }
}
