//! What the admin API asks of a service's controller, and what it answers.

use std::collections::BTreeMap;
use std::time::Duration;

use ebb_core::config::{CommandSpec, ServiceConfig};
use tokio::sync::oneshot;

// The serde types a command carries or answers are the admin API's JSON.
use crate::wire::DeployStatus;
pub use crate::wire::{DeployRequest, ReplicaOutcome, ScaleOutcome};

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
    /// `ebb apply`: the service's new config (same name, kind and driver),
    /// taken in place; a new spec starts a deploy. `changes` are the plan's
    /// lines, for the event.
    Reconfigure {
        config: Box<ServiceConfig>,
        changes: Vec<String>,
        reply: oneshot::Sender<Result<Reconfigured, LifecycleError>>,
    },
}

/// What `ebb apply` did to a service.
#[derive(Debug, Clone)]
pub struct Reconfigured {
    /// Desired capacity after the change (the file's new `desired`, or the
    /// one before clamped to the new bounds).
    pub desired: u32,
    /// The deploy a new command, env or image started.
    pub deploy: Option<DeployStatus>,
}

/// A service's spec as the config file has it now.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    pub command: CommandSpec,
    pub env: BTreeMap<String, String>,
    pub image: Option<String>,
    /// Mounts, networks, user, labels, placement (containers); boxed, so
    /// a deploy request stays as small as the other commands.
    pub options: Box<ebb_core::config::ContainerOptions>,
}

/// Why a lifecycle request was refused; nothing was changed.
#[derive(Debug, Clone, thiserror::Error)]
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
