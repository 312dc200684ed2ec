//! `GET /metrics`: the fleet in the Prometheus text format (0.0.4), or
//! OpenMetrics 1.0 when the scraper asks for it in `Accept` (Prometheus does).
//!
//! A fresh [`Registry`] is built at each scrape from the services' status
//! snapshots, the balancer's atomic counters and the event log: no global
//! registry, so parallel tests and several ebb instances in one process stay
//! independent. Counters stay monotonic across scrapes because their
//! sources are (per-replica atomics, and [`EventTally`], which counts each
//! event once however long the bounded log keeps it).
//!
//! docs/metrics.md lists every metric; keep it in step.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::App;
use crate::controller::ServiceHandle;
use crate::events::{Event, EventKind};

type Labels = Vec<(&'static str, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// Counts derived from the event log, each event counted once.
#[derive(Debug, Default)]
pub struct EventTally {
    /// Highest event sequence number counted.
    last_seq: u64,
    /// (service, direction, policy) -> changes of desired capacity.
    scaling: BTreeMap<(String, &'static str, String), u64>,
    /// (service, kind) -> events.
    kinds: BTreeMap<(String, String), u64>,
}

impl EventTally {
    /// Counts the events not counted yet (`events` sorted by `seq`).
    pub fn absorb(&mut self, events: &[Event]) {
        for e in events {
            if e.seq <= self.last_seq {
                continue;
            }
            self.last_seq = e.seq;
            let kind = match serde_json::to_value(e.kind) {
                Ok(serde_json::Value::String(s)) => s,
                _ => e.kind.as_str().to_string(),
            };
            *self.kinds.entry((e.service.clone(), kind)).or_default() += 1;
            if e.kind == EventKind::Scaled {
                if let (Some(from), Some(to)) = (e.from, e.to) {
                    if from != to {
                        let direction = if to > from { "out" } else { "in" };
                        let key = (e.service.clone(), direction, policy_of(&e.reason));
                        *self.scaling.entry(key).or_default() += 1;
                    }
                }
            }
        }
    }

    /// A tally that counts only events after `seq` (those of this run,
    /// when the log continues an earlier run's).
    pub fn after(seq: u64) -> Self {
        Self { last_seq: seq, ..Self::default() }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

/// The policy named in a `scaled` event's reason: `scale out 2 -> 3 by
/// target-cpu: ...` -> `target-cpu`; a manual change (`desired 2 -> 3:
/// manual ...`) -> `manual`.
// lead: if `Event` gains a `policy` field, read it here instead of parsing.
pub fn policy_of(reason: &str) -> String {
    if reason.starts_with("scale ") || reason.starts_with("stay ") {
        if let Some((_, rest)) = reason.split_once(" by ") {
            let name = rest.split(':').next().unwrap_or("").trim();
            if !name.is_empty() && !name.contains(' ') {
                return name.to_string();
            }
        }
    }
    if reason.starts_with("desired ") {
        return "manual".to_string();
    }
    "unknown".to_string()
}

/// One histogram series given as sum, count and per-bucket counts (the last
/// bound `+Inf`), for data kept outside prometheus-client (the balancer's
/// latency histograms).
#[derive(Debug, Clone)]
pub struct HistogramSeries {
    pub labels: Labels,
    pub sum: f64,
    pub count: u64,
    /// (upper bound, observations in this bucket only), ascending.
    pub buckets: Vec<(f64, u64)>,
}

/// A histogram family of [`HistogramSeries`], encoded as one metric family.
#[derive(Debug)]
pub struct ConstHistograms {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub series: Vec<HistogramSeries>,
}

impl prometheus_client::collector::Collector for ConstHistograms {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), MetricType::Histogram)?;
        for s in &self.series {
            family.encode_family(&s.labels)?.encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)?;
        }
        Ok(())
    }
}

/// Bucket bounds of the latency histograms, seconds.
const LATENCY_BUCKETS_S: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn series(labels: Labels, counts: &crate::metrics::histogram::LatencyCounts) -> HistogramSeries {
    let (sum, count, buckets) = counts.coarse_buckets(&LATENCY_BUCKETS_S);
    HistogramSeries { labels, sum, count, buckets }
}

/// Request latency histograms of one service: per replica (since it
/// joined) and for the whole service (since ebb started); and the service's
/// queue time (waiting for a replica).
fn latency_series(handle: &ServiceHandle) -> (Vec<HistogramSeries>, Vec<HistogramSeries>, Vec<HistogramSeries>) {
    let replicas = handle
        .backends()
        .into_iter()
        .map(|(id, backend)| series(rep(&handle.name, &id), &backend.latency.snapshot()))
        .collect();
    let total = handle.proxy.latency_total();
    let queue = handle.proxy.queue_time_total();
    (replicas, vec![series(svc(&handle.name), &total)], vec![series(svc(&handle.name), &queue)])
}

