//! Who talks to whom in a run: the endpoints of the fault rules (node ids, and [`CLIENT`]
//! for the clients), the packet-drop rules themselves, and the ports a node's clients and
//! peers reach it on. Both networks ([`crate::net`]'s namespaces and [`crate::proxy`]'s
//! loopback proxy) and the node launcher ([`crate::db`]) depend on this, and it on nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The port a node's clients reach it on: inside its namespace, or where the proxy listens
/// for it.
pub const PORT: u16 = 7000;
/// The port a node's peers reach it on (its `--peers` entry), likewise.
pub const PEER_PORT: u16 = 7100;

/// The client pseudo-node in [`Rule`]s.
pub const CLIENT: u64 = 0;

/// One directed packet-drop rule between two endpoints (node ids, or [`CLIENT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// Drop every packet from `from` to `to`.
    Drop { from: u64, to: u64 },
    /// Drop this percentage of the packets from `from` to `to`.
    Loss { from: u64, to: u64, percent: u8 },
    /// Stall the calls node `from` makes to node `to`: every packet of the connections
    /// `from` opens to `to`'s peer port, both ways, while the connections `to` opens to
    /// `from` carry on. (A call and its answer share the caller's connection, so a [`Drop`]
    /// of one direction stalls the calls both ways make; this fault is the one-way link a
    /// node's own requests see.)
    ///
    /// [`Drop`]: Rule::Drop
    Calls { from: u64, to: u64 },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |n: u64| {
            if n == CLIENT {
                "clients".to_string()
            } else {
                format!("n{n}")
            }
        };
        match *self {
            Rule::Drop { from, to } => write!(f, "{}->{} drop", name(from), name(to)),
            Rule::Loss { from, to, percent } => {
                write!(f, "{}->{} loss {percent}%", name(from), name(to))
            }
            Rule::Calls { from, to } => write!(f, "{}->{} calls stall", name(from), name(to)),
        }
    }
}
