//! Reading: the decoding of a fetch answer into records, and [`Consumer`], which follows one
//! partition from a starting point.
//!
//! What must hold: every returned record passed its batch's CRC-32C check; offsets are the
//! batch's base offset plus the record's index, strictly increasing within an answer; no
//! record below the requested offset is returned; a consumer's position only moves forward
//! (except by an explicit [`Consumer::seek`]).

use bytes::Bytes;
use fjord_proto::v1;
use std::time::Duration;

use crate::client::{Client, Route, request};
use crate::config::{FetchOptions, ReadMode};
use crate::error::ClientError;

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch: the producer's timestamp, or the server's append
    /// time when the producer left it empty.
    pub timestamp_ms: i64,
}

/// What one fetch returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<ConsumedRecord>,
    /// The offset after the last record the answering replica may serve.
    pub high_watermark: u64,
    /// The first offset still stored.
    pub log_start_offset: u64,
    /// Where to fetch next: after the last returned record, or the requested offset when
    /// none was returned.
    pub next_offset: u64,
    /// The node that answered.
    pub node_id: u64,
}

/// Decodes a fetch answer for `partition` requested from `offset`.
pub(crate) fn decode_fetch(
    answer: v1::FetchResponse,
    partition: u32,
    offset: u64,
) -> Result<FetchResult, ClientError> {
    let mut records = Vec::new();
    // The end of the previous batch: batches must not overlap or go backwards.
    let mut batch_floor = 0u64;
    for batch in &answer.batches {
        let where_ = || {
            format!(
                "partition {partition}, batch at offset {}",
                batch.base_offset
            )
        };
        if batch.base_offset < batch_floor {
            return Err(ClientError::Protocol(format!(
                "{}: starts before the previous batch ends ({batch_floor})",
                where_()
            )));
        }
        let decoded = fjord_proto::batch::decode(&batch.records, batch.crc32c)
            .map_err(|e| ClientError::Corrupt(format!("{}: {e}", where_())))?;
        let deltas = record_deltas(batch, decoded.len())
            .map_err(|why| ClientError::Corrupt(format!("{}: {why}", where_())))?;
        batch_floor = batch
            .base_offset
            .checked_add(batch.record_count as u64)
            .ok_or_else(|| ClientError::Protocol(format!("{}: offsets overflow", where_())))?;
        for (delta, r) in deltas.into_iter().zip(decoded) {
            let record_offset = batch.base_offset + delta as u64;
            if record_offset < offset {
                continue;
            }
            records.push(ConsumedRecord {
                partition,
                offset: record_offset,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                timestamp_ms: if r.timestamp_ms != 0 {
                    r.timestamp_ms
                } else {
                    batch.append_time_ms
                },
            });
        }
    }
    // After the last batch returned, even where compaction left its end (or all of it)
    // without records.
    let next_offset = batch_floor.max(offset);
    Ok(FetchResult {
        records,
        high_watermark: answer.high_watermark,
        log_start_offset: answer.log_start_offset,
        next_offset,
        node_id: answer.node_id,
    })
}

/// The offset of each of a batch's `held` records from its base offset: dense as produced,
/// or as a compacted batch lists them (increasing, within its span).
fn record_deltas(batch: &v1::FetchedBatch, held: usize) -> Result<Vec<u32>, String> {
    if batch.offset_deltas.is_empty() {
        // Compaction removed every record of the batch: it only spans its offsets.
        if held == 0 {
            return Ok(Vec::new());
        }
        if held != batch.record_count as usize {
            return Err(format!(
                "declares {} records but holds {held}",
                batch.record_count
            ));
        }
        return Ok((0..batch.record_count).collect());
    }
    let d = &batch.offset_deltas;
    let increasing = d.windows(2).all(|w| w[0] < w[1]);
    if d.len() != held || !increasing || d.last().is_some_and(|l| *l >= batch.record_count) {
        return Err(format!(
            "a compacted batch of span {} lists {} offsets for {held} records",
            batch.record_count,
            d.len()
        ));
    }
    Ok(d.clone())
}

/// Where a [`Consumer`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first offset still stored.
    Beginning,
    /// The high watermark at the first poll: only records produced after it.
    End,
    /// This offset.
    Offset(u64),
}

