//! Plain Rust views of the cluster (nodes, topics, partitions), converted from the wire
//! types in one place, and the client's cache of them.
//!
//! The cache is a hint, never the truth: it may name a stale leader, and the server corrects
//! it (a not-leader answer with the leader's address, or a metadata refresh). What must hold:
//! a leader the cache names has an address in the nodes map or is reported as unknown.

use std::collections::HashMap;

use fjord_proto::v1;

use crate::error::{ClientError, LeaderHint};

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition index, 0-based.
    pub partition: u32,
    /// Node id of the current leader; `None` when unknown (for example during an election).
    pub leader: Option<u64>,
    /// Raft term of the reported leader; grows with every leader change.
    pub leader_epoch: u64,
    /// Node ids holding a replica; the first is the preferred leader.
    pub replicas: Vec<u64>,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    /// Replicas of each partition.
    pub replication_factor: u32,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionDescription>,
    /// The settings the topic sets itself.
    pub config: TopicSettings,
    /// Every setting in force, as the answering node resolves the defaults; `None` from a
    /// server that does not say.
    pub effective: Option<EffectiveSettings>,
}

/// The keys of a topic's settings, in the order descriptions list them (see `TopicConfig` in
/// `proto/fjord.proto` for their meaning and limits).
pub const TOPIC_CONFIG_KEYS: [&str; 6] = [
    "retention_ms",
    "retention_bytes",
    "cleanup_policy",
    "delete_retention_ms",
    "min_compaction_lag_ms",
    "max_record_bytes",
];

/// A topic's own settings; `None` where it takes the cluster default. The server checks the
/// limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicSettings {
    /// -1: unlimited.
    pub retention_ms: Option<i64>,
    /// Per partition; -1: unlimited.
    pub retention_bytes: Option<i64>,
    /// `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: Option<String>,
    pub delete_retention_ms: Option<i64>,
    pub min_compaction_lag_ms: Option<i64>,
    /// Largest accepted record (key + value + headers), in bytes.
    pub max_record_bytes: Option<u64>,
}

/// A topic's settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub cleanup_policy: String,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub max_record_bytes: u64,
}

/// One setting of a topic as a description lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// One of [`TOPIC_CONFIG_KEYS`].
    pub key: &'static str,
    /// The value in force; `None` when the server did not say.
    pub value: Option<String>,
    /// The topic's own value; `None` when it takes the cluster default.
    pub own: Option<String>,
}

impl ConfigEntry {
    /// Whether the topic takes the cluster default for this setting.
    pub fn is_default(&self) -> bool {
        self.own.is_none()
    }
}

