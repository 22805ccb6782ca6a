//! The in-flight window of one partition's idempotent producer: which batch goes out next,
//! under which producer id and base sequence, and what each answer means for it and for the
//! batches around it. Pure: it takes events ([`Sequencer::push`],
//! [`Sequencer::on_producer_id`], [`Sequencer::on_answer`]) and returns [`Action`]s, which the
//! partition task in [`crate::producer`] performs.
//!
//! # What the server does (`fjord_storage::partition`)
//! Every replica decides at apply, in log order: a batch whose `(producer, base sequence,
//! record count)` matches one of the producer's last 5 appended batches is a *duplicate*
//! (answered with the original offset); else one whose base sequence is the producer's last
//! one plus its record count is *appended*; else it is refused as *out of order* (a sequence
//! gap, FAILED_PRECONDITION). A producer the partition does not know is accepted at any
//! sequence. Produce RPCs are handled concurrently, so two batches sent back to back may
//! reach the log in either order.
//!
//! # The rules
//! 1. **Window.** Batches get consecutive sequences when first sent; at most
//!    `max_in_flight` batches, counted from the oldest one not yet resolved, are sent and
//!    unresolved at once. So when batch `b` is appended, at most `max_in_flight - 1 ≤ 4` of
//!    the producer's batches follow it in the log, and a retry of `b` is always recognised as
//!    a duplicate, never appended twice.
//! 2. **The first batch of a session goes alone.** Until one batch under a producer id is
//!    acknowledged, the partition may not know the id, and an unknown id is accepted at any
//!    sequence: a second batch overtaking the first would be appended ahead of it.
//! 3. **A retry keeps its producer id and sequence**: retries within one send happen in
//!    [`crate::client::Client::partition_call`]; sends again (rule 5) reuse the entry's.
//! 4. **Acknowledgements in order.** An acknowledged batch is reported only once every batch
//!    before it is resolved, so a partition's records are acknowledged in send order, at
//!    increasing offsets.
//! 5. **A gap behind an unresolved batch is retryable.** A sequence gap proves the batch is
//!    not in the log *yet* (had an earlier attempt appended it, this one would be a
//!    duplicate, by rule 1); an earlier attempt of unknown outcome may still get there (rule
//!    8). If the batch was sent while an earlier batch of the window was not yet
//!    acknowledged, the gap may be that batch not being appended *yet* (it was overtaken, or
//!    it failed and is being retried), even if its acknowledgement has arrived since: the
//!    batch is *parked*. Parked batches are sent again, in sequence order, once every batch
//!    before the first of them is acknowledged; new batches wait meanwhile. Each round
//!    acknowledges the oldest, so a batch is parked at most `max_in_flight` times
//!    ([`MAX_PARKS`] guards the argument).
//! 6. **A gap for a batch sent with every earlier batch acknowledged is fatal** for that
//!    batch ([`ClientError::OutOfOrderSequence`]): the server expects a sequence the client
//!    cannot know (it lost or forgot the producer's state).
//! 7. **Any failure ends the session.** When a batch fails for good (a fatal error, retries
//!    exhausted, an unknown outcome that retries could not resolve, rule 6), the batches
//!    after it can never be appended under their sequences. Nothing more is sent under the
//!    producer id; once no send is in flight the window is settled: acknowledged batches are
//!    reported, batches known not to be in the log (parked, no attempt of unknown outcome)
//!    move to a fresh producer id in their order, and batches whose outcome stayed unknown
//!    fail with [`ClientError::Timeout`]. A parked batch behind an acknowledged one cannot
//!    keep its place and fails as out of order.
//! 8. **An attempt without an answer may still be appended, at any later time.** A timed-out
//!    attempt may be waiting in a server handler (its turn in the partition's order, a lease
//!    confirmation, a hibernated group's restart) or sit in a leader's log uncommitted, and
//!    reach the log after later attempts were answered, even after its send gave up. So a
//!    later refusal of the batch (a gap, not the leader) does not prove it is not in the log,
//!    and only an acknowledgement settles it. Under its own producer id and sequence this is
//!    harmless: the late attempt and the batch's other sends are one batch to the server, and
//!    once the window has moved past the batch a late attempt is out of order. Under a fresh
//!    id it would be a second copy: a parked batch with an attempt of unknown outcome is
//!    never moved (rule 7) but fails with [`ClientError::Timeout`], as Kafka's idempotent
//!    producer treats an out-of-order sequence after an unknown outcome. Nothing fences the
//!    old id, so a batch reported with an unknown outcome may land after later batches; all
//!    others are in the log in send order, once.
//!
//! Without idempotence there are no sequences to keep order: one batch at a time.

use std::collections::VecDeque;

use crate::config::MAX_IN_FLIGHT_BATCHES_LIMIT;
use crate::error::ClientError;

/// Times one batch may be parked before the client stops believing its predecessors will
/// close the gap. Rule 5 bounds it by the window size; this is the safety net.
pub(crate) const MAX_PARKS: u32 = 2 * MAX_IN_FLIGHT_BATCHES_LIMIT as u32 + 2;

/// Batches are numbered in push order; the number never changes, even when the batch moves
/// to a new producer id.
pub(crate) type BatchId = u64;

/// What the partition task must do.
#[derive(Debug)]
pub(crate) enum Action<T> {
    /// Send batch `id` (its payload: [`Sequencer::batch`]) with this producer id and base
    /// sequence, retrying as usual, and report with [`Sequencer::on_answer`].
    Send {
        id: BatchId,
        producer_id: u64,
        base_sequence: u32,
    },
    /// Get a producer id: a fresh one, or the producer's shared one. Report with
    /// [`Sequencer::on_producer_id`].
    RequestProducerId { fresh: bool },
    /// The batch is appended; its records have offsets `base_offset..`.
    Ack { batch: T, base_offset: u64 },
    /// The batch failed.
    Fail { batch: T, error: ClientError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    /// Nothing sent yet: the producer's shared id will do.
    Unset,
    /// A producer id was asked for.
    Requesting { fresh: bool },
    Active {
        producer_id: u64,
        next_sequence: u32,
        /// A batch under this id was acknowledged: the partition knows the id (rule 2).
        established: bool,
    },
    /// The next batches need a new producer id, once the window is empty.
    NeedsFresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    /// Refused for a gap behind an unresolved batch: not in the log yet, to be sent again
    /// (an earlier attempt may still be on its way: `maybe_appended`, rule 8).
    Parked,
    Acked(u64),
    /// Failed with the entry's `error`; reported in order, like acknowledgements.
    Failed,
}

#[derive(Debug)]
struct Entry<T> {
    id: BatchId,
    /// `None` once handed back in an `Ack` or `Fail`.
    batch: Option<T>,
    count: u32,
    producer_id: u64,
    base_sequence: u32,
    state: State,
    /// Some attempt's outcome was unknown: it may be in the log, or get there later (rule 8).
    /// A refusal of a later attempt does not clear it.
    maybe_appended: bool,
    /// This send went out while an earlier batch of the window was unacknowledged, so a gap
    /// may be that batch arriving late (rule 5).
    sent_behind: bool,
    parks: u32,
    /// Why it failed, when `state` is `Failed`.
    error: Option<ClientError>,
}

#[derive(Debug)]
struct Unsent<T> {
    id: BatchId,
    batch: T,
    count: u32,
}

/// One partition's window of batches (see the module's rules).
///
/// Invariants ([`Sequencer::validate`]): the window holds at most `max_in_flight` entries,
/// all under one producer id with consecutive sequences ending at the session's next one;
/// ids increase along the window and then along the unsent queue; a failed entry stays in
/// the window only while the session drains.
#[derive(Debug)]
pub(crate) struct Sequencer<T> {
    max_in_flight: usize,
    idempotent: bool,
    session: Session,
    next_id: BatchId,
    /// Batches not sent yet, in order; they get sequences when sent.
    unsent: VecDeque<Unsent<T>>,
    /// Sent batches from the oldest unresolved one, in sequence order.
    window: VecDeque<Entry<T>>,
    /// The session ended (rule 7): nothing is sent until the window settles.
    draining: bool,
    out: Vec<Action<T>>,
}

impl<T> Sequencer<T> {
    /// `max_in_flight` is clamped to `1..=`[`MAX_IN_FLIGHT_BATCHES_LIMIT`], and to 1 without
    /// idempotence.
    pub(crate) fn new(max_in_flight: usize, idempotent: bool) -> Self {
        let max_in_flight = if idempotent {
            max_in_flight.clamp(1, MAX_IN_FLIGHT_BATCHES_LIMIT)
        } else {
            1
        };
        Sequencer {
            max_in_flight,
            idempotent,
            session: if idempotent {
                Session::Unset
            } else {
                Session::Active {
                    producer_id: 0,
                    next_sequence: 0,
                    established: true,
                }
            },
            next_id: 0,
            unsent: VecDeque::new(),
            window: VecDeque::new(),
            draining: false,
            out: Vec::new(),
        }
    }

