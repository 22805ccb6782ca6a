//! The handles the server uses to drive a group, in fjord's own types: proposing a batch or a
//! metadata command, asking who leads, linearizable reads, leader transfer. The server never names
//! an openraft type, so an openraft upgrade stays inside this crate.
//!
//! A quiet leader ([`crate::quiesce`]) is woken before anything that needs it: a proposal, a
//! linearizable read, a leader transfer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_meta::{MetaCommand, MetaResponse};
use fjord_storage::partition::Outcome;
use openraft::alias::OneshotReceiverOf;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, LinearizerOption, ServerState};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::lifecycle::{self, Failed, Need, Parked, Stop, Switch, Switched, Switches};
use crate::meta_sm::{MetaSm, MetaView};
use crate::order::ProposalOrder;
use crate::partition_sm::{PartitionShared, PartitionSm};
use crate::quiesce::{GroupView, Kind, Quiescence, Timers};
use crate::side::{self, DrainStep, SideQueue};
use crate::voters;
use crate::{NodeId, Request, Response, StoredBatch, TypeConfig};

/// Why a proposal, a linearizable read or a membership change did not go through. Retryable:
/// [`GroupError::NotLeader`] (at once, at the leader) and [`GroupError::Unavailable`] and
/// [`GroupError::Busy`] (later); [`GroupError::Internal`] is a bug.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    /// Another node leads (or none is known): `leader` is where to go, with its address when
    /// the group knows it.
    #[error("not the leader")]
    NotLeader {
        leader: Option<NodeId>,
        address: Option<String>,
    },
    /// The group cannot make progress right now (no quorum, shutting down).
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Too many requests are waiting on this group.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// A bug, or local state that cannot be read.
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// An error of openraft's, kept opaque: the server never names an openraft type.
pub type RaftCause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a group cannot make progress right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    /// The group stopped on this node (deleted, or the node stops).
    #[error("the group stopped")]
    Stopped,
    /// The group has no replica on `node`.
    #[error("it has no replica on node {node}")]
    NotHosted { node: NodeId },
    /// A hibernated group's instance could not be made again.
    #[error("cannot start group {group} again: {source}")]
    Restart {
        group: u64,
        #[source]
        source: Arc<crate::group::StartError>,
    },
    /// A hibernated group's instance did not read its state back in time.
    #[error("group {group} did not start again: {source}")]
    NotRestored {
        group: u64,
        #[source]
        source: RaftCause,
    },
    /// An AP write a leader without a majority would hold, while its own log is not all
    /// stored yet: it cannot tell the write's offsets (retry).
    #[error("this leader's log is not all stored yet ({0}): retry")]
    TailNotStored(String),
    /// A CP write refused while the leader holds AP writes it took without a majority.
    #[error(
        "no majority answers this leader (it holds AP writes until one does): a CP write needs one"
    )]
    Holding,
    /// A demotion that would leave the group without a voter.
    #[error("node {node} is the group's only voter: it cannot be made a learner")]
    OnlyVoter { node: NodeId },
    /// openraft refused or failed: no quorum confirmed this leader, a membership change is
    /// under way, the instance stopped.
    #[error("{source}")]
    Raft {
        #[source]
        source: RaftCause,
    },
}

impl Unavailable {
    fn raft(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Unavailable::Raft {
            source: Arc::new(e),
        }
    }
}

/// Too many requests wait on a group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Busy {
    /// A leader no majority answers holds as many AP writes as it may.
    #[error(transparent)]
    SideFull(#[from] side::SideFull),
    /// As many AP writes as allowed wait for their outcome.
    #[error(transparent)]
    Waiters(#[from] crate::partition_sm::TooManyWaiters),
}

/// A bug, or local state that cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Internal {
    /// The state machine answered something that does not fit the request. (Boxed: a
    /// response may hold a whole topic, and this error travels in every group's results.)
    #[error("unexpected {what} response {got:?}")]
    UnexpectedResponse {
        what: &'static str,
        got: Box<Response>,
    },
    /// Starting a hibernated group's instance again panicked (the log has the panic).
    #[error("starting group {group} again panicked")]
    StartPanicked { group: u64 },
    /// The partition's state could not be read to predict held writes.
    #[error("{source}")]
    Storage {
        #[source]
        source: Arc<std::io::Error>,
    },
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> GroupError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => GroupError::NotLeader {
            leader: f.leader_id,
            address: f.leader_node.map(|n| n.addr),
        },
        other => Unavailable::raft(other).into(),
    }
}

/// What [`GroupRaft::promote_caught_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// The learner is a voter now.
    Promoted,
    /// It already was.
    AlreadyVoter,
    /// It lacks committed entries: it holds `matched` of the `committed` log entries.
    Lagging { matched: u64, committed: u64 },
    /// It is neither a voter nor a learner of the group.
    NotAMember,
}

/// How recent the quorum acknowledgement behind a leadership check must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    /// Within openraft's leader lease: what its leader needs to take writes. Never used to
    /// answer a read.
    Lease,
    /// For a message sent after the check began (Raft's ReadIndex): a linearizable read
    /// depends on no clock and on no follower honouring a lease.
    ReadIndex,
}

/// Who leads a group, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<NodeId>,
    pub term: u64,
}

/// Watches a group's leadership, across the restarts of a hibernated group.
pub struct LeadershipWatch {
    rx: watch::Receiver<Watched>,
}

/// What a group's leadership watch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watched {
    leadership: Leadership,
    /// The group has stopped on this node (deleted, or the node stops).
    stopped: bool,
}

impl LeadershipWatch {
    pub fn current(&mut self) -> Leadership {
        self.rx.borrow_and_update().leadership
    }

    /// Waits for the next change; `false` once the group has stopped.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok() && !self.rx.borrow().stopped
    }
}

/// How long a hibernated group's instance may take to read its state back, at most.
const RESTORE_WAIT: Duration = Duration::from_secs(10);

/// Starts a group's openraft instance over its stores (again, after hibernation).
pub(crate) type Starter<SM> = Box<
    dyn Fn() -> futures::future::BoxFuture<
            'static,
            Result<openraft::Raft<TypeConfig, SM>, crate::group::StartError>,
        > + Send
        + Sync,
>;

type Raft<SM> = openraft::Raft<TypeConfig, SM>;

