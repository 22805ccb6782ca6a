//! lazyfs: a FUSE pass-through filesystem that loses unsynced writes on demand, to inject
//! power loss into a node (Jepsen's LazyFS idea).
//!
//! A SIGKILL never loses data a process wrote (the page cache survives it), and cutting a
//! file back does not model a crash for redb, which overwrites pages in place. lazyfs mounts a
//! view of a backing directory in which every file data write is held in memory, per file,
//! until that file is fsynced; a `crash` command drops everything held. A node's data dir on
//! lazyfs then behaves like a disk whose machine lost power: what was fsynced is there, what
//! was not is gone.
//!
//! # Use
//! ```text
//! fjord-lazyfs --backing DIR --mount DIR [--control PATH] [--max-dirty-bytes N]
//! fjord-lazyfs --control PATH --send crash      # full on|off, eio on|off, fsync-delay MS, sync, status
//! ```
//! The control socket (default `<mount>.lazyfs.sock`) is bound once the mount is up, so a
//! harness waits for `status` to answer. A power loss of a node is: SIGKILL the node, send
//! `crash`, restart the node on the same mount. From Rust: [`control()`] / [`control_async`]
//! with a [`Command`], or [`mount`] in-process and a [`Controller`].
//!
//! Needs `/dev/fuse` and `fusermount3` (Debian package `fuse3`); the mount is made by root.
//!
//! # Layout
//! - [`overlay`]: the pure part, one file's unsynced writes and size changes, how reads see
//!   them and the plan that writes them back.
//! - `fs`: the [`fuser::Filesystem`] (inode table, handles, effects on the backing tree).
//! - [`control`](mod@control): the line protocol on a Unix socket, its server and its clients
//!   ([`control()`], [`control_async`], [`status`]).
//! - [`mount`]: mount a backing directory in this process; the `fjord-lazyfs` binary wraps it.
//!
//! # What is modelled
//! - `write` and size changes (`truncate`/`ftruncate`, `O_TRUNC`, `fallocate` growing a file)
//!   go to the file's overlay; reads see them merged over the backing file.
//! - `fsync`/`fdatasync` of a file (and any write through an `O_SYNC`/`O_DSYNC` handle) writes
//!   its overlay to the backing file, fsyncs the backing file, and only then answers.
//! - `close` (`flush`/`release`) persists nothing, as with the page cache.
//! - `crash` drops every overlay at once: every file returns to its content and size at its
//!   last fsync. Sending `crash` while the node is still running models a machine that lost
//!   power and keeps serving; the harness normally SIGKILLs the node first, then crashes. So
//!   that a process that lives on never believes a lost write durable, the next fsync through
//!   each handle that was open on a file the crash took writes from answers `EIO` (once, as
//!   Linux reports a writeback error to each open file), also an fsync called before the crash
//!   that lazyfs only received after it.
//! - `full on`: writes that end past the file's current size, growing truncates and growing
//!   `fallocate` fail with `ENOSPC`; overwrites inside a file still succeed (as on a full disk
//!   where the blocks are already allocated). Namespace operations are not affected.
//! - `eio on`: every file fsync (and every write through an `O_SYNC`/`O_DSYNC` handle) fails
//!   with `EIO` and persists nothing; the overlay stays, so the data is lost at the next crash
//!   unless a later fsync (after `eio off`) succeeds. Directory fsync is not affected.
//! - `fsync-delay MS`: every file fsync answers MS milliseconds late, and persists the file as
//!   it is then (a slow disk's flush); reads, writes and other fsyncs go on meanwhile. A
//!   `crash` while it waits wins: it persists nothing and answers `EIO`. `status` counts it in
//!   `fsyncs_waiting` exactly until it answers, so a `crash` sent after seeing it counted wins.
//!   Writes through an `O_SYNC`/`O_DSYNC` handle are not delayed.
//!
//! # What is not
//! - Namespace operations (create, mkdir, mknod, symlink, link, unlink, rmdir, rename) and
//!   metadata (chmod, chown, utimes) go to the backing directory at once and survive a crash:
//!   they are treated as durable, as on a filesystem mounted `dirsync`. A file created and
//!   never fsynced survives a crash empty (or at its last synced size).
//! - No torn writes: a crash loses whole `write` calls, never part of one, and never
//!   reorders them: a file is either at its last fsync or, while running, at its latest state.
//!   A real disk may keep some unsynced writes and lose others; lazyfs always loses all.
//! - Linux's "fsyncgate" behaviour (a failed fsync marking the pages clean, so that a retried
//!   fsync succeeds without persisting them) is not modelled: after `eio off` a retry persists.
//! - Holes are not tracked: a write into a hole of a sparse file counts as an overwrite for
//!   `full on`.
//! - Memory is bounded by `max_dirty_bytes` (default [`DEFAULT_MAX_DIRTY_BYTES`]): past it, every
//!   overlay is written back to its backing file without fsync, as the kernel's writeback would;
//!   that data then survives a crash. This weakens the fault (less is lost) but never produces
//!   a state a real crash could not, and is logged.
//! - Files are opened with direct I/O (no kernel page cache over lazyfs) and attributes are
//!   not cached, so a crash is seen by the next read or stat. Shared writable `mmap` of files
//!   on lazyfs is therefore not supported (redb does not use it).
//! - Unmounting (SIGTERM, `fusermount3 -u`) writes everything back and fsyncs it, like a clean
//!   unmount; to lose data, send `crash` first, or SIGKILL `fjord-lazyfs`.
//! - POSIX and flock locks are handled by the kernel locally, which is enough for one
//!   machine. Extended attributes are not supported.

