//! The server's typed errors, and the one place they become gRPC statuses: every RPC
//! handler, client-facing or node-to-node, answers an [`ApiError`], and [`ApiError::code`]
//! alone picks its code ([`crate::edge`] only recodes the answers tonic makes itself).
//!
//! Codes are chosen so a client can tell "retry, maybe elsewhere" (UNAVAILABLE, with the
//! leader in the metadata when known), "outcome unknown" (DEADLINE_EXCEEDED) and "give up"
//! (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, DATA_LOSS).
//! RESOURCE_EXHAUSTED is a limit of the moment: a full queue, or a leader whose disk is
//! below its free-space threshold (`fjord-reason: DISK_FULL`; nothing was written, retry
//! later rather than at once).

use std::time::Duration;

use fjord_meta::{MetaError, MetaResponse, NodeId};
use fjord_proto::batch::BatchError;
use fjord_proto::v1::{PartitionError, ProduceErrorReason};
use fjord_proto::{LEADER_ADDRESS_KEY, LEADER_ID_KEY};
use fjord_raft::codec::EncodeError;
use fjord_raft::handle::{Busy, Internal, Unavailable};
use fjord_raft::handoff::TransferRefused;
use fjord_raft::peer::{ConnectError, DispatchError, PeerError};
use fjord_raft::{GroupError, ReadError};
use fjord_storage::StorageError;
use tonic::{Code, Status};

/// What a leader is asked of: the metadata group, a partition, or a Raft group by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Metadata,
    Partition {
        topic: String,
        partition: u32,
    },
    Group(u64),
    /// A consumer group's coordinator (the leader of its `__fjord_groups` partition).
    Coordinator {
        group: String,
        partition: u32,
    },
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Metadata => write!(f, "the metadata group"),
            Subject::Partition { topic, partition } => {
                write!(f, "partition {partition} of topic {topic:?}")
            }
            Subject::Group(g) => write!(f, "group {g}"),
            Subject::Coordinator { group, partition } => write!(
                f,
                "the coordinator of consumer group {group:?} (partition {partition} of {})",
                fjord_groups::GROUPS_TOPIC
            ),
        }
    }
}

