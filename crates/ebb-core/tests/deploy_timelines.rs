//! Deploys as timelines in virtual time: a modelled fleet carries out every
//! action the planner returns (a launch appears as a starting replica at
//! once, a retired replica leaves the rotation at once), and the tests move
//! replicas into service, fail them, protect them and let time pass, as the
//! live controller would report it. Then properties over random event
//! orders, driven by a seeded xorshift so every failure reproduces from its
//! seed.

use ebb_core::deploy::{Deploy, DeployAction, DeployConfig, DeployOutcome, Phase, ReplicaPhase, ReplicaView, Strategy};
use std::time::Duration;

use ReplicaPhase::{Failed, InService, Leaving, Starting};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// A service's replicas and a deploy, in virtual time.
struct Sim {
    now: Duration,
    desired: u32,
    replicas: Vec<ReplicaView>,
    next: u32,
    deploy: Deploy,
    /// Every action with its time, for messages.
    log: Vec<(Duration, DeployAction)>,
    finishes: Vec<DeployOutcome>,
    route: Option<u64>,
}

impl Sim {
    /// `desired` in-service replicas of v1 (web-1.. started 1 s apart),
    /// and a deploy v1 -> v2 starting at t = 100 s.
    fn new(config: DeployConfig, desired: u32) -> Sim {
        let replicas = (1..=desired).map(|i| ReplicaView::new(format!("web-{i}"), 1, InService, s(i.into()))).collect();
        Sim {
            now: s(100),
            desired,
            replicas,
            next: desired + 1,
            deploy: Deploy::start(&config, 1, 2, s(100)),
            log: Vec::new(),
            finishes: Vec::new(),
            route: None,
        }
    }

    /// One planner step, its actions carried out.
    fn step(&mut self) -> Vec<DeployAction> {
        let actions = self.deploy.step(self.now, self.desired, &self.replicas);
        for a in &actions {
            self.log.push((self.now, a.clone()));
            match a {
                DeployAction::Launch { version, count, .. } => {
                    for _ in 0..*count {
                        let id = format!("web-{}", self.next);
                        self.next += 1;
                        self.replicas.push(ReplicaView::new(id, *version, Starting, self.now));
                    }
                }
                DeployAction::Retire { id, .. } => {
                    let r = self.replicas.iter_mut().find(|r| &r.id == id).expect("retires a known replica");
                    assert!(!r.protected, "retired protected {id}");
                    assert!(matches!(r.state, Starting | InService), "retired {id} in {:?}", r.state);
                    r.state = Leaving;
                }
                DeployAction::Route { only_version, .. } => self.route = *only_version,
                DeployAction::Finish { outcome, .. } => self.finishes.push(outcome.clone()),
                DeployAction::Wait { .. } => {}
            }
        }
        actions
    }

    fn get(&mut self, id: &str) -> &mut ReplicaView {
        self.replicas.iter_mut().find(|r| r.id == id).unwrap_or_else(|| panic!("no {id}"))
    }

    /// Every starting replica comes into service.
    fn all_in_service(&mut self) {
        for r in self.replicas.iter_mut().filter(|r| r.state == Starting) {
            r.state = InService;
        }
    }

    /// Leaving replicas finish draining and are gone.
    fn drained(&mut self) {
        self.replicas.retain(|r| r.state != Leaving);
    }

    fn in_service(&self) -> u32 {
        self.replicas.iter().filter(|r| r.state == InService).count() as u32
    }

    fn live(&self) -> u32 {
        self.replicas.iter().filter(|r| matches!(r.state, Starting | InService)).count() as u32
    }

    fn versions_live(&self) -> Vec<u64> {
        let mut v: Vec<u64> =
            self.replicas.iter().filter(|r| matches!(r.state, Starting | InService)).map(|r| r.version).collect();
        v.sort();
        v
    }

    fn transcript(&self) -> String {
        self.log.iter().map(|(t, a)| format!("  t={}s {a}\n", t.as_secs())).collect()
    }

    fn shorts(actions: &[DeployAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                DeployAction::Launch { version, count, .. } => format!("launch {count} v{version}"),
                DeployAction::Retire { id, .. } => format!("retire {id}"),
                DeployAction::Route { only_version: Some(v), .. } => format!("route v{v}"),
                DeployAction::Route { only_version: None, .. } => "route all".into(),
                DeployAction::Finish { outcome: DeployOutcome::Succeeded, .. } => "finish succeeded".into(),
                DeployAction::Finish { .. } => "finish rolled back".into(),
                DeployAction::Wait { .. } => "wait".into(),
            })
            .collect()
    }
}

