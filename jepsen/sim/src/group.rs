//! The consumer-group workload on the simulated client host (the shared model:
//! `fjord_harness::group`): [`SimConfig::group_members`](crate::SimConfig) members of one
//! group read the run's topic with the real `GroupConsumer` (auto-commit off, each commit
//! recorded with its offsets), crash and pause as their seeded plans say while the writes go
//! on, then read on until the group has handed out every partition to its end ([`drain`]).
//!
//! Member `m` is process `first + m` (`first`: after the writers, pollers and fencing
//! writers); the drain is [`DRAINER`]'s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fjord_client::{Client, FetchOptions, GroupConfig, GroupConsumer, ReadMode};
use fjord_harness::group::{self as model, DRAINER, MemberPlan, Progress, Step};
use fjord_harness::history::{EventType, Membership};

use crate::workload::{Shared, Workload, event, now, outcome_of, record};

/// What the members share: how far the group has read, and whether the drain is over.
#[derive(Debug, Default)]
pub struct Group {
    progress: Mutex<Progress>,
    done: std::sync::atomic::AtomicBool,
}

impl Group {
    fn done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends the members (after the drain, or without one).
    pub fn stop(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Long-poll wait of a member's fetches (the client caps it at half a heartbeat interval).
const POLL_WAIT_MS: u32 = 300;
/// Pause after a failed poll or commit.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often the drain looks at the group's progress.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(100);

fn consumer(client: &Client, w: &Workload, member: u32) -> GroupConsumer {
    let mut config = GroupConfig::new(model::GROUP, vec![w.topic.clone()]);
    config.auto_commit = false;
    config.client_id = format!("jepsen-member-{member}");
    config.fetch = FetchOptions {
        max_wait_ms: POLL_WAIT_MS,
        read: ReadMode::Cp,
        ..Default::default()
    };
    client
        .group_consumer(config)
        .expect("a valid group consumer config")
}

/// The member's state as the history holds it.
fn membership(c: &GroupConsumer, topic: &str) -> Membership {
    Membership {
        epoch: c.member_epoch(),
        session: c.session(),
        partitions: c
            .assignment()
            .into_iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p)
            .collect(),
    }
}

/// Member `member` (process `process`): polls, commits, crashes and pauses as its plan says
/// until the drain is over; faults (crashes, pauses) only until the writes end.
pub async fn member(
    client: Client,
    w: Workload,
    history: Shared,
    group: Arc<Group>,
    member: u32,
    process: u32,
) {
    let mut plan = MemberPlan::new(w.seed, member);
    let mut incarnation = 0u32;
    let mut c = consumer(&client, &w, member);
    let mut step = Step::Poll;
    while !group.done() {
        step = match step {
            Step::Poll => {
                poll(&mut c, &w, &history, &group, member, incarnation, process).await;
                plan.after_poll(now() < w.writes_until)
            }
            Step::Commit => {
                commit(&mut c, &w, &history, member, incarnation, process).await;
                Step::Poll
            }
            Step::Crash => {
                // Dropped without a word, as a killed process; a new incarnation joins.
                incarnation += 1;
                c = consumer(&client, &w, member);
                Step::Poll
            }
            Step::Pause(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                plan.after_pause()
            }
        };
    }
    let _ = c.close().await;
}

async fn poll(
    c: &mut GroupConsumer,
    w: &Workload,
    history: &Shared,
    group: &Group,
    member: u32,
    incarnation: u32,
    process: u32,
) {
    event(
        history,
        process,
        EventType::Invoke,
        model::poll(member, incarnation, None),
        None,
    );
    match c.poll().await {
        Ok(records) => {
            let records: Vec<_> = records
                .iter()
                .filter(|r| r.topic == w.topic)
                .map(|r| model::handed(r.record.partition, r.record.offset, &r.record.value))
                .collect();
            group
                .progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .handed(&records);
            let op = model::polled(member, incarnation, records, membership(c, &w.topic));
            event(history, process, EventType::Ok, op, None);
        }
        Err(e) => {
            let op = model::poll(member, incarnation, Some(membership(c, &w.topic)));
            event(history, process, outcome_of(&e), op, Some(e.to_string()));
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

async fn commit(
    c: &mut GroupConsumer,
    w: &Workload,
    history: &Shared,
    member: u32,
    incarnation: u32,
    process: u32,
) {
    let Some(op) = model::pending_commit(member, incarnation, c.pending_commit(), &w.topic) else {
        return;
    };
    event(history, process, EventType::Invoke, op.clone(), None);
    match c.commit().await {
        Ok(()) => event(history, process, EventType::Ok, op, None),
        Err(e) => {
            event(
                history,
                process,
                model::FAILED_COMMIT,
                op,
                Some(e.to_string()),
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Waits until the group has handed out every partition up to `ends` or `deadline` passed,
/// records it as the drain, and ends the members.
pub async fn drain(group: &Group, ends: BTreeMap<u32, u64>, deadline: Duration, history: &Shared) {
    event(history, DRAINER, EventType::Invoke, model::drain(), None);
    loop {
        let reached = group
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reached(&ends);
        if reached {
            event(history, DRAINER, EventType::Ok, model::drained(&ends), None);
            break;
        }
        if now() > deadline {
            let why = format!(
                "the group did not hand out every partition up to {ends:?} by {deadline:?}"
            );
            event(
                history,
                DRAINER,
                EventType::Fail,
                model::drain(),
                Some(why.clone()),
            );
            record(history, |h| h.stuck.push(why));
            break;
        }
        tokio::time::sleep(DRAIN_CHECK_EVERY).await;
    }
    group.stop();
}
