//! The consumer-group rules (Jepsen's Kafka checkers, adapted to what a member's history
//! shows), over the `group_poll`, `group_commit` and `group_drain` operations.
//!
//! # Ownership
//! A member *incarnation* (member number and incarnation) owns a partition *continuously*
//! from the poll whose completion first lists it (the ownership's *start* is that poll's
//! invoke) until a later poll's completion no longer lists it or shows another session (see
//! [`crate::history::Membership`]); a record of a partition a completion does not list
//! counts as owned. Each such stretch is one *ownership*. A commit belongs to the
//! ownerships its member incarnation holds when it is invoked.
//!
//! A commit *may have taken effect* unless it completed `fail`; it is *acknowledged* if it
//! completed `ok`.
//!
//! # Rules
//! - **poll-skip**: within one ownership, a record handed out at an offset more than one
//!   past the ownership's previous record (a gap; one anomaly per gap); or an ownership's
//!   first record above every offset that may have been committed for its partition by the
//!   time that poll completed (0 when none was): the records in between were skipped.
//! - **nonmonotonic-poll**: within one ownership, a record at or below the ownership's
//!   previous record.
//! - **duplicate-delivery**: a record handed out again in another ownership than its first
//!   delivery's, at an offset below the highest acknowledged commit of its partition that
//!   completed before the new ownership's start. At least once allows redelivery only from
//!   the last commit on, and only when the partition changes hands.
//! - **committed-too-far**: a commit that may have taken effect of an offset beyond what its
//!   ownership handed out: above its last record of that partition plus one, or any offset
//!   when it handed out nothing of it yet.
//! - **fenced-commit**: an acknowledged commit of a partition by a member incarnation whose
//!   ownership of it was opened (its poll's completion) before another incarnation's poll
//!   that opened an ownership of it was invoked, that poll having completed before the
//!   commit was invoked: the partition had changed hands
//!   meanwhile (a partition has one owner at a time, and a member cannot lose it and win it
//!   back within one call; [`crate::history::Membership`]), so the member had lost it (left
//!   silent past its session timeout, or fenced) and the coordinator must refuse its commit.
//!   Not judged for an ownership across a poll whose completion did not say what the member
//!   owned (it may have given the partition up there).
//! - **lost-write**: when a drain completed `ok`, an acknowledged produce at an offset below
//!   its partition's end that no member ever handed out (with its value, at that offset).
//!   Without a successful drain this rule judges nothing (see [`super::Totals::group_drained`]),
//!   and a drain that was tried and did not succeed is **unrecovered** (the checker's rule).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Anomaly, CheckResult};
use crate::history::{EventType, Membership, Op, Operation, PartitionOffset};

/// An acknowledged produce, as the lost-write rule needs it.
pub(super) struct Acked {
    pub value: u64,
    pub partition: u32,
    pub offset: u64,
    /// Its invoke and completion.
    pub events: [u64; 2],
}

/// One ownership (see the module doc).
struct Ownership {
    member: u32,
    incarnation: u32,
    partition: u32,
    /// The invoke of the poll that opened it.
    start: u64,
    /// The completion of that poll.
    opened_by: u64,
    /// Its latest record: offset and the completion that handed it out.
    last: Option<(u64, u64)>,
    /// Whether a poll of its member completed, while it was open, without saying what the
    /// member owned (the fenced-commit rule does not judge it).
    uncertain: bool,
}

impl Ownership {
    fn who(&self) -> String {
        format!("member {} incarnation {}", self.member, self.incarnation)
    }
}

/// What the rules remember of one member incarnation.
#[derive(Default)]
struct MemberState {
    session: Option<u64>,
    /// Partition -> its open ownership (an index into `Rules::ownerships`).
    open: BTreeMap<u32, usize>,
}

/// Per partition, commits in the order of a key (invoke or completion index) with the
/// running maximum of their offsets: `(key, max offset, event of that max)`.
#[derive(Default)]
struct Timeline(HashMap<u32, Vec<(u64, u64, u64)>>);

