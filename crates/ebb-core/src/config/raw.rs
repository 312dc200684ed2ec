//! The raw model of `ebb.toml` and the checks that turn it into a [`Config`].
//!
//! Parsing is two passes:
//!
//! 1. **Shape.** toml and serde deserialize the text into the `Raw*` structs
//!    below. Every table denies unknown keys, every key is optional (so a
//!    missing key gets *our* message, not serde's "missing field"), and leaf
//!    values are [`Spanned`] so the second pass can point at them. Leaf types
//!    that need a better message than serde's live in `value.rs`. toml stops
//!    at the first shape error and gives its byte span; [`toml_error`] turns
//!    it into a located [`ConfigError`].
//! 2. **Meaning.** [`Check`] converts raw into the public types, applying
//!    defaults and checking ranges and cross-field rules (desired within
//!    min..max, timeout below interval, one address per listener). It records
//!    every problem with its span and reports the one that comes first in the
//!    file, so the answer does not depend on the order of the checks.
//!
//! Tables are never wrapped in `Spanned`: toml only knows the span of inline
//! tables, and `[service.web]` or `replicas.min = 2` would fail to parse.
//! Errors about a table point at its key instead (a service's name).
//!
//! `[service.NAME.scaling]` has its raw tables and checks in `raw/scaling.rs`
//! (a child module, so it shares [`Check`]); the types it produces live in
//! `crate::scaling`, next to the code that uses them. The lifecycle tables
//! (`kind`, `[service.NAME.deploy]`, `metric_source`, `chaos`) are in
//! `raw/lifecycle.rs` the same way; `DeployConfig` lives in `crate::deploy`.
//! `[service.NAME.proxy.outlier]` is in `raw/outlier.rs`; `OutlierConfig`
//! lives in `crate::outlier`.
//!
//! **Adding a key:** add an `Option<Spanned<T>>` field to its `Raw*` struct
//! (until then `deny_unknown_fields` rejects it), a plain field to the public
//! type in `config.rs`, one line in the matching `Check` method, and a row in
//! `docs/config.md`. **Adding a table** (`[service.NAME.scaling]`): a new
//! `Raw*` struct with `#[serde(deny_unknown_fields, expecting = ...)]`, an
//! `Option<RawX>` field on the parent, and a `Check` method that takes
//! `Option<RawX>` and returns the public type with its defaults.

use super::value::{Addr, Balance, Bytes, Command, Dur, EnvTable, Int, IpList, Number, RawAccessLog};
use super::{
    AccessLogConfig, AccessLogFormat, AccessLogTarget, AdminConfig, Bounds, CommandSpec, Config, ConfigError,
    ContainerConfig, DriverKind, HealthConfig, LogsConfig, ProxyConfig, Replicas, ServiceConfig, ServiceKind,
    StatusMatcher,
};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) fn parse(source: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| toml_error(path, source, &e))?;
    let mut check =
        Check { file: path, source, problems: Vec::new(), facts: Facts::default(), routed: Default::default() };
    let config = check.config(raw)?;
    check.finish(config)
}

// ---------------------------------------------------------------------------
// The raw model: the file's shape, with spans on leaf values.
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    service: Services,
    #[serde(default)]
    listener: listener::Listeners,
    cluster: Option<cluster::RawCluster>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an [admin] table")]
