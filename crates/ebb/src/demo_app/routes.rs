//! The demo app's HTTP API. Status codes and bodies are a contract: the seed
//! stories' clients (validate scripts, load tests, ebb's own health checks)
//! compare them exactly, so change nothing here without changing
//! `docs/demo-app.md` and `tests/demo_app.rs` with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use percent_encoding::percent_decode_str;
use rand::Rng as _;
use serde::ser::SerializeMap as _;
use serde::Serialize;
use serde_json::json;

use super::cpu::Cpu;
use super::store::Store;

/// The largest `cpu_ms` or `sleep_ms` one `/work` request may ask for: a
/// minute is plenty to saturate a replica, and a typo must not occupy one for
/// an hour.
pub const MAX_WORK_MS: u64 = 60_000;

/// Everything the handlers share.
pub struct AppState {
    /// Reported by `/gtg?details`, `/work` and `/stats`, so a client can tell
    /// which replica the balancer sent it to.
    pub replica_id: String,
    pub store: Store,
    pub cpu: Cpu,
    pub stats: Stats,
}

/// Counters of this replica, served by `/stats`. Tests sum them over the
/// replicas to prove that the balancer delivered every request exactly once.
#[derive(Default)]
pub struct Stats {
    /// Requests answered, whatever their status, except `/stats` itself (so
    /// reading the counters does not change them).
    requests: AtomicU64,
    /// `POST /candidate/<name>` requests that stored their name.
    posts: AtomicU64,
    /// `/work` requests completed.
    work: AtomicU64,
    /// Requests being handled right now (`/stats` excluded).
    in_flight: AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/gtg", get(good_to_go))
        .route("/candidate/{name}", get(get_candidate).post(post_candidate))
        .route("/candidates", get(all_candidates))
        .route("/api", get(api))
        .route("/work", get(work))
        .route("/stream", get(stream))
        .route("/stats", get(stats))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count_requests))
        .with_state(state)
}

/// Counts requests for `/stats`, including 404s and 405s, which are served
/// too. A request whose client went away before the answer is not counted.
async fn count_requests(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/stats" {
        return next.run(request).await;
    }
    let stats = &state.stats;
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    // Decrements on drop too, so an abandoned request does not stay in flight.
    let _in_flight = DecrementOnDrop(&stats.in_flight);
    let response = next.run(request).await;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    response
}

struct DecrementOnDrop<'a>(&'a AtomicU64);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An API error: a status and a JSON body `{"message": ...}` that says what
/// was wrong and what to send instead.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn internal(error: &anyhow::Error) -> ApiError {
        tracing::error!(message = "Request failed.", error = format!("{error:#}"));
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("{error:#}") }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "message": self.message }))).into_response()
    }
}

/// The seed app answered its bare root with this, and its clients check it.
async fn root() -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "status": "invalid request" }))).into_response()
}

/// The health check. Without `details` the body is empty, so health checks
/// stay cheap; with it (any value, even none) it says who answered.
async fn good_to_go(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    if query_param(query.as_deref(), "details").is_some() {
        Json(json!({ "connected": "true", "instance-id": state.replica_id })).into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

/// Stores the candidate named in the path (URL-decoded); any body is ignored.
/// Posting a name again updates it rather than duplicating it, as the seed's
/// DynamoDB `put_item` did.
async fn post_candidate(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let name = candidate_name(&uri)?;
    state
        .store
        .put(name.clone(), state.replica_id.clone())
        .await
        .map_err(|e| ApiError::internal(&e.context("Unable to update")))?;
    state.stats.posts.fetch_add(1, Ordering::Relaxed);
    Ok(Json(candidate(name)).into_response())
}

async fn get_candidate(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let name = candidate_name(&uri)?;
    let names = state.store.get(name).await.map_err(|e| ApiError::internal(&e))?;
    Ok(candidates_or_not_found(names))
}

async fn all_candidates(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let names = state.store.all().await.map_err(|e| ApiError::internal(&e))?;
    Ok(candidates_or_not_found(names))
}

/// A list of items, or the seed's plain-text 404 when there are none.
fn candidates_or_not_found(names: Vec<String>) -> Response {
    if names.is_empty() {
        return NOT_FOUND.into_response();
    }
    Json(names.into_iter().map(candidate).collect::<Vec<_>>()).into_response()
}

/// One stored item, in the seed's shape.
fn candidate(name: String) -> serde_json::Value {
    json!({ "CandidateName": name })
}

/// The `<name>` of `/candidate/<name>`, percent-decoded. Decoded by hand
/// rather than by the router so that a malformed escape (`%zz`) or bytes that
/// are not UTF-8 (`%ff`) get a 400 instead of being stored as something else.
fn candidate_name(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix("/candidate/").unwrap_or_default();
    decode_strict(raw).map_err(|why| {
        ApiError::bad_request(format!(
            "the candidate name {raw:?} is not valid percent-encoding: {why}; encode it like John%20Smith"
        ))
    })
}

/// Percent-decodes `raw`, refusing `%` not followed by two hex digits and
/// results that are not UTF-8.
fn decode_strict(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(i + 1) && hex(i + 2)) {
            return Err("'%' must be followed by two hex digits");
        }
    }
    percent_decode_str(raw).decode_utf8().map(|name| name.into_owned()).map_err(|_| "it does not decode to UTF-8")
}

