//! The core of fjord's fault harness, shared by its two tiers: `fjord-jepsen` (real `fjord
//! serve` processes in network namespaces) and `fjord-sim` (the node code under turmoil).
//! Both record their runs in the format defined here and judge them with the one checker
//! here, so both report the same anomaly classes in the same words.
//!
//! Everything here is pure data and functions: no I/O runtime, no clock, no network (its
//! dependencies are serde, serde_json and rand). Each tier keeps only its effects (running
//! the workload against its cluster, carrying out faults) and feeds what it saw in here. A
//! new workload goes here once: its operations in [`history`], its rules in a checker, its
//! pure model beside [`workload`]; each tier then adds only the loop that runs it.
//!
//! # Layout
//! - [`history`]: the recorded operations, one JSON object per line, and their pairing into
//!   invoke/completion operations.
//! - [`checker`]: the check of a history: lost, unseen, duplicated, inconsistent,
//!   nonmonotonic, aborted, stale and phantom reads, zombie writes, the consumer-group
//!   rules (poll-skip, nonmonotonic-poll, duplicate-delivery, committed-too-far,
//!   lost-write) and the log-lifecycle rules (expired, below-log-start,
//!   log-start-regressed, diverged-start), each with the events that prove it.
//! - [`workload`]: the operations, the values and how producers choose partitions, and the
//!   final read's end.
//! - [`group`]: the consumer-group workload's model: members, their seeded crashes, pauses
//!   and commits, its operations, and the drain's end.
//! - [`retention`]: the log-lifecycle workload's model: the run's short retention, the
//!   deleter's seeded `DeleteRecords`, the bounds readers learn, and the clock bound that
//!   deletions by time are judged with.
//! - [`fault`]: the fault vocabulary and the seeded fault plans ([`fault::steps`] for the
//!   process tier, [`fault::timeline`] for the simulation).
//! - [`stability`]: leader stability across follower isolations, judged from the leaders a
//!   tier observed.
pub mod checker;
pub mod compaction;
pub mod fault;
pub mod group;
pub mod history;
pub mod retention;
pub mod stability;
pub mod workload;
