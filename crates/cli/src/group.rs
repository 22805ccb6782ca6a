//! `fjord group list|describe|reset-offsets|delete`: consumer group administration.

use anyhow::Context;
use fjord_client::{Client, ResetSpec};
use serde_json::json;

use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups (json: one object per group).
    List,
    /// Show a group's members, assignment, committed offsets and lag.
    Describe { group: String },
    /// Move the committed offsets of a group that has no members.
    #[command(group(clap::ArgGroup::new("to").required(true)))]
    ResetOffsets {
        group: String,
        /// Only this topic's partitions (default: every partition the group committed).
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to")]
        to_offset: Option<u64>,
        #[arg(long, group = "to", allow_hyphen_values = true)]
        shift_by: Option<i64>,
    },
    /// Delete a group that has no members, with its committed offsets.
    Delete { group: String },
}

pub async fn run(client: Client, out: Output, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List => {
            let groups = client.list_groups().await.context("cannot list groups")?;
            if groups.is_empty() && !out.is_json() {
                eprintln!("no groups");
            }
            for g in &groups {
                out.emit(
                    || format!("{}\t{}\t{} members", g.group, g.state, g.members),
                    || {
                        json!({"group": g.group, "state": g.state, "members": g.members})
                            .to_string()
                    },
                )?;
            }
        }
        GroupCommand::Describe { group } => describe(&client, out, &group).await?,
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            shift_by,
        } => {
            let to = match (to_earliest, to_latest, to_offset, shift_by) {
                (true, ..) => ResetSpec::Earliest,
                (_, true, ..) => ResetSpec::Latest,
                (_, _, Some(o), _) => ResetSpec::Offset(o),
                (_, _, _, Some(d)) => ResetSpec::ShiftBy(d),
                _ => anyhow::bail!(
                    "say where to: --to-earliest, --to-latest, --to-offset or --shift-by"
                ),
            };
            let moved = client
                .reset_offsets(&group, topic.as_deref(), to)
                .await
                .with_context(|| format!("cannot reset the offsets of group {group:?}"))?;
            for (topic, partition, offset) in &moved {
                out.emit(
                    || format!("{topic}/{partition}\t{offset}"),
                    || {
                        json!({"topic": topic, "partition": partition, "offset": offset})
                            .to_string()
                    },
                )?;
            }
        }
        GroupCommand::Delete { group } => {
            client
                .delete_group(&group)
                .await
                .with_context(|| format!("cannot delete group {group:?}"))?;
            out.emit(
                || format!("deleted group {group}"),
                || json!({"deleted": group}).to_string(),
            )?;
        }
    }
    Ok(())
}

async fn describe(client: &Client, out: Output, group: &str) -> anyhow::Result<()> {
    let d = client
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group:?}"))?;
    if out.is_json() {
        out.line(&describe_json(&d).to_string())?;
        return Ok(());
    }
    describe_text(out, &d)
}

fn describe_json(d: &fjord_client::GroupDescription) -> serde_json::Value {
    {
        let members: Vec<_> = d
            .members
            .iter()
            .map(|m| {
                json!({
                    "member_id": m.member_id, "instance_id": m.instance_id,
                    "client_id": m.client_id, "client_host": m.client_host,
                    "member_epoch": m.member_epoch, "state": m.state,
                    "assigned": m.assigned.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let partitions: Vec<_> = d
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "topic": p.topic, "partition": p.partition,
                    "committed_offset": p.committed_offset, "high_watermark": p.high_watermark,
                    "lag_records": p.lag_records, "lag_ms": p.lag_ms, "member_id": p.member_id,
                })
            })
            .collect();
        json!({
            "group": d.group, "state": d.state, "group_epoch": d.group_epoch,
            "assignor": d.assignor, "coordinator": d.coordinator,
            "members": members, "partitions": partitions,
        })
    }
}

fn describe_text(out: Output, d: &fjord_client::GroupDescription) -> anyhow::Result<()> {
    out.line(&format!(
        "group {} ({}), epoch {}, assignor {}, coordinator node {}",
        d.group, d.state, d.group_epoch, d.assignor, d.coordinator
    ))?;
    for m in &d.members {
        let parts: Vec<String> = m.assigned.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        out.line(&format!(
            "  member {} (instance {}, {} at {}) epoch {} {}: {}",
            m.member_id,
            m.instance_id.as_deref().unwrap_or("-"),
            m.client_id,
            m.client_host,
            m.member_epoch,
            m.state,
            parts.join(" ")
        ))?;
    }
    out.line("  TOPIC/PARTITION  COMMITTED  HIGH-WATERMARK  LAG  LAG-MS  MEMBER")?;
    for p in &d.partitions {
        out.line(&format!(
            "  {}/{}  {}  {}  {}  {}  {}",
            p.topic,
            p.partition,
            p.committed_offset.map_or("-".into(), |o| o.to_string()),
            p.high_watermark,
            p.lag_records,
            p.lag_ms.map_or("?".into(), |l| l.to_string()),
            if p.member_id.is_empty() {
                "-"
            } else {
                &p.member_id
            }
        ))?;
    }
    Ok(())
}
