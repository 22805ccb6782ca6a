//! The client API (`fjord.v1.Fjord`): conversion between prost types and the node's
//! operations happens here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use fjord_meta::acl::{AclEntry, Decision, Operation, Resource, ResourceType};
use fjord_meta::{MetaCommand, MetaResponse, Topic};
use fjord_proto::v1::fjord_server::Fjord;
use fjord_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::auth::Gate;
use crate::coordinator::{Answer, Op};
use crate::data;
use crate::error::{ApiError, Invalid};
use crate::group_wire;
use crate::live::{self, LiveSet};
use crate::metrics::Outcome;
use crate::node::Node;
use crate::topic_wire;

/// How long CreateTopic waits for the new partitions to elect leaders before answering (the
/// topic exists either way). Well under the clients' default request timeout (10 s): a create
/// answered after the client gave up is retried, and the retry finds the topic existing.
const CREATE_TOPIC_LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long CreateTopic waits for registered nodes not heard from yet to be heard from.
const LIVE_NODES_WAIT: Duration = Duration::from_secs(1);
const LIVE_NODES_POLL: Duration = Duration::from_millis(50);
/// The longest `wait_ms` of a Metadata request's leader wait.
pub const MAX_LEADER_WAIT_MS: u32 = 10_000;
/// Partitions the cluster holds at most (over every topic, fjord's own included); a topic
/// that would pass it is refused (RESOURCE_EXHAUSTED).
pub const MAX_CLUSTER_PARTITIONS: u64 = 100_000;

// The counts a request's repeated fields are held to before decoding
// (`fjord_proto::prescan`) are at least what the handlers take: a request a handler would
// take is never refused before it.
const _: () = {
    use fjord_groups::limits as g;
    use fjord_proto::prescan as p;
    assert!(p::MAX_SUBSCRIPTION_NAMES >= g::MAX_SUBSCRIBED_TOPICS);
    assert!(p::MAX_PARTITION_ENTRIES >= g::MAX_OFFSETS_PER_REQUEST);
    assert!(p::MAX_OWNED_ENTRIES as u64 >= MAX_CLUSTER_PARTITIONS);
};
/// The largest answer a node sends: a fetch's largest `max_bytes` and room for the batches'
/// framing. A larger one is refused as [`ApiError::AnswerTooLarge`] (RESOURCE_EXHAUSTED).
pub const MAX_ANSWER_BYTES: usize = crate::wire::MAX_FETCH_BYTES as usize + (1 << 20);

/// `answer`, unless it is larger than a node sends ([`MAX_ANSWER_BYTES`]).
fn within_answer_limit<M: prost::Message>(
    rpc: &'static str,
    answer: Response<M>,
) -> Result<Response<M>, Status> {
    let bytes = answer.get_ref().encoded_len();
    if bytes > MAX_ANSWER_BYTES {
        return Err(ApiError::AnswerTooLarge {
            rpc,
            bytes,
            limit: MAX_ANSWER_BYTES,
        }
        .into());
    }
    Ok(answer)
}

pub struct ClientService {
    pub node: Arc<Node>,
    /// How requests are authenticated and authorized ([`Gate::open`] for the node's own
    /// in-process calls).
    pub gate: Arc<Gate>,
}

/// The client API of a node that may still be starting: every request waits for nothing and
/// is refused as unavailable ([`ApiError::Starting`]) until the node runs, then goes to its
/// [`ClientService`].
pub struct StartingClientService {
    pub slot: crate::NodeSlot,
    pub id: u64,
    pub gate: Arc<Gate>,
}

impl StartingClientService {
    fn running(&self) -> Result<ClientService, Status> {
        match self.slot.get() {
            // A rebuilding or just restarted node's metadata may lack topics until the
            // metadata group's log reached it: an answer from it would say that no topic
            // exists.
            Some(node) => match node.metadata_gate() {
                crate::meta_gate::MetadataGate::Serve => Ok(ClientService {
                    node: node.clone(),
                    gate: self.gate.clone(),
                }),
                crate::meta_gate::MetadataGate::Rebuilding => {
                    Err(ApiError::Rebuilding(self.id).into())
                }
                crate::meta_gate::MetadataGate::CatchingUp => {
                    Err(ApiError::MetaCatchingUp(self.id).into())
                }
            },
            None => Err(ApiError::Starting(self.id).into()),
        }
    }
}

macro_rules! delegate {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl Fjord for StartingClientService {
            $(
                async fn $name(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    let answer = self.running()?.$name(req).await?;
                    within_answer_limit(stringify!($name), answer)
                }
            )*
        }
    };
}

delegate! {
    metadata(MetadataRequest) -> MetadataResponse;
    create_topic(CreateTopicRequest) -> CreateTopicResponse;
    delete_topic(DeleteTopicRequest) -> DeleteTopicResponse;
    list_topics(ListTopicsRequest) -> ListTopicsResponse;
    describe_topic(DescribeTopicRequest) -> DescribeTopicResponse;
    alter_topic_config(AlterTopicConfigRequest) -> AlterTopicConfigResponse;
    init_producer(InitProducerRequest) -> InitProducerResponse;
    produce(ProduceRequest) -> ProduceResponse;
    fetch(FetchRequest) -> FetchResponse;
    find_coordinator(FindCoordinatorRequest) -> FindCoordinatorResponse;
    group_heartbeat(GroupHeartbeatRequest) -> GroupHeartbeatResponse;
    commit_offsets(CommitOffsetsRequest) -> CommitOffsetsResponse;
    fetch_offsets(FetchOffsetsRequest) -> FetchOffsetsResponse;
    list_groups(ListGroupsRequest) -> ListGroupsResponse;
    describe_group(DescribeGroupRequest) -> DescribeGroupResponse;
    reset_offsets(ResetOffsetsRequest) -> ResetOffsetsResponse;
    delete_group(DeleteGroupRequest) -> DeleteGroupResponse;
    alter_group_config(AlterGroupConfigRequest) -> AlterGroupConfigResponse;
    delete_records(DeleteRecordsRequest) -> DeleteRecordsResponse;
    list_offsets(ListOffsetsRequest) -> ListOffsetsResponse;
    create_user(CreateUserRequest) -> CreateUserResponse;
    delete_user(DeleteUserRequest) -> DeleteUserResponse;
    list_users(ListUsersRequest) -> ListUsersResponse;
    add_acl(AddAclRequest) -> AddAclResponse;
    remove_acl(RemoveAclRequest) -> RemoveAclResponse;
    list_acls(ListAclsRequest) -> ListAclsResponse;
}

