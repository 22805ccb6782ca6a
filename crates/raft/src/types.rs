//! The type configuration shared by every group, and what the groups replicate.

use bytes::Bytes;
use fjord_meta::{MetaCommand, MetaResponse};
use fjord_storage::partition::{BatchHeader, Outcome};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// fjord's Raft types: u64 node ids, `BasicNode { addr }` nodes, entries carrying a
    /// [`Request`], Tokio with seedable randomness ([`FjordRuntime`](crate::runtime::FjordRuntime)).
    pub TypeConfig:
        D = Request,
        R = Response,
        AsyncRuntime = crate::runtime::FjordRuntime,
);

/// How far past its batch's append time a record's timestamp counts, at most, for the time
/// index, retention by time and compaction (Redpanda's `storage_ignore_timestamps_in_future_sec`,
/// Kafka's `log.message.timestamp.after.max.ms`): the partition's largest timestamp only grows,
/// so one record stamped years ahead would otherwise hold retention by time (and the
/// compaction lag) back for years. Records keep their own timestamps. A partition that took
/// such a record before this bound existed keeps its largest timestamp.
pub const MAX_TIMESTAMP_AHEAD_MS: i64 = 3_600_000;

/// A record batch as a partition stores it: the producer's encoded records, untouched, and
/// what the partition rules need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatch {
    /// A number the proposing node picked to recognise its own batch when it reaches its
    /// log (AP acknowledgements). Not meaningful anywhere else.
    pub token: u64,
    pub producer_id: u64,
    /// The producer's epoch (0 for an unnamed producer); see `fjord_storage::partition`.
    pub producer_epoch: u16,
    pub base_sequence: u32,
    pub record_count: u32,
    /// CRC-32C of `records`.
    pub crc32c: u32,
    /// When the leader accepted the batch, in ms since the epoch.
    pub append_time_ms: i64,
    /// The largest timestamp of its records (a record without one counts as
    /// `append_time_ms`): what the time index and retention by time see of the batch.
    pub max_timestamp_ms: i64,
    /// An encoded `fjord.v1.RecordList`.
    pub records: Bytes,
    /// Set once compaction removed records from the batch: `records` then holds the kept
    /// ones, and the rest of the batch is as the producer sent it (the partition rules see
    /// the same batch). Encoded as its own [`RequestWire`] variant.
    #[serde(skip)]
    pub compaction: Option<Box<Compaction>>,
}

/// What compaction changed in a batch (`crate::compaction`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// The offset of each kept record from the batch's base offset, increasing; as many as
    /// `records` holds.
    pub offset_deltas: Vec<u32>,
    /// The batch's record bytes as produced (its span of the partition's positions).
    pub original_bytes: u32,
    /// CRC-32C of the kept records (`crc32c` stays the producer's: the partition rules
    /// remember it to tell a retry from another batch).
    pub records_crc: u32,
}

impl StoredBatch {
    /// The CRC-32C of `records` as stored.
    pub fn stored_crc(&self) -> u32 {
        self.compaction
            .as_ref()
            .map_or(self.crc32c, |c| c.records_crc)
    }

    /// Its record bytes as produced, whatever compaction removed.
    pub fn original_bytes(&self) -> u32 {
        self.compaction
            .as_ref()
            .map_or(self.records.len() as u32, |c| c.original_bytes)
    }

    pub fn header(&self) -> BatchHeader {
        BatchHeader {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.record_count,
            crc32c: self.crc32c,
        }
    }
}

/// [`StoredBatch`] as log entries written before record timestamps were indexed hold it: its
/// largest timestamp is taken as its append time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatchV2 {
    pub token: u64,
    pub producer_id: u64,
    pub producer_epoch: u16,
    pub base_sequence: u32,
    pub record_count: u32,
    pub crc32c: u32,
    pub append_time_ms: i64,
    pub records: Bytes,
}

impl From<StoredBatchV2> for StoredBatch {
    fn from(b: StoredBatchV2) -> Self {
        StoredBatch {
            token: b.token,
            producer_id: b.producer_id,
            producer_epoch: b.producer_epoch,
            base_sequence: b.base_sequence,
            record_count: b.record_count,
            crc32c: b.crc32c,
            append_time_ms: b.append_time_ms,
            max_timestamp_ms: b.append_time_ms,
            records: b.records,
            compaction: None,
        }
    }
}

