//! fjord's deterministic simulation tier: the real node code (`fjord_server::run_on`) running a
//! whole cluster under [turmoil]'s simulated network and clock, each node on a simulated disk,
//! with a seeded nemesis. The fault schedule is the shared core's (`fjord-harness`,
//! `jepsen/core`: `fault::timeline`, a pure function of the seed); what the client saw is
//! recorded in the core's history format and judged by its checker, the ones the process
//! tier (`fjord-jepsen`) uses: both tiers report the same anomaly classes in the same words.
//! This crate keeps the effects: turmoil hosts, links and simulated disks.
//!
//! One seed decides everything that is drawn at random: the fault schedule, turmoil's
//! network (latencies), the nodes' randomness (openraft's election timeouts, proposal tokens,
//! through [`fjord_raft::runtime::seed_thread`]), and the client's (retry jitter, through
//! `ClientConfig::rng_seed`). A failing seed is printed with the command that replays it.
//!
//! # Layout
//! - [`net`]: turmoil as fjord's network: incoming connections, peer and client channels.
//! - [`workload`]: the client host: topic, CP writers, pollers, final reads (the shared
//!   workload model, run against turmoil hosts).
//! - [`group`]: the consumer-group workload's members (crashing and pausing on their seeded
//!   plans) and the drain after the final reads.
//! - [`history`]: the client's operations in the shared format, with the faults, the leaders
//!   seen and liveness failures; its text form is the run's trace.
//! - [`run_seed`]: one run: hosts, faults applied on time, the shared check with CP
//!   guarantees, and liveness.
//!
//! # A run
//! Three nodes (`node1`..`node3`, each a turmoil host running `fjord_server::run_on` on a
//! [`SimDisk`] with the group-commit writer as a task) and a client host. The client creates a
//! topic (3 partitions, replication 3) and writes unique values in CP mode from a few tasks
//! while one poller per partition follows it with CP reads, and the members of one consumer
//! group ([`SimConfig::group_members`]) share its partitions. From [`SimConfig::faults_from`]
//! to [`SimConfig::heal_at`] the nemesis partitions, isolates and delays nodes, cuts the client
//! off from some, crashes nodes (a power loss: the disk forgets unsynced writes) and restarts
//! them; then it heals everything.
//! The client stops writing a little after the heal, then reads every partition from offset 0,
//! lets the group read on to those ends, and the shared checker judges the history, holding it to CP acks and CP reads; a run also
//! fails on liveness ([`Run::liveness`]: a partition not readable after the heal, a panic).
//!
//! # What is deterministic
//! **Always**, for a given seed: the fault schedule (which fault, which node, at which
//! simulated millisecond: checked by `tests/determinism.rs`), turmoil's message latencies,
//! the client's values, partitions and retry jitter, the nodes' random numbers (openraft's
//! election timeouts and tick phase, proposal tokens), the simulated wall clock, and what a
//! crash loses. Everything runs on one thread, commits included (the writer is a task), and
//! nothing on the node path reads the real clock.
//!
//! **Only with `--cfg tokio_unstable`**: the order in which tasks run, and so the whole run.
//! Tokio keeps an RNG per runtime that it seeds from the OS unless built with that flag
//! (`Builder::rng_seed` is unstable); it picks the first branch of every unbiased `select!`
//! (in tonic, hyper, h2 and fjord itself) and spreads the waiters of a `watch` channel over
//! its internal `Notify`s, which decides their wake-up order. Built with it, turmoil seeds
//! every host's runtime from the seed, and a seed replays byte for byte: the same trace in
//! two runs in one process, in a fresh process, and whether the seed ran alone or after other
//! seeds on other threads (checked by hand; `tests/determinism.rs` asserts identical traces
//! in that build). Without it (the workspace's normal build, and CI) a seed gives the same
//! faults at the same times, but the interleavings, and so the histories, drift apart within
//! the first simulated seconds; a failure found in CI may take a few replays, or the
//! `tokio_unstable` build, to reproduce. The flag must reach Tokio and turmoil, so it is set
//! through `RUSTFLAGS`, which rebuilds every crate: use a separate target directory.
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/sim-det \
//!   FJORD_SIM_SEED=17 cargo test -p fjord-sim --test seeds -- --nocapture
//! ```
//!
//! Two more sources were found and closed: the order in which Tokio drops a crashed
//! runtime's tasks depends on process-wide task ids, so a crash first cuts the node's links
//! (its connections' closing segments never leave, as with a real power loss); and the node's
//! group registry sorts its ids before walking them. `HashMap` iteration order (std seeds it
//! per process) does not reach the traces as far as the runs above show; dependencies could
//! still iterate one where order matters.
//!
//! What is not simulated: varying disk latency (every commit takes [`COMMIT_LATENCY`] and is
//! durable when it returns), torn writes (a power loss keeps every synced page and none of the
//! others), clock skew (every node reads the same simulated wall clock), message loss other
//! than partitions, and graceful shutdown.
//!
//! [`SimDisk`]: fjord_storage::sim_disk::SimDisk

