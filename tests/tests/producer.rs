//! The producer against a real 3-node cluster with several batches in flight per partition:
//! the server handles concurrent produce requests in any order, so batches may overtake one
//! another on the way into the log; the client's sequences must still put every record at
//! a dense offset in send order, none twice.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;

use fjord_client::{FetchOptions, ProducerConfig, ProducerRecord, ReadMode, StartFrom};
use fjord_tests::{Cluster, serial};

const PARTITIONS: u32 = 3;
const RECORDS_PER_PARTITION: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_batches_in_flight_keep_send_order_without_duplicates() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    client
        .create_topic("pipelined", PARTITIONS, 3)
        .await
        .unwrap();
    // Small batches, so that many are cut while five are in flight.
    let producer = client
        .producer(
            "pipelined",
            ProducerConfig {
                max_batch_records: 16,
                linger_ms: 1,
                max_in_flight_batches: 5,
                ..Default::default()
            },
        )
        .unwrap();

    let mut deliveries = Vec::new();
    for i in 0..RECORDS_PER_PARTITION {
        for p in 0..PARTITIONS {
            let record = ProducerRecord::new(format!("{p}-{i}")).with_partition(p);
            deliveries.push((p, i, producer.enqueue(record).await.unwrap()));
        }
    }
    let mut acked: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (p, i, d) in deliveries {
        let at = d
            .await
            .unwrap_or_else(|e| panic!("record {i} of partition {p}: {e}"));
        assert_eq!(at.partition, p);
        acked.entry(p).or_default().push(at.offset);
    }
    for (p, offsets) in &acked {
        assert!(
            offsets.iter().copied().eq(0..RECORDS_PER_PARTITION),
            "partition {p}: offsets are not 0.. in send order: {:?}",
            &offsets[..offsets.len().min(50)]
        );
    }

    // The log holds each record once, in send order, at the acknowledged offset.
    for p in 0..PARTITIONS {
        let options = FetchOptions {
            max_wait_ms: 0,
            read: ReadMode::Cp,
            ..Default::default()
        };
        let mut consumer = client.consumer("pipelined", p, StartFrom::Beginning, options);
        let mut read = Vec::new();
        loop {
            let records = consumer.poll().await.unwrap();
            if records.is_empty() {
                break;
            }
            read.extend(
                records
                    .into_iter()
                    .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned())),
            );
        }
        let expected: Vec<(u64, String)> = (0..RECORDS_PER_PARTITION)
            .map(|i| (i, format!("{p}-{i}")))
            .collect();
        assert_eq!(read.len(), expected.len(), "partition {p}: record count");
        assert!(
            read == expected,
            "partition {p}: log differs from send order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_under_five_batches_in_flight_duplicates_and_reorders_nothing() {
    const RECORDS: u64 = 4_000;
    let _serial = serial();
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    client.create_topic("failover", 1, 3).await.unwrap();
    let producer = client
        .producer(
            "failover",
            ProducerConfig {
                max_batch_records: 8,
                linger_ms: 1,
                max_in_flight_batches: 5,
                ..Default::default()
            },
        )
        .unwrap();

    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        if i == RECORDS / 4 {
            let t = client.describe_topic("failover").await.unwrap();
            cluster.kill(t.partitions[0].leader.expect("a leader"));
        }
        let record = ProducerRecord::new(format!("{i}")).with_partition(0);
        deliveries.push((i, producer.enqueue(record).await.unwrap()));
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    for (i, d) in deliveries {
        match d.await {
            Ok(at) => acked.push((at.offset, i)),
            Err(e) => {
                assert!(
                    e.is_retryable() || e.is_outcome_unknown(),
                    "record {i}: fatal error during failover: {e}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        acked.len() as u64 >= RECORDS * 3 / 4,
        "only {} of {RECORDS} records acknowledged around one leader kill ({failed} failed)",
        acked.len()
    );
    assert!(
        acked.windows(2).all(|w| w[0].0 < w[1].0),
        "acknowledged at increasing offsets in send order"
    );

    let options = FetchOptions {
        max_wait_ms: 0,
        read: ReadMode::Cp,
        ..Default::default()
    };
    let mut consumer = client.consumer("failover", 0, StartFrom::Beginning, options);
    let mut log: Vec<(u64, u64)> = Vec::new();
    loop {
        let records = consumer.poll().await.unwrap();
        if records.is_empty() {
            break;
        }
        log.extend(records.iter().map(|r| {
            let i = String::from_utf8_lossy(&r.value).parse::<u64>().unwrap();
            (r.offset, i)
        }));
    }
    assert!(
        log.windows(2).all(|w| w[0].1 < w[1].1),
        "the log holds each record once, in send order"
    );
    let by_offset: BTreeMap<u64, u64> = log.into_iter().collect();
    for (offset, i) in &acked {
        assert_eq!(
            by_offset.get(offset),
            Some(i),
            "record {i} acknowledged at {offset}"
        );
    }
}
