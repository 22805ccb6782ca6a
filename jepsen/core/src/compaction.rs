//! The compaction workload's model, as far as it is pure: the run's topic compacts
//! (`cleanup_policy=compact`, or `compact,delete` with retention) with a short
//! `min_compaction_lag_ms`, and every produced record carries a key from a small key space,
//! so that compaction has records to remove. The history records the setting
//! ([`set_compaction`]) and each produce's key ([`keyed`]); the checker's rules for it are
//! `checker`'s `compaction` rules (`compacted`, `compacted-latest`).
//!
//! What must hold: a record's key is a function of its value ([`key_of`]), so that both
//! tiers and a re-check agree on it; the key's bytes on the wire are a function of the key
//! ([`key_bytes`]); keys are padded so that a partition fills the server's dirty threshold
//! (64 KiB since the last compaction) within seconds at the harness's write rates.
//! Tombstones (a key with an empty value) are not produced: a record's value is its
//! identity in the history, which an empty value cannot carry.

use crate::history::Op;

/// Keys per partition: few, so that most records are soon superseded.
pub const KEYS: u32 = 50;
/// The run's `min_compaction_lag_ms`: records younger than this are never compacted.
pub const MIN_COMPACTION_LAG_MS: u64 = 2_000;
/// Padding bytes of every key, so that compaction's dirty threshold fills quickly.
pub const KEY_PAD: usize = 200;

/// Once the writes end, the filler: this many records per partition, with keys of their own
/// ([`filler_key`]), so that the records since the last compaction pass the server's dirty
/// threshold (64 KiB) and a last compaction covers every record the workload wrote: the
/// latest record of each of its keys then sits in a compacted part of the log, where the
/// final read checks it was kept.
pub const FILLER_RECORDS: u32 = 400;
/// Concurrent filler writes (one process each).
pub const FILLER_WRITERS: u32 = 40;
/// The filler's values start here, far above the workload's.
pub const FILLER_VALUES: u64 = 1 << 40;
/// The filler's process numbers: `FILLER_PROCESS - i` for writer `i`.
pub const FILLER_PROCESS: u32 = u32::MAX - 100;

/// The filler's `n`-th record of `partition`: its value and its key (outside the workload's
/// key space).
pub fn filler(partition: u32, n: u32) -> (u64, u32) {
    let value = FILLER_VALUES + u64::from(partition) * u64::from(FILLER_RECORDS) + u64::from(n);
    (value, KEYS + n % KEYS)
}

/// The key of the record carrying `value`.
pub fn key_of(value: u64) -> u32 {
    (value % u64::from(KEYS)) as u32
}

/// The bytes of key `key` on the wire: its number, then padding.
pub fn key_bytes(key: u32) -> Vec<u8> {
    let mut k = format!("k{key:02}-").into_bytes();
    k.resize(k.len() + KEY_PAD, b'.');
    k
}

/// The topic's `cleanup_policy` in a compaction run, with or without retention.
pub fn cleanup_policy(with_retention: bool) -> &'static str {
    if with_retention {
        "compact,delete"
    } else {
        "compact"
    }
}

/// The compaction set on the run's topic, invoke and completion alike.
pub fn set_compaction(cleanup_policy: &str, min_compaction_lag_ms: u64) -> Op {
    Op::Compaction {
        cleanup_policy: cleanup_policy.to_string(),
        min_compaction_lag_ms,
    }
}

/// `op` (a produce, invoke or completion) with its record's key; other operations as they
/// are.
pub fn keyed(mut op: Op, key: u32) -> Op {
    if let Op::Produce { key: k, .. } = &mut op {
        *k = Some(key);
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{produce, produced};

    #[test]
    fn keys_are_a_small_space_and_their_bytes_are_stable() {
        assert!((0..1_000).all(|v| key_of(v) < KEYS));
        assert_eq!(key_of(7), key_of(7 + u64::from(KEYS)));
        assert_eq!(key_bytes(3), key_bytes(3));
        assert_ne!(key_bytes(3), key_bytes(4));
        assert!(key_bytes(3).starts_with(b"k03-"));
        assert_eq!(key_bytes(3).len(), 4 + KEY_PAD);
    }

    #[test]
    fn filler_values_are_unique_and_keys_are_outside_the_workloads() {
        let all: std::collections::BTreeSet<u64> = (0..3)
            .flat_map(|p| (0..FILLER_RECORDS).map(move |n| filler(p, n).0))
            .collect();
        assert_eq!(all.len(), 3 * FILLER_RECORDS as usize);
        assert!((0..FILLER_RECORDS).all(|n| (KEYS..2 * KEYS).contains(&filler(1, n).1)));
    }

    #[test]
    fn keyed_sets_the_key_of_produces_only() {
        let op = keyed(produced(1, 9, 4), 9);
        assert!(matches!(op, Op::Produce { key: Some(9), .. }));
        assert_eq!(keyed(produce(1, 9), 2), keyed(produce(1, 9), 2));
        let other = set_compaction("compact", 2_000);
        assert_eq!(keyed(other.clone(), 1), other);
        assert_eq!(cleanup_policy(true), "compact,delete");
    }
}
