//! Building the Raft groups of a node, and the registry of those running (inbound messages
//! reach them through [`crate::peer`]).
//!
//! Settings differ by role: the metadata group snapshots and purges its log (its state is
//! small), a partition group never snapshots (its log is its data: purging it is retention's
//! job, later), and both use pre-vote so a node that was cut off does not disrupt a healthy
//! leader when it comes back.
//!
//! **No leader restore on a cold start.** openraft's `enable_leader_restore` (on by default)
//! brings a node whose stored vote is its own committed vote back as leader of the same term,
//! with no election. That is unsafe here: a leader applies, and the client is acknowledged,
//! once a majority *other than itself* has flushed an entry, so a leader that crashed before
//! its own fsync comes back without an acknowledged entry, and as leader of the same term it
//! would give the next proposal that entry's log id again: the followers keep theirs (the ids
//! match), and one offset holds different records on different replicas. Its committed index
//! is also written lazily, so a restored leader could answer a read from a stale one. A cold
//! start therefore always comes back as follower and a new leader is elected in a new term.
//! Leader restore stays on only for a partition replica's instance started again after
//! hibernation inside the same process: its log store's in-memory tail and applied state
//! survived, so nothing it appended or applied is missing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use fjord_storage::Store;
use openraft::{Config, SnapshotPolicy};

use crate::handle::{GroupRaft, MetaHandle, PartitionHandle, Starter};
use crate::log_store::GroupLogStore;
use crate::meta_sm::MetaSm;
use crate::partition_sm::{PartitionShared, PartitionSm};
use crate::peer::{GroupNetworkFactory, PeerPool};
use crate::quiesce::{Quiescence, Transitions};
use crate::{NodeId, TypeConfig};
use tokio::time::Instant;

pub type MetaRaft = openraft::Raft<TypeConfig, MetaSm>;
pub type PartitionRaft = openraft::Raft<TypeConfig, PartitionSm>;

/// Entries per AppendEntries message, at most.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupRole {
    Meta,
    Partition,
}

/// Raft timing shared by all groups of a node.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// A partition group whose leader appended nothing for this long goes quiet; 0: never.
    pub quiesce_after_ms: u64,
    /// Where the node's partitions note a moved log start or a passed size trigger, for the
    /// node's retention task (shared by all of them).
    pub retention_notes: Arc<crate::RetentionNotes>,
}

/// How long a follower may take to receive and durably install a snapshot, beyond its bytes'
/// transfer time (see `PeerClient::snapshot`). openraft's default (200 ms) is shorter than
/// one fsync of a slow disk: a follower behind the purge (it can catch up only from a
/// snapshot) would never finish an install, and its group would stay a replica short.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

/// Slots of openraft's per-stage latency ring buffers (see [`GroupConfig::raft_config`]).
const LOG_STAGE_CAPACITY: u64 = 8;

impl GroupConfig {
    /// How long a follower woken by activity waits before it may campaign: the longest
    /// election timeout, so the leader's messages have time to renew its lease.
    pub fn wake_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_timeout_ms * 2)
    }

    /// openraft's settings for a group. `restore_leader`: whether a replica whose stored vote
    /// is its own committed vote comes back as leader of that term (see the module doc: only
    /// for an instance started again in the process that ran the last one).
    pub fn raft_config(
        &self,
        role: GroupRole,
        group: u64,
        restore_leader: bool,
    ) -> Result<Arc<Config>, openraft::ConfigError> {
        let cfg = Config {
            cluster_name: format!("fjord-group-{group}"),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            enable_pre_vote: Some(true),
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            // openraft allocates, for every group, six ring buffers of this many slots to
            // time log entries through their stages (for its optional runtime statistics,
            // which fjord does not enable). The default of 1,024 costs every idle group
            // about 150 KB of heap.
            log_stage_capacity: Some(LOG_STAGE_CAPACITY),
            enable_leader_restore: Some(restore_leader),
            // A partition snapshots when its log start offset moved (retention, DeleteRecords)
            // or, for a coordinator partition, every so many entries: `PartitionHandle::
            // purge_if_due` asks for it. Its snapshot ends before the first record kept, and
            // nothing it covers is worth keeping (openraft keeps 1,000 entries by default).
            snapshot_policy: match role {
                GroupRole::Meta => SnapshotPolicy::LogsSinceLast(1000),
                GroupRole::Partition => SnapshotPolicy::Never,
            },
            max_in_snapshot_log_to_keep: match role {
                GroupRole::Meta => 1000,
                GroupRole::Partition => 0,
            },
            ..Default::default()
        };
        cfg.validate().map(Arc::new)
    }
}

