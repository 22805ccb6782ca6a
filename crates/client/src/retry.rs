//! The retry decision, kept pure so it can be tested without a network or a clock.
//!
//! What must hold: an operation is attempted at most `1 + max_retries` times; a fatal error
//! is never retried; following a leader hint is immediate (no metadata round trip, no
//! sleep), but only [`MAX_IMMEDIATE_HINT_FOLLOWS`] times in a row so two nodes that point at
//! each other during an election cannot spin; every other retry waits an exponentially
//! growing, jittered, capped backoff.

use std::time::Duration;

use crate::config::ClientConfig;
use crate::error::ClientError;

/// Leader hints followed back to back before the client backs off anyway.
pub(crate) const MAX_IMMEDIATE_HINT_FOLLOWS: u32 = 3;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryDecision {
    /// Try again at once (at the hinted leader).
    Now,
    /// Try again after this backoff (refreshing metadata first where it matters).
    After(Duration),
    /// Return the error to the caller.
    GiveUp,
}

/// The backoff before retry number `backoff_index` (0-based): the ceiling
/// `min(max_ms, initial_ms * 2^backoff_index)`, jittered into `[ceiling / 2, ceiling]` by
/// `jitter` in `[0, 1]`. Half the ceiling is kept fixed so that retries always slow down;
/// the random half spreads clients that failed together.
pub(crate) fn backoff_delay(
    backoff_index: u32,
    initial_ms: u64,
    max_ms: u64,
    jitter: f64,
) -> Duration {
    let factor = 1u64.checked_shl(backoff_index).unwrap_or(u64::MAX);
    let ceiling = initial_ms.saturating_mul(factor).min(max_ms);
    let floor = ceiling / 2;
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let extra = ((ceiling - floor) as f64 * jitter) as u64;
    Duration::from_millis(floor + extra.min(ceiling - floor))
}

/// The retry state of one operation.
#[derive(Debug, Clone)]
pub(crate) struct RetryState {
    max_retries: u32,
    backoff_ms_initial: u64,
    backoff_ms_max: u64,
    retries: u32,
    backoffs: u32,
    hint_streak: u32,
}

impl RetryState {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        RetryState {
            max_retries: config.max_retries,
            backoff_ms_initial: config.retry_backoff_ms_initial,
            backoff_ms_max: config.retry_backoff_ms_max,
            retries: 0,
            backoffs: 0,
            hint_streak: 0,
        }
    }

    /// Retries decided so far.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// Decides after `err`. `can_follow_hint`: the error named a leader whose address the
    /// caller knows. `jitter` is a uniform sample in `[0, 1]`.
    pub(crate) fn decide(
        &mut self,
        err: &ClientError,
        can_follow_hint: bool,
        jitter: f64,
    ) -> RetryDecision {
        if !err.is_retryable() || self.retries >= self.max_retries {
            return RetryDecision::GiveUp;
        }
        self.retries += 1;
        if can_follow_hint && self.hint_streak < MAX_IMMEDIATE_HINT_FOLLOWS {
            self.hint_streak += 1;
            return RetryDecision::Now;
        }
        self.hint_streak = 0;
        let delay = backoff_delay(
            self.backoffs,
            self.backoff_ms_initial,
            self.backoff_ms_max,
            jitter,
        );
        self.backoffs = self.backoffs.saturating_add(1);
        RetryDecision::After(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> ClientError {
        ClientError::Unavailable {
            message: "no leader".into(),
            leader: None,
        }
    }

    fn config(max_retries: u32) -> ClientConfig {
        ClientConfig {
            max_retries,
            retry_backoff_ms_initial: 100,
            retry_backoff_ms_max: 1_000,
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stays_in_bounds() {
        for n in 0..70u32 {
            let ceiling =
                (100u64.saturating_mul(1u64.checked_shl(n).unwrap_or(u64::MAX))).min(1_000);
            for j in [0.0, 0.25, 0.5, 0.999, 1.0] {
                let d = backoff_delay(n, 100, 1_000, j).as_millis() as u64;
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "n={n} j={j} d={d} ceiling={ceiling}"
                );
            }
        }
        assert_eq!(
            backoff_delay(0, 100, 1_000, 1.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff_delay(1, 100, 1_000, 1.0),
            Duration::from_millis(200)
        );
        assert_eq!(
            backoff_delay(40, 100, 1_000, 1.0),
            Duration::from_millis(1_000)
        );
        assert_eq!(
            backoff_delay(40, 100, 1_000, 0.0),
            Duration::from_millis(500)
        );
        // A broken random source never escapes the bounds.
        assert_eq!(
            backoff_delay(0, 100, 1_000, f64::NAN),
            Duration::from_millis(50)
        );
        assert_eq!(
            backoff_delay(0, 100, 1_000, 7.0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn fatal_errors_are_never_retried() {
        let mut r = RetryState::new(&config(5));
        for e in [
            ClientError::NotFound("t".into()),
            ClientError::InvalidArgument("x".into()),
            ClientError::OutOfOrderSequence("s".into()),
            ClientError::Corrupt("crc".into()),
        ] {
            assert_eq!(r.decide(&e, true, 0.5), RetryDecision::GiveUp);
        }
        assert_eq!(r.retries(), 0);
    }

    #[test]
    fn retries_are_bounded() {
        let mut r = RetryState::new(&config(3));
        let mut decisions = Vec::new();
        for _ in 0..10 {
            decisions.push(r.decide(&unavailable(), false, 1.0));
        }
        assert_eq!(
            decisions[..4],
            [
                RetryDecision::After(Duration::from_millis(100)),
                RetryDecision::After(Duration::from_millis(200)),
                RetryDecision::After(Duration::from_millis(400)),
                RetryDecision::GiveUp,
            ]
        );
        assert!(decisions[4..].iter().all(|d| *d == RetryDecision::GiveUp));
        assert_eq!(r.retries(), 3);
    }

    #[test]
    fn hints_are_followed_at_once_but_not_forever() {
        let mut r = RetryState::new(&config(20));
        let e = unavailable();
        for _ in 0..MAX_IMMEDIATE_HINT_FOLLOWS {
            assert_eq!(r.decide(&e, true, 1.0), RetryDecision::Now);
        }
        // Nodes pointing at each other: back off once, then hints are trusted again.
        assert_eq!(
            r.decide(&e, true, 1.0),
            RetryDecision::After(Duration::from_millis(100))
        );
        assert_eq!(r.decide(&e, true, 1.0), RetryDecision::Now);
        // Immediate retries still count against max_retries.
        assert_eq!(r.retries(), MAX_IMMEDIATE_HINT_FOLLOWS + 2);
    }

    #[test]
    fn zero_retries_means_one_attempt() {
        let mut r = RetryState::new(&config(0));
        assert_eq!(r.decide(&unavailable(), true, 0.5), RetryDecision::GiveUp);
    }
}
