//! Consumer groups: [`GroupConsumer`], a member of a group whose partitions the server shares
//! out (Kafka's KIP-848 protocol), and the group admin calls ([`Client::list_groups`],
//! [`Client::describe_group`], [`Client::reset_offsets`], [`Client::delete_group`],
//! [`Client::alter_group_config`]).
//!
//! # What a member guarantees
//! 1. It reads only partitions its last heartbeat answer gave it, from their committed
//!    offset (or the reset policy's, where none).
//! 2. **At least once**: a commit covers only records [`GroupConsumer::poll`] handed to the
//!    application *before* the current call (the application came back for more, so it is
//!    done with them). A crash redelivers what was handed since the last commit; nothing is
//!    skipped.
//! 3. A partition the coordinator takes away is committed (with auto-commit) and dropped
//!    before the next heartbeat says so, and only then given to another member.
//! 4. Fenced (removed after a pause, replaced by its instance id) or silent towards its
//!    coordinator for a session timeout, it drops every partition at once and rejoins: it
//!    never reads on from partitions it may no longer own.
//!
//! Heartbeats are **long polls** sent from `poll` and left in flight (a spawned task): each
//! asks the coordinator to hold its answer while it has no news for the member (`wait_ms`, one
//! heartbeat interval), so a rebalance reaches the member as soon as it starts, not at its next
//! heartbeat. `poll` applies an answer when it arrives (a fetch wait ends early for it) and
//! sends the next heartbeat: at once after a held answer, after news, or after giving
//! partitions up; a heartbeat interval after the last one otherwise (a coordinator that does not
//! hold answers, or beyond the [`crate::MAX_HELD_HEARTBEATS`] one client lets be held
//! at once). One heartbeat is in flight at a time. Call `poll` at least once per heartbeat
//! interval (the server says how often; 5 s by default): a fetch waits at most half of it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use fjord_proto::v1;
use tokio::time::Instant;

use crate::client::{Client, request};
use crate::config::FetchOptions;
use crate::consumer::ConsumedRecord;
use crate::error::ClientError;
use crate::retry::RetryState;

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Its first stored record.
    #[default]
    Earliest,
    /// Its end: only records produced from now on.
    Latest,
    /// Fail with [`ClientError::NoCommittedOffset`], naming the partition.
    None,
}

/// How a [`GroupConsumer`] joins and reads.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    /// Topic names to read.
    pub topics: Vec<String>,
    /// And topics whose whole name matches this RE2-style regular expression.
    pub pattern: Option<String>,
    /// A static member's stable id (Kafka's `group.instance.id`): restarting with it takes the
    /// member's partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// Commit what was handed to the application every `auto_commit_interval`, before giving
    /// a partition up, and at close.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub reset: OffsetReset,
    /// How long the member may take to give up partitions (server default if `None`).
    pub rebalance_timeout_ms: Option<u32>,
    /// "uniform" or "range" (the server's default if `None`).
    pub assignor: Option<String>,
    pub fetch: FetchOptions,
    pub client_id: String,
}

impl GroupConfig {
    pub fn new(group: impl Into<String>, topics: Vec<String>) -> Self {
        GroupConfig {
            group: group.into(),
            topics,
            pattern: None,
            instance_id: None,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            reset: OffsetReset::Earliest,
            rebalance_timeout_ms: None,
            assignor: None,
            fetch: FetchOptions::default(),
            client_id: String::from("fjord-rust"),
        }
    }
}

/// A record a group consumer handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub topic: String,
    pub record: ConsumedRecord,
}

/// A partition a member owns.
#[derive(Debug, Clone, Default)]
struct Owned {
    /// The next offset to fetch; `None` until its committed offset was read.
    position: Option<u64>,
    /// The offset after the last record handed to the application.
    handed: Option<u64>,
    /// The last offset committed by this member.
    committed: Option<u64>,
}

type Tp = (String, u32);

/// What a heartbeat task returns: the answer, where the coordinator is now, and when the
/// answer came (the member's session restarted just before: an answer applied later, after a
/// pause of the application, counts from then).
type HeartbeatOutput = (
    Result<v1::GroupHeartbeatResponse, ClientError>,
    Option<String>,
    Instant,
);

/// What a heartbeat in flight said when it was sent.
#[derive(Debug, Clone)]
struct Sent {
    at: Instant,
    epoch: i32,
    owned: BTreeSet<Tp>,
}

/// The heartbeat in flight.
struct InFlight {
    sent: Sent,
    task: tokio::task::JoinHandle<HeartbeatOutput>,
}

/// A heartbeat's outcome, not applied yet.
struct Arrived {
    sent: Sent,
    output: Result<HeartbeatOutput, tokio::task::JoinError>,
}

/// A fetch wait raced against the heartbeat in flight.
enum Raced<T> {
    Done(T),
    Heartbeat(Result<HeartbeatOutput, tokio::task::JoinError>),
}

