//! The sending side of pipelined replication (`RaftTransport.StreamAppend`): a group's
//! appends to one follower go out on one HTTP/2 stream as openraft produces them, without
//! waiting for the answers, which come back in order.
//!
//! Each answer is due within the RPC timeout after the follower has had time, at
//! [`APPEND_MIN_BYTES_PER_SEC`], for its request and every request before it ([`InFlight`]);
//! a late one ends the stream with an error (a stalled or cut-off follower looks the same as
//! with one RPC at a time). The stream closes after [`STREAM_IDLE`] with nothing to send, so
//! an idle group holds no stream on its peers' connections.
//!
//! openraft's replication sessions share one request generator state per follower, so a
//! session's requests must stop being taken the moment openraft is done with it:
//! - when openraft drops the results (it ended the session: a conflict, an error), the
//!   requests end too; otherwise HTTP/2 would go on pulling requests of the old session
//!   from the state the next session uses;
//! - a request that follows an entry this node has purged ends the stream: openraft purges a
//!   leader's log only up to where the replication it tracks has got (a probe or a stream
//!   starts at or after the purge point; a purge waits for what is in flight), so the request
//!   is from a session it has given up (a follower that lost its log, then installed a
//!   snapshot). Such a session reads nothing from the purged range and sends an empty
//!   request in its place, again and again, and its follower (holding the snapshot) accepts
//!   each one, so openraft would never take up its newer session: the follower would get
//!   nothing more. (Where a purge is still deleting, the read can instead return entries
//!   from later on, which would leave a gap after the request's previous entry: given up
//!   too.) openraft's heartbeats, and its lone request carrying a new commit index (whose
//!   previous entry is the last one the follower acknowledged, possibly below the purge
//!   point), are one-request sessions, sent as unary calls and never judged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::raft::GroupMessage;
use futures::FutureExt;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tonic::Streaming;

#[cfg(doc)]
use super::client::APPEND_MIN_BYTES_PER_SEC;
use super::client::{PeerClient, PeerError, work_time};
use super::wire::{self, AppendRequest, StreamResult};
use crate::NodeId;
use crate::log_store::PurgeMark;

/// How long a replication stream stays open with nothing to send.
pub const STREAM_IDLE: Duration = Duration::from_secs(1);

const RPC: &str = "StreamAppend";

/// How openraft opens a replication session: with nothing, with one request (a heartbeat), or
/// with a request and more to come.
pub enum Opening {
    Empty,
    Lone(AppendRequest),
    Stream(AppendRequest, BoxStream<'static, AppendRequest>),
}

/// Takes the first request of `input` and finds out whether more follow. openraft makes its
/// next request at once when it has more to send than one request carries: that one is kept.
pub async fn opening<S>(mut input: S) -> Opening
where
    S: Stream<Item = AppendRequest> + Send + Unpin + 'static,
{
    let Some(first) = input.next().await else {
        return Opening::Empty;
    };
    match input.next().now_or_never() {
        Some(None) => Opening::Lone(first),
        Some(Some(second)) => {
            Opening::Stream(first, futures::stream::iter([second]).chain(input).boxed())
        }
        None => Opening::Stream(first, input.boxed()),
    }
}

/// Whether `req` of a streamed session follows an entry below `purged` (this node's last
/// purged index), so that it needs entries at or below it: then it is from a replication
/// session openraft has given up (see the module doc).
pub fn given_up(req: &AppendRequest, purged: Option<u64>) -> bool {
    let Some(purged) = purged else {
        return false;
    };
    req.prev_log_id.is_none_or(|prev| prev.index < purged)
}

impl PeerClient<'_> {
    /// Streams `first` and then `rest` (all appends of `group`) to the peer; returns its
    /// results, in order. Each is due within `ttl` plus the work time of the appends up to
    /// its own. The stream is opened with `first` in hand, and closed after [`STREAM_IDLE`]
    /// with nothing from `rest`, when `rest` ends, when the results are dropped, or at a
    /// request of a given-up session ([`given_up`] with `purged`, this node's log's purge
    /// mark). `None`: `first` is such a request; nothing was sent.
    pub async fn stream_append<S>(
        &self,
        group: u64,
        to: NodeId,
        first: AppendRequest,
        rest: S,
        purged: PurgeMark,
        ttl: Duration,
    ) -> Result<Option<BoxStream<'static, Result<StreamResult, PeerError>>>, PeerError>
    where
        S: Stream<Item = AppendRequest> + Send + Unpin + 'static,
    {
        if given_up(&first, purged.get()) {
            return Ok(None);
        }
        let in_flight = Arc::new(InFlight::default());
        // The peer answers (sends its headers) once it has the first request whole.
        let (first_due_tx, first_due) = oneshot::channel::<Instant>();
        // Dropped with the results (or here, if the stream does not open): ends the requests.
        let (taken, dropped) = oneshot::channel::<()>();
        let ends = Ends { dropped, purged };
        let requests = requests(
            (group, to),
            first,
            rest,
            ends,
            in_flight.clone(),
            first_due_tx,
            ttl,
        );
        let answers = self.open(requests, first_due, ttl).await?;
        Ok(Some(self.results(answers, in_flight, taken)))
    }

