//! The data path's edge: produce and fetch messages become domain types here ([`Produce`],
//! [`Fetch`]), and their results become messages again. [`crate::data`] works on the domain
//! types only.
//!
//! What is checked here is what the message alone decides (modes, timeouts, sizes asked for,
//! the shape of a request, numeric ranges); what needs the topic (partitions, record sizes,
//! CRCs of the records) is checked by [`crate::data`].

use std::time::Duration;

use bytes::Bytes;
use fjord_proto::v1::{self, PartitionResult, ProduceRequest, Record};
use fjord_raft::CommittedBatch;

use crate::error::{ApiError, Invalid};

/// Default and largest acknowledgement wait of a produce.
pub const DEFAULT_PRODUCE_TIMEOUT_MS: u32 = 10_000;
pub const MAX_PRODUCE_TIMEOUT_MS: u32 = 60_000;
/// Default and largest bytes of one fetch answer.
pub const DEFAULT_FETCH_BYTES: u32 = 1 << 20;
pub const MAX_FETCH_BYTES: u32 = 64 << 20;
/// Largest long-poll wait of a fetch.
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;

/// When a produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Once a majority has the batch durably.
    Cp,
    /// Once the leader has it durably.
    Ap,
}

/// Which replica answers a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The leader, confirmed by a quorum (ReadIndex).
    Cp,
    /// Any replica, up to what it knows to be committed.
    Ap,
}

/// A produce request, checked as far as the message alone allows.
#[derive(Debug)]
pub struct Produce {
    pub topic: String,
    pub acks: Acks,
    pub timeout: Duration,
    pub body: ProduceBody,
}

/// What a produce carries: records for the server to place and encode, or batches the
/// producer encoded.
#[derive(Debug)]
pub enum ProduceBody {
    Records {
        records: Vec<Record>,
        /// Every record's partition, else by key.
        partition: Option<u32>,
    },
    Batches(Vec<ProducerBatch>),
}

/// A batch as an idempotent producer sent it.
#[derive(Debug, Clone)]
pub struct ProducerBatch {
    pub partition: u32,
    pub producer_id: u64,
    pub producer_epoch: u16,
    pub base_sequence: u32,
    pub record_count: u32,
    pub crc32c: u32,
    /// An encoded `RecordList`, not yet checked against `crc32c`.
    pub records: Bytes,
}

impl TryFrom<ProduceRequest> for Produce {
    type Error = ApiError;

    fn try_from(req: ProduceRequest) -> Result<Self, ApiError> {
        let acks = match v1::Acks::try_from(req.acks) {
            Ok(v1::Acks::Cp) => Acks::Cp,
            Ok(v1::Acks::Ap) => Acks::Ap,
            Err(_) => return Err(Invalid::UnknownAcks(req.acks).into()),
        };
        let timeout_ms = write_timeout_ms(req.timeout_ms)?;
        let body = match (req.records.is_empty(), req.batches.is_empty()) {
            (false, false) => {
                return Err(Invalid::RecordsAndBatches.into());
            }
            // An empty request is refused after the topic is looked up (an unknown topic is
            // NOT_FOUND first), by `data::produce`.
            (_, true) => ProduceBody::Records {
                records: req.records,
                partition: req.partition,
            },
            (true, false) => ProduceBody::Batches(
                req.batches
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| producer_batch(i, b))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Produce {
            topic: req.topic,
            acks,
            timeout: Duration::from_millis(u64::from(timeout_ms)),
            body,
        })
    }
}

fn producer_batch(i: usize, b: v1::RecordBatch) -> Result<ProducerBatch, ApiError> {
    let producer_epoch = u16::try_from(b.producer_epoch).map_err(|_| Invalid::EpochTooLarge {
        batch: i,
        partition: b.partition,
        epoch: b.producer_epoch,
    })?;
    Ok(ProducerBatch {
        partition: b.partition,
        producer_id: b.producer_id,
        producer_epoch,
        base_sequence: b.base_sequence,
        record_count: b.record_count,
        crc32c: b.crc32c,
        records: b.records,
    })
}

