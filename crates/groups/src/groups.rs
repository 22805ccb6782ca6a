//! [`Groups`]: every group of one coordinator partition, as its committed records replay, and
//! [`Work`]: a decision's scratch copy of one group, which records each change it makes.

use std::collections::BTreeMap;

use crate::model::{Group, GroupConfig, GroupMeta, Member};
use crate::record::GroupRecord;

/// The groups of one coordinator partition: the replay of its committed records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    groups: BTreeMap<String, Group>,
}

impl Groups {
    /// Applies one committed record. Total: a record about a group or member that is not
    /// there creates it (a compacted log may start anywhere) or is a no-op (a tombstone).
    pub fn apply(&mut self, record: &GroupRecord) {
        if let GroupRecord::GroupGone { group } = record {
            self.groups.remove(group);
            return;
        }
        let name = record.group();
        if !self.groups.contains_key(name) {
            self.groups.insert(name.to_string(), Group::new(name));
        }
        let group = self.groups.get_mut(name).expect("inserted above");
        group.apply(record);
    }

    pub fn get(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The records that rebuild these groups (none a tombstone): a checkpoint's content, and
    /// what a compacted log would hold.
    pub fn snapshot(&self) -> Vec<GroupRecord> {
        let mut out = Vec::new();
        for g in self.groups.values() {
            let group = || g.name.clone();
            out.push(GroupRecord::Meta {
                group: group(),
                meta: g.meta.clone(),
            });
            out.extend(g.members.values().map(|m| GroupRecord::Member {
                group: group(),
                member: m.clone(),
            }));
            out.extend(g.targets.iter().map(|(m, p)| GroupRecord::Target {
                group: group(),
                member: m.clone(),
                partitions: p.clone(),
            }));
            out.extend(g.offsets.iter().map(|(tp, c)| GroupRecord::Offset {
                group: group(),
                tp: *tp,
                committed: c.clone(),
            }));
            if !g.config.is_default() {
                out.push(GroupRecord::Config {
                    group: group(),
                    config: g.config,
                });
            }
        }
        out
    }

    /// Checks every group's invariants ([`Group::validate`]).
    pub fn validate(&self) -> Result<(), String> {
        self.groups.values().try_for_each(Group::validate)
    }
}

impl Group {
    /// Applies one record about this group (a `GroupGone` clears it).
    pub fn apply(&mut self, record: &GroupRecord) {
        match record {
            GroupRecord::Meta { meta, .. } => self.meta = meta.clone(),
            GroupRecord::GroupGone { .. } => *self = Group::new(&self.name),
            GroupRecord::Member { member, .. } => self.put_member(member.clone()),
            GroupRecord::MemberGone { member, .. } => {
                self.remove_member(member);
            }
            GroupRecord::Target {
                member, partitions, ..
            } => {
                self.targets.insert(member.clone(), partitions.clone());
            }
            GroupRecord::TargetGone { member, .. } => {
                self.targets.remove(member);
            }
            GroupRecord::Offset { tp, committed, .. } => {
                self.offsets.insert(*tp, committed.clone());
            }
            GroupRecord::OffsetGone { tp, .. } => {
                self.offsets.remove(tp);
            }
            GroupRecord::Config { config, .. } => self.config = *config,
            GroupRecord::ConfigGone { .. } => self.config = GroupConfig::default(),
        }
    }
}

/// A decision's copy of one group: each change is applied to it and recorded, so the
/// records replay to exactly the group the decision saw.
pub(crate) struct Work {
    pub group: Group,
    records: Vec<GroupRecord>,
    meta_changed: bool,
}

impl Work {
    pub fn new(existing: Option<&Group>, name: &str) -> Self {
        let (group, meta_changed) = match existing {
            Some(g) => (g.clone(), false),
            // A new group: its meta record is written with its first change.
            None => (Group::new(name), true),
        };
        Work {
            group,
            records: Vec::new(),
            meta_changed,
        }
    }

    fn record(&mut self, r: GroupRecord) {
        self.group.apply(&r);
        self.records.push(r);
    }

    pub fn meta(&mut self) -> &mut GroupMeta {
        self.meta_changed = true;
        &mut self.group.meta
    }

    pub fn put_member(&mut self, member: Member) {
        if self.group.members.get(&member.id) != Some(&member) {
            let group = self.group.name.clone();
            self.record(GroupRecord::Member { group, member });
        }
    }

    pub fn remove_member(&mut self, id: &str) {
        let group = self.group.name.clone();
        if self.group.targets.contains_key(id) {
            self.record(GroupRecord::TargetGone {
                group: group.clone(),
                member: id.to_string(),
            });
        }
        if self.group.members.contains_key(id) {
            self.record(GroupRecord::MemberGone {
                group,
                member: id.to_string(),
            });
        }
    }

    pub fn set_target(&mut self, member: &str, partitions: std::collections::BTreeSet<crate::Tp>) {
        if self.group.targets.get(member) != Some(&partitions) {
            let group = self.group.name.clone();
            self.record(GroupRecord::Target {
                group,
                member: member.to_string(),
                partitions,
            });
        }
    }

    pub fn put_offset(&mut self, tp: crate::Tp, committed: crate::Committed) {
        let group = self.group.name.clone();
        self.record(GroupRecord::Offset {
            group,
            tp,
            committed,
        });
    }

    pub fn remove_offset(&mut self, tp: crate::Tp) {
        if self.group.offsets.contains_key(&tp) {
            let group = self.group.name.clone();
            self.record(GroupRecord::OffsetGone { group, tp });
        }
    }

    /// Sets the group's overrides: a config record, or its tombstone when it overrides
    /// nothing.
    pub fn set_config(&mut self, config: GroupConfig) {
        if self.group.config == config {
            return;
        }
        let group = self.group.name.clone();
        self.record(if config.is_default() {
            GroupRecord::ConfigGone { group }
        } else {
            GroupRecord::Config { group, config }
        });
    }

    /// Bumps the group epoch: the assignment must be computed again.
    pub fn bump_epoch(&mut self) {
        let m = self.meta();
        m.epoch += 1;
    }

    /// The records, the group meta record last if it changed.
    pub fn finish(mut self) -> Vec<GroupRecord> {
        if self.meta_changed {
            let r = GroupRecord::Meta {
                group: self.group.name.clone(),
                meta: self.group.meta.clone(),
            };
            self.records.push(r);
        }
        debug_assert!(
            self.group.validate().is_ok(),
            "{}",
            self.group.validate().unwrap_err()
        );
        self.records
    }

    /// Records the group's removal: every member, target, offset and override, then the
    /// group.
    pub fn delete(mut self) -> Vec<GroupRecord> {
        for id in self.group.members.keys().cloned().collect::<Vec<_>>() {
            self.remove_member(&id);
        }
        for tp in self.group.offsets.keys().copied().collect::<Vec<_>>() {
            self.remove_offset(tp);
        }
        self.set_config(GroupConfig::default());
        let group = self.group.name.clone();
        self.records.push(GroupRecord::GroupGone { group });
        self.records
    }
}
