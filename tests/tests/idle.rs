//! Idle partitions go quiet (no Raft ticks, no per-partition heartbeats), then hibernate (their
//! Raft instances stop), and wake for traffic and failures, on real 3-node clusters of
//! separate `fjord serve` processes.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fjord_client::{Acks, ClientError, ProducerConfig, ProducerRecord, ReadMode};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{
    Acks as WireAcks, FetchRequest, MetadataRequest, ProduceRequest, ReadMode as WireRead, Record,
    ReplicaStatus,
};
use fjord_tests::{Cluster, Timing, serial, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);
const PARTITIONS: u32 = 50;

/// The partition replicas of the node at `addr`, as it reports them.
async fn replica_status(addr: &str) -> Option<ReplicaStatus> {
    let mut c = FjordClient::connect(format!("http://{addr}")).await.ok()?;
    c.metadata(MetadataRequest {
        topics: vec![],
        leader_wait: None,
    })
    .await
    .ok()?
    .into_inner()
    .replicas
}

/// `(hosted, quiet, hibernated)` partition replicas of the node at `addr`, as it reports them.
async fn quiet_counts(addr: &str) -> Option<(u32, u32, u32)> {
    replica_status(addr)
        .await
        .map(|r| (r.hosted, r.quiet, r.hibernated))
}

/// The timing of these tests: `fjord serve`'s defaults, but replicas hibernate after 2 s of
/// quiet instead of 10 s.
const TIMING: Timing = Timing {
    hibernate_after_ms: 2_000,
    ..Timing::DEFAULT
};

