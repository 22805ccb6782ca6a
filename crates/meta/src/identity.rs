//! Data directory identities, and the boot check: may a node whose directory says "I am node
//! N, incarnation I, generation G" take part in the cluster's Raft groups?
//!
//! Raft's safety rests on every voter remembering, across restarts, what it voted for and
//! what it acknowledged. A node that starts on an empty directory (a replaced disk, a store
//! deleted after corruption) or on an older copy of it (a restored backup) has forgotten both,
//! and would count toward quorums for state it no longer holds. So every directory carries:
//!
//! - a **cluster id**, fixed when the cluster forms (0: not known yet, a directory from before
//!   identities existed);
//! - its **node id**;
//! - an **incarnation**, drawn at random when the directory is created: a wiped directory gets
//!   a new one;
//! - a **generation**, advanced (durably) at every start that passes the check: a restored
//!   copy carries an older one than the cluster recorded.
//!
//! The cluster records each node's incarnation and latest generation in the metadata
//! ([`crate::MetaCommand::RegisterIncarnation`]). At start, before it takes part in any group,
//! a node asks its peers what they hold ([`PeerReport`], from their stored metadata, so it
//! works while the metadata group has no leader) and [`check_boot`] decides:
//!
//! 1. A peer records this node with another incarnation → refuse (a new directory: amnesia;
//!    an old one: it belongs to another incarnation).
//! 2. A peer records a generation above this directory's → refuse: a stale copy.
//! 3. A peer of another cluster id → refuse.
//! 4. A new directory (never passed the check, holds nothing) among peers that hold a cluster
//!    that does not know it (no peer records it) → refuse: it may have voted or acknowledged
//!    before it lost its disk, and nobody can tell.
//! 5. A new directory proceeds only once **every** initial voter answered: a cluster whose
//!    only surviving copy is on one peer must not be re-formed by the others. When every one
//!    of them is new too, they form the cluster together: the `roster` of their incarnations
//!    is kept by each, and the cluster id derives from it (every former computes the same).
//! 6. A directory that passed the check before proceeds once, with itself, a majority of the
//!    initial voters answered without objection. Every node of a cluster that lost power at
//!    once is such a directory and answers the others' checks while it checks its own, so a
//!    whole cluster comes back.
//!
//! A start that proceeds is announced to the peers that answered (each stores it durably
//! before the node takes part), so a later check sees it before the metadata records it.
//!
//! What it does not see: a copy taken while the node ran (the copy and the node share a
//! generation), and a start known only to peers that do not answer the later check. Both are
//! written down in docs/guarantees.md.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// What a data directory says about itself (stored in the node's database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIdentity {
    /// The cluster this directory belongs to; 0 while not known.
    pub cluster_id: u64,
    /// The node id this directory was created for.
    pub node_id: NodeId,
    /// Random, drawn when the directory was created; never 0.
    pub incarnation: u64,
    /// The number of starts that passed the boot check (0: none yet).
    pub generation: u64,
    /// Whether this directory took part in a cluster: it passed the boot check once, or holds
    /// data written before identities existed.
    pub joined: bool,
    /// The incarnations of the initial voters when this directory formed a new cluster with
    /// them (empty otherwise): what this node answers for a voter the metadata does not
    /// record yet.
    pub roster: BTreeMap<NodeId, u64>,
}

impl DiskIdentity {
    /// A new directory's identity.
    pub fn new(node_id: NodeId, incarnation: u64) -> Self {
        DiskIdentity {
            cluster_id: 0,
            node_id,
            incarnation: incarnation.max(1),
            generation: 0,
            joined: false,
            roster: BTreeMap::new(),
        }
    }
}

/// The cluster's record of one node's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncarnationRecord {
    /// The incarnation registered.
    pub incarnation: u64,
    /// The latest generation registered for it.
    pub generation: u64,
}

/// One peer's answer to a boot check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// The answering peer.
    pub peer: NodeId,
    /// Its cluster id (its metadata's, else its directory's); 0: not known.
    pub cluster_id: u64,
    /// Whether it holds a cluster's state: metadata, or the roster of a cluster it formed.
    pub has_cluster: bool,
    /// What it records of the asking node, if anything.
    pub record: Option<IncarnationRecord>,
    /// The peer's own incarnation (for the roster of a cluster formed now).
    pub incarnation: u64,
}

