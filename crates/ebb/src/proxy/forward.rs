//! One request, from the client to a backend and back.
//!
//! 1. Refuse what must not go upstream (a head the framing tracker refused,
//!    `CONNECT`, a head that breaks the `Host` / `Transfer-Encoding` /
//!    `Content-Length` rules of `checks.rs`), else make the request
//!    upstream-ready (hop-by-hop headers, client-address headers,
//!    origin-form URI, HTTP/1.1).
//!    With `request_buffering`, a small body is then read whole
//!    (`buffering.rs`), so a slow upload holds no replica slot.
//! 2. Pick a backend from the routable snapshot (503 when there is none).
//! 3. Get a ready connection to it *before* sending: a pooled idle one or a
//!    new one. A failed connect is retried once on another backend: the
//!    request never left, so this is always safe.
//! 4. Send. A pooled connection that fails before any byte of the request
//!    is written hands the unsent request back: it goes out again on a
//!    fresh connection. A request that was written is never sent again: upstream
//!    errors after that are 502, no response head within `upstream_timeout`
//!    is 504.
//! 5. Answer with the backend's response, its body wrapped so the backend's
//!    `in_flight` drops exactly when the body ends (or fails, or the client
//!    goes away).
//!
//! Upgrade requests take steps 3 to 5 in `upgrade.rs`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::access_log::{AccessRecord, Served};
use super::body::{Dispatched, ProxyBody};
use super::buffering::{read_ahead, ReadAhead};
use super::checks::check_head;
use super::conn_io::{ActiveGuard, ConnShared};
use super::framing::Refusal;
use super::front::Target;
use super::headers::{is_upgrade_request, strip_hop_by_hop, Forwarding};
use super::request_id::X_REQUEST_ID;
use super::stall::StallWatch;
use super::upstream::{
    connect, send, BodyWatch, ClientBodyFailure, ConnError, ConnectError, RequestBody, SendError, Upstream,
};
use super::{Backend, ServiceProxy};

/// How many times one request may find a pooled connection closed before
/// the balancer gives up on it (each time the request comes back unsent).
const MAX_STALE_CONNECTIONS: u32 = 3;

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static CLOSE: HeaderValue = HeaderValue::from_static("close");

/// An answer made by the balancer itself: a short JSON body.
pub(crate) fn local_error(proxy: &ServiceProxy, status: StatusCode, message: &str, close: bool) -> Response<ProxyBody> {
    if status == StatusCode::SERVICE_UNAVAILABLE && message == NO_REPLICA {
        let mut response = Response::new(ProxyBody::full(proxy.no_replica_body.clone()));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, APPLICATION_JSON.clone());
        if close {
            response.headers_mut().insert(header::CONNECTION, CLOSE.clone());
        }
        return response;
    }
    local_error_of("service", &proxy.service, status, message, close)
}

pub(crate) const NO_REPLICA: &str = "no healthy replica";

pub(crate) fn error_json(message: &str, service: &str) -> String {
    serde_json::json!({ "error": message, "service": service }).to_string()
}

/// The service function: never fails, every problem is an HTTP answer.
/// Routes the request (a listener's rules) and forwards it to the chosen
/// service's balancer, or gives the front's own answer (no route: 404; the
/// plain-HTTP address of a TLS listener: 308), after the same hygiene.
pub(crate) async fn handle(conn: Arc<ConnShared>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    // Every HTTP/1 head is counted, routed or not, so the framing
    // tracker's refusals stay matched to their heads.
    let http1 = req.version() <= Version::HTTP_11;
    let refusal = if http1 { conn.next_head_refusal() } else { None };
    let front = conn.front.clone();
    let closing = conn.clone();
    // A new id replaces the client's on the way upstream (`Forwarding`).
    let (request_id, new_id) = super::request_id::of(req.headers());
    let mut record = front.access_log().map(|log| AccessRecord::start(log, &req, &conn.peer_ip, &request_id));
    let mut service = None;
    let mut response = match front.route(&req) {
        Target::Service(proxy) => {
            if record.is_some() {
                service = Some(proxy.service.clone());
            }
            let upstream_id = new_id.then(|| request_id.clone());
            match forward(conn, proxy.clone(), req, refusal, upstream_id).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
        Target::Local(answer) => match refused(&req, refusal) {
            Some((status, message, close)) => {
                front.stats().rejected.fetch_add(1, Ordering::Relaxed);
                local_error_of("listener", &front.name, status, message, close)
            }
            None => *answer,
        },
    };
    front.finish(&mut response);
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    // Handing over to another ebb: the client reconnects (to it).
    if http1 && closing.closing() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(header::CONNECTION, CLOSE.clone());
    }
    if let Some(mut record) = record.take() {
        record.answered(&response, service);
        response.body_mut().attach(record);
    }
    Ok(response)
}

