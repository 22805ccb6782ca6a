//! One run: build the network, start the nodes, create the topic, run the workload while the
//! nemesis carries out its plan, heal, read everything back, and write the history, the
//! fault windows and the notes into the run's directory.
//!
//! What must hold: the network namespaces and node processes are gone when [`run`] returns,
//! whether it succeeded, failed or panicked (they are owned by values whose `Drop` cleans
//! up); the workload and the nemesis stop by themselves at the run's end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fjord_client::{Acks, Client, ClientConfig, ReadMode};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::compaction::{CompactionHits, CompactionOptions};
use crate::db::{Db, NodeOptions};
use crate::group::{self, Group, MemberOptions};
use crate::nemesis::Nemesis;
use crate::net::{self, Netns, Network};
use crate::proxy::ProxyNet;
use crate::report::{FaultWindow as Window, RunSummary, latency_svg};
use crate::retention::{self, PurgeLag};
use crate::workload::{self, Recorder, WorkloadOptions};
use fjord_harness::fault::FaultKind;
use fjord_harness::fault::steps::{self as fault_plan, Step};
use fjord_harness::history::parse_jsonl;
use fjord_harness::retention::{self as lifecycle, Bounds};
use fjord_harness::stability::{IsolationCheck, LeaderStability};

/// Everything that defines a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    pub seed: u64,
    pub nodes: u64,
    pub partitions: u32,
    pub replication_factor: u32,
    pub duration_secs: u64,
    pub faults: BTreeSet<FaultKind>,
    pub acks: String,
    pub read: String,
    pub producers: u32,
    pub consumers_per_partition: u32,
    /// Named-producer processes of the fencing workload.
    pub fencing_writers: u32,
    /// Members of the consumer-group workload (`fjord_harness::group`); 0 runs none.
    #[serde(default)]
    pub group_members: u32,
    pub op_timeout_ms: u64,
    /// Quiet time at the end of the run, after the last fault healed, with the workload on.
    pub recovery_secs: u64,
    pub out_dir: PathBuf,
    pub fjord_bin: PathBuf,
    pub lazyfs_bin: Option<PathBuf>,
    /// Prefix of the network namespaces.
    pub netns_prefix: String,
    /// `auto` (namespaces when possible, else the loopback proxy), `netns` or `proxy`.
    pub network: String,
    /// The log lifecycle (`fjord_harness::retention`): a short retention on the run's topic,
    /// the deleter's `DeleteRecords`, and the nemesis's deletions; `None`: off.
    #[serde(default)]
    pub retention: Option<RetentionOptions>,
    /// TLS on the nodes and the clients (a CA and a node certificate made for the run in
    /// `<out_dir>/tls/`).
    #[serde(default)]
    pub tls: bool,
    /// Compaction (`fjord_harness::compaction`): the topic compacts, records carry keys,
    /// power losses are timed by compaction passes; `None`: off.
    #[serde(default)]
    pub compaction: Option<CompactionOptions>,
}

/// A run's log lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionOptions {
    /// The topic's `retention_ms` during the workload.
    pub retention_ms: u64,
    /// The topic's `retention_bytes` during the workload (`None`: none by size).
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// No deleter process: records go by retention (and the nemesis's deletions) only, so
    /// that a partition fills up to its `retention_bytes`.
    #[serde(default)]
    pub no_deleter: bool,
}

/// What a run produced, besides the files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutput {
    pub options: RunOptions,
    pub plan: Vec<Step>,
    pub windows: Vec<Window>,
    /// Things worth knowing that are not anomalies: nodes that died on their own,
    /// partitions the final read could not reach, the network mode.
    pub notes: Vec<String>,
    pub history: PathBuf,
    pub unread_partitions: Vec<u32>,
    /// Stopped early by Ctrl-C or SIGTERM: no final read, so `unseen` means nothing.
    #[serde(default)]
    pub interrupted: bool,
    /// What each `partition-follower` fault saw of the leaders.
    #[serde(default)]
    pub isolations: Vec<IsolationCheck>,
    /// How each `follower-behind-purge` fault went.
    #[serde(default)]
    pub purge_lags: Vec<PurgeLag>,
    /// Per node, how many partition snapshots it installed (its log's lines saying so).
    #[serde(default)]
    pub snapshot_installs: BTreeMap<u64, usize>,
    /// In compaction runs: how many power losses struck a compaction pass.
    #[serde(default)]
    pub compaction_hits: Option<CompactionHits>,
}

