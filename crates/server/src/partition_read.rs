//! Node-to-node reads of a partition (`ReadPartition` in `proto/raft.proto`, served on the
//! peer port only): what a group coordinator needs of a partition another node leads, asked
//! with this node's identity (its peer certificate under TLS), never a client's.
//!
//! - A reset ([`crate::coordinator`]) asks the leader of a partition this node holds no
//!   replica of for its bounds (log start, high watermark), and a reset by time asks it for
//!   the first offset at or after the time, found after a ReadIndex (as `ListOffsets` CP
//!   would).
//! - DescribeGroup's lag in time ([`crate::lag`]) asks the leader for its high watermark and
//!   the timestamp of the record at the committed offset.
//! - An offset commit past the high watermark the coordinator knows asks the leader for its
//!   high watermark alone.
//!
//! **Authorization stays where the client's request arrived**: the node that received it
//! checks the requester's rights (read on the group and the topics a reset or a commit moves;
//! read on a topic before its lag is read) before it asks; the receiver checks no client identity, as
//! the peer port serves peers only. Bounded: [`READ_TIMEOUT`] per call on the asking side,
//! [`SERVE_TIMEOUT`] on the answering side, and each read is at most a few batches of the
//! log ([`crate::lag::PROBE_BATCHES`], and the time search's own limit).

use std::time::Duration;

use fjord_meta::NodeId;
use fjord_raft::peer::PeerError;
use fjord_raft::peer::wire::{PartitionRead, PartitionReadReply};

use crate::error::{ApiError, NoLeaderCause, Subject};
use crate::node::Node;

/// How long the asking node waits for an answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the answering node works on one read (a ReadIndex, waiting for its own write of
/// the records below the high watermark, the read) before it answers UNAVAILABLE.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks `leader` to read its replica of the partition `of` names, for a client request this
/// node has authorized. Its failures are `of`'s "no leader, retry" errors naming the node.
pub async fn ask(
    node: &Node,
    leader: NodeId,
    of: Subject,
    req: PartitionRead,
) -> Result<PartitionReadReply, ApiError> {
    let Some(addr) = node.peer_address_of(leader) else {
        return Err(ApiError::no_leader(
            of,
            NoLeaderCause::AddressUnknown { node: leader },
        ));
    };
    node.peer(&addr)
        .read_partition(req, READ_TIMEOUT)
        .await
        .map_err(|e| match e {
            PeerError::Timeout { after, .. } => ApiError::no_leader(
                of,
                NoLeaderCause::PeerSilent {
                    node: leader,
                    within: after,
                },
            ),
            PeerError::Status { message, .. } => ApiError::no_leader(
                of,
                NoLeaderCause::PeerRefused {
                    node: leader,
                    message,
                },
            ),
            PeerError::Connect(e) => ApiError::Connect(e),
            PeerError::Encode(e) => ApiError::Encode(e),
            other @ (PeerError::Decode { .. } | PeerError::Raft { .. }) => {
                ApiError::BadForwardedAnswer(other)
            }
        })
}

/// Answers a peer's read of this node's replica, within [`SERVE_TIMEOUT`].
pub async fn answer(node: &Node, req: PartitionRead) -> Result<PartitionReadReply, ApiError> {
    let group = req.group_id;
    match tokio::time::timeout(SERVE_TIMEOUT, read(node, req)).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::no_leader(
            Subject::Group(group),
            NoLeaderCause::ReadTimedOut {
                within: SERVE_TIMEOUT,
            },
        )),
    }
}

async fn read(node: &Node, req: PartitionRead) -> Result<PartitionReadReply, ApiError> {
    let group = req.group_id;
    let handle = node
        .partition(group)
        .ok_or(ApiError::NotAPartition(group))?;
    let mut reply = PartitionReadReply::default();
    if let Some(ts) = req.offset_for_time {
        handle
            .linearizable_read()
            .await
            .map_err(|e| crate::data::group_error(node, Subject::Group(group), e))?;
        reply.offset = crate::data::local_offset_for_time(node, &handle, ts).await?;
    }
    if let Some(offset) = req.record_time_at {
        reply.timestamp_ms = crate::lag::probe_replica(node, &handle, offset)
            .await?
            .oldest_ms;
    }
    let shared = handle.shared();
    reply.high_watermark = shared.high_watermark();
    reply.log_start_offset = shared.log_start_offset();
    Ok(reply)
}
