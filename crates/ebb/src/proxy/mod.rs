//! The data plane: one HTTP load balancer per service.
//!
//! **Architecture invariant:** the request path never waits for the control
//! plane. It reads the routable set from an [`ArcSwap`] snapshot that the
//! controller replaces whole, and counts per replica with atomics. The only
//! lock is each backend's idle-connection pool (a push or pop, one pool per
//! worker thread, so never contended).
//!
//! Layout:
//! - this file: the public face — [`Backend`], [`ServiceProxy`], [`serve`],
//!   [`run_static`] — and backend choice;
//! - `server`: the accept loop, which deals connections to one worker thread
//!   per core (each a single-threaded event loop that keeps a connection,
//!   its requests, upstream connections and timers together), HTTP/1.1 and
//!   HTTP/2 prior knowledge, graceful shutdown;
//! - `conn_io`: the client socket wrapper: header-read, body, idle and send
//!   deadlines, and the request-framing tracker's reports;
//! - `framing`: that tracker (refuses `Content-Length` + `Transfer-Encoding`,
//!   oversized heads, and lengths above 2^63 − 1);
//! - `front`: what a listening socket serves: one service (its own
//!   `listen`), a `[listener.NAME]`'s routes (and TLS, HSTS), or the 308
//!   redirect of its plain `http` address;
//! - `forward`: one request: route, pick, connect (retry once elsewhere), send,
//!   relay, upgrade to a tunnel;
//! - `upstream`: HTTP/1.1 keep-alive connections to backends, pooled per
//!   backend and worker, driven by the request that uses them;
//! - `body`: the response body wrapper that ends a request's bookkeeping
//!   exactly when its body ends;
//! - `stall`: `send_timeout` for an HTTP/2 stream the client stopped taking;
//! - `checks`: the `Host`, `Transfer-Encoding` and `Content-Length` rules a
//!   parsed request head must pass;
//! - `headers`: hop-by-hop and client-address (`X-Forwarded-*`, `Forwarded`,
//!   `X-Real-IP`) handling.
//!
//! The user-facing description is `docs/balancer.md`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use ebb_core::config::{BalanceAlgorithm, ProxyConfig};
use ebb_core::outlier::{Outcomes, Streak};

use crate::metrics::histogram::{AtomicHistogram, LatencyCounts};

pub mod access_log;
mod admission;
mod balancing;
mod body;
mod buffering;
mod checks;
mod conn_io;
mod forward;
mod framing;
mod front;
mod h2_flood;
mod headers;
pub mod hold;
mod request_id;
mod server;
mod stall;
mod upgrade;
mod upstream;
mod upstream_conn;
mod worker;

pub use body::ProxyBody;
pub use front::{Front, Routing};
pub use server::hand_over_clients_on_shutdown;

/// One replica as the balancer sees it. Created by the controller when the
/// replica starts and kept (with its counters) until it is gone; it is routable
/// only while it is in the current snapshot.
#[derive(Debug)]
pub struct Backend {
    pub replica_id: String,
    pub addr: SocketAddr,
    /// Requests sent to this replica and not yet answered (or failed).
    pub in_flight: AtomicU64,
    /// Requests this replica has answered, any status.
    pub requests: AtomicU64,
    /// Responses with a 5xx status from this replica.
    pub server_errors: AtomicU64,
    /// Connection attempts that failed (refused, reset, timed out).
    pub connect_failures: AtomicU64,
    /// Requests it never answered: connect failures, a connection closed
    /// before the answer, no answer within `upstream_timeout`.
    pub gateway_failures: AtomicU64,
    /// 5xx responses in a row, and gateway failures in a row (what outlier
    /// detection reads; the controller resets them when an ejection ends).
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failures: AtomicU32,
    /// Latency of every request this replica answered, since it joined
    /// (never reset: Prometheus wants cumulative histograms).
    pub latency: crate::metrics::histogram::AtomicHistogram,
    /// Idle keep-alive connections to this replica (LIFO, so the warmest is
    /// reused first).
    pool: upstream::Pool,
    /// Its response-time estimate and when it joined (peak-EWMA, slow start).
    pub responsiveness: balancing::Responsiveness,
    /// Set when the replica failed (`fleet::abandons_requests`): its
    /// resendable requests still waiting for a head stop waiting. A flag
    /// that waiting requests look at a few times a second, not a waker:
    /// registering a waiter per request would cost a lock on the hot path.
    abandoned: std::sync::atomic::AtomicBool,
}

