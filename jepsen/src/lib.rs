//! fjord's fault-injection harness.
//!
//! # Layout
//! - [`history`]: the recorded operations, one JSON object per line.
pub mod history;
