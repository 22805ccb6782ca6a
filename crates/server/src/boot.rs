//! A node's start, before it takes part in any Raft group: its data directory's identity and
//! the check with its peers ([`fjord_meta::check_boot`] decides; this module asks and
//! stores).
//!
//! 1. The identity is read from the database, or made: a new directory gets a random
//!    incarnation; one written before identities existed (it holds groups) gets one too,
//!    marked as joined, so an upgraded node starts as before.
//! 2. The node asks every initial voter (`RaftTransport.CheckIdentity`) what it records of
//!    this directory, round after round with a bounded backoff, until the check proceeds or
//!    refuses. Meanwhile it answers the same question for its peers
//!    ([`IdentityService::answer`]) from its stored metadata, so nodes that start together
//!    (a new cluster, a cluster back from a power loss) let each other through.
//! 3. On proceed, the next generation (and, when the node forms a new cluster, the roster)
//!    is written durably: only then does the node start its groups, and it registers the
//!    generation in the metadata ([`fjord_meta::MetaCommand::RegisterIncarnation`]).
//!    A refusal writes nothing, so the directory stays refused however often it is started.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_meta::{
    BootRefusal, BootVerdict, DiskIdentity, IncarnationRecord, NodeId, PeerReport, check_boot,
};
use fjord_raft::peer::wire::{IdentityReply, IdentityRequest, RebuildRequest};
use fjord_raft::peer::{PeerError, PeerPool};
use fjord_storage::{NodeKey, Op, Store};

use crate::ServeConfig;

