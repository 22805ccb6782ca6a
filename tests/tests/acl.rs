//! Identities and ACLs on a real 3-node cluster run with `--authentication required
//! --authorization acl --superusers User:admin` (turned on by restarting an open cluster
//! whose users were created first, as an operator would): a request without a token is
//! UNAUTHENTICATED; a principal allowed to write topic `a` writes it but can neither read it
//! nor write `b`, each refusal PERMISSION_DENIED naming the principal, the operation and the
//! resource; a deny beats an allow; group heartbeats and offset commits are checked; the
//! superuser does everything; ACLs survive a restart of every node; a deleted user no longer
//! authenticates. The CLI takes its token from FJORD_TOKEN. And the security review's fixes:
//! a named producer needs write on its name; ResetOffsets needs read on the topics it moves;
//! a heartbeat's subscription is checked (literal names refused, pattern matches hidden);
//! Metadata refuses existing and missing names alike; offsets are shown only for describable
//! topics; only a superuser manages a superuser's user; `*` does not reach `__fjord*`. And a
//! reset by time and DescribeGroup's lag in time reach partitions led by another node than
//! the group's coordinator (read there over the node-to-node service, no token forwarded).
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_client::security::{AclEntry, Operation, PatternType, Permission, ResourceType};
use fjord_client::{Client, ClientError, ProducerConfig, ProducerRecord};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{
    CommitOffsetsRequest, DescribeGroupRequest, DescribeGroupResponse, FetchOffsetsRequest,
    FetchRequest, FindCoordinatorRequest, GroupHeartbeatRequest, InitProducerRequest,
    MetadataRequest, OffsetCommit, ProduceRequest, Record, ResetOffsetsRequest, Subscription,
    TopicPartitions, reset_offsets_request,
};
use fjord_tests::group::reads_led_elsewhere;
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
    acl_everywhere(
        &cluster,
        &admin,
        &allow("User:alice", ResourceType::Topic, "a", Operation::Write),
        true,
    )
    .await;
    a_writer_of_a_writes_only_a(&cluster, &tokens["alice"]).await;
    let deny_c1 = a_deny_beats_an_allow(&cluster, &admin, &tokens["alice"]).await;
    group_requests_are_checked(&cluster, &admin, &tokens["carol"]).await;
    named_producers_need_write_on_their_name(&cluster, &admin, &tokens["alice"]).await;
    metadata_refuses_existing_and_missing_names_alike(&cluster, &tokens["alice"]).await;
    resets_and_offsets_are_checked_per_topic(&cluster, &admin, &tokens["carol"]).await;
    subscriptions_are_checked(&cluster, &admin, &tokens["carol"]).await;
    only_a_superuser_manages_a_superuser(&admin, &cluster, &tokens["carol"]).await;
    wildcards_do_not_reach_internal_topics(&cluster, &admin, &tokens["carol"]).await;
    the_superuser_does_everything(&admin).await;
    the_cli_takes_its_token_from_the_environment(&cluster, &tokens["admin"]).await;
    // ACLs survive a power loss of every node.
    restart_secure(&mut cluster, &tokens["admin"]).await;
    acls_survived(&cluster, &tokens, &deny_c1).await;
    a_deleted_user_no_longer_authenticates(&cluster, &admin, &tokens["bob"]).await;
}

/// The rights a reader of `topic` and `group` needs to reset the group and see its lag.
fn reader_of(principal: &str, topic: &str, group: &str) -> Vec<AclEntry> {
    let mut out = Vec::new();
    for op in [Operation::Read, Operation::Describe] {
        out.push(allow(principal, ResourceType::Topic, topic, op));
        out.push(allow(principal, ResourceType::Group, group, op));
    }
    out
}

/// dave (a token, read and describe on topic `spread` and group `spread-readers`) resets the
/// group by time and describes it: for the partitions another node than the coordinator
/// leads, the coordinator reads at their leader over the node-to-node service (the peer
/// port, its own identity: no token travels), after checking dave's rights itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_by_time_and_lag_reach_partitions_led_by_another_node() {
    let _serial = serial();
    let (cluster, tokens) = start_secure(3, &["dave"]).await;
    let admin = client_as(&cluster, &tokens["admin"]);
    for entry in reader_of("User:dave", "spread", "spread-readers") {
        acl_everywhere(&cluster, &admin, &entry, true).await;
    }
    let dave = client_as(&cluster, &tokens["dave"]);
    reads_led_elsewhere(&admin, &dave, "spread", "spread-readers").await;
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
    acl_everywhere(cluster, admin, &all_c, true).await;
    acl_everywhere(cluster, admin, &deny_c1, true).await;
    let s = raw_produce(&node, token, "c1").await.unwrap_err();
    denied_status(
        s,
        &[
            "User:alice",
            "write",
            "topic \"c1\"",
            "an ACL entry denies it",
        ],
    );
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
    acl_everywhere(
        cluster,
        admin,
        &allow("User:carol", ResourceType::Group, "g", Operation::Read),
        true,
    )
    .await;
    acl_everywhere(
        cluster,
        admin,
        &allow("User:carol", ResourceType::Topic, "a", Operation::Read),
        true,
    )
    .await;
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

