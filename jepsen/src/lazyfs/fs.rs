//! The FUSE side of lazyfs: a pass-through of one backing directory whose file data writes stop
//! in per-file [`Overlay`]s until fsync.
//!
//! It owns the inode table (FUSE inode → backing path), the open handles and the overlays, all
//! in one [`State`] behind one mutex shared with the control side ([`super::Controller`]).
//!
//! What must hold:
//! - the backing file of an inode is only written by a writeback of its overlay (fsync, `sync`,
//!   memory pressure, unmount), never by a `write` or a size change directly;
//! - a writeback completes before the overlay is dropped, and the overlay is dropped in the
//!   same critical section, so a `crash` sees either the whole overlay or none of it;
//! - `State::dirty_bytes` is the sum of the overlays' `dirty_bytes()`;
//! - an inode with an overlay or an open handle stays in the table, so its data stays reachable
//!   after the kernel forgets it;
//! - a delayed fsync (`fsync-delay`) waits outside the lock, on a thread of its own, so other
//!   operations go on meanwhile; it persists nothing if a `crash` came while it waited (it
//!   answers `EIO`: the caller, if still alive, must not believe its data durable);
//! - a delayed fsync is counted in `fsyncs_waiting` from before it reads the crash count until
//!   before it answers, so a harness that saw it waiting knows a `crash` it sends next wins;
//! - a `crash` that drops a file's overlay marks every handle open on that file: the next fsync
//!   through each answers `EIO` (once, like Linux's writeback error reporting), whenever that
//!   fsync reached lazyfs, so no write a crash lost is ever reported durable.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::Status;
use super::overlay::{Overlay, WritebackStep};

/// Attributes are never cached by the kernel: a crash changes sizes behind its back.
const ATTR_TTL: Duration = Duration::ZERO;
/// Names may be cached briefly: namespace operations are durable, a crash never changes them.
const ENTRY_TTL: Duration = Duration::from_secs(1);

/// A backing file's identity: `(st_dev, st_ino)`.
type BackingKey = (u64, u64);

struct Node {
    /// Where the inode lives in the backing tree; `None` once its name is gone.
    path: Option<PathBuf>,
    key: BackingKey,
    /// Kernel references (lookup count); the kernel's `forget` lowers it.
    lookups: u64,
    /// Open file and directory handles.
    open: u32,
    /// Its last link was removed: once closed nobody can read it again.
    unlinked: bool,
}

/// A file's unsynced state and the backing file it will be written back to.
struct Dirty {
    overlay: Overlay,
    /// A writable descriptor of the backing file, held until the overlay is gone, so that the
    /// data can be written back whichever handle (if any) is still open.
    file: Arc<File>,
    /// When the overlay last changed, reported as mtime/ctime.
    changed: SystemTime,
}

enum Handle {
    File {
        ino: u64,
        file: Arc<File>,
        writable: bool,
        /// Opened with `O_SYNC`/`O_DSYNC`: every write is an fsync too.
        sync_writes: bool,
        /// A crash dropped unsynced writes of this file while the handle was open, and no fsync
        /// through it has answered `EIO` for that yet.
        lost_writes: bool,
    },
    Dir {
        ino: u64,
        entries: Vec<DirEntry>,
    },
}

impl Handle {
    fn ino(&self) -> u64 {
        match self {
            Handle::File { ino, .. } | Handle::Dir { ino, .. } => *ino,
        }
    }
}

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

/// Everything lazyfs knows, under one lock.
pub(crate) struct State {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<BackingKey, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    dirty: HashMap<u64, Dirty>,
    dirty_bytes: u64,
    disk_full: bool,
    fsync_eio: bool,
}

/// Delayed fsyncs waiting at once, each on its own thread; past this, an fsync waits its delay
/// on the FUSE thread (holding every other operation up, as a saturated disk would).
const MAX_DELAYED_FSYNCS: usize = 64;

/// An fsync answering late, counted in [`Core::delayed_fsyncs`] from its creation until just
/// before its answer, and answered exactly once: by [`DelayedFsync::run`], or with `EIO` when
/// dropped unrun (a thread that could not be spawned, a panic).
struct DelayedFsync {
    core: Arc<Core>,
    /// The crash count when the fsync arrived, read after it was counted as waiting.
    crashes: u64,
    ino: u64,
    fh: u64,
    datasync: bool,
    delay: Duration,
    reply: Option<ReplyEmpty>,
}

