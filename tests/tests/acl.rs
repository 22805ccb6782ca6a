//! Identities and ACLs on a real 3-node cluster run with `--authentication required
//! --authorization acl --superusers User:admin` (turned on by restarting an open cluster
//! whose users were created first, as an operator would): a request without a token is
//! UNAUTHENTICATED; a principal allowed to write topic `a` writes it but can neither read it
//! nor write `b`, each refusal PERMISSION_DENIED naming the principal, the operation and the
//! resource; a deny beats an allow; group heartbeats and offset commits are checked; the
//! superuser does everything; ACLs survive a restart of every node; a deleted user no longer
//! authenticates. The CLI takes its token from FJORD_TOKEN.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_client::security::{AclEntry, Operation, PatternType, Permission, ResourceType};
use fjord_client::{Client, ClientError, ProducerConfig, ProducerRecord};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{
    CommitOffsetsRequest, FetchRequest, FindCoordinatorRequest, GroupHeartbeatRequest,
    OffsetCommit, ProduceRequest, Record, Subscription,
};
use fjord_tests::secure::{client_as, client_at, restart_secure, start_secure, with_token};
use fjord_tests::{Cluster, serial, wait_for};
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(60);

fn allow(principal: &str, kind: ResourceType, name: &str, op: Operation) -> AclEntry {
    AclEntry {
        principal: principal.into(),
        resource_type: kind,
        pattern_type: PatternType::Literal,
        resource_name: name.into(),
        operation: op,
        permission: Permission::Allow,
    }
}

/// A PERMISSION_DENIED naming all of `says`.
fn denied(e: ClientError, says: &[&str]) {
    let ClientError::PermissionDenied(msg) = &e else {
        panic!("expected PERMISSION_DENIED, got {e:?}");
    };
    for s in says {
        assert!(msg.contains(s), "{msg:?} does not say {s:?}");
    }
}

/// A raw status that is PERMISSION_DENIED naming all of `says`, with its reason.
fn denied_status(s: tonic::Status, says: &[&str]) {
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    for w in says {
        assert!(
            s.message().contains(w),
            "{:?} does not say {w:?}",
            s.message()
        );
    }
    assert_eq!(
        s.metadata()
            .get("fjord-reason")
            .and_then(|v| v.to_str().ok()),
        Some("NOT_AUTHORIZED")
    );
}

async fn stub(addr: &str) -> FjordClient<tonic::transport::Channel> {
    FjordClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// One record to `topic` (partition 0) at `addr`, raw: the node's own answer.
async fn raw_produce(addr: &str, token: &str, topic: &str) -> Result<(), tonic::Status> {
    let req = ProduceRequest {
        topic: topic.into(),
        records: vec![Record {
            value: b"x".to_vec().into(),
            ..Default::default()
        }],
        partition: Some(0),
        ..Default::default()
    };
    stub(addr)
        .await
        .produce(with_token(req, token))
        .await
        .map(|_| ())
}

async fn raw_fetch(addr: &str, token: &str, topic: &str) -> Result<(), tonic::Status> {
    let req = FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        max_bytes: 4096,
        ..Default::default()
    };
    stub(addr)
        .await
        .fetch(with_token(req, token))
        .await
        .map(|_| ())
}

