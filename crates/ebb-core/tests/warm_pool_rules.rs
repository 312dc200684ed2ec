//! The warm pool's rules, one table each: pool members boot, pass their
//! checks once and are suspended; a short fleet takes them before it
//! boots; the pool refills; a deploy replaces them; they never count.

use ebb_core::config::Config;
use ebb_core::fleet::{plan, routable, Counts, CrashLoop, FleetAction, FleetInput, ReplicaFacts, ReplicaPhase, Routes};
use std::path::Path;
use std::time::Duration;

use ReplicaPhase::{InService, Leaving, Starting};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn replica(id: &'static str, phase: ReplicaPhase, started: u64) -> ReplicaFacts<'static> {
    ReplicaFacts::new(id, 1, phase, s(started))
}

/// A pool member of version 1, frozen once in service.
fn pooled(id: &'static str, phase: ReplicaPhase, started: u64) -> ReplicaFacts<'static> {
    ReplicaFacts { pooled: true, suspended: phase == InService, ..replica(id, phase, started) }
}

/// `take ID` / `launch N` / `fill N` / `suspend ID` / `retire ID (reason)`
/// at t = 100 s, current version 1, for a pool of `size`.
fn actions(desired: u32, size: u32, replicas: &[ReplicaFacts], deploying: bool, crash_loop: &CrashLoop) -> Vec<String> {
    let input = FleetInput { now: s(100), desired, current_version: 1, deploying, replicas, warm_pool: size };
    plan(&input, crash_loop)
        .into_iter()
        .map(|a| match a {
            FleetAction::Launch { count, .. } => format!("launch {count}"),
            FleetAction::Retire { id, reason } => format!("retire {id} ({reason})"),
            FleetAction::HoldStarts { short, .. } => format!("hold {short}"),
            FleetAction::TakeFromPool { id } => format!("take {id}"),
            FleetAction::FillPool { count } => format!("fill {count}"),
            FleetAction::SuspendPooled { id } => format!("suspend {id}"),
        })
        .collect()
}

fn act(desired: u32, size: u32, replicas: &[ReplicaFacts]) -> Vec<String> {
    actions(desired, size, replicas, false, &CrashLoop::default())
}

#[test]
fn an_empty_pool_is_filled_beside_the_fleet() {
    let fleet = [replica("web-1", InService, 1)];
    assert_eq!(act(1, 2, &fleet), ["fill 2"]);
    assert_eq!(act(2, 2, &fleet), ["launch 1", "fill 2"], "the fleet's own launch is not taken from the pool's");
    let fleet = [replica("web-1", InService, 1), pooled("web-p1", Starting, 50)];
    assert_eq!(act(1, 2, &fleet), ["fill 1"], "a member still booting counts");
    assert_eq!(act(1, 0, &fleet), ["retire web-p1 (warm pool: more members than its size)"], "no pool: members go");
}

#[test]
fn a_member_that_passed_its_checks_is_suspended() {
    let booted = ReplicaFacts { suspended: false, ..pooled("web-p1", InService, 50) };
    let fleet = [replica("web-1", InService, 1), booted, pooled("web-p2", InService, 60)];
    assert_eq!(act(1, 2, &fleet), ["suspend web-p1"]);
}

#[test]
fn a_short_fleet_takes_from_the_pool_before_it_boots_and_the_pool_refills() {
    let fleet = [
        replica("web-1", InService, 1),
        pooled("web-p3", Starting, 90),
        pooled("web-p2", InService, 60),
        pooled("web-p1", InService, 50),
    ];
    // Ready members first, the oldest first; then one still booting.
    assert_eq!(act(2, 3, &fleet), ["take web-p1", "fill 1"]);
    assert_eq!(act(3, 3, &fleet), ["take web-p1", "take web-p2", "fill 2"]);
    assert_eq!(act(4, 3, &fleet), ["take web-p1", "take web-p2", "take web-p3", "fill 3"]);
    assert_eq!(
        act(6, 3, &fleet),
        ["take web-p1", "take web-p2", "take web-p3", "launch 2", "fill 3"],
        "what the pool cannot cover boots"
    );
}

#[test]
fn pool_members_are_not_capacity_not_in_service_and_never_routable() {
    let member = pooled("web-p1", InService, 50);
    let awake = ReplicaFacts { suspended: false, ..member };
    let counts = Counts::of(&[replica("web-1", InService, 1), member, pooled("web-p2", Starting, 90)]);
    assert_eq!((counts.in_service, counts.pending, counts.capacity), (1, 0, 1));
    let routes = Routes { current_version: 1, deploying: false, only: None };
    assert!(!routable(&member, &routes));
    assert!(!routable(&awake, &routes), "not even before it is frozen");
    // Scale-in never picks a member: it is not capacity.
    let fleet = [replica("web-1", InService, 1), replica("web-2", InService, 2), member];
    assert_eq!(act(1, 1, &fleet), ["retire web-2 (scale-in)"]);
}

#[test]
fn a_deploy_replaces_the_members_of_the_old_spec() {
    let old = ReplicaFacts { version: 0, ..pooled("web-p1", InService, 50) };
    let fleet = [replica("web-1", InService, 1), old];
    assert_eq!(act(1, 1, &fleet), ["retire web-p1 (warm pool: replaced by one of the current version)", "fill 1"]);
    // While the deploy runs its planner alone launches: the old member
    // goes, the pool refills when it is done.
    assert_eq!(
        actions(1, 1, &fleet, true, &CrashLoop::default()),
        ["retire web-p1 (warm pool: replaced by one of the current version)"]
    );
    // An old member is never taken.
    assert_eq!(
        act(2, 1, &fleet),
        ["launch 1", "retire web-p1 (warm pool: replaced by one of the current version)", "fill 1"]
    );
}

#[test]
fn a_smaller_pool_lets_its_youngest_members_go() {
    let fleet = [pooled("web-p1", InService, 50), pooled("web-p2", InService, 60), pooled("web-p3", Starting, 70)];
    assert_eq!(
        act(0, 1, &fleet),
        [
            "retire web-p2 (warm pool: more members than its size)",
            "retire web-p3 (warm pool: more members than its size)"
        ]
    );
    let leaving = [ReplicaFacts { phase: Leaving, ..pooled("web-p1", InService, 50) }];
    assert_eq!(act(0, 1, &leaving), ["fill 1"], "a member leaving is not in the pool");
}

#[test]
fn crash_loop_backoff_holds_the_refill_but_not_a_take() {
    let mut crash_loop = CrashLoop::default();
    crash_loop.failed_before_service(Duration::from_millis(99_900));
    crash_loop.failed_before_service(Duration::from_millis(99_900));
    assert!(crash_loop.holds_until(s(100)).is_some());
    let fleet = [pooled("web-p1", InService, 50)];
    assert_eq!(actions(2, 2, &fleet, false, &crash_loop), ["take web-p1", "hold 1"]);
}

#[test]
fn warm_pool_config_is_checked_with_the_fix() {
    let parse = |extra: &str| {
        let text = format!(
            "[service.web]\ncommand = \"app\"\nlisten = \"127.0.0.1:8080\"\nreplicas = {{ min = 1, max = 4, desired = 1 }}\n{extra}"
        );
        Config::parse(&text, Path::new("ebb.toml")).map(|c| c.services["web"].warm_pool).map_err(|e| e.to_string())
    };
    assert_eq!(parse("[service.web.warm_pool]\nsize = 2\n").unwrap().map(|p| p.size), Some(2));
    assert_eq!(parse("[service.web.warm_pool]\nsize = 4\nmode = \"suspend\"\n").unwrap().map(|p| p.size), Some(4));
    assert_eq!(parse("").unwrap(), None);
    let error = parse("[service.web.warm_pool]\nsize = 5\n").unwrap_err();
    assert!(error.contains("ebb.toml:6:8") && error.contains("set size = 4 or less"), "{error}");
    let error = parse("[service.web.warm_pool]\nsize = 1\nmode = \"stop\"\n").unwrap_err();
    assert!(error.contains("ebb.toml:7:8") && error.contains("always suspended"), "{error}");
}
