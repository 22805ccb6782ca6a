//! The server's typed errors, and the one place they become gRPC statuses: every RPC
//! handler, client-facing or node-to-node, answers an [`ApiError`], and [`ApiError::code`]
//! alone picks its code ([`crate::edge`] only recodes the answers tonic makes itself).
//!
//! Codes are chosen so a client can tell "retry, maybe elsewhere" (UNAVAILABLE, with the
//! leader in the metadata when known), "outcome unknown" (DEADLINE_EXCEEDED) and "give up"
//! (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, DATA_LOSS).

use fjord_meta::MetaError;
use fjord_proto::v1::{PartitionError, ProduceErrorReason};
use fjord_proto::{LEADER_ADDRESS_KEY, LEADER_ID_KEY};
use fjord_raft::GroupError;
use fjord_raft::codec::EncodeError;
use fjord_raft::handoff::TransferRefused;
use fjord_raft::peer::{ConnectError, DispatchError};
use tonic::{Code, Status};

/// A request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("this node (node {this}) is not the leader of {what}{}", leader_text(.leader))]
    NotLeader {
        this: u64,
        what: String,
        leader: Option<(u64, String)>,
    },
    #[error(
        "{0} has no leader at the moment (an election is in progress or a majority is unreachable); retry"
    )]
    NoLeader(String),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}: it has {count} partitions (0 to {})", .count.saturating_sub(1))]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error(
        "partition {partition} of topic {topic:?} is not hosted on node {this}: ask a replica ({replicas:?})"
    )]
    NotReplica {
        topic: String,
        partition: u32,
        this: u64,
        replicas: Vec<u64>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Timeout(String),
    #[error(
        "batch sequence out of order for producer {producer_id}: expected base sequence {expected}, got {got}"
    )]
    OutOfOrder {
        producer_id: u64,
        expected: u32,
        got: u32,
    },
    /// A newer instance of the named producer was initialised (Kafka's ProducerFenced).
    #[error(
        "producer {producer_id} is fenced: its epoch {epoch} is older than its latest epoch \
         {current} (a newer instance of this named producer was initialised); nothing of the \
         batch was written, and this instance must stop"
    )]
    ProducerFenced {
        producer_id: u64,
        epoch: u16,
        current: u16,
    },
    /// A producer id InitProducer never handed out.
    #[error(
        "producer id {producer_id} was never allocated (ids below {next} were): get one from \
         InitProducer"
    )]
    UnknownProducer { producer_id: u64, next: u64 },
    /// Another batch under the same producer id, epoch and sequence holds other records.
    #[error(
        "producer {producer_id} (epoch {epoch}) already wrote a batch at sequence \
         {base_sequence} (offset {base_offset}) with other records: two writers share this \
         producer id; give each its own (InitProducer)"
    )]
    SequenceReused {
        producer_id: u64,
        epoch: u16,
        base_sequence: u32,
        base_offset: u64,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Busy(String),
    /// Refused in the cluster's current state; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Internal(String),
    /// The node has not started its groups yet: it is checking its data directory with its
    /// peers (see [`crate::boot`]). Retry, maybe elsewhere.
    #[error("node {0} is starting: it is checking its data directory with its peers; retry")]
    Starting(u64),
    /// The node rebuilds (`--rebuild`) and its metadata has not caught up yet.
    #[error(
        "node {0} is rebuilding (--rebuild): its metadata is still catching up from the \
         others; ask another node"
    )]
    Rebuilding(u64),
    /// A node cannot be taken out of the voters (`--rebuild`): a group would lose its majority.
    #[error(transparent)]
    MajorityLost(#[from] crate::rebuild::MajorityLost),
    /// A peer's Raft message that this node could not take.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// A controller's leader move to a replica that cannot take over now.
    #[error("not moving the leader of group {group} to node {to}: {source}")]
    TransferRefused {
        group: u64,
        to: u64,
        #[source]
        source: TransferRefused,
    },
    /// A controller's leader move that the group could not start.
    #[error("{source}")]
    TransferFailed {
        group: u64,
        to: u64,
        #[source]
        source: GroupError,
    },
    /// A controller's leader move for a group that is no partition hosted here.
    #[error("group {0} is not a partition hosted here")]
    NotAPartition(u64),
    /// A message to a peer could not be encoded (a bug).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// No channel to a peer could be made (its address is invalid).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// This node's stored identity or its peers' announced starts could not be read or
    /// written.
    #[error(transparent)]
    Identity(#[from] crate::boot::BootError),
}

fn leader_text(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => "; the leader is not known yet".to_string(),
    }
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::NotLeader { .. }
            | ApiError::NoLeader(_)
            | ApiError::NotReplica { .. }
            | ApiError::Starting(_)
            | ApiError::Rebuilding(_) => Code::Unavailable,
            ApiError::UnknownTopic(_) | ApiError::UnknownPartition { .. } => Code::NotFound,
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::Meta(m) => match m {
                MetaError::TopicExists { .. } => Code::AlreadyExists,
                MetaError::UnknownTopic { .. } => Code::NotFound,
                MetaError::NotEnoughLiveNodes { .. }
                | MetaError::TooManyNamedProducers { .. }
                | MetaError::ProducerEpochsExhausted { .. } => Code::FailedPrecondition,
                // A lost compare-and-set: retry from a fresh read.
                MetaError::RebuildRaced { .. } => Code::Aborted,
                _ => Code::InvalidArgument,
            },
            ApiError::Timeout(_) => Code::DeadlineExceeded,
            ApiError::OutOfOrder { .. }
            | ApiError::ProducerFenced { .. }
            | ApiError::UnknownProducer { .. }
            | ApiError::SequenceReused { .. } => Code::FailedPrecondition,
            ApiError::Corrupt(_) => Code::DataLoss,
            ApiError::OutOfRange(_) => Code::OutOfRange,
            ApiError::Busy(_) => Code::ResourceExhausted,
            ApiError::Refused(_) | ApiError::MajorityLost(_) => Code::FailedPrecondition,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Dispatch(d) => match d {
                DispatchError::UnknownGroup(_) => Code::NotFound,
                DispatchError::Decode(_) => Code::InvalidArgument,
                // The sender's openraft takes it as an unreachable peer: a lost message.
                DispatchError::Quiet(_) | DispatchError::Stopped { .. } => Code::Unavailable,
                DispatchError::Encode { .. } => Code::Internal,
            },
            ApiError::TransferRefused { .. } => Code::FailedPrecondition,
            ApiError::TransferFailed { .. } => Code::Unavailable,
            ApiError::NotAPartition(_) => Code::NotFound,
            ApiError::Encode(_) | ApiError::Connect(_) | ApiError::Identity(_) => Code::Internal,
        }
    }

    fn leader(&self) -> Option<&(u64, String)> {
        match self {
            ApiError::NotLeader { leader, .. } => leader.as_ref(),
            _ => None,
        }
    }

    /// Which producer rule refused a batch, for FAILED_PRECONDITION answers.
    fn reason(&self) -> ProduceErrorReason {
        match self {
            ApiError::OutOfOrder { .. } => ProduceErrorReason::OutOfOrderSequence,
            ApiError::ProducerFenced { .. } => ProduceErrorReason::ProducerFenced,
            ApiError::UnknownProducer { .. } => ProduceErrorReason::UnknownProducerId,
            ApiError::SequenceReused { .. } => ProduceErrorReason::SequenceReused,
            _ => ProduceErrorReason::Unspecified,
        }
    }

    /// The per-partition form used in produce responses.
    pub fn to_partition_error(&self) -> PartitionError {
        let (leader_id, leader_address) = self.leader().cloned().unwrap_or_default();
        PartitionError {
            code: self.code() as i32,
            message: self.to_string(),
            leader_id,
            leader_address,
            reason: self.reason() as i32,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut status = Status::new(e.code(), e.to_string());
        if let Some((id, addr)) = e.leader() {
            if let Ok(v) = id.to_string().parse() {
                status.metadata_mut().insert(LEADER_ID_KEY, v);
            }
            if let Ok(v) = addr.parse() {
                status.metadata_mut().insert(LEADER_ADDRESS_KEY, v);
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_raft_message_is_unavailable_and_an_unknown_group_not_found() {
        // A peer's openraft takes UNAVAILABLE and NOT_FOUND as an unreachable peer (it backs
        // off), anything else as a network error (see fjord_raft::peer).
        let code = |d: DispatchError| Status::from(ApiError::from(d)).code();
        assert_eq!(code(DispatchError::UnknownGroup(7)), Code::NotFound);
        assert_eq!(code(DispatchError::Quiet(7)), Code::Unavailable);
        let decode = fjord_raft::codec::decode::<u64>(&[], "raft request").unwrap_err();
        assert_eq!(code(DispatchError::Decode(decode)), Code::InvalidArgument);
    }
}