/// Runs `fut` unless the heartbeat in flight ends first: then it is taken out of `inflight`
/// (the caller applies it) and `fut` is dropped.
async fn or_heartbeat<T>(
    inflight: &mut Option<InFlight>,
    fut: impl Future<Output = T>,
) -> Result<T, Arrived> {
    let Some(hb) = inflight.as_mut() else {
        return Ok(fut.await);
    };
    let raced = tokio::select! {
        v = fut => Raced::Done(v),
        out = &mut hb.task => Raced::Heartbeat(out),
    };
    match raced {
        Raced::Done(v) => Ok(v),
        Raced::Heartbeat(output) => {
            let sent = inflight.take().map(|h| h.sent).expect("in flight above");
            Err(Arrived { sent, output })
        }
    }
}

/// Why [`GroupConsumer::fetch_owned`] returned no records.
enum FetchEnd {
    Failed(ClientError),
    /// The heartbeat in flight was answered first.
    Heartbeat(Box<Arrived>),
}

/// Rounds of "apply an answer, send the next heartbeat" one `poll` makes at most.
const MAX_HEARTBEAT_ROUNDS: usize = 4;

/// A member of a consumer group (see the module doc).
pub struct GroupConsumer {
    client: Client,
    config: GroupConfig,
    coordinator: Option<String>,
    member_id: String,
    /// 0 until joined (and after being fenced).
    epoch: i32,
    heartbeat_interval: Duration,
    session_timeout: Duration,
    next_heartbeat: Instant,
    last_heartbeat_ok: Instant,
    /// The heartbeat in flight (at most one, besides a leave).
    inflight: Option<InFlight>,
    /// A heartbeat's outcome that ended a fetch wait, to apply.
    arrived: Option<Arrived>,
    owned: BTreeMap<Tp, Owned>,
    /// Handed out by the previous `poll`: committable from the next one on.
    pending_handed: BTreeMap<Tp, u64>,
    next_commit: Instant,
    /// How many times it dropped every partition (see [`GroupConsumer::session`]).
    sessions: u64,
    /// A partition's fatal fetch error, held back while other partitions' records were handed
    /// out; the next `poll` returns it.
    deferred: Option<ClientError>,
    /// Set once a newer member took this one's instance id: every later poll fails with it.
    fenced_for_good: Option<ClientError>,
}

