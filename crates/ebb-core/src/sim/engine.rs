//! The second-by-second loop.
//!
//! Each virtual second `s` of the trace (the second `[s, s+1)`):
//!
//! 1. replicas whose boot has ended join the rotation (one that joins
//!    during the second serves for the rest of it); simulated failures
//!    (a Poisson draw from `failure_rate`) remove replicas, and the fleet
//!    planner replaces them at once, as live (with crash-loop backoff when
//!    replicas fail in a row before reaching service);
//! 2. the [queueing model](super::queue) turns the offered rate, the
//!    backlog and the replicas in service into the second's numbers;
//! 3. at its end, `s + 1`, the sample the live controller would read goes
//!    to [`Autoscaler::observe`], and [`Autoscaler::decide`] gets the fleet
//!    as the controller sees it (`desired`, in service, pending) and the
//!    wall clock `start_unix + s + 1`;
//! 4. a change becomes a `scaled` event worded by [`Change`]'s `Display`,
//!    exactly as `ebb events` shows it, and the fleet converges through
//!    [`fleet::plan`], the live controller's planner: new replicas start
//!    booting, leaving ones (picked by [`fleet::pick_for_scale_in`]) drain
//!    at once.
//!
//! With `[idle]` (scale to zero, `stop` mode) the same [`Idler`] as live
//! decides each second: a second with requests is activity; at zero the
//! offered requests are held (up to `max_held`, for at most
//! `hold_timeout`, the rest shed) while a replica boots, and the planner
//! is given [`Idler::desired`]. In `suspend` mode the replicas stay but
//! are frozen (not serving, not in replica-hours: in suspended
//! replica-hours); a wake thaws them, in service `resume` later. A wake
//! happens in the second of the first request (live wakes on its
//! arrival), at the second's start.
//!
//! With a warm pool (`[service.NAME.warm_pool]`) the planner's pool rules
//! run as live: members boot beside the fleet and are frozen once in
//! service (suspended replica-hours); a short fleet takes them, in
//! service `resume` later instead of `boot`; the pool refills.
//!
//! With a node pool (`SimOptions::node_pool`, [`super::nodes`]) a replica
//! needs room on a node: one without waits (pending) until the live
//! cluster decision's new node has booted; a drained node's replicas leave
//! and the planner replaces them.
//!
//! The work per second is a few passes over the replicas (building the
//! sample, the autoscaler's pass over it, the planner's facts) with no
//! allocation per replica: ids are made once, when a replica starts, and
//! samples carry empty ids, which the policies never read.
//!
//! [`Change`]: crate::scaling::Change

use super::forecasting::{ForecastReport, Forecasting};
use super::nodes::{NodePoolModel, Nodes};
use super::queue::Flow;
use super::rng::Rng;
use super::summary::{Slo, Summary};
use super::trace::Trace;
use crate::config::Replicas;
use crate::config::{IdleConfig, IdleMode, WarmPoolConfig};
use crate::fleet::idle::{Activity, IdleChange, Idler};
use crate::fleet::{self, CrashLoop, FleetAction, FleetInput, ReplicaFacts, ReplicaPhase, RetireReason};
use crate::scaling::{Autoscaler, Demand, FleetView, ReplicaSample, ScalingConfig, ServiceSample};
use std::time::Duration;

/// A policy to simulate: a service's scaling config and replicas.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Names the run in tables and charts: the config file, or a preset.
    pub name: String,
    pub scaling: ScalingConfig,
    pub replicas: Replicas,
    /// Scale to zero (`[service.NAME.idle]`), if the service has it.
    pub idle: Option<IdleConfig>,
    /// The warm pool (`[service.NAME.warm_pool]`), if the service has one.
    pub warm_pool: Option<WarmPoolConfig>,
}

/// The fleet: how much a replica serves, how long it takes to boot, how
/// often it fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetModel {
    /// Requests per second one replica serves when saturated (μ).
    pub capacity: f64,
    /// The CPU % a saturated replica reads: 100 for a replica that uses
    /// exactly its allotment; less when it saturates first (locks, I/O, a
    /// runtime's pauses, a busy host), more when nothing caps it at its
    /// allotment. CPU = utilisation × this.
    pub saturation_cpu: f64,
    /// From start to in service (health checks passed), to the millisecond.
    pub boot: Duration,
    /// From a thaw (a suspended replica resumed: scale to zero's `suspend`
    /// wake, a warm pool member taken) to serving.
    pub resume: Duration,
    /// Failures (crashes, spot interruptions) per replica-hour; 0 for none.
    pub failure_rate: f64,
    /// The notice a failure gives: zero, it is a crash (the replica is
    /// gone at once); otherwise a spot-style interruption notice: a
    /// replica in service keeps serving while its replacement boots, and
    /// leaves once the replacement is in service or the notice runs out,
    /// by the live rule ([`fleet::leave_by`], [`fleet::chaos_victim`]).
    pub interruption_notice: Duration,
    /// A request waits at most this long in the backlog before it is shed.
    pub queue_limit: Duration,
    pub seed: u64,
    /// The balancer's `max_in_flight`. With it, requests beyond the limit
    /// wait in ebb's queue, where the saturation rules see them; without
    /// it (as live) they wait inside the replicas and the balancer has no
    /// queue to read.
    pub max_in_flight: Option<u32>,
}

