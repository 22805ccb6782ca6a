//! A group's lifecycle on this node, as one state and its transitions: the group's openraft
//! instance runs, is being shut down to hibernate, is hibernated, is being started again, or
//! the group has stopped for good; and the timer switches quiescing wants of the instance.
//! The transitions are pure: each takes the state and an event and returns what to do (use
//! the running instance, start one, wait, shut one down, apply the switches);
//! [`crate::handle`] holds the state under one lock and performs what they return.
//!
//! Why a group hibernates, and what survives it, is in [`crate::handle`]'s `Instance`. What
//! must hold:
//! 1. **One instance at a time, and one start or stop at a time.** [`Life::Starting`] and
//!    [`Life::Hibernating`] mean someone is starting the instance or shutting it down;
//!    whoever else needs the instance, or wants to stop the group, waits for that to end
//!    ([`Need::Wait`], [`Stop::Wait`]). Two instances over the same stores would both write
//!    the vote and the log.
//! 2. **A switch turned on while no instance runs starts one.** Hibernated: at once;
//!    hibernating: as soon as the shutdown ends; starting: the start applies the switches it
//!    finds when it ends. So a wake racing a hibernation either finds the instance (and
//!    switches it) or finds none and starts one: a replica never stays hibernated with a
//!    timer its quiescing turned on.
//! 3. **Only a running, quiet replica whose log is settled hibernates**, and the check and
//!    the hand-over of the instance to its shutdown are one transition, under the lock every
//!    switch takes.
//! 4. **Stopped is final**: nothing starts the group again.

use tokio::time::Instant;

use crate::handle::Leadership;
use crate::quiesce::GroupView;

/// The group as its instance last saw it, kept while no instance runs: for the quiescing
/// decisions and the answers about leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parked {
    pub view: GroupView,
    pub leadership: Leadership,
}

/// Where a group's instance is. `R` is the instance (openraft's `Raft` handle; a plain value
/// in the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Life<R> {
    /// The instance runs, since `started_at`.
    Running { raft: R, started_at: Instant },
    /// Someone is starting an instance: whoever else needs it waits.
    Starting { parked: Parked },
    /// The instance is being shut down to hibernate; `wake`: a switch turned on meanwhile,
    /// so an instance starts as soon as the shutdown ends.
    Hibernating { parked: Parked, wake: bool },
    /// No instance: the first thing that needs one starts it.
    Hibernated { parked: Parked },
    /// The group stopped for good on this node (deleted, or the node stops).
    Stopped,
}

/// openraft's runtime switches of a group, as quiescing wants them (see
/// [`crate::quiesce::Timers`]); applied to whichever instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Switches {
    pub tick: bool,
    pub heartbeat: bool,
    pub elect: bool,
}

impl Switches {
    pub const ON: Switches = Switches {
        tick: true,
        heartbeat: true,
        elect: true,
    };
}

/// One of the [`Switches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    Tick,
    Heartbeat,
    Elect,
}

/// A group's lifecycle and the switches quiescing wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State<R> {
    life: Life<R>,
    switches: Switches,
}

/// What to do for whoever needs the instance ([`State::need`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need<R> {
    /// It runs: use it.
    Use(R),
    /// Start one (the state is [`Life::Starting`] now: the caller owns the start and must end
    /// it with [`State::started`] or [`State::start_failed`]).
    Start,
    /// Someone else starts it or shuts it down: wait for that to end, and ask again.
    Wait,
    /// The group stopped.
    Stopped,
}

/// What to do after a switch changed ([`State::switch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Switched<R> {
    /// Apply the switches to the running instance (under the lock, so that two switches
    /// apply in the order they were recorded: three atomic stores, no await).
    Apply(R, Switches),
    /// Start an instance (the state is [`Life::Starting`] now, as for [`Need::Start`]).
    Start,
    /// Nothing now: recorded for the next instance.
    Nothing,
}

/// What to do to stop the group ([`State::stop`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop<R> {
    /// Shut the instance down; the group is stopped already.
    ShutDown(R),
    /// A start or a shutdown is under way: wait for it to end, and ask again.
    Wait,
    /// Nothing runs: the group is stopped.
    Done,
}

