//! The handles the server uses to drive a group, in fjord's own types: proposing a batch or a
//! metadata command, asking who leads, linearizable reads, leader transfer. The server never names
//! an openraft type, so an openraft upgrade stays inside this crate.
//!
//! A quiet leader ([`crate::quiesce`]) is woken before anything that needs it: a proposal, a
//! linearizable read, a leader transfer.

use std::collections::BTreeMap;
use std::sync::Arc;
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
use tokio::sync::watch;

use crate::meta_sm::{MetaSm, MetaView};
use crate::order::ProposalOrder;
use crate::partition_sm::{PartitionShared, PartitionSm};
use crate::quiesce::{GroupView, Quiescence};
use crate::{MetaRaft, NodeId, PartitionRaft, Request, Response, StoredBatch, TypeConfig};

/// Why a proposal or a linearizable read did not go through.
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
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests are waiting on this group.
    #[error("{0}")]
    Busy(String),
    /// The state machine answered something that does not fit the request (a bug).
    #[error("{0}")]
    Internal(String),
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> GroupError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => GroupError::NotLeader {
            leader: f.leader_id,
            address: f.leader_node.map(|n| n.addr),
        },
        other => GroupError::Unavailable(other.to_string()),
    }
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

/// Watches a group's leadership.
pub struct LeadershipWatch {
    rx: openraft::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>,
}

impl LeadershipWatch {
    pub fn current(&mut self) -> Leadership {
        let m = self.rx.borrow_watched();
        Leadership {
            leader: m.current_leader,
            term: m.current_term,
        }
    }

    /// Waits for the next change; `false` once the group has stopped.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// What every group's handle can do, whatever its state machine.
pub struct GroupRaft<SM: RaftStateMachine<TypeConfig>> {
    raft: openraft::Raft<TypeConfig, SM>,
    quiet: Arc<Quiescence>,
}

impl<SM: RaftStateMachine<TypeConfig>> Clone for GroupRaft<SM> {
    fn clone(&self) -> Self {
        GroupRaft {
            raft: self.raft.clone(),
            quiet: self.quiet.clone(),
        }
    }
}

impl<SM: RaftStateMachine<TypeConfig>> GroupRaft<SM> {
    pub(crate) fn new(raft: openraft::Raft<TypeConfig, SM>, quiet: Arc<Quiescence>) -> Self {
        GroupRaft { raft, quiet }
    }

    pub(crate) fn raft(&self) -> &openraft::Raft<TypeConfig, SM> {
        &self.raft
    }

    /// The group's quiescing state on this node.
    pub fn quiescence(&self) -> &Arc<Quiescence> {
        &self.quiet
    }