/// Every ebb metric, registered on a fresh registry.
struct Metrics {
    service_desired: Family<Labels, Gauge>,
    service_min: Family<Labels, Gauge>,
    service_max: Family<Labels, Gauge>,
    service_in_service: Family<Labels, Gauge>,
    service_pending: Family<Labels, Gauge>,
    service_version: Family<Labels, Gauge>,
    service_holding: Family<Labels, Gauge>,
    service_replicas: Family<Labels, Gauge>,
    service_replicas_health: Family<Labels, Gauge>,
    service_in_flight: Family<Labels, Gauge>,
    service_latency: Family<Labels, GaugeF>,
    service_cpu_mean: Family<Labels, GaugeF>,
    scaling_actions: Family<Labels, Counter>,
    health_transitions: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    replica_requests: Family<Labels, Counter>,
    replica_connect_failures: Family<Labels, Counter>,
    replica_in_flight: Family<Labels, Gauge>,
    replica_cpu: Family<Labels, GaugeF>,
    replica_memory: Family<Labels, Gauge>,
    replica_healthy: Family<Labels, Gauge>,
    replica_state: Family<Labels, Gauge>,
    replica_age: Family<Labels, GaugeF>,
    replica_protected: Family<Labels, Gauge>,
    auth_failures: Counter,
    auth_lockouts: Counter,
    service_offered: Family<Labels, Counter>,
    service_shed: Family<Labels, Counter>,
    service_queued: Family<Labels, Gauge>,
    service_at_limit: Family<Labels, Gauge>,
    service_saturated: Family<Labels, Gauge>,
    host_full: Family<Labels, Gauge>,
    host_busy: Family<Labels, GaugeF>,
    host_cpus: Family<Labels, GaugeF>,
    service_connections: Family<Labels, Gauge>,
    service_max_connections: Family<Labels, Gauge>,
    service_held: Family<Labels, Gauge>,
    service_holds: Family<Labels, Counter>,
    service_hold_released: Family<Labels, Counter>,
    service_hold_refused: Family<Labels, Counter>,
    service_cold_starts: Family<Labels, Counter>,
    service_connection_cap: Family<Labels, Counter>,
    service_client_errors: Family<Labels, Counter>,
    service_balancer_answers: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    service_retries: Family<Labels, Counter>,
    service_send_timeouts: Family<Labels, Counter>,
    service_http2_floods: Family<Labels, Counter>,
    replica_ejected: Family<Labels, Gauge>,
    listener_connections: Family<Labels, Gauge>,
    listener_max_connections: Family<Labels, Gauge>,
    listener_connection_cap: Family<Labels, Counter>,
    listener_unrouted: Family<Labels, Counter>,
    listener_local_answers: Family<Labels, Counter>,
    listener_rejected: Family<Labels, Counter>,
    listener_send_timeouts: Family<Labels, Counter>,
    listener_http2_floods: Family<Labels, Counter>,
    listener_tls_handshake_failures: Family<Labels, Counter>,
    listener_certificate_not_after: Family<Labels, Gauge>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            service_desired: Family::default(),
            service_min: Family::default(),
            service_max: Family::default(),
            service_in_service: Family::default(),
            service_pending: Family::default(),
            service_version: Family::default(),
            service_holding: Family::default(),
            service_replicas: Family::default(),
            service_replicas_health: Family::default(),
            service_in_flight: Family::default(),
            service_latency: Family::default(),
            service_cpu_mean: Family::default(),
            scaling_actions: Family::default(),
            health_transitions: Family::default(),
            events: Family::default(),
            replica_requests: Family::default(),
            replica_connect_failures: Family::default(),
            replica_in_flight: Family::default(),
            replica_cpu: Family::default(),
            replica_memory: Family::default(),
            replica_healthy: Family::default(),
            replica_state: Family::default(),
            replica_age: Family::default(),
            replica_protected: Family::default(),
            auth_failures: Counter::default(),
            auth_lockouts: Counter::default(),
            service_offered: Family::default(),
            service_shed: Family::default(),
            service_queued: Family::default(),
            service_at_limit: Family::default(),
            service_saturated: Family::default(),
            host_full: Family::default(),
            host_busy: Family::default(),
            host_cpus: Family::default(),
            service_connections: Family::default(),
            service_max_connections: Family::default(),
            service_held: Family::default(),
            service_holds: Family::default(),
            service_hold_released: Family::default(),
            service_hold_refused: Family::default(),
            service_cold_starts: Family::default(),
            service_connection_cap: Family::default(),
            service_client_errors: Family::default(),
            service_balancer_answers: Family::default(),
            requests: Family::default(),
            service_retries: Family::default(),
            service_send_timeouts: Family::default(),
            service_http2_floods: Family::default(),
            replica_ejected: Family::default(),
            listener_connections: Family::default(),
            listener_max_connections: Family::default(),
            listener_connection_cap: Family::default(),
            listener_unrouted: Family::default(),
            listener_local_answers: Family::default(),
            listener_rejected: Family::default(),
            listener_send_timeouts: Family::default(),
            listener_http2_floods: Family::default(),
            listener_tls_handshake_failures: Family::default(),
            listener_certificate_not_after: Family::default(),
        };
        let r = registry;
        r.register("service_desired_replicas", "Desired capacity of the service", m.service_desired.clone());
        r.register("service_min_replicas", "Lower bound of desired capacity", m.service_min.clone());
        r.register("service_max_replicas", "Upper bound of desired capacity", m.service_max.clone());
        r.register("service_in_service_replicas", "Replicas healthy and in the rotation", m.service_in_service.clone());
        r.register("service_pending_replicas", "Replicas started but not yet in service", m.service_pending.clone());
        r.register("service_version", "Current spec version of the service", m.service_version.clone());
        r.register(
            "service_holding",
            "1 while something holds desired capacity (cooldown, stabilisation, max reached, crash-loop backoff)",
            m.service_holding.clone(),
        );
        r.register("service_replicas", "Replicas by lifecycle state", m.service_replicas.clone());
        r.register(
            "service_offered_requests",
            "Requests that arrived at the service's balancer, whatever became of them (offered load)",
            m.service_offered.clone(),
        );
        r.register(
            "service_shed_requests",
            "Requests the balancer answered 503 with Retry-After: queue full, or waited past queue_timeout",
            m.service_shed.clone(),
        );
        r.register(
            "service_queued_requests",
            "The most requests waiting in the balancer's queue at once in the last second",
            m.service_queued.clone(),
        );
        r.register(
            "service_replicas_at_limit",
            "Routable replicas holding max_in_flight requests",
            m.service_at_limit.clone(),
        );
        r.register(
            "service_saturated",
            "1 while requests queue or are shed at the balancer (no scale-in while 1, nor for the settle time after)",
            m.service_saturated.clone(),
        );
        r.register(
            "host_full",
            "1 while ebb's host is full (CPUs busy >= 90% over 5 s): more local replicas add no capacity",
            m.host_full.clone(),
        );
        r.register(
            "host_busy_cpus",
            "CPUs' worth of time busy on ebb's host over the last second",
            m.host_busy.clone(),
        );
        r.register("host_cpus", "CPUs ebb may use on its host", m.host_cpus.clone());
        r.register(
            "service_client_connections",
            "Client connections open at the service's balancer",
            m.service_connections.clone(),
        );
        r.register(
            "service_max_connections",
            "The balancer's cap on client connections (max_connections); at the cap new clients wait in the listen backlog",
            m.service_max_connections.clone(),
        );
        r.register(
            "service_held_requests",
            "Requests held at the balancer now while the service wakes from idle ([idle])",
            m.service_held.clone(),
        );
        r.register("service_holds", "Requests ever held while the service woke from idle", m.service_holds.clone());
        r.register(
            "service_hold_released_requests",
            "Held requests that a woken replica took (the rest were refused)",
            m.service_hold_released.clone(),
        );
        r.register(
            "service_hold_refused_requests",
            "Requests the hold answered 503 with Retry-After: over max_held, past hold_timeout, a failed wake and its backoff, an ignored user agent while idle",
            m.service_hold_refused.clone(),
        );
        r.register(
            "service_cold_starts",
            "Wakes from idle that ended with a replica taking requests",
            m.service_cold_starts.clone(),
        );
        r.register(
            "service_connection_cap_reached",
            "Times the balancer reached max_connections and stopped accepting",
            m.service_connection_cap.clone(),
        );
        r.register(
            "service_client_errors",
            "Requests whose client broke or stalled its body (400, 408): never counted against a replica",
            m.service_client_errors.clone(),
        );
        r.register(
            "service_balancer_answers",
            "Requests the balancer answered itself, by status class and reason: no_replica (503), shed (503 + Retry-After), upstream_error (502), upstream_timeout (504), rejected (400/405/431/501: framing, Host, CONNECT)",
            m.service_balancer_answers.clone(),
        );
        r.register(
            "requests",
            "Every answer of a service's balancer, by who gave it (source: replica or balancer), status class and reason (answered for a replica; no_replica, shed, upstream_error, upstream_timeout, rejected, client_body, hold_refused for the balancer)",
            m.requests.clone(),
        );
        r.register(
            "service_retries",
            "Requests sent again to another replica after a connect failure",
            m.service_retries.clone(),
        );
        r.register(
            "service_send_timeouts",
            "Client connections cut because the client stopped reading for send_timeout",
            m.service_send_timeouts.clone(),
        );
        r.register(
            "service_http2_floods",
            "HTTP/2 client connections closed for flooding (resets or control frames past ebb's bounds)",
            m.service_http2_floods.clone(),
        );
        r.register(
            "replica_ejected",
            "1 while passive outlier detection keeps the replica out of the rotation",
            m.replica_ejected.clone(),
        );
        r.register("service_replicas_by_health", "Replicas by health-check state", m.service_replicas_health.clone());
        r.register(
            "service_in_flight_requests",
            "Requests in flight to the service's replicas",
            m.service_in_flight.clone(),
        );
        r.register_with_unit(
            "service_latency",
            "Request latency percentile over the last second (interim, until the latency histogram)",
            Unit::Seconds,
            m.service_latency.clone(),
        );
        r.register(
            "service_cpu_mean_percent",
            "Mean CPU of the service's replicas over the last second, percent of their allotment",
            m.service_cpu_mean.clone(),
        );
        r.register(
            "scaling_actions",
            "Changes of desired capacity by direction (out, in) and the policy that made them (manual for the API and CLI)",
            m.scaling_actions.clone(),
        );
        r.register(
            "health_check_transitions",
            "Replicas passing (healthy) or failing (unhealthy) enough consecutive health checks to change state",
            m.health_transitions.clone(),
        );
        r.register("events", "Events recorded in the event log, by kind", m.events.clone());
        r.register(
            "replica_requests",
            "Requests answered by a replica by status class (5xx, other = 1xx-4xx)",
            m.replica_requests.clone(),
        );
        r.register(
            "replica_connect_failures",
            "Connection attempts to a replica that failed",
            m.replica_connect_failures.clone(),
        );
        r.register(
            "replica_in_flight_requests",
            "Requests sent to a replica and not yet answered",
            m.replica_in_flight.clone(),
        );
        r.register(
            "replica_cpu_percent",
            "CPU of a replica over the last second, percent of its allotment",
            m.replica_cpu.clone(),
        );
        r.register_with_unit(
            "replica_memory_rss",
            "Resident memory of a replica's processes",
            Unit::Bytes,
            m.replica_memory.clone(),
        );
        r.register(
            "replica_healthy",
            "1 if the replica is routable (in service, healthy, not leaving)",
            m.replica_healthy.clone(),
        );
        r.register("replica_state", "1 for the replica's current lifecycle state", m.replica_state.clone());
        r.register_with_unit("replica_age", "Time since the replica was started", Unit::Seconds, m.replica_age.clone());
        r.register("replica_protected", "1 if the replica is protected from scale-in", m.replica_protected.clone());
        r.register(
            "listener_client_connections",
            "Client connections open at a [listener.NAME]'s address (label address: listen, or http for a TLS listener's plain-HTTP address)",
            m.listener_connections.clone(),
        );
        r.register(
            "listener_max_connections",
            "The listener's cap on client connections (max_connections); at the cap new clients wait in the listen backlog",
            m.listener_max_connections.clone(),
        );
        r.register(
            "listener_connection_cap_reached",
            "Times the listener reached max_connections and stopped accepting",
            m.listener_connection_cap.clone(),
        );
        r.register(
            "listener_unrouted_requests",
            "Requests that matched none of the listener's routes (answered 404)",
            m.listener_unrouted.clone(),
        );
        r.register(
            "listener_local_answers",
            "Requests the address answered itself: on listen the 404s of no route, on http every request (308 redirect, ACME HTTP-01 answer, 400 without Host)",
            m.listener_local_answers.clone(),
        );
        r.register(
            "listener_rejected_requests",
            "Requests the listener refused itself before routing them (framing, Host, oversized head)",
            m.listener_rejected.clone(),
        );
        r.register(
            "listener_send_timeouts",
            "Client connections of the listener cut because the client stopped reading for send_timeout",
            m.listener_send_timeouts.clone(),
        );
        r.register(
            "listener_http2_floods",
            "HTTP/2 client connections of the listener closed for flooding (resets or control frames past ebb's bounds)",
            m.listener_http2_floods.clone(),
        );
        r.register(
            "listener_tls_handshake_failures",
            "TLS handshakes that failed or did not finish within header_read_timeout (TLS listeners)",
            m.listener_tls_handshake_failures.clone(),
        );
        r.register_with_unit(
            "listener_certificate_not_after",
            "When a certificate the listener serves expires, Unix time (label certificate: its first name)",
            Unit::Seconds,
            m.listener_certificate_not_after.clone(),
        );
        r.register("admin_auth_failures", "Admin API calls refused for a wrong token", m.auth_failures.clone());
        r.register(
            "admin_auth_lockouts",
            "Admin API calls refused because their client sent too many wrong tokens",
            m.auth_lockouts.clone(),
        );
        m
    }
}

