//! The controller: one reconciler task per service.
//!
//! Each service's task owns that service's replicas and runs a loop over a
//! closed enum of [`Input`]s (commands, probe results, exits, finished starts
//! and stops, ticks). After every input it reconciles: it compares desired
//! with observed, starts or retires replicas, and publishes the routable set
//! to the balancer and a status snapshot to the admin API.
//!
//! **Architecture invariant:** the controller never blocks on a driver call.
//! Starts, drains and stops run as tasks that report back through the inbox,
//! so probes and commands are handled while a slow replica boots.

pub mod history;
pub mod probe;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_core::config::ServiceConfig;
use ebb_core::health::{Health, HealthTracker};
use ebb_core::scaling::{self, Autoscaler, FleetView, ReplicaSample, ScaleInCandidate, ServiceSample};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::{Driver, ExitReason, ReplicaSpec, RunningReplica};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::cpu::{self, CpuMeter, GroupUsage};
use crate::proxy::{Backend, ServiceProxy};
use crate::status::{ReplicaState, ReplicaStatus, ServiceStatus};

/// How often the loop wakes without input (backoff expiry, status refresh).
const TICK: Duration = Duration::from_millis(250);
/// Metrics resolution: one sample, and one scaling decision, per second.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Crash-loop backoff bounds.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A request to a service's controller from the admin API.
#[derive(Debug)]
pub enum ControlCommand {
    /// Set desired capacity (clamped to the service's bounds).
    SetDesired { desired: u32, reason: String, reply: oneshot::Sender<ScaleOutcome> },
}

/// The result of a scale request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScaleOutcome {
    pub service: String,
    pub from: u32,
    pub to: u32,
    /// Set when the request was clamped to the bounds in force, saying how.
    pub clamped: Option<String>,
}

/// The handle the rest of ebb holds on one running service.
#[derive(Clone)]
pub struct ServiceHandle {
    pub name: String,
    pub proxy: Arc<ServiceProxy>,
    commands: mpsc::UnboundedSender<Input>,
    snapshot: watch::Receiver<Snapshot>,
    /// One point a second for the last 24 h.
    pub history: Arc<history::MetricsHistory>,
}

impl ServiceHandle {
    /// Current status, with live request counters read from the balancer.
    pub fn status(&self) -> ServiceStatus {
        self.snapshot.borrow().to_status()
    }

    /// Asks the controller to change desired capacity; `None` if it has stopped.
    pub async fn set_desired(&self, desired: u32, reason: impl Into<String>) -> Option<ScaleOutcome> {
        let (reply, rx) = oneshot::channel();
        let cmd = ControlCommand::SetDesired { desired, reason: reason.into(), reply };
        self.commands.send(Input::Command(cmd)).ok()?;
        rx.await.ok()
    }
}

/// Everything a service's controller task needs.
pub struct ServiceContext {
    pub config: ServiceConfig,
    pub driver: Arc<dyn Driver>,
    pub proxy: Arc<ServiceProxy>,
    pub events: Arc<EventLog>,
    pub state_dir: PathBuf,
}

/// Starts the controller task of one service. It runs until `shutdown` is
/// cancelled, then drains and stops every replica and finishes; wait for that
/// through `tracker`.
pub fn spawn_service(ctx: ServiceContext, shutdown: CancellationToken, tracker: &TaskTracker) -> ServiceHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let controller = ServiceController::new(ctx, tx.clone());
    let (snapshot_tx, snapshot_rx) = watch::channel(controller.snapshot());
    let handle = ServiceHandle {
        name: controller.name.clone(),
        proxy: controller.proxy.clone(),
        commands: tx.clone(),
        snapshot: snapshot_rx.clone(),
        history: controller.history.clone(),
    };
    tracker.spawn(sample_usage(snapshot_rx.clone(), tx.clone(), shutdown.clone()));
    tracker.spawn(controller.run(rx, snapshot_tx, shutdown));
    handle
}

