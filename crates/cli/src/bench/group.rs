//! `fjord bench group-consume|group-rebalance|group-idle`: consumer groups read through, in
//! a rebalance, and idle.
//!
//! - `group-consume`: N members (each a [`GroupConsumer`] with its own client, so its own
//!   connections, as separate service instances would have) read the topic from the start
//!   through one group, with auto-commit. The clock starts once the group is **settled**
//!   (every partition owned by exactly one member, each member holding its fair share; until
//!   then whatever a member fetched is put back with [`GroupConsumer::unconsume`], not
//!   counted), or at once with `--include-join`. It stops when every record below the high
//!   watermarks at the start is counted, each once: a record a rebalance hands out again is
//!   not counted twice. The read mode and fetch options are `consume`'s, so the two compare.
//! - `group-rebalance`: M-1 members join and settle; then the M-th joins and the time until
//!   the group is settled again over M members is measured, from the members' own views
//!   (each publishes its assignment after every poll, so a view lags by at most one fetch
//!   wait, `--max-wait-ms`). The new member leaves, the M-1 settle again, and so on.
//! - `group-idle`: creates G groups that each end with committed offsets and no members (a
//!   member joins, is handed a record of every partition, commits and leaves, as Kafka's idle
//!   groups are), then samples the given server processes' CPU and RSS ([`procfs`]).
//!
//! A member learns of a group change on its next heartbeat (the server's
//! `--group-heartbeat-interval-ms`, 5 s by default), which bounds what `group-rebalance`
//! measures: the report carries the interval the members were told.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use fjord_client::{
    Client, ClientConfig, ClientError, FetchOptions, GroupConfig, GroupConsumer, GroupRecord,
    ProducerConfig, ProducerRecord,
};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::load::{self, Counters, micros};
use super::procfs::{self, CpuUse, round2};
use super::progress::Progress;
use super::{
    LatencyOf, Measured, ReadArgs, RunArgs, StoppedBy, ensure_topic, fetch_options, read_mode,
    settings, spawn_limits,
};
use crate::output::{Output, to_json};
use crate::signals::shutdown_signal;

/// Members of one benchmark group, at most (a group may have 1,000).
pub const MAX_MEMBERS: u64 = 100;
/// Repetitions of a rebalance, at most.
pub const MAX_REPEATS: u64 = 100;
/// Groups `group-idle` creates, at most.
pub const MAX_IDLE_GROUPS: u64 = 100_000;
/// Groups `group-idle` creates at once, at most.
pub const MAX_IDLE_CONCURRENCY: u64 = 1_024;
/// How often a waiting run looks at the members' views.
const VIEW_CHECK: Duration = Duration::from_millis(5);
/// The pause between two polls of a member while its group settles before a measured read.
const WARMUP_POLL_GAP: Duration = Duration::from_millis(50);
/// Polls an idle group's only member makes, at most, to be handed a record of every
/// partition.
const MAX_IDLE_POLLS: u32 = 50;

// ---- members and what they own --------------------------------------------------------

/// Whether `owned` (each running member's partitions) is a settled assignment of a topic of
/// `partitions` partitions: each partition owned by exactly one member, and each member
/// holding its fair share (the uniform assignor's counts differ by at most one).
pub fn settled(owned: &[&BTreeSet<u32>], partitions: u32) -> bool {
    let Ok(n) = u32::try_from(owned.len()) else {
        return false;
    };
    if n == 0 {
        return false;
    }
    let (low, high) = (partitions / n, partitions.div_ceil(n));
    let mut seen = BTreeSet::new();
    for m in owned {
        let count = u32::try_from(m.len()).unwrap_or(u32::MAX);
        if count < low || count > high {
            return false;
        }
        for p in m.iter() {
            if *p >= partitions || !seen.insert(*p) {
                return false;
            }
        }
    }
    seen.len() as u64 == u64::from(partitions)
}

/// What each member owned after its last poll (`None`: not running).
struct Views(Mutex<Vec<Option<BTreeSet<u32>>>>);

impl Views {
    fn new(members: usize) -> Self {
        Views(Mutex::new(vec![None; members]))
    }

    fn set(&self, slot: usize, owned: Option<BTreeSet<u32>>) {
        self.0
            .lock()
            .expect("never poisoned: no panic under the lock")[slot] = owned;
    }

    /// Whether the running members, exactly `members` of them, hold a settled assignment.
    fn settled(&self, members: usize, partitions: u32) -> bool {
        let views = self
            .0
            .lock()
            .expect("never poisoned: no panic under the lock");
        let running: Vec<&BTreeSet<u32>> = views.iter().flatten().collect();
        running.len() == members && settled(&running, partitions)
    }

