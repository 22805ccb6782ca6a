//! openraft's storage conformance suite against fjord's redb log store, for both kinds of
//! group: the metadata group (no partition rules) and a partition group (partition rules and
//! offset index maintained at append).

mod common;

use fjord_raft::TypeConfig;
use fjord_raft::log_store::GroupLogStore;
use fjord_raft::meta_sm::MetaSm;
use fjord_raft::partition_sm::{PartitionKind, PartitionShared, PartitionSm};

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

struct MetaBuilder;
struct PartitionBuilder;

impl StoreBuilder<TypeConfig, GroupLogStore, MetaSm, tempfile::TempDir> for MetaBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, GroupLogStore, MetaSm), StorageError<TypeConfig>> {
        let (dir, store) = common::temp_store();
        let (sm, _view) = MetaSm::open(0, store.clone()).unwrap();
        Ok((dir, GroupLogStore::new(0, store, None), sm))
    }
}

impl StoreBuilder<TypeConfig, GroupLogStore, PartitionSm, tempfile::TempDir> for PartitionBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, GroupLogStore, PartitionSm), StorageError<TypeConfig>> {
        let (dir, store) = common::temp_store();
        let group = (1u64 << 32) | 3;
        let shared = PartitionShared::open(group, &store, PartitionKind::Data).unwrap();
        let sm = PartitionSm::new(shared.clone(), store.clone());
        Ok((dir, GroupLogStore::new(group, store, Some(shared)), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_group_log_store_passes_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(MetaBuilder).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_group_log_store_passes_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(PartitionBuilder).await?;
    Ok(())
}
