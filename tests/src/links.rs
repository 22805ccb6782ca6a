//! Directed proxies between the nodes' peer ports, for a fault a packet drop cannot make: the
//! calls one node makes to another stall while the calls the other way go through. (A call
//! and its answer share one TCP connection, the caller's, so dropping one direction's packets
//! stalls both directions of every call; here the connections one node opens to another are
//! held, and those the other opens back are not.)
//!
//! Each ordered pair of nodes `(from, to)` gets a listener on loopback that forwards to
//! `to`'s peer port; node `from` is started with that listener as `to`'s `--peers` entry
//! ([`PeerLinks::peers_of`]). While [`PeerLinks::stall_calls`] holds a pair, the bytes of its
//! connections wait in the proxy (both directions), as a dead link's would; released, they
//! flow again.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Cluster;

/// Bytes forwarded per read.
const CHUNK_BYTES: usize = 64 * 1024;

struct Link {
    addr: String,
    stalled: watch::Sender<bool>,
}

/// The proxies of one cluster, one per ordered pair of nodes; they stop when this is dropped.
pub struct PeerLinks {
    links: BTreeMap<(u64, u64), Link>,
    tasks: JoinSet<()>,
}

impl PeerLinks {
    /// Starts a proxy for every ordered pair of `cluster`'s nodes. Must be called inside the
    /// tokio runtime.
    pub async fn start(cluster: &Cluster) -> PeerLinks {
        let mut links = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for from in &cluster.nodes {
            for to in cluster.nodes.iter().filter(|n| n.id != from.id) {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                let (stalled, rx) = watch::channel(false);
                tasks.spawn(forward(listener, to.peer_addr.clone(), rx));
                links.insert((from.id, to.id), Link { addr, stalled });
            }
        }
        PeerLinks { links, tasks }
    }

    /// The `--peers` of node `id`: its own entry as the cluster's, every other node through
    /// the proxy of the pair `(id, other)`.
    pub fn peers_of(&self, cluster: &Cluster, id: u64) -> String {
        cluster
            .nodes
            .iter()
            .map(|n| match self.links.get(&(id, n.id)) {
                Some(link) => format!("{}={}", n.id, link.addr),
                None => format!("{}={}", n.id, n.peer_addr),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Holds (or releases) the connections node `from` opens to node `to`.
    pub fn stall_calls(&self, from: u64, to: u64, stalled: bool) {
        self.links[&(from, to)].stalled.send_replace(stalled);
    }
}

impl Drop for PeerLinks {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Accepts connections on `listener` and forwards each to `to`.
async fn forward(listener: TcpListener, to: String, stalled: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of descriptors, say: back off rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let (to, stalled) = (to.clone(), stalled.clone());
        conns.spawn(async move {
            let Ok(outbound) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::join!(pump(ir, ow, stalled.clone()), pump(or, iw, stalled));
        });
        while conns.try_join_next().is_some() {}
    }
}

/// Copies `reader`'s bytes to `writer`, holding them while the link is stalled.
async fn pump(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            break;
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // A stalled link holds the end of stream too, as a dead one would.
    let _ = stalled.wait_for(|s| !*s).await;
    let _ = writer.shutdown().await;
}