    /// Waits until [`Views::settled`], at most `limit`, and only while `failed()` is false;
    /// returns how long it took.
    async fn wait_settled(
        &self,
        members: usize,
        partitions: u32,
        limit: Duration,
        what: &str,
        failed: impl Fn() -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while !self.settled(members, partitions) {
            if failed() {
                anyhow::bail!("{what}: a member failed or the run was stopped");
            }
            if started.elapsed() >= limit {
                anyhow::bail!(
                    "{what}: the group did not settle ({members} members sharing {partitions} \
                     partitions, each owned once) within {} s",
                    limit.as_secs()
                );
            }
            tokio::time::sleep(VIEW_CHECK).await;
        }
        Ok(started.elapsed())
    }
}

/// The partitions a member owns of the topic.
fn owned_partitions(member: &GroupConsumer) -> BTreeSet<u32> {
    member.assignment().into_iter().map(|(_, p)| p).collect()
}

/// A client of its own for a member: its own connections, as a separate instance has.
fn member_client(brokers: &[String]) -> anyhow::Result<Client> {
    Ok(Client::connect(brokers.to_vec(), ClientConfig::default())?)
}

/// The group of a run: as given, else a fresh name.
pub fn group_name(given: Option<String>, what: &str) -> String {
    given.unwrap_or_else(|| format!("fjord-bench-{what}-{:08x}", rand::random::<u32>()))
}

