//! The admin API: JSON over HTTP on its own listener (loopback by default),
//! separate from the data plane, plus Prometheus `/metrics` and the
//! dashboard at `/`. The CLI's `status`, `scale`, `events` and `down` go
//! through it.
//!
//! Layout:
//! - `mod.rs` (this file): shared state, the router, the request guard
//!   (Host, Origin, rate limit, token, content type) and the JSON error.
//! - [`auth`]: the bearer token file, constant-time comparison, the limiter of
//!   failed attempts.
//! - [`session`]: the dashboard's one-time login links and session cookies.
//! - [`api`]: the `/api/v1` handlers and the JSON shapes they speak.
//! - [`body`]: request bodies read once, bounded in size and time, and
//!   checked for shape and control characters.
//! - [`openapi`]: the OpenAPI document, generated from the handlers (utoipa).
//! - [`server`]: the accept loop, with header-read and idle deadlines and a
//!   shutdown bounded in time; HTTPS only with `[admin] tls` (the
//!   certificate is a `crate::tls::TlsState`, reloaded like a listener's).
//! - [`stream`]: the Server-Sent Events stream of the event log.
//! - [`prometheus`]: `/metrics` in the Prometheus / OpenMetrics text format.
//! - [`dashboard`]: the embedded HTML/CSS/JS page.
//!
//! **Architecture invariant:** only this module and the CLI's client know the
//! API's JSON shapes and status codes; the controller speaks Rust types.
//!
//! **Security** (docs/api.md has the threat model):
//! - every mutating call needs `Authorization: Bearer <token>` (the token is
//!   in `<state_dir>/admin.token`, mode 0600); reads need it too when the
//!   listener is not loopback-only;
//! - ten wrong tokens within a minute from one address lock that address's
//!   wrong tokens out (429) for a minute; the right token is always served;
//! - on a loopback listener the `Host` must be a loopback name (defeats DNS
//!   rebinding); a request carrying an `Origin` other than its own is refused
//!   (defeats CSRF and cross-site reads); a request body must be empty or
//!   one JSON object of at most 2 MiB, and free text holds no control
//!   characters ([`body`]);
//! - a replica's own token (`EBB_REPLICA_TOKEN`) is accepted only to
//!   protect or unprotect that replica;
//! - containers reach ebb through the *replica gate*, a second listener on
//!   the Docker bridge's gateway address that serves only that call and
//!   accepts only replica tokens ([`replica_gate_router`]);
//! - the token is never handed out: the dashboard signs in with a one-time
//!   login link from `ebb dashboard`, which sets an `HttpOnly;
//!   SameSite=Strict` session cookie ([`session`]).

pub mod api;
pub mod auth;
pub mod body;
pub mod dashboard;
pub mod openapi;
pub mod prometheus;
pub mod server;
pub mod session;
pub mod stream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::connect_info::Connected;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::events::EventLog;

pub use auth::{token_path, AdminToken, TokenError};

/// What the admin handlers share, as `ebb up` builds it.
#[derive(Clone)]
pub struct AdminState {
    /// Every service (removed ones until they have drained).
    pub services: Arc<crate::apply::Services>,
    pub events: Arc<EventLog>,
    /// Cancelled to ask the whole ebb process to drain and stop.
    pub stop_requested: CancellationToken,
    /// The bearer token every mutating call must carry.
    pub token: Arc<AdminToken>,
    /// The config file `ebb up` was started with: a deploy that names no
    /// change rolls out what it says now.
    pub config_path: std::path::PathBuf,
    /// The state store, for metric history older than the last 24 h (read
    /// through its writer: ebb holds the file exclusively).
    pub store: crate::state::StateStore,
    /// The `[listener.NAME]` tables, for status (swapped by `ebb apply`).
    pub listeners: Arc<arc_swap::ArcSwap<crate::listeners::ListenerBoard>>,
    /// The running fleet, for `ebb plan` and `ebb apply`.
    pub running: Arc<crate::apply::Running>,
    /// The admin API's own certificate (`[admin] tls`), for `ebb certs`.
    pub tls: Option<Arc<crate::tls::TlsState>>,
}

/// [`AdminState`] plus what the admin layer keeps for itself.
pub(crate) struct Shared {
    pub state: AdminState,
    /// The listener is loopback-only: reads need no token.
    pub loopback_only: bool,
    /// The replica gate: a listener containers reach, which serves a
    /// replica's own protect call and nothing else.
    pub replica_gate: bool,
    pub limiter: Mutex<auth::FailureLimiter>,
    /// Dashboard login tickets and sessions ([`session`]).
    pub sessions: Mutex<session::Sessions>,
    /// The session cookie's name (it carries the listener's port).
    pub cookie: String,
    /// Counts of scaling actions and other events, kept monotonic for
    /// Prometheus even when the bounded event log forgets old entries.
    pub tally: Mutex<prometheus::EventTally>,
    /// Last known (5xx, connect failures) per (service, replica), for
    /// replicas out of the rotation whose balancer counters are not
    /// reachable any more.
    pub replica_errors: Mutex<std::collections::HashMap<(String, String), (u64, u64)>>,
    /// Cancelled when the admin API stops: ends event streams so graceful
    /// shutdown does not wait for them.
    pub shutdown: CancellationToken,
}

