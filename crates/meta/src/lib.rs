//! fjord's metadata state machine: the state of the controller's Raft group.
//!
//! Every node applies the same [`MetaCommand`]s in the same order and must reach the same
//! [`MetaState`], so nothing here does I/O, reads a clock, draws a random number or depends on
//! hash-map iteration order. Decisions (where replicas go, which leaders to move) are pure
//! functions of the state; the server performs them.
//!
//! # Layout
//!
//! - [`ids`]: node and Raft group ids, and how a partition's group id is built.
//! - [`error`]: [`MetaError`], the typed verdict on a rejected command.
//! - [`limits`]: the named limits (constants only); [`validate`]: the checks of topic names
//!   and addresses against them, shared by [`MetaState::apply`] and [`MetaState::validate`].
//! - [`config_key`]: [`ConfigKey`], the names of a topic's settings and their rules in words;
//!   [`topic_config`]: [`TopicConfig`], its checks and alters, the cluster's [`LogDefaults`]
//!   and the settings in force ([`TopicConfig::effective`] → [`EffectiveLogConfig`]).
//!   Dependencies run one way: `limits` ← `config_key` ← `error` ← `validate`, `topic_config`
//!   ← `state`.
//! - [`state`]: [`MetaState`], the commands that change it, its invariants and its queries.
//! - [`legacy`]: the shapes earlier versions encoded the state in, read only.
//! - [`assign`]: [`assign_replicas`], placement of new partitions' replicas.
//! - [`identity`]: data directory identities and [`check_boot`], whether a node may take part.
//! - [`balance`]: [`plan_leader_moves`], leader balancing across live nodes.
//! - [`acl`]: users and ACL entries kept in the state, and [`acl::authorize`], the decision
//!   whether a principal may do an operation on a resource.

pub mod acl;
pub mod assign;
pub mod balance;
pub mod config_key;
pub mod error;
pub mod identity;
pub mod ids;
pub mod legacy;
pub mod limits;
pub mod state;
pub mod topic_config;
pub mod validate;

pub use assign::assign_replicas;
pub use balance::{LeaderMove, plan_leader_moves};
pub use config_key::ConfigKey;
pub use error::MetaError;
pub use identity::{
    BootRefusal, BootVerdict, DiskIdentity, IncarnationRecord, PeerReport, check_boot,
};
pub use ids::{GroupId, META_GROUP, NodeId, group_id, split_group_id};
pub use legacy::{MetaStateV1, MetaStateV2, MetaStateV3, MetaStateV4, TopicConfigV1, TopicV1};
pub use limits::{
    DEFAULT_DELETE_RETENTION_MS, DEFAULT_MAX_RECORD_BYTES, DEFAULT_MIN_COMPACTION_LAG_MS,
    DEFAULT_REPLICATION_FACTOR, DEFAULT_RETENTION_BYTES, DEFAULT_RETENTION_MS, MAX_ACLS,
    MAX_ADDRESS_LEN, MAX_CONFIG_DURATION_MS, MAX_NAMED_PRODUCERS, MAX_PARTITIONS_PER_TOPIC,
    MAX_PRINCIPAL_LEN, MAX_PRODUCER_NAME_LEN, MAX_RECORD_BYTES_LIMIT, MAX_RESOURCE_NAME_LEN,
    MAX_RETENTION_BYTES, MAX_TOPIC_NAME_LEN, MAX_USER_NAME_LEN, MAX_USERS, MIN_RETENTION_BYTES,
    UNLIMITED,
};
pub use state::{
    MAX_PRODUCER_ID_BLOCK, MetaCommand, MetaResponse, MetaState, NodeInfo, PartitionAssignment,
    ProducerCheck, Topic,
};
pub use topic_config::{
    CleanupPolicy, ConfigChange, ConfigSetting, EffectiveLogConfig, LogDefaults, TopicConfig,
    validate_topic_config,
};
pub use validate::{validate_address, validate_producer_name, validate_topic_name};
