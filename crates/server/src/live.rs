//! The live set a CreateTopic proposes (the `live` of [`fjord_meta::MetaCommand::CreateTopicWithConfig`]): the
//! nodes this node's failure detector sees alive, as a pure decision; [`crate::service`]
//! gathers the inputs, waits while the decision says so, and proposes.
//!
//! The rules:
//! 1. The candidates are the registered nodes this node knows of *and* its configured peers
//!    (and itself): a node whose metadata has not applied every registration yet (it just
//!    started) must not send a live set without the nodes it has not seen registered, which
//!    the metadata leader would read as "not alive". The leader counts only registered ones.
//! 2. The live set is the candidates the detector sees alive, in id order.
//! 3. While a candidate is not heard from (this node started a moment ago), the proposal
//!    waits, until a deadline: a node that is down costs a topic creation that wait, a fresh
//!    cluster does not place every replica on the first nodes up.
//!
//! And the replication factor of a topic that names none ([`default_replication`]): 3, or as
//! many nodes as the cluster has, where the cluster counts its configured peers as well as its
//! registered nodes. While a forming cluster has registered fewer nodes than that, the topic
//! waits ([`DefaultReplication::Forming`]) rather than being made with fewer replicas, which
//! it would keep for good (Kafka's `default.replication.factor` and offsets topic likewise
//! refuse until enough brokers are up).

use fjord_meta::{DEFAULT_REPLICATION_FACTOR, NodeId};

/// What a CreateTopic does with its live set now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveSet {
    /// Propose the topic with these nodes as the live ones.
    Propose(Vec<NodeId>),
    /// A candidate is not heard from yet and the deadline has not passed: look again later.
    Wait,
}

/// The live set node `me` proposes (see the module doc): `registered`, the nodes its
/// metadata has registered; `configured`, its configured peers; `alive`, its detector's word;
/// `deadline_passed`, whether it waited long enough for the silent ones.
pub fn live_set(
    me: NodeId,
    registered: impl IntoIterator<Item = NodeId>,
    configured: impl IntoIterator<Item = NodeId>,
    alive: impl Fn(NodeId) -> bool,
    deadline_passed: bool,
) -> LiveSet {
    let mut candidates: Vec<NodeId> = registered.into_iter().chain(configured).collect();
    candidates.push(me);
    candidates.sort_unstable();
    candidates.dedup();
    let live: Vec<NodeId> = candidates.iter().copied().filter(|n| alive(*n)).collect();
    if live.len() == candidates.len() || deadline_passed {
        LiveSet::Propose(live)
    } else {
        LiveSet::Wait
    }
}

/// The replication factor a topic that names none gets ([`default_replication`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultReplication {
    /// Create it with this factor: every node it needs has registered.
    Use(u32),
    /// The cluster is still forming: fewer nodes have registered than the factor needs.
    Forming {
        /// The default factor: min(3, the nodes the cluster counts).
        replication_factor: u32,
        /// The nodes registered in the metadata.
        registered: u32,
        /// The nodes the cluster counts: registered, configured peers and this node.
        expected: u32,
    },
}

/// The default replication factor on node `me` (see the module doc): `registered`, the nodes
/// its metadata has registered; `configured`, its configured peers.
pub fn default_replication(
    me: NodeId,
    registered: impl IntoIterator<Item = NodeId>,
    configured: impl IntoIterator<Item = NodeId>,
) -> DefaultReplication {
    let registered: Vec<NodeId> = registered.into_iter().collect();
    let mut expected: Vec<NodeId> = registered.iter().copied().chain(configured).collect();
    expected.push(me);
    expected.sort_unstable();
    expected.dedup();
    let count = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let (registered, expected) = (count(registered.len()), count(expected.len()));
    let replication_factor = DEFAULT_REPLICATION_FACTOR.min(expected);
    if replication_factor <= registered {
        DefaultReplication::Use(replication_factor)
    } else {
        DefaultReplication::Forming {
            replication_factor,
            registered,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forming_cluster_waits_for_the_nodes_its_default_factor_needs() {
        // Node 1 of three configured peers; only it has registered so far.
        assert_eq!(
            default_replication(1, [1], [1, 2, 3]),
            DefaultReplication::Forming {
                replication_factor: 3,
                registered: 1,
                expected: 3
            }
        );
        assert_eq!(
            default_replication(1, [1, 2], [1, 2, 3]),
            DefaultReplication::Forming {
                replication_factor: 3,
                registered: 2,
                expected: 3
            }
        );
        assert_eq!(
            default_replication(1, [1, 2, 3], [1, 2, 3]),
            DefaultReplication::Use(3)
        );
    }

    #[test]
    fn the_default_factor_is_three_or_the_cluster_s_size() {
        assert_eq!(default_replication(1, [1], [1]), DefaultReplication::Use(1));
        assert_eq!(
            default_replication(2, [1, 2], [1, 2]),
            DefaultReplication::Use(2)
        );
        // Five nodes, one of them (joined later) configured with the founders only.
        assert_eq!(
            default_replication(5, [1, 2, 3, 4, 5], [1, 2, 3, 5]),
            DefaultReplication::Use(3)
        );
        // A node registered but not configured here (it joined later) counts as well.
        assert_eq!(
            default_replication(1, [1, 2, 4], [1, 2]),
            DefaultReplication::Use(3)
        );
        // Not registered yet, no peers configured: itself alone, and it must register first.
        assert_eq!(
            default_replication(4, [], []),
            DefaultReplication::Forming {
                replication_factor: 1,
                registered: 0,
                expected: 1
            }
        );
    }

    #[test]
    fn every_candidate_heard_from_is_proposed_at_once() {
        assert_eq!(
            live_set(2, [3, 1, 2], [1, 3], |_| true, false),
            LiveSet::Propose(vec![1, 2, 3])
        );
    }

    #[test]
    fn a_silent_candidate_is_waited_for_until_the_deadline_then_left_out() {
        let alive = |n| n != 3;
        assert_eq!(live_set(1, [1, 2, 3], [2, 3], alive, false), LiveSet::Wait);
        assert_eq!(
            live_set(1, [1, 2, 3], [2, 3], alive, true),
            LiveSet::Propose(vec![1, 2])
        );
    }

    #[test]
    fn a_configured_peer_not_yet_seen_registered_is_a_candidate() {
        // Node 1 just started: its metadata has applied only its own registration. Proposing
        // [1] at once would put every replica on node 1.
        assert_eq!(live_set(1, [1], [2, 3], |n| n == 1, false), LiveSet::Wait);
        assert_eq!(
            live_set(1, [1], [2, 3], |_| true, false),
            LiveSet::Propose(vec![1, 2, 3])
        );
    }

    #[test]
    fn this_node_is_always_a_candidate() {
        // Not registered yet, no peers configured (a single node joining): itself.
        assert_eq!(
            live_set(4, [], [], |_| true, false),
            LiveSet::Propose(vec![4])
        );
    }
}
