//! The `/api/v1` handlers and the JSON they speak.
//!
//! The bodies and answers are [`crate::wire`]'s types, shared with the
//! client (the metric history's points are `metrics::history`'s own).
//! Every handler carries a `#[utoipa::path]` that feeds `openapi.json`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::body::{check_text, Text};
use super::{ApiError, App, ErrorBody};
use crate::controller::ServiceHandle;
use crate::metrics::history::ServicePoint;
use crate::wire::{
    DashboardLogin, DeployRequest, EventView, FleetStatus, InterruptRequest, ProtectRequest, ReasonRequest,
    ReplicaOutcome, ScaleOutcome, ServiceReplica, ServiceStatus, SetDesiredRequest, ShutdownRequest, ShutdownView,
};

/// Longest free-text `reason` accepted (it is stored in the event log).
pub const MAX_REASON: usize = 1000;
/// Largest `desired` accepted (larger is a typo, not a plan); the
/// service's own `max` clamps further.
pub const MAX_DESIRED: u32 = 1_000_000;
/// What `GET /api/v1/metrics` returns when `since` is left out.
pub const DEFAULT_METRICS_WINDOW_MS: u64 = 5 * 60 * 1000;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(list_services))
        .route("/api/v1/services/{name}", get(get_service))
        .route("/api/v1/services/{name}/desired", put(set_desired))
        .route("/api/v1/services/{name}/forecast", get(get_forecast))
        .route("/api/v1/services/{name}/deploy", post(deploy))
        .route("/api/v1/services/{name}/rollback", post(rollback))
        .route("/api/v1/replicas", get(list_replicas))
        .route("/api/v1/replicas/{id}", get(get_replica))
        .route("/api/v1/replicas/{id}/protect", post(protect))
        .route("/api/v1/replicas/{id}/interrupt", post(interrupt))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/metrics", get(metrics))
        .route("/api/v1/certs", get(list_certs))
        .route("/api/v1/certs/renew", post(renew_certs))
        .route("/api/v1/certs/reload", post(reload_certs))
        .route("/api/v1/plan", post(plan_config))
        .route("/api/v1/apply", post(apply_config))
        .route("/api/v1/shutdown", post(shutdown))
        .route("/api/v1/dashboard/login", post(dashboard_login))
        .route("/api/v1/openapi.json", get(openapi_json))
}

// ---------------------------------------------------------------- shapes

fn lifecycle_error(e: crate::controller::LifecycleError) -> ApiError {
    use crate::controller::LifecycleError as E;
    let status = match &e {
        E::NoSuchReplica { .. } => StatusCode::NOT_FOUND,
        E::Leaving { .. } => StatusCode::CONFLICT,
        E::Refused { .. } => StatusCode::CONFLICT,
        E::Invalid { .. } => StatusCode::BAD_REQUEST,
        E::ShuttingDown { .. } | E::NotSaved { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string())
}

/// Default interruption notice (what a spot reclaim gives).
pub const DEFAULT_NOTICE_S: u64 = 120;

/// `?follow=` values.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum Follow {
    #[serde(rename = "1")]
    One,
    #[serde(rename = "0")]
    Zero,
    #[serde(rename = "true")]
    True,
    #[serde(rename = "false")]
    False,
}

/// Query of `GET /api/v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this service's events (or a listener's: `listener NAME`; the
    /// admin API's certificate: `admin API`).
    pub service: Option<String>,
    /// Only events with a sequence number above this (0: all kept).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// `1` or `true`: answer with a `text/event-stream` (Server-Sent Events)
    /// that sends the matching events kept so far, then each new one as it
    /// happens. A reconnecting client's `Last-Event-ID` is honoured.
    #[param(inline)]
    pub follow: Option<Follow>,
}

/// Headers of `GET /api/v1/events` (for documentation; read by hand).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct EventsHeaders {
    /// With `follow`: resume after this sequence number (a reconnecting
    /// `EventSource` sends the last `id` it saw).
    #[serde(rename = "Last-Event-ID")]
    #[param(required = false, value_type = i64, minimum = 0)]
    pub last_event_id: Option<i64>,
}

/// Query of `GET /api/v1/metrics`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// The service (may be left out when there is only one).
    pub service: Option<String>,
    /// Points newer than this, Unix milliseconds (default: the last 5
    /// minutes; at most 24 hours are kept).
    #[param(minimum = 0)]
    pub since: Option<i64>,
}

