//! The deploy bridge: the specs of every version this run has known, and
//! the running `Deploy` planner (pure, in `ebb_core::deploy`) fed the fleet
//! as it is and carried out here. While a deploy runs, it alone launches
//! and retires.

use std::collections::BTreeMap;

use ebb_core::config::{CommandSpec, ContainerOptions, ServiceConfig};
use ebb_core::deploy::{Deploy, DeployAction, DeployOutcome, ReplicaPhase, ReplicaView};

use super::command::{DeployRequest, LifecycleError};
use super::lifecycle::Fleet;
use super::replicas::ReplicaSet;
use super::{restart, Shared};
use crate::driver::DriverError;
use crate::events::{EventKind, NewEvent};
use crate::status::DeployStatus;
use ebb_core::fleet::Routes;

/// What a version runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct VersionSpec {
    #[serde(with = "restart::command_serde")]
    pub(super) command: CommandSpec,
    pub(super) env: BTreeMap<String, String>,
    /// The image a container replica of this version runs (`None`: the
    /// process driver).
    #[serde(default)]
    pub(super) image: Option<String>,
    /// A container's mounts, networks, user, labels and placement (absent
    /// from specs recorded before they existed: none).
    #[serde(default)]
    pub(super) options: ContainerOptions,
}

impl VersionSpec {
    /// What a service's config says to run now.
    pub(super) fn from_config(config: &ServiceConfig) -> Self {
        VersionSpec {
            command: config.command.clone(),
            env: config.env.clone(),
            image: config.container.as_ref().map(|c| c.image.clone()),
            options: config.container.as_ref().map(|c| c.options.clone()).unwrap_or_default(),
        }
    }
}

/// The versions of one service and its deploys.
pub(super) struct Deployer {
    /// The version new replicas run outside a deploy. This, the specs and
    /// the last deploy are set from the state store at start.
    pub(super) version: u64,
    /// The spec of every version this run has known (v1 = the config's).
    pub(super) specs: BTreeMap<u64, VersionSpec>,
    /// The running deploy; while set, it alone launches and retires.
    running: Option<Deploy>,
    /// How the last deploy ended, for status.
    pub(super) last: Option<DeployStatus>,
    /// Blue-green: only this version is routable.
    routes_only: Option<u64>,
    /// Last `Wait` reason recorded, so a wait is an event once.
    wait: Option<String>,
    /// While a deploy runs: why its replicas failed (id, what happened), so
    /// the rollback reason says why, not only who. At most a few.
    failures: Vec<(String, String)>,
}

