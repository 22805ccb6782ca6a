//! The node's database: tables, reads, and the handle through which writes reach the
//! [`writer`](crate::writer).
//!
//! Reads open their own read transaction (redb is MVCC: readers never block the writer) and
//! see what the writer has committed.

use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{oneshot, watch};

use crate::StorageError;
use crate::writer::{self, Op, WriterMode};

use crate::tables::{BATCHES, GROUP_VALUES, LOG, NODE_VALUES, OFFSETS, TIMES};
use crate::{BatchRow, TimeRow};

/// Keys of the node-level values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeKey {
    /// The data directory's identity (`fjord_meta::DiskIdentity`, postcard).
    Identity = 1,
    /// The block of producer ids this node hands out (the server's `producer_ids`).
    ProducerIds = 2,
    /// The starts the peers announced to this node at their boot check (the server's
    /// `boot`): per peer, its incarnation and latest generation.
    PeerStarts = 3,
}

/// The inclusive `(first, last)` indexes of a range, or `None` when it is empty.
pub fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e,
        Bound::Excluded(&e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (start <= end).then_some((start, end))
}

/// A log entry as stored: its index and its bytes.
pub type StoredEntry = (u64, Vec<u8>);

/// Keys of the `group_values` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GroupKey {
    Vote = 1,
    Committed = 2,
    LastPurged = 3,
    StateMachine = 4,
    Snapshot = 5,
    /// A compacted partition's compaction progress on this replica.
    Compacted = 6,
    /// The log index below which every batch's time index row is stored (big-endian u64):
    /// rows are written in bulk (`fjord_raft::time_rows`), and a start rebuilds those of
    /// the entries from here on. Absent: every row is stored (a data dir from before).
    TimeRowsThrough = 7,
}

/// Settings of the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache, in bytes (redb's own default is 1 GiB per database).
    pub cache_size_bytes: usize,
    /// Where the group-commit writer runs: its own thread, except in simulations.
    pub writer: WriterMode,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size_bytes: 64 << 20,
            writer: WriterMode::Thread,
        }
    }
}

/// The node's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: writer::Queue,
    closed: watch::Receiver<bool>,
    failed: watch::Receiver<Option<Arc<StorageError>>>,
    reusable: Arc<std::sync::atomic::AtomicU64>,
    stats: Arc<crate::stats::CommitStats>,
}

/// Reads [`Store::reusable_bytes`] without holding the database.
#[derive(Debug, Clone)]
pub struct ReusableBytes(Arc<std::sync::atomic::AtomicU64>);

