//! A node: its storage, its Raft groups, and the background work that keeps them matching
//! the metadata.
//!
//! - Before any of this, the node's data directory passed the boot check ([`crate::boot`]).
//! - The metadata group runs on the initial voters (`peers`). Every voter initializes it
//!   with the same membership when they form the cluster together (openraft allows this; one
//!   leader wins), and never later: a node that joins a cluster its peers already hold gets
//!   the group from them.
//! - The **reconciler** watches the applied metadata and starts the partition groups this
//!   node holds a replica of (a new group's preferred leader initializes it and is elected
//!   first; the other replicas initialize it only if no leader reached them within a few
//!   election timeouts), and stops and deletes the groups of deleted topics
//!   ([`crate::reconcile::plan`] decides; this module performs).
//! - A **leader reporter** per partition group tells the metadata group when this node
//!   becomes its leader (with the term as leader epoch).
//! - The **controller** runs on the metadata leader and moves partition leaders so that no
//!   node leads more than its share ([`fjord_meta::plan_leader_moves`] decides; this module
//!   only sends the moves).
//! - **Liveness** ([`fjord_raft::Liveness`]): one heartbeat per peer node, which lets idle
//!   partition groups go quiet (no Raft ticks or heartbeats) and wakes them when needed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use fjord_meta::{GroupId, MetaCommand, MetaResponse, NodeId};
use fjord_raft::group::{self, AnyGroup};
use fjord_raft::meta_sm::MetaView;
use fjord_raft::partition_sm::PartitionKind;
use fjord_raft::peer::{PeerError, PeerPool};
use fjord_raft::{
    GroupConfig, GroupError, GroupRegistry, Liveness, LivenessConfig, MetaHandle, PartitionHandle,
};
use fjord_storage::Store;
use tokio_util::sync::CancellationToken;

use crate::ServeConfig;
use crate::error::{ApiError, NoLeaderCause, Subject};
use crate::reconcile::{self, Action, Init};

