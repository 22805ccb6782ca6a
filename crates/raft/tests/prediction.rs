//! The AP acknowledgement and the offset index rest on one claim: the partition rules run
//! over the log tail at append (on every replica, through truncations and rebuilds) decide
//! exactly what applying the committed log decides. This drives the real log store and state
//! machine through random appends (fresh batches, retries, sequence gaps, several
//! producers), truncations with a new term, and applies, and checks the claim against a
//! plain fold of the surviving log.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use fjord_raft::log_store::GroupLogStore;
use fjord_raft::partition_sm::{PartitionKind, PartitionShared, PartitionSm};
use fjord_raft::{Request, StoredBatch, TypeConfig};
use fjord_storage::partition::{Outcome, PartitionState};
use fjord_storage::{Store, StoreOptions};
use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Batches of (producer 0..3, kind, record count): kind 0 next sequence, 1 retry of the
    /// producer's last batch, 2 a gap.
    Append(Vec<(u64, u8, u32)>),
    /// Truncates the last `n` unapplied entries; later appends come with a new term.
    Truncate(usize),
    /// Applies up to `n` more entries.
    Apply(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec((0u64..3, 0u8..3, 1u32..4), 1..4).prop_map(Op::Append),
        1 => (1usize..4).prop_map(Op::Truncate),
        2 => (1usize..6).prop_map(Op::Apply),
    ]
}

fn row(base_offset: u64, index: u64, record_count: u32) -> fjord_storage::BatchRow {
    fjord_storage::BatchRow {
        base_offset,
        index,
        record_count,
        position: 0,
        bytes: 0,
    }
}

