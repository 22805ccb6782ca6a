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

/// openraft's state machine for the metadata group.
pub struct MetaSm {
    group: u64,
    store: Store,
    view: MetaView,
    publish: watch::Sender<Arc<MetaView>>,
}

impl MetaSm {
    /// Loads the last snapshot (if any) and returns the state machine with a receiver of its
    /// published state.
    pub fn open(
        group: u64,
        store: Store,
    ) -> Result<(MetaSm, watch::Receiver<Arc<MetaView>>), io::Error> {
        let view: MetaView = match store.get_value(group, GroupKey::Snapshot)? {
            Some(b) => codec::decode(&b, "metadata snapshot")?,
            None => MetaView::default(),
        };
        let (tx, rx) = watch::channel(Arc::new(view.clone()));
        Ok((
            MetaSm {
                group,
                store,
                view,
                publish: tx,
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
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSm {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        // The builder is a copy taken when openraft asked for it: a consistent state.
        let data = codec::encode(&self.view);
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
        let view: MetaView = codec::decode(&snapshot, "metadata snapshot")?;
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
                let view: MetaView = codec::decode(&data, "metadata snapshot")?;
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
