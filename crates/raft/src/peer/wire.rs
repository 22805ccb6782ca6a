//! The node-to-node messages as fjord's types, and how each travels on the wire.
//!
//! Two encodings, one per kind of message:
//! - **Group messages** (Raft messages, forwarded metadata writes, leader moves) travel as a
//!   `GroupMessage`: the group id and a postcard payload of fjord's or openraft's own types.
//!   A Raft answer is a [`WireResult`]: openraft's response, or the text of its error.
//! - **Node messages** (identity, rebuild, change voter, partition read, heartbeat) have their own protobuf
//!   messages in `proto/raft.proto`; the types here mirror them field for field, and the
//!   `From` conversions below are the only place the generated types are read or built.
//!
//! Encoding fails only for what postcard cannot represent ([`EncodeError`]); a payload that
//! does not decode is a [`DecodeError`]. Neither panics.

use bytes::Bytes;
use fjord_proto::raft as pb;
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::codec::{DecodeError, EncodeError};
use crate::codec::{decode, encode};
use crate::{NodeId, TypeConfig};

pub type AppendRequest = AppendEntriesRequest<TypeConfig>;
pub type AppendResponse = AppendEntriesResponse<TypeConfig>;
pub type StreamResult = StreamAppendResult<TypeConfig>;
pub type Vote = VoteRequest<TypeConfig>;
pub type VoteReply = VoteResponse<TypeConfig>;
pub type Snapshot = SnapshotOf<TypeConfig, Vec<u8>>;
pub type SnapshotReply = SnapshotResponse<TypeConfig>;
pub type TransferLeader = TransferLeaderRequest<TypeConfig>;
pub type TransferLeaderReply = TransferLeaderResponse<TypeConfig>;

/// The kinds of Raft message a group receives, one `RaftTransport` method each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    Append,
    Vote,
    PreVote,
    Snapshot,
    TransferLeader,
}

/// A Raft message for a group, decoded.
pub enum RaftRequest {
    Append(AppendRequest),
    Vote(Vote),
    PreVote(Vote),
    /// A whole snapshot, and the vote of the leader that sends it.
    Snapshot(VoteOf<TypeConfig>, Snapshot),
    TransferLeader(TransferLeader),
}

/// The answer to a [`RaftRequest`], of the same kind.
pub enum RaftAnswer {
    Append(WireResult<AppendResponse>),
    Vote(WireResult<VoteReply>),
    Snapshot(WireResult<SnapshotReply>),
    TransferLeader(WireResult<TransferLeaderReply>),
}

impl RaftRequest {
    /// Decodes the payload of a `kind` message.
    pub fn decode(kind: RpcKind, payload: &[u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "raft request";
        Ok(match kind {
            RpcKind::Append => RaftRequest::Append(decode(payload, WHAT)?),
            RpcKind::Vote => RaftRequest::Vote(decode(payload, WHAT)?),
            RpcKind::PreVote => RaftRequest::PreVote(decode(payload, WHAT)?),
            RpcKind::Snapshot => {
                let (vote, meta, snapshot): (
                    VoteOf<TypeConfig>,
                    SnapshotMetaOf<TypeConfig>,
                    Vec<u8>,
                ) = decode(payload, WHAT)?;
                RaftRequest::Snapshot(vote, Snapshot { meta, snapshot })
            }
            RpcKind::TransferLeader => RaftRequest::TransferLeader(decode(payload, WHAT)?),
        })
    }
}

/// The payload of a snapshot message: `(vote, meta, data)`.
pub fn encode_snapshot(
    vote: &VoteOf<TypeConfig>,
    snapshot: &Snapshot,
) -> Result<Vec<u8>, EncodeError> {
    encode(&(vote, &snapshot.meta, &snapshot.snapshot), "raft request")
}

/// The payload of any other Raft request.
pub fn encode_request<T: Serialize>(req: &T) -> Result<Vec<u8>, EncodeError> {
    encode(req, "raft request")
}

impl RaftAnswer {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        const WHAT: &str = "raft response";
        match self {
            RaftAnswer::Append(r) => encode(r, WHAT),
            RaftAnswer::Vote(r) => encode(r, WHAT),
            RaftAnswer::Snapshot(r) => encode(r, WHAT),
            RaftAnswer::TransferLeader(r) => encode(r, WHAT),
        }
    }
}

