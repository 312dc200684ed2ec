//! The status document: what a controller publishes, what `GET
//! /api/v1/status` (and the service and replica routes) answer, and what
//! `ebb status`, `ebb deploy` and `ebb load --ebb` read.

use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

/// Every service (what `ebb status` prints).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = FleetView)]
pub struct FleetStatus {
    pub services: Vec<ServiceStatus>,
    /// The `[listener.NAME]` tables: address, TLS certificates, routes.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// `[cluster]`: the nodes and the reserved CPU (absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// One `[listener.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListenerStatus {
    #[schema(example = "public")]
    pub name: String,
    /// The address it listens on.
    #[schema(example = "0.0.0.0:443")]
    pub listen: String,
    /// The plain-HTTP address that redirects to it, if any.
    pub http: Option<String>,
    /// Whether it terminates TLS.
    pub tls: bool,
    /// The certificates it serves (the first is the default), empty
    /// without TLS.
    pub certificates: Vec<CertificateStatus>,
    /// The last reload of the certificate files failed with this (the
    /// previous certificates are still served).
    pub tls_error: Option<String>,
    /// The routes, in order (first match wins).
    pub routes: Vec<RouteStatus>,
    /// Requests that matched no route (answered 404) since start.
    pub unrouted: u64,
}

/// A certificate a listener serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CertificateStatus {
    /// The DNS names it is valid for (wildcards as `*.example.com`).
    pub names: Vec<String>,
    /// RFC 3339, UTC.
    #[schema(example = "2027-03-01T12:00:00Z")]
    pub not_after: String,
    pub expired: bool,
    /// The certificate file.
    pub file: String,
}

/// One routing rule of a listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteStatus {
    /// `host api.example.com, path /v1/*`, or `default`.
    #[schema(example = "host api.example.com")]
    pub rule: String,
    #[schema(example = "api")]
    pub service: String,
    /// The conditions one by one, as in `ebb.toml` (what `rule` says in
    /// words), so a client can route as the listener does (`ebb load
    /// --ebb`). `host`: exact or `*.example.com`, lower case.
    #[serde(default)]
    #[schema(example = "api.example.com")]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name (lower case) -> the exact value required.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// One service: its bounds, counts and replicas.
// Serialized by hand (below) only to name the service in each replica, as
// the API always has: the controller's snapshot does not repeat it.
// Read leniently (a count left out reads as 0), so `ebb load --ebb` follows
// an ebb of another version; the schema still requires them all.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = ServiceView)]
pub struct ServiceStatus {
    #[schema(example = "web")]
    pub name: String,
    /// The balancer's address.
    #[serde(default)]
    #[schema(example = "127.0.0.1:8080", required = true)]
    pub listen: String,
    /// Where replicas run: `process`, later `docker`, `swarm`.
    #[serde(default)]
    #[schema(example = "process", required = true)]
    pub driver: String,
    #[serde(default)]
    #[schema(required = true)]
    pub desired: u32,
    #[serde(default)]
    #[schema(required = true)]
    pub min: u32,
    #[serde(default)]
    #[schema(required = true)]
    pub max: u32,
    /// Replicas healthy and in the rotation.
    #[serde(default)]
    #[schema(required = true)]
    pub in_service: u32,
    /// Replicas started but not yet in service.
    #[serde(default)]
    #[schema(required = true)]
    pub pending: u32,
    /// The current spec version.
    #[serde(default)]
    #[schema(required = true)]
    pub version: u64,
    /// Why the fleet is not changing although something might want it to
    /// (cooldown, stabilisation, max reached, crash-loop backoff, ...).
    pub holding: Option<String>,
    /// The running deploy, if any.
    pub deploy: Option<DeployStatus>,
    /// The last deploy that finished (succeeded or rolled back).
    pub last_deploy: Option<DeployStatus>,
    #[serde(default)]
    #[schema(value_type = Vec<ServiceReplica>, required = true)]
    pub replicas: Vec<ReplicaStatus>,
    /// What the balancer saw of demand in the last second (offered,
    /// served, queued, shed); `null` for a worker pool.
    pub saturation: Option<SaturationStatus>,
    /// ebb's host over the last second, for a service whose replicas run
    /// on it; `null` on Swarm.
    pub host: Option<HostStatus>,
    /// Scale to zero (`[service.NAME.idle]`): `idle (stopped, for 12 min)`,
    /// `idle (suspended 3 replicas, for 12 min)` or `waking (4 requests
    /// held)`; `null` while awake or without `[idle]`.
    #[serde(default)]
    pub idle: Option<String>,
    /// The warm pool (`[service.NAME.warm_pool]`): `warm pool: 2
    /// suspended (size 2)`, `warm pool: 1 suspended, 1 starting (size 2)`;
    /// `null` without a pool. Its members are in `replicas` with `pooled`.
    #[serde(default)]
    pub warm_pool: Option<String>,
    /// Shadow policies (`[service.NAME.scaling.shadow]`): what they would
    /// run, never applied; `null` without shadow policies.
    #[serde(default)]
    pub shadow: Option<ShadowStatus>,
    /// Predictive policies (`[[service.NAME.scaling.predictive]]`): one
    /// line each, what its forecast asks for now or what it waits for,
    /// e.g. `predictive daily: forecast 400 req/s at 09:00 UTC (…) / target
    /// 40 per replica = at least 10, 2 min ahead`; `forecast_only` ones
    /// say `(forecast_only: not applied)`.
    #[serde(default)]
    pub predictive: Vec<String>,
}