pub mod group;
pub mod history;
pub mod net;
pub mod workload;

use std::cell::RefCell;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use fjord_harness::checker::{CheckResult, Guarantees};
use fjord_harness::fault::timeline::{self, Fault, Plan, Step, Target};
use fjord_server::boot::BootError;
use fjord_server::{Clock, Peers, ServeConfig, ServerError};
use fjord_storage::sim_disk::{DiskImage, SimDisk};
use fjord_storage::{Store, StoreOptions, WriterMode};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::history::{History, LeaderSeen};

/// How long after a node refused its disk the operator starts it again with `--rebuild`.
pub const REBUILD_AFTER: Duration = Duration::from_millis(300);

/// How long a simulated commit (its fsync) takes: a crash in this window loses the batch.
pub const COMMIT_LATENCY: Duration = Duration::from_millis(2);

/// Whether this build seeds Tokio's runtimes (`--cfg tokio_unstable`), which full
/// determinism needs.
pub const TOKIO_SEEDED: bool = cfg!(tokio_unstable);

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: u64,
    pub partitions: u32,
    pub writers: usize,
    /// Named-producer writers of the fencing workload (`fjord_harness::workload::fencing_step`).
    pub fencing_writers: u32,
    /// Members of the consumer-group workload (`fjord_harness::group`); 0 runs none.
    pub group_members: u32,
    /// Nodes down at once, at most.
    pub max_down: usize,
    /// When the nemesis starts.
    pub faults_from: Duration,
    /// When the nemesis has healed every link and restarted every node.
    pub heal_at: Duration,
    /// How long the client keeps writing after the heal.
    pub writes_after_heal: Duration,
    /// How long after the heal every partition must be readable to its end.
    pub settle: Duration,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// The nemesis also wipes disks and puts old copies back ([`Fault::DiskLoss`],
    /// [`Fault::StaleCopy`]); a node that refuses its disk is started again with `--rebuild`.
    pub amnesia: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            partitions: 3,
            writers: 2,
            fencing_writers: 1,
            group_members: fjord_harness::group::GROUP_MEMBERS,
            max_down: 2,
            faults_from: Duration::from_secs(3),
            heal_at: Duration::from_secs(13),
            writes_after_heal: Duration::from_secs(2),
            settle: Duration::from_secs(30),
            // Twice the defaults of fjord's metadata group: a simulated second costs half as
            // much (openraft's ticks and heartbeats dominate an idle cluster), and faults still
            // outpace elections.
            heartbeat_interval_ms: 200,
            election_timeout_ms: 1_200,
            amnesia: false,
        }
    }
}

/// What the simulation's workload promises: CP acks and CP reads.
pub const GUARANTEES: Guarantees = Guarantees::CP;

/// What one run found.
#[derive(Debug, Clone)]
pub struct Run {
    pub seed: u64,
    /// The shared checker's verdict on the client's history.
    pub check: CheckResult,
    /// Liveness failures, which the history's checker cannot see: `stuck: ...` (something
    /// never recovered after the heal) and `panic: ...` (a host's task panicked).
    pub liveness: Vec<String>,
    /// The history as text: equal traces mean the same run.
    pub trace: String,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// The faults, as applied.
    pub applied: Vec<Applied>,
    /// Each partition's leader as the client saw it change.
    pub leaders: Vec<LeaderSeen>,
}

