//! The state of consumer groups: what a coordinator partition's log records and replays.
//!
//! Topics are named by their metadata id ([`TopicId`], never reused), so offsets committed for
//! a deleted topic never apply to a new topic of the same name. Names are resolved through a
//! [`TopicsView`] of the metadata when a request comes in or an answer goes out.
//!
//! What must hold ([`Group::validate`]): a partition is owned (assigned or pending
//! revocation) by at most one member, and [`Group::owners`] says exactly who; a member's
//! epoch is at most the group's assignment epoch, which is at most the group epoch; every
//! target names a member of the group.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A topic's metadata id.
pub type TopicId = u32;

/// A topic partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tp {
    pub topic: TopicId,
    pub partition: u32,
}

impl Tp {
    pub fn new(topic: TopicId, partition: u32) -> Self {
        Tp { topic, partition }
    }
}

/// A topic as the coordinator needs it from the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: TopicId,
    pub partitions: u32,
}

/// The metadata's topics, by name: the coordinator's view, given with each decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicsView {
    pub by_name: BTreeMap<String, TopicInfo>,
    /// Every topic id below this one was handed out by the metadata this view was taken
    /// from (ids are never reused): an id below it that `by_name` lacks was deleted; one at
    /// or above it may be a topic this view has not learned of yet.
    pub next_id: TopicId,
}

impl TopicsView {
    /// A view of `topics`, knowing of no topic id above the largest of theirs.
    pub fn new(topics: impl IntoIterator<Item = (String, TopicId, u32)>) -> Self {
        let by_name: BTreeMap<String, TopicInfo> = topics
            .into_iter()
            .map(|(name, id, partitions)| (name, TopicInfo { id, partitions }))
            .collect();
        let next_id = by_name
            .values()
            .map(|t| t.id.saturating_add(1))
            .max()
            .unwrap_or(0);
        TopicsView { by_name, next_id }
    }

    /// The view, knowing that the metadata handed out every id below `next_id`.
    pub fn with_next_id(mut self, next_id: TopicId) -> Self {
        self.next_id = self.next_id.max(next_id);
        self
    }

    /// Whether `tp` is known to be gone: its topic was deleted (an id this view's metadata
    /// handed out, no longer there), or the topic has fewer partitions. A topic id this
    /// view never saw is not gone: the view may be behind the metadata that created it.
    pub fn is_gone(&self, tp: Tp) -> bool {
        match self.by_name.values().find(|t| t.id == tp.topic) {
            Some(t) => t.partitions <= tp.partition,
            None => tp.topic < self.next_id,
        }
    }

    /// A topic's name by id, if it still exists.
    pub fn name_of(&self, id: TopicId) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(n, _)| n.as_str())
    }

    /// `topic/partition` for messages: the name if the topic exists, else its id.
    pub fn describe(&self, tp: Tp) -> String {
        match self.name_of(tp.topic) {
            Some(n) => n.to_string(),
            None => format!("(deleted topic id {})", tp.topic),
        }
    }

    /// The partition count of a topic by id (0 if it no longer exists).
    pub fn partitions_of(&self, id: TopicId) -> u32 {
        self.by_name
            .values()
            .find(|t| t.id == id)
            .map_or(0, |t| t.partitions)
    }
}

/// What a member subscribes to: topic names, and topics whose names match a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub topics: BTreeSet<String>,
    /// An RE2-style regular expression matched against the whole topic name.
    pub pattern: Option<String>,
}