impl Client {
    /// A member of `config.group`; it joins on its first [`GroupConsumer::poll`].
    pub fn group_consumer(&self, config: GroupConfig) -> Result<GroupConsumer, ClientError> {
        config.fetch.validate()?;
        if config.topics.is_empty() && config.pattern.is_none() {
            return Err(ClientError::Config(
                "a group consumer needs topics or a pattern to subscribe to".into(),
            ));
        }
        let now = Instant::now();
        // A dynamic member names itself (Kafka's KIP-1082): a join whose answer was lost and
        // that is retried comes back under the same id, instead of leaving behind a second
        // member that holds partitions until its session times out. Drawn from the OS-seeded
        // generator, not the client's (which a test may seed alike for every client). A
        // static member joins without one: its instance id finds its place.
        let member_id = match config.instance_id {
            Some(_) => String::new(),
            None => format!(
                "c-{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
        };
        Ok(GroupConsumer {
            client: self.clone(),
            coordinator: None,
            member_id,
            epoch: 0,
            heartbeat_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(45),
            next_heartbeat: now,
            last_heartbeat_ok: now,
            inflight: None,
            arrived: None,
            owned: BTreeMap::new(),
            pending_handed: BTreeMap::new(),
            next_commit: now + config.auto_commit_interval,
            sessions: 0,
            deferred: None,
            fenced_for_good: None,
            config,
        })
    }

    /// Which node coordinates `group`.
    pub async fn find_coordinator(&self, group: &str) -> Result<String, ClientError> {
        let group = group.to_string();
        let r = self
            .any_node(|mut c: crate::client::Stub, t| {
                let req = v1::FindCoordinatorRequest {
                    group: group.clone(),
                };
                async move { c.find_coordinator(request(req, t)).await }
            })
            .await?;
        Ok(r.address)
    }

    /// A call to `group`'s coordinator: found through any node, followed when it moves,
    /// retried while retryable within the client's retry bounds. `cached` keeps the
    /// coordinator's address between calls.
    pub(crate) async fn coordinator_call<T, F, Fut>(
        &self,
        group: &str,
        cached: &mut Option<String>,
        f: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(crate::client::Stub, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.coordinator_call_held(group, cached, Duration::ZERO, f)
            .await
    }

    /// [`Client::coordinator_call`] for a call the coordinator may hold up to `hold` (a long
    /// poll): each attempt's deadline is the request timeout plus `hold`.
    pub(crate) async fn coordinator_call_held<T, F, Fut>(
        &self,
        group: &str,
        cached: &mut Option<String>,
        hold: Duration,
        mut f: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(crate::client::Stub, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.request_timeout() + hold;
        let mut retry = RetryState::new(self.config());
        loop {
            let address = self.coordinator_address(group, cached).await?;
            match self.call(&address, timeout, |c| f(c, timeout)).await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    let hinted = follow_hint(cached, &err);
                    self.wait_or_give_up(&mut retry, err, hinted).await?;
                }
            }
        }
    }

    /// `group`'s coordinator: the `cached` address, else found through any node (and cached).
    async fn coordinator_address(
        &self,
        group: &str,
        cached: &mut Option<String>,
    ) -> Result<String, ClientError> {
        if let Some(a) = cached.clone() {
            return Ok(a);
        }
        let a = self.find_coordinator(group).await?;
        *cached = Some(a.clone());
        Ok(a)
    }

    /// One attempt of a coordinator call, not retried: for an asynchronous commit, whose retry
    /// could land after a later commit and move the offset back (Kafka's `commitAsync` does
    /// not retry either).
    pub(crate) async fn coordinator_call_once<T, F, Fut>(
        &self,
        group: &str,
        cached: &mut Option<String>,
        f: F,
    ) -> Result<T, ClientError>
    where
        F: FnOnce(crate::client::Stub, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.request_timeout();
        let address = self.coordinator_address(group, cached).await?;
        let result = self.call(&address, timeout, |c| f(c, timeout)).await;
        if let Err(err) = &result {
            follow_hint(cached, err);
        }
        result
    }

    /// Every group, from every coordinator partition (each node lists those it holds a
    /// replica of; the rest are asked of other nodes).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let first = self
            .any_node(|mut c: crate::client::Stub, t| async move {
                c.list_groups(request(v1::ListGroupsRequest::default(), t))
                    .await
            })
            .await?;
        let mut groups: Vec<GroupListing> = first.groups.into_iter().map(Into::into).collect();
        let mut missing = first.missing_partitions;
        for address in self.metadata().await?.nodes.iter().map(|n| n.1.clone()) {
            if missing.is_empty() {
                break;
            }
            let req = v1::ListGroupsRequest {
                partitions: missing.clone(),
            };
            let timeout = self.request_timeout();
            if let Ok(r) = self
                .call(&address, timeout, |mut c| async move {
                    c.list_groups(request(req, timeout)).await
                })
                .await
            {
                groups.extend(r.groups.into_iter().map(Into::into));
                missing.retain(|p| r.missing_partitions.contains(p));
            }
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        groups.dedup_by(|a, b| a.group == b.group);
        Ok(groups)
    }

    /// A group's state, members and offsets, with each partition's lag in records and in
    /// time (the age of its oldest unconsumed record).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let mut cached = None;
        let g = group.to_string();
        let d = self
            .coordinator_call(group, &mut cached, |mut c, t| {
                let req = v1::DescribeGroupRequest { group: g.clone() };
                async move { c.describe_group(request(req, t)).await }
            })
            .await?;
        let partitions = d
            .offsets
            .iter()
            .map(|o| PartitionLag {
                topic: o.topic.clone(),
                partition: o.partition,
                committed_offset: o.committed_offset,
                high_watermark: o.high_watermark,
                lag_records: o.lag_records,
                lag_ms: o.lag_ms,
                member_id: o.member_id.clone(),
            })
            .collect();
        Ok(GroupDescription {
            settings: GroupSettings {
                session_timeout_ms: d.session_timeout_ms,
                session_timeout_override: d.session_timeout_override,
                heartbeat_interval_ms: d.heartbeat_interval_ms,
                heartbeat_interval_override: d.heartbeat_interval_override,
                assignor: d.assignor,
                assignor_override: d.assignor_override,
            },
            group: d.group,
            state: d.state,
            group_epoch: d.group_epoch,
            coordinator: d.coordinator,
            members: d
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    member_epoch: m.member_epoch,
                    state: m.state,
                    assigned: flatten(&m.assigned),
                })
                .collect(),
            partitions,
        })
    }

    /// Moves the committed offsets of an empty group; returns the new ones.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
        to: ResetSpec,
    ) -> Result<Vec<(String, u32, u64)>, ClientError> {
        use v1::reset_offsets_request::To;
        let to = match to {
            ResetSpec::Earliest => To::Earliest(true),
            ResetSpec::Latest => To::Latest(true),
            ResetSpec::Offset(o) => To::Offset(o),
            ResetSpec::ShiftBy(d) => To::ShiftBy(d),
            ResetSpec::Time(t) => To::TimestampMs(t),
        };
        let req = v1::ResetOffsetsRequest {
            group: group.to_string(),
            topic: topic.unwrap_or_default().to_string(),
            to: Some(to),
        };
        let mut cached = None;
        let r = self
            .coordinator_call(group, &mut cached, |mut c, t| {
                let req = req.clone();
                async move { c.reset_offsets(request(req, t)).await }
            })
            .await?;
        Ok(r.offsets
            .into_iter()
            .map(|o| (o.topic, o.partition, o.offset.unwrap_or(0)))
            .collect())
    }

    /// Deletes an empty group and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let mut cached = None;
        let g = group.to_string();
        self.coordinator_call(group, &mut cached, |mut c, t| {
            let req = v1::DeleteGroupRequest { group: g.clone() };
            async move { c.delete_group(request(req, t)).await }
        })
        .await?;
        Ok(())
    }

    /// Sets or clears a group's own session timeout, heartbeat interval and assignor (a
    /// cleared one is the server's default again); creates the group, empty, if it does not
    /// exist. Returns the settings in force after the change. A value outside its limits is
    /// refused ([`ClientError`] with INVALID_ARGUMENT, naming the limit).
    pub async fn alter_group_config(
        &self,
        group: &str,
        change: &GroupConfigChange,
    ) -> Result<GroupSettings, ClientError> {
        let (session_timeout_ms, reset_session_timeout) = change.session_timeout_ms.into_wire();
        let (heartbeat_interval_ms, reset_heartbeat_interval) =
            change.heartbeat_interval_ms.into_wire();
        let (assignor, reset_assignor) = change.assignor.clone().into_wire();
        let req = v1::AlterGroupConfigRequest {
            group: group.to_string(),
            session_timeout_ms,
            heartbeat_interval_ms,
            assignor,
            reset_session_timeout,
            reset_heartbeat_interval,
            reset_assignor,
        };
        let mut cached = None;
        let r = self
            .coordinator_call(group, &mut cached, |mut c, t| {
                let req = req.clone();
                async move { c.alter_group_config(request(req, t)).await }
            })
            .await?;
        Ok(GroupSettings {
            session_timeout_ms: r.session_timeout_ms,
            session_timeout_override: r.session_timeout_override,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            heartbeat_interval_override: r.heartbeat_interval_override,
            assignor: r.assignor,
            assignor_override: r.assignor_override,
        })
    }
}

