//! Retention: moving each partition's log start offset forward by its topic's
//! `retention_ms` and `retention_bytes`, and purging the log behind it.
//!
//! Every `--retention-check-interval-ms`, for each partition replica the node holds:
//! - on the leader, [`plan`] (pure) decides from the partition's extent, its batch index and
//!   its time index whether records expired; if so the leader proposes a
//!   `DeleteRecords` entry (the same one the DeleteRecords RPC proposes), CP. Every replica
//!   applies it at the same log index, so the log start offset moves alike everywhere, never
//!   by one replica's decision alone;
//! - on every replica, once its log start offset moved, a snapshot (state only) is built and
//!   openraft purges the log behind it; the entries' bytes are deleted in bounded steps
//!   (`fjord_raft::log_store::PURGE_STEP_ENTRIES` a write).
//!
//! Retention by time compares the leader's clock with the partition's time index (the
//! largest record timestamp so far): a batch expires once every record up to it is older
//! than `retention_ms`, as Kafka deletes a segment whose largest timestamp is older. A leader
//! whose clock runs ahead deletes early, as a Kafka broker's would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fjord_meta::{Topic, group_id};
use fjord_raft::PartitionHandle;
use fjord_storage::BatchRow;

use crate::node::Node;

/// Partitions whose expired records one round proposes to delete, at most (the rest wait
/// for the next round).
pub const MAX_DELETES_PER_ROUND: usize = 256;
/// A partition retention by time need not look at before `until`, as long as its
/// `retention_ms` and its high watermark stay what they were.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    until: i64,
    retention_ms: u64,
    high_watermark: u64,
}

/// How long a round waits for a leader's own write of the batches it applied.
const STORED_WAIT: Duration = Duration::from_secs(1);

/// Batch index rows one decision by size reads, at most: a start that must move further
/// moves this far, and again next round.
pub const MAX_SIZE_SCAN_ROWS: usize = 4096;

/// What a partition keeps, resolved from its topic's settings and the cluster defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Records whose running largest timestamp is older than this are deleted.
    pub ms: Option<u64>,
    /// The partition keeps at most about this many record bytes.
    pub bytes: Option<u64>,
    /// Set when the topic is compacted.
    pub compact: Option<Compact>,
}

/// A compacted topic's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compact {
    /// Records younger than this stay uncompacted.
    pub min_lag_ms: i64,
    /// How long a tombstone survives compaction.
    pub delete_retention_ms: i64,
}

/// Record bytes written since the last compaction request, at least, before the next one.
pub const MIN_DIRTY_BYTES: u64 = 64 << 10;

/// Whether to ask for a compaction, and below which offset: once the record bytes since the
/// last request (`dirty_bytes`, from offset `dirty_from` on) are at least [`MIN_DIRTY_BYTES`]
/// and at least what the last compaction kept (`clean_bytes`: Kafka's
/// `min.cleanable.dirty.ratio` of 0.5, so the work of a pass, which reads the whole
/// partition, stays proportional to what was written since), up to `cleanable` (the high
/// watermark, or the first record younger than `min_compaction_lag_ms`).
pub fn plan_compaction(
    dirty_from: u64,
    cleanable: u64,
    dirty_bytes: u64,
    clean_bytes: u64,
) -> Option<u64> {
    (cleanable > dirty_from && dirty_bytes >= MIN_DIRTY_BYTES.max(clean_bytes)).then_some(cleanable)
}

/// What [`plan`] looks at.
#[derive(Debug, Clone, Default)]
pub struct Extent {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// The position (record bytes since the partition began) at the high watermark.
    pub end_position: u64,
    /// The first batch index rows from the batch holding the log start offset on, in order
    /// (at most [`MAX_SIZE_SCAN_ROWS`]); empty when retention by size is off.
    pub rows: Vec<BatchRow>,
    /// For retention by time: the first offset whose running largest timestamp reached the
    /// cutoff (`now - ms`), or `None` when no committed record reached it.
    pub first_unexpired: Option<u64>,
}