/// Decodes a Raft answer of type `T`.
pub fn decode_answer<T: DeserializeOwned>(payload: &[u8]) -> Result<WireResult<T>, DecodeError> {
    decode(payload, "raft response")
}

/// Decodes one request of a replication stream.
pub fn decode_append(payload: &[u8]) -> Result<AppendRequest, DecodeError> {
    decode(payload, "raft request")
}

/// Encodes one answer of a replication stream.
pub fn encode_stream_result(r: &WireResult<StreamResult>) -> Result<Vec<u8>, EncodeError> {
    encode(r, "stream append result")
}

/// Decodes one answer of a replication stream.
pub fn decode_stream_result(payload: &[u8]) -> Result<WireResult<StreamResult>, DecodeError> {
    decode(payload, "stream append result")
}

/// The error half of a Raft RPC's answer on the wire: the text of the peer's openraft error
/// (the requester takes the RPC as failed and only reports it). Serialized as a bare string,
/// so the answer encodes as postcard's `Result<_, String>`, as it always has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("{message}")]
pub struct RemoteError {
    pub message: String,
}

impl RemoteError {
    pub fn of(e: impl std::fmt::Display) -> Self {
        RemoteError {
            message: e.to_string(),
        }
    }
}

/// A Raft RPC's answer as the wire carries it.
pub type WireResult<T> = Result<T, RemoteError>;

/// A group message of `group` carrying `payload` (an answer, or one of fjord's own).
pub fn group_message(group: u64, payload: impl Into<Bytes>) -> pb::GroupMessage {
    pb::GroupMessage {
        group_id: group,
        payload: payload.into(),
        to: 0,
    }
}

/// A Raft request of `group` for node `to`, carrying `payload`.
pub fn raft_message(group: u64, to: NodeId, payload: impl Into<Bytes>) -> pb::GroupMessage {
    pb::GroupMessage {
        group_id: group,
        payload: payload.into(),
        to,
    }
}

// ---- forwarded metadata writes and leader moves (group messages of fjord's own types) ----

/// A metadata command forwarded to the metadata leader.
pub fn encode_meta_write(cmd: &fjord_meta::MetaCommand) -> Result<Vec<u8>, EncodeError> {
    encode(cmd, "metadata command")
}

pub fn decode_meta_write(payload: &[u8]) -> Result<fjord_meta::MetaCommand, DecodeError> {
    decode(payload, "metadata command")
}

pub fn encode_meta_response(r: &fjord_meta::MetaResponse) -> Result<Vec<u8>, EncodeError> {
    encode(r, "metadata response")
}

pub fn decode_meta_response(payload: &[u8]) -> Result<fjord_meta::MetaResponse, DecodeError> {
    decode(payload, "metadata response")
}

/// A leader move's payload: the node to hand the group's leadership to.
pub fn encode_move_leader(to: NodeId) -> Result<Vec<u8>, EncodeError> {
    encode(&to, "leader move")
}

pub fn decode_move_leader(payload: &[u8]) -> Result<NodeId, DecodeError> {
    decode(payload, "leader move")
}

// ---- node messages (their own protobuf messages) ----

/// `CheckIdentity`'s question: what the receiver knows of the asking node's data directory
/// (see `fjord_meta::identity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityRequest {
    /// The asking node.
    pub from: NodeId,
    /// 0: a question. Otherwise the asking node passed its check and starts as this
    /// generation of `incarnation`: the receiver stores that durably before it answers.
    pub announce_generation: u64,
    pub incarnation: u64,
}

/// `CheckIdentity`'s answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityReply {
    /// The answering node.
    pub from: NodeId,
    /// Its cluster id; 0: not known.
    pub cluster_id: u64,
    /// Whether it holds a cluster's state (metadata, or the roster of a cluster it formed).
    pub has_cluster: bool,
    /// Whether it records the asking node's directory; then the two fields after.
    pub recorded: bool,
    pub recorded_incarnation: u64,
    pub recorded_generation: u64,
    /// The answering node's own incarnation.
    pub incarnation: u64,
}