/// One partition's part of a produce, as answered.
#[derive(Debug)]
pub struct Produced {
    pub partition: u32,
    pub record_count: u32,
    /// The base offset, and whether the batch was a retry of one already appended.
    pub result: Result<(u64, bool), ApiError>,
}

impl From<Produced> for PartitionResult {
    fn from(p: Produced) -> Self {
        let mut out = PartitionResult {
            partition: p.partition,
            record_count: p.record_count,
            ..Default::default()
        };
        match p.result {
            Ok((base_offset, duplicate)) => {
                out.base_offset = base_offset;
                out.duplicate = duplicate;
            }
            Err(e) => out.error = Some(e.to_partition_error()),
        }
        out
    }
}

/// A fetch request, checked against its limits.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: usize,
    pub max_wait: Duration,
    pub read: ReadMode,
}

impl TryFrom<v1::FetchRequest> for Fetch {
    type Error = ApiError;

    fn try_from(req: v1::FetchRequest) -> Result<Self, ApiError> {
        let read = read_mode(req.read)?;
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_FETCH_BYTES,
            b if b > MAX_FETCH_BYTES => {
                return Err(Invalid::OverLimit {
                    field: "max_bytes",
                    value: b.into(),
                    limit: MAX_FETCH_BYTES.into(),
                }
                .into());
            }
            b => b,
        };
        if req.max_wait_ms > MAX_FETCH_WAIT_MS {
            return Err(Invalid::OverLimit {
                field: "max_wait_ms",
                value: req.max_wait_ms.into(),
                limit: MAX_FETCH_WAIT_MS.into(),
            }
            .into());
        }
        Ok(Fetch {
            topic: req.topic,
            partition: req.partition,
            offset: req.offset,
            max_bytes: max_bytes as usize,
            max_wait: Duration::from_millis(u64::from(req.max_wait_ms)),
            read,
        })
    }
}

/// A write's `timeout_ms`: 0 is the default, more than the limit is refused.
fn write_timeout_ms(t: u32) -> Result<u32, ApiError> {
    match t {
        0 => Ok(DEFAULT_PRODUCE_TIMEOUT_MS),
        t if t > MAX_PRODUCE_TIMEOUT_MS => Err(Invalid::OverLimit {
            field: "timeout_ms",
            value: t.into(),
            limit: MAX_PRODUCE_TIMEOUT_MS.into(),
        }
        .into()),
        t => Ok(t),
    }
}

/// A DeleteRecords request, checked.
#[derive(Debug, Clone)]
pub struct DeleteRecords {
    pub topic: String,
    pub partition: u32,
    /// `None`: everything committed.
    pub before: Option<u64>,
    pub timeout: Duration,
}

impl TryFrom<v1::DeleteRecordsRequest> for DeleteRecords {
    type Error = ApiError;

    fn try_from(req: v1::DeleteRecordsRequest) -> Result<Self, ApiError> {
        let timeout_ms = write_timeout_ms(req.timeout_ms)?;
        Ok(DeleteRecords {
            topic: req.topic,
            partition: req.partition,
            before: (!req.all).then_some(req.before_offset),
            timeout: Duration::from_millis(timeout_ms.into()),
        })
    }
}

/// Which offset a ListOffsets request looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Latest,
    Earliest,
    ByTime(i64),
}

/// A ListOffsets request, checked.
#[derive(Debug, Clone)]
pub struct ListOffsets {
    pub topic: String,
    pub partition: u32,
    pub query: OffsetQuery,
    pub read: ReadMode,
}

impl TryFrom<v1::ListOffsetsRequest> for ListOffsets {
    type Error = ApiError;

