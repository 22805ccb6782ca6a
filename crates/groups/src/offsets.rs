//! Committed offsets: commits and fetches fenced by the member epoch, resets, deletion and
//! expiry, as pure decisions.
//!
//! # The rules of a commit
//! 1. A commit names a member and its epoch, or none (an **admin** or standalone commit,
//!    epoch -1 on the wire), which only an empty group accepts (Kafka's rule: a group with
//!    members takes commits from its members only).
//! 2. The member must be in the group ([`GroupError::UnknownMember`]), at an epoch no newer
//!    than its own ([`GroupError::FencedMemberEpoch`]).
//! 3. Each partition must be **owned** by the member ([`GroupError::NotOwned`]), since an
//!    epoch no newer than the one the commit names ([`GroupError::StaleMemberEpoch`]): a
//!    member keeps committing the partitions it still owns while its epoch moves on, and a
//!    member removed for silence (a zombie after a pause) commits nothing.
//! 4. The offset is at most the partition's high watermark
//!    ([`GroupError::OffsetAboveHighWatermark`]): no consumer was handed anything beyond it.
//! 5. The commit is all or nothing.
//!
//! A fetch by a member is fenced by rule 2 (so a zombie cannot resume from offsets it should
//! no longer see as current); an admin fetch (no member) is not.

use std::collections::BTreeMap;

use crate::error::GroupError;
use crate::groups::Work;
use crate::heartbeat::{Decision, check_group_name};
use crate::limits::*;
use crate::model::{Committed, Group, TopicsView, Tp};
use crate::record::GroupRecord;

/// Who commits or fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committer {
    /// A member at an epoch.
    Member { id: String, epoch: u32 },
    /// An admin or standalone consumer: only an empty group takes its commits.
    Admin,
}

/// One partition's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub tp: Tp,
    pub offset: u64,
    pub metadata: String,
}

fn check_member<'g>(
    group: &'g Group,
    id: &str,
    epoch: u32,
) -> Result<&'g crate::model::Member, GroupError> {
    let m = group
        .members
        .get(id)
        .ok_or_else(|| GroupError::UnknownMember {
            group: group.name.clone(),
            member: id.to_string(),
        })?;
    if epoch > m.epoch || m.left_static {
        return Err(GroupError::FencedMemberEpoch {
            group: group.name.clone(),
            member: id.to_string(),
            sent: epoch,
            current: m.epoch,
        });
    }
    Ok(m)
}

/// Rule 1's limits: the group name, the partition count, each metadata's size.
fn check_commit_limits(
    name: &str,
    offsets: &[OffsetCommit],
    topics: &TopicsView,
) -> Result<(), GroupError> {
    check_group_name(name)?;
    if offsets.len() > MAX_OFFSETS_PER_REQUEST {
        return Err(GroupError::invalid(
            "offset commit",
            format!(
                "it names {} partitions; the limit is {MAX_OFFSETS_PER_REQUEST} (MAX_OFFSETS_PER_REQUEST)",
                offsets.len()
            ),
        ));
    }
    match offsets
        .iter()
        .find(|o| o.metadata.len() > MAX_OFFSET_METADATA_BYTES)
    {
        Some(o) => Err(GroupError::invalid(
            "offset metadata",
            format!(
                "{} bytes for {}/{}; the limit is {MAX_OFFSET_METADATA_BYTES} (MAX_OFFSET_METADATA_BYTES)",
                o.metadata.len(),
                topics.describe(o.tp),
                o.tp.partition
            ),
        )),
        None => Ok(()),
    }
}

/// Rules 1 to 3: who may commit these partitions.
fn check_committer(
    g: &Group,
    who: &Committer,
    offsets: &[OffsetCommit],
    topics: &TopicsView,
) -> Result<(), GroupError> {
    let (id, epoch) = match who {
        Committer::Admin if !g.members.is_empty() => {
            return Err(GroupError::NotEmpty {
                group: g.name.clone(),
                members: g.members.len(),
                what: "a commit without a member id",
            });
        }
        Committer::Admin => return Ok(()),
        Committer::Member { id, epoch } => (id, *epoch),
    };
    let m = check_member(g, id, epoch)?;
    for o in offsets {
        let Some(at) = m.owns(o.tp) else {
            return Err(GroupError::NotOwned {
                group: g.name.clone(),
                member: id.clone(),
                topic: topics.describe(o.tp),
                partition: o.tp.partition,
            });
        };
        if epoch < at {
            return Err(GroupError::StaleMemberEpoch {
                group: g.name.clone(),
                member: id.clone(),
                topic: topics.describe(o.tp),
                partition: o.tp.partition,
                sent: epoch,
                assigned_at: at,
                current: m.epoch,
            });
        }
    }
    Ok(())
}

