//! A partition's state machine, and the state its log store and the server share with it.
//!
//! The state machine holds no record bytes (the Raft log is the partition): applying a
//! committed batch runs the partition rules ([`PartitionState`]) to decide its offsets or
//! recognise it as a retry, raises the high watermark, and answers the proposer.
//!
//! [`PartitionShared`] is what the log store, the state machine and the produce/fetch paths
//! share: the applied state (behind a short `std` mutex, never held across an await), the high
//! watermark as a `watch` (long-polling fetches wait on it), the prediction of the rules over
//! the uncommitted log tail (for AP acknowledgements and the offset index), and the AP waiters.
//!
//! What must hold: the high watermark only grows, and is raised before the proposer of the
//! batch that raised it is answered (so an acknowledged CP write is visible to a CP read).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use fjord_storage::partition::{Outcome, PartitionState, PartitionStateV2};
use fjord_storage::store::GroupKey;
use fjord_storage::{BatchRow, Op, Store, TimeRow};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::codec::{self, Entry};
use crate::{Request, Response, StoredBatch, TypeConfig};

/// Applied entries between two checkpoints of the state machine, at most. A restart
/// re-applies at most this many entries (plus what was committed but not yet applied).
pub const CHECKPOINT_EVERY_ENTRIES: u64 = 1024;
/// Record bytes applied between two checkpoints, at most (about).
pub const CHECKPOINT_EVERY_BYTES: u64 = 32 << 20;
/// AP produce requests waiting for their batch to reach the leader's disk, per partition.
pub const MAX_AP_WAITERS: usize = 4096;
/// Applied entries of a coordinator partition between two snapshots (after which its log is
/// purged: the snapshot holds every group).
pub const GROUPS_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;

/// The applied state of a partition, as checkpointed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogIdOf<TypeConfig>>,
    pub membership: StoredMembershipOf<TypeConfig>,
    pub state: PartitionState,
    /// The latest compaction asked of this partition (a [`Request::Compact`]), which each
    /// replica carries out on its own log (`crate::compaction`).
    pub compact: Option<crate::CompactRequest>,
    /// A coordinator partition's consumer groups, as its applied records replay
    /// ([`PartitionKind::Groups`]); `None` for a data partition. Encoded after the rest
    /// ([`APPLIED_V3`]), as the records that rebuild it.
    #[serde(skip)]
    pub groups: Option<fjord_groups::Groups>,
}

/// What a partition's records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// Users' records.
    Data,
    /// A partition of the consumer groups' internal topic: its records are
    /// [`fjord_groups::GroupRecord`]s, which every replica replays as it applies them, so a
    /// new coordinator (the partition's new leader) holds its groups at once.
    Groups,
}

/// [`Applied`] as checkpoints written before producer epochs encode it.
#[derive(Deserialize)]
struct AppliedV1 {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    state: fjord_storage::partition::PartitionStateV1,
}

/// [`Applied`] as checkpoints of versions 2 and 3 encode it (before retention).
#[derive(Deserialize)]
struct AppliedV2 {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    state: PartitionStateV2,
}

/// The first byte of a checkpoint (and snapshot) of the second version. A checkpoint of the
/// first version starts with postcard's `Option` tag of `last_applied`, 0 or 1.
const APPLIED_V2: u8 = 0xF2;
/// The first byte of a checkpoint of the third version: [`APPLIED_V2`]'s encoding, then the
/// groups' records (postcard of `Option<Vec<(key, value)>>`, a tombstone never among them).
const APPLIED_V3: u8 = 0xF3;
/// The first byte of a checkpoint of this version: as [`APPLIED_V3`], with the partition
/// state's log start offset, position and largest timestamp.
const APPLIED_V4: u8 = 0xF4;

/// A decoded checkpoint, and whether it was written before retention: its partition state
/// then lacks the position, which the batch index supplies ([`PartitionShared::open`]).
pub struct Decoded {
    pub applied: Applied,
    pub before_retention: bool,
}

/// Applies a batch to the partition rules, and places it (position, time index) when it was
/// appended. The one place both the state machine and the leader's prediction of its log
/// tail decide a batch, so they cannot disagree.
pub fn apply_batch(
    state: &mut PartitionState,
    b: &StoredBatch,
    index: u64,
) -> (Outcome, Option<(BatchRow, Option<TimeRow>)>) {
    let outcome = state.apply(&b.header());
    let placed = match outcome {
        Outcome::Appended { base_offset } if b.record_count > 0 => {
            let bytes = b.original_bytes();
            let place = state.place(bytes as u64, b.max_timestamp_ms);
            let row = BatchRow {
                base_offset,
                index,
                record_count: b.record_count,
                position: place.position,
                bytes,
            };
            let time = place.raised_time.map(|timestamp_ms| TimeRow {
                timestamp_ms,
                base_offset,
            });
            Some((row, time))
        }
        _ => None,
    };
    (outcome, placed)
}

impl Applied {
    /// The checkpoint (and snapshot) encoding: a version byte, then postcard.
    pub fn encode(&self, what: &'static str) -> Result<Vec<u8>, codec::EncodeError> {
        let mut out = vec![APPLIED_V4];
        out.extend_from_slice(&codec::encode(self, what)?);
        let groups: Option<Vec<(Vec<u8>, Vec<u8>)>> = self.groups.as_ref().map(|g| {
            g.snapshot()
                .iter()
                .filter_map(|r| match r.encode() {
                    (k, Some(v)) => Some((k, v)),
                    (_, None) => None,
                })
                .collect()
        });
        out.extend_from_slice(&codec::encode(&groups, what)?);
        Ok(out)
    }

    /// Decodes a checkpoint or snapshot of this version or of the ones before.
    pub fn decode(bytes: &[u8], what: &'static str) -> Result<Applied, codec::DecodeError> {
        Ok(Self::decode_versioned(bytes, what)?.applied)
    }