/// `Rebuild`: a node started with `--rebuild` asks the metadata leader to take it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildRequest {
    /// The node being rebuilt.
    pub node: NodeId,
    /// Its new directory's incarnation (never 0).
    pub incarnation: u64,
    /// The cluster id its peers reported.
    pub cluster_id: u64,
    pub address: String,
    /// The incarnation its peers reported for it (0: none).
    pub replaces: u64,
}

/// `Rebuild`'s answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReply {
    /// The groups the node is a learner of now (the metadata group included).
    pub learner_groups: u32,
}

/// `ChangeVoter`: asks a group's leader to make `node` a learner (`promote` false) or, once
/// it holds every committed entry, a voter again (`promote` true).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeVoterRequest {
    pub group_id: u64,
    pub node: NodeId,
    pub promote: bool,
}

/// `ChangeVoter`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeVoterReply {
    /// The node is where it was asked to be (a learner, or a voter).
    pub done: bool,
    /// What is left, when not done.
    pub detail: String,
}

/// `ReadPartition`: a read of the receiver's replica of a partition, for a client request
/// the asking node authorized itself. Each part is answered when asked (see
/// `proto/raft.proto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionRead {
    /// The partition's Raft group.
    pub group_id: u64,
    /// The first offset whose record's timestamp is at least this (ms), after a ReadIndex:
    /// the receiver must lead.
    pub offset_for_time: Option<i64>,
    /// The timestamp of the record at this offset, in the replica as it is.
    pub record_time_at: Option<u64>,
}

/// `ReadPartition`'s answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionReadReply {
    /// The replica's high watermark.
    pub high_watermark: u64,
    /// For `offset_for_time`: the offset found (`None`: no record that recent).
    pub offset: Option<u64>,
    /// For `record_time_at`: the record's timestamp (`None`: not there, or not stored yet).
    pub timestamp_ms: Option<i64>,
    /// The replica's log start offset.
    pub log_start_offset: u64,
}

/// A node's heartbeat to a peer (see `proto/raft.proto` and [`crate::liveness`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHeartbeat {
    pub from: NodeId,
    /// The version of the sender's claims to the receiver (never 0).
    pub version: u64,
    /// Whether `quiet` is the whole list of that version (else it is empty).
    pub full: bool,
    pub quiet: Vec<QuietGroup>,
    /// The nodes the sender's failure detector suspects now.
    pub suspects: Vec<NodeId>,
}

/// A claim: the sender leads the group in `term`, its log ends at `last_index`, all
/// committed, and it sends the group no heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuietGroup {
    pub group_id: u64,
    pub term: u64,
    pub last_index: u64,
}

/// The answer to a [`NodeHeartbeat`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHeartbeatReply {
    pub from: NodeId,
    /// The version of the sender's claims the receiver holds, or 0 to ask for the whole list.
    pub version: u64,
    /// Of a whole list, the groups the receiver did not accept as quiet.
    pub refused: Vec<u64>,
    /// The nodes the answering node's failure detector suspects now.
    pub suspects: Vec<NodeId>,
}

/// Both ways between a domain type and its protobuf message, field for field.
macro_rules! mirror {
    ($domain:ident <=> $proto:ident { $($field:ident),* $(,)? }) => {
        impl From<$domain> for pb::$proto {
            fn from(m: $domain) -> Self {
                pb::$proto { $($field: m.$field.into()),* }
            }
        }
        impl From<pb::$proto> for $domain {
            fn from(m: pb::$proto) -> Self {
                $domain { $($field: m.$field.into()),* }
            }
        }
    };
}

