//! fjord's consumer groups, as pure decisions: no I/O, no clock, no randomness (the runtime
//! passes the time and fresh member ids in). A group coordinator (the leader of a
//! coordinator partition, in `fjord-server`) asks these functions what a request does, writes
//! the records they return to its partition's log, and answers once they are committed; every
//! replica replays the committed records into the same [`Groups`].
//!
//! The protocol is Kafka's KIP-848 (server-side assignment, incremental reconciliation,
//! member epochs), so a Kafka-protocol front end can later drive the same decisions.
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
//! - [`offsets`]: commits and fetches fenced by member epoch, resets, deletion, expiry.

pub mod assign;
pub mod error;
pub mod groups;
pub mod heartbeat;
pub mod limits;
pub mod model;
pub mod offsets;
pub mod reconcile;
pub mod record;
pub mod subscription;

pub use error::GroupError;
pub use groups::Groups;
pub use heartbeat::{Beat, Context, Decision, Defaults, HeartbeatAnswer, HeartbeatRequest};
pub use model::{
    Assignor, Committed, Group, GroupMeta, GroupSettings, GroupState, Member, MemberState,
    Subscription, TopicId, TopicInfo, TopicsView, Tp,
};
pub use offsets::{Bounds, Committer, OffsetCommit, ResetTo};
pub use record::GroupRecord;
