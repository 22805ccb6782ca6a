//! Node-level liveness: one heartbeat per peer node per heartbeat interval, whatever the number
//! of groups, a failure detector over them, and the claims of quiet groups they carry. The
//! decisions are in [`crate::quiesce`] (a group's claim, acceptance, rank), [`crate::scan`]
//! (what a round's look does to each group) and [`crate::claims`] (the answer to a list of
//! claims or to its bare version, and what an answer does); this module gathers their inputs
//! and performs them.
//!
//! Every interval, [`Liveness::run`]:
//! 1. looks at every partition group on this node, by its mode's kind (an atomic load, so an
//!    idle node's round costs a few microseconds): an idle leader in sync claims its group
//!    quiet; a quiet follower whose leader's node is suspected wakes and may campaign (after
//!    a delay that gives each group one first candidate); a claim not accepted within two
//!    detector timeouts is withdrawn; every [`FULL_CHECK_ROUNDS`] rounds, a quiet replica whose
//!    own state moved on wakes (a safety net: the message hooks in [`crate::group`] catch
//!    these first);
//! 2. sends each peer a heartbeat with the version of the claims it is a target of, and the
//!    list itself only when the peer does not hold that version; applies the answers: of a
//!    whole list, an accepted claim counts towards quiet and a refused one wakes its group.
//!
//! [`Liveness::serve`] answers a peer's heartbeat: the peer is alive; a whole list is applied
//! (each claim accepted, the follower going quiet, or refused; a group quiet under that peer
//! and left out of the list wakes) and remembered; a bare version is checked against the
//! remembered one. Idle, a heartbeat costs the same whatever the number of groups.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::NodeId;
use crate::claims::{self, ClaimVerdict, Quiet, Remembered, ReplyAction};
use crate::group::{AnyGroup, GroupRegistry};
use crate::handle::Leadership;
use crate::peer::PeerPool;
use crate::peer::wire::{NodeHeartbeat, NodeHeartbeatReply, QuietGroup};
use crate::quiesce::{
    Claim, Detector, GroupView, Kind, Quiescence, Transitions, Wake, majority_suspects,
};
use crate::scan::{self, Idle, Round, ScanAction};

/// Rounds between two looks at every quiet replica's own state (the safety net).
pub const FULL_CHECK_ROUNDS: u64 = 100;
/// Claims in one heartbeat, at most (about 15 bytes each, far below the 4 MiB message limit).
/// A claim left out is not renewed, and its followers wake: more quiet groups per node pair
/// than this cannot stay quiet.
pub const MAX_CLAIMS_PER_HEARTBEAT: usize = 100_000;

/// Timing of the node-level heartbeats and of quiescing.
#[derive(Debug, Clone)]
pub struct LivenessConfig {
    /// Heartbeat period, per peer.
    pub interval: Duration,
    /// A peer is suspected after this long without a heartbeat from it (or an answer to one).
    pub suspect_after: Duration,
    /// A partition group whose leader appended nothing for this long goes quiet; `None`: never.
    pub quiesce_after: Option<Duration>,
    /// Between the first and the next candidate of a quiet group whose leader's node is
    /// suspected.
    pub election_step: Duration,
    /// Between the first and the next candidate of an awake group whose leader's node is
    /// suspected (they campaign at once, see [`crate::PartitionHandle`]'s
    /// `campaign_for_lost_leader`; a failed campaign costs one vote round, not a timeout).
    pub campaign_step: Duration,
    /// A partition replica quiet for this long hibernates: its Raft instance stops until
    /// something needs it ([`crate::handle::GroupRaft::hibernate`]); `None`: never.
    pub hibernate_after: Option<Duration>,
}

/// How many of this node's partition replicas are quiet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuietCounts {
    pub replicas: u32,
    pub quiet: u32,
    /// Replicas that lead their group.
    pub leading: u32,
    /// Quiet replicas whose Raft instance is stopped until something needs it.
    pub hibernated: u32,
}

