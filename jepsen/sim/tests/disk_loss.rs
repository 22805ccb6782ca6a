//! A node back on an empty disk, or on an old copy of its disk, must not vote or acknowledge
//! as if it remembered (issue "disk-loss").
//!
//! The schedule does both on purpose:
//! - a follower of partition 0 loses its disk and restarts at once; 100 ms later the
//!   partition's leader loses power (back 3 s later). The wiped node and the other follower,
//!   maybe behind the commit point, are then the only voters up: a wiped node that votes lets
//!   them elect a leader without the acknowledged records (on the build before the
//!   data-directory check, the seeds run here lose acknowledged writes, or the topic itself);
//! - node 2 loses power and a copy of its disk is taken; it restarts; later it loses power
//!   again and the old copy is put back.
//!
//! Each such node must refuse its disk; the driver then starts it with `--rebuild`, as an
//! operator would, and it catches up as a learner before it votes again. Every acknowledged
//! write must be read back.
//!
//! Replay one seed: `FJORD_SIM_SEED=S cargo test -p fjord-sim --test disk_loss -- --nocapture`.

use std::time::Duration;

use fjord_harness::fault::timeline::{Fault, Plan, Step, Target};
use fjord_sim::{SimConfig, Struck, run_plan};

fn step(at_ms: u64, fault: Fault) -> Step {
    Step {
        at: Duration::from_millis(at_ms),
        fault,
    }
}

fn plan(config: &SimConfig) -> Plan {
    let wiped = Target::FollowerOf(0, 0);
    let leader = Target::LeaderOf(0);
    let steps = vec![
        step(4_000, Fault::DiskLoss(wiped)),
        step(4_000, Fault::Restart(wiped)),
        step(4_100, Fault::Crash(leader)),
        step(7_100, Fault::Restart(leader)),
        step(9_000, Fault::StaleCopy(2)),
        step(9_200, Fault::Restart(Target::Node(2))),
        step(10_500, Fault::StaleCopy(2)),
        step(10_700, Fault::Restart(Target::Node(2))),
    ];
    Plan::of(steps, config.heal_at)
}

#[test]
fn a_wiped_or_restored_node_refuses_rebuilds_and_loses_nothing() {
    let config = SimConfig::default();
    let seeds: Vec<u64> = match std::env::var("FJORD_SIM_SEED") {
        Ok(s) => vec![s.trim().parse().expect("FJORD_SIM_SEED")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        let run = run_plan(seed, &config, &plan(&config));
        for a in &run.applied {
            println!("{:>6} ms {:?}: {:?}", a.at_ms, a.fault, a.struck);
        }
        println!(
            "seed {seed}: {:?} ({:.1?} simulated)",
            run.check.totals, run.simulated
        );
        for a in run.problems() {
            println!("  {a}");
        }
        assert!(
            run.check.totals.produces_ok > 0,
            "seed {seed}: nothing was acknowledged"
        );
        assert!(
            run.passed(),
            "seed {seed}: {} anomalies after a node lost its disk or got an old copy back (above)",
            run.problems().len()
        );
        // Every data loss of the schedule happened (none was held back)...
        for a in &run.applied {
            if matches!(a.fault, Fault::DiskLoss(_) | Fault::StaleCopy(_)) {
                assert!(
                    matches!(a.struck, Struck::Node(_)),
                    "seed {seed}: {:?} at {} ms was not applied ({:?})",
                    a.fault,
                    a.at_ms,
                    a.struck
                );
            }
        }
        // ... and both nodes refused their disks and were rebuilt: the wiped follower and
        // node 2 on its old copy.
        let wiped = run
            .applied
            .iter()
            .find_map(|a| match (a.fault, a.struck) {
                (Fault::DiskLoss(_), Struck::Node(n)) => Some(n),
                _ => None,
            })
            .expect("the disk loss struck a node");
        let restored_at = run
            .applied
            .iter()
            .filter(|a| a.fault == Fault::StaleCopy(2))
            .map(|a| a.at_ms)
            .max()
            .expect("the old copy was put back");
        for (node, after) in [(wiped, 0), (2, restored_at)] {
            assert!(
                run.applied
                    .iter()
                    .any(|a| a.fault == Fault::Rebuild(node) && a.at_ms > after),
                "seed {seed}: node {node} was never started with --rebuild after {after} ms: it did not refuse its disk"
            );
        }
    }
}
