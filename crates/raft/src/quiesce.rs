//! Idle groups: the decisions of quiescing, as pure functions of a group's state, and the
//! per-group switch that applies them.
//!
//! A quiet group costs nothing: its leader sends no heartbeats and no replica ticks. Liveness
//! moves to one heartbeat per pair of nodes ([`crate::liveness`]). The protocol:
//!
//! - A leader that has appended nothing for `quiesce_after` and whose every live follower has
//!   matched, committed and applied its last entry **claims** the group quiet
//!   ([`leader_claim`]): its node's next heartbeats to the followers' nodes list the claim
//!   `(group, leader, term, last index)`; its own heartbeats and ticks stay on.
//! - A follower **accepts** a claim only if it matches its own state ([`follower_accepts`]):
//!   same leader and term, same last index, all of it committed. It then stops ticking, and
//!   answers that it accepted. Once every follower the claim went to has accepted, the leader
//!   stops ticking and heartbeating.
//! - The claim is a lease renewed by every node heartbeat *request* of the leader's node
//!   (answers to the follower's own heartbeats do not renew it: with the link from the leader
//!   down, they still come). A quiet follower wakes when its leader's node no longer lists
//!   the group (the leader woke, stepped down or restarted), when its leader's node is
//!   suspected (no heartbeat for an election timeout) or sends no request for that timeout
//!   plus two intervals, or when a
//!   message shows the group is active (an append with entries, a vote, a snapshot).
//! - A quiet leader wakes on a proposal, a linearizable read, a leader transfer, or any
//!   message that shows another node is active in the group.
//!
//! Safety never depends on this: quiescing only turns openraft's timers off and on, never
//! touches a vote or the log, and a refused pre-vote is a lost message. What must hold is
//! liveness, and [`Mode`] plus the wake rules keep it: a replica whose timers are off is
//! always one whose leader was alive and in sync at the last node heartbeat.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::NodeId;

/// One node's transition counter: bumped by every mode change of any of the node's replicas
/// (and by every new replica, and a hibernated one started again). Unchanged, no replica of
/// the node changed mode, so whoever skips work while nothing changed (the liveness loop) may.
/// One per node (the node, its liveness and each of its groups hold clones), so nodes sharing
/// a process (tests, the simulation) do not wake each other.
///
/// It also carries the node's election counters (for its metrics), which every group's
/// leadership watch bumps: they need the same one-per-node handle.
#[derive(Debug, Clone, Default)]
pub struct Transitions(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    transitions: AtomicU64,
    elections: AtomicU64,
    leaders: AtomicU64,
}

impl Transitions {
    /// The counter's value.
    pub fn get(&self) -> u64 {
        self.0.transitions.load(Ordering::Acquire)
    }

    /// Bumps the counter.
    pub(crate) fn note(&self) {
        self.0.transitions.fetch_add(1, Ordering::AcqRel);
    }

    /// Elections this node's replicas started (terms in which a replica here voted for
    /// itself), as their leadership watches saw them: a watch sees the latest state, so two
    /// campaigns in quick succession may count once.
    pub fn elections_started(&self) -> u64 {
        self.0.elections.load(Ordering::Relaxed)
    }

    /// Leaders this node's replicas saw elected (a later term with a known leader), whoever
    /// they are: each replica of a group counts the group's new leader once.
    pub fn leader_changes(&self) -> u64 {
        self.0.leaders.load(Ordering::Relaxed)
    }

    pub(crate) fn note_election(&self) {
        self.0.elections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_leader_change(&self) {
        self.0.leaders.fetch_add(1, Ordering::Relaxed);
    }
}

/// A group's state as its local replica sees it: the part of openraft's metrics the
/// decisions need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// This node.
    pub me: NodeId,
    /// This replica leads the group.
    pub leading: bool,
    /// This replica follows a leader.
    pub following: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    /// The voters, when the membership is a single (not joint) configuration; else empty.
    pub voters: Vec<NodeId>,
    /// On the leader: the last index each other voter has matched.
    pub matched: Vec<(NodeId, Option<u64>)>,
    /// The replica has failed (openraft stopped it).
    pub failed: bool,
}

/// A leader's statement that a group is quiet: it leads it in `term` and its log ends, fully
/// committed, at `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    pub group: u64,
    pub leader: NodeId,
    pub term: u64,
    pub index: u64,
}

/// The claim the local leader may make now, if its group is quiet: nothing appended for
/// `quiesce_after`, everything committed and applied, every follower `alive` has matched the
/// last entry, and those followers with the leader are a majority (a dead follower cannot
/// campaign; when it returns it refuses the claim until it has caught up).
pub fn leader_claim(
    group: u64,
    view: &GroupView,
    idle_for: Duration,
    quiesce_after: Duration,
    alive: impl Fn(NodeId) -> bool,
) -> Option<Claim> {
    if view.failed || !view.leading || view.leader != Some(view.me) || idle_for < quiesce_after {
        return None;
    }
    let last = view.last_index?;
    if view.committed != Some(last) || view.applied != Some(last) {
        return None;
    }
    if !view.voters.contains(&view.me) {
        return None;
    }
    let mut in_sync = 1;
    for v in view.voters.iter().filter(|v| **v != view.me) {
        if !alive(*v) {
            continue;
        }
        let matched = view
            .matched
            .iter()
            .find(|(n, _)| n == v)
            .and_then(|(_, m)| *m);
        if matched != Some(last) {
            return None;
        }
        in_sync += 1;
    }
    if in_sync * 2 <= view.voters.len() {
        return None;
    }
    // A live learner (a node catching up after `--rebuild`) gets the whole log first: a quiet
    // leader replicates nothing, and it would never catch up to become a voter again.
    let learner_behind = view
        .matched
        .iter()
        .filter(|(n, _)| *n != view.me && !view.voters.contains(n) && alive(*n))
        .any(|(_, m)| *m != Some(last));
    if learner_behind {
        return None;
    }
    Some(Claim {
        group,
        leader: view.me,
        term: view.term,
        index: last,
    })
}

