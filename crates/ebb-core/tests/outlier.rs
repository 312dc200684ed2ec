//! Passive outlier detection: which rule ejects what (tables), and how
//! ejections, returns, repeat ejections and the fleet cap play out over time
//! (timelines, narrated second by second as the live controller feeds them).

use std::time::Duration;

use ebb_core::outlier::{Outcomes, OutlierConfig, OutlierDetector, OutlierEvent, Reason};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Outcomes of one second: `answered` responses, `errors` of them 5xx,
/// with the streaks given.
fn second(answered: u64, errors: u64, streak_5xx: u32) -> Outcomes {
    Outcomes { answered, server_errors: errors, consecutive_5xx: streak_5xx, ..Outcomes::default() }
}

fn quiet() -> Outcomes {
    Outcomes::default()
}

/// The replicas' names in the events of one step, by kind.
fn ejected(events: &[OutlierEvent]) -> Vec<&str> {
    events.iter().filter(|e| matches!(e, OutlierEvent::Ejected { .. })).map(|e| e.replica()).collect()
}

fn returned(events: &[OutlierEvent]) -> Vec<&str> {
    events.iter().filter(|e| matches!(e, OutlierEvent::Returned { .. })).map(|e| e.replica()).collect()
}

#[test]
fn each_rule_ejects_at_its_threshold_and_not_below() {
    let c = OutlierConfig::default();
    // (what the balancer saw in one step, whether web-1 is ejected, why)
    let cases: [(&str, Outcomes, Option<&str>); 9] = [
        ("4 × 5xx in a row", second(4, 4, 4), None),
        ("5 × 5xx in a row", second(5, 5, 5), Some("5 consecutive 5xx responses (consecutive_5xx = 5)")),
        ("many 5xx, streak broken by a 200", second(10, 9, 3), None),
        (
            "5 gateway failures in a row",
            Outcomes { gateway_failures: 5, consecutive_gateway_failures: 5, ..quiet() },
            Some("5 consecutive gateway failures: connect errors, closed connections or timeouts (consecutive_gateway_failures = 5)"),
        ),
        ("4 gateway failures in a row", Outcomes { gateway_failures: 4, consecutive_gateway_failures: 4, ..quiet() }, None),
        (
            "half of 20 requests fail",
            second(20, 10, 1),
            Some("10 of 20 requests failed in the last 10 s (50 %; failure_percent = 50 over at least 20 requests)"),
        ),
        ("9 of 19 fail: too few requests", second(19, 19 / 2, 1), None),
        ("9 of 20 fail: below the ratio", second(20, 9, 1), None),
        (
            "5xx and gateway failures count together",
            Outcomes { answered: 15, server_errors: 5, gateway_failures: 5, consecutive_5xx: 1, ..quiet() },
            Some("10 of 20 requests failed in the last 10 s (50 %; failure_percent = 50 over at least 20 requests)"),
        ),
    ];
    for (what, outcomes, expected) in cases {
        let mut d = OutlierDetector::new(c.clone());
        let events = d.step(secs(1), &[("web-1", outcomes), ("web-2", second(20, 0, 0))]);
        let reason = events.iter().find_map(|e| match e {
            OutlierEvent::Ejected { ejection, .. } => Some(ejection.reason.to_string()),
            _ => None,
        });
        assert_eq!(reason.as_deref(), expected, "{what}: {events:?}");
        assert_eq!(d.is_ejected("web-1"), expected.is_some(), "{what}");
        assert!(!d.is_ejected("web-2"), "{what}: the good replica stays");
    }
}

#[test]
fn the_ratio_is_over_the_window_not_one_second() {
    let mut d = OutlierDetector::new(OutlierConfig::default());
    let good = second(10, 0, 0);
    // 3 of 10 fail each second (never 5 in a row): 30 % < 50 %.
    for t in 1..=20 {
        assert!(d.step(secs(t), &[("web-1", second(10, 3, 1)), ("web-2", good)]).is_empty(), "t={t}");
    }
    // Six seconds at 10 of 10 failing (streaks broken by a lucky 200):
    // the 10 s window reaches 50 % after 3 of them: 3×10 + 7×3 = 51 of 100.
    let mut at = None;
    for t in 21..=26 {
        let events = d.step(secs(t), &[("web-1", second(10, 10, 4)), ("web-2", good)]);
        if !ejected(&events).is_empty() {
            at = Some((t, events[0].to_string()));
            break;
        }
    }
    let (t, text) = at.expect("ejected on its failure ratio");
    assert_eq!(t, 23, "{text}");
    assert!(text.contains("51 of 100 requests failed in the last 10 s (51 %"), "{text}");
}