/// Polls as member `slot` until `done()`, publishing what it owns after every poll and
/// handing each poll's records and duration to `take`, which says how long to pause before
/// the next poll, if at all. Retryable errors (the client retried already) are polled
/// through; the first other error ends it.
async fn member_loop(
    member: &mut GroupConsumer,
    slot: usize,
    views: &Views,
    done: impl Fn() -> bool,
    mut take: impl FnMut(&mut GroupConsumer, Vec<GroupRecord>, Duration) -> Option<Duration>,
) -> Result<(), ClientError> {
    while !done() {
        let started = Instant::now();
        let polled = member.poll().await;
        let took = started.elapsed();
        match polled {
            Ok(records) => {
                views.set(slot, Some(owned_partitions(member)));
                if let Some(pause) = take(member, records, took) {
                    tokio::time::sleep(pause).await;
                }
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Commits and leaves; a member that cannot is only warned about (the run is measured).
async fn leave(member: GroupConsumer, group: &str) {
    if let Err(e) = member.close().await {
        eprintln!("warning: a member of group {group:?} could not commit and leave: {e}");
    }
}

/// Puts back what a poll handed out, so it is fetched again and not committed.
fn put_back(member: &mut GroupConsumer, records: &[GroupRecord]) {
    let mut first: BTreeMap<(&str, u32), u64> = BTreeMap::new();
    for r in records {
        first
            .entry((r.topic.as_str(), r.record.partition))
            .or_insert(r.record.offset);
    }
    for ((topic, partition), offset) in first {
        member.unconsume(topic, partition, offset);
    }
}

// ---- group-consume -----------------------------------------------------------------------

/// Where each partition's records were counted up to, and where the run's records end.
struct Tally {
    upto: Vec<AtomicU64>,
    end: Vec<u64>,
}

/// The sizes of the records (`(offset, size)`, in offset order) at `from` up to `to`.
pub fn fresh(records: &[(u64, u64)], from: u64, to: u64) -> Vec<u64> {
    records
        .iter()
        .filter(|(offset, _)| (from..to).contains(offset))
        .map(|(_, size)| *size)
        .collect()
}

impl Tally {
    /// Counts the records not counted before (a rebalance may hand some out again) and below
    /// their partition's end.
    fn count(&self, records: &[GroupRecord], counters: &Counters) {
        let mut by_partition: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        for r in records {
            by_partition
                .entry(r.record.partition)
                .or_default()
                .push((r.record.offset, r.record.value.len() as u64));
        }
        for (p, recs) in by_partition {
            let (Some(upto), Some(end)) = (self.upto.get(p as usize), self.end.get(p as usize))
            else {
                continue;
            };
            let last = recs.iter().map(|(o, _)| *o).max().unwrap_or(0);
            let to = last.saturating_add(1).min(*end);
            let from = upto.fetch_max(to, Ordering::Relaxed);
            counters.count_consumed(&fresh(&recs, from, to));
        }
    }
}

/// Each partition's `(start, end)`: from the group's committed offset (or the log start,
/// for a group without one) to the high watermark now.
async fn read_ranges(
    client: &Client,
    topic: &str,
    partitions: u32,
    group: &str,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let bounds = load::partition_bounds(client, topic, partitions).await?;
    let committed: BTreeMap<u32, u64> = match client.describe_group(group).await {
        Ok(d) => d
            .partitions
            .into_iter()
            .filter(|p| p.topic == topic)
            .filter_map(|p| Some((p.partition, p.committed_offset?)))
            .collect(),
        Err(ClientError::NotFound(_)) => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot describe group {group:?}")),
    };
    Ok(bounds
        .into_iter()
        .map(|(p, start, end)| {
            let from = committed.get(&p).map_or(start, |c| (*c).clamp(start, end));
            (from, end)
        })
        .collect())
}

/// What a `group-consume` run is asked.
pub struct GroupConsumeArgs<'a> {
    pub topic: String,
    pub run: &'a RunArgs,
    pub read: &'a ReadArgs,
    pub members: u32,
    pub group: Option<String>,
    pub include_join: bool,
}

pub async fn bench_group_consume(
    client: &Client,
    brokers: &[String],
    counters: &Arc<Counters>,
    a: GroupConsumeArgs<'_>,
    show_progress: bool,
) -> anyhow::Result<Measured> {
    let topic = a.topic.clone();
    let group = group_name(a.group.clone(), "consume");
    let (partitions, ranges) = plan_read(client, &topic, &group).await?;
    let available: u64 = ranges.iter().map(|(from, end)| end - from).sum();
    counters.set_target(a.run.records.min(available));
    let tally = Arc::new(Tally {
        upto: ranges
            .iter()
            .map(|(from, _)| AtomicU64::new(*from))
            .collect(),
        end: ranges.iter().map(|(_, end)| *end).collect(),
    });
    let views = Arc::new(Views::new(a.members as usize));
    let measuring = Arc::new(AtomicBool::new(a.include_join));
    let config = member_config(&group, &topic, fetch_options(read_mode(a.read.read)));
    let limit = Duration::from_secs(a.run.duration_max_secs);
    let mut started = Instant::now();
    let shared = (
        Arc::clone(counters),
        tally,
        Arc::clone(&views),
        Arc::clone(&measuring),
    );
    let tasks = start_consume_members(brokers, &config, a.members, &shared)?;
    if !a.include_join {
        let settled = warm_up(&views, a.members as usize, partitions, counters, limit).await;
        if let Err(e) = settled {
            counters.stop(StoppedBy::Error);
            let failed = join_members(tasks).await.err();
            return Err(failed.unwrap_or(e));
        }
        started = Instant::now();
        measuring.store(true, Ordering::Relaxed);
    }
    let limits = spawn_limits(counters, limit, false);
    let target = counters.target();
    let progress = Progress::start(
        "group-consume",
        target,
        counters.consumed_handle(),
        show_progress,
    );
    while !counters.consumers_done() {
        tokio::time::sleep(VIEW_CHECK).await;
    }
    let elapsed = started.elapsed();
    if counters.consumed() >= target {
        counters.stop(StoppedBy::Count);
    }
    let latencies = join_members(tasks).await;
    progress.finish().await;
    limits.abort();
    Ok(Measured {
        mode: "group-consume",
        topic,
        partitions,
        latency_of: LatencyOf::Poll,
        settings: super::Settings {
            members: Some(u64::from(a.members)),
            group: Some(group),
            include_join: Some(a.include_join),
            ..settings(a.run, None, Some(a.read), false)
        },
        elapsed,
        latencies,
    })
}

/// The topic's partition count and what the group is to read of each partition (see
/// [`read_ranges`]); fails if that is nothing.
async fn plan_read(
    client: &Client,
    topic: &str,
    group: &str,
) -> anyhow::Result<(u32, Vec<(u64, u64)>)> {
    let partitions = client.partition_count(topic).await.with_context(|| {
        format!("cannot read topic {topic:?} (`fjord bench produce --topic {topic}` fills it)")
    })?;
    let ranges = read_ranges(client, topic, partitions, group).await?;
    if ranges.iter().all(|(from, end)| end <= from) {
        anyhow::bail!(
            "topic {topic:?} has no records for group {group:?} to read: \
             `fjord bench produce --topic {topic}` writes some"
        );
    }
    Ok((partitions, ranges))
}

/// Waits until the group is settled (its members put back what they read meanwhile), within
/// `limit`, stopping on Ctrl-C or a member's failure.
async fn warm_up(
    views: &Views,
    members: usize,
    partitions: u32,
    counters: &Arc<Counters>,
    limit: Duration,
) -> anyhow::Result<()> {
    // Stops the wait on Ctrl-C; the measured run gets limits of its own.
    let warmup_limits = spawn_limits(counters, limit, false);
    let waited = views
        .wait_settled(members, partitions, limit, "group-consume", || {
            counters.consumers_done()
        })
        .await;
    warmup_limits.abort();
    waited.map(|_| ())
}

/// Waits for every member; merges their poll latencies, or returns the first error.
async fn join_members(
    tasks: Vec<JoinHandle<anyhow::Result<Histogram>>>,
) -> anyhow::Result<Histogram> {
    let mut latencies = Histogram::default();
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => latencies.merge(&h),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("a member task failed: {e}"));
            }
        }
    }
    first_error.map_or(Ok(latencies), Err)
}

