//! Elasticity scores: how closely a run's supply followed the demand, on
//! the SPEC Research Group's scale (Herbst et al., "Ready for Rain? A View
//! from SPEC Research on the Future of Cloud Metrics", 2016; the formulas
//! as Ilyushkin et al., "An Experimental Performance Evaluation of
//! Autoscaling Policies for Complex Workflows", ICPE 2017, define them).
//!
//! - **Demand** `d_t`: the fewest replicas that would have met the SLO in
//!   second `t` under the [queueing model](super::queue): no backlog, no
//!   request shed, and the SLO percentile at or under its threshold, for
//!   that second's offered rate. It depends on the trace and the model
//!   only, so it is computed once per trace ([`demand`]) and shared by
//!   every policy and baseline.
//! - **Supply** `s_t`: replicas in service in second `t`.
//!
//! With `T` seconds (Δt = 1 s) and `ε` = 1 replica (so an idle second with
//! replicas counts as over-provisioned by `s_t` whole replicas):
//!
//! - under-provisioning accuracy `a_U = 100/T × Σ (d_t − s_t)⁺ / max(d_t, ε)`
//! - over-provisioning accuracy `a_O = 100/T × Σ (s_t − d_t)⁺ / max(d_t, ε)`
//! - under/over-provisioning timeshare `t_U = 100/T × Σ [s_t < d_t]`,
//!   `t_O = 100/T × Σ [s_t > d_t]`
//! - instability `k = 100/(T−1) × Σ_{t≥2} min(|sgn Δs_t − sgn Δd_t|, 1)`:
//!   the share of steps where supply and demand did not move the same way
//!   (one moved and the other did not, or they moved apart)
//! - jitter `j = (E_S − E_D) / T`, `E` the number of adaptations (steps
//!   where the curve changed), given per hour: negative, the supply
//!   adapts less often than the demand changes (it smooths or lags);
//!   positive, it changes more often (it oscillates).

use super::engine::FleetModel;
use super::queue::Flow;
use super::summary::Slo;
use super::trace::Trace;

/// `ε` of the accuracy formulas, in replicas.
pub const EPSILON: f64 = 1.0;

/// The SPEC scores of one run against the demand.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    /// `a_U`, % (mean relative shortfall).
    pub under_accuracy: f64,
    /// `a_O`, % (mean relative excess).
    pub over_accuracy: f64,
    /// `t_U`, % of seconds short.
    pub under_timeshare: f64,
    /// `t_O`, % of seconds over.
    pub over_timeshare: f64,
    /// `k`, % of steps where supply and demand moved differently.
    pub instability: f64,
    /// `j`, adaptations per hour (supply's minus demand's).
    pub jitter_per_hour: f64,
}

impl Scores {
    /// The scores of `supply` against `demand`, second by second (the
    /// shorter of the two decides `T`).
    pub fn new(demand: &[u32], supply: &[u32]) -> Scores {
        let t = demand.len().min(supply.len());
        if t == 0 {
            return Scores::default();
        }
        let (mut under, mut over, mut short, mut excess) = (0.0, 0.0, 0u64, 0u64);
        for (&d, &s) in demand.iter().zip(supply) {
            let (d, s) = (f64::from(d), f64::from(s));
            under += (d - s).max(0.0) / d.max(EPSILON);
            over += (s - d).max(0.0) / d.max(EPSILON);
            short += u64::from(s < d);
            excess += u64::from(s > d);
        }
        let (mut unstable, mut supply_changes, mut demand_changes) = (0u64, 0u64, 0u64);
        for i in 1..t {
            let ds = supply[i].cmp(&supply[i - 1]);
            let dd = demand[i].cmp(&demand[i - 1]);
            unstable += u64::from(ds != dd);
            supply_changes += u64::from(ds.is_ne());
            demand_changes += u64::from(dd.is_ne());
        }
        let n = t as f64;
        Scores {
            under_accuracy: 100.0 * under / n,
            over_accuracy: 100.0 * over / n,
            under_timeshare: 100.0 * short as f64 / n,
            over_timeshare: 100.0 * excess as f64 / n,
            instability: if t > 1 { 100.0 * unstable as f64 / (n - 1.0) } else { 0.0 },
            jitter_per_hour: (supply_changes as f64 - demand_changes as f64) / n * 3600.0,
        }
    }
}

/// Whether `n` replicas meet the SLO for `rate` requests in one second,
/// starting without a backlog.
fn meets(rate: f64, n: u32, model: &FleetModel, slo: &Slo) -> bool {
    let flow = Flow::step(rate, 0.0, f64::from(n), model.capacity, model.queue_limit.as_secs_f64());
    flow.backlog <= 0.0
        && flow.shed <= 0.0
        && flow.latency_ms(slo.quantile()).is_some_and(|ms| ms <= slo.threshold_ms())
}

