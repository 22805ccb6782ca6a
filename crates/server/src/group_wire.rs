//! Consumer group requests and answers at the edge: prost types in, [`fjord_groups`]' domain
//! types out, and back. Topics travel by name on the wire and by id inside; a name is
//! resolved against this node's metadata here and nowhere else.

use std::collections::{BTreeMap, BTreeSet};

use fjord_groups::config::{AlterConfigRequest, Change, Effective};
use fjord_groups::heartbeat::{Beat, HeartbeatAnswer, HeartbeatRequest};
use fjord_groups::offsets::{CommitRequest, Committer, OffsetCommit, ResetTo};
use fjord_groups::{
    Assignor, Committed, Group, GroupError, GroupState, MemberState, Subscription, TopicsView, Tp,
};
use fjord_proto::v1 as pb;

use crate::coordinator::{Described, described_partitions};
use crate::error::ApiError;

fn invalid(what: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::Group(GroupError::Invalid {
        what,
        reason: reason.into(),
    })
}

/// A topic's id by name, or NOT_FOUND.
fn topic_id(topics: &TopicsView, name: &str) -> Result<u32, ApiError> {
    topics
        .by_name
        .get(name)
        .map(|t| t.id)
        .ok_or_else(|| ApiError::UnknownTopic(name.to_string()))
}

/// Partitions by topic name; a topic that no longer exists is skipped when `lenient` (a
/// member may still report partitions of a deleted topic), else NOT_FOUND.
fn tps_of(
    topics: &TopicsView,
    list: &[pb::TopicPartitions],
    lenient: bool,
) -> Result<BTreeSet<Tp>, ApiError> {
    let mut out = BTreeSet::new();
    for tps in list {
        let id = match topic_id(topics, &tps.topic) {
            Ok(id) => id,
            Err(_) if lenient => continue,
            Err(e) => return Err(e),
        };
        out.extend(tps.partitions.iter().map(|p| Tp::new(id, *p)));
    }
    Ok(out)
}

/// Partitions grouped by topic name, for an answer.
pub fn to_wire_tps<'a>(
    topics: &TopicsView,
    tps: impl IntoIterator<Item = &'a Tp>,
) -> Vec<pb::TopicPartitions> {
    let mut by: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for tp in tps {
        let name = topics.name_of(tp.topic).map_or_else(
            || format!("(deleted topic id {})", tp.topic),
            str::to_string,
        );
        by.entry(name).or_default().push(tp.partition);
    }
    by.into_iter()
        .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
        .collect()
}

fn subscription_from(s: pb::Subscription) -> Subscription {
    Subscription {
        topics: s.topics.into_iter().collect(),
        pattern: s.pattern,
    }
}

fn subscription_to(s: &Subscription) -> pb::Subscription {
    pb::Subscription {
        topics: s.topics.iter().cloned().collect(),
        pattern: s.pattern.clone(),
    }
}

fn assignor(name: &str) -> Result<Option<Assignor>, ApiError> {
    match name {
        "" => Ok(None),
        "uniform" => Ok(Some(Assignor::Uniform)),
        "range" => Ok(Some(Assignor::Range)),
        other => Err(invalid(
            "assignor",
            format!("{other:?}: the server assignors are \"uniform\" and \"range\""),
        )),
    }
}

fn assignor_name(a: Assignor) -> &'static str {
    match a {
        Assignor::Uniform => "uniform",
        Assignor::Range => "range",
    }
}

pub fn heartbeat_request(
    req: pb::GroupHeartbeatRequest,
    topics: &TopicsView,
    client_host: String,
) -> Result<HeartbeatRequest, ApiError> {
    Ok(HeartbeatRequest {
        beat: Beat::from_wire(req.member_epoch),
        owned: req
            .owned
            .map(|o| tps_of(topics, &o.partitions, true))
            .transpose()?,
        assignor: assignor(&req.assignor)?,
        group: req.group,
        member_id: req.member_id,
        instance_id: req.instance_id,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscription: req.subscription.map(subscription_from),
        client_id: req.client_id,
        client_host,
    })
}

