//! Inbound Raft messages, decoded, handed to the group they name on this node.
//!
//! Inbound messages also drive quiescing ([`crate::quiesce`]): a message that shows the group
//! is active (entries, a vote, a snapshot, a leader transfer, another leader) wakes a quiet
//! replica before openraft sees it, and a replica that holds its elections (quiet, or woken
//! and not yet past its delay) refuses pre-votes: its leader was alive at the last node
//! heartbeat, so a campaign is premature, as a Raft follower that heard from its leader would
//! judge (a refused pre-vote is a lost message, which Raft tolerates). A quiet leader that
//! refuses one wakes, so its heartbeats reach the campaigner.
//!
//! The target of a leader transfer waits (bounded) for the leader's last entries before it
//! takes the transfer ([`catch_up_for_transfer`]).

use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use futures::{FutureExt, future};
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;

use super::server::DispatchError;
use super::wire::{
    AppendRequest, RaftAnswer, RaftRequest, RemoteError, StreamResult, TransferLeader, WireResult,
};
use crate::TypeConfig;
use crate::group::AnyGroup;
use crate::handle::{GroupError, GroupRaft};
use crate::quiesce::{Kind, Mode, Quiescence, Wake};

/// Hands `req` to this node's replica of `group` (`g`) and returns its answer: openraft's
/// response, or the text of its error.
pub(super) async fn deliver(
    g: &AnyGroup,
    group: u64,
    req: RaftRequest,
) -> Result<RaftAnswer, DispatchError> {
    match g {
        AnyGroup::Meta(h) => handle(h, group, req).await,
        AnyGroup::Partition(h) => handle(h, group, req).await,
    }
}

/// Serves a replication stream of group `g` (see `RaftTransport.StreamAppend`): hands the
/// appends to the group's Raft as one pipelined stream and returns the results, in order. A
/// fatal error of the group ends the stream after its result.
pub(super) fn stream_append<S>(
    g: &AnyGroup,
    requests: S,
) -> BoxStream<'static, WireResult<StreamResult>>
where
    S: Stream<Item = AppendRequest> + Send + Unpin + 'static,
{
    match g {
        AnyGroup::Meta(h) => serve_stream(h, requests),
        AnyGroup::Partition(h) => serve_stream(h, requests),
    }
}

fn serve_stream<SM, S>(
    g: &GroupRaft<SM>,
    requests: S,
) -> BoxStream<'static, WireResult<StreamResult>>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>,
    S: Stream<Item = AppendRequest> + Send + Unpin + 'static,
{
    let quiet = g.quiescence().clone();
    let g = g.clone();
    async move {
        let mut requests = requests.peekable();
        // Wake before the instance starts again: the first append may carry entries.
        if let Some(req) = std::pin::Pin::new(&mut requests).peek().await
            && append_wakes(&quiet, req)
        {
            quiet.wake(Wake::Activity, "append");
        }
        let raft = match g.instance().await {
            Ok(raft) => raft,
            Err(e) => return futures::stream::once(future::ready(Err(RemoteError::of(e)))).boxed(),
        };
        let requests = requests.map(move |req| {
            if append_wakes(&quiet, &req) {
                quiet.wake(Wake::Activity, "append");
            }
            req
        });
        raft.stream_append(requests)
            .scan(false, |failed, r| {
                if *failed {
                    return future::ready(None);
                }
                *failed = r.is_err();
                future::ready(Some(r.map_err(RemoteError::of)))
            })
            .boxed()
    }
    .flatten_stream()
    .boxed()
}

/// Whether an append must wake a quiet replica: a quiet leader wakes on any (another node
/// leads), a quiet follower on entries or on a leader other than the one it is quiet under. A
/// heartbeat of its own leader (a late one, sent before the leader went quiet) does not.
fn append_wakes(quiet: &Quiescence, req: &AppendRequest) -> bool {
    // The common case, an awake replica, without the lock: this runs for every append.
    if matches!(quiet.kind(), Kind::Awake | Kind::Claiming) {
        return false;
    }
    match &quiet.mode() {
        Mode::Awake | Mode::Claiming { .. } => false,
        Mode::Leading { .. } => true,
        Mode::Following(claim) => {
            !req.entries.is_empty()
                || req.vote.leader_id.term != claim.term
                || req.vote.leader_id.node_id != claim.leader
        }
    }
}

/// On the target of a leadership transfer: waits (bounded) until this replica holds the
/// leader's whole log, as the transfer requires.
///
/// The leader sends the transfer as soon as it stops taking writes; under load its last
/// entries are still on their way, and openraft's target ignores a transfer its log is not
/// up to date for. Nobody would retry it: the old leader refuses writes (sending clients to
/// the target, which is no leader either) and sends no heartbeats until an election timeout
/// passes. Waiting here for the last entries, which are already in flight, turns that stall
/// of an election timeout or more into the few milliseconds they take.
async fn catch_up_for_transfer<SM>(raft: &openraft::Raft<TypeConfig, SM>, req: &TransferLeader)
where
    SM: RaftStateMachine<TypeConfig>,
{
    let want = req.last_log_id().map(|l| l.index);
    let me = raft.metrics().borrow_watched().id;
    if *req.to_node_id() != me || raft.metrics().borrow_watched().last_log_index >= want {
        return;
    }
    // The leader's RPC gives up after its minimum election timeout: answer before it does.
    let wait = Duration::from_millis(raft.config().election_timeout_min * 3 / 4);
    let from = *req.from_leader();
    let caught_up = raft
        .wait(Some(wait))
        .metrics(
            |m| m.last_log_index >= want || m.vote != from,
            "catch up for a leader transfer",
        )
        .await;
    if caught_up.is_err() {
        tracing::debug!(?want, "transfer target still behind the leader's log");
    }
}

async fn handle<SM>(
    g: &GroupRaft<SM>,
    group: u64,
    req: RaftRequest,
) -> Result<RaftAnswer, DispatchError>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>,
{
    /// An answer as the wire carries it (openraft's error as its text).
    fn wire<T, E: std::fmt::Display>(r: Result<T, E>) -> WireResult<T> {
        r.map_err(RemoteError::of)
    }
    let quiet = g.quiescence();
    let instance = || async {
        g.instance()
            .await
            .map_err(|source: GroupError| DispatchError::Stopped { group, source })
    };
    Ok(match req {
        RaftRequest::Append(req) => {
            if append_wakes(quiet, &req) {
                quiet.wake(Wake::Activity, "append");
            }
            RaftAnswer::Append(wire(instance().await?.append_entries(req).await))
        }
        RaftRequest::PreVote(req) => {
            if quiet.refuses_pre_vote() {
                quiet.wake_leader("pre-vote");
                return Err(DispatchError::Quiet(group));
            }
            RaftAnswer::Vote(wire(instance().await?.pre_vote(req).await))
        }
        RaftRequest::Vote(req) => {
            quiet.wake(Wake::Activity, "vote");
            RaftAnswer::Vote(wire(instance().await?.vote(req).await))
        }
        RaftRequest::TransferLeader(req) => {
            quiet.wake(Wake::Activity, "leader transfer");
            let raft = instance().await?;
            catch_up_for_transfer(&raft, &req).await;
            RaftAnswer::TransferLeader(wire(raft.handle_transfer_leader(req).await))
        }
        RaftRequest::Snapshot(vote, snapshot) => {
            quiet.wake(Wake::Activity, "snapshot");
            let raft = instance().await?;
            RaftAnswer::Snapshot(wire(raft.install_full_snapshot(vote, snapshot).await))
        }
    })
}
