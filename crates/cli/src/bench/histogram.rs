//! A latency histogram in the manner of HdrHistogram: every sample is counted, in a fixed
//! number of buckets whose width grows with the value, so memory is bounded whatever the
//! number of samples and every percentile is known to within a fixed relative error.
//!
//! Layout: values below [`SUB_BUCKETS`] have a bucket each (exact). Above, each power of two
//! `[2^e, 2^(e+1))` is split into `SUB_BUCKETS / 2` equal buckets, so a bucket is at most
//! `1 / (SUB_BUCKETS / 2)` = 1/128 of the values in it wide; reporting its midpoint is off by
//! at most half that, under 0.4%. The whole `u64` range takes [`BUCKETS`] counters (58 KiB).
//!
//! What must hold: `total` is the sum of the counts; `min ≤ max` once a sample is recorded;
//! a percentile lies in `[min, max]`.

/// Exact buckets below this value; above, half this many per power of two.
pub const SUB_BUCKETS: u64 = 256;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
const HALF: u64 = SUB_BUCKETS / 2;
/// Buckets covering every `u64`.
pub const BUCKETS: usize = (SUB_BUCKETS + (64 - SUB_BITS as u64) * HALF) as usize;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    // v has e + 1 significant bits, e ≥ SUB_BITS; keep the top SUB_BITS of them.
    let e = 63 - v.leading_zeros();
    let shift = e + 1 - SUB_BITS;
    let sub = v >> shift; // in [HALF, SUB_BUCKETS)
    (SUB_BUCKETS + u64::from(shift - 1) * HALF + (sub - HALF)) as usize
}

/// The smallest and largest value of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_BUCKETS {
        return (i, i);
    }
    let j = i - SUB_BUCKETS;
    let shift = j / HALF + 1;
    let low = (j % HALF + HALF) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The `q`-quantile (`q` in `[0, 1]`; 0.99 is p99) by the nearest-rank definition (the
    /// smallest sample with at least `q` of the samples at or below it), as the midpoint of
    /// its bucket within the recorded range. `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_finite() {
            q.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = bounds(i);
                let mid = low + (high - low) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        unreachable!("the counts sum to the total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn buckets_tile_the_whole_range() {
        assert_eq!(bounds(0), (0, 0));
        assert_eq!(bounds(BUCKETS - 1).1, u64::MAX);
        for i in 1..BUCKETS {
            assert_eq!(
                bounds(i).0,
                bounds(i - 1).1 + 1,
                "bucket {i} follows {}",
                i - 1
            );
        }
        for v in [
            0,
            1,
            255,
            256,
            257,
            511,
            512,
            1_000_000,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let (low, high) = bounds(index(v));
            assert!(low <= v && v <= high, "{v} in [{low}, {high}]");
        }
    }

    #[test]
    fn a_bucket_is_at_most_one_128th_of_its_values_wide() {
        for i in SUB_BUCKETS as usize..BUCKETS {
            let (low, high) = bounds(i);
            assert!(
                (high - low + 1) * HALF <= low,
                "bucket {i}: [{low}, {high}]"
            );
        }
    }

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
