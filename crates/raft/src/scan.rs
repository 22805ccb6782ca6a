//! The liveness round's look at one group, as a pure decision: the group's state and the
//! round's (who is alive, who is lost, whom the peers suspect, the time) go in, the actions
//! come out; [`crate::liveness`] gathers the one and performs the other.
//!
//! The rules, by the replica's quiescing [`Kind`]:
//! 1. **Following** (quiet follower): its leader's node not alive → wake, campaigning after
//!    its rank's delay ([`election_delay`] with `election_step`: one first candidate per
//!    group). On a full round, a quiet follower whose own state moved on wakes.
//! 2. **Leading** (quiet leader): on a full round, wakes if its own state moved on.
//! 3. **Claiming**: a claim not accepted within two detector timeouts is withdrawn (a follower
//!    that died meanwhile must not hold it forever).
//! 4. **Awake**:
//!    - a follower whose leader's node is lost (heard from, silent since) and suspected by a
//!      majority of the voters ([`majority_suspects`]) campaigns, once per term, after its
//!      rank's delay (`campaign_step`). A node cut off alone never has that majority;
//!    - a woken follower still holding its elections, whose leader's node is not alive, may
//!      campaign after its rank's delay if that ends the hold sooner;
//!    - a leader tracks how long its log has not moved (since the last change of its term or
//!      last index, or its last wake if later) and claims the group quiet once
//!      [`leader_claim`] says so, to the live followers ([`claim_targets`]).
//! 5. A quiet partition replica whose instance runs is not settled; it hibernates once it has
//!    been quiet, and running, for `hibernate_after` ([`hibernation_due`]). The metadata group
//!    never hibernates. (The instance then stops only if its log is all committed and applied,
//!    [`crate::quiesce::log_settled`].)
//!
//! A look is *settled* when the replica is quiet and hibernated (or never to hibernate):
//! nothing for the next look to do until something changes.
//!
//! Reading a group's whole state ([`Replica::view`]) copies openraft's metrics; a look reads it
//! only when a rule needs it, so a look at a quiet replica stays a few atomic loads.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::NodeId;
use crate::handle::Leadership;
use crate::liveness::LivenessConfig;
use crate::quiesce::{
    Claim, GroupView, Kind, Wake, claim_targets, election_delay, leader_claim, majority_suspects,
    still_quiet,
};

/// What a look reads of one replica. Implemented over a live group by the effect layer, and
/// over plain data by the tests. Reads only: whatever changes goes through a [`ScanAction`].
pub trait Replica {
    /// The quiescing mode's kind.
    fn kind(&self) -> Kind;
    /// A partition group (the metadata group never hibernates).
    fn is_partition(&self) -> bool;
    /// Since when its Raft instance runs, if it does (it is not hibernated).
    fn running_since(&self) -> Option<Instant>;
    /// Since when it is quiet (leading or following a claim), if it is.
    fn quiet_since(&self) -> Option<Instant>;
    /// The leader it follows quietly.
    fn followed_leader(&self) -> Option<NodeId>;
    /// The claim it follows quietly.
    fn followed_claim(&self) -> Option<Claim>;
    /// The claim it offers or holds as leader.
    fn leader_claim(&self) -> Option<Claim>;
    /// Since when it offers its claim (while claiming).
    fn claiming_since(&self) -> Option<Instant>;
    /// A woken follower that still holds its elections.
    fn holds_elections(&self) -> bool;
    /// When it last woke.
    fn woke_at(&self) -> Option<Instant>;
    /// Whether a campaign for the loss of the leader of `term` was scheduled already.
    fn campaigned_in(&self, term: u64) -> bool;
    fn leadership(&self) -> Leadership;
    /// The group's whole state as the replica sees it (the costly read).
    fn view(&self) -> GroupView;
}

/// What the round knows beyond the group: the same for every group of one look.
#[derive(Debug)]
pub struct Round<'a> {
    pub me: NodeId,
    pub now: Instant,
    /// Every [`crate::liveness::FULL_CHECK_ROUNDS`]th round: quiet replicas' own state is
    /// checked too (a safety net: the message hooks catch these first).
    pub full: bool,
    /// The peers heard from within the detector's timeout (this node always counts as alive).
    pub alive: &'a HashSet<NodeId>,
    /// The peers whose own heartbeat requests (which carry their claims) reach this node
    /// (`crate::quiesce::Detector::is_requesting`).
    pub requesting: &'a HashSet<NodeId>,
    /// The peers heard from and silent since.
    pub lost: &'a HashSet<NodeId>,
    /// Per peer, the nodes its latest report (fresher than the detector's timeout) suspects,
    /// sorted.
    pub reports: &'a HashMap<NodeId, Vec<NodeId>>,
    pub cfg: &'a LivenessConfig,
}

