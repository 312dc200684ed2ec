//! Predictive policies in the autoscaler: a trusted forecast raises the
//! minimum ahead of the load by the boot time; `forecast_only`, an
//! untrusted forecast and too little history never act, and say why.

mod support;
use ebb_core::scaling::forecast::{Forecast, Model, Season, Skill, TooLittleHistory, BUCKET_S};
use ebb_core::scaling::{ForecastState, HoldKind};
use std::time::Duration;
use support::*;

const POLICIES: &str = r#"
[[service.web.scaling.target_tracking]]
name = "rps"
metric = "requests_per_replica"
target = 40
scale_in_cooldown = "0s"
scale_in_stabilization = "0s"

[[service.web.scaling.predictive]]
name = "daily"
metric = "requests_per_replica"
target = 40
mode = "MODE"
"#;

fn sim(mode: &str) -> Sim {
    let (config, replicas) = scaling(&POLICIES.replace("MODE", mode), "{ min = 2, max = 12, desired = 2 }");
    let mut sim = Sim::new(&config, replicas);
    sim.scaler.set_boot_time(Duration::from_secs(120));
    sim.requests = 60.0; // 30 req/s each: content at 2
    sim
}

/// Flat 60 req/s, then 400 req/s from `surge` (Unix s) for an hour.
fn forecast(surge: i64, skill: Option<Skill>) -> ForecastState {
    let start = MONDAY.div_euclid(BUCKET_S) * BUCKET_S;
    let values = (0..576)
        .map(|i| {
            let t = start + i * BUCKET_S;
            if (surge..surge + 3600).contains(&t) {
                400.0
            } else {
                60.0
            }
        })
        .collect();
    ForecastState::Ready(Forecast {
        start_unix: start,
        model: Model { season: Season::Weekly, gamma: 0.3 },
        values,
        skill,
        history: Duration::from_secs(14 * 86_400),
        gaps: Duration::ZERO,
    })
}

const GOOD: Skill = Skill { days: 7, mape: 8.1, yesterday: Some(21.3), last_week: Some(14.0) };
const POOR: Skill = Skill { days: 7, mape: 17.5, yesterday: Some(21.3), last_week: Some(14.0) };

#[test]
fn a_trusted_forecast_scales_out_one_boot_time_before_the_surge_and_holds_the_floor() {
    let mut sim = sim("forecast_and_scale");
    let surge = MONDAY + 3600;
    sim.scaler.set_forecast(0, forecast(surge, Some(GOOD)));
    // Quiet until two minutes (the boot time) before the surge.
    sim.run_until(3600 - 121);
    assert_eq!(sim.desired, 2, "{}", sim.told());
    let at = sim.run_until_change(10).expect("a scale-out ahead of the surge");
    assert_eq!(at, 3600 - 120, "launched exactly one boot time ahead\n{}", sim.told());
    let (_, change) = sim.changes.last().unwrap();
    assert_eq!((change.from, change.to, change.policy.as_str()), (2, 10, "daily"));
    assert_eq!(
        change.reason,
        "predictive daily: forecast 400 req/s at 01:00 UTC (Holt-Winters, weekly season, γ 0.3; MAPE 8.1 % vs 14.0 % for same time last week, 21.3 % for same time yesterday (median day of 7 days of backtest)) / target 40 per replica = at least 10, 2 min ahead"
    );
    // The load has not come yet: target tracking wants 2, the floor keeps 10.
    sim.run(60);
    assert_eq!(sim.desired, 10);
    let hold = sim.last.as_ref().unwrap().holding.clone().unwrap();
    assert_eq!(hold.kind, HoldKind::MinReached);
    assert!(hold.why.contains("the forecast of predictive daily keeps at least 10"), "{}", hold.why);
    // After the forecast surge, target tracking brings it back.
    sim.run_until(3600 + 3600 + 60);
    assert!(sim.desired < 10, "{}", sim.told());
}

#[test]
fn never_above_max() {
    let mut sim = sim("forecast_and_scale");
    let mut state = forecast(MONDAY + 600, Some(GOOD));
    if let ForecastState::Ready(f) = &mut state {
        f.values.iter_mut().for_each(|v| *v *= 10.0); // 4000 req/s: 100 replicas
    }
    sim.scaler.set_forecast(0, state);
    sim.run_until(600);
    assert_eq!(sim.desired, 12, "{}", sim.told());
}

#[test]
fn forecast_only_records_but_never_acts() {
    let mut sim = sim("forecast_only");
    sim.scaler.set_forecast(0, forecast(MONDAY + 600, Some(GOOD)));
    sim.run_until(1200);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    let vote = sim.last.as_ref().unwrap().votes.iter().find(|v| v.policy == "daily").unwrap().clone();
    assert!(vote.reason.contains("= at least 10"), "what it would do is shown: {}", vote.reason);
}

/// A fixed fleet with only a `forecast_only` policy stays fixed: the
/// policy does not turn on the saturation rules (demand sizing) either.
#[test]
fn a_forecast_only_policy_on_a_fixed_fleet_leaves_it_fixed() {
    let policy = POLICIES.split("[[service.web.scaling.predictive]]").nth(1).unwrap().replace("MODE", "forecast_only");
    let (config, replicas) =
        scaling(&format!("[[service.web.scaling.predictive]]{policy}"), "{ min = 2, max = 12, desired = 2 }");
    assert!(config.is_fixed());
    let mut sim = Sim::new(&config, replicas);
    sim.scaler.set_forecast(0, forecast(MONDAY + 600, Some(GOOD)));
    // Requests queue at the balancer: demand sizing would scale out.
    sim.requests = 400.0;
    sim.queue =
        Some(ebb_core::scaling::Demand { offered_per_s: 400.0, served_per_s: 80.0, queued: 300, ..Default::default() });
    sim.run_until(1200);
    assert!(sim.changes.is_empty(), "{}", sim.told());
}

#[test]
fn a_forecast_that_does_not_beat_last_week_does_not_act() {
    let mut sim = sim("forecast_and_scale");
    sim.scaler.set_forecast(0, forecast(MONDAY + 600, Some(POOR)));
    sim.run_until(1200);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    assert_eq!(
        said(&sim),
        "predictive daily: not acting, the forecast does not beat the naive baselines: MAPE 17.5 % vs 14.0 % for same time last week, 21.3 % for same time yesterday (median day of 7 days of backtest)"
    );
    // Untested (less than 2 days of history) is not trusted either.
    sim.scaler.set_forecast(0, forecast(MONDAY + 1800, None));
    sim.run_until(1800);
    assert!(sim.changes.is_empty(), "{}", sim.told());
}

/// What the predictive policy's vote waits for (status shows it when
/// nothing else holds).
fn said(sim: &Sim) -> String {
    let vote = sim.last.as_ref().unwrap().votes.iter().find(|v| v.policy == "daily").unwrap().clone();
    match vote.outcome {
        ebb_core::scaling::PolicyOutcome::Pending(hold) => hold.why,
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_little_history_holds_and_says_how_much() {
    let mut sim = sim("forecast_and_scale");
    sim.run(5);
    assert_eq!(said(&sim), "predictive daily: no forecast yet");
    let have = Duration::from_secs(5 * 3600);
    sim.scaler
        .set_forecast(0, ForecastState::TooLittleHistory(TooLittleHistory { have, need: Duration::from_secs(86_400) }));
    sim.run(5);
    assert_eq!(said(&sim), "predictive daily: 5 h of history, needs 24 h to forecast");
    assert!(sim.changes.is_empty());
}