fn flatten(tps: &[v1::TopicPartitions]) -> Vec<(String, u32)> {
    tps.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

fn to_wire(tps: impl IntoIterator<Item = Tp>) -> Vec<v1::TopicPartitions> {
    let mut by: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by.entry(t).or_default().push(p);
    }
    by.into_iter()
        .map(|(topic, partitions)| v1::TopicPartitions { topic, partitions })
        .collect()
}

/// Where [`Client::reset_offsets`] moves offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetSpec {
    Earliest,
    Latest,
    Offset(u64),
    ShiftBy(i64),
    /// The first record at or after this time (ms since the epoch), or the end.
    Time(i64),
}

/// What [`Client::alter_group_config`] does to one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettingChange<T> {
    /// Leaves it as it is.
    #[default]
    Keep,
    /// The group's own value from now on.
    Set(T),
    /// Back to the server's default.
    Reset,
}

impl<T> SettingChange<T> {
    /// The request's value and reset flag.
    fn into_wire(self) -> (Option<T>, bool) {
        match self {
            SettingChange::Keep => (None, false),
            SettingChange::Set(v) => (Some(v), false),
            SettingChange::Reset => (None, true),
        }
    }
}

/// [`Client::alter_group_config`]'s changes; [`SettingChange::Keep`] for the settings left alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupConfigChange {
    /// 1,000 to 3,600,000 ms.
    pub session_timeout_ms: SettingChange<u32>,
    /// 100 to 600,000 ms, and below the session timeout in force.
    pub heartbeat_interval_ms: SettingChange<u32>,
    /// "uniform" or "range".
    pub assignor: SettingChange<String>,
}

/// A group's settings in force, each with whether it is the group's own (an override set by
/// [`Client::alter_group_config`]) or the server's default (for the assignor: the one its
/// first member asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    pub session_timeout_ms: u32,
    pub session_timeout_override: bool,
    pub heartbeat_interval_ms: u32,
    pub heartbeat_interval_override: bool,
    pub assignor: String,
    pub assignor_override: bool,
}

/// One group in [`Client::list_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    pub members: u32,
}

impl From<v1::GroupListing> for GroupListing {
    fn from(g: v1::GroupListing) -> Self {
        GroupListing {
            group: g.group,
            state: g.state,
            members: g.members,
        }
    }
}

/// [`Client::describe_group`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub group_epoch: u32,
    /// The session timeout, heartbeat interval and assignor in force.
    pub settings: GroupSettings,
    pub coordinator: u64,
    pub members: Vec<MemberDescription>,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub state: String,
    pub assigned: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed_offset: Option<u64>,
    pub high_watermark: u64,
    /// Records not yet consumed (`None`: the high watermark is unknown, not "caught up").
    pub lag_records: Option<u64>,
    /// The age of the oldest unconsumed record, in ms (`None`: it could not be read).
    pub lag_ms: Option<i64>,
    pub member_id: String,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.give_up_heartbeat();
    }
}

