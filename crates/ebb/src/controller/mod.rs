//! The controller: one task per service, the executor of the core's
//! decisions.
//!
//! Each service's task owns that service's replicas and runs a loop over a
//! closed enum of [`Input`]s (commands, probe results, exits, finished starts
//! and stops, ticks). After every input it reconciles: it tells the fleet
//! planner (`ebb_core::fleet`) the facts about each replica and carries out
//! the actions it returns (or the deploy planner's, while a deploy runs),
//! then publishes the routable set to the balancer and a status snapshot to
//! the admin API. No rule about what happens to a replica is decided here.
//!
//! **Architecture invariant:** the controller never blocks on a driver call.
//! Starts, drains and stops run as tasks that report back through the inbox,
//! so probes and commands are handled while a slow replica boots.
//!
//! The controller is a composition of parts, each owning its state, that
//! share the service's `Shared` context (`context.rs`):
//! - `input.rs`: the [`Input`]s and the background readers (usage, metric source);
//! - `replicas.rs`: each replica as tracked, and the set of them with their tokens;
//! - `lifecycle.rs`: launching, watching and retiring replicas (the driver's side);
//! - `health.rs`: probe results into health flips; `probe.rs`: one check;
//! - `deploy.rs`: versions and the running deploy planner;
//! - `sampler.rs`: the once-a-second sample and the autoscaler;
//! - `outlier.rs`: passive outlier detection;
//! - `publish.rs`: the routable set and the status snapshot;
//! - `restart.rs` and `adopt.rs`: the state store, and adoption at start;
//! - `leave.rs`: exiting without stopping replicas (SIGTERM, a takeover);
//! - `handle.rs`: `spawn_service` and the handle the rest of ebb holds.

mod adopt;
mod command;
mod context;
mod deploy;
mod forecaster;
mod handle;
mod health;
mod idle;
mod input;
mod leave;
mod lifecycle;
pub mod metric_source;
mod outlier;
pub mod probe;
mod publish;
mod replicas;
mod restart;
mod sampler;

pub use command::{
    ConfigSpec, ControlCommand, DeployRequest, LifecycleError, Reconfigured, ReplicaOutcome, ScaleOutcome,
};
use context::Shared;
pub use context::{RestoredService, ServiceContext};
pub use handle::{spawn_service, ServiceHandle};
use input::Input;
pub use leave::leave_fleet_on_shutdown;
use publish::Snapshot;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use ebb_core::fleet::{self, CrashLoop, FleetAction, FleetInput};
use ebb_core::replicas;

use crate::driver::DriverError;
use crate::events::{EventKind, NewEvent};

/// How often the loop wakes without input (backoff expiry, status refresh).
const TICK: Duration = Duration::from_millis(250);
/// Metrics resolution: one sample, and one scaling decision, per second.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One service's controller: its parts, each owning its own state.
struct ServiceController {
    ctx: Shared,
    /// Desired capacity: set by `ebb scale` and the autoscaler, restored at
    /// start, 0 at shutdown.
    desired: u32,
    /// The replicas, and launching, watching and retiring them.
    fleet: lifecycle::Fleet,
    /// Crash-loop backoff (the core's): holds starts after failures in a row.
    crash_loop: CrashLoop,
    /// Probe results into health flips.
    health: health::HealthChecks,
    /// The versions, and the running deploy (it alone launches and
    /// retires while it runs).
    deploy: deploy::Deployer,
    /// Once a second: the sample, the autoscaler's decision.
    sampler: sampler::Sampler,
    /// Ejections from the balancer's per-replica counts.
    outliers: outlier::Outliers,
    /// The state store: restored at start, changes saved after each input.
    restorer: restart::Restorer,
    /// Answers to commands, sent once the snapshot shows their effect.
    replies: Vec<Box<dyn FnOnce() + Send>>,
    /// Scale to zero: the core's idle rule, carried out.
    idle: idle::Idling,
    /// The external metric's source, watched by its reader
    /// (`input::read_metric_source`).
    metric_source: watch::Sender<Option<ebb_core::config::MetricSource>>,
    /// The predictive policies in force, for the forecaster task.
    predictive: watch::Sender<Vec<ebb_core::scaling::PredictivePolicy>>,
}

