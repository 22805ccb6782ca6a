//! `fjord topic delete-records` and `fjord topic offsets`: a partition's log start offset
//! moved by hand, and the offsets of a topic's partitions (earliest, latest, or at a time).

use anyhow::Context;
use fjord_client::{Client, OffsetSpec, ReadMode};
use serde_json::json;

use crate::output::Output;
use crate::time_arg::{self, TimeArg};

/// Which partitions a command covers: one, or all of the topic's.
async fn partitions(client: &Client, topic: &str, one: Option<u32>) -> anyhow::Result<Vec<u32>> {
    Ok(match one {
        Some(p) => vec![p],
        None => (0..client
            .partition_count(topic)
            .await
            .with_context(|| format!("cannot read topic {topic:?}"))?)
            .collect(),
    })
}

/// Deletes the records below `before` (or all committed records) of one partition, or of
/// every partition; prints each new log start offset.
pub async fn delete_records(
    client: &Client,
    out: Output,
    topic: &str,
    partition: Option<u32>,
    before: Option<u64>,
) -> anyhow::Result<()> {
    for p in partitions(client, topic, partition).await? {
        let start = client
            .delete_records(topic, p, before)
            .await
            .with_context(|| format!("cannot delete records of {topic}/{p}"))?;
        out.emit(
            || format!("{topic}/{p}\tlog start offset {start}"),
            || json!({"topic": topic, "partition": p, "log_start_offset": start}).to_string(),
        )?;
    }
    Ok(())
}

/// Prints each partition's earliest and latest offsets, and with `at`, the first offset at
/// or after that time.
pub async fn offsets(
    client: &Client,
    out: Output,
    topic: &str,
    partition: Option<u32>,
    at: Option<TimeArg>,
) -> anyhow::Result<()> {
    let at = at.map(|t| t.resolve(time_arg::now_ms()));
    for p in partitions(client, topic, partition).await? {
        let spec = at.map_or(OffsetSpec::Earliest, OffsetSpec::Time);
        let found = client
            .list_offset(topic, p, spec, ReadMode::Cp)
            .await
            .with_context(|| format!("cannot list the offsets of {topic}/{p}"))?;
        let (start, end) = (found.log_start_offset, found.high_watermark);
        out.emit(
            || match (at, found.offset) {
                (None, _) => format!("{topic}/{p}\tearliest {start}\tlatest {end}"),
                (Some(_), Some(o)) => format!(
                    "{topic}/{p}\tat time: {o} (timestamp {})\tearliest {start}\tlatest {end}",
                    found.timestamp_ms.unwrap_or(-1)
                ),
                (Some(_), None) => {
                    format!(
                        "{topic}/{p}\tat time: none (end {end})\tearliest {start}\tlatest {end}"
                    )
                }
            },
            || {
                json!({
                    "topic": topic, "partition": p, "earliest": start, "latest": end,
                    "at_time": at.map(|_| found.offset), "timestamp": found.timestamp_ms,
                })
                .to_string()
            },
        )?;
    }
    Ok(())
}