impl ReusableBytes {
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Resolves once a node's database is closed: every [`Store`] handle dropped, the writer
/// stopped, and the file closed cleanly (so the next open needs no repair). Holding it does
/// not keep the database open.
#[derive(Debug, Clone)]
pub struct Closed(watch::Receiver<bool>);

impl Closed {
    /// Waits until the database is closed, or `timeout` has passed. `true` when it was
    /// closed cleanly in time.
    pub async fn wait(mut self, timeout: std::time::Duration) -> bool {
        let changed = tokio::time::timeout(timeout, async {
            loop {
                if *self.0.borrow_and_update() {
                    return true;
                }
                if self.0.changed().await.is_err() {
                    return *self.0.borrow();
                }
            }
        })
        .await;
        changed.unwrap_or(false)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) `dir/fjord.redb` and starts the writer.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::redb(redb::Error::Io(e)))?;
        let db = Database::builder()
            .set_cache_size(options.cache_size_bytes)
            .create(dir.join("fjord.redb"))
            .map_err(StorageError::redb)?;
        Self::start(db, options)
    }

    /// Opens (or creates) the database on another storage backend, such as a
    /// [`SimDisk`](crate::sim_disk::SimDisk), and starts the writer.
    pub fn open_on(
        backend: impl redb::StorageBackend,
        options: &StoreOptions,
    ) -> Result<Store, StorageError> {
        let db = Database::builder()
            .set_cache_size(options.cache_size_bytes)
            .create_with_backend(backend)
            .map_err(StorageError::redb)?;
        Self::start(db, options)
    }

    fn start(db: Database, options: &StoreOptions) -> Result<Store, StorageError> {
        // Create the tables once so readers never meet a missing table.
        let txn = db.begin_write().map_err(StorageError::redb)?;
        txn.open_table(LOG).map_err(StorageError::redb)?;
        txn.open_table(BATCHES).map_err(StorageError::redb)?;
        txn.open_table(TIMES).map_err(StorageError::redb)?;
        txn.open_table(GROUP_VALUES).map_err(StorageError::redb)?;
        txn.open_table(NODE_VALUES).map_err(StorageError::redb)?;
        convert_offsets(&txn)?;
        txn.commit().map_err(StorageError::redb)?;
        let db = Arc::new(db);
        let (closed_tx, closed) = watch::channel(false);
        let (failed_tx, failed) = watch::channel(None);
        let reusable = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stats = Arc::new(crate::stats::CommitStats::default());
        let writer = writer::spawn(
            db.clone(),
            options.writer.clone(),
            closed_tx,
            failed_tx,
            reusable.clone(),
            stats.clone(),
        );
        Ok(Store {
            db,
            writer,
            closed,
            failed,
            reusable,
            stats,
        })
    }

    /// Resolves with the error of the first commit that failed. redb refuses every write
    /// after an I/O error (a full or failing disk) until the database is reopened, so a node
    /// whose commit failed can store nothing more: it must stop (fail-stop) rather than stay
    /// up with groups that can no longer work.
    pub async fn failed(&self) -> Arc<StorageError> {
        let mut rx = self.failed.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The writer is gone while this store (one of its senders) lives: it
                // panicked, and nothing more commits.
                return Arc::new(StorageError::WriterStopped);
            }
        }
    }

    /// About how many bytes inside the database file deletions freed for later writes (this
    /// run's deletions of log entries, less what was written since; 0 at open): redb reuses
    /// freed pages but does not shrink its file, so a filesystem's free space does not show
    /// them.
    pub fn reusable_bytes(&self) -> u64 {
        self.reusable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The writer's measurements of its commits (fsync latency, requests per commit), for
    /// the node's metrics.
    pub fn commit_stats(&self) -> &Arc<crate::stats::CommitStats> {
        &self.stats
    }

    /// [`Store::reusable_bytes`] as a handle that does not keep the database open.
    pub fn reusable_counter(&self) -> ReusableBytes {
        ReusableBytes(self.reusable.clone())
    }

    /// What resolves once every handle of this database is dropped and it is closed.
    pub fn closed(&self) -> Closed {
        Closed(self.closed.clone())
    }

    /// Queues `ops` and waits until they are committed durably.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.submit(ops).await?.wait().await
    }

    /// Queues `ops` (waiting only for room in the writer's queue) and returns what resolves
    /// once they are committed durably. Requests are committed in the order they were
    /// queued, so a caller may queue the next before the previous is durable.
    pub async fn submit(&self, ops: Vec<Op>) -> Result<Durable, StorageError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(ops, Some(tx))
            .await
            .map_err(|()| StorageError::WriterStopped)?;
        Ok(Durable(rx))
    }

    /// Queues `ops` without waiting for them: they become durable with the next commit.
    /// For derived state that can be rebuilt from the log (offset index, checkpoints).
    pub async fn write_lazy(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.writer
            .send(ops, None)
            .await
            .map_err(|()| StorageError::WriterStopped)
    }

    fn read_txn(&self) -> Result<redb::ReadTransaction, StorageError> {
        self.db.begin_read().map_err(StorageError::redb)
    }

    /// Log entries of `group` with indexes in `range` (see [`index_bounds`]), in order, at most `max_entries` of them
    /// and, past the first, at most `max_bytes` bytes.
    pub fn read_log(
        &self,
        group: u64,
        range: impl RangeBounds<u64>,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEntry>, StorageError> {
        let Some((start, end)) = index_bounds(&range) else {
            return Ok(Vec::new());
        };
        let txn = self.read_txn()?;
        let table = txn.open_table(LOG).map_err(StorageError::redb)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in table
            .range((group, start)..=(group, end))
            .map_err(StorageError::redb)?
        {
            let (k, v) = item.map_err(StorageError::redb)?;
            let v = v.value();
            if !out.is_empty() && (out.len() >= max_entries || bytes + v.len() > max_bytes) {
                break;
            }
            bytes += v.len();
            out.push((k.value().1, v.to_vec()));
        }
        Ok(out)
    }

    /// The index of `group`'s first stored log entry, if any.
    pub fn first_log_index(&self, group: u64) -> Result<Option<u64>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(LOG).map_err(StorageError::redb)?;
        let mut range = table
            .range((group, 0)..=(group, u64::MAX))
            .map_err(StorageError::redb)?;
        match range.next() {
            None => Ok(None),
            Some(item) => Ok(Some(item.map_err(StorageError::redb)?.0.value().1)),
        }
    }

    /// The first and last log entries of `group`, if any.
    pub fn log_bounds(
        &self,
        group: u64,
    ) -> Result<Option<(StoredEntry, StoredEntry)>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(LOG).map_err(StorageError::redb)?;
        let mut range = table
            .range((group, 0)..=(group, u64::MAX))
            .map_err(StorageError::redb)?;
        let first = match range.next() {
            None => return Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(StorageError::redb)?;
                (k.value().1, v.value().to_vec())
            }
        };
        let last = match range.next_back() {
            None => first.clone(),
            Some(item) => {
                let (k, v) = item.map_err(StorageError::redb)?;
                (k.value().1, v.value().to_vec())
            }
        };
        Ok(Some((first, last)))
    }

    /// A per-group value.
    pub fn get_value(&self, group: u64, key: GroupKey) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(GROUP_VALUES).map_err(StorageError::redb)?;
        Ok(table
            .get((group, key as u8))
            .map_err(StorageError::redb)?
            .map(|v| v.value().to_vec()))
    }

    /// A node-level value.
    pub fn get_node_value(&self, key: NodeKey) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(NODE_VALUES).map_err(StorageError::redb)?;
        Ok(table
            .get(key as u8)
            .map_err(StorageError::redb)?
            .map(|v| v.value().to_vec()))
    }

    /// Whether no group has stored anything: no log entry, no value.
    pub fn holds_no_group(&self) -> Result<bool, StorageError> {
        let txn = self.read_txn()?;
        let log = txn.open_table(LOG).map_err(StorageError::redb)?;
        let values = txn.open_table(GROUP_VALUES).map_err(StorageError::redb)?;
        Ok(log.first().map_err(StorageError::redb)?.is_none()
            && values.first().map_err(StorageError::redb)?.is_none())
    }

    /// The batch index row covering `offset`: the batch with the greatest base offset not
    /// above it.
    pub fn find_offset(&self, group: u64, offset: u64) -> Result<Option<BatchRow>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(BATCHES).map_err(StorageError::redb)?;
        let mut range = table
            .range((group, 0)..=(group, offset))
            .map_err(StorageError::redb)?;
        match range.next_back() {
            None => Ok(None),
            Some(item) => Ok(Some(batch_row(item.map_err(StorageError::redb)?))),
        }
    }

    /// Batch index rows of `group` from base offset `from` on, at most `max` of them.
    pub fn offsets_from(
        &self,
        group: u64,
        from: u64,
        max: usize,
    ) -> Result<Vec<BatchRow>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(BATCHES).map_err(StorageError::redb)?;
        let mut out = Vec::new();
        for item in table
            .range((group, from)..=(group, u64::MAX))
            .map_err(StorageError::redb)?
        {
            if out.len() >= max {
                break;
            }
            out.push(batch_row(item.map_err(StorageError::redb)?));
        }
        Ok(out)
    }

    /// The smallest base offset still indexed for `group`.
    pub fn first_offset(&self, group: u64) -> Result<Option<u64>, StorageError> {
        Ok(self
            .offsets_from(group, 0, 1)?
            .first()
            .map(|r| r.base_offset))
    }

    /// The base offset of the first batch from which the partition's largest timestamp is at
    /// least `timestamp_ms` (the time index), or `None` when no batch reached it.
    pub fn offset_for_time(
        &self,
        group: u64,
        timestamp_ms: i64,
    ) -> Result<Option<TimeRow>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(TIMES).map_err(StorageError::redb)?;
        let mut range = table
            .range((group, timestamp_ms)..=(group, i64::MAX))
            .map_err(StorageError::redb)?;
        range
            .next()
            .map(|item| item.map(time_row).map_err(StorageError::redb))
            .transpose()
    }

    /// The group's time index row with the largest timestamp (its partition's largest
    /// timestamp among the rows stored).
    pub fn last_time_row(&self, group: u64) -> Result<Option<TimeRow>, StorageError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(TIMES).map_err(StorageError::redb)?;
        let mut range = table
            .range((group, i64::MIN)..=(group, i64::MAX))
            .map_err(StorageError::redb)?;
        range
            .next_back()
            .map(|item| item.map(time_row).map_err(StorageError::redb))
            .transpose()
    }

    /// Every group that has anything stored (log entries or values).
    pub fn groups(&self) -> Result<Vec<u64>, StorageError> {
        let txn = self.read_txn()?;
        let mut out = std::collections::BTreeSet::new();
        let values = txn.open_table(GROUP_VALUES).map_err(StorageError::redb)?;
        for item in values.iter().map_err(StorageError::redb)? {
            out.insert(item.map_err(StorageError::redb)?.0.value().0);
        }
        Ok(out.into_iter().collect())
    }
}

