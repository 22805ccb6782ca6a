//! The fallback network, for machines where network namespaces cannot be made: every node on
//! its own loopback address (`127.0.0.1{id}`), behind a userspace proxy that the harness runs.
//!
//! Node `i` listens for clients on `127.0.0.(10+i):7001` and is known to them as
//! `127.0.0.(10+i):7000`, where the proxy listens; likewise for its peers on
//! `127.0.0.(10+i):7002`, known to them as `127.0.0.(10+i):7100` (a proxy of its own). Nodes make their peer connections from their
//! own address (`fjord serve --source-address`), so the proxy knows which node a connection
//! comes from; any other source is a client. A `Drop` rule stalls the bytes of that direction
//! (they wait in the socket buffers, as TCP would retransmit them, until the rule heals or a
//! keep-alive gives up on the connection); a `Loss` rule delays a share of the chunks.
//!
//! What it cannot do, and the report says so: drop the TCP handshake itself (connections
//! open, then stall), or lose bytes of a connection that survives.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::links::{CLIENT, Rule};

/// The port the proxy listens on, on each node's address.
pub const PROXY_PORT: u16 = crate::links::PORT;
/// The port each node itself listens on for clients.
pub const NODE_PORT: u16 = 7001;
/// The port the proxy of the peer traffic listens on, on each node's address.
pub const PEER_PROXY_PORT: u16 = crate::links::PEER_PORT;
/// The port each node itself listens on for its peers.
pub const NODE_PEER_PORT: u16 = 7002;
/// Bytes forwarded per read.
const CHUNK_BYTES: usize = 64 * 1024;

/// Node `id`'s loopback address.
pub fn node_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
}

fn who(ip: IpAddr, nodes: &[u64]) -> u64 {
    nodes
        .iter()
        .copied()
        .find(|&n| node_ip(n) == ip)
        .unwrap_or(CLIENT)
}

/// The proxies of one run; they stop when this is dropped.
pub struct ProxyNet {
    rules: watch::Sender<BTreeSet<Rule>>,
    tasks: JoinSet<()>,
}

impl ProxyNet {
    /// Starts two proxies per node (its client port, its peer port). Must be called inside
    /// the tokio runtime.
    pub async fn start(nodes: &[u64]) -> Result<ProxyNet> {
        let (rules, _) = watch::channel(BTreeSet::new());
        let mut tasks = JoinSet::new();
        let ports = [(PROXY_PORT, NODE_PORT), (PEER_PROXY_PORT, NODE_PEER_PORT)];
        for (&id, (front_port, back_port)) in nodes
            .iter()
            .flat_map(|id| ports.iter().map(move |p| (id, *p)))
        {
            let front = SocketAddr::new(node_ip(id), front_port);
            let listener = TcpListener::bind(front)
                .await
                .with_context(|| format!("binding the proxy of n{id} on {front}"))?;
            let back = SocketAddr::new(node_ip(id), back_port);
            let rules_rx = rules.subscribe();
            let nodes = nodes.to_vec();
            let peer_port = front_port == PEER_PROXY_PORT;
            tasks.spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    let Ok((inbound, peer)) = listener.accept().await else {
                        // Out of descriptors, say: back off rather than spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let from = who(peer.ip(), &nodes);
                    let rules_rx = rules_rx.clone();
                    // A connection a node opened to this node's peer port: a call of
                    // `from`'s, stalled both ways by a `Calls` rule.
                    let call =
                        (peer_port && from != CLIENT).then_some(Rule::Calls { from, to: id });
                    conns.spawn(async move {
                        let Ok(outbound) = TcpStream::connect(back).await else {
                            return;
                        };
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (ir, iw) = inbound.into_split();
                        let (or, ow) = outbound.into_split();
                        tokio::join!(
                            pump(ir, ow, (from, id), call, rules_rx.clone()),
                            pump(or, iw, (id, from), call, rules_rx),
                        );
                    });
                    // Reap finished connections so the set stays small.
                    while conns.try_join_next().is_some() {}
                }
            });
        }
        Ok(ProxyNet { rules, tasks })
    }

    /// Replaces the fault rules.
    pub fn apply(&self, rules: &BTreeSet<Rule>) {
        self.rules.send_replace(rules.clone());
    }
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Copies `from`'s bytes to `to`, holding them while a rule drops that direction or stalls
/// the connection's `call`.
async fn pump(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    (from, to): (u64, u64),
    call: Option<Rule>,
    mut rules: watch::Receiver<BTreeSet<Rule>>,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let blocked = |r: &BTreeSet<Rule>| {
        r.contains(&Rule::Drop { from, to }) || call.is_some_and(|c| r.contains(&c))
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if rules.wait_for(|r| !blocked(r)).await.is_err() {
            break;
        }
        let loss = rules.borrow().iter().find_map(|r| match *r {
            Rule::Loss {
                from: f,
                to: t,
                percent,
            } if f == from && t == to => Some(percent),
            _ => None,
        });
        if let Some(percent) = loss {
            let delay = {
                let mut rng = rand::thread_rng();
                (rng.gen_range(0..100) < percent).then(|| rng.gen_range(20..200))
            };
            if let Some(ms) = delay {
                // A lost segment costs a retransmission timeout.
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // A stalled direction holds its end of stream too, as a dead link would.
    let _ = rules.wait_for(|r| !blocked(r)).await;
    let _ = writer.shutdown().await;
}
