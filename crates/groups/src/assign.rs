//! The server-side assignors: which member's target holds which partition.
//!
//! Both are pure and deterministic (the same inputs give the same target on any node).
//!
//! **Uniform** (the default, Kafka's `uniform`): every partition of a subscribed topic goes to
//! exactly one member subscribed to its topic, the counts are as even as the subscriptions
//! allow, and as few partitions as possible move from the previous target:
//! 1. each member keeps the partitions of its previous target it still subscribes to, up to
//!    its fair share (members' shares differ by at most one);
//! 2. the rest go one at a time, the partitions with the fewest eligible members first, to
//!    the eligible member that holds the fewest;
//! 3. while some member holds two or more partitions more than an eligible member of one of
//!    its partitions, that partition moves (each move lowers the sum of squared counts, so
//!    this ends).
//!
//! With identical subscriptions the result is balanced (counts differ by at most one) and a
//! member that joins or leaves moves only the partitions balance needs.
//!
//! **Range** (Kafka's `range`): per topic, the subscribed members in order of instance id (or
//! member id) take consecutive ranges of partitions, the first ones one more when the count
//! does not divide. Topics with the same partition count are co-assigned: partition *p* of
//! each goes to the same member.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Assignor, TopicId, Tp};

/// A member as the assignors see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignMember {
    /// Orders members for the range assignor (instance id if static, else member id).
    pub sort_key: String,
    pub topics: BTreeSet<TopicId>,
}

/// The target assignment: partitions of each member.
pub type Target = BTreeMap<String, BTreeSet<Tp>>;

/// Computes the target assignment with `assignor`. `partitions` holds the partition count of
/// every subscribed topic; `previous` is the last target (only the uniform assignor uses it).
pub fn assign(
    assignor: Assignor,
    members: &BTreeMap<String, AssignMember>,
    partitions: &BTreeMap<TopicId, u32>,
    previous: &Target,
) -> Target {
    match assignor {
        Assignor::Uniform => uniform(members, partitions, previous),
        Assignor::Range => range(members, partitions),
    }
}

fn eligible(
    members: &BTreeMap<String, AssignMember>,
    topic: TopicId,
) -> impl Iterator<Item = &String> {
    members
        .iter()
        .filter(move |(_, m)| m.topics.contains(&topic))
        .map(|(id, _)| id)
}

fn uniform(
    members: &BTreeMap<String, AssignMember>,
    partitions: &BTreeMap<TopicId, u32>,
    previous: &Target,
) -> Target {
    let mut out: Target = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    let all: Vec<Tp> = partitions
        .iter()
        .filter(|(t, _)| eligible(members, **t).next().is_some())
        .flat_map(|(t, n)| (0..*n).map(|p| Tp::new(*t, p)))
        .collect();
    // A member's fair share: the partitions it could hold, spread over the members that could
    // hold them, rounded up (exact when subscriptions are identical).
    let share = |m: &AssignMember| -> usize {
        let could = all.iter().filter(|tp| m.topics.contains(&tp.topic)).count();
        let mut rivals = 1usize;
        for other in members.values() {
            if !std::ptr::eq(other, m) && other.topics.iter().any(|t| m.topics.contains(t)) {
                rivals += 1;
            }
        }
        could.div_ceil(rivals)
    };
    // 1. Keep what stays valid, up to the share.
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    for (id, m) in members {
        let cap = share(m);
        if let Some(prev) = previous.get(id) {
            for tp in prev {
                let exists = partitions.get(&tp.topic).is_some_and(|n| tp.partition < *n);
                if exists
                    && m.topics.contains(&tp.topic)
                    && out[id].len() < cap
                    && taken.insert(*tp)
                {
                    out.get_mut(id).expect("member present").insert(*tp);
                }
            }
        }
    }
    // 2. The rest, most constrained first, to the least loaded eligible member.
    let mut rest: Vec<(usize, Tp)> = all
        .iter()
        .filter(|tp| !taken.contains(tp))
        .map(|tp| (eligible(members, tp.topic).count(), *tp))
        .collect();
    rest.sort();
    for (_, tp) in rest {
        let to = eligible(members, tp.topic)
            .min_by_key(|m| (out[*m].len(), (*m).clone()))
            .expect("the topic has an eligible member")
            .clone();
        out.get_mut(&to).expect("member present").insert(tp);
    }
    // 3. Even out what subscriptions allow.
    balance(members, &mut out);
    out
}

