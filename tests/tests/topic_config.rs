//! Per-topic log settings on a real 3-node cluster: an alter on a live topic reaches every
//! node's describe, survives a power loss of every node, and a bad request is refused with
//! INVALID_ARGUMENT naming the key and the limit. The nodes run with a non-default
//! `--default-retention-ms`, which every node's describe resolves.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_client::{ClientError, TopicSettings};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{DescribeTopicRequest, TopicInfo};
use fjord_tests::{Cluster, Timing, serial, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);
/// The nodes' `--default-retention-ms`: one hour.
const DEFAULT_RETENTION_MS: i64 = 3_600_000;

/// Topic `name` as node `addr` itself describes it (no redirection to another node).
async fn describe_at(addr: &str, name: &str) -> Option<TopicInfo> {
    let mut c = FjordClient::connect(format!("http://{addr}")).await.ok()?;
    let req = DescribeTopicRequest { name: name.into() };
    c.describe_topic(req).await.ok()?.into_inner().topic
}

/// Waits until every node describes topic `name` with `check` holding.
async fn wait_on_every_node(
    cluster: &Cluster,
    name: &str,
    what: &str,
    check: fn(&TopicInfo) -> bool,
) {
    for addr in cluster.brokers() {
        let t = wait_for(&format!("{what} at {addr}"), DEADLINE, || {
            let addr = addr.clone();
            async move { describe_at(&addr, name).await.filter(check) }
        })
        .await;
        assert!(check(&t));
    }
}

/// The alter of the test: retention 60 s, compaction, retention_bytes back to the default.
fn altered(t: &TopicInfo) -> bool {
    let (Some(c), Some(e)) = (&t.config, &t.effective) else {
        return false;
    };
    c.retention_ms == Some(60_000)
        && c.cleanup_policy.as_deref() == Some("compact")
        && c.retention_bytes.is_none()
        && c.max_record_bytes == 4096
        && e.retention_ms == 60_000
        && e.cleanup_policy == "compact"
        && e.retention_bytes == -1
        && e.delete_retention_ms == 86_400_000
        && e.max_record_bytes == 4096
}

fn invalid(e: ClientError, says: &[&str]) {
    let ClientError::InvalidArgument(msg) = &e else {
        panic!("expected INVALID_ARGUMENT, got {e:?}");
    };
    for s in says {
        assert!(msg.contains(s), "{msg:?} does not say {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_config_reaches_every_node_and_survives_a_full_restart() {
    let _serial = serial();
    let mut cluster = Cluster::start_with_args(
        3,
        Timing::FAST,
        &["--default-retention-ms", &DEFAULT_RETENTION_MS.to_string()],
    )
    .await;
    let client = cluster.client();

    // Created with settings of its own; the rest are the nodes' defaults.
    let mut own = TopicSettings::default();
    own.set("retention_bytes", "1073741824").unwrap();
    own.set("max_record_bytes", "4096").unwrap();
    let t = client.create_topic_with("logs", 2, 3, &own).await.unwrap();
    assert_eq!(t.config, own);
    let e = t.effective.expect("the node says what is in force");
    assert_eq!(
        (e.retention_ms, e.retention_bytes),
        (DEFAULT_RETENTION_MS, 1 << 30)
    );
    assert_eq!(e.cleanup_policy, "delete");
    wait_on_every_node(
        &cluster,
        "logs",
        "the created topic with its defaults",
        |t| {
            t.effective.as_ref().is_some_and(|e| {
                e.retention_ms == DEFAULT_RETENTION_MS && e.retention_bytes == 1 << 30
            })
        },
    )
    .await;

    // Altered live: set two keys, reset one, keep the rest.
    let t = client
        .alter_topic_config(
            "logs",
            &[("retention_ms", "60000"), ("cleanup_policy", "compact")],
            &["retention_bytes"],
        )
        .await
        .unwrap();
    assert_eq!(t.config.retention_ms, Some(60_000));
    assert_eq!(t.config.retention_bytes, None);
    assert_eq!(t.config.max_record_bytes, Some(4096), "kept");
    assert_eq!(t.partitions.len(), 2, "an alter moves nothing");
    wait_on_every_node(&cluster, "logs", "the altered config", altered).await;

    // Bad requests: refused, naming the key and the limit, and nothing changes.
    invalid(
        client
            .alter_topic_config("logs", &[("retention_ms", "0")], &[] as &[&str])
            .await
            .unwrap_err(),
        &["retention_ms", "\"0\"", "MAX_CONFIG_DURATION_MS"],
    );
    invalid(
        client
            .alter_topic_config("logs", &[("retention_bytes", "1000")], &[] as &[&str])
            .await
            .unwrap_err(),
        &["retention_bytes", "MIN_RETENTION_BYTES"],
    );
    invalid(
        client
            .alter_topic_config("logs", &[("retention.ms", "1")], &[] as &[&str])
            .await
            .unwrap_err(),
        &["retention.ms", "the keys are retention_ms"],
    );
    invalid(
        client
            .alter_topic_config("logs", &[("cleanup_policy", "shred")], &["cleanup_policy"])
            .await
            .unwrap_err(),
        &["cleanup_policy", "compact,delete"],
    );
    invalid(
        client
            .alter_topic_config("__fjord_groups", &[("retention_ms", "1")], &[] as &[&str])
            .await
            .unwrap_err(),
        &["fjord's own"],
    );
    let mut bad = TopicSettings::default();
    bad.set("delete_retention_ms", "-1").unwrap();
    invalid(
        client
            .create_topic_with("bad", 1, 3, &bad)
            .await
            .unwrap_err(),
        &["delete_retention_ms", "0 to 3153600000000"],
    );
    let e = client
        .alter_topic_config("missing", &[("retention_ms", "1")], &[] as &[&str])
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::NotFound(_)), "{e:?}");
    let t = client.describe_topic("logs").await.unwrap();
    assert!(client.describe_topic("bad").await.is_err(), "not created");
    assert_eq!(
        t.config.retention_ms,
        Some(60_000),
        "unchanged by the refusals"
    );

    // A power loss of every node: the acknowledged alter is in the metadata log.
    cluster.kill_all();
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster.wait_ready().await;
    wait_on_every_node(
        &cluster,
        "logs",
        "the altered config after a restart",
        altered,
    )
    .await;
}
