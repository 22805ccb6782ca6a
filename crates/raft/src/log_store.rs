//! openraft's log storage for one group, over the node's shared [`Store`].
//!
//! Every group of the node writes through the same group-commit writer, so one fsync covers
//! the appends of many groups. `append` queues its entries and returns at once, as openraft
//! asks: until the writer has committed them, the group's [`Tail`] keeps them readable, so
//! the leader replicates an entry while its own fsync runs, and the Raft core takes the next
//! proposals meanwhile (they join the next commit). openraft's `IOFlushed` is called only
//! once the commit holding the entries returned: an entry is never reported durable before
//! its fsync. Votes and truncations wait for their commit; a purge only queues its write
//! (the log as this store shows it starts after the purge at once). The writer commits in
//! queue order, and nothing after a failed commit, so each of them lands after every write
//! queued before it: a purge after the snapshot it follows.
//!
//! For a partition group the store also runs the partition rules over the log as it is
//! appended ([`PartitionShared::on_append`]) and writes the offset index entries of the new
//! batches in the same transaction as the batches. An index entry can point at an entry that
//! is not committed yet; readers never read past the committed high watermark, and a
//! truncation removes the index entries of the entries it removes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use fjord_storage::store::GroupKey;
use fjord_storage::{Op, Store};
use openraft::RaftLogReader;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};

use crate::TypeConfig;
use crate::codec::{self, Entry};
use crate::partition_sm::{Appended, PartitionShared};

/// An append's entries in the tail: its number and the indexes it covers.
struct Held {
    tail: Arc<Mutex<Tail>>,
    append: u64,
    first: u64,
    last: u64,
}

/// Log entries one step of a purge deletes, at most: a purge runs in steps of this many, each
/// its own write (sharing the commit of whatever else is queued), so deleting a long prefix
/// never holds the writer for long and produces keep their latency.
pub const PURGE_STEP_ENTRIES: u64 = 512;

/// Entries read from redb in one call, at most.
const MAX_READ_ENTRIES: usize = 4096;
/// Bytes read from redb in one call, at most (past the first entry).
const MAX_READ_BYTES: usize = 64 << 20;

/// Entries appended but not yet committed to redb, by index, each with the number of the
/// append that brought it (so the end of an older append never removes an entry a later one
/// put at the same index after a truncation). Bounded by what the Raft core has in flight
/// to the writer, whose queue is bounded.
#[derive(Default)]
struct Tail {
    entries: BTreeMap<u64, (u64, Entry)>,
    appends: u64,
}

/// The log of one group.
#[derive(Clone)]
pub struct GroupLogStore {
    group: u64,
    store: Store,
    /// Set for partition groups: the partition rules run at append.
    partition: Option<Arc<PartitionShared>>,
    // Short critical sections (map inserts, removals, a range copy), no await inside.
    tail: Arc<Mutex<Tail>>,
    /// Whether a task is deleting this group's purged entries (one at a time).
    purging: Arc<std::sync::atomic::AtomicBool>,
    /// For a partition: one more than the committed index last saved (0: none yet).
    committed_saved: Arc<std::sync::atomic::AtomicU64>,
    /// How far this replica's log is purged, for its replication streams.
    purged: PurgeMark,
    /// The last purge openraft asked for in this process, which may not be durable yet
    /// ([`RaftLogStorage::purge`] only queues it): the log as this store shows it starts
    /// after it.
    purged_id: Arc<Mutex<Option<LogIdOf<TypeConfig>>>>,
}

/// How far a group's log is purged on this node, shared with the group's network: a leader's
/// replication request that needs an entry at or below it is from a replication session
/// openraft has given up (see [`crate::peer::stream`]).
#[derive(Clone, Default, Debug)]
pub struct PurgeMark(Arc<std::sync::atomic::AtomicU64>);

impl PurgeMark {
    /// The last purged index (`None`: nothing purged).
    pub fn get(&self) -> Option<u64> {
        self.0
            .load(std::sync::atomic::Ordering::Acquire)
            .checked_sub(1)
    }

    /// Records a purge through `index` (never moves back).
    pub fn raise(&self, index: u64) {
        self.0
            .fetch_max(index.saturating_add(1), std::sync::atomic::Ordering::AcqRel);
    }
}