impl GroupConsumer {
    /// A call to this member's group coordinator, remembering where it is between calls.
    async fn at_coordinator<T, F, Fut>(&mut self, f: F) -> Result<T, ClientError>
    where
        F: FnMut(crate::client::Stub, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut cached = self.coordinator.take();
        let answer = self
            .client
            .coordinator_call(&self.config.group, &mut cached, f)
            .await;
        self.coordinator = cached;
        answer
    }

    /// The member id the coordinator gave (empty before the first join).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The member epoch (0 while not joined).
    pub fn member_epoch(&self) -> i32 {
        self.epoch
    }

    /// How often this member heartbeats: as the coordinator's last answer said (5 s until
    /// the first one). A coordinator holds a heartbeat with no news up to this long and
    /// answers it as soon as the group changes, so a rebalance reaches the member at once (a
    /// coordinator that does not hold heartbeats: at the member's next one).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.owned.keys().cloned().collect()
    }

    /// How many times this member dropped every partition at once (fenced, or silent towards
    /// its coordinator for a session timeout) to join again. It owned a partition without a
    /// break between two calls when [`GroupConsumer::assignment`] lists it after both and
    /// this count did not change: one call cannot lose and win back a partition otherwise.
    pub fn session(&self) -> u64 {
        self.sessions
    }

    /// The offsets [`GroupConsumer::commit`] would send now (none while not joined).
    pub fn pending_commit(&self) -> Vec<(String, u32, u64)> {
        let all: Vec<Tp> = self.owned.keys().cloned().collect();
        self.to_commit(&all)
            .into_iter()
            .map(|((topic, partition), offset)| (topic, partition, offset))
            .collect()
    }

    /// What committing `partitions` sends: each one's offset after the records handed out,
    /// where not committed already.
    fn to_commit(&self, partitions: &[Tp]) -> Vec<(Tp, u64)> {
        if self.epoch <= 0 {
            return Vec::new();
        }
        partitions
            .iter()
            .filter_map(|tp| {
                let o = self.owned.get(tp)?;
                let handed = o.handed?;
                (o.committed != Some(handed)).then(|| (tp.clone(), handed))
            })
            .collect()
    }

    /// Takes back records of the last `poll` from `next_offset` on in one partition: they are
    /// fetched again and not committed (for an application that stops in the middle of what
    /// `poll` returned).
    pub fn unconsume(&mut self, topic: &str, partition: u32, next_offset: u64) {
        let tp = (topic.to_string(), partition);
        if let Some(o) = self.owned.get_mut(&tp) {
            o.position = Some(o.position.map_or(next_offset, |p| p.min(next_offset)));
        }
        if let Some(h) = self.pending_handed.get_mut(&tp) {
            *h = (*h).min(next_offset);
        }
    }

    /// Heartbeats when due, commits when due, and returns the next records of the owned
    /// partitions (possibly none, after waiting at most half a heartbeat interval).
    pub async fn poll(&mut self) -> Result<Vec<GroupRecord>, ClientError> {
        // What the last poll handed out is done with: committable now.
        for (tp, next) in std::mem::take(&mut self.pending_handed) {
            if let Some(o) = self.owned.get_mut(&tp) {
                o.handed = Some(next);
            }
        }
        if let Some(e) = &self.fenced_for_good {
            return Err(e.clone());
        }
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if self.config.auto_commit && Instant::now() >= self.next_commit {
            self.next_commit = Instant::now() + self.config.auto_commit_interval;
            match self.commit().await {
                Ok(()) | Err(ClientError::MemberFenced(_)) => {}
                Err(e) if e.is_retryable() || matches!(e, ClientError::StaleMemberEpoch(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.heartbeats().await?;
        self.resolve_positions().await?;
        match self.fetch_owned().await {
            Ok(records) => Ok(records),
            Err(FetchEnd::Failed(e)) => Err(e),
            Err(FetchEnd::Heartbeat(arrived)) => {
                // The fetch was dropped unanswered (nothing handed out): apply the answer now.
                self.arrived = Some(*arrived);
                self.heartbeats().await?;
                Ok(Vec::new())
            }
        }
    }

    /// Applies the heartbeat answer that arrived, if any, and sends the next heartbeat when
    /// due. A join is waited for here (nothing can be read before it); other heartbeats stay
    /// in flight while `poll` reads.
    async fn heartbeats(&mut self) -> Result<(), ClientError> {
        if self.epoch != 0 && self.last_heartbeat_ok.elapsed() >= self.session_timeout {
            // Silent for a whole session: the coordinator has removed us by now. Never read
            // on from partitions that may be someone else's.
            tracing::warn!(group = %self.config.group, "no heartbeat answered for a session timeout: dropping every partition and rejoining");
            self.drop_all();
        }
        for _ in 0..MAX_HEARTBEAT_ROUNDS {
            if self.arrived.is_none()
                && let Some(hb) = self
                    .inflight
                    .take_if(|h| h.task.is_finished() || self.epoch == 0)
            {
                // Finished (no wait), or a join (waited for).
                let output = hb.task.await;
                self.arrived = Some(Arrived {
                    sent: hb.sent,
                    output,
                });
            }
            if let Some(arrived) = self.arrived.take() {
                self.apply_heartbeat(arrived).await?;
            }
            if self.inflight.is_none() && Instant::now() >= self.next_heartbeat {
                self.send_heartbeat();
            }
            if self.epoch != 0 || self.inflight.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Sends a heartbeat in the background (a long poll: see the module doc).
    fn send_heartbeat(&mut self) {
        let owned: BTreeSet<Tp> = self.owned.keys().cloned().collect();
        // Joins are never held; beyond the client's bound, neither is a heartbeat.
        let permit = (self.epoch > 0)
            .then(|| self.client.hold_permit())
            .flatten();
        let hold = if permit.is_some() {
            self.heartbeat_interval
        } else {
            Duration::ZERO
        };
        let req = v1::GroupHeartbeatRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            instance_id: self.config.instance_id.clone(),
            rebalance_timeout_ms: self.config.rebalance_timeout_ms,
            subscription: Some(v1::Subscription {
                topics: self.config.topics.clone(),
                pattern: self.config.pattern.clone(),
            }),
            owned: Some(v1::OwnedPartitions {
                partitions: to_wire(owned.iter().cloned()),
            }),
            assignor: self.config.assignor.clone().unwrap_or_default(),
            client_id: self.config.client_id.clone(),
            wait_ms: (!hold.is_zero()).then(|| hold.as_millis().min(u32::MAX as u128) as u32),
        };
        let (client, group, mut cached) = (
            self.client.clone(),
            self.config.group.clone(),
            self.coordinator.clone(),
        );
        let task = tokio::spawn(async move {
            let answer = client
                .coordinator_call_held(&group, &mut cached, hold, |mut c, t| {
                    let req = req.clone();
                    async move { c.group_heartbeat(request(req, t)).await }
                })
                .await;
            drop(permit);
            (answer, cached, Instant::now())
        });
        let sent = Sent {
            at: Instant::now(),
            epoch: self.epoch,
            owned,
        };
        self.inflight = Some(InFlight { sent, task });
    }

    /// Applies a heartbeat's outcome: the assignment it answers with, and when to send the
    /// next (at once after news or a held answer, a heartbeat interval after the last one
    /// otherwise).
    async fn apply_heartbeat(&mut self, arrived: Arrived) -> Result<(), ClientError> {
        let Arrived { sent, output } = arrived;
        let (answer, answered_at) = match output {
            Ok((answer, cached, at)) => {
                self.coordinator = cached;
                (answer, at)
            }
            // A panic in the task (a bug): try again, as after a timeout.
            Err(e) => (
                Err(ClientError::Timeout(format!(
                    "the heartbeat task ended: {e}"
                ))),
                Instant::now(),
            ),
        };
        match answer {
            Ok(r) => {
                let now = Instant::now();
                self.last_heartbeat_ok = answered_at;
                self.member_id = r.member_id;
                self.epoch = r.member_epoch;
                self.heartbeat_interval =
                    Duration::from_millis(r.heartbeat_interval_ms.max(1).into());
                self.session_timeout = Duration::from_millis(r.session_timeout_ms.max(1).into());
                let assigned: BTreeSet<Tp> = flatten(&r.assignment).into_iter().collect();
                let news = r.member_epoch != sent.epoch || assigned != sent.owned;
                self.next_heartbeat = if news {
                    now
                } else {
                    // Held (answered about an interval after it was sent): the next at once.
                    (sent.at + self.heartbeat_interval).max(now)
                };
                self.apply_assignment(assigned).await;
                Ok(())
            }
            Err(e @ ClientError::InstanceFenced(_)) => {
                // Rejoining with the instance id would take the partitions back from the
                // member that replaced this one, which would do the same: never.
                tracing::error!(group = %self.config.group, error = %e, "fenced for good: another member holds this instance id");
                self.drop_all();
                self.fenced_for_good = Some(e.clone());
                Err(e)
            }
            Err(ClientError::MemberFenced(why)) => {
                tracing::warn!(group = %self.config.group, %why, "fenced: dropping every partition and rejoining");
                self.drop_all();
                self.next_heartbeat = Instant::now();
                Ok(())
            }
            Err(e) if e.is_retryable() => {
                // Try again soon; the session clock above decides when to give up.
                self.next_heartbeat = Instant::now() + self.heartbeat_interval / 4;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Drops every partition, to rejoin at once. A heartbeat in flight is given up: its
    /// answer is about the member dropped.
    fn drop_all(&mut self) {
        self.sessions += 1;
        self.owned.clear();
        self.pending_handed.clear();
        self.epoch = 0;
        self.next_heartbeat = Instant::now();
        self.give_up_heartbeat();
    }

    /// Aborts the heartbeat in flight and forgets an answer not applied yet.
    fn give_up_heartbeat(&mut self) {
        if let Some(hb) = self.inflight.take() {
            hb.task.abort();
        }
        self.arrived = None;
    }

    /// Gives up what the answer no longer lists (committing it first), takes on what is new.
    async fn apply_assignment(&mut self, assigned: BTreeSet<Tp>) {
        let revoked: Vec<Tp> = self
            .owned
            .keys()
            .filter(|tp| !assigned.contains(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            if self.config.auto_commit {
                // Everything handed out so far counts: the application is not reading these
                // partitions any more once this call returns.
                for (tp, next) in std::mem::take(&mut self.pending_handed) {
                    if let Some(o) = self.owned.get_mut(&tp) {
                        o.handed = Some(next);
                    }
                }
                if let Err(e) = self.commit_partitions(&revoked).await {
                    tracing::warn!(group = %self.config.group, error = %e, "cannot commit revoked partitions");
                }
            }
            for tp in &revoked {
                self.owned.remove(tp);
                self.pending_handed.remove(tp);
            }
            // Say so at once: the partitions go to their new owner only then.
            self.next_heartbeat = Instant::now();
        }
        for tp in assigned {
            self.owned.entry(tp).or_default();
        }
    }

    /// Reads the committed offset of each newly owned partition (or applies the reset policy).
    async fn resolve_positions(&mut self) -> Result<(), ClientError> {
        let unknown: Vec<Tp> = self
            .owned
            .iter()
            .filter(|(_, o)| o.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if unknown.is_empty() || self.epoch <= 0 {
            return Ok(());
        }
        let req = v1::FetchOffsetsRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            partitions: to_wire(unknown.iter().cloned()),
        };
        let answer = self
            .at_coordinator(|mut c, t| {
                let req = req.clone();
                async move { c.fetch_offsets(request(req, t)).await }
            })
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(ClientError::MemberFenced(_)) => {
                self.drop_all();
                return Ok(());
            }
            Err(e) if e.is_retryable() => return Ok(()),
            Err(e) => return Err(e),
        };
        for c in answer.offsets {
            let tp = (c.topic.clone(), c.partition);
            let start = match c.offset {
                Some(o) => o,
                None => self.reset_position(&c.topic, c.partition).await?,
            };
            if let Some(o) = self.owned.get_mut(&tp) {
                o.position = Some(start);
                o.committed = c.offset;
            }
        }
        Ok(())
    }

    async fn reset_position(&self, topic: &str, partition: u32) -> Result<u64, ClientError> {
        use crate::offsets::OffsetSpec;
        let spec = match self.config.reset {
            OffsetReset::None => {
                return Err(ClientError::NoCommittedOffset(format!(
                    "group {:?} has no committed offset (or it is out of range) for \
                     {topic}/{partition} and its reset policy is none",
                    self.config.group
                )));
            }
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        };
        let read = self.config.fetch.read;
        Ok(self
            .client
            .list_offset(topic, partition, spec, read)
            .await?
            .or_end())
    }

    /// Fetches every owned partition once, concurrently, waiting at most half a heartbeat
    /// interval for records, or until the heartbeat in flight is answered (then nothing is
    /// handed out: the fetches are dropped unanswered).
    async fn fetch_owned(&mut self) -> Result<Vec<GroupRecord>, FetchEnd> {
        let wait_cap = (self.heartbeat_interval / 2).as_millis() as u32;
        let options = FetchOptions {
            max_wait_ms: self.config.fetch.max_wait_ms.min(wait_cap),
            ..self.config.fetch
        };
        let wanted: Vec<(Tp, u64)> = self
            .owned
            .iter()
            .filter_map(|(tp, o)| o.position.map(|p| (tp.clone(), p)))
            .collect();
        if wanted.is_empty() {
            if self.owned.is_empty() {
                // Nothing to read yet: wait for the next heartbeat's answer (or for the time
                // to send it) rather than spin.
                let wait = Instant::now() + Duration::from_millis(options.max_wait_ms.into());
                let until = if self.inflight.is_some() {
                    wait
                } else {
                    self.next_heartbeat.min(wait)
                };
                let sleep = tokio::time::sleep_until(until);
                or_heartbeat(&mut self.inflight, sleep)
                    .await
                    .map_err(|a| FetchEnd::Heartbeat(Box::new(a)))?;
            }
            return Ok(Vec::new());
        }
        let client = &self.client;
        let fetches = wanted.iter().map(|(tp, at)| async move {
            (tp.clone(), client.fetch(&tp.0, tp.1, *at, options).await)
        });
        let results = or_heartbeat(&mut self.inflight, futures::future::join_all(fetches))
            .await
            .map_err(|a| FetchEnd::Heartbeat(Box::new(a)))?;
        let mut out = Vec::new();
        let mut failed = None;
        for (tp, result) in results {
            match result {
                Ok(f) => {
                    let Some(o) = self.owned.get_mut(&tp) else {
                        continue;
                    };
                    if let Some(last) = f.records.last() {
                        self.pending_handed.insert(tp.clone(), last.offset + 1);
                    }
                    // Past what was read, also where compaction left batches without records.
                    if o.position.is_some_and(|p| f.next_offset > p) {
                        o.position = Some(f.next_offset);
                    }
                    out.extend(f.records.into_iter().map(|record| GroupRecord {
                        topic: tp.0.clone(),
                        record,
                    }));
                }
                Err(e) if e.is_retryable() => {}
                // The position's records were deleted (retention, DeleteRecords): move on as
                // the reset policy says, as Kafka's consumer does.
                Err(ClientError::OffsetOutOfRange(why)) => {
                    match self.reset_position(&tp.0, tp.1).await {
                        Ok(p) => {
                            tracing::info!(topic = %tp.0, partition = tp.1, %why, position = p, "position out of range: reset");
                            if let Some(o) = self.owned.get_mut(&tp) {
                                o.position = Some(p);
                            }
                        }
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        match failed {
            // The other partitions' records are already marked handed out: hand them out, and
            // report the error on the next poll (else they would be committed unseen).
            Some(e) if !out.is_empty() => {
                self.deferred = Some(e);
                Ok(out)
            }
            Some(e) => Err(FetchEnd::Failed(e)),
            None => Ok(out),
        }
    }

    /// Commits, for every owned partition, the offset after the last record handed out before
    /// this call's previous `poll` (synchronously).
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let all: Vec<Tp> = self.owned.keys().cloned().collect();
        self.commit_partitions(&all).await
    }

    /// Commits what was handed out of `partitions` (synchronously).
    pub async fn commit_partitions(&mut self, partitions: &[Tp]) -> Result<(), ClientError> {
        let offsets = self.to_commit(partitions);
        if offsets.is_empty() {
            return Ok(());
        }
        let req = v1::CommitOffsetsRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            offsets: offsets
                .iter()
                .map(|((topic, partition), offset)| v1::OffsetCommit {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        let answer = self
            .at_coordinator(|mut c, t| {
                let req = req.clone();
                async move { c.commit_offsets(request(req, t)).await }
            })
            .await;
        match answer {
            Ok(_) => {
                for (tp, offset) in offsets {
                    if let Some(o) = self.owned.get_mut(&tp) {
                        o.committed = Some(offset);
                    }
                }
                Ok(())
            }
            Err(ClientError::MemberFenced(why)) => {
                self.drop_all();
                self.next_heartbeat = Instant::now();
                Err(ClientError::MemberFenced(why))
            }
            Err(e) => Err(e),
        }
    }

    /// Commits in the background what was handed out so far; the returned handle says how
    /// it went. The member's own state learns of it only through later commits. Sent once,
    /// never retried (a retry could land after a later commit and move the offset back): a
    /// failed asynchronous commit is made good by the next commit.
    pub fn commit_async(&self) -> tokio::task::JoinHandle<Result<(), ClientError>> {
        let offsets: Vec<v1::OffsetCommit> = self
            .owned
            .iter()
            .filter_map(|((topic, partition), o)| {
                Some(v1::OffsetCommit {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: o.handed?,
                    metadata: String::new(),
                })
            })
            .collect();
        let req = v1::CommitOffsetsRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            offsets,
        };
        let (client, group, mut cached) = (
            self.client.clone(),
            self.config.group.clone(),
            self.coordinator.clone(),
        );
        tokio::spawn(async move {
            if req.offsets.is_empty() {
                return Ok(());
            }
            client
                .coordinator_call_once(&group, &mut cached, |mut c, t| async move {
                    c.commit_offsets(request(req, t)).await
                })
                .await
                .map(|_| ())
        })
    }

    /// Commits (with auto-commit) and leaves the group: at once for a dynamic member; a
    /// static member leaves its partitions to its next instance until its session times out.
    pub async fn close(mut self) -> Result<(), ClientError> {
        // A held heartbeat's answer no longer matters: the leave below answers it.
        self.give_up_heartbeat();
        for (tp, next) in std::mem::take(&mut self.pending_handed) {
            if let Some(o) = self.owned.get_mut(&tp) {
                o.handed = Some(next);
            }
        }
        if self.config.auto_commit {
            let _ = self.commit().await;
        }
        if self.epoch <= 0 {
            return Ok(());
        }
        let req = v1::GroupHeartbeatRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: if self.config.instance_id.is_some() {
                -2
            } else {
                -1
            },
            ..Default::default()
        };
        self.at_coordinator(|mut c, t| {
            let req = req.clone();
            async move { c.group_heartbeat(request(req, t)).await }
        })
        .await
        .map(|_| ())
    }
}

/// After a failed coordinator call: the next goes where the answer's hint points, else to a
/// coordinator found anew. Whether there was a hint.
fn follow_hint(cached: &mut Option<String>, err: &ClientError) -> bool {
    *cached = err.leader_hint().and_then(|h| h.address.clone());
    cached.is_some()
}
