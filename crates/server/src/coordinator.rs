//! The group coordinator: the thin layer that runs [`fjord_groups`]' decisions on the leader
//! of each partition of the groups' topic ([`fjord_groups::GROUPS_TOPIC`]).
//!
//! - A group lives on one partition of that topic (its name's hash); the partition's leader
//!   is its **coordinator**. A request for a group this node does not coordinate is refused
//!   with the coordinator's address ([`ApiError::NotCoordinator`]).
//! - Each coordinator partition led here has a **runner**: a task that owns the partition's
//!   volatile state (member session clocks, cached high watermarks) and takes requests from a
//!   bounded queue, a batch at a time. For each batch it decides every request against the
//!   applied groups (and the batch's own earlier decisions), writes all their records as one
//!   CP batch to the partition, and answers once it is committed and applied. A batch with
//!   nothing to write still does a ReadIndex round: an answer is never given by a node that
//!   is no longer leader.
//! - A runner starts when this node becomes the partition's leader (and on a request, if
//!   none runs); it stops when the node no longer leads it.
//! - On taking over (each new term) a runner first waits until the partition has applied
//!   everything committed before ([`PartitionHandle::linearizable_read`]), then gives every
//!   member a fresh session: silence is only counted from then on.
//! - Every [`TICK`] it removes the members silent past their session timeout and those that
//!   held partitions to revoke past their rebalance timeout; every [`expiry_every`] of the
//!   node's offset retention (`--group-offset-retention-ms`, 7 days by default) it expires the
//!   offsets of empty groups past it ([`offsets::expire`]).
//! - A group config change (AlterGroupConfig) that changes the session timeout restarts the
//!   session clock of each of the group's members with the new timeout.
//! - **Held heartbeats** (a long poll, `wait_ms`): a heartbeat that is news to no one
//!   ([`heartbeat::may_hold`]) is parked instead of answered, until its deadline (its wait, at
//!   most the heartbeat interval in force) or until records that may change its answer are
//!   written for its group (by a batch, or by a removal on timeout: anything but committed
//!   offsets, [`GroupRecord::changes_members`]), whichever comes first. Then it is decided again, in
//!   the next batch, as if just received: parked again if still news to no one and before its
//!   deadline, else answered through the batch's write or ReadIndex like any request. So a
//!   member hears of a rebalance as soon as it starts, not at its next heartbeat. A parked
//!   member's session does not run out; it restarts when the answer is sent. At most
//!   [`MAX_PARKED_HEARTBEATS`] are parked per runner; a member's new request answers its
//!   parked one; a stopping runner answers every parked one NOT_COORDINATOR.
//! - The topic itself is created on the first group request ([`Coordinator::topic`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_groups::config::{self, AlterConfigRequest, Effective};
use fjord_groups::heartbeat::{self, Decision, HeartbeatAnswer, HeartbeatRequest, timing};
use fjord_groups::limits::MAX_HEARTBEAT_INTERVAL_MS;
use fjord_groups::offsets::{self, Bounds, CommitRequest, Committer, ResetTo};
use fjord_groups::{
    Committed, Context, Group, GroupError, GroupRecord, MemberState, TopicsView, Tp,
};
use fjord_meta::{GroupId, MetaCommand, MetaResponse, Topic, group_id};
use fjord_proto::batch;
use fjord_proto::v1::Record;
use fjord_raft::{PartitionHandle, StoredBatch};
use fjord_storage::partition::Outcome;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{ApiError, NoLeaderCause, Subject};
use crate::node::Node;

/// Requests waiting for one coordinator partition, at most; beyond, UNAVAILABLE (retry).
pub const MAX_QUEUED_REQUESTS: usize = 4_096;
/// Requests decided together and written as one batch, at most.
pub const MAX_BATCH_REQUESTS: usize = 256;
/// Records in one batch written to a coordinator partition, at most. Batches are cut between
/// decisions, so that a decision (a commit of up to MAX_OFFSETS_PER_REQUEST offsets with its
/// group's record, a rebalance) is applied whole or not at all; only a decision larger than
/// this (a big group's deletion, which a retry completes) is written in several.
pub const MAX_RECORDS_PER_BATCH: usize = fjord_groups::limits::MAX_OFFSETS_PER_REQUEST + 64;
/// How often a runner looks for members past their session or rebalance timeout.
pub const TICK: Duration = Duration::from_millis(250);
/// How often a runner looks for groups whose offsets expired, at most…
pub const MAX_EXPIRY_EVERY: Duration = Duration::from_secs(60);
/// …and at least (a runner looks no more often than it ticks).
pub const MIN_EXPIRY_EVERY: Duration = TICK;

/// How often a runner looks for expired offsets under an offset retention of `retention_ms`:
/// a quarter of it, within [`MIN_EXPIRY_EVERY`] and [`MAX_EXPIRY_EVERY`], so that a short
/// retention expires promptly and a long one costs a look a minute.
pub fn expiry_every(retention_ms: i64) -> Duration {
    let quarter = Duration::from_millis(u64::try_from(retention_ms / 4).unwrap_or(0));
    quarter.clamp(MIN_EXPIRY_EVERY, MAX_EXPIRY_EVERY)
}
/// How long a request waits for its answer, at most: a write to the coordinator partition
/// (plus, for a held heartbeat, its wait).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats a runner holds (parks) at once, at most (one per member at most); beyond, a
/// heartbeat is answered at once.
pub const MAX_PARKED_HEARTBEATS: usize = 65_536;

/// What a group request asks, in domain types.
#[derive(Debug)]
pub enum Op {
    /// A heartbeat, and how long the member lets the coordinator hold its answer when it is
    /// news to no one (0: answer at once; clamped to the heartbeat interval in force).
    Heartbeat {
        req: HeartbeatRequest,
        wait_ms: u32,
    },
    Commit(CommitRequest),
    Fetch {
        group: String,
        who: Committer,
        tps: Vec<Tp>,
    },
    Describe(String),
    Reset {
        group: String,
        to: ResetTo,
        topic: Option<fjord_groups::TopicId>,
        /// With ACLs: the topics the caller was checked for (read); the reset moves, and
        /// looks up by time, only these. `None`: every one.
        within: Option<BTreeSet<fjord_groups::TopicId>>,
    },
    Delete(String),
    AlterConfig(AlterConfigRequest),
}

