//! A follower cut off for a while must not depose healthy leaders when it comes back.
//!
//! One node, a follower of partition 0, is cut off from the other nodes for 1 to 3 s (drawn
//! from the seed), then the network heals. Every partition it only followed when it was cut
//! off must keep its leader and term to the end of the run: pre-vote, and the quiet
//! replicas' refusal of premature campaigns, are there so that a node that was away cannot
//! start an election the others would lose their leader to.
//!
//! Regression (bug B): the cut-off follower's detector suspected its leader and it campaigned
//! with a transfer-style vote (no pre-vote); on healing, the healthy leader saw the higher
//! term and stepped down. It failed on that code; a follower now campaigns only when a
//! majority of the group's voters suspect the leader. `FJORD_SIM_SEEDS=N` seeds from
//! `FJORD_SIM_FIRST=S`, default 3 from 0.

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_harness::fault::timeline::{Fault, Plan, Step, Target};
use fjord_harness::stability::{LeaderStability, PartitionLeader, Watch};
use fjord_sim::{SimConfig, Struck, run_plan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// When the follower is cut off, in ms: leaders are settled and the writers busy.
const ISOLATE_AT_MS: u64 = 5_000;
/// How long it stays cut off, in ms.
const ISOLATED_MS: (u64, u64) = (1_000, 3_000);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}")))
}

/// What went wrong with `seed`, if anything.
fn check_seed(seed: u64, config: &SimConfig) -> Vec<String> {
    let isolated_ms = StdRng::seed_from_u64(seed).gen_range(ISOLATED_MS.0..=ISOLATED_MS.1);
    let steps = vec![
        Step {
            at: Duration::from_millis(ISOLATE_AT_MS),
            fault: Fault::Isolate(Target::FollowerOf(0, 0)),
        },
        Step {
            at: Duration::from_millis(ISOLATE_AT_MS + isolated_ms),
            fault: Fault::HealNetwork,
        },
    ];
    let run = run_plan(seed, config, &Plan::of(steps, config.heal_at));
    let mut problems: Vec<String> = run.problems();
    let Some((at_ms, node)) = run.applied.iter().find_map(|a| match a.struck {
        Struck::Node(n) if matches!(a.fault, Fault::Isolate(_)) => Some((a.at_ms, n)),
        _ => None,
    }) else {
        problems.push("the isolation was not applied".into());
        return problems;
    };
    // Each partition's leader when the follower was cut off.
    let mut before = BTreeMap::new();
    for seen in run.leaders.iter().filter(|l| l.at_ms <= at_ms) {
        before.insert(seen.partition, seen);
    }
    println!(
        "seed {seed}: node{node} cut off at {at_ms} ms for {isolated_ms} ms; leaders then: {:?}",
        before
            .values()
            .map(|l| (l.partition, l.leader, l.term))
            .collect::<Vec<_>>()
    );
    // The partitions it only followed, judged as the process tier judges its
    // `partition-follower` faults.
    let leader = |l: &fjord_sim::history::LeaderSeen| PartitionLeader {
        partition: l.partition,
        leader: Some(l.leader),
        epoch: l.term,
    };
    let mut watch = Watch::new(
        before
            .values()
            .filter(|was| was.leader != node)
            .map(|was| leader(was))
            .collect(),
    );
    for now in run.leaders.iter().filter(|l| l.at_ms > at_ms) {
        watch.observe(leader(now));
    }
    let check = watch.into_check(node, isolated_ms, None);
    problems.extend(LeaderStability::from_checks(&[check]).examples);
    if before.len() < 3 {
        problems.push(format!("leaders of only {} partitions seen", before.len()));
    }
    problems
}

#[test]
fn a_returning_follower_leaves_healthy_leaders_alone() {
    let config = SimConfig::default();
    let first = env_u64("FJORD_SIM_FIRST").unwrap_or(0);
    let mut failed = Vec::new();
    for seed in first..first + env_u64("FJORD_SIM_SEEDS").unwrap_or(3) {
        let problems = check_seed(seed, &config);
        for p in &problems {
            println!("  seed {seed}: {p}");
        }
        if !problems.is_empty() {
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "seeds {failed:?} failed (above)");
}
