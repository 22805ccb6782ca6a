//! A group's lag in time, as DescribeGroup shows it: for each partition, the age of the
//! oldest record the group has not consumed (the record at its committed offset).
//!
//! The coordinator's runner answers a description from memory; this reads one record per
//! partition afterwards, outside the runner (it never holds up the group's other requests):
//! from this node's replica when it has one, else from the partition's leader. At most
//! [`MAX_LAG_PROBES`] partitions per description, [`PROBES_AT_ONCE`] at a time, each within
//! [`PROBE_TIMEOUT`]; a partition not read has no `lag_ms`. Only partitions of topics the
//! requester may read are read; a leader elsewhere is asked through its client API with the
//! requester's own `authorization` metadata (so a requester known by a client certificate
//! gets no `lag_ms` for those while authentication is required: no internal read path yet).

use std::sync::Arc;
use std::time::Duration;

use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::fjord_server::Fjord;
use fjord_proto::v1::{FetchRequest, FetchResponse, PartitionOffset, ReadMode};
use futures::stream::{self, StreamExt};
use tonic::metadata::AsciiMetadataValue;

use crate::node::Node;
use crate::service::ClientService;

/// Partitions of one description whose lag in time is read, at most.
pub const MAX_LAG_PROBES: usize = 1_000;
/// Partitions read at once.
pub const PROBES_AT_ONCE: usize = 16;
/// How long one partition's read may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one read of a partition at the group's committed offset found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub high_watermark: u64,
    /// The timestamp of the record at the offset read, if the answer held it.
    pub oldest_ms: Option<i64>,
}

/// Reads each partition's oldest unconsumed record and fills in `lag_ms` (and a fresher high
/// watermark and `lag_records`), for the topics `readable` allows; `credential` is the
/// requester's `authorization` metadata, sent along to a leader elsewhere.
pub async fn fill(
    node: &Arc<Node>,
    offsets: &mut [PartitionOffset],
    readable: impl Fn(&str) -> bool,
    credential: Option<AsciiMetadataValue>,
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
            let credential = credential.clone();
            let node = node.clone();
            async move {
                let (topic, partition, offset) = w?;
                probe(node, topic, partition, offset, credential).await
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
    o.lag_records = o
        .high_watermark
        .saturating_sub(o.committed_offset.unwrap_or(0));
    o.lag_ms = lag_ms(o.lag_records, p.oldest_ms, now_ms);
}

/// The lag in time: 0 with nothing to consume, else the oldest unconsumed record's age (never
/// negative: a producer's clock ahead of this node's counts as no lag).
pub fn lag_ms(lag_records: u64, oldest_ms: Option<i64>, now_ms: i64) -> Option<i64> {
    if lag_records == 0 {
        return Some(0);
    }
    oldest_ms.map(|t| now_ms.saturating_sub(t).max(0))
}

/// One record of `topic`/`partition` at `offset`: from this node's replica, else its leader.
async fn probe(
    node: Arc<Node>,
    topic: String,
    partition: u32,
    offset: u64,
    credential: Option<AsciiMetadataValue>,
) -> Option<Probe> {
    let req = FetchRequest {
        topic: topic.clone(),
        partition,
        offset,
        max_bytes: 1,
        max_wait_ms: 0,
        read: ReadMode::ReadAp as i32,
    };
    let view = node.view();
    let t = view.state.topic(&topic)?;
    let local = node
        .partition(fjord_meta::group_id(t.id, partition))
        .is_some();
    let answer = if local {
        let service = ClientService::internal(node.clone());
        // (this node's own replica: an AP read, as any replica answers it)
        let call = service.fetch(tonic::Request::new(req));
        tokio::time::timeout(PROBE_TIMEOUT, call).await.ok()?.ok()?
    } else {
        let leader = t.partitions.get(partition as usize)?.leader?;
        let channel = node.channel(&node.client_address_of(leader)?).ok()?;
        let mut req = tonic::Request::new(req);
        req.set_timeout(PROBE_TIMEOUT);
        if let Some(c) = credential {
            req.metadata_mut().insert(crate::auth::AUTHORIZATION_KEY, c);
        }
        FjordClient::new(channel).fetch(req).await.ok()?
    };
    Some(read_probe(&answer.into_inner(), offset))
}

/// The high watermark and the timestamp of the record at `offset` in a fetch's answer.
pub fn read_probe(answer: &FetchResponse, offset: u64) -> Probe {
    let oldest_ms = answer.batches.iter().find_map(|b| {
        let end = b.base_offset.checked_add(u64::from(b.record_count))?;
        if offset < b.base_offset || offset >= end {
            return None;
        }
        let records = fjord_proto::batch::decode(&b.records, b.crc32c).ok()?;
        // A compacted batch lists its records' offsets: the first kept at or after `offset`.
        let at = if b.offset_deltas.is_empty() {
            (offset - b.base_offset) as usize
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
    });
    Probe {
        high_watermark: answer.high_watermark,
        oldest_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_proto::v1::{FetchedBatch, Record};

    fn batch(base_offset: u64, stamps: &[i64], append_time_ms: i64) -> FetchedBatch {
        let records: Vec<Record> = stamps
            .iter()
            .map(|&timestamp_ms| Record {
                value: b"v".to_vec().into(),
                timestamp_ms,
                ..Default::default()
            })
            .collect();
        let body = fjord_proto::batch::encode(&records);
        FetchedBatch {
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
        let answer = FetchResponse {
            batches: vec![batch(10, &[1_000, 2_000, 0], 2_500)],
            high_watermark: 13,
            ..Default::default()
        };
        assert_eq!(read_probe(&answer, 11).oldest_ms, Some(2_000));
        assert_eq!(read_probe(&answer, 12).oldest_ms, Some(2_500));
        assert_eq!(read_probe(&answer, 13).oldest_ms, None);
        assert_eq!(read_probe(&answer, 9).high_watermark, 13);
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
            (10, 6, Some(100))
        );
    }
}
