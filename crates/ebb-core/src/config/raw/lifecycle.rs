//! The lifecycle keys of a service: `kind`, `[service.NAME.deploy]`,
//! `[service.NAME.metric_source]` and `[service.NAME.chaos]`, their raw
//! tables and the checks that turn them into public types.
//!
//! None of these tables is spanned (they may be written with headers or
//! dotted keys); an error points at one of their keys, or at the service's
//! name when the key that is missing is the problem.

use super::{closest, Check};
use crate::config::value::{Command, Dur, Int};
use crate::config::{ChaosConfig, CommandSpec, HealthConfig, MetricReading, MetricSource, ServiceConfig, ServiceKind};
use crate::deploy::{DeployConfig, Strategy};
use crate::scaling::metrics::duration as human;
use crate::scaling::Metric;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a deploy table like [service.web.deploy]")]
pub(super) struct RawDeploy {
    strategy: Option<Spanned<String>>,
    max_surge: Option<Spanned<Int>>,
    max_unavailable: Option<Spanned<Int>>,
    deploy_timeout: Option<Spanned<Dur>>,
    bake_time: Option<Spanned<Dur>>,
    protected_wait: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a metric source like [service.worker.metric_source] with command = "..." or url = "...""#
)]
pub(super) struct RawMetricSource {
    command: Option<Spanned<Command>>,
    url: Option<Spanned<String>>,
    json_pointer: Option<Spanned<String>>,
    /// A Prometheus server's base URL, with `query`.
    prometheus: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    interval: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a chaos table like { interrupt_every = "10m", notice = "2m" }"#)]
pub(super) struct RawChaos {
    interrupt_every: Option<Spanned<Dur>>,
    notice: Option<Spanned<Dur>>,
}

/// Metrics only a load balancer measures.
const BALANCER_METRICS: [Metric; 5] = [
    Metric::RequestsPerReplica,
    Metric::ConcurrencyPerReplica,
    Metric::P95Latency,
    Metric::P99Latency,
    Metric::QueueTime,
];

impl Check<'_> {
    /// `kind = "web" | "worker"`; web when absent, `None` when unknown
    /// (reported here; the caller then asks nothing that depends on it).
    pub(super) fn kind(&mut self, raw: Option<&Spanned<String>>) -> Option<ServiceKind> {
        let Some(raw) = raw else { return Some(ServiceKind::Web) };
        let kind = ServiceKind::from_name(raw.get_ref());
        if kind.is_none() {
            let hint = match raw.get_ref().as_str() {
                "batch" | "job" | "queue" | "consumer" | "background" => {
                    r#"a pool with no balancer is "worker"; "#.into()
                }
                "http" | "api" | "service" | "server" => r#"a service behind a balancer is "web"; "#.into(),
                other => {
                    closest(other, &["web", "worker"]).map(|k| format!("did you mean {k:?}? ")).unwrap_or_default()
                }
            };
            self.problem(
                raw.span(),
                format!(
                    r#"unknown kind {:?}; {hint}expected "web" (behind a load balancer) or "worker" (no balancer)"#,
                    raw.get_ref()
                ),
            );
        }
        kind
    }

    /// A key that only a service with a balancer can have, on a worker.
    pub(super) fn worker_cannot_have(&mut self, service: &Spanned<String>, kind: Option<Range<usize>>, key: &str) {
        let span = kind.unwrap_or(service.span());
        self.problem(
            span,
            format!(
                r#"service `{}` is a worker: it has no load balancer, so {key} does nothing; remove it, or make it kind = "web""#,
                service.get_ref()
            ),
        );
    }

    /// Why `metric` cannot drive a policy of this service, if it cannot.
    pub(super) fn metric_misfit(&self, metric: Metric) -> Option<String> {
        let name = &self.facts.name;
        if self.facts.kind == ServiceKind::Worker && BALANCER_METRICS.contains(&metric) {
            return Some(format!(
                r#"{metric} is measured by the load balancer, and worker `{name}` has none; scale a worker on "cpu", or on "items_per_replica" with a [service.{name}.metric_source]"#
            ));
        }
        if metric == Metric::ItemsPerReplica && !self.facts.has_metric_source {
            return Some(format!(
                r#"items_per_replica divides the number read from [service.{name}.metric_source] by the replicas in service; add that table with command = "..." or url = "...""#
            ));
        }
        if metric == Metric::ItemsPerReplica && self.facts.min_replicas == 0 {
            return Some(format!(
                "items_per_replica needs replicas.min of 1 or more in service `{name}`: with no replica in service there is no number per replica, so the service could not grow back from 0"
            ));
        }
        None
    }

