//! A group's lifecycle on this node, as one state and its transitions: the group's openraft
//! instance runs, is being shut down to hibernate, is hibernated, is being started again, waits
//! to be started again after a failed start, or the group has stopped for good; and the timer
//! switches quiescing wants of the instance. The transitions are pure: each takes the state
//! and an event and returns what to do (use the running instance, start one, wait, shut one
//! down, apply the switches, try a start again later); [`crate::handle`] holds the state under
//! one lock and performs what they return.
//!
//! Why a group hibernates, and what survives it, is in [`crate::handle`]'s `Instance`. What
//! must hold:
//! 1. **One instance at a time, and one start or stop at a time.** [`Life::Starting`] and
//!    [`Life::Hibernating`] mean someone is starting the instance or shutting it down;
//!    whoever else needs the instance, or wants to stop the group, waits for that to end
//!    ([`Need::Wait`], [`Stop::Wait`]). Two instances over the same stores would both write
//!    the vote and the log.
//! 2. **A switch turned on while no instance runs starts one.** Hibernated: at once;
//!    hibernating: as soon as the shutdown ends (unless the group stops meanwhile); starting:
//!    the start applies the switches it finds when it ends. A start that fails while the tick
//!    is on (the switch every openraft timeout hangs on: an awake replica) is tried again
//!    after a backoff ([`Life::Backoff`], [`start_backoff`]: doubling, at most
//!    [`START_RETRY_MAX`]), again and again until one succeeds, the tick is turned off or the
//!    group stops; whoever needs the instance meanwhile starts it at once. So a wake racing a
//!    hibernation either finds the instance (and switches it) or finds none and starts one,
//!    and a replica is never left hibernated with its tick on and nothing to start it.
//! 3. **Only a running, quiet replica whose log is settled hibernates**, and the check and
//!    the hand-over of the instance to its shutdown are one transition, under the lock every
//!    switch takes.
//! 4. **Stopped is final**: nothing starts the group again. A stop that finds the instance
//!    being shut down to hibernate waits for the shutdown and cancels a wake: nothing starts
//!    an instance only to shut it down.
//!
//! [`State::validate`] checks the facts one state can show, after each transition, in debug
//! builds.

use std::time::Duration;

use tokio::time::Instant;

use crate::handle::Leadership;
use crate::quiesce::GroupView;

/// How long the first retry of a failed start waits; each failure in a row doubles it.
pub(crate) const START_RETRY_FIRST: Duration = Duration::from_millis(200);
/// How long a retry of a failed start waits, at most.
pub(crate) const START_RETRY_MAX: Duration = Duration::from_secs(10);

/// How long to wait before trying a start again after `failed_in_a_row` starts failed
/// (at least one): [`START_RETRY_FIRST`], doubling with each failure, at most
/// [`START_RETRY_MAX`].
pub(crate) fn start_backoff(failed_in_a_row: u32) -> Duration {
    let doublings = failed_in_a_row.saturating_sub(1).min(16);
    START_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(START_RETRY_MAX)
}

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
    /// The instance is being shut down to hibernate; `then`: what follows the shutdown.
    Hibernating { parked: Parked, then: AfterShutdown },
    /// No instance: the first thing that needs one starts it.
    Hibernated { parked: Parked },
    /// No instance: a start failed while the tick is on, and the retry numbered `retry`
    /// starts one after a backoff ([`State::retry`]); the first thing that needs one before
    /// that starts it.
    Backoff { parked: Parked, retry: u64 },
    /// The group stopped for good on this node (deleted, or the node stops).
    Stopped,
}

/// What follows a hibernation's shutdown ([`State::hibernated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterShutdown {
    /// The group stays hibernated.
    Rest,
    /// A switch turned on meanwhile: an instance starts at once.
    Wake,
    /// The group stopped meanwhile (its stop waits for the shutdown): it is stopped.
    Stop,
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

    /// Whether the instance acts on its own: every openraft timeout (a leader's heartbeat, a
    /// follower's election) hangs on the tick, so a replica with its tick off does nothing
    /// until a message or a proposal comes.
    pub fn timers_run(&self) -> bool {
        self.tick
    }
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
    /// Starts that failed since an instance last started.
    failed_in_a_row: u32,
    /// Retries of failed starts scheduled so far: numbers each, so that a retry whose turn
    /// passed (the group started, or failed again and scheduled another) does nothing.
    retries: u64,
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

