//! What the admin API asks of a service's controller, and what it answers.

use std::collections::BTreeMap;
use std::time::Duration;

use ebb_core::config::CommandSpec;
use tokio::sync::oneshot;

use crate::status::DeployStatus;

/// A request to a service's controller from the admin API.
#[derive(Debug)]
pub enum ControlCommand {
    /// Set desired capacity (clamped to the service's bounds).
    SetDesired { desired: u32, reason: String, reply: oneshot::Sender<ScaleOutcome> },
    /// Set or clear a replica's scale-in protection.
    Protect { replica: String, protected: bool, reply: oneshot::Sender<Result<ReplicaOutcome, LifecycleError>> },
    /// A spot-style interruption notice: replace the replica, then let it go
    /// before `notice` runs out.
    Interrupt { replica: String, notice: Duration, reply: oneshot::Sender<Result<ReplicaOutcome, LifecycleError>> },
    /// Roll out a new version of the spec.
    Deploy { request: DeployRequest, reply: oneshot::Sender<Result<DeployStatus, LifecycleError>> },
    /// Switch back: abort the running deploy (or its bake time), or deploy
    /// the previous version again.
    Rollback { reason: Option<String>, reply: oneshot::Sender<Result<DeployStatus, LifecycleError>> },
}

/// What a deploy changes; what it does not name stays as it is.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A new command (run through `sh -c`, as in the config).
    #[serde(default)]
    pub command: Option<String>,
    /// Environment variables to set (added to or replacing the current ones).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `rolling` or `blue-green`; the service's configured strategy when absent.
    #[serde(default)]
    pub strategy: Option<String>,
    /// A new image (docker and swarm drivers): a new image tag is a new version.
    #[serde(default)]
    pub image: Option<String>,
    /// The whole spec to roll out instead of changes to the current one:
    /// what the config file says now (set by the admin API when a deploy
    /// names no change).
    #[serde(skip)]
    pub from_config: Option<ConfigSpec>,
    /// Why, in the user's words: recorded in the `deploy_started` event.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A service's spec as the config file has it now.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    pub command: CommandSpec,
    pub env: BTreeMap<String, String>,
    pub image: Option<String>,
}

/// The result of a protect or interrupt request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReplicaOutcome {
    pub service: String,
    pub replica: String,
    /// What happened, in words (also recorded as an event).
    pub message: String,
}

/// Why a lifecycle request was refused; nothing was changed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum LifecycleError {
    #[error("service {service} has no replica {replica:?}; see `ebb status`")]
    NoSuchReplica { service: String, replica: String },
    #[error("replica {replica} of {service} is already leaving ({state}); nothing to do")]
    Leaving { service: String, replica: String, state: String },
    #[error("service {service} is shutting down")]
    ShuttingDown { service: String },
    /// Refused in the fleet's current state (another deploy runs, nothing to roll back to).
    #[error("service {service}: {message}")]
    Refused { service: String, message: String },
    /// Applied, but the state file could not be written: it would not
    /// survive a restart.
    #[error("service {service}: the change was applied but could not be saved to the state file: {message}")]
    NotSaved { service: String, message: String },
    /// The request itself is malformed (an empty command, a bad env name).
    #[error("service {service}: {message}")]
    Invalid { service: String, message: String },
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
