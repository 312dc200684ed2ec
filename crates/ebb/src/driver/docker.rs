//! [`DockerDriver`]: each replica is a container on the local Docker engine
//! (bollard over the engine's socket, or `DOCKER_HOST`).
//!
//! - **Start:** create a container named `ebb-<replica>` from the version's
//!   image, labelled `ebb.service`, `ebb.replica`, `ebb.version`,
//!   `ebb.state_dir` (how a restarted ebb recognises its own), with `PORT` =
//!   `container_port` and that port published on `127.0.0.1` at a host port
//!   the engine picks (so two replicas never clash); CPU and memory limits
//!   from `cpus` and `memory`; the service's `mounts`, `user` and `labels`;
//!   the first of `networks` as its network (the others joined before it
//!   starts). Then start it and read the published port. A container that
//!   fails to start is removed: nothing is left half-started.
//! - **Logs:** followed into `<state_dir>/logs/<replica>.log`, so `ebb logs`
//!   works as for processes.
//! - **Exit:** the engine's wait; a status above 128 is a signal (137 =
//!   SIGKILL), as the engine reports it.
//! - **Stop:** the engine's stop (the image's stop signal, `stop_timeout`,
//!   then SIGKILL), then the container is removed.
//! - **Usage:** one-shot stats: cumulative CPU (`cpu_usage.total_usage`)
//!   and memory less the inactive page cache, as `docker stats` shows it.
//!   The controller's meter turns two readings into Δcpu / Δwall relative to
//!   `cpus`, which is the usual Δcpu / Δsystem × online CPUs formula (the
//!   system counter advances online CPUs × wall time).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, MountType, NetworkConnectRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use ebb_core::config::{CommandSpec, ContainerOptions, MountKind};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{
    BoxFuture, ContainerSpec, Driver, DriverError, ExitReason, FoundReplica, GroupUsage, ReplicaHandle, ReplicaSpec,
    RunningReplica,
};

/// Labels every ebb container carries.
pub const LABEL_SERVICE: &str = "ebb.service";
pub const LABEL_REPLICA: &str = "ebb.replica";
pub const LABEL_VERSION: &str = "ebb.version";
pub const LABEL_STATE_DIR: &str = "ebb.state_dir";
pub const LABEL_CONTAINER_PORT: &str = "ebb.container_port";

/// How long one stats reading may take before the replica is left out of
/// this sample (a busy engine can take over a second to answer).
const STATS_TIMEOUT: Duration = Duration::from_millis(1500);

/// A connection to a Docker engine, with the messages that say what to do
/// when it does not answer.
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    /// Where it was reached, for messages.
    pub endpoint: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("endpoint", &self.endpoint).finish()
    }
}

impl Engine {
    /// Connects to the engine `DOCKER_HOST` names (the local socket by
    /// default), checks that it answers, and settles the API version.
    pub async fn connect() -> Result<Engine, String> {
        let endpoint = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let docker = Docker::connect_with_local_defaults().map_err(|e| {
            format!("cannot reach the Docker engine at {endpoint} ({e}); is Docker running? (`docker info`)")
        })?;
        let answer = tokio::time::timeout(Duration::from_secs(10), docker.ping()).await;
        match answer {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(format!(
                    "the Docker engine at {endpoint} does not answer ({e}); is Docker running? (`docker info`)"
                ))
            }
            Err(_) => return Err(format!("the Docker engine at {endpoint} did not answer within 10 s")),
        }
        // An older engine (20.10 speaks API 1.41) refuses a newer client version.
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| format!("the Docker engine at {endpoint} answered, but not its version: {e}"))?;
        Ok(Engine { docker, endpoint })
    }

    /// Connects to the engine at `endpoint` (`unix:///path` or
    /// `tcp://host:port`): another node's engine, for the swarm driver.
    pub async fn connect_to(endpoint: &str) -> Result<Engine, String> {
        let docker = if endpoint.starts_with("unix://") || endpoint.starts_with('/') {
            Docker::connect_with_unix(endpoint, 120, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(endpoint, 120, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| format!("cannot reach the Docker engine at {endpoint}: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("the Docker engine at {endpoint} does not answer ({e})")),
            Err(_) => return Err(format!("the Docker engine at {endpoint} did not answer within 3 s")),
        }
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| format!("the Docker engine at {endpoint} answered, but not its version: {e}"))?;
        Ok(Engine { docker, endpoint: endpoint.to_string() })
    }

    /// Whether every network in `networks` is on the engine; the error
    /// names the first missing one and how to make it.
    pub async fn check_networks(&self, networks: &[String]) -> Result<(), String> {
        for network in networks {
            match self.docker.inspect_network(network, None).await {
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(404) => {
                    return Err(format!(
                        "network {network:?} is not on the Docker engine at {}; create it first (`docker network create {network}`, for Swarm `docker network create -d overlay {network}`)",
                        self.endpoint
                    ))
                }
                Err(e) => {
                    return Err(format!("cannot inspect network {network:?} on the Docker engine at {}: {e}", self.endpoint))
                }
            }
        }
        Ok(())
    }

    /// Whether `image` is on the engine; the error says how to get it there.
    pub async fn check_image(&self, image: &str) -> Result<(), String> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Err(missing_image(image, &self.endpoint)),
            Err(e) => Err(format!("cannot inspect image {image:?} on the Docker engine at {}: {e}", self.endpoint)),
        }
    }
}