/// Adds (or removes) `entry` through `admin` and waits until every node has applied it (each
/// node checks against its own copy of the metadata).
async fn acl_everywhere(cluster: &Cluster, admin: &Client, entry: &AclEntry, present: bool) {
    if present {
        admin.add_acl(entry).await.unwrap();
    } else {
        admin.remove_acl(entry).await.unwrap();
    }
    let token = admin_token_of(admin);
    for addr in cluster.brokers() {
        let at = client_at(vec![addr.clone()], &token);
        wait_for(&format!("{entry} applied at {addr}"), DEADLINE, || async {
            let listed = at.list_acls(Some(entry.principal.as_str())).await.ok()?;
            (listed.contains(entry) == present).then_some(())
        })
        .await;
    }
}

/// The coordinator of `group` as `token` finds it, polled until one answers.
/// Group `group` as `token` sees it (DescribeGroup at its coordinator).
async fn describe(coordinator: &str, group: &str, token: &str) -> DescribeGroupResponse {
    stub(coordinator)
        .await
        .describe_group(with_token(
            DescribeGroupRequest {
                group: group.into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn coordinator_of(cluster: &Cluster, group: &str, token: &str) -> String {
    let node = cluster.brokers()[0].clone();
    wait_for(&format!("the coordinator of {group}"), DEADLINE, || async {
        let found = stub(&node)
            .await
            .find_coordinator(with_token(
                FindCoordinatorRequest {
                    group: group.into(),
                },
                token,
            ))
            .await
            .ok()?
            .into_inner();
        Some(found.address)
    })
    .await
}

/// A named InitProducer needs write on the producer resource of its name; an unnamed one,
/// write on some topic (alice writes `a`).
async fn named_producers_need_write_on_their_name(cluster: &Cluster, admin: &Client, alice: &str) {
    let node = cluster.brokers()[0].clone();
    let init = |name: Option<&str>| InitProducerRequest {
        producer_name: name.map(String::from),
    };
    stub(&node)
        .await
        .init_producer(with_token(init(None), alice))
        .await
        .expect("an unnamed producer: write on some topic is enough");
    let s = stub(&node)
        .await
        .init_producer(with_token(init(Some("payments-1")), alice))
        .await
        .unwrap_err();
    denied_status(s, &["User:alice", "write", "producer \"payments-1\""]);
    let mut mine = allow(
        "User:alice",
        ResourceType::Producer,
        "orders-",
        Operation::Write,
    );
    mine.pattern_type = PatternType::Prefixed;
    acl_everywhere(cluster, admin, &mine, true).await;
    let r = stub(&node)
        .await
        .init_producer(with_token(init(Some("orders-7")), alice))
        .await;
    assert!(r.is_ok(), "{r:?}");
    let s = stub(&node)
        .await
        .init_producer(with_token(init(Some("payments-1")), alice))
        .await
        .unwrap_err();
    denied_status(s, &["producer \"payments-1\""]);
    // The CLI names the new resource type.
    let out = cluster
        .cli()
        .env("FJORD_TOKEN", admin_token_of(admin))
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
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("producer"),
        "{out:?}"
    );
    acl_everywhere(cluster, admin, &mine, false).await;
}

/// The token `admin` sends (the CLI needs it as text).
fn admin_token_of(admin: &Client) -> String {
    admin
        .config()
        .token
        .as_ref()
        .map(|t| t.0.clone())
        .unwrap_or_default()
}

/// alice may describe `a` but not `b`, and no topic named `nope` exists: asking Metadata for
/// `b` or for `nope` is the same PERMISSION_DENIED; a leader wait on `b` is refused first.
async fn metadata_refuses_existing_and_missing_names_alike(cluster: &Cluster, alice: &str) {
    let node = cluster.brokers()[0].clone();
    let ask = |topics: &[&str]| MetadataRequest {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        leader_wait: None,
    };
    for name in ["b", "nope"] {
        let s = stub(&node)
            .await
            .metadata(with_token(ask(&[name]), alice))
            .await
            .unwrap_err();
        denied_status(s, &["User:alice", "describe", &format!("topic \"{name}\"")]);
    }
    let got = stub(&node)
        .await
        .metadata(with_token(ask(&["a"]), alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.topics.len(), 1);
    let mut waiting = ask(&[]);
    waiting.leader_wait = Some(fjord_proto::v1::LeaderWait {
        topic: "b".into(),
        partition: 0,
        unreachable_leader: 1,
        wait_ms: 10_000,
    });
    let s = stub(&node)
        .await
        .metadata(with_token(waiting, alice))
        .await
        .unwrap_err();
    denied_status(s, &["describe", "topic \"b\""]);
}

/// Group `r` has offsets on `a` (carol reads it) and `b` (she may not): resetting all of them
/// or `b` is refused naming `b`; resetting `a` is not refused; FetchOffsets and DescribeGroup
/// show her only `a`.
async fn resets_and_offsets_are_checked_per_topic(cluster: &Cluster, admin: &Client, carol: &str) {
    let admin_token = admin_token_of(admin);
    let coordinator = coordinator_of(cluster, "r", &admin_token).await;
    let commit = CommitOffsetsRequest {
        group: "r".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: ["a", "b"]
            .iter()
            .map(|t| OffsetCommit {
                topic: t.to_string(),
                partition: 0,
                offset: 0,
                metadata: String::new(),
            })
            .collect(),
    };
    stub(&coordinator)
        .await
        .commit_offsets(with_token(commit, &admin_token))
        .await
        .expect("the admin's commit to the empty group r");
    acl_everywhere(
        cluster,
        admin,
        &allow("User:carol", ResourceType::Group, "r", Operation::Read),
        true,
    )
    .await;
    let reset = |topic: &str| ResetOffsetsRequest {
        group: "r".into(),
        topic: topic.into(),
        to: Some(reset_offsets_request::To::TimestampMs(0)),
    };
    for topic in ["", "b"] {
        let s = stub(&coordinator)
            .await
            .reset_offsets(with_token(reset(topic), carol))
            .await
            .unwrap_err();
        denied_status(s, &["User:carol", "read", "topic \"b\""]);
    }
    let r = stub(&coordinator)
        .await
        .reset_offsets(with_token(reset("a"), carol))
        .await;
    if let Err(s) = r {
        assert_ne!(s.code(), Code::PermissionDenied, "{s:?}");
    }
    let fetched = stub(&coordinator)
        .await
        .fetch_offsets(with_token(
            FetchOffsetsRequest {
                group: "r".into(),
                member_id: String::new(),
                member_epoch: -1,
                partitions: Vec::new(),
            },
            carol,
        ))
        .await
        .unwrap()
        .into_inner();
    let topics: Vec<&str> = fetched.offsets.iter().map(|o| o.topic.as_str()).collect();
    assert_eq!(topics, ["a"]);
    // Naming topics she may not describe, existing (`b`) or not (`nope`), answers alike:
    // nothing of them (a NOT_FOUND for `nope` alone would tell which names exist).
    let named = stub(&coordinator)
        .await
        .fetch_offsets(with_token(
            FetchOffsetsRequest {
                group: "r".into(),
                member_id: String::new(),
                member_epoch: -1,
                partitions: ["b", "nope"]
                    .iter()
                    .map(|t| TopicPartitions {
                        topic: t.to_string(),
                        partitions: vec![0],
                    })
                    .collect(),
            },
            carol,
        ))
        .await
        .expect("topics carol may not describe are left out, existing or not")
        .into_inner();
    assert!(named.offsets.is_empty(), "{named:?}");
    let described = describe(&coordinator, "r", carol).await;
    let topics: Vec<&str> = described.offsets.iter().map(|o| o.topic.as_str()).collect();
    assert_eq!(topics, ["a"]);
    // The lag in time of `a` (which carol reads) is read, from whichever node leads it.
    assert!(described.offsets[0].lag_ms.is_some(), "{described:?}");
    // The admin sees both.
    let described = describe(&coordinator, "r", &admin_token).await;
    assert_eq!(described.offsets.len(), 2, "{described:?}");
}

/// carol (reads `a` only) subscribes: naming `b` (or `nope`) is refused naming it; a pattern
/// matching `a` and `b` gets `a` only, and the group shows `a` as her subscription.
async fn subscriptions_are_checked(cluster: &Cluster, admin: &Client, carol: &str) {
    acl_everywhere(
        cluster,
        admin,
        &allow("User:carol", ResourceType::Group, "p", Operation::Read),
        true,
    )
    .await;
    let coordinator = coordinator_of(cluster, "p", carol).await;
    let beat = |topics: &[&str], pattern: Option<&str>| GroupHeartbeatRequest {
        group: "p".into(),
        member_epoch: 0,
        rebalance_timeout_ms: Some(10_000),
        subscription: Some(Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            pattern: pattern.map(String::from),
        }),
        ..Default::default()
    };
    let s = stub(&coordinator)
        .await
        .group_heartbeat(with_token(beat(&["a", "b", "nope"], None), carol))
        .await
        .unwrap_err();
    assert!(!s.message().contains("\"a\""), "{s:?}");
    denied_status(s, &["User:carol", "describe", "\"b\"", "\"nope\""]);
    let joined = stub(&coordinator)
        .await
        .group_heartbeat(with_token(beat(&[], Some("a|b")), carol))
        .await
        .unwrap()
        .into_inner();
    // Heartbeat on (the member's epoch as each answer gives it) until it owns something.
    let member = std::sync::Mutex::new(joined);
    let assigned = wait_for("carol's assignment", DEADLINE, || async {
        let mut next = beat(&[], Some("a|b"));
        {
            let m = member.lock().unwrap();
            next.member_id = m.member_id.clone();
            next.member_epoch = m.member_epoch;
        }
        let answer = stub(&coordinator)
            .await
            .group_heartbeat(with_token(next, carol))
            .await
            .ok()?
            .into_inner();
        *member.lock().unwrap() = answer.clone();
        (!answer.assignment.is_empty()).then_some(answer)
    })
    .await;
    let topics: Vec<&str> = assigned
        .assignment
        .iter()
        .map(|t| t.topic.as_str())
        .collect();
    assert_eq!(topics, ["a"]);
    let described = describe(&coordinator, "p", &admin_token_of(admin)).await;
    let sub = described.members[0].subscription.clone().unwrap();
    assert_eq!((sub.topics, sub.pattern), (vec!["a".to_string()], None));
    // The admin joins subscribing to `b`: carol's view of the group names no `b` anywhere.
    stub(&coordinator)
        .await
        .group_heartbeat(with_token(beat(&["b"], None), &admin_token_of(admin)))
        .await
        .expect("the admin joins group p");
    let seen = describe(&coordinator, "p", carol).await;
    assert_eq!(seen.members.len(), 2, "{seen:?}");
    for m in &seen.members {
        for tps in [&m.assigned, &m.pending_revocation, &m.target] {
            assert!(tps.iter().all(|t| t.topic != "b"), "{seen:?}");
        }
        let sub = m.subscription.clone().unwrap_or_default();
        assert!(!sub.topics.contains(&"b".to_string()), "{seen:?}");
    }
}

/// carol, allowed to alter the cluster, manages users but not the superuser's; `*` and
/// `ANONYMOUS` are no user names.
async fn only_a_superuser_manages_a_superuser(admin: &Client, cluster: &Cluster, carol: &str) {
    let alter = allow(
        "User:carol",
        ResourceType::Cluster,
        "cluster",
        Operation::Alter,
    );
    acl_everywhere(cluster, admin, &alter, true).await;
    let as_carol = client_as(cluster, carol);
    denied(
        as_carol.delete_user("admin").await.unwrap_err(),
        &["User:carol", "superuser"],
    );
    denied(
        as_carol.create_user("admin").await.unwrap_err(),
        &["User:carol", "superuser"],
    );
    as_carol.create_user("erin").await.unwrap();
    as_carol.delete_user("erin").await.unwrap();
    acl_everywhere(cluster, admin, &alter, false).await;
    for reserved in ["ANONYMOUS", "*"] {
        let e = admin.create_user(reserved).await.unwrap_err();
        assert!(
            matches!(e, ClientError::InvalidArgument(_)),
            "{reserved}: {e:?}"
        );
    }
}

/// A `*` entry gives carol every topic but `__fjord_groups`; naming it is refused.
async fn wildcards_do_not_reach_internal_topics(cluster: &Cluster, admin: &Client, carol: &str) {
    let every = allow("User:carol", ResourceType::Topic, "*", Operation::Describe);
    acl_everywhere(cluster, admin, &every, true).await;
    let node = cluster.brokers()[0].clone();
    let listed = stub(&node)
        .await
        .metadata(with_token(MetadataRequest::default(), carol))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.topics.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"b"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("__fjord")), "{names:?}");
    let s = stub(&node)
        .await
        .metadata(with_token(
            MetadataRequest {
                topics: vec!["__fjord_groups".into()],
                leader_wait: None,
            },
            carol,
        ))
        .await
        .unwrap_err();
    denied_status(s, &["topic \"__fjord_groups\""]);
    let admin_sees = admin.metadata().await.unwrap();
    assert!(
        admin_sees.topics.iter().any(|t| t.name == "__fjord_groups"),
        "a superuser reaches it"
    );
    acl_everywhere(cluster, admin, &every, false).await;
}
