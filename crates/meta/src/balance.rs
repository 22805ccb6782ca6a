//! Leader balancing: which partition leaderships to transfer so live nodes lead evenly.
//!
//! A pure decision over [`MetaState`] and the set of live nodes; the server performs the
//! transfers. Only partitions whose reported leader is live take part (a dead leader cannot
//! hand over, and Raft replaces it by itself), and leadership only moves to a live replica of
//! the same partition.
//!
//! The plan is built by augmenting paths, as in a flow: while some node leads more than its
//! share `ceil(led / live)`, find the shortest chain "x hands g1 to y, y hands g2 to z, ..."
//! from it to a node leading at least two fewer, and apply the chain. A partition moved once
//! can be moved on or back, which only changes (or cancels) its single move, so no group ever
//! gets two moves. When no chain is left, the nodes reachable from the busiest one all lead at
//! least one less than it and can hand leadership only among themselves, so no assignment has
//! a lower maximum: the plan is the best the replica sets allow (given enough `max_moves`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ids::{GroupId, NodeId};
use crate::state::MetaState;

/// Transfer the leadership of `group_id` from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderMove {
    /// The partition's group.
    pub group_id: GroupId,
    /// Its reported leader.
    pub from: NodeId,
    /// A live replica that should lead instead.
    pub to: NodeId,
}

/// A partition taking part in balancing.
struct Group {
    id: GroupId,
    /// The reported leader.
    reported: NodeId,
    /// The leader once the moves planned so far are done.
    planned: NodeId,
    /// `replicas[0]`, which should lead when it can.
    preferred: NodeId,
    /// Live replicas, in replica order.
    live_replicas: Vec<NodeId>,
}

/// One step of a chain: group `groups[index]` goes from `from` to `to`.
#[derive(Clone, Copy)]
struct Step {
    index: usize,
    from: NodeId,
    to: NodeId,
}

/// Leader transfers such that, once done, no live node leads more than
/// `ceil(led / live nodes)` partitions where the replica sets allow it, and otherwise the
/// busiest live node leads as few as any assignment allows (so never more than its share plus
/// one when replica sets allow that).
///
/// `led` counts partitions whose reported leader is in `live`; live nodes count if they are
/// registered. Leadership only moves to another live replica of the same partition, preferring
/// the partition's preferred leader (`replicas[0]`) when it is under its share. Nodes already
/// within their share cause no moves, so a balanced cluster gets an empty plan.
///
/// Returns at most `max_moves` moves, at most one per group, in group id order;
/// deterministic. With a small `max_moves` the plan is a best effort: each chain is a shortest
/// one, and a chain that does not fit is skipped.
pub fn plan_leader_moves(
    state: &MetaState,
    live: &BTreeSet<NodeId>,
    max_moves: usize,
) -> Vec<LeaderMove> {
    let live_nodes: Vec<NodeId> = state
        .nodes
        .keys()
        .filter(|n| live.contains(n))
        .copied()
        .collect();
    if max_moves == 0 || live_nodes.is_empty() {
        return Vec::new();
    }
    let mut groups = led_by_live(state, live);
    let share = groups.len().div_ceil(live_nodes.len());

    // Which groups each live node leads under the plan so far, by index into `groups`.
    let mut leads: BTreeMap<NodeId, BTreeSet<usize>> =
        live_nodes.iter().map(|n| (*n, BTreeSet::new())).collect();
    for (index, g) in groups.iter().enumerate() {
        leads.entry(g.planned).or_default().insert(index);
    }
    let mut moves = 0usize;

    // Each applied chain lowers the sum of squared loads by at least 2, so this ends.
    loop {
        let mut over: Vec<NodeId> = leads
            .iter()
            .filter(|(_, led)| led.len() > share)
            .map(|(n, _)| *n)
            .collect();
        over.sort_unstable_by_key(|n| (Reverse(leads[n].len()), *n));
        let applied = over.into_iter().any(|source| {
            let Some(chain) = shortest_chain(source, &groups, &leads, share) else {
                return false;
            };
            let total = moves_with(&chain, &groups, moves);
            if total > max_moves {
                return false;
            }
            apply_chain(&chain, &mut groups, &mut leads);
            moves = total;
            true
        });
        if !applied {
            break;
        }
    }

    groups
        .iter()
        .filter(|g| g.planned != g.reported)
        .map(|g| LeaderMove {
            group_id: g.id,
            from: g.reported,
            to: g.planned,
        })
        .collect()
}

/// The partitions whose reported leader is live, in group id order, none moved yet.
fn led_by_live(state: &MetaState, live: &BTreeSet<NodeId>) -> Vec<Group> {
    let mut groups: Vec<Group> = state
        .partitions()
        .filter_map(|p| {
            let leader = p.leader.filter(|l| live.contains(l))?;
            Some(Group {
                id: p.group_id,
                reported: leader,
                planned: leader,
                preferred: *p.replicas.first()?,
                live_replicas: p
                    .replicas
                    .iter()
                    .filter(|r| live.contains(r))
                    .copied()
                    .collect(),
            })
        })
        .collect();
    groups.sort_unstable_by_key(|g| g.id);
    groups
}