impl DelayedFsync {
    fn new(
        core: Arc<Core>,
        ino: u64,
        fh: u64,
        datasync: bool,
        delay: Duration,
        reply: ReplyEmpty,
    ) -> Self {
        // Counted first: a harness that sees the count knows the crash count below is read, so
        // a crash it sends next is seen by `fsync_since`.
        core.delayed_fsyncs.fetch_add(1, Ordering::SeqCst);
        let crashes = core.crashes.load(Ordering::SeqCst);
        Self {
            core,
            crashes,
            ino,
            fh,
            datasync,
            delay,
            reply: Some(reply),
        }
    }

    /// Wait the delay, then fsync unless a crash came meanwhile, and answer.
    fn run(mut self) {
        std::thread::sleep(self.delay);
        let r = self
            .core
            .fsync_since(self.crashes, self.ino, self.fh, self.datasync);
        self.answer(r);
    }

    /// Stop counting this fsync as waiting, then answer: once answered, it is not counted.
    fn answer(&mut self, r: Result<(), Errno>) {
        if let Some(reply) = self.reply.take() {
            self.core.delayed_fsyncs.fetch_sub(1, Ordering::SeqCst);
            reply_empty(reply, r);
        }
    }
}

impl Drop for DelayedFsync {
    fn drop(&mut self) {
        self.answer(Err(Errno::EIO));
    }
}

/// The state shared by the FUSE session and the control side.
pub(crate) struct Core {
    root: PathBuf,
    max_dirty_bytes: u64,
    /// How late every file fsync answers, in milliseconds (0: on time).
    fsync_delay_ms: AtomicU64,
    /// Crashes so far: a delayed fsync that started before a crash persists nothing.
    crashes: AtomicU64,
    /// Delayed fsyncs not answered yet (each a [`DelayedFsync`]).
    delayed_fsyncs: AtomicUsize,
    // A std mutex: every critical section is synchronous, and holding it across a writeback is
    // what makes writeback atomic with respect to a crash.
    state: Mutex<State>,
    /// Tells the kernel to drop cached attributes after a crash; set once mounted.
    pub(crate) notifier: OnceLock<fuser::Notifier>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn to_time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nsecs
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nsecs
    }
}