/// The followers a claim goes to: the other voters that are alive.
pub fn claim_targets(view: &GroupView, alive: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
    view.voters
        .iter()
        .copied()
        .filter(|v| *v != view.me && alive(*v))
        .collect()
}

/// Whether the local follower accepts `claim`: it follows that leader in that term, and its
/// log ends at the claimed index, all committed. Anything else (a lagging log, a newer term,
/// another leader, a replica that just restarted and has not heard from the leader) refuses,
/// and the leader stays awake to sort it out.
pub fn follower_accepts(view: &GroupView, claim: &Claim) -> bool {
    !view.failed
        && view.following
        && view.me != claim.leader
        && view.leader == Some(claim.leader)
        && view.term == claim.term
        && view.last_index == Some(claim.index)
        && view.committed == Some(claim.index)
}

/// Whether a quiet replica's own state still matches the claim it is quiet under. A replica
/// whose state moved on (it stepped down, learned a newer term, appended) must wake.
pub fn still_quiet(view: &GroupView, claim: &Claim, leading: bool) -> bool {
    if view.failed || view.term != claim.term || view.last_index != Some(claim.index) {
        return false;
    }
    if leading {
        view.leading && view.leader == Some(view.me)
    } else {
        view.following && view.leader == Some(claim.leader)
    }
}

/// Whether a replica's log is settled enough to stop its instance (hibernate): it has not
/// failed, and everything it holds is committed and applied. Anything else keeps it running
/// until it is.
pub fn log_settled(view: &GroupView) -> bool {
    !view.failed && view.committed == view.last_index && view.applied == view.last_index
}

/// How long a woken follower of a group whose leader's node is suspected waits before it may
/// campaign. The live followers are ranked by a hash of (group, node), so each group has one
/// first candidate (no split votes among followers woken at the same moment) and the first
/// candidates of different groups are spread over the nodes (no pile of leaderships on the
/// lowest node id). The first waits nothing; the next waits `step` more each.
pub fn election_delay(
    group: u64,
    me: NodeId,
    voters: &[NodeId],
    dead_leader: NodeId,
    alive: impl Fn(NodeId) -> bool,
    step: Duration,
) -> Duration {
    let mut candidates: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|v| *v != dead_leader && (*v == me || alive(*v)))
        .collect();
    candidates.sort_by_key(|n| (mix(group ^ mix(*n)), *n));
    let rank = candidates.iter().position(|n| *n == me).unwrap_or(0);
    step * rank as u32
}

/// Whether a majority of a group's `voters` suspect the node of its leader `lost`: this
/// replica, `me`, which does, and each other voter whose latest report lists it
/// (`reports_lost`). A follower campaigns for a lost leader only then.
///
/// Without it, a follower cut off from every other node suspected its leader after the
/// detection timeout, campaigned (a transfer-style vote, which skips pre-vote and the
/// voters' leases) and, failing, kept the higher term; on healing the healthy leader saw that
/// term and stepped down, and every partition the follower followed stalled until a new
/// election. A node cut off hears no report, so it never has a majority; when the leader
/// really died, the other followers' reports arrive within a heartbeat of their own
/// suspicion. An empty `voters` (a joint membership) never campaigns this way: openraft's
/// own timers and pre-vote still elect.
pub fn majority_suspects(
    voters: &[NodeId],
    me: NodeId,
    lost: NodeId,
    reports_lost: impl Fn(NodeId) -> bool,
) -> bool {
    let agreeing = voters
        .iter()
        .filter(|v| **v != lost && (**v == me || reports_lost(**v)))
        .count();
    !voters.is_empty() && agreeing > voters.len() / 2
}

/// splitmix64's finalizer: a cheap, well-spread hash of a u64.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The node-level failure detector: a peer is alive while its last heartbeat (sent or
/// answered) is younger than `timeout`. A peer never heard from is not alive. Apart, when a
/// peer's own heartbeat requests last came: a quiet follower's claim is renewed only by
/// them (with the link from the leader down, the leader's answers still come).
#[derive(Debug)]
pub struct Detector {
    timeout: Duration,
    last_heard: std::collections::HashMap<NodeId, Instant>,
    /// How recent a peer's last request must be for [`Detector::is_requesting`].
    request_window: Duration,
    last_requested: std::collections::HashMap<NodeId, Instant>,
}

impl Detector {
    /// A detector with `timeout`, whose request window is the timeout too
    /// ([`Detector::requests_within`]).
    pub fn new(timeout: Duration) -> Self {
        Detector {
            timeout,
            last_heard: Default::default(),
            request_window: timeout,
            last_requested: Default::default(),
        }
    }

    /// The same detector, taking a peer as requesting while its last request is younger than
    /// `window`.
    pub fn requests_within(self, window: Duration) -> Self {
        Detector {
            request_window: window,
            ..self
        }
    }

    pub fn heard(&mut self, peer: NodeId, now: Instant) {
        latest(&mut self.last_heard, peer, now);
    }

    /// A heartbeat request of `peer` came: heard from, and its requests reach this node.
    pub fn requested(&mut self, peer: NodeId, now: Instant) {
        self.heard(peer, now);
        latest(&mut self.last_requested, peer, now);
    }

