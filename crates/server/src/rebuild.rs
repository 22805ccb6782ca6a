//! `fjord serve --rebuild`: bringing back a node that lost its data directory, or whose
//! directory is corrupt or an old copy, without letting it vote on what it no longer has.
//!
//! 1. The node starts on a new, empty directory (the old one is moved aside, never deleted)
//!    with a new incarnation, and starts no group.
//! 2. It asks the metadata leader to take it back (`RaftTransport.Rebuild`). The leader checks
//!    that every group the node is a voter of (the metadata group, each partition it holds)
//!    keeps a majority of live voters without it ([`check_majorities`]); if one would not, it
//!    refuses and changes nothing. Else it makes the node a *learner* of the metadata group and
//!    asks each partition's leader to do the same (`RaftTransport.ChangeVoter`), and only then
//!    records the new incarnation ([`fjord_meta::MetaCommand::RebuildIncarnation`]).
//! 3. The node starts its groups: as a learner it receives every group's log (or snapshot)
//!    but neither votes nor counts toward a majority, so it cannot help elect a leader that
//!    lacks acknowledged records.
//! 4. It asks each group's leader, again and again, to make it a voter; a leader does so
//!    only once the learner holds every committed entry ([`promote_until_voter`]). The
//!    answering node's `Metadata` says how many groups it is still a learner of.
//!
//! What must hold: the node is a voter of no group while it lacks any entry that group
//! committed. Steps 2 and 3 are ordered (no group starts before every demotion committed),
//! and a demotion commits through the joint configuration, so it needs the live majority
//! step 2 checked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fjord_meta::{META_GROUP, MetaCommand, MetaResponse, NodeId, group_id};
use fjord_raft::handle::Unavailable;
use fjord_raft::peer::PeerError;
use fjord_raft::peer::wire::{ChangeVoterReply, ChangeVoterRequest, RebuildRequest};
use fjord_raft::{GroupError, Promotion};

use crate::error::{ApiError, Invalid, NoLeaderCause, Subject};
use crate::node::Node;

/// How long one leader's answer to a membership change may take.
const CHANGE_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds over a partition's replicas to find its leader for a demotion, at most.
const DEMOTE_ROUNDS: u32 = 20;
/// How long a membership change may wait for its commit, at most.
const MEMBERSHIP_CHANGE_WAIT: Duration = Duration::from_secs(5);
/// Rounds a node started without `--rebuild` looks for groups it is a learner of.
const QUIET_START_ROUNDS: u32 = 20;
/// Pause between two rounds of promotion requests.
const PROMOTE_EVERY: Duration = Duration::from_millis(300);

/// Whether taking `node` out of the voters of each group keeps a live majority. A group is
/// `(what it is, its voters)`; the change commits through the joint configuration, so it
/// needs a majority of the old voters and of the new ones, alive, without `node`.
pub fn check_majorities(
    groups: &[(Subject, BTreeSet<NodeId>)],
    node: NodeId,
    alive: impl Fn(NodeId) -> bool,
) -> Result<(), MajorityLost> {
    for (what, voters) in groups {
        if !voters.contains(&node) {
            continue;
        }
        let rest: Vec<NodeId> = voters.iter().copied().filter(|v| *v != node).collect();
        let live = rest.iter().filter(|v| alive(**v)).count();
        let need = (voters.len() / 2 + 1).max(rest.len() / 2 + 1);
        if rest.is_empty() || live < need {
            return Err(MajorityLost {
                what: what.clone(),
                node,
                live,
                rest,
                need,
            });
        }
    }
    Ok(())
}

/// Taking a node out of a group's voters would leave the group without a live majority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} would lose its majority: without node {node}, {live} of its other voters {rest:?} \
     are alive and {need} are needed. Bring them back first; nothing was changed"
)]
pub struct MajorityLost {
    pub what: Subject,
    pub node: NodeId,
    pub live: usize,
    pub rest: Vec<NodeId>,
    pub need: usize,
}

fn no_majority(what: &Subject) -> ApiError {
    ApiError::no_leader(
        what.clone(),
        NoLeaderCause::ChangeNotCommitted {
            within: MEMBERSHIP_CHANGE_WAIT,
        },
    )
}

fn group_error(what: &Subject, e: GroupError) -> ApiError {
    match e {
        GroupError::NotLeader { leader, address } => ApiError::NotLeader {
            this: 0,
            of: what.clone(),
            leader: leader.zip(address),
        },
        GroupError::Busy(why) => ApiError::Busy(why),
        GroupError::Internal(why) => ApiError::Internal(why),
        GroupError::Unavailable(why) => ApiError::no_leader(what.clone(), why),
    }
}

