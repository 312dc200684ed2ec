//! Timelines of the saturation rules: the scale-in guard, demand sizing,
//! and the host as a level of capacity, each told as what a user would
//! see second by second.

mod support;

use ebb_core::scaling::{Demand, HoldKind, HostSample};
use support::{example, scaling, secs, Sim};

/// Every routable replica holds its limit of 8 and `queued` wait behind
/// them (the S3 fast example's `max_in_flight`).
fn queue(in_flight: u32, queued: u32) -> Option<Demand> {
    Some(Demand { offered_per_s: 100.0, served_per_s: 40.0, queued, in_flight, limit: Some(8), ..Default::default() })
}

const FULL_HOST: Option<HostSample> = Some(HostSample { cpus: 2.0, busy_cpus: 2.0, pressure: Some(0.46) });

/// A fleet of `n` in service at t = 0, on an example's policies.
fn fleet_of(path: &str, n: u32) -> Sim {
    let (config, mut bounds) = example(path);
    bounds.desired = n;
    let mut sim = Sim::new(&config, bounds);
    sim.boot = secs(2);
    sim
}

/// The S3 incident: the host stalls, the replicas' CPU readings fall to
/// 15 % while every replica holds its 8 requests with 60 more queued. The
/// CPU policy alone would scale 5 -> 1; the fleet stays at 5, and says why.
#[test]
fn a_host_stall_that_queues_requests_never_shrinks_the_fleet() {
    let mut sim = fleet_of("examples/s3-ecs-django/ebb.fast.toml", 5);
    sim.demand = 5.0 * 85.0; // 85 % each: in the band
    sim.requests = 100.0; // what the queue's balancer sees offered: no traffic drop to freeze on
    sim.run_until(30);
    assert!(sim.changes.is_empty(), "{}", sim.told());

    sim.demand = 5.0 * 15.0; // the stall: CPU readings drop…
    sim.queue = queue(40, 60); // …while requests queue
    sim.run_until(60);
    assert!(sim.changes.is_empty(), "no scale-in during the stall\n{}", sim.told());
    let hold = sim.last.as_ref().unwrap().holding.clone().unwrap();
    assert_eq!(hold.kind, HoldKind::MaxReached, "demand sizing wants more, max is 5: {hold}");
    assert_eq!(hold.why, "max reached: saturation wants 10, max is 5");

    // The queue clears; CPU stays low: scale-in waits out the settle time
    // (5 s), then the policy's own cooldown and stabilisation.
    sim.queue = None;
    sim.run_until(62);
    assert!(sim.holding().starts_with("settling after saturation (60 requests queued"), "{}", sim.holding());
    let first = sim.run_until_change(30).expect("scale-in once settled");
    assert!(first >= 65, "scale-in at {first} s, within 5 s of the last queued second\n{}", sim.told());
    assert!(sim.changes[0].1.to < 5, "{}", sim.told());
}

/// The same stall with the guard turned off by name: the CPU policy scales
/// in while requests queue (what ebb did before, now only on request).
#[test]
fn the_guard_is_off_only_when_the_config_says_so() {
    let (config, mut bounds) = scaling(
        r#"[[service.web.scaling.target_tracking]]
metric = "cpu"
target = 80
window = "2s"
scale_in_cooldown = "5s"
scale_in_stabilization = "5s"

[service.web.scaling.saturation]
hold_scale_in = false
scale_out = false
"#,
        "{ min = 1, max = 5, desired = 5 }",
    );
    bounds.desired = 5;
    let mut sim = Sim::new(&config, bounds);
    sim.demand = 5.0 * 15.0;
    sim.queue = queue(40, 60);
    sim.run_until(30);
    assert!(sim.desired < 5, "without the guard the stall shrinks the fleet\n{}", sim.told());
}

/// Story S2 with a per-replica limit: CPU reads 82 %, inside the ±10 %
/// band, so target tracking stays; but 68 requests queue behind 4 full
/// replicas. After 3 s of queueing, demand sizing grows the fleet, and
/// says which signal decided.
#[test]
fn a_saturated_fleet_in_the_tolerance_band_scales_out_on_demand() {
    let mut sim = fleet_of("examples/s2-http-scale-out/ebb.fast.toml", 4);
    sim.demand = 4.0 * 82.0;
    sim.queue = queue(32, 68);
    let at = sim.run_until_change(10).expect("a scale-out");
    assert_eq!(at, 3, "after 3 s of queueing\n{}", sim.told());
    let (_, change) = &sim.changes[0];
    assert_eq!((change.from, change.to, change.policy.as_str()), (4, 8, "saturation"));
    assert!(
        change.reason.contains("(32 in flight + 68 queued) / 8) = 13"),
        "the event names the signal and the arithmetic: {}",
        change.to_string()
    );
    assert_eq!(change.capped.as_ref().unwrap().note, "demand sizing grows at most max(×2, +4) from 4: 8 (wanted 13)");

    // The new replicas boot (2 s); the queue persists: a whole new window
    // of queueing after the change, then the rest.
    let next = sim.run_until_change(10).expect("a second step");
    assert!(next >= 6, "the first step got its window to act (at {next} s)\n{}", sim.told());
    assert_eq!(sim.desired, 13, "{}", sim.told());
}

