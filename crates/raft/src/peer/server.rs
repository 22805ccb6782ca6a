//! The receiving side: [`PeerServer`] is the `RaftTransport` gRPC service. It decodes each
//! message into its [`wire`] type, hands Raft messages to the groups ([`super::deliver`]) and
//! every other request to the node's [`PeerHandler`], and encodes the answers. A failure
//! becomes the handler's error type, which its crate turns into the status (one mapping, the
//! handler's: the server here makes no status of its own).

use std::future::Future;

use fjord_meta::{MetaCommand, MetaResponse};
use fjord_proto::raft as pb;
use fjord_proto::raft::raft_transport_server::{RaftTransport, RaftTransportServer};
use futures::future;
use futures::stream::{BoxStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::MAX_RAFT_MESSAGE_BYTES;
use super::deliver;
use super::wire::{
    self, ChangeVoterReply, ChangeVoterRequest, DecodeError, EncodeError, IdentityReply,
    IdentityRequest, NodeHeartbeat, NodeHeartbeatReply, PartitionRead, PartitionReadReply,
    RaftRequest, RebuildReply, RebuildRequest, RpcKind,
};
use crate::group::GroupRegistry;
use crate::handle::GroupError;
use crate::{AnyGroup, NodeId};

/// Why an inbound message could not be handled, before or after its handler.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("group {0} is not hosted on this node")]
    UnknownGroup(u64),
    /// The message does not decode as the request its RPC carries.
    #[error(transparent)]
    Decode(#[from] DecodeError),
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
    /// A Raft request meant for another node reached this one: the sender's address for that
    /// node reaches this node (its `--peers` edited, an address reused). Answering it would
    /// let this node count as two voters.
    #[error(
        "a message of group {group} for node {to} reached node {this}: the sender's address \
         for node {to} reaches node {this} (check --peers)"
    )]
    Misdirected {
        group: u64,
        to: NodeId,
        this: NodeId,
    },
    /// The answer could not be encoded (a bug).
    #[error("group {group}: {source}")]
    Encode {
        group: u64,
        #[source]
        source: EncodeError,
    },
}

/// What a node does with its peers' requests (every one but the Raft messages, which go to
/// [`PeerHandler::groups`]). Adding a node-to-node message: a type in [`wire`], a method on
/// [`super::PeerClient`], a method here, and the RPC in `proto/raft.proto`.
pub trait PeerHandler: Send + Sync + 'static {
    /// The handler's failures; each answers its request with the status its crate maps it
    /// to. A [`DispatchError`] becomes one.
    type Error: From<DispatchError> + Into<Status> + Send;

    /// This node's id: Raft requests meant for another node are refused.
    fn node_id(&self) -> NodeId;

    /// The groups Raft messages go to; an error while this node takes none (it is starting).
    fn groups(&self) -> Result<&GroupRegistry, Self::Error>;

    /// A metadata command forwarded by a peer: applied only if this node leads the metadata
    /// group (no second hop, so forwards cannot loop).
    fn meta_write(
        &self,
        cmd: MetaCommand,
    ) -> impl Future<Output = Result<MetaResponse, Self::Error>> + Send;

    /// The controller asks this node, the leader of partition `group`, to hand it to `to`.
    fn move_leader(
        &self,
        group: u64,
        to: NodeId,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes a node a learner of a group this node leads, or a voter again.
    fn change_voter(
        &self,
        req: ChangeVoterRequest,
    ) -> impl Future<Output = Result<ChangeVoterReply, Self::Error>> + Send;

    /// What this node knows of a peer's data directory (answered also while starting).
    fn check_identity(
        &self,
        req: IdentityRequest,
    ) -> impl Future<Output = Result<IdentityReply, Self::Error>> + Send;

    /// On the metadata leader: takes a rebuilt node back as a learner.
    fn rebuild(
        &self,
        req: RebuildRequest,
    ) -> impl Future<Output = Result<RebuildReply, Self::Error>> + Send;

    /// A read of this node's replica of a partition, for a client request the asking node
    /// authorized itself (this service trusts its peers).
    fn read_partition(
        &self,
        req: PartitionRead,
    ) -> impl Future<Output = Result<PartitionReadReply, Self::Error>> + Send;

    /// A peer's node-level heartbeat.
    fn heartbeat(&self, req: NodeHeartbeat) -> Result<NodeHeartbeatReply, Self::Error>;
}

/// The `RaftTransport` service over a [`PeerHandler`].
pub struct PeerServer<H> {
    handler: H,
}

impl<H: PeerHandler> PeerServer<H> {
    /// The gRPC service, with fjord's message size limits.
    pub fn service(handler: H) -> RaftTransportServer<Self> {
        RaftTransportServer::new(PeerServer { handler })
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }

    /// Refuses a Raft request meant for another node (`to` 0: not said).
    fn addressed_here(&self, group: u64, to: NodeId) -> Result<(), H::Error> {
        let this = self.handler.node_id();
        if to != 0 && to != this {
            return Err(DispatchError::Misdirected { group, to, this }.into());
        }
        Ok(())
    }

    /// This node's replica of `group`.
    fn group(&self, group: u64) -> Result<AnyGroup, H::Error> {
        self.handler
            .groups()?
            .get(group)
            .ok_or(DispatchError::UnknownGroup(group).into())
    }

