//! Building the Raft groups of a node, and routing inbound messages to them.
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
//!
//! Inbound messages also drive quiescing ([`crate::quiesce`]): a message that shows the group
//! is active (entries, a vote, a snapshot, a leader transfer, another leader) wakes a quiet
//! replica before openraft sees it, and a replica that holds its elections (quiet, or woken
//! and not yet past its delay) refuses pre-votes: its leader was alive at the last node
//! heartbeat, so a campaign is premature, as a Raft follower that heard from its leader would
//! judge (a refused pre-vote is a lost message, which Raft tolerates). A quiet leader that
//! refuses one wakes, so its heartbeats reach the campaigner.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fjord_storage::Store;
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, SnapshotPolicy};

use crate::codec;
use crate::handle::{GroupError, GroupRaft, MetaHandle, PartitionHandle, Starter};
use crate::log_store::GroupLogStore;
use crate::meta_sm::MetaSm;
use crate::network::{GroupNetworkFactory, PeerPool, RpcKind};
use crate::partition_sm::{PartitionShared, PartitionSm};
use crate::quiesce::{Kind, Mode, Quiescence, Transitions, Wake};
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
}

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
            // openraft allocates, for every group, six ring buffers of this many slots to
            // time log entries through their stages (for its optional runtime statistics,
            // which fjord does not enable). The default of 1,024 costs every idle group
            // about 150 KB of heap.
            log_stage_capacity: Some(LOG_STAGE_CAPACITY),
            enable_leader_restore: Some(restore_leader),
            snapshot_policy: match role {
                GroupRole::Meta => SnapshotPolicy::LogsSinceLast(1000),
                GroupRole::Partition => SnapshotPolicy::Never,
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
            AnyGroup::Partition(h) => h.hibernate().await,
        }
    }

    pub async fn campaign_for_lost_leader(&self, lost: crate::NodeId) -> bool {
        match self {
            AnyGroup::Meta(h) => h.campaign_for_lost_leader(lost).await,
            AnyGroup::Partition(h) => h.campaign_for_lost_leader(lost).await,
        }
    }
}

/// Why an inbound message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("group {0} is not hosted on this node")]
    UnknownGroup(u64),
    /// The message does not decode as the request its RPC carries.
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    /// A pre-vote reached a quiet replica (its leader was alive at the last node heartbeat)
    /// or one that woke and holds its elections.
    #[error("group {0} on this node holds its elections (quiet or just woken): pre-vote refused")]
    Quiet(u64),
    /// The group stopped on this node, or its hibernated instance could not start again.
    #[error("group {group} on this node cannot take messages: {source}")]
    Stopped {
        group: u64,
        #[source]
        source: GroupError,
    },
    /// The answer could not be encoded (a bug).
    #[error("group {group}: {source}")]
    Encode {
        group: u64,
        #[source]
        source: codec::EncodeError,
    },
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

    /// Decodes an inbound message for `group`, hands it to the group's Raft and encodes the
    /// answer ([`codec::WireResult`]: the response, or the text of openraft's error).
    pub async fn dispatch(
        &self,
        kind: RpcKind,
        group: u64,
        payload: &[u8],
    ) -> Result<Vec<u8>, DispatchError> {
        let raft = self.get(group).ok_or(DispatchError::UnknownGroup(group))?;
        match raft {
            AnyGroup::Meta(h) => handle(&h, group, kind, payload).await,
            AnyGroup::Partition(h) => handle(&h, group, kind, payload).await,
        }
    }
}

impl GroupRegistry {
    /// Serves a replication stream of `group` (see `RaftTransport.StreamAppend`): decodes
    /// each request of `requests` (the encoded AppendEntries, in order), hands them to the
    /// group's Raft as one pipelined stream, and returns the encoded results, in order. A
    /// request that does not decode ends the stream; so does a fatal error of the group,
    /// after its result, and a result that does not encode, as an error.
    pub fn stream_append<S>(
        &self,
        group: u64,
        requests: S,
    ) -> Result<futures::stream::BoxStream<'static, Result<Vec<u8>, DispatchError>>, DispatchError>
    where
        S: futures::Stream<Item = bytes::Bytes> + Send + Unpin + 'static,
    {
        match self.get(group).ok_or(DispatchError::UnknownGroup(group))? {
            AnyGroup::Meta(h) => Ok(serve_stream(&h, group, requests)),
            AnyGroup::Partition(h) => Ok(serve_stream(&h, group, requests)),
        }
    }
}