impl Op {
    fn group(&self) -> &str {
        match self {
            Op::Heartbeat { req, .. } => &req.group,
            Op::Commit(r) => &r.group,
            Op::AlterConfig(r) => &r.group,
            Op::Fetch { group, .. }
            | Op::Describe(group)
            | Op::Reset { group, .. }
            | Op::Delete(group) => group,
        }
    }

    /// How long its answer may be held, at most.
    fn max_hold(&self) -> Duration {
        match self {
            Op::Heartbeat { wait_ms, .. } => {
                Duration::from_millis((*wait_ms).min(MAX_HEARTBEAT_INTERVAL_MS).into())
            }
            _ => Duration::ZERO,
        }
    }

    /// The member a heartbeat is from (none for a join, or another request).
    fn member(&self) -> Option<MemberKey> {
        match self {
            Op::Heartbeat { req, .. } if !req.member_id.is_empty() => {
                Some((req.group.clone(), req.member_id.clone()))
            }
            _ => None,
        }
    }
}

/// The answer to an [`Op`].
#[derive(Debug)]
pub enum Answer {
    Heartbeat(HeartbeatAnswer),
    Committed,
    Offsets(BTreeMap<Tp, Option<Committed>>),
    Described(Box<Described>),
    Reset(BTreeMap<Tp, u64>),
    Deleted,
    /// The group's settings in force after an AlterGroupConfig.
    Configured(Effective),
}

/// A group as DescribeGroup shows it.
#[derive(Debug)]
pub struct Described {
    pub group: Group,
    /// The settings in force, and which are the group's own.
    pub settings: Effective,
    /// High watermarks of the partitions shown, as this node knows them.
    pub high_watermarks: BTreeMap<Tp, u64>,
    pub coordinator: u64,
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Answer, ApiError>>,
    /// A held heartbeat's deadline, from when it was first parked (`None`: not parked yet).
    until: Option<Instant>,
}

/// A heartbeat held back (see the module doc).
struct Parked {
    job: Job,
    until: Instant,
}

/// The node's coordinators: a runner per coordinator partition this node leads.
#[derive(Default)]
pub struct Coordinator {
    // Short critical sections (a lookup, an insert), no await inside.
    runners: Mutex<HashMap<GroupId, mpsc::Sender<Job>>>,
    creating: tokio::sync::Mutex<()>,
}

/// The topics a group can subscribe to: every topic but fjord's own.
pub fn topics_view(state: &fjord_meta::MetaState) -> TopicsView {
    TopicsView::new(
        state
            .topics
            .values()
            .filter(|t| !t.name.starts_with(fjord_groups::INTERNAL_TOPIC_PREFIX))
            .map(|t| (t.name.clone(), t.id, t.partitions.len() as u32)),
    )
    .with_next_id(state.next_topic_id)
}

impl Coordinator {
    /// The groups' topic, created (on live nodes, 3 replicas or as many as the cluster has
    /// nodes, [`crate::live::default_replication`]) if it does not exist yet.
    pub async fn topic(&self, node: &Arc<Node>) -> Result<Topic, ApiError> {
        if let Some(t) = node.view().state.topic(fjord_groups::GROUPS_TOPIC) {
            return Ok(t.clone());
        }
        let service = crate::service::ClientService::internal(node.clone());
        // Not made with fewer replicas while the cluster forms: it would keep them for good.
        // Resolved before the lock, so that requests arriving together wait for the nodes'
        // registrations together, not one after another.
        let replication_factor = service
            .default_replication(fjord_groups::GROUPS_TOPIC)
            .await?;
        let _one = self.creating.lock().await;
        if let Some(t) = node.view().state.topic(fjord_groups::GROUPS_TOPIC) {
            return Ok(t.clone());
        }
        let live = service.live_nodes().await;
        let cmd = MetaCommand::CreateTopicWithConfig {
            name: fjord_groups::GROUPS_TOPIC.to_string(),
            partitions: node.group_partitions(),
            replication_factor,
            config: fjord_meta::TopicConfig::default(),
            live,
        };
        let created = node.meta_write(cmd).await?;
        // Bounded: its first requests find leaders rather than UNAVAILABLE.
        service.wait_for_leaders(fjord_groups::GROUPS_TOPIC).await;
        match created {
            MetaResponse::Topic(t) => Ok(t),
            MetaResponse::Error(fjord_meta::MetaError::TopicExists { .. }) => node
                .view()
                .state
                .topic(fjord_groups::GROUPS_TOPIC)
                .cloned()
                .ok_or(ApiError::NoLeader {
                    of: Subject::Metadata,
                    why: NoLeaderCause::NotKnown,
                }),
            // As Kafka's coordinator lookup while its offsets topic cannot be created: a retry
            // succeeds once enough nodes are up (the topic is not made with fewer replicas,
            // which it would keep for good).
            MetaResponse::Error(e @ fjord_meta::MetaError::NotEnoughLiveNodes { .. }) => {
                Err(ApiError::GroupsTopicNotYet(e))
            }
            MetaResponse::Error(e) => Err(ApiError::Meta(e)),
            other => Err(ApiError::UnexpectedAnswer {
                to: "the groups' topic creation",
                got: Box::new(other),
            }),
        }
    }

    /// The coordinator partition of `group` and its leader as this node knows it.
    pub async fn locate(
        &self,
        node: &Arc<Node>,
        group: &str,
    ) -> Result<(u32, GroupId, Option<u64>), ApiError> {
        heartbeat::check_group_name(group)?;
        let topic = self.topic(node).await?;
        let partition = fjord_groups::coordinator_partition(group, topic.partitions.len() as u32);
        let gid = group_id(topic.id, partition);
        let local = node.partition(gid).and_then(|h| h.leadership().leader);
        let recorded = topic.partitions[partition as usize].leader;
        Ok((partition, gid, local.or(recorded)))
    }