    /// A Raft message of `kind`: decoded, delivered to its group, answered.
    async fn raft(
        &self,
        kind: RpcKind,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        let msg = req.into_inner();
        let group = msg.group_id;
        let answer = async {
            self.addressed_here(group, msg.to)?;
            let g = self.group(group)?;
            let req = RaftRequest::decode(kind, &msg.payload).map_err(DispatchError::from)?;
            let answer = deliver::deliver(&g, group, req).await?;
            answer
                .encode()
                .map_err(|source| DispatchError::Encode { group, source }.into())
        };
        let payload = answer.await.map_err(status::<H>)?;
        Ok(Response::new(wire::group_message(group, payload)))
    }
}

fn status<H: PeerHandler>(e: H::Error) -> Status {
    e.into()
}

fn undecodable<H: PeerHandler>(e: DecodeError) -> Status {
    status::<H>(DispatchError::Decode(e).into())
}

#[tonic::async_trait]
impl<H: PeerHandler> RaftTransport for PeerServer<H> {
    type StreamAppendStream = BoxStream<'static, Result<pb::GroupMessage, Status>>;

    /// Every message of the stream is of the first one's group; the stream ends at the first
    /// that is not, at one that does not decode, at a transport error, and after an answer
    /// that does not encode (as an error).
    async fn stream_append(
        &self,
        req: Request<Streaming<pb::GroupMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let mut input = req.into_inner();
        let Some(first) = input.message().await? else {
            return Ok(Response::new(futures::stream::empty().boxed()));
        };
        let group = first.group_id;
        self.addressed_here(group, first.to).map_err(status::<H>)?;
        let rest = input
            .take_while(move |m| future::ready(matches!(m, Ok(m) if m.group_id == group)))
            .filter_map(|m| future::ready(m.ok().map(|m| m.payload)));
        let requests = futures::stream::once(future::ready(first.payload))
            .chain(rest)
            .scan((), move |_, bytes| {
                future::ready(match wire::decode_append(&bytes) {
                    Ok(req) => Some(req),
                    Err(e) => {
                        tracing::warn!(group, error = %e, "undecodable append in a replication stream: ending it");
                        None
                    }
                })
            })
            .boxed();
        let g = self.group(group).map_err(status::<H>)?;
        let results = deliver::stream_append(&g, requests).scan(false, move |failed, r| {
            if *failed {
                return future::ready(None);
            }
            let out = match wire::encode_stream_result(&r) {
                Ok(payload) => Ok(wire::group_message(group, payload)),
                Err(source) => {
                    *failed = true;
                    Err(status::<H>(DispatchError::Encode { group, source }.into()))
                }
            };
            future::ready(Some(out))
        });
        Ok(Response::new(results.boxed()))
    }

    async fn append(
        &self,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        self.raft(RpcKind::Append, req).await
    }
    async fn vote(
        &self,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        self.raft(RpcKind::Vote, req).await
    }
    async fn pre_vote(
        &self,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        self.raft(RpcKind::PreVote, req).await
    }
    async fn snapshot(
        &self,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        self.raft(RpcKind::Snapshot, req).await
    }
    async fn transfer_leader(
        &self,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        self.raft(RpcKind::TransferLeader, req).await
    }

    async fn meta_write(
        &self,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        let msg = req.into_inner();
        let cmd = wire::decode_meta_write(&msg.payload).map_err(undecodable::<H>)?;
        let resp = self.handler.meta_write(cmd).await.map_err(status::<H>)?;
        let payload = wire::encode_meta_response(&resp).map_err(|source| {
            status::<H>(
                DispatchError::Encode {
                    group: msg.group_id,
                    source,
                }
                .into(),
            )
        })?;
        Ok(Response::new(wire::group_message(msg.group_id, payload)))
    }

    async fn move_leader(
        &self,
        req: Request<pb::GroupMessage>,
    ) -> Result<Response<pb::GroupMessage>, Status> {
        let msg = req.into_inner();
        let to = wire::decode_move_leader(&msg.payload).map_err(undecodable::<H>)?;
        self.handler
            .move_leader(msg.group_id, to)
            .await
            .map_err(status::<H>)?;
        Ok(Response::new(wire::group_message(msg.group_id, Vec::new())))
    }

    async fn change_voter(
        &self,
        req: Request<pb::ChangeVoterRequest>,
    ) -> Result<Response<pb::ChangeVoterReply>, Status> {
        let reply = self.handler.change_voter(req.into_inner().into()).await;
        Ok(Response::new(reply.map_err(status::<H>)?.into()))
    }

    async fn check_identity(
        &self,
        req: Request<pb::IdentityRequest>,
    ) -> Result<Response<pb::IdentityReply>, Status> {
        let reply = self.handler.check_identity(req.into_inner().into()).await;
        Ok(Response::new(reply.map_err(status::<H>)?.into()))
    }

    async fn rebuild(
        &self,
        req: Request<pb::RebuildRequest>,
    ) -> Result<Response<pb::RebuildReply>, Status> {
        let reply = self.handler.rebuild(req.into_inner().into()).await;
        Ok(Response::new(reply.map_err(status::<H>)?.into()))
    }

    async fn read_partition(
        &self,
        req: Request<pb::ReadPartitionRequest>,
    ) -> Result<Response<pb::ReadPartitionReply>, Status> {
        let reply = self.handler.read_partition(req.into_inner().into()).await;
        Ok(Response::new(reply.map_err(status::<H>)?.into()))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::NodeHeartbeat>,
    ) -> Result<Response<pb::NodeHeartbeatReply>, Status> {
        let reply = self.handler.heartbeat(req.into_inner().into());
        Ok(Response::new(reply.map_err(status::<H>)?.into()))
    }
}
