//! The status document: what `ebb status` prints and `GET /api/v1/status`
//! returns. Shared by the admin API (serializes) and the CLI (deserializes).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    pub services: Vec<ServiceStatus>,
    /// The `[listener.NAME]` tables: address, TLS, routes.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
}

/// One `[listener.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListenerStatus {
    pub name: String,
    /// The address it listens on.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificateStatus {
    /// The DNS names it is valid for (wildcards as `*.example.com`).
    pub names: Vec<String>,
    /// RFC 3339, UTC.
    pub not_after: String,
    pub expired: bool,
    /// The certificate file.
    pub file: String,
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteStatus {
    /// `host api.example.com, path /v1/*`, or `default`.
    pub rule: String,
    pub service: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// The balancer's address.
    pub listen: String,
    pub driver: String,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// Replicas healthy and in the rotation.
    pub in_service: u32,
    /// Replicas started but not yet in service.
    pub pending: u32,
    pub version: u64,
    /// Why the fleet is not changing although something might want it to,
    /// and for how long: a policy's hold (cooldown, stabilisation window,
    /// tolerance band, max reached, lack of data) or crash-loop backoff.
    #[serde(default)]
    pub holding: Option<String>,
    /// The running deploy, if any.
    #[serde(default)]
    pub deploy: Option<DeployStatus>,
    /// The last deploy that finished (succeeded or rolled back).
    #[serde(default)]
    pub last_deploy: Option<DeployStatus>,
    pub replicas: Vec<ReplicaStatus>,
    /// What the balancer saw of demand in the last second; `null` for a
    /// worker pool.
    #[serde(default)]
    pub saturation: Option<SaturationStatus>,
    /// ebb's host, for a service whose replicas run on it; `null` on Swarm.
    #[serde(default)]
    pub host: Option<HostStatus>,
}

/// The balancer's view of demand over the last second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Lifecycle state of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub id: String,
    pub state: ReplicaState,
    /// Passed its health checks and not failed since, in service and not
    /// leaving. An ejected replica is still healthy: see `ejected`.
    pub healthy: bool,
    /// `unknown`, `healthy` or `unhealthy`, with the last probe's result.
    pub health: String,
    pub last_probe: Option<String>,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub version: u64,
    pub in_flight: u64,
    pub requests: u64,
    /// CPU over the last second, percent of the replica's allotment
    /// (`cpu` in the config); `null` until there are two readings.
    pub cpu: Option<f64>,
    /// Resident memory of the replica's processes.
    pub rss_bytes: Option<u64>,
    /// Scale-in protection: never chosen to leave while set.
    #[serde(default)]
    pub protected: bool,
    /// Out of the rotation for failing its requests (outlier detection);
    /// still healthy and in service.
    #[serde(default)]
    pub ejected: bool,
    /// Why and for how long, while ejected.
    #[serde(default)]
    pub ejection: Option<String>,
    /// Seconds since the replica was started.
    pub age_s: f64,
}
