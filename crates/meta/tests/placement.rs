//! Property tests of the placement decisions: [`assign_replicas`] and [`plan_leader_moves`].
//!
//! Leader plans are checked against a brute-force optimum (a bipartite matching of partitions
//! to node slots) rather than against the planner's own reasoning. Failing cases are shrunk,
//! printed and saved under `proptest-regressions/`; rerun a run with `PROPTEST_RNG_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};

use fjord_meta::{
    GroupId, LeaderMove, MetaCommand, MetaResponse, MetaState, NodeId, TopicConfigV1,
    assign_replicas, plan_leader_moves,
};
use proptest::prelude::*;

fn spread(counts: &BTreeMap<NodeId, usize>) -> usize {
    counts.values().max().unwrap_or(&0) - counts.values().min().unwrap_or(&0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// From zero load, on any node ids: distinct replicas, replica counts and preferred-leader
    /// counts within 1.
    #[test]
    fn assign_from_zero_load_is_balanced(
        ids in prop::collection::btree_set(1u64..1000, 1..40),
        rf_pick in any::<prop::sample::Index>(),
        partitions in 0u32..=1024,
    ) {
        let nodes: Vec<NodeId> = ids.iter().rev().copied().collect(); // order must not matter
        let rf = rf_pick.index(nodes.len()) as u32 + 1;
        let empty = BTreeMap::new();
        let placement = assign_replicas(&nodes, &empty, &empty, partitions, rf);
        prop_assert_eq!(placement.len(), partitions as usize);
        let mut replicas: BTreeMap<NodeId, usize> = ids.iter().map(|n| (*n, 0)).collect();
        let mut leaders = replicas.clone();
        for list in &placement {
            let distinct: BTreeSet<_> = list.iter().collect();
            prop_assert_eq!(distinct.len(), rf as usize, "{:?}", list);
            for n in list {
                *replicas.get_mut(n).expect("a given node") += 1;
            }
            *leaders.get_mut(&list[0]).expect("a given node") += 1;
        }
        prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
        prop_assert!(spread(&leaders) <= 1, "preferred leaders {:?}", leaders);
        prop_assert_eq!(&placement, &assign_replicas(&nodes, &empty, &empty, partitions, rf));
    }

    /// Topics created one after another through `apply` keep replica counts within 1 while
    /// the node set stays the same.
    #[test]
    fn successive_topics_keep_replicas_balanced(
        nodes in 1u64..8,
        topics in prop::collection::vec((1u32..40, any::<prop::sample::Index>()), 1..6),
    ) {
        let mut state = MetaState::new();
        for id in 1..=nodes {
            state.apply(&MetaCommand::RegisterNode { id, address: format!("n{id}:1") });
        }
        for (i, (partitions, rf)) in topics.iter().enumerate() {
            let cmd = MetaCommand::CreateTopic {
                name: format!("t{i}"),
                partitions: *partitions,
                replication_factor: rf.index(nodes as usize) as u32 + 1,
                config: TopicConfigV1::default(),
            };
            prop_assert!(matches!(state.apply(&cmd), MetaResponse::Topic(_)));
            prop_assert!(spread(&state.replica_counts()) <= 1, "{:?}", state.replica_counts());
        }
    }

    /// A node added to a loaded cluster is in every new partition until it catches up.
    #[test]
    fn assign_fills_the_least_loaded_first(load in 1usize..50, partitions in 1u32..50) {
        let partitions = partitions.min(load as u32);
        let replicas = BTreeMap::from([(1, load), (2, load), (3, 0)]);
        let placement = assign_replicas(&[1, 2, 3], &replicas, &BTreeMap::new(), partitions, 2);
        let on_new = placement.iter().filter(|l| l.contains(&3)).count();
        prop_assert_eq!(on_new, partitions as usize, "node 3 should be in every partition");
    }
}

/// A random cluster: `nodes` nodes, topics of random size and replication factor, random
/// reported leaders, a random live set and a move budget.
#[derive(Debug, Clone)]
struct Case {
    state: MetaState,
    live: BTreeSet<NodeId>,
}

fn case(rf_all: bool) -> impl Strategy<Value = Case> {
    (1u64..=6).prop_flat_map(move |nodes| {
        let topic = (1u32..12, 1..=nodes as u32);
        (
            Just(nodes),
            prop::collection::vec(topic, 1..4),
            prop::collection::vec(any::<Option<prop::sample::Index>>(), 48),
            prop::collection::btree_set(1..=nodes, 1..=nodes as usize),
            any::<bool>(),
        )
            .prop_map(move |(nodes, topics, leaders, live, unregistered_live)| {
                let mut state = MetaState::new();
                for id in 1..=nodes {
                    state.apply(&MetaCommand::RegisterNode {
                        id,
                        address: format!("n{id}:1"),
                    });
                }
                for (i, (partitions, rf)) in topics.into_iter().enumerate() {
                    let rf = if rf_all { nodes as u32 } else { rf };
                    let cmd = MetaCommand::CreateTopic {
                        name: format!("t{i}"),
                        partitions,
                        replication_factor: rf,
                        config: TopicConfigV1::default(),
                    };
                    assert!(matches!(state.apply(&cmd), MetaResponse::Topic(_)));
                }
                let groups: Vec<(GroupId, Vec<NodeId>)> = state
                    .partitions()
                    .map(|p| (p.group_id, p.replicas.clone()))
                    .collect();
                for ((g, replicas), pick) in groups.iter().zip(leaders.iter().cycle()) {
                    if let Some(pick) = pick {
                        let leader = *pick.get(replicas);
                        state.apply(&MetaCommand::ReportLeader {
                            group_id: *g,
                            leader,
                            epoch: 1,
                        });
                    }
                }
                let mut live = live;
                if unregistered_live {
                    live.insert(99);
                }
                Case { state, live }
            })
    })
}

/// Leader counts of live nodes over partitions with a live reported leader, after `moves`.
fn loads_after(case: &Case, moves: &[LeaderMove]) -> BTreeMap<NodeId, usize> {
    let moved: BTreeMap<GroupId, NodeId> = moves.iter().map(|m| (m.group_id, m.to)).collect();
    let mut loads: BTreeMap<NodeId, usize> = case
        .state
        .nodes
        .keys()
        .filter(|n| case.live.contains(n))
        .map(|n| (*n, 0))
        .collect();
    for p in case.state.partitions() {
        if let Some(leader) = p.leader.filter(|l| case.live.contains(l)) {
            *loads
                .get_mut(moved.get(&p.group_id).unwrap_or(&leader))
                .expect("live") += 1;
        }
    }
    loads
}

/// The least possible maximum leader count: the smallest `cap` for which every partition
/// with a live leader can be matched to a live replica, each node taking at most `cap`.
fn optimum(case: &Case) -> usize {
    let groups: Vec<Vec<NodeId>> = case
        .state
        .partitions()
        .filter(|p| p.leader.is_some_and(|l| case.live.contains(&l)))
        .map(|p| {
            p.replicas
                .iter()
                .filter(|r| case.live.contains(r))
                .copied()
                .collect()
        })
        .collect();
    (0..=groups.len())
        .find(|&cap| feasible(&groups, cap))
        .expect("cap = all is feasible")
}

/// Kuhn's augmenting-path matching of groups to `cap` slots per node.
fn feasible(groups: &[Vec<NodeId>], cap: usize) -> bool {
    fn place(
        g: usize,
        groups: &[Vec<NodeId>],
        cap: usize,
        holders: &mut BTreeMap<NodeId, Vec<usize>>,
        seen: &mut BTreeSet<NodeId>,
    ) -> bool {
        for &n in &groups[g] {
            if !seen.insert(n) {
                continue;
            }
            let held = holders.entry(n).or_default().clone();
            if held.len() < cap {
                holders.get_mut(&n).unwrap().push(g);
                return true;
            }
            for (slot, &other) in held.iter().enumerate() {
                if place(other, groups, cap, holders, seen) {
                    holders.get_mut(&n).unwrap()[slot] = g;
                    return true;
                }
            }
        }
        false
    }
    let mut holders = BTreeMap::new();
    (0..groups.len()).all(|g| place(g, groups, cap, &mut holders, &mut BTreeSet::new()))
}

/// Checks the shape of a plan: budget, one move per group, from the live reported leader to
/// another live replica.
fn check_moves(case: &Case, moves: &[LeaderMove], max_moves: usize) -> Result<(), TestCaseError> {
    prop_assert!(
        moves.len() <= max_moves,
        "{} moves over budget {}",
        moves.len(),
        max_moves
    );
    let groups: BTreeSet<GroupId> = moves.iter().map(|m| m.group_id).collect();
    prop_assert_eq!(
        groups.len(),
        moves.len(),
        "two moves for one group: {:?}",
        moves
    );
    for m in moves {
        let (_, p) = case
            .state
            .partition_by_group(m.group_id)
            .expect("known group");
        prop_assert_eq!(p.leader, Some(m.from));
        prop_assert!(
            case.live.contains(&m.from) && case.live.contains(&m.to),
            "{:?}",
            m
        );
        prop_assert!(m.from != m.to && p.replicas.contains(&m.to), "{:?}", m);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With budget to spare, the plan reaches the best maximum the replica sets allow; so
    /// at most the share plus one whenever that is possible at all.
    #[test]
    fn plan_reaches_the_optimum(case in case(false)) {
        let moves = plan_leader_moves(&case.state, &case.live, usize::MAX);
        check_moves(&case, &moves, usize::MAX)?;
        let loads = loads_after(&case, &moves);
        let led: usize = loads.values().sum();
        let share = led.div_ceil(loads.len());
        let max = loads.values().copied().max().unwrap_or(0);
        let best = optimum(&case);
        prop_assert_eq!(max, best.max(share), "loads after {:?}", loads);
        if best <= share + 1 {
            prop_assert!(max <= share + 1);
        }
        prop_assert_eq!(&moves, &plan_leader_moves(&case.state, &case.live, usize::MAX));
    }

    /// When every node holds every partition, leadership balances to the share exactly.
    #[test]
    fn plan_reaches_the_share_when_replicas_allow(case in case(true)) {
        let moves = plan_leader_moves(&case.state, &case.live, usize::MAX);
        check_moves(&case, &moves, usize::MAX)?;
        let loads = loads_after(&case, &moves);
        let share = loads.values().sum::<usize>().div_ceil(loads.len());
        prop_assert!(loads.values().all(|l| *l <= share), "share {} loads {:?}", share, loads);
    }

    /// With a small budget the plan stays within it and never makes the busiest node busier.
    #[test]
    fn plan_respects_the_budget(case in case(false), max_moves in 0usize..4) {
        let moves = plan_leader_moves(&case.state, &case.live, max_moves);
        check_moves(&case, &moves, max_moves)?;
        let max = |loads: BTreeMap<NodeId, usize>| loads.values().copied().max().unwrap_or(0);
        prop_assert!(max(loads_after(&case, &moves)) <= max(loads_after(&case, &[])));
    }

    /// Moves apply through ReportLeader and leave a valid state that needs no further moves.
    #[test]
    fn plan_is_stable_once_applied(case in case(false)) {
        let moves = plan_leader_moves(&case.state, &case.live, usize::MAX);
        let mut state = case.state.clone();
        for m in &moves {
            state.apply(&MetaCommand::ReportLeader { group_id: m.group_id, leader: m.to, epoch: 2 });
        }
        prop_assert_eq!(state.validate(), Ok(()));
        prop_assert_eq!(plan_leader_moves(&state, &case.live, usize::MAX), vec![]);
    }
}
