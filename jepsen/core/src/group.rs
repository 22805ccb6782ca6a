//! The consumer-group workload's model, as far as it is pure: the group, its members and
//! their processes, what a member does between two polls (its seeded [`MemberPlan`]: commit
//! every [`COMMIT_EVERY_POLLS`] polls, now and then crash or pause), the history's
//! operations ([`poll`], [`polled`], [`commit`], [`drain`], [`drained`]), and when the group
//! has read everything ([`Progress`]). The checker's rules for it are
//! `checker`'s `group` rules (`poll-skip`, `nonmonotonic-poll`, `lost-write`,
//! `committed-too-far`, `duplicate-delivery`).
//!
//! Each tier runs [`GROUP_MEMBERS`] members by default, each a loop of one process that
//! polls with the real `GroupConsumer` (auto-commit off: every commit is an explicit call,
//! recorded with the offsets it sends), until the run's writes end. A **crash** drops the
//! member without closing it, as a killed process would, and starts a new incarnation (a new
//! `GroupConsumer`); the coordinator removes the old one after its session timeout. A
//! **pause** stops polling, half of the time for longer than the session timeout (the member
//! is removed and must find out, then rejoin), and is followed by a commit (a removed
//! member's commit must be refused). Then every member reads on without faults until the
//! group has handed out each partition up to its end (the drain).
//!
//! What must hold: a plan is a function of the seed and the member's number; a member
//! crashes at most [`MAX_CRASHES`] and pauses at most [`MAX_PAUSES`] times a run, and only
//! while faults are allowed.

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::StdRng;

use crate::history::{GroupRecord, Membership, Op, PartitionOffset};

/// The group's name.
pub const GROUP: &str = "jepsen-group";
/// Members of the group by default.
pub const GROUP_MEMBERS: u32 = 3;
/// The coordinator's session timeout in the harness's clusters (`--group-session-timeout-ms`):
/// short, so that crashes and pauses move partitions within a run.
pub const SESSION_TIMEOUT_MS: u64 = 2_000;
/// The coordinator's heartbeat interval in the harness's clusters
/// (`--group-heartbeat-interval-ms`); a poll waits at most half of it.
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
/// Partitions of the groups' internal topic in the harness's clusters (`--group-partitions`):
/// the run has one group, and more would only add Raft groups to tick.
pub const COORDINATOR_PARTITIONS: u32 = 1;
/// A member commits what it was handed every this many polls.
pub const COMMIT_EVERY_POLLS: u32 = 3;
/// Crashes of one member in a run, at most.
pub const MAX_CRASHES: u32 = 2;
/// Pauses of one member in a run, at most.
pub const MAX_PAUSES: u32 = 2;
/// A member crashes after a poll with probability 1 in this, and pauses likewise.
const CHAOS_ONE_IN: u32 = 120;
/// A short pause (the member stays in the group), in ms.
const SHORT_PAUSE_MS: (u64, u64) = (300, 1_200);
/// A long pause: past the session timeout by this much, in ms.
const LONG_PAST_SESSION_MS: (u64, u64) = (500, 1_500);

/// The process of member `member`, given the first process number the tier leaves to the
/// group's members.
pub fn member_process(first: u32, member: u32) -> u32 {
    first + member
}

/// The process that records the drain (apart from every other).
pub const DRAINER: u32 = u32::MAX - 2;

/// What a member does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Poll,
    /// Commit what was handed out (the client's `commit`), then poll.
    Commit,
    /// Drop the member without closing it; a new incarnation polls next.
    Crash,
    /// Stop polling this long (ms), then commit, then poll.
    Pause(u64),
}

/// One member's seeded choices between its polls.
#[derive(Debug)]
pub struct MemberPlan {
    rng: StdRng,
    polls: u32,
    crashes: u32,
    pauses: u32,
    commit_next: bool,
}

impl MemberPlan {
    pub fn new(seed: u64, member: u32) -> MemberPlan {
        MemberPlan {
            rng: crate::workload::producer_rng(seed, (2 << 24) | u64::from(member)),
            polls: 0,
            crashes: 0,
            pauses: 0,
            commit_next: false,
        }
    }

    /// The step after a poll; `chaos`: crashes and pauses are allowed now (not in the drain).
    pub fn after_poll(&mut self, chaos: bool) -> Step {
        self.polls += 1;
        if chaos && self.crashes < MAX_CRASHES && self.rng.gen_ratio(1, CHAOS_ONE_IN) {
            self.crashes += 1;
            return Step::Crash;
        }
        if chaos && self.pauses < MAX_PAUSES && self.rng.gen_ratio(1, CHAOS_ONE_IN) {
            self.pauses += 1;
            self.commit_next = true;
            let ms = if self.rng.gen_bool(0.5) {
                self.rng.gen_range(SHORT_PAUSE_MS.0..=SHORT_PAUSE_MS.1)
            } else {
                SESSION_TIMEOUT_MS
                    + self
                        .rng
                        .gen_range(LONG_PAST_SESSION_MS.0..=LONG_PAST_SESSION_MS.1)
            };
            return Step::Pause(ms);
        }
        if self.polls.is_multiple_of(COMMIT_EVERY_POLLS) {
            Step::Commit
        } else {
            Step::Poll
        }
    }