/// Why a request must not go upstream, if it must not: the answer's
/// status, message, and whether the connection closes after it.
fn refused<B>(req: &Request<B>, refusal: Option<Refusal>) -> Option<(StatusCode, &'static str, bool)> {
    if let Some(refusal) = refusal {
        return Some(match refusal {
            Refusal::AmbiguousLength => {
                (StatusCode::BAD_REQUEST, "request has both Content-Length and Transfer-Encoding", true)
            }
            Refusal::LengthTooLarge => {
                (StatusCode::BAD_REQUEST, super::checks::Rejection::ContentLengthTooLarge.message(), true)
            }
            Refusal::HeadTooLarge => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request header fields too large", true)
            }
        });
    }
    if req.method() == Method::CONNECT {
        return Some((StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported", false));
    }
    let authority = req.uri().authority().map(|a| a.as_str());
    if let Err(rejection) = check_head(req.version(), req.headers(), authority) {
        return Some((rejection.status(), rejection.message(), true));
    }
    None
}

/// An answer of the balancer's own, naming who gave it (`"service"` or
/// `"listener"`).
fn local_error_of(key: &str, name: &str, status: StatusCode, message: &str, close: bool) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": message, key: name }).to_string();
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, APPLICATION_JSON.clone());
    if close {
        response.headers_mut().insert(header::CONNECTION, CLOSE.clone());
    }
    response
}

/// One request to one service's balancer, after the hygiene checks.
async fn forward(
    conn: Arc<ConnShared>,
    proxy: Arc<ServiceProxy>,
    req: Request<Incoming>,
    refusal: Option<Refusal>,
    request_id: Option<HeaderValue>,
) -> Result<Response<ProxyBody>, Infallible> {
    let proxy = &proxy;
    let arrived = std::time::Instant::now();
    proxy.stats.requests.fetch_add(1, Ordering::Relaxed);
    let http1 = req.version() <= Version::HTTP_11;
    if let Some((status, message, close)) = refused(&req, refusal) {
        proxy.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = ?conn.peer_ip, reason = message, "Refused a request head.");
        return Ok(local_error(proxy, status, message, close));
    }

    // Scale to zero: hold a request while the service wakes (`hold.rs`).
    let mut cold_start = None;
    let mut activity = true;
    if let Some(idle) = proxy.idle_config() {
        let agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        activity = !idle.ignores(agent);
        if activity {
            proxy.hold.touch();
        }
        if proxy.routable().is_empty() {
            if !activity {
                if proxy.hold.phase() != super::hold::IdlePhase::Awake {
                    return Ok(super::hold::idle_answer(proxy, &idle));
                }
            } else {
                match super::hold::hold(proxy, &idle).await {
                    super::hold::Held::Released(waited) => cold_start = Some(waited),
                    super::hold::Held::Refused(response) => return Ok(response),
                }
            }
        }
    }
    let mut response = dispatch(conn, proxy, req, request_id, arrived, http1, activity).await;
    if let Some(waited) = cold_start {
        response.headers_mut().insert(super::hold::COLD_START_HEADER, HeaderValue::from(waited.as_millis() as u64));
    }
    Ok(response)
}