mirror!(IdentityRequest <=> IdentityRequest { from, announce_generation, incarnation });
mirror!(IdentityReply <=> IdentityReply {
    from,
    cluster_id,
    has_cluster,
    recorded,
    recorded_incarnation,
    recorded_generation,
    incarnation,
});
mirror!(RebuildRequest <=> RebuildRequest { node, incarnation, cluster_id, address, replaces });
mirror!(RebuildReply <=> RebuildReply { learner_groups });
mirror!(ChangeVoterRequest <=> ChangeVoterRequest { group_id, node, promote });
mirror!(ChangeVoterReply <=> ChangeVoterReply { done, detail });
mirror!(QuietGroup <=> QuietGroup { group_id, term, last_index });
mirror!(PartitionRead <=> ReadPartitionRequest { group_id, offset_for_time, record_time_at });
mirror!(PartitionReadReply <=> ReadPartitionReply {
    high_watermark,
    offset,
    timestamp_ms,
    log_start_offset,
});

impl From<NodeHeartbeat> for pb::NodeHeartbeat {
    fn from(m: NodeHeartbeat) -> Self {
        pb::NodeHeartbeat {
            from: m.from,
            version: m.version,
            full: m.full,
            quiet: m.quiet.into_iter().map(Into::into).collect(),
            suspects: m.suspects,
        }
    }
}

impl From<pb::NodeHeartbeat> for NodeHeartbeat {
    fn from(m: pb::NodeHeartbeat) -> Self {
        NodeHeartbeat {
            from: m.from,
            version: m.version,
            full: m.full,
            quiet: m.quiet.into_iter().map(Into::into).collect(),
            suspects: m.suspects,
        }
    }
}

mirror!(NodeHeartbeatReply <=> NodeHeartbeatReply { from, version, refused, suspects });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_error_encodes_as_the_string_it_replaced() {
        // Peers of an older build send and expect `Result<T, String>`.
        let old: Result<u64, String> = Err("raft stopped".into());
        let new: WireResult<u64> = Err(RemoteError::of("raft stopped"));
        let bytes = encode(&old, "old").unwrap();
        assert_eq!(bytes, encode(&new, "new").unwrap());
        assert_eq!(decode::<WireResult<u64>>(&bytes, "answer").unwrap(), new);
    }

    #[test]
    fn node_messages_survive_the_protobuf_round_trip() {
        let hb = NodeHeartbeat {
            from: 1,
            version: 7,
            full: true,
            quiet: vec![QuietGroup {
                group_id: 1 << 32,
                term: 3,
                last_index: 9,
            }],
            suspects: vec![2],
        };
        assert_eq!(NodeHeartbeat::from(pb::NodeHeartbeat::from(hb.clone())), hb);
        let rebuild = RebuildRequest {
            node: 3,
            incarnation: 11,
            cluster_id: 12,
            address: "127.0.0.1:1".into(),
            replaces: 10,
        };
        assert_eq!(
            RebuildRequest::from(pb::RebuildRequest::from(rebuild.clone())),
            rebuild
        );
        let read = PartitionRead {
            group_id: 5 << 32 | 2,
            offset_for_time: Some(-1),
            record_time_at: None,
        };
        assert_eq!(
            PartitionRead::from(pb::ReadPartitionRequest::from(read)),
            read
        );
        let reply = PartitionReadReply {
            high_watermark: 9,
            offset: None,
            timestamp_ms: Some(1_700_000_000_000),
            log_start_offset: 4,
        };
        assert_eq!(
            PartitionReadReply::from(pb::ReadPartitionReply::from(reply)),
            reply
        );
    }

    #[test]
    fn a_snapshot_message_encodes_as_the_tuple_it_always_was() {
        let vote = VoteOf::<TypeConfig>::new(3, 1);
        let snapshot = Snapshot {
            meta: Default::default(),
            snapshot: vec![1, 2, 3],
        };
        let bytes = encode_snapshot(&vote, &snapshot).unwrap();
        let tuple = encode(&(&vote, &snapshot.meta, &snapshot.snapshot), "tuple").unwrap();
        assert_eq!(bytes, tuple);
        match RaftRequest::decode(RpcKind::Snapshot, &bytes).unwrap() {
            RaftRequest::Snapshot(v, s) => {
                assert_eq!(v, vote);
                assert_eq!(s.snapshot, vec![1, 2, 3]);
            }
            _ => panic!("not a snapshot"),
        }
    }
}
