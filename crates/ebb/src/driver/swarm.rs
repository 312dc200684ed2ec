//! [`SwarmDriver`]: each replica is the one task of its own Docker Swarm
//! service. Swarm has no autoscaler of its own; ebb is it.
//!
//! **Design** (`docs/swarm.md` tells users the same):
//!
//! - One Swarm service per *replica*, named
//!   `ebb-<service>-v<version>-<hash of the state dir>-<replica suffix>`, in
//!   replicated mode with a count of 0 or 1, labelled like the docker
//!   driver's containers (with `ebb.replica`). Why not one service per
//!   version with a count: with restart policy `none`, Swarm keeps counting
//!   the slot of a stopped or lost task, and when the count goes down it
//!   picks the task to remove itself (node balance first), so a lost node
//!   made it remove a healthy replica and leave the fleet one short. Its port is published in
//!   **host mode** on a port the engine picks, so a task's endpoint is its
//!   node's address + that port: ebb balances to tasks on any node directly,
//!   with its own health checks and metrics (no routing mesh in between).
//! - **Restart policy `none`.** ebb replaces a task that fails, after its
//!   own health checks, exactly as for processes; Swarm restarting tasks
//!   behind ebb's back would change endpoints under the balancer.
//! - **Start** = create the replica's service, count 0 -> 1, then wait for
//!   the new task to run and read its endpoint; a task Swarm rejects (no
//!   such image on the node, no room) is an error naming the service and
//!   replica, and the count goes back down.
//! - **Stop: ebb picks who leaves, not Swarm.** Scaling a Swarm service
//!   down lets Swarm choose the task (it prefers non-running ones, then the
//!   nodes with the most copies), so ebb first drains the replica it chose
//!   (as always), then stops that task's container (stop signal,
//!   `stop_timeout`, SIGKILL; with restart `none` Swarm does not replace it),
//!   and only then lowers the count: Swarm then has nothing running to
//!   remove. This needs the container's engine: its own node's, or another
//!   node's through [`NODE_HOST_VAR`]; for a task on a node it cannot reach
//!   it waits until Swarm shuts the task down (a lost node), then lowers
//!   the count (Swarm chooses only if that never happens).
//! - **Deploys are ebb's**, not Swarm's rolling update: a new version is a
//!   new Swarm service, and ebb's planner starts, health-gates, switches
//!   traffic (rolling or blue-green) and rolls back, as for every driver.
//!   Swarm's update would replace tasks without ebb's health gate and move
//!   endpoints under the balancer.
//! - **Placement:** the service's `placement.constraints`, then, with
//!   `placement.spread`, a pin to the attribute value the fewest replicas
//!   have (`spread.rs`: Swarm's own spread preference only works among one
//!   Swarm service's tasks), then ebb's avoid-constraints.
//! - **Adoption:** tasks are found by the service labels; the replica id of
//!   each task is kept in `<state_dir>/swarm-replicas.json`.
//! - **Usage** is read from the engine of each task's node (its own, or
//!   another through [`NODE_HOST_VAR`]); tasks on nodes it cannot reach are
//!   absent from the sample: policies average what they can read.
//! - **Parallel starts:** the per-service lock covers only count changes;
//!   concurrent starts share the task list from before the first of them
//!   and each claims one new running task.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec, Limit,
    NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder, UpdateServiceOptionsBuilder};
use tokio::sync::{watch, Mutex};

use super::docker::{
    container_cmd, engine_mounts, exit_reason_from_status, message_of, service_of, short, status_of, stop_container,
    usage_of, whole_seconds, with_labels, Engine, LABEL_CONTAINER_PORT, LABEL_REPLICA, LABEL_SERVICE, LABEL_STATE_DIR,
    LABEL_VERSION,
};
use super::spread;
use super::{
    BoxFuture, Driver, DriverError, ExitReason, FoundReplica, GroupUsage, ReplicaHandle, ReplicaSpec, RunningReplica,
};

/// How long a new task may take to run (image on the node, scheduling).
const TASK_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Adds `delta` to a Swarm service's replica count; returns the new count.
/// Swarm refuses an update based on a stale object version ("update out of
/// sequence", e.g. just after the service was created or while it records
/// task changes): read it again and retry.
async fn change_count_of(docker: &bollard::Docker, name: &str, delta: i64) -> Result<i64, String> {
    let mut attempt = 0;
    loop {
        match try_change_count(docker, name, delta).await {
            Err(e) if e.contains("out of sequence") && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            other => return other,
        }
    }
}

async fn try_change_count(docker: &bollard::Docker, name: &str, delta: i64) -> Result<i64, String> {
    let service = docker.inspect_service(name, None).await.map_err(|e| message_of(&e))?;
    let version = service.version.and_then(|v| v.index).unwrap_or(0);
    let mut spec = service.spec.unwrap_or_default();
    let mode = spec.mode.get_or_insert_with(Default::default);
    let replicated = mode.replicated.get_or_insert_with(Default::default);
    let count = (replicated.replicas.unwrap_or(0) + delta).max(0);
    replicated.replicas = Some(count);
    let options = UpdateServiceOptionsBuilder::new().version(version as i32).build();
    docker.update_service(name, spec, options, None).await.map_err(|e| message_of(&e))?;
    Ok(count)
}

/// How long a node whose engine did not answer is kept out of new
/// replicas' placement.
const UNREACHABLE_FOR: Duration = Duration::from_secs(60);
/// How long a new task may wait on its node before ebb checks that the node
/// answers.
const STUCK_AFTER: Duration = Duration::from_secs(2);
/// How long a stop waits for Swarm to shut down a task on a node ebb cannot
/// reach (a lost node is seen down after about 15 s) before lowering the count.
const LOST_TASK_WAIT: Duration = Duration::from_secs(45);
/// How often task states are polled.
const POLL: Duration = Duration::from_millis(250);

