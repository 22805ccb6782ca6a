//! The client against an in-process fake cluster: a few gRPC servers on port 0 sharing one
//! in-memory state that follows the API's documented rules (not-leader answers with hints,
//! idempotent sequences, CRC checks), with faults the tests switch on. It checks the
//! client's routing and retry behaviour end to end over real HTTP/2 connections; the real
//! server's behaviour is for the integration tests on real clusters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ::fjord_client::{
    Client, ClientConfig, ClientError, FetchOptions, ProducerConfig, ProducerRecord, ReadMode,
    StartFrom,
};
use bytes::Bytes;
use fjord_proto::v1::fjord_server::{Fjord, FjordServer};
use fjord_proto::v1::{
    AlterGroupConfigRequest, AlterGroupConfigResponse, CommitOffsetsRequest, CommitOffsetsResponse,
    DeleteGroupRequest, DeleteGroupResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DescribeGroupRequest, DescribeGroupResponse, FetchOffsetsRequest, FetchOffsetsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupHeartbeatRequest, GroupHeartbeatResponse,
    ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    ResetOffsetsRequest, ResetOffsetsResponse,
};
use fjord_proto::v1::{
    AlterTopicConfigRequest, AlterTopicConfigResponse, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicRequest, DeleteTopicResponse, DescribeTopicRequest, DescribeTopicResponse,
    FetchRequest, FetchResponse, FetchedBatch, InitProducerRequest, InitProducerResponse,
    ListTopicsRequest, ListTopicsResponse, MetadataRequest, MetadataResponse, Node, PartitionError,
    PartitionInfo, PartitionResult, ProduceErrorReason, ProduceRequest, ProduceResponse, TopicInfo,
};
use fjord_proto::{LEADER_ADDRESS_KEY, LEADER_ID_KEY};
use tonic::{Code, Request, Response, Status};

#[derive(Default)]
struct Partition {
    replicas: Vec<u64>,
    /// What Metadata says.
    reported_leader: u64,
    /// Who accepts produce and CP fetch.
    actual_leader: u64,
    batches: Vec<FetchedBatch>,
    next_offset: u64,
    /// Offsets below were removed (retention).
    log_start: u64,
    /// producer id → (next expected sequence, base sequence → base offset).
    sequences: HashMap<u64, (u32, HashMap<u32, u64>)>,
}

#[derive(Default)]
struct Faults {
    /// Append the next produce, then answer DEADLINE_EXCEEDED as if the ack timed out.
    lose_next_produce_ack: bool,
    /// With `lose_next_produce_ack`: once the ack was lost, answer the produces after it
    /// NOT_FOUND for the topic, as a restarted node whose metadata is behind would.
    topic_unknown_after_lost_ack: bool,
    /// Refuse the next produce as out of order.
    refuse_next_produce_sequence: bool,
    /// Refuse the next produce with FAILED_PRECONDITION and this reason.
    refuse_next_produce_with: Option<ProduceErrorReason>,
    /// The `timeout_ms` of each produce request, in order.
    produce_timeouts: Vec<u32>,
    /// Answer every Metadata with UNAVAILABLE (an election that does not end).
    metadata_unavailable: bool,
    /// Hold the next produce of a batch with this base sequence until another produce has
    /// been answered (at most 5 s): a server that proposes a later batch first.
    hold_sequence: Option<u32>,
    /// Answer every produce UNAVAILABLE (no leader hint), this long after it came.
    produce_unavailable_after: Option<std::time::Duration>,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<u64, String>,
    topics: BTreeMap<String, Vec<Partition>>,
    next_producer_id: u64,
    faults: Faults,
    /// (node, method, detail) of every call, in order.
    calls: Vec<(u64, &'static str, String)>,
    /// Counts answered produces, for `hold_sequence`.
    produces_answered: Option<tokio::sync::watch::Sender<u64>>,
}

type Shared = Arc<Mutex<State>>;

struct FakeNode {
    id: u64,
    state: Shared,
}

fn topic_info(name: &str, parts: &[Partition]) -> TopicInfo {
    TopicInfo {
        name: name.to_string(),
        replication_factor: parts.first().map_or(0, |p| p.replicas.len() as u32),
        partitions: parts
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionInfo {
                partition: i as u32,
                replicas: p.replicas.clone(),
                leader: p.reported_leader,
                leader_epoch: 1,
            })
            .collect(),
        config: None,
        effective: None,
    }
}

