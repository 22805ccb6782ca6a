//! [`GroupError`]: why a group request was refused. Every variant says what was wrong and,
//! where a limit applies, which one; the server maps each to one gRPC code.

/// Why a group request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// A malformed request: a name, id, timeout or subscription outside its limits.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// The member is not (or no longer) in the group: it was removed (session timeout, a
    /// replacement with its instance id, the group deleted). It must rejoin with epoch 0.
    #[error(
        "member {member:?} is not a member of group {group:?}: rejoin the group with member epoch 0"
    )]
    UnknownMember { group: String, member: String },
    /// A member replaced by a newer member with its instance id (a static member started
    /// again, or a second process given the same instance id): it must not rejoin with that
    /// instance id, or the two would take the partitions from each other for ever. Fatal for
    /// the member (Kafka's FENCED_INSTANCE_ID).
    #[error(
        "member {member:?} of group {group:?} was replaced by a newer member with its instance id {instance:?}: \
         this consumer is fenced for good; give every consumer process its own instance id"
    )]
    FencedInstance {
        group: String,
        member: String,
        instance: String,
    },
    /// The member's epoch is not one the coordinator can accept: it was fenced (for example
    /// after a pause past its session timeout). It must give up its partitions and rejoin.
    #[error(
        "member {member:?} of group {group:?} sent member epoch {sent}, the coordinator holds epoch {current}: \
         the member was fenced; give up its partitions and rejoin with member epoch 0"
    )]
    FencedMemberEpoch {
        group: String,
        member: String,
        sent: u32,
        current: u32,
    },
    /// An offset commit or fetch with an epoch older than the one the partition was assigned
    /// at (or newer than the member's): retry after the next heartbeat.
    #[error(
        "member {member:?} of group {group:?} sent member epoch {sent} for {topic}/{partition}, \
         which it owns since epoch {assigned_at} (its epoch is {current}): heartbeat, then retry"
    )]
    StaleMemberEpoch {
        group: String,
        member: String,
        topic: String,
        partition: u32,
        sent: u32,
        assigned_at: u32,
        current: u32,
    },
    /// An offset commit for a partition the member does not own.
    #[error(
        "member {member:?} of group {group:?} does not own {topic}/{partition}: only its owner may commit its offset"
    )]
    NotOwned {
        group: String,
        member: String,
        topic: String,
        partition: u32,
    },
    /// An offset commit above the partition's high watermark: nothing there was ever
    /// readable, so no consumer can have been handed it.
    #[error(
        "offset {offset} of {topic}/{partition} is above the partition's high watermark {high_watermark}: \
         commit the offset of the next record to read, at most the high watermark"
    )]
    OffsetAboveHighWatermark {
        topic: String,
        partition: u32,
        offset: u64,
        high_watermark: u64,
    },
    /// A topic or partition that does not exist.
    #[error("unknown {what}")]
    UnknownPartition { what: String },
    /// No such group.
    #[error("unknown group {group:?}")]
    UnknownGroup { group: String },
    /// An operation that needs an empty group (delete, offset reset) on a group with members.
    #[error(
        "group {group:?} has {members} member(s): {what} needs an empty group (stop its consumers first)"
    )]
    NotEmpty {
        group: String,
        members: usize,
        what: &'static str,
    },
    /// The group has as many members as it may.
    #[error(
        "group {group:?} has {limit} members, the most a group may have (MAX_MEMBERS_PER_GROUP)"
    )]
    GroupFull { group: String, limit: usize },
    /// The coordinator holds as many groups as it may.
    #[error(
        "this coordinator holds {limit} groups, the most it may (MAX_GROUPS_PER_COORDINATOR); \
         delete unused groups"
    )]
    TooManyGroups { limit: usize },
}

impl GroupError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        GroupError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
