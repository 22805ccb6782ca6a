//! The nemesis: the faults of a plan carried out against the cluster ([`Nemesis`]). The plan
//! itself, which faults happen when, is decided up front from the seed by the shared core
//! (`fjord_harness::fault::steps`), as are the fault kinds (`fjord_harness::fault::FaultKind`).
//!
//! The plan fixes every step's time, length, fault kinds and the seed of its random choices
//! (which node, which half, how far the clock jumps), drawn here as the step starts; only
//! targets defined by the cluster's state at that moment ("the leader of partition 2") are
//! resolved from the cluster, so the same seed gives the same schedule.
//!
//! Nodes that `kill`, `crash-unsynced` and `power-loss` take down come back after a drawn
//! delay from 0 ms (most of them before the ~600 ms a failure detector needs to notice, so
//! a crashed leader can be back before anyone elected another), or at the step's end.
//!
//! In runs with retention the nemesis also deletes records (each `DeleteRecords` recorded in
//! the history, by the process `fjord_harness::retention::NEMESIS`): a `follower-behind-purge`
//! holds a follower down across one and across its leader's purge, so that it comes back
//! behind the purge and installs a snapshot; a `power-loss` strikes while one is in flight.
//!
//! What must hold: every step is healed before the next begins and all faults are healed at
//! the end (nodes restarted, rules cleared, clocks reset, disks writable and fast); at most a
//! minority of nodes is down or paused at once, except in a power loss, which takes every
//! node down together and restarts them all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use fjord_client::{Client, PartitionDescription};
use fjord_harness::fault::steps::{Step, fsync_delay_ms, restart_delay};
use fjord_harness::fault::{CLOCK_JUMP_MAX_SECS, CLOCK_RATES, FaultKind};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::db::Db;
use crate::net::{self, CLIENT, Network, Rule};
use crate::report::FaultWindow as Window;
use crate::retention::{self, PurgeLag};
use crate::workload::Recorder;
use fjord_client::{OffsetSpec, ReadMode};
use fjord_harness::retention::{CHECK_INTERVAL_MS, NEMESIS};
use fjord_harness::stability::{IsolationCheck, PartitionLeader, Watch};

fn describe_delay(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{} ms", d.as_millis()),
        None => "the step's end".to_string(),
    }
}

/// What must be undone when a step ends.
#[derive(Debug, Default)]
struct Undo {
    rules: BTreeSet<Rule>,
    /// Nodes to start at the step's end (those already restarted are left alone).
    restart: BTreeSet<u64>,
    /// Nodes to start before the step ends: (delay from the end of the step's start, node),
    /// in the order to start them.
    early_restart: Vec<(Duration, u64)>,
    slow_disk: BTreeSet<u64>,
    lose_unsynced: BTreeSet<u64>,
    resume: BTreeSet<u64>,
    clock_reset: BTreeSet<u64>,
    disk_writable: BTreeSet<u64>,
    /// Nodes whose data file has flipped bits: watch how they take it.
    flipped: BTreeSet<u64>,
    /// Nodes restarted on a lost or old directory: one that refuses it is started again
    /// with `--rebuild`.
    rebuild_if_refused: BTreeSet<u64>,
    /// A `follower-behind-purge`'s follower, restarted: where its log stood at the restart,
    /// to look for the snapshot it should install.
    purge_lag: Option<(PurgeLag, u64)>,
}

/// What starting a step did.
#[derive(Debug, Default)]
struct Started {
    /// What to undo at the step's end: everything the faults that started did.
    undo: Undo,
    /// Each fault that started: its name and what it did.
    described: Vec<(String, String)>,
    /// The fault that failed to start, and why (the step's later faults were not started).
    failed: Option<String>,
}

/// Whether a node's last words say it must be started with `--rebuild`: it refused its data
/// directory (lost, old, corrupt), or a rebuild was refused for now (a group would have lost
/// its majority) or interrupted.
pub fn needs_rebuild(log_tail: &str) -> bool {
    log_tail.contains("plus --rebuild") || log_tail.contains("--rebuild refused")
}

/// Whether a node's last log lines show it stopped on a failed write (a full disk):
/// a fail-stop a fault caused, which its supervisor restarts.
pub fn fail_stopped(log_tail: &str) -> bool {
    log_tail.contains("so the node stopped (fail-stop)")
}

/// Whether a node's exit was one a fault causes on purpose (a fail-stop on a full disk, a
/// refused or lost data directory), not a crash.
pub fn deliberate_exit(log_tail: &str) -> bool {
    fail_stopped(log_tail) || needs_rebuild(log_tail)
}

/// How long a node restarted on a lost or old directory may take to refuse it.
const REFUSAL_WAIT: Duration = Duration::from_secs(10);

/// Carries out a plan.
pub struct Nemesis {
    pub db: Arc<Mutex<Db>>,
    pub net: Arc<Network>,
    pub client: Client,
    pub topic: String,
    pub partitions: u32,
    /// Nodes whose data file was corrupted and that did not come back: they stay down, and
    /// count against the minority that other faults may take down.
    pub lost_nodes: BTreeSet<u64>,
    /// What happened that the report should mention.
    pub notes: Vec<String>,
    /// Nodes started with `--rebuild` that have not said they are voters of every group again,
    /// with where their log stood then: they count as down (a learner counts toward no
    /// majority), so no fault takes another node while one rebuilds.
    pub rebuilding: BTreeMap<u64, u64>,
    /// One client per node, asking that node only: how each node describes the topic.
    pub node_clients: BTreeMap<u64, Client>,
    /// The `partition-follower` checks so far.
    pub isolations: Vec<IsolationCheck>,
    /// In runs with retention: how the nemesis deletes records.
    pub deletes: Option<Deletes>,
    /// The `follower-behind-purge` faults so far.
    pub purge_lags: Vec<PurgeLag>,
    /// In runs with compaction: how its power losses went (they wait for a compaction pass
    /// to start before they strike).
    pub compaction: Option<crate::compaction::CompactionHits>,
}

