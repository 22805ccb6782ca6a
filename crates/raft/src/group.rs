//! Building the Raft groups of a node, and routing inbound messages to them.
//!
//! Settings differ by role: the metadata group snapshots and purges its log (its state is
//! small), a partition group never snapshots (its log is its data: purging it is retention's
//! job, later), and both use pre-vote so a node that was cut off does not disrupt a healthy
//! leader when it comes back.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fjord_storage::Store;
use openraft::{Config, SnapshotPolicy};

use crate::codec;
use crate::handle::{MetaHandle, PartitionHandle};
use crate::log_store::GroupLogStore;
use crate::meta_sm::MetaSm;
use crate::network::{GroupNetworkFactory, PeerPool, RpcKind};
use crate::partition_sm::{PartitionShared, PartitionSm};
use crate::{NodeId, TypeConfig};

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
}

impl GroupConfig {
    pub fn raft_config(&self, role: GroupRole, group: u64) -> Result<Arc<Config>, String> {
        let cfg = Config {
            cluster_name: format!("fjord-group-{group}"),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            enable_pre_vote: Some(true),
            snapshot_policy: match role {
                GroupRole::Meta => SnapshotPolicy::LogsSinceLast(1000),
                GroupRole::Partition => SnapshotPolicy::Never,
            },
            ..Default::default()
        };
        cfg.validate().map(Arc::new).map_err(|e| e.to_string())
    }
}

/// A group's handle, whatever its role.
#[derive(Clone)]
pub enum AnyGroup {
    Meta(MetaHandle),
    Partition(PartitionHandle),
}

/// Why an inbound message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("group {0} is not hosted on this node")]
    UnknownGroup(u64),
    #[error("{0}")]
    Decode(String),
}

/// The groups running on this node, by id.
#[derive(Default)]
pub struct GroupRegistry {
    // Lookups on every inbound message, inserts when groups start: a short std lock.
    groups: RwLock<HashMap<u64, AnyGroup>>,
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

    /// The ids of the groups, sorted: whatever walks them (a shutdown, a hand-off) does so in
    /// the same order every time, which a deterministic simulation needs.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.groups.read().unwrap().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Decodes an inbound message for `group`, hands it to the group's Raft and encodes the
    /// answer (`Result<response, error text>`).
    pub async fn dispatch(
        &self,
        kind: RpcKind,
        group: u64,
        payload: &[u8],
    ) -> Result<Vec<u8>, DispatchError> {
        let raft = self.get(group).ok_or(DispatchError::UnknownGroup(group))?;
        match raft {
            AnyGroup::Meta(h) => handle(h.raft(), kind, payload).await,
            AnyGroup::Partition(h) => handle(h.raft(), kind, payload).await,
        }
    }
}

async fn handle<SM>(
    raft: &openraft::Raft<TypeConfig, SM>,
    kind: RpcKind,
    payload: &[u8],
) -> Result<Vec<u8>, DispatchError>
where
    SM: openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>,
{
    fn dec<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, DispatchError> {
        codec::decode(p, "raft request").map_err(|e| DispatchError::Decode(e.to_string()))
    }
    fn enc<T: serde::Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Vec<u8> {
        codec::encode(&r.map_err(|e| e.to_string()))
    }
    Ok(match kind {
        RpcKind::Append => enc(raft.append_entries(dec(payload)?).await),
        RpcKind::Vote => enc(raft.vote(dec(payload)?).await),
        RpcKind::PreVote => enc(raft.pre_vote(dec(payload)?).await),
        RpcKind::TransferLeader => enc(raft.handle_transfer_leader(dec(payload)?).await),
        RpcKind::Snapshot => {
            let (vote, meta, data): (
                openraft::alias::VoteOf<TypeConfig>,
                openraft::alias::SnapshotMetaOf<TypeConfig>,
                Vec<u8>,
            ) = dec(payload)?;
            let snapshot = openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> {
                meta,
                snapshot: data,
            };
            enc(raft.install_full_snapshot(vote, snapshot).await)
        }
    })
}

/// Starts the metadata group on this node.
pub async fn start_meta(
    node_id: NodeId,
    cfg: &GroupConfig,
    store: Store,
    pool: Arc<PeerPool>,
) -> Result<MetaHandle, String> {
    let group = fjord_meta::META_GROUP;
    let (sm, view) = MetaSm::open(group, store.clone()).map_err(|e| e.to_string())?;
    let log = GroupLogStore::new(group, store, None);
    let raft = start(node_id, group, GroupRole::Meta, cfg, log, sm, pool).await?;
    Ok(MetaHandle::new(raft, view))
}

/// Starts a partition group on this node.
pub async fn start_partition(
    node_id: NodeId,
    group: u64,
    cfg: &GroupConfig,
    store: Store,
    pool: Arc<PeerPool>,
) -> Result<PartitionHandle, String> {
    let shared = PartitionShared::open(group, &store).map_err(|e| e.to_string())?;
    let sm = PartitionSm::new(shared.clone(), store.clone());
    let log = GroupLogStore::new(group, store, Some(shared.clone()));
    let raft = start(node_id, group, GroupRole::Partition, cfg, log, sm, pool).await?;
    Ok(PartitionHandle::new(raft, shared))
}

async fn start<SM>(
    node_id: NodeId,
    group: u64,
    role: GroupRole,
    cfg: &GroupConfig,
    log: GroupLogStore,
    sm: SM,
    pool: Arc<PeerPool>,
) -> Result<openraft::Raft<TypeConfig, SM>, String>
where
    SM: openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>,
{
    let config = cfg.raft_config(role, group)?;
    openraft::Raft::new(
        node_id,
        config,
        GroupNetworkFactory::new(group, pool),
        log,
        sm,
    )
    .await
    .map_err(|e| e.to_string())
}
