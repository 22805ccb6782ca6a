//! Whether a node's applied metadata is complete enough to answer clients.
//!
//! A node answers "no such topic" (NOT_FOUND, a definite answer a client does not retry)
//! from its applied metadata. After a restart that metadata may be far behind what the
//! metadata group had committed: a node whose metadata log was empty (a rebuilt learner that
//! lost power before the log reached it) or short applies it again only as the leader sends
//! it. Until then the node would deny topics that exist.
//!
//! What must hold: a node answers clients from its metadata only once that metadata holds
//! everything the metadata group had committed before the node started. The node's own
//! registration of this start (`RegisterIncarnation` with its new generation, written
//! through the metadata leader after the start) is a metadata entry appended after all of
//! those; metadata is applied in log order, so once the node's applied metadata shows that
//! registration, it holds everything committed before it. Until then clients get
//! UNAVAILABLE ([`crate::error::ApiError::MetaCatchingUp`]), and retry (elsewhere).
//! A rebuilding node keeps its own refusal ([`crate::error::ApiError::Rebuilding`]).

use fjord_meta::{IncarnationRecord, NodeId};
use fjord_raft::meta_sm::MetaView;

/// What a node does with a client request, as far as its metadata goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataGate {
    /// The metadata holds everything committed before this start: answer.
    Serve,
    /// The node rebuilds (`--rebuild`) and is not a voter of the metadata group yet.
    Rebuilding,
    /// The applied metadata does not show this start's registration yet.
    CatchingUp,
}

/// This start of a node, as it registers itself in the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThisStart {
    pub node: NodeId,
    pub incarnation: u64,
    /// The generation this start registers (0: a directory that never passed a boot check,
    /// which has nothing to wait for).
    pub generation: u64,
}

/// Whether `recorded` (the node's incarnation record in its applied metadata) shows the
/// registration of `start`: the same directory, at this start's generation or a later one.
pub fn registration_applied(start: &ThisStart, recorded: Option<&IncarnationRecord>) -> bool {
    if start.generation == 0 {
        return true;
    }
    recorded.is_some_and(|r| r.incarnation == start.incarnation && r.generation >= start.generation)
}

/// [`registration_applied`] in an applied metadata view.
pub fn caught_up_in(start: &ThisStart, view: &MetaView) -> bool {
    registration_applied(start, view.state.incarnations.get(&start.node))
}

/// The decision: `rebuilding` (the node rebuilds and is not a metadata voter yet),
/// `caught_up` ([`caught_up_in`] has held once since this start).
pub fn decide(rebuilding: bool, caught_up: bool) -> MetadataGate {
    if rebuilding {
        MetadataGate::Rebuilding
    } else if !caught_up {
        MetadataGate::CatchingUp
    } else {
        MetadataGate::Serve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(generation: u64) -> ThisStart {
        ThisStart {
            node: 3,
            incarnation: 0xa6,
            generation,
        }
    }

    fn rec(incarnation: u64, generation: u64) -> IncarnationRecord {
        IncarnationRecord {
            incarnation,
            generation,
        }
    }

    #[test]
    fn an_empty_metadata_is_not_caught_up() {
        // The run's node 3: restarted with an empty metadata log (it knew no topic at all).
        let view = MetaView::default();
        assert!(!caught_up_in(&start(2), &view));
        assert_eq!(decide(false, false), MetadataGate::CatchingUp);
    }

    #[test]
    fn a_previous_start_s_registration_is_not_enough() {
        // The log replayed up to the last start's registration: what was committed between
        // that one and this start (a topic created meanwhile) may still be missing.
        assert!(!registration_applied(&start(6), Some(&rec(0xa6, 5))));
        assert!(registration_applied(&start(6), Some(&rec(0xa6, 6))));
        // A later start's (the generation only grows) covers this one's too.
        assert!(registration_applied(&start(6), Some(&rec(0xa6, 7))));
    }

    #[test]
    fn another_directory_s_record_is_not_this_start_s() {
        assert!(!registration_applied(&start(1), Some(&rec(0xbb, 9))));
        assert!(!registration_applied(&start(1), None));
    }

    #[test]
    fn a_directory_without_a_generation_has_nothing_to_wait_for() {
        assert!(registration_applied(&start(0), None));
    }

    #[test]
    fn rebuilding_wins_then_catching_up_then_serve() {
        assert_eq!(decide(true, true), MetadataGate::Rebuilding);
        assert_eq!(decide(true, false), MetadataGate::Rebuilding);
        assert_eq!(decide(false, false), MetadataGate::CatchingUp);
        assert_eq!(decide(false, true), MetadataGate::Serve);
    }

    #[test]
    fn the_view_s_record_of_this_node_is_the_one_read() {
        let mut view = MetaView::default();
        view.state.incarnations.insert(1, rec(0xa6, 9));
        assert!(
            !caught_up_in(&start(2), &view),
            "node 1's record is not node 3's"
        );
        view.state.incarnations.insert(3, rec(0xa6, 2));
        assert!(caught_up_in(&start(2), &view));
    }
}
