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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fjord_meta::{Topic, group_id, split_group_id};
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
    /// The position (record bytes since the partition began) at the end of what the leader
    /// appended (committed or not: the batches in flight count, so that the start moves
    /// before they land, not after).
    pub end_position: u64,
    /// The first batch index rows from the batch holding the log start offset on, in order
    /// (at most [`MAX_SIZE_SCAN_ROWS`]); empty when retention by size is off.
    pub rows: Vec<BatchRow>,
    /// For retention by time: the first offset whose running largest timestamp reached the
    /// cutoff (`now - ms`), or `None` when no committed record reached it.
    pub first_unexpired: Option<u64>,
}

/// What a partition whose `retention_bytes` is `limit` holds when its start moves: the
/// limit less a sixteenth, so that the writes landing while the move is committed stay
/// within the limit.
pub fn size_due(limit: u64) -> u64 {
    limit - limit / 16
}

/// What a partition whose `retention_bytes` is `limit` keeps after a move: the limit less an
/// eighth (deletion comes in steps of a sixteenth, not one small entry per produce).
pub fn size_kept(limit: u64) -> u64 {
    limit - limit / 8
}

/// The position (record bytes since the partition began) at which a partition whose log
/// starts at `start` (a batch boundary, or inside the batch `e.rows` begins with) next holds
/// more than [`size_due`], by size; `None` without retention by size.
pub fn size_trigger(r: Retention, e: &Extent, start: u64) -> Option<u64> {
    let limit = r.bytes?;
    let kept_from = e
        .rows
        .iter()
        .find(|row| row.end_offset() > start)
        .map_or(e.end_position, |row| row.position);
    Some(kept_from.saturating_add(size_due(limit)).saturating_add(1))
}

