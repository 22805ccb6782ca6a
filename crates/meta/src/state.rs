//! [`MetaState`]: the cluster metadata every node holds, and the [`MetaCommand`]s that change it.
//!
//! `apply` is the only way the state changes. It is deterministic (ordered maps only, no clock,
//! no randomness) because every node of the metadata group applies the same log and must reach
//! the same state. A rejected command returns [`MetaResponse::Error`] and changes nothing.
//!
//! What must hold after every command is written down in [`MetaState::validate`] and checked
//! after each `apply` in debug builds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::acl::{
    AclEntry, USER_HASH_BYTES, USER_SALT_BYTES, UserRecord, validate_acl, validate_user_name,
};
use crate::assign::assign_replicas;
use crate::error::{MetaError, clip};
use crate::identity::IncarnationRecord;
use crate::ids::{GroupId, META_GROUP, NodeId, group_id, split_group_id};
use crate::legacy::TopicConfigV1;
use crate::limits::{
    DEFAULT_REPLICATION_FACTOR, MAX_ACLS, MAX_NAMED_PRODUCERS, MAX_PARTITIONS_PER_TOPIC, MAX_USERS,
};
use crate::topic_config::{ConfigChange, TopicConfig, validate_topic_config};
use crate::validate::{validate_address, validate_producer_name, validate_topic_name};

/// A registered node and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// `host:port` of its gRPC endpoint.
    pub address: String,
}

/// Where one partition's replicas live and who last reported leading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Index of the partition in its topic.
    pub partition: u32,
    /// Its Raft group: `group_id(topic.id, partition)`.
    pub group_id: GroupId,
    /// Distinct nodes holding a replica; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// The leader as last reported, if any.
    pub leader: Option<NodeId>,
    /// Raft term of the reported leader.
    pub leader_epoch: u64,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Never 0 and never reused, so partition group ids never collide.
    pub id: u32,
    /// The topic's name, also its key in [`MetaState::topics`].
    pub name: String,
    /// Replicas per partition (the resolved value, never 0).
    pub replication_factor: u32,
    /// Settings.
    pub config: TopicConfig,
    /// Partitions `0..n`, in order.
    pub partitions: Vec<PartitionAssignment>,
}

/// The metadata group's state.
///
/// `Default` is a valid empty state: a `next_*` counter of 0 is read as 1, so ids still start
/// at 1. [`MetaState::new`] sets them to 1 explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetaState {
    /// Registered nodes by id.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// Id of the next topic created (0 is read as 1).
    pub next_topic_id: u32,
    /// Next producer id handed out (0 is read as 1: producer ids are never 0).
    pub next_producer_id: u64,
    /// The cluster's id, fixed by the first registration that carries one (0: not yet).
    pub cluster_id: u64,
    /// Each node's registered data directory: its incarnation and latest generation (see
    /// [`crate::identity`]).
    pub incarnations: BTreeMap<NodeId, IncarnationRecord>,
    /// Named producers (Kafka's `transactional.id`): name → producer id.
    pub producer_names: BTreeMap<String, u64>,
    /// The latest epoch of each named producer's id; an id not here is unnamed (epoch 0).
    pub producer_epochs: BTreeMap<u64, u16>,
    /// Users (bearer-token identities) by name: a salted hash of their secret only. At most
    /// [`crate::limits::MAX_USERS`].
    pub users: BTreeMap<String, UserRecord>,
    /// ACL entries, at most [`crate::limits::MAX_ACLS`] (see [`crate::acl`]).
    pub acls: BTreeSet<AclEntry>,
}

/// A change to the metadata, as replicated through the metadata group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Adds a node or changes its address.
    RegisterNode {
        /// The node.
        id: NodeId,
        /// `host:port`; see [`validate_address`].
        address: String,
    },
    /// Creates a topic and places its replicas.
    CreateTopic {
        /// See [`validate_topic_name`].
        name: String,
        /// 1 to [`MAX_PARTITIONS_PER_TOPIC`].
        partitions: u32,
        /// 1 to the registered nodes; 0 asks for `min(3, registered nodes)`.
        replication_factor: u32,
        /// Settings, in the shape before the log settings.
        config: TopicConfigV1,
    },
    /// Deletes a topic. Its id is not reused.
    DeleteTopic {
        /// The topic.
        name: String,
    },
    /// A partition group's leader announces itself. Ignored (with `Ok`) if the group is
    /// unknown, the epoch is older than the stored one, the leader is not a replica, or
    /// another leader was already recorded for the same epoch.
    ReportLeader {
        /// The partition's group.
        group_id: GroupId,
        /// The node that leads it.
        leader: NodeId,
        /// The Raft term it leads in.
        epoch: u64,
    },
    /// Hands out a fresh producer id.
    AllocateProducerId,
    /// Creates a topic and places its replicas on the nodes that were alive when it was
    /// proposed. What [`MetaCommand::CreateTopic`] became: a replica placed on a dead node
    /// leaves its partition short of a replica, or without a majority, until the node returns.
    /// (A new variant, at the end, so that logs written before it still decode: postcard
    /// encodes a variant by its index and has no field defaults.)
    CreateTopicOnLive {
        /// See [`validate_topic_name`].
        name: String,
        /// 1 to [`MAX_PARTITIONS_PER_TOPIC`].
        partitions: u32,
        /// 1 to the registered nodes, all of them in `live`; 0 asks for
        /// `min(3, registered nodes)`.
        replication_factor: u32,
        /// Settings, in the shape before the log settings.
        config: TopicConfigV1,
        /// The nodes the proposer's failure detector saw alive (itself included). Replicas
        /// go only on registered nodes in this list.
        live: Vec<NodeId>,
    },
    /// Adds a node or changes its address, as [`MetaCommand::RegisterNode`], and records the
    /// data directory it runs on (see [`crate::identity`]). The first registration with a
    /// cluster id fixes the cluster's; one with another is rejected, and so is one with another
    /// incarnation than the node's recorded one. The recorded generation only grows.
    /// (At the end: logs written before it still decode.)
    RegisterIncarnation {
        /// The node.
        id: NodeId,
        /// `host:port`; see [`validate_address`].
        address: String,
        /// Its directory's incarnation (never 0).
        incarnation: u64,
        /// Its directory's generation at this start.
        generation: u64,
        /// Its directory's cluster id (0: not known).
        cluster_id: u64,
    },
    /// Hands out a block of `count` fresh producer ids (1 to [`MAX_PRODUCER_ID_BLOCK`]) to
    /// the node that proposes it, which then gives them to producers from its own store,
    /// without a metadata write: a producer can start on any node that is up, also where the
    /// metadata group has no majority (Kafka's KIP-730). (At the end: older logs decode.)
    AllocateProducerIdBlock {
        /// How many ids.
        count: u64,
    },
    /// A registered node comes back on a new data directory (`fjord serve --rebuild`), after
    /// the metadata leader made it a learner of every group it was a voter of: its recorded
    /// incarnation becomes `incarnation`, with generation 0, so the new directory's starts
    /// register from there. Only if the record is still `replaces` (compare and set): a
    /// request from an earlier rebuild, delayed and applied after a later one, must not put
    /// back an incarnation whose directory may be restored from a copy. Applying the same
    /// command twice is a no-op. (At the end: older logs decode.)
    RebuildIncarnation {
        /// The node.
        id: NodeId,
        /// `host:port`; see [`validate_address`].
        address: String,
        /// The new directory's incarnation (never 0).
        incarnation: u64,
        /// The cluster id the new directory got from its peers (0: not known).
        cluster_id: u64,
        /// The incarnation the rebuilding node's peers reported for it (0: none recorded).
        replaces: u64,
    },
    /// Initialises a named producer (Kafka's `InitProducerId` with a `transactional.id`): the
    /// first time, a fresh producer id at epoch 0; after that, the same id at the next epoch,
    /// which fences every earlier instance (`fjord_storage::partition`, rule 2).
    InitNamedProducer {
        /// 1 to [`crate::MAX_PRODUCER_NAME_LEN`] bytes, no control characters.
        name: String,
    },
    /// Changes nothing; answers whether producer `id` was allocated and its latest epoch, as
    /// of this command's place in the log (a linearizable read for a node whose own view may
    /// be behind).
    CheckProducer {
        /// The producer id.
        id: u64,
    },
    /// Creates a topic as [`MetaCommand::CreateTopicOnLive`] does, with a config that may
    /// carry the log settings (`retention_ms`, ...): what `CreateTopicOnLive` became. (At the
    /// end, and the older commands keep [`TopicConfigV1`]: older logs decode.)
    CreateTopicWithConfig {
        /// See [`validate_topic_name`].
        name: String,
        /// 1 to [`MAX_PARTITIONS_PER_TOPIC`].
        partitions: u32,
        /// 1 to the registered nodes, all of them in `live`; 0 asks for
        /// `min(3, registered nodes)` (kept for the entries already in logs: nodes now resolve
        /// the default themselves, counting their configured peers too, and propose it named).
        replication_factor: u32,
        /// Settings; see [`validate_topic_config`].
        config: TopicConfig,
        /// The nodes the proposer's failure detector saw alive (itself included).
        live: Vec<NodeId>,
    },
    /// Changes a topic's settings: sets some, resets others to the cluster default, keeps the
    /// rest; all or nothing (see [`ConfigChange::check`]). Answers the topic as changed.
    /// (At the end: older logs decode.)
    AlterTopicConfig {
        /// The topic.
        name: String,
        /// What to set and reset.
        change: ConfigChange,
    },
    /// Creates a user with a credential the proposer made (a random secret's salted hash:
    /// this state machine draws no random numbers). Rejected if the user exists.
    /// (At the end: older logs decode.)
    CreateUser {
        /// See [`crate::acl::validate_user_name`].
        name: String,
        /// The salt and hash.
        credential: UserRecord,
    },
    /// Deletes a user: its token no longer authenticates. Its ACL entries stay (as in Kafka).
    DeleteUser {
        /// The user.
        name: String,
    },
    /// Adds an ACL entry (adding one that exists changes nothing).
    AddAcl {
        /// See [`crate::acl::validate_acl`].
        entry: AclEntry,
    },
    /// Removes an ACL entry; rejected if there is no such entry.
    RemoveAcl {
        /// The entry.
        entry: AclEntry,
    },
    /// Deletes the topic `name` if it is still the one with id `id`: a delete retried after a
    /// timeout (its first attempt committed) must not delete a topic created since under the
    /// same name. Rejected as unknown otherwise.
    DeleteTopicId {
        /// The topic.
        name: String,
        /// Its id when the delete was asked for.
        id: u32,
    },
}

