//! The handle the rest of ebb (admin API, dashboard, `up`) holds on one
//! running service: it reads the published snapshot and sends commands to
//! the controller's inbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::command::{ControlCommand, DeployRequest, LifecycleError, Reconfigured, ReplicaOutcome, ScaleOutcome};
use super::{input, Input, ServiceContext, ServiceController, Snapshot};
use crate::admin::auth::constant_time_eq;
use crate::metrics::history;
use crate::proxy::{Backend, ServiceProxy};
use crate::state::StateStore;
use crate::status::{DeployStatus, ServiceStatus};

/// The handle the rest of ebb holds on one running service.
#[derive(Clone)]
pub struct ServiceHandle {
    pub name: String,
    pub proxy: Arc<ServiceProxy>,
    pub(super) commands: mpsc::UnboundedSender<Input>,
    pub(super) snapshot: watch::Receiver<Snapshot>,
    /// One point a second for the last 24 h.
    pub history: Arc<history::MetricsHistory>,
    /// Each live replica's own token (`EBB_REPLICA_TOKEN`): it allows that
    /// replica to protect itself, nothing else.
    pub(super) replica_tokens: ReplicaTokens,
    pub(super) store: Option<StateStore>,
    /// Cancelled once the replicas of an earlier run are adopted and the
    /// first routable set is published.
    pub(super) restored: CancellationToken,
    /// The predictive policies' latest forecasts, one per metric.
    pub forecasts: super::forecaster::Forecasts,
}

pub(super) type ReplicaTokens = Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>;

impl ServiceHandle {
    /// Resolves once the controller has adopted what an earlier run left
    /// and published its first routable set: the balancer starts accepting
    /// then, so clients queued in the listen backlog during a restart are
    /// not answered 503.
    pub async fn restored(&self) {
        self.restored.cancelled().await
    }

    /// Current status, with live request counters read from the balancer.
    pub fn status(&self) -> ServiceStatus {
        self.snapshot.borrow().to_status()
    }

    /// Whether `token` is the per-replica token ebb gave `replica`.
    pub fn replica_token_is(&self, replica: &str, token: &str) -> bool {
        let tokens = self.replica_tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens.get(replica).is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    }

    /// The balancer's view of each current replica, by replica id.
    pub fn backends(&self) -> Vec<(String, Arc<Backend>)> {
        self.snapshot.borrow().backends.iter().map(|(id, b)| (id.clone(), b.clone())).collect()
    }

    /// Whether this service currently has a replica with that id.
    pub fn has_replica(&self, replica: &str) -> bool {
        self.snapshot.borrow().service.replicas.iter().any(|r| r.id == replica)
    }

    /// Sets or clears scale-in protection on one of this service's replicas.
    pub async fn protect(&self, replica: &str, protected: bool) -> Result<ReplicaOutcome, LifecycleError> {
        let (reply, rx) = oneshot::channel();
        let cmd = ControlCommand::Protect { replica: replica.to_string(), protected, reply };
        self.ask(cmd, rx).await
    }

    /// Delivers an interruption notice to one of this service's replicas.
    pub async fn interrupt(&self, replica: &str, notice: Duration) -> Result<ReplicaOutcome, LifecycleError> {
        let (reply, rx) = oneshot::channel();
        let cmd = ControlCommand::Interrupt { replica: replica.to_string(), notice, reply };
        self.ask(cmd, rx).await
    }

    /// Starts a deploy; returns once it has started (follow it in the status).
    pub async fn deploy(&self, request: DeployRequest) -> Result<DeployStatus, LifecycleError> {
        let (reply, rx) = oneshot::channel();
        self.ask(ControlCommand::Deploy { request, reply }, rx).await
    }

    /// Rolls back the running deploy, or deploys the previous version again.
    pub async fn rollback(&self, reason: Option<String>) -> Result<DeployStatus, LifecycleError> {
        let (reply, rx) = oneshot::channel();
        self.ask(ControlCommand::Rollback { reason, reply }, rx).await
    }

    /// `ebb apply`: the service's new config, taken in place (a new spec
    /// starts a deploy); answers once the change is saved.
    pub async fn reconfigure(
        &self,
        config: ebb_core::config::ServiceConfig,
        changes: Vec<String>,
    ) -> Result<Reconfigured, LifecycleError> {
        let (reply, rx) = oneshot::channel();
        self.ask(ControlCommand::Reconfigure { config: Box::new(config), changes, reply }, rx).await
    }

    /// Resolves once the controller has finished: every replica drained
    /// and stopped (after its stop token was cancelled).
    pub async fn stopped(&self) {
        let mut snapshot = self.snapshot.clone();
        while snapshot.changed().await.is_ok() {}
    }

    async fn ask<T>(
        &self,
        cmd: ControlCommand,
        rx: oneshot::Receiver<Result<T, LifecycleError>>,
    ) -> Result<T, LifecycleError> {
        let gone = || LifecycleError::ShuttingDown { service: self.name.clone() };
        self.commands.send(Input::Command(cmd)).map_err(|_| gone())?;
        let answer = rx.await.map_err(|_| gone())?;
        self.durable().await?;
        answer
    }

    /// Waits until what the controller queued for the state file before it
    /// answered is on disk: an acknowledged change survives a crash.
    async fn durable(&self) -> Result<(), LifecycleError> {
        match &self.store {
            Some(store) => {
                store.sync().await.map_err(|message| LifecycleError::NotSaved { service: self.name.clone(), message })
            }
            None => Ok(()),
        }
    }

    /// Asks the controller to change desired capacity; answers once the
    /// change is saved.
    pub async fn set_desired(&self, desired: u32, reason: impl Into<String>) -> Result<ScaleOutcome, LifecycleError> {
        let (reply, rx) = oneshot::channel();
        let cmd = ControlCommand::SetDesired { desired, reason: reason.into(), reply };
        let gone = || LifecycleError::ShuttingDown { service: self.name.clone() };
        self.commands.send(Input::Command(cmd)).map_err(|_| gone())?;
        let outcome = rx.await.map_err(|_| gone())?;
        self.durable().await?;
        Ok(outcome)
    }
}

/// Starts the controller task of one service. It runs until `shutdown` is
/// cancelled, then drains and stops every replica and finishes; wait for that
/// through `tracker`.
pub fn spawn_service(ctx: ServiceContext, shutdown: CancellationToken, tracker: &TaskTracker) -> ServiceHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let controller = ServiceController::new(ctx, tx.clone());
    let (snapshot_tx, snapshot_rx) = watch::channel(controller.snapshot());
    let handle = ServiceHandle {
        name: controller.ctx.name.clone(),
        proxy: controller.ctx.proxy.clone(),
        commands: tx.clone(),
        snapshot: snapshot_rx.clone(),
        history: controller.restorer.history(),
        replica_tokens: controller.fleet.replicas.tokens(),
        store: controller.restorer.store(),
        restored: controller.restorer.done(),
        forecasts: Default::default(),
    };
    let forecaster = super::forecaster::Forecaster {
        service: handle.name.clone(),
        store: handle.store.clone(),
        history: handle.history.clone(),
        policies: controller.predictive.subscribe(),
        inbox: tx.clone(),
        shown: handle.forecasts.clone(),
    };
    tracker.spawn(forecaster.run(shutdown.clone()));
    tracker.spawn(input::sample_usage(
        controller.fleet.driver().clone(),
        snapshot_rx.clone(),
        tx.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(input::read_metric_source(controller.metric_source.subscribe(), tx.clone(), shutdown.clone()));
    tracker.spawn(controller.run(rx, snapshot_tx, shutdown));
    handle
}