impl Engine {
    /// The address of this host on the engine's default `bridge` network
    /// (its gateway, usually 172.17.0.1): what a container on that network
    /// dials to reach a listener on the host. `None` when the engine has no
    /// such network (e.g. a remote or rootless engine with another layout).
    pub async fn bridge_gateway(&self) -> Option<IpAddr> {
        let network = self.docker.inspect_network("bridge", None).await.ok()?;
        let configs = network.ipam?.config?;
        let gateway = configs.iter().find_map(|c| c.gateway.as_deref()?.parse().ok());
        // Engines often leave the default bridge's gateway out of its IPAM
        // config; it is then the subnet's first address (docker0's).
        gateway.or_else(|| configs.iter().find_map(|c| first_host(c.subnet.as_deref()?)))
    }
}

/// The first host address of an IPv4 subnet: `172.17.0.0/16` → 172.17.0.1.
fn first_host(subnet: &str) -> Option<IpAddr> {
    let (network, bits) = subnet.split_once('/')?;
    let network: Ipv4Addr = network.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if bits > 30 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Some(IpAddr::V4(Ipv4Addr::from((u32::from(network) & mask) + 1)))
}

fn missing_image(image: &str, endpoint: &str) -> String {
    format!(
        "image {image:?} is not on the Docker engine at {endpoint}; ebb does not pull images: build it (examples/docker/build-image {image}) or `docker pull {image}` first"
    )
}

/// The HTTP status of an engine error answer, if it was one.
pub(crate) fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's message for an error answer, without bollard's wrapping.
pub(crate) fn message_of(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// An exit status as the engine reports it: above 128 is 128 + signal.
pub(crate) fn exit_reason_from_status(code: i64) -> ExitReason {
    match code {
        129..=192 => ExitReason::Signaled((code - 128) as i32),
        _ => ExitReason::Exited(code as i32),
    }
}

/// The environment a container replica gets: the service's `env`, then
/// ebb's own variables. `EBB_STATE_DIR` is left out: it is a host path.
pub(crate) fn container_env(spec: &ReplicaSpec, container: &ContainerSpec) -> Vec<String> {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("PORT={}", container.container_port));
    env.push(format!("EBB_SERVICE={}", spec.service));
    env.push(format!("EBB_REPLICA_ID={}", spec.replica_id));
    env.push(format!("EBB_VERSION={}", spec.version));
    env
}

/// The container's command override; `None` runs the image's own. A shell
/// string needs a shell in the image.
pub(crate) fn container_cmd(command: &CommandSpec) -> Option<Vec<String>> {
    match command {
        CommandSpec::Argv(argv) if argv.is_empty() => None,
        CommandSpec::Argv(argv) => Some(argv.clone()),
        CommandSpec::Shell(line) => Some(vec!["/bin/sh".into(), "-c".into(), line.clone()]),
    }
}

