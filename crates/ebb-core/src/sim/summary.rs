//! What a run adds up to: cost, SLO, shed requests, scaling actions,
//! flaps and the elasticity scores.

use super::elasticity::Scores;
use super::engine::{Second, SimEvent};
use std::fmt;
use std::time::Duration;

/// A latency objective, `--slo p99<1s`: the `percentile` of the
/// requests of each second must stay under `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// 99.0 for p99.
    pub percentile: f64,
    pub threshold: Duration,
}

impl Default for Slo {
    /// `p99 < 1 s` (story S5's example).
    fn default() -> Self {
        Slo { percentile: 99.0, threshold: Duration::from_secs(1) }
    }
}

impl Slo {
    /// `p99<1s`, `p95 < 250ms`, `p50<100ms`.
    pub fn parse(text: &str) -> Result<Slo, String> {
        let bad = || format!("--slo {text:?}: expected pNN<DURATION, e.g. p99<1s or p95<250ms");
        let (p, threshold) = text.split_once('<').ok_or_else(bad)?;
        let percentile: f64 = p.trim().strip_prefix('p').ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if !(percentile > 0.0 && percentile < 100.0) {
            return Err(format!("--slo {text:?}: the percentile must be between p0 and p100 (exclusive)"));
        }
        let threshold = humantime::parse_duration(threshold.trim()).map_err(|_| bad())?;
        if threshold.is_zero() {
            return Err(format!("--slo {text:?}: the threshold must be above 0"));
        }
        Ok(Slo { percentile, threshold })
    }

    /// The quantile, 0.99 for p99.
    pub fn quantile(&self) -> f64 {
        self.percentile / 100.0
    }

    pub fn threshold_ms(&self) -> f64 {
        self.threshold.as_secs_f64() * 1000.0
    }

    /// Whether a second misses the objective: requests were shed, or the
    /// percentile is over the threshold. A second without requests meets it.
    pub fn violated(&self, second: &Second) -> bool {
        if second.served + second.shed <= 0.0 {
            return false;
        }
        second.shed > 0.0 || second.slo_ms.is_none_or(|ms| ms > self.threshold_ms())
    }
}

impl fmt::Display for Slo {
    /// `p99<1s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = crate::scaling::metrics::duration(self.threshold).replace(' ', "");
        let pct = format!("{:.3}", self.percentile);
        let pct = pct.trim_end_matches('0').trim_end_matches('.');
        write!(f, "p{pct}<{p}")
    }
}

/// The totals of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The policy's name: the config file, or the preset.
    pub policy: String,
    pub seconds: u64,
    pub offered_requests: f64,
    pub served_requests: f64,
    /// Requests given up on: beyond the backlog bound, or no replica in service.
    pub shed_requests: f64,
    /// Replicas running (starting or in service) × hours.
    pub replica_hours: f64,
    /// Replicas frozen (idle in `suspend` mode, warm pool members) ×
    /// hours: memory held, no CPU; not in `replica_hours` nor `cost`.
    pub suspended_hours: f64,
    /// `replica_hours × price`.
    pub cost: f64,
    pub slo: Slo,
    /// Seconds that missed the SLO (see [`Slo::violated`]).
    pub slo_violation_seconds: u64,
    /// Changes of desired capacity.
    pub scaling_actions: u32,
    pub scale_outs: u32,
    pub scale_ins: u32,
    /// Scaling actions that reversed the direction of the previous one
    /// within `flap_window` of it.
    pub flaps: u32,
    pub flap_window: Duration,
    /// The most replicas running at once.
    pub max_replicas: u32,
    /// The highest desired capacity.
    pub max_desired: u32,
    /// Simulated failures (`failure_rate`).
    pub failures: u32,
    /// Mean CPU over the seconds with replicas in service, %.
    pub mean_cpu: f64,
    /// The worst second's SLO percentile, ms.
    pub worst_latency_ms: Option<f64>,
    /// The SPEC elasticity scores of the replicas in service against the
    /// demand (docs/simulation.md).
    pub scores: Scores,
}

