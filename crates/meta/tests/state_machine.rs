//! Property tests of the metadata state machine: random command sequences, including invalid
//! ones, against its invariants and a small model.
//!
//! Failing cases are shrunk, printed and saved under `proptest-regressions/`; rerun a run
//! with `PROPTEST_RNG_SEED=<seed>`.

use std::collections::BTreeSet;

use fjord_meta::{
    CleanupPolicy, ConfigChange, ConfigKey, ConfigSetting, MAX_RECORD_BYTES_LIMIT, MetaCommand,
    MetaError, MetaResponse, MetaState, TopicConfig, TopicConfigV1, group_id,
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
                config: TopicConfigV1 { max_record_bytes },
            }
        });
    let create_with = (topic_name(), 1u32..4, 0u32..3, topic_config()).prop_map(
        |(name, partitions, replication_factor, config)| MetaCommand::CreateTopicWithConfig {
            name,
            partitions,
            replication_factor,
            config,
            live: (1..=6).collect(),
        },
    );
    let alter = (
        topic_name(),
        prop::collection::vec(setting(), 0..4),
        prop::collection::vec(select(ConfigKey::ALL.to_vec()), 0..3),
    )
        .prop_map(|(name, set, reset)| MetaCommand::AlterTopicConfig {
            name,
            change: ConfigChange { set, reset },
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
        2 => create_with,
        4 => alter,
    ]
}

/// Values at, inside and just past each limit.
fn duration() -> impl Strategy<Value = i64> {
    select(vec![
        -2,
        -1,
        0,
        1,
        60_000,
        3_153_600_000_000,
        3_153_600_000_001,
    ])
}

fn bytes() -> impl Strategy<Value = i64> {
    select(vec![
        -2,
        -1,
        0,
        (1 << 20) - 1,
        1 << 20,
        1 << 50,
        (1 << 50) + 1,
    ])
}

fn policy() -> impl Strategy<Value = CleanupPolicy> {
    select(vec![
        CleanupPolicy::Delete,
        CleanupPolicy::Compact,
        CleanupPolicy::CompactDelete,
    ])
}

fn setting() -> impl Strategy<Value = ConfigSetting> {
    prop_oneof![
        duration().prop_map(ConfigSetting::RetentionMs),
        bytes().prop_map(ConfigSetting::RetentionBytes),
        policy().prop_map(ConfigSetting::CleanupPolicy),
        duration().prop_map(ConfigSetting::DeleteRetentionMs),
        duration().prop_map(ConfigSetting::MinCompactionLagMs),
        select(vec![
            0,
            1,
            MAX_RECORD_BYTES_LIMIT,
            MAX_RECORD_BYTES_LIMIT + 1
        ])
        .prop_map(ConfigSetting::MaxRecordBytes),
    ]
}

fn topic_config() -> impl Strategy<Value = TopicConfig> {
    (
        select(vec![
            0,
            1,
            MAX_RECORD_BYTES_LIMIT,
            MAX_RECORD_BYTES_LIMIT + 1,
        ]),
        proptest::option::of(duration()),
        proptest::option::of(bytes()),
        proptest::option::of(policy()),
        proptest::option::of(duration()),
        proptest::option::of(duration()),
    )
        .prop_map(|(max, rms, rb, cp, drms, lag)| TopicConfig {
            max_record_bytes: max,
            retention_ms: rms,
            retention_bytes: rb,
            cleanup_policy: cp,
            delete_retention_ms: drms,
            min_compaction_lag_ms: lag,
        })
}

/// The limits of each setting, written out again as the model (not through the crate's
/// checks).
fn model_valid(s: ConfigSetting) -> bool {
    const CENTURY_MS: i64 = 100 * 365 * 24 * 3600 * 1000;
    match s {
        ConfigSetting::RetentionMs(v) => v == -1 || (1..=CENTURY_MS).contains(&v),
        ConfigSetting::RetentionBytes(v) => v == -1 || ((1 << 20)..=(1 << 50)).contains(&v),
        ConfigSetting::CleanupPolicy(_) => true,
        ConfigSetting::DeleteRetentionMs(v) | ConfigSetting::MinCompactionLagMs(v) => {
            (0..=CENTURY_MS).contains(&v)
        }
        ConfigSetting::MaxRecordBytes(v) => v <= 16 << 20,
    }
}

