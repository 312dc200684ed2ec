//! Which routable replica gets a request: the live side of
//! `ebb_core::balance` (round robin, least outstanding, peak-EWMA, slow
//! start). The rules and their arithmetic are the core's; here are the
//! per-replica readings they need and the clock.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ebb_core::balance::{
    pick_round_robin, pick_two_choices, pick_two_lowest, slow_start_keeps, slow_start_weight, two_draws, PeakEwma,
};
use ebb_core::config::BalanceAlgorithm;

use super::{Backend, ServiceProxy};

/// A replica's response-time estimate and when it joined the rotation.
#[derive(Debug, Default)]
pub struct Responsiveness {
    ewma: Mutex<Option<PeakEwma>>,
    joined: OnceLock<Instant>,
}

/// Nanoseconds on the balancer's monotonic clock.
fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl Responsiveness {
    /// The replica entered the routable set (the first time counts). Its
    /// estimate starts here at the initial guess and decays like any other,
    /// so a new replica is tried within seconds even when the others answer
    /// faster than the guess (`ln(guess / their estimate)` decay constants),
    /// where a guess re-made at every choice kept it out for good under
    /// light load.
    pub fn joined(&self) {
        self.joined.get_or_init(|| {
            let mut ewma = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
            ewma.get_or_insert_with(|| PeakEwma::new(now_ns()));
            Instant::now()
        });
    }

    /// It answered (a status below 500) after `rtt`.
    pub fn answered(&self, rtt: Duration) {
        self.update(|e, now| e.observe(rtt.as_nanos() as f64, now));
    }

    /// It failed a request: a 5xx, no connection, no answer in time.
    pub fn failed(&self) {
        self.update(|e, now| e.failed(now));
    }

    fn update(&self, f: impl FnOnce(PeakEwma, u64) -> PeakEwma) {
        let now = now_ns();
        let mut ewma = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        *ewma = Some(f(ewma.unwrap_or_else(|| PeakEwma::new(now)), now));
    }

    /// The cost of sending it one more request (lower is better): its
    /// estimate times its load.
    fn score(&self, in_flight: u64) -> f64 {
        let now = now_ns();
        let ewma = *self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        ewma.unwrap_or_else(|| PeakEwma::new(now)).score(in_flight, now)
    }

    /// Its share under slow start (1 once settled, or without a window).
    fn weight(&self, slow_start: Duration) -> f64 {
        match self.joined.get() {
            Some(at) => slow_start_weight(at.elapsed().as_nanos() as u64, slow_start.as_nanos() as u64),
            None => 1.0,
        }
    }
}

/// Whether responses must be timed for `proxy`'s algorithm.
pub(crate) fn times_responses(proxy: &ServiceProxy) -> bool {
    proxy.peek().balance == BalanceAlgorithm::PeakEwma
}

/// Chooses one of `n` candidates (`n > 0`); `backend(k)` is candidate `k`.
///
/// Least outstanding is power-of-two-choices: two distinct random candidates,
/// the less loaded wins. Only the two drawn counters are read; the choice is
/// exactly `ebb_core::balance::pick_two_choices` over all `n` counts (tested
/// below), without reading the other `n - 2`. Peak-EWMA and slow start
/// compare the two drawn candidates' scores instead.
pub(crate) fn choose<'a>(proxy: &ServiceProxy, n: usize, backend: impl Fn(usize) -> &'a Backend) -> usize {
    if n <= 1 {
        return 0;
    }
    let settings = proxy.peek();
    let slow_start = settings.config.slow_start;
    let in_flight = |k: usize| backend(k).in_flight.load(Ordering::Relaxed);
    let draw: u64 = rand::random();
    let (i, j) = two_draws(n, draw >> 32, draw & 0xffff_ffff);
    let chosen = match settings.balance {
        BalanceAlgorithm::RoundRobin => pick_round_robin(n, proxy.next.fetch_add(1, Ordering::Relaxed)),
        BalanceAlgorithm::LeastOutstanding => two_choices(n, draw >> 32, draw & 0xffff_ffff, in_flight),
        BalanceAlgorithm::PeakEwma => {
            let score = |k: usize| backend(k).responsiveness.score(in_flight(k));
            match pick_two_lowest(&[score(i), score(j)], 0, 0) {
                0 => i,
                _ => j,
            }
        }
    };
    if slow_start.is_zero() || slow_start_keeps(backend(chosen).responsiveness.weight(slow_start), rand::random()) {
        return chosen;
    }
    // A replica in slow start passes this one on: to the other drawn one
    // (for round robin, the next in turn).
    match settings.balance {
        BalanceAlgorithm::RoundRobin => (chosen + 1) % n,
        _ if chosen == i => j,
        _ => i,
    }
}

/// The least costly of `candidates` under the admission limit (with
/// `max_in_flight`, every candidate is looked at).
pub(crate) fn least_costly<'a>(
    proxy: &ServiceProxy,
    candidates: impl Iterator<Item = &'a Backend>,
) -> Option<&'a Backend> {
    let settings = proxy.peek();
    let slow_start = settings.config.slow_start;
    // Replicas in slow start take part with their weight's probability.
    let candidates = candidates
        .filter(|b| slow_start.is_zero() || slow_start_keeps(b.responsiveness.weight(slow_start), rand::random()));
    match settings.balance {
        BalanceAlgorithm::PeakEwma => candidates.min_by(|a, b| {
            let score = |x: &Backend| x.responsiveness.score(x.in_flight());
            score(a).total_cmp(&score(b))
        }),
        _ => candidates.min_by_key(|b| b.in_flight()),
    }
}

/// [`pick_two_choices`] reading only the two drawn counters.
fn two_choices(n: usize, a: u64, b: u64, in_flight: impl Fn(usize) -> u64) -> usize {
    let (i, j) = two_draws(n, a, b);
    // The pair, in draw order: slot 0 is `i`, slot 1 is `j`; ties to `i`.
    match pick_two_choices(&[in_flight(i), in_flight(j)], 0, 0) {
        0 => i,
        _ => j,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_choices_matches_the_core_function() {
        let loads_sets: [&[u64]; 4] = [&[0, 1], &[5, 0, 9], &[3, 7, 100, 4], &[1, 1, 1, 1, 1]];
        for loads in loads_sets {
            let n = loads.len();
            for a in 0..40u64 {
                for b in 0..40u64 {
                    assert_eq!(two_choices(n, a, b, |k| loads[k]), pick_two_choices(loads, a, b), "{loads:?} {a} {b}");
                }
            }
        }
    }

    #[test]
    fn a_new_replicas_initial_guess_decays_from_when_it_joined() {
        let new = Responsiveness::default();
        new.joined();
        let at_join = new.score(0);
        assert!(at_join <= PeakEwma::INITIAL_NS);
        std::thread::sleep(Duration::from_millis(50));
        let later = new.score(0);
        assert!(later < at_join, "the guess decays while the replica gets nothing: {at_join} -> {later}");
        // Joining again (a new routable set) does not reset it.
        new.joined();
        assert!(new.score(0) <= later);
    }

    #[test]
    fn a_replica_that_fails_fast_costs_more_than_one_that_answers_slowly() {
        let failing = Responsiveness::default();
        let slow = Responsiveness::default();
        for _ in 0..20 {
            failing.failed();
            slow.answered(Duration::from_millis(200));
        }
        assert!(failing.score(0) > slow.score(0));
    }
}