/// A partition saves its committed log id once it moved this many entries past the one it
/// saved last, not at every commit: the id is not needed for safety (openraft saves none by
/// default; a node restarted with an older one applies the rest once a leader commits again,
/// and one older than the applied state counts as the applied state), and writing it each
/// time put a page of its own into every one-at-a-time produce's commit.
pub const SAVE_COMMITTED_EVERY_ENTRIES: u64 = 256;

/// Whether a partition saves the committed index `index`, having saved `saved` last (`None`:
/// none this run). An index below the saved one (a log truncated behind it cannot be, but a
/// snapshot's can be anywhere) is saved at once.
pub fn committed_save_due(saved: Option<u64>, index: u64) -> bool {
    match saved {
        None => true,
        Some(s) => index < s || index >= s.saturating_add(SAVE_COMMITTED_EVERY_ENTRIES),
    }
}

/// The last index the first step of a purge through `purged` deletes, the log's first stored
/// index being `first`; `None` when nothing stored is at or below it.
pub fn first_purge_step(first: Option<u64>, purged: u64) -> Option<u64> {
    let first = first.filter(|f| *f <= purged)?;
    Some(purged.min(first.saturating_add(PURGE_STEP_ENTRIES - 1)))
}

impl GroupLogStore {
    pub fn new(group: u64, store: Store, partition: Option<Arc<PartitionShared>>) -> Self {
        GroupLogStore {
            group,
            store,
            partition,
            tail: Arc::default(),
            purging: Arc::default(),
            committed_saved: Arc::default(),
            purged: PurgeMark::default(),
            purged_id: Arc::default(),
        }
    }

    /// How far this log is purged, as it moves.
    pub fn purge_mark(&self) -> PurgeMark {
        self.purged.clone()
    }

