//! A Python client generated from `proto/fjord.proto` (grpcio-tools from PyPI, installed by
//! `.ci/run`) against a real 3-node cluster: `tests/python/client_test.py` says what it checks;
//! `tests/python/health_reflection_test.py` checks the health service and server reflection
//! with the standard Python packages (grpcio-health-checking, grpcio-reflection).
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/auth_check.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg("py-secure")
        .args(cluster.brokers())
        .env("FJORD_TOKEN", &tokens["py"])
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
        "the Python client failed:\n{stdout}\n{stderr}\nnode 1 log:\n{}",
        cluster.log_tail(1)
    );
    assert!(stdout.contains("produced at offset"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_checks_health_and_lists_the_api_by_reflection() {
    let _serial = serial();
    let probe = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1, grpc_reflection.v1alpha"])
        .status()
        .expect("python3 runs");
    assert!(
        probe.success(),
        "python3 lacks grpcio-health-checking/grpcio-reflection: install them \
         (`python3 -m pip install \"grpcio-health-checking==1.85.*\" \"grpcio-reflection==1.85.*\"`, \
         as .ci/run does)"
    );
    let cluster = Cluster::start(3).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/health_reflection_test.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args(cluster.brokers())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the Python check finishes within 2 minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python health and reflection check failed:\n{stdout}\n{stderr}\nnode 1 log:\n{}",
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
