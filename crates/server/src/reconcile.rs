//! What the reconciler does to make this node's partition groups match the applied metadata,
//! as a pure decision: the metadata, the groups running here and the groups this node holds
//! data of go in, the actions come out; [`crate::node`] performs them.
//!
//! The rules:
//! 1. A group the metadata assigns to this node and that does not run here **starts**.
//! 2. A started group is initialized (openraft's `initialize`, which campaigns) by one replica
//!    only: its preferred leader (the first replica, which the assignment spreads evenly over
//!    the nodes) at once, so it becomes the first leader and its first messages bring the
//!    others the membership. Were every replica to initialize, each would campaign, the first
//!    leaders would fall on random replicas, and the controller would then move about half
//!    of them (16 every 3 s, each move a short pause of the partition's writes). The other
//!    replicas initialize only if no leader has reached them after a while (the preferred
//!    leader's node may be down).
//! 3. A group the replicas already hold (the metadata recorded a leader for it) is never
//!    initialized: this replica may have missed it while down, and gets the membership from
//!    the leader.
//! 4. A group this node holds data of is **deleted** once the metadata, having seen its topic
//!    created (its topic id is below `next_topic_id`), no longer assigns it to this node. A
//!    view that lags behind has not seen the creation, so it can never delete a live group's
//!    data.
//!
//! Starts come first, in group order, then deletes.

use std::collections::{BTreeMap, BTreeSet};

use fjord_meta::{GroupId, MetaState, NodeId};

/// How a group just started gets its membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// The replicas hold the group already: the leader brings the membership.
    Held,
    /// This node is the preferred leader: it initializes the group at once.
    Now,
    /// Another replica: unless the group is initialized when it starts, it initializes it
    /// after a few election timeouts, should no leader have reached it.
    Later,
}

/// One step of a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the group's replica on this node, with the group's `replicas`.
    Start {
        group: GroupId,
        replicas: Vec<NodeId>,
        init: Init,
        /// A partition of the consumer groups' topic ([`fjord_groups::GROUPS_TOPIC`]): its
        /// replicas replay its records into groups.
        coordinator: bool,
    },
    /// Stop the group's replica if it runs, and delete its data.
    Delete { group: GroupId },
}

/// A reconcile's actions, and the groups this node holds data of once they are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub seen: BTreeSet<GroupId>,
}

/// The reconcile of node `me` against `state` (see the module doc). `running`: whether a
/// group's replica runs on this node; `seen`: the partition groups this node holds data of
/// (on disk, or started since).
pub fn plan(
    me: NodeId,
    state: &MetaState,
    running: impl Fn(GroupId) -> bool,
    seen: &BTreeSet<GroupId>,
) -> Plan {
    let wanted: BTreeMap<GroupId, Vec<NodeId>> = state.groups_of_node(me).into_iter().collect();
    let mut actions: Vec<Action> = wanted
        .iter()
        .filter(|(group, _)| !running(**group))
        .map(|(group, replicas)| Action::Start {
            group: *group,
            replicas: replicas.clone(),
            init: init_of(me, state, *group, replicas),
            coordinator: state
                .partition_by_group(*group)
                .is_some_and(|(t, _)| t.name == fjord_groups::GROUPS_TOPIC),
        })
        .collect();
    let mut seen: BTreeSet<GroupId> = seen.iter().chain(wanted.keys()).copied().collect();
    let next_topic_id = state.next_topic_id.max(1);
    let gone: Vec<GroupId> = seen
        .iter()
        .copied()
        .filter(|g| !wanted.contains_key(g) && fjord_meta::split_group_id(*g).0 < next_topic_id)
        .collect();
    for group in gone {
        seen.remove(&group);
        actions.push(Action::Delete { group });
    }
    Plan { actions, seen }
}

/// Rules 2 and 3: how this node's new replica of `group` gets its membership.
fn init_of(me: NodeId, state: &MetaState, group: GroupId, replicas: &[NodeId]) -> Init {
    let held = state
        .partition_by_group(group)
        .is_some_and(|(_, p)| p.leader.is_some() || p.leader_epoch > 0);
    if held {
        Init::Held
    } else if replicas.first() == Some(&me) {
        Init::Now
    } else {
        Init::Later
    }
}

#[cfg(test)]
mod tests {
    use fjord_meta::{MetaCommand, MetaResponse, TopicConfigV1, group_id};

    use super::*;

