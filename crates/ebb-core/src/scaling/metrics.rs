//! Metric samples, the bounded history they are kept in, and aggregation.
//!
//! The live controller (or the simulator) hands the autoscaler one
//! [`ServiceSample`] per second: what each replica did in that second and
//! what the balancer measured for the whole service. Any number may be
//! missing (`None`): a replica that has just started, a `/proc` file that
//! could not be read. Missing is never zero: the policies treat it against
//! the direction of change (see `target.rs` and `step.rs`).
//!
//! [`MetricHistory`] keeps, per sample, only what the policies need: the
//! datapoints of **warm** replicas (in service for at least `warmup`; a
//! replica's datapoints from before that are dropped, as AWS leaves a
//! warming instance out of the group's metrics) and the service-level
//! numbers. It keeps samples for the longest span any configured policy
//! looks at, so its memory is bounded by configuration, not by uptime.

use super::Time;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// What a policy scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// CPU use of each warm replica, in percent of its `cpu` allotment
    /// (AWS `CPUUtilization`).
    Cpu,
    /// Requests per second handled by each warm replica
    /// (`ALBRequestCountPerTarget`, per second).
    RequestsPerReplica,
    /// Requests in flight at each warm replica (Knative's concurrency).
    ConcurrencyPerReplica,
    /// The service's 95th-percentile response time, in milliseconds.
    P95Latency,
    /// The service's 99th-percentile response time, in milliseconds.
    P99Latency,
    /// How long requests waited at the balancer for a replica, in ms.
    QueueTime,
    /// An external number (`[service.NAME.metric_source]`, e.g. a queue's
    /// length) divided by the replicas in service (AWS's backlog per
    /// instance).
    ItemsPerReplica,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Cpu,
        Metric::RequestsPerReplica,
        Metric::ConcurrencyPerReplica,
        Metric::P95Latency,
        Metric::P99Latency,
        Metric::QueueTime,
        Metric::ItemsPerReplica,
    ];

    /// The name used in `ebb.toml`, events and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::RequestsPerReplica => "requests_per_replica",
            Metric::ConcurrencyPerReplica => "concurrency_per_replica",
            Metric::P95Latency => "p95_latency",
            Metric::P99Latency => "p99_latency",
            Metric::QueueTime => "queue_time",
            Metric::ItemsPerReplica => "items_per_replica",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether each replica reports its own value (averaged over warm
    /// replicas), as opposed to one value measured for the whole service.
    pub fn is_per_replica(self) -> bool {
        matches!(self, Metric::Cpu | Metric::RequestsPerReplica | Metric::ConcurrencyPerReplica)
    }

    /// A measured value with its unit: `92.4%`, `12.5 req/s`,
    /// `3.0 in flight`, `340.0 ms`.
    pub fn show(self, value: f64) -> String {
        format!("{}{}", number(value), self.unit())
    }

    /// A configured value (target, threshold) as written, with its unit:
    /// `80%`, `200 ms`.
    pub fn show_target(self, value: f64) -> String {
        format!("{}{}", number_trim(value), self.unit())
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::Cpu => "%",
            Metric::RequestsPerReplica => " req/s",
            Metric::ConcurrencyPerReplica => " in flight",
            Metric::P95Latency | Metric::P99Latency | Metric::QueueTime => " ms",
            Metric::ItemsPerReplica => " items/replica",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How datapoints in a period are reduced to one number (CloudWatch's
/// statistics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    Average,
    Minimum,
    Maximum,
    Sum,
    /// `p90`, `p99.9`: the nearest-rank percentile, 0 < p < 100.
    Percentile(f64),
}

impl Statistic {
    /// Parses `average`, `min`, `max`, `sum` or `pNN` (also `minimum`,
    /// `maximum`); `None` for anything else.
    pub fn from_name(name: &str) -> Option<Statistic> {
        match name {
            "average" => Some(Statistic::Average),
            "min" | "minimum" => Some(Statistic::Minimum),
            "max" | "maximum" => Some(Statistic::Maximum),
            "sum" => Some(Statistic::Sum),
            _ => {
                let p: f64 = name.strip_prefix('p')?.parse().ok()?;
                (p > 0.0 && p < 100.0).then_some(Statistic::Percentile(p))
            }
        }
    }

    /// Reduces datapoints; `None` when there are none.
    pub fn apply(self, points: &mut [f64]) -> Option<f64> {
        if points.is_empty() {
            return None;
        }
        Some(match self {
            Statistic::Average => points.iter().sum::<f64>() / points.len() as f64,
            Statistic::Minimum => points.iter().copied().fold(f64::INFINITY, f64::min),
            Statistic::Maximum => points.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Statistic::Sum => points.iter().sum(),
            Statistic::Percentile(p) => {
                points.sort_by(f64::total_cmp);
                // Nearest rank: the smallest value with at least p% at or below it.
                let rank = ((p / 100.0) * points.len() as f64).ceil() as usize;
                points[rank.clamp(1, points.len()) - 1]
            }
        })
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statistic::Average => f.write_str("average"),
            Statistic::Minimum => f.write_str("min"),
            Statistic::Maximum => f.write_str("max"),
            Statistic::Sum => f.write_str("sum"),
            Statistic::Percentile(p) => write!(f, "p{}", number_trim(*p)),
        }
    }
}

/// What a policy does when its metric has no data at all
/// (`on_missing_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMissing {
    /// Hold: missing data never scales in, nor out (the default).
    #[default]
    Hold,
    /// When the metric's source is down for the policy's whole window or
    /// span (see [`MetricHistory::source_down`]), scale out by one replica,
    /// at most once per the policy's cooldown: a surge may be what took
    /// the metrics down.
    ScaleOut,
}