type Shared = (Arc<Counters>, Arc<Tally>, Arc<Views>, Arc<AtomicBool>);

/// The configuration of a benchmark's members: auto-commit, the reset policy and commit
/// interval of the client's defaults.
fn member_config(group: &str, topic: &str, fetch: FetchOptions) -> GroupConfig {
    let mut config = GroupConfig::new(group.to_string(), vec![topic.to_string()]);
    config.fetch = fetch;
    config.client_id = "fjord-bench".into();
    config
}

/// Starts the `members` members of `group-consume`, each with a client of its own.
fn start_consume_members(
    brokers: &[String],
    config: &GroupConfig,
    members: u32,
    (counters, tally, views, measuring): &Shared,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<Histogram>>>> {
    let mut tasks = Vec::with_capacity(members as usize);
    for slot in 0..members as usize {
        let member = member_client(brokers)?.group_consumer(config.clone())?;
        let shared = (
            Arc::clone(counters),
            Arc::clone(tally),
            Arc::clone(views),
            Arc::clone(measuring),
        );
        tasks.push(tokio::spawn(consume_member(
            member,
            slot,
            config.group.clone(),
            shared,
        )));
    }
    Ok(tasks)
}

/// One member of `group-consume`: puts back what it reads until the run measures, then
/// counts; commits and leaves at the end.
async fn consume_member(
    mut member: GroupConsumer,
    slot: usize,
    group: String,
    (counters, tally, views, measuring): Shared,
) -> anyhow::Result<Histogram> {
    let mut latencies = Histogram::default();
    let polled = member_loop(
        &mut member,
        slot,
        &views,
        || counters.consumers_done(),
        |member, records, took| {
            if !measuring.load(Ordering::Relaxed) {
                put_back(member, &records);
                return Some(WARMUP_POLL_GAP);
            }
            if !records.is_empty() {
                latencies.record(micros(took));
            }
            tally.count(&records, &counters);
            None
        },
    )
    .await;
    if let Err(e) = polled {
        counters.fail();
        return Err(e).with_context(|| format!("member {slot} of group {group:?} failed"));
    }
    leave(member, &group).await;
    Ok(latencies)
}

// ---- group-rebalance ---------------------------------------------------------------------

/// What a `group-rebalance` run is asked.
#[derive(Debug, Clone, clap::Args)]
pub struct RebalanceArgs {
    /// Topic the group reads; created if missing.
    #[arg(long, default_value = "fjord-bench-rebalance")]
    pub topic: String,
    /// Partitions of the topic when it is created (1 to 1024).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Replicas per partition when the topic is created.
    #[arg(long, visible_alias = "replication", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub replication_factor: u32,
    /// Members once the last one joined (2 to 100); the others join and settle first.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=MAX_MEMBERS as i64))]
    pub members: u32,
    /// Times the last member joins (and leaves again), 1 to 100.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=MAX_REPEATS as i64))]
    pub repeats: u32,
    /// Group to use [default: a fresh one per run].
    #[arg(long)]
    pub group: Option<String>,
    /// How long a member's fetch waits for records, in milliseconds (10 to 30,000): on an
    /// idle topic a member's view of what it owns lags by up to this much.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=fjord_client::config::MAX_FETCH_WAIT_MS as i64))]
    pub max_wait_ms: u32,
    /// Each wait for the group to settle fails after this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub settle_max_secs: u64,
}

/// min, median and max of `samples` (the median of an even count is the mean of the middle
/// two); `None` without samples.
pub fn min_median_max(samples: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((s[0], median, s[n - 1]))
}

#[derive(Debug, Serialize)]
struct RebalanceReport {
    mode: &'static str,
    topic: String,
    partitions: u32,
    group: String,
    members: u32,
    repeats: u32,
    /// As the members were told by the coordinator.
    heartbeat_interval_ms: Option<u64>,
    max_wait_ms: u32,
    /// The first M-1 members, from their creation to settled.
    initial_settle_ms: f64,
    rebalance_ms: Vec<f64>,
    rebalance_ms_min: Option<f64>,
    rebalance_ms_median: Option<f64>,
    rebalance_ms_max: Option<f64>,
    /// After each leave of the M-th member, until the M-1 settled again.
    leave_settle_ms: Vec<f64>,
}

/// A running member of `group-rebalance`, told to leave through `stop`.
struct Running {
    stop: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<Option<Duration>>>,
}

impl Running {
    /// Tells it to leave; waits until it left; returns the heartbeat interval it was told.
    async fn leave(self) -> anyhow::Result<Option<Duration>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("a member task failed: {e}")))
    }
}

