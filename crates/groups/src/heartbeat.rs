//! The member heartbeat: joining, staying, reconciling and leaving, in one request (KIP-848's
//! `ConsumerGroupHeartbeat`), as a pure decision returning the answer and the records to
//! write before it is given.
//!
//! # The rules
//! 1. **Join** (member epoch 0 on the wire) with a subscription. A member id the group holds
//!    rejoins afresh (its state was lost); an instance id the group holds is a **static
//!    member restarting**: the new member takes the old one's place, epoch and assignment
//!    (nothing moves), and the old member id is fenced.
//! 2. **Heartbeat** with the member's epoch: a member the group does not hold gets
//!    [`GroupError::UnknownMember`]; an epoch other than its current one (or its previous
//!    one, when it owns no more than it was assigned: the answer before was lost) gets
//!    [`GroupError::FencedMemberEpoch`]. Either way it must rejoin with nothing owned.
//! 3. A change of members, of a subscription, or of the partition count of a subscribed topic
//!    bumps the **group epoch**; a heartbeat that finds the target assignment older than the
//!    group epoch computes it again with the group's assignor.
//! 4. The member is then reconciled towards its target ([`crate::reconcile`]): a partition
//!    is given only once no other member owns it.
//! 5. **Leave** (epoch -1) removes the member at once and bumps the group epoch; a **static
//!    leave** (epoch -2) keeps the member and its partitions until its session times out, for
//!    its next instance to take back.
//! 6. A member silent past its session timeout, or holding partitions to revoke past its
//!    rebalance timeout, is removed ([`remove`]): the runtime keeps those clocks.

use std::collections::{BTreeMap, BTreeSet};

use crate::assign::{AssignMember, assign};
use crate::error::GroupError;
use crate::groups::Work;
use crate::limits::*;
use crate::model::{Assignor, Group, Member, MemberState, Subscription, TopicId, TopicsView, Tp};
use crate::reconcile::reconcile;
use crate::record::GroupRecord;
use crate::subscription::{self, Resolver};

/// What a heartbeat is, by its member epoch on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Epoch 0.
    Join,
    /// The member's epoch.
    At(u32),
    /// Epoch -1.
    Leave,
    /// Epoch -2: a static member leaves and will be back within its session timeout.
    StaticLeave,
}

impl Beat {
    /// The kind of a wire epoch; `None` for an epoch below -2.
    pub fn from_wire(epoch: i32) -> Option<Beat> {
        match epoch {
            0 => Some(Beat::Join),
            -1 => Some(Beat::Leave),
            -2 => Some(Beat::StaticLeave),
            e if e > 0 => Some(Beat::At(e as u32)),
            _ => None,
        }
    }
}

/// A member's heartbeat, in domain types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatRequest {
    pub group: String,
    /// Empty on a join: the coordinator gives one.
    pub member_id: String,
    pub beat: Option<Beat>,
    pub instance_id: Option<String>,
    pub rebalance_timeout_ms: Option<u32>,
    /// `None`: unchanged since the last heartbeat (required on a join).
    pub subscription: Option<Subscription>,
    /// The assignor the member asks for; recorded when the group has no members yet (absent:
    /// the default, uniform), and used unless the group has an assignor of its own
    /// ([`crate::config`], rule 5).
    pub assignor: Option<Assignor>,
    /// What the member owns; `None`: unknown (it is then taken to own what it must revoke).
    pub owned: Option<BTreeSet<Tp>>,
    pub client_id: String,
    pub client_host: String,
}

/// The server's defaults, which a group's settings override within the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub session_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
        }
    }
}

/// What a decision needs besides the group.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub topics: &'a TopicsView,
    /// Wall-clock now, ms since the Unix epoch (only recorded: never compared for safety).
    pub now_ms: i64,
    /// Groups the coordinator holds now (for [`MAX_GROUPS_PER_COORDINATOR`]).
    pub groups_held: usize,
    /// The id a joining member without one gets (the runtime draws it).
    pub new_member_id: &'a str,
    pub defaults: Defaults,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    /// The member's epoch; `None` once it left.
    pub member_epoch: Option<u32>,
    pub heartbeat_interval_ms: u32,
    pub session_timeout_ms: u32,
    /// The partitions the member owns now (it must give up any others it holds).
    pub assignment: BTreeSet<Tp>,
    pub state: Option<MemberState>,
}

/// An answer and the records that must be durable before it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    pub answer: T,
    pub records: Vec<GroupRecord>,
}