/// The S2 workload: a cheap JSON object of 52 random ASCII letters.
async fn api() -> Json<RandomLetters> {
    Json(RandomLetters::new())
}

/// 52 random letters, serialised as `{"0": "x", ..., "51": "Q"}` with the keys
/// in numeric order (a JSON map type would sort them as strings).
struct RandomLetters([u8; 52]);

impl RandomLetters {
    const ALPHABET: &'static [u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

    fn new() -> RandomLetters {
        let mut rng = rand::thread_rng();
        RandomLetters(std::array::from_fn(|_| Self::ALPHABET[rng.gen_range(0..Self::ALPHABET.len())]))
    }
}

impl Serialize for RandomLetters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (i, letter) in self.0.iter().enumerate() {
            map.serialize_entry(&i.to_string(), &char::from(*letter))?;
        }
        map.end()
    }
}

/// What a `/work` request did, measured.
#[derive(Serialize)]
struct WorkReport {
    replica_id: String,
    /// CPU burnt, as asked.
    cpu_ms: u64,
    /// Time slept after burning, as asked.
    sleep_ms: u64,
    /// Time spent waiting for the CPU budget before burning started.
    queued_ms: u64,
    /// Time from the request reaching the handler to the answer.
    elapsed_ms: u64,
}

/// A synthetic request: burn `cpu_ms` of CPU (the part that makes autoscaling
/// react), then wait `sleep_ms` (a slow database or downstream call, which
/// holds a request in flight without using CPU).
async fn work(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Result<Json<WorkReport>, ApiError> {
    let started = Instant::now();
    let cpu_ms = millis_param(query.as_deref(), "cpu_ms")?;
    let sleep_ms = millis_param(query.as_deref(), "sleep_ms")?;
    let burn = state.cpu.burn(Duration::from_millis(cpu_ms)).await.map_err(|e| ApiError::internal(&e))?;
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    state.stats.work.fetch_add(1, Ordering::Relaxed);
    Ok(Json(WorkReport {
        replica_id: state.replica_id.clone(),
        cpu_ms,
        sleep_ms,
        queued_ms: burn.queued.as_millis() as u64,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }))
}

/// Server-Sent Events: one `data: N` event every 200 ms for `ms`
/// milliseconds (a long-lived stream, like a live feed), then the end.
async fn stream(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let ms = millis_param(query.as_deref(), "ms")?;
    let end = tokio::time::Instant::now() + Duration::from_millis(ms);
    let events = futures_util::stream::unfold(0u64, move |n| async move {
        if n > 0 {
            let next = tokio::time::Instant::now() + Duration::from_millis(200);
            if next > end {
                return None;
            }
            tokio::time::sleep_until(next).await;
        }
        Some((Ok::<_, std::convert::Infallible>(format!("data: {n}\n\n")), n + 1))
    });
    let mut response = axum::body::Body::from_stream(events).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/event-stream"));
    Ok(response)
}

/// A whole number of milliseconds in `0..=MAX_WORK_MS`; absent or empty is 0.
fn millis_param(query: Option<&str>, key: &str) -> Result<u64, ApiError> {
    let Some(value) = query_param(query, key).filter(|v| !v.is_empty()) else { return Ok(0) };
    match value.parse::<u64>() {
        Ok(ms) if ms <= MAX_WORK_MS => Ok(ms),
        _ => Err(ApiError::bad_request(format!(
            "{key} must be a whole number of milliseconds from 0 to {MAX_WORK_MS}, got {value:?}"
        ))),
    }
}

/// The body of `/stats`; a struct so the fields keep this order.
#[derive(Serialize)]
struct StatsReport {
    replica_id: String,
    requests: u64,
    posts: u64,
    work: u64,
    in_flight: u64,
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<StatsReport> {
    let stats = &state.stats;
    Json(StatsReport {
        replica_id: state.replica_id.clone(),
        requests: stats.requests.load(Ordering::Relaxed),
        posts: stats.posts.load(Ordering::Relaxed),
        work: stats.work.load(Ordering::Relaxed),
        in_flight: stats.in_flight.load(Ordering::Relaxed),
    })
}

/// The seed's plain-text 404, for unknown paths and unknown candidates alike.
const NOT_FOUND: (StatusCode, &str) = (StatusCode::NOT_FOUND, "Not Found");

async fn not_found() -> (StatusCode, &'static str) {
    NOT_FOUND
}

/// The first value of `key` in a query string, form-decoded (`+` is a space);
/// `Some("")` when the key is present without a value (`?details`).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    query?
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| decode(k) == key)
        .map(|(_, v)| decode(v))
}
