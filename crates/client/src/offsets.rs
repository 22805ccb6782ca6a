//! Finding offsets (earliest, latest, by time) and deleting records below an offset.

use std::time::Duration;

use fjord_proto::v1;

use crate::client::{Client, Route, request};
use crate::config::ReadMode;
use crate::error::ClientError;

/// Which offset [`Client::list_offset`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset: the first offset still stored.
    Earliest,
    /// The high watermark: the offset the next record gets.
    Latest,
    /// The first record whose timestamp (ms since the Unix epoch) is at or after this.
    Time(i64),
}

/// What [`Client::list_offset`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset; `None` only for [`OffsetSpec::Time`] when no record reached the time.
    pub offset: Option<u64>,
    /// For [`OffsetSpec::Time`]: the found record's timestamp; `None` too when the record
    /// that reached the time is no longer stored (deleted or compacted away) and the offset is
    /// the first kept after it (the server's -1).
    pub timestamp_ms: Option<i64>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

impl ListedOffset {
    /// Where to start reading: the offset, or the high watermark when none was found.
    pub fn or_end(&self) -> u64 {
        self.offset.unwrap_or(self.high_watermark)
    }
}

impl Client {
    /// Finds an offset of one partition (Kafka's ListOffsets / offsetsForTimes).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
        read: ReadMode,
    ) -> Result<ListedOffset, ClientError> {
        let (query, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (v1::OffsetQuery::OffsetEarliest, 0),
            OffsetSpec::Latest => (v1::OffsetQuery::OffsetLatest, 0),
            OffsetSpec::Time(t) => (v1::OffsetQuery::OffsetByTime, t),
        };
        let req = v1::ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            query: query as i32,
            timestamp_ms,
            read: v1::ReadMode::from(read) as i32,
        };
        let deadline = self.request_timeout();
        let route = Route::for_read(read);
        self.partition_call(
            topic,
            partition,
            route,
            deadline,
            |mut c| {
                let req = req.clone();
                async move { c.list_offsets(request(req, deadline)).await }
            },
            |a: v1::ListOffsetsResponse| {
                Ok(ListedOffset {
                    offset: a.found.then_some(a.offset),
                    timestamp_ms: (a.found
                        && matches!(spec, OffsetSpec::Time(_))
                        && a.timestamp_ms != -1)
                        .then_some(a.timestamp_ms),
                    log_start_offset: a.log_start_offset,
                    high_watermark: a.high_watermark,
                })
            },
            |_, _| {},
        )
        .await
    }

    /// Deletes one partition's records below `before` (`None`: every committed record), CP;
    /// returns the new log start offset. A timeout leaves the outcome unknown; asking again
    /// is safe (the start never moves back).
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        before: Option<u64>,
    ) -> Result<u64, ClientError> {
        let timeout = self.request_timeout();
        let req = v1::DeleteRecordsRequest {
            topic: topic.to_string(),
            partition,
            before_offset: before.unwrap_or(0),
            all: before.is_none(),
            timeout_ms: timeout.as_millis().min(60_000) as u32,
        };
        let deadline = timeout + Duration::from_secs(1);
        self.partition_call(
            topic,
            partition,
            Route::Leader,
            deadline,
            |mut c| {
                let req = req.clone();
                async move { c.delete_records(request(req, deadline)).await }
            },
            |a: v1::DeleteRecordsResponse| Ok(a.log_start_offset),
            |_, _| {},
        )
        .await
    }
}