impl Run {
    /// No anomaly that breaks [`GUARANTEES`], and no liveness failure.
    pub fn passed(&self) -> bool {
        self.check.is_valid(GUARANTEES) && self.liveness.is_empty()
    }

    /// What failed, one line each: every anomaly kept, in the checker's words (`lost: value
    /// 12 acknowledged at ...`), then the liveness failures. Empty for a pass.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, count) in self.check.violations(GUARANTEES) {
            let class = self.check.class(kind);
            for a in &class.ops {
                out.push(format!("{}: {}", kind.name(), a.explanation));
            }
            let more = count - class.ops.len() as u64;
            if more > 0 {
                out.push(format!("{}: {more} more", kind.name()));
            }
        }
        out.extend(self.liveness.iter().cloned());
        out
    }

    /// The verdict as text, in the process tier's report's words: the anomaly counts,
    /// examples of each class found, then the liveness failures.
    pub fn report(&self) -> String {
        let mut t = self.check.counts_text(GUARANTEES);
        if !self.check.found().is_empty() {
            t.push_str("  examples:\n");
            t.push_str(&self.check.examples_text(EXAMPLES_PER_CLASS));
        }
        for l in &self.liveness {
            t.push_str(&format!("  {l}\n"));
        }
        t
    }
}

/// Anomalies of each class [`Run::report`] shows.
const EXAMPLES_PER_CLASS: usize = 3;

/// The client host.
const CLIENT: &str = "client";

fn node_name(id: u64) -> String {
    format!("node{id}")
}

fn node_address(id: u64) -> String {
    format!("{}:{}", node_name(id), net::NODE_PORT)
}

/// Where node `id`'s peers reach it (its `peers` entry).
fn node_peer_address(id: u64) -> String {
    format!("{}:{}", node_name(id), net::PEER_PORT)
}

/// Every node reads the simulation's wall clock.
struct SimClock;

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        turmoil::since_epoch().map_or(0, |d| d.as_millis() as i64)
    }
}

fn serve_config(id: u64, config: &SimConfig) -> ServeConfig {
    ServeConfig {
        id,
        listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, net::NODE_PORT)),
        peer_listen: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, net::PEER_PORT))),
        // The host of its `peers` entry with the client port: `node_address(id)`.
        advertise: None,
        data_dir: "/simulated".into(),
        peers: Peers(
            (1..=config.nodes)
                .map(|n| (n, node_peer_address(n)))
                .collect(),
        ),
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        election_timeout_ms: config.election_timeout_ms,
        // The simulation keeps one time scale for every group and the failure detector.
        meta_heartbeat_interval_ms: config.heartbeat_interval_ms,
        meta_election_timeout_ms: config.election_timeout_ms,
        // The server's default: partitions left idle by the workload go quiet, and the
        // faults test that they wake.
        quiesce_after_ms: 1000,
        // Far sooner than the server's default (10 s), so that partitions the workload leaves
        // idle for a moment also hibernate (their Raft instances stop), and the faults test
        // that they start again: a few hibernations and restarts per seed.
        hibernate_after_ms: 300,
        cache_size_mib: 4,
        source_address: None,
        rebuild: false,
        // Short, so that the group workload's crashes and pauses move partitions in a run.
        group_session_timeout_ms: fjord_harness::group::SESSION_TIMEOUT_MS as u32,
        group_heartbeat_interval_ms: fjord_harness::group::HEARTBEAT_INTERVAL_MS as u32,
        // One coordinator partition: the run has one group, and sixteen more Raft groups
        // would double a seed's cost.
        group_partitions: fjord_harness::group::COORDINATOR_PARTITIONS,
        group_offset_retention_ms: fjord_server::config::defaults::GROUP_OFFSET_RETENTION_MS,
        worker_threads: None,
        retention_check_interval_ms: fjord_server::config::defaults::RETENTION_CHECK_INTERVAL_MS,
        // Off: the simulated disk does not run out of space (and the sampler would read it
        // on the blocking pool, outside the simulation's scheduling).
        min_free_disk_bytes: Some(0),
        metrics_listen: None,
        disk_check_interval_ms: fjord_server::config::defaults::DISK_CHECK_INTERVAL_MS,
        default_retention_ms: fjord_server::config::defaults::RETENTION_MS,
        default_retention_bytes: fjord_server::config::defaults::RETENTION_BYTES,
        default_cleanup_policy: fjord_server::config::defaults::CLEANUP_POLICY,
        default_delete_retention_ms: fjord_server::config::defaults::DELETE_RETENTION_MS,
        default_min_compaction_lag_ms: fjord_server::config::defaults::MIN_COMPACTION_LAG_MS,
        authentication: fjord_server::auth::Authentication::None,
        authorization: fjord_server::auth::Authorization::None,
        superusers: Vec::new(),
        tls_principal_rules: fjord_server::principal_rules::DEFAULT_RULES.into(),
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
        tls_client_auth: None,
        tls_peer_names: Vec::new(),
        peer_tls_cert: None,
        peer_tls_key: None,
        peer_tls_ca: None,
        tls_reload_interval_ms: fjord_server::config::defaults::TLS_RELOAD_INTERVAL_MS,
    }
}

