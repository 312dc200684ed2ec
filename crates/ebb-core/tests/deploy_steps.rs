//! The deploy planner, one step at a time: a fleet in, the actions out, as
//! tables of cases (in the style of Kubernetes' deployment controller
//! tests), plus the exact wording of the reasons and the rules around
//! `rollback`, idempotence and `Finish`.

use ebb_core::deploy::{Deploy, DeployAction, DeployConfig, DeployOutcome, Phase, ReplicaPhase, ReplicaView, Strategy};
use std::time::Duration;

use ReplicaPhase::{Failed, InService, Leaving, Starting};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// A replica `web-N` of version `v`, started at `N` seconds.
fn r(n: u32, v: u64, state: ReplicaPhase) -> ReplicaView {
    ReplicaView::new(format!("web-{n}"), v, state, s(u64::from(n)))
}

fn protected(mut r: ReplicaView) -> ReplicaView {
    r.protected = true;
    r
}

/// `n` in-service replicas of v1: web-1..web-n.
fn v1(n: u32) -> Vec<ReplicaView> {
    (1..=n).map(|i| r(i, 1, InService)).collect()
}

/// One action, short: `launch 1 v2`, `retire web-1`, `route v2`, `route all`,
/// `finish succeeded`, `finish rolled back`, `wait`.
fn short(a: &DeployAction) -> String {
    match a {
        DeployAction::Launch { version, count, .. } => format!("launch {count} v{version}"),
        DeployAction::Retire { id, .. } => format!("retire {id}"),
        DeployAction::Route { only_version: Some(v), .. } => format!("route v{v}"),
        DeployAction::Route { only_version: None, .. } => "route all".into(),
        DeployAction::Finish { outcome: DeployOutcome::Succeeded, .. } => "finish succeeded".into(),
        DeployAction::Finish { outcome: DeployOutcome::RolledBack { .. }, .. } => "finish rolled back".into(),
        DeployAction::Wait { .. } => "wait".into(),
    }
}

fn shorts(actions: &[DeployAction]) -> Vec<String> {
    actions.iter().map(short).collect()
}

fn config(strategy: Strategy, surge: u32, unavailable: u32) -> DeployConfig {
    DeployConfig { strategy, max_surge: surge, max_unavailable: unavailable, ..DeployConfig::default() }
}