/// What the nemesis needs to delete records, in runs with retention.
pub struct Deletes {
    pub recorder: Arc<Recorder>,
    pub op_timeout: Duration,
    /// A `DeleteRecords` sent as a power loss struck: awaited before the next one.
    pub inflight: Option<tokio::task::JoinHandle<()>>,
}

/// How long a power loss in a compaction run waits for some node to start a compaction
/// pass before it strikes anyway.
const PASS_WAIT: Duration = Duration::from_secs(5);
/// How often it looks at the node logs meanwhile: often, since a pass may be short.
const PASS_POLL: Duration = Duration::from_millis(2);

/// How long a `follower-behind-purge` follower stays down before the `DeleteRecords`, while
/// records arrive that it will not have.
const DOWN_BEFORE_DELETE: Duration = Duration::from_secs(1);
/// How long it waits for another node to purge a partition's log behind the new start.
const PURGE_WAIT: Duration = Duration::from_secs(10);
/// How long after its restart the follower may take to install the snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// How long `partition-follower` waits for every node to describe the same leaders.
const SETTLE_DEADLINE: Duration = Duration::from_secs(8);
/// How long after healing a `partition-follower` keeps watching the leaders.
const OBSERVE_AFTER_HEAL: Duration = Duration::from_secs(3);
const OBSERVE_EVERY: Duration = Duration::from_millis(200);

/// In runs with compaction (`hits`), once every node is down: counts the power loss, and
/// whether some node's log (from where `Nemesis::await_compaction_pass` began) shows a pass
/// started and not finished; what to say.
fn count_mid_pass(
    hits: &mut Option<crate::compaction::CompactionHits>,
    db: &Db,
    from: &BTreeMap<u64, u64>,
) -> String {
    let Some(hits) = hits.as_mut() else {
        return String::new();
    };
    hits.power_losses += 1;
    let mid: Vec<String> = from
        .iter()
        .filter_map(|(&id, &at)| {
            let groups = crate::compaction::mid_pass(&crate::compaction::log_after(db, id, at));
            (!groups.is_empty()).then(|| format!("n{id} groups {groups:?}"))
        })
        .collect();
    if mid.is_empty() {
        return "no node was mid-pass; ".to_string();
    }
    hits.mid_pass += 1;
    format!("mid compaction pass: {}; ", mid.join(", "))
}

/// Every node's description, when all answered, have a leader for every partition and agree
/// on each partition's leader and epoch.
fn agreed(views: &[Option<Vec<PartitionDescription>>]) -> Option<Vec<PartitionDescription>> {
    let first = views.first()?.as_ref()?;
    for v in views {
        let v = v.as_ref()?;
        if v.len() != first.len() {
            return None;
        }
        for (a, b) in v.iter().zip(first) {
            if a.leader.is_none() || a.leader != b.leader || a.leader_epoch != b.leader_epoch {
                return None;
            }
        }
    }
    Some(first.clone())
}

/// Every partition led by its preferred leader: leader balancing has nothing to move.
fn balanced(partitions: &[PartitionDescription]) -> bool {
    partitions
        .iter()
        .all(|p| p.leader.is_some() && p.leader == p.replicas.first().copied())
}

/// A partition's leader as a node described it.
fn leader_of(p: &PartitionDescription) -> PartitionLeader {
    PartitionLeader {
        partition: p.partition,
        leader: p.leader,
        epoch: p.leader_epoch,
    }
}

/// How many partitions node `n` leads in `view`.
fn leads(n: u64, view: &Option<Vec<PartitionDescription>>) -> usize {
    view.as_ref()
        .map_or(0, |v| v.iter().filter(|p| p.leader == Some(n)).count())
}

/// Sleeps until `until`; true if the run was stopped first.
async fn sleep_or_stop(until: Instant, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(until.into()) => false,
        _ = stop.changed() => true,
    }
}

fn minority(n: usize) -> usize {
    (n - 1) / 2
}

/// What the faults of one step share while they start.
struct Starting<'a> {
    /// The step's random choices, in the order the faults draw them.
    rng: StdRng,
    ids: Vec<u64>,
    undo: Undo,
    /// Nodes a process fault may take, in the order to take them.
    candidates: Vec<u64>,
    /// How many nodes one process fault may take down, at most.
    budget: usize,
    /// The node a `slow-disk` earlier in this step slowed: the crash that follows aims at it.
    slowed: Option<u64>,
    /// Nodes down in this step.
    taken_down: &'a mut BTreeSet<u64>,
}

/// What taking one node down did, for the step's description.
struct Taken {
    /// When it comes back, if it does before the step's end.
    restart: Option<String>,
    /// What else was done to it.
    note: String,
}