/// A group's openraft instance through its lifecycle ([`crate::lifecycle`]), and the timer
/// switches quiescing wants of it.
///
/// A quiet partition replica **hibernates** after a while ([`GroupRaft::hibernate`]): its
/// instance is shut down, which frees the fixed per-group buffers openraft allocates
/// (its command queue, pending responses, statistics: most of an idle replica's memory), and
/// started again over the same stores on the first thing that needs it: a Raft message, a
/// proposal, a read, or a switch turned on by a wake. Everything openraft needs is in the
/// stores (vote, log, committed index) and in the partition's applied state, which stays in
/// memory; a leader comes back as leader of the same term (openraft's leader restore).
///
/// This is the effect layer of [`crate::lifecycle`]: the state lives under one lock, each
/// transition is made under it, and what the transition returns (start an instance, shut one
/// down, try a failed start again after a backoff) is performed outside it. Starts and
/// shutdowns run in tasks of their own, so a caller that goes away (a client's timeout) never
/// leaves the state starting or hibernating for good; and each task owns a duty
/// ([`StartDuty`], [`HibernationDuty`]) that makes the ending transition when dropped, so
/// neither does a task that fails, panics or never runs. The quiescing switch ([`Timers`])
/// holds this, and this holds neither the handle nor the switch: the handle holds the switch,
/// and a cycle would keep a deleted group alive.
pub(crate) struct Instance<SM: RaftStateMachine<TypeConfig>> {
    group: u64,
    // The lifecycle's one lock. A short critical section: a transition, and the switches
    // applied to the running instance (three atomic stores); no await inside. The quiescing
    // switch takes it from sync code, with the quiescing state's lock held.
    state: Mutex<lifecycle::State<Raft<SM>>>,
    /// Notified when a start or a shutdown ends: whoever waits for one looks again.
    changed: Notify,
    starter: Starter<SM>,
    /// Who leads, and whether the group stopped: outlives the instances.
    leadership: watch::Sender<Watched>,
    /// The node's transition counter: an instance started again is a change to look at.
    transitions: crate::quiesce::Transitions,
    /// The latest term in which this replica voted for itself, and the latest term in which
    /// it saw a leader: what the node's election counters have counted (across restarts of
    /// a hibernated instance).
    marks: Mutex<ElectionMarks>,
    /// Whether a task is finishing a joint configuration this replica's leader found
    /// ([`voters::joint_to_finish`]): one at a time.
    finishing_joint: std::sync::atomic::AtomicBool,
}

/// See [`Instance`]'s `marks`.
#[derive(Debug, Clone, Copy, Default)]
struct ElectionMarks {
    self_vote_term: u64,
    leader_term: u64,
}

impl ElectionMarks {
    /// The marks of the state an instance starts in: what it shows then was counted before
    /// (or happened before this process), not an election seen now.
    fn of<SM: RaftStateMachine<TypeConfig>>(raft: &Raft<SM>) -> Self {
        let mut marks = ElectionMarks::default();
        marks.count(
            &raft.metrics().borrow_watched(),
            &crate::quiesce::Transitions::default(),
        );
        marks
    }

    /// Counts, on `counters`, an election this replica started and a leader it sees that
    /// the marks have not counted yet.
    fn count(
        &mut self,
        m: &openraft::RaftMetrics<TypeConfig>,
        counters: &crate::quiesce::Transitions,
    ) {
        let vote = &m.vote.leader_id;
        if vote.node_id == m.id && vote.term > self.self_vote_term {
            self.self_vote_term = vote.term;
            counters.note_election();
        }
        if m.current_leader.is_some() && m.current_term > self.leader_term {
            self.leader_term = m.current_term;
            counters.note_leader_change();
        }
    }
}

impl<SM: RaftStateMachine<TypeConfig>> Instance<SM> {
    fn lock(&self) -> std::sync::MutexGuard<'_, lifecycle::State<Raft<SM>>> {
        self.state.lock().unwrap()
    }

    /// The running instance, if the group is not hibernated.
    fn running(&self) -> Option<Raft<SM>> {
        self.lock().raft().cloned()
    }

    /// Reads the running instance with `running`, or else, with `parked`, the group as its
    /// last instance saw it (none once stopped); in one critical section: the reads copy a
    /// few fields of openraft's metrics.
    fn read<T>(
        &self,
        running: impl FnOnce(&Raft<SM>) -> T,
        parked: impl FnOnce(Option<&Parked>) -> T,
    ) -> T {
        let st = self.lock();
        match st.raft() {
            Some(raft) => running(raft),
            None => parked(st.parked()),
        }
    }

    /// The running instance, started again first if the group is hibernated.
    async fn get(self: &Arc<Self>) -> Result<Raft<SM>, GroupError> {
        if let Some(raft) = self.running() {
            return Ok(raft);
        }
        loop {
            // Registered before the state is read: a start ending in between still wakes it.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let need = self.lock().need();
            match need {
                Need::Use(raft) => return Ok(raft),
                Need::Stopped => return Err(Unavailable::Stopped.into()),
                Need::Start => {
                    let duty = StartDuty::new(self);
                    return match tokio::spawn(self.clone().start(duty)).await {
                        Ok(started) => started,
                        Err(e) if e.is_panic() => {
                            Err(Internal::StartPanicked { group: self.group }.into())
                        }
                        // Cancelled: only a runtime shutting down (and the node with it)
                        // drops a task unfinished.
                        Err(_) => Err(Unavailable::Stopped.into()),
                    };
                }
                Need::Wait => changed.await,
            }
        }
    }

    /// Performs the start a transition handed over (the state is `Starting`; `duty` ends it
    /// as failed on every way out but success), and ends it: `Running` with the new instance.
    async fn start(self: Arc<Self>, duty: StartDuty<SM>) -> Result<Raft<SM>, GroupError> {
        let group = self.group;
        let raft = (self.starter)().await.map_err(|e| Unavailable::Restart {
            group,
            source: Arc::new(e),
        })?;
        // openraft starts an instance with every timer on: a quiet follower's would tick,
        // and campaign, while it reads its state back. It gets the switches quiescing wants
        // now, and again when the start ends (one turned meanwhile is recorded, not applied).
        apply_switches(&raft, self.lock().switches());
        // Until its core has read the stores, an instance's metrics are blank (no leader, no
        // membership): whoever reads them through `running` must see the restored state.
        let restored = raft
            .wait(Some(RESTORE_WAIT))
            .metrics(
                |m| m.membership_config.log_id().is_some(),
                "restore after hibernation",
            )
            .await;
        if let Err(e) = restored {
            let _ = raft.shutdown().await;
            return Err(Unavailable::NotRestored {
                group,
                source: Arc::new(e),
            }
            .into());
        }
        self.forward_leadership(&raft);
        let applied = {
            let mut st = self.lock();
            let switches = st.started(raft.clone(), Instant::now());
            if let Some(s) = switches {
                apply_switches(&raft, s);
            }
            switches.is_some()
        };
        duty.done();
        self.changed.notify_waiters();
        if !applied {
            // No start was under way (the rules rule it out): never two instances.
            let _ = raft.shutdown().await;
            return Err(Unavailable::Stopped.into());
        }
        self.transitions.note();
        tracing::debug!(group, "hibernated group started again");
        Ok(raft)
    }

    /// Performs, in the background, the start a transition handed over (a switch turned on, a
    /// wake after a hibernation, a retry).
    fn start_in_background(self: &Arc<Self>) {
        // Taken before the task is spawned: a task that never runs still ends the start.
        let duty = StartDuty::new(self);
        let me = self.clone();
        spawn_if_running(async move {
            if let Err(e) = me.clone().start(duty).await {
                tracing::warn!(group = me.group, error = %e, "a woken group did not start again");
            }
        });
    }

    /// Tries a failed start again after `after` ([`Failed::Retry`]), if the group still
    /// backs off for `retry` then. Holds the group weakly: a deleted group is not kept.
    fn retry_start_after(self: &Arc<Self>, after: Duration, retry: u64) {
        let me = Arc::downgrade(self);
        spawn_if_running(async move {
            tokio::time::sleep(after).await;
            let Some(me) = me.upgrade() else { return };
            let start = me.lock().retry(retry);
            if start {
                me.start_in_background();
            }
        });
    }

    /// Records a switch quiescing turned, and performs what it asks.
    fn switch(self: &Arc<Self>, which: Switch, on: bool) {
        let mut st = self.lock();
        match st.switch(which, on) {
            Switched::Apply(raft, switches) => apply_switches(&raft, switches),
            Switched::Start => {
                drop(st);
                self.start_in_background();
            }
            Switched::Nothing => {}
        }
    }

    /// Hibernates the group if its instance runs, `quiet` says it is quiet (asked under the
    /// lock) and its log is settled: shuts the instance down. Returns whether it did.
    async fn hibernate(self: &Arc<Self>, quiet: impl FnOnce() -> bool) -> bool {
        let taken = {
            let mut st = self.lock();
            // Quiet: a message that would change the replica's state wakes it before
            // openraft sees it, and a wake's switch takes this lock; so a replica still
            // quiet here has nothing in flight, and whatever comes next waits for the
            // shutdown and starts an instance.
            let quiet = quiet();
            st.hibernate(quiet, |raft| {
                let view = view_of(raft);
                crate::quiesce::log_settled(&view).then(|| Parked {
                    view,
                    leadership: leadership_of(raft),
                })
            })
        };
        let Some(raft) = taken else {
            return false;
        };
        // Taken before the task is spawned: a task that never runs still ends the shutdown.
        let duty = HibernationDuty(self.clone());
        let ended = tokio::spawn(async move {
            let _ = raft.shutdown().await;
            drop(duty);
        });
        let _ = ended.await;
        true
    }

    /// Stops the group for good: waits for a start or a shutdown under way, then shuts the
    /// instance down.
    async fn stop(&self) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let stop = self.lock().stop();
            match stop {
                Stop::ShutDown(raft) => {
                    let _ = raft.shutdown().await;
                    break;
                }
                Stop::Done => break,
                Stop::Wait => changed.await,
            }
        }
        self.leadership.send_modify(|w| w.stopped = true);
    }

    /// Copies the instance's leadership into the group's own watch, which outlives the
    /// instance, until the instance stops.
    fn forward_leadership(self: &Arc<Self>, raft: &Raft<SM>) {
        let mut rx = raft.metrics();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let now = {
                    let m = rx.borrow_watched();
                    Leadership {
                        leader: m.current_leader,
                        term: m.current_term,
                    }
                };
                let Some(me) = me.upgrade() else { return };
                me.marks
                    .lock()
                    .unwrap()
                    .count(&rx.borrow_watched(), &me.transitions);
                if joint_due(&rx.borrow_watched()).is_some()
                    && !me
                        .finishing_joint
                        .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    tokio::spawn(finish_joint_after_grace(Arc::downgrade(&me)));
                }
                me.leadership.send_if_modified(|w| {
                    let changed = w.leadership != now && !w.stopped;
                    if changed {
                        w.leadership = now;
                    }
                    changed
                });
                drop(me);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