/// On the metadata leader: takes `req.node` back as a learner of every group it is a voter
/// of, after checking each keeps a majority, and records its new incarnation. Returns the
/// number of groups it is a learner of.
pub async fn take_back(node: &Arc<Node>, req: RebuildRequest) -> Result<u32, ApiError> {
    let target = req.node;
    if target == node.id() {
        return Err(Invalid::RebuildSelf.into());
    }
    let view = node.view();
    if !view.state.nodes.contains_key(&target) {
        return Err(ApiError::UnregisteredNode(target));
    }
    // A request from a rebuild that another one overtook (its node died; the request was
    // delayed) demotes nothing. The record is checked again where it changes.
    let recorded = view.state.recorded_incarnation(target);
    if recorded != req.replaces && recorded != req.incarnation {
        return Err(ApiError::Meta(fjord_meta::MetaError::RebuildRaced {
            node: target,
            replaces: req.replaces,
            recorded,
        }));
    }
    // A node that answers heartbeats runs: a second process started with its --id (another
    // machine, another directory; refused at its boot check, then restarted with --rebuild
    // as that refusal suggests) must not take its place, demoting it and splitting one id
    // between two processes. A node whose disk was lost has stopped or restarted without its
    // groups (a starting node answers no heartbeat): the failure detector suspects it within
    // its timeout, and the rebuild, asking again, goes on.
    if node.is_alive(target) {
        return Err(ApiError::RebuildOfLiveNode(target));
    }
    let (groups, partitions) = voter_groups(node, &view.state, target).await?;
    // Checked by whichever node is asked, on its own view: a refusal needs no leader (with a
    // majority of the metadata group down there is none to ask).
    check_majorities(&groups, target, |n| node.is_alive(n))?;
    if !node.meta().is_leader() {
        return Err(ApiError::NotLeader {
            this: node.id(),
            of: Subject::Metadata,
            leader: node
                .meta_leader()
                .and_then(|l| node.client_address_of(l).map(|a| (l, a))),
        });
    }
    let demoted = tokio::time::timeout(MEMBERSHIP_CHANGE_WAIT, node.meta().demote(target))
        .await
        .map_err(|_| no_majority(&Subject::Metadata))?
        .map_err(|e| group_error(&Subject::Metadata, e))?;
    tracing::warn!(
        node = target,
        demoted,
        partitions = partitions.len(),
        "rebuilding a node: it is a learner of the metadata group; its partitions next"
    );
    for (g, what, p) in &partitions {
        demote_partition(node, *g, what, target, &p.replicas, p.leader).await?;
    }
    record_incarnation(node, req).await?;
    Ok(1 + partitions.len() as u32)
}

/// A partition whose voters a rebuilt node leaves: its group, what it is, its assignment.
type HeldPartition = (u64, Subject, fjord_meta::PartitionAssignment);

/// The groups `target` may be a voter of, with their voters (the metadata group first), and
/// the partitions among them.
async fn voter_groups(
    node: &Node,
    state: &fjord_meta::MetaState,
    target: NodeId,
) -> Result<(Vec<(Subject, BTreeSet<NodeId>)>, Vec<HeldPartition>), ApiError> {
    let (meta_voters, _) = node
        .meta()
        .members()
        .await
        .map_err(|e| group_error(&Subject::Metadata, e))?;
    let mut groups = vec![(Subject::Metadata, meta_voters)];
    let mut partitions = Vec::new();
    for t in state.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.replicas.contains(&target) {
                let what = Subject::Partition {
                    topic: t.name.clone(),
                    partition: i as u32,
                };
                // The group's own voters where this node hosts it (the node may be a learner
                // already, after an interrupted rebuild); else its replicas.
                let g = group_id(t.id, i as u32);
                let voters = match node.partition(g) {
                    Some(h) => match h.members().await {
                        Ok((v, _)) if !v.is_empty() => v,
                        _ => p.replicas.iter().copied().collect(),
                    },
                    None => p.replicas.iter().copied().collect(),
                };
                groups.push((what.clone(), voters));
                partitions.push((g, what, p.clone()));
            }
        }
    }
    Ok((groups, partitions))
}

