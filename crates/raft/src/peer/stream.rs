//! The sending side of pipelined replication (`RaftTransport.StreamAppend`): a group's
//! appends to one follower go out on one HTTP/2 stream as openraft produces them, without
//! waiting for the answers, which come back in order.
//!
//! Each answer is due within the RPC timeout after the follower has had time, at
//! [`APPEND_MIN_BYTES_PER_SEC`], for its request and every request before it ([`InFlight`]);
//! a late one ends the stream with an error (a stalled or cut-off follower looks the same as
//! with one RPC at a time). The stream closes after [`STREAM_IDLE`] with nothing to send, so
//! an idle group holds no stream on its peers' connections.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_proto::raft::GroupMessage;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tonic::Streaming;

#[cfg(doc)]
use super::client::APPEND_MIN_BYTES_PER_SEC;
use super::client::{PeerClient, PeerError, work_time};
use super::wire::{self, AppendRequest, StreamResult};

/// How long a replication stream stays open with nothing to send.
pub const STREAM_IDLE: Duration = Duration::from_secs(1);

const RPC: &str = "StreamAppend";

impl PeerClient<'_> {
    /// Streams `first` and then `rest` (all appends of `group`) to the peer; returns its
    /// results, in order. Each is due within `ttl` plus the work time of the appends up to
    /// its own. The stream is opened with `first` in hand, and closed after [`STREAM_IDLE`]
    /// with nothing from `rest`, or when `rest` ends.
    pub async fn stream_append<S>(
        &self,
        group: u64,
        first: AppendRequest,
        rest: S,
        ttl: Duration,
    ) -> Result<BoxStream<'static, Result<StreamResult, PeerError>>, PeerError>
    where
        S: Stream<Item = AppendRequest> + Send + Unpin + 'static,
    {
        let in_flight = Arc::new(InFlight::default());
        // The peer answers (sends its headers) once it has the first request whole.
        let (first_due_tx, first_due) = oneshot::channel::<Instant>();
        let requests = requests(group, first, rest, in_flight.clone(), first_due_tx, ttl);
        let answers = self.open(requests, first_due, ttl).await?;
        Ok(self.results(answers, in_flight))
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
    fn results(
        &self,
        answers: Streaming<GroupMessage>,
        in_flight: Arc<InFlight>,
    ) -> BoxStream<'static, Result<StreamResult, PeerError>> {
        let peer = self.call_to(RPC);
        futures::stream::unfold(Some(answers), move |answers| {
            let (in_flight, peer) = (in_flight.clone(), peer.clone());
            async move {
                let mut answers = answers?;
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
                    Ok(Ok(result)) => Some((Ok(result), Some(answers))),
                    Ok(Err(fatal)) => Some((Err(peer.refused(fatal)), None)),
                    Err(e) => Some((Err(peer.undecodable(e)), None)),
                }
            }
        })
        .boxed()
    }
}

/// The requests of a stream, encoded as they come: `first`, then each of `rest` until it
/// ends or sends nothing for [`STREAM_IDLE`]. Each is recorded in `in_flight` with its
/// deadline; the first one's also goes to `first_due`.
fn requests<S>(
    group: u64,
    first: AppendRequest,
    rest: S,
    in_flight: Arc<InFlight>,
    first_due: oneshot::Sender<Instant>,
    ttl: Duration,
) -> impl Stream<Item = GroupMessage> + Send + 'static
where
    S: Stream<Item = AppendRequest> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (Some(first), rest, Some(first_due)),
        move |(first, mut rest, mut first_due)| {
            let in_flight = in_flight.clone();
            async move {
                let req = match first {
                    Some(r) => r,
                    None => match tokio::time::timeout(STREAM_IDLE, rest.next()).await {
                        Ok(Some(r)) => r,
                        // Idle, or openraft ended the session: close our side.
                        _ => return None,
                    },
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
                Some((wire::group_message(group, payload), (None, rest, first_due)))
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