    /// As [`Applied::decode`], saying whether it was written before retention.
    pub fn decode_versioned(
        bytes: &[u8],
        what: &'static str,
    ) -> Result<Decoded, codec::DecodeError> {
        let bad = |source| codec::DecodeError { what, source };
        let (applied, rest, before_retention) = match bytes.split_first() {
            Some((&APPLIED_V4, rest)) => {
                let (a, rest): (Applied, _) = postcard::take_from_bytes(rest).map_err(bad)?;
                (a, Some(rest), false)
            }
            Some((&APPLIED_V3, rest)) => {
                let (a, rest): (AppliedV2, _) = postcard::take_from_bytes(rest).map_err(bad)?;
                (a.upgrade(), Some(rest), true)
            }
            Some((&APPLIED_V2, rest)) => (
                codec::decode::<AppliedV2>(rest, what)?.upgrade(),
                None,
                true,
            ),
            _ => {
                let v1: AppliedV1 = codec::decode(bytes, what)?;
                let applied = Applied {
                    last_applied: v1.last_applied,
                    membership: v1.membership,
                    state: v1.state.into(),
                    compact: None,
                    groups: None,
                };
                (applied, None, true)
            }
        };
        let mut applied = applied;
        if let Some(rest) = rest {
            applied.groups = decode_groups(rest, what)?;
        }
        Ok(Decoded {
            applied,
            before_retention,
        })
    }

    /// Applies one committed entry, as every replica does in log order; returns the answer
    /// for its proposer and the record bytes it applied.
    pub fn apply_entry(&mut self, group: u64, entry: Entry) -> (Response, u64) {
        let log_id = entry.log_id();
        self.last_applied = Some(log_id);
        match entry.payload {
            EntryPayload::Normal(Request::Batch(b)) => {
                let (outcome, _) = apply_batch(&mut self.state, &b, log_id.index());
                if let (Some(groups), Outcome::Appended { .. }) = (&mut self.groups, outcome) {
                    replay_groups(group, log_id.index(), groups, &b.records);
                }
                (Response::Batch(outcome), b.records.len() as u64)
            }
            EntryPayload::Normal(Request::DeleteRecords {
                offset,
                min_position,
            }) => {
                let log_start_offset = self.state.delete_before_at(offset, min_position);
                (Response::DeleteRecords { log_start_offset }, 0)
            }
            EntryPayload::Normal(Request::Compact(c)) => {
                let upto = c.upto.min(self.state.next_offset);
                if self.compact.is_none_or(|p| p.upto < upto) {
                    self.compact = Some(crate::CompactRequest { upto, ..c });
                }
                (Response::None, 0)
            }
            EntryPayload::Membership(m) => {
                self.membership = StoredMembershipOf::<TypeConfig>::new(Some(log_id), m);
                (Response::None, 0)
            }
            _ => (Response::None, 0),
        }
    }
}

impl AppliedV2 {
    fn upgrade(self) -> Applied {
        Applied {
            last_applied: self.last_applied,
            membership: self.membership,
            state: self.state.upgrade(0),
            compact: None,
            groups: None,
        }
    }
}

/// The groups of a checkpoint of version 3 or later: the records that rebuild them.
fn decode_groups(
    bytes: &[u8],
    what: &'static str,
) -> Result<Option<fjord_groups::Groups>, codec::DecodeError> {
    let groups: Option<Vec<(Vec<u8>, Vec<u8>)>> = codec::decode(bytes, what)?;
    let Some(records) = groups else {
        return Ok(None);
    };
    let mut g = fjord_groups::Groups::default();
    for (k, v) in records {
        let r =
            fjord_groups::GroupRecord::decode(&k, Some(&v)).map_err(|_| codec::DecodeError {
                what,
                source: postcard::Error::DeserializeBadEncoding,
            })?;
        g.apply(&r);
    }
    Ok(Some(g))
}

#[derive(Debug)]
struct Tail {
    /// The last log index folded into `state`.
    through: Option<u64>,
    state: PartitionState,
}

/// What an append decided, for the log store to write and then announce.
#[derive(Debug, Default)]
pub struct Appended {
    /// Batch index rows of the appended batches.
    pub index: Vec<BatchRow>,
    /// The time index rows to write with them: those this append and the ones before it
    /// added, every so many batches ([`crate::time_rows`]); none in between.
    pub times: Vec<TimeRow>,
    /// When `times` are written: the write's number and the marker stored with them.
    pub times_write: Option<(u64, u64)>,
    /// `(token, outcome)` of every appended batch.
    pub outcomes: Vec<(u64, Outcome)>,
}

/// State shared by a partition's log store, state machine and request handlers.
#[derive(Debug)]
pub struct PartitionShared {
    group: u64,
    applied: Mutex<Applied>,
    hw: watch::Sender<u64>,
    tail: Mutex<Option<Tail>>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    /// The index of the last checkpoint, and the record bytes applied since.
    last_checkpoint: Mutex<(u64, u64)>,
    /// Base offsets of the batches appended and not yet committed to the local redb (a
    /// multiset: after a truncation an offset can be pending twice), and a watch on the
    /// lowest of them. A leader applies an entry once a majority *other than itself* flushed
    /// it, so the high watermark can pass batches its own redb does not hold yet; a fetch
    /// reads redb only below the lowest pending batch, and waits for it
    /// ([`PartitionShared::wait_stored`]).
    pending: Mutex<std::collections::BTreeMap<u64, u32>>,
    lowest_pending: watch::Sender<Option<u64>>,
    store: Store,
    kind: PartitionKind,
    /// Whether a compaction task runs for this partition (one at a time).
    compacting: std::sync::atomic::AtomicBool,
    /// The last compaction request this replica carried out, as far as this process knows
    /// (its stored progress says it across restarts).
    compacted: Mutex<Option<crate::CompactRequest>>,
    /// What the last snapshot covers, for [`PartitionShared::purge_due`].
    snapshot: Mutex<SnapshotMark>,
    /// Held by a snapshot build and a snapshot install, for their whole length.
    snapshot_io: tokio::sync::Mutex<()>,
    /// The newest snapshot this process built, while its write is not known durable (set
    /// and cleared under `snapshot_io`, or cleared by the build's commit): a build hands
    /// openraft its snapshot before the write is durable, and openraft sends it, and the
    /// next build starts from it, rather than from an older stored one.
    newest_snapshot: Mutex<Option<Arc<Vec<u8>>>>,
    /// Set when the checkpoint was written before the time index existed: it is rebuilt from
    /// the log before the group starts ([`PartitionShared::rebuild_time_index`]).
    needs_time_index: std::sync::atomic::AtomicBool,
    /// Where this replica notes that applying an entry moved its log start offset (the
    /// node's retention task then asks for the snapshot that lets the log be purged), or
    /// passed [`PartitionShared::arm_size_trigger`]'s position.
    retention_notes: std::sync::OnceLock<Arc<crate::RetentionNotes>>,
    /// The position (record bytes since the partition began, appended or applied) at which
    /// to note the group grown; `u64::MAX`: none. Set by the retention task on the leader,
    /// cleared when passed (noted once). It starts at 0: a replica's first append or apply
    /// asks the retention task to look (it arms the trigger if this replica leads with
    /// retention by size, else disarms it; a replica that becomes leader later is armed at
    /// the next round).
    size_trigger: std::sync::atomic::AtomicU64,
    /// The time index rows not stored yet ([`crate::time_rows`]).
    time_rows: Mutex<crate::time_rows::TimeRows>,
}

