//! The free-space guard of a node's data directory: a full disk is not a dead node.
//!
//! A node whose filesystem runs low on space refuses client produces to the partitions it
//! leads *before* a commit fails (a failed commit stops the node: the fail-stop of
//! [`crate::run_with`], kept for real I/O errors), and keeps serving everything else:
//! fetches, metadata, Raft replication (a follower appends what its leader already accepted:
//! refusing there would stall the partition, and the leader refuses new produces itself),
//! consumer group requests (a coordinator's writes are a few hundred bytes each), and
//! whatever frees space (retention, deletes). It accepts produces again by itself once space
//! is back.
//!
//! - [`min_free_bytes`], [`refuses`] and [`next`] decide, pure: the threshold from the setting
//!   and the filesystem's size, and whether produces are refused, with hysteresis.
//! - [`DiskGate`] holds the latest decision, which the produce path asks
//!   ([`DiskGate::check_produce`]).
//! - [`watch_space`] samples the filesystem every `--disk-check-interval-ms` through a
//!   [`SpaceProbe`] ([`Statvfs`] on the data directory; a simulation or test injects its own)
//!   and feeds the gate.
//!
//! What must hold: with the check off (`--min-free-disk-bytes 0`) nothing is ever refused;
//! produces are refused only after a sample below the threshold, and accepted again only
//! after a sample at least [`resume_margin`] above it, so a disk hovering at the threshold
//! does not flap; a failed sample changes nothing.
//!
//! What the check cannot see: space freed *inside* the database. redb reuses the pages that
//! retention or a deleted topic frees, but hands space back to the filesystem only as the
//! free tail of its file shrinks (a 648 MiB file stayed 648 MiB after its only 300 MiB topic
//! was deleted); until then new data fills the freed pages without the filesystem's free
//! space changing. So the probe adds part of what the storage writer freed inside the file
//! ([`WithFreedPages`]) to the filesystem's free space: deleting records makes room for
//! produces without the file shrinking.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fjord_meta::NodeId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The default threshold's ceiling: 1 GiB. Enough for what continues while produces are
/// refused (replication of batches already accepted: a few produce requests of at most
/// 8 MiB per partition in flight; consumer group writes; the pages redb writes, copy on
/// write, to delete data) with room to spare, and small next to a production disk.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;
/// The default threshold on a small filesystem: 5% of it, when that is below
/// [`DEFAULT_MIN_FREE_BYTES`] (a 10 GiB test disk keeps 512 MiB, not a tenth of itself).
pub const DEFAULT_MIN_FREE_PERCENT: u64 = 5;
/// Produces refused for a full disk resume once free space is this much above the
/// threshold, or an eighth of the threshold if that is less ([`resume_margin`]): a disk
/// hovering at the threshold (a produce fills it, a purge frees it) then does not flap.
pub const RESUME_MARGIN_MAX_BYTES: u64 = 64 << 20;

/// The free and total space of a filesystem, as the node's process can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer can still use (`statvfs`'s `f_bavail`: what `df` shows
    /// as available, without the blocks reserved for root).
    pub available_bytes: u64,
    /// The filesystem's size.
    pub total_bytes: u64,
}

/// The threshold in force: the setting (`--min-free-disk-bytes`; 0 turns the check off), or
/// by default [`DEFAULT_MIN_FREE_BYTES`] or [`DEFAULT_MIN_FREE_PERCENT`] of the filesystem,
/// whichever is smaller.
pub fn min_free_bytes(setting: Option<u64>, total_bytes: u64) -> u64 {
    setting.unwrap_or_else(|| {
        let share = u128::from(total_bytes) * u128::from(DEFAULT_MIN_FREE_PERCENT) / 100;
        DEFAULT_MIN_FREE_BYTES.min(u64::try_from(share).unwrap_or(u64::MAX))
    })
}

/// How far above `min_free_bytes` free space must be before refused produces resume: an
/// eighth of it, at most [`RESUME_MARGIN_MAX_BYTES`].
pub fn resume_margin(min_free_bytes: u64) -> u64 {
    (min_free_bytes / 8).min(RESUME_MARGIN_MAX_BYTES)
}

/// Whether produces are refused with `available_bytes` free under a threshold of
/// `min_free_bytes` (0: never), given whether they are refused now (`refusing`): refused
/// below the threshold; once refused, until free space reaches the threshold plus
/// [`resume_margin`].
pub fn refuses(available_bytes: u64, min_free_bytes: u64, refusing: bool) -> bool {
    if min_free_bytes == 0 {
        return false;
    }
    let bar = if refusing {
        min_free_bytes.saturating_add(resume_margin(min_free_bytes))
    } else {
        min_free_bytes
    };
    available_bytes < bar
}