    /// Deletes, in steps of [`PURGE_STEP_ENTRIES`], the stored entries at or below the last
    /// purged log id as stored (durable: what a crash interrupts is finished at the next
    /// start, [`RaftLogStorage::get_log_state`] calls this too; a purge whose write is not yet
    /// durable is deleted once it is). One task per group; a purge while it runs is picked
    /// up by it.
    fn delete_purged(&self) {
        use std::sync::atomic::Ordering;
        if self.purging.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.purge_step().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        // A failed write: the node stops (fail-stop), or the next purge retries.
                        tracing::warn!(group = this.group, error = %e, "deleting purged entries");
                        this.purging.store(false, Ordering::Release);
                        break;
                    }
                }
                this.purging.store(false, Ordering::Release);
                // A purge that came after the last step but saw the flag still set.
                if this.purge_step_needed().unwrap_or(false)
                    && !this.purging.swap(true, Ordering::AcqRel)
                {
                    continue;
                }
                break;
            }
        });
    }

    /// Whether stored entries remain at or below the last purged index.
    fn purge_step_needed(&self) -> Result<bool, io::Error> {
        let Some(purged) = self.get_log_id_value(GroupKey::LastPurged)? else {
            return Ok(false);
        };
        Ok(self
            .store
            .first_log_index(self.group)?
            .is_some_and(|first| first <= purged.index()))
    }

    /// Deletes one step; whether there may be more.
    async fn purge_step(&self) -> Result<bool, io::Error> {
        let Some(purged) = self.get_log_id_value(GroupKey::LastPurged)? else {
            return Ok(false);
        };
        let first = self.store.first_log_index(self.group)?;
        let Some(upto) = first_purge_step(first, purged.index()) else {
            return Ok(false);
        };
        self.store
            .write(vec![Op::PurgeTo {
                group: self.group,
                index: upto,
            }])
            .await?;
        Ok(upto < purged.index())
    }

    /// Entries `start..=end`, each from the tail if it is there (the newest version of that
    /// index), else from redb. The tail may have gaps: appends commit in order, but each
    /// leaves the tail when its own completion runs, so a later one can leave first; what the
    /// tail lacks is then in redb, as an entry leaves the tail only after its commit. redb is
    /// read only below the tail's last contiguous run, which covers a leader's replication
    /// reads of what it just appended.
    fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        // Entries a queued purge removes may still be stored: the log starts after it.
        let start = match self.purged.get() {
            Some(p) => start.max(p.saturating_add(1)),
            None => start,
        };
        if start > end {
            return Ok(Vec::new());
        }
        let mut pending: BTreeMap<u64, Entry> = {
            let t = self.tail.lock().unwrap();
            t.entries
                .range(start..=end)
                .map(|(i, (_, e))| (*i, e.clone()))
                .collect()
        };
        // The tail's last run of consecutive entries: redb is read around it, not inside it
        // (a later append can have left the tail first, so entries past the run can be in
        // redb).
        let (run_start, run_end) = match pending.last_key_value() {
            None => (end.saturating_add(1), end),
            Some((last, _)) => {
                let mut k = *last;
                while k > start && pending.contains_key(&(k - 1)) {
                    k -= 1;
                }
                (k, *last)
            }
        };
        let mut stored = if run_start > start {
            self.read_stored(start, run_start - 1)?
        } else {
            BTreeMap::new()
        };
        if run_end < end {
            stored.extend(self.read_stored(run_end + 1, end)?);
        }
        let mut out = Vec::new();
        // A purged prefix: the log starts later than asked.
        let first = |m: &BTreeMap<u64, Entry>| m.first_key_value().map(|(i, _)| *i);
        let mut next = first(&pending)
            .into_iter()
            .chain(first(&stored))
            .min()
            .unwrap_or(start);
        while next <= end {
            match pending.remove(&next).or_else(|| stored.remove(&next)) {
                Some(e) => out.push(e),
                None => break,
            }
            next += 1;
        }
        let beyond = |m: &BTreeMap<u64, Entry>| m.range(next..).next().map(|(i, _)| *i);
        if let Some(found) = beyond(&pending).into_iter().chain(beyond(&stored)).min() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "group {}: log hole, expected index {next}, found {found}",
                    self.group
                ),
            ));
        }
        Ok(out)
    }

    /// The entries redb holds in `start..=end`, by index.
    fn read_stored(&self, start: u64, end: u64) -> Result<BTreeMap<u64, Entry>, io::Error> {
        let mut out = BTreeMap::new();
        let mut next = start;
        while next <= end {
            let chunk =
                self.store
                    .read_log(self.group, next..=end, MAX_READ_ENTRIES, MAX_READ_BYTES)?;
            let Some((last, _)) = chunk.last() else {
                break;
            };
            next = last + 1;
            for (index, bytes) in chunk {
                out.insert(index, codec::decode::<Entry>(&bytes, "log entry")?);
            }
        }
        Ok(out)
    }

    /// Removes the entries the append numbered `append` put in `first..=last`, now committed
    /// (or failed).
    fn settle(tail: &Mutex<Tail>, append: u64, first: u64, last: u64) {
        let mut t = tail.lock().unwrap();
        let done: Vec<u64> = t
            .entries
            .range(first..=last)
            .filter(|(_, (a, _))| *a == append)
            .map(|(i, _)| *i)
            .collect();
        for i in done {
            t.entries.remove(&i);
        }
    }

    /// The writes of an append: its entries and, for a partition, the offset index of its
    /// batches, which the partition then counts as pending (see [`PartitionShared::on_append`]).
    fn append_ops(&self, entries: &[Entry]) -> Result<(Vec<Op>, Option<Appended>), io::Error> {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .map(|e| Ok((e.index(), codec::encode(e, "log entry")?)))
            .collect::<Result<_, codec::EncodeError>>()?;
        let mut ops = vec![Op::Append {
            group: self.group,
            entries: encoded,
        }];
        let appended = match &self.partition {
            Some(p) => {
                let appended = p
                    .on_append(&self.store, entries)
                    .inspect_err(|_| p.invalidate_tail())?;
                if !appended.index.is_empty() || !appended.times.is_empty() {
                    ops.push(Op::IndexOffsets {
                        group: self.group,
                        entries: appended.index.clone(),
                        times: appended.times.clone(),
                    });
                }
                // The time index rows are written in bulk, with the marker saying up to where.
                if let Some((_, through)) = appended.times_write {
                    ops.push(crate::time_rows::marker_op(self.group, through));
                }
                p.pending_add(&appended.index);
                Some(appended)
            }
            None => None,
        };
        Ok((ops, appended))
    }

    /// Holds `entries` in the tail, readable until they are durable; returns the append's
    /// number.
    fn hold(&self, entries: Vec<Entry>) -> u64 {
        let mut t = self.tail.lock().unwrap();
        t.appends += 1;
        let append = t.appends;
        for e in entries {
            t.entries.insert(e.index(), (append, e));
        }
        append
    }

    /// Once an append's write is durable (or failed): drops its entries from the tail,
    /// settles the partition's pending index, and tells openraft; on success the partition
    /// announces the batches' outcomes.
    async fn once_durable(
        durable: fjord_storage::Durable,
        held: Held,
        partition: Option<Arc<PartitionShared>>,
        appended: Option<Appended>,
        callback: IOFlushed<TypeConfig>,
    ) {
        let result = durable.wait().await;
        Self::settle(&held.tail, held.append, held.first, held.last);
        if let (Some(p), Some(appended)) = (&partition, &appended) {
            p.pending_done(&appended.index);
            if let Some((write, _)) = appended.times_write {
                p.times_written(write);
            }
        }
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                if let (Some(p), Some(appended)) = (&partition, appended) {
                    p.notify_appended(appended.outcomes);
                }
            }
            Err(e) => {
                if let Some(p) = &partition {
                    p.invalidate_tail();
                }
                callback.io_completed(Err(io::Error::other(e.to_string())));
            }
        }
    }

    fn get_log_id_value(&self, key: GroupKey) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        match self.store.get_value(self.group, key)? {
            None => Ok(None),
            Some(b) => Ok(codec::decode(&b, "log id")?),
        }
    }
}