impl FleetModel {
    /// A thaw takes milliseconds (SIGCONT, `docker unpause`); 100 ms is
    /// the goal's bound on a held request's first byte after a resume.
    pub const DEFAULT_RESUME: Duration = Duration::from_millis(100);
}

impl Default for FleetModel {
    fn default() -> Self {
        FleetModel {
            capacity: 50.0,
            saturation_cpu: 100.0,
            boot: Duration::from_secs(5),
            resume: Self::DEFAULT_RESUME,
            failure_rate: 0.0,
            interruption_notice: Duration::ZERO,
            queue_limit: Duration::from_secs(10),
            seed: 0,
            max_in_flight: None,
        }
    }
}

/// How to run and account.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The service's name, for event lines and replica ids.
    pub service: String,
    /// Unix seconds of the trace's first second: the wall clock scheduled
    /// actions see is `start_unix + virtual seconds`.
    pub start_unix: i64,
    pub slo: Slo,
    /// Per replica-hour.
    pub price: f64,
    /// Two scaling actions in opposite directions within this long are a flap.
    pub flap_window: Duration,
    /// A node pool (`--node-pool` with `[cluster]`): replicas need room on
    /// a node; `None`: room is unlimited.
    pub node_pool: Option<NodePoolModel>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            service: "web".into(),
            start_unix: DEFAULT_START_UNIX,
            slo: Slo::default(),
            price: 0.05,
            flap_window: Duration::from_secs(600),
            node_pool: None,
        }
    }
}

/// 2026-01-05T00:00:00Z, a Monday: when a trace says nothing about its
/// time, it starts here.
pub const DEFAULT_START_UNIX: i64 = 1_767_571_200;

/// One virtual second of a run: the second `[second, second+1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    pub second: u32,
    /// Requests offered.
    pub rate: f64,
    pub served: f64,
    pub shed: f64,
    /// Desired capacity after the decision at the end of the second.
    pub desired: u32,
    /// Replicas in service (serving) during the second.
    pub in_service: u32,
    /// Replicas booting during the second.
    pub pending: u32,
    /// Replicas frozen during the second: the fleet's while idle in
    /// `suspend` mode, and warm pool members (booting ones too).
    pub suspended: u32,
    /// CPU of each replica in service, %.
    pub cpu: f64,
    /// Ready nodes with a node pool (0 without).
    pub nodes: u32,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The SLO's percentile.
    pub slo_ms: Option<f64>,
    /// Queue time at the end of the second, ms.
    pub queue_ms: f64,
}

/// A line of the decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// Virtual seconds since the start.
    pub at: u64,
    /// As `ebb events` names it: `scaled`, `replica_exited`.
    pub kind: &'static str,
    pub replica: Option<String>,
    pub from: Option<u32>,
    pub to: Option<u32>,
    /// The change's `Display`, as the live event's reason.
    pub reason: String,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Run {
    pub policy: String,
    pub seconds: Vec<Second>,
    pub events: Vec<SimEvent>,
    pub summary: Summary,
    /// How the forecast of the first predictive policy did, if any.
    pub forecast: Option<ForecastReport>,
    /// A baseline (oracle, static peak), not a policy: no autoscaler ran.
    pub baseline: bool,
}

#[derive(Debug, Clone)]
struct Replica {
    /// `{service}-{number}`, as live ids read.
    id: String,
    /// When it started, ms of virtual time.
    started: u64,
    /// When it joins the rotation (`started + boot`), ms.
    in_service_at: u64,
    /// Its reaching service was told to the crash-loop tracker.
    reached_service: bool,
    /// Under an interruption notice: leaves by then at the latest, ms.
    interrupted_until: Option<u64>,
    /// With a node pool: the node it runs on; `None` while it waits for
    /// room (its `in_service_at` is then `WAITING`).
    node: Option<u32>,
}

/// `in_service_at` of a replica waiting for room on a node: after all others.
const WAITING: u64 = u64::MAX;

