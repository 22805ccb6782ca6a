//! Reading a partition: its committed batches, from the log that *is* the partition.
//!
//! The offset index (`offsets`: base offset → log index and record count, written with each
//! append) finds the entry holding an offset; the entries are read from the log, decoded, and
//! each batch's CRC-32C is checked again on the way out.
//!
//! What must hold: only batches whose base offset is below the high watermark the caller
//! passes are returned (the caller passes a committed one); batches come in offset order, each
//! whole, checked; a corrupt entry, or an index row that does not match its entry (another
//! kind of entry, another record count), is an error ([`ReadError::Corrupt`]), never skipped
//! and never served under the row's offsets.

use bytes::Bytes;
use fjord_proto::batch;
use fjord_storage::{StorageError, Store};

use crate::codec;

/// A committed batch as a fetch returns it: the producer's encoded records, untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBatch {
    /// The offset of its first record.
    pub base_offset: u64,
    pub record_count: u32,
    /// CRC-32C of `records`, checked on this read.
    pub crc32c: u32,
    /// When the leader accepted it, in ms since the epoch.
    pub append_time_ms: i64,
    /// An encoded `fjord.v1.RecordList`.
    pub records: Bytes,
    /// Empty, or (a compacted batch) the offset of each record in `records` from
    /// `base_offset`: compaction removed the others. `record_count` stays the batch's span.
    pub offset_deltas: Vec<u32>,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored batch fails its check or the index points at something else: data, never
    /// silently skipped.
    #[error("group {group}: {what}")]
    Corrupt {
        group: u64,
        #[source]
        what: Corruption,
    },
}

/// What is wrong with a stored batch.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// The log entry does not decode.
    #[error(transparent)]
    Entry(#[from] codec::DecodeError),
    /// The offset index points at an entry that holds no batch.
    #[error("offset index points at a non-batch entry {index}")]
    NotABatch { index: u64 },
    /// The offset index row and the entry it points at disagree on the batch's record count:
    /// the row belongs to another entry (the offsets it would give the records are wrong).
    #[error(
        "offset index row of offset {base_offset} says {indexed} records, its entry {index} \
         holds a batch of {stored}"
    )]
    CountMismatch {
        base_offset: u64,
        index: u64,
        indexed: u32,
        stored: u32,
    },
    /// The batch's records fail their CRC or do not decode.
    #[error("stored batch at offset {base_offset}: {source}")]
    Batch {
        base_offset: u64,
        source: batch::BatchError,
    },
}

/// How much one read returns, at most.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Bytes of records, and of a compacted batch's offset deltas at their largest encoding
    /// ([`answer_bytes`]), so that an answer's size follows it (the first batch is returned
    /// whole even when larger).
    pub max_bytes: usize,
    /// Batches.
    pub max_batches: usize,
}

/// What a batch counts against [`ReadLimits::max_bytes`]: its records' bytes and its offset
/// deltas (a compacted batch's, at most 5 bytes each as protobuf varints).
pub fn answer_bytes(records: usize, offset_deltas: usize) -> usize {
    records + 5 * offset_deltas
}

/// The committed batches of `group` from the one holding `offset` on, below `hw`, within
/// `limits`.
pub fn committed_batches(
    store: &Store,
    group: u64,
    offset: u64,
    hw: u64,
    limits: ReadLimits,
) -> Result<Vec<CommittedBatch>, ReadError> {
    // The batch holding `offset`, or (when it was deleted, or compacted away) the first after.
    let first_base = match store.find_offset(group, offset)? {
        Some(r) if r.end_offset() > offset => r.base_offset,
        _ => offset,
    };
    let index: Vec<fjord_storage::BatchRow> = store
        .offsets_from(group, first_base, limits.max_batches)?
        .into_iter()
        .filter(|r| r.base_offset < hw)
        .collect();
    let (Some(first), Some(last)) = (index.first(), index.last()) else {
        return Ok(Vec::new());
    };
    let wanted: std::collections::HashMap<u64, (u64, u32)> = index
        .iter()
        .map(|r| (r.index, (r.base_offset, r.record_count)))
        .collect();
    let entries = store.read_log(
        group,
        first.index..=last.index,
        limits.max_batches * 4,
        limits.max_bytes + 4096,
    )?;
    let corrupt = |what: Corruption| ReadError::Corrupt { group, what };
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (idx, raw) in entries {
        let Some((base, count)) = wanted.get(&idx).copied() else {
            continue;
        };
        let b = codec::stored_batch(&raw)
            .map_err(|e| corrupt(e.into()))?
            .ok_or_else(|| corrupt(Corruption::NotABatch { index: idx }))?;
        if b.record_count != count {
            return Err(corrupt(Corruption::CountMismatch {
                base_offset: base,
                index: idx,
                indexed: count,
                stored: b.record_count,
            }));
        }
        batch::verify(&b.records, b.stored_crc()).map_err(|source| {
            corrupt(Corruption::Batch {
                base_offset: base,
                source,
            })
        })?;
        let crc32c = b.stored_crc();
        let offset_deltas = b.compaction.map(|c| c.offset_deltas).unwrap_or_default();
        let size = answer_bytes(b.records.len(), offset_deltas.len());
        if !out.is_empty() && bytes + size > limits.max_bytes {
            break;
        }
        bytes += size;
        out.push(CommittedBatch {
            base_offset: base,
            record_count: count,
            crc32c,
            append_time_ms: b.append_time_ms,
            offset_deltas,
            records: b.records,
        });
    }
    Ok(out)
}
