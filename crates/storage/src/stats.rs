//! What the group-commit writer measures of its commits, for the node's metrics: how long
//! each fsynced commit took and how many requests each commit folded together.
//!
//! Fixed-bucket histograms of atomics: the writer thread records with a few relaxed atomic
//! adds (no lock, no allocation); a reader (a metrics scrape) takes a [`HistogramSnapshot`]
//! whenever it likes. No dependency on any metrics crate: the server encodes the snapshots.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the commit latency buckets, in seconds: 100 µs to 2.5 s (a local SSD's
/// fsync is a few hundred µs; a stuck disk shows in the last buckets).
pub const COMMIT_SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the batch size buckets, in requests per commit (1 to
/// [`crate::writer::MAX_COMMIT_REQUESTS`]).
pub const COMMIT_REQUESTS_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram with fixed bucket bounds, recorded with atomics.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`: the last is +Inf.
    buckets: Vec<AtomicU64>,
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

/// A histogram's state at one moment, cumulative as Prometheus wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, the bounds ascending, without +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + v).to_bits())
            });
    }

    /// The histogram now. Read bucket by bucket, so a snapshot taken while the writer
    /// records may be off by the observations in flight; the count is the buckets' total, so
    /// the snapshot is consistent with itself.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            if let Some(bound) = self.bounds.get(i) {
                buckets.push((*bound, cumulative));
            }
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

/// The writer's measurements of its commits.
#[derive(Debug)]
pub struct CommitStats {
    /// Seconds each commit with an fsync (`Durability::Immediate`) took, the fsync included.
    pub fsync_seconds: AtomicHistogram,
    /// Requests (write batches) each commit folded together, fsynced or not.
    pub batch_requests: AtomicHistogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            fsync_seconds: AtomicHistogram::new(COMMIT_SECONDS_BUCKETS),
            batch_requests: AtomicHistogram::new(COMMIT_REQUESTS_BUCKETS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_add_up() {
        let h = AtomicHistogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 4.0, 9.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (2.0, 3), (4.0, 4)]);
        assert_eq!(s.count, 5);
        assert_eq!(s.sum, 16.0);
    }
}