/// The first step of a deploy v1 -> v2 started at t=0, taken at `now`.
#[test]
fn first_step_cases() {
    struct Case {
        name: &'static str,
        config: DeployConfig,
        desired: u32,
        fleet: Vec<ReplicaView>,
        now: u64,
        want: &'static [&'static str],
    }
    let rolling = DeployConfig::default();
    let bg = DeployConfig { strategy: Strategy::BlueGreen, ..DeployConfig::default() };
    let bg_no_bake = DeployConfig { bake_time: Some(Duration::ZERO), ..bg.clone() };
    let with = |extra: Vec<ReplicaView>, n: u32| v1(n).into_iter().chain(extra).collect::<Vec<_>>();
    #[rustfmt::skip]
    let cases = vec![
        Case { name: "defaults: one new replica first", config: rolling.clone(), desired: 4, fleet: v1(4), now: 0, want: &["launch 1 v2"] },
        Case { name: "max_surge 2: two at once", config: config(Strategy::Rolling, 2, 0), desired: 4, fleet: v1(4), now: 0, want: &["launch 2 v2"] },
        Case { name: "surge 0, unavailable 1: retire the oldest, then launch", config: config(Strategy::Rolling, 0, 1), desired: 4, fleet: v1(4), now: 0, want: &["retire web-1", "launch 1 v2"] },
        Case { name: "surge 1, unavailable 1", config: config(Strategy::Rolling, 1, 1), desired: 4, fleet: v1(4), now: 0, want: &["retire web-1", "launch 2 v2"] },
        Case { name: "surge 0 and unavailable 0 still moves (surge 1)", config: config(Strategy::Rolling, 0, 0), desired: 4, fleet: v1(4), now: 0, want: &["launch 1 v2"] },
        Case { name: "a new one in service: the oldest leaves, the next starts", config: rolling.clone(), desired: 4, fleet: with(vec![r(5, 2, InService)], 4), now: 0, want: &["retire web-1", "launch 1 v2"] },
        Case { name: "a new one starting: wait", config: rolling.clone(), desired: 4, fleet: with(vec![r(5, 2, Starting)], 4), now: 0, want: &["wait"] },
        Case { name: "old replicas still starting serve nobody: retired at once", config: rolling.clone(), desired: 4, fleet: with(vec![r(4, 1, Starting)], 3), now: 0, want: &["retire web-4", "launch 2 v2"] },
        Case { name: "leaving replicas are gone", config: rolling.clone(), desired: 4, fleet: with(vec![r(5, 1, Leaving), r(6, 2, InService)], 4), now: 0, want: &["retire web-1", "launch 1 v2"] },
        Case { name: "protected: the oldest unprotected goes instead, and does not count against max_surge", config: rolling.clone(), desired: 4, fleet: vec![protected(r(1, 1, InService)), r(2, 1, InService), r(3, 1, InService), r(4, 1, InService), r(5, 2, InService)], now: 0, want: &["retire web-2", "launch 2 v2"] },
        Case { name: "the last old one leaves: finished", config: rolling.clone(), desired: 2, fleet: vec![r(1, 1, InService), r(2, 2, InService), r(3, 2, InService)], now: 0, want: &["retire web-1", "finish succeeded"] },
        Case { name: "only a protected old one left: wait for it", config: rolling.clone(), desired: 2, fleet: vec![protected(r(1, 1, InService)), r(2, 2, InService), r(3, 2, InService)], now: 0, want: &["wait"] },
        Case { name: "protected, wait over: finish without it", config: DeployConfig { protected_wait: Duration::ZERO, ..rolling.clone() }, desired: 2, fleet: vec![protected(r(1, 1, InService)), r(2, 2, InService), r(3, 2, InService)], now: 0, want: &["finish succeeded"] },
        Case { name: "a failed new replica rolls back", config: rolling.clone(), desired: 4, fleet: with(vec![r(5, 2, Failed)], 4), now: 0, want: &["finish rolled back"] },
        Case { name: "a new replica starting for deploy_timeout rolls back", config: rolling.clone(), desired: 4, fleet: with(vec![r(5, 2, Starting)], 4), now: 605, want: &["retire web-5", "finish rolled back"] },
        Case { name: "just under deploy_timeout: wait", config: rolling.clone(), desired: 4, fleet: with(vec![r(5, 2, Starting)], 4), now: 604, want: &["wait"] },
        Case { name: "desired 0: every old one goes", config: rolling.clone(), desired: 0, fleet: v1(2), now: 0, want: &["retire web-1", "retire web-2", "finish succeeded"] },
        Case { name: "below desired: no retire, launch within surge", config: rolling.clone(), desired: 4, fleet: v1(3), now: 0, want: &["launch 2 v2"] },
        Case { name: "blue-green: traffic stays, the full set starts", config: bg.clone(), desired: 4, fleet: v1(4), now: 0, want: &["route v1", "launch 4 v2"] },
        Case { name: "blue-green: 3 of 4 new in service: wait", config: bg.clone(), desired: 4, fleet: with((5..=7).map(|i| r(i, 2, InService)).chain([r(8, 2, Starting)]).collect(), 4), now: 0, want: &["route v1"] },
        Case { name: "blue-green: all new in service: switch", config: bg.clone(), desired: 2, fleet: with(vec![r(3, 2, InService), r(4, 2, InService)], 2), now: 0, want: &["route v2"] },
        Case { name: "blue-green without bake: switch, retire, finish", config: bg_no_bake, desired: 2, fleet: with(vec![r(3, 2, InService), r(4, 2, InService)], 2), now: 0, want: &["route v2", "retire web-1", "retire web-2", "finish succeeded"] },
        Case { name: "blue-green: a failed new one rolls back at once", config: bg.clone(), desired: 2, fleet: with(vec![r(3, 2, InService), r(4, 2, Failed)], 2), now: 0, want: &["route v1", "retire web-3", "finish rolled back"] },
    ];
    for c in cases {
        let mut d = Deploy::start(&c.config, 1, 2, s(0));
        let got = shorts(&d.step(s(c.now), c.desired, &c.fleet));
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn reasons_carry_the_numbers() {
    let mut d = Deploy::start(&DeployConfig::default(), 1, 2, s(0));
    let mut fleet = v1(4);
    fleet.push(r(5, 2, InService));
    fleet.push(r(6, 2, InService));
    fleet[0].state = Leaving;
    let actions = d.step(s(10), 4, &fleet);
    let reasons: Vec<&str> = actions.iter().map(DeployAction::reason).collect();
    assert_eq!(
        reasons,
        [
            "rolling v1 -> v2: 2/4 v2 in service, retiring web-2 (v1, oldest first), in-service capacity stays 4 >= 4 - 0 max_unavailable",
            "rolling v1 -> v2: 2/4 v2 in service, 0 starting; launching 1 replica: 5 running <= 4 + 1 max_surge",
        ]
    );
    assert_eq!(
        actions[0].to_string(),
        "retire web-2: rolling v1 -> v2: 2/4 v2 in service, retiring web-2 (v1, oldest first), in-service capacity stays 4 >= 4 - 0 max_unavailable"
    );

    // Waiting says what for, and the deadline.
    let mut d = Deploy::start(&DeployConfig::default(), 1, 2, s(0));
    let mut fleet = v1(4);
    fleet.push(r(5, 2, Starting));
    let actions = d.step(s(30), 4, &fleet);
    assert_eq!(
        actions,
        [DeployAction::Wait {
            reason:
                "rolling v1 -> v2: waiting for v2 to come into service: 0/4 in service, 1 starting; 4 old in service"
                    .into(),
            until: Some(s(5 + 600)),
        }]
    );

    // A rollback says why in every action.
    let mut d = Deploy::start(&DeployConfig::default(), 1, 2, s(0));
    let mut fleet = v1(4);
    fleet.push(r(5, 2, Starting));
    let actions = d.step(s(700), 4, &fleet);
    assert_eq!(
        actions.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        [
            "retire web-5: rolling back v2 -> v1 (web-5 (v2) not in service 11 min 35 s after its start (deploy_timeout)): retiring web-5 (v2, still starting: it serves nobody)",
            "deploy rolled back: rolled back v2 -> v1 (web-5 (v2) not in service 11 min 35 s after its start (deploy_timeout)): 4/4 v1 in service, 0 starting, every unprotected v2 replica retired",
        ]
    );
}

#[test]
fn stepping_twice_with_the_same_view_asks_nothing_twice() {
    let views: Vec<(DeployConfig, u32, Vec<ReplicaView>)> = vec![
        (DeployConfig::default(), 4, v1(4)),
        (config(Strategy::Rolling, 2, 1), 4, v1(4)),
        (DeployConfig::default(), 4, v1(4).into_iter().chain([r(5, 2, InService)]).collect()),
        (DeployConfig { strategy: Strategy::BlueGreen, ..DeployConfig::default() }, 3, v1(3)),
        (
            DeployConfig { strategy: Strategy::BlueGreen, bake_time: Some(Duration::ZERO), ..DeployConfig::default() },
            2,
            v1(2).into_iter().chain([r(3, 2, InService), r(4, 2, InService)]).collect(),
        ),
    ];
    for (i, (config, desired, fleet)) in views.into_iter().enumerate() {
        let mut d = Deploy::start(&config, 1, 2, s(0));
        let first = d.step(s(1), desired, &fleet);
        assert!(first.iter().any(|a| !matches!(a, DeployAction::Wait { .. })), "case {i}: {first:?}");
        let second = d.step(s(1), desired, &fleet);
        assert!(
            second.iter().all(|a| matches!(a, DeployAction::Wait { .. })),
            "case {i}: the same view again asks nothing new: {second:?}"
        );
        let third = d.step(s(2), desired, &fleet);
        assert!(third.iter().all(|a| matches!(a, DeployAction::Wait { .. })), "case {i}: {third:?}");
    }
}

#[test]
fn launches_are_matched_to_the_replicas_that_appear() {
    let mut d = Deploy::start(&config(Strategy::Rolling, 2, 0), 1, 2, s(0));
    let mut fleet = v1(4);
    assert_eq!(shorts(&d.step(s(0), 4, &fleet)), ["launch 2 v2"]);
    // One of the two has appeared; the other is still on its way.
    fleet.push(r(5, 2, Starting));
    assert_eq!(shorts(&d.step(s(1), 4, &fleet)), ["wait"]);
    fleet.push(r(6, 2, Starting));
    assert_eq!(shorts(&d.step(s(2), 4, &fleet)), ["wait"]);
    // A launch that never shows up within deploy_timeout rolls back.
    let mut d = Deploy::start(&DeployConfig::default(), 1, 2, s(0));
    let fleet = v1(2);
    assert_eq!(shorts(&d.step(s(0), 2, &fleet)), ["launch 1 v2"]);
    assert_eq!(shorts(&d.step(s(599), 2, &fleet)), ["wait"]);
    let last = d.step(s(600), 2, &fleet);
    assert_eq!(shorts(&last), ["finish rolled back"]);
    assert!(last[0].reason().contains("a v2 replica launched 10 min ago never appeared"), "{}", last[0].reason());
}

#[test]
fn finish_happens_once() {
    let mut d = Deploy::start(&DeployConfig::default(), 1, 2, s(0));
    let fleet = vec![r(1, 1, InService), r(2, 2, InService)];
    assert_eq!(shorts(&d.step(s(0), 1, &fleet)), ["retire web-1", "finish succeeded"]);
    assert!(d.is_finished());
    assert_eq!(d.phase(), Phase::Succeeded);
    assert_eq!(d.target_version(), 2);
    for t in 1..5 {
        assert!(d.step(s(t), 1, &fleet).is_empty(), "nothing after Finish");
        assert!(d.step(s(t), 3, &[]).is_empty());
    }
    assert!(d.rollback(s(9), "too late").is_err());
}

#[test]
fn rollback_requests() {
    // Rolling: any time before Finish.
    let mut d = Deploy::start(&DeployConfig::default(), 1, 2, s(0));
    let mut fleet = v1(2);
    fleet.push(r(3, 2, InService));
    assert_eq!(shorts(&d.step(s(0), 2, &fleet)), ["retire web-1", "launch 1 v2"]);
    fleet[0].state = Leaving;
    fleet.push(r(4, 2, Starting));
    d.rollback(s(5), "requested by ebb rollback").unwrap();
    assert_eq!(d.target_version(), 1);
    let err = d.rollback(s(6), "again").unwrap_err();
    assert_eq!(err.to_string(), "already rolling back v2 -> v1 (requested by ebb rollback)");
    // web-4 serves nobody: at once. web-3 serves: it waits for a v1 replica.
    assert_eq!(shorts(&d.step(s(6), 2, &fleet)), ["retire web-4", "launch 1 v1"]);
    assert_eq!(d.phase(), Phase::RollingBack { reason: "requested by ebb rollback".into() });
    fleet[3].state = Leaving;
    fleet.push(r(5, 1, Starting));
    assert_eq!(shorts(&d.step(s(7), 2, &fleet)), ["wait"]);
    fleet[4].state = InService;
    assert_eq!(shorts(&d.step(s(8), 2, &fleet)), ["retire web-3", "finish rolled back"]);
    assert_eq!(d.outcome(), Some(&DeployOutcome::RolledBack { reason: "requested by ebb rollback".into() }));
    assert_eq!(d.target_version(), 1);

    // Blue-green: within the bake time, refused after it.
    let bg = DeployConfig { strategy: Strategy::BlueGreen, ..DeployConfig::default() };
    let mut d = Deploy::start(&bg, 1, 2, s(0));
    let fleet: Vec<ReplicaView> = v1(2).into_iter().chain([r(3, 2, InService), r(4, 2, InService)]).collect();
    assert_eq!(shorts(&d.step(s(10), 2, &fleet)), ["route v2"]);
    assert_eq!(d.phase(), Phase::Baking { until: s(310) });
    assert_eq!(d.routes_only(), Some(2));
    let mut late = d.clone();
    let err = late.rollback(s(310), "too late").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the bake time of v2 is over and the v1 set is being retired; deploy v1 again to go back"
    );
    d.rollback(s(309), "requested by ebb rollback").unwrap();
    assert_eq!(shorts(&d.step(s(309), 2, &fleet)), ["route v1", "retire web-3", "retire web-4", "finish rolled back"]);
    assert_eq!(d.routes_only(), None, "no filter after Finish");
}

#[test]
fn progress_reads_like_the_cli_line() {
    let mut d = Deploy::start(&DeployConfig::default(), 1, 2, s(0));
    let fleet = vec![
        r(1, 1, Leaving),
        r(2, 1, InService),
        protected(r(3, 1, InService)),
        r(5, 2, InService),
        r(6, 2, InService),
        r(7, 2, Starting),
    ];
    d.step(s(0), 4, &fleet);
    let p = d.progress(&fleet);
    // web-2 stays: 2 new + 2 old in service is just the desired 4.
    assert_eq!((p.new_in_service, p.new_starting, p.old_in_service, p.old_draining), (2, 1, 2, 1));
    assert_eq!(p.protected, ["web-3"]);
    assert_eq!(
        p.to_string(),
        "rolling v1 -> v2, rolling: 2/4 new healthy, 1 new starting, 2 old in service, 1 old draining, protected: web-3"
    );
}

#[test]
fn a_deploy_to_the_same_fleet_finishes_at_once() {
    let mut d = Deploy::start(&DeployConfig::default(), 2, 2, s(0));
    let fleet = vec![r(1, 2, InService)];
    assert_eq!(shorts(&d.step(s(0), 1, &fleet)), ["finish succeeded"]);
}