/// An engine message, with what to do when it is about a missing network
/// (an older engine says so at start, a newer one at create).
fn with_hint(message: String) -> String {
    match message.contains("network") && message.contains("not found") {
        true => format!("{message}; create it (`docker network create NAME`) or fix the service's networks"),
        false => message,
    }
}

/// The engine's mounts for a container's `mounts` (both drivers).
pub(crate) fn engine_mounts(options: &ContainerOptions) -> Option<Vec<bollard::models::Mount>> {
    let mounts: Vec<bollard::models::Mount> = options
        .mounts
        .iter()
        .map(|m| bollard::models::Mount {
            typ: Some(match m.kind {
                MountKind::Bind => MountType::BIND,
                MountKind::Volume => MountType::VOLUME,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            source: m.source.clone(),
            target: Some(m.target.clone()),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    (!mounts.is_empty()).then_some(mounts)
}

/// ebb's own labels with the service's `labels` beside them (the config
/// refuses `ebb.*` keys; ebb's win all the same).
pub(crate) fn with_labels(own: HashMap<String, String>, options: &ContainerOptions) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = options.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.extend(own);
    labels
}

/// Whole seconds for the engine, rounded up so a limit is never shortened.
pub(crate) fn whole_seconds(d: Duration) -> i64 {
    d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)
}

/// Runs each replica as a container on one Docker engine.
#[derive(Debug, Clone)]
pub struct DockerDriver {
    engine: Engine,
    /// The address the balancer reaches published ports on.
    host: IpAddr,
}

impl DockerDriver {
    pub fn new(engine: Engine) -> Self {
        Self { engine, host: IpAddr::V4(Ipv4Addr::LOCALHOST) }
    }

    fn error(&self, spec: &ReplicaSpec, message: impl Into<String>) -> DriverError {
        DriverError::container(spec, message)
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        remove_container(&self.engine.docker, id).await
    }

    /// Creates, starts and inspects; on any failure after the create, the
    /// container is removed before the error is returned.
    async fn launch(&self, spec: &ReplicaSpec) -> Result<(String, SocketAddr), DriverError> {
        let Some(container) = &spec.container else {
            return Err(self.error(spec, "the docker driver needs an image (driver = \"docker\" with image = ...)"));
        };
        let port_key = format!("{}/tcp", container.container_port);
        let labels = with_labels(
            HashMap::from([
                (LABEL_SERVICE.to_string(), spec.service.clone()),
                (LABEL_REPLICA.to_string(), spec.replica_id.clone()),
                (LABEL_VERSION.to_string(), spec.version.to_string()),
                (LABEL_STATE_DIR.to_string(), spec.state_dir.to_string_lossy().into_owned()),
                (LABEL_CONTAINER_PORT.to_string(), container.container_port.to_string()),
            ]),
            &container.options,
        );
        // The first network is the container's own (its port is published
        // from there); the others are joined before it starts.
        let networks = &container.options.networks;
        // A port of the service's `ports` range (hosts with port rules), or
        // one the engine picks.
        let host_port = match &spec.ports {
            Some(range) => super::process::free_port(self.host, range)
                .map_err(|e| self.error(spec, format!("no port to publish on: {e}")))?
                .to_string(),
            None => String::new(),
        };
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding { host_ip: Some(self.host.to_string()), host_port: Some(host_port) }]),
            )])),
            nano_cpus: container.nano_cpus(),
            memory: container.memory.map(|m| m as i64),
            mounts: engine_mounts(&container.options),
            network_mode: networks.first().cloned(),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(container.image.clone()),
            cmd: container_cmd(&spec.command),
            env: Some(container_env(spec, container)),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key.clone()]),
            stop_timeout: Some(whole_seconds(container.stop_timeout)),
            host_config: Some(host_config),
            user: container.options.user.clone(),
            networking_config: networks.first().map(|n| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(n.clone(), EndpointSettings::default())])),
            }),
            ..Default::default()
        };
        let name = format!("ebb-{}", spec.replica_id);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created =
            self.engine.docker.create_container(Some(options), body).await.map_err(|e| match status_of(&e) {
                // The engine answers 404 for a missing network too.
                Some(404) if message_of(&e).contains("network") => self.error(spec, with_hint(message_of(&e))),
                Some(404) => self.error(spec, missing_image(&container.image, &self.engine.endpoint)),
                Some(409) => self.error(spec, format!("a container named {name} already exists: {}", message_of(&e))),
                _ => self.error(
                    spec,
                    format!("could not create a container from {:?}: {}", container.image, message_of(&e)),
                ),
            })?;
        let id = created.id;
        let result = async {
            for network in networks.iter().skip(1) {
                let request = NetworkConnectRequest { container: id.clone(), endpoint_config: None };
                self.engine.docker.connect_network(network, request).await.map_err(|e| {
                    self.error(spec, format!("container {name} cannot join network {network:?}: {}", message_of(&e)))
                })?;
            }
            self.engine.docker.start_container(&id, None).await.map_err(|e| {
                self.error(spec, format!("container {name} did not start: {}", with_hint(message_of(&e))))
            })?;
            let inspected = self
                .engine
                .docker
                .inspect_container(&id, None)
                .await
                .map_err(|e| self.error(spec, format!("cannot inspect container {name}: {}", message_of(&e))))?;
            let port = inspected
                .network_settings
                .and_then(|n| n.ports)
                .and_then(|ports| ports.get(&port_key).cloned().flatten())
                .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port?.parse::<u16>().ok()))
                .ok_or_else(|| {
                    let state = inspected.state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default();
                    self.error(spec, format!("container {name} has no published port for {port_key} (state {state:?})"))
                })?;
            Ok(SocketAddr::new(self.host, port))
        }
        .await;
        match result {
            Ok(addr) => Ok((id, addr)),
            Err(mut error) => {
                // What it printed before it died goes with it when it is
                // removed: keep it in the replica's log first.
                let options = LogsOptionsBuilder::new().follow(false).stdout(true).stderr(true).build();
                let copied = tokio::time::timeout(
                    Duration::from_secs(2),
                    append_output(self.engine.docker.logs(&id, Some(options)), &spec.log_path),
                )
                .await;
                let has_output = std::fs::metadata(&spec.log_path).is_ok_and(|m| m.len() > 0);
                if matches!(copied, Ok(Ok(()))) && has_output {
                    if let DriverError::Container { message, .. } = &mut error {
                        message.push_str(&format!(" (its output: `ebb logs {}`)", spec.replica_id));
                    }
                }
                if let Err(e) = self.remove(&id).await {
                    tracing::warn!(replica = %spec.replica_id, container = %id, error = %e, "Could not remove a container that failed to start.");
                }
                Err(error)
            }
        }
    }

    /// Watches a container: its exit (the engine's wait) and its output
    /// (followed into the replica's log file, from `since` on).
    fn watch(
        &self,
        id: &str,
        replica_id: &str,
        log_path: &Path,
        since: Option<i32>,
    ) -> watch::Receiver<Option<ExitReason>> {
        let (tx, rx) = watch::channel(None);
        let docker = self.engine.docker.clone();
        let container = id.to_string();
        tokio::spawn(async move {
            let reason = tokio::select! {
                reason = wait_for_exit(&docker, &container) => reason,
                _ = tx.closed() => return,
            };
            let _ = tx.send(Some(reason));
        });
        let docker = self.engine.docker.clone();
        let (container, replica, path) = (id.to_string(), replica_id.to_string(), log_path.to_path_buf());
        tokio::spawn(async move {
            if let Err(e) = follow_logs(&docker, &container, &path, since).await {
                tracing::warn!(%replica, error = %e, "Could not copy the container's output to its log file.");
            }
        });
        rx
    }
}