impl OnMissing {
    pub const ALL: [OnMissing; 2] = [OnMissing::Hold, OnMissing::ScaleOut];

    pub fn as_str(self) -> &'static str {
        match self {
            OnMissing::Hold => "hold",
            OnMissing::ScaleOut => "scale_out",
        }
    }

    pub fn from_name(name: &str) -> Option<OnMissing> {
        OnMissing::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// One replica's numbers for one second.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSample {
    /// The replica's id (`web-3`), for messages.
    pub id: String,
    /// When the replica entered service (passed its health checks); `None`
    /// while it is starting. Its metrics count once it has been in service
    /// for `warmup`; until then it counts as capacity only.
    pub in_service_since: Option<Time>,
    /// CPU used in the last second, percent of the replica's allotment.
    pub cpu_percent: Option<f64>,
    /// Requests completed per second.
    pub requests_per_s: Option<f64>,
    /// Requests in flight (average over the second, or the instant value).
    pub in_flight: Option<f64>,
}

impl ReplicaSample {
    /// A replica with no numbers yet.
    pub fn new(id: impl Into<String>, in_service_since: Option<Time>) -> Self {
        Self { id: id.into(), in_service_since, cpu_percent: None, requests_per_s: None, in_flight: None }
    }

    /// Whether its metrics count at `at`: in service for at least `warmup`.
    pub fn is_warm(&self, at: Time, warmup: Duration) -> bool {
        self.in_service_since.is_some_and(|since| at.saturating_sub(since) >= warmup && since <= at)
    }
}

/// One second of a service: every replica that exists (starting or in
/// service), and what the balancer measured for the service as a whole.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceSample {
    /// The end of the second this sample describes.
    pub at: Time,
    pub replicas: Vec<ReplicaSample>,
    /// Requests completed per second, all replicas together.
    pub requests_per_s: Option<f64>,
    /// Requests in flight, all replicas together.
    pub concurrency: Option<f64>,
    /// Response-time percentiles over the second, in ms. `None` when no
    /// request completed; with `requests_per_s == Some(0.0)` such a second
    /// counts as 0 ms (nothing was slow), so an idle service can scale in.
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Mean time requests waited for a replica, in ms (same rule as above).
    pub queue_time_ms: Option<f64>,
    /// The latest reading of the service's metric source (a queue length),
    /// for `items_per_replica`; `None` when there is no source or the
    /// reading failed.
    pub external: Option<f64>,
    /// What the balancer saw of demand (offered, queued, shed); `None`
    /// for a service without a balancer (a worker pool).
    pub demand: Option<super::Demand>,
    /// ebb's host, when the replicas run on it (process and docker
    /// drivers); `None` when they run elsewhere (Swarm) or it was not read.
    pub host: Option<super::HostSample>,
}

impl ServiceSample {
    /// A sample at `at` with no numbers; fill in what you have.
    pub fn new(at: Time) -> Self {
        Self { at, ..Default::default() }
    }

