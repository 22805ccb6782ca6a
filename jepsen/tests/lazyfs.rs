//! lazyfs end to end: the `fjord-lazyfs` binary mounted on a tempdir, driven through its
//! control socket, checked through the mount and against the backing directory.
//!
//! Needs root, `/dev/fuse` and `fusermount3` (Debian `fuse3`); without them each test says why
//! and returns.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fjord_jepsen::lazyfs::{self, Command as Ctl, Status};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

/// How long a mount, an unmount or a child process may take to get where we wait for it.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// Poll `done` until it holds or `DEADLINE` passes.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Why lazyfs cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    match Command::new("fusermount3").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("fusermount3 not found (Debian package fuse3)".into()),
    }
}

fn is_mounted(mount: &Path) -> bool {
    let parent = mount.parent().expect("mount point has a parent");
    match (fs::metadata(mount), fs::metadata(parent)) {
        (Ok(m), Ok(p)) => m.dev() != p.dev(),
        // A dead FUSE mount answers ENOTCONN: still mounted.
        (Err(_), Ok(_)) => true,
        _ => false,
    }
}

/// A running `fjord-lazyfs` on a fresh tempdir; SIGTERMs it and makes sure the mount is gone
/// when dropped, also on panic.
struct Mounted {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    mount: PathBuf,
    control: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mounted {
    fn start(test: &str, extra_args: &[&str]) -> Option<Self> {
        if let Some(why) = unavailable() {
            eprintln!("skipping {test}: {why}");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("backing");
        let mount = dir.path().join("mnt");
        let control = dir.path().join("control.sock");
        let log = dir.path().join("lazyfs.log");
        fs::create_dir(&backing).unwrap();
        fs::create_dir(&mount).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fjord-lazyfs"))
            .arg("--backing")
            .arg(&backing)
            .arg("--mount")
            .arg(&mount)
            .arg("--control")
            .arg(&control)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn fjord-lazyfs");
        let mut m = Mounted {
            _dir: dir,
            backing,
            mount,
            control,
            log,
            child: Some(child),
        };
        // The control socket is bound once the mount is up.
        wait_for("lazyfs to mount", || {
            if let Some(Ok(Some(exit))) = m.child.as_mut().map(|c| c.try_wait()) {
                panic!("fjord-lazyfs exited with {exit}: {}", m.log_text());
            }
            lazyfs::status(&m.control).is_ok()
        });
        assert!(
            is_mounted(&m.mount),
            "status answers but nothing is mounted"
        );
        Some(m)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ctl(&self, command: Ctl) {
        lazyfs::control(&self.control, command).unwrap_or_else(|e| panic!("{command}: {e}"));
    }

    fn status(&self) -> Status {
        lazyfs::status(&self.control).expect("status")
    }

    /// SIGTERM lazyfs and wait for it; returns whether it exited successfully.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(exit)) = child.try_wait() {
                return exit.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let clean = self.stop();
        if is_mounted(&self.mount) {
            let _ = lazyfs::unmount(&self.mount);
            if !std::thread::panicking() {
                panic!("fjord-lazyfs left its mount behind: {}", self.log_text());
            }
        }
        if !clean && !std::thread::panicking() {
            panic!("fjord-lazyfs did not exit cleanly: {}", self.log_text());
        }
    }
}

fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

#[test]
fn crash_loses_unsynced_writes_and_size_changes_only() {
    let Some(lfs) = Mounted::start("crash_loses_unsynced_writes_and_size_changes_only", &[]) else {
        return;
    };
    let path = lfs.mount.join("data");
    let backing = lfs.backing.join("data");

    // Synced data survives a crash.
    {
        let mut f = File::create(&path).unwrap();
        f.write_all(b"hello ").unwrap();
        f.sync_all().unwrap();
    }
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::read(&path).unwrap(), b"hello ");

    // An append closed without fsync is visible, held in memory only, and lost on crash.
    {
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"world").unwrap();
    }
    assert_eq!(fs::read(&path).unwrap(), b"hello world");
    assert_eq!(
        fs::read(&backing).unwrap(),
        b"hello ",
        "backing written before fsync"
    );
    let st = lfs.status();
    assert_eq!((st.dirty_bytes, st.dirty_files), (5, 1));
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::read(&path).unwrap(), b"hello ");
    assert_eq!(lfs.status().dirty_bytes, 0);

    // An overwrite in place is lost too.
    {
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"J", 0).unwrap();
    }
    assert_eq!(fs::read(&path).unwrap(), b"Jello ");
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::read(&path).unwrap(), b"hello ");

    // Unsynced size changes are reverted, both ways.
    {
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(2).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2);
        assert_eq!(fs::read(&path).unwrap(), b"he");
    }
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::metadata(&path).unwrap().len(), 6);
    assert_eq!(fs::read(&path).unwrap(), b"hello ");
    {
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(10_000).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 10_000);
    }
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::metadata(&path).unwrap().len(), 6);

    // Cut, regrow, write past the gap, fdatasync: the cut bytes read as zeros, durably.
    {
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(2).unwrap();
        f.set_len(7).unwrap();
        f.write_all_at(b"!", 7).unwrap();
        f.sync_data().unwrap();
    }
    let expected = b"he\0\0\0\0\0!";
    assert_eq!(fs::read(&path).unwrap(), expected);
    assert_eq!(fs::read(&backing).unwrap(), expected);
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::read(&path).unwrap(), expected);

    // A write through an O_DSYNC handle is durable when it returns.
    {
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&path)
            .unwrap();
        f.write_all_at(b"H", 0).unwrap();
    }
    lfs.ctl(Ctl::Crash);
    assert_eq!(&fs::read(&path).unwrap()[..2], b"He");

    // Namespace operations are durable: a new file survives, empty, and an append after the
    // crash starts at the reverted size.
    let fresh = lfs.mount.join("fresh");
    fs::write(&fresh, b"gone").unwrap();
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::metadata(&fresh).unwrap().len(), 0);
    {
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"?").unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(fs::read(&path).unwrap(), b"He\0\0\0\0\0!?");
    fs::rename(&fresh, lfs.mount.join("renamed")).unwrap();
    lfs.ctl(Ctl::Crash);
    assert!(lfs.mount.join("renamed").exists());
    assert!(!fresh.exists());
}

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const CHILD_ENV: &str = "FJORD_LAZYFS_REDB_CHILD";
/// Printed by the child once it has committed everything (after the harness's own output).
const CHILD_DONE: &str = "lazyfs-child: committed";
/// redb's cache; it holds at most half of it in dirty pages, then writes them to the file.
const CACHE_BYTES: usize = 1 << 20;
/// The writer runs `ROUNDS` rounds of `Durability::None` commits followed by `Immediate` ones
/// (which make the earlier `None` ones durable too), then a tail of `None` commits only.
const ROUNDS: u64 = 3;
const DURABLE_PER_ROUND: u64 = 10;
const VOLATILE_PER_ROUND: u64 = 8;
/// Enough unsynced data (32 × 64 KiB) to overflow redb's write buffer, so that it reaches the
/// file, unsynced: a smaller run of `Durability::None` commits never leaves redb's memory.
const TAIL_COMMITS: u64 = 32;
/// Keys of the `None` commits made durable by a later `Immediate` one.
const VOLATILE_BASE: u64 = 1_000_000;
/// Keys of the tail, which nothing makes durable.
const TAIL_BASE: u64 = 2_000_000;