/// The plan's move count once `chain` is applied to a plan of `moves`: a step that moves a
/// group back to its reported leader cancels its move.
fn moves_with(chain: &[Step], groups: &[Group], moves: usize) -> usize {
    let after: usize = chain
        .iter()
        .map(|s| usize::from(groups[s.index].reported != s.to))
        .sum();
    let before: usize = chain
        .iter()
        .map(|s| usize::from(groups[s.index].reported != s.from))
        .sum();
    moves + after - before
}

/// Hands each group of `chain` over to its step's target in the plan.
fn apply_chain(
    chain: &[Step],
    groups: &mut [Group],
    leads: &mut BTreeMap<NodeId, BTreeSet<usize>>,
) {
    for step in chain {
        leads
            .get_mut(&step.from)
            .expect("leader is live")
            .remove(&step.index);
        leads
            .get_mut(&step.to)
            .expect("target is live")
            .insert(step.index);
        groups[step.index].planned = step.to;
    }
}

/// The shortest chain of hand-overs from `source` to a node leading at least two fewer
/// (preferring one below `share`), or `None` if every node it can reach leads at least one
/// less than it. Edges are tried in order of preference: hand-overs to a group's preferred
/// leader first, then away from a leader that is not preferred, then the rest.
fn shortest_chain(
    source: NodeId,
    groups: &[Group],
    leads: &BTreeMap<NodeId, BTreeSet<usize>>,
    share: usize,
) -> Option<Vec<Step>> {
    let source_load = leads[&source].len();
    // How each reached node was reached (none for the source), and its distance.
    let mut reached: BTreeMap<NodeId, (Option<Step>, usize)> =
        BTreeMap::from([(source, (None, 0))]);
    let mut queue = VecDeque::from([source]);
    // (distance, not below share, discovery order) of the best sink so far.
    let mut best: Option<((usize, bool, usize), NodeId)> = None;
    let mut discovered = 0usize;
    while let Some(x) = queue.pop_front() {
        let distance = reached[&x].1 + 1;
        if best.is_some_and(|((d, _, _), _)| d < distance) {
            break; // every later node is farther than the best sink found
        }
        for step in hand_overs(x, groups, leads) {
            if reached.contains_key(&step.to) {
                continue;
            }
            reached.insert(step.to, (Some(step), distance));
            queue.push_back(step.to);
            discovered += 1;
            let load = leads[&step.to].len();
            if load + 2 <= source_load {
                let key = (distance, load >= share, discovered);
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, step.to));
                }
            }
        }
    }
    let (_, sink) = best?;
    Some(chain_to(sink, &reached))
}

/// The hand-overs `x` can make, in order of preference: to a group's preferred leader first,
/// then away from a leader that is not preferred, then the rest; within a rank, group id then
/// replica order.
fn hand_overs(x: NodeId, groups: &[Group], leads: &BTreeMap<NodeId, BTreeSet<usize>>) -> Vec<Step> {
    let mut edges: Vec<(u8, Step)> = leads[&x]
        .iter()
        .flat_map(|&index| {
            let g = &groups[index];
            g.live_replicas
                .iter()
                .filter(move |&&y| y != x)
                .map(move |&y| {
                    let rank = if y == g.preferred {
                        0
                    } else if x != g.preferred {
                        1
                    } else {
                        2
                    };
                    (
                        rank,
                        Step {
                            index,
                            from: x,
                            to: y,
                        },
                    )
                })
        })
        .collect();
    // Stable: within a rank, group id then replica order.
    edges.sort_by_key(|(rank, _)| *rank);
    edges.into_iter().map(|(_, step)| step).collect()
}

