//! Consumer groups on a real 3-process cluster, with members that are real processes
//! (`fjord consume --group`), killed, paused and restarted:
//! - 3 members on 6 partitions own 2 each, every partition exactly one owner;
//! - a SIGKILLed member's partitions are owned again and consumption resumes from the
//!   committed offsets: no record is skipped, and redeliveries are only records of the killed
//!   member's partitions from its last commit on;
//! - a member paused (SIGSTOP) past its session timeout is removed, its commits are refused
//!   (UNKNOWN_MEMBER_ID), and after SIGCONT it rejoins;
//! - a rolling restart of static members moves no partition;
//! - killing the coordinator's node loses no committed offset and the group carries on;
//! - a group's own session timeout (AlterGroupConfig, set before the group has a member)
//!   removes a SIGKILLed member long before the server's default would, and is still in
//!   force after the coordinator's node is killed;
//! - the committed offsets of a group all of whose members left expire after the server's
//!   offset retention, and the group is deleted; a group with a live member keeps its own;
//! - a held heartbeat (a long poll, `wait_ms`) is answered as soon as the group changes: a
//!   member's when another joins (with its revocation), the joining member's when the first
//!   gave its partitions up.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use fjord_client::{Client, GroupDescription, ProducerConfig, ProducerRecord};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{self, CommitOffsetsRequest, OffsetCommit};
use fjord_tests::group::{caught_up, stable};
use fjord_tests::{Cluster, Timing, serial, wait_for};

const SESSION_MS: &str = "3000";
const HEARTBEAT_MS: &str = "300";
/// Long enough for any election and rebalance here; a bound, never a sleep.
const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster() -> Cluster {
    cluster_with(SESSION_MS, &[]).await
}

/// A cluster whose groups' default session timeout is `session_ms`, with `extra` flags.
async fn cluster_with(session_ms: &str, extra: &[&str]) -> Cluster {
    let mut args = vec![
        "--group-session-timeout-ms",
        session_ms,
        "--group-heartbeat-interval-ms",
        HEARTBEAT_MS,
        "--group-partitions",
        "4",
    ];
    args.extend_from_slice(extra);
    Cluster::start_with_args(3, Timing::FAST, &args).await
}

/// A `fjord consume --group` process, printing JSON records to a file.
struct Member {
    child: Child,
    out: PathBuf,
}

impl Member {
    fn start(
        cluster: &Cluster,
        dir: &std::path::Path,
        name: &str,
        instance: Option<&str>,
    ) -> Member {
        Self::start_in(cluster, dir, name, "g", instance)
    }

