//! The queueing model: from offered load and replicas in service to CPU,
//! queue time and latency, one second at a time.
//!
//! - Each replica in service serves at most `capacity` (μ) requests per
//!   second, at 100 % CPU; a request's service time is `1/μ`.
//! - **Fluid backlog.** The requests offered in a second (λ) plus those
//!   still waiting from before are served up to the fleet's capacity
//!   `n·μ`; the rest wait in a backlog. The backlog holds at most
//!   `queue_limit` seconds of the fleet's capacity: a request that would
//!   wait longer is **shed** (in a live fleet: the client times out, the
//!   balancer answers 502/504). With no replica in service every request
//!   is shed.
//! - **CPU** of every replica in service: `served / (n·μ)`, i.e.
//!   `min(ρ, 1) × 100 %` with `ρ = λ / (n·μ)` (times the model's
//!   `saturation_cpu` / 100 when a saturated replica reads less than
//!   100 %); load is spread evenly (the balancer's least-outstanding choice
//!   keeps replicas close).
//! - **Queue time**: the backlog left at the end of the second divided by
//!   the capacity: how long a request arriving then waits.
//! - **Latency** percentile `q`: each replica as an M/M/1 queue (Poisson
//!   arrivals, exponential service), whose response time is exponential
//!   with mean `(1/μ) / (1 − ρ)`: `t_q = (1/μ) × ln(1 / (1 − q)) / (1 − ρ)`,
//!   plus the queue time. `ρ` is capped at 0.95 in that formula: beyond
//!   it the server is saturated and the fluid backlog carries the delay.
//!   Worked numbers, μ = 50 req/s (20 ms): ρ = 0.5 → p99 = 184 ms,
//!   ρ = 0.8 → 460 ms, ρ = 0.9 → 921 ms, saturated → 1.84 s + queue.
//!
//! Limits (also in docs/simulation.md): M/M/1 per replica is pessimistic
//! for a least-outstanding balancer (which behaves more like one shared
//! queue, M/M/c) and optimistic for heavy-tailed service times; no
//! per-request randomness (the same second always gives the same numbers);
//! a booting replica takes no traffic; a leaving replica drains at once.

/// A second's flow through the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Flow {
    /// Requests served in the second.
    pub served: f64,
    /// Requests still waiting at the end of the second.
    pub backlog: f64,
    /// Requests given up on this second (beyond the backlog bound).
    pub shed: f64,
    /// Busy fraction of the fleet, 0 to 1 (CPU % / 100).
    pub utilisation: f64,
    /// Mean requests in flight per replica in service (Little's law on the
    /// M/M/1 queue, plus its share of the backlog).
    pub in_flight_per_replica: f64,
    /// How long a request arriving at the end of the second waits, in ms.
    pub queue_ms: f64,
    /// The service time `1/μ`, in ms.
    service_ms: f64,
}

/// ρ in the latency formula never exceeds this (see the module docs).
pub const RHO_CAP: f64 = 0.95;

impl Flow {
    /// One second: `offered` requests arrive, `backlog` are waiting from
    /// before, `in_service` replicas (a fraction for one that joined during
    /// the second) serve `capacity` requests per second each; a request
    /// waits at most `queue_limit_s`.
    /// A second with no replica in service and the requests held (scale
    /// to zero): nothing served, `held` carried over, `shed` refused, the
    /// held ones waiting `queue_ms` so far.
    pub fn held(held: f64, shed: f64, queue_ms: f64) -> Flow {
        Flow { backlog: held, shed, queue_ms, ..Flow::default() }
    }

    pub fn step(offered: f64, backlog: f64, in_service: f64, capacity: f64, queue_limit_s: f64) -> Flow {
        let fleet = in_service * capacity;
        let service_ms = if capacity > 0.0 { 1000.0 / capacity } else { 0.0 };
        if fleet <= 0.0 {
            return Flow { shed: offered + backlog, service_ms, ..Flow::default() };
        }
        let work = offered + backlog;
        let served = work.min(fleet);
        let mut left = work - served;
        let bound = fleet * queue_limit_s;
        let shed = (left - bound).max(0.0);
        left -= shed;
        let utilisation = served / fleet;
        let rho = utilisation.min(RHO_CAP);
        Flow {
            served,
            backlog: left,
            shed,
            utilisation,
            in_flight_per_replica: rho / (1.0 - rho) + left / in_service,
            queue_ms: left / fleet * 1000.0,
            service_ms,
        }
    }

    /// The latency percentile `q` (0.99 for p99) in ms; `None` when no
    /// request was served in the second.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        if self.served <= 0.0 {
            return None;
        }
        let rho = self.utilisation.min(RHO_CAP);
        Some(self.service_ms * (1.0 / (1.0 - q)).ln() / (1.0 - rho) + self.queue_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.5
    }

    #[test]
    fn under_capacity_nothing_waits() {
        let f = Flow::step(80.0, 0.0, 2.0, 50.0, 10.0);
        assert_eq!((f.served, f.backlog, f.shed), (80.0, 0.0, 0.0));
        assert_eq!(f.utilisation, 0.8);
        assert!(close(f.latency_ms(0.99).unwrap(), 460.5), "{:?}", f.latency_ms(0.99));
        assert!(close(f.latency_ms(0.5).unwrap(), 69.3));
        assert!((f.in_flight_per_replica - 4.0).abs() < 1e-9);
    }

    #[test]
    fn overload_builds_a_backlog_then_sheds() {
        // 150 offered to 100 of capacity: 50 wait, 0.5 s of queue.
        let f = Flow::step(150.0, 0.0, 2.0, 50.0, 1.0);
        assert_eq!((f.served, f.backlog, f.shed, f.utilisation), (100.0, 50.0, 0.0, 1.0));
        assert_eq!(f.queue_ms, 500.0);
        assert!(close(f.latency_ms(0.99).unwrap(), 1842.1 + 500.0));
        // Another 150: 100 wait, the bound (1 s = 100) holds; then shed.
        let g = Flow::step(150.0, f.backlog, 2.0, 50.0, 1.0);
        assert_eq!((g.backlog, g.shed), (100.0, 0.0));
        let h = Flow::step(150.0, g.backlog, 2.0, 50.0, 1.0);
        assert_eq!((h.backlog, h.shed), (100.0, 50.0));
        // The load falls: the backlog drains.
        let i = Flow::step(20.0, h.backlog, 2.0, 50.0, 1.0);
        assert_eq!((i.served, i.backlog), (100.0, 20.0));
    }

    #[test]
    fn without_replicas_every_request_is_shed() {
        let f = Flow::step(30.0, 5.0, 0.0, 50.0, 10.0);
        assert_eq!((f.served, f.shed), (0.0, 35.0));
        assert_eq!(f.latency_ms(0.99), None);
        assert_eq!(Flow::step(0.0, 0.0, 3.0, 50.0, 10.0).latency_ms(0.99), None, "idle: no latency");
    }
}
