//! `fjord dev`: a local cluster of separate `fjord serve` processes, for development.
//!
//! Each node runs in its own process group, so Ctrl-C reaches only `fjord dev`, which then
//! stops the nodes itself: SIGTERM to each, up to [`STOP_GRACE`] for them to exit, SIGKILL
//! for the rest. Every child is owned by a supervisor task that is the only one to signal
//! it, and only while it has not been reaped, so a recycled pid is never signalled. A node
//! that exits on its own stops the whole cluster with an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use fjord_client::{Client, ClientConfig};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::output::Output;
use crate::signals::shutdown_signal;

/// Most nodes `fjord dev` starts.
const MAX_DEV_NODES: u32 = 9;
/// How long stopped nodes get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long killed nodes get to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often the cluster is asked for a metadata leader while starting.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Deadline of one readiness probe.
const READY_PROBE_TIMEOUT_MS: u64 = 1_000;
/// Bytes of a failed node's log shown to the user.
const LOG_TAIL_BYTES: u64 = 4 * 1024;
/// Extra `fjord serve` arguments (after `--`), at most.
const MAX_SERVE_ARGS: usize = 64;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Node i listens for clients on 127.0.0.1:(base-port + i - 1) and for the other \
    nodes on 127.0.0.1:(base-port + 100 + i - 1), keeps its data in \
    DATA_DIR/node<i> and logs to DATA_DIR/node<i>.log. Ctrl-C (or SIGTERM) stops all nodes; \
    the data stays for the next run."
)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=MAX_DEV_NODES as i64))]
    pub nodes: u32,
    /// Directory of the nodes' data and logs.
    #[arg(long, default_value = ".fjord/dev")]
    pub data_dir: PathBuf,
    /// Port of node 1; the others follow.
    #[arg(long, default_value_t = 7101)]
    pub base_port: u16,
    /// How long to wait for the cluster to elect a metadata leader, in seconds.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout_secs: u64,
    /// Serve Prometheus metrics: node N on 127.0.0.1:(this + N - 1) (`--metrics-listen`).
    #[arg(long, value_name = "PORT")]
    pub metrics_base_port: Option<u16>,
    /// Flags given to every node's `fjord serve`, after `--` (at most 64), e.g.
    /// `fjord dev -- --group-heartbeat-interval-ms 500`.
    #[arg(last = true, value_name = "SERVE_FLAGS")]
    pub serve_args: Vec<String>,
}

struct Node {
    id: u64,
    /// Its client address (`--listen`).
    address: String,
    /// Its peer address (its `--peers` entry, `--peer-listen` by default).
    peer_address: String,
    log: PathBuf,
}

/// A node's peer port is its client port plus this (clients 7101-7103, peers 7201-7203).
const PEER_PORT_OFFSET: u32 = 100;

/// Why the cluster is being stopped.
enum Stop {
    Signal,
    NodeExited(u64, std::io::Result<ExitStatus>),
    NotReady(Duration),
}

/// The running children: each one's signal queue, and their exits.
struct Children {
    signals: BTreeMap<u64, mpsc::Sender<i32>>,
    exits: mpsc::Receiver<(u64, std::io::Result<ExitStatus>)>,
    exits_tx: mpsc::Sender<(u64, std::io::Result<ExitStatus>)>,
}

/// Owns one child: waits for it and signals it on request, never after reaping it.
async fn supervise(
    id: u64,
    mut child: Child,
    mut signals: mpsc::Receiver<i32>,
    exits: mpsc::Sender<(u64, std::io::Result<ExitStatus>)>,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                let _ = exits.send((id, status)).await;
                return;
            }
            Some(sig) = signals.recv() => {
                // `id()` is None once the child is reaped, so its pid cannot be recycled yet.
                if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
                    unsafe {
                        libc::kill(pid, sig);
                    }
                }
            }
        }
    }
}

impl Children {
    fn new(capacity: usize) -> Self {
        let (exits_tx, exits) = mpsc::channel(capacity.max(1));
        Children {
            signals: BTreeMap::new(),
            exits,
            exits_tx,
        }
    }

    fn adopt(&mut self, id: u64, child: Child) {
        // Room for a SIGTERM and a SIGKILL.
        let (tx, rx) = mpsc::channel(2);
        self.signals.insert(id, tx);
        tokio::spawn(supervise(id, child, rx, self.exits_tx.clone()));
    }

    async fn signal_all(&self, sig: i32) {
        for tx in self.signals.values() {
            let _ = tx.send(sig).await;
        }
    }

