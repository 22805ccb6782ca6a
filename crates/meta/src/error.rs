//! [`MetaError`]: why the metadata state machine rejected a command.
//!
//! A rejected command leaves the state unchanged. Every message says what was wrong and which
//! limit applies, so an operator can fix the request without reading the source.

use serde::{Deserialize, Serialize};

use crate::config_key::ConfigKey;
use crate::ids::NodeId;
use crate::limits::{
    MAX_ADDRESS_LEN, MAX_PRODUCER_NAME_LEN, MAX_TOPIC_NAME_LEN, MAX_USER_NAME_LEN, TOPIC_NAME_CHARS,
};

/// Why a [`crate::MetaCommand`] was rejected.
///
/// Each variant is a deterministic verdict on the command and the committed state: resubmitting
/// the same command gives the same answer until the state changes, so none is retryable as is
/// (see [`MetaError::is_retryable`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    /// The topic name breaks the naming rule.
    #[error(
        "invalid topic name {name:?}: {reason}; use 1 to {MAX_TOPIC_NAME_LEN} characters of \
         {TOPIC_NAME_CHARS}, not \".\" or \"..\""
    )]
    InvalidTopicName {
        /// The name as given (cut to a bounded length so a huge name cannot bloat the error).
        name: String,
        /// What in particular is wrong with it.
        reason: String,
    },
    /// CreateTopic named a topic that exists.
    #[error("topic {name:?} already exists")]
    TopicExists {
        /// The existing topic.
        name: String,
    },
    /// The command named a topic that does not exist.
    #[error("unknown topic {name:?}")]
    UnknownTopic {
        /// The name as given (cut to a bounded length).
        name: String,
    },
    /// The partition count is outside `1..=max`.
    #[error("invalid partition count {requested}: a topic has 1 to {max} partitions")]
    InvalidPartitionCount {
        /// The count asked for.
        requested: u32,
        /// [`crate::limits::MAX_PARTITIONS_PER_TOPIC`].
        max: u32,
    },
    /// The replication factor is outside `1..=nodes`.
    #[error("{}", replication_factor_message(*.requested, *.nodes))]
    InvalidReplicationFactor {
        /// The factor asked for (0 asks for the default, `min(3, nodes)`).
        requested: u32,
        /// Registered nodes, the upper limit.
        nodes: u32,
    },
    /// Fewer registered nodes are alive than the topic's replication factor: a replica placed
    /// on a dead node would leave its partition short until the node returns.
    #[error(
        "cannot place {replication_factor} replicas: only {live} of the {registered} registered \
         nodes are alive; bring nodes back, or ask for a replication factor of at most {live}"
    )]
    NotEnoughLiveNodes {
        /// The replication factor (the default resolved).
        replication_factor: u32,
        /// Registered nodes alive when the command was proposed.
        live: u32,
        /// Registered nodes.
        registered: u32,
    },
    /// The topic config breaks a limit. (No longer made: a setting outside its limits is
    /// [`MetaError::InvalidConfigValue`]. Kept so the variants after it keep their encoding.)
    #[error("invalid topic config: {reason}")]
    InvalidConfig {
        /// Which setting, its value and its limit.
        reason: String,
    },
    /// A node address is not `host:port`.
    #[error(
        "invalid node address {address:?}: {reason}; use host:port (at most {MAX_ADDRESS_LEN} \
         characters) with a non-empty host without whitespace, an IPv6 host in brackets, and a \
         port from 1 to 65535"
    )]
    InvalidAddress {
        /// The address as given (cut to a bounded length).
        address: String,
        /// What in particular is wrong with it.
        reason: String,
    },
    /// All 2^32 - 1 topic ids have been handed out (topic ids are never reused).
    #[error("topic ids are exhausted: all {} have been used and ids are never reused", u32::MAX - 1)]
    TopicIdsExhausted,
    /// All 2^64 - 1 producer ids have been handed out.
    #[error("producer ids are exhausted: all {} have been used", u64::MAX - 1)]
    ProducerIdsExhausted,
    /// A registration carried incarnation 0.
    #[error("node {node} registered incarnation 0: incarnations are never 0")]
    InvalidIncarnation {
        /// The node.
        node: NodeId,
    },
    /// A registration carried another cluster id than the cluster's.
    #[error(
        "node {node}'s data directory belongs to cluster {cluster_id:#x}, not to this cluster \
         ({ours:#x})"
    )]
    OtherCluster {
        /// The node.
        node: NodeId,
        /// The cluster id it registered with.
        cluster_id: u64,
        /// This cluster's.
        ours: u64,
    },
    /// A registration carried another incarnation than the node's recorded one: another data
    /// directory under the same node id (replacing one is `fjord serve --rebuild`'s job).
    #[error(
        "node {node} registered incarnation {incarnation:#x}, but the cluster records \
         incarnation {recorded:#x} for it: another data directory under the same node id"
    )]
    OtherIncarnation {
        /// The node.
        node: NodeId,
        /// The incarnation it registered.
        incarnation: u64,
        /// The one recorded.
        recorded: u64,
    },
    /// A producer id block of a size outside `1..=max`.
    #[error("a producer id block of {count} ids: ask for 1 to {max}")]
    InvalidProducerIdBlock {
        /// The size asked for.
        count: u64,
        /// [`crate::state::MAX_PRODUCER_ID_BLOCK`].
        max: u64,
    },
    /// The command named a node that is not registered.
    #[error("node {node} is not registered in this cluster")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// A rebuild saw another recorded incarnation than the one recorded now: another rebuild
    /// of the node came first. Ask the peers again and retry.
    #[error(
        "node {node} was rebuilt meanwhile: this rebuild replaces incarnation {replaces:#x},          but the cluster records {recorded:#x} now; ask the peers again"
    )]
    RebuildRaced {
        /// The node.
        node: NodeId,
        /// The incarnation the rebuild meant to replace.
        replaces: u64,
        /// The one recorded.
        recorded: u64,
    },
    /// A producer name breaks the naming rule.
    #[error(
        "invalid producer name {name:?}: use 1 to {MAX_PRODUCER_NAME_LEN} bytes without control \
         characters"
    )]
    InvalidProducerName {
        /// The name as given (cut to a bounded length).
        name: String,
    },
    /// The cluster holds as many named producers as it may.
    #[error(
        "the cluster holds {max} named producers, its limit: reuse a producer name, or use an \
         unnamed producer"
    )]
    TooManyNamedProducers {
        /// [`crate::limits::MAX_NAMED_PRODUCERS`].
        max: usize,
    },
    /// A named producer was initialised as often as its epoch can count.
    #[error(
        "producer {name:?} has been initialised {} times, as often as its epoch counts: use \
         another producer name",
        u16::MAX
    )]
    ProducerEpochsExhausted {
        /// The name (cut to a bounded length).
        name: String,
    },
    /// A topic setting outside its limits, or not a value of its type.
    #[error("invalid topic config {key} = {value:?}: use {}", .key.rule())]
    InvalidConfigValue {
        /// The setting.
        key: ConfigKey,
        /// The value as given (cut to a bounded length).
        value: String,
    },
    /// A topic config key that no setting has.
    #[error(
        "unknown topic config key {key:?}: the keys are {}",
        ConfigKey::names()
    )]
    UnknownConfigKey {
        /// The key as given (cut to a bounded length).
        key: String,
    },
    /// An alter that names a key twice: set twice, or both set and reset.
    #[error(
        "topic config key {key} is given twice (set twice, or both set and reset): give each \
         key once"
    )]
    ConfigKeyRepeated {
        /// The key.
        key: ConfigKey,
    },
    /// An alter that sets and resets nothing.
    #[error(
        "the alter changes nothing: set or reset at least one of {}",
        ConfigKey::names()
    )]
    NoConfigChange,
    /// A user name breaks the naming rule.
    #[error(
        "invalid user name {name:?}: {reason}; use 1 to {MAX_USER_NAME_LEN} characters of \
         [a-zA-Z0-9._-]"
    )]
    InvalidUserName {
        /// The name as given (cut to a bounded length).
        name: String,
        /// What in particular is wrong with it.
        reason: String,
    },
    /// CreateUser named a user that exists.
    #[error("user {name:?} already exists (delete it first to issue a new token)")]
    UserExists {
        /// The user.
        name: String,
    },
    /// The command named a user that does not exist.
    #[error("unknown user {name:?}")]
    UnknownUser {
        /// The name as given (cut to a bounded length).
        name: String,
    },
    /// The cluster holds [`crate::limits::MAX_USERS`] users.
    #[error("the cluster holds {max} users, its limit (MAX_USERS): delete one first")]
    TooManyUsers {
        /// [`crate::limits::MAX_USERS`].
        max: usize,
    },
    /// A user's salt or hash is not of its length (a bug of the proposer).
    #[error("the credential of user {name:?} is malformed: {reason}")]
    InvalidCredential {
        /// The user.
        name: String,
        /// Which part and its length.
        reason: String,
    },
    /// An ACL entry breaks a rule.
    #[error("invalid ACL entry: {reason}")]
    InvalidAcl {
        /// Which part and the rule.
        reason: String,
    },
    /// The cluster holds [`crate::limits::MAX_ACLS`] ACL entries.
    #[error("the cluster holds {max} ACL entries, its limit (MAX_ACLS): remove one first")]
    TooManyAcls {
        /// [`crate::limits::MAX_ACLS`].
        max: usize,
    },
    /// RemoveAcl named an entry that does not exist.
    #[error("no such ACL entry: {entry}")]
    UnknownAcl {
        /// The entry, as written by its `Display`.
        entry: String,
    },
}