/// What the service's shadow policies would do, evaluated every second on
/// the live samples and never applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShadowStatus {
    /// The shadow policies' names.
    #[schema(example = json!(["cpu-60"]))]
    pub policies: Vec<String>,
    /// The count the shadow would run now (it started at the live desired).
    pub desired: u32,
    /// What holds the shadow's count, as `holding` says it for the live one.
    pub holding: Option<String>,
}

impl Serialize for ServiceStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let replicas: Vec<ServiceReplica> = self.replicas.iter().map(|r| ServiceReplica::new(&self.name, r)).collect();
        let mut out = s.serialize_struct("ServiceStatus", 19)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("listen", &self.listen)?;
        out.serialize_field("driver", &self.driver)?;
        out.serialize_field("desired", &self.desired)?;
        out.serialize_field("min", &self.min)?;
        out.serialize_field("max", &self.max)?;
        out.serialize_field("in_service", &self.in_service)?;
        out.serialize_field("pending", &self.pending)?;
        out.serialize_field("version", &self.version)?;
        out.serialize_field("holding", &self.holding)?;
        out.serialize_field("deploy", &self.deploy)?;
        out.serialize_field("last_deploy", &self.last_deploy)?;
        out.serialize_field("replicas", &replicas)?;
        out.serialize_field("saturation", &self.saturation)?;
        out.serialize_field("host", &self.host)?;
        out.serialize_field("idle", &self.idle)?;
        out.serialize_field("warm_pool", &self.warm_pool)?;
        out.serialize_field("shadow", &self.shadow)?;
        out.serialize_field("predictive", &self.predictive)?;
        out.end()
    }
}

/// One replica with the service it belongs to (`GET /api/v1/replicas`,
/// and each replica of a service).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ReplicaView)]
pub struct ServiceReplica {
    /// The service it belongs to.
    #[schema(example = "web")]
    pub service: String,
    #[serde(flatten)]
    pub replica: ReplicaStatus,
}

impl ServiceReplica {
    pub fn new(service: &str, replica: &ReplicaStatus) -> Self {
        let mut replica = replica.clone();
        // The schema says number: NaN and infinity never reach JSON as one.
        replica.cpu = replica.cpu.filter(|c| c.is_finite());
        if !replica.age_s.is_finite() {
            replica.age_s = 0.0;
        }
        ServiceReplica { service: service.to_string(), replica }
    }
}

/// The balancer's view of demand over the last second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SaturationStatus {
    /// Requests that arrived, whatever became of them.
    pub offered_per_s: f64,
    /// Requests a replica answered.
    pub served_per_s: f64,
    /// The most requests waiting in the queue at once.
    pub queued: u32,
    /// Requests turned away with 503 (queue full or queue timeout).
    pub shed_per_s: u32,
    /// Requests in flight at replicas.
    pub in_flight: u32,
    pub routable: u32,
    /// Replicas holding `max_in_flight` requests.
    pub at_limit: u32,
    /// `max_in_flight`, when set.
    pub limit: Option<u32>,
    /// Mean time requests waited for a replica, ms.
    pub queue_time_ms: Option<f64>,
    /// Requests queued or shed in the second.
    pub saturated: bool,
}