    /// The group's state as this replica sees it, for the quiescing decisions.
    pub fn view(&self) -> GroupView {
        let rx = self.raft.metrics();
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

    /// Who leads, as this node sees it.
    pub fn leadership(&self) -> Leadership {
        // Two fields read under the watch's borrow: cloning the whole metrics would copy maps
        // on every produce.
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        Leadership {
            leader: m.current_leader,
            term: m.current_term,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    pub fn watch_leadership(&self) -> LeadershipWatch {
        LeadershipWatch {
            rx: self.raft.metrics(),
        }
    }

    /// Initializes the group with `members` (id → address) unless it already is; `true` if
    /// this call did it.
    pub async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<bool, String> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(false);
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, a)| (*id, BasicNode { addr: a.clone() }))
            .collect();
        // Every member initializes with the same membership; openraft allows it and elects
        // one leader. "Already initialized" (a peer's entry arrived first) is fine.
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::debug!(error = %e, "initialize skipped");
                Ok(false)
            }
        }
    }

    /// Proposes `req` and waits until it is committed and applied.
    async fn write(&self, req: Request) -> Result<Response, GroupError> {
        self.prepare_write().await?;
        Ok(self.raft.client_write(req).await.map_err(write_error)?.data)
    }

    /// Before a proposal: wakes a quiet leader, and renews its lease if it is old. openraft's
    /// leader refuses writes without a lease (a quorum acknowledgement younger than the leader
    /// lease, the longest election timeout), and a quiet leader sends no heartbeats, so its
    /// lease lapses one lease after it went quiet. The first write after that waits for one
    /// heartbeat round.
    async fn prepare_write(&self) -> Result<(), GroupError> {
        self.quiet.wake_leader("proposal");
        if self.lease_is_fresh() {
            return Ok(());
        }
        self.confirm_leadership(Confirm::Lease).await
    }

    /// This replica leads with a quorum acknowledgement younger than half the lease (or it
    /// does not lead: openraft answers that itself).
    fn lease_is_fresh(&self) -> bool {
        let half_lease = Duration::from_millis(self.raft.config().election_timeout_max / 2);
        let rx = self.raft.metrics();
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
    async fn confirm_leadership(&self, how: Confirm) -> Result<(), GroupError> {
        let option = match how {
            Confirm::Lease => LinearizerOption::new(None, true),
            Confirm::ReadIndex => LinearizerOption::new(Some(Duration::ZERO), true),
        };
        match self.raft.ensure_linearizable(option).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(GroupError::NotLeader {
                    leader: f.leader_id,
                    address: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(GroupError::Unavailable(e.to_string())),
        }
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
        let (me, vote, state, leader) = {
            let rx = self.raft.metrics();
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
            self.raft.handle_transfer_leader(req).await.is_ok()
        } else if vote.leader_id.node_id == me || !vote.committed {
            self.raft.trigger().elect(false).await.is_ok()
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
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| GroupError::Unavailable(e.to_string()))
    }

    /// On the leader: how many log entries follower `node` lacks (`None` when this node is
    /// not the leader or `node` is not replicated to).
    pub fn lag_of(&self, node: NodeId) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()?
            .get(&node)?
            .as_ref()
            .map_or(0, |l| l.index);
        Some(last.saturating_sub(matched))
    }

    /// On the leader: the follower that acknowledged it most recently within `window`.
    pub fn freshest_follower(&self, window: Duration) -> Option<NodeId> {
        self.acks_within(window)
            .into_iter()
            .min()
            .map(|(_, node)| node)
    }

    /// `(age of the last acknowledgement, follower)` for followers heard from within `window`.
    fn acks_within(&self, window: Duration) -> Vec<(Duration, NodeId)> {
        let m = self.raft.metrics().borrow_watched().clone();
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

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// A partition group on this node.
#[derive(Clone)]
pub struct PartitionHandle {
    core: GroupRaft<PartitionSm>,
    shared: Arc<PartitionShared>,
    /// Proposes each producer's batches in sequence order (see [`crate::order`]).
    order: Arc<ProposalOrder>,
}

impl std::ops::Deref for PartitionHandle {
    type Target = GroupRaft<PartitionSm>;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl PartitionHandle {
    /// Stops the group, then checkpoints its applied state, so that the next start does not
    /// read back the log to rebuild it.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
        if let Err(e) = self.shared.checkpoint_now().await {
            tracing::warn!(group = self.shared.group(), error = %e, "cannot checkpoint a stopped partition");
        }
    }

    pub(crate) fn new(
        raft: PartitionRaft,
        quiet: Arc<Quiescence>,
        shared: Arc<PartitionShared>,
    ) -> Self {
        PartitionHandle {
            core: GroupRaft::new(raft, quiet),
            shared,
            order: Arc::default(),
        }
    }

    /// Offsets, high watermark and AP waiters of the partition.
    pub fn shared(&self) -> &Arc<PartitionShared> {
        &self.shared
    }

    /// Hands the batch to Raft in its producer's sequence order (waiting a bounded time
    /// for the batches before it, [`crate::order`]); returns once Raft has it queued, with
    /// the receiver of its commit.
    async fn submit(
        &self,
        batch: StoredBatch,
    ) -> Result<OneshotReceiverOf<TypeConfig, ClientWriteResult<TypeConfig>>, GroupError> {
        let (producer_id, base_sequence, count) =
            (batch.producer_id, batch.base_sequence, batch.record_count);
        // Before taking a turn: a quiet leader wakes, and one whose lease lapsed confirms it
        // still leads (a deposed quiet leader fails fast instead of taking an AP write it
        // could never commit).
        self.core.prepare_write().await?;
        self.order.wait_turn(producer_id, base_sequence).await;
        let (responder, committed) = ProgressResponder::complete_only();
        let submitted = self
            .core
            .raft
            .client_write_ff(Request::Batch(batch), Some(responder))
            .await;
        // Queued in the Raft core: from here it keeps its place; the next may go.
        self.order.proposed(producer_id, base_sequence, count);
        submitted.map_err(|e| GroupError::Unavailable(e.to_string()))?;
        Ok(committed)
    }

    /// CP: returns once a majority has the batch durably and it is applied.
    pub async fn propose_cp(&self, batch: StoredBatch) -> Result<Outcome, GroupError> {
        match self.submit(batch).await?.await {
            Ok(Ok(resp)) => match resp.data {
                Response::Batch(o) => Ok(o),
                other => Err(GroupError::Internal(format!(
                    "unexpected partition response {other:?}"
                ))),
            },
            Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
            Err(_) => Err(GroupError::Unavailable("the group stopped".into())),
        }
    }

    /// AP: returns once the batch is durable in this node's (the leader's) log, with the
    /// outcome the partition rules predict for it; or earlier, if the write fails.
    pub async fn propose_ap(&self, batch: StoredBatch) -> Result<Outcome, GroupError> {
        let token = batch.token;
        let appended = self
            .shared
            .register_waiter(token)
            .map_err(|e| GroupError::Busy(e.to_string()))?;
        let result = async {
            let mut committed = self.submit(batch).await?;
            tokio::select! {
                o = appended => {
                    // Keep the commit notice's receiver until it fires: dropping it early
                    // makes openraft warn once per AP write.
                    tokio::spawn(async move { let _ = committed.await; });
                    o.map_err(|_| GroupError::Unavailable("the group stopped".into()))
                }
                c = &mut committed => match c {
                    Ok(Ok(resp)) => match resp.data {
                        Response::Batch(o) => Ok(o),
                        other => Err(GroupError::Internal(format!("unexpected partition response {other:?}"))),
                    },
                    Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
                    Err(_) => Err(GroupError::Unavailable("the group stopped".into())),
                },
            }
        }
        .await;
        self.shared.cancel_waiter(token);
        result
    }

    /// Confirms this node leads, by a quorum's answer to a heartbeat sent after the call began
    /// (Raft's ReadIndex, no lease), and has applied everything committed when the call began.
    /// A quiet leader is woken first.
    pub async fn linearizable_read(&self) -> Result<(), GroupError> {
        self.core.quiet.wake_leader("linearizable read");
        self.core.confirm_leadership(Confirm::ReadIndex).await
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
    pub(crate) fn new(
        raft: MetaRaft,
        quiet: Arc<Quiescence>,
        view: watch::Receiver<Arc<MetaView>>,
    ) -> Self {
        MetaHandle {
            core: GroupRaft::new(raft, quiet),
            view,
        }
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
            other => Err(GroupError::Internal(format!(
                "unexpected metadata response {other:?}"
            ))),
        }
    }
}