impl ServiceController {
    fn new(ctx: ServiceContext, inbox: mpsc::UnboundedSender<Input>) -> Self {
        let config = ctx.config;
        // The zero of the core's clock, for every part.
        let origin = Instant::now();
        ctx.proxy.set_idle(config.idle.clone());
        let mut controller = Self {
            desired: config.replicas.desired,
            fleet: lifecycle::Fleet::new(
                origin,
                ctx.driver,
                inbox,
                ctx.state_dir,
                ctx.admin_url,
                config.health.clone(),
            ),
            crash_loop: CrashLoop::default(),
            health: health::HealthChecks::default(),
            deploy: deploy::Deployer::new(&config),
            sampler: sampler::Sampler::new(&config, ctx.host),
            outliers: outlier::Outliers::new(&config),
            restorer: restart::Restorer::new(ctx.store),
            replies: Vec::new(),
            metric_source: watch::Sender::new(config.metric_source.clone()),
            predictive: watch::Sender::new(config.scaling.predictive.clone()),
            idle: idle::Idling::new_at(origin, &config, &ctx.proxy),
            ctx: Shared { name: config.name.clone(), config, proxy: ctx.proxy, events: ctx.events, origin },
        };
        let bounds = controller.sampler.bounds();
        controller.restorer.restore(
            &controller.ctx,
            ctx.restored,
            bounds,
            &mut controller.desired,
            &mut controller.deploy,
        );
        controller
    }