/// Checks a credential's salt and hash lengths.
fn validate_credential(name: &str, cred: &UserRecord) -> Result<(), MetaError> {
    for (what, len, want) in [
        ("salt", cred.salt.len(), USER_SALT_BYTES),
        ("hash", cred.hash.len(), USER_HASH_BYTES),
    ] {
        if len != want {
            return Err(MetaError::InvalidCredential {
                name: clip(name),
                reason: format!("its {what} is {len} bytes, not {want}"),
            });
        }
    }
    Ok(())
}

/// Producer ids in one [`MetaCommand::AllocateProducerIdBlock`], at most.
pub const MAX_PRODUCER_ID_BLOCK: u64 = 1 << 20;

/// What applying a [`MetaCommand`] produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Done (or harmlessly ignored).
    Ok,
    /// The topic just created.
    Topic(Topic),
    /// The producer id just allocated.
    ProducerId(u64),
    /// Rejected; the state is unchanged.
    Error(MetaError),
    /// The producer ids `first..first + count`, just allocated.
    ProducerIdBlock { first: u64, count: u64 },
    /// A named producer's id and new epoch.
    ProducerEpoch { id: u64, epoch: u16 },
    /// The answer to [`MetaCommand::CheckProducer`].
    ProducerCheck(ProducerCheck),
}

/// What the metadata knows of a producer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProducerCheck {
    /// Never allocated: ids below `next` were.
    Unallocated { next: u64 },
    /// Allocated, unnamed: its epoch is always 0.
    Unnamed,
    /// A named producer's id, at its latest epoch.
    Named { epoch: u16 },
}

impl MetaState {
    /// An empty state with the id counters at 1.
    pub fn new() -> Self {
        MetaState {
            next_topic_id: 1,
            next_producer_id: 1,
            ..Default::default()
        }
    }

