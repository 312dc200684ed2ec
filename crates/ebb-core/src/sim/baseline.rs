//! The two baselines every comparison shows beside the policies, run
//! through the same queueing model so their cost, SLO and scores are
//! measured as a policy's are (they do not run the autoscaler):
//!
//! - **oracle**: perfect foresight. Each second it runs
//!   `r_t = max(d over [t, t + boot])` replicas: each replica is started
//!   exactly one boot time before the demand needs it and stops once no
//!   demand within a boot time needs it. The replicas in service in
//!   second `t` are those that were running throughout `[t − boot, t]`,
//!   `min(r over [t − boot, t])`, which is at least `d_t` (every `r_u` in
//!   that span looked ahead over `t`). Replica-hours count `r_t` (booting
//!   ones cost too).
//! - **static peak**: the fixed fleet that meets the peak demand, in
//!   service from the first second.
//!
//! Both stay within the service's `[min, max]`, as a policy must: a peak
//! above `max` is not met by the baselines either.

use super::engine::{FleetModel, Run, Second, SimEvent, SimOptions};
use super::queue::Flow;
use super::summary::Summary;
use super::trace::Trace;
use crate::scaling::Bounds;
use std::collections::VecDeque;

/// The oracle's name in tables and charts.
pub const ORACLE: &str = "baseline:oracle";
/// The static fleet's name in tables and charts.
pub const STATIC_PEAK: &str = "baseline:static-peak";

/// The extreme (`max` or, with `max = false`, the min) of
/// `values[t − before ..= t + after]` for each `t`, clipped to the slice,
/// in one pass (a monotonic deque).
fn sliding(values: &[u32], before: usize, after: usize, max: bool) -> Vec<u32> {
    let better = |a: u32, b: u32| if max { a >= b } else { a <= b };
    let mut out = Vec::with_capacity(values.len());
    let mut window: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    for t in 0..values.len() {
        let end = (t + after).min(values.len() - 1);
        while next <= end {
            while window.back().is_some_and(|&i| better(values[next], values[i])) {
                window.pop_back();
            }
            window.push_back(next);
            next += 1;
        }
        while window.front().is_some_and(|&i| i + before < t) {
            window.pop_front();
        }
        out.push(values[*window.front().expect("t is in its window")]);
    }
    out
}

/// The oracle's `(running, in service)` per second (see the module docs).
pub fn oracle_fleet(demand: &[u32], boot_s: usize, bounds: Bounds) -> (Vec<u32>, Vec<u32>) {
    if demand.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let running: Vec<u32> = sliding(demand, 0, boot_s, true).into_iter().map(|r| bounds.clamp(r)).collect();
    let in_service = sliding(&running, boot_s, 0, false);
    (running, in_service)
}

/// The static fleet: the peak demand, within the bounds.
pub fn static_peak(demand: &[u32], bounds: Bounds) -> u32 {
    bounds.clamp(demand.iter().copied().max().unwrap_or(0))
}

/// A run of a fixed plan: `running[t]` replicas, `in_service[t]` of them
/// serving, through the queueing model.
fn run_plan(
    name: &str,
    running: &[u32],
    in_service: &[u32],
    demand: &[u32],
    model: &FleetModel,
    trace: &Trace,
    options: &SimOptions,
) -> Run {
    let queue_limit_s = model.queue_limit.as_secs_f64();
    let quantile = options.slo.quantile();
    let mut backlog = 0.0;
    let mut seconds = Vec::with_capacity(trace.len());
    let mut events = Vec::new();
    for (t, &rate) in trace.rates.iter().enumerate() {
        let (r, n) = (running[t], in_service[t]);
        let flow = Flow::step(rate, backlog, f64::from(n), model.capacity, queue_limit_s);
        backlog = flow.backlog;
        if t > 0 && running[t - 1] != r {
            // Told as a policy's change is, so actions and flaps count alike.
            events.push(SimEvent {
                at: t as u64,
                kind: "scaled",
                replica: None,
                from: Some(running[t - 1]),
                to: Some(r),
                reason: format!("{name}: the demand over the next boot time is {r}"),
            });
        }
        seconds.push(Second {
            second: t as u32,
            rate,
            served: flow.served,
            shed: flow.shed,
            desired: r,
            in_service: n,
            pending: r - n.min(r),
            suspended: 0,
            cpu: flow.utilisation * model.saturation_cpu,
            nodes: 0,
            p50_ms: flow.latency_ms(0.5),
            p99_ms: flow.latency_ms(0.99),
            slo_ms: flow.latency_ms(quantile),
            queue_ms: flow.queue_ms,
        });
    }
    let summary = Summary::new(name, &seconds, &events, options.slo, options.price, options.flap_window, demand);
    Run { policy: name.to_string(), seconds, events, summary, baseline: true, forecast: None }
}