    /// Starts with a fresh producer id instead of the producer's shared one (a task that
    /// replaces one that died: the shared id's sequences on this partition are unknown).
    /// Without idempotence there is no id to change.
    pub(crate) fn start_fresh(&mut self) {
        if self.idempotent && self.session == Session::Unset {
            self.session = Session::NeedsFresh;
        }
    }

    /// Queues a batch of `count` records (at least 1) to be sent after those queued before.
    pub(crate) fn push(&mut self, batch: T, count: u32) -> BatchId {
        debug_assert!(count > 0, "a batch has records");
        let id = self.next_id;
        self.next_id += 1;
        self.unsent.push_back(Unsent { id, batch, count });
        id
    }

    /// Ids below this were pushed.
    pub(crate) fn pushed(&self) -> BatchId {
        self.next_id
    }

    /// The payload of a sent, unresolved batch.
    pub(crate) fn batch(&self, id: BatchId) -> Option<&T> {
        self.window
            .iter()
            .find(|e| e.id == id)
            .and_then(|e| e.batch.as_ref())
    }

    /// Whether a batch pushed now would be sent at once (so it is worth cutting one).
    pub(crate) fn accepting(&self) -> bool {
        if !self.unsent.is_empty() || self.draining {
            return false;
        }
        match self.session {
            Session::Active { established, .. } => self.window_has_room(established),
            Session::Unset | Session::NeedsFresh => self.window.is_empty(),
            Session::Requesting { .. } => false,
        }
    }

    /// Whether a pushed batch waits to be sent.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Nothing queued, in flight or waited for.
    pub(crate) fn is_idle(&self) -> bool {
        self.unsent.is_empty()
            && self.window.is_empty()
            && !matches!(self.session, Session::Requesting { .. })
    }

    /// The oldest batch whose result was not handed back yet.
    pub(crate) fn oldest_unresolved(&self) -> Option<BatchId> {
        let in_window = self.window.iter().find(|e| e.batch.is_some()).map(|e| e.id);
        in_window.or_else(|| self.unsent.front().map(|u| u.id))
    }

    /// Reports the producer id asked for with `RequestProducerId`.
    pub(crate) fn on_producer_id(&mut self, result: Result<u64, ClientError>) {
        let Session::Requesting { fresh } = self.session else {
            debug_assert!(false, "a producer id nobody asked for");
            return;
        };
        match result {
            Ok(producer_id) => {
                self.session = Session::Active {
                    producer_id,
                    next_sequence: 0,
                    established: false,
                }
            }
            Err(error) => {
                // As a send would: the batch waiting for the id fails, the next one asks again.
                self.session = if fresh {
                    Session::NeedsFresh
                } else {
                    Session::Unset
                };
                if let Some(u) = self.unsent.pop_front() {
                    self.out.push(Action::Fail {
                        batch: u.batch,
                        error,
                    });
                }
            }
        }
    }

    /// Reports the end of a `Send`: the base offset, or the error retries ended on.
    /// `maybe_appended`: some attempt's outcome was unknown.
    pub(crate) fn on_answer(
        &mut self,
        id: BatchId,
        result: Result<u64, ClientError>,
        maybe_appended: bool,
    ) {
        let Some(i) = self
            .window
            .iter()
            .position(|e| e.id == id && e.state == State::InFlight)
        else {
            debug_assert!(false, "an answer for batch {id}, which is not in flight");
            return;
        };
        let idempotent = self.idempotent;
        let draining = self.draining;
        let e = &mut self.window[i];
        e.maybe_appended |= maybe_appended;
        match result {
            Ok(base_offset) => {
                e.state = State::Acked(base_offset);
                if let Session::Active {
                    producer_id,
                    established,
                    ..
                } = &mut self.session
                    && *producer_id == e.producer_id
                {
                    *established = true;
                }
            }
            Err(ClientError::OutOfOrderSequence(_))
                if idempotent && (e.sent_behind || draining) =>
            {
                // Rule 5: this attempt is not in the log; an earlier batch is not (yet)
                // either. An earlier attempt of this batch whose outcome is unknown may still
                // be on its way: `maybe_appended` stays (rule 8).
                if e.parks < MAX_PARKS {
                    e.state = State::Parked;
                    e.parks += 1;
                } else {
                    let error = if e.maybe_appended {
                        still_on_its_way("refused for a sequence gap too many times")
                    } else {
                        ClientError::OutOfOrderSequence(format!(
                            "batch refused for a sequence gap {MAX_PARKS} times while earlier \
                             batches were in flight"
                        ))
                    };
                    self.fail(i, error);
                }
            }
            Err(error) => {
                // Rules 6 and 7. A gap with every earlier batch acknowledged means the server
                // expects a sequence that no attempt of this batch carries, so none of them
                // will be appended either.
                let unknown =
                    e.maybe_appended && !matches!(error, ClientError::OutOfOrderSequence(_));
                let error = if unknown {
                    unknown_outcome(error)
                } else {
                    error
                };
                self.fail(i, error);
            }
        }
    }

    /// The actions the state calls for now: acknowledgements due, sends, a producer id.
    pub(crate) fn poll_actions(&mut self) -> Vec<Action<T>> {
        self.settle();
        self.debug_validate();
        std::mem::take(&mut self.out)
    }

    fn fail(&mut self, i: usize, error: ClientError) {
        let e = &mut self.window[i];
        e.state = State::Failed;
        e.error = Some(error);
        if self.idempotent {
            self.draining = true;
        }
    }

    fn window_has_room(&self, established: bool) -> bool {
        let limit = if established { self.max_in_flight } else { 1 };
        self.window.len() < limit && !self.window.iter().any(|e| e.state == State::Parked)
    }

    fn settle(&mut self) {
        self.pop_resolved();
        // A parked batch behind an acknowledged one: the server took the later batch without
        // the earlier (it had forgotten the producer). Order can no longer be kept (rule 7).
        if !self.draining && self.parked_before_acked() {
            self.draining = true;
        }
        if self.draining {
            if self.window.iter().any(|e| e.state == State::InFlight) {
                return;
            }
            self.settle_drained();
        }
        self.resend_parked();
        self.send_new();
    }

    /// Hands back the resolved batches at the front of the window, in order.
    fn pop_resolved(&mut self) {
        while let Some(front) = self.window.front() {
            if matches!(front.state, State::InFlight | State::Parked) {
                break;
            }
            let e = self.window.pop_front().expect("front exists");
            self.hand_back(e);
        }
    }

    fn hand_back(&mut self, e: Entry<T>) {
        let Some(batch) = e.batch else { return };
        match (e.state, e.error) {
            (State::Acked(base_offset), _) => self.out.push(Action::Ack { batch, base_offset }),
            (State::Failed, Some(error)) => self.out.push(Action::Fail { batch, error }),
            (state, error) => unreachable!("handing back a batch in state {state:?} ({error:?})"),
        }
    }

