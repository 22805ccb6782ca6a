//! openraft's side of the client: [`GroupNetworkFactory`] gives openraft, for one group, a
//! [`GroupNetwork`] per target node, which sends the group's Raft messages through a
//! [`PeerClient`] and turns a [`PeerError`] into the error openraft expects (an unreachable
//! peer, which it backs off from, or a network error).

use std::future::Future;
use std::sync::Arc;

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

use super::client::{PeerClient, PeerError};
use super::pool::PeerPool;
use super::stream::{Opening, opening};
use crate::log_store::PurgeMark;
use crate::{NodeId, TypeConfig};

/// Gives openraft, for one group, a client per target node.
pub struct GroupNetworkFactory {
    group: u64,
    pool: Arc<PeerPool>,
    purged: PurgeMark,
}

impl GroupNetworkFactory {
    /// `purged`: how far the group's log on this node is purged (its log store's
    /// [`PurgeMark`]), which ends a replication stream openraft has given up.
    pub fn new(group: u64, pool: Arc<PeerPool>, purged: PurgeMark) -> Self {
        GroupNetworkFactory {
            group,
            pool,
            purged,
        }
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
            purged: self.purged.clone(),
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
    purged: PurgeMark,
}

type NetErr = RPCError<TypeConfig>;

impl GroupNetwork {
    /// The target, where it is now.
    fn peer(&self) -> PeerClient<'_> {
        self.pool
            .peer(&self.pool.address_of(self.target, &self.member_addr))
    }

    /// openraft's error for a failed call: a peer that cannot take the message now
    /// (unreachable, or the group is not there yet) is backed off from; anything else is a
    /// network error.
    fn error(&self, e: PeerError) -> NetErr {
        let text = AnyError::error(format!("node {} group {}: {e}", self.target, self.group));
        if e.is_unreachable() {
            RPCError::Unreachable(Unreachable::new(&text))
        } else {
            RPCError::Network(NetworkError::new(&text))
        }
    }
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = Vec<u8>;

    /// Pipelined replication over one HTTP/2 stream (see [`super::stream`]). A lone request
    /// (a heartbeat: openraft's heartbeats are one-request streams) goes as one unary call,
    /// which costs the peer far less than a stream.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, NetErr>>, NetErr>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let ttl = option.hard_ttl();
            let (first, rest) = match opening(input).await {
                Opening::Empty => return Ok(futures::stream::empty().boxed()),
                Opening::Lone(first) => {
                    let prev = first.prev_log_id;
                    let last = first.entries.last().map(|e| e.log_id()).or(prev);
                    let result = self
                        .peer()
                        .append(self.group, self.target, &first, ttl)
                        .await
                        .map(|r| r.into_stream_result(prev, last))
                        .map_err(|e| self.error(e));
                    return Ok(futures::stream::once(futures::future::ready(result)).boxed());
                }
                Opening::Stream(first, rest) => (first, rest),
            };
            let Some(results) = self
                .peer()
                .stream_append(
                    self.group,
                    self.target,
                    first,
                    rest,
                    self.purged.clone(),
                    ttl,
                )
                .await
                .map_err(|e| self.error(e))?
            else {
                // A given-up session's request: nothing sent; openraft takes up its newer one.
                return Ok(futures::stream::empty().boxed());
            };
            let this: &GroupNetwork = self;
            Ok(results.map(move |r| r.map_err(|e| this.error(e))).boxed())
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, NetErr> {
        let r = self
            .peer()
            .append(self.group, self.target, &rpc, option.hard_ttl())
            .await;
        r.map_err(|e| self.error(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, NetErr> {
        let r = self
            .peer()
            .vote(self.group, self.target, &rpc, option.hard_ttl())
            .await;
        r.map_err(|e| self.error(e))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, NetErr> {
        let r = self
            .peer()
            .pre_vote(self.group, self.target, &rpc, option.hard_ttl())
            .await;
        r.map_err(|e| self.error(e))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let peer = self.peer();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = peer.snapshot(self.group, self.target, &vote, &snapshot, option.hard_ttl()) => {
                r.map_err(|e| match self.error(e) {
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
        let r = self
            .peer()
            .transfer_leader(self.group, self.target, &req, option.hard_ttl())
            .await;
        r.map_err(|e| self.error(e))
    }
}
