//! Latency histograms: HdrHistogram (the `hdrhistogram` crate), which counts every sample in
//! buckets whose width grows with the value, so memory is bounded whatever the number of
//! samples and every percentile is known to within a fixed relative error (3 significant
//! digits: 0.1%). This wrapper adds only the exact minimum and maximum, so that a percentile
//! is reported within the recorded range, and the nearest-rank `quantile` the reports use.
//!
//! What must hold: `count` is the number of samples recorded (merged ones included); a
//! percentile lies in `[min, max]`.

/// Significant decimal digits the histogram keeps.
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Debug, Clone)]
pub struct Histogram {
    inner: hdrhistogram::Histogram<u64>,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            inner: hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS)
                .expect("3 significant digits is a valid precision"),
            min: u64::MAX,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        // The histogram resizes itself to the value; only a count overflowing u64 fails,
        // and then the count saturates.
        if self.inner.record(v).is_err() {
            self.inner.saturating_record(v);
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        self.inner
            .add(&other.inner)
            .expect("auto-resizing histograms of one precision always add");
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    pub fn max(&self) -> Option<u64> {
        (self.count() > 0).then_some(self.max)
    }

    /// The `q`-quantile (`q` in `[0, 1]`; 0.99 is p99) by the nearest-rank definition (the
    /// smallest sample with at least `q` of the samples at or below it), within 0.1%, and
    /// within the recorded range. `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count() == 0 {
            return None;
        }
        let q = if q.is_finite() {
            q.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Some(self.inner.value_at_quantile(q).clamp(self.min, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn small_values_are_exact_and_ranks_are_nearest_rank() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.quantile(0.999), Some(100));
        assert_eq!(h.quantile(1.0), Some(100));
        assert_eq!(h.quantile(0.0), Some(1), "rank at least 1");
        assert_eq!(h.max(), Some(100));
    }

    #[test]
    fn a_single_sample_is_every_percentile() {
        let mut h = Histogram::default();
        h.record(123_456_789);
        for q in [0.0, 0.5, 0.99, 0.999, 1.0] {
            assert_eq!(h.quantile(q), Some(123_456_789), "clamped to min and max");
        }
    }

    #[test]
    fn percentiles_are_within_half_a_percent_of_the_exact_ones() {
        let seed: u64 = std::env::var("HISTOGRAM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("HISTOGRAM_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..20 {
            let n = rng.gen_range(1..20_000);
            // Log-uniform latencies from 1 µs to about 100 s, as real ones spread.
            let mut samples: Vec<u64> = (0..n)
                .map(|_| 10f64.powf(rng.gen_range(0.0..8.0)) as u64)
                .collect();
            let mut h = Histogram::default();
            let (left, right) = samples.split_at(n / 2);
            let mut other = Histogram::default();
            left.iter().for_each(|v| h.record(*v));
            right.iter().for_each(|v| other.record(*v));
            h.merge(&other);
            samples.sort_unstable();
            assert_eq!(h.count(), n as u64);
            for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                let exact = samples[rank - 1] as f64;
                let got = h.quantile(q).unwrap() as f64;
                assert!(
                    (got - exact).abs() <= exact * 0.004 + 0.5,
                    "seed {seed} round {round} q {q}: {got} vs exact {exact}"
                );
            }
            assert_eq!(h.max(), samples.last().copied());
        }
    }
}
