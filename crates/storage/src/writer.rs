//! The group-commit writer: one thread owns every write transaction of the node's database.
//!
//! Callers send a [`WriteBatch`] (a list of [`Op`]s) over a bounded queue and, if they asked
//! for it, get an answer once the transaction holding their ops has been committed with an
//! fsync (`Durability::Immediate`). The thread drains whatever is queued, up to
//! [`MAX_COMMIT_REQUESTS`] requests and [`MAX_COMMIT_BYTES`] bytes, into one transaction: under
//! load, the appends of many groups share one fsync.
//!
//! [`WriterMode::Task`] runs the same loop as a task of the current Tokio runtime instead of a
//! thread, for single-threaded simulations (a thread would run outside simulated time and make
//! the run depend on the OS scheduler). Each commit then runs inline, blocking the runtime
//! while it lasts: right for a simulated disk, wrong for a real one.
//!
//! What must hold: a request is answered `Ok` only after the commit that contains it returned
//! `Ok`; requests are applied in the order they were queued (so a truncation queued after an
//! append removes it, and an append queued after a truncation survives it).

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableTable};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::StorageError;
use crate::sim_disk::SyncDelay;
use crate::stats::CommitStats;
use crate::tables::{BATCHES, GROUP_VALUES, LOG, NODE_VALUES, TIMES};
use crate::{BatchRow, TimeRow};

/// Requests waiting for the writer, at most.
pub const WRITER_QUEUE_REQUESTS: usize = 1024;
/// Bytes of ops (entry bytes plus a small fixed cost per entry or op) waiting for the writer, at most: a sender
/// waits for room. A single request larger than this still goes through, alone.
pub const WRITER_QUEUE_BYTES: usize = 64 << 20;
/// Requests folded into one transaction, at most.
pub const MAX_COMMIT_REQUESTS: usize = 512;
/// Bytes of log entries folded into one transaction, at most (a single larger request still
/// goes through, alone).
pub const MAX_COMMIT_BYTES: usize = 32 << 20;

/// One change to the database.
#[derive(Debug)]
pub enum Op {
    /// Inserts (or overwrites) log entries of a group.
    Append {
        group: u64,
        entries: Vec<(u64, Vec<u8>)>,
    },
    /// Removes the log entries of a group at `index` and after, and the offset index entries
    /// pointing at them.
    TruncateFrom { group: u64, index: u64 },
    /// Replaces the log entry at `index` if it is still there (compaction rewrites an entry in
    /// place; a purge may have deleted it meanwhile, and must not be undone).
    ReplaceIfPresent {
        group: u64,
        index: u64,
        bytes: Vec<u8>,
    },
    /// Removes the log entries of a group up to and including `index`, and the offset index
    /// entries pointing at them.
    PurgeTo { group: u64, index: u64 },
    /// Sets a small per-group value.
    Put { group: u64, key: u8, value: Vec<u8> },
    /// Adds offset index entries: `(base_offset, log index, record count)`.
    /// After a snapshot was installed at log index `index`, whose partition state's next
    /// offset is `next_offset`: removes the batch index rows of entries at or below `index`
    /// (whatever their offsets: a replica's discarded tail can hold rows out of offset order)
    /// and the time index rows below `next_offset`, and adds `time` (the snapshot's largest
    /// timestamp, from `next_offset` on).
    ResetIndexTo {
        group: u64,
        index: u64,
        next_offset: u64,
        time: Option<TimeRow>,
    },
    /// Adds time index rows, after removing every one of the group first when `clear`.
    PutTimes {
        group: u64,
        times: Vec<TimeRow>,
        clear: bool,
    },
    /// Index rows of appended batches, and the time index rows they add.
    IndexOffsets {
        group: u64,
        entries: Vec<BatchRow>,
        times: Vec<TimeRow>,
    },
    /// Removes everything a group has stored.
    DeleteGroup { group: u64 },
    /// Sets a small node-level value (see [`crate::store::NodeKey`]).
    PutNode { key: u8, value: Vec<u8> },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Append { entries, .. } => entries.iter().map(|(_, b)| b.len() + 16).sum(),
            Op::ReplaceIfPresent { bytes, .. } => bytes.len() + 16,
            Op::Put { value, .. } | Op::PutNode { value, .. } => value.len(),
            Op::IndexOffsets { entries, times, .. } => entries.len() * 32 + times.len() * 24,
            _ => 16,
        }
    }
}