/// Reads the CPU and memory of the service's replicas once a second, off the
/// controller's loop (it scans `/proc`), and hands the readings in.
async fn sample_usage(snapshot: watch::Receiver<Snapshot>, inbox: mpsc::UnboundedSender<Input>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let pgids: Vec<i32> =
            snapshot.borrow().service.replicas.iter().filter_map(|r| r.pid).map(|pid| pid as i32).collect();
        let groups = tokio::task::spawn_blocking(move || cpu::read_groups(&pgids)).await.unwrap_or_default();
        if inbox.send(Input::Usage { at: Instant::now(), groups }).is_err() {
            return;
        }
    }
}

/// The closed set of things that wake a controller.
#[derive(Debug)]
enum Input {
    Command(ControlCommand),
    Probe { replica: String, outcome: probe::ProbeOutcome },
    Started { replica: String, result: Result<RunningReplica, String> },
    Exited { replica: String, reason: ExitReason },
    Stopped { replica: String, result: Result<ExitReason, String> },
    /// Once a second: CPU and memory by process group; time to decide.
    Usage { at: Instant, groups: std::collections::HashMap<i32, GroupUsage> },
}

/// One replica as the controller tracks it.
struct Replica {
    id: String,
    version: u64,
    started_at: Instant,
    state: ReplicaState,
    /// `None` while the driver is still launching it.
    running: Option<RunningReplica>,
    backend: Option<Arc<Backend>>,
    health: HealthTracker,
    last_probe: Option<String>,
    /// When it first passed its health checks (warm-up counts from here).
    in_service_since: Option<Instant>,
    /// Last second's CPU (% of the allotment) and resident memory.
    cpu_percent: Option<f64>,
    rss_bytes: Option<u64>,
    /// `requests` counter at the last sample, for the per-second rate.
    requests_at_last_sample: u64,
    /// Cancels the probe and exit-watch tasks when the replica leaves.
    watchers: CancellationToken,
    /// ebb asked it to stop: its exit is expected, not a failure.
    stopping: bool,
    /// Reached in service at least once (for crash-loop accounting).
    ever_in_service: bool,
}

impl Replica {
    fn is_active(&self) -> bool {
        matches!(self.state, ReplicaState::Starting | ReplicaState::InService)
    }

    fn routable(&self) -> bool {
        self.state == ReplicaState::InService && self.health.state() == Health::Healthy && self.backend.is_some()
    }
}

/// A point-in-time view of a service for the admin API.
#[derive(Clone)]
struct Snapshot {
    service: ServiceStatus,
    /// Live counters, read when the status is asked for.
    backends: BTreeMap<String, Arc<Backend>>,
}

impl Snapshot {
    fn to_status(&self) -> ServiceStatus {
        let mut status = self.service.clone();
        for replica in &mut status.replicas {
            if let Some(backend) = self.backends.get(&replica.id) {
                replica.in_flight = backend.in_flight();
                replica.requests = backend.requests();
            }
        }
        status
    }
}

struct ServiceController {
    name: String,
    config: ServiceConfig,
    driver: Arc<dyn Driver>,
    proxy: Arc<ServiceProxy>,
    events: Arc<EventLog>,
    state_dir: PathBuf,
    inbox: mpsc::UnboundedSender<Input>,
    desired: u32,
    version: u64,
    replicas: Vec<Replica>,
    /// Replicas that failed in a row without one reaching service.
    failure_streak: u32,
    /// Starts are held back until then (crash-loop backoff).
    hold_starts_until: Option<Instant>,
    /// Routable ids last published, to swap the snapshot only on change.
    published_routable: Vec<String>,
    tasks: TaskTracker,
    /// The scaling brain (pure); fed one sample a second.
    autoscaler: Autoscaler,
    /// Origin of the autoscaler's time axis.
    origin: Instant,
    /// Why the autoscaler is holding, from its last decision.
    policy_hold: Option<String>,
    cpu_meter: CpuMeter,
    /// Service-wide `requests` total at the last sample.
    service_requests_at_last_sample: u64,
    history: Arc<history::MetricsHistory>,
}