/// Steps 2 to 5 of one request (see the module's doc).
async fn dispatch(
    conn: Arc<ConnShared>,
    proxy: &Arc<ServiceProxy>,
    mut req: Request<Incoming>,
    request_id: Option<HeaderValue>,
    arrived: std::time::Instant,
    http1: bool,
    activity: bool,
) -> Response<ProxyBody> {
    let active = ActiveGuard::new(conn.clone());
    let upgrade = http1 && req.version() == Version::HTTP_11 && is_upgrade_request(req.headers());
    let client_upgrade = if upgrade { Some(hyper::upgrade::on(&mut req)) } else { None };
    let forwarding = prepare_request(&mut req, &conn, upgrade, request_id);

    // Read a small body whole before a replica slot is taken (see
    // `buffering.rs`); an HTTP/2 stream's reads are timed here.
    let (parts, body) = req.into_parts();
    // Read once: a request keeps the settings it started with (`ebb apply`).
    let settings = proxy.settings();
    let limit = settings.config.request_buffering;
    let read_ahead = if limit > 0 && !upgrade && !hyper::body::Body::is_end_stream(&body) {
        match read_ahead(body, limit, (!http1).then_some(conn.config.body_timeout)).await {
            Ok(read) => read,
            Err(failure) => return client_body_failed(proxy, failure, http1),
        }
    } else {
        ReadAhead::None(body)
    };

    let picked = match settings.config.max_in_flight {
        None => pick(proxy, None),
        Some(limit) => match super::admission::admit(proxy, limit).await {
            super::admission::Admission::Admitted(backend) => Some(backend),
            super::admission::Admission::NoReplica => None,
            super::admission::Admission::Shed { why } => {
                let mut response = local_error(proxy, StatusCode::SERVICE_UNAVAILABLE, why, false);
                let after = super::admission::retry_after(settings.config.queue_timeout);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after));
                return response;
            }
        },
    };
    let Some(backend) = picked else {
        proxy.stats.no_backend.fetch_add(1, Ordering::Relaxed);
        return local_error(proxy, StatusCode::SERVICE_UNAVAILABLE, NO_REPLICA, false);
    };
    let mut dispatched = Dispatched::new(backend, active, proxy.clone());
    if activity && proxy.hold.enabled.load(Ordering::Relaxed) {
        dispatched.count_as_activity();
    }

    // A body still coming from the client is watched on its way up (a
    // bodiless or read-ahead request costs nothing). An HTTP/2 stream's body
    // has no socket deadline: the watch keeps it.
    let client_limit = (!http1).then_some(conn.config.body_timeout);
    let new_watch =
        |client: &Incoming| (!hyper::body::Body::is_end_stream(client)).then(|| Arc::new(BodyWatch::new(client_limit)));
    let (body, watch) = match read_ahead {
        ReadAhead::None(client) => {
            let watch = new_watch(&client);
            (RequestBody::Client(client, watch.clone()), watch)
        }
        ReadAhead::Whole(frames) => (RequestBody::Buffered(frames, None), None),
        ReadAhead::Partial(frames, client) => {
            let watch = new_watch(&client);
            (RequestBody::Buffered(frames, Some(Box::new(RequestBody::Client(client, watch.clone())))), watch)
        }
    };
    // A bodiless request with an idempotent method may be sent again to
    // another replica if the first fails before answering: keep its head.
    if let Some(client_upgrade) = client_upgrade {
        let req = Request::from_parts(parts, body);
        let log_served = conn.front.logs_access();
        return super::upgrade::relay(proxy, dispatched, req, client_upgrade, &settings.config, arrived, log_served)
            .await;
    }
    // The head stays here, written from a reference on each attempt: a
    // request that goes out again needs no copy of it.
    let replay = is_idempotent(&parts.method) && hyper::body::Body::is_end_stream(&body);
    let mut body = Some(body);
    let mut resent = false;

    // Steps 3 and 4.
    let mut retried = false;
    let mut stale = 0;
    let mut fresh_only = false;
    let (head, head_rtt) = loop {
        let mut upstream =
            match ready_connection(dispatched.backend(), fresh_only, settings.config.connect_timeout).await {
                Ok(conn) => conn,
                Err(error) => {
                    if let Some(answer) = connect_failed(proxy, &mut dispatched, &mut retried, error) {
                        return answer;
                    }
                    fresh_only = false;
                    continue;
                }
            };
        proxy.queue_time.record(arrived.elapsed());
        let sent = std::time::Instant::now();
        // A request that may go out once more stops waiting for a replica
        // that failed (a lost node) instead of waiting out the timeout.
        let resendable = replay && !resent && within_retry_budget(proxy);
        let abandon = resendable.then(|| &**dispatched.backend());
        let sending = body.take().unwrap_or(RequestBody::Empty);
        let timeout = settings.config.upstream_timeout;
        match send(&mut upstream, &parts, &forwarding, sending, timeout, watch.as_deref(), abandon).await {
            Ok(head) => {
                let head_rtt = sent.elapsed();
                dispatched.set_conn(upstream);
                break (head, head_rtt);
            }
            Err(SendError::Failed { unsent: Some(unsent), .. }) if stale < MAX_STALE_CONNECTIONS => {
                // The connection failed before the request was written.
                stale += 1;
                body = Some(unsent);
                fresh_only = true;
                continue;
            }
            Err(SendError::Failed { error, .. }) => {
                if let Some(failure) = watch.as_ref().and_then(|w| w.failure()) {
                    // The client broke its own body: not the replica's
                    // fault (the replica sees the body break off).
                    drop(dispatched);
                    return client_body_failed(proxy, failure, http1);
                }
                let backend = dispatched.backend();
                proxy.count_gateway_failure(backend, false);
                tracing::debug!(replica = %backend.replica_id, %error, "Replica failed the request.");
                if matches!(error, ConnError::SwitchedUnasked) {
                    // A 101 the client did not ask for cannot be relayed.
                    drop(dispatched);
                    proxy.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    return local_error(proxy, StatusCode::BAD_GATEWAY, "replica switched protocols unasked", false);
                }
                // Written, but no response byte came back. An idempotent
                // bodiless request is safe to send once more, elsewhere,
                // within the retry budget.
                if replay && !resent && resend(proxy, &mut dispatched) {
                    (resent, fresh_only) = (true, false);
                    continue;
                }
                drop(dispatched);
                proxy.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                return local_error(proxy, StatusCode::BAD_GATEWAY, "replica failed to answer", false);
            }
            Err(SendError::Abandoned) => {
                // Its replica failed with no answer given: the connection
                // goes, the request goes once more elsewhere.
                tracing::debug!(replica = %dispatched.backend().replica_id, "Replica failed before answering; sending the request elsewhere.");
                if replay && resend(proxy, &mut dispatched) {
                    (resent, fresh_only) = (true, false);
                    continue;
                }
                drop(dispatched);
                proxy.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                return local_error(proxy, StatusCode::BAD_GATEWAY, "replica failed before it answered", false);
            }
            Err(SendError::TimedOut) => {
                proxy.count_gateway_failure(dispatched.backend(), false);
                // Dropping the connection closes it.
                drop(dispatched);
                if let Some(failure) = watch.as_ref().and_then(|w| w.failure()) {
                    return client_body_failed(proxy, failure, http1);
                }
                proxy.stats.upstream_timeouts.fetch_add(1, Ordering::Relaxed);
                return local_error(proxy, StatusCode::GATEWAY_TIMEOUT, "replica did not answer in time", false);
            }
        }
    };

    // Step 5.
    answered(proxy, &dispatched, head.status, arrived, head_rtt);
    let mut parts = head;
    if conn.front.logs_access() {
        let backend = dispatched.backend().clone();
        parts.extensions.insert(Served { backend, upstream: head_rtt });
    }
    // The backend's HTTP version is not the client's: hyper answers each
    // client in its own version (1.0, 1.1 or 2) from this.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, false);
    let stall = (!http1).then(|| StallWatch::new(conn.clone(), conn.config.send_timeout));
    Response::from_parts(parts, ProxyBody::upstream(dispatched, stall))
}