fn durable_key(round: u64, i: u64) -> u64 {
    round * 100 + i
}

fn volatile_key(round: u64, i: u64) -> u64 {
    VOLATILE_BASE + round * 100 + i
}

/// The value stored under `key`: distinct per key, several pages for the `None` commits.
fn value(key: u64) -> Vec<u8> {
    let len = if key >= VOLATILE_BASE { 64 << 10 } else { 3000 };
    (0..len as u64).map(|i| (key * 31 + i) as u8).collect()
}

fn commit(db: &Database, key: u64, durability: Durability) {
    let mut tx = db.begin_write().unwrap();
    tx.set_durability(durability).unwrap();
    {
        let mut table = tx.open_table(TABLE).unwrap();
        table.insert(key, value(key).as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

/// Not a test: the redb writer that `redb_on_lazyfs_keeps_every_durable_commit` runs in a
/// child process and SIGKILLs, as a crashing node would be. Ignored, so it only runs when
/// asked for by name with `--ignored`.
#[test]
#[ignore]
fn child_redb_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(Path::new(&path))
        .unwrap();
    for round in 0..ROUNDS {
        for i in 0..VOLATILE_PER_ROUND {
            commit(&db, volatile_key(round, i), Durability::None);
        }
        for i in 0..DURABLE_PER_ROUND {
            commit(&db, durable_key(round, i), Durability::Immediate);
        }
    }
    for i in 0..TAIL_COMMITS {
        commit(&db, TAIL_BASE + i, Durability::None);
    }
    println!("\n{CHILD_DONE}");
    std::io::stdout().flush().unwrap();
    // Wait to be killed, holding the database open: no clean close may sync anything.
    loop {
        std::thread::park();
    }
}

/// Kills its child on drop, so a failing test leaves no writer behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn redb_on_lazyfs_keeps_every_durable_commit() {
    let Some(lfs) = Mounted::start("redb_on_lazyfs_keeps_every_durable_commit", &[]) else {
        return;
    };
    let db_path = lfs.mount.join("fjord.redb");

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "child_redb_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the redb writer"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == CHILD_DONE {
                let _ = tx.send(());
                break;
            }
        }
    });
    rx.recv_timeout(DEADLINE)
        .expect("the redb writer never reported its commits");

    let held = lfs.status();
    eprintln!("held unsynced before the crash: {held}");
    assert!(
        held.dirty_bytes > 0,
        "the Durability::None commits should be held unsynced: {held}"
    );
    // Power loss: the process dies, then everything it had not fsynced.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    lfs.ctl(Ctl::Crash);

    let mut db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(&db_path)
        .expect("redb opens (repairing if it must) after the crash");
    {
        let rtx = db.begin_read().unwrap();
        let table = rtx.open_table(TABLE).unwrap();
        let durable = (0..ROUNDS).flat_map(|r| {
            (0..DURABLE_PER_ROUND)
                .map(move |i| durable_key(r, i))
                .chain((0..VOLATILE_PER_ROUND).map(move |i| volatile_key(r, i)))
        });
        for key in durable {
            let got = table.get(key).unwrap();
            assert_eq!(
                got.as_ref().map(|v| v.value().to_vec()),
                Some(value(key)),
                "durable commit of key {key} lost or changed"
            );
        }
        for key in (0..TAIL_COMMITS).map(|i| TAIL_BASE + i) {
            assert!(
                table.get(key).unwrap().is_none(),
                "unsynced commit of key {key} survived a crash that drops all unsynced writes"
            );
        }
    }
    assert!(db.check_integrity().expect("integrity check"));
    // And it is writable again.
    commit(&db, 7_777, Durability::Immediate);
    drop(db);
    lfs.ctl(Ctl::Crash);
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(&db_path)
        .unwrap();
    let rtx = db.begin_read().unwrap();
    let table = rtx.open_table(TABLE).unwrap();
    assert_eq!(table.get(7_777).unwrap().unwrap().value(), value(7_777));
}

