//! Scale to zero's rules (`ebb_core::fleet::idle`), as sentences: each row
//! is what the service saw and what it decides.

use std::time::Duration;

use ebb_core::fleet::idle::{
    Activity, IdleChange, IdleConfig, IdleMode, IdleState, Idler, WAKE_BACKOFF_FIRST, WAKE_BACKOFF_MAX,
};
use ebb_core::fleet::{routable, ReplicaFacts, ReplicaPhase, Routes};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn config(mode: IdleMode) -> IdleConfig {
    IdleConfig {
        after: s(60),
        mode,
        hold_timeout: s(30),
        max_held: 1000,
        ignore_user_agents: vec!["UptimeRobot".into()],
    }
}

fn quiet(last: u64) -> Activity {
    Activity { last: Some(s(last)), in_flight: 0, held: 0 }
}

fn held(n: u64) -> Activity {
    Activity { held: n, ..Activity::default() }
}

/// An idler that went idle at 100 s (no request since 40 s, `after` 60 s).
fn idle_at_100(mode: IdleMode) -> Idler {
    let mut idler = Idler::new(s(0));
    assert!(matches!(idler.step(s(100), &config(mode), quiet(40), true), Some(IdleChange::GoIdle { .. })));
    idler
}

#[test]
fn a_service_goes_idle_only_after_a_whole_quiet_period() {
    let c = config(IdleMode::Stop);
    let rows: [(&str, u64, Activity, bool); 6] = [
        ("the last request finished 59 s ago: still awake", 100, quiet(41), false),
        ("the last request finished 60 s ago: idle", 100, quiet(40), true),
        ("no request ever, 60 s since start: idle", 60, Activity::default(), true),
        ("no request ever, 59 s since start: awake", 59, Activity::default(), false),
        (
            "an open stream (one request in flight) for 10 minutes: awake",
            600,
            Activity { last: Some(s(0)), in_flight: 1, held: 0 },
            false,
        ),
        ("a request held: awake", 600, Activity { last: Some(s(0)), in_flight: 0, held: 1 }, false),
    ];
    for (sentence, now, activity, goes_idle) in rows {
        let mut idler = Idler::new(s(0));
        let change = idler.step(s(now), &c, activity, true);
        assert_eq!(matches!(change, Some(IdleChange::GoIdle { .. })), goes_idle, "{sentence}");
        assert_eq!(idler.is_idle(), goes_idle, "{sentence}");
    }
}

#[test]
fn a_stream_that_closes_starts_the_quiet_period_when_it_closes() {
    let c = config(IdleMode::Stop);
    let mut idler = Idler::new(s(0));
    let streaming = Activity { last: Some(s(1)), in_flight: 1, held: 0 };
    assert_eq!(idler.step(s(500), &c, streaming, true), None, "open at 500 s");
    // Closed at 500 s: its finish is the last activity.
    assert_eq!(idler.step(s(559), &c, quiet(500), true), None, "59 s after it closed");
    assert!(matches!(idler.step(s(560), &c, quiet(500), true), Some(IdleChange::GoIdle { .. })), "60 s after");
}

#[test]
fn stop_mode_asks_for_zero_replicas_while_idle_and_at_least_one_otherwise() {
    let awake = Idler::new(s(0));
    assert_eq!(awake.desired(IdleMode::Stop, 0), 1, "awake at min = 0: one replica");
    assert_eq!(awake.desired(IdleMode::Stop, 3), 3, "awake: the autoscaler's count");
    let idle = idle_at_100(IdleMode::Stop);
    assert_eq!(idle.desired(IdleMode::Stop, 3), 0, "idle, stop: zero");
    assert_eq!(idle.desired(IdleMode::Suspend, 3), 3, "idle, suspend: the replicas stay, frozen");
}

#[test]
fn a_service_started_at_zero_is_idle_until_its_first_request() {
    let c = config(IdleMode::Stop);
    let mut idler = Idler::asleep(s(0));
    assert_eq!(idler.desired(IdleMode::Stop, 0), 0, "nothing boots");
    assert_eq!(idler.step(s(5), &c, Activity::default(), false), None);
    assert_eq!(idler.step(s(6), &c, held(1), false), Some(IdleChange::Wake { mode: IdleMode::Stop, idle_for: s(6) }));
}

