//! Shadow policies: evaluated every second on the same samples as the
//! active ones, by the same `Autoscaler` type, and never applied.

mod support;

use ebb_core::scaling::{Autoscaler, FleetView, ReplicaSample, ServiceSample, Shadow};
use support::{scaling, secs};

const ACTIVE_AND_SHADOW: &str = r#"[[service.web.scaling.target_tracking]]
name = "cpu-80"
metric = "cpu"
target = 80
window = "10s"

[[service.web.scaling.shadow.target_tracking]]
name = "cpu-60"
metric = "cpu"
target = 60
window = "10s"
scale_out_cooldown = "30s"
"#;

/// Three replicas in service since 0 s, each at `cpu` %.
fn sample(t: u64, cpu: f64) -> ServiceSample {
    let mut s = ServiceSample::new(secs(t));
    for i in 1..=3 {
        let mut r = ReplicaSample::new(format!("web-{i}"), Some(secs(0)));
        r.cpu_percent = Some(cpu);
        s.replicas.push(r);
    }
    s
}

/// 3 replicas at 70 %: within reach of the active target of 80 %
/// (ceil(3 × 70 / 80) = 3), above the shadow's 60 % (ceil(3 × 70 / 60) =
/// ceil(3.5) = 4). The shadow says it would scale out; desired stays 3.
#[test]
fn a_shadow_policy_decides_beside_the_active_one_and_never_changes_desired() {
    let (config, bounds) = scaling(ACTIVE_AND_SHADOW, "{ min = 1, max = 10, desired = 3 }");
    let shadow_policies = config.shadow.as_ref().unwrap();
    assert_eq!(shadow_policies.target_tracking[0].name, "cpu-60");
    assert!(config.target_tracking.iter().all(|p| p.name == "cpu-80"), "the shadow is not an active policy");

    let mut active = Autoscaler::new(&config, bounds.bounds);
    let mut shadow = Shadow::new(&config, bounds.bounds).expect("a shadow");
    let mut desired = bounds.desired;
    let mut said = Vec::new();
    for t in 1..=60 {
        let s = sample(t, 70.0);
        shadow.observe(s.clone());
        active.observe(s);
        let fleet = FleetView { desired, in_service: 3, pending: 0, deploying: false };
        if let Some(change) = active.decide(secs(t), 0, &fleet).change {
            desired = change.to;
        }
        if let Some(change) = shadow.decide(secs(t), 0, &fleet).change {
            said.push((t, Shadow::describe(&change)));
        }
    }
    assert_eq!(desired, 3, "the live desired never moves");
    assert_eq!(shadow.desired(), Some(4));
    // Once: from its own count of 4 the same readings ask for no more.
    assert_eq!(
        said,
        [(
            1,
            "shadow cpu-60 would scale out 3 -> 4: target tracking cpu: mean 70.0% over 3 warm replicas in the last 10 s vs target 60% -> ceil(3 × 70.0 / 60) = 4".to_string()
        )]
    );

    // The load doubles: the shadow scales on from its own count, after its
    // cooldown of 30 s from its last scale-out (at 1 s), i.e. at 61 s.
    for t in 61..=62 {
        let s = sample(t, 100.0);
        shadow.observe(s.clone());
        active.observe(s);
        let fleet = FleetView { desired, in_service: 3, pending: 0, deploying: false };
        assert_eq!(active.decide(secs(t), 0, &fleet).change, None, "the active window still averages under 88 %");
        if let Some(change) = shadow.decide(secs(t), 0, &fleet).change {
            said.push((t, format!("{} -> {}", change.from, change.to)));
        }
    }
    // 10 s mean at 61 s: (9 × 70 + 100) / 10 = 73: ceil(3 × 73 / 60) = 4, not above 4.
    assert_eq!(said.len(), 1, "{said:?}");
}

/// No shadow table: no shadow.
#[test]
fn without_shadow_policies_there_is_no_shadow() {
    let (config, bounds) =
        scaling("[[service.web.scaling.target_tracking]]\nmetric = \"cpu\"\ntarget = 80\n", "{ min = 1, max = 4 }");
    assert!(Shadow::new(&config, bounds.bounds).is_none());
}

/// A shadow step pair (AWS's cpu-high / cpu-low) runs as one alternative:
/// the scheduled actions and bounds of the service apply to it too.
#[test]
fn a_shadow_step_policy_uses_the_shadow_count() {
    let (config, bounds) = scaling(
        r#"[[service.web.scaling.target_tracking]]
metric = "cpu"
target = 80

[[service.web.scaling.shadow.step]]
name = "cpu-high"
alarm = { metric = "cpu", comparison = ">", threshold = 60, period = "10s" }
steps = [{ lower = 0, adjustment = 2 }]
cooldown = "20s"
"#,
        "{ min = 1, max = 6, desired = 3 }",
    );
    let mut shadow = Shadow::new(&config, bounds.bounds).unwrap();
    let mut tos = Vec::new();
    for t in 1..=45 {
        shadow.observe(sample(t, 70.0));
        let fleet = FleetView { desired: 3, in_service: 3, pending: 0, deploying: false };
        if let Some(change) = shadow.decide(secs(t), 0, &fleet).change {
            tos.push((t, change.from, change.to));
        }
    }
    // The first sample is at 1 s, so the 10 s period is covered at 11 s:
    // 3 + 2 = 5; after the 20 s cooldown, 5 + 2 = 7, capped at max 6. The
    // live count (3, as the fleet view says) is never the base.
    assert_eq!(tos, [(11, 3, 5), (31, 5, 6)]);
}