fn batch(token: u64, producer_id: u64, base_sequence: u32, record_count: u32) -> StoredBatch {
    let records = Bytes::from(vec![b'x'; record_count as usize]);
    StoredBatch {
        token,
        producer_id,
        producer_epoch: 0,
        base_sequence,
        record_count,
        crc32c: fjord_proto::batch::checksum(&records),
        append_time_ms: 0,
        max_timestamp_ms: 0,
        records,
        compaction: None,
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (_dir, store) = common::temp_store();
    let group = (1u64 << 32) | 1;
    let shared = PartitionShared::open(group, &store, PartitionKind::Data).unwrap();
    let mut log = GroupLogStore::new(group, store.clone(), Some(shared.clone()));
    let mut sm = PartitionSm::new(shared.clone(), store.clone());

    // The model: the log as it stands (index 1..), the applied prefix, predictions by token.
    let mut entries: Vec<EntryOf<TypeConfig>> = Vec::new();
    let mut applied = 0usize;
    let mut term = 1u64;
    let mut token = 0u64;
    let mut predicted: HashMap<u64, Outcome> = HashMap::new();
    // What each producer's client believes: its next sequence and its last batch.
    let mut next_seq: HashMap<u64, u32> = HashMap::new();
    let mut last_batch: HashMap<u64, (u32, u32)> = HashMap::new();

    for op in ops {
        match op {
            Op::Append(specs) => {
                let mut new = Vec::new();
                let mut waiters = Vec::new();
                for (pid, kind, n) in specs {
                    token += 1;
                    let next = *next_seq.get(&pid).unwrap_or(&0);
                    let (seq, count) = match (kind, last_batch.get(&pid)) {
                        (1, Some(&(s, c))) => (s, c),
                        (2, _) => (next + 7, n),
                        _ => {
                            next_seq.insert(pid, next + n);
                            last_batch.insert(pid, (next, n));
                            (next, n)
                        }
                    };
                    let index = (entries.len() + new.len() + 1) as u64;
                    let log_id = openraft::testing::log_id::<TypeConfig>(term, 1, index);
                    new.push(EntryOf::<TypeConfig>::new_normal(
                        log_id,
                        Request::Batch(batch(token, pid, seq, count)),
                    ));
                    let (guard, rx) = shared.register_waiter(token).unwrap();
                    waiters.push((token, guard, rx));
                }
                log.append(new.clone(), IOFlushed::noop()).await.unwrap();
                for (t, _guard, rx) in waiters {
                    predicted.insert(
                        t,
                        rx.await
                            .expect("every appended batch gets a predicted outcome"),
                    );
                }
                entries.extend(new);
            }
            Op::Truncate(n) => {
                let keep = entries.len().saturating_sub(n).max(applied);
                if keep < entries.len() {
                    let last = keep.checked_sub(1).map(|i| entries[i].log_id());
                    log.truncate_after(last).await.unwrap();
                    entries.truncate(keep);
                    term += 1;
                }
            }
            Op::Apply(n) => {
                let upto = (applied + n).min(entries.len());
                let batch: Vec<_> = entries[applied..upto]
                    .iter()
                    .cloned()
                    .map(|e| Ok((e, None)))
                    .collect();
                sm.apply(futures::stream::iter(batch)).await.unwrap();
                applied = upto;
            }
        }

        // Check the applied prefix against a plain fold.
        let mut model = PartitionState::default();
        for e in &entries[..applied] {
            let openraft::EntryPayload::Normal(Request::Batch(b)) = &e.payload else {
                continue;
            };
            let (outcome, _) = fjord_raft::partition_sm::apply_batch(&mut model, b, e.index());
            prop_assert_eq!(
                predicted.get(&b.token),
                Some(&outcome),
                "prediction of entry {}",
                e.index()
            );
            if let Outcome::Appended { base_offset } = outcome {
                let row = store
                    .find_offset(group, base_offset)
                    .unwrap()
                    .map(|r| (r.base_offset, r.index, r.record_count));
                prop_assert_eq!(
                    row,
                    Some((base_offset, e.index(), b.record_count)),
                    "offset index of entry {}",
                    e.index()
                );
            }
        }
        prop_assert_eq!(shared.high_watermark(), model.next_offset);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn append_time_prediction_equals_apply(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}

/// Regression: an AP produce dropped by its request timeout left its waiter registered (it
/// was removed only at the end of the call), and once `MAX_AP_WAITERS` had piled up every AP
/// write to the partition was refused as Busy until the node restarted. The waiter now goes
/// when its registration drops, however the request ends.
#[test]
fn a_dropped_ap_request_leaves_no_waiter_behind() {
    use fjord_raft::partition_sm::MAX_AP_WAITERS;
    let (_dir, store) = common::temp_store();
    let shared = PartitionShared::open((1u64 << 32) | 1, &store, PartitionKind::Data).unwrap();
    // More requests than the limit, each given up before its batch was durable.
    for token in 0..(MAX_AP_WAITERS as u64 + 10) {
        let registered = shared.register_waiter(token);
        assert!(
            registered.is_ok(),
            "waiter {token} refused: earlier ones leaked"
        );
        drop(registered);
    }
    assert_eq!(shared.waiter_count(), 0);
    // While registered, a waiter counts against the limit.
    let (_guard, _rx) = shared.register_waiter(1).unwrap();
    assert_eq!(shared.waiter_count(), 1);
}

/// Regression: a leader applies a batch once the followers flushed it, possibly before its
/// own write reached redb; a CP fetch right after the acknowledgement read redb only and
/// answered no batch while reporting a high watermark above it. A fetch now waits until no
/// batch below the high watermark is still on its way to redb.
#[test]
fn a_fetch_waits_for_the_local_write_of_batches_below_the_high_watermark() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let shared = PartitionShared::open((1u64 << 32) | 1, &store, PartitionKind::Data).unwrap();
        let now = tokio::time::Instant::now;
        // Nothing pending: at once.
        assert!(shared.wait_stored(10, now()).await);
        // Batches at offsets 3 and 7 handed to the writer, not yet committed.
        shared.pending_add(&[row(3, 4, 4), row(7, 5, 2)]);
        // Below the first one, nothing to wait for.
        assert!(shared.wait_stored(3, now()).await);
        // Past it: not stored by the deadline.
        let deadline = now() + std::time::Duration::from_millis(50);
        assert!(!shared.wait_stored(5, deadline).await);
        // Its write ends while a fetch waits: the fetch goes on.
        let waiting = {
            let shared = shared.clone();
            tokio::spawn(async move {
                shared
                    .wait_stored(7, now() + std::time::Duration::from_secs(5))
                    .await
            })
        };
        tokio::task::yield_now().await;
        shared.pending_done(&[row(3, 4, 4)]);
        assert!(waiting.await.unwrap());
        // The batch at 7 is still pending.
        assert!(!shared.wait_stored(8, now()).await);
        shared.pending_done(&[row(7, 5, 2)]);
        assert!(shared.wait_stored(u64::MAX, now()).await);
    });
}
