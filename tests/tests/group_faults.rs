//! Consumer groups through an operator's bad day, on a real 3-process cluster. Two members
//! (the Rust `GroupConsumer`, in this process) read a topic and commit after every poll,
//! several member-less groups hold offsets set by a reset, and a sampler describes the group
//! all along. Through each fault:
//! - every offset commit answered before a describe is in that describe's answer, and no
//!   committed offset is ever seen lower than before (the sampler and a check of every group
//!   after each fault);
//! - the members keep going: the same member ids at the end as at the start, neither one
//!   dropped its partitions to rejoin (their session timeout, 30 s, is far above any failover
//!   here), and every record is handed out exactly once (no skip; with no rejoin, no
//!   redelivery either).
//!
//! The faults: every node SIGKILLed at the same moment and restarted (a power loss); the
//! coordinator's node SIGKILLed and restarted at once; a second process started with the
//! coordinator's `--id` (refused); the coordinator's node restarted on an older copy of its
//! data directory (refused, the others serve); and on a wiped data directory (refused, then
//! rebuilt with `--rebuild`, after which it coordinates every group with one other node).
//! The groups' topic has one partition here, so one node coordinates every group.
//!
//! Regression (the duplicate `--id` test): a second process with a running node's id and
//! `--rebuild`, on that node's data directory, moved the running node's database aside and
//! waited to be taken back, where it must stop at once (the directory lock now refuses it).
// Each test holds `serial()` (a std mutex) for its whole run on purpose: see cluster.rs.
#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_client::{
    Acks, Client, GroupConfig, GroupConsumer, GroupDescription, GroupRecord, Producer,
    ProducerConfig, ProducerRecord, ResetSpec,
};
use fjord_tests::group::{GROUP_DEADLINE, caught_up, stable};
use fjord_tests::{Cluster, REFUSAL_DEADLINE, Timing, assert_refused_with, serial, tail, wait_for};
use tokio::task::JoinHandle;

const TOPIC: &str = "t";
const PARTITIONS: u32 = 4;
/// The group the members are in.
const GROUP: &str = "g";
/// Groups without members whose offsets a reset set.
const IDLE_GROUPS: u64 = 4;
const MEMBERS: usize = 2;
/// Records produced after each fault.
const BATCH: u64 = 40;
/// How often the sampler describes the group.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Clean stops of the node leading in place of a rebuilt node, at most (see
/// [`Fixture::coordinated_by`]).
const LEAD_ROUNDS: usize = 5;
/// Violations kept for the failure message; more are only counted.
const VIOLATIONS_KEPT: usize = 20;

async fn cluster() -> Cluster {
    Cluster::start_with_args(
        3,
        Timing::FAST,
        &[
            "--group-session-timeout-ms",
            "30000",
            "--group-heartbeat-interval-ms",
            "300",
            "--group-partitions",
            "1",
        ],
    )
    .await
}

/// What the cluster answered, as the members, the sampler and the checks saw it.
#[derive(Default)]
struct Seen {
    /// The fault under way, for violation messages.
    phase: String,
    /// How many times each record (partition, offset) was handed to a member's application.
    delivered: BTreeMap<(u32, u64), usize>,
    /// The highest offset commit (or reset) answered, by group and partition.
    answered: BTreeMap<(String, u32), u64>,
    /// The highest committed offset a describe showed, by group and partition.
    described: BTreeMap<(String, u32), u64>,
    violations: Vec<String>,
    violations_dropped: usize,
}

type Shared = Arc<Mutex<Seen>>;

impl Seen {
    fn violation(&mut self, what: String) {
        if self.violations.len() < VIOLATIONS_KEPT {
            let phase = self.phase.clone();
            self.violations.push(format!("[{phase}] {what}"));
        } else {
            self.violations_dropped += 1;
        }
    }

    fn answered(&mut self, group: &str, partition: u32, offset: u64) {
        let at = self
            .answered
            .entry((group.to_string(), partition))
            .or_default();
        *at = (*at).max(offset);
    }

