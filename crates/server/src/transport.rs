//! The node-to-node gRPC service: Raft messages of every group, forwarded metadata writes,
//! the controller's leader moves, and the node-level heartbeat. Its errors are [`ApiError`]s,
//! coded in [`crate::error`] like the client-facing service's.

use std::sync::Arc;

use fjord_proto::raft::raft_transport_server::RaftTransport;
use fjord_proto::raft::{
    ChangeVoterReply, ChangeVoterRequest, GroupMessage, IdentityReply, IdentityRequest,
    NodeHeartbeat, NodeHeartbeatReply, RebuildReply, RebuildRequest,
};
use fjord_raft::codec;
use fjord_raft::network::RpcKind;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::node::Node;

/// A controller's leader move goes only to a replica at most this many log entries behind
/// the leader (under load, a healthy follower lags by the entries in flight: a few). The
/// target waits for the rest before it takes over.
pub const MAX_TRANSFER_LAG_ENTRIES: u64 = 32;

pub struct TransportService {
    pub slot: crate::NodeSlot,
    pub identity: Arc<crate::boot::IdentityService>,
}

impl TransportService {
    /// The running node; a node still checking its data directory takes no group messages.
    fn node(&self) -> Result<&Arc<Node>, Status> {
        self.slot
            .get()
            .ok_or_else(|| ApiError::Starting(self.identity.identity().node_id).into())
    }

    async fn dispatch(
        &self,
        kind: RpcKind,
        req: Request<GroupMessage>,
    ) -> Result<Response<GroupMessage>, Status> {
        let msg = req.into_inner();
        let payload = self
            .node()?
            .registry
            .dispatch(kind, msg.group_id, &msg.payload)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(GroupMessage {
            group_id: msg.group_id,
            payload: payload.into(),
        }))
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    type StreamAppendStream = BoxStream<'static, Result<GroupMessage, Status>>;

    async fn stream_append(
        &self,
        req: Request<Streaming<GroupMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let mut input = req.into_inner();
        let Some(first) = input.message().await? else {
            return Ok(Response::new(futures::stream::empty().boxed()));
        };
        let group = first.group_id;
        // Every message of the stream is of the first one's group; the stream ends at the
        // first that is not, or at a transport error.
        let rest = input
            .take_while(move |m| futures::future::ready(matches!(m, Ok(m) if m.group_id == group)))
            .filter_map(|m| futures::future::ready(m.ok().map(|m| m.payload)));
        let requests = futures::stream::once(futures::future::ready(first.payload))
            .chain(rest)
            .boxed();
        let results = self
            .node()?
            .registry
            .stream_append(group, requests)
            .map_err(ApiError::from)?;
        Ok(Response::new(
            results
                .map(move |payload| match payload {
                    Ok(payload) => Ok(GroupMessage {
                        group_id: group,
                        payload: payload.into(),
                    }),
                    Err(e) => Err(ApiError::from(e).into()),
                })
                .boxed(),
        ))
    }

    async fn append(&self, req: Request<GroupMessage>) -> Result<Response<GroupMessage>, Status> {
        self.dispatch(RpcKind::Append, req).await
    }
    async fn vote(&self, req: Request<GroupMessage>) -> Result<Response<GroupMessage>, Status> {
        self.dispatch(RpcKind::Vote, req).await
    }
    async fn pre_vote(&self, req: Request<GroupMessage>) -> Result<Response<GroupMessage>, Status> {
        self.dispatch(RpcKind::PreVote, req).await
    }
    async fn snapshot(&self, req: Request<GroupMessage>) -> Result<Response<GroupMessage>, Status> {
        self.dispatch(RpcKind::Snapshot, req).await
    }
    async fn transfer_leader(
        &self,
        req: Request<GroupMessage>,
    ) -> Result<Response<GroupMessage>, Status> {
        self.dispatch(RpcKind::TransferLeader, req).await
    }

    async fn check_identity(
        &self,
        req: Request<IdentityRequest>,
    ) -> Result<Response<IdentityReply>, Status> {
        self.identity
            .answer(&req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| ApiError::from(e).into())
    }

    async fn rebuild(
        &self,
        req: Request<RebuildRequest>,
    ) -> Result<Response<RebuildReply>, Status> {
        let node = self.node()?;
        let learner_groups = crate::rebuild::take_back(node, req.into_inner()).await?;
        Ok(Response::new(RebuildReply { learner_groups }))
    }

    async fn change_voter(
        &self,
        req: Request<ChangeVoterRequest>,
    ) -> Result<Response<ChangeVoterReply>, Status> {
        let node = self.node()?;
        let req = req.into_inner();
        Ok(Response::new(
            crate::rebuild::change_voter(node, req.group_id, req.node, req.promote).await?,
        ))
    }

    async fn heartbeat(
        &self,
        req: Request<NodeHeartbeat>,
    ) -> Result<Response<NodeHeartbeatReply>, Status> {
        Ok(Response::new(self.node()?.liveness.serve(req.into_inner())))
    }

    async fn meta_write(
        &self,
        req: Request<GroupMessage>,
    ) -> Result<Response<GroupMessage>, Status> {
        let msg = req.into_inner();
        let cmd: fjord_meta::MetaCommand =
            postcard::from_bytes(&msg.payload).map_err(|source| ApiError::Undecodable {
                what: "metadata command",
                source,
            })?;
        let resp = self.node()?.local_meta_write(cmd).await?;
        Ok(Response::new(GroupMessage {
            group_id: msg.group_id,
            payload: codec::encode(&resp, "metadata response")
                .map_err(ApiError::from)?
                .into(),
        }))
    }

    async fn move_leader(
        &self,
        req: Request<GroupMessage>,
    ) -> Result<Response<GroupMessage>, Status> {
        let msg = req.into_inner();
        let to: u64 =
            postcard::from_bytes(&msg.payload).map_err(|source| ApiError::Undecodable {
                what: "leader move",
                source,
            })?;
        let group = msg.group_id;
        match self.node()?.registry.partition(group) {
            Some(handle) => {
                // A transfer only works to a voter that holds the leader's whole log when the
                // transfer reaches it; a learner, or a replica far behind (a node just
                // restarted, under load), would ignore it, and the group would stall until an
                // election timeout.
                handle
                    .may_transfer(to, MAX_TRANSFER_LAG_ENTRIES)
                    .map_err(|source| ApiError::TransferRefused { group, to, source })?;
                handle
                    .transfer_leader(to)
                    .await
                    .map_err(|source| ApiError::TransferFailed { group, to, source })?;
                Ok(Response::new(GroupMessage {
                    group_id: group,
                    payload: Default::default(),
                }))
            }
            _ => Err(ApiError::NotAPartition(group).into()),
        }
    }
}