#[test]
fn disk_full_fails_growing_writes_until_turned_off() {
    let Some(lfs) = Mounted::start("disk_full_fails_growing_writes_until_turned_off", &[]) else {
        return;
    };
    let path = lfs.mount.join("data");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&[1; 4096], 0).unwrap();
    f.sync_all().unwrap();

    lfs.ctl(Ctl::DiskFull(true));
    assert!(lfs.status().disk_full);
    let e = f.write_all_at(b"x", 4096).unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::ENOSPC), "{e}");
    let e = f.write_all_at(&[2; 100], 4050).unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::ENOSPC), "{e}");
    let e = f.set_len(8192).unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::ENOSPC), "{e}");
    // SAFETY: a valid open descriptor; fallocate has no memory-safety preconditions.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 16384) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSPC)
    );
    // Overwrites of allocated space and shrinking still work.
    f.write_all_at(b"y", 0).unwrap();
    f.set_len(4000).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 4000);
    f.sync_all().unwrap();

    lfs.ctl(Ctl::DiskFull(false));
    assert!(!lfs.status().disk_full);
    f.write_all_at(b"x", 4000).unwrap();
    f.sync_all().unwrap();
    let data = fs::read(&path).unwrap();
    assert_eq!(data.len(), 4001);
    assert_eq!((data[0], data[1], data[4000]), (b'y', 1, b'x'));
}

