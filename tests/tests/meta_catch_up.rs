//! A node that restarts answers clients only once its applied metadata holds everything the
//! metadata group had committed before it started: from the first answer it gives after a
//! power loss of every node, a topic that exists is never denied (an empty Metadata answer
//! for it, or NOT_FOUND for a produce); until then the answer is UNAVAILABLE. Also for a
//! node whose own metadata log lacks the topic (it was down when the topic was created).

// `serial()` keeps cluster tests one at a time: its guard is meant to span the test.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{MetadataRequest, ProduceRequest, Record};
use fjord_tests::{Cluster, serial};
use tonic::Code;

const TOPIC: &str = "kept";
/// Created while node 3 was down: its own metadata log lacks it after the restart.
const LATE: &str = "late";
/// How long a restarted node may take to answer with the topic.
const DEADLINE: Duration = Duration::from_secs(60);
/// Between two requests to a node that did not answer with the topic yet.
const POLL: Duration = Duration::from_millis(10);

/// What one request to a restarted node said.
#[derive(Debug)]
enum Said {
    /// The topic, or (a produce) an answer for its partition.
    Known,
    /// A retryable refusal (the node is starting or catching up, or no leader yet).
    NotYet(String),
    /// The topic does not exist: the bug.
    Denied(String),
}

async fn ask_metadata(c: &mut FjordClient<tonic::transport::Channel>, topic: &str) -> Said {
    let req = MetadataRequest {
        topics: vec![topic.into()],
        leader_wait: None,
    };
    match c.metadata(req).await {
        Ok(r) if r.get_ref().topics.iter().any(|t| t.name == topic) => Said::Known,
        Ok(r) => Said::Denied(format!("metadata without the topic: {:?}", r.into_inner())),
        Err(s) if s.code() == Code::NotFound => Said::Denied(format!("metadata: {s:?}")),
        Err(s) => Said::NotYet(format!("metadata: {:?}: {}", s.code(), s.message())),
    }
}

async fn ask_produce(c: &mut FjordClient<tonic::transport::Channel>, topic: &str) -> Said {
    let req = ProduceRequest {
        topic: topic.into(),
        records: vec![Record {
            value: b"after the power loss".to_vec().into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    match c.produce(req).await {
        Ok(_) => Said::Known,
        Err(s) if s.code() == Code::NotFound => Said::Denied(format!("produce: {s:?}")),
        Err(s) => Said::NotYet(format!("produce: {:?}: {}", s.code(), s.message())),
    }
}

/// Asks node `addr` from the moment it listens until it knows `topic`; panics on a denial.
async fn never_denied(addr: String, topic: &'static str) -> usize {
    let end = tokio::time::Instant::now() + DEADLINE;
    let mut refusals = 0usize;
    let mut last = String::new();
    loop {
        assert!(
            tokio::time::Instant::now() < end,
            "{addr} did not answer with the topic within {DEADLINE:?}; last: {last}"
        );
        if let Ok(mut c) = FjordClient::connect(format!("http://{addr}")).await {
            let meta = ask_metadata(&mut c, topic).await;
            let produce = ask_produce(&mut c, topic).await;
            match (meta, produce) {
                (Said::Denied(why), _) | (_, Said::Denied(why)) => {
                    panic!("{addr} denied an existing topic after a restart: {why}")
                }
                (Said::Known, Said::Known) => return refusals,
                (Said::NotYet(why), _) | (_, Said::NotYet(why)) => {
                    refusals += 1;
                    last = why;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_never_deny_an_existing_topic() {
    let _serial = serial();
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    client.create_topic(TOPIC, 3, 3).await.unwrap();
    // More metadata after the topic, so a replay has entries to go through.
    for i in 0..5 {
        client
            .create_topic(&format!("other-{i}"), 1, 3)
            .await
            .unwrap();
    }

    for round in 0..2 {
        restart_all_and_ask(&mut cluster, TOPIC, &format!("round {round}")).await;
    }

    // Node 3 misses a topic's creation, then every node loses power: node 3 starts on a
    // metadata log without the topic and gets the rest only once a leader is elected.
    cluster.kill(3);
    client.create_topic(LATE, 1, 2).await.unwrap();
    restart_all_and_ask(&mut cluster, LATE, "lagging node round").await;
}

/// Every node loses power and restarts; each is then asked about `topic` from the moment it
/// listens ([`never_denied`]), all at once.
async fn restart_all_and_ask(cluster: &mut Cluster, topic: &'static str, label: &str) {
    cluster.kill_all();
    for id in 1..=3 {
        cluster.restart(id);
    }
    let asks: Vec<_> = cluster
        .brokers()
        .into_iter()
        .map(|addr| tokio::spawn(never_denied(addr, topic)))
        .collect();
    for ask in asks {
        let refusals = ask.await.unwrap();
        eprintln!("meta_catch_up: {label}: {refusals} retryable refusals first");
    }
}
