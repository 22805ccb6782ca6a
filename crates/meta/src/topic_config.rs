//! A topic's settings ([`TopicConfig`]): each key's meaning and limits, how an alter
//! ([`ConfigChange`]) changes them, the cluster's defaults ([`LogDefaults`]) and the settings in
//! force ([`EffectiveLogConfig`]).
//!
//! Everything here is pure. The checks ([`ConfigSetting::check`], [`validate_topic_config`],
//! [`ConfigChange::check`]) guard [`crate::MetaState::apply`] and [`crate::MetaState::validate`],
//! and the server uses the same ones for its request edge and its flags, so none of them can
//! disagree about what is allowed. Every refusal is a [`MetaError`] naming the key, the value
//! and the limit.
//!
//! What the log settings mean is Kafka's (its topic configs of the same names, with `_` for
//! `.`); this module only stores and resolves them, the partitions' retention reads them
//! through [`TopicConfig::effective`].
//!
//! Encoding: a [`TopicConfig`] is in metadata snapshots and log entries (postcard: fields by
//! position, no defaults), so its shape never changes in place: the shape before the log
//! settings is [`crate::legacy::TopicConfigV1`], which the older commands still carry.

use serde::{Deserialize, Serialize};

use crate::config_key::ConfigKey;
use crate::error::{MetaError, clip};
use crate::limits::{
    DEFAULT_DELETE_RETENTION_MS, DEFAULT_MAX_RECORD_BYTES, DEFAULT_MIN_COMPACTION_LAG_MS,
    DEFAULT_RETENTION_BYTES, DEFAULT_RETENTION_MS, MAX_CONFIG_DURATION_MS, MAX_RECORD_BYTES_LIMIT,
    MAX_RETENTION_BYTES, MIN_RETENTION_BYTES, UNLIMITED,
};

/// What happens to a partition's old records (Kafka's `cleanup.policy`).
///
/// Encoded by position in snapshots and log entries: new policies go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CleanupPolicy {
    /// `delete`: records older than `retention_ms`, and the oldest beyond `retention_bytes`
    /// per partition, are deleted.
    Delete,
    /// `compact`: of the records with the same key, only the latest is kept (once older than
    /// `min_compaction_lag_ms`); a tombstone is removed `delete_retention_ms` after it was
    /// compacted. Retention by time and size does not apply.
    Compact,
    /// `compact,delete`: both: compacted, and deleted by `retention_ms` and `retention_bytes`.
    CompactDelete,
}

impl CleanupPolicy {
    /// The name clients use: `delete`, `compact` or `compact,delete` (Kafka's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Whether old records are deleted by age and size (`retention_ms`, `retention_bytes`).
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Whether the partition is compacted (the latest record per key kept).
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

impl std::fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a comma-separated list of `delete` and `compact` (in either order, as Kafka does;
/// spaces around an item are ignored): `delete`, `compact`, `compact,delete`.
impl std::str::FromStr for CleanupPolicy {
    type Err = MetaError;

    fn from_str(s: &str) -> Result<Self, MetaError> {
        let bad = || MetaError::InvalidConfigValue {
            key: ConfigKey::CleanupPolicy,
            value: clip(s),
        };
        let (mut delete, mut compact) = (false, false);
        for item in s.split(',').map(str::trim) {
            match item {
                "delete" => delete = true,
                "compact" => compact = true,
                _ => return Err(bad()),
            }
        }
        match (delete, compact) {
            (true, false) => Ok(CleanupPolicy::Delete),
            (false, true) => Ok(CleanupPolicy::Compact),
            (true, true) => Ok(CleanupPolicy::CompactDelete),
            (false, false) => Err(bad()),
        }
    }
}

/// Per-topic settings. A `None` (for `max_record_bytes`, 0) is the cluster default: for the
/// log settings the server's `--default-*` flags ([`LogDefaults`]), which may differ from node
/// to node; for `max_record_bytes`, [`DEFAULT_MAX_RECORD_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TopicConfig {
    /// Largest record accepted, in bytes; 0 means the cluster default
    /// ([`DEFAULT_MAX_RECORD_BYTES`]). At most [`MAX_RECORD_BYTES_LIMIT`].
    pub max_record_bytes: u64,
    /// How long a record is kept, in ms: [`UNLIMITED`], or 1 to [`MAX_CONFIG_DURATION_MS`].
    pub retention_ms: Option<i64>,
    /// How many bytes of records a partition keeps, at most: [`UNLIMITED`], or
    /// [`MIN_RETENTION_BYTES`] to [`MAX_RETENTION_BYTES`].
    pub retention_bytes: Option<i64>,
    /// Deletion, compaction or both.
    pub cleanup_policy: Option<CleanupPolicy>,
    /// How long a tombstone survives compaction, in ms: 0 to [`MAX_CONFIG_DURATION_MS`].
    pub delete_retention_ms: Option<i64>,
    /// How long a record stays uncompacted at least, in ms: 0 to [`MAX_CONFIG_DURATION_MS`].
    pub min_compaction_lag_ms: Option<i64>,
}

/// One setting with its value: a [`ConfigKey`] and a value of the key's type.
///
/// Encoded by position in log entries ([`crate::MetaCommand::AlterTopicConfig`]): new
/// settings go at the end, in the order of [`ConfigKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigSetting {
    RetentionMs(i64),
    RetentionBytes(i64),
    CleanupPolicy(CleanupPolicy),
    DeleteRetentionMs(i64),
    MinCompactionLagMs(i64),
    MaxRecordBytes(u64),
}

