//! The metadata group's state machine: [`MetaState`] applied command by command.
//!
//! The state is small (nodes, topics, assignments), so the snapshot is the whole state, kept
//! in the node's database; openraft purges the metadata log behind it. Every node publishes
//! its applied state on a `watch` channel: the server's reconciler (which groups this node
//! must host), request handlers and the controller read it from there.
//!
//! What must hold: a command's response is sent only after the state it produced is
//! published, so a caller that created a topic finds it in the local view.

use std::io;
use std::sync::Arc;

use fjord_meta::MetaState;
use fjord_storage::store::GroupKey;
use fjord_storage::{Op, Store};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec;
use crate::{Request, Response, TypeConfig};

/// The applied metadata, as published and as snapshotted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaView {
    pub last_applied: Option<LogIdOf<TypeConfig>>,
    pub membership: StoredMembershipOf<TypeConfig>,
    pub state: MetaState,
}

/// The first byte of a metadata snapshot in today's format, before the encoded
/// [`MetaView`]. Snapshots of earlier formats start with the `Option` tag of `last_applied`
/// (0 or 1), so no snapshot of one format can be taken for another. The next format that
/// changes a shape inside the state (not only appending at its end) takes the next byte.
pub const VIEW_FORMAT: u8 = 5;

/// The format byte of snapshots written before users and ACLs (see
/// [`fjord_meta::MetaStateV4`]).
pub const VIEW_FORMAT_V4: u8 = 4;

/// [`MetaView`] as snapshots of [`VIEW_FORMAT_V4`] encode it.
#[derive(Serialize, Deserialize)]
struct MetaViewV4 {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    state: fjord_meta::MetaStateV4,
}

/// [`MetaView`] as snapshots written before the log settings encode it, without a format byte
/// (see [`fjord_meta::MetaStateV3`]).
#[derive(Serialize, Deserialize)]
struct MetaViewV3 {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    state: fjord_meta::MetaStateV3,
}

/// [`MetaView`] as snapshots written before identities encode it (see
/// [`fjord_meta::MetaStateV1`]).
#[derive(Serialize, Deserialize)]
struct MetaViewV1 {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    state: fjord_meta::MetaStateV1,
}

/// [`MetaView`] as snapshots written before named producers encode it (see
/// [`fjord_meta::MetaStateV2`]).
#[derive(Serialize, Deserialize)]
struct MetaViewV2 {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    state: fjord_meta::MetaStateV2,
}

/// Encodes a metadata snapshot: [`VIEW_FORMAT`], then the view.
pub fn encode_view(view: &MetaView) -> Result<Vec<u8>, codec::EncodeError> {
    codec::encode(&(VIEW_FORMAT, view), "metadata snapshot")
}

/// Decodes a metadata snapshot, of this format or of an earlier one.
pub fn decode_view(bytes: &[u8]) -> Result<MetaView, io::Error> {
    let what = "metadata snapshot";
    if bytes.first() == Some(&VIEW_FORMAT) {
        let (_, view) = codec::decode::<(u8, MetaView)>(bytes, what)?;
        return Ok(view);
    }
    if bytes.first() == Some(&VIEW_FORMAT_V4) {
        let (_, v) = codec::decode::<(u8, MetaViewV4)>(bytes, what)?;
        return Ok(MetaView {
            last_applied: v.last_applied,
            membership: v.membership,
            state: v.state.into(),
        });
    }
    decode_unmarked_view(bytes)
}

