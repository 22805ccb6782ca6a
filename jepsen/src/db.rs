//! The cluster under test: one real `fjord serve` process per node, each inside its own
//! network namespace, with its own data directory, log file and (optionally) a fake wall
//! clock and a lazy filesystem under its data directory.
//!
//! What must hold: a node has at most one process; every process is killed when the
//! [`Db`] is dropped; a node's clock file always exists while the node can run, so
//! libfaketime never falls back to the real time mid-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::disk::LazyMount;
use crate::net::Network;
use fjord_harness::group as model;

/// The port every node listens on, inside its own namespace.
pub use crate::links::PORT;

/// Where libfaketime lives on Debian (package `faketime`). The MT variant is the one for
/// multi-threaded programs.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub fjord_bin: PathBuf,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Run the node under libfaketime so that its wall clock can be moved.
    pub fake_clock: bool,
    /// Put the node's data directory on a lazy filesystem that can lose unsynced writes.
    pub lazy_disk: Option<PathBuf>,
    /// `--retention-check-interval-ms`, when the run has retention (else the default).
    pub retention_check_interval_ms: Option<u64>,
    /// TLS on (`--tls-cert`, `--tls-key`, `--tls-ca`), with these files.
    pub tls: Option<crate::tls::RunTls>,
}

/// One node.
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    mount: Option<LazyMount>,
}