/// Counts an answer's head: the request's latency, the replica's, and its
/// status for outlier detection and peak-EWMA.
pub(super) fn answered(
    proxy: &ServiceProxy,
    dispatched: &Dispatched,
    status: StatusCode,
    arrived: std::time::Instant,
    head_rtt: std::time::Duration,
) {
    let elapsed = arrived.elapsed();
    proxy.latency.record(elapsed);
    let backend = dispatched.backend();
    backend.latency.record(elapsed);
    proxy.count_timed_answer(backend, status, head_rtt);
}

/// A connect to `dispatched`'s replica failed: counted, and the request
/// moves to another replica once (`None`: connect again), else the answer.
pub(super) fn connect_failed(
    proxy: &ServiceProxy,
    dispatched: &mut Dispatched,
    retried: &mut bool,
    error: ConnectError,
) -> Option<Response<ProxyBody>> {
    let backend = dispatched.backend();
    proxy.count_gateway_failure(backend, true);
    tracing::debug!(replica = %backend.replica_id, addr = %backend.addr, %error, "Could not connect to replica.");
    if !*retried {
        if let Some(other) = pick(proxy, Some(backend)) {
            *retried = true;
            proxy.stats.retries.fetch_add(1, Ordering::Relaxed);
            dispatched.redirect(other);
            return None;
        }
    }
    Some(match error {
        ConnectError::TimedOut => {
            proxy.stats.upstream_timeouts.fetch_add(1, Ordering::Relaxed);
            local_error(proxy, StatusCode::GATEWAY_TIMEOUT, "timed out connecting to a replica", false)
        }
        _ => {
            proxy.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            local_error(proxy, StatusCode::BAD_GATEWAY, "could not connect to a replica", false)
        }
    })
}