/// The log start offset retention moves the partition to, if it moves.
///
/// By size, the start moves once the partition holds more than its limit less a sixteenth
/// (what its leader appended counts), to the first batch from which what is kept fits the
/// limit less an eighth: `retention_bytes` is the most a partition holds (the writes that
/// land while a move is committed fit in the sixteenth left), and deletion comes in steps,
/// not one small entry per produce.
pub fn plan(r: Retention, e: &Extent) -> Option<u64> {
    let mut start = e.log_start_offset;
    if r.ms.is_some() {
        let cut = e.first_unexpired.unwrap_or(e.high_watermark);
        start = start.max(cut.min(e.high_watermark));
    }
    if let (Some(limit), Some(first)) = (r.bytes, e.rows.first()) {
        let held = e.end_position.saturating_sub(first.position);
        if held > size_due(limit) {
            let keep_from = e.end_position - size_kept(limit);
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

/// Runs retention rounds until the node stops; between rounds, acts on what the partitions'
/// applies note ([`fjord_raft::RetentionNotes`]): a moved start is purged behind at once, and
/// a partition whose records passed its size limit is decided at once.
pub async fn run(node: Arc<Node>, interval: Duration, policy: impl Fn(&Node, &Topic) -> Retention) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut quiet_until: HashMap<u64, Quiet> = HashMap::new();
    let notes = node.retention_notes();
    let mut grown = Paced::new(interval.min(MIN_SIZE_DECISION_GAP));
    let mut views = node.view_changes();
    let mut policies: HashMap<u32, Retention> = HashMap::new();
    loop {
        let due = grown.next_due();
        tokio::select! {
            _ = tick.tick() => round(&node, &policy, &mut quiet_until).await,
            noted = notes.next() => {
                purge_moved(&node, &noted.moved).await;
                grown.add(noted.grown, tokio::time::Instant::now());
            }
            // A topic whose retention changed is decided again now (its size trigger was
            // set for the settings before), not at the next round.
            Ok(()) = views.changed() => {
                let view = views.borrow_and_update().clone();
                let changed = retention_changed(&node, &view.state, &policy, &mut policies);
                grown.add(changed, tokio::time::Instant::now());
            }
            _ = sleep_until_some(due) => {}
            _ = node.stopping() => return,
        }
        let now = tokio::time::Instant::now();
        let groups = grown.take_due(now);
        if !groups.is_empty() {
            decide_grown(&node, &policy, &groups, &mut quiet_until).await;
            grown.decided(&groups, tokio::time::Instant::now());
        }
    }
}

/// A partition is decided by size at most once in this long on its size trigger (between
/// rounds): a partition that fills fast moves its start in steps of at least this long's
/// writes, not one small DeleteRecords entry (and snapshot, and purge) per batch.
pub const MIN_SIZE_DECISION_GAP: Duration = Duration::from_millis(20);

/// The groups this node holds of topics whose retention is not what `seen` remembers (or
/// that `seen` does not know); `seen` is brought up to date.
fn retention_changed(
    node: &Node,
    state: &fjord_meta::MetaState,
    policy: &impl Fn(&Node, &Topic) -> Retention,
    seen: &mut HashMap<u32, Retention>,
) -> BTreeSet<u64> {
    let mut groups = BTreeSet::new();
    for topic in state.topics.values() {
        let r = policy(node, topic);
        if seen.insert(topic.id, r) != Some(r) {
            groups.extend(
                (0..topic.partitions.len() as u32)
                    .map(|p| group_id(topic.id, p))
                    .filter(|g| node.partition(*g).is_some()),
            );
        }
    }
    seen.retain(|id, _| state.topic_by_id(*id).is_some());
    groups
}

/// Sleeps until `at`, or forever.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Groups noted grown, waiting until [`MIN_SIZE_DECISION_GAP`] passed since each one's last
/// decision on its trigger (both bounded by the partitions the node holds).
struct Paced {
    gap: Duration,
    waiting: BTreeSet<u64>,
    last: HashMap<u64, tokio::time::Instant>,
}

impl Paced {
    fn new(gap: Duration) -> Self {
        Paced {
            gap,
            waiting: BTreeSet::new(),
            last: HashMap::new(),
        }
    }

    fn add(&mut self, groups: BTreeSet<u64>, now: tokio::time::Instant) {
        self.waiting.extend(groups);
        // Forget decisions older than the gap: they hold nothing back.
        self.last.retain(|_, at| now.duration_since(*at) < self.gap);
    }

    fn due_at(&self, group: u64) -> Option<tokio::time::Instant> {
        self.last.get(&group).map(|at| *at + self.gap)
    }

    /// When the first waiting group may be decided (`None`: none waits).
    fn next_due(&self) -> Option<tokio::time::Instant> {
        let mut first = None;
        for &g in &self.waiting {
            let Some(at) = self.due_at(g) else {
                return Some(tokio::time::Instant::now());
            };
            first = Some(first.map_or(at, |f: tokio::time::Instant| f.min(at)));
        }
        first
    }

    /// Takes the waiting groups that may be decided at `now`.
    fn take_due(&mut self, now: tokio::time::Instant) -> BTreeSet<u64> {
        let due: BTreeSet<u64> = self
            .waiting
            .iter()
            .copied()
            .filter(|&g| self.due_at(g).is_none_or(|at| at <= now))
            .collect();
        self.waiting.retain(|g| !due.contains(g));
        due
    }

    fn decided(&mut self, groups: &BTreeSet<u64>, now: tokio::time::Instant) {
        for &g in groups {
            self.last.insert(g, now);
        }
    }
}

/// Asks for the snapshot that purges each of `groups`' logs behind its new start, as soon as
/// this replica applied the move (not at the next round: the log would hold up to two check
/// intervals of writes more).
async fn purge_moved(node: &Node, groups: &BTreeSet<u64>) {
    for &group in groups {
        if let Some(handle) = node.partition(group) {
            handle.purge_if_due().await;
        }
    }
}

/// Decides, for each of `groups` (partitions whose records passed their size trigger),
/// whether retention moves its start, without waiting for the next round.
async fn decide_grown(
    node: &Node,
    policy: &impl Fn(&Node, &Topic) -> Retention,
    groups: &BTreeSet<u64>,
    quiet_until: &mut HashMap<u64, Quiet>,
) {
    let view = node.view();
    for &group in groups {
        let Some(topic) = view.state.topic_by_id(split_group_id(group).0) else {
            continue;
        };
        if let Some(handle) = node.partition(group) {
            consider(node, &handle, policy(node, topic), quiet_until).await;
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
            // A replicated compaction request this replica has not carried out yet is carried
            // out whatever the topic's policy is now: a policy changed from compact to delete
            // after the request was applied would otherwise leave this replica's contents
            // unlike the others' for good.
            handle.compact_in_background(node.store());
            if let Some(c) = retention.compact
                && handle.is_leader()
                && let Err(e) = ask_compaction(node, &handle, c).await
            {
                tracing::debug!(group, error = %e, "compaction: not asked");
            }
            if proposed < MAX_DELETES_PER_ROUND
                && consider(node, &handle, retention, quiet_until).await
            {
                proposed += 1;
            }
        }
    }
    quiet_until.retain(|g, _| node.partition(*g).is_some());
}

/// On the partition's leader: decides whether retention moves its log start offset, and if
/// so proposes the move (CP). Then sets the position at which the partition's records pass
/// its size limit next ([`fjord_raft::partition_sm::PartitionShared::arm_size_trigger`]),
/// so that it is decided again as soon as they do. Returns whether a move was proposed.
async fn consider(
    node: &Node,
    handle: &PartitionHandle,
    retention: Retention,
    quiet_until: &mut HashMap<u64, Quiet>,
) -> bool {
    let shared = handle.shared();
    let group = shared.group();
    if !handle.is_leader() || (retention.ms.is_none() && retention.bytes.is_none()) {
        shared.arm_size_trigger(None);
        return false;
    }
    let now = node.now_ms();
    // A partition with nothing to expire before a deadline waits for it, unless its
    // retention changed or records came since (a record may carry an old timestamp).
    let hw_now = shared.high_watermark();
    let quiet = quiet_until.get(&group).is_some_and(|q| {
        now < q.until && retention.ms == Some(q.retention_ms) && hw_now == q.high_watermark
    });
    if retention.bytes.is_none() && quiet {
        return false;
    }
    // What the decision reads (the batch and time index) must hold every committed
    // batch: the leader applies before its own write of a batch lands.
    let hw = shared.high_watermark();
    if !shared
        .wait_stored(hw, tokio::time::Instant::now() + STORED_WAIT)
        .await
    {
        return false;
    }
    match decide(node, handle, retention, now) {
        Ok(Decision {
            start: Some(start),
            trigger,
            min_position,
            ..
        }) => {
            quiet_until.remove(&group);
            match handle.delete_records(start, min_position).await {
                Ok(s) => {
                    tracing::debug!(group, start = s, "retention moved the log start");
                    shared.arm_size_trigger(trigger);
                }
                // The next round tries again.
                Err(e) => tracing::debug!(group, error = %e, "retention: delete not done"),
            }
            true
        }
        Ok(Decision {
            start: None,
            next_check,
            trigger,
            ..
        }) => {
            shared.arm_size_trigger(trigger);
            if let (Some(until), Some(retention_ms)) = (next_check, retention.ms) {
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
            false
        }
        Err(e) => {
            tracing::warn!(group, error = %e, "retention: cannot read the index");
            false
        }
    }
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
        shared
            .offset_for_time(cutoff)
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

/// What [`decide`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    /// The log start offset to move to.
    start: Option<u64>,
    /// For retention by time alone, when nothing expired: the time before which nothing
    /// will (the oldest kept record's running largest timestamp plus `retention_ms`).
    next_check: Option<i64>,
    /// For retention by size: [`size_trigger`] once the start is where it is decided to be.
    trigger: Option<u64>,
    /// For retention by size: the position the move counted on ([`Extent::end_position`]);
    /// the move applies only if the partition has reached it by then.
    min_position: u64,
}

/// Gathers the extent and decides.
fn decide(
    node: &Node,
    handle: &PartitionHandle,
    r: Retention,
    now: i64,
) -> Result<Decision, fjord_storage::StorageError> {
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
        e.first_unexpired = shared.offset_for_time(cutoff)?.map(|t| t.base_offset);
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
            let oldest = shared
                .offset_for_time(i64::MIN)?
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
        // The position after the last batch this leader appended, committed or not: the
        // move applies after them, so they count (and it applies only if they do land).
        e.end_position = shared.appended_position();
    }
    let start = plan(r, &e);
    Ok(Decision {
        start,
        next_check,
        trigger: size_trigger(r, &e, start.unwrap_or(e.log_start_offset)),
        min_position: if r.bytes.is_some() { e.end_position } else { 0 },
    })
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

    fn by_size(limit: u64) -> Retention {
        Retention {
            ms: None,
            bytes: Some(limit),
            compact: None,
        }
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
    fn by_size_a_move_is_due_a_sixteenth_below_the_limit_and_keeps_an_eighth_below_it() {
        let r = by_size(16 << 20);
        // 15 MiB held, the limit 16 MiB: nothing moves.
        let e = extent(rows(&[1 << 20; 15]));
        assert_eq!(plan(r, &e), None);
        // 16 MiB: more than the limit less a sixteenth: down to the last 14 (the limit less
        // an eighth).
        let e = extent(rows(&[1 << 20; 16]));
        assert_eq!(plan(r, &e), Some(20));
    }

    #[test]
    fn by_size_what_the_leader_appended_counts_but_the_start_stays_within_the_committed() {
        let r = by_size(16 << 20);
        // 10 MiB committed and 6 more appended: down to the last 14 of the 16, a cut among
        // the committed batches.
        let mut e = extent(rows(&[1 << 20; 10]));
        e.end_position = 16 << 20;
        assert_eq!(plan(r, &e), Some(20));
        // 20 MiB appended beyond the committed: the start goes no further than the high
        // watermark.
        e.end_position = 30 << 20;
        assert_eq!(plan(r, &e), Some(100));
    }

    #[test]
    fn a_grown_partition_waits_for_the_gap_since_its_last_decision() {
        let gap = Duration::from_millis(100);
        let t0 = tokio::time::Instant::now();
        let mut p = Paced::new(gap);
        p.add(BTreeSet::from([1, 2]), t0);
        assert_eq!(
            p.take_due(t0),
            BTreeSet::from([1, 2]),
            "never decided: due at once"
        );
        p.decided(&BTreeSet::from([1, 2]), t0);
        assert_eq!(p.next_due(), None);
        let t1 = t0 + Duration::from_millis(30);
        p.add(BTreeSet::from([1, 3]), t1);
        assert_eq!(p.take_due(t1), BTreeSet::from([3]));
        assert_eq!(p.next_due(), Some(t0 + gap), "1 waits for its gap");
        assert!(p.take_due(t0 + gap - Duration::from_millis(1)).is_empty());
        assert_eq!(p.take_due(t0 + gap), BTreeSet::from([1]));
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn the_size_trigger_is_where_the_next_move_is_due() {
        let r = by_size(16 << 20);
        let all = rows(&[1 << 20; 24]);
        // Armed with 2 batches held: due past 15 MiB from the start's batch.
        let trigger = size_trigger(r, &extent(all[..2].to_vec()), 0).unwrap();
        assert_eq!(trigger, (15 << 20) + 1);
        for n in 1..=24 {
            let e = extent(all[..n].to_vec());
            assert_eq!(
                plan(r, &e).is_some(),
                e.end_position >= trigger,
                "{n} batches"
            );
        }
        // After a move to offset 60 (batch 7), it counts from there.
        let e = extent(all[..20].to_vec());
        assert_eq!(plan(r, &e), Some(60));
        assert_eq!(size_trigger(r, &e, 60), Some((6 << 20) + (15 << 20) + 1));
        // A start inside a batch counts from that batch; past every row, from the end.
        assert_eq!(size_trigger(r, &e, 65), Some((6 << 20) + (15 << 20) + 1));
        assert_eq!(size_trigger(r, &e, 300), Some((20 << 20) + (15 << 20) + 1));
        let by_time = Retention {
            ms: Some(1000),
            bytes: None,
            compact: None,
        };
        assert_eq!(size_trigger(by_time, &e, 0), None);
    }

    proptest! {
        /// What is kept fits the limit less the slack, and at least that much of it is kept
        /// unless the start reached the high watermark; only whole batches before the cut go;
        /// nothing moves within the limit. `appended` bytes beyond the committed batches count
        /// as held.
        #[test]
        fn by_size_what_is_kept_fits_and_the_cut_is_a_batch_boundary(
            sizes in proptest::collection::vec(1u32..(4 << 20), 1..64),
            limit in (1u64 << 20)..(64 << 20),
            appended in 0u64..(16 << 20),
        ) {
            let r = by_size(limit);
            let mut e = extent(rows(&sizes));
            e.end_position += appended;
            let keep = size_kept(limit);
            if let Some(start) = plan(r, &e) {
                let row = e.rows.iter().find(|row| row.base_offset == start);
                let kept_from = row.map_or(e.end_position - appended, |row| row.position);
                // (Unless what is in flight alone is more: the start stops at the committed.)
                prop_assert!(e.end_position - kept_from <= keep || start == e.high_watermark);
                prop_assert!(start > e.log_start_offset && start <= e.high_watermark);
                // The batch before the cut would not have fitted.
                let before = e.rows.iter().rev().find(|row| row.base_offset < start).unwrap();
                prop_assert!(start == e.high_watermark || e.end_position - before.position > keep);
            } else {
                prop_assert!(e.end_position <= size_due(limit));
            }
        }
    }
}