/// What a partition's last snapshot covers, and when one was last asked for.
#[derive(Debug, Clone, Copy, Default)]
struct SnapshotMark {
    /// The last log index in the snapshot.
    index: Option<u64>,
    /// The log start offset when the last snapshot was built (0 when none was, this run).
    built_at_start: u64,
    /// The log start offset when a snapshot was last asked for, and when.
    asked: Option<(u64, std::time::Instant)>,
}

/// How long an asked-for snapshot may take to be built before it is asked for again
/// (openraft drops a request while it builds another).
const SNAPSHOT_ASK_AGAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A partition's applied extent ([`PartitionShared::bounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub log_start_offset: u64,
    pub next_offset: u64,
    pub next_position: u64,
    pub max_timestamp_ms: Option<i64>,
}

/// Why an AP waiter could not be registered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{MAX_AP_WAITERS} AP produce requests are already waiting on this partition")]
pub struct TooManyWaiters;

/// An AP waiter's registration: dropping it forgets the waiter. (A waiter used to be removed
/// only at the end of its request, so a request dropped by its timeout left it behind, and
/// [`MAX_AP_WAITERS`] of them made every AP write to the partition Busy until a restart.)
pub struct WaiterGuard<'a> {
    shared: &'a PartitionShared,
    token: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.waiters.lock().unwrap().remove(&self.token);
    }
}

impl PartitionShared {
    /// Notes in `notes` each time an applied entry moves this replica's log start offset or
    /// passes the size trigger.
    pub fn note_retention_in(&self, notes: Arc<crate::RetentionNotes>) {
        let _ = self.retention_notes.set(notes);
    }

    /// Notes the group grown (once) when the applied position reaches `position`; `None`
    /// disarms. If it is reached already, the group is noted now.
    pub fn arm_size_trigger(&self, position: Option<u64>) {
        use std::sync::atomic::Ordering;
        let Some(at) = position else {
            self.size_trigger.store(u64::MAX, Ordering::Release);
            return;
        };
        self.size_trigger.store(at, Ordering::Release);
        // An append between the decision and this store would not have seen the trigger.
        self.check_size_trigger(self.appended_position());
    }

    /// The position (record bytes since the partition began) after the last entry this
    /// replica appended, committed or not; the applied one when it has no prediction.
    pub fn appended_position(&self) -> u64 {
        let applied = self.applied.lock().unwrap().state.next_position;
        let tail = self.tail.lock().unwrap();
        tail.as_ref()
            .map_or(applied, |t| t.state.next_position.max(applied))
    }

    /// Called with the appended (and the applied) position after each append and apply:
    /// notes the group once the trigger is reached.
    fn check_size_trigger(&self, position: u64) {
        use std::sync::atomic::Ordering;
        let at = self.size_trigger.load(Ordering::Acquire);
        if position >= at
            && self
                .size_trigger
                .compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            && let Some(n) = self.retention_notes.get()
        {
            n.note_grown(self.group);
        }
    }

    /// Loads the last checkpoint of `group`'s applied state.
    pub fn open(group: u64, store: &Store, kind: PartitionKind) -> Result<Arc<Self>, io::Error> {
        let mut before_retention = false;
        let mut applied: Applied = match store.get_value(group, GroupKey::StateMachine)? {
            Some(b) => {
                let d = Applied::decode_versioned(&b, "partition checkpoint")?;
                before_retention = d.before_retention;
                let mut applied = d.applied;
                if d.before_retention {
                    // The position after the last applied batch, as the converted index knows it.
                    let next = applied.state.next_offset;
                    applied.state.next_position = match next.checked_sub(1) {
                        Some(last) => store
                            .find_offset(group, last)?
                            .map_or(0, |r| r.end_position()),
                        None => 0,
                    };
                }
                applied
            }
            None => Applied::default(),
        };
        let snapshot_index = match store.get_value(group, GroupKey::Snapshot)? {
            Some(b) => Applied::decode(&b, "partition snapshot")?
                .last_applied
                .map(|l| l.index()),
            None => None,
        };
        match (kind, &applied.groups) {
            (PartitionKind::Groups, None) => {
                if applied.last_applied.is_some() {
                    // Only a checkpoint written without groups: a partition that was not a
                    // coordinator partition. Nothing to replay from it.
                    tracing::warn!(
                        group,
                        "a coordinator partition's checkpoint holds no groups"
                    );
                }
                applied.groups = Some(fjord_groups::Groups::default());
            }
            (PartitionKind::Data, Some(_)) => applied.groups = None,
            _ => {}
        }
        let hw = applied.state.next_offset;
        let ckpt = applied.last_applied.as_ref().map_or(0, |l| l.index());
        Ok(Arc::new(PartitionShared {
            group,
            applied: Mutex::new(applied),
            hw: watch::channel(hw).0,
            pending: Mutex::new(Default::default()),
            lowest_pending: watch::channel(None).0,
            tail: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            last_checkpoint: Mutex::new((ckpt, 0)),
            store: store.clone(),
            kind,
            compacting: Default::default(),
            compacted: Mutex::new(None),
            snapshot_io: tokio::sync::Mutex::new(()),
            newest_snapshot: Mutex::new(None),
            needs_time_index: std::sync::atomic::AtomicBool::new(before_retention),
            retention_notes: std::sync::OnceLock::new(),
            size_trigger: std::sync::atomic::AtomicU64::new(0),
            time_rows: Mutex::new(crate::time_rows::TimeRows::new(None)),
            snapshot: Mutex::new(SnapshotMark {
                index: snapshot_index,
                ..SnapshotMark::default()
            }),
        }))
    }

