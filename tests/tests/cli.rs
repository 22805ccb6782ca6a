//! The `fjord` command as a user types it, against a real 3-node cluster: the README's tour,
//! JSON output shapes, leader balance, and bad input on the command line.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use fjord_tests::{Cluster, fjord_bin, serial, wait_for};

fn run(mut cmd: Command, stdin: Option<&str>) -> (bool, String, String) {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn fjord");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_works_and_json_has_the_documented_shape() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;

    let mut c = cluster.cli();
    c.args([
        "topic",
        "create",
        "orders",
        "--partitions",
        "6",
        "--replication",
        "3",
    ]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "topic create failed: {out}{err}");

    let mut c = cluster.cli();
    c.args([
        "produce",
        "orders",
        "--key",
        "customer-42",
        "--format",
        "json",
    ]);
    let (ok, out, err) = run(c, Some("first\nsecond\nthird\n"));
    assert!(ok, "produce failed: {out}{err}");
    let acks = json_lines(&out);
    assert_eq!(acks.len(), 3, "{out}");
    let partition = acks[0]["partition"].as_u64().unwrap();
    assert!(
        acks.iter()
            .all(|a| a["partition"].as_u64() == Some(partition)),
        "one key, one partition: {out}"
    );

    let mut c = cluster.cli();
    c.args([
        "consume",
        "orders",
        "--from-beginning",
        "--count",
        "3",
        "--format",
        "json",
    ]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "consume failed: {out}{err}");
    let records = json_lines(&out);
    let values: Vec<&str> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["first", "second", "third"]);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["partition"].as_u64(), Some(partition));
        assert_eq!(r["offset"].as_u64(), Some(i as u64));
        assert_eq!(r["key"].as_str(), Some("customer-42"));
        assert!(r["timestamp"].as_i64().unwrap() > 0, "{r}");
    }

    let mut c = cluster.cli();
    c.args(["topic", "describe", "orders", "--format", "json"]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "describe failed: {out}{err}");
    let d = &json_lines(&out)[0];
    assert_eq!(d["topic"], "orders");
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 6);
    for p in parts {
        assert_eq!(p["replicas"].as_array().unwrap().len(), 3);
        assert!(
            p.get("leader").is_some() && p.get("partition").is_some(),
            "{p}"
        );
    }

    let mut c = cluster.cli();
    c.args(["cluster", "status", "--format", "json"]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "cluster status failed: {out}{err}");
    let s = &json_lines(&out)[0];
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3, "{s}");
    assert!(
        s["nodes"][0]["id"].is_u64() && s["nodes"][0]["address"].is_string(),
        "{s}"
    );
    assert!(s["metadata_leader"].as_u64().unwrap() >= 1, "{s}");

    // AP produce and AP read through the CLI.
    let mut c = cluster.cli();
    c.args([
        "produce",
        "orders",
        "--acks",
        "ap",
        "--partition",
        &partition.to_string(),
    ]);
    let (ok, out, err) = run(c, Some("fast\n"));
    assert!(ok, "AP produce failed: {out}{err}");
    let mut c = cluster.cli();
    c.args([
        "consume",
        "orders",
        "--partition",
        &partition.to_string(),
        "--from-beginning",
        "--count",
        "4",
        "--read",
        "ap",
    ]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "AP consume failed: {out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["first", "second", "third", "fast"]
    );

    // Leaders spread: 6 partitions on 3 nodes, no node leads more than its share plus one.
    let client = cluster.client();
    wait_for(
        "partition leaders to be spread over the nodes",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let t = client.describe_topic("orders").await.ok()?;
                let mut per_node = std::collections::BTreeMap::new();
                for p in &t.partitions {
                    *per_node.entry(p.leader?).or_insert(0) += 1;
                }
                (per_node.values().all(|n| *n <= 6 / 3 + 1)).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_get_clear_errors() {
    let _serial = serial();
    // A malformed peer address: refused before anything starts.
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(fjord_bin());
    c.args([
        "serve",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--peers",
        "1=nohost",
    ])
    .arg("--data-dir")
    .arg(dir.path());
    let (ok, out, err) = run(c, None);
    assert!(!ok, "a malformed peer address was accepted: {out}");
    assert!(
        err.contains("nohost"),
        "the message names the bad address: {err}"
    );

    // A node id that is not among the peers.
    let mut c = Command::new(fjord_bin());
    c.args([
        "serve",
        "--id",
        "4",
        "--listen",
        "127.0.0.1:0",
        "--peers",
        "1=127.0.0.1:7101",
    ])
    .arg("--data-dir")
    .arg(dir.path());
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("not listed in peers"), "{err}");

    // Topic commands against a cluster: an invalid name and too many replicas.
    let cluster = Cluster::start(3).await;
    let mut c = cluster.cli();
    c.args([
        "topic",
        "create",
        "no spaces",
        "--partitions",
        "1",
        "--replication",
        "1",
    ]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("249"), "names the rule: {err}");
    let mut c = cluster.cli();
    c.args([
        "topic",
        "create",
        "wide",
        "--partitions",
        "1",
        "--replication",
        "5",
    ]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("replication"), "{err}");
    let mut c = cluster.cli();
    c.args(["consume", "missing-topic", "--count", "1"]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("missing-topic"), "{err}");

    // A malformed broker address.
    let mut c = Command::new(fjord_bin());
    c.args(["topic", "list", "--brokers", "not an address"]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("not an address"), "{err}");
}
