//! The `ebb.toml` model.
//!
//! [`Config::parse`] turns the text of a config file into a validated
//! [`Config`] or a [`ConfigError`] that names the file, line and column and
//! says what is expected. Parsing is pure: the caller reads the file.
//!
//! The public types below are plain values (no spans); the spans live only in
//! the private raw model used while parsing and validating (`config/raw.rs`,
//! with the leaf value types in `config/value.rs`). Every key, its default
//! and its limits are documented for users in `docs/config.md` (deploys also
//! in `docs/deploys.md`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::balance::BalanceAlgorithm;
pub use crate::deploy::{DeployConfig, Strategy as DeployStrategy};
pub use crate::fleet::idle::{IdleConfig, IdleMode};
pub use crate::fleet::warm_pool::WarmPoolConfig;
pub use crate::health::StatusMatcher;
pub use crate::outlier::OutlierConfig;
pub use crate::scaling::{Bounds, ScalingConfig};

/// A whole, validated config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (for messages and relative paths).
    pub path: PathBuf,
    /// Where ebb keeps its state, logs and databases; already resolved
    /// against the config file's directory.
    pub state_dir: PathBuf,
    pub admin: AdminConfig,
    /// Services by name, in name order.
    pub services: BTreeMap<String, ServiceConfig>,
    /// `[listener.NAME]` tables by name: addresses that route to one or more
    /// services, with TLS. A service's own `listen` is not here (it is the
    /// short form of a plain listener serving that service alone).
    pub listeners: BTreeMap<String, ListenerConfig>,
    /// `[cluster]`: ebb adds and removes Swarm nodes (`None`: it does not).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The text parsed, so errors found later (a port in use) can point
    /// into it.
    source: String,
    /// Where each `listen` (and each listener's `http`, `tls` file) was
    /// written: `"admin"`, `"service.NAME"`, `"listener.NAME"`,
    /// `"listener.NAME.http"`, `"listener.NAME.tls.I.cert"` / `.key`.
    listen_spans: BTreeMap<String, std::ops::Range<usize>>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address of the admin API (status, scale, down). Loopback by default.
    pub listen: SocketAddr,
    /// `[admin] tls = { cert, key }`: the admin API (and dashboard) speak
    /// HTTPS with this certificate; `None`: plain HTTP.
    pub tls: Option<CertFiles>,
}

impl Config {
    /// `state_dir` when the file does not set it (relative to the file).
    pub const DEFAULT_STATE_DIR: &'static str = ".ebb";
}

impl Default for AdminConfig {
    /// Loopback only: the admin API can scale and stop fleets, so it is not
    /// exposed unless the user asks.
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9900)), tls: None }
    }
}

/// One service: a named fleet with one spec.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    /// A web service (behind its balancer) or a worker pool (no balancer).
    pub kind: ServiceKind,
    /// How to start one replica. With a container driver it is the
    /// container's command override, and an empty `Argv` means the image's
    /// own command (the key was left out).
    pub command: CommandSpec,
    /// Where replicas run: local processes, Docker containers, or the tasks
    /// of a Docker Swarm service.
    pub driver: DriverKind,
    /// What a container replica runs (`image`, `container_port`, `cpus`,
    /// `memory`); `Some` exactly when `driver` is docker or swarm.
    pub container: Option<ContainerConfig>,
    /// The balancer's address for this service. A worker has no balancer:
    /// its `listen` is `127.0.0.1:0` and means nothing (check `kind`; do not
    /// bind it). Neither does a web service reached only through
    /// `[listener.NAME]` routes: see `own_listen`.
    pub listen: SocketAddr,
    /// Whether `listen` is this service's own address (the short form of a
    /// plain listener, bound by `ebb up`): true for a web service that has
    /// `listen`, false for a worker and for a web service without one (it
    /// is reached through a listener's routes).
    pub own_listen: bool,
    pub replicas: Replicas,
    /// Cores allotted to one replica; CPU % is relative to this.
    pub cpu: f64,
    /// Extra environment for every replica.
    pub env: BTreeMap<String, String>,
    /// The ports local replicas (process driver) listen on; ebb's own
    /// range (20000-32000) when `None`.
    pub ports: Option<std::ops::RangeInclusive<u16>>,
    /// How long a replica may take to exit after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// How long a leaving replica may keep finishing in-flight requests.
    pub drain_timeout: Duration,
    pub health: HealthConfig,
    pub balance: BalanceAlgorithm,
    pub proxy: ProxyConfig,
    /// How desired capacity follows load (`[service.NAME.scaling]`); the
    /// default has no policies: a fixed fleet.
    pub scaling: ScalingConfig,
    /// How `ebb deploy` replaces replicas (`[service.NAME.deploy]`).
    pub deploy: DeployConfig,
    /// Where the external number for `items_per_replica` comes from
    /// (`[service.NAME.metric_source]`), if anywhere.
    pub metric_source: Option<MetricSource>,
    /// Random interruptions for tests and demos (`[service.NAME.chaos]`);
    /// off when `None`.
    pub chaos: Option<ChaosConfig>,
    /// Scale to zero (`[service.NAME.idle]`, web services only): required
    /// for `replicas.min = 0` on a web service. `None`: never idle.
    pub idle: Option<IdleConfig>,
    /// Suspended replicas kept beside the fleet for scale-outs
    /// (`[service.NAME.warm_pool]`, web services on the process or docker
    /// driver). `None`: no pool.
    pub warm_pool: Option<WarmPoolConfig>,
    /// How local replicas' log files are kept (`logs = { … }`).
    pub logs: LogsConfig,
    /// `memory = "512MiB"` for local processes (the process driver): each
    /// replica's control group is limited to it (containers have theirs
    /// in `container.memory`). `None`: no limit.
    pub memory: Option<u64>,
    /// `cpu_quota = true`: a local replica's control group also gets a CPU
    /// quota of `cpu` cores (a hard cap, as an ECS task's). Off by default:
    /// CFS throttling at the cap adds pauses that change latency and how
    /// CPU-based policies see load.
    pub cpu_quota: bool,
}