fn svc(name: &str) -> Labels {
    vec![("service", name.to_string())]
}

fn rep(service: &str, id: &str) -> Labels {
    vec![("service", service.to_string()), ("replica", id.to_string())]
}

/// Builds the registry for one scrape.
pub(crate) fn build_registry(app: &App) -> Registry {
    let mut registry = Registry::with_prefix("ebb");
    registry.register("build", "ebb's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]));
    let m = Metrics::register(&mut registry);

    {
        let mut tally = app.tally.lock().unwrap_or_else(|p| p.into_inner());
        let last = tally.last_seq();
        tally.absorb(&app.state.events.list(None, last));
        for ((service, direction, policy), n) in &tally.scaling {
            let labels =
                vec![("service", service.clone()), ("direction", direction.to_string()), ("policy", policy.clone())];
            m.scaling_actions.get_or_create(&labels).inc_by(*n);
        }
        for ((service, kind), n) in &tally.kinds {
            m.events.get_or_create(&vec![("service", service.clone()), ("kind", kind.clone())]).inc_by(*n);
            let result = match kind.as_str() {
                "replica_in_service" => "healthy",
                "replica_unhealthy" => "unhealthy",
                _ => continue,
            };
            m.health_transitions
                .get_or_create(&vec![("service", service.clone()), ("result", result.to_string())])
                .inc_by(*n);
        }
    }
    {
        let limiter = app.limiter.lock().unwrap_or_else(|p| p.into_inner());
        m.auth_failures.inc_by(limiter.total_failures);
        m.auth_lockouts.inc_by(limiter.total_lockouts);
    }

    listener_metrics(&m, &app.state.listeners.load().readings());

    let (mut latency, mut service_latency, mut queue_time) = (Vec::new(), Vec::new(), Vec::new());
    let mut hold_wait = Vec::new();
    for handle in app.state.services.values().iter() {
        let status = handle.status();
        let name = status.name.as_str();
        let l = svc(name);
        m.service_desired.get_or_create(&l).set(status.desired as i64);
        m.service_min.get_or_create(&l).set(status.min as i64);
        m.service_max.get_or_create(&l).set(status.max as i64);
        m.service_in_service.get_or_create(&l).set(status.in_service as i64);
        m.service_pending.get_or_create(&l).set(status.pending as i64);
        m.service_version.get_or_create(&l).set(status.version as i64);
        m.service_holding.get_or_create(&l).set(status.holding.is_some() as i64);
        // The balancer's own counters, read once (a worker pool has none).
        if let Some(d) = &status.saturation {
            let stats = handle.proxy.stats.snapshot();
            m.service_offered.get_or_create(&l).inc_by(stats.requests);
            m.service_shed.get_or_create(&l).inc_by(stats.shed);
            m.service_queued.get_or_create(&l).set(i64::from(d.queued));
            m.service_at_limit.get_or_create(&l).set(i64::from(d.at_limit));
            m.service_saturated.get_or_create(&l).set(d.saturated as i64);
            m.service_connections.get_or_create(&l).set(stats.open_connections.min(i64::MAX as u64) as i64);
            if let Some(max) = handle.proxy.peek().config.max_connections {
                m.service_max_connections.get_or_create(&l).set(i64::from(max));
            }
            m.service_connection_cap.get_or_create(&l).inc_by(stats.connection_cap_reached);
            m.service_client_errors.get_or_create(&l).inc_by(stats.client_errors);
            for (class, reason, count) in [
                ("5xx", "no_replica", stats.no_backend),
                ("5xx", "shed", stats.shed),
                ("5xx", "upstream_error", stats.upstream_errors),
                ("5xx", "upstream_timeout", stats.upstream_timeouts),
                ("4xx", "rejected", stats.rejected),
            ] {
                let mut labels = l.clone();
                labels.extend([("code_class", class.to_string()), ("reason", reason.to_string())]);
                m.service_balancer_answers.get_or_create(&labels).inc_by(count);
            }
            let held_refused = handle.proxy.hold.refused.load(Ordering::Relaxed);
            for (source, class, reason, count) in [
                ("balancer", "5xx", "no_replica", stats.no_backend),
                ("balancer", "5xx", "shed", stats.shed),
                ("balancer", "5xx", "upstream_error", stats.upstream_errors),
                ("balancer", "5xx", "upstream_timeout", stats.upstream_timeouts),
                ("balancer", "5xx", "hold_refused", held_refused),
                ("balancer", "4xx", "rejected", stats.rejected),
                ("balancer", "4xx", "client_body", stats.client_errors),
            ]
            .into_iter()
            .chain(
                ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .into_iter()
                    .zip(stats.replica_answers)
                    .map(|(class, count)| ("replica", class, "answered", count)),
            ) {
                let mut labels = l.clone();
                labels.extend([
                    ("source", source.to_string()),
                    ("code_class", class.to_string()),
                    ("reason", reason.to_string()),
                ]);
                m.requests.get_or_create(&labels).inc_by(count);
            }
            m.service_retries.get_or_create(&l).inc_by(stats.retries);
            m.service_send_timeouts.get_or_create(&l).inc_by(stats.send_timeouts);
            m.service_http2_floods.get_or_create(&l).inc_by(stats.http2_floods);
        }
        if handle.proxy.idle_config().is_some() {
            let hold = &handle.proxy.hold;
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            m.service_held.get_or_create(&l).set(hold.held().min(i64::MAX as u64) as i64);
            m.service_holds.get_or_create(&l).inc_by(get(&hold.held_total));
            m.service_hold_released.get_or_create(&l).inc_by(get(&hold.released));
            let (sum, count, buckets) = hold.hold_wait_histogram();
            hold_wait.push(HistogramSeries { labels: l.clone(), sum, count, buckets });
            m.service_hold_refused.get_or_create(&l).inc_by(get(&hold.refused));
            m.service_cold_starts.get_or_create(&l).inc_by(get(&hold.cold_starts));
        }
        if let Some(h) = &status.host {
            m.host_full.get_or_create(&l).set(h.full as i64);
            m.host_busy.get_or_create(&l).set(h.busy_cpus);
            m.host_cpus.get_or_create(&l).set(h.cpus);
        }
        let mut by_state: BTreeMap<&str, i64> =
            ["starting", "in_service", "draining", "stopped", "failed", "warm_pool"]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
        let mut by_health: BTreeMap<String, i64> =
            ["healthy", "unhealthy", "unknown"].into_iter().map(|s| (s.to_string(), 0)).collect();
        let mut in_flight = 0i64;

        // 5xx counts come from the balancer's Backend of each routable
        // replica. lead: per-class counters (2xx/3xx/4xx) on Backend would
        // let `class` split further; see ProxyStats for balancer-made answers.
        let backends: HashMap<String, (u64, u64)> = handle
            .proxy
            .routable()
            .iter()
            .map(|b| {
                (
                    b.replica_id.clone(),
                    (b.server_errors.load(Ordering::Relaxed), b.connect_failures.load(Ordering::Relaxed)),
                )
            })
            .collect();

        for r in &status.replicas {
            let labels = rep(name, &r.id);
            // A warm pool member is beside the fleet, whatever its state.
            let state = if r.pooled && r.state != crate::status::ReplicaState::Draining {
                "warm_pool"
            } else {
                r.state.as_str()
            };
            *by_state.entry(state).or_default() += 1;
            *by_health.entry(r.health.clone()).or_default() += 1;
            in_flight += r.in_flight as i64;
            let (server_errors, connect_failures) = {
                let mut cache = app.replica_errors.lock().unwrap_or_else(|p| p.into_inner());
                let key = (name.to_string(), r.id.clone());
                match backends.get(&r.id) {
                    Some(v) => {
                        cache.insert(key, *v);
                        *v
                    }
                    // Out of the rotation now: its last known counts.
                    None => cache.get(&key).copied().unwrap_or((0, 0)),
                }
            };
            let server_errors = server_errors.min(r.requests);
            let class = |c: &str, n: u64| {
                let mut l = labels.clone();
                l.push(("class", c.to_string()));
                m.replica_requests.get_or_create(&l).inc_by(n);
            };
            class("5xx", server_errors);
            class("other", r.requests - server_errors);
            m.replica_connect_failures.get_or_create(&labels).inc_by(connect_failures);
            m.replica_in_flight.get_or_create(&labels).set(r.in_flight as i64);
            if let Some(cpu) = r.cpu.filter(|c| c.is_finite()) {
                m.replica_cpu.get_or_create(&labels).set(cpu);
            }
            if let Some(rss) = r.rss_bytes {
                m.replica_memory.get_or_create(&labels).set(rss.min(i64::MAX as u64) as i64);
            }
            m.replica_healthy.get_or_create(&labels).set(r.healthy as i64);
            let mut state = labels.clone();
            state.push(("state", r.state.as_str().to_string()));
            m.replica_state.get_or_create(&state).set(1);
            m.replica_age.get_or_create(&labels).set(if r.age_s.is_finite() { r.age_s } else { 0.0 });
            m.replica_protected.get_or_create(&labels).set(r.protected as i64);
            m.replica_ejected.get_or_create(&labels).set(r.ejected as i64);
        }
        {
            // Forget replicas that are gone for good.
            let mut cache = app.replica_errors.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|(service, id), _| service != name || status.replicas.iter().any(|r| &r.id == id));
        }
        for (state, n) in by_state {
            let mut l = l.clone();
            l.push(("state", state.to_string()));
            m.service_replicas.get_or_create(&l).set(n);
        }
        for (health, n) in by_health {
            let mut l = l.clone();
            l.push(("health", health));
            m.service_replicas_health.get_or_create(&l).set(n);
        }
        m.service_in_flight.get_or_create(&l).set(in_flight);
        if let Some(last) =
            handle.history.since(crate::clock::unix_ms(std::time::SystemTime::now()).saturating_sub(5_000)).last()
        {
            for (q, v) in [("0.5", last.p50_ms), ("0.99", last.p99_ms)] {
                if let Some(ms) = v.filter(|x| x.is_finite()) {
                    let mut l = l.clone();
                    l.push(("quantile", q.to_string()));
                    m.service_latency.get_or_create(&l).set(ms / 1000.0);
                }
            }
            if let Some(cpu) = last.cpu_mean.filter(|x| x.is_finite()) {
                m.service_cpu_mean.get_or_create(&l).set(cpu);
            }
        }
        let (replicas, service, queue) = latency_series(handle);
        latency.extend(replicas);
        service_latency.extend(service);
        queue_time.extend(queue);
    }
    for (name, help, series) in [
        (
            "replica_request_duration",
            "Time from receiving a request to the replica's response head, per replica since it joined",
            latency,
        ),
        (
            "service_request_duration",
            "Time from receiving a request to the replica's response head, whole service since ebb started",
            service_latency,
        ),
        ("service_queue_duration", "Time a request waited for a replica (max_in_flight queue, connect)", queue_time),
        (
            "service_hold_wait",
            "Time the released held requests waited while the service woke from idle ([idle]), since ebb started",
            hold_wait,
        ),
    ] {
        if !series.is_empty() {
            registry.register_collector(Box::new(ConstHistograms { name, help, unit: Some(Unit::Seconds), series }));
        }
    }
    registry
}