    /// `external` divided by the replicas in service at `at`; `None`
    /// without a reading (never zero: missing is not idle) or with no
    /// replica in service.
    pub fn items_per_replica(&self) -> Option<f64> {
        let external = self.external.filter(|v| v.is_finite() && *v >= 0.0)?;
        let in_service = self.replicas.iter().filter(|r| r.in_service_since.is_some_and(|s| s <= self.at)).count();
        (in_service > 0).then(|| external / in_service as f64)
    }

    fn service_value(&self, metric: Metric) -> Option<f64> {
        if metric == Metric::ItemsPerReplica {
            return self.items_per_replica();
        }
        let value = match metric {
            Metric::P95Latency => self.p95_ms,
            Metric::P99Latency => self.p99_ms,
            Metric::QueueTime => self.queue_time_ms,
            _ => None,
        };
        let idle = self.requests_per_s == Some(0.0);
        value.filter(|v| v.is_finite()).or(idle.then_some(0.0))
    }
}

/// What one sample contributes: datapoints of warm replicas per
/// per-replica metric, and the service-level values.
#[derive(Debug, Clone)]
struct Point {
    at: Time,
    values: [Datapoints; 7],
    demand: Option<super::Demand>,
    host: Option<super::HostSample>,
}

/// One metric's datapoints in one sample, in replica order, run-length
/// encoded (replicas reporting the same number, as the simulator's do,
/// take one entry), with their count, sum, min and max. Window averages
/// then cost one step per sample, not one per datapoint: a 10,000-replica
/// fleet is as cheap to decide on as a small one.
/// [`MetricHistory::datapoints`] expands the runs back.
#[derive(Debug, Clone, Default)]
struct Datapoints {
    runs: Vec<(f64, u32)>,
    count: u32,
    /// `Σ value × repeat` over the runs, in order (for distinct values,
    /// the plain sum in replica order).
    sum: f64,
    min: f64,
    max: f64,
}

impl Datapoints {
    /// Adds a value; [`finish`](Self::finish) once all are in.
    #[inline]
    fn push(&mut self, v: f64) {
        if let Some((last, n)) = self.runs.last_mut() {
            if last.to_bits() == v.to_bits() {
                *n += 1;
                return;
            }
        }
        self.runs.push((v, 1));
    }

    #[inline]
    fn push_finite(&mut self, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.push(v);
        }
    }

    /// Counts, sums and bounds the runs.
    fn finish(&mut self) {
        let (mut count, mut sum, mut min, mut max) = (0, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        for &(v, n) in &self.runs {
            count += n;
            sum += if n == 1 { v } else { v * f64::from(n) };
            min = min.min(v);
            max = max.max(v);
        }
        (self.count, self.sum, self.min, self.max) = (count, sum, min, max);
    }

    fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.runs.iter().flat_map(|&(v, n)| std::iter::repeat_n(v, n as usize))
    }
}

/// How many warm replicas in the latest sample report a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reporting {
    /// Warm replicas that reported the metric (for service-level metrics:
    /// warm replicas, since the balancer measures for all of them).
    pub reporting: u32,
    /// Warm replicas whose number is missing.
    pub not_reporting: u32,
    /// Replicas not warm yet (starting, or in service for less than `warmup`).
    pub warming: u32,
}

/// A metric averaged over a window, with who it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub metric: Metric,
    pub window: Duration,
    /// The average over the window of the warm datapoints.
    pub value: f64,
    pub datapoints: usize,
    pub replicas: Reporting,
}

/// Why there is no observation: the policy must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct NoData {
    pub metric: Metric,
    pub window: Duration,
    pub replicas: Reporting,
}

impl fmt::Display for NoData {
    /// `no warm replica reported cpu in the last 1m (2 warming, 1 not reporting)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.replicas;
        write!(f, "no warm replica reported {} in the last {}", self.metric, duration(self.window))?;
        let mut why = Vec::new();
        if r.warming > 0 {
            why.push(format!("{} warming up", r.warming));
        }
        if r.not_reporting > 0 {
            why.push(format!("{} not reporting", r.not_reporting));
        }
        if r.reporting + r.warming + r.not_reporting == 0 {
            why.push("no replicas".to_string());
        }
        if !why.is_empty() {
            write!(f, " ({})", why.join(", "))?;
        }
        Ok(())
    }
}

