//! Property tests of the metadata state machine: random command sequences, including invalid
//! ones, against its invariants and a small model.
//!
//! Failing cases are shrunk, printed and saved under `proptest-regressions/`; rerun a run
//! with `PROPTEST_RNG_SEED=<seed>`.

use std::collections::BTreeSet;

use fjord_meta::{
    MAX_RECORD_BYTES_LIMIT, MetaCommand, MetaResponse, MetaState, TopicConfig, group_id,
};
use proptest::prelude::*;
use proptest::sample::select;

fn topic_name() -> impl Strategy<Value = String> {
    select(vec![
        "a", "b", "c", "orders", "x.y-z_1", "", "a b", ".", "..",
    ])
    .prop_map(String::from)
}

fn command() -> impl Strategy<Value = MetaCommand> {
    let register = (
        1u64..=6,
        select(vec![
            "h1:1",
            "h2:9092",
            "[::1]:80",
            "host:65535",
            "bad",
            "h:0",
            ":1",
        ]),
    )
        .prop_map(|(id, address)| MetaCommand::RegisterNode {
            id,
            address: address.into(),
        });
    let create = (
        topic_name(),
        prop_oneof![4 => 0u32..6, 1 => Just(2000u32)],
        0u32..5,
        select(vec![
            0,
            1000,
            MAX_RECORD_BYTES_LIMIT,
            MAX_RECORD_BYTES_LIMIT + 1,
        ]),
    )
        .prop_map(|(name, partitions, replication_factor, max_record_bytes)| {
            MetaCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                config: TopicConfig { max_record_bytes },
            }
        });
    let delete = topic_name().prop_map(|name| MetaCommand::DeleteTopic { name });
    let report =
        (0u32..6, 0u32..6, 0u64..7, 0u64..8).prop_map(|(topic, partition, leader, epoch)| {
            MetaCommand::ReportLeader {
                group_id: group_id(topic, partition),
                leader,
                epoch,
            }
        });
    prop_oneof![
        2 => register,
        3 => create,
        1 => delete,
        4 => report,
        1 => Just(MetaCommand::AllocateProducerId),
    ]
}

/// Whether `state` is the default (counters 0) or `new()` (counters 1) start.
fn start() -> impl Strategy<Value = MetaState> {
    any::<bool>().prop_map(|fresh| {
        if fresh {
            MetaState::new()
        } else {
            MetaState::default()
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn commands_keep_invariants_and_match_the_model(
        mut state in start(),
        commands in prop::collection::vec(command(), 0..60),
    ) {
        let mut topics = BTreeSet::new();
        let mut last_producer_id = 0;
        let mut last_topic_id = 0;
        for cmd in &commands {
            let before = state.clone();
            let resp = state.apply(cmd);
            prop_assert_eq!(state.validate(), Ok(()), "after {:?}", cmd);
            match (&resp, cmd) {
                (MetaResponse::Error(_), _) => prop_assert_eq!(&state, &before, "rejected {:?} changed state", cmd),
                (MetaResponse::Topic(t), MetaCommand::CreateTopic { name, partitions, .. }) => {
                    prop_assert!(topics.insert(name.clone()), "created {} twice", name);
                    prop_assert!(t.id > last_topic_id, "topic id {} after {}", t.id, last_topic_id);
                    last_topic_id = t.id;
                    prop_assert_eq!(t.partitions.len(), *partitions as usize);
                    prop_assert_eq!(state.topic(name), Some(t));
                }
                (MetaResponse::Ok, MetaCommand::DeleteTopic { name }) => {
                    prop_assert!(topics.remove(name), "deleted {} which did not exist", name);
                }
                (MetaResponse::ProducerId(id), MetaCommand::AllocateProducerId) => {
                    prop_assert!(*id > last_producer_id, "producer id {} after {}", id, last_producer_id);
                    last_producer_id = *id;
                }
                (MetaResponse::Ok, MetaCommand::RegisterNode { id, address }) => {
                    prop_assert_eq!(&state.nodes[id].address, address);
                }
                (MetaResponse::Ok, MetaCommand::ReportLeader { group_id, leader, epoch }) => {
                    match before.partition_by_group(*group_id) {
                        None => prop_assert_eq!(&state, &before, "report for unknown group changed state"),
                        Some((_, old)) => {
                            // Newer is a greater (term, node), as openraft orders leader
                            // ids; with no leader recorded, any report at the epoch or later.
                            let newer = match old.leader {
                                None => *epoch >= old.leader_epoch,
                                Some(current) => (*epoch, *leader) > (old.leader_epoch, current),
                            };
                            let accept = old.replicas.contains(leader) && newer;
                            let expected = if accept { (Some(*leader), *epoch) } else { (old.leader, old.leader_epoch) };
                            let (_, new) = state.partition_by_group(*group_id).expect("reports do not delete");
                            prop_assert_eq!((new.leader, new.leader_epoch), expected);
                        }
                    }
                }
                (resp, cmd) => prop_assert!(false, "{:?} answered {:?}", cmd, resp),
            }
            let names: BTreeSet<String> = state.topics.keys().cloned().collect();
            prop_assert_eq!(&names, &topics);
        }
    }

    #[test]
    fn apply_is_deterministic(commands in prop::collection::vec(command(), 0..60)) {
        let (mut a, mut b) = (MetaState::new(), MetaState::new());
        for cmd in &commands {
            prop_assert_eq!(a.apply(cmd), b.apply(cmd));
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn snapshot_round_trips_through_json(commands in prop::collection::vec(command(), 0..60)) {
        let mut state = MetaState::new();
        for cmd in &commands {
            state.apply(cmd);
        }
        let json = serde_json::to_string(&state).expect("serialize");
        let back: MetaState = serde_json::from_str(&json).expect("deserialize");
        prop_assert_eq!(back, state);
    }
}

#[test]
fn commands_and_responses_round_trip_through_json() {
    let mut state = MetaState::new();
    let commands = [
        MetaCommand::RegisterNode {
            id: 1,
            address: "h:1".into(),
        },
        MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: 1,
            config: TopicConfig {
                max_record_bytes: 5,
            },
        },
        MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: 1,
            config: TopicConfig::default(),
        },
        MetaCommand::ReportLeader {
            group_id: group_id(1, 0),
            leader: 1,
            epoch: 3,
        },
        MetaCommand::AllocateProducerId,
        MetaCommand::DeleteTopic { name: "t".into() },
    ];
    for cmd in &commands {
        let json = serde_json::to_string(cmd).unwrap();
        assert_eq!(&serde_json::from_str::<MetaCommand>(&json).unwrap(), cmd);
        let resp = state.apply(cmd);
        let json = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<MetaResponse>(&json).unwrap(), resp);
    }
}