/// Where a member is in reconciling its assignment with its target (KIP-848's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// It owns what its target gives it, as far as other members have released.
    Stable,
    /// It must first give up the partitions pending revocation (it keeps its epoch until it
    /// says it has).
    UnrevokedPartitions,
    /// It is at the new epoch but some of its target is still owned by others.
    UnreleasedPartitions,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// A static member's instance id: a member that restarts with it takes its place and
    /// assignment back, without a rebalance.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscription: Subscription,
    pub rebalance_timeout_ms: u32,
    /// The member's epoch: the assignment epoch it reconciled to.
    pub epoch: u32,
    /// The epoch before, accepted once more when a heartbeat's answer was lost.
    pub previous_epoch: u32,
    pub state: MemberState,
    /// The partitions it owns, each with the member epoch it was assigned at.
    pub assigned: BTreeMap<Tp, u32>,
    /// The partitions it must give up, each with the epoch it was assigned at: still owned
    /// until it says it gave them up.
    pub pending_revocation: BTreeMap<Tp, u32>,
    /// A static member that left saying it will be back (epoch -2 on the wire): it keeps its
    /// assignment until its session times out.
    pub left_static: bool,
}

impl Member {
    /// Whether it owns `tp` (assigned, or not yet revoked), and since which epoch.
    pub fn owns(&self, tp: Tp) -> Option<u32> {
        self.assigned
            .get(&tp)
            .or_else(|| self.pending_revocation.get(&tp))
            .copied()
    }

    pub fn owned(&self) -> impl Iterator<Item = Tp> + '_ {
        self.assigned
            .keys()
            .chain(self.pending_revocation.keys())
            .copied()
    }
}

/// The server-side assignor a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Assignor {
    /// Spreads partitions evenly over the members, moving as few as it can (Kafka's
    /// `uniform`, the default).
    #[default]
    Uniform,
    /// Per topic, consecutive ranges of partitions to the members in order (Kafka's `range`):
    /// co-partitioned topics land together.
    Range,
}

/// What the group's members chose, kept in its meta record: the assignor the first member to
/// join the empty group asked for.
///
/// The two timing fields are never set: a group's overrides are its [`GroupConfig`], a record
/// of their own. They stay so that meta records keep their layout (old logs still decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupSettings {
    /// Unused (see above): always `None`.
    pub session_timeout_ms: Option<u32>,
    /// Unused (see above): always `None`.
    pub heartbeat_interval_ms: Option<u32>,
    /// The assignor the members asked for; the group's [`GroupConfig::assignor`], if set,
    /// wins over it.
    pub assignor: Assignor,
}

/// A group's own configuration, set by an admin (AlterGroupConfig): each setting overrides
/// the server's default, `None` is the server's default. Kafka's group configs
/// `group.consumer.session.timeout.ms` and `group.consumer.heartbeat.interval.ms`, and the
/// assignor. Checked against the named limits when set ([`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupConfig {
    pub session_timeout_ms: Option<u32>,
    pub heartbeat_interval_ms: Option<u32>,
    /// The assignor, whatever the members ask for.
    pub assignor: Option<Assignor>,
}

impl GroupConfig {
    /// Whether it overrides nothing.
    pub fn is_default(&self) -> bool {
        *self == GroupConfig::default()
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The offset of the next record to read.
    pub offset: u64,
    pub metadata: String,
    /// Wall-clock time of the commit, in ms since the Unix epoch.
    pub commit_time_ms: i64,
}

/// The group-level record: everything of a group but its members, targets and offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Bumped by every change the assignment depends on (members, subscriptions, the
    /// subscribed topics' partition counts).
    pub epoch: u32,
    /// The group epoch the target assignment was computed at.
    pub assignment_epoch: u32,
    pub settings: GroupSettings,
    /// The subscribed topics and their partition counts when the epoch was last bumped: a
    /// change of these bumps it again.
    pub subscribed: BTreeMap<TopicId, u32>,
    /// When the group last became empty (ms since the Unix epoch); `None` while it has members.
    pub empty_since_ms: Option<i64>,
}

/// A group as a coordinator holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub name: String,
    pub meta: GroupMeta,
    pub members: BTreeMap<String, Member>,
    /// The target assignment of each member, at `meta.assignment_epoch`.
    pub targets: BTreeMap<String, BTreeSet<Tp>>,
    pub offsets: BTreeMap<Tp, Committed>,
    /// Who owns each owned partition, and since which epoch: derived from the members.
    pub owners: BTreeMap<Tp, (String, u32)>,
    /// The group's overrides of the server's defaults.
    pub config: GroupConfig,
}

