//! Once a second: the replicas' usage and the balancer's counters become a
//! `ServiceSample`, the `Autoscaler` (pure) decides, and its change is
//! applied with the event that explains it. Also the saturation and
//! host-full turns, the external metric, and manual scaling (the
//! autoscaler clamps it and starts its cooldown).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ebb_core::config::ServiceConfig;
use ebb_core::scaling::{self, Autoscaler, Bounds, Demand, FleetView, HostFull, ReplicaSample, ServiceSample, Shadow};

use super::command::ScaleOutcome;
use super::replicas::ReplicaSet;
use super::{Shared, SAMPLE_EVERY};
use crate::events::{EventKind, NewEvent};
use crate::metrics::cpu::{CpuMeter, GroupUsage};
use crate::metrics::history;
use crate::metrics::host::HostMonitor;
use crate::proxy::SecondLatencies;
use crate::status::{HostStatus, SaturationStatus};
use ebb_core::fleet;

/// The scaling side of one service's controller.
pub(super) struct Sampler {
    /// The scaling brain (pure); fed one sample a second.
    autoscaler: Autoscaler,
    /// The shadow policies' autoscaler: fed the same samples, asked every
    /// second, never applied (its changes become `shadow` events).
    shadow: Option<Shadow>,
    /// What holds the shadow's count, from its last decision.
    shadow_hold: Option<String>,
    /// Why the autoscaler is holding, from its last decision.
    policy_hold: Option<String>,
    cpu_meter: CpuMeter,
    /// Service-wide `requests` total at the last sample.
    service_requests_at_last_sample: u64,
    /// The balancer's arrivals and shed counters at the last sample.
    offered_at_last_sample: u64,
    shed_at_last_sample: u64,
    /// The balancer's (answers, 5xx answers) totals at the last sample.
    answers_at_last_sample: (u64, u64),
    /// Whether scale-in was frozen after the last decision (an event per turn).
    was_frozen: bool,
    host: Option<Arc<HostMonitor>>,
    /// The last second's demand and host, for status.
    last_demand: Option<SaturationStatus>,
    last_host: Option<HostStatus>,
    /// Whether the last second was saturated / the host full, so each
    /// turn is an event once.
    was_saturated: bool,
    was_host_full: bool,
    /// Latest external metric reading and when it was taken.
    external: Option<(Instant, f64)>,
    /// The metric source's last error, reported once until it recovers.
    external_error: Option<String>,
    /// Each predictive policy's vote of the last decision, for status.
    predictive_lines: Vec<String>,
    /// What each predictive policy was last told about its forecast (the
    /// model and whether it is trusted), so a change is one event.
    forecast_told: HashMap<String, String>,
    /// The last replicas' times from start to in service (at most 5).
    boots: std::collections::VecDeque<std::time::Duration>,
}

impl Sampler {
    pub(super) fn new(config: &ServiceConfig, host: Option<Arc<HostMonitor>>) -> Self {
        Sampler {
            autoscaler: Autoscaler::new(&config.scaling, config.replicas.bounds),
            shadow: Shadow::new(&config.scaling, config.replicas.bounds),
            shadow_hold: None,
            policy_hold: None,
            cpu_meter: CpuMeter::default(),
            service_requests_at_last_sample: 0,
            offered_at_last_sample: 0,
            shed_at_last_sample: 0,
            answers_at_last_sample: (0, 0),
            was_frozen: false,
            host,
            last_demand: None,
            last_host: None,
            was_saturated: false,
            was_host_full: false,
            external: None,
            external_error: None,
            boots: std::collections::VecDeque::new(),
            forecast_told: HashMap::new(),
            predictive_lines: Vec::new(),
        }
    }