/// Why a node must not take part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootRefusal {
    #[error(
        "node {node}'s data directory is new (incarnation {mine:#x}), but node {peer} records \
         node {node} with incarnation {recorded:#x}: this node lost its data (a replaced disk, \
         a deleted store) and must not vote or acknowledge for what it no longer holds"
    )]
    Amnesia {
        node: NodeId,
        peer: NodeId,
        mine: u64,
        recorded: u64,
    },
    #[error(
        "node {node}'s data directory is new, but node {peer} holds a cluster that does not \
         know this directory: this node may have voted or acknowledged before it lost its data"
    )]
    UnknownToCluster { node: NodeId, peer: NodeId },
    #[error(
        "node {node}'s data directory has incarnation {mine:#x}, but node {peer} records node \
         {node} with incarnation {recorded:#x}: this directory is not the one the cluster knows \
         for node {node}"
    )]
    OtherIncarnation {
        node: NodeId,
        peer: NodeId,
        mine: u64,
        recorded: u64,
    },
    #[error(
        "node {node}'s data directory is at generation {mine}, but node {peer} recorded \
         generation {recorded} for it: this is an older copy of the directory (a restored \
         backup), which has lost what the node acknowledged since"
    )]
    StaleCopy {
        node: NodeId,
        peer: NodeId,
        mine: u64,
        recorded: u64,
    },
    #[error(
        "node {node}'s data directory belongs to cluster {mine:#x}, but node {peer} belongs to \
         cluster {theirs:#x}: check --peers and --data-dir"
    )]
    OtherCluster {
        node: NodeId,
        peer: NodeId,
        mine: u64,
        theirs: u64,
    },
}

/// What a node does after a round of boot checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootVerdict {
    /// Take part. `form` says that every initial voter is new: the nodes form the cluster
    /// (initialize the metadata group) with this `roster` and `cluster_id`. Otherwise
    /// `cluster_id` is the one to keep (the directory's, or the peers' when it had none).
    Proceed {
        form: bool,
        cluster_id: u64,
        roster: BTreeMap<NodeId, u64>,
    },
    /// Not enough answers yet: ask again.
    Wait {
        /// The answers still needed.
        needed: usize,
        /// The peers that answered.
        answered: usize,
    },
    /// Never take part: exit and say why.
    Refuse(BootRefusal),
}

/// Decides whether the node whose directory is `me` may take part, given the `reports` of
/// its peers in one round. `voters` are the cluster's initial voters (`--peers`, this node
/// included). Pure: see the module doc for the rules.
pub fn check_boot(
    me: &DiskIdentity,
    voters: &BTreeSet<NodeId>,
    reports: &[PeerReport],
) -> BootVerdict {
    let node = me.node_id;
    // One report per peer, and only from voters other than this node.
    let mut by_peer: BTreeMap<NodeId, &PeerReport> = BTreeMap::new();
    for r in reports {
        if r.peer != node && voters.contains(&r.peer) {
            by_peer.insert(r.peer, r);
        }
    }
    if let Some(refusal) = by_peer.values().find_map(|r| contradiction(me, r)) {
        return BootVerdict::Refuse(refusal);
    }
    let peers = voters.iter().filter(|v| **v != node).count();
    if let Some(verdict) = unknown_new_directory(me, &by_peer, peers) {
        return verdict;
    }
    let needed = if me.joined {
        // With itself, a majority of the voters.
        (voters.len() / 2 + 1).saturating_sub(usize::from(voters.contains(&node)))
    } else {
        peers
    };
    if by_peer.len() < needed {
        return BootVerdict::Wait {
            needed,
            answered: by_peer.len(),
        };
    }
    proceed(me, &by_peer)
}

/// What in one peer's report contradicts this directory: another incarnation of this node
/// (an amnesiac new directory, or another copy), a newer generation (a stale copy), or
/// another cluster.
fn contradiction(me: &DiskIdentity, r: &PeerReport) -> Option<BootRefusal> {
    let node = me.node_id;
    if let Some(rec) = r.record {
        if rec.incarnation != me.incarnation {
            let (peer, mine, recorded) = (r.peer, me.incarnation, rec.incarnation);
            return Some(if me.joined {
                BootRefusal::OtherIncarnation {
                    node,
                    peer,
                    mine,
                    recorded,
                }
            } else {
                BootRefusal::Amnesia {
                    node,
                    peer,
                    mine,
                    recorded,
                }
            });
        }
        if rec.generation > me.generation {
            return Some(BootRefusal::StaleCopy {
                node,
                peer: r.peer,
                mine: me.generation,
                recorded: rec.generation,
            });
        }
    }
    if me.cluster_id != 0 && r.cluster_id != 0 && r.cluster_id != me.cluster_id {
        return Some(BootRefusal::OtherCluster {
            node,
            peer: r.peer,
            mine: me.cluster_id,
            theirs: r.cluster_id,
        });
    }
    None
}