/// The log start offset retention moves the partition to, if it moves.
///
/// By size, the start moves only once the partition holds an eighth over its limit (at
/// least 1 MiB over), to the first batch from which what is kept fits the limit: deletion
/// comes in steps, not one small entry per produce.
pub fn plan(r: Retention, e: &Extent) -> Option<u64> {
    let mut start = e.log_start_offset;
    if r.ms.is_some() {
        let cut = e.first_unexpired.unwrap_or(e.high_watermark);
        start = start.max(cut.min(e.high_watermark));
    }
    if let (Some(limit), Some(first)) = (r.bytes, e.rows.first()) {
        let held = e.end_position.saturating_sub(first.position);
        let slack = (limit / 8).max(1 << 20);
        if held > limit.saturating_add(slack) {
            let keep_from = e.end_position - limit;
            let cut = e
                .rows
                .iter()
                .find(|row| row.position >= keep_from)
                .map(|row| row.base_offset)
                .unwrap_or_else(|| e.rows.last().map_or(start, BatchRow::end_offset));
            start = start.max(cut.min(e.high_watermark));
        }
    }
    (start > e.log_start_offset).then_some(start)
}

/// The retention of `topic`'s partitions: its settings, or this node's defaults where it has
/// none. None for internal topics: a coordinator partition's records are its groups' state,
/// kept in its snapshots (its log is purged behind them).
pub fn policy(node: &Node, topic: &Topic) -> Retention {
    if topic.name.starts_with(fjord_groups::INTERNAL_TOPIC_PREFIX) {
        return Retention::default();
    }
    let c = topic.config.effective(&node.log_defaults());
    Retention {
        ms: c.delete_after_ms().and_then(|ms| u64::try_from(ms).ok()),
        bytes: c.delete_beyond_bytes(),
        compact: c.cleanup_policy.compacts().then_some(Compact {
            min_lag_ms: c.min_compaction_lag_ms,
            delete_retention_ms: c.delete_retention_ms,
        }),
    }
}

/// Runs retention rounds until the node stops.
pub async fn run(node: Arc<Node>, interval: Duration, policy: impl Fn(&Node, &Topic) -> Retention) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut quiet_until: HashMap<u64, Quiet> = HashMap::new();
    let moves = node.start_moves();
    loop {
        tokio::select! {
            _ = tick.tick() => round(&node, &policy, &mut quiet_until).await,
            groups = moves.next() => purge_moved(&node, &groups).await,
            _ = node.stopping() => return,
        }
    }
}

/// Asks for the snapshot that purges each of `groups`' logs behind its new start, as soon as
/// this replica applied the move (not at the next round: the log would hold up to two check
/// intervals of writes more).
async fn purge_moved(node: &Node, groups: &[u64]) {
    for &group in groups {
        if let Some(handle) = node.partition(group) {
            handle.purge_if_due().await;
        }
    }
}

async fn round(
    node: &Node,
    policy: &impl Fn(&Node, &Topic) -> Retention,
    quiet_until: &mut HashMap<u64, Quiet>,
) {
    let view = node.view();
    let mut proposed = 0;
    for topic in view.state.topics.values() {
        let retention = policy(node, topic);
        for p in 0..topic.partitions.len() as u32 {
            let group = group_id(topic.id, p);
            let Some(handle) = node.partition(group) else {
                continue;
            };
            handle.purge_if_due().await;
            if let Some(c) = retention.compact {
                handle.compact_in_background(node.store());
                if handle.is_leader()
                    && let Err(e) = ask_compaction(node, &handle, c).await
                {
                    tracing::debug!(group, error = %e, "compaction: not asked");
                }
            }
            if proposed >= MAX_DELETES_PER_ROUND
                || !handle.is_leader()
                || (retention.ms.is_none() && retention.bytes.is_none())
            {
                continue;
            }
            let now = node.now_ms();
            // A partition with nothing to expire before a deadline waits for it, unless its
            // retention changed or records came since (a record may carry an old timestamp).
            let hw_now = handle.shared().high_watermark();
            let quiet = quiet_until.get(&group).is_some_and(|q| {
                now < q.until && retention.ms == Some(q.retention_ms) && hw_now == q.high_watermark
            });
            if retention.bytes.is_none() && quiet {
                continue;
            }
            // What the decision reads (the batch and time index) must hold every committed
            // batch: the leader applies before its own write of a batch lands.
            let hw = handle.shared().high_watermark();
            if !handle
                .shared()
                .wait_stored(hw, tokio::time::Instant::now() + STORED_WAIT)
                .await
            {
                continue;
            }
            match decide(node, &handle, retention, now) {
                Ok((Some(start), _)) => {
                    proposed += 1;
                    quiet_until.remove(&group);
                    match handle.delete_records(start).await {
                        Ok(s) => tracing::debug!(group, start = s, "retention moved the log start"),
                        Err(e) => tracing::debug!(group, error = %e, "retention: delete not done"),
                    }
                }
                Ok((None, next)) => {
                    if let (Some(until), Some(retention_ms)) = (next, retention.ms) {
                        let high_watermark = hw;
                        quiet_until.insert(
                            group,
                            Quiet {
                                until,
                                retention_ms,
                                high_watermark,
                            },
                        );
                    }
                }
                Err(e) => tracing::warn!(group, error = %e, "retention: cannot read the index"),
            }
        }
    }
    quiet_until.retain(|g, _| node.partition(*g).is_some());
}

