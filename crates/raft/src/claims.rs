//! The claims of quiet groups that node heartbeats carry, as pure decisions: how a follower's
//! node answers a leader's node (a whole list of claims, or the bare version of a list it
//! holds), and what the leader's node does with the answer. [`crate::liveness`] gathers their
//! inputs and performs what they return; [`crate::quiesce`] holds the per-claim rules
//! ([`follower_accepts`]) and the switch of each group.
//!
//! The rules (node L leads the claimed groups, node F answers):
//! 1. **A whole list** from L: each claim's group on F
//!    - that F does not host, is refused;
//!    - already quiet under this very claim, stays quiet;
//!    - whose replica accepts the claim ([`follower_accepts`]: same leader, term and last
//!      index, all of it committed), goes quiet under it;
//!    - else, is refused: L's replica stays awake to sort it out.
//!
//!    A group quiet under L's previous list and left out of this one wakes: L's replica
//!    woke, stepped down or restarted. F remembers the list's version and the groups quiet
//!    under it, with the epoch of each ([`Remembered`]).
//! 2. **A bare version** from L holds, and F's answer echoes it, only if it is the version F
//!    remembers and none of the groups quiet under that list changed mode since (their
//!    epochs); else F answers version 0 and L sends the whole list next.
//! 3. **F's answer to a whole list**, on L: a refused claim wakes its group, if the group
//!    still offers that very claim (a newer one may be on its way); every other claim counts
//!    as accepted by F.

use std::collections::HashSet;

use crate::NodeId;
use crate::quiesce::{Claim, GroupView, follower_accepts};

/// What a follower's node reads of its replica of a claimed group. Implemented over a live
/// group by the effect layer, and over plain data by the tests.
pub trait Follower {
    /// The claim it is quiet under, if it is.
    fn followed_claim(&self) -> Option<Claim>;
    /// Its whole state (the costly read: only for a claim it does not follow yet).
    fn view(&self) -> GroupView;
}

/// What a follower's node does with one claim of a whole list (rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// The replica is quiet under this very claim already: it stays so.
    Holds,
    /// The replica accepts the claim: it goes quiet under it.
    Follow,
    /// Not hosted here, or the replica's state does not match the claim.
    Refuse,
}

/// Rule 1, for every claim of a whole list: `list` pairs each claim with this node's
/// replica of its group (`None`: not hosted). One verdict per claim, in order.
pub fn serve_claims<F: Follower>(list: &[(Claim, Option<F>)]) -> Vec<ClaimVerdict> {
    list.iter()
        .map(|(claim, replica)| match replica {
            None => ClaimVerdict::Refuse,
            Some(r) if r.followed_claim() == Some(*claim) => ClaimVerdict::Holds,
            Some(r) if follower_accepts(&r.view(), claim) => ClaimVerdict::Follow,
            Some(_) => ClaimVerdict::Refuse,
        })
        .collect()
}

/// Rule 1, the groups left out: of `before` (the groups quiet under `from`'s previous list),
/// those `claims` leaves out and that still follow `from` (`followed` reads the claim each
/// follows): they wake.
pub fn left_out<'a, T>(
    from: NodeId,
    claims: &[Claim],
    before: &'a [Quiet<T>],
    followed: impl Fn(&T) -> Option<Claim>,
) -> Vec<&'a T> {
    let listed: HashSet<u64> = claims.iter().map(|c| c.group).collect();
    before
        .iter()
        .filter(|q| !listed.contains(&q.group))
        .filter(|q| followed(&q.switch).is_some_and(|c| c.leader == from))
        .map(|q| &q.switch)
        .collect()
}

/// A group quiet under a leader's list: its id, its switch (`T`), and the switch's epoch (a
/// counter of its mode changes) then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet<T> {
    pub group: u64,
    pub switch: T,
    pub epoch: u64,
}

/// A switch's epoch: unchanged, its mode has not changed.
pub trait Epoch {
    fn epoch(&self) -> u64;
}

/// What a follower's node remembers of a leader's last whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered<T> {
    pub version: u64,
    /// The groups that went quiet under it (or were already).
    pub groups: Vec<Quiet<T>>,
    /// The node's transition count when `groups` were last seen at their epochs.
    pub checked_at: u64,
}

impl<T: Epoch> Remembered<T> {
    /// Rule 2: whether the bare `version` still holds, the node's transition count being
    /// `transitions` (unchanged since the last check: no replica changed mode, and the epochs
    /// need not be read again). Marks the list checked at `transitions` when it holds.
    pub fn holds(&mut self, version: u64, transitions: u64) -> bool {
        let holds = self.version == version
            && (self.checked_at == transitions
                || self.groups.iter().all(|q| q.switch.epoch() == q.epoch));
        if holds {
            self.checked_at = transitions;
        }
        holds
    }
}

/// What the leader's node does with one claim of a whole list, once the follower's node
/// answered it (rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyAction {
    /// The follower accepted it.
    Accepted,
    /// Refused: the group wakes.
    Wake,
    /// Refused, but the group offers another claim now: left alone.
    Nothing,
}