pub fn heartbeat_response(a: HeartbeatAnswer, topics: &TopicsView) -> pb::GroupHeartbeatResponse {
    pb::GroupHeartbeatResponse {
        member_id: a.member_id,
        member_epoch: a.member_epoch.map_or(-1, |e| e as i32),
        heartbeat_interval_ms: a.heartbeat_interval_ms,
        session_timeout_ms: a.session_timeout_ms,
        assignment: to_wire_tps(topics, &a.assignment),
    }
}

/// Who commits or fetches: a member, or (empty member id, epoch -1) an admin.
fn committer(member_id: String, member_epoch: i32) -> Result<Committer, ApiError> {
    match (member_id.is_empty(), member_epoch) {
        (true, -1) => Ok(Committer::Admin),
        (false, e) if e > 0 => Ok(Committer::Member {
            id: member_id,
            epoch: e as u32,
        }),
        _ => Err(invalid(
            "member epoch",
            format!(
                "{member_epoch} with member id {member_id:?}: send a member's id and its epoch (above 0), \
                 or an empty member id and -1 for an admin request"
            ),
        )),
    }
}

pub fn commit_request(
    req: pb::CommitOffsetsRequest,
    topics: &TopicsView,
) -> Result<CommitRequest, ApiError> {
    if req.offsets.is_empty() {
        return Err(invalid("offset commit", "it names no partition"));
    }
    let mut offsets = Vec::with_capacity(req.offsets.len());
    for o in req.offsets {
        offsets.push(OffsetCommit {
            tp: Tp::new(topic_id(topics, &o.topic)?, o.partition),
            offset: o.offset,
            metadata: o.metadata,
        });
    }
    Ok(CommitRequest {
        who: committer(req.member_id, req.member_epoch)?,
        group: req.group,
        offsets,
    })
}

pub fn fetch_request(
    req: pb::FetchOffsetsRequest,
    topics: &TopicsView,
) -> Result<(String, Committer, Vec<Tp>), ApiError> {
    let tps = tps_of(topics, &req.partitions, false)?;
    Ok((
        req.group,
        committer(req.member_id, req.member_epoch)?,
        tps.into_iter().collect(),
    ))
}

pub fn committed_offsets(
    offsets: &BTreeMap<Tp, Option<Committed>>,
    topics: &TopicsView,
) -> Vec<pb::CommittedOffset> {
    offsets
        .iter()
        .filter_map(|(tp, c)| {
            // Offsets of deleted topics are not shown (they expire).
            let topic = topics.name_of(tp.topic)?.to_string();
            Some(pb::CommittedOffset {
                topic,
                partition: tp.partition,
                offset: c.as_ref().map(|c| c.offset),
                metadata: c.as_ref().map(|c| c.metadata.clone()).unwrap_or_default(),
                commit_time_ms: c.as_ref().map_or(0, |c| c.commit_time_ms),
            })
        })
        .collect()
}

pub fn reset_request(
    req: &pb::ResetOffsetsRequest,
    topics: &TopicsView,
) -> Result<(ResetTo, Option<u32>), ApiError> {
    use pb::reset_offsets_request::To;
    let to = match req.to {
        Some(To::Earliest(true)) => ResetTo::Earliest,
        Some(To::Latest(true)) => ResetTo::Latest,
        Some(To::Offset(o)) => ResetTo::Offset(o),
        Some(To::ShiftBy(d)) => ResetTo::ShiftBy(d),
        Some(To::TimestampMs(t)) => ResetTo::Time(t),
        _ => {
            return Err(invalid(
                "offset reset",
                "say where to: earliest, latest, offset or shift_by",
            ));
        }
    };
    let topic = if req.topic.is_empty() {
        None
    } else {
        Some(topic_id(topics, &req.topic)?)
    };
    Ok((to, topic))
}

/// One setting of an AlterGroupConfig: set, reset, or (neither) kept; both is refused.
fn change<T>(what: &'static str, set: Option<T>, reset: bool) -> Result<Change<T>, ApiError> {
    match (set, reset) {
        (Some(_), true) => Err(invalid(what, "both set and reset: send one or the other")),
        (Some(v), false) => Ok(Change::Set(v)),
        (None, true) => Ok(Change::Reset),
        (None, false) => Ok(Change::Keep),
    }
}