impl Backend {
    pub fn new(replica_id: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            replica_id: replica_id.into(),
            addr,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            gateway_failures: AtomicU64::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failures: AtomicU32::new(0),
            latency: Default::default(),
            pool: upstream::Pool::new(),
            responsiveness: Default::default(),
            abandoned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The replica failed and will not answer what it holds: resendable
    /// requests waiting for its response head are sent again elsewhere
    /// (within `upstream::ABANDON_CHECK`). The controller calls it.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Ordering::Relaxed)
    }

    /// Its totals and current streaks, as outlier detection reads them
    /// (the totals are cumulative: the controller takes differences).
    pub fn outcomes(&self) -> Outcomes {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Outcomes {
            answered: get(&self.requests),
            server_errors: get(&self.server_errors),
            gateway_failures: get(&self.gateway_failures),
            consecutive_5xx: self.consecutive_5xx.load(Ordering::Relaxed),
            consecutive_gateway_failures: self.consecutive_gateway_failures.load(Ordering::Relaxed),
        }
    }

    /// Starts its streaks over (an ejection ended: it gets a fresh chance).
    pub fn reset_streaks(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway_failures.store(0, Ordering::Relaxed);
    }
}

/// Per-service counters of the balancer (monotonic since start).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests received, whatever became of them.
    pub requests: AtomicU64,
    /// Answered 503 at once because no replica was routable.
    pub no_backend: AtomicU64,
    /// Requests sent to a second replica after a connect failure.
    pub retries: AtomicU64,
    /// Answered 502: could not connect (after the retry), or the replica
    /// failed after the request was sent.
    pub upstream_errors: AtomicU64,
    /// Answered 504: connect timed out (after the retry), or no response head
    /// within `upstream_timeout`.
    pub upstream_timeouts: AtomicU64,
    /// Answered 503 with `Retry-After`: queue full or queue timeout.
    pub shed: AtomicU64,
    /// Refused by the balancer itself: ambiguous framing, `Host`,
    /// `Transfer-Encoding` or `Content-Length` problems (400, 501), oversized
    /// head (431), `CONNECT` (405).
    pub rejected: AtomicU64,
    /// The client broke its request body after it was dispatched (malformed
    /// chunks, stalled past `body_timeout`, or gone): 400 or 408, never
    /// counted against the replica.
    pub client_errors: AtomicU64,
    /// Client connections cut because the client stopped reading (the socket,
    /// or an HTTP/2 stream) for `send_timeout`.
    pub send_timeouts: AtomicU64,
    /// Client connections open now (a gauge).
    pub open_connections: AtomicU64,
    /// Times the balancer reached `max_connections` and stopped accepting.
    pub connection_cap_reached: AtomicU64,
    /// HTTP/2 client connections closed for flooding (see `h2_flood.rs`).
    pub http2_floods: AtomicU64,
    /// TLS handshakes that failed or did not finish within
    /// `header_read_timeout` (a TLS front only).
    pub tls_handshake_failures: AtomicU64,
    /// Answers of replicas relayed, by status class: `[1xx, 2xx, 3xx,
    /// 4xx, 5xx]` (monotonic, whichever replicas came and went).
    pub replica_answers: [AtomicU64; 5],
}

