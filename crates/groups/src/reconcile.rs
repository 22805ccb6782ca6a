//! A member's way from what it owns to its target, without two members ever owning one
//! partition (KIP-848's reconciliation).
//!
//! 1. A partition leaves a member first: it goes to the member's *pending revocation*, and
//!    the member stays at its epoch, told to give it up ([`MemberState::UnrevokedPartitions`]).
//! 2. The member says it gave them up by heartbeating without them among its owned
//!    partitions; only then does it move to the target epoch.
//! 3. A partition of its target that another member still owns (assigned or pending
//!    revocation) is held back ([`MemberState::UnreleasedPartitions`]) and given on a later
//!    heartbeat, once released.
//! 4. Partitions in both its assignment and its target stay, with the epoch they were
//!    assigned at; new ones are assigned at the target epoch.
//!
//! A member that sends no owned partitions (they are unknown) is taken to still own whatever
//! it must revoke.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Member, MemberState, TopicId, Tp};

/// The member after one reconciliation step towards `target` at `target_epoch`. `owners`
/// says who owns each owned partition of the group; `subscribed` the topics the member
/// subscribes to now (a partition of a topic it left is revoked even if the target still has
/// it); `owned` what the member says it owns.
pub fn reconcile(
    member: &Member,
    target_epoch: u32,
    target: &BTreeSet<Tp>,
    subscribed: &BTreeSet<TopicId>,
    owners: &BTreeMap<Tp, (String, u32)>,
    owned: Option<&BTreeSet<Tp>>,
) -> Member {
    let still_owns = |set: &BTreeMap<Tp, u32>| match owned {
        None => !set.is_empty(),
        Some(owned) => set.keys().any(|tp| owned.contains(tp)),
    };
    match member.state {
        MemberState::Stable if member.epoch == target_epoch => member.clone(),
        MemberState::UnrevokedPartitions if still_owns(&member.pending_revocation) => {
            member.clone()
        }
        _ => next(member, target_epoch, target, subscribed, owners, still_owns),
    }
}

