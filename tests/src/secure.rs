//! A cluster with authentication and ACLs on, reached the way an operator turns security on
//! in a running cluster: users are created while it is open, then every node restarts with
//! `--authentication required --authorization acl --superusers User:admin`.

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_client::{Client, ClientConfig, Token};

use crate::{Cluster, wait_for};

/// The flags of a secure node.
pub const SECURE_FLAGS: &[&str] = &[
    "--authentication",
    "required",
    "--authorization",
    "acl",
    "--superusers",
    "User:admin",
];

/// How long a secure cluster gets to answer after its restart.
const READY: Duration = Duration::from_secs(60);

/// A client of `cluster` that sends `token`.
pub fn client_as(cluster: &Cluster, token: &str) -> Client {
    client_at(cluster.brokers(), token)
}

/// A client of the nodes `brokers` that sends `token`.
pub fn client_at(brokers: Vec<String>, token: &str) -> Client {
    let config = ClientConfig {
        token: Some(Token(token.to_string())),
        ..ClientConfig::default()
    };
    Client::connect(brokers, config).expect("client")
}

/// A request carrying `token` as `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a token is ASCII"),
    );
    r
}

/// Starts `n` open nodes, creates `admin` and `users` (their tokens by name), then restarts
/// every node with [`SECURE_FLAGS`] and waits until each answers the admin.
pub async fn start_secure(n: usize, users: &[&str]) -> (Cluster, BTreeMap<String, String>) {
    let mut cluster = Cluster::start(n).await;
    let open = cluster.client();
    let mut tokens = BTreeMap::new();
    for name in std::iter::once(&"admin").chain(users) {
        let u = open.create_user(name).await.expect("create user");
        assert_eq!(u.principal, format!("User:{name}"));
        tokens.insert(name.to_string(), u.token);
    }
    restart_secure(&mut cluster, &tokens["admin"]).await;
    (cluster, tokens)
}

/// Power loss of every node, then every node back with [`SECURE_FLAGS`]; waits until each
/// answers Metadata to `admin_token` with a metadata leader and every node.
pub async fn restart_secure(cluster: &mut Cluster, admin_token: &str) {
    cluster.kill_all();
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    for id in &ids {
        cluster.restart_with(*id, SECURE_FLAGS);
    }
    for addr in cluster.brokers() {
        let admin = client_at(vec![addr.clone()], admin_token);
        let n = ids.len();
        wait_for(&format!("{addr} ready for the admin"), READY, || {
            let admin = admin.clone();
            async move {
                let m = admin.metadata().await.ok()?;
                (m.metadata_leader.is_some() && m.nodes.len() == n).then_some(())
            }
        })
        .await;
    }
}
