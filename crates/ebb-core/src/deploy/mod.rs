//! The deploy planner: the steps of a rolling or blue-green deploy, as data.
//!
//! **Architecture invariant:** pure code, like the autoscaler. No I/O, no
//! threads, no clock: `now` and a view of the fleet are arguments, and the
//! answer is a list of [`DeployAction`]s, each with the numbers that decided
//! it. The live controller carries the actions out; a test or the simulator
//! applies them to a modelled fleet in virtual time. Both get the same steps
//! from the same inputs.
//!
//! ```text
//!   ebb deploy web:  let mut d = Deploy::start(&config.deploy, v1, v2, now);
//!   on every change (replica started / in service / failed / stopped, a tick, ebb scale):
//!                    for action in d.step(now, desired, &views) {
//!                        Launch → start `count` replicas of `version`   (they appear as Starting)
//!                        Retire → leave the rotation, drain, stop        (it appears as Leaving)
//!                        Route  → only replicas of `only_version` are routable (None: all)
//!                        Wait   → nothing to do; show it in status (record it when its reason changes)
//!                        Finish → the deploy is over: drop it; `Deploy::current_version` is the version now
//!                        record action.reason() as an event
//!                    }
//!   ebb rollback web: d.rollback(now, "requested by ebb rollback")?; then step at once
//!   ebb status:       d.progress(&views)  (Display: "rolling v1 -> v2, rolling: 2/4 new healthy, 1 old draining")
//! ```
//!
//! # The rules
//!
//! **Rolling** (ECS / Kubernetes rolling update): replicas of the new version
//! are launched while replicas of other versions are retired, within two
//! limits:
//!
//! - *surge*: at most `desired + max_surge` replicas are starting or in
//!   service at once (protected old replicas are not counted: they are not
//!   the deploy's to move);
//! - *availability*: a replica that serves (in service) is retired only if
//!   in-service capacity stays at least `desired - max_unavailable`. With the
//!   defaults (1 / 0) the fleet never has fewer than `desired` replicas in
//!   service: one new replica starts, comes into service, then one old one
//!   leaves.
//!
//! Old replicas that are still starting serve nobody and are retired at
//! once; in-service ones go oldest first. A **protected** replica is never
//! retired: when only protected old replicas are left, the deploy waits up to
//! `protected_wait` for them to be released (a [`DeployAction::Wait`] says
//! which, and until when), then finishes without them. They stay as extra
//! replicas above desired capacity, and the reconciler retires them as soon
//! as they are released (scale-in takes old versions first and never a
//! protected replica: [`crate::fleet::pick_for_scale_in`]).
//!
//! **Blue-green**: traffic stays on the old version (a [`DeployAction::Route`]
//! to it) while a full new set of `desired` replicas starts; when all of them
//! are in service, one `Route` moves all traffic to the new version at once.
//! The old set is kept, out of the traffic, for `bake_time`; then it is
//! retired and the deploy finishes. `max_surge` and `max_unavailable` do not
//! apply.
//!
//! **Health gate and automatic rollback** (ECS's deployment circuit
//! breaker). Until the bake time is over, the deploy rolls back when
//!
//! - a replica of the new version fails (crashes, or fails its health checks
//!   after its grace period), or
//! - a replica of the new version is not in service `deploy_timeout` after
//!   it started (or a launch asked for never appeared within it).
//!
//! `ebb rollback` ([`Deploy::rollback`]) does the same on request. A rolling
//! deploy rolls back the way it rolled forward, with the roles swapped: the
//! previous version is launched up to `desired` within the surge limit, and
//! new-version replicas are retired as capacity allows (at once when they are
//! not in service). A blue-green deploy moves the traffic back to the old set
//! at once and retires the new set. A rollback finishes when no unprotected
//! new-version replica is left, or at the latest `deploy_timeout` after it
//! began (then the controller's ordinary reconciliation converges on the
//! previous version).
//!
//! **Bake time**: after the new version has fully taken over (blue-green:
//! the traffic switch; rolling: every old replica retired), it is watched for
//! `bake_time`; a failure within it rolls back. It defaults to 5 min for
//! blue-green (the old set is kept meanwhile, so a rollback is instant) and
//! to none for rolling.
//!
//! **Idempotent.** `step` is level-triggered: it reads the fleet it is
//! given. A replica of the target version that is starting counts as
//! launched; a leaving one counts as gone. It also remembers what it asked
//! for until the view shows it (launches not yet seen, replicas it retired),
//! so stepping again with the same view never asks twice. The controller must
//! show a failed replica as [`ReplicaPhase::Failed`] in at least one step
//! (call `step` right after marking it), or the failure is not seen.
//!
//! **Scale changes during a deploy**: `desired` is an argument of every
//! step, so a scale-out launches the new version (the old one during a
//! rollback). Excess replicas after a scale-in are left to the reconciler
//! once the deploy is over.
//!
//! **Finish happens exactly once**; after it `step` returns nothing.

mod planner;

pub use planner::Deploy;