/// The per-second samples of one service, for as long as the configured
/// policies look back.
#[derive(Debug, Clone)]
pub struct MetricHistory {
    /// How far back samples are kept (the longest span any policy reads).
    keep: Duration,
    warmup: Duration,
    /// When the first sample arrived: a period that starts before this is
    /// not covered, and an alarm treats it as missing.
    first_at: Option<Time>,
    points: VecDeque<Point>,
    latest: Option<ServiceSample>,
    /// Who reports each metric in `latest` (by [`Metric::slot`]), counted
    /// when it was pushed.
    latest_reporting: [Reporting; 7],
}

impl MetricHistory {
    /// At the design rate of one sample per second this is never reached;
    /// it bounds memory if a caller samples much faster than that.
    const MAX_SAMPLES_PER_SECOND: u64 = 20;

    pub fn new(keep: Duration, warmup: Duration) -> Self {
        Self {
            keep,
            warmup,
            first_at: None,
            points: VecDeque::new(),
            latest: None,
            latest_reporting: [Reporting::default(); 7],
        }
    }

    /// New keep and warm-up (`ebb apply`): samples already taken stay;
    /// the next push trims to the new keep.
    pub fn reconfigure(&mut self, keep: Duration, warmup: Duration) {
        self.keep = keep;
        self.warmup = warmup;
    }

    /// How far back samples are kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Adds a sample. Samples must come in time order; one at or before
    /// the previous sample's time is ignored (a clock cannot go back).
    pub fn push(&mut self, sample: ServiceSample) {
        if self.latest.as_ref().is_some_and(|l| sample.at <= l.at) {
            return;
        }
        let at = sample.at;
        let mut values: [Datapoints; 7] = Default::default();
        // One pass over the replicas for every metric: this is the only
        // per-replica work a decision costs. Warm: in service since at or
        // before `at - warmup` (see `ReplicaSample::is_warm`).
        let cutoff = at.checked_sub(self.warmup);
        let mut warm = 0;
        {
            let [cpu, requests, in_flight, ..] = &mut values;
            for replica in &sample.replicas {
                if replica.in_service_since.is_none_or(|since| cutoff.is_none_or(|c| since > c)) {
                    continue;
                }
                warm += 1;
                cpu.push_finite(replica.cpu_percent);
                requests.push_finite(replica.requests_per_s);
                in_flight.push_finite(replica.in_flight);
            }
        }
        let warming = sample.replicas.len() as u32 - warm;
        let mut reporting = [Reporting::default(); 7];
        for metric in Metric::ALL {
            let d = &mut values[metric.slot()];
            if !metric.is_per_replica() {
                d.push_finite(sample.service_value(metric));
            }
            d.finish();
            reporting[metric.slot()] = if metric.is_per_replica() {
                Reporting { reporting: d.count, not_reporting: warm - d.count, warming }
            } else {
                // The balancer measures for every warm replica.
                Reporting { reporting: warm, not_reporting: 0, warming }
            };
        }
        self.first_at.get_or_insert(at);
        self.points.push_back(Point { at, values, demand: sample.demand, host: sample.host });
        self.latest = Some(sample);
        self.latest_reporting = reporting;
        let cap = (self.keep.as_secs() + 2) * Self::MAX_SAMPLES_PER_SECOND;
        while self.points.front().is_some_and(|p| at.saturating_sub(p.at) > self.keep) || self.points.len() as u64 > cap
        {
            self.points.pop_front();
        }
    }

    /// The latest sample, as given.
    pub fn latest(&self) -> Option<&ServiceSample> {
        self.latest.as_ref()
    }

    /// When the first sample arrived.
    pub fn first_at(&self) -> Option<Time> {
        self.first_at
    }

