//! The status document: what `ebb status` prints and `GET /api/v1/status`
//! returns. Shared by the admin API (serializes) and the CLI (deserializes).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    pub services: Vec<ServiceStatus>,
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
    pub replicas: Vec<ReplicaStatus>,
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
    /// Routable: passed its health checks and not failed since.
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
    /// Seconds since the replica was started.
    pub age_s: f64,
}
