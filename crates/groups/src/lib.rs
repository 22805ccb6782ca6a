//! fjord's consumer groups, as pure decisions: no I/O, no clock, no randomness (the runtime
//! passes the time and fresh member ids in). A group coordinator (the leader of a
//! coordinator partition, in `fjord-server`) asks these functions what a request does, writes
//! the records they return to its partition's log, and answers once they are committed; every
//! replica replays the committed records into the same [`Groups`].
//!
//! The protocol is Kafka's KIP-848 (server-side assignment, incremental reconciliation,
//! member epochs), so a Kafka-protocol front end can later drive the same decisions.
//!
//! Groups live on the partitions of the internal topic [`GROUPS_TOPIC`], each group on the
//! partition its name hashes to ([`coordinator_partition`]).
//!
//! # Layout
//! - [`limits`]: the named limits; [`error`]: [`GroupError`], each refusal and its limit.
//! - [`model`]: groups, members, targets and committed offsets, and their invariants.
//! - [`record`]: the records a coordinator partition's log holds (keyed, with tombstones, so
//!   a compacted log replays the same), their encoding.
//! - [`groups`]: [`Groups`], the replay of a partition's records; the scratch copy a decision
//!   records its changes on.
//! - [`subscription`]: subscriptions (names and RE2-style patterns) and what they resolve to.
//! - [`assign`]: the uniform (sticky) and range assignors.
//! - [`reconcile`]: a member's move to its target: revoke first, assign once released.
//! - [`heartbeat`]: join, heartbeat, leave, and removal on timeout.
//! - [`config`]: a group's overrides of the server's defaults (AlterGroupConfig), and the
//!   settings in force.
//! - [`offsets`]: commits and fetches fenced by member epoch, resets, deletion, expiry.

pub mod assign;
pub mod config;
pub mod error;
pub mod groups;
pub mod heartbeat;
pub mod limits;
pub mod model;
pub mod offsets;
pub mod reconcile;
pub mod record;
pub mod subscription;

/// The internal topic whose partitions hold the groups: a group lives on partition
/// [`coordinator_partition`] of it, and that partition's leader is its coordinator.
pub const GROUPS_TOPIC: &str = "__fjord_groups";
/// Topic names starting with this are fjord's own: clients cannot create, delete or produce
/// to them.
pub const INTERNAL_TOPIC_PREFIX: &str = "__fjord";
/// The partitions of [`GROUPS_TOPIC`] when a cluster creates it (on its first group
/// request); fixed from then on, since a group's partition follows from it.
pub const DEFAULT_COORDINATOR_PARTITIONS: u32 = 16;

/// The partition of [`GROUPS_TOPIC`] that holds `group`: FNV-1a of its name, modulo the
/// partition count (stable across versions and platforms: it places stored data).
pub fn coordinator_partition(group: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

pub use error::GroupError;
pub use groups::Groups;
pub use heartbeat::{Beat, Context, Decision, Defaults, HeartbeatAnswer, HeartbeatRequest};
pub use model::{
    Assignor, Committed, Group, GroupConfig, GroupMeta, GroupSettings, GroupState, Member,
    MemberState, Subscription, TopicId, TopicInfo, TopicsView, Tp,
};
pub use offsets::{Bounds, Committer, OffsetCommit, ResetTo};
pub use record::GroupRecord;

#[cfg(test)]
mod tests {
    #[test]
    fn a_group_s_partition_never_changes() {
        // It places stored data: these values are fixed forever.
        assert_eq!(super::coordinator_partition("", 16), 5);
        assert_eq!(super::coordinator_partition("orders-service", 16), 6);
        assert!(super::coordinator_partition("x", 1) == 0);
    }
}