fn parse_acks(s: &str) -> Result<Acks> {
    match s {
        "cp" => Ok(Acks::Cp),
        "ap" => Ok(Acks::Ap),
        other => bail!("acks must be cp or ap, not {other:?}"),
    }
}

fn parse_read(s: &str) -> Result<ReadMode> {
    match s {
        "cp" => Ok(ReadMode::Cp),
        "ap" => Ok(ReadMode::Ap),
        other => bail!("read must be cp or ap, not {other:?}"),
    }
}

/// The calling thread's network namespace, to return to after a run.
struct HomeNetns(std::fs::File);

impl HomeNetns {
    fn save() -> Result<HomeNetns> {
        Ok(HomeNetns(std::fs::File::open("/proc/thread-self/ns/net")?))
    }
}

impl Drop for HomeNetns {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace fd we opened; affects the calling thread only.
        unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Runs one test. Blocking: it builds its own async runtime inside the clients' namespace.
pub fn run(options: RunOptions) -> Result<RunOutput> {
    let acks = parse_acks(&options.acks)?;
    let read = parse_read(&options.read)?;
    if let Some(kind) = options.faults.iter().find(|k| k.needs_lazy_disk())
        && options.lazyfs_bin.is_none()
    {
        bail!("fault {kind} needs the lazy filesystem (--lazyfs-bin)");
    }
    std::fs::create_dir_all(&options.out_dir)?;
    let ids: Vec<u64> = (1..=options.nodes).collect();
    let home = HomeNetns::save()?;
    let namespaces = match (options.network.as_str(), Netns::available()) {
        ("proxy", _) => None,
        ("netns" | "auto", Ok(())) => Some(Netns::setup(&options.netns_prefix, &ids)?),
        ("netns", Err(e)) => bail!("network namespaces are not available here: {e}"),
        ("auto", Err(e)) => {
            eprintln!(
                "fjord-jepsen: network namespaces are not available ({e}); falling back to the loopback proxy"
            );
            None
        }
        (other, _) => bail!("--network must be auto, netns or proxy, not {other:?}"),
    };
    if let Some(ns) = &namespaces {
        net::enter(&ns.client_ns())?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let network = match namespaces {
            Some(ns) => Network::Netns(ns),
            None => Network::Proxy(ProxyNet::start(&ids).await?),
        };
        run_async(options, acks, read, Arc::new(network)).await
    });
    drop(runtime);
    drop(home);
    result
}