/// Follows one partition: each [`poll`](Consumer::poll) fetches from the current position
/// and moves past what it returned.
///
/// A consumer started at the beginning of a log whose first records were removed starts at
/// the log start instead. Once started, a position that falls below the log start (records
/// removed while it was behind) is a [`ClientError::OffsetOutOfRange`]; [`Consumer::seek`]
/// to carry on.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    topic: String,
    partition: u32,
    options: FetchOptions,
    start: StartFrom,
    /// `None` until the start point is resolved at the first poll.
    position: Option<u64>,
    /// Whether a poll succeeded yet: before that, `Beginning` may still move to the log start.
    started: bool,
    high_watermark: Option<u64>,
}

impl Consumer {
    pub(crate) fn new(
        client: Client,
        topic: String,
        partition: u32,
        start: StartFrom,
        options: FetchOptions,
    ) -> Self {
        let position = match start {
            StartFrom::Offset(o) => Some(o),
            StartFrom::Beginning => Some(0),
            StartFrom::End => None,
        };
        Consumer {
            client,
            topic,
            partition,
            options,
            start,
            position,
            started: false,
            high_watermark: None,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Where the consumer started.
    pub fn start(&self) -> StartFrom {
        self.start
    }

    /// The next offset to read; `None` before the first poll of a consumer started at the end.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The high watermark the last answer reported.
    pub fn high_watermark(&self) -> Option<u64> {
        self.high_watermark
    }

    /// Moves the position to `offset`.
    pub fn seek(&mut self, offset: u64) {
        self.position = Some(offset);
    }

    /// Fetches the next records (waiting up to `max_wait_ms` when there are none yet) and
    /// moves past them. An empty answer is normal.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        let mut offset = match self.position {
            Some(p) => p,
            None => self.resolve_end().await?,
        };
        let fetched = self
            .client
            .fetch(&self.topic, self.partition, offset, self.options)
            .await;
        let result = match fetched {
            Err(ClientError::OffsetOutOfRange(_))
                if !self.started && self.start == StartFrom::Beginning =>
            {
                offset = self.log_start().await?;
                self.client
                    .fetch(&self.topic, self.partition, offset, self.options)
                    .await?
            }
            other => other?,
        };
        self.started = true;
        self.high_watermark = Some(result.high_watermark);
        self.position = Some(next_position(offset, &result));
        Ok(result.records)
    }

    /// Options for a fetch that only wants the partition's bounds: no wait, little data.
    fn probe(&self, read: ReadMode) -> FetchOptions {
        FetchOptions {
            max_bytes: 1,
            max_wait_ms: 0,
            read,
        }
    }

    /// The first stored offset. Asked with an AP read beyond any end, which the server answers
    /// at once with the replica's bounds and no records (only CP reads past the high
    /// watermark are refused); the replica is the leader whenever it is known.
    async fn log_start(&self) -> Result<u64, ClientError> {
        let probe = self.probe(ReadMode::Ap);
        let result = self
            .client
            .fetch(&self.topic, self.partition, u64::MAX, probe)
            .await?;
        Ok(result.log_start_offset)
    }

    /// The current high watermark, read in the consumer's own mode from the log's first
    /// offset (0, or the log start when the first records were removed).
    async fn resolve_end(&mut self) -> Result<u64, ClientError> {
        let probe = self.probe(self.options.read);
        let result = match self
            .client
            .fetch(&self.topic, self.partition, 0, probe)
            .await
        {
            Err(ClientError::OffsetOutOfRange(_)) => {
                let start = self.log_start().await?;
                self.client
                    .fetch(&self.topic, self.partition, start, probe)
                    .await?
            }
            other => other?,
        };
        self.position = Some(result.high_watermark);
        Ok(result.high_watermark)
    }
}

/// The position after an answer to a fetch from `offset`: after the last record; or, when
/// nothing came back because `offset` is below the log start (records removed by
/// retention), the log start.
fn next_position(offset: u64, result: &FetchResult) -> u64 {
    if result.records.is_empty() && offset < result.log_start_offset {
        result.log_start_offset
    } else {
        result.next_offset.max(offset)
    }
}