#[test]
fn a_held_request_wakes_an_idle_service_and_a_routable_replica_ends_the_wake() {
    let c = config(IdleMode::Stop);
    let mut idler = idle_at_100(IdleMode::Stop);
    assert_eq!(idler.step(s(200), &c, quiet(40), false), None, "nothing held: stays idle");
    assert_eq!(
        idler.step(s(200), &c, held(1), false),
        Some(IdleChange::Wake { mode: IdleMode::Stop, idle_for: s(100) }),
        "a request held: wake"
    );
    assert_eq!(idler.state(), IdleState::Waking { since: s(200) });
    assert_eq!(idler.desired(IdleMode::Stop, 0), 1, "waking: one replica");
    assert_eq!(idler.step(s(201), &c, held(5), false), None, "still booting");
    assert_eq!(idler.step(s(202), &c, held(5), true), Some(IdleChange::Woken { took: s(2) }), "routable: woken");
    assert_eq!(idler.state(), IdleState::Awake);
    assert_eq!(idler.step(s(261), &c, quiet(100), true), None, "the quiet period starts over at the wake");
}

#[test]
fn a_failed_wake_holds_wakes_for_a_growing_backoff() {
    let c = config(IdleMode::Stop);
    let mut idler = idle_at_100(IdleMode::Stop);
    assert_eq!(idler.replica_failed(s(100)), None, "idle, not waking: not a failed wake");
    let mut now = 200;
    let mut expected = WAKE_BACKOFF_FIRST;
    for failures in 1..=8u32 {
        assert!(matches!(idler.step(s(now), &c, held(1), false), Some(IdleChange::Wake { .. })), "wake {failures}");
        let change = idler.replica_failed(s(now + 1));
        assert_eq!(
            change,
            Some(IdleChange::WakeFailed { failures, until: s(now + 1) + expected }),
            "failure {failures}"
        );
        assert!(idler.is_idle(), "back to idle");
        assert_eq!(idler.desired(IdleMode::Stop, 0), 0, "no replica during the backoff");
        let until = s(now + 1) + expected;
        assert_eq!(
            idler.step(until - Duration::from_millis(1), &c, held(3), false),
            None,
            "held requests during the backoff do not wake it"
        );
        now = until.as_secs() + 1;
        expected = (expected * 2).min(WAKE_BACKOFF_MAX);
    }
    assert!(matches!(idler.step(s(now), &c, held(1), false), Some(IdleChange::Wake { .. })));
    assert!(matches!(idler.step(s(now + 1), &c, held(1), true), Some(IdleChange::Woken { .. })));
    idler.step(s(now + 100), &c, quiet(now + 1), true);
    idler.step(s(now + 200), &c, held(1), false);
    assert_eq!(
        idler.replica_failed(s(now + 201)),
        Some(IdleChange::WakeFailed { failures: 1, until: s(now + 201) + WAKE_BACKOFF_FIRST }),
        "a successful wake resets the backoff"
    );
}

#[test]
fn a_suspended_replica_is_capacity_but_not_routable() {
    let routes = Routes { current_version: 1, deploying: false, only: None };
    let replica = ReplicaFacts::new("web-1", 1, ReplicaPhase::InService, s(0));
    assert!(routable(&replica, &routes));
    let frozen = ReplicaFacts { suspended: true, ..replica };
    assert!(!routable(&frozen, &routes), "frozen: no requests");
    assert!(frozen.is_capacity(), "frozen: still capacity, not replaced");
}

#[test]
fn ignored_agents_match_by_part_and_without_case() {
    let c = config(IdleMode::Stop);
    assert!(c.ignores("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"));
    assert!(c.ignores("uptimerobot"));
    assert!(!c.ignores("Mozilla/5.0"));
    assert!(!IdleConfig { ignore_user_agents: vec![], ..c }.ignores("UptimeRobot"), "none: nothing ignored");
}

#[test]
fn scaling_an_awake_service_to_zero_makes_it_idle_at_once() {
    let c = config(IdleMode::Stop);
    let mut idler = Idler::new(s(0));
    // Busy a second ago, and a stream open: the operator's 0 wins.
    let _ = idler.step(s(10), &c, Activity { last: Some(s(9)), in_flight: 1, held: 0 }, true);
    assert_eq!(idler.scaled_to_zero(s(10), &c), Some(IdleChange::ScaledToZero { mode: IdleMode::Stop }));
    assert_eq!(idler.state(), IdleState::Idle { since: s(10) });
    assert_eq!(idler.desired(IdleMode::Stop, 0), 0, "idle, stop: nothing runs");
    assert_eq!(
        IdleChange::ScaledToZero { mode: IdleMode::Stop }.to_string(),
        "idle: scaled to 0 (desired 0); stopping the replicas until the next request"
    );
    assert_eq!(idler.scaled_to_zero(s(11), &c), None, "already idle");
    // The next request wakes it as after any idle spell.
    assert!(matches!(idler.step(s(20), &c, held(1), false), Some(IdleChange::Wake { .. })));
    assert_eq!(idler.scaled_to_zero(s(21), &c), None, "waking: held requests still need a replica");
    assert_eq!(idler.state(), IdleState::Waking { since: s(20) });
}
