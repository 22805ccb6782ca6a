//! A node that lost its data directory, or came back on an older copy of it, must not vote
//! or acknowledge: with amnesia it would count toward quorums for state it no longer holds,
//! and a CP-acknowledged record would vanish (issue "disk-loss": on a 3-node cluster, the
//! wiped follower and the follower that missed the record elected one another and served a
//! CP read without it, 3 runs of 3).
// Each test holds `serial()` (a std mutex) for its whole run on purpose: see cluster.rs.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_client::{Acks, Client, ClientConfig, ProducerConfig, ProducerRecord};
use fjord_proto::v1::ReadMode as WireRead;
use fjord_tests::{Cluster, read_from_node, serial, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// The node that leads partition 0 of `topic`, as the cluster reports it.
async fn leader_of(client: &Client, topic: &str) -> u64 {
    wait_for("a partition leader", DEADLINE, || async {
        client
            .describe_topic(topic)
            .await
            .ok()
            .and_then(|t| t.partitions[0].leader)
    })
    .await
}

async fn cp_producer(client: &Client, topic: &str) -> fjord_client::Producer {
    client
        .producer(
            topic,
            ProducerConfig {
                acks: Acks::Cp,
                ..Default::default()
            },
        )
        .unwrap()
}

/// Writes `values` one at a time (CP) and returns their offsets.
async fn write_cp(producer: &fjord_client::Producer, values: &[String]) -> Vec<u64> {
    let mut offsets = Vec::new();
    for v in values {
        let m = producer
            .send(ProducerRecord::new(v.clone()).with_partition(0))
            .await
            .expect("a CP write with every replica up");
        offsets.push(m.offset);
    }
    offsets
}

/// Every CP read any of `nodes` serves holds `acked` at `offset`: polls each until one
/// serves the partition, checking every answer on the way.
async fn cp_read_keeps(cluster: &Cluster, nodes: &[u64], topic: &str, offset: u64, acked: &str) {
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| cluster.nodes[cluster.node_index(*n)].addr.clone())
        .collect();
    wait_for("a CP read from the survivors", DEADLINE, || {
        let addrs = addrs.clone();
        async move {
            for addr in &addrs {
                if let Ok((records, _)) = read_from_node(addr, topic, 0, WireRead::ReadCp).await {
                    let at = records.iter().find(|(o, _)| *o == offset);
                    assert_eq!(
                        at.map(|(_, v)| v.as_str()),
                        Some(acked),
                        "a CP read from {addr} lacks the acknowledged record at offset {offset}: {records:?}"
                    );
                    return Some(());
                }
            }
            None
        }
    })
    .await;
}

