//! Choosing a replica for one request. Pure: the caller passes the candidates'
//! outstanding-request counts and the random numbers, so the choice is
//! reproducible in tests and in the simulator.

/// How a service spreads requests over its routable replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalanceAlgorithm {
    /// Least outstanding requests with power-of-two-choices: pick two replicas
    /// at random, send to the one with fewer requests in flight. Near-optimal
    /// spread without a global scan or lock.
    #[default]
    LeastOutstanding,
    /// Each replica in turn.
    RoundRobin,
    /// Peak-EWMA with power-of-two-choices (Finagle, Linkerd): of two random
    /// replicas, the one with the lower `cost × (in flight + 1)`, where cost
    /// is a moving average of its response times that jumps at once to a
    /// slower response ([`PeakEwma`]). A replica that turns slow loses its
    /// share within a request or two; failures count as slow.
    PeakEwma,
}

impl BalanceAlgorithm {
    pub const ALL: [BalanceAlgorithm; 3] =
        [BalanceAlgorithm::LeastOutstanding, BalanceAlgorithm::RoundRobin, BalanceAlgorithm::PeakEwma];

    pub fn as_str(self) -> &'static str {
        match self {
            BalanceAlgorithm::LeastOutstanding => "least_outstanding",
            BalanceAlgorithm::RoundRobin => "round_robin",
            BalanceAlgorithm::PeakEwma => "peak_ewma",
        }
    }
}

/// One replica's response-time estimate for [`BalanceAlgorithm::PeakEwma`].
/// Times are nanoseconds on the caller's monotonic clock (an argument: this
/// module reads no clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    /// The estimate, in nanoseconds.
    pub cost_ns: f64,
    /// When it was last updated.
    pub stamp_ns: u64,
}

impl PeakEwma {
    /// How fast the average forgets: a slow response weighs e⁻¹ after this.
    /// One second, not Linkerd's ten: one answer slowed by noise (a
    /// scheduler hiccup) makes a replica look slow until its estimate decays,
    /// and at 10 s identical replicas got shares up to 2.9× apart on a busy
    /// machine (1.02–1.16× at 1 s); a replica that stays slow is probed about
    /// every two seconds instead of every twenty, a request or two among
    /// hundreds.
    pub const DECAY_NS: f64 = 1e9;
    /// What a replica with no response yet is assumed to cost (as Linkerd's
    /// default RTT): a new replica is neither preferred nor shunned.
    pub const INITIAL_NS: f64 = 5e6;
    /// What a failure (a 5xx, a connect or read failure, a timeout) costs:
    /// a replica answering fast errors must never look fast.
    pub const FAILURE_NS: f64 = 1e9;

    pub fn new(now_ns: u64) -> PeakEwma {
        PeakEwma { cost_ns: Self::INITIAL_NS, stamp_ns: now_ns }
    }

    /// A response took `rtt_ns`: slower than the estimate, the estimate
    /// jumps to it (the peak); faster, it pulls the estimate down by how
    /// long ago the last update was.
    pub fn observe(self, rtt_ns: f64, now_ns: u64) -> PeakEwma {
        let rtt_ns = rtt_ns.max(0.0);
        if rtt_ns >= self.cost_ns {
            return PeakEwma { cost_ns: rtt_ns, stamp_ns: now_ns.max(self.stamp_ns) };
        }
        let elapsed = now_ns.saturating_sub(self.stamp_ns) as f64;
        let keep = (-elapsed / Self::DECAY_NS).exp();
        PeakEwma { cost_ns: self.cost_ns * keep + rtt_ns * (1.0 - keep), stamp_ns: now_ns.max(self.stamp_ns) }
    }

    /// A request failed: as slow as [`Self::FAILURE_NS`].
    pub fn failed(self, now_ns: u64) -> PeakEwma {
        self.observe(Self::FAILURE_NS, now_ns)
    }

    /// The estimate at `now_ns`. It decays toward zero while nothing is
    /// observed (as Linkerd's and tower's peak-EWMA do), so a replica the
    /// balancer stopped choosing (one that failed, or was slow) is tried
    /// again after a while instead of being starved for good, and its next
    /// answer sets the estimate again: a failure's cost falls to a 2 ms
    /// replica's in about 6 s (`DECAY_NS × ln(1 s / 2 ms)`).
    pub fn cost_at(self, now_ns: u64) -> f64 {
        let elapsed = now_ns.saturating_sub(self.stamp_ns) as f64;
        self.cost_ns * (-elapsed / Self::DECAY_NS).exp()
    }