/// A copy of [`ProxyStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyStatsSnapshot {
    pub requests: u64,
    pub no_backend: u64,
    pub retries: u64,
    pub upstream_errors: u64,
    pub upstream_timeouts: u64,
    pub rejected: u64,
    pub client_errors: u64,
    pub send_timeouts: u64,
    pub http2_floods: u64,
    pub shed: u64,
    pub open_connections: u64,
    pub connection_cap_reached: u64,
    pub tls_handshake_failures: u64,
    pub replica_answers: [u64; 5],
}

impl ProxyStats {
    pub fn snapshot(&self) -> ProxyStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStatsSnapshot {
            requests: get(&self.requests),
            no_backend: get(&self.no_backend),
            retries: get(&self.retries),
            upstream_errors: get(&self.upstream_errors),
            upstream_timeouts: get(&self.upstream_timeouts),
            rejected: get(&self.rejected),
            client_errors: get(&self.client_errors),
            send_timeouts: get(&self.send_timeouts),
            http2_floods: get(&self.http2_floods),
            shed: get(&self.shed),
            open_connections: get(&self.open_connections),
            connection_cap_reached: get(&self.connection_cap_reached),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            replica_answers: std::array::from_fn(|i| get(&self.replica_answers[i])),
        }
    }
}

/// One second of the balancer's histograms, from
/// [`ServiceProxy::take_second`].
pub struct SecondLatencies {
    pub latency: LatencyCounts,
    pub queue_time: LatencyCounts,
}

fn lock(m: &std::sync::Mutex<LatencyCounts>) -> std::sync::MutexGuard<'_, LatencyCounts> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The balancer of one service.
pub struct ServiceProxy {
    pub service: String,
    /// The balancing algorithm and the per-request settings; `ebb apply`
    /// swaps them whole (read with [`balance`](Self::balance) and
    /// [`config`](Self::config)).
    settings: ArcSwap<ProxySettings>,
    pub stats: ProxyStats,
    /// Time from a request's arrival to its response head, every request
    /// a replica answered (one atomic add each; the controller takes the
    /// counts once a second, [`take_second`](Self::take_second), for
    /// p50/p95/p99).
    latency: AtomicHistogram,
    /// Time from arrival until a replica connection took the request:
    /// how long it waited for a replica.
    queue_time: AtomicHistogram,
    /// Every second's `latency` and `queue_time`, added up since start by
    /// `take_second` (for Prometheus, off the request path). Private: only
    /// `take_second` drains the seconds, so none is lost from the totals.
    latency_total: std::sync::Mutex<LatencyCounts>,
    queue_time_total: std::sync::Mutex<LatencyCounts>,
    /// Requests waiting for a replica under `max_in_flight`.
    pub(crate) queued: AtomicU64,
    /// The most requests waiting at once since the controller last took
    /// it (once a second): a queue that fills and drains within a second
    /// is still seen.
    pub(crate) queued_peak: AtomicU64,
    /// Wakes queued requests: a request ended or the routable set changed.
    pub(crate) slot_freed: tokio::sync::Notify,
    /// Wakes the controller when a replica's failure streak reaches a
    /// threshold of outlier detection, so it is ejected within
    /// milliseconds rather than at the next second.
    pub outlier_suspect: tokio::sync::Notify,
    routable: ArcSwap<Vec<Arc<Backend>>>,
    /// Scale to zero: `[service.NAME.idle]` (swapped whole by `ebb apply`)
    /// and the held requests (`hold.rs`).
    idle: arc_swap::ArcSwapOption<ebb_core::config::IdleConfig>,
    pub hold: hold::Hold,
    /// Round-robin position.
    next: AtomicU64,
    /// The 503 body, made once.
    no_replica_body: Bytes,
}

/// What `[service.NAME]` says about balancing its requests.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub balance: BalanceAlgorithm,
    /// `[service.NAME.proxy]` (for a short-form listener, also the
    /// connection settings, which its `Front` copies).
    pub config: ProxyConfig,
}