pub mod control;
mod fs;
pub mod overlay;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::thread::JoinHandle;

use fuser::{MountOption, SessionACL};

pub use control::{
    Command, Controller, Status, control, control_async, request, request_async, status,
    status_async,
};

/// Default bound on unsynced data held in memory.
pub const DEFAULT_MAX_DIRTY_BYTES: u64 = 1 << 30;

/// Where to mount what.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory whose tree is served; it holds exactly the synced state.
    pub backing: PathBuf,
    /// An empty directory to mount on.
    pub mount: PathBuf,
    /// Unsynced bytes held before writing back without fsync.
    pub max_dirty_bytes: u64,
}

/// A mounted lazyfs, served by a thread of this process.
pub struct Mounted {
    controller: Controller,
    unmounter: Unmounter,
    session: Session,
}

/// Unmounts a [`Mounted`] from another thread.
pub struct Unmounter {
    mount: PathBuf,
}

/// The thread serving the filesystem; it ends when the filesystem is unmounted.
pub struct Session(JoinHandle<io::Result<()>>);

/// Mount `config.backing` at `config.mount`. Returns once the kernel has the mount.
///
/// Needs `/dev/fuse` and `fusermount3` (Debian package `fuse3`): the mount asks for
/// auto-unmount, which `fusermount3` performs once the filesystem is dead, so that a killed
/// lazyfs leaves no broken mount behind.
pub fn mount(config: &Config) -> io::Result<Mounted> {
    let root = config.backing.canonicalize()?;
    let mount_point = config.mount.canonicalize()?;
    let core = Arc::new(fs::Core::new(root, config.max_dirty_bytes)?);
    let filesystem = fs::LazyFs { core: core.clone() };
    let mut options = fuser::Config::default();
    options.mount_options = vec![
        MountOption::FSName("fjord-lazyfs".to_string()),
        MountOption::Subtype("lazyfs".to_string()),
        MountOption::DefaultPermissions,
        MountOption::AutoUnmount,
    ];
    // Nodes may run as any user; `default_permissions` has the kernel check access.
    options.acl = SessionACL::All;
    // One thread: every operation takes the one state lock anyway.
    options.n_threads = Some(1);
    let session = fuser::Session::new(filesystem, &mount_point, &options)?;
    let _ = core.notifier.set(session.notifier());
    let unmounter = Unmounter { mount: mount_point };
    let thread = std::thread::Builder::new()
        .name("lazyfs-fuse".to_string())
        .spawn(move || session.run())?;
    Ok(Mounted {
        controller: Controller { core },
        unmounter,
        session: Session(thread),
    })
}

impl Mounted {
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    pub fn into_parts(self) -> (Controller, Unmounter, Session) {
        (self.controller, self.unmounter, self.session)
    }

    /// Unmount and wait for the serving thread to end.
    pub fn unmount(self) -> io::Result<()> {
        let (_, mut unmounter, session) = self.into_parts();
        unmounter.unmount()?;
        session.join()
    }
}

impl Unmounter {
    /// Detach the mount (lazily, like `umount -l`: it goes away from the namespace now and
    /// from the kernel once nothing uses it). The serving thread ends after that.
    ///
    /// Not fuser's own unmount: with auto-unmount that only hands over to `fusermount3`, which
    /// leaves a filesystem that still answers mounted.
    pub fn unmount(&mut self) -> io::Result<()> {
        unmount(&self.mount)
    }
}

/// Lazily unmount the FUSE filesystem at `mount`: `umount2(MNT_DETACH)` as root, otherwise
/// `fusermount3 -u -z`. Not being mounted is not an error.
pub fn unmount(mount: &Path) -> io::Result<()> {
    let path = CString::new(mount.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EPERM) => {
            let out = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg("--")
                .arg(mount)
                .stdin(Stdio::null())
                .output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "fusermount3 -u -z {}: {}",
                    mount.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
        _ => Err(err),
    }
}

impl Session {
    /// Wait for the filesystem to be unmounted (by [`Unmounter`] or from outside).
    pub fn join(self) -> io::Result<()> {
        self.0
            .join()
            .map_err(|_| io::Error::other("lazyfs session thread panicked"))?
    }
}