fn not_leader_status(leader: u64, address: &str) -> Status {
    let mut s = Status::unavailable("not the leader");
    s.metadata_mut()
        .insert(LEADER_ID_KEY, leader.to_string().parse().unwrap());
    s.metadata_mut()
        .insert(LEADER_ADDRESS_KEY, address.parse().unwrap());
    s
}

impl FakeNode {
    fn log(&self, state: &mut State, method: &'static str, detail: String) {
        state.calls.push((self.id, method, detail));
    }
}

#[tonic::async_trait]
impl Fjord for FakeNode {
    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let mut st = self.state.lock().unwrap();
        self.log(&mut st, "metadata", String::new());
        if st.faults.metadata_unavailable {
            return Err(Status::unavailable("electing a metadata leader"));
        }
        let wanted = request.into_inner().topics;
        Ok(Response::new(MetadataResponse {
            nodes: st
                .nodes
                .iter()
                .map(|(id, address)| Node {
                    id: *id,
                    address: address.clone(),
                })
                .collect(),
            metadata_leader: 1,
            replicas: None,
            topics: st
                .topics
                .iter()
                .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
                .map(|(n, p)| topic_info(n, p))
                .collect(),
        }))
    }

    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let req = request.into_inner();
        let mut st = self.state.lock().unwrap();
        self.log(&mut st, "create_topic", req.name.clone());
        if st.topics.contains_key(&req.name) {
            return Err(Status::already_exists(format!("topic {} exists", req.name)));
        }
        if !(1..=1024).contains(&req.partitions) {
            return Err(Status::invalid_argument("partitions must be 1 to 1024"));
        }
        let n = st.nodes.len() as u64;
        let parts: Vec<Partition> = (0..req.partitions as u64)
            .map(|i| {
                let leader = i % n + 1;
                Partition {
                    replicas: (0..n).map(|k| (i + k) % n + 1).collect(),
                    reported_leader: leader,
                    actual_leader: leader,
                    ..Default::default()
                }
            })
            .collect();
        let info = topic_info(&req.name, &parts);
        st.topics.insert(req.name, parts);
        Ok(Response::new(CreateTopicResponse { topic: Some(info) }))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        let mut st = self.state.lock().unwrap();
        self.log(&mut st, "delete_topic", name.clone());
        st.topics
            .remove(&name)
            .map(|_| Response::new(DeleteTopicResponse {}))
            .ok_or_else(|| Status::not_found(format!("topic {name} does not exist")))
    }

    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let st = self.state.lock().unwrap();
        Ok(Response::new(ListTopicsResponse {
            topics: st.topics.iter().map(|(n, p)| topic_info(n, p)).collect(),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let name = request.into_inner().name;
        let st = self.state.lock().unwrap();
        st.topics
            .get(&name)
            .map(|p| {
                Response::new(DescribeTopicResponse {
                    topic: Some(topic_info(&name, p)),
                })
            })
            .ok_or_else(|| Status::not_found(format!("topic {name} does not exist")))
    }

    async fn alter_topic_config(
        &self,
        _: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        Err(Status::unimplemented(
            "no topic configs in the fake cluster",
        ))
    }

    async fn init_producer(
        &self,
        _: Request<InitProducerRequest>,
    ) -> Result<Response<InitProducerResponse>, Status> {
        let mut st = self.state.lock().unwrap();
        st.next_producer_id += 1;
        let producer_id = st.next_producer_id;
        self.log(&mut st, "init_producer", producer_id.to_string());
        Ok(Response::new(InitProducerResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }

    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let req = request.into_inner();
        let unavailable = self.state.lock().unwrap().faults.produce_unavailable_after;
        if let Some(after) = unavailable {
            self.state
                .lock()
                .unwrap()
                .calls
                .push((self.id, "produce", "unavailable".into()));
            tokio::time::sleep(after).await;
            return Err(Status::unavailable("no leader (fault)"));
        }
        let held = {
            let mut st = self.state.lock().unwrap();
            let answered = st
                .produces_answered
                .get_or_insert_with(|| tokio::sync::watch::channel(0).0);
            let mut rx = answered.subscribe();
            match st.faults.hold_sequence {
                Some(s) if req.batches.iter().any(|b| b.base_sequence == s) => {
                    st.faults.hold_sequence = None;
                    let seen = *rx.borrow_and_update();
                    Some((rx, seen))
                }
                _ => None,
            }
        };
        if let Some((mut rx, seen)) = held {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                rx.wait_for(|n| *n > seen),
            )
            .await;
        }
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        if let Some(tx) = &st.produces_answered {
            tx.send_modify(|n| *n += 1);
        }
        st.faults.produce_timeouts.push(req.timeout_ms);
        let mut results = Vec::new();
        for b in req.batches {
            st.calls.push((
                self.id,
                "produce",
                format!(
                    "p{} pid{} seq{} n{}",
                    b.partition, b.producer_id, b.base_sequence, b.record_count
                ),
            ));
            if st.faults.topic_unknown_after_lost_ack && !st.faults.lose_next_produce_ack {
                return Err(Status::not_found(format!(
                    "topic {:?} does not exist",
                    req.topic
                )));
            }
            let parts = st
                .topics
                .get_mut(&req.topic)
                .ok_or_else(|| Status::not_found("no such topic"))?;
            let p = parts
                .get_mut(b.partition as usize)
                .ok_or_else(|| Status::not_found("no such partition"))?;
            let error = |code: Code, message: &str, leader_id: u64, leader_address: String| {
                PartitionResult {
                    partition: b.partition,
                    error: Some(PartitionError {
                        code: code as i32,
                        message: message.into(),
                        leader_id,
                        leader_address,
                        reason: 0,
                    }),
                    ..Default::default()
                }
            };
            if p.actual_leader != self.id {
                let address = st.nodes[&p.actual_leader].clone();
                results.push(error(
                    Code::Unavailable,
                    "not the leader",
                    p.actual_leader,
                    address,
                ));
                continue;
            }
            if fjord_proto::batch::decode(&b.records, b.crc32c).is_err() {
                results.push(error(Code::DataLoss, "crc mismatch", 0, String::new()));
                continue;
            }
            if let Some(reason) = st.faults.refuse_next_produce_with.take() {
                let mut refused = error(Code::FailedPrecondition, "refused", 0, String::new());
                if let Some(e) = refused.error.as_mut() {
                    e.reason = reason as i32;
                }
                results.push(refused);
                continue;
            }
            if std::mem::take(&mut st.faults.refuse_next_produce_sequence) {
                results.push(error(
                    Code::FailedPrecondition,
                    "sequence out of order",
                    0,
                    String::new(),
                ));
                continue;
            }
            let (expected, seen) = p.sequences.entry(b.producer_id).or_default();
            if b.producer_id != 0 {
                if let Some(&base_offset) = seen.get(&b.base_sequence) {
                    results.push(PartitionResult {
                        partition: b.partition,
                        base_offset,
                        record_count: b.record_count,
                        duplicate: true,
                        error: None,
                    });
                    continue;
                }
                if b.base_sequence != *expected {
                    results.push(error(
                        Code::FailedPrecondition,
                        "sequence out of order",
                        0,
                        String::new(),
                    ));
                    continue;
                }
                *expected = b.base_sequence + b.record_count;
                seen.insert(b.base_sequence, p.next_offset);
            }
            let base_offset = p.next_offset;
            p.batches.push(FetchedBatch {
                base_offset,
                record_count: b.record_count,
                crc32c: b.crc32c,
                records: b.records,
                append_time_ms: 1_000,
                offset_deltas: Vec::new(),
            });
            p.next_offset += u64::from(b.record_count);
            if std::mem::take(&mut st.faults.lose_next_produce_ack) {
                results.push(error(
                    Code::DeadlineExceeded,
                    "ack timed out",
                    0,
                    String::new(),
                ));
                continue;
            }
            results.push(PartitionResult {
                partition: b.partition,
                base_offset,
                record_count: b.record_count,
                duplicate: false,
                error: None,
            });
        }
        Ok(Response::new(ProduceResponse { results }))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let req = request.into_inner();
        let mut st = self.state.lock().unwrap();
        self.log(
            &mut st,
            "fetch",
            format!("p{} @{} read{}", req.partition, req.offset, req.read),
        );
        let parts = st
            .topics
            .get(&req.topic)
            .ok_or_else(|| Status::not_found("no such topic"))?;
        let p = parts
            .get(req.partition as usize)
            .ok_or_else(|| Status::not_found("no such partition"))?;
        if req.read == fjord_proto::v1::ReadMode::ReadCp as i32 && p.actual_leader != self.id {
            return Err(not_leader_status(
                p.actual_leader,
                &st.nodes[&p.actual_leader],
            ));
        }
        if !p.replicas.contains(&self.id) {
            return Err(Status::unavailable("no replica here"));
        }
        // As the real server: below the log start is out of range, and so is beyond the
        // high watermark for a CP read.
        if req.offset < p.log_start {
            return Err(Status::out_of_range("below the log start"));
        }
        if req.read == fjord_proto::v1::ReadMode::ReadCp as i32 && req.offset > p.next_offset {
            return Err(Status::out_of_range("beyond the high watermark"));
        }
        Ok(Response::new(FetchResponse {
            batches: p
                .batches
                .iter()
                .filter(|b| b.base_offset + u64::from(b.record_count) > req.offset.max(p.log_start))
                .cloned()
                .collect(),
            high_watermark: p.next_offset,
            log_start_offset: p.log_start,
            node_id: self.id,
        }))
    }

    // The fake cluster has no consumer groups.
    async fn find_coordinator(
        &self,
        _: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn group_heartbeat(
        &self,
        _: Request<GroupHeartbeatRequest>,
    ) -> Result<Response<GroupHeartbeatResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn commit_offsets(
        &self,
        _: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn fetch_offsets(
        &self,
        _: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn list_groups(
        &self,
        _: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn describe_group(
        &self,
        _: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn reset_offsets(
        &self,
        _: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn delete_group(
        &self,
        _: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn alter_group_config(
        &self,
        _: Request<AlterGroupConfigRequest>,
    ) -> Result<Response<AlterGroupConfigResponse>, Status> {
        Err(Status::unimplemented("no groups in the fake cluster"))
    }

    async fn delete_records(
        &self,
        _: Request<DeleteRecordsRequest>,
    ) -> Result<Response<DeleteRecordsResponse>, Status> {
        Err(Status::unimplemented("no deletion in the fake cluster"))
    }

    async fn list_offsets(
        &self,
        _: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("no offsets in the fake cluster"))
    }

    async fn create_user(
        &self,
        _: Request<fjord_proto::v1::CreateUserRequest>,
    ) -> Result<Response<fjord_proto::v1::CreateUserResponse>, Status> {
        Err(Status::unimplemented("no users in the fake cluster"))
    }

    async fn delete_user(
        &self,
        _: Request<fjord_proto::v1::DeleteUserRequest>,
    ) -> Result<Response<fjord_proto::v1::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("no users in the fake cluster"))
    }

    async fn list_users(
        &self,
        _: Request<fjord_proto::v1::ListUsersRequest>,
    ) -> Result<Response<fjord_proto::v1::ListUsersResponse>, Status> {
        Err(Status::unimplemented("no users in the fake cluster"))
    }

    async fn add_acl(
        &self,
        _: Request<fjord_proto::v1::AddAclRequest>,
    ) -> Result<Response<fjord_proto::v1::AddAclResponse>, Status> {
        Err(Status::unimplemented("no ACLs in the fake cluster"))
    }

    async fn remove_acl(
        &self,
        _: Request<fjord_proto::v1::RemoveAclRequest>,
    ) -> Result<Response<fjord_proto::v1::RemoveAclResponse>, Status> {
        Err(Status::unimplemented("no ACLs in the fake cluster"))
    }

    async fn list_acls(
        &self,
        _: Request<fjord_proto::v1::ListAclsRequest>,
    ) -> Result<Response<fjord_proto::v1::ListAclsResponse>, Status> {
        Err(Status::unimplemented("no ACLs in the fake cluster"))
    }
}

struct Cluster {
    state: Shared,
    addresses: Vec<String>,
}

impl Cluster {
    /// `n` fake nodes on ephemeral ports.
    async fn start(n: u64) -> Cluster {
        let state: Shared = Arc::default();
        let mut addresses = Vec::new();
        for id in 1..=n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            state.lock().unwrap().nodes.insert(id, address.clone());
            addresses.push(address);
            let incoming = futures::stream::unfold(listener, |l| async move {
                let conn = l.accept().await.map(|(s, _)| s);
                Some((conn, l))
            });
            let node = FakeNode {
                id,
                state: Arc::clone(&state),
            };
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(FjordServer::new(node))
                    .serve_with_incoming(incoming),
            );
        }
        Cluster { state, addresses }
    }

    fn client(&self, config: ClientConfig) -> Client {
        Client::connect(self.addresses.clone(), config).unwrap()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn calls(&self, method: &str) -> Vec<(u64, String)> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.1 == method)
                .map(|c| (c.0, c.2.clone()))
                .collect()
        })
    }
}

