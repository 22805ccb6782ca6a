//! A simulated disk for the node's database: memory that forgets unsynced writes when it
//! loses power.
//!
//! A [`SimDisk`] holds two images of one file: the **volatile** image (what reads see: the
//! page cache) and the **durable** image (what is on the platter). Writes and length changes
//! go to the volatile image; `sync_data` copies the pages written since the last sync to the
//! durable image; [`SimDisk::power_loss`] throws the volatile image away and starts again
//! from the durable one. So a crash loses exactly the writes that were never synced.
//!
//! The disk outlives the node that uses it (it is shared by `Arc`), so a simulated node can
//! crash and restart on the same disk. A power loss also **fences** every backend handed out
//! before it: the dead incarnation's database can no longer write (its I/O fails), even while
//! it is being dropped, so nothing of it reaches the disk after the crash.
//!
//! A disk can also be made **slow**: [`SimDisk::set_sync_delay`] adds a delay to each of its
//! fsyncs, in the simulation's time. redb's `sync_data` cannot wait (it is synchronous, on the
//! simulation's one thread), so the delay is a [`SyncDelay`] handle that the group-commit
//! writer in [`WriterMode::Task`](crate::WriterMode::Task) reads before each fsynced commit and
//! sleeps for (Tokio time: turmoil's clock). The batch is not written during the wait, so a
//! power loss then loses it, as it would lose writes whose fsync had not returned.
//!
//! A disk can be **replaced** while its node is down: [`SimDisk::copy`] takes a backup of its
//! durable image, [`SimDisk::replace`] puts one back (an old copy restored) and
//! [`SimDisk::wipe`] leaves it empty (a lost disk). Both fence every earlier backend, as a
//! power loss does.
//!
//! What must hold: after `sync_data` returns, the durable image equals the volatile image;
//! after a power loss, the volatile image equals the durable image; a fenced handle changes
//! nothing.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Granularity of the record of unsynced writes, in bytes.
const PAGE_BYTES: u64 = 4096;

#[derive(Debug, Default)]
struct Images {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// Pages of `volatile` written since the last sync.
    dirty_pages: BTreeSet<u64>,
    /// Bumped by each power loss; a backend made under another generation is fenced.
    generation: u64,
    stats: DiskStats,
}

/// What a disk has done since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub power_losses: u64,
    /// Pages that were written but never synced when power was lost.
    pub pages_lost: u64,
}

/// The extra time each fsync of one disk takes, shared by the disk and its writer: the
/// simulation changes it while the node runs. Zero for a healthy disk.
#[derive(Debug, Clone, Default)]
pub struct SyncDelay(Arc<AtomicU64>);

impl SyncDelay {
    /// The current delay.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.0.store(micros, Ordering::Relaxed);
    }
}

impl PartialEq for SyncDelay {
    /// Two handles are equal when they are the same disk's.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SyncDelay {}

/// A simulated disk holding one database file. Cheap to clone; clones are the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    images: Arc<Mutex<Images>>,
    sync_delay: SyncDelay,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Images> {
        // A panic while holding the lock leaves the images consistent (every mutation is a
        // single step), so a poisoned lock is read through.
        self.images.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A redb storage backend on this disk, for one incarnation of the node: it is fenced by
    /// the next [`power_loss`](SimDisk::power_loss).
    pub fn backend(&self) -> SimDiskBackend {
        SimDiskBackend {
            disk: self.clone(),
            generation: self.lock().generation,
        }
    }

    /// Cuts the power: writes not yet synced are lost, and every backend handed out so far is
    /// fenced. Call it *before* tearing the node down, so its teardown cannot write.
    pub fn power_loss(&self) {
        let mut images = self.lock();
        let images = &mut *images;
        images.generation += 1;
        images.stats.power_losses += 1;
        images.stats.pages_lost += images.dirty_pages.len() as u64;
        images.dirty_pages.clear();
        images.volatile.clone_from(&images.durable);
    }

    /// A copy of what is on the platter now: a backup of the disk, as a copy of a powered-off
    /// node's data directory would hold.
    pub fn copy(&self) -> DiskImage {
        DiskImage(Arc::new(self.lock().durable.clone()))
    }

    /// Puts `image` on the disk in place of what it holds (an old backup put back, or an
    /// empty image: a new disk), fencing every backend handed out so far. For a disk whose
    /// node is down.
    pub fn replace(&self, image: &DiskImage) {
        let mut images = self.lock();
        let images = &mut *images;
        images.generation += 1;
        images.dirty_pages.clear();
        images.durable.clone_from(&image.0);
        images.volatile.clone_from(&image.0);
    }

    /// Replaces the disk by an empty one (see [`SimDisk::replace`]).
    pub fn wipe(&self) {
        self.replace(&DiskImage::default());
    }

    /// Slows every fsync of this disk by `delay` from now on (zero: healthy again). It takes
    /// effect for commits that start after the call, on every incarnation of the node.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.sync_delay.set(delay);
    }

