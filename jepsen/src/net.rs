//! The test network: one Linux network namespace per node and one for the clients, joined by
//! a bridge in a hub namespace, and the packet-drop rules that make partitions real.
//!
//! Layout: namespace `{prefix}-hub` holds bridge `br0`; namespace `{prefix}-n{i}` holds
//! `eth0` with address `10.77.0.{i}/24` (node ids from 1); `{prefix}-c` holds the clients at
//! `10.77.0.200`. Nothing is added to the host's own network namespace, so a run never touches
//! the host's network. Faults are one nftables table in the hub's bridge `forward` hook,
//! replaced atomically (`nft -f`) each time the fault set changes.
//!
//! What must hold: every namespace [`Netns::setup`] created is deleted by [`Netns::teardown`]
//! (also called from `Drop`, so a panic unwinding through the owner cleans up), and a new run
//! first deletes namespaces left by an earlier run that was killed.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub use crate::links::{CLIENT, PEER_PORT, PORT, Rule};

const CLIENT_OCTET: u64 = 200;

/// Rules that cut every link between the two groups, both ways.
pub fn cut(a: &[u64], b: &[u64]) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for &x in a {
        for &y in b {
            if x != y {
                rules.insert(Rule::Drop { from: x, to: y });
                rules.insert(Rule::Drop { from: y, to: x });
            }
        }
    }
    rules
}

/// A namespace prefix no other run on this machine uses: the process id and a counter.
pub fn unique_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("fj{}x{n}", std::process::id())
}