    /// The samples with `after < at <= until`, oldest first.
    fn between(&self, after: Time, until: Time) -> impl Iterator<Item = &Point> + '_ {
        let start = self.points.partition_point(|p| p.at <= after);
        let end = self.points.partition_point(|p| p.at <= until).max(start);
        self.points.range(start..end)
    }

    /// The balancer's demand per second within `span` before `now`
    /// (`now - span < at <= now`), oldest first.
    pub fn demand(&self, now: Time, span: Duration) -> Vec<(Time, super::Demand)> {
        self.between(now.saturating_sub(span), now).filter_map(|p| p.demand.map(|d| (p.at, d))).collect()
    }

    /// The host per second within `span` before `now`, oldest first.
    pub fn host(&self, now: Time, span: Duration) -> Vec<(Time, super::HostSample)> {
        self.between(now.saturating_sub(span), now).filter_map(|p| p.host.map(|h| (p.at, h))).collect()
    }

    /// Datapoints of `metric` from samples with `after < at <= until`.
    pub fn datapoints(&self, metric: Metric, after: Time, until: Time) -> Vec<f64> {
        self.between(after, until).flat_map(|p| p.values[metric.slot()].iter()).collect()
    }

    /// The statistic of `metric` over the datapoints of samples with
    /// `after < at <= until`, from each sample's running count, sum, min
    /// and max (percentiles sort the runs); `None` without datapoints.
    fn statistic_between(
        &self,
        metric: Metric,
        statistic: Statistic,
        after: Time,
        until: Time,
    ) -> Option<(f64, usize)> {
        let slot = metric.slot();
        let points = || self.between(after, until).map(|p| &p.values[slot]).filter(|d| d.count > 0);
        let count: usize = points().map(|d| d.count as usize).sum();
        if count == 0 {
            return None;
        }
        let value = match statistic {
            Statistic::Average => points().map(|d| d.sum).sum::<f64>() / count as f64,
            Statistic::Sum => points().map(|d| d.sum).sum(),
            Statistic::Minimum => points().map(|d| d.min).fold(f64::INFINITY, f64::min),
            Statistic::Maximum => points().map(|d| d.max).fold(f64::NEG_INFINITY, f64::max),
            Statistic::Percentile(p) => {
                // Nearest rank, as `Statistic::apply`, over sorted runs.
                let mut runs: Vec<(f64, u32)> = points().flat_map(|d| d.runs.iter().copied()).collect();
                runs.sort_by(|a, b| a.0.total_cmp(&b.0));
                let rank = ((p / 100.0) * count as f64).ceil() as usize;
                let rank = rank.clamp(1, count);
                let mut seen = 0usize;
                runs.iter()
                    .find(|&&(_, n)| {
                        seen += n as usize;
                        seen >= rank
                    })?
                    .0
            }
        };
        Some((value, count))
    }

    /// The statistic of `metric` over the period `(end - period, end]`, or
    /// `None` when the period has no datapoint or starts before the first
    /// sample (it is not fully covered, so it would claim more than we saw).
    pub fn period_value(&self, metric: Metric, statistic: Statistic, end: Time, period: Duration) -> Option<f64> {
        let start = end.checked_sub(period)?;
        if self.first_at.is_none_or(|first| start < first) {
            return None;
        }
        self.statistic_between(metric, statistic, start, end).map(|(v, _)| v)
    }

    /// Who reports `metric` in the latest sample at or before `now`.
    pub fn reporting(&self, metric: Metric, now: Time) -> Reporting {
        match self.latest.as_ref() {
            Some(latest) if latest.at <= now => self.latest_reporting[metric.slot()],
            _ => Reporting::default(),
        }
    }

    /// The average of `metric` over `(now - window, now]` from warm
    /// replicas, with who reported it; [`NoData`] when no warm replica
    /// reported in the window (or none reports now).
    pub fn observe(&self, metric: Metric, now: Time, window: Duration) -> Result<Observation, NoData> {
        let replicas = self.reporting(metric, now);
        match self.statistic_between(metric, Statistic::Average, now.saturating_sub(window), now) {
            Some((value, datapoints)) if replicas.reporting > 0 => {
                Ok(Observation { metric, window, value, datapoints, replicas })
            }
            _ => Err(NoData { metric, window, replicas }),
        }
    }

    /// Whether `metric`'s source looks down: warm replicas exist now, the
    /// history covers the whole `span` before `now`, and not one datapoint
    /// arrived in it. Replicas still warming up are not a source that is
    /// down (a booting fleet has no numbers yet), nor is a history younger
    /// than the span (ebb just started).
    pub fn source_down(&self, metric: Metric, now: Time, span: Duration) -> bool {
        let r = self.reporting(metric, now);
        let covered = self.first_at.is_some_and(|first| now.checked_sub(span).is_some_and(|start| first <= start));
        covered
            && r.reporting + r.not_reporting > 0
            && self.statistic_between(metric, Statistic::Sum, now.saturating_sub(span), now).is_none()
    }
}

