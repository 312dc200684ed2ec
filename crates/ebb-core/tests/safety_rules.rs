//! Safety when the signals lie: `on_missing_metrics` and the scale-in
//! freeze, each told as what a user would see second by second.

mod support;

use ebb_core::scaling::{Demand, HoldKind};
use support::{scaling, Sim};

const TARGET_CPU: &str = "[[service.web.scaling.target_tracking]]\nmetric = \"cpu\"\ntarget = 50\nwindow = \"10s\"\nscale_out_cooldown = \"30s\"\n";

/// Missing CPU for the whole window: by default the fleet holds and says
/// why; with `on_missing_metrics = "scale_out"` it grows by one replica per
/// scale-out cooldown, up to max.
#[test]
fn missing_metrics_hold_by_default_and_scale_out_by_one_per_cooldown_on_request() {
    let (config, bounds) = scaling(TARGET_CPU, "{ min = 1, max = 4, desired = 2 }");
    let mut sim = Sim::new(&config, bounds);
    sim.demand = 2.0 * 50.0; // on target
    sim.run_until(20);
    sim.cpu_missing = true; // the metric source goes down at 20 s
    sim.run_until(120);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    assert_eq!(sim.holding(), "held for lack of data: no warm replica reported cpu in the last 10 s (2 not reporting)");

    let (config, bounds) =
        scaling(&format!("{TARGET_CPU}on_missing_metrics = \"scale_out\"\n"), "{ min = 1, max = 4, desired = 2 }");
    let mut sim = Sim::new(&config, bounds);
    sim.demand = 2.0 * 50.0;
    sim.run_until(20);
    sim.cpu_missing = true;
    sim.run_until(120);
    // The last datapoint is at 20 s: the 10 s window (20, 30] is empty at
    // 30 s; then one more per 30 s cooldown; max 4 stops it.
    let policy = "target-cpu".to_string();
    assert_eq!(sim.timeline(), [(30, 2, 3, policy.clone()), (60, 3, 4, policy)], "{}", sim.told());
    assert_eq!(
        sim.changes[0].1.reason,
        "target tracking cpu: no warm replica reported cpu in the last 10 s (2 not reporting): the metric source looks down; on_missing_metrics = \"scale_out\" -> 2 + 1 = 3"
    );
    assert_eq!(sim.holding(), "max reached: target-cpu wants 5, max is 4");
}

/// Replicas still warming up have no numbers yet: that is not a source
/// that is down, so nothing scales out until they are warm.
#[test]
fn a_warming_fleet_is_not_a_metric_source_that_is_down() {
    let (config, bounds) = scaling(
        &format!("[service.web.scaling]\nwarmup = \"60s\"\n\n{TARGET_CPU}on_missing_metrics = \"scale_out\"\n"),
        "{ min = 1, max = 4, desired = 2 }",
    );
    let mut sim = Sim::new(&config, bounds);
    sim.cpu_missing = true;
    sim.run_until(59);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    assert!(sim.holding().starts_with("held for lack of data"), "{}", sim.holding());
    // Warm at 60 s and silent for the whole window before: down.
    assert_eq!(sim.run_until_change(5), Some(60), "{}", sim.told());
}

/// A step policy whose alarm has no datapoint in any period scales out by
/// one once the history covers its span, then once per cooldown.
#[test]
fn a_step_policy_scales_out_when_every_period_is_missing() {
    let (config, bounds) = scaling(
        r#"[[service.web.scaling.step]]
name = "cpu-high"
alarm = { metric = "cpu", comparison = ">", threshold = 70, period = "10s", evaluation_periods = 2 }
steps = [{ lower = 0, adjustment = 2 }]
cooldown = "60s"
on_missing_metrics = "scale_out"
"#,
        "{ min = 1, max = 10, desired = 2 }",
    );
    let mut sim = Sim::new(&config, bounds);
    sim.cpu_missing = true;
    sim.run_until(100);
    // First sample at 1 s: the 20 s span is covered at 21 s.
    let policy = "cpu-high".to_string();
    assert_eq!(sim.timeline(), [(21, 2, 3, policy.clone()), (81, 3, 4, policy)], "{}", sim.told());
    assert_eq!(
        sim.changes[0].1.reason,
        "alarm cpu-high: no cpu datapoints in any of its 2 periods of 10 s: the metric source looks down; on_missing_metrics = \"scale_out\" -> 2 + 1 = 3"
    );
}