impl Summary {
    pub(super) fn new(
        policy: &str,
        seconds: &[Second],
        events: &[SimEvent],
        slo: Slo,
        price: f64,
        flap_window: Duration,
        demand: &[u32],
    ) -> Summary {
        let mut s = Summary {
            policy: policy.to_string(),
            seconds: seconds.len() as u64,
            offered_requests: 0.0,
            served_requests: 0.0,
            shed_requests: 0.0,
            replica_hours: 0.0,
            suspended_hours: 0.0,
            cost: 0.0,
            slo,
            slo_violation_seconds: 0,
            scaling_actions: 0,
            scale_outs: 0,
            scale_ins: 0,
            flaps: 0,
            flap_window,
            max_replicas: 0,
            max_desired: 0,
            failures: 0,
            mean_cpu: 0.0,
            worst_latency_ms: None,
            scores: Scores::default(),
        };
        let supply: Vec<u32> = seconds.iter().map(|s| s.in_service).collect();
        s.scores = Scores::new(demand, &supply);
        let mut replica_seconds = 0u64;
        let mut suspended_seconds = 0u64;
        let (mut cpu_sum, mut cpu_seconds) = (0.0, 0u64);
        for second in seconds {
            s.offered_requests += second.rate;
            s.served_requests += second.served;
            s.shed_requests += second.shed;
            let running = second.in_service + second.pending;
            replica_seconds += u64::from(running);
            suspended_seconds += u64::from(second.suspended);
            s.max_replicas = s.max_replicas.max(running);
            s.max_desired = s.max_desired.max(second.desired);
            if second.in_service > 0 {
                cpu_sum += second.cpu;
                cpu_seconds += 1;
            }
            if slo.violated(second) {
                s.slo_violation_seconds += 1;
            }
            if let Some(ms) = second.slo_ms {
                s.worst_latency_ms = Some(s.worst_latency_ms.map_or(ms, |w: f64| w.max(ms)));
            }
        }
        s.replica_hours = replica_seconds as f64 / 3600.0;
        s.suspended_hours = suspended_seconds as f64 / 3600.0;
        s.cost = s.replica_hours * price;
        s.mean_cpu = if cpu_seconds > 0 { cpu_sum / cpu_seconds as f64 } else { 0.0 };
        let mut last: Option<(u64, bool)> = None;
        for e in events {
            match (e.from, e.to) {
                (Some(from), Some(to)) if from != to => {
                    let out = to > from;
                    s.scaling_actions += 1;
                    if out {
                        s.scale_outs += 1;
                    } else {
                        s.scale_ins += 1;
                    }
                    if let Some((at, was_out)) = last {
                        if was_out != out && e.at - at <= flap_window.as_secs() {
                            s.flaps += 1;
                        }
                    }
                    last = Some((e.at, out));
                }
                _ if e.kind == "replica_exited" || e.kind == "replica_interrupted" => s.failures += 1,
                _ => {}
            }
        }
        s
    }

    /// Share of the seconds that missed the SLO, %.
    pub fn slo_violation_percent(&self) -> f64 {
        if self.seconds == 0 {
            0.0
        } else {
            self.slo_violation_seconds as f64 * 100.0 / self.seconds as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slos_parse_and_print() {
        let slo = Slo::parse("p99<1s").unwrap();
        assert_eq!((slo.percentile, slo.threshold), (99.0, Duration::from_secs(1)));
        assert_eq!(slo.to_string(), "p99<1s");
        assert_eq!(Slo::parse(" p95 < 250ms ").unwrap().to_string(), "p95<250ms");
        assert!((Slo::parse("p99.9<2s").unwrap().quantile() - 0.999).abs() < 1e-12);
        for bad in ["99<1s", "p99", "p100<1s", "p99<soon", "p99<0s"] {
            assert!(Slo::parse(bad).is_err(), "{bad}");
        }
    }
}
