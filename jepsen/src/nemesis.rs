//! The nemesis: which faults happen when, decided up front from the seed ([`plan`], pure),
//! then carried out against the cluster ([`Nemesis`]).
//!
//! The plan fixes every step's time, length, fault kinds and random choices (which node,
//! which half, how far the clock jumps); only targets defined by the cluster's state at that
//! moment ("the leader of partition 2") are resolved when the step starts, so the same seed
//! gives the same schedule.
//!
//! What must hold: every step is healed before the next begins and all faults are healed at
//! the end (nodes restarted, rules cleared, clocks reset, disks writable); at most a minority
//! of nodes is down or paused at once, except in a power loss, which takes every node down
//! together and restarts them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use fjord_client::Client;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::db::Db;
use crate::net::{self, CLIENT, Network, Rule};
use crate::report::FaultWindow as Window;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Cut the leader of one partition off from the other nodes (clients still reach it).
    PartitionLeader,
    /// Cut the metadata leader off from the other nodes.
    PartitionMetaLeader,
    /// Split the nodes into a majority and a minority.
    PartitionHalves,
    /// Two halves that cannot talk to each other, and one node that talks to both.
    PartitionBridge,
    /// One node's packets to the others are dropped; theirs to it still arrive.
    PartitionOneWay,
    /// The clients cannot reach one node.
    PartitionClient,
    /// A share of the packets between nodes is dropped.
    PacketLoss,
    /// kill -9 a minority of nodes; restart them when the step ends.
    Kill,
    /// SIGSTOP a minority of nodes; SIGCONT them when the step ends.
    Pause,
    /// Move one node's wall clock by up to ±10 minutes.
    ClockJump,
    /// Make one node's wall clock run at 0.25-4 times the real rate.
    ClockSkew,
    /// kill -9 a node and drop the writes its disk had not fsynced.
    CrashUnsynced,
    /// Every node crashes at once and loses its unsynced writes, as in a power cut.
    PowerLoss,
    /// One node's disk refuses writes (ENOSPC).
    DiskFull,
    /// kill -9 a node, flip random bits in its data file, restart it.
    Bitflip,
}

impl FaultKind {
    pub const ALL: [FaultKind; 15] = [
        FaultKind::PartitionLeader,
        FaultKind::PartitionMetaLeader,
        FaultKind::PartitionHalves,
        FaultKind::PartitionBridge,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionClient,
        FaultKind::PacketLoss,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ClockJump,
        FaultKind::ClockSkew,
        FaultKind::CrashUnsynced,
        FaultKind::PowerLoss,
        FaultKind::DiskFull,
        FaultKind::Bitflip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionMetaLeader => "partition-meta-leader",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionClient => "partition-client",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::CrashUnsynced => "crash-unsynced",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Bitflip => "bitflip",
        }
    }

    /// Whether the fault needs the nodes' data on a lazy filesystem.
    pub fn needs_lazy_disk(self) -> bool {
        matches!(
            self,
            FaultKind::CrashUnsynced | FaultKind::PowerLoss | FaultKind::DiskFull
        )
    }

    /// Whether the fault takes node processes down or stops them.
    fn is_process(self) -> bool {
        matches!(
            self,
            FaultKind::Kill
                | FaultKind::Pause
                | FaultKind::CrashUnsynced
                | FaultKind::PowerLoss
                | FaultKind::Bitflip
        )
    }

    fn is_network(self) -> bool {
        self.name().starts_with("partition") || self == FaultKind::PacketLoss
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a comma-separated list of fault kinds and groups: `partition` (every network
/// fault), `process` (kill, pause), `clock`, `disk` (crash-unsynced, power-loss, disk-full,
/// bitflip), `all`, `none`.
pub fn parse_faults(s: &str) -> Result<BTreeSet<FaultKind>, String> {
    let mut set = BTreeSet::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "none" => {}
            "all" => set.extend(FaultKind::ALL),
            "partition" | "network" => {
                set.extend(FaultKind::ALL.into_iter().filter(|k| k.is_network()))
            }
            "process" => set.extend([FaultKind::Kill, FaultKind::Pause]),
            "clock" => set.extend([FaultKind::ClockJump, FaultKind::ClockSkew]),
            "disk" => set.extend([
                FaultKind::CrashUnsynced,
                FaultKind::PowerLoss,
                FaultKind::DiskFull,
                FaultKind::Bitflip,
            ]),
            other => {
                let kind = FaultKind::ALL
                    .into_iter()
                    .find(|k| k.name() == other)
                    .ok_or_else(|| {
                        format!(
                            "unknown fault {other:?}: use all, none, partition, process, clock, disk, or one of {}",
                            FaultKind::ALL.map(FaultKind::name).join(", ")
                        )
                    })?;
                set.insert(kind);
            }
        }
    }
    Ok(set)
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let set = parse_faults(s)?;
        match set.len() {
            1 => Ok(*set.iter().next().expect("one")),
            _ => Err(format!("{s:?} is not a single fault kind")),
        }
    }
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// When the step starts, from the start of the workload.
    pub at_ms: u64,
    /// How long its faults last.
    pub duration_ms: u64,
    pub faults: Vec<FaultKind>,
    /// The seed of the step's own random choices (nodes, halves, clock offsets).
    pub seed: u64,
}