/// What a request's waiter hears: its commit is durable, or the error of the commit it was
/// folded into (shared by every request of that commit).
pub type CommitResult = Result<(), Arc<StorageError>>;

/// Ops applied in one transaction, in order, and who to tell when they are durable.
#[derive(Debug)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
    pub done: Option<oneshot::Sender<CommitResult>>,
    /// Its share of [`WRITER_QUEUE_BYTES`], given back when the batch is dropped (committed),
    /// or when the writer defers it ([`release_deferred`]).
    room: Option<OwnedSemaphorePermit>,
}

/// The writer's queue, bounded by requests and by bytes.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    tx: mpsc::Sender<WriteBatch>,
    room: Arc<Semaphore>,
}

impl Queue {
    /// Queues `ops`, waiting for room; `Err` once the writer stopped.
    pub(crate) async fn send(
        &self,
        ops: Vec<Op>,
        done: Option<oneshot::Sender<CommitResult>>,
    ) -> Result<(), ()> {
        let bytes = ops
            .iter()
            .map(Op::bytes)
            .sum::<usize>()
            .clamp(1, WRITER_QUEUE_BYTES);
        let room = self
            .room
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .map_err(|_| ())?;
        self.tx
            .send(WriteBatch {
                ops,
                done,
                room: Some(room),
            })
            .await
            .map_err(|_| ())
    }
}

/// Where the writer loop runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriterMode {
    /// A dedicated OS thread: commits (and their fsyncs) never block the async runtime.
    #[default]
    Thread,
    /// A task of the current Tokio runtime, committing inline: for simulations on a
    /// simulated disk, where everything must run on the simulation's one thread. Each commit
    /// first waits `commit_latency` (of Tokio time, simulated time in a simulation), as an
    /// fsync would: requests arriving meanwhile wait for the next commit, and a crash during
    /// the wait loses the batch, which nobody was answered about. With a `sync_delay` (a
    /// simulated disk's, [`SimDisk::sync_delay`]), each such wait is longer by the delay the
    /// handle holds when the commit starts: a slow disk.
    ///
    /// [`SimDisk::sync_delay`]: crate::sim_disk::SimDisk::sync_delay
    Task {
        commit_latency: std::time::Duration,
        sync_delay: Option<SyncDelay>,
    },
}

/// Starts the writer; it stops when every sender is dropped, then drops its reference to
/// the database and marks `closed` (see [`Closed`]). [`WriterMode::Task`] must be called
/// within a Tokio runtime.
pub(crate) fn spawn(
    db: std::sync::Arc<Database>,
    mode: WriterMode,
    closed: tokio::sync::watch::Sender<bool>,
    failed: tokio::sync::watch::Sender<Option<Arc<StorageError>>>,
    reusable: Arc<AtomicU64>,
    stats: Arc<CommitStats>,
) -> Queue {
    let (tx, mut rx) = mpsc::channel(WRITER_QUEUE_REQUESTS);
    let queue = Queue {
        tx,
        room: Arc::new(Semaphore::new(WRITER_QUEUE_BYTES)),
    };
    match mode {
        WriterMode::Thread => {
            std::thread::Builder::new()
                .name("fjord-storage-writer".into())
                .spawn(move || {
                    let mut pending = Vec::with_capacity(MAX_COMMIT_REQUESTS);
                    while let Some(next) = rx.blocking_recv() {
                        take_queued(next, &mut rx, &mut pending);
                        match next_step(&pending) {
                            Step::Commit => {
                                commit_taken(&db, &mut pending, &failed, &reusable, &stats);
                            }
                            Step::Defer => release_deferred(&mut pending),
                        }
                    }
                    commit_leftovers(&db, &mut pending, &failed, &reusable, &stats);
                    finish(db, &closed, &failed);
                })
                .expect("spawning the storage writer thread");
        }
        WriterMode::Task {
            commit_latency,
            sync_delay,
        } => {
            tokio::spawn(async move {
                let mut pending = Vec::with_capacity(MAX_COMMIT_REQUESTS);
                while let Some(next) = rx.recv().await {
                    take_queued(next, &mut rx, &mut pending);
                    if next_step(&pending) == Step::Defer {
                        release_deferred(&mut pending);
                        continue;
                    }
                    let fsync =
                        commit_latency + sync_delay.as_ref().map_or(Duration::ZERO, SyncDelay::get);
                    if !fsync.is_zero() && matches!(durability(&pending), Durability::Immediate) {
                        tokio::time::sleep(fsync).await;
                    }
                    commit_taken(&db, &mut pending, &failed, &reusable, &stats);
                }
                commit_leftovers(&db, &mut pending, &failed, &reusable, &stats);
                finish(db, &closed, &failed);
            });
        }
    }
    queue
}

