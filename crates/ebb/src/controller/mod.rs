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

mod command;
mod handle;
pub mod metric_source;
mod outlier;
pub mod probe;
mod restart;

pub use command::{ConfigSpec, ControlCommand, DeployRequest, LifecycleError, ReplicaOutcome, ScaleOutcome};
use handle::ReplicaTokens;
pub use handle::ServiceHandle;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_core::config::{CommandSpec, ServiceConfig};
use ebb_core::deploy::{Deploy, DeployAction, DeployOutcome, ReplicaPhase, ReplicaView};
use ebb_core::fleet::{pick_for_scale_in, ScaleInCandidate};
use ebb_core::health::{Health, HealthTracker};
use ebb_core::outlier::{Ejection, Outcomes, OutlierConfig, OutlierDetector};
use ebb_core::scaling::{
    self, Autoscaler, Demand, FleetView, HostFull, ReplicaSample, ServiceSample,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::{ContainerSpec, Driver, ExitReason, ReplicaSpec, RunningReplica};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::cpu::{CpuMeter, GroupUsage};
use crate::metrics::history;
use crate::metrics::host::HostMonitor;
use crate::proxy::{Backend, SecondLatencies, ServiceProxy};
use crate::state::{ReplicaRecord, ServiceRecord, StateStore};
use crate::status::{DeployStatus, HostStatus, ReplicaState, ReplicaStatus, SaturationStatus, ServiceStatus};

/// How often the loop wakes without input (backoff expiry, status refresh).
const TICK: Duration = Duration::from_millis(250);
/// Metrics resolution: one sample, and one scaling decision, per second.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Crash-loop backoff bounds.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything a service's controller task needs.
pub struct ServiceContext {
    pub config: ServiceConfig,
    pub driver: Arc<dyn Driver>,
    pub proxy: Arc<ServiceProxy>,
    pub events: Arc<EventLog>,
    pub state_dir: PathBuf,
    /// The admin API's base URL, given to replicas so they can protect
    /// themselves (`EBB_ADMIN_URL`).
    pub admin_url: String,
    /// Where desired state, replicas and history are kept across restarts.
    pub store: Option<StateStore>,
    /// What the store held for this service when ebb started.
    pub restored: RestoredService,
    /// ebb's host, when this service's replicas run on it (not on Swarm).
    pub host: Option<Arc<HostMonitor>>,
}

/// One service's part of what the state store held at start.
#[derive(Debug, Default)]
pub struct RestoredService {
    pub record: Option<ServiceRecord>,
    pub replicas: Vec<ReplicaRecord>,
    pub history: Vec<history::ServicePoint>,
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
        replica_tokens: controller.replica_tokens.clone(),
        store: controller.store.clone(),
        restored: controller.restore_done.clone(),
    };
    tracker.spawn(sample_usage(controller.driver.clone(), snapshot_rx.clone(), tx.clone(), shutdown.clone()));
    if let Some(source) = controller.config.metric_source.clone() {
        tracker.spawn(read_metric_source(source, tx.clone(), shutdown.clone()));
    }
    tracker.spawn(controller.run(rx, snapshot_tx, shutdown));
    handle
}

/// Reads the CPU and memory of the service's replicas once a second through
/// the driver, off the controller's loop (it scans `/proc` or asks the
/// engine), and hands the readings in.
async fn sample_usage(
    driver: Arc<dyn Driver>,
    snapshot: watch::Receiver<Snapshot>,
    inbox: mpsc::UnboundedSender<Input>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Samples are stamped with the tick's time, not the time the read
        // finished: decisions then fall on whole seconds, as in `ebb
        // simulate`, and a 3 s cooldown is not missed by a few ms of reading.
        let at = tokio::select! {
            _ = stop.cancelled() => return,
            at = every.tick() => at.into_std(),
        };
        let running = snapshot.borrow().running.clone();
        let usage = tokio::select! {
            _ = stop.cancelled() => return,
            usage = driver.usage(&running) => usage,
        };
        if inbox.send(Input::Usage { at, usage }).is_err() {
            return;
        }
    }
}

/// Reads the service's external metric (`[service.NAME.metric_source]`,
/// e.g. a queue length) every `interval`, off the controller's loop.
async fn read_metric_source(
    source: ebb_core::config::MetricSource,
    inbox: mpsc::UnboundedSender<Input>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(source.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // A reading may take at most one interval (and never less than 1 s).
        let limit = source.interval.max(Duration::from_secs(1));
        let reading = match tokio::time::timeout(limit, metric_source::read(&source.reading)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no reading within {}", humantime::format_duration(limit))),
        };
        if inbox.send(Input::External { at: Instant::now(), reading }).is_err() {
            return;
        }
    }
}

/// The closed set of things that wake a controller.
#[derive(Debug)]
enum Input {
    Command(ControlCommand),
    Probe {
        replica: String,
        outcome: probe::ProbeOutcome,
    },
    Started {
        replica: String,
        result: Result<RunningReplica, String>,
    },
    Exited {
        replica: String,
        reason: ExitReason,
    },
    Stopped {
        replica: String,
        result: Result<ExitReason, String>,
    },
    /// Once a second: CPU and memory by replica id; time to decide.
    Usage {
        at: Instant,
        usage: std::collections::HashMap<String, GroupUsage>,
    },
    /// A worker ran through its grace period: it is in service.
    WorkerReady {
        replica: String,
    },
    /// A reading of the external metric source, or why it failed.
    External {
        at: Instant,
        reading: Result<f64, String>,
    },
}

/// One replica as the controller tracks it.
struct Replica {
    id: String,
    version: u64,
    started_at: Instant,
    /// Unix milliseconds at start, for the state file.
    started_ms: u64,
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
    /// The balancer's totals for it at the last outlier look.
    outcomes_seen: Outcomes,
    /// Out of the rotation for failing its requests, until then (a copy
    /// of the outlier detector's verdict).
    ejection: Option<Ejection>,
    /// Cancels the probe and exit-watch tasks when the replica leaves.
    watchers: CancellationToken,
    /// ebb asked it to stop: its exit is expected, not a failure.
    stopping: bool,
    /// It exited on its own (before any stop): its stop only cleans up.
    exited: bool,
    /// Scale-in protection: never chosen to leave while set.
    protected: bool,
    /// An interruption notice: replaced, then retired by this time at the latest.
    interrupt_deadline: Option<Instant>,
    /// Reached in service at least once (for crash-loop accounting).
    ever_in_service: bool,
}

