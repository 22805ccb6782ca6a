//! fjord's fault-injection harness.
//!
//! # Layout
//! - [`history`]: the recorded operations, one JSON object per line.
//! - [`net`]: network namespaces per node and the nftables rules that partition them.
//! - [`proxy`]: the loopback fallback network, a userspace proxy per node.
//! - [`db`]: the `fjord serve` processes: start, kill, pause, clock, disk faults.
//! - [`disk`]: a node's lazy filesystem (drops unsynced writes on a simulated crash).
//! - [`nemesis`]: the seeded fault schedule and its execution.
//! - [`workload`]: producers and consumers through fjord's Rust client, recording history.
//! - [`run`]: one whole run.
pub mod db;
pub mod disk;
pub mod history;
pub mod lazyfs;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod run;
pub mod workload;