    /// The step after a pause: a commit (which the coordinator must refuse if the pause
    /// outlasted the session).
    pub fn after_pause(&mut self) -> Step {
        if std::mem::take(&mut self.commit_next) {
            Step::Commit
        } else {
            Step::Poll
        }
    }
}

/// A record a member handed out at `offset` of `partition`, as the history holds it.
pub fn handed(partition: u32, offset: u64, payload: &[u8]) -> GroupRecord {
    GroupRecord {
        partition,
        offset,
        value: crate::workload::decode(payload),
    }
}

/// The invoke of a member's poll, and its completion if not `ok`, with the member's state
/// after it.
pub fn poll(member: u32, incarnation: u32, owned: Option<Membership>) -> Op {
    Op::GroupPoll {
        member,
        incarnation,
        records: vec![],
        owned,
    }
}

/// The `ok` completion of a member's poll.
pub fn polled(member: u32, incarnation: u32, records: Vec<GroupRecord>, owned: Membership) -> Op {
    Op::GroupPoll {
        member,
        incarnation,
        records,
        owned: Some(owned),
    }
}

/// How a commit that returned an error is recorded: unknown, always. The client retries a
/// commit whose attempt timed out or found no coordinator, so even a refusal (fenced, not
/// owned) may follow an earlier attempt that took effect.
pub const FAILED_COMMIT: crate::history::EventType = crate::history::EventType::Info;

/// The commit a member is about to send, as the history records it: its pending
/// `(topic, partition, offset)`s of the workload's `topic`; `None` when there is nothing to
/// commit.
pub fn pending_commit(
    member: u32,
    incarnation: u32,
    pending: impl IntoIterator<Item = (String, u32, u64)>,
    topic: &str,
) -> Option<Op> {
    let offsets: Vec<PartitionOffset> = pending
        .into_iter()
        .filter(|(t, _, _)| t == topic)
        .map(|(_, partition, offset)| PartitionOffset { partition, offset })
        .collect();
    (!offsets.is_empty()).then(|| commit(member, incarnation, offsets))
}

/// A member's commit of `offsets` (invoke and completion alike).
pub fn commit(member: u32, incarnation: u32, offsets: Vec<PartitionOffset>) -> Op {
    Op::GroupCommit {
        member,
        incarnation,
        offsets,
    }
}

/// The drain's invoke, and its completion if not `ok`.
pub fn drain() -> Op {
    Op::GroupDrain { ends: vec![] }
}

/// The drain's `ok` completion: the group handed out every partition up to `ends`.
pub fn drained(ends: &BTreeMap<u32, u64>) -> Op {
    Op::GroupDrain {
        ends: ends
            .iter()
            .map(|(&partition, &offset)| PartitionOffset { partition, offset })
            .collect(),
    }
}

/// How far the group has handed out each partition: one past the highest offset any member
/// handed out. The drain is done when that reaches every partition's end.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    next: BTreeMap<u32, u64>,
}

impl Progress {
    /// A member handed out `records`.
    pub fn handed(&mut self, records: &[GroupRecord]) {
        for r in records {
            let next = self.next.entry(r.partition).or_default();
            *next = (*next).max(r.offset.saturating_add(1));
        }
    }

    /// Whether every partition in `ends` was handed out up to its end.
    pub fn reached(&self, ends: &BTreeMap<u32, u64>) -> bool {
        ends.iter()
            .all(|(p, end)| self.next.get(p).copied().unwrap_or(0) >= *end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_commits_every_few_polls_and_its_chaos_is_bounded_and_seeded() {
        let steps = |seed, chaos| {
            let mut plan = MemberPlan::new(seed, 1);
            (0..3_000)
                .map(|_| match plan.after_poll(chaos) {
                    Step::Pause(ms) => {
                        assert!(ms >= SHORT_PAUSE_MS.0);
                        assert_eq!(plan.after_pause(), Step::Commit);
                        Step::Pause(ms)
                    }
                    s => s,
                })
                .collect::<Vec<_>>()
        };
        let a = steps(7, true);
        assert_eq!(a, steps(7, true));
        let count = |s: &[Step], f: fn(&Step) -> bool| s.iter().filter(|x| f(x)).count();
        assert_eq!(count(&a, |s| *s == Step::Crash), MAX_CRASHES as usize);
        assert_eq!(
            count(&a, |s| matches!(s, Step::Pause(_))),
            MAX_PAUSES as usize
        );
        let calm = steps(7, false);
        assert!(calm.iter().all(|s| matches!(s, Step::Poll | Step::Commit)));
        assert_eq!(calm[..3], [Step::Poll, Step::Poll, Step::Commit]);
    }

    #[test]
    fn progress_reaches_the_ends_once_every_partition_was_handed_out() {
        let mut p = Progress::default();
        let ends = BTreeMap::from([(0, 2), (1, 0), (2, 1)]);
        let rec = |partition, offset| GroupRecord {
            partition,
            offset,
            value: 0,
        };
        p.handed(&[rec(0, 0), rec(0, 1)]);
        assert!(!p.reached(&ends));
        p.handed(&[rec(2, 0)]);
        assert!(p.reached(&ends));
    }
}
