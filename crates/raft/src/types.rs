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
}

impl StoredBatch {
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
    /// index, so the start offset is the same everywhere.
    DeleteRecords { offset: u64 },
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
}

impl From<RequestWire> for Request {
    fn from(w: RequestWire) -> Self {
        match w {
            RequestWire::BatchV1(b) => Request::Batch(b.into()),
            RequestWire::Meta(c) => Request::Meta(c),
            RequestWire::BatchV2(b) => Request::Batch(b.into()),
            RequestWire::Batch(b) => Request::Batch(b),
            RequestWire::DeleteRecords(offset) => Request::DeleteRecords { offset },
        }
    }
}

/// Encoded as the [`RequestWire`] variant it decodes from, by reference: the append and send
/// paths encode every entry, and a copy of the request first would be wasted work.
impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Request::Meta(c) => s.serialize_newtype_variant("RequestWire", 1, "Meta", c),
            Request::Batch(b) => s.serialize_newtype_variant("RequestWire", 3, "Batch", b),
            Request::DeleteRecords { offset } => {
                s.serialize_newtype_variant("RequestWire", 4, "DeleteRecords", offset)
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
            Request::DeleteRecords { offset } => write!(f, "delete-records(before {offset})"),
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
            Request::Batch(b)
        );
        let delete = postcard::to_stdvec(&Request::DeleteRecords { offset: 12 }).unwrap();
        assert_eq!(
            postcard::from_bytes::<Request>(&delete).unwrap(),
            Request::DeleteRecords { offset: 12 }
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