impl ServiceController {
    fn new(ctx: ServiceContext, inbox: mpsc::UnboundedSender<Input>) -> Self {
        let ctx_scaling = ctx.config.scaling.clone();
        let bounds = ctx.config.replicas;
        Self {
            name: ctx.config.name.clone(),
            desired: ctx.config.replicas.desired,
            config: ctx.config,
            driver: ctx.driver,
            proxy: ctx.proxy,
            events: ctx.events,
            state_dir: ctx.state_dir,
            inbox,
            version: 1,
            replicas: Vec::new(),
            failure_streak: 0,
            hold_starts_until: None,
            published_routable: Vec::new(),
            tasks: TaskTracker::new(),
            autoscaler: Autoscaler::new(&ctx_scaling, bounds),
            origin: Instant::now(),
            policy_hold: None,
            cpu_meter: CpuMeter::default(),
            service_requests_at_last_sample: 0,
            history: Arc::default(),
        }
    }

    /// The autoscaler's clock: time since this controller started.
    fn now(&self) -> scaling::Time {
        self.origin.elapsed()
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        snapshot: watch::Sender<Snapshot>,
        shutdown: CancellationToken,
    ) {
        self.record(NewEvent::new(
            &self.name,
            EventKind::FleetStarting,
            format!(
                "starting {} replicas (min {}, max {}) with the {} driver",
                self.desired,
                self.config.replicas.min,
                self.config.replicas.max,
                self.driver.name()
            ),
        ));
        self.reconcile();
        snapshot.send_replace(self.snapshot());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                _ = tick.tick() => {}
            }
            self.reconcile();
            snapshot.send_replace(self.snapshot());
        }
        self.shut_down(&mut rx, &snapshot).await;
    }

    /// Drains and stops every replica, handling inputs until all are gone.
    async fn shut_down(&mut self, rx: &mut mpsc::UnboundedReceiver<Input>, snapshot: &watch::Sender<Snapshot>) {
        self.record(NewEvent::new(
            &self.name,
            EventKind::FleetStopping,
            format!("stopping all {} replicas", self.replicas.len()),
        ));
        self.desired = 0;
        self.proxy.set_routable(Vec::new());
        let ids: Vec<String> = self.replicas.iter().filter(|r| r.running.is_some()).map(|r| r.id.clone()).collect();
        for id in ids {
            self.retire(&id, "ebb is shutting down");
        }
        snapshot.send_replace(self.snapshot());
        while !self.replicas.is_empty() {
            let Some(input) = rx.recv().await else { break };
            match input {
                Input::Started { replica, result: Ok(running) } => {
                    // Launched after shutdown began: stop it straight away.
                    if let Some(r) = self.replica_mut(&replica) {
                        r.running = Some(running);
                    }
                    self.retire(&replica, "ebb is shutting down");
                }
                Input::Started { replica, result: Err(_) } => self.replicas.retain(|r| r.id != replica),
                Input::Stopped { .. } => self.handle(input),
                Input::Command(ControlCommand::SetDesired { reply, .. }) => {
                    let _ = reply.send(ScaleOutcome {
                        service: self.name.clone(),
                        from: 0,
                        to: 0,
                        clamped: Some("ebb is shutting down".into()),
                    });
                }
                Input::Probe { .. } | Input::Exited { .. } | Input::Usage { .. } => {}
            }
            snapshot.send_replace(self.snapshot());
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn record(&self, event: NewEvent) {
        self.events.record(event);
    }

    fn replica_mut(&mut self, id: &str) -> Option<&mut Replica> {
        self.replicas.iter_mut().find(|r| r.id == id)
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Command(ControlCommand::SetDesired { desired, reason, reply }) => {
                let outcome = self.set_desired(desired, &reason);
                let _ = reply.send(outcome);
            }
            Input::Started { replica, result } => self.on_started(&replica, result),
            Input::Probe { replica, outcome } => self.on_probe(&replica, outcome),
            Input::Exited { replica, reason } => self.on_exited(&replica, reason),
            Input::Usage { at, groups } => self.on_usage(at, &groups),
            Input::Stopped { replica, result } => {
                let detail = match result {
                    Ok(reason) => reason.to_string(),
                    Err(error) => format!("stop failed: {error}"),
                };
                if let Some(r) = self.replica_mut(&replica) {
                    r.watchers.cancel();
                }
                self.replicas.retain(|r| r.id != replica);
                self.record(NewEvent::new(&self.name, EventKind::ReplicaStopped, format!("replica stopped ({detail})")).replica(&replica));
            }
        }
    }

    fn set_desired(&mut self, requested: u32, reason: &str) -> ScaleOutcome {
        let from = self.desired;
        let now = self.now();
        let change = self.autoscaler.manual_scale(now, from, requested);
        let clamped = change.capped.as_ref().map(|c| c.to_string());
        if change.from != change.to || clamped.is_some() {
            let mut why = format!("desired {from} -> {}: {reason}", change.to);
            if let Some(c) = &clamped {
                why.push_str(&format!("; capped: {c}"));
            }
            self.record(NewEvent::new(&self.name, EventKind::Scaled, why).change(from, change.to));
        }
        self.desired = change.to;
        ScaleOutcome { service: self.name.clone(), from, to: change.to, clamped }
    }

    /// Once a second: turn readings into a sample, let the autoscaler decide,
    /// and apply its change (with the event that explains it).
    fn on_usage(&mut self, at: Instant, groups: &std::collections::HashMap<i32, GroupUsage>) {
        let now = at.saturating_duration_since(self.origin);
        let origin = self.origin;
        let allotment = self.config.cpu;
        let mut sample = ServiceSample::new(now);
        let mut live_pgids = Vec::new();
        let mut concurrency = 0u64;
        let mut service_requests = 0u64;
        for r in self.replicas.iter_mut().filter(|r| r.is_active() && !r.stopping) {
            let mut replica = ReplicaSample::new(&r.id, r.in_service_since.map(|t| t.saturating_duration_since(origin)));
            if let Some(pid) = r.running.as_ref().and_then(|x| x.pid) {
                let pgid = pid as i32;
                live_pgids.push(pgid);
                match groups.get(&pgid) {
                    Some(usage) => {
                        r.cpu_percent = self.cpu_meter.utilisation(pgid, at, usage, allotment);
                        r.rss_bytes = Some(usage.rss_bytes);
                    }
                    None => {
                        r.cpu_percent = None;
                        r.rss_bytes = None;
                    }
                }
            }
            replica.cpu_percent = r.cpu_percent;
            if let Some(backend) = &r.backend {
                let requests = backend.requests();
                let in_flight = backend.in_flight();
                replica.requests_per_s = Some(requests.saturating_sub(r.requests_at_last_sample) as f64);
                replica.in_flight = Some(in_flight as f64);
                r.requests_at_last_sample = requests;
                concurrency += in_flight;
                service_requests += requests;
            }
            sample.replicas.push(replica);
        }
        self.cpu_meter.retain(&live_pgids);
        // Requests of replicas that left are gone from the sum; never negative.
        sample.requests_per_s = Some(service_requests.saturating_sub(self.service_requests_at_last_sample.min(service_requests)) as f64);
        self.service_requests_at_last_sample = service_requests;
        sample.concurrency = Some(concurrency as f64);
        let replica_cpu: Vec<(String, f64)> =
            sample.replicas.iter().filter_map(|r| r.cpu_percent.map(|c| (r.id.clone(), c))).collect();
        let cpu_mean = (!replica_cpu.is_empty())
            .then(|| replica_cpu.iter().map(|(_, c)| c).sum::<f64>() / replica_cpu.len() as f64);
        let requests_per_s = sample.requests_per_s.unwrap_or(0.0);
        let (p50_ms, p99_ms) = (None, sample.p99_ms);
        self.autoscaler.observe(sample);

        let fleet = FleetView {
            desired: self.desired,
            in_service: self.in_service_count(),
            pending: self.pending_count(),
            deploying: false,
        };
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let decision = self.autoscaler.decide(now, wall, &fleet);
        self.policy_hold = decision.holding.as_ref().map(|h| h.to_string());
        if let Some(change) = decision.change {
            self.record(NewEvent::new(&self.name, EventKind::Scaled, change.to_string()).change(change.from, change.to));
            self.desired = change.to;
        }
        self.history.push(history::ServicePoint {
            time_ms: crate::events::unix_ms(std::time::SystemTime::now()),
            desired: self.desired,
            in_service: fleet.in_service,
            pending: fleet.pending,
            requests_per_s,
            in_flight: concurrency,
            p50_ms,
            p99_ms,
            cpu_mean,
            replica_cpu,
        });
    }

    fn in_service_count(&self) -> u32 {
        self.replicas.iter().filter(|r| r.routable() && !r.stopping).count() as u32
    }

    fn pending_count(&self) -> u32 {
        self.replicas.iter().filter(|r| r.state == ReplicaState::Starting && !r.stopping).count() as u32
    }

    fn on_started(&mut self, id: &str, result: Result<RunningReplica, String>) {
        let name = self.name.clone();
        match result {
            Ok(running) => {
                let Some(r) = self.replicas.iter_mut().find(|r| r.id == id) else { return };
                if r.stopping {
                    // Retired while it was launching: stop it now.
                    r.running = Some(running);
                    r.stopping = false;
                    self.retire(id, "no longer needed");
                    return;
                }
                let backend = Arc::new(Backend::new(id, running.addr));
                let detail = match running.pid {
                    Some(pid) => format!("replica started (pid {pid}, {})", running.addr),
                    None => format!("replica started ({})", running.addr),
                };
                r.backend = Some(backend);
                r.running = Some(running.clone());
                let watchers = r.watchers.clone();
                self.events.record(NewEvent::new(&name, EventKind::ReplicaStarted, detail).replica(id));
                self.watch_replica(id.to_string(), running, watchers);
            }
            Err(error) => {
                self.replicas.retain(|r| r.id != id);
                self.events.record(
                    NewEvent::new(&name, EventKind::ReplicaStartFailed, format!("replica failed to start: {error}")).replica(id),
                );
                self.count_failure();
            }
        }
    }

    /// Starts the probe loop and the exit watcher of a launched replica.
    fn watch_replica(&self, id: String, running: RunningReplica, watchers: CancellationToken) {
        let health = self.config.health.clone();
        let inbox = self.inbox.clone();
        let addr = running.addr;
        let probe_id = id.clone();
        let probe_stop = watchers.clone();
        self.tasks.spawn(async move {
            // A short first delay lets the replica bind its port; then one
            // probe per interval, as a load balancer target group does.
            let mut delay = health.interval.min(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = probe_stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = health.interval;
                let outcome = tokio::select! {
                    _ = probe_stop.cancelled() => return,
                    outcome = probe::probe(addr, &health.path, health.timeout, &health.matcher) => outcome,
                };
                if inbox.send(Input::Probe { replica: probe_id.clone(), outcome }).is_err() {
                    return;
                }
            }
        });
        let inbox = self.inbox.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = watchers.cancelled() => {}
                reason = running.exited() => {
                    let _ = inbox.send(Input::Exited { replica: id, reason });
                }
            }
        });
    }

    fn on_probe(&mut self, id: &str, outcome: probe::ProbeOutcome) {
        let grace = self.config.health.grace_period;
        let name = self.name.clone();
        let Some(r) = self.replicas.iter_mut().find(|r| r.id == id) else { return };
        if !r.is_active() {
            return;
        }
        r.last_probe = Some(outcome.detail.clone());
        // Within the grace period a failing probe is not held against a
        // booting replica; passes still count so it can join early.
        if !outcome.passed && r.started_at.elapsed() < grace {
            return;
        }
        let Some(flip) = r.health.observe(outcome.passed) else { return };
        match flip.to {
            Health::Healthy => {
                let first = r.state == ReplicaState::Starting;
                r.state = ReplicaState::InService;
                r.ever_in_service = true;
                r.in_service_since.get_or_insert_with(Instant::now);
                let why = format!(
                    "{} after {} consecutive passing health checks ({}){}",
                    if first { "in service" } else { "healthy again, back in the rotation" },
                    flip.consecutive,
                    outcome.detail,
                    if first { format!(", {:.1} s after start", r.started_at.elapsed().as_secs_f64()) } else { String::new() }
                );
                self.failure_streak = 0;
                self.hold_starts_until = None;
                self.events.record(NewEvent::new(&name, EventKind::ReplicaInService, why).replica(id));
            }
            Health::Unhealthy => {
                let why = format!(
                    "failed {} consecutive health checks (last: {}); out of the rotation and replaced",
                    flip.consecutive, outcome.detail
                );
                let never_served = !r.ever_in_service;
                r.state = ReplicaState::Failed;
                self.events.record(NewEvent::new(&name, EventKind::ReplicaUnhealthy, why).replica(id));
                if never_served {
                    self.count_failure();
                }
                self.retire(id, "failed its health checks");
            }
            Health::Unknown => {}
        }
    }

    fn on_exited(&mut self, id: &str, reason: ExitReason) {
        let name = self.name.clone();
        let Some(r) = self.replicas.iter_mut().find(|r| r.id == id) else { return };
        if r.stopping {
            return;
        }
        let never_served = !r.ever_in_service;
        let age = r.started_at.elapsed().as_secs_f64();
        r.state = ReplicaState::Failed;
        self.events.record(
            NewEvent::new(&name, EventKind::ReplicaExited, format!("replica {reason} after {age:.1} s; replacing it")).replica(id),
        );
        if never_served {
            self.count_failure();
        }
        self.retire(id, "it exited");
    }

    /// A replica failed before ever serving: back off further starts.
    fn count_failure(&mut self) {
        self.failure_streak += 1;
        if self.failure_streak >= 2 {
            let factor = 1u32 << (self.failure_streak - 2).min(10);
            let delay = (BACKOFF_FIRST * factor).min(BACKOFF_MAX);
            self.hold_starts_until = Some(Instant::now() + delay);
            self.record(NewEvent::new(
                &self.name,
                EventKind::Backoff,
                format!(
                    "{} replicas in a row failed before reaching service; next start in {}",
                    self.failure_streak,
                    humantime::format_duration(delay)
                ),
            ));
        }
    }

    /// Takes a replica out of the rotation, lets its in-flight requests
    /// finish (up to `drain_timeout`), then stops it. Idempotent.
    fn retire(&mut self, id: &str, why: &str) {
        let drain_timeout = self.config.drain_timeout;
        let stop_timeout = self.config.stop_timeout;
        let name = self.name.clone();
        let Some(r) = self.replicas.iter_mut().find(|r| r.id == id) else { return };
        if r.stopping {
            return;
        }
        let Some(running) = r.running.clone() else {
            // Still launching: on_started will see it is no longer wanted.
            r.stopping = true;
            return;
        };
        r.stopping = true;
        if r.state != ReplicaState::Failed {
            r.state = ReplicaState::Draining;
        }
        let backend = r.backend.clone();
        let in_flight = backend.as_ref().map(|b| b.in_flight()).unwrap_or(0);
        self.events.record(
            NewEvent::new(
                &name,
                EventKind::ReplicaDraining,
                format!("leaving the rotation ({why}); {in_flight} requests in flight, drain timeout {}", humantime::format_duration(drain_timeout)),
            )
            .replica(id),
        );
        // Out of the rotation before anything else happens.
        self.publish_routable();
        let driver = self.driver.clone();
        let inbox = self.inbox.clone();
        let replica = id.to_string();
        self.tasks.spawn(async move {
            if let Some(backend) = backend {
                let deadline = Instant::now() + drain_timeout;
                while backend.in_flight() > 0 && Instant::now() < deadline && !running.has_exited() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let result = driver.stop(&running, stop_timeout).await.map_err(|e| e.to_string());
            let _ = inbox.send(Input::Stopped { replica, result });
        });
    }

    /// Compares desired with observed and acts.
    fn reconcile(&mut self) {
        let active = self.replicas.iter().filter(|r| r.is_active() && !r.stopping).count() as u32;
        if active < self.desired {
            let held = self.hold_starts_until.is_some_and(|t| Instant::now() < t);
            if !held {
                for _ in active..self.desired {
                    self.launch();
                }
            }
        } else if active > self.desired {
            for id in self.pick_for_scale_in((active - self.desired) as usize) {
                self.retire(&id, "scale-in");
            }
        }
        self.publish_routable();
    }

    /// Which replicas leave on scale-in (the core decides: never a protected
    /// one; those not yet serving first, then old versions, then the fewest
    /// in flight, then the youngest).
    fn pick_for_scale_in(&self, count: usize) -> Vec<String> {
        let candidates: Vec<ScaleInCandidate> = self
            .replicas
            .iter()
            .filter(|r| r.is_active() && !r.stopping)
            .map(|r| ScaleInCandidate {
                id: r.id.clone(),
                protected: false,
                current_version: r.version == self.version,
                in_service: r.state == ReplicaState::InService,
                in_flight: r.backend.as_ref().map(|b| b.in_flight()).unwrap_or(0),
                age: r.started_at.elapsed(),
            })
            .collect();
        scaling::pick_for_scale_in(&candidates, count).into_iter().map(|c| c.id.clone()).collect()
    }

    fn launch(&mut self) {
        let id = format!("{}-{}", self.name, random_suffix());
        let spec = ReplicaSpec {
            service: self.name.clone(),
            replica_id: id.clone(),
            version: self.version,
            command: self.config.command.clone(),
            env: self.config.env.clone(),
            state_dir: self.state_dir.clone(),
            log_path: self.state_dir.join("logs").join(format!("{id}.log")),
        };
        self.replicas.push(Replica {
            id: id.clone(),
            version: self.version,
            started_at: Instant::now(),
            state: ReplicaState::Starting,
            running: None,
            backend: None,
            health: HealthTracker::new(self.config.health.healthy_threshold, self.config.health.unhealthy_threshold),
            last_probe: None,
            in_service_since: None,
            cpu_percent: None,
            rss_bytes: None,
            requests_at_last_sample: 0,
            watchers: CancellationToken::new(),
            stopping: false,
            ever_in_service: false,
        });
        let driver = self.driver.clone();
        let inbox = self.inbox.clone();
        self.tasks.spawn(async move {
            let result = driver.start(&spec).await.map_err(|e| e.to_string());
            let _ = inbox.send(Input::Started { replica: id, result });
        });
    }

    fn publish_routable(&mut self) {
        let routable: Vec<&Replica> = self.replicas.iter().filter(|r| r.routable() && !r.stopping).collect();
        let ids: Vec<String> = routable.iter().map(|r| r.id.clone()).collect();
        if ids != self.published_routable {
            let backends = routable.iter().filter_map(|r| r.backend.clone()).collect();
            self.proxy.set_routable(backends);
            self.published_routable = ids;
        }
    }

    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let backoff = self.hold_starts_until.filter(|t| *t > now).map(|t| {
            format!(
                "crash-loop backoff: {} replicas failed in a row, next start in {:.0} s",
                self.failure_streak,
                (t - now).as_secs_f64().ceil()
            )
        });
        let holding = match (backoff, &self.policy_hold) {
            (Some(b), Some(p)) => Some(format!("{b}; {p}")),
            (b, p) => b.or_else(|| p.clone()),
        };
        let bounds = self.autoscaler.bounds();
        let replicas = self
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                id: r.id.clone(),
                state: r.state,
                healthy: r.routable() && !r.stopping,
                health: r.health.state().to_string(),
                last_probe: r.last_probe.clone(),
                pid: r.running.as_ref().and_then(|x| x.pid),
                port: r.running.as_ref().map(|x| x.addr.port()),
                version: r.version,
                in_flight: 0,
                requests: 0,
                cpu: r.cpu_percent.map(|c| (c * 10.0).round() / 10.0),
                rss_bytes: r.rss_bytes,
                age_s: (now - r.started_at).as_secs_f64(),
            })
            .collect();
        let service = ServiceStatus {
            name: self.name.clone(),
            listen: self.config.listen.to_string(),
            driver: self.driver.name().to_string(),
            desired: self.desired,
            min: bounds.min,
            max: bounds.max,
            in_service: self.in_service_count(),
            pending: self.pending_count(),
            version: self.version,
            holding,
            replicas,
        };
        let backends = self.replicas.iter().filter_map(|r| r.backend.clone().map(|b| (r.id.clone(), b))).collect();
        Snapshot { service, backends }
    }
}

/// Six hex digits: short enough to type in `ebb logs`, unique enough per run.
fn random_suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}