impl Client {
    /// Reads records of one partition from `offset`: decodes each batch (checking its
    /// CRC-32C), numbers records from the batch's base offset and drops those below `offset`.
    /// `ReadMode::Cp` reads at the leader (following not-leader hints); `ReadMode::Ap` at any
    /// replica, the leader first when known, moving on to the others on failure.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        options: FetchOptions,
    ) -> Result<FetchResult, ClientError> {
        options.validate()?;
        let req = v1::FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: options.max_bytes,
            max_wait_ms: options.max_wait_ms,
            read: v1::ReadMode::from(options.read) as i32,
        };
        let deadline = self.request_timeout() + Duration::from_millis(options.max_wait_ms.into());
        let route = Route::for_read(options.read);
        self.partition_call(
            topic,
            partition,
            route,
            deadline,
            |mut c| {
                let req = req.clone();
                async move { c.fetch(request(req, deadline)).await }
            },
            |answer| decode_fetch(answer, partition, offset),
            |_, _| {},
        )
        .await
    }

    /// A consumer of one partition starting at `start`.
    pub fn consumer(
        &self,
        topic: impl Into<String>,
        partition: u32,
        start: StartFrom,
        options: FetchOptions,
    ) -> Consumer {
        Consumer::new(self.clone(), topic.into(), partition, start, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str, ts: i64) -> v1::Record {
        v1::Record {
            key: Some(Bytes::from(format!("k-{value}"))),
            value: Bytes::from(value.to_string()),
            headers: vec![v1::Header {
                key: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            timestamp_ms: ts,
        }
    }

    fn batch(base_offset: u64, records: &[v1::Record], append_time_ms: i64) -> v1::FetchedBatch {
        let body = fjord_proto::batch::encode(records);
        v1::FetchedBatch {
            base_offset,
            record_count: records.len() as u32,
            crc32c: fjord_proto::batch::checksum(&body),
            records: body,
            append_time_ms,
            offset_deltas: Vec::new(),
        }
    }

    fn answer(batches: Vec<v1::FetchedBatch>) -> v1::FetchResponse {
        v1::FetchResponse {
            batches,
            high_watermark: 20,
            log_start_offset: 0,
            node_id: 2,
        }
    }

    #[test]
    fn offsets_count_from_the_base_and_records_below_the_request_are_skipped() {
        let a = answer(vec![
            batch(10, &[record("a", 0), record("b", 0), record("c", 5)], 1_000),
            batch(13, &[record("d", 7)], 2_000),
        ]);
        let r = decode_fetch(a, 4, 11).unwrap();
        let got: Vec<(u64, &[u8], i64)> = r
            .records
            .iter()
            .map(|r| (r.offset, &r.value[..], r.timestamp_ms))
            .collect();
        assert_eq!(
            got,
            [
                (11, &b"b"[..], 1_000),
                (12, &b"c"[..], 5),
                (13, &b"d"[..], 7)
            ]
        );
        assert!(r.records.iter().all(|r| r.partition == 4));
        assert_eq!(r.records[0].key.as_deref(), Some(&b"k-b"[..]));
        assert_eq!(
            r.records[0].headers,
            [("h".to_string(), Bytes::from_static(b"v"))]
        );
        assert_eq!(r.next_offset, 14);
        assert_eq!((r.high_watermark, r.node_id), (20, 2));
    }

    #[test]
    fn an_empty_answer_keeps_the_offset() {
        let r = decode_fetch(answer(vec![]), 0, 7).unwrap();
        assert!(r.records.is_empty());
        assert_eq!(r.next_offset, 7);
    }

    #[test]
    fn a_flipped_bit_is_an_error_not_data() {
        let mut b = batch(0, &[record("a", 1)], 0);
        let mut bytes = b.records.to_vec();
        bytes[3] ^= 0x10;
        b.records = Bytes::from(bytes);
        let e = decode_fetch(answer(vec![b]), 0, 0).unwrap_err();
        assert!(matches!(e, ClientError::Corrupt(_)), "{e:?}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn a_wrong_record_count_is_corruption() {
        let mut b = batch(0, &[record("a", 1)], 0);
        b.record_count = 2;
        assert!(matches!(
            decode_fetch(answer(vec![b]), 0, 0),
            Err(ClientError::Corrupt(_))
        ));
    }

    #[test]
    fn overlapping_batches_are_refused() {
        let a = answer(vec![
            batch(5, &[record("a", 1), record("b", 1)], 0),
            batch(6, &[record("c", 1)], 0),
        ]);
        assert!(matches!(
            decode_fetch(a, 0, 0),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn position_skips_to_the_log_start_when_records_were_removed() {
        let mut r = decode_fetch(answer(vec![]), 0, 0).unwrap();
        r.log_start_offset = 9;
        assert_eq!(next_position(0, &r), 9);
        let r = decode_fetch(answer(vec![batch(3, &[record("a", 1)], 0)]), 0, 3).unwrap();
        assert_eq!(next_position(3, &r), 4);
    }
}
