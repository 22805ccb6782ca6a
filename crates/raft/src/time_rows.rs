//! The newest rows of a partition's time index, held in memory and written in bulk.
//!
//! A batch that raises the partition's largest timestamp adds a row to the time index. One
//! record at a time, nearly every batch does, and writing its row in the batch's own commit
//! put two more pages (the time table's leaf and branch) into every one-at-a-time produce's
//! fsync. The rows wait here instead and join an append's commit every
//! [`WRITE_EVERY_BATCHES`] batches or [`WRITE_EVERY_BYTES`] bytes, with a marker ([`fjord_storage::store::GroupKey::
//! TimeRowsThrough`]) saying up to which log index every row is stored. Lookups see the
//! stored rows and these; a start (or a wake from hibernation) rebuilds the rows of the
//! entries at and after the marker from the log ([`crate::partition_sm::PartitionShared::
//! recover_time_rows`]). Pure: the partition's shared state holds one behind a lock.

use std::collections::BTreeMap;

use fjord_storage::store::GroupKey;
use fjord_storage::{Op, TimeRow};

/// Rows join an append's commit once this many batches were appended since the last rows
/// did (one produce in a thousand, one at a time: the commit that carries them, with a few
/// more pages, stays out of the 99th percentile)...
pub const WRITE_EVERY_BATCHES: u64 = 1024;

/// ... or this many bytes of records: with [`WRITE_EVERY_BATCHES`], at most what a start reads
/// back from the log to rebuild the rows (and one batch more).
pub const WRITE_EVERY_BYTES: u64 = 16 << 20;

/// The rows not stored yet, each with the log index of its batch.
#[derive(Debug, Default)]
pub struct TimeRows {
    /// Rows not handed to a write yet, oldest first.
    waiting: Vec<(u64, TimeRow)>,
    /// Rows handed to a write that is not durable yet, by the write's number.
    writing: BTreeMap<u64, Vec<(u64, TimeRow)>>,
    /// Batches, and their bytes, appended since rows were last handed to a write.
    batches: u64,
    bytes: u64,
    /// The number of the next write.
    next_write: u64,
    /// The marker last handed to a write (or found stored at the start): every row of a batch
    /// below this log index is stored, or is in `writing`. `None`: none this run yet.
    through: Option<u64>,
    /// The last log index appended this run.
    last: Option<u64>,
}

/// Rows (and the marker) to write in an append's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimesWrite {
    /// Its number, for [`TimeRows::written`].
    pub write: u64,
    pub rows: Vec<TimeRow>,
    /// The marker: every row of a batch below this log index is stored once this commits.
    pub through: u64,
}

/// The write of the marker `through` of `group` (see [`GroupKey::TimeRowsThrough`]).
pub fn marker_op(group: u64, through: u64) -> Op {
    Op::Put {
        group,
        key: GroupKey::TimeRowsThrough as u8,
        value: through.to_be_bytes().to_vec(),
    }
}

