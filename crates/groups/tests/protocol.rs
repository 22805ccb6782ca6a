//! The group protocol against a model of its members: random joins, heartbeats, leaves,
//! static restarts and removals, each decision's records encoded, decoded and replayed, as a
//! replica would. What must hold after every step:
//! - no two members in the group hold a partition at once (each holds what its last answer
//!   gave it, and gives up the rest at once, as a client does);
//! - the replayed groups pass their invariants;
//! - once everyone heartbeats twice with nothing changing, every subscribed partition is held
//!   by exactly one member, and counts differ by at most one.

use std::collections::{BTreeMap, BTreeSet};

use fjord_groups::config::{self, AlterConfigRequest, Change};
use fjord_groups::heartbeat::{self, HeartbeatRequest, remove};
use fjord_groups::offsets::{self, Committer, OffsetCommit};
use fjord_groups::*;
use proptest::prelude::*;

struct Sim {
    groups: Groups,
    topics: TopicsView,
    /// Members as their clients see them: id → (epoch, held partitions, instance id).
    clients: BTreeMap<String, (u32, BTreeSet<Tp>, Option<String>)>,
    next_id: u32,
    now_ms: i64,
    /// The assignor a joining member asks for.
    join_assignor: Option<Assignor>,
}

fn apply(groups: &mut Groups, records: &[GroupRecord]) {
    for r in records {
        let (k, v) = r.encode();
        let back = GroupRecord::decode(&k, v.as_deref()).expect("decodes");
        assert_eq!(&back, r);
        groups.apply(&back);
    }
    groups.validate().expect("replayed groups are valid");
}

impl Sim {
    fn new(partitions: u32) -> Self {
        Sim {
            groups: Groups::default(),
            topics: TopicsView::new([("t".to_string(), 1, partitions)]),
            clients: BTreeMap::new(),
            next_id: 0,
            now_ms: 0,
            join_assignor: None,
        }
    }

    fn ctx<'a>(&'a self, id: &'a str) -> Context<'a> {
        Context {
            topics: &self.topics,
            now_ms: self.now_ms,
            groups_held: self.groups.len(),
            new_member_id: id,
            defaults: Defaults::default(),
        }
    }

    fn beat(
        &mut self,
        member: Option<&str>,
        instance: Option<String>,
    ) -> Result<String, GroupError> {
        self.now_ms += 1;
        let fresh = format!("m{}", self.next_id);
        self.next_id += 1;
        let (member_id, beat, owned, instance) = match member {
            None => (String::new(), Beat::Join, BTreeSet::new(), instance),
            Some(id) => {
                let (epoch, held, inst) = &self.clients[id];
                (id.to_string(), Beat::At(*epoch), held.clone(), inst.clone())
            }
        };
        let req = HeartbeatRequest {
            group: "g".into(),
            member_id,
            beat: Some(beat),
            instance_id: if beat == Beat::Join {
                instance.clone()
            } else {
                None
            },
            subscription: Some(Subscription {
                topics: ["t".to_string()].into(),
                pattern: None,
            }),
            owned: Some(owned),
            assignor: if beat == Beat::Join {
                self.join_assignor
            } else {
                None
            },
            ..HeartbeatRequest::default()
        };
        let d = heartbeat::heartbeat(self.groups.get("g"), &req, &self.ctx(&fresh))?;
        apply(&mut self.groups, &d.records);
        let a = d.answer;
        // A static restart fences the instance's old member id: its client is gone.
        if let (Some(i), Beat::Join) = (&instance, beat) {
            self.clients
                .retain(|_, (_, _, inst)| inst.as_deref() != Some(i));
        }
        self.clients.insert(
            a.member_id.clone(),
            (a.member_epoch.unwrap(), a.assignment, instance),
        );
        Ok(a.member_id)
    }

    fn leave(&mut self, id: &str) {
        let req = HeartbeatRequest {
            group: "g".into(),
            member_id: id.into(),
            beat: Some(Beat::Leave),
            ..HeartbeatRequest::default()
        };
        let d = heartbeat::heartbeat(self.groups.get("g"), &req, &self.ctx("unused")).unwrap();
        apply(&mut self.groups, &d.records);
        self.clients.remove(id);
    }

    fn expire(&mut self, id: &str) {
        let records = remove(self.groups.get("g").unwrap(), id, self.now_ms);
        apply(&mut self.groups, &records);
        self.clients.remove(id);
    }

