//! What the admin API answers besides the status document.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and, where there is one, the fix.
    #[schema(example = "no service named \"api\"; services: web")]
    pub error: String,
    /// The HTTP status code, repeated for clients that only see the body.
    // Read leniently: the client takes `{"error": ...}` from anything in between.
    #[serde(default)]
    #[schema(example = 404, required = true)]
    pub status: u16,
}

/// The result of a scale request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ScaleResult)]
pub struct ScaleOutcome {
    pub service: String,
    /// Desired capacity before.
    pub from: u32,
    /// Desired capacity now.
    pub to: u32,
    /// Set when the request was clamped to the bounds in force, saying how.
    pub clamped: Option<String>,
}

/// What a protect or interrupt request did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ReplicaActionResult)]
pub struct ReplicaOutcome {
    pub service: String,
    pub replica: String,
    /// What happened, in words (also recorded as an event).
    pub message: String,
}

/// Answer of `POST /api/v1/shutdown`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShutdownView {
    #[schema(example = "stopping")]
    pub status: String,
    /// The ebb process that is stopping: `ebb down` returns once it has
    /// exited.
    #[schema(example = 4242)]
    pub pid: u32,
}

/// A one-time link that signs a browser in to the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DashboardLogin {
    /// Open it within `expires_in_s`; it works once and sets an `HttpOnly`,
    /// `SameSite=Strict` session cookie.
    #[schema(example = "http://127.0.0.1:9900/login?ticket=5f0c…")]
    pub url: String,
    pub expires_in_s: u64,
}

/// One entry of the event log.
// `kind` as a string, so a kind added later reads as text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Sequence number, increasing (across restarts: the log is kept in the state file).
    pub seq: u64,
    /// RFC 3339, UTC, millisecond precision.
    #[schema(example = "2026-11-20T09:00:00.123Z")]
    pub time: String,
    pub service: String,
    pub replica: Option<String>,
    /// What happened: `scaled`, `replica_started`, `replica_start_failed`,
    /// `replica_in_service`, `replica_unhealthy`, `replica_exited`,
    /// `replica_draining`, `replica_stopped`, `backoff`, `fleet_starting`,
    /// `fleet_stopping`, ... (every kind: docs/events.md)
    #[schema(example = "scaled")]
    pub kind: String,
    /// Desired capacity before and after, for `scaled` events.
    pub from: Option<u32>,
    pub to: Option<u32>,
    /// Why, with the numbers that decided it.
    #[schema(example = "scale out 2 -> 3 by target-cpu: mean 92.4% over 2 warm replicas vs target 80%")]
    pub reason: String,
}

impl EventView {
    pub fn new(e: &crate::events::Event) -> Self {
        let kind = match serde_json::to_value(e.kind) {
            Ok(serde_json::Value::String(s)) => s,
            _ => e.kind.as_str().to_string(),
        };
        EventView {
            seq: e.seq,
            time: e.time.clone(),
            service: e.service.clone(),
            replica: e.replica.clone(),
            kind,
            from: e.from,
            to: e.to,
            reason: e.reason.clone(),
        }
    }
}