    /// For a partition whose checkpoint was written before the time index existed: builds its
    /// time index from its log (every batch's largest timestamp; entries written then hold
    /// their append time) and the applied state's largest timestamp, then checkpoints, once,
    /// before the group starts. Without it, retention by time would see no row for the old
    /// records and take them for expired.
    pub async fn rebuild_time_index(&self) -> Result<(), io::Error> {
        use std::sync::atomic::Ordering;
        if !self.needs_time_index.load(Ordering::Acquire) {
            return Ok(());
        }
        let applied_index = self.applied.lock().unwrap().last_applied.map(|l| l.index());
        let (mut max, mut applied_max, mut from, mut clear) = (None::<i64>, None, 0u64, true);
        loop {
            let rows = self.store.offsets_from(self.group, from, 4096)?;
            let Some(last) = rows.last().copied() else {
                break;
            };
            let times = self.raises(&rows, &mut max, |r, max| {
                if applied_index.is_some_and(|a| r.index <= a) {
                    applied_max = max;
                }
            })?;
            self.store
                .write(vec![Op::PutTimes {
                    group: self.group,
                    times,
                    clear,
                }])
                .await?;
            clear = false;
            from = last.end_offset();
        }
        self.applied.lock().unwrap().state.max_timestamp_ms = applied_max;
        self.checkpoint_now().await?;
        self.needs_time_index.store(false, Ordering::Release);
        tracing::info!(
            group = self.group,
            "time index built from the log (written before it existed)"
        );
        Ok(())
    }

