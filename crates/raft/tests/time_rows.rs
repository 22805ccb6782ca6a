//! The time index's rows are written in bulk (`fjord_raft::time_rows`): between writes they
//! are held in memory, and a start rebuilds from the log those a crash left unwritten. This
//! drives the real log store through appends, a crash (everything dropped without a clean
//! stop), a truncation and a second crash, and checks after each step that a lookup by time
//! answers what a time index with a row for every raising batch answers, and after each
//! start (and once the partition goes quiet) that the stored rows alone do.

use bytes::Bytes;
use fjord_raft::log_store::GroupLogStore;
use fjord_raft::partition_sm::{PartitionKind, PartitionShared};
use fjord_raft::time_rows::WRITE_EVERY_BATCHES;
use fjord_raft::{Request, StoredBatch, TypeConfig};
use fjord_storage::{Store, StoreOptions};
use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use std::sync::Arc;

const GROUP: u64 = (1u64 << 32) | 1;

fn batch(token: u64, max_timestamp_ms: i64) -> StoredBatch {
    let records = Bytes::from_static(b"r");
    StoredBatch {
        token,
        producer_id: 0,
        producer_epoch: 0,
        base_sequence: 0,
        record_count: 1,
        crc32c: fjord_proto::batch::checksum(&records),
        append_time_ms: 0,
        max_timestamp_ms,
        records,
        compaction: None,
    }
}

struct Replica {
    store: Store,
    shared: Arc<PartitionShared>,
    log: GroupLogStore,
}

/// Drops every handle without a clean stop (what a crash leaves: the rows held in memory are
/// gone), and waits until the database is closed so that it can be opened again.
async fn crash(r: Replica) {
    let closed = r.store.closed();
    drop(r);
    assert!(
        closed.wait(std::time::Duration::from_secs(60)).await,
        "closed"
    );
}

async fn start(dir: &std::path::Path) -> Replica {
    let store = Store::open(
        dir,
        &StoreOptions {
            cache_size_bytes: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let shared = PartitionShared::open(GROUP, &store, PartitionKind::Data).unwrap();
    shared.recover_time_rows().await.unwrap();
    let log = GroupLogStore::new(GROUP, store.clone(), Some(shared.clone()));
    Replica { store, shared, log }
}

/// Appends one batch per entry at `index..`, term `term`, with these largest timestamps.
async fn append(r: &mut Replica, term: u64, index: u64, timestamps: &[i64]) {
    for (i, ts) in timestamps.iter().enumerate() {
        let at = index + i as u64;
        let e = EntryOf::<TypeConfig>::new_normal(
            openraft::testing::log_id::<TypeConfig>(term, 1, at),
            Request::Batch(batch(at, *ts)),
        );
        r.log.append(vec![e], IOFlushed::noop()).await.unwrap();
        // Every batch appended is in redb (committed with an fsync) once none is pending.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        assert!(
            r.shared.wait_stored(u64::MAX, deadline).await,
            "append {at} durable"
        );
    }
}

/// What a time index with a row for every raising batch answers: one batch per entry from
/// index 1, offset = index - 1.
fn expected(timestamps: &[i64], ts: i64) -> Option<u64> {
    let mut max = None::<i64>;
    for (i, t) in timestamps.iter().enumerate() {
        if max.is_none_or(|m| *t > m) {
            max = Some(*t);
            if *t >= ts {
                return Some(i as u64);
            }
        }
    }
    None
}

fn check(r: &Replica, log: &[i64], stored_only: bool, what: &str) {
    let probes = log.iter().copied().chain([i64::MIN, 0, i64::MAX]);
    for ts in probes.flat_map(|t| [t.saturating_sub(1), t, t.saturating_add(1)]) {
        let got = if stored_only {
            r.store.offset_for_time(GROUP, ts).unwrap()
        } else {
            r.shared.offset_for_time(ts).unwrap()
        }
        .map(|row| row.base_offset);
        assert_eq!(got, expected(log, ts), "{what}: lookup of {ts}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_rows_held_in_memory_survive_crashes_and_truncations() {
    let dir = tempfile::tempdir().unwrap();
    // Rising timestamps, some older ones among them (no row), more than one bulk write.
    let n = WRITE_EVERY_BATCHES * 2 + 7;
    let mut log: Vec<i64> = (0..n as i64)
        .map(|i| if i % 5 == 3 { 10 } else { 1_000 + 3 * i })
        .collect();

    let mut r = start(dir.path()).await;
    append(&mut r, 1, 1, &log).await;
    check(&r, &log, false, "after the appends");
    crash(r).await;

    // A crash: the rows not written yet are gone from memory; the start rebuilds them.
    let mut r = start(dir.path()).await;
    check(&r, &log, true, "stored after the first crash");
    check(&r, &log, false, "after the first crash");

    // More appends (past a bulk write, which stores the marker past the truncation point), a
    // truncation of most of them (a new leader's log differs), and fewer others in their
    // place (no bulk write after the truncation) with other timestamps.
    let more: Vec<i64> = (0..WRITE_EVERY_BATCHES as i64 + 6)
        .map(|i| 5_000 + i)
        .collect();
    append(&mut r, 1, n + 1, &more).await;
    log.extend(&more);
    let keep = n + 4; // entries 1..=keep stay
    r.log
        .truncate_after(Some(openraft::testing::log_id::<TypeConfig>(1, 1, keep)))
        .await
        .unwrap();
    log.truncate(keep as usize);
    let replaced: Vec<i64> = (0..20).map(|i| 5_004 + 2 * i).collect();
    append(&mut r, 2, keep + 1, &replaced).await;
    log.extend(&replaced);
    check(&r, &log, false, "after the truncation");
    crash(r).await;

    let mut r = start(dir.path()).await;
    check(&r, &log, true, "stored after the second crash");
    check(&r, &log, false, "after the second crash");

    // A partition going quiet (hibernating, stopping) stores what waits in memory.
    let quiet: Vec<i64> = (0..10).map(|i| 9_000 + i).collect();
    append(&mut r, 2, log.len() as u64 + 1, &quiet).await;
    log.extend(&quiet);
    r.shared.store_time_rows().await;
    check(&r, &log, true, "stored once quiet");
    check(&r, &log, false, "once quiet");
}