/// The S2 run on a 2-core host: 8 quarter-core replicas are the whole host.
/// CPU reads 82 % of an allotment the host cannot give; requests queue.
/// More local replicas would add nothing: the fleet holds and says so.
#[test]
fn a_full_host_holds_scale_out_and_says_so() {
    let mut sim = fleet_of("examples/s2-http-scale-out/ebb.fast.toml", 8);
    sim.host = FULL_HOST;
    sim.demand = 8.0 * 75.0;
    sim.run_until(10); // the host has been full for a whole window
    sim.demand = 8.0 * 100.0;
    sim.queue = queue(64, 200);
    sim.run_until(40);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    let hold = sim.last.as_ref().unwrap().holding.clone().unwrap();
    assert_eq!(hold.kind, HoldKind::HostFull);
    assert!(
        hold.why.starts_with(
            "host full: 2.0 of 2 CPUs busy (CPU pressure 46%); more local replicas would not add capacity — lower cpu per replica, raise the host, or run on Swarm"
        ),
        "{hold}"
    );

    // The same fleet on Swarm: its replicas do not run on ebb's host.
    let mut swarm = fleet_of("examples/s2-http-scale-out/ebb.fast.toml", 8);
    swarm.demand = 8.0 * 100.0;
    swarm.queue = queue(64, 200);
    swarm.run_until(30);
    assert!(swarm.desired > 8, "{}", swarm.told());
}

/// At 82 % of their allotments the replicas sit "within the band", but the
/// host is full: status says host full, not a calm fleet (S2's 3 minutes
/// of "within ±10 %").
#[test]
fn a_full_host_is_said_even_when_the_policy_is_content() {
    let mut sim = fleet_of("examples/s2-http-scale-out/ebb.fast.toml", 8);
    sim.host = FULL_HOST;
    sim.demand = 8.0 * 82.0;
    sim.run_until(20);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    let hold = sim.last.as_ref().unwrap().holding.clone().unwrap();
    assert_eq!(hold.kind, HoldKind::HostFull);
    assert!(hold.why.starts_with("host full: 2.0 of 2 CPUs busy"), "{hold}");
    assert!(hold.why.ends_with("; cpu 82.0% is within ±10% of target 80%"), "{hold}");
}

/// A CPU reading taken while the host is full is contended: 30 % of an
/// allotment the host could not give is not headroom.
#[test]
fn contended_cpu_readings_are_not_headroom() {
    let mut sim = fleet_of("examples/s2-http-scale-out/ebb.fast.toml", 6);
    sim.host = FULL_HOST;
    sim.demand = 6.0 * 30.0;
    sim.run_until(40);
    assert!(sim.changes.is_empty(), "{}", sim.told());
    assert!(sim.holding().contains("CPU readings are contended"), "{}", sim.holding());

    sim.host = Some(HostSample { cpus: 2.0, busy_cpus: 0.6, pressure: Some(0.0) });
    sim.run_until(80);
    assert!(sim.desired < 6, "the host has room again: the readings count\n{}", sim.told());
}

/// A scheduled scale-in that fires during an overload waits for the guard,
/// then applies.
#[test]
fn a_scheduled_scale_in_waits_for_the_queue_to_clear() {
    let (config, mut bounds) = scaling(
        r#"[[service.web.scaling.scheduled]]
name = "night"
cron = "1 0 * * *"
desired = 2
"#,
        "{ min = 1, max = 10, desired = 6 }",
    );
    bounds.desired = 6;
    let mut sim = Sim::new(&config, bounds);
    sim.requests = 100.0; // offered as while queued: no traffic drop to freeze on
    sim.queue = queue(48, 30);
    sim.run_until(90); // 00:01 passes at t = 60
    assert!(sim.changes.iter().all(|(_, c)| c.to > c.from), "no scale-in while queued\n{}", sim.told());
    assert!(sim.holding().contains("scheduled action night wants 2, applied once it lifts"), "{}", sim.holding());
    sim.queue = None;
    let at = sim.run_until_change(10).expect("the deferred action");
    assert_eq!(at, 95, "5 s of settle after the last queued second at 90\n{}", sim.told());
    assert_eq!((sim.desired, sim.changes.last().unwrap().1.policy.as_str()), (2, "night"));
}

/// Story S3's real config after `hey -c 1000`: the replica reads 100 % now
/// but the policy decides on a 1-minute mean that has not caught up. Status
/// says so instead of showing nothing.
#[test]
fn a_long_window_that_has_not_caught_up_says_so() {
    let (config, bounds) = example("examples/s3-ecs-django/ebb.toml");
    let mut sim = Sim::new(&config, bounds);
    sim.demand = 40.0;
    sim.run_until(20);
    sim.demand = 120.0;
    sim.run_until(30);
    let hold = sim.last.as_ref().unwrap().holding.clone().expect("a reason");
    assert_eq!(hold.kind, HoldKind::Window, "{hold}");
    assert_eq!(
        hold.why,
        "cpu 100.0% in the last 10 s is above target 80%, but prod-backend-web-cpu decides on the mean over 1 min (60.0%, only 29 s of it seen so far)"
    );
}

/// Story S1's step policy needs 2 periods of 30 s above 60 %: in the
/// first period of a load step nothing may change yet, and status says
/// what the alarm waits for instead of nothing.
#[test]
fn an_alarm_that_has_not_fired_yet_says_what_it_waits_for() {
    let (config, bounds) = example("examples/s1-flask-asg/ebb.toml");
    let mut sim = Sim::new(&config, bounds);
    sim.demand = 2.0 * 30.0;
    sim.run_until(60);
    sim.demand = 2.0 * 95.0;
    sim.run_until(90); // the first period of the step has ended
    assert!(sim.changes.is_empty(), "{}", sim.told());
    let hold = sim.last.as_ref().unwrap().holding.clone().expect("a reason while cpu is above the threshold");
    assert_eq!(hold.kind, HoldKind::Window, "{hold}");
    assert!(
        hold.why.starts_with("alarm cpu-high breached in 1 of 2 periods of 30 s (fires at 2): cpu 95.0%"),
        "{hold}"
    );
}
