//! The nodes' fake wall clocks: the libfaketime specs the harness writes into a node's
//! clock file (`FAKETIME_TIMESTAMP_FILE`, read again on every clock read with
//! `FAKETIME_NO_CACHE=1`), and a model of how libfaketime reads them.
//!
//! What must hold: every spec the harness writes names its rate. libfaketime (0.9.10) keeps
//! the last rate it read until a spec names another: a spec without `x` changes the offset
//! only. Measured (a process reading its clock while its file changes): after `+0 x0.25`,
//! `+0` leaves the clock at a quarter of the real rate; `+0 x1` gives the real time back at
//! once (the rate applies to the time since the process started, so the clock jumps back to
//! it). A run whose undo wrote `+0` left a node's clock at 0.25x to its end (seed 7).

use std::collections::BTreeMap;

/// The spec of a clock that is neither moved nor skewed: no offset, the real rate.
pub const NEUTRAL: &str = "+0 x1";

/// The spec of a `clock-jump` by `secs` seconds (at the real rate).
pub fn jump(secs: i64) -> String {
    format!("{secs:+} x1")
}

/// The spec of a `clock-skew` at `rate` times the real rate (no offset).
pub fn skew(rate: f64) -> String {
    format!("+0 x{rate}")
}

/// Whether a clock file's contents are the neutral spec.
pub fn is_neutral(contents: &str) -> bool {
    contents.trim() == NEUTRAL
}

/// The nodes whose clock file does not hold the neutral spec, with what it holds (or why
/// it could not be read).
pub fn not_neutral(files: &BTreeMap<u64, Result<String, String>>) -> Vec<String> {
    files
        .iter()
        .filter_map(|(id, contents)| match contents {
            Ok(c) if is_neutral(c) => None,
            Ok(c) => Some(format!("n{id} {:?}", c.trim())),
            Err(e) => Some(format!("n{id} unreadable: {e}")),
        })
        .collect()
}

/// How a running process under libfaketime sees the specs it reads, one after another: an
/// offset each spec sets, and a rate only a spec with `x` sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeClock {
    pub offset_secs: f64,
    pub rate: f64,
}

impl Default for FakeClock {
    fn default() -> Self {
        FakeClock {
            offset_secs: 0.0,
            rate: 1.0,
        }
    }
}

impl FakeClock {
    /// The clock after reading `spec` (`[+-]SECS[ xRATE]`); a spec it cannot read changes
    /// nothing.
    pub fn read(self, spec: &str) -> FakeClock {
        let spec = spec.trim();
        let (offset, rate) = match spec.split_once('x') {
            Some((o, r)) => (o.trim(), Some(r.trim())),
            None => (spec, None),
        };
        let Ok(offset_secs) = offset.parse::<f64>() else {
            return self;
        };
        FakeClock {
            offset_secs,
            rate: rate.and_then(|r| r.parse().ok()).unwrap_or(self.rate),
        }
    }

    /// Whether the clock reads the real time.
    pub fn is_real(self) -> bool {
        self.offset_secs == 0.0 && self.rate == 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_harness::fault::{CLOCK_JUMP_MAX_SECS, CLOCK_RATES};

    fn every_fault_spec() -> Vec<String> {
        let mut specs: Vec<String> = CLOCK_RATES.iter().map(|&r| skew(r)).collect();
        for secs in [-CLOCK_JUMP_MAX_SECS, -1, 0, 306, CLOCK_JUMP_MAX_SECS] {
            specs.push(jump(secs));
        }
        specs
    }

    #[test]
    fn the_neutral_spec_undoes_every_fault_and_any_sequence_of_them() {
        for a in every_fault_spec() {
            let after = FakeClock::default().read(&a);
            assert!(FakeClock::read(after, NEUTRAL).is_real(), "{a}");
            for b in every_fault_spec() {
                let after = FakeClock::default().read(&a).read(&b).read(NEUTRAL);
                assert!(after.is_real(), "{a} then {b}");
            }
        }
    }

    #[test]
    fn a_bare_offset_leaves_a_skew_in_place() {
        // The old undo: `+0` after a skew kept the rate (as libfaketime does).
        let skewed = FakeClock::default().read(&skew(0.25)).read("+0");
        assert_eq!(skewed.rate, 0.25);
        assert!(!skewed.is_real());
    }

    #[test]
    fn a_jump_after_a_skew_runs_at_the_real_rate() {
        let c = FakeClock::default().read(&skew(4.0)).read(&jump(-30));
        assert_eq!(c.rate, 1.0);
        assert_eq!(c.offset_secs, -30.0);
    }

    #[test]
    fn the_specs_are_libfaketimes() {
        assert_eq!(skew(0.25), "+0 x0.25");
        assert_eq!(skew(4.0), "+0 x4");
        assert_eq!(jump(306), "+306 x1");
        assert_eq!(jump(-5), "-5 x1");
        assert_eq!(
            FakeClock::default().read("-5 x0.5"),
            FakeClock {
                offset_secs: -5.0,
                rate: 0.5
            }
        );
    }

    #[test]
    fn only_neutral_files_pass_the_check() {
        let files = BTreeMap::from([
            (1, Ok("+0 x1\n".to_string())),
            (2, Ok("+0\n".to_string())),
            (3, Err("no such file".to_string())),
        ]);
        assert_eq!(
            not_neutral(&files),
            vec![
                "n2 \"+0\"".to_string(),
                "n3 unreadable: no such file".to_string()
            ]
        );
    }
}
