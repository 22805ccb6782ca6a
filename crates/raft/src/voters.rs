//! Where a node stands in a group's voter configuration, and the membership change that takes
//! it to voter or learner: pure decisions for [`crate::handle::GroupRaft::promote_caught_up`]
//! and [`crate::handle::GroupRaft::demote`].
//!
//! openraft changes voters through a joint configuration (old and new voters together) and
//! then the new one alone. A leader that loses its leadership or crashes between the two
//! entries leaves the group in the joint configuration, and openraft does not finish it by
//! itself: whoever asked must ask again. Counting every node of a joint configuration as a
//! voter (openraft's `voter_ids`) would answer "already a voter" to that retry and leave the
//! group joint for good, where a majority of *both* parts is needed: one more lost node then
//! stops the group (seen in a 30-minute fault run: the metadata group stayed in
//! `[{2, 3}, {1, 2, 3}]` after node 1's promotion, and lost its leader for good once node 3
//! lost its disk). Here a node is a voter only of a uniform configuration that lists it, and a
//! joint configuration is always finished before anything else.

use std::collections::BTreeSet;

use crate::types::NodeId;

/// Where a node stands in a group's configuration, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// A voter of the group's one (uniform) configuration.
    Voter,
    /// In the new part of an unfinished joint configuration: joining, or staying.
    Joining,
    /// In the old part only of an unfinished joint configuration: being taken out.
    Leaving,
    /// A learner: receives the log, neither votes nor counts toward a majority.
    Learner,
    /// Not a member.
    Absent,
}

/// Where `node` stands, from the configurations (`configs`: one when uniform, the old then
/// the new when joint) and the learners.
pub fn standing(
    configs: &[BTreeSet<NodeId>],
    learners: &BTreeSet<NodeId>,
    node: NodeId,
) -> Standing {
    let joint = configs.len() > 1;
    match configs.last() {
        Some(last) if last.contains(&node) => {
            if joint {
                Standing::Joining
            } else {
                Standing::Voter
            }
        }
        _ if configs.iter().any(|c| c.contains(&node)) => Standing::Leaving,
        _ if learners.contains(&node) => Standing::Learner,
        _ => Standing::Absent,
    }
}

/// What the leader does to make a node a voter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteStep {
    /// Nothing: it is one.
    AlreadyVoter,
    /// Finish the joint configuration (its new part lists the node: it was found caught up
    /// before that configuration was proposed).
    Finish,
    /// Add it to the voters: it holds every committed entry.
    Add,
    /// Not yet: it holds `matched` of the `committed` entries (counts, not indexes).
    Lagging { matched: u64, committed: u64 },
    /// It is not a member of the group.
    NotAMember,
}

/// What makes `node` a voter, given where it stands and how far its replication matched the
/// leader's commit (`matched`, `committed`: log indexes, `None` for none).
pub fn promote_step(
    standing: &Standing,
    matched: Option<u64>,
    committed: Option<u64>,
) -> PromoteStep {
    match standing {
        Standing::Voter => PromoteStep::AlreadyVoter,
        Standing::Joining => PromoteStep::Finish,
        Standing::Absent => PromoteStep::NotAMember,
        Standing::Leaving | Standing::Learner => {
            if matched.is_none() || matched < committed {
                PromoteStep::Lagging {
                    matched: matched.map_or(0, |m| m + 1),
                    committed: committed.map_or(0, |c| c + 1),
                }
            } else {
                PromoteStep::Add
            }
        }
    }
}

/// What the leader does to make a node a learner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoteStep {
    /// Nothing: it votes in no configuration.
    NotVoter,
    /// Finish the joint configuration whose new part already leaves it out.
    Finish,
    /// Change the voters to these (the newest configuration without the node).
    Keep(BTreeSet<NodeId>),
    /// It is the only voter: a group cannot go on without one.
    OnlyVoter,
}

/// What makes `node` a learner, given where it stands in `configs`.
pub fn demote_step(configs: &[BTreeSet<NodeId>], standing: &Standing, node: NodeId) -> DemoteStep {
    match standing {
        Standing::Learner | Standing::Absent => DemoteStep::NotVoter,
        Standing::Leaving => DemoteStep::Finish,
        Standing::Voter | Standing::Joining => {
            let rest: BTreeSet<NodeId> = configs
                .last()
                .into_iter()
                .flatten()
                .copied()
                .filter(|v| *v != node)
                .collect();
            if rest.is_empty() {
                DemoteStep::OnlyVoter
            } else {
                DemoteStep::Keep(rest)
            }
        }
    }
}