/// Decides the whole schedule: quiet gaps of 2-5 s between fault steps of 3-10 s; one
/// fault kind per step, or two (a network fault with a process or clock fault) in a quarter
/// of them. Steps end at least `quiet_end` before `total`.
pub fn plan(
    seed: u64,
    kinds: &BTreeSet<FaultKind>,
    total: Duration,
    quiet_end: Duration,
) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds: Vec<FaultKind> = kinds.iter().copied().collect();
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    let end_ms = total.saturating_sub(quiet_end).as_millis() as u64;
    let mut t = rng.gen_range(2_000..5_000);
    loop {
        let duration_ms = rng.gen_range(3_000..10_000);
        if t + duration_ms > end_ms {
            break;
        }
        let first = *kinds.choose(&mut rng).expect("kinds is not empty");
        let mut faults = vec![first];
        if rng.gen_bool(0.25) && first != FaultKind::PowerLoss {
            let partners: Vec<FaultKind> = kinds
                .iter()
                .copied()
                .filter(|k| {
                    *k != FaultKind::PowerLoss
                        && ((first.is_network() && !k.is_network())
                            || (!first.is_network() && k.is_network()))
                        && !(first.is_process() && k.is_process())
                })
                .collect();
            if let Some(second) = partners.choose(&mut rng) {
                faults.push(*second);
            }
        }
        steps.push(Step {
            at_ms: t,
            duration_ms,
            faults,
            seed: rng.r#gen(),
        });
        t += duration_ms + rng.gen_range(2_000..5_000);
    }
    steps
}

/// What must be undone when a step ends.
#[derive(Debug, Default)]
struct Undo {
    rules: BTreeSet<Rule>,
    restart: BTreeSet<u64>,
    lose_unsynced: BTreeSet<u64>,
    resume: BTreeSet<u64>,
    clock_reset: BTreeSet<u64>,
    disk_writable: BTreeSet<u64>,
    /// Nodes whose data file has flipped bits: watch how they take it.
    flipped: BTreeSet<u64>,
}

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
}