/// How long a committed joint configuration must stay current on a leader (seen at two
/// looks this far apart) before the leader finishes it itself: the change that made it
/// proposes its second entry at once.
const JOINT_FINISH_GRACE: Duration = Duration::from_secs(2);

/// [`voters::joint_to_finish`] on openraft's metrics: the joint configuration's log index
/// when this leader should finish it.
fn joint_due(m: &openraft::RaftMetrics<TypeConfig>) -> Option<u64> {
    let joint_at = m.membership_config.log_id().as_ref().map(|l| l.index());
    voters::joint_to_finish(
        m.state == ServerState::Leader,
        m.membership_config.membership().get_joint_config().len(),
        joint_at,
        m.last_applied.as_ref().map(|l| l.index()),
    )
    .then_some(joint_at)
    .flatten()
}

/// [`joint_due`] of the group's running instance, with the instance.
fn joint_due_in<SM: RaftStateMachine<TypeConfig>>(me: &Instance<SM>) -> Option<(Raft<SM>, u64)> {
    let raft = me.running()?;
    let at = joint_due(&raft.metrics().borrow_watched())?;
    Some((raft, at))
}

/// After [`JOINT_FINISH_GRACE`], finishes the group's joint configuration if this replica
/// still leads it and it is still joint ([`voters::joint_to_finish`]): left joint, the group
/// needs a majority of both parts, and one more lost node stops it (a fault run saw the
/// metadata group stay in `[{2, 3}, {1, 2, 3}]` after a power loss during node 1's
/// promotion, and lose its leader for good once node 3 lost its disk: node 3's rebuild then
/// waited for a metadata leader that could not be elected).
async fn finish_joint_after_grace<SM: RaftStateMachine<TypeConfig>>(
    instance: std::sync::Weak<Instance<SM>>,
) {
    // The joint configuration waited for (its log index): only one that stayed current for
    // the whole grace is finished here, so that the change that made it, which proposes its
    // second entry at once, is never raced (its second step would fail its precondition).
    let mut waited_for: Option<u64> = None;
    // Until the configuration is uniform, or this replica no longer leads (or runs).
    loop {
        tokio::time::sleep(JOINT_FINISH_GRACE).await;
        let Some(me) = instance.upgrade() else { return };
        let Some((raft, at)) = joint_due_in(&me) else {
            me.finishing_joint
                .store(false, std::sync::atomic::Ordering::Release);
            // One that became due meanwhile would have found the flag still set.
            if joint_due_in(&me).is_none()
                || me
                    .finishing_joint
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                return;
            }
            waited_for = None;
            continue;
        };
        if waited_for != Some(at) {
            waited_for = Some(at);
            continue;
        }
        let group = me.group;
        drop(me);
        if let Err(e) = finish_joint(&raft).await {
            tracing::warn!(group, error = %e, "a joint configuration was not finished; trying again");
        }
    }
}

fn apply_switches<SM: RaftStateMachine<TypeConfig>>(raft: &Raft<SM>, s: Switches) {
    let rc = raft.runtime_config();
    rc.tick(s.tick);
    rc.heartbeat(s.heartbeat);
    rc.elect(s.elect);
}

/// The start a transition handed over ([`Need::Start`], [`Switched::Start`], a wake after a
/// hibernation, a retry): until [`StartDuty::done`], dropping it ends the start as failed, on
/// every way out but success: an error, a panic, a task that never ran. Waiters must never
/// wait on a start nobody performs, and an awake replica's failed start is tried again.
struct StartDuty<SM: RaftStateMachine<TypeConfig>>(Option<Arc<Instance<SM>>>);

impl<SM: RaftStateMachine<TypeConfig>> StartDuty<SM> {
    fn new(instance: &Arc<Instance<SM>>) -> Self {
        StartDuty(Some(instance.clone()))
    }

