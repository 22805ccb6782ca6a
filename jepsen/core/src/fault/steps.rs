//! The process tier's plan: steps of a few seconds with quiet gaps between them, each naming
//! its fault kinds and the seed of its own random choices, which the tier draws as it starts
//! the step (the nodes, the halves, the clock offsets, the restart delays it takes from
//! [`restart_delay`], the fsync delays from [`fsync_delay_ms`]).
//!
//! What must hold: the same seed and kinds give the same steps; steps do not overlap and end
//! `quiet_end` before the run does; a `partition-follower` step is alone; a `slow-disk` never
//! comes after the crash it leads into.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::FaultKind;

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// When the step starts, from the start of the workload.
    pub at_ms: u64,
    /// How long its faults last.
    pub duration_ms: u64,
    pub faults: Vec<FaultKind>,
    /// The seed of the step's own random choices (nodes, halves, clock offsets).
    pub seed: u64,
}

/// Decides the whole schedule: quiet gaps of 2-5 s between fault steps of 3-10 s; one
/// fault kind per step, or two (a network fault with a process or clock fault) in a quarter
/// of them. A `slow-disk` step is followed by a `crash-unsynced` or `power-loss` (when those
/// are asked for) in 60 % of them, and a crash step is preceded by a `slow-disk` in half of
/// them: `[slow-disk, crash]`, slow the leader, let produces through, crash it. A
/// `partition-follower` step is alone, as its check needs. Steps end at least `quiet_end`
/// before `total`.
pub fn plan(
    seed: u64,
    kinds: &BTreeSet<FaultKind>,
    total: Duration,
    quiet_end: Duration,
) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds: Vec<FaultKind> = kinds.iter().copied().collect();
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    let end_ms = total.saturating_sub(quiet_end).as_millis() as u64;
    let mut t = rng.gen_range(2_000..5_000);
    loop {
        let duration_ms = rng.gen_range(3_000..10_000);
        if t + duration_ms > end_ms {
            break;
        }
        let first = *kinds.choose(&mut rng).expect("kinds is not empty");
        let mut faults = vec![first];
        let crashes: Vec<FaultKind> = kinds
            .iter()
            .copied()
            .filter(|k| matches!(k, FaultKind::CrashUnsynced | FaultKind::PowerLoss))
            .collect();
        let is_crash = matches!(first, FaultKind::CrashUnsynced | FaultKind::PowerLoss);
        if first == FaultKind::PartitionFollower {
            // Alone: another fault would change leaders for reasons of its own.
        } else if first == FaultKind::SlowDisk && !crashes.is_empty() && rng.gen_bool(0.6) {
            faults.push(*crashes.choose(&mut rng).expect("crashes is not empty"));
        } else if is_crash && kinds.contains(&FaultKind::SlowDisk) && rng.gen_bool(0.5) {
            faults.insert(0, FaultKind::SlowDisk);
        } else if rng.gen_bool(0.25) && first != FaultKind::PowerLoss {
            let partners: Vec<FaultKind> = kinds
                .iter()
                .copied()
                .filter(|k| {
                    *k != FaultKind::PowerLoss
                        && *k != FaultKind::PartitionFollower
                        && ((first.is_network() && !k.is_network())
                            || (!first.is_network() && k.is_network()))
                        && !(first.is_process() && k.is_process())
                })
                .collect();
            if let Some(second) = partners.choose(&mut rng) {
                faults.push(*second);
            }
        }
        steps.push(Step {
            at_ms: t,
            duration_ms,
            faults,
            seed: rng.r#gen(),
        });
        t += duration_ms + rng.gen_range(2_000..5_000);
    }
    steps
}

/// Makes sure each of `wanted` has a step: a kind that no step has takes over, alone, the
/// first step it can take without leaving another of `wanted` with none. A plan with at
/// least as many steps as `wanted` gets them all. Steps keep their times, lengths and
/// seeds, so the plan stays a function of the seed. For runs that must exercise a fault
/// (with retention: a follower held down across a deletion, a power loss during one).
pub fn ensure(steps: &mut [Step], wanted: &[FaultKind]) {
    for &kind in wanted {
        if steps.iter().any(|s| s.faults.contains(&kind)) {
            continue;
        }
        let holding =
            |steps: &[Step], f: &FaultKind| steps.iter().filter(|s| s.faults.contains(f)).count();
        let free = (0..steps.len()).find(|&i| {
            steps[i]
                .faults
                .iter()
                .filter(|f| wanted.contains(f))
                .all(|f| holding(steps, f) > 1)
        });
        if let Some(i) = free {
            steps[i].faults = vec![kind];
        }
    }
}

/// When a node taken down comes back: `None` at the step's end (15 %), else after a delay
/// from 0 ms, below 600 ms (before a failure detector notices) for more than half of them,
/// up to 1.5 s.
pub fn restart_delay(rng: &mut StdRng) -> Option<Duration> {
    if rng.gen_bool(0.15) {
        return None;
    }
    let ms = if rng.gen_bool(0.6) {
        rng.gen_range(0..600)
    } else {
        rng.gen_range(600..=1_500)
    };
    Some(Duration::from_millis(ms))
}

/// How long a slowed disk's fsyncs answer late: tens to hundreds of ms.
pub fn fsync_delay_ms(rng: &mut StdRng) -> u64 {
    if rng.gen_bool(0.5) {
        rng.gen_range(20..100)
    } else {
        rng.gen_range(100..=500)
    }
}