/// Decodes a snapshot written before [`VIEW_FORMAT`]. Each of those formats appended fields
/// to the last, so one of an earlier format ends before a later one's fields and fails to
/// decode as it: the newest is tried first.
fn decode_unmarked_view(bytes: &[u8]) -> Result<MetaView, io::Error> {
    let what = "metadata snapshot";
    let convert = |last_applied, membership, state: MetaState| MetaView {
        last_applied,
        membership,
        state,
    };
    codec::decode::<MetaViewV3>(bytes, what)
        .map(|v| convert(v.last_applied, v.membership, v.state.into()))
        .or_else(|e| {
            if let Ok(v) = codec::decode::<MetaViewV2>(bytes, what) {
                return Ok(convert(v.last_applied, v.membership, v.state.into()));
            }
            match codec::decode::<MetaViewV1>(bytes, what) {
                Ok(v) => Ok(convert(v.last_applied, v.membership, v.state.into())),
                Err(_) => Err(e.into()),
            }
        })
}

/// Log entries [`stored_state`] reads, at most (the metadata log is snapshotted every 1,000).
pub const MAX_STORED_META_ENTRIES: usize = 100_000;

/// The metadata this node's database holds, without running the group: the last snapshot
/// with every metadata command of the log after it applied, committed or not (a boot check
/// reads it, see `fjord_meta::identity`: a record in any log is evidence enough). `None`
/// when the node holds no metadata at all (no snapshot, no log entry, no vote).
pub fn stored_state(group: u64, store: &Store) -> Result<Option<MetaState>, io::Error> {
    let snapshot = store.get_value(group, GroupKey::Snapshot)?;
    let vote = store.get_value(group, GroupKey::Vote)?;
    let bounds = store.log_bounds(group)?;
    if snapshot.is_none() && vote.is_none() && bounds.is_none() {
        return Ok(None);
    }
    let view = match snapshot {
        Some(b) => decode_view(&b)?,
        None => MetaView::default(),
    };
    let mut state = view.state;
    let mut next = view.last_applied.map(|l| l.index + 1).unwrap_or(0);
    let mut read = 0usize;
    while read < MAX_STORED_META_ENTRIES {
        let page = store.read_log(group, next.., 1000, usize::MAX)?;
        let Some((last, _)) = page.last() else { break };
        next = last + 1;
        read += page.len();
        for (_, bytes) in &page {
            let entry: codec::Entry = codec::decode(bytes, "metadata log entry")?;
            if let EntryPayload::Normal(Request::Meta(cmd)) = entry.payload {
                state.apply(&cmd);
            }
        }
    }
    Ok(Some(state))
}

/// openraft's state machine for the metadata group.
pub struct MetaSm {
    group: u64,
    store: Store,
    view: MetaView,
    publish: watch::Sender<Arc<MetaView>>,
    /// One snapshot write at a time, shared with the builders: openraft builds in a task of
    /// its own while its worker may install a newer snapshot, and a build's write queued
    /// after the install's would put an older snapshot over it, behind the log purged up to
    /// the newer one (a restart would then find entries missing between the two).
    snapshot_io: Arc<tokio::sync::Mutex<()>>,
}

impl MetaSm {
    /// Loads the last snapshot (if any) and returns the state machine with a receiver of its
    /// published state.
    pub fn open(
        group: u64,
        store: Store,
    ) -> Result<(MetaSm, watch::Receiver<Arc<MetaView>>), io::Error> {
        let view: MetaView = match store.get_value(group, GroupKey::Snapshot)? {
            Some(b) => decode_view(&b)?,
            None => MetaView::default(),
        };
        let (tx, rx) = watch::channel(Arc::new(view.clone()));
        Ok((
            MetaSm {
                group,
                store,
                view,
                publish: tx,
                snapshot_io: Arc::default(),
            },
            rx,
        ))
    }