/// Starts member `slot`; it sets `failed` if it fails.
fn start_member(
    brokers: &[String],
    config: &GroupConfig,
    slot: usize,
    views: &Arc<Views>,
    failed: &Arc<AtomicBool>,
) -> anyhow::Result<Running> {
    let mut member = member_client(brokers)?.group_consumer(config.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let (views, flag, group) = (Arc::clone(views), Arc::clone(&stop), config.group.clone());
    let failed_flag = Arc::clone(failed);
    let task = tokio::spawn(async move {
        let polled = member_loop(
            &mut member,
            slot,
            &views,
            || flag.load(Ordering::Relaxed),
            |_, _, _| None,
        )
        .await;
        let interval = (member.member_epoch() > 0).then(|| member.heartbeat_interval());
        let result = match polled {
            Ok(()) => {
                leave(member, &group).await;
                Ok(interval)
            }
            Err(e) => {
                failed_flag.store(true, Ordering::Relaxed);
                Err(e).with_context(|| format!("member {slot} of group {group:?} failed"))
            }
        };
        views.set(slot, None);
        result
    });
    Ok(Running { stop, task })
}

pub async fn bench_group_rebalance(
    client: &Client,
    brokers: &[String],
    out: Output,
    a: RebalanceArgs,
) -> anyhow::Result<()> {
    let topic_args = super::TopicArgs {
        topic: a.topic.clone(),
        partitions: a.partitions,
        replication_factor: a.replication_factor,
    };
    let partitions = ensure_topic(client, &topic_args).await?;
    let group = group_name(a.group.clone(), "rebalance");
    let fetch = FetchOptions {
        max_wait_ms: a.max_wait_ms,
        ..FetchOptions::default()
    };
    let config = member_config(&group, &a.topic, fetch);
    let m = a.members as usize;
    let views = Arc::new(Views::new(m));
    let failed = Arc::new(AtomicBool::new(false));
    let limit = Duration::from_secs(a.settle_max_secs);
    let mut first = Vec::with_capacity(m - 1);
    for slot in 0..m - 1 {
        first.push(start_member(brokers, &config, slot, &views, &failed)?);
    }
    let measured =
        rebalance_rounds(brokers, &config, (&views, &failed), partitions, &a, limit).await;
    // Every member leaves, whatever happened; a member's own error says most.
    let (mut interval, mut member_error) = (None, None);
    for r in first {
        match r.leave().await {
            Ok(i) => interval = interval.or(i),
            Err(e) => {
                member_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = member_error {
        return Err(e);
    }
    let (initial, rebalances, leaves, new_interval) = measured?;
    let interval = interval.or(new_interval);
    let stats = min_median_max(&rebalances);
    let report = RebalanceReport {
        mode: "group-rebalance",
        topic: a.topic,
        partitions,
        group,
        members: a.members,
        repeats: a.repeats,
        heartbeat_interval_ms: interval.map(|d| d.as_millis() as u64),
        max_wait_ms: a.max_wait_ms,
        initial_settle_ms: ms(initial),
        rebalance_ms: rebalances,
        rebalance_ms_min: stats.map(|s| s.0),
        rebalance_ms_median: stats.map(|s| s.1),
        rebalance_ms_max: stats.map(|s| s.2),
        leave_settle_ms: leaves,
    };
    Ok(out.emit(|| rebalance_text(&report), || to_json(&report))?)
}

type Rounds = (Duration, Vec<f64>, Vec<f64>, Option<Duration>);

/// Waits for the first M-1 to settle, then times each join of the M-th member (and its
/// leave's settling).
async fn rebalance_rounds(
    brokers: &[String],
    config: &GroupConfig,
    (views, failed): (&Arc<Views>, &Arc<AtomicBool>),
    partitions: u32,
    a: &RebalanceArgs,
    limit: Duration,
) -> anyhow::Result<Rounds> {
    let m = a.members as usize;
    let is_failed = || failed.load(Ordering::Relaxed);
    let settle = |members: usize, what: String| {
        let is_failed = &is_failed;
        async move {
            tokio::select! {
                waited = views.wait_settled(members, partitions, limit, &what, is_failed) => waited,
                _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
            }
        }
    };
    let initial = settle(m - 1, "the first members".into()).await?;
    let (mut joins, mut leaves, mut interval) = (Vec::new(), Vec::new(), None);
    for round in 1..=a.repeats {
        let started = Instant::now();
        let newcomer = start_member(brokers, config, m - 1, views, failed)?;
        let waited = settle(m, format!("join {round}")).await;
        let took = started.elapsed();
        let left = newcomer.leave().await;
        waited?;
        interval = interval.or(left?);
        joins.push(ms(took));
        leaves.push(ms(settle(m - 1, format!("leave {round}")).await?));
    }
    Ok((initial, joins, leaves, interval))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn rebalance_text(r: &RebalanceReport) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    let interval = r
        .heartbeat_interval_ms
        .map_or_else(|| "unknown".to_string(), |v| format!("{v} ms"));
    format!(
        "group-rebalance: member {} joining {} members on {} partitions (topic {}), {} times: \
         settled again after min {} ms, median {} ms, max {} ms\n\
         each: {:?} ms; after its leave the others settled in {:?} ms\n\
         heartbeat interval {interval}; views lag by at most one fetch wait ({} ms); the first \
         {} members settled in {:.0} ms",
        r.members,
        r.members - 1,
        r.partitions,
        r.topic,
        r.repeats,
        f(r.rebalance_ms_min),
        f(r.rebalance_ms_median),
        f(r.rebalance_ms_max),
        r.rebalance_ms,
        r.leave_settle_ms,
        r.max_wait_ms,
        r.members - 1,
        r.initial_settle_ms,
    )
}

// ---- group-idle --------------------------------------------------------------------------

/// What a `group-idle` run is asked.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Topic the groups commit offsets of; created if missing.
    #[arg(long, default_value = "fjord-bench-idle")]
    pub topic: String,
    /// Partitions of the topic when it is created: each group commits one offset per
    /// partition (1 to 1024).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Replicas per partition when the topic is created.
    #[arg(long, visible_alias = "replication", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub replication_factor: u32,
    /// Groups to create (1 to 100,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=MAX_IDLE_GROUPS))]
    pub groups: u64,
    /// Groups created at once (1 to 1024).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=MAX_IDLE_CONCURRENCY))]
    pub concurrency: u64,
    /// The server processes to measure, comma-separated (`bench/fjord.sh pids`; at
    /// most 64).
    #[arg(long, value_delimiter = ',', required = true)]
    pub pids: Vec<u32>,
    /// Seconds of CPU measured before the groups are created (0: none).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub baseline_secs: u64,
    /// Seconds to wait after creating the groups before measuring.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub settle_secs: u64,
    /// Seconds of CPU measured with the groups.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration_secs: u64,
}

#[derive(Debug, Serialize)]
struct IdleReport {
    mode: &'static str,
    topic: String,
    partitions: u32,
    groups: u64,
    group_prefix: String,
    /// Committed offsets per group (one per partition).
    offsets_per_group: u32,
    create_secs: f64,
    groups_per_sec: f64,
    pids: Vec<u32>,
    /// Before the groups were created (null with --baseline-secs 0).
    baseline: Option<CpuUse>,
    /// With the groups, after --settle-secs.
    idle: CpuUse,
    /// idle - baseline, % of one core.
    core_pct_added: Option<f64>,
    rss_kib_before: Vec<u64>,
    rss_kib_after: Vec<u64>,
    /// (after - before) of all processes together, per group.
    rss_bytes_per_group: f64,
    settle_secs: u64,
}

/// Sleeps `secs` seconds, or fails on Ctrl-C.
async fn wait_secs(secs: u64) -> anyhow::Result<()> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(secs)) => Ok(()),
        _ = shutdown_signal() => anyhow::bail!("interrupted"),
    }
}