fn fast_retries() -> ClientConfig {
    ClientConfig {
        request_timeout_ms: 5_000,
        max_retries: 5,
        retry_backoff_ms_initial: 1,
        retry_backoff_ms_max: 5,
        ..Default::default()
    }
}

fn no_linger() -> ProducerConfig {
    ProducerConfig {
        linger_ms: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn produced_records_come_back_in_order_with_dense_offsets() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(fast_retries());
    let topic = client.create_topic("orders", 3, 3).await.unwrap();
    assert_eq!(topic.partitions.len(), 3);

    let producer = client
        .producer(
            "orders",
            ProducerConfig {
                linger_ms: 60_000,
                ..Default::default()
            },
        )
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..30u32 {
        let key = format!("user-{}", i % 5);
        let record = ProducerRecord::new(format!("v{i}")).with_key(key.clone());
        deliveries.push((key, i, producer.enqueue(record).await.unwrap()));
    }
    // With a long linger nothing is sent until the flush.
    producer.flush().await;
    let mut by_partition: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for (key, i, d) in deliveries {
        let at = d.await.unwrap();
        assert_eq!(
            at.partition,
            fjord_proto::partitioner::partition_for_key(key.as_bytes(), 3)
        );
        by_partition
            .entry(at.partition)
            .or_default()
            .push((at.offset, format!("v{i}")));
    }
    for (partition, acked) in &by_partition {
        let offsets: Vec<u64> = acked.iter().map(|a| a.0).collect();
        assert_eq!(
            offsets,
            (0..acked.len() as u64).collect::<Vec<_>>(),
            "partition {partition}"
        );
        let mut consumer = client.consumer(
            "orders",
            *partition,
            StartFrom::Beginning,
            FetchOptions::default(),
        );
        let records = consumer.poll().await.unwrap();
        let got: Vec<(u64, String)> = records
            .iter()
            .map(|r| (r.offset, String::from_utf8(r.value.to_vec()).unwrap()))
            .collect();
        assert_eq!(&got, acked);
        assert!(
            records.iter().all(|r| r.timestamp_ms == 1_000),
            "append time fills empty timestamps"
        );
        assert_eq!(consumer.position(), Some(acked.len() as u64));
    }
    // One batch per partition: the flush cut them, the linger did not.
    assert_eq!(cluster.calls("produce").len(), by_partition.len());
}

#[tokio::test]
async fn a_leader_hint_is_followed_without_a_metadata_round_trip() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 3).await.unwrap();
    // Metadata still names node 1, but node 2 took over.
    cluster.with(|s| s.topics.get_mut("t").unwrap()[0].actual_leader = 2);

    let producer = client.producer("t", no_linger()).unwrap();
    let at = producer.send(ProducerRecord::new("x")).await.unwrap();
    assert_eq!((at.partition, at.offset), (0, 0));
    let produces = cluster.calls("produce");
    assert_eq!(produces.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        produces[0].1, produces[1].1,
        "the retry is the same batch, same sequence"
    );
    assert_eq!(cluster.calls("metadata").len(), 1, "only the first lookup");

    // The hint was remembered: the next batch goes straight to node 2.
    producer.send(ProducerRecord::new("y")).await.unwrap();
    assert_eq!(cluster.calls("produce").last().unwrap().0, 2);

    // A CP fetch follows the hint carried in the status metadata.
    cluster.with(|s| s.topics.get_mut("t").unwrap()[0].actual_leader = 3);
    let r = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(r.records.len(), 2);
    assert_eq!(r.node_id, 3);
    let fetches: Vec<u64> = cluster.calls("fetch").iter().map(|c| c.0).collect();
    assert_eq!(fetches, [2, 3]);
}