/// A group's handle, whatever its role.
#[derive(Clone)]
pub enum AnyGroup {
    Meta(MetaHandle),
    Partition(PartitionHandle),
}

/// What quiescing and failover need of a group, whatever its role.
impl AnyGroup {
    pub fn quiescence(&self) -> &Arc<Quiescence> {
        match self {
            AnyGroup::Meta(h) => h.quiescence(),
            AnyGroup::Partition(h) => h.quiescence(),
        }
    }

    pub fn view(&self) -> crate::quiesce::GroupView {
        match self {
            AnyGroup::Meta(h) => crate::handle::GroupRaft::view(h),
            AnyGroup::Partition(h) => h.view(),
        }
    }

    pub fn leadership(&self) -> crate::handle::Leadership {
        match self {
            AnyGroup::Meta(h) => h.leadership(),
            AnyGroup::Partition(h) => h.leadership(),
        }
    }

    /// Since when the group's instance runs, if it does (it is not hibernated).
    pub fn running_since(&self) -> Option<Instant> {
        match self {
            AnyGroup::Meta(h) => h.running_since(),
            AnyGroup::Partition(h) => h.running_since(),
        }
    }

    /// Whether the group's Raft instance runs (it is not hibernated).
    pub fn is_running(&self) -> bool {
        match self {
            AnyGroup::Meta(h) => h.is_running(),
            AnyGroup::Partition(h) => h.is_running(),
        }
    }

    pub async fn hibernate(&self) -> bool {
        match self {
            AnyGroup::Meta(_) => false,
            AnyGroup::Partition(h) => {
                let hibernated = h.hibernate().await;
                if hibernated {
                    h.shared().store_time_rows().await;
                }
                hibernated
            }
        }
    }

    pub async fn campaign_for_lost_leader(&self, lost: crate::NodeId) -> bool {
        match self {
            AnyGroup::Meta(h) => h.campaign_for_lost_leader(lost).await,
            AnyGroup::Partition(h) => h.campaign_for_lost_leader(lost).await,
        }
    }
}

/// Why a group's Raft instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid Raft settings: {0}")]
    Config(#[from] openraft::ConfigError),
    /// The group's stored state could not be read.
    #[error("cannot read the group's stored state: {0}")]
    Storage(#[from] std::io::Error),
    #[error("the metadata group cannot start twice")]
    MetaStartedTwice,
    #[error("{0}")]
    Raft(#[from] openraft::errors::Fatal<TypeConfig>),
}

/// The groups running on this node, by id.
#[derive(Default)]
pub struct GroupRegistry {
    // Lookups on every inbound message, inserts when groups start: a short std lock.
    // Ordered: whatever walks the groups (a shutdown, a hand-off, the liveness scan) does so in
    // the same order every time, which a deterministic simulation needs.
    groups: RwLock<BTreeMap<u64, AnyGroup>>,
}

impl GroupRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn get(&self, group: u64) -> Option<AnyGroup> {
        self.groups.read().unwrap().get(&group).cloned()
    }

    pub fn partition(&self, group: u64) -> Option<PartitionHandle> {
        match self.get(group) {
            Some(AnyGroup::Partition(h)) => Some(h),
            _ => None,
        }
    }

    pub fn insert(&self, group: u64, raft: AnyGroup) {
        self.groups.write().unwrap().insert(group, raft);
    }

    pub fn remove(&self, group: u64) -> Option<AnyGroup> {
        self.groups.write().unwrap().remove(&group)
    }

    /// The ids of the groups, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.groups.read().unwrap().keys().copied().collect()
    }

    /// Calls `f` on every partition group. Runs under the registry's read lock: `f` must be
    /// short and must not block.
    pub fn for_each_partition(&self, mut f: impl FnMut(u64, &PartitionHandle)) {
        for (id, g) in self.groups.read().unwrap().iter() {
            if let AnyGroup::Partition(h) = g {
                f(*id, h);
            }
        }
    }

    /// Calls `f` on every group, the metadata group included. Runs under the registry's read
    /// lock: `f` must be short and must not block.
    pub fn for_each_group(&self, mut f: impl FnMut(u64, &AnyGroup)) {
        for (id, g) in self.groups.read().unwrap().iter() {
            f(*id, g);
        }
    }
}