/// `[service.NAME] logs = { max_size = "50MiB", keep = 3, retention = "7d" }`:
/// a local replica's log file is rotated past `max_size` (`<id>.log.1` …
/// `.keep`), and the logs of replicas gone for `retention` are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsConfig {
    pub max_size: u64,
    /// Rotated files kept beside the live one (0: a full file is emptied).
    pub keep: u32,
    pub retention: Duration,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { max_size: 50 << 20, keep: 3, retention: Duration::from_secs(7 * 24 * 3600) }
    }
}

impl ServiceConfig {
    /// Long enough for a web server to finish its shutdown hooks.
    pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
    /// Long enough for ordinary requests to finish; long polls get cut.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Cores per replica when the file does not say.
    pub const DEFAULT_CPU: f64 = 1.0;
    /// Upper bound on `replicas.max`: a guard against typos (`10000`), not a
    /// statement about what one machine can run.
    pub const MAX_REPLICAS: u32 = 1000;
}

/// `driver = "process" | "docker" | "swarm"`: where a service's replicas run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum DriverKind {
    /// Local processes started from `command` (the default).
    #[default]
    Process,
    /// Containers on the local Docker engine, one per replica.
    Docker,
    /// Tasks of a Docker Swarm service, on any node of the swarm.
    Swarm,
}

impl DriverKind {
    pub const ALL: [DriverKind; 3] = [DriverKind::Process, DriverKind::Docker, DriverKind::Swarm];

    /// `process`, `docker` or `swarm`, as in `ebb.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Process => "process",
            DriverKind::Docker => "docker",
            DriverKind::Swarm => "swarm",
        }
    }

    pub fn from_name(name: &str) -> Option<DriverKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether replicas are containers (and need a Docker engine).
    pub fn is_container(self) -> bool {
        self != DriverKind::Process
    }
}

/// What a container replica runs (docker and swarm drivers).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    /// The image, already on the engine (ebb does not pull).
    pub image: String,
    /// The port the app listens on inside the container; ebb sets `PORT`
    /// to it and publishes it on a host port the engine picks.
    pub container_port: u16,
    /// CPU limit in cores (`--cpus`); also the replica's `cpu` allotment.
    pub cpus: Option<f64>,
    /// Memory limit in bytes (`--memory`).
    pub memory: Option<u64>,
    /// Mounts, networks, user, labels, placement: part of what a version
    /// runs, like the image (a change is a deploy).
    pub options: ContainerOptions,
}

/// A container replica's `mounts`, `networks`, `user`, `labels` and (Swarm
/// only) `placement`. Checked at parse time; the engine has the last word
/// (a missing network or bind source fails the replica's start).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    pub mounts: Vec<Mount>,
    /// Networks the container joins (docker) or the task attaches to
    /// (swarm: overlay networks), in file order.
    pub networks: Vec<String>,
    /// `user`, `"uid[:gid]"` or a name in the image.
    pub user: Option<String>,
    /// Extra labels; never `ebb.*` (ebb's own, how it finds its replicas).
    pub labels: BTreeMap<String, String>,
    pub placement: Placement,
}

