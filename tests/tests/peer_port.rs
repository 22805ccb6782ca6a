//! The node-to-node service is served on the peer port only: a client that reaches a node's
//! client port cannot call Append, Vote, MetaWrite, the boot check or ReadPartition (a
//! coordinator's read of a partition, trusted as a peer's), and the cluster works with its
//! traffic split over two ports.
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