/// The config an alter should produce from `old`, by the model: `None` if it must be refused.
fn model_alter(old: &TopicConfig, change: &ConfigChange) -> Option<TopicConfig> {
    let keys: Vec<ConfigKey> = change
        .set
        .iter()
        .map(|s| s.key())
        .chain(change.reset.iter().copied())
        .collect();
    let distinct: BTreeSet<ConfigKey> = keys.iter().copied().collect();
    if keys.is_empty()
        || distinct.len() != keys.len()
        || !change.set.iter().all(|s| model_valid(*s))
    {
        return None;
    }
    let mut c = old.clone();
    for s in &change.set {
        match *s {
            ConfigSetting::RetentionMs(v) => c.retention_ms = Some(v),
            ConfigSetting::RetentionBytes(v) => c.retention_bytes = Some(v),
            ConfigSetting::CleanupPolicy(p) => c.cleanup_policy = Some(p),
            ConfigSetting::DeleteRetentionMs(v) => c.delete_retention_ms = Some(v),
            ConfigSetting::MinCompactionLagMs(v) => c.min_compaction_lag_ms = Some(v),
            ConfigSetting::MaxRecordBytes(v) => c.max_record_bytes = v,
        }
    }
    for k in &change.reset {
        match k {
            ConfigKey::RetentionMs => c.retention_ms = None,
            ConfigKey::RetentionBytes => c.retention_bytes = None,
            ConfigKey::CleanupPolicy => c.cleanup_policy = None,
            ConfigKey::DeleteRetentionMs => c.delete_retention_ms = None,
            ConfigKey::MinCompactionLagMs => c.min_compaction_lag_ms = None,
            ConfigKey::MaxRecordBytes => c.max_record_bytes = 0,
        }
    }
    Some(c)
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
                (MetaResponse::Error(e), _) => {
                    prop_assert_eq!(&state, &before, "rejected {:?} changed state", cmd);
                    if let MetaCommand::AlterTopicConfig { name, change } = cmd
                        && let Some(t) = before.topic(name)
                    {
                        prop_assert_eq!(model_alter(&t.config, change), None, "{:?} refused: {}", cmd, e);
                    }
                    if let MetaCommand::CreateTopicWithConfig { config, .. } = cmd
                        && matches!(e, MetaError::InvalidConfigValue { .. })
                    {
                        prop_assert!(!config.settings().all(model_valid), "{:?} refused: {}", cmd, e);
                    }
                }
                (MetaResponse::Topic(t), MetaCommand::AlterTopicConfig { name, change }) => {
                    let old = before.topic(name).expect("an alter of a topic that exists");
                    prop_assert_eq!(Some(t.config.clone()), model_alter(&old.config, change));
                    prop_assert_eq!(&t.partitions, &old.partitions, "an alter moves nothing");
                    prop_assert_eq!(state.topic(name), Some(t));
                }
                (MetaResponse::Topic(t), MetaCommand::CreateTopicWithConfig { name, config, .. }) => {
                    prop_assert!(config.settings().all(model_valid), "{:?} accepted", config);
                    prop_assert_eq!(&t.config, config);
                    prop_assert!(topics.insert(name.clone()), "created {} twice", name);
                    prop_assert!(t.id > last_topic_id, "topic id {} after {}", t.id, last_topic_id);
                    last_topic_id = t.id;
                }
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

    /// Snapshots and log entries are postcard: every command and state decodes as itself.
    #[test]
    fn commands_and_states_round_trip_through_postcard(commands in prop::collection::vec(command(), 0..60)) {
        let mut state = MetaState::new();
        for cmd in &commands {
            let bytes = postcard::to_stdvec(cmd).expect("encode");
            prop_assert_eq!(&postcard::from_bytes::<MetaCommand>(&bytes).expect("decode"), cmd);
            state.apply(cmd);
        }
        let bytes = postcard::to_stdvec(&state).expect("encode");
        prop_assert_eq!(postcard::from_bytes::<MetaState>(&bytes).expect("decode"), state);
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
            config: TopicConfigV1 {
                max_record_bytes: 5,
            },
        },
        MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: 1,
            config: TopicConfigV1::default(),
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