    fn cluster(nodes: u64) -> MetaState {
        let mut state = MetaState::new();
        for id in 1..=nodes {
            let cmd = MetaCommand::RegisterNode {
                id,
                address: format!("node{id}:9092"),
            };
            assert_eq!(state.apply(&cmd), MetaResponse::Ok);
        }
        state
    }

    /// Creates topic `name` with `partitions` partitions on every node of a 3-node cluster.
    fn create(state: &mut MetaState, name: &str, partitions: u32) -> u32 {
        let resp = state.apply(&MetaCommand::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: 3,
            config: TopicConfigV1::default(),
        });
        let MetaResponse::Topic(t) = resp else {
            panic!("{resp:?}")
        };
        t.id
    }

    fn replicas(state: &MetaState, group: GroupId) -> Vec<NodeId> {
        state.partition_by_group(group).unwrap().1.replicas.clone()
    }

    #[test]
    fn a_new_group_is_initialized_by_its_preferred_leader_only() {
        let mut state = cluster(3);
        let topic = create(&mut state, "t", 1);
        let g = group_id(topic, 0);
        let r = replicas(&state, g);
        for me in 1..=3 {
            let p = plan(me, &state, |_| false, &BTreeSet::new());
            let init = if r[0] == me { Init::Now } else { Init::Later };
            assert_eq!(
                p.actions,
                vec![Action::Start {
                    group: g,
                    replicas: r.clone(),
                    init,
                    coordinator: false,
                }],
                "node {me}"
            );
            assert_eq!(p.seen, BTreeSet::from([g]));
        }
    }

    #[test]
    fn a_group_whose_leader_the_metadata_recorded_is_never_initialized() {
        let mut state = cluster(3);
        let topic = create(&mut state, "t", 1);
        let g = group_id(topic, 0);
        let r = replicas(&state, g);
        state.apply(&MetaCommand::ReportLeader {
            group_id: g,
            leader: r[1],
            epoch: 2,
        });
        // Node r[0] restarts, its group not running yet: it starts it, and leaves it alone.
        let p = plan(r[0], &state, |_| false, &BTreeSet::from([g]));
        assert_eq!(
            p.actions,
            vec![Action::Start {
                group: g,
                replicas: r,
                init: Init::Held,
                coordinator: false,
            }]
        );
    }

    #[test]
    fn a_running_group_is_left_alone() {
        let mut state = cluster(3);
        let topic = create(&mut state, "t", 2);
        let (g0, g1) = (group_id(topic, 0), group_id(topic, 1));
        let p = plan(1, &state, |g| g == g0, &BTreeSet::from([g0]));
        assert!(
            matches!(p.actions.as_slice(), [Action::Start { group, .. }] if *group == g1),
            "{:?}",
            p.actions
        );
        assert_eq!(p.seen, BTreeSet::from([g0, g1]));
    }

    #[test]
    fn a_deleted_topics_groups_are_deleted_after_the_starts() {
        let mut state = cluster(3);
        let old = create(&mut state, "old", 1);
        let g_old = group_id(old, 0);
        state.apply(&MetaCommand::DeleteTopic { name: "old".into() });
        let new = create(&mut state, "new", 1);
        let g_new = group_id(new, 0);
        let p = plan(1, &state, |_| false, &BTreeSet::from([g_old]));
        assert!(
            matches!(
                p.actions.as_slice(),
                [Action::Start { group, .. }, Action::Delete { group: gone }]
                    if *group == g_new && *gone == g_old
            ),
            "{:?}",
            p.actions
        );
        assert_eq!(p.seen, BTreeSet::from([g_new]));
    }

    #[test]
    fn a_view_that_has_not_seen_a_topic_created_never_deletes_its_data() {
        // This node holds data of topic 5's group (written while the view lagged, or before
        // a restart); the view has created only topics below 2.
        let mut state = cluster(3);
        create(&mut state, "t", 1);
        let ahead = group_id(5, 0);
        let p = plan(1, &state, |_| true, &BTreeSet::from([ahead]));
        assert_eq!(p.actions, vec![]);
        assert!(p.seen.contains(&ahead), "kept for a later view");
        // An empty metadata (nothing applied yet) deletes nothing either.
        let p = plan(
            1,
            &MetaState::new(),
            |_| false,
            &BTreeSet::from([group_id(1, 0)]),
        );
        assert_eq!(p.actions, vec![]);
    }
}