impl Replica {
    /// A replica being launched (`Starting`, nothing known about it yet);
    /// adoption fills in what it knows on top.
    fn new(id: String, version: u64, started_at: Instant, started_ms: u64, health: HealthTracker) -> Self {
        Replica {
            id,
            version,
            started_at,
            started_ms,
            state: ReplicaState::Starting,
            running: None,
            backend: None,
            health,
            last_probe: None,
            in_service_since: None,
            cpu_percent: None,
            rss_bytes: None,
            requests_at_last_sample: 0,
            outcomes_seen: Outcomes::default(),
            ejection: None,
            watchers: CancellationToken::new(),
            stopping: false,
            exited: false,
            protected: false,
            interrupt_deadline: None,
            ever_in_service: false,
        }
    }

    fn is_active(&self) -> bool {
        matches!(self.state, ReplicaState::Starting | ReplicaState::InService)
    }

    /// Counts toward desired capacity: starting or in service, not leaving,
    /// and not under an interruption notice (its replacement counts instead).
    fn is_capacity(&self) -> bool {
        self.is_active() && !self.stopping && self.interrupt_deadline.is_none()
    }

    /// In service and healthy, with a balancer backend: it would take
    /// requests but for an ejection.
    fn serving(&self) -> bool {
        self.state == ReplicaState::InService && self.health.state() == Health::Healthy && self.backend.is_some()
    }

    /// In the rotation: serving and not ejected by outlier detection.
    fn routable(&self) -> bool {
        self.serving() && self.ejection.is_none()
    }
}

/// A point-in-time view of a service for the admin API.
#[derive(Clone)]
struct Snapshot {
    service: ServiceStatus,
    /// Live counters, read when the status is asked for.
    backends: BTreeMap<String, Arc<Backend>>,
    /// The replicas the driver runs, for the usage sampler.
    running: Vec<RunningReplica>,
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
    /// Health checks are failing for ebb's own reason (out of file
    /// descriptors...): why, and how many were skipped. Said once per
    /// episode.
    probe_fault: Option<(String, u64)>,
    tasks: TaskTracker,
    /// The scaling brain (pure); fed one sample a second.
    autoscaler: Autoscaler,
    /// Passive outlier detection (pure); fed the balancer's counts.
    outlier: OutlierDetector,
    /// Origin of the autoscaler's time axis.
    origin: Instant,
    /// Why the autoscaler is holding, from its last decision.
    policy_hold: Option<String>,
    cpu_meter: CpuMeter,
    /// Service-wide `requests` total at the last sample.
    service_requests_at_last_sample: u64,
    /// The balancer's arrivals and shed counters at the last sample.
    offered_at_last_sample: u64,
    shed_at_last_sample: u64,
    host: Option<Arc<HostMonitor>>,
    /// The last second's demand and host, for status.
    last_demand: Option<SaturationStatus>,
    last_host: Option<HostStatus>,
    /// Whether the last second was saturated / the host full, so each
    /// turn is an event once.
    was_saturated: bool,
    was_host_full: bool,
    history: Arc<history::MetricsHistory>,
    replica_tokens: ReplicaTokens,
    admin_url: String,
    /// The spec of every version this run has known (v1 = the config's).
    specs: BTreeMap<u64, VersionSpec>,
    /// The running deploy; while set, it alone launches and retires.
    deploy: Option<Deploy>,
    last_deploy: Option<DeployStatus>,
    /// Blue-green: only this version is routable.
    routes_only: Option<u64>,
    /// Last `Wait` reason recorded, so a wait is an event once.
    deploy_wait: Option<String>,
    /// Latest external metric reading and when it was taken.
    external: Option<(Instant, f64)>,
    /// The metric source's last error, reported once until it recovers.
    external_error: Option<String>,
    store: Option<StateStore>,
    /// What was last written to the store, to write only changes.
    saved_service: Option<ServiceRecord>,
    saved_fingerprint: Option<restart::ServiceFingerprint>,
    saved_replicas: std::collections::HashMap<String, ReplicaRecord>,
    /// Replica records from the store, consumed by adoption at start.
    restored_replicas: Vec<ReplicaRecord>,
    /// Set once `run` has restored and adopted: before that nothing is saved.
    restored: bool,
    restore_done: CancellationToken,
    /// While a deploy runs: why its replicas failed (id, what happened), so
    /// the rollback reason says why, not only who. At most a few.
    deploy_failures: Vec<(String, String)>,
}

/// What a version runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct VersionSpec {
    #[serde(with = "restart::command_serde")]
    command: CommandSpec,
    env: BTreeMap<String, String>,
    /// The image a container replica of this version runs (`None`: the
    /// process driver).
    #[serde(default)]
    image: Option<String>,
}

impl VersionSpec {
    /// What a service's config says to run now.
    fn from_config(config: &ServiceConfig) -> Self {
        VersionSpec {
            command: config.command.clone(),
            env: config.env.clone(),
            image: config.container.as_ref().map(|c| c.image.clone()),
        }
    }
}