impl Node {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }
    pub fn clock_file(&self) -> PathBuf {
        self.dir.join("faketime")
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// The nodes of one run.
#[derive(Debug)]
pub struct Db {
    pub nodes: BTreeMap<u64, Node>,
    options: NodeOptions,
    peers: String,
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Copies the tree `from` into `to` (created).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc != 0 {
        bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Db {
    /// Prepares (does not start) nodes `ids` under `root`.
    pub fn new(root: &Path, net: &Network, ids: &[u64], options: NodeOptions) -> Result<Db> {
        let peers = ids
            .iter()
            .map(|&id| format!("{id}={}", net.peer_advertise(id)))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for &id in ids {
            let dir = root.join(format!("n{id}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut node = Node {
                id,
                dir,
                child: None,
                paused: false,
                mount: None,
            };
            std::fs::write(node.clock_file(), format!("{}\n", crate::clock::NEUTRAL))?;
            if let Some(lazyfs_bin) = &options.lazy_disk {
                let backing = node.dir.join("backing");
                std::fs::create_dir_all(&backing)?;
                std::fs::create_dir_all(node.data_dir())?;
                node.mount = Some(LazyMount::mount(
                    lazyfs_bin,
                    &backing,
                    &node.data_dir(),
                    &node.dir.join("lazyfs.sock"),
                    &node.dir.join("lazyfs.log"),
                )?);
            }
            nodes.insert(id, node);
        }
        Ok(Db {
            nodes,
            options,
            peers,
        })
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn brokers(&self, net: &Network) -> Vec<String> {
        self.nodes.keys().map(|&id| net.advertise(id)).collect()
    }

    fn node(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))
    }

    /// Starts node `id`'s process in its namespace. A running node is left alone.
    pub fn start(&mut self, net: &Network, id: u64) -> Result<()> {
        self.start_with(net, id, &[])
    }

    /// Starts node `id` with more `fjord serve` arguments (`--rebuild`).
    pub fn start_with(&mut self, net: &Network, id: u64, extra: &[&str]) -> Result<()> {
        let options = self.options.clone();
        let peers = self.peers.clone();
        let node = self.node(id)?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        let mut cmd = net.command(id, &options.fjord_bin);
        cmd.args([
            "serve",
            "--id",
            &id.to_string(),
            "--listen",
            &net.listen(id),
        ])
        .args(["--advertise", &net.advertise(id)])
        .args(["--peer-listen", &net.peer_listen(id)])
        .arg("--data-dir")
        .arg(node.data_dir())
        .args([
            "--peers",
            &peers,
            "--heartbeat-interval-ms",
            &options.heartbeat_interval_ms.to_string(),
            "--election-timeout-ms",
            &options.election_timeout_ms.to_string(),
            // Partitions the workload leaves idle for a moment hibernate (their Raft
            // instances stop) and must start again under the faults; the default is 10 s.
            "--hibernate-after-ms",
            "1000",
        ])
        // The consumer-group workload's: short sessions, so that its crashes and pauses move
        // partitions within a run; one coordinator partition for its one group.
        .args([
            "--group-session-timeout-ms",
            &model::SESSION_TIMEOUT_MS.to_string(),
            "--group-heartbeat-interval-ms",
            &model::HEARTBEAT_INTERVAL_MS.to_string(),
            "--group-partitions",
            &model::COORDINATOR_PARTITIONS.to_string(),
        ])
        .args(
            options
                .retention_check_interval_ms
                .map(|ms| ["--retention-check-interval-ms".to_string(), ms.to_string()])
                .into_iter()
                .flatten(),
        )
        .args(options.tls.iter().flat_map(|t| t.serve_args()))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        if let Some(source) = net.source(id) {
            cmd.args(["--source-address", &source]);
        }
        if options.fake_clock {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", node.clock_file())
                .env("FAKETIME_NO_CACHE", "1")
                // Faking the monotonic clock hangs tokio: only the wall clock moves.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd.spawn().context("spawning fjord serve")?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILLs node `id` and reaps it. A stopped node is left alone.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if let Some(mut child) = node.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        node.paused = false;
        Ok(())
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGSTOP)?;
            node.paused = true;
        }
        Ok(())
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGCONT)?;
            node.paused = false;
        }
        Ok(())
    }

    /// Sets node `id`'s wall clock (a libfaketime spec, made by [`crate::clock`]: `+120 x1`,
    /// `+0 x1.5`; every spec names its rate, since libfaketime keeps the last one it read).
    /// Takes effect on the node's next clock read.
    pub fn set_clock(&mut self, id: u64, spec: &str) -> Result<()> {
        let node = self.node(id)?;
        // Write then rename, so the node never reads a half-written file.
        let tmp = node.dir.join("faketime.tmp");
        std::fs::write(&tmp, format!("{spec}\n"))?;
        std::fs::rename(&tmp, node.clock_file())?;
        Ok(())
    }

    /// Sets every node's clock file to the neutral spec; then reads them all back: the
    /// nodes whose file does not hold it, with what it holds (see [`crate::clock`]).
    pub fn reset_clocks(&mut self) -> Vec<String> {
        let mut files = BTreeMap::new();
        for id in self.ids() {
            let set = self.set_clock(id, crate::clock::NEUTRAL);
            let read = self
                .nodes
                .get(&id)
                .map(|n| std::fs::read_to_string(n.clock_file()).map_err(|e| e.to_string()));
            let contents = match (set, read) {
                (Err(e), _) => Err(format!("not reset: {e:#}")),
                (Ok(()), Some(r)) => r,
                (Ok(()), None) => Err("no such node".to_string()),
            };
            files.insert(id, contents);
        }
        crate::clock::not_neutral(&files)
    }

    /// Drops every write node `id`'s disk had not fsynced. The node must be dead.
    pub fn lose_unsynced(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if node.child.is_some() {
            bail!("node {id} is running: kill it before losing its unsynced writes");
        }
        match &node.mount {
            Some(m) => m.crash(),
            None => bail!("node {id} has no lazy disk (run with disk faults enabled)"),
        }
    }

    /// Deletes everything in dead node `id`'s data directory: a lost disk. (Its contents, not
    /// the directory: it may be a mount point.)
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if node.child.is_some() {
            bail!("node {id} is running: kill it before wiping its disk");
        }
        empty_dir(&node.data_dir())
    }

    /// Copies dead node `id`'s data directory aside (a backup taken now, restored later by
    /// [`Db::restore_copy`]).
    pub fn save_copy(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if node.child.is_some() {
            bail!("node {id} is running: kill it before copying its disk");
        }
        let copy = node.dir.join("stale-copy");
        let _ = std::fs::remove_dir_all(&copy);
        copy_tree(&node.data_dir(), &copy)
    }

    /// Whether node `id` has a copy saved by [`Db::save_copy`].
    pub fn has_copy(&self, id: u64) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.dir.join("stale-copy").is_dir())
    }

    /// Replaces dead node `id`'s data with the copy [`Db::save_copy`] took (then forgets it).
    pub fn restore_copy(&mut self, id: u64) -> Result<()> {
        self.wipe(id)?;
        let node = self.node(id)?;
        let copy = node.dir.join("stale-copy");
        copy_tree(&copy, &node.data_dir())?;
        std::fs::remove_dir_all(&copy)?;
        Ok(())
    }

    /// Turns "disk full" on or off for node `id`.
    pub fn disk_full(&mut self, id: u64, full: bool) -> Result<()> {
        let node = self.node(id)?;
        match &node.mount {
            Some(m) => m.set_full(full),
            None => bail!("node {id} has no lazy disk (run with disk faults enabled)"),
        }
    }

    /// Makes node `id`'s fsyncs answer `ms` milliseconds late (0: on time); the node may run.
    pub fn fsync_delay(&mut self, id: u64, ms: u64) -> Result<()> {
        let node = self.node(id)?;
        match &node.mount {
            Some(m) => m.set_fsync_delay(ms),
            None => bail!("node {id} has no lazy disk (run with disk faults enabled)"),
        }
    }

    /// Flips `bits` random bits of node `id`'s stored data. The node must be dead.
    pub fn flip_bits(
        &mut self,
        id: u64,
        bits: usize,
        rng: &mut impl rand::Rng,
    ) -> Result<Vec<u64>> {
        let node = self.node(id)?;
        if node.child.is_some() {
            bail!("node {id} is running: kill it before corrupting its disk");
        }
        let file = match &node.mount {
            Some(m) => {
                // Unsynced data would hide the flips: write it back first, as the page
                // cache of a killed process would be.
                m.sync()?;
                m.backing().join("fjord.redb")
            }
            None => node.data_dir().join("fjord.redb"),
        };
        let mut bytes =
            std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        // The exact bytes at the crash, to put back if the node refuses the corrupted file.
        std::fs::write(node.dir.join("fjord.redb.pristine"), &bytes)?;
        let mut flipped = Vec::new();
        for _ in 0..bits {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] ^= 1 << rng.gen_range(0..8);
            flipped.push(at as u64);
        }
        std::fs::write(&file, bytes)?;
        Ok(flipped)
    }

    /// Puts back the data file [`Db::flip_bits`] corrupted. Only for a node that has not run
    /// on the corrupted file (it refused to start), so no state it acknowledged is lost.
    pub fn restore_unflipped(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if node.child.is_some() {
            bail!("node {id} is running: it may have used the corrupted file");
        }
        let file = match &node.mount {
            Some(m) => {
                // Whatever the refused start wrote goes.
                m.crash()?;
                m.backing().join("fjord.redb")
            }
            None => node.data_dir().join("fjord.redb"),
        };
        let pristine = node.dir.join("fjord.redb.pristine");
        std::fs::copy(&pristine, &file)?;
        std::fs::remove_file(&pristine)?;
        Ok(())
    }

    /// Whether node `id`'s process has exited on its own (reaping it if so).
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = self.nodes.get_mut(&id)?;
        let status = node.child.as_mut()?.try_wait().ok().flatten()?;
        node.child = None;
        Some(status)
    }

    /// Bytes in node `id`'s log so far.
    pub fn log_len(&self, id: u64) -> u64 {
        self.nodes
            .get(&id)
            .and_then(|n| std::fs::metadata(n.log_path()).ok())
            .map_or(0, |m| m.len())
    }

    /// Whether node `id`'s log after byte `from` contains `text`.
    pub fn logged_since(&self, id: u64, from: u64, text: &str) -> bool {
        let Some(n) = self.nodes.get(&id) else {
            return false;
        };
        match std::fs::read(n.log_path()) {
            Ok(bytes) => bytes
                .get(from as usize..)
                .is_some_and(|b| String::from_utf8_lossy(b).contains(text)),
            Err(_) => false,
        }
    }

    /// Node `id`'s log after byte `from`.
    pub fn log_since(&self, id: u64, from: u64) -> String {
        let Some(n) = self.nodes.get(&id) else {
            return String::new();
        };
        match std::fs::read(n.log_path()) {
            Ok(bytes) => bytes
                .get(from as usize..)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// How many lines of node `id`'s log contain `text`.
    pub fn count_logged(&self, id: u64, text: &str) -> usize {
        let Some(n) = self.nodes.get(&id) else {
            return 0;
        };
        match std::fs::read(n.log_path()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).matches(text).count(),
            Err(_) => 0,
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Some(node) = self.nodes.get(&id) else {
            return String::new();
        };
        let text = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills every node and unmounts the lazy disks.
    pub fn shutdown(&mut self) {
        let ids = self.ids();
        for id in ids {
            let _ = self.resume(id);
            let _ = self.kill(id);
            if let Some(node) = self.nodes.get_mut(&id) {
                node.mount.take();
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long a node may take to answer after a (re)start.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
