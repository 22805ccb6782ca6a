//! A Python client generated from `proto/fjord.proto` (grpcio-tools from PyPI, installed by
//! `.ci/run`) against a real 3-node cluster: `tests/python/client_test.py` says what it checks.
#![allow(clippy::await_holding_lock)]

use std::path::Path;

use fjord_tests::{Cluster, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_produces_fetches_and_gets_precise_codes() {
    let _serial = serial();
    let probe = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .expect("python3 runs");
    assert!(
        probe.success(),
        "python3 lacks grpcio/grpcio-tools: install them (`python3 -m pip install grpcio grpcio-tools`, as .ci/run does)"
    );
    let cluster = Cluster::start(3).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_test.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args(cluster.brokers())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), out)
        .await
        .expect("the Python client finishes within 5 minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{stderr}\nnode 1 log:\n{}",
        cluster.log_tail(1)
    );
    println!("{stdout}");
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
    let paths = [&node.cert, &node.key, &ca].map(|p| p.display().to_string());
    let flags = [
        "--tls-cert",
        &paths[0],
        "--tls-key",
        &paths[1],
        "--tls-ca",
        &paths[2],
        "--tls-client-auth",
        "required",
    ];
    let tls = fjord_client::ClientTls::from_files(&ca, Some(&alice.cert), Some(&alice.key));
    let config = fjord_client::ClientConfig {
        tls: Some(tls.unwrap()),
        ..Default::default()
    };
    let cluster = Cluster::start_with_client(3, fjord_tests::Timing::FAST, &flags, config).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tls_test.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args([&ca, &alice.cert, &alice.key])
        .args(cluster.brokers())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the Python client finishes within 2 minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python TLS client failed:\n{stdout}\n{stderr}\nnode 1 log:\n{}",
        cluster.log_tail(1)
    );
    println!("{stdout}");
}
