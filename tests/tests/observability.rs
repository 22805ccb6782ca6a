//! Metrics and health on real `fjord serve` processes:
//! - every node of a 3-node cluster serves `/metrics` on its `--metrics-listen` port (404
//!   elsewhere); after produces (acks cp and ap), fetches and a consumer group that read 4 of
//!   15 records, the series are there with plausible values: 15 records in across the nodes
//!   (only leaders count), at least 19 out, latency histograms by acks and read mode, no
//!   partition without a leader, fsyncs and group commits counted, an election and a
//!   leader, the group's lag of 11 records on its coordinator and its lag in seconds (the
//!   age of its oldest unconsumed record, read from the coordinator's replica), the disk's
//!   free space;
//! - `promtool check metrics` accepts each node's output (Debian's `prometheus` package;
//!   the test fails if promtool is missing, unless FJORD_SKIP_PROMTOOL=1), `promtool check
//!   rules` accepts deploy/prometheus/alerts.yml, and every metric its rules name is served;
//! - a node still checking its data directory with its peers (started alone, its peers
//!   not up) answers the gRPC health service NOT_SERVING, for "" and "fjord.v1.Fjord", and
//!   its metrics endpoint 503, and (`--log-format json`) logs one JSON object per line; the
//!   running cluster's nodes answer SERVING;
//! - a node told to stop (SIGTERM) tells its health watchers NOT_SERVING, ends their streams,
//!   and exits cleanly.
#![allow(clippy::await_holding_lock)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use fjord_tests::{Cluster, Timing, fjord_bin, free_ports, serial, wait_for};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const DEADLINE: Duration = Duration::from_secs(60);
const TOPIC: &str = "observed";
const GROUP: &str = "watchers";

/// `GET path` on `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The value of the sample `series` (a name, with its labels as printed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// [`sample`] summed over every node's scrape (0 where absent).
fn total(scrapes: &[String], series: &str) -> f64 {
    scrapes.iter().filter_map(|t| sample(t, series)).sum()
}

fn scrape_all(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .map(|p| {
            let (status, body) = http_get(&format!("127.0.0.1:{p}"), "/metrics").unwrap();
            assert_eq!(status, 200, "GET /metrics on port {p}: {body}");
            body
        })
        .collect()
}

/// Runs `promtool check metrics` on `text`; fails if promtool is not installed, unless
/// FJORD_SKIP_PROMTOOL=1.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("FJORD_SKIP_PROMTOOL").as_deref() == Ok("1") {
                eprintln!("promtool not installed: its check is skipped (FJORD_SKIP_PROMTOOL=1)");
                return;
            }
            panic!(
                "promtool is not installed: install Debian's `prometheus` package \
                 (`apt-get install prometheus`, as .ci/run does), or set FJORD_SKIP_PROMTOOL=1 \
                 to skip this check"
            );
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the output:\n{}{}\n--- output:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// `promtool check rules` accepts deploy/prometheus/alerts.yml, and every fjord metric its
/// expressions name is one the nodes serve.
fn alert_rules_check(scrapes: &[String]) {
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&rules).expect("deploy/prometheus/alerts.yml");
    let families: std::collections::BTreeSet<&str> = scrapes
        .iter()
        .flat_map(|s| s.lines())
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let mut named = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("fjord_") {
            continue;
        }
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| word.strip_suffix(s).filter(|f| families.contains(f)))
            .unwrap_or(word);
        assert!(
            families.contains(family),
            "alerts.yml names {word}, which no node serves"
        );
        named += 1;
    }
    assert!(named > 0, "alerts.yml names no fjord metric");
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules refused alerts.yml:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        // promtool_check has already failed or been skipped (FJORD_SKIP_PROMTOOL=1).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn run_cli(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let mut c = cluster.cli();
    c.args(args);
    let (ok, stdout, stderr) = fjord_tests::run_command(c, stdin);
    assert!(ok, "fjord {args:?} failed: {stderr}");
    stdout
}