    fn answered_of(&self, group: &str) -> BTreeMap<u32, u64> {
        self.answered
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|((_, p), o)| (*p, *o))
            .collect()
    }

    fn groups(&self) -> BTreeSet<String> {
        self.answered.keys().map(|(g, _)| g.clone()).collect()
    }

    fn delivered(&mut self, records: &[GroupRecord]) {
        for r in records {
            *self
                .delivered
                .entry((r.record.partition, r.record.offset))
                .or_default() += 1;
        }
    }

    /// Checks a description against the commits answered before it was asked for (`before`)
    /// and against the earlier descriptions.
    fn check(&mut self, d: &GroupDescription, before: &BTreeMap<u32, u64>) {
        let committed = |p: u32| {
            d.partitions
                .iter()
                .find(|x| x.topic == TOPIC && x.partition == p)
                .and_then(|x| x.committed_offset)
        };
        for (&p, &answered) in before {
            if committed(p).is_none_or(|c| c < answered) {
                self.violation(format!(
                    "group {} (coordinator {}): {TOPIC}/{p} committed {:?}, but a commit of \
                     {answered} was answered before",
                    d.group,
                    d.coordinator,
                    committed(p)
                ));
            }
        }
        for x in &d.partitions {
            let Some(c) = x.committed_offset else {
                continue;
            };
            let seen = self
                .described
                .entry((d.group.clone(), x.partition))
                .or_default();
            let earlier = *seen;
            *seen = earlier.max(c);
            if c < earlier {
                self.violation(format!(
                    "group {} (coordinator {}): {TOPIC}/{} committed offset moved back from \
                     {earlier} to {c}",
                    d.group, d.coordinator, x.partition
                ));
            }
        }
    }

    fn assert_clean(&self) {
        assert!(
            self.violations.is_empty(),
            "{} violations (and {} more):\n{}",
            self.violations.len(),
            self.violations_dropped,
            self.violations.join("\n")
        );
    }
}

/// One member: polls until `stop`, commits after every poll, and records what it was handed
/// and which commits were answered. Returns its member id and how many times it dropped
/// every partition to rejoin.
async fn run_member(
    mut member: GroupConsumer,
    seen: Shared,
    stop: Arc<AtomicBool>,
) -> (String, u64) {
    while !stop.load(Ordering::Relaxed) {
        match member.poll().await {
            Ok(records) => seen.lock().unwrap().delivered(&records),
            Err(e) => {
                let id = member.member_id().to_string();
                seen.lock()
                    .unwrap()
                    .violation(format!("member {id}: poll failed: {e}"));
            }
        }
        let pending = member.pending_commit();
        if !pending.is_empty() && member.commit().await.is_ok() {
            let mut seen = seen.lock().unwrap();
            for (_, partition, offset) in pending {
                seen.answered(GROUP, partition, offset);
            }
        }
    }
    let end = (member.member_id().to_string(), member.session());
    let _ = member.close().await;
    end
}