fn next(
    member: &Member,
    target_epoch: u32,
    target: &BTreeSet<Tp>,
    subscribed: &BTreeSet<TopicId>,
    owners: &BTreeMap<Tp, (String, u32)>,
    still_owns: impl Fn(&BTreeMap<Tp, u32>) -> bool,
) -> Member {
    let wanted = |tp: &Tp| target.contains(tp) && subscribed.contains(&tp.topic);
    let keep: BTreeMap<Tp, u32> = member
        .assigned
        .iter()
        .filter(|(tp, _)| wanted(tp))
        .map(|(tp, at)| (*tp, *at))
        .collect();
    let revoke: BTreeMap<Tp, u32> = member
        .assigned
        .iter()
        .filter(|(tp, _)| !wanted(tp))
        .map(|(tp, at)| (*tp, *at))
        .collect();
    let mut unreleased = false;
    let mut add = Vec::new();
    for tp in target
        .iter()
        .filter(|tp| wanted(tp) && !keep.contains_key(tp))
    {
        match owners.get(tp) {
            Some((owner, _)) if *owner != member.id => unreleased = true,
            _ => add.push(*tp),
        }
    }
    let mut m = member.clone();
    if !revoke.is_empty() && still_owns(&revoke) {
        m.state = MemberState::UnrevokedPartitions;
        m.assigned = keep;
        m.pending_revocation = revoke;
        return m;
    }
    m.assigned = keep;
    m.assigned
        .extend(add.into_iter().map(|tp| (tp, target_epoch)));
    m.pending_revocation.clear();
    if m.epoch != target_epoch {
        m.previous_epoch = m.epoch;
        m.epoch = target_epoch;
    }
    m.state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Subscription;

    fn member(id: &str, epoch: u32, assigned: &[u32]) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscription: Subscription::default(),
            rebalance_timeout_ms: 1000,
            epoch,
            previous_epoch: 0,
            state: MemberState::Stable,
            assigned: assigned.iter().map(|p| (Tp::new(1, *p), epoch)).collect(),
            pending_revocation: BTreeMap::new(),
            left_static: false,
        }
    }

    fn tps(ps: &[u32]) -> BTreeSet<Tp> {
        ps.iter().map(|p| Tp::new(1, *p)).collect()
    }

    fn owners(ms: &[&Member]) -> BTreeMap<Tp, (String, u32)> {
        let mut o = BTreeMap::new();
        for m in ms {
            for (tp, at) in m.assigned.iter().chain(&m.pending_revocation) {
                o.insert(*tp, (m.id.clone(), *at));
            }
        }
        o
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let subscribed = BTreeSet::from([1]);
        // a owns 0..4; the new target gives 2, 3 to b.
        let a = member("a", 1, &[0, 1, 2, 3]);
        let b = member("b", 0, &[]);
        let a1 = reconcile(
            &a,
            2,
            &tps(&[0, 1]),
            &subscribed,
            &owners(&[&a, &b]),
            Some(&tps(&[0, 1, 2, 3])),
        );
        assert_eq!(a1.state, MemberState::UnrevokedPartitions);
        assert_eq!(a1.epoch, 1, "a stays at its epoch until it revoked");
        assert_eq!(
            a1.pending_revocation
                .keys()
                .copied()
                .collect::<BTreeSet<_>>(),
            tps(&[2, 3])
        );
        // b heartbeats: 2 and 3 are still a's, so b waits for them.
        let b1 = reconcile(
            &b,
            2,
            &tps(&[2, 3]),
            &subscribed,
            &owners(&[&a1, &b]),
            Some(&tps(&[])),
        );
        assert_eq!(b1.state, MemberState::UnreleasedPartitions);
        assert!(b1.assigned.is_empty());
        assert_eq!(b1.epoch, 2);
        // a still reports 2: nothing changes.
        let a2 = reconcile(
            &a1,
            2,
            &tps(&[0, 1]),
            &subscribed,
            &owners(&[&a1, &b1]),
            Some(&tps(&[0, 1, 2])),
        );
        assert_eq!(a2, a1);
        // a revoked: it moves to epoch 2 and keeps 0, 1 with their old assignment epoch.
        let a3 = reconcile(
            &a2,
            2,
            &tps(&[0, 1]),
            &subscribed,
            &owners(&[&a2, &b1]),
            Some(&tps(&[0, 1])),
        );
        assert_eq!(
            (a3.state, a3.epoch, a3.previous_epoch),
            (MemberState::Stable, 2, 1)
        );
        assert_eq!(
            a3.assigned,
            BTreeMap::from([(Tp::new(1, 0), 1), (Tp::new(1, 1), 1)])
        );
        // Now b gets them, at epoch 2.
        let b2 = reconcile(
            &b1,
            2,
            &tps(&[2, 3]),
            &subscribed,
            &owners(&[&a3, &b1]),
            Some(&tps(&[])),
        );
        assert_eq!(b2.state, MemberState::Stable);
        assert_eq!(
            b2.assigned,
            BTreeMap::from([(Tp::new(1, 2), 2), (Tp::new(1, 3), 2)])
        );
    }

    #[test]
    fn unknown_owned_partitions_count_as_still_owned() {
        let a = member("a", 1, &[0, 1]);
        let a1 = reconcile(
            &a,
            2,
            &tps(&[0]),
            &BTreeSet::from([1]),
            &owners(&[&a]),
            None,
        );
        assert_eq!(a1.state, MemberState::UnrevokedPartitions);
        let a2 = reconcile(
            &a1,
            2,
            &tps(&[0]),
            &BTreeSet::from([1]),
            &owners(&[&a1]),
            None,
        );
        assert_eq!(a2.state, MemberState::UnrevokedPartitions);
    }

    #[test]
    fn an_unsubscribed_topic_is_revoked_even_if_the_target_has_it() {
        let a = member("a", 1, &[0]);
        let a1 = reconcile(
            &a,
            2,
            &tps(&[0]),
            &BTreeSet::new(),
            &owners(&[&a]),
            Some(&tps(&[0])),
        );
        assert_eq!(a1.state, MemberState::UnrevokedPartitions);
    }
}