/// Whether a group's leader finishes its joint configuration itself
/// ([`crate::handle`]'s leadership watch does, a grace period after it sees one): it leads,
/// the configuration is joint (`configs`: one set when uniform, two when joint), and the
/// joint entry (at index `joint_at`) is applied, so committed. Whoever started the change
/// (a rebuild's promotion or demotion) may never ask again: a leader that lost its
/// leadership or crashed between the two entries, or a caller that timed out, leaves the
/// joint configuration behind, and a node restarted on its rebuilt directory sees itself a
/// voter of it and asks nothing.
pub fn joint_to_finish(
    leader: bool,
    configs: usize,
    joint_at: Option<u64>,
    applied: Option<u64>,
) -> bool {
    leader && configs > 1 && joint_at.is_some() && joint_at <= applied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_finishes_a_committed_joint_configuration_only() {
        assert!(joint_to_finish(true, 2, Some(10), Some(10)));
        assert!(joint_to_finish(true, 2, Some(10), Some(12)));
        // Not yet committed: the change that made it is still under way.
        assert!(!joint_to_finish(true, 2, Some(10), Some(9)));
        assert!(!joint_to_finish(true, 2, Some(10), None));
        // Uniform, or not the leader.
        assert!(!joint_to_finish(true, 1, Some(10), Some(12)));
        assert!(!joint_to_finish(false, 2, Some(10), Some(12)));
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_node_in_an_unfinished_joint_configuration_is_no_voter_yet() {
        let joint = [set(&[2, 3]), set(&[1, 2, 3])];
        let none = BTreeSet::new();
        assert_eq!(standing(&joint, &none, 1), Standing::Joining);
        assert_eq!(standing(&joint, &none, 2), Standing::Joining);
        assert_eq!(
            promote_step(&standing(&joint, &none, 1), Some(9), Some(9)),
            PromoteStep::Finish
        );
        let leaving = [set(&[1, 2, 3]), set(&[2, 3])];
        assert_eq!(standing(&leaving, &none, 1), Standing::Leaving);
        assert_eq!(
            demote_step(&leaving, &Standing::Leaving, 1),
            DemoteStep::Finish
        );
    }

    #[test]
    fn a_uniform_configuration_promotes_and_demotes_as_before() {
        let uniform = [set(&[1, 2, 3])];
        let learners = set(&[4]);
        assert_eq!(standing(&uniform, &learners, 2), Standing::Voter);
        assert_eq!(standing(&uniform, &learners, 4), Standing::Learner);
        assert_eq!(standing(&uniform, &learners, 5), Standing::Absent);
        assert_eq!(
            promote_step(&Standing::Voter, None, Some(3)),
            PromoteStep::AlreadyVoter
        );
        assert_eq!(
            promote_step(&Standing::Absent, Some(3), Some(3)),
            PromoteStep::NotAMember
        );
        assert_eq!(
            promote_step(&Standing::Learner, Some(2), Some(3)),
            PromoteStep::Lagging {
                matched: 3,
                committed: 4
            }
        );
        assert_eq!(
            promote_step(&Standing::Learner, None, None),
            PromoteStep::Lagging {
                matched: 0,
                committed: 0
            }
        );
        assert_eq!(
            promote_step(&Standing::Learner, Some(3), Some(3)),
            PromoteStep::Add
        );
        assert_eq!(
            demote_step(&uniform, &Standing::Voter, 2),
            DemoteStep::Keep(set(&[1, 3]))
        );
        assert_eq!(
            demote_step(&uniform, &Standing::Learner, 4),
            DemoteStep::NotVoter
        );
        assert_eq!(
            demote_step(&[set(&[7])], &Standing::Voter, 7),
            DemoteStep::OnlyVoter
        );
    }

    #[test]
    fn a_node_being_taken_out_is_added_back_only_once_caught_up() {
        let leaving = [set(&[1, 2, 3]), set(&[2, 3])];
        let s = standing(&leaving, &BTreeSet::new(), 1);
        assert_eq!(
            promote_step(&s, Some(1), Some(5)),
            PromoteStep::Lagging {
                matched: 2,
                committed: 6
            }
        );
        assert_eq!(promote_step(&s, Some(5), Some(5)), PromoteStep::Add);
    }

    #[test]
    fn demoting_a_node_that_is_joining_keeps_the_newest_configuration_without_it() {
        let joint = [set(&[2, 3]), set(&[1, 2, 3])];
        assert_eq!(
            demote_step(&joint, &Standing::Joining, 1),
            DemoteStep::Keep(set(&[2, 3]))
        );
    }
}