/// Asserts that `survivor` alone serves no CP read without the record (it may serve none).
async fn lone_survivor_serves_no_read_without(
    cluster: &Cluster,
    survivor: u64,
    topic: &str,
    offset: u64,
    acked: &str,
) {
    let addr = cluster.nodes[cluster.node_index(survivor)].addr.clone();
    // A few attempts over a few election timeouts: an amnesiac voter would have been elected
    // with it by then.
    for _ in 0..20 {
        if let Ok((records, _)) = read_from_node(&addr, topic, 0, WireRead::ReadCp).await {
            assert!(
                records
                    .iter()
                    .any(|(o, v)| *o == offset && v.as_str() == acked),
                "node {survivor} served a CP read without the acknowledged record at offset \
                 {offset}: {records:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_wiped_disk_refuses_and_the_acknowledged_record_stays() {
    let _serial = serial();
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    client.create_topic("t", 1, 3).await.expect("create topic");
    let producer = cp_producer(&client, "t").await;
    let values: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    write_cp(&producer, &values).await;

    let l = leader_of(&client, "t").await;
    let others: Vec<u64> = (1..=3).filter(|n| *n != l).collect();
    let (a, z) = (others[0], others[1]);
    cluster.kill(z);
    let acked = "acknowledged".to_string();
    let offset = write_cp(&producer, std::slice::from_ref(&acked)).await[0];
    assert_eq!(offset, 20);
    cluster.kill(a);
    cluster.wipe_data(a);
    cluster.kill(l);
    cluster.restart(a);
    cluster.restart(z);

    cluster.assert_refused(a, "lost its data").await;
    lone_survivor_serves_no_read_without(&cluster, z, "t", offset, &acked).await;
    // The node that holds the record returns: it is served.
    cluster.restart(l);
    cp_read_keeps(&cluster, &[l, z], "t", offset, &acked).await;
    // And A, started again on its empty directory, is refused again.
    cluster.restart(a);
    cluster.assert_refused(a, "lost its data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_restored_copy_refuses_and_the_acknowledged_record_stays() {
    let _serial = serial();
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    let t = client.create_topic("t", 1, 3).await.expect("create topic");
    let producer = cp_producer(&client, "t").await;
    let values: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    write_cp(&producer, &values).await;

    // A: neither the leader nor the preferred leader (the controller may move leadership
    // there), so it stays a follower.
    let l0 = leader_of(&client, "t").await;
    let preferred = t.partitions[0].replicas[0];
    let a = (1..=3).find(|n| *n != l0 && *n != preferred).unwrap();
    let registered = |c: &Cluster| c.log_text(a).matches("registered in the metadata").count();
    let before = registered(&cluster);
    cluster.stop(a);
    let backup = tempfile::tempdir().unwrap();
    let copy = backup.path().join("copy");
    cluster.copy_data(a, &copy);
    cluster.restart(a);
    wait_for("A to register its new generation", DEADLINE, || {
        let n = registered(&cluster);
        async move { (n > before).then_some(()) }
    })
    .await;
    // A metadata write after the registration: once a node has applied it, its log holds the
    // registration too.
    client
        .create_topic("marker", 1, 3)
        .await
        .expect("create marker");
    let l = leader_of(&client, "t").await;
    assert_ne!(l, a, "A was chosen to stay a follower");
    let z = (1..=3).find(|n| *n != l && *n != a).unwrap();
    let z_client = Client::connect(
        vec![cluster.nodes[cluster.node_index(z)].addr.clone()],
        ClientConfig::default(),
    )
    .unwrap();
    wait_for("Z to apply the marker", DEADLINE, || async {
        z_client
            .metadata()
            .await
            .ok()
            .filter(|m| m.topics.iter().any(|t| t.name == "marker"))
            .map(|_| ())
    })
    .await;

    cluster.kill(z);
    let acked = "acknowledged".to_string();
    let offset = write_cp(&producer, std::slice::from_ref(&acked)).await[0];
    assert_eq!(offset, 20);
    cluster.kill(a);
    cluster.restore_data(a, &copy);
    cluster.kill(l);
    cluster.restart(a);
    cluster.restart(z);

    cluster.assert_refused(a, "older copy").await;
    lone_survivor_serves_no_read_without(&cluster, z, "t", offset, &acked).await;
    cluster.restart(l);
    cp_read_keeps(&cluster, &[l, z], "t", offset, &acked).await;
}

/// `--rebuild` brings a wiped node back: the cluster makes it a learner of every group it
/// held, it catches up, and it becomes a voter again; then it holds every record and counts
/// toward majorities (the node that held them alone can go, and CP service continues).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_started_with_rebuild_is_a_voter_again_with_every_record() {
    let _serial = serial();
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    client.create_topic("t", 2, 3).await.expect("create topic");
    let producer = cp_producer(&client, "t").await;
    let values: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    write_cp(&producer, &values).await;

    // A loses its disk. Started again with --rebuild, it is taken back.
    let a = 1;
    cluster.kill(a);
    cluster.wipe_data(a);
    cluster.restart_with(a, &["--rebuild"]);
    // Writes go on while it rebuilds.
    let during: Vec<String> = (0..10).map(|i| format!("during{i}")).collect();
    write_cp(&producer, &during).await;
    cluster.wait_rebuilt(a).await;
    let log = cluster.log_text(a);
    assert!(
        log.contains("took this node back as a learner")
            && log.contains("a voter of every group it holds again"),
        "A's log does not show the rebuild:\n{}",
        cluster.log_tail(a)
    );

    // A voter with every record: with B gone, A and C are the majority of both partitions.
    cluster.kill(2);
    let after = "after the rebuild".to_string();
    let offset = write_cp(&producer, std::slice::from_ref(&after)).await[0];
    assert_eq!(offset, 30);
    let a_addr = cluster.nodes[cluster.node_index(a)].addr.clone();
    let expected: Vec<String> = values
        .iter()
        .chain(&during)
        .chain(std::iter::once(&after))
        .cloned()
        .collect();
    wait_for("A to hold every record of partition 0", DEADLINE, || {
        let (addr, expected) = (a_addr.clone(), expected.clone());
        async move {
            let (records, _) = read_from_node(&addr, "t", 0, WireRead::ReadAp).await.ok()?;
            let got: Vec<String> = records.into_iter().map(|(_, v)| v).collect();
            (got == expected).then_some(())
        }
    })
    .await;
    cp_read_keeps(&cluster, &[1, 3], "t", offset, &after).await;
}

/// `--rebuild` refuses where taking the node out of a group's voters would break its majority,
/// and changes nothing: with B down, A (wiped) cannot be rebuilt; once B is back it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_refuses_while_a_group_would_lose_its_majority() {
    let _serial = serial();
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    client.create_topic("t", 1, 3).await.expect("create topic");
    let producer = cp_producer(&client, "t").await;
    write_cp(&producer, &["r0".to_string()]).await;

    let suspected = |c: &Cluster| {
        c.log_text(3)
            .matches("peer suspected: no heartbeat node=2")
            .count()
    };
    let before = suspected(&cluster);
    cluster.kill(1);
    cluster.wipe_data(1);
    cluster.kill(2);
    wait_for("node 3 to suspect node 2", DEADLINE, || {
        let n = suspected(&cluster);
        async move { (n > before).then_some(()) }
    })
    .await;
    cluster.restart_with(1, &["--rebuild"]);
    let status = cluster.wait_exit(1, DEADLINE).await;
    let log = cluster.log_text(1);
    assert!(
        status.is_some_and(|s| !s.success()),
        "node 1 did not refuse:\n{}",
        cluster.log_tail(1)
    );
    assert!(
        log.contains("--rebuild refused") && log.contains("would lose its majority"),
        "node 1's refusal does not say why:\n{}",
        cluster.log_tail(1)
    );
    // Nothing changed: B back, the group serves CP with its three voters, and A rebuilds.
    cluster.restart(2);
    cp_read_keeps(&cluster, &[2, 3], "t", 0, "r0").await;
    cluster.restart_with(1, &["--rebuild"]);
    cluster.wait_rebuilt(1).await;

    // A refused --rebuild of a node whose directory holds its store changes nothing either:
    // what it set aside is put back, and the node starts on it without --rebuild.
    let before = suspected(&cluster);
    cluster.kill(2);
    wait_for("node 3 to suspect node 2 again", DEADLINE, || {
        let n = suspected(&cluster);
        async move { (n > before).then_some(()) }
    })
    .await;
    cluster.kill(1);
    let listing = |c: &Cluster| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(c.data_dir(1))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let files = listing(&cluster);
    cluster.restart_with(1, &["--rebuild"]);
    let status = cluster.wait_exit(1, DEADLINE).await;
    let log = cluster.log_text(1);
    assert!(
        status.is_some_and(|s| !s.success())
            && log.contains("old contents are back where they were"),
        "node 1's refused rebuild did not put its directory back:\n{}",
        cluster.log_tail(1)
    );
    // The same entries (the earlier rebuild's `replaced-*` among them), none set aside.
    assert_eq!(listing(&cluster), files);
    cluster.restart(2);
    cluster.restart(1);
    cluster.wait_ready().await;
    cp_read_keeps(&cluster, &[1, 2, 3], "t", 0, "r0").await;
}
