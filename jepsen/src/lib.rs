//! fjord's fault-injection harness.
//!
//! # Layout
//! - [`history`]: the recorded operations, one JSON object per line.
//! - [`lazyfs`]: a FUSE filesystem that loses unsynced writes on command (power loss), and
//!   the `fjord-lazyfs` binary that serves it.
pub mod history;
pub mod lazyfs;
