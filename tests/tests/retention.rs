//! The log's lifecycle on real 3-node clusters: DeleteRecords, the log start offset alike on
//! every replica, reads below it refused with the start offset, and a follower that was down
//! while the start moved past its log catching up by installing a snapshot.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_client::{
    Acks, Client, FetchOptions, OffsetSpec, ProducerConfig, ProducerRecord, ReadMode, StartFrom,
};
use fjord_proto::v1;
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_tests::{Cluster, serial, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// A 3-node cluster whose retention rounds run every 100 ms.
async fn retention_cluster() -> Cluster {
    let flags = ["--retention-check-interval-ms", "100"];
    Cluster::start_with_args(3, fjord_tests::Timing::FAST, &flags).await
}

/// Creates `topic` (1 partition, 3 replicas) with the settings `set`.
async fn topic_with(client: &Client, topic: &str, set: &[(&str, &str)]) {
    client.create_topic(topic, 1, 3).await.unwrap();
    client
        .alter_topic_config(topic, set, &[] as &[&str])
        .await
        .unwrap();
}

/// A CP producer to `topic`.
fn cp_producer(client: &Client, topic: &str) -> fjord_client::Producer {
    let config = ProducerConfig {
        acks: Acks::Cp,
        ..Default::default()
    };
    client.producer(topic, config).unwrap()
}

/// Produces `values` to partition 0 of `topic`, CP, one at a time.
async fn produce(client: &Client, topic: &str, values: impl IntoIterator<Item = String>) {
    let producer = cp_producer(client, topic);
    for v in values {
        producer
            .send(ProducerRecord::new(v).with_partition(0))
            .await
            .expect("send");
    }
}

/// What node `addr`'s own replica holds of partition 0, read AP from it alone: its log start
/// offset, its high watermark, and every record from the start on as `(offset, key, value)`,
/// compacted batches read at the offsets they list.
async fn replica_records(
    addr: &str,
    topic: &str,
) -> Option<(u64, u64, Vec<(u64, String, String)>)> {
    let mut c = FjordClient::connect(format!("http://{addr}")).await.ok()?;
    let listed = c
        .list_offsets(v1::ListOffsetsRequest {
            topic: topic.into(),
            partition: 0,
            query: v1::OffsetQuery::OffsetEarliest as i32,
            read: v1::ReadMode::ReadAp as i32,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let (start, hw) = (listed.log_start_offset, listed.high_watermark);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    let mut offset = start;
    while offset < hw {
        let r = c
            .fetch(v1::FetchRequest {
                topic: topic.into(),
                partition: 0,
                offset,
                read: v1::ReadMode::ReadAp as i32,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        if r.batches.is_empty() {
            break;
        }
        for b in r.batches {
            let records = fjord_proto::batch::decode(&b.records, b.crc32c).expect("CRC");
            let deltas: Vec<u64> = if b.offset_deltas.is_empty() {
                (0..records.len() as u64).collect()
            } else {
                b.offset_deltas.iter().map(|d| u64::from(*d)).collect()
            };
            for (d, rec) in deltas.into_iter().zip(records) {
                let o = b.base_offset + d;
                if o >= offset {
                    let key = text(rec.key.as_deref().unwrap_or(b""));
                    out.push((o, key, text(&rec.value)));
                }
            }
            offset = b.base_offset + b.record_count as u64;
        }
    }
    Some((start, hw, out))
}

/// [`replica_records`] without keys, values as bytes.
async fn replica(addr: &str, topic: &str) -> Option<(u64, u64, Vec<(u64, Vec<u8>)>)> {
    let (start, hw, records) = replica_records(addr, topic).await?;
    let values = records
        .into_iter()
        .map(|(o, _, v)| (o, v.into_bytes()))
        .collect();
    Some((start, hw, values))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_start_alike_and_reads_below_it_are_out_of_range() {
    let _serial = serial();
    let cluster = retention_cluster().await;
    let client = cluster.client();
    client.create_topic("lifecycle", 1, 3).await.unwrap();
    produce(&client, "lifecycle", (0..50).map(|i| format!("v{i}"))).await;

    let start = client
        .delete_records("lifecycle", 0, Some(20))
        .await
        .unwrap();
    assert_eq!(start, 20);
    // Asking again, or lower, moves nothing back.
    assert_eq!(
        client
            .delete_records("lifecycle", 0, Some(5))
            .await
            .unwrap(),
        20
    );
    // Beyond the high watermark: refused.
    let err = client
        .delete_records("lifecycle", 0, Some(51))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("beyond the end"), "{err}");

    let earliest = client
        .list_offset("lifecycle", 0, OffsetSpec::Earliest, ReadMode::Cp)
        .await
        .unwrap();
    assert_eq!((earliest.offset, earliest.high_watermark), (Some(20), 50));

    // A fetch below the start: OUT_OF_RANGE, the start in the message and the metadata.
    let leader = client.describe_topic("lifecycle").await.unwrap().partitions[0]
        .leader
        .unwrap();
    let addr = &cluster.nodes[cluster.node_index(leader)].addr;
    let mut raw = FjordClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let status = raw
        .fetch(v1::FetchRequest {
            topic: "lifecycle".into(),
            partition: 0,
            offset: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("log start offset 20"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("fjord-log-start-offset")
            .unwrap()
            .to_str()
            .unwrap(),
        "20"
    );

    // Every replica's log starts at 20 and holds the same records after it.
    let want: Vec<(u64, Vec<u8>)> = (20..50)
        .map(|i| (i, format!("v{i}").into_bytes()))
        .collect();
    for node in &cluster.nodes {
        let got = wait_for("the replica to apply the deletion", DEADLINE, || {
            let addr = node.addr.clone();
            async move {
                replica(&addr, "lifecycle")
                    .await
                    .filter(|(start, hw, _)| *start == 20 && *hw == 50)
            }
        })
        .await;
        assert_eq!(got.2, want, "node {}", node.id);
    }

    // Everything: the start is the high watermark, and a consumer from the beginning waits
    // at it.
    assert_eq!(
        client.delete_records("lifecycle", 0, None).await.unwrap(),
        50
    );
    let from_start = client
        .list_offset("lifecycle", 0, OffsetSpec::Earliest, ReadMode::Cp)
        .await
        .unwrap();
    assert_eq!(from_start.offset, Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_while_the_start_moved_past_its_log_installs_a_snapshot() {
    let _serial = serial();
    let mut cluster = retention_cluster().await;
    let client = cluster.client();
    client.create_topic("snap", 1, 3).await.unwrap();
    produce(&client, "snap", (0..30).map(|i| format!("a{i}"))).await;
    let leader = client.describe_topic("snap").await.unwrap().partitions[0]
        .leader
        .unwrap();
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .unwrap();
    // The follower has the first 30 records; then it is down while 200 more arrive and the
    // start moves to 200, past everything it holds.
    wait_for("the follower to hold 30 records", DEADLINE, || {
        let addr = cluster.nodes[cluster.node_index(follower)].addr.clone();
        async move { replica(&addr, "snap").await.filter(|(_, hw, _)| *hw == 30) }
    })
    .await;
    cluster.kill(follower);
    produce(&client, "snap", (30..230).map(|i| format!("b{i}"))).await;
    assert_eq!(
        client.delete_records("snap", 0, Some(200)).await.unwrap(),
        200
    );
    // The leader purges its log behind the start (once no replication reads it): it can
    // then only bring the returning follower up to date with a snapshot.
    wait_for("the leader to purge its log", DEADLINE, || {
        let log = cluster.log_text(leader);
        // Any group but the metadata group (0): the topic's only partition.
        let purged = log
            .lines()
            .any(|l| l.contains("purging the log") && !l.contains("group=0 "));
        async move { purged.then_some(()) }
    })
    .await;
    cluster.restart(follower);
    let want: Vec<(u64, Vec<u8>)> = (200..230)
        .map(|i| (i, format!("b{i}").into_bytes()))
        .collect();
    let got = wait_for("the restarted follower to catch up", DEADLINE, || {
        let addr = cluster.nodes[cluster.node_index(follower)].addr.clone();
        async move {
            replica(&addr, "snap")
                .await
                .filter(|(start, hw, _)| *start == 200 && *hw == 230)
        }
    })
    .await;
    assert_eq!(got.2, want, "the follower's log from the start on");
    let log = cluster.log_text(follower);
    assert!(
        log.contains("installing a partition snapshot"),
        "the follower caught up without a snapshot: the leader's log was not purged"
    );
    // It keeps replicating after the snapshot.
    produce(&client, "snap", (230..240).map(|i| format!("c{i}"))).await;
    wait_for(
        "the follower to replicate after the snapshot",
        DEADLINE,
        || {
            let addr = cluster.nodes[cluster.node_index(follower)].addr.clone();
            async move {
                replica(&addr, "snap")
                    .await
                    .filter(|(_, hw, r)| *hw == 240 && r.len() == 40)
            }
        },
    )
    .await;
}

/// Runs `fjord ARGS --format json` against the cluster; its stdout lines as JSON values.
fn cli_json(cluster: &Cluster, args: &[&str]) -> Vec<serde_json::Value> {
    let out = cluster
        .cli()
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("running fjord");
    assert!(
        out.status.success(),
        "fjord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_time_uses_the_running_largest_timestamp() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    // The records are stamped in 1970: without this, the default retention (7 days) would
    // delete them.
    topic_with(&client, "times", &[("retention_ms", "-1")]).await;
    let producer = cp_producer(&client, "times");
    // Offsets 0..6 with producer timestamps out of order: 1000, 3000, 2000, 4000, 2500, 5000.
    let stamps = [1000, 3000, 2000, 4000, 2500, 5000];
    for (i, ts) in stamps.iter().enumerate() {
        producer
            .send(
                ProducerRecord::new(format!("t{i}"))
                    .with_partition(0)
                    .with_timestamp_ms(*ts),
            )
            .await
            .unwrap();
    }
    let at = |t: i64| {
        let client = client.clone();
        async move {
            client
                .list_offset("times", 0, OffsetSpec::Time(t), ReadMode::Cp)
                .await
                .unwrap()
        }
    };
    // The first record at or after the time, searched from the first batch whose running
    // largest timestamp reached it: 2000 is first reached by offset 1 (3000).
    assert_eq!(
        (at(2000).await.offset, at(2000).await.timestamp_ms),
        (Some(1), Some(3000))
    );
    assert_eq!(at(500).await.offset, Some(0));
    assert_eq!(at(3500).await.offset, Some(3));
    assert_eq!(at(4500).await.offset, Some(5));
    let none = at(6000).await;
    assert_eq!((none.offset, none.or_end()), (None, 6));

    // The CLI: offsets at a time, a consumer from a time, and a deletion.
    let rows = cli_json(&cluster, &["topic", "offsets", "times", "--time", "3500"]);
    assert_eq!(rows[0]["at_time"], 3);
    let read = cli_json(
        &cluster,
        &["consume", "times", "--from-time", "3500", "--count", "3"],
    );
    let offsets: Vec<u64> = read.iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [3, 4, 5]);
    let rows = cli_json(
        &cluster,
        &["topic", "delete-records", "times", "--before", "2"],
    );
    assert_eq!(rows[0]["log_start_offset"], 2);
    let rows = cli_json(&cluster, &["topic", "offsets", "times"]);
    assert_eq!(
        (rows[0]["earliest"].clone(), rows[0]["latest"].clone()),
        (2.into(), 6.into())
    );
    // Searching below the start answers the first record kept.
    assert_eq!(at(500).await.offset, Some(2));
    // A consumer group's offsets reset to a time (the coordinator looks each partition up).
    let rows = cli_json(
        &cluster,
        &[
            "group",
            "reset-offsets",
            "replayers",
            "--topic",
            "times",
            "--to-time",
            "3500",
        ],
    );
    assert_eq!(
        (rows[0]["partition"].clone(), rows[0]["offset"].clone()),
        (0.into(), 3.into())
    );
    let rows = cli_json(
        &cluster,
        &[
            "group",
            "reset-offsets",
            "replayers",
            "--topic",
            "times",
            "--to-time",
            "9999",
        ],
    );
    assert_eq!(rows[0]["offset"], 6, "no record that recent: the end");

    // The record that reached a time deleted, and the next one older (its producer's clock
    // behind): the answer is the first record kept after it, whose own time is not the one
    // asked for, so no timestamp is given.
    for (i, ts) in [(6, 6000), (7, 1000)] {
        producer
            .send(
                ProducerRecord::new(format!("t{i}"))
                    .with_partition(0)
                    .with_timestamp_ms(ts),
            )
            .await
            .unwrap();
    }
    let rows = cli_json(
        &cluster,
        &["topic", "delete-records", "times", "--before", "7"],
    );
    assert_eq!(rows[0]["log_start_offset"], 7);
    let after = at(5500).await;
    assert_eq!((after.offset, after.timestamp_ms), (Some(7), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_by_size_moves_the_start_on_every_replica() {
    let _serial = serial();
    let cluster = retention_cluster().await;
    let client = cluster.client();

    // By time: records stamped two minutes ago expire under a one-minute retention, records
    // stamped now stay.
    topic_with(&client, "by-time", &[("retention_ms", "60000")]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let producer = cp_producer(&client, "by-time");
    for i in 0..25 {
        let ts = if i < 20 { now - 120_000 } else { now };
        producer
            .send(
                ProducerRecord::new(format!("r{i}"))
                    .with_partition(0)
                    .with_timestamp_ms(ts),
            )
            .await
            .unwrap();
    }
    let want: Vec<(u64, Vec<u8>)> = (20..25)
        .map(|i| (i, format!("r{i}").into_bytes()))
        .collect();
    for node in &cluster.nodes {
        let got = wait_for("the expired records to be deleted", DEADLINE, || {
            let addr = node.addr.clone();
            async move {
                replica(&addr, "by-time")
                    .await
                    .filter(|(start, hw, _)| *start == 20 && *hw == 25)
            }
        })
        .await;
        assert_eq!(got.2, want, "node {}", node.id);
    }

    fill_past_one_mib(&cluster, &client, "by-size").await;
}

/// Creates `topic` with a `retention_bytes` of 1 MiB (the smallest limit) and writes 3 MiB
/// in 48 records of 64 KiB: every replica's start moves, and what it keeps, once the writes
/// ended, fits the limit (a move is due past 15/16 of it and keeps at most 7/8), is not less
/// than 3/4 of it, and is the newest records.
async fn fill_past_one_mib(cluster: &Cluster, client: &Client, topic: &str) {
    topic_with(client, topic, &[("retention_bytes", "1048576")]).await;
    let value = "x".repeat(64 << 10);
    produce(client, topic, (0..48).map(|_| value.clone())).await;
    for node in &cluster.nodes {
        let (start, hw, records) = wait_for("the oldest records to be deleted", DEADLINE, || {
            let addr = node.addr.clone();
            async move {
                replica(&addr, topic)
                    .await
                    .filter(|(start, hw, _)| *hw == 48 && *start > 0)
            }
        })
        .await;
        let kept = (hw - start) * (64 << 10);
        assert!(
            (3 << 18..=1 << 20).contains(&kept),
            "node {} keeps {kept} bytes",
            node.id
        );
        assert_eq!(records.len() as u64, hw - start);
        assert!(records.iter().all(|(_, v)| *v == value.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_acts_when_the_limit_is_passed_not_at_the_next_round() {
    let _serial = serial();
    // Rounds every 5 minutes (the longest allowed): after the first, at start-up, none runs
    // within this test, so only the leader's size trigger can move the start.
    let flags = ["--retention-check-interval-ms", "300000"];
    let cluster = Cluster::start_with_args(3, fjord_tests::Timing::FAST, &flags).await;
    let client = cluster.client();
    fill_past_one_mib(&cluster, &client, "by-size").await;
    let value = "x".repeat(64 << 10);
    // Written on: the start keeps following, and settles alike on every replica.
    produce(&client, "by-size", (0..48).map(|_| value.clone())).await;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let starts = wait_for("the replicas to settle on one start", DEADLINE, || {
        let addrs = addrs.clone();
        async move {
            let mut starts = Vec::new();
            for addr in &addrs {
                let (start, hw, _) = replica(addr, "by-size").await?;
                (hw == 96).then_some(())?;
                starts.push(start);
            }
            starts.windows(2).all(|w| w[0] == w[1]).then_some(starts)
        }
    })
    .await;
    let kept = (96 - starts[0]) * (64 << 10);
    assert!(
        (3 << 18..=1 << 20).contains(&kept),
        "the replicas keep {kept} bytes from {starts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_last_record_of_each_key_on_every_replica() {
    let _serial = serial();
    let cluster = retention_cluster().await;
    let client = cluster.client();
    let compact = [("cleanup_policy", "compact"), ("delete_retention_ms", "1")];
    topic_with(&client, "latest", &compact).await;
    let producer = cp_producer(&client, "latest");
    // 20,000 records over 100 keys, 100-byte values; keys 0 to 9 end with a tombstone
    // halfway (records 10,000 to 10,009) and get nothing after.
    const N: usize = 20_000;
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    let mut deliveries = Vec::new();
    for i in 0..N {
        let k = i % 100;
        if k < 10 && i >= 10_000 + 100 {
            continue;
        }
        let key = format!("key-{k:02}");
        let value = if k < 10 && i >= 10_000 {
            String::new()
        } else {
            format!("{i:0>100}")
        };
        if value.is_empty() {
            last.remove(&key);
        } else {
            last.insert(key.clone(), value.clone());
        }
        let record = ProducerRecord::new(value).with_key(key).with_partition(0);
        deliveries.push(producer.enqueue(record).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    // Every replica, read from offset 0: the last value of every key, tombstoned keys gone,
    // at most the 90 live keys plus the uncompacted tail (under 64 KiB: 650 records).
    let want: Vec<(String, String)> = last.into_iter().collect();
    for node in &cluster.nodes {
        let (_, hw, records) = wait_for("the replica to compact", DEADLINE, || {
            let addr = node.addr.clone();
            async move {
                replica_records(&addr, "latest")
                    .await
                    .filter(|(_, _, r)| r.len() <= 90 + 650)
            }
        })
        .await;
        assert!(
            hw as usize >= N - 9_900 + 10,
            "node {}: high watermark {hw}",
            node.id
        );
        // Offsets increase; each key's last record read is its last value.
        assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
        let mut got: std::collections::BTreeMap<String, String> = Default::default();
        for (_, k, v) in &records {
            if v.is_empty() {
                got.remove(k);
            } else {
                got.insert(k.clone(), v.clone());
            }
        }
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            want,
            "node {}",
            node.id
        );
        // No tombstoned key is left at all below the tail: its tombstone went too.
        let tombstoned = records
            .iter()
            .filter(|(o, k, _)| *o < 10_100 && k.as_str() < "key-10")
            .count();
        assert_eq!(tombstoned, 0, "node {}: tombstoned keys left", node.id);
    }
    // Every replica ends with the same records, offsets included: compaction runs on each
    // from the same replicated requests over the same log.
    wait_for("the replicas to hold the same records", DEADLINE, || {
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
        async move {
            let mut held = Vec::new();
            for addr in &addrs {
                held.push(replica_records(addr, "latest").await?.2);
            }
            held.windows(2).all(|w| w[0] == w[1]).then_some(())
        }
    })
    .await;
    // The Rust client's consumer reads the compacted partition from the start too, and sees
    // the last value of every key.
    let options = FetchOptions {
        max_wait_ms: 0,
        ..Default::default()
    };
    let mut consumer = client.consumer("latest", 0, StartFrom::Beginning, options);
    let mut read = 0;
    let mut got: std::collections::BTreeMap<String, String> = Default::default();
    for _ in 0..10_000 {
        let batch = consumer.poll().await.unwrap();
        if batch.is_empty() {
            break;
        }
        read += batch.len();
        for r in batch {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or(b"")).into_owned();
            if r.value.is_empty() {
                got.remove(&key);
            } else {
                got.insert(key, String::from_utf8_lossy(&r.value).into_owned());
            }
        }
    }
    assert!((90..=90 + 650).contains(&read), "the consumer read {read}");
    assert_eq!(got.into_iter().collect::<Vec<_>>(), want, "the consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_moves_past_deleted_records() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    client.create_topic("gone", 1, 3).await.unwrap();
    produce(&client, "gone", (0..20).map(|i| format!("g{i}"))).await;
    // A member reads the first 20 and commits, then leaves.
    let config = fjord_client::GroupConfig::new("readers", vec!["gone".into()]);
    let mut member = client.group_consumer(config.clone()).unwrap();
    let mut seen = 0;
    for _ in 0..1_000 {
        seen += member.poll().await.unwrap().len();
        if seen >= 20 {
            break;
        }
    }
    assert_eq!(seen, 20);
    member.commit().await.unwrap();
    member.close().await.unwrap();
    // 20 more, then everything below 30 is deleted: the committed offset (20) is gone.
    produce(&client, "gone", (20..40).map(|i| format!("g{i}"))).await;
    assert_eq!(
        client.delete_records("gone", 0, Some(30)).await.unwrap(),
        30
    );
    // A member again: its position is out of range, and the earliest reset moves it to 30.
    let mut member = client.group_consumer(config).unwrap();
    let mut offsets = Vec::new();
    for _ in 0..1_000 {
        offsets.extend(
            member
                .poll()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.record.offset),
        );
        if offsets.len() >= 10 {
            break;
        }
    }
    assert_eq!(offsets, (30..40).collect::<Vec<u64>>());
    member.close().await.unwrap();
}
