//! The data directory's lock: one process at a time.
//!
//! A node holds an exclusive `flock` on `<data dir>/fjord.lock` for as long as it runs, taken
//! before it changes anything in the directory. A second process given the same directory (a
//! duplicate `--id`, or `--rebuild` run while the node still runs) stops at once, with
//! nothing changed. redb's own lock on the database comes too late for `--rebuild`, which
//! moves the old contents aside before it opens a database: it would pull a running node's
//! database from under it. The lock goes with the process: a killed node holds none.

use std::os::fd::AsRawFd;
use std::path::Path;

/// The lock file's name in the data directory (`--rebuild` leaves it in place).
pub const LOCK_FILE: &str = "fjord.lock";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another process holds this data directory (a node with the same --data-dir still \
         runs: a duplicate --id, or --rebuild while the node runs?); stop it first. Nothing \
         in the directory was changed"
    )]
    Held,
    #[error("cannot open {LOCK_FILE}: {0}")]
    Io(#[from] std::io::Error),
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock of `dir` (created if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        // SAFETY: flock(2) on a descriptor this function owns; the lock lives as long as the
        // descriptor, which `DirLock` keeps.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held);
            }
            // A filesystem without flock: the node runs as before the lock existed (redb
            // still locks its database), rather than not at all.
            tracing::warn!(error = %e, dir = %dir.display(), "cannot lock the data directory: a second process on it would not be stopped before --rebuild moves its contents aside");
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(DirLock::acquire(dir.path()), Err(LockError::Held)));
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
