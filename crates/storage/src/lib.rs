//! fjord's on-disk state: **one redb database per node**, shared by every Raft group the
//! node hosts.
//!
//! # Layout
//! - [`store`]: the database, reads, and the handle to the writer; `tables`: the table
//!   definitions both it and the writer use (so the writer does not import the store).
//! - [`writer`]: the single **group-commit writer** (a thread; a task in simulations). Every
//!   change (log appends of any group, votes, truncations, purges, offset index updates) goes
//!   through it; it folds the requests waiting in its bounded queue into one write transaction
//!   and one fsync, and only then answers each request. So nothing is acknowledged before it
//!   is durable, and many groups share one fsync.
//! - [`stats`]: what the writer measures of its commits (fsync latency, requests folded into
//!   each), as atomic histograms the node's metrics read.
//! - [`sim_disk`]: a simulated disk (memory that loses unsynced writes on a power loss), on
//!   which a simulation opens the database with [`Store::open_on`] and
//!   [`WriterMode::Task`].
//! - [`partition`]: the pure rules of a partition log: offset assignment and idempotent
//!   producer de-duplication ([`partition::PartitionState`]).
//!
//! The storage knows nothing of openraft: log entries are opaque bytes keyed by
//! `(group, index)`. The Raft glue (`fjord-raft`) encodes them.
//!
//! # Tables
//! - `log`: `(group, index) → entry bytes`: the Raft log of every group. For a partition
//!   this *is* the partition's data: a record batch's bytes are stored here and nowhere else.
//! - `batches`: `(group, base_offset) → (index, record_count, position, bytes)`: the batch
//!   (offset) index of a partition, written with the append of each batch; `position` counts
//!   the partition's record bytes before the batch (retention by size compares positions).
//!   It replaced `offsets` (`→ (index, record_count)`), converted at open.
//! - `times`: `(group, timestamp) → base_offset`: the time index, a row each time a batch
//!   raised the partition's largest record timestamp (Kafka's semantics: searching by time
//!   uses the largest timestamp so far, monotonic even when producers' clocks disagree).
//! - `group_values`: `(group, key) → bytes`: small per-group values (vote, committed log id,
//!   last purged log id, state machine checkpoint, snapshot).
//! - `node_values`: `key → bytes`: small values of the node itself (its data directory's
//!   identity).

pub mod partition;
pub mod sim_disk;
pub mod stats;
pub mod store;
mod tables;
pub mod writer;

pub use store::{Closed, Durable, GroupKey, NodeKey, Store, StoreOptions};
pub use writer::{Op, WriteBatch, WriterMode};

use std::sync::Arc;

/// A row of the batch index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRow {
    /// The offset of the batch's first record.
    pub base_offset: u64,
    /// The log index of the entry holding it.
    pub index: u64,
    pub record_count: u32,
    /// The partition's record bytes before this batch.
    pub position: u64,
    /// Its record bytes.
    pub bytes: u32,
}

impl BatchRow {
    /// The offset after its last record.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }

    /// The position after it.
    pub fn end_position(&self) -> u64 {
        self.position + self.bytes as u64
    }
}

/// A row of the time index: from `base_offset` on, the partition's largest record timestamp
/// is at least `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRow {
    pub timestamp_ms: i64,
    pub base_offset: u64,
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("the storage writer has stopped (the node is shutting down or a write failed)")]
    WriterStopped,
    /// The commit of a write transaction failed; every request folded into it gets the same
    /// error, hence the shared source.
    #[error("a storage commit failed: {source}")]
    CommitFailed {
        #[source]
        source: Arc<StorageError>,
    },
    /// A stored value does not decode: `what` names it.
    #[error("the stored {what} does not decode: {source}")]
    Undecodable {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
}

impl StorageError {
    /// Whether redb found the database file corrupt (a flipped bit, a torn page it cannot
    /// repair): what it held can no longer be trusted.
    pub fn is_corruption(&self) -> bool {
        match self {
            StorageError::Redb(redb::Error::Corrupted(_)) => true,
            StorageError::Redb(e) => e.to_string().contains("corrupted"),
            StorageError::Undecodable { .. } => true,
            StorageError::CommitFailed { source } => source.is_corruption(),
            StorageError::WriterStopped => false,
        }
    }

    pub(crate) fn redb(e: impl Into<redb::Error>) -> Self {
        StorageError::Redb(e.into())
    }
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        std::io::Error::other(e)
    }
}
