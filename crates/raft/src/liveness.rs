//! Node-level liveness: one heartbeat per peer node per heartbeat interval, whatever the number
//! of groups, a failure detector over them, and the claims of quiet groups they carry. The
//! decisions are in [`crate::quiesce`]; this module performs them.
//!
//! Every interval, [`Liveness::run`]:
//! 1. looks at every partition group on this node: an idle leader in sync claims its group
//!    quiet; a quiet follower whose leader's node is suspected wakes and may campaign (after a
//!    delay that gives each group one first candidate); a claim no follower answered for two
//!    detector timeouts is withdrawn; every tenth round, a quiet replica whose state moved on
//!    wakes (a safety net: the message hooks in [`crate::group`] catch these first);
//! 2. sends each peer a heartbeat listing the claims it is a target of, and applies the answers:
//!    an accepted claim counts towards quiet, a refused one wakes its group.
//!
//! [`Liveness::serve`] answers a peer's heartbeat: the peer is alive; each claim is accepted
//! (the follower goes quiet) or refused; a group quiet under that peer and no longer listed
//! wakes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::raft::{NodeHeartbeat, NodeHeartbeatReply, QuietGroup};
use tokio::time::Instant;

use crate::NodeId;
use crate::group::GroupRegistry;
use crate::network::PeerPool;
use crate::quiesce::{
    Claim, Detector, Mode, Quiescence, Wake, claim_targets, election_delay, follower_accepts,
    leader_claim, still_quiet,
};

/// Rounds between two looks at every quiet replica's own state (the safety net).
const FULL_CHECK_ROUNDS: u64 = 10;
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
    /// Between the first and the next candidate of a group whose leader's node is suspected.
    pub election_step: Duration,
}

/// How many of this node's partition replicas are quiet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuietCounts {
    pub replicas: u32,
    pub quiet: u32,
}

/// The node-level heartbeat and the quiescing it drives.
pub struct Liveness {
    me: NodeId,
    cfg: LivenessConfig,
    registry: Arc<GroupRegistry>,
    pool: Arc<PeerPool>,
    // Short critical sections (a map update or lookup), no await inside.
    detector: Mutex<Detector>,
}

/// Since when a leader's log has not moved.
struct Idle {
    term: u64,
    last: Option<u64>,
    since: Instant,
}

impl Liveness {
    pub fn new(
        me: NodeId,
        cfg: LivenessConfig,
        registry: Arc<GroupRegistry>,
        pool: Arc<PeerPool>,
    ) -> Arc<Self> {
        Arc::new(Liveness {
            me,
            detector: Mutex::new(Detector::new(cfg.suspect_after)),
            cfg,
            registry,
            pool,
        })
    }