/// The steps from the search's source to `sink`, by how each node was reached.
fn chain_to(sink: NodeId, reached: &BTreeMap<NodeId, (Option<Step>, usize)>) -> Vec<Step> {
    let mut node = sink;
    let mut chain = Vec::new();
    while let (Some(step), _) = reached[&node] {
        chain.push(step);
        node = step.from;
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::group_id;
    use crate::legacy::TopicConfigV1;
    use crate::state::{MetaCommand, MetaResponse, PartitionAssignment, Topic};
    use crate::topic_config::TopicConfig;

    /// A state with nodes `1..=nodes` and one topic (id 1) whose partitions have the given
    /// replicas and reported leaders.
    fn state(nodes: u64, partitions_of: &[(&[NodeId], Option<NodeId>)]) -> MetaState {
        let mut s = MetaState::new();
        for id in 1..=nodes {
            s.apply(&MetaCommand::RegisterNode {
                id,
                address: format!("n{id}:1"),
            });
        }
        let partitions = partitions_of
            .iter()
            .enumerate()
            .map(|(i, (replicas, leader))| PartitionAssignment {
                partition: i as u32,
                group_id: group_id(1, i as u32),
                replicas: replicas.to_vec(),
                leader: *leader,
                leader_epoch: 1,
            })
            .collect();
        let rf = partitions_of[0].0.len() as u32;
        s.topics.insert(
            "t".into(),
            Topic {
                id: 1,
                name: "t".into(),
                replication_factor: rf,
                config: TopicConfig::default(),
                partitions,
            },
        );
        s.next_topic_id = 2;
        assert_eq!(s.validate(), Ok(()));
        s
    }

    fn all(nodes: u64) -> BTreeSet<NodeId> {
        (1..=nodes).collect()
    }

    fn mv(partition: u32, from: NodeId, to: NodeId) -> LeaderMove {
        LeaderMove {
            group_id: group_id(1, partition),
            from,
            to,
        }
    }

    #[test]
    fn balanced_cluster_gets_no_moves() {
        // Not every leader is preferred, but nobody leads more than the share of 1.
        let s = state(
            3,
            &[
                (&[1, 2, 3], Some(1)),
                (&[2, 3, 1], Some(3)),
                (&[3, 1, 2], Some(2)),
            ],
        );
        assert_eq!(plan_leader_moves(&s, &all(3), 10), vec![]);
    }

    #[test]
    fn moves_go_to_preferred_leaders() {
        let s = state(
            3,
            &[
                (&[1, 2, 3], Some(1)),
                (&[2, 3, 1], Some(1)),
                (&[3, 1, 2], Some(1)),
                (&[1, 3, 2], Some(1)),
                (&[2, 1, 3], Some(1)),
                (&[3, 2, 1], Some(1)),
            ],
        );
        let moves = plan_leader_moves(&s, &all(3), 10);
        assert_eq!(
            moves,
            vec![mv(1, 1, 2), mv(2, 1, 3), mv(4, 1, 2), mv(5, 1, 3)]
        );
    }

    #[test]
    fn max_moves_is_respected() {
        let s = state(
            2,
            &[
                (&[1, 2], Some(1)),
                (&[2, 1], Some(1)),
                (&[2, 1], Some(1)),
                (&[1, 2], Some(1)),
            ],
        );
        assert_eq!(plan_leader_moves(&s, &all(2), 1), vec![mv(1, 1, 2)]);
        assert_eq!(plan_leader_moves(&s, &all(2), 0), vec![]);
        assert_eq!(
            plan_leader_moves(&s, &all(2), 5),
            vec![mv(1, 1, 2), mv(2, 1, 2)]
        );
    }

    /// Node 1 leads two partitions it shares only with node 2, which leads one it shares with
    /// node 3: only the chain 1 -> 2 -> 3 balances.
    #[test]
    fn chains_reach_nodes_no_single_move_can() {
        let s = state(
            3,
            &[(&[1, 2], Some(1)), (&[1, 2], Some(1)), (&[2, 3], Some(2))],
        );
        assert_eq!(
            plan_leader_moves(&s, &all(3), 10),
            vec![mv(0, 1, 2), mv(2, 2, 3)]
        );
        // The chain needs two moves: with one, nothing useful fits.
        assert_eq!(plan_leader_moves(&s, &all(3), 1), vec![]);
    }

    #[test]
    fn dead_nodes_neither_give_nor_take() {
        let s = state(
            3,
            &[
                (&[1, 2, 3], Some(3)), // led by a dead node: left to Raft
                (&[1, 2, 3], Some(1)),
                (&[3, 1, 2], Some(1)),
                (&[3, 1, 2], None), // no reported leader: left alone
            ],
        );
        let live = BTreeSet::from([1, 2]);
        assert_eq!(plan_leader_moves(&s, &live, 10), vec![mv(2, 1, 2)]);
    }

    #[test]
    fn replica_sets_that_forbid_balance_give_no_moves() {
        let s = state(3, &[(&[1], Some(1)), (&[1], Some(1)), (&[1], Some(1))]);
        assert_eq!(plan_leader_moves(&s, &all(3), 10), vec![]);
    }

    #[test]
    fn unregistered_live_nodes_are_ignored() {
        let s = state(2, &[(&[1, 2], Some(1)), (&[2, 1], Some(2))]);
        // 99 is not registered, so it does not lower the share to 1 of 3.
        assert_eq!(
            plan_leader_moves(&s, &BTreeSet::from([1, 2, 99]), 10),
            vec![]
        );
    }

    #[test]
    fn works_on_states_built_by_commands() {
        let mut s = MetaState::new();
        for id in 1..=3 {
            s.apply(&MetaCommand::RegisterNode {
                id,
                address: format!("n{id}:1"),
            });
        }
        let MetaResponse::Topic(topic) = s.apply(&MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 6,
            replication_factor: 3,
            config: TopicConfigV1::default(),
        }) else {
            panic!()
        };
        for p in &topic.partitions {
            s.apply(&MetaCommand::ReportLeader {
                group_id: p.group_id,
                leader: 2,
                epoch: 1,
            });
        }
        let moves = plan_leader_moves(&s, &all(3), 100);
        assert_eq!(moves.len(), 4);
        for m in &moves {
            let (_, p) = s.partition_by_group(m.group_id).unwrap();
            assert_eq!(
                (m.from, m.to),
                (2, p.replicas[0]),
                "moves restore preferred leaders"
            );
        }
    }
}