/// Who sent a request, and the metadata its permissions are checked against. Each RPC names
/// the permission it needs (the operation and the resource, Kafka's mapping; written in
/// `proto/fjord.proto`) through [`Caller::require`].
pub(crate) struct Caller {
    gate: Arc<Gate>,
    principal: String,
    view: Arc<fjord_raft::meta_sm::MetaView>,
    /// The ACL entries that can apply to the principal ([`Gate::entries_for`]), taken once.
    acls: Vec<AclEntry>,
}

impl Caller {
    /// PERMISSION_DENIED unless the principal may do `op` on `resource`.
    fn require(&self, op: Operation, resource: Resource<'_>) -> Result<(), ApiError> {
        self.gate.check(&self.principal, op, resource, &self.acls)
    }

    /// Whether the principal may do `op` on `resource` (for lists, which show only what the
    /// principal may describe).
    fn may(&self, op: Operation, resource: Resource<'_>) -> bool {
        self.gate.decide(&self.principal, op, resource, &self.acls) == Decision::Allow
    }

    /// PERMISSION_DENIED naming every topic of `names` the principal may not do `op` on (in
    /// one error, clipped), else Ok.
    fn require_topics<'a>(
        &self,
        op: Operation,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        let refused: std::collections::BTreeSet<&str> = names
            .into_iter()
            .filter(|n| !self.may(op, Resource::topic(n)))
            .collect();
        match refused.len() {
            0 => Ok(()),
            1 => self.require(op, Resource::topic(refused.first().copied().unwrap_or(""))),
            n => {
                let listed: Vec<String> = refused
                    .iter()
                    .take(MAX_NAMED_IN_REFUSAL)
                    .map(|t| format!("{:?}", fjord_meta::error::clip(t)))
                    .collect();
                let more = n.saturating_sub(MAX_NAMED_IN_REFUSAL);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                Err(crate::auth::denied(
                    &self.principal,
                    op,
                    &format!("topics {}{tail}", listed.join(", ")),
                    &fjord_meta::acl::DenyReason::NoAllow,
                ))
            }
        }
    }

    /// Whether the principal may describe topic `name` (offsets and assignments show only
    /// those).
    fn may_describe_topic(&self, name: &str) -> bool {
        self.may(Operation::Describe, Resource::topic(name))
    }

    /// Only a superuser may create or delete a user whose principal is a superuser (an
    /// alter-cluster principal could otherwise mint a superuser's token).
    fn require_superuser_for_user(&self, name: &str) -> Result<(), ApiError> {
        let principal = format!("{}{name}", fjord_meta::acl::USER_PREFIX);
        if self.gate.authorization == crate::auth::Authorization::None
            || !self.gate.is_superuser(&principal)
            || self.gate.is_superuser(&self.principal)
        {
            return Ok(());
        }
        Err(crate::auth::denied(
            &self.principal,
            Operation::Alter,
            &format!("the superuser {:?}", fjord_meta::error::clip(&principal)),
            &"only a superuser may create or delete a superuser's user",
        ))
    }

    /// Create on the cluster, or else on the topic (Kafka's CreateTopics).
    fn require_create_topic(&self, topic: &str) -> Result<(), ApiError> {
        if self.may(Operation::Create, Resource::cluster()) {
            return Ok(());
        }
        self.require(Operation::Create, Resource::topic(topic))
    }

    /// Write on the cluster, or: for an unnamed producer an allow of write on some topic
    /// (Kafka's rule for an idempotent producer's InitProducerId); for a named one write on
    /// the producer resource of its name (Kafka's write on the TransactionalId), so that
    /// only who may use a name can fence or exhaust it.
    fn require_init_producer(&self, name: Option<&str>) -> Result<(), ApiError> {
        if self.may(Operation::Write, Resource::cluster()) {
            return Ok(());
        }
        match name {
            Some(name) => self.require(Operation::Write, Resource::producer(name)),
            None if self.gate.allows_some(
                &self.principal,
                Operation::Write,
                ResourceType::Topic,
                &self.acls,
            ) =>
            {
                Ok(())
            }
            None => self.require(Operation::Write, Resource::cluster()),
        }
    }

    /// Read on the group and on every topic the commit names. The commit's offset count is
    /// bounded first, so that a huge request is refused before any per-topic check.
    fn require_commit(&self, req: &CommitOffsetsRequest) -> Result<(), ApiError> {
        self.require(Operation::Read, Resource::group(&req.group))?;
        let max = fjord_groups::limits::MAX_OFFSETS_PER_REQUEST;
        if req.offsets.len() > max {
            return Err(Invalid::OverLimit {
                field: "offsets",
                value: req.offsets.len() as u64,
                limit: max as u64,
            }
            .into());
        }
        let topics: std::collections::BTreeSet<&str> =
            req.offsets.iter().map(|o| o.topic.as_str()).collect();
        for t in topics {
            self.require(Operation::Read, Resource::topic(t))?;
        }
        Ok(())
    }
}

