//! The nemesis: a schedule of faults decided from the seed before the run starts, so the
//! same seed always brings the same faults at the same simulated times.
//!
//! Faults: cutting the links between two nodes, cutting one node off from the other nodes,
//! holding the messages between two nodes (delivered late, all at once, when healed), cutting
//! the client off from a node, healing every link, a power loss of a node (it stops at once
//! and its disk forgets unsynced writes) and its restart. The schedule ends with every link healed and every node running,
//! at [`Plan::heal_at`].

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Cuts the links between two nodes, both ways.
    Partition(u64, u64),
    /// Cuts one node off from every other node (the client still reaches it).
    Isolate(u64),
    /// Holds the messages between two nodes, both ways, until the network heals.
    Hold(u64, u64),
    /// Cuts the client off from one node.
    CutClient(u64),
    /// Restores every link.
    HealNetwork,
    /// Power loss: the node stops at once; writes its disk had not synced are lost.
    Crash(u64),
    /// Starts a crashed node again on its disk.
    Restart(u64),
}

/// A fault and when it strikes, in simulated time since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub fault: Fault,
}

/// The whole schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In time order.
    pub steps: Vec<Step>,
    /// When the network is whole again and every node runs.
    pub heal_at: Duration,
}

/// Shortest and longest pause between two faults, in ms.
const GAP_MS: (u64, u64) = (300, 2_500);
/// Shortest and longest time a crashed node stays down, in ms.
const DOWN_MS: (u64, u64) = (300, 5_000);

/// Draws a schedule of faults among `nodes` (ids 1..=nodes) between `from` and `until`.
/// At most `max_down` nodes are down at once.
pub fn plan(
    rng: &mut impl Rng,
    nodes: u64,
    max_down: usize,
    from: Duration,
    until: Duration,
) -> Plan {
    let ms = |d: Duration| d.as_millis() as u64;
    let mut steps = Vec::new();
    // Node → when it restarts.
    let mut down: BTreeMap<u64, u64> = BTreeMap::new();
    let mut t = ms(from);
    loop {
        t += rng.gen_range(GAP_MS.0..=GAP_MS.1);
        if t >= ms(until) {
            break;
        }
        down.retain(|_, restart| *restart > t);
        let node = rng.gen_range(1..=nodes);
        let other = 1 + (node + rng.gen_range(0..nodes - 1)) % nodes;
        let fault = match rng.gen_range(0..100) {
            0..20 => Fault::Partition(node.min(other), node.max(other)),
            20..35 => Fault::Isolate(node),
            35..45 => Fault::Hold(node.min(other), node.max(other)),
            45..55 => Fault::CutClient(node),
            55..70 => Fault::HealNetwork,
            _ if down.len() < max_down && !down.contains_key(&node) => {
                let restart = (t + rng.gen_range(DOWN_MS.0..=DOWN_MS.1)).min(ms(until));
                down.insert(node, restart);
                steps.push(Step {
                    at: Duration::from_millis(restart),
                    fault: Fault::Restart(node),
                });
                Fault::Crash(node)
            }
            _ => continue,
        };
        steps.push(Step {
            at: Duration::from_millis(t),
            fault,
        });
    }
    steps.push(Step {
        at: until,
        fault: Fault::HealNetwork,
    });
    // Stable: a restart due at `until` comes after the crash it follows.
    steps.sort_by_key(|s| s.at);
    Plan {
        steps,
        heal_at: until,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn draw(seed: u64) -> Plan {
        plan(
            &mut StdRng::seed_from_u64(seed),
            3,
            1,
            Duration::from_secs(5),
            Duration::from_secs(25),
        )
    }

    #[test]
    fn a_seed_always_draws_the_same_plan() {
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn every_crash_is_restarted_by_the_heal_and_few_are_down_at_once() {
        for seed in 0..200 {
            let p = draw(seed);
            assert!(p.steps.windows(2).all(|w| w[0].at <= w[1].at));
            assert_eq!(p.steps.last().unwrap().fault, Fault::HealNetwork);
            let mut down = std::collections::BTreeSet::new();
            for s in &p.steps {
                assert!(s.at <= p.heal_at);
                match s.fault {
                    Fault::Crash(n) => {
                        assert!(down.insert(n), "seed {seed}: node {n} crashed twice");
                        assert!(down.len() <= 1, "seed {seed}: too many down");
                    }
                    Fault::Restart(n) => assert!(down.remove(&n), "seed {seed}"),
                    Fault::Partition(a, b) | Fault::Hold(a, b) => {
                        assert!(a < b && (1..=3).contains(&a) && b <= 3)
                    }
                    _ => {}
                }
            }
            assert!(down.is_empty(), "seed {seed}: {down:?} never restarted");
        }
    }
}