    /// A new forecast of `metric` for the predictive policies reading it.
    /// Each reading policy's first forecast, a new model and a change of
    /// trust are `forecast` events: a `forecast_and_scale` policy that does
    /// not act says so where the operator looks, not only in `holding`.
    pub(super) fn set_forecast(&mut self, ctx: &Shared, metric: scaling::Metric, state: scaling::ForecastState) {
        let readers: Vec<(usize, scaling::PredictivePolicy)> = (self.autoscaler.config().predictive.iter().enumerate())
            .filter(|(_, p)| p.metric == metric)
            .map(|(i, p)| (i, p.clone()))
            .collect();
        let (key, what) = match &state {
            scaling::ForecastState::NotYet => return,
            scaling::ForecastState::TooLittleHistory(t) => ("too little history".to_string(), t.to_string()),
            scaling::ForecastState::Ready(f) => (format!("{} {}", f.model, f.trusted()), f.describe()),
        };
        let trusted = matches!(&state, scaling::ForecastState::Ready(f) if f.trusted());
        for (i, policy) in readers {
            self.autoscaler.set_forecast(i, state.clone());
            // The mode too: switching to forecast_and_scale says at once
            // whether the policy will act.
            let key = format!("{}:{}:{key}", policy.name, policy.mode);
            if self.forecast_told.get(&policy.name) == Some(&key) {
                continue;
            }
            self.forecast_told.insert(policy.name.clone(), key);
            let verdict = match (policy.mode, trusted) {
                (scaling::PredictiveMode::ForecastOnly, _) => "forecast_only: recorded and shown, not acted on",
                (_, true) => "it beat the naive baselines: acting on it",
                (_, false) => "NOT acting on it: the forecast has not beaten the naive baselines",
            };
            let text = format!("predictive {} ({}): {what}; {verdict}", policy.name, metric.as_str());
            ctx.record(NewEvent::new(&ctx.name, EventKind::Forecast, text));
        }
    }

    pub(super) fn predictive_lines(&self) -> &[String] {
        &self.predictive_lines
    }

    /// What each predictive policy's vote says: what it waits for, or what
    /// its forecast asks for (and whether that is applied).
    fn note_predictive(&mut self, decision: &scaling::Decision) {
        let policies = &self.autoscaler.config().predictive;
        self.predictive_lines.clear();
        for policy in policies {
            let Some(vote) = decision.votes.iter().find(|v| v.policy == policy.name) else { continue };
            let line = match &vote.outcome {
                scaling::PolicyOutcome::Pending(hold) if hold.why != vote.reason => {
                    format!("{} [{}]", hold.why, vote.reason)
                }
                scaling::PolicyOutcome::Pending(hold) => hold.why.clone(),
                _ => vote.reason.clone(),
            };
            self.predictive_lines.push(line);
        }
    }

    /// A replica reached service this long after its start: the median of
    /// the last five is the boot time predictive policies launch ahead by.
    pub(super) fn note_boot(&mut self, took: std::time::Duration) {
        if self.boots.len() == 5 {
            self.boots.pop_front();
        }
        self.boots.push_back(took);
        let mut sorted: Vec<_> = self.boots.iter().copied().collect();
        sorted.sort();
        self.autoscaler.set_boot_time(sorted[sorted.len() / 2]);
    }

    /// `ebb apply`: the new policies and bounds, keeping the metric
    /// history and cooldown clocks (`Autoscaler::reconfigure`).
    pub(super) fn reconfigure(&mut self, config: &ServiceConfig) {
        self.autoscaler.reconfigure(&config.scaling, config.replicas.bounds);
        self.shadow = Shadow::reconfigure(self.shadow.take(), &config.scaling, config.replicas.bounds);
        if self.shadow.is_none() {
            self.shadow_hold = None;
        }
    }

    /// The shadow policies' count and hold, for status; `None` without
    /// shadow policies or before their first decision.
    pub(super) fn shadow_status(&self) -> Option<crate::wire::ShadowStatus> {
        let shadow = self.shadow.as_ref()?;
        let config = shadow.autoscaler().config();
        let policies =
            config.target_tracking.iter().map(|p| p.name.clone()).chain(config.step.iter().map(|p| p.name.clone()));
        Some(crate::wire::ShadowStatus {
            policies: policies.collect(),
            desired: shadow.desired()?,
            holding: self.shadow_hold.clone(),
        })
    }

    pub(super) fn bounds(&self) -> Bounds {
        self.autoscaler.bounds()
    }

    pub(super) fn policy_hold(&self) -> Option<&str> {
        self.policy_hold.as_deref()
    }