    /// The start ended ([`lifecycle::State::started`] was called).
    fn done(mut self) {
        self.0 = None;
    }
}

impl<SM: RaftStateMachine<TypeConfig>> Drop for StartDuty<SM> {
    fn drop(&mut self) {
        let Some(i) = self.0.take() else { return };
        let failed = i
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .start_failed();
        i.changed.notify_waiters();
        if let Failed::Retry { after, retry } = failed {
            tracing::warn!(
                group = i.group,
                ?after,
                "a start failed while the group's tick is on: trying again"
            );
            i.retry_start_after(after, retry);
        }
    }
}

/// The shutdown a hibernation handed over ([`lifecycle::State::hibernate`]): dropping it ends
/// the shutdown ([`lifecycle::State::hibernated`]) and performs what follows, however the
/// shutdown's task ends, a panic or a task that never ran included: otherwise the group would
/// stay hibernating, and every need and stop would wait for good.
struct HibernationDuty<SM: RaftStateMachine<TypeConfig>>(Arc<Instance<SM>>);

impl<SM: RaftStateMachine<TypeConfig>> Drop for HibernationDuty<SM> {
    fn drop(&mut self) {
        let i = &self.0;
        let start = i
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hibernated();
        i.changed.notify_waiters();
        if start {
            i.start_in_background();
        }
    }
}

/// Spawns `task` if a runtime runs. A duty's drop may spawn as the runtime shuts down, with
/// none left to spawn on; the task is dropped then, and its own duties end what it owned.
fn spawn_if_running(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(task);
    }
}

impl<SM: RaftStateMachine<TypeConfig>> Timers for Arc<Instance<SM>> {
    fn set_tick(&self, on: bool) {
        self.switch(Switch::Tick, on);
    }
    fn set_heartbeat(&self, on: bool) {
        self.switch(Switch::Heartbeat, on);
    }
    fn set_elect(&self, on: bool) {
        self.switch(Switch::Elect, on);
    }
}

/// What every group's handle can do, whatever its state machine.
pub struct GroupRaft<SM: RaftStateMachine<TypeConfig>> {
    instance: Arc<Instance<SM>>,
    quiet: Arc<Quiescence>,
}

impl<SM: RaftStateMachine<TypeConfig>> Clone for GroupRaft<SM> {
    fn clone(&self) -> Self {
        GroupRaft {
            instance: self.instance.clone(),
            quiet: self.quiet.clone(),
        }
    }
}

fn view_of<SM: RaftStateMachine<TypeConfig>>(raft: &openraft::Raft<TypeConfig, SM>) -> GroupView {
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    let joint = m.membership_config.membership().get_joint_config();
    GroupView {
        me: m.id,
        leading: m.state == ServerState::Leader,
        following: m.state == ServerState::Follower,
        leader: m.current_leader,
        term: m.current_term,
        last_index: m.last_log_index,
        committed: m.local_committed.as_ref().map(|l| l.index()),
        applied: m.last_applied.as_ref().map(|l| l.index()),
        voters: match joint.as_slice() {
            [only] => only.iter().copied().collect(),
            _ => Vec::new(),
        },
        matched: m
            .replication
            .iter()
            .flatten()
            .map(|(n, l)| (*n, l.as_ref().map(|l| l.index())))
            .collect(),
        failed: m.running_state.is_err(),
    }
}

/// `(voters, learners)` of an instance's membership.
fn members_of<SM: RaftStateMachine<TypeConfig>>(
    raft: &openraft::Raft<TypeConfig, SM>,
) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    let membership = m.membership_config.membership();
    (
        membership.voter_ids().collect(),
        membership.learner_ids().collect(),
    )
}

/// On the leader: the group's voter configurations (one when uniform, old then new when
/// joint), its learners, how far `node`'s replication matched and the commit index.
#[allow(clippy::type_complexity)]
fn leader_membership<SM: RaftStateMachine<TypeConfig>>(
    raft: &openraft::Raft<TypeConfig, SM>,
    node: NodeId,
) -> Result<
    (
        Vec<BTreeSet<NodeId>>,
        BTreeSet<NodeId>,
        Option<u64>,
        Option<u64>,
    ),
    GroupError,
> {
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    if m.state != ServerState::Leader {
        return Err(GroupError::NotLeader {
            leader: m.current_leader,
            address: None,
        });
    }
    let membership = m.membership_config.membership();
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&node))
        .and_then(|l| l.as_ref().map(|l| l.index));
    Ok((
        membership.get_joint_config().clone(),
        membership.learner_ids().collect(),
        matched,
        m.local_committed.as_ref().map(|l| l.index()),
    ))
}

/// On the leader: finishes an unfinished joint configuration (its new voters alone; voters
/// of the old part only stay as learners). Adding no voter to a joint configuration is
/// openraft's way to ask for its final uniform one.
async fn finish_joint<SM: RaftStateMachine<TypeConfig>>(
    raft: &openraft::Raft<TypeConfig, SM>,
) -> Result<(), GroupError> {
    tracing::warn!("finishing a joint configuration an earlier leader left unfinished");
    raft.change_membership(openraft::ChangeMembers::AddVoterIds(BTreeSet::new()), true)
        .await
        .map_err(write_error)?;
    Ok(())
}

fn leadership_of<SM: RaftStateMachine<TypeConfig>>(
    raft: &openraft::Raft<TypeConfig, SM>,
) -> Leadership {
    // Two fields read under the watch's borrow: cloning the whole metrics would copy maps
    // on every produce.
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    Leadership {
        leader: m.current_leader,
        term: m.current_term,
    }
}

impl<SM: RaftStateMachine<TypeConfig>> GroupRaft<SM> {
    /// Starts the group's instance with `starter`, and its quiescing switch.
    pub(crate) async fn start(
        group: u64,
        starter: Starter<SM>,
        activity_grace: Duration,
        transitions: crate::quiesce::Transitions,
    ) -> Result<Self, crate::group::StartError> {
        let raft = starter().await?;
        let instance = Arc::new(Instance {
            group,
            state: Mutex::new(lifecycle::State::running(raft.clone(), Instant::now())),
            changed: Notify::new(),
            starter,
            leadership: watch::channel(Watched {
                leadership: leadership_of(&raft),
                stopped: false,
            })
            .0,
            transitions: transitions.clone(),
            marks: Mutex::new(ElectionMarks::of(&raft)),
            finishing_joint: Default::default(),
        });
        let quiet = Quiescence::new(group, instance.clone(), activity_grace, transitions);
        instance.forward_leadership(&raft);
        Ok(GroupRaft { instance, quiet })
    }

    /// The running instance, if the group is not hibernated.
    fn running(&self) -> Option<Raft<SM>> {
        self.instance.running()
    }

    /// The running instance, started again first if the group is hibernated.
    pub(crate) async fn instance(&self) -> Result<Raft<SM>, GroupError> {
        self.instance.get().await
    }

    /// Whether the group's instance runs (it is not hibernated).
    pub fn is_running(&self) -> bool {
        self.instance.lock().raft().is_some()
    }

