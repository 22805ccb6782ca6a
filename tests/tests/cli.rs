//! The `fjord` command as a user types it, against a real 3-node cluster: the README's tour,
//! JSON output shapes, leader balance, and bad input on the command line.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::process::Command;
use std::time::Duration;

use fjord_tests::{Cluster, fjord_bin, serial, wait_for};

fn run(cmd: Command, stdin: Option<&str>) -> (bool, String, String) {
    fjord_tests::run_command(cmd, stdin)
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

    // The client port given as this node's peer address: one port cannot serve both.
    let mut c = Command::new(fjord_bin());
    c.args([
        "serve",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:7101",
        "--peers",
        "1=127.0.0.1:7101",
    ])
    .arg("--data-dir")
    .arg(dir.path());
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("--peer-listen"), "{err}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_settings_are_set_altered_and_described() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;
    let mut c = cluster.cli();
    c.args([
        "topic",
        "create",
        "events",
        "--partitions",
        "1",
        "--config",
        "retention_bytes=1073741824",
        "--config",
        "cleanup_policy=compact,delete",
    ]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "topic create --config failed: {out}{err}");

    let mut c = cluster.cli();
    c.args([
        "topic",
        "alter",
        "events",
        "--set",
        "retention_ms=60000",
        "--set",
        "cleanup_policy=compact",
        "--reset",
        "retention_bytes",
    ]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "topic alter failed: {out}{err}");
    assert!(out.contains("altered topic events"), "{out}");

    // Text: each setting's value in force and whose it is. (Polled: the node asked may apply
    // the alter a moment after the one that made it.)
    let at = &cluster;
    let describe = |format: &'static str, shows: &'static str| {
        wait_for(
            "a describe that shows the alter",
            Duration::from_secs(60),
            move || async move {
                let mut c = at.cli();
                c.args(["topic", "describe", "events", "--format", format]);
                let (ok, out, _) = run(c, None);
                let squeezed = out.split_whitespace().collect::<Vec<_>>().join(" ");
                (ok && squeezed.contains(shows)).then_some(out)
            },
        )
    };
    let out = describe("text", "retention_ms 60000 topic").await;
    let line = |key: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("retention_ms"), ["60000", "topic"]);
    assert_eq!(line("cleanup_policy"), ["compact", "topic"]);
    assert_eq!(line("retention_bytes"), ["-1", "default"]);
    assert_eq!(line("delete_retention_ms"), ["86400000", "default"]);

    // JSON: the same, keyed by setting.
    let out = describe("json", r#""retention_ms":{"value":60000"#).await;
    let d = &json_lines(&out)[0];
    assert_eq!(
        d["config"]["retention_ms"],
        serde_json::json!({"value": 60000, "default": false})
    );
    assert_eq!(
        d["config"]["retention_bytes"],
        serde_json::json!({"value": -1, "default": true})
    );
    assert_eq!(d["config"]["cleanup_policy"]["value"], "compact");

    // A value outside its limits: refused, naming the key and the limit; a malformed flag.
    let mut c = cluster.cli();
    c.args(["topic", "alter", "events", "--set", "retention_ms=0"]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(
        err.contains("retention_ms") && err.contains("MAX_CONFIG_DURATION_MS"),
        "{err}"
    );
    let mut c = cluster.cli();
    c.args(["topic", "alter", "events", "--set", "retention_ms"]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("KEY=VALUE"), "{err}");
}

/// One JSON report from `fjord bench ... --format json`.
fn bench_report(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut c = cluster.cli();
    c.arg("bench").args(args).args(["--format", "json"]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "fjord bench {args:?} failed: {out}{err}");
    let mut lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one report object: {out}");
    let report = lines.remove(0);
    for key in [
        "mode",
        "topic",
        "partitions",
        "records_produced",
        "records_consumed",
        "errors",
        "stopped_by",
        "elapsed_secs",
        "records_per_sec",
        "mb_per_sec",
        "latency_of",
        "latency_samples",
        "latency_ms_p50",
        "latency_ms_p99",
        "latency_ms_p999",
        "latency_ms_max",
        "settings",
    ] {
        assert!(report.get(key).is_some(), "no {key:?} in {report}");
    }
    let p: Vec<f64> = ["p50", "p99", "p999", "max"]
        .iter()
        .map(|q| report[format!("latency_ms_{q}")].as_f64().unwrap())
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles ordered: {report}"
    );
    assert_eq!(report["errors"], 0, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_against_a_real_cluster_and_reports_json() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;

    let r = bench_report(
        &cluster,
        &[
            "produce",
            "--topic",
            "b",
            "--records",
            "3000",
            "--record-size",
            "64",
        ],
    );
    assert_eq!(r["mode"], "produce");
    assert_eq!(r["topic"], "b");
    assert_eq!(r["partitions"], 3, "created with the default 3 partitions");
    assert_eq!(r["records_produced"], 3000);
    assert_eq!(r["records_consumed"], 0);
    assert_eq!(r["stopped_by"], "count");
    assert_eq!(r["latency_of"], "ack");
    assert_eq!(r["latency_samples"], 3000, "one sample per record");
    assert_eq!(r["settings"]["records"], 3000);
    assert_eq!(r["settings"]["in_flight_batches"], 5);
    assert_eq!(r["settings"]["acks"], "cp");
    assert_eq!(r["settings"]["read"], serde_json::Value::Null);

    let r = bench_report(&cluster, &["consume", "--topic", "b", "--records", "3000"]);
    assert_eq!(r["mode"], "consume");
    assert_eq!(r["records_consumed"], 3000);
    assert_eq!(r["latency_of"], "fetch");
    assert!(r["latency_samples"].as_u64().unwrap() >= 1, "{r}");
    // Asking for more than there is reads what there is.
    let r = bench_report(&cluster, &["consume", "--topic", "b", "--read", "ap"]);
    assert_eq!(r["records_consumed"], 3000);
    assert_eq!(r["settings"]["read"], "ap");

    let r = bench_report(
        &cluster,
        &[
            "e2e",
            "--topic",
            "b",
            "--records",
            "1000",
            "--keys",
            "7",
            "--producers",
            "2",
        ],
    );
    assert_eq!(r["mode"], "e2e");
    assert_eq!(r["records_produced"], 1000);
    assert_eq!(r["records_consumed"], 1000, "only this run's records");
    assert_eq!(r["latency_of"], "end_to_end");
    assert_eq!(r["latency_samples"], 1000);
    assert_eq!(r["settings"]["keys"], 7);

    let r = bench_report(
        &cluster,
        &[
            "produce",
            "--topic",
            "b",
            "--one-at-a-time",
            "--records",
            "20",
            "--partition",
            "1",
            "--acks",
            "ap",
        ],
    );
    assert_eq!(r["records_produced"], 20);
    assert_eq!(r["settings"]["one_at_a_time"], true);
    assert_eq!(r["settings"]["partition"], 1);

    // Every record written above is in the topic once. The last 20 were acknowledged in AP
    // mode, before their commit: a read may briefly end short of them, never beyond.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = bench_report(
            &cluster,
            &["consume", "--topic", "b", "--records", "100000"],
        );
        let n = r["records_consumed"].as_u64().unwrap();
        assert!(n <= 3000 + 1000 + 20, "{r}");
        if n == 3000 + 1000 + 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "AP-acknowledged records not committed within 30 s: {r}"
        );
    }

    // Mistakes that need the cluster to be seen.
    let mut c = cluster.cli();
    c.args(["bench", "consume", "--topic", "nothing-here"]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("nothing-here"), "names the topic: {err}");
    let mut c = cluster.cli();
    c.args([
        "bench",
        "produce",
        "--topic",
        "b",
        "--partition",
        "3",
        "--records",
        "1",
    ]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(
        err.contains("--partition 3") && err.contains("3 partitions"),
        "{err}"
    );
}

