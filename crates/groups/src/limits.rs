//! The named limits of consumer groups. Each one is checked where its input enters (a
//! request, a subscription, a commit) and named in the error that refuses it.

/// A group name's length in bytes, at most (as a topic name's).
pub const MAX_GROUP_NAME_LEN: usize = 255;
/// A member id's and an instance id's length in bytes, at most.
pub const MAX_MEMBER_ID_LEN: usize = 255;
/// A client id's and client host's length in bytes, at most (longer ones are cut, not refused:
/// they are only shown).
pub const MAX_CLIENT_INFO_LEN: usize = 255;
/// Topic names in one member's subscription, at most.
pub const MAX_SUBSCRIBED_TOPICS: usize = 1_000;
/// A subscription pattern's length in bytes, at most.
pub const MAX_PATTERN_LEN: usize = 1_024;
/// The compiled size of a subscription pattern, at most (the `regex` crate's size limit).
pub const MAX_PATTERN_COMPILED_BYTES: usize = 1 << 20;
/// Members of one group, at most.
pub const MAX_MEMBERS_PER_GROUP: usize = 1_000;
/// Groups one coordinator partition holds, at most (groups with members or committed
/// offsets). The cluster's limit is this times the number of coordinator partitions.
pub const MAX_GROUPS_PER_COORDINATOR: usize = 100_000;
/// Partitions in one offset commit or fetch, at most.
pub const MAX_OFFSETS_PER_REQUEST: usize = 10_000;
/// A committed offset's metadata string, in bytes, at most (Kafka's default is 4096).
pub const MAX_OFFSET_METADATA_BYTES: usize = 4_096;

/// The session timeout when a group does not override it (Kafka's `group.consumer.session.timeout.ms`).
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 45_000;
/// The session timeout a group may set, from this…
pub const MIN_SESSION_TIMEOUT_MS: u32 = 1_000;
/// …to this.
pub const MAX_SESSION_TIMEOUT_MS: u32 = 3_600_000;
/// The heartbeat interval when a group does not override it (Kafka's 5 s).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 5_000;
/// The heartbeat interval a group may set, from this…
pub const MIN_HEARTBEAT_INTERVAL_MS: u32 = 100;
/// …to this; and always below its session timeout.
pub const MAX_HEARTBEAT_INTERVAL_MS: u32 = 600_000;
/// The rebalance timeout when a member does not give one: how long it may take to revoke
/// partitions before it is removed.
pub const DEFAULT_REBALANCE_TIMEOUT_MS: u32 = 300_000;
/// A member's rebalance timeout, at most.
pub const MAX_REBALANCE_TIMEOUT_MS: u32 = 3_600_000;
/// How long the committed offsets of a group with no members are kept (Kafka's
/// `offsets.retention.minutes`: 7 days), unless the server sets another retention.
pub const DEFAULT_OFFSET_RETENTION_MS: i64 = 7 * 24 * 3_600_000;
/// The offset retention a server may set, from this…
pub const MIN_OFFSET_RETENTION_MS: i64 = 1_000;
/// …to this (a year).
pub const MAX_OFFSET_RETENTION_MS: i64 = 365 * 24 * 3_600_000;
