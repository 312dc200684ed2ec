//! Per-second metric history of one service, for the dashboard, the
//! metrics API and (later) the simulator's `--history`.
//!
//! A bounded ring in memory: one point a second for the last 24 hours.
//! Written once a second by the controller, read by API handlers; the lock
//! is held only to push or copy out, never on the request path.
//!
//! A leaf (std and serde only): the controller writes it, `state` persists
//! it, the admin API and `simulate --history` read it, and none of them
//! has to import another for it.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// 24 hours at one point a second.
pub const HISTORY_POINTS: usize = 24 * 60 * 60;

/// One second of one service.
// Also what `GET /api/v1/metrics` serves (as `MetricsPoint`, non-finite
// numbers left out: `finite`) and `ebb simulate --history` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MetricsPoint)]
pub struct ServicePoint {
    /// End of the second, Unix milliseconds.
    pub time_ms: u64,
    pub desired: u32,
    pub in_service: u32,
    pub pending: u32,
    /// Requests answered in this second, all replicas.
    pub requests_per_s: f64,
    /// Requests in flight at the end of the second.
    pub in_flight: u64,
    /// Latency percentiles of the requests answered in this second.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Mean CPU of the replicas that reported, % of their allotment.
    pub cpu_mean: Option<f64>,
    /// CPU by replica, % of the allotment: `[["web-3f9a1c", 42.5], ...]`.
    pub replica_cpu: Vec<(String, f64)>,
    /// What the balancer saw of demand in this second (offered, queued,
    /// shed, queue time) and whether the host was full; `null` for a worker
    /// pool and for points kept before ebb recorded it.
    #[serde(default)]
    pub traffic: Option<PointTraffic>,
    /// The count the service's shadow policies would run
    /// (`[service.NAME.scaling.shadow]`); `null` without them.
    #[serde(default)]
    pub shadow_desired: Option<u32>,
}

/// One second of the balancer's view of demand, and of the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MetricsTraffic)]
pub struct PointTraffic {
    /// Requests that arrived, whatever became of them (served, still
    /// queued, or shed).
    pub offered_per_s: f64,
    /// The most requests waiting in the balancer's queue at once.
    pub queued: u32,
    /// Requests turned away with 503 (queue full or queue timeout).
    pub shed_per_s: u32,
    /// Mean time requests waited for a replica, ms.
    pub queue_ms: Option<f64>,
    /// Requests queued or shed in this second.
    pub saturated: bool,
    /// ebb's host was full (more local replicas add no capacity).
    // Only ever set for a service on ebb's host.
    #[serde(default)]
    #[schema(required = true)]
    pub host_full: bool,
}

impl ServicePoint {
    /// The point as JSON may carry it: a NaN or infinite reading is no
    /// number (a rate reads 0, a CPU by replica is left out).
    pub fn finite(&self) -> ServicePoint {
        let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
        let or_zero = |v: f64| if v.is_finite() { v } else { 0.0 };
        ServicePoint {
            requests_per_s: or_zero(self.requests_per_s),
            p50_ms: finite(self.p50_ms),
            p99_ms: finite(self.p99_ms),
            cpu_mean: finite(self.cpu_mean),
            replica_cpu: self.replica_cpu.iter().filter(|(_, c)| c.is_finite()).cloned().collect(),
            traffic: self.traffic.as_ref().map(|t| PointTraffic {
                offered_per_s: or_zero(t.offered_per_s),
                queue_ms: finite(t.queue_ms),
                ..t.clone()
            }),
            ..self.clone()
        }
    }
}

#[derive(Debug, Default)]
pub struct MetricsHistory {
    points: Mutex<VecDeque<ServicePoint>>,
}

impl MetricsHistory {
    pub fn push(&self, point: ServicePoint) {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        if points.len() == HISTORY_POINTS {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// Puts back points kept by the state store (oldest first).
    pub fn restore(&self, restored: Vec<ServicePoint>) {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let skip = restored.len().saturating_sub(HISTORY_POINTS);
        points.extend(restored.into_iter().skip(skip));
        while points.len() > HISTORY_POINTS {
            points.pop_front();
        }
    }

    /// Points with `time_ms > since_ms`, oldest first.
    pub fn since(&self, since_ms: u64) -> Vec<ServicePoint> {
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let start = points.partition_point(|p| p.time_ms <= since_ms);
        points.range(start..).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(time_ms: u64) -> ServicePoint {
        ServicePoint {
            time_ms,
            desired: 2,
            in_service: 2,
            pending: 0,
            requests_per_s: 10.0,
            in_flight: 1,
            p50_ms: Some(1.0),
            p99_ms: Some(5.0),
            cpu_mean: Some(40.0),
            replica_cpu: vec![],
            traffic: None,
            shadow_desired: None,
        }
    }

    #[test]
    fn since_returns_newer_points_in_order() {
        let h = MetricsHistory::default();
        for t in [1000, 2000, 3000] {
            h.push(point(t));
        }
        let got: Vec<u64> = h.since(1000).iter().map(|p| p.time_ms).collect();
        assert_eq!(got, vec![2000, 3000]);
        assert_eq!(h.since(0).len(), 3);
        assert!(h.since(3000).is_empty());
    }
}
