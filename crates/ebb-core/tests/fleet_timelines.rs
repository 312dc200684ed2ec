//! The fleet planner in virtual time: a modelled fleet carries out every
//! action (a launch appears as a starting replica at once, a retired one is
//! gone at once), and the tests crash replicas, bring them into service,
//! interrupt them and let time pass, as the live controller reports it.
//! Each case reads as a sentence.

use ebb_core::fleet::{self, CrashLoop, FleetAction, FleetInput, ReplicaFacts, ReplicaPhase};
use std::time::Duration;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

struct Replica {
    id: String,
    phase: ReplicaPhase,
    started: Duration,
    interrupted_until: Option<Duration>,
}

struct Fleet {
    now: Duration,
    desired: u32,
    replicas: Vec<Replica>,
    crash_loop: CrashLoop,
    next: u32,
    /// `t=1.5s launch web-4`, `t=2s retire web-1 (scale-in)`, …
    log: Vec<String>,
}

impl Fleet {
    fn new(desired: u32) -> Fleet {
        let mut fleet = Fleet {
            now: ms(0),
            desired,
            replicas: Vec::new(),
            crash_loop: CrashLoop::default(),
            next: 1,
            log: Vec::new(),
        };
        fleet.reconcile();
        fleet.log.clear();
        fleet
    }

    fn say(&mut self, what: String) {
        self.log.push(format!("t={}s {what}", self.now.as_secs_f64()));
    }

    /// One pass of the planner, carried out.
    fn reconcile(&mut self) {
        let facts: Vec<ReplicaFacts> = self
            .replicas
            .iter()
            .map(|r| ReplicaFacts {
                interrupted_until: r.interrupted_until,
                ..ReplicaFacts::new(&r.id, 1, r.phase, r.started)
            })
            .collect();
        let input = FleetInput {
            now: self.now,
            desired: self.desired,
            current_version: 1,
            deploying: false,
            replicas: &facts,
            warm_pool: 0,
        };
        let actions = fleet::plan(&input, &self.crash_loop);
        drop(facts);
        for action in actions {
            match action {
                FleetAction::Launch { count, .. } => {
                    for _ in 0..count {
                        let id = format!("web-{}", self.next);
                        self.next += 1;
                        self.say(format!("launch {id}"));
                        self.replicas.push(Replica {
                            id,
                            phase: ReplicaPhase::Starting,
                            started: self.now,
                            interrupted_until: None,
                        });
                    }
                }
                FleetAction::Retire { id, reason } => {
                    self.say(format!("retire {id} ({reason})"));
                    self.replicas.retain(|r| r.id != id);
                }
                FleetAction::HoldStarts { .. } => {}
                other => unreachable!("no warm pool in this model: {other:?}"),
            }
        }
    }

    /// Time passes in 100 ms ticks, reconciling after each, as the live
    /// loop's tick does.
    fn wait(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += ms(100);
            self.reconcile();
        }
    }

    fn newest(&self) -> String {
        self.replicas.last().expect("a replica").id.clone()
    }

    /// The replica crashes (before reaching service, unless it did).
    fn crash(&mut self, id: &str) {
        let r = self.replicas.iter().position(|r| r.id == id).expect("a known replica");
        let r = self.replicas.remove(r);
        self.say(format!("{id} crashed"));
        if r.phase == ReplicaPhase::Starting {
            if let Some(backoff) = self.crash_loop.failed_before_service(self.now) {
                self.say(backoff.to_string());
            }
        }
        self.reconcile();
    }

    fn in_service(&mut self, id: &str) {
        self.replicas.iter_mut().find(|r| r.id == id).expect("a known replica").phase = ReplicaPhase::InService;
        self.crash_loop.reached_service();
        self.reconcile();
    }

    fn interrupt(&mut self, id: &str, notice: Duration) {
        let leave_by = fleet::leave_by(self.now, notice, Duration::from_secs(1), Duration::from_secs(1));
        self.replicas.iter_mut().find(|r| r.id == id).expect("a known replica").interrupted_until = Some(leave_by);
        self.reconcile();
    }
}

#[test]
fn a_replica_that_crashes_at_every_start_waits_longer_each_time_2_s_after_the_fourth_crash() {
    let mut fleet = Fleet::new(1);
    for _ in 0..4 {
        fleet.wait(ms(1000));
        let id = fleet.newest();
        fleet.crash(&id);
    }
    fleet.wait(ms(3000));
    // One crash is replaced at once; from the second in a row, starts wait
    // 0.5 s, then 1 s, then 2 s.
    assert_eq!(
        fleet.log,
        [
            "t=1s web-1 crashed",
            "t=1s launch web-2",
            "t=2s web-2 crashed",
            "t=2s 2 replicas in a row failed before reaching service; next start in 500ms",
            "t=2.5s launch web-3",
            "t=3s web-3 crashed",
            "t=3s 3 replicas in a row failed before reaching service; next start in 1s",
            "t=4s launch web-4",
            "t=4s web-4 crashed",
            "t=4s 4 replicas in a row failed before reaching service; next start in 2s",
            "t=6s launch web-5",
        ]
    );
}

#[test]
fn the_holds_stop_doubling_at_30_s() {
    let mut fleet = Fleet::new(1);
    for _ in 0..9 {
        let id = fleet.newest();
        fleet.crash(&id);
        fleet.wait(Duration::from_secs(40));
    }
    let last = fleet.log.iter().filter(|l| l.contains("next start in")).next_back().unwrap();
    assert!(last.ends_with("9 replicas in a row failed before reaching service; next start in 30s"), "{last}");
}

#[test]
fn a_replica_that_reaches_service_breaks_the_loop() {
    let mut fleet = Fleet::new(2);
    let first = fleet.replicas[0].id.clone();
    fleet.crash(&first);
    fleet.in_service("web-2");
    let id = fleet.newest();
    fleet.crash(&id);
    assert_eq!(
        fleet.log,
        ["t=0s web-1 crashed", "t=0s launch web-3", "t=0s web-3 crashed", "t=0s launch web-4"],
        "web-2 in service between the crashes: no backoff"
    );
}

#[test]
fn an_interrupted_replica_serves_until_its_replacement_does() {
    let mut fleet = Fleet::new(2);
    fleet.in_service("web-1");
    fleet.in_service("web-2");
    fleet.wait(ms(1000));
    fleet.interrupt("web-1", Duration::from_secs(120));
    fleet.wait(ms(5000));
    fleet.in_service("web-3");
    assert_eq!(fleet.log, ["t=1s launch web-3", "t=6s retire web-1 (interruption notice: replacement in service)"]);
}

#[test]
fn an_interrupted_replica_leaves_at_its_deadline_if_the_replacement_is_late() {
    let mut fleet = Fleet::new(1);
    fleet.in_service("web-1");
    // 10 s notice, 1 s drain, 1 s stop: leave 8 s in.
    fleet.interrupt("web-1", Duration::from_secs(10));
    fleet.wait(Duration::from_secs(9));
    assert_eq!(
        fleet.log,
        ["t=0s launch web-2", "t=8s retire web-1 (interruption notice: out of time before the replacement was ready)"]
    );
}