pub(crate) type App = Arc<Shared>;

/// A JSON error body with the right status: `{"error": "...", "status": 404}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

pub use crate::wire::ErrorBody;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody { error: self.message, status: self.status.as_u16() })).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ebb\""));
        }
        response
    }
}

/// Both ends of an admin connection (the peer's address is what the limiter
/// of wrong tokens counts).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The connection is TLS (`[admin] tls`): links are `https://`,
    /// cookies `Secure`.
    pub tls: bool,
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        let remote = *stream.remote_addr();
        let local = stream.io().local_addr().unwrap_or(remote);
        Peer { local, remote, tls: false }
    }
}

/// The admin router. `listen` is the listener's address (it decides whether
/// reads need the token); `shutdown` ends event streams.
pub fn router(state: AdminState, listen: SocketAddr, shutdown: CancellationToken) -> Router {
    let app = shared(state, listen, false, shutdown);
    api::routes()
        .merge(dashboard::routes())
        .route("/metrics", axum::routing::get(prometheus::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/openapi.json") })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}; see /api/v1/openapi.json", request.method(), request.uri().path()),
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The replica gate's router: `POST /api/v1/replicas/{id}/protect` with
/// that replica's own token (`EBB_REPLICA_TOKEN`), nothing else — not even
/// the admin token, so a listener that containers reach exposes no more
/// than what a replica may do to itself.
pub fn replica_gate_router(state: AdminState, shutdown: CancellationToken) -> Router {
    let app = shared(state, std::net::SocketAddr::from(([0, 0, 0, 0], 0)), true, shutdown);
    Router::new()
        .route("/api/v1/replicas/{id}/protect", axum::routing::post(api::protect))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "this address serves only POST /api/v1/replicas/{id}/protect")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this address serves only POST /api/v1/replicas/{id}/protect")
        })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Serves the replica gate on an already-bound listener until `shutdown`.
pub async fn serve_replica_gate(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = replica_gate_router(state, shutdown.clone());
    server::serve(listener, app, None, shutdown).await
}

fn shared(state: AdminState, listen: SocketAddr, replica_gate: bool, shutdown: CancellationToken) -> App {
    let resumed_after = state.events.resumed_after();
    Arc::new(Shared {
        loopback_only: !replica_gate && listen.ip().is_loopback(),
        replica_gate,
        state,
        limiter: Mutex::default(),
        sessions: Mutex::default(),
        cookie: session::cookie_name(listen.port()),
        // Counters count this run's events, not the kept log of earlier runs.
        tally: Mutex::new(prometheus::EventTally::after(resumed_after)),
        replica_errors: Mutex::default(),
        shutdown,
    })
}

/// Serves the admin API on an already-bound listener until `shutdown`,
/// over TLS when `tls` is given (`[admin] tls`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    tls: Option<std::sync::Arc<crate::tls::TlsState>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    if !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            token_file = %state.token.path().display(),
            "The admin API listens beyond loopback: every call, reads included, needs the bearer token."
        );
    }
    let app = router(state, listen, shutdown.clone());
    server::serve(listener, app, tls.map(|t| t.acceptor()), shutdown).await
}

/// Whether a `Host` header names this machine's loopback: `127.0.0.1:9900`,
/// `[::1]:9900`, `localhost:9900`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host);
    name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case("localhost.")
        || name.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// The host part of a `Host` header (port and IPv6 brackets removed).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    }
}

/// Paths anyone who may reach the listener can read without the token, also
/// off loopback: the dashboard's static files (the page carries no token
/// unless its peer owns the token file) and the API description.
fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/index.html" | "/app.js" | "/style.css" | "/favicon.svg" | "/login" | "/api/v1/openapi.json")
}

/// Whether the request carries a live dashboard session cookie (never on
/// the replica gate).
pub(crate) fn has_session(app: &Shared, headers: &axum::http::HeaderMap) -> bool {
    if app.replica_gate {
        return false;
    }
    let sessions = app.sessions.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|h| session::cookie_value(h, &app.cookie))
        .any(|secret| sessions.is_valid(secret, now))
}

/// Whether a request's `Origin` is its own (`scheme://Host`).
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    !host.is_empty() && rest.eq_ignore_ascii_case(host)
}

/// Whether `token` is the own token of the replica this request protects:
/// a replica may set or clear its own scale-in protection
/// (`POST /api/v1/replicas/{its id}/protect`), and nothing else.
fn replica_may(app: &Shared, request: &Request, token: &str) -> bool {
    if request.method() != Method::POST {
        return false;
    }
    let Some(id) =
        request.uri().path().strip_prefix("/api/v1/replicas/").and_then(|rest| rest.strip_suffix("/protect"))
    else {
        return false;
    };
    !id.is_empty() && !id.contains('/') && app.state.services.values().iter().any(|s| s.replica_token_is(id, token))
}

