//! The simulation's plan: a schedule of single faults decided from the seed before the run
//! starts, so the same seed always brings the same faults at the same simulated times. The
//! simulation (`fjord-sim`) applies each to its turmoil hosts and simulated disks.
//!
//! Faults: cutting the links between two nodes, cutting one node off from the other nodes,
//! holding the messages between two nodes (delivered late, all at once, when healed), cutting
//! the client off from a node, healing every link, slowing a node's disk (each fsync takes
//! tens to hundreds of ms longer) and healing the disks, a power loss of a node (it stops at
//! once and its disk forgets unsynced writes) and its restart, and a power loss of every node
//! at once with the restarts in a drawn order, a lost disk (a node back on an empty one,
//! half of the time followed by its partition leader's power loss) and an old copy of a
//! node's disk put back. The schedule ends with every link and disk
//! healed and every node running, at [`Plan::heal_at`].
//!
//! A fault strikes a [`Target`]: a fixed node, or the leader (or a follower) of a partition,
//! which the driver resolves when the fault strikes from the leaders the client last saw.
//! The schedule is a pure function of the seed; which node a target turned out to be is part
//! of the run (the trace's `nemesis` lines).
//!
//! Restarts come slow (after seconds) or fast: from 0 ms, well under the failure detector's
//! silence and the election timeout, so that a crashed leader is back before anyone noticed.
//! The combinations aim at acknowledged writes a leader had not synced itself: its disk is
//! slowed, produces go through (committed by the followers' fsyncs), then the leader, or every
//! node, loses power and comes back fast.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

/// Which node a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Node(u64),
    /// The leader of a partition: of the highest term any node reported to the client.
    LeaderOf(u32),
    /// The `k`-th (0 or 1), in id order, of the nodes that do not lead the partition.
    FollowerOf(u32, u8),
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Cuts the links between two nodes, both ways.
    Partition(u64, u64),
    /// Cuts one node off from every other node (the client still reaches it).
    Isolate(Target),
    /// Holds the messages between two nodes, both ways, until the network heals.
    Hold(u64, u64),
    /// Cuts the client off from one node.
    CutClient(u64),
    /// Restores every link.
    HealNetwork,
    /// Power loss: the node stops at once; writes its disk had not synced are lost. Skipped
    /// when the target is a node already down.
    Crash(Target),
    /// Starts the node the matching crash stopped again on its disk.
    Restart(Target),
    /// Power loss of every node at once. The partition's leader and followers are resolved
    /// now: the `Restart(LeaderOf(p))`, `Restart(FollowerOf(p, k))` that follow start them.
    CrashAll(u32),
    /// Each fsync of the node's disk takes this many ms longer, until the disks heal.
    SlowDisk(Target, u64),
    /// Every disk is fast again.
    HealDisks,
    /// A lost disk: the node loses power and comes back (at its `Restart`) on an empty disk.
    /// Skipped like a crash.
    DiskLoss(Target),
    /// The first time for a node: it loses power and a copy of its disk is taken (a backup).
    /// The next time: it loses power and the copy is put back (an old backup restored). It
    /// comes back at its `Restart(Node(n))`. Skipped like a crash.
    StaleCopy(u64),
    /// Not drawn by the plan: the operator starts a node that refused its disk again with
    /// `--rebuild` (the driver does it, some time after the refusal).
    Rebuild(u64),
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
    /// When the network and the disks are whole again and every node runs.
    pub heal_at: Duration,
}

impl Plan {
    /// A schedule of `steps` (any order), ending with everything healed at `heal_at`.
    pub fn of(mut steps: Vec<Step>, heal_at: Duration) -> Plan {
        steps.extend(
            [Fault::HealNetwork, Fault::HealDisks].map(|fault| Step { at: heal_at, fault }),
        );
        // Stable: a restart due at `heal_at` comes after the crash it follows.
        steps.sort_by_key(|s| s.at);
        Plan { steps, heal_at }
    }
}