/// What the simulated operator knows of one node and does at its next start; shared by the
/// driver and the node's software.
#[derive(Debug, Default)]
struct Operator {
    /// The node refused its disk, or its rebuild was refused, since it last started: why.
    refused: Option<String>,
    /// Its next start is with `--rebuild` (the old contents are set aside: the disk is
    /// wiped first). Set by a refusal, cleared by the start it applies to.
    rebuild_next: bool,
}

type OperatorCtl = Arc<Mutex<Operator>>;

fn operator(ctl: &OperatorCtl) -> std::sync::MutexGuard<'_, Operator> {
    ctl.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A node host's software: the real node on its simulated disk, until it crashes. A node
/// that refuses its disk stops (its host's software ends) and tells the operator.
async fn run_node(mut config: ServeConfig, disk: SimDisk, ctl: OperatorCtl) -> turmoil::Result {
    {
        let mut op = operator(&ctl);
        op.refused = None;
        if std::mem::take(&mut op.rebuild_next) {
            disk.wipe();
            config.rebuild = true;
        }
    }
    let store = Store::open_on(
        disk.backend(),
        &StoreOptions {
            cache_size_bytes: (config.cache_size_mib as usize) << 20,
            writer: WriterMode::Task {
                commit_latency: COMMIT_LATENCY,
                sync_delay: Some(disk.sync_delay()),
            },
        },
    )?;
    let listener = turmoil::net::TcpListener::bind(config.listen).await?;
    let peer_listener = turmoil::net::TcpListener::bind(config.peer_listen_address()?).await?;
    let ran = fjord_server::run_on(
        config,
        store,
        net::incoming(listener),
        net::incoming(peer_listener),
        net::peer_connector(),
        Arc::new(SimClock),
        // Not sampled: the free-space check is off in the simulation (see `serve_config`).
        Arc::new(fjord_server::disk::FixedSpace::new(
            fjord_server::disk::Space {
                available_bytes: u64::MAX,
                total_bytes: u64::MAX,
            },
        )),
        std::future::pending(),
    )
    .await;
    match ran {
        Err(ServerError::Boot(e @ (BootError::Refused(_) | BootError::RebuildRefused(_)))) => {
            let mut op = operator(&ctl);
            op.refused = Some(e.to_string());
            op.rebuild_next = true;
            Ok(())
        }
        other => Ok(other?),
    }
}

thread_local! {
    /// Panics seen on this thread during the current run.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Records panics (a task of a simulated host that panics dies silently otherwise).
fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            previous(info);
        }));
    });
}

/// The state of one link, as the nemesis left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Cut,
    Held,
}

/// Applies faults to a running simulation, and remembers which links it cut or holds and
/// which nodes it stopped.
struct Nemesis {
    disks: BTreeMap<u64, SimDisk>,
    operators: BTreeMap<u64, OperatorCtl>,
    /// Backups of disks, taken by a `StaleCopy` and put back by the next one.
    copies: BTreeMap<u64, DiskImage>,
    /// Nodes that refused their disk, and when the operator starts them with `--rebuild`.
    rebuilds: BTreeMap<u64, Duration>,
    /// Links not healthy, by host pair (smaller name first).
    links: BTreeMap<(String, String), Link>,
    /// The leaders the client last saw, to resolve targets.
    leaders: workload::Leaders,
    /// Nodes down, by the target that crashed them (whose restart starts them).
    down: BTreeMap<Target, u64>,
    /// Nodes that lost their data (a wiped disk, an old copy put back) and have not said
    /// they are voters of every group again: while there is one, no other node loses its
    /// data (a copy may still be taken: that is only a crash). Two nodes without their data at once is beyond what three replicas survive (a
    /// record committed by the third and a learner could be on one voter only), which the
    /// plan's time window ([`timeline::REBUILD_MS`]) only estimates.
    amnesiac: BTreeSet<u64>,
}