    /// Opens the stream and waits for the peer's headers, until the first request's answer is
    /// due.
    async fn open(
        &self,
        requests: impl Stream<Item = GroupMessage> + Send + 'static,
        first_due: oneshot::Receiver<Instant>,
        ttl: Duration,
    ) -> Result<Streaming<GroupMessage>, PeerError> {
        let mut client = self.transport()?;
        let start = Instant::now();
        let opened = async {
            let answers = client.stream_append(requests);
            tokio::pin!(answers);
            // Until the first request is encoded its deadline is unknown: the RPC timeout
            // from now bounds that part.
            let due = tokio::select! {
                r = &mut answers => return Ok(r),
                due = first_due => due.unwrap_or_else(|_| Instant::now() + ttl),
                _ = tokio::time::sleep(ttl) => return Err(start + ttl),
            };
            tokio::time::timeout_at(due, answers).await.map_err(|_| due)
        };
        match opened.await {
            Err(due) => Err(self
                .call_to(RPC)
                .timeout(due.saturating_duration_since(start))),
            Ok(Err(status)) => Err(self.call_to(RPC).status(status)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// The peer's results, each read by its deadline; the stream ends after the first error.
    /// `taken` lives as long as the results are read (see [`Ends`]).
    fn results(
        &self,
        answers: Streaming<GroupMessage>,
        in_flight: Arc<InFlight>,
        taken: oneshot::Sender<()>,
    ) -> BoxStream<'static, Result<StreamResult, PeerError>> {
        let peer = self.call_to(RPC);
        futures::stream::unfold(Some((answers, taken)), move |state| {
            let (in_flight, peer) = (in_flight.clone(), peer.clone());
            async move {
                let (mut answers, taken) = state?;
                let next = match next_answer(&mut answers, &in_flight).await {
                    Ok(next) => next?,
                    Err(after) => return Some((Err(peer.timeout(after)), None)),
                };
                let msg = match next {
                    Ok(msg) => msg,
                    Err(status) => return Some((Err(peer.status(status)), None)),
                };
                in_flight.pop();
                match wire::decode_stream_result(&msg.payload) {
                    Ok(Ok(result)) => Some((Ok(result), Some((answers, taken)))),
                    Ok(Err(fatal)) => Some((Err(peer.refused(fatal)), None)),
                    Err(e) => Some((Err(peer.undecodable(e)), None)),
                }
            }
        })
        .boxed()
    }
}

/// What ends a stream's requests besides idleness: its results dropped (the sender half of
/// `dropped` lives with them), or a request of a given-up session (by `purged`).
struct Ends {
    dropped: oneshot::Receiver<()>,
    purged: PurgeMark,
}

/// The requests of a stream, encoded as they come: `first`, then each of `rest` until it
/// ends, sends nothing for [`STREAM_IDLE`], or [`Ends`] says so. Each is recorded in
/// `in_flight` with its deadline; the first one's also goes to `first_due`. Once they end,
/// `rest` (openraft's request generator) is dropped. Each is a Raft request of `group` for node `to`.
fn requests<S>(
    (group, to): (u64, NodeId),
    first: AppendRequest,
    rest: S,
    ends: Ends,
    in_flight: Arc<InFlight>,
    first_due: oneshot::Sender<Instant>,
    ttl: Duration,
) -> impl Stream<Item = GroupMessage> + Send + 'static
where
    S: Stream<Item = AppendRequest> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (Some(first), rest, ends, Some(first_due)),
        move |(first, mut rest, mut ends, mut first_due)| {
            let in_flight = in_flight.clone();
            async move {
                let req = match first {
                    Some(r) => r,
                    None => {
                        let next = tokio::select! {
                            biased;
                            // The results were dropped: openraft ended this session.
                            _ = &mut ends.dropped => return None,
                            next = tokio::time::timeout(STREAM_IDLE, rest.next()) => next,
                        };
                        match next {
                            Ok(Some(r)) if !given_up(&r, ends.purged.get()) => r,
                            // Idle, openraft ended the session, or it gave it up: close
                            // our side.
                            _ => return None,
                        }
                    }
                };
                let payload = match wire::encode_request(&req) {
                    Ok(p) => p,
                    Err(e) => {
                        // Nothing more can go on this stream: close our side, as when idle;
                        // openraft opens a new one.
                        tracing::error!(group, error = %e, "ending a replication stream");
                        return None;
                    }
                };
                let due = in_flight.push(payload.len(), ttl);
                if let Some(tx) = first_due.take() {
                    let _ = tx.send(due);
                }
                Some((
                    wire::raft_message(group, to, payload),
                    (None, rest, ends, first_due),
                ))
            }
        },
    )
}

