//! TLS on real 3-node clusters (`fjord serve` processes, certificates from a test CA made
//! with rcgen): plaintext clients refused, clients trusting the CA served, client
//! certificates required when asked for, a certificate replaced on disk served without a
//! restart, a CA rotated on disk (old and new, then the new certificates, then the new CA
//! alone) without a restart, and a client certificate (valid, from the CA, naming no peer) refused on the
//! peer port. With authentication required and principals from client certificates only
//! (`--tls-principal-rules`), a group's reset by time and its lag in time reach partitions
//! led by another node than its coordinator (read there over the node-to-node service).
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fjord_client::security::{AclEntry, Operation, PatternType, Permission, ResourceType};
use fjord_client::{Client, ClientConfig, ClientTls, FetchOptions, ProducerConfig, ProducerRecord};
use fjord_proto::raft::IdentityRequest;
use fjord_proto::raft::raft_transport_client::RaftTransportClient;
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_tests::certs::{Issued, TestPki, write_atomically};
use fjord_tests::group::reads_led_elsewhere;
use fjord_tests::secure::SECURE_FLAGS;
use fjord_tests::{Cluster, Timing, serial, wait_for};
use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const DEADLINE: Duration = Duration::from_secs(30);
/// Bound on one call whose failure is expected.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS cluster and its certificates.
struct TlsCluster {
    cluster: Cluster,
    pki: TestPki,
    /// The alice client certificate: from the CA, naming no peer.
    alice: Issued,
    dir: tempfile::TempDir,
}

/// A 3-node cluster with TLS on (one node certificate for 127.0.0.1, read every 100 ms),
/// `--tls-client-auth client_auth`; the harness's client presents alice's certificate when
/// `with_cert`.
async fn tls_cluster(client_auth: &str, with_cert: bool) -> TlsCluster {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "fjord test CA");
    let node = pki.issue("node", "fjord-node", "fjord", &["127.0.0.1", "localhost"]);
    let alice = pki.issue("alice", "alice", "acme", &["alice.example"]);
    let ca = pki.ca();
    let mut flags = pki.serve_flags(&node, client_auth);
    flags.extend(["--tls-reload-interval-ms".into(), "100".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cert = with_cert.then_some((alice.cert.as_path(), alice.key.as_path()));
    let config = ClientConfig {
        tls: Some(ClientTls::from_files(&ca, cert.map(|c| c.0), cert.map(|c| c.1)).unwrap()),
        ..ClientConfig::default()
    };
    let cluster = Cluster::start_with_client(3, Timing::FAST, &flags, config).await;
    TlsCluster {
        cluster,
        pki,
        alice,
        dir,
    }
}

/// Creates `topic`, produces `n` records to it and reads them back.
async fn produce_and_fetch(client: &fjord_client::Client, topic: &str, n: usize) {
    client.create_topic(topic, 1, 3).await.expect("create");
    let producer = client.producer(topic, ProducerConfig::default()).unwrap();
    for i in 0..n {
        producer
            .send(ProducerRecord::new(format!("v{i}")).with_partition(0))
            .await
            .expect("send");
    }
    let got = client
        .fetch(topic, 0, 0, FetchOptions::default())
        .await
        .expect("fetch");
    assert_eq!(got.records.len(), n, "{:?}", got.records);
}

/// A Metadata call to `addr` on `endpoint`'s settings, bounded.
async fn metadata_at(endpoint: Endpoint) -> Result<(), String> {
    let channel = endpoint.timeout(CALL_TIMEOUT).connect_lazy();
    let mut client = FjordClient::new(channel);
    let call = client.metadata(fjord_proto::v1::MetadataRequest::default());
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{s:?}")),
        Err(_) => Err("timed out".into()),
    }
}

/// TLS settings trusting the test CA, with `identity` as the client certificate if given.
fn tls_config(ca: &Path, identity: Option<&Issued>) -> ClientTlsConfig {
    let mut t =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some(i) = identity {
        t = t.identity(Identity::from_pem(
            std::fs::read(&i.cert).unwrap(),
            std::fs::read(&i.key).unwrap(),
        ));
    }
    t
}