    fn try_from(req: v1::ListOffsetsRequest) -> Result<Self, ApiError> {
        let read = read_mode(req.read)?;
        let query = match v1::OffsetQuery::try_from(req.query) {
            Ok(v1::OffsetQuery::OffsetLatest) => OffsetQuery::Latest,
            Ok(v1::OffsetQuery::OffsetEarliest) => OffsetQuery::Earliest,
            Ok(v1::OffsetQuery::OffsetByTime) => OffsetQuery::ByTime(req.timestamp_ms),
            Err(_) => return Err(Invalid::UnknownOffsetQuery(req.query).into()),
        };
        Ok(ListOffsets {
            topic: req.topic,
            partition: req.partition,
            query,
            read,
        })
    }
}

/// A ListOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetFound {
    /// `None`: searching by time, no record reached it.
    pub offset: Option<u64>,
    pub timestamp_ms: i64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub node_id: u64,
}

impl From<OffsetFound> for v1::ListOffsetsResponse {
    fn from(f: OffsetFound) -> Self {
        v1::ListOffsetsResponse {
            offset: f.offset.unwrap_or(f.high_watermark),
            found: f.offset.is_some(),
            timestamp_ms: f.timestamp_ms,
            log_start_offset: f.log_start_offset,
            high_watermark: f.high_watermark,
            node_id: f.node_id,
        }
    }
}

fn read_mode(read: i32) -> Result<ReadMode, ApiError> {
    match v1::ReadMode::try_from(read) {
        Ok(v1::ReadMode::ReadCp) => Ok(ReadMode::Cp),
        Ok(v1::ReadMode::ReadAp) => Ok(ReadMode::Ap),
        Err(_) => Err(Invalid::UnknownReadMode(read).into()),
    }
}

/// A fetch's answer.
#[derive(Debug)]
pub struct Fetched {
    pub batches: Vec<CommittedBatch>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub node_id: u64,
}

impl From<Fetched> for v1::FetchResponse {
    fn from(f: Fetched) -> Self {
        v1::FetchResponse {
            batches: f
                .batches
                .into_iter()
                .map(|b| v1::FetchedBatch {
                    base_offset: b.base_offset,
                    record_count: b.record_count,
                    crc32c: b.crc32c,
                    records: b.records,
                    append_time_ms: b.append_time_ms,
                    offset_deltas: b.offset_deltas,
                })
                .collect(),
            high_watermark: f.high_watermark,
            log_start_offset: f.log_start_offset,
            node_id: f.node_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_produce_message_is_checked_before_it_becomes_a_produce() {
        let err = |req: ProduceRequest| Produce::try_from(req).unwrap_err().to_string();
        let rec = || Record {
            value: Bytes::from_static(b"v"),
            ..Default::default()
        };
        assert!(
            err(ProduceRequest {
                records: vec![rec()],
                batches: vec![v1::RecordBatch::default()],
                ..Default::default()
            })
            .contains("not both")
        );
        assert!(
            err(ProduceRequest {
                records: vec![rec()],
                timeout_ms: MAX_PRODUCE_TIMEOUT_MS + 1,
                ..Default::default()
            })
            .contains("over the limit of 60000")
        );
        assert!(
            err(ProduceRequest {
                batches: vec![v1::RecordBatch {
                    producer_epoch: 70_000,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .contains("producer_epoch 70000 is over the limit of 65535")
        );
        let ok = Produce::try_from(ProduceRequest {
            records: vec![rec()],
            acks: v1::Acks::Ap as i32,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.acks, Acks::Ap);
        assert_eq!(ok.timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_fetch_message_is_checked_against_its_limits() {
        let f = Fetch::try_from(v1::FetchRequest::default()).unwrap();
        assert_eq!((f.max_bytes, f.read), (1 << 20, ReadMode::Cp));
        let e = Fetch::try_from(v1::FetchRequest {
            max_wait_ms: MAX_FETCH_WAIT_MS + 1,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("max_wait_ms 30001"), "{e}");
    }
}