impl Nemesis {
    fn pair(a: &str, b: &str) -> (String, String) {
        (a.min(b).to_string(), a.max(b).to_string())
    }

    fn hosts(&self) -> Vec<String> {
        self.disks
            .keys()
            .map(|n| node_name(*n))
            .chain([CLIENT.to_string()])
            .collect()
    }

    fn cut(&mut self, sim: &turmoil::Sim<'_>, a: &str, b: &str) {
        sim.partition(a, b);
        self.links.insert(Self::pair(a, b), Link::Cut);
    }

    /// The leader of `partition` of the highest term seen; before any was seen, its
    /// preferred leader's likely id.
    fn leader_of(&self, partition: u32) -> u64 {
        let nodes = self.disks.len() as u64;
        self.leaders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
            .map(|seen| seen.leader)
            .filter(|l| self.disks.contains_key(l))
            .unwrap_or(1 + u64::from(partition) % nodes)
    }

    /// The node `target` is now.
    fn resolve(&self, target: Target) -> u64 {
        match target {
            Target::Node(n) => n,
            Target::LeaderOf(p) => self.leader_of(p),
            Target::FollowerOf(p, k) => {
                let leader = self.leader_of(p);
                let followers: Vec<u64> = self
                    .disks
                    .keys()
                    .copied()
                    .filter(|n| *n != leader)
                    .collect();
                followers[usize::from(k) % followers.len()]
            }
        }
    }