// ------------------------------------------------------------- helpers

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|e| bad_request(e.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| bad_request(e.body_text()))
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>, example: &str) -> Result<T, ApiError> {
    body.map(|Json(t)| t).map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, format!("expected a body like {example}: {}", e.body_text()))
    })
}

/// An optional JSON body: empty (or `null`) means `T::default()`; anything
/// else must be an object (`[]` is not "no body": serde would read it as a
/// struct with every field left out).
fn optional_json<T: DeserializeOwned + Default>(body: &Bytes, example: &str) -> Result<T, ApiError> {
    let text = body.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(T::default());
    }
    super::body::check_shape(text)?;
    serde_json::from_slice(body).map_err(|e| bad_request(format!("expected no body or a body like {example}: {e}")))
}

/// A query number that must not be negative (declared `int64`, minimum 0).
fn non_negative(name: &str, v: Option<i64>) -> Result<u64, ApiError> {
    match v {
        None => Ok(0),
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err(bad_request(format!("{name} must be 0 or more, not {n}"))),
    }
}

fn check_reason(reason: &Option<String>) -> Result<(), ApiError> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON => {
            Err(bad_request(format!("reason is too long ({} characters, at most {MAX_REASON})", r.chars().count())))
        }
        Some(r) => check_text("reason", r, Text::Line),
        None => Ok(()),
    }
}

/// A deploy's command, image and environment: no NUL or control character
/// (newlines and tabs are fine in a command or a value), before anything is
/// started.
fn check_deploy_text(request: &DeployRequest) -> Result<(), ApiError> {
    if let Some(command) = &request.command {
        check_text("command", command, Text::Script)?;
    }
    if let Some(image) = &request.image {
        check_text("image", image, Text::Line)?;
    }
    for (name, value) in &request.env {
        check_text("an env name", name, Text::Line)?;
        check_text(&format!("env {name}"), value, Text::Script)?;
    }
    Ok(())
}

fn service(app: &App, name: &str) -> Result<ServiceHandle, ApiError> {
    app.state.services.get(name).ok_or_else(|| {
        let known = app.state.services.names();
        ApiError::new(StatusCode::NOT_FOUND, format!("no service named {name:?}; services: {}", known.join(", ")))
    })
}

/// The replica with this id and its service's handle.
fn replica(app: &App, id: &str) -> Result<(ServiceHandle, ServiceReplica), ApiError> {
    for handle in app.state.services.values() {
        let status = handle.status();
        if let Some(r) = status.replicas.iter().find(|r| r.id == id) {
            return Ok((handle, ServiceReplica::new(&status.name, r)));
        }
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, format!("no replica {id:?}; `GET /api/v1/replicas` lists them")))
}

pub(crate) fn fleet(app: &App) -> FleetStatus {
    FleetStatus {
        services: app.state.services.values().iter().map(|s| s.status()).collect(),
        listeners: app.state.listeners.load().status(),
        cluster: app.state.cluster.as_ref().and_then(|c| c.status()),
    }
}

// ------------------------------------------------------------ handlers

/// Every service and its replicas (what `ebb status` shows).
#[utoipa::path(get, path = "/api/v1/status", tag = "services",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The fleet", body = FleetStatus),
        (status = 401, description = "Token missing or wrong (needed off loopback, or when one is sent)", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this address", body = ErrorBody),
    ))]
pub(crate) async fn status(State(app): State<App>) -> Json<FleetStatus> {
    Json(fleet(&app))
}

/// Every service.
#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every service", body = [ServiceStatus]),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn list_services(State(app): State<App>) -> Json<Vec<ServiceStatus>> {
    Json(fleet(&app).services)
}

/// One service.
#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name", example = "web")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The service", body = ServiceStatus),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn get_service(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ServiceStatus>, ApiError> {
    let name = path_param(name)?;
    Ok(Json(service(&app, &name)?.status()))
}

/// The forecasts of a service's predictive policies: one per forecast
/// metric (none without a predictive policy), made hourly from the
/// recorded history, with the model, its backtest against the naive
/// baselines, and 48 h of values.
#[utoipa::path(get, path = "/api/v1/services/{name}/forecast", tag = "services",
    params(("name" = String, Path, description = "Service name", example = "web")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The forecasts", body = [crate::wire::ForecastView]),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub(crate) async fn get_forecast(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<crate::wire::ForecastView>>, ApiError> {
    let name = path_param(name)?;
    let handle = service(&app, &name)?;
    let forecasts = handle.forecasts.read().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Json(forecasts))
}