/// A new directory that a peer holding a cluster does not know: refused, unless another
/// peer records it (a former's roster, or the metadata, counted this very directory: a
/// random incarnation is never guessed, and a peer that joined a moment ago may not have
/// that record yet). Refused only once every one of the `peers` answered; `None` when the
/// rule does not apply.
fn unknown_new_directory(
    me: &DiskIdentity,
    by_peer: &BTreeMap<NodeId, &PeerReport>,
    peers: usize,
) -> Option<BootVerdict> {
    if me.joined {
        return None;
    }
    let unknown_to = by_peer
        .values()
        .find(|r| r.has_cluster && r.record.is_none())
        .map(|r| r.peer);
    let known = by_peer.values().any(|r| r.record.is_some());
    let peer = unknown_to.filter(|_| !known)?;
    if by_peer.len() < peers {
        return Some(BootVerdict::Wait {
            needed: peers,
            answered: by_peer.len(),
        });
    }
    Some(BootVerdict::Refuse(BootRefusal::UnknownToCluster {
        node: me.node_id,
        peer,
    }))
}

/// Enough peers answered and none objected: form the cluster (every voter is new) or keep
/// the cluster id this directory (else its peers) holds.
fn proceed(me: &DiskIdentity, by_peer: &BTreeMap<NodeId, &PeerReport>) -> BootVerdict {
    let form = !me.joined && by_peer.values().all(|r| !r.has_cluster);
    if form {
        let mut roster: BTreeMap<NodeId, u64> =
            by_peer.values().map(|r| (r.peer, r.incarnation)).collect();
        roster.insert(me.node_id, me.incarnation);
        return BootVerdict::Proceed {
            form: true,
            cluster_id: cluster_id_of(&roster),
            roster,
        };
    }
    let peer_cluster = by_peer
        .values()
        .map(|r| r.cluster_id)
        .find(|c| *c != 0)
        .unwrap_or(0);
    BootVerdict::Proceed {
        form: false,
        cluster_id: if me.cluster_id != 0 {
            me.cluster_id
        } else {
            peer_cluster
        },
        roster: me.roster.clone(),
    }
}