use crate::scaling::metrics::duration as human;
use crate::scaling::Time;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// How a deploy replaces replicas.
///
/// In JSON (the admin API) it is `rolling` or `blue_green`, as the API has
/// always spelled it; `blue-green`, the config's and the CLI's spelling, is
/// read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A few at a time, within `max_surge` / `max_unavailable`.
    #[default]
    Rolling,
    /// A full new set, then one traffic switch, then the old set goes.
    #[serde(alias = "blue-green")]
    BlueGreen,
}

impl Strategy {
    pub const ALL: [Strategy; 2] = [Strategy::Rolling, Strategy::BlueGreen];

    /// The name used in `ebb.toml`, the CLI (`--strategy`) and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
        }
    }

    pub fn from_name(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[service.NAME.deploy]`: how `ebb deploy` replaces a service's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployConfig {
    pub strategy: Strategy,
    /// Rolling: how many replicas above `desired` may run during the deploy.
    pub max_surge: u32,
    /// Rolling: how many replicas below `desired` in-service capacity may
    /// drop during the deploy. With `max_surge` 0 it must be at least 1.
    pub max_unavailable: u32,
    /// A new replica must be in service this long after it started, or the
    /// deploy rolls back.
    pub deploy_timeout: Duration,
    /// How long the new version is watched after it has taken over (a
    /// failure rolls back); blue-green keeps the old set meanwhile. `None`:
    /// the strategy's default ([`DeployConfig::DEFAULT_BAKE_TIME_BLUE_GREEN`]
    /// for blue-green, none for rolling), so `ebb deploy --strategy` gets the
    /// right one.
    pub bake_time: Option<Duration>,
    /// How long a deploy waits, at its end, for protected old replicas to
    /// be released before it finishes without them.
    pub protected_wait: Duration,
}

impl DeployConfig {
    /// One extra replica at a time (ECS's 200 % maximum is the whole set;
    /// one is what a small machine can afford).
    pub const DEFAULT_MAX_SURGE: u32 = 1;
    /// Never below desired capacity (ECS's 100 % minimum healthy).
    pub const DEFAULT_MAX_UNAVAILABLE: u32 = 0;
    /// Kubernetes' `progressDeadlineSeconds` is 10 min.
    pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);
    /// Long enough for errors to show under real traffic, short enough to
    /// keep a second set running.
    pub const DEFAULT_BAKE_TIME_BLUE_GREEN: Duration = Duration::from_secs(300);
    /// A protected replica is usually a worker finishing a job; five
    /// minutes covers a short one without holding `ebb deploy` for hours.
    pub const DEFAULT_PROTECTED_WAIT: Duration = Duration::from_secs(300);

    /// The bake time in force: the configured one, or the strategy's default.
    pub fn effective_bake_time(&self) -> Duration {
        self.bake_time.unwrap_or(match self.strategy {
            Strategy::Rolling => Duration::ZERO,
            Strategy::BlueGreen => Self::DEFAULT_BAKE_TIME_BLUE_GREEN,
        })
    }

    /// The same settings with another strategy (`ebb deploy --strategy`).
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Rolling,
            max_surge: Self::DEFAULT_MAX_SURGE,
            max_unavailable: Self::DEFAULT_MAX_UNAVAILABLE,
            deploy_timeout: Self::DEFAULT_DEPLOY_TIMEOUT,
            bake_time: None,
            protected_wait: Self::DEFAULT_PROTECTED_WAIT,
        }
    }
}

pub use crate::fleet::ReplicaPhase;

/// One replica, as the controller sees it when it asks for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub id: String,
    /// The service version (spec) it runs.
    pub version: u64,
    pub state: ReplicaPhase,
    /// Scale-in protection: never retired by a deploy.
    pub protected: bool,
    /// When it was launched (the deploy timeout counts from here; old
    /// replicas leave oldest first).
    pub started_at: Time,
}

impl ReplicaView {
    pub fn new(id: impl Into<String>, version: u64, state: ReplicaPhase, started_at: Time) -> Self {
        Self { id: id.into(), version, state, protected: false, started_at }
    }
}

/// What the controller should do now. Every action carries its reason, with
/// the numbers; record it as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployAction {
    /// Start `count` replicas of `version`.
    Launch { version: u64, count: u32, reason: String },
    /// Take this replica out of the rotation, drain it, stop it.
    Retire { id: String, reason: String },
    /// From now on only replicas of `only_version` are routable (`None`:
    /// every in-service replica). Blue-green only. In force until the next
    /// `Route` or the deploy's `Finish`; [`Deploy::routes_only`] says the same.
    Route { only_version: Option<u64>, reason: String },
    /// The deploy is over (exactly once).
    Finish { outcome: DeployOutcome, reason: String },
    /// Nothing to do now; what the deploy is waiting for, and the deadline
    /// after which it acts on its own (roll back, stop waiting), if any. The
    /// reason is stable while the fleet does not change, so the controller
    /// can record it when it differs from the last one.
    Wait { reason: String, until: Option<Time> },
}

impl DeployAction {
    pub fn reason(&self) -> &str {
        match self {
            DeployAction::Launch { reason, .. }
            | DeployAction::Retire { reason, .. }
            | DeployAction::Route { reason, .. }
            | DeployAction::Finish { reason, .. }
            | DeployAction::Wait { reason, .. } => reason,
        }
    }
}

impl fmt::Display for DeployAction {
    /// `launch 1 × v2: <reason>`, `retire web-1: <reason>`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployAction::Launch { version, count, reason } => write!(f, "launch {count} × v{version}: {reason}"),
            DeployAction::Retire { id, reason } => write!(f, "retire {id}: {reason}"),
            DeployAction::Route { only_version: Some(v), reason } => write!(f, "route to v{v} only: {reason}"),
            DeployAction::Route { only_version: None, reason } => write!(f, "route to every version: {reason}"),
            DeployAction::Finish { outcome, reason } => write!(f, "{outcome}: {reason}"),
            DeployAction::Wait { reason, .. } => write!(f, "wait: {reason}"),
        }
    }
}

/// How a deploy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    /// The new version serves.
    Succeeded,
    /// The previous version serves again; `reason` says why (the trigger).
    RolledBack { reason: String },
}

impl fmt::Display for DeployOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployOutcome::Succeeded => f.write_str("deploy succeeded"),
            DeployOutcome::RolledBack { .. } => f.write_str("deploy rolled back"),
        }
    }
}

/// Where a deploy is. Updated by each [`Deploy::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Rolling: replacing replicas.
    Rolling,
    /// Blue-green: the new set is starting; traffic is on the old version.
    Starting,
    /// The new version has taken over and is watched until `until`; a
    /// failure rolls back.
    Baking {
        until: Time,
    },
    /// Only protected old replicas are left; the deploy waits for them
    /// until `until`, then finishes without them.
    WaitingForProtected {
        until: Time,
    },
    RollingBack {
        reason: String,
    },
    Succeeded,
    RolledBack {
        reason: String,
    },
}