fn https(addr: &str, tls: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_are_served_plaintext_refused_and_peer_port_refuses_client_certificates() {
    let _serial = serial();
    let t = tls_cluster("optional", false).await;
    // A client trusting the CA (no certificate of its own: optional) produces and fetches.
    produce_and_fetch(&t.cluster.client(), "secure", 5).await;
    let ca = t.pki.ca();
    for node in &t.cluster.nodes {
        // Plaintext is refused.
        let plain = Endpoint::from_shared(format!("http://{}", node.addr)).unwrap();
        let refused = metadata_at(plain).await;
        assert!(refused.is_err(), "node {}: plaintext was served", node.id);
        // A client certificate from the CA is accepted on the client port...
        metadata_at(https(&node.addr, tls_config(&ca, Some(&t.alice))))
            .await
            .unwrap_or_else(|e| panic!("node {}: alice on the client port: {e}", node.id));
        // ... and refused on the peer port: it names no peer.
        let answer = peer_port_call(&node.peer_addr, &ca, Some(&t.alice)).await;
        assert!(
            answer.is_err(),
            "node {}: the peer port answered a client certificate",
            node.id
        );
        // So is a connection without a certificate.
        let answer = peer_port_call(&node.peer_addr, &ca, None).await;
        assert!(
            answer.is_err(),
            "node {}: the peer port answered without a certificate",
            node.id
        );
        let log = t.cluster.log_text(node.id);
        assert!(
            log.contains("refused a connection on the peer port"),
            "node {}: the refusal is logged",
            node.id
        );
    }
}

/// An internal RPC (CheckIdentity) on the peer port at `addr`, trusting `ca`, presenting
/// `identity` if given; bounded.
async fn peer_port_call(addr: &str, ca: &Path, identity: Option<&Issued>) -> Result<(), String> {
    let peer = https(addr, tls_config(ca, identity))
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    let mut client = RaftTransportClient::new(peer);
    let call = client.check_identity(IdentityRequest::default());
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{s:?}")),
        Err(_) => Err("timed out".into()),
    }
}

/// Two CAs, the clients' and the peers' own, a node certificate from each (127.0.0.1), and
/// mallory: a client certificate of the clients' CA naming the nodes' host, as many PKI
/// setups issue by default.
struct SplitTrust {
    dir: tempfile::TempDir,
    clients: TestPki,
    peers: TestPki,
    node: Issued,
    node_peer: Issued,
    mallory: Issued,
}

impl SplitTrust {
    fn new() -> SplitTrust {
        let dir = tempfile::tempdir().unwrap();
        let clients = TestPki::new(&dir.path().join("clients"), "fjord client CA");
        let peers = TestPki::new(&dir.path().join("peers"), "fjord peer CA");
        let names = ["127.0.0.1", "localhost"];
        SplitTrust {
            node: clients.issue("node", "fjord-node", "fjord", &names),
            node_peer: peers.issue("node", "fjord-node", "fjord", &names),
            mallory: clients.issue("mallory", "mallory", "acme", &["127.0.0.1"]),
            dir,
            clients,
            peers,
        }
    }

    /// `fjord serve`'s peer flags: the peer certificate, and `ca` as the peers' CA bundle.
    fn peer_flags(&self, ca: &Path) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--peer-tls-cert".into(),
            path(&self.node_peer.cert),
            "--peer-tls-key".into(),
            path(&self.node_peer.key),
            "--peer-tls-ca".into(),
            path(ca),
        ]
    }

    /// A 3-node cluster serving clients with the clients' CA (client certificates optional)
    /// and `extra` flags; its client trusts the clients' CA.
    async fn cluster(&self, extra: &[String]) -> Cluster {
        let mut flags = self.clients.serve_flags(&self.node, "optional");
        flags.extend(extra.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let config = ClientConfig {
            tls: Some(ClientTls::from_files(&self.clients.ca(), None, None).unwrap()),
            ..ClientConfig::default()
        };
        Cluster::start_with_client(3, Timing::FAST, &flags, config).await
    }
}

