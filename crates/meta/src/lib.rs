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
//!   and addresses against them, shared by [`MetaState::apply`] and [`MetaState::validate`]
//!   (a topic config's check is in [`state`], beside the config). Dependencies run one way:
//!   `limits` ← `error` ← `validate` ← `state`.
//! - [`state`]: [`MetaState`], the commands that change it, its invariants and its queries.
//! - [`assign`]: [`assign_replicas`], placement of new partitions' replicas.
//! - [`identity`]: data directory identities and [`check_boot`], whether a node may take part.
//! - [`balance`]: [`plan_leader_moves`], leader balancing across live nodes.

pub mod assign;
pub mod balance;
pub mod error;
pub mod identity;
pub mod ids;
pub mod limits;
pub mod state;
pub mod validate;

pub use assign::assign_replicas;
pub use balance::{LeaderMove, plan_leader_moves};
pub use error::MetaError;
pub use identity::{
    BootRefusal, BootVerdict, DiskIdentity, IncarnationRecord, PeerReport, check_boot,
};
pub use ids::{GroupId, META_GROUP, NodeId, group_id, split_group_id};
pub use limits::{
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_REPLICATION_FACTOR, MAX_ADDRESS_LEN, MAX_NAMED_PRODUCERS,
    MAX_PARTITIONS_PER_TOPIC, MAX_PRODUCER_NAME_LEN, MAX_RECORD_BYTES_LIMIT, MAX_TOPIC_NAME_LEN,
};
pub use state::validate_topic_config;
pub use state::{
    MAX_PRODUCER_ID_BLOCK, MetaCommand, MetaResponse, MetaState, MetaStateV1, MetaStateV2,
    NodeInfo, PartitionAssignment, ProducerCheck, Topic, TopicConfig,
};
pub use validate::{validate_address, validate_producer_name, validate_topic_name};