/// Every request passes here first: Host (DNS rebinding), Origin (CSRF and
/// cross-site reads), the failed-attempt lockout, the bearer token, and the
/// content type of a body. Order matters: nothing about the token is
/// checked (or counted) for a request that is refused for where it comes
/// from.
async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    let checked = match check(&app, &request) {
        // A body is read (bounded in size and time) and its shape checked
        // only once the caller may make the call.
        Ok(()) if is_mutating(request.method()) => body::buffered(request).await,
        Ok(()) => Ok(request),
        Err(error) => Err(error),
    };
    match checked {
        Ok(request) => {
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
            headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            // A wrong token from a locked-out address is answered slowly:
            // a guesser's next guess waits, the right token never does.
            if error.status() == StatusCode::TOO_MANY_REQUESTS {
                tokio::time::sleep(auth::FailureLimiter::LOCKED_OUT_DELAY).await;
            }
            error.into_response()
        }
    }
}

/// Whether a call may change something (and so needs the token and may
/// carry a body).
fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn check(app: &Shared, request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let host = text(header::HOST.as_str()).unwrap_or("");
    if app.loopback_only && !host.is_empty() && !is_loopback_host(host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the Host header is not a loopback name; the admin API answers only to 127.0.0.1, [::1] or localhost",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !same_origin(origin, host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin requests are refused: the admin API serves only its own dashboard",
            ));
        }
    }
    if text("sec-fetch-site") == Some("cross-site") {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "cross-site requests are refused"));
    }

    let mutating = is_mutating(request.method());
    let path = request.uri().path();
    let needs_token = mutating || (!app.loopback_only && !is_public(path)) || app.replica_gate;
    let presented = headers.get(header::AUTHORIZATION);
    let session = presented.is_none() && has_session(app, headers);
    match presented {
        // The dashboard signed in with a login link. Its changes must come
        // from its own page: a browser sends `Origin` with every fetch
        // that changes something (and a foreign one was refused above).
        None if session && mutating && !headers.contains_key(header::ORIGIN) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a dashboard session changes things only from the dashboard page (no Origin header)",
            ));
        }
        None if session => {}
        // No token, no guess: a plain 401 (never 429, the limiter is for
        // guessers).
        None if needs_token => {
            let message = match app.replica_gate {
                true => "this call needs `Authorization: Bearer $EBB_REPLICA_TOKEN`".to_string(),
                false => format!(
                    "this call needs `Authorization: Bearer <token>`; the token is in {} (for the dashboard: open the link `ebb dashboard` prints)",
                    app.state.token.path().display()
                ),
            };
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, message));
        }
        None => {}
        Some(value) => {
            let ip = request
                .extensions()
                .get::<axum::extract::ConnectInfo<Peer>>()
                .map(|c| c.0.remote.ip())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            // The right token is always served, lockout or not: every
            // local process shares 127.0.0.1, so a lockout that held the
            // right token too would let any of them lock the operator out.
            // Guessing stays hopeless (2^256 tokens); the lockout turns
            // guesses into 429s and keeps them out of the log.
            let ok = value
                .to_str()
                .ok()
                .and_then(auth::bearer)
                .is_some_and(|t| (!app.replica_gate && app.state.token.matches(t)) || replica_may(app, request, t));
            if !ok {
                let now = Instant::now();
                let mut limiter = app.limiter.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(wait) = limiter.check(ip, now) {
                    let secs = wait.as_secs().max(1);
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("too many wrong tokens from {ip}; try again in {secs} s"),
                    )
                    .retry_after(secs));
                }
                let locked = limiter.fail(ip, now);
                // Never echo what was presented: it may be a real token of
                // another ebb.
                tracing::warn!(client = %ip, "Admin API call with a wrong token refused.");
                if let Some(wait) = locked {
                    tracing::warn!(client = %ip, lockout_s = wait.as_secs(), "Too many wrong admin tokens; locking the client out.");
                }
                let message = match app.replica_gate {
                    true => "wrong token; this address accepts only a replica's own EBB_REPLICA_TOKEN, to protect that replica".to_string(),
                    false => format!("wrong token; the token is in {}", app.state.token.path().display()),
                };
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, message));
            }
        }
    }

    if mutating {
        let has_body =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0")
                || headers.contains_key(header::TRANSFER_ENCODING);
        let json = text(header::CONTENT_TYPE.as_str())
            .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
        if has_body && !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send a JSON body with Content-Type: application/json",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in ["127.0.0.1:9900", "localhost:9900", "[::1]:9900", "127.0.0.2", "LOCALHOST", "localhost."] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:9900", "10.0.0.1:9900", "[2001:db8::1]:80", "example.com", "localhost.evil.com"] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:9900", "127.0.0.1:9900"));
        assert!(same_origin("http://LOCALHOST:9900", "localhost:9900"));
        assert!(!same_origin("http://127.0.0.1:9901", "127.0.0.1:9900"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:9900"));
        assert!(!same_origin("null", "127.0.0.1:9900"));
        assert!(!same_origin("http://127.0.0.1:9900", ""));
    }
}