impl Deployer {
    pub(super) fn new(config: &ServiceConfig) -> Self {
        Deployer {
            version: 1,
            specs: BTreeMap::from([(1, VersionSpec::from_config(config))]),
            running: None,
            last: None,
            routes_only: None,
            wait: None,
            failures: Vec::new(),
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Which versions take traffic now.
    pub(super) fn routes(&self) -> Routes {
        Routes { current_version: self.version, only: self.routes_only, deploying: self.running.is_some() }
    }

    /// The spec `version` runs (the current one's if it is unknown).
    pub(super) fn spec_for(&self, version: u64) -> &VersionSpec {
        self.specs.get(&version).or_else(|| self.specs.get(&self.version)).expect("v1 always exists")
    }

    /// A replica failed while a deploy runs: keep why, for its rollback reason.
    pub(super) fn note_failure(&mut self, id: &str, cause: &str) {
        if self.running.is_some() && self.failures.len() < 8 {
            self.failures.push((id.to_string(), cause.to_string()));
        }
    }

    /// A replica could not even start: a running deploy rolls back.
    pub(super) fn on_start_failed(&mut self, ctx: &Shared, id: &str, error: &DriverError) {
        let now = ctx.now();
        if let Some(deploy) = self.running.as_mut() {
            let reason = format!("replica {id} of the new version failed to start: {error}");
            if deploy.rollback(now, reason.clone()).is_ok() {
                ctx.record(NewEvent::new(&ctx.name, EventKind::DeployRollingBack, format!("rolling back: {reason}")));
            }
        }
    }

    pub(super) fn start(
        &mut self,
        ctx: &Shared,
        fleet: &mut Fleet,
        desired: u32,
        request: DeployRequest,
    ) -> Result<DeployStatus, LifecycleError> {
        if let Some(deploy) = &self.running {
            return Err(refused(
                ctx,
                format!(
                    "a deploy is already running (v{} -> v{}); wait for it or `ebb rollback {}`",
                    deploy.from_version(),
                    deploy.to_version(),
                    ctx.name
                ),
            ));
        }
        // Already a `Strategy`: an unknown name is refused where the JSON is read.
        let config = match request.strategy {
            None => ctx.config.deploy.clone(),
            Some(strategy) => ctx.config.deploy.clone().with_strategy(strategy),
        };
        let current = self.specs[&self.version].clone();
        let mut next = current.clone();
        if let Some(spec) = request.from_config {
            next = VersionSpec { command: spec.command, env: spec.env, image: spec.image, options: *spec.options };
            if next == current {
                return Err(refused(ctx, format!(
                    "nothing to deploy: v{} already runs what the config file says for {}; edit it, or pass --command, --image or --env",
                    self.version, ctx.name
                )));
            }
        }
        if let Some(command) = request.command {
            if command.trim().is_empty() {
                return Err(invalid(ctx, "the new command is empty"));
            }
            next.command = CommandSpec::Shell(command);
        }
        if let Some(image) = request.image {
            if next.image.is_none() {
                return Err(refused(
                    ctx,
                    "--image applies to services with driver = \"docker\" or \"swarm\"; this one runs local processes",
                ));
            }
            if image.trim().is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(refused(ctx, format!("image {image:?} is not an image reference, e.g. ebb-demo:v2")));
            }
            next.image = Some(image);
        }
        for (key, value) in request.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(invalid(ctx, format!("env {key:?} is not a valid variable; write NAME=value")));
            }
            if key == "PORT" || key.starts_with("EBB_") {
                return Err(invalid(ctx, format!("env {key} is set by ebb for each replica; use another name")));
            }
            next.env.insert(key, value);
        }
        if next == current {
            return Err(refused(
                ctx,
                format!(
                    "nothing to deploy: v{} already runs this command, image and environment; pass --command, --image or --env",
                    self.version
                ),
            ));
        }
        let from = self.version;
        let to = self.specs.keys().next_back().copied().unwrap_or(from) + 1;
        self.specs.insert(to, next);
        let deploy = Deploy::start(&config, from, to, ctx.now());
        ctx.record(NewEvent::new(
            &ctx.name,
            EventKind::DeployStarted,
            format!(
                "deploy v{from} -> v{to} ({}) started{}",
                config.strategy.as_str(),
                because(request.reason.as_deref())
            ),
        ));
        self.begin(deploy);
        self.step(ctx, fleet, desired);
        // A deploy with nothing to replace (the service idle at zero)
        // finishes in its first step.
        Ok(self.status(&fleet.replicas).or_else(|| self.last.clone()).expect("a deploy ran"))
    }

    pub(super) fn rollback(
        &mut self,
        ctx: &Shared,
        fleet: &mut Fleet,
        desired: u32,
        reason: Option<&str>,
    ) -> Result<DeployStatus, LifecycleError> {
        let now = ctx.now();
        if let Some(deploy) = &mut self.running {
            deploy
                .rollback(now, "ebb rollback")
                .map_err(|e| LifecycleError::Refused { service: ctx.name.clone(), message: e.message })?;
            ctx.record(NewEvent::new(
                &ctx.name,
                EventKind::DeployRollingBack,
                format!("rolling back: ebb rollback{}", because(reason)),
            ));
            self.step(ctx, fleet, desired);
            return Ok(self.status(&fleet.replicas).or_else(|| self.last.clone()).expect("a deploy ran"));
        }
        // No deploy running: deploy the version before this one again.
        let Some(previous) = self.specs.range(..self.version).next_back().map(|(v, spec)| (*v, spec.clone())) else {
            return Err(refused(
                ctx,
                format!("nothing to roll back to: no deploy is running and no version came before v{}", self.version),
            ));
        };
        let from = self.version;
        let to = self.specs.keys().next_back().copied().unwrap_or(from) + 1;
        self.specs.insert(to, previous.1);
        let deploy = Deploy::start(&ctx.config.deploy, from, to, ctx.now());
        ctx.record(NewEvent::new(
            &ctx.name,
            EventKind::DeployStarted,
            format!("rollback: deploy v{from} -> v{to} with the spec of v{}{}", previous.0, because(reason)),
        ));
        self.begin(deploy);
        self.step(ctx, fleet, desired);
        Ok(self.status(&fleet.replicas).or_else(|| self.last.clone()).expect("a deploy ran"))
    }

    fn begin(&mut self, deploy: Deploy) {
        self.running = Some(deploy);
        self.wait = None;
        self.failures.clear();
    }

    /// The fleet as the deploy planner sees it: a replica under an
    /// interruption notice is already leaving (its replacement counts).
    fn views(replicas: &ReplicaSet) -> Vec<ReplicaView> {
        replicas
            .facts()
            .iter()
            // The warm pool is beside the fleet: a deploy replaces its
            // members through the fleet planner, not step by step.
            .filter(|f| !f.pooled)
            .map(|f| {
                let state =
                    if f.interrupted_until.is_some() && f.is_active() { ReplicaPhase::Leaving } else { f.phase };
                ReplicaView { protected: f.protected, ..ReplicaView::new(f.id, f.version, state, f.started) }
            })
            .collect()
    }

    /// The running deploy's status, if one runs.
    pub(super) fn status(&self, replicas: &ReplicaSet) -> Option<DeployStatus> {
        let deploy = self.running.as_ref()?;
        let mut status = describe(deploy, &Self::views(replicas));
        status.rollback_reason = status.rollback_reason.map(|r| self.with_failure_causes(r));
        Some(status)
    }

    /// The planner names the replica that failed (`web-7 (v4) failed during
    /// the deploy`); add what happened to it and where its output is.
    fn with_failure_causes(&self, mut reason: String) -> String {
        for (id, cause) in &self.failures {
            if reason.contains(&format!("{id} (v")) && !reason.contains(cause.as_str()) {
                reason.push_str(&format!("; {id} {cause} (its output: `ebb logs {id}`)"));
            }
        }
        reason
    }

    /// Lets the deploy planner act on the fleet as it is now.
    pub(super) fn step(&mut self, ctx: &Shared, fleet: &mut Fleet, desired: u32) {
        if self.running.is_none() {
            return;
        }
        let views = Self::views(&fleet.replicas);
        let now = ctx.now();
        let Some(deploy) = self.running.as_mut() else { return };
        let actions = deploy.step(now, desired, &views);
        for action in actions {
            match action {
                DeployAction::Launch { version, count, reason } => {
                    ctx.record(NewEvent::new(&ctx.name, EventKind::DeployStep, reason));
                    for _ in 0..count {
                        fleet.launch(ctx, version, self.spec_for(version), false);
                    }
                }
                DeployAction::Retire { id, reason } => fleet.retire(ctx, self.routes(), &id, &reason),
                DeployAction::Route { only_version, reason } => {
                    self.routes_only = only_version;
                    ctx.record(NewEvent::new(&ctx.name, EventKind::DeployStep, reason));
                    fleet.published.invalidate(); // force a republish with the new filter
                }
                DeployAction::Wait { reason, .. } => {
                    if self.wait.as_deref() != Some(reason.as_str()) {
                        ctx.record(NewEvent::new(&ctx.name, EventKind::DeployStep, reason.clone()));
                        self.wait = Some(reason);
                    }
                }
                DeployAction::Finish { outcome, reason } => {
                    let deploy = self.running.take().expect("finishing a running deploy");
                    let mut status = describe(&deploy, &views);
                    status.rollback_reason = status.rollback_reason.map(|r| self.with_failure_causes(r));
                    let reason = self.with_failure_causes(reason);
                    self.failures.clear();
                    self.version = deploy.target_version();
                    self.routes_only = None;
                    fleet.published.invalidate();
                    let kind = match outcome {
                        DeployOutcome::Succeeded => EventKind::DeploySucceeded,
                        DeployOutcome::RolledBack { .. } => EventKind::DeployRolledBack,
                    };
                    ctx.record(NewEvent::new(&ctx.name, kind, reason));
                    self.last = Some(status);
                    return;
                }
            }
        }
    }
}

fn describe(deploy: &Deploy, views: &[ReplicaView]) -> DeployStatus {
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

fn refused(ctx: &Shared, message: impl Into<String>) -> LifecycleError {
    LifecycleError::Refused { service: ctx.name.clone(), message: message.into() }
}

fn invalid(ctx: &Shared, message: impl Into<String>) -> LifecycleError {
    LifecycleError::Invalid { service: ctx.name.clone(), message: message.into() }
}

/// A user's reason, as it follows an event's own text: `: reason`.
fn because(reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => format!(": {reason}"),
        None => String::new(),
    }
}
