//! fjord's fault-injection harness, process tier: real `fjord serve` processes, real faults.
//!
//! The history format, the checker, the workload model and the fault plans live in the
//! shared core, `fjord-harness` (`jepsen/core`), which the simulation tier (`jepsen/sim`) uses
//! too; this crate keeps what acts on real processes.
//!
//! # Layout
//! - [`report`]: statistics per run and per fault window, the latency SVG, the run summary
//!   (JSON and text) and the Markdown table comparing CP and AP runs.
//! - [`links`]: the fault rules' endpoints and packet-drop rules, and the node port (both
//!   networks use it; it uses nothing: dependencies run links ← proxy ← net ← db).
//! - [`net`]: network namespaces per node and the nftables rules that partition them.
//! - [`proxy`]: the loopback fallback network, a userspace proxy per node.
//! - [`clock`]: the libfaketime specs of the clock faults, and how libfaketime reads them.
//! - [`db`]: the `fjord serve` processes: start, kill, pause, clock, disk faults.
//! - [`lazyfs`]: `fjord-lazyfs`, a FUSE pass-through that holds writes in memory until fsync
//!   and drops them on a simulated crash.
//! - [`disk`]: a node's lazy filesystem, as the harness drives it.
//! - [`nemesis`]: the execution of the core's seeded fault steps.
//! - [`workload`]: the core's workload model run through fjord's Rust client, recording the
//!   history.
//! - [`group`]: the core's consumer-group workload: members that poll, commit, crash and
//!   pause, and the drain after the final reads.
//! - [`retention`]: the core's log-lifecycle workload: the run's retention, the deleter,
//!   log-start lookups, and every replica's bounds once the run is quiet.
//! - [`run`]: one whole run, and its analysis.
pub mod clock;
pub mod compaction;
pub mod db;
pub mod disk;
pub mod group;
pub mod lazyfs;
pub mod links;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod replicas;
pub mod report;
pub mod retention;
pub mod run;
pub mod tls;
pub mod workload;