/// What to do after a start failed ([`State::start_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The tick is on: after `after`, try again with [`State::retry`]`(retry)`.
    Retry { after: Duration, retry: u64 },
    /// The group is hibernated: the next need or switch turned on starts an instance.
    Rest,
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
            failed_in_a_row: 0,
            retries: 0,
        }
    }

    /// Checks, in debug builds, what must hold of any state (see the module doc).
    fn validate(&self) {
        debug_assert!(
            !matches!(self.life, Life::Backoff { .. }) || self.switches.timers_run(),
            "a group backs off a failed start only while its tick is on"
        );
        debug_assert!(
            !matches!(self.life, Life::Backoff { retry, .. } if retry != self.retries),
            "a backing-off group waits for the last retry scheduled"
        );
        debug_assert!(
            !matches!(self.life, Life::Running { .. }) || self.failed_in_a_row == 0,
            "a running group has no failed start in a row"
        );
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
            | Life::Hibernated { parked }
            | Life::Backoff { parked, .. } => Some(parked),
            Life::Running { .. } | Life::Stopped => None,
        }
    }

    /// The switches quiescing wants now: a start applies them to its instance as soon as it
    /// has one, before the instance has read its state back (openraft starts one with every
    /// timer on), and again when the start ends ([`State::started`]).
    pub fn switches(&self) -> Switches {
        self.switches
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.life, Life::Stopped)
    }

    /// Something needs the instance (a Raft message, a proposal, a read).
    pub fn need(&mut self) -> Need<R> {
        let need = match &self.life {
            Life::Running { raft, .. } => Need::Use(raft.clone()),
            Life::Hibernated { parked } | Life::Backoff { parked, .. } => {
                self.life = Life::Starting {
                    parked: parked.clone(),
                };
                Need::Start
            }
            Life::Starting { .. } | Life::Hibernating { .. } => Need::Wait,
            Life::Stopped => Need::Stopped,
        };
        self.validate();
        need
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
        self.failed_in_a_row = 0;
        self.validate();
        Some(self.switches)
    }

    /// The start under way failed (it erred, panicked, or never ran). With the tick on, an
    /// awake replica must not stay without an instance: the group backs off, and a retry
    /// starts one later ([`Failed::Retry`]). Otherwise it is hibernated again, and the next
    /// need or switch turned on tries again.
    pub fn start_failed(&mut self) -> Failed {
        let Life::Starting { parked } = &self.life else {
            return Failed::Rest;
        };
        let parked = parked.clone();
        self.failed_in_a_row = self.failed_in_a_row.saturating_add(1);
        let failed = if self.switches.timers_run() {
            self.retries += 1;
            self.life = Life::Backoff {
                parked,
                retry: self.retries,
            };
            Failed::Retry {
                after: start_backoff(self.failed_in_a_row),
                retry: self.retries,
            }
        } else {
            self.life = Life::Hibernated { parked };
            Failed::Rest
        };
        self.validate();
        failed
    }

    /// The backoff of the retry numbered `retry` ended. Returns whether to start an instance
    /// (the state is [`Life::Starting`] then, as for [`Need::Start`]): only if the group
    /// still backs off for this retry; a need started it meanwhile, the tick was turned
    /// off, or the group stopped, and then there is nothing to do.
    pub fn retry(&mut self, retry: u64) -> bool {
        let Life::Backoff { parked, retry: r } = &self.life else {
            return false;
        };
        if *r != retry {
            return false;
        }
        self.life = Life::Starting {
            parked: parked.clone(),
        };
        self.validate();
        true
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
            then: AfterShutdown::Rest,
        };
        self.validate();
        Some(raft)
    }

    /// The hibernating instance is shut down. Returns whether to start an instance at once
    /// (a switch turned on meanwhile; the state is [`Life::Starting`] then, as for
    /// [`Need::Start`]). A group stopped meanwhile is stopped now.
    pub fn hibernated(&mut self) -> bool {
        let Life::Hibernating { parked, then } = &self.life else {
            return false;
        };
        let parked = parked.clone();
        let then = *then;
        self.life = match then {
            AfterShutdown::Rest => Life::Hibernated { parked },
            AfterShutdown::Wake => Life::Starting { parked },
            AfterShutdown::Stop => Life::Stopped,
        };
        self.validate();
        then == AfterShutdown::Wake
    }

    /// The group stops for good on this node.
    pub fn stop(&mut self) -> Stop<R> {
        let stop = match &mut self.life {
            Life::Running { raft, .. } => {
                let raft = raft.clone();
                self.life = Life::Stopped;
                Stop::ShutDown(raft)
            }
            Life::Hibernated { .. } | Life::Backoff { .. } => {
                self.life = Life::Stopped;
                Stop::Done
            }
            Life::Hibernating { then, .. } => {
                // The shutdown ends in Stopped: a wake recorded meanwhile starts nothing.
                *then = AfterShutdown::Stop;
                Stop::Wait
            }
            Life::Starting { .. } => Stop::Wait,
            Life::Stopped => Stop::Done,
        };
        self.validate();
        stop
    }

    /// Quiescing turns `which` on or off.
    pub fn switch(&mut self, which: Switch, on: bool) -> Switched<R> {
        match which {
            Switch::Tick => self.switches.tick = on,
            Switch::Heartbeat => self.switches.heartbeat = on,
            Switch::Elect => self.switches.elect = on,
        }
        let switched = match &mut self.life {
            Life::Running { raft, .. } => Switched::Apply(raft.clone(), self.switches),
            Life::Hibernated { parked } if on => {
                self.life = Life::Starting {
                    parked: parked.clone(),
                };
                Switched::Start
            }
            Life::Hibernating { then, .. } if on && *then == AfterShutdown::Rest => {
                *then = AfterShutdown::Wake;
                Switched::Nothing
            }
            // The tick turned off: the replica no longer needs an instance; the pending
            // retry finds the group hibernated and does nothing. A switch turned on while
            // backing off waits for the retry: it would start what just failed.
            Life::Backoff { parked, .. } if !self.switches.timers_run() => {
                self.life = Life::Hibernated {
                    parked: parked.clone(),
                };
                Switched::Nothing
            }
            _ => Switched::Nothing,
        };
        self.validate();
        switched
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
        // A quiet replica: its tick is off, so nothing wants an instance until a need.
        assert_eq!(s.switch(Switch::Tick, false), Switched::Nothing);
        assert_eq!(s.need(), Need::Start);
        assert_eq!(s.start_failed(), Failed::Rest);
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

    /// A hibernated group with its tick off (a quiet replica), and a start under way.
    fn starting_quiet() -> State<Raft> {
        let mut s = hibernated();
        assert_eq!(s.switch(Switch::Tick, false), Switched::Nothing);
        assert_eq!(s.need(), Need::Start);
        s
    }

    /// Regression: a wake (the tick turned on) during a start that then failed left the group
    /// hibernated with its tick on, and nothing started it again: liveness saw an awake
    /// replica whose timers did not run.
    #[test]
    fn a_start_failing_with_the_tick_on_is_tried_again_after_a_backoff() {
        let mut s = starting_quiet();
        assert_eq!(s.switch(Switch::Tick, true), Switched::Nothing);
        assert_eq!(
            s.start_failed(),
            Failed::Retry {
                after: START_RETRY_FIRST,
                retry: 1
            }
        );
        assert!(matches!(s.life, Life::Backoff { .. }));
        assert_eq!(s.parked(), Some(&parked()));
        assert_eq!(s.hibernate(true, |_| Some(parked())), None);
        // A switch turned on meanwhile waits for the retry: it would start what just failed.
        assert_eq!(s.switch(Switch::Elect, true), Switched::Nothing);
        assert!(s.retry(1), "the backoff ended: start again");
        assert!(matches!(s.life, Life::Starting { .. }));
        // Failing again backs off twice as long, under a new number.
        assert_eq!(
            s.start_failed(),
            Failed::Retry {
                after: 2 * START_RETRY_FIRST,
                retry: 2
            }
        );
        assert!(!s.retry(1), "a retry whose turn passed does nothing");
        assert!(s.retry(2));
        assert_eq!(s.started(2, Instant::now()), Some(Switches::ON));
        assert_eq!(
            s.failed_in_a_row, 0,
            "a start that succeeds ends the streak"
        );
    }

    #[test]
    fn a_wake_while_hibernating_then_a_failed_start_backs_off() {
        let mut s = State::running(1, Instant::now());
        s.switch(Switch::Tick, false);
        assert_eq!(s.hibernate(true, |_| Some(parked())), Some(1));
        assert_eq!(s.switch(Switch::Tick, true), Switched::Nothing);
        assert!(s.hibernated());
        assert!(matches!(s.start_failed(), Failed::Retry { retry: 1, .. }));
        assert!(s.retry(1));
    }

    #[test]
    fn a_need_during_a_backoff_starts_at_once_and_the_retry_then_does_nothing() {
        let mut s = starting_quiet();
        s.switch(Switch::Tick, true);
        assert!(matches!(s.start_failed(), Failed::Retry { retry: 1, .. }));
        assert_eq!(s.need(), Need::Start);
        assert!(!s.retry(1), "starting already");
        assert_eq!(s.need(), Need::Wait);
        assert_eq!(s.started(2, Instant::now()), Some(Switches::ON));
        assert!(!s.retry(1), "running");
        assert_eq!(s.need(), Need::Use(2));
    }

    #[test]
    fn the_tick_turned_off_or_a_stop_ends_a_backoff() {
        let mut s = starting_quiet();
        s.switch(Switch::Tick, true);
        assert!(matches!(s.start_failed(), Failed::Retry { retry: 1, .. }));
        // Another switch off is not enough: the tick still wants timers.
        assert_eq!(s.switch(Switch::Heartbeat, false), Switched::Nothing);
        assert!(matches!(s.life, Life::Backoff { .. }));
        assert_eq!(s.switch(Switch::Tick, false), Switched::Nothing);
        assert_eq!(s.life, Life::Hibernated { parked: parked() });
        assert!(!s.retry(1), "no instance is wanted any more");
        assert_eq!(s.life, Life::Hibernated { parked: parked() });

        let mut s = starting_quiet();
        s.switch(Switch::Tick, true);
        assert!(matches!(s.start_failed(), Failed::Retry { retry: 1, .. }));
        assert_eq!(s.stop(), Stop::Done);
        assert!(s.is_stopped());
        assert!(!s.retry(1), "stopped is final");
        assert_eq!(s.need(), Need::Stopped);
    }

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        assert_eq!(start_backoff(1), START_RETRY_FIRST);
        assert_eq!(start_backoff(2), 2 * START_RETRY_FIRST);
        assert_eq!(start_backoff(3), 4 * START_RETRY_FIRST);
        let mut last = Duration::ZERO;
        for n in 1..200 {
            let b = start_backoff(n);
            assert!(b >= last && b <= START_RETRY_MAX, "{n}: {b:?}");
            last = b;
        }
        assert_eq!(start_backoff(u32::MAX), START_RETRY_MAX);
    }

    #[test]
    fn a_start_reads_the_switches_to_apply_before_its_instance_restored() {
        let mut s = starting_quiet();
        let quiet = Switches {
            tick: false,
            ..Switches::ON
        };
        assert_eq!(
            s.switches(),
            quiet,
            "a quiet replica's new instance must not tick"
        );
        // A switch turned during the start is read again when it ends.
        s.switch(Switch::Elect, false);
        assert_eq!(
            s.started(2, Instant::now()),
            Some(Switches {
                elect: false,
                ..quiet
            })
        );
    }

    /// A stop during a hibernation's shutdown that a wake would follow used to wait for the
    /// shutdown, then for a whole start, and then shut the new instance down: a vote or a
    /// log write on a group being deleted.
    #[test]
    fn a_stop_during_a_hibernation_cancels_its_wake() {
        let mut s = State::running(1, Instant::now());
        s.switch(Switch::Tick, false);
        assert_eq!(s.hibernate(true, |_| Some(parked())), Some(1));
        assert_eq!(s.switch(Switch::Tick, true), Switched::Nothing);
        assert_eq!(s.stop(), Stop::Wait, "the shutdown is still under way");
        assert_eq!(s.switch(Switch::Elect, true), Switched::Nothing);
        assert_eq!(s.need(), Need::Wait);
        assert!(!s.hibernated(), "no start after the shutdown");
        assert!(s.is_stopped());
        assert_eq!(s.stop(), Stop::Done);
        assert_eq!(s.need(), Need::Stopped);
    }
}
