//! A predictive policy in the simulator: two weeks of a daily and weekly
//! shape with a steep morning ramp and replicas that take 3 minutes to
//! boot. Target tracking alone is late every morning; with a trusted
//! forecast the capacity is there before the ramp. The forecast's own
//! error is reported beside the naive baselines'.

use ebb_core::config::{Bounds, Replicas};
use ebb_core::scaling::{Metric, PredictiveMode, PredictivePolicy, ScalingConfig, TargetTracking};
use ebb_core::sim::rng::Rng;
use ebb_core::sim::{simulate, FleetModel, Policy, SimOptions, Trace};
use std::time::Duration;

const DAYS: usize = 14;

/// Requests/s: 20 at night, a ramp to 400 between 08:00 and 08:20, down
/// from 18:00 to 20:00; weekends at 40 %; ±15 % noise that changes every
/// 10 minutes (traffic wanders; it does not flicker second by second).
fn trace() -> Trace {
    let mut rng = Rng::new(42);
    let noise: Vec<f64> = (0..DAYS * 144).map(|_| 0.85 + 0.3 * rng.unit()).collect();
    let rates = (0..DAYS * 86_400)
        .map(|s| {
            let day = s / 86_400;
            let h = (s % 86_400) as f64 / 3600.0;
            let business = if (8.0..8.333).contains(&h) {
                (h - 8.0) / 0.333
            } else if (8.333..18.0).contains(&h) {
                1.0
            } else if (18.0..20.0).contains(&h) {
                1.0 - (h - 18.0) / 2.0
            } else {
                0.0
            };
            let weekend = if day % 7 >= 5 { 0.4 } else { 1.0 };
            (20.0 + 380.0 * business * weekend) * noise[s / 600]
        })
        .collect();
    Trace::new(rates, "two weeks")
}

fn policy(predictive: Option<PredictiveMode>) -> Policy {
    let mut t = TargetTracking::new(Metric::RequestsPerReplica, 40.0);
    t.window = Duration::from_secs(60);
    let predictive: Vec<PredictivePolicy> = predictive
        .map(|mode| PredictivePolicy {
            name: "daily".into(),
            metric: Metric::RequestsPerReplica,
            target: 40.0,
            mode,
            launch_ahead: None,
        })
        .into_iter()
        .collect();
    Policy {
        name: if predictive.is_empty() { "tt".into() } else { "tt+predictive".into() },
        scaling: ScalingConfig { target_tracking: vec![t], predictive, ..Default::default() },
        replicas: Replicas { bounds: Bounds { min: 1, max: 30 }, desired: 1 },
        idle: None,
        warm_pool: None,
    }
}

#[test]
fn forecasting_ahead_of_the_morning_ramp_misses_the_slo_less_for_a_few_more_replica_hours() {
    let trace = trace();
    let model = FleetModel { capacity: 50.0, boot: Duration::from_secs(180), ..Default::default() };
    let options = SimOptions::default();
    let reactive = simulate(&policy(None), &model, &trace, &options);
    let shown = simulate(&policy(Some(PredictiveMode::ForecastOnly)), &model, &trace, &options);
    let predictive = simulate(&policy(Some(PredictiveMode::ForecastAndScale)), &model, &trace, &options);

    // forecast_only changes nothing, but scores its forecast.
    assert_eq!(shown.summary.slo_violation_seconds, reactive.summary.slo_violation_seconds);
    assert_eq!(shown.events.len(), reactive.events.len());
    let report = shown.forecast.clone().expect("a forecast report");
    assert!(reactive.forecast.is_none());
    // The first day has no history; from day 2 there is a forecast.
    assert!(report.hours > 12.0 * 24.0 && report.hours <= 13.0 * 24.0, "{report:?}");
    // Each baseline is scored on the buckets it has history for.
    let (week, day) = (report.last_week.unwrap(), report.yesterday.unwrap());
    assert!(week.hours > 6.0 * 24.0 && day.hours > 11.0 * 24.0, "{report:?}");
    assert!(report.mape.unwrap() > 0.0 && week.baseline > 0.0, "{report:?}");

    // Acting on it: fewer seconds over the SLO (the mornings), for about
    // the same replica-hours.
    let (r, p) = (&reactive.summary, &predictive.summary);
    eprintln!(
        "slo {} vs {} s; replica-hours {:.1} vs {:.1}",
        p.slo_violation_seconds, r.slo_violation_seconds, p.replica_hours, r.replica_hours
    );
    assert!(
        p.slo_violation_seconds * 2 < r.slo_violation_seconds,
        "predictive {} s vs reactive {} s over the SLO",
        p.slo_violation_seconds,
        r.slo_violation_seconds
    );
    assert!(p.replica_hours < r.replica_hours * 1.10, "{} vs {}", p.replica_hours, r.replica_hours);
    assert!(predictive.events.iter().any(|e| e.reason.contains("by daily: predictive daily: forecast")));
}
