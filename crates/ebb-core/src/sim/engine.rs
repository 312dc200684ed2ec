//! The second-by-second loop.
//!
//! Each virtual second `s` of the trace (the second `[s, s+1)`):
//!
//! 1. replicas whose boot has ended join the rotation (one that joins
//!    during the second serves for the rest of it); simulated failures
//!    (a Poisson draw from `failure_rate`) remove replicas, and the
//!    reconciler replaces them at once, as live;
//! 2. the [queueing model](super::queue) turns the offered rate, the
//!    backlog and the replicas in service into the second's numbers;
//! 3. at its end, `s + 1`, the sample the live controller would read goes
//!    to [`Autoscaler::observe`], and [`Autoscaler::decide`] gets the fleet
//!    as the controller sees it (`desired`, in service, pending) and the
//!    wall clock `start_unix + s + 1`;
//! 4. a change becomes a `scaled` event worded by [`Change`]'s `Display`,
//!    exactly as `ebb events` shows it, and the fleet converges: new
//!    replicas start booting, leaving ones (picked by
//!    [`pick_for_scale_in`]) drain at once.
//!
//! The work per second is one pass over the replicas (building the sample;
//! the autoscaler's own pass over it) with no allocation per replica:
//! samples carry empty replica ids, which the policies never read.
//!
//! [`Change`]: crate::scaling::Change

use super::queue::Flow;
use super::rng::Rng;
use super::summary::{Slo, Summary};
use super::trace::Trace;
use crate::config::Replicas;
use crate::scaling::{
    pick_for_scale_in, Autoscaler, Demand, FleetView, ReplicaSample, ScaleInCandidate, ScalingConfig, ServiceSample,
};
use std::time::Duration;

/// A policy to simulate: a service's scaling config and replicas.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Names the run in tables and charts: the config file, or a preset.
    pub name: String,
    pub scaling: ScalingConfig,
    pub replicas: Replicas,
}

/// The fleet: how much a replica serves, how long it takes to boot, how
/// often it fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetModel {
    /// Requests per second one replica serves when saturated (μ).
    pub capacity: f64,
    /// The CPU % a saturated replica reads: 100 for a replica that uses
    /// exactly its allotment; less when it saturates first (locks, I/O, a
    /// runtime's pauses, a busy host), more when nothing caps it at its
    /// allotment. CPU = utilisation × this.
    pub saturation_cpu: f64,
    /// From start to in service (health checks passed), to the millisecond.
    pub boot: Duration,
    /// Failures (crashes, spot interruptions) per replica-hour; 0 for none.
    pub failure_rate: f64,
    /// A request waits at most this long in the backlog before it is shed.
    pub queue_limit: Duration,
    pub seed: u64,
    /// The balancer's `max_in_flight`. With it, requests beyond the limit
    /// wait in ebb's queue, where the saturation rules see them; without
    /// it (as live) they wait inside the replicas and the balancer has no
    /// queue to read.
    pub max_in_flight: Option<u32>,
}

impl Default for FleetModel {
    fn default() -> Self {
        FleetModel {
            capacity: 50.0,
            saturation_cpu: 100.0,
            boot: Duration::from_secs(5),
            failure_rate: 0.0,
            queue_limit: Duration::from_secs(10),
            seed: 0,
            max_in_flight: None,
        }
    }
}

/// How to run and account.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The service's name, for event lines and replica ids.
    pub service: String,
    /// Unix seconds of the trace's first second: the wall clock scheduled
    /// actions see is `start_unix + virtual seconds`.
    pub start_unix: i64,
    pub slo: Slo,
    /// Per replica-hour.
    pub price: f64,
    /// Two scaling actions in opposite directions within this long are a flap.
    pub flap_window: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            service: "web".into(),
            start_unix: DEFAULT_START_UNIX,
            slo: Slo::default(),
            price: 0.05,
            flap_window: Duration::from_secs(600),
        }
    }
}

/// 2026-01-05T00:00:00Z, a Monday: when a trace says nothing about its
/// time, it starts here.
pub const DEFAULT_START_UNIX: i64 = 1_767_571_200;

/// One virtual second of a run: the second `[second, second+1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    pub second: u32,
    /// Requests offered.
    pub rate: f64,
    pub served: f64,
    pub shed: f64,
    /// Desired capacity after the decision at the end of the second.
    pub desired: u32,
    /// Replicas in service (serving) during the second.
    pub in_service: u32,
    /// Replicas booting during the second.
    pub pending: u32,
    /// CPU of each replica in service, %.
    pub cpu: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The SLO's percentile.
    pub slo_ms: Option<f64>,
    /// Queue time at the end of the second, ms.
    pub queue_ms: f64,
}