/// Sets desired capacity (clamped to min/max, recorded as a `scaled` event).
#[utoipa::path(put, path = "/api/v1/services/{name}/desired", tag = "services",
    params(("name" = String, Path, description = "Service name", example = "web")),
    request_body = SetDesiredRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Desired capacity set (see `clamped`)", body = ScaleOutcome),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
        (status = 503, description = "The service is shutting down", body = ErrorBody),
    ))]
pub(crate) async fn set_desired(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<SetDesiredRequest>, JsonRejection>,
) -> Result<Json<ScaleOutcome>, ApiError> {
    let name = path_param(name)?;
    let handle = service(&app, &name)?;
    let body = json_body(body, r#"{"desired": 3}"#)?;
    if body.desired > MAX_DESIRED {
        return Err(bad_request(format!("desired {} is not a replica count (at most {MAX_DESIRED})", body.desired)));
    }
    check_reason(&body.reason)?;
    let reason = body.reason.unwrap_or_else(|| "manual (API)".to_string());
    let outcome = handle.set_desired(body.desired, reason).await.map_err(lifecycle_error)?;
    Ok(Json(outcome))
}

/// Starts a deploy of a new spec version (rolling or blue-green, gated on
/// health, rolled back on failure).
#[utoipa::path(post, path = "/api/v1/services/{name}/deploy", tag = "services",
    params(("name" = String, Path, description = "Service name", example = "web")),
    request_body(content = Option<DeployRequest>, description = "What changes; naming no change deploys what the config file says now"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Deploy started; follow it in the event log", body = ServiceStatus),
        (status = 400, description = "Malformed body, an empty command, or an env name that is not valid or is set by ebb", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "A deploy is already running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn deploy(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    let handle = service(&app, &name)?;
    let request: DeployRequest = optional_json(&body, r#"{"command": "...", "strategy": "rolling"}"#)?;
    check_reason(&request.reason)?;
    check_deploy_text(&request)?;
    // No change named: roll out what the config file says now.
    let from_config = match request.names_a_change() {
        true => None,
        false => Some(spec_in_config_file(&app.state.config_path, &name).await?),
    };
    handle.deploy(DeployRequest { from_config, ..request }).await.map_err(lifecycle_error)?;
    Ok((StatusCode::ACCEPTED, Json(handle.status())).into_response())
}

/// What applying a config file would change on the running ebb (`ebb
/// plan`): one line per change with its consequence. Nothing changes.
#[utoipa::path(post, path = "/api/v1/plan", tag = "config",
    request_body(content = crate::wire::ConfigFileRequest, description = "The file's path and its whole text"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The plan (no changes: an empty list); `refused` when some change needs a restart", body = crate::wire::PlanAnswer),
        (status = 400, description = "Malformed body, or a config error (file:line:col and the fix)", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn plan_config(
    State(app): State<App>,
    body: Result<Json<crate::wire::ConfigFileRequest>, JsonRejection>,
) -> Result<Json<crate::wire::PlanAnswer>, ApiError> {
    let request = config_file_request(body)?;
    let path = std::path::PathBuf::from(&request.path);
    app.state.running.plan(&path, &request.text).await.map(Json).map_err(apply_error)
}

/// Applies a config file to the running ebb (`ebb apply`, SIGHUP): what
/// can change in place does (no replica restarts), a new command, env or
/// image starts a deploy, new services and listeners start, removed ones
/// drain. A file with any error, or a change that needs a restart,
/// changes nothing.
#[utoipa::path(post, path = "/api/v1/apply", tag = "config",
    request_body(content = crate::wire::ConfigFileRequest, description = "The file's path and its whole text"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Applied: the plan and each step done; deploys and drains go on (follow them in the status)", body = crate::wire::ApplyAnswer),
        (status = 400, description = "Malformed body, or a config error (file:line:col and the fix); nothing changed", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 409, description = "A change needs a restart, an address is in use, or a deploy is running; nothing changed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn apply_config(
    State(app): State<App>,
    body: Result<Json<crate::wire::ConfigFileRequest>, JsonRejection>,
) -> Result<Json<crate::wire::ApplyAnswer>, ApiError> {
    let request = config_file_request(body)?;
    let path = std::path::PathBuf::from(&request.path);
    app.state.running.apply(&path, &request.text).await.map(Json).map_err(apply_error)
}

fn config_file_request(
    body: Result<Json<crate::wire::ConfigFileRequest>, JsonRejection>,
) -> Result<crate::wire::ConfigFileRequest, ApiError> {
    let request = json_body(body, r#"{"path": "/etc/ebb/ebb.toml", "text": "[service.web]\n..."}"#)?;
    if request.path.trim().is_empty() || request.path.len() > 4096 || request.path.chars().any(char::is_control) {
        return Err(bad_request("path must name the config file (one line, at most 4096 bytes)"));
    }
    Ok(request)
}

fn apply_error(e: crate::apply::ApplyError) -> ApiError {
    use crate::apply::ApplyError as E;
    let status = match &e {
        E::Invalid(_) => StatusCode::BAD_REQUEST,
        E::Refused(_) | E::Unavailable(_) => StatusCode::CONFLICT,
    };
    ApiError::new(status, format!("{e}; nothing changed"))
}

/// Reads the config file `ebb up` was started with and returns `service`'s
/// spec in it; an unreadable or invalid file is a 400 with the config error.
async fn spec_in_config_file(path: &std::path::Path, service: &str) -> Result<crate::controller::ConfigSpec, ApiError> {
    let owned = path.to_path_buf();
    let text = tokio::task::spawn_blocking(move || crate::config_file::read(&owned))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the config file: {e}")))?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("cannot deploy what the config file says: {e}")))?;
    let config = ebb_core::config::Config::parse(&text, path).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("the config file is not valid, nothing was deployed:\n{e}"))
    })?;
    let Some(spec) = config.services.get(service) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the config file {} no longer has service {service}; nothing was deployed", path.display()),
        ));
    };
    Ok(crate::controller::ConfigSpec {
        command: spec.command.clone(),
        env: spec.env.clone(),
        image: spec.container.as_ref().map(|c| c.image.clone()),
        options: Box::new(spec.container.as_ref().map(|c| c.options.clone()).unwrap_or_default()),
    })
}

/// Rolls the service back to its previous spec version.
#[utoipa::path(post, path = "/api/v1/services/{name}/rollback", tag = "services",
    params(("name" = String, Path, description = "Service name", example = "web")),
    request_body(content = Option<ReasonRequest>, description = "Optional reason"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Rollback started; follow it in the event log", body = ServiceStatus),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "Nothing to roll back to", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn rollback(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    let handle = service(&app, &name)?;
    let request: ReasonRequest = optional_json(&body, r#"{"reason": "bad deploy"}"#)?;
    check_reason(&request.reason)?;
    handle.rollback(request.reason).await.map_err(lifecycle_error)?;
    Ok((StatusCode::ACCEPTED, Json(handle.status())).into_response())
}

/// Every replica of every service.
#[utoipa::path(get, path = "/api/v1/replicas", tag = "replicas",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every replica", body = [ServiceReplica]),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn list_replicas(State(app): State<App>) -> Json<Vec<ServiceReplica>> {
    let fleet = fleet(&app);
    Json(fleet.services.iter().flat_map(|s| s.replicas.iter().map(|r| ServiceReplica::new(&s.name, r))).collect())
}

/// One replica.
#[utoipa::path(get, path = "/api/v1/replicas/{id}", tag = "replicas",
    params(("id" = String, Path, description = "Replica id", example = "web-3f9a1c")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The replica", body = ServiceReplica),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such replica", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn get_replica(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ServiceReplica>, ApiError> {
    let id = path_param(id)?;
    Ok(Json(replica(&app, &id)?.1))
}

/// Protects a replica from scale-in, or lifts the protection. A replica may
/// also call this for itself with its own token (`EBB_REPLICA_TOKEN`).
#[utoipa::path(post, path = "/api/v1/replicas/{id}/protect", tag = "replicas",
    params(("id" = String, Path, description = "Replica id", example = "web-3f9a1c")),
    request_body = ProtectRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Protection set", body = ReplicaOutcome),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such replica", body = ErrorBody),
        (status = 409, description = "The replica is already leaving", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
        (status = 503, description = "The service is shutting down", body = ErrorBody),
    ))]
