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

use fjord_storage::partition::{Outcome, PartitionState};
use fjord_storage::store::GroupKey;
use fjord_storage::{Op, Store};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::codec::{self, Entry};
use crate::{Request, Response, TypeConfig};

/// Applied entries between two checkpoints of the state machine, at most. A restart
/// re-applies at most this many entries (plus what was committed but not yet applied).
pub const CHECKPOINT_EVERY_ENTRIES: u64 = 1024;
/// Record bytes applied between two checkpoints, at most (about).
pub const CHECKPOINT_EVERY_BYTES: u64 = 32 << 20;
/// AP produce requests waiting for their batch to reach the leader's disk, per partition.
pub const MAX_AP_WAITERS: usize = 4096;

/// The applied state of a partition, as checkpointed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogIdOf<TypeConfig>>,
    pub membership: StoredMembershipOf<TypeConfig>,
    pub state: PartitionState,
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

/// The first byte of a checkpoint (and snapshot) of the second version. A checkpoint of the
/// first version starts with postcard's `Option` tag of `last_applied`, 0 or 1.
const APPLIED_V2: u8 = 0xF2;
/// The first byte of a checkpoint of this version: [`APPLIED_V2`]'s encoding, then the
/// groups' records (postcard of `Option<Vec<(key, value)>>`, a tombstone never among them).
const APPLIED_V3: u8 = 0xF3;