/// Runs each replica as a task of a Swarm service (see the module doc).
pub struct SwarmDriver {
    engine: Engine,
    /// One lock per Swarm service, held while its count changes (never
    /// while a task starts or stops: replicas start and stop in parallel).
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Tasks a start has taken for its replica: starts running alongside
    /// never take the same one.
    claimed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Starts under way per Swarm service, and the tasks there were before
    /// the first of them.
    pending: std::sync::Mutex<HashMap<String, (usize, Vec<String>)>>,
    /// Serialises the task -> replica id files.
    ids_lock: std::sync::Mutex<()>,
    /// This engine's own node id.
    own_node: String,
    /// How to reach another node's engine ([`NODE_HOST_VAR`]), if set.
    node_host: Option<String>,
    /// Node of each task a replica runs as (task id -> node id).
    task_nodes: std::sync::Mutex<HashMap<String, String>>,
    /// Nodes whose engine did not answer, and when: a new replica's service
    /// is kept off them for [`UNREACHABLE_FOR`] (Swarm sees a lost node down
    /// only after about 15 s, and would place tasks there meanwhile).
    unreachable: std::sync::Mutex<HashMap<String, Instant>>,
    /// Engines of other nodes, by endpoint (connected once).
    engines: Mutex<HashMap<String, bollard::Docker>>,
}

/// The environment variable naming how ebb reaches each node's engine: a
/// `DOCKER_HOST`-like endpoint with `{hostname}`, `{addr}` (the node's
/// address) or `{id}` in it, e.g. `tcp://{addr}:2375` or
/// `unix:///tmp/ebb-local-swarm/{hostname}.sock`. With it, ebb stops exactly
/// the task it chose and reads CPU on every node; without it, only on its
/// own node (docs/swarm.md).
pub const NODE_HOST_VAR: &str = "EBB_SWARM_NODE_HOST";

/// One start under way (see [`SwarmDriver::pending`]); ends with it.
struct PendingStart<'a> {
    driver: &'a SwarmDriver,
    name: String,
}

impl Drop for PendingStart<'_> {
    fn drop(&mut self) {
        let mut pending = self.driver.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, _)) = pending.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.name);
            }
        }
    }
}

/// A swarm node as ebb names and reaches it.
#[derive(Debug, Clone)]
struct NodeInfo {
    hostname: String,
    addr: IpAddr,
}

impl std::fmt::Debug for SwarmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmDriver").field("engine", &self.engine).finish()
    }
}

impl SwarmDriver {
    /// Checks that the engine is a swarm manager: only a manager can set a
    /// service's replica count.
    pub async fn new(engine: Engine) -> Result<SwarmDriver, String> {
        let info = engine
            .docker
            .info()
            .await
            .map_err(|e| format!("cannot read the Docker engine's info: {}", message_of(&e)))?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm.local_node_state.map(|s| s.to_string()).unwrap_or_default();
        if state != "active" {
            return Err(format!(
                "the Docker engine at {} is not in a swarm (state {state:?}); run `docker swarm init` (or join one as a manager) first",
                engine.endpoint
            ));
        }
        if swarm.control_available != Some(true) {
            return Err(format!(
                "the Docker engine at {} is a swarm worker; ebb must run on a manager node to set replica counts (`docker node promote`)",
                engine.endpoint
            ));
        }
        let own_node = swarm.node_id.clone().unwrap_or_default();
        let node_host = std::env::var(NODE_HOST_VAR).ok().filter(|v| !v.trim().is_empty());
        Ok(SwarmDriver {
            engine,
            locks: Default::default(),
            claimed: Default::default(),
            pending: Default::default(),
            ids_lock: Default::default(),
            own_node,
            node_host,
            task_nodes: Default::default(),
            unreachable: Default::default(),
            engines: Default::default(),
        })
    }

    fn lock_for(&self, service: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(service.to_string()).or_default().clone()
    }