impl ServiceProxy {
    pub fn new(service: impl Into<String>, balance: BalanceAlgorithm, config: ProxyConfig) -> Arc<Self> {
        let service = service.into();
        let no_replica_body = Bytes::from(forward::error_json(forward::NO_REPLICA, &service));
        Arc::new(Self {
            service,
            settings: ArcSwap::from_pointee(ProxySettings { balance, config }),
            stats: ProxyStats::default(),
            latency: Default::default(),
            queue_time: Default::default(),
            latency_total: Default::default(),
            queue_time_total: Default::default(),
            queued: AtomicU64::new(0),
            queued_peak: AtomicU64::new(0),
            slot_freed: tokio::sync::Notify::new(),
            outlier_suspect: tokio::sync::Notify::new(),
            routable: ArcSwap::from_pointee(Vec::new()),
            idle: arc_swap::ArcSwapOption::empty(),
            hold: hold::Hold::default(),
            next: AtomicU64::new(0),
            no_replica_body,
        })
    }

    /// Takes the latency and queue-time histograms of the second just
    /// ended (the controller, once a second) and adds them to the totals.
    pub fn take_second(&self) -> SecondLatencies {
        let second = SecondLatencies { latency: self.latency.take(), queue_time: self.queue_time.take() };
        lock(&self.latency_total).merge(&second.latency);
        lock(&self.queue_time_total).merge(&second.queue_time);
        second
    }

    /// Every request's latency since ebb started.
    pub fn latency_total(&self) -> LatencyCounts {
        lock(&self.latency_total).clone()
    }

    /// Every request's wait for a replica since ebb started.
    pub fn queue_time_total(&self) -> LatencyCounts {
        lock(&self.queue_time_total).clone()
    }

    /// Requests waiting in the queue right now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The most requests that waited at once since the last call (at
    /// least those waiting now); resets the peak.
    pub fn take_queued_peak(&self) -> u64 {
        let now = self.queued();
        self.queued_peak.swap(now, Ordering::Relaxed).max(now)
    }

    /// Routable replicas, how many of them hold `max_in_flight` requests
    /// (0 without a limit), and the requests in flight at all of them.
    pub fn load(&self) -> (u32, u32, u64) {
        let routable = self.routable();
        let limit = self.peek().config.max_in_flight.map(u64::from);
        let at_limit = routable.iter().filter(|b| limit.is_some_and(|l| b.in_flight() >= l)).count();
        (routable.len() as u32, at_limit as u32, routable.iter().map(|b| b.in_flight()).sum())
    }

    /// The settings in force: read them once per request (a request
    /// keeps what it started with).
    pub fn settings(&self) -> Arc<ProxySettings> {
        self.settings.load_full()
    }

    /// The settings in force, for a quick look without an await.
    pub fn peek(&self) -> arc_swap::Guard<Arc<ProxySettings>> {
        self.settings.load()
    }

    /// `ebb apply`: requests from now on use these settings; requests on
    /// their way keep the ones they started with.
    pub fn reconfigure(&self, balance: BalanceAlgorithm, config: ProxyConfig) {
        self.settings.store(Arc::new(ProxySettings { balance, config }));
        // A raised max_in_flight or max_queue may let queued requests go.
        self.slot_freed.notify_waiters();
    }

    /// `[service.NAME.idle]`, at start and on `ebb apply`; `None`: a request
    /// with no routable replica gets 503 at once.
    pub fn set_idle(&self, idle: Option<ebb_core::config::IdleConfig>) {
        self.hold.enabled.store(idle.is_some(), Ordering::Relaxed);
        self.idle.store(idle.map(Arc::new));
        // Held requests re-check (a removed [idle] still lets them wait out
        // their hold_timeout, or a replica).
        self.slot_freed.notify_waiters();
    }

    /// `[service.NAME.idle]` in force, if any.
    pub fn idle_config(&self) -> Option<Arc<ebb_core::config::IdleConfig>> {
        if !self.hold.enabled.load(Ordering::Relaxed) {
            return None;
        }
        self.idle.load_full()
    }