/// Every rule of [`commit`] but the high watermarks': what a coordinator checks before it
/// asks partitions' leaders for theirs (a fenced member learns so at once, and no lookup is
/// spent on a commit refused anyway).
pub fn check_commit_without_high_watermarks(
    group: Option<&Group>,
    req: &CommitRequest,
    topics: &TopicsView,
    groups_held: usize,
) -> Result<(), GroupError> {
    let name = req.group.as_str();
    check_commit_limits(name, &req.offsets, topics)?;
    if group.is_none() && groups_held >= MAX_GROUPS_PER_COORDINATOR {
        return Err(GroupError::TooManyGroups {
            limit: MAX_GROUPS_PER_COORDINATOR,
        });
    }
    let empty = Group::new(name);
    check_committer(group.unwrap_or(&empty), &req.who, &req.offsets, topics)
}

/// Rule 4.
fn check_high_watermarks(
    offsets: &[OffsetCommit],
    topics: &TopicsView,
    high_watermark: impl Fn(Tp) -> Option<u64>,
) -> Result<(), GroupError> {
    for o in offsets {
        let hw = high_watermark(o.tp).ok_or_else(|| GroupError::UnknownPartition {
            what: format!("partition {}/{}", topics.describe(o.tp), o.tp.partition),
        })?;
        if o.offset > hw {
            return Err(GroupError::OffsetAboveHighWatermark {
                topic: topics.describe(o.tp),
                partition: o.tp.partition,
                offset: o.offset,
                high_watermark: hw,
            });
        }
    }
    Ok(())
}

/// An offset commit, in domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    pub group: String,
    pub who: Committer,
    pub offsets: Vec<OffsetCommit>,
}

/// Decides a commit. `high_watermark` gives each partition's high watermark (`None`: no such
/// partition); `groups_held` counts the coordinator's groups, for a commit that creates one.
pub fn commit(
    group: Option<&Group>,
    req: &CommitRequest,
    topics: &TopicsView,
    high_watermark: impl Fn(Tp) -> Option<u64>,
    now_ms: i64,
    groups_held: usize,
) -> Result<Decision<()>, GroupError> {
    let CommitRequest {
        group: name,
        offsets,
        ..
    } = req;
    let name = name.as_str();
    check_commit_without_high_watermarks(group, req, topics, groups_held)?;
    check_high_watermarks(offsets, topics, high_watermark)?;
    let mut w = Work::new(group, name);
    if group.is_none() {
        w.meta().empty_since_ms = Some(now_ms);
    }
    for o in offsets {
        w.put_offset(
            o.tp,
            Committed {
                offset: o.offset,
                metadata: o.metadata.clone(),
                commit_time_ms: now_ms,
            },
        );
    }
    Ok(Decision {
        answer: (),
        records: w.finish(),
    })
}

/// The committed offsets of `tps` (all the group's when empty) as `who` may see them.
pub fn fetch(
    group: Option<&Group>,
    name: &str,
    who: &Committer,
    tps: &[Tp],
) -> Result<BTreeMap<Tp, Option<Committed>>, GroupError> {
    check_group_name(name)?;
    if tps.len() > MAX_OFFSETS_PER_REQUEST {
        return Err(GroupError::invalid(
            "offset fetch",
            format!(
                "it names {} partitions; the limit is {MAX_OFFSETS_PER_REQUEST} (MAX_OFFSETS_PER_REQUEST)",
                tps.len()
            ),
        ));
    }
    let empty = Group::new(name);
    let g = group.unwrap_or(&empty);
    if let Committer::Member { id, epoch } = who {
        check_member(g, id, *epoch)?;
    }
    Ok(if tps.is_empty() {
        g.offsets
            .iter()
            .map(|(tp, c)| (*tp, Some(c.clone())))
            .collect()
    } else {
        tps.iter()
            .map(|tp| (*tp, g.offsets.get(tp).cloned()))
            .collect()
    })
}