/// Starts the metadata group on this node. It never hibernates: it is one group, and the
/// controller drives it.
pub async fn start_meta(
    node_id: NodeId,
    cfg: &GroupConfig,
    store: Store,
    pool: Arc<PeerPool>,
    transitions: Transitions,
) -> Result<MetaHandle, StartError> {
    let group = fjord_meta::META_GROUP;
    let (sm, view) = MetaSm::open(group, store.clone())?;
    let log = GroupLogStore::new(group, store, None);
    // Never restored as leader: the metadata group starts once per process.
    let config = cfg.raft_config(GroupRole::Meta, group, false)?;
    // The state machine holds the applied metadata: the one made here is the only one.
    let sm = Mutex::new(Some(sm));
    let starter: Starter<MetaSm> = Box::new(move || {
        let sm = sm.lock().unwrap().take();
        let (config, log, pool) = (config.clone(), log.clone(), pool.clone());
        Box::pin(async move {
            let sm = sm.ok_or(StartError::MetaStartedTwice)?;
            start(node_id, group, config, log, sm, pool).await
        })
    });
    let core = GroupRaft::start(group, starter, cfg.wake_grace(), transitions).await?;
    Ok(MetaHandle::new(core, view))
}

/// Starts a partition group on this node.
pub async fn start_partition(
    node_id: NodeId,
    group: u64,
    kind: crate::partition_sm::PartitionKind,
    cfg: &GroupConfig,
    store: Store,
    pool: Arc<PeerPool>,
    transitions: Transitions,
) -> Result<PartitionHandle, StartError> {
    let shared = PartitionShared::open(group, &store, kind)?;
    shared.note_retention_in(cfg.retention_notes.clone());
    shared.rebuild_time_index().await?;
    shared.recover_time_rows().await?;
    // The log store's in-memory tail is shared by its clones: an instance started again
    // after hibernation reads what the last one appended, committed to redb or not.
    let log = GroupLogStore::new(group, store.clone(), Some(shared.clone()));
    // The first instance in this process starts cold (its log may lack what it appended
    // before a crash): no leader restore. Later ones start after hibernation over the same
    // in-memory tail and applied state: a leader comes back as leader, without an election.
    let cold = cfg.raft_config(GroupRole::Partition, group, false)?;
    let warm = cfg.raft_config(GroupRole::Partition, group, true)?;
    let started_once = std::sync::atomic::AtomicBool::new(false);
    let sm_shared = shared.clone();
    let starter: Starter<PartitionSm> = Box::new(move || {
        let sm = PartitionSm::new(sm_shared.clone(), store.clone());
        let again = started_once.swap(true, std::sync::atomic::Ordering::AcqRel);
        Box::pin(start(
            node_id,
            group,
            if again { warm.clone() } else { cold.clone() },
            log.clone(),
            sm,
            pool.clone(),
        ))
    });
    let core = GroupRaft::start(group, starter, cfg.wake_grace(), transitions).await?;
    Ok(PartitionHandle::new(core, shared))
}

async fn start<SM>(
    node_id: NodeId,
    group: u64,
    config: Arc<Config>,
    log: GroupLogStore,
    sm: SM,
    pool: Arc<PeerPool>,
) -> Result<openraft::Raft<TypeConfig, SM>, StartError>
where
    SM: openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>,
{
    let purged = log.purge_mark();
    openraft::Raft::new(
        node_id,
        config,
        GroupNetworkFactory::new(group, pool, purged),
        log,
        sm,
    )
    .await
    .map_err(StartError::from)
}