/// Rolling, 4 replicas, the defaults (surge 1, unavailable 0): one new
/// replica starts, comes into service, one old one leaves, oldest first;
/// never fewer than 4 in service, never more than 5 running.
#[test]
fn rolling_four_replicas_one_at_a_time() {
    let mut sim = Sim::new(DeployConfig::default(), 4);
    let mut steps = Vec::new();
    for round in 0..6 {
        let actions = sim.step();
        steps.push(Sim::shorts(&actions));
        assert!(sim.in_service() >= 4, "round {round}: {}", sim.transcript());
        assert!(sim.live() <= 5, "round {round}: {}", sim.transcript());
        if sim.deploy.is_finished() {
            break;
        }
        // A step with the view unchanged asks nothing new.
        assert!(Sim::shorts(&sim.step()).iter().all(|a| a == "wait"));
        sim.now += s(20);
        sim.all_in_service();
        sim.drained();
    }
    assert_eq!(
        steps,
        [
            vec!["launch 1 v2"],
            vec!["retire web-1", "launch 1 v2"],
            vec!["retire web-2", "launch 1 v2"],
            vec!["retire web-3", "launch 1 v2"],
            vec!["retire web-4", "finish succeeded"],
        ]
    );
    assert_eq!(sim.finishes, [DeployOutcome::Succeeded]);
    sim.drained();
    assert_eq!(sim.versions_live(), [2, 2, 2, 2]);
    assert!(sim.step().is_empty(), "nothing after Finish");
    assert_eq!(sim.route, None, "rolling never filters traffic");
}

/// Blue-green: the full new set starts with traffic on v1; the switch waits
/// for all four; v1 is kept out of the traffic for the bake time, then
/// retired.
#[test]
fn blue_green_switches_when_all_are_in_service_and_bakes() {
    let config = DeployConfig { strategy: Strategy::BlueGreen, ..DeployConfig::default() };
    let mut sim = Sim::new(config, 4);
    assert_eq!(Sim::shorts(&sim.step()), ["route v1", "launch 4 v2"]);
    assert_eq!(sim.route, Some(1));
    assert_eq!(sim.deploy.phase(), Phase::Starting);
    // Three of four: no switch.
    for id in ["web-5", "web-6", "web-7"] {
        sim.now += s(10);
        sim.get(id).state = InService;
        assert_eq!(Sim::shorts(&sim.step()), ["wait"], "{id}");
        assert_eq!(sim.deploy.routes_only(), Some(1));
    }
    sim.now += s(10);
    sim.get("web-8").state = InService;
    let switch = sim.step();
    assert_eq!(Sim::shorts(&switch), ["route v2"]);
    assert_eq!(
        switch[0].reason(),
        "blue-green v1 -> v2: 4/4 v2 in service; all traffic moves from v1 to v2 at once; 4 replicas of v1 kept out of the traffic for bake_time 5 min"
    );
    let switched = sim.now;
    assert_eq!(sim.deploy.phase(), Phase::Baking { until: switched + s(300) });
    assert_eq!(sim.deploy.routes_only(), Some(2));
    // Old set kept for the bake time.
    sim.now = switched + s(299);
    let wait = sim.step();
    assert!(matches!(&wait[..], [DeployAction::Wait { until: Some(t), .. }] if *t == switched + s(300)), "{wait:?}");
    assert_eq!(sim.versions_live(), [1, 1, 1, 1, 2, 2, 2, 2]);
    // Then retired.
    sim.now = switched + s(300);
    assert_eq!(
        Sim::shorts(&sim.step()),
        ["retire web-1", "retire web-2", "retire web-3", "retire web-4", "finish succeeded"]
    );
    assert_eq!(sim.deploy.routes_only(), None);
    sim.drained();
    assert_eq!(sim.versions_live(), [2, 2, 2, 2]);
    assert_eq!(sim.finishes.len(), 1);
}