/// A number with one decimal (`92.4`), or none when it is whole and large
/// enough that a decimal is noise (`1200`).
pub(crate) fn number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A configured number as written: `80`, `0.5`, `72.25`.
pub(crate) fn number_trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A duration for people: `45 s`, `2 min`, `4 min 3 s`, `1 h 30 min`,
/// `500 ms`; whole seconds are rounded up so nothing says `0 s left`.
pub fn duration(d: Duration) -> String {
    if !d.is_zero() && d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{} ms", d.as_millis());
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Time {
        Duration::from_secs(secs)
    }

    fn sample(at: u64, cpus: &[Option<f64>]) -> ServiceSample {
        let mut sample = ServiceSample::new(s(at));
        for (i, cpu) in cpus.iter().enumerate() {
            let mut r = ReplicaSample::new(format!("web-{}", i + 1), Some(s(0)));
            r.cpu_percent = *cpu;
            sample.replicas.push(r);
        }
        sample
    }

    #[test]
    fn statistics_follow_cloudwatch() {
        let stat = |name: &str, points: &[f64]| Statistic::from_name(name).unwrap().apply(&mut points.to_vec());
        let points = [10.0, 40.0, 20.0, 30.0];
        assert_eq!(stat("average", &points), Some(25.0));
        assert_eq!(stat("min", &points), Some(10.0));
        assert_eq!(stat("maximum", &points), Some(40.0));
        assert_eq!(stat("sum", &points), Some(100.0));
        assert_eq!(stat("p50", &points), Some(20.0), "nearest rank: 2 of 4");
        assert_eq!(stat("p75", &points), Some(30.0));
        assert_eq!(stat("p99.9", &points), Some(40.0));
        assert_eq!(stat("p1", &points), Some(10.0));
        assert_eq!(stat("average", &[]), None);
        for bad in ["p0", "p100", "median", "p", "pxx", "Average"] {
            assert_eq!(Statistic::from_name(bad), None, "{bad}");
        }
        assert_eq!(Statistic::Percentile(99.9).to_string(), "p99.9");
    }

    #[test]
    fn warming_replicas_are_left_out_of_the_aggregate() {
        let mut h = MetricHistory::new(s(60), s(30));
        let mut smp = sample(100, &[Some(50.0), Some(90.0)]);
        smp.replicas[1].in_service_since = Some(s(80)); // 20 s in service: warming
        smp.replicas.push(ReplicaSample::new("web-3", None)); // still starting
        h.push(smp);
        let o = h.observe(Metric::Cpu, s(100), s(60)).unwrap();
        assert_eq!(o.value, 50.0);
        assert_eq!(o.replicas, Reporting { reporting: 1, not_reporting: 0, warming: 2 });
    }

    #[test]
    fn missing_numbers_are_not_zero() {
        let mut h = MetricHistory::new(s(60), s(0));
        h.push(sample(1, &[Some(80.0), None]));
        let o = h.observe(Metric::Cpu, s(1), s(60)).unwrap();
        assert_eq!(o.value, 80.0, "the missing replica does not pull the mean down");
        assert_eq!((o.replicas.reporting, o.replicas.not_reporting), (1, 1));

        let mut h = MetricHistory::new(s(60), s(0));
        h.push(sample(1, &[None, None]));
        let e = h.observe(Metric::Cpu, s(1), s(60)).unwrap_err();
        assert_eq!(e.to_string(), "no warm replica reported cpu in the last 1 min (2 not reporting)");
    }

    #[test]
    fn idle_seconds_count_as_zero_latency() {
        let mut h = MetricHistory::new(s(60), s(0));
        let mut a = sample(1, &[Some(1.0)]);
        a.requests_per_s = Some(10.0);
        a.p95_ms = Some(200.0);
        h.push(a);
        let mut b = sample(2, &[Some(1.0)]);
        b.requests_per_s = Some(0.0);
        h.push(b);
        let mut c = sample(3, &[Some(1.0)]);
        c.requests_per_s = None; // unknown, not idle
        h.push(c);
        assert_eq!(h.datapoints(Metric::P95Latency, s(0), s(3)), vec![200.0, 0.0]);
    }

    #[test]
    fn history_is_bounded_by_time_and_ordered() {
        let mut h = MetricHistory::new(s(10), s(0));
        for t in 1..=100 {
            h.push(sample(t, &[Some(t as f64)]));
        }
        h.push(sample(50, &[Some(1.0)])); // out of order: ignored
        assert_eq!(h.points.len(), 11);
        assert_eq!(h.datapoints(Metric::Cpu, s(0), s(100)).first(), Some(&90.0));
        assert_eq!(h.latest().unwrap().at, s(100));
    }

    #[test]
    fn periods_before_the_first_sample_are_not_covered() {
        let mut h = MetricHistory::new(s(120), s(0));
        for t in 1..=45 {
            h.push(sample(t, &[Some(70.0)]));
        }
        assert_eq!(h.period_value(Metric::Cpu, Statistic::Average, s(45), s(30)), Some(70.0));
        assert_eq!(h.period_value(Metric::Cpu, Statistic::Average, s(15), s(30)), None, "starts before t=1");
        assert_eq!(h.period_value(Metric::Cpu, Statistic::Average, s(31), s(30)), Some(70.0));
    }

    #[test]
    fn running_summaries_agree_with_the_datapoints() {
        // Runs of equal values (the simulator's fleets) and distinct ones
        // (a live fleet) give what the datapoints themselves give.
        let mut h = MetricHistory::new(s(60), s(0));
        for t in 1..=20u64 {
            let same = (t % 7) as f64 * 10.0;
            h.push(sample(t, &[Some(same), Some(same), Some(t as f64), None, Some(same)]));
        }
        // `push` fills the per-replica metrics by slot.
        let slots = [Metric::Cpu.slot(), Metric::RequestsPerReplica.slot(), Metric::ConcurrencyPerReplica.slot()];
        assert_eq!(slots, [0, 1, 2]);
        assert_eq!(Metric::ALL.into_iter().filter(|m| m.is_per_replica()).count(), 3);
        for name in ["average", "sum", "min", "max", "p50", "p90", "p1", "p99.9"] {
            let stat = Statistic::from_name(name).unwrap();
            for (end, period) in [(20, 10), (15, 5), (20, 19), (11, 1)] {
                let expected = stat.apply(&mut h.datapoints(Metric::Cpu, s(end - period), s(end)));
                let got = h.period_value(Metric::Cpu, stat, s(end), s(period));
                let (e, g) = (expected.unwrap(), got.unwrap());
                assert!((e - g).abs() <= 1e-9 * e.abs().max(1.0), "{name} over ({}, {end}]: {e} vs {g}", end - period);
            }
        }
        assert_eq!(h.datapoints(Metric::Cpu, s(19), s(20)), vec![60.0, 60.0, 20.0, 60.0]);
        let o = h.observe(Metric::Cpu, s(20), s(60)).unwrap();
        assert_eq!((o.datapoints, o.replicas.reporting, o.replicas.not_reporting), (80, 4, 1));
    }

    #[test]
    fn items_per_replica_divides_the_external_number_by_the_replicas_in_service() {
        let mut smp = sample(10, &[Some(50.0), Some(50.0), Some(50.0)]);
        smp.replicas[2].in_service_since = None; // starting: takes no items yet
        assert_eq!(smp.items_per_replica(), None, "no reading: missing, not zero");
        smp.external = Some(120.0);
        assert_eq!(smp.items_per_replica(), Some(60.0));
        smp.requests_per_s = Some(0.0); // a worker has no balancer: idle requests say nothing
        let mut h = MetricHistory::new(s(60), s(0));
        h.push(smp.clone());
        let o = h.observe(Metric::ItemsPerReplica, s(10), s(60)).unwrap();
        assert_eq!((o.value, o.replicas.reporting, o.replicas.warming), (60.0, 2, 1));
        assert_eq!(Metric::ItemsPerReplica.show(o.value), "60.0 items/replica");

        let mut none = sample(11, &[]);
        none.external = Some(5.0);
        assert_eq!(none.items_per_replica(), None, "nobody in service");
        smp.external = Some(f64::NAN);
        assert_eq!(smp.items_per_replica(), None);
        assert_eq!(Metric::from_name("items_per_replica"), Some(Metric::ItemsPerReplica));
        assert!(!Metric::ItemsPerReplica.is_per_replica());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(42_300)), "43 s");
        assert_eq!(duration(s(120)), "2 min");
        assert_eq!(duration(s(243)), "4 min 3 s");
        assert_eq!(duration(s(5400)), "1 h 30 min");
        assert_eq!(duration(Duration::from_millis(500)), "500 ms");
        assert_eq!(duration(Duration::from_micros(1)), "1 s");
        assert_eq!(number_trim(80.0), "80");
        assert_eq!(number_trim(0.25), "0.25");
        assert_eq!(number(92.44), "92.4");
    }
}
