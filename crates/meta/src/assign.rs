//! Placement of new partitions' replicas: a pure decision over node ids and current loads.
//!
//! What must hold: each partition's replicas are distinct; from zero load every node's replica
//! count, and every node's preferred-leader count, stays within 1 of every other's after any
//! number of partitions; with existing load, the least-loaded nodes are filled first. Ties
//! break on node order, never on anything outside the inputs.
//!
//! Why it balances from zero load: with equal loads the greedy choice below lays replicas out
//! as consecutive slots of the cycle `n0, n1, ..., n(n-1), n0, ...`, `rf` slots per partition,
//! so replica counts never differ by more than one. Within a cycle of `n` partitions the
//! windows come in `d = gcd(n, rf)` rounds of the same `n / d` windows, and picking the least
//! leading node, ties to the earliest in the window, makes round `k` pick offset `k` of each
//! window: every node leads exactly once per cycle, so preferred-leader counts never differ by
//! more than one either, and each cycle starts again from equal counts.

use std::collections::BTreeMap;

use crate::ids::NodeId;

/// Replicas for `partitions` new partitions with `rf` replicas each, spread evenly over
/// `nodes` taking into account `replica_load` (replicas each node already holds) and
/// `preferred_leader_load` (partitions each node is already first replica of). Missing
/// entries count as 0.
///
/// Each list has distinct nodes, the preferred leader first. Duplicate ids in `nodes` count
/// once, and `rf` is capped at the number of distinct nodes: the caller
/// ([`crate::MetaState::apply`]) has already rejected a replication factor above it.
///
/// Greedy, one partition at a time, over the nodes in a cycle ordered by (replica load,
/// preferred-leader load, id) at the start, with a cursor that advances `rf` places per
/// partition: the replicas are the `rf` nodes with the fewest replicas, ties to the nearest
/// after the cursor; the preferred leader is the one of them leading fewest, ties again to the
/// nearest after the cursor; the others follow in cycle order.
pub fn assign_replicas(
    nodes: &[NodeId],
    replica_load: &BTreeMap<NodeId, usize>,
    preferred_leader_load: &BTreeMap<NodeId, usize>,
    partitions: u32,
    rf: u32,
) -> Vec<Vec<NodeId>> {
    let mut cycle = nodes.to_vec();
    cycle.sort_unstable();
    cycle.dedup();
    let rf = (rf as usize).min(cycle.len());
    if rf == 0 {
        return vec![Vec::new(); partitions as usize];
    }
    let load = |loads: &BTreeMap<NodeId, usize>, n: &NodeId| loads.get(n).copied().unwrap_or(0);
    cycle.sort_by_key(|n| (load(replica_load, n), load(preferred_leader_load, n), *n));
    let mut replicas: Vec<usize> = cycle.iter().map(|n| load(replica_load, n)).collect();
    let mut leaders: Vec<usize> = cycle
        .iter()
        .map(|n| load(preferred_leader_load, n))
        .collect();

    let len = cycle.len();
    let mut cursor = 0;
    let mut placement = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let after_cursor = |i: usize| (i + len - cursor) % len;
        let mut ranked: Vec<usize> = (0..len).collect();
        ranked.sort_by_key(|&i| (replicas[i], after_cursor(i)));
        let mut chosen = ranked[..rf].to_vec();
        chosen.sort_by_key(|&i| after_cursor(i));
        let first = (0..rf).min_by_key(|&k| leaders[chosen[k]]).expect("rf > 0");
        let leader = chosen.remove(first);
        chosen.insert(0, leader);
        leaders[leader] += 1;
        for &i in &chosen {
            replicas[i] += 1;
        }
        placement.push(chosen.into_iter().map(|i| cycle[i]).collect());
        cursor = (cursor + rf) % len;
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(counts: impl Iterator<Item = usize>) -> usize {
        let counts: Vec<usize> = counts.collect();
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    /// Every node count, replication factor and partition count in a small range, from zero
    /// load: the claims of the module doc hold after every partition, not just at the end.
    #[test]
    fn balanced_from_zero_load_exhaustive() {
        let empty = BTreeMap::new();
        for n in 1..=16u64 {
            let nodes: Vec<NodeId> = (1..=n).collect();
            for rf in 1..=n as u32 {
                let placement = assign_replicas(&nodes, &empty, &empty, 80, rf);
                let mut replicas: BTreeMap<NodeId, usize> = nodes.iter().map(|n| (*n, 0)).collect();
                let mut leaders = replicas.clone();
                for (p, list) in placement.iter().enumerate() {
                    let mut distinct = list.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), rf as usize, "n={n} rf={rf} p={p}: {list:?}");
                    for r in list {
                        *replicas.get_mut(r).unwrap() += 1;
                    }
                    *leaders.get_mut(&list[0]).unwrap() += 1;
                    assert!(
                        spread(replicas.values().copied()) <= 1,
                        "n={n} rf={rf} p={p}: {replicas:?}"
                    );
                    assert!(
                        spread(leaders.values().copied()) <= 1,
                        "n={n} rf={rf} p={p}: {leaders:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn existing_load_is_filled_first() {
        let nodes = [1, 2, 3];
        let replicas = BTreeMap::from([(1, 4), (2, 4), (3, 0)]);
        let leaders = BTreeMap::from([(1, 2), (2, 2), (3, 0)]);
        let placement = assign_replicas(&nodes, &replicas, &leaders, 4, 1);
        assert_eq!(placement, vec![vec![3], vec![3], vec![3], vec![3]]);
    }

    #[test]
    fn rf_is_capped_and_duplicates_ignored() {
        let empty = BTreeMap::new();
        let placement = assign_replicas(&[2, 1, 2], &empty, &empty, 2, 5);
        assert_eq!(placement, vec![vec![1, 2], vec![2, 1]]);
        assert_eq!(
            assign_replicas(&[], &empty, &empty, 2, 1),
            vec![Vec::<NodeId>::new(); 2]
        );
    }
}