impl ConfigSetting {
    /// The setting's key.
    pub fn key(self) -> ConfigKey {
        match self {
            ConfigSetting::RetentionMs(_) => ConfigKey::RetentionMs,
            ConfigSetting::RetentionBytes(_) => ConfigKey::RetentionBytes,
            ConfigSetting::CleanupPolicy(_) => ConfigKey::CleanupPolicy,
            ConfigSetting::DeleteRetentionMs(_) => ConfigKey::DeleteRetentionMs,
            ConfigSetting::MinCompactionLagMs(_) => ConfigKey::MinCompactionLagMs,
            ConfigSetting::MaxRecordBytes(_) => ConfigKey::MaxRecordBytes,
        }
    }

    /// The value as clients write it (`604800000`, `compact,delete`).
    pub fn value_text(self) -> String {
        match self {
            ConfigSetting::RetentionMs(v)
            | ConfigSetting::RetentionBytes(v)
            | ConfigSetting::DeleteRetentionMs(v)
            | ConfigSetting::MinCompactionLagMs(v) => v.to_string(),
            ConfigSetting::CleanupPolicy(p) => p.as_str().to_string(),
            ConfigSetting::MaxRecordBytes(v) => v.to_string(),
        }
    }

    /// Whether the value is within the key's limits (see [`ConfigKey::rule`]).
    pub fn is_valid(self) -> bool {
        let duration = 0..=MAX_CONFIG_DURATION_MS;
        match self {
            ConfigSetting::RetentionMs(v) => {
                v == UNLIMITED || (1..=MAX_CONFIG_DURATION_MS).contains(&v)
            }
            ConfigSetting::RetentionBytes(v) => {
                v == UNLIMITED || (MIN_RETENTION_BYTES..=MAX_RETENTION_BYTES).contains(&v)
            }
            ConfigSetting::CleanupPolicy(_) => true,
            ConfigSetting::DeleteRetentionMs(v) | ConfigSetting::MinCompactionLagMs(v) => {
                duration.contains(&v)
            }
            ConfigSetting::MaxRecordBytes(v) => v <= MAX_RECORD_BYTES_LIMIT,
        }
    }

