//! A lock-free latency histogram for the request path.
//!
//! The balancer records every request here with one atomic add; the metrics
//! sampler swaps the counts out once a second. Buckets are log-linear (8 per
//! power of two), so any quantile is within about 9 % of the true value from
//! 1 µs to over an hour — plenty for p50/p95/p99 decisions, with no lock and
//! no allocation per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BUCKETS: u32 = 8;
const SUB_BITS: u32 = 3;
/// Powers of two covered (1 µs .. 2^32 µs ≈ 71 min).
const POWERS: u32 = 33;
const BUCKETS: usize = (POWERS * SUB_BUCKETS) as usize;

fn bucket_of(micros: u64) -> usize {
    if micros < SUB_BUCKETS as u64 {
        return micros as usize;
    }
    let power = 63 - micros.leading_zeros(); // >= 3
    let sub = (micros >> (power - SUB_BITS)) as u32 & (SUB_BUCKETS - 1);
    let index = (power - SUB_BITS + 1) * SUB_BUCKETS + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The upper bound (µs) of a bucket, used as its representative value.
fn bucket_ceiling(index: usize) -> u64 {
    let index = index as u32;
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let power = index / SUB_BUCKETS + SUB_BITS - 1;
    let sub = (index % SUB_BUCKETS) as u64;
    let base = 1u64 << power;
    base + (sub + 1) * (base >> SUB_BITS) - 1
}

/// Counts of requests by latency bucket; shared by many threads.
pub struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicHistogram").finish_non_exhaustive()
    }
}

impl AtomicHistogram {
    pub fn record(&self, latency: Duration) {
        let micros = latency.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, leaving them in place (for cumulative totals).
    pub fn snapshot(&self) -> LatencyCounts {
        LatencyCounts { buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect() }
    }

    /// Takes the counts recorded since the last call, leaving zeros.
    pub fn take(&self) -> LatencyCounts {
        LatencyCounts { buckets: self.buckets.iter().map(|b| b.swap(0, Ordering::Relaxed)).collect() }
    }
}

/// A plain (owned) histogram: one second's worth, or several merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyCounts {
    buckets: Vec<u64>,
}

impl Default for LatencyCounts {
    fn default() -> Self {
        Self { buckets: vec![0; BUCKETS] }
    }
}

impl LatencyCounts {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn merge(&mut self, other: &LatencyCounts) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// The `q` quantile (0..=1) in milliseconds, `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_ceiling(i) as f64 / 1000.0);
            }
        }
        None
    }

    /// Folds the fine buckets into coarse ones with the given upper bounds
    /// (seconds, ascending; `+Inf` is added): returns (sum in seconds,
    /// count, per-bucket counts), as a Prometheus histogram wants them.
    /// Each fine bucket goes whole into the first bound at or above its
    /// ceiling, so a count may land one coarse bucket high, never low.
    pub fn coarse_buckets(&self, bounds_s: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
        let mut out: Vec<(f64, u64)> = bounds_s.iter().map(|b| (*b, 0)).collect();
        out.push((f64::INFINITY, 0));
        let mut sum = 0.0;
        for (i, n) in self.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
            let seconds = bucket_ceiling(i) as f64 / 1e6;
            sum += seconds * *n as f64;
            let slot = out.iter().position(|(bound, _)| seconds <= *bound).unwrap_or(out.len() - 1);
            out[slot].1 += n;
        }
        (sum, self.count(), out)
    }

    /// Mean in milliseconds (bucket ceilings), `None` when empty.
    pub fn mean_ms(&self) -> Option<f64> {
        let total = self.count();
        (total > 0).then(|| {
            let sum: f64 = self.buckets.iter().enumerate().map(|(i, n)| *n as f64 * bucket_ceiling(i) as f64).sum();
            sum / total as f64 / 1000.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for micros in [0u64, 1, 7, 8, 9, 15, 16, 100, 1_000, 12_345, 1_000_000, 60_000_000] {
            let b = bucket_of(micros);
            assert!(b >= last, "bucket order at {micros}");
            last = b;
            let ceiling = bucket_ceiling(b);
            assert!(ceiling >= micros, "{micros} µs above its bucket's ceiling {ceiling}");
            assert!(ceiling as f64 <= micros as f64 * 1.13 + 1.0, "{micros} µs in a bucket up to {ceiling}");
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = AtomicHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let counts = h.take();
        assert_eq!(counts.count(), 100);
        let p50 = counts.quantile_ms(0.5).unwrap();
        let p99 = counts.quantile_ms(0.99).unwrap();
        assert!((50.0..=56.5).contains(&p50), "p50 {p50}");
        assert!((99.0..=112.0).contains(&p99), "p99 {p99}");
        assert_eq!(h.take().count(), 0, "take resets");
        assert_eq!(LatencyCounts::default().quantile_ms(0.5), None);
    }
}
