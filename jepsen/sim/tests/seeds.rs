//! Runs many seeds of the simulation (partitions, isolations, crashes with power loss,
//! restarts) and fails if any seed finds an anomaly, printing each failing seed and the
//! command that replays it.
//!
//! - `FJORD_SIM_SEEDS=N`: how many seeds (default 50), from `FJORD_SIM_FIRST=S` (default 0).
//! - `FJORD_SIM_SEED=S`: run only seed S, and write its trace to a file (path printed).
//! - `FJORD_SIM_THREADS=T`: seeds run on T threads at once (default: 2, or 1 on one core).
//! - `FJORD_SIM_TRACE_DIR=D`: write every seed's trace to `D/seed-S.trace`.
//! - `FJORD_SIM_AMNESIA=1`: the nemesis also wipes disks and puts old copies back (nodes that
//!   refuse their disk are started again with `--rebuild`).
//!
//! Fully deterministic replays need Tokio's RNG seeded (see the crate docs):
//! `RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/sim-det cargo test -p fjord-sim`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fjord_sim::{Run, SimConfig, TOKIO_SEEDED, run_seed};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// The command that replays `seed`: byte for byte in a `tokio_unstable` build, with the same
/// faults otherwise.
fn replay_command(seed: u64) -> String {
    let build = if TOKIO_SEEDED {
        "RUSTFLAGS=\"--cfg tokio_unstable\" CARGO_TARGET_DIR=target/sim-det "
    } else {
        ""
    };
    format!("{build}FJORD_SIM_SEED={seed} cargo test -p fjord-sim --test seeds -- --nocapture")
}

fn report(run: &Run, wall: std::time::Duration) {
    println!(
        "seed {}: {} in {wall:.1?} ({:.1?} simulated): {:?}",
        run.seed,
        if run.passed() { "ok" } else { "FAILED" },
        run.simulated,
        run.check.totals
    );
    if !run.passed() {
        // One print: the seeds' threads do not interleave within it.
        let tagged: String = run
            .report()
            .lines()
            .map(|l| format!("  seed {}: {l}\n", run.seed))
            .collect();
        print!("{tagged}");
    }
}

#[test]
fn seeds() {
    let config = SimConfig {
        amnesia: std::env::var("FJORD_SIM_AMNESIA").is_ok_and(|v| v == "1"),
        ..SimConfig::default()
    };
    if !TOKIO_SEEDED {
        println!(
            "note: built without --cfg tokio_unstable: a seed fixes the faults, not every task interleaving"
        );
    }
    if let Some(seed) = env_u64("FJORD_SIM_SEED") {
        let t = Instant::now();
        let run = run_seed(seed, &config);
        report(&run, t.elapsed());
        let path = std::env::temp_dir().join(format!("fjord-sim-seed-{seed}.trace"));
        std::fs::write(&path, &run.trace).expect("writing the trace");
        println!("trace: {}", path.display());
        assert!(run.passed(), "seed {seed} failed; see above");
        return;
    }
    let first = env_u64("FJORD_SIM_FIRST").unwrap_or(0);
    let seeds: Vec<u64> = (first..first + env_u64("FJORD_SIM_SEEDS").unwrap_or(50)).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = env_u64("FJORD_SIM_THREADS").map_or(cores.min(2), |t| t.max(1) as usize);

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failed: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t = Instant::now();
                    // A panic of the simulation itself (not of a host's task) ends the seed.
                    let run = match std::panic::catch_unwind(|| run_seed(*seed, &config)) {
                        Ok(run) => run,
                        Err(_) => {
                            println!("seed {seed}: FAILED: the simulation panicked (above)");
                            failed.lock().unwrap().push(*seed);
                            continue;
                        }
                    };
                    report(&run, t.elapsed());
                    if let Some(dir) = std::env::var_os("FJORD_SIM_TRACE_DIR") {
                        let path = std::path::Path::new(&dir).join(format!("seed-{seed}.trace"));
                        std::fs::write(&path, &run.trace).expect("writing a trace");
                    }
                    if !run.passed() {
                        failed.lock().unwrap().push(*seed);
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap();
    failed.sort_unstable();
    println!(
        "{} of {} seeds passed in {:.1?} on {threads} threads",
        seeds.len() - failed.len(),
        seeds.len(),
        started.elapsed()
    );
    if !failed.is_empty() {
        let replays: Vec<String> = failed.iter().map(|s| replay_command(*s)).collect();
        let exactly = if TOKIO_SEEDED {
            ""
        } else {
            "\n(the same faults; for the same interleaving too, rerun with RUSTFLAGS=\"--cfg tokio_unstable\" CARGO_TARGET_DIR=target/sim-det)"
        };
        panic!(
            "seeds {failed:?} failed (anomalies above); replay one with:\n  {}{exactly}",
            replays.join("\n  ")
        );
    }
}