    /// Power loss of `node`.
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, node: u64) {
        // The disk first: the dying node's teardown must not reach it.
        self.disks[&node].power_loss();
        self.stop(sim, node);
    }

    /// Stops `node`, whose disk has lost power.
    fn stop(&mut self, sim: &mut turmoil::Sim<'_>, node: u64) {
        let name = node_name(node);
        // A machine that loses power sends nothing, so its links are cut while its tasks are
        // dropped: their connections' closing segments never leave. (This also keeps the
        // run deterministic: Tokio drops a runtime's tasks in an order that depends on
        // process-wide task ids.)
        let others: Vec<String> = self.hosts().into_iter().filter(|h| *h != name).collect();
        for other in &others {
            sim.partition(name.as_str(), other.as_str());
        }
        sim.crash(name.as_str());
        for other in &others {
            match self.links.get(&Self::pair(&name, other)) {
                None => sim.repair(name.as_str(), other.as_str()),
                Some(Link::Held) => sim.hold(name.as_str(), other.as_str()),
                Some(Link::Cut) => {}
            }
        }
    }

    /// Whether a node other than `node` lost its data and is not rebuilt yet (`node` itself
    /// losing it again leaves one node without its data, as before).
    fn another_amnesiac(&self, node: u64) -> bool {
        self.amnesiac.iter().any(|n| *n != node)
    }

    fn is_down(&self, node: u64) -> bool {
        self.down.values().any(|n| *n == node)
    }

    /// The operator's part: a node that refused its disk is started again with `--rebuild`
    /// [`REBUILD_AFTER`] later, unless the nemesis has it down (its restart then starts it
    /// with `--rebuild`). Returns the rebuilds due at `now`.
    fn operator_steps(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) -> Vec<Step> {
        for (node, ctl) in &self.operators {
            if operator(ctl).refused.take().is_some() {
                self.rebuilds.entry(*node).or_insert(now + REBUILD_AFTER);
            }
        }
        let due: Vec<u64> = self
            .rebuilds
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| *n)
            .collect();
        let mut steps = Vec::new();
        for node in due {
            self.rebuilds.remove(&node);
            if !self.is_down(node) && !sim.is_host_running(node_name(node).as_str()) {
                steps.push(Step {
                    at: now,
                    fault: Fault::Rebuild(node),
                });
            }
        }
        steps
    }

    /// Applies `fault`; says which node it struck when it had a target to resolve.
    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, fault: Fault) -> Struck {
        match fault {
            Fault::Partition(a, b) => self.cut(sim, &node_name(a), &node_name(b)),
            Fault::Isolate(target) => return self.isolate(sim, target),
            Fault::Hold(a, b) => self.hold(sim, a, b),
            Fault::CutClient(a) => self.cut(sim, CLIENT, &node_name(a)),
            Fault::HealNetwork => {
                for ((a, b), _) in std::mem::take(&mut self.links) {
                    // Releasing delivers held messages; repairing ends partitions.
                    sim.release(a.as_str(), b.as_str());
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            Fault::Crash(target) => return self.power_loss(sim, target, false),
            Fault::DiskLoss(target) => return self.power_loss(sim, target, true),
            Fault::StaleCopy(node) => return self.stale_copy(sim, node),
            Fault::Rebuild(node) => {
                operator(&self.operators[&node]).rebuild_next = true;
                sim.bounce(node_name(node));
                return Struck::Node(node);
            }
            Fault::CrashAll(partition) => return self.crash_all(sim, partition),
            Fault::Restart(target) => {
                let Some(node) = self.down.remove(&target) else {
                    return Struck::NotDown;
                };
                sim.bounce(node_name(node));
                return Struck::Node(node);
            }
            Fault::SlowDisk(target, ms) => {
                let node = self.resolve(target);
                self.disks[&node].set_sync_delay(Duration::from_millis(ms));
                return Struck::Node(node);
            }
            Fault::HealDisks => {
                for disk in self.disks.values() {
                    disk.set_sync_delay(Duration::ZERO);
                }
            }
        }
        Struck::Fixed
    }

    /// Cuts `target` off from every other node.
    fn isolate(&mut self, sim: &mut turmoil::Sim<'_>, target: Target) -> Struck {
        let a = self.resolve(target);
        for b in self
            .disks
            .keys()
            .copied()
            .filter(|b| *b != a)
            .collect::<Vec<_>>()
        {
            self.cut(sim, &node_name(a), &node_name(b));
        }
        Struck::Node(a)
    }

    /// Holds the messages between `a` and `b` until the network heals.
    fn hold(&mut self, sim: &mut turmoil::Sim<'_>, a: u64, b: u64) {
        let (a, b) = (node_name(a), node_name(b));
        // A cut link stays cut: holding it would revive it.
        if let Entry::Vacant(link) = self.links.entry(Self::pair(&a, &b)) {
            sim.hold(a.as_str(), b.as_str());
            link.insert(Link::Held);
        }
    }

    /// `target`'s power loss, its disk wiped too when `amnesia` (a lost disk); skipped when
    /// it is down already, or when it would be a second node without its data.
    fn power_loss(&mut self, sim: &mut turmoil::Sim<'_>, target: Target, amnesia: bool) -> Struck {
        let node = self.resolve(target);
        if self.is_down(node)
            || self.down.contains_key(&target)
            || (amnesia && self.another_amnesiac(node))
        {
            return Struck::Skipped(node);
        }
        self.crash(sim, node);
        if amnesia {
            self.disks[&node].wipe();
            self.amnesiac.insert(node);
        }
        self.down.insert(target, node);
        Struck::Node(node)
    }

    /// `node`'s power loss, with a copy of its disk taken, or the earlier copy put back.
    fn stale_copy(&mut self, sim: &mut turmoil::Sim<'_>, node: u64) -> Struck {
        let target = Target::Node(node);
        // Taking a copy is only a crash; putting one back is a data loss.
        let restore = self.copies.contains_key(&node);
        if self.is_down(node)
            || self.down.contains_key(&target)
            || (restore && self.another_amnesiac(node))
        {
            return Struck::Skipped(node);
        }
        self.crash(sim, node);
        let disk = &self.disks[&node];
        match self.copies.remove(&node) {
            Some(copy) => {
                disk.replace(&copy);
                self.amnesiac.insert(node);
            }
            None => {
                self.copies.insert(node, disk.copy());
            }
        }
        self.down.insert(target, node);
        Struck::Node(node)
    }

    /// Every node's power loss at once; the partition's roles, resolved now, are the ones
    /// their restarts start.
    fn crash_all(&mut self, sim: &mut turmoil::Sim<'_>, partition: u32) -> Struck {
        let roles = [
            Target::LeaderOf(partition),
            Target::FollowerOf(partition, 0),
            Target::FollowerOf(partition, 1),
        ];
        let nodes = roles.map(|t| self.resolve(t));
        // Every disk first: no node may sync after another lost power.
        for node in self.disks.keys() {
            if !self.is_down(*node) {
                self.disks[node].power_loss();
            }
        }
        for node in self.disks.keys().copied().collect::<Vec<_>>() {
            if !self.is_down(node) {
                self.stop(sim, node);
            }
        }
        // Whatever crashed them before, the restarts of the roles start them now.
        self.down.clear();
        self.down.extend(roles.into_iter().zip(nodes));
        Struck::Roles(nodes)
    }
}

/// Which node a fault struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Struck {
    /// The fault names its nodes (or none).
    Fixed,
    /// Its target was this node.
    Node(u64),
    /// A power loss of all: the partition's leader, then its followers, as resolved.
    Roles([u64; 3]),
    /// A crash skipped: its target resolved to this node, down already.
    Skipped(u64),
    /// A restart skipped: its crash was.
    NotDown,
}

