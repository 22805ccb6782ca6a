//! Compaction of a partition whose topic's `cleanup_policy` compacts: below an offset the
//! partition's leader chose, only the last record of each key is kept (Kafka's log cleaner).
//!
//! - **Decided once, carried out by every replica alike.** The leader proposes a
//!   [`Request::Compact`] entry naming the offset below which to compact (`upto`: the high
//!   watermark, or less to respect `min_compaction_lag_ms`), its clock (`now_ms`, for
//!   tombstones) and the topic's `delete_retention_ms`. Every replica applies it at the same
//!   log index and then compacts its own log with [`run`], in the background: the same log,
//!   the same request and the same rules ([`keeps`]) give the same result on every replica.
//! - **In place, offsets unchanged.** A batch that loses records is rewritten at its own log
//!   index, keeping its header (producer, epoch, sequence, count, the producer's CRC: the
//!   partition rules see the same batch, so a replica that later applies the rewritten entry
//!   reaches the same state, producers' last sequences included) and listing the offsets of
//!   the records it keeps ([`crate::Compaction`]); a batch that loses all of them stays, empty,
//!   so the log has no hole and the next offset after it is unchanged. Fetches return the kept
//!   records with their offsets; offsets never change, a compacted partition has gaps.
//! - **What is kept** below `upto`: the last record of each key, records without a key, and a
//!   tombstone (a record with a key and an empty value) until it is older than
//!   `delete_retention_ms` at `now_ms`. At and above `upto`: everything.
//! - **Bounded.** At most [`MAX_COMPACTION_KEYS`] keys per pass (beyond, the pass stops at the
//!   offset where the map filled: the map starts at this replica's own clean point, so that
//!   offset, and the superseded records kept above it, can differ between replicas; a key's
//!   latest record is kept everywhere); entries are read and rewritten
//!   [`STEP_ENTRIES`] at a time, each step its own write, and a pass pauses after each step
//!   three times as long as the step took ([`Pacer`]), so produces keep their latency and most
//!   of their throughput.
//! - A rewrite never brings back an entry a purge deleted meanwhile (`Op::ReplaceIfPresent`).

use std::collections::HashMap;
use std::io;

use bytes::Bytes;
use fjord_proto::batch;
use fjord_proto::v1::Record;
use fjord_storage::store::GroupKey;
use fjord_storage::{Op, Store};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;

use crate::codec::{self, Entry};
use crate::partition_sm::PartitionShared;
use crate::{CompactRequest, Compaction, Request, StoredBatch};

/// The longest pause [`Pacer`] takes after one step.
pub const MAX_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);
/// A pass pauses this many times as long as each step took: it works at most a quarter of
/// the time.
pub const PAUSE_PER_STEP_TIME: u32 = 3;

/// Paces a pass: after each step (a read of [`STEP_ENTRIES`] entries, and their rewrite), it
/// waits [`PAUSE_PER_STEP_TIME`] times as long as the step took (at most [`MAX_STEP_PAUSE`]),
/// so a pass works at most a quarter of the time and leaves the rest to produces and fetches. Unpaced, the cleaner took a
/// fifth of saturated produce throughput (docs/benchmarks.md, "Compaction"). Kafka's
/// cleaner has a rate limit of its own (`log.cleaner.io.max.bytes.per.second`, unlimited by
/// default); this one needs no setting, and a pass on an idle node still runs at a quarter of its speed.
struct Pacer {
    step_began: tokio::time::Instant,
}

impl Pacer {
    fn new() -> Self {
        Pacer {
            step_began: tokio::time::Instant::now(),
        }
    }

    /// Ends a step: waits [`pause_after`] it, and starts the next.
    async fn step_done(&mut self) {
        tokio::time::sleep(pause_after(self.step_began.elapsed())).await;
        self.step_began = tokio::time::Instant::now();
    }
}

/// How long to wait after a step that took `step`: [`PAUSE_PER_STEP_TIME`] times as long, at
/// most [`MAX_STEP_PAUSE`].
pub fn pause_after(step: std::time::Duration) -> std::time::Duration {
    step.saturating_mul(PAUSE_PER_STEP_TIME).min(MAX_STEP_PAUSE)
}

/// Keys one pass remembers, at most.
pub const MAX_COMPACTION_KEYS: usize = 1_000_000;
/// Log entries read (and rewritten) per step.
pub const STEP_ENTRIES: usize = 256;

