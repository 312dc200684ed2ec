//! The simulator engine end to end in the core: the same autoscaler as
//! live, timelines, presets, determinism.

use std::time::Duration;

use ebb_core::config::{Bounds, Config, Replicas};
use ebb_core::scaling::{Autoscaler, FleetView, Metric, ReplicaSample, ScalingConfig, ServiceSample, TargetTracking};
use ebb_core::sim::{parse_shape, simulate, FleetModel, Policy, Preset, Run, SimOptions, Trace};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn cpu_policy() -> Policy {
    let mut t = TargetTracking::new(Metric::Cpu, 80.0);
    t.window = s(30);
    t.scale_out_cooldown = s(30);
    t.scale_in_cooldown = s(60);
    t.scale_in_stabilization = s(120);
    Policy {
        name: "cpu".into(),
        scaling: ScalingConfig { target_tracking: vec![t], ..Default::default() },
        replicas: Replicas { bounds: Bounds { min: 1, max: 50 }, desired: 2 },
        idle: None,
        warm_pool: None,
    }
}

/// The engine's first decision is the one the autoscaler itself gives on
/// the sample the engine describes: no re-implementation in between.
#[test]
fn the_engine_asks_the_same_autoscaler() {
    let trace = Trace::new(vec![90.0; 5], "flat");
    let model = FleetModel { capacity: 50.0, boot: s(2), ..Default::default() };
    let run = simulate(&cpu_policy(), &model, &trace, &SimOptions::default());

    // By hand: 2 replicas in service since 0 at 90 % (90 of 100 req/s).
    let policy = cpu_policy();
    let mut autoscaler = Autoscaler::new(&policy.scaling, policy.replicas.bounds);
    let mut first = None;
    for t in 1..=5 {
        let mut sample = ServiceSample::new(s(t));
        for _ in 0..2 {
            let mut r = ReplicaSample::new("", Some(s(0)));
            r.cpu_percent = Some(90.0);
            r.requests_per_s = Some(45.0);
            r.in_flight = Some(9.0);
            sample.replicas.push(r);
        }
        autoscaler.observe(sample);
        let fleet = FleetView { desired: 2, in_service: 2, pending: 0, deploying: false };
        let d = autoscaler.decide(s(t), 0, &fleet);
        if let Some(change) = d.change {
            first = Some((t, change.to_string()));
            break;
        }
    }
    let (at, reason) = first.expect("90 % is outside the ±10 % band: scale out");
    assert_eq!((run.events[0].at, run.events[0].reason.clone()), (at, reason));
    assert_eq!(run.events[0].reason, "scale out 2 -> 3 by target-cpu: target tracking cpu: mean 90.0% over 2 warm replicas in the last 30 s vs target 80% -> ceil(2 × 90.0 / 80) = 3");
}

/// A step up and back down: out once the window's mean leaves the band,
/// back in only after the stabilisation window and cooldown.
#[test]
fn a_step_trace_scales_out_after_the_window_and_in_after_the_stabilisation() {
    let trace = parse_shape("step:base=60,peak=300,at=300,hold=900,duration=2400", 0).unwrap();
    let model = FleetModel { capacity: 50.0, boot: s(5), ..Default::default() };
    let run = simulate(&cpu_policy(), &model, &trace, &SimOptions::default());
    let scaled: Vec<_> = run.events.iter().filter(|e| e.kind == "scaled").collect();
    // 2 replicas at 60 req/s: 60 %, below the band but the current count is
    // the first recommendation: ceil(2 × 60 / 80) = 2, nothing to do.
    assert!(scaled[0].at > 300, "nothing happens before the step: {:?}", scaled[0]);
    // At 100 % from 300 s, the 30 s mean passes 88 % (the band's top) after 21 s.
    assert!(scaled[0].at <= 300 + 30 && scaled[0].reason.starts_with("scale out 2 -> 3"), "{:?}", scaled[0]);
    let peak = run.seconds[1199].desired;
    assert_eq!(peak, 8, "300 req/s at 40 req/s per replica (80 % of 50)");
    let first_in = scaled.iter().find(|e| e.at > 1200).expect("scales in after the load falls");
    assert!(first_in.at >= 1200 + 120, "not before the 120 s stabilisation window: {first_in:?}");
    assert!(first_in.reason.starts_with("scale in"), "{first_in:?}");
    assert_eq!(run.seconds.last().unwrap().desired, 2, "back to what 60 req/s needs");
    assert_eq!(run.summary.scale_outs + run.summary.scale_ins, run.summary.scaling_actions);
}

