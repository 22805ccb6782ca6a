//! The multi-group Raft transport.
//!
//! Outbound: [`PeerPool`] keeps **one gRPC channel (one HTTP/2 connection) per peer node**,
//! shared by every group on this node; [`GroupNetworkFactory`] hands openraft a per-group,
//! per-target client that tags each message with its group id. How a channel is made is
//! injected ([`Connector`]), so tests can run whole clusters over a simulated network.
//!
//! Inbound: the server's `RaftTransport` service passes each message to
//! [`GroupRegistry::dispatch`](crate::group::GroupRegistry::dispatch), which finds the group
//! and hands the decoded message to its Raft.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::raft::GroupMessage;
use fjord_proto::raft::raft_transport_client::RaftTransportClient;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use openraft::AnyError;
use openraft::BasicNode;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::{NodeId, TypeConfig};

/// How long a replication stream stays open with nothing to send.
pub const STREAM_IDLE: Duration = Duration::from_secs(1);

/// The slowest rate at which a follower is expected to take in log entries (receive,
/// decode, write, fsync), for the deadlines of appends. openraft's RPC timeout is the
/// heartbeat interval, right for a heartbeat but not for an append of 64 batches (up to
/// 32 MiB) that a follower catching up receives: with that timeout alone, a follower that
/// fell behind under load could never catch up (every large append timed out and was sent
/// again). An append is due within the RPC timeout plus its bytes at this rate, after the
/// appends sent before it on the same stream (the follower takes them in order).
pub const APPEND_MIN_BYTES_PER_SEC: f64 = 8.0 * 1024.0 * 1024.0;

/// How long the follower may take to take in `bytes` of appends.
fn work_time(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / APPEND_MIN_BYTES_PER_SEC)
}

/// Largest Raft message accepted or sent, in bytes (an append of `max_payload_entries`
/// batches of at most the produce limit each fits).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 256 << 20;

/// Makes the channel to a peer address. Injected so that a simulated network can replace TCP.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, addr: &str) -> Result<Channel, ConnectError>;
}

/// Why no channel to a peer could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid peer address {addr:?}: {source}")]
    InvalidAddress {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The endpoint of a peer at `addr` (`host:port`), before fjord's settings.
pub fn peer_endpoint(addr: &str) -> Result<Endpoint, ConnectError> {
    Endpoint::from_shared(format!("http://{addr}")).map_err(|source| ConnectError::InvalidAddress {
        addr: addr.to_string(),
        source,
    })
}

/// Plain TCP, HTTP/2 keep-alives so a dead peer is noticed and a healed one reconnected.
#[derive(Debug, Default, Clone)]
pub struct TcpConnector;

fn tcp_endpoint(addr: &str) -> Result<Endpoint, ConnectError> {
    Ok(peer_endpoint(addr)?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true))
}

impl Connector for TcpConnector {
    fn connect(&self, addr: &str) -> Result<Channel, ConnectError> {
        Ok(tcp_endpoint(addr)?.connect_lazy())
    }
}

/// Plain TCP from a fixed local address, so that a fault proxy in front of a peer can tell
/// which node a connection comes from (the fault harness's loopback mode).
#[derive(Debug, Clone)]
pub struct SourceBoundTcpConnector(pub std::net::IpAddr);

impl Connector for SourceBoundTcpConnector {
    fn connect(&self, addr: &str) -> Result<Channel, ConnectError> {
        Ok(tcp_endpoint(addr)?
            .local_address(Some(self.0))
            .connect_lazy())
    }
}

/// One channel per peer address, shared by all groups; and a second one for the node-level
/// heartbeats, so that they never wait behind the groups' messages (HTTP/2 flow control, the
/// peer's per-connection concurrency limit): a heartbeat queued behind a burst of group
/// traffic would make a busy peer look dead.
///
/// It also holds the node's address book: where each peer node is now (as registered in the
/// metadata, else as configured). A group's membership records each member's address from
/// when the group was formed; a node that registered again at a new address would never be
/// reached by the groups formed before, so every message goes to the address book's entry for
/// its target first, and to the membership's only for a node the book does not know.
pub struct PeerPool {
    connector: Arc<dyn Connector>,
    // Short critical sections (a map lookup), no await inside.
    channels: Mutex<HashMap<String, Channel>>,
    heartbeat_channels: Mutex<HashMap<String, Channel>>,
    // Read on every message, replaced when the metadata's addresses change: a short std lock.
    addresses: std::sync::RwLock<HashMap<NodeId, String>>,
}