/// Topics named in one PERMISSION_DENIED, at most (the rest are counted).
const MAX_NAMED_IN_REFUSAL: usize = 10;

/// Refuses a client's write to one of fjord's own topics.
fn not_internal(topic: &str, action: &'static str) -> Result<(), ApiError> {
    if topic.starts_with(fjord_groups::INTERNAL_TOPIC_PREFIX) {
        return Err(Invalid::ReservedTopic {
            topic: topic.to_string(),
            action,
        }
        .into());
    }
    Ok(())
}

/// A topic as this node describes it to clients, with its settings in force as this node
/// resolves the defaults ([`Node::log_defaults`]). A partition's leader is the one the
/// metadata records, unless this node holds a replica of the partition that knows a leader of
/// a later term: leaders reach the metadata through the metadata group, and when that
/// group's leader died with the partition's (on the same node), the record stays stale until
/// the metadata group has elected too. The replica's own view is what clients need then.
pub(crate) fn topic_info(node: &Node, t: &Topic) -> TopicInfo {
    TopicInfo {
        name: t.name.clone(),
        replication_factor: t.replication_factor,
        partitions: t
            .partitions
            .iter()
            .map(|p| {
                let local = node
                    .partition(fjord_meta::group_id(t.id, p.partition))
                    .map(|h| h.leadership());
                let (leader, leader_epoch) = match local {
                    Some(fjord_raft::Leadership {
                        leader: Some(l),
                        term,
                    }) if term > p.leader_epoch => (l, term),
                    _ => (p.leader.unwrap_or(0), p.leader_epoch),
                };
                PartitionInfo {
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                    leader,
                    leader_epoch,
                }
            })
            .collect(),
        config: Some(topic_wire::config_to_wire(&t.config)),
        effective: Some(topic_wire::effective_to_wire(
            &t.config.effective(&node.log_defaults()),
        )),
    }
}

impl ClientService {
    /// The service for this node's own in-process calls: no identity is checked.
    pub(crate) fn internal(node: Arc<Node>) -> ClientService {
        ClientService {
            node,
            gate: Gate::open(),
        }
    }

    /// The request's principal (UNAUTHENTICATED if it has none it may have).
    pub(crate) fn caller<T>(&self, req: &Request<T>) -> Result<Caller, ApiError> {
        let view = self.node.view();
        let principal = self.gate.principal(req, &view.state)?;
        Ok(Caller {
            gate: self.gate.clone(),
            acls: self.gate.entries_for(&principal, &view.state),
            principal,
            view,
        })
    }

    fn meta_result(resp: MetaResponse) -> Result<MetaResponse, Status> {
        match resp {
            MetaResponse::Error(e) => Err(ApiError::Meta(e).into()),
            other => Ok(other),
        }
    }

    /// The live set of a CreateTopic ([`live::live_set`] decides): the registered nodes this
    /// node's failure detector sees alive, this node included. A candidate not heard from yet
    /// (this node started a moment ago) gets up to [`LIVE_NODES_WAIT`] to be heard from.
    pub(crate) async fn live_nodes(&self) -> Vec<u64> {
        let deadline = tokio::time::Instant::now() + LIVE_NODES_WAIT;
        loop {
            let registered: Vec<u64> = self.node.view().state.nodes.keys().copied().collect();
            let decision = live::live_set(
                self.node.id(),
                registered,
                self.node.configured_peers(),
                |n| self.node.is_alive(n),
                tokio::time::Instant::now() >= deadline,
            );
            match decision {
                LiveSet::Propose(live) => return live,
                // Polled: the detector hears each peer every 200 ms; this runs only while a
                // registered node is silent.
                LiveSet::Wait => tokio::time::sleep(LIVE_NODES_POLL).await,
            }
        }
    }

    /// The replication factor of `topic`, created without one ([`live::default_replication`]
    /// decides). While the cluster forms, this node waits up to [`LIVE_NODES_WAIT`] for the
    /// registrations its metadata has not applied yet, then refuses (UNAVAILABLE, retryable).
    pub(crate) async fn default_replication(&self, topic: &str) -> Result<u32, ApiError> {
        let mut view = self.node.meta().subscribe();
        let deadline = tokio::time::Instant::now() + LIVE_NODES_WAIT;
        loop {
            let decision = live::default_replication(
                self.node.id(),
                view.borrow_and_update().state.nodes.keys().copied(),
                self.node.configured_peers(),
            );
            match decision {
                live::DefaultReplication::Use(rf) => return Ok(rf),
                live::DefaultReplication::Forming {
                    replication_factor,
                    registered,
                    expected,
                } => {
                    // Woken by each metadata change; bounded by the deadline.
                    if !matches!(
                        tokio::time::timeout_at(deadline, view.changed()).await,
                        Ok(Ok(()))
                    ) {
                        return Err(ApiError::ClusterForming {
                            topic: topic.to_string(),
                            replication_factor,
                            registered,
                            expected,
                        });
                    }
                }
            }
        }
    }