    /// `[service.NAME.deploy]`, checked against the health check: a new
    /// replica must be able to come into service within `deploy_timeout`.
    pub(super) fn deploy(
        &mut self,
        raw: RawDeploy,
        health: &HealthConfig,
        health_spans: [Option<Range<usize>>; 2],
    ) -> DeployConfig {
        let d = DeployConfig::default();
        let strategy = match &raw.strategy {
            None => d.strategy,
            Some(s) => Strategy::from_name(s.get_ref()).unwrap_or_else(|| {
                let name = s.get_ref();
                let message = match name.to_ascii_lowercase().as_str() {
                    "blue_green" | "bluegreen" | "blue/green" | "bg" | "blue-green" => {
                        format!(r#"unknown deploy strategy {name:?}; write "blue-green""#)
                    }
                    "rolling_update" | "rollingupdate" | "rolling-update" | "rolling" => {
                        format!(r#"unknown deploy strategy {name:?}; write "rolling""#)
                    }
                    "recreate" | "all-at-once" | "all_at_once" | "canary" | "linear" => format!(
                        r#"deploy strategy {name:?} is not supported; use "rolling" (a few replicas at a time) or "blue-green" (a full new set, then one traffic switch)"#
                    ),
                    other => {
                        let hint = closest(other, &["rolling", "blue-green"])
                            .map(|k| format!("did you mean {k:?}? "))
                            .unwrap_or_default();
                        format!(r#"unknown deploy strategy {name:?}; {hint}expected "rolling" or "blue-green""#)
                    }
                };
                self.problem(s.span(), message);
                d.strategy
            }),
        };
        let max_surge = self.deploy_count("deploy.max_surge", raw.max_surge.as_ref(), d.max_surge);
        let max_unavailable =
            self.deploy_count("deploy.max_unavailable", raw.max_unavailable.as_ref(), d.max_unavailable);
        if max_surge == 0 && max_unavailable == 0 {
            // Blame the zero that was written; the later one when both were.
            let written = [raw.max_surge.as_ref(), raw.max_unavailable.as_ref()];
            if let Some(span) = written.into_iter().flatten().map(|v| v.span()).max_by_key(|s| s.start) {
                let default = |w: bool| if w { "" } else { ", the default" };
                self.problem(
                    span,
                    format!(
                        "max_surge = 0 (start no extra replica{}) with max_unavailable = 0 (stop none first{}) leaves a rolling deploy no way forward; set max_surge = 1 (the default) or max_unavailable = 1",
                        default(raw.max_surge.is_some()),
                        default(raw.max_unavailable.is_some()),
                    ),
                );
            }
        }
        let deploy_timeout = self.positive("deploy.deploy_timeout", &raw.deploy_timeout, d.deploy_timeout);
        // The fastest a new replica can come into service: its first probe
        // goes out at once, then one per interval until the threshold.
        let fastest = health.interval * health.healthy_threshold.saturating_sub(1);
        if deploy_timeout <= fastest {
            let needs = format!(
                "with health.interval {} and health.healthy_threshold {}, a new replica needs at least {} to come into service",
                human(health.interval),
                health.healthy_threshold,
                human(fastest)
            );
            if let Some(t) = &raw.deploy_timeout {
                self.problem(
                    t.span(),
                    format!(
                        "deploy.deploy_timeout ({}) is too short: {needs}, so every deploy would roll back; set deploy_timeout above {} or loosen the health check",
                        human(deploy_timeout),
                        human(fastest)
                    ),
                );
            } else if let Some(span) = health_spans.into_iter().flatten().min_by_key(|s| s.start) {
                self.problem(
                    span,
                    format!(
                        "{needs}, no less than the default deploy_timeout of {}, so every deploy would roll back; set deploy_timeout above {} in [service.{}.deploy], or shorten the health check",
                        human(deploy_timeout),
                        human(fastest),
                        self.facts.name
                    ),
                );
            }
        }
        DeployConfig {
            strategy,
            max_surge,
            max_unavailable,
            deploy_timeout,
            bake_time: raw.bake_time.map(|b| b.into_inner().0),
            protected_wait: raw.protected_wait.map_or(d.protected_wait, |w| w.into_inner().0),
        }
    }

    fn deploy_count(&mut self, key: &str, raw: Option<&Spanned<Int>>, default: u32) -> u32 {
        let Some(raw) = raw else { return default };
        let n = raw.get_ref().0;
        let max = i64::from(ServiceConfig::MAX_REPLICAS);
        if !(0..=max).contains(&n) {
            self.problem(raw.span(), format!("{key} is a number of replicas from 0 to {max}, not {n}"));
            return default;
        }
        n as u32
    }

    /// `[service.NAME.metric_source]`: a command or a URL, not both.
    pub(super) fn metric_source(&mut self, service: &Spanned<String>, raw: RawMetricSource) -> MetricSource {
        let name = service.get_ref();
        let example = r#"e.g. command = "redis-cli llen jobs", or url = "http://127.0.0.1:9000/stats" with json_pointer = "/queue/length", or prometheus = "http://127.0.0.1:9090" with query = "sum(queue_length)""#;
        let interval = match &raw.interval {
            None => MetricSource::DEFAULT_INTERVAL,
            Some(i) if i.get_ref().0 < MetricSource::MIN_INTERVAL => {
                self.problem(i.span(), "metric_source.interval must be at least 1s: metrics are sampled once a second");
                MetricSource::DEFAULT_INTERVAL
            }
            Some(i) => i.get_ref().0,
        };
        if let Some(reading) = self.prometheus_source(service, &raw) {
            return MetricSource { reading, interval };
        }
        let reading = match (raw.command, raw.url) {
            (Some(command), Some(url)) => {
                let later = if command.span().start > url.span().start { command.span() } else { url.span() };
                self.problem(
                    later,
                    "metric_source takes either command or url, not both; keep the one that gives the number",
                );
                MetricReading::Command(CommandSpec::Argv(Vec::new()))
            }
            (None, None) => {
                self.problem(
                    service.span(),
                    format!("[service.{name}.metric_source] says neither where to read the number; {example}"),
                );
                MetricReading::Command(CommandSpec::Argv(Vec::new()))
            }
            (Some(command), None) => {
                if let Some(p) = &raw.json_pointer {
                    self.problem(
                        p.span(),
                        "metric_source.json_pointer applies to a url; a command prints the number itself, so remove it",
                    );
                }
                MetricReading::Command(self.metric_command(command))
            }
            (None, Some(url)) => {
                if let Err(e) = check_url(url.get_ref()) {
                    self.problem(url.span(), format!("metric_source.url: {e}"));
                }
                let json_pointer = match raw.json_pointer {
                    None => String::new(),
                    Some(p) => {
                        let v = p.get_ref();
                        if !v.is_empty() && !v.starts_with('/') {
                            let fix = format!("/{}", v.replace('.', "/"));
                            self.problem(
                                p.span(),
                                format!(
                                    r#"metric_source.json_pointer is a JSON pointer: it starts with '/', e.g. "{fix}" (or "" for a body that is just the number)"#
                                ),
                            );
                        }
                        p.into_inner()
                    }
                };
                MetricReading::Http { url: url.into_inner(), json_pointer }
            }
        };
        MetricSource { reading, interval }
    }

    /// `prometheus` + `query`, alone: `None` when the table uses neither.
    fn prometheus_source(&mut self, service: &Spanned<String>, raw: &RawMetricSource) -> Option<MetricReading> {
        let name = service.get_ref();
        match (&raw.prometheus, &raw.query) {
            (None, None) => None,
            (Some(server), Some(query)) => {
                for other in
                    [raw.command.as_ref().map(|c| c.span()), raw.url.as_ref().map(|u| u.span())].into_iter().flatten()
                {
                    self.problem(
                        other,
                        "metric_source takes one of command, url or prometheus; keep the one that gives the number",
                    );
                }
                if let Some(p) = &raw.json_pointer {
                    self.problem(
                        p.span(),
                        "metric_source.json_pointer applies to a url; Prometheus answers one sample, so remove it",
                    );
                }
                if let Err(e) = check_url(server.get_ref()) {
                    self.problem(server.span(), format!("metric_source.prometheus: {e}"));
                }
                if query.get_ref().trim().is_empty() {
                    self.problem(query.span(), r#"metric_source.query is empty; give a PromQL query with one result, e.g. "sum(rabbitmq_queue_messages)""#);
                }
                Some(MetricReading::Prometheus {
                    server: server.get_ref().trim_end_matches('/').to_string(),
                    query: query.get_ref().clone(),
                })
            }
            (Some(server), None) => {
                self.problem(server.span(), format!(r#"[service.{name}.metric_source] has prometheus but no query; add query = "sum(rabbitmq_queue_messages)" (a PromQL query with one result)"#));
                Some(MetricReading::Command(CommandSpec::Argv(Vec::new())))
            }
            (None, Some(query)) => {
                self.problem(query.span(), format!(r#"[service.{name}.metric_source] has a query but no prometheus server; add prometheus = "http://127.0.0.1:9090""#));
                Some(MetricReading::Command(CommandSpec::Argv(Vec::new())))
            }
        }
    }

    fn metric_command(&mut self, raw: Spanned<Command>) -> CommandSpec {
        let span = raw.span();
        let empty =
            r#"metric_source.command is empty; give a command that prints the number, e.g. "redis-cli llen jobs""#;
        match raw.into_inner() {
            Command::Shell(s) => {
                if s.trim().is_empty() {
                    self.problem(span, empty);
                } else if s.contains('\0') {
                    self.problem(span, "metric_source.command contains a NUL character; remove it");
                }
                CommandSpec::Shell(s)
            }
            Command::Argv(argv) => {
                if argv.first().is_none_or(|a| a.trim().is_empty()) {
                    self.problem(span, empty);
                } else if argv.iter().any(|a| a.contains('\0')) {
                    self.problem(span, "metric_source.command contains a NUL character; remove it");
                }
                CommandSpec::Argv(argv)
            }
        }
    }

    /// `[service.NAME.chaos]`: present means on; `interrupt_every` required.
    pub(super) fn chaos(&mut self, service: &Spanned<String>, raw: RawChaos) -> ChaosConfig {
        let notice = self.positive("chaos.notice", &raw.notice, ChaosConfig::DEFAULT_NOTICE);
        let every = match &raw.interrupt_every {
            None => {
                let span = raw.notice.as_ref().map_or(service.span(), |n| n.span());
                self.problem(
                    span,
                    format!(
                        r#"[service.{}.chaos] needs interrupt_every, how often on average a random replica is interrupted, e.g. interrupt_every = "10m"; remove the table to turn chaos off"#,
                        service.get_ref()
                    ),
                );
                Duration::from_secs(600)
            }
            Some(e) if e.get_ref().0 < ChaosConfig::MIN_INTERRUPT_EVERY => {
                self.problem(
                    e.span(),
                    format!(
                        "chaos.interrupt_every must be at least {}: chaos is for tests and demos, not for taking a fleet down",
                        human(ChaosConfig::MIN_INTERRUPT_EVERY)
                    ),
                );
                Duration::from_secs(600)
            }
            Some(e) => e.get_ref().0,
        };
        ChaosConfig { interrupt_every: every, notice }
    }
}

/// A plain-HTTP URL with a host: `http://127.0.0.1:9000/stats`.
fn check_url(url: &str) -> Result<(), String> {
    let example = r#"e.g. "http://127.0.0.1:9000/stats""#;
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            return Err(format!(
                "https is not supported: ebb reads metric sources over plain HTTP; use an http:// address ({example})"
            ));
        }
        return Err(format!("{url:?} is not an http:// URL; {example}"));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL must not contain spaces or control characters; percent-encode them (%20)".into());
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{url:?} has no host; {example}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http_with_a_host() {
        assert!(check_url("http://127.0.0.1:9000/stats").is_ok());
        assert!(check_url("http://queue.internal/len?q=jobs").is_ok());
        assert!(check_url("https://x/").unwrap_err().starts_with("https is not supported"));
        assert!(check_url("127.0.0.1:9000").unwrap_err().contains("not an http:// URL"));
        assert!(check_url("http:///stats").unwrap_err().contains("no host"));
        assert!(check_url("http://a b/").unwrap_err().contains("spaces"));
    }
}