impl Phase {
    /// A stable name for status and JSON: `rolling`, `starting`, `baking`,
    /// `waiting_for_protected`, `rolling_back`, `succeeded`, `rolled_back`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Rolling => "rolling",
            Phase::Starting => "starting",
            Phase::Baking { .. } => "baking",
            Phase::WaitingForProtected { .. } => "waiting_for_protected",
            Phase::RollingBack { .. } => "rolling_back",
            Phase::Succeeded => "succeeded",
            Phase::RolledBack { .. } => "rolled_back",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack { .. })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Rolling => f.write_str("rolling"),
            Phase::Starting => f.write_str("starting the new set"),
            Phase::Baking { .. } => f.write_str("baking"),
            Phase::WaitingForProtected { .. } => f.write_str("waiting for protected replicas"),
            Phase::RollingBack { reason } => write!(f, "rolling back ({reason})"),
            Phase::Succeeded => f.write_str("succeeded"),
            Phase::RolledBack { reason } => write!(f, "rolled back ({reason})"),
        }
    }
}

/// How far a deploy has got, for `ebb deploy`'s progress line and `ebb
/// status` (plain fields, so it serializes as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// `rolling` or `blue-green`.
    pub strategy: &'static str,
    pub from_version: u64,
    pub to_version: u64,
    /// [`Phase::as_str`].
    pub phase: &'static str,
    /// Desired capacity at the last step.
    pub desired: u32,
    /// Replicas of the new version in service (healthy).
    pub new_in_service: u32,
    pub new_starting: u32,
    /// New-version replicas leaving (during a rollback).
    pub new_draining: u32,
    /// Replicas of other versions in service.
    pub old_in_service: u32,
    pub old_starting: u32,
    pub old_draining: u32,
    /// Protected replicas of the version being replaced, which the deploy
    /// cannot retire (ids).
    pub protected: Vec<String>,
    /// Why it is rolling back / rolled back, if it is.
    pub rollback_reason: Option<String>,
}

impl fmt::Display for Progress {
    /// `rolling v1 -> v2, rolling: 2/4 new healthy, 1 new starting, 3 old in service, 1 old draining`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} v{} -> v{}, {}: {}/{} new healthy",
            self.strategy,
            self.from_version,
            self.to_version,
            self.phase.replace('_', " "),
            self.new_in_service,
            self.desired
        )?;
        for (n, what) in [
            (self.new_starting, "new starting"),
            (self.new_draining, "new draining"),
            (self.old_in_service, "old in service"),
            (self.old_starting, "old starting"),
            (self.old_draining, "old draining"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        if !self.protected.is_empty() {
            write!(f, ", protected: {}", self.protected.join(", "))?;
        }
        if let Some(reason) = &self.rollback_reason {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

/// Why `ebb rollback` was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RollbackRefused {
    pub message: String,
}

/// `2 replicas`, `1 replica`.
fn n_replicas(n: u32) -> String {
    format!("{n} replica{}", if n == 1 { "" } else { "s" })
}

/// `5 min`, `none` for zero.
fn span(d: Duration) -> String {
    if d.is_zero() {
        "none".to_string()
    } else {
        human(d)
    }
}