fn minority(n: usize) -> usize {
    (n - 1) / 2
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

    async fn meta_leader(&self) -> Option<u64> {
        let meta = tokio::time::timeout(Duration::from_secs(2), self.client.metadata())
            .await
            .ok()?
            .ok()?;
        meta.metadata_leader
    }

    /// Starts the faults of `step`; returns what to undo and a description of each fault.
    async fn start(
        &mut self,
        step: &Step,
        taken_down: &mut BTreeSet<u64>,
    ) -> Result<(Undo, Vec<(String, String)>)> {
        let mut rng = StdRng::seed_from_u64(step.seed);
        let ids: Vec<u64> = self.db.lock().await.ids();
        let n = ids.len();
        let mut undo = Undo::default();
        let mut described = Vec::new();
        let others = |x: u64| ids.iter().copied().filter(|&i| i != x).collect::<Vec<_>>();
        // Nodes a process fault may take: up, and within the minority budget.
        {
            let mut db = self.db.lock().await;
            for &id in &ids {
                if let Some(status) = db.exited(id) {
                    self.notes.push(format!(
                        "n{id} exited on its own ({status}); it stays down. Log tail:\n{}",
                        db.log_tail(id, 5)
                    ));
                    self.lost_nodes.insert(id);
                }
            }
        }
        let budget = minority(n).saturating_sub(self.lost_nodes.len() + taken_down.len());
        let mut candidates: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|i| !self.lost_nodes.contains(i) && !taken_down.contains(i))
            .collect();
        candidates.shuffle(&mut rng);
        for &kind in &step.faults {
            let detail = match kind {
                FaultKind::PartitionLeader => {
                    let target = match self.partition_leader(&mut rng).await {
                        Some(l) => l,
                        None => *ids.choose(&mut rng).expect("nodes"),
                    };
                    undo.rules.extend(net::cut(&[target], &others(target)));
                    format!("n{target} (a partition leader) cut off from the other nodes")
                }
                FaultKind::PartitionMetaLeader => {
                    let target = match self.meta_leader().await {
                        Some(l) => l,
                        None => *ids.choose(&mut rng).expect("nodes"),
                    };
                    undo.rules.extend(net::cut(&[target], &others(target)));
                    format!("n{target} (the metadata leader) cut off from the other nodes")
                }
                FaultKind::PartitionHalves => {
                    let mut shuffled = ids.clone();
                    shuffled.shuffle(&mut rng);
                    let (small, big) = shuffled.split_at(minority(n).max(1));
                    undo.rules.extend(net::cut(small, big));
                    format!("{small:?} | {big:?}")
                }
                FaultKind::PartitionBridge => {
                    let mut shuffled = ids.clone();
                    shuffled.shuffle(&mut rng);
                    let bridge = shuffled[0];
                    let rest = &shuffled[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    undo.rules.extend(net::cut(a, b));
                    format!("{a:?} | {b:?}, n{bridge} sees both")
                }
                FaultKind::PartitionOneWay => {
                    let from = *ids.choose(&mut rng).expect("nodes");
                    for to in others(from) {
                        undo.rules.insert(Rule::Drop { from, to });
                    }
                    format!("packets from n{from} to the other nodes dropped")
                }
                FaultKind::PartitionClient => {
                    let target = *ids.choose(&mut rng).expect("nodes");
                    undo.rules.extend(net::cut(&[target], &[CLIENT]));
                    format!("clients cannot reach n{target}")
                }
                FaultKind::PacketLoss => {
                    let percent = rng.gen_range(10..40);
                    for &a in &ids {
                        for &b in &ids {
                            if a != b {
                                undo.rules.insert(Rule::Loss {
                                    from: a,
                                    to: b,
                                    percent,
                                });
                            }
                        }
                    }
                    format!("{percent}% of packets between nodes dropped")
                }
                FaultKind::Kill
                | FaultKind::Pause
                | FaultKind::CrashUnsynced
                | FaultKind::Bitflip => {
                    let count = if kind == FaultKind::Kill || kind == FaultKind::Pause {
                        rng.gen_range(1..=budget.max(1))
                    } else {
                        1
                    };
                    let mut chosen = Vec::new();
                    // Prefer a partition leader as the first victim half of the time.
                    if rng.gen_bool(0.5)
                        && let Some(l) = self.partition_leader(&mut rng).await
                        && candidates.contains(&l)
                    {
                        candidates.retain(|&c| c != l);
                        candidates.insert(0, l);
                    }
                    while chosen.len() < count.min(budget) && !candidates.is_empty() {
                        chosen.push(candidates.remove(0));
                    }
                    if chosen.is_empty() {
                        described.push((
                            kind.name().to_string(),
                            "skipped: no node may go down".to_string(),
                        ));
                        continue;
                    }
                    let mut db = self.db.lock().await;
                    let mut detail = String::new();
                    for &id in &chosen {
                        taken_down.insert(id);
                        match kind {
                            FaultKind::Pause => {
                                db.pause(id)?;
                                undo.resume.insert(id);
                            }
                            FaultKind::Kill => {
                                db.kill(id)?;
                                undo.restart.insert(id);
                            }
                            FaultKind::CrashUnsynced => {
                                db.kill(id)?;
                                db.lose_unsynced(id)?;
                                undo.restart.insert(id);
                            }
                            FaultKind::Bitflip => {
                                db.kill(id)?;
                                let bits = rng.gen_range(1..=8);
                                let at = db.flip_bits(id, bits, &mut rng)?;
                                detail = format!("{bits} bits flipped at byte offsets {at:?}; ");
                                undo.restart.insert(id);
                                undo.flipped.insert(id);
                            }
                            _ => unreachable!(),
                        }
                    }
                    format!("{detail}nodes {chosen:?}")
                }
                FaultKind::PowerLoss => {
                    let mut db = self.db.lock().await;
                    for &id in &ids {
                        if self.lost_nodes.contains(&id) {
                            continue;
                        }
                        db.kill(id)?;
                        undo.lose_unsynced.insert(id);
                        undo.restart.insert(id);
                    }
                    // Every node is down at the same moment before any loses its cache.
                    for &id in &undo.lose_unsynced {
                        db.lose_unsynced(id)?;
                    }
                    "every node crashed at once, unsynced writes lost".to_string()
                }
                FaultKind::ClockJump => {
                    let target = *ids.choose(&mut rng).expect("nodes");
                    let secs: i64 = rng.gen_range(-600..=600);
                    self.db
                        .lock()
                        .await
                        .set_clock(target, &format!("{secs:+}"))?;
                    undo.clock_reset.insert(target);
                    format!("n{target}'s wall clock moved by {secs:+} s")
                }
                FaultKind::ClockSkew => {
                    let target = *ids.choose(&mut rng).expect("nodes");
                    let rate = *[0.25, 0.5, 2.0, 4.0].choose(&mut rng).expect("rates");
                    self.db
                        .lock()
                        .await
                        .set_clock(target, &format!("+0 x{rate}"))?;
                    undo.clock_reset.insert(target);
                    format!("n{target}'s wall clock runs at {rate}x")
                }
                FaultKind::DiskFull => {
                    let target = *ids.choose(&mut rng).expect("nodes");
                    self.db.lock().await.disk_full(target, true)?;
                    undo.disk_writable.insert(target);
                    format!("n{target}'s disk is full")
                }
            };
            described.push((kind.name().to_string(), detail));
        }
        if !undo.rules.is_empty() {
            self.net.apply(&undo.rules)?;
        }
        Ok((undo, described))
    }

    /// Ends a step's faults.
    async fn heal(&mut self, undo: Undo) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if !undo.rules.is_empty() {
            self.net.apply(&BTreeSet::new())?;
        }
        let mut db = self.db.lock().await;
        for id in undo.clock_reset {
            db.set_clock(id, "+0")?;
        }
        for id in undo.disk_writable {
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
        for id in undo.resume {
            db.resume(id)?;
        }
        for id in undo.restart {
            db.start(&self.net, id)?;
        }
        // A node restarted on a corrupted file should refuse it (fail-stop). When it does, it
        // never ran on the corruption, so putting the pre-flip bytes back is as if the flip
        // never happened; when it does not, it runs on, and the checker says what followed.
        for &id in &undo.flipped {
            let until = Instant::now() + Duration::from_secs(5);
            let status = loop {
                if let Some(status) = db.exited(id) {
                    break Some(status);
                }
                if Instant::now() > until {
                    break None;
                }
                drop(db);
                tokio::time::sleep(Duration::from_millis(100)).await;
                db = self.db.lock().await;
            };
            match status {
                Some(status) => {
                    notes.push(format!(
                        "n{id} refused to start on its corrupted data file ({status}): {}; the file was restored",
                        db.log_tail(id, 1).trim()
                    ));
                    db.restore_unflipped(id)?;
                    db.start(&self.net, id)?;
                }
                None => notes.push(format!(
                    "n{id} started on its corrupted data file and kept running"
                )),
            }
        }
        // A node that dies on its own right after a restart stays down; it is reported, not
        // hidden.
        for id in db.ids() {
            if let Some(status) = db.exited(id) {
                notes.push(format!(
                    "n{id} exited on its own ({status}); it stays down. Log tail:\n{}",
                    db.log_tail(id, 5)
                ));
                self.lost_nodes.insert(id);
            }
        }
        Ok(notes)
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
            let (undo, described) = match self.start(step, &mut taken_down).await {
                Ok(x) => x,
                Err(e) => {
                    notes.push(format!("step at {} ms failed to start: {e:#}", step.at_ms));
                    (Undo::default(), Vec::new())
                }
            };
            let first = windows.len();
            for (name, detail) in described {
                windows.push(Window {
                    name,
                    detail,
                    start_ns,
                    end_ns: None,
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(step.duration_ms)) => {}
                _ = stop.changed() => {}
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

/// Which nodes are up, for the report.
pub fn describe_plan(steps: &[Step]) -> String {
    let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for s in steps {
        for f in &s.faults {
            *by_kind.entry(*f).or_default() += 1;
        }
    }
    by_kind
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let kinds = parse_faults("all").unwrap();
        let a = plan(7, &kinds, Duration::from_secs(120), Duration::from_secs(10));
        let b = plan(7, &kinds, Duration::from_secs(120), Duration::from_secs(10));
        let c = plan(8, &kinds, Duration::from_secs(120), Duration::from_secs(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() >= 5, "{a:?}");
    }

    #[test]
    fn steps_do_not_overlap_and_end_before_the_quiet_end() {
        let kinds = parse_faults("partition,process").unwrap();
        for seed in 0..50 {
            let steps = plan(
                seed,
                &kinds,
                Duration::from_secs(60),
                Duration::from_secs(10),
            );
            let mut t = 0;
            for s in &steps {
                assert!(s.at_ms >= t, "seed {seed}: {steps:?}");
                t = s.at_ms + s.duration_ms;
                assert!(
                    !(s.faults.len() == 2 && s.faults[0].is_process() && s.faults[1].is_process())
                );
            }
            assert!(t <= 50_000, "seed {seed}");
        }
    }

    #[test]
    fn fault_names_parse_and_unknown_ones_are_refused() {
        assert_eq!(parse_faults("kill,pause").unwrap().len(), 2);
        assert!(
            parse_faults("disk")
                .unwrap()
                .contains(&FaultKind::PowerLoss)
        );
        let err = parse_faults("explode").unwrap_err();
        assert!(err.contains("unknown fault \"explode\""), "{err}");
        assert_eq!("clock-jump".parse::<FaultKind>(), Ok(FaultKind::ClockJump));
    }
}