impl Timeline {
    fn push(&mut self, partition: u32, key: u64, offset: u64, event: u64) {
        self.0
            .entry(partition)
            .or_default()
            .push((key, offset, event));
    }

    /// Sorts by key and makes the offsets a running maximum.
    fn index(&mut self) {
        for t in self.0.values_mut() {
            t.sort_by_key(|c| c.0);
            let mut best: Option<(u64, u64)> = None;
            for c in t.iter_mut() {
                match best {
                    Some((o, e)) if o >= c.1 => (c.1, c.2) = (o, e),
                    _ => best = Some((c.1, c.2)),
                }
            }
        }
    }

    /// The highest offset (and its event) with a key below `before`.
    fn max_before(&self, partition: u32, before: u64) -> Option<(u64, u64)> {
        let t = self.0.get(&partition)?;
        let n = t.partition_point(|c| c.0 < before);
        n.checked_sub(1).map(|i| (t[i].1, t[i].2))
    }
}

#[derive(Default)]
struct Rules {
    ownerships: Vec<Ownership>,
    /// Per partition, its ownerships (indices into `ownerships`), in the order they opened.
    by_partition: HashMap<u32, Vec<usize>>,
    members: HashMap<(u32, u32), MemberState>,
    /// Commits that may have taken effect, by invoke.
    possible: Timeline,
    /// Acknowledged commits, by completion.
    acknowledged: Timeline,
    /// First delivery of each `(partition, offset)`: its ownership and completion.
    first_delivery: HashMap<(u32, u64), (usize, u64)>,
    /// Every `(partition, offset, value)` handed out.
    delivered: HashSet<(u32, u64, u64)>,
    /// The ends of the successful drain, and its completion.
    drained: Option<(BTreeMap<u32, u64>, u64)>,
}