fn cstring(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Read from `offset` until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn apply_writeback(dirty: &Dirty) -> io::Result<()> {
    for step in dirty.overlay.writeback() {
        match step {
            WritebackStep::SetLen(len) => dirty.file.set_len(len)?,
            WritebackStep::Write { offset, data } => dirty.file.write_all_at(data, offset)?,
        }
    }
    Ok(())
}

impl State {
    fn new(root: &Path) -> io::Result<Self> {
        let meta = fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("backing {} is not a directory", root.display()),
            ));
        }
        let key = (meta.dev(), meta.ino());
        let root_node = Node {
            path: Some(root.to_path_buf()),
            key,
            lookups: 1,
            open: 0,
            unlinked: false,
        };
        Ok(Self {
            nodes: HashMap::from([(INodeNo::ROOT.0, root_node)]),
            by_key: HashMap::from([(key, INodeNo::ROOT.0)]),
            next_ino: INodeNo::ROOT.0 + 1,
            handles: HashMap::new(),
            next_fh: 1,
            dirty: HashMap::new(),
            dirty_bytes: 0,
            disk_full: false,
            fsync_eio: false,
        })
    }

    fn path_of(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.nodes
            .get(&ino)
            .and_then(|n| n.path.clone())
            .ok_or(Errno::ENOENT)
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        if name.as_bytes().contains(&b'/') {
            return Err(Errno::EINVAL);
        }
        Ok(self.path_of(parent)?.join(name))
    }

    /// Find or make the inode for a backing file just found at `path`, and count one lookup.
    fn remember(&mut self, path: PathBuf, meta: &fs::Metadata) -> u64 {
        let key = (meta.dev(), meta.ino());
        let ino = match self.by_key.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.next_ino;
                self.next_ino += 1;
                self.nodes.insert(
                    ino,
                    Node {
                        path: None,
                        key,
                        lookups: 0,
                        open: 0,
                        unlinked: false,
                    },
                );
                self.by_key.insert(key, ino);
                ino
            }
        };
        let node = self.nodes.get_mut(&ino).expect("inode just found or made");
        node.path = Some(path);
        node.lookups += 1;
        node.unlinked = false;
        ino
    }

    /// Drop an inode nothing refers to any more.
    fn collect(&mut self, ino: u64) {
        if ino == INodeNo::ROOT.0 || self.dirty.contains_key(&ino) {
            return;
        }
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        if node.lookups == 0 && node.open == 0 {
            let key = node.key;
            self.nodes.remove(&ino);
            if self.by_key.get(&key) == Some(&ino) {
                self.by_key.remove(&key);
            }
        }
    }

    /// The backing file's metadata for `ino`, through the handle if given.
    fn metadata(&self, ino: u64, fh: Option<u64>) -> Result<fs::Metadata, Errno> {
        if let Some(Handle::File { file, .. }) = fh.and_then(|fh| self.handles.get(&fh)) {
            return file.metadata().map_err(errno);
        }
        if let Some(d) = self.dirty.get(&ino) {
            return d.file.metadata().map_err(errno);
        }
        if let Some(path) = self.nodes.get(&ino).and_then(|n| n.path.as_ref()) {
            return fs::symlink_metadata(path).map_err(errno);
        }
        // An unlinked file still open somewhere.
        for h in self.handles.values() {
            if let Handle::File { ino: i, file, .. } = h
                && *i == ino
            {
                return file.metadata().map_err(errno);
            }
        }
        Err(Errno::ENOENT)
    }

    /// The attributes readers see: the backing file's, with the overlay's size and times.
    fn attr(&self, ino: u64, meta: &fs::Metadata) -> FileAttr {
        let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
        let mut size = meta.len();
        let mut mtime = to_time(meta.mtime(), meta.mtime_nsec());
        let mut ctime = to_time(meta.ctime(), meta.ctime_nsec());
        if let Some(d) = self.dirty.get(&ino) {
            size = d.overlay.size();
            mtime = mtime.max(d.changed);
            ctime = ctime.max(d.changed);
        }
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: meta.blocks(),
            atime: to_time(meta.atime(), meta.atime_nsec()),
            mtime,
            ctime,
            crtime: ctime,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: meta.blksize() as u32,
            flags: 0,
        }
    }

    fn lookup_path(&mut self, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.remember(path, &meta);
        Ok(self.attr(ino, &meta))
    }

    /// The size readers see.
    fn logical_size(&self, ino: u64, fh: Option<u64>) -> Result<u64, Errno> {
        match self.dirty.get(&ino) {
            Some(d) => Ok(d.overlay.size()),
            None => Ok(self.metadata(ino, fh)?.len()),
        }
    }

    /// The overlay of `ino`, made on first use over a writable descriptor of the backing file.
    fn dirty_mut(&mut self, ino: u64, fh: Option<u64>) -> Result<&mut Dirty, Errno> {
        if !self.dirty.contains_key(&ino) {
            let file = self.writable_file(ino, fh)?;
            let base_len = file.metadata().map_err(errno)?.len();
            self.dirty.insert(
                ino,
                Dirty {
                    overlay: Overlay::new(base_len),
                    file,
                    changed: SystemTime::now(),
                },
            );
        }
        Ok(self.dirty.get_mut(&ino).expect("overlay just ensured"))
    }

    fn writable_file(&self, ino: u64, fh: Option<u64>) -> Result<Arc<File>, Errno> {
        let writable = |h: &Handle| match h {
            Handle::File {
                ino: i,
                file,
                writable: true,
                ..
            } if *i == ino => Some(file.clone()),
            _ => None,
        };
        if let Some(file) = fh.and_then(|fh| self.handles.get(&fh)).and_then(writable) {
            return Ok(file);
        }
        if let Some(file) = self.handles.values().find_map(writable) {
            return Ok(file);
        }
        let path = self.path_of(ino)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(errno)?;
        Ok(Arc::new(file))
    }

    /// Change the size readers see (truncate or extend), unsynced.
    fn set_len(&mut self, ino: u64, fh: Option<u64>, size: u64) -> Result<(), Errno> {
        let meta = self.metadata(ino, fh)?;
        if meta.is_dir() {
            return Err(Errno::EISDIR);
        }
        let current = self.logical_size(ino, fh)?;
        if size == current {
            return Ok(());
        }
        if size > current && self.disk_full {
            return Err(Errno::ENOSPC);
        }
        let d = self.dirty_mut(ino, fh)?;
        let before = d.overlay.dirty_bytes();
        d.overlay.set_len(size);
        d.changed = SystemTime::now();
        let after = d.overlay.dirty_bytes();
        self.dirty_bytes = self.dirty_bytes - before + after;
        Ok(())
    }

    /// Write `ino`'s overlay to its backing file and drop it; with `fsync`, make it durable
    /// first. On failure the overlay stays, whole: its plan is idempotent.
    fn write_back(&mut self, ino: u64, fsync: bool) -> io::Result<()> {
        let Some(d) = self.dirty.get(&ino) else {
            return Ok(());
        };
        apply_writeback(d)?;
        if fsync {
            d.file.sync_all()?;
        }
        let d = self.dirty.remove(&ino).expect("overlay just written");
        self.dirty_bytes -= d.overlay.dirty_bytes();
        self.collect(ino);
        Ok(())
    }

    fn write_back_all(&mut self, fsync: bool) -> io::Result<()> {
        let inos: Vec<u64> = self.dirty.keys().copied().collect();
        for ino in inos {
            self.write_back(ino, fsync)?;
        }
        Ok(())
    }

    fn fsync(&mut self, ino: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        if self.take_lost_writes(fh) {
            return Err(Errno::EIO);
        }
        if self.fsync_eio {
            return Err(Errno::EIO);
        }
        if self.dirty.contains_key(&ino) {
            return self.write_back(ino, true).map_err(errno);
        }
        // Nothing pending here, but an earlier writeback under memory pressure may still sit
        // unsynced in the backing filesystem's page cache.
        let file = match self.handles.get(&fh) {
            Some(Handle::File { file, .. }) => file.clone(),
            _ => return Err(Errno::EBADF),
        };
        let synced = if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        };
        synced.map_err(errno)
    }

    fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let sync_writes = match self.handles.get(&fh) {
            Some(Handle::File {
                writable: true,
                sync_writes,
                ..
            }) => *sync_writes,
            _ => return Err(Errno::EBADF),
        };
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if self.disk_full && end > self.logical_size(ino, Some(fh))? {
            return Err(Errno::ENOSPC);
        }
        let d = self.dirty_mut(ino, Some(fh))?;
        let before = d.overlay.dirty_bytes();
        d.overlay.write(offset, data);
        d.changed = SystemTime::now();
        let after = d.overlay.dirty_bytes();
        self.dirty_bytes = self.dirty_bytes - before + after;
        if sync_writes {
            self.fsync(ino, fh, true)?;
        }
        Ok(data.len() as u32)
    }

    /// Whether a crash lost writes of the file open as `fh` since an fsync through `fh` last
    /// said so; saying so now, as the `EIO` of the fsync asking.
    fn take_lost_writes(&mut self, fh: u64) -> bool {
        match self.handles.get_mut(&fh) {
            Some(Handle::File { lost_writes, .. }) => std::mem::take(lost_writes),
            _ => false,
        }
    }

    /// Drop every overlay and mark the handles open on their files (their next fsync fails).
    /// Returns what was lost as (files, bytes) and the inodes whose sizes went back.
    fn crash(&mut self) -> ((u64, u64), Vec<u64>) {
        let lost = (self.dirty.len() as u64, self.dirty_bytes);
        let inos: Vec<u64> = self.dirty.drain().map(|(ino, _)| ino).collect();
        self.dirty_bytes = 0;
        for handle in self.handles.values_mut() {
            if let Handle::File {
                ino, lost_writes, ..
            } = handle
                && inos.contains(ino)
            {
                *lost_writes = true;
            }
        }
        for &ino in &inos {
            self.collect(ino);
        }
        (lost, inos)
    }

    /// A name was removed from the backing tree; `meta` is what it named.
    fn forget_name(&mut self, path: &Path, meta: &fs::Metadata) {
        let key = (meta.dev(), meta.ino());
        let Some(&ino) = self.by_key.get(&key) else {
            return;
        };
        let node = self.nodes.get_mut(&ino).expect("by_key points at a node");
        if node.path.as_deref() == Some(path) {
            node.path = None;
        }
        let last_link = meta.is_dir() || meta.nlink() <= 1;
        if last_link {
            node.unlinked = true;
            self.by_key.remove(&key);
            if node.open == 0 {
                self.drop_unreachable(ino);
            }
        }
        self.collect(ino);
    }

    /// An unlinked, closed file can never be read again: its overlay is garbage.
    fn drop_unreachable(&mut self, ino: u64) {
        if let Some(d) = self.dirty.remove(&ino) {
            self.dirty_bytes -= d.overlay.dirty_bytes();
        }
    }

    fn new_handle(&mut self, handle: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        if let Some(node) = self.nodes.get_mut(&handle.ino()) {
            node.open += 1;
        }
        self.handles.insert(fh, handle);
        fh
    }

    fn release(&mut self, fh: u64) {
        let Some(handle) = self.handles.remove(&fh) else {
            return;
        };
        let ino = handle.ino();
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open = node.open.saturating_sub(1);
            if node.unlinked && node.open == 0 {
                self.drop_unreachable(ino);
            }
        }
        self.collect(ino);
    }

    fn open(&mut self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let path = self.path_of(ino)?;
        // Always try read-write: an overlay needs a writable descriptor for its writeback, and
        // the kernel, not the backing descriptor, enforces the caller's access mode.
        let (file, writable) = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => (f, true),
            Err(e) if flags & libc::O_ACCMODE == libc::O_RDONLY => {
                let f = File::open(&path).map_err(|_| errno(e))?;
                (f, false)
            }
            Err(e) => return Err(errno(e)),
        };
        Ok(self.new_handle(Handle::File {
            ino,
            file: Arc::new(file),
            writable,
            sync_writes: flags & libc::O_DSYNC != 0,
            lost_writes: false,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> Result<(FileAttr, u64), Errno> {
        let path = self.child_path(parent, name)?;
        let fresh = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path);
        let file = match fresh {
            Ok(file) => {
                file.set_permissions(fs::Permissions::from_mode(mode & !umask & 0o7777))
                    .map_err(errno)?;
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(errno)?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(errno)?
            }
            Err(e) => return Err(errno(e)),
        };
        let meta = file.metadata().map_err(errno)?;
        let ino = self.remember(path, &meta);
        let attr = self.attr(ino, &meta);
        let fh = self.new_handle(Handle::File {
            ino,
            file: Arc::new(file),
            writable: true,
            sync_writes: flags & libc::O_DSYNC != 0,
            lost_writes: false,
        });
        Ok((attr, fh))
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        let mut buf = vec![0; size as usize];
        let n = match self.dirty.get(&ino) {
            Some(d) => d.overlay.read(offset, &mut buf, |at, out| {
                read_full_at(file, at, out).map(|_| ())
            }),
            None => read_full_at(file, offset, &mut buf),
        }
        .map_err(errno)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        ino: u64,
        fh: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        let path = self.nodes.get(&ino).and_then(|n| n.path.clone());
        let fd = match fh.and_then(|fh| self.handles.get(&fh)) {
            Some(Handle::File { file, .. }) => Some(file.clone()),
            _ => self.dirty.get(&ino).map(|d| d.file.clone()),
        };
        if let Some(mode) = mode {
            let perm = fs::Permissions::from_mode(mode & 0o7777);
            match (&path, &fd) {
                (Some(p), _) => fs::set_permissions(p, perm),
                (None, Some(f)) => f.set_permissions(perm),
                (None, None) => return Err(Errno::ENOENT),
            }
            .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            match (&path, &fd) {
                (Some(p), _) => std::os::unix::fs::lchown(p, uid, gid),
                (None, Some(f)) => std::os::unix::fs::fchown(f.as_ref(), uid, gid),
                (None, None) => return Err(Errno::ENOENT),
            }
            .map_err(errno)?;
        }
        if let Some(size) = size {
            self.set_len(ino, fh, size)?;
        }
        if atime.is_some() || mtime.is_some() {
            let resolve = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(resolve(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(resolve(t));
            }
            let file = match (&path, fd) {
                (Some(p), _) => Arc::new(File::open(p).map_err(errno)?),
                (None, Some(f)) => f,
                (None, None) => return Err(Errno::ENOENT),
            };
            file.set_times(times).map_err(errno)?;
        }
        let meta = self.metadata(ino, fh)?;
        Ok(self.attr(ino, &meta))
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let source = fs::symlink_metadata(&from).map_err(errno)?;
        let replaced = if exchange {
            None
        } else {
            fs::symlink_metadata(&to).ok()
        };
        if flags.is_empty() {
            fs::rename(&from, &to).map_err(errno)?;
        } else {
            let (cfrom, cto) = (cstring(&from)?, cstring(&to)?);
            // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    cfrom.as_ptr(),
                    libc::AT_FDCWD,
                    cto.as_ptr(),
                    flags.bits(),
                )
            };
            if rc != 0 {
                return Err(errno(io::Error::last_os_error()));
            }
        }
        if let Some(old) = replaced
            && (old.dev(), old.ino()) != (source.dev(), source.ino())
        {
            self.forget_name(&to, &old);
        }
        let moved = |p: &Path, prefix: &Path, onto: &Path| -> Option<PathBuf> {
            let rest = p.strip_prefix(prefix).ok()?;
            Some(if rest.as_os_str().is_empty() {
                onto.to_path_buf()
            } else {
                onto.join(rest)
            })
        };
        for node in self.nodes.values_mut() {
            let Some(p) = &node.path else { continue };
            let new =
                moved(p, &from, &to).or_else(|| if exchange { moved(p, &to, &from) } else { None });
            if let Some(new) = new {
                node.path = Some(new);
            }
        }
        Ok(())
    }

    fn opendir(&mut self, ino: u64) -> Result<u64, Errno> {
        let path = self.path_of(ino)?;
        let parent_ino = if ino == INodeNo::ROOT.0 {
            ino
        } else {
            path.parent()
                .and_then(|p| fs::metadata(p).ok())
                .and_then(|m| self.by_key.get(&(m.dev(), m.ino())).copied())
                .unwrap_or(INodeNo::ROOT.0)
        };
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: parent_ino,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for entry in fs::read_dir(&path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            entries.push(DirEntry {
                ino: std::os::unix::fs::DirEntryExt::ino(&entry),
                kind,
                name: entry.file_name(),
            });
        }
        Ok(self.new_handle(Handle::Dir { ino, entries }))
    }

    fn status(&self) -> Status {
        Status {
            dirty_bytes: self.dirty_bytes,
            dirty_files: self.dirty.len() as u64,
            disk_full: self.disk_full,
            fsync_eio: self.fsync_eio,
            fsync_delay_ms: 0,
            fsyncs_waiting: 0,
        }
    }
}

