//! `fjord group list|describe|reset-offsets|delete|alter-config`: consumer group
//! administration.

use anyhow::Context;
use fjord_client::{Client, GroupConfigChange, GroupSettings, ResetSpec, SettingChange};
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
        /// To each partition's first record at or after this time (its end where none is
        /// that recent): RFC 3339 (2026-12-01T10:00:00Z), before now (-1h, -30m, -2d) or ms
        /// since the epoch.
        #[arg(long, group = "to", value_parser = crate::time_arg::parse, allow_hyphen_values = true)]
        to_time: Option<crate::time_arg::TimeArg>,
    },
    /// Delete a group that has no members, with its committed offsets and its config.
    Delete { group: String },
    /// Set or reset a group's own session timeout, heartbeat interval and assignor (a reset
    /// one is the server's default again); creates the group, empty, if it does not exist.
    /// Prints the settings in force.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
    AlterConfig {
        group: String,
        /// How long a silent member stays in the group: 1000 to 3600000 ms.
        #[arg(long, group = "change", conflicts_with = "reset_session_timeout")]
        session_timeout_ms: Option<u32>,
        /// How often members heartbeat: 100 to 600000 ms, below the session timeout.
        #[arg(long, group = "change", conflicts_with = "reset_heartbeat_interval")]
        heartbeat_interval_ms: Option<u32>,
        /// The group's assignor, whatever its members ask for.
        #[arg(long, group = "change", conflicts_with = "reset_assignor")]
        assignor: Option<AssignorName>,
        /// Back to the server's session timeout.
        #[arg(long, group = "change")]
        reset_session_timeout: bool,
        /// Back to the server's heartbeat interval.
        #[arg(long, group = "change")]
        reset_heartbeat_interval: bool,
        /// Back to the assignor the members ask for.
        #[arg(long, group = "change")]
        reset_assignor: bool,
    },
}

/// The server-side assignors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AssignorName {
    Uniform,
    Range,
}

fn change<T>(set: Option<T>, reset: bool) -> SettingChange<T> {
    match (set, reset) {
        (Some(v), _) => SettingChange::Set(v),
        (None, true) => SettingChange::Reset,
        (None, false) => SettingChange::Keep,
    }
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
            to_time,
        } => {
            let to = match (to_earliest, to_latest, to_offset, shift_by, to_time) {
                (true, ..) => ResetSpec::Earliest,
                (_, true, ..) => ResetSpec::Latest,
                (_, _, Some(o), ..) => ResetSpec::Offset(o),
                (_, _, _, Some(d), _) => ResetSpec::ShiftBy(d),
                (.., Some(t)) => ResetSpec::Time(t.resolve(crate::time_arg::now_ms())),
                _ => anyhow::bail!(
                    "say where to: --to-earliest, --to-latest, --to-offset, --shift-by or \
                     --to-time"
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
        GroupCommand::AlterConfig {
            group,
            session_timeout_ms,
            heartbeat_interval_ms,
            assignor,
            reset_session_timeout,
            reset_heartbeat_interval,
            reset_assignor,
        } => {
            let assignor = assignor.map(|a| match a {
                AssignorName::Uniform => "uniform".to_string(),
                AssignorName::Range => "range".to_string(),
            });
            let change = GroupConfigChange {
                session_timeout_ms: change(session_timeout_ms, reset_session_timeout),
                heartbeat_interval_ms: change(heartbeat_interval_ms, reset_heartbeat_interval),
                assignor: change(assignor, reset_assignor),
            };
            let s = client
                .alter_group_config(&group, &change)
                .await
                .with_context(|| format!("cannot alter the config of group {group:?}"))?;
            out.emit(
                || format!("group {group}: {}", settings_text(&s)),
                || {
                    let mut j = settings_json(&s);
                    j["group"] = json!(group);
                    j.to_string()
                },
            )?;
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
        let mut j = settings_json(&d.settings);
        for (k, v) in [
            ("group", json!(d.group)),
            ("state", json!(d.state)),
            ("group_epoch", json!(d.group_epoch)),
            ("coordinator", json!(d.coordinator)),
            ("members", json!(members)),
            ("partitions", json!(partitions)),
        ] {
            j[k] = v;
        }
        j
    }
}

/// A group's settings in force, each with whether it is the group's own.
fn settings_json(s: &GroupSettings) -> serde_json::Value {
    json!({
        "session_timeout_ms": s.session_timeout_ms,
        "session_timeout_override": s.session_timeout_override,
        "heartbeat_interval_ms": s.heartbeat_interval_ms,
        "heartbeat_interval_override": s.heartbeat_interval_override,
        "assignor": s.assignor,
        "assignor_override": s.assignor_override,
    })
}

fn settings_text(s: &GroupSettings) -> String {
    let whose = |own: bool| if own { "the group's" } else { "default" };
    format!(
        "session timeout {} ms ({}), heartbeat interval {} ms ({}), assignor {} ({})",
        s.session_timeout_ms,
        whose(s.session_timeout_override),
        s.heartbeat_interval_ms,
        whose(s.heartbeat_interval_override),
        s.assignor,
        whose(s.assignor_override)
    )
}

fn describe_text(out: Output, d: &fjord_client::GroupDescription) -> anyhow::Result<()> {
    out.line(&format!(
        "group {} ({}), epoch {}, coordinator node {}",
        d.group, d.state, d.group_epoch, d.coordinator
    ))?;
    out.line(&format!("  {}", settings_text(&d.settings)))?;
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
            p.lag_records.map_or("?".into(), |l| l.to_string()),
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