/// 4 replicas on target; at 30 s half the answers become 5xx and the
/// replicas, failing fast, read 10 % CPU. The CPU policy alone would scale
/// in at 49 s (its 1 min mean reaches 37.5 %: ceil(4 × 37.5 / 50) = 3); the
/// freeze comes first and holds until 5 min after the last second above 20 %.
#[test]
fn a_5xx_spike_freezes_scale_in_until_its_hold_has_passed() {
    let (config, bounds) = scaling(
        "[[service.web.scaling.target_tracking]]\nmetric = \"cpu\"\ntarget = 50\nwindow = \"60s\"\nscale_in_cooldown = \"0s\"\nscale_in_stabilization = \"0s\"\n",
        "{ min = 1, max = 10, desired = 4 }",
    );
    let answers = |errors: f64| {
        let d = Demand { offered_per_s: 100.0, served_per_s: 100.0, answered_per_s: 100.0, ..Default::default() };
        Some(Demand { errors_per_s: errors, ..d })
    };
    let mut sim = Sim::new(&config, bounds);
    sim.demand = 4.0 * 50.0;
    sim.requests = 100.0;
    sim.queue = answers(0.0);
    sim.run_until(30);
    sim.demand = 4.0 * 10.0;
    sim.queue = answers(50.0);
    // Over (t - 30, t] the 5xx share is 50 × (t - 30) / 3000: above 20 %
    // from t = 43.
    sim.run_until(42);
    assert_eq!(sim.scaler.frozen_hold(sim.now), None);
    sim.run_until(43);
    assert_eq!(
        sim.scaler.frozen_hold(sim.now).unwrap().to_string(),
        "scale-in frozen: 5xx at 22% of answers over 30 s (freeze above 20%), 5 min left"
    );
    sim.run_until(60);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    let hold = sim.last.as_ref().unwrap().holding.clone().unwrap();
    assert_eq!(hold.kind, HoldKind::Frozen);
    // 1 min mean: (30 × 50 + 30 × 10) / 60 = 30 %: ceil(4 × 30 / 50) = 3.
    assert_eq!(
        hold.to_string(),
        "scale-in frozen: 5xx at 50% of answers over 30 s (freeze above 20%) (target-cpu wants 3), 5 min left"
    );

    // Errors stop at 60 s: the share is 50 × (90 - t) / 3000, above 20 %
    // up to t = 77; the freeze holds to 377 s and says its worst second.
    sim.queue = answers(0.0);
    sim.run_until(100);
    assert_eq!(
        sim.holding(),
        "scale-in frozen: 5xx at 50% of answers over 30 s (freeze above 20%) until 23 s ago (target-cpu wants 1), 4 min 37 s left"
    );
    assert_eq!(sim.run_until_change(400), Some(377), "{}", sim.told());
    assert_eq!(sim.desired, 1, "{}", sim.told());
}

/// The retry-storm story: traffic collapses from 400 to 40 req/s (an
/// upstream outage), then comes back at twice the load. With the freeze
/// the fleet is still there for the storm; without it, it has shrunk.
#[test]
fn a_traffic_collapse_keeps_the_fleet_for_the_retry_storm() {
    let policy = "[[service.web.scaling.target_tracking]]\nmetric = \"cpu\"\ntarget = 50\nwindow = \"10s\"\nscale_in_cooldown = \"0s\"\nscale_in_stabilization = \"30s\"\n";
    let run = |freeze: &str| {
        let (config, bounds) = scaling(&format!("{policy}{freeze}"), "{ min = 1, max = 20, desired = 4 }");
        let mut sim = Sim::new(&config, bounds);
        sim.requests = 400.0;
        sim.demand = 4.0 * 50.0; // 50 % each at 400 req/s
        sim.run_until(60);
        sim.requests = 40.0; // the outage
        sim.demand = 4.0 * 5.0;
        sim.run_until(240);
        sim
    };
    let frozen = run("");
    assert_eq!(frozen.desired, 4, "{}", frozen.told());
    // 25 s at 400 before the last 5 s at 40: the worst second, 90 % down.
    assert!(
        frozen
            .holding()
            .starts_with("scale-in frozen: traffic fell 90% within 30 s (400.0 -> 40.0 req/s; freeze above 50%)"),
        "{}",
        frozen.holding()
    );

    let unfrozen = run("\n[service.web.scaling.freeze]\nenabled = false\n");
    assert_eq!(unfrozen.desired, 1, "without the freeze the fleet shrank before the storm\n{}", unfrozen.told());
}