#[test]
fn fsync_eio_persists_nothing_until_turned_off() {
    let Some(lfs) = Mounted::start("fsync_eio_persists_nothing_until_turned_off", &[]) else {
        return;
    };
    let path = lfs.mount.join("data");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"a").unwrap();
    f.sync_all().unwrap();

    lfs.ctl(Ctl::FsyncEio(true));
    f.write_all(b"b").unwrap();
    let e = f.sync_all().unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::EIO), "{e}");
    assert_eq!(fs::read(&path).unwrap(), b"ab");
    lfs.ctl(Ctl::FsyncEio(false));
    lfs.ctl(Ctl::Crash);
    assert_eq!(
        fs::read(&path).unwrap(),
        b"a",
        "a failed fsync persisted data"
    );

    // A retry after the fault clears persists what is pending.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"b", 1).unwrap();
    lfs.ctl(Ctl::FsyncEio(true));
    assert!(f.sync_data().is_err());
    lfs.ctl(Ctl::FsyncEio(false));
    f.sync_data().unwrap();
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::read(&path).unwrap(), b"ab");
}

#[test]
fn over_the_dirty_limit_data_is_written_back_without_fsync() {
    let Some(lfs) = Mounted::start(
        "over_the_dirty_limit_data_is_written_back_without_fsync",
        &["--max-dirty-bytes", "4096"],
    ) else {
        return;
    };
    let path = lfs.mount.join("data");
    let f = File::create(&path).unwrap();
    f.write_all_at(&[5; 4096], 0).unwrap();
    assert_eq!(lfs.status().dirty_bytes, 4096, "at the limit, still held");
    f.write_all_at(&[6; 10], 4096).unwrap();
    assert_eq!(lfs.status().dirty_bytes, 0, "over the limit, written back");
    assert_eq!(fs::metadata(lfs.backing.join("data")).unwrap().len(), 4106);
    // Written back is no longer lost by a crash (the documented weakening).
    lfs.ctl(Ctl::Crash);
    assert_eq!(fs::metadata(&path).unwrap().len(), 4106);
}

#[test]
fn sigterm_unmounts_and_writes_back() {
    let Some(mut lfs) = Mounted::start("sigterm_unmounts_and_writes_back", &[]) else {
        return;
    };
    fs::create_dir(lfs.mount.join("dir")).unwrap();
    fs::write(lfs.mount.join("dir/file"), b"unsynced").unwrap();
    assert!(lfs.stop(), "fjord-lazyfs exited badly: {}", lfs.log_text());
    wait_for("the mount to go", || !is_mounted(&lfs.mount));
    assert_eq!(
        fs::read(lfs.backing.join("dir/file")).unwrap(),
        b"unsynced",
        "a clean unmount writes back"
    );
    assert!(!lfs.control.exists(), "control socket left behind");
}