/// Rule 3, for every claim of the list `sent` (each with its group's switch, `T`): `refused`
/// lists the groups the follower's node refused, `offered` reads the claim a switch offers
/// now (only for refused claims). One action per claim, in order.
pub fn apply_reply<T>(
    sent: &[(Claim, T)],
    refused: &[u64],
    offered: impl Fn(&T) -> Option<Claim>,
) -> Vec<ReplyAction> {
    let refused: HashSet<u64> = refused.iter().copied().collect();
    sent.iter()
        .map(|(claim, switch)| {
            if !refused.contains(&claim.group) {
                ReplyAction::Accepted
            } else if offered(switch) == Some(*claim) {
                ReplyAction::Wake
            } else {
                ReplyAction::Nothing
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const CLAIM: Claim = Claim {
        group: 9,
        leader: 1,
        term: 3,
        index: 7,
    };

    /// Node 2's replica as plain data; counts the reads of its view.
    struct Fake {
        followed: Option<Claim>,
        view: GroupView,
        view_reads: Cell<u32>,
    }

    impl Follower for &Fake {
        fn followed_claim(&self) -> Option<Claim> {
            self.followed
        }
        fn view(&self) -> GroupView {
            self.view_reads.set(self.view_reads.get() + 1);
            self.view.clone()
        }
    }

    /// Following node 1 in term 3, its log at 7, all committed.
    fn in_sync() -> Fake {
        Fake {
            followed: None,
            view: GroupView {
                me: 2,
                following: true,
                leader: Some(1),
                term: 3,
                last_index: Some(7),
                committed: Some(7),
                applied: Some(7),
                voters: vec![1, 2, 3],
                ..GroupView::default()
            },
            view_reads: Cell::new(0),
        }
    }

    fn claim(group: u64) -> Claim {
        Claim { group, ..CLAIM }
    }

    #[test]
    fn each_claim_of_a_list_is_held_followed_or_refused() {
        let quiet = Fake {
            followed: Some(claim(1)),
            ..in_sync()
        };
        let fresh = in_sync();
        let behind = Fake {
            view: GroupView {
                last_index: Some(8),
                ..in_sync().view
            },
            ..in_sync()
        };
        let list = [
            (claim(1), Some(&quiet)),
            (claim(2), Some(&fresh)),
            (claim(3), Some(&behind)),
            (claim(4), None),
        ];
        assert_eq!(
            serve_claims(&list),
            [
                ClaimVerdict::Holds,
                ClaimVerdict::Follow,
                ClaimVerdict::Refuse,
                ClaimVerdict::Refuse
            ]
        );
        // A replica quiet under the claim already is not read again.
        assert_eq!(quiet.view_reads.get(), 0);
        assert_eq!(fresh.view_reads.get(), 1);
    }

    #[test]
    fn a_replica_quiet_under_an_older_claim_of_the_same_leader_follows_the_new_one() {
        let older = Fake {
            followed: Some(Claim { index: 6, ..CLAIM }),
            ..in_sync()
        };
        assert_eq!(
            serve_claims(&[(CLAIM, Some(&older))]),
            [ClaimVerdict::Follow]
        );
        let moved_on = Fake {
            followed: Some(Claim { index: 6, ..CLAIM }),
            view: GroupView {
                term: 4,
                ..in_sync().view
            },
            ..in_sync()
        };
        assert_eq!(
            serve_claims(&[(CLAIM, Some(&moved_on))]),
            [ClaimVerdict::Refuse]
        );
    }

    #[test]
    fn groups_left_out_of_a_list_wake_if_they_still_follow_its_leader() {
        let quiet = |group, switch| Quiet {
            group,
            switch,
            epoch: 0,
        };
        // Switches by name, each with the claim it follows now.
        let before = [
            quiet(1, "listed again"),
            quiet(2, "left out"),
            quiet(3, "left out, now follows node 3"),
            quiet(4, "left out, awake already"),
        ];
        let followed = |s: &&str| match *s {
            "listed again" | "left out" => Some(CLAIM),
            "left out, now follows node 3" => Some(Claim { leader: 3, ..CLAIM }),
            _ => None,
        };
        assert_eq!(
            left_out(1, &[claim(1), claim(5)], &before, followed),
            [&"left out"]
        );
        assert!(left_out(1, &[claim(1), claim(2)], &before, followed).is_empty());
    }

    /// A switch whose epoch the test moves.
    struct Switch(Cell<u64>);

    impl Epoch for &Switch {
        fn epoch(&self) -> u64 {
            self.0.get()
        }
    }

    #[test]
    fn a_bare_version_holds_while_no_group_quiet_under_it_changed_mode() {
        let a = Switch(Cell::new(5));
        let mut r = Remembered {
            version: 42,
            groups: vec![Quiet {
                group: 9,
                switch: &a,
                epoch: 5,
            }],
            checked_at: 100,
        };
        assert!(!r.holds(41, 100), "another version");
        assert!(r.holds(42, 100));
        assert!(r.holds(42, 101), "the node changed, this group did not");
        assert_eq!(r.checked_at, 101);
        a.0.set(6);
        // Unchanged since the last check: the epochs are not read.
        assert!(r.holds(42, 101));
        assert!(!r.holds(42, 102), "the group changed mode");
        assert_eq!(r.checked_at, 101);
    }

    #[test]
    fn a_refused_claim_wakes_its_group_only_if_it_still_offers_it() {
        let sent = [
            (claim(1), Some(claim(1))),
            (claim(2), Some(claim(2))),
            (
                claim(3),
                Some(Claim {
                    index: 8,
                    ..claim(3)
                }),
            ),
            (claim(4), None),
        ];
        assert_eq!(
            apply_reply(&sent, &[2, 3, 4], |offered| *offered),
            [
                ReplyAction::Accepted,
                ReplyAction::Wake,
                ReplyAction::Nothing,
                ReplyAction::Nothing
            ]
        );
        assert_eq!(
            apply_reply(&sent, &[], |_| unreachable!("only refused claims are read")),
            [ReplyAction::Accepted; 4]
        );
    }
}