    /// Takes a task for a replica; false when another start took it first.
    fn claim(&self, task: &str) -> bool {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner()).insert(task.to_string())
    }

    fn unclaim(&self, task: &str) {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner()).remove(task);
    }

    fn is_claimed(&self, task: &str) -> bool {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner()).contains(task)
    }

    fn error(&self, spec: &ReplicaSpec, message: impl Into<String>) -> DriverError {
        DriverError::container(spec, message)
    }

    /// The Swarm service's spec for one version of an ebb service.
    /// `pin`: the `ATTRIBUTE==VALUE` constraint `placement.spread` chose.
    fn service_spec(&self, spec: &ReplicaSpec, name: &str, pin: Option<&str>) -> Result<ServiceSpec, DriverError> {
        let Some(container) = &spec.container else {
            return Err(self.error(spec, "the swarm driver needs an image (driver = \"swarm\" with image = ...)"));
        };
        let labels = with_labels(
            HashMap::from([
                (LABEL_SERVICE.to_string(), spec.service.clone()),
                (LABEL_VERSION.to_string(), spec.version.to_string()),
                (LABEL_STATE_DIR.to_string(), spec.state_dir.to_string_lossy().into_owned()),
                (LABEL_CONTAINER_PORT.to_string(), container.container_port.to_string()),
                (LABEL_REPLICA.to_string(), spec.replica_id.clone()),
            ]),
            &container.options,
        );
        let options = &container.options;
        // The file's constraints, then ebb's own (nodes seen unreachable).
        let mut constraints = options.placement.constraints.clone();
        constraints.extend(pin.map(String::from));
        constraints.extend(self.avoid_constraints());
        let preferences = options.placement.spread.as_ref().map(|s| {
            vec![TaskSpecPlacementPreferences {
                spread: Some(TaskSpecPlacementSpread { spread_descriptor: Some(s.clone()) }),
            }]
        });
        let networks: Vec<NetworkAttachmentConfig> = options
            .networks
            .iter()
            .map(|n| NetworkAttachmentConfig { target: Some(n.clone()), ..Default::default() })
            .collect();
        // One spec for every task: per-replica values (the replica token,
        // the loopback admin URL) cannot be in it.
        let mut env: Vec<String> = spec
            .env
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "EBB_REPLICA_TOKEN" | "EBB_ADMIN_URL"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("PORT={}", container.container_port));
        env.push(format!("EBB_SERVICE={}", spec.service));
        env.push(format!("EBB_REPLICA_ID={}", spec.replica_id));
        env.push(format!("EBB_VERSION={}", spec.version));
        Ok(ServiceSpec {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(container.image.clone()),
                    labels: Some(labels),
                    // Swarm's `command` is the entrypoint; `args` is CMD, as
                    // the docker driver's command override.
                    args: container_cmd(&spec.command),
                    env: Some(env),
                    stop_grace_period: Some(whole_seconds(container.stop_timeout) * 1_000_000_000),
                    user: options.user.clone(),
                    mounts: engine_mounts(options),
                    ..Default::default()
                }),
                networks: (!networks.is_empty()).then_some(networks),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: container.nano_cpus(),
                        memory_bytes: container.memory.map(|m| m as i64),
                        pids: None,
                    }),
                    // Reserved as well as limited: Swarm places a task only
                    // where its CPUs are free (else it stays pending, "no
                    // suitable node"), and `[cluster]` sizes the nodes by it.
                    reservations: Some(bollard::models::ResourceObject {
                        nano_cpus: container.nano_cpus(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                placement: Some(bollard::models::TaskSpecPlacement {
                    constraints: Some(constraints).filter(|c| !c.is_empty()),
                    preferences,
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(container.container_port as i64),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Adds `delta` to the service's replica count; returns the new count.
    /// Swarm refuses an update based on a stale object version ("update
    /// out of sequence", e.g. just after the service was created or while
    /// it records task changes): read it again and retry.
    async fn change_count(&self, name: &str, delta: i64) -> Result<i64, String> {
        change_count_of(&self.engine.docker, name, delta).await
    }

    async fn tasks_of(&self, name: &str) -> Result<Vec<Task>, String> {
        let filters = HashMap::from([("service", vec![name.to_string()])]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        self.engine.docker.list_tasks(Some(options)).await.map_err(|e| message_of(&e))
    }

    /// The address a task is reached at: its node's address and the port
    /// published for it.
    async fn endpoint(&self, task: &Task, container_port: u16) -> Option<SocketAddr> {
        let port = task
            .status
            .as_ref()?
            .port_status
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.target_port == Some(container_port as i64))?
            .published_port? as u16;
        let node = self.node_info(task.node_id.as_deref()?).await?;
        Some(SocketAddr::new(node.addr, port))
    }

    /// A node's hostname and the address others reach it at.
    async fn node_info(&self, node_id: &str) -> Option<NodeInfo> {
        let node = self.engine.docker.inspect_node(node_id).await.ok()?;
        let hostname =
            node.description.as_ref().and_then(|d| d.hostname.clone()).unwrap_or_else(|| short(node_id).to_string());
        // A manager often reports its status address as 0.0.0.0 or
        // 127.0.0.1 (moby#35437); its manager address (`ip:2377`) names
        // the host the others reach it at. Loopback only when nothing else
        // is known (a single-node swarm).
        let usable = |ip: &IpAddr| !ip.is_unspecified() && !ip.is_loopback();
        let status_ip = node.status.and_then(|s| s.addr).and_then(|a| a.parse::<IpAddr>().ok());
        let manager_ip = node
            .manager_status
            .and_then(|m| m.addr)
            .and_then(|a| a.parse::<SocketAddr>().ok().map(|s| s.ip()).or_else(|| a.parse::<IpAddr>().ok()));
        let addr = status_ip
            .filter(usable)
            .or(manager_ip.filter(usable))
            .or(status_ip.filter(|ip| !ip.is_unspecified()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        Some(NodeInfo { hostname, addr })
    }

    /// `ATTRIBUTE==VALUE` for a new replica of a service with
    /// `placement.spread`: the value of the usable nodes (meeting the
    /// service's constraints, not seen unreachable) that the fewest of its
    /// replicas' Swarm services are pinned to. `None` (Swarm chooses) when
    /// no such node has the attribute, or the nodes cannot be read.
    async fn spread_pin(&self, spec: &ReplicaSpec) -> Option<String> {
        let placement = &spec.container.as_ref()?.options.placement;
        let attr = placement.spread.as_deref()?;
        let avoid = self.avoid_constraints();
        let nodes = match self.engine.docker.list_nodes(None::<bollard::query_parameters::ListNodesOptions>).await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::warn!(replica = %spec.replica_id, error = %message_of(&e), "Cannot list the nodes to spread over; Swarm places this replica.");
                return None;
            }
        };
        let values: std::collections::BTreeSet<String> = nodes
            .iter()
            .filter(|n| {
                spread::usable(n) && spread::satisfies(n, &placement.constraints) && spread::satisfies(n, &avoid)
            })
            .filter_map(|n| spread::attribute(n, attr))
            .collect();
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_SERVICE}={}", spec.service),
                format!("{LABEL_STATE_DIR}={}", spec.state_dir.to_string_lossy()),
            ],
        )]);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        let services = self.engine.docker.list_services(Some(options)).await.unwrap_or_default();
        let value = spread::least_used(&values, &spread::pinned(&services, attr))?;
        Some(format!("{attr}=={value}"))
    }

    /// `node.id!=…` for each node seen unreachable lately.
    fn avoid_constraints(&self) -> Vec<String> {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        unreachable.retain(|_, since| since.elapsed() < UNREACHABLE_FOR);
        let mut nodes: Vec<String> = unreachable.keys().map(|n| format!("node.id!={n}")).collect();
        nodes.sort();
        nodes
    }

    /// Whether a node's engine answers (true when ebb cannot tell: no
    /// [`NODE_HOST_VAR`]).
    async fn node_answers(&self, node: &str) -> bool {
        if node == self.own_node || self.node_host.is_none() {
            return true;
        }
        let Some(docker) = self.engine_of_node(node).await else { return false };
        matches!(tokio::time::timeout(Duration::from_secs(1), docker.ping()).await, Ok(Ok(_)))
    }

    /// A task of a replica's own service sits on a node that does not
    /// answer: the service is updated to avoid that node (and every other
    /// one seen unreachable), and Swarm replaces the task elsewhere.
    async fn place_elsewhere(&self, name: &str, node: &str) -> Result<(), String> {
        self.unreachable.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), Instant::now());
        let service = self.engine.docker.inspect_service(name, None).await.map_err(|e| message_of(&e))?;
        let version = service.version.and_then(|v| v.index).unwrap_or(0);
        let mut spec = service.spec.unwrap_or_default();
        let template = spec.task_template.get_or_insert_with(Default::default);
        // The file's constraints stay; ebb's avoid-constraints are added.
        let placement = template.placement.get_or_insert_with(Default::default);
        let mut constraints = placement.constraints.take().unwrap_or_default();
        for avoid in self.avoid_constraints() {
            if !constraints.contains(&avoid) {
                constraints.push(avoid);
            }
        }
        placement.constraints = Some(constraints);
        // The new task first: the old one cannot be confirmed stopped on a
        // node that does not answer.
        spec.update_config = Some(bollard::models::ServiceSpecUpdateConfig {
            order: Some(bollard::models::ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            ..Default::default()
        });
        let options = UpdateServiceOptionsBuilder::new().version(version as i32).build();
        self.engine.docker.update_service(name, spec, options, None).await.map_err(|e| message_of(&e))?;
        Ok(())
    }

    /// The node a task runs on (remembered from its start or adoption).
    async fn node_of_task(&self, task: &str) -> Option<String> {
        if let Some(node) = self.task_nodes.lock().unwrap_or_else(|p| p.into_inner()).get(task) {
            return Some(node.clone());
        }
        let node = self.engine.docker.inspect_task(task).await.ok()?.node_id?;
        self.task_nodes.lock().unwrap_or_else(|p| p.into_inner()).insert(task.to_string(), node.clone());
        Some(node)
    }

    /// The engine of the node a task runs on: ebb's own, or another node's
    /// through [`NODE_HOST_VAR`]. None when it cannot be reached.
    async fn engine_of_task(&self, task: &str) -> Option<bollard::Docker> {
        let node = self.node_of_task(task).await?;
        self.engine_of_node(&node).await
    }

    /// A node's engine: ebb's own, or another's through [`NODE_HOST_VAR`].
    async fn engine_of_node(&self, node: &str) -> Option<bollard::Docker> {
        if node == self.own_node {
            return Some(self.engine.docker.clone());
        }
        let template = self.node_host.as_ref()?;
        let info = self.node_info(node).await?;
        let endpoint = template
            .replace("{hostname}", &info.hostname)
            .replace("{addr}", &info.addr.to_string())
            .replace("{id}", node);
        let mut engines = self.engines.lock().await;
        if let Some(docker) = engines.get(&endpoint) {
            return Some(docker.clone());
        }
        match Engine::connect_to(&endpoint).await {
            Ok(engine) => {
                engines.insert(endpoint, engine.docker.clone());
                Some(engine.docker)
            }
            Err(e) => {
                tracing::warn!(node = %info.hostname, error = %e, "Cannot reach a swarm node's engine.");
                None
            }
        }
    }

    fn ids_path(state_dir: &Path) -> PathBuf {
        state_dir.join("swarm-replicas.json")
    }

    /// Task id -> replica id, as recorded for this state dir.
    fn read_ids(&self, state_dir: &Path) -> BTreeMap<String, String> {
        let _guard = self.ids_lock.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::read_to_string(Self::ids_path(state_dir))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    fn write_id(&self, state_dir: &Path, task: &str, replica: Option<&str>) {
        let _guard = self.ids_lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = Self::ids_path(state_dir);
        let mut ids: BTreeMap<String, String> =
            std::fs::read_to_string(&path).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
        match replica {
            Some(replica) => ids.insert(task.to_string(), replica.to_string()),
            None => ids.remove(task),
        };
        let _ = std::fs::create_dir_all(state_dir);
        if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&ids).unwrap_or_default()) {
            tracing::warn!(path = %path.display(), error = %e, "Could not record which task is which replica.");
        }
    }

    /// Watches a task: its end (polled) and its output (followed into the
    /// replica's log file).
    fn watch(
        &self,
        task: &str,
        replica_id: &str,
        log_path: &Path,
        since: Option<i32>,
    ) -> watch::Receiver<Option<ExitReason>> {
        let (tx, rx) = watch::channel(None);
        let docker = self.engine.docker.clone();
        let task_id = task.to_string();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
                let reason = match docker.inspect_task(&task_id).await {
                    Err(e) if status_of(&e) == Some(404) => Some(ExitReason::Unknown("its task was removed".into())),
                    Err(_) => None,
                    // Its node's state too: a node Swarm sees down has lost
                    // its tasks (named in the reason, hence in the event).
                    Ok(task) => match task.node_id.as_deref() {
                        Some(node_id) => {
                            let node = docker.inspect_node(node_id).await.ok();
                            let hostname = node
                                .as_ref()
                                .and_then(|n| n.description.as_ref()?.hostname.clone())
                                .unwrap_or_else(|| short(node_id).to_string());
                            let down = node.as_ref().and_then(|n| n.status.as_ref()?.state)
                                == Some(bollard::models::NodeState::DOWN);
                            match task_end(&task) {
                                Some(ExitReason::Unknown(why)) => {
                                    Some(ExitReason::Unknown(format!("{why} (on node {hostname})")))
                                }
                                Some(other) => Some(other),
                                None if down => Some(ExitReason::Unknown(format!("its node {hostname} is down"))),
                                None => None,
                            }
                        }
                        None => task_end(&task),
                    },
                };
                if let Some(reason) = reason {
                    let _ = tx.send(Some(reason));
                    return;
                }
            }
        });
        let docker = self.engine.docker.clone();
        let (task_id, replica, path) = (task.to_string(), replica_id.to_string(), log_path.to_path_buf());
        tokio::spawn(async move {
            let logs = docker.task_logs(&task_id, Some(super::docker::follow_options(since)));
            let result = super::docker::append_output(logs, &path).await;
            if let Err(e) = result {
                tracing::warn!(%replica, error = %e, "Could not copy the task's output to its log file.");
            }
        });
        rx
    }

    /// Scale-in bookkeeping after a task has ended: one fewer replica, and
    /// no Swarm service left behind once none runs.
    ///
    /// The service is deleted only once Swarm has settled after the count
    /// change: deleting a service while its orchestrator is still removing
    /// tasks crashes Docker 20.10's swarmkit (a nil task in
    /// `SetServiceTasksRemove` takes the whole daemon down).
    async fn release_slot(&self, name: &str) -> Result<(), String> {
        let count = self.change_count(name, -1).await?;
        if count == 0 {
            self.wait_until_settled(name).await;
            match self.engine.docker.delete_service(name).await {
                Err(e) if status_of(&e) != Some(404) => return Err(message_of(&e)),
                _ => {}
            }
        }
        Ok(())
    }
}