/// Shortest and longest pause between two faults, in ms.
const GAP_MS: (u64, u64) = (300, 2_500);
/// Shortest and longest time a crashed node stays down, in ms, for a slow restart.
const DOWN_MS: (u64, u64) = (300, 5_000);
/// ... and for a fast one: from nothing to well under the failure detector's silence (the
/// simulation's metadata election timeout, 1.2 s) and the groups' election timeout.
pub const FAST_DOWN_MS: (u64, u64) = (0, 500);
/// Pause between two restarts after a power loss of every node, in ms.
const RESTART_GAP_MS: (u64, u64) = (0, 250);
/// Extra time per fsync of a slowed disk, in ms.
pub const SLOW_SYNC_MS: (u64, u64) = (30, 400);
/// How long a disk stays slow when slowed on its own, in ms.
const SLOW_FOR_MS: (u64, u64) = (300, 3_000);
/// Between slowing a leader's disk and its power loss, in ms: long enough for produces to
/// be acknowledged by the followers while the leader's fsync waits.
const SLOW_BEFORE_CRASH_MS: (u64, u64) = (40, 400);

/// After a node lost its disk (or got an old copy back) and restarted, how long the plan
/// counts it as down (it refuses its disk, is started again with `--rebuild` and catches up)
/// and draws no other such fault, in ms: two nodes without their data at once could leave a
/// committed record on one node only, which no rebuild may take back.
pub const REBUILD_MS: u64 = 5_000;
/// Between a follower's restart on a wiped disk and its partition leader's power loss, in ms
/// (the path on which amnesia lost an acknowledged record).
const KILL_AFTER_WIPE_MS: (u64, u64) = (0, 200);

/// The schedule draws partitions among these (the workload's topic has at least this many).
const PARTITIONS: u32 = 3;

/// Draws a schedule of faults among `nodes` (ids 1..=nodes) between `from` and `until`.
/// At most `max_down` nodes are down at once, except during a power loss of all of them.
/// `amnesia` adds lost disks and old copies put back (without it a seed draws the schedule
/// it drew before those faults existed).
pub fn plan(
    rng: &mut impl Rng,
    nodes: u64,
    max_down: usize,
    from: Duration,
    until: Duration,
    amnesia: bool,
) -> Plan {
    let ms = |d: Duration| d.as_millis() as u64;
    let end = ms(until);
    let mut s = Schedule {
        end,
        steps: Vec::new(),
        down: BTreeMap::new(),
        amnesia_until: 0,
        copied: BTreeSet::new(),
    };
    let mut t = ms(from);
    loop {
        t += rng.gen_range(GAP_MS.0..=GAP_MS.1);
        if t >= end {
            break;
        }
        s.down.retain(|_, restart| *restart > t);
        let node = rng.gen_range(1..=nodes);
        let other = 1 + (node + rng.gen_range(0..nodes - 1)) % nodes;
        let partition = rng.gen_range(0..PARTITIONS);
        let rebuilding = usize::from(s.amnesia_until > t);
        let room = s.down.len() + rebuilding < max_down;
        let calm = s.down.is_empty() && rebuilding == 0;
        match rng.gen_range(0..if amnesia { 112 } else { 100 }) {
            0..16 => s.at(t, Fault::Partition(node.min(other), node.max(other))),
            16..28 => s.at(t, Fault::Isolate(Target::Node(node))),
            28..36 => s.at(t, Fault::Hold(node.min(other), node.max(other))),
            36..44 => s.at(t, Fault::CutClient(node)),
            44..54 => s.at(t, Fault::HealNetwork),
            54..62 => s.slow_disk(rng, t, node, partition),
            // A node's power loss, its restart slow or fast.
            62..78 if room && !s.down.contains_key(&Target::Node(node)) => {
                s.crash_node(rng, t, node)
            }
            // The leader's disk slowed, produces through, its power lost, a fast restart.
            78..90 if room && !s.down.contains_key(&Target::LeaderOf(partition)) => {
                s.crash_slowed_leader(rng, t, partition)
            }
            // The same, but every node loses power; restarts in a drawn order, small gaps.
            90..100 if calm && nodes == 3 => s.crash_all(rng, t, partition),
            100..106 if calm && nodes == 3 => s.lose_disk(rng, t, node, partition),
            // A backup of a node's disk taken, or (the next time) put back.
            106..112 if calm => s.stale_copy(rng, t, node),
            _ => continue,
        }
    }
    Plan::of(s.steps, until)
}

/// A schedule being drawn, and what it must remember to draw the next faults.
struct Schedule {
    /// When the schedule ends, in ms: no fault strikes later.
    end: u64,
    steps: Vec<Step>,
    /// Crash target → when it restarts.
    down: BTreeMap<Target, u64>,
    /// Until when a node without its data is taken as down (see REBUILD_MS).
    amnesia_until: u64,
    /// Nodes the nemesis holds a copy of the disk of.
    copied: BTreeSet<u64>,
}