/// A group's state as `describe` shows it (Kafka's consumer group states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (it may hold committed offsets).
    Empty,
    /// A new target assignment is due.
    Assigning,
    /// Members are moving to the target assignment.
    Reconciling,
    /// Every member owns its target.
    Stable,
}

impl Group {
    pub fn new(name: &str) -> Self {
        Group {
            name: name.to_string(),
            ..Group::default()
        }
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.meta.epoch > self.meta.assignment_epoch {
            GroupState::Assigning
        } else if self
            .members
            .values()
            .all(|m| m.state == MemberState::Stable && m.epoch == self.meta.assignment_epoch)
        {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// Replaces or inserts a member, keeping [`Group::owners`] true.
    pub(crate) fn put_member(&mut self, member: Member) {
        if let Some(old) = self.members.get(&member.id) {
            for tp in old.owned().collect::<Vec<_>>() {
                if self.owners.get(&tp).is_some_and(|(o, _)| *o == member.id) {
                    self.owners.remove(&tp);
                }
            }
        }
        for (tp, at) in member.assigned.iter().chain(&member.pending_revocation) {
            self.owners.insert(*tp, (member.id.clone(), *at));
        }
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member, its target and its ownerships.
    pub(crate) fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        for tp in m.owned() {
            if self.owners.get(&tp).is_some_and(|(o, _)| o == id) {
                self.owners.remove(&tp);
            }
        }
        self.targets.remove(id);
        Some(m)
    }

    /// A member by instance id.
    pub fn member_by_instance(&self, instance_id: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    /// Whether the group holds nothing worth keeping: no members, no offsets, no overrides.
    pub fn is_vacant(&self) -> bool {
        self.members.is_empty() && self.offsets.is_empty() && self.config.is_default()
    }

    /// The assignor in force: the group's own ([`GroupConfig::assignor`]), else the one its
    /// members asked for ([`GroupSettings::assignor`], uniform by default).
    pub fn assignor(&self) -> Assignor {
        self.config.assignor.unwrap_or(self.meta.settings.assignor)
    }

    /// The invariants of the module doc; `Err` names the first that does not hold.
    pub fn validate(&self) -> Result<(), String> {
        if self.meta.assignment_epoch > self.meta.epoch {
            return Err(format!(
                "group {:?}: assignment epoch {} above group epoch {}",
                self.name, self.meta.assignment_epoch, self.meta.epoch
            ));
        }
        let mut seen: BTreeMap<Tp, &str> = BTreeMap::new();
        for m in self.members.values() {
            if m.epoch > self.meta.assignment_epoch {
                return Err(format!(
                    "group {:?}: member {:?} at epoch {} above the assignment epoch {}",
                    self.name, m.id, m.epoch, self.meta.assignment_epoch
                ));
            }
            for tp in m.owned() {
                if let Some(other) = seen.insert(tp, &m.id) {
                    return Err(format!(
                        "group {:?}: {:?} owned by both {:?} and {:?}",
                        self.name, tp, other, m.id
                    ));
                }
                match self.owners.get(&tp) {
                    Some((o, _)) if *o == m.id => {}
                    other => {
                        return Err(format!(
                            "group {:?}: owners says {:?} of {:?} owned by {:?}",
                            self.name, other, tp, m.id
                        ));
                    }
                }
            }
        }
        if seen.len() != self.owners.len() {
            return Err(format!(
                "group {:?}: owners lists {} partitions, members own {}",
                self.name,
                self.owners.len(),
                seen.len()
            ));
        }
        if let Some(t) = self.targets.keys().find(|t| !self.members.contains_key(*t)) {
            return Err(format!(
                "group {:?}: a target for {t:?}, not a member",
                self.name
            ));
        }
        Ok(())
    }
}
