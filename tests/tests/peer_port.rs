//! The node-to-node service is served on the peer port only: a client that reaches a node's
//! client port cannot call Append, Vote, MetaWrite, the boot check or ReadPartition (a
//! coordinator's read of a partition, trusted as a peer's), and the cluster works with its
//! traffic split over two ports. A node's Raft request reaching another node than the one
//! it was meant for (an address edited in `--peers`, or reused) is refused: that node cannot
//! answer as two voters.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_client::{FetchOptions, ProducerConfig, ProducerRecord};
use fjord_proto::raft::raft_transport_client::RaftTransportClient;
use fjord_proto::raft::{GroupMessage, IdentityRequest, ReadPartitionRequest};
use fjord_tests::{Cluster, serial};

/// A transport client of `addr`, with a bound on each call.
async fn transport(addr: &str) -> RaftTransportClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    RaftTransportClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_does_not_serve_the_node_to_node_service() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;
    for node in &cluster.nodes {
        let mut c = transport(&node.addr).await;
        let vote = c.vote(GroupMessage::default()).await.unwrap_err();
        assert_eq!(vote.code(), tonic::Code::Unimplemented, "Vote: {vote:?}");
        let append = c.append(GroupMessage::default()).await.unwrap_err();
        assert_eq!(
            append.code(),
            tonic::Code::Unimplemented,
            "Append: {append:?}"
        );
        let write = c.meta_write(GroupMessage::default()).await.unwrap_err();
        assert_eq!(
            write.code(),
            tonic::Code::Unimplemented,
            "MetaWrite: {write:?}"
        );
        let check = c
            .check_identity(IdentityRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            check.code(),
            tonic::Code::Unimplemented,
            "CheckIdentity: {check:?}"
        );

        let read = ReadPartitionRequest {
            group_id: 1 << 32,
            offset_for_time: Some(0),
            record_time_at: Some(0),
        };
        let refused = c.read_partition(read).await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::Unimplemented,
            "ReadPartition: {refused:?}"
        );

        // The peer port serves it (whatever it answers to an empty request, it is not
        // "unimplemented").
        let mut p = transport(&node.peer_addr).await;
        let answered = p.check_identity(IdentityRequest::default()).await;
        assert!(
            !matches!(&answered, Err(s) if s.code() == tonic::Code::Unimplemented),
            "the peer port of node {} answers the boot check: {answered:?}",
            node.id
        );
        // A partition read of a group the node hosts no partition of: NOT_FOUND.
        let unknown = p
            .read_partition(ReadPartitionRequest {
                group_id: u64::MAX,
                offset_for_time: None,
                record_time_at: Some(0),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    }

    // The cluster works with its traffic split: produce and read back, every replica.
    let client = cluster.client();
    client.create_topic("split", 1, 3).await.expect("create");
    let producer = client.producer("split", ProducerConfig::default()).unwrap();
    for i in 0..5 {
        producer
            .send(ProducerRecord::new(format!("v{i}")).with_partition(0))
            .await
            .expect("send");
    }
    let got = client
        .fetch("split", 0, 0, FetchOptions::default())
        .await
        .expect("fetch");
    assert_eq!(got.records.len(), 5, "{:?}", got.records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reached_at_another_node_s_address_does_not_count_twice() {
    let _serial = serial();
    let mut cluster = Cluster::start(5).await;
    let client = cluster.client();
    client.create_topic("t", 1, 5).await.unwrap();
    let cp = |c: &fjord_client::Client| {
        c.producer(
            "t",
            ProducerConfig {
                acks: fjord_client::Acks::Cp,
                ..ProducerConfig::default()
            },
        )
        .unwrap()
    };
    cp(&client)
        .send(ProducerRecord::new("before"))
        .await
        .unwrap();

    // Node 1 comes back with node 2's peer address pointing at node 3 (an operator's edit of
    // --peers, or an address handed to another machine).
    cluster.stop(1);
    let node3_peer = cluster.nodes[cluster.node_index(3)].peer_addr.clone();
    let peers: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            let addr = if n.id == 2 { &node3_peer } else { &n.peer_addr };
            format!("{}={addr}", n.id)
        })
        .collect();
    cluster.restart_with_peers(1, &peers.join(","));
    // Node 3 restarts too, while the others run: it then leads nothing for a while, so when
    // 2, 4 and 5 die every group node 1 is in was led by node 1 (whose appends for node 2
    // reach node 3) or by a dead node (node 1 campaigns, and its votes for node 2 reach
    // node 3). Had node 3 led them all, node 1 would have sent node 2 nothing. (Restarted
    // after the kills, node 3 could not pass its start check with node 1 alone, and the
    // produce below would be refused whatever node 3 answered.)
    cluster.stop(3);
    cluster.restart(3);
    let cli = cluster.cli();
    let program = cli.get_program().to_owned();
    for id in [1, 3] {
        let addr = cluster.nodes[cluster.node_index(id)].addr.clone();
        fjord_tests::wait_for(
            &format!("node {id} to serve again"),
            Duration::from_secs(60),
            || {
                let ok = std::process::Command::new(&program)
                    .args(["health", "--brokers", &addr])
                    .output()
                    .is_ok_and(|o| o.status.success());
                async move { ok.then_some(()) }
            },
        )
        .await;
    }
    let node1 = cluster.nodes[cluster.node_index(1)].addr.clone();

    // Only nodes 1 and 3 run: 2 of 5 replicas, no majority. Node 3 must not answer node 1's
    // requests meant for node 2 as well as its own: then 1, "2" and 3 would be 3 of 5, and
    // a CP produce would be acknowledged with two copies (it was, before the check).
    for id in [2, 4, 5] {
        cluster.kill(id);
    }
    let config = fjord_client::ClientConfig {
        // Long enough for node 1 and node 3 to elect a leader between them, had they a
        // majority.
        request_timeout_ms: 5_000,
        max_retries: 4,
        ..fjord_client::ClientConfig::default()
    };
    let lone = fjord_client::Client::connect(vec![node1.clone()], config).unwrap();
    let refused = cp(&lone).send(ProducerRecord::new("after")).await;
    assert!(
        refused.is_err(),
        "a CP produce was acknowledged by 2 of 5 replicas: {refused:?}"
    );
    // Refused by name; on a loaded machine the line may come after the produce gave up.
    fjord_tests::wait_for(
        "node 3 to refuse a request for node 2 by name",
        Duration::from_secs(60),
        || {
            let logs = format!("{}{}", cluster.log_text(1), cluster.log_text(3));
            async move { logs.contains("for node 2 reached node 3").then_some(()) }
        },
    )
    .await;
}
