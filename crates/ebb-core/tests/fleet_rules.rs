//! The fleet planner's rules, one table each: given the facts about a
//! fleet, what happens to its replicas.

use ebb_core::fleet::{
    abandons_requests, chaos_victim, leave_by, plan, routable, scale_in_waits_for, Counts, CrashLoop, FleetAction,
    FleetInput, ReplicaFacts, ReplicaPhase, Routes,
};
use std::time::Duration;

use ReplicaPhase::{Failed, InService, Leaving, Starting};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn replica(id: &'static str, phase: ReplicaPhase, started: u64) -> ReplicaFacts<'static> {
    ReplicaFacts::new(id, 1, phase, s(started))
}

/// The actions for `desired` over `replicas` at t = 100 s, no deploy,
/// current version 1, no crash loop: `launch N` / `retire ID (reason)` /
/// `hold N until T`.
fn actions(desired: u32, replicas: &[ReplicaFacts]) -> Vec<String> {
    actions_with(desired, replicas, false, &CrashLoop::default())
}

fn actions_with(desired: u32, replicas: &[ReplicaFacts], deploying: bool, crash_loop: &CrashLoop) -> Vec<String> {
    let input = FleetInput { now: s(100), desired, current_version: 1, deploying, replicas, warm_pool: 0 };
    plan(&input, crash_loop)
        .into_iter()
        .map(|a| match a {
            FleetAction::Launch { count, .. } => format!("launch {count}"),
            FleetAction::Retire { id, reason } => format!("retire {id} ({reason})"),
            FleetAction::HoldStarts { short, until } => format!("hold {short} until {}", until.as_secs_f64()),
            FleetAction::TakeFromPool { id } => format!("take {id}"),
            FleetAction::FillPool { count } => format!("fill {count}"),
            FleetAction::SuspendPooled { id } => format!("suspend {id}"),
        })
        .collect()
}

#[test]
fn a_fleet_short_of_desired_launches_the_difference() {
    // Starting replicas count: a booting fleet does not launch again.
    let fleet = [replica("web-1", InService, 1), replica("web-2", Starting, 90)];
    assert_eq!(actions(2, &fleet), Vec::<String>::new());
    assert_eq!(actions(5, &fleet), ["launch 3"]);
    // Leaving and failed replicas are not capacity: they are replaced.
    let fleet = [replica("web-1", InService, 1), replica("web-2", Leaving, 2), replica("web-3", Failed, 3)];
    assert_eq!(actions(3, &fleet), ["launch 2"]);
    assert_eq!(actions(1, &[]), ["launch 1"]);
}

#[test]
fn a_fleet_above_desired_retires_the_excess_never_a_protected_one() {
    let mut fleet = [replica("web-1", InService, 1), replica("web-2", InService, 2), replica("web-3", Starting, 99)];
    assert_eq!(actions(2, &fleet), ["retire web-3 (scale-in)"], "one not yet serving goes first");
    assert_eq!(actions(1, &fleet), ["retire web-3 (scale-in)", "retire web-2 (scale-in)"], "then the youngest");
    fleet[1].protected = true;
    fleet[2].protected = true;
    assert_eq!(actions(1, &fleet), ["retire web-1 (scale-in)"]);
    assert_eq!(actions(0, &fleet), ["retire web-1 (scale-in)"], "protected replicas stay, above desired");
}

#[test]
fn scale_in_prefers_ejected_then_old_versions_then_the_fewest_in_flight() {
    let mut fleet = [
        ReplicaFacts { in_flight: 0, ..replica("web-1", InService, 1) },
        ReplicaFacts { in_flight: 9, ..replica("web-2", InService, 50) },
        ReplicaFacts { in_flight: 0, version: 0, ..replica("web-3", InService, 2) },
        ReplicaFacts { in_flight: 5, ejected: true, ..replica("web-4", InService, 3) },
    ];
    assert_eq!(
        actions(0, &fleet),
        ["retire web-4 (scale-in)", "retire web-3 (scale-in)", "retire web-1 (scale-in)", "retire web-2 (scale-in)"]
    );
    fleet[3].ejected = false;
    assert_eq!(actions(3, &fleet), ["retire web-3 (scale-in)"], "an old version before the current one");
}

#[test]
fn while_a_deploy_runs_only_interruption_notices_are_acted_on() {
    let fleet = [
        replica("web-1", InService, 1),
        replica("web-2", InService, 2),
        ReplicaFacts { interrupted_until: Some(s(200)), ..replica("web-3", InService, 3) },
    ];
    let none = CrashLoop::default();
    assert_eq!(actions_with(1, &fleet, true, &none), ["retire web-3 (interruption notice: replacement in service)"]);
    assert_eq!(actions_with(9, &fleet[..2], true, &none), Vec::<String>::new(), "the deploy launches, not the fleet");
}

#[test]
fn an_interrupted_replica_leaves_once_its_replacement_serves_or_its_notice_runs_out() {
    let notice = |until: u64| ReplicaFacts { interrupted_until: Some(s(until)), ..replica("web-1", InService, 1) };
    // Its replacement is booting: it keeps serving until then.
    let fleet = [notice(130), replica("web-2", InService, 2), replica("web-3", Starting, 95)];
    assert_eq!(actions(2, &fleet), Vec::<String>::new());
    // The replacement is in service: capacity is back without it.
    let fleet = [notice(130), replica("web-2", InService, 2), replica("web-3", InService, 95)];
    assert_eq!(actions(2, &fleet), ["retire web-1 (interruption notice: replacement in service)"]);
    // Out of time with the replacement still booting.
    let fleet = [notice(100), replica("web-2", InService, 2), replica("web-3", Starting, 95)];
    assert_eq!(
        actions(2, &fleet),
        ["retire web-1 (interruption notice: out of time before the replacement was ready)"]
    );
    // An interrupted replica is not capacity: its replacement is launched.
    let fleet = [notice(130), replica("web-2", InService, 2)];
    assert_eq!(actions(2, &fleet), ["launch 1"]);
    // Already leaving: nothing more to do.
    let fleet = [ReplicaFacts { phase: Leaving, ..notice(100) }, replica("web-2", InService, 2)];
    assert_eq!(actions(1, &fleet), Vec::<String>::new());
}

#[test]
fn a_notice_leaves_time_to_drain_and_stop() {
    // A two-minute spot notice with a 30 s drain and a 10 s stop: the
    // replica starts to leave 80 s in at the latest.
    assert_eq!(leave_by(s(100), s(120), s(30), s(10)), s(180));
    // A notice shorter than drain + stop: leave at once.
    assert_eq!(leave_by(s(100), s(20), s(30), s(10)), s(100));
}

#[test]
fn crash_loop_backoff_holds_starts() {
    let mut crash_loop = CrashLoop::default();
    assert_eq!(crash_loop.failed_before_service(s(100)), None, "one failure is not a loop");
    let backoff = crash_loop.failed_before_service(s(100)).expect("the second holds");
    assert_eq!((backoff.delay, backoff.until), (Duration::from_millis(500), Duration::from_millis(100_500)));
    assert_eq!(backoff.to_string(), "2 replicas in a row failed before reaching service; next start in 500ms");
    assert_eq!(actions_with(2, &[], false, &crash_loop), ["hold 2 until 100.5"]);
    assert_eq!(
        crash_loop.describe(s(100)).unwrap(),
        "crash-loop backoff: 2 replicas failed in a row, next start in 1 s"
    );
    crash_loop.reached_service();
    assert_eq!(actions_with(2, &[], false, &crash_loop), ["launch 2"], "a replica in service breaks the loop");
    assert_eq!(crash_loop.describe(s(100)), None);
}

#[test]
fn routable_means_in_service_not_ejected_and_of_a_version_that_takes_traffic() {
    let normal = Routes { current_version: 2, deploying: false, only: None };
    let rolling = Routes { deploying: true, ..normal };
    let blue_green = Routes { deploying: true, only: Some(1), ..normal };
    let v = |version: u64, phase: ReplicaPhase| ReplicaFacts { version, ..replica("web-1", phase, 1) };
    let cases = [
        // (replica, normal, rolling deploy, blue-green on v1)
        (v(2, InService), true, true, false),
        (v(1, InService), false, true, true),
        (v(2, Starting), false, false, false),
        (v(2, Leaving), false, false, false),
        (v(2, Failed), false, false, false),
        (ReplicaFacts { ejected: true, ..v(2, InService) }, false, false, false),
        (ReplicaFacts { interrupted_until: Some(s(200)), ..v(2, InService) }, true, true, false),
    ];
    for (facts, in_normal, in_rolling, in_blue_green) in cases {
        assert_eq!(
            (routable(&facts, &normal), routable(&facts, &rolling), routable(&facts, &blue_green)),
            (in_normal, in_rolling, in_blue_green),
            "{facts:?}"
        );
    }
}

#[test]
fn only_a_failed_replica_has_its_waiting_requests_given_up_and_resent() {
    let cases = [
        (replica("web-1", Failed, 1), true),
        (replica("web-2", Leaving, 1), false),
        (replica("web-3", InService, 1), false),
        (replica("web-4", Starting, 1), false),
        (ReplicaFacts { ejected: true, ..replica("web-5", InService, 1) }, false),
        (ReplicaFacts { suspended: true, ..replica("web-6", InService, 1) }, false),
    ];
    for (facts, abandons) in cases {
        assert_eq!(abandons_requests(&facts), abandons, "{facts:?}");
    }
}

#[test]
fn counts_are_what_the_autoscaler_and_status_see() {
    let fleet = [
        replica("web-1", InService, 1),
        ReplicaFacts { ejected: true, ..replica("web-2", InService, 2) },
        ReplicaFacts { interrupted_until: Some(s(200)), ..replica("web-3", InService, 3) },
        replica("web-4", Starting, 4),
        replica("web-5", Leaving, 5),
        replica("web-6", Failed, 6),
    ];
    let counts = Counts::of(&fleet);
    assert_eq!((counts.in_service, counts.pending, counts.capacity, counts.capacity_in_service), (3, 1, 3, 2));
}

#[test]
fn scale_in_waits_for_protected_replicas_only_above_desired() {
    let fleet = [ReplicaFacts { protected: true, ..replica("web-1", InService, 1) }, replica("web-2", InService, 2)];
    assert_eq!(scale_in_waits_for(&fleet, 1), ["web-1"]);
    assert!(scale_in_waits_for(&fleet, 2).is_empty());
}

#[test]
fn chaos_picks_an_unprotected_replica_in_service_when_the_draw_says_so() {
    let fleet = [
        replica("web-1", InService, 1),
        ReplicaFacts { protected: true, ..replica("web-2", InService, 2) },
        replica("web-3", Starting, 3),
        ReplicaFacts { interrupted_until: Some(s(200)), ..replica("web-4", InService, 4) },
        replica("web-5", InService, 5),
    ];
    assert_eq!(chaos_victim(&fleet, 0.1, 0.5, 0), None, "the draw is above the chance");
    assert_eq!(chaos_victim(&fleet, 0.1, 0.05, 0), Some("web-1"));
    assert_eq!(chaos_victim(&fleet, 0.1, 0.05, 1), Some("web-5"));
    assert_eq!(chaos_victim(&fleet, 0.1, 0.05, 2), Some("web-1"), "the pick wraps around the candidates");
    assert_eq!(chaos_victim(&fleet[1..4], 1.0, 0.0, 7), None, "nobody to interrupt");
}