    /// Since when the group's instance runs, if it does (it hibernates only once it has run
    /// for a while, [`crate::scan::hibernation_due`]).
    pub fn running_since(&self) -> Option<Instant> {
        self.instance.lock().running_since()
    }

    /// Whether the group stopped on this node.
    fn is_stopped(&self) -> bool {
        self.instance.lock().is_stopped()
    }

    /// Hibernates a quiet group: shuts its instance down (see [`Instance`]). Returns whether
    /// it did; a group that is not quiet, or whose log is not all committed and applied, keeps
    /// running.
    pub async fn hibernate(&self) -> bool {
        let quiet = &self.quiet;
        self.instance
            .hibernate(|| matches!(quiet.kind(), Kind::Leading | Kind::Following))
            .await
    }

    /// The group's quiescing state on this node.
    pub fn quiescence(&self) -> &Arc<Quiescence> {
        &self.quiet
    }

    /// The group's state as this replica sees it, for the quiescing decisions: a hibernated
    /// one's as it hibernated.
    pub fn view(&self) -> GroupView {
        self.instance.read(view_of, |parked| {
            parked.map(|p| p.view.clone()).unwrap_or_default()
        })
    }

    /// Who leads, as this node sees it.
    pub fn leadership(&self) -> Leadership {
        self.instance.read(leadership_of, |parked| match parked {
            Some(p) => p.leadership,
            None => self.instance.leadership.borrow().leadership,
        })
    }

    pub fn is_leader(&self) -> bool {
        self.instance.read(
            |raft| raft.is_leader(),
            |parked| parked.is_some_and(|p| p.view.leading),
        )
    }

    pub fn watch_leadership(&self) -> LeadershipWatch {
        LeadershipWatch {
            rx: self.instance.leadership.subscribe(),
        }
    }

    /// Whether the group has a membership on this node (it was initialized here, or a leader
    /// reached it); `false` also when its instance cannot start.
    pub async fn is_initialized(&self) -> bool {
        match self.instance().await {
            Ok(raft) => raft.is_initialized().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Initializes the group with `members` (id → address) unless it already is; `true` if
    /// this call did it. openraft then campaigns at once.
    pub async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<bool, GroupError> {
        let raft = self.instance().await?;
        if raft.is_initialized().await.map_err(Unavailable::raft)? {
            return Ok(false);
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, a)| (*id, BasicNode { addr: a.clone() }))
            .collect();
        // Every member initializes with the same membership; openraft allows it and elects
        // one leader. "Already initialized" (a peer's entry arrived first) is fine.
        match raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::debug!(error = %e, "initialize skipped");
                Ok(false)
            }
        }
    }

    /// Proposes `req` and waits until it is committed and applied.
    async fn write(&self, req: Request) -> Result<Response, GroupError> {
        let raft = self.prepare_write().await?;
        Ok(raft.client_write(req).await.map_err(write_error)?.data)
    }

    /// Before a proposal: wakes a quiet leader, and renews its lease if it is old. openraft's
    /// leader refuses writes without a lease (a quorum acknowledgement younger than the leader
    /// lease, the longest election timeout), and a quiet leader sends no heartbeats, so its
    /// lease lapses one lease after it went quiet. The first write after that waits for one
    /// heartbeat round. Returns the running instance.
    async fn prepare_write(&self) -> Result<openraft::Raft<TypeConfig, SM>, GroupError> {
        self.quiet.wake_leader("proposal");
        let raft = self.instance().await?;
        if !lease_is_fresh(&raft) {
            confirm_leadership(&raft, Confirm::Lease).await?;
        }
        Ok(raft)
    }

    /// Campaigns now, on a follower whose leader's node the node-level failure detector
    /// ([`crate::liveness`]) suspects, instead of waiting for openraft's election timer: that
    /// timer first waits out the dead leader's lease (the longest election timeout) and then a
    /// random election timeout, about 1.8-2.4 s with the defaults.
    ///
    /// While this replica's vote is still the suspected leader's, the campaign is the one a
    /// leader transfer starts: its vote requests are granted even by voters whose lease on
    /// that leader has not run out. That is safe because no fjord read trusts a lease: a
    /// linearizable read asks a quorum after it began ([`Confirm::ReadIndex`]), so a leader
    /// that was wrongly suspected and deposed serves no stale read, and Raft's election
    /// rules (a vote per term, the log check) do not depend on leases. After a campaign of
    /// its own failed, the replica campaigns in the next term (voters that saw only
    /// candidates hold no lease). Returns whether a campaign was started.
    pub async fn campaign_for_lost_leader(&self, lost: NodeId) -> bool {
        let Ok(raft) = self.instance().await else {
            return false;
        };
        let (me, vote, state, leader) = {
            let rx = raft.metrics();
            let m = rx.borrow_watched();
            (m.id, m.vote, m.state, m.current_leader)
        };
        if !matches!(state, ServerState::Follower | ServerState::Candidate) || me == lost {
            return false;
        }
        if leader.is_some_and(|l| l != lost) {
            return false;
        }
        let started = if vote.committed && vote.leader_id.node_id == lost {
            let req = openraft::raft::TransferLeaderRequest::new(vote, me, None);
            raft.handle_transfer_leader(req).await.is_ok()
        } else if vote.leader_id.node_id == me || !vote.committed {
            raft.trigger().elect(false).await.is_ok()
        } else {
            false
        };
        if started {
            tracing::info!(
                lost,
                term = vote.leader_id.term,
                "campaigning: the leader's node is suspected"
            );
        }
        started
    }

    /// Asks this node, the leader, to hand leadership to `to`. The group is woken first and
    /// stays awake for this term ([`Quiescence::transfer_started`]): if the transfer fails,
    /// its followers must be able to elect.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), GroupError> {
        self.quiet.transfer_started(self.leadership().term);
        self.instance()
            .await?
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| Unavailable::raft(e).into())
    }

    /// On the leader: how many log entries follower `node` lacks (`None` when this node is
    /// not the leader or `node` is not replicated to). A hibernated leader answers from the
    /// state it hibernated in: every live follower had its whole log then, and nothing has
    /// been appended since.
    pub fn lag_of(&self, node: NodeId) -> Option<u64> {
        let running = |raft: &Raft<SM>| {
            let m = raft.metrics();
            let m = m.borrow_watched();
            let last = m.last_log_index.unwrap_or(0);
            let matched = m
                .replication
                .as_ref()?
                .get(&node)?
                .as_ref()
                .map_or(0, |l| l.index);
            Some(last.saturating_sub(matched))
        };
        let parked = |parked: Option<&Parked>| {
            let view = &parked?.view;
            if !view.leading {
                return None;
            }
            let matched = view.matched.iter().find(|(n, _)| *n == node)?.1;
            Some(
                view.last_index
                    .unwrap_or(0)
                    .saturating_sub(matched.unwrap_or(0)),
            )
        };
        self.instance.read(running, parked)
    }

    /// This node's view of the group's membership: `(voters, learners)`, both empty when the
    /// group has no membership here yet. In a joint configuration, the voters of every part.
    pub async fn members(&self) -> Result<(BTreeSet<NodeId>, BTreeSet<NodeId>), GroupError> {
        Ok(members_of(&self.instance().await?))
    }

    /// [`GroupRaft::members`] without waking a hibernated group: `None` when it is not running.
    pub fn members_if_running(&self) -> Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)> {
        self.running().map(|raft| members_of(&raft))
    }

    /// On the leader: makes voter `node` a learner (it keeps receiving the log but no longer
    /// votes or counts toward a majority). `Ok(false)` if it was not a voter. The change
    /// commits through the old and the new configuration (joint consensus), so it needs a
    /// majority of the voters without `node`.
    pub async fn demote(&self, node: NodeId) -> Result<bool, GroupError> {
        let raft = self.instance().await?;
        self.quiet.wake_leader("membership change");
        let (configs, learners, _, _) = leader_membership(&raft, node)?;
        let standing = voters::standing(&configs, &learners, node);
        // The node comes back on an empty log: without this, openraft's leader treats the
        // reverted log as a bug and stops (it panics: "follower log reversion is not
        // allowed"). Allowed once, for this node only, and only once it is no voter.
        let allow_revert = |raft: openraft::Raft<TypeConfig, SM>| async move {
            match raft.trigger().allow_next_revert(&node, true).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(GroupError::from(Unavailable::raft(e))),
                Err(e) => Err(GroupError::from(Unavailable::raft(e))),
            }
        };
        match voters::demote_step(&configs, &standing, node) {
            voters::DemoteStep::NotVoter => {
                allow_revert(raft).await?;
                return Ok(false);
            }
            voters::DemoteStep::OnlyVoter => return Err(Unavailable::OnlyVoter { node }.into()),
            voters::DemoteStep::Finish => finish_joint(&raft).await?,
            voters::DemoteStep::Keep(rest) => {
                raft.change_membership(rest, true)
                    .await
                    .map_err(write_error)?;
            }
        }
        allow_revert(raft).await?;
        Ok(true)
    }

    /// On the leader: makes learner `node` a voter again once it holds every committed entry
    /// (its replication matched the leader's commit index). A joint configuration left by an
    /// earlier leader is finished first ([`voters`]): until then the node is no voter.
    pub async fn promote_caught_up(&self, node: NodeId) -> Result<Promotion, GroupError> {
        let raft = self.instance().await?;
        self.quiet.wake_leader("membership change");
        let (configs, learners, matched, committed) = leader_membership(&raft, node)?;
        let standing = voters::standing(&configs, &learners, node);
        match voters::promote_step(&standing, matched, committed) {
            voters::PromoteStep::AlreadyVoter => Ok(Promotion::AlreadyVoter),
            voters::PromoteStep::NotAMember => Ok(Promotion::NotAMember),
            voters::PromoteStep::Lagging { matched, committed } => {
                Ok(Promotion::Lagging { matched, committed })
            }
            voters::PromoteStep::Finish => {
                finish_joint(&raft).await?;
                Ok(Promotion::Promoted)
            }
            voters::PromoteStep::Add => {
                raft.change_membership(openraft::ChangeMembers::AddVoterIds([node].into()), true)
                    .await
                    .map_err(write_error)?;
                Ok(Promotion::Promoted)
            }
        }
    }

    /// On the leader: the voter a stopping leader hands the group over to ([`crate::handoff::choose`]):
    /// the least lagging of those whose node `alive` says is up or that acknowledged within
    /// `window`.
    pub fn handoff_target(
        &self,
        window: Duration,
        alive: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        let view = self.view();
        let acks = self.acks_within(window);
        let followers: Vec<crate::handoff::Follower> = view
            .voters
            .iter()
            .filter(|v| **v != view.me)
            .map(|v| crate::handoff::Follower {
                node: *v,
                acked: acks.iter().find(|(_, n)| n == v).map(|(age, _)| *age),
                lag: self.lag_of(*v),
                alive: alive(*v),
            })
            .collect();
        crate::handoff::choose(&followers)
    }

    /// On the leader: whether a transfer to `to` that someone asked for may go ahead
    /// ([`crate::handoff::may_transfer`]).
    pub fn may_transfer(
        &self,
        to: NodeId,
        max_lag: u64,
    ) -> Result<(), crate::handoff::TransferRefused> {
        crate::handoff::may_transfer(to, &self.view().voters, self.lag_of(to), max_lag)
    }

    /// `(age of the last acknowledgement, follower)` for followers heard from within `window`.
    fn acks_within(&self, window: Duration) -> Vec<(Duration, NodeId)> {
        let Some(raft) = self.running() else {
            return Vec::new();
        };
        let m = raft.metrics().borrow_watched().clone();
        m.heartbeat
            .iter()
            .flatten()
            .filter(|(node, _)| **node != m.id)
            .filter_map(|(node, at)| {
                at.as_ref()
                    .map(|at| (openraft::Instant::elapsed(&**at), *node))
            })
            .filter(|(age, _)| *age < window)
            .collect()
    }

    /// Stops the group for good on this node.
    pub async fn shutdown(&self) {
        self.instance.stop().await;
    }
}