#[tokio::test]
async fn a_timed_out_append_is_retried_as_a_duplicate_not_appended_twice() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    cluster.with(|s| s.faults.lose_next_produce_ack = true);

    let producer = client.producer("t", no_linger()).unwrap();
    let at = producer.send(ProducerRecord::new("once")).await.unwrap();
    assert_eq!(at.offset, 0);
    let at = producer.send(ProducerRecord::new("twice?")).await.unwrap();
    assert_eq!(at.offset, 1, "the duplicate did not take an offset");

    let produces = cluster.calls("produce");
    assert_eq!(
        produces.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(),
        ["p0 pid1 seq0 n1", "p0 pid1 seq0 n1", "p0 pid1 seq1 n1"]
    );
    let r = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap();
    let values: Vec<&[u8]> = r.records.iter().map(|r| &r.value[..]).collect();
    assert_eq!(values, [&b"once"[..], b"twice?"]);
}

#[tokio::test]
async fn a_topic_not_found_after_a_timed_out_attempt_is_an_unknown_outcome() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    cluster.with(|s| {
        s.faults.lose_next_produce_ack = true;
        s.faults.topic_unknown_after_lost_ack = true;
    });

    let producer = client.producer("t", no_linger()).unwrap();
    let e = producer
        .send(ProducerRecord::new("maybe"))
        .await
        .unwrap_err();
    assert!(
        e.is_outcome_unknown(),
        "the first attempt was appended: the NOT_FOUND of the second must not say it was \
         not: {e:?}"
    );
    assert!(e.to_string().contains("does not exist"), "{e}");
    let produces = cluster.calls("produce");
    assert_eq!(produces.len(), 2, "{produces:?}");
    // And it was indeed appended.
    cluster.with(|s| s.faults.topic_unknown_after_lost_ack = false);
    let r = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap();
    let values: Vec<&[u8]> = r.records.iter().map(|r| &r.value[..]).collect();
    assert_eq!(values, [&b"maybe"[..]]);
}

