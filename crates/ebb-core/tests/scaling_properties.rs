//! Properties of the autoscaler over random timelines: random load, metrics
//! that go missing, deploys, `ebb scale` at random, the wall clock jumping
//! ahead (a suspended laptop). A small seeded xorshift drives it, so every
//! failure reproduces from its seed.
//!
//! - every decision stays within the bounds in force;
//! - cooldowns are respected, whoever made the previous change;
//! - missing metrics never scale the fleet in;
//! - the same inputs give the same decisions (and a cloned autoscaler
//!   decides exactly as the original).

mod support;
use ebb_core::config::{Replicas, ScalingConfig};
use ebb_core::scaling::{Direction, Time};
use std::time::Duration;
use support::*;

const SEEDS: u64 = 24;
const TICKS: u64 = 1200;

fn configs() -> Vec<(&'static str, ScalingConfig, Replicas)> {
    let tt = scaling(
        r#"[service.web.scaling]
warmup = "5s"
[[service.web.scaling.target_tracking]]
metric = "cpu"
target = 70
window = "20s"
scale_out_cooldown = "15s"
scale_in_cooldown = "40s"
scale_in_stabilization = "60s"
scale_in_rate = { replicas = 2, period = "30s" }
[service.web.scaling.burst]
window = "4s"
duration = "20s"
"#,
        "{ min = 1, max = 12, desired = 2 }",
    );
    let (s1, s1_bounds) = example("examples/s1-flask-asg/ebb.fast.toml");
    let mixed = scaling(
        r#"[[service.web.scaling.target_tracking]]
metric = "requests_per_replica"
target = 150
window = "10s"
scale_out_cooldown = "10s"
scale_in_cooldown = "30s"
scale_in_stabilization = "30s"

[[service.web.scaling.step]]
name = "cpu-high"
alarm = { metric = "cpu", statistic = "p90", comparison = ">=", threshold = 85, period = "5s", evaluation_periods = 3, datapoints_to_alarm = 2 }
adjustment_type = "percent_change_in_capacity"
min_adjustment_magnitude = 1
steps = [{ lower = 0, upper = 10, adjustment = 20 }, { lower = 10, adjustment = 50 }]
cooldown = "20s"

[[service.web.scaling.step]]
name = "cpu-low"
alarm = { metric = "cpu", comparison = "<", threshold = 20, period = "5s", evaluation_periods = 6 }
steps = [{ upper = 0, adjustment = -1 }]
cooldown = "25s"

[[service.web.scaling.scheduled]]
name = "peak"
cron = "*/10 * * * *"
min = 3
max = 15

[[service.web.scaling.scheduled]]
name = "off-peak"
cron = "5-59/10 * * * *"
min = 1
max = 8
desired = 2
"#,
        "{ min = 1, max = 10, desired = 3 }",
    );
    let exact = scaling(
        r#"[[service.web.scaling.step]]
name = "queue"
alarm = { metric = "queue_time", statistic = "max", comparison = ">", threshold = 50, period = "3s", evaluation_periods = 2 }
adjustment_type = "exact_capacity"
steps = [{ lower = 0, upper = 100, adjustment = 6 }, { lower = 100, adjustment = 9 }]
cooldown = "10s"
"#,
        "{ min = 0, max = 8, desired = 0 }",
    );
    vec![
        ("target tracking", tt.0, tt.1),
        ("S1 fast", s1, s1_bounds),
        ("mixed", mixed.0, mixed.1),
        ("exact", exact.0, exact.1),
    ]
}

