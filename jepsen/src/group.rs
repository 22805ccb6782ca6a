//! The consumer-group workload against real processes (the shared model:
//! `fjord_harness::group`): `--group-members` members of one group read the run's topic with
//! the real `GroupConsumer` (auto-commit off, each commit recorded with its offsets), crash
//! and pause as their seeded plans say until the run's end, then, once the final reads know
//! each partition's end, read on until the group has handed out everything ([`drain`]).
//!
//! What must hold: each member is one process with at most one operation outstanding; a
//! failed commit is recorded as unknown (`FAILED_COMMIT`); the members stop by themselves
//! once [`Group::stop`] is called.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fjord_client::{Client, ClientError, FetchOptions, GroupConfig, GroupConsumer, ReadMode};
use fjord_harness::group::{self as model, DRAINER, MemberPlan, Progress, Step};
use fjord_harness::history::{EventType, Membership};
use tokio::sync::watch;

use crate::workload::Recorder;

/// What the members share: how far the group has read, and whether they are done.
#[derive(Debug, Default)]
pub struct Group {
    progress: Mutex<Progress>,
    done: AtomicBool,
}

impl Group {
    fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Ends the members (after the drain, or without one).
    pub fn stop(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// What a member needs to know of the run.
#[derive(Debug, Clone)]
pub struct MemberOptions {
    pub topic: String,
    pub read: ReadMode,
    pub seed: u64,
    /// A poll without an answer after this long is recorded as unknown.
    pub op_timeout: Duration,
}

/// Pause after a failed poll or commit.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often the drain looks at the group's progress.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(100);

fn classify(e: &ClientError) -> EventType {
    if e.is_outcome_unknown() {
        EventType::Info
    } else {
        EventType::Fail
    }
}

fn consumer(
    client: &Client,
    opts: &MemberOptions,
    member: u32,
) -> Result<GroupConsumer, ClientError> {
    let mut config = GroupConfig::new(model::GROUP, vec![opts.topic.clone()]);
    config.auto_commit = false;
    config.client_id = format!("jepsen-member-{member}");
    config.fetch = FetchOptions {
        read: opts.read,
        max_wait_ms: 200,
        max_bytes: 64 * 1024,
    };
    client.group_consumer(config)
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

/// Starts `members` members (processes `first..`); they run until [`Group::stop`], with
/// crashes and pauses until `chaos_until` turns true.
pub fn spawn(
    client: &Client,
    opts: &MemberOptions,
    members: u32,
    first: u32,
    rec: &Arc<Recorder>,
    group: &Arc<Group>,
    calm: &watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let mut tasks = tokio::task::JoinSet::new();
    for m in 0..members {
        // A bad config shows before the run, not in a task.
        consumer(client, opts, m)?;
        tasks.spawn(member(
            client.clone(),
            opts.clone(),
            rec.clone(),
            group.clone(),
            calm.clone(),
            m,
            model::member_process(first, m),
        ));
    }
    Ok(tasks)
}

/// Member `member` (process `p`): polls, commits, crashes and pauses as its plan says until
/// the group is stopped; crashes and pauses only until `calm` turns true.
async fn member(
    client: Client,
    opts: MemberOptions,
    rec: Arc<Recorder>,
    group: Arc<Group>,
    calm: watch::Receiver<bool>,
    member: u32,
    p: u32,
) {
    let mut plan = MemberPlan::new(opts.seed, member);
    let mut incarnation = 0u32;
    let Ok(mut c) = consumer(&client, &opts, member) else {
        return;
    };
    let mut step = Step::Poll;
    while !group.done() {
        step = match step {
            Step::Poll => {
                poll(&mut c, &opts, &rec, &group, member, incarnation, p).await;
                plan.after_poll(!*calm.borrow())
            }
            Step::Commit => {
                commit(&mut c, &opts, &rec, member, incarnation, p).await;
                Step::Poll
            }
            Step::Crash => match consumer(&client, &opts, member) {
                // Dropped without a word, as a killed process; a new incarnation joins.
                Ok(fresh) => {
                    c = fresh;
                    incarnation += 1;
                    Step::Poll
                }
                Err(_) => Step::Poll,
            },
            Step::Pause(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                plan.after_pause()
            }
        };
    }
    let _ = tokio::time::timeout(opts.op_timeout, c.close()).await;
}

async fn poll(
    c: &mut GroupConsumer,
    opts: &MemberOptions,
    rec: &Recorder,
    group: &Group,
    member: u32,
    incarnation: u32,
    p: u32,
) {
    rec.record(
        p,
        EventType::Invoke,
        model::poll(member, incarnation, None),
        None,
    );
    let (kind, error) = match tokio::time::timeout(opts.op_timeout, c.poll()).await {
        Ok(Ok(records)) => {
            let records: Vec<_> = records
                .iter()
                .filter(|r| r.topic == opts.topic)
                .map(|r| model::handed(r.record.partition, r.record.offset, &r.record.value))
                .collect();
            group
                .progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .handed(&records);
            let op = model::polled(member, incarnation, records, membership(c, &opts.topic));
            rec.record(p, EventType::Ok, op, None);
            return;
        }
        Ok(Err(e)) => (classify(&e), e.to_string()),
        Err(_) => (
            EventType::Info,
            "no answer within the operation timeout".to_string(),
        ),
    };
    let op = model::poll(member, incarnation, Some(membership(c, &opts.topic)));
    rec.record(p, kind, op, Some(error));
    tokio::time::sleep(RETRY_PAUSE).await;
}

/// One commit of what was handed out, if anything is to be committed. Not cut short by the
/// operation timeout: a commit abandoned in flight could take effect after later ones.
async fn commit(
    c: &mut GroupConsumer,
    opts: &MemberOptions,
    rec: &Recorder,
    member: u32,
    incarnation: u32,
    p: u32,
) {
    let Some(op) = model::pending_commit(member, incarnation, c.pending_commit(), &opts.topic)
    else {
        return;
    };
    rec.record(p, EventType::Invoke, op.clone(), None);
    match c.commit().await {
        Ok(()) => rec.record(p, EventType::Ok, op, None),
        Err(e) => {
            rec.record(p, model::FAILED_COMMIT, op, Some(e.to_string()));
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Waits until the group has handed out every partition up to `ends` or `deadline` passed,
/// records it as the drain, and stops the members; whether it drained.
pub async fn drain(
    group: &Group,
    ends: BTreeMap<u32, u64>,
    deadline: Instant,
    rec: &Recorder,
) -> bool {
    rec.record(DRAINER, EventType::Invoke, model::drain(), None);
    let drained = loop {
        let reached = group
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reached(&ends);
        if reached {
            rec.record(DRAINER, EventType::Ok, model::drained(&ends), None);
            break true;
        }
        if Instant::now() > deadline {
            let why = format!("the group did not hand out every partition up to {ends:?} in time");
            rec.record(DRAINER, EventType::Fail, model::drain(), Some(why));
            break false;
        }
        tokio::time::sleep(DRAIN_CHECK_EVERY).await;
    };
    group.stop();
    drained
}
