//! A read serves a batch under its offset index row only when the row matches the entry it
//! points at: an index row of another batch (another record count) is corruption, reported,
//! never served with the row's offsets.

mod common;

use bytes::Bytes;
use fjord_proto::v1::Record;
use fjord_raft::read::Corruption;
use fjord_raft::{
    ReadError, ReadLimits, Request, StoredBatch, TypeConfig, codec, committed_batches,
};
use fjord_storage::{BatchRow, Op, Store};
use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;

const GROUP: u64 = (1 << 32) | 1;

fn entry(index: u64, record_count: u32) -> Vec<u8> {
    let records: Vec<Record> = (0..record_count)
        .map(|i| Record {
            value: Bytes::from(format!("v{index}-{i}")),
            ..Default::default()
        })
        .collect();
    let records = fjord_proto::batch::encode(&records);
    let batch = StoredBatch {
        token: index,
        producer_id: 0,
        producer_epoch: 0,
        base_sequence: 0,
        record_count,
        crc32c: fjord_proto::batch::checksum(&records),
        append_time_ms: 0,
        max_timestamp_ms: 0,
        records,
        compaction: None,
    };
    let log_id = openraft::testing::log_id::<TypeConfig>(1, 1, index);
    let e = EntryOf::<TypeConfig>::new_normal(log_id, Request::Batch(batch));
    codec::encode(&e, "log entry").unwrap()
}

fn row(base_offset: u64, index: u64, record_count: u32) -> BatchRow {
    BatchRow {
        base_offset,
        index,
        record_count,
        position: 0,
        bytes: 0,
    }
}

async fn store_with(rows: Vec<BatchRow>) -> (tempfile::TempDir, Store) {
    let (dir, store) = common::temp_store();
    store
        .write(vec![
            Op::Append {
                group: GROUP,
                entries: vec![(1, entry(1, 2)), (2, entry(2, 3))],
            },
            Op::IndexOffsets {
                group: GROUP,
                entries: rows,
                times: Vec::new(),
            },
        ])
        .await
        .unwrap();
    (dir, store)
}

const LIMITS: ReadLimits = ReadLimits {
    max_bytes: 1 << 20,
    max_batches: 16,
};

#[tokio::test]
async fn rows_that_match_their_entries_are_served_under_their_offsets() {
    let (_dir, store) = store_with(vec![row(0, 1, 2), row(2, 2, 3)]).await;
    let got = committed_batches(&store, GROUP, 0, 5, LIMITS).unwrap();
    let placed: Vec<(u64, u32)> = got
        .iter()
        .map(|b| (b.base_offset, b.record_count))
        .collect();
    assert_eq!(placed, vec![(0, 2), (2, 3)]);
}

#[tokio::test]
async fn a_row_pointing_at_an_entry_of_another_batch_is_corruption_not_data() {
    // The second row says 4 records where its entry holds 3: the offsets it would give the
    // records are not theirs.
    let (_dir, store) = store_with(vec![row(0, 1, 2), row(2, 2, 4)]).await;
    let err = committed_batches(&store, GROUP, 2, 6, LIMITS).unwrap_err();
    match err {
        ReadError::Corrupt {
            group,
            what:
                Corruption::CountMismatch {
                    base_offset,
                    index,
                    indexed,
                    stored,
                },
        } => assert_eq!(
            (group, base_offset, index, indexed, stored),
            (GROUP, 2, 2, 4, 3)
        ),
        other => panic!("expected a count mismatch, got {other:?}"),
    }
    // The batch before it is still served.
    let first = committed_batches(&store, GROUP, 0, 2, LIMITS).unwrap();
    assert_eq!(first.len(), 1);
}