/// What the node knows of its disk, and what it decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskState {
    /// The latest sample; none before the first (nothing is refused then).
    pub space: Option<Space>,
    /// The threshold in force at the latest sample.
    pub min_free_bytes: u64,
    /// Whether client produces are refused.
    pub refusing: bool,
}

/// The state after a sample of `space`, from `state`, with the threshold setting `setting`.
pub fn next(state: DiskState, setting: Option<u64>, space: Space) -> DiskState {
    let min_free_bytes = min_free_bytes(setting, space.total_bytes);
    DiskState {
        space: Some(space),
        min_free_bytes,
        refusing: refuses(space.available_bytes, min_free_bytes, state.refusing),
    }
}

/// A produce refused because the leader's disk is below its free-space threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node}'s data directory {dir} has {} free, below --min-free-disk-bytes {}{}: \
     produces are refused until there is space again (records deleted by retention, \
     `fjord topic delete-records` or a deleted topic; more disk; other files removed), and \
     resume by themselves at {} free; nothing of this batch was written. \
     Fetches, replication and consumer groups continue",
    fmt_bytes(*.available_bytes),
    fmt_bytes(*.min_free_bytes),
    if *.by_default { " (the default: 1 GiB, or 5% of the filesystem if smaller)" } else { "" },
    fmt_bytes(.min_free_bytes.saturating_add(resume_margin(*.min_free_bytes))),
)]
pub struct DiskFull {
    pub node: NodeId,
    pub dir: String,
    pub available_bytes: u64,
    pub min_free_bytes: u64,
    /// The threshold is the default, not set.
    pub by_default: bool,
}

/// Bytes as MiB with one decimal, or as bytes below 1 MiB.
fn fmt_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// The latest decision about this node's disk, which the produce path asks.
#[derive(Debug)]
pub struct DiskGate {
    node: NodeId,
    dir: String,
    /// `--min-free-disk-bytes`.
    setting: Option<u64>,
    state: watch::Sender<DiskState>,
    /// Produce batches refused so far (for the metrics).
    refused: std::sync::atomic::AtomicU64,
}

