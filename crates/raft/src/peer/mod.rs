//! The node-to-node protocol: everything one fjord node says to another, in one place.
//!
//! One gRPC service, `RaftTransport` (`proto/raft.proto`), served beside the client API
//! (`fjord.v1.Fjord`) on the node's address. Its RPCs:
//!
//! | RPC | what | sent by |
//! |---|---|---|
//! | `Append`, `StreamAppend`, `Vote`, `PreVote`, `Snapshot`, `TransferLeader` | a group's Raft messages | openraft, through [`GroupNetwork`] |
//! | `MetaWrite` | a metadata command, for the metadata leader to apply | a node that does not lead the metadata group |
//! | `MoveLeader` | "hand your leadership of this partition to that replica" | the controller |
//! | `ChangeVoter` | "make this node a learner / a voter again" of a group | a `--rebuild` (the metadata leader, then the rebuilt node) |
//! | `CheckIdentity` | "what do you know of my data directory?", or "I start as this generation" | a starting node's boot check |
//! | `Rebuild` | "take me back as a learner" | a node started with `--rebuild` |
//! | `ReadPartition` | "read your replica of this partition": a reset by time's offset (after a ReadIndex), a record's timestamp (lag in time), the high watermark (a commit) | a group coordinator, for a client request it authorized, when another node leads the partition |
//! | `Heartbeat` | node-level liveness, and the claims of quiet groups | [`crate::liveness`], every interval, to every peer |
//!
//! # Layout
//! - [`wire`]: the messages as typed values and their encoding: a group's messages are
//!   postcard payloads of fjord's or openraft's types in a `GroupMessage`; node messages are
//!   their own protobuf messages, converted to and from the types here. Typed errors, no
//!   panics.
//! - [`pool`]: the connections: one HTTP/2 connection per peer shared by every group, a second
//!   one for the heartbeats only (so they never wait behind group traffic), and the address
//!   book; the connector is injected (a simulation brings its own network).
//! - [`client`]: [`PeerClient`], one peer as a typed async method per RPC, each with its
//!   caller's timeout, failing with a [`PeerError`]; [`stream`]: its pipelined replication
//!   stream.
//! - [`network`]: openraft's network for one group ([`GroupNetworkFactory`]) over
//!   [`PeerClient`].
//! - [`server`]: [`PeerServer`], the gRPC service: decodes, hands Raft messages to the groups
//!   ([`deliver`], which also wakes quiet replicas) and everything else to the node's
//!   [`PeerHandler`], and encodes the answers.
//!
//! **Adding a message:** the RPC in `proto/raft.proto`, its types in [`wire`], a method on
//! [`PeerClient`], a method on [`PeerHandler`] (and its line in [`PeerServer`]). The node's
//! crate implements only the handler: what the request does.
//!
//! **What the receiver answers.** A Raft message for a group the node does not host (yet) is
//! NOT_FOUND, and one it cannot take now (a quiet replica's refused pre-vote, a stopped group)
//! UNAVAILABLE: the sender's openraft takes both as an unreachable peer and backs off. An
//! error of the group's openraft travels inside the answer ([`wire::WireResult`]). The codes
//! of every other failure are the handler's crate's (for fjord-server, its one mapping of
//! errors to statuses).
//!
//! The payloads are internal and change with fjord's version (all nodes of a cluster run the
//! same version); the encodings kept so far are pinned by tests.

pub mod client;
mod deliver;
pub mod network;
pub mod pool;
pub mod server;
pub mod stream;
pub mod wire;

pub use client::{APPEND_MIN_BYTES_PER_SEC, PeerClient, PeerError};
pub use network::{GroupNetwork, GroupNetworkFactory};
pub use pool::{
    ConnectError, Connector, PeerPool, SourceBoundTcpConnector, TcpConnector, peer_endpoint,
    tcp_endpoint,
};
pub use server::{DispatchError, PeerHandler, PeerServer};
pub use stream::STREAM_IDLE;

/// Largest Raft message accepted or sent, in bytes (an append of `max_payload_entries`
/// batches of at most the produce limit each fits).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 256 << 20;