impl PeerPool {
    pub fn new(connector: Arc<dyn Connector>) -> Arc<Self> {
        Arc::new(PeerPool {
            connector,
            channels: Mutex::new(HashMap::new()),
            heartbeat_channels: Mutex::new(HashMap::new()),
            addresses: std::sync::RwLock::new(HashMap::new()),
        })
    }

    /// Replaces the address book (the peers' current addresses), if it changed.
    pub fn set_addresses(&self, peers: &std::collections::BTreeMap<NodeId, String>) {
        let same = {
            let book = self.addresses.read().unwrap();
            book.len() == peers.len() && peers.iter().all(|(n, a)| book.get(n) == Some(a))
        };
        if !same {
            *self.addresses.write().unwrap() = peers.iter().map(|(n, a)| (*n, a.clone())).collect();
        }
    }

    /// Where `node` is now: the address book's entry, else `known` (a membership's).
    pub fn address_of(&self, node: NodeId, known: &str) -> String {
        self.addresses
            .read()
            .unwrap()
            .get(&node)
            .cloned()
            .unwrap_or_else(|| known.to_string())
    }

    fn cached(
        &self,
        map: &Mutex<HashMap<String, Channel>>,
        addr: &str,
    ) -> Result<Channel, ConnectError> {
        let mut map = map.lock().unwrap();
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = self.connector.connect(addr)?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The channel to `addr`, made on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, ConnectError> {
        self.cached(&self.channels, addr)
    }

    /// A transport client to `addr`, with fjord's message size limits.
    pub fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, ConnectError> {
        Ok(RaftTransportClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    /// A transport client to `addr` on the heartbeat connection.
    pub fn heartbeat_client(
        &self,
        addr: &str,
    ) -> Result<RaftTransportClient<Channel>, ConnectError> {
        Ok(RaftTransportClient::new(
            self.cached(&self.heartbeat_channels, addr)?,
        ))
    }
}

/// The kinds of message the transport carries for a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    Append,
    Vote,
    PreVote,
    Snapshot,
    TransferLeader,
}

/// Gives openraft, for one group, a client per target node.
pub struct GroupNetworkFactory {
    group: u64,
    pool: Arc<PeerPool>,
}

impl GroupNetworkFactory {
    pub fn new(group: u64, pool: Arc<PeerPool>) -> Self {
        GroupNetworkFactory { group, pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupNetwork {
        GroupNetwork {
            group: self.group,
            target,
            member_addr: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// One group's link to one target node.
pub struct GroupNetwork {
    group: u64,
    target: NodeId,
    /// The target's address in the group's membership: used only when the address book does
    /// not know the target ([`PeerPool::address_of`]).
    member_addr: String,
    pool: Arc<PeerPool>,
}

impl GroupNetwork {
    /// Where the target is now.
    fn addr(&self) -> String {
        self.pool.address_of(self.target, &self.member_addr)
    }
}

type NetErr = RPCError<TypeConfig>;

fn unreachable(msg: impl std::fmt::Display) -> NetErr {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(msg.to_string())))
}

fn network(msg: impl std::fmt::Display) -> NetErr {
    RPCError::Network(NetworkError::new(&AnyError::error(msg.to_string())))
}

impl GroupNetwork {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: RpcKind,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, NetErr> {
        let addr = self.addr();
        let mut client = self.pool.client(&addr).map_err(unreachable)?;
        let msg = GroupMessage {
            group_id: self.group,
            payload: codec::encode(req, "raft request").map_err(network)?.into(),
        };
        let ttl = match kind {
            RpcKind::Append => ttl + work_time(msg.payload.len()),
            _ => ttl,
        };
        let fut = async move {
            match kind {
                RpcKind::Append => client.append(msg).await,
                RpcKind::Vote => client.vote(msg).await,
                RpcKind::PreVote => client.pre_vote(msg).await,
                RpcKind::Snapshot => client.snapshot(msg).await,
                RpcKind::TransferLeader => client.transfer_leader(msg).await,
            }
        };
        let resp = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(network(format!(
                    "{kind:?} to node {} ({}) for group {} timed out after {ttl:?}",
                    self.target, addr, self.group
                )));
            }
            Ok(Err(status)) => {
                return Err(status_error(self.target, &addr, self.group, status));
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: codec::WireResult<Resp> =
            codec::decode(&resp.payload, "raft response").map_err(network)?;
        result.map_err(network)
    }
}

/// When the answers to the requests of a replication stream that await theirs are due,
/// oldest first, and a wake-up for the answer reader when one is added.
#[derive(Default)]
struct InFlight {
    // Short critical sections (a push, a pop, a peek), no await inside.
    due: Mutex<Due>,
    added: Notify,
}

#[derive(Default)]
struct Due {
    /// When each awaited answer is due.
    answers: VecDeque<Instant>,
    /// When the follower should be done with the requests sent so far, at the slowest
    /// expected rate (each request's work starts once the previous one's is done).
    work_done: Option<Instant>,
}

impl InFlight {
    /// Records a request of `bytes` sent now: its answer is due within `ttl` after the
    /// follower has had time for it and every request before it. Returns when.
    fn push(&self, bytes: usize, ttl: Duration) -> Instant {
        let now = Instant::now();
        let mut d = self.due.lock().unwrap();
        let start = d.work_done.map_or(now, |w| w.max(now));
        let done = start + work_time(bytes);
        d.work_done = Some(done);
        d.answers.push_back(done + ttl);
        drop(d);
        self.added.notify_one();
        done + ttl
    }
    fn oldest(&self) -> Option<Instant> {
        self.due.lock().unwrap().answers.front().copied()
    }
    fn pop(&self) {
        self.due.lock().unwrap().answers.pop_front();
    }
}

fn status_error(target: NodeId, addr: &str, group: u64, status: tonic::Status) -> NetErr {
    match status.code() {
        // Not reachable, or the group does not exist there (yet): back off.
        tonic::Code::Unavailable | tonic::Code::NotFound => unreachable(format!(
            "node {target} ({addr}) group {group}: {}",
            status.message()
        )),
        _ => network(format!("node {target} group {group}: {status}")),
    }
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = Vec<u8>;

    /// Pipelined replication over one HTTP/2 stream: requests go out as openraft produces
    /// them, without waiting for the answers, which come back in order. Each answer is due
    /// within the RPC timeout of its request; a late one ends the stream with an error (a
    /// stalled or cut-off follower looks the same as with one RPC at a time).
    ///
    /// The stream is opened only once there is a request to send, and closed after
    /// [`STREAM_IDLE`] without one: an idle group holds no stream on its peers' connections.
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, NetErr>>, NetErr>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let Some(first) = input.next().await else {
                return Ok(futures::stream::empty().boxed());
            };
            let ttl = option.hard_ttl();
            // A lone request (a heartbeat: openraft's heartbeats are one-request streams)
            // goes as one unary call, which costs the peer far less than a stream.
            if let Some(None) = input.next().now_or_never() {
                let prev = first.prev_log_id;
                let last = first.entries.last().map(|e| e.log_id()).or(prev);
                let result = self
                    .call::<_, AppendEntriesResponse<TypeConfig>>(RpcKind::Append, &first, ttl)
                    .await
                    .map(|r| r.into_stream_result(prev, last));
                return Ok(futures::stream::once(futures::future::ready(result)).boxed());
            }
            let (group, target, addr) = (self.group, self.target, self.addr());
            let in_flight = Arc::new(InFlight::default());
            let sent = in_flight.clone();
            // The peer answers (sends its headers) once it has the first request whole.
            let (first_due_tx, first_due) = tokio::sync::oneshot::channel::<Instant>();
            let requests = futures::stream::unfold(
                (Some(first), input, Some(first_due_tx)),
                move |(first, mut input, mut first_due_tx)| {
                    let sent = sent.clone();
                    async move {
                        let req = match first {
                            Some(r) => r,
                            None => match tokio::time::timeout(STREAM_IDLE, input.next()).await {
                                Ok(Some(r)) => r,
                                // Idle, or openraft ended the session: close our side.
                                _ => return None,
                            },
                        };
                        let payload = match codec::encode(&req, "raft request") {
                            Ok(p) => p,
                            Err(e) => {
                                // Nothing more can go on this stream: close our side, as
                                // when idle; openraft opens a new one.
                                tracing::error!(group, error = %e, "ending a replication stream");
                                return None;
                            }
                        };
                        let msg = GroupMessage {
                            group_id: group,
                            payload: payload.into(),
                        };
                        let due = sent.push(msg.payload.len(), ttl);
                        if let Some(tx) = first_due_tx.take() {
                            let _ = tx.send(due);
                        }
                        Some((msg, (None, input, first_due_tx)))
                    }
                },
            );
            let mut client = self.pool.client(&addr).map_err(unreachable)?;
            let opened = async {
                let answers = client.stream_append(requests);
                tokio::pin!(answers);
                // Until the first request is encoded its deadline is unknown: the RPC timeout
                // from now bounds that part.
                let due = tokio::select! {
                    r = &mut answers => return Some(r),
                    due = first_due => due.unwrap_or_else(|_| Instant::now() + ttl),
                    _ = tokio::time::sleep(ttl) => return None,
                };
                tokio::time::timeout_at(due, answers).await.ok()
            };
            let answers = match opened.await {
                None => {
                    return Err(network(format!(
                        "stream append to node {target} ({addr}) for group {group}: no answer \
                         in time (RPC timeout {ttl:?}, plus the first append's bytes at \
                         {APPEND_MIN_BYTES_PER_SEC} bytes/s)"
                    )));
                }
                Some(r) => r,
            };
            let answers = match answers {
                Err(status) => return Err(status_error(target, &addr, group, status)),
                Ok(r) => r.into_inner(),
            };
            let results = futures::stream::unfold(Some(answers), move |answers| {
                let in_flight = in_flight.clone();
                let addr = addr.clone();
                async move {
                    let mut answers = answers?;
                    let next = loop {
                        match in_flight.oldest() {
                            Some(due) => match tokio::time::timeout_at(due, answers.next()).await {
                                Ok(next) => break next,
                                Err(_) => {
                                    let e = network(format!(
                                        "append to node {target} ({addr}) for group \
                                             {group} timed out after {ttl:?}"
                                    ));
                                    return Some((Err(e), None));
                                }
                            },
                            None => tokio::select! {
                                _ = in_flight.added.notified() => continue,
                                next = answers.next() => break next,
                            },
                        }
                    };
                    let msg = match next? {
                        Ok(msg) => msg,
                        Err(status) => {
                            return Some((Err(status_error(target, &addr, group, status)), None));
                        }
                    };
                    in_flight.pop();
                    match codec::decode::<codec::WireResult<StreamAppendResult<TypeConfig>>>(
                        &msg.payload,
                        "stream append result",
                    ) {
                        Ok(Ok(result)) => Some((Ok(result), Some(answers))),
                        Ok(Err(fatal)) => Some((Err(network(fatal)), None)),
                        Err(e) => Some((Err(network(e)), None)),
                    }
                }
            });
            Ok(results.boxed())
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, NetErr> {
        self.call(RpcKind::Append, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, NetErr> {
        self.call(RpcKind::Vote, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, NetErr> {
        self.call(RpcKind::PreVote, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call::<_, SnapshotResponse<TypeConfig>>(RpcKind::Snapshot, &req, option.hard_ttl()) => {
                r.map_err(|e| match e {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Timeout(t) => StreamingError::Timeout(t),
                    other => StreamingError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
                })
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, NetErr> {
        self.call(RpcKind::TransferLeader, &req, option.hard_ttl())
            .await
    }
}