async fn health(addr: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(answer.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_plausible_metrics_that_promtool_accepts() {
    let _serial = serial();
    let ports = free_ports(3);
    let metrics_ports = ports.clone();
    let cluster = Cluster::start_with_node_args(3, Timing::FAST, &[], move |id| {
        vec![
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", metrics_ports[id as usize - 1]),
        ]
    })
    .await;
    for n in &cluster.nodes {
        for service in ["", "fjord.v1.Fjord"] {
            let status = wait_for("SERVING", DEADLINE, || async {
                health(&n.addr, service)
                    .await
                    .ok()
                    .filter(|s| *s == ServingStatus::Serving)
            })
            .await;
            assert_eq!(status, ServingStatus::Serving);
        }
    }
    let (status, _) = http_get(&format!("127.0.0.1:{}", ports[0]), "/other").unwrap();
    assert_eq!(status, 404);

    run_cli(
        &cluster,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "1",
            "--replication",
            "3",
        ],
        None,
    );
    let ten: String = (0..10).map(|i| format!("cp-{i}\n")).collect();
    run_cli(&cluster, &["produce", TOPIC, "--acks", "cp"], Some(&ten));
    let five: String = (0..5).map(|i| format!("ap-{i}\n")).collect();
    run_cli(&cluster, &["produce", TOPIC, "--acks", "ap"], Some(&five));
    let read = run_cli(
        &cluster,
        &["consume", TOPIC, "--from-beginning", "--count", "15"],
        None,
    );
    assert_eq!(read.lines().count(), 15);
    run_cli(
        &cluster,
        &[
            "consume",
            TOPIC,
            "--group",
            GROUP,
            "--from-beginning",
            "--count",
            "4",
        ],
        None,
    );

    // Gauges are read at scrape time: poll until the group's commit and every leader are in
    // the nodes' views.
    let lag_series = format!("fjord_consumer_group_lag_records{{group=\"{GROUP}\"}}");
    let seconds_series = format!("fjord_consumer_group_lag_seconds{{group=\"{GROUP}\"}}");
    let scrapes = wait_for(
        "the group's lag and every partition's leader",
        DEADLINE,
        || {
            let scrapes = scrape_all(&ports);
            let lag = total(&scrapes, &lag_series);
            let aged = scrapes.iter().any(|t| sample(t, &seconds_series).is_some());
            let leaderless = total(&scrapes, "fjord_partitions_leaderless");
            std::future::ready((lag == 11.0 && aged && leaderless == 0.0).then_some(scrapes))
        },
    )
    .await;

    assert_eq!(total(&scrapes, "fjord_produced_records_total"), 15.0);
    assert!(total(&scrapes, "fjord_produced_bytes_total") >= 15.0 * 4.0);
    assert!(total(&scrapes, "fjord_fetched_records_total") >= 19.0);
    assert!(total(&scrapes, "fjord_fetched_bytes_total") > 0.0);
    let requests = |name: &str, labels: &str| total(&scrapes, &format!("{name}_count{{{labels}}}"));
    let produce = "fjord_produce_request_duration_seconds";
    assert!(requests(produce, "acks=\"cp\",outcome=\"ok\"") >= 1.0);
    assert!(requests(produce, "acks=\"ap\",outcome=\"ok\"") >= 1.0);
    assert!(
        requests(
            "fjord_fetch_request_duration_seconds",
            "read=\"cp\",outcome=\"ok\""
        ) >= 1.0
    );
    // The topic's partition and the groups' topic's, three replicas each.
    assert!(total(&scrapes, "fjord_partition_replicas") >= 6.0);
    assert!(total(&scrapes, "fjord_partitions_leading") >= 2.0);
    assert!(total(&scrapes, "fjord_storage_fsync_duration_seconds_count") > 0.0);
    assert!(
        total(
            &scrapes,
            "fjord_storage_commit_batch_requests_bucket{le=\"+Inf\"}"
        ) >= total(&scrapes, "fjord_storage_fsync_duration_seconds_count")
    );
    assert!(total(&scrapes, "fjord_raft_elections_started_total") >= 1.0);
    assert!(total(&scrapes, "fjord_raft_leader_changes_total") >= 3.0);
    for (i, text) in scrapes.iter().enumerate() {
        for series in [
            "fjord_partitions_under_replicated",
            "fjord_partitions_quiet",
            "fjord_partitions_hibernated",
            "fjord_raft_uncommitted_entries",
            "fjord_raft_uncommitted_entries_max",
            "fjord_disk_refusing_produces",
            "fjord_produce_refused_disk_total",
        ] {
            assert!(
                sample(text, series).is_some(),
                "node {}: no {series}",
                i + 1
            );
        }
        assert_eq!(sample(text, "fjord_produce_refused_disk_total"), Some(0.0));
        assert!(sample(text, "fjord_disk_available_bytes").is_some_and(|b| b > 0.0));
        promtool_check(text);
    }
    alert_rules_check(&scrapes);
    // Only the group's coordinator reports it, in records and in seconds (11 records left:
    // the oldest one's age, never negative).
    let reporting: Vec<&String> = scrapes
        .iter()
        .filter(|t| sample(t, &lag_series).is_some())
        .collect();
    assert_eq!(reporting.len(), 1);
    let seconds = sample(reporting[0], &seconds_series);
    assert!(seconds.is_some_and(|s| s >= 0.0), "{seconds:?}");
    assert!(reporting[0].contains("# TYPE fjord_consumer_group_lag_seconds gauge"));
    let aged = scrapes
        .iter()
        .filter(|t| sample(t, &seconds_series).is_some());
    assert_eq!(aged.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_checking_its_directory_is_not_serving() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(5);
    let addr = format!("127.0.0.1:{}", ports[0]);
    let metrics = format!("127.0.0.1:{}", ports[3]);
    // Node 1 of 3, alone: it asks its peers about its directory until they answer (its own
    // peer port is ports[4]; the client port is not a peer address).
    let peers = format!(
        "1=127.0.0.1:{},2=127.0.0.1:{},3=127.0.0.1:{}",
        ports[4], ports[1], ports[2]
    );
    let log = std::fs::File::create(dir.path().join("node1.log")).unwrap();
    let mut child = Command::new(fjord_bin())
        .args(["serve", "--id", "1", "--listen", &addr, "--peers", &peers])
        .arg("--data-dir")
        .arg(dir.path().join("node1"))
        .args(["--metrics-listen", &metrics, "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning fjord serve");
    for service in ["", "fjord.v1.Fjord"] {
        let status = wait_for("a health answer", DEADLINE, || async {
            health(&addr, service).await.ok()
        })
        .await;
        assert_eq!(status, ServingStatus::NotServing, "service {service:?}");
    }
    let (status, body) = wait_for("the metrics endpoint", DEADLINE, || {
        std::future::ready(http_get(&metrics, "/metrics").ok())
    })
    .await;
    assert_eq!(status, 503, "{body}");
    let _ = child.kill();
    let _ = child.wait();
    // --log-format json: every line one JSON object, with its level and message.
    let log = std::fs::read_to_string(dir.path().join("node1.log")).unwrap();
    assert!(log.lines().count() >= 1, "no log lines");
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_tells_its_health_watchers_not_serving_and_exits() {
    let _serial = serial();
    let mut cluster = Cluster::start(1).await;
    let addr = cluster.nodes[0].addr.clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "fjord.v1.Fjord".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // A started node serves once its metadata holds this start's registration, which may
    // come a moment after the cluster reports a leader: NOT_SERVING may come first.
    let serving = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(m)) = watch.message().await {
            if m.status() == ServingStatus::Serving {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true), "the node never reported SERVING");
    let stopper = tokio::task::spawn_blocking(move || {
        let status = cluster.stop(1);
        (cluster, status)
    });
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(m)) = watch.message().await {
            seen.push(m.status());
        }
    })
    .await;
    assert!(ended.is_ok(), "the health watch did not end; saw {seen:?}");
    assert_eq!(seen, vec![ServingStatus::NotServing]);
    let (cluster, status) = stopper.await.unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the node did not exit cleanly ({status:?}): {}",
        cluster.log_tail(1)
    );
}