/// Guards the slow-disk fault: with `fsync-delay` an fsync answers late yet still persists,
/// other operations are not held up while it waits, and a crash while it waits wins (nothing
/// persisted, the fsync fails).
#[test]
fn fsync_delay_answers_late_and_a_crash_while_waiting_persists_nothing() {
    let Some(lfs) = Mounted::start(
        "fsync_delay_answers_late_and_a_crash_while_waiting_persists_nothing",
        &[],
    ) else {
        return;
    };
    let path = lfs.mount.join("data");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"a").unwrap();

    // A short delay: the fsync answers and persists.
    lfs.ctl(Ctl::FsyncDelay(50));
    assert_eq!(lfs.status().fsync_delay_ms, 50);
    f.sync_all().unwrap();
    // Counted until it answers, no longer: the count seen below is the next fsync's alone.
    assert_eq!(
        lfs.status().fsyncs_waiting,
        0,
        "an fsync that answered is still counted as waiting"
    );
    lfs.ctl(Ctl::Crash);
    assert_eq!(
        fs::read(&path).unwrap(),
        b"a",
        "a delayed fsync persisted nothing"
    );

    // A long delay: while the fsync waits, another file is written and read.
    lfs.ctl(Ctl::FsyncDelay(lazyfs::control::MAX_FSYNC_DELAY_MS));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"b", 1).unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = f.sync_all();
        tx.send(r.map_err(|e| errno_of(&e))).ok();
    });
    wait_for("the fsync to wait", || lfs.status().fsyncs_waiting == 1);
    let other = lfs.mount.join("other");
    fs::write(&other, b"meanwhile").unwrap();
    assert_eq!(fs::read(&other).unwrap(), b"meanwhile");
    assert_eq!(
        lfs.status().fsyncs_waiting,
        1,
        "other operations waited for the delayed fsync"
    );
    assert!(rx.try_recv().is_err(), "the delayed fsync answered early");
    lfs.ctl(Ctl::Crash);
    let answer = rx
        .recv_timeout(Duration::from_millis(lazyfs::control::MAX_FSYNC_DELAY_MS) + DEADLINE)
        .expect("the delayed fsync never answered");
    waiter.join().unwrap();
    assert_eq!(
        answer,
        Err(Some(libc::EIO)),
        "an fsync overtaken by a crash succeeded"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        b"a",
        "an fsync overtaken by a crash persisted data"
    );
    lfs.ctl(Ctl::FsyncDelay(0));
    assert_eq!(lfs.status().fsync_delay_ms, 0);
}

/// Guards against a lost write reported durable: a crash that drops a file's unsynced writes
/// makes the next fsync through every handle open on it fail, whenever that fsync reaches
/// lazyfs (here: after the crash, as an fsync called just before it may), delayed or not.
#[test]
fn a_crash_fails_the_next_fsync_of_each_handle_that_lost_writes() {
    let Some(lfs) = Mounted::start(
        "a_crash_fails_the_next_fsync_of_each_handle_that_lost_writes",
        &[],
    ) else {
        return;
    };
    let path = lfs.mount.join("data");
    let untouched = lfs.mount.join("untouched");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"a").unwrap();
    f.sync_all().unwrap();
    let reader = File::open(&path).unwrap();
    let mut other = File::create(&untouched).unwrap();
    other.write_all(b"kept").unwrap();
    other.sync_all().unwrap();

    for delay_ms in [0, 50] {
        lfs.ctl(Ctl::FsyncDelay(delay_ms));
        f.write_all_at(b"b", 1).unwrap();
        lfs.ctl(Ctl::Crash);
        let e = f.sync_all().unwrap_err();
        assert_eq!(
            errno_of(&e),
            Some(libc::EIO),
            "delay {delay_ms} ms: the fsync of a write a crash lost succeeded"
        );
        let e = reader.sync_data().unwrap_err();
        assert_eq!(
            errno_of(&e),
            Some(libc::EIO),
            "delay {delay_ms} ms: another handle open on the file was not told"
        );
        // Told once per handle; a handle opened after the crash, or on a file that lost
        // nothing, has nothing to be told.
        f.sync_all().unwrap();
        reader.sync_data().unwrap();
        File::open(&path).unwrap().sync_all().unwrap();
        other.sync_all().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"a", "delay {delay_ms} ms");
        assert_eq!(fs::read(&untouched).unwrap(), b"kept");
    }
    assert_eq!(lfs.status().fsyncs_waiting, 0);
    lfs.ctl(Ctl::FsyncDelay(0));
}