/// Waits until the controller has nothing left to move (no node in `nodes` leads more than
/// its share), then until every node in `nodes` reports all its `hosted` replicas quiet and
/// hibernated: a leader move would wake a group, and move a leader from under the test.
async fn wait_all_quiet(cluster: &Cluster, nodes: &[u64], hosted: u32) {
    let client = cluster.client();
    let share = PARTITIONS.div_ceil(nodes.len() as u32);
    let started = Instant::now();
    loop {
        let mut led: BTreeMap<u64, u32> = BTreeMap::new();
        for (l, _) in leaders(&client, "idle").await.values() {
            *led.entry(l.unwrap_or(0)).or_default() += 1;
        }
        if led.values().sum::<u32>() == PARTITIONS
            && led.keys().all(|n| nodes.contains(n))
            && led.values().all(|n| *n <= share)
        {
            break;
        }
        if started.elapsed() > DEADLINE {
            let mut status = Vec::new();
            for id in nodes {
                let addr = &cluster.nodes[cluster.node_index(*id)].addr;
                status.push((id, replica_status(addr).await));
            }
            panic!(
                "partition leaders not balanced after {DEADLINE:?}: metadata says {led:?} \
                 (0: none); nodes say {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in nodes {
        let addr = cluster.nodes[cluster.node_index(*id)].addr.clone();
        wait_for(
            &format!("node {id} to report all {hosted} replicas quiet and hibernated"),
            DEADLINE,
            || {
                let addr = addr.clone();
                async move {
                    let (h, q, z) = quiet_counts(&addr).await?;
                    (h == hosted && q == hosted && z == hosted).then_some(())
                }
            },
        )
        .await;
    }
}

/// Partition → (leader, leader epoch), from the metadata (empty if it cannot be read now).
async fn leaders(client: &fjord_client::Client, topic: &str) -> BTreeMap<u32, (Option<u64>, u64)> {
    let Ok(t) = client.describe_topic(topic).await else {
        return BTreeMap::new();
    };
    t.partitions
        .iter()
        .map(|p| (p.partition, (p.leader, p.leader_epoch)))
        .collect()
}

/// Creates the topic `idle` ([`PARTITIONS`] partitions, 3 replicas each).
async fn create_idle(client: &fjord_client::Client) {
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
}

/// Waits until every partition of `idle` has a leader other than `node` (0: any leader), and
/// returns the leaders and epochs.
async fn wait_led_without(
    client: &fjord_client::Client,
    node: u64,
    what: &str,
) -> BTreeMap<u32, (Option<u64>, u64)> {
    let since = Instant::now();
    let mut last = BTreeMap::new();
    loop {
        let now = leaders(client, "idle").await;
        if now.len() == PARTITIONS as usize
            && now.values().all(|(l, _)| l.is_some_and(|l| l != node))
        {
            return now;
        }
        if !now.is_empty() {
            last = now;
        }
        assert!(
            since.elapsed() < DEADLINE,
            "{what}: not every partition has a leader other than node {node} after \
             {DEADLINE:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CP produces one record to every partition of `idle`.
async fn produce_to_all(client: &fjord_client::Client, what: &str) {
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
            .send(ProducerRecord::new(format!("{what}-{p}")).with_partition(p))
            .await
            .unwrap_or_else(|e| panic!("CP produce to partition {p} {what}: {e}"));
    }
}

/// An asymmetric link: the node leading the most quiet partitions can no longer call the
/// others (its connections to them stall), while their calls to it go through and are
/// answered. Its followers must not take those answers for a live leader: they wake, elect
/// leaders among themselves, and take CP writes. (Before the fix, a quiet follower's claim
/// was renewed by the leader's answers to the follower's own heartbeats, and these
/// partitions stayed quiet and leaderless for as long as the link was down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_partitions_of_a_leader_that_cannot_call_out_fail_over() {
    let _serial = serial();
    let mut cluster = Cluster::start_with(3, TIMING).await;
    // Every node's peer connections through a proxy per direction, by a rolling restart.
    let links = fjord_tests::links::PeerLinks::start(&cluster).await;
    for id in [1, 2, 3] {
        cluster.stop(id);
        cluster.restart_with_peers(id, &links.peers_of(&cluster, id));
        cluster.wait_ready().await;
    }
    let client = cluster.client();
    create_idle(&client).await;
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;
    let before = wait_led_without(&client, 0, "before the fault").await;
    let mut led: BTreeMap<u64, u32> = BTreeMap::new();
    for (l, _) in before.values() {
        *led.entry(l.expect("led")).or_default() += 1;
    }
    let (&victim, &count) = led.iter().max_by_key(|(_, n)| **n).expect("a leader");
    assert!(count > 0);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != victim).collect();
    for &to in &others {
        links.stall_calls(victim, to, true);
    }
    let cut_at = Instant::now();
    let after = wait_led_without(&client, victim, "calls from the leader stalled").await;
    eprintln!(
        "node {victim} (leader of {count} quiet partitions) cannot call out: all had other \
         leaders after {} ms",
        cut_at.elapsed().as_millis()
    );
    for (p, (_, e)) in &after {
        if before[p].0 == Some(victim) {
            assert!(*e > before[p].1, "partition {p}: epoch did not move");
        }
    }
    produce_to_all(&client, "while the link is down").await;
    // Healed: the node catches up and everything goes quiet again.
    for &to in &others {
        links.stall_calls(victim, to, false);
    }
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_partitions_serve_at_once_and_fail_over() {
    let _serial = serial();
    let mut cluster = Cluster::start_with(3, TIMING).await;
    let client = cluster.client();
    create_idle(&client).await;
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;

    // Quiet, hibernated partitions serve a CP read and a CP produce on the first attempt,
    // without an election (their leader epochs do not move), also once their leaders' leases
    // have lapsed:
    // a lease is the longest election timeout (1.2 s here), and a quiet leader does not renew
    // it. The wait lets that time pass; it does not stand in for a condition.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = leaders(&client, "idle").await;
    let (read_p, write_p) = (0, PARTITIONS - 1);
    let raw_to_leader = |p: u32| {
        let leader = before[&p].0.expect("every partition has a leader");
        let addr = cluster.nodes[cluster.node_index(leader)].addr.clone();
        async move {
            FjordClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
        }
    };
    let fetch = |partition| FetchRequest {
        topic: "idle".into(),
        partition,
        offset: 0,
        max_bytes: 0,
        max_wait_ms: 0,
        read: WireRead::ReadCp as i32,
    };
    let started = Instant::now();
    let r = raw_to_leader(read_p)
        .await
        .fetch(fetch(read_p))
        .await
        .expect("CP read of a quiet partition")
        .into_inner();
    let read_ms = started.elapsed().as_millis();
    assert_eq!(r.high_watermark, 0);
    let mut raw = raw_to_leader(write_p).await;
    let started = Instant::now();
    let produced = raw
        .produce(ProduceRequest {
            topic: "idle".into(),
            partition: Some(write_p),
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
    let r = raw
        .fetch(fetch(write_p))
        .await
        .expect("CP read")
        .into_inner();
    assert_eq!(r.high_watermark, 1);
    let now = leaders(&client, "idle").await;
    for p in [read_p, write_p] {
        assert_eq!(
            now[&p], before[&p],
            "serving quiet partition {p} needed an election"
        );
    }
    eprintln!("quiet partitions: CP read in {read_ms} ms, CP produce in {produce_ms} ms");

    // SIGKILL the node that leads the most partitions once everything is quiet and hibernated
    // again: every partition gets a leader on the two others and takes CP writes.
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
    let after = wait_led_without(&client, victim, "after the kill").await;
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
    produce_to_all(&client, "after the kill").await;
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
                .any(|r| r.value.as_ref() == format!("after the kill-{p}").as_bytes()),
            "partition {p} lost its write"
        );
    }

    // With one node down the partitions go quiet again (a majority is in sync).
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != victim).collect();
    wait_all_quiet(&cluster, &survivors, PARTITIONS).await;

    // The killed node returns, catches up, and everything goes quiet again.
    cluster.restart(victim);
    cluster.wait_ready().await;
    wait_all_quiet(&cluster, &[1, 2, 3], PARTITIONS).await;
}