impl Round<'_> {
    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.me || self.alive.contains(&node)
    }

    /// Whether `node`'s heartbeat requests reach this node (its claims renew here).
    pub fn is_requesting(&self, node: NodeId) -> bool {
        node == self.me || self.requesting.contains(&node)
    }

    /// Whether a majority of `voters` suspect `lost` (this node does).
    pub fn majority_suspects(&self, voters: &[NodeId], lost: NodeId) -> bool {
        majority_suspects(voters, self.me, lost, |peer| {
            self.reports
                .get(&peer)
                .is_some_and(|s| s.binary_search(&lost).is_ok())
        })
    }

    /// The wait of this node's replica of `group` before it campaigns for `lost` (its rank).
    fn delay(&self, group: u64, voters: &[NodeId], lost: NodeId, step: Duration) -> Duration {
        election_delay(group, self.me, voters, lost, |n| self.is_alive(n), step)
    }
}

/// Since when an awake leader's log has not moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle {
    pub term: u64,
    pub last: Option<u64>,
    pub since: Instant,
}

/// What one look does to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanAction {
    /// Wake the quiet (or claiming) replica.
    Wake {
        group: u64,
        why: Wake,
        reason: &'static str,
    },
    /// After `delay`, campaign for the group if `lost` is still suspected by a majority, and
    /// record that the loss of the leader of `term` has its campaign.
    Campaign {
        group: u64,
        lost: NodeId,
        term: u64,
        delay: Duration,
    },
    /// A woken follower holding its elections may campaign after `delay`, if sooner.
    ElectAfter { group: u64, delay: Duration },
    /// Offer `claim` to `targets`.
    Claim {
        group: u64,
        claim: Claim,
        targets: Vec<NodeId>,
    },
    /// Stop the replica's Raft instance until something needs it.
    Hibernate { group: u64 },
}

/// The outcome of one look at a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    pub actions: Vec<ScanAction>,
    /// Quiet, and hibernated or never to hibernate: nothing to do until something changes.
    pub settled: bool,
    /// An awake leader's idle tracking, for the next look (`None`: forget it).
    pub idle: Option<Idle>,
}

/// One look at `group` (see the module doc for the rules). `idle` is what the last look
/// returned for it.
pub fn look(group: u64, r: &impl Replica, idle: Option<&Idle>, round: &Round) -> Look {
    let kind = r.kind();
    let view = OnceCell::new();
    let view = || view.get_or_init(|| r.view());
    let mut actions = Vec::new();
    let (hibernate, settled) = hibernation(group, r, kind, round);
    let mut next_idle = None;
    match kind {
        Kind::Following => following(group, r, round, view, &mut actions),
        Kind::Leading => {
            if round.full
                && let Some(claim) = r.leader_claim()
                && !still_quiet(view(), &claim, true)
            {
                actions.push(wake(group, Wake::Activity, "state moved"));
            }
        }
        Kind::Claiming => {
            if let Some(since) = r.claiming_since()
                && round.now.saturating_duration_since(since) > round.cfg.suspect_after * 2
            {
                actions.push(wake(group, Wake::Activity, "claim unanswered"));
            }
        }
        Kind::Awake => next_idle = awake(group, r, idle, round, view, &mut actions),
    }
    actions.extend(hibernate);
    Look {
        actions,
        settled,
        idle: next_idle,
    }
}

/// Rule 5: whether the replica hibernates now, and whether it is settled as far as
/// hibernation goes.
fn hibernation(
    group: u64,
    r: &impl Replica,
    kind: Kind,
    round: &Round,
) -> (Option<ScanAction>, bool) {
    let quiet = matches!(kind, Kind::Leading | Kind::Following);
    match round.cfg.hibernate_after {
        Some(after) if quiet && r.is_partition() => match r.running_since() {
            Some(started_at) => {
                let due = hibernation_due(round.now, r.quiet_since(), started_at, after);
                (due.then_some(ScanAction::Hibernate { group }), false)
            }
            None => (None, true),
        },
        _ => (None, quiet),
    }
}