/// Why a [`Subject`] has no leader that answered (all retryable).
#[derive(Debug, thiserror::Error)]
pub enum NoLeaderCause {
    /// None is known here.
    #[error("")]
    NotKnown,
    /// The node asked does not lead.
    #[error(" (not the leader)")]
    NotLeaderHere,
    /// The group cannot make progress right now.
    #[error(" ({0})")]
    Unavailable(#[from] Unavailable),
    /// The metadata group holds as many waiting writes as it may (a metadata write retries).
    #[error(" ({0})")]
    Busy(#[from] Busy),
    /// A lookup at the leader (a reset by time) failed.
    #[error(": looking the offset up failed: {0}")]
    Lookup(String),
    /// A membership change did not commit in time.
    #[error(": a membership change was not committed within {within:?} (no majority answered)")]
    ChangeNotCommitted { within: Duration },
    /// The leader asked has not made the change yet; `detail` is its answer.
    #[error(" ({detail})")]
    ChangePending { detail: String },
    /// The node to ask has no known address.
    #[error(": node {node}'s address is not known")]
    AddressUnknown { node: NodeId },
    /// The node asked answered with an error status.
    #[error(" at node {node}: {message}")]
    PeerRefused { node: NodeId, message: String },
    /// The node asked did not answer in time.
    #[error(" at node {node}: no answer within {within:?}")]
    PeerSilent { node: NodeId, within: Duration },
    /// A metadata write forwarded to the leader got no answer in time.
    #[error(" (forward timed out)")]
    ForwardTimedOut,
    /// A peer's read of this node's replica (`ReadPartition`) did not finish in time.
    #[error(": the read did not finish within {within:?}")]
    ReadTimedOut { within: Duration },
    /// A metadata write forwarded to the leader failed there.
    #[error(" (forward: {message})")]
    ForwardFailed { message: String },
}

/// A request that breaks a rule of its own: INVALID_ARGUMENT, each case with its limit.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("unknown acks mode {0}")]
    UnknownAcks(i32),
    #[error("unknown read mode {0}")]
    UnknownReadMode(i32),
    #[error("unknown offset query {0} (OFFSET_LATEST 0, OFFSET_EARLIEST 1, OFFSET_BY_TIME 2)")]
    UnknownOffsetQuery(i32),
    /// A numeric field of the request over its limit.
    #[error("{field} {value} is over the limit of {limit}")]
    OverLimit {
        field: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("a produce request carries either `records` or `batches`, not both")]
    RecordsAndBatches,
    #[error("the produce request has no records: send at least one record or batch")]
    NoRecords,
    #[error("the produce request holds {bytes} bytes of records, over the limit of {limit}")]
    RequestTooLarge { bytes: usize, limit: usize },
    #[error(
        "record {index} is {bytes} bytes (key + value + headers), over the topic's \
         max_record_bytes of {limit}"
    )]
    RecordTooLarge {
        index: usize,
        bytes: usize,
        limit: usize,
    },
    #[error("a batch has {count} records, over the limit of {limit}")]
    TooManyRecords { count: usize, limit: usize },
    /// Counted on the wire before decoding ([`fjord_proto::prescan`]).
    #[error("the produce request's batches hold {0} (counted before decoding)")]
    OverWireLimit(String),
    #[error(
        "batch {batch} (partition {partition}): producer_epoch {epoch} is over the limit of {}",
        u16::MAX
    )]
    EpochTooLarge {
        batch: usize,
        partition: u32,
        epoch: u32,
    },
    #[error(
        "batch {batch} is the second batch for partition {partition} in one request: send one \
         batch per partition"
    )]
    SecondBatch { batch: usize, partition: u32 },
    /// A producer batch whose body does not decode (a CRC mismatch is [`ApiError::CorruptBatch`]).
    #[error("batch {batch} (partition {partition}): {source}")]
    Malformed {
        batch: usize,
        partition: u32,
        source: BatchError,
    },
    #[error("batch {batch} (partition {partition}) has no records")]
    EmptyBatch { batch: usize, partition: u32 },
    #[error("batch {batch} (partition {partition}) declares {declared} records but holds {held}")]
    CountMismatch {
        batch: usize,
        partition: u32,
        declared: u32,
        held: usize,
    },
    #[error("producer {producer_id} is unnamed, so its epoch is 0, not {epoch}")]
    UnnamedEpoch { producer_id: u64, epoch: u16 },
    /// A named producer's epoch above the latest its InitProducer issued.
    #[error(
        "epoch {epoch} of producer {producer_id} was never issued (its latest is {current}): \
         a producer's epoch comes from InitProducer"
    )]
    EpochNotIssued {
        producer_id: u64,
        epoch: u16,
        current: u16,
    },
    #[error("a node cannot rebuild itself through itself")]
    RebuildSelf,
    /// A client's create, delete or produce on one of fjord's own topics.
    #[error(
        "topic {topic:?} is fjord's own (names starting with {:?} are reserved): clients cannot {action} it",
        fjord_groups::INTERNAL_TOPIC_PREFIX
    )]
    ReservedTopic { topic: String, action: &'static str },
    #[error("the request has no {field}")]
    MissingField { field: &'static str },
    /// An ACL entry the metadata would store but that could never match.
    #[error("invalid ACL entry: {0}")]
    Acl(String),
    #[error("{field} {value} is unknown: use one of {names}")]
    UnknownEnum {
        field: &'static str,
        value: i32,
        names: &'static str,
    },
}

/// A request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("this node (node {this}) is not the leader of {of}{}", leader_text(.leader))]
    NotLeader {
        this: u64,
        of: Subject,
        leader: Option<(u64, String)>,
    },
    #[error(
        "{of}{why} has no leader at the moment (an election is in progress or a majority is \
         unreachable); retry"
    )]
    NoLeader { of: Subject, why: NoLeaderCause },
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
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A produce not acknowledged in time: its outcome is unknown.
    #[error(
        "partition {partition} of topic {topic:?}: not acknowledged within {} ms; the outcome \
         is unknown (retry with the same producer id and sequence to avoid a duplicate)",
        .timeout.as_millis()
    )]
    Timeout {
        topic: String,
        partition: u32,
        timeout: Duration,
    },
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
    /// A producer batch whose bytes do not match its CRC.
    #[error("batch {batch} (partition {partition}): {source}")]
    CorruptBatch {
        batch: usize,
        partition: u32,
        source: BatchError,
    },
    /// A read of committed batches failed: corrupt stored data, or storage.
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "offset {offset} is below the log start offset {log_start} of partition {partition} of \
         topic {topic:?}"
    )]
    BelowLogStart {
        topic: String,
        partition: u32,
        offset: u64,
        log_start: u64,
    },
    #[error(
        "offset {offset} is beyond the end of partition {partition} of topic {topic:?} (high \
         watermark {high_watermark})"
    )]
    BeyondEnd {
        topic: String,
        partition: u32,
        offset: u64,
        high_watermark: u64,
    },
    /// Too many requests wait on a group.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// An answer that would be larger than a node sends (tonic's own refusal would be
    /// OUT_OF_RANGE, which fjord uses for offsets).
    #[error(
        "the answer to {rpc} would be {bytes} bytes, over the limit of {limit} bytes for one \
         answer: ask for less (fewer topics, a smaller max_bytes)"
    )]
    AnswerTooLarge {
        rpc: &'static str,
        bytes: usize,
        limit: usize,
    },
    /// A topic whose partitions would take the cluster past its bound.
    #[error(
        "the cluster holds {held} partitions; {asked} more would pass the limit of {limit} \
         (MAX_CLUSTER_PARTITIONS): delete topics first"
    )]
    TooManyPartitions { held: u64, asked: u64, limit: u64 },
    /// A rebuild of a node the metadata does not know.
    #[error("node {0} is not registered in this cluster: a new node starts without --rebuild")]
    UnregisteredNode(NodeId),
    /// The consumer groups' internal topic, created at the first group request, cannot be
    /// created yet: too few of the nodes are alive for its replicas.
    #[error(
        "the consumer groups' topic is created at the first group request and cannot be yet: \
         {0}; retry once the nodes are up"
    )]
    GroupsTopicNotYet(fjord_meta::MetaError),
    /// A topic that names no replication factor, while the cluster forms: fewer nodes have
    /// registered than its default factor needs ([`crate::live::default_replication`]).
    #[error(
        "topic {topic} takes the default replication factor, {replication_factor} (3, or as \
         many nodes as the cluster has), but only {registered} of the cluster's {expected} \
         nodes (registered and configured peers) have registered: the cluster is still \
         forming, and a topic made now would keep fewer replicas for good. Retry once the \
         nodes have started (a topic that names its replication factor is not held back)"
    )]
    ClusterForming {
        topic: String,
        replication_factor: u32,
        registered: u32,
        expected: u32,
    },
    /// A rebuild of a node that answers heartbeats: its directory is not lost.
    #[error(
        "node {0} is alive (it answers this node's heartbeats): a rebuild takes back a node \
         whose data directory was lost, so it waits until node {0} is down. If another \
         process runs with --id {0} (on another machine, with another data directory), stop \
         this one; nothing was changed"
    )]
    RebuildOfLiveNode(NodeId),
    /// A group's bug, or local state it cannot read.
    #[error(transparent)]
    Internal(#[from] Internal),
    /// This node's storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The metadata group answered something that does not fit the command (a bug).
    #[error("unexpected answer to {to}: {got:?}")]
    UnexpectedAnswer {
        to: &'static str,
        got: Box<MetaResponse>,
    },
    /// The metadata group allocated a producer id block without ids (a bug).
    #[error("the metadata group allocated an empty block")]
    EmptyProducerIdBlock,
    /// The producer id block this node hands out from could not be made durable.
    #[error("cannot record the producer id block: {0}")]
    RecordProducerIds(#[source] StorageError),
    /// The metadata leader's answer to a forwarded write does not decode as one.
    #[error("bad forwarded metadata response: {0}")]
    BadForwardedAnswer(#[source] PeerError),
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
    /// The node has just started and its applied metadata does not hold its own
    /// registration of this start yet, so it may lack topics the cluster has: it would
    /// answer "no such topic" for one that exists ([`crate::meta_gate`]).
    #[error(
        "node {0}'s metadata is catching up with the metadata group since it started; retry, \
         or ask another node"
    )]
    MetaCatchingUp(u64),
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
    /// A peer's request about a partition (a controller's leader move, a partition read) for
    /// a group that is no partition hosted here.
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
    /// A consumer group request whose answer did not come within the coordinator's time: its
    /// outcome is unknown.
    #[error(
        "the coordinator of group {group:?} did not answer within {} ms; the outcome is unknown",
        .timeout.as_millis()
    )]
    GroupTimeout { group: String, timeout: Duration },
    /// The coordinator's queue is full: retry.
    #[error("{limit} group requests are waiting on this coordinator (MAX_QUEUED_REQUESTS); retry")]
    CoordinatorQueueFull { limit: usize },
    /// The coordinator answered a request with another request's answer (a bug).
    #[error("the coordinator answered {to} with an answer of another kind")]
    UnexpectedGroupAnswer { to: &'static str },
    /// A consumer group request the group rules refused.
    #[error(transparent)]
    Group(#[from] fjord_groups::GroupError),
    /// A group request to a node that does not coordinate the group: retry at the leader.
    #[error("node {this} is not the coordinator of group {group:?}{}", leader_text(.leader))]
    NotCoordinator {
        this: u64,
        group: String,
        leader: Option<(u64, String)>,
    },
    /// A produce to a partition this node leads while its disk is below
    /// `--min-free-disk-bytes` (see [`crate::disk`]): nothing was written; retry later, once
    /// space is freed.
    #[error(transparent)]
    DiskFull(#[from] crate::disk::DiskFull),
    /// A request without a valid identity (see [`crate::auth`]).
    #[error(transparent)]
    Unauthenticated(#[from] crate::auth::AuthError),
    /// A principal the ACLs do not allow the operation on the resource.
    #[error(
        "{principal} may not {operation} {resource}: {why} (add an ACL entry with `fjord acl \
         add`, or ask an operator)"
    )]
    PermissionDenied {
        principal: String,
        operation: fjord_meta::acl::Operation,
        resource: String,
        why: String,
    },
}

/// The metadata key that names why a request was refused, where a client must act on it
/// (see `proto/fjord.proto`'s consumer group section).
pub const REASON_KEY: &str = "fjord-reason";
/// The metadata key that carries a partition's log start offset when an offset below it was
/// asked for (OUT_OF_RANGE).
pub const LOG_START_KEY: &str = "fjord-log-start-offset";

fn leader_text(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => "; the leader is not known yet".to_string(),
    }
}