/// A line of the decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// Virtual seconds since the start.
    pub at: u64,
    /// As `ebb events` names it: `scaled`, `replica_exited`.
    pub kind: &'static str,
    pub replica: Option<String>,
    pub from: Option<u32>,
    pub to: Option<u32>,
    /// The change's `Display`, as the live event's reason.
    pub reason: String,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Run {
    pub policy: String,
    pub seconds: Vec<Second>,
    pub events: Vec<SimEvent>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Copy)]
struct Replica {
    /// Its id is `{service}-{number}`.
    number: u32,
    /// When it started, ms of virtual time.
    started: u64,
    /// When it joins the rotation (`started + boot`), ms.
    in_service_at: u64,
}

/// Runs `policy` against `trace` on the `model` fleet.
pub fn simulate(policy: &Policy, model: &FleetModel, trace: &Trace, options: &SimOptions) -> Run {
    let mut autoscaler = Autoscaler::new(&policy.scaling, policy.replicas.bounds);
    let boot = model.boot.as_millis() as u64;
    let queue_limit_s = model.queue_limit.as_secs_f64();
    let quantile = options.slo.quantile();
    let mut rng = Rng::new(model.seed);
    let id = |n: u32| format!("{}-{n}", options.service);

    let mut desired = policy.replicas.bounds.clamp(policy.replicas.desired);
    // Sorted by `in_service_at` (starts are appended, boot is constant):
    // the replicas in service are a prefix.
    let mut replicas: Vec<Replica> = Vec::new();
    let mut next_number = 1u32;
    let mut start = |replicas: &mut Vec<Replica>, at: u64, ready: u64| {
        replicas.push(Replica { number: next_number, started: at, in_service_at: ready });
        next_number += 1;
    };
    // The trace starts with the fleet already in service.
    for _ in 0..desired {
        start(&mut replicas, 0, 0);
    }

    let mut seconds = Vec::with_capacity(trace.len());
    let mut events = Vec::new();
    let mut backlog = 0.0;
    for (s, &rate) in trace.rates.iter().enumerate() {
        let s = s as u64;
        let (begin_ms, end_ms) = (s * 1000, s * 1000 + 1000);
        // 1. Failures during this second, replaced at once.
        if model.failure_rate > 0.0 && !replicas.is_empty() {
            let mean = replicas.len() as f64 * model.failure_rate / 3600.0;
            let failures = rng.poisson(mean).min(replicas.len() as u64);
            for _ in 0..failures {
                let victim = replicas.remove(rng.below(replicas.len()));
                events.push(SimEvent {
                    at: s,
                    kind: "replica_exited",
                    replica: Some(id(victim.number)),
                    from: None,
                    to: None,
                    reason: format!(
                        "replica interrupted (simulated failure) after {:.1} s; replacing it",
                        begin_ms.saturating_sub(victim.started) as f64 / 1000.0
                    ),
                });
            }
            for _ in replicas.len()..desired as usize {
                start(&mut replicas, begin_ms, begin_ms + boot);
            }
        }

        // 2. The second's flow. A replica that joins during the second
        //    serves for the rest of it: it counts as that fraction of a
        //    replica, and reports that fraction of a full one's numbers.
        let whole = replicas.partition_point(|r| r.in_service_at <= begin_ms);
        let in_service = replicas.partition_point(|r| r.in_service_at < end_ms);
        let part = |r: &Replica| (end_ms - r.in_service_at) as f64 / 1000.0;
        let serving = whole as f64 + replicas[whole..in_service].iter().map(part).sum::<f64>();
        let pending = replicas.len() - in_service;
        let flow = Flow::step(rate, backlog, serving, model.capacity, queue_limit_s);
        backlog = flow.backlog;
        let cpu = flow.utilisation * model.saturation_cpu;

        // 3. What the live controller would read at the end of the second.
        let at = Duration::from_millis(end_ms);
        let per_replica = if serving > 0.0 { flow.served / serving } else { 0.0 };
        let numbers = |r: &Replica, share: f64| ReplicaSample {
            id: String::new(),
            in_service_since: Some(Duration::from_millis(r.in_service_at)),
            cpu_percent: Some(cpu * share),
            requests_per_s: Some(per_replica * share),
            in_flight: Some(flow.in_flight_per_replica * share),
        };
        let mut sample = ServiceSample::new(at);
        sample.replicas.reserve_exact(replicas.len());
        sample.replicas.extend(replicas[..whole].iter().map(|r| numbers(r, 1.0)));
        sample.replicas.extend(replicas[whole..in_service].iter().map(|r| numbers(r, part(r))));
        sample.replicas.extend(replicas[in_service..].iter().map(|_| ReplicaSample::new(String::new(), None)));
        let unanswered = in_service == 0 && rate + flow.shed > 0.0;
        sample.requests_per_s = (!unanswered).then_some(flow.served);
        sample.concurrency = Some(flow.in_flight_per_replica * serving);
        sample.p95_ms = flow.latency_ms(0.95);
        sample.p99_ms = flow.latency_ms(0.99);
        sample.queue_time_ms = (in_service > 0).then_some(flow.queue_ms);
        sample.demand = Some(balancer_view(&flow, model.max_in_flight, rate, serving, in_service as u32));
        autoscaler.observe(sample);

        // 4. The decision, and the fleet converging to it.
        let fleet = FleetView { desired, in_service: in_service as u32, pending: pending as u32, deploying: false };
        let decision = autoscaler.decide(at, options.start_unix.saturating_add(s as i64 + 1), &fleet);
        if let Some(change) = decision.change {
            events.push(SimEvent {
                at: s + 1,
                kind: "scaled",
                replica: None,
                from: Some(change.from),
                to: Some(change.to),
                reason: change.to_string(),
            });
            desired = change.to;
        }
        if replicas.len() < desired as usize {
            for _ in replicas.len()..desired as usize {
                start(&mut replicas, end_ms, end_ms + boot);
            }
        } else if replicas.len() > desired as usize {
            let count = replicas.len() - desired as usize;
            let in_flight = flow.in_flight_per_replica.round() as u64;
            let leaving = scale_in(&replicas, count, end_ms, in_flight, &id);
            replicas.retain(|r| !leaving.contains(&r.number));
        }

        seconds.push(Second {
            second: s as u32,
            rate,
            served: flow.served,
            shed: flow.shed,
            desired,
            in_service: in_service as u32,
            pending: pending as u32,
            cpu,
            p50_ms: flow.latency_ms(0.5),
            p99_ms: flow.latency_ms(0.99),
            slo_ms: flow.latency_ms(quantile),
            queue_ms: flow.queue_ms,
        });
    }
    let summary = Summary::new(&policy.name, &seconds, &events, options.slo, options.price, options.flap_window);
    Run { policy: policy.name.clone(), seconds, events, summary }
}