impl Schedule {
    /// `fault` strikes at `t` ms (at the end, if later).
    fn at(&mut self, t: u64, fault: Fault) {
        self.steps.push(Step {
            at: Duration::from_millis(t.min(self.end)),
            fault,
        })
    }

    /// A disk slowed for a while: a partition leader's or a node's.
    fn slow_disk(&mut self, rng: &mut impl Rng, t: u64, node: u64, partition: u32) {
        let target = if rng.gen_bool(0.5) {
            Target::LeaderOf(partition)
        } else {
            Target::Node(node)
        };
        let delay = rng.gen_range(SLOW_SYNC_MS.0..=SLOW_SYNC_MS.1);
        self.at(t, Fault::SlowDisk(target, delay));
        self.at(
            t + rng.gen_range(SLOW_FOR_MS.0..=SLOW_FOR_MS.1),
            Fault::HealDisks,
        );
    }

    /// A node's power loss, its restart slow or fast.
    fn crash_node(&mut self, rng: &mut impl Rng, t: u64, node: u64) {
        let restart = (t + down_for(rng)).min(self.end);
        self.down.insert(Target::Node(node), restart);
        self.at(t, Fault::Crash(Target::Node(node)));
        self.at(restart, Fault::Restart(Target::Node(node)));
    }

    /// A partition leader's disk slowed, produces through, its power lost, a fast restart.
    fn crash_slowed_leader(&mut self, rng: &mut impl Rng, t: u64, partition: u32) {
        let target = Target::LeaderOf(partition);
        let crash = t + rng.gen_range(SLOW_BEFORE_CRASH_MS.0..=SLOW_BEFORE_CRASH_MS.1);
        let restart = (crash + rng.gen_range(FAST_DOWN_MS.0..=FAST_DOWN_MS.1)).min(self.end);
        self.down.insert(target, restart);
        self.at(
            t,
            Fault::SlowDisk(target, rng.gen_range(SLOW_SYNC_MS.0..=SLOW_SYNC_MS.1)),
        );
        self.at(crash, Fault::Crash(target));
        self.at(restart, Fault::Restart(target));
        self.at(restart, Fault::HealDisks);
    }

    /// A partition leader's disk slowed, then every node loses power; restarts in a drawn
    /// order, small gaps.
    fn crash_all(&mut self, rng: &mut impl Rng, t: u64, partition: u32) {
        let leader = Target::LeaderOf(partition);
        let crash = t + rng.gen_range(SLOW_BEFORE_CRASH_MS.0..=SLOW_BEFORE_CRASH_MS.1);
        self.at(
            t,
            Fault::SlowDisk(leader, rng.gen_range(SLOW_SYNC_MS.0..=SLOW_SYNC_MS.1)),
        );
        self.at(crash, Fault::CrashAll(partition));
        let mut order = [
            leader,
            Target::FollowerOf(partition, 0),
            Target::FollowerOf(partition, 1),
        ];
        order.shuffle(rng);
        let mut restart = crash + rng.gen_range(FAST_DOWN_MS.0..=FAST_DOWN_MS.1);
        for (i, target) in order.into_iter().enumerate() {
            if i > 0 {
                restart += rng.gen_range(RESTART_GAP_MS.0..=RESTART_GAP_MS.1);
            }
            self.down.insert(target, restart.min(self.end));
            self.at(restart, Fault::Restart(target));
        }
        self.at(restart, Fault::HealDisks);
    }

    /// A lost disk. Half of the time on a follower that restarts at once, its partition's
    /// leader losing power right after: the wiped node and the other follower (maybe behind
    /// the commit point) are the only voters up.
    fn lose_disk(&mut self, rng: &mut impl Rng, t: u64, node: u64, partition: u32) {
        if rng.gen_bool(0.5) {
            let wiped = Target::FollowerOf(partition, rng.gen_range(0..2));
            let leader = Target::LeaderOf(partition);
            let kill = t + rng.gen_range(KILL_AFTER_WIPE_MS.0..=KILL_AFTER_WIPE_MS.1);
            let back = (kill + rng.gen_range(DOWN_MS.0..=DOWN_MS.1)).min(self.end);
            self.at(t, Fault::DiskLoss(wiped));
            self.at(t, Fault::Restart(wiped));
            self.at(kill, Fault::Crash(leader));
            self.at(back, Fault::Restart(leader));
            self.down.insert(leader, back);
            self.amnesia_until = back + REBUILD_MS;
        } else {
            let target = Target::Node(node);
            let restart = (t + down_for(rng)).min(self.end);
            self.at(t, Fault::DiskLoss(target));
            self.at(restart, Fault::Restart(target));
            self.down.insert(target, restart);
            self.amnesia_until = restart + REBUILD_MS;
        }
    }