/// ebb's host over the last second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostStatus {
    pub cpus: f64,
    pub busy_cpus: f64,
    /// Share of time a runnable task waited for a CPU (0–1), where the
    /// kernel reports it.
    pub pressure: Option<f64>,
    /// Busy ≥ 90 % over 5 s: more local replicas add no capacity, CPU
    /// readings are contended.
    pub full: bool,
    /// `host full: 2.0 of 2 CPUs busy …`, when full.
    pub message: Option<String>,
}

/// A deploy's progress, as `ebb deploy` prints it while it waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeployStatus {
    pub from_version: u64,
    pub to_version: u64,
    /// `rolling` or `blue-green`.
    pub strategy: String,
    /// `rolling`, `starting`, `baking`, `rolling_back`, `succeeded`, `rolled_back`, ...
    pub phase: String,
    /// One line, e.g. `rolling v1 -> v2, rolling: 2/4 new healthy, 1 old draining`.
    pub progress: String,
    pub finished: bool,
    /// Why it rolled back (or is rolling back).
    pub rollback_reason: Option<String>,
}

/// Lifecycle state of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ReplicaStateView)]
pub enum ReplicaState {
    /// Launched, not yet passed its health checks.
    Starting,
    /// Passed its health checks; in the rotation while healthy.
    InService,
    /// Out of the rotation, finishing in-flight requests before it stops.
    Draining,
    Stopped,
    /// Exited or failed health checks; being replaced.
    Failed,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::InService => "in_service",
            ReplicaState::Draining => "draining",
            ReplicaState::Stopped => "stopped",
            ReplicaState::Failed => "failed",
        }
    }
}

/// One replica.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplicaStatus {
    #[schema(example = "web-3f9a1c")]
    pub id: String,
    pub state: ReplicaState,
    /// In service, passed its health checks, not leaving. An ejected
    /// replica is still healthy; it is out of the rotation (`ejected`).
    pub healthy: bool,
    /// `unknown`, `healthy` or `unhealthy`.
    #[schema(example = "healthy")]
    pub health: String,
    /// The last health check's result.
    #[schema(example = "200 OK in 1.2 ms")]
    pub last_probe: Option<String>,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    /// The spec version it runs (incremented by each deploy).
    pub version: u64,
    /// Requests sent to it and not yet answered.
    pub in_flight: u64,
    /// Requests it has answered since it started.
    pub requests: u64,
    /// CPU over the last second, percent of the replica's allotment
    /// (`cpu` in the config); `null` until there are two readings.
    pub cpu: Option<f64>,
    /// Resident memory of its processes.
    pub rss_bytes: Option<u64>,
    /// Seconds since it was started.
    pub age_s: f64,
    /// Scale-in protection: never chosen to leave while set.
    #[serde(default)]
    #[schema(required = true)]
    pub protected: bool,
    /// Out of the rotation for failing its requests (passive outlier
    /// detection); still healthy and in service.
    #[serde(default)]
    #[schema(required = true)]
    pub ejected: bool,
    /// Why and for how long, while ejected.
    #[schema(example = "ejected for 30 s: 5 consecutive 5xx responses (consecutive_5xx = 5); back in 28 s")]
    pub ejection: Option<String>,
    /// A warm pool member: beside the fleet, not routed, not counted in
    /// service or desired; suspended once it has passed its checks.
    #[serde(default)]
    #[schema(required = true)]
    pub pooled: bool,
}

/// `[cluster]`: the Swarm nodes ebb adds and removes (absent without it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// Percent of the active nodes' CPUs replicas may reserve.
    #[schema(example = 30.0)]
    pub target_reserved_cpu: f64,
    pub min_nodes: u32,
    pub max_nodes: u32,
    /// Active, ready nodes (where replicas can land).
    pub active_nodes: u32,
    /// Nodes the reservations want, within min and max.
    pub wanted_nodes: u32,
    /// CPUs reserved by ebb's replicas on the nodes.
    pub reserved_cpus: f64,
    /// CPUs wanted by ebb's replicas Swarm could not place (no room).
    pub pending_cpus: f64,
    /// Reserved and pending over the active nodes' CPUs, percent.
    pub reserved_percent: f64,
    /// What the cluster task does or waits for, with the numbers.
    pub reason: String,
    /// The last node action that failed, if the last one did.
    pub last_error: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

/// One Swarm node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    #[schema(example = "node2")]
    pub hostname: String,
    pub id: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Swarm's state: `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// ebb drained it to remove it.
    pub drained_by_ebb: bool,
    pub cpus: f64,
    /// CPUs reserved on it by ebb's replicas.
    pub reserved_cpus: f64,
    /// ebb replicas (tasks) on it.
    pub replicas: u32,
}