#[test]
fn presets_run_through_the_same_engine() {
    let trace = parse_shape("step:base=40,peak=400,at=10m,duration=2h", 0).unwrap();
    let service = cpu_policy();
    let model = FleetModel { capacity: 50.0, boot: s(30), ..Default::default() };
    for preset in Preset::ALL {
        let policy =
            Policy { name: preset.name().into(), scaling: preset.scaling(&service.scaling), ..service.clone() };
        let run = simulate(&policy, &model, &trace, &SimOptions::default());
        let first = run.events.first().unwrap_or_else(|| panic!("{} never scales", preset.name()));
        assert!(
            first.reason.contains(&format!("by {}", if preset == Preset::Aws { "aws-out" } else { preset.name() })),
            "{first:?}"
        );
        assert!(run.summary.max_desired >= 10, "{}: {}", preset.name(), run.summary.max_desired);
        if preset == Preset::Aws {
            // 3 one-minute periods above the target: the oldest may start
            // before the step if the minutes after it pull its mean over 80 %.
            assert!(first.at > 600 + 120 && first.at <= 600 + 180, "{first:?}");
        }
    }
}

#[test]
fn same_inputs_and_seed_same_run() {
    let trace = parse_shape("diurnal:base=50,peak=900,duration=6h,noise=0.2", 7).unwrap();
    let model = FleetModel { failure_rate: 0.5, seed: 7, ..Default::default() };
    let a = simulate(&cpu_policy(), &model, &trace, &SimOptions::default());
    let b = simulate(&cpu_policy(), &model, &trace, &SimOptions::default());
    assert_eq!(a.seconds, b.seconds);
    assert_eq!(a.events, b.events);
    assert_eq!(a.summary, b.summary);
    let c = simulate(&cpu_policy(), &FleetModel { seed: 8, ..model }, &trace, &SimOptions::default());
    assert_ne!(a.events, c.events, "another seed, other failures");
}