    /// Waits until every child exited or `deadline`; reports each exit.
    async fn reap_until(
        &mut self,
        deadline: Instant,
        report: &mut impl FnMut(u64, &std::io::Result<ExitStatus>),
    ) {
        while !self.signals.is_empty() {
            tokio::select! {
                exit = self.exits.recv() => match exit {
                    Some((id, status)) => {
                        self.signals.remove(&id);
                        report(id, &status);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// SIGTERM to all, a grace period, then SIGKILL to the rest. Returns the nodes that had
    /// to be killed.
    async fn stop(
        &mut self,
        report: &mut impl FnMut(u64, &std::io::Result<ExitStatus>),
    ) -> Vec<u64> {
        self.signal_all(libc::SIGTERM).await;
        self.reap_until(Instant::now() + STOP_GRACE, report).await;
        let killed: Vec<u64> = self.signals.keys().copied().collect();
        if !killed.is_empty() {
            self.signal_all(libc::SIGKILL).await;
            self.reap_until(Instant::now() + KILL_WAIT, report).await;
        }
        killed
    }
}

fn spawn_node(
    exe: &Path,
    node: &Node,
    data_dir: &Path,
    peers: &str,
    serve_args: &[String],
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(&node.log)
        .with_context(|| format!("cannot create {}", node.log.display()))?;
    let stderr = log.try_clone().context("cannot share the log file")?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--id")
        .arg(node.id.to_string())
        .arg("--listen")
        .arg(&node.address)
        .arg("--data-dir")
        .arg(data_dir.join(format!("node{}", node.id)))
        .arg("--peers")
        .arg(peers)
        .args(serve_args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a terminal's Ctrl-C goes to `fjord dev` only, which stops
        // the nodes in order instead of them all dying at once mid-write.
        .process_group(0)
        // If `fjord dev` itself dies, no node outlives it.
        .kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("cannot start node {} ({})", node.id, exe.display()))
}

/// The last lines of a log, for a node that failed.
fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status ({e})"),
    }
}

/// The commands to try first, with `--brokers` when the cluster is not at the default ports.
fn first_steps(nodes: &[Node], is_default: bool) -> Vec<String> {
    let brokers = if is_default {
        String::new()
    } else {
        let list: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
        format!(" --brokers {}", list.join(","))
    };
    let replication = nodes.len().min(3);
    vec![
        format!("fjord{brokers} topic create demo --partitions 3 --replication {replication}"),
        format!("printf 'hello\\nworld\\n' | fjord{brokers} produce demo"),
        format!("fjord{brokers} consume demo --from-beginning --count 2"),
        format!("fjord{brokers} cluster status"),
    ]
}

/// Runs the cluster; `tls`: the client TLS settings (`--tls-ca`, `FJORD_TLS_CA`) its
/// readiness probe uses, for nodes started with TLS (their `--tls-*` flags after `--`, or the
/// `FJORD_TLS_*` variables they inherit).
pub async fn run(
    args: DevArgs,
    out: Output,
    tls: Option<fjord_client::ClientTls>,
) -> anyhow::Result<()> {
    let last_port = u32::from(args.base_port) + args.nodes - 1 + PEER_PORT_OFFSET;
    anyhow::ensure!(
        args.base_port > 0 && last_port <= u32::from(u16::MAX),
        "ports {}..={last_port} do not fit in 1..=65535: choose another --base-port",
        args.base_port
    );
    anyhow::ensure!(
        args.serve_args.len() <= MAX_SERVE_ARGS,
        "{} flags after `--`: at most {MAX_SERVE_ARGS} (MAX_SERVE_ARGS) are passed to the nodes",
        args.serve_args.len()
    );
    let exe =
        std::env::current_exe().context("cannot find the fjord executable to start nodes with")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?;
    let nodes = plan_nodes(&args, &data_dir);
    eprintln!(
        "starting {} node{}; data and logs in {}",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
        data_dir.display()
    );
    let mut children = Children::new(nodes.len());
    let started = start_nodes(
        &exe,
        &nodes,
        &data_dir,
        (&args.serve_args, args.metrics_base_port),
        &mut children,
    );
    let stop = match started {
        Err(e) => {
            stop_cluster(&mut children, &nodes, out).await;
            return Err(e);
        }
        Ok(()) => wait_ready_then_run(&mut children, &nodes, &args, out, tls).await?,
    };

    let failure = failure_of(&stop, &nodes, &data_dir);
    if let Some(f) = &failure {
        eprintln!("{f}");
    }
    eprintln!("stopping the cluster");
    stop_cluster(&mut children, &nodes, out).await;
    match failure {
        None => Ok(()),
        Some(_) => anyhow::bail!("the dev cluster stopped because of the failure above"),
    }
}

/// The nodes of a dev cluster: ids from 1, ports from `--base-port`, logs in `data_dir`.
fn plan_nodes(args: &DevArgs, data_dir: &std::path::Path) -> Vec<Node> {
    (1..=args.nodes)
        .map(|i| Node {
            id: u64::from(i),
            address: format!("127.0.0.1:{}", u32::from(args.base_port) + i - 1),
            peer_address: format!(
                "127.0.0.1:{}",
                u32::from(args.base_port) + i - 1 + PEER_PORT_OFFSET
            ),
            log: data_dir.join(format!("node{i}.log")),
        })
        .collect()
}

/// The `--worker-threads` each local node gets: the machine's cores shared among the nodes
/// (at least 1 each), so that the nodes together run no more threads than there are cores;
/// `None` when the flags after `--` or the environment set it already.
fn node_workers(
    serve_args: &[String],
    set_in_env: bool,
    cores: usize,
    nodes: usize,
) -> Option<usize> {
    let given = serve_args
        .iter()
        .any(|a| a == "--worker-threads" || a.starts_with("--worker-threads="));
    (!given && !set_in_env).then(|| (cores / nodes.max(1)).clamp(1, 1024))
}

/// Starts a `fjord serve` process per node, each adopted by `children`; stops at the first
/// that cannot be started.
fn start_nodes(
    exe: &std::path::Path,
    nodes: &[Node],
    data_dir: &std::path::Path,
    (serve_args, metrics_base_port): (&[String], Option<u16>),
    children: &mut Children,
) -> anyhow::Result<()> {
    let peers = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.peer_address))
        .collect::<Vec<_>>()
        .join(",");
    let workers = node_workers(
        serve_args,
        std::env::var_os(crate::serve::env_name("worker-threads")).is_some(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        nodes.len(),
    );
    for node in nodes {
        let mut serve_args = serve_args.to_vec();
        if let Some(n) = workers {
            serve_args.extend(["--worker-threads".to_string(), n.to_string()]);
        }
        if let Some(base) = metrics_base_port {
            let port = u64::from(base) + node.id - 1;
            anyhow::ensure!(
                port <= u64::from(u16::MAX),
                "--metrics-base-port {base} is too high"
            );
            serve_args.extend(["--metrics-listen".to_string(), format!("127.0.0.1:{port}")]);
        }
        let child = spawn_node(exe, node, data_dir, &peers, &serve_args)?;
        children.adopt(node.id, child);
    }
    Ok(())
}

/// What to tell about a stop that was not asked for: a node's exit with its log's last
/// lines, or no leader in time.
fn failure_of(stop: &Stop, nodes: &[Node], data_dir: &std::path::Path) -> Option<String> {
    match stop {
        Stop::Signal => None,
        Stop::NodeExited(id, status) => {
            let log = &nodes[(*id - 1) as usize].log;
            Some(format!(
                "node {id} exited on its own ({}); last lines of {}:\n{}",
                describe_exit(status),
                log.display(),
                log_tail(log)
            ))
        }
        Stop::NotReady(waited) => Some(format!(
            "no metadata leader after {} s; see the logs in {}",
            waited.as_secs(),
            data_dir.display()
        )),
    }
}

/// Waits for a metadata leader, prints the cluster, then runs until a signal or a node exit.
async fn wait_ready_then_run(
    children: &mut Children,
    nodes: &[Node],
    args: &DevArgs,
    out: Output,
    tls: Option<fjord_client::ClientTls>,
) -> anyhow::Result<Stop> {
    let client = Client::connect(
        nodes.iter().map(|n| n.address.clone()).collect(),
        ClientConfig {
            request_timeout_ms: READY_PROBE_TIMEOUT_MS,
            connect_timeout_ms: READY_PROBE_TIMEOUT_MS,
            max_retries: 0,
            tls,
            ..Default::default()
        },
    )?;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let ready_timeout = Duration::from_secs(args.ready_timeout_secs);
    let leader =
        match wait_for_leader(children, &client, &mut signal, ready_timeout, nodes.len()).await {
            Ok(leader) => leader,
            Err(stop) => return Ok(stop),
        };
    let is_default = args.nodes == 3 && args.base_port == 7101;
    print_ready(out, nodes, leader, is_default)?;
    tokio::select! {
        _ = &mut signal => Ok(Stop::Signal),
        exit = children.exits.recv() => match exit {
            Some((id, status)) => {
                children.signals.remove(&id);
                Ok(Stop::NodeExited(id, status))
            }
            None => anyhow::bail!("lost track of the nodes"),
        },
    }
}

/// Probes the cluster until it reports a metadata leader (returned) and all `expected` nodes
/// registered (so that a topic with a replica on each can be created at once), or a signal, a
/// node's exit or `ready_timeout` stops the wait.
async fn wait_for_leader(
    children: &mut Children,
    client: &Client,
    signal: &mut (impl std::future::Future + Unpin),
    ready_timeout: Duration,
    expected: usize,
) -> Result<u64, Stop> {
    let started_at = Instant::now();
    let mut tick = tokio::time::interval(READY_POLL_INTERVAL);
    // A slow probe delays the next one instead of causing a burst of them.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut *signal => return Err(Stop::Signal),
            Some((id, status)) = children.exits.recv() => {
                children.signals.remove(&id);
                return Err(Stop::NodeExited(id, status));
            }
            _ = tick.tick() => {
                if let Ok(md) = client.metadata().await
                    && let Some(leader) = md.metadata_leader
                    && md.nodes.len() >= expected
                {
                    return Ok(leader);
                }
                if started_at.elapsed() >= ready_timeout {
                    return Err(Stop::NotReady(started_at.elapsed()));
                }
            }
        }
    }
}

