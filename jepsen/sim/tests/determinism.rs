//! Two runs of one seed are the same run.
//!
//! Built with `--cfg tokio_unstable` (every host's Tokio runtime seeded), the whole trace of
//! the two runs, every client-visible outcome with its simulated time, must be byte-identical.
//! Without it, Tokio's own RNG still varies between runs and only the fault schedule is
//! guaranteed; that much is checked (see the crate docs for why).

use fjord_sim::{SimConfig, TOKIO_SEEDED, run_seed};

const SEED: u64 = 3;

fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i + 1, x.to_string(), y.to_string()))
        .or_else(|| {
            (a.lines().count() != b.lines().count()).then(|| {
                (
                    a.lines().count().min(b.lines().count()) + 1,
                    "(end)".into(),
                    "(end)".into(),
                )
            })
        })
}

#[test]
fn a_seed_replays_the_same_run() {
    let config = SimConfig::default();
    let a = run_seed(SEED, &config);
    let b = run_seed(SEED, &config);
    let faults = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains(" fault "))
            .map(String::from)
            .collect()
    };
    assert_eq!(faults(&a.trace), faults(&b.trace), "the fault schedule");
    let difference = first_difference(&a.trace, &b.trace);
    if TOKIO_SEEDED {
        assert_eq!(
            difference, None,
            "seed {SEED}: the two traces differ at (line, first run, second run)"
        );
    } else if let Some((line, x, y)) = difference {
        println!(
            "not seeded with --cfg tokio_unstable; the traces part at line {line}:\n  {x}\n  {y}"
        );
    }
}
