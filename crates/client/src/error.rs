//! The client's one error type, and the only place that turns gRPC statuses and
//! per-partition produce errors into it.
//!
//! What must hold: a caller can always tell "retry, perhaps elsewhere" from "give up"
//! ([`ClientError::is_retryable`]), and "the operation did not happen" from "it may have
//! happened" ([`ClientError::is_outcome_unknown`]). A not-leader answer keeps the leader hint
//! the server sent so the next attempt goes straight to the leader.

use fjord_proto::v1::{PartitionError, ProduceErrorReason};
use fjord_proto::{LEADER_ADDRESS_KEY, LEADER_ID_KEY};
use tonic::Code;

/// Where a node that refused a request says the leader is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id, when the server knew it.
    pub id: Option<u64>,
    /// The leader's `host:port`, when the server knew it.
    pub address: Option<String>,
}

impl LeaderHint {
    /// A hint from the wire form, where 0 and "" mean "unknown"; `None` when both are unknown.
    pub(crate) fn from_parts(id: u64, address: &str) -> Option<Self> {
        let id = (id != 0).then_some(id);
        let address = (!address.trim().is_empty()).then(|| address.trim().to_string());
        (id.is_some() || address.is_some()).then_some(LeaderHint { id, address })
    }

    /// The hint carried in a status's response metadata, if any.
    pub(crate) fn from_metadata(md: &tonic::metadata::MetadataMap) -> Option<Self> {
        let text = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).unwrap_or("");
        let id = text(LEADER_ID_KEY).trim().parse::<u64>().unwrap_or(0);
        Self::from_parts(id, text(LEADER_ADDRESS_KEY))
    }
}

/// Why a client operation failed.
///
/// Retryable variants ([`ClientError::is_retryable`]) have already been retried by the client
/// up to `ClientConfig::max_retries` times when they reach the caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The topic or partition does not exist. Fatal.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request broke a limit or rule; the message says which. Fatal.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The topic already exists. Fatal. (After a timed-out create that was retried this may
    /// mean the first attempt succeeded.)
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The node is not the leader, or there is no leader right now (an election), or the node
    /// is shutting down. Retryable, at `leader` when it is set.
    #[error("unavailable: {message}{}", fmt_hint(.leader))]
    Unavailable {
        message: String,
        leader: Option<LeaderHint>,
    },
    /// No answer in time. The outcome is unknown: the operation may or may not have happened.
    /// Retryable (the producer retries with the same sequence numbers, so never duplicates).
    #[error("timed out (outcome unknown): {0}")]
    Timeout(String),
    /// A producer batch's sequence number is not the one the partition expects. The producer
    /// sends a batch refused this way again while an earlier batch of its window may still
    /// close the gap; when it reaches the caller it is fatal for that batch, and the producer
    /// starts a new producer id for the partition's next batches (a named producer cannot:
    /// see `ProducerConfig::producer_name`).
    #[error("out-of-order producer sequence: {0}")]
    OutOfOrderSequence(String),
    /// The server refused the operation in the cluster's current state. Fatal.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A newer instance of this named producer was initialised (`ProducerConfig::
    /// producer_name`): nothing of the batch was written, and nothing this producer sends
    /// will be. Fatal: stop this producer (Kafka's `ProducerFencedException`).
    #[error("producer fenced: {0}")]
    ProducerFenced(String),
    /// The requested offset is outside the stored log. Fatal.
    #[error("offset out of range: {0}")]
    OffsetOutOfRange(String),
    /// A batch failed its CRC-32C check or could not be decoded. Fatal: never silent data.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The connection to a node failed (refused, reset, broken). Retryable; if the request had
    /// been sent its outcome is unknown.
    #[error("cannot reach {address}: {message}")]
    Transport { address: String, message: String },
    /// The client or producer configuration, or a broker address, is invalid. Fatal.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The producer was shut down before the record was acknowledged. Fatal.
    #[error("producer is closed")]
    Closed,
    /// The producer's task for the record's partition stopped (its runtime shut down, or it
    /// panicked) before the record's outcome was known: the record may have been written.
    /// Fatal for this record; the producer replaces the task for later records.
    #[error("outcome unknown: {0}")]
    Abandoned(String),
    /// The server answered with a status the client has no better name for. Fatal.
    #[error("server error ({code:?}): {message}")]
    Server { code: Code, message: String },
    /// The server's answer broke the protocol (for example a produce answer without the
    /// partition that was sent). Fatal.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The consumer group removed this member (its session timed out, its instance id was
    /// taken over) or fenced its epoch: it owns nothing and must rejoin. The group consumer
    /// does so by itself; a commit that got this was not written.
    #[error("member fenced: {0}")]
    MemberFenced(String),
    /// A newer member joined the group with this member's instance id (a second process given
    /// the same `instance_id`): this consumer owns nothing and must not rejoin with it. Fatal:
    /// every later poll of the consumer fails with it (Kafka's FENCED_INSTANCE_ID).
    #[error("instance fenced: {0}")]
    InstanceFenced(String),
    /// An offset commit sent with an epoch older than its partition's assignment: retry after
    /// the next heartbeat.
    #[error("stale member epoch: {0}")]
    StaleMemberEpoch(String),
    /// A group consumer's partition has no committed offset and its reset policy is `None`.
    #[error("no committed offset: {0}")]
    NoCommittedOffset(String),
    /// The partition leader's disk is below its free-space threshold
    /// (`--min-free-disk-bytes`; the message names the node, its free space and the
    /// threshold). Nothing of the batch was written (not an unknown outcome: a producer whose
    /// earlier attempt of the batch timed out reports [`ClientError::Timeout`] instead), and
    /// the leader accepts produces again by itself once space is freed. Not retried by the
    /// client: a disk fills for minutes or hours, not milliseconds, and a producer retrying
    /// within its backoff would only spin; the caller sends the records again later (a new
    /// send: new sequence numbers, no duplicate since nothing was written). A named producer
    /// (`ProducerConfig::producer_name`) cannot: its partition's later batches fail too (see
    /// there), so the caller creates the producer again first.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The request carried no identity where the cluster requires one, or a token that is
    /// not valid (malformed, of a deleted user, wrong). Fatal: set `ClientConfig::token`.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The ACLs do not allow this principal the operation on the resource (the message names
    /// the three). Fatal.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
}