/// Records the rebuilt node's new incarnation in the metadata, once it is a learner of every
/// group it held.
async fn record_incarnation(node: &Node, req: RebuildRequest) -> Result<(), ApiError> {
    let (target, incarnation) = (req.node, req.incarnation);
    if let MetaResponse::Error(e) = node
        .meta_write(MetaCommand::RebuildIncarnation {
            id: target,
            address: req.address,
            incarnation,
            cluster_id: req.cluster_id,
            replaces: req.replaces,
        })
        .await?
    {
        return Err(ApiError::Meta(e));
    }
    tracing::warn!(
        node = target,
        incarnation = format_args!("{incarnation:#x}"),
        "rebuilding a node: a learner of every group it held, new directory recorded"
    );
    Ok(())
}

/// Makes `target` a learner of partition group `g`, at its leader (this node or another
/// replica), trying the replicas in turn until one leads.
async fn demote_partition(
    node: &Arc<Node>,
    g: u64,
    what: &Subject,
    target: NodeId,
    replicas: &[NodeId],
    reported: Option<NodeId>,
) -> Result<(), ApiError> {
    let mut order: Vec<NodeId> = reported.into_iter().collect();
    order.extend(replicas.iter().copied().filter(|r| Some(*r) != reported));
    order.retain(|r| *r != target);
    let mut last = ApiError::no_leader(what.clone(), NoLeaderCause::NotKnown);
    for round in 0..DEMOTE_ROUNDS {
        for &r in &order {
            match change_at(node, r, g, target, false).await {
                Ok(reply) if reply.done => return Ok(()),
                Ok(reply) => {
                    last = ApiError::no_leader(
                        what.clone(),
                        NoLeaderCause::ChangePending {
                            detail: reply.detail,
                        },
                    )
                }
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(round + 1).min(5))).await;
    }
    Err(last)
}

/// Asks node `at` (this one, or a peer) to change `target`'s role in group `g`.
async fn change_at(
    node: &Arc<Node>,
    at: NodeId,
    g: u64,
    target: NodeId,
    promote: bool,
) -> Result<ChangeVoterReply, ApiError> {
    if at == node.id() {
        return change_voter(node, g, target, promote).await;
    }
    let addr = node.peer_address_of(at).ok_or_else(|| {
        ApiError::no_leader(
            Subject::Group(g),
            NoLeaderCause::AddressUnknown { node: at },
        )
    })?;
    let req = ChangeVoterRequest {
        group_id: g,
        node: target,
        promote,
    };
    node.peer(&addr)
        .change_voter(req, CHANGE_RPC_TIMEOUT)
        .await
        .map_err(|e| match e {
            PeerError::Connect(e) => ApiError::Connect(e),
            PeerError::Timeout { .. } => ApiError::no_leader(
                Subject::Group(g),
                NoLeaderCause::PeerSilent {
                    node: at,
                    within: CHANGE_RPC_TIMEOUT,
                },
            ),
            e => ApiError::no_leader(
                Subject::Group(g),
                NoLeaderCause::PeerRefused {
                    node: at,
                    message: e.message(),
                },
            ),
        })
}

/// On a group's leader: makes `target` a learner, or a voter once it caught up.
pub async fn change_voter(
    node: &Node,
    g: u64,
    target: NodeId,
    promote: bool,
) -> Result<ChangeVoterReply, ApiError> {
    let what = if g == META_GROUP {
        Subject::Metadata
    } else {
        Subject::Group(g)
    };
    let change = async {
        if g == META_GROUP {
            if promote {
                node.meta().promote_caught_up(target).await
            } else {
                node.meta()
                    .demote(target)
                    .await
                    .map(|_| Promotion::AlreadyVoter)
            }
        } else {
            let Some(h) = node.partition(g) else {
                return Err(Unavailable::NotHosted { node: node.id() }.into());
            };
            if promote {
                h.promote_caught_up(target).await
            } else {
                h.demote(target).await.map(|_| Promotion::AlreadyVoter)
            }
        }
    };
    let result = tokio::time::timeout(MEMBERSHIP_CHANGE_WAIT, change)
        .await
        .map_err(|_| no_majority(&what))?;
    let reply = |done, detail: String| ChangeVoterReply { done, detail };
    match result.map_err(|e| group_error(&what, e))? {
        Promotion::Promoted => {
            tracing::info!(
                group = g,
                node = target,
                "a rebuilt learner caught up: a voter again"
            );
            Ok(reply(true, String::new()))
        }
        Promotion::AlreadyVoter => Ok(reply(true, String::new())),
        Promotion::Lagging { matched, committed } => Ok(reply(
            false,
            format!("node {target} holds {matched} of the {committed} committed entries"),
        )),
        Promotion::NotAMember => Ok(reply(
            !promote,
            format!("node {target} is not a member of {what}"),
        )),
    }
}