/// The processes' CPU over `secs` seconds, and their last samples.
async fn measure(
    pids: &[u32],
    secs: u64,
    hz: u64,
) -> anyhow::Result<(CpuUse, Vec<procfs::Sample>)> {
    let before = procfs::sample_all(pids)?;
    let started = Instant::now();
    wait_secs(secs).await?;
    let after = procfs::sample_all(pids)?;
    Ok((
        procfs::cpu_use(&before, &after, started.elapsed().as_secs_f64(), hz),
        after,
    ))
}

pub async fn bench_group_idle(
    client: Client,
    out: Output,
    a: IdleArgs,
    show_progress: bool,
) -> anyhow::Result<()> {
    let hz = procfs::clock_ticks_per_sec();
    let rss_before: Vec<u64> = procfs::sample_all(&a.pids)?
        .iter()
        .map(|s| s.rss_kib)
        .collect();
    let topic_args = super::TopicArgs {
        topic: a.topic.clone(),
        partitions: a.partitions,
        replication_factor: a.replication_factor,
    };
    let partitions = ensure_topic(&client, &topic_args).await?;
    fill_every_partition(&client, &a.topic, partitions).await?;
    let baseline = if a.baseline_secs > 0 {
        Some(measure(&a.pids, a.baseline_secs, hz).await?.0)
    } else {
        None
    };
    let prefix = group_name(None, "idle");
    let started = Instant::now();
    create_idle_groups(&client, &a, &prefix, partitions, show_progress).await?;
    let create = started.elapsed().as_secs_f64();
    check_idle_group(&client, &format!("{prefix}-0"), partitions).await?;
    // Only the servers are measured: this process keeps no connection open meanwhile.
    drop(client);
    wait_secs(a.settle_secs).await?;
    let (idle, after) = measure(&a.pids, a.duration_secs, hz).await?;
    let rss_after: Vec<u64> = after.iter().map(|s| s.rss_kib).collect();
    let added_kib = rss_after.iter().sum::<u64>() as f64 - rss_before.iter().sum::<u64>() as f64;
    let report = IdleReport {
        mode: "group-idle",
        topic: a.topic.clone(),
        partitions,
        groups: a.groups,
        group_prefix: prefix,
        offsets_per_group: partitions,
        create_secs: round2(create),
        groups_per_sec: round2(a.groups as f64 / create.max(1e-9)),
        pids: a.pids.clone(),
        core_pct_added: baseline
            .as_ref()
            .map(|b| round2(idle.core_pct - b.core_pct)),
        baseline,
        idle,
        rss_kib_before: rss_before,
        rss_kib_after: rss_after,
        rss_bytes_per_group: round2(added_kib * 1024.0 / a.groups as f64),
        settle_secs: a.settle_secs,
    };
    Ok(out.emit(|| idle_text(&report), || to_json(&report))?)
}