impl Core {
    pub(crate) fn new(root: PathBuf, max_dirty_bytes: u64) -> io::Result<Self> {
        let state = State::new(&root)?;
        Ok(Self {
            root,
            max_dirty_bytes,
            fsync_delay_ms: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            delayed_fsyncs: AtomicUsize::new(0),
            state: Mutex::new(state),
            notifier: OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("lazyfs state lock poisoned")
    }

    /// Drop every overlay: all unsynced data and size changes are lost. Returns what was lost
    /// as (files, bytes).
    pub(crate) fn crash(&self) -> (u64, u64) {
        let (lost, inos) = {
            let mut st = self.lock();
            self.crashes.fetch_add(1, Ordering::SeqCst);
            st.crash()
        };
        // Sizes went back: the kernel must not keep using the ones it cached (an O_APPEND
        // write positions itself from the cached size). Outside the lock, in case the kernel
        // ever needs lazyfs to answer while invalidating.
        if let Some(notifier) = self.notifier.get() {
            for ino in inos {
                // Offset -1: attributes only (there is no page cache under direct I/O). ENOENT
                // means the kernel had nothing cached.
                if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0)
                    && e.raw_os_error() != Some(libc::ENOENT)
                {
                    tracing::warn!(ino, "lazyfs: invalidating attributes after crash: {e}");
                }
            }
        }
        lost
    }

    pub(crate) fn set_disk_full(&self, on: bool) {
        self.lock().disk_full = on;
    }

    pub(crate) fn set_fsync_eio(&self, on: bool) {
        self.lock().fsync_eio = on;
    }

    pub(crate) fn set_fsync_delay(&self, delay: Duration) {
        self.fsync_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn fsync_delay(&self) -> Duration {
        Duration::from_millis(self.fsync_delay_ms.load(Ordering::SeqCst))
    }

    /// An fsync that started when `crashes` crashes had happened, run now: `EIO` without
    /// persisting anything if a crash came since (which reports any writes it lost, too).
    fn fsync_since(&self, crashes: u64, ino: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        let mut st = self.lock();
        if self.crashes.load(Ordering::SeqCst) != crashes {
            st.take_lost_writes(fh);
            return Err(Errno::EIO);
        }
        st.fsync(ino, fh, datasync)
    }

    /// Write back and fsync every overlay, like `sync(1)`.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.lock().write_back_all(true)
    }

    pub(crate) fn status(&self) -> Status {
        Status {
            fsync_delay_ms: self.fsync_delay_ms.load(Ordering::SeqCst),
            fsyncs_waiting: self.delayed_fsyncs.load(Ordering::SeqCst) as u64,
            ..self.lock().status()
        }
    }
}

/// The [`fuser::Filesystem`] over a [`Core`].
pub(crate) struct LazyFs {
    pub(crate) core: Arc<Core>,
}

fn reply_entry(reply: ReplyEntry, r: Result<FileAttr, Errno>) {
    match r {
        Ok(attr) => reply.entry_with_ttls(&ATTR_TTL, &ENTRY_TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn destroy(&mut self) {
        // An unmount writes back like the kernel does; to lose unsynced data, `crash` first.
        if let Err(e) = self.core.sync() {
            tracing::error!("lazyfs: writeback at unmount failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.core.lock();
        let r = st
            .child_path(parent.0, name)
            .and_then(|p| st.lookup_path(p));
        reply_entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = self.core.lock();
        if let Some(node) = st.nodes.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
        }
        st.collect(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.core.lock();
        match st.metadata(ino.0, fh.map(|f| f.0)) {
            Ok(meta) => reply.attr(&ATTR_TTL, &st.attr(ino.0, &meta)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.core.lock();
        let fh = fh.map(|f| f.0);
        match st.setattr(ino.0, fh, mode, uid, gid, size, atime, mtime) {
            Ok(attr) => reply.attr(&ATTR_TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.core.lock();
        match st
            .path_of(ino.0)
            .and_then(|p| fs::read_link(p).map_err(errno))
        {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.core.lock();
        let r = (|| {
            let path = st.child_path(parent.0, name)?;
            let cpath = cstring(&path)?;
            // SAFETY: `cpath` is a valid NUL-terminated string for the duration of the call.
            let rc = unsafe { libc::mknod(cpath.as_ptr(), mode & !umask, libc::dev_t::from(rdev)) };
            if rc != 0 {
                return Err(errno(io::Error::last_os_error()));
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !umask & 0o7777))
                .map_err(errno)?;
            std::os::unix::fs::lchown(&path, Some(req.uid()), Some(req.gid())).map_err(errno)?;
            st.lookup_path(path)
        })();
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.core.lock();
        let r = (|| {
            let path = st.child_path(parent.0, name)?;
            fs::create_dir(&path).map_err(errno)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !umask & 0o7777))
                .map_err(errno)?;
            std::os::unix::fs::lchown(&path, Some(req.uid()), Some(req.gid())).map_err(errno)?;
            st.lookup_path(path)
        })();
        reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.core.lock();
        let r = (|| {
            let path = st.child_path(parent.0, name)?;
            let meta = fs::symlink_metadata(&path).map_err(errno)?;
            fs::remove_file(&path).map_err(errno)?;
            st.forget_name(&path, &meta);
            Ok(())
        })();
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.core.lock();
        let r = (|| {
            let path = st.child_path(parent.0, name)?;
            let meta = fs::symlink_metadata(&path).map_err(errno)?;
            fs::remove_dir(&path).map_err(errno)?;
            st.forget_name(&path, &meta);
            Ok(())
        })();
        reply_empty(reply, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut st = self.core.lock();
        let r = (|| {
            let path = st.child_path(parent.0, link_name)?;
            std::os::unix::fs::symlink(target, &path).map_err(errno)?;
            std::os::unix::fs::lchown(&path, Some(req.uid()), Some(req.gid())).map_err(errno)?;
            st.lookup_path(path)
        })();
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.core.lock();
        let r = st.rename(parent.0, name, newparent.0, newname, flags);
        reply_empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = self.core.lock();
        let r = (|| {
            let from = st.path_of(ino.0)?;
            let to = st.child_path(newparent.0, newname)?;
            fs::hard_link(&from, &to).map_err(errno)?;
            st.lookup_path(to)
        })();
        reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.core.lock();
        match st.open(ino.0, flags.0) {
            // Direct I/O keeps the kernel's page cache out of the picture: every read and write
            // reaches lazyfs, so a crash is seen by the next read.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.core.lock();
        match st.read(ino.0, fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.core.lock();
        let r = st.write(ino.0, fh.0, offset, data);
        if r.is_ok() && st.dirty_bytes > self.core.max_dirty_bytes {
            // Like the kernel's dirty page writeback: the data reaches the backing file without
            // an fsync, so a later crash no longer loses it. Weaker, never impossible.
            tracing::warn!(
                dirty_bytes = st.dirty_bytes,
                max_dirty_bytes = self.core.max_dirty_bytes,
                "lazyfs: over the dirty limit, writing back without fsync"
            );
            if let Err(e) = st.write_back_all(false) {
                tracing::error!("lazyfs: writeback under memory pressure failed: {e}");
            }
        }
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() does not persist anything, as with the page cache.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.core.lock().release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let delay = self.core.fsync_delay();
        if delay.is_zero() {
            let mut st = self.core.lock();
            let r = st.fsync(ino.0, fh.0, datasync);
            reply_empty(reply, r);
            return;
        }
        let already_waiting = self.core.delayed_fsyncs.load(Ordering::SeqCst);
        let fsync = DelayedFsync::new(self.core.clone(), ino.0, fh.0, datasync, delay, reply);
        if already_waiting >= MAX_DELAYED_FSYNCS {
            fsync.run();
            return;
        }
        // A failed spawn drops `fsync`, which answers EIO: the fsync did not happen.
        let spawned = std::thread::Builder::new()
            .name("lazyfs-slow-fsync".to_string())
            .spawn(move || fsync.run());
        if let Err(e) = spawned {
            tracing::warn!("lazyfs: no thread for a delayed fsync: {e}");
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.core.lock();
        match st.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.core.lock();
        let Some(Handle::Dir { entries, .. }) = st.handles.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.lock().release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let st = self.core.lock();
        let r = st
            .path_of(ino.0)
            .and_then(|p| File::open(p).and_then(|d| d.sync_all()).map_err(errno));
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let r = (|| {
            let root = cstring(&self.core.root)?;
            // SAFETY: an all-zero statvfs is a valid value to be overwritten by the call.
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: `root` is a valid NUL-terminated string and `s` a valid out-pointer.
            if unsafe { libc::statvfs(root.as_ptr(), &mut s) } != 0 {
                return Err(errno(io::Error::last_os_error()));
            }
            Ok(s)
        })();
        match r {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    // Extended attributes are not supported; ENOSYS makes the kernel stop asking, quietly
    // (fuser's defaults log a warning for each).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (`default_permissions`).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.core.lock();
        match st.create(parent.0, name, mode, umask, flags, req.uid(), req.gid()) {
            Ok((attr, fh)) => reply.created(
                &ATTR_TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.core.lock();
        let r = (|| {
            if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                return Err(Errno::from_i32(libc::EOPNOTSUPP));
            }
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            let current = st.logical_size(ino.0, Some(fh.0))?;
            if end <= current {
                return Ok(());
            }
            if st.disk_full {
                return Err(Errno::ENOSPC);
            }
            if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
                return Ok(());
            }
            st.set_len(ino.0, Some(fh.0), end)
        })();
        reply_empty(reply, r);
    }
}