impl DiskGate {
    /// The gate of node `node`'s data directory `dir`, with the threshold setting
    /// `setting`; it refuses nothing until a sample says so.
    pub fn new(node: NodeId, dir: &Path, setting: Option<u64>) -> DiskGate {
        DiskGate {
            node,
            dir: dir.display().to_string(),
            setting,
            state: watch::Sender::new(DiskState::default()),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether the check runs (`--min-free-disk-bytes` is not 0).
    pub fn enabled(&self) -> bool {
        self.setting != Some(0)
    }

    /// The latest state.
    pub fn state(&self) -> DiskState {
        *self.state.borrow()
    }

    /// Every change of the state, from now on.
    pub fn subscribe(&self) -> watch::Receiver<DiskState> {
        self.state.subscribe()
    }

    /// Takes a sample: decides ([`next`]), publishes, and logs a change of decision.
    pub fn observe(&self, space: Space) -> DiskState {
        let before = self.state();
        let after = next(before, self.setting, space);
        self.state.send_replace(after);
        if after.refusing && !before.refusing {
            tracing::warn!(
                dir = %self.dir,
                available_bytes = space.available_bytes,
                min_free_bytes = after.min_free_bytes,
                resume_at_bytes = after.min_free_bytes.saturating_add(resume_margin(after.min_free_bytes)),
                "the data directory is low on space (below --min-free-disk-bytes): refusing produces until space is freed; reads, replication and consumer groups continue"
            );
        } else if before.refusing && !after.refusing {
            tracing::info!(
                dir = %self.dir,
                available_bytes = space.available_bytes,
                min_free_bytes = after.min_free_bytes,
                "the data directory has space again: accepting produces"
            );
        }
        after
    }

    /// `Err` while produces are refused, saying why.
    pub fn check_produce(&self) -> Result<(), DiskFull> {
        match self.refusal(self.state()) {
            Some(e) => {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Produce batches [`DiskGate::check_produce`] refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn refusal(&self, state: DiskState) -> Option<DiskFull> {
        let space = state.space.filter(|_| state.refusing)?;
        Some(DiskFull {
            node: self.node,
            dir: self.dir.clone(),
            available_bytes: space.available_bytes,
            min_free_bytes: state.min_free_bytes,
            by_default: self.setting.is_none(),
        })
    }
}

/// Measures the free space of a filesystem; injected so that a simulation or a test can
/// play a filling disk.
pub trait SpaceProbe: Send + Sync + 'static {
    fn sample(&self) -> std::io::Result<Space>;
}

/// The filesystem holding a directory, through `statvfs(3)`.
#[derive(Debug, Clone)]
pub struct Statvfs {
    dir: PathBuf,
}

impl Statvfs {
    pub fn new(dir: &Path) -> Statvfs {
        Statvfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl SpaceProbe for Statvfs {
    // The statvfs fields are u64 on 64-bit Linux, not everywhere.
    #[allow(clippy::unnecessary_cast)]
    fn sample(&self) -> std::io::Result<Space> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the data directory's path holds a NUL byte",
            )
        })?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `path` is NUL-terminated and outlives the call; `st` is writable memory of
        // the type statvfs fills.
        if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it filled `st` (and it was zeroed before).
        let st = unsafe { st.assume_init() };
        let block = if st.f_frsize != 0 {
            st.f_frsize as u64
        } else {
            st.f_bsize as u64
        };
        Ok(Space {
            available_bytes: (st.f_bavail as u64).saturating_mul(block),
            total_bytes: (st.f_blocks as u64).saturating_mul(block),
        })
    }
}

/// A filesystem's free space plus half of what deletions freed inside the node's database
/// file: redb reuses the pages deleted log entries leave (retention, DeleteRecords, deleted
/// topics) but does not give them back to the filesystem, so without them a node refusing
/// produces would never resume by deleting data. Half, because freed pages are shared with
/// the index rows and page overhead, and reuse is not byte for byte.
#[derive(Debug, Clone)]
pub struct WithFreedPages<P> {
    pub fs: P,
    pub freed: fjord_storage::store::ReusableBytes,
}

impl<P: SpaceProbe> SpaceProbe for WithFreedPages<P> {
    fn sample(&self) -> std::io::Result<Space> {
        let mut s = self.fs.sample()?;
        s.available_bytes = s.available_bytes.saturating_add(self.freed.get() / 2);
        Ok(s)
    }
}

/// A probe that answers what it was last set to: a simulated or test disk.
#[derive(Debug)]
pub struct FixedSpace(Mutex<Space>);

impl FixedSpace {
    pub fn new(space: Space) -> FixedSpace {
        FixedSpace(Mutex::new(space))
    }

    pub fn set(&self, space: Space) {
        // A short critical section, no await inside.
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = space;
    }
}

impl SpaceProbe for FixedSpace {
    fn sample(&self) -> std::io::Result<Space> {
        Ok(*self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Samples `probe` every `interval` (the first at once) into `gate` until `stop`. A sample
/// runs on the blocking pool (a statvfs on a stuck filesystem must not hold a runtime
/// thread); a failed one changes nothing and is logged once until a sample succeeds again.
pub async fn watch_space(
    gate: Arc<DiskGate>,
    probe: Arc<dyn SpaceProbe>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let p = probe.clone();
        let sampled = match tokio::task::spawn_blocking(move || p.sample()).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        match sampled {
            Ok(space) => {
                failing = false;
                gate.observe(space);
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(dir = %gate.dir, error = %e, "cannot read the data directory's free space; the last decision stands");
            }
            Err(e) => tracing::debug!(dir = %gate.dir, error = %e, "cannot read the free space"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn space(available_bytes: u64, total_bytes: u64) -> Space {
        Space {
            available_bytes,
            total_bytes,
        }
    }

    #[test]
    fn the_default_is_1_gib_or_5_percent_whichever_is_smaller() {
        assert_eq!(min_free_bytes(None, 100 * GIB), GIB);
        assert_eq!(min_free_bytes(None, 10 * GIB), 512 * MIB);
        assert_eq!(min_free_bytes(None, 0), 0);
        assert_eq!(min_free_bytes(Some(7), 100 * GIB), 7);
        assert_eq!(min_free_bytes(Some(0), 100 * GIB), 0);
    }

    #[test]
    fn refused_below_the_threshold_and_resumed_past_the_margin() {
        // Threshold 1 GiB: margin 64 MiB (an eighth would be 128).
        let t = GIB;
        assert!(!refuses(t, t, false));
        assert!(refuses(t - 1, t, false));
        assert!(refuses(t, t, true));
        assert!(refuses(t + 64 * MIB - 1, t, true));
        assert!(!refuses(t + 64 * MIB, t, true));
        // Threshold 80 MiB: margin 10 MiB.
        assert!(refuses(89 * MIB, 80 * MIB, true));
        assert!(!refuses(90 * MIB, 80 * MIB, true));
        // Off: nothing is refused, even with no space at all.
        assert!(!refuses(0, 0, true));
    }

    #[test]
    fn the_gate_refuses_with_a_message_naming_the_setting_and_the_space() {
        let gate = DiskGate::new(2, Path::new("/x"), None);
        assert!(
            gate.check_produce().is_ok(),
            "nothing refused before a sample"
        );
        let s = gate.observe(space(812 * MIB, 100 * GIB));
        assert!(s.refusing);
        let e = gate.check_produce().unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(
                "node 2's data directory /x has 812.0 MiB free, below --min-free-disk-bytes \
                 1024.0 MiB (the default"
            ),
            "{text}"
        );
        assert!(
            text.contains("resume by themselves at 1088.0 MiB free"),
            "{text}"
        );
        // Within the margin: still refused; past it: accepted.
        gate.observe(space(GIB + MIB, 100 * GIB));
        assert!(gate.check_produce().is_err());
        gate.observe(space(GIB + 64 * MIB, 100 * GIB));
        assert!(gate.check_produce().is_ok());
        // A set threshold is not called the default.
        let gate = DiskGate::new(1, Path::new("/d"), Some(2 * MIB));
        gate.observe(space(1000, GIB));
        let text = gate.check_produce().unwrap_err().to_string();
        assert!(
            text.contains("has 1000 bytes free, below --min-free-disk-bytes 2.0 MiB: "),
            "{text}"
        );
    }

    #[test]
    fn a_real_filesystem_has_a_size() {
        let dir = tempfile::tempdir().unwrap();
        let s = Statvfs::new(dir.path()).sample().unwrap();
        assert!(
            s.total_bytes > 0 && s.available_bytes <= s.total_bytes,
            "{s:?}"
        );
        let missing = Statvfs::new(&dir.path().join("missing")).sample();
        assert!(missing.is_err());
    }

    #[tokio::test]
    async fn the_sampler_follows_the_disk_and_stops() {
        let gate = Arc::new(DiskGate::new(1, Path::new("/d"), Some(100 * MIB)));
        let probe = Arc::new(FixedSpace::new(space(GIB, 10 * GIB)));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_space(
            gate.clone(),
            probe.clone(),
            Duration::from_millis(10),
            stop.clone(),
        ));
        let mut rx = gate.subscribe();
        // Bounds on each wait, not timing assertions.
        let bound = Duration::from_secs(30);
        let first = tokio::time::timeout(bound, rx.wait_for(|s| s.space.is_some()))
            .await
            .unwrap()
            .map(|s| *s)
            .unwrap();
        assert!(!first.refusing && first.min_free_bytes == 100 * MIB);
        probe.set(space(10 * MIB, 10 * GIB));
        tokio::time::timeout(bound, rx.wait_for(|s| s.refusing))
            .await
            .unwrap()
            .unwrap();
        probe.set(space(GIB, 10 * GIB));
        tokio::time::timeout(bound, rx.wait_for(|s| !s.refusing))
            .await
            .unwrap()
            .unwrap();
        stop.cancel();
        tokio::time::timeout(bound, task).await.unwrap().unwrap();
    }

    proptest! {
        /// Against a model of the rules: refused iff below the threshold, or refused before
        /// and below threshold + margin; never with the check off; and a free space that
        /// only wobbles within the margin changes the decision at most once.
        #[test]
        fn the_decision_follows_its_rules(
            setting in prop_oneof![Just(None), Just(Some(0u64)), (1u64..4 * GIB).prop_map(Some)],
            total in 0u64..200 * GIB,
            samples in proptest::collection::vec(0u64..8 * GIB, 1..40),
        ) {
            let mut state = DiskState::default();
            for available in samples {
                let before = state;
                state = next(state, setting, space(available, total));
                let t = min_free_bytes(setting, total);
                let m = resume_margin(t);
                prop_assert!(m <= RESUME_MARGIN_MAX_BYTES && m <= t / 8);
                let want = t != 0
                    && (available < t || (before.refusing && available < t + m));
                prop_assert_eq!(state.refusing, want, "t={} m={} available={}", t, m, available);
                if setting == Some(0) {
                    prop_assert!(!state.refusing);
                }
            }
        }

        #[test]
        fn wobbling_within_the_margin_does_not_flap(
            t in 8u64..4 * GIB,
            wobble in proptest::collection::vec(0u64..=1024, 1..60),
        ) {
            // Just below the threshold once, then anywhere in [t, t + margin): stays refused.
            let m = resume_margin(t);
            let mut state = next(DiskState::default(), Some(t), space(t - 1, u64::MAX));
            prop_assert!(state.refusing);
            for w in wobble {
                let available = t + m.saturating_sub(1) * w / 1024;
                state = next(state, Some(t), space(available, u64::MAX));
                prop_assert!(state.refusing, "available={} t={} m={}", available, t, m);
            }
        }
    }
}
