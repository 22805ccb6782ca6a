//! The short harness runs CI makes: real 3-node clusters under faults, both modes, a few fault
//! mixes. A CP run with any anomaly that breaks CP's guarantees fails the build; the AP run
//! must be consistent with AP's (weaker) guarantees, and its losses are printed. One more run
//! cuts single followers off and fails if a partition they only followed changed leader; one
//! runs the log lifecycle (retention, DeleteRecords, a follower behind the purge, a power
//! loss during a deletion); one runs compaction (keyed records, a power loss timed by a
//! compaction pass).
//!
//! Each run prints its seed; `FJORD_JEPSEN_SEED` replays one. The clusters use network
//! namespaces when the machine allows them, else the loopback fault proxy; clock faults need
//! libfaketime and disk faults need FUSE and `fjord-lazyfs`: a mix whose tools are missing is
//! skipped with a message saying why. With `FJORD_JEPSEN_REQUIRE=1` (CI sets it) nothing is
//! skipped or replaced: a missing tool fails the test, and the clusters must get namespaces.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fjord_harness::fault::{FaultKind, parse_faults};
use fjord_harness::history::{EventType, Op, parse_jsonl};
use fjord_jepsen::compaction::CompactionOptions;
use fjord_jepsen::report::cap_table;
use fjord_jepsen::run::{RetentionOptions, RunOptions, analyse, run};

/// Whether every run must run as written (`FJORD_JEPSEN_REQUIRE=1`, set by CI): no mix skipped
/// for a missing tool, no loopback proxy in place of network namespaces.
fn required() -> bool {
    std::env::var_os("FJORD_JEPSEN_REQUIRE").is_some_and(|v| v == "1")
}

/// One cluster at a time: two would fight over two cores and muddy each other's timings.
static SERIAL: Mutex<()> = Mutex::new(());

/// Seconds of each run (the follower-isolation run is shorter, see its test).
const DURATION_SECS: u64 = 34;