    /// The handle a task writer reads the delay from (see [`WriterMode::Task`]).
    ///
    /// [`WriterMode::Task`]: crate::WriterMode::Task
    pub fn sync_delay(&self) -> SyncDelay {
        self.sync_delay.clone()
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }

    /// Bytes of the durable image.
    pub fn durable_len(&self) -> u64 {
        self.lock().durable.len() as u64
    }
}

/// The durable contents of a [`SimDisk`] at some moment ([`SimDisk::copy`]). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DiskImage(Arc<Vec<u8>>);

impl DiskImage {
    /// Bytes in the image.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// An empty image: a new disk.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One incarnation's handle on a [`SimDisk`]: redb's `StorageBackend`.
#[derive(Debug)]
pub struct SimDiskBackend {
    disk: SimDisk,
    generation: u64,
}

impl SimDiskBackend {
    /// The images, unless this handle was fenced by a power loss.
    fn live(&self) -> io::Result<MutexGuard<'_, Images>> {
        let images = self.disk.lock();
        if images.generation != self.generation {
            return Err(io::Error::other(
                "simulated disk: this handle lost power (the node crashed)",
            ));
        }
        Ok(images)
    }
}

fn out_of_range(offset: u64, len: usize, file_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("simulated disk: {len} bytes at {offset} are beyond the end ({file_len})"),
    )
}

