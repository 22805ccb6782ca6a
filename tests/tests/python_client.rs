//! A Python client generated from `proto/fjord.proto` (grpcio-tools from PyPI, installed by
//! `.ci/run`) against real 3-node clusters: `tests/python/client_test.py` says what it checks;
//! `health_reflection_test.py` checks the health service and server reflection with the
//! standard Python packages (grpcio-health-checking, grpcio-reflection); `auth_check.py`
//! connects with a token; `tls_test.py` with TLS and a client certificate.
#![allow(clippy::await_holding_lock)]

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use fjord_tests::{Cluster, serial};

/// Fails with how to install them unless python3 imports every one of `modules`.
fn require_python(modules: &str, install: &str) {
    let probe = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .expect("python3 runs");
    assert!(
        probe.success(),
        "python3 lacks {modules}: install them (`python3 -m pip install {install}`, as .ci/run does)"
    );
}

/// Runs `tests/python/<script>` with `args` then the cluster's brokers (and `env`) within
/// `within`; fails with its output and node 1's log unless it succeeds. Returns its stdout.
async fn run_script<A: AsRef<OsStr>>(
    cluster: &Cluster,
    script: &str,
    args: &[A],
    env: &[(&str, &str)],
    within: Duration,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .args(cluster.brokers())
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(within, out)
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within {within:?}"))
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{stderr}\nnode 1 log:\n{}",
        cluster.log_tail(1)
    );
    println!("{stdout}");
    stdout
}

const NO_ARGS: &[&str] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_produces_fetches_and_gets_precise_codes() {
    let _serial = serial();
    require_python("grpc, grpc_tools", "grpcio grpcio-tools");
    let cluster = Cluster::start(3).await;
    run_script(
        &cluster,
        "client_test.py",
        NO_ARGS,
        &[],
        Duration::from_secs(300),
    )
    .await;
}

/// `tests/python/auth_check.py` against a cluster with authentication and ACLs on: the
/// Python client connects with a token and produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_connects_with_a_token_and_produces() {
    use fjord_client::security::{AclEntry, Operation, PatternType, Permission, ResourceType};
    let _serial = serial();
    let (cluster, tokens) = fjord_tests::secure::start_secure(3, &["py"]).await;
    let admin = fjord_tests::secure::client_as(&cluster, &tokens["admin"]);
    admin.create_topic("py-secure", 1, 3).await.unwrap();
    admin
        .add_acl(&AclEntry {
            principal: "User:py".into(),
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Literal,
            resource_name: "py-secure".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        })
        .await
        .unwrap();
    let env = [("FJORD_TOKEN", tokens["py"].as_str())];
    let stdout = run_script(
        &cluster,
        "auth_check.py",
        &["py-secure"],
        &env,
        Duration::from_secs(120),
    )
    .await;
    assert!(stdout.contains("produced at offset"), "{stdout}");
}

/// `tests/python/health_reflection_test.py`: the health service and server reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_checks_health_and_lists_the_api_by_reflection() {
    let _serial = serial();
    require_python(
        "grpc, grpc_health.v1, grpc_reflection.v1alpha",
        "\"grpcio-health-checking==1.85.*\" \"grpcio-reflection==1.85.*\"",
    );
    let cluster = Cluster::start(3).await;
    run_script(
        &cluster,
        "health_reflection_test.py",
        NO_ARGS,
        &[],
        Duration::from_secs(120),
    )
    .await;
}

/// The Python client over TLS (`tests/python/tls_test.py`): `grpc.ssl_channel_credentials`
/// with the cluster's CA and a client certificate, against nodes requiring one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_connects_with_tls_and_produces() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = fjord_tests::certs::TestPki::new(dir.path(), "fjord test CA");
    let node = pki.issue("node", "fjord-node", "fjord", &["127.0.0.1", "localhost"]);
    let alice = pki.issue("alice", "alice", "acme", &["alice.example"]);
    let ca = pki.ca();
    let flags = pki.serve_flags(&node, "required");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tls = fjord_client::ClientTls::from_files(&ca, Some(&alice.cert), Some(&alice.key));
    let config = fjord_client::ClientConfig {
        tls: Some(tls.unwrap()),
        ..Default::default()
    };
    let cluster = Cluster::start_with_client(3, fjord_tests::Timing::FAST, &flags, config).await;
    let args = [&ca, &alice.cert, &alice.key];
    run_script(
        &cluster,
        "tls_test.py",
        &args,
        &[],
        Duration::from_secs(120),
    )
    .await;
}
