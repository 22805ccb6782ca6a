//! The log store's append returns before the fsync (its entries stay readable from an
//! in-memory tail until their commit). This drives one group's store as openraft's core would
//! (appends back to back without waiting for durability, truncations with a new term) while
//! other tasks read it as replication and apply do, and checks that every read is contiguous
//! and matches the log as it stood, and that the durable log ends equal to the model.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjord_meta::MetaCommand;
use fjord_raft::log_store::GroupLogStore;
use fjord_raft::{Request, TypeConfig};

use openraft::RaftLogReader;
use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use proptest::prelude::*;

fn entry(term: u64, index: u64) -> EntryOf<TypeConfig> {
    EntryOf::<TypeConfig>::new_normal(
        openraft::testing::log_id::<TypeConfig>(term, 1, index),
        Request::Meta(MetaCommand::AllocateProducerId),
    )
}

#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    /// Truncates the last `n` entries (never below the stable prefix the readers use).
    Truncate(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![8 => (1u64..6).prop_map(Op::Append), 1 => (1u64..5).prop_map(Op::Truncate)]
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (_dir, store) = common::temp_store();
    let mut log = GroupLogStore::new(0, store.clone(), None);
    // Entries below `stable` are never truncated: readers check them against their terms.
    let stable = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut reader = log.get_log_reader().await;
        let (stable, done) = (stable.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while done.load(Ordering::Acquire) == 0 && reads < 5_000 {
                reads += 1;
                let end = stable.load(Ordering::Acquire);
                if end == 0 {
                    tokio::task::yield_now().await;
                    continue;
                }
                let got = reader
                    .try_get_log_entries(0..end)
                    .await
                    .map_err(|e| e.to_string())?;
                let idx: Vec<u64> = got.iter().map(|e| e.index()).collect();
                if idx != (0..end).collect::<Vec<_>>() {
                    return Err(format!("read 0..{end} returned indexes {idx:?}"));
                }
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(())
        }));
    }
    let mut model: Vec<EntryOf<TypeConfig>> = Vec::new();
    let mut term = 1u64;
    let mut flushed = Vec::new();
    for op in ops {
        match op {
            Op::Append(n) => {
                let start = model.len() as u64;
                let new: Vec<_> = (start..start + n).map(|i| entry(term, i)).collect();
                let (tx, rx) = TypeConfig::oneshot();
                log.append(new.clone(), IOFlushed::signal(tx))
                    .await
                    .unwrap();
                flushed.push(rx);
                model.extend(new);
            }
            Op::Truncate(n) => {
                let floor = stable.load(Ordering::Acquire) as usize;
                let keep = model.len().saturating_sub(n as usize).max(floor);
                if keep < model.len() {
                    let last = keep.checked_sub(1).map(|i| model[i].log_id());
                    log.truncate_after(last).await.unwrap();
                    model.truncate(keep);
                    term += 1;
                }
            }
        }
        // What is appended is readable at once: check the whole model now, from this task.
        let got = log
            .try_get_log_entries(0..model.len() as u64)
            .await
            .unwrap();
        prop_assert_eq!(
            got.iter().map(|e| e.log_id()).collect::<Vec<_>>(),
            model.iter().map(|e| e.log_id()).collect::<Vec<_>>()
        );
        // Half the log, from time to time, becomes the stable prefix the readers read.
        stable.fetch_max(model.len() as u64 / 2, Ordering::AcqRel);
    }
    for rx in flushed {
        rx.await.unwrap().unwrap();
    }
    done.store(1, Ordering::Release);
    for r in readers {
        r.await.unwrap().map_err(TestCaseError::fail)?;
    }
    // Everything was flushed: a fresh store over the same database reads the model.
    let mut fresh = GroupLogStore::new(0, store, None);
    let got = fresh
        .try_get_log_entries(0..model.len() as u64 + 10)
        .await
        .unwrap();
    prop_assert_eq!(
        got.iter().map(|e| e.log_id()).collect::<Vec<_>>(),
        model.iter().map(|e| e.log_id()).collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn appends_are_readable_at_once_and_durable_in_order(ops in proptest::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