/// The groups this node holds a replica of (the metadata group first) and, for each partition,
/// whom to ask when this replica knows no leader (a learner of a quiet group hears no
/// heartbeat): in odd rounds the leader the metadata reports, else the other replicas in turn.
/// Pure.
fn promotion_plan(
    state: &fjord_meta::MetaState,
    me: NodeId,
    round: u32,
) -> (Vec<u64>, BTreeMap<u64, NodeId>) {
    let mut groups = vec![META_GROUP];
    let mut ask_instead = BTreeMap::new();
    for t in state.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if !p.replicas.contains(&me) {
                continue;
            }
            let g = group_id(t.id, i as u32);
            groups.push(g);
            let others: Vec<NodeId> = p.replicas.iter().copied().filter(|r| *r != me).collect();
            let pick = p.leader.filter(|l| *l != me && round % 2 == 1).or_else(|| {
                (!others.is_empty()).then(|| others[(round as usize / 2) % others.len()])
            });
            if let Some(l) = pick {
                ask_instead.insert(g, l);
            }
        }
    }
    (groups, ask_instead)
}

/// What this node's replica of a group says of its members.
enum Membership {
    /// `((voters, learners), leader)`.
    Known(((BTreeSet<NodeId>, BTreeSet<NodeId>), Option<NodeId>)),
    /// Not looked at: started normally, and the group is not running.
    Skip,
    /// Rebuilding, and the replica is not there or does not answer yet.
    Unknown,
}

async fn membership(node: &Node, g: u64, rebuilding: bool) -> Membership {
    // Started normally, a node looks only at running groups: waking every hibernated group
    // at each start would cost what hibernation saves (a learner's groups do not go quiet
    // while it lags).
    if !rebuilding {
        let running = if g == META_GROUP {
            node.meta()
                .members_if_running()
                .map(|m| (m, node.meta().leader()))
        } else {
            node.partition(g)
                .and_then(|h| h.members_if_running().map(|m| (m, h.leadership().leader)))
        };
        return running.map_or(Membership::Skip, Membership::Known);
    }
    let members = if g == META_GROUP {
        node.meta()
            .members()
            .await
            .map(|m| (m, node.meta().leader()))
    } else if let Some(h) = node.partition(g) {
        h.members().await.map(|m| (m, h.leadership().leader))
    } else {
        return Membership::Unknown;
    };
    members.map_or(Membership::Unknown, Membership::Known)
}

/// Where a group stands after this node asked to be its voter again.
enum GroupPromotion {
    /// Its leader says this node is a voter.
    Voter,
    /// Not yet (lagging, no answer, no leader known, membership not known yet).
    NotYet,
    /// Not looked at, or it does not list this node as a learner (started normally).
    NotNeeded,
}

/// Asks group `g`'s leader (else `ask_instead`) to make this node a voter of it.
async fn promote_in(
    node: &Arc<Node>,
    g: u64,
    rebuilding: bool,
    ask_instead: Option<NodeId>,
) -> GroupPromotion {
    let ((voters, learners), leader) = match membership(node, g, rebuilding).await {
        Membership::Known(m) => m,
        Membership::Skip => return GroupPromotion::NotNeeded,
        Membership::Unknown => return GroupPromotion::NotYet,
    };
    if !rebuilding && !learners.contains(&node.id()) {
        // Started normally: only a group that lists this node as a learner needs it.
        return GroupPromotion::NotNeeded;
    }
    let answer = match leader.or(ask_instead) {
        Some(l) if l == node.id() && voters.contains(&node.id()) => Ok(ChangeVoterReply {
            done: true,
            detail: String::new(),
        }),
        Some(l) if l != node.id() => change_at(node, l, g, node.id(), true).await,
        _ => Err(ApiError::no_leader(
            Subject::Group(g),
            NoLeaderCause::NotKnown,
        )),
    };
    match answer {
        Ok(r) if r.done => {
            if g == META_GROUP {
                node.meta_caught_up();
            }
            GroupPromotion::Voter
        }
        Ok(r) => {
            tracing::debug!(group = g, detail = %r.detail, "not a voter yet");
            GroupPromotion::NotYet
        }
        Err(e) => {
            tracing::debug!(group = g, error = %e, "promotion not answered");
            GroupPromotion::NotYet
        }
    }
}