/// One `mounts` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Bind: an absolute host path (a relative one in the file is resolved
    /// against the config file's directory). Volume: its name. Tmpfs: none.
    pub source: Option<String>,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// What a mount's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// `placement = { spread, constraints }` (swarm driver only).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Placement {
    /// Swarm's spread descriptor, e.g. `node.labels.zone`.
    pub spread: Option<String>,
    /// Swarm constraints, e.g. `node.role==worker`.
    pub constraints: Vec<String>,
}

impl ContainerConfig {
    /// `container_port` when the file does not say.
    pub const DEFAULT_CONTAINER_PORT: u16 = 8080;
    /// Docker refuses memory limits below 6 MiB.
    pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;
}

/// What a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceKind {
    /// Replicas behind the service's own load balancer at `listen`.
    #[default]
    Web,
    /// A pool with no balancer in front (batch jobs, queue consumers),
    /// scaled on CPU or on an external number (`metric_source`).
    Worker,
}

impl ServiceKind {
    /// `web` or `worker`, as in `ebb.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Web => "web",
            ServiceKind::Worker => "worker",
        }
    }

    pub fn from_name(name: &str) -> Option<ServiceKind> {
        [ServiceKind::Web, ServiceKind::Worker].into_iter().find(|k| k.as_str() == name)
    }

    /// Whether requests reach it through a balancer (and `listen`).
    pub fn has_balancer(self) -> bool {
        self == ServiceKind::Web
    }
}

/// `[service.NAME.metric_source]`: an external number read every
/// `interval` (a queue's length), for the `items_per_replica` metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSource {
    pub reading: MetricReading,
    pub interval: Duration,
}

/// How the number is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricReading {
    /// Run this; it prints the number on standard output
    /// ([`MetricSource::parse_output`]).
    Command(CommandSpec),
    /// `GET url`; the JSON body holds the number at `json_pointer`
    /// (RFC 6901; `""` is the whole body).
    Http { url: String, json_pointer: String },
    /// A Prometheus instant query: `GET {server}/api/v1/query?query=…`,
    /// whose one sample (a vector of one series, or a scalar) is the
    /// number — Prometheus writes it as a string.
    Prometheus { server: String, query: String },
}

impl MetricSource {
    /// Metrics are sampled once a second, so reading more often is waste.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

    /// The number a command printed: its output trimmed, as a finite number
    /// of 0 or more (`"42\n"`, `"3.5"`). The error says what was printed.
    pub fn parse_output(stdout: &str) -> Result<f64, String> {
        let text = stdout.trim();
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            Ok(v) => Err(format!("the metric source printed {v}; expected a number of 0 or more")),
            Err(_) => {
                let shown: String = text.chars().take(40).collect();
                Err(format!("the metric source printed {shown:?}; expected one number, like 42"))
            }
        }
    }
}

/// `[service.NAME.chaos]`: interrupt a random replica now and then, as a
/// spot market would, with a notice (for tests and demos).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChaosConfig {
    /// On average one interruption this often (a Poisson process).
    pub interrupt_every: Duration,
    /// The notice each interruption gives (`ebb interrupt --notice`).
    pub notice: Duration,
}

impl ChaosConfig {
    /// The fastest rate allowed: chaos is for tests and demos, not for
    /// taking a fleet down.
    pub const MIN_INTERRUPT_EVERY: Duration = Duration::from_secs(10);
    /// AWS's two-minute spot interruption warning.
    pub const DEFAULT_NOTICE: Duration = Duration::from_secs(120);

    /// The chance that an interruption is due within the next `dt`:
    /// `1 - exp(-dt / interrupt_every)`. The caller draws a uniform number
    /// in `[0, 1)` and interrupts a random replica when it is below this.
    pub fn chance(&self, dt: Duration) -> f64 {
        let every = self.interrupt_every.as_secs_f64();
        if every <= 0.0 {
            return 1.0;
        }
        1.0 - (-dt.as_secs_f64() / every).exp()
    }
}

/// How a replica is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// A string, run through `sh -c` (so `$PORT` expands).
    Shell(String),
    /// An argv, run directly with no shell.
    Argv(Vec<String>),
}

/// `replicas = { min, max, desired }`: the bounds, and where a fresh
/// fleet starts inside them (validated: `min <= desired <= max`). Only the
/// bounds go on to scaling; `desired` is a starting point, not a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub bounds: Bounds,
    pub desired: u32,
}