    pub(super) fn last_demand(&self) -> Option<&SaturationStatus> {
        self.last_demand.as_ref()
    }

    pub(super) fn last_host(&self) -> Option<&HostStatus> {
        self.last_host.as_ref()
    }

    /// `ebb scale`: desired capacity as asked, clamped to the bounds.
    pub(super) fn set_desired(
        &mut self,
        ctx: &Shared,
        desired: &mut u32,
        requested: u32,
        reason: &str,
    ) -> ScaleOutcome {
        let from = *desired;
        let change = self.autoscaler.manual_scale(ctx.now(), from, requested);
        let clamped = change.capped.as_ref().map(|c| c.to_string());
        if change.from != change.to || clamped.is_some() {
            let mut why = format!("desired {from} -> {}: {reason}", change.to);
            if let Some(c) = &clamped {
                why.push_str(&format!("; capped: {c}"));
            }
            ctx.record(NewEvent::new(&ctx.name, EventKind::Scaled, why).change(from, change.to));
        }
        *desired = change.to;
        ScaleOutcome { service: ctx.name.clone(), from, to: change.to, clamped }
    }

    pub(super) fn on_external(&mut self, ctx: &Shared, at: Instant, reading: Result<f64, String>) {
        match reading {
            Ok(value) => {
                self.external = Some((at, value));
                self.external_error = None;
            }
            Err(error) => {
                if self.external_error.as_deref() != Some(error.as_str()) {
                    ctx.record(NewEvent::new(
                        &ctx.name,
                        EventKind::MetricSourceFailed,
                        format!("metric source failed: {error}; policies on items_per_replica hold for lack of data"),
                    ));
                    self.external_error = Some(error);
                }
            }
        }
    }