    /// Applies one committed command. Validates first: on error nothing changes.
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        let result = match cmd {
            MetaCommand::RegisterNode { id, address } => self.register_node(*id, address),
            MetaCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
            } => {
                let config = config.clone().into();
                self.create_topic(name, *partitions, *replication_factor, &config, None)
            }
            MetaCommand::CreateTopicOnLive {
                name,
                partitions,
                replication_factor,
                config,
                live,
            } => {
                let config = config.clone().into();
                self.create_topic(name, *partitions, *replication_factor, &config, Some(live))
            }
            MetaCommand::CreateTopicWithConfig {
                name,
                partitions,
                replication_factor,
                config,
                live,
            } => self.create_topic(name, *partitions, *replication_factor, config, Some(live)),
            MetaCommand::AlterTopicConfig { name, change } => self.alter_topic_config(name, change),
            MetaCommand::DeleteTopic { name } => self.delete_topic(name),
            MetaCommand::ReportLeader {
                group_id,
                leader,
                epoch,
            } => self.report_leader(*group_id, *leader, *epoch),
            MetaCommand::AllocateProducerId => self.allocate_producer_id(),
            MetaCommand::RegisterIncarnation {
                id,
                address,
                incarnation,
                generation,
                cluster_id,
            } => self.register_incarnation(*id, address, *incarnation, *generation, *cluster_id),
            MetaCommand::AllocateProducerIdBlock { count } => self.allocate_producer_ids(*count),
            MetaCommand::RebuildIncarnation {
                id,
                address,
                incarnation,
                cluster_id,
                replaces,
            } => self.rebuild_incarnation(*id, address, *incarnation, *cluster_id, *replaces),
            MetaCommand::InitNamedProducer { name } => self.init_named_producer(name),
            MetaCommand::CheckProducer { id } => {
                Ok(MetaResponse::ProducerCheck(self.check_producer(*id)))
            }
            MetaCommand::CreateUser { name, credential } => self.create_user(name, credential),
            MetaCommand::DeleteUser { name } => self.delete_user(name),
            MetaCommand::AddAcl { entry } => self.add_acl(entry),
            MetaCommand::RemoveAcl { entry } => self.remove_acl(entry),
            MetaCommand::DeleteTopicId { name, id } => match self.topics.get(name.as_str()) {
                Some(t) if t.id == *id => self.delete_topic(name),
                _ => Err(MetaError::UnknownTopic { name: clip(name) }),
            },
        };
        debug_assert_eq!(self.validate(), Ok(()), "invariant broken after {cmd:?}");
        result.unwrap_or_else(MetaResponse::Error)
    }

    fn create_user(&mut self, name: &str, cred: &UserRecord) -> Result<MetaResponse, MetaError> {
        validate_user_name(name)?;
        validate_credential(name, cred)?;
        match self.users.get(name) {
            // The same credential (its salt is drawn afresh for each request): this very
            // request again, retried after a forward timed out once it had committed. Its
            // caller must get its token, not "exists" for a user whose secret it threw away.
            Some(existing) if existing == cred => return Ok(MetaResponse::Ok),
            Some(_) => {
                return Err(MetaError::UserExists {
                    name: name.to_string(),
                });
            }
            None => {}
        }
        if self.users.len() >= MAX_USERS {
            return Err(MetaError::TooManyUsers { max: MAX_USERS });
        }
        self.users.insert(name.to_string(), cred.clone());
        Ok(MetaResponse::Ok)
    }

    fn delete_user(&mut self, name: &str) -> Result<MetaResponse, MetaError> {
        match self.users.remove(name) {
            Some(_) => Ok(MetaResponse::Ok),
            None => Err(MetaError::UnknownUser { name: clip(name) }),
        }
    }

    fn add_acl(&mut self, entry: &AclEntry) -> Result<MetaResponse, MetaError> {
        validate_acl(entry)?;
        if !self.acls.contains(entry) && self.acls.len() >= MAX_ACLS {
            return Err(MetaError::TooManyAcls { max: MAX_ACLS });
        }
        self.acls.insert(entry.clone());
        Ok(MetaResponse::Ok)
    }

    fn remove_acl(&mut self, entry: &AclEntry) -> Result<MetaResponse, MetaError> {
        if self.acls.remove(entry) {
            Ok(MetaResponse::Ok)
        } else {
            Err(MetaError::UnknownAcl {
                entry: clip(&entry.to_string()),
            })
        }
    }

    fn register_node(&mut self, id: NodeId, address: &str) -> Result<MetaResponse, MetaError> {
        validate_address(address)?;
        self.nodes.insert(
            id,
            NodeInfo {
                id,
                address: address.to_string(),
            },
        );
        Ok(MetaResponse::Ok)
    }

    fn register_incarnation(
        &mut self,
        id: NodeId,
        address: &str,
        incarnation: u64,
        generation: u64,
        cluster_id: u64,
    ) -> Result<MetaResponse, MetaError> {
        self.check_directory(id, address, incarnation, cluster_id)?;
        if let Some(rec) = self.incarnations.get(&id)
            && rec.incarnation != incarnation
        {
            return Err(MetaError::OtherIncarnation {
                node: id,
                incarnation,
                recorded: rec.incarnation,
            });
        }
        if self.cluster_id == 0 {
            self.cluster_id = cluster_id;
        }
        let rec = self.incarnations.entry(id).or_insert(IncarnationRecord {
            incarnation,
            generation,
        });
        rec.generation = rec.generation.max(generation);
        self.nodes.insert(
            id,
            NodeInfo {
                id,
                address: address.to_string(),
            },
        );
        Ok(MetaResponse::Ok)
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        requested_rf: u32,
        config: &TopicConfig,
        live: Option<&[NodeId]>,
    ) -> Result<MetaResponse, MetaError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(MetaError::TopicExists {
                name: name.to_string(),
            });
        }
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(MetaError::InvalidPartitionCount {
                requested: partitions,
                max: MAX_PARTITIONS_PER_TOPIC,
            });
        }
        let rf = self.replication_factor(requested_rf)?;
        let node_ids = self.placement_nodes(live, rf)?;
        validate_topic_config(config)?;
        let id = self.next_topic_id.max(1);
        let next_topic_id = id.checked_add(1).ok_or(MetaError::TopicIdsExhausted)?;
        let partitions = self.place_partitions(id, &node_ids, partitions, rf);
        let topic = Topic {
            id,
            name: name.to_string(),
            replication_factor: rf,
            config: config.clone(),
            partitions,
        };
        self.next_topic_id = next_topic_id;
        self.topics.insert(name.to_string(), topic.clone());
        Ok(MetaResponse::Topic(topic))
    }

    /// A new topic's replication factor: the one requested, or the default capped by the
    /// registered nodes; at least 1 and at most the registered nodes.
    fn replication_factor(&self, requested_rf: u32) -> Result<u32, MetaError> {
        let nodes = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let rf = if requested_rf == 0 {
            DEFAULT_REPLICATION_FACTOR.min(nodes)
        } else {
            requested_rf
        };
        if !(1..=nodes).contains(&rf) {
            return Err(MetaError::InvalidReplicationFactor {
                requested: requested_rf,
                nodes,
            });
        }
        Ok(rf)
    }

    /// The nodes a new topic's replicas may go on: registered nodes that are alive (all
    /// registered ones for the old command, which carries no live set), at least `rf`.
    fn placement_nodes(&self, live: Option<&[NodeId]>, rf: u32) -> Result<Vec<NodeId>, MetaError> {
        let node_ids: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| live.is_none_or(|l| l.contains(n)))
            .collect();
        let live_count = u32::try_from(node_ids.len()).unwrap_or(u32::MAX);
        if live_count < rf {
            return Err(MetaError::NotEnoughLiveNodes {
                replication_factor: rf,
                live: live_count,
                registered: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            });
        }
        Ok(node_ids)
    }

    /// The partitions of new topic `id`, their replicas placed on `node_ids` around the
    /// replicas and preferred leaders the other topics already hold.
    fn place_partitions(
        &self,
        id: u32,
        node_ids: &[NodeId],
        partitions: u32,
        rf: u32,
    ) -> Vec<PartitionAssignment> {
        let placement = assign_replicas(
            node_ids,
            &self.replica_counts(),
            &self.preferred_leader_counts(),
            partitions,
            rf,
        );
        (0..partitions)
            .zip(placement)
            .map(|(partition, replicas)| PartitionAssignment {
                partition,
                group_id: group_id(id, partition),
                replicas,
                leader: None,
                leader_epoch: 0,
            })
            .collect()
    }

    fn delete_topic(&mut self, name: &str) -> Result<MetaResponse, MetaError> {
        // The id is not handed back: a new topic must never reuse the groups of a deleted one,
        // whose replicas may still be shutting down.
        match self.topics.remove(name) {
            Some(_) => Ok(MetaResponse::Ok),
            None => Err(MetaError::UnknownTopic { name: clip(name) }),
        }
    }

    fn alter_topic_config(
        &mut self,
        name: &str,
        change: &ConfigChange,
    ) -> Result<MetaResponse, MetaError> {
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| MetaError::UnknownTopic { name: clip(name) })?;
        topic.config = topic.config.altered(change)?;
        Ok(MetaResponse::Topic(topic.clone()))
    }

    fn report_leader(
        &mut self,
        g: GroupId,
        leader: NodeId,
        epoch: u64,
    ) -> Result<MetaResponse, MetaError> {
        // Reports race with deletions and arrive late or twice, so every reason to ignore one
        // is Ok: the reporter has nothing to fix.
        let (topic_id, partition) = split_group_id(g);
        let Some(p) = self
            .topics
            .values_mut()
            .find(|t| t.id == topic_id)
            .and_then(|t| t.partitions.get_mut(partition as usize))
            .filter(|p| g != META_GROUP && p.group_id == g)
        else {
            return Ok(MetaResponse::Ok);
        };
        // openraft's leader ids order by term, then node id: at one term a node with a higher
        // id can be elected after a lower one (two replicas campaigning at once when a group
        // starts), never before it. So a report is newer when its (term, node) is greater; at
        // an equal term, a lower node id is the stale one.
        let accept = match p.leader {
            None => epoch >= p.leader_epoch,
            Some(current) => (epoch, leader) > (p.leader_epoch, current),
        };
        if accept && p.replicas.contains(&leader) {
            p.leader = Some(leader);
            p.leader_epoch = epoch;
        }
        Ok(MetaResponse::Ok)
    }

    fn init_named_producer(&mut self, name: &str) -> Result<MetaResponse, MetaError> {
        validate_producer_name(name)?;
        if let Some(&id) = self.producer_names.get(name) {
            let epoch = self.producer_epochs.get(&id).copied().unwrap_or(0);
            let next = epoch
                .checked_add(1)
                .ok_or_else(|| MetaError::ProducerEpochsExhausted { name: clip(name) })?;
            self.producer_epochs.insert(id, next);
            return Ok(MetaResponse::ProducerEpoch { id, epoch: next });
        }
        if self.producer_names.len() >= MAX_NAMED_PRODUCERS {
            return Err(MetaError::TooManyNamedProducers {
                max: MAX_NAMED_PRODUCERS,
            });
        }
        let MetaResponse::ProducerId(id) = self.allocate_producer_id()? else {
            unreachable!("allocate_producer_id answers ProducerId");
        };
        self.producer_names.insert(name.to_string(), id);
        self.producer_epochs.insert(id, 0);
        Ok(MetaResponse::ProducerEpoch { id, epoch: 0 })
    }

    /// What this state knows of producer id `id`.
    pub fn check_producer(&self, id: u64) -> ProducerCheck {
        let next = self.next_producer_id.max(1);
        if id == 0 || id >= next {
            ProducerCheck::Unallocated { next }
        } else {
            match self.producer_epochs.get(&id) {
                Some(&epoch) => ProducerCheck::Named { epoch },
                None => ProducerCheck::Unnamed,
            }
        }
    }

    fn allocate_producer_id(&mut self) -> Result<MetaResponse, MetaError> {
        let id = self.next_producer_id.max(1);
        self.next_producer_id = id.checked_add(1).ok_or(MetaError::ProducerIdsExhausted)?;
        Ok(MetaResponse::ProducerId(id))
    }

    /// What every registration of a data directory must carry: a valid address, an
    /// incarnation, and this cluster's id (or none yet).
    fn check_directory(
        &self,
        id: NodeId,
        address: &str,
        incarnation: u64,
        cluster_id: u64,
    ) -> Result<(), MetaError> {
        validate_address(address)?;
        if incarnation == 0 {
            return Err(MetaError::InvalidIncarnation { node: id });
        }
        if cluster_id != 0 && self.cluster_id != 0 && cluster_id != self.cluster_id {
            return Err(MetaError::OtherCluster {
                node: id,
                cluster_id,
                ours: self.cluster_id,
            });
        }
        Ok(())
    }

    fn rebuild_incarnation(
        &mut self,
        id: NodeId,
        address: &str,
        incarnation: u64,
        cluster_id: u64,
        replaces: u64,
    ) -> Result<MetaResponse, MetaError> {
        self.check_directory(id, address, incarnation, cluster_id)?;
        let recorded = self.recorded_incarnation(id);
        if recorded == incarnation {
            return Ok(MetaResponse::Ok);
        }
        if recorded != replaces {
            return Err(MetaError::RebuildRaced {
                node: id,
                replaces,
                recorded,
            });
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return Err(MetaError::UnknownNode { node: id });
        };
        node.address = address.to_string();
        self.incarnations.insert(
            id,
            IncarnationRecord {
                incarnation,
                generation: 0,
            },
        );
        Ok(MetaResponse::Ok)
    }

    /// The incarnation recorded for node `id` (0: none).
    pub fn recorded_incarnation(&self, id: NodeId) -> u64 {
        self.incarnations.get(&id).map_or(0, |r| r.incarnation)
    }

    fn allocate_producer_ids(&mut self, count: u64) -> Result<MetaResponse, MetaError> {
        if count == 0 || count > MAX_PRODUCER_ID_BLOCK {
            return Err(MetaError::InvalidProducerIdBlock {
                count,
                max: MAX_PRODUCER_ID_BLOCK,
            });
        }
        let first = self.next_producer_id.max(1);
        self.next_producer_id = first
            .checked_add(count)
            .ok_or(MetaError::ProducerIdsExhausted)?;
        Ok(MetaResponse::ProducerIdBlock { first, count })
    }

    /// Checks every invariant of the state; the error names the first one broken.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_nodes()?;
        self.validate_named_producers()?;
        self.validate_security()?;
        let mut topic_ids = BTreeSet::new();
        let mut group_ids = BTreeSet::new();
        for (key, topic) in &self.topics {
            if &topic.name != key {
                return Err(format!("topic key {key:?} holds topic {:?}", topic.name));
            }
            self.validate_topic(topic, &mut topic_ids)?;
            for (index, p) in topic.partitions.iter().enumerate() {
                self.validate_partition(topic, index, p, &mut group_ids)?;
            }
        }
        Ok(())
    }

    /// Users and ACL entries: within their limits, each valid as its command checks it.
    fn validate_security(&self) -> Result<(), String> {
        if self.users.len() > MAX_USERS {
            return Err(format!(
                "{} users, over MAX_USERS {MAX_USERS}",
                self.users.len()
            ));
        }
        if self.acls.len() > MAX_ACLS {
            return Err(format!(
                "{} ACL entries, over MAX_ACLS {MAX_ACLS}",
                self.acls.len()
            ));
        }
        for (name, cred) in &self.users {
            validate_user_name(name).map_err(|e| e.to_string())?;
            validate_credential(name, cred).map_err(|e| e.to_string())?;
        }
        for e in &self.acls {
            validate_acl(e).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<(), String> {
        for (key, node) in &self.nodes {
            if node.id != *key {
                return Err(format!("node key {key} holds the info of node {}", node.id));
            }
            validate_address(&node.address).map_err(|e| format!("node {key}: {e}"))?;
        }
        for (node, rec) in &self.incarnations {
            if rec.incarnation == 0 {
                return Err(format!("node {node} has incarnation 0 recorded"));
            }
            if !self.nodes.contains_key(node) {
                return Err(format!(
                    "node {node} has an incarnation but is not registered"
                ));
            }
        }
        Ok(())
    }

    fn validate_named_producers(&self) -> Result<(), String> {
        if self.producer_names.len() != self.producer_epochs.len()
            || self.producer_names.len() > MAX_NAMED_PRODUCERS
        {
            return Err(format!(
                "{} producer names but {} named producer ids (limit {MAX_NAMED_PRODUCERS})",
                self.producer_names.len(),
                self.producer_epochs.len()
            ));
        }
        for (name, id) in &self.producer_names {
            if !self.producer_epochs.contains_key(id) || *id == 0 || *id >= self.next_producer_id {
                return Err(format!(
                    "producer {name:?} has id {id}, not a named id below next_producer_id {}",
                    self.next_producer_id
                ));
            }
        }
        Ok(())
    }

    /// A topic's own facts; `topic_ids` collects the ids seen so far.
    fn validate_topic(&self, topic: &Topic, topic_ids: &mut BTreeSet<u32>) -> Result<(), String> {
        let name = &topic.name;
        validate_topic_name(name).map_err(|e| e.to_string())?;
        if topic.id == 0 {
            return Err(format!(
                "topic {name:?} has id 0, which would make group 0 (meta)"
            ));
        }
        if topic.id >= self.next_topic_id {
            return Err(format!(
                "topic {name:?} has id {} but next_topic_id is {}: ids would be reused",
                topic.id, self.next_topic_id
            ));
        }
        if !topic_ids.insert(topic.id) {
            return Err(format!("topic {name:?} reuses topic id {}", topic.id));
        }
        validate_topic_config(&topic.config).map_err(|e| format!("topic {name:?}: {e}"))?;
        let count = topic.partitions.len();
        if count == 0 || count > MAX_PARTITIONS_PER_TOPIC as usize {
            return Err(format!(
                "topic {name:?} has {count} partitions, outside 1..={MAX_PARTITIONS_PER_TOPIC}"
            ));
        }
        if topic.replication_factor == 0 {
            return Err(format!("topic {name:?} has replication factor 0"));
        }
        Ok(())
    }

    /// Partition `index` of `topic`; `group_ids` collects the group ids seen so far.
    fn validate_partition(
        &self,
        topic: &Topic,
        index: usize,
        p: &PartitionAssignment,
        group_ids: &mut BTreeSet<GroupId>,
    ) -> Result<(), String> {
        let at = format!("topic {:?} partition {index}", topic.name);
        let rf = topic.replication_factor as usize;
        if p.partition as usize != index {
            return Err(format!(
                "{at} is numbered {}: partitions must be dense",
                p.partition
            ));
        }
        if p.group_id != group_id(topic.id, p.partition) {
            return Err(format!(
                "{at} has group id {:#x}, expected {:#x}",
                p.group_id,
                group_id(topic.id, p.partition)
            ));
        }
        if !group_ids.insert(p.group_id) {
            return Err(format!("{at} reuses group id {:#x}", p.group_id));
        }
        if p.replicas.len() != rf {
            return Err(format!(
                "{at} has {} replicas, replication factor is {rf}",
                p.replicas.len()
            ));
        }
        let distinct: BTreeSet<_> = p.replicas.iter().collect();
        if distinct.len() != p.replicas.len() {
            return Err(format!("{at} repeats a replica: {:?}", p.replicas));
        }
        if let Some(unknown) = p.replicas.iter().find(|n| !self.nodes.contains_key(n)) {
            return Err(format!("{at} has a replica on unknown node {unknown}"));
        }
        if let Some(leader) = p.leader
            && !p.replicas.contains(&leader)
        {
            return Err(format!(
                "{at} is led by {leader}, not one of its replicas {:?}",
                p.replicas
            ));
        }
        Ok(())
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// The topic with id `id` (ids are never reused, so at most one).
    pub fn topic_by_id(&self, id: u32) -> Option<&Topic> {
        self.topics.values().find(|t| t.id == id)
    }

    /// The topic and partition of partition group `g`; `None` for the metadata group and
    /// unknown groups.
    pub fn partition_by_group(&self, g: GroupId) -> Option<(&Topic, &PartitionAssignment)> {
        if g == META_GROUP {
            return None;
        }
        let (topic_id, partition) = split_group_id(g);
        let topic = self.topics.values().find(|t| t.id == topic_id)?;
        let p = topic
            .partitions
            .get(partition as usize)
            .filter(|p| p.group_id == g)?;
        Some((topic, p))
    }

    /// All partition groups that have a replica on `node`, as (group id, replicas), in group
    /// id order.
    pub fn groups_of_node(&self, node: NodeId) -> Vec<(GroupId, Vec<NodeId>)> {
        let mut groups: Vec<_> = self
            .partitions()
            .filter(|p| p.replicas.contains(&node))
            .map(|p| (p.group_id, p.replicas.clone()))
            .collect();
        groups.sort_unstable_by_key(|(g, _)| *g);
        groups
    }

    /// Number of partitions each node currently leads (reported leaders). Every registered
    /// node has an entry, 0 if it leads nothing.
    pub fn leader_counts(&self) -> BTreeMap<NodeId, usize> {
        self.count_per_node(|p| p.leader.into_iter().collect())
    }

    /// Number of replicas each node holds. Every registered node has an entry.
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        self.count_per_node(|p| p.replicas.clone())
    }

    /// Number of partitions whose preferred leader (first replica) each node is. Every
    /// registered node has an entry.
    pub fn preferred_leader_counts(&self) -> BTreeMap<NodeId, usize> {
        self.count_per_node(|p| p.replicas.first().copied().into_iter().collect())
    }

    /// Every partition of every topic, topics in name order.
    pub fn partitions(&self) -> impl Iterator<Item = &PartitionAssignment> {
        self.topics.values().flat_map(|t| t.partitions.iter())
    }

    fn count_per_node(
        &self,
        nodes_of: impl Fn(&PartitionAssignment) -> Vec<NodeId>,
    ) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for p in self.partitions() {
            for n in nodes_of(p) {
                *counts.entry(n).or_default() += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_key::ConfigKey;
    use crate::limits::{DEFAULT_MAX_RECORD_BYTES, MAX_RECORD_BYTES_LIMIT, MAX_TOPIC_NAME_LEN};
    use crate::topic_config::{CleanupPolicy, ConfigSetting};

    fn cluster(nodes: u64) -> MetaState {
        let mut state = MetaState::new();
        for id in 1..=nodes {
            let cmd = MetaCommand::RegisterNode {
                id,
                address: format!("node{id}:9092"),
            };
            assert_eq!(state.apply(&cmd), MetaResponse::Ok);
        }
        state
    }

    fn create(name: &str, partitions: u32, rf: u32) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            config: TopicConfigV1::default(),
        }
    }

    fn topic_of(resp: MetaResponse) -> Topic {
        match resp {
            MetaResponse::Topic(t) => t,
            other => panic!("expected a topic, got {other:?}"),
        }
    }

    /// Applies `cmd`, expects an error, checks the state did not change and returns the error.
    fn rejected(state: &mut MetaState, cmd: MetaCommand) -> MetaError {
        let before = state.clone();
        let resp = state.apply(&cmd);
        assert_eq!(
            *state, before,
            "{cmd:?} changed the state although rejected"
        );
        match resp {
            MetaResponse::Error(e) => e,
            other => panic!("{cmd:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn create_topic_places_replicas_and_numbers_groups() {
        let mut state = cluster(3);
        let topic = topic_of(state.apply(&create("orders", 6, 0)));
        assert_eq!((topic.id, topic.replication_factor), (1, 3));
        for (i, p) in topic.partitions.iter().enumerate() {
            assert_eq!(p.partition, i as u32);
            assert_eq!(p.group_id, group_id(1, i as u32));
            assert_eq!(p.replicas.len(), 3);
            assert_eq!((p.leader, p.leader_epoch), (None, 0));
        }
        assert_eq!(state.topic("orders"), Some(&topic));
        assert_eq!(
            state.preferred_leader_counts(),
            BTreeMap::from([(1, 2), (2, 2), (3, 2)])
        );
        let second = topic_of(state.apply(&create("payments", 1, 1)));
        assert_eq!(second.id, 2);
        assert_eq!(state.next_topic_id, 3);
    }

    fn create_on(name: &str, partitions: u32, rf: u32, live: &[NodeId]) -> MetaCommand {
        MetaCommand::CreateTopicOnLive {
            name: name.into(),
            partitions,
            replication_factor: rf,
            config: TopicConfigV1::default(),
            live: live.to_vec(),
        }
    }

    #[test]
    fn replicas_go_only_on_live_nodes() {
        let mut state = cluster(3);
        let t = topic_of(state.apply(&create_on("t", 6, 2, &[1, 3])));
        for p in &t.partitions {
            assert_eq!(p.replicas.len(), 2);
            assert!(p.replicas.iter().all(|n| [1, 3].contains(n)), "{p:?}");
        }
        // The default replication factor, min(3, registered nodes), needs 3 live nodes.
        let e = rejected(&mut state, create_on("u", 1, 0, &[1, 3]));
        assert_eq!(
            e,
            MetaError::NotEnoughLiveNodes {
                replication_factor: 3,
                live: 2,
                registered: 3
            }
        );
        assert!(
            e.to_string()
                .contains("only 2 of the 3 registered nodes are alive"),
            "{e}"
        );
        // A live node that is not registered does not count.
        let e = rejected(&mut state, create_on("v", 1, 3, &[1, 3, 9]));
        assert!(
            matches!(e, MetaError::NotEnoughLiveNodes { live: 2, .. }),
            "{e}"
        );
        let all = topic_of(state.apply(&create_on("w", 3, 3, &[1, 2, 3])));
        assert!(all.partitions.iter().all(|p| p.replicas.len() == 3));
    }

    #[test]
    fn commands_logged_before_live_placement_still_decode() {
        // postcard encodes a variant by its index: the old CreateTopic keeps index 1, and
        // the new command comes after every older one.
        let old = MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: 3,
            config: TopicConfigV1::default(),
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        assert_eq!(bytes, [1, 1, b't', 2, 3, 0]);
        assert_eq!(postcard::from_bytes::<MetaCommand>(&bytes).unwrap(), old);
        assert_eq!(
            postcard::to_stdvec(&create_on("t", 1, 1, &[1])).unwrap()[0],
            5
        );
        // It still places replicas on every registered node, as it did.
        let mut state = cluster(3);
        let t = topic_of(state.apply(&old));
        assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
    }

    #[test]
    fn commands_logged_before_incarnations_still_decode() {
        // RegisterIncarnation is appended: every older command keeps its variant index.
        let old = MetaCommand::RegisterNode {
            id: 1,
            address: "a:1".into(),
        };
        assert_eq!(postcard::to_stdvec(&old).unwrap()[0], 0);
        assert_eq!(
            postcard::to_stdvec(&MetaCommand::AllocateProducerId).unwrap()[0],
            4
        );
        assert_eq!(
            postcard::to_stdvec(&create_on("t", 1, 1, &[1])).unwrap()[0],
            5
        );
        let new = register(1, 9, 1, 0);
        assert_eq!(postcard::to_stdvec(&new).unwrap()[0], 6);
        let block = MetaCommand::AllocateProducerIdBlock { count: 1 };
        assert_eq!(postcard::to_stdvec(&block).unwrap()[0], 7);
        let rebuild = MetaCommand::RebuildIncarnation {
            id: 1,
            address: "a:1".into(),
            incarnation: 5,
            cluster_id: 0,
            replaces: 0,
        };
        assert_eq!(postcard::to_stdvec(&rebuild).unwrap()[0], 8);
    }

    #[test]
    fn a_rebuilt_node_gets_its_new_incarnation_recorded() {
        let mut state = MetaState::default();
        assert_eq!(state.apply(&register(1, 9, 4, 77)), MetaResponse::Ok);
        // Another directory under the same id is refused by a plain registration ...
        assert!(matches!(
            state.apply(&register(1, 10, 1, 77)),
            MetaResponse::Error(MetaError::OtherIncarnation { .. })
        ));
        // ... and recorded by a rebuild, from generation 0.
        let rebuild = |id, cluster_id| MetaCommand::RebuildIncarnation {
            id,
            address: "b:2".into(),
            incarnation: 10,
            cluster_id,
            replaces: 9,
        };
        assert_eq!(state.apply(&rebuild(1, 77)), MetaResponse::Ok);
        assert_eq!(state.apply(&rebuild(1, 77)), MetaResponse::Ok, "a retry");
        assert_eq!(state.incarnations[&1].incarnation, 10);
        assert_eq!(state.incarnations[&1].generation, 0);
        assert_eq!(state.nodes[&1].address, "b:2");
        assert_eq!(state.apply(&register(1, 10, 1, 77)), MetaResponse::Ok);
        // A rebuild that saw the old record, applied after another rebuild (delayed: its
        // node died meanwhile), does not put its incarnation back.
        let late = MetaCommand::RebuildIncarnation {
            id: 1,
            address: "b:2".into(),
            incarnation: 11,
            cluster_id: 77,
            replaces: 9,
        };
        assert_eq!(
            state.apply(&late),
            MetaResponse::Error(MetaError::RebuildRaced {
                node: 1,
                replaces: 9,
                recorded: 10
            })
        );
        assert_eq!(state.incarnations[&1].incarnation, 10);
        // Only a registered node of this cluster is rebuilt.
        assert!(matches!(
            state.apply(&MetaCommand::RebuildIncarnation {
                id: 2,
                address: "b:2".into(),
                incarnation: 10,
                cluster_id: 77,
                replaces: 0,
            }),
            MetaResponse::Error(MetaError::UnknownNode { node: 2 })
        ));
        assert!(matches!(
            state.apply(&rebuild(1, 78)),
            MetaResponse::Error(MetaError::OtherCluster { .. })
        ));
    }

    #[test]
    fn producer_id_blocks_never_overlap_single_ids() {
        let mut state = MetaState::default();
        assert_eq!(
            state.apply(&MetaCommand::AllocateProducerId),
            MetaResponse::ProducerId(1)
        );
        assert_eq!(
            state.apply(&MetaCommand::AllocateProducerIdBlock { count: 100 }),
            MetaResponse::ProducerIdBlock {
                first: 2,
                count: 100
            }
        );
        assert_eq!(
            state.apply(&MetaCommand::AllocateProducerId),
            MetaResponse::ProducerId(102)
        );
        for count in [0, MAX_PRODUCER_ID_BLOCK + 1] {
            assert!(matches!(
                state.apply(&MetaCommand::AllocateProducerIdBlock { count }),
                MetaResponse::Error(MetaError::InvalidProducerIdBlock { .. })
            ));
        }
        state.next_producer_id = u64::MAX - 5;
        assert_eq!(
            state.apply(&MetaCommand::AllocateProducerIdBlock { count: 10 }),
            MetaResponse::Error(MetaError::ProducerIdsExhausted)
        );
    }

    #[test]
    fn a_snapshot_from_before_incarnations_decodes_as_the_old_shape() {
        let old = crate::legacy::MetaStateV1 {
            next_topic_id: 3,
            next_producer_id: 5,
            ..Default::default()
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        assert!(postcard::from_bytes::<MetaState>(&bytes).is_err());
        let state: MetaState = postcard::from_bytes::<crate::legacy::MetaStateV1>(&bytes)
            .unwrap()
            .into();
        assert_eq!(state.next_topic_id, 3);
        assert_eq!(state.cluster_id, 0);
    }

    fn register(id: NodeId, incarnation: u64, generation: u64, cluster_id: u64) -> MetaCommand {
        MetaCommand::RegisterIncarnation {
            id,
            address: format!("n{id}:1"),
            incarnation,
            generation,
            cluster_id,
        }
    }

    #[test]
    fn incarnations_are_recorded_and_generations_only_grow() {
        let mut s = MetaState::new();
        assert_eq!(s.apply(&register(1, 9, 2, 77)), MetaResponse::Ok);
        assert_eq!(s.cluster_id, 77, "the first cluster id is the cluster's");
        assert_eq!(s.nodes[&1].address, "n1:1");
        // A late registration of an older generation (a retry) does not lower it.
        assert_eq!(s.apply(&register(1, 9, 1, 77)), MetaResponse::Ok);
        assert_eq!(s.incarnations[&1].generation, 2);
        assert_eq!(s.apply(&register(1, 9, 3, 0)), MetaResponse::Ok);
        assert_eq!(s.incarnations[&1].generation, 3);
        // Another directory under node 1's id, or from another cluster: rejected, unchanged.
        let before = s.clone();
        assert!(matches!(
            rejected(&mut s, register(1, 10, 1, 77)),
            MetaError::OtherIncarnation { recorded: 9, .. }
        ));
        assert!(matches!(
            rejected(&mut s, register(2, 5, 1, 78)),
            MetaError::OtherCluster { ours: 77, .. }
        ));
        assert!(matches!(
            rejected(&mut s, register(2, 0, 1, 77)),
            MetaError::InvalidIncarnation { node: 2 }
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn default_replication_factor_is_capped_by_nodes() {
        let mut state = cluster(2);
        assert_eq!(
            topic_of(state.apply(&create("t", 1, 0))).replication_factor,
            2
        );
        let mut state = cluster(5);
        assert_eq!(
            topic_of(state.apply(&create("t", 1, 0))).replication_factor,
            3
        );
    }

    #[test]
    fn default_constructed_state_starts_ids_at_one() {
        let mut state = MetaState::default();
        state.apply(&MetaCommand::RegisterNode {
            id: 7,
            address: "h:1".into(),
        });
        assert_eq!(topic_of(state.apply(&create("t", 1, 1))).id, 1);
        assert_eq!(
            state.apply(&MetaCommand::AllocateProducerId),
            MetaResponse::ProducerId(1)
        );
        assert_eq!(state.validate(), Ok(()));
    }

    #[test]
    fn register_node_upserts_the_address() {
        let mut state = cluster(1);
        let cmd = MetaCommand::RegisterNode {
            id: 1,
            address: "elsewhere:9093".into(),
        };
        assert_eq!(state.apply(&cmd), MetaResponse::Ok);
        assert_eq!(state.nodes[&1].address, "elsewhere:9093");
        assert_eq!(state.nodes.len(), 1);
    }

    #[test]
    fn invalid_address_is_rejected_with_the_rule() {
        let mut state = cluster(1);
        let e = rejected(
            &mut state,
            MetaCommand::RegisterNode {
                id: 2,
                address: "nope".into(),
            },
        );
        assert!(matches!(e, MetaError::InvalidAddress { .. }), "{e:?}");
        assert!(e.to_string().contains("port from 1 to 65535"), "{e}");
    }

    #[test]
    fn invalid_topic_name_is_rejected_with_the_limit() {
        let mut state = cluster(1);
        for name in ["", "a b", ".", "..", &"x".repeat(MAX_TOPIC_NAME_LEN + 1)] {
            let e = rejected(&mut state, create(name, 1, 1));
            assert!(matches!(e, MetaError::InvalidTopicName { .. }), "{e:?}");
            assert!(
                e.to_string()
                    .contains("1 to 249 characters of [a-zA-Z0-9._-]"),
                "{e}"
            );
        }
    }

    #[test]
    fn existing_topic_is_rejected() {
        let mut state = cluster(1);
        topic_of(state.apply(&create("t", 1, 1)));
        let e = rejected(&mut state, create("t", 2, 1));
        assert_eq!(e, MetaError::TopicExists { name: "t".into() });
        assert_eq!(e.to_string(), "topic \"t\" already exists");
    }

    #[test]
    fn partition_count_outside_limit_is_rejected() {
        let mut state = cluster(1);
        for requested in [0, MAX_PARTITIONS_PER_TOPIC + 1, u32::MAX] {
            let e = rejected(&mut state, create("t", requested, 1));
            assert_eq!(
                e,
                MetaError::InvalidPartitionCount {
                    requested,
                    max: 1024
                }
            );
            assert!(e.to_string().contains("1 to 1024 partitions"), "{e}");
        }
        topic_of(state.apply(&create("t", MAX_PARTITIONS_PER_TOPIC, 1)));
    }

    #[test]
    fn replication_factor_outside_nodes_is_rejected() {
        let mut state = cluster(3);
        let e = rejected(&mut state, create("t", 1, 4));
        assert_eq!(
            e,
            MetaError::InvalidReplicationFactor {
                requested: 4,
                nodes: 3
            }
        );
        assert!(e.to_string().contains("use 1 to 3"), "{e}");

        let mut empty = MetaState::new();
        let e = rejected(&mut empty, create("t", 1, 0));
        assert_eq!(
            e,
            MetaError::InvalidReplicationFactor {
                requested: 0,
                nodes: 0
            }
        );
        assert!(e.to_string().contains("no nodes are registered"), "{e}");
    }

    #[test]
    fn config_above_limit_is_rejected() {
        let mut state = cluster(1);
        let cmd = MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            config: TopicConfigV1 {
                max_record_bytes: MAX_RECORD_BYTES_LIMIT + 1,
            },
        };
        let e = rejected(&mut state, cmd);
        assert_eq!(
            e,
            MetaError::InvalidConfigValue {
                key: ConfigKey::MaxRecordBytes,
                value: "16777217".into()
            }
        );
        assert!(e.to_string().contains("1 to 16777216 bytes"), "{e}");
        let cmd = |config| MetaCommand::CreateTopicWithConfig {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            config,
            live: vec![1],
        };
        let e = rejected(
            &mut state,
            cmd(TopicConfig {
                retention_bytes: Some(1),
                ..Default::default()
            }),
        );
        assert!(e.to_string().contains("MIN_RETENTION_BYTES"), "{e}");
        let config = TopicConfig {
            max_record_bytes: MAX_RECORD_BYTES_LIMIT,
            retention_ms: Some(-1),
            cleanup_policy: Some(CleanupPolicy::CompactDelete),
            ..Default::default()
        };
        let t = topic_of(state.apply(&cmd(config.clone())));
        assert_eq!(t.config, config);
        assert_eq!(state.topic("t").unwrap().config, config);
    }

    #[test]
    fn effective_max_record_bytes_resolves_zero() {
        assert_eq!(
            TopicConfig::default().effective_max_record_bytes(),
            DEFAULT_MAX_RECORD_BYTES
        );
        let own = TopicConfig {
            max_record_bytes: 10,
            ..Default::default()
        };
        assert_eq!(own.effective_max_record_bytes(), 10);
    }

    fn alter(name: &str, set: &[ConfigSetting], reset: &[ConfigKey]) -> MetaCommand {
        MetaCommand::AlterTopicConfig {
            name: name.into(),
            change: ConfigChange {
                set: set.to_vec(),
                reset: reset.to_vec(),
            },
        }
    }

    #[test]
    fn alter_topic_config_changes_only_the_named_keys() {
        let mut state = cluster(3);
        let created = topic_of(state.apply(&create("t", 2, 3)));
        let t = topic_of(state.apply(&alter(
            "t",
            &[
                ConfigSetting::RetentionMs(60_000),
                ConfigSetting::CleanupPolicy(CleanupPolicy::Compact),
                ConfigSetting::MaxRecordBytes(100),
            ],
            &[],
        )));
        assert_eq!(t.config.retention_ms, Some(60_000));
        assert_eq!(t.config.cleanup_policy, Some(CleanupPolicy::Compact));
        assert_eq!(t.config.max_record_bytes, 100);
        assert_eq!(t.config.retention_bytes, None);
        // Only the config changed: same id, placement and leaders.
        assert_eq!(
            (t.id, &t.partitions),
            (created.id, &created.partitions),
            "an alter moves nothing"
        );
        assert_eq!(state.topic("t"), Some(&t));
        let t = topic_of(state.apply(&alter(
            "t",
            &[ConfigSetting::RetentionBytes(-1)],
            &[ConfigKey::RetentionMs, ConfigKey::MaxRecordBytes],
        )));
        assert_eq!(
            t.config,
            TopicConfig {
                retention_bytes: Some(-1),
                cleanup_policy: Some(CleanupPolicy::Compact),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_bad_alter_changes_nothing_and_says_why() {
        let mut state = cluster(1);
        topic_of(state.apply(&create("t", 1, 1)));
        let e = rejected(
            &mut state,
            alter("nope", &[ConfigSetting::RetentionMs(1)], &[]),
        );
        assert_eq!(
            e,
            MetaError::UnknownTopic {
                name: "nope".into()
            }
        );
        let e = rejected(
            &mut state,
            alter(
                "t",
                &[
                    ConfigSetting::RetentionMs(5),
                    ConfigSetting::DeleteRetentionMs(-1),
                ],
                &[],
            ),
        );
        assert!(
            e.to_string().contains("delete_retention_ms = \"-1\""),
            "{e}"
        );
        let e = rejected(
            &mut state,
            alter(
                "t",
                &[ConfigSetting::RetentionMs(5)],
                &[ConfigKey::RetentionMs],
            ),
        );
        assert_eq!(
            e,
            MetaError::ConfigKeyRepeated {
                key: ConfigKey::RetentionMs
            }
        );
        assert_eq!(
            rejected(&mut state, alter("t", &[], &[])),
            MetaError::NoConfigChange
        );
    }

    #[test]
    fn commands_logged_before_log_settings_still_decode() {
        // The new commands come after every older one, and the older create commands keep
        // the config shape they were logged with.
        let old = MetaCommand::CreateTopicOnLive {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            config: TopicConfigV1 {
                max_record_bytes: 7,
            },
            live: vec![1],
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        assert_eq!(bytes, [5, 1, b't', 1, 1, 7, 1, 1]);
        assert_eq!(postcard::from_bytes::<MetaCommand>(&bytes).unwrap(), old);
        let check = MetaCommand::CheckProducer { id: 1 };
        assert_eq!(postcard::to_stdvec(&check).unwrap()[0], 10);
        let with_config = MetaCommand::CreateTopicWithConfig {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            config: TopicConfig::default(),
            live: vec![1],
        };
        assert_eq!(postcard::to_stdvec(&with_config).unwrap()[0], 11);
        let a = alter("t", &[ConfigSetting::RetentionMs(1)], &[]);
        assert_eq!(postcard::to_stdvec(&a).unwrap()[0], 12);
        assert_eq!(
            postcard::from_bytes::<MetaCommand>(&postcard::to_stdvec(&a).unwrap()).unwrap(),
            a
        );
        // The old command's topic gets the cluster defaults for the log settings.
        let mut state = cluster(1);
        let t = topic_of(state.apply(&old));
        assert_eq!(
            t.config,
            TopicConfig {
                max_record_bytes: 7,
                ..Default::default()
            }
        );
    }

    #[test]
    fn exhausted_topic_ids_are_an_error_not_a_wrap() {
        let mut state = cluster(1);
        state.next_topic_id = u32::MAX;
        let e = rejected(&mut state, create("t", 1, 1));
        assert_eq!(e, MetaError::TopicIdsExhausted);
    }

    #[test]
    fn delete_topic_removes_it_and_never_reuses_its_id() {
        let mut state = cluster(2);
        let old = topic_of(state.apply(&create("t", 2, 2)));
        assert_eq!(
            state.apply(&MetaCommand::DeleteTopic { name: "t".into() }),
            MetaResponse::Ok
        );
        assert_eq!(state.topic("t"), None);
        assert_eq!(state.partition_by_group(old.partitions[0].group_id), None);
        assert!(state.groups_of_node(1).is_empty());

        let e = rejected(&mut state, MetaCommand::DeleteTopic { name: "t".into() });
        assert_eq!(e, MetaError::UnknownTopic { name: "t".into() });
        assert_eq!(e.to_string(), "unknown topic \"t\"");

        // A delete by id, retried after its first attempt committed and the name was taken
        // again, leaves the new topic alone.
        let again = topic_of(state.apply(&create("t", 1, 1)));
        let by_old_id = MetaCommand::DeleteTopicId {
            name: "t".into(),
            id: old.id,
        };
        assert_eq!(
            rejected(&mut state, by_old_id),
            MetaError::UnknownTopic { name: "t".into() }
        );
        assert_eq!(state.topic("t").map(|t| t.id), Some(again.id));
        let by_id = MetaCommand::DeleteTopicId {
            name: "t".into(),
            id: again.id,
        };
        assert_eq!(state.apply(&by_id), MetaResponse::Ok);
        assert_eq!(state.topic("t"), None);

        let new = topic_of(state.apply(&create("t", 2, 2)));
        assert!(new.id > old.id, "topic id {} reused", new.id);
    }

    #[test]
    fn a_create_user_applied_twice_is_one_creation() {
        let mut state = cluster(1);
        let cred = |b: u8| crate::acl::UserRecord {
            salt: vec![b; crate::acl::USER_SALT_BYTES],
            hash: vec![b; crate::acl::USER_HASH_BYTES],
        };
        let create = |b| MetaCommand::CreateUser {
            name: "bob".into(),
            credential: cred(b),
        };
        assert_eq!(state.apply(&create(1)), MetaResponse::Ok);
        // The same request retried (its forward timed out after it committed): its caller
        // gets its token.
        assert_eq!(state.apply(&create(1)), MetaResponse::Ok);
        // Another request for the name: refused, the first secret stays.
        assert_eq!(
            rejected(&mut state, create(2)),
            MetaError::UserExists { name: "bob".into() }
        );
        assert_eq!(state.users.get("bob"), Some(&cred(1)));
    }

    #[test]
    fn report_leader_keeps_the_newest_epoch() {
        let mut state = cluster(3);
        let topic = topic_of(state.apply(&create("t", 1, 2)));
        let g = topic.partitions[0].group_id;
        let [a, b] = topic.partitions[0].replicas[..] else {
            panic!()
        };
        let outsider = (1..=3).find(|n| *n != a && *n != b).unwrap();
        let report = |leader, epoch| MetaCommand::ReportLeader {
            group_id: g,
            leader,
            epoch,
        };
        let leader_of = |s: &MetaState| {
            let (_, p) = s.partition_by_group(g).unwrap();
            (p.leader, p.leader_epoch)
        };

        assert_eq!(state.apply(&report(a, 5)), MetaResponse::Ok);
        assert_eq!(leader_of(&state), (Some(a), 5));
        // Older epoch: ignored.
        assert_eq!(state.apply(&report(b, 4)), MetaResponse::Ok);
        assert_eq!(leader_of(&state), (Some(a), 5));
        // Same epoch, another leader: the higher node id is the later leader of that term;
        // a lower one is stale.
        let (lo, hi) = (a.min(b), a.max(b));
        assert_eq!(state.apply(&report(hi, 5)), MetaResponse::Ok);
        assert_eq!(leader_of(&state), (Some(hi), 5));
        assert_eq!(state.apply(&report(lo, 5)), MetaResponse::Ok);
        // Not a replica: ignored.
        assert_eq!(state.apply(&report(outsider, 9)), MetaResponse::Ok);
        assert_eq!(leader_of(&state), (Some(hi), 5));
        // Newer epoch: taken.
        assert_eq!(state.apply(&report(b, 6)), MetaResponse::Ok);
        assert_eq!(leader_of(&state), (Some(b), 6));
        assert_eq!(state.leader_counts()[&b], 1);
        assert_eq!(state.leader_counts()[&outsider], 0);

        // Unknown groups, including the metadata group: ignored.
        let before = state.clone();
        for unknown in [META_GROUP, group_id(1, 1), group_id(99, 0)] {
            let cmd = MetaCommand::ReportLeader {
                group_id: unknown,
                leader: a,
                epoch: 100,
            };
            assert_eq!(state.apply(&cmd), MetaResponse::Ok);
        }
        assert_eq!(state, before);
    }

    #[test]
    fn first_report_at_epoch_zero_is_taken() {
        let mut state = cluster(1);
        let topic = topic_of(state.apply(&create("t", 1, 1)));
        let g = topic.partitions[0].group_id;
        state.apply(&MetaCommand::ReportLeader {
            group_id: g,
            leader: 1,
            epoch: 0,
        });
        assert_eq!(state.partition_by_group(g).unwrap().1.leader, Some(1));
    }

    #[test]
    fn producer_ids_are_monotonic_and_never_zero() {
        let mut state = MetaState::new();
        let mut last = 0;
        for _ in 0..100 {
            match state.apply(&MetaCommand::AllocateProducerId) {
                MetaResponse::ProducerId(id) => {
                    assert!(id > last, "{id} after {last}");
                    last = id;
                }
                other => panic!("{other:?}"),
            }
        }
        state.next_producer_id = u64::MAX;
        let e = rejected(&mut state, MetaCommand::AllocateProducerId);
        assert_eq!(e, MetaError::ProducerIdsExhausted);
    }

    #[test]
    fn queries() {
        let mut state = cluster(3);
        let t = topic_of(state.apply(&create("t", 3, 2)));
        let mine: Vec<GroupId> = state
            .groups_of_node(1)
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        let expected: Vec<GroupId> = t
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&1))
            .map(|p| p.group_id)
            .collect();
        assert_eq!(mine, expected);
        assert_eq!(state.replica_counts().values().sum::<usize>(), 6);
        assert_eq!(
            state.leader_counts(),
            BTreeMap::from([(1, 0), (2, 0), (3, 0)])
        );
        let (topic, p) = state.partition_by_group(group_id(t.id, 2)).unwrap();
        assert_eq!((topic.name.as_str(), p.partition), ("t", 2));
    }

    #[test]
    fn validate_catches_broken_invariants() {
        let mut state = cluster(3);
        topic_of(state.apply(&create("t", 2, 2)));
        let break_with = |f: &dyn Fn(&mut MetaState), what: &str| {
            let mut broken = state.clone();
            f(&mut broken);
            let err = broken.validate().expect_err(what);
            assert!(err.contains(what), "{what}: {err}");
        };
        break_with(
            &|s| s.topics.get_mut("t").unwrap().partitions[0].replicas[1] = 9,
            "unknown node 9",
        );
        break_with(
            &|s| {
                let p = &mut s.topics.get_mut("t").unwrap().partitions[0];
                p.replicas[1] = p.replicas[0];
            },
            "repeats a replica",
        );
        break_with(
            &|s| {
                s.topics.get_mut("t").unwrap().partitions[0].replicas.pop();
            },
            "has 1 replicas",
        );
        break_with(
            &|s| s.topics.get_mut("t").unwrap().partitions[1].partition = 5,
            "dense",
        );
        break_with(
            &|s| s.topics.get_mut("t").unwrap().partitions[1].group_id = 3,
            "group id",
        );
        break_with(
            &|s| {
                let p = &mut s.topics.get_mut("t").unwrap().partitions[0];
                let outsider = (1..=3).find(|n| !p.replicas.contains(n)).unwrap();
                p.leader = Some(outsider);
            },
            "not one of its replicas",
        );
        break_with(&|s| s.next_topic_id = 1, "ids would be reused");
        break_with(
            &|s| s.nodes.get_mut(&1).unwrap().address = "bad".into(),
            "node 1",
        );
        break_with(
            &|s| s.nodes.get_mut(&1).unwrap().id = 2,
            "holds the info of node 2",
        );
    }
}

#[cfg(test)]
mod named_producer_tests {
    use super::*;

    fn init(s: &mut MetaState, name: &str) -> MetaResponse {
        s.apply(&MetaCommand::InitNamedProducer { name: name.into() })
    }

    #[test]
    fn a_name_keeps_its_id_and_each_init_bumps_its_epoch() {
        let mut s = MetaState::new();
        s.apply(&MetaCommand::AllocateProducerIdBlock { count: 10 });
        assert_eq!(
            init(&mut s, "orders-writer"),
            MetaResponse::ProducerEpoch { id: 11, epoch: 0 }
        );
        assert_eq!(
            init(&mut s, "orders-writer"),
            MetaResponse::ProducerEpoch { id: 11, epoch: 1 }
        );
        assert_eq!(
            init(&mut s, "billing"),
            MetaResponse::ProducerEpoch { id: 12, epoch: 0 }
        );
        assert_eq!(s.check_producer(11), ProducerCheck::Named { epoch: 1 });
        assert_eq!(s.check_producer(3), ProducerCheck::Unnamed);
        assert_eq!(
            s.check_producer(13),
            ProducerCheck::Unallocated { next: 13 }
        );
        assert_eq!(s.check_producer(0), ProducerCheck::Unallocated { next: 13 });
        // The check is a read through the log: it changes nothing.
        let before = s.clone();
        assert_eq!(
            s.apply(&MetaCommand::CheckProducer { id: 11 }),
            MetaResponse::ProducerCheck(ProducerCheck::Named { epoch: 1 })
        );
        assert_eq!(s, before);
    }

    #[test]
    fn bad_names_and_exhausted_epochs_are_refused_with_the_rule() {
        let mut s = MetaState::new();
        for bad in ["", "a\nb", &"x".repeat(crate::MAX_PRODUCER_NAME_LEN + 1)] {
            let MetaResponse::Error(e) = init(&mut s, bad) else {
                panic!("{bad:?} accepted");
            };
            assert!(e.to_string().contains("1 to 255 bytes"), "{e}");
        }
        init(&mut s, "p");
        s.producer_epochs.insert(1, u16::MAX);
        let MetaResponse::Error(e) = init(&mut s, "p") else {
            panic!("epoch wrapped");
        };
        assert!(e.to_string().contains("use another producer name"), "{e}");
        assert_eq!(s.producer_epochs[&1], u16::MAX);
    }
}
