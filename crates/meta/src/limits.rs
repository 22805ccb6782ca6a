//! The named limits on metadata (constants only: the error messages and the checks in
//! [`crate::validate`] both name them, so this module depends on nothing).

/// Most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 1024;
/// Longest topic name, in bytes (names are ASCII, so also characters). Kafka's limit, which
/// leaves room for a partition suffix in a 255-byte file name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Largest `max_record_bytes` a topic may configure: 16 MiB.
pub const MAX_RECORD_BYTES_LIMIT: u64 = 16 << 20;
/// `max_record_bytes` of a topic that leaves it at 0: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 1 << 20;
/// Replication factor of a topic created with factor 0, capped at the registered nodes.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;
/// Longest node address: a 253-byte DNS name, a colon and a 5-digit port.
pub const MAX_ADDRESS_LEN: usize = 253 + 1 + 5;
/// Longest producer name (Kafka's `transactional.id`), in bytes.
pub const MAX_PRODUCER_NAME_LEN: usize = 255;
/// Named producers the cluster remembers, at most (each costs the metadata a few dozen bytes).
pub const MAX_NAMED_PRODUCERS: usize = 100_000;

/// `retention_ms` or `retention_bytes` without a limit (Kafka's -1).
pub const UNLIMITED: i64 = -1;
/// Longest duration a topic setting may name, in milliseconds: 100 years of 365 days.
pub const MAX_CONFIG_DURATION_MS: i64 = 100 * 365 * 86_400_000;
/// Smallest finite `retention_bytes`: 1 MiB (a partition keeps at least one full-size
/// record at the default `max_record_bytes`).
pub const MIN_RETENTION_BYTES: i64 = 1 << 20;
/// Largest finite `retention_bytes`: 2^50 bytes (1 PiB).
pub const MAX_RETENTION_BYTES: i64 = 1 << 50;
/// `retention_ms` of a topic that does not set it, unless the server's
/// `--default-retention-ms` says otherwise: 7 days (Kafka's `log.retention.hours` of 168).
pub const DEFAULT_RETENTION_MS: i64 = 7 * 86_400_000;
/// `retention_bytes` by default: unlimited (Kafka's `log.retention.bytes`).
pub const DEFAULT_RETENTION_BYTES: i64 = UNLIMITED;
/// `delete_retention_ms` by default: 1 day (Kafka's `log.cleaner.delete.retention.ms`).
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 86_400_000;
/// `min_compaction_lag_ms` by default: 0 (Kafka's `log.cleaner.min.compaction.lag.ms`).
pub const DEFAULT_MIN_COMPACTION_LAG_MS: i64 = 0;

/// The characters a topic name may use, as written in error messages.
pub(crate) const TOPIC_NAME_CHARS: &str = "[a-zA-Z0-9._-]";

const _: () = assert!(DEFAULT_MAX_RECORD_BYTES <= MAX_RECORD_BYTES_LIMIT);
const _: () = assert!(DEFAULT_RETENTION_MS >= 1 && DEFAULT_RETENTION_MS <= MAX_CONFIG_DURATION_MS);
const _: () = assert!(DEFAULT_DELETE_RETENTION_MS <= MAX_CONFIG_DURATION_MS);
const _: () = assert!(MIN_RETENTION_BYTES as u64 >= DEFAULT_MAX_RECORD_BYTES);

/// Users (bearer-token identities) the cluster holds, at most.
pub const MAX_USERS: usize = 10_000;
/// ACL entries the cluster holds, at most (each request is checked against the entries, so
/// this bounds the cost of a check too).
pub const MAX_ACLS: usize = 10_000;
/// Longest user name, in bytes (names are ASCII).
pub const MAX_USER_NAME_LEN: usize = 128;
/// Longest principal: `User:` and a user name.
pub const MAX_PRINCIPAL_LEN: usize = 5 + MAX_USER_NAME_LEN;
/// Longest resource name or prefix in an ACL entry, in bytes.
pub const MAX_RESOURCE_NAME_LEN: usize = 255;