impl redb::StorageBackend for SimDiskBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.live()?.volatile.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let images = self.live()?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(out.len())
            .filter(|e| *e <= images.volatile.len())
            .ok_or_else(|| out_of_range(offset, out.len(), images.volatile.len()))?;
        out.copy_from_slice(&images.volatile[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut images = self.live()?;
        let new_len = usize::try_from(len).map_err(io::Error::other)?;
        let old_len = images.volatile.len() as u64;
        images.volatile.resize(new_len, 0);
        // Pages the length change touched differ from the durable image until a sync.
        let (lo, hi) = (old_len.min(len), old_len.max(len));
        if lo != hi {
            images
                .dirty_pages
                .extend(lo / PAGE_BYTES..hi.div_ceil(PAGE_BYTES));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut images = self.live()?;
        let images = &mut *images;
        let len = images.volatile.len();
        images.durable.resize(len, 0);
        for page in std::mem::take(&mut images.dirty_pages) {
            let start = (page * PAGE_BYTES) as usize;
            if start >= len {
                continue;
            }
            let end = (start + PAGE_BYTES as usize).min(len);
            images.durable[start..end].copy_from_slice(&images.volatile[start..end]);
        }
        images.stats.syncs += 1;
        // Comparing whole images here would cost a copy's worth per sync; the unit tests
        // check the dirty-page bookkeeping instead.
        debug_assert_eq!(images.durable.len(), images.volatile.len());
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut images = self.live()?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(data.len())
            .filter(|e| *e <= images.volatile.len())
            .ok_or_else(|| out_of_range(offset, data.len(), images.volatile.len()))?;
        images.volatile[start..end].copy_from_slice(data);
        if !data.is_empty() {
            images
                .dirty_pages
                .extend(offset / PAGE_BYTES..(end as u64).div_ceil(PAGE_BYTES));
        }
        images.stats.writes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::StorageBackend;

    use super::*;

    fn read_all(b: &SimDiskBackend) -> Vec<u8> {
        let mut out = vec![0; b.len().unwrap() as usize];
        b.read(0, &mut out).unwrap();
        out
    }

    #[test]
    fn power_loss_forgets_exactly_the_unsynced_writes() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.set_len(3 * PAGE_BYTES).unwrap();
        b.write(10, b"synced").unwrap();
        b.sync_data().unwrap();
        b.write(PAGE_BYTES + 5, b"lost").unwrap();
        b.write(10, b"SYNCED").unwrap();
        b.set_len(5 * PAGE_BYTES).unwrap();

        disk.power_loss();
        assert!(b.write(0, b"x").is_err(), "the old incarnation is fenced");
        assert!(b.sync_data().is_err());

        let after = disk.backend();
        let image = read_all(&after);
        assert_eq!(image.len() as u64, 3 * PAGE_BYTES);
        assert_eq!(&image[10..16], b"synced");
        assert!(image[PAGE_BYTES as usize..].iter().all(|b| *b == 0));
        assert_eq!(disk.stats().power_losses, 1);
        assert!(disk.stats().pages_lost >= 2);
    }

    #[test]
    fn a_copy_put_back_or_a_wipe_replaces_the_disk_and_fences_the_old_handles() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.set_len(PAGE_BYTES).unwrap();
        b.write(0, b"old").unwrap();
        b.sync_data().unwrap();
        b.write(0, b"unsynced").unwrap();
        let copy = disk.copy();
        assert_eq!(copy.len() as u64, PAGE_BYTES);
        b.write(0, b"new").unwrap();
        b.sync_data().unwrap();

        disk.replace(&copy);
        assert!(b.write(0, b"x").is_err(), "the old incarnation is fenced");
        let after = disk.backend();
        assert_eq!(
            &read_all(&after)[..3],
            b"old",
            "only what was synced was copied"
        );

        disk.wipe();
        assert!(after.sync_data().is_err());
        assert_eq!(disk.backend().len().unwrap(), 0);
        assert_eq!(disk.durable_len(), 0);
    }

    #[test]
    fn shrinking_then_syncing_is_durable() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.set_len(2 * PAGE_BYTES).unwrap();
        b.write(PAGE_BYTES, b"tail").unwrap();
        b.sync_data().unwrap();
        b.set_len(10).unwrap();
        b.sync_data().unwrap();
        disk.power_loss();
        assert_eq!(disk.backend().len().unwrap(), 10);
        assert_eq!(disk.durable_len(), 10);
    }

    /// A slowed disk's fsyncs take longer in Tokio's (paused, here: simulated) time, and a
    /// power loss during the longer wait loses the batch; healed, it is fast again.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_slow_disk_delays_fsyncs_in_simulated_time() {
        use crate::{Op, Store, StoreOptions, WriterMode};
        let disk = SimDisk::new();
        let options = StoreOptions {
            writer: WriterMode::Task {
                commit_latency: Duration::from_millis(2),
                sync_delay: Some(disk.sync_delay()),
            },
            ..Default::default()
        };
        let append = |index: u64| {
            vec![Op::Append {
                group: 1,
                entries: vec![(index, vec![index as u8])],
            }]
        };
        let store = Store::open_on(disk.backend(), &options).unwrap();
        let t0 = tokio::time::Instant::now();
        store.write(append(1)).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(2));

        disk.set_sync_delay(Duration::from_millis(300));
        let t1 = tokio::time::Instant::now();
        store.write(append(2)).await.unwrap();
        assert_eq!(t1.elapsed(), Duration::from_millis(302));

        // Power lost 100 ms into a slow fsync: the batch never reached the disk.
        let slow = tokio::spawn({
            let store = store.clone();
            async move { store.write(append(3)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        disk.power_loss();
        assert!(slow.await.unwrap().is_err(), "not acknowledged");
        drop(store);

        disk.set_sync_delay(Duration::ZERO);
        let store = Store::open_on(disk.backend(), &options).unwrap();
        let got = store.read_log(1, .., 100, usize::MAX).unwrap();
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
        let t2 = tokio::time::Instant::now();
        store.write(append(3)).await.unwrap();
        assert_eq!(t2.elapsed(), Duration::from_millis(2));
    }

    #[test]
    fn a_redb_database_keeps_committed_data_across_power_loss() {
        use redb::{Database, Durability, ReadableDatabase, TableDefinition};
        const T: TableDefinition<u64, u64> = TableDefinition::new("t");
        let disk = SimDisk::new();
        {
            let db = Database::builder()
                .create_with_backend(disk.backend())
                .unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert(1, 1).unwrap();
            txn.commit().unwrap();
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(Durability::None).unwrap();
            txn.open_table(T).unwrap().insert(2, 2).unwrap();
            txn.commit().unwrap();
            disk.power_loss();
            // Dropping the database after the crash must not write anything.
        }
        let db = Database::builder()
            .create_with_backend(disk.backend())
            .unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        assert_eq!(t.get(1).unwrap().map(|v| v.value()), Some(1));
        assert_eq!(t.get(2).unwrap().map(|v| v.value()), None, "never synced");
    }
}
