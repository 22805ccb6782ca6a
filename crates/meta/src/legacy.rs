//! The shapes earlier versions encoded the metadata in, and their conversion to today's.
//!
//! postcard encodes a struct's fields in order and has no field defaults, so a snapshot or a
//! log entry written by an earlier version decodes only as the shape it was written in. Each
//! shape here is one of those, read only:
//!
//! | shape | what it lacks | carried by |
//! |---|---|---|
//! | [`MetaStateV1`] | identities, named producers, log settings, users and ACLs | the oldest snapshots |
//! | [`MetaStateV2`] | named producers, log settings | snapshots before named producers |
//! | [`MetaStateV3`] | log settings (its topics are [`TopicV1`]), users and ACLs | snapshots before log settings |
//! | [`MetaStateV4`] | users and ACLs | snapshots of format 4, before users and ACLs |
//! | [`TopicConfigV1`] | the log settings | those snapshots' topics, and the commands `CreateTopic` and `CreateTopicOnLive` |
//!
//! Snapshots from [`MetaStateV4`] on are told apart by a format byte (see `fjord_raft`'s
//! `meta_sm`), the earlier ones by trying the newest shape first: each appended fields to the
//! last, so an older snapshot ends before a newer shape's fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::IncarnationRecord;
use crate::ids::NodeId;
use crate::state::{MetaState, NodeInfo, PartitionAssignment, Topic};
use crate::topic_config::TopicConfig;

/// [`TopicConfig`] before the log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TopicConfigV1 {
    /// See [`TopicConfig::max_record_bytes`].
    pub max_record_bytes: u64,
}

impl From<TopicConfigV1> for TopicConfig {
    fn from(c: TopicConfigV1) -> Self {
        TopicConfig {
            max_record_bytes: c.max_record_bytes,
            ..TopicConfig::default()
        }
    }
}

/// [`Topic`] before the log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicV1 {
    pub id: u32,
    pub name: String,
    pub replication_factor: u32,
    pub config: TopicConfigV1,
    pub partitions: Vec<PartitionAssignment>,
}

impl From<TopicV1> for Topic {
    fn from(t: TopicV1) -> Self {
        Topic {
            id: t.id,
            name: t.name,
            replication_factor: t.replication_factor,
            config: t.config.into(),
            partitions: t.partitions,
        }
    }
}

/// Topics of an older shape, converted.
fn topics(old: BTreeMap<String, TopicV1>) -> BTreeMap<String, Topic> {
    old.into_iter().map(|(k, t)| (k, t.into())).collect()
}

/// [`MetaState`] as encoded before users and ACLs (snapshot format 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetaStateV4 {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, Topic>,
    pub next_topic_id: u32,
    pub next_producer_id: u64,
    pub cluster_id: u64,
    pub incarnations: BTreeMap<NodeId, IncarnationRecord>,
    pub producer_names: BTreeMap<String, u64>,
    pub producer_epochs: BTreeMap<u64, u16>,
}

impl From<MetaStateV4> for MetaState {
    fn from(v: MetaStateV4) -> Self {
        MetaState {
            nodes: v.nodes,
            topics: v.topics,
            next_topic_id: v.next_topic_id,
            next_producer_id: v.next_producer_id,
            cluster_id: v.cluster_id,
            incarnations: v.incarnations,
            producer_names: v.producer_names,
            producer_epochs: v.producer_epochs,
            users: BTreeMap::new(),
            acls: Default::default(),
        }
    }
}

/// [`MetaState`] as encoded before log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetaStateV3 {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, TopicV1>,
    pub next_topic_id: u32,
    pub next_producer_id: u64,
    pub cluster_id: u64,
    pub incarnations: BTreeMap<NodeId, IncarnationRecord>,
    pub producer_names: BTreeMap<String, u64>,
    pub producer_epochs: BTreeMap<u64, u16>,
}

impl From<MetaStateV3> for MetaState {
    fn from(v: MetaStateV3) -> Self {
        MetaStateV4 {
            nodes: v.nodes,
            topics: topics(v.topics),
            next_topic_id: v.next_topic_id,
            next_producer_id: v.next_producer_id,
            cluster_id: v.cluster_id,
            incarnations: v.incarnations,
            producer_names: v.producer_names,
            producer_epochs: v.producer_epochs,
        }
        .into()
    }
}

/// [`MetaState`] as encoded before named producers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetaStateV2 {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, TopicV1>,
    pub next_topic_id: u32,
    pub next_producer_id: u64,
    pub cluster_id: u64,
    pub incarnations: BTreeMap<NodeId, IncarnationRecord>,
}

impl From<MetaStateV2> for MetaState {
    fn from(v: MetaStateV2) -> Self {
        MetaStateV3 {
            nodes: v.nodes,
            topics: v.topics,
            next_topic_id: v.next_topic_id,
            next_producer_id: v.next_producer_id,
            cluster_id: v.cluster_id,
            incarnations: v.incarnations,
            producer_names: BTreeMap::new(),
            producer_epochs: BTreeMap::new(),
        }
        .into()
    }
}