/// [`StoredBatch`] as log entries written before producer epochs hold it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatchV1 {
    pub token: u64,
    pub producer_id: u64,
    pub base_sequence: u32,
    pub record_count: u32,
    pub crc32c: u32,
    pub append_time_ms: i64,
    pub records: Bytes,
}

impl From<StoredBatchV1> for StoredBatch {
    fn from(b: StoredBatchV1) -> Self {
        StoredBatch {
            token: b.token,
            producer_id: b.producer_id,
            producer_epoch: 0,
            base_sequence: b.base_sequence,
            record_count: b.record_count,
            crc32c: b.crc32c,
            append_time_ms: b.append_time_ms,
            max_timestamp_ms: b.append_time_ms,
            records: b.records,
            compaction: None,
        }
    }
}

/// What a group replicates.
///
/// Encoded as [`RequestWire`], whose variants only ever grow at the end, so that every log
/// entry ever written still decodes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "RequestWire")]
pub enum Request {
    /// A partition group's record batch.
    Batch(StoredBatch),
    /// A metadata group's command.
    Meta(MetaCommand),
    /// A partition's records below `offset` are deleted: the log start offset moves up to it
    /// (retention, or a DeleteRecords request). Every replica applies it at the same log
    /// index, so the start offset is the same everywhere. With a `min_position` above 0 it
    /// applies only if the partition's position (record bytes since it began) has reached
    /// it by then: retention by size counts what its leader appended, not only what was
    /// committed, and a log where those appends did not come to pass keeps its records.
    DeleteRecords { offset: u64, min_position: u64 },
    /// A compacted partition's records below `upto` are compacted as of `now_ms` (tombstones
    /// older than `delete_retention_ms` go): every replica compacts its own log the same way,
    /// in the background (`crate::compaction`).
    Compact(CompactRequest),
}

/// What a [`Request::Compact`] asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactRequest {
    pub upto: u64,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
}

/// How a [`Request`] is encoded in log entries and Raft messages (postcard numbers enum
/// variants by position: append new ones at the end, never reorder).
#[derive(Clone, Debug, Serialize, Deserialize)]
enum RequestWire {
    /// A batch written before producer epochs (read only).
    BatchV1(StoredBatchV1),
    Meta(MetaCommand),
    /// A batch written before record timestamps were indexed (read only).
    BatchV2(StoredBatchV2),
    Batch(StoredBatch),
    DeleteRecords(u64),
    CompactedBatch(StoredBatch, Compaction),
    Compact(CompactRequest),
    /// A [`Request::DeleteRecords`] with a `min_position`.
    DeleteRecordsAt(u64, u64),
}

impl From<RequestWire> for Request {
    fn from(w: RequestWire) -> Self {
        match w {
            RequestWire::BatchV1(b) => Request::Batch(b.into()),
            RequestWire::Meta(c) => Request::Meta(c),
            RequestWire::BatchV2(b) => Request::Batch(b.into()),
            RequestWire::Batch(b) => Request::Batch(b),
            RequestWire::DeleteRecords(offset) => Request::DeleteRecords {
                offset,
                min_position: 0,
            },
            RequestWire::DeleteRecordsAt(offset, min_position) => Request::DeleteRecords {
                offset,
                min_position,
            },
            RequestWire::CompactedBatch(mut b, c) => {
                b.compaction = Some(Box::new(c));
                Request::Batch(b)
            }
            RequestWire::Compact(c) => Request::Compact(c),
        }
    }
}

