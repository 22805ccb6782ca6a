//! The database's tables (their layout is in the crate doc). Both the reads ([`crate::store`])
//! and the writer ([`crate::writer`]) name them; this module depends on neither.

use redb::TableDefinition;

/// `(group, index) → entry bytes`.
pub(crate) const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
/// The batch index written before retention: `(group, base_offset) → (index, record_count)`.
/// Converted into [`BATCHES`] when the database is opened, then deleted.
pub(crate) const OFFSETS: TableDefinition<(u64, u64), (u64, u32)> = TableDefinition::new("offsets");
/// The batch index: `(group, base_offset) → (index, record_count, position, bytes)`, where
/// `position` counts the partition's record bytes before the batch and `bytes` its own.
pub(crate) const BATCHES: TableDefinition<(u64, u64), (u64, u32, u64, u32)> =
    TableDefinition::new("batches");
/// The time index: `(group, timestamp) → base_offset`, a row each time a batch raised the
/// partition's largest record timestamp (Kafka's time index), so keys and values both grow.
pub(crate) const TIMES: TableDefinition<(u64, i64), u64> = TableDefinition::new("times");
/// `(group, key) → small value`.
pub(crate) const GROUP_VALUES: TableDefinition<(u64, u8), &[u8]> =
    TableDefinition::new("group_values");

/// `key → small value` of the node itself, not of a group (see [`crate::store::NodeKey`]). A table of its
/// own, created at open: a database written before it existed gains it empty.
pub(crate) const NODE_VALUES: TableDefinition<u8, &[u8]> = TableDefinition::new("node_values");