async fn send(client: &Client, topic: &str) -> Result<(), ClientError> {
    let p = client.producer(topic, ProducerConfig::default())?;
    p.send(ProducerRecord::new("v").with_partition(0))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_and_acls_are_enforced_on_a_secure_cluster() {
    let _serial = serial();
    let (mut cluster, tokens) = start_secure(3, &["alice", "bob", "carol"]).await;
    let admin = client_as(&cluster, &tokens["admin"]);
    requests_without_identity_are_refused(&cluster, &tokens["alice"]).await;
    for t in ["a", "b", "c1"] {
        admin.create_topic(t, 1, 3).await.unwrap();
    }
    admin
        .add_acl(&allow(
            "User:alice",
            ResourceType::Topic,
            "a",
            Operation::Write,
        ))
        .await
        .unwrap();
    a_writer_of_a_writes_only_a(&cluster, &tokens["alice"]).await;
    let deny_c1 = a_deny_beats_an_allow(&cluster, &admin, &tokens["alice"]).await;
    group_requests_are_checked(&cluster, &admin, &tokens["carol"]).await;
    the_superuser_does_everything(&admin).await;
    the_cli_takes_its_token_from_the_environment(&cluster, &tokens["admin"]).await;
    // ACLs survive a power loss of every node.
    restart_secure(&mut cluster, &tokens["admin"]).await;
    acls_survived(&cluster, &tokens, &deny_c1).await;
    a_deleted_user_no_longer_authenticates(&cluster, &admin, &tokens["bob"]).await;
}

/// No token: UNAUTHENTICATED, saying what is missing; a forged token too.
async fn requests_without_identity_are_refused(cluster: &Cluster, alice: &str) {
    // No token: UNAUTHENTICATED, saying what is missing; a wrong token too.
    let e = cluster.client().metadata().await.unwrap_err();
    let ClientError::Unauthenticated(msg) = &e else {
        panic!("expected UNAUTHENTICATED, got {e:?}")
    };
    assert!(msg.contains("bearer token"), "{msg}");
    let forged = alice.replace("alice", "admin");
    let e = client_as(cluster, &forged).metadata().await.unwrap_err();
    assert!(matches!(e, ClientError::Unauthenticated(_)), "{e:?}");
}

/// alice, allowed to write `a`, writes it, but neither reads `a` nor writes `b`.
async fn a_writer_of_a_writes_only_a(cluster: &Cluster, token: &str) {
    let node = cluster.brokers()[0].clone();
    let alice = client_as(cluster, token);
    // alice writes `a`, but neither reads `a` nor writes `b`.
    send(&alice, "a").await.unwrap();
    let s = raw_fetch(&node, token, "a").await.unwrap_err();
    denied_status(s, &["User:alice", "read", "topic \"a\""]);
    let s = raw_produce(&node, token, "b").await.unwrap_err();
    denied_status(s, &["User:alice", "write", "topic \"b\""]);
    denied(
        send(&alice, "b").await.unwrap_err(),
        &["User:alice", "topic \"b\""],
    );
    // alice sees only the topics she may describe, and may not administer.
    let names: Vec<String> = alice
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a"]);
    denied(
        alice.create_user("mallory").await.unwrap_err(),
        &["User:alice", "alter", "the cluster"],
    );
    denied(
        alice.delete_topic("a").await.unwrap_err(),
        &["delete", "topic \"a\""],
    );
}

/// Everything on topics starting with `c`, but a deny of writing `c1`: the deny wins.
async fn a_deny_beats_an_allow(cluster: &Cluster, admin: &Client, token: &str) -> AclEntry {
    let node = cluster.brokers()[0].clone();
    let alice = client_as(cluster, token);
    // Deny beats allow: everything on topics starting with `c`, but not writing `c1`.
    let mut all_c = allow("User:alice", ResourceType::Topic, "c", Operation::All);
    all_c.pattern_type = PatternType::Prefixed;
    let mut deny_c1 = allow("User:alice", ResourceType::Topic, "c1", Operation::Write);
    deny_c1.permission = Permission::Deny;
    admin.add_acl(&all_c).await.unwrap();
    admin.add_acl(&deny_c1).await.unwrap();
    let s = raw_produce(&node, token, "c1").await.unwrap_err();
    denied_status(s, &["User:alice", "write", "topic \"c1\"", "denied by"]);
    // Reading `c1` is allowed by the prefix entry (wait for a leader to answer it).
    wait_for("alice reads c1", DEADLINE, || async {
        let leader = alice.describe_topic("c1").await.ok()?.partitions[0].leader?;
        let addr = cluster.brokers()[leader as usize - 1].clone();
        raw_fetch(&addr, token, "c1").await.ok()
    })
    .await;

    deny_c1
}

/// The superuser does everything, with no ACL entry of its own.
async fn the_superuser_does_everything(admin: &Client) {
    // The superuser does everything, with no ACL entry of its own.
    send(admin, "b").await.unwrap();
    admin.create_topic("z", 1, 1).await.unwrap();
    admin.delete_topic("z").await.unwrap();
    let acls = admin.list_acls(Some("User:alice")).await.unwrap();
    assert_eq!(acls.len(), 3, "{acls:?}");
}

/// The CLI: a token from FJORD_TOKEN; JSON listing; no token refused; a user created.
async fn the_cli_takes_its_token_from_the_environment(cluster: &Cluster, admin: &str) {
    // The CLI: a token from FJORD_TOKEN; JSON listing; no token refused.
    let out = cluster
        .cli()
        .env("FJORD_TOKEN", admin)
        .args([
            "acl",
            "list",
            "--principal",
            "User:alice",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|v| v["operation"] == "write"
            && v["resource"] == "c1"
            && v["permission"] == "deny"),
        "{lines:?}"
    );
    let out = cluster
        .cli()
        .env_remove("FJORD_TOKEN")
        .args(["topic", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unauthenticated"),
        "{out:?}"
    );
    let out = cluster
        .cli()
        .env("FJORD_TOKEN", admin)
        .args(["user", "create", "dave", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dave = client_as(cluster, created["token"].as_str().unwrap());
    assert!(
        dave.list_topics().await.unwrap().is_empty(),
        "nothing allowed"
    );
}

async fn acls_survived(
    cluster: &Cluster,
    tokens: &std::collections::BTreeMap<String, String>,
    deny_c1: &AclEntry,
) {
    let alice = client_as(cluster, &tokens["alice"]);
    send(&alice, "a").await.unwrap();
    for addr in cluster.brokers() {
        let s = raw_produce(&addr, &tokens["alice"], "b").await.unwrap_err();
        denied_status(s, &["User:alice", "write", "topic \"b\""]);
        let listed = client_at(vec![addr], &tokens["admin"])
            .list_acls(None)
            .await
            .unwrap();
        assert!(listed.contains(deny_c1), "{listed:?}");
    }
}

async fn a_deleted_user_no_longer_authenticates(cluster: &Cluster, admin: &Client, token: &str) {
    // A deleted user no longer authenticates, on any node.
    admin.delete_user("bob").await.unwrap();
    for addr in cluster.brokers() {
        let bob = client_at(vec![addr.clone()], token);
        wait_for(&format!("bob refused at {addr}"), DEADLINE, || async {
            matches!(bob.metadata().await, Err(ClientError::Unauthenticated(_))).then_some(())
        })
        .await;
    }
}

/// carol may read group `g` and topic `a`: she joins `g` and commits to `a`; a heartbeat of
/// group `h` and a commit to topic `b` are refused.
async fn group_requests_are_checked(cluster: &Cluster, admin: &Client, carol: &str) {
    admin
        .add_acl(&allow(
            "User:carol",
            ResourceType::Group,
            "g",
            Operation::Read,
        ))
        .await
        .unwrap();
    admin
        .add_acl(&allow(
            "User:carol",
            ResourceType::Topic,
            "a",
            Operation::Read,
        ))
        .await
        .unwrap();
    let node = cluster.brokers()[0].clone();
    let beat = |group: &str| GroupHeartbeatRequest {
        group: group.into(),
        member_epoch: 0,
        rebalance_timeout_ms: Some(10_000),
        subscription: Some(Subscription {
            topics: vec!["a".into()],
            pattern: None,
        }),
        ..Default::default()
    };
    let s = stub(&node)
        .await
        .group_heartbeat(with_token(beat("h"), carol))
        .await
        .unwrap_err();
    denied_status(s, &["User:carol", "read", "group \"h\""]);

    // Join `g` at its coordinator (created on the first group request).
    let joined = wait_for("carol joins g", DEADLINE, || async {
        let found = stub(&node)
            .await
            .find_coordinator(with_token(
                FindCoordinatorRequest { group: "g".into() },
                carol,
            ))
            .await
            .ok()?
            .into_inner();
        let answer = stub(&found.address)
            .await
            .group_heartbeat(with_token(beat("g"), carol))
            .await
            .ok()?
            .into_inner();
        Some((found.address, answer))
    })
    .await;
    let (coordinator, member) = joined;
    let commit = |topic: &str| CommitOffsetsRequest {
        group: "g".into(),
        member_id: member.member_id.clone(),
        member_epoch: member.member_epoch,
        offsets: vec![OffsetCommit {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            metadata: String::new(),
        }],
    };
    let s = stub(&coordinator)
        .await
        .commit_offsets(with_token(commit("b"), carol))
        .await
        .unwrap_err();
    denied_status(s, &["User:carol", "read", "topic \"b\""]);
    // The same commit to `a` passes the ACL check (the group may still refuse it, e.g.
    // for a partition not yet owned, but never as PERMISSION_DENIED).
    let r = stub(&coordinator)
        .await
        .commit_offsets(with_token(commit("a"), carol))
        .await;
    if let Err(s) = r {
        assert_ne!(s.code(), Code::PermissionDenied, "{s:?}");
    }
}