impl ApiError {
    /// `of` has no leader, for `why`.
    pub fn no_leader(of: Subject, why: impl Into<NoLeaderCause>) -> ApiError {
        ApiError::NoLeader {
            of,
            why: why.into(),
        }
    }

    /// A metadata write's group error: a bug stays internal, anything else is "no leader,
    /// retry".
    pub fn from_meta_write(e: GroupError) -> ApiError {
        let why = match e {
            GroupError::Internal(e) => return ApiError::Internal(e),
            GroupError::NotLeader { .. } => NoLeaderCause::NotLeaderHere,
            GroupError::Unavailable(u) => NoLeaderCause::Unavailable(u),
            GroupError::Busy(b) => NoLeaderCause::Busy(b),
        };
        ApiError::no_leader(Subject::Metadata, why)
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::NotLeader { .. }
            | ApiError::NoLeader { .. }
            | ApiError::NotReplica { .. }
            | ApiError::Starting(_)
            | ApiError::Rebuilding(_)
            | ApiError::MetaCatchingUp(_) => Code::Unavailable,
            ApiError::UnknownTopic(_) | ApiError::UnknownPartition { .. } => Code::NotFound,
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::Meta(m) => match m {
                MetaError::TopicExists { .. } | MetaError::UserExists { .. } => Code::AlreadyExists,
                MetaError::UnknownTopic { .. }
                | MetaError::UnknownUser { .. }
                | MetaError::UnknownAcl { .. } => Code::NotFound,
                MetaError::NotEnoughLiveNodes { .. }
                | MetaError::TooManyUsers { .. }
                | MetaError::TooManyAcls { .. }
                | MetaError::TooManyNamedProducers { .. }
                | MetaError::ProducerEpochsExhausted { .. } => Code::FailedPrecondition,
                // A lost compare-and-set: retry from a fresh read.
                MetaError::RebuildRaced { .. } => Code::Aborted,
                _ => Code::InvalidArgument,
            },
            ApiError::Timeout { .. } => Code::DeadlineExceeded,
            ApiError::OutOfOrder { .. }
            | ApiError::ProducerFenced { .. }
            | ApiError::UnknownProducer { .. }
            | ApiError::SequenceReused { .. } => Code::FailedPrecondition,
            ApiError::CorruptBatch { .. } => Code::DataLoss,
            ApiError::Read(r) => match r {
                ReadError::Corrupt { .. } => Code::DataLoss,
                ReadError::Storage(_) => Code::Internal,
            },
            ApiError::BelowLogStart { .. } | ApiError::BeyondEnd { .. } => Code::OutOfRange,
            ApiError::Busy(_)
            | ApiError::DiskFull(_)
            | ApiError::AnswerTooLarge { .. }
            | ApiError::TooManyPartitions { .. } => Code::ResourceExhausted,
            ApiError::UnregisteredNode(_) | ApiError::MajorityLost(_) => Code::FailedPrecondition,
            // The rebuilding node asks again: a node that just died is suspected within the
            // failure detector's timeout.
            // So is a topic held back while the cluster forms: it goes through once the nodes
            // have registered.
            ApiError::RebuildOfLiveNode(_)
            | ApiError::GroupsTopicNotYet(_)
            | ApiError::ClusterForming { .. } => Code::Unavailable,
            ApiError::Internal(_)
            | ApiError::Storage(_)
            | ApiError::UnexpectedAnswer { .. }
            | ApiError::EmptyProducerIdBlock
            | ApiError::RecordProducerIds(_)
            | ApiError::BadForwardedAnswer(_) => Code::Internal,
            ApiError::Dispatch(d) => match d {
                DispatchError::UnknownGroup(_) => Code::NotFound,
                DispatchError::Decode(_) => Code::InvalidArgument,
                // The sender's openraft takes it as an unreachable peer: a lost message.
                DispatchError::Quiet(_) | DispatchError::Stopped { .. } => Code::Unavailable,
                DispatchError::Encode { .. } => Code::Internal,
                DispatchError::Misdirected { .. } => Code::FailedPrecondition,
            },
            ApiError::TransferRefused { .. } => Code::FailedPrecondition,
            ApiError::TransferFailed { .. } => Code::Unavailable,
            ApiError::NotAPartition(_) => Code::NotFound,
            ApiError::Encode(_) | ApiError::Connect(_) | ApiError::Identity(_) => Code::Internal,
            ApiError::NotCoordinator { .. } | ApiError::CoordinatorQueueFull { .. } => {
                Code::Unavailable
            }
            ApiError::GroupTimeout { .. } => Code::DeadlineExceeded,
            ApiError::UnexpectedGroupAnswer { .. } => Code::Internal,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied { .. } => Code::PermissionDenied,
            ApiError::Group(g) => {
                use fjord_groups::GroupError as G;
                match g {
                    G::Invalid { .. } => Code::InvalidArgument,
                    G::UnknownMember { .. }
                    | G::FencedInstance { .. }
                    | G::FencedMemberEpoch { .. }
                    | G::StaleMemberEpoch { .. }
                    | G::NotOwned { .. }
                    | G::NotEmpty { .. } => Code::FailedPrecondition,
                    G::OffsetAboveHighWatermark { .. } => Code::OutOfRange,
                    G::UnknownPartition { .. } | G::UnknownGroup { .. } => Code::NotFound,
                    G::GroupFull { .. } | G::TooManyGroups { .. } => Code::ResourceExhausted,
                }
            }
        }
    }

    /// Why a request was refused, where a client must act on it, for the [`REASON_KEY`]
    /// metadata.
    pub fn reason_text(&self) -> Option<&'static str> {
        use fjord_groups::GroupError as G;
        Some(match self {
            ApiError::DiskFull(_) => "DISK_FULL",
            ApiError::Unauthenticated(_) => "NOT_AUTHENTICATED",
            ApiError::PermissionDenied { .. } => "NOT_AUTHORIZED",
            ApiError::NotCoordinator { .. } => "NOT_COORDINATOR",
            ApiError::Group(G::UnknownMember { .. }) => "UNKNOWN_MEMBER_ID",
            ApiError::Group(G::FencedMemberEpoch { .. }) => "FENCED_MEMBER_EPOCH",
            ApiError::Group(G::FencedInstance { .. }) => "FENCED_INSTANCE_ID",
            ApiError::Group(G::StaleMemberEpoch { .. }) => "STALE_MEMBER_EPOCH",
            ApiError::Group(G::NotOwned { .. }) => "PARTITION_NOT_OWNED",
            ApiError::Group(G::NotEmpty { .. }) => "GROUP_NOT_EMPTY",
            ApiError::Group(G::OffsetAboveHighWatermark { .. }) => "OFFSET_ABOVE_HIGH_WATERMARK",
            ApiError::Group(G::GroupFull { .. }) => "GROUP_FULL",
            ApiError::Group(G::TooManyGroups { .. }) => "TOO_MANY_GROUPS",
            _ => return None,
        })
    }

    fn leader(&self) -> Option<&(u64, String)> {
        match self {
            ApiError::NotLeader { leader, .. } | ApiError::NotCoordinator { leader, .. } => {
                leader.as_ref()
            }
            _ => None,
        }
    }

    /// Which producer rule refused a batch (FAILED_PRECONDITION answers), or that the
    /// leader's disk is full (RESOURCE_EXHAUSTED).
    fn reason(&self) -> ProduceErrorReason {
        match self {
            ApiError::DiskFull(_) => ProduceErrorReason::DiskFull,
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
        if let ApiError::BelowLogStart { log_start, .. } = &e
            && let Ok(v) = log_start.to_string().parse()
        {
            status.metadata_mut().insert(LOG_START_KEY, v);
        }
        if let Some(reason) = e.reason_text() {
            status.metadata_mut().insert(
                REASON_KEY,
                tonic::metadata::MetadataValue::from_static(reason),
            );
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

    #[test]
    fn a_bad_topic_config_is_an_invalid_argument_naming_key_value_and_limit() {
        let e = ApiError::from(MetaError::InvalidConfigValue {
            key: fjord_meta::ConfigKey::RetentionBytes,
            value: "5".into(),
        });
        assert_eq!(e.code(), Code::InvalidArgument);
        let msg = e.to_string();
        assert!(
            msg.contains("retention_bytes = \"5\"") && msg.contains("MIN_RETENTION_BYTES"),
            "{msg}"
        );
        for e in [
            MetaError::UnknownConfigKey { key: "x".into() },
            MetaError::NoConfigChange,
            MetaError::ConfigKeyRepeated {
                key: fjord_meta::ConfigKey::CleanupPolicy,
            },
        ] {
            assert_eq!(ApiError::from(e).code(), Code::InvalidArgument);
        }
        let internal = ApiError::from(Invalid::ReservedTopic {
            topic: "__fjord_groups".into(),
            action: "alter the config of",
        });
        assert_eq!(internal.code(), Code::InvalidArgument);
        assert!(
            internal
                .to_string()
                .contains("clients cannot alter the config of it"),
            "{internal}"
        );
    }

    #[test]
    fn each_kind_keeps_its_code_and_says_what_it_is_about() {
        let partition = || Subject::Partition {
            topic: "t".into(),
            partition: 2,
        };
        let e = ApiError::no_leader(partition(), NoLeaderCause::NotKnown);
        assert_eq!(e.code(), Code::Unavailable);
        assert!(
            e.to_string()
                .starts_with("partition 2 of topic \"t\" has no leader at the moment"),
            "{e}"
        );
        let e = ApiError::no_leader(Subject::Metadata, NoLeaderCause::ForwardTimedOut);
        assert!(
            e.to_string()
                .starts_with("the metadata group (forward timed out) has no leader"),
            "{e}"
        );
        let e = ApiError::NotLeader {
            this: 1,
            of: Subject::Group(9),
            leader: Some((2, "a:1".into())),
        };
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(
            e.to_string(),
            "this node (node 1) is not the leader of group 9; the leader is node 2 at a:1"
        );
        let e = ApiError::from(Invalid::RecordTooLarge {
            index: 3,
            bytes: 20,
            limit: 10,
        });
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.to_string()
                .contains("over the topic's max_record_bytes of 10"),
            "{e}"
        );
        let e = ApiError::from(Invalid::OverLimit {
            field: "max_wait_ms",
            value: 40_000,
            limit: 30_000,
        });
        assert_eq!(
            e.to_string(),
            "max_wait_ms 40000 is over the limit of 30000"
        );
        let corrupt = ApiError::CorruptBatch {
            batch: 0,
            partition: 1,
            source: BatchError::Checksum {
                expected: 1,
                actual: 2,
            },
        };
        assert_eq!(corrupt.code(), Code::DataLoss);
        let timeout = ApiError::Timeout {
            topic: "t".into(),
            partition: 0,
            timeout: Duration::from_millis(5),
        };
        assert_eq!(timeout.code(), Code::DeadlineExceeded);
        assert!(timeout.to_string().contains("not acknowledged within 5 ms"));
        let below = ApiError::BelowLogStart {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            log_start: 5,
        };
        assert_eq!(below.code(), Code::OutOfRange);
        assert_eq!(
            ApiError::UnregisteredNode(4).code(),
            Code::FailedPrecondition
        );
        // Both retried by the caller: a rebuild waits for the node it replaces to be down,
        // a group request for the nodes its topic needs.
        assert_eq!(ApiError::RebuildOfLiveNode(2).code(), Code::Unavailable);
        let too_few = fjord_meta::MetaError::NotEnoughLiveNodes {
            replication_factor: 3,
            live: 2,
            registered: 3,
        };
        assert_eq!(
            ApiError::Meta(too_few.clone()).code(),
            Code::FailedPrecondition
        );
        let e = ApiError::GroupsTopicNotYet(too_few);
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.to_string().contains("consumer groups' topic"), "{e}");
        assert_eq!(ApiError::EmptyProducerIdBlock.code(), Code::Internal);
        // A metadata write that reached no leader is retried elsewhere, not given up on.
        let e = ApiError::from_meta_write(GroupError::NotLeader {
            leader: None,
            address: None,
        });
        assert_eq!(e.code(), Code::Unavailable);
    }

    #[test]
    fn a_full_disk_is_resource_exhausted_with_its_reason() {
        let e = ApiError::from(crate::disk::DiskFull {
            node: 2,
            dir: "/x".into(),
            available_bytes: 812 << 20,
            min_free_bytes: 1 << 30,
            by_default: false,
        });
        let pe = e.to_partition_error();
        assert_eq!(pe.code, Code::ResourceExhausted as i32);
        assert_eq!(pe.reason, ProduceErrorReason::DiskFull as i32);
        assert!(
            pe.message.contains("--min-free-disk-bytes"),
            "{}",
            pe.message
        );
        let status = Status::from(e);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get(REASON_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("DISK_FULL")
        );
    }
}
