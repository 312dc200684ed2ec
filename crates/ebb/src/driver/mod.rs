//! Drivers: where replicas run.
//!
//! A [`Driver`] starts a replica from a [`ReplicaSpec`], tells when it exits,
//! stops it (polite signal, `stop_timeout`, then force), finds the replicas
//! an earlier ebb run left running (`discover`, `adopt`), and reports their
//! CPU and memory (`usage`). The controller only talks to this trait, so the
//! Docker and Swarm drivers slot in beside the [`ProcessDriver`] without
//! touching the rest.
//!
//! - `process.rs`: [`ProcessDriver`], one local process group per replica.
//! - `docker.rs`: [`DockerDriver`], one container per replica on the local
//!   Docker engine.
//! - `swarm.rs`: [`SwarmDriver`], the tasks of a Swarm service whose replica
//!   count ebb sets.

pub mod cgroup;
pub mod docker;
mod process;
mod spread;
pub mod swarm;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use ebb_core::config::{CommandSpec, ContainerOptions, MountKind};
use tokio::sync::watch;

pub use crate::metrics::cpu::GroupUsage;
pub use docker::{DockerDriver, Engine};
pub use process::ProcessDriver;
pub use swarm::SwarmDriver;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Driver>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a driver needs to start one replica.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub service: String,
    pub replica_id: String,
    /// Deploy version of the spec this replica runs.
    pub version: u64,
    pub command: CommandSpec,
    /// The service's `env`, before ebb adds `PORT`, `EBB_SERVICE`, `EBB_REPLICA_ID`.
    pub env: BTreeMap<String, String>,
    /// ebb's state directory (replicas may keep shared files there).
    pub state_dir: PathBuf,
    /// Where the replica's stdout and stderr go.
    pub log_path: PathBuf,
    /// What a container replica runs (docker and swarm drivers); `None` for
    /// the process driver.
    pub container: Option<ContainerSpec>,
    /// Where a local replica's port is picked (`ports`); the process
    /// driver's own range when `None`.
    pub ports: Option<std::ops::RangeInclusive<u16>>,
    /// A local replica's `cpu` and `memory`, enforced by its control group
    /// (process driver, where cgroups are usable); `None`: no group.
    pub limits: Option<cgroup::Limits>,
}

/// The container side of a [`ReplicaSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// The image, already on the engine (ebb does not pull).
    pub image: String,
    /// The port the app listens on inside; `PORT` is set to it.
    pub container_port: u16,
    /// CPU limit in cores.
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// The engine's own stop timeout for the container (`docker stop`
    /// without `-t` waits this long too).
    pub stop_timeout: Duration,
    /// Mounts (bind sources absolute), networks, user, extra labels,
    /// placement (swarm).
    pub options: ContainerOptions,
}

impl ContainerSpec {
    /// The CPU limit as the engine takes it (billionths of a core).
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpus.map(|c| (c * 1e9).round() as i64)
    }

    /// The container part of a service's config, running the version's
    /// `image` (when a deploy changed it) and `options`.
    pub fn from_config(
        service: &ebb_core::config::ServiceConfig,
        image: Option<&str>,
        options: &ContainerOptions,
    ) -> Option<ContainerSpec> {
        let c = service.container.as_ref()?;
        let mut options = options.clone();
        // A bind source relative to a config file given by a relative path
        // is relative to ebb's working directory; the engine wants it whole.
        for mount in options.mounts.iter_mut().filter(|m| m.kind == MountKind::Bind) {
            if let Some(source) = mount.source.as_mut().filter(|s| !s.starts_with('/')) {
                if let Ok(whole) = std::path::absolute(&*source) {
                    *source = whole.to_string_lossy().into_owned();
                }
            }
        }
        Some(ContainerSpec {
            image: image.unwrap_or(&c.image).to_string(),
            container_port: c.container_port,
            cpus: c.cpus,
            memory: c.memory,
            stop_timeout: service.stop_timeout,
            options,
        })
    }
}