/// This replica leads with a quorum acknowledgement younger than half the lease (or it does
/// not lead: openraft answers that itself).
fn lease_is_fresh<SM: RaftStateMachine<TypeConfig>>(raft: &openraft::Raft<TypeConfig, SM>) -> bool {
    let half_lease = Duration::from_millis(raft.config().election_timeout_max / 2);
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    if m.state != ServerState::Leader {
        return true;
    }
    m.last_quorum_acked
        .as_ref()
        .is_some_and(|at| openraft::Instant::elapsed(&**at) < half_lease)
}

/// Confirms this node leads, sending a heartbeat round at once when the quorum
/// acknowledgement `how` asks for is not there yet, and waiting (up to one lease) for it; a
/// leader cut off in a minority gets an error. Returns once the state machine has applied
/// everything committed when the call began.
async fn confirm_leadership<SM: RaftStateMachine<TypeConfig>>(
    raft: &openraft::Raft<TypeConfig, SM>,
    how: Confirm,
) -> Result<(), GroupError> {
    let option = match how {
        Confirm::Lease => LinearizerOption::new(None, true),
        Confirm::ReadIndex => LinearizerOption::new(Some(Duration::ZERO), true),
    };
    match raft.ensure_linearizable(option).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
            Err(GroupError::NotLeader {
                leader: f.leader_id,
                address: f.leader_node.map(|n| n.addr),
            })
        }
        Err(e) => Err(Unavailable::raft(e).into()),
    }
}

/// A CP write refused while the leader holds AP writes it took without a majority.
fn holding_error() -> GroupError {
    Unavailable::Holding.into()
}

/// A partition group on this node.
#[derive(Clone)]
pub struct PartitionHandle {
    core: GroupRaft<PartitionSm>,
    shared: Arc<PartitionShared>,
    /// Proposes each producer's batches in sequence order (see [`crate::order`]).
    order: Arc<ProposalOrder>,
    /// The AP batches this leader holds while no majority answers it (see [`crate::side`]).
    side: Arc<Mutex<SideQueue>>,
}