/// The marker as stored, or `None` when the value is not one.
pub fn decode_marker(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

/// The writes that store `rows` of `group` and then the marker `through`.
pub fn rows_ops(group: u64, rows: Vec<TimeRow>, through: u64) -> Vec<Op> {
    vec![
        Op::PutTimes {
            group,
            times: rows,
            clear: false,
        },
        marker_op(group, through),
    ]
}

impl TimeRows {
    /// Rows of a partition whose stored marker (after the rebuild at the start) is `through`.
    pub fn new(through: Option<u64>) -> Self {
        TimeRows {
            through,
            ..TimeRows::default()
        }
    }

    /// Notes an append of `batches` batches of `bytes` bytes ending at log index `last`,
    /// whose batches add `rows` (with their log indexes). Returns the write that hands every
    /// waiting row to the append's commit, when one is due: every [`WRITE_EVERY_BATCHES`]
    /// batches or [`WRITE_EVERY_BYTES`] bytes, and at the first append of this run (which
    /// stores the marker).
    pub fn appended(
        &mut self,
        rows: Vec<(u64, TimeRow)>,
        batches: u64,
        bytes: u64,
        last: u64,
    ) -> Option<TimesWrite> {
        self.waiting.extend(rows);
        self.batches = self.batches.saturating_add(batches);
        self.bytes = self.bytes.saturating_add(bytes);
        self.last = Some(last);
        // Each batch adds at most one row: as many wait as batches at most.
        if self.through.is_some()
            && self.batches < WRITE_EVERY_BATCHES
            && self.bytes < WRITE_EVERY_BYTES
        {
            return None;
        }
        Some(self.hand_over(last))
    }

    /// Hands every waiting row to a write, whose marker is `last + 1`.
    fn hand_over(&mut self, last: u64) -> TimesWrite {
        let write = self.next_write;
        self.next_write += 1;
        let handed = std::mem::take(&mut self.waiting);
        let rows = handed.iter().map(|(_, r)| *r).collect();
        self.writing.insert(write, handed);
        self.batches = 0;
        self.bytes = 0;
        let through = last.saturating_add(1);
        self.through = Some(through);
        TimesWrite {
            write,
            rows,
            through,
        }
    }

    /// For a partition going quiet (hibernating, stopping): the write that stores every
    /// waiting row, so that none is held in memory, if any waits.
    pub fn take_all(&mut self) -> Option<TimesWrite> {
        match self.last {
            Some(last) if !self.waiting.is_empty() => Some(self.hand_over(last)),
            _ => None,
        }
    }

    /// The write `write` ended (durable, or failed: a failed write stops the node).
    pub fn written(&mut self, write: u64) {
        self.writing.remove(&write);
    }

    /// After the log was truncated from log index `from`: forgets the rows of batches at or
    /// after it (a write already handed them stores them, and the truncation, queued after
    /// it, removes them). Returns the marker to store with the truncation when the one
    /// stored is past `from`.
    pub fn truncated(&mut self, from: u64) -> Option<u64> {
        self.last = self.last.map(|l| l.min(from.saturating_sub(1)));
        self.waiting.retain(|(i, _)| *i < from);
        for rows in self.writing.values_mut() {
            rows.retain(|(i, _)| *i < from);
        }
        match self.through {
            Some(t) if t > from => {
                self.through = Some(from);
                Some(from)
            }
            _ => None,
        }
    }

    /// After a snapshot replaced the log through log index `index` (its rows are the
    /// snapshot's): forgets the rows of batches at or below it; the marker to store is
    /// `index + 1`. Rows of entries after it stay: openraft keeps a follower's entries after
    /// the snapshot when its entry at `index` matches the snapshot's, and those entries' rows
    /// are stored by nothing else until a restart rebuilds them.
    pub fn reset(&mut self, index: u64) -> u64 {
        self.waiting.retain(|(i, _)| *i > index);
        for rows in self.writing.values_mut() {
            rows.retain(|(i, _)| *i > index);
        }
        self.last = Some(self.last.map_or(index, |l| l.max(index)));
        let through = index.saturating_add(1);
        self.through = Some(through);
        through
    }

    /// The first row held here whose timestamp is at least `ts` (rows held here are newer
    /// than every stored one).
    pub fn first_at_or_after(&self, ts: i64) -> Option<TimeRow> {
        self.writing
            .values()
            .flatten()
            .chain(self.waiting.iter())
            .map(|(_, r)| *r)
            .find(|r| r.timestamp_ms >= ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, offset: u64) -> TimeRow {
        TimeRow {
            timestamp_ms: ts,
            base_offset: offset,
        }
    }

    #[test]
    fn the_first_append_of_a_run_stores_the_marker_then_rows_wait_for_a_bulk_write() {
        let mut t = TimeRows::new(None);
        let w = t
            .appended(vec![(1, row(10, 0))], 1, 10, 1)
            .expect("first append writes");
        assert_eq!((w.rows.clone(), w.through), (vec![row(10, 0)], 2));
        t.written(w.write);
        for i in 2..(1 + WRITE_EVERY_BATCHES) {
            assert_eq!(t.appended(vec![(i, row(10 + i as i64, i))], 1, 10, i), None);
        }
        // Held rows answer lookups until written.
        assert_eq!(t.first_at_or_after(15), Some(row(15, 5)));
        let last = 1 + WRITE_EVERY_BATCHES;
        let w = t.appended(vec![], 1, 10, last).expect("due");
        assert_eq!(w.rows.len() as u64, WRITE_EVERY_BATCHES - 1);
        assert_eq!(w.through, last + 1);
        assert_eq!(t.first_at_or_after(15), Some(row(15, 5)), "still writing");
        t.written(w.write);
        assert_eq!(t.first_at_or_after(15), None, "stored now");
    }

    #[test]
    fn a_stored_marker_means_no_write_at_the_first_append() {
        let mut t = TimeRows::new(Some(5));
        assert_eq!(t.appended(vec![(5, row(1, 9))], 1, 10, 5), None);
        assert_eq!(t.first_at_or_after(0), Some(row(1, 9)));
    }

    #[test]
    fn a_truncation_forgets_the_rows_it_removes_and_lowers_the_marker() {
        let mut t = TimeRows::new(None);
        let w = t
            .appended(vec![(1, row(10, 0)), (2, row(11, 1))], 2, 20, 2)
            .unwrap();
        assert_eq!(w.through, 3);
        t.appended(vec![(3, row(12, 2)), (4, row(13, 3))], 2, 20, 4);
        assert_eq!(t.truncated(4), None, "the stored marker (3) is not past 4");
        assert_eq!(t.first_at_or_after(13), None);
        assert_eq!(t.first_at_or_after(12), Some(row(12, 2)));
        assert_eq!(t.truncated(2), Some(2));
        assert_eq!(
            t.first_at_or_after(0),
            Some(row(10, 0)),
            "row of index 1 kept"
        );
        assert_eq!(t.first_at_or_after(11), None);
        assert_eq!(t.truncated(2), None, "the marker is 2 already");
    }

    #[test]
    fn a_snapshot_forgets_every_row() {
        let mut t = TimeRows::new(Some(3));
        t.appended(vec![(3, row(5, 1))], 1, 10, 3);
        assert_eq!(t.reset(9), 10);
        assert_eq!(t.first_at_or_after(i64::MIN), None);
        assert_eq!(t.appended(vec![], 1, 10, 10), None, "the marker is known");
    }

    #[test]
    fn a_snapshot_keeps_the_rows_of_the_entries_after_it() {
        // A follower appended entries 3..6; the snapshot it installs ends at 4 and openraft
        // keeps 5 and 6: their rows are not stored anywhere else.
        let mut t = TimeRows::new(Some(3));
        t.appended(
            vec![
                (3, row(5, 1)),
                (4, row(6, 2)),
                (5, row(7, 3)),
                (6, row(9, 4)),
            ],
            4,
            40,
            6,
        );
        assert_eq!(t.reset(4), 5);
        assert_eq!(t.first_at_or_after(i64::MIN), Some(row(7, 3)));
        assert_eq!(t.first_at_or_after(8), Some(row(9, 4)));
        let w = t.take_all().expect("the kept rows wait to be stored");
        assert_eq!((w.rows, w.through), (vec![row(7, 3), row(9, 4)], 7));
    }

    #[test]
    fn big_batches_write_their_rows_by_bytes() {
        let mut t = TimeRows::new(Some(0));
        assert_eq!(
            t.appended(vec![(1, row(1, 0))], 1, WRITE_EVERY_BYTES - 1, 1),
            None
        );
        let w = t
            .appended(vec![(2, row(2, 1))], 1, 1, 2)
            .expect("the bytes reached");
        assert_eq!((w.rows.len(), w.through), (2, 3));
    }

    #[test]
    fn the_marker_is_read_back_as_written() {
        let Op::Put { value, .. } = marker_op(1, 4711) else {
            panic!("a put");
        };
        assert_eq!(decode_marker(&value), Some(4711));
        assert_eq!(decode_marker(&[1, 2, 3]), None);
    }

    #[test]
    fn a_quiet_partition_stores_what_waits() {
        let mut t = TimeRows::new(Some(0));
        assert_eq!(t.take_all(), None, "nothing appended");
        t.appended(vec![(1, row(1, 0))], 1, 10, 1);
        t.appended(vec![], 1, 10, 2);
        let w = t.take_all().expect("a row waits");
        assert_eq!((w.rows, w.through), (vec![row(1, 0)], 3));
        assert_eq!(t.take_all(), None, "nothing waits any more");
        t.written(w.write);
        assert_eq!(t.first_at_or_after(0), None);
    }
}