impl Starting<'_> {
    fn any_node(&mut self) -> u64 {
        *self.ids.choose(&mut self.rng).expect("nodes")
    }

    fn others(&self, x: u64) -> Vec<u64> {
        self.ids.iter().copied().filter(|&i| i != x).collect()
    }

    /// Makes `l` the next node a process fault takes.
    fn put_first(&mut self, l: u64) {
        self.candidates.retain(|&c| c != l);
        self.candidates.insert(0, l);
    }

    /// A crash after a slow disk waits first, so that produces go through (committed by the
    /// followers' fsyncs) while the slowed node's own fsyncs wait; returns what to say.
    async fn wait_for_slow_fsyncs(&mut self, kind: FaultKind) -> String {
        if self.slowed.is_some() && matches!(kind, FaultKind::CrashUnsynced | FaultKind::PowerLoss)
        {
            let ms = self.rng.gen_range(200..=2_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("after {ms} ms of slow fsyncs, ")
        } else {
            String::new()
        }
    }

    /// Cuts `target` off from the other nodes.
    fn cut_off(&mut self, target: u64) {
        let others = self.others(target);
        self.undo.rules.extend(net::cut(&[target], &others));
    }

    /// `partition-halves`: a minority cut off from the majority.
    fn cut_halves(&mut self) -> String {
        let mut shuffled = self.ids.clone();
        shuffled.shuffle(&mut self.rng);
        let (small, big) = shuffled.split_at(minority(self.ids.len()).max(1));
        self.undo.rules.extend(net::cut(small, big));
        format!("{small:?} | {big:?}")
    }

    /// `partition-bridge`: two halves that one node still sees both of.
    fn cut_with_bridge(&mut self) -> String {
        let mut shuffled = self.ids.clone();
        shuffled.shuffle(&mut self.rng);
        let bridge = shuffled[0];
        let rest = &shuffled[1..];
        let (a, b) = rest.split_at(rest.len() / 2);
        self.undo.rules.extend(net::cut(a, b));
        format!("{a:?} | {b:?}, n{bridge} sees both")
    }

    /// `partition-one-way`: one node's packets to the others dropped.
    fn drop_one_way(&mut self) -> String {
        let from = self.any_node();
        for to in self.others(from) {
            self.undo.rules.insert(Rule::Drop { from, to });
        }
        format!("packets from n{from} to the other nodes dropped")
    }

    /// `partition-calls`: `target`'s calls to the other nodes stall while theirs to it go
    /// through, or (half the time) the reverse.
    fn stall_calls(&mut self, target: u64) -> String {
        let outward = self.rng.gen_bool(0.5);
        for other in self.others(target) {
            let (from, to) = if outward {
                (target, other)
            } else {
                (other, target)
            };
            self.undo.rules.insert(Rule::Calls { from, to });
        }
        if outward {
            format!("n{target} cannot call the other nodes; their calls to it go through")
        } else {
            format!("no node can call n{target}; its calls to them go through")
        }
    }

    /// `packet-loss`: a share of the packets between every two nodes dropped.
    fn lose_packets(&mut self) -> String {
        let percent = self.rng.gen_range(10..40);
        for &a in &self.ids {
            for &b in &self.ids {
                if a != b {
                    self.undo.rules.insert(Rule::Loss {
                        from: a,
                        to: b,
                        percent,
                    });
                }
            }
        }
        format!("{percent}% of packets between nodes dropped")
    }

    /// When a node taken down comes back: after a drawn delay, or at the step's end.
    fn restart_later(&mut self, id: u64) -> Option<Duration> {
        self.undo.restart.insert(id);
        let delay = restart_delay(&mut self.rng);
        if let Some(d) = delay {
            self.undo.early_restart.push((d, id));
        }
        delay
    }

    /// `stale-copy` on node `id`, killed: puts an earlier copy of its disk back, or takes the
    /// copy a later step puts back; returns what it did.
    fn swap_copy(&mut self, db: &mut Db, id: u64) -> Result<String> {
        db.kill(id)?;
        if db.has_copy(id) {
            db.restore_copy(id)?;
            self.undo.rebuild_if_refused.insert(id);
            Ok(format!("an earlier copy of n{id}'s disk put back; "))
        } else {
            db.save_copy(id)?;
            Ok(format!("n{id}'s disk copied; "))
        }
    }

    /// Takes node `id` down as `kind` says.
    fn take_down_one(
        &mut self,
        db: &mut Db,
        net: &Network,
        kind: FaultKind,
        id: u64,
        then_kill_leader: Option<u64>,
    ) -> Result<Taken> {
        let mut note = String::new();
        let restart = match (kind, then_kill_leader) {
            (FaultKind::Pause, _) => {
                db.pause(id)?;
                self.undo.resume.insert(id);
                None
            }
            (FaultKind::Kill | FaultKind::CrashUnsynced, _) => {
                // Restarted at the step's end even if losing its writes fails.
                self.undo.restart.insert(id);
                db.kill(id)?;
                if kind == FaultKind::CrashUnsynced {
                    db.lose_unsynced(id)?;
                }
                let delay = self.restart_later(id);
                Some(format!("n{id} after {}", describe_delay(delay)))
            }
            (FaultKind::DiskLoss, Some(l)) => {
                db.kill(id)?;
                db.wipe(id)?;
                db.start(net, id)?;
                db.kill(l)?;
                self.taken_down.insert(l);
                self.undo.restart.insert(l);
                self.undo.rebuild_if_refused.insert(id);
                Some(format!(
                    "n{id} (disk wiped) at once, then the leader n{l} killed; n{l} at the step's end"
                ))
            }
            (FaultKind::DiskLoss, None) => {
                db.kill(id)?;
                db.wipe(id)?;
                self.undo.rebuild_if_refused.insert(id);
                let delay = self.restart_later(id);
                Some(format!(
                    "n{id} (disk wiped) after {}",
                    describe_delay(delay)
                ))
            }
            (FaultKind::StaleCopy, _) => {
                note = self.swap_copy(db, id)?;
                let delay = self.restart_later(id);
                Some(format!("n{id} after {}", describe_delay(delay)))
            }
            (FaultKind::Bitflip, _) => {
                db.kill(id)?;
                let bits = self.rng.gen_range(1..=8);
                let at = db.flip_bits(id, bits, &mut self.rng)?;
                note = format!("{bits} bits flipped at byte offsets {at:?}; ");
                self.undo.restart.insert(id);
                self.undo.flipped.insert(id);
                None
            }
            (other, _) => anyhow::bail!("{} takes no node down", other.name()),
        };
        Ok(Taken { restart, note })
    }
}

impl Nemesis {
    async fn partition_leader(&self, rng: &mut StdRng) -> Option<u64> {
        let partition = rng.gen_range(0..self.partitions);
        let described = tokio::time::timeout(
            Duration::from_secs(2),
            self.client.describe_topic(&self.topic),
        )
        .await
        .ok()?
        .ok()?;
        described.partitions.get(partition as usize)?.leader
    }

    /// Node `id`'s description of the topic's partitions, asked of that node only.
    async fn describe_from(&self, id: u64) -> Option<Vec<PartitionDescription>> {
        let client = self.node_clients.get(&id)?;
        tokio::time::timeout(Duration::from_secs(1), client.describe_topic(&self.topic))
            .await
            .ok()?
            .ok()
            .map(|t| t.partitions)
    }

    async fn describe_all(&self, ids: &[u64]) -> Vec<Option<Vec<PartitionDescription>>> {
        let mut views = Vec::new();
        for &id in ids {
            views.push(self.describe_from(id).await);
        }
        views
    }