/// Where a submitted batch went.
enum Submitted {
    /// Into Raft: the receiver of its commit.
    Raft(OneshotReceiverOf<TypeConfig, ClientWriteResult<TypeConfig>>),
    /// Held by a leader no majority answers, with its predicted outcome (AP only).
    Held(Outcome),
}

/// Batches the drain of held AP batches proposes at a time.
const DRAIN_CHUNK: usize = 256;
/// How long the drain waits before looking again at a group that cannot take its batches.
const DRAIN_RETRY: Duration = Duration::from_millis(100);

impl std::ops::Deref for PartitionHandle {
    type Target = GroupRaft<PartitionSm>;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl PartitionHandle {
    /// Stops the group, then stores its held time index rows and checkpoints its applied
    /// state, so that the next start does not read back the log to rebuild them.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
        self.shared.store_time_rows().await;
        if let Err(e) = self.shared.checkpoint_now().await {
            tracing::warn!(group = self.shared.group(), error = %e, "cannot checkpoint a stopped partition");
        }
    }

    pub(crate) fn new(core: GroupRaft<PartitionSm>, shared: Arc<PartitionShared>) -> Self {
        PartitionHandle {
            core,
            shared,
            order: Arc::default(),
            side: Arc::default(),
        }
    }

    /// Offsets, high watermark and AP waiters of the partition.
    pub fn shared(&self) -> &Arc<PartitionShared> {
        &self.shared
    }

    /// How many AP batches this leader holds because no majority answers it, and whether it
    /// holds any (see [`crate::side`]).
    pub fn held_batches(&self) -> usize {
        self.side.lock().unwrap().len()
    }

    fn holding(&self) -> bool {
        self.side.lock().unwrap().active()
    }

    /// Hands the batch to Raft in its producer's sequence order (waiting a bounded time
    /// for the batches before it, [`crate::order`]); returns once Raft has it queued, with
    /// the receiver of its commit. An AP batch is held instead ([`crate::side`]) while this
    /// node leads but no majority answers it, or while it still holds earlier ones.
    async fn submit(&self, batch: StoredBatch, ap: bool) -> Result<Submitted, GroupError> {
        let (producer_id, base_sequence, count) =
            (batch.producer_id, batch.base_sequence, batch.record_count);
        // Before taking a turn: a quiet leader wakes, and one whose lease lapsed confirms it
        // still leads (a deposed quiet leader fails fast instead of taking an AP write it
        // could never commit). A leader that cannot confirm, because no majority answers,
        // holds an AP batch; a CP one fails.
        let raft = if self.holding() {
            None
        } else {
            match self.core.prepare_write().await {
                Ok(raft) => Some(raft),
                Err(GroupError::Unavailable(why)) if ap && self.core.is_leader() => {
                    tracing::debug!(group = self.shared.group(), %why, "no majority: holding AP writes");
                    None
                }
                Err(e) => return Err(e),
            }
        };
        if raft.is_none() && !ap {
            return Err(holding_error());
        }
        self.order.wait_turn(producer_id, base_sequence).await;
        // A leader starts holding only after its lease lapsed, when openraft refuses writes,
        // so no batch that passed the check above can reach the log after the held ones'
        // offsets were predicted (it would have needed a quorum answer within the lease,
        // which the holder's own check would have seen).
        let result = match raft {
            Some(raft) if !self.holding() => {
                let (responder, committed) = ProgressResponder::complete_only();
                raft.client_write_ff(Request::Batch(batch), Some(responder))
                    .await
                    .map(|()| Submitted::Raft(committed))
                    .map_err(|e| Unavailable::raft(e).into())
            }
            _ if ap => self.hold(batch).await.map(Submitted::Held),
            _ => Err(holding_error()),
        };
        // Queued in the Raft core (or held): from here it keeps its place; the next may go.
        self.order.proposed(producer_id, base_sequence, count);
        result
    }

    /// Holds an AP batch while no majority answers this leader: decides its outcome after the
    /// log's last entry and the batches held before it, and starts the drain that proposes them
    /// once a majority answers again.
    async fn hold(&self, batch: StoredBatch) -> Result<Outcome, GroupError> {
        let raft = self.core.instance().await?;
        let (leading, term, last, leader) = {
            let rx = raft.metrics();
            let m = rx.borrow_watched();
            (
                m.state == ServerState::Leader,
                m.current_term,
                m.last_log_index,
                m.current_leader,
            )
        };
        let mut side = self.side.lock().unwrap();
        if !side.active() {
            if !leading {
                return Err(GroupError::NotLeader {
                    leader,
                    address: None,
                });
            }
            let state = self
                .shared
                .predicted_after(last)
                .map_err(|e| Internal::Storage {
                    source: Arc::new(e),
                })
                .map_err(GroupError::from)?
                .ok_or_else(|| {
                    GroupError::from(Unavailable::TailNotStored(format!(
                        "entries up to {last:?} are not all in the store"
                    )))
                })?;
            side.enter(term, state);
            tracing::warn!(
                group = self.shared.group(),
                term,
                "no majority answers this leader: AP writes are held until one does in this term"
            );
        }
        let outcome = side.push(batch).map_err(Busy::from)?;
        if !side.draining {
            side.draining = true;
            tokio::spawn(self.clone().drain());
        }
        Ok(outcome)
    }

    /// Proposes the held AP batches, in order, once this node leads with a majority again in
    /// the term they were taken in; drops them if the term moved on ([`side::decide`]).
    async fn drain(self) {
        while let Some(step) = self.drain_step() {
            if step == DrainStep::Wait {
                tokio::time::sleep(DRAIN_RETRY).await;
                continue;
            }
            let Ok(raft) = self.core.prepare_write().await else {
                tokio::time::sleep(DRAIN_RETRY).await;
                continue;
            };
            let (sent, in_log) = self.propose_held(&raft).await;
            self.side.lock().unwrap().proposed(in_log);
            if in_log < sent || sent == 0 {
                tokio::time::sleep(DRAIN_RETRY).await;
            }
        }
    }

    /// The drain's next step ([`side::decide`]), or `None` once it is over: the group
    /// stopped, or every held batch is in the log, or the term moved on (the batches are
    /// lost); each logged.
    fn drain_step(&self) -> Option<DrainStep> {
        let group = self.shared.group();
        if self.core.is_stopped() {
            let (batches, records) = self.side.lock().unwrap().leave();
            if batches > 0 {
                tracing::warn!(
                    group,
                    batches,
                    records,
                    "the group stopped: held AP writes dropped"
                );
            }
            return None;
        }
        let l = self.core.leadership();
        let leading_in = self.core.is_leader().then_some(l.term);
        let mut s = self.side.lock().unwrap();
        match side::decide(s.len(), s.term(), leading_in, l.term) {
            DrainStep::Done => {
                s.leave();
                s.draining = false;
                tracing::info!(group, "held AP writes are all in the log");
                None
            }
            DrainStep::Discard => {
                let taken_in = s.term();
                let (batches, records) = s.leave();
                s.draining = false;
                tracing::warn!(
                    group,
                    ?taken_in,
                    term = l.term,
                    batches,
                    records,
                    "the term moved on: AP writes held without a majority are lost"
                );
                None
            }
            step => Some(step),
        }
    }