    /// Reads back the log entries of `rows` (batch index rows, in order) and returns the time
    /// index rows of the batches that raised the largest timestamp `max` (carried from the
    /// rows before); calls `each` with every row and `max` after its batch.
    fn raises(
        &self,
        rows: &[BatchRow],
        max: &mut Option<i64>,
        mut each: impl FnMut(&BatchRow, Option<i64>),
    ) -> Result<Vec<TimeRow>, io::Error> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let entries: HashMap<u64, Vec<u8>> = self
            .store
            .read_log(self.group, first.index..=last.index, usize::MAX, usize::MAX)?
            .into_iter()
            .collect();
        let mut times = Vec::new();
        for r in rows {
            if let Some(raw) = entries.get(&r.index)
                && let Some(b) = codec::stored_batch(raw)?
                && max.is_none_or(|m| b.max_timestamp_ms > m)
            {
                *max = Some(b.max_timestamp_ms);
                times.push(TimeRow {
                    timestamp_ms: b.max_timestamp_ms,
                    base_offset: r.base_offset,
                });
            }
            each(r, *max);
        }
        Ok(times)
    }

    /// Whether a compaction request was applied that this replica has not carried out yet
    /// (without a read of its stored progress, once this process carried one out).
    pub fn compaction_pending(&self) -> bool {
        let req = self.compact_request();
        req.is_some() && *self.compacted.lock().unwrap() != req
    }

    /// Notes that this replica carried out compaction request `req`.
    pub fn compacted(&self, req: crate::CompactRequest) {
        *self.compacted.lock().unwrap() = Some(req);
    }

    /// Marks a compaction task started; `false` when one runs already.
    pub fn start_compacting(&self) -> bool {
        !self
            .compacting
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Marks the compaction task ended.
    pub fn done_compacting(&self) {
        self.compacting
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The latest compaction asked of this partition, as applied.
    pub fn compact_request(&self) -> Option<crate::CompactRequest> {
        self.applied.lock().unwrap().compact
    }

    /// The first offset still readable (the replicated log start offset).
    pub fn log_start_offset(&self) -> u64 {
        self.applied.lock().unwrap().state.log_start_offset
    }

    /// The applied partition state's log start offset, next offset, position and largest
    /// timestamp, read under one lock.
    pub fn bounds(&self) -> Bounds {
        let a = self.applied.lock().unwrap();
        Bounds {
            log_start_offset: a.state.log_start_offset,
            next_offset: a.state.next_offset,
            next_position: a.state.next_position,
            max_timestamp_ms: a.state.max_timestamp_ms,
        }
    }

    /// Whether a snapshot should be built now, so that openraft purges the log behind it: a
    /// data partition whose log start offset moved since the last one was asked for, or a
    /// coordinator partition [`GROUPS_SNAPSHOT_EVERY_ENTRIES`] entries past its last snapshot.
    /// Marks it asked.
    pub fn purge_due(&self) -> bool {
        let (start, applied) = {
            let a = self.applied.lock().unwrap();
            (a.state.log_start_offset, a.last_applied.map(|l| l.index()))
        };
        let mut mark = self.snapshot.lock().unwrap();
        let wanted = match self.kind {
            PartitionKind::Data => start > mark.built_at_start,
            PartitionKind::Groups => applied.is_some_and(|a| {
                a >= mark.index.map_or(0, |i| i + 1) + GROUPS_SNAPSHOT_EVERY_ENTRIES
            }),
        };
        let asked_already = mark
            .asked
            .is_some_and(|(at, when)| at >= start && when.elapsed() < SNAPSHOT_ASK_AGAIN);
        let due = wanted && !asked_already;
        if due {
            mark.asked = Some((start, std::time::Instant::now()));
        }
        due
    }

    /// The last log index the next snapshot may cover: everything applied for a coordinator
    /// partition (the snapshot holds its groups); for a data partition, the entry before the
    /// first batch holding a record at or after the log start offset (its records stay in
    /// the log), or everything applied when no such batch is left.
    fn snapshot_target(&self, applied: &Applied) -> Result<Option<u64>, io::Error> {
        let (start, next_offset) = (applied.state.log_start_offset, applied.state.next_offset);
        let Some(applied) = applied.last_applied.map(|l| l.index()) else {
            return Ok(None);
        };
        if self.kind == PartitionKind::Groups {
            return Ok(Some(applied));
        }
        let kept = match self.store.find_offset(self.group, start)? {
            Some(r) if r.end_offset() > start => Some(r.index),
            _ => self
                .store
                .offsets_from(self.group, start, 1)?
                .first()
                .map(|r| r.index),
        };
        Ok(match kept {
            Some(index) => index.checked_sub(1).map(|i| i.min(applied)),
            // Every batch is below the start: the whole applied log can go.
            None if start >= next_offset => Some(applied),
            // A batch at or after the start is applied but not in the index: keep everything.
            None => None,
        })
    }

    pub fn group(&self) -> u64 {
        self.group
    }

    /// The newest snapshot: the one this process last built or installed, else the stored
    /// one.
    fn newest_snapshot(&self) -> Result<Option<Arc<Vec<u8>>>, io::Error> {
        if let Some(s) = self.newest_snapshot.lock().unwrap().clone() {
            return Ok(Some(s));
        }
        Ok(self
            .store
            .get_value(self.group, GroupKey::Snapshot)?
            .map(Arc::new))
    }

    /// Reads the consumer groups of a coordinator partition as applied (`None` for a data
    /// partition). `f` runs under the applied state's lock: keep it short.
    pub fn with_groups<T>(&self, f: impl FnOnce(&fjord_groups::Groups) -> T) -> Option<T> {
        self.applied.lock().unwrap().groups.as_ref().map(f)
    }

    /// The offset after the last committed record.
    pub fn high_watermark(&self) -> u64 {
        *self.hw.borrow()
    }

    /// Watches the high watermark (long-polling fetches wait on it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
    }

    /// Registers interest in the outcome of the batch proposed with `token`, known as soon as
    /// the batch is durable in this node's log. The waiter is forgotten when the returned
    /// guard drops, however the request ends (answered, failed, or dropped by its timeout).
    pub fn register_waiter(
        &self,
        token: u64,
    ) -> Result<(WaiterGuard<'_>, oneshot::Receiver<Outcome>), TooManyWaiters> {
        // Short critical section, no await inside: a std mutex is the cheapest correct tool.
        let mut w = self.waiters.lock().unwrap();
        if w.len() >= MAX_AP_WAITERS {
            return Err(TooManyWaiters);
        }
        let (tx, rx) = oneshot::channel();
        w.insert(token, tx);
        Ok((
            WaiterGuard {
                shared: self,
                token,
            },
            rx,
        ))
    }

    /// Notes batches handed to the writer.
    pub fn pending_add(&self, index: &[BatchRow]) {
        if index.is_empty() {
            return;
        }
        let mut p = self.pending.lock().unwrap();
        for r in index {
            *p.entry(r.base_offset).or_default() += 1;
        }
        let lowest = p.keys().next().copied();
        self.lowest_pending
            .send_if_modified(|l| std::mem::replace(l, lowest) != lowest);
    }

    /// Notes batches whose write ended (committed to redb, or failed).
    pub fn pending_done(&self, index: &[BatchRow]) {
        if index.is_empty() {
            return;
        }
        let mut p = self.pending.lock().unwrap();
        for r in index {
            if let Some(n) = p.get_mut(&r.base_offset) {
                *n -= 1;
                if *n == 0 {
                    p.remove(&r.base_offset);
                }
            }
        }
        let lowest = p.keys().next().copied();
        self.lowest_pending
            .send_if_modified(|l| std::mem::replace(l, lowest) != lowest);
    }

    /// Waits, at most until `deadline`, until every batch below offset `upto` is in the local
    /// redb (none is pending below it). Returns whether they are.
    pub async fn wait_stored(&self, upto: u64, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.lowest_pending.subscribe();
        loop {
            if rx.borrow_and_update().is_none_or(|l| l >= upto) {
                return true;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, rx.changed()).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
    }

    /// How many AP waiters are registered.
    pub fn waiter_count(&self) -> usize {
        self.waiters.lock().unwrap().len()
    }

    /// Runs the partition rules over entries about to be appended after the current tail.
    pub fn on_append(&self, store: &Store, entries: &[Entry]) -> Result<Appended, io::Error> {
        let Some(first) = entries.first().map(|e| e.index()) else {
            return Ok(Appended::default());
        };
        let mut tail_guard = self.tail.lock().unwrap();
        let continues = matches!(&*tail_guard, Some(t) if t.through.map_or(0, |i| i + 1) == first);
        if !continues {
            let (t, complete) = self.rebuild_tail(store, first)?;
            if !complete {
                tracing::error!(
                    group = self.group,
                    first,
                    "rebuilding the offset prediction before an append found entries not stored yet"
                );
            }
            *tail_guard = Some(t);
        }
        let tail = tail_guard.as_mut().expect("tail was just set");
        let mut out = Appended::default();
        let (mut rows, mut batches, mut bytes) = (Vec::new(), 0u64, 0u64);
        for e in entries {
            if let EntryPayload::Normal(Request::Batch(b)) = &e.payload {
                batches += 1;
                bytes = bytes.saturating_add(b.records.len() as u64);
                // Every replica checks the producer's CRC before the batch reaches its disk:
                // a batch corrupted on the way is an error, never stored data.
                fjord_proto::batch::verify(&b.records, b.stored_crc()).map_err(|err| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("group {} entry {}: {err}", self.group, e.index()),
                    )
                })?;
                let (outcome, placed) = apply_batch(&mut tail.state, b, e.index());
                if let Some((row, time)) = placed {
                    out.index.push(row);
                    rows.extend(time.map(|t| (e.index(), t)));
                }
                out.outcomes.push((b.token, outcome));
            } else if let EntryPayload::Normal(Request::DeleteRecords {
                offset,
                min_position,
            }) = &e.payload
            {
                tail.state.delete_before_at(*offset, *min_position);
            }
            tail.through = Some(e.index());
        }
        let appended_position = tail.state.next_position;
        drop(tail_guard);
        // Retention by size counts what the leader appended: deciding only once the
        // records are applied lets the batches in flight behind them pile up first.
        self.check_size_trigger(appended_position);
        let last = entries.last().map_or(first, |e| e.index());
        if let Some(w) = self
            .time_rows
            .lock()
            .unwrap()
            .appended(rows, batches, bytes, last)
        {
            out.times = w.rows;
            out.times_write = Some((w.write, w.through));
        }
        Ok(out)
    }

    /// The write of time index rows `write` ended (see [`Appended::times_write`]).
    pub fn times_written(&self, write: u64) {
        self.time_rows.lock().unwrap().written(write);
    }

    /// After the log was truncated from log index `from`: the marker to store with the
    /// truncation, if the stored one is past it ([`crate::time_rows::TimeRows::truncated`]).
    pub fn times_truncated(&self, from: u64) -> Option<u64> {
        self.time_rows.lock().unwrap().truncated(from)
    }

    /// Stores the time index rows held in memory (a partition going quiet: hibernating or
    /// stopping), so that an idle replica holds none and the next start rebuilds none.
    pub async fn store_time_rows(&self) {
        let Some(w) = self.time_rows.lock().unwrap().take_all() else {
            return;
        };
        let result = self
            .store
            .write(crate::time_rows::rows_ops(self.group, w.rows, w.through))
            .await;
        self.times_written(w.write);
        if let Err(e) = result {
            tracing::warn!(group = self.group, error = %e, "cannot store the time index rows");
        }
    }

    /// The first time index row whose timestamp is at least `ts`: among the stored rows, or
    /// else among those not stored yet (which are all newer).
    pub fn offset_for_time(&self, ts: i64) -> Result<Option<TimeRow>, fjord_storage::StorageError> {
        if let Some(row) = self.store.offset_for_time(self.group, ts)? {
            return Ok(Some(row));
        }
        Ok(self.time_rows.lock().unwrap().first_at_or_after(ts))
    }

    /// Before the group starts (and again after a hibernation): stores the time index rows
    /// of the entries at and after the stored marker, which a crash (or a stop) may have
    /// left unwritten, rebuilt from the log: at most [`crate::time_rows::WRITE_EVERY_BATCHES`]
    /// batches or [`crate::time_rows::WRITE_EVERY_BYTES`] bytes read back (and one batch).
    pub async fn recover_time_rows(&self) -> Result<(), io::Error> {
        let Some(raw) = self
            .store
            .get_value(self.group, GroupKey::TimeRowsThrough)?
        else {
            // A data dir from before the marker holds every row; this run's first append
            // stores one.
            return Ok(());
        };
        let marker = crate::time_rows::decode_marker(&raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "group {}: a time index marker of {} bytes",
                    self.group,
                    raw.len()
                ),
            )
        })?;
        // Every row of a batch below the marker is stored, so the last stored row holds the
        // largest timestamp up to there, and no batch between it and the marker raised it.
        let last = self.store.last_time_row(self.group)?;
        let mut max = last.map(|r| r.timestamp_ms);
        let mut from = last.map_or(0, |r| r.base_offset);
        let (mut times, mut through) = (Vec::new(), marker);
        loop {
            let chunk = self.store.offsets_from(self.group, from, 4096)?;
            let Some(next) = chunk.last().map(BatchRow::end_offset) else {
                break;
            };
            let after: Vec<BatchRow> = chunk.into_iter().filter(|r| r.index >= marker).collect();
            for rows in after.chunks(64) {
                times.extend(self.raises(rows, &mut max, |r, _| {
                    through = through.max(r.index.saturating_add(1));
                })?);
            }
            if next <= from {
                break;
            }
            from = next;
        }
        if through > marker || !times.is_empty() {
            self.store
                .write(crate::time_rows::rows_ops(self.group, times, through))
                .await?;
        }
        *self.time_rows.lock().unwrap() = crate::time_rows::TimeRows::new(Some(through));
        Ok(())
    }

    /// The rules' state just before log index `next`: the applied state, plus every entry
    /// of the log between it and `next`; and whether the stored log held all of them (an
    /// entry appended but not yet stored is not there: the state then stops before it).
    fn rebuild_tail(&self, store: &Store, next: u64) -> Result<(Tail, bool), io::Error> {
        let (applied_index, mut state) = {
            let a = self.applied.lock().unwrap();
            (a.last_applied.as_ref().map(|l| l.index()), a.state.clone())
        };
        let start = applied_index.map_or(0, |i| i + 1);
        if start > next {
            // The state machine is ahead of the log: only after a snapshot was installed.
            // Predict from it as is.
            tracing::debug!(
                group = self.group,
                next,
                start,
                "appending below the applied index"
            );
            return Ok((
                Tail {
                    through: next.checked_sub(1),
                    state,
                },
                true,
            ));
        }
        let mut at = start;
        // The first entry read may be past `start` (a log that begins at index 1 with
        // nothing applied); after it, each must follow the one before.
        let mut first = true;
        'read: while at < next {
            let chunk = store.read_log(self.group, at..next, 4096, 64 << 20)?;
            if chunk.is_empty() {
                break;
            }
            for (index, bytes) in chunk {
                if index != at && !first {
                    // A hole in the stored log: stop before it (incomplete).
                    break 'read;
                }
                first = false;
                let e: Entry = codec::decode(&bytes, "log entry")?;
                match &e.payload {
                    EntryPayload::Normal(Request::Batch(b)) => {
                        apply_batch(&mut state, b, index);
                    }
                    EntryPayload::Normal(Request::DeleteRecords {
                        offset,
                        min_position,
                    }) => {
                        state.delete_before_at(*offset, *min_position);
                    }
                    _ => {}
                }
                at = index + 1;
            }
        }
        Ok((
            Tail {
                through: next.checked_sub(1),
                state,
            },
            at >= next,
        ))
    }

    /// The rules' state after log index `last` (the leader's last entry): where the AP
    /// batches a leader holds without a majority take their outcomes from ([`crate::side`]).
    /// `Ok(None)` when the entries up to `last` are not all stored yet (a prediction from
    /// what is stored would place held batches at offsets already given).
    pub fn predicted_after(&self, last: Option<u64>) -> Result<Option<PartitionState>, io::Error> {
        let mut tail = self.tail.lock().unwrap();
        if let Some(t) = &*tail
            && t.through == last
        {
            return Ok(Some(t.state.clone()));
        }
        let next = last.map_or(0, |i| i + 1);
        let (t, complete) = self.rebuild_tail(&self.store, next)?;
        if !complete {
            // Refused (the batch is answered as unavailable), never guessed.
            return Ok(None);
        }
        let state = t.state.clone();
        *tail = Some(t);
        Ok(Some(state))
    }

    /// Forgets the tail prediction (after a truncation or a failed write).
    pub fn invalidate_tail(&self) {
        *self.tail.lock().unwrap() = None;
    }

    /// Answers the AP waiters of batches now durable in the log.
    pub fn notify_appended(&self, outcomes: Vec<(u64, Outcome)>) {
        let mut w = self.waiters.lock().unwrap();
        if w.is_empty() {
            return;
        }
        for (token, outcome) in outcomes {
            if let Some(tx) = w.remove(&token) {
                let _ = tx.send(outcome);
            }
        }
    }

    /// Whether to checkpoint the applied state now, at `index`, `bytes` of records after the
    /// last call: every [`CHECKPOINT_EVERY_ENTRIES`] entries or [`CHECKPOINT_EVERY_BYTES`]
    /// bytes, so that a restart re-applies (reads back) at most that much of the log.
    fn checkpoint_due(&self, index: u64, bytes: u64) -> bool {
        let mut last = self.last_checkpoint.lock().unwrap();
        last.1 += bytes;
        if index >= last.0 + CHECKPOINT_EVERY_ENTRIES || last.1 >= CHECKPOINT_EVERY_BYTES {
            *last = (index, 0);
            true
        } else {
            false
        }
    }

    /// Writes the applied state durably: at a clean stop, so that the next start re-applies
    /// nothing.
    pub async fn checkpoint_now(&self) -> Result<(), io::Error> {
        let a = self.applied.lock().unwrap().clone();
        self.store
            .write(vec![Op::Put {
                group: self.group,
                key: GroupKey::StateMachine as u8,
                value: a.encode("partition state")?,
            }])
            .await?;
        Ok(())
    }
}

