//! A fleet in virtual time for the autoscaler's timeline and property
//! tests: replicas boot, enter service, share a CPU demand, and leave when
//! the autoscaler says so. One `tick` is one second: a sample, a decision,
//! the change applied, exactly the loop the live controller runs.
//!
//! The model is deliberately simple: a replica is in service `boot` after it
//! starts; the demand (in percent of one replica's allotment) is shared
//! equally by the replicas in service, each capped at 100 % (a saturated
//! replica cannot show more); leaving is instant.
#![allow(dead_code)]

use ebb_core::config::{Config, Replicas, ScalingConfig};
use ebb_core::fleet::{self, CrashLoop, FleetAction, FleetInput, ReplicaFacts, ReplicaPhase};
use ebb_core::scaling::{
    Autoscaler, Change, Decision, Demand, FleetView, HostSample, ReplicaSample, ServiceSample, Time,
};
use std::path::Path;
use std::time::Duration;

/// 2026-11-02 00:00 UTC, a Monday: the wall clock at t = 0.
pub const MONDAY: i64 = 1_793_577_600;

pub fn secs(s: u64) -> Time {
    Duration::from_secs(s)
}

/// The scaling config and bounds of the first service of an example file.
pub fn example(path: &str) -> (ScalingConfig, Replicas) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let config = Config::parse(&text, &file).unwrap_or_else(|e| panic!("{e}"));
    let service = config.services.into_values().next().unwrap();
    (service.scaling, service.replicas)
}

/// A service's scaling config from a `[service.web.scaling]` snippet (with
/// `min = 0`, the `[service.web.idle]` table that allows it).
pub fn scaling(snippet: &str, replicas: &str) -> (ScalingConfig, Replicas) {
    let idle = if replicas.contains("min = 0") { "\n[service.web.idle]\nafter = \"5m\"\n" } else { "" };
    let text = format!(
        "[service.web]\ncommand = \"app\"\nlisten = \"127.0.0.1:8080\"\nreplicas = {replicas}\n\n{snippet}{idle}"
    );
    let config = Config::parse(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
    let web = &config.services["web"];
    (web.scaling.clone(), web.replicas)
}

#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
    pub started: Time,
    pub in_service_since: Option<Time>,
}

pub struct Sim {
    pub scaler: Autoscaler,
    pub now: Time,
    /// UTC wall clock, Unix seconds.
    pub wall: i64,
    pub desired: u32,
    pub replicas: Vec<Replica>,
    /// Start to in service.
    pub boot: Duration,
    /// Total CPU demand, in percent of one replica's allotment.
    pub demand: f64,
    /// Total requests per second.
    pub requests: f64,
    /// In-flight requests per replica are `requests × latency`, Little's law.
    pub latency_s: f64,
    /// `/proc` unreadable: every replica's CPU is missing.
    pub cpu_missing: bool,
    pub deploying: bool,
    /// What the balancer sees each second: requests queued (and in flight,
    /// with `limit`); `routable` follows the replicas in service.
    pub queue: Option<Demand>,
    /// ebb's host each second; `None`: replicas run elsewhere.
    pub host: Option<HostSample>,
    /// Every change, with its time.
    pub changes: Vec<(Time, Change)>,
    pub last: Option<Decision>,
    /// Every change and every new hold, one line each, for failure messages.
    pub story: Vec<String>,
    next_id: u32,
}

impl Sim {
    /// A fleet of `bounds.desired` replicas, in service at t = 0.
    pub fn new(config: &ScalingConfig, bounds: Replicas) -> Sim {
        let mut sim = Sim {
            scaler: Autoscaler::new(config, bounds.bounds),
            now: Time::ZERO,
            wall: MONDAY,
            desired: bounds.desired,
            replicas: Vec::new(),
            boot: secs(10),
            demand: 0.0,
            requests: 0.0,
            latency_s: 0.05,
            cpu_missing: false,
            deploying: false,
            queue: None,
            host: None,
            changes: Vec::new(),
            last: None,
            story: Vec::new(),
            next_id: 1,
        };
        for _ in 0..bounds.desired {
            sim.start_replica();
            sim.replicas.last_mut().unwrap().in_service_since = Some(Time::ZERO);
        }
        sim
    }

    fn start_replica(&mut self) {
        self.replicas.push(Replica { id: format!("web-{}", self.next_id), started: self.now, in_service_since: None });
        self.next_id += 1;
    }

    pub fn in_service(&self) -> u32 {
        self.replicas.iter().filter(|r| r.in_service_since.is_some()).count() as u32
    }

    /// CPU of each replica in service now.
    pub fn cpu_each(&self) -> f64 {
        let n = self.in_service();
        if n == 0 {
            0.0
        } else {
            (self.demand / f64::from(n)).min(100.0)
        }
    }