    fn parked_before_acked(&self) -> bool {
        let first_parked = self.window.iter().position(|e| e.state == State::Parked);
        let last_acked = self
            .window
            .iter()
            .rposition(|e| matches!(e.state, State::Acked(_)));
        matches!((first_parked, last_acked), (Some(p), Some(a)) if p < a)
    }

    /// Rule 7, once nothing is in flight: settles every entry and starts over under a new id.
    fn settle_drained(&mut self) {
        let entries: Vec<Entry<T>> = self.window.drain(..).collect();
        let last_acked = entries
            .iter()
            .rposition(|e| matches!(e.state, State::Acked(_)));
        let mut requeue = Vec::new();
        for (i, mut e) in entries.into_iter().enumerate() {
            match e.state {
                State::Acked(_) | State::Failed => self.hand_back(e),
                State::Parked if e.maybe_appended => {
                    // Rule 8: an earlier attempt may still be appended under the old id; sent
                    // under a new one, the batch could be appended twice.
                    e.state = State::Failed;
                    e.error = Some(still_on_its_way(
                        "refused for a sequence gap when the producer id's session ended",
                    ));
                    self.hand_back(e);
                }
                State::Parked if last_acked.is_some_and(|a| a > i) => {
                    e.state = State::Failed;
                    e.error = Some(ClientError::OutOfOrderSequence(
                        "a later batch of this partition was appended before this one \
                         (the server had lost track of the producer); it was not appended"
                            .into(),
                    ));
                    self.hand_back(e);
                }
                State::Parked => requeue.push(Unsent {
                    id: e.id,
                    batch: e.batch.expect("an unresolved batch has its payload"),
                    count: e.count,
                }),
                State::InFlight => unreachable!("settled only with nothing in flight"),
            }
        }
        for u in requeue.into_iter().rev() {
            self.unsent.push_front(u);
        }
        self.session = Session::NeedsFresh;
        self.draining = false;
    }

    /// Rule 5: once every batch before the first parked one is acknowledged, the run of
    /// parked batches from there goes out again, in order.
    fn resend_parked(&mut self) {
        if self.draining || self.window.front().map(|e| e.state) != Some(State::Parked) {
            return;
        }
        for (i, e) in self.window.iter_mut().enumerate() {
            if e.state != State::Parked {
                break;
            }
            e.state = State::InFlight;
            e.sent_behind = i > 0;
            self.out.push(Action::Send {
                id: e.id,
                producer_id: e.producer_id,
                base_sequence: e.base_sequence,
            });
        }
    }

    fn send_new(&mut self) {
        while !self.draining
            && let Some(next) = self.unsent.front()
        {
            match self.session {
                Session::Unset | Session::NeedsFresh => {
                    if self.window.is_empty() {
                        let fresh = self.session == Session::NeedsFresh;
                        self.session = Session::Requesting { fresh };
                        self.out.push(Action::RequestProducerId { fresh });
                    }
                    return;
                }
                Session::Requesting { .. } => return,
                Session::Active {
                    producer_id,
                    next_sequence,
                    established,
                } => {
                    if !self.window_has_room(established) {
                        return;
                    }
                    let after = if self.idempotent {
                        match next_sequence.checked_add(next.count) {
                            Some(after) => after,
                            None => {
                                // Sequences would wrap: a new id, once this one's batches
                                // are all resolved.
                                if self.window.is_empty() {
                                    self.session = Session::NeedsFresh;
                                    continue;
                                }
                                return;
                            }
                        }
                    } else {
                        0
                    };
                    let u = self.unsent.pop_front().expect("front exists");
                    // Acknowledged batches at the front were handed back: anything still in
                    // the window is unacknowledged, or behind an unacknowledged one.
                    let sent_behind = !self.window.is_empty();
                    self.window.push_back(Entry {
                        id: u.id,
                        batch: Some(u.batch),
                        count: u.count,
                        producer_id,
                        base_sequence: next_sequence,
                        state: State::InFlight,
                        maybe_appended: false,
                        sent_behind,
                        parks: 0,
                        error: None,
                    });
                    self.session = Session::Active {
                        producer_id,
                        next_sequence: after,
                        established,
                    };
                    self.out.push(Action::Send {
                        id: u.id,
                        producer_id,
                        base_sequence: next_sequence,
                    });
                }
            }
        }
    }

    /// Checks the invariants; one message per broken fact.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.window.len() > self.max_in_flight {
            return Err(format!(
                "{} batches in the window, limit {}",
                self.window.len(),
                self.max_in_flight
            ));
        }
        let ids = self
            .window
            .iter()
            .map(|e| e.id)
            .chain(self.unsent.iter().map(|u| u.id));
        let mut prev: Option<BatchId> = None;
        for id in ids {
            if prev.is_some_and(|p| p >= id) {
                return Err(format!("batch ids out of order: {prev:?} then {id}"));
            }
            prev = Some(id);
        }
        if !self.draining && self.window.iter().any(|e| e.state == State::Failed) {
            return Err("a failed batch in the window outside a drain".into());
        }
        if self.idempotent {
            for w in self.window.iter().collect::<Vec<_>>().windows(2) {
                if w[1].producer_id != w[0].producer_id {
                    return Err("two producer ids in one window".into());
                }
                if Some(w[1].base_sequence) != w[0].base_sequence.checked_add(w[0].count) {
                    return Err(format!(
                        "sequences not consecutive: {}+{} then {}",
                        w[0].base_sequence, w[0].count, w[1].base_sequence
                    ));
                }
            }
            if let (
                Some(last),
                Session::Active {
                    producer_id,
                    next_sequence,
                    ..
                },
            ) = (self.window.back(), self.session)
                && (last.producer_id != producer_id
                    || last.base_sequence.checked_add(last.count) != Some(next_sequence))
            {
                return Err("the session's next sequence does not follow the window".into());
            }
        }
        Ok(())
    }

    fn debug_validate(&self) {
        debug_assert_eq!(self.validate(), Ok(()), "sequencer invariants");
    }
}

/// The error of a parked batch that cannot be sent again under its producer id while an
/// earlier attempt of it, of unknown outcome, may still be appended (rule 8).
fn still_on_its_way(why: &str) -> ClientError {
    ClientError::Timeout(format!(
        "an earlier attempt of the batch timed out and may still be appended; the last one \
         was {why}, so it is not sent again under a new producer id"
    ))
}