    /// Whether `peer`'s last heartbeat request is younger than the request window.
    pub fn is_requesting(&self, peer: NodeId, now: Instant) -> bool {
        self.last_requested
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.request_window)
    }

    /// The next moment a peer alive now becomes suspected, if nothing is heard from it before.
    pub fn next_suspicion(&self, now: Instant) -> Option<Instant> {
        self.last_heard
            .values()
            .map(|at| *at + self.timeout)
            .filter(|at| *at > now)
            .min()
    }

    /// Whether `peer` was heard from and has been silent since for the timeout. A peer never
    /// heard from (this node just started) is not alive, but not known to be lost either.
    pub fn went_silent(&self, peer: NodeId, now: Instant) -> bool {
        self.last_heard
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.timeout)
    }

    pub fn is_alive(&self, peer: NodeId, now: Instant) -> bool {
        self.last_heard
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.timeout)
    }
}

/// Records `now` as `peer`'s time in `times`, unless a later one is there.
fn latest(times: &mut std::collections::HashMap<NodeId, Instant>, peer: NodeId, now: Instant) {
    let at = times.entry(peer).or_insert(now);
    if *at < now {
        *at = now;
    }
}

/// What a replica's quiescing is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// openraft's timers run as usual.
    Awake,
    /// Leader: the claim is offered to `targets`; heartbeats and ticks still run until every
    /// one in `pending` has accepted.
    Claiming {
        claim: Claim,
        targets: Vec<NodeId>,
        pending: Vec<NodeId>,
        since: Instant,
    },
    /// Leader, every target accepted: no ticks, no heartbeats. The claim is renewed to
    /// `targets` with every node heartbeat.
    Leading { claim: Claim, targets: Vec<NodeId> },
    /// Follower under its leader's claim: no ticks.
    Following(Claim),
}

impl Mode {
    /// The replica's timers are off.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Mode::Leading { .. } | Mode::Following(_))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Mode::Awake => Kind::Awake,
            Mode::Claiming { .. } => Kind::Claiming,
            Mode::Leading { .. } => Kind::Leading,
            Mode::Following(_) => Kind::Following,
        }
    }
}

/// [`Mode`] without its data: readable without the lock, for the per-round look at every
/// group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Awake = 0,
    Claiming = 1,
    Leading = 2,
    Following = 3,
}

impl Kind {
    fn from_u8(v: u8) -> Kind {
        match v {
            1 => Kind::Claiming,
            2 => Kind::Leading,
            3 => Kind::Following,
            _ => Kind::Awake,
        }
    }
}

/// openraft's runtime switches of one group; a trait so that the switch can be tested without
/// a Raft. (The group's implementation also starts a hibernated group again when a switch
/// turns on, see [`crate::handle`] and `crate::lifecycle`.)
pub trait Timers: Send + Sync + 'static {
    fn set_tick(&self, on: bool);
    fn set_heartbeat(&self, on: bool);
    fn set_elect(&self, on: bool);
}

/// Why a quiet replica wakes, which decides when a follower may campaign again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Traffic, or the leader woke: the leader is presumably alive, so a follower lets a full
    /// election timeout pass (for the leader's messages to renew its lease) before it may
    /// campaign.
    Activity,
    /// The leader's node is suspected: a follower may campaign after this delay.
    LeaderSuspected(Duration),
}

/// One replica's quiescing state and the timers it drives. Every transition and its timer
/// changes happen under one lock, so a wake racing a quiesce cannot leave the timers off in
/// the `Awake` mode.
pub struct Quiescence {
    group: u64,
    // A short critical section around a few atomic stores and a watch send: no await inside.
    state: Mutex<State>,
    /// Mirrors of the mode, written under the lock, read without it: the mode's kind, the
    /// leader followed (0 unless following), and a counter bumped by every transition.
    kind: AtomicU8,
    followed: AtomicU64,
    epoch: AtomicU64,
    /// The term whose leader's loss this replica last scheduled a campaign for, plus one (0:
    /// none).
    campaign_term: AtomicU64,
    timers: Box<dyn Timers>,
    /// How long a follower woken by activity waits before it may campaign.
    activity_grace: Duration,
    /// The node's transition counter.
    transitions: Transitions,
}

struct State {
    mode: Mode,
    /// A woken follower's elections are held until then: it neither campaigns nor grants
    /// pre-votes, as a Raft follower that heard from its leader within an election timeout
    /// would not.
    held_until: Option<Instant>,
    /// Bumped by every wake, so a delayed "may campaign" from an older wake is ignored.
    wakes: u64,
    /// When the replica last woke: a leader woken by a read stays awake `quiesce_after` too.
    woke_at: Option<Instant>,
    /// When the mode last changed.
    changed_at: Instant,
    /// The term in which this replica, as leader, started a leader transfer. openraft's
    /// leader never abandons a transfer: until another node is elected it stops heartbeating
    /// and forwards every write to the target. So the group must not go quiet in that term:
    /// its followers' election timers are what end a transfer to a node that is gone.
    transfer_term: Option<u64>,
}

impl Quiescence {
    pub fn new(
        group: u64,
        timers: impl Timers,
        activity_grace: Duration,
        transitions: Transitions,
    ) -> Arc<Self> {
        // A new replica is awake: whoever skips work while nothing changed must look again.
        transitions.note();
        Arc::new(Quiescence {
            group,
            state: Mutex::new(State {
                mode: Mode::Awake,
                held_until: None,
                wakes: 0,
                woke_at: None,
                changed_at: Instant::now(),
                transfer_term: None,
            }),
            kind: AtomicU8::new(Kind::Awake as u8),
            followed: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            campaign_term: AtomicU64::new(0),
            timers: Box::new(timers),
            activity_grace,
            transitions,
        })
    }