impl ServiceController {
    fn new(ctx: ServiceContext, inbox: mpsc::UnboundedSender<Input>) -> Self {
        let ctx_scaling = ctx.config.scaling.clone();
        let first_spec = VersionSpec::from_config(&ctx.config);
        let bounds = ctx.config.replicas.bounds;
        let outlier = match ctx.config.kind.has_balancer() {
            true => ctx.config.proxy.outlier.clone(),
            false => OutlierConfig::off(),
        };
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
            probe_fault: None,
            tasks: TaskTracker::new(),
            autoscaler: Autoscaler::new(&ctx_scaling, bounds),
            outlier: OutlierDetector::new(outlier),
            origin: Instant::now(),
            policy_hold: None,
            cpu_meter: CpuMeter::default(),
            service_requests_at_last_sample: 0,
            offered_at_last_sample: 0,
            shed_at_last_sample: 0,
            host: ctx.host,
            last_demand: None,
            last_host: None,
            was_saturated: false,
            was_host_full: false,
            history: Arc::default(),
            replica_tokens: Arc::default(),
            admin_url: ctx.admin_url,
            specs: BTreeMap::from([(1, first_spec)]),
            deploy: None,
            last_deploy: None,
            routes_only: None,
            deploy_wait: None,
            external: None,
            external_error: None,
            store: ctx.store,
            saved_service: None,
            saved_fingerprint: None,
            saved_replicas: Default::default(),
            restored_replicas: Vec::new(),
            restored: false,
            restore_done: CancellationToken::new(),
            deploy_failures: Vec::new(),
        }
        .with_restored(ctx.restored)
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
        let adopted = self.adopt_survivors().await;
        let start = match adopted {
            0 => "starting".to_string(),
            n => format!("resuming with {n} replicas adopted from the previous run; keeping"),
        };
        self.record(NewEvent::new(
            &self.name,
            EventKind::FleetStarting,
            format!(
                "{start} {} replicas (min {}, max {}) with the {} driver",
                self.desired,
                self.config.replicas.bounds.min,
                self.config.replicas.bounds.max,
                self.driver.name()
            ),
        ));
        self.restored = true;
        self.reconcile();
        self.persist();
        snapshot.send_replace(self.snapshot());
        self.restore_done.cancel();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let proxy = self.proxy.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                _ = proxy.outlier_suspect.notified() => self.look_for_outliers(),
                _ = tick.tick() => {}
            }
            self.reconcile();
            self.persist();
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
                Input::Started { replica, result: Err(_) } => self.forget(&replica),
                Input::Stopped { .. } => {
                    self.handle(input);
                    self.persist_replicas();
                }
                Input::Command(ControlCommand::SetDesired { reply, .. }) => {
                    let _ = reply.send(ScaleOutcome {
                        service: self.name.clone(),
                        from: 0,
                        to: 0,
                        clamped: Some("ebb is shutting down".into()),
                    });
                }
                Input::Command(ControlCommand::Protect { reply, .. } | ControlCommand::Interrupt { reply, .. }) => {
                    let _ = reply.send(Err(LifecycleError::ShuttingDown { service: self.name.clone() }));
                }
                Input::Command(ControlCommand::Deploy { reply, .. } | ControlCommand::Rollback { reply, .. }) => {
                    let _ = reply.send(Err(LifecycleError::ShuttingDown { service: self.name.clone() }));
                }
                Input::Probe { .. }
                | Input::Exited { .. }
                | Input::Usage { .. }
                | Input::External { .. }
                | Input::WorkerReady { .. } => {}
            }
            snapshot.send_replace(self.snapshot());
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn record(&self, event: NewEvent) {
        self.events.record(event);
    }

    /// Drops a replica that is gone for good, and its token.
    fn forget(&mut self, id: &str) {
        self.replicas.retain(|r| r.id != id);
        self.replica_tokens.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn replica_mut(&mut self, id: &str) -> Option<&mut Replica> {
        self.replicas.iter_mut().find(|r| r.id == id)
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Command(ControlCommand::SetDesired { desired, reason, reply }) => {
                let outcome = self.set_desired(desired, &reason);
                self.persist();
                let _ = reply.send(outcome);
            }
            Input::Command(ControlCommand::Protect { replica, protected, reply }) => {
                let outcome = self.protect(&replica, protected);
                self.persist();
                let _ = reply.send(outcome);
            }
            Input::Command(ControlCommand::Interrupt { replica, notice, reply }) => {
                let _ = reply.send(self.interrupt(&replica, notice));
            }
            Input::Command(ControlCommand::Deploy { request, reply }) => {
                let outcome = self.start_deploy(request);
                self.persist();
                let _ = reply.send(outcome);
            }
            Input::Command(ControlCommand::Rollback { reason, reply }) => {
                let outcome = self.rollback(reason.as_deref());
                self.persist();
                let _ = reply.send(outcome);
            }
            Input::Started { replica, result } => self.on_started(&replica, result),
            Input::Probe { replica, outcome } => self.on_probe(&replica, outcome),
            Input::Exited { replica, reason } => self.on_exited(&replica, reason),
            Input::Usage { at, usage } => self.on_usage(at, &usage),
            Input::External { at, reading } => self.on_external(at, reading),
            Input::WorkerReady { replica } => self.on_worker_ready(&replica),
            Input::Stopped { replica, result } => {
                let exited = self.replica_mut(&replica).is_some_and(|r| r.exited);
                let detail = match result {
                    // Its own exit was reported when it happened.
                    Ok(reason) if exited => reason.to_string(),
                    Ok(reason) => stop_detail(&reason, self.config.stop_timeout),
                    Err(error) => format!("stop failed: {error}"),
                };
                if let Some(r) = self.replica_mut(&replica) {
                    r.watchers.cancel();
                }
                self.forget(&replica);
                self.record(
                    NewEvent::new(&self.name, EventKind::ReplicaStopped, format!("replica stopped ({detail})"))
                        .replica(&replica),
                );
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

    /// A replica by id that is still active (not leaving), or why not.
    fn active_replica_mut(&mut self, id: &str) -> Result<&mut Replica, LifecycleError> {
        let service = self.name.clone();
        let r = self
            .replicas
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| LifecycleError::NoSuchReplica { service: service.clone(), replica: id.to_string() })?;
        if !r.is_active() || r.stopping {
            let state = if r.stopping { "draining".to_string() } else { r.state.as_str().to_string() };
            return Err(LifecycleError::Leaving { service, replica: id.to_string(), state });
        }
        Ok(r)
    }

    fn protect(&mut self, id: &str, protected: bool) -> Result<ReplicaOutcome, LifecycleError> {
        let r = self.active_replica_mut(id)?;
        let was = std::mem::replace(&mut r.protected, protected);
        let message = match (was, protected) {
            (false, true) => "scale-in protection on: never chosen to leave until released",
            (true, false) => "scale-in protection off: may leave on scale-in again",
            (true, true) => "already protected",
            (false, false) => "already unprotected",
        };
        if was != protected {
            let kind = if protected { EventKind::ReplicaProtected } else { EventKind::ReplicaUnprotected };
            self.record(NewEvent::new(&self.name, kind, message).replica(id));
        }
        Ok(ReplicaOutcome { service: self.name.clone(), replica: id.to_string(), message: message.to_string() })
    }

    fn interrupt(&mut self, id: &str, notice: Duration) -> Result<ReplicaOutcome, LifecycleError> {
        // Leave early enough to drain and stop before the notice runs out.
        let leave_after = notice.saturating_sub(self.config.drain_timeout + self.config.stop_timeout);
        let r = self.active_replica_mut(id)?;
        if r.interrupt_deadline.is_some() {
            return Err(LifecycleError::Leaving {
                service: self.name.clone(),
                replica: id.to_string(),
                state: "already interrupted".into(),
            });
        }
        r.interrupt_deadline = Some(Instant::now() + leave_after);
        let message = format!(
            "interruption notice ({}): starting a replacement; this replica leaves once it is in service, or in {} at the latest",
            humantime::format_duration(notice),
            humantime::format_duration(leave_after)
        );
        self.record(NewEvent::new(&self.name, EventKind::ReplicaInterrupted, message.clone()).replica(id));
        Ok(ReplicaOutcome { service: self.name.clone(), replica: id.to_string(), message })
    }

    fn refused(&self, message: impl Into<String>) -> LifecycleError {
        LifecycleError::Refused { service: self.name.clone(), message: message.into() }
    }

    fn invalid(&self, message: impl Into<String>) -> LifecycleError {
        LifecycleError::Invalid { service: self.name.clone(), message: message.into() }
    }

    fn start_deploy(&mut self, request: DeployRequest) -> Result<DeployStatus, LifecycleError> {
        if let Some(deploy) = &self.deploy {
            return Err(self.refused(format!(
                "a deploy is already running (v{} -> v{}); wait for it or `ebb rollback {}`",
                deploy.from_version(),
                deploy.to_version(),
                self.name
            )));
        }
        // Already a `Strategy`: an unknown name is refused where the JSON is read.
        let config = match request.strategy {
            None => self.config.deploy.clone(),
            Some(strategy) => self.config.deploy.clone().with_strategy(strategy),
        };
        let current = self.specs[&self.version].clone();
        let mut next = current.clone();
        if let Some(spec) = request.from_config {
            next = VersionSpec { command: spec.command, env: spec.env, image: spec.image };
            if next == current {
                return Err(self.refused(format!(
                    "nothing to deploy: v{} already runs what the config file says for {}; edit it, or pass --command, --image or --env",
                    self.version, self.name
                )));
            }
        }
        if let Some(command) = request.command {
            if command.trim().is_empty() {
                return Err(self.invalid("the new command is empty"));
            }
            next.command = CommandSpec::Shell(command);
        }
        if let Some(image) = request.image {
            if next.image.is_none() {
                return Err(self.refused(
                    "--image applies to services with driver = \"docker\" or \"swarm\"; this one runs local processes",
                ));
            }
            if image.trim().is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.refused(format!("image {image:?} is not an image reference, e.g. ebb-demo:v2")));
            }
            next.image = Some(image);
        }
        for (key, value) in request.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(self.invalid(format!("env {key:?} is not a valid variable; write NAME=value")));
            }
            if key == "PORT" || key.starts_with("EBB_") {
                return Err(self.invalid(format!("env {key} is set by ebb for each replica; use another name")));
            }
            next.env.insert(key, value);
        }
        if next == current {
            return Err(self.refused(format!(
                "nothing to deploy: v{} already runs this command, image and environment; pass --command, --image or --env",
                self.version
            )));
        }
        let from = self.version;
        let to = self.specs.keys().next_back().copied().unwrap_or(from) + 1;
        self.specs.insert(to, next);
        let deploy = Deploy::start(&config, from, to, self.now());
        self.record(NewEvent::new(
            &self.name,
            EventKind::DeployStarted,
            format!(
                "deploy v{from} -> v{to} ({}) started{}",
                config.strategy.as_str(),
                because(request.reason.as_deref())
            ),
        ));
        self.deploy = Some(deploy);
        self.deploy_wait = None;
        self.deploy_failures.clear();
        self.step_deploy();
        Ok(self.deploy_status().expect("deploy just started"))
    }

    fn rollback(&mut self, reason: Option<&str>) -> Result<DeployStatus, LifecycleError> {
        let now = self.now();
        if let Some(deploy) = &mut self.deploy {
            deploy
                .rollback(now, "ebb rollback")
                .map_err(|e| LifecycleError::Refused { service: self.name.clone(), message: e.message })?;
            self.record(NewEvent::new(
                &self.name,
                EventKind::DeployRollingBack,
                format!("rolling back: ebb rollback{}", because(reason)),
            ));
            self.step_deploy();
            return Ok(self.deploy_status().or_else(|| self.last_deploy.clone()).expect("a deploy ran"));
        }
        // No deploy running: deploy the version before this one again.
        let Some(previous) = self.specs.range(..self.version).next_back().map(|(v, spec)| (*v, spec.clone())) else {
            return Err(self.refused(format!(
                "nothing to roll back to: no deploy is running and no version came before v{}",
                self.version
            )));
        };
        let from = self.version;
        let to = self.specs.keys().next_back().copied().unwrap_or(from) + 1;
        self.specs.insert(to, previous.1);
        let deploy = Deploy::start(&self.config.deploy, from, to, self.now());
        self.record(NewEvent::new(
            &self.name,
            EventKind::DeployStarted,
            format!("rollback: deploy v{from} -> v{to} with the spec of v{}{}", previous.0, because(reason)),
        ));
        self.deploy = Some(deploy);
        self.deploy_wait = None;
        self.deploy_failures.clear();
        self.step_deploy();
        Ok(self.deploy_status().or_else(|| self.last_deploy.clone()).expect("a deploy ran"))
    }

    fn deploy_views(&self) -> Vec<ReplicaView> {
        let origin = self.origin;
        self.replicas
            .iter()
            .map(|r| {
                let state = match r.state {
                    ReplicaState::Failed => ReplicaPhase::Failed,
                    _ if r.stopping || r.interrupt_deadline.is_some() => ReplicaPhase::Leaving,
                    ReplicaState::Starting => ReplicaPhase::Starting,
                    ReplicaState::InService => ReplicaPhase::InService,
                    ReplicaState::Draining | ReplicaState::Stopped => ReplicaPhase::Leaving,
                };
                let mut view =
                    ReplicaView::new(&r.id, r.version, state, r.started_at.saturating_duration_since(origin));
                view.protected = r.protected;
                view
            })
            .collect()
    }

    fn deploy_status(&self) -> Option<DeployStatus> {
        let deploy = self.deploy.as_ref()?;
        let mut status = Self::describe_deploy(deploy, &self.deploy_views());
        status.rollback_reason = status.rollback_reason.map(|r| self.with_failure_causes(r));
        Some(status)
    }

    /// The planner names the replica that failed (`web-7 (v4) failed during
    /// the deploy`); add what happened to it and where its output is.
    fn with_failure_causes(&self, mut reason: String) -> String {
        for (id, cause) in &self.deploy_failures {
            if reason.contains(&format!("{id} (v")) && !reason.contains(cause.as_str()) {
                reason.push_str(&format!("; {id} {cause} (its output: `ebb logs {id}`)"));
            }
        }
        reason
    }

    fn describe_deploy(deploy: &Deploy, views: &[ReplicaView]) -> DeployStatus {
        let progress = deploy.progress(views);
        DeployStatus {
            from_version: deploy.from_version(),
            to_version: deploy.to_version(),
            strategy: deploy.strategy().as_str().to_string(),
            phase: progress.phase.to_string(),
            progress: progress.to_string(),
            finished: deploy.is_finished(),
            rollback_reason: progress.rollback_reason.clone(),
        }
    }

    /// Lets the deploy planner act on the fleet as it is now.
    fn step_deploy(&mut self) {
        if self.deploy.is_none() {
            return;
        }
        let views = self.deploy_views();
        let (now, desired) = (self.now(), self.desired);
        let Some(deploy) = self.deploy.as_mut() else { return };
        let actions = deploy.step(now, desired, &views);
        for action in actions {
            match action {
                DeployAction::Launch { version, count, reason } => {
                    self.record(NewEvent::new(&self.name, EventKind::DeployStep, reason));
                    for _ in 0..count {
                        self.launch_version(version);
                    }
                }
                DeployAction::Retire { id, reason } => self.retire(&id, &reason),
                DeployAction::Route { only_version, reason } => {
                    self.routes_only = only_version;
                    self.record(NewEvent::new(&self.name, EventKind::DeployStep, reason));
                    self.published_routable.clear(); // force a republish with the new filter
                }
                DeployAction::Wait { reason, .. } => {
                    if self.deploy_wait.as_deref() != Some(reason.as_str()) {
                        self.record(NewEvent::new(&self.name, EventKind::DeployStep, reason.clone()));
                        self.deploy_wait = Some(reason);
                    }
                }
                DeployAction::Finish { outcome, reason } => {
                    let deploy = self.deploy.take().expect("finishing a running deploy");
                    let mut status = Self::describe_deploy(&deploy, &views);
                    status.rollback_reason = status.rollback_reason.map(|r| self.with_failure_causes(r));
                    let reason = self.with_failure_causes(reason);
                    self.deploy_failures.clear();
                    self.version = deploy.target_version();
                    self.routes_only = None;
                    self.published_routable.clear();
                    let kind = match outcome {
                        DeployOutcome::Succeeded => EventKind::DeploySucceeded,
                        DeployOutcome::RolledBack { .. } => EventKind::DeployRolledBack,
                    };
                    self.record(NewEvent::new(&self.name, kind, reason));
                    self.last_deploy = Some(status);
                    return;
                }
            }
        }
    }

    fn on_worker_ready(&mut self, id: &str) {
        let name = self.name.clone();
        let Some(r) = self.replicas.iter_mut().find(|r| r.id == id) else { return };
        if r.state != ReplicaState::Starting || r.stopping {
            return;
        }
        // No health checks for a worker: mark it healthy directly.
        while r.health.state() != Health::Healthy {
            r.health.observe(true);
        }
        r.state = ReplicaState::InService;
        r.ever_in_service = true;
        r.in_service_since = Some(Instant::now());
        self.failure_streak = 0;
        self.hold_starts_until = None;
        let why = format!(
            "worker in service: still running after its {} grace period",
            humantime::format_duration(self.config.health.grace_period)
        );
        self.events.record(NewEvent::new(&name, EventKind::ReplicaInService, why).replica(id));
    }

    fn on_external(&mut self, at: Instant, reading: Result<f64, String>) {
        match reading {
            Ok(value) => {
                self.external = Some((at, value));
                self.external_error = None;
            }
            Err(error) => {
                if self.external_error.as_deref() != Some(error.as_str()) {
                    self.record(NewEvent::new(
                        &self.name,
                        EventKind::MetricSourceFailed,
                        format!("metric source failed: {error}; policies on items_per_replica hold for lack of data"),
                    ));
                    self.external_error = Some(error);
                }
            }
        }
    }

    /// Once a second: turn readings into a sample, let the autoscaler decide,
    /// and apply its change (with the event that explains it).
    fn on_usage(&mut self, at: Instant, usage_by_replica: &std::collections::HashMap<String, GroupUsage>) {
        self.look_for_outliers();
        let now = at.saturating_duration_since(self.origin);
        let origin = self.origin;
        let allotment = self.config.cpu;
        let mut sample = ServiceSample::new(now);
        let mut live_ids = Vec::new();
        let mut concurrency = 0u64;
        let mut service_requests = 0u64;
        for r in self.replicas.iter_mut().filter(|r| r.is_active() && !r.stopping) {
            let mut replica =
                ReplicaSample::new(&r.id, r.in_service_since.map(|t| t.saturating_duration_since(origin)));
            if r.running.is_some() {
                live_ids.push(r.id.clone());
                match usage_by_replica.get(&r.id) {
                    Some(usage) => {
                        r.cpu_percent = self.cpu_meter.utilisation(&r.id, at, usage, allotment);
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
        self.cpu_meter.retain(&live_ids);
        // Requests of replicas that left are gone from the sum; never negative.
        sample.requests_per_s =
            Some(service_requests.saturating_sub(self.service_requests_at_last_sample.min(service_requests)) as f64);
        self.service_requests_at_last_sample = service_requests;
        sample.concurrency = Some(concurrency as f64);
        // A reading older than three intervals is missing data, not a value.
        if let (Some((taken, value)), Some(source)) = (self.external, &self.config.metric_source) {
            if at.saturating_duration_since(taken) <= source.interval * 3 {
                sample.external = Some(value);
            }
        }
        // This second's latencies, as the balancer recorded them.
        let SecondLatencies { latency, queue_time: queue } = self.proxy.take_second();
        sample.p95_ms = latency.quantile_ms(0.95);
        sample.p99_ms = latency.quantile_ms(0.99);
        sample.queue_time_ms = queue.mean_ms();
        let p50_ms = latency.quantile_ms(0.50);
        let replica_cpu: Vec<(String, f64)> =
            sample.replicas.iter().filter_map(|r| r.cpu_percent.map(|c| (r.id.clone(), c))).collect();
        let cpu_mean = (!replica_cpu.is_empty())
            .then(|| replica_cpu.iter().map(|(_, c)| c).sum::<f64>() / replica_cpu.len() as f64);
        let requests_per_s = sample.requests_per_s.unwrap_or(0.0);
        let p99_ms = sample.p99_ms;
        sample.demand = self.config.kind.has_balancer().then(|| self.read_demand(requests_per_s));
        sample.host = self.host.as_ref().and_then(|h| h.latest());
        let queue_time_ms = sample.queue_time_ms;
        self.note_saturation(sample.demand, queue_time_ms);
        self.autoscaler.observe(sample);
        self.note_host(now);

        let fleet = FleetView {
            desired: self.desired,
            in_service: self.in_service_count(),
            pending: self.pending_count(),
            deploying: self.deploy.is_some(),
        };
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let decision = self.autoscaler.decide(now, wall, &fleet);
        self.policy_hold = decision.holding.as_ref().map(|h| h.to_string());
        if let Some(change) = decision.change {
            self.record(
                NewEvent::new(&self.name, EventKind::Scaled, change.to_string()).change(change.from, change.to),
            );
            self.desired = change.to;
        }
        self.maybe_interrupt_at_random();
        self.push_history(history::ServicePoint {
            time_ms: crate::clock::unix_ms(std::time::SystemTime::now()),
            desired: self.desired,
            in_service: fleet.in_service,
            pending: fleet.pending,
            requests_per_s,
            in_flight: concurrency,
            p50_ms,
            p99_ms,
            cpu_mean,
            replica_cpu,
            traffic: self.last_demand.as_ref().map(|d| history::PointTraffic {
                offered_per_s: d.offered_per_s,
                queued: d.queued,
                shed_per_s: d.shed_per_s,
                queue_ms: d.queue_time_ms,
                saturated: d.saturated,
                host_full: self.last_host.as_ref().is_some_and(|h| h.full),
            }),
        });
    }

    /// The balancer's counters for the second that just ended.
    fn read_demand(&mut self, served_per_s: f64) -> Demand {
        let stats = self.proxy.stats.snapshot();
        let offered = stats.requests.saturating_sub(self.offered_at_last_sample);
        let shed = stats.shed.saturating_sub(self.shed_at_last_sample);
        (self.offered_at_last_sample, self.shed_at_last_sample) = (stats.requests, stats.shed);
        let (routable, at_limit, in_flight) = self.proxy.load();
        Demand {
            offered_per_s: offered as f64,
            served_per_s,
            queued: self.proxy.take_queued_peak().min(u64::from(u32::MAX)) as u32,
            shed: shed.min(u64::from(u32::MAX)) as u32,
            in_flight: in_flight.min(u64::from(u32::MAX)) as u32,
            routable,
            at_limit,
            limit: self.config.proxy.max_in_flight,
        }
    }

    /// Keeps the second's demand for status, and records an event when
    /// requests start or stop queueing.
    fn note_saturation(&mut self, demand: Option<Demand>, queue_time_ms: Option<f64>) {
        let Some(d) = demand else { return };
        let saturated = d.is_saturated();
        if saturated != self.was_saturated {
            let text = if saturated {
                format!(
                    "saturated: {d}; offered {:.0} req/s, served {:.0} req/s; no scale-in until it clears",
                    d.offered_per_s, d.served_per_s
                )
            } else {
                "saturation cleared: no request queued or shed in the last second".to_string()
            };
            self.record(NewEvent::new(&self.name, EventKind::Saturated, text));
            self.was_saturated = saturated;
        }
        self.last_demand = Some(SaturationStatus {
            offered_per_s: d.offered_per_s,
            served_per_s: d.served_per_s,
            queued: d.queued,
            shed_per_s: d.shed,
            in_flight: d.in_flight,
            routable: d.routable,
            at_limit: d.at_limit,
            limit: d.limit,
            queue_time_ms,
            saturated,
        });
    }

    /// Keeps the host's state for status, and records an event when it
    /// becomes full or has room again.
    fn note_host(&mut self, now: scaling::Time) {
        let Some(latest) = self.host.as_ref().and_then(|h| h.latest()) else {
            self.last_host = None;
            return;
        };
        let full = HostFull::assess(&self.autoscaler.history().host(now, scaling::saturation::HOST_WINDOW), now);
        if full.is_some() != self.was_host_full {
            let text = match &full {
                Some(f) => format!(
                    "{}; more local replicas would not add capacity — lower cpu per replica, raise the host, or run on Swarm",
                    f.describe()
                ),
                None => format!("host has room again: {:.1} of {} CPUs busy", latest.busy_cpus, latest.cpus),
            };
            self.record(NewEvent::new(&self.name, EventKind::HostFull, text));
            self.was_host_full = full.is_some();
        }
        self.last_host = Some(HostStatus {
            cpus: latest.cpus,
            busy_cpus: latest.busy_cpus,
            pressure: latest.pressure,
            full: full.is_some(),
            message: full.map(|f| f.describe()),
        });
    }

    /// `[service.NAME.chaos]`: now and then, a random replica in service gets
    /// an interruption notice, as a spot instance would (about once per
    /// `interrupt_every`, checked once a second).
    fn maybe_interrupt_at_random(&mut self) {
        let Some(chaos) = self.config.chaos else { return };
        if rand::random::<f64>() >= chaos.chance(SAMPLE_EVERY) {
            return;
        }
        let candidates: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.is_capacity() && r.state == ReplicaState::InService && !r.protected)
            .map(|r| r.id.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let victim = candidates[rand::random::<usize>() % candidates.len()].clone();
        let _ = self.interrupt(&victim, chaos.notice);
    }

    /// In service and healthy, ejected or not: an ejection is a pause
    /// in the rotation, not a loss of capacity to replace.
    fn in_service_count(&self) -> u32 {
        self.replicas.iter().filter(|r| r.serving() && !r.stopping).count() as u32
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
                self.forget(id);
                if self.deploy.is_some() {
                    let now = self.now();
                    let reason = format!("replica {id} of the new version failed to start: {error}");
                    if let Some(deploy) = self.deploy.as_mut() {
                        if deploy.rollback(now, reason.clone()).is_ok() {
                            self.events.record(NewEvent::new(
                                &name,
                                EventKind::DeployRollingBack,
                                format!("rolling back: {reason}"),
                            ));
                        }
                    }
                }
                self.events.record(
                    NewEvent::new(&name, EventKind::ReplicaStartFailed, format!("replica failed to start: {error}"))
                        .replica(id),
                );
                self.count_failure();
            }
        }
    }

    /// Starts the probe loop and the exit watcher of a launched replica.
    /// A worker has no balancer and need not listen: it is in service once
    /// it has run for its grace period, and leaves when it exits.
    fn watch_replica(&self, id: String, running: RunningReplica, watchers: CancellationToken) {
        if !self.config.kind.has_balancer() {
            let inbox = self.inbox.clone();
            let grace = self.config.health.grace_period;
            let (probe_id, stop) = (id.clone(), watchers.clone());
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(grace) => {
                        let _ = inbox.send(Input::WorkerReady { replica: probe_id });
                    }
                }
            });
            self.watch_exit(id, running, watchers);
            return;
        }
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
        self.watch_exit(id, running, watchers);
    }

    fn watch_exit(&self, id: String, running: RunningReplica, watchers: CancellationToken) {
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
        if outcome.ebb_fault {
            // Not the replica's failure: its health holds.
            let health = r.health.state();
            self.on_probe_fault(id, health, &outcome.detail);
            return;
        }
        if let Some((why, skipped)) = self.probe_fault.take() {
            tracing::info!(service = %name, skipped, last = %why, "Health checks run again.");
        }
        let Some(r) = self.replicas.iter_mut().find(|r| r.id == id) else { return };
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
                    if first {
                        format!(", {:.1} s after start", r.started_at.elapsed().as_secs_f64())
                    } else {
                        String::new()
                    }
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
                if self.deploy.is_some() && self.deploy_failures.len() < 8 {
                    self.deploy_failures.push((id.to_string(), why.clone()));
                }
                self.events.record(NewEvent::new(&name, EventKind::ReplicaUnhealthy, why).replica(id));
                if never_served {
                    self.count_failure();
                }
                self.retire(id, "failed its health checks");
            }
            Health::Unknown => {}
        }
    }

    /// A health check that could not run for ebb's own reason: an event
    /// the first time (until checks run again), never counted against the
    /// replica.
    fn on_probe_fault(&mut self, id: &str, health: Health, detail: &str) {
        match &mut self.probe_fault {
            // The event below said it (and is logged); one line per
            // skipped check would flood the log while the shortage lasts.
            Some((_, skipped)) => {
                *skipped += 1;
                tracing::debug!(service = %self.name, replica = %id, %detail, "Health check skipped.");
            }
            None => {
                self.probe_fault = Some((detail.to_string(), 1));
                self.record(
                    NewEvent::new(
                        &self.name,
                        EventKind::HealthCheckSkipped,
                        format!(
                            "health check could not run for ebb's own reason ({detail}); not counted against the replica, which stays {health}; see docs/balancer.md#file-descriptors"
                        ),
                    )
                    .replica(id),
                );
            }
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
        r.exited = true;
        if self.deploy.is_some() && self.deploy_failures.len() < 8 {
            self.deploy_failures.push((id.to_string(), format!("{reason} after {age:.1} s")));
        }
        self.events.record(
            NewEvent::new(&name, EventKind::ReplicaExited, format!("replica {reason} after {age:.1} s; replacing it"))
                .replica(id),
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
                format!(
                    "leaving the rotation ({why}); {in_flight} requests in flight, drain timeout {}",
                    humantime::format_duration(drain_timeout)
                ),
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
                // Close the balancer's idle keep-alive connections to it
                // before it is signalled, rather than let it reset them.
                backend.close_idle();
            }
            let result = driver.stop(&running, stop_timeout).await.map_err(|e| e.to_string());
            let _ = inbox.send(Input::Stopped { replica, result });
        });
    }

    /// Compares desired with observed and acts.
    fn reconcile(&mut self) {
        self.release_interrupted();
        if self.deploy.is_some() {
            // The deploy planner alone launches and retires while it runs.
            self.step_deploy();
            self.publish_routable();
            return;
        }
        let active = self.replicas.iter().filter(|r| r.is_capacity()).count() as u32;
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

    /// Interrupted replicas leave once capacity is back without them, or at
    /// their deadline, whichever comes first.
    fn release_interrupted(&mut self) {
        let now = Instant::now();
        let capacity_in_service = self.replicas.iter().filter(|r| r.is_capacity() && r.serving()).count() as u32;
        let leaving: Vec<(String, &'static str)> = self
            .replicas
            .iter()
            .filter(|r| r.is_active() && !r.stopping)
            .filter_map(|r| {
                let deadline = r.interrupt_deadline?;
                if capacity_in_service >= self.desired {
                    Some((r.id.clone(), "interruption notice: replacement in service"))
                } else if now >= deadline {
                    Some((r.id.clone(), "interruption notice: out of time before the replacement was ready"))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in leaving {
            self.retire(&id, why);
        }
    }

    /// Which replicas leave on scale-in (the core decides: never a protected
    /// one; those not yet serving first, then old versions, then the fewest
    /// in flight, then the youngest).
    fn pick_for_scale_in(&self, count: usize) -> Vec<String> {
        let candidates: Vec<ScaleInCandidate> = self
            .replicas
            .iter()
            .filter(|r| r.is_capacity())
            .map(|r| ScaleInCandidate {
                id: r.id.clone(),
                protected: r.protected,
                current_version: r.version == self.version,
                // An ejected replica is failing its requests: the first to
                // go, like one not yet serving.
                in_service: r.state == ReplicaState::InService && r.ejection.is_none(),
                in_flight: r.backend.as_ref().map(|b| b.in_flight()).unwrap_or(0),
                age: r.started_at.elapsed(),
            })
            .collect();
        pick_for_scale_in(&candidates, count).into_iter().map(|c| c.id.clone()).collect()
    }

    /// Launches one replica of the current version.
    fn launch(&mut self) {
        self.launch_version(self.version);
    }

    fn launch_version(&mut self, version: u64) {
        let id = format!("{}-{}", self.name, random_suffix());
        let spec =
            self.specs.get(&version).or_else(|| self.specs.get(&self.version)).cloned().expect("v1 always exists");
        let token = format!("{:032x}", rand::random::<u128>());
        let mut env = spec.env.clone();
        env.insert("EBB_ADMIN_URL".into(), self.admin_url.clone());
        env.insert("EBB_REPLICA_TOKEN".into(), token.clone());
        self.replica_tokens.write().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), token);
        let spec = ReplicaSpec {
            service: self.name.clone(),
            replica_id: id.clone(),
            version,
            command: spec.command.clone(),
            env,
            state_dir: self.state_dir.clone(),
            log_path: self.state_dir.join("logs").join(format!("{id}.log")),
            container: ContainerSpec::from_config(&self.config, spec.image.as_deref()),
        };
        let health = HealthTracker::new(self.config.health.healthy_threshold, self.config.health.unhealthy_threshold);
        self.replicas.push(Replica::new(
            id.clone(),
            version,
            Instant::now(),
            crate::clock::unix_ms(std::time::SystemTime::now()),
            health,
        ));
        let driver = self.driver.clone();
        let inbox = self.inbox.clone();
        self.tasks.spawn(async move {
            let result = driver.start(&spec).await.map_err(|e| e.to_string());
            let _ = inbox.send(Input::Started { replica: id, result });
        });
    }

    /// Which version(s) may take traffic: during a blue-green switch the
    /// deploy says; during a rolling deploy every version; otherwise only the
    /// current one (a protected replica left on an old version by a deploy
    /// finishes its work but gets no new requests).
    fn routes_version(&self, version: u64) -> bool {
        match (self.routes_only, &self.deploy) {
            (Some(only), _) => version == only,
            (None, Some(_)) => true,
            (None, None) => version == self.version,
        }
    }

    fn publish_routable(&mut self) {
        let routable: Vec<&Replica> =
            self.replicas.iter().filter(|r| r.routable() && !r.stopping && self.routes_version(r.version)).collect();
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
        // Scale-in that cannot happen because the extra replicas are protected.
        let capacity = self.replicas.iter().filter(|r| r.is_capacity()).count() as u32;
        let protected: Vec<&str> =
            self.replicas.iter().filter(|r| r.is_capacity() && r.protected).map(|r| r.id.as_str()).collect();
        let protected_wait = (capacity > self.desired && !protected.is_empty())
            .then(|| format!("scale-in waits for protected replicas ({}) to be released", protected.join(", ")));
        let holding: Vec<String> = [backoff, protected_wait, self.policy_hold.clone()].into_iter().flatten().collect();
        let holding = (!holding.is_empty()).then(|| holding.join("; "));
        let bounds = self.autoscaler.bounds();
        let replicas = self
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                id: r.id.clone(),
                state: r.state,
                healthy: r.serving() && !r.stopping,
                ejected: r.ejection.is_some(),
                ejection: r.ejection.as_ref().map(|e| {
                    format!(
                        "ejected for {}: {}; back in {:.0} s",
                        ebb_core::scaling::metrics::duration(e.length()),
                        e.reason,
                        e.remaining(self.now()).as_secs_f64().ceil()
                    )
                }),
                health: r.health.state().to_string(),
                last_probe: r.last_probe.clone(),
                pid: r.running.as_ref().and_then(|x| x.pid),
                port: r.running.as_ref().map(|x| x.addr.port()),
                version: r.version,
                in_flight: 0,
                requests: 0,
                cpu: r.cpu_percent.map(|c| (c * 10.0).round() / 10.0),
                protected: r.protected,
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
            deploy: self.deploy_status(),
            last_deploy: self.last_deploy.clone(),
            replicas,
            saturation: self.last_demand.clone(),
            host: self.last_host.clone(),
        };
        let backends = self.replicas.iter().filter_map(|r| r.backend.clone().map(|b| (r.id.clone(), b))).collect();
        let running = self.replicas.iter().filter(|r| !r.stopping).filter_map(|r| r.running.clone()).collect();
        Snapshot { service, backends, running }
    }
}

/// Six hex digits: short enough to type in `ebb logs`, unique enough per run.
fn random_suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// A user's reason, as it follows an event's own text: `: reason`.
fn because(reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => format!(": {reason}"),
        None => String::new(),
    }
}

/// How a replica that ebb stopped ended, in the words of a stop: SIGTERM is
/// what ebb sent, so dying of it is the expected end (a `sh -c` wrapper
/// does); SIGKILL means it outlived `stop_timeout`.
fn stop_detail(reason: &ExitReason, stop_timeout: Duration) -> String {
    match reason {
        ExitReason::Signaled(15) => "ended by SIGTERM, as asked".to_string(),
        ExitReason::Signaled(9) => format!(
            "killed with SIGKILL: still running {} after SIGTERM (stop_timeout)",
            humantime::format_duration(stop_timeout)
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_says_how_the_replica_ended_in_the_words_of_a_stop() {
        let timeout = Duration::from_secs(10);
        assert_eq!(stop_detail(&ExitReason::Signaled(15), timeout), "ended by SIGTERM, as asked");
        assert_eq!(
            stop_detail(&ExitReason::Signaled(9), timeout),
            "killed with SIGKILL: still running 10s after SIGTERM (stop_timeout)"
        );
        assert_eq!(stop_detail(&ExitReason::Exited(0), timeout), "exited with status 0");
        assert_eq!(stop_detail(&ExitReason::Signaled(6), timeout), "killed by signal 6 (SIGABRT)");
    }
}