impl SwarmDriver {
    /// Deletes a Swarm service whose count is 0: one created for a first
    /// replica that never got its slot.
    async fn delete_if_unused(&self, name: &str) {
        let replicas =
            self.engine.docker.inspect_service(name, None).await.ok().and_then(|s| s.spec?.mode?.replicated?.replicas);
        if replicas == Some(0) {
            self.wait_until_settled(name).await;
            if let Err(e) = self.engine.docker.delete_service(name).await {
                tracing::warn!(service = %name, error = %message_of(&e), "Could not delete an unused Swarm service.");
            }
        }
    }

    /// Waits (up to [`SETTLE_MAX`]) until no task of the service is meant
    /// to run, those Swarm removes are gone, and three readings
    /// [`SETTLE_POLL`] apart agree.
    async fn wait_until_settled(&self, name: &str) {
        let deadline = Instant::now() + SETTLE_MAX;
        let mut previous: Option<Vec<String>> = None;
        let mut steady = 0;
        while Instant::now() < deadline {
            tokio::time::sleep(SETTLE_POLL).await;
            let Ok(tasks) = self.tasks_of(name).await else { return };
            let busy = tasks.iter().any(|t| {
                matches!(t.desired_state, Some(TaskState::RUNNING) | Some(TaskState::READY) | Some(TaskState::REMOVE))
            });
            let now: Vec<String> = tasks
                .iter()
                .map(|t| format!("{:?}/{:?}/{:?}", t.id, t.desired_state, t.status.as_ref().and_then(|s| s.state)))
                .collect();
            if !busy && previous.as_ref() == Some(&now) {
                steady += 1;
                if steady >= 2 {
                    return;
                }
            } else {
                steady = 0;
            }
            previous = Some(now);
        }
        tracing::warn!(service = %name, "Swarm had not settled after {} s; deleting the service anyway.", SETTLE_MAX.as_secs());
    }
}