/// On the rebuilt node: asks each group's leader, round after round, to make this node a
/// voter again, until it is one of every group it holds (the metadata group and every
/// partition the metadata places on it). Keeps the node's rebuild progress current.
///
/// A node started without `--rebuild` runs it too, for a few rounds and then for as long as it
/// finds itself a learner: a rebuilt node that restarted before every group promoted it.
pub async fn promote_until_voter(node: Arc<Node>, rebuilding: bool) {
    // Groups whose leader said this node is a voter. Only a leader's word counts: a learner
    // catching up replays the log from its start, whose first membership still lists it as
    // the voter it was before it lost its disk.
    let mut confirmed: BTreeSet<u64> = BTreeSet::new();
    let mut round = 0u32;
    let mut was_learner = false;
    loop {
        round += 1;
        let (groups, ask_instead) = promotion_plan(&node.view().state, node.id(), round);
        let mut left = 0u32;
        for &g in &groups {
            if confirmed.contains(&g) {
                continue;
            }
            match promote_in(&node, g, rebuilding, ask_instead.get(&g).copied()).await {
                GroupPromotion::Voter => {
                    confirmed.insert(g);
                }
                GroupPromotion::NotYet => left += 1,
                GroupPromotion::NotNeeded => {}
            }
        }
        // A node restarted in the middle of its rebuild (without the flag) finishes it here.
        was_learner |= left > 0;
        if rebuilding {
            node.set_rebuild_progress(Some((left, groups.len() as u32)));
        }
        if left == 0 && (rebuilding || was_learner) {
            node.set_rebuild_progress(None);
            tracing::warn!(
                node = node.id(),
                groups = groups.len(),
                "rebuilt: this node is a voter of every group it holds again"
            );
            return;
        }
        if !rebuilding && left == 0 && round >= QUIET_START_ROUNDS {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(PROMOTE_EVERY) => {}
            _ = node.stopping() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learner_asks_the_reported_leader_then_each_other_replica_in_turn() {
        let mut state = fjord_meta::MetaState::new();
        for id in 1..=3 {
            state.apply(&MetaCommand::RegisterNode {
                id,
                address: format!("127.0.0.1:{}", 7100 + id),
            });
        }
        state.apply(&MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 3,
            config: Default::default(),
        });
        let g = state.topic("t").unwrap().partitions[0].group_id;
        state.apply(&MetaCommand::ReportLeader {
            group_id: g,
            leader: 2,
            epoch: 1,
        });
        let (groups, _) = promotion_plan(&state, 1, 1);
        assert_eq!(groups, vec![META_GROUP, g], "the metadata group first");
        let asked: Vec<NodeId> = (1..=4)
            .map(|round| promotion_plan(&state, 1, round).1[&g])
            .collect();
        // Odd rounds: the reported leader; even rounds: the other replicas in turn.
        assert_eq!(asked, [2, 3, 2, 2]);
        // A node holding no replica of the partition is asked about the metadata group only.
        state.apply(&MetaCommand::RegisterNode {
            id: 4,
            address: "127.0.0.1:7104".into(),
        });
        assert_eq!(promotion_plan(&state, 4, 1).0, vec![META_GROUP]);
    }

    fn group(voters: &[NodeId]) -> (Subject, BTreeSet<NodeId>) {
        (Subject::Group(7), voters.iter().copied().collect())
    }

    #[test]
    fn a_node_is_taken_out_only_where_the_others_keep_a_majority() {
        let all_alive = |_| true;
        assert_eq!(check_majorities(&[group(&[1, 2, 3])], 1, all_alive), Ok(()));
        // Of three, both others must be up: the new configuration has two voters.
        let two_down = |n| n != 2;
        let e = check_majorities(&[group(&[1, 2, 3])], 1, two_down).unwrap_err();
        assert!(
            e.to_string()
                .contains("1 of its other voters [2, 3] are alive and 2 are needed"),
            "{e}"
        );
        // Of five, three of the four others.
        let one_more_down = |n| n != 2 && n != 3;
        assert_eq!(
            check_majorities(&[group(&[1, 2, 3, 4, 5])], 1, |n| n != 2),
            Ok(())
        );
        assert!(check_majorities(&[group(&[1, 2, 3, 4, 5])], 1, one_more_down).is_err());
        // A group the node is not a voter of is not checked; a sole voter cannot leave.
        assert_eq!(check_majorities(&[group(&[2, 3])], 1, |_| false), Ok(()));
        assert!(check_majorities(&[group(&[1])], 1, all_alive).is_err());
        // One group short is enough to refuse.
        assert!(check_majorities(&[group(&[1, 2, 3]), group(&[1, 4, 5])], 1, |n| n != 5).is_err());
    }
}