    /// Runs `op` on this node's runner of the group's partition, if this node leads it.
    pub async fn call(&self, node: &Arc<Node>, op: Op) -> Result<Answer, ApiError> {
        let (_, gid, leader) = self.locate(node, op.group()).await?;
        let group = op.group().to_string();
        let not_coordinator = |leader: Option<u64>| ApiError::NotCoordinator {
            this: node.id(),
            group: group.clone(),
            leader: leader.and_then(|l| node.client_address_of(l).map(|a| (l, a))),
        };
        let Some(handle) = node.partition(gid) else {
            return Err(not_coordinator(leader));
        };
        if !handle.is_leader() {
            return Err(not_coordinator(handle.leadership().leader.or(leader)));
        }
        let (reply, rx) = oneshot::channel();
        let timeout = REQUEST_TIMEOUT + op.max_hold();
        let job = Job {
            op,
            reply,
            until: None,
        };
        let sender = self.runner(node, gid, handle);
        match sender.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ApiError::CoordinatorQueueFull {
                    limit: MAX_QUEUED_REQUESTS,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(not_coordinator(leader_of(node, gid).or(leader)));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            // The runner stopped (leadership lost) before it answered.
            Ok(Err(_)) => Err(not_coordinator(leader_of(node, gid))),
            Err(_) => Err(ApiError::GroupTimeout { group, timeout }),
        }
    }

    /// Starts the runner of coordinator partition `gid` if none runs (this node just became
    /// its leader).
    pub(crate) fn start_runner(&self, node: &Arc<Node>, gid: GroupId, handle: PartitionHandle) {
        self.runner(node, gid, handle);
    }

    /// The runner of coordinator partition `gid`, started if none runs.
    fn runner(&self, node: &Arc<Node>, gid: GroupId, handle: PartitionHandle) -> mpsc::Sender<Job> {
        let mut runners = self.runners.lock().unwrap();
        if let Some(tx) = runners.get(&gid).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(MAX_QUEUED_REQUESTS);
        runners.insert(gid, tx.clone());
        let runner = Runner {
            node: node.clone(),
            gid,
            handle,
            rx,
            ready_term: None,
            sessions: HashMap::new(),
            revoking: HashMap::new(),
            hw: HashMap::new(),
            last_expiry: Instant::now(),
            parked: BTreeMap::new(),
            woken: VecDeque::new(),
        };
        tokio::spawn(runner.run());
        tx
    }
}

fn leader_of(node: &Node, gid: GroupId) -> Option<u64> {
    node.partition(gid).and_then(|h| h.leadership().leader)
}

type MemberKey = (String, String);

/// A coordinator partition's runner (see the module doc).
struct Runner {
    node: Arc<Node>,
    gid: GroupId,
    handle: PartitionHandle,
    rx: mpsc::Receiver<Job>,
    /// The term this runner has caught up in (applied everything committed before it).
    ready_term: Option<u64>,
    /// When each member's session ends, unless it heartbeats.
    sessions: HashMap<MemberKey, Instant>,
    /// When each member asked to revoke partitions must have done so.
    revoking: HashMap<MemberKey, Instant>,
    /// High watermarks seen (they only grow: each is a lower bound).
    hw: HashMap<Tp, u64>,
    last_expiry: Instant,
    /// Held heartbeats, by member (ordered: they are woken in a deterministic order, for the
    /// simulation's replays).
    parked: BTreeMap<MemberKey, Parked>,
    /// Held heartbeats to decide again (their group changed, or their deadline came), first
    /// in the next batch.
    woken: VecDeque<Job>,
}

/// What a decision needs looked up first: high watermarks (commits), and the offsets a reset
/// by time moves to.
struct Lookups {
    hws: BTreeMap<Tp, u64>,
    resets: BTreeMap<Tp, Looked>,
}

/// Partitions a reset looks up at once.
const RESET_LOOKUPS_AT_ONCE: usize = 16;

/// What a reset looked up of one partition.
#[derive(Debug, Clone, Copy, Default)]
struct Looked {
    /// The first offset at or after the reset's time.
    at_time: Option<u64>,
    /// The leader's `(log start, high watermark)`, when another node was asked.
    remote: Option<(u64, u64)>,
}

