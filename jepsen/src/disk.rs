//! A node's lazy disk: a `fjord-lazyfs` process that mounts a FUSE pass-through over the
//! node's data directory, holding written data in memory until it is fsynced, so that the
//! harness can make a crashed node lose exactly its unsynced writes.
//!
//! What must hold: the mount is gone when [`LazyMount`] is dropped (also after a panic), and
//! nothing is asked of the filesystem while the node that uses it is still running, except
//! "disk full" and "slow fsyncs".

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lazyfs::{self, Command as FsCommand};

/// A mounted lazy filesystem.
#[derive(Debug)]
pub struct LazyMount {
    child: Child,
    backing: PathBuf,
    mount: PathBuf,
    control: PathBuf,
}

fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

impl LazyMount {
    /// Mounts `backing` at `mount` and waits until the mount is live.
    pub fn mount(
        bin: &Path,
        backing: &Path,
        mount: &Path,
        control: &Path,
        log: &Path,
    ) -> Result<LazyMount> {
        let parent_dev = device_of(mount.parent().unwrap_or(Path::new("/")));
        let log = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(mount)
            .arg("--control")
            .arg(control)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut m = LazyMount {
            child,
            backing: backing.to_path_buf(),
            mount: mount.to_path_buf(),
            control: control.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Live once the mount point is on another device than its parent.
        while device_of(mount) == parent_dev || !control.exists() {
            if let Ok(Some(status)) = m.child.try_wait() {
                bail!(
                    "fjord-lazyfs exited early ({status}) mounting {}",
                    mount.display()
                );
            }
            if Instant::now() > deadline {
                bail!("fjord-lazyfs did not mount {} within 10 s", mount.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    fn command(&self, command: FsCommand) -> Result<()> {
        lazyfs::control(&self.control, command)
            .with_context(|| format!("lazyfs control {command:?} at {}", self.control.display()))
    }

    /// Drops every unsynced write.
    pub fn crash(&self) -> Result<()> {
        self.command(FsCommand::Crash)
    }

    /// Writes back and fsyncs every unsynced write.
    pub fn sync(&self) -> Result<()> {
        self.command(FsCommand::Sync)
    }

    /// Makes every fsync answer `ms` milliseconds late (0: on time).
    pub fn set_fsync_delay(&self, ms: u64) -> Result<()> {
        self.command(FsCommand::FsyncDelay(ms))
    }

    /// Makes writes that grow a file fail with ENOSPC (or stops doing so).
    pub fn set_full(&self, full: bool) -> Result<()> {
        self.command(FsCommand::DiskFull(full))
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mount)
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .stderr(Stdio::null())
            .status();
    }
}