/// A record's offset and effective timestamp: its own, within its batch's append time and
/// [`crate::types::MAX_TIMESTAMP_AHEAD_MS`] past it (a record whose producer clock lags, or
/// that carries an old timestamp, is not taken for older than its place in the log: a
/// tombstone stays `delete_retention_ms` after it was written at least; one stamped years
/// ahead does not stay for years).
fn placed(b: &StoredBatch, base: u64, records: &[Record]) -> Vec<(u64, i64)> {
    let deltas: Vec<u64> = match &b.compaction {
        Some(c) => c.offset_deltas.iter().map(|d| u64::from(*d)).collect(),
        None => (0..records.len() as u64).collect(),
    };
    deltas
        .into_iter()
        .zip(records)
        .map(|(d, r)| {
            let ts = r.timestamp_ms.clamp(
                b.append_time_ms,
                b.append_time_ms
                    .saturating_add(crate::types::MAX_TIMESTAMP_AHEAD_MS),
            );
            (base + d, ts)
        })
        .collect()
}

/// Whether the record at `offset` (timestamp `ts`) survives compaction `req`, `latest` being
/// the offset of the last record of each key below `req.upto`.
pub fn keeps(
    record: &Record,
    offset: u64,
    ts: i64,
    latest: &HashMap<Bytes, u64>,
    req: &CompactRequest,
) -> bool {
    if offset >= req.upto {
        return true;
    }
    let Some(key) = &record.key else {
        return true;
    };
    match latest.get(key) {
        Some(&last) if last > offset => false,
        _ => {
            let tombstone = record.value.is_empty();
            !(tombstone && ts.saturating_add(req.delete_retention_ms) < req.now_ms)
        }
    }
}

/// One batch of the range: its log entry, base offset, and decoded records.
struct Loaded {
    entry: Entry,
    base: u64,
    records: Vec<Record>,
}

/// Reads the batches from the one holding offset `from` on, below `upto`, at most
/// [`STEP_ENTRIES`] of them (and 64 MiB); returns them and where the next read starts (after
/// the last batch actually read).
fn load(
    store: &Store,
    group: u64,
    from: u64,
    upto: u64,
) -> Result<(Vec<Loaded>, Option<u64>), io::Error> {
    let first_base = match store.find_offset(group, from)? {
        Some(r) if r.end_offset() > from => r.base_offset,
        _ => from,
    };
    let rows: Vec<_> = store
        .offsets_from(group, first_base, STEP_ENTRIES)?
        .into_iter()
        .filter(|r| r.base_offset < upto)
        .collect();
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok((Vec::new(), None));
    };
    let raws = store.read_log(group, first.index..=last.index, STEP_ENTRIES * 4, 64 << 20)?;
    if raws.is_empty() {
        // Purged between the two reads (retention moved the start): these records are gone,
        // but the batches after them are not: go on after them. Stopping here would leave
        // the rest of the range unmapped and unrewritten, and yet marked clean.
        let next = (rows.len() == STEP_ENTRIES).then(|| last.end_offset());
        return Ok((Vec::new(), next));
    }
    let read_through = raws.last().map_or(0, |(i, _)| *i);
    let next = match rows.iter().find(|r| r.index > read_through) {
        // The read stopped at its byte limit: go on from the first batch it did not reach.
        Some(r) => Some(r.base_offset),
        None => (rows.len() == STEP_ENTRIES).then(|| last.end_offset()),
    };
    let base_of: HashMap<u64, (u64, u32)> = rows
        .iter()
        .map(|r| (r.index, (r.base_offset, r.record_count)))
        .collect();
    let mut out = Vec::new();
    for (index, raw) in raws {
        let Some(&(base, count)) = base_of.get(&index) else {
            continue;
        };
        let entry: Entry = codec::decode(&raw, "log entry")?;
        let EntryPayload::Normal(Request::Batch(b)) = &entry.payload else {
            continue;
        };
        if b.record_count != count {
            // The index row is another batch's: its offsets are not these records' (the read
            // path refuses to serve it too), and a rewrite placed by them would be wrong.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "group {group} entry {index}: its offset index row says {count} records \
                     at offset {base}, the entry holds a batch of {}",
                    b.record_count
                ),
            ));
        }
        let records = batch::decode(&b.records, b.stored_crc()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("group {group} entry {index}: {e}"),
            )
        })?;
        out.push(Loaded {
            entry,
            base,
            records,
        });
    }
    Ok((out, next))
}