/// Whether a running replica quiet since `quiet_since` and started at `started_at` should
/// hibernate: it has been quiet, and running, for `after`.
pub fn hibernation_due(
    now: Instant,
    quiet_since: Option<Instant>,
    started_at: Instant,
    after: Duration,
) -> bool {
    quiet_since.is_some_and(|q| now.saturating_duration_since(q) >= after)
        && now.saturating_duration_since(started_at) >= after
}

/// Rule 1: a quiet follower.
fn following<'v>(
    group: u64,
    r: &impl Replica,
    round: &Round,
    view: impl Fn() -> &'v GroupView,
    actions: &mut Vec<ScanAction>,
) {
    let leader = r.followed_leader().unwrap_or(0);
    // The claim is a lease renewed by the leader's own requests: answers to this node's
    // heartbeats alone (the link from the leader down) do not keep it.
    if !round.is_alive(leader) || !round.is_requesting(leader) {
        let delay = round.delay(group, &view().voters, leader, round.cfg.election_step);
        actions.push(wake(
            group,
            Wake::LeaderSuspected(delay),
            "leader suspected",
        ));
    } else if round.full
        && let Some(claim) = r.followed_claim()
        && !still_quiet(view(), &claim, false)
    {
        actions.push(wake(group, Wake::Activity, "state moved"));
    }
}

/// Rule 4: an awake replica. Returns its idle tracking when it leads.
fn awake<'v>(
    group: u64,
    r: &impl Replica,
    idle: Option<&Idle>,
    round: &Round,
    view: impl Fn() -> &'v GroupView,
    actions: &mut Vec<ScanAction>,
) -> Option<Idle> {
    let lead = r.leadership();
    if let Some(lost) = lead.leader.filter(|l| round.lost.contains(l))
        && round.majority_suspects(&view().voters, lost)
        && !r.campaigned_in(lead.term)
    {
        let delay = round.delay(group, &view().voters, lost, round.cfg.campaign_step);
        actions.push(ScanAction::Campaign {
            group,
            lost,
            term: lead.term,
            delay,
        });
    }
    if r.holds_elections() {
        // Woken, waiting out its delay; if its leader's node is now suspected, it may
        // campaign by its rank instead.
        let v = view();
        if let Some(l) = v.leader.filter(|l| *l != round.me && !round.is_alive(*l)) {
            let delay = round.delay(group, &v.voters, l, round.cfg.election_step);
            actions.push(ScanAction::ElectAfter { group, delay });
        }
    }
    let after = round.cfg.quiesce_after?;
    if lead.leader != Some(round.me) {
        return None;
    }
    let v = view();
    let since = match idle {
        Some(i) if i.term == v.term && i.last == v.last_index => i.since,
        _ => round.now,
    };
    let quiet_since = r.woke_at().map_or(since, |w| w.max(since));
    let idle_for = round.now.saturating_duration_since(quiet_since);
    let alive = |n| round.is_alive(n);
    if let Some(claim) = leader_claim(group, v, idle_for, after, alive) {
        let targets = claim_targets(v, alive);
        actions.push(ScanAction::Claim {
            group,
            claim,
            targets,
        });
    }
    Some(Idle {
        term: v.term,
        last: v.last_index,
        since,
    })
}

fn wake(group: u64, why: Wake, reason: &'static str) -> ScanAction {
    ScanAction::Wake { group, why, reason }
}