/// Writes a record to each partition that has none, so every group commits every partition.
async fn fill_every_partition(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let bounds = load::partition_bounds(client, topic, partitions).await?;
    let empty: Vec<u32> = bounds
        .iter()
        .filter(|(_, start, end)| end <= start)
        .map(|(p, _, _)| *p)
        .collect();
    if empty.is_empty() {
        return Ok(());
    }
    let producer = client.producer(topic.to_string(), ProducerConfig::default())?;
    for p in empty {
        let mut record = ProducerRecord::new(Bytes::from_static(b"fjord-bench group-idle"));
        record.partition = Some(p);
        producer
            .send(record)
            .await
            .with_context(|| format!("cannot write a record to partition {p} of {topic:?}"))?;
    }
    Ok(())
}

/// Creates `a.groups` groups named `<prefix>-<i>`, `a.concurrency` at a time.
async fn create_idle_groups(
    client: &Client,
    a: &IdleArgs,
    prefix: &str,
    partitions: u32,
    show_progress: bool,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        "group-idle (groups created)",
        a.groups,
        Arc::clone(&done),
        show_progress,
    );
    let created = futures::stream::iter(0..a.groups)
        .map(Ok)
        .try_for_each_concurrent(a.concurrency as usize, |i| {
            let done = &done;
            async move {
                let group = format!("{prefix}-{i}");
                tokio::select! {
                    made = idle_group(client, &group, &a.topic, partitions) => made?,
                    _ = shutdown_signal() => anyhow::bail!("interrupted"),
                }
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await;
    progress.finish().await;
    created.with_context(|| {
        format!(
            "created {} of {} groups",
            done.load(Ordering::Relaxed),
            a.groups
        )
    })
}

/// One idle group: a member joins, is handed a record of every partition, commits them and
/// leaves.
async fn idle_group(
    client: &Client,
    group: &str,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    let fetch = FetchOptions {
        max_bytes: 1,
        max_wait_ms: 0,
        ..FetchOptions::default()
    };
    let mut member = client.group_consumer(member_config(group, topic, fetch))?;
    let mut seen = BTreeSet::new();
    for _ in 0..MAX_IDLE_POLLS {
        match member.poll().await {
            Ok(records) => seen.extend(records.iter().map(|r| r.record.partition)),
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e).with_context(|| format!("group {group:?} cannot read")),
        }
        if seen.len() as u64 >= u64::from(partitions) {
            // Commits what was handed out, then leaves.
            return member
                .close()
                .await
                .with_context(|| format!("group {group:?} cannot commit and leave"));
        }
    }
    anyhow::bail!(
        "group {group:?} was handed records of {} of {partitions} partitions in \
         {MAX_IDLE_POLLS} polls (MAX_IDLE_POLLS)",
        seen.len()
    )
}

/// Checks that a created group has no members and a committed offset per partition.
async fn check_idle_group(client: &Client, group: &str, partitions: u32) -> anyhow::Result<()> {
    let d = client
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group:?}"))?;
    let committed = d
        .partitions
        .iter()
        .filter(|p| p.committed_offset.is_some())
        .count();
    anyhow::ensure!(
        d.members.is_empty() && committed as u64 == u64::from(partitions),
        "group {group:?} should have no members and {partitions} committed offsets; it has {} \
         members and {committed} (state {})",
        d.members.len(),
        d.state
    );
    Ok(())
}

