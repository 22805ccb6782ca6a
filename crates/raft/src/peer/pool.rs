//! The connections to the peer nodes: one gRPC channel (one HTTP/2 connection) per peer,
//! shared by every group on this node, a second one for the node-level heartbeats, and the
//! address book that says where each peer is now. How a channel is made is injected
//! ([`Connector`]), so tests can run whole clusters over a simulated network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::raft::raft_transport_client::RaftTransportClient;
use tonic::transport::{Channel, Endpoint};

use super::MAX_RAFT_MESSAGE_BYTES;
use super::client::PeerClient;
use crate::NodeId;

/// Makes the channel to a peer address. Injected so that a simulated network can replace TCP.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, addr: &str) -> Result<Channel, ConnectError>;
}

/// Why no channel to a peer could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid peer address {addr:?}: {source}")]
    InvalidAddress {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The endpoint of a peer at `addr` (`host:port`), before fjord's settings.
pub fn peer_endpoint(addr: &str) -> Result<Endpoint, ConnectError> {
    Endpoint::from_shared(format!("http://{addr}")).map_err(|source| ConnectError::InvalidAddress {
        addr: addr.to_string(),
        source,
    })
}

/// Plain TCP, HTTP/2 keep-alives so a dead peer is noticed and a healed one reconnected.
#[derive(Debug, Default, Clone)]
pub struct TcpConnector;

/// The endpoint of a peer at `addr` with fjord's TCP settings: a connect timeout, Nagle off,
/// HTTP/2 keep-alives (a TLS connector dials through it too).
pub fn tcp_endpoint(addr: &str) -> Result<Endpoint, ConnectError> {
    Ok(peer_endpoint(addr)?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true))
}

impl Connector for TcpConnector {
    fn connect(&self, addr: &str) -> Result<Channel, ConnectError> {
        Ok(tcp_endpoint(addr)?.connect_lazy())
    }
}

/// Plain TCP from a fixed local address, so that a fault proxy in front of a peer can tell
/// which node a connection comes from (the fault harness's loopback mode).
#[derive(Debug, Clone)]
pub struct SourceBoundTcpConnector(pub std::net::IpAddr);

impl Connector for SourceBoundTcpConnector {
    fn connect(&self, addr: &str) -> Result<Channel, ConnectError> {
        Ok(tcp_endpoint(addr)?
            .local_address(Some(self.0))
            .connect_lazy())
    }
}

/// One channel per peer address, shared by all groups; and a second one for the node-level
/// heartbeats, so that they never wait behind the groups' messages (HTTP/2 flow control, the
/// peer's per-connection concurrency limit): a heartbeat queued behind a burst of group
/// traffic would make a busy peer look dead.
///
/// It also holds the node's address book: where each peer node is now (as registered in the
/// metadata, else as configured). A group's membership records each member's address from
/// when the group was formed; a node that registered again at a new address would never be
/// reached by the groups formed before, so every message goes to the address book's entry for
/// its target first, and to the membership's only for a node the book does not know.
pub struct PeerPool {
    connector: Arc<dyn Connector>,
    // Short critical sections (a map lookup), no await inside.
    channels: Mutex<HashMap<String, Channel>>,
    heartbeat_channels: Mutex<HashMap<String, Channel>>,
    // Read on every message, replaced when the metadata's addresses change: a short std lock.
    addresses: std::sync::RwLock<HashMap<NodeId, String>>,
}

impl PeerPool {
    pub fn new(connector: Arc<dyn Connector>) -> Arc<Self> {
        Arc::new(PeerPool {
            connector,
            channels: Mutex::new(HashMap::new()),
            heartbeat_channels: Mutex::new(HashMap::new()),
            addresses: std::sync::RwLock::new(HashMap::new()),
        })
    }

    /// Replaces the address book (the peers' current addresses), if it changed.
    pub fn set_addresses(&self, peers: &std::collections::BTreeMap<NodeId, String>) {
        let same = {
            let book = self.addresses.read().unwrap();
            book.len() == peers.len() && peers.iter().all(|(n, a)| book.get(n) == Some(a))
        };
        if !same {
            *self.addresses.write().unwrap() = peers.iter().map(|(n, a)| (*n, a.clone())).collect();
        }
    }

    /// Where `node` is now: the address book's entry, else `known` (a membership's).
    pub fn address_of(&self, node: NodeId, known: &str) -> String {
        self.addresses
            .read()
            .unwrap()
            .get(&node)
            .cloned()
            .unwrap_or_else(|| known.to_string())
    }

    fn cached(
        &self,
        map: &Mutex<HashMap<String, Channel>>,
        addr: &str,
    ) -> Result<Channel, ConnectError> {
        let mut map = map.lock().unwrap();
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = self.connector.connect(addr)?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A client of the peer at `addr`, on the connection every group shares.
    pub fn peer(&self, addr: &str) -> PeerClient<'_> {
        PeerClient::new(self, addr, Lane::Groups)
    }

    /// A client of the peer at `addr`, on the heartbeat connection.
    pub fn heartbeat_peer(&self, addr: &str) -> PeerClient<'_> {
        PeerClient::new(self, addr, Lane::Heartbeats)
    }

    /// The generated transport client to `addr` on `lane`, made on first use.
    pub(super) fn transport(
        &self,
        addr: &str,
        lane: Lane,
    ) -> Result<RaftTransportClient<Channel>, ConnectError> {
        Ok(match lane {
            Lane::Groups => RaftTransportClient::new(self.cached(&self.channels, addr)?)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
            Lane::Heartbeats => {
                RaftTransportClient::new(self.cached(&self.heartbeat_channels, addr)?)
            }
        })
    }
}

/// Which of a peer's two connections a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Every group's messages and every other RPC.
    Groups,
    /// The node-level heartbeats only.
    Heartbeats,
}