/// Encoded as the [`RequestWire`] variant it decodes from, by reference: the append and send
/// paths encode every entry, and a copy of the request first would be wasted work.
impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Request::Meta(c) => s.serialize_newtype_variant("RequestWire", 1, "Meta", c),
            Request::Batch(b) => match &b.compaction {
                None => s.serialize_newtype_variant("RequestWire", 3, "Batch", b),
                Some(c) => {
                    use serde::ser::SerializeTupleVariant;
                    let mut t = s.serialize_tuple_variant("RequestWire", 5, "CompactedBatch", 2)?;
                    t.serialize_field(b)?;
                    t.serialize_field(c.as_ref())?;
                    t.end()
                }
            },
            Request::Compact(c) => s.serialize_newtype_variant("RequestWire", 6, "Compact", c),
            Request::DeleteRecords {
                offset,
                min_position: 0,
            } => s.serialize_newtype_variant("RequestWire", 4, "DeleteRecords", offset),
            Request::DeleteRecords {
                offset,
                min_position,
            } => {
                use serde::ser::SerializeTupleVariant;
                let mut t = s.serialize_tuple_variant("RequestWire", 7, "DeleteRecordsAt", 2)?;
                t.serialize_field(offset)?;
                t.serialize_field(min_position)?;
                t.end()
            }
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Batch(b) => write!(
                f,
                "batch(producer {} epoch {}, seq {}, {} records, {} bytes)",
                b.producer_id,
                b.producer_epoch,
                b.base_sequence,
                b.record_count,
                b.records.len()
            ),
            Request::Meta(c) => write!(f, "meta({c:?})"),
            Request::DeleteRecords {
                offset,
                min_position: 0,
            } => write!(f, "delete-records(before {offset})"),
            Request::DeleteRecords {
                offset,
                min_position,
            } => write!(
                f,
                "delete-records(before {offset}, once at position {min_position})"
            ),
            Request::Compact(c) => write!(f, "compact(below {}, at {})", c.upto, c.now_ms),
        }
    }
}

/// What applying a [`Request`] answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Batch(Outcome),
    Meta(MetaResponse),
    /// A [`Request::DeleteRecords`] applied: the partition's log start offset after it.
    DeleteRecords {
        log_start_offset: u64,
    },
    /// Blank and membership entries, and a request sent to the wrong kind of group.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_entry_written_before_epochs_still_decodes() {
        let old = StoredBatchV1 {
            token: 1,
            producer_id: 7,
            base_sequence: 3,
            record_count: 2,
            crc32c: 99,
            append_time_ms: 5,
            records: Bytes::from_static(b"xy"),
        };
        let bytes = postcard::to_stdvec(&RequestWire::BatchV1(old.clone())).unwrap();
        let got: Request = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(got, Request::Batch(old.into()));
        // What is written now round-trips, epoch included.
        let mut b: StoredBatch = StoredBatchV1 {
            ..Default::default()
        }
        .into();
        b.producer_epoch = 4;
        b.max_timestamp_ms = 9;
        let now = postcard::to_stdvec(&Request::Batch(b.clone())).unwrap();
        assert_eq!(
            postcard::from_bytes::<Request>(&now).unwrap(),
            Request::Batch(b.clone())
        );
        let mut compacted = b.clone();
        compacted.compaction = Some(Box::new(Compaction {
            offset_deltas: vec![0, 3],
            original_bytes: 40,
            records_crc: 7,
        }));
        let bytes = postcard::to_stdvec(&Request::Batch(compacted.clone())).unwrap();
        assert_eq!(
            postcard::from_bytes::<Request>(&bytes).unwrap(),
            Request::Batch(compacted)
        );
        let c = Request::Compact(CompactRequest {
            upto: 9,
            now_ms: 5,
            delete_retention_ms: 1,
        });
        let bytes = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), c);
        for min_position in [0, 77] {
            let d = Request::DeleteRecords {
                offset: 12,
                min_position,
            };
            let bytes = postcard::to_stdvec(&d).unwrap();
            assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), d);
        }
        // One without a position is written as before it existed.
        assert_eq!(
            postcard::to_stdvec(&Request::DeleteRecords {
                offset: 12,
                min_position: 0
            })
            .unwrap(),
            postcard::to_stdvec(&RequestWire::DeleteRecords(12)).unwrap()
        );
    }

    #[test]
    fn a_batch_entry_written_before_timestamps_were_indexed_still_decodes() {
        let old = StoredBatchV2 {
            token: 1,
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: 3,
            record_count: 2,
            crc32c: 99,
            append_time_ms: 5,
            records: Bytes::from_static(b"xy"),
        };
        let bytes = postcard::to_stdvec(&RequestWire::BatchV2(old.clone())).unwrap();
        let got: Request = postcard::from_bytes(&bytes).unwrap();
        let Request::Batch(b) = got else {
            panic!("not a batch: {got:?}")
        };
        assert_eq!((b.max_timestamp_ms, b.producer_epoch), (5, 2));
    }
}