/// How a replica ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Exited on its own with a status code.
    Exited(i32),
    /// Killed by a signal (number), e.g. 9 for SIGKILL.
    Signaled(i32),
    /// The driver lost track of it (wait failed), or cannot know how it
    /// ended (an adopted process is not ebb's child).
    Unknown(String),
    /// Killed by the kernel for going over its memory limit (bytes).
    OutOfMemory { limit: Option<u64> },
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited with status {code}"),
            ExitReason::Signaled(sig) => {
                let name = nix::sys::signal::Signal::try_from(*sig).map(|s| s.as_str()).unwrap_or("unknown signal");
                write!(f, "killed by signal {sig} ({name})")
            }
            ExitReason::Unknown(why) => write!(f, "lost: {why}"),
            ExitReason::OutOfMemory { limit: Some(limit) } => {
                write!(f, "killed: out of memory, limit {} MiB", limit.div_ceil(1 << 20))
            }
            ExitReason::OutOfMemory { limit: None } => write!(f, "killed: out of memory"),
        }
    }
}

/// How ebb recognises a replica after its own restart; persisted in the
/// state store as JSON (`{"kind":"process","pid":..,"start_ticks":..}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicaHandle {
    /// Process group leader; `start_ticks` = field 22 of `/proc/<pid>/stat`
    /// (so a recycled pid never matches).
    Process { pid: u32, start_ticks: u64 },
    /// A Docker container, by its full id.
    Container { id: String },
    /// A task of a Swarm service (`service` is the Swarm service's name);
    /// `container` is its container's id once it runs.
    Swarm { service: String, task: String, container: Option<String> },
}

/// A replica the driver started (or adopted) and is watching.
#[derive(Debug, Clone)]
pub struct RunningReplica {
    pub replica_id: String,
    /// Where the balancer and health checks reach it.
    pub addr: SocketAddr,
    /// OS process id (process driver), if any; for status.
    pub pid: Option<u32>,
    /// How to find it again after ebb restarts.
    pub handle: ReplicaHandle,
    /// Becomes `Some` once the replica has exited, for whatever reason.
    pub exit: watch::Receiver<Option<ExitReason>>,
}

impl RunningReplica {
    /// A replica taken over by `adopt`: what discovery found, and the
    /// driver's exit watch from now on.
    pub fn adopted(found: &FoundReplica, pid: Option<u32>, exit: watch::Receiver<Option<ExitReason>>) -> Self {
        Self { replica_id: found.replica_id.clone(), addr: found.addr, pid, handle: found.handle.clone(), exit }
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Resolves once the replica has exited.
    pub async fn exited(&self) -> ExitReason {
        let mut rx = self.exit.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone().unwrap_or_else(|| ExitReason::Unknown("watcher gone".into()));
            }
        }
    }
}

/// A replica found running that an earlier ebb run (same state dir) started.
#[derive(Debug, Clone)]
pub struct FoundReplica {
    pub service: String,
    pub replica_id: String,
    pub version: u64,
    pub addr: SocketAddr,
    pub handle: ReplicaHandle,
}

/// Why a driver could not do what was asked; carries the replica's identity.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("replica {replica}: could not start `{command}`: {source}")]
    Spawn { replica: String, command: String, source: std::io::Error },
    #[error("replica {replica}: no free port: {source}")]
    Port { replica: String, source: std::io::Error },
    #[error("replica {replica}: could not open log file {}: {source}", path.display())]
    Log { replica: String, path: PathBuf, source: std::io::Error },
    #[error("replica {replica}: could not signal process group {pgid}: {source}")]
    Signal { replica: String, pgid: u32, source: nix::Error },
    #[error("replica {replica}: cannot adopt it: {why}")]
    Adopt { replica: String, why: String },
    #[error("service {service}: cannot look for running replicas: {why}")]
    Discover { service: String, why: String },
    #[error("service {service}, replica {replica}: {message}")]
    Container { service: String, replica: String, message: String },
    #[error("replica {replica}: {message}")]
    Freeze { replica: String, message: String },
    #[error("replica {replica}: the {driver} driver cannot {what} a replica")]
    Unsupported { replica: String, driver: &'static str, what: &'static str },
}

