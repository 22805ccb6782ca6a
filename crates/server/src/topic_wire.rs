//! A topic's settings between the client API's messages (`TopicConfig`,
//! `EffectiveTopicConfig`, `AlterTopicConfigRequest`) and [`fjord_meta`]'s types: the one
//! place they convert. What is allowed is decided by fjord-meta's checks, the ones the
//! metadata state machine applies too; here a bad request is refused before it costs a
//! metadata write.

use fjord_meta::{
    CleanupPolicy, ConfigChange, EffectiveLogConfig, TopicConfig, validate_topic_config,
};
use fjord_proto::v1;

use crate::error::ApiError;

/// A CreateTopic's settings (absent: every default), each within its limits.
pub fn config_from_wire(c: Option<v1::TopicConfig>) -> Result<TopicConfig, ApiError> {
    let Some(c) = c else {
        return Ok(TopicConfig::default());
    };
    let cleanup_policy = c
        .cleanup_policy
        .as_deref()
        .map(str::parse::<CleanupPolicy>)
        .transpose()?;
    let config = TopicConfig {
        max_record_bytes: c.max_record_bytes,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        cleanup_policy,
        delete_retention_ms: c.delete_retention_ms,
        min_compaction_lag_ms: c.min_compaction_lag_ms,
    };
    validate_topic_config(&config)?;
    Ok(config)
}

/// A topic's own settings, unset where it takes the default.
pub fn config_to_wire(c: &TopicConfig) -> v1::TopicConfig {
    v1::TopicConfig {
        max_record_bytes: c.max_record_bytes,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        cleanup_policy: c.cleanup_policy.map(|p| p.as_str().to_string()),
        delete_retention_ms: c.delete_retention_ms,
        min_compaction_lag_ms: c.min_compaction_lag_ms,
    }
}

/// The settings in force.
pub fn effective_to_wire(e: &EffectiveLogConfig) -> v1::EffectiveTopicConfig {
    v1::EffectiveTopicConfig {
        max_record_bytes: e.max_record_bytes,
        retention_ms: e.retention_ms,
        retention_bytes: e.retention_bytes,
        cleanup_policy: e.cleanup_policy.as_str().to_string(),
        delete_retention_ms: e.delete_retention_ms,
        min_compaction_lag_ms: e.min_compaction_lag_ms,
    }
}

/// An AlterTopicConfig's change, every key and value checked.
pub fn alter_request(req: &v1::AlterTopicConfigRequest) -> Result<ConfigChange, ApiError> {
    let change = ConfigChange::parse(
        req.set.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        req.reset.iter().map(String::as_str),
    )?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_meta::{ConfigKey, ConfigSetting, LogDefaults};
    use tonic::Code;

    #[test]
    fn a_config_goes_to_the_wire_and_back() {
        let config = TopicConfig {
            max_record_bytes: 2048,
            retention_ms: Some(-1),
            retention_bytes: None,
            cleanup_policy: Some(CleanupPolicy::CompactDelete),
            delete_retention_ms: Some(0),
            min_compaction_lag_ms: None,
        };
        let wire = config_to_wire(&config);
        assert_eq!(wire.cleanup_policy.as_deref(), Some("compact,delete"));
        assert_eq!(config_from_wire(Some(wire)).unwrap(), config);
        assert_eq!(config_from_wire(None).unwrap(), TopicConfig::default());
        let e = effective_to_wire(&config.effective(&LogDefaults::default()));
        assert_eq!(
            (e.retention_ms, e.retention_bytes, e.cleanup_policy.as_str()),
            (-1, -1, "compact,delete")
        );
        assert_eq!(e.max_record_bytes, 2048);
    }

    #[test]
    fn bad_settings_are_invalid_arguments_naming_the_key_and_limit() {
        let bad = v1::TopicConfig {
            retention_ms: Some(0),
            ..Default::default()
        };
        let e = config_from_wire(Some(bad)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.to_string().contains("retention_ms = \"0\""), "{e}");
        let bad = v1::TopicConfig {
            cleanup_policy: Some("shred".into()),
            ..Default::default()
        };
        assert_eq!(
            config_from_wire(Some(bad)).unwrap_err().code(),
            Code::InvalidArgument
        );

        let req = |set: &[(&str, &str)], reset: &[&str]| v1::AlterTopicConfigRequest {
            name: "t".into(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            reset: reset.iter().map(|k| k.to_string()).collect(),
        };
        let change = alter_request(&req(
            &[("cleanup_policy", "compact"), ("retention_ms", "60000")],
            &["retention_bytes"],
        ))
        .unwrap();
        assert_eq!(
            change.set,
            [
                ConfigSetting::RetentionMs(60_000),
                ConfigSetting::CleanupPolicy(CleanupPolicy::Compact)
            ],
            "in key order, whatever the map's"
        );
        assert_eq!(change.reset, [ConfigKey::RetentionBytes]);
        for (set, reset, says) in [
            (
                &[("colour", "red")][..],
                &[][..],
                "the keys are retention_ms",
            ),
            (&[], &["colour"], "unknown topic config key \"colour\""),
            (&[("retention_bytes", "10")], &[], "MIN_RETENTION_BYTES"),
            (&[], &[], "changes nothing"),
        ] {
            let e = alter_request(&req(set, reset)).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
            assert!(e.to_string().contains(says), "{e}");
            assert!(matches!(e, ApiError::Meta(_)), "{e:?}");
        }
    }
}