/// Describes the group every [`SAMPLE_EVERY`] until `stop`, checking each answer.
async fn sample(client: Client, seen: Shared, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let before = seen.lock().unwrap().answered_of(GROUP);
        if let Ok(d) = client.describe_group(GROUP).await {
            seen.lock().unwrap().check(&d, &before);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// A cluster with the topic, the members, the idle groups and the sampler running.
struct Fixture {
    cluster: Cluster,
    client: Client,
    producer: Producer,
    produced: u64,
    seen: Shared,
    stop: Arc<AtomicBool>,
    members: Vec<JoinHandle<(String, u64)>>,
    sampler: JoinHandle<()>,
    /// The members' ids once the group was first stable.
    member_ids: BTreeSet<String>,
}

impl Fixture {
    /// Starts everything, produces a first batch and waits until the group committed it.
    async fn start() -> Fixture {
        let cluster = cluster().await;
        let client = cluster.client();
        client.create_topic(TOPIC, PARTITIONS, 3).await.unwrap();
        let seen = Shared::default();
        let stop = Arc::new(AtomicBool::new(false));
        let members = (0..MEMBERS)
            .map(|_| {
                let config = GroupConfig {
                    auto_commit: false,
                    ..GroupConfig::new(GROUP, vec![TOPIC.to_string()])
                };
                let member = cluster.client().group_consumer(config).unwrap();
                tokio::spawn(run_member(member, seen.clone(), stop.clone()))
            })
            .collect();
        // Stable before the first record: no record is handed out before a rebalance.
        let d = stable(&client, GROUP, PARTITIONS as usize, MEMBERS).await;
        let member_ids = d.members.iter().map(|m| m.member_id.clone()).collect();
        let sampler = tokio::spawn(sample(cluster.client(), seen.clone(), stop.clone()));
        let producer = client
            .producer(
                TOPIC,
                ProducerConfig {
                    acks: Acks::Cp,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut f = Fixture {
            cluster,
            client,
            producer,
            produced: 0,
            seen,
            stop,
            members,
            sampler,
            member_ids,
        };
        f.phase("start");
        f.carry_on().await;
        f.reset_idle_groups().await;
        f.every_group_served().await;
        f
    }

    fn phase(&self, what: &str) {
        eprintln!("group_faults: {what}");
        self.seen.lock().unwrap().phase = what.to_string();
    }

    /// Gives each idle group offsets (a different one each) by an offset reset.
    async fn reset_idle_groups(&self) {
        for i in 0..IDLE_GROUPS {
            let group = format!("idle-{i}");
            let set = self
                .client
                .reset_offsets(&group, Some(TOPIC), ResetSpec::Offset(i + 1))
                .await
                .unwrap();
            let mut seen = self.seen.lock().unwrap();
            for (_, partition, offset) in set {
                seen.answered(&group, partition, offset);
            }
        }
    }

    /// Produces a batch (CP, spread over the partitions; a send that fails is sent again),
    /// waits until the group committed every record, and checks every group.
    async fn carry_on(&mut self) {
        for i in 0..BATCH {
            let record = ProducerRecord::new(format!("r{}", self.produced + i))
                .with_partition((i % PARTITIONS as u64) as u32);
            let producer = &self.producer;
            wait_for("a CP produce", GROUP_DEADLINE, || async {
                producer.send(record.clone()).await.ok()
            })
            .await;
        }
        self.produced += BATCH;
        caught_up(&self.client, GROUP, self.produced).await;
        self.every_group_served().await;
    }

    /// Describes every group (each listed by ListGroups), checks each answer, and returns them.
    async fn every_group_served(&self) -> Vec<GroupDescription> {
        let groups = self.seen.lock().unwrap().groups();
        wait_for("every group listed", GROUP_DEADLINE, || async {
            let listed: BTreeSet<String> = self
                .client
                .list_groups()
                .await
                .ok()?
                .into_iter()
                .map(|g| g.group)
                .collect();
            groups.is_subset(&listed).then_some(())
        })
        .await;
        let mut out = Vec::new();
        for g in &groups {
            let before = self.seen.lock().unwrap().answered_of(g);
            let d = wait_for(&format!("group {g} described"), GROUP_DEADLINE, || async {
                self.client.describe_group(g).await.ok()
            })
            .await;
            self.seen.lock().unwrap().check(&d, &before);
            out.push(d);
        }
        self.seen.lock().unwrap().assert_clean();
        out
    }

    /// The node coordinating the groups now.
    async fn coordinator(&self) -> u64 {
        wait_for("a coordinator", GROUP_DEADLINE, || async {
            self.client
                .describe_group(GROUP)
                .await
                .ok()
                .map(|d| d.coordinator)
        })
        .await
    }

    /// Makes node `c` coordinate every group with one other node up, and checks every group
    /// as `c` serves it. The third node is killed; the node coordinating instead of `c`,
    /// stopped cleanly, hands its leaderships over to `c` (the only other live replica) and
    /// starts again. Once it is back, the controller may move the leadership back to it
    /// (balancing) before every group was described by `c`: then it is stopped again, at most
    /// [`LEAD_ROUNDS`] times.
    async fn coordinated_by(&mut self, c: u64) {
        let now = self.coordinator().await;
        let third = (1..=3).find(|n| *n != c && *n != now).unwrap();
        let other = (1..=3).find(|n| *n != c && *n != third).unwrap();
        let needle = format!("peer suspected: no heartbeat node={third}");
        let suspected = |cluster: &Cluster| cluster.log_text(other).matches(&needle).count();
        let before = suspected(&self.cluster);
        self.cluster.kill(third);
        // Else the clean stop may hand over to the dead node, thought alive.
        wait_for(
            &format!("node {other} to suspect node {third}"),
            GROUP_DEADLINE,
            || {
                let n = suspected(&self.cluster);
                async move { (n > before).then_some(()) }
            },
        )
        .await;
        let groups = self.seen.lock().unwrap().groups();
        let mut by_c = BTreeSet::new();
        for round in 0..LEAD_ROUNDS {
            for d in self.every_group_served().await {
                if d.coordinator == c {
                    by_c.insert(d.group);
                }
            }
            if by_c == groups {
                eprintln!("group_faults: node {c} served every group after {round} clean stops");
                return;
            }
            self.cluster.stop(other);
            self.cluster.restart(other);
            self.cluster.wait_ready().await;
        }
        panic!(
            "node {c} coordinated only {by_c:?} of {groups:?} after {LEAD_ROUNDS} clean stops \
             of node {other}; its log:\n{}",
            self.cluster.log_tail(other)
        );
    }

    /// Stops the members and the sampler, then checks that the members kept going and that
    /// every record was handed out exactly once.
    async fn finish(self) {
        let end = caught_up(&self.client, GROUP, self.produced).await;
        self.stop.store(true, Ordering::Relaxed);
        let mut ends = Vec::new();
        for m in self.members {
            ends.push(m.await.expect("a member task"));
        }
        self.sampler.await.expect("the sampler task");
        let seen = self.seen.lock().unwrap();
        seen.assert_clean();
        let ids: BTreeSet<String> = ends.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(
            ids, self.member_ids,
            "the members are not the ones that started"
        );
        assert!(
            ends.iter().all(|(_, rejoined)| *rejoined == 0),
            "a member dropped its partitions to rejoin: {ends:?}"
        );
        for p in &end.partitions {
            for o in 0..p.high_watermark {
                let n = seen.delivered.get(&(p.partition, o)).copied().unwrap_or(0);
                assert_eq!(n, 1, "{TOPIC}/{}/{o} was handed out {n} times", p.partition);
            }
        }
        let held: u64 = end.partitions.iter().map(|p| p.high_watermark).sum();
        assert_eq!(
            seen.delivered.len() as u64,
            held,
            "records handed out beyond the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_and_a_fast_restart_of_the_coordinator_lose_no_offset() {
    let _serial = serial();
    let mut f = Fixture::start().await;

    f.phase("every node loses power at once");
    f.cluster.kill_all();
    for id in 1..=3 {
        f.cluster.restart(id);
    }
    f.cluster.wait_ready().await;
    f.every_group_served().await;
    f.carry_on().await;

    f.phase("the coordinator's node restarts at once");
    let c = f.coordinator().await;
    f.cluster.kill(c);
    f.cluster.restart(c);
    eprintln!(
        "group_faults: node {c} restarted; coordinator now {}",
        f.coordinator().await
    );
    f.every_group_served().await;
    f.carry_on().await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_and_an_old_copy_of_the_coordinator_s_node_are_refused() {
    let _serial = serial();
    let mut f = Fixture::start().await;
    let c = f.coordinator().await;

    f.phase("a second process with the coordinator's --id, on its own empty directory");
    let mut other = f.cluster.start_duplicate(c, None);
    let status = other.wait_exit(REFUSAL_DEADLINE).await;
    assert_refused_with("the duplicate", status, &other.log_text(), "lost its data");

    f.phase("the same, restarted with --rebuild as the refusal suggests: it waits, the node stays");
    let other = f.cluster.start_duplicate_with(c, None, &["--rebuild"]);
    wait_for(
        &format!("the duplicate's rebuild to be turned away while node {c} runs"),
        REFUSAL_DEADLINE,
        || {
            let log = other.log_text();
            async move { log.contains(&format!("node {c} is alive")).then_some(()) }
        },
    )
    .await;
    drop(other);
    assert!(
        f.cluster.is_running(c),
        "node {c} stopped:\n{}",
        f.cluster.log_tail(c)
    );

    f.phase("a second process with the coordinator's --id on its data directory, with and without --rebuild");
    let dir = f.cluster.data_dir(c);
    for extra in [&[][..], &["--rebuild"][..]] {
        let mut same = f.cluster.start_duplicate_with(c, Some(&dir), extra);
        let status = same.wait_exit(REFUSAL_DEADLINE).await;
        let log = same.log_text();
        assert!(
            status.is_some_and(|s| !s.success())
                && log.contains("another process holds this data directory"),
            "a second process {extra:?} on node {c}'s data directory was not refused \
             ({status:?}):\n{}",
            tail(&log)
        );
    }
    // Nothing was moved aside: the node's directory is whole (it restarts on it below).
    let entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries.iter().any(|e| e.starts_with("replaced-")),
        "{entries:?}"
    );
    assert!(
        f.cluster.is_running(c),
        "node {c} stopped:\n{}",
        f.cluster.log_tail(c)
    );
    f.carry_on().await;

    f.phase("the coordinator's node is stopped and its data directory copied");
    f.cluster.stop(c);
    let backup = tempfile::tempdir().unwrap();
    let copy = backup.path().join("copy");
    f.cluster.copy_data(c, &copy);
    f.cluster.restart(c);
    // Ready: it passed its boot check, and the peers store each start they answer.
    f.cluster.wait_ready().await;
    f.carry_on().await;

    f.phase("the coordinator's node restarted on the old copy");
    f.cluster.kill(c);
    f.cluster.restore_data(c, &copy);
    f.cluster.restart(c);
    f.cluster.assert_refused(c, "older copy").await;
    f.every_group_served().await;
    f.carry_on().await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_coordinator_node_rebuilt_coordinates_every_group_with_every_offset() {
    let _serial = serial();
    let mut f = Fixture::start().await;
    let c = f.coordinator().await;

    f.phase("the coordinator's node loses its data directory");
    f.cluster.kill(c);
    f.cluster.wipe_data(c);
    f.cluster.restart(c);
    f.cluster.assert_refused(c, "lost its data").await;
    f.every_group_served().await;
    f.carry_on().await;

    f.phase("the coordinator's node rebuilt with --rebuild");
    f.cluster.restart_with(c, &["--rebuild"]);
    f.cluster.wait_rebuilt(c).await;
    f.carry_on().await;

    f.phase("the rebuilt node coordinates, with one other node");
    f.coordinated_by(c).await;
    f.carry_on().await;
    f.finish().await;
}