/// A fault as the driver applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Simulated ms since the start.
    pub at_ms: u64,
    pub fault: Fault,
    pub struck: Struck,
}

/// Installs the process's tracing: the rebuild watch always, and the nodes' and openraft's
/// logs on the test output when `RUST_LOG` is set.
fn init_logging() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let logs = std::env::var_os("RUST_LOG").is_some().then(|| {
            tracing_subscriber::fmt::layer()
                .with_timer(SimTime)
                .with_ansi(false)
                .with_test_writer()
                .with_filter(tracing_subscriber::EnvFilter::from_default_env())
        });
        let watch = RebuiltWatch.with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("fjord_server::rebuild", tracing::Level::WARN),
        );
        let _ = tracing_subscriber::registry()
            .with(watch)
            .with(logs)
            .try_init();
    });
}

thread_local! {
    /// Nodes that said, during the current run, that they are voters of every group again
    /// after a rebuild (the real tier reads the same line from the node's log).
    static REBUILT: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Catches the node's "rebuilt: ..." line (a run is on one thread: the thread-local is the run's).
struct RebuiltWatch;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RebuiltWatch {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            rebuilt: bool,
            node: Option<u64>,
        }
        impl tracing::field::Visit for Fields {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "node" {
                    self.node = Some(value);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.rebuilt = format!("{value:?}").starts_with("rebuilt:");
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (true, Some(node)) = (fields.rebuilt, fields.node) {
            REBUILT.with(|r| r.borrow_mut().push(node));
        }
    }
}

/// Stamps log lines with the simulated time (ms since the start), as the trace's lines are.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>8}", t.as_millis()),
            None => write!(w, "{:>8}", "-"),
        }
    }
}

/// Runs the cluster, the workload and the nemesis of `seed`, and checks the history.
pub fn run_seed(seed: u64, config: &SimConfig) -> Run {
    let plan = timeline::plan(
        &mut StdRng::seed_from_u64(seed),
        config.nodes,
        config.max_down,
        config.faults_from,
        config.heal_at,
        config.amnesia,
    );
    run_plan(seed, config, &plan)
}

/// Runs the cluster and the workload of `seed` under the faults of `plan` (which must heal
/// by `config.heal_at`), and checks the history.
pub fn run_plan(seed: u64, config: &SimConfig, plan: &Plan) -> Run {
    assert!(
        plan.heal_at <= config.heal_at,
        "the plan heals at {:?}, after the workload's heal ({:?})",
        plan.heal_at,
        config.heal_at
    );
    init_logging();
    watch_panics();
    PANICS.with(|p| p.borrow_mut().clear());
    REBUILT.with(|r| r.borrow_mut().clear());
    fjord_raft::runtime::seed_thread(seed);
    let writes_until = config.heal_at + config.writes_after_heal;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .simulation_duration(writes_until + config.settle + Duration::from_secs(30))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .tcp_capacity(1 << 16)
        .build();
    let (disks, operators) = add_nodes(&mut sim, config);
    let history = Arc::new(Mutex::new(History::default()));
    let leaders = workload::Leaders::default();
    sim.client(
        CLIENT,
        workload::run(
            workload_of(seed, config, writes_until),
            history.clone(),
            leaders.clone(),
        ),
    );
    let mut nemesis = Nemesis {
        disks,
        operators,
        copies: BTreeMap::new(),
        rebuilds: BTreeMap::new(),
        links: BTreeMap::new(),
        leaders,
        down: BTreeMap::new(),
        amnesiac: BTreeSet::new(),
    };
    let (applied, error) = drive(&mut sim, &mut nemesis, plan, &history);
    let simulated = sim.elapsed();
    drop(sim);
    fjord_raft::runtime::unseed_thread();
    let history = std::mem::take(&mut *history.lock().unwrap_or_else(PoisonError::into_inner));
    checked(seed, history, error, simulated, applied)
}