/// Resolves once the container has stopped, with how.
async fn wait_for_exit(docker: &Docker, id: &str) -> ExitReason {
    loop {
        let mut wait = docker.wait_container(id, None);
        match wait.next().await {
            Some(Ok(answer)) => return exit_reason_from_status(answer.status_code),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => return exit_reason_from_status(code),
            Some(Err(e)) if status_of(&e) == Some(404) => {
                return ExitReason::Unknown("the container was removed".into())
            }
            // The wait broke (engine restart, timeout): look, then wait again.
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match docker.inspect_container(id, None).await {
                    Err(e) if status_of(&e) == Some(404) => {
                        return ExitReason::Unknown("the container was removed".into())
                    }
                    Ok(c) => {
                        let state = c.state.unwrap_or_default();
                        if state.running != Some(true) {
                            return exit_reason_from_status(state.exit_code.unwrap_or(-1));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

async fn follow_logs(docker: &Docker, id: &str, path: &Path, since: Option<i32>) -> std::io::Result<()> {
    append_output(docker.logs(id, Some(follow_options(since))), path).await
}

/// Engine options to follow stdout and stderr, from `since` (Unix seconds) on.
pub(super) fn follow_options(since: Option<i32>) -> bollard::query_parameters::LogsOptions {
    let mut options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true);
    if let Some(since) = since {
        options = options.since(since);
    }
    options.build()
}

/// Appends a container's (or task's) output stream to a replica's log
/// file until the stream ends.
pub(super) async fn append_output(
    logs: impl futures_util::Stream<Item = Result<bollard::container::LogOutput, DockerError>>,
    path: &Path,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // 0640, like the process driver's logs: output may hold secrets.
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path).await?;
    let mut logs = std::pin::pin!(logs);
    while let Some(chunk) = logs.next().await {
        match chunk {
            Ok(output) => file.write_all(&output.into_bytes()).await?,
            Err(_) => break,
        }
    }
    file.flush().await
}

/// One stats reading of a container as ebb's usage.
async fn read_usage(docker: &Docker, id: &str) -> Option<GroupUsage> {
    let options = StatsOptionsBuilder::new().stream(false).one_shot(true).build();
    let mut stats = docker.stats(id, Some(options));
    let reading = tokio::time::timeout(STATS_TIMEOUT, stats.next()).await.ok()??.ok()?;
    usage_from_stats(&reading)
}

/// A stats answer as ebb's usage: cumulative CPU seconds, memory less the
/// inactive page cache, processes.
fn usage_from_stats(reading: &bollard::models::ContainerStatsResponse) -> Option<GroupUsage> {
    let cpu_ns = reading.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    let memory = reading.memory_stats.as_ref();
    let used = memory.and_then(|m| m.usage).unwrap_or(0);
    // As `docker stats`: the inactive page cache can be reclaimed, so it is
    // not the container's (cgroup v1 names it total_inactive_file).
    let inactive = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| s.get("total_inactive_file").or_else(|| s.get("inactive_file")).copied())
        .unwrap_or(0);
    let processes = reading.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0) as u32;
    Some(GroupUsage { cpu_seconds: cpu_ns as f64 / 1e9, rss_bytes: used.saturating_sub(inactive), processes })
}

/// Reads usage of every container replica at once, by replica id.
pub(crate) async fn usage_of(docker: &Docker, replicas: &[RunningReplica]) -> HashMap<String, GroupUsage> {
    let readings = replicas.iter().filter_map(|r| match &r.handle {
        ReplicaHandle::Container { id } => Some(async move { (r.replica_id.clone(), read_usage(docker, id).await) }),
        _ => None,
    });
    futures_util::future::join_all(readings).await.into_iter().filter_map(|(id, usage)| Some((id, usage?))).collect()
}

/// Stops a container politely (its stop signal, `timeout`, then SIGKILL)
/// and removes it; resolves with how it ended.
pub(crate) async fn stop_and_remove(
    docker: &Docker,
    replica: &RunningReplica,
    id: &str,
    timeout: Duration,
) -> Result<ExitReason, String> {
    // A stop that failed still ends in a forced removal (which kills): a
    // container ebb forgets must not keep running.
    let reason = match stop_container(docker, replica, id, timeout).await {
        Ok(reason) => reason,
        Err(stop_failed) => ExitReason::Unknown(format!("{stop_failed}; removed by force")),
    };
    match remove_container(docker, id).await {
        Ok(()) => Ok(reason),
        Err(e) => Err(format!("container {} ended ({reason}) but could not be removed: {}", short(id), message_of(&e))),
    }
}

/// Removes a container by force (killing it if it runs), ignoring "already
/// gone" (404) and "removal already in progress" (409).
/// The container id of a replica this driver runs.
fn container_of(replica: &RunningReplica) -> Result<&str, DriverError> {
    match &replica.handle {
        ReplicaHandle::Container { id } => Ok(id),
        other => Err(DriverError::Adopt {
            replica: replica.replica_id.clone(),
            why: format!("the docker driver cannot reach {other:?}"),
        }),
    }
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    match docker.remove_container(id, Some(options)).await {
        Err(e) if matches!(status_of(&e), Some(404) | Some(409)) => Ok(()),
        other => other,
    }
}

/// Stops a container politely (its stop signal, `timeout`, then SIGKILL);
/// resolves with how it ended. The container stays.
pub(crate) async fn stop_container(
    docker: &Docker,
    replica: &RunningReplica,
    id: &str,
    timeout: Duration,
) -> Result<ExitReason, String> {
    if !replica.has_exited() {
        let options = StopContainerOptionsBuilder::new().t(whole_seconds(timeout) as i32).build();
        // The engine answers once the container has stopped: up to the
        // stop timeout, beyond bollard's default request timeout (120 s).
        let docker = docker.clone().with_timeout(timeout + Duration::from_secs(30));
        match docker.stop_container(id, Some(options)).await {
            // 304: already stopped; 404: already gone.
            Ok(()) => {}
            Err(e) if matches!(status_of(&e), Some(304) | Some(404)) => {}
            Err(e) => return Err(format!("could not stop container {}: {}", short(id), message_of(&e))),
        }
    }
    // The engine has stopped it; the watcher reports how in a moment.
    let reason = match tokio::time::timeout(Duration::from_secs(10), replica.exited()).await {
        Ok(reason) => reason,
        Err(_) => match docker.inspect_container(id, None).await {
            Ok(c) => exit_reason_from_status(c.state.and_then(|s| s.exit_code).unwrap_or(-1)),
            Err(_) => ExitReason::Unknown("the container is gone".into()),
        },
    };
    Ok(reason)
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub(crate) fn short(id: &str) -> &str {
    // By characters: an id from a hand-edited state file may not be ASCII.
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// `docker pause` (the cgroup freezer).
    fn suspend<'a>(&'a self, replica: &'a RunningReplica) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let id = container_of(replica)?;
            self.engine.docker.pause_container(id).await.map_err(|e| DriverError::Freeze {
                replica: replica.replica_id.clone(),
                message: format!("could not pause container {}: {}", short(id), message_of(&e)),
            })
        })
    }

    /// `docker unpause`; a container that is not paused is left alone.
    fn resume<'a>(&'a self, replica: &'a RunningReplica) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let id = container_of(replica)?;
            match self.engine.docker.unpause_container(id).await {
                Ok(()) => Ok(()),
                Err(e) if message_of(&e).contains("is not paused") => Ok(()),
                Err(e) => Err(DriverError::Freeze {
                    replica: replica.replica_id.clone(),
                    message: format!("could not unpause container {}: {}", short(id), message_of(&e)),
                }),
            }
        })
    }

    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<RunningReplica, DriverError>> {
        Box::pin(async move {
            let (id, addr) = self.launch(spec).await?;
            let exit = self.watch(&id, &spec.replica_id, &spec.log_path, None);
            Ok(RunningReplica {
                replica_id: spec.replica_id.clone(),
                addr,
                pid: None,
                handle: ReplicaHandle::Container { id },
                exit,
            })
        })
    }

    fn stop<'a>(
        &'a self,
        replica: &'a RunningReplica,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExitReason, DriverError>> {
        Box::pin(async move {
            let ReplicaHandle::Container { id } = &replica.handle else {
                return Err(DriverError::Adopt {
                    replica: replica.replica_id.clone(),
                    why: format!("the docker driver cannot stop {:?}", replica.handle),
                });
            };
            stop_and_remove(&self.engine.docker, replica, id, timeout).await.map_err(|message| DriverError::Container {
                service: service_of(&replica.replica_id),
                replica: replica.replica_id.clone(),
                message,
            })
        })
    }

    fn discover<'a>(
        &'a self,
        service: &'a str,
        state_dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<FoundReplica>, DriverError>> {
        Box::pin(async move {
            let filters = HashMap::from([(
                "label",
                vec![
                    format!("{LABEL_SERVICE}={service}"),
                    format!("{LABEL_STATE_DIR}={}", state_dir.to_string_lossy()),
                ],
            )]);
            // All of them, stopped ones too: a container that exited while
            // ebb was down (or whose removal failed) is removed here, not
            // left behind.
            let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
            let containers =
                self.engine.docker.list_containers(Some(options)).await.map_err(|e| DriverError::Discover {
                    service: service.to_string(),
                    why: format!("the Docker engine at {}: {}", self.engine.endpoint, message_of(&e)),
                })?;
            let mut found = Vec::new();
            for c in containers {
                let running = c.state.as_ref().is_some_and(|s| s.to_string() == "running");
                if !running {
                    if let Some(id) = &c.id {
                        if let Err(e) = self.remove(id).await {
                            tracing::warn!(%service, container = %short(id), error = %message_of(&e), "Could not remove a stopped container of an earlier run.");
                        }
                    }
                    continue;
                }
                let labels = c.labels.unwrap_or_default();
                let (Some(id), Some(replica_id), Some(version), Some(port)) = (
                    c.id,
                    labels.get(LABEL_REPLICA).cloned(),
                    labels.get(LABEL_VERSION).and_then(|v| v.parse::<u64>().ok()),
                    labels.get(LABEL_CONTAINER_PORT).and_then(|p| p.parse::<u16>().ok()),
                ) else {
                    continue;
                };
                let published = c.ports.unwrap_or_default().into_iter().find_map(|p| {
                    (p.private_port == port && p.ip.as_deref() == Some(&self.host.to_string()))
                        .then_some(p.public_port)?
                });
                let Some(published) = published else { continue };
                found.push(FoundReplica {
                    service: service.to_string(),
                    replica_id,
                    version,
                    addr: SocketAddr::new(self.host, published),
                    handle: ReplicaHandle::Container { id },
                });
            }
            found.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
            Ok(found)
        })
    }

    fn adopt<'a>(&'a self, found: &'a FoundReplica) -> BoxFuture<'a, Result<RunningReplica, DriverError>> {
        Box::pin(async move {
            let adopt_error = |why: String| DriverError::Adopt { replica: found.replica_id.clone(), why };
            let ReplicaHandle::Container { id } = &found.handle else {
                return Err(adopt_error(format!("the docker driver cannot adopt {:?}", found.handle)));
            };
            let inspected = self
                .engine
                .docker
                .inspect_container(id, None)
                .await
                .map_err(|e| adopt_error(format!("container {}: {}", short(id), message_of(&e))))?;
            let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
            if labels.get(LABEL_REPLICA) != Some(&found.replica_id) {
                return Err(adopt_error(format!("container {} is not this replica's", short(id))));
            }
            if inspected.state.and_then(|s| s.running) != Some(true) {
                return Err(adopt_error(format!("container {} is no longer running", short(id))));
            }
            // Only output from now on: what came before ebb died is in the
            // log already; what the container printed while ebb was down is
            // only in `docker logs`.
            let now = Some((crate::clock::unix_ms(std::time::SystemTime::now()) / 1000) as i32);
            let log_path = found_log_path(found, &labels);
            let exit = self.watch(id, &found.replica_id, &log_path, now);
            Ok(RunningReplica::adopted(found, None, exit))
        })
    }

    fn usage<'a>(&'a self, replicas: &'a [RunningReplica]) -> BoxFuture<'a, HashMap<String, GroupUsage>> {
        Box::pin(usage_of(&self.engine.docker, replicas))
    }
}

