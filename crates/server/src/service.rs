//! The client API (`fjord.v1.Fjord`): conversion between prost types and the node's
//! operations happens here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use fjord_meta::{MetaCommand, MetaResponse, Topic};
use fjord_proto::v1::fjord_server::Fjord;
use fjord_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::coordinator::{Answer, Op};
use crate::data;
use crate::error::{ApiError, Invalid};
use crate::group_wire;
use crate::live::{self, LiveSet};
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

pub struct ClientService {
    pub node: Arc<Node>,
}

/// The client API of a node that may still be starting: every request waits for nothing and
/// is refused as unavailable ([`ApiError::Starting`]) until the node runs, then goes to its
/// [`ClientService`].
pub struct StartingClientService {
    pub slot: crate::NodeSlot,
    pub id: u64,
}

impl StartingClientService {
    fn running(&self) -> Result<ClientService, Status> {
        match self.slot.get() {
            // A rebuilding node's metadata is empty until the metadata group's log reached
            // it: an answer from it would say that no topic exists.
            Some(node) if node.is_meta_behind() => Err(ApiError::Rebuilding(self.id).into()),
            Some(node) => Ok(ClientService { node: node.clone() }),
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
                    self.running()?.$name(req).await
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
}

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
        let req = req.into_inner();
        if let Some(w) = &req.leader_wait {
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
        let mut topics = Vec::new();
        for t in view.state.topics.values() {
            if req.topics.is_empty() || req.topics.iter().any(|n| n == &t.name) {
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
        let req = req.into_inner();
        not_internal(&req.name, "create")?;
        let cmd = MetaCommand::CreateTopicWithConfig {
            name: req.name.clone(),
            partitions: req.partitions,
            replication_factor: req.replication_factor,
            config: topic_wire::config_from_wire(req.config)?,
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
        let req = req.into_inner();
        not_internal(&req.name, "delete")?;
        Self::meta_result(
            self.node
                .meta_write(MetaCommand::DeleteTopic {
                    name: req.name.clone(),
                })
                .await?,
        )?;
        // Answer once this node's own view agrees, so its next answers do not show the topic.
        self.wait_for_local_view(|s| s.topic(&req.name).is_none())
            .await;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _req: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let view = self.node.view();
        Ok(Response::new(ListTopicsResponse {
            topics: view
                .state
                .topics
                .values()
                .map(|t| topic_info(&self.node, t))
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        req: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let req = req.into_inner();
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
        let req = req.into_inner();
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
        let produce = crate::wire::Produce::try_from(req.into_inner())?;
        not_internal(&produce.topic, "produce to")?;
        let results = data::produce(&self.node, produce).await?;
        Ok(Response::new(ProduceResponse {
            results: results.into_iter().map(PartitionResult::from).collect(),
        }))
    }

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let fetch = crate::wire::Fetch::try_from(req.into_inner())?;
        Ok(Response::new(data::fetch(&self.node, fetch).await?.into()))
    }

    async fn delete_records(
        &self,
        req: Request<DeleteRecordsRequest>,
    ) -> Result<Response<DeleteRecordsResponse>, Status> {
        let req = crate::wire::DeleteRecords::try_from(req.into_inner())?;
        not_internal(&req.topic, "delete records of")?;
        let log_start_offset = data::delete_records(&self.node, req).await?;
        Ok(Response::new(DeleteRecordsResponse { log_start_offset }))
    }

    async fn list_offsets(
        &self,
        req: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let req = crate::wire::ListOffsets::try_from(req.into_inner())?;
        Ok(Response::new(
            data::list_offsets(&self.node, req).await?.into(),
        ))
    }

    async fn find_coordinator(
        &self,
        req: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let group = req.into_inner().group;
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
        let host = crate::tls::remote_addr(&req)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let topics = crate::coordinator::topics_view(&self.node.view().state);
        let req = req.into_inner();
        let wait_ms = req.wait_ms.unwrap_or(0);
        let hb = group_wire::heartbeat_request(req, &topics, host)?;
        match self
            .node
            .coordinator()
            .call(&self.node, Op::Heartbeat { req: hb, wait_ms })
            .await?
        {
            Answer::Heartbeat(a) => Ok(Response::new(group_wire::heartbeat_response(a, &topics))),
            other => Err(unexpected(other)),
        }
    }

    async fn commit_offsets(
        &self,
        req: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
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
        let topics = crate::coordinator::topics_view(&self.node.view().state);
        let (group, who, tps) = group_wire::fetch_request(req.into_inner(), &topics)?;
        let op = Op::Fetch { group, who, tps };
        match self.node.coordinator().call(&self.node, op).await? {
            Answer::Offsets(o) => Ok(Response::new(FetchOffsetsResponse {
                offsets: group_wire::committed_offsets(&o, &topics),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_groups(
        &self,
        req: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
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
                Some(l) => out.groups.extend(l),
                None => out.missing_partitions.push(p),
            }
        }
        Ok(Response::new(out))
    }

    async fn describe_group(
        &self,
        req: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let group = req.into_inner().group;
        match self
            .node
            .coordinator()
            .call(&self.node, Op::Describe(group))
            .await?
        {
            Answer::Described(d) => {
                let topics = crate::coordinator::topics_view(&self.node.view().state);
                let mut described = group_wire::describe_response(&d, &topics);
                crate::lag::fill(&self.node, &mut described.offsets).await;
                Ok(Response::new(described))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn reset_offsets(
        &self,
        req: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        let req = req.into_inner();
        let topics = crate::coordinator::topics_view(&self.node.view().state);
        let (to, topic) = group_wire::reset_request(&req, &topics)?;
        let op = Op::Reset {
            group: req.group,
            to,
            topic,
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
        let group = req.into_inner().group;
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
}

fn unexpected(_: Answer) -> Status {
    ApiError::UnexpectedGroupAnswer {
        to: "a group request",
    }
    .into()
}