    /// Proposes the next held batches (up to [`DRAIN_CHUNK`]) to `raft`. Returns how many
    /// were sent and how many of them are in the log: every one up to the first that
    /// openraft refused (a lapsed lease: not in the log, proposed again later). A leader that
    /// is deposed meanwhile answers the rest "forward to leader" too; they stay held and the
    /// term check drops them.
    async fn propose_held(&self, raft: &Raft<PartitionSm>) -> (usize, usize) {
        let batches = self.side.lock().unwrap().front(DRAIN_CHUNK);
        let mut answers = Vec::with_capacity(batches.len());
        for b in batches {
            let (responder, committed) = ProgressResponder::complete_only();
            if raft
                .client_write_ff(Request::Batch(b), Some(responder))
                .await
                .is_err()
            {
                break;
            }
            answers.push(committed);
        }
        let sent = answers.len();
        let mut in_log = 0;
        for a in answers {
            match a.await {
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => break,
                Ok(_) => in_log += 1,
                Err(_) => break,
            }
        }
        (sent, in_log)
    }

    /// Moves the log start offset up to `offset` (records below it are deleted; clamped to
    /// the high watermark), CP: returns the log start offset once a majority has the entry
    /// and it is applied. With a `min_position` above 0, only if the partition's position has
    /// reached it when the entry applies ([`Request::DeleteRecords`]).
    pub async fn delete_records(&self, offset: u64, min_position: u64) -> Result<u64, GroupError> {
        if self.holding() {
            return Err(holding_error());
        }
        let req = Request::DeleteRecords {
            offset,
            min_position,
        };
        match self.core.write(req).await? {
            Response::DeleteRecords { log_start_offset } => Ok(log_start_offset),
            got => Err(Internal::UnexpectedResponse {
                what: "partition",
                got: Box::new(got),
            }
            .into()),
        }
    }

    /// Asks every replica to compact the partition below `req.upto` (CP: returns once a
    /// majority applied the request; each replica then compacts its own log, see
    /// [`crate::compaction`]).
    pub async fn request_compaction(&self, req: crate::CompactRequest) -> Result<(), GroupError> {
        if self.holding() {
            return Err(holding_error());
        }
        self.core.write(Request::Compact(req)).await.map(|_| ())
    }

    /// Carries out the latest compaction request on this replica, in a task of its own, if
    /// one is pending and none runs. Returns whether one was started.
    pub fn compact_in_background(&self, store: &fjord_storage::Store) -> bool {
        if !self.shared.compaction_pending() || !self.shared.start_compacting() {
            return false;
        }
        let (store, shared) = (store.clone(), self.shared.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::compaction::run(&store, &shared).await {
                tracing::warn!(group = shared.group(), error = %e, "compaction failed");
            }
            shared.done_compacting();
        });
        true
    }

    /// Asks openraft for a snapshot when one is due ([`PartitionShared::purge_due`]): it
    /// then purges the log behind it. Returns whether one was asked for.
    pub async fn purge_if_due(&self) -> bool {
        if !self.shared.purge_due() {
            return false;
        }
        match self.core.instance().await {
            Ok(raft) => raft.trigger().snapshot().await.is_ok(),
            Err(_) => false,
        }
    }

    /// CP: returns once a majority has the batch durably and it is applied.
    pub async fn propose_cp(&self, batch: StoredBatch) -> Result<Outcome, GroupError> {
        let Submitted::Raft(committed) = self.submit(batch, false).await? else {
            return Err(holding_error());
        };
        match committed.await {
            Ok(Ok(resp)) => match resp.data {
                Response::Batch(o) => Ok(o),
                got => Err(Internal::UnexpectedResponse {
                    what: "partition",
                    got: Box::new(got),
                }
                .into()),
            },
            Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
            Err(_) => Err(Unavailable::Stopped.into()),
        }
    }

    /// AP: returns once the batch is durable in this node's (the leader's) log, with the
    /// outcome the partition rules predict for it; or earlier, if the write fails. A leader no
    /// majority answers holds the batch in memory and answers at once ([`crate::side`]).
    pub async fn propose_ap(&self, batch: StoredBatch) -> Result<Outcome, GroupError> {
        let token = batch.token;
        // The guard forgets the waiter when this call ends, however it ends (the caller's
        // timeout drops this future mid-wait).
        let (_waiter, appended) = self.shared.register_waiter(token).map_err(Busy::from)?;
        async {
            let mut committed = match self.submit(batch, true).await? {
                Submitted::Raft(c) => c,
                Submitted::Held(outcome) => return Ok(outcome),
            };
            tokio::select! {
                o = appended => {
                    // Keep the commit notice's receiver until it fires: dropping it early
                    // makes openraft warn once per AP write.
                    tokio::spawn(async move { let _ = committed.await; });
                    o.map_err(|_| Unavailable::Stopped.into())
                }
                c = &mut committed => match c {
                    Ok(Ok(resp)) => match resp.data {
                        Response::Batch(o) => Ok(o),
                        got => Err(Internal::UnexpectedResponse {
                            what: "partition",
                            got: Box::new(got),
                        }
                        .into()),
                    },
                    Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
                    Err(_) => Err(Unavailable::Stopped.into()),
                },
            }
        }
        .await
    }

    /// Confirms this node leads, by a quorum's answer to a heartbeat sent after the call began
    /// (Raft's ReadIndex, no lease), and has applied everything committed when the call began.
    /// A quiet leader is woken first.
    pub async fn linearizable_read(&self) -> Result<(), GroupError> {
        self.quiescence().wake_leader("linearizable read");
        confirm_leadership(&self.core.instance().await?, Confirm::ReadIndex).await
    }
}

/// The metadata group on this node.
#[derive(Clone)]
pub struct MetaHandle {
    core: GroupRaft<MetaSm>,
    view: watch::Receiver<Arc<MetaView>>,
}

impl std::ops::Deref for MetaHandle {
    type Target = GroupRaft<MetaSm>;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl MetaHandle {
    pub(crate) fn new(core: GroupRaft<MetaSm>, view: watch::Receiver<Arc<MetaView>>) -> Self {
        MetaHandle { core, view }
    }

    /// The applied metadata on this node.
    pub fn view(&self) -> Arc<MetaView> {
        self.view.borrow().clone()
    }

    /// Watches the applied metadata.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetaView>> {
        self.view.clone()
    }

    /// The metadata leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leadership().leader
    }

    /// Applies `cmd` if this node leads the metadata group.
    pub async fn write(&self, cmd: MetaCommand) -> Result<MetaResponse, GroupError> {
        match self.core.write(Request::Meta(cmd)).await? {
            Response::Meta(r) => Ok(r),
            got => Err(Internal::UnexpectedResponse {
                what: "metadata",
                got: Box::new(got),
            }
            .into()),
        }
    }
}