/// The simulated fleet: replicas sorted by `in_service_at` (starts are
/// appended and boot is constant), so those in service are a prefix.
struct Fleet {
    replicas: Vec<Replica>,
    /// Warm pool members (frozen once `in_service_at` has passed).
    pool: Vec<Replica>,
    pool_size: u32,
    /// Idle in `suspend` mode: the replicas are frozen and serve nothing.
    frozen: bool,
    next_number: u32,
    service: String,
    boot: u64,
    /// A thaw, ms.
    resume: u64,
    crash_loop: CrashLoop,
    /// The node pool, if the run has one.
    nodes: Option<Nodes>,
}

impl Fleet {
    fn start(&mut self, at: u64, ready: u64) {
        let mut replica = self.new_replica(at, ready);
        if let Some(nodes) = &mut self.nodes {
            replica.node = nodes.place(at);
            if replica.node.is_none() {
                replica.in_service_at = WAITING;
            }
        }
        let index = self.replicas.partition_point(|r| r.in_service_at <= replica.in_service_at);
        self.replicas.insert(index, replica);
    }

    /// Replicas `leaving` are gone: their nodes have room again.
    fn forget(&mut self, leaving: &[String]) {
        if let Some(nodes) = &mut self.nodes {
            for r in self.replicas.iter().filter(|r| leaving.contains(&r.id)) {
                if let Some(node) = r.node {
                    nodes.release(node);
                }
            }
        }
        self.replicas.retain(|r| !leaving.contains(&r.id));
    }

    /// The node pool's step at `now` (ms): waiting replicas are placed
    /// where there is room (booting from now), the cluster decides, and a
    /// drained node's replicas leave (the planner replaces them).
    /// Returns whether replicas left.
    fn step_nodes(&mut self, now: u64, events: &mut Vec<SimEvent>) -> bool {
        let Some(nodes) = &mut self.nodes else { return false };
        let mut placed = false;
        for r in self.replicas.iter_mut().filter(|r| r.in_service_at == WAITING) {
            let Some(node) = nodes.place(now) else { break };
            r.node = Some(node);
            r.in_service_at = now + self.boot;
            placed = true;
        }
        if placed {
            self.replicas.sort_by_key(|r| r.in_service_at);
        }
        let waiting = self.replicas.iter().filter(|r| r.in_service_at == WAITING).count() as u32;
        let Some(drained) = nodes.step(now, waiting, events) else { return false };
        let leaving: Vec<String> =
            self.replicas.iter().filter(|r| r.node == Some(drained)).map(|r| r.id.clone()).collect();
        self.forget(&leaving);
        !leaving.is_empty()
    }

    fn new_replica(&mut self, at: u64, ready: u64) -> Replica {
        let id = format!("{}-{}", self.service, self.next_number);
        self.next_number += 1;
        Replica { id, started: at, in_service_at: ready, reached_service: false, interrupted_until: None, node: None }
    }

    /// Thaws the fleet at `now` (ms): each replica serves `resume` later
    /// (one still booting, when its boot ends). `max` keeps the order.
    fn thaw(&mut self, now: u64) {
        self.frozen = false;
        for r in &mut self.replicas {
            r.in_service_at = r.in_service_at.max(now + self.resume);
        }
    }

    /// A warm pool member joins the fleet at `now` (ms): a frozen one
    /// serves `resume` later, one still booting when its boot ends.
    fn take_from_pool(&mut self, id: &str, now: u64, events: &mut Vec<SimEvent>) {
        let Some(index) = self.pool.iter().position(|r| r.id == id) else { return };
        let mut r = self.pool.remove(index);
        let reason = match r.in_service_at <= now {
            true => format!("taken from the warm pool: resumed in {} ms instead of a boot", self.resume),
            false => "taken from the warm pool while still starting".to_string(),
        };
        r.in_service_at = r.in_service_at.max(now + self.resume);
        events.push(SimEvent {
            at: now / 1000,
            kind: "warm_replica_used",
            replica: Some(r.id.clone()),
            from: None,
            to: None,
            reason,
        });
        let at = self.replicas.partition_point(|x| x.in_service_at <= r.in_service_at);
        self.replicas.insert(at, r);
    }

    /// Replicas that reached service by `now` break a crash loop, as live.
    fn note_in_service(&mut self, now: u64) {
        for r in self.replicas.iter_mut().filter(|r| r.in_service_at <= now && !r.reached_service) {
            r.reached_service = true;
            self.crash_loop.reached_service();
        }
    }