/// Drops the writer's reference to the database. Every [`Store`](crate::Store) is gone by
/// now (each holds a sender), and the writer holds the last reference: dropping it closes
/// the database cleanly (redb marks the file as needing no repair at the next open).
fn finish(
    db: std::sync::Arc<Database>,
    closed: &tokio::sync::watch::Sender<bool>,
    failed: &tokio::sync::watch::Sender<Option<Arc<StorageError>>>,
) {
    // Make the last lazy writes durable too (none after a failed commit).
    if failed.borrow().is_none()
        && let Err(e) = commit(&db, &[], Durability::Immediate)
    {
        tracing::warn!(error = %e, "final storage commit failed");
    }
    let clean = std::sync::Arc::strong_count(&db) == 1;
    drop(db);
    if !clean {
        tracing::warn!("the database is still referenced after the writer stopped");
    }
    closed.send_replace(clean);
}

/// Lazy requests (nobody waits for them) folded into the next commit, at most: past this
/// many, they commit on their own, without an fsync.
pub const MAX_DEFERRED_REQUESTS: usize = 64;

/// What the writer does with what it has taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Commit it now.
    Commit,
    /// Hold it for the next commit: only lazy requests, few of them.
    Defer,
}

/// Whether to commit `pending` now. Requests someone waits for commit at once. Lazy ones
/// (derived state rebuilt from the log after a crash: the committed index, checkpoints) wait
/// for the next request and join its transaction, up to [`MAX_DEFERRED_REQUESTS`]: before, each
/// was a transaction of its own (its own header, allocator and table-root pages) between two
/// appends, whose pages the next append's fsync then flushed too. Holding them in memory
/// loses nothing a commit without an fsync kept: both are gone after a crash, and both are
/// written by the next durable commit; the writer commits what it holds when it stops.
fn next_step(pending: &[WriteBatch]) -> Step {
    if pending.iter().any(|b| b.done.is_some()) || pending.len() >= MAX_DEFERRED_REQUESTS {
        Step::Commit
    } else {
        Step::Defer
    }
}

/// Gives back the queue room of the lazy requests the writer holds for the next commit. They
/// would otherwise keep it until a request someone waits for arrives, and one too large for
/// the room left waits for them: the semaphore is fair, so every sender after it waits too,
/// and nothing ever arrives to commit them (every write of the node stalled). What they
/// hold is bounded by [`MAX_DEFERRED_REQUESTS`] small requests.
fn release_deferred(pending: &mut [WriteBatch]) {
    for b in pending {
        b.room = None;
    }
}

/// Commits lazy requests still held when the queue closed.
fn commit_leftovers(
    db: &Database,
    pending: &mut Vec<WriteBatch>,
    failed: &tokio::sync::watch::Sender<Option<Arc<StorageError>>>,
    reusable: &AtomicU64,
    stats: &CommitStats,
) {
    if !pending.is_empty() {
        commit_taken(db, pending, failed, reusable, stats);
    }
}

/// Moves `first` and whatever else is queued into `pending` (which may hold deferred lazy
/// requests), within the limits.
fn take_queued(
    first: WriteBatch,
    rx: &mut mpsc::Receiver<WriteBatch>,
    pending: &mut Vec<WriteBatch>,
) {
    pending.push(first);
    let mut bytes = pending
        .iter()
        .flat_map(|b| b.ops.iter())
        .map(Op::bytes)
        .sum::<usize>();
    while pending.len() < MAX_COMMIT_REQUESTS && bytes < MAX_COMMIT_BYTES {
        match rx.try_recv() {
            Ok(req) => {
                bytes += req.ops.iter().map(Op::bytes).sum::<usize>();
                pending.push(req);
            }
            Err(_) => break,
        }
    }
}