    /// A member of `group`.
    fn start_in(
        cluster: &Cluster,
        dir: &std::path::Path,
        name: &str,
        group: &str,
        instance: Option<&str>,
    ) -> Member {
        let out = dir.join(format!("{name}.out"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .unwrap();
        let mut cmd = cluster.cli();
        cmd.args([
            "consume",
            "t",
            "--group",
            group,
            "--from-beginning",
            "--format",
            "json",
        ]);
        if let Some(i) = instance {
            cmd.args(["--instance-id", i]);
        }
        let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawning fjord consume");
        Member { child, out }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child process id this test owns.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM: the member commits and leaves; waits for it to exit.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        self.child.wait().unwrap();
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_printed(path: &std::path::Path) -> Vec<(u32, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn produce(client: &Client, from: usize, n: usize) {
    let producer = client.producer("t", ProducerConfig::default()).unwrap();
    for i in from..from + n {
        producer
            .send(ProducerRecord::new(format!("v{i}")).with_key(format!("k{i}")))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_instance_id_fences_the_first_for_good() {
    let _serial = serial();
    let cluster = cluster().await;
    let client = cluster.client();
    client.create_topic("t", 6, 3).await.unwrap();
    produce(&client, 0, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = Member::start(&cluster, dir.path(), "first", Some("same"));
    let before = stable(&client, "g", 6, 1).await;
    caught_up(&client, "g", 100).await;

    // A second process given the same instance id (an operator's copy-paste): it takes the
    // place over; the first is told it is fenced and stops, instead of rejoining and taking
    // the partitions back (which the second would then do too, for ever).
    let second = Member::start(&cluster, dir.path(), "second", Some("same"));
    let status = wait_for("the first process to stop", DEADLINE, || {
        let s = first.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(!status.success(), "{status:?}");
    let stderr = std::fs::read_to_string(dir.path().join("first.err")).unwrap();
    assert!(stderr.contains("instance fenced"), "{stderr}");
    let after = stable(&client, "g", 6, 1).await;
    assert_ne!(after.members[0].member_id, before.members[0].member_id);

    // The second keeps the group to itself: it reads what comes next, under the same id.
    produce(&client, 100, 100).await;
    let end = caught_up(&client, "g", 200).await;
    assert_eq!(end.members.len(), 1, "{:?}", end.members);
    assert_eq!(end.members[0].member_id, after.members[0].member_id);
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_a_killed_member_s_move_without_a_skip() {
    let _serial = serial();
    let cluster = cluster().await;
    let client = cluster.client();
    client.create_topic("t", 6, 3).await.unwrap();
    produce(&client, 0, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::start(&cluster, dir.path(), &format!("m{i}"), None))
        .collect();
    let d = stable(&client, "g", 6, 3).await;
    for m in &d.members {
        assert_eq!(m.assigned.len(), 2, "{:?}", d.members);
    }
    caught_up(&client, "g", 300).await;

    // SIGKILL one member: its partitions go to the others within its session timeout.
    let victim = members.remove(0);
    let victim_out = victim.out.clone();
    victim.kill();
    let after_kill = client.describe_group("g").await.unwrap();
    produce(&client, 300, 300).await;
    stable(&client, "g", 6, 2).await;
    let end = caught_up(&client, "g", 600).await;
    for m in members.drain(..) {
        m.stop();
    }

    // No skip: every record of every partition was printed by some member.
    let mut printed: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        for po in read_printed(&f.unwrap().path()) {
            *printed.entry(po).or_default() += 1;
        }
    }
    for p in &end.partitions {
        for o in 0..p.high_watermark {
            assert!(
                printed.contains_key(&(p.partition, o)),
                "{}/{o} was never delivered",
                p.partition
            );
        }
    }
    // Redeliveries: only the killed member's partitions, from their last commit on.
    let killed: BTreeMap<u32, u64> = read_printed(&victim_out)
        .iter()
        .map(|(p, _)| *p)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|p| {
            let c = after_kill
                .partitions
                .iter()
                .find(|x| x.partition == p)
                .and_then(|x| x.committed_offset)
                .unwrap_or(0);
            (p, c)
        })
        .collect();
    for ((p, o), n) in &printed {
        if *n > 1 {
            let from = killed.get(p).unwrap_or_else(|| {
                panic!("{p}/{o} delivered {n} times, but its partition was not the killed member's")
            });
            assert!(
                o >= from,
                "{p}/{o} redelivered though committed up to {from}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_member_is_fenced_and_rejoins() {
    let _serial = serial();
    let cluster = cluster().await;
    let client = cluster.client();
    client.create_topic("t", 6, 3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = Member::start(&cluster, dir.path(), "a", None);
    let before_a = stable(&client, "g", 6, 1).await;
    let (id, epoch) = (
        before_a.members[0].member_id.clone(),
        before_a.members[0].member_epoch,
    );
    let partition = before_a.members[0].assigned[0].1;
    let _b = Member::start(&cluster, dir.path(), "b", None);
    stable(&client, "g", 6, 2).await;

    a.signal(libc::SIGSTOP);
    // Past its session timeout it is removed, and b owns every partition.
    let d = wait_for("the paused member's removal", DEADLINE, || async {
        let d = client.describe_group("g").await.ok()?;
        (d.members.len() == 1 && d.members[0].member_id != id && d.members[0].assigned.len() == 6)
            .then_some(d)
    })
    .await;
    // Its commits are refused.
    let coordinator = cluster.nodes[d.coordinator as usize - 1].addr.clone();
    let mut c = FjordClient::connect(format!("http://{coordinator}"))
        .await
        .unwrap();
    let refused = c
        .commit_offsets(CommitOffsetsRequest {
            group: "g".into(),
            member_id: id.clone(),
            member_epoch: epoch,
            offsets: vec![OffsetCommit {
                topic: "t".into(),
                partition,
                offset: 0,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(
        refused
            .metadata()
            .get("fjord-reason")
            .unwrap()
            .to_str()
            .unwrap(),
        "UNKNOWN_MEMBER_ID"
    );
    // Resumed, it learns it was fenced and rejoins: two members again.
    a.signal(libc::SIGCONT);
    stable(&client, "g", 6, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_static_members_moves_nothing() {
    let _serial = serial();
    let cluster = cluster().await;
    let client = cluster.client();
    client.create_topic("t", 6, 3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = ["svc-0", "svc-1", "svc-2"];
    let mut members: Vec<Option<Member>> = names
        .iter()
        .map(|n| Some(Member::start(&cluster, dir.path(), n, Some(n))))
        .collect();
    let before = stable(&client, "g", 6, 3).await;
    let by_instance = |d: &GroupDescription| -> BTreeMap<String, Vec<(String, u32)>> {
        d.members
            .iter()
            .map(|m| (m.instance_id.clone().unwrap(), m.assigned.clone()))
            .collect()
    };
    for (i, n) in names.iter().enumerate() {
        // Stop (it leaves as a static member: its partitions wait for it), then start again.
        members[i].take().unwrap().stop();
        members[i] = Some(Member::start(&cluster, dir.path(), n, Some(n)));
        let now = stable(&client, "g", 6, 3).await;
        assert_eq!(
            by_instance(&now),
            by_instance(&before),
            "restarting {n} moved partitions"
        );
        assert_eq!(
            now.group_epoch, before.group_epoch,
            "restarting {n} rebalanced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_coordinator_loses_no_committed_offset() {
    let _serial = serial();
    let mut cluster = cluster().await;
    let client = cluster.client();
    client.create_topic("t", 6, 3).await.unwrap();
    produce(&client, 0, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let _members: Vec<Member> = (0..2)
        .map(|i| Member::start(&cluster, dir.path(), &format!("m{i}"), None))
        .collect();
    stable(&client, "g", 6, 2).await;
    let before = caught_up(&client, "g", 200).await;
    cluster.kill(before.coordinator);
    // Another node coordinates; every committed offset is still there, none lower.
    let after = wait_for("a new coordinator", DEADLINE, || async {
        let d = client.describe_group("g").await.ok()?;
        (d.coordinator != before.coordinator).then_some(d)
    })
    .await;
    for p in &before.partitions {
        let now = after
            .partitions
            .iter()
            .find(|x| x.partition == p.partition)
            .unwrap();
        assert!(
            now.committed_offset >= p.committed_offset,
            "{}: committed {:?} before, {:?} after",
            p.partition,
            p.committed_offset,
            now.committed_offset
        );
    }
    // And the group carries on: new records are consumed and committed.
    produce(&client, 200, 100).await;
    let end = caught_up(&client, "g", 300).await;
    let total: u64 = end.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(total, 300);
}

/// `fjord group ARGS --format json`: its one JSON line.
fn group_cli(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    let out = cluster
        .cli()
        .arg("group")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("running fjord group");
    assert!(
        out.status.success(),
        "fjord group {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_s_own_session_timeout_removes_a_killed_member_and_survives_failover() {
    let _serial = serial();
    // The server's default session timeout (120 s) is past DEADLINE: only the group's own
    // (2 s) can remove a killed member in time.
    let mut cluster = cluster_with("120000", &[]).await;
    let client = cluster.client();
    client.create_topic("t", 6, 3).await.unwrap();
    // Configured before it has a member: the group is created, empty.
    let set = group_cli(
        &cluster,
        &["alter-config", "g", "--session-timeout-ms", "2000"],
    );
    assert_eq!(set["session_timeout_ms"], 2000, "{set}");
    assert_eq!(set["session_timeout_override"], true, "{set}");
    assert_eq!(set["heartbeat_interval_ms"], 300, "{set}");
    assert_eq!(set["heartbeat_interval_override"], false, "{set}");
    let d = client.describe_group("g").await.unwrap();
    assert_eq!(d.state, "EMPTY");
    assert_eq!(
        (
            d.settings.session_timeout_ms,
            d.settings.session_timeout_override
        ),
        (2000, true)
    );

    let dir = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (0..2)
        .map(|i| Member::start(&cluster, dir.path(), &format!("m{i}"), None))
        .collect();
    stable(&client, "g", 6, 2).await;
    // SIGKILL one: its partitions move to the other after the group's session timeout.
    members.remove(0).kill();
    let before = stable(&client, "g", 6, 1).await;

    // Kill the coordinator's node: the new coordinator has the override from the log.
    cluster.kill(before.coordinator);
    let after = wait_for("a new coordinator", DEADLINE, || async {
        let d = client.describe_group("g").await.ok()?;
        (d.coordinator != before.coordinator).then_some(d)
    })
    .await;
    assert_eq!(
        (
            after.settings.session_timeout_ms,
            after.settings.session_timeout_override
        ),
        (2000, true)
    );
    let shown = group_cli(&cluster, &["describe", "g"]);
    assert_eq!(shown["session_timeout_ms"], 2000, "{shown}");
    assert_eq!(shown["session_timeout_override"], true, "{shown}");
    // And in force there: the last member, killed, is removed well before 120 s.
    members.remove(0).kill();
    wait_for("the last killed member's removal", DEADLINE, || async {
        let d = client.describe_group("g").await.ok()?;
        (d.members.is_empty() && d.state == "EMPTY").then_some(())
    })
    .await;
    // A bad value is refused, naming its limit.
    let refused = cluster
        .cli()
        .args(["group", "alter-config", "g", "--session-timeout-ms", "10"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("MIN_SESSION_TIMEOUT_MS"), "{stderr}");
    // Reset: the server's default again.
    let reset = group_cli(&cluster, &["alter-config", "g", "--reset-session-timeout"]);
    assert_eq!(reset["session_timeout_ms"], 120000, "{reset}");
    assert_eq!(reset["session_timeout_override"], false, "{reset}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_group_s_offsets_expire_after_the_retention_and_the_group_goes() {
    let _serial = serial();
    let mut cluster = cluster_with(SESSION_MS, &["--group-offset-retention-ms", "5000"]).await;
    let client = cluster.client();
    client.create_topic("t", 6, 3).await.unwrap();
    produce(&client, 0, 60).await;
    let dir = tempfile::tempdir().unwrap();
    // "live" keeps a member throughout; "g" commits and then its only member leaves.
    let _live = Member::start_in(&cluster, dir.path(), "live", "live", None);
    let leaving = Member::start(&cluster, dir.path(), "leaving", None);
    caught_up(&client, "live", 0).await;
    let committed = caught_up(&client, "g", 0).await;
    assert!(
        committed
            .partitions
            .iter()
            .any(|p| p.committed_offset > Some(0)),
        "{committed:?}"
    );
    // Lag in time, from the server: 0 for a caught-up group; for a group reset to the
    // earliest offsets, the age of each partition's first record, read by the coordinator.
    let live = client.describe_group("live").await.unwrap();
    assert!(
        live.partitions.iter().all(|p| p.lag_ms == Some(0)),
        "{live:?}"
    );
    client
        .reset_offsets("lagging", Some("t"), fjord_client::ResetSpec::Earliest)
        .await
        .unwrap();
    let lagging = client.describe_group("lagging").await.unwrap();
    assert_eq!(lagging.partitions.len(), 6, "{lagging:?}");
    for p in &lagging.partitions {
        assert_eq!(p.lag_records, Some(p.high_watermark), "{lagging:?}");
        if p.high_watermark > 0 {
            assert!(p.lag_ms.is_some_and(|ms| ms >= 0), "{lagging:?}");
        }
    }
    leaving.stop();
    // Its coordinator's node dies before the retention has passed: the new coordinator
    // expires the offsets by itself, without any request for the group (ListGroups reads
    // the replicas' applied state; "live" is on another partition of the groups' topic).
    cluster.kill(committed.coordinator);
    wait_for("group g to expire and go", DEADLINE, || async {
        let listed = client.list_groups().await.ok()?;
        (!listed.iter().any(|l| l.group == "g")).then_some(())
    })
    .await;
    assert!(matches!(
        client.describe_group("g").await,
        Err(fjord_client::ClientError::NotFound(_))
    ));
    // The group with a member kept every committed offset.
    let live = client.describe_group("live").await.unwrap();
    assert_eq!(live.members.len(), 1);
    assert!(
        live.partitions
            .iter()
            .all(|p| p.committed_offset == Some(p.high_watermark) || p.high_watermark == 0)
            && live.partitions.iter().any(|p| p.committed_offset > Some(0)),
        "{live:?}"
    );
}

/// One heartbeat of a raw member of group "h" subscribed to "t", owning `owned` ("t"'s
/// partitions), letting the coordinator hold it `wait_ms`.
async fn raw_heartbeat(
    mut c: FjordClient<tonic::transport::Channel>,
    member: &str,
    epoch: i32,
    owned: &BTreeSet<u32>,
    wait_ms: Option<u32>,
) -> v1::GroupHeartbeatResponse {
    c.group_heartbeat(v1::GroupHeartbeatRequest {
        group: "h".into(),
        member_id: member.into(),
        member_epoch: epoch,
        subscription: Some(v1::Subscription {
            topics: vec!["t".into()],
            pattern: None,
        }),
        owned: Some(v1::OwnedPartitions {
            partitions: vec![v1::TopicPartitions {
                topic: "t".into(),
                partitions: owned.iter().copied().collect(),
            }],
        }),
        wait_ms,
        ..Default::default()
    })
    .await
    .expect("a heartbeat answer")
    .into_inner()
}

fn partitions_of(a: &v1::GroupHeartbeatResponse) -> BTreeSet<u32> {
    a.assignment
        .iter()
        .filter(|t| t.topic == "t")
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_heartbeat_is_answered_as_soon_as_the_group_changes() {
    let _serial = serial();
    // Heartbeats may be held up to 5 minutes, far past DEADLINE: only an answer given early,
    // when the group changes, lets this test pass.
    let args = [
        "--group-session-timeout-ms",
        "600000",
        "--group-heartbeat-interval-ms",
        "300000",
    ];
    let cluster = Cluster::start_with_args(3, Timing::FAST, &args).await;
    let client = cluster.client();
    client.create_topic("t", 4, 3).await.unwrap();
    let coordinator = client.find_coordinator("h").await.unwrap();
    let connect = || async {
        FjordClient::connect(format!("http://{coordinator}"))
            .await
            .unwrap()
    };
    let hold = Some(300_000);

    // a joins alone and owns every partition; its next heartbeat has no news: held.
    let none = BTreeSet::new();
    let a = raw_heartbeat(connect().await, "", 0, &none, None).await;
    let a_owned = partitions_of(&a);
    assert_eq!(a_owned.len(), 4, "{a:?}");
    let (a_id, a_epoch) = (a.member_id.clone(), a.member_epoch);
    let held_a = {
        let (c, id, owned) = (connect().await, a_id.clone(), a_owned.clone());
        tokio::spawn(async move { raw_heartbeat(c, &id, a_epoch, &owned, hold).await })
    };

    // b joins: a's held heartbeat is answered with partitions to give up.
    let b = raw_heartbeat(connect().await, "", 0, &none, None).await;
    let a_keeps = partitions_of(
        &tokio::time::timeout(DEADLINE, held_a)
            .await
            .expect("a's held heartbeat answered when b joined")
            .unwrap(),
    );
    assert_eq!(a_keeps.len(), 2, "a keeps half: {a_keeps:?}");
    assert!(a_keeps.is_subset(&a_owned));

    // b waits for a's partitions, held; a gives them up: b's held heartbeat gets them.
    let held_b = {
        let (c, id, owned) = (connect().await, b.member_id.clone(), partitions_of(&b));
        let epoch = b.member_epoch;
        tokio::spawn(async move { raw_heartbeat(c, &id, epoch, &owned, hold).await })
    };
    let a = raw_heartbeat(connect().await, &a_id, a_epoch, &a_keeps, hold).await;
    assert!(a.member_epoch > a_epoch, "a's revocation is news: {a:?}");
    let b_owns = partitions_of(
        &tokio::time::timeout(DEADLINE, held_b)
            .await
            .expect("b's held heartbeat answered when a gave its partitions up")
            .unwrap(),
    );
    assert_eq!(b_owns, &a_owned - &a_keeps);
}