    /// Shows `watch` every node's description until `until`.
    async fn watch_leaders(&self, ids: &[u64], watch: &mut Watch, until: Instant) {
        // Bounded: one round per OBSERVE_EVERY until `until`.
        while Instant::now() < until {
            for view in self.describe_all(ids).await.into_iter().flatten() {
                for p in &view {
                    watch.observe(leader_of(p));
                }
            }
            tokio::time::sleep(OBSERVE_EVERY).await;
        }
    }

    /// `partition-follower`: waits for the cluster to settle (every node describing the same
    /// leaders, each partition led by its preferred leader if that happens in time), cuts off
    /// a node that leads nothing (or the least, never the metadata leader when another can
    /// go), heals after 1-3 s, watches the leaders for [`OBSERVE_AFTER_HEAL`] more, and
    /// records which partitions it only followed changed leader or epoch meanwhile.
    async fn isolate_follower(
        &mut self,
        rng: &mut StdRng,
        ids: &[u64],
        undo: &mut Undo,
    ) -> Result<String> {
        let cut_ms = rng.gen_range(1_000..=3_000);
        let settled = self.settled_leaders(ids).await;
        let Some(target) = self.least_leading(rng, ids, &settled).await else {
            return Ok("skipped: no node up".to_string());
        };
        let checked: Vec<PartitionLeader> = settled
            .iter()
            .flatten()
            .filter(|p| {
                p.replicas.contains(&target)
                    && p.leader != Some(target)
                    && p.leader == p.replicas.first().copied()
            })
            .map(leader_of)
            .collect();
        let mut watch = Watch::new(checked);
        let others: Vec<u64> = ids.iter().copied().filter(|&i| i != target).collect();
        let rules = net::cut(&[target], &others);
        undo.rules.extend(rules.iter().cloned());
        self.net.apply(&rules)?;
        let heal_at = Instant::now() + Duration::from_millis(cut_ms);
        self.watch_leaders(ids, &mut watch, heal_at).await;
        self.net.apply(&BTreeSet::new())?;
        undo.rules.clear();
        self.watch_leaders(ids, &mut watch, Instant::now() + OBSERVE_AFTER_HEAL)
            .await;
        let skipped = settled
            .is_none()
            .then(|| format!("the nodes did not agree on the leaders within {SETTLE_DEADLINE:?}"));
        let check = watch.into_check(target, cut_ms, skipped);
        let detail = format!(
            "n{target} (leading {} partitions) cut off from the other nodes for {cut_ms} ms, healed; of the {} partitions it followed, {} changed leader or epoch{}",
            leads(target, &settled),
            check.checked.len(),
            check.changed.len(),
            check
                .skipped
                .as_ref()
                .map_or(String::new(), |why| format!(" (not checked: {why})"))
        );
        self.isolations.push(check);
        Ok(detail)
    }

    /// The leaders every node agrees on, waiting (at most [`SETTLE_DEADLINE`]) for each
    /// partition to be led by its preferred leader; the last agreed view if that does not
    /// happen in time, `None` if the nodes never agreed.
    async fn settled_leaders(&self, ids: &[u64]) -> Option<Vec<PartitionDescription>> {
        let until = Instant::now() + SETTLE_DEADLINE;
        let mut settled = None;
        while Instant::now() < until {
            if let Some(view) = agreed(&self.describe_all(ids).await) {
                let done = balanced(&view);
                settled = Some(view);
                if done {
                    break;
                }
            }
            tokio::time::sleep(OBSERVE_EVERY).await;
        }
        settled
    }

