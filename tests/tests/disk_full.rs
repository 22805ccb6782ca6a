//! A full disk is not a dead node, on a real 3-process cluster whose data directories share
//! the test's temporary filesystem:
//! - with `--min-free-disk-bytes` set to 1 GiB below the filesystem's free space, produces
//!   are accepted; a filler file (allocated, not written: `posix_fallocate`) that takes the
//!   free space 1 GiB below the threshold makes every leader refuse produces with
//!   RESOURCE_EXHAUSTED, reason DISK_FULL, and a message naming the node, the free space and
//!   the setting, in CP and AP mode; the Rust client hands it to the caller as `DiskFull`
//!   (nothing written, retry later), and a Python grpcio client (when grpcio is installed)
//!   sees the same code, reason and message;
//! - while refused, the nodes keep running and serving: metadata, fetches of what was
//!   written (CP at the leader, AP at each replica), a consumer group joining, consuming and
//!   committing its offsets;
//! - once the filler is deleted, produces are accepted again without a restart, and every
//!   acknowledged record is in the log once.
//!
//! Free space on a shared machine moves with other activity (builds writing and deleting
//! files). The margins are 1 GiB each way (the threshold starts 1 GiB below the free space;
//! the filler is sized from the free space measured just before it, to end 1 GiB below the
//! threshold), so only a swing of most of a GiB within the test's seconds could upset it;
//! the filler is allocated without writing, so it costs no I/O. The test needs 4 GiB free
//! (it leaves at least 2 GiB to others while the filler stands).
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fjord_client::{
    Client, ClientError, FetchOptions, GroupConfig, Producer, ProducerConfig, ProducerRecord,
    ReadMode,
};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{Acks, ProduceErrorReason, ProduceRequest, Record};
use fjord_tests::{Cluster, Timing, read_from_node, serial};

const GIB: u64 = 1 << 30;
/// How far below the free space at the start the threshold is.
const GAP_BYTES: u64 = GIB;
/// How far below the threshold the filler takes the free space.
const OVERSHOOT_BYTES: u64 = GIB;
/// Free space the test needs: the gap and the overshoot, and 2 GiB left to others.
const NEEDED_BYTES: u64 = 4 * GIB;
const TOPIC: &str = "disk-full";
const PARTITIONS: u32 = 2;
const GROUP: &str = "disk-full-readers";
/// Bound on every wait (elections, the next free-space sample); never a sleep.
const DEADLINE: Duration = Duration::from_secs(60);

/// Bytes an unprivileged writer can still use on the filesystem holding `dir` (what the
/// node's check reads: `statvfs`'s `f_bavail`).
#[allow(clippy::unnecessary_cast)]
fn available_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a NUL-terminated path and writable memory of the type statvfs fills.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    (st.f_bavail as u64) * (st.f_frsize as u64)
}

/// A file of allocated, unwritten bytes (`posix_fallocate`): it takes free space at once,
/// without I/O. Deleted when dropped, also when the test fails (a failed test keeps the
/// cluster's directory for its logs, which must not keep gigabytes of filler).
struct Filler(PathBuf);