/// The `[listener.NAME]` tables' own counters (routed requests count at
/// their service), per address (`listen`, and `http` for a TLS listener's
/// plain-HTTP address), and each certificate's expiry.
fn listener_metrics(m: &Metrics, readings: &[crate::listeners::ListenerReading]) {
    for reading in readings {
        let l = vec![("listener", reading.name.clone()), ("address", reading.address.as_str().to_string())];
        let stats = &reading.stats;
        m.listener_connections.get_or_create(&l).set(stats.open_connections.min(i64::MAX as u64) as i64);
        if let Some(max) = reading.max_connections {
            m.listener_max_connections.get_or_create(&l).set(i64::from(max));
        }
        m.listener_connection_cap.get_or_create(&l).inc_by(stats.connection_cap_reached);
        m.listener_local_answers.get_or_create(&l).inc_by(stats.requests);
        m.listener_rejected.get_or_create(&l).inc_by(stats.rejected);
        m.listener_send_timeouts.get_or_create(&l).inc_by(stats.send_timeouts);
        m.listener_http2_floods.get_or_create(&l).inc_by(stats.http2_floods);
        if reading.address == crate::listeners::Address::Listen {
            // Only `listen` routes.
            m.listener_unrouted.get_or_create(&l).inc_by(reading.unrouted);
        }
        if !reading.tls {
            continue;
        }
        m.listener_tls_handshake_failures.get_or_create(&l).inc_by(stats.tls_handshake_failures);
        // Two certificates with the same first name: the earlier expiry,
        // so an alert on it still fires in time.
        let mut expiries: BTreeMap<&str, i64> = BTreeMap::new();
        for (name, not_after) in &reading.certificates {
            let seconds = match not_after.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(_) => 0,
            };
            let entry = expiries.entry(name.as_str()).or_insert(seconds);
            *entry = (*entry).min(seconds);
        }
        for (name, seconds) in expiries {
            let labels = vec![("listener", reading.name.clone()), ("certificate", name.to_string())];
            m.listener_certificate_not_after.get_or_create(&labels).set(seconds);
        }
    }
}