/// The last offset of each key below `upto` (from `start`), and the offset the pass may
/// compact below: `upto`, or where [`MAX_COMPACTION_KEYS`] keys filled the map.
async fn latest_offsets(
    store: &Store,
    group: u64,
    start: u64,
    upto: u64,
    pacer: &mut Pacer,
) -> Result<(HashMap<Bytes, u64>, u64), io::Error> {
    let mut latest: HashMap<Bytes, u64> = HashMap::new();
    let mut from = Some(start);
    while let Some(at) = from {
        if at != start {
            pacer.step_done().await;
        }
        let (loaded, next) = load(store, group, at, upto)?;
        for l in &loaded {
            let EntryPayload::Normal(Request::Batch(b)) = &l.entry.payload else {
                continue;
            };
            for ((offset, _), r) in placed(b, l.base, &l.records).into_iter().zip(&l.records) {
                let Some(key) = &r.key else { continue };
                if offset >= upto {
                    continue;
                }
                if latest.len() >= MAX_COMPACTION_KEYS && !latest.contains_key(key) {
                    return Ok((latest, offset));
                }
                latest.insert(key.clone(), offset);
            }
        }
        from = next;
    }
    Ok((latest, upto))
}

/// `l`'s batch with only the records `req` keeps, or `None` when it keeps them all.
fn compacted(
    l: &Loaded,
    latest: &HashMap<Bytes, u64>,
    req: &CompactRequest,
) -> Option<StoredBatch> {
    let EntryPayload::Normal(Request::Batch(b)) = &l.entry.payload else {
        return None;
    };
    let placed = placed(b, l.base, &l.records);
    let kept: Vec<(u64, &Record)> = placed
        .iter()
        .zip(&l.records)
        .filter(|((o, ts), r)| keeps(r, *o, *ts, latest, req))
        .map(|((o, _), r)| (*o, r))
        .collect();
    if kept.len() == l.records.len() {
        return None;
    }
    let records: Vec<Record> = kept.iter().map(|(_, r)| (*r).clone()).collect();
    let body = batch::encode(&records);
    let compaction = Compaction {
        offset_deltas: kept.iter().map(|(o, _)| (o - l.base) as u32).collect(),
        original_bytes: b.original_bytes(),
        records_crc: batch::checksum(&body),
    };
    let mut out = b.clone();
    out.records = body;
    out.compaction = Some(Box::new(compaction));
    Some(out)
}

/// What a replica has done of compaction: the last request it carried out, and the offset
/// below which its log is clean (compacted as of that request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub request: CompactRequest,
    pub clean_upto: u64,
    /// The record bytes kept below `clean_upto`, from the log start offset: what the next
    /// decision weighs the records since against (Kafka's dirty ratio).
    pub clean_bytes: u64,
}

/// Whether request `req` asks for nothing a pass of `done` has not done (`req` itself, or an
/// older one): `done` compacted as far, and expired every tombstone `req` would (those older than `now_ms` less
/// `delete_retention_ms`). A replica restarted after a power
/// loss applies its log again from an older checkpoint, so it meets requests older than the
/// one its stored progress names; carrying them out again would rescan the whole log and
/// move its clean point back (found by a review).
fn superseded(req: &CompactRequest, done: &CompactRequest) -> bool {
    let expired_before = |r: &CompactRequest| r.now_ms.saturating_sub(r.delete_retention_ms);
    done.upto >= req.upto && expired_before(done) >= expired_before(req)
}

/// This replica's compaction progress on `group`.
pub fn progress(store: &Store, group: u64) -> Result<Progress, io::Error> {
    Ok(match store.get_value(group, GroupKey::Compacted)? {
        Some(b) => codec::decode(&b, "compaction progress")?,
        None => Progress::default(),
    })
}