impl MetaError {
    /// Whether resubmitting the same command may succeed without anyone changing it or the
    /// cluster. Always false today; the match is exhaustive so a new variant must decide.
    pub fn is_retryable(&self) -> bool {
        match self {
            MetaError::InvalidTopicName { .. }
            | MetaError::TopicExists { .. }
            | MetaError::UnknownTopic { .. }
            | MetaError::InvalidPartitionCount { .. }
            | MetaError::InvalidReplicationFactor { .. }
            | MetaError::NotEnoughLiveNodes { .. }
            | MetaError::InvalidConfig { .. }
            | MetaError::InvalidAddress { .. }
            | MetaError::TopicIdsExhausted
            | MetaError::ProducerIdsExhausted
            | MetaError::InvalidIncarnation { .. }
            | MetaError::OtherCluster { .. }
            | MetaError::OtherIncarnation { .. }
            | MetaError::InvalidProducerIdBlock { .. }
            | MetaError::UnknownNode { .. }
            | MetaError::RebuildRaced { .. }
            | MetaError::InvalidProducerName { .. }
            | MetaError::TooManyNamedProducers { .. }
            | MetaError::ProducerEpochsExhausted { .. }
            | MetaError::InvalidConfigValue { .. }
            | MetaError::UnknownConfigKey { .. }
            | MetaError::ConfigKeyRepeated { .. }
            | MetaError::NoConfigChange
            | MetaError::InvalidUserName { .. }
            | MetaError::UserExists { .. }
            | MetaError::UnknownUser { .. }
            | MetaError::TooManyUsers { .. }
            | MetaError::InvalidCredential { .. }
            | MetaError::InvalidAcl { .. }
            | MetaError::TooManyAcls { .. }
            | MetaError::UnknownAcl { .. } => false,
        }
    }
}