/// The answer when the client broke its request body on the way upstream:
/// 408 for a stall (for HTTP/1 the connection wrapper has already sent it
/// and this one is never written), else 400. An HTTP/1 connection is closed
/// (its framing is lost); for HTTP/2 only the stream ends.
fn client_body_failed(proxy: &ServiceProxy, failure: ClientBodyFailure, http1: bool) -> Response<ProxyBody> {
    proxy.stats.client_errors.fetch_add(1, Ordering::Relaxed);
    let (status, message) = match failure {
        ClientBodyFailure::TimedOut => (StatusCode::REQUEST_TIMEOUT, "request body not received in time"),
        ClientBodyFailure::Malformed => (StatusCode::BAD_REQUEST, "malformed request body"),
        ClientBodyFailure::Gone => (StatusCode::BAD_REQUEST, "request body ended early"),
    };
    local_error(proxy, status, message, http1)
}

/// Methods whose repetition has no further effect (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE)
}

/// Moves a request that may be repeated to another replica, within the
/// retry budget: `false` when there is no budget or no other replica.
fn resend(proxy: &ServiceProxy, dispatched: &mut Dispatched) -> bool {
    if !within_retry_budget(proxy) {
        return false;
    }
    let Some(other) = pick(proxy, Some(dispatched.backend())) else { return false };
    proxy.stats.retries.fetch_add(1, Ordering::Relaxed);
    dispatched.redirect(other);
    true
}

/// Retries are capped at 20 % of requests (plus a floor of 10), so a
/// failing fleet is not hammered with doubled traffic.
fn within_retry_budget(proxy: &ServiceProxy) -> bool {
    let requests = proxy.stats.requests.load(Ordering::Relaxed);
    let retries = proxy.stats.retries.load(Ordering::Relaxed);
    retries < 10 + requests / 5
}

/// Hop-by-hop headers out, client-address headers (and a new `request_id`)
/// in, origin-form URI, HTTP/1.1, and a `Host` for HTTP/2 clients (which send
/// `:authority` instead).
///
/// The added headers are set on an upgrade request (it goes out
/// through hyper); for the others they are returned, to be written as the
/// head goes upstream, and the client's lines they replace are removed.
fn prepare_request(
    req: &mut Request<Incoming>,
    conn: &ConnShared,
    upgrade: bool,
    request_id: Option<HeaderValue>,
) -> Forwarding {
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    if let Some(authority) = authority {
        // HTTP/2, or an absolute-form HTTP/1 request: the URI's authority
        // wins over any Host header (RFC 9112 §3.2.2).
        if let Ok(host) = HeaderValue::from_str(&authority) {
            req.headers_mut().insert(header::HOST, host);
        }
        let path = req.uri().path_and_query().cloned();
        if let Some(path) = path {
            *req.uri_mut() = Uri::from(path);
        }
    }
    let from_http2 = req.version() == Version::HTTP_2;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    if from_http2 {
        join_cookies(headers);
    }
    strip_hop_by_hop(headers, upgrade);
    let host = headers.get(header::HOST).cloned();
    let forwarding = Forwarding::new(headers, &conn.peer_ip, conn.trusted, host, conn.tls).with_request_id(request_id);
    if upgrade {
        forwarding.apply(headers);
        return Forwarding::default();
    }
    forwarding.take_replaced(headers);
    forwarding
}

/// HTTP/2 clients may split `cookie` into several fields; HTTP/1.1 allows
/// one, joined with `; ` (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(header::COOKIE, value);
    }
}

/// A ready connection to `backend`: a pooled one (unless `fresh_only`) or a
/// new one.
async fn ready_connection(
    backend: &Backend,
    fresh_only: bool,
    connect_timeout: std::time::Duration,
) -> Result<Upstream, ConnectError> {
    if !fresh_only {
        if let Some(conn) = backend.checkout() {
            return Ok(conn);
        }
    }
    connect(backend.addr, connect_timeout).await
}

/// Picks a routable backend, skipping `exclude` (the one that just failed).
fn pick(proxy: &ServiceProxy, exclude: Option<&Arc<Backend>>) -> Option<Arc<Backend>> {
    let set = proxy.routable.load();
    let n = set.len();
    let skip = exclude.and_then(|e| set.iter().position(|b| Arc::ptr_eq(b, e)));
    let candidates = n - skip.is_some() as usize;
    if candidates == 0 {
        return None;
    }
    // Candidate k is slot k of the set, with the excluded slot jumped over.
    let slot = |k: usize| match skip {
        Some(s) if k >= s => k + 1,
        _ => k,
    };
    let k = super::balancing::choose(proxy, candidates, |k| &*set[slot(k)]);
    Some(set[slot(k)].clone())
}
