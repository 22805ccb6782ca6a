//! Plain Rust views of the cluster (nodes, topics, partitions), converted from the wire
//! types in one place, and the client's cache of them.
//!
//! The cache is a hint, never the truth: it may name a stale leader, and the server corrects
//! it (a not-leader answer with the leader's address, or a metadata refresh). What must hold:
//! a leader the cache names has an address in the nodes map or is reported as unknown.

use std::collections::HashMap;

use fjord_proto::v1;

use crate::error::LeaderHint;

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
    /// Largest accepted record (key + value + headers) in bytes; `None` means the cluster
    /// default (1 MiB).
    pub max_record_bytes: Option<u64>,
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
            max_record_bytes: t.config.map(|c| c.max_record_bytes).and_then(known),
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
        assert_eq!(t.max_record_bytes, None);
        assert_eq!(t.partitions[0].partition, 0);
        assert_eq!(t.partitions[0].leader, Some(3));
        assert_eq!(t.partitions[1].leader, None);
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