/// A stored row of the batch index: its key and its value.
type StoredBatchRow<'a> = (
    redb::AccessGuard<'a, (u64, u64)>,
    redb::AccessGuard<'a, (u64, u32, u64, u32)>,
);

/// A stored row of the time index as a [`TimeRow`].
fn time_row(
    (k, v): (
        redb::AccessGuard<'_, (u64, i64)>,
        redb::AccessGuard<'_, u64>,
    ),
) -> TimeRow {
    TimeRow {
        timestamp_ms: k.value().1,
        base_offset: v.value(),
    }
}

fn batch_row((k, v): StoredBatchRow<'_>) -> BatchRow {
    let (index, record_count, position, bytes) = v.value();
    BatchRow {
        base_offset: k.value().1,
        index,
        record_count,
        position,
        bytes,
    }
}

/// Converts the batch index written before retention (`offsets`) into `batches`, then
/// deletes it. The old rows knew no sizes: a batch's size is taken as its log entry's (the
/// records plus a few bytes of header), and positions add them up from the first batch kept.
/// Such a log has no time index rows: searching by time finds only batches appended after.
fn convert_offsets(txn: &redb::WriteTransaction) -> Result<(), StorageError> {
    let Ok(old) = txn.open_table(OFFSETS) else {
        return Ok(());
    };
    let rows: Vec<((u64, u64), (u64, u32))> = old
        .iter()
        .map_err(StorageError::redb)?
        .map(|item| item.map(|(k, v)| (k.value(), v.value())))
        .collect::<Result<_, _>>()
        .map_err(StorageError::redb)?;
    drop(old);
    if !rows.is_empty() {
        tracing::info!(
            rows = rows.len(),
            "converting the batch index to the retention layout"
        );
    }
    let log = txn.open_table(LOG).map_err(StorageError::redb)?;
    let mut batches = txn.open_table(BATCHES).map_err(StorageError::redb)?;
    let mut position = (u64::MAX, 0u64);
    for ((group, base), (index, count)) in rows {
        if position.0 != group {
            position = (group, 0);
        }
        let bytes = log
            .get((group, index))
            .map_err(StorageError::redb)?
            .map_or(0, |v| v.value().len() as u32);
        batches
            .insert((group, base), (index, count, position.1, bytes))
            .map_err(StorageError::redb)?;
        position.1 += bytes as u64;
    }
    drop(batches);
    drop(log);
    txn.delete_table(OFFSETS).map_err(StorageError::redb)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_truncates_purges_in_queue_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let entries = (1..=10).map(|i| (i, vec![i as u8; 10])).collect();
        store
            .write(vec![Op::Append { group: 7, entries }])
            .await
            .unwrap();
        store
            .write(vec![
                Op::TruncateFrom { group: 7, index: 8 },
                Op::Append {
                    group: 7,
                    entries: vec![(8, vec![99])],
                },
                Op::PurgeTo { group: 7, index: 2 },
            ])
            .await
            .unwrap();
        let got = store.read_log(7, .., 100, usize::MAX).unwrap();
        let idx: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![3, 4, 5, 6, 7, 8]);
        assert_eq!(got.last().unwrap().1, vec![99]);
        // Another group is untouched by group 7's operations.
        assert!(store.read_log(8, .., 100, usize::MAX).unwrap().is_empty());
    }

    /// Deleting log entries counts their bytes as reusable inside the file; writing takes them
    /// back.
    #[tokio::test]
    async fn deleted_log_bytes_count_as_reusable_until_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let entries = (1..=10).map(|i| (i, vec![0u8; 1000])).collect();
        store
            .write(vec![Op::Append { group: 7, entries }])
            .await
            .unwrap();
        assert_eq!(store.reusable_bytes(), 0);
        store
            .write(vec![Op::PurgeTo { group: 7, index: 4 }])
            .await
            .unwrap();
        assert_eq!(store.reusable_bytes(), 4000);
        let counter = store.reusable_counter();
        store
            .write(vec![Op::Append {
                group: 7,
                entries: vec![(11, vec![0u8; 1500])],
            }])
            .await
            .unwrap();
        assert_eq!(counter.get(), 2500);
        store
            .write(vec![Op::DeleteGroup { group: 7 }])
            .await
            .unwrap();
        assert_eq!(counter.get(), 2500 + 6000 + 1500);
    }

    /// The time index follows the batch index: a truncation removes the rows of the batches
    /// it removes, a purge those of purged batches except the last (its timestamp is still
    /// the largest the first kept batches saw).
    #[tokio::test]
    async fn time_rows_follow_truncations_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let entries = (1..=5).map(|i| (i, vec![0u8; 10])).collect();
        let rows = (0..5u64)
            .map(|i| BatchRow {
                base_offset: i * 10,
                index: i + 1,
                record_count: 10,
                position: i * 100,
                bytes: 100,
            })
            .collect();
        // Batches at offsets 0..50 with largest timestamps 100, 300, (250), 400, (350).
        let times = [(100, 0), (300, 10), (400, 30)]
            .map(|(timestamp_ms, base_offset)| TimeRow {
                timestamp_ms,
                base_offset,
            })
            .to_vec();
        store
            .write(vec![
                Op::Append { group: 1, entries },
                Op::IndexOffsets {
                    group: 1,
                    entries: rows,
                    times,
                },
            ])
            .await
            .unwrap();
        let at = |t| store.offset_for_time(1, t).unwrap().map(|r| r.base_offset);
        assert_eq!((at(250), at(301), at(401)), (Some(10), Some(30), None));
        // Truncating from log index 4 (offset 30) removes the 400 row.
        store
            .write(vec![Op::TruncateFrom { group: 1, index: 4 }])
            .await
            .unwrap();
        assert_eq!(at(301), None);
        // Purging up to index 2 (offsets 0..20): the 300 row stays, the 100 row goes.
        store
            .write(vec![Op::PurgeTo { group: 1, index: 2 }])
            .await
            .unwrap();
        assert_eq!(
            store
                .offset_for_time(1, i64::MIN)
                .unwrap()
                .unwrap()
                .timestamp_ms,
            300
        );
        assert_eq!(store.first_offset(1).unwrap(), Some(20));
    }

    /// A database written before retention (batch index `offsets` without sizes) opens with
    /// its index converted: sizes from the log entries, positions adding them up.
    #[test]
    fn an_index_written_before_retention_is_converted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("fjord.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                log.insert((3, 1), &[0u8; 30][..]).unwrap();
                log.insert((3, 2), &[0u8; 50][..]).unwrap();
                let mut old = txn.open_table(OFFSETS).unwrap();
                old.insert((3, 0), (1, 4)).unwrap();
                old.insert((3, 4), (2, 6)).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let rows = store.offsets_from(3, 0, 10).unwrap();
        let got: Vec<(u64, u64, u64, u32)> = rows
            .iter()
            .map(|r| (r.base_offset, r.index, r.position, r.bytes))
            .collect();
        assert_eq!(got, [(0, 1, 0, 30), (4, 2, 30, 50)]);
    }

    /// The simulation's way of opening a store: a task writer on a simulated disk. What was
    /// acknowledged survives a power loss, and the dead incarnation cannot write after it.
    #[tokio::test(flavor = "current_thread")]
    async fn task_writer_on_a_sim_disk_keeps_acknowledged_writes() {
        let disk = crate::sim_disk::SimDisk::new();
        let options = StoreOptions {
            writer: WriterMode::Task {
                commit_latency: std::time::Duration::ZERO,
                sync_delay: None,
            },
            ..Default::default()
        };
        let store = Store::open_on(disk.backend(), &options).unwrap();
        let entries = (1..=3).map(|i| (i, vec![i as u8])).collect();
        store
            .write(vec![Op::Append { group: 1, entries }])
            .await
            .unwrap();
        disk.power_loss();
        assert!(
            store
                .write(vec![Op::TruncateFrom { group: 1, index: 1 }])
                .await
                .is_err(),
            "a write after the power loss must fail, not be acknowledged"
        );
        drop(store);
        let store = Store::open_on(disk.backend(), &options).unwrap();
        let got = store.read_log(1, .., 100, usize::MAX).unwrap();
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2, 3]);
    }

    fn row(base_offset: u64, index: u64, record_count: u32, position: u64) -> BatchRow {
        BatchRow {
            base_offset,
            index,
            record_count,
            position,
            bytes: 40,
        }
    }

    /// Opens the database at `dir` again once the last store on it is dropped: the writer
    /// thread holds it until its queue closes; wait for that.
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Store::open(dir, &StoreOptions::default()) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("the database was not released within 30 s: {e}")
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    /// Lazy writes are held for the next commit: in order before what comes after them, and
    /// written at a clean close even when nothing followed them.
    #[tokio::test]
    async fn lazy_writes_join_the_next_commit_and_are_kept_at_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let put = |key: GroupKey, v: &[u8]| Op::Put {
            group: 1,
            key: key as u8,
            value: v.to_vec(),
        };
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            store
                .write_lazy(vec![put(GroupKey::Committed, b"c1")])
                .await
                .unwrap();
            // A durable write after it overwrites it: queue order holds in the shared commit.
            store
                .write(vec![put(GroupKey::Committed, b"c2")])
                .await
                .unwrap();
            assert_eq!(
                store.get_value(1, GroupKey::Committed).unwrap(),
                Some(b"c2".to_vec())
            );
            store
                .write_lazy(vec![put(GroupKey::StateMachine, b"s")])
                .await
                .unwrap();
            store.write(vec![put(GroupKey::Vote, b"v")]).await.unwrap();
            assert_eq!(
                store.get_value(1, GroupKey::StateMachine).unwrap(),
                Some(b"s".to_vec()),
                "a lazy write is in the commit of the durable write after it"
            );
            // Nothing follows this one: the writer commits it when it stops.
            store
                .write_lazy(vec![put(GroupKey::Committed, b"c3")])
                .await
                .unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(
            store.get_value(1, GroupKey::Committed).unwrap(),
            Some(b"c3".to_vec())
        );
        assert_eq!(
            store.get_value(1, GroupKey::Vote).unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            assert!(store.holds_no_group().unwrap());
            assert_eq!(store.get_node_value(NodeKey::Identity).unwrap(), None);
            store
                .write(vec![
                    Op::Append {
                        group: 1,
                        entries: vec![(1, b"a".to_vec())],
                    },
                    Op::Put {
                        group: 1,
                        key: GroupKey::Vote as u8,
                        value: b"v".to_vec(),
                    },
                    Op::IndexOffsets {
                        group: 1,
                        entries: vec![row(0, 1, 5, 0), row(5, 3, 2, 40)],
                        times: vec![TimeRow {
                            timestamp_ms: 7,
                            base_offset: 5,
                        }],
                    },
                    Op::PutNode {
                        key: NodeKey::Identity as u8,
                        value: b"i".to_vec(),
                    },
                ])
                .await
                .unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(
            store.get_value(1, GroupKey::Vote).unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(
            store.get_node_value(NodeKey::Identity).unwrap(),
            Some(b"i".to_vec())
        );
        assert!(!store.holds_no_group().unwrap());
        assert_eq!(store.find_offset(1, 6).unwrap(), Some(row(5, 3, 2, 40)));
        assert_eq!(store.find_offset(1, 4).unwrap(), Some(row(0, 1, 5, 0)));
        assert_eq!(
            store.offsets_from(1, 1, 10).unwrap(),
            vec![row(5, 3, 2, 40)]
        );
        assert_eq!(store.offset_for_time(1, 3).unwrap().unwrap().base_offset, 5);
        assert_eq!(store.offset_for_time(1, 8).unwrap(), None);
        assert_eq!(
            store.read_log(1, 1..2, 10, 10).unwrap(),
            vec![(1, b"a".to_vec())]
        );
    }
}

/// Queued writes, durable once [`Durable::wait`] returns `Ok`.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<writer::CommitResult>);

impl Durable {
    pub async fn wait(self) -> Result<(), StorageError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(StorageError::CommitFailed { source }),
            Err(_) => Err(StorageError::WriterStopped),
        }
    }
}