fn replication_factor_message(requested: u32, nodes: u32) -> String {
    if nodes == 0 {
        format!(
            "invalid replication factor {requested}: no nodes are registered, and a topic needs \
             1 to (registered nodes) replicas"
        )
    } else {
        format!(
            "invalid replication factor {requested}: use 1 to {nodes} (the registered nodes), or \
             0 for min(3, {nodes})"
        )
    }
}

/// Longest user-supplied string echoed back in an error, in characters.
const MAX_ECHOED_CHARS: usize = 300;

/// `s`, cut to [`MAX_ECHOED_CHARS`] characters with a marker, so an error stays bounded even
/// when the input was not.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHOED_CHARS) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes in all)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_strings_and_bounds_long_ones() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(10_000);
        let clipped = clip(&long);
        assert!(clipped.chars().count() < MAX_ECHOED_CHARS + 40, "{clipped}");
        assert!(clipped.ends_with("(20000 bytes in all)"), "{clipped}");
    }

    #[test]
    fn replication_factor_message_names_the_limit() {
        let e = MetaError::InvalidReplicationFactor {
            requested: 4,
            nodes: 3,
        };
        assert!(e.to_string().contains("1 to 3"), "{e}");
        let e = MetaError::InvalidReplicationFactor {
            requested: 0,
            nodes: 0,
        };
        assert!(e.to_string().contains("no nodes are registered"), "{e}");
    }

    #[test]
    fn no_error_is_retryable() {
        assert!(!MetaError::TopicExists { name: "t".into() }.is_retryable());
        assert!(!MetaError::TopicIdsExhausted.is_retryable());
    }
}