fn serve_stream<SM, S>(
    g: &GroupRaft<SM>,
    group: u64,
    requests: S,
) -> futures::stream::BoxStream<'static, Result<Vec<u8>, DispatchError>>
where
    SM: openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>,
    S: futures::Stream<Item = bytes::Bytes> + Send + Unpin + 'static,
{
    use futures::{FutureExt, StreamExt};
    type Req = openraft::raft::AppendEntriesRequest<TypeConfig>;
    type Res = openraft::raft::StreamAppendResult<TypeConfig>;
    let quiet = g.quiescence().clone();
    let g = g.clone();
    let encode = move |out: &codec::WireResult<Res>| {
        codec::encode(out, "stream append result")
            .map_err(|source| DispatchError::Encode { group, source })
    };
    async move {
        let mut requests = requests.peekable();
        // Wake before the instance starts again: the first append may carry entries.
        if let Some(bytes) = std::pin::Pin::new(&mut requests).peek().await
            && let Ok(req) = codec::decode::<Req>(bytes, "raft request")
            && append_wakes(&quiet, &req)
        {
            quiet.wake(Wake::Activity, "append");
        }
        let raft = match g.instance().await {
            Ok(raft) => raft,
            Err(e) => {
                let out: codec::WireResult<Res> = Err(codec::RemoteError::of(e));
                return futures::stream::once(futures::future::ready(encode(&out))).boxed();
            }
        };
        let requests = requests.scan((), move |_, bytes| {
            let req = match codec::decode::<Req>(&bytes, "raft request") {
                Ok(req) => {
                    if append_wakes(&quiet, &req) {
                        quiet.wake(Wake::Activity, "append");
                    }
                    Some(req)
                }
                Err(e) => {
                    tracing::warn!(group, error = %e, "undecodable append in a replication stream: ending it");
                    None
                }
            };
            futures::future::ready(req)
        });
        raft.stream_append(requests)
            .scan(false, move |failed, r| {
                if *failed {
                    return futures::future::ready(None);
                }
                let out: codec::WireResult<Res> = r.map_err(|fatal| {
                    *failed = true;
                    codec::RemoteError::of(fatal)
                });
                let bytes = encode(&out);
                *failed |= bytes.is_err();
                futures::future::ready(Some(bytes))
            })
            .boxed()
    }
    .flatten_stream()
    .boxed()
}

/// Whether an append must wake a quiet replica: a quiet leader wakes on any (another node
/// leads), a quiet follower on entries or on a leader other than the one it is quiet under. A
/// heartbeat of its own leader (a late one, sent before the leader went quiet) does not.
fn append_wakes(
    quiet: &Quiescence,
    req: &openraft::raft::AppendEntriesRequest<TypeConfig>,
) -> bool {
    // The common case, an awake replica, without the lock: this runs for every append.
    if matches!(quiet.kind(), Kind::Awake | Kind::Claiming) {
        return false;
    }
    match &quiet.mode() {
        Mode::Awake | Mode::Claiming { .. } => false,
        Mode::Leading { .. } => true,
        Mode::Following(claim) => {
            !req.entries.is_empty()
                || req.vote.leader_id.term != claim.term
                || req.vote.leader_id.node_id != claim.leader
        }
    }
}