/// Commits `pending` in one transaction, then answers (and empties) it.
fn commit_taken(
    db: &Database,
    pending: &mut Vec<WriteBatch>,
    failed: &tokio::sync::watch::Sender<Option<Arc<StorageError>>>,
    reusable: &AtomicU64,
    stats: &CommitStats,
) {
    let durability = durability(pending);
    let started = std::time::Instant::now();
    // After a failed commit nothing more commits: every later request gets that commit's
    // error. A caller may queue a write before the one it depends on is durable (a snapshot,
    // then the purge of the log behind it; lazy writes before the next durable commit),
    // trusting that a later commit is never durable without the earlier ones. redb refuses
    // writes after an I/O error anyway; this holds it for every error.
    let earlier = failed.borrow().clone();
    let refused = earlier.is_some();
    let result = match earlier {
        Some(e) => Err(e),
        None => commit(db, pending, durability).map_err(Arc::new),
    };
    if result.is_ok() {
        if matches!(durability, Durability::Immediate) {
            stats.fsync_seconds.observe(started.elapsed().as_secs_f64());
        }
        stats.batch_requests.observe(pending.len() as f64);
    }
    if let Ok(net) = &result {
        // Bytes deleted become pages the file reuses; bytes written take them first.
        let _ = reusable.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
            Some(r.saturating_add_signed(*net))
        });
    }
    let result = result.map(|_| ());
    if let Err(e) = &result
        && !refused
    {
        tracing::error!(error = %e, requests = pending.len(), "storage commit failed");
        failed.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(e.clone());
            }
            first
        });
    }
    for req in pending.drain(..) {
        if let Some(done) = req.done {
            let _ = done.send(result.clone());
        }
    }
}

/// How `batches` must be committed: with an fsync (`Immediate`, explicit because
/// acknowledgements depend on it) when anyone waits for one of them. Requests nobody waits for
/// (`Store::write_lazy`: derived state such as the committed index and checkpoints, rebuilt
/// from the log after a crash) normally join the next such commit ([`next_step`]); past
/// [`MAX_DEFERRED_REQUESTS`] of them, or at the writer's stop, they commit without one and
/// become durable with the next fsynced commit. Before, each of them cost an fsync of its own, which the next append then
/// waited for (one-at-a-time produces paid two fsyncs).
fn durability(batches: &[WriteBatch]) -> Durability {
    if batches.iter().any(|b| b.done.is_some()) {
        Durability::Immediate
    } else {
        Durability::None
    }
}

/// Commits `batches` in one transaction; returns the log bytes it deleted less those it wrote.
fn commit(
    db: &Database,
    batches: &[WriteBatch],
    durability: Durability,
) -> Result<i64, StorageError> {
    let mut txn = db.begin_write().map_err(StorageError::redb)?;
    txn.set_durability(durability).map_err(StorageError::redb)?;
    let net = {
        let mut tables = Tables {
            freed: 0,
            log: txn.open_table(LOG).map_err(StorageError::redb)?,
            batches: txn.open_table(BATCHES).map_err(StorageError::redb)?,
            times: txn.open_table(TIMES).map_err(StorageError::redb)?,
            values: txn.open_table(GROUP_VALUES).map_err(StorageError::redb)?,
            node_values: txn.open_table(NODE_VALUES).map_err(StorageError::redb)?,
        };
        for op in batches.iter().flat_map(|b| b.ops.iter()) {
            tables.apply(op)?;
        }
        tables.freed
    };
    txn.commit().map_err(StorageError::redb)?;
    Ok(net)
}

/// The tables a commit writes, open in its transaction.
struct Tables<'txn> {
    /// Log bytes deleted less log bytes written so far.
    freed: i64,
    log: redb::Table<'txn, (u64, u64), &'static [u8]>,
    batches: redb::Table<'txn, (u64, u64), (u64, u32, u64, u32)>,
    times: redb::Table<'txn, (u64, i64), u64>,
    values: redb::Table<'txn, (u64, u8), &'static [u8]>,
    node_values: redb::Table<'txn, u8, &'static [u8]>,
}