fn idle_text(r: &IdleReport) -> String {
    let mut s = format!(
        "group-idle: {} groups (each {} committed offsets of topic {}, no members) created in \
         {:.1} s ({:.0}/s)\n\
         servers {:?}: {:.2}% of one core over {:.0} s (per process {:?})",
        r.groups,
        r.offsets_per_group,
        r.topic,
        r.create_secs,
        r.groups_per_sec,
        r.pids,
        r.idle.core_pct,
        r.idle.secs,
        r.idle.core_pct_per_pid,
    );
    if let (Some(b), Some(added)) = (&r.baseline, r.core_pct_added) {
        s.push_str(&format!(
            "\nbefore the groups: {:.2}% over {:.0} s; added by the groups: {added:.2}%",
            b.core_pct, b.secs
        ));
    }
    s.push_str(&format!(
        "\nRSS KiB before {:?}, after {:?}: {:.0} bytes per group (all processes)",
        r.rss_kib_before, r.rss_kib_after, r.rss_bytes_per_group
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[u32]) -> BTreeSet<u32> {
        ps.iter().copied().collect()
    }

    #[test]
    fn settled_needs_every_partition_once_and_fair_shares() {
        let (a, b, c) = (set(&[0, 1, 2, 3]), set(&[4, 5, 6]), set(&[7, 8, 9]));
        assert!(settled(&[&a, &b, &c], 10));
        // A partition missing, or owned twice.
        assert!(!settled(&[&a, &b, &set(&[7, 8])], 10));
        assert!(!settled(&[&a, &b, &set(&[6, 7, 8, 9])], 10));
        // Every partition once, but a member without its share (the newcomer still waits).
        assert!(!settled(
            &[&set(&[0, 1, 2, 3, 4]), &set(&[5, 6, 7, 8, 9]), &set(&[])],
            10
        ));
        // A partition the topic does not have.
        assert!(!settled(&[&set(&[0, 1, 2, 3]), &b, &set(&[7, 8, 10])], 10));
        // More members than partitions: some hold none.
        assert!(settled(&[&set(&[0]), &set(&[]), &set(&[1])], 2));
        assert!(!settled(&[], 3));
    }

    #[test]
    fn views_settle_only_with_the_expected_member_count() {
        let v = Views::new(3);
        v.set(0, Some(set(&[0, 1])));
        v.set(1, Some(set(&[2])));
        assert!(v.settled(2, 3));
        assert!(!v.settled(3, 3));
        v.set(2, Some(set(&[])));
        assert!(!v.settled(3, 3), "the third holds nothing yet");
        v.set(0, Some(set(&[0])));
        v.set(2, Some(set(&[1])));
        assert!(v.settled(3, 3));
        v.set(2, None);
        assert!(!v.settled(2, 3), "a member gone leaves partition 1 unowned");
    }

    #[test]
    fn fresh_records_are_those_not_counted_and_below_the_end() {
        let recs = [(5, 10), (6, 20), (7, 30), (8, 40)];
        assert_eq!(fresh(&recs, 5, 9), vec![10, 20, 30, 40]);
        assert_eq!(
            fresh(&recs, 7, 9),
            vec![30, 40],
            "5 and 6 were counted before"
        );
        assert_eq!(fresh(&recs, 5, 7), vec![10, 20], "7 and 8 are past the end");
        assert!(fresh(&recs, 9, 9).is_empty());
    }

    #[test]
    fn tally_counts_a_redelivered_record_once() {
        let rec = |p: u32, offset: u64| GroupRecord {
            topic: "t".into(),
            record: fjord_client::ConsumedRecord {
                partition: p,
                offset,
                key: None,
                value: Bytes::from_static(b"abc"),
                headers: Vec::new(),
                timestamp_ms: 0,
            },
        };
        let tally = Tally {
            upto: vec![AtomicU64::new(0), AtomicU64::new(10)],
            end: vec![4, 12],
        };
        let counters = Counters::default();
        counters.set_target(100);
        tally.count(&[rec(0, 0), rec(0, 1), rec(1, 10)], &counters);
        assert_eq!((counters.consumed(), counters.consumed_bytes()), (3, 9));
        // Handed out again after a rebalance, with one new record and one past the end.
        tally.count(&[rec(0, 1), rec(0, 2), rec(1, 12), rec(7, 0)], &counters);
        assert_eq!(counters.consumed(), 4);
    }

    #[test]
    fn min_median_max_of_odd_even_and_no_samples() {
        assert_eq!(min_median_max(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(min_median_max(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(min_median_max(&[7.0]), Some((7.0, 7.0, 7.0)));
        assert_eq!(min_median_max(&[]), None);
        assert_eq!(min_median_max(&[f64::NAN, 1.0]), Some((1.0, 1.0, 1.0)));
    }

    #[test]
    fn fresh_group_names_differ_and_a_given_one_is_kept() {
        assert_eq!(group_name(Some("g".into()), "consume"), "g");
        let a = group_name(None, "consume");
        assert!(a.starts_with("fjord-bench-consume-"));
        assert_ne!(a, group_name(None, "consume"));
    }
}