    /// Replaces the routable set in one atomic swap.
    pub fn set_routable(&self, backends: Vec<Arc<Backend>>) {
        for backend in &backends {
            backend.responsiveness.joined();
        }
        self.routable.store(Arc::new(backends));
        // Queued requests may fit on a new replica now.
        self.slot_freed.notify_waiters();
    }

    /// The current routable set.
    pub fn routable(&self) -> Arc<Vec<Arc<Backend>>> {
        self.routable.load_full()
    }

    /// A replica answered with `status`: count it, and keep its 5xx streak.
    /// A replica answered with `status`, its head `rtt` after the request
    /// was sent: count it, keep its 5xx streak, and (peak-EWMA) its
    /// response-time estimate.
    pub(crate) fn count_timed_answer(&self, backend: &Backend, status: http::StatusCode, rtt: std::time::Duration) {
        if balancing::times_responses(self) {
            match status.is_server_error() {
                true => backend.responsiveness.failed(),
                false => backend.responsiveness.answered(rtt),
            }
        }
        self.count_answer(backend, status);
    }

    pub(crate) fn count_answer(&self, backend: &Backend, status: http::StatusCode) {
        backend.requests.fetch_add(1, Ordering::Relaxed);
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.stats.replica_answers[class].fetch_add(1, Ordering::Relaxed);
        // Any answer means the connection worked.
        backend.consecutive_gateway_failures.store(0, Ordering::Relaxed);
        if status.is_server_error() {
            backend.server_errors.fetch_add(1, Ordering::Relaxed);
            let streak = backend.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            self.maybe_suspect(Streak::ServerErrors, streak);
        } else {
            backend.consecutive_5xx.store(0, Ordering::Relaxed);
        }
    }

    /// A request to a replica got no answer: it could not connect
    /// (`connect`), or the replica closed or did not answer in time.
    pub(crate) fn count_gateway_failure(&self, backend: &Backend, connect: bool) {
        if balancing::times_responses(self) {
            backend.responsiveness.failed();
        }
        if connect {
            backend.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
        backend.gateway_failures.fetch_add(1, Ordering::Relaxed);
        let streak = backend.consecutive_gateway_failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.maybe_suspect(Streak::GatewayFailures, streak);
    }

    /// Whether a streak is worth waking the controller for is the core's
    /// call; the ejection itself is decided there too.
    fn maybe_suspect(&self, streak: Streak, count: u32) {
        if self.peek().config.outlier.streak_worth_a_look(streak, count) {
            self.outlier_suspect.notify_one();
        }
    }
}

/// `ebb proxy`: a balancer in front of a fixed list of backends, with no
/// fleet management (benchmarks, or putting ebb's balancer in front of
/// servers it does not run).
#[derive(Debug, Clone, clap::Args)]
pub struct StaticProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A backend address; repeat for several.
    #[arg(long = "to", required = true)]
    pub backends: Vec<SocketAddr>,
    /// How to spread requests over the backends.
    #[arg(long, value_enum, default_value_t = StaticBalance::LeastOutstanding)]
    pub balance: StaticBalance,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Write an access log line per request to this file ("-": stdout).
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<std::path::PathBuf>,
    /// The access log's format.
    #[arg(long, value_enum, default_value_t = AccessLogFormatArg::Combined, requires = "access_log")]
    pub access_log_format: AccessLogFormatArg,
}

/// `--access-log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormatArg {
    Combined,
    Json,
}

/// `--balance` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StaticBalance {
    LeastOutstanding,
    RoundRobin,
    /// Latency-aware (`balance = "peak_ewma"`).
    PeakEwma,
}