impl Tables<'_> {
    fn apply(&mut self, op: &Op) -> Result<(), StorageError> {
        match op {
            Op::Append { group, entries } => {
                for (index, bytes) in entries {
                    self.freed -= bytes.len() as i64;
                    self.log
                        .insert((*group, *index), bytes.as_slice())
                        .map_err(StorageError::redb)?;
                }
            }
            Op::ReplaceIfPresent {
                group,
                index,
                bytes,
            } => {
                let old = self
                    .log
                    .get((*group, *index))
                    .map_err(StorageError::redb)?
                    .map(|v| v.value().len());
                if let Some(old) = old {
                    self.freed += old as i64 - bytes.len() as i64;
                    self.log
                        .insert((*group, *index), bytes.as_slice())
                        .map_err(StorageError::redb)?;
                }
            }
            Op::TruncateFrom { group, index } => {
                let freed = &mut self.freed;
                self.log
                    .retain_in((*group, *index)..=(*group, u64::MAX), |_, v| {
                        *freed += v.len() as i64;
                        false
                    })
                    .map_err(StorageError::redb)?;
                // Index entries grow with the log index: the doomed ones are at the end.
                let removed = self.remove_offsets(*group, true, |idx| idx >= *index)?;
                if let Some(&lowest) = removed.last() {
                    self.remove_times_from(*group, lowest)?;
                }
            }
            Op::PurgeTo { group, index } => {
                let freed = &mut self.freed;
                self.log
                    .retain_in((*group, 0)..=(*group, *index), |_, v| {
                        *freed += v.len() as i64;
                        false
                    })
                    .map_err(StorageError::redb)?;
                // ... and the purged ones at the start.
                if !self
                    .remove_offsets(*group, false, |idx| idx <= *index)?
                    .is_empty()
                {
                    self.remove_times_below(*group)?;
                }
            }
            Op::Put { group, key, value } => {
                self.values
                    .insert((*group, *key), value.as_slice())
                    .map_err(StorageError::redb)?;
            }
            Op::PutNode { key, value } => {
                self.node_values
                    .insert(*key, value.as_slice())
                    .map_err(StorageError::redb)?;
            }
            Op::IndexOffsets {
                group,
                entries,
                times,
            } => {
                for r in entries {
                    self.batches
                        .insert(
                            (*group, r.base_offset),
                            (r.index, r.record_count, r.position, r.bytes),
                        )
                        .map_err(StorageError::redb)?;
                }
                for t in times {
                    self.times
                        .insert((*group, t.timestamp_ms), t.base_offset)
                        .map_err(StorageError::redb)?;
                }
            }
            Op::DeleteGroup { group } => self.delete_group(*group)?,
            Op::PutTimes {
                group,
                times,
                clear,
            } => {
                if *clear {
                    self.times
                        .retain_in((*group, i64::MIN)..=(*group, i64::MAX), |_, _| false)
                        .map_err(StorageError::redb)?;
                }
                for t in times {
                    self.times
                        .insert((*group, t.timestamp_ms), t.base_offset)
                        .map_err(StorageError::redb)?;
                }
            }
            Op::ResetIndexTo {
                group,
                index,
                next_offset,
                time,
            } => self.reset_index_to(*group, *index, *next_offset, *time)?,
        }
        Ok(())
    }

    /// Removes `group`'s index entries whose log index matches `doomed` (see
    /// [`collect_offsets`]).
    /// Returns their base offsets, in the order scanned.
    fn remove_offsets(
        &mut self,
        group: u64,
        from_end: bool,
        doomed: impl Fn(u64) -> bool,
    ) -> Result<Vec<u64>, StorageError> {
        let doomed = collect_offsets(&self.batches, group, from_end, doomed)?;
        for base in &doomed {
            self.batches
                .remove((group, *base))
                .map_err(StorageError::redb)?;
        }
        Ok(doomed)
    }

    fn reset_index_to(
        &mut self,
        group: u64,
        index: u64,
        next_offset: u64,
        time: Option<TimeRow>,
    ) -> Result<(), StorageError> {
        let mut doomed = Vec::new();
        for item in self
            .batches
            .range((group, 0)..=(group, u64::MAX))
            .map_err(StorageError::redb)?
        {
            let (k, v) = item.map_err(StorageError::redb)?;
            if v.value().0 <= index {
                doomed.push(k.value().1);
            }
        }
        for base in doomed {
            self.batches
                .remove((group, base))
                .map_err(StorageError::redb)?;
        }
        let mut old = Vec::new();
        for item in self
            .times
            .range((group, i64::MIN)..=(group, i64::MAX))
            .map_err(StorageError::redb)?
        {
            let (k, v) = item.map_err(StorageError::redb)?;
            if v.value() < next_offset {
                old.push(k.value().1);
            }
        }
        for ts in old {
            self.times.remove((group, ts)).map_err(StorageError::redb)?;
        }
        if let Some(t) = time {
            self.times
                .insert((group, t.timestamp_ms), t.base_offset)
                .map_err(StorageError::redb)?;
        }
        Ok(())
    }

    /// Removes the time index rows of batches from base offset `from` on (truncated).
    fn remove_times_from(&mut self, group: u64, from: u64) -> Result<(), StorageError> {
        let mut doomed = Vec::new();
        for item in self
            .times
            .range((group, i64::MIN)..=(group, i64::MAX))
            .map_err(StorageError::redb)?
            .rev()
        {
            let (k, v) = item.map_err(StorageError::redb)?;
            if v.value() < from {
                break;
            }
            doomed.push(k.value().1);
        }
        for ts in doomed {
            self.times.remove((group, ts)).map_err(StorageError::redb)?;
        }
        Ok(())
    }

    /// Removes the time index rows of batches no longer indexed (purged), except the last of
    /// them: its timestamp is still the largest seen by the first batches kept, until a later
    /// row.
    fn remove_times_below(&mut self, group: u64) -> Result<(), StorageError> {
        let first_kept = self
            .batches
            .range((group, 0)..=(group, u64::MAX))
            .map_err(StorageError::redb)?
            .next()
            .transpose()
            .map_err(StorageError::redb)?
            .map_or(u64::MAX, |(k, _)| k.value().1);
        let mut below = Vec::new();
        for item in self
            .times
            .range((group, i64::MIN)..=(group, i64::MAX))
            .map_err(StorageError::redb)?
        {
            let (k, v) = item.map_err(StorageError::redb)?;
            if v.value() >= first_kept {
                break;
            }
            below.push(k.value().1);
        }
        below.pop();
        for ts in below {
            self.times.remove((group, ts)).map_err(StorageError::redb)?;
        }
        Ok(())
    }

    /// Removes everything `group` stored: its log, its offset index and its values.
    fn delete_group(&mut self, group: u64) -> Result<(), StorageError> {
        let freed = &mut self.freed;
        self.log
            .retain_in((group, 0)..=(group, u64::MAX), |_, v| {
                *freed += v.len() as i64;
                false
            })
            .map_err(StorageError::redb)?;
        self.batches
            .retain_in((group, 0)..=(group, u64::MAX), |_, _| false)
            .map_err(StorageError::redb)?;
        self.times
            .retain_in((group, i64::MIN)..=(group, i64::MAX), |_, _| false)
            .map_err(StorageError::redb)?;
        self.values
            .retain_in((group, 0)..=(group, u8::MAX), |_, _| false)
            .map_err(StorageError::redb)?;
        Ok(())
    }
}