/// How long one peer's answer to a boot check may take.
pub const CHECK_RPC_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause between two rounds of boot checks; it doubles up to [`CHECK_BACKOFF_MAX`].
pub const CHECK_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between two rounds.
pub const CHECK_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long the metadata leader may take to take a rebuilt node back (it changes the
/// membership of every group the node holds).
pub const REBUILD_RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// Rounds logged one by one before the node only logs every [`CHECK_LOG_EVERY`]th.
pub const CHECK_ROUNDS_LOGGED: u32 = 5;
pub const CHECK_LOG_EVERY: u32 = 15;

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The directory must not take part: see [`BootRefusal`].
    #[error(
        "{0}. This node does not vote, acknowledge or bootstrap anything. To bring it back \
         safely, start it with the same arguments plus --rebuild (it then rejoins as a \
         learner, catches up from the others and becomes a voter again); do not delete or \
         replace its data directory by hand"
    )]
    Refused(BootRefusal),
    /// The directory was made for another node id.
    #[error(
        "the data directory was created for node {found}, not for node {configured} (--id): \
         check --id and --data-dir"
    )]
    WrongNode { found: NodeId, configured: NodeId },
    #[error("cannot read or write the data directory's identity: {0}")]
    Storage(#[source] fjord_storage::StorageError),
    /// Answering a peer's check: the peers' announced starts could not be read or written.
    #[error("cannot read or write the peers' announced starts: {0}")]
    PeerStarts(#[source] fjord_storage::StorageError),
    /// Answering a peer's check: the stored metadata could not be read.
    #[error("cannot read the stored metadata: {0}")]
    StoredMetadata(#[source] std::io::Error),
    #[error(transparent)]
    Encode(#[from] fjord_raft::codec::EncodeError),
    /// The metadata leader refused to take this node back (`--rebuild`).
    #[error("--rebuild refused: {0}")]
    RebuildRefused(String),
}

/// This node's identity, shared by the boot check and the answers to the peers' checks.
pub struct IdentityService {
    store: Store,
    // Read by every answer, replaced once when the check proceeds: a short std lock.
    identity: Mutex<DiskIdentity>,
    // Serialises the updates of the peers' announced starts.
    announcements: tokio::sync::Mutex<()>,
}

impl IdentityService {
    /// Reads the directory's identity, or makes and stores (durably) a new one.
    pub async fn open(store: Store, node: NodeId) -> Result<Arc<IdentityService>, BootError> {
        let storage = BootError::Storage;
        let identity = match store.get_node_value(NodeKey::Identity).map_err(storage)? {
            Some(bytes) => {
                let identity: DiskIdentity = postcard::from_bytes(&bytes).map_err(|source| {
                    BootError::Storage(fjord_storage::StorageError::Undecodable {
                        what: "data directory identity",
                        source,
                    })
                })?;
                if identity.node_id != node {
                    return Err(BootError::WrongNode {
                        found: identity.node_id,
                        configured: node,
                    });
                }
                identity
            }
            None => {
                let mut identity = DiskIdentity::new(node, fjord_raft::runtime::random_u64());
                // A directory written before identities: it took part in the cluster.
                identity.joined = !store.holds_no_group().map_err(storage)?;
                tracing::info!(
                    incarnation = format_args!("{:#x}", identity.incarnation),
                    existing_data = identity.joined,
                    "gave the data directory an identity"
                );
                persist(&store, &identity).await?;
                identity
            }
        };
        Ok(Arc::new(IdentityService {
            store,
            identity: Mutex::new(identity),
            announcements: tokio::sync::Mutex::new(()),
        }))
    }

    /// The identity as stored now.
    pub fn identity(&self) -> DiskIdentity {
        self.identity.lock().unwrap().clone()
    }

    /// What this node records of `asker`'s directory, from its stored metadata (and, for a
    /// voter the metadata does not record yet, the roster of the cluster this node formed).
    /// An announced start (`req.announce_generation > 0`) is stored first, durably.
    pub async fn answer(&self, req: &IdentityRequest) -> Result<IdentityReply, BootError> {
        let identity = self.identity();
        let state = fjord_raft::meta_sm::stored_state(fjord_meta::META_GROUP, &self.store)
            .map_err(BootError::StoredMetadata)?;
        let recorded = state
            .as_ref()
            .and_then(|s| s.incarnations.get(&req.from).copied())
            .or_else(|| {
                identity
                    .roster
                    .get(&req.from)
                    .map(|i| fjord_meta::IncarnationRecord {
                        incarnation: *i,
                        generation: 0,
                    })
            });
        let record = {
            // One announcement stored at a time: a read-modify-write of the peers' starts.
            let _one = self.announcements.lock().await;
            let mut starts = peer_starts(&self.store)?;
            if req.announce_generation > 0 {
                let seen = starts
                    .entry(req.from)
                    .or_insert(fjord_meta::IncarnationRecord {
                        incarnation: req.incarnation,
                        generation: 0,
                    });
                if seen.incarnation != req.incarnation {
                    *seen = fjord_meta::IncarnationRecord {
                        incarnation: req.incarnation,
                        generation: 0,
                    };
                }
                seen.generation = seen.generation.max(req.announce_generation);
                self.store
                    .write(vec![Op::PutNode {
                        key: NodeKey::PeerStarts as u8,
                        value: fjord_raft::codec::encode(&starts, "the peers' starts")?,
                    }])
                    .await
                    .map_err(BootError::PeerStarts)?;
            }
            merge_start(recorded, starts.get(&req.from).copied())
        };
        let cluster_id = state
            .as_ref()
            .map(|s| s.cluster_id)
            .filter(|c| *c != 0)
            .unwrap_or(identity.cluster_id);
        Ok(IdentityReply {
            from: identity.node_id,
            cluster_id,
            // Holds a cluster's state: metadata, or the roster of one it formed. Not merely
            // "passed its check": a node that joined a cluster a moment ago and has not
            // received the metadata yet holds nothing a new node could lose, and counting it
            // would refuse the last voter of a new cluster to start.
            has_cluster: state.is_some() || !identity.roster.is_empty(),
            recorded: record.is_some(),
            recorded_incarnation: record.map(|r| r.incarnation).unwrap_or(0),
            recorded_generation: record.map(|r| r.generation).unwrap_or(0),
            incarnation: identity.incarnation,
        })
    }

    /// Checks with the peers until the check proceeds (then stores the next generation,
    /// durably, and returns whether this node forms a new cluster) or refuses.
    pub async fn check(&self, config: &ServeConfig, pool: &PeerPool) -> Result<bool, BootError> {
        let mut me = self.identity();
        let voters: BTreeSet<NodeId> = config.peers.0.keys().copied().collect();
        let mut backoff = CHECK_BACKOFF_MIN;
        let mut round = 0u32;
        loop {
            round += 1;
            let reports = ask_peers(config, pool).await;
            match check_boot(&me, &voters, &reports) {
                BootVerdict::Refuse(why) => return Err(BootError::Refused(why)),
                BootVerdict::Wait { needed, answered } => {
                    if round <= CHECK_ROUNDS_LOGGED || round.is_multiple_of(CHECK_LOG_EVERY) {
                        log_wait(me.joined, round, needed, answered);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(CHECK_BACKOFF_MAX);
                }
                BootVerdict::Proceed {
                    form,
                    cluster_id,
                    roster,
                } => {
                    let next = DiskIdentity {
                        cluster_id,
                        generation: me.generation + 1,
                        joined: true,
                        roster,
                        ..me.clone()
                    };
                    let stored = self.store_and_announce(config, pool, &next).await?;
                    // Every peer that answered the check (none for a single node).
                    let needed = reports.len();
                    if stored < needed {
                        tracing::warn!(
                            stored,
                            needed,
                            "boot check: fewer peers stored this start than answered the check; checking again"
                        );
                        me = next;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(CHECK_BACKOFF_MAX);
                        continue;
                    }
                    tracing::info!(
                        generation = next.generation,
                        incarnation = format_args!("{:#x}", next.incarnation),
                        cluster = format_args!("{:#x}", next.cluster_id),
                        form,
                        answered = reports.len(),
                        stored,
                        "the peers know this data directory: taking part"
                    );
                    return Ok(form);
                }
            }
        }
    }

    /// Stores this start's identity here, then announces it to the peers; how many stored it.
    /// Stored here first: a crash before the announcement leaves this directory ahead of its
    /// peers' records, never behind them.
    async fn store_and_announce(
        &self,
        config: &ServeConfig,
        pool: &PeerPool,
        next: &DiskIdentity,
    ) -> Result<usize, BootError> {
        persist(&self.store, next).await?;
        *self.identity.lock().unwrap() = next.clone();
        Ok(announce(config, pool, next).await)
    }

    /// `--rebuild`, on a new directory: asks the metadata leader, through any peer that holds
    /// the cluster, to make this node a learner of every group it was a voter of and to record
    /// this directory ([`crate::rebuild`]); then stores the cluster id and generation 1,
    /// durably. Waits while no peer answers or the groups have no leader; returns the leader's
    /// refusal (a group would lose its majority) as an error, with nothing changed.
    pub async fn rebuild(&self, config: &ServeConfig, pool: &PeerPool) -> Result<(), BootError> {
        let me = self.identity();
        let mut backoff = CHECK_BACKOFF_MIN;
        let mut round = 0u32;
        loop {
            round += 1;
            let reports = ask_peers(config, pool).await;
            let cluster_id = reports
                .iter()
                .find(|r| r.has_cluster && r.cluster_id != 0)
                .map(|r| r.cluster_id);
            let mut last = "no peer that holds the cluster answered".to_string();
            if let Some(cluster_id) = cluster_id {
                let req = RebuildRequest {
                    node: me.node_id,
                    incarnation: me.incarnation,
                    cluster_id,
                    address: config.advertised_address(),
                    replaces: reported_incarnation(&reports),
                };
                for (id, addr) in config.peers.0.iter().filter(|(id, _)| **id != config.id) {
                    match pool
                        .peer(addr)
                        .rebuild(req.clone(), REBUILD_RPC_TIMEOUT)
                        .await
                    {
                        Ok(r) => {
                            let next = DiskIdentity {
                                cluster_id,
                                generation: 1,
                                joined: true,
                                ..me.clone()
                            };
                            persist(&self.store, &next).await?;
                            // Best effort: the metadata recorded this incarnation already.
                            announce(config, pool, &next).await;
                            tracing::warn!(
                                learner_groups = r.learner_groups,
                                incarnation = format_args!("{:#x}", next.incarnation),
                                "--rebuild: the cluster took this node back as a learner; it catches up, then becomes a voter again"
                            );
                            *self.identity.lock().unwrap() = next;
                            return Ok(());
                        }
                        Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => {
                            return Err(BootError::RebuildRefused(e.message()));
                        }
                        Err(PeerError::Timeout { .. }) => {
                            last = format!("node {id}: no answer in time")
                        }
                        Err(e) => last = format!("node {id}: {}", e.message()),
                    }
                }
            }
            if round <= CHECK_ROUNDS_LOGGED || round.is_multiple_of(CHECK_LOG_EVERY) {
                tracing::warn!(round, %last, "--rebuild: waiting for the metadata leader to take this node back");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(CHECK_BACKOFF_MAX);
        }
    }

    /// The registration of this directory, for the metadata.
    pub fn registration(&self, address: &str) -> fjord_meta::MetaCommand {
        let identity = self.identity();
        fjord_meta::MetaCommand::RegisterIncarnation {
            id: identity.node_id,
            address: address.to_string(),
            incarnation: identity.incarnation,
            generation: identity.generation,
            cluster_id: identity.cluster_id,
        }
    }
}

/// The incarnation most of the peers that answered record for this node (0: none), which a
/// rebuild replaces. A peer behind the others may report an older one: the rebuild is then
/// refused as raced and asks again.
fn reported_incarnation(reports: &[PeerReport]) -> u64 {
    let mut counts: std::collections::BTreeMap<u64, usize> = Default::default();
    for r in reports {
        *counts
            .entry(r.record.map_or(0, |rec| rec.incarnation))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(incarnation, n)| (*n, *incarnation != 0))
        .map_or(0, |(incarnation, _)| incarnation)
}

async fn persist(store: &Store, identity: &DiskIdentity) -> Result<(), BootError> {
    store
        .write(vec![Op::PutNode {
            key: NodeKey::Identity as u8,
            value: fjord_raft::codec::encode(identity, "data directory identity")?,
        }])
        .await
        .map_err(BootError::Storage)
}

/// One round: asks every other voter at once; those that do not answer in time are left out.
/// The starts peers announced to this node.
fn peer_starts(store: &Store) -> Result<BTreeMap<NodeId, IncarnationRecord>, BootError> {
    match store
        .get_node_value(NodeKey::PeerStarts)
        .map_err(BootError::PeerStarts)?
    {
        Some(bytes) => postcard::from_bytes(&bytes).map_err(|source| {
            BootError::PeerStarts(fjord_storage::StorageError::Undecodable {
                what: "peers' starts",
                source,
            })
        }),
        None => Ok(BTreeMap::new()),
    }
}

/// What this node reports of a peer: the metadata's record (the authority on incarnations),
/// with the latest generation the peer announced for that incarnation; the announcement
/// alone when the metadata has no record.
fn merge_start(
    recorded: Option<IncarnationRecord>,
    announced: Option<IncarnationRecord>,
) -> Option<IncarnationRecord> {
    match (recorded, announced) {
        (Some(r), Some(a)) if r.incarnation == a.incarnation => Some(IncarnationRecord {
            incarnation: r.incarnation,
            generation: r.generation.max(a.generation),
        }),
        (Some(r), _) => Some(r),
        (None, a) => a,
    }
}

/// Tells every peer this start (`me`, which passed the check); returns how many stored it.
async fn announce(config: &ServeConfig, pool: &PeerPool, me: &DiskIdentity) -> usize {
    let req = IdentityRequest {
        from: config.id,
        announce_generation: me.generation,
        incarnation: me.incarnation,
    };
    ask_each_peer(config, pool, req).await.len()
}

async fn ask_peers(config: &ServeConfig, pool: &PeerPool) -> Vec<PeerReport> {
    let req = IdentityRequest {
        from: config.id,
        ..Default::default()
    };
    ask_each_peer(config, pool, req)
        .await
        .into_iter()
        .map(|(peer, r)| PeerReport {
            peer,
            cluster_id: r.cluster_id,
            has_cluster: r.has_cluster,
            record: r.recorded.then_some(IncarnationRecord {
                incarnation: r.recorded_incarnation,
                generation: r.recorded_generation,
            }),
            incarnation: r.incarnation,
        })
        .collect()
}

/// Sends `req` to every peer at once; the answers of those that answered as themselves in
/// time.
async fn ask_each_peer(
    config: &ServeConfig,
    pool: &PeerPool,
    req: IdentityRequest,
) -> Vec<(NodeId, IdentityReply)> {
    let asks = config
        .peers
        .0
        .iter()
        .filter(|(id, _)| **id != config.id)
        .map(|(id, addr)| {
            let (id, addr) = (*id, addr.clone());
            async move {
                match pool
                    .peer(&addr)
                    .check_identity(req, CHECK_RPC_TIMEOUT)
                    .await
                {
                    Ok(r) => (r.from == id).then_some((id, r)),
                    Err(e) => {
                        tracing::debug!(peer = id, error = %e, "boot check: no answer");
                        None
                    }
                }
            }
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Says why a boot check waits: a directory that joined needs a majority, a new one every
/// voter.
fn log_wait(joined: bool, round: u32, needed: usize, answered: usize) {
    let why = if joined {
        "a majority of the voters, this node included, must answer before it may take part"
    } else {
        "this data directory is new: every voter must answer before it may form or join a \
         cluster"
    };
    tracing::warn!(
        round,
        needed,
        answered,
        "waiting for peers to check this data directory with: {why}"
    );
}