    /// Adopts what an earlier run left, then for each input: handle it
    /// (the parts update their state and act), reconcile, save what
    /// changed, publish the snapshot. Shuts down when told to.
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        snapshot: watch::Sender<Snapshot>,
        shutdown: CancellationToken,
    ) {
        let adopted = self.restorer.adopt(&self.ctx, &mut self.fleet, self.deploy.routes()).await;
        let start = match adopted {
            0 => "starting".to_string(),
            n => format!("resuming with {} adopted from the previous run; keeping", replicas(n as u32)),
        };
        self.ctx.record(NewEvent::new(
            &self.ctx.name,
            EventKind::FleetStarting,
            format!(
                "{start} {} (min {}, max {}) with the {} driver",
                replicas(self.desired),
                self.ctx.config.replicas.bounds.min,
                self.ctx.config.replicas.bounds.max,
                self.fleet.driver_name()
            ),
        ));
        self.restorer.start_saving();
        self.reconcile();
        self.persist();
        snapshot.send_replace(self.snapshot());
        self.restorer.done().cancel();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let proxy = self.ctx.proxy.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                _ = proxy.outlier_suspect.notified() => self.look_for_outliers(),
                // A request is held: the reconcile below wakes the service.
                _ = proxy.hold.wake.notified() => {}
                _ = tick.tick() => {}
            }
            self.reconcile();
            self.persist();
            snapshot.send_replace(self.snapshot());
            // Answered only now, so that a client that asks for the status
            // after its answer sees what its command did.
            for reply in self.replies.drain(..) {
                reply();
            }
        }
        match leave::leaving() {
            true => self.leave(&mut rx, &snapshot).await,
            false => self.shut_down(&mut rx, &snapshot).await,
        }
    }

    /// Drains and stops every replica, handling inputs until all are gone.
    async fn shut_down(&mut self, rx: &mut mpsc::UnboundedReceiver<Input>, snapshot: &watch::Sender<Snapshot>) {
        self.ctx.record(NewEvent::new(
            &self.ctx.name,
            EventKind::FleetStopping,
            format!("stopping all {}", replicas(self.fleet.replicas.len() as u32)),
        ));
        self.desired = 0;
        self.ctx.proxy.set_routable(Vec::new());
        let ids: Vec<String> =
            self.fleet.replicas.iter().filter(|r| r.running.is_some()).map(|r| r.id.clone()).collect();
        for id in ids {
            self.retire(&id, "ebb is shutting down");
        }
        snapshot.send_replace(self.snapshot());
        while !self.fleet.replicas.is_empty() {
            let Some(input) = rx.recv().await else { break };
            let service = self.ctx.name.clone();
            match input {
                Input::Started { replica, result: Ok(running) } => {
                    // Launched after shutdown began: stop it straight away.
                    if let Some(r) = self.fleet.replicas.get_mut(&replica) {
                        r.running = Some(running);
                    }
                    self.retire(&replica, "ebb is shutting down");
                }
                Input::Started { replica, result: Err(_) } => self.fleet.replicas.forget(&replica),
                Input::Stopped { .. } => {
                    self.handle(input);
                    self.restorer.persist_replicas(&self.ctx, &self.fleet.replicas);
                }
                Input::Command(command) => input::refuse_while_shutting_down(command, service),
                Input::Probe { .. }
                | Input::Exited { .. }
                | Input::Usage { .. }
                | Input::External { .. }
                | Input::FreezeFailed { .. }
                | Input::PoolFrozen { .. }
                | Input::Forecast { .. }
                | Input::WorkerReady { .. } => {}
            }
            snapshot.send_replace(self.snapshot());
        }
        self.fleet.wait_for_tasks().await;
    }

    fn handle(&mut self, input: Input) {
        let ctx = &self.ctx;
        match input {
            Input::Command(ControlCommand::SetDesired { desired, reason, reply }) => {
                let outcome = self.sampler.set_desired(ctx, &mut self.desired, desired, &reason);
                // `ebb scale web 0` with [idle]: idle now, not after `after`.
                if self.desired == 0 {
                    self.idle.scaled_to_zero(ctx);
                }
                self.persist();
                self.answer(reply, outcome);
            }
            Input::Command(ControlCommand::Protect { replica, protected, reply }) => {
                let outcome = self.fleet.replicas.protect(ctx, &replica, protected);
                self.persist();
                self.answer(reply, outcome);
            }
            Input::Command(ControlCommand::Interrupt { replica, notice, reply }) => {
                let outcome = self.fleet.replicas.interrupt(ctx, &replica, notice);
                self.answer(reply, outcome);
            }
            Input::Command(ControlCommand::Deploy { request, reply }) => {
                // While idle in stop mode this is 0: the deploy boots
                // nothing, and the next wake runs the new version.
                let desired = self.idle.desired(ctx, self.desired);
                let outcome = self.deploy.start(ctx, &mut self.fleet, desired, request);
                self.persist();
                self.answer(reply, outcome);
            }
            Input::Command(ControlCommand::Rollback { reason, reply }) => {
                let desired = self.idle.desired(ctx, self.desired);
                let outcome = self.deploy.rollback(ctx, &mut self.fleet, desired, reason.as_deref());
                self.persist();
                self.answer(reply, outcome);
            }
            Input::Command(ControlCommand::Reconfigure { config, changes, reply }) => {
                let outcome = self.reconfigure(*config, &changes);
                self.persist();
                self.answer(reply, outcome);
            }
            Input::Started { replica, result } => {
                if let Some(error) = self.fleet.on_started(ctx, self.deploy.routes(), &replica, result) {
                    self.on_start_failed(&replica, error);
                }
            }
            Input::Probe { replica, outcome } => {
                match self.health.on_probe(ctx, &mut self.fleet.replicas, &replica, outcome) {
                    health::Verdict::InService => {
                        self.crash_loop.reached_service();
                        // Start to first in service: predictive policies
                        // launch this far ahead.
                        if let Some(r) = self.fleet.replicas.get(&replica) {
                            if let Some(since) = r.in_service_since {
                                self.sampler.note_boot(since.saturating_duration_since(r.started_at));
                            }
                        }
                    }
                    health::Verdict::Failed(failure) => self.replace(failure, "failed its health checks"),
                    health::Verdict::Unchanged => {}
                }
            }
            Input::Exited { replica, reason } => {
                if let Some(failure) = self.fleet.on_exited(ctx, &replica, reason) {
                    self.replace(failure, "it exited");
                }
            }
            Input::Usage { at, usage } => {
                self.look_for_outliers();
                let deploying = self.deploy.is_running();
                let point = self.sampler.on_usage(
                    &self.ctx,
                    &mut self.fleet.replicas,
                    &mut self.desired,
                    deploying,
                    at,
                    &usage,
                );
                self.restorer.push_history(&self.ctx, point);
            }
            Input::External { at, reading } => self.sampler.on_external(ctx, at, reading),
            Input::Forecast { metric, state } => self.sampler.set_forecast(ctx, metric, state),
            Input::WorkerReady { replica } => {
                if self.fleet.on_worker_ready(ctx, &replica) {
                    self.crash_loop.reached_service();
                }
            }
            Input::Stopped { replica, result } => self.fleet.on_stopped(ctx, &replica, result),
            Input::PoolFrozen { replica, suspended, took } => self.on_pool_frozen(&replica, suspended, took),
            Input::FreezeFailed { replica, error } => {
                self.ctx.record(
                    NewEvent::new(&self.ctx.name, EventKind::ReplicaUnhealthy, format!("{error}; replacing it"))
                        .replica(&replica),
                );
                self.retire(&replica, "it could not be suspended or resumed");
            }
        }
    }

    /// `ebb apply`: every part takes the new config in place; a new
    /// command, env or image is a deploy with the configured strategy. A
    /// spec change while a deploy runs is refused before anything changes.
    fn reconfigure(
        &mut self,
        config: ebb_core::config::ServiceConfig,
        changes: &[String],
    ) -> Result<Reconfigured, LifecycleError> {
        let spec = deploy::VersionSpec::from_config(&config);
        let new_spec = *self.deploy.spec_for(self.deploy.version) != spec;
        if new_spec && self.deploy.is_running() {
            return Err(LifecycleError::Refused {
                service: self.ctx.name.clone(),
                message: "a deploy is running; wait for it (or `ebb rollback`) and apply again".into(),
            });
        }
        let file_desired_before = self.ctx.config.replicas.desired;
        self.ctx.config = config;
        let config = &self.ctx.config;
        self.sampler.reconfigure(config);
        self.outliers.reconfigure(config);
        self.fleet.reconfigure_health(&config.health);
        self.ctx.proxy.reconfigure(config.balance, config.proxy.clone());
        self.ctx.proxy.set_idle(config.idle.clone());
        self.idle.reconfigure(&self.ctx);
        self.metric_source.send_replace(config.metric_source.clone());
        if *self.predictive.borrow() != config.scaling.predictive {
            self.predictive.send_replace(config.scaling.predictive.clone());
        }
        self.ctx.record(NewEvent::new(
            &self.ctx.name,
            EventKind::ConfigApplied,
            format!("ebb apply: {}", changes.join("; ")),
        ));
        // The file's desired wins when the file changed it; otherwise the
        // running count stays, within the new bounds.
        let wanted = match config.replicas.desired != file_desired_before {
            true => config.replicas.desired,
            false => self.desired,
        };
        let desired = self.sampler.bounds().clamp(wanted);
        if desired != self.desired {
            self.ctx.record(
                NewEvent::new(
                    &self.ctx.name,
                    EventKind::Scaled,
                    format!(
                        "ebb apply: desired {} -> {desired} (replicas min {}, max {}, desired {} in the file)",
                        self.desired, config.replicas.bounds.min, config.replicas.bounds.max, config.replicas.desired
                    ),
                )
                .change(self.desired, desired),
            );
            self.desired = desired;
        }
        let deploy = match new_spec {
            true => {
                let request = DeployRequest {
                    from_config: Some(ConfigSpec {
                        command: spec.command,
                        env: spec.env,
                        image: spec.image,
                        options: Box::new(spec.options),
                    }),
                    reason: Some("ebb apply".into()),
                    ..DeployRequest::default()
                };
                let desired = self.idle.desired(&self.ctx, self.desired);
                Some(self.deploy.start(&self.ctx, &mut self.fleet, desired, request)?)
            }
            false => None,
        };
        Ok(Reconfigured { desired: self.desired, deploy })
    }

    /// Keeps a command's answer until the loop has published the status
    /// that includes its effect.
    fn answer<T: Send + 'static>(&mut self, reply: tokio::sync::oneshot::Sender<T>, outcome: T) {
        self.replies.push(Box::new(move || {
            let _ = reply.send(outcome);
        }));
    }

    /// A replica could not be started: a running deploy rolls back, and it
    /// counts toward crash-loop backoff.
    fn on_start_failed(&mut self, id: &str, error: DriverError) {
        self.deploy.on_start_failed(&self.ctx, id, &error);
        self.ctx.record(
            NewEvent::new(&self.ctx.name, EventKind::ReplicaStartFailed, format!("replica failed to start: {error}"))
                .replica(id),
        );
        self.count_failure();
        self.idle.replica_failed(&self.ctx, id, &format!("failed to start: {error}"));
    }

    /// A replica failed before ever serving: crash-loop backoff counts it.
    fn count_failure(&mut self) {
        if let Some(backoff) = self.crash_loop.failed_before_service(self.ctx.now()) {
            self.ctx.record(NewEvent::new(&self.ctx.name, EventKind::Backoff, backoff.to_string()));
        }
    }

    /// A replica failed: the deploy learns why, backoff counts it if it
    /// never served, and it leaves (the reconcile replaces it).
    fn replace(&mut self, failure: lifecycle::Failure, why: &str) {
        self.deploy.note_failure(&failure.id, &failure.cause);
        if failure.never_served {
            self.count_failure();
            // A pool member is not what a wake waits for.
            if !self.fleet.replicas.get(&failure.id).is_some_and(|r| r.pooled) {
                self.idle.replica_failed(&self.ctx, &failure.id, &failure.cause);
            }
        }
        self.retire(&failure.id, why);
    }

    /// Asks the fleet planner what reaching desired takes now, and does
    /// it; while a deploy runs, its planner launches and retires instead.
    fn reconcile(&mut self) {
        self.idle.step(&self.ctx);
        // Without [idle] (or after `ebb apply` removed it) nothing is frozen.
        let frozen = self.idle.frozen(&self.ctx);
        self.fleet.freeze(&self.ctx, self.deploy.routes(), frozen);
        let facts = self.fleet.replicas.facts();
        let input = FleetInput {
            now: self.ctx.now(),
            desired: self.idle.desired(&self.ctx, self.desired),
            current_version: self.deploy.version,
            deploying: self.deploy.is_running(),
            replicas: &facts,
            warm_pool: self.ctx.config.warm_pool.map(|p| p.size).unwrap_or(0),
        };
        let actions = fleet::plan(&input, &self.crash_loop);
        drop(facts);
        for action in actions {
            match action {
                FleetAction::Launch { count, .. } => {
                    let version = self.deploy.version;
                    for _ in 0..count {
                        self.fleet.launch(&self.ctx, version, self.deploy.spec_for(version), false);
                    }
                }
                FleetAction::FillPool { count } => {
                    let version = self.deploy.version;
                    for _ in 0..count {
                        self.fleet.launch(&self.ctx, version, self.deploy.spec_for(version), true);
                    }
                }
                FleetAction::SuspendPooled { id } => self.fleet.suspend_pooled(&id),
                FleetAction::TakeFromPool { id } => self.take_from_pool(&id),
                FleetAction::Retire { id, reason } => self.retire(&id, &reason.to_string()),
                // The backoff event said it when it began; status shows it.
                FleetAction::HoldStarts { .. } => {}
            }
        }
        if self.deploy.is_running() {
            let desired = self.idle.desired(&self.ctx, self.desired);
            self.deploy.step(&self.ctx, &mut self.fleet, desired);
        }
        self.fleet.publish(&self.ctx, self.deploy.routes());
    }

    /// A scale-out takes a warm pool member; the event says how long its
    /// resume took once the driver is done (`Input::PoolFrozen`).
    fn take_from_pool(&mut self, id: &str) {
        let resuming = self.fleet.take_from_pool(&self.ctx, self.deploy.routes(), id);
        if !resuming {
            let age = self.fleet.replicas.get(id).map(|r| r.started_at.elapsed().as_secs_f64()).unwrap_or(0.0);
            self.ctx.record(
                NewEvent::new(
                    &self.ctx.name,
                    EventKind::WarmReplicaUsed,
                    format!(
                        "taken from the warm pool for desired {} while still starting ({age:.1} s since its boot began)",
                        self.idle.desired(&self.ctx, self.desired)
                    ),
                )
                .replica(id),
            );
        }
    }

    /// The driver suspended a pool member, or resumed one a scale-out took.
    fn on_pool_frozen(&mut self, id: &str, suspended: bool, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let pid = self.fleet.replicas.get(id).and_then(|r| r.running.as_ref()?.pid);
        let pid = pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        let reason = match suspended {
            true => {
                let size = self.ctx.config.warm_pool.map(|p| p.size).unwrap_or(0);
                let ready = self.fleet.replicas.iter().filter(|r| r.pooled && r.suspended && !r.stopping).count();
                format!("suspended in the warm pool after passing its health checks ({ready} of {size} ready; the suspend took {ms:.1} ms{pid})")
            }
            false => format!(
                "taken from the warm pool for desired {}: resumed in {ms:.1} ms instead of a boot, in the rotation{pid}",
                self.idle.desired(&self.ctx, self.desired)
            ),
        };
        let kind = if suspended { EventKind::WarmPoolFilled } else { EventKind::WarmReplicaUsed };
        tracing::info!(service = %self.ctx.name, replica = %id, "{reason}");
        self.ctx.record(NewEvent::new(&self.ctx.name, kind, reason).replica(id));
    }

    fn retire(&mut self, id: &str, why: &str) {
        self.fleet.retire(&self.ctx, self.deploy.routes(), id, why);
    }

    fn look_for_outliers(&mut self) {
        self.outliers.look(&self.ctx, &mut self.fleet, self.deploy.routes());
    }

    fn persist(&mut self) {
        self.restorer.persist(&self.ctx, self.desired, &self.deploy, &self.fleet.replicas);
    }

    fn snapshot(&self) -> Snapshot {
        let idle = self.idle.describe(&self.ctx, &self.fleet);
        publish::snapshot(
            &self.ctx,
            idle,
            self.idle.desired(&self.ctx, self.desired),
            &self.fleet,
            &self.crash_loop,
            &self.deploy,
            &self.sampler,
        )
    }
}
