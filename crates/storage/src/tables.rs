//! The database's tables (their layout is in the crate doc). Both the reads ([`crate::store`])
//! and the writer ([`crate::writer`]) name them; this module depends on neither.

use redb::TableDefinition;

/// `(group, index) → entry bytes`.
pub(crate) const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
/// `(group, base_offset) → (index, record_count)`.
pub(crate) const OFFSETS: TableDefinition<(u64, u64), (u64, u32)> = TableDefinition::new("offsets");
/// `(group, key) → small value`.
pub(crate) const GROUP_VALUES: TableDefinition<(u64, u8), &[u8]> =
    TableDefinition::new("group_values");

/// `key → small value` of the node itself, not of a group (see [`crate::store::NodeKey`]). A table of its
/// own, created at open: a database written before it existed gains it empty.
pub(crate) const NODE_VALUES: TableDefinition<u8, &[u8]> = TableDefinition::new("node_values");
