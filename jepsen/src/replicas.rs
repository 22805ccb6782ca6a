//! After the final reads: each replica's own copy of each partition, read from that node
//! alone (AP fetches), recorded as `replica_read` operations for the checker's
//! replica-diverged rule (`fjord_harness::checker`).
//!
//! A replica is first given time to catch up (its own high watermark reaching the end the
//! final read reached, or a node still rebuilding answering at all, within
//! [`CATCH_UP_WITHIN`] for the whole phase), so that the rule
//! compares all of it; one still behind is read as far as it goes (a note says so). A
//! replica that answers no batch below its own high watermark is recorded `ok` with what it
//! served up to there and that high watermark: the rule then finds the records it lacks
//! (before, such a read was recorded `fail` and judged nothing, so a replica that had lost
//! its log, yet claimed it, passed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fjord_client::ClientTls;
use fjord_harness::history::{EventType, Op, ReadRecord};
use fjord_proto::v1;
use fjord_proto::v1::fjord_client::FjordClient;

use crate::workload::Recorder;

/// One call to a replica, at most.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetches of one replica's copy, at most (4 MiB each: 16 GiB, far beyond any run's log).
const MAX_FETCHES: usize = 4_096;
/// The process the replica reads are recorded as.
pub const REPLICA_READER: u32 = u32::MAX - 200;
/// How long the replicas together get to catch up with the final read's ends.
pub const CATCH_UP_WITHIN: Duration = Duration::from_secs(30);
/// How often a replica behind is asked its bounds again while it catches up.
const CATCH_UP_POLL: Duration = Duration::from_millis(50);
/// Empty answers below its high watermark, in a row at one offset, after which a replica is
/// taken to lack what it does not serve.
const EMPTY_ANSWERS: u32 = 5;

/// What reading one replica gave: its log start, its high watermark, the records it served
/// from the start up to that watermark, and why it stopped short, if it did.
struct ReplicaCopy {
    log_start_offset: u64,
    high_watermark: u64,
    records: Vec<ReadRecord>,
    short: Option<String>,
}

/// Reads every replica (up) of every partition in `replicas` and records each read: `ok`
/// with what it holds (and, as the event's error, why it stopped short of its high
/// watermark, if it did), `fail` when the node could not be asked or answered an error.
/// `ends`: the end each partition's final read reached, which each replica is given until
/// [`CATCH_UP_WITHIN`] (for all of them) to reach. Returns notes for the run's report.
pub async fn read_replicas(
    topic: &str,
    replicas: &BTreeMap<u32, Vec<u64>>,
    (addresses, tls): (&BTreeMap<u64, String>, Option<&ClientTls>),
    down: &BTreeSet<u64>,
    ends: &BTreeMap<u32, u64>,
    rec: &Recorder,
) -> Vec<String> {
    let catch_up_until = tokio::time::Instant::now() + CATCH_UP_WITHIN;
    let mut notes = Vec::new();
    for (&partition, nodes) in replicas {
        let want = ends.get(&partition).copied().unwrap_or(0);
        for &node in nodes.iter().filter(|n| !down.contains(n)) {
            let Some(address) = addresses.get(&node) else {
                continue;
            };
            let invoke = Op::ReplicaRead {
                partition,
                node,
                log_start_offset: 0,
                high_watermark: 0,
                records: Vec::new(),
            };
            rec.record(REPLICA_READER, EventType::Invoke, invoke.clone(), None);
            let target = (want, catch_up_until);
            match read_replica(address, tls, topic, partition, target).await {
                Ok(copy) => {
                    if copy.high_watermark < want {
                        notes.push(format!(
                            "replica read: node {node} of partition {partition} was still at \
                             {} of the final read's {want} after the catch-up wait; compared \
                             up to there",
                            copy.high_watermark
                        ));
                    }
                    if let Some(why) = &copy.short {
                        notes.push(format!("replica read: {why}"));
                    }
                    let op = Op::ReplicaRead {
                        partition,
                        node,
                        log_start_offset: copy.log_start_offset,
                        high_watermark: copy.high_watermark,
                        records: copy.records,
                    };
                    rec.record(REPLICA_READER, EventType::Ok, op, copy.short);
                }
                Err(why) => rec.record(REPLICA_READER, EventType::Fail, invoke, Some(why)),
            }
        }
    }
    rec.flush();
    notes
}