/// One random timeline; checks the invariants at every tick and returns
/// the transcript of every decision.
fn run(name: &str, config: &ScalingConfig, bounds: Replicas, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ name.len() as u64);
    let mut sim = Sim::new(config, bounds);
    sim.boot = secs(rng.below(15));
    sim.demand = rng.below(800) as f64;
    sim.requests = rng.below(2000) as f64;
    let mut transcript = Vec::new();
    let mut last_change: Option<Time> = None;
    let mut last_increase: Option<Time> = None;
    let mut cpu_missing_since: Option<Time> = None;
    let ctx = |sim: &Sim| format!("{name}, seed {seed}, t={}s\n{}", sim.now.as_secs(), sim.told());

    for _ in 0..TICKS {
        if rng.chance(0.03) {
            sim.demand = rng.below(1500) as f64;
            sim.requests = rng.below(3000) as f64;
        }
        if rng.chance(0.01) {
            sim.cpu_missing = !sim.cpu_missing;
        }
        if rng.chance(0.005) {
            sim.deploying = !sim.deploying;
        }
        if rng.chance(0.002) {
            sim.wall += rng.below(7200) as i64; // suspended
        }
        if rng.chance(0.004) {
            let want = rng.below(30) as u32;
            let bounds = sim.scaler.bounds();
            let change = sim.scale(want);
            assert_eq!(change.to, bounds.clamp(want), "manual scale is clamped: {}", ctx(&sim));
            transcript.push(format!("{}: {change}", sim.now.as_secs()));
            if change.to != change.from {
                last_change = Some(sim.now);
                if change.to > change.from {
                    last_increase = Some(sim.now);
                }
            }
            continue;
        }

        let desired_before = sim.desired;
        let d = sim.tick().clone();
        let now = sim.now;
        cpu_missing_since = if sim.cpu_missing { cpu_missing_since.or(Some(now)) } else { None };
        // Missing for the whole span any policy reads: no datapoint left.
        let cpu_missing = cpu_missing_since.is_some_and(|since| now - since >= config.history_needed());
        transcript.push(format!(
            "{}: {d} | {}",
            now.as_secs(),
            d.votes.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" | ")
        ));

        // Within the bounds in force.
        assert!(d.bounds.min <= d.bounds.max, "{}", ctx(&sim));
        assert!((d.bounds.min..=d.bounds.max).contains(&d.to()), "{} outside {:?}: {}", d.to(), d.bounds, ctx(&sim));
        assert_eq!(d.desired, desired_before);
        if let Some(hold) = &d.holding {
            assert!(d.change.is_none());
            assert!(hold.remaining.is_none_or(|r| !r.is_zero()), "a hold never says 0 s left: {}", ctx(&sim));
        }

        let Some(change) = &d.change else { continue };
        let since = |t: Option<Time>| t.map_or(Duration::MAX, |t| now - t);
        // Cooldowns, whoever made the previous change.
        if let Some(step) = config.step.iter().find(|s| s.name == change.policy) {
            assert!(since(last_change) >= step.cooldown, "{} acted within its cooldown: {}", step.name, ctx(&sim));
        }
        if let Some(tt) = config.target_tracking.iter().find(|t| t.name == change.policy) {
            match change.direction() {
                Some(Direction::In) => {
                    assert!(since(last_change) >= tt.scale_in_cooldown, "scale-in within cooldown: {}", ctx(&sim))
                }
                Some(Direction::Out) if !change.reason.starts_with("burst:") => {
                    assert!(since(last_increase) >= tt.scale_out_cooldown, "scale-out within cooldown: {}", ctx(&sim))
                }
                _ => {}
            }
        }
        // Missing CPU never scales a CPU policy in.
        let cpu_policy = config.target_tracking.iter().any(|t| t.name == change.policy && t.metric.as_str() == "cpu")
            || config.step.iter().any(|s| s.name == change.policy && s.alarm.metric.as_str() == "cpu");
        if cpu_missing && cpu_policy {
            assert_ne!(change.direction(), Some(Direction::In), "scaled in on missing CPU: {}", ctx(&sim));
        }
        last_change = Some(now);
        if change.to > change.from {
            last_increase = Some(now);
        }
    }
    transcript
}

#[test]
fn decisions_stay_in_bounds_and_respect_cooldowns() {
    for (name, config, bounds) in configs() {
        let mut changes = 0;
        for seed in 1..=SEEDS {
            changes += run(name, &config, bounds, seed).iter().filter(|l| l.contains(" -> ")).count();
        }
        assert!(changes > SEEDS as usize, "{name}: the timelines should exercise scaling, saw {changes} changes");
    }
}

#[test]
fn the_same_inputs_give_the_same_decisions() {
    for (name, config, bounds) in configs() {
        for seed in [3, 17] {
            assert_eq!(run(name, &config, bounds, seed), run(name, &config, bounds, seed), "{name}, seed {seed}");
        }
    }
}

/// A clone taken mid-run (the simulator forks a live autoscaler to ask
/// "what if") decides exactly as the original from then on.
#[test]
fn a_cloned_autoscaler_decides_the_same() {
    let (config, bounds) = example("examples/s1-flask-asg/ebb.fast.toml");
    let mut sim = Sim::new(&config, bounds);
    sim.demand = 300.0;
    sim.run(20);
    let mut fork = sim.scaler.clone();
    let fleet = ebb_core::scaling::FleetView {
        desired: sim.desired,
        in_service: sim.in_service(),
        pending: 0,
        deploying: false,
    };
    for t in 21..60 {
        let now = secs(t);
        let mut sample = ebb_core::scaling::ServiceSample::new(now);
        let mut r = ebb_core::scaling::ReplicaSample::new("web-1", Some(secs(0)));
        r.cpu_percent = Some((t * 7 % 100) as f64);
        sample.replicas.push(r);
        sim.scaler.observe(sample.clone());
        fork.observe(sample);
        let a = sim.scaler.decide(now, MONDAY + t as i64, &fleet);
        let b = fork.decide(now, MONDAY + t as i64, &fleet);
        assert_eq!(a, b);
    }
}

/// With no CPU numbers at all, CPU policies never shrink the fleet, however
/// long it runs.
#[test]
fn missing_metrics_never_scale_in() {
    for (name, config, bounds) in configs() {
        let mut sim = Sim::new(&config, bounds);
        sim.cpu_missing = true;
        sim.requests = f64::NAN; // no request numbers either
        sim.run(TICKS);
        let shrunk: Vec<_> = sim
            .changes
            .iter()
            .filter(|(_, c)| c.to < c.from && c.policy != "off-peak" && c.policy != "bounds" && c.policy != "manual")
            .collect();
        assert!(shrunk.is_empty(), "{name}: {shrunk:?}\n{}", sim.told());
    }
}