impl<R: Clone> State<R> {
    /// A group whose first instance runs, every timer on.
    pub fn running(raft: R, now: Instant) -> Self {
        State {
            life: Life::Running {
                raft,
                started_at: now,
            },
            switches: Switches::ON,
        }
    }

    /// The running instance, if any.
    pub fn raft(&self) -> Option<&R> {
        match &self.life {
            Life::Running { raft, .. } => Some(raft),
            _ => None,
        }
    }

    /// Since when the instance runs, if it does.
    pub fn running_since(&self) -> Option<Instant> {
        match &self.life {
            Life::Running { started_at, .. } => Some(*started_at),
            _ => None,
        }
    }

    /// The group as its last instance saw it, while none runs (none once stopped).
    pub fn parked(&self) -> Option<&Parked> {
        match &self.life {
            Life::Starting { parked }
            | Life::Hibernating { parked, .. }
            | Life::Hibernated { parked } => Some(parked),
            Life::Running { .. } | Life::Stopped => None,
        }
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.life, Life::Stopped)
    }

    /// Something needs the instance (a Raft message, a proposal, a read).
    pub fn need(&mut self) -> Need<R> {
        match &self.life {
            Life::Running { raft, .. } => Need::Use(raft.clone()),
            Life::Hibernated { parked } => {
                self.life = Life::Starting {
                    parked: parked.clone(),
                };
                Need::Start
            }
            Life::Starting { .. } | Life::Hibernating { .. } => Need::Wait,
            Life::Stopped => Need::Stopped,
        }
    }

    /// The start under way ended with `raft`, which has read its state back: it runs from
    /// `now`. Returns the switches to apply to it (under the lock, as [`Switched::Apply`]);
    /// `None` if no start was under way (a bug: then `raft` must be shut down).
    pub fn started(&mut self, raft: R, now: Instant) -> Option<Switches> {
        if !matches!(self.life, Life::Starting { .. }) {
            return None;
        }
        self.life = Life::Running {
            raft,
            started_at: now,
        };
        Some(self.switches)
    }

    /// The start under way failed: the group is hibernated again, and the next need tries
    /// again.
    pub fn start_failed(&mut self) {
        if let Life::Starting { parked } = &self.life {
            self.life = Life::Hibernated {
                parked: parked.clone(),
            };
        }
    }

    /// The liveness round wants the group hibernated. It does only if its instance runs,
    /// its replica is `quiet` (read under the lock: a wake's switch takes it too), and
    /// `park` finds its log settled and returns what to keep of it. Returns the instance to
    /// shut down; the caller then ends the shutdown with [`State::hibernated`].
    pub fn hibernate(&mut self, quiet: bool, park: impl FnOnce(&R) -> Option<Parked>) -> Option<R> {
        let Life::Running { raft, .. } = &self.life else {
            return None;
        };
        if !quiet {
            return None;
        }
        let parked = park(raft)?;
        let raft = raft.clone();
        self.life = Life::Hibernating {
            parked,
            wake: false,
        };
        Some(raft)
    }

    /// The hibernating instance is shut down. Returns whether to start an instance at once
    /// (a switch turned on meanwhile; the state is [`Life::Starting`] then, as for
    /// [`Need::Start`]).
    pub fn hibernated(&mut self) -> bool {
        let Life::Hibernating { parked, wake } = &self.life else {
            return false;
        };
        let parked = parked.clone();
        let wake = *wake;
        self.life = if wake {
            Life::Starting { parked }
        } else {
            Life::Hibernated { parked }
        };
        wake
    }

    /// The group stops for good on this node.
    pub fn stop(&mut self) -> Stop<R> {
        match &self.life {
            Life::Running { raft, .. } => {
                let raft = raft.clone();
                self.life = Life::Stopped;
                Stop::ShutDown(raft)
            }
            Life::Hibernated { .. } => {
                self.life = Life::Stopped;
                Stop::Done
            }
            Life::Starting { .. } | Life::Hibernating { .. } => Stop::Wait,
            Life::Stopped => Stop::Done,
        }
    }

    /// Quiescing turns `which` on or off.
    pub fn switch(&mut self, which: Switch, on: bool) -> Switched<R> {
        match which {
            Switch::Tick => self.switches.tick = on,
            Switch::Heartbeat => self.switches.heartbeat = on,
            Switch::Elect => self.switches.elect = on,
        }
        match &mut self.life {
            Life::Running { raft, .. } => Switched::Apply(raft.clone(), self.switches),
            Life::Hibernated { parked } if on => {
                self.life = Life::Starting {
                    parked: parked.clone(),
                };
                Switched::Start
            }
            Life::Hibernating { wake, .. } if on => {
                *wake = true;
                Switched::Nothing
            }
            _ => Switched::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An instance, by number.
    type Raft = u32;

    fn parked() -> Parked {
        Parked {
            view: GroupView {
                me: 1,
                leading: true,
                leader: Some(1),
                term: 3,
                last_index: Some(7),
                committed: Some(7),
                applied: Some(7),
                ..GroupView::default()
            },
            leadership: Leadership {
                leader: Some(1),
                term: 3,
            },
        }
    }

    fn hibernated() -> State<Raft> {
        let mut s = State::running(1, Instant::now());
        assert_eq!(s.hibernate(true, |_| Some(parked())), Some(1));
        assert!(!s.hibernated());
        assert_eq!(s.life, Life::Hibernated { parked: parked() });
        s
    }

    #[test]
    fn a_running_group_is_used_and_its_switches_apply_to_it() {
        let t0 = Instant::now();
        let mut s = State::running(1, t0);
        assert_eq!(s.need(), Need::Use(1));
        assert_eq!(s.running_since(), Some(t0));
        let off = Switches {
            tick: false,
            ..Switches::ON
        };
        assert_eq!(s.switch(Switch::Tick, false), Switched::Apply(1, off));
        assert_eq!(s.raft(), Some(&1));
        assert_eq!(s.parked(), None);
    }

    #[test]
    fn a_hibernated_group_starts_on_the_first_need_and_others_wait_for_it() {
        let mut s = hibernated();
        assert_eq!(s.parked(), Some(&parked()));
        assert_eq!(s.running_since(), None);
        assert_eq!(s.need(), Need::Start);
        // One start at a time: the next need waits, and the view stays readable meanwhile.
        assert_eq!(s.need(), Need::Wait);
        assert_eq!(s.parked(), Some(&parked()));
        let t1 = Instant::now() + Duration::from_secs(1);
        assert_eq!(s.started(2, t1), Some(Switches::ON));
        assert_eq!(s.need(), Need::Use(2));
        assert_eq!(s.running_since(), Some(t1));
    }

    #[test]
    fn a_failed_start_leaves_the_group_hibernated_for_the_next_need_to_try_again() {
        let mut s = hibernated();
        assert_eq!(s.need(), Need::Start);
        s.start_failed();
        assert_eq!(s.life, Life::Hibernated { parked: parked() });
        assert_eq!(s.need(), Need::Start);
    }

    #[test]
    fn a_switch_turned_on_while_hibernated_starts_an_instance_and_off_does_not() {
        let mut s = hibernated();
        assert_eq!(s.switch(Switch::Elect, false), Switched::Nothing);
        assert_eq!(s.life, Life::Hibernated { parked: parked() });
        assert_eq!(s.switch(Switch::Tick, true), Switched::Start);
        assert!(matches!(s.life, Life::Starting { .. }));
        // The start applies what the switches are when it ends.
        let want = Switches {
            elect: false,
            ..Switches::ON
        };
        assert_eq!(s.started(2, Instant::now()), Some(want));
    }

    #[test]
    fn a_switch_during_a_start_is_applied_when_the_start_ends() {
        let mut s = hibernated();
        assert_eq!(s.need(), Need::Start);
        // Neither applied to an instance nor a second start.
        assert_eq!(s.switch(Switch::Heartbeat, false), Switched::Nothing);
        assert_eq!(s.switch(Switch::Tick, true), Switched::Nothing);
        let want = Switches {
            heartbeat: false,
            ..Switches::ON
        };
        assert_eq!(s.started(2, Instant::now()), Some(want));
    }

    #[test]
    fn a_wake_while_hibernating_starts_an_instance_once_the_shutdown_ends() {
        let mut s = State::running(1, Instant::now());
        assert_eq!(
            s.switch(Switch::Tick, false),
            Switched::Apply(
                1,
                Switches {
                    tick: false,
                    ..Switches::ON
                }
            )
        );
        assert_eq!(s.hibernate(true, |_| Some(parked())), Some(1));
        // Shutting down: whoever needs it waits, and a switch turned on is kept for later.
        assert_eq!(s.need(), Need::Wait);
        assert_eq!(s.switch(Switch::Tick, true), Switched::Nothing);
        assert!(
            s.hibernated(),
            "the wake starts an instance when the shutdown ends"
        );
        assert!(matches!(s.life, Life::Starting { .. }));
        assert_eq!(s.need(), Need::Wait);
        assert_eq!(s.started(2, Instant::now()), Some(Switches::ON));
    }

    #[test]
    fn only_a_running_quiet_group_with_a_settled_log_hibernates() {
        let mut s = State::running(1, Instant::now());
        assert_eq!(s.hibernate(false, |_| Some(parked())), None, "not quiet");
        assert_eq!(s.hibernate(true, |_| None), None, "log not settled");
        assert_eq!(s.need(), Need::Use(1));
        assert_eq!(s.hibernate(true, |r| (*r == 1).then(parked)), Some(1));
        assert_eq!(
            s.hibernate(true, |_| Some(parked())),
            None,
            "already hibernating"
        );
        assert!(!s.hibernated());
        assert_eq!(
            s.hibernate(true, |_| Some(parked())),
            None,
            "already hibernated"
        );
        assert_eq!(s.need(), Need::Start);
        assert_eq!(s.hibernate(true, |_| Some(parked())), None, "starting");
    }

    #[test]
    fn a_stopped_group_neither_hibernates_nor_starts_again() {
        let mut s = State::running(1, Instant::now());
        assert_eq!(s.stop(), Stop::ShutDown(1));
        assert!(s.is_stopped());
        assert_eq!(s.hibernate(true, |_| Some(parked())), None);
        assert!(!s.hibernated());
        assert_eq!(s.need(), Need::Stopped);
        assert_eq!(s.switch(Switch::Tick, true), Switched::Nothing);
        assert_eq!(s.stop(), Stop::Done);
        assert_eq!(s.parked(), None);

        let mut s = hibernated();
        assert_eq!(s.stop(), Stop::Done);
        assert_eq!(s.need(), Need::Stopped);
        assert_eq!(s.switch(Switch::Tick, true), Switched::Nothing);
    }

    #[test]
    fn a_stop_waits_for_a_start_or_a_shutdown_under_way() {
        let mut s = hibernated();
        assert_eq!(s.need(), Need::Start);
        assert_eq!(s.stop(), Stop::Wait, "one start or stop at a time");
        assert_eq!(s.started(2, Instant::now()), Some(Switches::ON));
        assert_eq!(s.stop(), Stop::ShutDown(2));

        let mut s = State::running(1, Instant::now());
        assert_eq!(s.hibernate(true, |_| Some(parked())), Some(1));
        assert_eq!(s.stop(), Stop::Wait);
        assert!(!s.hibernated());
        assert_eq!(s.stop(), Stop::Done);
        assert!(s.is_stopped());
    }

    #[test]
    fn an_instance_started_with_no_start_under_way_is_refused() {
        let mut s = State::running(1, Instant::now());
        assert_eq!(s.started(2, Instant::now()), None);
        assert_eq!(s.need(), Need::Use(1));
        s.stop();
        assert_eq!(s.started(2, Instant::now()), None);
        s.start_failed();
        assert!(s.is_stopped());
    }
}
