//! Leader stability across follower isolations: a liveness property the history's checker
//! cannot see. A node that only followed some partitions is cut off from the other nodes for
//! a while, then healed; those partitions' leaders had no reason to change, so a later leader
//! or epoch means the returning follower deposed a healthy leader.
//!
//! Each tier cuts the follower off and observes the leaders its own way (the process tier
//! asks every node to describe the topic; the simulation's client watches the leaders); both
//! feed what they saw to a [`Watch`] and report its [`IsolationCheck`] in the same words
//! ([`LeaderStability`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A partition's leader and its term, as the cluster described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLeader {
    pub partition: u32,
    pub leader: Option<u64>,
    pub epoch: u64,
}

/// One `partition-follower` fault: a node that only followed some partitions was cut off from
/// the other nodes for a while and healed. Those partitions' leaders had no reason to change:
/// a change means the cut-off follower deposed a healthy leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationCheck {
    /// The node cut off.
    pub node: u64,
    pub cut_ms: u64,
    /// The partitions it followed (and whose leader was their preferred one, so that leader
    /// balancing has no reason to move them), as they were before the cut.
    pub checked: Vec<PartitionLeader>,
    /// Of `checked`, those some node later described with another leader or a later epoch,
    /// during the cut or in the observation after it: the first such description.
    pub changed: Vec<(PartitionLeader, PartitionLeader)>,
    /// Why nothing was checked, when nothing was.
    #[serde(default)]
    pub skipped: Option<String>,
}

/// The report's figure: partitions whose leader changed across a follower isolation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaderStability {
    pub isolations: u64,
    /// Isolations that could not be checked (the cluster had not settled first).
    pub skipped: u64,
    pub partitions_checked: u64,
    pub partitions_changed: u64,
    /// One line per change, e.g. `n2 cut 1800 ms: partition 1 n1@4 -> n3@6`.
    pub examples: Vec<String>,
}

fn leader_name(l: &PartitionLeader) -> String {
    match l.leader {
        Some(n) => format!("n{n}@{}", l.epoch),
        None => format!("none@{}", l.epoch),
    }
}

impl LeaderStability {
    pub fn from_checks(checks: &[IsolationCheck]) -> LeaderStability {
        let mut s = LeaderStability::default();
        for c in checks {
            s.isolations += 1;
            if c.skipped.is_some() {
                s.skipped += 1;
            }
            s.partitions_checked += c.checked.len() as u64;
            s.partitions_changed += c.changed.len() as u64;
            for (before, after) in &c.changed {
                s.examples.push(format!(
                    "n{} cut {} ms: partition {} {} -> {}",
                    c.node,
                    c.cut_ms,
                    before.partition,
                    leader_name(before),
                    leader_name(after)
                ));
            }
        }
        s
    }
}

/// Whether `seen` names another leader or a later epoch than `before` (a description
/// without a leader changes nothing unless its epoch is later).
pub fn leader_changed(before: &PartitionLeader, seen: &PartitionLeader) -> bool {
    seen.epoch > before.epoch || (seen.leader.is_some() && seen.leader != before.leader)
}

/// The checked partitions' leaders as observations come in: the first change of each.
#[derive(Debug, Clone)]
pub struct Watch {
    checked: Vec<PartitionLeader>,
    changed: BTreeMap<u32, PartitionLeader>,
}

impl Watch {
    /// Watches `checked`, each partition's leader before the cut.
    pub fn new(checked: Vec<PartitionLeader>) -> Watch {
        Watch {
            checked,
            changed: BTreeMap::new(),
        }
    }

    pub fn checked(&self) -> &[PartitionLeader] {
        &self.checked
    }

    /// Takes one observation of a partition's leader; unchecked partitions are ignored.
    pub fn observe(&mut self, seen: PartitionLeader) {
        if self.changed.contains_key(&seen.partition) {
            return;
        }
        if let Some(before) = self.checked.iter().find(|b| b.partition == seen.partition)
            && leader_changed(before, &seen)
        {
            self.changed.insert(seen.partition, seen);
        }
    }

    /// The check of `node`'s isolation for `cut_ms`, with each changed partition's first
    /// change, in the order the partitions were checked.
    pub fn into_check(self, node: u64, cut_ms: u64, skipped: Option<String>) -> IsolationCheck {
        let changed = self
            .checked
            .iter()
            .filter_map(|b| {
                self.changed
                    .get(&b.partition)
                    .map(|a| (b.clone(), a.clone()))
            })
            .collect();
        IsolationCheck {
            node,
            cut_ms,
            checked: self.checked,
            changed,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(partition: u32, leader: u64, epoch: u64) -> PartitionLeader {
        PartitionLeader {
            partition,
            leader: Some(leader),
            epoch,
        }
    }

    #[test]
    fn the_first_change_of_each_checked_partition_is_reported() {
        let mut w = Watch::new(vec![led(0, 1, 3), led(2, 3, 5)]);
        w.observe(led(0, 1, 3)); // the same
        w.observe(PartitionLeader {
            partition: 2,
            leader: None,
            epoch: 5,
        }); // no leader for a moment: no change
        w.observe(led(1, 2, 9)); // not checked
        w.observe(led(2, 3, 6)); // a later epoch
        w.observe(led(2, 1, 7)); // a second change: the first is kept
        let check = w.into_check(2, 1_500, None);
        assert_eq!(check.changed, vec![(led(2, 3, 5), led(2, 3, 6))]);
        let s = LeaderStability::from_checks(&[check]);
        assert_eq!((s.partitions_checked, s.partitions_changed), (2, 1));
        assert_eq!(s.examples, vec!["n2 cut 1500 ms: partition 2 n3@5 -> n3@6"]);
    }
}