/// How many steps of each fault kind the plan has, for the report: `kill×2, pause×1`.
pub fn describe_plan(steps: &[Step]) -> String {
    let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for s in steps {
        for f in &s.faults {
            *by_kind.entry(*f).or_default() += 1;
        }
    }
    by_kind
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::parse_faults;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let kinds = parse_faults("all").unwrap();
        let a = plan(7, &kinds, Duration::from_secs(120), Duration::from_secs(10));
        let b = plan(7, &kinds, Duration::from_secs(120), Duration::from_secs(10));
        let c = plan(8, &kinds, Duration::from_secs(120), Duration::from_secs(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() >= 5, "{a:?}");
    }

    #[test]
    fn steps_do_not_overlap_and_end_before_the_quiet_end() {
        let kinds = parse_faults("partition,process").unwrap();
        for seed in 0..50 {
            let steps = plan(
                seed,
                &kinds,
                Duration::from_secs(60),
                Duration::from_secs(10),
            );
            let mut t = 0;
            for s in &steps {
                assert!(s.at_ms >= t, "seed {seed}: {steps:?}");
                t = s.at_ms + s.duration_ms;
                assert!(
                    !(s.faults.len() == 2 && s.faults[0].is_process() && s.faults[1].is_process())
                );
            }
            assert!(t <= 50_000, "seed {seed}");
        }
    }

    /// Guards the fast-restart faults: a crashed leader must sometimes be back before the
    /// ~600 ms a failure detector needs, or a leader restored with a log missing an
    /// acknowledged entry is never exercised.
    #[test]
    fn restart_delays_start_at_zero_and_are_mostly_below_a_failure_detector() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Option<Duration>> = (0..2_000).map(|_| restart_delay(&mut rng)).collect();
        let some: Vec<u128> = delays.iter().flatten().map(|d| d.as_millis()).collect();
        let fast = some.iter().filter(|&&ms| ms < 600).count();
        assert!(some.iter().all(|&ms| ms <= 1_500));
        assert!(some.iter().any(|&ms| ms < 50), "no restart right away");
        assert!(
            fast * 2 > some.len(),
            "{fast} of {} below 600 ms",
            some.len()
        );
        assert!(
            delays.iter().any(Option::is_none),
            "no restart at the step's end"
        );
    }

    #[test]
    fn ensured_kinds_take_over_steps_of_their_own() {
        let kinds = parse_faults("kill,pause,follower-behind-purge,power-loss").unwrap();
        let wanted = [FaultKind::FollowerBehindPurge, FaultKind::PowerLoss];
        for seed in 0..50 {
            let plain = plan(
                seed,
                &kinds,
                Duration::from_secs(34),
                Duration::from_secs(8),
            );
            let mut steps = plain.clone();
            ensure(&mut steps, &wanted);
            if steps.len() >= wanted.len() {
                for kind in wanted {
                    assert!(
                        steps.iter().any(|s| s.faults.contains(&kind)),
                        "seed {seed}: no {kind} in {steps:?}"
                    );
                }
            }
            for (a, b) in steps.iter().zip(&plain) {
                assert_eq!(
                    (a.at_ms, a.duration_ms, a.seed),
                    (b.at_ms, b.duration_ms, b.seed)
                );
            }
        }
        // One step for two kinds: the first takes it, the second finds none to take.
        let mut one = vec![Step {
            at_ms: 2_000,
            duration_ms: 3_000,
            faults: vec![FaultKind::Kill, FaultKind::PartitionHalves],
            seed: 1,
        }];
        ensure(&mut one, &wanted);
        assert_eq!(one[0].faults, vec![FaultKind::FollowerBehindPurge]);
        ensure(&mut one, &wanted);
        assert_eq!(one[0].faults, vec![FaultKind::FollowerBehindPurge], "kept");
    }

    #[test]
    fn slow_disks_lead_into_crashes_and_follower_isolations_stay_alone() {
        let kinds = parse_faults("slow-disk,crash-unsynced,power-loss,partition").unwrap();
        let mut combined = 0;
        let mut isolations = 0;
        for seed in 0..50 {
            for s in plan(
                seed,
                &kinds,
                Duration::from_secs(300),
                Duration::from_secs(10),
            ) {
                if s.faults.contains(&FaultKind::PartitionFollower) {
                    assert_eq!(s.faults.len(), 1, "seed {seed}: {s:?}");
                    isolations += 1;
                }
                if s.faults.len() == 2
                    && s.faults[0] == FaultKind::SlowDisk
                    && matches!(s.faults[1], FaultKind::CrashUnsynced | FaultKind::PowerLoss)
                {
                    combined += 1;
                }
                if let Some(slow) = s.faults.iter().position(|k| *k == FaultKind::SlowDisk) {
                    assert!(
                        !s.faults[..slow]
                            .iter()
                            .any(|k| matches!(k, FaultKind::CrashUnsynced | FaultKind::PowerLoss)),
                        "seed {seed}: a slow disk after its crash: {s:?}"
                    );
                }
            }
        }
        assert!(combined > 20, "{combined} slow-disk-then-crash steps");
        assert!(isolations > 10, "{isolations} follower isolations");
        assert!(parse_faults("all").unwrap().contains(&FaultKind::SlowDisk));
        assert!(
            parse_faults("all")
                .unwrap()
                .contains(&FaultKind::PartitionFollower)
        );
        assert!(parse_faults("disk").unwrap().contains(&FaultKind::SlowDisk));
    }
}