    fn check_exclusive(&self) {
        let mut seen: BTreeMap<Tp, &str> = BTreeMap::new();
        for (id, (_, held, _)) in &self.clients {
            for tp in held {
                if let Some(other) = seen.insert(*tp, id) {
                    panic!("{tp:?} held by {other} and {id}");
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Join,
    JoinStatic(u8),
    Beat(usize),
    Leave(usize),
    Expire(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Join),
        1 => (0u8..3).prop_map(Step::JoinStatic),
        8 => any::<usize>().prop_map(Step::Beat),
        1 => any::<usize>().prop_map(Step::Leave),
        1 => any::<usize>().prop_map(Step::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn members_never_hold_a_partition_together_and_settle_balanced(
        partitions in 1u32..13,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut sim = Sim::new(partitions);
        for s in steps {
            let ids: Vec<String> = sim.clients.keys().cloned().collect();
            let pick = |i: usize| ids.get(i % ids.len().max(1)).cloned();
            match s {
                Step::Join => { sim.beat(None, None).unwrap(); }
                Step::JoinStatic(i) => { sim.beat(None, Some(format!("i{i}"))).unwrap(); }
                Step::Beat(i) => if let Some(id) = pick(i) { sim.beat(Some(&id), None).unwrap(); },
                Step::Leave(i) => if let Some(id) = pick(i) { sim.leave(&id) },
                Step::Expire(i) => if let Some(id) = pick(i) { sim.expire(&id) },
            }
            sim.check_exclusive();
        }
        // Settle: everyone heartbeats until nothing changes.
        for _ in 0..6 {
            let ids: Vec<String> = sim.clients.keys().cloned().collect();
            for id in ids {
                sim.beat(Some(&id), None).unwrap();
                sim.check_exclusive();
            }
        }
        let g = sim.groups.get("g");
        if sim.clients.is_empty() {
            prop_assert!(g.is_none_or(|g| g.members.is_empty()));
        } else {
            let g = g.unwrap();
            prop_assert_eq!(g.state(), GroupState::Stable);
            let held: usize = sim.clients.values().map(|c| c.1.len()).sum();
            prop_assert_eq!(held, partitions as usize);
            let counts: Vec<usize> = sim.clients.values().map(|c| c.1.len()).collect();
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{:?}", counts);
        }
    }
}

#[test]
fn a_static_member_restarting_moves_nothing() {
    let mut sim = Sim::new(6);
    let a = sim.beat(None, Some("svc-0".into())).unwrap();
    let b = sim.beat(None, Some("svc-1".into())).unwrap();
    for _ in 0..3 {
        sim.beat(Some(&a), None).unwrap();
        sim.beat(Some(&b), None).unwrap();
    }
    let before_b = sim.clients[&b].1.clone();
    assert_eq!(before_b.len(), 3);
    let epoch_before = sim.groups.get("g").unwrap().meta.epoch;
    // svc-1 restarts (crashed, no leave): its new instance gets the same partitions at once.
    let b2 = sim.beat(None, Some("svc-1".into())).unwrap();
    assert_ne!(b2, b);
    assert_eq!(sim.clients[&b2].1, before_b);
    assert_eq!(
        sim.groups.get("g").unwrap().meta.epoch,
        epoch_before,
        "no rebalance"
    );
    // The old member id is fenced.
    let req = HeartbeatRequest {
        group: "g".into(),
        member_id: b.clone(),
        beat: Some(Beat::At(2)),
        ..HeartbeatRequest::default()
    };
    let err = heartbeat::heartbeat(sim.groups.get("g"), &req, &sim.ctx("x")).unwrap_err();
    assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
    // The old process, still alive, heartbeats with its instance id (as the client does):
    // told it is fenced for good, not to rejoin.
    let with_instance = HeartbeatRequest {
        instance_id: Some("svc-1".into()),
        ..req.clone()
    };
    let err = heartbeat::heartbeat(sim.groups.get("g"), &with_instance, &sim.ctx("x")).unwrap_err();
    assert!(matches!(err, GroupError::FencedInstance { .. }), "{err}");
    // Nor may it rejoin under its old member id and take the partitions back (two live
    // processes with one instance id would take them from each other for ever).
    let rejoin = HeartbeatRequest {
        beat: Some(Beat::Join),
        subscription: Some(Subscription {
            topics: ["t".to_string()].into(),
            pattern: None,
        }),
        ..with_instance
    };
    let err = heartbeat::heartbeat(sim.groups.get("g"), &rejoin, &sim.ctx("x")).unwrap_err();
    assert!(matches!(err, GroupError::FencedInstance { .. }), "{err}");
    assert_eq!(sim.clients[&b2].1, before_b, "b2 keeps its partitions");
}

#[test]
fn commits_are_fenced_by_ownership_epoch_and_high_watermark() {
    let mut sim = Sim::new(2);
    let a = sim.beat(None, None).unwrap();
    sim.beat(Some(&a), None).unwrap();
    let (epoch, held, _) = sim.clients[&a].clone();
    assert_eq!(held.len(), 2);
    let g = sim.groups.get("g").unwrap().clone();
    let hw = |_tp: Tp| Some(10);
    let c = |offset| {
        vec![OffsetCommit {
            tp: Tp::new(1, 0),
            offset,
            metadata: String::new(),
        }]
    };
    let who = Committer::Member {
        id: a.clone(),
        epoch,
    };
    let ok = offsets::commit(Some(&g), &req(&who, &c(10)), &sim.topics, hw, 5, 1).unwrap();
    assert_eq!(ok.records.len(), 1);
    let err = offsets::commit(Some(&g), &req(&who, &c(11)), &sim.topics, hw, 5, 1).unwrap_err();
    assert!(matches!(
        err,
        GroupError::OffsetAboveHighWatermark {
            high_watermark: 10,
            ..
        }
    ));
    let newer = Committer::Member {
        id: a.clone(),
        epoch: epoch + 1,
    };
    let err = offsets::commit(Some(&g), &req(&newer, &c(1)), &sim.topics, hw, 5, 1).unwrap_err();
    assert!(matches!(err, GroupError::FencedMemberEpoch { .. }));
    let admin = offsets::commit(
        Some(&g),
        &req(&Committer::Admin, &c(1)),
        &sim.topics,
        hw,
        5,
        1,
    );
    assert!(matches!(admin, Err(GroupError::NotEmpty { .. })));
    // b joins: a must give up one partition; until it did, b's commit of it is refused.
    let b = sim.beat(None, None).unwrap();
    sim.beat(Some(&b), None).unwrap();
    let g = sim.groups.get("g").unwrap().clone();
    let (b_epoch, b_held, _) = sim.clients[&b].clone();
    assert!(b_held.is_empty(), "nothing before a revokes");
    let moving = g.targets[&b].iter().next().copied().unwrap();
    let cb = vec![OffsetCommit {
        tp: moving,
        offset: 3,
        metadata: String::new(),
    }];
    let err = offsets::commit(
        Some(&g),
        &req(
            &Committer::Member {
                id: b.clone(),
                epoch: b_epoch,
            },
            &cb,
        ),
        &sim.topics,
        hw,
        5,
        1,
    )
    .unwrap_err();
    assert!(matches!(err, GroupError::NotOwned { .. }), "{err}");
    // a still owns it (pending revocation) at its old epoch, and may commit it before it lets go.
    let ok = offsets::commit(Some(&g), &req(&who, &cb), &sim.topics, hw, 5, 1);
    assert!(ok.is_ok(), "{ok:?}");
    // a expires (a pause past its session): its commits are refused.
    sim.expire(&a);
    let g = sim.groups.get("g").unwrap().clone();
    let err = offsets::commit(Some(&g), &req(&who, &c(1)), &sim.topics, hw, 5, 1).unwrap_err();
    assert!(matches!(err, GroupError::UnknownMember { .. }));
}

fn req(who: &Committer, offsets: &[OffsetCommit]) -> offsets::CommitRequest {
    offsets::CommitRequest {
        group: "g".into(),
        who: who.clone(),
        offsets: offsets.to_vec(),
    }
}

#[test]
fn an_empty_group_expires_after_its_retention() {
    let mut sim = Sim::new(1);
    let a = sim.beat(None, None).unwrap();
    sim.beat(Some(&a), None).unwrap();
    let (epoch, _, _) = sim.clients[&a].clone();
    sim.commit_as(
        &Committer::Member {
            id: a.clone(),
            epoch,
        },
        0,
    );
    sim.leave(&a);
    let g = sim.groups.get("g").unwrap().clone();
    let left_at = g.meta.empty_since_ms.unwrap();
    assert!(offsets::expire(&g, &sim.topics, left_at + 99, 100).is_empty());
    let gone = offsets::expire(&g, &sim.topics, left_at + 100, 100);
    apply(&mut sim.groups, &gone);
    assert!(sim.groups.get("g").is_none());
}

#[test]
fn a_snapshot_replays_to_the_same_groups() {
    let mut sim = Sim::new(4);
    let a = sim.beat(None, Some("i".into())).unwrap();
    let b = sim.beat(None, None).unwrap();
    sim.beat(Some(&a), None).unwrap();
    sim.beat(Some(&b), None).unwrap();
    let mut copy = Groups::default();
    apply(&mut copy, &sim.groups.snapshot());
    assert_eq!(copy, sim.groups);
}

impl Sim {
    fn alter(&mut self, req: AlterConfigRequest) -> config::Effective {
        let d = config::alter(
            self.groups.get("g"),
            &req,
            Defaults::default(),
            self.now_ms,
            self.groups.len(),
        )
        .unwrap();
        apply(&mut self.groups, &d.records);
        d.answer
    }

    /// An admin commit of `offset` to t/0 at `now_ms`.
    fn admin_commit(&mut self, offset: u64) {
        self.commit_as(&Committer::Admin, offset);
    }

    /// A commit of `offset` to t/0 by `who` at `now_ms`, applied.
    fn commit_as(&mut self, who: &Committer, offset: u64) {
        let c = vec![OffsetCommit {
            tp: Tp::new(1, 0),
            offset,
            metadata: String::new(),
        }];
        let d = offsets::commit(
            self.groups.get("g"),
            &req(who, &c),
            &self.topics,
            |_| Some(offset),
            self.now_ms,
            self.groups.len(),
        )
        .unwrap();
        apply(&mut self.groups, &d.records);
    }
}

fn assignor_only(a: Change<Assignor>) -> AlterConfigRequest {
    AlterConfigRequest {
        group: "g".into(),
        assignor: a,
        ..AlterConfigRequest::default()
    }
}

#[test]
fn a_group_s_own_assignor_wins_over_its_members_and_a_change_reassigns() {
    let mut sim = Sim::new(4);
    sim.join_assignor = Some(Assignor::Range);
    let a = sim.beat(None, None).unwrap();
    sim.beat(Some(&a), None).unwrap();
    assert_eq!(sim.groups.get("g").unwrap().assignor(), Assignor::Range);
    // The group's own assignor: the epoch moves, and the next heartbeat assigns with it.
    let epoch = sim.groups.get("g").unwrap().meta.epoch;
    let e = sim.alter(assignor_only(Change::Set(Assignor::Uniform)));
    assert_eq!(e.assignor, Assignor::Uniform);
    let g = sim.groups.get("g").unwrap();
    assert_eq!(g.meta.epoch, epoch + 1);
    sim.beat(Some(&a), None).unwrap();
    let g = sim.groups.get("g").unwrap();
    assert_eq!(g.meta.assignment_epoch, g.meta.epoch);
    assert_eq!(g.state(), GroupState::Stable);
    // A member joining the emptied group asks for range: the group's own still holds.
    sim.leave(&a);
    let b = sim.beat(None, None).unwrap();
    let g = sim.groups.get("g").unwrap();
    assert_eq!(g.meta.settings.assignor, Assignor::Range);
    assert_eq!(g.assignor(), Assignor::Uniform);
    // Reset: back to what the members asked for.
    let epoch = g.meta.epoch;
    let e = sim.alter(assignor_only(Change::Reset));
    assert_eq!((e.assignor, e.overrides.assignor), (Assignor::Range, None));
    assert_eq!(sim.groups.get("g").unwrap().meta.epoch, epoch + 1);
    // Setting the assignor already in force moves nothing.
    let e = sim.alter(assignor_only(Change::Set(Assignor::Range)));
    assert_eq!(e.overrides.assignor, Some(Assignor::Range));
    assert_eq!(sim.groups.get("g").unwrap().meta.epoch, epoch + 1);
    sim.beat(Some(&b), None).unwrap();
}

#[test]
fn the_next_heartbeat_answer_carries_the_group_s_timing() {
    let mut sim = Sim::new(2);
    let a = sim.beat(None, None).unwrap();
    sim.alter(AlterConfigRequest {
        group: "g".into(),
        session_timeout_ms: Change::Set(2_000),
        heartbeat_interval_ms: Change::Set(400),
        assignor: Change::Keep,
    });
    let (epoch, held, _) = sim.clients[&a].clone();
    let req = HeartbeatRequest {
        group: "g".into(),
        member_id: a.clone(),
        beat: Some(Beat::At(epoch)),
        owned: Some(held),
        ..HeartbeatRequest::default()
    };
    let d = heartbeat::heartbeat(sim.groups.get("g"), &req, &sim.ctx("x")).unwrap();
    assert_eq!(d.answer.session_timeout_ms, 2_000);
    assert_eq!(d.answer.heartbeat_interval_ms, 400);
    // The timeout the coordinator clocks sessions with.
    let g = sim.groups.get("g").unwrap();
    assert_eq!(
        heartbeat::timing(Some(g), Defaults::default()),
        (2_000, 400)
    );
}

#[test]
fn a_group_with_members_never_expires() {
    let mut sim = Sim::new(1);
    let a = sim.beat(None, Some("svc".into())).unwrap();
    sim.beat(Some(&a), None).unwrap();
    let (epoch, _, _) = sim.clients[&a].clone();
    sim.commit_as(
        &Committer::Member {
            id: a.clone(),
            epoch,
        },
        0,
    );
    let g = sim.groups.get("g").unwrap().clone();
    assert!(offsets::expire(&g, &sim.topics, i64::MAX, 1).is_empty());
    // A static member that left for a restart is still a member: nothing expires either.
    let leave = HeartbeatRequest {
        group: "g".into(),
        member_id: a.clone(),
        beat: Some(Beat::StaticLeave),
        ..HeartbeatRequest::default()
    };
    let d = heartbeat::heartbeat(Some(&g), &leave, &sim.ctx("x")).unwrap();
    apply(&mut sim.groups, &d.records);
    let g = sim.groups.get("g").unwrap().clone();
    assert!(g.members[&a].left_static);
    assert!(offsets::expire(&g, &sim.topics, i64::MAX, 1).is_empty());
}

#[test]
fn an_admin_commit_to_a_long_empty_group_lives_a_whole_retention() {
    let mut sim = Sim::new(1);
    sim.now_ms = 1_000;
    sim.admin_commit(0);
    // Long after the group became empty, another commit: it is kept a retention from then.
    sim.now_ms = 50_000;
    sim.admin_commit(0);
    let g = sim.groups.get("g").unwrap().clone();
    assert_eq!(g.meta.empty_since_ms, Some(1_000));
    assert!(offsets::expire(&g, &sim.topics, 50_000 + 99, 100).is_empty());
    let gone = offsets::expire(&g, &sim.topics, 50_000 + 100, 100);
    apply(&mut sim.groups, &gone);
    assert!(sim.groups.get("g").is_none());
}

#[test]
fn an_empty_group_with_overrides_keeps_them_when_its_offsets_expire() {
    let mut sim = Sim::new(1);
    sim.admin_commit(0);
    sim.alter(AlterConfigRequest {
        group: "g".into(),
        session_timeout_ms: Change::Set(2_000),
        heartbeat_interval_ms: Change::Set(400),
        assignor: Change::Keep,
    });
    let g = sim.groups.get("g").unwrap().clone();
    let gone = offsets::expire(&g, &sim.topics, 1_000, 100);
    apply(&mut sim.groups, &gone);
    let g = sim.groups.get("g").unwrap().clone();
    assert!(g.offsets.is_empty());
    assert_eq!(g.config.session_timeout_ms, Some(2_000));
    // Nothing more to expire while it overrides anything...
    assert!(offsets::expire(&g, &sim.topics, 2_000, 100).is_empty());
    // ...and once it overrides nothing, it goes at the next round.
    sim.alter(AlterConfigRequest {
        group: "g".into(),
        session_timeout_ms: Change::Reset,
        heartbeat_interval_ms: Change::Reset,
        assignor: Change::Keep,
    });
    let g = sim.groups.get("g").unwrap().clone();
    apply(
        &mut sim.groups,
        &offsets::expire(&g, &sim.topics, 2_000, 100),
    );
    assert!(sim.groups.get("g").is_none());
}

#[test]
fn a_member_joining_an_emptied_group_without_an_assignor_gets_the_default() {
    let mut sim = Sim::new(4);
    sim.join_assignor = Some(Assignor::Range);
    let a = sim.beat(None, None).unwrap();
    assert_eq!(sim.groups.get("g").unwrap().assignor(), Assignor::Range);
    // The members that chose range left; the next one names none: uniform, as the proto says.
    sim.leave(&a);
    sim.join_assignor = None;
    sim.beat(None, None).unwrap();
    let g = sim.groups.get("g").unwrap();
    assert_eq!(g.assignor(), Assignor::Uniform);
}