/// Replays the group records of an applied batch. Only the coordinator writes to its
/// partition, and every replica decodes the same bytes the same way: a record that does not
/// decode (a bug, or corruption that passed the CRC) is skipped the same way everywhere, and
/// logged, rather than stopping the partition.
fn replay_groups(group: u64, index: u64, groups: &mut fjord_groups::Groups, records: &[u8]) {
    // The CRC was checked when the batch reached this replica's log.
    let list = match fjord_proto::batch::decode_unchecked(records) {
        Ok(list) => list,
        Err(e) => {
            tracing::error!(group, index, "a coordinator batch does not decode: {e}");
            return;
        }
    };
    for r in &list {
        let value = (!r.value.is_empty()).then_some(&r.value[..]);
        match fjord_groups::GroupRecord::decode(r.key.as_deref().unwrap_or(&[]), value) {
            Ok(rec) => groups.apply(&rec),
            Err(e) => tracing::error!(group, index, "skipping a group record: {e}"),
        }
    }
    debug_assert!(
        groups.validate().is_ok(),
        "group {group} at {index}: {}",
        groups.validate().unwrap_err()
    );
}

/// openraft's state machine for a partition group.
pub struct PartitionSm {
    shared: Arc<PartitionShared>,
    store: Store,
}

impl PartitionSm {
    pub fn new(shared: Arc<PartitionShared>, store: Store) -> Self {
        PartitionSm { shared, store }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for PartitionSm {
    type SnapshotData = Vec<u8>;

    /// A snapshot holds state only, never records: the partition state (log start offset,
    /// offsets, positions, producers) and a coordinator partition's groups, as of its last
    /// log index. For a data partition that index is the entry before the first batch still
    /// holding a record at or after the log start offset ([`PartitionShared::snapshot_target`]),
    /// so the log openraft purges behind it holds only deleted records. The state there is
    /// the previous snapshot's rolled forward through the log up to it (those entries are
    /// still in the log: nothing is purged beyond a snapshot). The applied checkpoint is
    /// written durably with it, so a restart never needs an entry the purge removed.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        // One snapshot build or install at a time: openraft builds in a task of its own,
        // which could otherwise write an older snapshot over one just installed.
        let _io = self.shared.snapshot_io.lock().await;
        let group = self.shared.group;
        let previous = match self.shared.newest_snapshot()? {
            Some(b) => Applied::decode(&b, "partition snapshot")?,
            None => Applied::default(),
        };
        let from = previous.last_applied.map(|l| l.index());
        let applied = self.shared.applied.lock().unwrap().clone();
        // The target comes from this replica's batch index, which must hold every batch the
        // state applied first (a leader applies before its own write of a batch lands).
        let indexed = self
            .shared
            .wait_stored(
                applied.state.next_offset,
                tokio::time::Instant::now() + SNAPSHOT_STORED_WAIT,
            )
            .await;
        let target = if indexed {
            self.shared.snapshot_target(&applied)?
        } else {
            None
        };
        let built_at_start = applied.state.log_start_offset;
        if target <= from {
            return Ok(stored_snapshot(previous, "partition snapshot")?);
        }
        let mut snap = if target == applied.last_applied.map(|l| l.index()) {
            applied.clone()
        } else {
            let to = target.expect("above the previous");
            match roll_forward(&self.store, group, previous.clone(), to) {
                Ok(s) => s,
                Err(e) => {
                    // Whatever it is, an error here would stop the group: keep the last one.
                    tracing::warn!(group, error = %e, "a snapshot was not built");
                    return Ok(stored_snapshot(previous, "partition snapshot")?);
                }
            }
        };
        // Everything the snapshot covers is purged behind it: nothing below its next offset
        // is readable on a replica that installs it.
        let next = snap.state.next_offset;
        snap.state.delete_before(next);
        let data = snap.encode("partition snapshot")?;
        // Queued, not waited for: openraft purges the log behind the snapshot only after this
        // returns, and that purge is written after it (the writer commits in order, and
        // commits nothing once a commit failed), so the log is never purged behind a
        // snapshot that is not durable; a crash before the commit finds the older snapshot
        // and the log it needs. Not waiting takes a commit off every retention move's way to
        // the purge.
        let durable = self
            .store
            .submit(vec![
                Op::Put {
                    group,
                    key: GroupKey::StateMachine as u8,
                    value: applied.encode("partition state")?,
                },
                Op::Put {
                    group,
                    key: GroupKey::Snapshot as u8,
                    value: data.clone(),
                },
            ])
            .await?;
        let newest = Arc::new(data.clone());
        *self.shared.newest_snapshot.lock().unwrap() = Some(newest.clone());
        // Once durable, the stored snapshot is the newest: the copy in memory goes (an idle
        // partition holds none).
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if durable.wait().await.is_ok() {
                let mut n = shared.newest_snapshot.lock().unwrap();
                if n.as_ref().is_some_and(|n| Arc::ptr_eq(n, &newest)) {
                    *n = None;
                }
            }
        });
        {
            let mut mark = self.shared.snapshot.lock().unwrap();
            mark.index = snap.last_applied.map(|l| l.index());
            mark.built_at_start = built_at_start;
            // A snapshot asked for while this one was built was dropped by openraft.
            mark.asked = None;
        }
        // The start moved on while this was built: the log behind it waits for the next
        // snapshot, asked for now rather than at the next move (a step of writes later).
        if self.shared.log_start_offset() > built_at_start
            && let Some(n) = self.shared.retention_notes.get()
        {
            n.note_moved(group);
        }
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: snap.last_applied,
            last_membership: snap.membership.clone(),
        };
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