/// On the target of a leadership transfer: waits (bounded) until this replica holds the
/// leader's whole log, as the transfer requires.
///
/// The leader sends the transfer as soon as it stops taking writes; under load its last
/// entries are still on their way, and openraft's target ignores a transfer its log is not
/// up to date for. Nobody would retry it: the old leader refuses writes (sending clients to
/// the target, which is no leader either) and sends no heartbeats until an election timeout
/// passes. Waiting here for the last entries, which are already in flight, turns that stall
/// of an election timeout or more into the few milliseconds they take.
async fn catch_up_for_transfer<SM>(
    raft: &openraft::Raft<TypeConfig, SM>,
    req: &openraft::raft::TransferLeaderRequest<TypeConfig>,
) where
    SM: openraft::storage::RaftStateMachine<TypeConfig>,
{
    let want = req.last_log_id().map(|l| l.index);
    let me = raft.metrics().borrow_watched().id;
    if *req.to_node_id() != me || raft.metrics().borrow_watched().last_log_index >= want {
        return;
    }
    // The leader's RPC gives up after its minimum election timeout: answer before it does.
    let wait = Duration::from_millis(raft.config().election_timeout_min * 3 / 4);
    let from = *req.from_leader();
    let caught_up = raft
        .wait(Some(wait))
        .metrics(
            |m| m.last_log_index >= want || m.vote != from,
            "catch up for a leader transfer",
        )
        .await;
    if caught_up.is_err() {
        tracing::debug!(?want, "transfer target still behind the leader's log");
    }
}

async fn handle<SM>(
    g: &GroupRaft<SM>,
    group: u64,
    kind: RpcKind,
    payload: &[u8],
) -> Result<Vec<u8>, DispatchError>
where
    SM: openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>,
{
    /// An answer as the wire carries it (openraft's error as its text).
    fn wire<T: serde::Serialize, E: std::fmt::Display>(
        r: Result<T, E>,
    ) -> Result<Vec<u8>, codec::EncodeError> {
        codec::encode(&r.map_err(codec::RemoteError::of), "raft response")
    }
    fn dec<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, DispatchError> {
        Ok(codec::decode(p, "raft request")?)
    }
    let enc = |bytes: Result<Vec<u8>, codec::EncodeError>| {
        bytes.map_err(|source| DispatchError::Encode { group, source })
    };
    let quiet = g.quiescence();
    let instance = || async {
        g.instance()
            .await
            .map_err(|source: GroupError| DispatchError::Stopped { group, source })
    };
    match kind {
        RpcKind::Append => {
            let req: openraft::raft::AppendEntriesRequest<TypeConfig> = dec(payload)?;
            if append_wakes(quiet, &req) {
                quiet.wake(Wake::Activity, "append");
            }
            enc(wire(instance().await?.append_entries(req).await))
        }
        RpcKind::PreVote => {
            if quiet.refuses_pre_vote() {
                quiet.wake_leader("pre-vote");
                return Err(DispatchError::Quiet(group));
            }
            enc(wire(instance().await?.pre_vote(dec(payload)?).await))
        }
        RpcKind::Vote => {
            quiet.wake(Wake::Activity, "vote");
            enc(wire(instance().await?.vote(dec(payload)?).await))
        }
        RpcKind::TransferLeader => {
            quiet.wake(Wake::Activity, "leader transfer");
            let req: openraft::raft::TransferLeaderRequest<TypeConfig> = dec(payload)?;
            let raft = instance().await?;
            catch_up_for_transfer(&raft, &req).await;
            enc(wire(raft.handle_transfer_leader(req).await))
        }
        RpcKind::Snapshot => {
            quiet.wake(Wake::Activity, "snapshot");
            let (vote, meta, data): (
                openraft::alias::VoteOf<TypeConfig>,
                openraft::alias::SnapshotMetaOf<TypeConfig>,
                Vec<u8>,
            ) = dec(payload)?;
            let snapshot = openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> {
                meta,
                snapshot: data,
            };
            enc(wire(
                instance()
                    .await?
                    .install_full_snapshot(vote, snapshot)
                    .await,
            ))
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
    cfg: &GroupConfig,
    store: Store,
    pool: Arc<PeerPool>,
    transitions: Transitions,
) -> Result<PartitionHandle, StartError> {
    let shared = PartitionShared::open(group, &store)?;
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
    openraft::Raft::new(
        node_id,
        config,
        GroupNetworkFactory::new(group, pool),
        log,
        sm,
    )
    .await
    .map_err(StartError::from)
}