/// Moves partitions from a member to an eligible one holding two or more fewer, until none
/// can move. Deterministic: members and partitions are looked at in order.
fn balance(members: &BTreeMap<String, AssignMember>, out: &mut Target) {
    loop {
        let mut moved = false;
        let mut by_load: Vec<String> = out.keys().cloned().collect();
        by_load.sort_by_key(|m| (std::cmp::Reverse(out[m].len()), m.clone()));
        'members: for from in by_load {
            let load = out[&from].len();
            for tp in out[&from].iter().rev().copied().collect::<Vec<_>>() {
                let to = eligible(members, tp.topic)
                    .filter(|m| out[*m].len() + 1 < load)
                    .min_by_key(|m| (out[*m].len(), (*m).clone()))
                    .cloned();
                if let Some(to) = to {
                    out.get_mut(&from).expect("member present").remove(&tp);
                    out.get_mut(&to).expect("member present").insert(tp);
                    moved = true;
                    break 'members;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn range(members: &BTreeMap<String, AssignMember>, partitions: &BTreeMap<TopicId, u32>) -> Target {
    let mut out: Target = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (topic, count) in partitions {
        let mut subs: Vec<(&String, &AssignMember)> = members
            .iter()
            .filter(|(_, m)| m.topics.contains(topic))
            .collect();
        if subs.is_empty() {
            continue;
        }
        subs.sort_by(|a, b| (&a.1.sort_key, a.0).cmp(&(&b.1.sort_key, b.0)));
        let n = subs.len() as u32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, (id, _)) in subs.iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            let set = out.get_mut(*id).expect("member present");
            for p in next..next + take {
                set.insert(Tp::new(*topic, p));
            }
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(n: usize, topics: &[TopicId]) -> BTreeMap<String, AssignMember> {
        (0..n)
            .map(|i| {
                (
                    format!("m{i}"),
                    AssignMember {
                        sort_key: format!("m{i}"),
                        topics: topics.iter().copied().collect(),
                    },
                )
            })
            .collect()
    }

    fn counts(t: &Target) -> Vec<usize> {
        t.values().map(|s| s.len()).collect()
    }

    fn check_exclusive_and_complete(
        members: &BTreeMap<String, AssignMember>,
        partitions: &BTreeMap<TopicId, u32>,
        t: &Target,
    ) {
        let mut seen = BTreeSet::new();
        for (m, set) in t {
            for tp in set {
                assert!(seen.insert(*tp), "{tp:?} given twice");
                assert!(
                    members[m].topics.contains(&tp.topic),
                    "{m} not subscribed to {tp:?}"
                );
            }
        }
        for (topic, n) in partitions {
            if members.values().any(|m| m.topics.contains(topic)) {
                for p in 0..*n {
                    assert!(seen.contains(&Tp::new(*topic, p)), "{topic}/{p} unassigned");
                }
            }
        }
    }

    #[test]
    fn three_members_six_partitions_get_two_each() {
        let ms = members(3, &[1]);
        let parts = BTreeMap::from([(1, 6)]);
        for a in [Assignor::Uniform, Assignor::Range] {
            let t = assign(a, &ms, &parts, &Target::new());
            assert_eq!(counts(&t), vec![2, 2, 2], "{a:?}");
            check_exclusive_and_complete(&ms, &parts, &t);
        }
    }

    #[test]
    fn a_tenth_member_takes_only_what_balance_needs() {
        let parts = BTreeMap::from([(1, 100)]);
        let nine = members(9, &[1]);
        let before = assign(Assignor::Uniform, &nine, &parts, &Target::new());
        let ten = members(10, &[1]);
        let after = assign(Assignor::Uniform, &ten, &parts, &before);
        assert_eq!(counts(&after), vec![10; 10]);
        let moved: usize = nine
            .keys()
            .map(|m| before[m].difference(&after[m]).count())
            .sum();
        assert_eq!(moved, 10, "only the new member's share moves");
    }

    #[test]
    fn range_co_assigns_topics_of_equal_size() {
        let ms = members(2, &[1, 2]);
        let parts = BTreeMap::from([(1, 4), (2, 4)]);
        let t = assign(Assignor::Range, &ms, &parts, &Target::new());
        for p in 0..4 {
            let owner1 = t
                .iter()
                .find(|(_, s)| s.contains(&Tp::new(1, p)))
                .unwrap()
                .0;
            let owner2 = t
                .iter()
                .find(|(_, s)| s.contains(&Tp::new(2, p)))
                .unwrap()
                .0;
            assert_eq!(owner1, owner2);
        }
    }

    proptest! {
        #[test]
        fn uniform_is_exclusive_complete_and_balanced_for_equal_subscriptions(
            n in 1usize..12, p in 0u32..60, joins in 0usize..3, seed_prev in any::<bool>()
        ) {
            let ms = members(n, &[7]);
            let parts = BTreeMap::from([(7, p)]);
            let prev = if seed_prev {
                assign(Assignor::Uniform, &members(n + joins, &[7]), &parts, &Target::new())
            } else { Target::new() };
            let t = assign(Assignor::Uniform, &ms, &parts, &prev);
            check_exclusive_and_complete(&ms, &parts, &t);
            let c = counts(&t);
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{c:?}");
            // Sticky: a member keeps every previous partition up to its share.
            let share = (p as usize).div_ceil(n);
            for (m, set) in &t {
                if let Some(before) = prev.get(m) {
                    let kept = before.intersection(set).count();
                    prop_assert!(kept >= before.len().min(share).min(p as usize / n), "{m} kept {kept} of {before:?}");
                }
            }
        }

        #[test]
        fn uniform_is_exclusive_and_complete_for_mixed_subscriptions(
            subs in proptest::collection::vec(proptest::collection::btree_set(0u32..4, 0..4), 1..8),
            sizes in proptest::collection::vec(0u32..9, 4),
        ) {
            let ms: BTreeMap<String, AssignMember> = subs.iter().enumerate()
                .map(|(i, t)| (format!("m{i}"), AssignMember { sort_key: format!("m{i}"), topics: t.clone() }))
                .collect();
            let parts: BTreeMap<TopicId, u32> = sizes.iter().enumerate().map(|(i, n)| (i as u32, *n)).collect();
            for a in [Assignor::Uniform, Assignor::Range] {
                let t = assign(a, &ms, &parts, &Target::new());
                check_exclusive_and_complete(&ms, &parts, &t);
                // Deterministic.
                prop_assert_eq!(&t, &assign(a, &ms, &parts, &Target::new()));
            }
        }
    }
}