/// Runs a static balancer until Ctrl-C / SIGTERM, then lets in-flight
/// requests finish (a second signal stops at once).
pub async fn run_static(args: StaticProxyArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{signal, SignalKind};

    let balance = match args.balance {
        StaticBalance::LeastOutstanding => BalanceAlgorithm::LeastOutstanding,
        StaticBalance::RoundRobin => BalanceAlgorithm::RoundRobin,
        StaticBalance::PeakEwma => BalanceAlgorithm::PeakEwma,
    };
    // As `ebb up` does: the whole open-file limit, and a client cap that
    // keeps a reserve of it (see `fd_limit`).
    let limit = crate::fd_limit::raise().map(|l| l.soft).unwrap_or(1024);
    let max_connections = crate::fd_limit::default_max_connections(limit, 1);
    tracing::info!(open_file_limit = limit, max_connections, "Client connection cap.");
    let access_log = args.access_log.as_ref().map(|path| ebb_core::config::AccessLogConfig {
        target: match path.to_str() {
            Some("-") => ebb_core::config::AccessLogTarget::Stdout,
            _ => ebb_core::config::AccessLogTarget::File(path.clone()),
        },
        format: match args.access_log_format {
            AccessLogFormatArg::Combined => ebb_core::config::AccessLogFormat::Combined,
            AccessLogFormatArg::Json => ebb_core::config::AccessLogFormat::Json,
        },
    });
    if let Some(ebb_core::config::AccessLogTarget::File(path)) = access_log.as_ref().map(|l| &l.target) {
        // Refused here, before listening, rather than said in a log line.
        access_log::AccessLog::open(access_log.as_ref().expect("set"), "proxy")
            .with_context(|| format!("--access-log {}", path.display()))?;
    }
    let config = ProxyConfig { max_connections: Some(max_connections), access_log, ..ProxyConfig::default() };
    let proxy = ServiceProxy::new("proxy", balance, config);
    proxy.set_routable(
        args.backends
            .iter()
            .enumerate()
            .map(|(i, addr)| Arc::new(Backend::new(format!("backend-{}", i + 1), *addr)))
            .collect(),
    );
    let front = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = [ebb_core::config::CertFiles { cert: cert.clone(), key: key.clone() }];
            let tls = crate::tls::TlsState::new("proxy", &files).map_err(|e| anyhow::anyhow!(e.message))?;
            Front::service_over_tls(proxy.clone(), tls)
        }
        _ => Front::service(proxy.clone()),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        backends = ?args.backends,
        balance = balance.as_str(),
        "Balancer started."
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let serving = tokio::spawn(serve_front(listener, front, shutdown.clone()));
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    tracing::info!("Stopping: finishing requests in progress (signal again to stop now).");
    shutdown.cancel();
    tokio::select! {
        result = serving => result.context("balancer task failed")?.context("balancer failed")?,
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    access_log::flush_all();
    let stats = proxy.stats.snapshot();
    tracing::info!(
        requests = stats.requests,
        no_backend = stats.no_backend,
        retries = stats.retries,
        upstream_errors = stats.upstream_errors,
        upstream_timeouts = stats.upstream_timeouts,
        "Balancer stopped."
    );
    Ok(())
}

/// Serves one service's balancer on an already-bound listener (its own
/// `listen`) until `shutdown` fires, then stops accepting and lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    proxy: Arc<ServiceProxy>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    server::serve(listener, Front::service(proxy), shutdown).await
}

/// [`serve`] for any front: a `[listener.NAME]` (routes, TLS) or its
/// redirecting `http` address.
pub async fn serve_front(
    listener: tokio::net::TcpListener,
    front: Arc<Front>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    server::serve(listener, front, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_second_empties_the_second_and_keeps_the_totals() {
        let proxy = ServiceProxy::new("web", BalanceAlgorithm::RoundRobin, ProxyConfig::default());
        proxy.latency.record(std::time::Duration::from_millis(5));
        proxy.queue_time.record(std::time::Duration::from_millis(1));
        let first = proxy.take_second();
        assert_eq!((first.latency.count(), first.queue_time.count()), (1, 1));
        proxy.latency.record(std::time::Duration::from_millis(7));
        let second = proxy.take_second();
        assert_eq!((second.latency.count(), second.queue_time.count()), (1, 0), "taken, not left in place");
        assert_eq!((proxy.latency_total().count(), proxy.queue_time_total().count()), (2, 1));
    }
}