/// The case: one replica of two answers 500 to everything.
/// Ejected for 30 s, back, ejected for 60 s, back, ... until it recovers;
/// then a clean period lowers the multiplier again.
#[test]
fn a_replica_that_keeps_failing_is_ejected_longer_each_time_until_it_recovers() {
    let mut d = OutlierDetector::new(OutlierConfig::default());
    let good = second(50, 0, 0);
    let mut timeline = Vec::new();
    let mut streak = 0u32;
    let mut failing = true;
    for t in 1..=400u64 {
        // The balancer's streak: grows while it gets requests and fails,
        // reset by the controller when it returns.
        let bad = if d.is_ejected("web-1") {
            quiet()
        } else if failing {
            streak += 50;
            second(50, 50, streak)
        } else {
            streak = 0;
            second(50, 0, 0)
        };
        if t == 200 {
            failing = false; // someone fixed it
        }
        for e in d.step(secs(t), &[("web-1", bad), ("web-2", good)]) {
            if matches!(e, OutlierEvent::Returned { .. }) {
                streak = 0;
            }
            timeline.push((t, e));
        }
    }
    // (second, what happened, how long the ejection lasts or lasted)
    let at: Vec<(u64, &str, u64)> = timeline
        .iter()
        .map(|(t, e)| match e {
            OutlierEvent::Ejected { ejection, .. } => (*t, "ejected", ejection.length().as_secs()),
            OutlierEvent::Returned { ejection, .. } => (*t, "returned", ejection.length().as_secs()),
            OutlierEvent::Spared { .. } => (*t, "spared", 0),
        })
        .collect();
    assert_eq!(
        at,
        [
            (1, "ejected", 30),
            (31, "returned", 30),
            (32, "ejected", 60),
            (92, "returned", 60),
            (93, "ejected", 90),
            (183, "returned", 90),
            (184, "ejected", 120),
            (304, "returned", 120),
        ],
        "{timeline:#?}"
    );
    let timeline: Vec<(u64, String)> = timeline.into_iter().map(|(t, e)| (t, e.to_string())).collect();
    assert_eq!(
        timeline[0].1,
        "web-1 ejected for 30 s: 50 consecutive 5xx responses (consecutive_5xx = 5) (ejection 1st = base_ejection_time × 1; 1 of 2 replicas ejected)"
    );
    assert_eq!(
        timeline[1].1,
        "web-1 back in the rotation after 30 s ejected for consecutive 5xx; ejected again, it would be out for 1 min"
    );
    assert!(
        timeline[6].1.contains("(ejection 4th = base_ejection_time × 4; 1 of 2 replicas ejected)"),
        "{}",
        timeline[6].1
    );
    // Fixed at 200, back at 304: 96 s clean by 400 is three base periods,
    // so the multiplier is down from 4 to 1: a new ejection would be 60 s.
    let events = d.step(secs(401), &[("web-1", second(50, 50, 50)), ("web-2", good)]);
    assert_eq!(ejected(&events), ["web-1"]);
    assert!(events[0].to_string().starts_with("web-1 ejected for 1 min"), "{}", events[0]);
}

#[test]
fn never_more_than_max_ejection_percent_and_never_the_last_replica() {
    let mut d = OutlierDetector::new(OutlierConfig::default());
    let bad = second(10, 10, 10);
    // Two replicas failing: one may go (50 % of 2), the other is spared,
    // and that is said once, not every second.
    let events = d.step(secs(1), &[("web-1", bad), ("web-2", bad)]);
    assert_eq!(ejected(&events), ["web-1"]);
    assert_eq!(
        events[1].to_string(),
        "web-2 kept in the rotation although it fails: 10 consecutive 5xx responses (consecutive_5xx = 5); 1 of 2 replicas are ejected already and at most 1 may be (max_ejection_percent, never the last)"
    );
    assert!(d.step(secs(2), &[("web-1", quiet()), ("web-2", bad)]).is_empty());

    // A lone replica is never ejected, whatever it does.
    let mut alone = OutlierDetector::new(OutlierConfig::default());
    let events = alone.step(secs(1), &[("web-1", bad)]);
    assert!(ejected(&events).is_empty() && !alone.is_ejected("web-1"), "{events:?}");

    // Five replicas at 50 %: at most two at once.
    let mut five = OutlierDetector::new(OutlierConfig::default());
    let fleet: Vec<(&str, Outcomes)> = ["a", "b", "c", "d", "e"].into_iter().map(|id| (id, bad)).collect();
    let events = five.step(secs(1), &fleet);
    assert_eq!(ejected(&events), ["a", "b"]);
}