#[tokio::test]
async fn an_out_of_order_refusal_moves_the_partition_to_a_fresh_producer_id() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    let producer = client.producer("t", no_linger()).unwrap();
    producer.send(ProducerRecord::new("a")).await.unwrap();

    cluster.with(|s| s.faults.refuse_next_produce_sequence = true);
    let e = producer.send(ProducerRecord::new("b")).await.unwrap_err();
    assert!(matches!(e, ClientError::OutOfOrderSequence(_)), "{e:?}");
    assert!(!e.is_retryable());

    let at = producer.send(ProducerRecord::new("c")).await.unwrap();
    assert_eq!(at.offset, 1);
    let produces = cluster.calls("produce");
    assert_eq!(produces.last().unwrap().1, "p0 pid2 seq0 n1");
    assert_eq!(cluster.calls("init_producer").len(), 2);
}

#[tokio::test]
async fn a_sequence_reused_or_unknown_producer_refusal_is_not_called_out_of_order() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    let producer = client.producer("t", no_linger()).unwrap();
    producer.send(ProducerRecord::new("a")).await.unwrap();
    for reason in [
        ProduceErrorReason::SequenceReused,
        ProduceErrorReason::UnknownProducerId,
    ] {
        cluster.with(|s| s.faults.refuse_next_produce_with = Some(reason));
        let e = producer.send(ProducerRecord::new("b")).await.unwrap_err();
        assert!(
            matches!(e, ClientError::FailedPrecondition(_)),
            "{reason:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_request_timeout_over_the_server_s_produce_limit_asks_for_the_limit() {
    let cluster = Cluster::start(1).await;
    let config = ClientConfig {
        request_timeout_ms: 120_000,
        ..fast_retries()
    };
    let client = cluster.client(config);
    client.create_topic("t", 1, 1).await.unwrap();
    let producer = client.producer("t", no_linger()).unwrap();
    producer.send(ProducerRecord::new("a")).await.unwrap();
    assert_eq!(
        cluster.with(|s| s.faults.produce_timeouts.clone()),
        [60_000]
    );
}

#[tokio::test]
async fn an_ap_read_falls_back_to_another_replica() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 3).await.unwrap();
    client
        .producer("t", no_linger())
        .unwrap()
        .send(ProducerRecord::new("x"))
        .await
        .unwrap();

    // Node 1 (the leader) becomes unreachable: metadata now gives it a closed port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    cluster.with(|s| {
        s.nodes.insert(1, closed);
    });
    let client = Client::connect(cluster.addresses[1..].to_vec(), fast_retries()).unwrap();
    let ap = FetchOptions {
        read: ReadMode::Ap,
        ..Default::default()
    };
    let r = client.fetch("t", 0, 0, ap).await.unwrap();
    assert_eq!(r.records.len(), 1);
    assert_ne!(r.node_id, 1);
}

