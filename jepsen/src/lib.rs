//! fjord's fault-injection harness.
//!
//! # Layout
//! - [`history`]: the recorded operations, one JSON object per line, and their pairing into
//!   invoke/completion operations.
//! - [`checker`]: the pure check of a history: lost, unseen, duplicated, inconsistent,
//!   nonmonotonic, aborted, stale and phantom reads, each with the events that prove it.
//! - [`report`]: statistics per run and per fault window, the latency SVG, the run summary
//!   (JSON and text) and the Markdown table comparing CP and AP runs.
pub mod checker;
pub mod history;
pub mod report;