struct RawAdmin {
    listen: Option<Spanned<Addr>>,
    tls: Option<RawAdminTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a TLS table like tls = { cert = "admin.pem", key = "admin.key" }"#)]
struct RawAdminTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

/// The `[service.NAME]` tables, in file order, each with its name's span.
#[derive(Default)]
struct Services(Vec<(Spanned<String>, RawService)>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ServicesVisitor;
        impl<'de> Visitor<'de> for ServicesVisitor {
            type Value = Services;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one [service.NAME] table per service, e.g. [service.web]")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Services, A::Error> {
                let mut services = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<String>, RawService>()? {
                    services.push(entry);
                }
                services.sort_by_key(|(name, _)| name.span().start);
                Ok(Services(services))
            }
        }
        deserializer.deserialize_map(ServicesVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a service table like [service.web]")]
struct RawService {
    command: Option<Spanned<Command>>,
    kind: Option<Spanned<String>>,
    driver: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    container_port: Option<Spanned<Int>>,
    cpus: Option<Spanned<Number>>,
    memory: Option<Spanned<Bytes>>,
    mounts: Option<Vec<Spanned<container::RawMount>>>,
    networks: Option<Vec<Spanned<String>>>,
    user: Option<Spanned<String>>,
    labels: Option<container::LabelTable>,
    placement: Option<container::RawPlacement>,
    listen: Option<Spanned<Addr>>,
    replicas: Option<RawReplicas>,
    cpu: Option<Spanned<Number>>,
    env: Option<EnvTable>,
    /// The ports local replicas listen on, `"21000-21999"`.
    ports: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<Dur>>,
    drain_timeout: Option<Spanned<Dur>>,
    balance: Option<Balance>,
    health: Option<RawHealth>,
    proxy: Option<RawProxy>,
    scaling: Option<scaling::RawScaling>,
    deploy: Option<lifecycle::RawDeploy>,
    metric_source: Option<lifecycle::RawMetricSource>,
    chaos: Option<lifecycle::RawChaos>,
    idle: Option<idle::RawIdle>,
    warm_pool: Option<warm_pool::RawWarmPool>,
    logs: Option<RawLogs>,
    cpu_quota: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = r#"a table like { max_size = "50MiB", keep = 3, retention = "7d" }"#)]
struct RawLogs {
    max_size: Option<Spanned<Bytes>>,
    keep: Option<Spanned<Int>>,
    retention: Option<Spanned<Dur>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table like { min = 2, max = 4, desired = 2 }")]
struct RawReplicas {
    min: Option<Spanned<Int>>,
    max: Option<Spanned<Int>>,
    desired: Option<Spanned<Int>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a health check table like [service.web.health]")]
struct RawHealth {
    path: Option<Spanned<String>>,
    interval: Option<Spanned<Dur>>,
    timeout: Option<Spanned<Dur>>,
    healthy_threshold: Option<Spanned<Int>>,
    unhealthy_threshold: Option<Spanned<Int>>,
    matcher: Option<Spanned<String>>,
    grace_period: Option<Spanned<Dur>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a proxy table like [service.web.proxy]")]
struct RawProxy {
    header_read_timeout: Option<Spanned<Dur>>,
    idle_timeout: Option<Spanned<Dur>>,
    body_timeout: Option<Spanned<Dur>>,
    upstream_timeout: Option<Spanned<Dur>>,
    send_timeout: Option<Spanned<Dur>>,
    connect_timeout: Option<Spanned<Dur>>,
    max_header_bytes: Option<Spanned<Int>>,
    trusted_proxies: Option<IpList>,
    max_in_flight: Option<Spanned<Int>>,
    max_queue: Option<Spanned<Int>>,
    queue_timeout: Option<Spanned<Dur>>,
    max_connections: Option<Spanned<Int>>,
    request_buffering: Option<Spanned<Bytes>>,
    outlier: Option<outlier::RawOutlier>,
    access_log: Option<Spanned<RawAccessLog>>,
    slow_start: Option<Spanned<Dur>>,
}

/// The most `request_buffering` may hold per request.
const MAX_REQUEST_BUFFERING: u64 = 16 << 20;

mod cluster;
mod container;
mod idle;
mod lifecycle;
mod listener;
mod outlier;
mod scaling;
mod warm_pool;

// ---------------------------------------------------------------------------
// Pass 2: defaults, ranges and cross-field rules.
// ---------------------------------------------------------------------------

/// Service names become file names (logs, sockets) and URL path segments.
const MAX_SERVICE_NAME: usize = 63;
/// Health thresholds, as in an ALB target group (which allows 2..=10; one
/// probe is allowed here for quick local loops).
const THRESHOLDS: std::ops::RangeInclusive<i64> = 1..=10;
/// A request head smaller than 1 KiB rejects ordinary browsers; above 1 MiB
/// is a memory bomb, not a header.
const HEADER_BYTES: std::ops::RangeInclusive<i64> = 1024..=1024 * 1024;

/// Collects problems while converting raw values into public ones.
struct Check<'a> {
    file: &'a Path,
    source: &'a str,
    /// Every problem found; [`Check::finish`] reports the first in the file.
    problems: Vec<(Range<usize>, String)>,
    /// What the service being checked is, for the checks of its tables.
    facts: Facts,
    /// Services some `[listener.NAME]` routes to: they need no `listen`.
    routed: std::collections::BTreeSet<String>,
}

/// Facts about the service being checked that its tables' checks need.
#[derive(Debug, Clone, Default)]
struct Facts {
    name: String,
    kind: ServiceKind,
    has_metric_source: bool,
    min_replicas: u32,
}

impl Check<'_> {
    fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.problems.push((span, message.into()));
    }

    fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        match self.problems.into_iter().min_by_key(|(span, _)| span.start) {
            None => Ok(value),
            Some((span, message)) => Err(ConfigError::at(self.file, self.source, span, message)),
        }
    }

    /// "line N", for messages that name another place in the file.
    fn line_of(&self, span: &Range<usize>) -> usize {
        super::line_column(self.source, span.start).0
    }

    fn config(&mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let state_dir = self.state_dir(raw.state_dir);
        let raw_admin = raw.admin.unwrap_or_default();
        let admin_listen = raw_admin.listen;
        let mut admin_spans = Vec::new();
        let admin_tls =
            raw_admin.tls.and_then(|t| self.admin_tls(t, admin_listen.as_ref().map(|a| a.span()), &mut admin_spans));
        let admin = AdminConfig {
            listen: admin_listen.as_ref().map(|a| a.get_ref().0).unwrap_or(AdminConfig::default().listen),
            tls: admin_tls,
        };
        if raw.service.0.is_empty() {
            return Err(ConfigError::whole_file(
                self.file,
                r#"no services: add a [service.NAME] table, e.g. [service.web] with command = "python app.py --port $PORT" and listen = "127.0.0.1:8080""#,
            ));
        }

        // Every listener in file order; the implicit admin default comes first.
        let mut listeners =
            vec![Listener { addr: admin.listen, span: admin_listen.as_ref().map(|a| a.span()), owner: Owner::Admin }];
        self.routed = raw.listener.routed_services();
        let mut services = BTreeMap::new();
        for (name, raw) in raw.service.0 {
            let listen_span = raw.listen.as_ref().map(|l| l.span());
            let service = self.service(&name, raw);
            if let Some(span) = listen_span.filter(|_| service.kind.has_balancer()) {
                listeners.push(Listener {
                    addr: service.listen,
                    span: Some(span),
                    owner: Owner::Service(service.name.clone()),
                });
            }
            services.insert(service.name.clone(), service);
        }
        let (listener_configs, file_spans) = self.listener_tables(raw.listener, &services, &mut listeners);
        let mut listen_spans: BTreeMap<String, Range<usize>> = listeners
            .iter()
            .filter_map(|l| {
                let key = match &l.owner {
                    Owner::Admin => "admin".to_string(),
                    Owner::Service(name) => format!("service.{name}"),
                    Owner::Listener(name) => format!("listener.{name}"),
                    Owner::Redirect(name) => format!("listener.{name}.http"),
                };
                l.span.clone().map(|span| (key, span))
            })
            .collect();
        listen_spans.extend(file_spans);
        listen_spans.extend(admin_spans);
        self.listeners(listeners);
        let cluster = self.cluster(raw.cluster, &services);

        Ok(Config {
            path: self.file.to_path_buf(),
            state_dir,
            admin,
            services,
            listeners: listener_configs,
            cluster,
            source: self.source.to_string(),
            listen_spans,
        })
    }

    /// `[admin] tls = { cert, key }`: both files named (read by the `ebb`
    /// crate, which places its errors at `admin.tls.cert` / `.key`).
    fn admin_tls(
        &mut self,
        raw: RawAdminTls,
        listen: Option<Range<usize>>,
        spans: &mut Vec<(String, Range<usize>)>,
    ) -> Option<super::CertFiles> {
        let example = r#"e.g. tls = { cert = "admin.pem", key = "admin.key" }"#;
        let mut path = |key: &str, value: Option<Spanned<String>>, other: Option<Range<usize>>| {
            let Some(value) = value else {
                let message = format!("[admin] tls has no {key}; name both files, {example}");
                match other.or(listen.clone()) {
                    Some(span) => self.problem(span, message),
                    None => self.problems.push((0..0, message)),
                }
                return None;
            };
            if value.get_ref().trim().is_empty() || value.get_ref().contains('\0') {
                self.problem(value.span(), format!("[admin] tls {key} is empty; name a PEM file, {example}"));
                return None;
            }
            spans.push((format!("admin.tls.{key}"), value.span()));
            // Relative to the config file, as listener certificates are.
            Some(self.file.parent().unwrap_or(Path::new("")).join(value.get_ref()))
        };
        let key_span = raw.key.as_ref().map(|k| k.span());
        let cert_span = raw.cert.as_ref().map(|c| c.span());
        let cert = path("cert", raw.cert, key_span);
        let key = path("key", raw.key, cert_span);
        Some(super::CertFiles { cert: cert?, key: key? })
    }

    fn state_dir(&mut self, raw: Option<Spanned<String>>) -> PathBuf {
        let dir = match raw {
            None => Config::DEFAULT_STATE_DIR.to_string(),
            Some(dir) if dir.get_ref().trim().is_empty() => {
                self.problem(dir.span(), r#"state_dir is empty; name a directory, or leave the key out for ".ebb""#);
                Config::DEFAULT_STATE_DIR.to_string()
            }
            Some(dir) => dir.into_inner(),
        };
        // Relative to the config file, not to wherever ebb was started from,
        // so `ebb -c deploy/ebb.toml up` finds the same state every time.
        self.file.parent().unwrap_or(Path::new("")).join(dir)
    }

    fn service(&mut self, name: &Spanned<String>, raw: RawService) -> ServiceConfig {
        self.service_name(name);
        let known_kind = self.kind(raw.kind.as_ref());
        let kind = known_kind.unwrap_or_default();
        let known_driver = self.driver(raw.driver.as_ref());
        // With an unknown driver, that error is the one to fix first.
        let driver_unknown = raw.driver.is_some() && known_driver.is_none();
        let driver = known_driver.unwrap_or_default();
        let command = match raw.command {
            Some(command) => {
                let span = command.span();
                let command = self.command(command);
                if driver.is_container() && command_uses_ebb(&command) {
                    self.problem(
                        span,
                        format!(
                            "{{ebb}} is ebb's own executable on this machine, which a {} container cannot run; name the program inside the image (e.g. [\"/ebb\", \"demo-app\"]), or leave command out to run the image's own",
                            driver.as_str()
                        ),
                    );
                }
                command
            }
            // A container runs its image's own command.
            None if driver.is_container() || driver_unknown => CommandSpec::Argv(Vec::new()),
            None => {
                self.problem(
                    name.span(),
                    format!(
                        r#"service `{}` has no command; add the command that starts one replica, e.g. command = "python app.py --port $PORT""#,
                        name.get_ref()
                    ),
                );
                CommandSpec::Argv(Vec::new())
            }
        };
        let own_listen = kind.has_balancer() && raw.listen.is_some();
        let listen = match raw.listen {
            Some(listen) if !kind.has_balancer() => {
                self.problem(
                    listen.span(),
                    format!(
                        r#"service `{}` is a worker: it has no load balancer, so no listen address; remove listen, or make it kind = "web""#,
                        name.get_ref()
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
            Some(listen) => listen.into_inner().0,
            // A worker has no balancer; nothing binds this. With an unknown
            // kind, that error is the one to fix first. A service a listener
            // routes to is reached there.
            None if !kind.has_balancer() || known_kind.is_none() || self.routed.contains(name.get_ref()) => {
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
            None => {
                self.problem(
                    name.span(),
                    format!(
                        r#"service `{}` has no listen address; add the balancer's address for it, e.g. listen = "127.0.0.1:8080", or route to it from a [listener.NAME] table"#,
                        name.get_ref()
                    ),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        let min_zero_span =
            raw.replicas.as_ref().and_then(|r| r.min.as_ref()).filter(|m| m.get_ref().0 == 0).map(|m| m.span());
        let replicas = self.replicas(raw.replicas.unwrap_or_default());
        let cpu_span = raw.cpu.as_ref().map(|c| c.span());
        let mut cpu = self.cpu(raw.cpu);
        let options = container::RawContainerOptions {
            mounts: raw.mounts,
            networks: raw.networks,
            user: raw.user,
            labels: raw.labels,
            placement: raw.placement,
        };
        let container = match driver_unknown {
            true => None,
            false => {
                let options = self.container_options(name, driver, options);
                self.container(name, driver, raw.image, raw.container_port, raw.cpus, raw.memory.clone())
                    .map(|c| ContainerConfig { options, ..c })
            }
        };
        let process_memory = match (driver, raw.memory) {
            (DriverKind::Process, Some(memory)) if memory.get_ref().0 < 4 << 20 => {
                let v = memory.get_ref().0;
                self.problem(
                    memory.span(),
                    format!("memory ({v} bytes) is below 4MiB, less than any program needs to start; raise it, e.g. memory = \"256MiB\""),
                );
                None
            }
            (DriverKind::Process, Some(memory)) => Some(memory.get_ref().0),
            _ => None,
        };
        if let Some(cpus) = container.as_ref().and_then(|c| c.cpus) {
            // A container's allotment is its limit: one number, not two.
            if let Some(span) = cpu_span.filter(|_| cpu != cpus) {
                self.problem(
                    span,
                    format!("cpu ({cpu}) differs from cpus ({cpus}); for a container, cpus is both the limit and the allotment CPU % is relative to: remove cpu"),
                );
            }
            cpu = cpus;
        }
        if !kind.has_balancer() {
            let kind_span = raw.kind.as_ref().map(|k| k.span());
            let what = [(raw.balance.is_some(), "balance"), (raw.proxy.is_some(), "a [proxy] table")];
            for (_, key) in what.iter().filter(|(written, _)| *written) {
                self.worker_cannot_have(name, kind_span.clone(), key);
            }
        }
        let health_spans = raw
            .health
            .as_ref()
            .map(|h| [h.interval.as_ref().map(|i| i.span()), h.healthy_threshold.as_ref().map(|t| t.span())]);
        self.facts = Facts {
            name: name.get_ref().clone(),
            kind,
            has_metric_source: raw.metric_source.is_some(),
            min_replicas: replicas.bounds.min,
        };
        let metric_source = raw.metric_source.map(|m| self.metric_source(name, m));
        let health = self.health(raw.health.unwrap_or_default());
        let deploy = self.deploy(raw.deploy.unwrap_or_default(), &health, health_spans.unwrap_or_default());
        let warm_pool = self.warm_pool(name, kind, driver, raw.warm_pool, replicas.bounds.max);
        ServiceConfig {
            name: name.get_ref().clone(),
            kind,
            command,
            driver,
            container,
            listen,
            own_listen,
            replicas,
            cpu,
            env: self.env(raw.env.unwrap_or_default()),
            ports: raw.ports.and_then(|p| self.ports(&p, driver, replicas.bounds.max, warm_pool.map_or(0, |w| w.size))),
            stop_timeout: duration(raw.stop_timeout, ServiceConfig::DEFAULT_STOP_TIMEOUT),
            drain_timeout: duration(raw.drain_timeout, ServiceConfig::DEFAULT_DRAIN_TIMEOUT),
            health,
            balance: raw.balance.map(|b| b.0).unwrap_or_default(),
            proxy: self.proxy(raw.proxy.unwrap_or_default()),
            scaling: self.scaling(name, raw.scaling, replicas.bounds),
            deploy,
            metric_source,
            chaos: raw.chaos.map(|c| self.chaos(name, c)),
            idle: self.idle(name, kind, raw.kind.as_ref().map(|k| k.span()), driver, raw.idle, min_zero_span),
            warm_pool,
            logs: self.logs(raw.logs.unwrap_or_default()),
            memory: process_memory,
            cpu_quota: raw.cpu_quota.unwrap_or(false),
        }
    }

    fn logs(&mut self, raw: RawLogs) -> LogsConfig {
        let d = LogsConfig::default();
        let max_size = match raw.max_size {
            None => d.max_size,
            Some(size) if size.get_ref().0 < 64 * 1024 => {
                let n = size.get_ref().0;
                self.problem(
                    size.span(),
                    format!(r#"logs.max_size must be at least 64KiB, not {n} bytes; the default is "50MiB""#),
                );
                d.max_size
            }
            Some(size) => size.get_ref().0,
        };
        let keep = match raw.keep {
            None => d.keep,
            Some(keep) => match u32::try_from(keep.get_ref().0) {
                Ok(n) if n <= 100 => n,
                _ => {
                    let n = keep.get_ref().0;
                    self.problem(keep.span(), format!("logs.keep must be between 0 and 100 rotated files, not {n}"));
                    d.keep
                }
            },
        };
        LogsConfig { max_size, keep, retention: self.positive("logs.retention", &raw.retention, d.retention) }
    }

    /// `ports = "A-B"`: where local replicas listen (hosts with port rules).
    /// `pool` is the warm pool's size: its members need ports too.
    fn ports(
        &mut self,
        raw: &Spanned<String>,
        driver: DriverKind,
        max: u32,
        pool: u32,
    ) -> Option<std::ops::RangeInclusive<u16>> {
        if driver == DriverKind::Swarm {
            self.problem(
                raw.span(),
                "ports applies to the process and docker drivers; a Swarm task's port is published by Swarm (remove ports)",
            );
            return None;
        }
        let parsed = raw
            .get_ref()
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
        let Some((first, last)) = parsed.filter(|(a, b)| *a >= 1024 && a <= b) else {
            self.problem(
                raw.span(),
                format!(
                    r#"ports {:?} is not a range of ports like "21000-21999" (from 1024 up, first not above last)"#,
                    raw.get_ref()
                ),
            );
            return None;
        };
        let span = u32::from(last - first) + 1;
        if span < max + pool {
            let needed = match pool {
                0 => format!("replicas.max ({max})"),
                _ => format!("replicas.max ({max}) plus warm_pool.size ({pool})"),
            };
            self.problem(
                raw.span(),
                format!("ports {first}-{last} holds {span} ports, fewer than {needed}; widen the range"),
            );
            return None;
        }
        Some(first..=last)
    }

    fn driver(&mut self, raw: Option<&Spanned<String>>) -> Option<DriverKind> {
        let raw = raw?;
        let kind = DriverKind::from_name(raw.get_ref());
        if kind.is_none() {
            self.problem(
                raw.span(),
                format!(
                    r#"unknown driver {:?}; use "process" (local processes, the default), "docker" or "swarm""#,
                    raw.get_ref()
                ),
            );
        }
        kind
    }

    /// `image`, `container_port`, `cpus`, `memory`: required or refused by
    /// the driver.
    fn container(
        &mut self,
        name: &Spanned<String>,
        driver: DriverKind,
        image: Option<Spanned<String>>,
        port: Option<Spanned<Int>>,
        cpus: Option<Spanned<Number>>,
        memory: Option<Spanned<Bytes>>,
    ) -> Option<ContainerConfig> {
        if !driver.is_container() {
            // `memory` applies to local processes too (a control-group limit).
            let _ = memory;
            let written = [
                ("image", image.as_ref().map(|v| v.span())),
                ("container_port", port.as_ref().map(|v| v.span())),
                ("cpus", cpus.as_ref().map(|v| v.span())),
            ];
            for (key, span) in written {
                if let Some(span) = span {
                    self.problem(
                        span,
                        format!(r#"{key} only applies to containers; add driver = "docker" (or "swarm") to service `{}`, or remove {key}"#, name.get_ref()),
                    );
                }
            }
            return None;
        }
        let image = match image {
            None => {
                self.problem(
                    name.span(),
                    format!(
                        r#"service `{}` uses driver = "{}" but has no image; add the image to run, e.g. image = "ebb-demo:latest""#,
                        name.get_ref(),
                        driver.as_str()
                    ),
                );
                String::new()
            }
            Some(image) => {
                let i = image.get_ref();
                if i.trim().is_empty() || i.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.problem(
                        image.span(),
                        r#"image must be an image reference with no spaces, e.g. "ebb-demo:latest""#,
                    );
                }
                image.into_inner()
            }
        };
        let container_port = match port {
            None => ContainerConfig::DEFAULT_CONTAINER_PORT,
            Some(port) => {
                let p = port.get_ref().0;
                if !(1..=65535).contains(&p) {
                    self.problem(port.span(), format!("container_port must be a port from 1 to 65535, not {p}"));
                    ContainerConfig::DEFAULT_CONTAINER_PORT
                } else {
                    p as u16
                }
            }
        };
        let cpus = cpus.and_then(|c| {
            let v = c.get_ref().0;
            if !(v.is_finite() && v > 0.0) {
                self.problem(c.span(), format!("cpus must be a number of cores above 0, e.g. 0.5 or 2, not {v}"));
                None
            } else {
                Some(v)
            }
        });
        let memory = memory.and_then(|m| {
            let v = m.get_ref().0;
            if v < ContainerConfig::MIN_MEMORY {
                self.problem(
                    m.span(),
                    format!("memory ({v} bytes) is below Docker's minimum of 6MiB; raise it, e.g. memory = \"256MiB\""),
                );
                None
            } else {
                Some(v)
            }
        });
        Some(ContainerConfig { image, container_port, cpus, memory, options: Default::default() })
    }

    fn service_name(&mut self, name: &Spanned<String>) {
        let n = name.get_ref();
        let valid_start = n.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid_rest = n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_start || !valid_rest {
            let hint = suggest_service_name(n).map(|s| format!(", e.g. `{s}`")).unwrap_or_default();
            self.problem(
                name.span(),
                format!(
                    "service name {n:?} is not allowed: use lowercase letters, digits, '-' and '_', starting with a letter or digit{hint} (it becomes a file name)"
                ),
            );
        } else if n.len() > MAX_SERVICE_NAME {
            self.problem(
                name.span(),
                format!("service name is {} characters long; shorten it to {MAX_SERVICE_NAME} or fewer", n.len()),
            );
        }
    }

    fn command(&mut self, raw: Spanned<Command>) -> CommandSpec {
        let span = raw.span();
        let example = r#"e.g. "python app.py --port $PORT" or ["python", "app.py"]"#;
        match raw.into_inner() {
            Command::Shell(s) => {
                if s.trim().is_empty() {
                    self.problem(
                        span,
                        format!("command is empty; give the command that starts one replica, {example}"),
                    );
                } else if s.contains('\0') {
                    self.problem(span, "command contains a NUL character, which no process can receive; remove it");
                }
                CommandSpec::Shell(s)
            }
            Command::Argv(argv) => {
                if argv.is_empty() {
                    self.problem(
                        span,
                        format!("command is an empty array; give the program and its arguments, {example}"),
                    );
                } else if argv[0].trim().is_empty() {
                    self.problem(
                        span,
                        r#"the first element of command is empty; it must name the program, e.g. ["python", "app.py"]"#,
                    );
                } else if argv.iter().any(|a| a.contains('\0')) {
                    self.problem(span, "command contains a NUL character, which no process can receive; remove it");
                }
                CommandSpec::Argv(argv)
            }
        }
    }

    fn replicas(&mut self, raw: RawReplicas) -> Replicas {
        let max_allowed = ServiceConfig::MAX_REPLICAS as i64;
        let mut in_range = true;
        for (key, value) in [("min", &raw.min), ("max", &raw.max), ("desired", &raw.desired)] {
            if let Some(v) = value {
                let n = v.get_ref().0;
                if n < 0 {
                    self.problem(v.span(), format!("replicas.{key} must be 0 or more, not {n}"));
                    in_range = false;
                } else if n > max_allowed {
                    self.problem(
                        v.span(),
                        format!("replicas.{key} ({n}) is above the limit of {max_allowed} replicas"),
                    );
                    in_range = false;
                }
            }
        }
        let value = |v: &Option<Spanned<Int>>| v.as_ref().map(|v| v.get_ref().0);
        let min = value(&raw.min).unwrap_or(1);
        let desired = value(&raw.desired).unwrap_or(min);
        let max = value(&raw.max).unwrap_or(min.max(desired));
        let fallback = Replicas { bounds: Bounds { min: 1, max: 1 }, desired: 1 };
        if !in_range {
            return fallback;
        }

        // Each rule can only break when the key it points at was written, so
        // the `if let` below always finds a span when the rule fires.
        let span = |v: &Option<Spanned<Int>>| v.as_ref().map(|v| v.span());
        if max < 1 {
            if let Some(s) = span(&raw.max) {
                self.problem(
                    s,
                    "replicas.max must be at least 1; a service that can never run a replica serves nothing",
                );
            } else if let Some(s) = span(&raw.desired).or(span(&raw.min)) {
                self.problem(
                    s,
                    "replicas.max defaults to the larger of min and desired, which is 0 here; set max = 1 or more",
                );
            }
        } else if min > max {
            if let Some(s) = span(&raw.min) {
                self.problem(s, format!("replicas.min ({min}) is above replicas.max ({max}); lower min or raise max"));
            }
        } else if desired < min {
            if let Some(s) = span(&raw.desired) {
                let (min_is, fix) =
                    if raw.min.is_none() { (", the default", "set min = 0") } else { ("", "lower min") };
                self.problem(
                    s,
                    format!(
                        "replicas.desired ({desired}) is below replicas.min ({min}{min_is}); raise desired or {fix}"
                    ),
                );
            }
        } else if desired > max {
            if let Some(s) = span(&raw.desired) {
                self.problem(
                    s,
                    format!("replicas.desired ({desired}) is above replicas.max ({max}); raise max or lower desired"),
                );
            }
        } else {
            // In range 0..=MAX_REPLICAS, checked above.
            return Replicas { bounds: Bounds { min: min as u32, max: max as u32 }, desired: desired as u32 };
        }
        fallback
    }

    fn cpu(&mut self, raw: Option<Spanned<Number>>) -> f64 {
        let Some(raw) = raw else { return ServiceConfig::DEFAULT_CPU };
        let cpu = raw.get_ref().0;
        if !(cpu.is_finite() && cpu > 0.0) {
            self.problem(raw.span(), format!("cpu must be a number of cores above 0, e.g. 1.0 or 0.5, not {cpu}"));
            return ServiceConfig::DEFAULT_CPU;
        }
        cpu
    }

    fn env(&mut self, raw: EnvTable) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (name, value) in raw.0 {
            let n = name.get_ref();
            if n.is_empty() {
                self.problem(name.span(), "env has an empty variable name; give it a name like GREETING");
            } else if n.contains('=') || n.contains('\0') {
                self.problem(
                    name.span(),
                    format!("env variable name {n:?} contains '=' or a NUL character; rename it"),
                );
            } else if n == "PORT" || n.starts_with("EBB_") {
                self.problem(
                    name.span(),
                    format!("env {n} is set by ebb for each replica (PORT, EBB_*); remove it or use another name"),
                );
            } else if value.contains('\0') {
                self.problem(name.span(), format!("env {n} has a NUL character in its value; remove it"));
            }
            env.insert(name.into_inner(), value);
        }
        env
    }

    fn health(&mut self, raw: RawHealth) -> HealthConfig {
        let d = HealthConfig::default();
        let path = match raw.path {
            None => d.path.clone(),
            Some(path) => {
                let p = path.get_ref();
                if !p.starts_with('/') {
                    self.problem(
                        path.span(),
                        format!(r#"health.path must start with '/', e.g. "/{}""#, p.trim_start_matches('/')),
                    );
                } else if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.problem(
                        path.span(),
                        "health.path must not contain spaces or control characters; percent-encode them (%20)",
                    );
                }
                path.into_inner()
            }
        };
        let interval = self.positive("health.interval", &raw.interval, d.interval);
        let timeout = self.positive("health.timeout", &raw.timeout, d.timeout);
        if timeout >= interval {
            // Blame the key that was written; the timeout when both were.
            if let Some(s) = raw.timeout.as_ref().or(raw.interval.as_ref()).map(|s| s.span()) {
                let default = |written: bool| if written { "" } else { ", the default" };
                self.problem(
                    s,
                    format!(
                        "health.timeout ({}{}) must be shorter than health.interval ({}{}), so one probe ends before the next starts; lower timeout or raise interval",
                        humantime::format_duration(timeout),
                        default(raw.timeout.is_some()),
                        humantime::format_duration(interval),
                        default(raw.interval.is_some()),
                    ),
                );
            }
        }
        let matcher = match raw.matcher {
            None => d.matcher.clone(),
            Some(m) => StatusMatcher::parse(m.get_ref()).unwrap_or_else(|e| {
                self.problem(m.span(), format!("health.matcher: {e}"));
                d.matcher.clone()
            }),
        };
        HealthConfig {
            path,
            interval,
            timeout,
            healthy_threshold: self.threshold("health.healthy_threshold", &raw.healthy_threshold, d.healthy_threshold),
            unhealthy_threshold: self.threshold(
                "health.unhealthy_threshold",
                &raw.unhealthy_threshold,
                d.unhealthy_threshold,
            ),
            matcher,
            grace_period: duration(raw.grace_period, d.grace_period),
        }
    }

    fn threshold(&mut self, key: &str, raw: &Option<Spanned<Int>>, default: u32) -> u32 {
        let Some(raw) = raw else { return default };
        let n = raw.get_ref().0;
        if !THRESHOLDS.contains(&n) {
            self.problem(
                raw.span(),
                format!(
                    "{key} must be between {} and {} consecutive probes, not {n}",
                    THRESHOLDS.start(),
                    THRESHOLDS.end()
                ),
            );
            return default;
        }
        n as u32
    }

    fn proxy(&mut self, raw: RawProxy) -> ProxyConfig {
        let d = ProxyConfig::default();
        let max_header_bytes = match raw.max_header_bytes {
            None => d.max_header_bytes,
            Some(raw) => {
                let n = raw.get_ref().0;
                if HEADER_BYTES.contains(&n) {
                    n as usize
                } else {
                    self.problem(
                        raw.span(),
                        format!(
                            "proxy.max_header_bytes must be between {} and {} (1 MiB), not {n}",
                            HEADER_BYTES.start(),
                            HEADER_BYTES.end()
                        ),
                    );
                    d.max_header_bytes
                }
            }
        };
        let max_in_flight = match raw.max_in_flight {
            None => d.max_in_flight,
            Some(raw) => match raw.get_ref().0 {
                n @ 1..=100_000 => Some(n as u32),
                n => {
                    self.problem(
                        raw.span(),
                        format!("proxy.max_in_flight must be between 1 and 100000 requests per replica, not {n}; leave it out for no limit"),
                    );
                    None
                }
            },
        };
        let max_queue = match raw.max_queue {
            None => d.max_queue,
            Some(raw) => match raw.get_ref().0 {
                n @ 0..=1_000_000 => n as u32,
                n => {
                    self.problem(
                        raw.span(),
                        format!("proxy.max_queue must be between 0 and 1000000 waiting requests, not {n}"),
                    );
                    d.max_queue
                }
            },
        };
        let max_connections = match raw.max_connections {
            None => d.max_connections,
            Some(raw) => match raw.get_ref().0 {
                n @ 1..=1_000_000 => Some(n as u32),
                n => {
                    self.problem(
                        raw.span(),
                        format!("proxy.max_connections must be between 1 and 1000000 client connections, not {n}; leave it out to derive it from the open-file limit"),
                    );
                    None
                }
            },
        };
        let request_buffering = match raw.request_buffering {
            None => d.request_buffering,
            Some(raw) => match raw.get_ref().0 {
                n @ 0..=MAX_REQUEST_BUFFERING => n as usize,
                n => {
                    self.problem(
                        raw.span(),
                        format!("proxy.request_buffering must be at most 16MiB (each request may hold that much in memory), not {n} bytes; 0 turns it off"),
                    );
                    d.request_buffering
                }
            },
        };
        ProxyConfig {
            max_connections,
            max_in_flight,
            request_buffering,
            max_queue,
            queue_timeout: self.positive("proxy.queue_timeout", &raw.queue_timeout, d.queue_timeout),
            header_read_timeout: self.positive(
                "proxy.header_read_timeout",
                &raw.header_read_timeout,
                d.header_read_timeout,
            ),
            idle_timeout: self.positive("proxy.idle_timeout", &raw.idle_timeout, d.idle_timeout),
            body_timeout: self.positive("proxy.body_timeout", &raw.body_timeout, d.body_timeout),
            upstream_timeout: self.positive("proxy.upstream_timeout", &raw.upstream_timeout, d.upstream_timeout),
            send_timeout: self.positive("proxy.send_timeout", &raw.send_timeout, d.send_timeout),
            connect_timeout: self.positive("proxy.connect_timeout", &raw.connect_timeout, d.connect_timeout),
            max_header_bytes,
            trusted_proxies: raw.trusted_proxies.map(|l| l.0).unwrap_or(d.trusted_proxies),
            outlier: raw.outlier.map_or(d.outlier, |o| self.outlier(o)),
            access_log: raw.access_log.and_then(|a| self.access_log(a)),
            slow_start: match raw.slow_start {
                None => d.slow_start,
                Some(window) if window.get_ref().0 > Duration::from_secs(3600) => {
                    self.problem(
                        window.span(),
                        "proxy.slow_start must be at most 1h; \"0s\" (the default) turns it off",
                    );
                    d.slow_start
                }
                Some(window) => window.get_ref().0,
            },
        }
    }

    fn access_log(&mut self, raw: Spanned<RawAccessLog>) -> Option<AccessLogConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let format = match raw.format.as_deref() {
            None | Some("combined") => AccessLogFormat::Combined,
            Some("json") => AccessLogFormat::Json,
            Some(other) => {
                self.problem(span, format!(r#"proxy.access_log format must be "combined" or "json", not {other:?}"#));
                return None;
            }
        };
        let path = raw.path.trim();
        let target = match path {
            "" => {
                self.problem(
                    span,
                    r#"proxy.access_log path is empty; name a file (relative to this config file), or "-" for stdout"#,
                );
                return None;
            }
            "-" => AccessLogTarget::Stdout,
            // Relative to the config file, like state_dir.
            path => AccessLogTarget::File(self.file.parent().unwrap_or(Path::new("")).join(path)),
        };
        Some(AccessLogConfig { target, format })
    }

    /// A duration where zero means nothing sensible (a timeout that always
    /// fires, a probe loop that never sleeps).
    fn positive(&mut self, key: &str, raw: &Option<Spanned<Dur>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        let d = raw.get_ref().0;
        if d.is_zero() {
            self.problem(
                raw.span(),
                format!("{key} must be longer than 0; the default is {}", humantime::format_duration(default)),
            );
            return default;
        }
        d
    }

    /// No two listeners may bind overlapping addresses: the second one would
    /// fail at start-up with EADDRINUSE, far from the line that caused it.
    fn listeners(&mut self, mut listeners: Vec<Listener>) {
        listeners.sort_by_key(|l| l.span.as_ref().map_or(0, |s| s.start));
        for (i, later) in listeners.iter().enumerate() {
            let Some(span) = later.span.clone() else { continue };
            let Some(first) = listeners[..i].iter().find(|l| overlaps(l.addr, later.addr)) else { continue };
            let line = |s: &Option<Range<usize>>| s.as_ref().map_or(0, |s| self.line_of(s));
            let whose = match (&first.owner, &first.span) {
                (Owner::Admin, None) => "the admin API (its default address)".to_string(),
                (Owner::Admin, Some(s)) => format!("the admin API (line {})", self.line_of(s)),
                (Owner::Service(n), s) => format!("service `{n}` (line {})", line(s)),
                (Owner::Listener(n), s) => format!("listener `{n}` (line {})", line(s)),
                (Owner::Redirect(n), s) => format!("the http address of listener `{n}` (line {})", line(s)),
            };
            let clash = if first.addr == later.addr {
                format!("{} is already used by {whose}", later.addr)
            } else {
                format!("{} overlaps {} of {whose}", later.addr, first.addr)
            };
            let fix = match (&later.owner, &first.owner, &first.span) {
                (Owner::Service(_) | Owner::Listener(_) | Owner::Redirect(_), Owner::Admin, None) => {
                    r#"pick another port, or move the admin API with [admin] listen = "127.0.0.1:9901""#
                }
                (Owner::Admin, ..) => "give the admin API another port",
                _ => "give each listener its own port",
            };
            self.problem(span, format!("{clash}; {fix}"));
        }
    }
}

/// Someone who binds a listen address.
struct Listener {
    addr: SocketAddr,
    /// `None` for the admin API's default address (not written in the file).
    span: Option<Range<usize>>,
    owner: Owner,
}

enum Owner {
    Admin,
    Service(String),
    /// A `[listener.NAME]`'s `listen`.
    Listener(String),
    /// A `[listener.NAME]`'s `http` (the redirect to HTTPS).
    Redirect(String),
}

/// Whether binding both addresses would clash: same port, and the same IP
/// or a wildcard (`0.0.0.0`, `::`) that covers the other. Port 0 asks the OS
/// for a fresh port each time, so it never clashes.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    // `::` also takes IPv4 on Linux unless IPV6_V6ONLY is set.
    let covers = |w: SocketAddr, o: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || o.is_ipv4());
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

fn duration(raw: Option<Spanned<Dur>>, default: Duration) -> Duration {
    raw.map(|d| d.into_inner().0).unwrap_or(default)
}

/// A valid name close to an invalid one (`Web API` -> `web-api`), if any.
fn suggest_service_name(name: &str) -> Option<String> {
    let s: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else if c == '_' {
                '_'
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(|c| c == '-' || c == '_');
    (!s.is_empty() && s.len() <= MAX_SERVICE_NAME && s != name).then(|| s.to_string())
}

// ---------------------------------------------------------------------------
// Pass 1 errors: toml's message at toml's span, made friendlier.
// ---------------------------------------------------------------------------

fn toml_error(file: &Path, source: &str, err: &toml::de::Error) -> ConfigError {
    let mut message = polish(err.message());
    match err.span() {
        Some(span) => {
            if let Some(hint) = syntax_hint(source, span.start, &message) {
                message = format!("{message}; {hint}");
            }
            ConfigError::at(file, source, span, message)
        }
        None => ConfigError::whole_file(file, message),
    }
}

/// A fix for the TOML syntax mistakes people actually make, read off the
/// line the error is on. toml says *what* it expected; this says what to
/// write.
fn syntax_hint(source: &str, offset: usize, message: &str) -> Option<String> {
    let before = source.get(..offset)?;
    let after = source.get(offset..)?;
    let line = &source[before.rfind('\n').map_or(0, |i| i + 1)..offset + after.find('\n').unwrap_or(after.len())];
    let at_line_end = after.is_empty() || after.starts_with(['\n', '\r']);

    if line.trim_start().starts_with("[[") && line.trim_end().ends_with(".scaling.shadow]]") {
        let service = line.trim().trim_start_matches("[[").trim_end_matches(".scaling.shadow]]");
        return Some(format!(
            "a shadow policy is written [[{service}.scaling.shadow.target_tracking]] or [[{service}.scaling.shadow.step]], with the same keys as an active one"
        ));
    }
    if message.starts_with("invalid table header; duplicate key") {
        return Some("this table is already defined above; merge the two".into());
    }
    if message.starts_with("duplicate key") {
        return Some("a key may appear only once per table; remove or merge the repeat".into());
    }
    if at_line_end && message.starts_with("invalid table header") {
        return Some("close the table header with ]".into());
    }
    if message.starts_with("invalid inline table") {
        return Some("an inline table { ... } must end on the same line, with no comma after the last entry".into());
    }
    if at_line_end && message.starts_with("invalid basic string") {
        return Some(r#"the string is not closed; end it with " on the same line"#.into());
    }
    if at_line_end && message.starts_with("invalid literal string") {
        return Some("the string is not closed; end it with ' on the same line".into());
    }
    if message.starts_with("invalid string") || message.starts_with("expected newline") {
        let (key, value) = line.split_once('=')?;
        let (key, value) = (key.trim(), value.trim().trim_end_matches('\r'));
        if value.is_empty() {
            return Some(format!("`{key} =` has no value; write one after the `=`"));
        }
        if value == "True" || value == "False" {
            return Some("booleans are lowercase: true or false".into());
        }
        if !value.starts_with(['"', '\'', '[', '{']) && !value.contains('"') {
            return Some(format!(r#"text must be quoted: {key} = "{value}""#));
        }
        if message.starts_with("expected newline") {
            return Some("put each key = value on its own line".into());
        }
    }
    None
}

/// toml's messages, on one line, with "unknown field" turned into TOML's word
/// ("key") and a did-you-mean for typos.
fn polish(message: &str) -> String {
    let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    let Some(rest) = message.strip_prefix("unknown field `") else { return message };
    let Some((key, expected)) = rest.split_once('`') else { return message };
    // `expected` reads ", expected one of `a`, `b`" or ", expected `a` or `b`".
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let expected = expected.trim_start_matches([',', ' ']);
    match closest(key, &known) {
        Some(near) => format!("unknown key `{key}`; did you mean `{near}`? ({expected})"),
        None => format!("unknown key `{key}`; {expected}"),
    }
}

/// The known key nearest to a typo, if it is near enough to be a typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Whether a command names `{ebb}`, ebb's own executable on this machine.
fn command_uses_ebb(command: &CommandSpec) -> bool {
    match command {
        CommandSpec::Shell(line) => line.contains("{ebb}"),
        CommandSpec::Argv(argv) => argv.iter().any(|a| a.contains("{ebb}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("replica", &["command", "replicas", "cpu"]), Some("replicas"));
        assert_eq!(closest("helth", &["health", "proxy"]), Some("health"));
        assert_eq!(closest("zzz", &["health", "proxy"]), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_field_becomes_unknown_key() {
        assert_eq!(
            polish("unknown field `replica`, expected one of `listen`, `replicas`"),
            "unknown key `replica`; did you mean `replicas`? (expected one of `listen`, `replicas`)"
        );
        assert_eq!(polish("unknown field `x`, expected `min` or `max`"), "unknown key `x`; expected `min` or `max`");
        assert_eq!(polish("invalid table header\nduplicate key `web`"), "invalid table header; duplicate key `web`");
    }

    #[test]
    fn syntax_hints_say_what_to_write() {
        let hint = |src: &str, at: usize, msg: &str| syntax_hint(src, at, msg);
        assert_eq!(
            hint("listen = 127.0.0.1:80\n", 14, "expected newline, `#`").unwrap(),
            r#"text must be quoted: listen = "127.0.0.1:80""#
        );
        assert_eq!(hint("x = True\n", 4, "invalid string").unwrap(), "booleans are lowercase: true or false");
        assert!(hint("x = \"a\n", 6, "invalid basic string").unwrap().contains("not closed"));
        assert!(hint("x = \"a\" y = 1\n", 8, "expected newline, `#`").unwrap().contains("own line"));
        assert_eq!(hint("x = \"a\u{e9}", 7, "invalid basic string"), None, "offset inside a character");
        assert_eq!(hint("", 5, "invalid string"), None, "offset past the end");
    }

    #[test]
    fn wildcards_overlap_their_family() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(overlaps(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(overlaps(a("[::]:80"), a("127.0.0.1:80")));
        assert!(!overlaps(a("0.0.0.0:80"), a("[::1]:80")));
        assert!(!overlaps(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!overlaps(a("127.0.0.1:0"), a("127.0.0.1:0")));
    }

    #[test]
    fn service_names_get_a_valid_suggestion() {
        assert_eq!(suggest_service_name("Web API").as_deref(), Some("web-api"));
        assert_eq!(suggest_service_name("-web").as_deref(), Some("web"));
        assert_eq!(suggest_service_name("***"), None);
    }
}