/// Base offsets of `group`'s index entries whose log index matches `doomed`, scanning from
/// the end (`from_end`) or the start, and stopping at the first entry that does not match.
fn collect_offsets(
    table: &redb::Table<(u64, u64), (u64, u32, u64, u32)>,
    group: u64,
    from_end: bool,
    doomed: impl Fn(u64) -> bool,
) -> Result<Vec<u64>, StorageError> {
    let range = table
        .range((group, 0)..=(group, u64::MAX))
        .map_err(StorageError::redb)?;
    let mut out = Vec::new();
    let items: Box<dyn Iterator<Item = _>> = if from_end {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    for item in items {
        let (k, v) = item.map_err(StorageError::redb)?;
        if !doomed(v.value().0) {
            break;
        }
        out.push(k.value().1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn put(bytes: usize) -> Vec<Op> {
        vec![Op::Put {
            group: 1,
            key: 1,
            value: vec![0; bytes],
        }]
    }

    fn batch(lazy: bool) -> WriteBatch {
        let room = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        WriteBatch {
            ops: put(1),
            done: (!lazy).then(|| oneshot::channel().0),
            room: Some(room),
        }
    }

    #[test]
    fn lazy_requests_wait_for_the_next_commit_within_a_bound() {
        assert_eq!(next_step(&[batch(true)]), Step::Defer);
        assert_eq!(next_step(&[batch(true), batch(false)]), Step::Commit);
        assert_eq!(next_step(&[batch(false)]), Step::Commit);
        let many: Vec<_> = (0..MAX_DEFERRED_REQUESTS).map(|_| batch(true)).collect();
        assert_eq!(next_step(&many), Step::Commit);
        assert_eq!(next_step(&many[1..]), Step::Defer);
    }

    /// Once a commit failed, nothing more commits: a later request hears that error and its
    /// ops are not written, so a request queued behind one it depends on is never durable
    /// without it.
    #[test]
    fn nothing_commits_after_a_failed_commit() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("fjord.redb")).unwrap();
        let (failed, _) = tokio::sync::watch::channel(None);
        let (reusable, stats) = (AtomicU64::new(0), CommitStats::default());
        let send = |pending: &mut Vec<WriteBatch>, key: u8| {
            let (tx, rx) = oneshot::channel();
            let room = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
            pending.push(WriteBatch {
                ops: vec![Op::Put {
                    group: 1,
                    key,
                    value: vec![key],
                }],
                done: Some(tx),
                room: Some(room),
            });
            rx
        };
        let stored = |key: u8| {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(crate::tables::GROUP_VALUES).unwrap();
            table.get((1, key)).unwrap().is_some()
        };
        let mut pending = Vec::new();
        let mut first = send(&mut pending, 1);
        commit_taken(&db, &mut pending, &failed, &reusable, &stats);
        assert!(first.try_recv().unwrap().is_ok());
        assert!(stored(1));

        failed.send_replace(Some(Arc::new(StorageError::WriterStopped)));
        let mut second = send(&mut pending, 2);
        commit_taken(&db, &mut pending, &failed, &reusable, &stats);
        assert!(second.try_recv().unwrap().is_err());
        assert!(!stored(2), "a request after a failed commit was written");
    }

    #[tokio::test]
    async fn a_deferred_lazy_request_holds_no_room() {
        // A lazy request held for the next commit, then a request needing all the room: it
        // must get it (before, it waited for the lazy one's room, which only a later request
        // would have freed, and every other sender queued behind it).
        let (tx, mut rx) = mpsc::channel(16);
        let queue = Queue {
            tx,
            room: Arc::new(Semaphore::new(100)),
        };
        queue.send(put(1), None).await.unwrap();
        let mut pending = Vec::new();
        let first = rx.recv().await.unwrap();
        take_queued(first, &mut rx, &mut pending);
        assert_eq!(next_step(&pending), Step::Defer);
        release_deferred(&mut pending);
        let (done, _rx) = oneshot::channel();
        tokio::time::timeout(Duration::from_secs(10), queue.send(put(100), Some(done)))
            .await
            .expect("the whole room is free while the lazy request waits")
            .unwrap();
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_bytes_and_room_comes_back_with_the_commit() {
        let (tx, mut rx) = mpsc::channel(16);
        let queue = Queue {
            tx,
            room: Arc::new(Semaphore::new(100)),
        };
        queue.send(put(60), None).await.unwrap();
        let mut second = Box::pin(queue.send(put(60), None));
        let mut pending = async || {
            std::future::poll_fn(|cx| std::task::Poll::Ready(second.as_mut().poll(cx).is_pending()))
                .await
        };
        assert!(pending().await, "120 bytes do not fit in a 100-byte queue");
        let first = rx.recv().await.unwrap();
        assert!(pending().await, "taken is not committed");
        drop(first);
        second.await.unwrap();
        assert_eq!(rx.recv().await.unwrap().ops.len(), 1);
    }
}