    /// Waits (bounded by [`CREATE_TOPIC_LEADER_WAIT`]) until this node's applied metadata
    /// satisfies `done`, so that its next answers show a write it just made through the
    /// metadata leader.
    async fn wait_for_local_view(&self, done: impl Fn(&fjord_meta::MetaState) -> bool) {
        let mut view = self.node.meta().subscribe();
        let deadline = tokio::time::Instant::now() + CREATE_TOPIC_LEADER_WAIT;
        while !done(&view.borrow_and_update().state) {
            if !matches!(
                tokio::time::timeout_at(deadline, view.changed()).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
    }

    /// Waits (bounded) until this node has applied topic `name` and every partition of it has
    /// a reported leader.
    pub(crate) async fn wait_for_leaders(&self, name: &str) {
        let mut view = self.node.meta().subscribe();
        let deadline = tokio::time::Instant::now() + CREATE_TOPIC_LEADER_WAIT;
        loop {
            let ready = view
                .borrow_and_update()
                .state
                .topic(name)
                .is_some_and(|t| t.partitions.iter().all(|p| p.leader.is_some()));
            if ready {
                return;
            }
            match tokio::time::timeout_at(deadline, view.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// The topics a ResetOffsets may move, checked: `req.topic` (its read checked by the
    /// caller), or (none named) every topic the group has committed offsets for, as the
    /// coordinator answers now, each needing read.
    /// `Some(set)`: the reset moves only those (a topic committed meanwhile is left alone,
    /// and no lookup by time runs on it); `None` with authorization off.
    async fn require_reset(
        &self,
        caller: &Caller,
        req: &ResetOffsetsRequest,
        topics: &fjord_groups::TopicsView,
    ) -> Result<Option<std::collections::BTreeSet<fjord_groups::TopicId>>, ApiError> {
        if self.gate.authorization == crate::auth::Authorization::None {
            return Ok(None);
        }
        if !req.topic.is_empty() {
            return Ok(topics.by_name.get(&req.topic).map(|t| [t.id].into()));
        }
        let op = Op::Fetch {
            group: req.group.clone(),
            who: fjord_groups::offsets::Committer::Admin,
            tps: Vec::new(),
        };
        let Answer::Offsets(committed) = self.node.coordinator().call(&self.node, op).await? else {
            return Err(ApiError::UnexpectedGroupAnswer {
                to: "a reset's offset fetch",
            });
        };
        let ids: std::collections::BTreeSet<fjord_groups::TopicId> =
            committed.keys().map(|tp| tp.topic).collect();
        let names: Vec<&str> = ids.iter().filter_map(|id| topics.name_of(*id)).collect();
        caller.require_topics(Operation::Read, names)?;
        Ok(Some(ids))
    }

    /// A Metadata request's leader wait: until this node's replica of the partition knows a
    /// leader other than the one the client could not reach, at most `wait_ms`. A node without
    /// a replica of the partition answers at once (its metadata is all it knows).
    async fn wait_for_other_leader(&self, w: &LeaderWait) -> Result<(), Status> {
        if w.wait_ms > MAX_LEADER_WAIT_MS {
            return Err(ApiError::from(Invalid::OverLimit {
                field: "leader_wait.wait_ms",
                value: w.wait_ms.into(),
                limit: MAX_LEADER_WAIT_MS.into(),
            })
            .into());
        }
        let Some(topic) = self.node.view().state.topic(&w.topic).cloned() else {
            return Ok(());
        };
        let Some(handle) = self
            .node
            .partition(fjord_meta::group_id(topic.id, w.partition))
        else {
            return Ok(());
        };
        let mut watch = handle.watch_leadership();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(w.wait_ms.into());
        loop {
            if watch
                .current()
                .leader
                .is_some_and(|l| l != w.unreachable_leader)
            {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(true) => {}
                _ => return Ok(()),
            }
        }
    }
}

#[tonic::async_trait]
impl Fjord for ClientService {
    async fn metadata(
        &self,
        req: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        // A topic asked for by name that the principal may not describe is refused rather
        // than left out, so a client learns why (Kafka's TOPIC_AUTHORIZATION_FAILED); whether
        // it exists or not (the same answer: a refusal does not tell which names exist), and
        // before any leader wait (whose duration would tell).
        caller.require_topics(Operation::Describe, req.topics.iter().map(String::as_str))?;
        if let Some(w) = &req.leader_wait {
            caller.require(Operation::Describe, Resource::topic(&w.topic))?;
            self.wait_for_other_leader(w).await?;
        }
        let view = self.node.view();
        let counts = self.node.quiet_counts();
        let rebuilding = self.node.rebuild_progress();
        // Registered nodes only: a configured peer that never registered is not usable yet.
        let nodes: std::collections::BTreeMap<u64, String> = view
            .state
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.address.clone()))
            .collect();
        // The named topics by lookup, each once (a request names at most
        // MAX_METADATA_TOPICS, counted before decoding), in name order as the whole list.
        let named: std::collections::BTreeSet<&str> =
            req.topics.iter().map(String::as_str).collect();
        let wanted: Box<dyn Iterator<Item = &fjord_meta::Topic>> = if named.is_empty() {
            Box::new(view.state.topics.values())
        } else {
            Box::new(named.into_iter().filter_map(|n| view.state.topic(n)))
        };
        let mut topics = Vec::new();
        for t in wanted {
            if caller.may(Operation::Describe, Resource::topic(&t.name)) {
                topics.push(topic_info(&self.node, t));
            }
        }
        Ok(Response::new(MetadataResponse {
            nodes: nodes
                .into_iter()
                .map(|(id, address)| fjord_proto::v1::Node { id, address })
                .collect(),
            metadata_leader: self.node.meta_leader().unwrap_or(0),
            topics,
            replicas: Some(ReplicaStatus {
                node_id: self.node.id(),
                hosted: counts.replicas,
                quiet: counts.quiet,
                hibernated: counts.hibernated,
                leading: counts.leading,
                rebuilding_groups: rebuilding.map_or(0, |r| r.0),
                rebuild_total_groups: rebuilding.map_or(0, |r| r.1),
            }),
        }))
    }

    async fn create_topic(
        &self,
        req: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        caller.require_create_topic(&req.name)?;
        not_internal(&req.name, "create")?;
        // Every partition is a Raft group on each of its replicas: bounded, so that a client
        // allowed to create topics cannot make the metadata (copied whole at each change) and
        // the nodes' groups grow without end. Checked against this node's view (a guard, not
        // a replicated rule: the metadata's apply accepts what it always did); a topic that
        // exists already is left to the metadata's ALREADY_EXISTS (a retried create).
        let view = self.node.view();
        let held: u64 = view
            .state
            .topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum();
        let asked = u64::from(req.partitions);
        if view.state.topic(&req.name).is_none()
            && held.saturating_add(asked) > MAX_CLUSTER_PARTITIONS
        {
            return Err(ApiError::TooManyPartitions {
                held,
                asked,
                limit: MAX_CLUSTER_PARTITIONS,
            }
            .into());
        }
        let config = topic_wire::config_from_wire(req.config)?;
        // The default resolved only for a topic the metadata could create: one that exists
        // already, or a request it refuses anyway, gets its own answer (ALREADY_EXISTS,
        // INVALID_ARGUMENT) from the metadata at once, not a wait for a forming cluster.
        let creatable = view.state.topic(&req.name).is_none()
            && fjord_meta::validate_topic_name(&req.name).is_ok()
            && (1..=fjord_meta::MAX_PARTITIONS_PER_TOPIC).contains(&req.partitions);
        let replication_factor = match req.replication_factor {
            0 if creatable => self.default_replication(&req.name).await?,
            rf => rf,
        };
        let cmd = MetaCommand::CreateTopicWithConfig {
            name: req.name.clone(),
            partitions: req.partitions,
            replication_factor,
            config,
            live: self.live_nodes().await,
        };
        let resp = Self::meta_result(self.node.meta_write(cmd).await?)?;
        match resp {
            MetaResponse::Topic(created) => {
                self.wait_for_leaders(&req.name).await;
                let view = self.node.view();
                let t = view.state.topic(&req.name).unwrap_or(&created);
                Ok(Response::new(CreateTopicResponse {
                    topic: Some(topic_info(&self.node, t)),
                }))
            }
            other => Err(ApiError::UnexpectedAnswer {
                to: "a topic's creation",
                got: Box::new(other),
            }
            .into()),
        }
    }

    async fn delete_topic(
        &self,
        req: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        caller.require(Operation::Delete, Resource::topic(&req.name))?;
        not_internal(&req.name, "delete")?;
        // By id when this node knows the topic: the write is retried when its forward times
        // out, and a retry whose first attempt committed must not delete a topic created
        // since under the same name.
        let cmd = match self.node.view().state.topic(&req.name) {
            Some(t) => MetaCommand::DeleteTopicId {
                name: req.name.clone(),
                id: t.id,
            },
            None => MetaCommand::DeleteTopic {
                name: req.name.clone(),
            },
        };
        Self::meta_result(self.node.meta_write(cmd).await?)?;
        // Answer once this node's own view agrees, so its next answers do not show the topic.
        self.wait_for_local_view(|s| s.topic(&req.name).is_none())
            .await;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        req: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let caller = self.caller(&req)?;
        let view = self.node.view();
        Ok(Response::new(ListTopicsResponse {
            topics: view
                .state
                .topics
                .values()
                .filter(|t| caller.may(Operation::Describe, Resource::topic(&t.name)))
                .map(|t| topic_info(&self.node, t))
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        req: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        caller.require(Operation::Describe, Resource::topic(&req.name))?;
        let view = self.node.view();
        let t = view
            .state
            .topic(&req.name)
            .ok_or(ApiError::UnknownTopic(req.name.clone()))?;
        Ok(Response::new(DescribeTopicResponse {
            topic: Some(topic_info(&self.node, t)),
        }))
    }

    async fn alter_topic_config(
        &self,
        req: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        caller.require(Operation::Alter, Resource::topic(&req.name))?;
        not_internal(&req.name, "alter the config of")?;
        let change = topic_wire::alter_request(&req)?;
        let cmd = MetaCommand::AlterTopicConfig {
            name: req.name.clone(),
            change,
        };
        match Self::meta_result(self.node.meta_write(cmd).await?)? {
            MetaResponse::Topic(altered) => {
                // Answer once this node's own view has the change (or a later one), so that
                // its next describe shows it.
                self.wait_for_local_view(|s| {
                    s.topic(&req.name)
                        .is_none_or(|t| t.id != altered.id || t.config == altered.config)
                })
                .await;
                Ok(Response::new(AlterTopicConfigResponse {
                    topic: Some(topic_info(&self.node, &altered)),
                }))
            }
            other => Err(ApiError::UnexpectedAnswer {
                to: "a topic's config change",
                got: Box::new(other),
            }
            .into()),
        }
    }

    async fn init_producer(
        &self,
        req: Request<InitProducerRequest>,
    ) -> Result<Response<InitProducerResponse>, Status> {
        self.caller(&req)?
            .require_init_producer(req.get_ref().producer_name.as_deref())?;
        let (producer_id, producer_epoch) = match req.into_inner().producer_name {
            None => (self.node.new_producer_id().await?, 0),
            Some(name) => crate::producer_ids::init_named(&self.node, name).await?,
        };
        Ok(Response::new(InitProducerResponse {
            producer_id,
            producer_epoch: u32::from(producer_epoch),
        }))
    }

    async fn produce(
        &self,
        req: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let started = std::time::Instant::now();
        let caller = self.caller(&req)?;
        // The permission first: a caller that may not write the topic learns nothing from
        // what else its request got wrong.
        caller.require(Operation::Write, Resource::topic(&req.get_ref().topic))?;
        let produce = crate::wire::Produce::try_from(req.into_inner())?;
        let acks = produce.acks;
        let results = match not_internal(&produce.topic, "produce to") {
            Ok(()) => data::produce(&self.node, produce).await,
            Err(e) => Err(e),
        };
        let outcome = match &results {
            Ok(r) if r.iter().all(|p| p.result.is_ok()) => Outcome::Ok,
            _ => Outcome::Error,
        };
        self.node
            .metrics()
            .produce_done(acks, outcome, started.elapsed());
        Ok(Response::new(ProduceResponse {
            results: results?.into_iter().map(PartitionResult::from).collect(),
        }))
    }

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Read, Resource::topic(&req.get_ref().topic))?;
        let started = std::time::Instant::now();
        let fetch = crate::wire::Fetch::try_from(req.into_inner())?;
        let read = fetch.read;
        let fetched = data::fetch(&self.node, fetch).await;
        let outcome = if fetched.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Error
        };
        self.node
            .metrics()
            .fetch_done(read, outcome, started.elapsed());
        Ok(Response::new(fetched?.into()))
    }

    async fn delete_records(
        &self,
        req: Request<DeleteRecordsRequest>,
    ) -> Result<Response<DeleteRecordsResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Delete, Resource::topic(&req.get_ref().topic))?;
        let req = crate::wire::DeleteRecords::try_from(req.into_inner())?;
        not_internal(&req.topic, "delete records of")?;
        let log_start_offset = data::delete_records(&self.node, req).await?;
        Ok(Response::new(DeleteRecordsResponse { log_start_offset }))
    }

    async fn list_offsets(
        &self,
        req: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Describe, Resource::topic(&req.get_ref().topic))?;
        let req = crate::wire::ListOffsets::try_from(req.into_inner())?;
        Ok(Response::new(
            data::list_offsets(&self.node, req).await?.into(),
        ))
    }