/// The oracle and static-peak runs for this trace and its demand
/// ([`super::elasticity::demand`]).
pub fn baselines(demand: &[u32], bounds: Bounds, model: &FleetModel, trace: &Trace, options: &SimOptions) -> [Run; 2] {
    let boot_s = model.boot.as_secs_f64().ceil() as usize;
    let (running, in_service) = oracle_fleet(demand, boot_s, bounds);
    let oracle = run_plan(ORACLE, &running, &in_service, demand, model, trace, options);
    let fixed = vec![static_peak(demand, bounds); demand.len()];
    let peak = run_plan(STATIC_PEAK, &fixed, &fixed, demand, model, trace, options);
    [oracle, peak]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sliding_extremes() {
        let v = [1, 3, 2, 5, 1, 1, 4];
        // max over [t, t+2]: 3 5 5 5 4 4 4
        assert_eq!(sliding(&v, 0, 2, true), [3, 5, 5, 5, 4, 4, 4]);
        // min over [t−2, t]: 1 1 1 2 1 1 1
        assert_eq!(sliding(&v, 2, 0, false), [1, 1, 1, 2, 1, 1, 1]);
        assert_eq!(sliding(&v, 0, 0, true), v);
    }

    #[test]
    fn the_oracle_starts_replicas_one_boot_ahead() {
        // Demand 1 1 1 4 4 1 1, boot 2 s, bounds 1..10:
        // running = max over [t, t+2]:   1 4 4 4 4 1 1  (started at t=1 for t=3)
        // in service = min over [t−2, t]: 1 1 1 4 4 1 1  (= the demand)
        let bounds = Bounds { min: 1, max: 10 };
        let (running, in_service) = oracle_fleet(&[1, 1, 1, 4, 4, 1, 1], 2, bounds);
        assert_eq!(running, [1, 4, 4, 4, 4, 1, 1]);
        assert_eq!(in_service, [1, 1, 1, 4, 4, 1, 1]);
        // Demand 1 ×5, then 4 4, then 1 ×3, boot 2:
        // running    = 1 1 1 4 4 4 4 1 1 1  (t=3 starts for t=5)
        // in service = 1 1 1 1 1 4 4 1 1 1  (min over [t−2, t]): the
        // replicas started at t=3 serve from t=5, exactly when needed.
        let d = [1, 1, 1, 1, 1, 4, 4, 1, 1, 1];
        let (running, in_service) = oracle_fleet(&d, 2, bounds);
        assert_eq!(running, [1, 1, 1, 4, 4, 4, 4, 1, 1, 1]);
        assert_eq!(in_service, [1, 1, 1, 1, 1, 4, 4, 1, 1, 1]);
        assert!(in_service.iter().zip(&d).all(|(s, d)| s >= d), "never short");
        // The bounds cap it: max 3.
        let (running, _) = oracle_fleet(&d, 2, Bounds { min: 2, max: 3 });
        assert_eq!(running, [2, 2, 2, 3, 3, 3, 3, 2, 2, 2]);
        assert_eq!(static_peak(&d, bounds), 4);
        assert_eq!(static_peak(&d, Bounds { min: 0, max: 3 }), 3);
    }

    #[test]
    fn baselines_are_measured_by_the_queueing_model() {
        // 10 s at 40 req/s then 10 s at 400 req/s (demand 1 then 9, see
        // elasticity's tests), boot 5 s.
        let mut rates = vec![40.0; 10];
        rates.extend([400.0; 10]);
        let trace = Trace::new(rates, "step");
        let model = FleetModel { boot: Duration::from_secs(5), ..FleetModel::default() };
        let options = SimOptions::default();
        let demand = super::super::elasticity::demand(&trace, &model, &options.slo);
        assert_eq!((demand[0], demand[19]), (1, 9));
        let [oracle, peak] = baselines(&demand, Bounds { min: 1, max: 100 }, &model, &trace, &options);
        assert!(oracle.baseline && peak.baseline);
        // The oracle meets every second and is never short.
        assert_eq!(oracle.summary.slo_violation_seconds, 0);
        assert_eq!(oracle.summary.scores.under_timeshare, 0.0);
        // It runs 1 replica for 5 s, then 9 for 15 s (started 5 s early):
        // (5 × 1 + 15 × 9) / 3600 replica-hours.
        assert!((oracle.summary.replica_hours - 140.0 / 3600.0).abs() < 1e-12);
        // Over-provisioned while the early ones boot... not in service:
        // supply counts in-service replicas only, so t_O = 0.
        assert_eq!(oracle.summary.scores.over_timeshare, 0.0);
        assert_eq!((oracle.summary.scaling_actions, oracle.summary.scale_outs), (1, 1));
        // Static peak: 9 all along, 20 × 9 replica-seconds, over by 8 of
        // a demand of 1 for 10 s: a_O = 100/20 × 10 × 8 = 400 %.
        assert!((peak.summary.replica_hours - 180.0 / 3600.0).abs() < 1e-12);
        assert!((peak.summary.scores.over_accuracy - 400.0).abs() < 1e-9);
        assert_eq!(peak.summary.slo_violation_seconds, 0);
        assert_eq!(peak.summary.scaling_actions, 0);
    }
}
