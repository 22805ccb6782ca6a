//! `fjord topic create|list|describe|alter|delete`.

use anyhow::Context;
use fjord_client::{Client, TopicSettings};
use serde_json::json;

use crate::output::{Output, config_text, topic_json, topic_text};

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'.
        name: String,
        /// Number of partitions (1 to 1024).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (1 to the node count). Default: 3, or the node count when
        /// the cluster is smaller (counting configured peers that have not registered yet:
        /// the create waits for them, refused with UNAVAILABLE until they have).
        #[arg(long, visible_alias = "replication-factor")]
        replication: Option<u32>,
        /// A setting of the topic's own, KEY=VALUE (repeatable): retention_ms,
        /// retention_bytes, cleanup_policy, delete_retention_ms, min_compaction_lag_ms,
        /// max_record_bytes. Unset keys take the cluster default.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
    },
    /// List topics (json: one object per topic).
    List,
    /// Show a topic's partitions, leaders and replicas, and each setting in force (the
    /// topic's own, or the cluster default).
    Describe { name: String },
    /// Change a live topic's settings: set some, reset others to the cluster default.
    #[command(
        after_help = "Example:\n  fjord topic alter orders --set retention_ms=60000 \
        --set cleanup_policy=compact --reset retention_bytes\n\nKeys: retention_ms (-1: \
        unlimited), retention_bytes (per partition, -1: unlimited), cleanup_policy (delete, \
        compact or compact,delete), delete_retention_ms, min_compaction_lag_ms, \
        max_record_bytes. The server checks the limits and names them when it refuses."
    )]
    Alter {
        name: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// KEY to reset to the cluster default (repeatable).
        #[arg(long, value_name = "KEY")]
        reset: Vec<String>,
    },
    /// Delete a topic and all its records.
    Delete { name: String },
    /// Delete the records below an offset (Kafka's DeleteRecords): moves the log start
    /// offset, CP. Prints each partition's new log start offset.
    #[command(group(clap::ArgGroup::new("upto").required(true)))]
    DeleteRecords {
        name: String,
        /// Only this partition (default: every partition of the topic).
        #[arg(long)]
        partition: Option<u32>,
        /// Records below this offset are deleted.
        #[arg(long, group = "upto")]
        before: Option<u64>,
        /// Every record committed now is deleted.
        #[arg(long, group = "upto")]
        all: bool,
    },
    /// Show each partition's earliest (log start) and latest (high watermark) offsets, and
    /// with --time the first offset at or after a time.
    Offsets {
        name: String,
        /// Only this partition (default: every partition of the topic).
        #[arg(long)]
        partition: Option<u32>,
        /// RFC 3339 (2026-12-01T10:00:00Z), before now (-1h, -30m, -2d) or ms since the epoch.
        #[arg(long, value_parser = crate::time_arg::parse, allow_hyphen_values = true)]
        time: Option<crate::time_arg::TimeArg>,
    },
}

/// `KEY=VALUE`, split at the first `=` (a value may hold more).
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

pub async fn run(client: Client, out: Output, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication,
            config,
        } => {
            let mut settings = TopicSettings::default();
            for (k, v) in &config {
                settings.set(k, v)?;
            }
            let t = client
                .create_topic_with(&name, partitions, replication.unwrap_or(0), &settings)
                .await
                .with_context(|| format!("cannot create topic {name:?}"))?;
            out.emit(
                || {
                    format!(
                        "created topic {} with {} partitions, replication factor {}",
                        t.name,
                        t.partitions.len(),
                        t.replication_factor
                    )
                },
                || topic_json(&t),
            )?;
        }
        TopicCommand::List => {
            let topics = client.list_topics().await.context("cannot list topics")?;
            if topics.is_empty() && !out.is_json() {
                eprintln!("no topics");
            }
            for t in &topics {
                out.emit(
                    || {
                        format!(
                            "{}\t{} partitions\treplication {}",
                            t.name,
                            t.partitions.len(),
                            t.replication_factor
                        )
                    },
                    || topic_json(t),
                )?;
            }
        }
        TopicCommand::Describe { name } => {
            let t = client
                .describe_topic(&name)
                .await
                .with_context(|| format!("cannot describe topic {name:?}"))?;
            out.emit(|| topic_text(&t), || topic_json(&t))?;
        }
        TopicCommand::Alter { name, set, reset } => {
            let t = client
                .alter_topic_config(&name, &set, &reset)
                .await
                .with_context(|| format!("cannot alter the config of topic {name:?}"))?;
            out.emit(
                || format!("altered topic {}\n{}", t.name, config_text(&t)),
                || topic_json(&t),
            )?;
        }
        TopicCommand::Delete { name } => {
            client
                .delete_topic(&name)
                .await
                .with_context(|| format!("cannot delete topic {name:?}"))?;
            out.emit(
                || format!("deleted topic {name}"),
                || json!({"deleted": name}).to_string(),
            )?;
        }
        TopicCommand::DeleteRecords {
            name,
            partition,
            before,
            all,
        } => {
            let before = if all { None } else { before };
            crate::records::delete_records(&client, out, &name, partition, before).await?;
        }
        TopicCommand::Offsets {
            name,
            partition,
            time,
        } => crate::records::offsets(&client, out, &name, partition, time).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_the_first_equals() {
        assert_eq!(
            parse_key_value("cleanup_policy=compact,delete"),
            Ok(("cleanup_policy".into(), "compact,delete".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("retention_ms").is_err());
        assert!(parse_key_value("=5").is_err());
    }
}