/// The next answer, read by the oldest awaited answer's deadline (`Err`: how long it was
/// given). With none awaited, waits for the next request to be sent or an answer to come.
async fn next_answer(
    answers: &mut Streaming<GroupMessage>,
    in_flight: &InFlight,
) -> Result<Option<Result<GroupMessage, tonic::Status>>, Duration> {
    loop {
        match in_flight.oldest() {
            Some(due) => {
                let given = due.saturating_duration_since(Instant::now());
                return tokio::time::timeout_at(due, answers.next())
                    .await
                    .map_err(|_| given);
            }
            None => tokio::select! {
                _ = in_flight.added.notified() => continue,
                next = answers.next() => return Ok(next),
            },
        }
    }
}

/// When the answers to the requests of a replication stream that await theirs are due,
/// oldest first, and a wake-up for the answer reader when one is added.
#[derive(Default)]
struct InFlight {
    // Short critical sections (a push, a pop, a peek), no await inside.
    due: Mutex<Due>,
    added: Notify,
}

#[derive(Default)]
struct Due {
    /// When each awaited answer is due.
    answers: VecDeque<Instant>,
    /// When the follower should be done with the requests sent so far, at the slowest
    /// expected rate (each request's work starts once the previous one's is done).
    work_done: Option<Instant>,
}