/// What a live balancer would count in the second: with `max_in_flight`,
/// each replica holds at most the limit and the rest (the backlog and any
/// excess) waits in the balancer's queue; without it the requests wait in
/// the replicas and the balancer's queue is empty, as live.
fn balancer_view(flow: &Flow, limit: Option<u32>, offered: f64, serving: f64, routable: u32) -> Demand {
    let concurrency = flow.in_flight_per_replica * serving + flow.backlog;
    let (in_flight, queued, at_limit) = match limit {
        Some(limit) => {
            let held = (f64::from(limit) * serving).min(concurrency);
            let full = flow.in_flight_per_replica + flow.backlog / serving.max(1.0) >= f64::from(limit);
            (held, concurrency - held, if full { routable } else { 0 })
        }
        None => (concurrency, 0.0, 0),
    };
    Demand {
        offered_per_s: offered,
        served_per_s: flow.served,
        queued: queued.round() as u32,
        shed: if limit.is_some() { flow.shed.round() as u32 } else { 0 },
        in_flight: in_flight.round() as u32,
        routable,
        at_limit,
        limit,
    }
}

/// The replicas that leave at `now` (ms), chosen by [`pick_for_scale_in`]
/// as live.
///
/// Only the replicas it could pick are offered to it: every booting one,
/// and the `count` youngest in service with any of the same age. The rest
/// are older in-service replicas, identical to these in every other key
/// (same version, same in-flight count), so the core would never prefer
/// them; leaving them out keeps a scale-in of a 10,000-replica fleet from
/// formatting 10,000 ids.
fn scale_in(replicas: &[Replica], count: usize, now: u64, in_flight: u64, id: &dyn Fn(u32) -> String) -> Vec<u32> {
    let in_service = replicas.partition_point(|r| r.in_service_at <= now);
    let mut first = in_service.saturating_sub(count);
    if let Some(boundary) = replicas.get(first) {
        while first > 0 && replicas[first - 1].started == boundary.started {
            first -= 1;
        }
    }
    let candidates: Vec<ScaleInCandidate> = replicas[first..]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let serving = first + i < in_service;
            ScaleInCandidate {
                id: id(r.number),
                protected: false,
                current_version: true,
                in_service: serving,
                in_flight: if serving { in_flight } else { 0 },
                age: Duration::from_millis(now - r.started),
            }
        })
        .collect();
    let picked = pick_for_scale_in(&candidates, count);
    let mut numbers: Vec<u32> = picked
        .iter()
        .map(|c| replicas[first + candidates.iter().position(|x| std::ptr::eq(x, *c)).unwrap()].number)
        .collect();
    numbers.sort_unstable();
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::{Bounds, Metric, TargetTracking};

    fn policy(min: u32, max: u32) -> Policy {
        let mut t = TargetTracking::new(Metric::Cpu, 80.0);
        t.window = Duration::from_secs(10);
        t.scale_out_cooldown = Duration::from_secs(10);
        t.scale_in_cooldown = Duration::from_secs(30);
        t.scale_in_stabilization = Duration::from_secs(30);
        Policy {
            name: "test".into(),
            scaling: ScalingConfig { target_tracking: vec![t], ..Default::default() },
            replicas: Replicas { bounds: Bounds { min, max }, desired: min },
        }
    }

    #[test]
    fn a_step_scales_out_then_back_in() {
        let mut rates = vec![40.0; 60];
        rates.extend(vec![400.0; 300]);
        rates.extend(vec![40.0; 300]);
        let trace = Trace::new(rates, "step");
        let model = FleetModel { capacity: 50.0, boot: Duration::from_secs(3), ..Default::default() };
        let run = simulate(&policy(1, 20), &model, &trace, &SimOptions::default());
        let desired_at = |s: usize| run.seconds[s].desired;
        // The 10 s window's mean leaves the tolerance band 5 s after the step.
        let first = &run.events[0];
        assert_eq!((first.at, first.kind, first.from, first.to), (65, "scaled", Some(1), Some(2)));
        assert!(
            first.reason.starts_with("scale out 1 -> 2 by target-cpu: target tracking cpu: mean 90.0%"),
            "{}",
            first.reason
        );
        // Saturated replicas show 100 %: ×1.25 per cooldown, overshooting
        // while the backlog drains, then settling where 400 req/s is 80 %.
        assert!(run.seconds.iter().map(|s| s.desired).max().unwrap() > 10);
        assert_eq!(desired_at(359), 10, "ceil(400 / (50 × 0.8)) = 10");
        // Back in only after the stabilisation window, then down to min.
        let back_in = run.events.iter().find(|e| e.at > 360).unwrap();
        assert!(back_in.at >= 360 + 30 && back_in.reason.starts_with("scale in"), "{back_in:?}");
        assert_eq!(run.seconds.last().unwrap().desired, 1);
        assert!(run.summary.slo_violation_seconds > 0, "the step overloads one replica for a while");
        assert_eq!(run.summary.flaps, 1, "15 -> 13 reverses the scale-out to 15 within 10 min");
        assert_eq!(run.summary.scaling_actions as usize, run.events.len());
    }

    #[test]
    fn the_youngest_replicas_leave_first() {
        let ms = |secs: u32| u64::from(secs) * 1000;
        let mut replicas: Vec<Replica> =
            (1..=5).map(|n| Replica { number: n, started: ms(n), in_service_at: ms(n + 2) }).collect();
        replicas.push(Replica { number: 6, started: ms(9), in_service_at: ms(20) });
        let id = |n: u32| format!("web-{n}");
        assert_eq!(scale_in(&replicas, 1, ms(10), 3, &id), vec![6], "booting first");
        assert_eq!(scale_in(&replicas, 3, ms(10), 3, &id), vec![4, 5, 6]);
        replicas[3].started = ms(5); // 4 and 5 the same age: the id decides
        assert_eq!(scale_in(&replicas, 2, ms(10), 3, &id), vec![4, 6], "web-4 sorts before web-5");
    }

    #[test]
    fn failures_are_replaced_and_seeded() {
        let trace = Trace::new(vec![100.0; 3600], "flat");
        let model = FleetModel { failure_rate: 1.0, seed: 3, ..Default::default() };
        let a = simulate(&policy(4, 4), &model, &trace, &SimOptions::default());
        let b = simulate(&policy(4, 4), &model, &trace, &SimOptions::default());
        assert_eq!(a.events, b.events);
        let failures = a.summary.failures;
        assert!((1..=12).contains(&failures), "about 4 in an hour at 1 per replica-hour: {failures}");
        assert!(a.seconds.iter().all(|s| s.in_service + s.pending == 4), "always replaced");
        assert_eq!(a.events[0].kind, "replica_exited");
    }
}