/// Prints the nodes, the metadata leader and the commands to try first.
fn print_ready(out: Output, nodes: &[Node], leader: u64, is_default: bool) -> std::io::Result<()> {
    out.emit(
        || {
            let mut s = String::new();
            for n in nodes {
                s.push_str(&format!(
                    "node {}  {}  log {}\n",
                    n.id,
                    n.address,
                    n.log.display()
                ));
            }
            s.push_str(&format!(
                "ready: metadata leader is node {leader}\n\ntry:\n"
            ));
            for step in first_steps(nodes, is_default) {
                s.push_str(&format!("  {step}\n"));
            }
            s.push_str("\nCtrl-C stops the cluster.");
            s
        },
        || {
            json!({
                "event": "ready",
                "metadata_leader": leader,
                "nodes": nodes.iter().map(|n| json!({
                    "id": n.id, "address": n.address, "log": n.log.display().to_string(),
                })).collect::<Vec<_>>(),
            })
            .to_string()
        },
    )
}

async fn stop_cluster(children: &mut Children, nodes: &[Node], out: Output) {
    let mut report = |id: u64, status: &std::io::Result<ExitStatus>| {
        tracing::info!(node = id, status = %describe_exit(status), "node stopped");
    };
    let killed = children.stop(&mut report).await;
    for id in &killed {
        eprintln!(
            "node {id} did not stop within {} s and was killed; see {}",
            STOP_GRACE.as_secs(),
            nodes[(*id - 1) as usize].log.display()
        );
    }
    let _ = out.emit(
        || "stopped".to_string(),
        || json!({"event": "stopped", "killed": killed}).to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_nodes_share_the_cores_unless_told_otherwise() {
        assert_eq!(node_workers(&[], false, 2, 3), Some(1));
        assert_eq!(node_workers(&[], false, 16, 3), Some(5));
        assert_eq!(node_workers(&[], false, 8, 1), Some(8));
        let given = ["--worker-threads".to_string(), "4".to_string()];
        assert_eq!(node_workers(&given, false, 2, 3), None);
        assert_eq!(
            node_workers(&["--worker-threads=4".to_string()], false, 2, 3),
            None
        );
        assert_eq!(
            node_workers(&[], true, 2, 3),
            None,
            "FJORD_WORKER_THREADS is set"
        );
    }

    fn nodes(n: u64, base: u64) -> Vec<Node> {
        (1..=n)
            .map(|i| Node {
                id: i,
                address: format!("127.0.0.1:{}", base + i - 1),
                peer_address: format!("127.0.0.1:{}", base + i + 99),
                log: PathBuf::from(format!("node{i}.log")),
            })
            .collect()
    }

    #[test]
    fn first_steps_name_the_brokers_only_when_needed() {
        let s = first_steps(&nodes(3, 7101), true);
        assert_eq!(
            s[0],
            "fjord topic create demo --partitions 3 --replication 3"
        );
        let s = first_steps(&nodes(1, 9000), false);
        assert_eq!(
            s[0],
            "fjord --brokers 127.0.0.1:9000 topic create demo --partitions 3 --replication 1"
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("fjord-dev-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert!(tail.starts_with("line 80"), "{tail}");
        assert!(tail.ends_with("line 99"), "{tail}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