/// The cluster id of a cluster formed by the voters of `roster` (node → incarnation): a hash
/// of it (FNV-1a, 64 bits), so every former computes the same id, and a cluster formed again
/// from new directories gets another. Never 0.
pub fn cluster_id_of(roster: &BTreeMap<NodeId, u64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (node, incarnation) in roster {
        for b in node
            .to_le_bytes()
            .into_iter()
            .chain(incarnation.to_le_bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(n: u64) -> BTreeSet<NodeId> {
        (1..=n).collect()
    }

    fn new_dir(node: NodeId) -> DiskIdentity {
        DiskIdentity::new(node, 100 + node)
    }

    fn joined(node: NodeId, generation: u64) -> DiskIdentity {
        DiskIdentity {
            cluster_id: 7,
            generation,
            joined: true,
            ..new_dir(node)
        }
    }

    /// A peer that is new itself.
    fn empty_peer(peer: NodeId) -> PeerReport {
        PeerReport {
            peer,
            cluster_id: 0,
            has_cluster: false,
            record: None,
            incarnation: 100 + peer,
        }
    }

    /// A peer of cluster 7 that records `record` for the asker.
    fn cluster_peer(peer: NodeId, record: Option<(u64, u64)>) -> PeerReport {
        PeerReport {
            peer,
            cluster_id: 7,
            has_cluster: true,
            record: record.map(|(incarnation, generation)| IncarnationRecord {
                incarnation,
                generation,
            }),
            incarnation: 100 + peer,
        }
    }

    #[test]
    fn a_new_cluster_forms_only_when_every_voter_answered_new() {
        let me = new_dir(1);
        assert_eq!(
            check_boot(&me, &voters(3), &[empty_peer(2)]),
            BootVerdict::Wait {
                needed: 2,
                answered: 1
            },
            "one silent voter may hold the only copy of a cluster"
        );
        let BootVerdict::Proceed {
            form,
            cluster_id,
            roster,
        } = check_boot(&me, &voters(3), &[empty_peer(2), empty_peer(3)])
        else {
            panic!("all new: form")
        };
        assert!(form);
        assert_eq!(roster, BTreeMap::from([(1, 101), (2, 102), (3, 103)]));
        // Node 3, checking at the same time, computes the same cluster id.
        let BootVerdict::Proceed {
            cluster_id: theirs, ..
        } = check_boot(&new_dir(3), &voters(3), &[empty_peer(1), empty_peer(2)])
        else {
            panic!()
        };
        assert_eq!(cluster_id, theirs);
    }

    #[test]
    fn a_single_node_cluster_needs_no_peer() {
        assert!(matches!(
            check_boot(&new_dir(1), &voters(1), &[]),
            BootVerdict::Proceed { form: true, .. }
        ));
        assert!(matches!(
            check_boot(&joined(1, 3), &voters(1), &[]),
            BootVerdict::Proceed { form: false, .. }
        ));
    }

    /// The wiped-disk sequence: node 1's directory is new, and node 3 records node 1 with the
    /// incarnation of the directory it lost.
    #[test]
    fn a_wiped_directory_among_a_cluster_is_refused() {
        let me = DiskIdentity::new(1, 555);
        let v = check_boot(&me, &voters(3), &[cluster_peer(3, Some((101, 4)))]);
        assert_eq!(
            v,
            BootVerdict::Refuse(BootRefusal::Amnesia {
                node: 1,
                peer: 3,
                mine: 555,
                recorded: 101
            })
        );
        // Even when the cluster holds no record of it (registered before identities), once
        // every voter answered.
        assert!(matches!(
            check_boot(&me, &voters(3), &[cluster_peer(3, None)]),
            BootVerdict::Wait { .. }
        ));
        assert!(matches!(
            check_boot(&me, &voters(3), &[cluster_peer(3, None), empty_peer(2)]),
            BootVerdict::Refuse(BootRefusal::UnknownToCluster { peer: 3, .. })
        ));
    }

    #[test]
    fn a_restored_copy_is_refused() {
        let v = check_boot(
            &joined(1, 4),
            &voters(3),
            &[cluster_peer(3, Some((101, 5)))],
        );
        assert!(matches!(
            v,
            BootVerdict::Refuse(BootRefusal::StaleCopy {
                mine: 4,
                recorded: 5,
                ..
            })
        ));
        // The generation the peers saw last is this directory's own: a plain restart.
        assert!(matches!(
            check_boot(
                &joined(1, 5),
                &voters(3),
                &[cluster_peer(3, Some((101, 5)))]
            ),
            BootVerdict::Proceed { form: false, .. }
        ));
    }

    #[test]
    fn another_incarnation_or_cluster_is_refused() {
        assert!(matches!(
            check_boot(&joined(1, 2), &voters(3), &[cluster_peer(2, Some((9, 1)))]),
            BootVerdict::Refuse(BootRefusal::OtherIncarnation { .. })
        ));
        let mut other = cluster_peer(2, Some((101, 1)));
        other.cluster_id = 8;
        assert!(matches!(
            check_boot(&joined(1, 2), &voters(3), &[other]),
            BootVerdict::Refuse(BootRefusal::OtherCluster { .. })
        ));
    }

    /// A whole cluster restarts at once: each has a joined directory and hears from peers
    /// that are themselves checking (they answer from their stored metadata).
    #[test]
    fn after_a_full_power_loss_a_majority_of_answers_is_enough() {
        for (n, needed) in [(3, 1), (5, 2)] {
            let v = check_boot(&joined(1, 2), &voters(n), &[]);
            assert_eq!(
                v,
                BootVerdict::Wait {
                    needed,
                    answered: 0
                }
            );
            let reports: Vec<_> = (2..2 + needed as u64)
                .map(|p| cluster_peer(p, Some((101, 2))))
                .collect();
            assert!(matches!(
                check_boot(&joined(1, 2), &voters(n), &reports),
                BootVerdict::Proceed {
                    form: false,
                    cluster_id: 7,
                    ..
                }
            ));
        }
    }

    /// Regression (a new cluster's third node refused itself): node 2 formed the cluster
    /// counting node 3 and node 1; node 3 joined and got the metadata, which does not record
    /// node 1 yet. Node 1 is known to node 2's roster: it joins.
    #[test]
    fn a_late_voter_known_to_one_former_joins() {
        let v = check_boot(
            &new_dir(1),
            &voters(3),
            &[cluster_peer(2, Some((101, 0))), cluster_peer(3, None)],
        );
        assert!(
            matches!(v, BootVerdict::Proceed { form: false, .. }),
            "{v:?}"
        );
    }

    /// Two voters formed the cluster while the third was still checking: it finds itself in
    /// their roster (reported as generation 0) and joins without forming.
    #[test]
    fn a_late_former_joins_the_cluster_it_was_counted_in() {
        let me = new_dir(3);
        let v = check_boot(
            &me,
            &voters(3),
            &[cluster_peer(1, Some((103, 0))), empty_peer(2)],
        );
        assert_eq!(
            v,
            BootVerdict::Proceed {
                form: false,
                cluster_id: 7,
                roster: BTreeMap::new()
            }
        );
    }

    #[test]
    fn answers_from_non_voters_and_itself_do_not_count() {
        let me = new_dir(1);
        let v = check_boot(
            &me,
            &voters(3),
            &[empty_peer(1), empty_peer(9), empty_peer(2)],
        );
        assert_eq!(
            v,
            BootVerdict::Wait {
                needed: 2,
                answered: 1
            }
        );
    }
}