/// The session timeout and heartbeat interval in force for a group: its own, else the
/// server's defaults ([`crate::config::effective`]).
pub fn timing(group: Option<&Group>, defaults: Defaults) -> (u32, u32) {
    let e = crate::config::effective(group, defaults);
    (e.session_timeout_ms, e.heartbeat_interval_ms)
}

/// Decides a heartbeat of `req` on `group` (`None`: the coordinator holds no such group).
pub fn heartbeat(
    group: Option<&Group>,
    req: &HeartbeatRequest,
    ctx: &Context,
) -> Result<Decision<HeartbeatAnswer>, GroupError> {
    let beat = check(req)?;
    let mut w = Work::new(group, &req.group);
    let (session_timeout_ms, heartbeat_interval_ms) = timing(group, ctx.defaults);
    let id = match beat {
        Beat::Leave | Beat::StaticLeave => {
            let timing = (session_timeout_ms, heartbeat_interval_ms);
            return leave(w, group.is_some(), req, beat, ctx.now_ms, timing);
        }
        Beat::Join => join(&mut w, group.is_none(), req, ctx)?,
        Beat::At(epoch) => beat_at(&w.group, req, epoch)?,
    };
    update_member(&mut w, &id, req);
    refresh_subscribed(&mut w, ctx.topics);
    if w.group.meta.epoch > w.group.meta.assignment_epoch {
        compute_target(&mut w, ctx.topics);
    }
    let member = w.group.members[&id].clone();
    let subscribed = Resolver::default().topics(&member.subscription, ctx.topics);
    let target = w.group.targets.get(&id).cloned().unwrap_or_default();
    let next = reconcile(
        &member,
        w.group.meta.assignment_epoch,
        &target,
        &subscribed,
        &w.group.owners,
        req.owned.as_ref(),
    );
    let answer = HeartbeatAnswer {
        member_id: id,
        member_epoch: Some(next.epoch),
        heartbeat_interval_ms,
        session_timeout_ms,
        assignment: next.assigned.keys().copied().collect(),
        state: Some(next.state),
    };
    w.put_member(next);
    Ok(Decision {
        answer,
        records: w.finish(),
    })
}

/// Whether a coordinator may hold back answer `a` to `req`, whose decision writes `records` (a long-poll heartbeat, KIP-848
/// has none): only when it is news to no one. That is a heartbeat (not a join or a leave)
/// whose decision writes nothing and whose answer tells the member nothing it does not know:
/// the epoch it sent, exactly the partitions it says it owns, nothing to revoke. A member
/// waiting for partitions another member still owns ([`MemberState::UnreleasedPartitions`])
/// may be held too: their release is a write to the group, which re-decides held heartbeats.
/// A member that does not say what it owns is never held (it may hold more than it knows).
pub fn may_hold(req: &HeartbeatRequest, a: &HeartbeatAnswer, records: &[GroupRecord]) -> bool {
    let Some(Beat::At(sent)) = req.beat else {
        return false;
    };
    records.is_empty()
        && a.member_epoch == Some(sent)
        && req.owned.as_ref() == Some(&a.assignment)
        && matches!(
            a.state,
            Some(MemberState::Stable | MemberState::UnreleasedPartitions)
        )
}

/// Rule 5: a leave, or a static leave.
fn leave(
    mut w: Work,
    known_group: bool,
    req: &HeartbeatRequest,
    beat: Beat,
    now_ms: i64,
    (session_timeout_ms, heartbeat_interval_ms): (u32, u32),
) -> Result<Decision<HeartbeatAnswer>, GroupError> {
    let answer = HeartbeatAnswer {
        member_id: req.member_id.clone(),
        member_epoch: None,
        heartbeat_interval_ms,
        session_timeout_ms,
        assignment: BTreeSet::new(),
        state: None,
    };
    if !known_group || !w.group.members.contains_key(&req.member_id) {
        // Leaving twice, or after removal: nothing to do.
        return Ok(Decision {
            answer,
            records: Vec::new(),
        });
    }
    if beat == Beat::StaticLeave {
        let mut m = w.group.members[&req.member_id].clone();
        if m.instance_id.is_none() {
            return Err(GroupError::invalid(
                "member epoch",
                "-2 (a static leave) needs an instance id; leave with -1",
            ));
        }
        m.left_static = true;
        w.put_member(m);
    } else {
        drop_member(&mut w, &req.member_id, now_ms);
    }
    Ok(Decision {
        answer,
        records: w.finish(),
    })
}

/// Removes a member (its session or rebalance timeout passed): the records to write, empty if
/// it is no longer there.
pub fn remove(group: &Group, member_id: &str, now_ms: i64) -> Vec<GroupRecord> {
    if !group.members.contains_key(member_id) {
        return Vec::new();
    }
    let mut w = Work::new(Some(group), &group.name);
    drop_member(&mut w, member_id, now_ms);
    w.finish()
}