    fn clone_handle(&self) -> MetaSm {
        MetaSm {
            group: self.group,
            store: self.store.clone(),
            view: self.view.clone(),
            publish: self.publish.clone(),
            snapshot_io: self.snapshot_io.clone(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSm {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        // The builder is a copy taken when openraft asked for it: a consistent state.
        let _io = self.snapshot_io.lock().await;
        // A snapshot installed since the copy was taken is newer: keep it, and answer with it.
        if let Some(stored) = self.store.get_value(self.group, GroupKey::Snapshot)? {
            let view = decode_view(&stored)?;
            let index = |v: &MetaView| v.last_applied.map(|l| l.index());
            if index(&view) >= index(&self.view) {
                return Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
                    meta: SnapshotMetaOf::<TypeConfig> {
                        last_log_id: view.last_applied,
                        last_membership: view.membership,
                    },
                    snapshot: stored,
                });
            }
        }
        let data = encode_view(&self.view)?;
        self.store
            .write(vec![Op::Put {
                group: self.group,
                key: GroupKey::Snapshot as u8,
                value: data.clone(),
            }])
            .await?;
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: self.view.last_applied,
            last_membership: self.view.membership.clone(),
        };
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaSm {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.view.last_applied, self.view.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let mut answers = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            self.view.last_applied = Some(log_id);
            let response = match entry.payload {
                EntryPayload::Normal(Request::Meta(cmd)) => {
                    Response::Meta(self.view.state.apply(&cmd))
                }
                EntryPayload::Membership(m) => {
                    self.view.membership = StoredMembershipOf::<TypeConfig>::new(Some(log_id), m);
                    Response::None
                }
                _ => Response::None,
            };
            if let Some(r) = responder {
                answers.push((r, response));
            }
        }
        debug_assert_eq!(self.view.state.validate(), Ok(()));
        self.publish.send_replace(Arc::new(self.view.clone()));
        for (r, response) in answers {
            r.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone_handle()
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let view: MetaView = decode_view(&snapshot)?;
        let _io = self.snapshot_io.lock().await;
        self.store
            .write(vec![Op::Put {
                group: self.group,
                key: GroupKey::Snapshot as u8,
                value: snapshot,
            }])
            .await?;
        self.view = view;
        self.publish.send_replace(Arc::new(self.view.clone()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        match self.store.get_value(self.group, GroupKey::Snapshot)? {
            None => Ok(None),
            Some(data) => {
                let view: MetaView = decode_view(&data)?;
                let meta = SnapshotMetaOf::<TypeConfig> {
                    last_log_id: view.last_applied,
                    last_membership: view.membership,
                };
                Ok(Some(SnapshotOf::<TypeConfig, Vec<u8>> {
                    meta,
                    snapshot: data,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A builder copied before a newer snapshot was installed does not write its older one
    /// over it (openraft builds in a task of its own while its worker installs), and answers
    /// with the newer one.
    #[tokio::test]
    async fn a_build_from_before_an_install_keeps_the_installed_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let (mut sm, _view) = MetaSm::open(7, store.clone()).unwrap();
        sm.view.last_applied = Some(openraft::testing::log_id::<TypeConfig>(1, 1, 5));
        let mut builder = sm.get_snapshot_builder().await;
        let newer = MetaView {
            last_applied: Some(openraft::testing::log_id::<TypeConfig>(2, 1, 10)),
            ..MetaView::default()
        };
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: newer.last_applied,
            last_membership: newer.membership.clone(),
        };
        sm.install_snapshot(&meta, encode_view(&newer).unwrap())
            .await
            .unwrap();
        let built = builder.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, newer.last_applied);
        let stored = store.get_value(7, GroupKey::Snapshot).unwrap().unwrap();
        assert_eq!(
            decode_view(&stored).unwrap().last_applied,
            newer.last_applied
        );
        // A builder of a newer state than the stored one writes it.
        sm.view.last_applied = Some(openraft::testing::log_id::<TypeConfig>(2, 1, 12));
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index()), Some(12));
    }

    /// A node upgraded from a version without identities opens its metadata snapshot.
    #[test]
    fn a_snapshot_from_before_identities_decodes() {
        let old = MetaViewV1 {
            last_applied: None,
            membership: Default::default(),
            state: fjord_meta::MetaStateV1 {
                next_topic_id: 4,
                ..Default::default()
            },
        };
        let view = decode_view(&codec::encode(&old, "old view").unwrap()).unwrap();
        assert_eq!(view.state.next_topic_id, 4);
        let mut new = view.clone();
        new.state.cluster_id = 9;
        assert_eq!(
            decode_view(&encode_view(&new).unwrap())
                .unwrap()
                .state
                .cluster_id,
            9
        );
    }

    /// A node upgraded from a version without users and ACLs (format 4) opens its metadata
    /// snapshot; the snapshot it writes next is of today's format and keeps its users.
    #[test]
    fn a_snapshot_from_before_users_and_acls_decodes() {
        let old = MetaViewV4 {
            last_applied: None,
            membership: Default::default(),
            state: fjord_meta::MetaStateV4 {
                next_topic_id: 6,
                cluster_id: 3,
                ..Default::default()
            },
        };
        let bytes = codec::encode(&(VIEW_FORMAT_V4, &old), "old view").unwrap();
        let view = decode_view(&bytes).unwrap();
        assert_eq!(view.state.next_topic_id, 6);
        assert_eq!(view.state.cluster_id, 3);
        assert!(view.state.users.is_empty());
        let mut new = view.clone();
        new.state.acls.insert(fjord_meta::acl::AclEntry {
            principal: "User:alice".into(),
            resource_type: fjord_meta::acl::ResourceType::Topic,
            pattern_type: fjord_meta::acl::PatternType::Literal,
            resource_name: "a".into(),
            operation: fjord_meta::acl::Operation::Write,
            permission: fjord_meta::acl::Permission::Allow,
        });
        let bytes = encode_view(&new).unwrap();
        assert_eq!(bytes[0], VIEW_FORMAT);
        assert_eq!(decode_view(&bytes).unwrap().state, new.state);
    }

    fn old_topic() -> fjord_meta::TopicV1 {
        fjord_meta::TopicV1 {
            id: 1,
            name: "orders".into(),
            replication_factor: 1,
            config: fjord_meta::TopicConfigV1 {
                max_record_bytes: 300,
            },
            partitions: vec![fjord_meta::PartitionAssignment {
                partition: 0,
                group_id: fjord_meta::group_id(1, 0),
                replicas: vec![1],
                leader: None,
                leader_epoch: 0,
            }],
        }
    }

    /// A node upgraded from a version without log settings opens its metadata snapshot, and
    /// the snapshot it writes next cannot be taken for an older format.
    #[test]
    fn a_snapshot_from_before_log_settings_decodes() {
        let old = MetaViewV3 {
            last_applied: None,
            membership: Default::default(),
            state: fjord_meta::MetaStateV3 {
                nodes: [(
                    1,
                    fjord_meta::NodeInfo {
                        id: 1,
                        address: "h:1".into(),
                    },
                )]
                .into(),
                topics: [("orders".to_string(), old_topic())].into(),
                next_topic_id: 2,
                next_producer_id: 3,
                ..Default::default()
            },
        };
        let bytes = codec::encode(&old, "old view").unwrap();
        assert!(bytes[0] <= 1, "an Option tag");
        let view = decode_view(&bytes).unwrap();
        let t = view.state.topic("orders").unwrap();
        assert_eq!(t.config.max_record_bytes, 300);
        assert_eq!(t.config.retention_ms, None);
        assert_eq!(view.state.validate(), Ok(()));

        let mut new = view.clone();
        new.state
            .topics
            .get_mut("orders")
            .unwrap()
            .config
            .retention_ms = Some(60_000);
        let bytes = encode_view(&new).unwrap();
        assert_eq!(bytes[0], VIEW_FORMAT);
        assert!(codec::decode::<MetaViewV3>(&bytes, "v").is_err());
        let back = decode_view(&bytes).unwrap();
        assert_eq!(back.state, new.state);
        // A snapshot of an empty state too (its old and new encodings would otherwise be
        // the same bytes).
        let empty = MetaView::default();
        assert_eq!(
            decode_view(&encode_view(&empty).unwrap()).unwrap().state,
            empty.state
        );
    }
}
