//! [`PeerClient`]: the calls this node makes to one peer node, one typed method per RPC, over
//! the connection the [`PeerPool`] keeps to it. Each call is bounded by the timeout its caller
//! gives; every failure is a [`PeerError`].

use std::future::Future;
use std::time::Duration;

use fjord_meta::{MetaCommand, MetaResponse};
use fjord_proto::raft::raft_transport_client::RaftTransportClient;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::pool::{ConnectError, Lane, PeerPool};
use super::wire::{
    self, AppendRequest, AppendResponse, ChangeVoterReply, ChangeVoterRequest, DecodeError,
    EncodeError, IdentityReply, IdentityRequest, NodeHeartbeat, NodeHeartbeatReply, PartitionRead,
    PartitionReadReply, RebuildReply, RebuildRequest, RemoteError, Snapshot, SnapshotReply,
    TransferLeader, TransferLeaderReply, Vote, VoteReply,
};
use crate::{NodeId, TypeConfig};

/// The slowest rate at which a follower is expected to take in log entries (receive,
/// decode, write, fsync), for the deadlines of appends. openraft's RPC timeout is the
/// heartbeat interval, right for a heartbeat but not for an append of 64 batches (up to
/// 32 MiB) that a follower catching up receives: with that timeout alone, a follower that
/// fell behind under load could never catch up (every large append timed out and was sent
/// again). An append is due within the RPC timeout plus its bytes at this rate, after the
/// appends sent before it on the same stream (the follower takes them in order).
pub const APPEND_MIN_BYTES_PER_SEC: f64 = 8.0 * 1024.0 * 1024.0;

/// How long the follower may take to take in `bytes` of appends.
pub(super) fn work_time(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / APPEND_MIN_BYTES_PER_SEC)
}

/// The longest message a failed call's causes are added to.
const MAX_CAUSE_CHARS: usize = 1024;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No channel to the peer could be made (its address is invalid).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request could not be encoded (a bug).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("{rpc} to {addr}: no answer within {after:?}")]
    Timeout {
        rpc: &'static str,
        addr: String,
        after: Duration,
    },
    /// The peer answered with an error status, or could not be reached (UNAVAILABLE).
    #[error("{rpc} to {addr}: {message}")]
    Status {
        rpc: &'static str,
        addr: String,
        code: tonic::Code,
        message: String,
    },
    /// The answer does not decode as the one the RPC carries.
    #[error("{rpc} to {addr}: {source}")]
    Decode {
        rpc: &'static str,
        addr: String,
        #[source]
        source: DecodeError,
    },
    /// The peer's Raft refused the request (openraft's error, as its text).
    #[error("{rpc} to {addr}: {source}")]
    Raft {
        rpc: &'static str,
        addr: String,
        #[source]
        source: RemoteError,
    },
}

impl PeerError {
    /// The status code the peer answered with, if it answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            PeerError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The peer's own words: the message of its status or of its Raft's error, else this
    /// error's text.
    pub fn message(&self) -> String {
        match self {
            PeerError::Status { message, .. } => message.clone(),
            PeerError::Raft { source, .. } => source.message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the peer could not take the message now (not reachable, or it does not host
    /// the group yet): a sender backs off.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self.code(),
            Some(tonic::Code::Unavailable | tonic::Code::NotFound)
        ) || matches!(self, PeerError::Connect(_))
    }
}

/// One RPC to one peer, for its errors.
#[derive(Debug, Clone)]
pub(super) struct CallTo {
    rpc: &'static str,
    addr: String,
}

impl CallTo {
    pub(super) fn timeout(&self, after: Duration) -> PeerError {
        PeerError::Timeout {
            rpc: self.rpc,
            addr: self.addr.clone(),
            after,
        }
    }

    /// A failed call: the peer's status, or a local one (no connection) whose causes are
    /// added to its message, so that "tcp connect error" says why (a refused connection, a
    /// certificate the peer's CA did not issue).
    pub(super) fn status(&self, status: tonic::Status) -> PeerError {
        let mut message = status.message().to_string();
        let mut cause = std::error::Error::source(&status);
        while let Some(e) = cause {
            let text = e.to_string();
            if message.len() + text.len() > MAX_CAUSE_CHARS {
                break;
            }
            if message.is_empty() {
                message = text;
            } else if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = e.source();
        }
        PeerError::Status {
            rpc: self.rpc,
            addr: self.addr.clone(),
            code: status.code(),
            message,
        }
    }