/// Where an adopted replica's log goes: `<state_dir>/logs/<replica>.log`,
/// as for one ebb started.
fn found_log_path(found: &FoundReplica, labels: &HashMap<String, String>) -> std::path::PathBuf {
    let dir = labels.get(LABEL_STATE_DIR).map(std::path::PathBuf::from).unwrap_or_default();
    dir.join("logs").join(format!("{}.log", found.replica_id))
}

/// A replica id is `<service>-<suffix>`; the service, for messages.
pub(crate) fn service_of(replica_id: &str) -> String {
    replica_id.rsplit_once('-').map(|(s, _)| s.to_string()).unwrap_or_else(|| replica_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_gateway_defaults_to_the_subnets_first_address() {
        assert_eq!(first_host("172.17.0.0/16"), Some("172.17.0.1".parse().unwrap()));
        assert_eq!(first_host("10.9.8.64/26"), Some("10.9.8.65".parse().unwrap()));
        assert_eq!(first_host("192.168.5.77/24"), Some("192.168.5.1".parse().unwrap()));
        assert_eq!(first_host("fd00::/64"), None);
        assert_eq!(first_host("10.0.0.0/32"), None);
        assert_eq!(first_host("nonsense"), None);
    }

    /// A one-shot stats answer from Docker 20.10 (API 1.41, cgroup v1).
    const STATS_V1: &str = r#"{"read":"2026-11-25T01:05:00Z","preread":"0001-01-01T00:00:00Z",
        "cpu_stats":{"cpu_usage":{"total_usage":42243527,"percpu_usage":[31202481,11041046],"usage_in_kernelmode":20000000,"usage_in_usermode":10000000},"system_cpu_usage":4717350000000,"online_cpus":2,"throttling_data":{"periods":0,"throttled_periods":0,"throttled_time":0}},
        "precpu_stats":{"cpu_usage":{"total_usage":0,"usage_in_kernelmode":0,"usage_in_usermode":0},"throttling_data":{"periods":0,"throttled_periods":0,"throttled_time":0}},
        "memory_stats":{"usage":23556096,"max_usage":23556096,"stats":{"cache":20488192,"inactive_file":20484096,"rss":2088960,"total_inactive_file":20484096},"limit":25276502016},
        "pids_stats":{"current":4}}"#;

    #[test]
    fn stats_become_cumulative_cpu_seconds_and_memory_less_page_cache() {
        let reading: bollard::models::ContainerStatsResponse = serde_json::from_str(STATS_V1).unwrap();
        let usage = usage_from_stats(&reading).unwrap();
        assert!((usage.cpu_seconds - 0.042243527).abs() < 1e-12, "{usage:?}");
        assert_eq!(usage.rss_bytes, 23556096 - 20484096);
        assert_eq!(usage.processes, 4);
        // Two readings 1 s apart, 0.25 s of CPU more, on a 0.5-core
        // allotment: the meter says 50 %, as Δcpu/Δsystem × online CPUs
        // would (Δsystem = 2 CPUs × 1 s).
        let mut meter = crate::metrics::cpu::CpuMeter::default();
        let t0 = std::time::Instant::now();
        assert_eq!(meter.utilisation("r", t0, &usage, 0.5), None);
        let later = GroupUsage { cpu_seconds: usage.cpu_seconds + 0.25, ..usage };
        let pct = meter.utilisation("r", t0 + Duration::from_secs(1), &later, 0.5).unwrap();
        let docker_formula = 0.25e9 / 2e9 * 2.0 * 100.0 / 0.5;
        assert!((pct - docker_formula).abs() < 1e-9, "{pct} vs {docker_formula}");
    }

    #[test]
    fn exit_statuses_above_128_are_signals() {
        assert_eq!(exit_reason_from_status(0), ExitReason::Exited(0));
        assert_eq!(exit_reason_from_status(3), ExitReason::Exited(3));
        assert_eq!(exit_reason_from_status(137), ExitReason::Signaled(9));
        assert_eq!(exit_reason_from_status(143), ExitReason::Signaled(15));
    }

    #[test]
    fn commands_map_to_the_container_cmd() {
        assert_eq!(container_cmd(&CommandSpec::Argv(vec![])), None, "the image's own command");
        assert_eq!(
            container_cmd(&CommandSpec::Argv(vec!["/ebb".into(), "demo-app".into()])),
            Some(vec!["/ebb".into(), "demo-app".into()])
        );
        assert_eq!(
            container_cmd(&CommandSpec::Shell("app --port $PORT".into())),
            Some(vec!["/bin/sh".into(), "-c".into(), "app --port $PORT".into()])
        );
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds(Duration::from_millis(300)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(service_of("web-1a2b3c"), "web");
        assert_eq!(service_of("my-api-1a2b3c"), "my-api");
    }
}