    /// Once a second: turn readings into a sample, let the autoscaler decide,
    /// and apply its change (with the event that explains it). Returns the
    /// second's point of history.
    pub(super) fn on_usage(
        &mut self,
        ctx: &Shared,
        replicas: &mut ReplicaSet,
        desired: &mut u32,
        deploying: bool,
        at: Instant,
        usage_by_replica: &HashMap<String, GroupUsage>,
    ) -> history::ServicePoint {
        let now = at.saturating_duration_since(ctx.origin);
        let allotment = ctx.config.cpu;
        let mut sample = ServiceSample::new(now);
        let mut live_ids = Vec::new();
        let mut concurrency = 0u64;
        let mut service_requests = 0u64;
        // Warm pool members are beside the fleet: not in its sample.
        for r in replicas.iter_mut().filter(|r| r.is_active() && !r.stopping && !r.pooled) {
            let mut replica =
                ReplicaSample::new(&r.id, r.in_service_since.map(|t| t.saturating_duration_since(ctx.origin)));
            if r.running.is_some() {
                live_ids.push(r.id.clone());
                match usage_by_replica.get(&r.id) {
                    Some(usage) => {
                        r.cpu_percent = self.cpu_meter.utilisation(&r.id, at, usage, allotment);
                        r.rss_bytes = Some(usage.rss_bytes);
                    }
                    None => {
                        r.cpu_percent = None;
                        r.rss_bytes = None;
                    }
                }
            }
            replica.cpu_percent = r.cpu_percent;
            if let Some(backend) = &r.backend {
                let requests = backend.requests();
                let in_flight = backend.in_flight();
                replica.requests_per_s = Some(requests.saturating_sub(r.requests_at_last_sample) as f64);
                replica.in_flight = Some(in_flight as f64);
                r.requests_at_last_sample = requests;
                concurrency += in_flight;
                service_requests += requests;
            }
            sample.replicas.push(replica);
        }
        self.cpu_meter.retain(&live_ids);
        // Requests of replicas that left are gone from the sum; never negative.
        sample.requests_per_s =
            Some(service_requests.saturating_sub(self.service_requests_at_last_sample.min(service_requests)) as f64);
        self.service_requests_at_last_sample = service_requests;
        sample.concurrency = Some(concurrency as f64);
        // A reading older than three intervals is missing data, not a value.
        if let (Some((taken, value)), Some(source)) = (self.external, &ctx.config.metric_source) {
            if at.saturating_duration_since(taken) <= source.interval * 3 {
                sample.external = Some(value);
            }
        }
        // This second's latencies, as the balancer recorded them.
        let SecondLatencies { latency, queue_time: queue } = ctx.proxy.take_second();
        sample.p95_ms = latency.quantile_ms(0.95);
        sample.p99_ms = latency.quantile_ms(0.99);
        sample.queue_time_ms = queue.mean_ms();
        let p50_ms = latency.quantile_ms(0.50);
        let replica_cpu: Vec<(String, f64)> =
            sample.replicas.iter().filter_map(|r| r.cpu_percent.map(|c| (r.id.clone(), c))).collect();
        let cpu_mean = (!replica_cpu.is_empty())
            .then(|| replica_cpu.iter().map(|(_, c)| c).sum::<f64>() / replica_cpu.len() as f64);
        let requests_per_s = sample.requests_per_s.unwrap_or(0.0);
        let p99_ms = sample.p99_ms;
        sample.demand = ctx.config.kind.has_balancer().then(|| self.read_demand(ctx, requests_per_s));
        sample.host = self.host.as_ref().and_then(|h| h.latest());
        let queue_time_ms = sample.queue_time_ms;
        self.note_saturation(ctx, sample.demand, queue_time_ms);
        if let Some(shadow) = &mut self.shadow {
            shadow.observe(sample.clone());
        }
        self.autoscaler.observe(sample);
        self.note_host(ctx, now);

        let counts = replicas.counts();
        let fleet = FleetView { desired: *desired, in_service: counts.in_service, pending: counts.pending, deploying };
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let decision = self.autoscaler.decide(now, wall, &fleet);
        // The shadow decides on the same second, from its own count; its
        // change is told, never applied.
        if let Some(shadow) = &mut self.shadow {
            let shadow_decision = shadow.decide(now, wall, &fleet);
            self.shadow_hold = shadow_decision.holding.as_ref().map(|h| h.to_string());
            if let Some(change) = &shadow_decision.change {
                ctx.record(
                    NewEvent::new(&ctx.name, EventKind::Shadow, Shadow::describe(change))
                        .change(change.from, change.to),
                );
            }
        }
        self.policy_hold = decision.holding.as_ref().map(|h| h.to_string());
        self.note_predictive(&decision);
        let frozen = self.autoscaler.frozen_hold(now);
        if frozen.is_some() != self.was_frozen {
            let text = match &frozen {
                Some(hold) => format!("{}; no scale-in until it lifts", hold.why),
                None => "scale-in freeze lifted".to_string(),
            };
            ctx.record(NewEvent::new(&ctx.name, EventKind::ScaleInFrozen, text));
            self.was_frozen = frozen.is_some();
        }
        if let Some(change) = decision.change {
            ctx.record(NewEvent::new(&ctx.name, EventKind::Scaled, change.to_string()).change(change.from, change.to));
            *desired = change.to;
        }
        // `[service.NAME.chaos]`: now and then a spot-style notice to a
        // random replica in service (about once per `interrupt_every`).
        if let Some(chaos) = ctx.config.chaos {
            let facts = replicas.facts();
            let (draw, pick) = (rand::random::<f64>(), rand::random::<u64>());
            let victim = fleet::chaos_victim(&facts, chaos.chance(SAMPLE_EVERY), draw, pick).map(str::to_string);
            drop(facts);
            if let Some(victim) = victim {
                let _ = replicas.interrupt(ctx, &victim, chaos.notice);
            }
        }
        history::ServicePoint {
            time_ms: crate::clock::unix_ms(std::time::SystemTime::now()),
            desired: *desired,
            in_service: fleet.in_service,
            pending: fleet.pending,
            requests_per_s,
            in_flight: concurrency,
            p50_ms,
            p99_ms,
            cpu_mean,
            replica_cpu,
            traffic: self.last_demand.as_ref().map(|d| history::PointTraffic {
                offered_per_s: d.offered_per_s,
                queued: d.queued,
                shed_per_s: d.shed_per_s,
                queue_ms: d.queue_time_ms,
                saturated: d.saturated,
                host_full: self.last_host.as_ref().is_some_and(|h| h.full),
            }),
            shadow_desired: self.shadow.as_ref().and_then(Shadow::desired),
        }
    }