/// Carries out the partition's latest compaction request on this replica's log, if it has
/// not been yet. The map of last offsets covers only the records since the clean point (a
/// record below it is the last of its key as of the pass before, so only a later record can
/// make it obsolete), as Kafka's cleaner maps only the dirty part. Returns the batches it
/// rewrote.
pub async fn run(store: &Store, shared: &PartitionShared) -> Result<usize, io::Error> {
    let group = shared.group();
    let Some(req) = shared.compact_request() else {
        return Ok(0);
    };
    let done = progress(store, group)?;
    if superseded(&req, &done.request) {
        shared.compacted(req);
        return Ok(0);
    }
    // The harness times power losses by this line (a pass under way until "compacted").
    tracing::info!(group, upto = req.upto, "compaction pass started");
    let start = shared.log_start_offset();
    let dirty_from = done.clean_upto.clamp(start, req.upto.max(start));
    let mut pacer = Pacer::new();
    let (latest, upto) = latest_offsets(store, group, dirty_from, req.upto, &mut pacer).await?;
    let pass = CompactRequest { upto, ..req };
    let mut rewritten = 0usize;
    let mut clean_bytes = 0u64;
    let mut from = Some(start);
    while let Some(at) = from {
        pacer.step_done().await;
        let (loaded, next) = load(store, group, at, upto)?;
        let mut ops = Vec::new();
        for l in &loaded {
            let kept = compacted(l, &latest, &pass);
            clean_bytes += match (&kept, &l.entry.payload) {
                (Some(b), _) => b.records.len() as u64,
                (None, EntryPayload::Normal(Request::Batch(b))) => b.records.len() as u64,
                _ => 0,
            };
            if let Some(b) = kept {
                let entry = Entry::new_normal(l.entry.log_id(), Request::Batch(b));
                ops.push(Op::ReplaceIfPresent {
                    group,
                    index: l.entry.index(),
                    bytes: codec::encode(&entry, "log entry")?,
                });
            }
        }
        if !ops.is_empty() {
            rewritten += ops.len();
            store.write(ops).await?;
        }
        from = next;
    }
    let progress = Progress {
        request: req,
        clean_upto: upto,
        clean_bytes,
    };
    store
        .write(vec![Op::Put {
            group,
            key: GroupKey::Compacted as u8,
            value: codec::encode(&progress, "compaction progress")?,
        }])
        .await?;
    shared.compacted(req);
    tracing::info!(group, upto, rewritten, keys = latest.len(), "compacted");
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: Option<&str>, value: &str, ts: i64) -> Record {
        Record {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: Vec::new(),
            timestamp_ms: ts,
        }
    }

    #[test]
    fn an_older_request_than_the_one_done_is_not_carried_out_again() {
        let r = |upto, now_ms, delete_retention_ms| CompactRequest {
            upto,
            now_ms,
            delete_retention_ms,
        };
        let done = r(100, 5_000, 1_000);
        assert!(superseded(&r(80, 4_000, 1_000), &done));
        assert!(superseded(&r(100, 5_000, 1_000), &done));
        // Further, or tombstones `done` kept that this one expires: carried out.
        assert!(!superseded(&r(120, 4_000, 1_000), &done));
        assert!(!superseded(&r(80, 6_000, 1_000), &done));
        assert!(!superseded(&r(80, 5_000, 500), &done));
    }

    #[test]
    fn a_pass_pauses_as_long_as_each_step_took_within_a_bound() {
        use std::time::Duration;
        assert_eq!(pause_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            pause_after(Duration::from_millis(7)),
            Duration::from_millis(21)
        );
        assert_eq!(pause_after(Duration::from_secs(3)), MAX_STEP_PAUSE);
    }

    #[test]
    fn the_last_record_of_each_key_stays_and_old_tombstones_go() {
        let latest: HashMap<Bytes, u64> = [
            (Bytes::from_static(b"a"), 5),
            (Bytes::from_static(b"t"), 6),
            (Bytes::from_static(b"u"), 7),
        ]
        .into();
        let req = CompactRequest {
            upto: 8,
            now_ms: 10_000,
            delete_retention_ms: 1_000,
        };
        assert!(!keeps(&rec(Some("a"), "old", 1), 2, 1, &latest, &req));
        assert!(keeps(&rec(Some("a"), "new", 1), 5, 1, &latest, &req));
        assert!(keeps(&rec(None, "unkeyed", 1), 3, 1, &latest, &req));
        // A tombstone older than delete_retention_ms goes; a recent one stays.
        assert!(!keeps(&rec(Some("t"), "", 8_000), 6, 8_000, &latest, &req));
        assert!(keeps(&rec(Some("u"), "", 9_500), 7, 9_500, &latest, &req));
        // At or above upto, everything stays.
        assert!(keeps(&rec(Some("a"), "older", 1), 8, 1, &latest, &req));
    }

    #[test]
    fn a_record_is_never_taken_for_older_than_its_batch() {
        // A tombstone whose producer's clock is a day behind (or mirrored with its old
        // timestamp) would otherwise vanish at the first pass, before readers behind saw it.
        let b = StoredBatch {
            token: 0,
            producer_id: 0,
            producer_epoch: 0,
            base_sequence: 0,
            record_count: 4,
            crc32c: 0,
            append_time_ms: 90_000,
            max_timestamp_ms: 95_000,
            records: Bytes::new(),
            compaction: None,
        };
        let records = [
            rec(Some("t"), "", 1_000),
            rec(Some("u"), "", 0),
            rec(Some("v"), "x", 95_000),
            rec(Some("w"), "", i64::MAX),
        ];
        assert_eq!(
            placed(&b, 40, &records),
            [
                (40, 90_000),
                (41, 90_000),
                (42, 95_000),
                (43, 90_000 + crate::types::MAX_TIMESTAMP_AHEAD_MS)
            ]
        );
    }
}
