//! A harness that runs real fjord clusters: separate `fjord serve` processes on loopback,
//! each with its own data directory and log file, that tests can kill (SIGKILL), stop
//! (SIGTERM) and restart.
//!
//! The `fjord` binary is the one cargo built next to the test (`target/<profile>/fjord`);
//! `FJORD_BIN` overrides it. Waits are on conditions with deadlines, never fixed sleeps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fjord_client::{Client, ClientConfig};

pub mod certs;
pub mod group;
pub mod links;
pub mod secure;

/// How long a cluster may take to elect its metadata leader and register every node.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `cmd` to its end, `stdin` written to its standard input (else none): whether it
/// succeeded, its stdout and its stderr.
pub fn run_command(mut cmd: Command, stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn fjord");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `fjord` binary under test.
pub fn fjord_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FJORD_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test binary> -> target/<profile>/fjord
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("fjord");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p fjord-cli`), or set FJORD_BIN",
        bin.display()
    );
    bin
}

/// Free loopback ports for nodes to listen on: bound then released, and below the kernel's
/// ephemeral range where it can be read, because a port from that range (what binding port 0
/// gives) can be handed to any process's outgoing connection before the node binds it (a
/// restarted node then failed with "Address already in use").
pub fn free_ports(n: usize) -> Vec<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > 20_000);
    let listeners: Vec<_> = match low {
        None => (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect(),
        Some(low) => {
            // A start that differs between processes and calls, then a walk through the
            // ports from 10,000 up to the ephemeral range, keeping the ones that bind.
            let span = u32::from(low) - 10_000;
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                ^ std::process::id().wrapping_mul(2_654_435_761);
            let listeners: Vec<_> = (0..span)
                .map(|step| 10_000 + (seed.wrapping_add(step.wrapping_mul(7_919)) % span) as u16)
                .filter_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
                .take(n)
                .collect();
            assert_eq!(listeners.len(), n, "no {n} free ports below {low}");
            listeners
        }
    };
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub struct NodeProc {
    pub id: u64,
    /// Its client address (`--listen`, `--advertise`).
    pub addr: String,
    /// Its peer address (`--peer-listen`, its `--peers` entry).
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A running multi-process cluster; every process is killed when it is dropped.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    peers: String,
    timing: Timing,
    /// Flags every node starts with, besides the Raft timing.
    extra: Vec<String>,
    /// How this harness's own clients connect (TLS settings of a TLS cluster).
    client_config: ClientConfig,
    dir: Option<tempfile::TempDir>,
}

/// The Raft timing the nodes run with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// How long a partition replica stays quiet before its Raft instance hibernates.
    pub hibernate_after_ms: u64,
}

impl Timing {
    /// Fast failover, for tests with a few partitions.
    pub const FAST: Timing = Timing {
        heartbeat_interval_ms: 50,
        election_timeout_ms: 500,
        hibernate_after_ms: 10_000,
    };
    /// The defaults of `fjord serve`, for tests with many partitions (until they go quiet,
    /// every partition heartbeats: at 50 ms, dozens of them saturate a busy 2-core machine).
    pub const DEFAULT: Timing = Timing {
        heartbeat_interval_ms: 100,
        election_timeout_ms: 600,
        hibernate_after_ms: 10_000,
    };
}

impl Cluster {
    /// Starts `n` nodes and waits until the metadata group has a leader and every node is
    /// registered.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, Timing::FAST).await
    }

    /// [`Cluster::start`] with the given Raft timing.
    pub async fn start_with(n: usize, timing: Timing) -> Cluster {
        Self::start_with_args(n, timing, &[]).await
    }

    /// [`Cluster::start_with`], every node also given `extra` flags.
    pub async fn start_with_args(n: usize, timing: Timing, extra: &[&str]) -> Cluster {
        Self::start_with_options(n, timing, extra, |_| Vec::new(), ClientConfig::default()).await
    }

    /// [`Cluster::start_with_args`], node `id` also given `node_args(id)` at this first
    /// start (not at restarts): for flags that differ per node, such as a port.
    pub async fn start_with_node_args(
        n: usize,
        timing: Timing,
        extra: &[&str],
        node_args: impl Fn(u64) -> Vec<String>,
    ) -> Cluster {
        Self::start_with_options(n, timing, extra, node_args, ClientConfig::default()).await
    }

    /// [`Cluster::start_with_args`], the harness's clients (readiness, [`Cluster::client`])
    /// connecting with `client_config` (a TLS cluster's CA).
    pub async fn start_with_client(
        n: usize,
        timing: Timing,
        extra: &[&str],
        client_config: ClientConfig,
    ) -> Cluster {
        Self::start_with_options(n, timing, extra, |_| Vec::new(), client_config).await
    }

    /// [`Cluster::start_with_node_args`] and [`Cluster::start_with_client`] together.
    pub async fn start_with_options(
        n: usize,
        timing: Timing,
        extra: &[&str],
        node_args: impl Fn(u64) -> Vec<String>,
        client_config: ClientConfig,
    ) -> Cluster {
        let mut c = Self::configure(n, timing, extra, client_config);
        for i in 0..n {
            let args = node_args(i as u64 + 1);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            c.spawn_with(i, &args);
        }
        c.wait_ready().await;
        c
    }

    /// A cluster of `n` configured nodes (each one's `--peers` names all `n`), none of them
    /// started: [`Cluster::restart`] starts each (a cluster that forms one node at a time).
    pub fn configure(
        n: usize,
        timing: Timing,
        extra: &[&str],
        client_config: ClientConfig,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let (client_ports, peer_ports) = ports.split_at(n);
        let peers = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = client_ports
            .iter()
            .zip(peer_ports)
            .enumerate()
            .map(|(i, (p, pp))| NodeProc {
                id: i as u64 + 1,
                addr: format!("127.0.0.1:{p}"),
                peer_addr: format!("127.0.0.1:{pp}"),
                data_dir: dir.path().join(format!("node{}", i + 1)),
                log: dir.path().join(format!("node{}.log", i + 1)),
                child: None,
            })
            .collect();
        Cluster {
            nodes,
            peers,
            timing,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            client_config,
            dir: Some(dir),
        }
    }

    fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    fn spawn_with(&mut self, i: usize, extra: &[&str]) {
        let node = &self.nodes[i];
        assert!(node.child.is_none(), "node {} is already running", node.id);
        let addrs = [node.addr.as_str(), node.peer_addr.as_str()];
        let mut command = self.serve_command(node.id, addrs, &node.data_dir, &node.log);
        let child = command.args(extra).spawn().expect("spawning fjord serve");
        self.nodes[i].child = Some(child);
    }

    /// `fjord serve` as node `id`, listening and advertising at `client` and listening for
    /// its peers at `peer` (`[client, peer]`), on `data_dir`, with this cluster's peers,
    /// timing and common flags, its output appended to `log`.
    fn serve_command(
        &self,
        id: u64,
        [addr, peer]: [&str; 2],
        data_dir: &Path,
        log: &Path,
    ) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = Command::new(fjord_bin());
        command
            .args([
                "serve",
                "--id",
                &id.to_string(),
                "--listen",
                addr,
                "--advertise",
                addr,
                // The same as its `--peers` entry, unless the test moved the node.
                "--peer-listen",
                peer,
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--peers",
                &self.peers,
                "--heartbeat-interval-ms",
                &self.timing.heartbeat_interval_ms.to_string(),
                "--election-timeout-ms",
                &self.timing.election_timeout_ms.to_string(),
                "--hibernate-after-ms",
                &self.timing.hibernate_after_ms.to_string(),
            ])
            .args(&self.extra)
            // FJORD_TEST_LOG: the nodes' log filter (default `info`).
            .env(
                "RUST_LOG",
                std::env::var("FJORD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    /// A second `fjord serve --id <id>` while node `id` runs (a duplicate `--id`): on a new
    /// port, on `data_dir` (`None`: a new empty directory, as on another machine).
    pub fn start_duplicate(&self, id: u64, data_dir: Option<&Path>) -> Duplicate {
        self.start_duplicate_with(id, data_dir, &[])
    }

    /// [`Cluster::start_duplicate`] with more `fjord serve` arguments.
    pub fn start_duplicate_with(
        &self,
        id: u64,
        data_dir: Option<&Path>,
        extra: &[&str],
    ) -> Duplicate {
        let dir = self.dir.as_ref().expect("the cluster's directory").path();
        let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
        let log = dir.join(format!("duplicate{n}-of-node{id}.log"));
        let own_dir = dir.join(format!("duplicate{n}-of-node{id}"));
        let ports = free_ports(2);
        let addr = format!("127.0.0.1:{}", ports[0]);
        let peer = format!("127.0.0.1:{}", ports[1]);
        let child = self
            .serve_command(id, [&addr, &peer], data_dir.unwrap_or(&own_dir), &log)
            .args(extra)
            .spawn()
            .expect("spawning a duplicate fjord serve");
        Duplicate { child, log }
    }

    pub fn brokers(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn brokers_csv(&self) -> String {
        self.brokers().join(",")
    }

    /// Changes how this harness's own clients connect from now on (a TLS cluster whose CA
    /// was replaced).
    pub fn set_client_config(&mut self, config: ClientConfig) {
        self.client_config = config;
    }

    pub fn client(&self) -> Client {
        Client::connect(self.brokers(), self.client_config.clone()).expect("client")
    }

    pub fn node_index(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known node id")
    }

    /// SIGKILL: the process dies at once, no shutdown code runs.
    pub fn kill(&mut self, id: u64) {
        let i = self.node_index(id);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL to every running node at the same moment (a power loss), then reaps them.
    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = &mut n.child {
                let _ = c.kill();
            }
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.wait();
            }
        }
    }

    /// Whether node `id`'s process runs (it was started and has not exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        let i = self.node_index(id);
        match &mut self.nodes[i].child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGTERM, then waits for a clean exit (bounded; SIGKILL after 20 s).
    pub fn stop(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let i = self.node_index(id);
        let mut c = self.nodes[i].child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves a stopped node to new client and peer addresses: it listens and advertises
    /// there when it starts again, and every node started from then on has it at `peer_addr`
    /// in its `--peers` (the running ones keep the old entry until restarted).
    pub fn move_node(&mut self, id: u64, addr: String, peer_addr: String) {
        let i = self.node_index(id);
        assert!(self.nodes[i].child.is_none(), "stop node {id} first");
        self.nodes[i].addr = addr;
        self.nodes[i].peer_addr = peer_addr;
        self.peers = self
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
    }

    /// Starts a stopped node again with `peers` as its `--peers` (an operator's edit), in
    /// place of the cluster's; nodes started later get the cluster's.
    pub fn restart_with_peers(&mut self, id: u64, peers: &str) {
        let kept = std::mem::replace(&mut self.peers, peers.to_string());
        self.restart(id);
        self.peers = kept;
    }

    /// Starts a stopped or killed node again on its data directory.
    pub fn restart(&mut self, id: u64) {
        let i = self.node_index(id);
        self.spawn(i);
    }

    /// Starts a stopped or killed node again with more `fjord serve` arguments (`--rebuild`).
    pub fn restart_with(&mut self, id: u64, extra: &[&str]) {
        let i = self.node_index(id);
        self.spawn_with(i, extra);
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.nodes[self.node_index(id)].data_dir.clone()
    }

    /// Deletes a stopped node's data directory: a lost disk.
    pub fn wipe_data(&mut self, id: u64) {
        let i = self.node_index(id);
        assert!(self.nodes[i].child.is_none(), "stop node {id} first");
        std::fs::remove_dir_all(&self.nodes[i].data_dir).expect("deleting the data directory");
    }

    /// Copies a stopped node's data directory to `to`: a backup.
    pub fn copy_data(&self, id: u64, to: &Path) {
        let i = self.node_index(id);
        assert!(self.nodes[i].child.is_none(), "stop node {id} first");
        copy_dir(&self.nodes[i].data_dir, to);
    }

    /// Replaces a stopped node's data directory with a copy of `from`: a restored backup.
    pub fn restore_data(&mut self, id: u64, from: &Path) {
        self.wipe_data(id);
        let i = self.node_index(id);
        copy_dir(from, &self.nodes[i].data_dir);
    }

    /// Waits (at most `deadline`) for node `id`'s process to exit by itself, and returns its
    /// exit status; `None` if it still runs.
    pub async fn wait_exit(
        &mut self,
        id: u64,
        deadline: Duration,
    ) -> Option<std::process::ExitStatus> {
        let i = self.node_index(id);
        let status = wait_child(self.nodes[i].child.as_mut()?, deadline).await;
        if status.is_some() {
            self.nodes[i].child = None;
        }
        status
    }

    /// Waits for node `id`, started on a lost or older data directory, to refuse it: it exits
    /// with a failure, and its log says what it found (`expect`) and that `--rebuild` brings
    /// it back.
    pub async fn assert_refused(&mut self, id: u64, expect: &str) {
        let status = self.wait_exit(id, REFUSAL_DEADLINE).await;
        assert_refused_with(&format!("node {id}"), status, &self.log_text(id), expect);
    }

    /// Waits until node `id`, started with `--rebuild`, is a voter of every group it holds
    /// again (it answers Metadata itself, with nothing left to rebuild).
    pub async fn wait_rebuilt(&self, id: u64) {
        let client = Client::connect(
            vec![self.nodes[self.node_index(id)].addr.clone()],
            self.client_config.clone(),
        )
        .unwrap();
        wait_for(
            &format!("node {id} to be a voter of every group again"),
            READY_DEADLINE,
            || async {
                let md = client.metadata().await.ok()?;
                (md.answered_by == Some(id) && md.rebuilding.is_none() && !md.topics.is_empty())
                    .then_some(())
            },
        )
        .await;
    }

    /// The whole log of node `id` (every run of it).
    pub fn log_text(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[self.node_index(id)].log).unwrap_or_default()
    }

    /// Waits until every running node answers Metadata with a metadata leader and all nodes.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + READY_DEADLINE;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let client = Client::connect(vec![n.addr.clone()], self.client_config.clone()).unwrap();
            loop {
                if let Ok(m) = client.metadata().await
                    && m.metadata_leader.is_some()
                    && m.nodes.len() == self.nodes.len()
                {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "node {} not ready after {READY_DEADLINE:?}; log:\n{}",
                        n.id,
                        self.log_tail(n.id)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        tail(&self.log_text(id))
    }

    /// A `fjord` command pointed at this cluster.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(fjord_bin());
        c.env("FJORD_BROKERS", self.brokers_csv());
        c
    }
}

impl Drop for Cluster {
    /// Kills the nodes. A failing test keeps their data directories and logs, and says where.
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "the failed test's node logs are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// How long a node started on a lost or older data directory may take to refuse it (its
/// peers answer its check within seconds).
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(30);

/// A second `fjord serve` with a running node's id ([`Cluster::start_duplicate`]); killed
/// when dropped.
pub struct Duplicate {
    child: Child,
    pub log: PathBuf,
}

impl Duplicate {
    /// Waits (at most `deadline`) for the process to exit; `None` if it still runs.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, deadline).await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Duplicate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most `deadline`) for `child` to exit, and returns its exit status; `None` if it
/// still runs.
async fn wait_child(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if tokio::time::Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that `who` refused its data directory: it exited (`status`) with a failure, and
/// its `log` says what it found (`expect`) and that `--rebuild` brings it back.
pub fn assert_refused_with(
    who: &str,
    status: Option<std::process::ExitStatus>,
    log: &str,
    expect: &str,
) {
    let Some(status) = status else {
        panic!(
            "{who} started on a lost or old data directory and did not refuse:\n{}",
            tail(log)
        );
    };
    assert!(!status.success(), "{who} exited with {status}");
    assert!(
        log.contains(expect) && log.contains("--rebuild"),
        "{who}'s message does not say what was found ({expect:?}) and what to run:\n{}",
        tail(log)
    );
}

/// The last 40 lines of `text`, for failure messages.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Copies the directory `from` (files and subdirectories) to `to`, which must not exist.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the copy");
    for entry in std::fs::read_dir(from).expect("reading the directory") {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copying a file");
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cluster tests run one at a time: each starts several processes, and a 2-core machine
/// running three clusters at once would turn every election timeout into a coin toss.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads partition `partition` of `topic` directly from node `addr`, without following
/// leaders: `read` picks the mode. Returns `(offset, value)` pairs and the high watermark.
pub async fn read_from_node(
    addr: &str,
    topic: &str,
    partition: u32,
    read: fjord_proto::v1::ReadMode,
) -> Result<(Vec<(u64, String)>, u64), tonic_status::Status> {
    use fjord_proto::v1::fjord_client::FjordClient;
    let mut c = FjordClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic_status::Status::unavailable(e.to_string()))?;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = c
            .fetch(fjord_proto::v1::FetchRequest {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 0,
                max_wait_ms: 0,
                read: read as i32,
            })
            .await?
            .into_inner();
        if r.batches.is_empty() {
            return Ok((out, r.high_watermark));
        }
        for b in r.batches {
            let records =
                fjord_proto::batch::decode(&b.records, b.crc32c).expect("CRC-checked batch");
            for (i, rec) in records.into_iter().enumerate() {
                let o = b.base_offset + i as u64;
                if o >= offset {
                    out.push((o, String::from_utf8_lossy(&rec.value).into_owned()));
                }
            }
            offset = b.base_offset + b.record_count as u64;
        }
    }
}

pub mod tonic_status {
    pub use tonic::Status;
}