/// New replicas that never become healthy: rolled back at deploy_timeout,
/// with the old replicas untouched.
#[test]
fn rollback_on_timeout() {
    let mut sim = Sim::new(config(Strategy::Rolling, 2, 0), 3);
    assert_eq!(Sim::shorts(&sim.step()), ["launch 2 v2"]);
    for minute in 1..10 {
        sim.now = s(100 + 60 * minute);
        assert_eq!(Sim::shorts(&sim.step()), ["wait"], "minute {minute}");
    }
    sim.now = s(100 + 600);
    let actions = sim.step();
    assert_eq!(Sim::shorts(&actions), ["retire web-4", "retire web-5", "finish rolled back"]);
    let reason = "web-4 (v2) not in service 10 min after its start (deploy_timeout)";
    assert_eq!(sim.finishes, [DeployOutcome::RolledBack { reason: reason.into() }]);
    sim.drained();
    assert_eq!(sim.versions_live(), [1, 1, 1]);
    assert_eq!(sim.in_service(), 3);
}

/// A new replica fails halfway through a rolling deploy: the v2 replicas
/// are replaced by v1 ones the way they came, never below capacity 3 of 4
/// (one was lost to the failure).
#[test]
fn rollback_on_a_failed_replica_while_rolling() {
    let mut sim = Sim::new(DeployConfig::default(), 4);
    sim.step(); // launch web-5
    sim.all_in_service();
    sim.step(); // retire web-1, launch web-6
    sim.all_in_service();
    sim.drained();
    sim.step(); // retire web-2, launch web-7
    sim.drained();
    assert_eq!(sim.versions_live(), [1, 1, 2, 2, 2]);
    sim.now += s(30);
    sim.get("web-6").state = Failed;
    let actions = sim.step();
    // web-7 serves nobody: at once. web-5 serves: it waits for v1. 2 + 1
    // running, so two v1 fit under 4 + 1.
    assert_eq!(Sim::shorts(&actions), ["retire web-7", "launch 2 v1"], "{}", sim.transcript());
    assert!(actions[0].reason().starts_with("rolling back v2 -> v1 (web-6 (v2) failed during the deploy)"));
    sim.replicas.retain(|r| r.state != Failed); // the controller stops it
    for _ in 0..10 {
        sim.now += s(10);
        sim.all_in_service();
        sim.drained();
        sim.step();
        assert!(sim.in_service() >= 3, "{}", sim.transcript());
        if sim.deploy.is_finished() {
            break;
        }
    }
    assert!(matches!(sim.finishes[..], [DeployOutcome::RolledBack { .. }]), "{}", sim.transcript());
    sim.drained();
    sim.all_in_service();
    assert_eq!(sim.versions_live(), [1, 1, 1, 1]);
}

/// Blue-green: a new replica fails within the bake time: traffic goes back
/// to v1 at once, the v2 set leaves.
#[test]
fn rollback_on_a_failed_replica_while_baking() {
    let config = DeployConfig { strategy: Strategy::BlueGreen, ..DeployConfig::default() };
    let mut sim = Sim::new(config, 2);
    sim.step();
    sim.all_in_service();
    assert_eq!(Sim::shorts(&sim.step()), ["route v2"]);
    sim.now += s(120);
    sim.get("web-4").state = Failed;
    let actions = sim.step();
    assert_eq!(Sim::shorts(&actions), ["route v1", "retire web-3", "finish rolled back"]);
    assert_eq!(
        actions[0].reason(),
        "rolling back v2 -> v1 (web-4 (v2) failed within the bake time): all traffic back to v1 at once"
    );
    assert_eq!(sim.route, Some(1));
    sim.drained();
    sim.replicas.retain(|r| r.state != Failed);
    assert_eq!(sim.versions_live(), [1, 1]);
}

/// Rolling with a bake time: a failure within it rolls back (v1 relaunched);
/// a failure after it does not.
#[test]
fn rolling_bake_time_watches_the_new_version() {
    let config = DeployConfig { bake_time: Some(s(60)), ..DeployConfig::default() };
    for fail_at in [59, 60] {
        let mut sim = Sim::new(config.clone(), 2);
        for _ in 0..4 {
            sim.step();
            sim.all_in_service();
            sim.drained();
        }
        let took_over = sim.now;
        assert_eq!(sim.deploy.phase(), Phase::Baking { until: took_over + s(60) });
        assert_eq!(sim.versions_live(), [2, 2]);
        sim.now = took_over + s(fail_at);
        sim.get("web-3").state = Failed;
        let actions = Sim::shorts(&sim.step());
        if fail_at < 60 {
            // web-4 still serves; 2 v1 fit under 2 + 1 max_surge beside it.
            assert_eq!(actions, ["launch 2 v1"], "{}", sim.transcript());
            assert!(matches!(sim.deploy.phase(), Phase::RollingBack { .. }));
        } else {
            // After the bake time a failure is ordinary: replaced, and done.
            assert_eq!(actions, ["launch 1 v2", "finish succeeded"]);
        }
    }
}