    /// The replica at `index` crashes at `now` (ms): gone at once; one
    /// that never reached service counts toward crash-loop backoff.
    fn crash(&mut self, index: usize, now: u64, events: &mut Vec<SimEvent>) {
        let victim = self.replicas.remove(index);
        if let (Some(nodes), Some(node)) = (&mut self.nodes, victim.node) {
            nodes.release(node);
        }
        let second = now / 1000;
        events.push(SimEvent {
            at: second,
            kind: "replica_exited",
            replica: Some(victim.id.clone()),
            from: None,
            to: None,
            reason: format!(
                "replica interrupted (simulated failure) after {:.1} s; replacing it",
                now.saturating_sub(victim.started) as f64 / 1000.0
            ),
        });
        if victim.in_service_at > now {
            if let Some(backoff) = self.crash_loop.failed_before_service(Duration::from_millis(now)) {
                let reason = backoff.to_string();
                events.push(SimEvent { at: second, kind: "backoff", replica: None, from: None, to: None, reason });
            }
        }
    }

    /// A spot-style interruption notice at `now` (ms) for a replica in
    /// service, chosen as live chaos chooses (`pick` is a random number).
    fn interrupt(&mut self, pick: u64, now: u64, notice: Duration, events: &mut Vec<SimEvent>) {
        let facts = self.facts(now, 0);
        let Some(victim) = fleet::chaos_victim(&facts, 1.0, 0.0, pick).map(str::to_string) else { return };
        drop(facts);
        // Nothing to drain or stop in the model: it may serve to the end.
        let leave_by = fleet::leave_by(Duration::from_millis(now), notice, Duration::ZERO, Duration::ZERO);
        let r = self.replicas.iter_mut().find(|r| r.id == victim).expect("the victim is in the fleet");
        r.interrupted_until = Some(leave_by.as_millis() as u64);
        let notice = humantime::format_duration(notice);
        events.push(SimEvent {
            at: now / 1000,
            kind: "replica_interrupted",
            replica: Some(victim),
            from: None,
            to: None,
            reason: format!(
                "interruption notice ({notice}, simulated failure): starting a replacement; this replica leaves once it is in service, or in {notice} at the latest"
            ),
        });
    }

    /// What the planner knows of each replica at `now` (ms).
    fn facts(&self, now: u64, in_flight: u64) -> Vec<ReplicaFacts<'_>> {
        let fleet = self.replicas.iter().map(|r| {
            let serving = r.in_service_at <= now;
            let phase = if serving { ReplicaPhase::InService } else { ReplicaPhase::Starting };
            ReplicaFacts {
                in_flight: if serving && !self.frozen { in_flight } else { 0 },
                interrupted_until: r.interrupted_until.map(Duration::from_millis),
                suspended: serving && self.frozen,
                ..ReplicaFacts::new(&r.id, 1, phase, Duration::from_millis(r.started))
            }
        });
        // A member that has booted is frozen at once (the model has no
        // suspend time to wait for).
        let pool = self.pool.iter().map(|r| {
            let ready = r.in_service_at <= now;
            let phase = if ready { ReplicaPhase::InService } else { ReplicaPhase::Starting };
            ReplicaFacts {
                pooled: true,
                suspended: ready,
                ..ReplicaFacts::new(&r.id, 1, phase, Duration::from_millis(r.started))
            }
        });
        fleet.chain(pool).collect()
    }

    /// One pass of the live planner at `now` (ms): launches start booting,
    /// retired replicas leave at once. `in_flight` is each in-service
    /// replica's requests in flight, as the balancer would count them.
    fn converge(&mut self, now: u64, desired: u32, in_flight: u64, events: &mut Vec<SimEvent>) {
        let facts = self.facts(now, in_flight);
        let input = FleetInput {
            now: Duration::from_millis(now),
            desired,
            current_version: 1,
            deploying: false,
            replicas: &facts,
            warm_pool: self.pool_size,
        };
        let actions = fleet::plan(&input, &self.crash_loop);
        drop(facts);
        let mut leaving = Vec::new();
        for action in actions {
            match action {
                FleetAction::Launch { count, .. } => (0..count).for_each(|_| self.start(now, now + self.boot)),
                FleetAction::Retire { id, reason } => {
                    // Scale-in is told by its `scaled` event; a release
                    // under notice is an event of its own, as live.
                    if reason != RetireReason::ScaleIn {
                        events.push(SimEvent {
                            at: now / 1000,
                            kind: "replica_draining",
                            replica: Some(id.clone()),
                            from: None,
                            to: None,
                            reason: format!("leaving the rotation ({reason})"),
                        });
                    }
                    leaving.push(id);
                }
                FleetAction::HoldStarts { .. } => {}
                FleetAction::TakeFromPool { id } => self.take_from_pool(&id, now, events),
                FleetAction::FillPool { count } => {
                    for _ in 0..count {
                        let member = self.new_replica(now, now + self.boot);
                        self.pool.push(member);
                    }
                }
                // Frozen once booted, in the model: see `facts`.
                FleetAction::SuspendPooled { .. } => {}
            }
        }
        if !leaving.is_empty() {
            self.forget(&leaving);
            self.pool.retain(|r| !leaving.contains(&r.id));
        }
    }
}

