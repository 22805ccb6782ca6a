//! What this node does with its peers' requests: the [`PeerHandler`] of the node-to-node
//! service ([`fjord_raft::peer`] decodes, encodes and delivers Raft messages to the groups).
//! Forwarded metadata writes, the controller's leader moves, the changes of a `--rebuild`,
//! the boot check's questions, a coordinator's reads of a partition led here
//! ([`crate::partition_read`]) and the node-level heartbeat. Its errors are [`ApiError`]s,
//! coded in [`crate::error`] like the client-facing service's.

use std::sync::Arc;

use fjord_meta::{MetaCommand, MetaResponse, NodeId};
use fjord_raft::GroupRegistry;
use fjord_raft::peer::PeerHandler;
use fjord_raft::peer::wire::{
    ChangeVoterReply, ChangeVoterRequest, IdentityReply, IdentityRequest, NodeHeartbeat,
    NodeHeartbeatReply, PartitionRead, PartitionReadReply, RebuildReply, RebuildRequest,
};

use crate::error::ApiError;
use crate::node::Node;

/// A controller's leader move goes only to a replica at most this many log entries behind
/// the leader (under load, a healthy follower lags by the entries in flight: a few). The
/// target waits for the rest before it takes over.
pub const MAX_TRANSFER_LAG_ENTRIES: u64 = 32;

/// The handler, from the node's first moments: the boot check's questions are answered
/// while the node itself is still starting; everything else is refused as unavailable until
/// it runs.
pub struct PeerService {
    slot: crate::NodeSlot,
    identity: Arc<crate::boot::IdentityService>,
    /// This node's id (its directory's, fixed for the process).
    node_id: NodeId,
}

impl PeerService {
    /// The handler of the node that `slot` will hold, whose directory is `identity`.
    pub fn new(slot: crate::NodeSlot, identity: Arc<crate::boot::IdentityService>) -> Self {
        let node_id = identity.identity().node_id;
        PeerService {
            slot,
            identity,
            node_id,
        }
    }

    /// The running node; a node still checking its data directory takes no group messages.
    fn node(&self) -> Result<&Arc<Node>, ApiError> {
        self.slot
            .get()
            .ok_or_else(|| ApiError::Starting(self.identity.identity().node_id))
    }
}

impl PeerHandler for PeerService {
    type Error = ApiError;

    fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn groups(&self) -> Result<&GroupRegistry, ApiError> {
        Ok(self.node()?.groups())
    }

    async fn meta_write(&self, cmd: MetaCommand) -> Result<MetaResponse, ApiError> {
        self.node()?.local_meta_write(cmd).await
    }

    async fn move_leader(&self, group: u64, to: NodeId) -> Result<(), ApiError> {
        let Some(handle) = self.node()?.partition(group) else {
            return Err(ApiError::NotAPartition(group));
        };
        // A transfer only works to a voter that holds the leader's whole log when the
        // transfer reaches it; a learner, or a replica far behind (a node just restarted,
        // under load), would ignore it, and the group would stall until an election timeout.
        handle
            .may_transfer(to, MAX_TRANSFER_LAG_ENTRIES)
            .map_err(|source| ApiError::TransferRefused { group, to, source })?;
        handle
            .transfer_leader(to)
            .await
            .map_err(|source| ApiError::TransferFailed { group, to, source })
    }

    async fn change_voter(&self, req: ChangeVoterRequest) -> Result<ChangeVoterReply, ApiError> {
        crate::rebuild::change_voter(self.node()?, req.group_id, req.node, req.promote).await
    }

    async fn check_identity(&self, req: IdentityRequest) -> Result<IdentityReply, ApiError> {
        Ok(self.identity.answer(&req).await?)
    }

    async fn rebuild(&self, req: RebuildRequest) -> Result<RebuildReply, ApiError> {
        let learner_groups = crate::rebuild::take_back(self.node()?, req).await?;
        Ok(RebuildReply { learner_groups })
    }

    async fn read_partition(&self, req: PartitionRead) -> Result<PartitionReadReply, ApiError> {
        crate::partition_read::answer(self.node()?, req).await
    }

    fn heartbeat(&self, req: NodeHeartbeat) -> Result<NodeHeartbeatReply, ApiError> {
        Ok(self.node()?.answer_heartbeat(req))
    }
}