impl Applied {
    /// The checkpoint (and snapshot) encoding: a version byte, then postcard.
    pub fn encode(&self, what: &'static str) -> Result<Vec<u8>, codec::EncodeError> {
        let mut out = vec![APPLIED_V3];
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
        match bytes.split_first() {
            Some((&APPLIED_V3, rest)) => {
                let (mut a, rest): (Applied, _) = postcard::take_from_bytes(rest)
                    .map_err(|source| codec::DecodeError { what, source })?;
                let groups: Option<Vec<(Vec<u8>, Vec<u8>)>> = codec::decode(rest, what)?;
                a.groups = match groups {
                    None => None,
                    Some(records) => {
                        let mut g = fjord_groups::Groups::default();
                        for (k, v) in records {
                            let r =
                                fjord_groups::GroupRecord::decode(&k, Some(&v)).map_err(|_| {
                                    codec::DecodeError {
                                        what,
                                        source: postcard::Error::DeserializeBadEncoding,
                                    }
                                })?;
                            g.apply(&r);
                        }
                        Some(g)
                    }
                };
                Ok(a)
            }
            Some((&APPLIED_V2, rest)) => codec::decode(rest, what),
            _ => {
                let v1: AppliedV1 = codec::decode(bytes, what)?;
                Ok(Applied {
                    last_applied: v1.last_applied,
                    membership: v1.membership,
                    state: v1.state.into(),
                    groups: None,
                })
            }
        }
    }
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
    /// Offset index entries `(base_offset, log index, record_count)` of the appended batches.
    pub index: Vec<(u64, u64, u32)>,
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
    /// Loads the last checkpoint of `group`'s applied state.
    pub fn open(group: u64, store: &Store, kind: PartitionKind) -> Result<Arc<Self>, io::Error> {
        let mut applied: Applied = match store.get_value(group, GroupKey::StateMachine)? {
            Some(b) => Applied::decode(&b, "partition checkpoint")?,
            None => Applied::default(),
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
        }))
    }

    pub fn group(&self) -> u64 {
        self.group
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

    /// Notes batches (`(base_offset, log index, record_count)`) handed to the writer.
    pub fn pending_add(&self, index: &[(u64, u64, u32)]) {
        if index.is_empty() {
            return;
        }
        let mut p = self.pending.lock().unwrap();
        for (base, _, _) in index {
            *p.entry(*base).or_default() += 1;
        }
        let lowest = p.keys().next().copied();
        self.lowest_pending
            .send_if_modified(|l| std::mem::replace(l, lowest) != lowest);
    }

    /// Notes batches whose write ended (committed to redb, or failed).
    pub fn pending_done(&self, index: &[(u64, u64, u32)]) {
        if index.is_empty() {
            return;
        }
        let mut p = self.pending.lock().unwrap();
        for (base, _, _) in index {
            if let Some(n) = p.get_mut(base) {
                *n -= 1;
                if *n == 0 {
                    p.remove(base);
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
            *tail_guard = Some(self.rebuild_tail(store, first)?);
        }
        let tail = tail_guard.as_mut().expect("tail was just set");
        let mut out = Appended::default();
        for e in entries {
            if let EntryPayload::Normal(Request::Batch(b)) = &e.payload {
                // Every replica checks the producer's CRC before the batch reaches its disk:
                // a batch corrupted on the way is an error, never stored data.
                fjord_proto::batch::verify(&b.records, b.crc32c).map_err(|err| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("group {} entry {}: {err}", self.group, e.index()),
                    )
                })?;
                let outcome = tail.state.apply(&b.header());
                if let Outcome::Appended { base_offset } = outcome
                    && b.record_count > 0
                {
                    out.index.push((base_offset, e.index(), b.record_count));
                }
                out.outcomes.push((b.token, outcome));
            }
            tail.through = Some(e.index());
        }
        Ok(out)
    }

    /// The rules' state just before log index `next`: the applied state, plus every entry
    /// of the log between it and `next`.
    fn rebuild_tail(&self, store: &Store, next: u64) -> Result<Tail, io::Error> {
        let (applied_index, mut state) = {
            let a = self.applied.lock().unwrap();
            (a.last_applied.as_ref().map(|l| l.index()), a.state.clone())
        };
        let start = applied_index.map_or(0, |i| i + 1);
        if start > next {
            // The state machine is ahead of the log: only after a snapshot was installed
            // (fjord's partitions never purge through snapshots). Predict from it as is.
            tracing::warn!(
                group = self.group,
                next,
                start,
                "appending below the applied index"
            );
            return Ok(Tail {
                through: next.checked_sub(1),
                state,
            });
        }
        let mut at = start;
        while at < next {
            let chunk = store.read_log(self.group, at..next, 4096, 64 << 20)?;
            if chunk.is_empty() {
                break;
            }
            for (index, bytes) in chunk {
                let e: Entry = codec::decode(&bytes, "log entry")?;
                if let EntryPayload::Normal(Request::Batch(b)) = &e.payload {
                    state.apply(&b.header());
                }
                at = index + 1;
            }
        }
        Ok(Tail {
            through: next.checked_sub(1),
            state,
        })
    }

    /// The rules' state after log index `last` (the leader's last entry): where the AP
    /// batches a leader holds without a majority take their outcomes from ([`crate::side`]).
    pub fn predicted_after(&self, last: Option<u64>) -> Result<PartitionState, io::Error> {
        let mut tail = self.tail.lock().unwrap();
        if let Some(t) = &*tail
            && t.through == last
        {
            return Ok(t.state.clone());
        }
        let t = self.rebuild_tail(&self.store, last.map_or(0, |i| i + 1))?;
        let state = t.state.clone();
        *tail = Some(t);
        Ok(state)
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

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let a = self.shared.applied.lock().unwrap().clone();
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: a.last_applied,
            last_membership: a.membership.clone(),
        };
        let data = a.encode("partition snapshot")?;
        self.store
            .write(vec![Op::Put {
                group: self.shared.group,
                key: GroupKey::Snapshot as u8,
                value: data.clone(),
            }])
            .await?;
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
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
            let (response, hw) = {
                let mut a = self.shared.applied.lock().unwrap();
                debug_assert!(
                    a.last_applied
                        .as_ref()
                        .is_none_or(|l| l.index() < log_id.index()),
                    "group {}: applying {log_id} after {:?}: applied indexes must increase",
                    self.shared.group,
                    a.last_applied
                );
                a.last_applied = Some(log_id);
                let response = match entry.payload {
                    EntryPayload::Normal(Request::Batch(b)) => {
                        bytes += b.records.len() as u64;
                        let outcome = a.state.apply(&b.header());
                        if let (Some(groups), Outcome::Appended { .. }) = (&mut a.groups, outcome) {
                            replay_groups(self.shared.group, log_id.index(), groups, &b.records);
                        }
                        Response::Batch(outcome)
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembershipOf::<TypeConfig>::new(Some(log_id), m);
                        Response::None
                    }
                    _ => Response::None,
                };
                (response, a.state.next_offset)
            };
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
        // fjord never purges a partition's log through snapshots (its log is its data), so a
        // snapshot only arrives if a replica was rebuilt from one: take its state as is.
        tracing::warn!(
            group = self.shared.group,
            ?meta,
            "installing a partition snapshot"
        );
        let a = Applied::decode(&snapshot, "partition snapshot")?;
        let hw = a.state.next_offset;
        *self.shared.applied.lock().unwrap() = a.clone();
        self.shared.invalidate_tail();
        self.shared.hw.send_replace(hw);
        self.store
            .write(vec![
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
            ])
            .await?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        match self
            .store
            .get_value(self.shared.group, GroupKey::Snapshot)?
        {
            None => Ok(None),
            Some(data) => {
                let a = Applied::decode(&data, "partition snapshot")?;
                let meta = SnapshotMetaOf::<TypeConfig> {
                    last_log_id: a.last_applied,
                    last_membership: a.membership,
                };
                Ok(Some(SnapshotOf::<TypeConfig, Vec<u8>> {
                    meta,
                    snapshot: data,
                }))
            }
        }
    }
}