    /// The value within the key's limits, or the error naming key, value and limit.
    pub fn check(self) -> Result<ConfigSetting, MetaError> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(MetaError::InvalidConfigValue {
                key: self.key(),
                value: self.value_text(),
            })
        }
    }

    /// Parses `key` = `value` as clients write them (`retention_ms` = `60000`), and checks
    /// the value's limits.
    pub fn parse(key: &str, value: &str) -> Result<ConfigSetting, MetaError> {
        let key = ConfigKey::from_name(key)
            .ok_or_else(|| MetaError::UnknownConfigKey { key: clip(key) })?;
        ConfigSetting::parse_value(key, value)
    }

    /// Parses `value` as a value of `key` (a decimal integer, or for `cleanup_policy` a
    /// policy) and checks its limits.
    pub fn parse_value(key: ConfigKey, value: &str) -> Result<ConfigSetting, MetaError> {
        let bad = || MetaError::InvalidConfigValue {
            key,
            value: clip(value),
        };
        let int = || value.parse::<i64>().map_err(|_| bad());
        let setting = match key {
            ConfigKey::RetentionMs => ConfigSetting::RetentionMs(int()?),
            ConfigKey::RetentionBytes => ConfigSetting::RetentionBytes(int()?),
            ConfigKey::CleanupPolicy => ConfigSetting::CleanupPolicy(value.parse()?),
            ConfigKey::DeleteRetentionMs => ConfigSetting::DeleteRetentionMs(int()?),
            ConfigKey::MinCompactionLagMs => ConfigSetting::MinCompactionLagMs(int()?),
            ConfigKey::MaxRecordBytes => {
                ConfigSetting::MaxRecordBytes(value.parse::<u64>().map_err(|_| bad())?)
            }
        };
        setting.check()
    }
}

/// An alter of a topic's config: settings to set, and keys to reset to the cluster default.
/// Keys named in neither keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigChange {
    /// Set, each within its limits.
    pub set: Vec<ConfigSetting>,
    /// Back to the cluster default.
    pub reset: Vec<ConfigKey>,
}