    /// Whether `node` is alive as far as this node's detector knows (this node always is).
    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.me || self.detector.lock().unwrap().is_alive(node, Instant::now())
    }

    /// How many partition replicas this node hosts, and how many of them are quiet.
    pub fn counts(&self) -> QuietCounts {
        let mut c = QuietCounts::default();
        self.registry.for_each_partition(|_, h| {
            c.replicas += 1;
            c.quiet += u32::from(h.quiescence().is_quiet());
        });
        c
    }

    /// Answers a peer's heartbeat.
    pub fn serve(&self, req: NodeHeartbeat) -> NodeHeartbeatReply {
        let from = req.from;
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
        NodeHeartbeatReply {
            from: self.me,
            refused: self.on_heartbeat(from, &claims),
        }
    }

    /// A heartbeat from `from` listing `claims`: returns the groups refused.
    fn on_heartbeat(&self, from: NodeId, claims: &[Claim]) -> Vec<u64> {
        self.detector.lock().unwrap().heard(from, Instant::now());
        let mut refused = Vec::new();
        for claim in claims {
            let Some(h) = self.registry.partition(claim.group) else {
                refused.push(claim.group);
                continue;
            };
            let q = h.quiescence();
            if q.followed_claim() == Some(*claim) {
                continue;
            }
            if follower_accepts(&h.view(), claim) {
                q.follow(*claim);
            } else {
                refused.push(claim.group);
            }
        }
        let listed: HashSet<u64> = claims.iter().map(|c| c.group).collect();
        let mut woke = 0;
        self.registry.for_each_partition(|id, h| {
            let q = h.quiescence();
            if q.followed_claim().is_some_and(|c| c.leader == from) && !listed.contains(&id) {
                woke += u32::from(q.wake(Wake::Activity, "leader no longer claims"));
            }
        });
        if woke > 0 {
            tracing::debug!(leader = from, groups = woke, "leader woke groups");
        }
        refused
    }

    /// Sends the heartbeats and drives quiescing until the task is dropped. `peers` gives the
    /// current peer nodes and their addresses.
    pub async fn run(self: Arc<Self>, peers: impl Fn() -> BTreeMap<NodeId, String>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle: HashMap<u64, Idle> = HashMap::new();
        let mut suspected: HashSet<NodeId> = HashSet::new();
        let mut logged = QuietCounts::default();
        let mut in_flight: HashMap<NodeId, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut round = 0u64;
        loop {
            tick.tick().await;
            round += 1;
            let now = Instant::now();
            let mut peers = peers();
            peers.remove(&self.me);
            let alive: HashSet<NodeId> = {
                let d = self.detector.lock().unwrap();
                peers
                    .keys()
                    .copied()
                    .filter(|p| d.is_alive(*p, now))
                    .collect()
            };
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
            if round % FULL_CHECK_ROUNDS == 0 {
                let counts = self.counts();
                if counts != logged {
                    tracing::info!(
                        quiet = counts.quiet,
                        replicas = counts.replicas,
                        "quiet partition replicas"
                    );
                    logged = counts;
                }
            }
            let is_alive = |n: NodeId| n == self.me || alive.contains(&n);
            let mut claims = self.scan(now, &is_alive, &mut idle, round % FULL_CHECK_ROUNDS == 0);
            // One call in flight per peer: a slow or silent peer delays only its own
            // heartbeats, never those to the others.
            in_flight.retain(|peer, call: &mut tokio::task::JoinHandle<()>| {
                peers.contains_key(peer) && !call.is_finished()
            });
            for (peer, addr) in peers {
                if in_flight.contains_key(&peer) {
                    continue;
                }
                let mut sent = claims.remove(&peer).unwrap_or_default();
                sent.truncate(MAX_CLAIMS_PER_HEARTBEAT);
                let me = self.clone();
                let call = tokio::spawn(async move {
                    if let Some(refused) = me.call(peer, &addr, &sent).await {
                        me.detector.lock().unwrap().heard(peer, Instant::now());
                        me.apply_answer(peer, &sent, &refused);
                    }
                });
                in_flight.insert(peer, call);
            }
        }
    }

    /// One look at every partition group; returns the claims to send, by peer.
    fn scan(
        &self,
        now: Instant,
        alive: &impl Fn(NodeId) -> bool,
        idle: &mut HashMap<u64, Idle>,
        full: bool,
    ) -> HashMap<NodeId, Vec<(Claim, Arc<Quiescence>)>> {
        let mut claims: HashMap<NodeId, Vec<(Claim, Arc<Quiescence>)>> = HashMap::new();
        let mut seen: HashSet<u64> = HashSet::with_capacity(idle.len());
        let mut suspicion_wakes = 0u32;
        self.registry.for_each_partition(|id, h| {
            let q = h.quiescence();
            match q.mode() {
                Mode::Awake => {
                    if q.holds_elections() {
                        // Woken, waiting out its delay; if its leader's node is now suspected,
                        // it may campaign by its rank instead.
                        let view = h.view();
                        if let Some(l) = view.leader.filter(|l| *l != self.me && !alive(*l)) {
                            let delay = election_delay(
                                id,
                                self.me,
                                &view.voters,
                                l,
                                alive,
                                self.cfg.election_step,
                            );
                            suspicion_wakes += u32::from(q.leader_suspected(delay));
                        }
                    }
                    let Some(after) = self.cfg.quiesce_after else {
                        return;
                    };
                    if h.leadership().leader != Some(self.me) {
                        return;
                    }
                    let view = h.view();
                    seen.insert(id);
                    let entry = idle.entry(id).or_insert(Idle {
                        term: view.term,
                        last: view.last_index,
                        since: now,
                    });
                    if entry.term != view.term || entry.last != view.last_index {
                        *entry = Idle {
                            term: view.term,
                            last: view.last_index,
                            since: now,
                        };
                    }
                    let quiet_since = q.woke_at().map_or(entry.since, |w| w.max(entry.since));
                    let idle_for = now.saturating_duration_since(quiet_since);
                    if let Some(claim) = leader_claim(id, &view, idle_for, after, alive) {
                        q.claim(claim, claim_targets(&view, alive), now);
                    }
                }
                Mode::Claiming { claim, since, .. } => {
                    // Followers that never answer (a peer that died meanwhile) must not hold
                    // the claim forever: withdraw it, and try again with the live ones later.
                    let stuck = now.saturating_duration_since(since) > self.cfg.suspect_after * 2;
                    if stuck {
                        q.wake(Wake::Activity, "claim unanswered");
                    } else if full && !still_quiet(&h.view(), &claim, true) {
                        q.wake(Wake::Activity, "state moved");
                    }
                }
                Mode::Leading { claim, .. } => {
                    if full && !still_quiet(&h.view(), &claim, true) {
                        q.wake(Wake::Activity, "state moved");
                    }
                }
                Mode::Following(claim) => {
                    if !alive(claim.leader) {
                        let view = h.view();
                        let delay = election_delay(
                            id,
                            self.me,
                            &view.voters,
                            claim.leader,
                            alive,
                            self.cfg.election_step,
                        );
                        suspicion_wakes +=
                            u32::from(q.wake(Wake::LeaderSuspected(delay), "leader suspected"));
                    } else if full && !still_quiet(&h.view(), &claim, false) {
                        q.wake(Wake::Activity, "state moved");
                    }
                }
            }
            if let Some((claim, targets)) = q.leader_claim() {
                for t in targets {
                    claims.entry(t).or_default().push((claim, q.clone()));
                }
            }
        });
        idle.retain(|id, _| seen.contains(id));
        if suspicion_wakes > 0 {
            tracing::info!(
                groups = suspicion_wakes,
                "woke quiet groups whose leader's node is suspected"
            );
        }
        claims
    }

    /// Sends one heartbeat; the groups the peer refused, or `None` if it did not answer.
    async fn call(
        &self,
        peer: NodeId,
        addr: &str,
        claims: &[(Claim, Arc<Quiescence>)],
    ) -> Option<HashSet<u64>> {
        let mut client = self.pool.heartbeat_client(addr).ok()?;
        let req = NodeHeartbeat {
            from: self.me,
            quiet: claims
                .iter()
                .map(|(c, _)| QuietGroup {
                    group_id: c.group,
                    term: c.term,
                    last_index: c.index,
                })
                .collect(),
        };
        // An answer later than the detector's timeout is as good as none.
        match tokio::time::timeout(self.cfg.suspect_after, client.heartbeat(req)).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                if reply.from != peer {
                    tracing::warn!(
                        peer,
                        answered = reply.from,
                        addr,
                        "heartbeat answered by another node"
                    );
                    return None;
                }
                Some(reply.refused.into_iter().collect())
            }
            Ok(Err(status)) => {
                tracing::trace!(peer, %status, "heartbeat failed");
                None
            }
            Err(_) => {
                tracing::trace!(peer, "heartbeat timed out");
                None
            }
        }
    }

    /// Applies a peer's answer to the claims sent to it.
    fn apply_answer(
        &self,
        peer: NodeId,
        sent: &[(Claim, Arc<Quiescence>)],
        refused: &HashSet<u64>,
    ) {
        for (claim, q) in sent {
            if refused.contains(&claim.group) {
                // Only the claim that was refused: a newer one may be on its way.
                if q.leader_claim().is_some_and(|(c, _)| c == *claim) {
                    q.wake(Wake::Activity, "claim refused");
                }
            } else {
                q.accepted(claim, peer);
            }
        }
    }
}