/// With the peers' own certificate and CA (`--peer-tls-*`), a client certificate from the
/// clients' CA is refused on the peer port even when it names a node's host (with one CA
/// for both it would be that node there: docs/operations.md), while the nodes replicate to
/// each other and clients are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_ca_of_their_own_refuses_client_certificates_that_name_a_node() {
    let _serial = serial();
    let t = SplitTrust::new();
    let SplitTrust {
        clients,
        peers,
        node,
        node_peer,
        mallory,
        ..
    } = &t;
    let cluster = t.cluster(&t.peer_flags(&peers.ca())).await;
    // Three replicas: the nodes reach each other through the peers' CA.
    produce_and_fetch(&cluster.client(), "split-trust", 5).await;
    for n in &cluster.nodes {
        // Mallory is a valid client on the client port...
        metadata_at(https(&n.addr, tls_config(&clients.ca(), Some(mallory))))
            .await
            .unwrap_or_else(|e| panic!("node {}: mallory on the client port: {e}", n.id));
        // ... and no node on the peer port (her side trusts the peers' CA, so the refusal
        // is the node's).
        let answer = peer_port_call(&n.peer_addr, &peers.ca(), Some(mallory)).await;
        assert!(
            answer.is_err(),
            "node {}: the peer port answered a client certificate naming the node's host",
            n.id
        );
        // Nor is a node's peer certificate a client on the client port.
        let answer = metadata_at(https(&n.addr, tls_config(&clients.ca(), Some(node_peer))));
        assert!(
            answer.await.is_err(),
            "node {}: the client port took a certificate of the peers' CA",
            n.id
        );
        // The peer port serves the peers' certificate, the client port the clients'.
        let presented = presented_certificate(&n.peer_addr, &peers.ca()).await;
        assert_eq!(presented, Some(node_peer.der.clone()), "node {}", n.id);
        let presented = presented_certificate(&n.addr, &clients.ca()).await;
        assert_eq!(presented, Some(node.der.clone()), "node {}", n.id);
    }
}

/// How many times node `id` has logged that it loaded a new CA bundle.
fn ca_loads(cluster: &Cluster, id: u64) -> usize {
    cluster
        .log_text(id)
        .matches("TLS: loaded a new CA bundle")
        .count()
}

/// Waits until every node has logged a CA load more than `before` says it had.
async fn wait_ca_loaded(cluster: &Cluster, before: &[usize]) {
    for (n, was) in cluster.nodes.iter().zip(before) {
        wait_for(&format!("node {} to load the CA", n.id), DEADLINE, || {
            let loaded = ca_loads(cluster, n.id) > *was;
            async move { loaded.then_some(()) }
        })
        .await;
    }
}