    async fn find_coordinator(
        &self,
        req: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let caller = self.caller(&req)?;
        let group = req.into_inner().group;
        caller.require(Operation::Describe, Resource::group(&group))?;
        let (partition, _, leader) = self.node.coordinator().locate(&self.node, &group).await?;
        let found = leader.and_then(|l| self.node.client_address_of(l).map(|a| (l, a)));
        let (node_id, address) = found.ok_or(ApiError::NoLeader {
            of: crate::error::Subject::Coordinator { group, partition },
            why: crate::error::NoLeaderCause::NotKnown,
        })?;
        Ok(Response::new(FindCoordinatorResponse {
            partition,
            node_id,
            address,
        }))
    }

    async fn group_heartbeat(
        &self,
        req: Request<GroupHeartbeatRequest>,
    ) -> Result<Response<GroupHeartbeatResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Read, Resource::group(&req.get_ref().group))?;
        let host = crate::tls::remote_addr(&req)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let topics = crate::coordinator::topics_view(&self.node.view().state);
        let mut req = req.into_inner();
        if let Some(sub) = &mut req.subscription {
            caller.require_topics(Operation::Describe, sub.topics.iter().map(String::as_str))?;
            if self.gate.authorization == crate::auth::Authorization::Acl {
                hide_undescribable(sub, &topics, |t| caller.may_describe_topic(t))?;
            }
        }
        let wait_ms = req.wait_ms.unwrap_or(0);
        let hb = group_wire::heartbeat_request(req, &topics, host)?;
        match self
            .node
            .coordinator()
            .call(&self.node, Op::Heartbeat { req: hb, wait_ms })
            .await?
        {
            Answer::Heartbeat(a) => {
                let mut resp = group_wire::heartbeat_response(a, &topics);
                // A pattern stored before a topic it may not describe appeared: not shown
                // (its next heartbeat's subscription leaves the topic out).
                resp.assignment
                    .retain(|tp| caller.may_describe_topic(&tp.topic));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn commit_offsets(
        &self,
        req: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        self.caller(&req)?.require_commit(req.get_ref())?;
        let topics = crate::coordinator::topics_view(&self.node.view().state);
        let c = group_wire::commit_request(req.into_inner(), &topics)?;
        match self
            .node
            .coordinator()
            .call(&self.node, Op::Commit(c))
            .await?
        {
            Answer::Committed => Ok(Response::new(CommitOffsetsResponse {})),
            other => Err(unexpected(other)),
        }
    }

    async fn fetch_offsets(
        &self,
        req: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Read, Resource::group(&req.get_ref().group))?;
        let topics = crate::coordinator::topics_view(&self.node.view().state);
        // Topics the principal may not describe are not looked up (their answer is left out
        // below anyway): an unknown one would answer NOT_FOUND, telling which names exist.
        let mut req = req.into_inner();
        let named = !req.partitions.is_empty();
        req.partitions
            .retain(|t| caller.may_describe_topic(&t.topic));
        if named && req.partitions.is_empty() {
            // Every topic named is hidden (none named would mean all of them).
            return Ok(Response::new(FetchOffsetsResponse::default()));
        }
        let (group, who, tps) = group_wire::fetch_request(req, &topics)?;
        let op = Op::Fetch { group, who, tps };
        match self.node.coordinator().call(&self.node, op).await? {
            Answer::Offsets(o) => Ok(Response::new(FetchOffsetsResponse {
                offsets: group_wire::committed_offsets(&o, &topics)
                    .into_iter()
                    .filter(|o| caller.may_describe_topic(&o.topic))
                    .collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_groups(
        &self,
        req: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let caller = self.caller(&req)?;
        let wanted = req.into_inner().partitions;
        let view = self.node.view();
        let mut out = ListGroupsResponse::default();
        let Some(topic) = view.state.topic(fjord_groups::GROUPS_TOPIC) else {
            return Ok(Response::new(out));
        };
        for p in 0..topic.partitions.len() as u32 {
            if !wanted.is_empty() && !wanted.contains(&p) {
                continue;
            }
            let local = self.node.partition(fjord_meta::group_id(topic.id, p));
            let listed = local.and_then(|h| {
                h.shared()
                    .with_groups(|gs| gs.iter().map(group_wire::listing).collect::<Vec<_>>())
            });
            match listed {
                Some(l) => out.groups.extend(
                    l.into_iter()
                        .filter(|g| caller.may(Operation::Describe, Resource::group(&g.group))),
                ),
                None => out.missing_partitions.push(p),
            }
        }
        Ok(Response::new(out))
    }

    async fn describe_group(
        &self,
        req: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let caller = self.caller(&req)?;
        let group = req.into_inner().group;
        caller.require(Operation::Describe, Resource::group(&group))?;
        match self
            .node
            .coordinator()
            .call(&self.node, Op::Describe(group))
            .await?
        {
            Answer::Described(d) => {
                let topics = crate::coordinator::topics_view(&self.node.view().state);
                let mut described = group_wire::describe_response(&d, &topics);
                described
                    .offsets
                    .retain(|o| caller.may_describe_topic(&o.topic));
                // The members' topics too: only those the principal may describe.
                for m in &mut described.members {
                    for tps in [&mut m.assigned, &mut m.pending_revocation, &mut m.target] {
                        tps.retain(|t| caller.may_describe_topic(&t.topic));
                    }
                    if let Some(sub) = m.subscription.as_mut() {
                        sub.topics.retain(|t| caller.may_describe_topic(t));
                    }
                }
                // The lag in time reads a record: only of topics the principal may read.
                let readable = |t: &str| caller.may(Operation::Read, Resource::topic(t));
                crate::lag::fill(&self.node, &mut described.offsets, readable).await;
                Ok(Response::new(described))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn reset_offsets(
        &self,
        req: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        let caller = self.caller(&req)?;
        let req = req.into_inner();
        caller.require(Operation::Read, Resource::group(&req.group))?;
        if !req.topic.is_empty() {
            // Before the name is resolved: a refusal does not tell whether it exists.
            caller.require(Operation::Read, Resource::topic(&req.topic))?;
        }
        let topics = crate::coordinator::topics_view(&self.node.view().state);
        let (to, topic) = group_wire::reset_request(&req, &topics)?;
        let within = self.require_reset(&caller, &req, &topics).await?;
        let op = Op::Reset {
            group: req.group,
            to,
            topic,
            within,
        };
        match self.node.coordinator().call(&self.node, op).await? {
            Answer::Reset(moved) => {
                let shown = moved
                    .into_iter()
                    .map(|(tp, o)| {
                        (
                            tp,
                            Some(fjord_groups::Committed {
                                offset: o,
                                metadata: String::new(),
                                commit_time_ms: 0,
                            }),
                        )
                    })
                    .collect();
                Ok(Response::new(ResetOffsetsResponse {
                    offsets: group_wire::committed_offsets(&shown, &topics),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_group(
        &self,
        req: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let caller = self.caller(&req)?;
        let group = req.into_inner().group;
        caller.require(Operation::Delete, Resource::group(&group))?;
        match self
            .node
            .coordinator()
            .call(&self.node, Op::Delete(group))
            .await?
        {
            Answer::Deleted => Ok(Response::new(DeleteGroupResponse {})),
            other => Err(unexpected(other)),
        }
    }

    async fn alter_group_config(
        &self,
        req: Request<AlterGroupConfigRequest>,
    ) -> Result<Response<AlterGroupConfigResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Alter, Resource::group(&req.get_ref().group))?;
        let alter = group_wire::alter_config_request(req.into_inner())?;
        match self
            .node
            .coordinator()
            .call(&self.node, Op::AlterConfig(alter))
            .await?
        {
            Answer::Configured(e) => Ok(Response::new(group_wire::alter_config_response(&e))),
            other => Err(unexpected(other)),
        }
    }

    async fn create_user(
        &self,
        req: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Alter, Resource::cluster())?;
        let name = req.into_inner().name;
        caller.require_superuser_for_user(&name)?;
        fjord_meta::acl::validate_user_name(&name).map_err(ApiError::Meta)?;
        let (token, credential) = crate::auth::new_token(&name);
        let cmd = MetaCommand::CreateUser {
            name: name.clone(),
            credential: credential.clone(),
        };
        Self::meta_result(self.node.meta_write(cmd).await?)?;
        // Answer once this node knows the user, so the token works here at once.
        self.wait_for_local_view(|s| s.users.get(&name) == Some(&credential))
            .await;
        Ok(Response::new(CreateUserResponse {
            principal: format!("{}{name}", fjord_meta::acl::USER_PREFIX),
            token,
        }))
    }

    async fn delete_user(
        &self,
        req: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Alter, Resource::cluster())?;
        let name = req.into_inner().name;
        caller.require_superuser_for_user(&name)?;
        let cmd = MetaCommand::DeleteUser { name: name.clone() };
        Self::meta_result(self.node.meta_write(cmd).await?)?;
        self.wait_for_local_view(|s| !s.users.contains_key(&name))
            .await;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        req: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Describe, Resource::cluster())?;
        Ok(Response::new(ListUsersResponse {
            principals: caller
                .view
                .state
                .users
                .keys()
                .map(|n| format!("{}{n}", fjord_meta::acl::USER_PREFIX))
                .collect(),
        }))
    }

    async fn add_acl(
        &self,
        req: Request<AddAclRequest>,
    ) -> Result<Response<AddAclResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Alter, Resource::cluster())?;
        let entry = crate::auth_wire::entry_from_wire(req.into_inner().entry)?;
        if entry.pattern_type == fjord_meta::acl::PatternType::Prefixed
            && entry.resource_name.contains('*')
        {
            // No name holds `*`: such an entry would match nothing, and a "deny every
            // resource" written so would silently deny nothing. (Refused here, not in the
            // metadata's apply, which must accept what older versions accepted.)
            return Err(ApiError::from(Invalid::Acl(format!(
                "the prefix {:?} holds '*', which no resource name does: for every resource \
                 use the literal name \"*\"",
                entry.resource_name
            )))
            .into());
        }
        let cmd = MetaCommand::AddAcl {
            entry: entry.clone(),
        };
        Self::meta_result(self.node.meta_write(cmd).await?)?;
        self.wait_for_local_view(|s| s.acls.contains(&entry)).await;
        Ok(Response::new(AddAclResponse {}))
    }

    async fn remove_acl(
        &self,
        req: Request<RemoveAclRequest>,
    ) -> Result<Response<RemoveAclResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Alter, Resource::cluster())?;
        let entry = crate::auth_wire::entry_from_wire(req.into_inner().entry)?;
        let cmd = MetaCommand::RemoveAcl {
            entry: entry.clone(),
        };
        Self::meta_result(self.node.meta_write(cmd).await?)?;
        self.wait_for_local_view(|s| !s.acls.contains(&entry)).await;
        Ok(Response::new(RemoveAclResponse {}))
    }

    async fn list_acls(
        &self,
        req: Request<ListAclsRequest>,
    ) -> Result<Response<ListAclsResponse>, Status> {
        let caller = self.caller(&req)?;
        caller.require(Operation::Describe, Resource::cluster())?;
        let principal = req.into_inner().principal;
        Ok(Response::new(ListAclsResponse {
            entries: fjord_meta::acl::entries_of(&caller.view.state.acls, principal.as_deref())
                .map(crate::auth_wire::entry_to_wire)
                .collect(),
        }))
    }
}

/// Under ACLs, a subscription's pattern leaves out the topics the member may not describe
/// (KIP-848): when some topic it matches now is one, the pattern is replaced by the names it
/// matches that the member may describe (with the literal names), so the coordinator never
/// assigns, nor shows, the others. A pattern whose matches are all describable is kept (the
/// topics created later are checked at the member's next heartbeat, which sends its
/// subscription again).
fn hide_undescribable(
    sub: &mut Subscription,
    topics: &fjord_groups::TopicsView,
    may_describe: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    let Some(pattern) = &sub.pattern else {
        return Ok(());
    };
    let re = fjord_groups::subscription::compile(pattern).map_err(ApiError::from)?;
    let matched: Vec<&String> = topics.by_name.keys().filter(|n| re.is_match(n)).collect();
    if matched.iter().all(|n| may_describe(n)) {
        return Ok(());
    }
    sub.pattern = None;
    for n in matched {
        if may_describe(n) && !sub.topics.contains(n) {
            sub.topics.push(n.clone());
        }
    }
    Ok(())
}

fn unexpected(_: Answer) -> Status {
    ApiError::UnexpectedGroupAnswer {
        to: "a group request",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> fjord_groups::TopicsView {
        fjord_groups::TopicsView::new([
            ("orders".to_string(), 1, 1),
            ("orders.eu".to_string(), 2, 1),
            ("secret".to_string(), 3, 1),
        ])
    }

    fn sub(topics: &[&str], pattern: Option<&str>) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            pattern: pattern.map(String::from),
        }
    }

    #[test]
    fn an_answer_over_the_limit_is_resource_exhausted_not_out_of_range() {
        let batch = |bytes: usize| FetchedBatch {
            records: vec![0; bytes].into(),
            ..FetchedBatch::default()
        };
        let answer = |bytes| {
            Response::new(FetchResponse {
                batches: vec![batch(bytes)],
                ..FetchResponse::default()
            })
        };
        // The largest max_bytes, with room for the framing: sent.
        let fits = answer(crate::wire::MAX_FETCH_BYTES as usize);
        assert!(within_answer_limit("fetch", fits).is_ok());
        let status = within_answer_limit("fetch", answer(MAX_ANSWER_BYTES)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("answer to fetch")
                && status.message().contains(&MAX_ANSWER_BYTES.to_string()),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_pattern_loses_the_topics_the_member_may_not_describe() {
        let public = |t: &str| t != "secret";
        // Every match describable: the pattern stays.
        let mut s = sub(&[], Some("orders.*"));
        hide_undescribable(&mut s, &view(), public).unwrap();
        assert_eq!(s, sub(&[], Some("orders.*")));
        // One match hidden: the describable matches, by name, with the literal names.
        let mut s = sub(&["orders"], Some(".*"));
        hide_undescribable(&mut s, &view(), public).unwrap();
        assert_eq!(s, sub(&["orders", "orders.eu"], None));
        // No pattern: unchanged; a bad pattern: refused.
        let mut s = sub(&["secret"], None);
        hide_undescribable(&mut s, &view(), public).unwrap();
        assert_eq!(s, sub(&["secret"], None));
        assert!(hide_undescribable(&mut sub(&[], Some("(")), &view(), public).is_err());
    }
}