/// Applies the rules of the module doc to `operations` (in invoke order), with the run's
/// acknowledged produces; adds what they find to `out`.
pub(super) fn check(operations: &[Operation<'_>], acked: &[Acked], out: &mut CheckResult) {
    let mut rules = Rules::default();
    for op in operations {
        let Op::GroupCommit { offsets, .. } = &op.invoke.op else {
            continue;
        };
        let outcome = op.outcome();
        for o in offsets {
            if outcome != EventType::Fail {
                rules
                    .possible
                    .push(o.partition, op.invoke.index, o.offset, op.invoke.index);
            }
            if let Some(done) = op.ok() {
                rules
                    .acknowledged
                    .push(o.partition, done.index, o.offset, done.index);
            }
        }
    }
    rules.possible.index();
    rules.acknowledged.index();
    for op in operations {
        match &op.invoke.op {
            Op::GroupPoll {
                member,
                incarnation,
                ..
            } => rules.poll(op, (*member, *incarnation), out),
            Op::GroupCommit {
                member,
                incarnation,
                offsets,
            } => rules.commit(op, (*member, *incarnation), offsets, out),
            Op::GroupDrain { .. } => rules.drain(op, out),
            _ => {}
        }
    }
    out.totals.group_ownerships = rules.ownerships.len() as u64;
    rules.lost_writes(acked, out);
}

impl Rules {
    fn poll(&mut self, op: &Operation<'_>, key: (u32, u32), out: &mut CheckResult) {
        let Some(done) = op.completion else {
            return;
        };
        let (records, owned) = match &done.op {
            Op::GroupPoll { records, owned, .. } => (records, owned),
            _ => return,
        };
        let records: &[crate::history::GroupRecord] = if done.kind == EventType::Ok {
            out.totals.group_polls_ok += 1;
            out.totals.group_records += records.len() as u64;
            records
        } else {
            &[]
        };
        self.follow(op.invoke.index, done.index, key, owned.as_ref(), records);
        for r in records {
            let Some(&at) = self.members[&key].open.get(&r.partition) else {
                continue;
            };
            self.deliver(at, r.offset, r.value, done.index, out);
        }
    }

    /// Ends and opens ownerships as the completion `done` of the poll invoked at `invoke`
    /// shows them (its `owned`, and the partitions of its `records`).
    fn follow(
        &mut self,
        invoke: u64,
        done: u64,
        key: (u32, u32),
        owned: Option<&Membership>,
        records: &[crate::history::GroupRecord],
    ) {
        let state = self.members.entry(key).or_default();
        let mut now: Vec<u32> = records.iter().map(|r| r.partition).collect();
        match owned {
            Some(m) => {
                if state.session.is_some_and(|s| s != m.session) {
                    state.open.clear();
                }
                state.session = Some(m.session);
                now.extend(&m.partitions);
                state.open.retain(|p, _| now.contains(p));
            }
            // An old or broken completion: the ownerships go on as they were.
            None => {
                now.extend(state.open.keys());
                for &at in state.open.values() {
                    self.ownerships[at].uncertain = true;
                }
            }
        }
        for p in now {
            if state.open.contains_key(&p) {
                continue;
            }
            state.open.insert(p, self.ownerships.len());
            self.by_partition
                .entry(p)
                .or_default()
                .push(self.ownerships.len());
            self.ownerships.push(Ownership {
                member: key.0,
                incarnation: key.1,
                partition: p,
                start: invoke,
                opened_by: done,
                last: None,
                uncertain: false,
            });
        }
    }

    /// Ownership `at` handed out `(offset, value)` in the completion `event`.
    fn deliver(&mut self, at: usize, offset: u64, value: u64, event: u64, out: &mut CheckResult) {
        let o = &self.ownerships[at];
        let p = o.partition;
        match o.last {
            Some((last, by)) if offset > last.saturating_add(1) => out.poll_skip.push(|| Anomaly {
                events: vec![by, event],
                partition: p,
                offsets: vec![last + 1, offset],
                values: vec![value],
                explanation: format!(
                    "{} owned partition {p} since event {} and handed out offset {last} \
                     (event {by}), then offset {offset} (event {event}): offsets {} to {} were \
                     skipped",
                    o.who(),
                    o.start,
                    last + 1,
                    offset - 1
                ),
            }),
            Some((last, by)) if offset <= last => out.nonmonotonic_poll.push(|| Anomaly {
                events: vec![by, event],
                partition: p,
                offsets: vec![last, offset],
                values: vec![value],
                explanation: format!(
                    "{} handed out offset {offset} of partition {p} (event {event}) after \
                     offset {last} (event {by}), within one ownership (since event {})",
                    o.who(),
                    o.start
                ),
            }),
            Some(_) => {}
            None => {
                let committed = self.possible.max_before(p, event);
                let floor = committed.map_or(0, |c| c.0);
                if offset > floor {
                    out.poll_skip.push(|| {
                        let mut events = vec![o.opened_by, event];
                        events.extend(committed.map(|c| c.1));
                        let by_then = match committed {
                            Some((c, e)) => format!("offset {c} (commit event {e})"),
                            None => "none, so offset 0".to_string(),
                        };
                        Anomaly {
                            events,
                            partition: p,
                            offsets: vec![floor, offset],
                            values: vec![value],
                            explanation: format!(
                                "{} took partition {p} over (event {}) and first handed out \
                                 offset {offset} (event {event}), above the highest offset \
                                 that could have been committed for it by then: {by_then}",
                                o.who(),
                                o.opened_by
                            ),
                        }
                    });
                }
            }
        }
        self.duplicate(at, offset, value, event, out);
        self.ownerships[at].last = Some((offset, event));
        self.delivered.insert((p, offset, value));
    }

    /// The duplicate-delivery rule for ownership `at` handing out `offset` in `event`.
    fn duplicate(&mut self, at: usize, offset: u64, value: u64, event: u64, out: &mut CheckResult) {
        let o = &self.ownerships[at];
        let p = o.partition;
        let Some(&(first, first_event)) = self.first_delivery.get(&(p, offset)) else {
            self.first_delivery.insert((p, offset), (at, event));
            return;
        };
        if first == at {
            return;
        }
        let Some((c, by)) = self.acknowledged.max_before(p, o.start) else {
            return;
        };
        if offset >= c {
            return;
        }
        let before = &self.ownerships[first];
        out.duplicate_delivery.push(|| Anomaly {
            events: vec![first_event, by, event],
            partition: p,
            offsets: vec![offset, c],
            values: vec![value],
            explanation: format!(
                "offset {offset} of partition {p} (value {value}) was handed out by {} (event \
                 {first_event}) and again by {} (event {event}), below offset {c}, committed \
                 (event {by}) before the partition changed hands (event {})",
                before.who(),
                o.who(),
                o.start
            ),
        });
    }

    fn commit(
        &mut self,
        op: &Operation<'_>,
        key: (u32, u32),
        offsets: &[PartitionOffset],
        out: &mut CheckResult,
    ) {
        match op.outcome() {
            EventType::Fail => {
                out.totals.group_commits_not_ok += 1;
                return;
            }
            EventType::Ok => out.totals.group_commits_ok += 1,
            EventType::Info | EventType::Invoke => out.totals.group_commits_not_ok += 1,
        }
        let mut events = vec![op.invoke.index];
        events.extend(op.completion.map(|c| c.index));
        let state = self.members.get(&key);
        for c in offsets {
            let owner = state
                .and_then(|s| s.open.get(&c.partition))
                .map(|&at| &self.ownerships[at]);
            if op.outcome() == EventType::Ok
                && let Some(o) = owner
            {
                self.fenced(op, o, c, out);
            }
            let limit = owner.and_then(|o| o.last).map(|(l, by)| (l + 1, by));
            if limit.is_some_and(|(l, _)| c.offset <= l) {
                continue;
            }
            let p = c.partition;
            let (member, incarnation) = key;
            out.committed_too_far.push(|| {
                let mut events = events.clone();
                let handed = match (owner, limit) {
                    (_, Some((l, by))) => {
                        events.push(by);
                        format!("its last record of it was offset {} (event {by})", l - 1)
                    }
                    (Some(o), None) => format!(
                        "it had handed out nothing of it since it took it over (event {})",
                        o.opened_by
                    ),
                    (None, None) => "it did not own it".to_string(),
                };
                Anomaly {
                    events,
                    partition: p,
                    offsets: vec![c.offset],
                    values: vec![],
                    explanation: format!(
                        "member {member} incarnation {incarnation} committed offset {} of \
                         partition {p} (event {}), beyond what it was handed: {handed}",
                        c.offset, op.invoke.index
                    ),
                }
            });
        }
    }

    /// The fenced-commit rule for the acknowledged commit `op` of `c` by the ownership `mine`.
    fn fenced(
        &self,
        op: &Operation<'_>,
        mine: &Ownership,
        c: &PartitionOffset,
        out: &mut CheckResult,
    ) {
        if mine.uncertain {
            return;
        }
        let invoke = op.invoke.index;
        let of_partition = self.by_partition.get(&c.partition).into_iter().flatten();
        let Some(other) = of_partition.map(|&at| &self.ownerships[at]).find(|o| {
            (o.member, o.incarnation) != (mine.member, mine.incarnation)
                && o.start > mine.opened_by
                && o.opened_by < invoke
        }) else {
            return;
        };
        let p = c.partition;
        out.fenced_commit.push(|| {
            let mut events = vec![mine.opened_by, other.opened_by, invoke];
            events.extend(op.completion.map(|d| d.index));
            Anomaly {
                events,
                partition: p,
                offsets: vec![c.offset],
                values: vec![],
                explanation: format!(
                    "{} owned partition {p} since event {} and its commit of offset {} \
                     (event {invoke}) was acknowledged, though {} had taken the partition \
                     over before (event {}): a member that lost its partition must be refused",
                    mine.who(),
                    mine.opened_by,
                    c.offset,
                    other.who(),
                    other.opened_by
                ),
            }
        });
    }

    fn drain(&mut self, op: &Operation<'_>, out: &mut CheckResult) {
        match op.ok().map(|c| (&c.op, c.index)) {
            Some((Op::GroupDrain { ends }, at)) => {
                out.totals.group_drained = Some(true);
                let ends = ends.iter().map(|e| (e.partition, e.offset)).collect();
                self.drained = Some((ends, at));
            }
            _ if out.totals.group_drained.is_none() => {
                out.totals.group_drained = Some(false);
                // Once every fault healed and the final reads reached every partition's end,
                // a group whose members cannot read to those ends did not recover.
                out.unrecovered.push(|| Anomaly {
                    events: vec![op.invoke.index],
                    partition: 0,
                    offsets: vec![],
                    values: vec![],
                    explanation: format!(
                        "the consumer group's drain (event {}) did not read every partition to \
                         the end the final reads found, once the faults had healed: the group \
                         did not recover, and lost-write judges nothing",
                        op.invoke.index
                    ),
                });
            }
            _ => {}
        }
    }

    fn lost_writes(&self, acked: &[Acked], out: &mut CheckResult) {
        let Some((ends, drain)) = &self.drained else {
            return;
        };
        for a in acked {
            let Some(&end) = ends.get(&a.partition) else {
                continue;
            };
            if a.offset >= end || self.delivered.contains(&(a.partition, a.offset, a.value)) {
                continue;
            }
            out.lost_write.push(|| Anomaly {
                events: vec![a.events[0], a.events[1], *drain],
                partition: a.partition,
                offsets: vec![a.offset],
                values: vec![a.value],
                explanation: format!(
                    "value {} acknowledged at offset {} of partition {} (event {}) was never \
                     handed out to a member, though the group drained the partition to offset \
                     {end} (event {drain})",
                    a.value, a.offset, a.partition, a.events[1]
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::checker::{AnomalyKind, CheckResult, Guarantees, check};
    use crate::history::{Event, EventType as T, GroupRecord, Membership, Op, PartitionOffset};

    /// A hand-written history with one topic partition (0) unless said otherwise.
    #[derive(Default)]
    struct H {
        events: Vec<Event>,
    }

    impl H {
        fn push(&mut self, process: u32, kind: T, op: Op) -> u64 {
            let index = self.events.len() as u64;
            self.events.push(Event {
                index,
                time_ns: index * 1_000,
                process,
                kind,
                op,
                error: None,
                instance: None,
            });
            index
        }

        /// Values `value0 + o` acknowledged at offsets `offsets` of partition 0, and a final
        /// read of them all.
        fn produced(&mut self, offsets: std::ops::Range<u64>) {
            for o in offsets.clone() {
                let v = 100 + o;
                self.push(1, T::Invoke, crate::workload::produce(0, v));
                self.push(1, T::Ok, crate::workload::produced(0, v, o));
            }
        }

        fn final_read(&mut self, offsets: std::ops::Range<u64>) {
            let records = offsets
                .map(|o| crate::history::ReadRecord {
                    offset: o,
                    value: 100 + o,
                })
                .collect();
            self.push(
                9,
                T::Invoke,
                Op::FinalRead {
                    partition: 0,
                    records: vec![],
                    log_start_offset: None,
                },
            );
            self.push(
                9,
                T::Ok,
                Op::FinalRead {
                    partition: 0,
                    records,
                    log_start_offset: None,
                },
            );
        }

        /// An `ok` poll of member `m` (incarnation `i`, session `s`) owning `owned`, handing
        /// out `offsets` of partition 0; returns its completion.
        fn poll(&mut self, m: u32, i: u32, s: u64, owned: &[u32], offsets: &[u64]) -> u64 {
            let records = offsets
                .iter()
                .map(|&o| GroupRecord {
                    partition: 0,
                    offset: o,
                    value: 100 + o,
                })
                .collect();
            let state = Membership {
                epoch: 1,
                session: s,
                partitions: owned.to_vec(),
            };
            self.push(10 + m, T::Invoke, crate::group::poll(m, i, None));
            self.push(10 + m, T::Ok, crate::group::polled(m, i, records, state))
        }

        /// A commit of `offset` of partition 0 by member `m` (incarnation `i`) ending `kind`;
        /// returns its completion.
        fn commit(&mut self, m: u32, i: u32, offset: u64, kind: T) -> u64 {
            let op = crate::group::commit(
                m,
                i,
                vec![PartitionOffset {
                    partition: 0,
                    offset,
                }],
            );
            self.push(10 + m, T::Invoke, op.clone());
            self.push(10 + m, kind, op)
        }

        fn drain(&mut self, end: u64) -> u64 {
            let ends = std::collections::BTreeMap::from([(0, end)]);
            self.push(crate::group::DRAINER, T::Invoke, crate::group::drain());
            self.push(crate::group::DRAINER, T::Ok, crate::group::drained(&ends))
        }
    }

    fn only(r: &CheckResult, kind: AnomalyKind, n: u64) {
        assert_eq!(r.found(), vec![(kind, n)], "{r:#?}");
    }

    #[test]
    fn a_clean_group_history_has_no_anomalies() {
        let mut h = H::default();
        h.produced(0..8);
        // Member 0 reads 0..=3 and commits 3 (what it was handed before its last poll).
        h.poll(0, 0, 0, &[0], &[0, 1]);
        h.poll(0, 0, 0, &[0], &[2, 3]);
        h.commit(0, 0, 3, T::Ok);
        // It crashes; member 1 takes over from the commit, redelivering offset 3.
        h.poll(1, 0, 0, &[], &[]);
        h.poll(1, 0, 0, &[0], &[3, 4]);
        // A commit of the new incarnation of member 0 is refused: it owns nothing.
        h.commit(0, 1, 9, T::Fail);
        h.commit(1, 0, 5, T::Ok);
        // Member 1 loses its session (paused) and comes back at its commit: no rewind.
        h.poll(1, 0, 1, &[0], &[5, 6]);
        // An unknown commit may have moved the offset: a new ownership may start there.
        h.commit(1, 0, 7, T::Info);
        h.poll(1, 0, 1, &[], &[]);
        h.poll(0, 1, 0, &[0], &[7]);
        h.final_read(0..8);
        h.drain(8);
        let r = check(&h.events);
        assert_eq!(r.found(), vec![], "{r:#?}");
        let t = &r.totals;
        assert_eq!((t.group_polls_ok, t.group_records), (7, 9));
        assert_eq!((t.group_commits_ok, t.group_commits_not_ok), (2, 2));
        assert_eq!((t.group_ownerships, t.group_drained), (4, Some(true)));
        assert!(
            r.counts_text(Guarantees::CP)
                .contains("(group: 7 polls handed out 9 records")
        );
    }

    #[test]
    fn a_gap_within_an_ownership_is_a_poll_skip() {
        let mut h = H::default();
        h.produced(0..4);
        let a = h.poll(0, 0, 0, &[0], &[0, 1]);
        let b = h.poll(0, 0, 0, &[0], &[3]);
        h.final_read(0..4);
        let r = check(&h.events);
        only(&r, AnomalyKind::PollSkip, 1);
        let x = &r.poll_skip.ops[0];
        assert_eq!(
            (x.events.clone(), x.offsets.clone()),
            (vec![a, b], vec![2, 3])
        );
        assert!(
            x.explanation.contains("offsets 2 to 2 were skipped"),
            "{}",
            x.explanation
        );
        assert!(!r.is_valid(Guarantees::CP));
    }

    #[test]
    fn a_new_ownership_starting_above_every_commit_is_a_poll_skip() {
        let mut h = H::default();
        h.produced(0..6);
        h.poll(0, 0, 0, &[0], &[0, 1, 2]);
        let c = h.commit(0, 0, 2, T::Ok);
        // Refused commits do not count: the highest possible commit is 2.
        h.commit(0, 0, 3, T::Fail);
        let a = h.poll(1, 0, 0, &[0], &[4, 5]);
        h.final_read(0..6);
        let r = check(&h.events);
        only(&r, AnomalyKind::PollSkip, 1);
        let x = &r.poll_skip.ops[0];
        assert_eq!(x.events, vec![a, a, c - 1]);
        assert!(
            x.explanation.contains("took partition 0 over"),
            "{}",
            x.explanation
        );
        // The first reader of a partition starts at 0.
        let mut h = H::default();
        h.produced(0..2);
        h.poll(0, 0, 0, &[0], &[1]);
        h.final_read(0..2);
        only(&check(&h.events), AnomalyKind::PollSkip, 1);
    }

    #[test]
    fn going_back_within_an_ownership_is_a_nonmonotonic_poll_but_not_across_sessions() {
        let mut h = H::default();
        h.produced(0..4);
        h.poll(0, 0, 0, &[0], &[0, 1, 2]);
        let b = h.poll(0, 0, 0, &[0], &[1, 2, 3]);
        // A new session of the same member starts again from offset 0 (nothing committed).
        h.poll(0, 0, 1, &[0], &[0]);
        h.final_read(0..4);
        let r = check(&h.events);
        only(&r, AnomalyKind::NonMonotonicPoll, 1);
        let x = &r.nonmonotonic_poll.ops[0];
        assert_eq!((x.events[1], x.offsets.clone()), (b, vec![2, 1]));
    }

    #[test]
    fn a_commit_acknowledged_after_the_partition_changed_hands_is_a_fenced_commit() {
        let mut h = H::default();
        h.produced(0..12);
        h.poll(
            0,
            0,
            0,
            &[0],
            &[0..=9].into_iter().flatten().collect::<Vec<_>>(),
        );
        // Member 0 pauses past its session timeout; member 1 takes the partition over and
        // commits; then member 0, back, commits what it was handed: it must be refused.
        let over = h.poll(1, 0, 0, &[0], &[0, 1]);
        h.commit(1, 0, 2, T::Ok);
        let late = h.commit(0, 0, 8, T::Ok);
        // Refused or unknown: no anomaly.
        h.commit(0, 0, 9, T::Fail);
        h.commit(0, 0, 9, T::Info);
        // Member 0 polls again in a new session (it was removed), without the partition.
        h.poll(0, 0, 1, &[], &[]);
        h.final_read(0..12);
        let r = check(&h.events);
        only(&r, AnomalyKind::FencedCommit, 1);
        let x = &r.fenced_commit.ops[0];
        assert!(x.events.contains(&over) && x.events.contains(&late));
        assert!(
            x.explanation
                .contains("member 1 incarnation 0 had taken the partition over"),
            "{}",
            x.explanation
        );
        assert!(!r.is_valid(Guarantees::AP), "commits are CP in every mode");
    }

    #[test]
    fn a_commit_after_a_poll_that_did_not_say_what_was_owned_is_not_judged() {
        let mut h = H::default();
        h.produced(0..4);
        h.poll(0, 0, 0, &[0], &[0, 1]);
        // A poll whose answer was lost: member 0 may have given the partition up there.
        h.push(10, T::Invoke, crate::group::poll(0, 0, None));
        h.push(10, T::Info, crate::group::poll(0, 0, None));
        h.poll(1, 0, 0, &[0], &[2]);
        h.commit(0, 0, 2, T::Ok);
        h.final_read(0..4);
        assert_eq!(check(&h.events).fenced_commit.count, 0);
    }

    #[test]
    fn a_commit_beyond_what_was_handed_out_is_committed_too_far() {
        let mut h = H::default();
        h.produced(0..4);
        h.poll(0, 0, 0, &[0], &[0, 1]);
        h.commit(0, 0, 2, T::Ok);
        let c = h.commit(0, 0, 3, T::Ok);
        // Unknown outcome: it may have taken effect, so it is judged too.
        h.commit(0, 0, 4, T::Info);
        // Refused: harmless.
        h.commit(0, 0, 4, T::Fail);
        // A new ownership that handed out nothing yet commits nothing.
        h.poll(1, 0, 0, &[0], &[]);
        h.commit(1, 0, 2, T::Ok);
        h.final_read(0..4);
        let r = check(&h.events);
        only(&r, AnomalyKind::CommittedTooFar, 3);
        let x = &r.committed_too_far.ops[0];
        assert_eq!((x.events[1], x.offsets.clone()), (c, vec![3]));
        assert!(
            x.explanation.contains("its last record of it was offset 1"),
            "{}",
            x.explanation
        );
        assert!(
            r.committed_too_far.ops[2]
                .explanation
                .contains("handed out nothing of it")
        );
        assert!(!r.is_valid(Guarantees::AP), "a violation in every mode");
    }

    #[test]
    fn redelivery_below_the_last_commit_before_a_hand_over_is_a_duplicate_delivery() {
        let mut h = H::default();
        h.produced(0..6);
        h.poll(0, 0, 0, &[0], &[0, 1, 2, 3, 4]);
        let c = h.commit(0, 0, 4, T::Ok);
        // Member 1 starts at 2: 2 and 3 are below the commit, 4 is at it (allowed).
        let a = h.poll(1, 0, 0, &[0], &[2, 3, 4, 5]);
        h.final_read(0..6);
        let r = check(&h.events);
        only(&r, AnomalyKind::DuplicateDelivery, 2);
        let x = &r.duplicate_delivery.ops[0];
        assert_eq!(
            (x.events[1..].to_vec(), x.offsets.clone()),
            (vec![c, a], vec![2, 4])
        );
        assert!(
            x.explanation.contains("before the partition changed hands"),
            "{}",
            x.explanation
        );
        assert!(
            r.is_valid(Guarantees::from_modes("cp", "ap")),
            "AP reads may"
        );
    }

    #[test]
    fn an_acknowledged_record_no_member_handed_out_by_the_drain_is_a_lost_write() {
        let mut h = H::default();
        h.produced(0..3);
        h.poll(0, 0, 0, &[0], &[0, 1]);
        h.commit(0, 0, 2, T::Ok);
        // A new owner takes over at 2 but never hands 2 out; the final read shows it written.
        h.poll(1, 0, 0, &[0], &[]);
        h.final_read(0..3);
        let d = h.drain(3);
        let r = check(&h.events);
        only(&r, AnomalyKind::LostWrite, 1);
        let x = &r.lost_write.ops[0];
        assert_eq!(
            (x.events[2], x.offsets.clone(), x.values.clone()),
            (d, vec![2], vec![102])
        );
        assert!(r.is_valid(Guarantees::AP), "AP acks may lose records");
        // Without a drain, nothing is judged.
        h.events.truncate(h.events.len() - 2);
        let r = check(&h.events);
        assert_eq!(r.found(), vec![], "{r:#?}");
        assert_eq!(r.totals.group_drained, None);
        // A drain tried and failed: the group did not recover, and lost-write judges nothing.
        h.push(crate::group::DRAINER, T::Invoke, crate::group::drain());
        h.push(crate::group::DRAINER, T::Info, crate::group::drain());
        let r = check(&h.events);
        only(&r, AnomalyKind::Unrecovered, 1);
        assert_eq!(r.totals.group_drained, Some(false));
        assert!(!r.is_valid(Guarantees::AP));
    }

    #[test]
    fn a_group_poll_round_trips_through_one_json_line() {
        let e = Event {
            index: 4,
            time_ns: 5,
            process: 20,
            kind: T::Ok,
            op: crate::group::polled(
                1,
                2,
                vec![GroupRecord {
                    partition: 0,
                    offset: 3,
                    value: 9,
                }],
                Membership {
                    epoch: 7,
                    session: 1,
                    partitions: vec![0, 2],
                },
            ),
            error: None,
            instance: None,
        };
        let line = e.to_jsonl();
        assert_eq!(
            line,
            r#"{"index":4,"time_ns":5,"process":20,"type":"ok","f":"group_poll","member":1,"incarnation":2,"records":[{"partition":0,"offset":3,"value":9}],"owned":{"epoch":7,"session":1,"partitions":[0,2]}}"#
        );
        assert_eq!(crate::history::parse_jsonl(&line).unwrap(), vec![e]);
    }
}