/// The metadata key that names why a group request was refused.
pub const REASON_KEY: &str = "fjord-reason";

fn fmt_hint(hint: &Option<LeaderHint>) -> String {
    match hint {
        Some(LeaderHint {
            id: Some(id),
            address: Some(a),
        }) => format!(" (leader: node {id} at {a})"),
        Some(LeaderHint {
            id: Some(id),
            address: None,
        }) => format!(" (leader: node {id})"),
        Some(LeaderHint {
            id: None,
            address: Some(a),
        }) => format!(" (leader at {a})"),
        _ => String::new(),
    }
}

/// Causes of a local failure worth showing, outermost first.
const MAX_CAUSES_SHOWN: usize = 6;

/// A locally made status's message with its causes ("tcp connect error: Connection refused
/// (os error 111)"), skipping causes already contained in what is shown.
fn describe_local(status: &tonic::Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !status.message().is_empty() {
        parts.push(status.message().to_string());
    }
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        if parts.len() >= MAX_CAUSES_SHOWN {
            break;
        }
        let text = c.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    if parts.is_empty() {
        format!("{:?}", status.code())
    } else {
        parts.join(": ")
    }
}

impl ClientError {
    /// Whether trying again (after a backoff, or at once at a hinted leader) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. }
                | ClientError::Timeout(_)
                | ClientError::Transport { .. }
        )
    }

    /// Whether the operation was refused for now and may succeed later, with nothing of it
    /// done: retry after seconds or minutes, not at once ([`ClientError::DiskFull`]). Not
    /// [`ClientError::is_retryable`]: the client does not retry these by itself.
    pub fn is_retryable_later(&self) -> bool {
        matches!(self, ClientError::DiskFull(_))
    }

    /// Whether the operation may have taken effect although it reported failure (a timeout,
    /// or a connection lost after the request may have been sent).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout(_) | ClientError::Transport { .. } | ClientError::Abandoned(_)
        )
    }

    /// The leader a not-leader answer pointed at, if any.
    pub fn leader_hint(&self) -> Option<&LeaderHint> {
        match self {
            ClientError::Unavailable { leader, .. } => leader.as_ref(),
            _ => None,
        }
    }

    /// Classifies a status returned by a call to `address`.
    ///
    /// A status that tonic made up locally (it carries a `source` error: connection refused,
    /// reset, h2 protocol failure) is a [`ClientError::Transport`]; one decoded from the
    /// server's answer is classified by its code.
    pub fn from_status(status: &tonic::Status, address: &str) -> ClientError {
        let message = status.message().to_string();
        let hint = LeaderHint::from_metadata(status.metadata());
        let local = std::error::Error::source(status).is_some();
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                if local && hint.is_none() =>
            {
                ClientError::Transport {
                    address: address.to_string(),
                    message: describe_local(status),
                }
            }
            Code::FailedPrecondition => match status
                .metadata()
                .get(REASON_KEY)
                .and_then(|v| v.to_str().ok())
            {
                Some("UNKNOWN_MEMBER_ID" | "FENCED_MEMBER_EPOCH") => {
                    ClientError::MemberFenced(message)
                }
                Some("STALE_MEMBER_EPOCH") => ClientError::StaleMemberEpoch(message),
                Some("FENCED_INSTANCE_ID") => ClientError::InstanceFenced(message),
                _ => ClientError::FailedPrecondition(message),
            },
            Code::ResourceExhausted
                if status
                    .metadata()
                    .get(REASON_KEY)
                    .and_then(|v| v.to_str().ok())
                    == Some("DISK_FULL") =>
            {
                ClientError::DiskFull(message)
            }
            code => Self::from_code(code, message, hint),
        }
    }

    /// Classifies one partition's failure inside a produce answer.
    pub fn from_partition_error(err: &PartitionError) -> ClientError {
        let hint = LeaderHint::from_parts(err.leader_id, &err.leader_address);
        let message = err.message.clone();
        match (
            Code::from(err.code),
            ProduceErrorReason::try_from(err.reason),
        ) {
            (Code::FailedPrecondition, Ok(ProduceErrorReason::ProducerFenced)) => {
                ClientError::ProducerFenced(message)
            }
            (
                Code::FailedPrecondition,
                Ok(ProduceErrorReason::UnknownProducerId | ProduceErrorReason::SequenceReused),
            ) => ClientError::FailedPrecondition(message),
            (Code::ResourceExhausted, Ok(ProduceErrorReason::DiskFull)) => {
                ClientError::DiskFull(message)
            }
            (code, _) => Self::from_code(code, message, hint).in_produce(),
        }
    }

    /// In a produce, FAILED_PRECONDITION means the batch's sequence is not the expected one.
    pub(crate) fn in_produce(self) -> ClientError {
        match self {
            ClientError::FailedPrecondition(m) => ClientError::OutOfOrderSequence(m),
            other => other,
        }
    }

    fn from_code(code: Code, message: String, leader: Option<LeaderHint>) -> ClientError {
        match code {
            Code::Unavailable => ClientError::Unavailable { message, leader },
            Code::NotFound => ClientError::NotFound(message),
            Code::InvalidArgument => ClientError::InvalidArgument(message),
            Code::AlreadyExists => ClientError::AlreadyExists(message),
            Code::DeadlineExceeded => ClientError::Timeout(message),
            Code::FailedPrecondition => ClientError::FailedPrecondition(message),
            Code::OutOfRange => ClientError::OffsetOutOfRange(message),
            Code::DataLoss => ClientError::Corrupt(message),
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::PermissionDenied => ClientError::PermissionDenied(message),
            code => ClientError::Server { code, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn not_leader(id: Option<&str>, address: Option<&str>) -> tonic::Status {
        let mut status = tonic::Status::unavailable("not the leader of orders/0");
        if let Some(id) = id {
            status
                .metadata_mut()
                .insert(LEADER_ID_KEY, MetadataValue::try_from(id).unwrap());
        }
        if let Some(a) = address {
            status
                .metadata_mut()
                .insert(LEADER_ADDRESS_KEY, MetadataValue::try_from(a).unwrap());
        }
        status
    }

    #[test]
    fn server_codes_map_to_variants() {
        let cases = [
            (Code::NotFound, "NotFound", false),
            (Code::InvalidArgument, "InvalidArgument", false),
            (Code::AlreadyExists, "AlreadyExists", false),
            (Code::Unavailable, "Unavailable", true),
            (Code::DeadlineExceeded, "Timeout", true),
            (Code::FailedPrecondition, "FailedPrecondition", false),
            (Code::OutOfRange, "OffsetOutOfRange", false),
            (Code::DataLoss, "Corrupt", false),
            (Code::PermissionDenied, "PermissionDenied", false),
            (Code::Unauthenticated, "Unauthenticated", false),
            (Code::Internal, "Server", false),
        ];
        for (code, name, retryable) in cases {
            let e = ClientError::from_status(&tonic::Status::new(code, "why"), "n1:1");
            assert!(
                format!("{e:?}").starts_with(name),
                "{code:?} became {e:?}, wanted {name}"
            );
            assert_eq!(e.is_retryable(), retryable, "{code:?}");
        }
    }

    #[test]
    fn server_message_is_kept() {
        let e = ClientError::from_status(
            &tonic::Status::invalid_argument("partitions must be 1 to 1024, got 0"),
            "n1:1",
        );
        assert_eq!(
            e.to_string(),
            "invalid argument: partitions must be 1 to 1024, got 0"
        );
    }

    #[test]
    fn leader_hint_is_read_from_metadata() {
        let e = ClientError::from_status(&not_leader(Some("2"), Some("10.0.0.2:7101")), "n1:1");
        assert!(e.is_retryable());
        assert!(!e.is_outcome_unknown());
        assert_eq!(
            e.leader_hint(),
            Some(&LeaderHint {
                id: Some(2),
                address: Some("10.0.0.2:7101".into())
            })
        );
        assert!(e.to_string().contains("node 2 at 10.0.0.2:7101"), "{e}");
    }

    #[test]
    fn unknown_leader_gives_no_hint() {
        let e = ClientError::from_status(&not_leader(None, None), "n1:1");
        assert!(matches!(e, ClientError::Unavailable { leader: None, .. }));
        let e = ClientError::from_status(&not_leader(Some("0"), Some("")), "n1:1");
        assert_eq!(e.leader_hint(), None);
        let e = ClientError::from_status(&not_leader(Some("3"), None), "n1:1");
        assert_eq!(
            e.leader_hint(),
            Some(&LeaderHint {
                id: Some(3),
                address: None
            })
        );
    }

    #[test]
    fn locally_made_statuses_are_transport_errors() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(io));
        // tonic calls an unrecognised local error UNKNOWN and keeps it as the source.
        assert_eq!(status.code(), Code::Unknown);
        let e = ClientError::from_status(&status, "127.0.0.1:7101");
        assert!(matches!(e, ClientError::Transport { .. }), "{e:?}");
        assert!(e.is_retryable() && e.is_outcome_unknown());
        assert!(e.to_string().contains("127.0.0.1:7101"));
    }

    #[test]
    fn partition_errors_map_like_statuses_but_sequence_is_named() {
        let pe = |code: Code, id: u64, addr: &str| PartitionError {
            code: code as i32,
            message: "m".into(),
            leader_id: id,
            leader_address: addr.into(),
            reason: 0,
        };
        let e = ClientError::from_partition_error(&pe(Code::Unavailable, 3, "h3:7101"));
        assert_eq!(
            e.leader_hint().and_then(|h| h.address.as_deref()),
            Some("h3:7101")
        );
        let e = ClientError::from_partition_error(&pe(Code::FailedPrecondition, 0, ""));
        assert!(matches!(e, ClientError::OutOfOrderSequence(_)));
        assert!(!e.is_retryable());
        let e = ClientError::from_partition_error(&pe(Code::DeadlineExceeded, 0, ""));
        assert!(e.is_retryable() && e.is_outcome_unknown());
        let e = ClientError::from_partition_error(&pe(Code::DataLoss, 0, ""));
        assert!(matches!(e, ClientError::Corrupt(_)) && !e.is_retryable());
    }

    #[test]
    fn a_full_disk_is_handed_to_the_caller_as_nothing_written_retry_later() {
        let full = PartitionError {
            code: Code::ResourceExhausted as i32,
            message: "node 2's data directory /x has 812.0 MiB free".into(),
            leader_id: 0,
            leader_address: String::new(),
            reason: ProduceErrorReason::DiskFull as i32,
        };
        let e = ClientError::from_partition_error(&full);
        assert!(matches!(e, ClientError::DiskFull(_)), "{e:?}");
        assert!(!e.is_retryable() && !e.is_outcome_unknown() && e.is_retryable_later());
        assert!(e.to_string().starts_with("disk full: node 2's"), "{e}");
        let mut status = tonic::Status::resource_exhausted("full");
        status
            .metadata_mut()
            .insert(REASON_KEY, MetadataValue::from_static("DISK_FULL"));
        let e = ClientError::from_status(&status, "n1:1");
        assert!(matches!(e, ClientError::DiskFull(_)), "{e:?}");
        // Another RESOURCE_EXHAUSTED (a message over the size limit) stays fatal, as before.
        let e = ClientError::from_status(&tonic::Status::resource_exhausted("too big"), "n1:1");
        assert!(matches!(e, ClientError::Server { .. }) && !e.is_retryable_later());
    }
}