pub(crate) async fn protect(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ProtectRequest>, JsonRejection>,
) -> Result<Json<ReplicaOutcome>, ApiError> {
    let id = path_param(id)?;
    let (handle, _replica) = replica(&app, &id)?;
    let request = json_body(body, r#"{"protected": true}"#)?;
    let outcome = handle.protect(&id, request.protected).await.map_err(lifecycle_error)?;
    Ok(Json(outcome))
}

/// Interrupts a replica the way a spot reclaim does: a replacement starts,
/// then the replica drains and stops before the notice runs out.
#[utoipa::path(post, path = "/api/v1/replicas/{id}/interrupt", tag = "replicas",
    params(("id" = String, Path, description = "Replica id", example = "web-3f9a1c")),
    request_body(content = Option<InterruptRequest>, description = "Optional notice"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Interruption started", body = ReplicaOutcome),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such replica", body = ErrorBody),
        (status = 409, description = "The replica is already leaving", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
        (status = 503, description = "The service is shutting down", body = ErrorBody),
    ))]
pub(crate) async fn interrupt(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    let (handle, _replica) = replica(&app, &id)?;
    let request: InterruptRequest = optional_json(&body, r#"{"notice_s": 120}"#)?;
    let notice_s = request.notice_s.unwrap_or(DEFAULT_NOTICE_S);
    if notice_s > 86_400 {
        return Err(bad_request(format!("notice_s is {notice_s}; at most 86400 (a day)")));
    }
    let outcome = handle.interrupt(&id, std::time::Duration::from_secs(notice_s)).await.map_err(lifecycle_error)?;
    Ok((StatusCode::ACCEPTED, Json(outcome)).into_response())
}

/// The event log: why the fleet changed. `?follow=1` streams it.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventsQuery, EventsHeaders),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Events, oldest first; with `follow`, a Server-Sent Events stream whose `data` are events",
            content(
                ([EventView] = "application/json"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn list_events(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    if let Some(name) = &q.service {
        // A listener's own events (certificates) are `listener NAME`.
        let listener = name.strip_prefix("listener ").is_some_and(|l| app.state.listeners.load().has(l));
        if !listener && name != crate::tls::ADMIN_SUBJECT {
            service(&app, name)?;
        }
    }
    let mut after = non_negative("after", q.after)?;
    if let Some(v) = headers.get("last-event-id") {
        let id = v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|&i| i >= 0);
        let id = id.ok_or_else(|| bad_request("Last-Event-ID must be an event sequence number"))?;
        if matches!(q.follow, Some(Follow::One | Follow::True)) {
            after = after.max(id as u64);
        }
    }
    match q.follow {
        Some(Follow::One | Follow::True) => Ok(super::stream::events(&app, q.service, after)),
        _ => {
            let events: Vec<EventView> =
                app.state.events.list(q.service.as_deref(), after).iter().map(EventView::new).collect();
            Ok(Json(events).into_response())
        }
    }
}

/// Per-second history of one service (request rate, latency, CPU, desired
/// vs in service) for a time range: what the dashboard draws and
/// `ebb simulate --history` replays.
#[utoipa::path(get, path = "/api/v1/metrics", tag = "metrics",
    params(MetricsQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Oldest first: one point per minute beyond the last 24 h (from the state file), one per second within them", body = [ServicePoint]),
        (status = 400, description = "Malformed query, or no service named while there are several", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
        (status = 503, description = "The state file could not be read for older history", body = ErrorBody),
    ))]
pub(crate) async fn metrics(
    State(app): State<App>,
    q: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Json<Vec<ServicePoint>>, ApiError> {
    let q = query(q)?;
    let now_ms = crate::clock::unix_ms(std::time::SystemTime::now());
    let since_ms = match q.since {
        Some(_) => non_negative("since", q.since)?,
        None => now_ms.saturating_sub(DEFAULT_METRICS_WINDOW_MS),
    };
    let handle = match &q.service {
        Some(name) => service(&app, name)?,
        None => {
            let mut all = app.state.services.values().into_iter();
            match (all.next(), all.next()) {
                (Some(only), None) => only,
                _ => {
                    let known = app.state.services.names();
                    return Err(bad_request(format!("name a service with ?service=; services: {}", known.join(", "))));
                }
            }
        }
    };
    let recent = handle.history.since(since_ms);
    // Further back than memory holds (24 h): the state file's per-minute
    // points, oldest first, then the per-second ones.
    let oldest_in_memory = recent.first().map(|p| p.time_ms).unwrap_or(now_ms);
    let mut points = Vec::new();
    if since_ms + 60_000 < oldest_in_memory {
        let older = app
            .state
            .store
            .minute_history(&handle.name, since_ms)
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        points.extend(older.iter().filter(|p| p.time_ms + 60_000 <= oldest_in_memory).map(ServicePoint::finite));
    }
    points.extend(recent.iter().map(ServicePoint::finite));
    Ok(Json(points))
}

/// The certificates every TLS listener serves, and the admin API's own
/// (what `ebb certs` shows): from files or ACME, with their names, issuer,
/// serial and not-after.
#[utoipa::path(get, path = "/api/v1/certs", tag = "listeners",
    responses(
        (status = 200, description = "One entry per certificate in service (an ACME listener without one yet: its domains and last error); the admin API's own certificate under the listener name `admin API`", body = [crate::wire::CertView]),
        (status = 401, description = "Token missing or wrong (non-loopback admin listener)", body = ErrorBody),
    ))]