fn drop_member(w: &mut Work, id: &str, now_ms: i64) {
    w.remove_member(id);
    w.bump_epoch();
    if w.group.members.is_empty() {
        w.meta().empty_since_ms = Some(now_ms);
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), GroupError> {
    if id.len() > MAX_MEMBER_ID_LEN || id.chars().any(char::is_control) {
        return Err(GroupError::invalid(
            what,
            format!(
                "{id:?} is over {MAX_MEMBER_ID_LEN} bytes (MAX_MEMBER_ID_LEN) or holds control characters"
            ),
        ));
    }
    Ok(())
}

/// Checks a group name (1 to [`MAX_GROUP_NAME_LEN`] bytes, no control characters).
pub fn check_group_name(name: &str) -> Result<(), GroupError> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN || name.chars().any(char::is_control) {
        return Err(GroupError::invalid(
            "group name",
            format!(
                "{:?} must be 1 to {MAX_GROUP_NAME_LEN} bytes (MAX_GROUP_NAME_LEN) without control characters",
                name.chars().take(64).collect::<String>()
            ),
        ));
    }
    Ok(())
}

fn check(req: &HeartbeatRequest) -> Result<Beat, GroupError> {
    check_group_name(&req.group)?;
    check_id("member id", &req.member_id)?;
    if let Some(i) = &req.instance_id {
        if i.is_empty() {
            return Err(GroupError::invalid("instance id", "it is empty"));
        }
        check_id("instance id", i)?;
    }
    let beat = req
        .beat
        .ok_or_else(|| GroupError::invalid("member epoch", "below -2"))?;
    if req.member_id.is_empty() && beat != Beat::Join {
        return Err(GroupError::invalid(
            "member id",
            "empty: only a join (member epoch 0) may come without one",
        ));
    }
    if let Some(t) = req.rebalance_timeout_ms
        && (t == 0 || t > MAX_REBALANCE_TIMEOUT_MS)
    {
        {
            return Err(GroupError::invalid(
                "rebalance timeout",
                format!(
                    "{t} ms; it must be 1 to {MAX_REBALANCE_TIMEOUT_MS} ms (MAX_REBALANCE_TIMEOUT_MS)"
                ),
            ));
        }
    }
    match &req.subscription {
        Some(s) => subscription::check(s)?,
        None if beat == Beat::Join => {
            return Err(GroupError::invalid(
                "subscription",
                "a joining member (member epoch 0) must send its subscription",
            ));
        }
        None => {}
    }
    Ok(beat)
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_CLIENT_INFO_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Rule 1: the member id the joining member has from now on.
fn join(
    w: &mut Work,
    new_group: bool,
    req: &HeartbeatRequest,
    ctx: &Context,
) -> Result<String, GroupError> {
    if new_group && ctx.groups_held >= MAX_GROUPS_PER_COORDINATOR {
        return Err(GroupError::TooManyGroups {
            limit: MAX_GROUPS_PER_COORDINATOR,
        });
    }
    let id = if req.member_id.is_empty() {
        ctx.new_member_id.to_string()
    } else {
        req.member_id.clone()
    };
    let replaced = req
        .instance_id
        .as_deref()
        .and_then(|i| w.group.member_by_instance(i))
        .cloned();
    if let Some(old) = &replaced
        && !req.member_id.is_empty()
        && old.id != req.member_id
    {
        // A member that was replaced rejoining with its old id (a new process comes without
        // one): taking the place back would start a tug of war between two live processes.
        return Err(GroupError::FencedInstance {
            group: req.group.clone(),
            member: req.member_id.clone(),
            instance: old.instance_id.clone().unwrap_or_default(),
        });
    }
    if let Some(old) = replaced {
        // A static member restarting: it takes the old instance's place as it was.
        let target = w.group.targets.get(&old.id).cloned();
        w.remove_member(&old.id);
        w.remove_member(&id);
        let member = Member {
            id: id.clone(),
            left_static: false,
            ..old
        };
        w.put_member(member);
        if let Some(t) = target {
            w.set_target(&id, t);
        }
        return Ok(id);
    }
    if w.group.members.contains_key(&id) {
        // Its state was lost: it starts again, owning nothing.
        w.remove_member(&id);
    }
    if w.group.members.len() >= MAX_MEMBERS_PER_GROUP {
        return Err(GroupError::GroupFull {
            group: req.group.clone(),
            limit: MAX_MEMBERS_PER_GROUP,
        });
    }
    if w.group.members.is_empty() {
        // The first member's choice, or the default: an earlier generation's members' choice
        // left with them.
        w.meta().settings.assignor = req.assignor.unwrap_or_default();
        w.meta().empty_since_ms = None;
    }
    w.put_member(Member {
        id: id.clone(),
        instance_id: req.instance_id.clone(),
        client_id: String::new(),
        client_host: String::new(),
        subscription: Subscription::default(),
        rebalance_timeout_ms: DEFAULT_REBALANCE_TIMEOUT_MS,
        epoch: 0,
        previous_epoch: 0,
        state: MemberState::Stable,
        assigned: BTreeMap::new(),
        pending_revocation: BTreeMap::new(),
        left_static: false,
    });
    w.bump_epoch();
    Ok(id)
}

/// Rule 2.
fn beat_at(group: &Group, req: &HeartbeatRequest, epoch: u32) -> Result<String, GroupError> {
    let Some(m) = group.members.get(&req.member_id) else {
        if let Some(instance) = req.instance_id.as_deref()
            && group.member_by_instance(instance).is_some()
        {
            return Err(GroupError::FencedInstance {
                group: req.group.clone(),
                member: req.member_id.clone(),
                instance: instance.to_string(),
            });
        }
        return Err(GroupError::UnknownMember {
            group: req.group.clone(),
            member: req.member_id.clone(),
        });
    };
    let lost_answer = epoch == m.previous_epoch
        && req
            .owned
            .as_ref()
            .is_some_and(|o| o.iter().all(|tp| m.assigned.contains_key(tp)));
    if m.left_static || (epoch != m.epoch && !lost_answer) {
        return Err(GroupError::FencedMemberEpoch {
            group: req.group.clone(),
            member: req.member_id.clone(),
            sent: epoch,
            current: m.epoch,
        });
    }
    Ok(m.id.clone())
}

/// The member's subscription, rebalance timeout and client details, as the request has them;
/// a changed subscription bumps the group epoch.
fn update_member(w: &mut Work, id: &str, req: &HeartbeatRequest) {
    let mut m = w.group.members[id].clone();
    let mut bump = false;
    if let Some(s) = &req.subscription
        && *s != m.subscription
    {
        {
            m.subscription = s.clone();
            bump = true;
        }
    }
    if let Some(t) = req.rebalance_timeout_ms {
        m.rebalance_timeout_ms = t;
    }
    if !req.client_id.is_empty() {
        m.client_id = clip(&req.client_id);
    }
    if !req.client_host.is_empty() {
        m.client_host = clip(&req.client_host);
    }
    w.put_member(m);
    if bump {
        w.bump_epoch();
    }
}

/// Rule 3's metadata part: the subscribed topics' partition counts.
fn refresh_subscribed(w: &mut Work, topics: &TopicsView) {
    let mut resolver = Resolver::default();
    let mut now: BTreeMap<TopicId, u32> = BTreeMap::new();
    for m in w.group.members.values() {
        for t in resolver.topics(&m.subscription, topics) {
            now.insert(t, topics.partitions_of(t));
        }
    }
    if now != w.group.meta.subscribed {
        w.meta().subscribed = now;
        w.bump_epoch();
    }
}

fn compute_target(w: &mut Work, topics: &TopicsView) {
    let mut resolver = Resolver::default();
    let members: BTreeMap<String, AssignMember> = w
        .group
        .members
        .values()
        .map(|m| {
            (
                m.id.clone(),
                AssignMember {
                    sort_key: m.instance_id.clone().unwrap_or_else(|| m.id.clone()),
                    topics: resolver.topics(&m.subscription, topics),
                },
            )
        })
        .collect();
    let target = assign(
        w.group.assignor(),
        &members,
        &w.group.meta.subscribed,
        &w.group.targets,
    );
    for (member, partitions) in target {
        w.set_target(&member, partitions);
    }
    let epoch = w.group.meta.epoch;
    w.meta().assignment_epoch = epoch;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::Groups;

    fn topics() -> TopicsView {
        TopicsView::new([("t".to_string(), 1, 4)])
    }

    fn request(member_id: &str, beat: Beat, owned: Option<BTreeSet<Tp>>) -> HeartbeatRequest {
        HeartbeatRequest {
            group: "g".into(),
            member_id: member_id.into(),
            beat: Some(beat),
            subscription: Some(Subscription {
                topics: ["t".to_string()].into(),
                pattern: None,
            }),
            owned,
            ..HeartbeatRequest::default()
        }
    }

    /// Decides `req` on `groups` (with `fresh` for a joining member's id) and applies it.
    fn decide(
        groups: &mut Groups,
        req: &HeartbeatRequest,
        fresh: &str,
    ) -> Decision<HeartbeatAnswer> {
        let topics = topics();
        let ctx = Context {
            topics: &topics,
            now_ms: 1,
            groups_held: groups.len(),
            new_member_id: fresh,
            defaults: Defaults::default(),
        };
        let d = heartbeat(groups.get("g"), req, &ctx).expect("decided");
        for r in &d.records {
            groups.apply(r);
        }
        d
    }

    /// A member alone in the group, settled: its id, epoch and partitions.
    fn settled(groups: &mut Groups) -> (String, u32, BTreeSet<Tp>) {
        let d = decide(groups, &request("", Beat::Join, Some(BTreeSet::new())), "a");
        let a = d.answer;
        (a.member_id, a.member_epoch.unwrap(), a.assignment)
    }

    #[test]
    fn a_settled_member_s_heartbeat_may_be_held() {
        let mut groups = Groups::default();
        let (id, epoch, owned) = settled(&mut groups);
        assert_eq!(owned.len(), 4);
        let req = request(&id, Beat::At(epoch), Some(owned));
        let d = decide(&mut groups, &req, "unused");
        assert!(may_hold(&req, &d.answer, &d.records));
    }

    #[test]
    fn joins_leaves_and_members_that_do_not_say_what_they_own_are_answered_at_once() {
        let mut groups = Groups::default();
        let join = request("", Beat::Join, Some(BTreeSet::new()));
        let d = decide(&mut groups, &join, "a");
        assert!(!may_hold(&join, &d.answer, &d.records));
        let (id, epoch) = (d.answer.member_id.clone(), d.answer.member_epoch.unwrap());
        let unknown = request(&id, Beat::At(epoch), None);
        let d = decide(&mut groups, &unknown, "unused");
        assert!(!may_hold(&unknown, &d.answer, &d.records));
        let leave = request(&id, Beat::Leave, None);
        let d = decide(&mut groups, &leave, "unused");
        assert!(!may_hold(&leave, &d.answer, &d.records));
    }

    #[test]
    fn a_member_that_must_revoke_or_is_behind_is_answered_at_once() {
        let mut groups = Groups::default();
        let (a, epoch, owned) = settled(&mut groups);
        // A second member joins: the first must give partitions up.
        let b = decide(
            &mut groups,
            &request("", Beat::Join, Some(BTreeSet::new())),
            "b",
        );
        assert!(b.answer.assignment.is_empty(), "b waits for a's partitions");
        let req = request(&a, Beat::At(epoch), Some(owned.clone()));
        let d = decide(&mut groups, &req, "unused");
        assert_eq!(d.answer.state, Some(MemberState::UnrevokedPartitions));
        assert!(!may_hold(&req, &d.answer, &d.records));
        // The member says it owns less than it was given (it lost the answer before): news.
        let mut less = owned.clone();
        less.pop_first();
        let req = request(&a, Beat::At(epoch), Some(less));
        let d = decide(&mut groups, &req, "unused");
        assert!(!may_hold(&req, &d.answer, &d.records));
    }

    #[test]
    fn a_member_waiting_for_another_s_partitions_may_be_held_until_they_are_released() {
        let mut groups = Groups::default();
        let (a, epoch, owned) = settled(&mut groups);
        let joined = decide(
            &mut groups,
            &request("", Beat::Join, Some(BTreeSet::new())),
            "b",
        );
        let (b, b_epoch) = (joined.answer.member_id, joined.answer.member_epoch.unwrap());
        let req = request(&b, Beat::At(b_epoch), Some(BTreeSet::new()));
        let d = decide(&mut groups, &req, "unused");
        assert_eq!(d.answer.state, Some(MemberState::UnreleasedPartitions));
        assert!(may_hold(&req, &d.answer, &d.records));
        // The first member revokes (a write to the group: held heartbeats are re-decided)…
        let asked = decide(
            &mut groups,
            &request(&a, Beat::At(epoch), Some(owned)),
            "unused",
        );
        let keep = asked.answer.assignment;
        let revoked = decide(
            &mut groups,
            &request(&a, Beat::At(epoch), Some(keep)),
            "unused",
        );
        assert!(!revoked.records.is_empty());
        // …and the waiting member's re-decided heartbeat has news: it is answered.
        let d = decide(&mut groups, &req, "unused");
        assert!(!d.answer.assignment.is_empty());
        assert!(!may_hold(&req, &d.answer, &d.records));
    }
}
