//! [`ConfigKey`]: the names of a topic's settings and, in words, the values each takes.
//!
//! Separate from [`crate::topic_config`] so that [`crate::MetaError`] can name a key without
//! depending on the checks (dependencies run one way: `limits` ← `config_key` ← `error`).

use serde::{Deserialize, Serialize};

use crate::limits::{
    DEFAULT_MAX_RECORD_BYTES, MAX_CONFIG_DURATION_MS, MAX_RECORD_BYTES_LIMIT, MAX_RETENTION_BYTES,
    MIN_RETENTION_BYTES,
};

/// One setting of a topic, by the name clients use (`retention_ms`, ...).
///
/// In log entries ([`crate::MetaCommand::AlterTopicConfig`]) a key is encoded by its position
/// in this enum: new keys go at the end, never in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigKey {
    /// How long a record is kept (Kafka's `retention.ms`).
    RetentionMs,
    /// How many bytes a partition keeps (Kafka's `retention.bytes`).
    RetentionBytes,
    /// Delete old records, keep the latest per key, or both (Kafka's `cleanup.policy`).
    CleanupPolicy,
    /// How long a tombstone survives compaction (Kafka's `delete.retention.ms`).
    DeleteRetentionMs,
    /// How long a record stays uncompacted at least (Kafka's `min.compaction.lag.ms`).
    MinCompactionLagMs,
    /// The largest record accepted (Kafka's `max.message.bytes`, per record).
    MaxRecordBytes,
}

impl ConfigKey {
    /// Every key, in the order descriptions list them.
    pub const ALL: [ConfigKey; 6] = [
        ConfigKey::RetentionMs,
        ConfigKey::RetentionBytes,
        ConfigKey::CleanupPolicy,
        ConfigKey::DeleteRetentionMs,
        ConfigKey::MinCompactionLagMs,
        ConfigKey::MaxRecordBytes,
    ];

    /// The key's name, as clients write it.
    pub fn name(self) -> &'static str {
        match self {
            ConfigKey::RetentionMs => "retention_ms",
            ConfigKey::RetentionBytes => "retention_bytes",
            ConfigKey::CleanupPolicy => "cleanup_policy",
            ConfigKey::DeleteRetentionMs => "delete_retention_ms",
            ConfigKey::MinCompactionLagMs => "min_compaction_lag_ms",
            ConfigKey::MaxRecordBytes => "max_record_bytes",
        }
    }

    /// The key named `name`, if any (exact, case-sensitive match).
    pub fn from_name(name: &str) -> Option<ConfigKey> {
        ConfigKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every key's name, comma-separated, for error messages.
    pub fn names() -> String {
        ConfigKey::ALL.map(ConfigKey::name).join(", ")
    }

    /// The values the key takes, in words with the limits' names, for error messages.
    pub fn rule(self) -> String {
        let duration = format!("{MAX_CONFIG_DURATION_MS} ms (MAX_CONFIG_DURATION_MS, 100 years)");
        match self {
            ConfigKey::RetentionMs => format!("-1 (unlimited) or 1 to {duration}"),
            ConfigKey::RetentionBytes => format!(
                "-1 (unlimited) or {MIN_RETENTION_BYTES} (MIN_RETENTION_BYTES, 1 MiB) to \
                 {MAX_RETENTION_BYTES} (MAX_RETENTION_BYTES, 2^50) bytes"
            ),
            ConfigKey::CleanupPolicy => "\"delete\", \"compact\" or \"compact,delete\"".into(),
            ConfigKey::DeleteRetentionMs | ConfigKey::MinCompactionLagMs => {
                format!("0 to {duration}")
            }
            ConfigKey::MaxRecordBytes => format!(
                "1 to {MAX_RECORD_BYTES_LIMIT} bytes (MAX_RECORD_BYTES_LIMIT, 16 MiB), or 0 for \
                 the default of {DEFAULT_MAX_RECORD_BYTES}"
            ),
        }
    }
}

impl std::fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_snake_case() {
        for k in ConfigKey::ALL {
            assert_eq!(ConfigKey::from_name(k.name()), Some(k));
            assert!(
                k.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
        assert_eq!(ConfigKey::from_name("retention.ms"), None);
        assert_eq!(ConfigKey::from_name("Retention_ms"), None);
        assert_eq!(
            ConfigKey::names(),
            "retention_ms, retention_bytes, cleanup_policy, delete_retention_ms, \
             min_compaction_lag_ms, max_record_bytes"
        );
    }

    #[test]
    fn keys_keep_their_encoding() {
        // Logged in AlterTopicConfig commands: the position is the encoding.
        for (i, k) in ConfigKey::ALL.into_iter().enumerate() {
            assert_eq!(postcard::to_stdvec(&k).unwrap(), [i as u8]);
        }
    }
}