/// A claim and the switch of the group it is about.
type ClaimOf = (Claim, Arc<Quiescence>);

/// The node-level heartbeat and the quiescing it drives.
pub struct Liveness {
    me: NodeId,
    /// The node's transition counter (see [`Transitions`]).
    transitions: Transitions,
    cfg: LivenessConfig,
    registry: Arc<GroupRegistry>,
    pool: Arc<PeerPool>,
    // The locks below guard short sections (map updates and lookups), no await inside.
    detector: Mutex<Detector>,
    /// Leader side: the version of our claims each peer holds (from its last answer).
    acked: Mutex<HashMap<NodeId, u64>>,
    /// Follower side: per leader, the version of its claims last applied and the groups that
    /// went quiet under them, with their epochs then.
    followed: Mutex<HashMap<NodeId, Followed>>,
    /// A hibernation sweep is running.
    sweeping: Arc<AtomicBool>,
    /// The nodes this node's detector suspects, as sent in heartbeats and answers.
    suspects: Mutex<Vec<NodeId>>,
    /// Each peer's latest word on whom it suspects, and when it came.
    reports: Mutex<HashMap<NodeId, Report>>,
    /// Bumped when a peer's report changes: the next look at the groups must not be skipped.
    reports_changed: AtomicU64,
    /// Wakes the heartbeat loop when a peer's report changes (a campaign may now be due).
    reported: tokio::sync::Notify,
}

/// A peer's latest list of the nodes it suspects.
struct Report {
    at: Instant,
    suspects: Vec<NodeId>,
}

/// Follower side: what this node remembers of a leader's last whole list of claims.
type Followed = Remembered<Arc<Quiescence>>;

impl claims::Epoch for Arc<Quiescence> {
    fn epoch(&self) -> u64 {
        Quiescence::epoch(self)
    }
}

impl claims::Follower for AnyGroup {
    fn followed_claim(&self) -> Option<Claim> {
        self.quiescence().followed_claim()
    }
    fn view(&self) -> GroupView {
        AnyGroup::view(self)
    }
}

/// The claims this node makes, by target peer, and their version.
#[derive(Default)]
struct Claims {
    version: u64,
    by_peer: HashMap<NodeId, Arc<Vec<ClaimOf>>>,
}

/// What a look performed, for the logs, and the groups to hibernate after it.
#[derive(Default)]
struct Done {
    suspicion_wakes: u32,
    campaigns: u32,
    to_hibernate: Vec<AnyGroup>,
}

/// A live group, as a look reads it.
struct Group<'a>(&'a AnyGroup);

impl scan::Replica for Group<'_> {
    fn kind(&self) -> Kind {
        self.0.quiescence().kind()
    }
    fn is_partition(&self) -> bool {
        matches!(self.0, AnyGroup::Partition(_))
    }
    fn running_since(&self) -> Option<Instant> {
        self.0.running_since()
    }
    fn quiet_since(&self) -> Option<Instant> {
        self.0.quiescence().quiet_since()
    }
    fn followed_leader(&self) -> Option<NodeId> {
        self.0.quiescence().followed_leader()
    }
    fn followed_claim(&self) -> Option<Claim> {
        self.0.quiescence().followed_claim()
    }
    fn leader_claim(&self) -> Option<Claim> {
        self.0.quiescence().leader_claim().map(|(c, _)| c)
    }
    fn claiming_since(&self) -> Option<Instant> {
        self.0.quiescence().claiming_since()
    }
    fn holds_elections(&self) -> bool {
        self.0.quiescence().holds_elections()
    }
    fn woke_at(&self) -> Option<Instant> {
        self.0.quiescence().woke_at()
    }
    fn campaigned_in(&self, term: u64) -> bool {
        self.0.quiescence().campaigned_in(term)
    }
    fn leadership(&self) -> Leadership {
        self.0.leadership()
    }
    fn view(&self) -> GroupView {
        self.0.view()
    }
}