async fn wait_ready(client: &Client, nodes: usize, deadline: Duration) -> Result<()> {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(Ok(meta)) = tokio::time::timeout(Duration::from_secs(2), client.metadata()).await
            && meta.nodes.len() == nodes
            && meta.metadata_leader.is_some()
        {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the cluster was not ready within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_leaders(client: &Client, topic: &str, deadline: Duration) -> Result<()> {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(Ok(t)) =
            tokio::time::timeout(Duration::from_secs(2), client.describe_topic(topic)).await
            && t.partitions.iter().all(|p| p.leader.is_some())
        {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("topic {topic} had no leader for every partition within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After the final reads reached every partition's end: the group's members read to those
/// ends too, so that lost-write can be judged (at most 60 s).
async fn drain_group(
    options: &RunOptions,
    group: &Arc<Group>,
    ends: std::collections::BTreeMap<u32, u64>,
    all_read: bool,
    recorder: &Arc<Recorder>,
    notes: &mut Vec<String>,
) {
    if options.group_members == 0 || no_group(options) || !all_read {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    if !group::drain(group, ends, deadline, recorder).await {
        notes.push("the consumer group did not read every partition to its end within 60 s: lost-write is inconclusive".into());
    }
}

/// The nemesis of a run, before its first fault.
fn new_nemesis(
    options: &RunOptions,
    db: &Arc<tokio::sync::Mutex<Db>>,
    netns: &Arc<Network>,
    client: &Client,
    topic: &str,
    ids: &[u64],
    recorder: &Arc<Recorder>,
) -> Result<Nemesis> {
    Ok(Nemesis {
        deletes: options
            .retention
            .is_some()
            .then(|| crate::nemesis::Deletes {
                recorder: recorder.clone(),
                op_timeout: Duration::from_millis(options.op_timeout_ms),
                inflight: None,
            }),
        purge_lags: Vec::new(),
        compaction: options.compaction.map(|_| CompactionHits::default()),
        db: db.clone(),
        net: netns.clone(),
        client: client.clone(),
        topic: topic.to_string(),
        partitions: options.partitions,
        lost_nodes: BTreeSet::new(),
        rebuilding: Default::default(),
        notes: Vec::new(),
        node_clients: node_clients(netns, ids, client.config().tls.clone())?,
        isolations: Vec::new(),
    })
}

async fn run_async(
    options: RunOptions,
    acks: Acks,
    read: ReadMode,
    netns: Arc<Network>,
) -> Result<RunOutput> {
    let ids: Vec<u64> = (1..=options.nodes).collect();
    let (db, client) = start_cluster(&options, &netns, &ids).await?;
    let mut notes = vec![netns.describe()];
    let topic = create_topic(&client, &options).await?;

    let t0 = Instant::now();
    let history = options.out_dir.join("history.jsonl");
    let recorder = Arc::new(Recorder::create(&history, t0)?);
    let total = Duration::from_secs(options.duration_secs);
    let steps = write_plan(&options, total)?;
    start_retention(&client, &topic, &options, &recorder, &mut notes).await?;
    start_compaction(&client, &topic, &options, &recorder, &mut notes).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let workload = tokio::spawn(workload::run(
        client.clone(),
        workload_options(&options, &topic, acks, read),
        recorder.clone(),
        stop_rx.clone(),
    ));
    let group = Arc::new(Group::default());
    let mut members = spawn_members(&options, &client, &topic, read, &recorder, &group, &stop_rx)?;
    let nemesis = new_nemesis(&options, &db, &netns, &client, &topic, &ids, &recorder)?;
    let nemesis_task = spawn_nemesis(nemesis, steps.clone(), t0, recorder.clone(), stop_rx);

    let interrupted = run_for(total).await?;
    stop_tx.send(true).ok();
    let (mut nemesis, nemesis_out) = nemesis_task.await.context("the nemesis panicked")?;
    let (windows, nemesis_notes) = nemesis_out?;
    notes.extend(nemesis_notes);
    workload.await.context("the workload panicked")??;
    check_clocks(&options, &db, &mut notes).await;

    // Every fault has healed: make sure every node that should run does, then read back.
    for (id, status) in start_survivors(&db, &netns, &nemesis.lost_nodes).await? {
        notes.push(format!(
            "n{id} had exited on its own ({status}); started again"
        ));
        record_exit(
            &recorder,
            id,
            &format!("{status}, found after the faults healed"),
        );
    }
    let unread = if interrupted {
        notes.push("interrupted: no final read".into());
        Vec::new()
    } else {
        let addresses = ids.iter().map(|&id| (id, netns.advertise(id))).collect();
        let replicas = (addresses, &nemesis.lost_nodes);
        let (run, rec) = ((&client, &*db), &recorder);
        let read = read_all(run, &topic, &options, rec, replicas, &mut notes).await?;
        drain_group(
            &options,
            &group,
            read.ends,
            read.unread.is_empty(),
            &recorder,
            &mut notes,
        )
        .await;
        read.unread
    };
    group.stop();
    while members.join_next().await.is_some() {}
    recorder.flush();
    let snapshot_installs = count_snapshot_installs(&db, &mut notes).await;
    for &id in &nemesis.lost_nodes {
        record_exit(&recorder, id, "during the run; it stayed down");
    }
    shut_down(&db, &recorder, &mut notes).await;
    let isolations = std::mem::take(&mut nemesis.isolations);
    let purge_lags = std::mem::take(&mut nemesis.purge_lags);
    let compaction_hits = nemesis.compaction.take();
    if let Some(hits) = &compaction_hits {
        notes.push(hits.describe());
    }
    drop(nemesis);
    Ok(RunOutput {
        options,
        plan: steps,
        windows,
        notes,
        history,
        unread_partitions: unread,
        interrupted,
        isolations,
        purge_lags,
        snapshot_installs,
        compaction_hits,
    })
}

/// Whether the run has no consumer group: with retention (see [`start_retention`]'s note)
/// or compaction (a member's poll-skip rule would take the offsets compaction removed for
/// skipped records).
fn no_group(options: &RunOptions) -> bool {
    options.retention.is_some() || options.compaction.is_some()
}

/// With compaction: sets it on the topic (recorded) before the workload starts; notes that
/// no consumer group runs.
async fn start_compaction(
    client: &Client,
    topic: &str,
    options: &RunOptions,
    recorder: &Recorder,
    notes: &mut Vec<String>,
) -> Result<()> {
    let Some(c) = options.compaction else {
        return Ok(());
    };
    crate::compaction::set(client, topic, c, options.retention.is_some(), recorder).await?;
    if options.group_members > 0 && options.retention.is_none() {
        notes.push(
            "compaction: no consumer group (its poll-skip rule would take the offsets \
             compaction removed for skipped records)"
                .into(),
        );
    }
    Ok(())
}

/// With retention: sets it on the topic (recorded) before the workload starts, with the
/// run's clock bound; notes that no consumer group runs.
async fn start_retention(
    client: &Client,
    topic: &str,
    options: &RunOptions,
    recorder: &Recorder,
    notes: &mut Vec<String>,
) -> Result<()> {
    let Some(r) = options.retention else {
        return Ok(());
    };
    let skew = lifecycle::clock_bound_ms(&options.faults, options.duration_secs * 1_000);
    let policy = (Some(r.retention_ms), r.retention_bytes);
    retention::set(client, topic, policy, skew, recorder).await?;
    if options.group_members > 0 {
        notes.push(
            "retention: no consumer group (GroupConsumer does not move a position below the \
             log start to it, so its members would stop at the first deletion)"
                .into(),
        );
    }
    Ok(())
}

/// Once the faults healed: with retention, turns it off; with compaction, the filler and a
/// last compaction (after retention is off, so that it does not delete what the final read
/// is to check); the final reads; with retention, every replica's own bounds of every
/// partition (`replicas`: each node's address, and the nodes left down).
async fn read_all(
    (client, db): (&Client, &Mutex<Db>),
    topic: &str,
    options: &RunOptions,
    recorder: &Arc<Recorder>,
    (addresses, down): (BTreeMap<u64, String>, &BTreeSet<u64>),
    notes: &mut Vec<String>,
) -> Result<workload::FinalReads> {
    if options.retention.is_some() {
        stop_retention(client, topic, options, recorder, notes).await;
    }
    if let Some(c) = options.compaction {
        let how = (
            options.partitions,
            c,
            Duration::from_millis(options.op_timeout_ms),
        );
        notes.extend(crate::compaction::settle(client, topic, how, recorder, db).await?);
    }
    let read = read_back(client, topic, options.partitions, recorder, notes).await?;
    let replicas = partition_replicas(client, topic).await;
    let dial = (&addresses, client.config().tls.as_ref());
    if options.retention.is_some() {
        retention::replica_starts(topic, &replicas, dial, down, recorder).await;
    }
    if options.compaction.is_none() {
        // Each replica's own copy against the final read (replicas still compacting may
        // hold more records than the leader: not in compacting runs).
        notes.extend(
            crate::replicas::read_replicas(topic, &replicas, dial, down, &read.ends, recorder)
                .await,
        );
    }
    Ok(read)
}

/// Turns the topic's retention off once the writes ended (recorded), and waits out the
/// retention rounds already under way, so that the final reads and the replicas' bounds are
/// not a moving target. A failure is noted: the checker judges by what the reads saw anyway.
async fn stop_retention(
    client: &Client,
    topic: &str,
    options: &RunOptions,
    recorder: &Recorder,
    notes: &mut Vec<String>,
) {
    let skew = lifecycle::clock_bound_ms(&options.faults, options.duration_secs * 1_000);
    if let Err(e) = retention::set(client, topic, (None, None), skew, recorder).await {
        notes.push(format!(
            "retention could not be turned off before the final reads: {e:#}"
        ));
    }
    tokio::time::sleep(Duration::from_millis(2 * lifecycle::CHECK_INTERVAL_MS)).await;
}

/// Each partition's replicas, as the cluster describes them (empty if it does not answer).
async fn partition_replicas(client: &Client, topic: &str) -> BTreeMap<u32, Vec<u64>> {
    match tokio::time::timeout(Duration::from_secs(10), client.describe_topic(topic)).await {
        Ok(Ok(t)) => t
            .partitions
            .into_iter()
            .map(|p| (p.partition, p.replicas))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Per node, the partition snapshots it installed in the run (from its log), also noted.
async fn count_snapshot_installs(db: &Mutex<Db>, notes: &mut Vec<String>) -> BTreeMap<u64, usize> {
    let db = db.lock().await;
    let counts: BTreeMap<u64, usize> = db
        .ids()
        .into_iter()
        .map(|id| (id, db.count_logged(id, retention::SNAPSHOT_INSTALL_LINE)))
        .collect();
    if counts.values().any(|&n| n > 0) {
        let listed: Vec<String> = counts.iter().map(|(id, n)| format!("n{id} {n}")).collect();
        notes.push(format!(
            "partition snapshots installed (\"{}\" in the node logs): {}",
            retention::SNAPSHOT_INSTALL_LINE,
            listed.join(", ")
        ));
    }
    counts
}

/// Creates the run's topic and waits until each of its partitions has a leader.
async fn create_topic(client: &Client, options: &RunOptions) -> Result<String> {
    let topic = "jepsen".to_string();
    client
        .create_topic(&topic, options.partitions, options.replication_factor)
        .await
        .context("creating the topic")?;
    wait_leaders(client, &topic, Duration::from_secs(30)).await?;
    Ok(topic)
}

/// The run's fault plan, drawn from its seed, also written to `plan.json`.
fn write_plan(options: &RunOptions, total: Duration) -> Result<Vec<Step>> {
    let recovery = Duration::from_secs(options.recovery_secs);
    let mut steps = fault_plan::plan(options.seed, &options.faults, total, recovery);
    if options.retention.is_some() || options.compaction.is_some() {
        // The log lifecycle's own faults, when asked for: a follower held down across a
        // deletion (with retention), and a power loss during a deletion or a compaction.
        let wanted: Vec<FaultKind> = [FaultKind::FollowerBehindPurge, FaultKind::PowerLoss]
            .into_iter()
            .filter(|k| options.faults.contains(k))
            .filter(|k| options.retention.is_some() || *k == FaultKind::PowerLoss)
            .collect();
        fault_plan::ensure(&mut steps, &wanted);
    }
    std::fs::write(
        options.out_dir.join("plan.json"),
        serde_json::to_string_pretty(&steps)?,
    )?;
    Ok(steps)
}

/// What the nemesis did: its fault windows and notes.
type NemesisOutput = Result<(Vec<Window>, Vec<String>)>;

/// Runs the nemesis over `steps` in a task of its own, until `stop`; the task gives it back
/// with what it did.
fn spawn_nemesis(
    mut nemesis: Nemesis,
    steps: Vec<Step>,
    t0: Instant,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(Nemesis, NemesisOutput)> {
    tokio::spawn(async move {
        let out = nemesis
            .run(&steps, t0, move || recorder.now_ns(), stop)
            .await;
        (nemesis, out)
    })
}

/// Starts every node and waits until the cluster answers; on a timeout the error carries
/// each node's last log lines.
async fn start_cluster(
    options: &RunOptions,
    netns: &Arc<Network>,
    ids: &[u64],
) -> Result<(Arc<Mutex<Db>>, Client)> {
    let node_options = NodeOptions {
        fjord_bin: options.fjord_bin.clone(),
        // `fjord serve`'s defaults.
        heartbeat_interval_ms: 100,
        election_timeout_ms: 600,
        fake_clock: options.faults.contains(&FaultKind::ClockJump)
            || options.faults.contains(&FaultKind::ClockSkew),
        lazy_disk: options.lazyfs_bin.clone(),
        retention_check_interval_ms: (options.retention.is_some() || options.compaction.is_some())
            .then_some(lifecycle::CHECK_INTERVAL_MS),
        tls: if options.tls {
            let max_id = ids.iter().copied().max().unwrap_or(0);
            Some(crate::tls::generate(&options.out_dir.join("tls"), max_id)?)
        } else {
            None
        },
    };
    let client_tls = node_options.tls.as_ref().map(|t| t.client()).transpose()?;
    let mut db = Db::new(&options.out_dir, netns, ids, node_options)?;
    for &id in ids {
        db.start(netns, id)?;
    }
    let brokers = db.brokers(netns);
    let db = Arc::new(Mutex::new(db));
    let client = Client::connect(
        brokers,
        ClientConfig {
            request_timeout_ms: 2_000,
            connect_timeout_ms: 1_000,
            tls: client_tls,
            ..ClientConfig::default()
        },
    )?;
    if let Err(e) = wait_ready(&client, ids.len(), Duration::from_secs(60)).await {
        let tails: Vec<String> = {
            let db = db.lock().await;
            ids.iter()
                .map(|&id| format!("n{id}:\n{}", db.log_tail(id, 10)))
                .collect()
        };
        return Err(e.context(tails.join("\n")));
    }
    Ok((db, client))
}

/// Starts the consumer group's members (processes after the workload's); crashes and
/// pauses until `stop`.
fn spawn_members(
    options: &RunOptions,
    client: &Client,
    topic: &str,
    read: ReadMode,
    recorder: &Arc<Recorder>,
    group: &Arc<Group>,
    stop: &watch::Receiver<bool>,
) -> Result<tokio::task::JoinSet<()>> {
    let first = options.producers
        + options.partitions * options.consumers_per_partition
        + options.fencing_writers;
    let opts = MemberOptions {
        topic: topic.to_string(),
        read,
        seed: options.seed,
        op_timeout: Duration::from_millis(options.op_timeout_ms),
    };
    // No group with retention or compaction: see the notes they leave.
    let members = if no_group(options) {
        0
    } else {
        options.group_members
    };
    group::spawn(client, &opts, members, first, recorder, group, stop)
}

/// The workload a run drives.
fn workload_options(
    options: &RunOptions,
    topic: &str,
    acks: Acks,
    read: ReadMode,
) -> WorkloadOptions {
    WorkloadOptions {
        topic: topic.to_string(),
        partitions: options.partitions,
        acks,
        read,
        producers: options.producers,
        producer_instances: 2,
        consumers_per_partition: options.consumers_per_partition,
        fencing_writers: options.fencing_writers,
        op_timeout: Duration::from_millis(options.op_timeout_ms),
        produce_interval: Duration::ZERO,
        seed: options.seed,
        lifecycle: options
            .retention
            .map(|_| Arc::new(Bounds::new(options.partitions))),
        deleter: options.retention.is_some_and(|r| !r.no_deleter),
        keyed: options.compaction.is_some(),
    }
}

/// One client per node, asking that node only (how each node describes the topic).
fn node_clients(
    netns: &Network,
    ids: &[u64],
    tls: Option<fjord_client::ClientTls>,
) -> Result<std::collections::BTreeMap<u64, Client>> {
    let mut node_clients = std::collections::BTreeMap::new();
    for &id in ids {
        let client = Client::connect(
            vec![netns.advertise(id)],
            ClientConfig {
                request_timeout_ms: 1_000,
                connect_timeout_ms: 500,
                max_retries: 0,
                tls: tls.clone(),
                ..ClientConfig::default()
            },
        )?;
        node_clients.insert(id, client);
    }
    Ok(node_clients)
}

/// Waits out the run's duration; true if Ctrl-C or SIGTERM ended it early (the faults still
/// heal).
async fn run_for(total: Duration) -> Result<bool> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = tokio::time::sleep(total) => false,
        _ = tokio::signal::ctrl_c() => true,
        _ = sigterm.recv() => true,
    })
}

/// Once the nemesis stopped: every node's clock file set to the neutral spec (each step
/// reset its own clocks; this covers a run stopped mid-step) and read back, so that the final
/// reads run on real clocks; with clock faults, the report says so, or which files disagree.
async fn check_clocks(options: &RunOptions, db: &Mutex<Db>, notes: &mut Vec<String>) {
    let wrong = db.lock().await.reset_clocks();
    let clock_faults = options.faults.contains(&FaultKind::ClockJump)
        || options.faults.contains(&FaultKind::ClockSkew);
    if !wrong.is_empty() {
        notes.push(format!(
            "clocks: not every clock file was reset to {:?} before the final reads: {}",
            crate::clock::NEUTRAL,
            wrong.join(", ")
        ));
    } else if clock_faults {
        notes.push(format!(
            "clocks: every node's clock file reads {:?} (the real time) before the final reads",
            crate::clock::NEUTRAL
        ));
    }
}

/// Starts every node that should run and does not (with `--rebuild` where it refused its
/// directory); the `lost` ones stay down.
/// Returns the nodes found exited on their own (not as a fault made them), with their status.
async fn start_survivors(
    db: &Mutex<Db>,
    netns: &Network,
    lost: &BTreeSet<u64>,
) -> Result<Vec<(u64, String)>> {
    let mut db = db.lock().await;
    let mut crashed = Vec::new();
    for id in db.ids() {
        if lost.contains(&id) {
            continue;
        }
        let exited = db.exited(id);
        let down = exited.is_some() || !db.nodes.get(&id).is_some_and(|n| n.is_running());
        if !down {
            continue;
        }
        let tail = db.log_tail(id, 5);
        if let Some(status) = &exited
            && !crate::nemesis::deliberate_exit(&tail)
        {
            crashed.push((id, status.to_string()));
        }
        if crate::nemesis::needs_rebuild(&tail) {
            db.start_with(netns, id, &["--rebuild"])?;
        } else {
            db.start(netns, id)?;
        }
    }
    Ok(crashed)
}

/// The final reads of every partition; the partitions not read back within 60 s are noted.
async fn read_back(
    client: &Client,
    topic: &str,
    partitions: u32,
    recorder: &Recorder,
    notes: &mut Vec<String>,
) -> Result<workload::FinalReads> {
    let read = workload::final_reads(
        client,
        topic,
        partitions,
        recorder,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;
    if !read.unread.is_empty() {
        notes.push(format!(
            "partitions {:?} could not be read back within 60 s of healing",
            read.unread
        ));
    }
    Ok(read)
}

/// Notes and records the nodes that exited on their own, then stops every node.
async fn shut_down(db: &Mutex<Db>, recorder: &Recorder, notes: &mut Vec<String>) {
    let mut db = db.lock().await;
    for id in db.ids() {
        if let Some(status) = db.exited(id) {
            let tail = db.log_tail(id, 5);
            if crate::nemesis::deliberate_exit(&tail) {
                // A full disk's fail-stop, or a refused directory or rebuild, still under
                // way at the end: what a fault caused, not a crash.
                notes.push(format!(
                    "n{id} had exited ({status}) as a fault made it (fail-stop or a refused directory)"
                ));
            } else {
                notes.push(format!("n{id} had exited on its own ({status})"));
                record_exit(recorder, id, &status.to_string());
            }
        }
    }
    recorder.flush();
    db.shutdown();
}

/// Records that node `id` exited on its own (the checker's crashed class).
fn record_exit(recorder: &Recorder, id: u64, status: &str) {
    let op = fjord_harness::history::Op::NodeExited {
        node: id,
        status: status.to_string(),
    };
    let process = crate::replicas::REPLICA_READER + 1;
    use fjord_harness::history::EventType;
    recorder.record(process, EventType::Invoke, op.clone(), None);
    recorder.record(process, EventType::Ok, op, None);
}

/// Checks a finished run and writes `report.json`, `report.txt` and `latency.svg` next to its
/// history.
pub fn analyse(out: &RunOutput) -> Result<RunSummary> {
    let text = std::fs::read_to_string(&out.history)
        .with_context(|| format!("reading {}", out.history.display()))?;
    let events = parse_jsonl(&text).context("parsing the history")?;
    let faults: Vec<&str> = out.options.faults.iter().map(|k| k.name()).collect();
    let nemesis = if faults.is_empty() {
        "none".to_string()
    } else {
        fault_plan::describe_plan(&out.plan)
    };
    let mut summary = RunSummary::new(
        out.options.seed,
        &out.options.acks,
        &out.options.read,
        &nemesis,
        &events,
        &out.windows,
    );
    if out
        .plan
        .iter()
        .any(|s| s.faults.contains(&FaultKind::PartitionFollower))
    {
        summary.leader_stability = Some(LeaderStability::from_checks(&out.isolations));
    }
    let dir = &out.options.out_dir;
    std::fs::write(dir.join("report.json"), summary.to_json()?)?;
    let mut report = summary.to_text();
    for note in &out.notes {
        report.push_str(&format!("note: {note}\n"));
    }
    std::fs::write(dir.join("report.txt"), &report)?;
    std::fs::write(dir.join("latency.svg"), latency_svg(&events, &out.windows))?;
    std::fs::write(dir.join("run.json"), serde_json::to_string_pretty(out)?)?;
    Ok(summary)
}
