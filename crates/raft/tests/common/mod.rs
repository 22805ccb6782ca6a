//! What the storage tests share.

use fjord_storage::{Store, StoreOptions};

/// A store in a fresh temporary directory (kept as long as the directory is).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            cache_size_bytes: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    (dir, store)
}