/// Adds a host per node, each on its own simulated disk with its operator's controls.
fn add_nodes(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
) -> (BTreeMap<u64, SimDisk>, BTreeMap<u64, OperatorCtl>) {
    let disks: BTreeMap<u64, SimDisk> = (1..=config.nodes).map(|n| (n, SimDisk::new())).collect();
    let operators: BTreeMap<u64, OperatorCtl> = (1..=config.nodes)
        .map(|n| (n, OperatorCtl::default()))
        .collect();
    for (id, disk) in &disks {
        let serve = serve_config(*id, config);
        let disk = disk.clone();
        let ctl = operators[id].clone();
        sim.host(node_name(*id), move || {
            run_node(serve.clone(), disk.clone(), ctl.clone())
        });
    }
    (disks, operators)
}

/// The client host's workload for `seed`.
fn workload_of(seed: u64, config: &SimConfig, writes_until: Duration) -> workload::Workload {
    workload::Workload {
        seed,
        brokers: (1..=config.nodes).map(node_address).collect(),
        topic: "sim".into(),
        partitions: config.partitions,
        replication: config.nodes.min(3) as u32,
        writers: config.writers,
        fencing_writers: config.fencing_writers,
        group_members: config.group_members,
        writes_until,
        heal_at: config.heal_at,
        settle: config.settle,
    }
}

/// Steps the simulation to its end, applying the operator's rebuilds and the plan's faults
/// as they come due and recording each; returns them, and the simulation's error if it
/// failed.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    nemesis: &mut Nemesis,
    plan: &Plan,
    history: &Mutex<History>,
) -> (Vec<Applied>, Option<String>) {
    let mut applied = Vec::new();
    let mut steps = plan.steps.iter().peekable();
    let error = loop {
        let now = sim.elapsed();
        for node in REBUILT.with(|r| std::mem::take(&mut *r.borrow_mut())) {
            nemesis.amnesiac.remove(&node);
        }
        let due = nemesis.operator_steps(sim, now);
        let planned = std::iter::from_fn(|| steps.next_if(|s| s.at <= now).copied());
        for step in due.into_iter().chain(planned) {
            let struck = nemesis.apply(sim, step.fault);
            let at_ms = sim.elapsed().as_millis() as u64;
            let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
            h.faults.push((at_ms, format!("{:?}", step.fault)));
            if struck != Struck::Fixed {
                h.struck
                    .push((at_ms, format!("{:?} {struck:?}", step.fault)));
            }
            applied.push(Applied {
                at_ms,
                fault: step.fault,
                struck,
            });
        }
        match sim.step() {
            Ok(true) => break None,
            Ok(false) => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    (applied, error)
}

/// The run's outcome: its history checked, with what got stuck or panicked.
fn checked(
    seed: u64,
    mut history: History,
    error: Option<String>,
    simulated: Duration,
    applied: Vec<Applied>,
) -> Run {
    if let Some(e) = error {
        history.stuck.push(format!("the simulation failed: {e}"));
    }
    history.panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let check = fjord_harness::checker::check(&history.events);
    let liveness = (history.stuck.iter().map(|s| format!("stuck: {s}")))
        .chain(history.panics.iter().map(|p| format!("panic: {p}")))
        .collect();
    Run {
        seed,
        check,
        liveness,
        trace: history.trace(),
        simulated,
        applied,
        leaders: history.leaders.clone(),
    }
}