    /// One second passes.
    pub fn tick(&mut self) -> &Decision {
        self.now += secs(1);
        self.wall += 1;
        for r in &mut self.replicas {
            if r.in_service_since.is_none() && self.now - r.started >= self.boot {
                r.in_service_since = Some(self.now);
            }
        }
        let n = self.in_service();
        let (cpu, rps) = (self.cpu_each(), if n == 0 { 0.0 } else { self.requests / f64::from(n) });
        let mut sample = ServiceSample::new(self.now);
        for r in &self.replicas {
            let mut s = ReplicaSample::new(r.id.clone(), r.in_service_since);
            if r.in_service_since.is_some() {
                s.cpu_percent = (!self.cpu_missing).then_some(cpu);
                s.requests_per_s = Some(rps);
                s.in_flight = Some(rps * self.latency_s);
            } else {
                s.cpu_percent = (!self.cpu_missing).then_some(30.0); // booting
            }
            sample.replicas.push(s);
        }
        sample.requests_per_s = Some(self.requests);
        sample.concurrency = Some(self.requests * self.latency_s);
        sample.demand = Some(match self.queue {
            Some(q) => Demand { routable: n, at_limit: if q.queued > 0 { n } else { q.at_limit }, ..q },
            None => {
                Demand { offered_per_s: self.requests, served_per_s: self.requests, routable: n, ..Default::default() }
            }
        });
        sample.host = self.host;
        self.scaler.observe(sample);
        let fleet = FleetView {
            desired: self.desired,
            in_service: n,
            pending: self.replicas.len() as u32 - n,
            deploying: self.deploying,
        };
        let decision = self.scaler.decide(self.now, self.wall, &fleet);
        if let Some(change) = decision.change.clone() {
            self.apply(change);
        } else {
            let said = decision.holding.as_ref().map(|h| h.why.clone());
            let before = self.last.as_ref().and_then(|d| d.holding.as_ref().map(|h| h.why.clone()));
            if said.is_some() && said != before {
                self.story.push(format!("t={:>4}s {decision}", self.now.as_secs()));
            }
        }
        self.last = Some(decision);
        self.last.as_ref().unwrap()
    }

    fn apply(&mut self, change: Change) {
        self.story.push(format!("t={:>4}s {change}", self.now.as_secs()));
        self.desired = change.to;
        self.reconcile();
        self.changes.push((self.now, change));
    }

    /// The fleet converges on desired through the same planner as the live
    /// controller: launches start booting, retired replicas leave at once.
    fn reconcile(&mut self) {
        let facts: Vec<ReplicaFacts> = self
            .replicas
            .iter()
            .map(|r| {
                let phase = if r.in_service_since.is_some() { ReplicaPhase::InService } else { ReplicaPhase::Starting };
                ReplicaFacts::new(&r.id, 1, phase, r.started)
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
        let mut leaving = Vec::new();
        for action in fleet::plan(&input, &CrashLoop::default()) {
            match action {
                FleetAction::Launch { count, .. } => (0..count).for_each(|_| self.start_replica()),
                FleetAction::Retire { id, .. } => leaving.push(id),
                FleetAction::HoldStarts { .. } => unreachable!("nothing fails in this model"),
                other => unreachable!("no warm pool in this model: {other:?}"),
            }
        }
        self.replicas.retain(|r| !leaving.contains(&r.id));
    }

    /// `ebb scale web N`.
    pub fn scale(&mut self, n: u32) -> Change {
        let change = self.scaler.manual_scale(self.now, self.desired, n);
        self.apply(change.clone());
        change
    }

    pub fn run(&mut self, seconds: u64) {
        for _ in 0..seconds {
            self.tick();
        }
    }

    /// Runs until `now` reaches `t` seconds.
    pub fn run_until(&mut self, t: u64) {
        while self.now < secs(t) {
            self.tick();
        }
    }

    /// Runs until the desired count changes, for at most `limit` seconds;
    /// the time of the change.
    pub fn run_until_change(&mut self, limit: u64) -> Option<u64> {
        let before = self.changes.len();
        for _ in 0..limit {
            self.tick();
            if self.changes.len() > before {
                return Some(self.now.as_secs());
            }
        }
        None
    }

    /// (time in s, from, to, policy) of every change.
    pub fn timeline(&self) -> Vec<(u64, u32, u32, String)> {
        self.changes.iter().map(|(t, c)| (t.as_secs(), c.from, c.to, c.policy.clone())).collect()
    }

    /// The story so far, for assertion messages.
    pub fn told(&self) -> String {
        self.story.join("\n")
    }

    /// The hold shown by `ebb status` right now.
    pub fn holding(&self) -> String {
        self.last.as_ref().and_then(|d| d.holding.as_ref()).map(|h| h.to_string()).unwrap_or_default()
    }
}

/// A small seeded xorshift generator: reproducible, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}