/// How long to wait for Swarm to settle before deleting a service, and how
/// often to look.
const SETTLE_MAX: Duration = Duration::from_secs(15);
const SETTLE_POLL: Duration = Duration::from_millis(500);

/// Whether a task has ended, and how.
fn task_end(task: &Task) -> Option<ExitReason> {
    let status = task.status.as_ref()?;
    let state = status.state?;
    let code = status.container_status.as_ref().and_then(|c| c.exit_code);
    match state {
        TaskState::COMPLETE | TaskState::FAILED => Some(match code {
            Some(code) => exit_reason_from_status(code),
            // COMPLETE means it exited 0; a FAILED task without a code never
            // ran far enough to have one (e.g. its container could not start).
            None if state == TaskState::COMPLETE => ExitReason::Exited(0),
            None => ExitReason::Unknown(format!(
                "Swarm reports the task failed: {}",
                status.err.clone().or(status.message.clone()).unwrap_or_default()
            )),
        }),
        TaskState::SHUTDOWN | TaskState::REJECTED | TaskState::REMOVE | TaskState::ORPHANED => Some(match code {
            Some(code) if state == TaskState::SHUTDOWN => exit_reason_from_status(code),
            _ => ExitReason::Unknown(format!(
                "Swarm reports the task {state}: {}",
                status.err.clone().or(status.message.clone()).unwrap_or_default()
            )),
        }),
        _ if matches!(task.desired_state, Some(TaskState::SHUTDOWN) | Some(TaskState::REMOVE)) => {
            // Swarm gave up on it (its node left or went down).
            Some(ExitReason::Unknown(format!("Swarm shut the task down (it was {state})")))
        }
        _ => None,
    }
}

/// A short, stable hash of the state dir: two ebbs on one swarm never share
/// a Swarm service.
fn state_hash(state_dir: &Path) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in state_dir.to_string_lossy().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:06x}", h & 0xff_ffff)
}

/// The prefix of the Swarm services of one version of an ebb service.
pub fn swarm_service_name(service: &str, version: u64, state_dir: &Path) -> String {
    let service: String = service.chars().take(40).collect();
    format!("ebb-{service}-v{version}-{}", state_hash(state_dir))
}