/// docs/operations.md's steps from one CA to the peers' own, on a running 3-node cluster:
/// (1) the peers' CA added to `--tls-ca` (no restart); (2) each node restarted in turn with
/// the peer files and a peer bundle of both CAs, the cluster ready after each (a node cut
/// off by the mixed trust would not be); (3) both bundles narrowed (no restart), then each
/// node restarted again so that every connection is made with the narrowed trust. Every
/// acknowledged write reads back, and afterwards the peer port refuses a client
/// certificate naming the nodes' host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_moves_to_a_peer_ca_without_losing_a_write() {
    let _serial = serial();
    let t = SplitTrust::new();
    let SplitTrust {
        clients,
        peers,
        mallory,
        ..
    } = &t;
    let mut cluster = t
        .cluster(&["--tls-reload-interval-ms".into(), "100".into()])
        .await;
    let client = cluster.client();
    client.create_topic("moving", 1, 3).await.expect("create");
    let producer = client
        .producer("moving", ProducerConfig::default())
        .unwrap();
    let mut written = Vec::new();
    let mut write = async |value: String| {
        producer
            .send(ProducerRecord::new(value.clone()).with_partition(0))
            .await
            .unwrap_or_else(|e| panic!("CP produce of {value}: {e}"));
        written.push(value);
    };
    write("one CA".into()).await;

    // (1) The peers' CA into every node's --tls-ca.
    let loads: Vec<usize> = [1, 2, 3].map(|id| ca_loads(&cluster, id)).to_vec();
    write_atomically(
        &clients.ca(),
        &format!("{}{}", clients.ca_pem(), peers.ca_pem()),
    );
    wait_ca_loaded(&cluster, &loads).await;

    // (2) Each node restarted with the peer files, its peer bundle holding both CAs.
    let bundle = t.dir.path().join("peer-bundle.pem");
    write_atomically(&bundle, &format!("{}{}", peers.ca_pem(), clients.ca_pem()));
    let peer_flags = t.peer_flags(&bundle);
    let peer_flags: Vec<&str> = peer_flags.iter().map(String::as_str).collect();
    for id in [1, 2, 3] {
        cluster.stop(id);
        cluster.restart_with(id, &peer_flags);
        cluster.wait_ready().await;
        write(format!("node {id} moved")).await;
    }

    // (3) Both bundles narrowed; then every node restarted once more.
    let loads: Vec<usize> = [1, 2, 3].map(|id| ca_loads(&cluster, id)).to_vec();
    write_atomically(&bundle, &peers.ca_pem());
    write_atomically(&clients.ca(), &clients.ca_pem());
    wait_ca_loaded(&cluster, &loads).await;
    for id in [1, 2, 3] {
        cluster.stop(id);
        cluster.restart_with(id, &peer_flags);
        cluster.wait_ready().await;
        write(format!("node {id} restarted narrowed")).await;
    }
    let got = client
        .fetch("moving", 0, 0, FetchOptions::default())
        .await
        .expect("fetch");
    let values: Vec<String> = got
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(values, written);
    for n in &cluster.nodes {
        let answer = peer_port_call(&n.peer_addr, &peers.ca(), Some(mallory)).await;
        assert!(answer.is_err(), "node {}: mallory on the peer port", n.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_refuses_a_client_without_a_certificate() {
    let _serial = serial();
    let t = tls_cluster("required", true).await;
    // The harness's client presents alice's certificate: served.
    produce_and_fetch(&t.cluster.client(), "mutual", 3).await;
    let ca = t.pki.ca();
    for node in &t.cluster.nodes {
        let without = metadata_at(https(&node.addr, tls_config(&ca, None))).await;
        assert!(
            without.is_err(),
            "node {}: a client without a certificate was served",
            node.id
        );
    }
}

/// The certificate `addr` presents in a fresh handshake (client port: no client
/// certificate needed with `optional`), DER.
async fn presented_certificate(addr: &str, ca: &Path) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).ok()? {
        roots.add(c.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let tls = tokio::time::timeout(CALL_TIMEOUT, connect)
        .await
        .ok()?
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

/// Waits until every node of `cluster` presents `cert` (`what`) to a client trusting `ca`.
async fn wait_serving(cluster: &Cluster, ca: &Path, cert: &Issued, what: &str) {
    for node in &cluster.nodes {
        wait_for(
            &format!("node {} to serve {what}", node.id),
            DEADLINE,
            || {
                let (addr, want) = (node.addr.clone(), cert.der.clone());
                async move { (presented_certificate(&addr, ca).await? == want).then_some(()) }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let _serial = serial();
    let t = tls_cluster("optional", false).await;
    let ca = t.pki.ca();
    let addr = t.cluster.nodes[0].addr.clone();
    let old = presented_certificate(&addr, &ca)
        .await
        .expect("a handshake");
    let new = t.pki.issue(
        "node",
        "fjord-node-renewed",
        "fjord",
        &["127.0.0.1", "localhost"],
    );
    assert_ne!(old, new.der, "a new certificate");
    wait_serving(&t.cluster, &ca, &new, "the new certificate").await;
    // The nodes reconnect to each other with it, and the cluster keeps working.
    produce_and_fetch(&t.cluster.client(), "renewed", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotated_on_disk_is_trusted_without_a_restart() {
    let _serial = serial();
    let mut t = tls_cluster("optional", false).await;
    let ca = t.pki.ca();
    let next = TestPki::new(&t.dir.path().join("next"), "fjord next CA");
    let bob = next.issue("bob", "bob", "acme", &["bob.example"]);
    let accepts = |addr: String, ca: std::path::PathBuf, who: Issued| async move {
        metadata_at(https(&addr, tls_config(&ca, Some(&who)))).await
    };
    // Before: the nodes trust the first CA only; bob's certificate is refused.
    for node in &t.cluster.nodes {
        assert!(
            accepts(node.addr.clone(), ca.clone(), bob.clone())
                .await
                .is_err(),
            "node {} accepted a certificate from a CA it was not given",
            node.id
        );
    }
    // 1. Both CAs in the bundle: every node comes to accept bob, without a restart.
    write_atomically(&ca, &format!("{}{}", t.pki.ca_pem(), next.ca_pem()));
    for node in &t.cluster.nodes {
        wait_for(
            &format!("node {} to trust the new CA", node.id),
            DEADLINE,
            || {
                let f = accepts(node.addr.clone(), ca.clone(), bob.clone());
                async move { f.await.ok() }
            },
        )
        .await;
    }
    // 2. The node certificate from the new CA, in place of the old one (key first).
    let renewed = next.issue("node", "fjord-node", "fjord", &["127.0.0.1", "localhost"]);
    // (`tls_cluster` gave the nodes `node.pem` and `node.key` of the first CA's directory.)
    let (cert_path, key_path) = (t.dir.path().join("node.pem"), t.dir.path().join("node.key"));
    write_atomically(&key_path, &std::fs::read_to_string(&renewed.key).unwrap());
    write_atomically(&cert_path, &std::fs::read_to_string(&renewed.cert).unwrap());
    wait_serving(&t.cluster, &ca, &renewed, "the new CA's certificate").await;
    // 3. The new CA alone: a certificate from the old one (alice's) is refused from now on.
    write_atomically(&ca, &next.ca_pem());
    for node in &t.cluster.nodes {
        wait_for(
            &format!("node {} to drop the old CA", node.id),
            DEADLINE,
            || {
                let f = accepts(node.addr.clone(), ca.clone(), t.alice.clone());
                async move { f.await.is_err().then_some(()) }
            },
        )
        .await;
    }
    // A node restarted now knows only the new CA and certificate: the others reach it and
    // it reaches them over new connections, verified both ways against what they reloaded
    // (it learns the metadata leader and every node), and the cluster works.
    t.cluster.set_client_config(ClientConfig {
        tls: Some(ClientTls::from_files(&ca, None, None).unwrap()),
        ..ClientConfig::default()
    });
    t.cluster.kill(3);
    t.cluster.restart(3);
    t.cluster.wait_ready().await;
    produce_and_fetch(&t.cluster.client(), "rotated", 3).await;
}

/// The settings of a client trusting `pki`'s CA and presenting `who`'s certificate.
fn presenting(pki: &TestPki, who: &Issued) -> ClientConfig {
    let tls = ClientTls::from_files(&pki.ca(), Some(&who.cert), Some(&who.key)).unwrap();
    ClientConfig {
        tls: Some(tls),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_known_by_its_certificate_sees_the_lag_of_partitions_led_elsewhere() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "fjord test CA");
    let node = pki.issue("node", "fjord-node", "fjord", &["127.0.0.1", "localhost"]);
    let admin = pki.issue("admin", "admin", "acme", &["admin.example"]);
    let dave = pki.issue("dave", "dave", "acme", &["dave.example"]);
    // No tokens anywhere: `O=acme,CN=admin` is User:admin (the superuser), `O=acme,CN=dave`
    // User:dave.
    let mut flags = pki.serve_flags(&node, "required");
    flags.extend(SECURE_FLAGS.iter().map(|f| f.to_string()));
    flags.extend([
        "--tls-principal-rules".into(),
        "RULE:^O=acme,CN=([^,]+)$/$1/L,DEFAULT".into(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster =
        Cluster::start_with_client(3, Timing::FAST, &flags, presenting(&pki, &admin)).await;
    let admin_client = cluster.client();
    let mut entries = Vec::new();
    for op in [Operation::Read, Operation::Describe] {
        for (resource_type, name) in [
            (ResourceType::Topic, "spread"),
            (ResourceType::Group, "spread-readers"),
        ] {
            entries.push(AclEntry {
                principal: "User:dave".into(),
                resource_type,
                pattern_type: PatternType::Literal,
                resource_name: name.into(),
                operation: op,
                permission: Permission::Allow,
            });
        }
    }
    for e in &entries {
        admin_client.add_acl(e).await.expect("add an ACL");
    }
    for addr in cluster.brokers() {
        let at = Client::connect(vec![addr.clone()], presenting(&pki, &admin)).unwrap();
        wait_for(&format!("dave's ACLs at {addr}"), DEADLINE, || async {
            let listed = at.list_acls(Some("User:dave")).await.ok()?;
            entries.iter().all(|e| listed.contains(e)).then_some(())
        })
        .await;
    }
    let dave_client = Client::connect(cluster.brokers(), presenting(&pki, &dave)).unwrap();
    reads_led_elsewhere(&admin_client, &dave_client, "spread", "spread-readers").await;
}