/// Active health checks, with AWS ALB target-group semantics.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub matcher: StatusMatcher,
    /// After start, failed probes do not count against the replica for this long.
    pub grace_period: Duration,
}

impl Default for HealthConfig {
    /// The AWS ALB target-group defaults, so a config ported from AWS behaves
    /// the same when it leaves a key out.
    fn default() -> Self {
        Self {
            path: "/".to_string(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: StatusMatcher::default(),
            grace_period: Duration::ZERO,
        }
    }
}

/// Data-plane limits and trust settings for one service's balancer.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// A client must send its complete request head within this (slowloris).
    pub header_read_timeout: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub idle_timeout: Duration,
    /// A client sending a request body must send its next bytes within this
    /// (nginx's `client_body_timeout`): a trickled body gets 408 and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// A replica must answer (response head) within this, else 504.
    pub upstream_timeout: Duration,
    /// A client must take the balancer's next bytes within this (time
    /// between two successful writes, nginx's `send_timeout`); a client that
    /// stops reading is cut and the replica's request is ended.
    pub send_timeout: Duration,
    /// Connecting to a replica must succeed within this, else retry elsewhere.
    pub connect_timeout: Duration,
    /// Largest request head accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Peers whose client-address headers (`X-Forwarded-*`, `Forwarded`,
    /// `X-Real-IP`) are kept and appended to.
    pub trusted_proxies: Vec<IpAddr>,
    /// At most this many requests in flight per replica (HAProxy's
    /// `maxconn`); more wait in the balancer's queue. `None`: no limit.
    pub max_in_flight: Option<u32>,
    /// At most this many requests wait for a replica; more get 503 at once.
    pub max_queue: u32,
    /// A request that waited this long for a replica gets 503 with
    /// `Retry-After`, instead of hanging.
    pub queue_timeout: Duration,
    /// At most this many client connections open at once on this
    /// listener (HAProxy's `maxconn`); more wait in the kernel's listen
    /// backlog until one closes. `None`: derived by `ebb up` from the
    /// open-file limit, so descriptors stay free for health checks and
    /// replicas.
    pub max_connections: Option<u32>,
    /// A request body up to this many bytes is read whole before a replica
    /// is picked (nginx's request buffering), so a slow upload does not hold
    /// a replica's slot; larger bodies stream. 0: off, every body streams.
    pub request_buffering: usize,
    /// Passive outlier detection (`[service.NAME.proxy.outlier]`): a
    /// replica that fails the requests it gets leaves the rotation for a
    /// while. On by default.
    pub outlier: OutlierConfig,
    /// Slow start: a replica that just joined the rotation gets a share of
    /// requests that ramps from a tenth to all over this (see
    /// `balance::slow_start_weight`). Zero: off.
    pub slow_start: Duration,
    /// One line per request answered on this address (`access_log`), after
    /// its response body ends. `None`: no access log.
    pub access_log: Option<AccessLogConfig>,
}

/// `[service.NAME.proxy] access_log` / `[listener.NAME.proxy] access_log`:
/// where and how requests arriving on that address are logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessLogConfig {
    pub target: AccessLogTarget,
    pub format: AccessLogFormat,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessLogTarget {
    /// `"-"`: ebb's standard output.
    Stdout,
    /// A file, appended to (relative paths are resolved against the config
    /// file's directory).
    File(PathBuf),
}

/// The shape of one access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessLogFormat {
    /// Apache/nginx "combined", then ebb's fields as `key=value`.
    Combined,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Combined => "combined",
            AccessLogFormat::Json => "json",
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            max_header_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            max_in_flight: None,
            max_queue: 1000,
            queue_timeout: Duration::from_secs(5),
            max_connections: None,
            request_buffering: 0,
            outlier: OutlierConfig::default(),
            slow_start: Duration::ZERO,
            access_log: None,
        }
    }
}

/// `[listener.NAME]`: one address serving one or more services by routing
/// rules, optionally over TLS.
///
/// Settings are split by what they are about: a listener owns the client
/// connections, so the connection settings of its `[listener.NAME.proxy]`
/// apply (`header_read_timeout`, `idle_timeout`, `body_timeout`,
/// `send_timeout`, `max_header_bytes`, `trusted_proxies`,
/// `max_connections`, and the HTTP/2 limits derived from them); each request,
/// once routed, follows its service's own per-request settings
/// (`max_in_flight`, `max_queue`, `queue_timeout`, `upstream_timeout`,
/// `connect_timeout`, `request_buffering`, retries, outlier detection).
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// A plain-HTTP address beside a TLS listener: every request there is
    /// redirected (308) to `https://HOST{path}` on this listener.
    pub http: Option<SocketAddr>,
    /// Certificates to serve; `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `Strict-Transport-Security: max-age=…` on every TLS answer.
    pub hsts: Option<Duration>,
    /// The routing rules, in file order (first match wins).
    pub routes: crate::routing::RouteTable,
    /// The connection settings (see above); the per-request fields are the
    /// defaults and unused.
    pub proxy: ProxyConfig,
}