/// The demand of one second: the fewest replicas that meet the SLO at
/// `rate` (0 without requests). When no count can (the service time alone
/// is over the threshold), the fewest that leave no backlog.
pub fn demand_at(rate: f64, model: &FleetModel, slo: &Slo) -> u32 {
    // NaN rates and capacities count as none.
    if rate.is_nan() || rate <= 0.0 || model.capacity.is_nan() || model.capacity <= 0.0 {
        return 0;
    }
    // Closed form first: p = (1/μ) ln(1/(1−q)) / (1 − ρ) ≤ threshold gives
    // ρ ≤ 1 − (1/μ) ln(1/(1−q)) / threshold (ρ capped as the model caps it).
    let service_ms = 1000.0 / model.capacity;
    let base = service_ms * (1.0 / (1.0 - slo.quantile())).ln();
    let saturated_ok = base / (1.0 - super::queue::RHO_CAP) <= slo.threshold_ms();
    let rho = if saturated_ok { 1.0 } else { 1.0 - base / slo.threshold_ms() };
    let no_backlog = (rate / model.capacity - 1e-9).ceil().max(1.0);
    if rho <= 0.0 {
        return no_backlog.min(f64::from(u32::MAX)) as u32;
    }
    let guess = (rate / (model.capacity * rho)).ceil().max(no_backlog).min(f64::from(u32::MAX - 2)) as u32;
    // Then the model itself decides the last replica (float rounding at
    // the edge): a step or two either way.
    let mut n = guess.max(1);
    while n > 1 && meets(rate, n - 1, model, slo) {
        n -= 1;
    }
    let mut tries = 0;
    while !meets(rate, n, model, slo) && tries < 4 {
        n += 1;
        tries += 1;
    }
    n
}

/// The demand of every second of the trace, with a cache by rate (traces
/// built from per-minute data repeat rates).
pub fn demand(trace: &Trace, model: &FleetModel, slo: &Slo) -> Vec<u32> {
    let mut last: Option<(f64, u32)> = None;
    trace
        .rates
        .iter()
        .map(|&rate| match last {
            Some((r, d)) if r == rate => d,
            _ => {
                let d = demand_at(rate, model, slo);
                last = Some((rate, d));
                d
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn scores_of_a_hand_computed_trace() {
        // t:        1  2  3  4  5
        // demand:   2  4  4  2  0
        // supply:   2  2  4  4  2
        // shortfall 0  2  0  0  0  -> relative 0, 2/4, 0, 0, 0 = 0.5
        // excess    0  0  0  2  2  -> relative 0, 0, 0, 2/2, 2/max(0,1) = 3
        // a_U = 100/5 × 0.5 = 10 %; a_O = 100/5 × 3 = 60 %
        // t_U = 1 of 5 = 20 %; t_O = 2 of 5 = 40 %
        // Δd: +, 0, −, −      Δs: 0, +, 0, −
        // differ:  yes, yes, yes, no  -> k = 100 × 3/4 = 75 %
        // E_D = 3, E_S = 2: j = (2 − 3)/5 s = −0.2 per s = −720 per hour
        let s = Scores::new(&[2, 4, 4, 2, 0], &[2, 2, 4, 4, 2]);
        assert!(close(s.under_accuracy, 10.0), "{s:?}");
        assert!(close(s.over_accuracy, 60.0), "{s:?}");
        assert!(close(s.under_timeshare, 20.0), "{s:?}");
        assert!(close(s.over_timeshare, 40.0), "{s:?}");
        assert!(close(s.instability, 75.0), "{s:?}");
        assert!(close(s.jitter_per_hour, -720.0), "{s:?}");
    }

    #[test]
    fn supply_equal_to_demand_scores_zero() {
        let d = [1, 3, 3, 5, 2];
        assert_eq!(Scores::new(&d, &d), Scores::default());
        assert_eq!(Scores::new(&[], &[]), Scores::default());
    }

    #[test]
    fn a_supply_that_moves_against_the_demand_is_unstable() {
        // demand 1 2 1 2, supply 2 1 2 1: every step opposite -> k = 100 %.
        // a_U: (0 + 1/2 + 0 + 1/2)/4 = 25 %; a_O: (1 + 0 + 1 + 0)/4 = 50 %.
        // Both change 3 times: j = 0.
        let s = Scores::new(&[1, 2, 1, 2], &[2, 1, 2, 1]);
        assert!(close(s.instability, 100.0));
        assert!(close(s.under_accuracy, 25.0) && close(s.over_accuracy, 50.0));
        assert!(close(s.jitter_per_hour, 0.0));
    }

    #[test]
    fn demand_is_the_fewest_replicas_meeting_the_slo() {
        // μ = 50 req/s (20 ms), p99 < 1 s: 20 ms × ln 100 = 92.1 ms, so
        // ρ ≤ 1 − 92.1/1000 = 0.9079: 400 req/s needs 400/(50 × 0.9079)
        // = 8.81 -> 9 replicas (8 would be at ρ = 1.0: saturated, 1.84 s).
        let model = FleetModel::default();
        let slo = Slo::default();
        assert_eq!(demand_at(400.0, &model, &slo), 9);
        assert_eq!(demand_at(0.0, &model, &slo), 0);
        assert_eq!(demand_at(1.0, &model, &slo), 1);
        // 45 req/s on one replica is ρ = 0.9: 921 ms, meets; 46 is
        // ρ = 0.92: 1151 ms, two are needed.
        assert_eq!(demand_at(45.0, &model, &slo), 1);
        assert_eq!(demand_at(46.0, &model, &slo), 2);
        // p99 < 100 ms: ρ ≤ 1 − 92.1/100 = 0.079: 40 req/s needs 40/3.95
        // = 10.1 -> 11.
        let tight = Slo { percentile: 99.0, threshold: Duration::from_millis(100) };
        assert_eq!(demand_at(40.0, &model, &tight), 11);
        // p99 < 50 ms is unreachable (92 ms of service alone): the fewest
        // without a backlog.
        let impossible = Slo { percentile: 99.0, threshold: Duration::from_millis(50) };
        assert_eq!(demand_at(120.0, &model, &impossible), 3);
        // The same from the whole-trace function, its cache too.
        let trace = Trace::new(vec![400.0, 400.0, 0.0, 46.0], "t");
        assert_eq!(demand(&trace, &model, &slo), [9, 9, 0, 2]);
    }
}