    /// What choosing this replica costs at `now_ns`, with `in_flight`
    /// requests on it.
    pub fn score(self, in_flight: u64, now_ns: u64) -> f64 {
        self.cost_at(now_ns) * (in_flight as f64 + 1.0)
    }
}

/// The lowest weight slow start gives a replica that just joined.
pub const MIN_WEIGHT: f64 = 0.1;

/// Slow start: a replica in service for `in_service_ns` of a `window_ns`
/// ramp gets this share of a settled replica's (from [`MIN_WEIGHT`] to 1,
/// linearly, as Envoy's slow start with aggression 1). No window: 1.
pub fn slow_start_weight(in_service_ns: u64, window_ns: u64) -> f64 {
    if window_ns == 0 || in_service_ns >= window_ns {
        return 1.0;
    }
    (in_service_ns as f64 / window_ns as f64).max(MIN_WEIGHT)
}

/// Slow start decides after the choice: a chosen replica with `weight` < 1
/// keeps the request only with that probability (`draw` uniform over
/// `u32`), else it goes to the other candidate. So its share is `weight`
/// times a settled replica's, whatever the concurrency (scaling its load
/// score instead would give it nothing at low concurrency and a flood at
/// high).
pub fn slow_start_keeps(weight: f64, draw: u32) -> bool {
    weight >= 1.0 || (draw as f64) < weight * (u32::MAX as f64 + 1.0)
}

/// The two distinct candidates of `n > 1` that two random draws select (any
/// `u64`s): the second is drawn from the other `n - 1`, so they differ.
pub fn two_draws(n: usize, a: u64, b: u64) -> (usize, usize) {
    debug_assert!(n > 1, "two draws need two candidates");
    let i = (a % n as u64) as usize;
    let mut j = (b % (n as u64 - 1)) as usize;
    if j >= i {
        j += 1;
    }
    (i, j)
}

/// Power-of-two-choices on any ordered key (lower wins): the better of the
/// two candidates the draws select, ties to the first draw.
fn pick_two_by<T: PartialOrd>(keys: &[T], a: u64, b: u64) -> usize {
    debug_assert!(!keys.is_empty(), "pick from an empty set");
    if keys.len() == 1 {
        return 0;
    }
    let (i, j) = two_draws(keys.len(), a, b);
    if keys[j] < keys[i] {
        j
    } else {
        i
    }
}

/// Power-of-two-choices on scores (lower is better): `a` and `b` are two
/// random draws; returns the index of the better of the two candidates they
/// select, ties to the first. `scores` must not be empty.
pub fn pick_two_lowest(scores: &[f64], a: u64, b: u64) -> usize {
    pick_two_by(scores, a, b)
}

/// Power-of-two-choices: `a` and `b` are two random draws (any `u64`); returns
/// the index of the less loaded of the two candidates they select. Ties go to
/// the first draw. `outstanding` must not be empty.
pub fn pick_two_choices(outstanding: &[u64], a: u64, b: u64) -> usize {
    pick_two_by(outstanding, a, b)
}

/// Round robin: the `counter`-th request goes to replica `counter mod n`.
pub fn pick_round_robin(len: usize, counter: u64) -> usize {
    debug_assert!(len > 0, "pick from an empty set");
    (counter % len as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_choices_prefers_the_less_loaded() {
        let loads = [5, 0, 9];
        // draws select 0 and then (b % 2 = 0 -> slot 0 skipped -> 1)
        assert_eq!(pick_two_choices(&loads, 0, 0), 1);
        // draws select 2 and 0: 0 has fewer in flight
        assert_eq!(pick_two_choices(&loads, 2, 0), 0);
    }

    #[test]
    fn two_choices_never_picks_the_same_slot_twice() {
        let loads = [1, 1];
        for a in 0..10 {
            for b in 0..10 {
                let i = (a % 2) as usize;
                // equal loads: the first draw wins
                assert_eq!(pick_two_choices(&loads, a, b), i);
            }
        }
    }

    #[test]
    fn two_choices_never_picks_the_busiest_of_three_or_more() {
        let loads = [3, 7, 100, 4];
        for a in 0..50 {
            for b in 0..50 {
                assert_ne!(pick_two_choices(&loads, a, b), 2);
            }
        }
    }

    #[test]
    fn round_robin_cycles() {
        let picks: Vec<usize> = (0..6).map(|c| pick_round_robin(3, c)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