/// `ebb rollback` in the middle of a rolling deploy.
#[test]
fn user_rollback_while_rolling() {
    let mut sim = Sim::new(DeployConfig::default(), 3);
    for _ in 0..3 {
        sim.step();
        sim.all_in_service();
        sim.drained();
    }
    assert_eq!(sim.versions_live(), [1, 2, 2, 2]);
    sim.deploy.rollback(sim.now, "requested by ebb rollback").unwrap();
    for _ in 0..8 {
        sim.step();
        assert!(sim.in_service() >= 3, "{}", sim.transcript());
        sim.now += s(5);
        sim.all_in_service();
        sim.drained();
        if sim.deploy.is_finished() {
            break;
        }
    }
    assert_eq!(sim.finishes, [DeployOutcome::RolledBack { reason: "requested by ebb rollback".into() }]);
    assert_eq!(sim.versions_live(), [1, 1, 1]);
}

/// A protected old replica: never retired; the deploy waits for it and
/// says so, retires it when it is released within protected_wait, or
/// finishes without it after.
#[test]
fn protected_old_replica_is_waited_for_then_left() {
    for release in [true, false] {
        let mut sim = Sim::new(DeployConfig::default(), 3);
        sim.get("web-2").protected = true;
        let mut guard = 0;
        while !matches!(sim.deploy.phase(), Phase::WaitingForProtected { .. }) {
            sim.step();
            sim.all_in_service();
            sim.drained();
            guard += 1;
            assert!(guard < 10, "{}", sim.transcript());
        }
        assert_eq!(sim.versions_live(), [1, 2, 2, 2], "web-2 stays, above desired");
        let wait = sim.step();
        let DeployAction::Wait { reason, until: Some(until) } = &wait[0] else { panic!("{wait:?}") };
        assert_eq!(
            reason,
            "rolling v1 -> v2: waiting for protected replica web-2 (v1) to be released; finishing without it after protected_wait 5 min"
        );
        let until = *until;
        if release {
            sim.now = until - s(1);
            sim.get("web-2").protected = false;
            assert_eq!(Sim::shorts(&sim.step()), ["retire web-2", "finish succeeded"]);
            sim.drained();
            assert_eq!(sim.versions_live(), [2, 2, 2]);
        } else {
            sim.now = until;
            let finish = sim.step();
            assert_eq!(Sim::shorts(&finish), ["finish succeeded"]);
            assert!(
                finish[0]
                    .reason()
                    .ends_with("protected web-2 (v1) kept after protected_wait 5 min: retired when released"),
                "{}",
                finish[0].reason()
            );
            assert_eq!(sim.versions_live(), [1, 2, 2, 2]);
        }
        assert_eq!(sim.finishes.len(), 1);
    }
}

/// A scale-out in the middle of a deploy launches the new version.
#[test]
fn scale_out_mid_deploy_launches_the_new_version() {
    let mut sim = Sim::new(DeployConfig::default(), 2);
    sim.step();
    sim.all_in_service();
    sim.step();
    sim.drained();
    sim.desired = 5;
    let actions = sim.step();
    assert_eq!(Sim::shorts(&actions), ["launch 3 v2"], "{}", sim.transcript());
    for _ in 0..6 {
        sim.now += s(10);
        sim.all_in_service();
        sim.drained();
        sim.step();
    }
    assert_eq!(sim.finishes, [DeployOutcome::Succeeded]);
    sim.drained();
    assert_eq!(sim.versions_live(), [2, 2, 2, 2, 2]);

    // Blue-green: while baking, too.
    let config = DeployConfig { strategy: Strategy::BlueGreen, ..DeployConfig::default() };
    let mut sim = Sim::new(config, 2);
    sim.step();
    sim.all_in_service();
    sim.step();
    sim.desired = 3;
    assert_eq!(Sim::shorts(&sim.step()), ["launch 1 v2"]);
}

fn config(strategy: Strategy, surge: u32, unavailable: u32) -> DeployConfig {
    DeployConfig { strategy, max_surge: surge, max_unavailable: unavailable, ..DeployConfig::default() }
}

// ---------------------------------------------------------------------------
// Properties over random event orders.
// ---------------------------------------------------------------------------

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    fn pick<'a, T>(&mut self, items: &'a mut [T]) -> Option<&'a mut T> {
        let n = items.len() as u64;
        (n > 0).then(|| &mut items[self.below(n) as usize])
    }
}

const SEEDS: u64 = 300;