/// Asks for a compaction of the partition (it leads) when [`plan_compaction`] says so.
async fn ask_compaction(node: &Node, handle: &PartitionHandle, c: Compact) -> Result<(), String> {
    let shared = handle.shared();
    let group = shared.group();
    let store = node.store();
    let hw = shared.high_watermark();
    let start = shared.log_start_offset();
    let dirty_from = shared
        .compact_request()
        .map_or(start, |r| r.upto.max(start));
    let now = node.now_ms();
    let cleanable = if c.min_lag_ms > 0 {
        let cutoff = now.saturating_sub(c.min_lag_ms);
        store
            .offset_for_time(group, cutoff)
            .map_err(|e| e.to_string())?
            .map_or(hw, |t| t.base_offset.min(hw))
    } else {
        hw
    };
    let position = |offset: u64| -> Result<u64, String> {
        Ok(
            match store
                .find_offset(group, offset)
                .map_err(|e| e.to_string())?
            {
                Some(r) if r.end_offset() > offset => r.position,
                Some(r) => r.end_position(),
                None => 0,
            },
        )
    };
    // The applied state's position is the one at the high watermark.
    let end = shared.bounds().next_position;
    let dirty = end.saturating_sub(position(dirty_from)?);
    let clean = fjord_raft::compaction::progress(store, group)
        .map_err(|e| e.to_string())?
        .clean_bytes;
    let Some(upto) = plan_compaction(dirty_from, cleanable, dirty, clean) else {
        return Ok(());
    };
    let req = fjord_raft::CompactRequest {
        upto,
        now_ms: now,
        delete_retention_ms: c.delete_retention_ms,
    };
    handle
        .request_compaction(req)
        .await
        .map_err(|e| e.to_string())
}