impl TopicSettings {
    /// Sets `key` to `value` as text (`retention_ms`, `60000`): one of [`TOPIC_CONFIG_KEYS`],
    /// a decimal integer or, for `cleanup_policy`, a policy. Only the form is checked here;
    /// the server checks the limits.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        let int = || {
            value.parse::<i64>().map_err(|_| {
                ClientError::InvalidArgument(format!(
                    "topic config {key} = {value:?} is not a decimal integer"
                ))
            })
        };
        match key {
            "retention_ms" => self.retention_ms = Some(int()?),
            "retention_bytes" => self.retention_bytes = Some(int()?),
            "cleanup_policy" => self.cleanup_policy = Some(value.to_string()),
            "delete_retention_ms" => self.delete_retention_ms = Some(int()?),
            "min_compaction_lag_ms" => self.min_compaction_lag_ms = Some(int()?),
            "max_record_bytes" => {
                let v = u64::try_from(int()?).map_err(|_| {
                    ClientError::InvalidArgument(format!(
                        "topic config max_record_bytes = {value:?} is negative"
                    ))
                })?;
                self.max_record_bytes = Some(v);
            }
            _ => {
                return Err(ClientError::InvalidArgument(format!(
                    "unknown topic config key {key:?}: the keys are {}",
                    TOPIC_CONFIG_KEYS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The value of `key` as text, if the topic sets it.
    pub fn get(&self, key: &str) -> Option<String> {
        match key {
            "retention_ms" => self.retention_ms.map(|v| v.to_string()),
            "retention_bytes" => self.retention_bytes.map(|v| v.to_string()),
            "cleanup_policy" => self.cleanup_policy.clone(),
            "delete_retention_ms" => self.delete_retention_ms.map(|v| v.to_string()),
            "min_compaction_lag_ms" => self.min_compaction_lag_ms.map(|v| v.to_string()),
            "max_record_bytes" => self.max_record_bytes.map(|v| v.to_string()),
            _ => None,
        }
    }

    pub(crate) fn to_wire(&self) -> v1::TopicConfig {
        v1::TopicConfig {
            max_record_bytes: self.max_record_bytes.unwrap_or(0),
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            cleanup_policy: self.cleanup_policy.clone(),
            delete_retention_ms: self.delete_retention_ms,
            min_compaction_lag_ms: self.min_compaction_lag_ms,
        }
    }
}

impl From<v1::TopicConfig> for TopicSettings {
    fn from(c: v1::TopicConfig) -> Self {
        TopicSettings {
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            cleanup_policy: c.cleanup_policy,
            delete_retention_ms: c.delete_retention_ms,
            min_compaction_lag_ms: c.min_compaction_lag_ms,
            max_record_bytes: known(c.max_record_bytes),
        }
    }
}

impl EffectiveSettings {
    /// The value of `key` as text.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "retention_ms" => self.retention_ms.to_string(),
            "retention_bytes" => self.retention_bytes.to_string(),
            "cleanup_policy" => self.cleanup_policy.clone(),
            "delete_retention_ms" => self.delete_retention_ms.to_string(),
            "min_compaction_lag_ms" => self.min_compaction_lag_ms.to_string(),
            "max_record_bytes" => self.max_record_bytes.to_string(),
            _ => return None,
        })
    }
}

impl From<v1::EffectiveTopicConfig> for EffectiveSettings {
    fn from(e: v1::EffectiveTopicConfig) -> Self {
        EffectiveSettings {
            retention_ms: e.retention_ms,
            retention_bytes: e.retention_bytes,
            cleanup_policy: e.cleanup_policy,
            delete_retention_ms: e.delete_retention_ms,
            min_compaction_lag_ms: e.min_compaction_lag_ms,
            max_record_bytes: e.max_record_bytes,
        }
    }
}

impl TopicDescription {
    /// Every setting, in [`TOPIC_CONFIG_KEYS`] order: its value in force and whether it is
    /// the topic's own or the default.
    pub fn config_entries(&self) -> Vec<ConfigEntry> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|key| ConfigEntry {
                key,
                value: self.effective.as_ref().and_then(|e| e.get(key)),
                own: self.config.get(key),
            })
            .collect()
    }
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// `(node id, host:port)`, sorted by id.
    pub nodes: Vec<(u64, String)>,
    /// The metadata (controller) leader; `None` when unknown.
    pub metadata_leader: Option<u64>,
    /// Sorted by name.
    pub topics: Vec<TopicDescription>,
    /// The answering node, and, while it rebuilds (`fjord serve --rebuild`), the groups it is
    /// still a learner of and the groups it holds.
    pub answered_by: Option<u64>,
    pub rebuilding: Option<(u32, u32)>,
}

