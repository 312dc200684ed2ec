//! The admin API: JSON over HTTP on its own (loopback) listener, separate
//! from the data plane. The CLI's `status`, `scale`, `events` and `down` go
//! through it.
//!
//! **Architecture invariant:** only this module and the CLI's client know the
//! API's JSON shapes and status codes; the controller speaks Rust types.
//!
//! Browser safety: mutating calls must carry `Content-Type: application/json`
//! (a cross-site form cannot send that without a CORS preflight, which this
//! API never grants) and a loopback `Host` (defeats DNS rebinding).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::controller::ServiceHandle;
use crate::events::EventLog;
use crate::status::{FleetStatus, ServiceStatus};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub services: Arc<BTreeMap<String, ServiceHandle>>,
    pub events: Arc<EventLog>,
    /// Cancelled to ask the whole ebb process to drain and stop.
    pub stop_requested: CancellationToken,
}

/// A JSON error body with the right status.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message, "status": self.status.as_u16() }))).into_response()
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(list_services))
        .route("/api/v1/services/{name}", get(get_service))
        .route("/api/v1/services/{name}/desired", put(set_desired))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/shutdown", post(shutdown))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/status") })
        .layer(middleware::from_fn(browser_guard))
        .with_state(state)
}

/// Serves the admin API on an already-bound listener until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

fn is_loopback_host(host: &str) -> bool {
    // Strip the port: "[::1]:9900", "127.0.0.1:9900", "localhost:9900".
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

async fn browser_guard(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !host.is_empty() && !is_loopback_host(host) {
        return ApiError::new(StatusCode::FORBIDDEN, format!("Host {host:?} is not a loopback name; the admin API answers only on loopback"))
            .into_response();
    }
    let mutating = !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if mutating {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send a JSON body with Content-Type: application/json")
                .into_response();
        }
    }
    next.run(request).await
}

fn fleet_status(state: &AdminState) -> FleetStatus {
    FleetStatus { services: state.services.values().map(|s| s.status()).collect() }
}

async fn status(State(state): State<AdminState>) -> Json<FleetStatus> {
    Json(fleet_status(&state))
}

async fn list_services(State(state): State<AdminState>) -> Json<Vec<ServiceStatus>> {
    Json(fleet_status(&state).services)
}

fn service<'a>(state: &'a AdminState, name: &str) -> Result<&'a ServiceHandle, ApiError> {
    state.services.get(name).ok_or_else(|| {
        let known: Vec<&str> = state.services.keys().map(String::as_str).collect();
        ApiError::new(StatusCode::NOT_FOUND, format!("no service named {name:?}; services: {}", known.join(", ")))
    })
}

async fn get_service(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Json<ServiceStatus>, ApiError> {
    Ok(Json(service(&state, &name)?.status()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDesiredBody {
    pub desired: u32,
    /// Free text recorded in the event (defaults to "manual").
    #[serde(default)]
    pub reason: Option<String>,
}

async fn set_desired(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<SetDesiredBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let handle = service(&state, &name)?;
    let Json(body) = body.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("expected a body like {{\"desired\": 3}}: {}", e.body_text()))
    })?;
    let reason = body.reason.unwrap_or_else(|| "manual (ebb scale)".to_string());
    let outcome = handle
        .set_desired(body.desired, reason)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("service {name} is shutting down")))?;
    Ok(Json(outcome).into_response())
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub service: Option<String>,
    /// Only events with a sequence number above this.
    #[serde(default)]
    pub after: u64,
}

async fn list_events(
    State(state): State<AdminState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if let Some(name) = &query.service {
        service(&state, name)?;
    }
    Ok(Json(state.events.list(query.service.as_deref(), query.after)).into_response())
}

async fn shutdown(State(state): State<AdminState>) -> impl IntoResponse {
    state.stop_requested.cancel();
    (StatusCode::ACCEPTED, Json(json!({ "status": "stopping" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in ["127.0.0.1:9900", "localhost:9900", "[::1]:9900", "127.0.0.2", "LOCALHOST"] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:9900", "10.0.0.1:9900", "[2001:db8::1]:80", "example.com"] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