/// The error of a batch that may have been appended although its last attempt failed.
///
/// A later attempt's refusal speaks for that attempt only: an earlier attempt of unknown
/// outcome (a timeout, a lost connection) may be in the log all the same. So every error
/// becomes a timeout (outcome unknown), the definite-looking ones too: a NOT_FOUND for the
/// topic from a node whose metadata is behind, a not-leader, a full disk, a fenced producer,
/// an INVALID_ARGUMENT (the topic's record limit may have been lowered since the earlier
/// attempt went in), a client configuration error (an unusable leader hint).
fn unknown_outcome(error: ClientError) -> ClientError {
    if error.is_outcome_unknown() {
        error
    } else {
        ClientError::Timeout(format!(
            "an earlier attempt may have appended the batch; the last one failed: {error}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_after_an_unknown_outcome_is_an_unknown_outcome() {
        // The refusal covers its own attempt only: an earlier, timed-out one may be in the log.
        let e = unknown_outcome(ClientError::DiskFull("node 1 is low on space".into()));
        assert!(e.is_outcome_unknown(), "{e:?}");
        // An earlier attempt may have gone in before the topic's limit was lowered.
        let e = unknown_outcome(ClientError::InvalidArgument("too big".into()));
        assert!(e.is_outcome_unknown(), "{e:?}");
        let e = unknown_outcome(ClientError::Config("leader hint without a port".into()));
        assert!(e.is_outcome_unknown(), "{e:?}");
    }

    #[test]
    fn a_definite_refusal_after_an_unknown_outcome_is_an_unknown_outcome() {
        // A node whose metadata is behind says the topic does not exist; another is not the
        // leader; the producer was fenced: none of these says the timed-out attempt is not
        // in the log.
        for refusal in [
            ClientError::NotFound("topic \"t\" does not exist".into()),
            ClientError::Unavailable {
                message: "not the leader".into(),
                leader: None,
            },
            ClientError::ProducerFenced("epoch 0 is older than 1".into()),
            ClientError::FailedPrecondition("no".into()),
            ClientError::Server {
                code: tonic::Code::Internal,
                message: "boom".into(),
            },
            ClientError::Closed,
        ] {
            let e = unknown_outcome(refusal.clone());
            assert!(e.is_outcome_unknown(), "{refusal:?} became {e:?}");
            assert!(e.to_string().contains(&refusal.to_string()), "{e}");
        }
        let t = unknown_outcome(ClientError::Timeout("no answer".into()));
        assert_eq!(t.to_string(), "timed out (outcome unknown): no answer");
    }

    type Seq = Sequencer<BatchId>;

    /// Actions as short strings: `send b3 p7 s10`, `pid fresh`, `ack b3 @40`, `fail b3 Timeout`.
    fn show(actions: Vec<Action<BatchId>>) -> Vec<String> {
        actions
            .into_iter()
            .map(|a| match a {
                Action::Send {
                    id,
                    producer_id,
                    base_sequence,
                } => format!("send b{id} p{producer_id} s{base_sequence}"),
                Action::RequestProducerId { fresh: true } => "pid fresh".into(),
                Action::RequestProducerId { fresh: false } => "pid shared".into(),
                Action::Ack { batch, base_offset } => format!("ack b{batch} @{base_offset}"),
                Action::Fail { batch, error } => {
                    let variant = format!("{error:?}");
                    let variant = variant.split(['(', ' ']).next().unwrap_or_default();
                    format!("fail b{batch} {variant}")
                }
            })
            .collect()
    }

    /// Pushes `n` batches of `count` records each; their payload is their id.
    fn push(s: &mut Seq, n: usize, count: u32) {
        for _ in 0..n {
            let id = s.pushed();
            assert_eq!(s.push(id, count), id);
        }
    }

    fn gap() -> Result<u64, ClientError> {
        Err(ClientError::OutOfOrderSequence("expected 0".into()))
    }

    fn timeout() -> Result<u64, ClientError> {
        Err(ClientError::Timeout("no answer".into()))
    }

    /// A sequencer whose first batch (b0, 1 record) was acknowledged at offset 0 under
    /// producer 7, so the window is open.
    fn established(max_in_flight: usize) -> Seq {
        let mut s = Seq::new(max_in_flight, true);
        push(&mut s, 1, 1);
        assert_eq!(show(s.poll_actions()), ["pid shared"]);
        s.on_producer_id(Ok(7));
        assert_eq!(show(s.poll_actions()), ["send b0 p7 s0"]);
        s.on_answer(0, Ok(0), false);
        assert_eq!(show(s.poll_actions()), ["ack b0 @0"]);
        s
    }

    #[test]
    fn a_task_replacing_one_that_died_asks_for_a_fresh_producer_id() {
        let mut s = Seq::new(5, true);
        s.start_fresh();
        push(&mut s, 1, 1);
        assert_eq!(show(s.poll_actions()), ["pid fresh"]);
        // Without idempotence there is no producer id to change.
        let mut s = Seq::new(5, false);
        s.start_fresh();
        push(&mut s, 1, 1);
        assert_eq!(show(s.poll_actions()), ["send b0 p0 s0"]);
    }

    #[test]
    fn the_first_batch_goes_alone_then_the_window_opens() {
        let mut s = Seq::new(5, true);
        push(&mut s, 8, 2);
        assert_eq!(show(s.poll_actions()), ["pid shared"]);
        assert!(!s.accepting());
        s.on_producer_id(Ok(7));
        assert_eq!(
            show(s.poll_actions()),
            ["send b0 p7 s0"],
            "an unknown producer id is accepted at any sequence: nothing may overtake"
        );
        s.on_answer(0, Ok(100), false);
        assert_eq!(
            show(s.poll_actions()),
            [
                "ack b0 @100",
                "send b1 p7 s2",
                "send b2 p7 s4",
                "send b3 p7 s6",
                "send b4 p7 s8",
                "send b5 p7 s10"
            ]
        );
        // The window counts from the oldest unresolved batch: b2 done does not make room.
        s.on_answer(2, Ok(104), false);
        assert_eq!(show(s.poll_actions()), Vec::<String>::new());
        s.on_answer(1, Ok(102), false);
        assert_eq!(
            show(s.poll_actions()),
            [
                "ack b1 @102",
                "ack b2 @104",
                "send b6 p7 s12",
                "send b7 p7 s14"
            ]
        );
    }

    #[test]
    fn acknowledgements_wait_for_earlier_batches() {
        let mut s = established(5);
        push(&mut s, 3, 1);
        assert_eq!(
            show(s.poll_actions()),
            ["send b1 p7 s1", "send b2 p7 s2", "send b3 p7 s3"]
        );
        s.on_answer(3, Ok(3), false);
        s.on_answer(2, Ok(2), false);
        assert_eq!(show(s.poll_actions()), Vec::<String>::new());
        assert_eq!(s.oldest_unresolved(), Some(1));
        s.on_answer(1, Ok(1), false);
        assert_eq!(
            show(s.poll_actions()),
            ["ack b1 @1", "ack b2 @2", "ack b3 @3"]
        );
        assert!(s.is_idle());
    }

    #[test]
    fn an_overtaking_batch_is_parked_and_sent_again_in_order() {
        let mut s = established(5);
        push(&mut s, 3, 1);
        s.poll_actions();
        // The server proposed b2 before b1: refused for a gap.
        s.on_answer(2, gap(), false);
        assert_eq!(show(s.poll_actions()), Vec::<String>::new());
        // New batches wait while one is parked: they would only be refused too.
        push(&mut s, 1, 1);
        assert!(!s.accepting());
        assert_eq!(show(s.poll_actions()), Vec::<String>::new());
        // b3 was appended?? No: it followed b2, so it was refused too.
        s.on_answer(3, gap(), false);
        s.on_answer(1, Ok(1), false);
        assert_eq!(
            show(s.poll_actions()),
            [
                "ack b1 @1",
                "send b2 p7 s2",
                "send b3 p7 s3",
                "send b4 p7 s4"
            ],
            "same producer id and sequences, in order, then the waiting batch"
        );
        s.on_answer(2, Ok(2), false);
        s.on_answer(3, Ok(3), false);
        s.on_answer(4, Ok(4), false);
        assert_eq!(
            show(s.poll_actions()),
            ["ack b2 @2", "ack b3 @3", "ack b4 @4"]
        );
    }

    #[test]
    fn a_gap_answered_after_the_late_batch_was_acknowledged_is_still_retryable() {
        // b2 reached the server before b1 and was refused; b1's acknowledgement arrived
        // before b2's refusal. b2 was sent behind b1: the gap may be b1's doing.
        let mut s = established(5);
        push(&mut s, 2, 1);
        s.poll_actions();
        s.on_answer(1, Ok(1), false);
        assert_eq!(show(s.poll_actions()), ["ack b1 @1"]);
        s.on_answer(2, gap(), false);
        assert_eq!(show(s.poll_actions()), ["send b2 p7 s2"]);
        // Sent again with nothing before it: now a gap is the server's word.
        s.on_answer(2, gap(), false);
        assert_eq!(show(s.poll_actions()), ["fail b2 OutOfOrderSequence"]);
    }

    #[test]
    fn a_gap_after_an_unknown_outcome_is_parked_then_resolved_by_the_retry() {
        let mut s = established(5);
        push(&mut s, 2, 1);
        s.poll_actions();
        // b1's first attempt timed out and was not appended; b2 was refused meanwhile; b1's
        // retry (inside its send) was appended.
        s.on_answer(2, gap(), false);
        s.on_answer(1, Ok(1), true);
        assert_eq!(show(s.poll_actions()), ["ack b1 @1", "send b2 p7 s2"]);
    }

    #[test]
    fn a_gap_with_nothing_unacknowledged_before_is_fatal_and_later_batches_move_on() {
        let mut s = established(5);
        push(&mut s, 3, 1);
        s.poll_actions();
        s.on_answer(1, gap(), true);
        assert_eq!(
            show(s.poll_actions()),
            ["fail b1 OutOfOrderSequence"],
            "the server expects a sequence the client cannot know; nothing new goes out"
        );
        s.on_answer(3, gap(), false);
        assert_eq!(show(s.poll_actions()), Vec::<String>::new());
        s.on_answer(2, gap(), false);
        assert_eq!(show(s.poll_actions()), ["pid fresh"]);
        s.on_producer_id(Ok(8));
        assert_eq!(
            show(s.poll_actions()),
            ["send b2 p8 s0"],
            "not in the log: sent again under the new id, the first alone"
        );
        s.on_answer(2, Ok(5), false);
        assert_eq!(show(s.poll_actions()), ["ack b2 @5", "send b3 p8 s1"]);
    }

    #[test]
    fn an_unresolved_unknown_outcome_fails_and_moves_to_a_fresh_id() {
        let mut s = established(5);
        push(&mut s, 3, 1);
        s.poll_actions();
        // b1 ran out of retries without ever learning its fate.
        s.on_answer(1, timeout(), true);
        assert_eq!(show(s.poll_actions()), ["fail b1 Timeout"]);
        // b2 may have followed it into the log: it too ran out of retries, last refused as
        // not-leader. It may be appended: its error says the outcome is unknown.
        s.on_answer(
            2,
            Err(ClientError::Unavailable {
                message: "no leader".into(),
                leader: None,
            }),
            true,
        );
        assert_eq!(show(s.poll_actions()), ["fail b2 Timeout"]);
        // b3 was refused for the gap: known not appended, it moves to the new id.
        s.on_answer(3, gap(), false);
        assert_eq!(show(s.poll_actions()), ["pid fresh"]);
        s.on_producer_id(Ok(9));
        assert_eq!(show(s.poll_actions()), ["send b3 p9 s0"]);
    }

    #[test]
    fn a_gap_after_a_timed_out_attempt_does_not_move_the_batch_to_a_fresh_id() {
        // Bug: a gap refusal was taken as proof that the batch is not in the log, so when the
        // session ended the batch moved to a fresh producer id. But its first attempt, timed
        // out, could still be waiting in a server handler; appended late under the old id
        // (after b1, also late), the batch was in the log twice.
        let mut s = established(5);
        push(&mut s, 3, 1);
        s.poll_actions();
        // b2's first attempt timed out; its retry reached the log before b1: a gap.
        s.on_answer(2, gap(), true);
        // b3 was refused for the gap too, with no attempt of unknown outcome.
        s.on_answer(3, gap(), false);
        assert_eq!(show(s.poll_actions()), Vec::<String>::new());
        // b1 runs out of retries: the session ends.
        s.on_answer(1, timeout(), true);
        assert_eq!(
            show(s.poll_actions()),
            ["fail b1 Timeout", "fail b2 Timeout", "pid fresh"],
            "b2 may still be appended under p7: its outcome is unknown"
        );
        s.on_producer_id(Ok(8));
        assert_eq!(
            show(s.poll_actions()),
            ["send b3 p8 s0"],
            "b3 is known not in the log"
        );
    }

    #[test]
    fn a_gap_after_a_timed_out_attempt_is_still_sent_again_under_its_id() {
        // The same sequence and producer id: a late first attempt and the new one are one
        // batch to the server.
        let mut s = established(5);
        push(&mut s, 2, 1);
        s.poll_actions();
        s.on_answer(2, gap(), true);
        s.on_answer(1, Ok(1), false);
        assert_eq!(show(s.poll_actions()), ["ack b1 @1", "send b2 p7 s2"]);
        s.on_answer(2, Ok(2), false);
        assert_eq!(show(s.poll_actions()), ["ack b2 @2"]);
    }

    #[test]
    fn a_batch_acknowledged_after_a_failed_one_is_reported() {
        let mut s = established(5);
        push(&mut s, 2, 1);
        s.poll_actions();
        s.on_answer(1, timeout(), true);
        s.on_answer(2, Ok(2), false);
        assert_eq!(
            show(s.poll_actions()),
            ["fail b1 Timeout", "ack b2 @2"],
            "a new producer id only when there is something to send"
        );
        push(&mut s, 1, 1);
        assert_eq!(show(s.poll_actions()), ["pid fresh"]);
    }

    #[test]
    fn a_refusal_without_an_unknown_attempt_keeps_its_error() {
        let mut s = established(5);
        push(&mut s, 1, 1);
        s.poll_actions();
        s.on_answer(
            1,
            Err(ClientError::InvalidArgument("too big".into())),
            false,
        );
        assert_eq!(
            show(s.poll_actions()),
            ["fail b1 InvalidArgument"],
            "fatal, and nothing after it was sequenced"
        );
        assert!(!s.is_idle() || s.accepting());
        push(&mut s, 1, 1);
        assert_eq!(show(s.poll_actions()), ["pid fresh"]);
    }

    #[test]
    fn a_parked_batch_behind_an_acknowledged_one_fails() {
        // The server forgot the producer (or lost its batches, AP) and took b2 as an unknown
        // producer's first batch while b1 was refused.
        let mut s = established(5);
        push(&mut s, 3, 1);
        s.poll_actions();
        let mut s = established(5);
        push(&mut s, 3, 1);
        s.poll_actions();
        s.on_answer(2, gap(), false);
        s.on_answer(3, Ok(9), false);
        assert_eq!(show(s.poll_actions()), Vec::<String>::new());
        s.on_answer(1, Ok(1), false);
        assert_eq!(
            show(s.poll_actions()),
            ["ack b1 @1", "fail b2 OutOfOrderSequence", "ack b3 @9"]
        );
    }

    #[test]
    fn parking_is_bounded() {
        let mut s = established(2);
        push(&mut s, 2, 1);
        s.poll_actions();
        for _ in 0..MAX_PARKS {
            s.on_answer(2, gap(), false);
            // b1 is still in flight: no resend yet. Pretend b1's answer is slow forever and
            // b2 got resent by an earlier round: force it back in flight.
            assert_eq!(show(s.poll_actions()), Vec::<String>::new());
            s.window[1].state = State::InFlight;
        }
        s.on_answer(2, gap(), false);
        assert_eq!(
            show(s.poll_actions()),
            Vec::<String>::new(),
            "reported in order"
        );
        s.on_answer(1, Ok(1), false);
        assert_eq!(
            show(s.poll_actions()),
            ["ack b1 @1", "fail b2 OutOfOrderSequence"]
        );
    }

    #[test]
    fn sequences_never_wrap() {
        let mut s = established(5);
        if let Session::Active { next_sequence, .. } = &mut s.session {
            *next_sequence = u32::MAX - 3;
        }
        push(&mut s, 3, 2);
        assert_eq!(
            show(s.poll_actions()),
            ["send b1 p7 s4294967292"],
            "the next one would pass u32::MAX"
        );
        s.on_answer(1, Ok(1), false);
        assert_eq!(show(s.poll_actions()), ["ack b1 @1", "pid fresh"]);
        s.on_producer_id(Ok(8));
        assert_eq!(show(s.poll_actions()), ["send b2 p8 s0"]);
    }

    #[test]
    fn a_failed_producer_id_request_fails_one_batch_and_asks_again() {
        let mut s = Seq::new(5, true);
        push(&mut s, 2, 1);
        assert_eq!(show(s.poll_actions()), ["pid shared"]);
        s.on_producer_id(Err(ClientError::Timeout("init".into())));
        assert_eq!(show(s.poll_actions()), ["fail b0 Timeout", "pid shared"]);
        s.on_producer_id(Ok(3));
        assert_eq!(show(s.poll_actions()), ["send b1 p3 s0"]);
    }

    #[test]
    fn without_idempotence_one_batch_at_a_time_and_no_sequences() {
        let mut s = Seq::new(5, false);
        push(&mut s, 3, 4);
        assert_eq!(show(s.poll_actions()), ["send b0 p0 s0"]);
        s.on_answer(0, timeout(), true);
        assert_eq!(
            show(s.poll_actions()),
            ["fail b0 Timeout", "send b1 p0 s0"],
            "no session to end"
        );
        s.on_answer(1, Ok(4), false);
        assert_eq!(show(s.poll_actions()), ["ack b1 @4", "send b2 p0 s0"]);
    }

    #[test]
    fn flush_points_follow_the_oldest_unresolved_batch() {
        let mut s = established(5);
        assert_eq!(s.oldest_unresolved(), None);
        push(&mut s, 2, 1);
        assert_eq!(s.oldest_unresolved(), Some(1));
        s.poll_actions();
        s.on_answer(1, Ok(1), false);
        s.poll_actions();
        assert_eq!(s.oldest_unresolved(), Some(2));
    }

    /// A simulated partition: the server's real rules (`PartitionState`), sends that reach it
    /// in any order and any number of times, answers lost or refused. Checks what the module
    /// promises: nothing appended twice, acknowledgements in push order at increasing offsets
    /// that are where the server put the batch, a batch failed for a reason other than an
    /// unknown outcome is not in the log, and without faults every batch is acknowledged and
    /// the log is the push order.
    mod model {
        use std::collections::BTreeMap;

        use fjord_storage::partition::{BatchHeader, Outcome, PartitionState};
        use proptest::prelude::*;

        use super::super::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Pushes a batch of this many records.
            Push(u32),
            /// The `i`-th outstanding send reaches the server (again).
            Deliver(usize),
            /// The `i`-th outstanding send ends with the server's last decision (delivering it
            /// now if it never got there).
            Answer(usize),
            /// The `i`-th outstanding send runs out of retries, its last answer lost.
            Lose(usize),
            /// The `i`-th outstanding send runs out of retries, its last attempt refused
            /// (not the leader) before reaching the log.
            Refuse(usize),
            /// The pending producer id request is answered, or fails.
            ProducerId(bool),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (1u32..4).prop_map(Op::Push),
                6 => any::<usize>().prop_map(Op::Deliver),
                6 => any::<usize>().prop_map(Op::Answer),
                1 => any::<usize>().prop_map(Op::Lose),
                1 => any::<usize>().prop_map(Op::Refuse),
                2 => prop_oneof![9 => Just(true), 1 => Just(false)].prop_map(Op::ProducerId),
            ]
        }

        struct Send {
            id: BatchId,
            header: BatchHeader,
            deliveries: u32,
            last: Option<Outcome>,
        }

        #[derive(Default)]
        struct World {
            seq: Option<Sequencer<BatchId>>,
            server: PartitionState,
            /// What the server appended: (batch, base offset), in log order.
            log: Vec<(BatchId, u64)>,
            counts: BTreeMap<BatchId, u32>,
            sends: Vec<Send>,
            pid_request: Option<bool>,
            next_pid: u64,
            acked: Vec<(BatchId, u64)>,
            failed: BTreeMap<BatchId, ClientError>,
            faults: bool,
        }

        impl World {
            fn seq(&mut self) -> &mut Sequencer<BatchId> {
                self.seq.as_mut().unwrap()
            }

            fn deliver(&mut self, i: usize) {
                let s = &mut self.sends[i];
                let outcome = self.server.apply(&s.header);
                if let Outcome::Appended { base_offset } = outcome {
                    self.log.push((s.id, base_offset));
                }
                s.deliveries += 1;
                s.last = Some(outcome);
            }

            fn answer(&mut self, i: usize, how: &Op) -> Result<(), TestCaseError> {
                if matches!(how, Op::Answer(_)) && self.sends[i].last.is_none() {
                    self.deliver(i);
                }
                let s = self.sends.swap_remove(i);
                let (result, maybe_appended) = match how {
                    Op::Answer(_) => (
                        match s.last.unwrap() {
                            Outcome::Appended { base_offset }
                            | Outcome::Duplicate { base_offset } => Ok(base_offset),
                            Outcome::OutOfOrder { expected, got } => {
                                Err(ClientError::OutOfOrderSequence(format!(
                                    "expected {expected}, got {got}"
                                )))
                            }
                            // One epoch only; and the client never gives one sequence to two
                            // batches.
                            other @ (Outcome::Fenced { .. } | Outcome::SequenceReused { .. }) => {
                                return Err(TestCaseError::fail(format!("{other:?}")));
                            }
                        },
                        // A second delivery is a retry after an attempt without an answer.
                        s.deliveries > 1,
                    ),
                    Op::Lose(_) => (Err(ClientError::Timeout("lost".into())), true),
                    _ => (
                        Err(ClientError::Unavailable {
                            message: "not the leader".into(),
                            leader: None,
                        }),
                        s.deliveries > 0,
                    ),
                };
                self.seq().on_answer(s.id, result, maybe_appended);
                Ok(())
            }

            fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
                match op {
                    Op::Push(n) => {
                        let id = self.seq().pushed();
                        self.seq().push(id, *n);
                        self.counts.insert(id, *n);
                    }
                    Op::Deliver(i) if !self.sends.is_empty() => {
                        let i = i % self.sends.len();
                        // Retries of one send happen one after another.
                        if self.sends[i].deliveries > 0 {
                            self.faults = true;
                        }
                        self.deliver(i);
                    }
                    Op::Answer(i) | Op::Lose(i) | Op::Refuse(i) if !self.sends.is_empty() => {
                        if !matches!(op, Op::Answer(_)) {
                            self.faults = true;
                        }
                        let i = i % self.sends.len();
                        self.answer(i, op)?;
                    }
                    Op::ProducerId(ok) if self.pid_request.take().is_some() => {
                        if *ok {
                            self.next_pid += 1;
                            let pid = self.next_pid;
                            self.seq().on_producer_id(Ok(pid));
                        } else {
                            self.faults = true;
                            self.seq()
                                .on_producer_id(Err(ClientError::Timeout("init".into())));
                        }
                    }
                    _ => {}
                }
                self.perform()
            }

            fn perform(&mut self) -> Result<(), TestCaseError> {
                for action in self.seq().poll_actions() {
                    match action {
                        Action::Send {
                            id,
                            producer_id,
                            base_sequence,
                        } => {
                            prop_assert!(self.sends.iter().all(|s| s.id != id));
                            let record_count = self.counts[&id];
                            self.sends.push(Send {
                                id,
                                header: BatchHeader {
                                    producer_id,
                                    producer_epoch: 0,
                                    base_sequence,
                                    record_count,
                                    // A batch's records never change, whatever id it goes under.
                                    crc32c: id as u32,
                                },
                                deliveries: 0,
                                last: None,
                            });
                        }
                        Action::RequestProducerId { fresh } => {
                            prop_assert!(self.pid_request.is_none());
                            self.pid_request = Some(fresh);
                        }
                        Action::Ack { batch, base_offset } => {
                            if let Some(&(prev, prev_offset)) = self.acked.last() {
                                prop_assert!(prev < batch, "acks in push order");
                                prop_assert!(
                                    prev_offset + u64::from(self.counts[&prev]) <= base_offset,
                                    "acks at increasing offsets"
                                );
                            }
                            prop_assert!(!self.failed.contains_key(&batch));
                            self.acked.push((batch, base_offset));
                        }
                        Action::Fail { batch, error } => {
                            prop_assert!(!self.acked.iter().any(|a| a.0 == batch));
                            prop_assert!(self.failed.insert(batch, error).is_none());
                        }
                    }
                }
                Ok(())
            }

            /// Lets everything outstanding complete without faults.
            fn quiesce(&mut self) -> Result<(), TestCaseError> {
                for _ in 0..10_000 {
                    if self.seq().is_idle() {
                        return Ok(());
                    }
                    if self.pid_request.is_some() {
                        self.step(&Op::ProducerId(true))?;
                    } else {
                        prop_assert!(!self.sends.is_empty(), "stalled: nothing in flight");
                        // The oldest send first, as a server with no reordering would.
                        let oldest = (0..self.sends.len())
                            .min_by_key(|&i| self.sends[i].id)
                            .unwrap();
                        self.answer(oldest, &Op::Answer(0))?;
                        self.perform()?;
                    }
                }
                Err(TestCaseError::fail("no progress after 10,000 steps"))
            }

            fn check(&self) -> Result<(), TestCaseError> {
                let pushed = self.counts.len();
                prop_assert_eq!(
                    self.acked.len() + self.failed.len(),
                    pushed,
                    "every batch resolved once"
                );
                let mut in_log = BTreeMap::new();
                for &(id, offset) in &self.log {
                    prop_assert!(
                        in_log.insert(id, offset).is_none(),
                        "batch {} appended twice: {:?}",
                        id,
                        self.log
                    );
                }
                for &(id, offset) in &self.acked {
                    prop_assert_eq!(in_log.get(&id), Some(&offset), "acked where it is");
                }
                for (id, e) in &self.failed {
                    if !e.is_outcome_unknown() {
                        prop_assert!(
                            !in_log.contains_key(id),
                            "batch {} failed with {:?} but is in the log",
                            id,
                            e
                        );
                    }
                }
                // Acknowledged batches are in the log in push order.
                let acked_in_log: Vec<BatchId> = self
                    .log
                    .iter()
                    .map(|e| e.0)
                    .filter(|id| self.acked.iter().any(|a| a.0 == *id))
                    .collect();
                prop_assert!(acked_in_log.windows(2).all(|w| w[0] < w[1]));
                if !self.faults {
                    prop_assert!(self.failed.is_empty(), "{:?}", self.failed);
                    let order: Vec<BatchId> = self.log.iter().map(|e| e.0).collect();
                    prop_assert_eq!(order, (0..pushed as u64).collect::<Vec<_>>());
                }
                Ok(())
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn the_window_keeps_order_and_never_duplicates(
                max_in_flight in 1usize..=MAX_IN_FLIGHT_BATCHES_LIMIT,
                ops in proptest::collection::vec(op(), 1..300),
            ) {
                let mut w = World {
                    seq: Some(Sequencer::new(max_in_flight, true)),
                    ..Default::default()
                };
                for op in &ops {
                    w.step(op)?;
                }
                w.quiesce()?;
                w.check()?;
            }
        }
    }

    /// The simulated partition again, with a network that keeps attempts: an attempt that
    /// timed out (its handler still waiting its turn, a lease, a group's restart) may reach
    /// the log at any later time — after a later attempt's answer, after its send gave up,
    /// after its batch moved to a fresh producer id. Checks that nothing is appended twice,
    /// that what is appended is in push order (all of it but the batches reported with an
    /// unknown outcome, which may land anywhere: nothing fences an old producer id), that a
    /// batch failed for another reason is not in the log, and that acknowledgements say
    /// where the batch is.
    mod late {
        use std::collections::BTreeMap;

        use fjord_storage::partition::{BatchHeader, Outcome, PartitionState};
        use proptest::prelude::*;

        use super::super::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Pushes a batch of this many records.
            Push(u32),
            /// The `i`-th attempt in the network reaches the log.
            Arrive(usize),
            /// The `i`-th attempt in the network is dropped before reaching the log.
            Vanish(usize),
            /// The `i`-th outstanding send's current attempt answers (reaching the log now
            /// if it had not).
            Answer(usize),
            /// The `i`-th outstanding send's current attempt times out, and the send retries;
            /// the attempt stays in the network if it has not reached the log.
            Timeout(usize),
            /// As `Timeout`, but the send runs out of retries.
            GiveUp(usize),
            /// The `i`-th outstanding send's current attempt, not yet in the log, is refused
            /// (not the leader), and the send runs out of retries.
            Refuse(usize),
            /// The pending producer id request is answered, or fails.
            ProducerId(bool),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (1u32..4).prop_map(Op::Push),
                5 => any::<usize>().prop_map(Op::Arrive),
                1 => any::<usize>().prop_map(Op::Vanish),
                6 => any::<usize>().prop_map(Op::Answer),
                2 => any::<usize>().prop_map(Op::Timeout),
                1 => any::<usize>().prop_map(Op::GiveUp),
                1 => any::<usize>().prop_map(Op::Refuse),
                2 => prop_oneof![9 => Just(true), 1 => Just(false)].prop_map(Op::ProducerId),
            ]
        }

        /// One attempt on its way to the log.
        struct Attempt {
            serial: u64,
            id: BatchId,
            header: BatchHeader,
        }

        /// A `Send` the partition task is performing.
        struct Send {
            id: BatchId,
            header: BatchHeader,
            /// The attempt whose answer the send waits for.
            current: u64,
            /// The current attempt's outcome, once it reached the log.
            outcome: Option<Outcome>,
            /// An earlier attempt timed out.
            unknown: bool,
        }

        #[derive(Default)]
        struct World {
            seq: Option<Sequencer<BatchId>>,
            server: PartitionState,
            /// What the server appended: (batch, base offset), in log order.
            log: Vec<(BatchId, u64)>,
            counts: BTreeMap<BatchId, u32>,
            sends: Vec<Send>,
            network: Vec<Attempt>,
            next_serial: u64,
            pid_request: Option<bool>,
            next_pid: u64,
            acked: Vec<(BatchId, u64)>,
            failed: BTreeMap<BatchId, ClientError>,
            faults: bool,
            /// What happened, to print with a failure.
            trace: Vec<String>,
        }

        impl World {
            fn seq(&mut self) -> &mut Sequencer<BatchId> {
                self.seq.as_mut().unwrap()
            }

            /// A new attempt of send `i` goes out.
            fn attempt(&mut self, i: usize) {
                self.next_serial += 1;
                let s = &mut self.sends[i];
                s.current = self.next_serial;
                s.outcome = None;
                self.trace.push(format!(
                    "b{} attempt {} {:?}",
                    s.id, self.next_serial, s.header
                ));
                self.network.push(Attempt {
                    serial: self.next_serial,
                    id: s.id,
                    header: s.header,
                });
            }

            /// The `j`-th attempt in the network reaches the log.
            fn arrive(&mut self, j: usize) {
                let a = self.network.remove(j);
                let outcome = self.server.apply(&a.header);
                self.trace.push(format!(
                    "b{} attempt {} reaches the log: {outcome:?}",
                    a.id, a.serial
                ));
                if let Outcome::Appended { base_offset } = outcome {
                    self.log.push((a.id, base_offset));
                }
                if let Some(s) = self.sends.iter_mut().find(|s| s.current == a.serial) {
                    s.outcome = Some(outcome);
                }
            }

            fn pending(&self, serial: u64) -> Option<usize> {
                self.network.iter().position(|a| a.serial == serial)
            }

            fn answer(&mut self, i: usize, how: &Op) -> Result<(), TestCaseError> {
                let current = self.sends[i].current;
                match how {
                    Op::Answer(_) => {
                        if let Some(j) = self.pending(current) {
                            self.arrive(j);
                        }
                        if self.sends[i].outcome.is_none() {
                            // It vanished: the send sees a timeout.
                            return self.answer(i, &Op::Timeout(0));
                        }
                    }
                    Op::Timeout(_) => {
                        self.trace
                            .push(format!("b{} attempt {current} times out", self.sends[i].id));
                        self.faults = true;
                        self.sends[i].unknown = true;
                        self.attempt(i);
                        return Ok(());
                    }
                    Op::GiveUp(_) => self.faults = true,
                    _ => {
                        // Refused before reaching the log: only an attempt still on its way.
                        let Some(j) = self.pending(current) else {
                            return Ok(());
                        };
                        self.faults = true;
                        self.network.remove(j);
                    }
                }
                let s = self.sends.swap_remove(i);
                let (result, maybe_appended) = match how {
                    Op::Answer(_) => (
                        match s.outcome.expect("the current attempt reached the log") {
                            Outcome::Appended { base_offset }
                            | Outcome::Duplicate { base_offset } => Ok(base_offset),
                            Outcome::OutOfOrder { expected, got } => {
                                Err(ClientError::OutOfOrderSequence(format!(
                                    "expected {expected}, got {got}"
                                )))
                            }
                            // One epoch only; and the client never gives one sequence to two
                            // batches.
                            other @ (Outcome::Fenced { .. } | Outcome::SequenceReused { .. }) => {
                                return Err(TestCaseError::fail(format!("{other:?}")));
                            }
                        },
                        s.unknown,
                    ),
                    Op::GiveUp(_) => (Err(ClientError::Timeout("lost".into())), true),
                    _ => (
                        Err(ClientError::Unavailable {
                            message: "not the leader".into(),
                            leader: None,
                        }),
                        s.unknown,
                    ),
                };
                self.trace.push(format!(
                    "b{} answered {result:?}, maybe appended {maybe_appended}",
                    s.id
                ));
                self.seq().on_answer(s.id, result, maybe_appended);
                Ok(())
            }

            fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
                match op {
                    Op::Push(n) => {
                        let id = self.seq().pushed();
                        self.seq().push(id, *n);
                        self.counts.insert(id, *n);
                    }
                    Op::Arrive(j) if !self.network.is_empty() => {
                        let j = j % self.network.len();
                        self.arrive(j);
                    }
                    Op::Vanish(j) if !self.network.is_empty() => {
                        self.faults = true;
                        let j = j % self.network.len();
                        let a = self.network.remove(j);
                        self.trace
                            .push(format!("b{} attempt {} vanishes", a.id, a.serial));
                    }
                    Op::Answer(i) | Op::Timeout(i) | Op::GiveUp(i) | Op::Refuse(i)
                        if !self.sends.is_empty() =>
                    {
                        let i = i % self.sends.len();
                        self.answer(i, op)?;
                    }
                    Op::ProducerId(ok) if self.pid_request.take().is_some() => {
                        if *ok {
                            self.next_pid += 1;
                            let pid = self.next_pid;
                            self.trace.push(format!("producer id {pid}"));
                            self.seq().on_producer_id(Ok(pid));
                        } else {
                            self.faults = true;
                            self.seq()
                                .on_producer_id(Err(ClientError::Timeout("init".into())));
                        }
                    }
                    _ => {}
                }
                self.perform()
            }

            fn perform(&mut self) -> Result<(), TestCaseError> {
                for action in self.seq().poll_actions() {
                    match action {
                        Action::Send {
                            id,
                            producer_id,
                            base_sequence,
                        } => {
                            prop_assert!(self.sends.iter().all(|s| s.id != id));
                            let record_count = self.counts[&id];
                            self.sends.push(Send {
                                id,
                                header: BatchHeader {
                                    producer_id,
                                    producer_epoch: 0,
                                    base_sequence,
                                    record_count,
                                    // A batch's records never change, whatever id it goes under.
                                    crc32c: id as u32,
                                },
                                current: 0,
                                outcome: None,
                                unknown: false,
                            });
                            self.attempt(self.sends.len() - 1);
                        }
                        Action::RequestProducerId { fresh } => {
                            prop_assert!(self.pid_request.is_none());
                            self.pid_request = Some(fresh);
                        }
                        Action::Ack { batch, base_offset } => {
                            if let Some(&(prev, prev_offset)) = self.acked.last() {
                                prop_assert!(prev < batch, "acks in push order");
                                prop_assert!(
                                    prev_offset + u64::from(self.counts[&prev]) <= base_offset,
                                    "acks at increasing offsets"
                                );
                            }
                            prop_assert!(!self.failed.contains_key(&batch));
                            self.trace.push(format!("ack b{batch} @{base_offset}"));
                            self.acked.push((batch, base_offset));
                        }
                        Action::Fail { batch, error } => {
                            prop_assert!(!self.acked.iter().any(|a| a.0 == batch));
                            self.trace.push(format!("fail b{batch} {error:?}"));
                            prop_assert!(self.failed.insert(batch, error).is_none());
                        }
                    }
                }
                Ok(())
            }

            /// Lets every send complete without faults, oldest first, then every attempt
            /// still in the network reach the log, late.
            fn quiesce(&mut self) -> Result<(), TestCaseError> {
                for _ in 0..10_000 {
                    if self.seq().is_idle() {
                        while !self.network.is_empty() {
                            self.arrive(0);
                        }
                        prop_assert!(self.seq().is_idle());
                        return Ok(());
                    }
                    if self.pid_request.is_some() {
                        self.step(&Op::ProducerId(true))?;
                    } else {
                        prop_assert!(!self.sends.is_empty(), "stalled: nothing in flight");
                        let oldest = (0..self.sends.len())
                            .min_by_key(|&i| self.sends[i].id)
                            .unwrap();
                        self.answer(oldest, &Op::Answer(0))?;
                        self.perform()?;
                    }
                }
                Err(TestCaseError::fail("no progress after 10,000 steps"))
            }

            fn check(&self) -> Result<(), TestCaseError> {
                let pushed = self.counts.len();
                prop_assert_eq!(
                    self.acked.len() + self.failed.len(),
                    pushed,
                    "every batch resolved once"
                );
                let mut in_log = BTreeMap::new();
                for &(id, offset) in &self.log {
                    prop_assert!(
                        in_log.insert(id, offset).is_none(),
                        "batch {} appended twice: {:?}",
                        id,
                        self.log
                    );
                }
                for &(id, offset) in &self.acked {
                    prop_assert_eq!(in_log.get(&id), Some(&offset), "acked where it is");
                }
                for (id, e) in &self.failed {
                    if !e.is_outcome_unknown() {
                        prop_assert!(
                            !in_log.contains_key(id),
                            "batch {} failed with {:?} but is in the log: {:?}",
                            id,
                            e,
                            self.log
                        );
                    }
                }
                // What is appended is in push order, but for batches of unknown outcome.
                let known: Vec<BatchId> = self
                    .log
                    .iter()
                    .map(|e| e.0)
                    .filter(|id| !self.failed.get(id).is_some_and(|e| e.is_outcome_unknown()))
                    .collect();
                prop_assert!(
                    known.windows(2).all(|w| w[0] < w[1]),
                    "log out of push order: {:?}",
                    self.log
                );
                if !self.faults {
                    prop_assert!(self.failed.is_empty(), "{:?}", self.failed);
                    let order: Vec<BatchId> = self.log.iter().map(|e| e.0).collect();
                    prop_assert_eq!(order, (0..pushed as u64).collect::<Vec<_>>());
                }
                Ok(())
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn late_attempts_never_duplicate_nor_reorder(
                max_in_flight in 1usize..=MAX_IN_FLIGHT_BATCHES_LIMIT,
                ops in proptest::collection::vec(op(), 1..300),
            ) {
                let mut w = World {
                    seq: Some(Sequencer::new(max_in_flight, true)),
                    ..Default::default()
                };
                let run = |w: &mut World| {
                    for op in &ops {
                        w.step(op)?;
                    }
                    w.quiesce()?;
                    w.check()
                };
                let result = run(&mut w);
                if result.is_err() {
                    // The events of the case (the last printed is the minimal one).
                    eprintln!("what happened:\n  {}", w.trace.join("\n  "));
                }
                result?;
            }
        }
    }
}