fn known(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

impl From<v1::PartitionInfo> for PartitionDescription {
    fn from(p: v1::PartitionInfo) -> Self {
        PartitionDescription {
            partition: p.partition,
            leader: known(p.leader),
            leader_epoch: p.leader_epoch,
            replicas: p.replicas,
        }
    }
}

impl From<v1::TopicInfo> for TopicDescription {
    fn from(t: v1::TopicInfo) -> Self {
        let mut partitions: Vec<PartitionDescription> =
            t.partitions.into_iter().map(Into::into).collect();
        partitions.sort_by_key(|p| p.partition);
        TopicDescription {
            name: t.name,
            replication_factor: t.replication_factor,
            partitions,
            config: t.config.map(TopicSettings::from).unwrap_or_default(),
            effective: t.effective.map(EffectiveSettings::from),
        }
    }
}

impl From<v1::MetadataResponse> for ClusterMetadata {
    fn from(m: v1::MetadataResponse) -> Self {
        let mut nodes: Vec<(u64, String)> =
            m.nodes.into_iter().map(|n| (n.id, n.address)).collect();
        nodes.sort();
        let mut topics: Vec<TopicDescription> = m.topics.into_iter().map(Into::into).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let answered_by = m.replicas.as_ref().map(|r| r.node_id).and_then(known);
        let rebuilding = m
            .replicas
            .as_ref()
            .filter(|r| r.rebuild_total_groups > 0)
            .map(|r| (r.rebuilding_groups, r.rebuild_total_groups));
        ClusterMetadata {
            nodes,
            metadata_leader: known(m.metadata_leader),
            topics,
            answered_by,
            rebuilding,
        }
    }
}

/// What the client last learnt about the cluster.
#[derive(Debug, Default)]
pub(crate) struct MetadataCache {
    nodes: HashMap<u64, String>,
    topics: HashMap<String, TopicDescription>,
    /// Bumped by every refresh, so concurrent refreshers can tell one already happened.
    generation: u64,
}

impl MetadataCache {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes in a metadata answer. With `all_topics` the answer lists every topic, so topics
    /// it lacks were deleted; otherwise only the listed topics are replaced.
    pub(crate) fn apply(&mut self, md: &ClusterMetadata, all_topics: bool) {
        for (id, address) in &md.nodes {
            self.nodes.insert(*id, address.clone());
        }
        if all_topics {
            self.topics.clear();
        }
        for t in &md.topics {
            self.topics.insert(t.name.clone(), t.clone());
        }
        self.generation += 1;
    }

    pub(crate) fn forget_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    pub(crate) fn topic(&self, topic: &str) -> Option<&TopicDescription> {
        self.topics.get(topic)
    }

    pub(crate) fn node_addresses(&self) -> Vec<String> {
        let mut ids: Vec<&u64> = self.nodes.keys().collect();
        ids.sort();
        ids.into_iter().map(|id| self.nodes[id].clone()).collect()
    }

    fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionDescription> {
        self.topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
    }

    /// The address of the partition's leader, when both are known.
    pub(crate) fn leader_address(&self, topic: &str, partition: u32) -> Option<String> {
        self.leader(topic, partition).map(|(_, address)| address)
    }

    /// Addresses of the partition's replicas, the leader first when known, then the others
    /// in replica order. Replicas without a known address are left out.
    /// The node the cache names as the partition's leader, with its address.
    pub(crate) fn leader(&self, topic: &str, partition: u32) -> Option<(u64, String)> {
        let leader = self.partition(topic, partition)?.leader?;
        Some((leader, self.nodes.get(&leader)?.clone()))
    }

    /// The addresses of the partition's replicas other than `except`.
    pub(crate) fn other_replica_addresses(
        &self,
        topic: &str,
        partition: u32,
        except: u64,
    ) -> Vec<String> {
        let Some(p) = self.partition(topic, partition) else {
            return Vec::new();
        };
        p.replicas
            .iter()
            .filter(|r| **r != except)
            .filter_map(|id| self.nodes.get(id).cloned())
            .collect()
    }

    pub(crate) fn replica_addresses(&self, topic: &str, partition: u32) -> Vec<String> {
        let Some(p) = self.partition(topic, partition) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = p.leader.into_iter().collect();
        ids.extend(p.replicas.iter().copied().filter(|r| Some(*r) != p.leader));
        ids.iter()
            .filter_map(|id| self.nodes.get(id).cloned())
            .collect()
    }

    /// The address a hint points at: its own address, else the hinted node's known address.
    pub(crate) fn resolve_hint(&self, hint: &LeaderHint) -> Option<String> {
        hint.address
            .clone()
            .or_else(|| hint.id.and_then(|id| self.nodes.get(&id).cloned()))
    }

    /// Records what a not-leader answer said about a partition's leader, so later requests
    /// go there without a refresh. Without a leader id the cached leader is forgotten.
    pub(crate) fn note_leader(&mut self, topic: &str, partition: u32, hint: Option<&LeaderHint>) {
        if let Some(LeaderHint {
            id: Some(id),
            address: Some(address),
        }) = hint
        {
            self.nodes.insert(*id, address.clone());
        }
        let leader = hint.and_then(|h| h.id);
        if let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.iter_mut().find(|p| p.partition == partition))
        {
            p.leader = leader;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterMetadata {
        ClusterMetadata::from(v1::MetadataResponse {
            nodes: vec![
                v1::Node {
                    id: 2,
                    address: "h2:7101".into(),
                },
                v1::Node {
                    id: 1,
                    address: "h1:7101".into(),
                },
                v1::Node {
                    id: 3,
                    address: "h3:7101".into(),
                },
            ],
            metadata_leader: 0,
            replicas: None,
            topics: vec![v1::TopicInfo {
                name: "orders".into(),
                replication_factor: 3,
                partitions: vec![
                    v1::PartitionInfo {
                        partition: 1,
                        replicas: vec![2, 3, 1],
                        leader: 0,
                        leader_epoch: 0,
                    },
                    v1::PartitionInfo {
                        partition: 0,
                        replicas: vec![1, 2, 3],
                        leader: 3,
                        leader_epoch: 7,
                    },
                ],
                config: Some(v1::TopicConfig {
                    max_record_bytes: 0,
                    retention_ms: Some(60_000),
                    cleanup_policy: Some("compact".into()),
                    ..Default::default()
                }),
                effective: Some(v1::EffectiveTopicConfig {
                    max_record_bytes: 1 << 20,
                    retention_ms: 60_000,
                    retention_bytes: -1,
                    cleanup_policy: "compact".into(),
                    delete_retention_ms: 86_400_000,
                    min_compaction_lag_ms: 0,
                }),
            }],
        })
    }

    #[test]
    fn conversion_sorts_and_maps_zero_to_none() {
        let md = sample();
        assert_eq!(md.nodes[0], (1, "h1:7101".to_string()));
        assert_eq!(md.metadata_leader, None);
        let t = &md.topics[0];
        assert_eq!(t.config.max_record_bytes, None);
        assert_eq!(t.config.retention_ms, Some(60_000));
        assert_eq!(t.partitions[0].partition, 0);
        assert_eq!(t.partitions[0].leader, Some(3));
        assert_eq!(t.partitions[1].leader, None);
    }

    #[test]
    fn config_entries_say_the_value_in_force_and_whose_it_is() {
        let md = sample();
        let entries = md.topics[0].config_entries();
        let keys: Vec<&str> = entries.iter().map(|e| e.key).collect();
        assert_eq!(keys, TOPIC_CONFIG_KEYS);
        let by_key = |k: &str| entries.iter().find(|e| e.key == k).unwrap().clone();
        let r = by_key("retention_ms");
        assert_eq!((r.value.as_deref(), r.is_default()), (Some("60000"), false));
        let b = by_key("retention_bytes");
        assert_eq!((b.value.as_deref(), b.is_default()), (Some("-1"), true));
        assert_eq!(by_key("max_record_bytes").value.as_deref(), Some("1048576"));
    }

    #[test]
    fn settings_parse_their_form_and_name_the_keys() {
        let mut s = TopicSettings::default();
        s.set("retention_ms", "-1").unwrap();
        s.set("cleanup_policy", "compact,delete").unwrap();
        s.set("max_record_bytes", "2048").unwrap();
        assert_eq!(s.get("retention_ms").as_deref(), Some("-1"));
        let wire = s.to_wire();
        assert_eq!(
            (
                wire.retention_ms,
                wire.max_record_bytes,
                wire.retention_bytes
            ),
            (Some(-1), 2048, None)
        );
        let e = s.set("retention.ms", "1").unwrap_err().to_string();
        assert!(
            e.contains("the keys are retention_ms, retention_bytes"),
            "{e}"
        );
        let e = s.set("retention_ms", "7d").unwrap_err().to_string();
        assert!(e.contains("not a decimal integer"), "{e}");
        assert!(s.set("max_record_bytes", "-1").is_err());
    }

    #[test]
    fn leader_first_then_replicas() {
        let mut c = MetadataCache::default();
        c.apply(&sample(), true);
        assert_eq!(c.leader_address("orders", 0).as_deref(), Some("h3:7101"));
        assert_eq!(c.leader_address("orders", 1), None);
        assert_eq!(
            c.replica_addresses("orders", 0),
            ["h3:7101", "h1:7101", "h2:7101"]
        );
        assert_eq!(
            c.replica_addresses("orders", 1),
            ["h2:7101", "h3:7101", "h1:7101"]
        );
        assert!(c.replica_addresses("orders", 9).is_empty());
    }

    #[test]
    fn hints_update_the_cache() {
        let mut c = MetadataCache::default();
        c.apply(&sample(), true);
        let hint = LeaderHint {
            id: Some(4),
            address: Some("h4:7101".into()),
        };
        c.note_leader("orders", 0, Some(&hint));
        assert_eq!(c.leader_address("orders", 0).as_deref(), Some("h4:7101"));
        // An id alone resolves through the nodes map.
        let by_id = LeaderHint {
            id: Some(2),
            address: None,
        };
        assert_eq!(c.resolve_hint(&by_id).as_deref(), Some("h2:7101"));
        c.note_leader("orders", 0, None);
        assert_eq!(c.leader_address("orders", 0), None);
    }

    #[test]
    fn a_full_refresh_drops_deleted_topics() {
        let mut c = MetadataCache::default();
        c.apply(&sample(), true);
        let g = c.generation();
        let mut empty = sample();
        empty.topics.clear();
        c.apply(&empty, false);
        assert!(c.topic("orders").is_some());
        c.apply(&empty, true);
        assert!(c.topic("orders").is_none());
        assert_eq!(c.generation(), g + 2);
    }
}