impl ConfigChange {
    /// Parses an alter as clients send it (`key` = `value` pairs to set, keys to reset), each
    /// key and value checked, in key order; see [`ConfigChange::check`] for the whole.
    pub fn parse<'a>(
        set: impl IntoIterator<Item = (&'a str, &'a str)>,
        reset: impl IntoIterator<Item = &'a str>,
    ) -> Result<ConfigChange, MetaError> {
        let mut set = set
            .into_iter()
            .map(|(k, v)| ConfigSetting::parse(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut reset = reset
            .into_iter()
            .map(|k| {
                ConfigKey::from_name(k).ok_or_else(|| MetaError::UnknownConfigKey { key: clip(k) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        set.sort_by_key(|s| s.key());
        reset.sort();
        let change = ConfigChange { set, reset };
        change.check()?;
        Ok(change)
    }

    /// Checks the alter as a whole: every value within its limits, each key named once (set
    /// or reset), and at least one key.
    pub fn check(&self) -> Result<(), MetaError> {
        for s in &self.set {
            s.check()?;
        }
        let mut seen = [false; ConfigKey::ALL.len()];
        for key in self
            .set
            .iter()
            .map(|s| s.key())
            .chain(self.reset.iter().copied())
        {
            let slot = &mut seen[key as usize];
            if *slot {
                return Err(MetaError::ConfigKeyRepeated { key });
            }
            *slot = true;
        }
        if self.set.is_empty() && self.reset.is_empty() {
            return Err(MetaError::NoConfigChange);
        }
        Ok(())
    }
}

impl TopicConfig {
    /// The record size limit in force, with 0 resolved to [`DEFAULT_MAX_RECORD_BYTES`].
    pub fn effective_max_record_bytes(&self) -> u64 {
        if self.max_record_bytes == 0 {
            DEFAULT_MAX_RECORD_BYTES
        } else {
            self.max_record_bytes
        }
    }

    /// The topic's own value of `key`; `None` when it is the cluster default.
    pub fn get(&self, key: ConfigKey) -> Option<ConfigSetting> {
        match key {
            ConfigKey::RetentionMs => self.retention_ms.map(ConfigSetting::RetentionMs),
            ConfigKey::RetentionBytes => self.retention_bytes.map(ConfigSetting::RetentionBytes),
            ConfigKey::CleanupPolicy => self.cleanup_policy.map(ConfigSetting::CleanupPolicy),
            ConfigKey::DeleteRetentionMs => self
                .delete_retention_ms
                .map(ConfigSetting::DeleteRetentionMs),
            ConfigKey::MinCompactionLagMs => self
                .min_compaction_lag_ms
                .map(ConfigSetting::MinCompactionLagMs),
            ConfigKey::MaxRecordBytes => (self.max_record_bytes != 0)
                .then_some(ConfigSetting::MaxRecordBytes(self.max_record_bytes)),
        }
    }

    /// The settings the topic sets itself, in key order.
    pub fn settings(&self) -> impl Iterator<Item = ConfigSetting> + '_ {
        ConfigKey::ALL.into_iter().filter_map(|k| self.get(k))
    }

    /// This config with `change` made, or the reason it cannot be (see
    /// [`ConfigChange::check`]); `self` is left as it is either way.
    pub fn altered(&self, change: &ConfigChange) -> Result<TopicConfig, MetaError> {
        change.check()?;
        let mut c = self.clone();
        for s in &change.set {
            c.set(*s);
        }
        for k in &change.reset {
            c.reset(*k);
        }
        Ok(c)
    }

    fn set(&mut self, s: ConfigSetting) {
        match s {
            ConfigSetting::RetentionMs(v) => self.retention_ms = Some(v),
            ConfigSetting::RetentionBytes(v) => self.retention_bytes = Some(v),
            ConfigSetting::CleanupPolicy(p) => self.cleanup_policy = Some(p),
            ConfigSetting::DeleteRetentionMs(v) => self.delete_retention_ms = Some(v),
            ConfigSetting::MinCompactionLagMs(v) => self.min_compaction_lag_ms = Some(v),
            ConfigSetting::MaxRecordBytes(v) => self.max_record_bytes = v,
        }
    }

    fn reset(&mut self, key: ConfigKey) {
        match key {
            ConfigKey::RetentionMs => self.retention_ms = None,
            ConfigKey::RetentionBytes => self.retention_bytes = None,
            ConfigKey::CleanupPolicy => self.cleanup_policy = None,
            ConfigKey::DeleteRetentionMs => self.delete_retention_ms = None,
            ConfigKey::MinCompactionLagMs => self.min_compaction_lag_ms = None,
            ConfigKey::MaxRecordBytes => self.max_record_bytes = 0,
        }
    }

    /// Every setting in force: the topic's own, else `defaults`'.
    pub fn effective(&self, defaults: &LogDefaults) -> EffectiveLogConfig {
        EffectiveLogConfig {
            retention_ms: self.retention_ms.unwrap_or(defaults.retention_ms),
            retention_bytes: self.retention_bytes.unwrap_or(defaults.retention_bytes),
            cleanup_policy: self.cleanup_policy.unwrap_or(defaults.cleanup_policy),
            delete_retention_ms: self
                .delete_retention_ms
                .unwrap_or(defaults.delete_retention_ms),
            min_compaction_lag_ms: self
                .min_compaction_lag_ms
                .unwrap_or(defaults.min_compaction_lag_ms),
            max_record_bytes: self.effective_max_record_bytes(),
        }
    }
}

/// Checks every setting a topic config sets against its limits (see [`ConfigKey::rule`]).
pub fn validate_topic_config(config: &TopicConfig) -> Result<(), MetaError> {
    config.settings().try_for_each(|s| s.check().map(drop))
}

/// The log settings of topics that do not set their own: the server's `--default-*` flags
/// (Kafka's broker-level `log.retention.ms` and so on). Each node has its own, so they should
/// be the same on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogDefaults {
    /// [`UNLIMITED`] or 1 to [`MAX_CONFIG_DURATION_MS`]; [`DEFAULT_RETENTION_MS`] (7 days).
    pub retention_ms: i64,
    /// [`UNLIMITED`] or [`MIN_RETENTION_BYTES`] to [`MAX_RETENTION_BYTES`];
    /// [`DEFAULT_RETENTION_BYTES`] (unlimited).
    pub retention_bytes: i64,
    /// [`CleanupPolicy::Delete`].
    pub cleanup_policy: CleanupPolicy,
    /// 0 to [`MAX_CONFIG_DURATION_MS`]; [`DEFAULT_DELETE_RETENTION_MS`] (1 day).
    pub delete_retention_ms: i64,
    /// 0 to [`MAX_CONFIG_DURATION_MS`]; [`DEFAULT_MIN_COMPACTION_LAG_MS`] (0).
    pub min_compaction_lag_ms: i64,
}

impl Default for LogDefaults {
    /// Kafka's defaults.
    fn default() -> Self {
        LogDefaults {
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: DEFAULT_RETENTION_BYTES,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_compaction_lag_ms: DEFAULT_MIN_COMPACTION_LAG_MS,
        }
    }
}

impl LogDefaults {
    /// Checks each default against the limits a topic's own value has.
    pub fn validate(&self) -> Result<(), MetaError> {
        [
            ConfigSetting::RetentionMs(self.retention_ms),
            ConfigSetting::RetentionBytes(self.retention_bytes),
            ConfigSetting::CleanupPolicy(self.cleanup_policy),
            ConfigSetting::DeleteRetentionMs(self.delete_retention_ms),
            ConfigSetting::MinCompactionLagMs(self.min_compaction_lag_ms),
        ]
        .into_iter()
        .try_for_each(|s| s.check().map(drop))
    }
}

/// A topic's settings in force, every default resolved ([`TopicConfig::effective`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLogConfig {
    /// [`UNLIMITED`] or 1 to [`MAX_CONFIG_DURATION_MS`].
    pub retention_ms: i64,
    /// Per partition: [`UNLIMITED`] or [`MIN_RETENTION_BYTES`] to [`MAX_RETENTION_BYTES`].
    pub retention_bytes: i64,
    pub cleanup_policy: CleanupPolicy,
    /// 0 to [`MAX_CONFIG_DURATION_MS`].
    pub delete_retention_ms: i64,
    /// 0 to [`MAX_CONFIG_DURATION_MS`].
    pub min_compaction_lag_ms: i64,
    /// 1 to [`MAX_RECORD_BYTES_LIMIT`].
    pub max_record_bytes: u64,
}

impl EffectiveLogConfig {
    /// The age, in ms, past which records are deleted: `None` when `retention_ms` is
    /// unlimited or the policy does not delete (Kafka: retention applies to `delete` and
    /// `compact,delete` only).
    pub fn delete_after_ms(&self) -> Option<i64> {
        (self.cleanup_policy.deletes() && self.retention_ms != UNLIMITED)
            .then_some(self.retention_ms)
    }

    /// The bytes a partition keeps, beyond which its oldest records are deleted: `None` when
    /// `retention_bytes` is unlimited or the policy does not delete.
    pub fn delete_beyond_bytes(&self) -> Option<u64> {
        if !self.cleanup_policy.deletes() {
            return None;
        }
        u64::try_from(self.retention_bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(key: &str, value: &str) -> MetaError {
        ConfigSetting::parse(key, value).expect_err(value)
    }

    #[test]
    fn each_key_accepts_its_limits_and_refuses_past_them() {
        let d = MAX_CONFIG_DURATION_MS;
        let cases: [(&str, &[i128], &[i128]); 5] = [
            ("retention_ms", &[-1, 1, d.into()], &[-2, 0, (d + 1).into()]),
            (
                "retention_bytes",
                &[-1, MIN_RETENTION_BYTES.into(), MAX_RETENTION_BYTES.into()],
                &[
                    0,
                    1,
                    (MIN_RETENTION_BYTES - 1).into(),
                    (MAX_RETENTION_BYTES + 1).into(),
                ],
            ),
            ("delete_retention_ms", &[0, d.into()], &[-1, (d + 1).into()]),
            (
                "min_compaction_lag_ms",
                &[0, 1, d.into()],
                &[-1, (d + 1).into()],
            ),
            (
                "max_record_bytes",
                &[0, 1, MAX_RECORD_BYTES_LIMIT.into()],
                &[-1, (MAX_RECORD_BYTES_LIMIT + 1).into()],
            ),
        ];
        for (key, good, bad) in cases {
            for v in good {
                let s = ConfigSetting::parse(key, &v.to_string()).unwrap();
                assert_eq!(s.key().name(), key);
                assert_eq!(s.value_text(), v.to_string());
            }
            for v in bad {
                let e = err(key, &v.to_string());
                let k = ConfigKey::from_name(key).unwrap();
                assert_eq!(
                    e,
                    MetaError::InvalidConfigValue {
                        key: k,
                        value: v.to_string()
                    }
                );
                let msg = e.to_string();
                assert!(msg.contains(key) && msg.contains(&k.rule()), "{msg}");
            }
        }
    }

    #[test]
    fn errors_name_the_key_the_value_and_the_limit() {
        assert_eq!(
            err("retention_ms", "0").to_string(),
            "invalid topic config retention_ms = \"0\": use -1 (unlimited) or 1 to \
             3153600000000 ms (MAX_CONFIG_DURATION_MS, 100 years)"
        );
        let msg = err("retention_bytes", "1000").to_string();
        assert!(
            msg.contains("1048576 (MIN_RETENTION_BYTES, 1 MiB)"),
            "{msg}"
        );
        let msg = err("max_record_bytes", "16777217").to_string();
        assert!(
            msg.contains("16777216 bytes (MAX_RECORD_BYTES_LIMIT"),
            "{msg}"
        );
        let msg = err("retention_ms", "1h").to_string();
        assert!(msg.contains("retention_ms = \"1h\""), "{msg}");
        assert_eq!(
            err("retention.ms", "1").to_string(),
            "unknown topic config key \"retention.ms\": the keys are retention_ms, \
             retention_bytes, cleanup_policy, delete_retention_ms, min_compaction_lag_ms, \
             max_record_bytes"
        );
        // Huge input is echoed bounded.
        let msg = err(&"k".repeat(100_000), "1").to_string();
        assert!(msg.len() < 1_000, "{}", msg.len());
    }

    #[test]
    fn cleanup_policies_parse_in_kafkas_spellings() {
        for (text, policy) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("delete,compact", CleanupPolicy::CompactDelete),
            ("compact, delete", CleanupPolicy::CompactDelete),
        ] {
            assert_eq!(text.parse::<CleanupPolicy>(), Ok(policy), "{text}");
            assert_eq!(policy.as_str().parse::<CleanupPolicy>(), Ok(policy));
        }
        for bad in ["", "Delete", "compact,", "retain", ","] {
            let e = err("cleanup_policy", bad);
            assert!(e.to_string().contains("\"compact,delete\""), "{e}");
        }
        assert!(CleanupPolicy::CompactDelete.deletes() && CleanupPolicy::CompactDelete.compacts());
        assert!(!CleanupPolicy::Compact.deletes() && !CleanupPolicy::Delete.compacts());
    }

    #[test]
    fn an_alter_sets_resets_and_keeps_the_rest() {
        let mut c = TopicConfig {
            retention_bytes: Some(MIN_RETENTION_BYTES),
            delete_retention_ms: Some(5),
            ..Default::default()
        };
        let change = ConfigChange::parse(
            [("retention_ms", "60000"), ("cleanup_policy", "compact")],
            ["retention_bytes"],
        )
        .unwrap();
        c = c.altered(&change).unwrap();
        assert_eq!(
            c,
            TopicConfig {
                retention_ms: Some(60_000),
                cleanup_policy: Some(CleanupPolicy::Compact),
                delete_retention_ms: Some(5),
                ..Default::default()
            }
        );
        let e = c.effective(&LogDefaults::default());
        assert_eq!(
            (e.retention_ms, e.retention_bytes, e.delete_retention_ms),
            (60_000, UNLIMITED, 5)
        );
        assert_eq!(e.min_compaction_lag_ms, DEFAULT_MIN_COMPACTION_LAG_MS);
        assert_eq!(e.max_record_bytes, DEFAULT_MAX_RECORD_BYTES);
        // Compaction only: nothing is deleted by age or size.
        assert_eq!((e.delete_after_ms(), e.delete_beyond_bytes()), (None, None));
    }

    #[test]
    fn a_bad_alter_is_refused_whole() {
        let c = TopicConfig::default();
        for (set, reset, expect) in [
            (vec![], vec![], MetaError::NoConfigChange),
            (
                vec![("retention_ms", "1"), ("retention_ms", "2")],
                vec![],
                MetaError::ConfigKeyRepeated {
                    key: ConfigKey::RetentionMs,
                },
            ),
            (
                vec![("cleanup_policy", "delete")],
                vec!["cleanup_policy"],
                MetaError::ConfigKeyRepeated {
                    key: ConfigKey::CleanupPolicy,
                },
            ),
            (
                vec![("retention_ms", "1")],
                vec!["colour"],
                MetaError::UnknownConfigKey {
                    key: "colour".into(),
                },
            ),
        ] {
            assert_eq!(ConfigChange::parse(set, reset), Err(expect.clone()));
        }
        // A command built without parsing is checked when applied.
        let unchecked = ConfigChange {
            set: vec![ConfigSetting::RetentionMs(0)],
            reset: vec![],
        };
        assert!(matches!(
            c.altered(&unchecked),
            Err(MetaError::InvalidConfigValue { .. })
        ));
    }

    #[test]
    fn effective_takes_the_topics_value_else_the_default() {
        let defaults = LogDefaults {
            retention_ms: UNLIMITED,
            retention_bytes: MAX_RETENTION_BYTES,
            cleanup_policy: CleanupPolicy::CompactDelete,
            delete_retention_ms: 7,
            min_compaction_lag_ms: 8,
        };
        assert_eq!(defaults.validate(), Ok(()));
        let e = TopicConfig::default().effective(&defaults);
        assert_eq!(e.delete_after_ms(), None, "unlimited");
        assert_eq!(e.delete_beyond_bytes(), Some(1 << 50));
        let own = TopicConfig {
            max_record_bytes: 10,
            retention_ms: Some(3),
            retention_bytes: Some(UNLIMITED),
            cleanup_policy: Some(CleanupPolicy::Delete),
            delete_retention_ms: Some(0),
            min_compaction_lag_ms: Some(1),
        };
        assert_eq!(
            own.effective(&defaults),
            EffectiveLogConfig {
                retention_ms: 3,
                retention_bytes: UNLIMITED,
                cleanup_policy: CleanupPolicy::Delete,
                delete_retention_ms: 0,
                min_compaction_lag_ms: 1,
                max_record_bytes: 10,
            }
        );
        assert_eq!(own.settings().count(), ConfigKey::ALL.len());
        let bad = LogDefaults {
            retention_ms: 0,
            ..LogDefaults::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(MetaError::InvalidConfigValue {
                key: ConfigKey::RetentionMs,
                ..
            })
        ));
        assert_eq!(LogDefaults::default().validate(), Ok(()));
    }

    proptest::proptest! {
        /// Any integer text parses for a numeric key exactly when it is within the key's
        /// limits (written out again here), and then prints back as given.
        #[test]
        fn integers_parse_iff_within_limits(
            k in 0usize..ConfigKey::ALL.len(),
            v in proptest::prop_oneof![
                proptest::prelude::any::<i64>(),
                -3i64..(32 << 20),
                (MAX_RETENTION_BYTES - 3)..(MAX_RETENTION_BYTES + 3),
                (MAX_CONFIG_DURATION_MS - 3)..(MAX_CONFIG_DURATION_MS + 3),
            ],
        ) {
            let key = ConfigKey::ALL[k];
            let century = 100 * 365 * 86_400_000i64;
            let valid = match key {
                ConfigKey::RetentionMs => v == -1 || (1..=century).contains(&v),
                ConfigKey::RetentionBytes => v == -1 || ((1 << 20)..=(1 << 50)).contains(&v),
                ConfigKey::CleanupPolicy => false,
                ConfigKey::DeleteRetentionMs | ConfigKey::MinCompactionLagMs => (0..=century).contains(&v),
                ConfigKey::MaxRecordBytes => (0..=16 << 20).contains(&v),
            };
            let parsed = ConfigSetting::parse_value(key, &v.to_string());
            proptest::prop_assert_eq!(parsed.is_ok(), valid, "{} = {}: {:?}", key, v, parsed);
            if let Ok(s) = parsed {
                proptest::prop_assert_eq!(s.value_text(), v.to_string());
                let altered = TopicConfig::default()
                    .altered(&ConfigChange { set: vec![s], reset: vec![] })
                    .unwrap();
                proptest::prop_assert_eq!(altered.get(key), (v != 0 || key != ConfigKey::MaxRecordBytes).then_some(s));
            }
        }
    }
}