/// Runs `policy` against `trace` on the `model` fleet.
pub fn simulate(policy: &Policy, model: &FleetModel, trace: &Trace, options: &SimOptions) -> Run {
    let demand = super::elasticity::demand(trace, model, &options.slo);
    simulate_against(policy, model, trace, options, &demand)
}

/// [`simulate`] with the trace's demand computed once
/// ([`super::elasticity::demand`]) and shared by several policies.
pub fn simulate_against(
    policy: &Policy,
    model: &FleetModel,
    trace: &Trace,
    options: &SimOptions,
    demand: &[u32],
) -> Run {
    let mut autoscaler = Autoscaler::new(&policy.scaling, policy.replicas.bounds);
    autoscaler.set_boot_time(model.boot);
    let mut forecasting = Forecasting::new(&policy.scaling.predictive, options.start_unix);
    let boot = model.boot.as_millis() as u64;
    let queue_limit_s = model.queue_limit.as_secs_f64();
    let quantile = options.slo.quantile();
    let mut rng = Rng::new(model.seed);

    let mut desired = policy.replicas.bounds.clamp(policy.replicas.desired);
    // Scale to zero: starts idle when the file starts it at zero, as live.
    let mut idler = match (&policy.idle, desired) {
        (Some(_), 0) => Idler::asleep(Duration::ZERO),
        _ => Idler::new(Duration::ZERO),
    };
    let effective = |idler: &Idler, desired: u32| match &policy.idle {
        Some(idle) => idler.desired(idle.mode, desired),
        None => desired,
    };
    // When the held requests began to wait (ms), while some are held.
    let mut holding_since: Option<u64> = None;
    let suspend = policy.idle.as_ref().is_some_and(|i| i.mode == IdleMode::Suspend);
    let mut fleet = Fleet {
        replicas: Vec::new(),
        pool: Vec::new(),
        pool_size: policy.warm_pool.map(|p| p.size).unwrap_or(0),
        frozen: suspend && idler.is_idle(),
        next_number: 1,
        service: options.service.clone(),
        boot,
        resume: model.resume.as_millis() as u64,
        crash_loop: CrashLoop::default(),
        nodes: options.node_pool.clone().map(Nodes::new),
    };
    // The trace starts with the fleet (and its warm pool) already in
    // service.
    for _ in 0..effective(&idler, desired) {
        fleet.start(0, 0);
    }
    for _ in 0..fleet.pool_size {
        let member = fleet.new_replica(0, 0);
        fleet.pool.push(member);
    }

    let mut seconds = Vec::with_capacity(trace.len());
    let mut events = Vec::new();
    let mut backlog = 0.0;
    for (s, &rate) in trace.rates.iter().enumerate() {
        let s = s as u64;
        let (begin_ms, end_ms) = (s * 1000, s * 1000 + 1000);
        // 1. Failures during this second, replaced at once.
        fleet.note_in_service(begin_ms);
        if model.failure_rate > 0.0 && !fleet.replicas.is_empty() {
            let mean = fleet.replicas.len() as f64 * model.failure_rate / 3600.0;
            let failures = rng.poisson(mean).min(fleet.replicas.len() as u64);
            for _ in 0..failures {
                if model.interruption_notice.is_zero() {
                    fleet.crash(rng.below(fleet.replicas.len()), begin_ms, &mut events);
                } else {
                    fleet.interrupt(rng.next_u64(), begin_ms, model.interruption_notice, &mut events);
                }
            }
            if failures > 0 {
                fleet.converge(begin_ms, effective(&idler, desired), 0, &mut events);
            }
        }

        // The node pool: waiting replicas placed, the cluster's step; a
        // drained node's replicas are replaced elsewhere at once.
        if fleet.step_nodes(begin_ms, &mut events) {
            fleet.converge(begin_ms, effective(&idler, desired), 0, &mut events);
        }

        // A request at an idle service wakes it in its second, at once
        // (live wakes on its arrival): a boot or a thaw begins now.
        if let (Some(idle), true) = (&policy.idle, idler.is_idle() && rate > 0.0) {
            let at = Duration::from_millis(begin_ms);
            let activity = Activity { last: None, in_flight: 0, held: rate.ceil() as u64 };
            if let Some(change) = idler.step(at, idle, activity, false) {
                if suspend && matches!(change, IdleChange::Wake { .. }) {
                    fleet.thaw(begin_ms);
                }
                events.push(SimEvent {
                    at: s,
                    kind: idle_kind(&change),
                    replica: None,
                    from: None,
                    to: None,
                    reason: change.to_string(),
                });
                fleet.converge(begin_ms, effective(&idler, desired), 0, &mut events);
            }
        }

        // 2. The second's flow. A replica that joins during the second
        //    serves for the rest of it: it counts as that fraction of a
        //    replica, and reports that fraction of a full one's numbers.
        //    Frozen replicas serve nothing.
        let replicas = if fleet.frozen { &fleet.replicas[..0] } else { &fleet.replicas[..] };
        let whole = replicas.partition_point(|r| r.in_service_at <= begin_ms);
        let in_service = replicas.partition_point(|r| r.in_service_at < end_ms);
        let part = |r: &Replica| (end_ms - r.in_service_at) as f64 / 1000.0;
        let serving = whole as f64 + replicas[whole..in_service].iter().map(part).sum::<f64>();
        let pending = replicas.len() - in_service;
        let suspended = if fleet.frozen { fleet.replicas.len() } else { 0 } + fleet.pool.len();
        let flow = match &policy.idle {
            // At zero with [idle]: the requests are held, not shed.
            Some(idle) if serving <= 0.0 => hold(rate, backlog, idle, &mut holding_since, begin_ms),
            _ => {
                holding_since = None;
                Flow::step(rate, backlog, serving, model.capacity, queue_limit_s)
            }
        };
        backlog = flow.backlog;
        let cpu = flow.utilisation * model.saturation_cpu;

        // 3. What the live controller would read at the end of the second.
        let at = Duration::from_millis(end_ms);
        let per_replica = if serving > 0.0 { flow.served / serving } else { 0.0 };
        let numbers = |r: &Replica, share: f64| ReplicaSample {
            id: String::new(),
            in_service_since: Some(Duration::from_millis(r.in_service_at)),
            cpu_percent: Some(cpu * share),
            requests_per_s: Some(per_replica * share),
            in_flight: Some(flow.in_flight_per_replica * share),
        };
        let mut sample = ServiceSample::new(at);
        sample.replicas.reserve_exact(replicas.len());
        sample.replicas.extend(replicas[..whole].iter().map(|r| numbers(r, 1.0)));
        sample.replicas.extend(replicas[whole..in_service].iter().map(|r| numbers(r, part(r))));
        sample.replicas.extend(replicas[in_service..].iter().map(|_| ReplicaSample::new(String::new(), None)));
        let unanswered = in_service == 0 && rate + flow.shed > 0.0;
        sample.requests_per_s = (!unanswered).then_some(flow.served);
        sample.concurrency = Some(flow.in_flight_per_replica * serving);
        sample.p95_ms = flow.latency_ms(0.95);
        sample.p99_ms = flow.latency_ms(0.99);
        sample.queue_time_ms = (in_service > 0).then_some(flow.queue_ms);
        sample.demand = Some(balancer_view(&flow, model.max_in_flight, rate, serving, in_service as u32));
        autoscaler.observe(sample);
        if let Some(forecasting) = &mut forecasting {
            forecasting.second(s, rate, cpu * serving, &mut autoscaler);
        }

        // 4. The decision, and the fleet converging to it.
        let view = FleetView { desired, in_service: in_service as u32, pending: pending as u32, deploying: false };
        let decision = autoscaler.decide(at, options.start_unix.saturating_add(s as i64 + 1), &view);
        if let Some(change) = decision.change {
            events.push(SimEvent {
                at: s + 1,
                kind: "scaled",
                replica: None,
                from: Some(change.from),
                to: Some(change.to),
                reason: change.to_string(),
            });
            desired = change.to;
        }
        if let Some(idle) = &policy.idle {
            let activity = Activity {
                last: (rate > 0.0).then_some(at),
                in_flight: (flow.in_flight_per_replica * serving).ceil() as u64,
                held: if serving <= 0.0 { flow.backlog.ceil() as u64 } else { 0 },
            };
            if let Some(change) = idler.step(at, idle, activity, in_service > 0) {
                match change {
                    IdleChange::GoIdle { .. } if suspend => fleet.frozen = true,
                    IdleChange::Wake { .. } if suspend => fleet.thaw(end_ms),
                    _ => {}
                }
                events.push(SimEvent {
                    at: s + 1,
                    kind: idle_kind(&change),
                    replica: None,
                    from: None,
                    to: None,
                    reason: change.to_string(),
                });
            }
        }
        let desired_now = effective(&idler, desired);
        fleet.converge(end_ms, desired_now, flow.in_flight_per_replica.round() as u64, &mut events);

        seconds.push(Second {
            second: s as u32,
            rate,
            served: flow.served,
            shed: flow.shed,
            desired: desired_now,
            in_service: in_service as u32,
            pending: pending as u32,
            suspended: suspended as u32,
            cpu,
            nodes: fleet.nodes.as_ref().map_or(0, |n| n.ready(begin_ms)),
            p50_ms: flow.latency_ms(0.5),
            p99_ms: flow.latency_ms(0.99),
            slo_ms: flow.latency_ms(quantile),
            queue_ms: flow.queue_ms,
        });
    }
    let summary =
        Summary::new(&policy.name, &seconds, &events, options.slo, options.price, options.flap_window, demand);
    let forecast = forecasting.map(|f| f.report());
    Run { policy: policy.name.clone(), seconds, events, summary, baseline: false, forecast }
}