/// Gathers the extent and decides. With the decision, for retention by time alone: when
/// nothing expired, the time before which nothing will (the oldest kept record's running
/// largest timestamp plus `retention_ms`).
fn decide(
    node: &Node,
    handle: &PartitionHandle,
    r: Retention,
    now: i64,
) -> Result<(Option<u64>, Option<i64>), fjord_storage::StorageError> {
    let shared = handle.shared();
    let group = shared.group();
    let bounds = shared.bounds();
    let hw = shared.high_watermark();
    let store = node.store();
    let mut e = Extent {
        log_start_offset: bounds.log_start_offset,
        high_watermark: hw,
        ..Extent::default()
    };
    let mut next_check = None;
    if let Some(ms) = r.ms {
        let cutoff = now.saturating_sub(ms.min(i64::MAX as u64) as i64);
        e.first_unexpired = store.offset_for_time(group, cutoff)?.map(|t| t.base_offset);
        // No batch reached the cutoff: everything expired, but only when the partition's
        // largest timestamp says so (a time index without a row for it, or a partition whose
        // largest timestamp is unknown, keeps its records).
        if e.first_unexpired.is_none() && bounds.max_timestamp_ms.is_none_or(|m| m >= cutoff) {
            e.first_unexpired = Some(bounds.log_start_offset);
        }
        let nothing_expired = match e.first_unexpired {
            Some(f) => f <= bounds.log_start_offset,
            None => hw <= bounds.log_start_offset,
        };
        if nothing_expired {
            // The oldest kept running timestamp says when something will; a record appended
            // from now on expires a retention from now at the earliest.
            let oldest = store
                .offset_for_time(group, i64::MIN)?
                .map(|t| t.timestamp_ms)
                .filter(|_| hw > bounds.log_start_offset);
            let ms = ms.min(i64::MAX as u64) as i64;
            next_check = Some(oldest.unwrap_or(now).saturating_add(ms));
        }
    }
    if r.bytes.is_some() {
        let from = match store.find_offset(group, bounds.log_start_offset)? {
            Some(row) => row.base_offset,
            None => bounds.log_start_offset,
        };
        e.rows = store
            .offsets_from(group, from, MAX_SIZE_SCAN_ROWS)?
            .into_iter()
            .filter(|row| row.base_offset < hw)
            .collect();
        // The position at the high watermark: after the last committed batch.
        e.end_position = match hw.checked_sub(1) {
            Some(last) => store
                .find_offset(group, last)?
                .map_or(0, |row| row.end_position()),
            None => 0,
        };
    }
    Ok((plan(r, &e), next_check))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(sizes: &[u32]) -> Vec<BatchRow> {
        let mut out = Vec::new();
        let (mut offset, mut position) = (0u64, 0u64);
        for (i, &bytes) in sizes.iter().enumerate() {
            out.push(BatchRow {
                base_offset: offset,
                index: i as u64 + 1,
                record_count: 10,
                position,
                bytes,
            });
            offset += 10;
            position += bytes as u64;
        }
        out
    }

    fn extent(rows: Vec<BatchRow>) -> Extent {
        let last = *rows.last().unwrap();
        Extent {
            log_start_offset: 0,
            high_watermark: last.end_offset(),
            end_position: last.end_position(),
            rows,
            first_unexpired: None,
        }
    }

    #[test]
    fn by_time_the_start_moves_to_the_first_unexpired_batch_or_to_the_end() {
        let r = Retention {
            ms: Some(1000),
            bytes: None,
            compact: None,
        };
        let mut e = extent(rows(&[100; 5]));
        e.rows.clear();
        e.first_unexpired = Some(30);
        assert_eq!(plan(r, &e), Some(30));
        e.first_unexpired = None;
        assert_eq!(plan(r, &e), Some(50), "everything expired");
        e.first_unexpired = Some(0);
        assert_eq!(plan(r, &e), None);
        e.log_start_offset = 40;
        e.first_unexpired = Some(30);
        assert_eq!(plan(r, &e), None, "the start never moves back");
    }

    #[test]
    fn by_size_nothing_moves_within_the_slack() {
        let r = Retention {
            ms: None,
            bytes: Some(8 << 20),
            compact: None,
        };
        // 9 MiB held, the limit 8 MiB and the slack 1 MiB: not yet.
        let e = extent(rows(&[1 << 20; 9]));
        assert_eq!(plan(r, &e), None);
        // 10 MiB: down to the last 8.
        let e = extent(rows(&[1 << 20; 10]));
        assert_eq!(plan(r, &e), Some(20));
    }

    proptest! {
        /// What is kept fits the limit, and only whole batches before the cut go.
        #[test]
        fn by_size_what_is_kept_fits_and_the_cut_is_a_batch_boundary(
            sizes in proptest::collection::vec(1u32..(4 << 20), 1..64),
            limit in (1u64 << 20)..(64 << 20),
        ) {
            let r = Retention { ms: None, bytes: Some(limit), compact: None };
            let e = extent(rows(&sizes));
            if let Some(start) = plan(r, &e) {
                let row = e.rows.iter().find(|row| row.base_offset == start);
                let kept_from = row.map_or(e.end_position, |row| row.position);
                prop_assert!(e.end_position - kept_from <= limit);
                prop_assert!(start > e.log_start_offset && start <= e.high_watermark);
            } else {
                prop_assert!(e.end_position <= limit + (limit / 8).max(1 << 20));
            }
        }
    }
}