    pub(super) fn undecodable(&self, source: DecodeError) -> PeerError {
        PeerError::Decode {
            rpc: self.rpc,
            addr: self.addr.clone(),
            source,
        }
    }

    pub(super) fn refused(&self, source: RemoteError) -> PeerError {
        PeerError::Raft {
            rpc: self.rpc,
            addr: self.addr.clone(),
            source,
        }
    }
}

/// The calls to the peer at one address (see the module doc of [`crate::peer`]).
pub struct PeerClient<'p> {
    pool: &'p PeerPool,
    addr: String,
    lane: Lane,
}

impl<'p> PeerClient<'p> {
    pub(super) fn new(pool: &'p PeerPool, addr: &str, lane: Lane) -> Self {
        PeerClient {
            pool,
            addr: addr.to_string(),
            lane,
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(super) fn transport(&self) -> Result<RaftTransportClient<Channel>, ConnectError> {
        self.pool.transport(&self.addr, self.lane)
    }

    /// The errors of an `rpc` call to this peer.
    pub(super) fn call_to(&self, rpc: &'static str) -> CallTo {
        CallTo {
            rpc,
            addr: self.addr.clone(),
        }
    }

    /// One unary call, bounded by `ttl`.
    async fn call<T, F, Fut>(&self, rpc: &'static str, ttl: Duration, f: F) -> Result<T, PeerError>
    where
        F: FnOnce(RaftTransportClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.transport()?;
        match tokio::time::timeout(ttl, f(client)).await {
            Err(_) => Err(self.call_to(rpc).timeout(ttl)),
            Ok(Err(status)) => Err(self.call_to(rpc).status(status)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// A Raft answer of type `T`: openraft's response, or its error.
    fn raft_answer<T: DeserializeOwned>(
        &self,
        rpc: &'static str,
        payload: &[u8],
    ) -> Result<T, PeerError> {
        wire::decode_answer::<T>(payload)
            .map_err(|e| self.call_to(rpc).undecodable(e))?
            .map_err(|e| self.call_to(rpc).refused(e))
    }

    // ---- Raft messages of a group ----

    /// AppendEntries (replication, heartbeats) of `group`, due within `ttl` plus its bytes'
    /// work time ([`APPEND_MIN_BYTES_PER_SEC`]).
    pub async fn append(
        &self,
        group: u64,
        to: NodeId,
        req: &AppendRequest,
        ttl: Duration,
    ) -> Result<AppendResponse, PeerError> {
        const RPC: &str = "Append";
        let payload = wire::encode_request(req)?;
        let ttl = ttl + work_time(payload.len());
        let msg = wire::raft_message(group, to, payload);
        let answer = self
            .call(RPC, ttl, |mut c| async move { c.append(msg).await })
            .await?;
        self.raft_answer(RPC, &answer.payload)
    }

    /// RequestVote of `group`.
    pub async fn vote(
        &self,
        group: u64,
        to: NodeId,
        req: &Vote,
        ttl: Duration,
    ) -> Result<VoteReply, PeerError> {
        const RPC: &str = "Vote";
        let msg = wire::raft_message(group, to, wire::encode_request(req)?);
        let answer = self
            .call(RPC, ttl, |mut c| async move { c.vote(msg).await })
            .await?;
        self.raft_answer(RPC, &answer.payload)
    }

    /// Pre-vote of `group`.
    pub async fn pre_vote(
        &self,
        group: u64,
        to: NodeId,
        req: &Vote,
        ttl: Duration,
    ) -> Result<VoteReply, PeerError> {
        const RPC: &str = "PreVote";
        let msg = wire::raft_message(group, to, wire::encode_request(req)?);
        let answer = self
            .call(RPC, ttl, |mut c| async move { c.pre_vote(msg).await })
            .await?;
        self.raft_answer(RPC, &answer.payload)
    }

    /// A whole snapshot of `group`, sent by the leader of `vote`.
    pub async fn snapshot(
        &self,
        group: u64,
        to: NodeId,
        vote: &openraft::alias::VoteOf<TypeConfig>,
        snapshot: &Snapshot,
        ttl: Duration,
    ) -> Result<SnapshotReply, PeerError> {
        const RPC: &str = "Snapshot";
        let payload = wire::encode_snapshot(vote, snapshot)?;
        let ttl = ttl + work_time(payload.len());
        let msg = wire::raft_message(group, to, payload);
        let answer = self
            .call(RPC, ttl, |mut c| async move { c.snapshot(msg).await })
            .await?;
        self.raft_answer(RPC, &answer.payload)
    }

    /// A leader transfer notice of `group`.
    pub async fn transfer_leader(
        &self,
        group: u64,
        to: NodeId,
        req: &TransferLeader,
        ttl: Duration,
    ) -> Result<TransferLeaderReply, PeerError> {
        const RPC: &str = "TransferLeader";
        let msg = wire::raft_message(group, to, wire::encode_request(req)?);
        let answer = self
            .call(
                RPC,
                ttl,
                |mut c| async move { c.transfer_leader(msg).await },
            )
            .await?;
        self.raft_answer(RPC, &answer.payload)
    }

    // ---- node to node ----

    /// A metadata command, to be applied by the peer if it leads the metadata group (it
    /// forwards it no further).
    pub async fn meta_write(
        &self,
        cmd: &MetaCommand,
        ttl: Duration,
    ) -> Result<MetaResponse, PeerError> {
        const RPC: &str = "MetaWrite";
        let msg = wire::group_message(fjord_meta::META_GROUP, wire::encode_meta_write(cmd)?);
        let answer = self
            .call(RPC, ttl, |mut c| async move { c.meta_write(msg).await })
            .await?;
        wire::decode_meta_response(&answer.payload).map_err(|e| self.call_to(RPC).undecodable(e))
    }

    /// Asks the peer, the leader of partition `group`, to hand its leadership to `to`.
    pub async fn move_leader(
        &self,
        group: u64,
        to: NodeId,
        ttl: Duration,
    ) -> Result<(), PeerError> {
        let msg = wire::group_message(group, wire::encode_move_leader(to)?);
        self.call("MoveLeader", ttl, |mut c| async move {
            c.move_leader(msg).await
        })
        .await
        .map(drop)
    }

    /// Asks the peer, the leader of a group, to make a node a learner or a voter again.
    pub async fn change_voter(
        &self,
        req: ChangeVoterRequest,
        ttl: Duration,
    ) -> Result<ChangeVoterReply, PeerError> {
        self.call("ChangeVoter", ttl, |mut c| async move {
            c.change_voter(fjord_proto::raft::ChangeVoterRequest::from(req))
                .await
        })
        .await
        .map(Into::into)
    }

    /// Asks what the peer knows of this node's data directory, or announces this start.
    pub async fn check_identity(
        &self,
        req: IdentityRequest,
        ttl: Duration,
    ) -> Result<IdentityReply, PeerError> {
        self.call("CheckIdentity", ttl, |mut c| async move {
            c.check_identity(fjord_proto::raft::IdentityRequest::from(req))
                .await
        })
        .await
        .map(Into::into)
    }

    /// Asks the peer, the metadata leader, to take a rebuilt node back as a learner.
    pub async fn rebuild(
        &self,
        req: RebuildRequest,
        ttl: Duration,
    ) -> Result<RebuildReply, PeerError> {
        self.call("Rebuild", ttl, |mut c| async move {
            c.rebuild(fjord_proto::raft::RebuildRequest::from(req))
                .await
        })
        .await
        .map(Into::into)
    }

    /// Reads the peer's replica of a partition, for a client request this node authorized.
    pub async fn read_partition(
        &self,
        req: PartitionRead,
        ttl: Duration,
    ) -> Result<PartitionReadReply, PeerError> {
        self.call("ReadPartition", ttl, |mut c| async move {
            c.read_partition(fjord_proto::raft::ReadPartitionRequest::from(req))
                .await
        })
        .await
        .map(Into::into)
    }

    /// The node-level heartbeat.
    pub async fn heartbeat(
        &self,
        req: NodeHeartbeat,
        ttl: Duration,
    ) -> Result<NodeHeartbeatReply, PeerError> {
        self.call("Heartbeat", ttl, |mut c| async move {
            c.heartbeat(fjord_proto::raft::NodeHeartbeat::from(req))
                .await
        })
        .await
        .map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local failure's causes are added to its message once each; a peer's own status
    /// (no cause) is passed on as it came.
    #[test]
    fn a_failed_call_says_why() {
        let call = CallTo {
            rpc: "Append",
            addr: "10.0.0.1:7100".into(),
        };
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(io));
        let e = call.status(status);
        assert_eq!(
            e.to_string(),
            "Append to 10.0.0.1:7100: tcp connect error: invalid peer certificate: UnknownIssuer"
        );
        let e = call.status(tonic::Status::unavailable("node 2 is starting"));
        assert_eq!(e.message(), "node 2 is starting");
    }
}