/// The story examples' policies run as they are written.
#[test]
fn the_example_configs_simulate() {
    for example in ["s1-flask-asg", "s2-http-scale-out", "s3-ecs-django"] {
        let path = format!("{}/../../examples/{example}/ebb.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::parse(&text, std::path::Path::new(&path)).unwrap();
        let (name, service) = config.services.iter().next().unwrap();
        let policy = Policy {
            name: example.into(),
            scaling: service.scaling.clone(),
            replicas: service.replicas,
            idle: None,
            warm_pool: None,
        };
        let trace = parse_shape("step:base=20,peak=400,at=5m,hold=30m,duration=2h", 0).unwrap();
        let options = SimOptions { service: name.clone(), ..Default::default() };
        let run = simulate(&policy, &FleetModel::default(), &trace, &options);
        assert!(run.summary.max_desired > service.replicas.bounds.min, "{example} scales out: {:?}", run.summary);
        assert_eq!(run.seconds.last().unwrap().desired, service.replicas.bounds.min, "{example} scales back in");
    }
}

/// With `max_in_flight`, the simulated balancer has a queue, as live: a
/// step far beyond the fleet queues requests, demand sizing grows the fleet
/// before the CPU window has caught up, and no scale-in happens while the
/// backlog lasts. Without the limit (as live without one) the same run
/// scales on CPU alone.
#[test]
fn a_simulated_queue_drives_demand_sizing_and_holds_scale_in() {
    let mut rates = vec![40.0; 30];
    rates.extend(vec![600.0; 60]);
    rates.extend(vec![40.0; 200]);
    let trace = Trace::new(rates, "step");
    let limited = FleetModel { capacity: 50.0, boot: s(2), max_in_flight: Some(8), ..Default::default() };
    let run = simulate(&cpu_policy(), &limited, &trace, &SimOptions::default());
    let first = &run.events[0];
    assert!(
        first.reason.starts_with("scale out 2 -> 6 by saturation: saturation: requests queued for 3 s"),
        "{}",
        first.reason
    );
    assert!(first.at <= 34, "3 s after the step at 30 s, not after the 30 s CPU window: {}", first.at);
    // While the backlog lasts, nothing shrinks.
    for sec in &run.seconds {
        if sec.queue_ms > 0.0 {
            let shrank = run.events.iter().any(|e| e.at == u64::from(sec.second) + 1 && e.to < e.from);
            assert!(!shrank, "scale-in at {} s with a backlog", sec.second + 1);
        }
    }

    let unlimited = FleetModel { max_in_flight: None, ..limited };
    let run = simulate(&cpu_policy(), &unlimited, &trace, &SimOptions::default());
    assert!(run.events.iter().all(|e| !e.reason.contains("by saturation")), "no balancer queue, no demand sizing");
}

/// Scale to zero in the simulator: the same `Idler` as live. A quiet night
/// between two busy spells: idle after `after`, the first request of the
/// morning held through a boot and served, fewer replica-hours.
#[test]
fn a_quiet_spell_goes_idle_and_the_next_request_wakes_the_service() {
    use ebb_core::config::{IdleConfig, IdleMode};
    let mut rates = vec![10.0; 120];
    rates.extend(vec![0.0; 1200]);
    rates.extend(vec![10.0; 120]);
    let trace = Trace::new(rates, "night");
    let model = FleetModel { capacity: 50.0, boot: s(5), ..Default::default() };
    let fixed = Policy {
        name: "always up".into(),
        scaling: ScalingConfig::default(),
        replicas: Replicas { bounds: Bounds { min: 0, max: 2 }, desired: 1 },
        idle: None,
        warm_pool: None,
    };
    let idle = IdleConfig {
        after: s(300),
        mode: IdleMode::Stop,
        hold_timeout: s(30),
        max_held: 1000,
        ignore_user_agents: Vec::new(),
    };
    let zero = Policy { name: "scale to zero".into(), idle: Some(idle), ..fixed.clone() };
    let up = simulate(&fixed, &model, &trace, &SimOptions::default());
    let run = simulate(&zero, &model, &trace, &SimOptions::default());

    let kinds: Vec<(u64, &str)> =
        run.events.iter().filter(|e| ["idle", "waking", "woken"].contains(&e.kind)).map(|e| (e.at, e.kind)).collect();
    assert_eq!(kinds.len(), 3, "{:?}", run.events);
    assert_eq!(kinds[0], (120 + 300, "idle"), "idle `after` the last request");
    // In its own second (1320), as live wakes on its arrival.
    assert_eq!(kinds[1], (1320, "waking"), "the first request of the morning wakes it");
    assert_eq!(kinds[2].1, "woken");
    assert!(kinds[2].0 <= 1320 + 6, "woken once the boot (5 s) is done: {kinds:?}");
    assert_eq!(run.seconds[1000].desired, 0, "at zero through the night");
    assert_eq!(run.seconds[1000].in_service, 0);
    assert_eq!(run.summary.shed_requests, 0.0, "held through the boot, none refused: {:?}", run.summary);
    assert!((run.summary.served_requests - up.summary.served_requests).abs() < 1.0, "every request served");
    assert!(
        run.summary.replica_hours < up.summary.replica_hours * 0.5,
        "{} replica-hours instead of {}",
        run.summary.replica_hours,
        up.summary.replica_hours
    );
    let waited = run.seconds[1321..1330].iter().map(|s| s.queue_ms).fold(0.0, f64::max);
    assert!(waited >= 1000.0, "the wake's cost shows as queue time: {waited} ms");
}

fn night() -> Trace {
    let mut rates = vec![10.0; 120];
    rates.extend(vec![0.0; 1200]);
    rates.extend(vec![10.0; 120]);
    Trace::new(rates, "night")
}

fn idle_config(mode: ebb_core::config::IdleMode) -> ebb_core::config::IdleConfig {
    ebb_core::config::IdleConfig {
        after: s(300),
        mode,
        hold_timeout: s(30),
        max_held: 1000,
        ignore_user_agents: Vec::new(),
    }
}

/// Scale to zero's `suspend` mode in the simulator: the replica stays,
/// frozen (suspended replica-hours, not replica-hours), and the first
/// request of the morning waits for a thaw (`resume`), not a boot.
#[test]
fn a_suspend_wake_costs_a_resume_not_a_boot() {
    use ebb_core::config::IdleMode;
    let model = FleetModel { capacity: 50.0, boot: s(5), resume: Duration::from_millis(100), ..Default::default() };
    let fixed = Policy {
        name: "always up".into(),
        scaling: ScalingConfig::default(),
        replicas: Replicas { bounds: Bounds { min: 0, max: 2 }, desired: 1 },
        idle: None,
        warm_pool: None,
    };
    let stop = Policy { name: "stop".into(), idle: Some(idle_config(IdleMode::Stop)), ..fixed.clone() };
    let suspend = Policy { name: "suspend".into(), idle: Some(idle_config(IdleMode::Suspend)), ..fixed.clone() };
    let up = simulate(&fixed, &model, &night(), &SimOptions::default());
    let stopped = simulate(&stop, &model, &night(), &SimOptions::default());
    let run = simulate(&suspend, &model, &night(), &SimOptions::default());

    let kinds: Vec<(u64, &str)> =
        run.events.iter().filter(|e| ["idle", "waking", "woken"].contains(&e.kind)).map(|e| (e.at, e.kind)).collect();
    assert_eq!(kinds, [(420, "idle"), (1320, "waking"), (1321, "woken")], "{:?}", run.events);
    let night_second = &run.seconds[1000];
    assert_eq!(
        (night_second.in_service, night_second.pending, night_second.suspended),
        (0, 0, 1),
        "frozen, not stopped"
    );
    assert_eq!(night_second.desired, 1, "suspended replicas are still capacity");
    assert_eq!(run.summary.shed_requests, 0.0, "{:?}", run.summary);
    assert!((run.summary.served_requests - up.summary.served_requests).abs() < 1.0, "every request served");
    // The night's 900 s frozen are suspended hours, not replica-hours.
    assert!((run.summary.suspended_hours - 900.0 / 3600.0).abs() < 0.01, "{:?}", run.summary);
    assert!((run.summary.replica_hours - stopped.summary.replica_hours).abs() < 0.01, "{:?}", run.summary);
    assert_eq!(stopped.summary.suspended_hours, 0.0);
    // The wake costs a thaw: under a second of waiting, where a boot cost 5 s.
    let worst = |run: &Run| run.seconds[1320..1330].iter().map(|s| s.queue_ms).fold(0.0, f64::max);
    assert!(worst(&run) < 200.0, "a thaw: {} ms", worst(&run));
    assert!(worst(&stopped) >= 1000.0, "a boot: {} ms", worst(&stopped));
}

/// A warm pool in the simulator, by the live planner's rules: a step up
/// takes the pool's members (serving a `resume` later instead of a boot),
/// the pool refills, and its members are suspended replica-hours.
#[test]
fn a_warm_pool_turns_a_scale_out_into_a_resume() {
    use ebb_core::config::WarmPoolConfig;
    let mut rates = vec![60.0; 120];
    rates.extend(vec![160.0; 600]);
    let trace = Trace::new(rates, "step");
    let model = FleetModel { capacity: 50.0, boot: s(60), resume: Duration::from_millis(100), ..Default::default() };
    let cold = cpu_policy();
    let warm = Policy { name: "warm pool".into(), warm_pool: Some(WarmPoolConfig { size: 3 }), ..cpu_policy() };
    let cold_run = simulate(&cold, &model, &trace, &SimOptions::default());
    let run = simulate(&warm, &model, &trace, &SimOptions::default());

    let out = run.events.iter().find(|e| e.kind == "scaled").expect("a scale-out");
    let taken: Vec<_> = run.events.iter().filter(|e| e.kind == "warm_replica_used").collect();
    assert!(!taken.is_empty() && taken[0].at == out.at, "taken at the scale-out: {:?}", run.events);
    assert!(taken[0].reason.contains("resumed in 100 ms"), "{:?}", taken[0]);
    let t = out.at as usize;
    let grown = out.to.unwrap() - out.from.unwrap();
    assert_eq!(run.seconds[t + 1].in_service, run.seconds[t - 1].in_service + grown, "in service a resume later");
    assert_eq!(cold_run.seconds[t + 1].in_service, cold_run.seconds[t - 1].in_service, "the cold fleet still boots");
    assert_eq!(run.seconds[t + 1].suspended, 3, "the pool refills at once (booting members count)");
    assert!(run.summary.suspended_hours > 0.0 && cold_run.summary.suspended_hours == 0.0);
    assert!(
        run.summary.slo_violation_seconds < cold_run.summary.slo_violation_seconds,
        "{} s over the SLO with the pool, {} s without",
        run.summary.slo_violation_seconds,
        cold_run.summary.slo_violation_seconds
    );
}