/// How long a snapshot build waits for this replica's own write of the batches it applied.
const SNAPSHOT_STORED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The snapshot `a` as stored, unchanged (openraft ignores one no newer than its own).
fn stored_snapshot(
    a: Applied,
    what: &'static str,
) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, codec::EncodeError> {
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: a.last_applied,
        last_membership: a.membership.clone(),
    };
    Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
        meta,
        snapshot: a.encode(what)?,
    })
}

/// `state` rolled forward through the log entries after it, up to index `to`.
fn roll_forward(
    store: &Store,
    group: u64,
    mut state: Applied,
    to: u64,
) -> Result<Applied, io::Error> {
    let mut at = state.last_applied.map_or(0, |l| l.index() + 1);
    while at <= to {
        let chunk = store.read_log(group, at..=to, 1024, 16 << 20)?;
        let Some(&(last, _)) = chunk.last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("group {group}: the log lacks index {at}, below the snapshot's {to}"),
            ));
        };
        for (index, bytes) in chunk {
            if index != at {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("group {group}: log hole at {at} (found {index})"),
                ));
            }
            state.apply_entry(group, codec::decode(&bytes, "log entry")?);
            at = index + 1;
        }
        at = at.max(last + 1);
    }
    Ok(state)
}

impl RaftStateMachine<TypeConfig> for PartitionSm {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let a = self.shared.applied.lock().unwrap();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let mut last_index = None;
        let mut bytes = 0u64;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            last_index = Some(log_id.index());
            let (response, hw, start_moved, position) = {
                let mut a = self.shared.applied.lock().unwrap();
                let start = a.state.log_start_offset;
                debug_assert!(
                    a.last_applied
                        .as_ref()
                        .is_none_or(|l| l.index() < log_id.index()),
                    "group {}: applying {log_id} after {:?}: applied indexes must increase",
                    self.shared.group,
                    a.last_applied
                );
                let (response, applied_bytes) = a.apply_entry(self.shared.group, entry);
                bytes += applied_bytes;
                (
                    response,
                    a.state.next_offset,
                    a.state.log_start_offset > start,
                    a.state.next_position,
                )
            };
            if start_moved && let Some(m) = self.shared.retention_notes.get() {
                m.note_moved(self.shared.group);
            }
            self.shared.check_size_trigger(position);
            // Raise the high watermark before answering: an acknowledged write is readable.
            // It only grows: a reader may already have been served up to it.
            let group = self.shared.group;
            self.shared.hw.send_if_modified(|cur| {
                assert!(
                    hw >= *cur,
                    "group {group}: applying {log_id} would lower the high watermark from {cur} to {hw}"
                );
                let raised = hw > *cur;
                *cur = hw;
                raised
            });
            if let Some(r) = responder {
                r.send(response);
            }
        }
        if let Some(index) = last_index
            && self.shared.checkpoint_due(index, bytes)
        {
            let a = self.shared.applied.lock().unwrap().clone();
            self.store
                .write_lazy(vec![Op::Put {
                    group: self.shared.group,
                    key: GroupKey::StateMachine as u8,
                    value: a.encode("partition state")?,
                }])
                .await?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSm {
            shared: self.shared.clone(),
            store: self.store.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        // A replica that missed entries its leader has purged (their records were deleted):
        // it takes the state as of the snapshot, and the entries after it come by replication.
        tracing::info!(
            group = self.shared.group,
            ?meta,
            "installing a partition snapshot"
        );
        let _io = self.shared.snapshot_io.lock().await;
        let mut a = Applied::decode(&snapshot, "partition snapshot")?;
        if self.shared.kind == PartitionKind::Data {
            a.groups = None;
        } else if a.groups.is_none() {
            a.groups = Some(fjord_groups::Groups::default());
        }
        let hw = a.state.next_offset;
        *self.shared.applied.lock().unwrap() = a.clone();
        self.shared.snapshot.lock().unwrap().index = a.last_applied.map(|l| l.index());
        self.shared.invalidate_tail();
        self.shared.hw.send_replace(hw);
        let index = a.last_applied.map_or(0, |l| l.index());
        let through = self.shared.time_rows.lock().unwrap().reset(index);
        self.store
            .write(vec![
                crate::time_rows::marker_op(self.shared.group, through),
                Op::Put {
                    group: self.shared.group,
                    key: GroupKey::StateMachine as u8,
                    value: a.encode("partition state")?,
                },
                Op::Put {
                    group: self.shared.group,
                    key: GroupKey::Snapshot as u8,
                    value: snapshot,
                },
                // The index rows of the entries the snapshot replaces go (openraft purges the
                // entries), and the time index starts from the snapshot's largest timestamp.
                Op::ResetIndexTo {
                    group: self.shared.group,
                    index,
                    next_offset: hw,
                    time: a.state.max_timestamp_ms.map(|timestamp_ms| TimeRow {
                        timestamp_ms,
                        base_offset: hw,
                    }),
                },
            ])
            .await?;
        // Durable: the stored snapshot is the newest.
        *self.shared.newest_snapshot.lock().unwrap() = None;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        match self.shared.newest_snapshot()? {
            None => Ok(None),
            Some(data) => {
                let a = Applied::decode(&data, "partition snapshot")?;
                let meta = SnapshotMetaOf::<TypeConfig> {
                    last_log_id: a.last_applied,
                    last_membership: a.membership,
                };
                Ok(Some(SnapshotOf::<TypeConfig, Vec<u8>> {
                    meta,
                    snapshot: Arc::unwrap_or_clone(data),
                }))
            }
        }
    }
}