pub(crate) async fn list_certs(State(app): State<App>) -> Json<Vec<crate::wire::CertView>> {
    let mut certs = app.state.listeners.load().certs();
    if let Some(tls) = &app.state.tls {
        certs.extend(crate::listeners::cert_views(crate::tls::ADMIN_SUBJECT, tls, None));
    }
    Json(certs)
}

/// Renews ACME certificates now (what `ebb certs renew [DOMAIN]` does):
/// the one holding `domain`, or every one. Answers when the new
/// certificates are in service, or with the ACME server's error (the old
/// certificate is still served).
#[utoipa::path(post, path = "/api/v1/certs/renew", tag = "listeners",
    request_body(content = Option<crate::wire::RenewRequest>, description = "Nothing, `{}`, or `{\"domain\": \"shop.example.com\"}`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Renewed: the new certificates", body = [crate::wire::RenewOutcome]),
        (status = 400, description = "A body that is not `{}` or `{\"domain\": ...}`", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No ACME certificate holds that domain (or none is configured)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
        (status = 502, description = "The ACME server refused or failed: its error (the old certificate is still served)", body = ErrorBody),
    ))]
pub(crate) async fn renew_certs(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let request: crate::wire::RenewRequest = optional_json(&body, r#"{"domain": "shop.example.com"}"#)?;
    let domain = request.domain.as_deref().map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase());
    let chosen: Vec<_> = app
        .state
        .listeners
        .load()
        .acme()
        .iter()
        .filter(|a| domain.as_ref().is_none_or(|d| a.config.domains.contains(d)))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let known: Vec<String> =
            app.state.listeners.load().acme().iter().flat_map(|a| a.config.domains.clone()).collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            match (&domain, known.is_empty()) {
                (_, true) => "no listener gets its certificate by ACME (tls.acme); file certificates are renewed by replacing their files".to_string(),
                (Some(d), false) => format!("no ACME certificate holds {d}; ACME domains: {}", known.join(", ")),
                (None, false) => unreachable!("every ACME listener is chosen without a domain"),
            },
        ));
    }
    let mut outcomes = Vec::new();
    for acme in chosen {
        match acme.renew().await {
            Ok((serial, not_after)) => outcomes.push(crate::wire::RenewOutcome {
                listener: acme.listener.clone(),
                domains: acme.config.domains.clone(),
                serial,
                not_after,
            }),
            Err(error) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                    "renewing the certificate of listener {} failed: {error}; the previous certificate is still served",
                    acme.listener
                ),
                ))
            }
        }
    }
    Ok(Json(outcomes).into_response())
}