/// [`MetaState`] as encoded before identities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetaStateV1 {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, TopicV1>,
    pub next_topic_id: u32,
    pub next_producer_id: u64,
}

impl From<MetaStateV1> for MetaState {
    fn from(v: MetaStateV1) -> Self {
        MetaStateV2 {
            nodes: v.nodes,
            topics: v.topics,
            next_topic_id: v.next_topic_id,
            next_producer_id: v.next_producer_id,
            cluster_id: 0,
            incarnations: BTreeMap::new(),
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::group_id;

    /// A topic as a version before log settings wrote it, in every snapshot shape.
    fn old_topic() -> TopicV1 {
        TopicV1 {
            id: 1,
            name: "orders".into(),
            replication_factor: 1,
            config: TopicConfigV1 {
                max_record_bytes: 4096,
            },
            partitions: vec![PartitionAssignment {
                partition: 0,
                group_id: group_id(1, 0),
                replicas: vec![1],
                leader: Some(1),
                leader_epoch: 3,
            }],
        }
    }

    fn old_state() -> MetaStateV3 {
        MetaStateV3 {
            nodes: BTreeMap::from([(
                1,
                NodeInfo {
                    id: 1,
                    address: "h:1".into(),
                },
            )]),
            topics: BTreeMap::from([("orders".into(), old_topic())]),
            next_topic_id: 2,
            next_producer_id: 7,
            cluster_id: 9,
            incarnations: BTreeMap::new(),
            producer_names: BTreeMap::from([("p".into(), 5)]),
            producer_epochs: BTreeMap::from([(5, 2)]),
        }
    }

    #[test]
    fn a_snapshot_from_before_log_settings_decodes_with_its_topics() {
        let bytes = postcard::to_stdvec(&old_state()).unwrap();
        // The bytes a version before log settings wrote for its topic config: the record
        // limit alone.
        let config = postcard::to_stdvec(&TopicConfigV1 {
            max_record_bytes: 4096,
        })
        .unwrap();
        assert_eq!(config, [0x80, 0x20]);
        let state: MetaState = postcard::from_bytes::<MetaStateV3>(&bytes).unwrap().into();
        assert_eq!(state.validate(), Ok(()));
        let t = state.topic("orders").unwrap();
        assert_eq!(t.config.max_record_bytes, 4096);
        assert_eq!(t.config.retention_ms, None, "the cluster default");
        assert_eq!(t.config.cleanup_policy, None);
        assert_eq!(t.partitions[0].leader_epoch, 3);
        assert_eq!(state.producer_epochs[&5], 2);
        assert_eq!(state.next_topic_id, 2);
    }

    /// A snapshot of format 4 (before users and ACLs) decodes, and today's shape, with
    /// users and ACLs, does not decode as it.
    #[test]
    fn a_snapshot_from_before_users_and_acls_decodes() {
        let v4 = MetaStateV4 {
            nodes: old_state().nodes,
            topics: topics(old_state().topics),
            next_topic_id: 2,
            next_producer_id: 7,
            cluster_id: 9,
            incarnations: BTreeMap::new(),
            producer_names: BTreeMap::from([("p".into(), 5)]),
            producer_epochs: BTreeMap::from([(5, 2)]),
        };
        let bytes = postcard::to_stdvec(&v4).unwrap();
        let state: MetaState = postcard::from_bytes::<MetaStateV4>(&bytes).unwrap().into();
        assert_eq!(state.validate(), Ok(()));
        assert!(state.users.is_empty() && state.acls.is_empty());
        assert_eq!(state.topic("orders").unwrap().config.max_record_bytes, 4096);
        assert_eq!(state.producer_epochs[&5], 2);

        let mut new = state.clone();
        new.users.insert(
            "alice".into(),
            crate::acl::UserRecord {
                salt: vec![1; crate::acl::USER_SALT_BYTES],
                hash: vec![2; crate::acl::USER_HASH_BYTES],
            },
        );
        let bytes = postcard::to_stdvec(&new).unwrap();
        assert_eq!(postcard::from_bytes::<MetaState>(&bytes).unwrap(), new);
    }

    #[test]
    fn the_oldest_shapes_still_decode() {
        let v3 = old_state();
        let v1 = MetaStateV1 {
            nodes: v3.nodes.clone(),
            topics: v3.topics.clone(),
            next_topic_id: 2,
            next_producer_id: 7,
        };
        let bytes = postcard::to_stdvec(&v1).unwrap();
        assert!(postcard::from_bytes::<MetaStateV2>(&bytes).is_err());
        let state: MetaState = postcard::from_bytes::<MetaStateV1>(&bytes).unwrap().into();
        assert_eq!(state.topic("orders").unwrap().config.max_record_bytes, 4096);
        assert_eq!(state.cluster_id, 0);
        assert_eq!(state.validate(), Ok(()));
    }
}