/// Where a reset moves a partition's committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(u64),
    /// From the committed offset (or, with none, from the earliest).
    ShiftBy(i64),
    /// To the first record at or after this time (ms since the epoch; the partition's time
    /// index), or the end where no record is that recent.
    Time(i64),
}

/// A partition's readable range: `[log_start, high_watermark]`, and for a reset by time the
/// offset found for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub log_start: u64,
    pub high_watermark: u64,
    /// The first offset at or after a reset's time; `None`: no record that recent (or not
    /// looked up).
    pub at_time: Option<u64>,
}

/// Decides an offset reset of `tps` of an empty group; each new offset is clamped into its
/// partition's bounds (as Kafka's tool does).
pub fn reset(
    group: Option<&Group>,
    name: &str,
    to: ResetTo,
    tps: &[(Tp, Bounds)],
    now_ms: i64,
    groups_held: usize,
) -> Result<Decision<BTreeMap<Tp, u64>>, GroupError> {
    check_group_name(name)?;
    if let Some(g) = group.filter(|g| !g.members.is_empty()) {
        return Err(GroupError::NotEmpty {
            group: name.to_string(),
            members: g.members.len(),
            what: "an offset reset",
        });
    }
    if tps.is_empty() {
        // Nothing named and nothing committed: most likely a mistyped group name, which
        // must not pass for a reset done (nor create the group).
        return Err(match group {
            None => GroupError::UnknownGroup {
                group: name.to_string(),
            },
            Some(_) => GroupError::invalid(
                "offset reset",
                format!(
                    "group {name:?} has no committed offsets of existing topics to reset: \
                     name a topic"
                ),
            ),
        });
    }
    if group.is_none() && groups_held >= MAX_GROUPS_PER_COORDINATOR {
        return Err(GroupError::TooManyGroups {
            limit: MAX_GROUPS_PER_COORDINATOR,
        });
    }
    let mut w = Work::new(group, name);
    if group.is_none() {
        w.meta().empty_since_ms = Some(now_ms);
    }
    let mut answer = BTreeMap::new();
    for (tp, b) in tps {
        let current = w.group.offsets.get(tp).map(|c| c.offset);
        let wanted: i128 = match to {
            ResetTo::Earliest => b.log_start.into(),
            ResetTo::Latest => b.high_watermark.into(),
            ResetTo::Offset(o) => o.into(),
            ResetTo::ShiftBy(d) => i128::from(current.unwrap_or(b.log_start)) + i128::from(d),
            ResetTo::Time(_) => b.at_time.unwrap_or(b.high_watermark).into(),
        };
        let offset = wanted.clamp(b.log_start.into(), b.high_watermark.into()) as u64;
        w.put_offset(
            *tp,
            Committed {
                offset,
                metadata: String::new(),
                commit_time_ms: now_ms,
            },
        );
        answer.insert(*tp, offset);
    }
    Ok(Decision {
        answer,
        records: w.finish(),
    })
}

/// Decides the deletion of an empty group: tombstones of its offsets and of itself.
pub fn delete(group: Option<&Group>, name: &str) -> Result<Vec<GroupRecord>, GroupError> {
    let g = group.ok_or_else(|| GroupError::UnknownGroup {
        group: name.to_string(),
    })?;
    if !g.members.is_empty() {
        return Err(GroupError::NotEmpty {
            group: name.to_string(),
            members: g.members.len(),
            what: "deleting the group",
        });
    }
    Ok(Work::new(Some(g), name).delete())
}