/// Node `address`'s own copy of `partition`: its log start, its high watermark once it
/// reached `want` (or as it stood at `until`), and every record from the start up to that
/// watermark, or up to where it answered no batch (then `short` says so).
async fn read_replica(
    address: &str,
    tls: Option<&ClientTls>,
    topic: &str,
    partition: u32,
    (want, until): (u64, tokio::time::Instant),
) -> Result<ReplicaCopy, String> {
    let endpoint = crate::tls::endpoint(address, tls, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    let channel = tokio::time::timeout(CALL_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let mut c = FjordClient::new(channel).max_decoding_message_size(64 << 20);
    // A node still rebuilding (a learner catching up after a disk loss) refuses; it gets
    // the same time to finish.
    let (mut start, end) = loop {
        let asked = bounds(&mut c, topic, partition).await;
        let late = tokio::time::Instant::now() >= until;
        match asked {
            Ok((start, end)) if end >= want || late => break (start, end),
            Err(e) if late => return Err(e),
            _ => tokio::time::sleep(CATCH_UP_POLL).await,
        }
    };
    let mut records = Vec::new();
    let mut next = start;
    let mut empty = 0u32;
    for _ in 0..MAX_FETCHES {
        if next >= end {
            return Ok(ReplicaCopy {
                log_start_offset: start,
                high_watermark: end,
                records,
                short: None,
            });
        }
        let r = fetch(&mut c, topic, partition, next).await?;
        if r.batches.is_empty() {
            // A purge may have raced the read (retention moved the start), or the node's own
            // write of a batch may still be on its way: ask its bounds again, and try again.
            let (now_start, _) = bounds(&mut c, topic, partition).await?;
            if now_start > next {
                start = now_start;
                next = now_start;
                records.retain(|r: &ReadRecord| r.offset >= now_start);
                continue;
            }
            empty += 1;
            if empty < EMPTY_ANSWERS {
                tokio::time::sleep(CATCH_UP_POLL).await;
                continue;
            }
            // What it served is judged against the final read up to the high watermark it
            // claimed: the records it did not serve are ones it lacks.
            return Ok(ReplicaCopy {
                log_start_offset: start,
                high_watermark: end,
                records,
                short: Some(format!(
                    "node {address} answered no batch at offset {next} of partition \
                     {partition}, below its high watermark {end}, {EMPTY_ANSWERS} times"
                )),
            });
        }
        empty = 0;
        for b in r.batches {
            if !b.offset_deltas.is_empty() {
                return Err(
                    "a compacted batch (replica reads are for runs without compaction)".into(),
                );
            }
            let decoded = fjord_proto::batch::decode(&b.records, b.crc32c)
                .map_err(|e| format!("offset {}: {e}", b.base_offset))?;
            for (i, rec) in decoded.iter().enumerate() {
                let offset = b.base_offset + i as u64;
                if offset >= next && offset < end {
                    records.push(fjord_harness::workload::read_record(offset, &rec.value));
                }
            }
            next = next.max(b.base_offset + u64::from(b.record_count));
        }
    }
    Err(format!("more than {MAX_FETCHES} fetches"))
}

/// The node's own log start and high watermark of `partition`, within [`CALL_TIMEOUT`].
async fn bounds(
    c: &mut FjordClient<tonic::transport::Channel>,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64), String> {
    tokio::time::timeout(
        CALL_TIMEOUT,
        crate::retention::own_bounds(c, topic, partition),
    )
    .await
    .map_err(|_| "ListOffsets timed out".to_string())?
    .map_err(|s| format!("ListOffsets: {}", s.message()))
}

async fn fetch(
    c: &mut FjordClient<tonic::transport::Channel>,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<v1::FetchResponse, String> {
    let req = v1::FetchRequest {
        topic: topic.to_string(),
        partition,
        offset,
        max_bytes: 4 << 20,
        max_wait_ms: 0,
        read: v1::ReadMode::ReadAp as i32,
    };
    tokio::time::timeout(CALL_TIMEOUT, c.fetch(req))
        .await
        .map_err(|_| format!("fetch at {offset} timed out"))?
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("fetch at {offset}: {:?}: {}", s.code(), s.message()))
}