#[tokio::test]
async fn fatal_errors_are_typed_and_not_retried() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 2, 3).await.unwrap();

    let e = client.create_topic("t", 2, 3).await.unwrap_err();
    assert!(matches!(e, ClientError::AlreadyExists(_)), "{e:?}");
    let e = client.create_topic("u", 0, 3).await.unwrap_err();
    assert!(
        matches!(e, ClientError::InvalidArgument(ref m) if m.contains("1 to 1024")),
        "{e:?}"
    );
    assert_eq!(
        cluster.calls("create_topic").len(),
        3,
        "no retries of fatal errors"
    );

    let e = client
        .producer("missing", no_linger())
        .unwrap()
        .send(ProducerRecord::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::NotFound(_)), "{e:?}");
    let e = client
        .producer("t", no_linger())
        .unwrap()
        .send(ProducerRecord::new("x").with_partition(7))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::NotFound(_)), "{e:?}");
    let e = client
        .fetch("t", 9, 0, FetchOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::NotFound(_)), "{e:?}");

    client.delete_topic("t").await.unwrap();
    let e = client.describe_topic("t").await.unwrap_err();
    assert!(matches!(e, ClientError::NotFound(_)), "{e:?}");
    assert!(client.list_topics().await.unwrap().is_empty());
}