/// A second at zero with `[idle]`: the offered requests join the held
/// ones, up to `max_held` (the rest are shed at once); held ones that have
/// waited `hold_timeout` are shed. The wait shows as queue time.
fn hold(offered: f64, backlog: f64, idle: &IdleConfig, since: &mut Option<u64>, now: u64) -> Flow {
    let waiting = offered + backlog;
    if waiting <= 0.0 {
        *since = None;
        return Flow::default();
    }
    let began = *since.get_or_insert(now);
    let waited = Duration::from_millis(now + 1000 - began);
    if waited > idle.hold_timeout {
        *since = None;
        return Flow::held(0.0, waiting, 0.0);
    }
    let held = waiting.min(f64::from(idle.max_held));
    Flow::held(held, waiting - held, waited.as_millis() as f64)
}

/// An idle change's event kind, as live.
fn idle_kind(change: &IdleChange) -> &'static str {
    match change {
        IdleChange::GoIdle { .. } | IdleChange::ScaledToZero { .. } => "idle",
        IdleChange::Wake { .. } => "waking",
        IdleChange::Woken { .. } => "woken",
        IdleChange::WakeFailed { .. } => "wake_failed",
    }
}

/// What a live balancer would count in the second: with `max_in_flight`,
/// each replica holds at most the limit and the rest (the backlog and any
/// excess) waits in the balancer's queue; without it the requests wait in
/// the replicas and the balancer's queue is empty, as live.
fn balancer_view(flow: &Flow, limit: Option<u32>, offered: f64, serving: f64, routable: u32) -> Demand {
    let concurrency = flow.in_flight_per_replica * serving + flow.backlog;
    let (in_flight, queued, at_limit) = match limit {
        Some(limit) => {
            let held = (f64::from(limit) * serving).min(concurrency);
            let full = flow.in_flight_per_replica + flow.backlog / serving.max(1.0) >= f64::from(limit);
            (held, concurrency - held, if full { routable } else { 0 })
        }
        None => (concurrency, 0.0, 0),
    };
    Demand {
        offered_per_s: offered,
        served_per_s: flow.served,
        queued: queued.round() as u32,
        shed: if limit.is_some() { flow.shed.round() as u32 } else { 0 },
        in_flight: in_flight.round() as u32,
        routable,
        at_limit,
        limit,
        ..Default::default() // no 5xx in the model: the scale-in freeze sees only traffic drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::{Bounds, Metric, TargetTracking};

    fn policy(min: u32, max: u32) -> Policy {
        let mut t = TargetTracking::new(Metric::Cpu, 80.0);
        t.window = Duration::from_secs(10);
        t.scale_out_cooldown = Duration::from_secs(10);
        t.scale_in_cooldown = Duration::from_secs(30);
        t.scale_in_stabilization = Duration::from_secs(30);
        Policy {
            name: "test".into(),
            scaling: ScalingConfig { target_tracking: vec![t], ..Default::default() },
            replicas: Replicas { bounds: Bounds { min, max }, desired: min },
            idle: None,
            warm_pool: None,
        }
    }

    #[test]
    fn a_step_scales_out_then_back_in() {
        let mut rates = vec![40.0; 60];
        rates.extend(vec![400.0; 300]);
        rates.extend(vec![40.0; 300]);
        let trace = Trace::new(rates, "step");
        let model = FleetModel { capacity: 50.0, boot: Duration::from_secs(3), ..Default::default() };
        // The step down is a 90 % collapse within a second: the scale-in
        // freeze (scaling/freeze.rs) would hold past the trace's end.
        let mut policy = policy(1, 20);
        policy.scaling.freeze.enabled = false;
        let run = simulate(&policy, &model, &trace, &SimOptions::default());
        let desired_at = |s: usize| run.seconds[s].desired;
        // The 10 s window's mean leaves the tolerance band 5 s after the step.
        let first = &run.events[0];
        assert_eq!((first.at, first.kind, first.from, first.to), (65, "scaled", Some(1), Some(2)));
        assert!(
            first.reason.starts_with("scale out 1 -> 2 by target-cpu: target tracking cpu: mean 90.0%"),
            "{}",
            first.reason
        );
        // Saturated replicas show 100 %: ×1.25 per cooldown, overshooting
        // while the backlog drains, then settling where 400 req/s is 80 %.
        assert!(run.seconds.iter().map(|s| s.desired).max().unwrap() > 10);
        assert_eq!(desired_at(359), 10, "ceil(400 / (50 × 0.8)) = 10");
        // Back in only after the stabilisation window, then down to min.
        let back_in = run.events.iter().find(|e| e.at > 360).unwrap();
        assert!(back_in.at >= 360 + 30 && back_in.reason.starts_with("scale in"), "{back_in:?}");
        assert_eq!(run.seconds.last().unwrap().desired, 1);
        assert!(run.summary.slo_violation_seconds > 0, "the step overloads one replica for a while");
        assert_eq!(run.summary.flaps, 1, "15 -> 13 reverses the scale-out to 15 within 10 min");
        assert_eq!(run.summary.scaling_actions as usize, run.events.len());
    }

    #[test]
    fn the_youngest_replicas_leave_first() {
        let ms = |secs: u64| secs * 1000;
        let fleet_of = |starts: &[(u64, u64)]| {
            let mut fleet = Fleet {
                replicas: Vec::new(),
                pool: Vec::new(),
                pool_size: 0,
                frozen: false,
                next_number: 1,
                service: "web".into(),
                boot: 0,
                resume: 0,
                crash_loop: CrashLoop::default(),
                nodes: None,
            };
            for &(started, ready) in starts {
                fleet.start(ms(started), ms(ready));
            }
            fleet
        };
        let ids = |fleet: &Fleet| fleet.replicas.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let starts = [(1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (9, 20)];
        let mut fleet = fleet_of(&starts);
        fleet.converge(ms(10), 5, 3, &mut Vec::new());
        assert_eq!(ids(&fleet), ["web-1", "web-2", "web-3", "web-4", "web-5"], "booting first");
        let mut fleet = fleet_of(&starts);
        fleet.converge(ms(10), 3, 3, &mut Vec::new());
        assert_eq!(ids(&fleet), ["web-1", "web-2", "web-3"]);
        // web-4 and web-5 the same age: the id decides.
        let mut fleet = fleet_of(&[(1, 3), (2, 4), (3, 5), (5, 6), (5, 7), (9, 20)]);
        fleet.converge(ms(10), 4, 3, &mut Vec::new());
        assert_eq!(ids(&fleet), ["web-1", "web-2", "web-3", "web-5"], "web-4 sorts before web-5");
    }

    #[test]
    fn with_a_notice_an_interrupted_replica_serves_until_its_replacement_does() {
        let trace = Trace::new(vec![100.0; 3600], "flat");
        let crash = FleetModel { failure_rate: 2.0, seed: 5, ..Default::default() };
        let notice = FleetModel { interruption_notice: Duration::from_secs(120), ..crash };
        let crashed = simulate(&policy(4, 4), &crash, &trace, &SimOptions::default());
        let noticed = simulate(&policy(4, 4), &notice, &trace, &SimOptions::default());
        assert!(
            crashed.seconds.iter().any(|s| s.in_service < 4),
            "a crash costs a replica until its replacement boots"
        );
        assert!(noticed.seconds.iter().all(|s| s.in_service >= 4), "a notice never does");
        assert!(noticed.summary.failures > 0);
        let interrupted = noticed.events.iter().find(|e| e.kind == "replica_interrupted").unwrap();
        let left = noticed.events.iter().find(|e| e.kind == "replica_draining").unwrap();
        assert_eq!(left.replica, interrupted.replica);
        assert_eq!(left.reason, "leaving the rotation (interruption notice: replacement in service)");
        assert_eq!(left.at - interrupted.at, 5, "once its replacement has booted (5 s)");
    }

    #[test]
    fn failures_are_replaced_and_seeded() {
        let trace = Trace::new(vec![100.0; 3600], "flat");
        let model = FleetModel { failure_rate: 1.0, seed: 3, ..Default::default() };
        let a = simulate(&policy(4, 4), &model, &trace, &SimOptions::default());
        let b = simulate(&policy(4, 4), &model, &trace, &SimOptions::default());
        assert_eq!(a.events, b.events);
        let failures = a.summary.failures;
        assert!((1..=12).contains(&failures), "about 4 in an hour at 1 per replica-hour: {failures}");
        assert!(a.seconds.iter().all(|s| s.in_service + s.pending == 4), "always replaced");
        assert_eq!(a.events[0].kind, "replica_exited");
    }
}
