//! Peak-EWMA and slow start, table-tested: the balancer's decisions on a
//! slow replica, a fast-failing one, and a new one.

use ebb_core::balance::{pick_two_lowest, slow_start_keeps, slow_start_weight, PeakEwma, MIN_WEIGHT};

const MS: f64 = 1e6;
const S: u64 = 1_000_000_000;

/// Chooses between two replicas many times (every draw pair over 2
/// candidates), returning how often each is picked.
fn shares(a: f64, b: f64) -> (usize, usize) {
    let mut count = (0, 0);
    for x in 0..10 {
        for y in 0..10 {
            match pick_two_lowest(&[a, b], x, y) {
                0 => count.0 += 1,
                _ => count.1 += 1,
            }
        }
    }
    count
}

#[test]
fn a_slower_response_is_the_estimate_at_once() {
    let e = PeakEwma::new(0).observe(2.0 * MS, S).observe(80.0 * MS, S + 1);
    assert_eq!(e.cost_ns, 80.0 * MS, "the peak, not an average");
}

#[test]
fn faster_responses_bring_it_down_by_elapsed_time() {
    let slow = PeakEwma::new(0).observe(100.0 * MS, 0);
    // After one decay constant, a fast response weighs 1 - e⁻¹.
    let later = slow.observe(1.0 * MS, PeakEwma::DECAY_NS as u64);
    let expected = 100.0 * MS * (-1.0f64).exp() + 1.0 * MS * (1.0 - (-1.0f64).exp());
    assert!((later.cost_ns - expected).abs() < 1.0, "{} vs {expected}", later.cost_ns);
    // Right after, a fast response barely moves it: one fast answer does
    // not clear a slow replica.
    let soon = slow.observe(1.0 * MS, 1_000_000);
    assert!(soon.cost_ns > 99.0 * MS, "{}", soon.cost_ns);
}

#[test]
fn failures_never_look_fast() {
    // A replica answering 5xx in 0.1 ms against a healthy one at 20 ms.
    let mut failing = PeakEwma::new(0);
    let mut healthy = PeakEwma::new(0);
    for n in 1..=50u64 {
        failing = failing.failed(n * 10_000_000);
        healthy = healthy.observe(20.0 * MS, n * 10_000_000);
    }
    assert!(failing.cost_ns >= PeakEwma::FAILURE_NS);
    let now = 50 * 10_000_000;
    let (to_failing, to_healthy) = shares(failing.score(0, now), healthy.score(0, now));
    assert_eq!(to_failing, 0, "the failing replica gets nothing while the other is idle");
    assert_eq!(to_healthy, 100);
}

#[test]
fn a_replica_left_alone_is_tried_again_once_its_estimate_decays() {
    // Failed at t = 0 (cost 1 s); a healthy one answers in 2 ms all along.
    let tau = PeakEwma::DECAY_NS as u64;
    let failed = PeakEwma::new(0).failed(0);
    let healthy = |t: u64| PeakEwma { cost_ns: 2.0 * MS, stamp_ns: t };
    // Three decay constants later it still costs e^-3 × 1 s ≈ 50 ms: left alone.
    assert_eq!(shares(failed.score(0, 3 * tau), healthy(3 * tau).score(0, 3 * tau)).0, 0);
    // After ln(1 s / 2 ms) ≈ 6.2 decay constants it costs less than the
    // healthy one's 2 ms: chosen, so probed (7: e^-7 × 1 s ≈ 0.9 ms).
    assert!(failed.cost_at(7 * tau) < 1.0 * MS, "{}", failed.cost_at(7 * tau));
    assert_eq!(shares(failed.score(0, 7 * tau), healthy(7 * tau).score(0, 7 * tau)).0, 100);
    // A probe that fails again puts it back at a second's cost.
    assert_eq!(failed.failed(7 * tau).cost_at(7 * tau), PeakEwma::FAILURE_NS);
    // Read at the time of its last update, an estimate is itself.
    assert_eq!(healthy(5 * S).cost_at(5 * S), 2.0 * MS);
}

#[test]
fn one_noisy_answer_is_forgotten_within_seconds() {
    // Two identical 2 ms replicas; one answer of the first took 20 ms (a
    // scheduler hiccup, not a slow replica). It loses its share at once,
    // and gets it back once the peak decays: ln(20 / 2) ≈ 2.3 decay
    // constants, seconds, not the half minute a 10 s constant would hold it.
    let tau = PeakEwma::DECAY_NS as u64;
    assert!(tau <= 2 * S, "a decay constant of {tau} ns holds a noisy replica off too long");
    let noisy = PeakEwma { cost_ns: 2.0 * MS, stamp_ns: 0 }.observe(20.0 * MS, 0);
    let steady = |t: u64| PeakEwma { cost_ns: 2.0 * MS, stamp_ns: t };
    assert_eq!(shares(noisy.score(0, tau), steady(tau).score(0, tau)).0, 0, "shunned right after");
    let later = 5 * tau / 2;
    assert_eq!(shares(noisy.score(0, later), steady(later).score(0, later)).0, 100, "tried again");
}

/// | replica | cost | in flight | score | picked over the other |
#[test]
fn score_is_cost_times_load() {
    let cases = [
        // fast and idle beats slow and idle
        (5.0, 0, 50.0, 0, true),
        // fast but 20 in flight loses to slow and idle (5 × 21 > 50 × 1)
        (5.0, 20, 50.0, 0, false),
        // equal cost: fewer in flight wins (least outstanding)
        (10.0, 1, 10.0, 3, true),
    ];
    for (cost_a, flight_a, cost_b, flight_b, a_wins) in cases {
        let a = PeakEwma { cost_ns: cost_a * MS, stamp_ns: 0 }.score(flight_a, 0);
        let b = PeakEwma { cost_ns: cost_b * MS, stamp_ns: 0 }.score(flight_b, 0);
        assert_eq!(a < b, a_wins, "{cost_a} ms × {flight_a} vs {cost_b} ms × {flight_b}");
    }
}

#[test]
fn a_new_replica_is_neither_preferred_nor_shunned() {
    let new = PeakEwma::new(0);
    assert_eq!(new.cost_ns, PeakEwma::INITIAL_NS);
    // Against a warm one at the same speed it gets its half.
    let warm = PeakEwma { cost_ns: PeakEwma::INITIAL_NS, stamp_ns: 0 };
    assert_eq!(shares(new.score(0, 0), warm.score(0, 0)).0, 50);
}

#[test]
fn slow_start_ramps_a_new_replica_from_a_tenth_to_all() {
    let window = 10 * S;
    let table = [(0, MIN_WEIGHT), (S / 2, MIN_WEIGHT), (S, 0.1), (5 * S, 0.5), (10 * S, 1.0), (60 * S, 1.0)];
    for (age, weight) in table {
        assert!(
            (slow_start_weight(age, window) - weight).abs() < 1e-9,
            "{age} ns in: {}",
            slow_start_weight(age, window)
        );
    }
    assert_eq!(slow_start_weight(0, 0), 1.0, "no window: full share at once");
}

#[test]
fn slow_start_keeps_a_weights_share_of_its_choices() {
    // Over evenly spread draws, a weight keeps that share.
    for weight in [MIN_WEIGHT, 0.25, 0.5, 0.9] {
        let kept = (0..1000u64).filter(|n| slow_start_keeps(weight, (n * (u32::MAX as u64 / 1000)) as u32)).count();
        assert!((kept as f64 / 1000.0 - weight).abs() < 0.01, "{weight}: {kept}");
    }
    assert!(slow_start_keeps(1.0, u32::MAX), "settled: always");
}
