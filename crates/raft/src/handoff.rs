//! Which follower a stopping leader hands a group over to: a pure decision.
//!
//! openraft's transfer works only to a replica that holds the leader's whole flushed log when
//! the transfer message reaches it: the target waits for that, and the message times out
//! meanwhile if the target is far behind (a node just restarted and still catching up). The
//! group then stalls until an election timeout, with the old leader still answering, so a
//! rolling restart turns into seconds of unavailability. The target is therefore the voter
//! that lacks the fewest entries, among those whose replication stream is alive.
//!
//! What must hold:
//! - a follower whose node is not alive, and which has not acknowledged within the window,
//!   is never chosen;
//! - among the others, one that acknowledged within the window beats one that did not (a
//!   quiet group has no recent acknowledgements: then any live voter will do);
//! - then the smallest lag wins (an unknown lag counts as the largest), then the most recent
//!   acknowledgement, then the smallest id, so the choice is deterministic.
//!
//! A move that someone else asked for (the controller balancing leaders) passes one gate,
//! [`may_transfer`], on the leader: the target must be a voter of the group's current
//! (non-joint) membership, and hold all but a few of the leader's entries. A learner (a node
//! being rebuilt) cannot win the election a transfer starts: the old leader would have stepped
//! aside for nobody, and the group would stall until an election timeout, which also holds up
//! the learner's own promotion.

use std::time::Duration;

use crate::types::NodeId;

/// What the leader knows of one other voter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    pub node: NodeId,
    /// Age of its last acknowledgement, when it acknowledged within the window.
    pub acked: Option<Duration>,
    /// Log entries it lacks, when the leader tracks its replication.
    pub lag: Option<u64>,
    /// The failure detector hears its node.
    pub alive: bool,
}

/// The follower to hand leadership to, if any (see the module doc for the rule).
pub fn choose(followers: &[Follower]) -> Option<NodeId> {
    followers
        .iter()
        .filter(|f| f.alive || f.acked.is_some())
        .min_by_key(|f| {
            (
                f.acked.is_none(),
                f.lag.unwrap_or(u64::MAX),
                f.acked.unwrap_or(Duration::MAX),
                f.node,
            )
        })
        .map(|f| f.node)
}

/// Why a leader refuses to transfer leadership to a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferRefused {
    #[error("this node does not lead the group")]
    NotLeading,
    #[error("node {0} is not a voter of the group (a learner being rebuilt, or not a replica)")]
    NotAVoter(NodeId),
    #[error(
        "node {node} is {lag} log entries behind (at most {max} to take leadership): not moving until it catches up"
    )]
    Behind { node: NodeId, lag: u64, max: u64 },
}

/// The gate for a requested transfer to `to` (see the module doc): `voters` is the leader's
/// current membership (empty in a joint configuration), `lag` what `to` lacks (`None`: this
/// node does not lead or does not replicate to it).
pub fn may_transfer(
    to: NodeId,
    voters: &[NodeId],
    lag: Option<u64>,
    max_lag: u64,
) -> Result<(), TransferRefused> {
    let lag = lag.ok_or(TransferRefused::NotLeading)?;
    if !voters.contains(&to) {
        return Err(TransferRefused::NotAVoter(to));
    }
    if lag > max_lag {
        return Err(TransferRefused::Behind {
            node: to,
            lag,
            max: max_lag,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(node: NodeId, acked_ms: Option<u64>, lag: Option<u64>, alive: bool) -> Follower {
        Follower {
            node,
            acked: acked_ms.map(Duration::from_millis),
            lag,
            alive,
        }
    }

    #[test]
    fn the_least_lagging_live_follower_wins_over_the_most_recent_ack() {
        // The case a rolling restart met: node 1 just restarted and acknowledges often while
        // it catches up; node 3 has everything.
        let followers = [f(1, Some(2), Some(24), true), f(3, Some(40), Some(0), true)];
        assert_eq!(choose(&followers), Some(3));
    }

    #[test]
    fn ties_go_to_the_freshest_ack_then_the_smallest_id() {
        assert_eq!(
            choose(&[f(2, Some(50), Some(0), true), f(3, Some(10), Some(0), true)]),
            Some(3)
        );
        assert_eq!(
            choose(&[f(3, Some(10), Some(0), true), f(2, Some(10), Some(0), true)]),
            Some(2)
        );
    }

    #[test]
    fn a_stream_alive_beats_a_node_alive_and_dead_nodes_are_never_chosen() {
        assert_eq!(
            choose(&[f(2, None, Some(0), true), f(3, Some(100), Some(5), true)]),
            Some(3)
        );
        assert_eq!(choose(&[f(2, None, Some(0), false)]), None);
        assert_eq!(choose(&[]), None);
        // A quiet group: nobody acknowledged lately; a live voter will do.
        assert_eq!(
            choose(&[f(2, None, None, false), f(3, None, Some(0), true)]),
            Some(3)
        );
    }

    #[test]
    fn an_unknown_lag_counts_as_the_largest() {
        assert_eq!(
            choose(&[f(2, Some(1), None, true), f(3, Some(90), Some(1_000), true)]),
            Some(3)
        );
    }

    #[test]
    fn a_transfer_goes_only_to_a_voter_that_is_nearly_caught_up() {
        assert_eq!(may_transfer(2, &[1, 2, 3], Some(3), 32), Ok(()));
        // The seed that stalled: node 2, a learner being rebuilt, had caught up.
        assert_eq!(
            may_transfer(2, &[1, 3], Some(0), 32),
            Err(TransferRefused::NotAVoter(2))
        );
        // A joint configuration: no transfer until it settles.
        assert_eq!(
            may_transfer(2, &[], Some(0), 32),
            Err(TransferRefused::NotAVoter(2))
        );
        assert_eq!(
            may_transfer(3, &[1, 2, 3], Some(33), 32),
            Err(TransferRefused::Behind {
                node: 3,
                lag: 33,
                max: 32
            })
        );
        assert_eq!(
            may_transfer(3, &[1, 2, 3], None, 32),
            Err(TransferRefused::NotLeading)
        );
    }
}
