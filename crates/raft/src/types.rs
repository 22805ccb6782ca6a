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
    pub base_sequence: u32,
    pub record_count: u32,
    /// CRC-32C of `records`.
    pub crc32c: u32,
    /// When the leader accepted the batch, in ms since the epoch.
    pub append_time_ms: i64,
    /// An encoded `fjord.v1.RecordList`.
    pub records: Bytes,
}

impl StoredBatch {
    pub fn header(&self) -> BatchHeader {
        BatchHeader {
            producer_id: self.producer_id,
            base_sequence: self.base_sequence,
            record_count: self.record_count,
        }
    }
}

/// What a group replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A partition group's record batch.
    Batch(StoredBatch),
    /// A metadata group's command.
    Meta(MetaCommand),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Batch(b) => write!(
                f,
                "batch(producer {}, seq {}, {} records, {} bytes)",
                b.producer_id,
                b.base_sequence,
                b.record_count,
                b.records.len()
            ),
            Request::Meta(c) => write!(f, "meta({c:?})"),
        }
    }
}

/// What applying a [`Request`] answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Batch(Outcome),
    Meta(MetaResponse),
    /// Blank and membership entries, and a request sent to the wrong kind of group.
    None,
}