/// Loads the certificate files of TLS listeners again now (what `ebb certs
/// reload` and SIGHUP do), without waiting for the file poll. Answers per
/// listener what it serves now, or why the files did not load (the previous
/// certificates are still served). ACME listeners are not touched (`ebb
/// certs renew`).
#[utoipa::path(post, path = "/api/v1/certs/reload", tag = "listeners",
    request_body(content = Option<crate::wire::ReloadRequest>, description = "Nothing, `{}`, or `{\"listener\": \"public\"}`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each listener's outcome (the admin API's as `admin API`): reloaded with its certificates, or its error (check `reloaded`)", body = [crate::wire::ReloadOutcome]),
        (status = 400, description = "A body that is not `{}` or `{\"listener\": ...}`", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 404, description = "No listener (of that name) serves certificate files", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn reload_certs(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let request: crate::wire::ReloadRequest = optional_json(&body, r#"{"listener": "public"}"#)?;
    let listeners = app.state.listeners.load_full();
    let only = request.listener.clone();
    let admin = app.state.tls.clone().filter(|_| only.as_deref().is_none_or(|l| l == crate::tls::ADMIN_SUBJECT));
    // Reading files: off the async workers.
    let outcomes = tokio::task::spawn_blocking(move || {
        let mut outcomes = listeners.reload_files(only.as_deref());
        if let Some(tls) = admin {
            let outcome = crate::listeners::reload_named(crate::tls::ADMIN_SUBJECT, &tls, std::time::SystemTime::now());
            outcomes.get_or_insert_with(Vec::new).push(outcome);
        }
        outcomes
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let Some(outcomes) = outcomes else {
        let mut known = app.state.listeners.load().file_tls_listeners();
        if app.state.tls.is_some() {
            known.push(crate::tls::ADMIN_SUBJECT.to_string());
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            match (&request.listener, known.is_empty()) {
                (_, true) => "no listener serves certificate files (tls.cert/tls.certs); ACME certificates are renewed by `ebb certs renew`".to_string(),
                (Some(l), false) => format!("listener {l} does not serve certificate files; listeners that do: {}", known.join(", ")),
                (None, false) => unreachable!("every file listener is chosen without a name"),
            },
        ));
    };
    use crate::events::{EventKind, NewEvent};
    for o in &outcomes {
        let subject = match o.listener == crate::tls::ADMIN_SUBJECT {
            true => o.listener.clone(),
            false => format!("listener {}", o.listener),
        };
        app.state.events.record(match &o.error {
            None => NewEvent::new(
                &subject,
                EventKind::CertificateReloaded,
                "certificate files reloaded (ebb certs reload): new connections get them".to_string(),
            ),
            Some(e) => NewEvent::new(
                &subject,
                EventKind::CertificateFailed,
                format!("certificate files do not load: {e}; the previous certificates are still served"),
            ),
        });
    }
    Ok(Json(outcomes).into_response())
}

/// Asks ebb to drain and stop everything (what `ebb down` does).
#[utoipa::path(post, path = "/api/v1/shutdown", tag = "fleet",
    request_body(content = Option<ShutdownRequest>, description = "Nothing, or `{}`"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Stopping", body = ShutdownView),
        (status = 400, description = "A body that is not `{}`: nothing is stopped", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn shutdown(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let _: ShutdownRequest = optional_json(&body, "{}")?;
    app.state.stop_requested.cancel();
    Ok((StatusCode::ACCEPTED, Json(ShutdownView { status: "stopping".into(), pid: std::process::id() }))
        .into_response())
}

/// Makes a one-time login link for the dashboard (what `ebb dashboard`
/// prints): the dashboard never receives the admin token itself.
#[utoipa::path(post, path = "/api/v1/dashboard/login", tag = "fleet",
    request_body(content = Option<ShutdownRequest>, description = "Nothing, or `{}`"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A login link", body = DashboardLogin),
        (status = 400, description = "A body that is not `{}`", body = ErrorBody),
        (status = 401, description = "Token missing or wrong", body = ErrorBody),
        (status = 403, description = "Host or Origin refused", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub(crate) async fn dashboard_login(
    State(app): State<App>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<super::Peer>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let _: ShutdownRequest = optional_json(&body, "{}")?;
    let ticket = app.sessions.lock().unwrap_or_else(|p| p.into_inner()).issue_ticket(std::time::Instant::now());
    // The address the caller reached ebb at (the guard has checked it).
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let login = DashboardLogin {
        url: format!(
            "{}://{host}/login?ticket={ticket}",
            if peer.is_some_and(|p| p.0 .0.tls) { "https" } else { "http" }
        ),
        expires_in_s: super::session::TICKET_TTL.as_secs(),
    };
    Ok((StatusCode::CREATED, Json(login)).into_response())
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "fleet",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> Response {
    let body = super::openapi::document_json();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_service() -> ServiceStatus {
        serde_json::from_value(serde_json::json!({
            "name": "web", "listen": "127.0.0.1:8080", "driver": "process",
            "desired": 2, "min": 1, "max": 4, "in_service": 1, "pending": 0, "version": 1, "holding": null,
            "replicas": [{
                "id": "web-1", "state": "in_service", "healthy": true, "health": "healthy",
                "last_probe": "200", "pid": 1, "port": 2, "version": 1, "in_flight": 0, "requests": 3,
                "cpu": null, "rss_bytes": 4, "age_s": 1.0
            }]
        }))
        .unwrap()
    }

    fn keys(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    /// The API names each replica's service, as it always has, and the
    /// client reads back what it serves.
    #[test]
    fn the_status_document_names_each_replicas_service() {
        let mut status = sample_service();
        status.replicas[0].cpu = Some(f64::NAN);
        let json =
            serde_json::to_value(FleetStatus { services: vec![status], listeners: Vec::new(), cluster: None }).unwrap();
        let replica = json["services"][0]["replicas"][0].clone();
        assert_eq!(replica["service"], "web");
        assert_eq!(replica["id"], "web-1");
        // NaN never reaches JSON as a number the schema does not allow.
        assert!(replica["cpu"].is_null());
        let back: FleetStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.services[0].replicas[0].id, "web-1");
        let listed = serde_json::to_value(ServiceReplica::new("web", &back.services[0].replicas[0])).unwrap();
        assert_eq!(listed, replica);
    }

    /// The metrics API serves the history's points whole (the dashboard
    /// draws from them), with no NaN where the schema says number.
    #[test]
    fn metrics_points_carry_every_history_field() {
        let point = crate::metrics::history::ServicePoint {
            time_ms: 1_000,
            desired: 2,
            in_service: 2,
            pending: 0,
            requests_per_s: 25.0,
            in_flight: 2,
            p50_ms: Some(150.0),
            p99_ms: Some(f64::NAN),
            cpu_mean: Some(3.0),
            replica_cpu: vec![("web-1".into(), 3.0)],
            traffic: Some(crate::metrics::history::PointTraffic {
                offered_per_s: 61.0,
                queued: 2,
                shed_per_s: 31,
                queue_ms: Some(12.5),
                saturated: true,
                host_full: false,
            }),
            shadow_desired: Some(3),
        };
        let raw = serde_json::to_value(&point).unwrap();
        let view = serde_json::to_value(point.finite()).unwrap();
        let missing: Vec<_> = keys(&raw).difference(&keys(&view)).cloned().collect();
        assert!(missing.is_empty(), "MetricsPoint lacks {missing:?}");
        let missing: Vec<_> = keys(&raw["traffic"]).difference(&keys(&view["traffic"])).cloned().collect();
        assert!(missing.is_empty(), "MetricsTraffic lacks {missing:?}");
        assert_eq!(view["traffic"]["offered_per_s"], 61.0);
        assert_eq!(view["traffic"]["saturated"], true);
        assert!(view["p99_ms"].is_null(), "NaN is no number");
        let old = crate::metrics::history::ServicePoint { traffic: None, ..point };
        assert!(serde_json::to_value(old.finite()).unwrap()["traffic"].is_null());
    }

    #[test]
    fn events_keep_their_field_names() {
        let log = crate::events::EventLog::new(4);
        let e =
            log.record(crate::events::NewEvent::new("web", crate::events::EventKind::Scaled, "manual").change(2, 3));
        let view = serde_json::to_value(EventView::new(&e)).unwrap();
        let raw = serde_json::to_value(&e).unwrap();
        let missing: Vec<_> = keys(&raw).difference(&keys(&view)).cloned().collect();
        assert!(missing.is_empty(), "EventView lacks {missing:?}");
        assert_eq!(view["kind"], "scaled");
        let back: crate::events::Event = serde_json::from_value(view).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn optional_bodies() {
        let empty = Bytes::new();
        let r: ReasonRequest = optional_json(&empty, "").unwrap();
        assert!(r.reason.is_none());
        let r: ReasonRequest = optional_json(&Bytes::from_static(br#"{"reason":"x"}"#), "").unwrap();
        assert_eq!(r.reason.as_deref(), Some("x"));
        let err = optional_json::<ReasonRequest>(&Bytes::from_static(br#"{"nope":1}"#), "").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(check_reason(&Some("x".repeat(MAX_REASON + 1))).is_err());
    }
}