pub fn alter_config_request(
    req: pb::AlterGroupConfigRequest,
) -> Result<AlterConfigRequest, ApiError> {
    let assignor = match req.assignor.as_deref() {
        None => None,
        Some("") => {
            return Err(invalid(
                "assignor",
                "empty: say \"uniform\" or \"range\", or reset it",
            ));
        }
        Some(name) => assignor(name)?,
    };
    Ok(AlterConfigRequest {
        session_timeout_ms: change(
            "session timeout",
            req.session_timeout_ms,
            req.reset_session_timeout,
        )?,
        heartbeat_interval_ms: change(
            "heartbeat interval",
            req.heartbeat_interval_ms,
            req.reset_heartbeat_interval,
        )?,
        assignor: change("assignor", assignor, req.reset_assignor)?,
        group: req.group,
    })
}

pub fn alter_config_response(e: &Effective) -> pb::AlterGroupConfigResponse {
    pb::AlterGroupConfigResponse {
        session_timeout_ms: e.session_timeout_ms,
        session_timeout_override: e.overrides.session_timeout_ms.is_some(),
        heartbeat_interval_ms: e.heartbeat_interval_ms,
        heartbeat_interval_override: e.overrides.heartbeat_interval_ms.is_some(),
        assignor: assignor_name(e.assignor).to_string(),
        assignor_override: e.overrides.assignor.is_some(),
    }
}

pub fn state_name(s: GroupState) -> &'static str {
    match s {
        GroupState::Empty => "EMPTY",
        GroupState::Assigning => "ASSIGNING",
        GroupState::Reconciling => "RECONCILING",
        GroupState::Stable => "STABLE",
    }
}

fn member_state_name(s: MemberState) -> &'static str {
    match s {
        MemberState::Stable => "STABLE",
        MemberState::UnrevokedPartitions => "UNREVOKED_PARTITIONS",
        MemberState::UnreleasedPartitions => "UNRELEASED_PARTITIONS",
    }
}

pub fn listing(g: &Group) -> pb::GroupListing {
    pb::GroupListing {
        group: g.name.clone(),
        state: state_name(g.state()).to_string(),
        members: g.members.len() as u32,
    }
}

pub fn describe_response(d: &Described, topics: &TopicsView) -> pb::DescribeGroupResponse {
    let g = &d.group;
    let members = g
        .members
        .values()
        .map(|m| pb::MemberDescription {
            member_id: m.id.clone(),
            instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            member_epoch: m.epoch as i32,
            state: member_state_name(m.state).to_string(),
            assigned: to_wire_tps(topics, m.assigned.keys()),
            pending_revocation: to_wire_tps(topics, m.pending_revocation.keys()),
            target: to_wire_tps(topics, g.targets.get(&m.id).into_iter().flatten()),
            subscription: Some(subscription_to(&m.subscription)),
        })
        .collect();
    let offsets = described_partitions(g)
        .into_iter()
        .filter_map(|tp| {
            let topic = topics.name_of(tp.topic)?.to_string();
            let committed = g.offsets.get(&tp).map(|c| c.offset);
            let hw = d.high_watermarks.get(&tp).copied();
            Some(pb::PartitionOffset {
                topic,
                partition: tp.partition,
                committed_offset: committed,
                high_watermark: hw.unwrap_or(0),
                lag_records: hw.map(|hw| hw.saturating_sub(committed.unwrap_or(0))),
                member_id: g
                    .owners
                    .get(&tp)
                    .map(|(m, _)| m.clone())
                    .unwrap_or_default(),
                // Filled in by `crate::lag` once the runner has answered.
                lag_ms: None,
            })
        })
        .collect();
    pb::DescribeGroupResponse {
        group: g.name.clone(),
        state: state_name(g.state()).to_string(),
        group_epoch: g.meta.epoch,
        assignment_epoch: g.meta.assignment_epoch,
        assignor: assignor_name(d.settings.assignor).to_string(),
        session_timeout_ms: d.settings.session_timeout_ms,
        heartbeat_interval_ms: d.settings.heartbeat_interval_ms,
        members,
        offsets,
        coordinator: d.coordinator,
        session_timeout_override: d.settings.overrides.session_timeout_ms.is_some(),
        heartbeat_interval_override: d.settings.overrides.heartbeat_interval_ms.is_some(),
        assignor_override: d.settings.overrides.assignor.is_some(),
    }
}