/// The records that expire `group` at `now_ms` (Kafka's offset retention):
/// - a group with members keeps its offsets, however old (a static member that left
///   for a restart is still a member);
/// - in an empty group, an offset expires once `retention_ms` passed since the later of the
///   group becoming empty and the offset's commit (an admin commit to a long-empty group lives
///   a whole retention);
/// - once every offset expired (or at once, if it holds none), an empty group that overrides
///   nothing ([`crate::config`]) is deleted; one with overrides stays, without offsets;
/// - offsets of topics (or partitions) that no longer exist go at once; a topic the view does
///   not know of yet (a coordinator whose metadata is behind) is not one of them.
pub fn expire(
    group: &Group,
    topics: &TopicsView,
    now_ms: i64,
    retention_ms: i64,
) -> Vec<GroupRecord> {
    let past = |since: i64| now_ms.saturating_sub(since) >= retention_ms;
    let empty_since = group
        .meta
        .empty_since_ms
        .filter(|_| group.members.is_empty());
    let gone: Vec<Tp> = group
        .offsets
        .iter()
        .filter(|(tp, c)| {
            topics.is_gone(**tp) || empty_since.is_some_and(|t| past(t.max(c.commit_time_ms)))
        })
        .map(|(tp, _)| *tp)
        .collect();
    // An empty group with nothing left to keep goes at once (Kafka drops such a group at its
    // next cleanup): waiting out the retention would let joins and leaves under many names
    // hold the coordinator's group slots for days.
    let deleted =
        empty_since.is_some() && gone.len() == group.offsets.len() && group.config.is_default();
    if deleted {
        return Work::new(Some(group), &group.name).delete();
    }
    if gone.is_empty() {
        return Vec::new();
    }
    let mut w = Work::new(Some(group), &group.name);
    for tp in gone {
        w.remove_offset(tp);
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_with_nothing_to_reset_is_refused() {
        let e = reset(None, "typo", ResetTo::Earliest, &[], 5, 0).unwrap_err();
        assert!(matches!(e, GroupError::UnknownGroup { .. }), "{e}");
        let g = Group::new("g");
        let e = reset(Some(&g), "g", ResetTo::Earliest, &[], 5, 1).unwrap_err();
        assert!(matches!(e, GroupError::Invalid { .. }), "{e}");
    }

    #[test]
    fn an_empty_group_without_offsets_goes_at_the_next_pass() {
        let mut g = Group::new("g");
        g.meta.empty_since_ms = Some(1_000);
        let records = expire(&g, &TopicsView::default(), 1_001, 7 * 86_400_000);
        assert!(
            records
                .iter()
                .any(|r| matches!(r, GroupRecord::GroupGone { .. })),
            "{records:?}"
        );
    }

    #[test]
    fn offsets_of_a_topic_the_view_has_not_learned_of_are_kept() {
        // A coordinator whose metadata is behind (restarted, cut off from the metadata
        // leader) must not take a topic created since for a deleted one.
        let mut g = Group::new("g");
        g.meta.empty_since_ms = Some(1_000);
        for topic in [1, 5] {
            g.offsets.insert(
                Tp::new(topic, 0),
                Committed {
                    offset: 7,
                    metadata: String::new(),
                    commit_time_ms: 1_000,
                },
            );
        }
        let behind = TopicsView::new([("a".to_string(), 1, 1), ("b".to_string(), 2, 1)]);
        assert_eq!(behind.next_id, 3);
        assert!(
            expire(&g, &behind, 2_000, 60_000).is_empty(),
            "topic 5 is news"
        );

        // The same view once its metadata handed out id 5 and more: topic 5 was deleted.
        let after = behind.with_next_id(9);
        let records = expire(&g, &after, 2_000, 60_000);
        let gone: Vec<Tp> = records
            .iter()
            .filter_map(|r| match r {
                GroupRecord::OffsetGone { tp, .. } => Some(*tp),
                _ => None,
            })
            .collect();
        assert_eq!(gone, [Tp::new(5, 0)], "{records:?}");
    }

    #[test]
    fn a_reset_by_time_moves_to_the_offset_found_or_the_end_within_bounds() {
        let tp = |p| Tp::new(1, p);
        let bounds = |log_start, high_watermark, at_time| Bounds {
            log_start,
            high_watermark,
            at_time,
        };
        let tps = [
            (tp(0), bounds(0, 10, Some(4))),
            (tp(1), bounds(0, 10, None)),
            (tp(2), bounds(6, 10, Some(2))),
        ];
        let d = reset(None, "g", ResetTo::Time(1000), &tps, 5, 0).unwrap();
        let got: Vec<u64> = d.answer.values().copied().collect();
        assert_eq!(
            got,
            [4, 10, 6],
            "found; none that recent: the end; below the start: the start"
        );
    }
}