/// The Swarm service of one replica: `ebb-<service>-v<N>-<hash>-<replica
/// suffix>`, at most 63 characters.
pub fn replica_service_name(service: &str, version: u64, state_dir: &Path, replica_id: &str) -> String {
    let suffix = replica_id.strip_prefix(&format!("{service}-")).unwrap_or(replica_id);
    let suffix: String = suffix.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut name = format!("{}-{suffix}", swarm_service_name(service, version, state_dir));
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

impl Driver for SwarmDriver {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<RunningReplica, DriverError>> {
        Box::pin(async move {
            // One Swarm service per replica (count 0 or 1): retiring a
            // replica removes exactly its service; Swarm never picks.
            let name = replica_service_name(&spec.service, spec.version, &spec.state_dir, &spec.replica_id);
            let container_port = spec.container.as_ref().map(|c| c.container_port).unwrap_or(8080);
            // With `placement.spread`, one start at a time per service
            // picks its value and creates its service, so two parallel
            // starts never both take the least-used one.
            let spread_held = match spec.container.as_ref().and_then(|c| c.options.placement.spread.as_ref()) {
                Some(_) => {
                    let key = format!("spread/{}/{}", spec.service, state_hash(&spec.state_dir));
                    Some(self.lock_for(&key).lock_owned().await)
                }
                None => None,
            };
            let pin = match spread_held {
                Some(_) => self.spread_pin(spec).await,
                None => None,
            };
            // The lock covers the count change only, not the wait for the
            // task: k replicas start in parallel (in about one start time).
            let known: Vec<String> = {
                let lock = self.lock_for(&name);
                let _held = lock.lock().await;
                // The Swarm service of this version, created at its first replica.
                if let Err(e) = self.engine.docker.inspect_service(&name, None).await {
                    if status_of(&e) != Some(404) {
                        return Err(
                            self.error(spec, format!("cannot inspect Swarm service {name}: {}", message_of(&e)))
                        );
                    }
                    let service_spec = self.service_spec(spec, &name, pin.as_deref())?;
                    self.engine.docker.create_service(service_spec, None).await.map_err(|e| {
                        self.error(spec, format!("cannot create Swarm service {name}: {}", message_of(&e)))
                    })?;
                }
                // The tasks before the first of the starts running together:
                // every task since is one of theirs (a later snapshot would
                // hide a task another start added for this one to take).
                let shared = self.pending.lock().unwrap_or_else(|p| p.into_inner()).get(&name).map(|(_, k)| k.clone());
                let known: Vec<String> = match shared {
                    Some(known) => known,
                    None => match self.tasks_of(&name).await {
                        Ok(tasks) => tasks.into_iter().filter_map(|t| t.id).collect(),
                        Err(e) => {
                            self.delete_if_unused(&name).await;
                            return Err(self.error(spec, format!("cannot list the tasks of {name}: {e}")));
                        }
                    },
                };
                if let Err(e) = self.change_count(&name, 1).await {
                    self.delete_if_unused(&name).await;
                    return Err(self.error(spec, format!("cannot scale Swarm service {name}: {e}")));
                }
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.entry(name.clone()).or_insert_with(|| (0, known.clone())).0 += 1;
                known
            };
            drop(spread_held);
            let _pending = PendingStart { driver: self, name: name.clone() };
            let deadline = Instant::now() + TASK_START_TIMEOUT;
            // When each new task was first seen (one stuck on a lost node).
            let mut first_seen: HashMap<String, Instant> = HashMap::new();
            // Tasks left on a node that did not answer (not this replica's).
            let mut abandoned: Vec<String> = Vec::new();
            // A new task that runs but cannot be used: stopped before the
            // count goes back, so Swarm removes that one and not a replica
            // that serves.
            let mut unusable: Option<String> = None;
            let failure = loop {
                tokio::time::sleep(POLL).await;
                let tasks = match self.tasks_of(&name).await {
                    Ok(tasks) => tasks,
                    Err(e) => break format!("cannot list the tasks of {name}: {e}"),
                };
                // Tasks new since this start raised the count, not claimed
                // by a start running alongside: any of them is this start's
                // (each start adds one slot, and claims one task).
                let new: Vec<Task> = tasks
                    .into_iter()
                    .filter(|t| {
                        t.id.as_ref()
                            .is_some_and(|id| !known.contains(id) && !abandoned.contains(id) && !self.is_claimed(id))
                    })
                    .collect();
                let running = new.iter().find(|t| {
                    t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
                        && t.desired_state == Some(TaskState::RUNNING)
                });
                if let Some(task) = running {
                    let id = task.id.clone().unwrap_or_default();
                    if !self.claim(&id) {
                        continue;
                    }
                    let container = task
                        .status
                        .as_ref()
                        .and_then(|s| s.container_status.as_ref())
                        .and_then(|c| c.container_id.clone());
                    match self.endpoint(task, container_port).await {
                        Some(addr) => {
                            if let Some(node) = &task.node_id {
                                self.task_nodes
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(id.clone(), node.clone());
                            }
                            self.write_id(&spec.state_dir, &id, Some(&spec.replica_id));
                            let exit = self.watch(&id, &spec.replica_id, &spec.log_path, None);
                            return Ok(RunningReplica {
                                replica_id: spec.replica_id.clone(),
                                addr,
                                pid: None,
                                handle: ReplicaHandle::Swarm { service: name.clone(), task: id, container },
                                exit,
                            });
                        }
                        // Asked again until the deadline: the node's
                        // address may not be readable at once.
                        None if Instant::now() <= deadline => {
                            self.unclaim(&id);
                            continue;
                        }
                        None => {
                            unusable = container;
                            break format!(
                                "task {} of {name} runs but has no published port for {container_port}/tcp",
                                short(&id)
                            );
                        }
                    }
                }
                let ended = new.iter().find_map(|t| task_end(t).map(|reason| (t, reason)));
                if let Some((task, reason)) = ended {
                    let id = task.id.clone().unwrap_or_default();
                    if self.claim(&id) {
                        let why =
                            task.status.as_ref().and_then(|s| s.err.clone()).unwrap_or_else(|| reason.to_string());
                        break format!("Swarm could not run task {} of {name}: {why}", short(&id));
                    }
                }
                // Placed on a node that does not answer (lost, and Swarm does
                // not see it down yet): placed again, elsewhere.
                if let Some(task) = new.iter().find(|t| task_end(t).is_none()) {
                    let id = task.id.clone().unwrap_or_default();
                    let seen = *first_seen.entry(id).or_insert_with(Instant::now);
                    if seen.elapsed() >= STUCK_AFTER {
                        if let Some(node) = task.node_id.clone() {
                            if !self.node_answers(&node).await {
                                tracing::warn!(replica = %spec.replica_id, node = %short(&node), "The new task is on a node that does not answer; placing it elsewhere.");
                                abandoned.push(task.id.clone().unwrap_or_default());
                                if let Err(e) = self.place_elsewhere(&name, &node).await {
                                    tracing::warn!(replica = %spec.replica_id, error = %e, "Could not place the task elsewhere.");
                                }
                                first_seen.clear();
                            }
                        }
                    }
                }
                if Instant::now() > deadline {
                    break format!("no task of {name} was running after {} s", TASK_START_TIMEOUT.as_secs());
                }
            };
            // Nothing half-started: the count goes back (and the service
            // goes when nothing of it runs).
            if let Some(container) = &unusable {
                let options = bollard::query_parameters::StopContainerOptionsBuilder::new().t(0).build();
                if let Err(e) = self.engine.docker.stop_container(container, Some(options)).await {
                    tracing::warn!(replica = %spec.replica_id, error = %message_of(&e), "Could not stop an unusable task's container (it may run on another node).");
                }
            }
            let released = {
                let lock = self.lock_for(&name);
                let _held = lock.lock().await;
                self.release_slot(&name).await
            };
            if let Err(e) = released {
                tracing::warn!(replica = %spec.replica_id, error = %e, "Could not scale the Swarm service back after a failed start.");
            }
            Err(self.error(spec, failure))
        })
    }

    fn stop<'a>(
        &'a self,
        replica: &'a RunningReplica,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExitReason, DriverError>> {
        Box::pin(async move {
            let ReplicaHandle::Swarm { service: name, task, container } = &replica.handle else {
                return Err(DriverError::Adopt {
                    replica: replica.replica_id.clone(),
                    why: format!("the swarm driver cannot stop {:?}", replica.handle),
                });
            };
            let error = |message: String| DriverError::Container {
                service: service_of(&replica.replica_id),
                replica: replica.replica_id.clone(),
                message,
            };
            // Where this task's replica id is recorded (read before the
            // service may go).
            let labels = self
                .engine
                .docker
                .inspect_service(name, None)
                .await
                .ok()
                .and_then(|s| s.spec?.labels)
                .unwrap_or_default();
            let state_dir = labels.get(LABEL_STATE_DIR).map(PathBuf::from);
            // This replica's own Swarm service (not one shared by a version,
            // as ebb made them before).
            let own_service = labels.get(LABEL_REPLICA) == Some(&replica.replica_id);
            // The engine of the task's node: ebb's own, or another node's
            // (EBB_SWARM_NODE_HOST). Only the count change holds the lock:
            // replicas stop in parallel.
            let docker = match container {
                Some(id) if !replica.has_exited() => match self.engine_of_task(task).await {
                    Some(docker) if docker.inspect_container(id, None).await.is_ok() => Some(docker),
                    _ => None,
                },
                _ => None,
            };
            let release = || async {
                let lock = self.lock_for(name);
                let _held = lock.lock().await;
                self.release_slot(name).await.map_err(|e| error(format!("cannot scale Swarm service {name}: {e}")))
            };
            let reason = if let Some(docker) = docker {
                // ebb's choice: this task's container stops (and with
                // restart none, stays stopped); then the count drops.
                // Swarm removes the container with the task: removing it
                // here, under Swarm's feet, is not safe.
                let id = container.as_deref().unwrap_or_default();
                // The slot is released even when the stop failed: the
                // count must come down, or the service never reaches 0.
                let stopped = stop_container(&docker, replica, id, timeout).await;
                release().await?;
                stopped.map_err(error)?
            } else if replica.has_exited() {
                release().await?;
                replica.exited().await
            } else {
                // On a node ebb cannot reach (lost, or no EBB_SWARM_NODE_HOST):
                // its own service goes, and Swarm shuts the task down (at once,
                // or when a lost node comes back). Nothing else is touched.
                if own_service {
                    match self.engine.docker.delete_service(name).await {
                        Err(e) if status_of(&e) != Some(404) => {
                            return Err(error(format!("cannot remove Swarm service {name}: {}", message_of(&e))))
                        }
                        _ => {}
                    }
                    match tokio::time::timeout(timeout + Duration::from_secs(5), replica.exited()).await {
                        Ok(reason) => reason,
                        Err(_) => ExitReason::Unknown(format!(
                            "its node does not answer; its Swarm service {name} was removed"
                        )),
                    }
                } else {
                    // A service shared by a version (made by an older ebb):
                    // wait until Swarm gives up on the task, then lower the count.
                    let waited = tokio::time::timeout(timeout + LOST_TASK_WAIT, async {
                        let reason = replica.exited().await;
                        loop {
                            match self.engine.docker.inspect_task(task).await {
                                Ok(t)
                                    if matches!(t.desired_state, Some(TaskState::RUNNING) | Some(TaskState::READY)) => {
                                }
                                _ => return reason,
                            }
                            tokio::time::sleep(POLL).await;
                        }
                    })
                    .await;
                    release().await?;
                    match waited {
                        Ok(reason) => reason,
                        Err(_) => match tokio::time::timeout(Duration::from_secs(15), replica.exited()).await {
                            Ok(reason) => reason,
                            Err(_) => {
                                return Err(error(format!("Swarm removed another task of {name} than {}", short(task))))
                            }
                        },
                    }
                }
            };
            self.unclaim(task);
            self.task_nodes.lock().unwrap_or_else(|p| p.into_inner()).remove(task.as_str());
            if let Some(dir) = state_dir {
                self.write_id(&dir, task, None);
            }
            Ok(reason)
        })
    }

    fn discover<'a>(
        &'a self,
        service: &'a str,
        state_dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<FoundReplica>, DriverError>> {
        Box::pin(async move {
            let why = |e: String| DriverError::Discover { service: service.to_string(), why: e };
            let filters = HashMap::from([(
                "label",
                vec![
                    format!("{LABEL_SERVICE}={service}"),
                    format!("{LABEL_STATE_DIR}={}", state_dir.to_string_lossy()),
                ],
            )]);
            let options = ListServicesOptionsBuilder::new().filters(&filters).build();
            let services = self.engine.docker.list_services(Some(options)).await.map_err(|e| why(message_of(&e)))?;
            let ids = self.read_ids(state_dir);
            let mut found = Vec::new();
            for s in services {
                let spec = s.spec.unwrap_or_default();
                let (Some(name), Some(labels)) = (spec.name, spec.labels) else { continue };
                let (Some(version), Some(port)) = (
                    labels.get(LABEL_VERSION).and_then(|v| v.parse::<u64>().ok()),
                    labels.get(LABEL_CONTAINER_PORT).and_then(|p| p.parse::<u16>().ok()),
                ) else {
                    continue;
                };
                for task in self.tasks_of(&name).await.map_err(why)? {
                    let running = task.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
                        && task.desired_state == Some(TaskState::RUNNING);
                    let Some(id) = task.id.clone().filter(|_| running) else { continue };
                    let Some(addr) = self.endpoint(&task, port).await else { continue };
                    let container = task
                        .status
                        .as_ref()
                        .and_then(|s| s.container_status.as_ref())
                        .and_then(|c| c.container_id.clone());
                    let replica_id = labels
                        .get(LABEL_REPLICA)
                        .cloned()
                        .or_else(|| ids.get(&id).cloned())
                        .unwrap_or_else(|| format!("{service}-{}", id.chars().take(6).collect::<String>()));
                    found.push(FoundReplica {
                        service: service.to_string(),
                        replica_id,
                        version,
                        addr,
                        handle: ReplicaHandle::Swarm { service: name.clone(), task: id, container },
                    });
                }
            }
            found.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
            Ok(found)
        })
    }

    fn adopt<'a>(&'a self, found: &'a FoundReplica) -> BoxFuture<'a, Result<RunningReplica, DriverError>> {
        Box::pin(async move {
            let adopt_error = |why: String| DriverError::Adopt { replica: found.replica_id.clone(), why };
            let ReplicaHandle::Swarm { task, .. } = &found.handle else {
                return Err(adopt_error(format!("the swarm driver cannot adopt {:?}", found.handle)));
            };
            let current = self
                .engine
                .docker
                .inspect_task(task)
                .await
                .map_err(|e| adopt_error(format!("task {}: {}", short(task), message_of(&e))))?;
            if task_end(&current).is_some() || current.status.as_ref().and_then(|s| s.state) != Some(TaskState::RUNNING)
            {
                return Err(adopt_error(format!("task {} is no longer running", short(task))));
            }
            if let Some(node) = &current.node_id {
                self.task_nodes.lock().unwrap_or_else(|p| p.into_inner()).insert(task.clone(), node.clone());
            }
            self.claim(task);
            let state_dir = current
                .spec
                .and_then(|s| s.container_spec)
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_STATE_DIR).cloned())
                .map(PathBuf::from)
                .unwrap_or_default();
            let now = Some((crate::clock::unix_ms(std::time::SystemTime::now()) / 1000) as i32);
            let log_path = state_dir.join("logs").join(format!("{}.log", found.replica_id));
            self.write_id(&state_dir, task, Some(&found.replica_id));
            let exit = self.watch(task, &found.replica_id, &log_path, now);
            Ok(RunningReplica::adopted(found, None, exit))
        })
    }

    fn usage<'a>(&'a self, replicas: &'a [RunningReplica]) -> BoxFuture<'a, HashMap<String, GroupUsage>> {
        Box::pin(async move {
            // Each task's container stats from its node's engine (ebb's own,
            // or another node's through EBB_SWARM_NODE_HOST), as the docker
            // driver; tasks on a node ebb cannot reach are absent.
            let mut by_engine: Vec<(bollard::Docker, Vec<RunningReplica>)> = Vec::new();
            let mut endpoints: Vec<String> = Vec::new();
            for r in replicas {
                let ReplicaHandle::Swarm { task, container: Some(id), .. } = &r.handle else { continue };
                let Some(docker) = self.engine_of_task(task).await else { continue };
                let key = format!("{docker:?}");
                let mut c = r.clone();
                c.handle = ReplicaHandle::Container { id: id.clone() };
                match endpoints.iter().position(|e| *e == key) {
                    Some(i) => by_engine[i].1.push(c),
                    None => {
                        endpoints.push(key);
                        by_engine.push((docker, vec![c]));
                    }
                }
            }
            let readings = by_engine.iter().map(|(docker, group)| usage_of(docker, group));
            futures_util::future::join_all(readings).await.into_iter().flatten().collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: &str, desired: &str, exit_code: Option<i64>, err: Option<&str>) -> Task {
        let mut status = serde_json::json!({ "State": state });
        if let Some(code) = exit_code {
            status["ContainerStatus"] = serde_json::json!({ "ContainerID": "abc", "ExitCode": code });
        }
        if let Some(err) = err {
            status["Err"] = err.into();
        }
        serde_json::from_value(serde_json::json!({ "ID": "t1", "Status": status, "DesiredState": desired })).unwrap()
    }

    #[test]
    fn a_task_ends_when_swarm_says_so() {
        assert_eq!(task_end(&task("running", "running", None, None)), None);
        assert_eq!(task_end(&task("starting", "running", None, None)), None);
        assert_eq!(task_end(&task("complete", "shutdown", Some(0), None)), Some(ExitReason::Exited(0)));
        assert_eq!(task_end(&task("failed", "shutdown", Some(137), None)), Some(ExitReason::Signaled(9)));
        let rejected = task_end(&task("rejected", "shutdown", None, Some("No such image: x:1"))).unwrap();
        assert!(rejected.to_string().contains("No such image: x:1"), "{rejected}");
        // Its node went away: still "running" as last reported, but Swarm
        // has shut it down.
        let lost = task_end(&task("running", "shutdown", None, None)).unwrap();
        assert!(matches!(lost, ExitReason::Unknown(_)), "{lost:?}");
    }

    #[test]
    fn service_names_are_per_version_and_state_dir() {
        let a = swarm_service_name("api", 1, Path::new("/srv/a/.ebb"));
        assert!(a.starts_with("ebb-api-v1-") && a.len() == "ebb-api-v1-".len() + 6, "{a}");
        assert_ne!(a, swarm_service_name("api", 1, Path::new("/srv/b/.ebb")));
        assert_ne!(a, swarm_service_name("api", 2, Path::new("/srv/a/.ebb")));
        assert!(swarm_service_name(&"x".repeat(63), 1, Path::new("/")).len() <= 63);
    }

    #[test]
    fn each_replica_has_a_service_of_its_own() {
        let dir = Path::new("/srv/a/.ebb");
        let a = replica_service_name("api", 1, dir, "api-3f9a1c");
        assert_eq!(a, format!("{}-3f9a1c", swarm_service_name("api", 1, dir)));
        assert_ne!(a, replica_service_name("api", 1, dir, "api-77e0b2"));
        let long = replica_service_name(&"x".repeat(63), 12, dir, &format!("{}-3f9a1c", "x".repeat(63)));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }
}
