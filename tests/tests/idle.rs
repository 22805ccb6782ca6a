//! Idle partitions go quiet (no Raft ticks, no per-partition heartbeats) and wake for traffic
//! and failures, on real 3-node clusters of separate `fjord serve` processes.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fjord_client::{Acks, ClientError, ProducerConfig, ProducerRecord, ReadMode};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{
    Acks as WireAcks, FetchRequest, MetadataRequest, ProduceRequest, ReadMode as WireRead, Record,
};
use fjord_tests::{Cluster, Timing, serial, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);
const PARTITIONS: u32 = 50;

/// `(hosted, quiet)` partition replicas of the node at `addr`, as it reports them.
async fn quiet_counts(addr: &str) -> Option<(u32, u32)> {
    let mut c = FjordClient::connect(format!("http://{addr}")).await.ok()?;
    let r = c
        .metadata(MetadataRequest { topics: vec![] })
        .await
        .ok()?
        .into_inner()
        .replicas?;
    Some((r.hosted, r.quiet))
}

/// Waits until every running node in `nodes` reports all its `hosted` replicas quiet.
async fn wait_all_quiet(cluster: &Cluster, nodes: &[u64], hosted: u32) {
    for id in nodes {
        let addr = cluster.nodes[cluster.node_index(*id)].addr.clone();
        wait_for(
            &format!("node {id} to report all {hosted} replicas quiet"),
            DEADLINE,
            || {
                let addr = addr.clone();
                async move {
                    let (h, q) = quiet_counts(&addr).await?;
                    (h == hosted && q == hosted).then_some(())
                }
            },
        )
        .await;
    }
}

/// Partition → (leader, leader epoch), from the metadata.
async fn leaders(client: &fjord_client::Client, topic: &str) -> BTreeMap<u32, (Option<u64>, u64)> {
    client
        .describe_topic(topic)
        .await
        .expect("describe")
        .partitions
        .iter()
        .map(|p| (p.partition, (p.leader, p.leader_epoch)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_partitions_serve_at_once_and_fail_over() {
    let _serial = serial();
    let mut cluster = Cluster::start_with(3, Timing::DEFAULT).await;
    let client = cluster.client();
    // Starting 150 replicas on a busy machine can outlast the client's deadline: a timed-out
    // create is unknown, not failed (and the client's retry finds it made), so wait for the
    // topic instead.
    if let Err(e) = client.create_topic("idle", PARTITIONS, 3).await {
        assert!(
            e.is_outcome_unknown() || matches!(e, ClientError::AlreadyExists(_)),
            "create topic: {e}"
        );
        wait_for("the topic to exist", DEADLINE, || {
            let client = client.clone();
            async move { client.describe_topic("idle").await.ok() }
        })
        .await;
    }
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;

    // A quiet partition serves a CP read and a CP produce on the first attempt, without an
    // election (its leader epoch does not move).
    let before = leaders(&client, "idle").await;
    let (p, (leader, epoch)) = before
        .iter()
        .map(|(p, (l, e))| (*p, (l.expect("every partition has a leader"), *e)))
        .next()
        .unwrap();
    let addr = cluster.nodes[cluster.node_index(leader)].addr.clone();
    let mut raw = FjordClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let fetch = |offset| FetchRequest {
        topic: "idle".into(),
        partition: p,
        offset,
        max_bytes: 0,
        max_wait_ms: 0,
        read: WireRead::ReadCp as i32,
    };
    let started = Instant::now();
    let r = raw
        .fetch(fetch(0))
        .await
        .expect("CP read of a quiet partition")
        .into_inner();
    assert_eq!(r.high_watermark, 0);
    let read_ms = started.elapsed().as_millis();
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;
    let started = Instant::now();
    let produced = raw
        .produce(ProduceRequest {
            topic: "idle".into(),
            partition: Some(p),
            records: vec![Record {
                value: "woken".into(),
                ..Default::default()
            }],
            acks: WireAcks::Cp as i32,
            ..Default::default()
        })
        .await
        .expect("CP produce to a quiet partition")
        .into_inner();
    let produce_ms = started.elapsed().as_millis();
    assert!(
        produced.results[0].error.is_none(),
        "CP produce to a quiet partition: {:?}",
        produced.results[0].error
    );
    let r = raw.fetch(fetch(0)).await.expect("CP read").into_inner();
    assert_eq!(r.high_watermark, 1);
    assert_eq!(
        leaders(&client, "idle").await[&p],
        (Some(leader), epoch),
        "serving the quiet partition needed an election"
    );
    eprintln!("quiet partition {p}: CP read in {read_ms} ms, CP produce in {produce_ms} ms");

    // SIGKILL the node that leads the most partitions once everything is quiet again: every
    // partition gets a leader on the two others and takes CP writes.
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;
    let before = leaders(&client, "idle").await;
    let mut led: BTreeMap<u64, u32> = BTreeMap::new();
    for (l, _) in before.values() {
        *led.entry(l.unwrap()).or_default() += 1;
    }
    let (&victim, &count) = led.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(count > 0);
    let killed_at = Instant::now();
    cluster.kill(victim);
    let after = wait_for(
        "every partition to have a leader other than the killed node",
        DEADLINE,
        || {
            let client = client.clone();
            async move {
                let now = leaders(&client, "idle").await;
                now.values()
                    .all(|(l, _)| l.is_some_and(|l| l != victim))
                    .then_some(now)
            }
        },
    )
    .await;
    eprintln!(
        "killed node {victim} (leader of {count} quiet partitions): all had new leaders after {} ms",
        killed_at.elapsed().as_millis()
    );
    for (p, (l, e)) in &after {
        if before[p].0 == Some(victim) {
            assert!(
                *e > before[p].1,
                "partition {p}: epoch did not move ({l:?})"
            );
        }
    }
    let producer = client
        .producer(
            "idle",
            ProducerConfig {
                acks: Acks::Cp,
                ..Default::default()
            },
        )
        .unwrap();
    for p in 0..PARTITIONS {
        producer
            .send(ProducerRecord::new(format!("after-{p}")).with_partition(p))
            .await
            .unwrap_or_else(|e| panic!("CP produce to partition {p} after the kill: {e}"));
    }
    for p in 0..PARTITIONS {
        let got = client
            .fetch(
                "idle",
                p,
                0,
                fjord_client::FetchOptions {
                    max_wait_ms: 0,
                    read: ReadMode::Cp,
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("CP read of partition {p} after the kill: {e}"));
        assert!(
            got.records
                .iter()
                .any(|r| r.value.as_ref() == format!("after-{p}").as_bytes()),
            "partition {p} lost its write"
        );
    }

    // The killed node returns, catches up, and everything goes quiet again.
    cluster.restart(victim);
    cluster.wait_ready().await;
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;
}