impl Liveness {
    pub fn new(
        me: NodeId,
        cfg: LivenessConfig,
        registry: Arc<GroupRegistry>,
        pool: Arc<PeerPool>,
        transitions: Transitions,
    ) -> Arc<Self> {
        Arc::new(Liveness {
            me,
            transitions,
            // A peer sends its next request only once its last one was answered (one call in
            // flight per peer), so a request answered slowly, yet within the timeout, delays
            // the next one by up to two intervals.
            detector: Mutex::new(
                Detector::new(cfg.suspect_after)
                    .requests_within(cfg.suspect_after + 2 * cfg.interval),
            ),
            acked: Mutex::new(HashMap::new()),
            followed: Mutex::new(HashMap::new()),
            sweeping: Arc::new(AtomicBool::new(false)),
            suspects: Mutex::new(Vec::new()),
            reports: Mutex::new(HashMap::new()),
            reports_changed: AtomicU64::new(0),
            reported: tokio::sync::Notify::new(),
            cfg,
            registry,
            pool,
        })
    }

    /// The node's transition counter, which every group started on the node must bump.
    pub fn transitions(&self) -> &Transitions {
        &self.transitions
    }

    /// Whether `node` is alive as far as this node's detector knows (this node always is).
    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.me || self.detector.lock().unwrap().is_alive(node, Instant::now())
    }

    /// Records `peer`'s word on whom it suspects; a change wakes the heartbeat loop.
    fn note_report(&self, peer: NodeId, mut suspects: Vec<NodeId>) {
        suspects.sort_unstable();
        suspects.dedup();
        let now = Instant::now();
        let changed = {
            let mut reports = self.reports.lock().unwrap();
            let old = reports.insert(
                peer,
                Report {
                    at: now,
                    suspects: suspects.clone(),
                },
            );
            old.is_none_or(|r| r.suspects != suspects)
        };
        if changed {
            self.reports_changed.fetch_add(1, Ordering::AcqRel);
            self.reported.notify_one();
        }
    }

    /// Whether a majority of `voters` suspect `lost`: this node and the peers whose report,
    /// fresher than the detector's timeout, lists it ([`majority_suspects`]).
    fn majority_suspects(&self, voters: &[NodeId], lost: NodeId) -> bool {
        let now = Instant::now();
        let reports = self.reports.lock().unwrap();
        majority_suspects(voters, self.me, lost, |peer| {
            reports.get(&peer).is_some_and(|r| {
                now.saturating_duration_since(r.at) < self.cfg.suspect_after
                    && r.suspects.binary_search(&lost).is_ok()
            })
        })
    }

    /// Per peer, whom its report suspects, of the reports fresher than the detector's timeout.
    fn fresh_reports(&self, now: Instant) -> HashMap<NodeId, Vec<NodeId>> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.at) < self.cfg.suspect_after)
            .map(|(peer, r)| (*peer, r.suspects.clone()))
            .collect()
    }

    /// How many partition replicas this node hosts, and how many of them are quiet and lead.
    pub fn counts(&self) -> QuietCounts {
        let mut c = QuietCounts::default();
        self.registry.for_each_partition(|_, h| {
            c.replicas += 1;
            c.quiet += u32::from(matches!(
                h.quiescence().kind(),
                Kind::Leading | Kind::Following
            ));
            c.leading += u32::from(h.leadership().leader == Some(self.me));
            c.hibernated += u32::from(!h.is_running());
        });
        c
    }

    /// Answers a peer's heartbeat.
    pub fn serve(&self, req: NodeHeartbeat) -> NodeHeartbeatReply {
        let from = req.from;
        self.detector
            .lock()
            .unwrap()
            .requested(from, Instant::now());
        self.note_report(from, req.suspects.clone());
        let suspects = self.suspects.lock().unwrap().clone();
        if !req.full {
            // Kept even when stale: the whole list, when it comes, is compared with it.
            let now = self.transitions.get();
            let intact = self
                .followed
                .lock()
                .unwrap()
                .get_mut(&from)
                .is_some_and(|f| f.holds(req.version, now));
            return NodeHeartbeatReply {
                from: self.me,
                version: if intact { req.version } else { 0 },
                refused: Vec::new(),
                suspects,
            };
        }
        let claims: Vec<Claim> = req
            .quiet
            .iter()
            .map(|q| Claim {
                group: q.group_id,
                leader: from,
                term: q.term,
                index: q.last_index,
            })
            .collect();
        // Read before applying: a change meanwhile makes the next check look.
        let checked_at = self.transitions.get();
        let (refused, groups) = self.apply_claims(from, &claims);
        self.followed.lock().unwrap().insert(
            from,
            Remembered {
                version: req.version,
                groups,
                checked_at,
            },
        );
        NodeHeartbeatReply {
            from: self.me,
            version: req.version,
            refused,
            suspects,
        }
    }

    /// A whole list of claims from `from` ([`claims::serve_claims`] and [`claims::left_out`]
    /// decide, this performs): returns the groups refused, and those now quiet under it.
    fn apply_claims(
        &self,
        from: NodeId,
        claims: &[Claim],
    ) -> (Vec<u64>, Vec<Quiet<Arc<Quiescence>>>) {
        let list: Vec<(Claim, Option<AnyGroup>)> = claims
            .iter()
            .map(|c| (*c, self.registry.get(c.group)))
            .collect();
        let verdicts = claims::serve_claims(&list);
        let mut refused = Vec::new();
        let mut quiet = Vec::new();
        for ((claim, h), verdict) in list.iter().zip(verdicts) {
            let q = match (verdict, h) {
                (ClaimVerdict::Holds, Some(h)) => h.quiescence(),
                (ClaimVerdict::Follow, Some(h)) => {
                    h.quiescence().follow(*claim);
                    h.quiescence()
                }
                _ => {
                    refused.push(claim.group);
                    continue;
                }
            };
            quiet.push(Quiet {
                group: claim.group,
                switch: q.clone(),
                epoch: q.epoch(),
            });
        }
        // Groups quiet under `from` that its list leaves out have woken there.
        let before = self.followed.lock().unwrap().remove(&from);
        let before = before.map(|f| f.groups).unwrap_or_default();
        let mut woke = 0u32;
        for q in claims::left_out(from, claims, &before, |q| q.followed_claim()) {
            woke += u32::from(q.wake(Wake::Activity, "leader no longer claims"));
        }
        if woke > 0 {
            tracing::debug!(leader = from, groups = woke, "leader woke groups");
        }
        (refused, quiet)
    }

    /// Sends the heartbeats and drives quiescing until the task is dropped. `peers` gives the
    /// current peer nodes and their addresses.
    pub async fn run(self: Arc<Self>, peers: impl Fn() -> BTreeMap<NodeId, String>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle: HashMap<u64, Idle> = HashMap::new();
        let mut suspected: HashSet<NodeId> = HashSet::new();
        let mut claims = Claims::default();
        let mut logged = QuietCounts::default();
        let mut in_flight: HashMap<NodeId, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut round = 0u64;
        let mut last_look: Option<(u64, HashSet<NodeId>, HashSet<NodeId>, bool)> = None;
        loop {
            // Heartbeats go out every interval; the look at the groups also happens the moment
            // a peer would become suspected, not up to an interval later: how soon the groups
            // it led campaign is most of a failover.
            let suspicion = self.detector.lock().unwrap().next_suspicion(Instant::now());
            let mut beat = tokio::select! {
                _ = tick.tick() => true,
                _ = tokio::time::sleep_until(
                    suspicion.unwrap_or_else(Instant::now) + Duration::from_millis(1)
                ), if suspicion.is_some() => false,
                // A peer's suspicions changed: a campaign may now have its majority.
                _ = self.reported.notified() => false,
            };
            if beat {
                round += 1;
            }
            let now = Instant::now();
            let mut peers = peers();
            peers.remove(&self.me);
            let (alive, lost, newly_lost) = self.pulse(&peers, now, &mut suspected);
            // Tell the peers at once, not at the next round: the followers of the lost node's
            // groups campaign only once a majority of voters say they suspect it.
            beat |= newly_lost;
            if round % FULL_CHECK_ROUNDS == 1 {
                self.log_counts(&mut logged);
            }
            // Every replica quiet at the last look, no mode changed since and the same peers
            // alive: the look would find nothing to do. An idle node's round then costs
            // nothing per group.
            let full = round.is_multiple_of(FULL_CHECK_ROUNDS);
            let transitions = self
                .transitions
                .get()
                .wrapping_add(self.reports_changed.load(Ordering::Acquire).rotate_left(32));
            let requesting = self.requesting(&peers, now);
            let unchanged = last_look.as_ref().is_some_and(|(t, a, r, settled)| {
                *settled && *t == transitions && *a == alive && *r == requesting
            });
            if full || !unchanged {
                let reports = self.fresh_reports(now);
                let round = Round {
                    me: self.me,
                    now,
                    full,
                    alive: &alive,
                    requesting: &requesting,
                    lost: &lost,
                    reports: &reports,
                    cfg: &self.cfg,
                };
                let settled = self.scan(&round, &mut idle, &mut claims);
                last_look = Some((transitions, alive.clone(), requesting, settled));
            }
            if !beat {
                continue;
            }
            self.send_heartbeats(peers, &claims, &mut in_flight);
        }
    }

    /// The peers whose heartbeat requests reach this node ([`Detector::is_requesting`]).
    fn requesting(&self, peers: &BTreeMap<NodeId, String>, now: Instant) -> HashSet<NodeId> {
        let d = self.detector.lock().unwrap();
        peers
            .keys()
            .copied()
            .filter(|p| d.is_requesting(*p, now))
            .collect()
    }

    /// Who is alive and who is lost of `peers`, as the detector says at `now`; logs the
    /// changes (`suspected`: the peers logged as down) and updates the suspects this node
    /// reports. Returns also whether a peer was newly lost.
    fn pulse(
        &self,
        peers: &BTreeMap<NodeId, String>,
        now: Instant,
        suspected: &mut HashSet<NodeId>,
    ) -> (HashSet<NodeId>, HashSet<NodeId>, bool) {
        // Alive: heard from within the timeout. Lost: heard from and silent since; their
        // groups' followers campaign at once. A peer not heard from yet (this node just
        // started) is neither, and is left to Raft's own timers: the leader it led before
        // the restart is most likely alive.
        let (alive, lost) = {
            let d = self.detector.lock().unwrap();
            let mut alive = HashSet::new();
            let mut lost = HashSet::new();
            for p in peers.keys().copied() {
                if d.is_alive(p, now) {
                    alive.insert(p);
                } else if d.went_silent(p, now) {
                    lost.insert(p);
                }
            }
            (alive, lost)
        };
        let mut newly_lost = false;
        for p in peers.keys() {
            let down = !alive.contains(p);
            if down && suspected.insert(*p) {
                tracing::info!(
                    node = p,
                    after_ms = self.cfg.suspect_after.as_millis() as u64,
                    "peer suspected: no heartbeat"
                );
            } else if !down && suspected.remove(p) {
                tracing::info!(node = p, "peer alive again");
            }
        }
        {
            let mut mine: Vec<NodeId> = lost.iter().copied().collect();
            mine.sort_unstable();
            let mut sent = self.suspects.lock().unwrap();
            if *sent != mine {
                newly_lost = mine.iter().any(|n| sent.binary_search(n).is_err());
                *sent = mine;
            }
        }
        (alive, lost, newly_lost)
    }

    /// Logs how many replicas are quiet, when it changed since `logged`.
    fn log_counts(&self, logged: &mut QuietCounts) {
        let counts = self.counts();
        if counts != *logged {
            tracing::info!(
                quiet = counts.quiet,
                replicas = counts.replicas,
                leading = counts.leading,
                hibernated = counts.hibernated,
                "quiet partition replicas"
            );
            *logged = counts;
        }
    }

    /// Sends each peer its heartbeat with the claims it is a target of. One call in flight
    /// per peer: a slow or silent peer delays only its own heartbeats, never those to the
    /// others.
    fn send_heartbeats(
        self: &Arc<Self>,
        peers: BTreeMap<NodeId, String>,
        claims: &Claims,
        in_flight: &mut HashMap<NodeId, tokio::task::JoinHandle<()>>,
    ) {
        in_flight.retain(|peer, call| peers.contains_key(peer) && !call.is_finished());
        for (peer, addr) in peers {
            if in_flight.contains_key(&peer) {
                continue;
            }
            let list = claims.by_peer.get(&peer).cloned().unwrap_or_default();
            let version = claims.version;
            let me = self.clone();
            let call = tokio::spawn(async move { me.heartbeat(peer, &addr, version, list).await });
            in_flight.insert(peer, call);
        }
    }

    /// One look at every group ([`scan::look`] decides, this performs), and the claims to
    /// send, rebuilt if any leading group's mode changed. Returns whether every replica is
    /// settled: nothing for a look to do until something changes.
    fn scan(
        self: &Arc<Self>,
        round: &Round,
        idle: &mut HashMap<u64, Idle>,
        claims: &mut Claims,
    ) -> bool {
        let mut settled = true;
        let mut next_idle = HashMap::new();
        let mut done = Done::default();
        // An order-independent digest of (group, epoch) of every leading group: unchanged
        // means the claims are.
        let mut digest = 0u64;
        self.registry.for_each_group(|id, h| {
            let look = scan::look(id, &Group(h), idle.get(&id), round);
            settled &= look.settled;
            if let Some(i) = look.idle {
                next_idle.insert(id, i);
            }
            for action in look.actions {
                self.perform(h, action, round.now, &mut done);
            }
            let q = h.quiescence();
            if matches!(q.kind(), Kind::Claiming | Kind::Leading) {
                digest = digest.wrapping_add(crate::quiesce::mix(id ^ q.epoch().rotate_left(32)));
            }
        });
        *idle = next_idle;
        self.hibernate(done.to_hibernate);
        if done.suspicion_wakes > 0 {
            tracing::info!(
                groups = done.suspicion_wakes,
                "woke quiet groups whose leader's node is suspected"
            );
        }
        if done.campaigns > 0 {
            tracing::info!(
                groups = done.campaigns,
                "awake groups whose leader's node is suspected will campaign"
            );
        }
        let version = digest.max(1);
        if version != claims.version {
            let mut leading = Vec::new();
            self.registry.for_each_group(|_, h| {
                let q = h.quiescence();
                if let Some((claim, targets)) = q.leader_claim() {
                    leading.push((claim, targets, q.clone()));
                }
            });
            claims.version = version;
            claims.by_peer = scan::claims_by_peer(leading, MAX_CLAIMS_PER_HEARTBEAT)
                .into_iter()
                .map(|(p, l)| (p, Arc::new(l)))
                .collect();
        }
        settled
    }

    /// Performs one action of a look at group `h`.
    fn perform(self: &Arc<Self>, h: &AnyGroup, action: ScanAction, now: Instant, done: &mut Done) {
        let q = h.quiescence();
        match action {
            ScanAction::Wake { why, reason, .. } => {
                let woke = q.wake(why, reason);
                if matches!(why, Wake::LeaderSuspected(_)) {
                    done.suspicion_wakes += u32::from(woke);
                }
            }
            ScanAction::Campaign {
                lost, term, delay, ..
            } => {
                if q.campaign_due(term) {
                    self.campaign_later(h.clone(), lost, delay);
                    done.campaigns += 1;
                }
            }
            ScanAction::ElectAfter { delay, .. } => {
                done.suspicion_wakes += u32::from(q.leader_suspected(delay));
            }
            ScanAction::Claim { claim, targets, .. } => {
                q.claim(claim, targets, now);
            }
            ScanAction::Hibernate { .. } => done.to_hibernate.push(h.clone()),
        }
    }

    /// Hibernates `groups`, one at a time, in the background (one sweep at a time), and then
    /// hands the memory their instances held back to the operating system: freed, it would
    /// stay resident in the allocator's arenas.
    fn hibernate(&self, groups: Vec<AnyGroup>) {
        if groups.is_empty() || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let sweeping = self.sweeping.clone();
        tokio::spawn(async move {
            let mut count = 0u32;
            for g in &groups {
                count += u32::from(g.hibernate().await);
            }
            if count > 0 {
                tracing::debug!(groups = count, "hibernated quiet groups");
                release_free_memory();
            }
            sweeping.store(false, Ordering::Release);
        });
    }

    /// After `delay` (the replica's rank among the group's live followers), campaigns for
    /// the group if its leader's node is still suspected and no other leader has turned up.
    /// A follower ranked after the first tries once more, in the next term, half a step
    /// later: when the first candidate's log was behind, the first try loses to the vote
    /// that candidate gave itself in that term.
    fn campaign_later(self: &Arc<Self>, h: AnyGroup, lost: NodeId, delay: Duration) {
        let me = self.clone();
        let retry = (!delay.is_zero()).then_some(self.cfg.campaign_step / 2);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let due =
                |me: &Liveness| !me.is_alive(lost) && me.majority_suspects(&h.view().voters, lost);
            if !due(&me) || !h.campaign_for_lost_leader(lost).await {
                return;
            }
            if let Some(retry) = retry {
                tokio::time::sleep(retry).await;
                if due(&me) && h.leadership().leader.is_none() {
                    h.campaign_for_lost_leader(lost).await;
                }
            }
        });
    }

    /// Sends one heartbeat to `peer`: the whole list if the peer does not hold `version`.
    async fn heartbeat(&self, peer: NodeId, addr: &str, version: u64, list: Arc<Vec<ClaimOf>>) {
        let full = self.acked.lock().unwrap().get(&peer) != Some(&version);
        let req = NodeHeartbeat {
            from: self.me,
            version,
            full,
            suspects: self.suspects.lock().unwrap().clone(),
            quiet: if full {
                list.iter()
                    .map(|(c, _)| QuietGroup {
                        group_id: c.group,
                        term: c.term,
                        last_index: c.index,
                    })
                    .collect()
            } else {
                Vec::new()
            },
        };
        // An answer later than the detector's timeout is as good as none.
        let sent = self.pool.heartbeat_peer(addr);
        let reply = match sent.heartbeat(req, self.cfg.suspect_after).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::trace!(peer, error = %e, "heartbeat failed");
                return;
            }
        };
        if reply.from != peer {
            tracing::warn!(
                peer,
                answered = reply.from,
                addr,
                "heartbeat answered by another node"
            );
            return;
        }
        self.detector.lock().unwrap().heard(peer, Instant::now());
        self.note_report(peer, reply.suspects.clone());
        self.acked.lock().unwrap().insert(peer, reply.version);
        if full {
            let actions =
                claims::apply_reply(&list, &reply.refused, |q| q.leader_claim().map(|(c, _)| c));
            for ((claim, q), action) in list.iter().zip(actions) {
                match action {
                    ReplyAction::Accepted => {
                        q.accepted(claim, peer);
                    }
                    ReplyAction::Wake => {
                        q.wake(Wake::Activity, "claim refused");
                    }
                    ReplyAction::Nothing => {}
                }
            }
        }
    }
}

/// Returns the allocator's free memory to the operating system (glibc keeps freed memory
/// resident in its arenas; many small frees, like a sweep of stopped Raft instances, leave
/// it there). Called once per sweep, in place: a few milliseconds at most, and no thread
/// whose timing a deterministic simulation could not replay.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no
    // preconditions and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