impl InFlight {
    /// Records a request of `bytes` sent now: its answer is due within `ttl` after the
    /// follower has had time for it and every request before it. Returns when.
    fn push(&self, bytes: usize, ttl: Duration) -> Instant {
        let now = Instant::now();
        let mut d = self.due.lock().unwrap();
        let start = d.work_done.map_or(now, |w| w.max(now));
        let done = start + work_time(bytes);
        d.work_done = Some(done);
        d.answers.push_back(done + ttl);
        drop(d);
        self.added.notify_one();
        done + ttl
    }
    fn oldest(&self) -> Option<Instant> {
        self.due.lock().unwrap().answers.front().copied()
    }
    fn pop(&self) {
        self.due.lock().unwrap().answers.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use fjord_meta::MetaCommand;
    use openraft::alias::{EntryOf, VoteOf};
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::{Request, TypeConfig};

    fn log_id(index: u64) -> openraft::alias::LogIdOf<TypeConfig> {
        openraft::testing::log_id::<TypeConfig>(1, 1, index)
    }

    /// A request after `prev` carrying `entries` entries.
    fn append(prev: Option<u64>, entries: u64) -> AppendRequest {
        let first = prev.map_or(1, |p| p + 1);
        AppendRequest {
            vote: VoteOf::<TypeConfig>::new_committed(1, 1),
            prev_log_id: prev.map(log_id),
            leader_commit: None,
            entries: (first..first + entries)
                .map(|i| {
                    EntryOf::<TypeConfig>::new_normal(
                        log_id(i),
                        Request::Meta(MetaCommand::AllocateProducerId),
                    )
                })
                .collect(),
        }
    }

    /// openraft's request generator as the transport sees it: `ready` requests at once, then
    /// one more each time it is polled, forever; `dropped` is set when it is dropped.
    fn generator(
        ready: Vec<AppendRequest>,
        then: AppendRequest,
        dropped: Arc<AtomicBool>,
    ) -> BoxStream<'static, AppendRequest> {
        struct OnDrop(Arc<AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(dropped);
        futures::stream::iter(ready)
            .chain(futures::stream::repeat_with(move || {
                let _ = &guard;
                then.clone()
            }))
            .boxed()
    }

    /// A request's position and size (requests have no `PartialEq`).
    fn shape(r: &AppendRequest) -> (Option<u64>, usize) {
        (r.prev_log_id.map(|l| l.index), r.entries.len())
    }

    /// A session's requests as the transport sends them: `first`, then what [`generator`]
    /// makes of `ready` and `then`; with the sender whose drop stands for the results
    /// dropped, and the flag set once openraft's generator is dropped.
    fn session(
        first: AppendRequest,
        ready: Vec<AppendRequest>,
        then: AppendRequest,
        purged: PurgeMark,
    ) -> (
        impl Stream<Item = GroupMessage>,
        oneshot::Sender<()>,
        Arc<AtomicBool>,
    ) {
        let dropped = Arc::new(AtomicBool::new(false));
        let rest = generator(ready, then, dropped.clone());
        let (taken, gone) = oneshot::channel::<()>();
        let ends = Ends {
            dropped: gone,
            purged,
        };
        let (due, _) = oneshot::channel();
        let in_flight = Arc::new(InFlight::default());
        let reqs = requests((7, 2), first, rest, ends, in_flight, due, STREAM_IDLE);
        (reqs, taken, dropped)
    }

    fn sent(msg: &GroupMessage) -> AppendRequest {
        super::super::wire::decode_append(&msg.payload).unwrap()
    }

    #[tokio::test]
    async fn every_request_openraft_has_ready_at_the_opening_is_sent() {
        let reqs = vec![
            append(Some(0), 64),
            append(Some(64), 64),
            append(Some(128), 3),
        ];
        match opening(futures::stream::iter(reqs.clone())).await {
            Opening::Stream(first, rest) => {
                let mut got = vec![first];
                got.extend(rest.collect::<Vec<_>>().await);
                let shapes = |v: &[AppendRequest]| v.iter().map(shape).collect::<Vec<_>>();
                assert_eq!(shapes(&got), shapes(&reqs));
            }
            _ => panic!("three requests open a stream"),
        }
        assert!(matches!(
            opening(futures::stream::iter([append(Some(5), 0)])).await,
            Opening::Lone(_)
        ));
        assert!(matches!(
            opening(futures::stream::empty()).await,
            Opening::Empty
        ));
    }

    #[tokio::test]
    async fn the_requests_end_and_release_openraft_when_the_results_are_dropped() {
        let (reqs, taken, dropped) = session(
            append(Some(9), 1),
            vec![],
            append(Some(10), 1),
            PurgeMark::default(),
        );
        let mut reqs = std::pin::pin!(reqs);
        for _ in 0..3 {
            assert!(reqs.next().await.is_some());
        }
        drop(taken);
        assert!(
            reqs.next().await.is_none(),
            "requests went on after the results were dropped"
        );
        assert!(
            dropped.load(Ordering::SeqCst),
            "openraft's generator was kept"
        );
    }

    #[tokio::test]
    async fn a_given_up_session_ends_at_its_first_request_that_needs_a_purged_entry() {
        let purged = PurgeMark::default();
        assert!(!given_up(&append(Some(3), 0), purged.get()));
        assert!(!given_up(&append(None, 2), purged.get()));
        purged.raise(100);
        assert!(given_up(&append(Some(50), 0), purged.get()));
        assert!(given_up(&append(None, 0), purged.get()));
        // Entries from a read of a range a purge is still deleting: a gap after 50.
        assert!(given_up(&append(Some(50), 2), purged.get()));
        assert!(!given_up(&append(Some(100), 0), purged.get()));
        assert!(!given_up(&append(Some(100), 3), purged.get()));
        assert!(!given_up(&append(Some(120), 0), purged.get()));

        // A session sends 61..=70; the leader gives it up and purges through 100; the
        // session, reading nothing from there, sends empty requests after 70 in their place
        // (openraft's pipeline with nothing read), forever.
        let purged = PurgeMark::default();
        purged.raise(60);
        let (reqs, _taken, dropped) = session(
            append(Some(60), 4),
            vec![append(Some(64), 6)],
            append(Some(70), 0),
            purged.clone(),
        );
        let mut reqs = std::pin::pin!(reqs);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(shape(&sent(&reqs.next().await.unwrap())));
        }
        assert_eq!(got, vec![(Some(60), 4), (Some(64), 6), (Some(70), 0)]);
        purged.raise(100);
        assert!(reqs.next().await.is_none(), "a given-up session went on");
        assert!(
            dropped.load(Ordering::SeqCst),
            "openraft's generator was kept"
        );
    }
}
