//! After the final reads: each replica's own copy of each partition, read from that node
//! alone (AP fetches), recorded as `replica_read` operations for the checker's
//! replica-diverged rule (`fjord_harness::checker`).

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

/// Reads every replica (up) of every partition in `replicas` and records each read: `ok`
/// with what it holds, `fail` when the node could not be read to its end.
pub async fn read_replicas(
    topic: &str,
    replicas: &BTreeMap<u32, Vec<u64>>,
    (addresses, tls): (&BTreeMap<u64, String>, Option<&ClientTls>),
    down: &BTreeSet<u64>,
    rec: &Recorder,
) {
    for (&partition, nodes) in replicas {
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
            match read_replica(address, tls, topic, partition).await {
                Ok((log_start_offset, high_watermark, records)) => {
                    let op = Op::ReplicaRead {
                        partition,
                        node,
                        log_start_offset,
                        high_watermark,
                        records,
                    };
                    rec.record(REPLICA_READER, EventType::Ok, op, None);
                }
                Err(why) => rec.record(REPLICA_READER, EventType::Fail, invoke, Some(why)),
            }
        }
    }
    rec.flush();
}

/// Node `address`'s own copy of `partition`: its log start, its high watermark as it first
/// answered, and every record from the start up to that watermark.
async fn read_replica(
    address: &str,
    tls: Option<&ClientTls>,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64, Vec<ReadRecord>), String> {
    let endpoint = crate::tls::endpoint(address, tls, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    let channel = tokio::time::timeout(CALL_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let mut c = FjordClient::new(channel).max_decoding_message_size(64 << 20);
    let (start, end) = tokio::time::timeout(
        CALL_TIMEOUT,
        crate::retention::own_bounds(&mut c, topic, partition),
    )
    .await
    .map_err(|_| "ListOffsets timed out".to_string())?
    .map_err(|s| format!("ListOffsets: {}", s.message()))?;
    let mut records = Vec::new();
    let mut next = start;
    for _ in 0..MAX_FETCHES {
        if next >= end {
            return Ok((start, end, records));
        }
        let r = fetch(&mut c, topic, partition, next).await?;
        if r.batches.is_empty() {
            return Err(format!(
                "node {address} answered no batch at offset {next} below its high watermark {end}"
            ));
        }
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