/// How often the controller looks at leader balance.
pub const CONTROLLER_INTERVAL: Duration = Duration::from_secs(3);
/// Partition groups a node starts before it waits for them to elect leaders.
pub const START_BATCH: usize = 50;
/// How long a node waits, at most, for a batch of new groups to elect leaders.
pub const START_BATCH_WAIT: Duration = Duration::from_secs(5);
/// Leader moves the controller starts per round, at most.
pub const MAX_LEADER_MOVES_PER_ROUND: usize = 16;
/// A follower whose last heartbeat ack is older than this is taken as down by the controller.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(3);
/// How long a stopping node spends handing its leaderships over to other replicas.
pub const HANDOFF_BUDGET: Duration = Duration::from_secs(5);
/// Attempts of a metadata write (each waits for a leader or follows a forward).
const META_WRITE_ATTEMPTS: u32 = 50;
/// How long the metadata leader may take to answer a forwarded write.
const META_FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a partition leader may take to answer the controller's leader move.
const LEADER_MOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a node could not start its groups.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the metadata group: {0}")]
    Meta(#[from] group::StartError),
    #[error("cannot read the producer id block: {0}")]
    ProducerIds(#[source] fjord_storage::StorageError),
}

/// The partition groups' and the metadata group's Raft settings, from the node's.
fn group_configs(config: &ServeConfig) -> (GroupConfig, GroupConfig) {
    let retention_notes = Arc::new(fjord_raft::RetentionNotes::default());
    let partitions = GroupConfig {
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        election_timeout_ms: config.election_timeout_ms,
        quiesce_after_ms: config.quiesce_after_ms,
        retention_notes: retention_notes.clone(),
    };
    let meta = GroupConfig {
        heartbeat_interval_ms: config.meta_heartbeat_interval_ms,
        election_timeout_ms: config.meta_election_timeout_ms,
        quiesce_after_ms: config.quiesce_after_ms,
        retention_notes,
    };
    (partitions, meta)
}

/// The node-level failure detector's and quiescing's settings, from the node's.
fn liveness_config(config: &ServeConfig) -> LivenessConfig {
    LivenessConfig {
        // Three heartbeats per detector timeout, each way, and an answer to each: a peer is
        // heard from six times per timeout. Idle, these heartbeats and the metadata group's
        // are most of what a node does: they follow the metadata group's (slower) timing,
        // not the partitions'.
        interval: Duration::from_millis(
            config
                .meta_heartbeat_interval_ms
                .max(config.meta_election_timeout_ms / 3),
        ),
        suspect_after: Duration::from_millis(config.meta_election_timeout_ms),
        quiesce_after: (config.quiesce_after_ms > 0)
            .then(|| Duration::from_millis(config.quiesce_after_ms)),
        election_step: Duration::from_millis(config.election_timeout_ms / 2),
        campaign_step: Duration::from_millis((config.heartbeat_interval_ms / 2).max(10)),
        hibernate_after: (config.quiesce_after_ms > 0 && config.hibernate_after_ms > 0)
            .then(|| Duration::from_millis(config.hibernate_after_ms)),
    }
}

/// Reads the wall clock; injected so a simulation can control it.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Everything a running node owns. Other modules see it through the methods below, which
/// name what they need of it.
pub struct Node {
    id: NodeId,
    address: String,
    /// The configured peers (`--peers`), this node included.
    peers: BTreeMap<NodeId, String>,
    store: Store,
    pool: Arc<PeerPool>,
    registry: Arc<GroupRegistry>,
    liveness: Arc<Liveness>,
    meta: MetaHandle,
    group_config: GroupConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    /// The data directory's identity, registered in the metadata.
    identity: Arc<crate::boot::IdentityService>,
    /// The producer ids this node hands out (see [`crate::producer_ids`]).
    producer_ids: crate::producer_ids::ProducerIds,
    /// While this node rebuilds (`--rebuild`): the groups it is still a learner of, of those
    /// it holds (see [`crate::rebuild`]).
    rebuilding: std::sync::Mutex<Option<(u32, u32)>>,
    /// While this node rebuilds, until it is a voter of the metadata group again (its
    /// metadata is complete): it answers clients as unavailable.
    meta_behind: std::sync::atomic::AtomicBool,
    /// Whether the applied metadata has shown this start's own registration (see
    /// [`crate::meta_gate`]): until then it may lack topics, and clients are refused.
    meta_current: std::sync::atomic::AtomicBool,
    next_token: AtomicU64,
    round_robin: AtomicU32,
    /// The consumer group coordinators of the groups' partitions this node leads.
    coordinator: crate::coordinator::Coordinator,
    group_partitions: u32,
    group_defaults: fjord_groups::Defaults,
    group_offset_retention_ms: i64,
    retention_check_interval_ms: u64,
    /// Whether this node's disk has room for produces (see [`crate::disk`]).
    disk: Arc<crate::disk::DiskGate>,
    /// The log settings of topics that do not set their own (`--default-*`, validated).
    log_defaults: fjord_meta::LogDefaults,
    /// The metrics the request paths record (see [`crate::metrics`]).
    metrics: crate::metrics::Metrics,
}

impl Node {
    pub async fn start(
        config: &ServeConfig,
        store: Store,
        pool: Arc<PeerPool>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        identity: Arc<crate::boot::IdentityService>,
    ) -> Result<Arc<Node>, StartError> {
        let (group_config, meta_config) = group_configs(config);
        let registry = GroupRegistry::new();
        let liveness = Liveness::new(
            config.id,
            liveness_config(config),
            registry.clone(),
            pool.clone(),
            fjord_raft::quiesce::Transitions::default(),
        );
        let meta = group::start_meta(
            config.id,
            &meta_config,
            store.clone(),
            pool.clone(),
            liveness.transitions().clone(),
        )
        .await?;
        let producer_ids =
            crate::producer_ids::ProducerIds::load(&store).map_err(StartError::ProducerIds)?;
        registry.insert(fjord_meta::META_GROUP, AnyGroup::Meta(meta.clone()));
        let meta_learner = meta
            .members_if_running()
            .is_some_and(|(_, learners)| learners.contains(&config.id));
        Ok(Arc::new(Node {
            id: config.id,
            address: config.advertised_address(),
            peers: config.peers.0.clone(),
            store,
            pool,
            registry,
            liveness,
            meta,
            group_config,
            clock,
            shutdown,
            identity,
            producer_ids,
            rebuilding: std::sync::Mutex::new(None),
            // Also when started normally as a learner of the metadata group (a restart in the
            // middle of a rebuild): its metadata may still lack topics until it catches up.
            meta_behind: std::sync::atomic::AtomicBool::new(config.rebuild || meta_learner),
            meta_current: std::sync::atomic::AtomicBool::new(false),
            next_token: AtomicU64::new(fjord_raft::runtime::random_u64() | 1),
            round_robin: AtomicU32::new(0),
            coordinator: crate::coordinator::Coordinator::default(),
            group_partitions: config.group_partitions,
            group_defaults: fjord_groups::Defaults {
                session_timeout_ms: config.group_session_timeout_ms,
                heartbeat_interval_ms: config.group_heartbeat_interval_ms,
            },
            // Validated: at most MAX_OFFSET_RETENTION_MS.
            retention_check_interval_ms: config.retention_check_interval_ms,
            group_offset_retention_ms: i64::try_from(config.group_offset_retention_ms)
                .unwrap_or(fjord_groups::limits::MAX_OFFSET_RETENTION_MS),
            disk: Arc::new(crate::disk::DiskGate::new(
                config.id,
                &config.data_dir,
                config.min_free_disk_bytes,
            )),
            log_defaults: config.log_defaults(),
            metrics: crate::metrics::Metrics::new(),
        }))
    }

    /// Initializes the metadata group when this node forms a new cluster (`form`, from the
    /// boot check: every initial voter was new), registers this node, and starts the
    /// background tasks.
    pub async fn run_background(self: &Arc<Self>, form: bool) {
        if form {
            match self.meta.initialize(&self.peers).await {
                Ok(true) => tracing::info!(peers = ?self.peers, "initialized the metadata group"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot initialize the metadata group"),
            }
        }
        let me = self.clone();
        tokio::spawn(async move { me.register_self().await });
        let me = self.clone();
        tokio::spawn(async move { me.await_meta_current().await });
        // A block of producer ids before the first InitProducer, and before any partition.
        self.producer_ids.refill_in_background(self);
        let me = self.clone();
        tokio::spawn(async move { me.reconcile_loop().await });
        let me = self.clone();
        tokio::spawn(async move { me.controller_loop().await });
        let me = self.clone();
        let every = std::time::Duration::from_millis(self.retention_check_interval_ms);
        tokio::spawn(crate::retention::run(me, every, crate::retention::policy));
        let me = self.clone();
        tokio::spawn(async move {
            // Every round: the heartbeats' targets, and the address book every group's
            // messages go by (the configured peer addresses, over those a group's membership
            // recorded when it was formed).
            let peers = {
                let me = me.clone();
                move || {
                    let peers = me.peer_addresses();
                    me.pool.set_addresses(&peers);
                    peers
                }
            };
            tokio::select! {
                _ = me.liveness.clone().run(peers) => {}
                _ = me.shutdown.cancelled() => {}
            }
        });
    }

    /// The other nodes and their peer addresses (`--peers`; the metadata holds the client
    /// addresses only).
    fn peer_addresses(&self) -> BTreeMap<NodeId, String> {
        let mut out = self.peers.clone();
        out.remove(&self.id);
        out
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The client address this node registers (clients reach it there; peers reach it at
    /// its `--peers` entry).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The ids of the configured peers (`--peers`), this node included.
    pub fn configured_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// The node's database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where this node's partitions note a moved log start or a passed size trigger
    /// ([`crate::retention::run`] waits on it).
    pub fn retention_notes(&self) -> Arc<fjord_raft::RetentionNotes> {
        self.group_config.retention_notes.clone()
    }

    /// A client of the peer node at `addr`.
    pub fn peer(&self, addr: &str) -> fjord_raft::peer::PeerClient<'_> {
        self.pool.peer(addr)
    }

    /// The groups running on this node.
    pub fn groups(&self) -> &GroupRegistry {
        &self.registry
    }

    /// This node's replica of partition group `group`, if it hosts one.
    pub fn partition(&self, group: GroupId) -> Option<PartitionHandle> {
        self.registry.partition(group)
    }

    /// Whether this node's replica of partition group `group` leads it.
    pub fn leads(&self, group: GroupId) -> bool {
        self.registry
            .partition(group)
            .is_some_and(|h| h.leadership().leader == Some(self.id))
    }

    /// The metadata group's replica on this node.
    pub fn meta(&self) -> &MetaHandle {
        &self.meta
    }

    /// Whether the failure detector hears from `node`.
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.liveness.is_alive(node)
    }

    /// How many of this node's partition replicas are quiet, leading, hibernated.
    pub fn quiet_counts(&self) -> fjord_raft::QuietCounts {
        self.liveness.counts()
    }

    /// The metrics the request paths record (see [`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The node's transition and election counters (see [`crate::metrics`]).
    pub fn transitions(&self) -> &fjord_raft::quiesce::Transitions {
        self.liveness.transitions()
    }

    /// Answers a peer's node-level heartbeat.
    pub fn answer_heartbeat(
        &self,
        req: fjord_raft::peer::wire::NodeHeartbeat,
    ) -> fjord_raft::peer::wire::NodeHeartbeatReply {
        self.liveness.serve(req)
    }

    /// The wall clock, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Completes once the node is stopping.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// The data directory's identity.
    pub fn identity(&self) -> &crate::boot::IdentityService {
        &self.identity
    }

    /// The producer ids this node hands out.
    pub(crate) fn producer_ids(&self) -> &crate::producer_ids::ProducerIds {
        &self.producer_ids
    }

    /// A producer id from this node's block (see [`crate::producer_ids`]).
    pub async fn new_producer_id(self: &Arc<Self>) -> Result<u64, ApiError> {
        self.producer_ids.take(self).await
    }

    /// While this node rebuilds: the groups it is still a learner of, of those it holds.
    pub fn rebuild_progress(&self) -> Option<(u32, u32)> {
        *self.rebuilding.lock().unwrap()
    }

    pub(crate) fn set_rebuild_progress(&self, progress: Option<(u32, u32)>) {
        *self.rebuilding.lock().unwrap() = progress;
    }

    /// Whether this node's metadata may still lack what the cluster holds (it rebuilds and
    /// is not yet a voter of the metadata group): it answers clients as unavailable.
    pub fn is_meta_behind(&self) -> bool {
        self.meta_behind.load(Ordering::Acquire)
    }

    /// This node is a voter of the metadata group again: its metadata is complete.
    pub(crate) fn meta_caught_up(&self) {
        self.meta_behind.store(false, Ordering::Release);
    }

    /// Whether this node answers clients from its metadata now (see [`crate::meta_gate`]).
    pub fn metadata_gate(&self) -> crate::meta_gate::MetadataGate {
        let current = self.meta_current.load(Ordering::Acquire)
            || crate::meta_gate::caught_up_in(&self.this_start(), &self.view());
        crate::meta_gate::decide(self.is_meta_behind(), current)
    }

    /// This start, as it registers itself in the metadata.
    fn this_start(&self) -> crate::meta_gate::ThisStart {
        let identity = self.identity.identity();
        crate::meta_gate::ThisStart {
            node: self.id,
            incarnation: identity.incarnation,
            generation: identity.generation,
        }
    }

    /// Waits (on the metadata view's changes, no polling) until the applied metadata shows
    /// this start's registration, then lets clients in for good: the metadata only grows
    /// from there. Ends early at shutdown.
    async fn await_meta_current(self: Arc<Self>) {
        let start = self.this_start();
        let mut views = self.meta.subscribe();
        loop {
            if crate::meta_gate::caught_up_in(&start, &views.borrow_and_update()) {
                self.meta_current.store(true, Ordering::Release);
                tracing::info!(
                    node = self.id,
                    generation = start.generation,
                    "the applied metadata holds this start's registration: answering clients"
                );
                return;
            }
            tokio::select! {
                changed = views.changed() => if changed.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// The next turn of the round-robin over partitions for unkeyed records.
    pub fn next_turn(&self) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }

    /// The consumer group coordinators of the groups' partitions this node leads.
    pub fn coordinator(&self) -> &crate::coordinator::Coordinator {
        &self.coordinator
    }

    /// Partitions of the consumer groups' topic when this node creates it.
    pub fn group_partitions(&self) -> u32 {
        self.group_partitions
    }

    /// The session timeout and heartbeat interval of groups that do not set their own.
    pub fn group_defaults(&self) -> fjord_groups::Defaults {
        self.group_defaults
    }

    /// How long the offsets of a group with no members are kept (`--group-offset-retention-ms`).
    pub fn group_offset_retention_ms(&self) -> i64 {
        self.group_offset_retention_ms
    }

    /// Whether this node's disk has room for produces (fed by [`crate::disk::watch_space`]).
    pub fn disk(&self) -> &Arc<crate::disk::DiskGate> {
        &self.disk
    }

    /// The log settings of topics that do not set their own (`--default-*`).
    pub fn log_defaults(&self) -> fjord_meta::LogDefaults {
        self.log_defaults
    }

    /// The log settings in force for topic `name` (its own, else this node's defaults), as
    /// of this node's applied metadata; `None` for a topic it does not know.
    pub fn topic_log_config(&self, name: &str) -> Option<fjord_meta::EffectiveLogConfig> {
        let view = self.view();
        Some(view.state.topic(name)?.config.effective(&self.log_defaults))
    }

    /// [`Node::topic_log_config`] of the topic with id `topic_id`.
    pub fn topic_log_config_by_id(&self, topic_id: u32) -> Option<fjord_meta::EffectiveLogConfig> {
        let view = self.view();
        Some(
            view.state
                .topic_by_id(topic_id)?
                .config
                .effective(&self.log_defaults),
        )
    }

    /// The log settings in force for partition group `group`: its topic's
    /// ([`Node::topic_log_config`]); `None` for the metadata group and unknown groups.
    pub fn partition_log_config(&self, group: GroupId) -> Option<fjord_meta::EffectiveLogConfig> {
        let view = self.view();
        let (topic, _) = view.state.partition_by_group(group)?;
        Some(topic.config.effective(&self.log_defaults))
    }

    /// A fresh token for a proposal (see `StoredBatch::token`).
    pub fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// The applied metadata on this node.
    pub fn view(&self) -> Arc<MetaView> {
        self.meta.view()
    }

    /// The applied metadata on this node, each time it changes.
    pub fn view_changes(&self) -> tokio::sync::watch::Receiver<Arc<MetaView>> {
        self.meta.subscribe()
    }

    /// The client address of `node`, as registered in the metadata (its `--advertise`):
    /// where clients are sent (leader and coordinator hints). Nodes never call each other's
    /// client API (see [`crate::partition_read`]).
    pub fn client_address_of(&self, node: NodeId) -> Option<String> {
        self.view()
            .state
            .nodes
            .get(&node)
            .map(|n| n.address.clone())
    }

    /// The peer address of `node`, as configured (`--peers`): where node-to-node RPCs go.
    pub fn peer_address_of(&self, node: NodeId) -> Option<String> {
        self.peers.get(&node).cloned()
    }

    /// The metadata leader this node knows of.
    pub fn meta_leader(&self) -> Option<NodeId> {
        self.meta.leader()
    }

    async fn register_self(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let cmd = self.identity.registration(&self.address);
            match self.meta_write(cmd).await {
                Ok(MetaResponse::Error(e)) => {
                    // Deterministic: the metadata holds another directory for this node id,
                    // or another cluster's id (the boot check saw neither, so the metadata
                    // changed since). Retrying would give the same answer.
                    tracing::error!(error = %e, "the metadata refused this node's registration");
                    return;
                }
                Ok(_) => {
                    let identity = self.identity.identity();
                    tracing::info!(
                        node = self.id,
                        address = %self.address,
                        incarnation = format_args!("{:#x}", identity.incarnation),
                        generation = identity.generation,
                        "registered in the metadata"
                    );
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "registering this node, will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Applies a metadata command through the metadata leader, wherever it is.
    pub async fn meta_write(&self, cmd: MetaCommand) -> Result<MetaResponse, ApiError> {
        let mut backoff = Duration::from_millis(20);
        let mut last_err = ApiError::no_leader(Subject::Metadata, NoLeaderCause::NotKnown);
        for _ in 0..META_WRITE_ATTEMPTS {
            match self.meta.write(cmd.clone()).await {
                Ok(r) => return Ok(r),
                Err(GroupError::NotLeader {
                    leader,
                    address: Some(member_addr),
                }) => {
                    // The address in the group's membership is where the leader was when it
                    // joined; one that came back at a new address is where the address book
                    // (`--peers`) says.
                    let addr = leader.map_or(member_addr.clone(), |id| {
                        self.pool.address_of(id, &member_addr)
                    });
                    match self.forward_meta_write(&addr, &cmd).await {
                        Ok(r) => return Ok(r),
                        Err(e) => last_err = e,
                    }
                }
                Err(GroupError::Internal(e)) => return Err(ApiError::Internal(e)),
                Err(GroupError::NotLeader { address: None, .. }) => {
                    // No leader known here: the leader may not reach this node (it came back
                    // at a new address, which only this write registers). Ask each peer; only
                    // the leader applies a forwarded write.
                    for addr in self.peer_addresses().into_values() {
                        match self.forward_meta_write(&addr, &cmd).await {
                            Ok(r) => return Ok(r),
                            Err(e) => last_err = e,
                        }
                    }
                }
                Err(e) => last_err = ApiError::from_meta_write(e),
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(last_err)
    }

    async fn forward_meta_write(
        &self,
        addr: &str,
        cmd: &MetaCommand,
    ) -> Result<MetaResponse, ApiError> {
        self.pool
            .peer(addr)
            .meta_write(cmd, META_FORWARD_TIMEOUT)
            .await
            .map_err(|e| match e {
                PeerError::Timeout { .. } => {
                    ApiError::no_leader(Subject::Metadata, NoLeaderCause::ForwardTimedOut)
                }
                PeerError::Status { message, .. } => {
                    ApiError::no_leader(Subject::Metadata, NoLeaderCause::ForwardFailed { message })
                }
                PeerError::Connect(e) => ApiError::Connect(e),
                PeerError::Encode(e) => ApiError::Encode(e),
                other @ (PeerError::Decode { .. } | PeerError::Raft { .. }) => {
                    ApiError::BadForwardedAnswer(other)
                }
            })
    }

    /// Handles a metadata write forwarded by another node: applies it here only if this node
    /// leads (no second hop, so forwards cannot loop).
    pub async fn local_meta_write(&self, cmd: MetaCommand) -> Result<MetaResponse, ApiError> {
        match self.meta.write(cmd).await {
            Ok(r) => Ok(r),
            Err(GroupError::Internal(e)) => Err(ApiError::Internal(e)),
            Err(e) => Err(ApiError::from_meta_write(e)),
        }
    }

    // ---- reconciler ----

    async fn reconcile_loop(self: Arc<Self>) {
        let mut view = self.meta.subscribe();
        // Partition groups this node holds data of: those on disk (a topic may have been
        // deleted while this node was down) and those started since.
        let mut seen: BTreeSet<GroupId> = match self.store.groups() {
            Ok(groups) => groups
                .into_iter()
                .filter(|g| *g != fjord_meta::META_GROUP)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list the groups on disk");
                BTreeSet::new()
            }
        };
        loop {
            let snapshot = view.borrow_and_update().clone();
            self.reconcile(&snapshot, &mut seen).await;
            tokio::select! {
                r = view.changed() => if r.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Makes this node's partition groups match `view` ([`reconcile::plan`] decides, this
    /// performs). `seen`: the partition groups this node holds data of.
    async fn reconcile(self: &Arc<Self>, view: &MetaView, seen: &mut BTreeSet<GroupId>) {
        let plan = reconcile::plan(
            self.id,
            &view.state,
            |g| self.registry.get(g).is_some(),
            seen,
        );
        *seen = plan.seen;
        let mut starting: Vec<fjord_raft::LeadershipWatch> = Vec::new();
        for action in plan.actions {
            match action {
                Action::Start {
                    group,
                    replicas,
                    init,
                    coordinator,
                } => {
                    if starting.len() >= START_BATCH {
                        Self::wait_for_leaders(&mut starting).await;
                    }
                    let kind = if coordinator {
                        PartitionKind::Groups
                    } else {
                        PartitionKind::Data
                    };
                    if let Some(watch) = self.start_group(group, &replicas, init, kind).await {
                        starting.push(watch);
                    }
                }
                Action::Delete { group } => self.delete_group(group).await,
            }
        }
    }

    /// Starts this node's replica of `group`, initializes it as `init` says, and reports its
    /// leaderships; returns its leadership watch.
    async fn start_group(
        self: &Arc<Self>,
        group: GroupId,
        replicas: &[NodeId],
        init: Init,
        kind: PartitionKind,
    ) -> Option<fjord_raft::LeadershipWatch> {
        let started = group::start_partition(
            self.id,
            group,
            kind,
            &self.group_config,
            self.store.clone(),
            self.pool.clone(),
            self.liveness.transitions().clone(),
        )
        .await;
        let handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                tracing::error!(group, error = %e, "cannot start partition group");
                return None;
            }
        };
        self.registry
            .insert(group, AnyGroup::Partition(handle.clone()));
        let members: BTreeMap<NodeId, String> = replicas
            .iter()
            .map(|n| (*n, self.peer_address_of(*n).unwrap_or_default()))
            .collect();
        match init {
            Init::Held => {}
            Init::Now => {
                if let Err(e) = handle.initialize(&members).await {
                    tracing::warn!(group, error = %e, "cannot initialize partition group");
                }
            }
            Init::Later => {
                if !handle.is_initialized().await {
                    let (h, wait) = (handle.clone(), self.group_config.wake_grace() * 2);
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        if let Err(e) = h.initialize(&members).await {
                            tracing::warn!(group, error = %e, "cannot initialize partition group");
                        }
                    });
                }
            }
        }
        let watch = handle.watch_leadership();
        let me = self.clone();
        let coordinator = kind == PartitionKind::Groups;
        tokio::spawn(async move { me.report_leadership(group, handle, coordinator).await });
        tracing::info!(group, ?replicas, "started partition group");
        Some(watch)
    }

    /// Stops this node's replica of `group`, if it runs, and deletes its data.
    async fn delete_group(&self, group: GroupId) {
        if let Some(AnyGroup::Partition(handle)) = self.registry.remove(group) {
            handle.shutdown().await;
        }
        if let Err(e) = self
            .store
            .write(vec![fjord_storage::Op::DeleteGroup { group }])
            .await
        {
            tracing::error!(group, error = %e, "cannot delete the data of a deleted partition");
        } else {
            tracing::info!(group, "deleted partition group");
        }
    }

    /// Waits, at most [`START_BATCH_WAIT`], until each group just started knows a leader.
    /// Thousands of new groups campaigning at once (a large topic created, a node restarted)
    /// would swamp the node and its peers with elections and heartbeats, time their RPCs out
    /// and keep them from ever settling; a batch at a time, each settles, then goes quiet.
    async fn wait_for_leaders(starting: &mut Vec<fjord_raft::LeadershipWatch>) {
        let deadline = tokio::time::Instant::now() + START_BATCH_WAIT;
        for w in starting.iter_mut() {
            while w.current().leader.is_none() {
                match tokio::time::timeout_at(deadline, w.changed()).await {
                    Ok(true) => {}
                    _ => break,
                }
            }
        }
        starting.clear();
    }

    /// Reports to the metadata group each time this node becomes the leader of `group`; for
    /// a partition of the groups' topic (`coordinator`), also starts its coordinator's runner
    /// then, so that silent members are removed and offsets expire without waiting for a
    /// group request.
    async fn report_leadership(
        self: Arc<Self>,
        group: GroupId,
        handle: PartitionHandle,
        coordinator: bool,
    ) {
        let mut watch = handle.watch_leadership();
        let mut reported_term = 0u64;
        let mut runner_term = 0u64;
        loop {
            let fjord_raft::Leadership { leader, term } = watch.current();
            if coordinator && leader == Some(self.id) && term > runner_term {
                runner_term = term;
                self.coordinator.start_runner(&self, group, handle.clone());
            }
            if leader == Some(self.id) && term > reported_term {
                let cmd = MetaCommand::ReportLeader {
                    group_id: group,
                    leader: self.id,
                    epoch: term,
                };
                match self.meta_write(cmd).await {
                    Ok(_) => reported_term = term,
                    Err(e) => {
                        tracing::debug!(group, error = %e, "leader report failed, will retry")
                    }
                }
                if reported_term < term {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        _ = self.shutdown.cancelled() => return,
                    }
                }
            }
            tokio::select! {
                alive = watch.changed() => if !alive { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    // ---- controller ----

    async fn controller_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CONTROLLER_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            if !self.meta.is_leader() {
                continue;
            }
            // Live: as the node-level failure detector sees it (the metadata group itself
            // goes quiet when idle, so its acknowledgements say nothing then).
            let view = self.view();
            let live: std::collections::BTreeSet<NodeId> = view
                .state
                .nodes
                .keys()
                .copied()
                .filter(|n| self.liveness.is_alive(*n))
                .collect();
            let moves =
                fjord_meta::plan_leader_moves(&view.state, &live, MAX_LEADER_MOVES_PER_ROUND);
            for m in moves {
                let Some(addr) = self.peer_address_of(m.from) else {
                    continue;
                };
                tracing::info!(
                    group = m.group_id,
                    from = m.from,
                    to = m.to,
                    "controller: moving partition leader"
                );
                let peer = self.pool.peer(&addr);
                if let Err(e) = peer
                    .move_leader(m.group_id, m.to, LEADER_MOVE_TIMEOUT)
                    .await
                {
                    tracing::debug!(group = m.group_id, error = %e, "controller: leader move not done");
                }
            }
        }
    }

    /// Controlled shutdown: hands every leadership this node holds to the follower that
    /// lacks the fewest entries ([`fjord_raft::handoff`]), and waits (bounded) for the new leaders, so clients see
    /// a leader change instead of an election timeout.
    async fn hand_off_leadership(&self) {
        let deadline = tokio::time::Instant::now() + HANDOFF_BUDGET;
        let mut moving = Vec::new();
        for g in self.registry.ids() {
            // The budget bounds the starting of transfers too: a hibernated leader is
            // restarted first (up to seconds each), and a node leading thousands of them
            // would otherwise outlast any stop timeout of its supervisor.
            if tokio::time::Instant::now() >= deadline {
                tracing::info!("hand-off budget spent: the remaining leaderships go by election");
                break;
            }
            let (watch, to) = match self.registry.get(g) {
                Some(AnyGroup::Partition(h)) if h.leadership().leader == Some(self.id) => {
                    // A quiet group has no recent acknowledgements: any follower whose node
                    // is alive is in sync (it accepted the claim), and the transfer wakes the
                    // group first.
                    let Some(to) = h.handoff_target(LIVENESS_WINDOW, |v| self.liveness.is_alive(v))
                    else {
                        continue;
                    };
                    if !matches!(
                        tokio::time::timeout_at(deadline, h.transfer_leader(to)).await,
                        Ok(Ok(_))
                    ) {
                        continue;
                    }
                    (h.watch_leadership(), to)
                }
                Some(AnyGroup::Meta(h)) if h.is_leader() => {
                    let Some(to) = h.handoff_target(LIVENESS_WINDOW, |v| self.liveness.is_alive(v))
                    else {
                        continue;
                    };
                    if !matches!(
                        tokio::time::timeout_at(deadline, h.transfer_leader(to)).await,
                        Ok(Ok(_))
                    ) {
                        continue;
                    }
                    (h.watch_leadership(), to)
                }
                _ => continue,
            };
            tracing::info!(group = g, to, "handing leadership over before stopping");
            moving.push(watch);
        }
        let count = moving.len();
        for mut w in moving {
            while w.current().leader == Some(self.id) {
                if !matches!(
                    tokio::time::timeout_at(deadline, w.changed()).await,
                    Ok(true)
                ) {
                    break;
                }
            }
        }
        if count > 0 {
            tracing::info!(groups = count, "leadership handed over");
        }
    }

    /// Stops every group and the background tasks.
    pub async fn stop(&self) {
        self.hand_off_leadership().await;
        self.shutdown.cancel();
        for g in self.registry.ids() {
            match self.registry.remove(g) {
                Some(AnyGroup::Partition(h)) => h.shutdown().await,
                Some(AnyGroup::Meta(h)) => h.shutdown().await,
                None => {}
            }
        }
    }
}