#[tokio::test]
async fn no_produce_retry_begins_after_the_delivery_timeout() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(ClientConfig {
        max_retries: 3,
        ..fast_retries()
    });
    client.create_topic("t", 1, 1).await.unwrap();
    // Each attempt is answered 20 ms after it came: past the 1 ms delivery timeout.
    cluster
        .with(|s| s.faults.produce_unavailable_after = Some(std::time::Duration::from_millis(20)));
    let producer = client
        .producer(
            "t",
            ProducerConfig {
                delivery_timeout_ms: 1,
                ..no_linger()
            },
        )
        .unwrap();
    let e = producer.send(ProducerRecord::new("x")).await.unwrap_err();
    assert!(e.is_outcome_unknown(), "sent, so perhaps appended: {e:?}");
    assert_eq!(
        cluster.calls("produce").len(),
        1,
        "one attempt, no retry after the delivery timeout (max_retries allows 3)"
    );
}

#[tokio::test]
async fn retries_stop_at_max_retries() {
    let cluster = Cluster::start(2).await;
    cluster.with(|s| s.faults.metadata_unavailable = true);
    let client = cluster.client(ClientConfig {
        max_retries: 3,
        ..fast_retries()
    });
    let e = client.metadata().await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable { .. }), "{e:?}");
    assert_eq!(
        cluster.calls("metadata").len(),
        4,
        "one attempt and three retries"
    );
    // Attempts rotated over the nodes.
    let nodes: Vec<u64> = cluster.calls("metadata").iter().map(|c| c.0).collect();
    assert!(nodes.contains(&1) && nodes.contains(&2), "{nodes:?}");
}