impl RaftLogReader<TypeConfig> for GroupLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((start, end)) = fjord_storage::store::index_bounds(&range) else {
            return Ok(Vec::new());
        };
        self.read_range(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        match self.store.get_value(self.group, GroupKey::Vote)? {
            None => Ok(None),
            Some(b) => Ok(Some(codec::decode::<VoteOf<TypeConfig>>(&b, "vote")?)),
        }
    }
}

impl RaftLogStorage<TypeConfig> for GroupLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let stored_purged = self.get_log_id_value(GroupKey::LastPurged)?;
        if let Some(p) = &stored_purged {
            self.purged.raise(p.index());
        }
        if stored_purged.is_some() && self.purge_step_needed()? {
            // A purge a crash interrupted, or one whose first step is not yet durable (the
            // task that deletes the rest then waits for it: one at a time).
            self.delete_purged();
        }
        let last_purged = std::cmp::max(stored_purged, *self.purged_id.lock().unwrap());
        let pending_last = {
            let t = self.tail.lock().unwrap();
            t.entries.last_key_value().map(|(_, (_, e))| e.log_id())
        };
        if let Some(last) = pending_last {
            return Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: Some(last),
            });
        }
        // Entries at or below the last purged id may still be stored (a deletion under way,
        // or interrupted): the log ends at the later of the two.
        let last = match self.store.log_bounds(self.group)? {
            None => last_purged,
            Some((_, (_, bytes))) => {
                let stored = codec::decode::<Entry>(&bytes, "log entry")?.log_id();
                std::cmp::max(Some(stored), last_purged)
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.store
            .write(vec![Op::Put {
                group: self.group,
                key: GroupKey::Vote as u8,
                value: codec::encode(vote, "vote")?,
            }])
            .await?;
        Ok(())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        // Not needed for safety (it only speeds up recovery), so it does not wait for fsync;
        // a partition saves it every so many entries (see [`SAVE_COMMITTED_EVERY_ENTRIES`]).
        if self.partition.is_some()
            && let Some(c) = &committed
        {
            use std::sync::atomic::Ordering;
            let saved = self.committed_saved.load(Ordering::Acquire).checked_sub(1);
            if !committed_save_due(saved, c.index) {
                return Ok(());
            }
            self.committed_saved
                .store(c.index.saturating_add(1), Ordering::Release);
        }
        self.store
            .write_lazy(vec![Op::Put {
                group: self.group,
                key: GroupKey::Committed as u8,
                value: codec::encode(&committed, "committed log id")?,
            }])
            .await?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        match self.store.get_value(self.group, GroupKey::Committed)? {
            None => Ok(None),
            Some(b) => Ok(codec::decode::<Option<LogIdOf<TypeConfig>>>(
                &b,
                "committed log id",
            )?),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let (ops, appended) = self.append_ops(&entries)?;
        let (first, last) = (entries[0].index(), entries[entries.len() - 1].index());
        let append = self.hold(entries);
        let durable = match self.store.submit(ops).await {
            Ok(d) => d,
            Err(e) => {
                Self::settle(&self.tail, append, first, last);
                if let (Some(p), Some(appended)) = (&self.partition, &appended) {
                    p.invalidate_tail();
                    p.pending_done(&appended.index);
                    if let Some((write, _)) = appended.times_write {
                        p.times_written(write);
                    }
                }
                callback.io_completed(Err(io::Error::other(e.to_string())));
                return Err(io::Error::from(e));
            }
        };
        let held = Held {
            tail: self.tail.clone(),
            append,
            first,
            last,
        };
        let partition = self.partition.clone();
        tokio::spawn(Self::once_durable(
            durable, held, partition, appended, callback,
        ));
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |l| l.index() + 1);
        let mut ops = vec![Op::TruncateFrom {
            group: self.group,
            index: from,
        }];
        if let Some(p) = &self.partition {
            p.invalidate_tail();
            if let Some(through) = p.times_truncated(from) {
                ops.push(crate::time_rows::marker_op(self.group, through));
            }
        }
        {
            let mut t = self.tail.lock().unwrap();
            let _removed = t.entries.split_off(&from);
        }
        self.store.write(ops).await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        // Before the entries leave the tail: a replication read that finds them gone is
        // then recognised as stale.
        self.purged.raise(log_id.index());
        {
            let mut p = self.purged_id.lock().unwrap();
            *p = std::cmp::max(*p, Some(log_id));
        }
        {
            let mut t = self.tail.lock().unwrap();
            let kept = t.entries.split_off(&(log_id.index() + 1));
            t.entries = kept;
        }
        // openraft's core waits for this call, so it only queues the purge: the last purged
        // id with the first step of the deletion, in one commit (what retention purges at
        // each move of the start is usually one step), and the rest is deleted in steps once
        // that is durable. Nothing here needs the purge durable before the core goes on: the
        // id and the entries it removes change in one transaction, so a crash before it finds
        // the log as it was, behind a snapshot written before it (the writer commits in
        // order, and nothing once a commit failed); the entries have left the tail, and a
        // replication read of them is given up (`PurgeMark`).
        tracing::info!(group = self.group, upto = log_id.index(), "purging the log");
        let mut ops = vec![Op::Put {
            group: self.group,
            key: GroupKey::LastPurged as u8,
            value: codec::encode(&Some(log_id), "last purged log id")?,
        }];
        let first = self.store.first_log_index(self.group)?;
        if let Some(upto) = first_purge_step(first, log_id.index()) {
            ops.push(Op::PurgeTo {
                group: self.group,
                index: upto,
            });
        }
        let durable = self.store.submit(ops).await?;
        let this = self.clone();
        tokio::spawn(async move {
            match durable.wait().await {
                // Deletes what the first step left, if anything (it looks first).
                Ok(()) => this.delete_purged(),
                // The node stops (fail-stop): the writer commits nothing more.
                Err(e) => tracing::warn!(group = this.group, error = %e, "purging the log"),
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_deletes_at_most_a_step_at_a_time() {
        // Nothing stored, or nothing at or below the purge.
        assert_eq!(first_purge_step(None, 10), None);
        assert_eq!(first_purge_step(Some(11), 10), None);
        // A short purge is one step.
        assert_eq!(first_purge_step(Some(3), 10), Some(10));
        assert_eq!(first_purge_step(Some(10), 10), Some(10));
        // A long one starts with a full step.
        assert_eq!(first_purge_step(Some(1), 10_000), Some(PURGE_STEP_ENTRIES));
    }

    #[test]
    fn a_partition_saves_its_committed_index_every_so_many_entries() {
        assert!(committed_save_due(None, 0));
        assert!(committed_save_due(None, 7));
        assert!(!committed_save_due(Some(7), 7));
        assert!(!committed_save_due(
            Some(7),
            7 + SAVE_COMMITTED_EVERY_ENTRIES - 1
        ));
        assert!(committed_save_due(
            Some(7),
            7 + SAVE_COMMITTED_EVERY_ENTRIES
        ));
        // Lower than the one saved (a snapshot's): saved at once.
        assert!(committed_save_due(Some(700), 3));
    }
}