#[test]
fn bench_refuses_bad_arguments_with_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "produce", "--in-flight", "6"], "--in-flight"),
        (&["bench", "produce", "--records", "0"], "--records"),
        (&["bench", "produce", "--record-size", "x"], "--record-size"),
        (
            &["bench", "produce", "--keys", "4", "--partition", "0"],
            "--partition",
        ),
        (&["bench", "consume", "--read", "quorum"], "quorum"),
        (&["bench", "produce", "--acks", "all"], "all"),
        (&["bench", "e2e", "--one-at-a-time"], "--one-at-a-time"),
        (
            &["bench", "e2e", "--duration-max-secs", "0"],
            "--duration-max-secs",
        ),
    ];
    for (args, named) in cases {
        let mut c = Command::new(fjord_bin());
        c.args(*args);
        let (ok, _, err) = run(c, None);
        assert!(!ok, "{args:?} was accepted");
        assert!(
            err.contains(named),
            "{args:?}: the error names {named}: {err}"
        );
    }
    // Checked before any node is contacted (there is none at this address).
    let mut c = Command::new(fjord_bin());
    c.args([
        "bench",
        "e2e",
        "--record-size",
        "8",
        "--brokers",
        "127.0.0.1:1",
    ]);
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("at least 16"), "{err}");
}