#[tokio::test]
async fn a_consumer_from_the_end_sees_only_new_records() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    let producer = client.producer("t", no_linger()).unwrap();
    for i in 0..3 {
        producer
            .send(ProducerRecord::new(format!("old{i}")))
            .await
            .unwrap();
    }
    let options = FetchOptions {
        max_wait_ms: 0,
        ..Default::default()
    };
    let mut consumer = client.consumer("t", 0, StartFrom::End, options);
    assert!(consumer.poll().await.unwrap().is_empty());
    assert_eq!(consumer.position(), Some(3));
    producer
        .send(ProducerRecord::new("new").with_header("h", Bytes::from_static(b"1")))
        .await
        .unwrap();
    let records = consumer.poll().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].offset, &records[0].value[..]), (3, &b"new"[..]));
    assert_eq!(
        records[0].headers,
        [("h".to_string(), Bytes::from_static(b"1"))]
    );
    assert_eq!(consumer.position(), Some(4));
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_transport_error() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let client = Client::connect(
        vec![closed.clone()],
        ClientConfig {
            max_retries: 1,
            ..fast_retries()
        },
    )
    .unwrap();
    let e = client.list_topics().await.unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains(&closed), "{e}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn consumers_start_at_the_log_start_when_early_records_were_removed() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    let producer = client.producer("t", no_linger()).unwrap();
    for i in 0..4 {
        producer
            .send(ProducerRecord::new(format!("r{i}")))
            .await
            .unwrap();
    }
    // Retention removed offsets 0 and 1: offset 0 is now out of range.
    cluster.with(|s| s.topics.get_mut("t").unwrap()[0].log_start = 2);
    let e = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::OffsetOutOfRange(_)), "{e:?}");

    let options = FetchOptions {
        max_wait_ms: 0,
        ..Default::default()
    };
    let mut from_start = client.consumer("t", 0, StartFrom::Beginning, options);
    let offsets: Vec<u64> = from_start
        .poll()
        .await
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, [2, 3]);

    let mut from_end = client.consumer("t", 0, StartFrom::End, options);
    assert!(from_end.poll().await.unwrap().is_empty());
    assert_eq!(from_end.position(), Some(4));

    // An explicit offset below the log start is the caller's to handle.
    let mut explicit = client.consumer("t", 0, StartFrom::Offset(1), options);
    assert!(matches!(
        explicit.poll().await,
        Err(ClientError::OffsetOutOfRange(_))
    ));
}

#[tokio::test]
async fn batches_overtaken_on_the_server_are_sent_again_in_order() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    let producer = client
        .producer(
            "t",
            ProducerConfig {
                max_batch_records: 1,
                max_in_flight_batches: 5,
                ..no_linger()
            },
        )
        .unwrap();
    // The first batch goes alone; then the window opens.
    producer.send(ProducerRecord::new("r0")).await.unwrap();
    // The server handles sequence 1 only after a later batch was refused for the gap.
    cluster.with(|s| s.faults.hold_sequence = Some(1));
    let mut deliveries = Vec::new();
    for i in 1..=4 {
        deliveries.push(
            producer
                .enqueue(ProducerRecord::new(format!("r{i}")))
                .await
                .unwrap(),
        );
    }
    let mut offsets = Vec::new();
    for d in deliveries {
        offsets.push(d.await.unwrap().offset);
    }
    assert_eq!(offsets, [1, 2, 3, 4], "acknowledged in send order");

    let produces: Vec<String> = cluster.calls("produce").into_iter().map(|c| c.1).collect();
    let sent_twice = produces
        .iter()
        .filter(|c| c.as_str() == "p0 pid1 seq2 n1")
        .count();
    assert_eq!(
        sent_twice, 2,
        "sequence 2 overtook sequence 1, was refused, and was sent again with the same sequence: {produces:?}"
    );
    assert_eq!(
        cluster.calls("init_producer").len(),
        1,
        "no new producer id"
    );
    let r = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap();
    let values: Vec<String> = r
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
        .collect();
    assert_eq!(values, ["r0", "r1", "r2", "r3", "r4"]);
}

#[tokio::test]
async fn a_lost_acknowledgement_inside_a_full_window_is_not_a_duplicate() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(fast_retries());
    client.create_topic("t", 1, 1).await.unwrap();
    let producer = client
        .producer(
            "t",
            ProducerConfig {
                max_batch_records: 1,
                ..no_linger()
            },
        )
        .unwrap();
    producer.send(ProducerRecord::new("r0")).await.unwrap();
    cluster.with(|s| s.faults.lose_next_produce_ack = true);
    let mut deliveries = Vec::new();
    for i in 1..=20 {
        deliveries.push(
            producer
                .enqueue(ProducerRecord::new(format!("r{i}")))
                .await
                .unwrap(),
        );
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, i as u64 + 1);
    }
    let r = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(r.records.len(), 21, "nothing appended twice");
    assert!(
        r.records
            .iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as u64 && r.value == format!("r{i}").as_bytes())
    );
}