impl DriverError {
    /// A container engine's error about one replica of `spec`.
    pub fn container(spec: &ReplicaSpec, message: impl Into<String>) -> Self {
        DriverError::Container {
            service: spec.service.clone(),
            replica: spec.replica_id.clone(),
            message: message.into(),
        }
    }
}

/// Where replicas run. Implementations: [`ProcessDriver`] (local process
/// groups); Docker containers and Swarm services.
pub trait Driver: Send + Sync {
    /// Short name for status and events ("process", "docker", ...).
    fn name(&self) -> &'static str;

    /// Starts one replica. Returns once it has been launched (not once it is
    /// healthy: health checks decide that).
    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<RunningReplica, DriverError>>;

    /// Stops a replica: polite signal, up to `timeout` to exit, then force.
    /// Resolves when it is gone. Call it for an exited replica too: it still
    /// cleans up what is left (the process group, the container, the
    /// Swarm task's slot).
    fn stop<'a>(
        &'a self,
        replica: &'a RunningReplica,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExitReason, DriverError>>;

    /// Every replica of `service` still running that belongs to this ebb
    /// (same state dir).
    fn discover<'a>(
        &'a self,
        service: &'a str,
        state_dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<FoundReplica>, DriverError>>;

    /// Takes over a found replica (watches its exit from now on; `stop`
    /// works on it). Errors if it no longer matches its handle.
    fn adopt<'a>(&'a self, found: &'a FoundReplica) -> BoxFuture<'a, Result<RunningReplica, DriverError>>;

    /// Cumulative CPU seconds and resident bytes per replica id; replicas it
    /// cannot read are absent.
    fn usage<'a>(&'a self, replicas: &'a [RunningReplica]) -> BoxFuture<'a, HashMap<String, GroupUsage>>;

    /// Freezes a running replica in place (scale to zero's `suspend`
    /// mode): it keeps its memory, sockets and pid and gets no CPU until
    /// [`resume`](Driver::resume). The default: this driver cannot.
    fn suspend<'a>(&'a self, replica: &'a RunningReplica) -> BoxFuture<'a, Result<(), DriverError>> {
        let error =
            DriverError::Unsupported { replica: replica.replica_id.clone(), driver: self.name(), what: "suspend" };
        Box::pin(async move { Err(error) })
    }

    /// Thaws a replica [`suspend`](Driver::suspend) froze; the same
    /// process carries on. Resuming one that is not frozen does nothing.
    fn resume<'a>(&'a self, replica: &'a RunningReplica) -> BoxFuture<'a, Result<(), DriverError>> {
        let error =
            DriverError::Unsupported { replica: replica.replica_id.clone(), driver: self.name(), what: "resume" };
        Box::pin(async move { Err(error) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file named by a relative path leaves a relative bind
    /// source (the parse does no I/O); the engine gets it whole.
    #[test]
    fn a_relative_bind_source_reaches_the_engine_absolute() {
        let text = "[service.web]\ndriver = \"docker\"\nimage = \"x:1\"\nlisten = \"127.0.0.1:8080\"\nmounts = [\"./data:/data\", \"cache:/cache\"]\n";
        let config = ebb_core::config::Config::parse(text, Path::new("ebb.toml")).unwrap();
        let service = &config.services["web"];
        let options = &service.container.as_ref().unwrap().options;
        assert_eq!(options.mounts[0].source.as_deref(), Some("data"));
        let spec = ContainerSpec::from_config(service, Some("x:2"), options).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(spec.options.mounts[0].source.as_deref(), Some(cwd.join("data").to_str().unwrap()));
        assert_eq!(spec.options.mounts[1].source.as_deref(), Some("cache"), "a volume name stays a name");
        assert_eq!(spec.image, "x:2", "the version's image");
    }
}