fn target_dir() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn fjord_bin() -> PathBuf {
    let bin = target_dir().join("fjord");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p fjord-cli`)",
        bin.display()
    );
    bin
}

fn seed() -> u64 {
    std::env::var("FJORD_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Why `faults` cannot run here, if they cannot.
fn missing_tools(faults: &std::collections::BTreeSet<FaultKind>) -> Option<String> {
    if (faults.contains(&FaultKind::ClockJump) || faults.contains(&FaultKind::ClockSkew))
        && !Path::new(fjord_jepsen::db::LIBFAKETIME).exists()
    {
        return Some(format!(
            "{} is missing (Debian package faketime)",
            fjord_jepsen::db::LIBFAKETIME
        ));
    }
    if faults.iter().any(|k| k.needs_lazy_disk()) {
        if !Path::new("/dev/fuse").exists() {
            return Some("/dev/fuse is missing".into());
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("mounting FUSE filesystems needs root".into());
        }
        if std::process::Command::new("fusermount3")
            .arg("-V")
            .output()
            .is_err()
        {
            return Some("fusermount3 is missing (Debian package fuse3)".into());
        }
    }
    None
}

fn options(
    label: &str,
    seed: u64,
    faults: &str,
    mode: &str,
    (duration_secs, retention, compaction): Lifecycle,
) -> RunOptions {
    let faults = parse_faults(faults).unwrap();
    let lazy = faults.iter().any(|k| k.needs_lazy_disk());
    let out = std::env::temp_dir().join(format!(
        "fjord-jepsen-ci-{}-{label}-{mode}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    RunOptions {
        seed,
        nodes: 3,
        partitions: 3,
        replication_factor: 3,
        duration_secs,
        faults,
        acks: mode.into(),
        read: mode.into(),
        producers: 6,
        consumers_per_partition: 1,
        fencing_writers: 1,
        group_members: fjord_harness::group::GROUP_MEMBERS,
        op_timeout_ms: 5_000,
        recovery_secs: 8,
        out_dir: out,
        fjord_bin: fjord_bin(),
        lazyfs_bin: lazy.then(|| target_dir().join("fjord-lazyfs")),
        netns_prefix: fjord_jepsen::net::unique_prefix(),
        network: if required() { "netns" } else { "auto" }.into(),
        retention,
        tls: false,
        compaction,
    }
}

/// A run's duration, and its log lifecycle: retention and compaction, each on or off.
type Lifecycle = (u64, Option<RetentionOptions>, Option<CompactionOptions>);

/// Runs `faults` in the given modes on one seed; fails on any anomaly the mode forbids.
fn mix(label: &str, faults: &str, modes: &[&str]) {
    mix_for(label, faults, modes, DURATION_SECS, |_, _| {});
}

/// [`mix`] with a duration, and `more` checking each run's output and summary further.
fn mix_for(
    label: &str,
    faults: &str,
    modes: &[&str],
    duration_secs: u64,
    more: impl Fn(&fjord_jepsen::run::RunOutput, &fjord_jepsen::report::RunSummary),
) {
    mix_with(label, faults, modes, (duration_secs, None, None), more);
}

/// [`mix_for`] with the log lifecycle on or off.
fn mix_with(
    label: &str,
    faults: &str,
    modes: &[&str],
    lifecycle: Lifecycle,
    more: impl Fn(&fjord_jepsen::run::RunOutput, &fjord_jepsen::report::RunSummary),
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    let kinds = parse_faults(faults).unwrap();
    if let Some(why) = missing_tools(&kinds) {
        assert!(!required(), "{label} ({faults}) cannot run: {why}");
        eprintln!("SKIPPED {label} ({faults}): {why}");
        return;
    }
    let mut summaries = Vec::new();
    for mode in modes {
        let options = options(label, seed, faults, mode, lifecycle);
        let dir = options.out_dir.clone();
        eprintln!(
            "{label}: seed {seed}, {mode}, faults {faults}, files in {} (replay: FJORD_JEPSEN_SEED={seed})",
            dir.display()
        );
        let out = run(options).unwrap_or_else(|e| panic!("{label} seed {seed} {mode}: {e:#}"));
        let summary = analyse(&out).unwrap();
        eprintln!("{}", summary.to_text());
        for note in &out.notes {
            eprintln!("note: {note}");
        }
        assert!(
            summary.check.totals.produces_ok > 0,
            "{label} seed {seed} {mode}: nothing was acknowledged"
        );
        assert!(
            summary.is_valid(),
            "{label} seed {seed} {mode}: anomalies break {mode}'s guarantees; files in {}",
            dir.display()
        );
        more(&out, &summary);
        if *mode == "cp" {
            assert!(
                out.unread_partitions.is_empty(),
                "{label} seed {seed}: partitions {:?} unreadable after healing",
                out.unread_partitions
            );
        }
        summaries.push(summary);
        // Keep the files of a failed run only.
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("{}", cap_table(&summaries));
}

/// TLS on (`run --tls`: the clients' CA and the nodes' own, a node certificate from each,
/// mutual TLS between the nodes, clients trusting the clients' CA), with retention: CP under partitions and process faults
/// keeps its guarantees, every partition reads back after healing, and the replica probes
/// (which dial each node directly) get every partition's bounds over TLS.
#[test]
fn cp_with_tls_under_partitions_and_process_faults() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    let faults = "partition,process";
    let retention = Some(RetentionOptions {
        retention_ms: 10_000,
        retention_bytes: Some(fjord_harness::retention::DEFAULT_RETENTION_BYTES),
        no_deleter: false,
    });
    let mut options = options("tls", seed, faults, "cp", (DURATION_SECS, retention, None));
    options.tls = true;
    let dir = options.out_dir.clone();
    eprintln!(
        "tls: seed {seed}, cp, faults {faults}, files in {} (replay: FJORD_JEPSEN_SEED={seed})",
        dir.display()
    );
    let out = run(options).unwrap_or_else(|e| panic!("tls seed {seed}: {e:#}"));
    let summary = analyse(&out).unwrap();
    eprintln!("{}", summary.to_text());
    assert!(
        summary.check.totals.produces_ok > 0,
        "tls seed {seed}: nothing was acknowledged"
    );
    assert!(
        summary.is_valid(),
        "tls seed {seed}: anomalies break CP's guarantees; files in {}",
        dir.display()
    );
    assert!(
        out.unread_partitions.is_empty(),
        "tls seed {seed}: partitions {:?} unreadable after healing",
        out.unread_partitions
    );
    let history = std::fs::read_to_string(&out.history).unwrap();
    let probed = parse_jsonl(&history)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventType::Ok)
        .filter(|e| matches!(&e.op, Op::ReplicaStarts { replicas, .. } if !replicas.is_empty()))
        .count();
    assert_eq!(
        probed,
        3,
        "tls seed {seed}: not every partition's replicas answered the probes over TLS; files in {}",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cp_and_ap_under_partitions() {
    mix("partitions", "partition", &["cp", "ap"]);
}

#[test]
fn cp_under_kills_pauses_and_clock_jumps() {
    mix_for(
        "process-clock",
        "process,clock",
        &["cp"],
        DURATION_SECS,
        |out, _| {
            // Every clock fault undone: each node's clock file back at the real time.
            assert!(
                out.notes
                    .iter()
                    .any(|n| n.starts_with("clocks: every node's clock file reads")),
                "a clock was not reset before the final reads: {:?}",
                out.notes
            );
        },
    );
}

#[test]
fn cp_under_disk_faults() {
    mix(
        "disk",
        "slow-disk,crash-unsynced,power-loss,disk-full,kill",
        &["cp"],
    );
}

/// Lost disks and restored old copies: a node on a wiped or stale directory must refuse it
/// (an amnesiac voter lost CP-acknowledged records), and come back with `--rebuild` as a
/// learner that votes again once caught up.
#[test]
fn cp_under_disk_loss_and_stale_copies() {
    mix("disk-loss", "disk-loss,stale-copy", &["cp"]);
}

/// Guards against a cut-off follower deposing a healthy leader: a follower cut off from the
/// other nodes for more than its failure detector's timeout campaigned (no pre-vote), and
/// once healed its higher term made the leaders of the partitions it only followed step down.
#[test]
fn leaders_stay_across_follower_isolations() {
    mix_for(
        "follower",
        "partition-follower",
        &["cp"],
        24,
        |out, summary| {
            let ls = summary
                .leader_stability
                .as_ref()
                .expect("a partition-follower run reports leader stability");
            assert!(
                ls.partitions_checked > 0,
                "no partition was checked across a follower isolation: {:?}",
                out.isolations
            );
            assert_eq!(
                ls.partitions_changed, 0,
                "partitions changed leader across follower isolations: {:?}",
                ls.examples
            );
        },
    );
}

/// The log lifecycle (issue log-lifecycle): a 10 s retention on the topic (and 1 MiB per
/// partition by size), DeleteRecords below
/// acknowledged offsets now and then, a follower held down across one until another replica
/// purged its log behind the new start (it must come back by installing a snapshot), and a
/// power loss while a DeleteRecords is in flight. Deleted records must be expired by policy
/// (asked for, or old enough for any clock); an acknowledged record deleted otherwise is
/// lost, which fails the run.
#[test]
fn cp_with_retention_a_follower_behind_the_purge_and_a_power_loss_during_a_deletion() {
    let retention = Some(RetentionOptions {
        retention_ms: 10_000,
        retention_bytes: Some(fjord_harness::retention::DEFAULT_RETENTION_BYTES),
        no_deleter: false,
    });
    mix_with(
        "retention",
        "follower-behind-purge,power-loss",
        &["cp"],
        // 40 s: room for two steps in every plan, so that both faults get one.
        (40, retention, None),
        |out, summary| {
            let r = &summary.check.totals.retention;
            assert!(r.deletes_ok > 0, "no DeleteRecords succeeded: {r:?}");
            assert!(
                r.expired_by_delete > 0,
                "no record was deleted by a DeleteRecords: {r:?}"
            );
            assert!(
                !out.purge_lags.is_empty(),
                "no follower was held down across a deletion: {:?}",
                out.plan
            );
            for lag in out
                .purge_lags
                .iter()
                .filter(|l| l.start.is_some() && l.purged)
            {
                assert!(
                    lag.installed_snapshot,
                    "a follower behind the purge caught up without a snapshot: {lag:?}"
                );
            }
            for w in summary.stats.windows.iter() {
                if w.window.name == "power-loss" {
                    assert!(
                        w.delete.attempted > 0,
                        "a power loss without a DeleteRecords in flight: {w:?}"
                    );
                }
            }
        },
    );
}

/// Compaction (issue log-lifecycle): the topic compacts (`min_compaction_lag_ms` 2 s), every
/// record carries one of 50 keys per partition, and a power loss strikes right after a node
/// starts a compaction pass. A record missing from the final read must be superseded by a
/// later one of its key (`compacted`); the latest record of a key gone (`compacted-latest`)
/// or an unsuperseded one never read (`lost`) fails the run.
#[test]
fn cp_with_compaction_and_a_power_loss_during_a_compaction() {
    let compaction = Some(CompactionOptions {
        min_compaction_lag_ms: fjord_harness::compaction::MIN_COMPACTION_LAG_MS,
    });
    mix_with(
        "compaction",
        "power-loss",
        &["cp"],
        (DURATION_SECS, None, compaction),
        |out, summary| {
            let c = &summary.check.totals.compaction;
            assert!(c.cleanup_policy.is_some(), "no compaction recorded: {c:?}");
            assert!(c.keyed_acked > 0, "no keyed record acknowledged: {c:?}");
            assert!(c.compacted > 0, "compaction removed nothing: {c:?}");
            let hits = out.compaction_hits.as_ref().expect("compaction hits");
            assert!(hits.power_losses > 0, "no power loss: {:?}", out.plan);
            assert!(
                hits.timed_by_a_pass > 0,
                "no power loss came right after a compaction pass started: {hits:?}"
            );
        },
    );
}