#[test]
fn a_return_frees_room_under_the_cap_in_the_same_step() {
    let config = OutlierConfig { base_ejection_time: secs(10), ..OutlierConfig::default() };
    let mut d = OutlierDetector::new(config);
    let bad = second(10, 10, 10);
    assert_eq!(ejected(&d.step(secs(1), &[("web-1", bad), ("web-2", bad)])), ["web-1"]);
    // At 11 s web-1's time is up; web-2, still failing, takes its place.
    // web-1 is not judged on its stale streak the moment it returns.
    let events = d.step(secs(11), &[("web-1", bad), ("web-2", bad)]);
    assert_eq!((returned(&events), ejected(&events)), (vec!["web-1"], vec!["web-2"]), "{events:#?}");
}

/// web-1 is ejected; then web-2, the only other replica, fails its health
/// checks and leaves. web-1 comes back at once rather than leave nobody in
/// the rotation; still failing, it is spared, not ejected again.
#[test]
fn when_the_others_leave_an_ejected_replica_returns_early() {
    let mut d = OutlierDetector::new(OutlierConfig::default());
    let bad = second(10, 10, 10);
    assert_eq!(ejected(&d.step(secs(1), &[("web-1", bad), ("web-2", quiet())])), ["web-1"]);
    let events = d.step(secs(5), &[("web-1", quiet())]);
    assert_eq!(returned(&events), ["web-1"]);
    assert_eq!(
        events[0].to_string(),
        "web-1 back in the rotation 26 s early (ejected for consecutive 5xx): no other replica is left in the rotation, and ejection never takes the last; ejected again, it would be out for 1 min"
    );
    assert!(!d.is_ejected("web-1"));
    let events = d.step(secs(6), &[("web-1", bad)]);
    assert!(matches!(&events[..], [OutlierEvent::Spared { .. }]), "{events:?}");
    // A replacement joins: web-1 may be ejected again, for longer.
    let events = d.step(secs(7), &[("web-1", bad), ("web-3", quiet())]);
    assert_eq!(ejected(&events), ["web-1"]);
    assert!(events[0].to_string().starts_with("web-1 ejected for 1 min: "), "{}", events[0]);
}

#[test]
fn replicas_that_leave_are_forgotten_and_disabled_ejects_nothing() {
    let mut d = OutlierDetector::new(OutlierConfig::default());
    let bad = second(10, 10, 10);
    d.step(secs(1), &[("web-1", bad), ("web-2", quiet())]);
    assert!(d.is_ejected("web-1"));
    // web-1 failed its health checks and was replaced: gone from the fleet.
    assert!(d.step(secs(2), &[("web-2", quiet()), ("web-3", quiet())]).is_empty());
    assert!(!d.is_ejected("web-1") && d.ejection("web-1").is_none());

    let mut off = OutlierDetector::new(OutlierConfig::off());
    assert!(off.step(secs(1), &[("web-1", bad), ("web-2", quiet())]).is_empty());
    assert!(!off.is_ejected("web-1"));
}

#[test]
fn an_ejection_knows_its_reason_and_time_left() {
    let mut d = OutlierDetector::new(OutlierConfig::default());
    d.step(secs(5), &[("web-1", second(5, 5, 5)), ("web-2", quiet())]);
    let e = d.ejection("web-1").unwrap();
    assert_eq!((e.since, e.until, e.nth, e.length()), (secs(5), secs(35), 1, secs(30)));
    assert_eq!(e.remaining(secs(20)), secs(15));
    assert_eq!(e.reason, Reason::Consecutive5xx { count: 5, threshold: 5 });
}