/// `tls = { cert = …, key = … }`, `[[listener.NAME.tls.certs]]`, or
/// `tls.acme = { … }` (then `certs` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// In file order; the first is served when a client's SNI names none of
    /// them (or it sends none).
    pub certs: Vec<CertFiles>,
    /// Certificates obtained and renewed by ACME instead of files.
    pub acme: Option<AcmeConfig>,
}

/// Let's Encrypt's production directory: `tls.acme.directory`'s default.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `tls.acme = { domains = [...], email = "...", directory = "...",
/// directory_ca = "ca.pem", renew_before = "30d" }`: one certificate for
/// every domain, obtained with HTTP-01 challenges answered on the
/// listener's `http` address, or TLS-ALPN-01 on its TLS address when it
/// has no `http` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// DNS names (lower case, no wildcard), the first is the certificate's
    /// subject.
    pub domains: Vec<String>,
    /// The account's contact (`mailto:`), for the CA's expiry notices.
    pub email: Option<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM file of CA certificates to trust for `directory` (a private
    /// or test ACME server), instead of the built-in public roots.
    pub directory_ca: Option<PathBuf>,
    /// Renew this long before the certificate's not-after.
    pub renew_before: Duration,
}

/// One certificate chain and its private key, as PEM files (paths already
/// resolved against the config file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A config error, already located: renders as
/// `ebb.toml:12:9: error: ... ` followed by the offending line and a caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rendered}")]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is not tied to a place in the file.
    pub line: usize,
    pub column: usize,
    pub message: String,
    rendered: String,
}

impl ConfigError {
    /// An error at a byte span of `source`. Never panics: a span past the
    /// end or inside a character is pulled back onto a character boundary.
    pub fn at(file: &Path, source: &str, span: std::ops::Range<usize>, message: impl Into<String>) -> Self {
        let message = message.into();
        let start = floor_char_boundary(source, span.start);
        let span = start..floor_char_boundary(source, span.end).max(start);
        let (line, column) = line_column(source, span.start);
        let text = source.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let width = source[span.clone()].lines().next().map(|s| s.chars().count()).unwrap_or(1).max(1);
        let rendered = format!(
            "{}:{line}:{column}: error: {message}\n   |\n{line:>3}| {text}\n   | {}{}",
            file.display(),
            // Tabs stay tabs so the caret lines up however they render.
            text.chars().take(column.saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect::<String>(),
            "^".repeat(width),
        );
        Self { file: file.to_path_buf(), line, column, message, rendered }
    }

    /// An error about the file as a whole (unreadable, empty...).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        let message = message.into();
        let rendered = format!("{}: error: {message}", file.display());
        Self { file: file.to_path_buf(), line: 0, column: 0, message, rendered }
    }
}

/// The largest character boundary of `source` at or before `offset`.
fn floor_char_boundary(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(source, offset);
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

impl Config {
    /// Parses and validates the text of a config file. `path` is used for
    /// messages and to resolve `state_dir`.
    pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigError> {
        raw::parse(source, path)
    }

    /// An error about a file or address found after parsing (a certificate
    /// that does not load), at the key `owner` names (see `listen_spans`).
    pub fn key_error(&self, owner: &str, message: impl Into<String>) -> ConfigError {
        self.listen_error(owner, message)
    }

    /// A warning at a key, rendered like an error (`file:line:col:
    /// warning: …`, the line and a caret).
    pub fn key_warning(&self, owner: &str, message: impl Into<String>) -> String {
        self.key_error(owner, message).to_string().replacen(": error: ", ": warning: ", 1)
    }

    /// An error about a `listen` address found after parsing (e.g. the port
    /// is in use), located at that key in the file when it was written
    /// there. `owner` is `"admin"` or `"service.NAME"`.
    pub fn listen_error(&self, owner: &str, message: impl Into<String>) -> ConfigError {
        match self.listen_spans.get(owner) {
            Some(span) => ConfigError::at(&self.path, &self.source, span.clone(), message),
            None => ConfigError::whole_file(&self.path, message),
        }
    }
}

pub mod plan;
mod raw;
mod value;