/// Whether the scraper prefers OpenMetrics (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,...`).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// The standard `process_*` metrics of ebb itself (no `ebb_` prefix, as
/// every exporter names them).
fn process_registry() -> Registry {
    let mut registry = Registry::default();
    let r = crate::metrics::process::ProcessReading::now();
    if let Some(v) = r.cpu_seconds {
        let c = Counter::<f64, AtomicU64>::default();
        c.inc_by(v);
        registry.register_with_unit("process_cpu", "User and system CPU time spent by ebb", Unit::Seconds, c);
    }
    let gauge = |registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, v: Option<f64>| {
        if let Some(v) = v {
            let g = GaugeF::default();
            g.set(v);
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, g),
                None => registry.register(name, help, g),
            }
        }
    };
    gauge(
        &mut registry,
        "process_resident_memory",
        "ebb's resident memory",
        Some(Unit::Bytes),
        r.resident_bytes.map(|v| v as f64),
    );
    gauge(
        &mut registry,
        "process_virtual_memory",
        "ebb's virtual memory",
        Some(Unit::Bytes),
        r.virtual_bytes.map(|v| v as f64),
    );
    gauge(&mut registry, "process_open_fds", "Open file descriptors of ebb", None, r.open_fds.map(|v| v as f64));
    gauge(&mut registry, "process_max_fds", "ebb's open-file limit (soft)", None, r.max_fds.map(|v| v as f64));
    gauge(
        &mut registry,
        "process_start_time",
        "When ebb started, since the Unix epoch",
        Some(Unit::Seconds),
        r.start_time_seconds,
    );
    registry
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let registry = build_registry(&app);
    let process = process_registry();
    let mut body = String::new();
    let (result, content_type) = if wants_openmetrics(&headers) {
        let mut text = || -> Result<(), std::fmt::Error> {
            prometheus_client::encoding::text::encode_registry(&mut body, &registry)?;
            prometheus_client::encoding::text::encode_registry(&mut body, &process)?;
            prometheus_client::encoding::text::encode_eof(&mut body)
        };
        (text(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else {
        let mut text = || -> Result<(), std::fmt::Error> {
            prometheus_client::encoding::prometheus_text::encode(&mut body, &registry)?;
            prometheus_client::encoding::prometheus_text::encode(&mut body, &process)
        };
        (text(), prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
    };
    match result {
        Ok(()) => ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response(),
        Err(_) => super::ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventLog, NewEvent};

    #[test]
    fn policies_are_read_from_scaled_reasons() {
        assert_eq!(policy_of("scale out 2 -> 3 by target-cpu: mean 92% vs 80%"), "target-cpu");
        assert_eq!(
            policy_of("scale in 3 -> 2 by cpu-low: mean 12% < 60% for 10 periods; capped: min 2 reached"),
            "cpu-low"
        );
        assert_eq!(policy_of("desired 2 -> 3: manual (API)"), "manual");
        assert_eq!(policy_of("something else"), "unknown");
    }

    #[test]
    fn the_tally_counts_each_event_once_and_only_real_changes() {
        let log = EventLog::new(100);
        log.record(NewEvent::new("web", EventKind::Scaled, "desired 2 -> 3: manual (API)").change(2, 3));
        log.record(
            NewEvent::new("web", EventKind::Scaled, "desired 3 -> 3: manual; capped: max 3 reached").change(3, 3),
        );
        log.record(NewEvent::new("web", EventKind::ReplicaInService, "in service").replica("web-1"));
        let mut tally = EventTally::default();
        tally.absorb(&log.list(None, 0));
        tally.absorb(&log.list(None, 0));
        log.record(NewEvent::new("web", EventKind::Scaled, "scale in 3 -> 2 by cpu-low: x").change(3, 2));
        tally.absorb(&log.list(None, tally.last_seq()));
        assert_eq!(tally.scaling.get(&("web".into(), "out", "manual".into())), Some(&1));
        assert_eq!(tally.scaling.get(&("web".into(), "in", "cpu-low".into())), Some(&1));
        assert_eq!(tally.scaling.len(), 2);
        assert_eq!(tally.kinds.get(&("web".into(), "scaled".into())), Some(&3));
        assert_eq!(tally.kinds.get(&("web".into(), "replica_in_service".into())), Some(&1));
    }

    #[test]
    fn listeners_export_their_own_counters_and_certificate_expiry() {
        use crate::listeners::{Address, ListenerReading};
        let mut registry = Registry::with_prefix("ebb");
        let m = Metrics::register(&mut registry);
        let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let stats = crate::proxy::ProxyStatsSnapshot {
            open_connections: 3,
            connection_cap_reached: 1,
            send_timeouts: 2,
            http2_floods: 4,
            tls_handshake_failures: 5,
            ..Default::default()
        };
        let readings = [
            ListenerReading {
                name: "public".into(),
                address: Address::Listen,
                stats,
                max_connections: Some(1000),
                unrouted: 7,
                tls: true,
                certificates: vec![
                    ("www.example.com".into(), at(1_900_000_000)),
                    ("api.example.com".into(), at(1_800_000_000)),
                    ("www.example.com".into(), at(1_850_000_000)),
                ],
            },
            ListenerReading {
                name: "public".into(),
                address: Address::Http,
                stats: crate::proxy::ProxyStatsSnapshot { requests: 9, open_connections: 1, ..Default::default() },
                max_connections: Some(1000),
                unrouted: 0,
                tls: false,
                certificates: Vec::new(),
            },
            ListenerReading {
                name: "plain".into(),
                address: Address::Listen,
                stats: Default::default(),
                max_connections: None,
                unrouted: 0,
                tls: false,
                certificates: Vec::new(),
            },
        ];
        listener_metrics(&m, &readings);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in [
            r#"ebb_listener_client_connections{listener="public",address="listen"} 3"#,
            r#"ebb_listener_max_connections{listener="public",address="listen"} 1000"#,
            r#"ebb_listener_connection_cap_reached_total{listener="public",address="listen"} 1"#,
            r#"ebb_listener_unrouted_requests_total{listener="public",address="listen"} 7"#,
            r#"ebb_listener_send_timeouts_total{listener="public",address="listen"} 2"#,
            r#"ebb_listener_http2_floods_total{listener="public",address="listen"} 4"#,
            r#"ebb_listener_tls_handshake_failures_total{listener="public",address="listen"} 5"#,
            r#"ebb_listener_certificate_not_after_seconds{listener="public",certificate="api.example.com"} 1800000000"#,
            // The same first name twice: the earlier expiry.
            r#"ebb_listener_certificate_not_after_seconds{listener="public",certificate="www.example.com"} 1850000000"#,
            // The plain-HTTP address of the same listener, told apart.
            r#"ebb_listener_client_connections{listener="public",address="http"} 1"#,
            r#"ebb_listener_local_answers_total{listener="public",address="http"} 9"#,
            r#"ebb_listener_max_connections{listener="public",address="http"} 1000"#,
            r#"ebb_listener_unrouted_requests_total{listener="plain",address="listen"} 0"#,
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}:\n{out}");
        }
        assert!(!out.contains(r#"ebb_listener_tls_handshake_failures_total{listener="plain""#), "{out}");
        assert!(!out.contains(r#"ebb_listener_max_connections{listener="plain""#), "{out}");
        assert!(
            !out.lines()
                .any(|l| l.starts_with("ebb_listener_unrouted_requests_total") && l.contains(r#"address="http""#)),
            "http does not route: {out}"
        );
        assert!(
            !out.lines().any(|l| l.starts_with("ebb_listener_tls_handshake") && l.contains(r#"address="http""#)),
            "http is plain: {out}"
        );
    }

    #[test]
    fn const_histograms_encode_as_one_family() {
        let mut registry = Registry::with_prefix("ebb");
        registry.register_collector(Box::new(ConstHistograms {
            name: "replica_request_duration",
            help: "latency",
            unit: Some(Unit::Seconds),
            series: vec![
                HistogramSeries {
                    labels: rep("web", "a"),
                    sum: 0.5,
                    count: 3,
                    buckets: vec![(0.1, 2), (1.0, 1), (f64::INFINITY, 0)],
                },
                HistogramSeries {
                    labels: rep("web", "b"),
                    sum: 0.0,
                    count: 0,
                    buckets: vec![(0.1, 0), (f64::INFINITY, 0)],
                },
            ],
        }));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert_eq!(out.matches("# TYPE").count(), 1, "{out}");
        assert!(
            out.contains(r#"ebb_replica_request_duration_seconds_bucket{le="1.0",service="web",replica="a"} 3"#),
            "{out}"
        );
    }
}