    /// The balancer's counters for the second that just ended.
    fn read_demand(&mut self, ctx: &Shared, served_per_s: f64) -> Demand {
        let stats = ctx.proxy.stats.snapshot();
        let offered = stats.requests.saturating_sub(self.offered_at_last_sample);
        let shed = stats.shed.saturating_sub(self.shed_at_last_sample);
        (self.offered_at_last_sample, self.shed_at_last_sample) = (stats.requests, stats.shed);
        // Answers on a replica's behalf count as answers and as 5xx (the
        // replica could not answer); shed requests are saturation's.
        let gateway = stats.no_backend + stats.upstream_errors + stats.upstream_timeouts;
        let answers = (stats.replica_answers.iter().sum::<u64>() + gateway, stats.replica_answers[4] + gateway);
        let (answered, errors) = (
            answers.0.saturating_sub(self.answers_at_last_sample.0),
            answers.1.saturating_sub(self.answers_at_last_sample.1),
        );
        self.answers_at_last_sample = answers;
        let (routable, at_limit, in_flight) = ctx.proxy.load();
        Demand {
            offered_per_s: offered as f64,
            served_per_s,
            queued: ctx.proxy.take_queued_peak().min(u64::from(u32::MAX)) as u32,
            shed: shed.min(u64::from(u32::MAX)) as u32,
            in_flight: in_flight.min(u64::from(u32::MAX)) as u32,
            routable,
            at_limit,
            limit: ctx.config.proxy.max_in_flight,
            answered_per_s: answered as f64,
            errors_per_s: errors as f64,
        }
    }

    /// Keeps the second's demand for status, and records an event when
    /// requests start or stop queueing.
    fn note_saturation(&mut self, ctx: &Shared, demand: Option<Demand>, queue_time_ms: Option<f64>) {
        let Some(d) = demand else { return };
        let saturated = d.is_saturated();
        if saturated != self.was_saturated {
            let text = if saturated {
                format!(
                    "saturated: {d}; offered {:.0} req/s, served {:.0} req/s; no scale-in until it clears",
                    d.offered_per_s, d.served_per_s
                )
            } else {
                "saturation cleared: no request queued or shed in the last second".to_string()
            };
            ctx.record(NewEvent::new(&ctx.name, EventKind::Saturated, text));
            self.was_saturated = saturated;
        }
        self.last_demand = Some(SaturationStatus {
            offered_per_s: d.offered_per_s,
            served_per_s: d.served_per_s,
            queued: d.queued,
            shed_per_s: d.shed,
            in_flight: d.in_flight,
            routable: d.routable,
            at_limit: d.at_limit,
            limit: d.limit,
            queue_time_ms,
            saturated,
        });
    }

    /// Keeps the host's state for status, and records an event when it
    /// becomes full or has room again.
    fn note_host(&mut self, ctx: &Shared, now: scaling::Time) {
        let Some(latest) = self.host.as_ref().and_then(|h| h.latest()) else {
            self.last_host = None;
            return;
        };
        let full = HostFull::assess(&self.autoscaler.history().host(now, scaling::saturation::HOST_WINDOW), now);
        if full.is_some() != self.was_host_full {
            let text = match &full {
                Some(f) => format!(
                    "{}; more local replicas would not add capacity — lower cpu per replica, raise the host, or run on Swarm",
                    f.describe()
                ),
                None => format!("host has room again: {:.1} of {} CPUs busy", latest.busy_cpus, latest.cpus),
            };
            ctx.record(NewEvent::new(&ctx.name, EventKind::HostFull, text));
            self.was_host_full = full.is_some();
        }
        self.last_host = Some(HostStatus {
            cpus: latest.cpus,
            busy_cpus: latest.busy_cpus,
            pressure: latest.pressure,
            full: full.is_some(),
            message: full.map(|f| f.describe()),
        });
    }
}