    /// A backup of a node's disk taken, or (the next time) put back.
    fn stale_copy(&mut self, rng: &mut impl Rng, t: u64, node: u64) {
        let target = Target::Node(node);
        let restart = (t + down_for(rng)).min(self.end);
        self.at(t, Fault::StaleCopy(node));
        self.at(restart, Fault::Restart(target));
        self.down.insert(target, restart);
        if !self.copied.insert(node) {
            self.copied.remove(&node);
            self.amnesia_until = restart + REBUILD_MS;
        }
    }
}

/// How long a crashed node stays down: a fast or a slow restart, half of the time each.
fn down_for(rng: &mut impl Rng) -> u64 {
    let range = if rng.gen_bool(0.5) {
        FAST_DOWN_MS
    } else {
        DOWN_MS
    };
    rng.gen_range(range.0..=range.1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

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
            true,
        )
    }

    #[test]
    fn a_seed_always_draws_the_same_plan() {
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn every_crash_is_restarted_by_the_heal_and_few_are_down_at_once() {
        let mut fast = 0;
        let mut all = 0;
        let mut leader_first = 0;
        let mut wiped = 0;
        let mut copies = 0;
        for seed in 0..200 {
            let p = draw(seed);
            assert!(p.steps.windows(2).all(|w| w[0].at <= w[1].at));
            let tail: Vec<Fault> = p.steps.iter().rev().take(2).map(|s| s.fault).collect();
            assert!(tail.contains(&Fault::HealNetwork) && tail.contains(&Fault::HealDisks));
            let mut down = BTreeSet::new();
            let mut crashed_at = BTreeMap::new();
            for s in &p.steps {
                assert!(s.at <= p.heal_at);
                let crash = match s.fault {
                    Fault::Crash(t) | Fault::DiskLoss(t) => Some(t),
                    Fault::StaleCopy(n) => Some(Target::Node(n)),
                    _ => None,
                };
                match s.fault {
                    Fault::DiskLoss(_) => wiped += 1,
                    Fault::StaleCopy(_) => copies += 1,
                    _ => {}
                }
                if let Some(t) = crash {
                    assert!(down.insert(t), "seed {seed}: {t:?} crashed twice");
                    assert!(down.len() <= 1, "seed {seed}: too many down");
                    crashed_at.insert(t, s.at);
                    continue;
                }
                match s.fault {
                    Fault::Crash(t) => {
                        assert!(down.insert(t), "seed {seed}: {t:?} crashed twice");
                        assert!(down.len() <= 1, "seed {seed}: too many down");
                        crashed_at.insert(t, s.at);
                    }
                    Fault::CrashAll(part) => {
                        assert!(
                            down.is_empty(),
                            "seed {seed}: a power loss of all while down"
                        );
                        all += 1;
                        for t in [
                            Target::LeaderOf(part),
                            Target::FollowerOf(part, 0),
                            Target::FollowerOf(part, 1),
                        ] {
                            down.insert(t);
                            crashed_at.insert(t, s.at);
                        }
                    }
                    Fault::Restart(t) => {
                        assert!(down.remove(&t), "seed {seed}: {t:?} restarted, not down");
                        if s.at - crashed_at[&t] <= Duration::from_millis(FAST_DOWN_MS.1) {
                            fast += 1;
                        }
                        if down.len() == 2 && matches!(t, Target::LeaderOf(_)) {
                            leader_first += 1;
                        }
                    }
                    Fault::Partition(a, b) | Fault::Hold(a, b) => {
                        assert!(a < b && (1..=3).contains(&a) && b <= 3)
                    }
                    Fault::SlowDisk(_, ms) => assert!(
                        (SLOW_SYNC_MS.0..=SLOW_SYNC_MS.1).contains(&ms),
                        "seed {seed}: {ms} ms"
                    ),
                    _ => {}
                }
            }
            assert!(down.is_empty(), "seed {seed}: {down:?} never restarted");
        }
        // The new faults are drawn, not merely possible.
        assert!(fast > 100, "{fast} fast restarts");
        assert!(all > 20, "{all} power losses of every node");
        assert!(leader_first > 5, "{leader_first} leaders restarted first");
        assert!(wiped > 20, "{wiped} lost disks");
        assert!(copies > 20, "{copies} copies taken or put back");
    }
}