impl Filler {
    fn allocate(path: PathBuf, len: u64) -> Filler {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::create(&path).unwrap();
        let filler = Filler(path);
        let len = libc::off_t::try_from(len).unwrap();
        // SAFETY: a valid open descriptor.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        assert_eq!(
            rc,
            0,
            "posix_fallocate of {len} bytes at {}: errno {rc}",
            filler.0.display()
        );
        filler
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends one record to `partition`: `Ok` with its offset, or the client's error.
async fn send(producer: &Producer, partition: u32, value: String) -> Result<u64, ClientError> {
    producer
        .send(ProducerRecord::new(value).with_partition(partition))
        .await
        .map(|m| m.offset)
}

/// Sends records to `partition` until they are refused for the disk (`refused`), or
/// accepted (not `refused`), within [`DEADLINE`]; records accepted meanwhile go into
/// `acked`. Returns the last refusal's message. (Each leader samples its disk on its own
/// schedule, so each partition is polled.)
async fn until_disk(
    producer: &Producer,
    partition: u32,
    acked: &mut [BTreeSet<String>],
    tag: &str,
    refused: bool,
) -> String {
    let end = tokio::time::Instant::now() + DEADLINE;
    let what = if refused { "refused" } else { "accepted again" };
    for n in 0..10_000 {
        let v = format!("{tag}-{partition}-{n}");
        let last = match send(producer, partition, v.clone()).await {
            Ok(_) => {
                acked[partition as usize].insert(v);
                String::new()
            }
            Err(ClientError::DiskFull(m)) => m,
            Err(e) => panic!("a produce failed otherwise than for the disk: {e}"),
        };
        if last.is_empty() != refused {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "produces were not {what} within {DEADLINE:?}"
        );
        // The next free-space sample is at most 100 ms away; this only paces the loop.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("produces were not {what} within 10,000 attempts");
}

/// The partition's records as the leader serves them (CP), following the client's routing.
async fn read_all(client: &Client, partition: u32) -> Vec<String> {
    let options = FetchOptions {
        max_wait_ms: 0,
        read: ReadMode::Cp,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut offset = 0;
    for _ in 0..1_000 {
        let r = client
            .fetch(TOPIC, partition, offset, options)
            .await
            .unwrap_or_else(|e| panic!("CP fetch of partition {partition} at {offset}: {e}"));
        if r.records.is_empty() {
            return out;
        }
        offset = r.next_offset;
        out.extend(
            r.records
                .into_iter()
                .map(|c| String::from_utf8_lossy(&c.value).into_owned()),
        );
    }
    panic!("partition {partition} did not end within 1,000 fetches");
}

/// The wire answer of a produce to `partition` at its leader, with `acks`: (code, reason,
/// message).
async fn raw_produce(cluster: &Cluster, partition: u32, acks: Acks) -> (i32, i32, String) {
    for addr in cluster.brokers() {
        let Ok(mut c) = FjordClient::connect(format!("http://{addr}")).await else {
            continue;
        };
        let req = ProduceRequest {
            topic: TOPIC.into(),
            records: vec![Record {
                value: "raw".into(),
                ..Default::default()
            }],
            partition: Some(partition),
            acks: acks as i32,
            ..Default::default()
        };
        let Ok(answer) = c.produce(req).await else {
            continue;
        };
        let result = answer.into_inner().results.into_iter().next().unwrap();
        match result.error {
            Some(e) if e.code == tonic::Code::Unavailable as i32 => continue,
            Some(e) => return (e.code, e.reason, e.message),
            None => return (0, 0, String::new()),
        }
    }
    panic!("no node answered as the leader of partition {partition}");
}

/// A Python grpcio client sees the same refusal, when grpcio is installed (the Python
/// client test, `python_client.rs`, requires it; here it is an extra).
fn python_sees_disk_full(cluster: &Cluster) {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("disk_full: python3 with grpcio not found, the Python check is skipped");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/disk_full_check.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(TOPIC)
        .args(cluster.brokers())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!(
        "disk_full: python: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A consumer group joins, reads `expected` records and commits them, while produces are
/// refused.
async fn group_consumes_and_commits(client: &Client, expected: usize) {
    let config = GroupConfig {
        auto_commit: false,
        ..GroupConfig::new(GROUP, vec![TOPIC.to_string()])
    };
    let mut member = client.group_consumer(config).unwrap();
    let mut seen = 0;
    let end = tokio::time::Instant::now() + DEADLINE;
    while seen < expected {
        assert!(
            tokio::time::Instant::now() < end,
            "the group read {seen} of {expected} records within {DEADLINE:?}"
        );
        seen += member.poll().await.expect("a group poll").len();
    }
    // What a poll handed out is committable once the next poll begins.
    assert!(member.poll().await.expect("a group poll").is_empty());
    member
        .commit()
        .await
        .expect("a group commit while produces are refused");
    // A commit is answered once the coordinator applied it: the description shows it.
    let d = client
        .describe_group(GROUP)
        .await
        .expect("describing the group");
    let held: u64 = d.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(held, expected as u64, "{d:#?}");
    assert!(
        d.partitions
            .iter()
            .all(|p| p.committed_offset == Some(p.high_watermark)),
        "the group's commits while produces are refused: {d:#?}"
    );
    member.close().await.expect("leaving the group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_low_on_space_refuses_produces_serves_reads_and_resumes() {
    let _serial = serial();
    let tmp = std::env::temp_dir();
    let free = available_bytes(&tmp);
    assert!(
        free >= NEEDED_BYTES,
        "this test needs {NEEDED_BYTES} bytes free on {}, found {free}",
        tmp.display()
    );
    let threshold = free - GAP_BYTES;
    let threshold_arg = threshold.to_string();
    let cluster = Cluster::start_with_args(
        3,
        Timing::FAST,
        &[
            "--min-free-disk-bytes",
            &threshold_arg,
            "--disk-check-interval-ms",
            "100",
        ],
    )
    .await;
    let dir = cluster.data_dir(1).parent().unwrap().to_path_buf();
    let client = cluster.client();
    client.create_topic(TOPIC, PARTITIONS, 3).await.unwrap();
    let producer = client.producer(TOPIC, ProducerConfig::default()).unwrap();

    // Room: accepted.
    let mut acked: Vec<BTreeSet<String>> = vec![BTreeSet::new(); PARTITIONS as usize];
    for i in 0..10 {
        for p in 0..PARTITIONS {
            let v = format!("before-{p}-{i}");
            send(&producer, p, v.clone())
                .await
                .unwrap_or_else(|e| panic!("a produce with room to spare: {e}"));
            acked[p as usize].insert(v);
        }
    }

    // The filler takes the free space OVERSHOOT_BYTES below the threshold.
    let now = available_bytes(&dir);
    assert!(
        now > threshold,
        "free space fell by over {GAP_BYTES} bytes since the start (other activity): {now} <= {threshold}"
    );
    let filler = Filler::allocate(dir.join("filler"), now - threshold + OVERSHOOT_BYTES);
    assert!(
        available_bytes(&dir) < threshold,
        "the filler did not lower the free space below the threshold"
    );

    // Refused, on every partition, with the code, reason and a message that says why.
    let mut refusal = String::new();
    for p in 0..PARTITIONS {
        refusal = until_disk(&producer, p, &mut acked, "racing", true).await;
    }
    eprintln!("disk_full: refused: {refusal}");
    for needle in [
        "data directory",
        "free, below --min-free-disk-bytes",
        "MiB",
        "produces are refused",
    ] {
        assert!(refusal.contains(needle), "{needle:?} not in {refusal:?}");
    }
    let err = send(&producer, 0, "refused".into()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::DiskFull(_))
            && err.is_retryable_later()
            && !err.is_outcome_unknown(),
        "{err:?}"
    );
    for (p, acks) in (0..PARTITIONS).flat_map(|p| [(p, Acks::Cp), (p, Acks::Ap)]) {
        let (code, reason, message) = raw_produce(&cluster, p, acks).await;
        assert_eq!(
            code,
            tonic::Code::ResourceExhausted as i32,
            "{acks:?}: {message}"
        );
        assert_eq!(reason, ProduceErrorReason::DiskFull as i32, "{message}");
        assert!(message.contains("--min-free-disk-bytes"), "{message}");
    }
    python_sees_disk_full(&cluster);

    // Reads, metadata and consumer groups go on.
    let md = client
        .metadata()
        .await
        .expect("metadata while produces are refused");
    assert_eq!(md.nodes.len(), 3);
    for p in 0..PARTITIONS {
        let read: BTreeSet<String> = read_all(&client, p).await.into_iter().collect();
        assert_eq!(
            read, acked[p as usize],
            "partition {p}: CP fetch while refused"
        );
        for addr in cluster.brokers() {
            let (records, _) = read_from_node(&addr, TOPIC, p, fjord_proto::v1::ReadMode::ReadAp)
                .await
                .unwrap_or_else(|e| panic!("AP fetch at {addr}: {e}"));
            let read: BTreeSet<String> = records.into_iter().map(|(_, v)| v).collect();
            // A follower may trail the leader by the last batches; it never has others.
            assert!(read.is_subset(&acked[p as usize]), "{addr} partition {p}");
        }
    }
    let written: usize = acked.iter().map(BTreeSet::len).sum();
    group_consumes_and_commits(&client, written).await;
    for p in 0..PARTITIONS {
        let (code, ..) = raw_produce(&cluster, p, Acks::Cp).await;
        assert_eq!(
            code,
            tonic::Code::ResourceExhausted as i32,
            "still refused after the reads"
        );
    }

    // Space back: accepted again, without a restart.
    drop(filler);
    for p in 0..PARTITIONS {
        until_disk(&producer, p, &mut acked, "after", false).await;
    }
    for p in 0..PARTITIONS {
        let read = read_all(&client, p).await;
        let unique: BTreeSet<String> = read.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            read.len(),
            "partition {p} holds a record twice"
        );
        assert_eq!(
            unique, acked[p as usize],
            "partition {p} after the disk emptied"
        );
    }
    for id in 1..=3 {
        assert!(
            !cluster.log_text(id).contains("fail-stop"),
            "node {id} stopped:\n{}",
            cluster.log_tail(id)
        );
    }
}