/// Random configs and fleets; replicas come into service, drain, get
/// protected and released in random order; time passes; desired only
/// grows. With a healthy new version:
///
/// - in-service capacity never drops below `desired - max_unavailable`
///   (of the desired at the start);
/// - without protection, a rolling deploy never runs more than
///   `desired + max_surge` replicas;
/// - blue-green routes to v2 only when `desired` v2 replicas are in service;
/// - stepping again with the same view asks for nothing new;
/// - it finishes exactly once, succeeded, and then every unprotected live
///   replica runs v2.
#[test]
fn capacity_holds_over_random_event_orders() {
    let (mut waited_for_protected, mut blue_green) = (0, 0);
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed);
        let strategy = if rng.chance(0.3) { Strategy::BlueGreen } else { Strategy::Rolling };
        let surge = rng.below(3) as u32;
        let unavailable = if surge == 0 { 1 + rng.below(2) as u32 } else { rng.below(3) as u32 };
        let config = DeployConfig {
            strategy,
            max_surge: surge,
            max_unavailable: unavailable,
            deploy_timeout: s(86_400), // healthy but slow is not a failure here
            bake_time: Some(s(rng.below(3) * 30)),
            protected_wait: s(rng.below(3) * 60),
        };
        let desired = 1 + rng.below(6) as u32;
        let mut sim = Sim::new(config.clone(), desired);
        let uses_protection = rng.chance(0.4);
        if uses_protection {
            for r in sim.replicas.iter_mut() {
                r.protected = rng.chance(0.3);
            }
        }
        let floor = desired.saturating_sub(unavailable);
        let ctx = |sim: &Sim| format!("seed {seed}, {config:?}, desired {}\n{}", sim.desired, sim.transcript());

        for _ in 0..300 {
            match rng.below(10) {
                0..=2 => {
                    let mut starting: Vec<&mut ReplicaView> =
                        sim.replicas.iter_mut().filter(|r| r.state == Starting).collect();
                    if let Some(r) = rng.pick(&mut starting) {
                        r.state = InService;
                    }
                }
                3 | 4 => {
                    let leaving: Vec<usize> =
                        (0..sim.replicas.len()).filter(|&i| sim.replicas[i].state == Leaving).collect();
                    if !leaving.is_empty() {
                        let i = leaving[rng.below(leaving.len() as u64) as usize];
                        sim.replicas.remove(i);
                    }
                }
                5 if uses_protection => {
                    let mut old: Vec<&mut ReplicaView> =
                        sim.replicas.iter_mut().filter(|r| r.version == 1 && r.state != Leaving).collect();
                    if let Some(r) = rng.pick(&mut old) {
                        r.protected = !r.protected;
                    }
                }
                6 if rng.chance(0.1) => sim.desired += 1,
                _ => sim.now += s(1 + rng.below(40)),
            }
            let before = sim.replicas.clone();
            let actions = sim.step();
            // Idempotence: the same view, applied, asks nothing new.
            let again = sim.step();
            assert!(
                again.iter().all(|a| matches!(a, DeployAction::Wait { .. })),
                "asked twice: {again:?}\n{}",
                ctx(&sim)
            );
            if let Some(DeployAction::Route { only_version: Some(2), .. }) =
                actions.iter().find(|a| matches!(a, DeployAction::Route { .. }))
            {
                let ready = before.iter().filter(|r| r.version == 2 && r.state == InService).count() as u32;
                assert!(ready >= sim.desired, "switched with {ready}/{}\n{}", sim.desired, ctx(&sim));
            }
            assert!(sim.in_service() >= floor, "capacity {} < {floor}\n{}", sim.in_service(), ctx(&sim));
            if strategy == Strategy::Rolling && !uses_protection {
                assert!(
                    sim.live() <= sim.desired + surge.max(u32::from(unavailable == 0)),
                    "{} running\n{}",
                    sim.live(),
                    ctx(&sim)
                );
            }
            if sim.deploy.is_finished() {
                break;
            }
        }

        // Let everything settle: the deploy must finish, once.
        if !sim.deploy.is_finished() {
            for r in sim.replicas.iter_mut() {
                r.protected = false;
            }
        }
        for _ in 0..200 {
            if sim.deploy.is_finished() {
                break;
            }
            sim.now += s(30);
            sim.all_in_service();
            sim.drained();
            sim.step();
            assert!(sim.in_service() >= floor, "{}", ctx(&sim));
        }
        assert_eq!(sim.finishes, [DeployOutcome::Succeeded], "{}", ctx(&sim));
        assert!(sim.step().is_empty());
        let stale: Vec<&ReplicaView> = sim
            .replicas
            .iter()
            .filter(|r| r.version != 2 && matches!(r.state, Starting | InService) && !r.protected)
            .collect();
        assert!(stale.is_empty(), "left behind: {stale:?}\n{}", ctx(&sim));
        waited_for_protected +=
            sim.log.iter().any(
                |(_, a)| matches!(a, DeployAction::Wait { reason, .. } if reason.contains("waiting for protected")),
            ) as u32;
        blue_green += u32::from(strategy == Strategy::BlueGreen);
    }
    assert!(waited_for_protected > 10, "protection was exercised ({waited_for_protected})");
    assert!(blue_green > 30, "blue-green was exercised ({blue_green})");
}