/// Whether `ns` is named like [`unique_prefix`] made it, by a process that no longer runs.
fn left_by_a_dead_run(ns: &str) -> bool {
    let Some(rest) = ns.strip_prefix("fj") else {
        return false;
    };
    let Some((pid, _)) = rest.split_once('x') else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

/// The namespaces of one run.
#[derive(Debug)]
pub struct Netns {
    prefix: String,
    nodes: Vec<u64>,
    created: Vec<String>,
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn run_stdin(args: &[&str], input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", args.join(" ")))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}\n{input}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Names of the namespaces that exist now.
fn existing_namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

impl Netns {
    /// Whether this machine lets us create network namespaces (root, `ip` and `nft`).
    pub fn available() -> Result<(), String> {
        for tool in ["ip", "nft"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("`{tool}` is not installed"));
            }
        }
        let probe = format!("fjprobe-{}", std::process::id());
        match run(&["ip", "netns", "add", &probe]) {
            Ok(()) => {
                let _ = run(&["ip", "netns", "del", &probe]);
                Ok(())
            }
            Err(e) => Err(format!("cannot create a network namespace: {e:#}")),
        }
    }

    /// Creates the hub, one namespace per node and the client namespace.
    pub fn setup(prefix: &str, nodes: &[u64]) -> Result<Netns> {
        // A run killed before its teardown leaves its namespaces: remove those of runs whose
        // process is gone, and any with this very prefix.
        for ns in existing_namespaces() {
            if ns.starts_with(&format!("{prefix}-")) || left_by_a_dead_run(&ns) {
                let _ = run(&["ip", "netns", "del", &ns]);
            }
        }
        let mut net = Netns {
            prefix: prefix.to_string(),
            nodes: nodes.to_vec(),
            created: Vec::new(),
        };
        net.build().inspect_err(|_| net.teardown())?;
        Ok(net)
    }

    fn build(&mut self) -> Result<()> {
        let hub = self.hub();
        self.add_ns(&hub)?;
        run(&[
            "ip", "netns", "exec", &hub, "ip", "link", "add", "br0", "type", "bridge",
        ])?;
        run(&[
            "ip", "netns", "exec", &hub, "ip", "link", "set", "br0", "up",
        ])?;
        let mut ends: Vec<(String, u64)> =
            self.nodes.iter().map(|&n| (self.node_ns(n), n)).collect();
        ends.push((self.client_ns(), CLIENT));
        for (ns, id) in ends {
            self.add_ns(&ns)?;
            let veth = format!("v{id}");
            run(&[
                "ip", "link", "add", &veth, "netns", &hub, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            run(&[
                "ip", "netns", "exec", &hub, "ip", "link", "set", &veth, "master", "br0", "up",
            ])?;
            let addr = format!("{}/24", ip(id));
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0",
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
            ])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        self.apply(&BTreeSet::new())
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        run(&["ip", "netns", "add", ns])?;
        self.created.push(ns.to_string());
        Ok(())
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The namespace node `id` runs in.
    pub fn node_ns(&self, id: u64) -> String {
        format!("{}-n{id}", self.prefix)
    }

    /// The namespace the clients run in.
    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    /// Replaces the fault rules with `rules` in one atomic nftables transaction.
    pub fn apply(&self, rules: &BTreeSet<Rule>) -> Result<()> {
        run_stdin(
            &["ip", "netns", "exec", &self.hub(), "nft", "-f", "-"],
            &ruleset(rules),
        )
    }

    /// Deletes every namespace this run created. Safe to call twice.
    pub fn teardown(&mut self) {
        for ns in self.created.drain(..).rev() {
            if let Err(e) = run(&["ip", "netns", "del", &ns]) {
                eprintln!("teardown: {e:#}");
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The address of node `id` (or the clients, for [`CLIENT`]) inside the test network.
pub fn ip(id: u64) -> String {
    if id == CLIENT {
        format!("10.77.0.{CLIENT_OCTET}")
    } else {
        format!("10.77.0.{id}")
    }
}

/// The nftables program that installs exactly `rules` (declaring the table first makes the
/// flush valid on the first call; the whole file is one transaction).
pub fn ruleset(rules: &BTreeSet<Rule>) -> String {
    let mut s = String::from(
        "table bridge fjord {}\nflush table bridge fjord\ntable bridge fjord {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n",
    );
    for rule in rules {
        let line = match *rule {
            Rule::Drop { from, to } => {
                format!("    ip saddr {} ip daddr {} drop\n", ip(from), ip(to))
            }
            Rule::Loss { from, to, percent } => format!(
                "    ip saddr {} ip daddr {} numgen random mod 100 < {percent} drop\n",
                ip(from),
                ip(to)
            ),
            // Both directions of the connections `from` opens to `to`'s peer port; those
            // `to` opens to `from` come from another port and go to `from`'s peer port.
            Rule::Calls { from, to } => format!(
                "    ip saddr {f} ip daddr {t} tcp dport {PEER_PORT} drop\n    ip saddr {t} ip daddr {f} tcp sport {PEER_PORT} drop\n",
                f = ip(from),
                t = ip(to)
            ),
        };
        s.push_str(&line);
    }
    s.push_str("  }\n}\n");
    s
}

/// Moves the calling thread (and the threads it creates afterwards) into namespace `ns`.
/// Call it before starting the async runtime so that every client socket lives there.
pub fn enter(ns: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns({ns}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The network a run uses: namespaces when the machine allows them, else the loopback proxy.
pub enum Network {
    Netns(Netns),
    Proxy(crate::proxy::ProxyNet),
}

impl Network {
    /// Replaces the fault rules.
    pub fn apply(&self, rules: &BTreeSet<Rule>) -> Result<()> {
        match self {
            Network::Netns(n) => n.apply(rules),
            Network::Proxy(p) => {
                p.apply(rules);
                Ok(())
            }
        }
    }

    /// The address node `id` listens on.
    pub fn listen(&self, id: u64) -> String {
        match self {
            Network::Netns(_) => format!("{}:{}", ip(id), PORT),
            Network::Proxy(_) => {
                format!("{}:{}", crate::proxy::node_ip(id), crate::proxy::NODE_PORT)
            }
        }
    }

    /// The address clients reach node `id` at.
    pub fn advertise(&self, id: u64) -> String {
        match self {
            Network::Netns(_) => self.listen(id),
            Network::Proxy(_) => {
                format!("{}:{}", crate::proxy::node_ip(id), crate::proxy::PROXY_PORT)
            }
        }
    }

    /// The address node `id` listens on for its peers.
    pub fn peer_listen(&self, id: u64) -> String {
        match self {
            Network::Netns(_) => format!("{}:{}", ip(id), PEER_PORT),
            Network::Proxy(_) => format!(
                "{}:{}",
                crate::proxy::node_ip(id),
                crate::proxy::NODE_PEER_PORT
            ),
        }
    }

    /// The address the other nodes reach node `id` at (its `--peers` entry): behind the
    /// same faults as its client address.
    pub fn peer_advertise(&self, id: u64) -> String {
        match self {
            Network::Netns(_) => self.peer_listen(id),
            Network::Proxy(_) => format!(
                "{}:{}",
                crate::proxy::node_ip(id),
                crate::proxy::PEER_PROXY_PORT
            ),
        }
    }

    /// The address node `id` must make its peer connections from, if any.
    pub fn source(&self, id: u64) -> Option<String> {
        match self {
            Network::Netns(_) => None,
            Network::Proxy(_) => Some(crate::proxy::node_ip(id).to_string()),
        }
    }

    /// A command that runs `program` as node `id`.
    pub fn command(&self, id: u64, program: &std::path::Path) -> Command {
        match self {
            Network::Netns(n) => {
                let mut cmd = Command::new("ip");
                // `ip netns exec` execs the program, so the child's pid is the program's.
                cmd.args(["netns", "exec", &n.node_ns(id)]).arg(program);
                cmd
            }
            Network::Proxy(_) => Command::new(program),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match self {
            Network::Netns(n) => format!(
                "network: one namespace per node behind a bridge (prefix {}), clients in their own; faults are nftables packet drops",
                n.prefix
            ),
            Network::Proxy(_) => "network: FALLBACK, network namespaces unavailable: nodes on loopback addresses behind a userspace fault proxy (a partition stalls bytes; TCP handshakes are not dropped)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_drops_both_directions_between_groups_only() {
        let rules = cut(&[1], &[2, 3]);
        assert_eq!(rules.len(), 4);
        assert!(rules.contains(&Rule::Drop { from: 1, to: 2 }));
        assert!(rules.contains(&Rule::Drop { from: 3, to: 1 }));
        assert!(!rules.contains(&Rule::Drop { from: 2, to: 3 }));
    }

    #[test]
    fn the_ruleset_replaces_the_table_atomically() {
        let mut rules = BTreeSet::new();
        rules.insert(Rule::Drop {
            from: 1,
            to: CLIENT,
        });
        rules.insert(Rule::Loss {
            from: 2,
            to: 3,
            percent: 20,
        });
        rules.insert(Rule::Calls { from: 1, to: 3 });
        let s = ruleset(&rules);
        assert!(s.contains("ip saddr 10.77.0.1 ip daddr 10.77.0.3 tcp dport 7100 drop"));
        assert!(s.contains("ip saddr 10.77.0.3 ip daddr 10.77.0.1 tcp sport 7100 drop"));
        assert!(s.starts_with("table bridge fjord {}\nflush table bridge fjord\n"));
        assert!(s.contains("ip saddr 10.77.0.1 ip daddr 10.77.0.200 drop"));
        assert!(
            s.contains("ip saddr 10.77.0.2 ip daddr 10.77.0.3 numgen random mod 100 < 20 drop")
        );
    }
}