    /// Every mode change goes through here, so the mirrors stay in step.
    fn set_mode(&self, st: &mut State, mode: Mode) {
        let followed = match &mode {
            Mode::Following(c) => c.leader,
            _ => 0,
        };
        self.kind.store(mode.kind() as u8, Ordering::Release);
        self.followed.store(followed, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.transitions.note();
        st.mode = mode;
        st.changed_at = Instant::now();
    }

    /// Since when the replica is quiet (leading or following a claim), if it is.
    pub fn quiet_since(&self) -> Option<Instant> {
        let st = self.state.lock().unwrap();
        st.mode.is_quiet().then_some(st.changed_at)
    }

    /// Since when the replica offers its claim, while it is claiming.
    pub fn claiming_since(&self) -> Option<Instant> {
        match self.state.lock().unwrap().mode {
            Mode::Claiming { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Whether a campaign for the loss of the leader of `term` is still to be scheduled: true
    /// once per term.
    pub fn campaign_due(&self, term: u64) -> bool {
        self.campaign_term.swap(term + 1, Ordering::AcqRel) != term + 1
    }

    /// Whether a campaign for the loss of the leader of `term` was scheduled
    /// ([`Quiescence::campaign_due`] returned true for it last).
    pub fn campaigned_in(&self, term: u64) -> bool {
        self.campaign_term.load(Ordering::Acquire) == term + 1
    }

    /// The mode's kind, without the lock.
    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.kind.load(Ordering::Acquire))
    }

    /// The leader this replica follows quietly, without the lock.
    pub fn followed_leader(&self) -> Option<NodeId> {
        match self.followed.load(Ordering::Acquire) {
            0 => None,
            l => Some(l),
        }
    }

    /// Bumped by every mode change: an unchanged epoch means an unchanged mode.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn mode(&self) -> Mode {
        self.state.lock().unwrap().mode.clone()
    }

    pub fn is_quiet(&self) -> bool {
        self.state.lock().unwrap().mode.is_quiet()
    }

    /// Whether a pre-vote must be refused: the replica is quiet (its leader was alive at the
    /// last node heartbeat), or woke and holds its elections (it has not waited out its
    /// delay). Refusing is safe: to the candidate it is a lost message.
    pub fn refuses_pre_vote(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.mode.is_quiet() || st.held_until.is_some()
    }

    /// Whether a woken follower still holds its elections.
    pub fn holds_elections(&self) -> bool {
        self.state.lock().unwrap().held_until.is_some()
    }

    /// When the replica last woke from quiet or from a claim.
    pub fn woke_at(&self) -> Option<Instant> {
        self.state.lock().unwrap().woke_at
    }

    /// The leader starts a leader transfer in `term`: wakes, and stays awake for that term.
    pub fn transfer_started(self: &Arc<Self>, term: u64) {
        let mut st = self.state.lock().unwrap();
        st.transfer_term = Some(term);
        self.wake_locked(&mut st, Wake::Activity, "leader transfer");
    }

    /// Whether this replica started a leader transfer in `term` (then it must not claim).
    pub fn transferring_in(&self, term: u64) -> bool {
        self.state.lock().unwrap().transfer_term == Some(term)
    }

    /// Leader: starts offering `claim` to `targets` (from `Awake` only). With no follower to
    /// ask (a single-replica group), the group is quiet at once.
    pub fn claim(&self, claim: Claim, targets: Vec<NodeId>, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.mode != Mode::Awake || st.transfer_term == Some(claim.term) {
            return false;
        }
        // A follower woken with its elections held, elected since (a leader transfer), and
        // now going quiet as leader: the hold ends here. Kept, it would outlive its timer
        // (which acts only on an awake replica) and this replica, a follower again one day,
        // would never campaign and would refuse every pre-vote.
        self.end_hold(&mut st);
        if targets.is_empty() {
            self.set_mode(&mut st, Mode::Leading { claim, targets });
            self.timers.set_heartbeat(false);
            self.timers.set_tick(false);
        } else {
            let pending = targets.clone();
            self.set_mode(
                &mut st,
                Mode::Claiming {
                    claim,
                    pending,
                    targets,
                    since: now,
                },
            );
        }
        true
    }

    /// Leader: `follower` accepted `claim`. Once all targets have, heartbeats and ticks stop;
    /// `true` then.
    pub fn accepted(&self, claim: &Claim, follower: NodeId) -> bool {
        let mut st = self.state.lock().unwrap();
        let Mode::Claiming {
            claim: c,
            targets,
            pending,
            ..
        } = &mut st.mode
        else {
            return false;
        };
        if c != claim {
            return false;
        }
        pending.retain(|n| *n != follower);
        if !pending.is_empty() {
            return false;
        }
        let targets = std::mem::take(targets);
        self.set_mode(
            &mut st,
            Mode::Leading {
                claim: *claim,
                targets,
            },
        );
        self.timers.set_heartbeat(false);
        self.timers.set_tick(false);
        true
    }

    /// Follower: goes quiet under `claim` (the caller checked [`follower_accepts`]). A
    /// replica still marked as leading has stepped down since: its leader-only switch is
    /// turned back on for when it leads again.
    pub fn follow(&self, claim: Claim) {
        let mut st = self.state.lock().unwrap();
        match &st.mode {
            Mode::Following(c) if *c == claim => {}
            was => {
                if matches!(was, Mode::Leading { .. }) {
                    self.timers.set_heartbeat(true);
                }
                self.set_mode(&mut st, Mode::Following(claim));
                self.timers.set_tick(false);
            }
        }
    }

    /// The claim this replica offers or holds as leader, and to whom.
    pub fn leader_claim(&self) -> Option<(Claim, Vec<NodeId>)> {
        match &self.state.lock().unwrap().mode {
            Mode::Claiming { claim, targets, .. } | Mode::Leading { claim, targets } => {
                Some((*claim, targets.clone()))
            }
            _ => None,
        }
    }

    /// The claim this replica follows, if it is a quiet follower.
    pub fn followed_claim(&self) -> Option<Claim> {
        match &self.state.lock().unwrap().mode {
            Mode::Following(claim) => Some(*claim),
            _ => None,
        }
    }

    /// Wakes the replica if it leads (a claim offered or held): before a proposal, a
    /// linearizable read or a leader transfer. A follower is left alone: it is not the one
    /// to serve these.
    pub fn wake_leader(self: &Arc<Self>, reason: &'static str) -> bool {
        let mut st = self.state.lock().unwrap();
        match st.mode {
            Mode::Claiming { .. } | Mode::Leading { .. } => {
                self.wake_locked(&mut st, Wake::Activity, reason)
            }
            _ => false,
        }
    }

    /// Wakes the replica: its timers run again. For a follower, elections resume after the
    /// delay `why` implies. Returns whether it was not awake.
    /// `reason` is for the logs.
    pub fn wake(self: &Arc<Self>, why: Wake, reason: &'static str) -> bool {
        let mut st = self.state.lock().unwrap();
        self.wake_locked(&mut st, why, reason)
    }

    fn wake_locked(self: &Arc<Self>, st: &mut State, why: Wake, reason: &'static str) -> bool {
        if st.mode == Mode::Awake {
            return false;
        }
        let was = st.mode.clone();
        self.set_mode(st, Mode::Awake);
        tracing::debug!(group = self.group, from = ?was, ?why, reason, "wake");
        st.wakes += 1;
        st.woke_at = Some(Instant::now());
        match was {
            Mode::Awake | Mode::Claiming { .. } => {}
            Mode::Leading { .. } => {
                self.timers.set_heartbeat(true);
                self.timers.set_tick(true);
            }
            Mode::Following(_) => {
                let delay = match why {
                    Wake::Activity => self.activity_grace,
                    Wake::LeaderSuspected(d) => d,
                };
                self.hold_elections(st, delay);
                self.timers.set_tick(true);
            }
        }
        true
    }

    /// An awake follower holding its elections learns that its leader's node is suspected:
    /// it may campaign after `delay` if that ends its hold sooner.
    pub fn leader_suspected(self: &Arc<Self>, delay: Duration) -> bool {
        let mut st = self.state.lock().unwrap();
        let sooner = st
            .held_until
            .is_some_and(|until| Instant::now() + delay < until);
        if st.mode != Mode::Awake || !sooner {
            return false;
        }
        st.wakes += 1;
        self.hold_elections(&mut st, delay);
        true
    }

    /// Holds elections for `delay` (none: enables them now).
    fn hold_elections(self: &Arc<Self>, st: &mut State, delay: Duration) {
        if delay.is_zero() {
            st.held_until = None;
            self.timers.set_elect(true);
            return;
        }
        st.held_until = Some(Instant::now() + delay);
        self.timers.set_elect(false);
        let me = self.clone();
        let wakes = st.wakes;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            me.may_campaign(wakes);
        });
    }

    /// Re-enables elections after a wake's delay, unless the replica woke again since (a
    /// later hold decides) or is a quiet follower again (its next wake holds anew).
    fn may_campaign(&self, wakes: u64) {
        let mut st = self.state.lock().unwrap();
        if st.wakes == wakes && !matches!(st.mode, Mode::Following(_)) {
            self.end_hold(&mut st);
        }
    }

    /// Ends any hold of elections: they are on, pre-votes are answered.
    fn end_hold(&self, st: &mut State) {
        if st.held_until.take().is_some() {
            self.timers.set_elect(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_follower_cut_off_alone_never_has_a_majority_against_its_leader() {
        // Node 3 hears nobody: no report lists leader 1.
        assert!(!majority_suspects(&[1, 2, 3], 3, 1, |_| false));
        // Node 2 still hears leader 1 and says nothing against it.
        assert!(!majority_suspects(&[1, 2, 3], 3, 1, |n| n == 1));
        // The leader died: node 2 reports it too.
        assert!(majority_suspects(&[1, 2, 3], 3, 1, |n| n == 2));
        // The leader's own word does not count against itself.
        assert!(!majority_suspects(&[1, 2, 3], 3, 1, |n| n == 1 || n == 3));
        // Five voters: this one and two others (3 of 5).
        assert!(!majority_suspects(&[1, 2, 3, 4, 5], 2, 1, |n| n == 3));
        assert!(majority_suspects(&[1, 2, 3, 4, 5], 2, 1, |n| n == 3 || n == 5));
        // A single-voter group, or a joint membership (no voter list), never campaigns so.
        assert!(!majority_suspects(&[], 2, 1, |_| true));
        // Two voters: the survivor alone is no majority.
        assert!(!majority_suspects(&[1, 2], 2, 1, |_| true));
    }

    fn leader_view() -> GroupView {
        GroupView {
            me: 1,
            leading: true,
            following: false,
            leader: Some(1),
            term: 3,
            last_index: Some(7),
            committed: Some(7),
            applied: Some(7),
            voters: vec![1, 2, 3],
            matched: vec![(2, Some(7)), (3, Some(7))],
            failed: false,
        }
    }

    fn follower_view() -> GroupView {
        GroupView {
            me: 2,
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
        }
    }

    const AFTER: Duration = Duration::from_secs(1);
    const CLAIM: Claim = Claim {
        group: 9,
        leader: 1,
        term: 3,
        index: 7,
    };

    #[test]
    fn an_idle_leader_in_sync_claims() {
        let v = leader_view();
        assert_eq!(leader_claim(9, &v, AFTER, AFTER, |_| true), Some(CLAIM));
        assert_eq!(claim_targets(&v, |_| true), vec![2, 3]);
    }

    #[test]
    fn a_leader_does_not_claim_while_busy_or_behind() {
        let v = leader_view();
        assert_eq!(
            leader_claim(9, &v, AFTER / 2, AFTER, |_| true),
            None,
            "not idle long enough"
        );
        let mut lagging = v.clone();
        // A live learner behind keeps the group awake; a dead one does not.
        let mut learner = v.clone();
        learner.matched.push((4, Some(3)));
        assert_eq!(leader_claim(9, &learner, AFTER, AFTER, |_| true), None);
        assert_eq!(
            leader_claim(9, &learner, AFTER, AFTER, |n| n != 4),
            Some(CLAIM)
        );
        lagging.matched = vec![(2, Some(7)), (3, Some(6))];
        assert_eq!(leader_claim(9, &lagging, AFTER, AFTER, |_| true), None);
        let mut uncommitted = v.clone();
        uncommitted.committed = Some(6);
        assert_eq!(leader_claim(9, &uncommitted, AFTER, AFTER, |_| true), None);
        let mut unapplied = v.clone();
        unapplied.applied = Some(6);
        assert_eq!(leader_claim(9, &unapplied, AFTER, AFTER, |_| true), None);
        let mut follower = v.clone();
        follower.leading = false;
        assert_eq!(leader_claim(9, &follower, AFTER, AFTER, |_| true), None);
        let mut joint = v.clone();
        joint.voters.clear();
        assert_eq!(leader_claim(9, &joint, AFTER, AFTER, |_| true), None);
        let mut failed = v;
        failed.failed = true;
        assert_eq!(leader_claim(9, &failed, AFTER, AFTER, |_| true), None);
    }

    #[test]
    fn a_replica_hibernates_only_with_its_log_all_committed_and_applied() {
        assert!(log_settled(&leader_view()));
        assert!(log_settled(&GroupView::default()), "an empty log");
        let mut uncommitted = follower_view();
        uncommitted.last_index = Some(8);
        assert!(!log_settled(&uncommitted));
        let mut unapplied = follower_view();
        unapplied.applied = Some(6);
        assert!(!log_settled(&unapplied));
        let mut failed = follower_view();
        failed.failed = true;
        assert!(!log_settled(&failed));
    }

    #[test]
    fn a_dead_follower_is_skipped_but_a_majority_must_be_in_sync() {
        let mut v = leader_view();
        v.matched = vec![(2, Some(7)), (3, Some(2))];
        // Node 3 is down and behind: 1 and 2 are a majority in sync.
        assert_eq!(leader_claim(9, &v, AFTER, AFTER, |n| n != 3), Some(CLAIM));
        assert_eq!(claim_targets(&v, |n| n != 3), vec![2]);
        // Both followers down: no majority.
        assert_eq!(leader_claim(9, &v, AFTER, AFTER, |_| false), None);
    }

    #[test]
    fn a_follower_accepts_only_a_claim_matching_its_state() {
        let v = follower_view();
        assert!(follower_accepts(&v, &CLAIM));
        type Change = fn(&mut GroupView);
        let cases: [(&str, Change); 6] = [
            ("behind", |v| v.last_index = Some(6)),
            ("uncommitted", |v| v.committed = Some(6)),
            ("newer term", |v| v.term = 4),
            ("other leader", |v| v.leader = Some(3)),
            ("restarted, no leader known", |v| v.leader = None),
            ("candidate", |v| v.following = false),
        ];
        for (what, change) in cases {
            let mut v = follower_view();
            change(&mut v);
            assert!(!follower_accepts(&v, &CLAIM), "{what}: accepted");
        }
        let mut ahead = follower_view();
        ahead.last_index = Some(8);
        ahead.committed = Some(7);
        assert!(
            !follower_accepts(&ahead, &CLAIM),
            "an appended entry refuses"
        );
    }

    #[test]
    fn a_quiet_replica_whose_state_moved_must_wake() {
        assert!(still_quiet(&leader_view(), &CLAIM, true));
        assert!(still_quiet(&follower_view(), &CLAIM, false));
        let mut stepped_down = leader_view();
        stepped_down.leading = false;
        stepped_down.term = 4;
        assert!(!still_quiet(&stepped_down, &CLAIM, true));
        let mut appended = follower_view();
        appended.last_index = Some(8);
        assert!(!still_quiet(&appended, &CLAIM, false));
        let mut new_leader = follower_view();
        new_leader.leader = Some(3);
        assert!(!still_quiet(&new_leader, &CLAIM, false));
    }

    #[test]
    fn one_first_candidate_per_group_and_spread_over_nodes() {
        let step = Duration::from_millis(300);
        let mut first = std::collections::BTreeMap::new();
        for group in 0..300u64 {
            let delays: Vec<Duration> = [2, 3]
                .iter()
                .map(|me| election_delay(group, *me, &[1, 2, 3], 1, |_| true, step))
                .collect();
            let mut sorted = delays.clone();
            sorted.sort();
            assert_eq!(sorted, vec![Duration::ZERO, step], "group {group}");
            let who = if delays[0].is_zero() { 2 } else { 3 };
            *first.entry(who).or_insert(0) += 1;
        }
        assert!(
            first.values().all(|n| *n > 100),
            "first candidates not spread: {first:?}"
        );
        // A dead other follower does not hold the survivor back.
        assert_eq!(
            election_delay(5, 2, &[1, 2, 3], 1, |n| n != 3, step),
            Duration::ZERO
        );
    }

    #[test]
    fn the_detector_suspects_after_its_timeout() {
        let t0 = Instant::now();
        let mut d = Detector::new(Duration::from_millis(600));
        assert!(!d.is_alive(2, t0), "never heard from");
        d.heard(2, t0);
        assert!(d.is_alive(2, t0 + Duration::from_millis(599)));
        assert!(!d.is_alive(2, t0 + Duration::from_millis(600)));
        d.heard(2, t0 + Duration::from_millis(700));
        assert!(d.is_alive(2, t0 + Duration::from_millis(800)));
        // An older report does not move the clock back.
        d.heard(2, t0);
        assert!(d.is_alive(2, t0 + Duration::from_millis(800)));
    }

    #[test]
    fn the_detector_knows_its_next_suspicion() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Detector::new(ms(600));
        assert_eq!(d.next_suspicion(t0), None, "nobody heard from");
        d.heard(2, t0);
        d.heard(3, t0 + ms(100));
        assert_eq!(d.next_suspicion(t0), Some(t0 + ms(600)));
        // Peers already suspected are not suspected again.
        assert_eq!(d.next_suspicion(t0 + ms(600)), Some(t0 + ms(700)));
        assert_eq!(d.next_suspicion(t0 + ms(700)), None);
        assert!(!d.went_silent(2, t0 + ms(599)));
        assert!(d.went_silent(2, t0 + ms(600)));
        assert!(
            !d.went_silent(4, t0 + ms(600)),
            "never heard from: not known lost"
        );
    }

    #[test]
    fn only_a_peer_s_own_requests_count_as_its_requests() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Detector::new(ms(600)).requests_within(ms(1_000));
        d.heard(2, t0);
        assert!(
            d.is_alive(2, t0) && !d.is_requesting(2, t0),
            "an answer only"
        );
        d.requested(3, t0);
        assert!(d.is_alive(3, t0) && d.is_requesting(3, t0));
        assert!(!d.is_alive(3, t0 + ms(700)) && d.is_requesting(3, t0 + ms(700)));
        assert!(!d.is_requesting(3, t0 + ms(1_000)));
    }

    #[test]
    fn a_lost_leader_is_campaigned_for_once_per_term() {
        let q = Quiescence::new(
            9,
            Fake::on(),
            Duration::from_millis(600),
            Transitions::default(),
        );
        assert!(q.campaign_due(0), "term 0 counts as a term");
        assert!(!q.campaign_due(0));
        assert!(q.campaign_due(4));
        assert!(!q.campaign_due(4));
        assert!(q.campaign_due(5));
    }

    #[derive(Clone, Default)]
    struct Fake {
        tick: Arc<AtomicBool>,
        heartbeat: Arc<AtomicBool>,
        elect: Arc<AtomicBool>,
    }

    impl Fake {
        fn on() -> Self {
            let f = Fake::default();
            f.tick.store(true, Ordering::SeqCst);
            f.heartbeat.store(true, Ordering::SeqCst);
            f.elect.store(true, Ordering::SeqCst);
            f
        }
        fn get(&self) -> (bool, bool, bool) {
            (
                self.tick.load(Ordering::SeqCst),
                self.heartbeat.load(Ordering::SeqCst),
                self.elect.load(Ordering::SeqCst),
            )
        }
    }

    impl Timers for Fake {
        fn set_tick(&self, on: bool) {
            self.tick.store(on, Ordering::SeqCst);
        }
        fn set_heartbeat(&self, on: bool) {
            self.heartbeat.store(on, Ordering::SeqCst);
        }
        fn set_elect(&self, on: bool) {
            self.elect.store(on, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_leader_stops_its_timers_only_once_every_follower_accepted() {
        let f = Fake::on();
        let q = Quiescence::new(
            9,
            f.clone(),
            Duration::from_millis(600),
            Transitions::default(),
        );
        assert!(q.claim(CLAIM, vec![2, 3], Instant::now()));
        assert!(!q.is_quiet());
        assert!(!q.accepted(&CLAIM, 2));
        assert_eq!(f.get(), (true, true, true), "one follower left");
        let other = Claim { index: 8, ..CLAIM };
        assert!(!q.accepted(&other, 3), "an acceptance of another claim");
        assert!(q.accepted(&CLAIM, 3));
        assert!(q.is_quiet());
        assert_eq!(f.get(), (false, false, true));
        assert!(q.wake(Wake::Activity, "test"));
        assert_eq!(f.get(), (true, true, true));
        assert!(!q.wake(Wake::Activity, "test"), "already awake");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_woken_by_activity_campaigns_only_after_the_grace() {
        let f = Fake::on();
        let grace = Duration::from_millis(600);
        let q = Quiescence::new(9, f.clone(), grace, Transitions::default());
        q.follow(CLAIM);
        assert_eq!(f.get(), (false, true, true));
        assert!(q.refuses_pre_vote(), "quiet");
        assert!(q.wake(Wake::Activity, "test"));
        assert_eq!(f.get(), (true, true, false), "ticking, not campaigning");
        assert!(q.refuses_pre_vote(), "holding its elections");
        tokio::time::sleep(grace + Duration::from_millis(1)).await;
        assert_eq!(f.get(), (true, true, true));
        assert!(!q.refuses_pre_vote());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_does_not_outlive_a_transfer_that_made_the_follower_leader() {
        let f = Fake::on();
        let grace = Duration::from_millis(1200);
        let q = Quiescence::new(9, f.clone(), grace, Transitions::default());
        q.follow(CLAIM);
        // Woken by the transfer's message: elections held.
        assert!(q.wake(Wake::Activity, "test"));
        assert!(q.holds_elections());
        // Elected by the transfer, idle: it goes quiet as leader before the hold's end.
        let led = Claim { term: 2, ..CLAIM };
        assert!(q.claim(led, vec![2, 3], Instant::now()));
        assert!(!q.holds_elections(), "a leader holds no elections");
        assert!(q.accepted(&led, 2) || q.accepted(&led, 3));
        tokio::time::sleep(grace + Duration::from_millis(1)).await;
        // Woken as leader, then a follower again (deposed while awake): it campaigns and
        // answers pre-votes.
        assert!(q.wake(Wake::Activity, "test"));
        assert_eq!(f.get(), (true, true, true));
        assert!(!q.refuses_pre_vote());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_ends_at_its_timer_even_if_the_replica_claimed_meanwhile() {
        let f = Fake::on();
        let grace = Duration::from_millis(1200);
        let q = Quiescence::new(9, f.clone(), grace, Transitions::default());
        q.follow(CLAIM);
        assert!(q.wake(Wake::Activity, "test"));
        // The timer's end, with the replica not awake (a claim offered): the hold ends.
        {
            let mut st = q.state.lock().unwrap();
            q.set_mode(
                &mut st,
                Mode::Claiming {
                    claim: CLAIM,
                    pending: vec![2],
                    targets: vec![2],
                    since: Instant::now(),
                },
            );
        }
        tokio::time::sleep(grace + Duration::from_millis(1)).await;
        assert!(!q.holds_elections());
        assert!(f.get().2, "elections on");
    }

    #[tokio::test(start_paused = true)]
    async fn suspicion_of_the_leader_cuts_a_hold_short() {
        let f = Fake::on();
        let grace = Duration::from_millis(1200);
        let q = Quiescence::new(9, f.clone(), grace, Transitions::default());
        q.follow(CLAIM);
        q.wake(Wake::Activity, "test");
        assert!(q.holds_elections());
        let step = Duration::from_millis(300);
        assert!(q.leader_suspected(step));
        // Told again (every round while the leader stays suspected): the hold is not pushed
        // back.
        tokio::time::sleep(step / 2).await;
        assert!(!q.leader_suspected(step));
        tokio::time::sleep(step / 2 + Duration::from_millis(1)).await;
        assert_eq!(
            f.get(),
            (true, true, true),
            "may campaign after its rank's delay"
        );
        assert!(!q.holds_elections());
        // The first hold's end changes nothing any more.
        tokio::time::sleep(grace).await;
        assert_eq!(f.get(), (true, true, true));
        assert!(!q.leader_suspected(step), "no hold to cut short");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_grace_does_not_enable_elections_of_a_quiet_follower() {
        let f = Fake::on();
        let grace = Duration::from_millis(600);
        let q = Quiescence::new(9, f.clone(), grace, Transitions::default());
        q.follow(CLAIM);
        q.wake(Wake::Activity, "test");
        q.follow(CLAIM);
        tokio::time::sleep(grace * 2).await;
        assert_eq!(f.get(), (false, true, false), "quiet again: no ticks");
        // Suspicion of the leader: campaign at once.
        q.wake(Wake::LeaderSuspected(Duration::ZERO), "test");
        assert_eq!(f.get(), (true, true, true));
    }

    #[tokio::test]
    async fn a_leader_that_started_a_transfer_never_claims_in_that_term() {
        let f = Fake::on();
        let q = Quiescence::new(
            9,
            f.clone(),
            Duration::from_millis(600),
            Transitions::default(),
        );
        assert!(q.claim(CLAIM, vec![2, 3], Instant::now()));
        q.accepted(&CLAIM, 2);
        assert!(q.accepted(&CLAIM, 3));
        q.transfer_started(CLAIM.term);
        assert_eq!(q.mode(), Mode::Awake);
        assert_eq!(f.get(), (true, true, true));
        assert!(q.transferring_in(CLAIM.term));
        assert!(!q.claim(CLAIM, vec![2, 3], Instant::now()));
        // Leading again in a later term (the transfer ended with an election), it may.
        let later = Claim { term: 5, ..CLAIM };
        assert!(q.claim(later, vec![2, 3], Instant::now()));
    }

    #[tokio::test]
    async fn a_quiet_leader_that_stepped_down_can_follow() {
        let f = Fake::on();
        let q = Quiescence::new(
            9,
            f.clone(),
            Duration::from_millis(600),
            Transitions::default(),
        );
        q.claim(CLAIM, vec![], Instant::now());
        assert_eq!(
            f.get(),
            (false, false, true),
            "single replica: quiet at once"
        );
        let newer = Claim {
            leader: 2,
            term: 4,
            ..CLAIM
        };
        q.follow(newer);
        assert_eq!(q.mode(), Mode::Following(newer));
        assert_eq!(
            f.get(),
            (false, true, true),
            "heartbeats back on for when it leads"
        );
    }
}