impl Runner {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.woken.is_empty() {
                let take = self.woken.len().min(MAX_BATCH_REQUESTS);
                let mut jobs: Vec<Job> = self.woken.drain(..take).collect();
                self.fill(&mut jobs);
                self.batch(jobs).await;
            } else {
                let deadline = self.parked.values().map(|p| p.until).min();
                tokio::select! {
                    job = self.rx.recv() => {
                        let Some(job) = job else { break };
                        let mut jobs = vec![job];
                        self.fill(&mut jobs);
                        self.batch(jobs).await;
                    }
                    _ = tick.tick() => self.expire().await,
                    _ = sleep_until_some(deadline) => self.wake_due(Instant::now()),
                    _ = self.node.stopping() => break,
                }
            }
            if !self.handle.is_leader() {
                break;
            }
        }
        // Whatever is still queued or held is refused (the senders see the channel closed).
        self.rx.close();
        let held: Vec<Job> = std::mem::take(&mut self.parked)
            .into_values()
            .map(|p| p.job)
            .collect();
        let woken: Vec<Job> = self.woken.drain(..).collect();
        for job in held.into_iter().chain(woken) {
            let _ = job.reply.send(Err(self.not_coordinator(job.op.group())));
        }
        while let Ok(job) = self.rx.try_recv() {
            let _ = job.reply.send(Err(self.not_coordinator(job.op.group())));
        }
    }

    /// Adds queued requests to `jobs`, up to [`MAX_BATCH_REQUESTS`]. A member's new request
    /// goes after its held heartbeat, which is answered now (not held again).
    fn fill(&mut self, jobs: &mut Vec<Job>) {
        while jobs.len() < MAX_BATCH_REQUESTS {
            match self.rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            if let Some(mut p) = job.op.member().and_then(|k| self.parked.remove(&k)) {
                p.job.until = Some(now);
                out.push(p.job);
            }
            out.push(job);
        }
        *jobs = out;
    }

    /// Decides again the held heartbeats whose deadline came, and forgets those whose caller
    /// is gone (its session then runs from its last answer).
    fn wake_due(&mut self, now: Instant) {
        let due: Vec<MemberKey> = self
            .parked
            .iter()
            .filter(|(_, p)| p.until <= now || p.job.reply.is_closed())
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(p) = self.parked.remove(&key)
                && !p.job.reply.is_closed()
            {
                self.woken.push_back(p.job);
            }
        }
    }

    /// Decides again the held heartbeats of `groups` (records were written for them), and
    /// forgets those whose caller is gone.
    fn wake_groups(&mut self, groups: &BTreeSet<String>) {
        if groups.is_empty() || self.parked.is_empty() {
            return;
        }
        let keys: Vec<MemberKey> = self
            .parked
            .keys()
            .filter(|k| groups.contains(&k.0))
            .cloned()
            .collect();
        for key in keys {
            if let Some(p) = self.parked.remove(&key)
                && !p.job.reply.is_closed()
            {
                self.woken.push_back(p.job);
            }
        }
    }

    /// Holds `job` (a heartbeat news to no one, see [`heartbeat::may_hold`]) if its deadline
    /// is still ahead and there is room; gives it back otherwise, to be answered.
    fn park(&mut self, mut job: Job, a: &HeartbeatAnswer, now: Instant) -> Option<Job> {
        let wait = job
            .op
            .max_hold()
            .min(Duration::from_millis(a.heartbeat_interval_ms.into()));
        let until = *job.until.get_or_insert(now + wait);
        let Some(key) = job.op.member() else {
            return Some(job);
        };
        if until <= now || self.parked.len() >= MAX_PARKED_HEARTBEATS {
            return Some(job);
        }
        if let Some(mut old) = self.parked.remove(&key) {
            // Two heartbeats of one member in a batch: the older one is answered.
            old.job.until = Some(now);
            self.woken.push_back(old.job);
        }
        self.parked.insert(key, Parked { job, until });
        None
    }

    fn not_coordinator(&self, group: &str) -> ApiError {
        let leader = self.handle.leadership().leader;
        ApiError::NotCoordinator {
            this: self.node.id(),
            group: group.to_string(),
            leader: leader.and_then(|l| self.node.client_address_of(l).map(|a| (l, a))),
        }
    }

    fn raft_error(&self, group: &str, e: fjord_raft::GroupError) -> ApiError {
        match e {
            fjord_raft::GroupError::NotLeader { .. } => self.not_coordinator(group),
            fjord_raft::GroupError::Unavailable(why) => ApiError::NoLeader {
                of: Subject::Group(self.gid),
                why: NoLeaderCause::Unavailable(why),
            },
            fjord_raft::GroupError::Busy(why) => ApiError::Busy(why),
            fjord_raft::GroupError::Internal(why) => ApiError::Internal(why),
        }
    }

    /// Catches up once per term: everything committed before is applied here, and every
    /// member's session starts afresh.
    async fn ready(&mut self) -> Result<(), fjord_raft::GroupError> {
        let term = self.handle.leadership().term;
        if self.ready_term == Some(term) {
            return Ok(());
        }
        self.handle.linearizable_read().await?;
        self.ready_term = Some(term);
        self.sessions.clear();
        self.revoking.clear();
        Ok(())
    }

    fn groups_held(&self) -> usize {
        self.handle.shared().with_groups(|g| g.len()).unwrap_or(0)
    }

    fn applied_group(&self, name: &str) -> Option<Group> {
        self.handle
            .shared()
            .with_groups(|g| g.get(name).cloned())
            .flatten()
    }

    async fn batch(&mut self, jobs: Vec<Job>) {
        if let Err(e) = self.ready().await {
            for j in jobs {
                let err = self.raft_error(j.op.group(), e.clone());
                let _ = j.reply.send(Err(err));
            }
            return;
        }
        let view = self.node.view();
        let topics = topics_view(&view.state);
        let now_ms = self.node.now_ms();
        // The batch's own view of each group it touches: the applied group plus the records of
        // the batch's earlier decisions.
        let mut scratch: BTreeMap<String, Option<Group>> = BTreeMap::new();
        let mut decisions: Vec<Vec<GroupRecord>> = Vec::new();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut answers: Vec<(Job, Result<Answer, ApiError>)> = Vec::new();
        // Groups the applied state holds already (counted by `groups_held`).
        let mut existed: BTreeSet<String> = BTreeSet::new();
        for job in jobs {
            let name = job.op.group().to_string();
            if !scratch.contains_key(&name) {
                let g = self.applied_group(&name);
                if g.is_some() {
                    existed.insert(name.clone());
                }
                scratch.insert(name.clone(), g);
            }
            // The applied groups, and those the batch's earlier decisions created.
            let held = self.groups_held()
                + scratch
                    .iter()
                    .filter(|(n, g)| g.is_some() && !existed.contains(*n))
                    .count();
            let group = scratch.get(&name).and_then(|g| g.as_ref());
            let resets = match self.reset_lookups(&job.op, group, &topics).await {
                Ok(t) => t,
                Err(e) => {
                    answers.push((job, Err(e)));
                    continue;
                }
            };
            if let Op::Commit(c) = &job.op
                && let Err(e) =
                    offsets::check_commit_without_high_watermarks(group, c, &topics, held)
            {
                answers.push((job, Err(ApiError::Group(e))));
                continue;
            }
            let hws = match self.high_watermarks(&job.op, &topics).await {
                Ok(h) => h,
                Err(e) => {
                    answers.push((job, Err(e)));
                    continue;
                }
            };
            let lookups = Lookups { hws, resets };
            let decided = self.decide(&job.op, group, &topics, now_ms, held, &lookups);
            let result = match decided {
                Ok((Answer::Heartbeat(a), recs)) if may_hold(&job.op, &a, &recs) => {
                    match self.park(job, &a, Instant::now()) {
                        None => continue,
                        Some(job) => {
                            answers.push((job, Ok(Answer::Heartbeat(a))));
                            continue;
                        }
                    }
                }
                Ok((answer, recs)) => {
                    let slot = scratch.get_mut(&name).expect("inserted above");
                    for r in &recs {
                        apply_scratch(slot, &name, r);
                    }
                    if recs.iter().any(GroupRecord::changes_members) {
                        changed.insert(name);
                    }
                    decisions.push(recs);
                    Ok(answer)
                }
                Err(e) => Err(e),
            };
            answers.push((job, result));
        }
        if answers.is_empty() {
            // Every request was held: nothing to write, nobody to answer yet.
            return;
        }
        let written = if decisions.iter().all(Vec::is_empty) {
            self.handle.linearizable_read().await
        } else {
            self.write(decisions, now_ms).await
        };
        if written.is_ok() {
            self.wake_groups(&changed);
        }
        let now = Instant::now();
        for (job, result) in answers {
            let result = match (&written, result) {
                (Err(e), Ok(_)) => Err(self.raft_error(job.op.group(), e.clone())),
                (_, r) => r,
            };
            match (&job.op, &result) {
                (Op::Heartbeat { req, .. }, Ok(Answer::Heartbeat(a))) => {
                    self.clock_member(req, a, &scratch, now);
                }
                (Op::AlterConfig(req), Ok(Answer::Configured(e))) => {
                    self.reclock_group(&req.group, e.session_timeout_ms, &scratch, now);
                }
                _ => {}
            }
            let _ = job.reply.send(result);
        }
    }

    /// Starts, renews or ends a member's clocks after its heartbeat was answered.
    fn clock_member(
        &mut self,
        req: &HeartbeatRequest,
        a: &HeartbeatAnswer,
        scratch: &BTreeMap<String, Option<Group>>,
        now: Instant,
    ) {
        let key = (req.group.clone(), a.member_id.clone());
        let Some(group) = scratch.get(&req.group).and_then(|g| g.as_ref()) else {
            self.sessions.remove(&key);
            self.revoking.remove(&key);
            return;
        };
        let Some(member) = group.members.get(&a.member_id) else {
            self.sessions.remove(&key);
            self.revoking.remove(&key);
            return;
        };
        if member.left_static {
            // Its session runs out unless its next instance comes back: no renewal.
            self.sessions.entry(key.clone()).or_insert(now);
        } else {
            let ms = a.session_timeout_ms;
            self.sessions
                .insert(key.clone(), now + Duration::from_millis(ms.into()));
        }
        if member.state == MemberState::UnrevokedPartitions {
            let ms = member.rebalance_timeout_ms;
            self.revoking
                .entry(key)
                .or_insert(now + Duration::from_millis(ms.into()));
        } else {
            self.revoking.remove(&key);
        }
    }

    /// Restarts the session clock of each member of `group` with `session_ms` (rule 4 of
    /// [`fjord_groups::config`]): a shorter timeout applies from now, not from the next
    /// heartbeat.
    fn reclock_group(
        &mut self,
        group: &str,
        session_ms: u32,
        scratch: &BTreeMap<String, Option<Group>>,
        now: Instant,
    ) {
        let Some(g) = scratch.get(group).and_then(|g| g.as_ref()) else {
            return;
        };
        let end = now + Duration::from_millis(session_ms.into());
        for (id, m) in &g.members {
            let key = (group.to_string(), id.clone());
            match self.sessions.get_mut(&key) {
                // A static member that left keeps the end it had: its session is not renewed.
                Some(e) if m.left_static => *e = (*e).min(end),
                Some(e) => *e = end,
                None => {
                    self.sessions.insert(key, end);
                }
            }
        }
    }

    /// The high watermarks a commit or reset needs; an error when an offset is above what
    /// this node knows and the partition's leader could not confirm it (an election, a
    /// leader out of reach): the commit is then retryable, not out of range.
    async fn high_watermarks(
        &mut self,
        op: &Op,
        topics: &TopicsView,
    ) -> Result<BTreeMap<Tp, u64>, ApiError> {
        let wanted: Vec<(Tp, u64)> = match op {
            Op::Commit(c) => c.offsets.iter().map(|o| (o.tp, o.offset)).collect(),
            _ => return Ok(BTreeMap::new()),
        };
        let mut out = BTreeMap::new();
        for (tp, offset) in wanted {
            if let Some(hw) = self.hw_at_least(tp, offset, topics).await? {
                out.insert(tp, hw);
            }
        }
        Ok(out)
    }

    /// A high watermark of `tp` at least `offset` if there is one, else the partition's
    /// current one as its leader (this node, or the leader asked) knows it; `None` if the
    /// partition does not exist; an error if `offset` is above what this node knows and
    /// the leader could not be asked.
    async fn hw_at_least(
        &mut self,
        tp: Tp,
        offset: u64,
        topics: &TopicsView,
    ) -> Result<Option<u64>, ApiError> {
        if topics.partitions_of(tp.topic) <= tp.partition {
            return Ok(None);
        }
        let known = self.hw.get(&tp).copied().unwrap_or(0);
        if offset <= known {
            return Ok(Some(known));
        }
        let gid = group_id(tp.topic, tp.partition);
        let local = self.node.partition(gid);
        let mut best = known;
        if let Some(h) = &local {
            best = best.max(h.shared().high_watermark());
        }
        let leads = local.as_ref().is_some_and(|h| h.is_leader());
        if offset > best {
            best = best.max(match &local {
                // A leader just elected may not have committed an entry of its term yet: its
                // high watermark is current once a read index confirms it.
                Some(h) if leads => {
                    h.linearizable_read().await.map_err(|e| {
                        crate::data::group_error(&self.node, Subject::Group(gid), e)
                    })?;
                    h.shared().high_watermark()
                }
                _ => self.remote_hw(tp, topics).await?,
            });
        }
        self.hw.insert(tp, best);
        Ok(Some(best))
    }

    /// Asks the partition's leader, another node, for its high watermark over the
    /// node-to-node service ([`crate::partition_read`]: the peer port, this node's identity;
    /// the committer's rights were checked before the commit reached the runner). Any
    /// replica's high watermark is committed, so it never lets an offset past the end.
    async fn remote_hw(&self, tp: Tp, topics: &TopicsView) -> Result<u64, ApiError> {
        let Some(name) = topics.name_of(tp.topic).map(str::to_string) else {
            return Err(ApiError::UnknownTopic(format!("topic id {}", tp.topic)));
        };
        let of = crate::error::Subject::Partition {
            topic: name.clone(),
            partition: tp.partition,
        };
        let view = self.node.view();
        let Some(leader) = view
            .state
            .topic(&name)
            .and_then(|t| t.partitions.get(tp.partition as usize))
            .and_then(|p| p.leader)
        else {
            return Err(ApiError::no_leader(of, NoLeaderCause::NotKnown));
        };
        let req = fjord_raft::peer::wire::PartitionRead {
            group_id: group_id(tp.topic, tp.partition),
            // A lookup by time makes the leader confirm itself with a read index first (its
            // high watermark is then current, not a just-elected leader's or a deposed one's);
            // the time asked, past every record, costs one index seek.
            offset_for_time: Some(i64::MAX),
            record_time_at: None,
        };
        let r = crate::partition_read::ask(&self.node, leader, of, req).await?;
        Ok(r.high_watermark)
    }

    fn decide(
        &self,
        op: &Op,
        group: Option<&Group>,
        topics: &TopicsView,
        now_ms: i64,
        held: usize,
        lookups: &Lookups,
    ) -> Result<(Answer, Vec<GroupRecord>), ApiError> {
        let hws = &lookups.hws;
        let defaults = self.node.group_defaults();
        Ok(match op {
            Op::Heartbeat { req, .. } => {
                let id = new_member_id(&self.node);
                let ctx = Context {
                    topics,
                    now_ms,
                    groups_held: held,
                    new_member_id: &id,
                    defaults,
                };
                let Decision { answer, records } = heartbeat::heartbeat(group, req, &ctx)?;
                (Answer::Heartbeat(answer), records)
            }
            Op::Commit(req) => {
                let d =
                    offsets::commit(group, req, topics, |tp| hws.get(&tp).copied(), now_ms, held)?;
                (Answer::Committed, d.records)
            }
            Op::Fetch {
                group: name,
                who,
                tps,
            } => (
                Answer::Offsets(offsets::fetch(group, name, who, tps)?),
                Vec::new(),
            ),
            Op::Describe(name) => (self.describe(group, name, defaults)?, Vec::new()),
            Op::Reset {
                group: name,
                to,
                topic,
                within,
            } => {
                let tps =
                    self.reset_partitions(group, *topic, within.as_ref(), topics, &lookups.resets);
                let d = offsets::reset(group, name, *to, &tps, now_ms, held)?;
                (Answer::Reset(d.answer), d.records)
            }
            Op::Delete(name) => (Answer::Deleted, offsets::delete(group, name)?),
            Op::AlterConfig(req) => {
                let d = config::alter(group, req, defaults, now_ms, held)?;
                (Answer::Configured(d.answer), d.records)
            }
        })
    }

    /// A group as DescribeGroup shows it, with the high watermarks this node knows.
    fn describe(
        &self,
        group: Option<&Group>,
        name: &str,
        defaults: fjord_groups::Defaults,
    ) -> Result<Answer, ApiError> {
        let g = group.ok_or_else(|| GroupError::UnknownGroup {
            group: name.to_string(),
        })?;
        let settings = config::effective(Some(g), defaults);
        let mut high_watermarks = BTreeMap::new();
        for tp in described_partitions(g) {
            if let Some(h) = self.node.partition(group_id(tp.topic, tp.partition)) {
                high_watermarks.insert(tp, h.shared().high_watermark());
            } else if let Some(h) = self.hw.get(&tp) {
                high_watermarks.insert(tp, *h);
            }
        }
        Ok(Answer::Described(Box::new(Described {
            group: g.clone(),
            settings,
            high_watermarks,
            coordinator: self.node.id(),
        })))
    }

    /// The partitions a reset moves, with their bounds as this node knows them: a topic's
    /// partitions, or every partition the group committed.
    /// The partitions a reset moves: the topic's, or every one the group committed.
    fn reset_tps(
        group: Option<&Group>,
        topic: Option<fjord_groups::TopicId>,
        within: Option<&BTreeSet<fjord_groups::TopicId>>,
        topics: &TopicsView,
    ) -> BTreeSet<Tp> {
        let tps: BTreeSet<Tp> = match topic {
            Some(t) => (0..topics.partitions_of(t))
                .map(|p| Tp::new(t, p))
                .collect(),
            None => group
                .map(|g| g.offsets.keys().copied().collect())
                .unwrap_or_default(),
        };
        tps.into_iter()
            .filter(|tp| topics.partitions_of(tp.topic) > tp.partition)
            .filter(|tp| within.is_none_or(|w| w.contains(&tp.topic)))
            .collect()
    }

    /// Each partition a reset moves, with its bounds: the leader's when it was asked (another
    /// node leads it and this node holds no replica, or a reset by time), else this node's
    /// replica's; the high watermark at least the one this coordinator knows.
    fn reset_partitions(
        &self,
        group: Option<&Group>,
        topic: Option<fjord_groups::TopicId>,
        within: Option<&BTreeSet<fjord_groups::TopicId>>,
        topics: &TopicsView,
        looked: &BTreeMap<Tp, Looked>,
    ) -> Vec<(Tp, Bounds)> {
        Self::reset_tps(group, topic, within, topics)
            .into_iter()
            .map(|tp| {
                let l = looked.get(&tp).copied().unwrap_or_default();
                let local = self
                    .node
                    .partition(group_id(tp.topic, tp.partition))
                    .map(|h| h.shared().bounds())
                    .map(|b| (b.log_start_offset, b.next_offset));
                let (log_start, hw) = l.remote.or(local).unwrap_or((0, 0));
                let hw = hw.max(self.hw.get(&tp).copied().unwrap_or(0));
                let bounds = Bounds {
                    log_start: log_start.min(hw),
                    high_watermark: hw,
                    at_time: l.at_time,
                };
                (tp, bounds)
            })
            .collect()
    }

    /// What a reset needs of each partition it moves: its leader's bounds and, for a reset by
    /// time, the first offset at or after the time (absent: no record that recent), as the
    /// leader finds them after a ReadIndex (this node's replica when it leads; another node
    /// is asked over the peer port, `ReadPartition`, 2 s, up to [`RESET_LOOKUPS_AT_ONCE`] at
    /// once). A partition whose leader cannot answer fails the reset (a follower's replica
    /// may lag: "latest" would land below the end).
    async fn reset_lookups(
        &self,
        op: &Op,
        group: Option<&Group>,
        topics: &TopicsView,
    ) -> Result<BTreeMap<Tp, Looked>, ApiError> {
        let Op::Reset {
            to, topic, within, ..
        } = op
        else {
            return Ok(BTreeMap::new());
        };
        let ts = match to {
            ResetTo::Time(ts) => Some(*ts),
            _ => None,
        };
        // A few partitions at once: the runner serves every group of its coordinator
        // partition, and each lookup may cross the network.
        use futures::StreamExt;
        let tps = Self::reset_tps(group, *topic, within.as_ref(), topics);
        let looked: Vec<Result<(Tp, Looked), ApiError>> = futures::stream::iter(tps)
            .map(|tp| async move { self.reset_lookup(tp, ts, topics).await.map(|l| (tp, l)) })
            .buffer_unordered(RESET_LOOKUPS_AT_ONCE)
            .collect()
            .await;
        looked.into_iter().collect()
    }

    /// [`Runner::reset_lookups`] of one partition. The bounds a reset clamps to come from a
    /// leader past a read index: a lagging follower's (or a deposed leader's) would put
    /// "latest" below the end.
    async fn reset_lookup(
        &self,
        tp: Tp,
        ts: Option<i64>,
        topics: &TopicsView,
    ) -> Result<Looked, ApiError> {
        let local = self.node.partition(group_id(tp.topic, tp.partition));
        match local {
            Some(h) if h.is_leader() => {
                h.linearizable_read()
                    .await
                    .map_err(|e| self.lookup_failed(tp, topics, e.to_string()))?;
                let at_time = match ts {
                    Some(ts) => crate::data::local_offset_for_time(&self.node, &h, ts).await?,
                    None => None,
                };
                Ok(Looked {
                    at_time,
                    remote: None,
                })
            }
            // A local follower knows its leader first (the metadata learns it later).
            Some(h) => {
                let hint = h.leadership().leader.filter(|l| *l != self.node.id());
                self.remote_lookup(tp, ts, topics, hint).await
            }
            None => self.remote_lookup(tp, ts, topics, None).await,
        }
    }

    /// A reset by time could not look `tp` up: its leader is not known or did not answer.
    fn lookup_failed(&self, tp: Tp, topics: &TopicsView, why: String) -> ApiError {
        ApiError::no_leader(
            crate::error::Subject::Partition {
                topic: topics.name_of(tp.topic).unwrap_or("?").to_string(),
                partition: tp.partition,
            },
            crate::error::NoLeaderCause::Lookup(why),
        )
    }

    /// Asks `tp`'s leader, another node, for its bounds and (`ts`) the first offset at or
    /// after a time, over the node-to-node service ([`crate::partition_read`]: the peer port,
    /// this node's identity). The requester's rights on the topic were checked before the
    /// reset reached the runner.
    async fn remote_lookup(
        &self,
        tp: Tp,
        ts: Option<i64>,
        topics: &TopicsView,
        leader_hint: Option<fjord_meta::NodeId>,
    ) -> Result<Looked, ApiError> {
        let fail = |why: &str| self.lookup_failed(tp, topics, why.to_string());
        let name = topics
            .name_of(tp.topic)
            .ok_or_else(|| fail("unknown topic"))?;
        let view = self.node.view();
        let leader = leader_hint
            .or_else(|| {
                view.state
                    .topic(name)
                    .and_then(|t| t.partitions.get(tp.partition as usize))
                    .and_then(|p| p.leader)
            })
            .ok_or_else(|| fail("no leader known"))?;
        // A lookup by time is answered past a read index; one of the bounds alone asks for
        // the latest time (whose answer it ignores) to be answered so too.
        let req = fjord_raft::peer::wire::PartitionRead {
            group_id: group_id(tp.topic, tp.partition),
            offset_for_time: Some(ts.unwrap_or(i64::MAX)),
            record_time_at: None,
        };
        let of = crate::error::Subject::Partition {
            topic: name.to_string(),
            partition: tp.partition,
        };
        let r = crate::partition_read::ask(&self.node, leader, of, req).await?;
        Ok(Looked {
            at_time: if ts.is_some() { r.offset } else { None },
            remote: Some((r.log_start_offset, r.high_watermark)),
        })
    }

    /// Writes the records of `decisions` to the partition, in batches of at most
    /// [`MAX_RECORDS_PER_BATCH`] cut between decisions ([`pack`]).
    async fn write(
        &self,
        decisions: Vec<Vec<GroupRecord>>,
        now_ms: i64,
    ) -> Result<(), fjord_raft::GroupError> {
        for chunk in pack(decisions, MAX_RECORDS_PER_BATCH) {
            let list: Vec<Record> = chunk
                .iter()
                .map(|r| {
                    let (key, value) = r.encode();
                    Record {
                        key: Some(key.into()),
                        value: value.unwrap_or_default().into(),
                        headers: Vec::new(),
                        timestamp_ms: now_ms,
                    }
                })
                .collect();
            let body = batch::encode(&list);
            let b = StoredBatch {
                token: self.node.token(),
                producer_id: 0,
                producer_epoch: 0,
                base_sequence: 0,
                record_count: list.len() as u32,
                crc32c: batch::checksum(&body),
                append_time_ms: now_ms,
                max_timestamp_ms: now_ms,
                records: body,
                compaction: None,
            };
            match self.handle.propose_cp(b).await? {
                Outcome::Appended { .. } => {}
                other => {
                    return Err(fjord_raft::GroupError::Internal(
                        fjord_raft::handle::Internal::UnexpectedResponse {
                            what: "coordinator batch",
                            got: Box::new(fjord_raft::Response::Batch(other)),
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// Removes the members past their session or rebalance timeout, and expires offsets.
    async fn expire(&mut self) {
        if !self.handle.is_leader() || self.ready().await.is_err() {
            return;
        }
        let now = Instant::now();
        self.wake_due(now);
        let now_ms = self.node.now_ms();
        let due = self.members_due(now);
        let mut decisions: Vec<Vec<GroupRecord>> = Vec::new();
        let mut scratch: BTreeMap<String, Option<Group>> = BTreeMap::new();
        for (group, member) in &due {
            let slot = scratch
                .entry(group.clone())
                .or_insert_with(|| self.applied_group(group));
            if let Some(g) = slot.as_ref() {
                let recs = heartbeat::remove(g, member, now_ms);
                for r in &recs {
                    apply_scratch(slot, group, r);
                }
                decisions.push(recs);
            }
        }
        let retention_ms = self.node.group_offset_retention_ms();
        if self.last_expiry.elapsed() >= expiry_every(retention_ms) {
            self.last_expiry = now;
            decisions.extend(self.expired_offsets(&scratch, now_ms, retention_ms));
        }
        if decisions.iter().all(Vec::is_empty) {
            return;
        }
        match self.write(decisions, now_ms).await {
            Ok(()) => {
                let changed: BTreeSet<String> = scratch.keys().cloned().collect();
                self.wake_groups(&changed);
                for key in &due {
                    tracing::info!(group = %key.0, member = %key.1, "removed a member past its session or rebalance timeout");
                    self.sessions.remove(key);
                    self.revoking.remove(key);
                }
            }
            Err(e) => tracing::warn!(group = self.gid, error = %e, "cannot remove expired members"),
        }
    }

    /// The members whose session or rebalance timeout passed. A member this runner has no
    /// clock for yet (it just took over) gets a whole session from now.
    fn members_due(&mut self, now: Instant) -> Vec<MemberKey> {
        let defaults = self.node.group_defaults();
        let members: Vec<(MemberKey, u32)> = self
            .handle
            .shared()
            .with_groups(|gs| {
                gs.iter()
                    .flat_map(|g| {
                        let (session, _) = timing(Some(g), defaults);
                        g.members
                            .keys()
                            .map(move |m| ((g.name.clone(), m.clone()), session))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let live: BTreeSet<&MemberKey> = members.iter().map(|(k, _)| k).collect();
        self.sessions.retain(|k, _| live.contains(k));
        self.revoking.retain(|k, _| live.contains(k));
        let mut due = Vec::new();
        for (key, session_ms) in &members {
            if self.parked.contains_key(key) {
                // Held: alive; its session restarts when the answer is sent.
                continue;
            }
            let end = *self
                .sessions
                .entry(key.clone())
                .or_insert(now + Duration::from_millis((*session_ms).into()));
            let revoke_end = self.revoking.get(key).copied();
            if end <= now || revoke_end.is_some_and(|r| r <= now) {
                due.push(key.clone());
            }
        }
        due
    }

    /// The records that expire the offsets of groups empty past the retention (groups the
    /// caller already changed are left for the next round).
    fn expired_offsets(
        &self,
        changed: &BTreeMap<String, Option<Group>>,
        now_ms: i64,
        retention_ms: i64,
    ) -> Vec<Vec<GroupRecord>> {
        let topics = topics_view(&self.node.view().state);
        self.handle
            .shared()
            .with_groups(|gs| {
                gs.iter()
                    .filter(|g| !changed.contains_key(&g.name))
                    .map(|g| offsets::expire(g, &topics, now_ms, retention_ms))
                    .filter(|d| !d.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The records of `decisions`, in order, cut into batches of at most `max` records between
/// decisions; a decision of more than `max` records alone is cut within.
fn pack(decisions: Vec<Vec<GroupRecord>>, max: usize) -> Vec<Vec<GroupRecord>> {
    let mut out: Vec<Vec<GroupRecord>> = Vec::new();
    let mut current: Vec<GroupRecord> = Vec::new();
    for d in decisions {
        if !current.is_empty() && current.len() + d.len() > max {
            out.push(std::mem::take(&mut current));
        }
        if d.len() > max {
            let mut d = d;
            while d.len() > max {
                let rest = d.split_off(max);
                out.push(d);
                d = rest;
            }
            current = d;
        } else {
            current.extend(d);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Whether `op`'s answer `a`, whose decision writes `records`, may be held back: a heartbeat
/// that asked to be ([`Op::max_hold`]) and is news to no one ([`heartbeat::may_hold`]).
fn may_hold(op: &Op, a: &HeartbeatAnswer, records: &[GroupRecord]) -> bool {
    match op {
        Op::Heartbeat { req, wait_ms } => *wait_ms > 0 && heartbeat::may_hold(req, a, records),
        _ => false,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn apply_scratch(slot: &mut Option<Group>, name: &str, r: &GroupRecord) {
    match r {
        GroupRecord::GroupGone { .. } => *slot = None,
        _ => slot.get_or_insert_with(|| Group::new(name)).apply(r),
    }
}

/// The partitions DescribeGroup shows: every subscribed and every committed one.
pub fn described_partitions(g: &Group) -> BTreeSet<Tp> {
    let mut out: BTreeSet<Tp> = g.offsets.keys().copied().collect();
    for (t, n) in &g.meta.subscribed {
        out.extend((0..*n).map(|p| Tp::new(*t, p)));
    }
    out
}

/// A fresh member id: the node id and a random 64-bit number (the runtime's randomness,
/// which a simulation seeds; the decisions stay pure).
fn new_member_id(node: &Node) -> String {
    format!("{}-{:016x}", node.id(), fjord_raft::runtime::random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_groups::limits::{DEFAULT_OFFSET_RETENTION_MS, MIN_OFFSET_RETENTION_MS};

    #[test]
    fn batches_are_cut_between_decisions() {
        let r = |i: usize| GroupRecord::GroupGone {
            group: format!("g{i}"),
        };
        let d = |from: usize, n: usize| (from..from + n).map(r).collect::<Vec<_>>();
        let sizes = |p: Vec<Vec<GroupRecord>>| p.iter().map(Vec::len).collect::<Vec<_>>();
        // 3 + 4 would pass 5: the second decision starts a batch of its own.
        assert_eq!(sizes(pack(vec![d(0, 3), d(3, 4), d(7, 1)], 5)), [3, 5]);
        // One decision of 12 is cut within (5, 5, 2), and the next joins its tail.
        assert_eq!(sizes(pack(vec![d(0, 12), d(12, 2)], 5)), [5, 5, 4]);
        let all: Vec<GroupRecord> = pack(vec![d(0, 12), d(12, 2)], 5).concat();
        assert_eq!(all, d(0, 14), "in order, none lost");
        assert!(pack(vec![Vec::new()], 5).is_empty());
    }

    #[test]
    fn a_short_retention_is_looked_at_promptly_and_a_long_one_once_a_minute() {
        assert_eq!(expiry_every(2_000), Duration::from_millis(500));
        assert_eq!(expiry_every(MIN_OFFSET_RETENTION_MS), MIN_EXPIRY_EVERY);
        assert_eq!(expiry_every(DEFAULT_OFFSET_RETENTION_MS), MAX_EXPIRY_EVERY);
        assert_eq!(expiry_every(-1), MIN_EXPIRY_EVERY);
    }
}
