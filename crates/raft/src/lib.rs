//! fjord's Raft layer: everything that knows openraft lives in this crate, so an openraft
//! upgrade touches only it.
//!
//! # Layout
//! - [`types`]: the type configuration ([`TypeConfig`]) and the commands a group replicates
//!   ([`Request`]: a record batch for a partition, a metadata command for the controller).
//! - [`codec`]: postcard encoding with typed errors, and how log entries are stored.
//! - [`log_store`]: openraft's log storage over the node's shared redb [`Store`]. Appends go
//!   through the group-commit writer and are durable before openraft hears they are flushed.
//!   For a partition it also maintains the offset index in the same transaction.
//! - [`partition_sm`]: a partition's state machine: offsets and producer de-duplication. It
//!   holds no record bytes: the log is the partition.
//! - [`read`]: a partition's committed batches, read back from its log through the offset
//!   index, each checked against its CRC-32C.
//! - [`meta_sm`]: the metadata (controller) state machine over [`fjord_meta::MetaState`].
//! - [`peer`]: the node-to-node protocol, whole: its messages and their encoding, the
//!   connections to the peers (one per peer node, shared by every group, each message tagged
//!   with its group id), the typed client, openraft's network over it, and the gRPC service
//!   that hands Raft messages to the groups and the rest to the node's handler.
//! - [`group`]: building and running one group with fjord's Raft settings, and the registry
//!   of a node's groups.
//! - [`side`]: the AP writes a leader holds while no majority answers it (the minority side
//!   of a network partition), and when it proposes or drops them.
//! - [`order`]: a leader proposes each producer's batches in sequence order, though their
//!   produce requests are handled concurrently (an optimisation; the partition rules decide).
//! - [`runtime`]: the async runtime of the groups: Tokio, with randomness (election timeouts)
//!   that a simulation can seed.
//! - [`handoff`]: which follower a stopping leader hands a group over to (pure).
//! - [`handle`]: what the server drives a group with ([`PartitionHandle`], [`MetaHandle`]),
//!   in fjord's own types: the server never names an openraft type. It starts, hibernates
//!   and stops a group's openraft instance as `lifecycle` decides.
//! - `lifecycle`: a group's lifecycle on this node (running, starting, hibernating,
//!   hibernated, stopped) and its timer switches, one state with pure transitions.
//! - [`quiesce`]: idle groups: when a group goes quiet (no ticks, no heartbeats) and what
//!   wakes it, as pure decisions, and the per-group switch over openraft's timers.
//! - [`scan`]: the liveness round's look at each group (wake, campaign, claim, hibernate),
//!   as a pure decision returning actions.
//! - [`claims`]: the claims of quiet groups a node heartbeat carries: how a follower's node
//!   answers them and what the leader's node does with the answer, as pure decisions.
//! - [`liveness`]: one heartbeat per peer node, the failure detector, and the driver of
//!   quiescing: it gathers each group's state, asks [`scan`] and [`claims`], and performs
//!   the actions.
//!
//! [`Store`]: fjord_storage::Store

pub mod claims;
pub mod codec;
pub mod compaction;
pub mod group;
pub mod handle;
pub mod handoff;
mod lifecycle;
pub mod liveness;
pub mod log_store;
pub mod meta_sm;
pub mod order;
pub mod partition_sm;
pub mod peer;
pub mod quiesce;
pub mod read;
pub mod retention_notes;
pub mod runtime;
pub mod scan;
pub mod side;
pub mod time_rows;
pub mod types;
pub mod voters;

pub use group::{AnyGroup, GroupConfig, GroupRegistry, GroupRole, MetaRaft, PartitionRaft};
pub use handle::{GroupError, Leadership, LeadershipWatch, MetaHandle, PartitionHandle, Promotion};
pub use liveness::{Liveness, LivenessConfig, QuietCounts};
pub use read::{CommittedBatch, ReadError, ReadLimits, committed_batches};
pub use retention_notes::{Noted, RetentionNotes};
pub use types::{CompactRequest, Compaction, NodeId, Request, Response, StoredBatch, TypeConfig};