/// With failures and `ebb rollback` thrown in: every deploy finishes
/// exactly once, nothing protected is ever retired (the Sim checks), and a
/// rolled-back deploy leaves only v1 replicas that are not protected.
#[test]
fn every_deploy_finishes_once_even_when_things_fail() {
    let mut rolled_back = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed ^ 0xdead_beef);
        let strategy = if rng.chance(0.5) { Strategy::BlueGreen } else { Strategy::Rolling };
        let config = DeployConfig {
            strategy,
            max_surge: 1 + rng.below(2) as u32,
            max_unavailable: rng.below(2) as u32,
            deploy_timeout: s(120 + rng.below(300)),
            bake_time: Some(s(rng.below(4) * 30)),
            protected_wait: s(60),
        };
        let desired = 1 + rng.below(5) as u32;
        let mut sim = Sim::new(config.clone(), desired);
        let ctx = |sim: &Sim| format!("seed {seed}, {config:?}\n{}", sim.transcript());
        for _ in 0..400 {
            match rng.below(12) {
                0..=3 => {
                    let mut starting: Vec<&mut ReplicaView> =
                        sim.replicas.iter_mut().filter(|r| r.state == Starting).collect();
                    if let Some(r) = rng.pick(&mut starting) {
                        r.state = InService;
                    }
                }
                4 | 5 => sim.drained(),
                6 if rng.chance(0.2) => {
                    let mut live: Vec<&mut ReplicaView> =
                        sim.replicas.iter_mut().filter(|r| matches!(r.state, Starting | InService)).collect();
                    if let Some(r) = rng.pick(&mut live) {
                        r.state = Failed;
                    }
                }
                7 => sim.replicas.retain(|r| r.state != Failed),
                8 if rng.chance(0.05) => {
                    let _ = sim.deploy.rollback(sim.now, "requested by ebb rollback");
                }
                9 if rng.chance(0.2) => {
                    let mut live: Vec<&mut ReplicaView> =
                        sim.replicas.iter_mut().filter(|r| r.state != Leaving).collect();
                    if let Some(r) = rng.pick(&mut live) {
                        r.protected = !r.protected;
                    }
                }
                _ => sim.now += s(1 + rng.below(60)),
            }
            sim.step();
            assert!(sim.finishes.len() <= 1, "{}", ctx(&sim));
            if sim.deploy.is_finished() {
                break;
            }
        }
        if !sim.deploy.is_finished() {
            for r in sim.replicas.iter_mut() {
                r.protected = false;
            }
        }
        for _ in 0..100 {
            if sim.deploy.is_finished() {
                break;
            }
            sim.now += s(30);
            sim.all_in_service();
            sim.drained();
            sim.replicas.retain(|r| r.state != Failed);
            sim.step();
        }
        assert_eq!(sim.finishes.len(), 1, "{}", ctx(&sim));
        assert!(sim.step().is_empty());
        let finish = sim.log.iter().rev().find_map(|(_, a)| match a {
            DeployAction::Finish { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        let incomplete = finish.is_some_and(|r| r.contains("incomplete after deploy_timeout"));
        if let (DeployOutcome::RolledBack { .. }, false) = (&sim.finishes[0], incomplete) {
            rolled_back += 1;
            let stale: Vec<&ReplicaView> = sim
                .replicas
                .iter()
                .filter(|r| r.version == 2 && matches!(r.state, Starting | InService) && !r.protected)
                .collect();
            assert!(stale.is_empty(), "v2 left after a rollback: {stale:?}\n{}", ctx(&sim));
        }
    }
    assert!(rolled_back > SEEDS / 10, "the failures did roll back ({rolled_back})");
}