/// The claims to send, by target peer: each claim to each of its targets, at most `max` per
/// peer (a claim left out is not renewed, and its followers wake).
pub fn claims_by_peer<T: Clone>(
    claims: impl IntoIterator<Item = (Claim, Vec<NodeId>, T)>,
    max: usize,
) -> HashMap<NodeId, Vec<(Claim, T)>> {
    let mut by_peer: HashMap<NodeId, Vec<(Claim, T)>> = HashMap::new();
    for (claim, targets, with) in claims {
        for t in targets {
            let list = by_peer.entry(t).or_default();
            if list.len() < max {
                list.push((claim, with.clone()));
            }
        }
    }
    by_peer
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const ME: NodeId = 2;
    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> LivenessConfig {
        LivenessConfig {
            interval: 200 * MS,
            suspect_after: 600 * MS,
            quiesce_after: Some(1000 * MS),
            election_step: 300 * MS,
            campaign_step: 100 * MS,
            hibernate_after: None,
        }
    }

    /// One replica as plain data; counts the reads of its view.
    struct Fake {
        kind: Kind,
        partition: bool,
        running_since: Option<Instant>,
        quiet_since: Option<Instant>,
        followed: Option<Claim>,
        leader_claim: Option<Claim>,
        claiming_since: Option<Instant>,
        holds_elections: bool,
        woke_at: Option<Instant>,
        campaigned_in: Option<u64>,
        leadership: Leadership,
        view: GroupView,
        view_reads: Cell<u32>,
    }

    impl Replica for Fake {
        fn kind(&self) -> Kind {
            self.kind
        }
        fn is_partition(&self) -> bool {
            self.partition
        }
        fn running_since(&self) -> Option<Instant> {
            self.running_since
        }
        fn quiet_since(&self) -> Option<Instant> {
            self.quiet_since
        }
        fn followed_leader(&self) -> Option<NodeId> {
            self.followed.map(|c| c.leader)
        }
        fn followed_claim(&self) -> Option<Claim> {
            self.followed
        }
        fn leader_claim(&self) -> Option<Claim> {
            self.leader_claim
        }
        fn claiming_since(&self) -> Option<Instant> {
            self.claiming_since
        }
        fn holds_elections(&self) -> bool {
            self.holds_elections
        }
        fn woke_at(&self) -> Option<Instant> {
            self.woke_at
        }
        fn campaigned_in(&self, term: u64) -> bool {
            self.campaigned_in == Some(term)
        }
        fn leadership(&self) -> Leadership {
            self.leadership
        }
        fn view(&self) -> GroupView {
            self.view_reads.set(self.view_reads.get() + 1);
            self.view.clone()
        }
    }

    const CLAIM: Claim = Claim {
        group: 9,
        leader: 1,
        term: 3,
        index: 7,
    };

    /// Node 2's replica, following node 1 in term 3, its log at 7, all committed and applied.
    fn follower(t0: Instant) -> Fake {
        Fake {
            kind: Kind::Awake,
            partition: true,
            running_since: Some(t0),
            quiet_since: None,
            followed: None,
            leader_claim: None,
            claiming_since: None,
            holds_elections: false,
            woke_at: None,
            campaigned_in: None,
            leadership: Leadership {
                leader: Some(1),
                term: 3,
            },
            view: GroupView {
                me: ME,
                leading: false,
                following: true,
                leader: Some(1),
                term: 3,
                last_index: Some(7),
                committed: Some(7),
                applied: Some(7),
                voters: vec![1, 2, 3],
                matched: vec![],
                failed: false,
            },
            view_reads: Cell::new(0),
        }
    }

    /// The same follower, quiet under node 1's claim since `t0`.
    fn quiet_follower(t0: Instant) -> Fake {
        Fake {
            kind: Kind::Following,
            quiet_since: Some(t0),
            followed: Some(CLAIM),
            ..follower(t0)
        }
    }

    /// Node 2 leading in term 3, both followers matched at 7.
    fn leader(t0: Instant) -> Fake {
        let f = follower(t0);
        Fake {
            leadership: Leadership {
                leader: Some(ME),
                term: 3,
            },
            view: GroupView {
                leading: true,
                following: false,
                leader: Some(ME),
                matched: vec![(1, Some(7)), (3, Some(7))],
                ..f.view.clone()
            },
            ..f
        }
    }

    /// The round's facts, owned; [`World::round`] lends them.
    struct World {
        now: Instant,
        full: bool,
        alive: HashSet<NodeId>,
        requesting: HashSet<NodeId>,
        lost: HashSet<NodeId>,
        reports: HashMap<NodeId, Vec<NodeId>>,
        cfg: LivenessConfig,
    }

    impl World {
        /// Every peer alive, none lost, no reports.
        fn calm(now: Instant) -> World {
            World {
                now,
                full: false,
                alive: HashSet::from([1, 3]),
                requesting: HashSet::from([1, 3]),
                lost: HashSet::new(),
                reports: HashMap::new(),
                cfg: cfg(),
            }
        }

        /// Node 1 went silent: lost to this node, and (`reported`) to node 3 too.
        fn leader_lost(now: Instant, reported: bool) -> World {
            World {
                alive: HashSet::from([3]),
                requesting: HashSet::from([3]),
                lost: HashSet::from([1]),
                reports: if reported {
                    HashMap::from([(3, vec![1])])
                } else {
                    HashMap::new()
                },
                ..World::calm(now)
            }
        }

        fn round(&self) -> Round<'_> {
            Round {
                me: ME,
                now: self.now,
                full: self.full,
                alive: &self.alive,
                requesting: &self.requesting,
                lost: &self.lost,
                reports: &self.reports,
                cfg: &self.cfg,
            }
        }

        fn look(&self, group: u64, r: &Fake, idle: Option<&Idle>) -> Look {
            look(group, r, idle, &self.round())
        }
    }

    fn actions(l: &Look) -> &[ScanAction] {
        &l.actions
    }

    #[test]
    fn a_quiet_follower_of_a_live_leader_is_settled_and_its_view_is_not_read() {
        let t0 = Instant::now();
        let f = quiet_follower(t0);
        let l = World::calm(t0).look(9, &f, None);
        assert_eq!(
            l,
            Look {
                actions: vec![],
                settled: true,
                idle: None
            }
        );
        assert_eq!(
            f.view_reads.get(),
            0,
            "a quiet look stays a few atomic loads"
        );
    }

    #[test]
    fn a_quiet_follower_whose_leaders_node_is_not_alive_wakes_by_its_rank() {
        let t0 = Instant::now();
        let step = cfg().election_step;
        // Nodes 2 and 3 both wake; per group one of them is the first candidate.
        for group in 0..50u64 {
            let mut delays = Vec::new();
            for me in [2, 3] {
                let mut w = World::leader_lost(t0, false);
                w.alive = HashSet::from([5 - me]);
                let mut f = quiet_follower(t0);
                f.view.me = me;
                let mut r = w.round();
                r.me = me;
                let l = look(group, &f, None, &r);
                let [ScanAction::Wake { why, reason, .. }] = l.actions.as_slice() else {
                    panic!("group {group}, node {me}: {:?}", l.actions);
                };
                assert_eq!(*reason, "leader suspected");
                let Wake::LeaderSuspected(d) = why else {
                    panic!("{why:?}")
                };
                delays.push(*d);
            }
            delays.sort();
            assert_eq!(delays, vec![Duration::ZERO, step], "group {group}");
        }
        // The other follower dead too: the survivor need not wait for it.
        let mut w = World::leader_lost(t0, false);
        w.alive.clear();
        for group in 0..20 {
            assert_eq!(
                actions(&w.look(group, &quiet_follower(t0), None)),
                [ScanAction::Wake {
                    group,
                    why: Wake::LeaderSuspected(Duration::ZERO),
                    reason: "leader suspected"
                }]
            );
        }
    }

    #[test]
    fn a_quiet_follower_whose_leader_answers_but_sends_nothing_wakes() {
        // The link from node 1 is down, the one to it up: node 1 answers this node's
        // heartbeats (alive), but its own requests, which carry its claims, never come.
        let t0 = Instant::now();
        let mut w = World::calm(t0);
        w.requesting = HashSet::from([3]);
        let l = w.look(9, &quiet_follower(t0), None);
        let [ScanAction::Wake { why, reason, .. }] = l.actions.as_slice() else {
            panic!("{:?}", l.actions);
        };
        assert_eq!(*reason, "leader suspected");
        assert!(matches!(why, Wake::LeaderSuspected(_)), "{why:?}");
        // Its requests coming again: a quiet follower stays quiet.
        assert!(
            World::calm(t0)
                .look(9, &quiet_follower(t0), None)
                .actions
                .is_empty()
        );
    }

    #[test]
    fn an_awake_follower_campaigns_only_when_a_majority_suspects_its_leaders_node() {
        let t0 = Instant::now();
        let f = follower(t0);
        // Node 3 reports node 1 too: 2 of 3 voters.
        let l = World::leader_lost(t0, true).look(9, &f, None);
        let [
            ScanAction::Campaign {
                group: 9,
                lost: 1,
                term: 3,
                delay,
            },
        ] = l.actions.as_slice()
        else {
            panic!("{:?}", l.actions);
        };
        assert!([Duration::ZERO, cfg().campaign_step].contains(delay));
        assert!(!l.settled);

        // Cut off alone: nobody else reports node 1, so no campaign (its higher term would
        // depose a healthy leader on healing).
        let alone = World::leader_lost(t0, false);
        assert_eq!(actions(&alone.look(9, &f, None)), []);
        // A report older than the detector's timeout is left out of the round's reports by
        // the gatherer; one that lists another node does not count.
        let mut other = World::leader_lost(t0, true);
        other.reports = HashMap::from([(3, vec![4])]);
        assert_eq!(actions(&other.look(9, &f, None)), []);
        // Not heard from since this node started (not lost): left to Raft's own timers.
        let mut never_heard = World::leader_lost(t0, true);
        never_heard.lost.clear();
        assert_eq!(actions(&never_heard.look(9, &f, None)), []);
        // Once per term.
        let done = Fake {
            campaigned_in: Some(3),
            ..follower(t0)
        };
        assert_eq!(
            actions(&World::leader_lost(t0, true).look(9, &done, None)),
            []
        );
        // A joint membership (no voter list) never campaigns so.
        let mut joint = follower(t0);
        joint.view.voters.clear();
        assert_eq!(
            actions(&World::leader_lost(t0, true).look(9, &joint, None)),
            []
        );
    }

    #[test]
    fn a_woken_follower_holding_its_elections_may_campaign_by_rank_once_its_leader_is_suspected() {
        let t0 = Instant::now();
        let f = Fake {
            holds_elections: true,
            ..follower(t0)
        };
        assert_eq!(actions(&World::calm(t0).look(9, &f, None)), []);
        let mut w = World::leader_lost(t0, false);
        w.alive.clear();
        w.lost.clear();
        assert_eq!(
            actions(&w.look(9, &f, None)),
            [ScanAction::ElectAfter {
                group: 9,
                delay: Duration::ZERO
            }]
        );
    }

    #[test]
    fn an_idle_leader_in_sync_claims_once_quiet_for_quiesce_after() {
        let t0 = Instant::now();
        let after = cfg().quiesce_after.unwrap();
        let l = leader(t0);
        // First look: idle since now, nothing to claim yet.
        let first = World::calm(t0).look(9, &l, None);
        let idle = Idle {
            term: 3,
            last: Some(7),
            since: t0,
        };
        assert_eq!(
            first,
            Look {
                actions: vec![],
                settled: false,
                idle: Some(idle)
            }
        );
        // Later, the log unmoved.
        let w = World::calm(t0 + after);
        let claim = Claim {
            leader: ME,
            ..CLAIM
        };
        assert_eq!(
            w.look(9, &l, Some(&idle)),
            Look {
                actions: vec![ScanAction::Claim {
                    group: 9,
                    claim,
                    targets: vec![1, 3]
                }],
                settled: false,
                idle: Some(idle)
            }
        );
        // A dead follower is not a target.
        let mut one_dead = World::calm(t0 + after);
        one_dead.alive = HashSet::from([3]);
        assert_eq!(
            actions(&one_dead.look(9, &l, Some(&idle))),
            [ScanAction::Claim {
                group: 9,
                claim,
                targets: vec![3]
            }]
        );
        // The log moved: idle again from now.
        let moved = Idle {
            last: Some(6),
            ..idle
        };
        let look = w.look(9, &l, Some(&moved));
        assert_eq!(look.actions, []);
        assert_eq!(look.idle.map(|i| i.since), Some(t0 + after));
        // Woken (by a read) since: idle from the wake.
        let woken = Fake {
            woke_at: Some(t0 + after / 2),
            ..leader(t0)
        };
        assert_eq!(actions(&w.look(9, &woken, Some(&idle))), []);
        // A follower behind, or never to quiesce: no claim.
        let mut behind = leader(t0);
        behind.view.matched = vec![(1, Some(7)), (3, Some(6))];
        assert_eq!(actions(&w.look(9, &behind, Some(&idle))), []);
        let mut never = World::calm(t0 + after);
        never.cfg.quiesce_after = None;
        assert_eq!(
            never.look(9, &l, Some(&idle)),
            Look {
                actions: vec![],
                settled: false,
                idle: None
            }
        );
        // A follower keeps no idle tracking.
        assert_eq!(w.look(9, &follower(t0), Some(&idle)).idle, None);
    }

    #[test]
    fn a_claim_unanswered_for_two_detector_timeouts_is_withdrawn() {
        let t0 = Instant::now();
        let claiming = Fake {
            kind: Kind::Claiming,
            claiming_since: Some(t0),
            ..leader(t0)
        };
        let twice = cfg().suspect_after * 2;
        let l = World::calm(t0 + twice).look(9, &claiming, None);
        assert_eq!(l.actions, []);
        assert!(!l.settled);
        assert_eq!(
            actions(&World::calm(t0 + twice + MS).look(9, &claiming, None)),
            [ScanAction::Wake {
                group: 9,
                why: Wake::Activity,
                reason: "claim unanswered"
            }]
        );
    }

    #[test]
    fn a_full_round_wakes_a_quiet_replica_whose_own_state_moved() {
        let t0 = Instant::now();
        let moved = ScanAction::Wake {
            group: 9,
            why: Wake::Activity,
            reason: "state moved",
        };
        let mut appended = quiet_follower(t0);
        appended.view.last_index = Some(8);
        let mut w = World::calm(t0);
        assert_eq!(actions(&w.look(9, &appended, None)), []);
        assert_eq!(appended.view_reads.get(), 0, "only on a full round");
        w.full = true;
        assert_eq!(
            actions(&w.look(9, &appended, None)),
            std::slice::from_ref(&moved)
        );
        assert_eq!(actions(&w.look(9, &quiet_follower(t0), None)), []);

        let quiet_leader = Fake {
            kind: Kind::Leading,
            quiet_since: Some(t0),
            leader_claim: Some(Claim {
                leader: ME,
                ..CLAIM
            }),
            ..leader(t0)
        };
        assert_eq!(actions(&w.look(9, &quiet_leader, None)), []);
        let mut stepped_down = quiet_leader;
        stepped_down.view.leading = false;
        stepped_down.view.term = 4;
        assert_eq!(actions(&w.look(9, &stepped_down, None)), [moved]);
    }

    #[test]
    fn a_quiet_partition_hibernates_once_quiet_and_running_for_hibernate_after() {
        let t0 = Instant::now();
        let after = 10_000 * MS;
        let at = |now: Instant| {
            let mut w = World::calm(now);
            w.cfg.hibernate_after = Some(after);
            w
        };
        let hibernate = ScanAction::Hibernate { group: 9 };
        let f = quiet_follower(t0);
        assert_eq!(
            at(t0 + after).look(9, &f, None),
            Look {
                actions: vec![hibernate.clone()],
                settled: false,
                idle: None
            }
        );
        // Quiet, running, but not long enough: not settled, nothing to do yet.
        let early = at(t0 + after - MS).look(9, &f, None);
        assert_eq!((early.actions.as_slice(), early.settled), (&[][..], false));
        // Started again (woken by a message, then quiet again) too recently.
        let restarted = Fake {
            running_since: Some(t0 + MS),
            ..quiet_follower(t0)
        };
        assert_eq!(actions(&at(t0 + after).look(9, &restarted, None)), []);
        // Hibernated already: settled.
        let parked = Fake {
            running_since: None,
            ..quiet_follower(t0)
        };
        assert_eq!(
            at(t0 + after).look(9, &parked, None),
            Look {
                actions: vec![],
                settled: true,
                idle: None
            }
        );
        // The metadata group never hibernates, and an awake replica does not.
        let meta = Fake {
            partition: false,
            ..quiet_follower(t0)
        };
        assert!(at(t0 + after).look(9, &meta, None).settled);
        assert_eq!(actions(&at(t0 + after).look(9, &meta, None)), []);
        let awake = at(t0 + after).look(9, &follower(t0), None);
        assert_eq!((awake.actions.as_slice(), awake.settled), (&[][..], false));
        // A quiet leader hibernates too.
        let quiet_leader = Fake {
            kind: Kind::Leading,
            quiet_since: Some(t0),
            leader_claim: Some(Claim {
                leader: ME,
                ..CLAIM
            }),
            ..leader(t0)
        };
        assert_eq!(
            actions(&at(t0 + after).look(9, &quiet_leader, None)),
            [hibernate]
        );
    }

    #[test]
    fn claims_go_to_their_targets_up_to_the_limit_per_peer() {
        let c = |group| Claim { group, ..CLAIM };
        let by_peer = claims_by_peer(
            [
                (c(1), vec![2, 3], 'a'),
                (c(2), vec![3], 'b'),
                (c(3), vec![3, 4], 'c'),
            ],
            2,
        );
        assert_eq!(by_peer[&2], vec![(c(1), 'a')]);
        assert_eq!(
            by_peer[&3],
            vec![(c(1), 'a'), (c(2), 'b')],
            "over the limit"
        );
        assert_eq!(by_peer[&4], vec![(c(3), 'c')]);
    }
}
