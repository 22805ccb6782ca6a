//! The async runtime the groups run on: Tokio, with a source of randomness a simulation can
//! seed.
//!
//! openraft draws its randomized election timeouts (and the phase of its tick) from the static
//! `AsyncRuntime::thread_rng()`. Tokio's runtime answers with the OS-seeded thread RNG, so two
//! runs of a simulation with the same seed would still time their elections differently.
//! [`FjordRuntime`] is Tokio in everything but that: each call gets a fresh `SmallRng`, seeded
//! from this thread's seeded stream when a simulation installed one ([`seed_thread`]), else
//! from the OS. A node's own randomness ([`random_u64`]) comes from the same place.
//!
//! A simulation runs every node on one thread, so one stream per thread, drawn in the order
//! the nodes ask (deterministic when the schedule is), gives the same numbers in every run of
//! a seed. Outside a simulation nothing seeds it and every number comes from the OS.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::OptionalSend;
use openraft::async_runtime::AsyncRuntime;
use openraft::impls::TokioRuntime;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    /// The seeded stream of this thread, when a simulation set one.
    static SEEDED: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// Makes every random number drawn on this thread from now on follow `seed` (simulations).
pub fn seed_thread(seed: u64) {
    SEEDED.with(|s| *s.borrow_mut() = Some(SmallRng::seed_from_u64(seed)));
}

/// Goes back to OS randomness on this thread.
pub fn unseed_thread() {
    SEEDED.with(|s| *s.borrow_mut() = None);
}

/// A fresh generator: from this thread's seeded stream if there is one, else from the OS.
pub fn rng() -> SmallRng {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(seeded) => SmallRng::from_rng(seeded),
        None => SmallRng::from_rng(&mut rand::rng()),
    })
}

/// A random number for node code, following the simulation's seed when there is one.
pub fn random_u64() -> u64 {
    rng().next_u64()
}

/// Tokio, with [`rng`] as openraft's source of randomness.
#[derive(Debug)]
pub struct FjordRuntime {
    tokio: TokioRuntime,
}

impl AsyncRuntime for FjordRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rng()
    }

    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        FjordRuntime {
            tokio: TokioRuntime::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.tokio.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_repeats_its_numbers() {
        let draw = |seed| {
            seed_thread(seed);
            let v: Vec<u64> = (0..4).map(|_| random_u64()).collect();
            let t = FjordRuntime::thread_rng().next_u64();
            unseed_thread();
            (v, t)
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let (v, _) = draw(7);
        assert!(v.windows(2).all(|w| w[0] != w[1]), "the stream advances");
    }
}
