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

use fjord_meta::NodeId;

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

#[cfg(test)]
mod tests {
    use super::*;

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