    /// A node up that leads the fewest partitions in `settled`, not the metadata leader when
    /// another can go; ties drawn.
    async fn least_leading(
        &self,
        rng: &mut StdRng,
        ids: &[u64],
        settled: &Option<Vec<PartitionDescription>>,
    ) -> Option<u64> {
        let meta_leader = self.meta_leader().await;
        let up: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|i| !self.lost_nodes.contains(i))
            .collect();
        let key = |n: u64| (leads(n, settled), meta_leader == Some(n));
        let best = up.iter().map(|&n| key(n)).min();
        let ties: Vec<u64> = up
            .iter()
            .copied()
            .filter(|&n| Some(key(n)) == best)
            .collect();
        ties.choose(rng).copied()
    }

    async fn meta_leader(&self) -> Option<u64> {
        let meta = tokio::time::timeout(Duration::from_secs(2), self.client.metadata())
            .await
            .ok()?
            .ok()?;
        meta.metadata_leader
    }

    /// Starts the faults of `step`; what to undo (also what the faults started before one
    /// failed did), a description of each fault, and what failed. An error: nothing started.
    async fn start(&mut self, step: &Step, taken_down: &mut BTreeSet<u64>) -> Result<Started> {
        let mut rng = StdRng::seed_from_u64(step.seed);
        let ids: Vec<u64> = self.db.lock().await.ids();
        self.tend_exited(&ids).await?;
        {
            let db = self.db.lock().await;
            self.rebuilding
                .retain(|id, from| !db.logged_since(*id, *from, "rebuilt: this node is a voter"));
        }
        // Nodes a process fault may take: up, and within the minority budget.
        let budget = minority(ids.len())
            .saturating_sub(self.lost_nodes.len() + taken_down.len() + self.rebuilding.len());
        let mut candidates: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|i| {
                !self.lost_nodes.contains(i)
                    && !taken_down.contains(i)
                    && !self.rebuilding.contains_key(i)
            })
            .collect();
        candidates.shuffle(&mut rng);
        let mut s = Starting {
            rng,
            ids,
            undo: Undo::default(),
            candidates,
            budget,
            slowed: None,
            taken_down,
        };
        let mut started = Started::default();
        for &kind in &step.faults {
            let lead = s.wait_for_slow_fsyncs(kind).await;
            match self.start_fault(kind, &mut s, lead).await {
                Ok(detail) => started.described.push((kind.name().to_string(), detail)),
                Err(e) => {
                    started.failed = Some(format!("{}: {e:#}", kind.name()));
                    break;
                }
            }
        }
        if !s.undo.rules.is_empty()
            && let Err(e) = self.net.apply(&s.undo.rules)
        {
            started
                .failed
                .get_or_insert(format!("network rules: {e:#}"));
        }
        started.undo = s.undo;
        Ok(started)
    }

    /// Before a step's faults: a node that exited since the last step is restarted if it
    /// stopped on a failed write, restarted with `--rebuild` if it refused its directory,
    /// else counted as lost.
    async fn tend_exited(&mut self, ids: &[u64]) -> Result<()> {
        let mut db = self.db.lock().await;
        for &id in ids {
            let Some(status) = db.exited(id) else {
                continue;
            };
            // A node that stopped on a failed write (a full disk) can take seconds to
            // close, and so exit after the disk-full step healed: its supervisor
            // (systemd's Restart=on-failure) starts it again, as the heal would have.
            // Seen in a 30-minute run: such a node stayed down for 27 minutes.
            let tail = db.log_tail(id, 5);
            if fail_stopped(&tail) {
                self.notes.push(format!(
                    "n{id} stopped on a failed write ({status}) after its step; restarted"
                ));
                db.start(&self.net, id)?;
                continue;
            }
            if needs_rebuild(&tail) {
                self.notes.push(format!(
                    "n{id} refused its data directory, or its rebuild was refused ({status}); restarted with --rebuild"
                ));
                self.rebuilding.insert(id, db.log_len(id));
                db.start_with(&self.net, id, &["--rebuild"])?;
                continue;
            }
            self.notes.push(format!(
                "n{id} exited on its own ({status}); it stays down. Log tail:\n{tail}"
            ));
            self.lost_nodes.insert(id);
        }
        Ok(())
    }

    /// Starts one fault of a step; returns its description.
    async fn start_fault(
        &mut self,
        kind: FaultKind,
        s: &mut Starting<'_>,
        lead: String,
    ) -> Result<String> {
        Ok(match kind {
            FaultKind::SlowDisk => self.slow_disk(s).await?,
            FaultKind::PartitionFollower => {
                self.isolate_follower(&mut s.rng, &s.ids, &mut s.undo)
                    .await?
            }
            FaultKind::PartitionLeader => {
                let target = self.partition_leader_or_any(s).await;
                s.cut_off(target);
                format!("n{target} (a partition leader) cut off from the other nodes")
            }
            FaultKind::PartitionMetaLeader => {
                let target = match self.meta_leader().await {
                    Some(l) => l,
                    None => s.any_node(),
                };
                s.cut_off(target);
                format!("n{target} (the metadata leader) cut off from the other nodes")
            }
            FaultKind::PartitionHalves => s.cut_halves(),
            FaultKind::PartitionBridge => s.cut_with_bridge(),
            FaultKind::PartitionOneWay => s.drop_one_way(),
            FaultKind::PartitionCalls => {
                let target = self.partition_leader_or_any(s).await;
                s.stall_calls(target)
            }
            FaultKind::PartitionClient => {
                let target = s.any_node();
                s.undo.rules.extend(net::cut(&[target], &[CLIENT]));
                format!("clients cannot reach n{target}")
            }
            FaultKind::PacketLoss => s.lose_packets(),
            FaultKind::Kill
            | FaultKind::Pause
            | FaultKind::CrashUnsynced
            | FaultKind::Bitflip
            | FaultKind::DiskLoss
            | FaultKind::StaleCopy => self.take_down(kind, s, lead).await?,
            FaultKind::PowerLoss => self.power_loss(s, lead).await?,
            FaultKind::FollowerBehindPurge => self.follower_behind_purge(s).await?,
            FaultKind::ClockJump => self.jump_clock(s).await?,
            FaultKind::ClockSkew => self.skew_clock(s).await?,
            FaultKind::DiskFull => {
                let target = s.any_node();
                self.db.lock().await.disk_full(target, true)?;
                s.undo.disk_writable.insert(target);
                format!("n{target}'s disk is full")
            }
        })
    }

    /// `slow-disk`: a partition leader's fsyncs answer late.
    async fn slow_disk(&self, s: &mut Starting<'_>) -> Result<String> {
        let target = self.partition_leader_or_any(s).await;
        let ms = fsync_delay_ms(&mut s.rng);
        self.db.lock().await.fsync_delay(target, ms)?;
        s.undo.slow_disk.insert(target);
        s.slowed = Some(target);
        Ok(format!(
            "n{target} (a partition leader): every fsync answers {ms} ms late"
        ))
    }

    /// `clock-jump`: a node's wall clock moves by up to ten minutes either way.
    async fn jump_clock(&self, s: &mut Starting<'_>) -> Result<String> {
        let target = s.any_node();
        let secs: i64 = s.rng.gen_range(-CLOCK_JUMP_MAX_SECS..=CLOCK_JUMP_MAX_SECS);
        // Recorded before it is set: a clock set is a clock reset, whatever follows.
        s.undo.clock_reset.insert(target);
        self.db
            .lock()
            .await
            .set_clock(target, &crate::clock::jump(secs))?;
        Ok(format!("n{target}'s wall clock moved by {secs:+} s"))
    }

    /// `clock-skew`: a node's wall clock runs slower or faster.
    async fn skew_clock(&self, s: &mut Starting<'_>) -> Result<String> {
        let target = s.any_node();
        let rate = *CLOCK_RATES.choose(&mut s.rng).expect("rates");
        s.undo.clock_reset.insert(target);
        self.db
            .lock()
            .await
            .set_clock(target, &crate::clock::skew(rate))?;
        Ok(format!("n{target}'s wall clock runs at {rate}x"))
    }

    /// A partition's leader, else any node.
    async fn partition_leader_or_any(&self, s: &mut Starting<'_>) -> u64 {
        match self.partition_leader(&mut s.rng).await {
            Some(l) => l,
            None => s.any_node(),
        }
    }

    /// `kill`, `pause`, `crash-unsynced`, `bitflip`, `disk-loss`, `stale-copy`: takes nodes
    /// down (one, or for `kill` and `pause` up to the budget), each brought back as its kind
    /// says.
    async fn take_down(
        &mut self,
        kind: FaultKind,
        s: &mut Starting<'_>,
        lead: String,
    ) -> Result<String> {
        let count = if kind == FaultKind::Kill || kind == FaultKind::Pause {
            s.rng.gen_range(1..=s.budget.max(1))
        } else {
            1
        };
        // A lost disk, half of the time, on a follower of a partition whose leader is killed
        // right after the wiped node restarted: the amnesiac and the other follower (maybe
        // behind the commit point) are then the only voters up, the path on which an
        // acknowledged record was lost (issue "disk-loss"). The leader comes back at the
        // step's end.
        let then_kill_leader = if kind == FaultKind::DiskLoss && s.rng.gen_bool(0.5) {
            self.partition_leader(&mut s.rng).await
        } else {
            None
        };
        if let Some(l) = then_kill_leader {
            s.candidates.retain(|&c| c != l);
        } else if let Some(l) = s.slowed.filter(|l| s.candidates.contains(l)) {
            s.put_first(l);
        } else if s.rng.gen_bool(0.5)
            && let Some(l) = self.partition_leader(&mut s.rng).await
            && s.candidates.contains(&l)
        {
            s.put_first(l);
        }
        let mut chosen = Vec::new();
        while chosen.len() < count.min(s.budget) && !s.candidates.is_empty() {
            chosen.push(s.candidates.remove(0));
        }
        if chosen.is_empty() {
            return Ok("skipped: no node may go down".to_string());
        }
        let mut db = self.db.lock().await;
        let mut detail = lead;
        let mut restarts = Vec::new();
        for &id in &chosen {
            s.taken_down.insert(id);
            let taken = s.take_down_one(&mut db, &self.net, kind, id, then_kill_leader)?;
            detail.push_str(&taken.note);
            restarts.extend(taken.restart);
        }
        if !restarts.is_empty() {
            detail = format!("{detail}restart {}; ", restarts.join(", "));
        }
        Ok(format!("{detail}nodes {chosen:?}"))
    }

    /// The high watermark of `partition` (CP), if its leader answers in time.
    async fn high_watermark(&self, partition: u32) -> Option<u64> {
        let listed =
            self.client
                .list_offset(&self.topic, partition, OffsetSpec::Latest, ReadMode::Cp);
        Some(
            tokio::time::timeout(Duration::from_secs(2), listed)
                .await
                .ok()?
                .ok()?
                .high_watermark,
        )
    }

    /// Waits (at most `within`) until one of `from`'s nodes logged two purges of
    /// `partition`'s log after the byte its log had reached; whether one did.
    async fn wait_for_purge(
        &self,
        partition: u32,
        from: &BTreeMap<u64, u64>,
        within: Duration,
    ) -> bool {
        let until = Instant::now() + within;
        loop {
            {
                let db = self.db.lock().await;
                if from.iter().any(|(&id, &at)| {
                    retention::partition_purges(&db.log_since(id, at), partition) >= 2
                }) {
                    return true;
                }
            }
            if Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A partition (drawn) and one of its followers that may go down (drawn); `None` when
    /// the topic cannot be described or no follower may go.
    async fn pick_follower(&self, s: &mut Starting<'_>) -> Option<(u32, Option<u64>, u64)> {
        let partition = s.rng.gen_range(0..self.partitions);
        let described = tokio::time::timeout(
            Duration::from_secs(2),
            self.client.describe_topic(&self.topic),
        )
        .await;
        let p = described
            .ok()?
            .ok()?
            .partitions
            .into_iter()
            .nth(partition as usize)?;
        let followers: Vec<u64> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| Some(*r) != p.leader && s.candidates.contains(r))
            .collect();
        let node = *followers.choose(&mut s.rng).filter(|_| s.budget > 0)?;
        Some((partition, p.leader, node))
    }

    /// `follower-behind-purge`: kills a follower of a partition; with retention, deletes the
    /// partition's records up to its high watermark a second later, waits for the leader to
    /// purge its log behind the new start, and restarts the follower (which must then install
    /// a snapshot: the heal looks for it). Without retention, the follower stays down for the
    /// step.
    async fn follower_behind_purge(&mut self, s: &mut Starting<'_>) -> Result<String> {
        let Some((partition, leader, node)) = self.pick_follower(s).await else {
            return Ok("skipped: no follower may go down".to_string());
        };
        s.candidates.retain(|&c| c != node);
        s.taken_down.insert(node);
        s.undo.restart.insert(node);
        let down_at = Instant::now();
        self.db.lock().await.kill(node)?;
        let who = format!("n{node} (a follower of partition {partition}) killed");
        if self.deletes.is_none() {
            return Ok(format!(
                "{who} for the step (no retention: nothing to purge)"
            ));
        }
        tokio::time::sleep(DOWN_BEFORE_DELETE).await;
        let start = self.delete_to_the_end(partition).await;
        // The leader's purge is what leaves the follower behind (a follower that purged
        // changes nothing for it; a leader may purge later than its followers, while its
        // replication to the dead node still reads the log): watch the leader's log, or
        // every other node's when there was none, from the DeleteRecords' answer on. Its
        // second purge of the partition from then on comes from a snapshot built after the
        // DeleteRecords applied (snapshots are built one at a time), so it reaches past what
        // the follower holds; the first may come from a build that was under way already (a
        // retention by time moves the start every round), and reach less far.
        let watched: BTreeMap<u64, u64> = {
            let db = self.db.lock().await;
            s.ids
                .iter()
                .filter(|&&i| i != node && leader.is_none_or(|l| l == i))
                .map(|&i| (i, db.log_len(i)))
                .collect()
        };
        let purged = start.is_some() && self.wait_for_purge(partition, &watched, PURGE_WAIT).await;
        tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS)).await;
        let mut db = self.db.lock().await;
        let log_from = db.log_len(node);
        db.start(&self.net, node)?;
        let lag = PurgeLag {
            node,
            partition,
            start,
            purged,
            down_ms: down_at.elapsed().as_millis() as u64,
            installed_snapshot: false,
        };
        let detail = format!("{who}; {}", lag.so_far());
        s.undo.purge_lag = Some((lag, log_from));
        Ok(detail)
    }

    /// A `DeleteRecords` (recorded) of `partition` up to its high watermark; the start it
    /// answered, if it succeeded. Only in runs with retention.
    async fn delete_to_the_end(&self, partition: u32) -> Option<u64> {
        let deletes = self.deletes.as_ref()?;
        let hw = self.high_watermark(partition).await?;
        let (rec, timeout) = (&deletes.recorder, deletes.op_timeout);
        let target = (partition, hw);
        retention::delete(&self.client, &self.topic, target, rec, NEMESIS, timeout).await
    }

    /// In runs with retention, right before a power loss: a `DeleteRecords` of a partition up
    /// to its high watermark, sent (not awaited), so that the power goes while it and the
    /// purges it starts are under way; what to say.
    async fn delete_as_power_goes(&mut self, s: &mut Starting<'_>) -> String {
        let partition = s.rng.gen_range(0..self.partitions);
        let after_ms = s.rng.gen_range(0..=10);
        if self.deletes.is_none() {
            return String::new();
        }
        let Some(hw) = self.high_watermark(partition).await else {
            return String::new();
        };
        let Some(deletes) = self.deletes.as_mut() else {
            return String::new();
        };
        if let Some(previous) = deletes.inflight.take() {
            let _ = previous.await;
        }
        let (client, topic) = (self.client.clone(), self.topic.clone());
        let (rec, timeout) = (deletes.recorder.clone(), deletes.op_timeout);
        deletes.inflight = Some(tokio::spawn(async move {
            retention::delete(&client, &topic, (partition, hw), &rec, NEMESIS, timeout).await;
        }));
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        format!("{after_ms} ms into a DeleteRecords below {hw} of partition {partition}, ")
    }

    /// In runs with compaction, right before a power loss: waits (at most [`PASS_WAIT`]) for
    /// some node to log the start of a compaction pass, so that the power goes while it is
    /// under way; where each node's log stood when the wait began, and what to say.
    async fn await_compaction_pass(&mut self, ids: &[u64]) -> (BTreeMap<u64, u64>, String) {
        if self.compaction.is_none() {
            return (BTreeMap::new(), String::new());
        }
        let from: BTreeMap<u64, u64> = {
            let db = self.db.lock().await;
            ids.iter()
                .filter(|i| !self.lost_nodes.contains(i))
                .map(|&i| (i, db.log_len(i)))
                .collect()
        };
        let began = Instant::now();
        // Bounded by PASS_WAIT.
        let started = loop {
            let db = self.db.lock().await;
            let node = from.iter().find(|&(&id, &at)| {
                crate::compaction::pass_started(&crate::compaction::log_after(&db, id, at))
            });
            if let Some((&id, _)) = node {
                break Some(id);
            }
            drop(db);
            if began.elapsed() > PASS_WAIT {
                break None;
            }
            tokio::time::sleep(PASS_POLL).await;
        };
        let waited = began.elapsed().as_millis();
        let said = match started {
            Some(id) => {
                if let Some(hits) = self.compaction.as_mut() {
                    hits.timed_by_a_pass += 1;
                }
                format!("right after n{id} started a compaction pass ({waited} ms wait), ")
            }
            None => format!("no compaction pass started within {waited} ms, "),
        };
        (from, said)
    }

    /// `power-loss`: every node up crashes at once and loses its unsynced writes; they come
    /// back one after another (sometimes the former leader first), or at the step's end.
    async fn power_loss(&mut self, s: &mut Starting<'_>, lead: String) -> Result<String> {
        // The node to bring back first, sometimes: the one a slow disk made lag, else a
        // partition leader.
        let former_leader = match s.slowed {
            Some(l) => Some(l),
            None => self.partition_leader(&mut s.rng).await,
        };
        let lead = format!("{lead}{}", self.delete_as_power_goes(s).await);
        let (passes_from, pass_lead) = self.await_compaction_pass(&s.ids).await;
        let lead = format!("{lead}{pass_lead}");
        let mut db = self.db.lock().await;
        for &id in &s.ids {
            if self.lost_nodes.contains(&id) {
                continue;
            }
            db.kill(id)?;
            s.undo.lose_unsynced.insert(id);
            s.undo.restart.insert(id);
        }
        let lead = format!(
            "{lead}{}",
            count_mid_pass(&mut self.compaction, &db, &passes_from)
        );
        // Every node is down at the same moment before any loses its cache.
        for &id in &s.undo.lose_unsynced {
            db.lose_unsynced(id)?;
        }
        let mut order: Vec<u64> = s.undo.lose_unsynced.iter().copied().collect();
        order.shuffle(&mut s.rng);
        if let Some(l) = former_leader.filter(|l| order.contains(l))
            && s.rng.gen_bool(0.6)
        {
            order.retain(|&i| i != l);
            order.insert(0, l);
        }
        let restarts = match restart_delay(&mut s.rng) {
            None => "restarts at the step's end".to_string(),
            Some(first) => {
                let mut at = first;
                let mut said = Vec::new();
                for &id in &order {
                    s.undo.early_restart.push((at, id));
                    said.push(format!("n{id} at {} ms", at.as_millis()));
                    at += Duration::from_millis(s.rng.gen_range(0..=400));
                }
                format!("restarts {}", said.join(", "))
            }
        };
        let leader = former_leader.map_or(String::new(), |l| format!(" (n{l} led a partition)"));
        Ok(format!(
            "{lead}every node crashed at once, unsynced writes lost; {restarts}{leader}"
        ))
    }

    /// Ends a step's faults.
    async fn heal(&mut self, undo: Undo) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if !undo.rules.is_empty() {
            self.net.apply(&BTreeSet::new())?;
        }
        self.undo_node_faults(&undo, &mut notes).await?;
        if let Some(deletes) = self.deletes.as_mut()
            && let Some(inflight) = deletes.inflight.take()
        {
            let _ = inflight.await;
        }
        if let Some((mut lag, from)) = undo.purge_lag {
            lag.installed_snapshot = self
                .logged_within(
                    lag.node,
                    from,
                    retention::SNAPSHOT_INSTALL_LINE,
                    SNAPSHOT_WAIT,
                )
                .await;
            notes.push(lag.describe());
            self.purge_lags.push(lag);
        }
        // A node restarted on a corrupted file should refuse it (fail-stop). When it does, it
        // never ran on the corruption, so putting the pre-flip bytes back is as if the flip
        // never happened; when it does not, it runs on, and the checker says what followed.
        for &id in &undo.flipped {
            notes.push(self.settle_flipped(id).await?);
        }
        // A node restarted on a lost or old directory should refuse it; then it comes back
        // with `--rebuild` (a learner until it caught up). One that does not refuse runs on,
        // and the checker says what followed.
        for &id in &undo.rebuild_if_refused {
            notes.push(self.settle_replaced(id).await?);
        }
        self.tend_exited_after_heal(&mut notes).await?;
        Ok(notes)
    }

    /// Resets clocks, makes disks fast and writable again (restarting a node that stopped on
    /// the full disk), resumes paused nodes and restarts the ones taken down.
    async fn undo_node_faults(&self, undo: &Undo, notes: &mut Vec<String>) -> Result<()> {
        let mut db = self.db.lock().await;
        for &id in &undo.clock_reset {
            db.set_clock(id, crate::clock::NEUTRAL)?;
        }
        for &id in &undo.slow_disk {
            db.fsync_delay(id, 0)?;
        }
        for &id in &undo.disk_writable {
            db.disk_full(id, false)?;
            // A node whose write failed on the full disk stopped (fail-stop); its operator
            // (or a supervisor such as systemd's Restart=on-failure) starts it again.
            if let Some(status) = db.exited(id) {
                notes.push(format!(
                    "n{id} stopped on the full disk ({status}); restarted"
                ));
                db.start(&self.net, id)?;
            }
        }
        for &id in &undo.resume {
            db.resume(id)?;
        }
        for &id in &undo.restart {
            db.start(&self.net, id)?;
        }
        Ok(())
    }

    /// How node `id`, restarted on a data file with flipped bits, took it: refused (then the
    /// file is restored and the node started again) or ran on.
    async fn settle_flipped(&self, id: u64) -> Result<String> {
        let status = self.exit_within(id, Duration::from_secs(5)).await;
        let mut db = self.db.lock().await;
        Ok(match status {
            Some(status) => {
                let note = format!(
                    "n{id} refused to start on its corrupted data file ({status}): {}; the file was restored",
                    db.log_tail(id, 1).trim()
                );
                db.restore_unflipped(id)?;
                db.start(&self.net, id)?;
                note
            }
            None => format!("n{id} started on its corrupted data file and kept running"),
        })
    }

    /// How node `id`, restarted on a lost or old directory, took it: refused (then it is
    /// started with `--rebuild`) or ran on.
    async fn settle_replaced(&mut self, id: u64) -> Result<String> {
        let status = self.exit_within(id, REFUSAL_WAIT).await;
        let mut db = self.db.lock().await;
        Ok(match status {
            Some(status) => {
                let note = format!(
                    "n{id} refused its lost or old data directory ({status}): {}; restarted with --rebuild",
                    db.log_tail(id, 1).trim()
                );
                self.rebuilding.insert(id, db.log_len(id));
                db.start_with(&self.net, id, &["--rebuild"])?;
                note
            }
            None => format!("n{id} started on a lost or old data directory and kept running"),
        })
    }

    /// A node that dies on its own right after a restart: restarted with `--rebuild` if it
    /// refused its directory, else it stays down; it is reported, not hidden.
    async fn tend_exited_after_heal(&mut self, notes: &mut Vec<String>) -> Result<()> {
        let ids = self.db.lock().await.ids();
        let from = self.notes.len();
        self.tend_exited(&ids).await?;
        notes.extend(self.notes.drain(from..));
        Ok(())
    }

    /// Waits (polling, at most `wait`) for node `id`'s log after byte `from` to contain
    /// `text`; whether it did.
    async fn logged_within(&self, id: u64, from: u64, text: &str, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            if self.db.lock().await.logged_since(id, from, text) {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (polling, at most `wait`) for node `id` to exit by itself; its status, or `None`
    /// if it still runs.
    async fn exit_within(&self, id: u64, wait: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + wait;
        loop {
            if let Some(status) = self.db.lock().await.exited(id) {
                return Some(status);
            }
            if Instant::now() > until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `steps`, each at its time after `t0`, recording windows; stops early when `stop`
    /// turns true. Every fault is healed before it returns.
    pub async fn run(
        &mut self,
        steps: &[Step],
        t0: Instant,
        now_ns: impl Fn() -> u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Vec<Window>, Vec<String>)> {
        let mut windows = Vec::new();
        let mut notes = Vec::new();
        for step in steps {
            let at = t0 + Duration::from_millis(step.at_ms);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.changed() => break,
            }
            let mut taken_down = BTreeSet::new();
            let start_ns = now_ns();
            let Started {
                undo,
                described,
                failed,
            } = match self.start(step, &mut taken_down).await {
                Ok(x) => x,
                Err(e) => Started {
                    failed: Some(format!("{e:#}")),
                    ..Started::default()
                },
            };
            if let Some(why) = failed {
                // What did start is still undone at the step's end.
                notes.push(format!("step at {} ms failed to start: {why}", step.at_ms));
            }
            let first = windows.len();
            for (name, detail) in described {
                windows.push(Window {
                    name,
                    detail,
                    start_ns,
                    end_ns: None,
                });
            }
            let started = Instant::now();
            let end = started + Duration::from_millis(step.duration_ms);
            let mut early = undo.early_restart.clone();
            early.sort_by_key(|(delay, _)| *delay);
            let mut stopped = false;
            for (delay, id) in early {
                if sleep_or_stop(started + delay, &mut stop).await {
                    stopped = true;
                    break;
                }
                let mut db = self.db.lock().await;
                if let Err(e) = db.start(&self.net, id) {
                    notes.push(format!("restarting n{id} failed: {e:#}"));
                }
            }
            if !stopped {
                sleep_or_stop(end, &mut stop).await;
            }
            notes.extend(self.heal(undo).await?);
            notes.append(&mut self.notes);
            let end_ns = now_ns();
            for w in &mut windows[first..] {
                w.end_ns = Some(end_ns);
            }
            if *stop.borrow() {
                break;
            }
        }
        Ok((windows, notes))
    }
}
