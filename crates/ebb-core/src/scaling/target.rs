//! Target tracking: keep a metric near a target by sizing the fleet in
//! proportion (AWS target tracking, ECS service auto scaling, Kubernetes
//! HPA).
//!
//! [`recommend`] is HPA's replica calculator, a pure function of one
//! observation: `ceil(sum of warm replicas' values / target)`, with a
//! tolerance band around the target where nothing changes, and replicas
//! without numbers (warming up, not reporting) counted **against** the
//! direction of change: as idle capacity when scaling out (they will take
//! load), as loaded at target when scaling in (missing is not idle).
//!
//! [`TargetState::vote`] wraps it with time: cooldowns, the scale-in
//! stabilisation window (the highest recommendation over the window wins,
//! so the fleet never flips direction within it), rate limits, burst mode.

use super::decision::{Cap, CapKind, Hold, HoldKind, PolicyOutcome, Vote};
use super::metrics::{duration, number, number_trim, Metric, Observation, OnMissing};
use super::{Context, Time};
use std::collections::VecDeque;
use std::time::Duration;

/// One `[[service.NAME.scaling.target_tracking]]` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTracking {
    /// Names the policy in events (`target-cpu` unless set).
    pub name: String,
    pub metric: Metric,
    /// Percent for `cpu`; req/s, requests in flight or ms for the others.
    pub target: f64,
    /// No change while `|value / target - 1| <= tolerance` (HPA's 10 %).
    pub tolerance: f64,
    /// The metric is averaged over this window before it is compared.
    pub window: Duration,
    /// No scale-out within this long of the last scale-out.
    pub scale_out_cooldown: Duration,
    /// No scale-in within this long of the last change in either direction.
    pub scale_in_cooldown: Duration,
    /// Scale in only to the highest count recommended within this window.
    pub scale_in_stabilization: Duration,
    pub disable_scale_in: bool,
    /// How fast this policy may grow the fleet.
    pub scale_out_rate: RateLimit,
    /// How fast this policy may shrink the fleet.
    pub scale_in_rate: RateLimit,
    /// What no data at all for the whole window does: hold, or scale out
    /// by one (the metric source may be down because of the load).
    pub on_missing_metrics: OnMissing,
}

impl TargetTracking {
    pub const DEFAULT_TOLERANCE: f64 = 0.1;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
    pub const DEFAULT_SCALE_OUT_COOLDOWN: Duration = Duration::from_secs(60);
    pub const DEFAULT_SCALE_IN_COOLDOWN: Duration = Duration::from_secs(300);
    pub const DEFAULT_SCALE_IN_STABILIZATION: Duration = Duration::from_secs(300);

    /// A policy with every default, for tests and the simulator.
    pub fn new(metric: Metric, target: f64) -> Self {
        Self {
            name: format!("target-{metric}"),
            metric,
            target,
            tolerance: Self::DEFAULT_TOLERANCE,
            window: Self::DEFAULT_WINDOW,
            scale_out_cooldown: Self::DEFAULT_SCALE_OUT_COOLDOWN,
            scale_in_cooldown: Self::DEFAULT_SCALE_IN_COOLDOWN,
            scale_in_stabilization: Self::DEFAULT_SCALE_IN_STABILIZATION,
            disable_scale_in: false,
            scale_out_rate: RateLimit::DEFAULT_SCALE_OUT,
            scale_in_rate: RateLimit::DEFAULT_SCALE_IN,
            on_missing_metrics: OnMissing::Hold,
        }
    }
}

/// At most `max(+percent %, +replicas)` per `period` (for growth; the same
/// shape, downwards, for shrinking), measured from the count at the start
/// of the period, like the HPA's `behavior` policies with `selectPolicy: Max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub percent: f64,
    pub replicas: u32,
    pub period: Duration,
}

impl RateLimit {
    /// HPA's default: double or add 4, whichever is more, per 15 s.
    pub const DEFAULT_SCALE_OUT: RateLimit = RateLimit { percent: 100.0, replicas: 4, period: Duration::from_secs(15) };
    /// HPA's default: up to all of it (down to `min`) per 15 s; scale-in is
    /// slowed by the stabilisation window instead.
    pub const DEFAULT_SCALE_IN: RateLimit = RateLimit { percent: 100.0, replicas: 0, period: Duration::from_secs(15) };

    /// The highest count allowed, growing from `base`. At least `base + 1`,
    /// so a percentage alone can still grow a fleet of zero.
    pub fn growth_limit(&self, base: u32) -> u32 {
        let by_percent = ceil_count(f64::from(base) * (1.0 + self.percent / 100.0));
        by_percent.max(base.saturating_add(self.replicas)).max(base.saturating_add(1))
    }

    /// The lowest count allowed, shrinking from `base`. At most `base - 1`.
    pub fn shrink_limit(&self, base: u32) -> u32 {
        let by_percent = ceil_count(f64::from(base) * (1.0 - self.percent / 100.0).max(0.0));
        by_percent.min(base.saturating_sub(self.replicas)).min(base.saturating_sub(1))
    }

    fn describe(&self, growth: bool) -> String {
        let sign = if growth { '+' } else { '-' };
        let mut parts = Vec::new();
        if self.percent > 0.0 {
            parts.push(format!("{sign}{}%", number_trim(self.percent)));
        }
        if self.replicas > 0 {
            parts.push(format!("{sign}{}", self.replicas));
        }
        let what = if parts.len() == 1 { parts.remove(0) } else { format!("max({})", parts.join(", ")) };
        format!("{what} per {}", duration(self.period))
    }
}

/// `ceil`, forgiving float noise (`3 × 80 / 80` is 3, not 4), saturating.
pub(crate) fn ceil_count(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let c = (x - 1e-9).ceil();
    if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// What [`recommend`] concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The count the numbers ask for; equal to `desired` when they ask for
    /// no change.
    pub count: u32,
    /// Why no change, when the numbers alone hold it (tolerance band,
    /// warming replicas, missing data).
    pub hold: Option<HoldKind>,
    /// The arithmetic, for the reason string.
    pub reason: String,
}

/// HPA's replica calculator on one observation.
///
/// - `desired`: the current desired count;
/// - `capacity`: replicas that count toward capacity now (at least
///   `desired`; more while extra replicas are still starting).
///
/// Worked numbers, target 80 %, tolerance 0.1:
/// - 3 warm at mean 92.4 %: ratio 1.155 is outside 0.9..1.1, so
///   `ceil(3 × 92.4 / 80) = ceil(3.47) = 4`: scale out.
/// - 3 warm at mean 76 %: ratio 0.95, inside the band: stay at 3.
/// - 4 replicas, 3 warm at mean 40 %, 1 warming: scale-in counts the
///   warming one at target: `ceil(3 × 40 / 80) + 1 = 2 + 1 = 3`.
/// - 4 replicas, 2 warm at mean 100 %, 2 warming: `ceil(2 × 100 / 80) = 3`
///   is not above 4: the warming replicas already cover it, stay.
pub fn recommend(obs: &Observation, target: f64, tolerance: f64, desired: u32, capacity: u32) -> Recommendation {
    let metric = obs.metric;
    let r = obs.replicas;
    let ratio = obs.value / target;
    let seen = r.reporting;
    let sum = obs.value * f64::from(seen);
    let what = if metric.is_per_replica() {
        format!(
            "mean {} over {seen} warm replica{} in the last {}",
            metric.show(obs.value),
            plural(seen),
            duration(obs.window)
        )
    } else {
        format!(
            "{} over the last {} with {seen} warm replica{}",
            metric.show(obs.value),
            duration(obs.window),
            plural(seen)
        )
    };
    let against = format!("{what} vs target {}", metric.show_target(target));
    let formula = format!("ceil({seen} × {} / {})", number(obs.value), number_trim(target));
    let base = ceil_count(sum / target);

    // Float noise must not decide which side of the band edge 11.0 / 10 is.
    if (ratio - 1.0).abs() <= tolerance + 1e-9 {
        return Recommendation {
            count: desired,
            hold: Some(HoldKind::Tolerance),
            reason: format!(
                "target tracking {metric}: {against}: within the tolerance band ±{}%",
                number_trim(tolerance * 100.0)
            ),
        };
    }
    if ratio > 1.0 {
        // Scale out: replicas without numbers count as idle capacity.
        if base > desired {
            return Recommendation {
                count: base,
                hold: None,
                reason: format!("target tracking {metric}: {against} -> {formula} = {base}"),
            };
        }
        return Recommendation {
            count: desired,
            hold: Some(HoldKind::WarmingUp),
            reason: format!(
                "target tracking {metric}: {against} -> {formula} = {base}, not above desired {desired}: replicas warming up cover it"
            ),
        };
    }
    // Scale in: replicas without numbers count as loaded at target.
    let unknown = capacity.max(desired).saturating_sub(seen);
    let adjusted_ratio = (sum + f64::from(unknown) * target) / (f64::from(seen + unknown) * target);
    let count = base.saturating_add(unknown);
    let unknown_note = if unknown > 0 {
        let mut parts = Vec::new();
        if r.warming > 0 {
            parts.push(format!("{} warming up", r.warming));
        }
        if r.not_reporting > 0 {
            parts.push(format!("{} not reporting {metric}", r.not_reporting));
        }
        let starting = unknown.saturating_sub(r.warming + r.not_reporting);
        if starting > 0 {
            parts.push(format!("{starting} not yet sampled"));
        }
        format!(" + {unknown} counted at target ({})", parts.join(", "))
    } else {
        String::new()
    };
    let reason = format!("target tracking {metric}: {against} -> {formula}{unknown_note} = {count}");
    if unknown > 0 && (adjusted_ratio >= 1.0 - tolerance - 1e-9 || count >= desired) {
        return Recommendation {
            count: desired,
            hold: Some(HoldKind::LackOfData),
            reason: format!("{reason}; held for lack of data: missing numbers are not idle"),
        };
    }
    Recommendation { count: count.min(desired), hold: None, reason }
}

/// `on_missing_metrics = "scale_out"` with the metric's source down: one
/// more replica, not more (no number says how many the load needs), and
/// not within `cooldown` of `since` (the policy's own cooldown clock), so
/// a long outage grows the fleet by one per cooldown up to `max`.
pub(super) fn scale_out_on_missing(
    policy: &str,
    missing: &str,
    cooldown: Duration,
    since: Option<Time>,
    ctx: &Context<'_>,
) -> Vote {
    let to = ctx.desired.saturating_add(1);
    let reason = format!(
        "{missing}: the metric source looks down; on_missing_metrics = \"scale_out\" -> {} + 1 = {to}",
        ctx.desired
    );
    let outcome = match remaining(since, cooldown, ctx.now) {
        Some(left) => PolicyOutcome::Stay(Some(Hold {
            kind: HoldKind::Cooldown,
            policy: Some(policy.to_string()),
            why: format!("scale-out cooldown of {policy} (scaling out on missing metrics)"),
            remaining: Some(left),
        })),
        None => PolicyOutcome::Scale(to),
    };
    Vote { policy: policy.to_string(), outcome, reason, capped: None }
}

pub(super) fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What target tracking remembers between decisions.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    /// Recommendations within the stabilisation window, oldest first.
    recommendations: VecDeque<(Time, u32)>,
    /// The first decision has been made. At start the current count counts
    /// as a recommendation (as the HPA does), so a fleet is not shrunk on
    /// its first seconds of data.
    started: bool,
}

impl TargetState {
    pub(super) fn vote(&mut self, policy: &TargetTracking, ctx: &Context<'_>) -> Vote {
        let vote = |outcome, reason: String, capped| Vote { policy: policy.name.clone(), outcome, reason, capped };
        let hold = |kind, why: String, remaining| {
            PolicyOutcome::Stay(Some(Hold { kind, policy: Some(policy.name.clone()), why, remaining }))
        };
        let (now, desired) = (ctx.now, ctx.desired);
        if !std::mem::replace(&mut self.started, true) {
            self.remember(now, desired, policy.scale_in_stabilization);
        }

        let obs = match ctx.history.observe(policy.metric, now, policy.window) {
            Ok(obs) => obs,
            Err(no_data) => {
                if policy.on_missing_metrics == OnMissing::ScaleOut
                    && ctx.history.source_down(policy.metric, now, policy.window)
                {
                    return scale_out_on_missing(
                        &policy.name,
                        &format!("target tracking {}: {no_data}", policy.metric),
                        policy.scale_out_cooldown,
                        ctx.log.last_increase(),
                        ctx,
                    );
                }
                let why = format!("held for lack of data: {no_data}");
                return vote(hold(HoldKind::LackOfData, why.clone(), None), format!("target tracking {why}"), None);
            }
        };
        let mut rec = recommend(&obs, policy.target, policy.tolerance, desired, ctx.capacity);
        if let Some((Some(burst), _)) = &ctx.burst {
            if burst.count > rec.count {
                rec = Recommendation { count: burst.count, hold: None, reason: format!("burst: {}", burst.reason) };
            }
        }
        self.remember(now, rec.count, policy.scale_in_stabilization);

        if rec.count > desired {
            let in_burst = ctx.burst.is_some();
            if let Some(left) = remaining(ctx.log.last_increase(), policy.scale_out_cooldown, now).filter(|_| !in_burst)
            {
                let why = format!("scale-out cooldown of {}", policy.name);
                return vote(hold(HoldKind::Cooldown, why, Some(left)), rec.reason, None);
            }
            let rate = policy.scale_out_rate;
            let base = desired.saturating_sub(ctx.log.added_within(now, rate.period));
            let limit = rate.growth_limit(base);
            if limit <= desired {
                let left =
                    ctx.log.first_increase_within(now, rate.period).map(|t| (t + rate.period).saturating_sub(now));
                let why = format!("scale-out rate limit of {} ({} from {base})", policy.name, rate.describe(true));
                return vote(hold(HoldKind::RateLimit, why, left), rec.reason, None);
            }
            let capped = (rec.count > limit).then(|| Cap {
                kind: CapKind::RateLimit,
                wanted: rec.count,
                limit,
                note: format!("rate limit {} from {base} allows {limit} (wanted {})", rate.describe(true), rec.count),
            });
            return vote(PolicyOutcome::Scale(rec.count.min(limit)), rec.reason, capped);
        }
        if rec.count == desired {
            let outcome = match (rec.hold, window_hold(policy, ctx, &obs)) {
                // Off target, but the window (or rounding) says the count
                // is right: show the numbers that decide.
                (Some(HoldKind::Tolerance) | None, Some(why)) => hold(HoldKind::Window, why, None),
                (Some(kind), _) => hold(kind, hold_why(kind, policy, &obs), None),
                (None, None) => PolicyOutcome::Stay(None),
            };
            return vote(outcome, rec.reason, None);
        }

        // The numbers ask for fewer replicas.
        if policy.disable_scale_in {
            let why = format!("scale-in disabled for {}", policy.name);
            return vote(hold(HoldKind::ScaleInDisabled, why, None), rec.reason, None);
        }
        if let Some((_, left)) = ctx.burst {
            return vote(
                hold(HoldKind::Burst, "burst: no scale-in until it has passed".into(), Some(left)),
                rec.reason,
                None,
            );
        }
        if let Some(left) = remaining(ctx.log.last_change(), policy.scale_in_cooldown, now) {
            let why = format!("scale-in cooldown of {}", policy.name);
            return vote(hold(HoldKind::Cooldown, why, Some(left)), rec.reason, None);
        }
        // Stabilisation: the highest recommendation within the window.
        let window_start = now.saturating_sub(policy.scale_in_stabilization);
        let stable = self.recommendations.iter().filter(|(t, _)| *t > window_start).map(|&(_, n)| n).max();
        let stable = stable.unwrap_or(rec.count).max(rec.count);
        if stable >= desired {
            let last_high =
                self.recommendations.iter().rev().find(|&&(t, n)| n >= desired && t > window_start).map(|&(t, _)| t);
            let left = last_high.map(|t| (t + policy.scale_in_stabilization).saturating_sub(now));
            let why = format!(
                "scale-in stabilisation of {}: {stable} recommended within the last {}",
                policy.name,
                duration(policy.scale_in_stabilization)
            );
            return vote(hold(HoldKind::Stabilization, why, left), rec.reason, None);
        }
        let rate = policy.scale_in_rate;
        let base = desired.saturating_add(ctx.log.removed_within(now, rate.period));
        let limit = rate.shrink_limit(base);
        if limit >= desired {
            let left = ctx.log.first_decrease_within(now, rate.period).map(|t| (t + rate.period).saturating_sub(now));
            let why = format!("scale-in rate limit of {} ({} from {base})", policy.name, rate.describe(false));
            return vote(hold(HoldKind::RateLimit, why, left), rec.reason, None);
        }
        let mut reason = rec.reason;
        if stable > rec.count {
            reason = format!(
                "{reason}; stabilised to {stable}, the highest recommendation in the last {}",
                duration(policy.scale_in_stabilization)
            );
        }
        let capped = (stable < limit).then(|| Cap {
            kind: CapKind::RateLimit,
            wanted: stable,
            limit,
            note: format!("rate limit {} from {base} allows {limit} (wanted {stable})", rate.describe(false)),
        });
        vote(PolicyOutcome::Scale(stable.max(limit)), reason, capped)
    }

    fn remember(&mut self, now: Time, count: u32, window: Duration) {
        self.recommendations.push_back((now, count));
        while self.recommendations.front().is_some_and(|&(t, _)| now.saturating_sub(t) > window) {
            self.recommendations.pop_front();
        }
    }
}

fn hold_why(kind: HoldKind, policy: &TargetTracking, obs: &Observation) -> String {
    let value = policy.metric.show(obs.value);
    let target = policy.metric.show_target(policy.target);
    match kind {
        HoldKind::Tolerance => format!(
            "{} {value} is within ±{}% of target {target}",
            policy.metric,
            number_trim(policy.tolerance * 100.0)
        ),
        HoldKind::WarmingUp => format!("replicas warming up cover {} {value} (target {target})", policy.metric),
        HoldKind::LackOfData => format!(
            "held for lack of data: {} replica(s) without {} count at target",
            obs.replicas.warming + obs.replicas.not_reporting,
            policy.metric
        ),
        _ => format!("{} {value} vs target {target}", policy.metric),
    }
}

/// The last seconds this policy's window is compared with: a short look
/// at what the metric does now.
const RECENT: Duration = Duration::from_secs(10);

/// Why a policy stays although its metric is off target, when it is
/// (the first that applies):
/// - the last 10 s are above the target band but the window's mean is not
///   (a long window catches up slowly; it may not even be full yet);
/// - the window is below target, but rounding up keeps the count
///   (`ceil(1 × 40 / 80) = 1`).
fn window_hold(policy: &TargetTracking, ctx: &Context<'_>, obs: &Observation) -> Option<String> {
    let metric = policy.metric;
    let target = metric.show_target(policy.target);
    let band = policy.tolerance + 1e-9;
    let ratio = obs.value / policy.target;
    let below = (ratio < 1.0 - band).then(|| {
        format!(
            "{metric} {} is below target {target}, but {} is the fewest replicas that keep it under target",
            metric.show(obs.value),
            ctx.desired
        )
    });
    let recent = (policy.window > RECENT).then(|| ctx.history.observe(metric, ctx.now, RECENT).ok()).flatten();
    let Some(recent) = recent.filter(|r| r.value / policy.target > 1.0 + band) else { return below };
    let seen = ctx.history.first_at().map_or(Duration::ZERO, |first| ctx.now.saturating_sub(first));
    let filling =
        if seen < policy.window { format!(", only {} of it seen so far", duration(seen)) } else { String::new() };
    Some(format!(
        "{metric} {} in the last {} is above target {target}, but {} decides on the mean over {} ({}{filling})",
        metric.show(recent.value),
        duration(RECENT),
        policy.name,
        duration(policy.window),
        metric.show(obs.value)
    ))
}

/// Time left of a period that started at `since`, if any.
pub(super) fn remaining(since: Option<Time>, period: Duration, now: Time) -> Option<Duration> {
    let end = since? + period;
    (end > now).then(|| end - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::metrics::Reporting;

    fn obs(metric: Metric, value: f64, reporting: u32, not_reporting: u32, warming: u32) -> Observation {
        Observation {
            metric,
            window: Duration::from_secs(60),
            value,
            datapoints: 60,
            replicas: Reporting { reporting, not_reporting, warming },
        }
    }

    /// Replica-calculator cases in the style of Kubernetes'
    /// `replica_calculator_test.go`: one observation in, one count out.
    #[test]
    fn replica_calculator_cases() {
        struct Case {
            name: &'static str,
            metric: Metric,
            value: f64,
            target: f64,
            tolerance: f64,
            /// (reporting, not reporting, warming)
            replicas: (u32, u32, u32),
            desired: u32,
            capacity: u32,
            want: u32,
            hold: Option<HoldKind>,
        }
        #[rustfmt::skip]
        let cases = [
            Case { name: "scale up", metric: Metric::Cpu, value: 92.4, target: 80.0, tolerance: 0.1, replicas: (3, 0, 0), desired: 3, capacity: 3, want: 4, hold: None },
            Case { name: "scale up a lot", metric: Metric::Cpu, value: 100.0, target: 20.0, tolerance: 0.1, replicas: (2, 0, 0), desired: 2, capacity: 2, want: 10, hold: None },
            Case { name: "scale down", metric: Metric::Cpu, value: 31.0, target: 80.0, tolerance: 0.1, replicas: (3, 0, 0), desired: 3, capacity: 3, want: 2, hold: None },
            Case { name: "scale down to one", metric: Metric::Cpu, value: 1.0, target: 80.0, tolerance: 0.1, replicas: (5, 0, 0), desired: 5, capacity: 5, want: 1, hold: None },
            Case { name: "tolerance above", metric: Metric::Cpu, value: 87.9, target: 80.0, tolerance: 0.1, replicas: (3, 0, 0), desired: 3, capacity: 3, want: 3, hold: Some(HoldKind::Tolerance) },
            Case { name: "tolerance below", metric: Metric::Cpu, value: 72.1, target: 80.0, tolerance: 0.1, replicas: (3, 0, 0), desired: 3, capacity: 3, want: 3, hold: Some(HoldKind::Tolerance) },
            Case { name: "zero tolerance", metric: Metric::Cpu, value: 81.0, target: 80.0, tolerance: 0.0, replicas: (4, 0, 0), desired: 4, capacity: 4, want: 5, hold: None },
            Case { name: "exact multiple is not rounded up", metric: Metric::Cpu, value: 120.0, target: 80.0, tolerance: 0.1, replicas: (2, 0, 0), desired: 2, capacity: 2, want: 3, hold: None },
            Case { name: "below target but rounding keeps count", metric: Metric::Cpu, value: 70.0, target: 80.0, tolerance: 0.1, replicas: (3, 0, 0), desired: 3, capacity: 3, want: 3, hold: None },
            Case { name: "missing replica idle on scale up", metric: Metric::Cpu, value: 100.0, target: 50.0, tolerance: 0.1, replicas: (2, 1, 0), desired: 3, capacity: 3, want: 4, hold: None },
            Case { name: "missing replica at target on scale down", metric: Metric::Cpu, value: 20.0, target: 80.0, tolerance: 0.1, replicas: (3, 1, 0), desired: 4, capacity: 4, want: 2, hold: None },
            Case { name: "missing replicas block scale down", metric: Metric::Cpu, value: 60.0, target: 80.0, tolerance: 0.1, replicas: (1, 2, 0), desired: 3, capacity: 3, want: 3, hold: Some(HoldKind::LackOfData) },
            Case { name: "warming covers scale up", metric: Metric::Cpu, value: 100.0, target: 80.0, tolerance: 0.1, replicas: (2, 0, 2), desired: 4, capacity: 4, want: 4, hold: Some(HoldKind::WarmingUp) },
            Case { name: "warming not enough", metric: Metric::Cpu, value: 100.0, target: 40.0, tolerance: 0.1, replicas: (2, 0, 2), desired: 4, capacity: 4, want: 5, hold: None },
            Case { name: "warming counted at target on scale down", metric: Metric::Cpu, value: 10.0, target: 80.0, tolerance: 0.1, replicas: (3, 0, 1), desired: 4, capacity: 4, want: 2, hold: None },
            Case { name: "starting replicas not yet sampled count at target", metric: Metric::Cpu, value: 10.0, target: 80.0, tolerance: 0.1, replicas: (2, 0, 0), desired: 4, capacity: 4, want: 3, hold: None },
            Case { name: "requests per replica", metric: Metric::RequestsPerReplica, value: 150.0, target: 100.0, tolerance: 0.1, replicas: (4, 0, 0), desired: 4, capacity: 4, want: 6, hold: None },
            Case { name: "concurrency per replica", metric: Metric::ConcurrencyPerReplica, value: 2.5, target: 10.0, tolerance: 0.1, replicas: (8, 0, 0), desired: 8, capacity: 8, want: 2, hold: None },
            Case { name: "latency scales the warm count", metric: Metric::P95Latency, value: 340.0, target: 200.0, tolerance: 0.1, replicas: (3, 0, 0), desired: 3, capacity: 3, want: 6, hold: None },
            Case { name: "queue time low", metric: Metric::QueueTime, value: 1.0, target: 50.0, tolerance: 0.1, replicas: (4, 0, 0), desired: 4, capacity: 4, want: 1, hold: None },
            // 120 queued items over 4 replicas in service = 30 each; at 10 per replica: 12.
            Case { name: "items per replica", metric: Metric::ItemsPerReplica, value: 30.0, target: 10.0, tolerance: 0.1, replicas: (4, 0, 0), desired: 4, capacity: 4, want: 12, hold: None },
            Case { name: "items per replica: an empty queue asks for none (min clamps)", metric: Metric::ItemsPerReplica, value: 0.0, target: 10.0, tolerance: 0.1, replicas: (6, 0, 0), desired: 6, capacity: 6, want: 0, hold: None },
            Case { name: "items per replica: a booting worker counts at target", metric: Metric::ItemsPerReplica, value: 2.0, target: 10.0, tolerance: 0.1, replicas: (3, 0, 1), desired: 4, capacity: 4, want: 2, hold: None },
        ];
        for c in cases {
            let (reporting, not_reporting, warming) = c.replicas;
            let o = obs(c.metric, c.value, reporting, not_reporting, warming);
            let got = recommend(&o, c.target, c.tolerance, c.desired, c.capacity);
            assert_eq!((got.count, got.hold), (c.want, c.hold), "{}: {}", c.name, got.reason);
        }
    }

    #[test]
    fn reasons_show_the_arithmetic() {
        let r = recommend(&obs(Metric::Cpu, 92.4, 3, 0, 0), 80.0, 0.1, 3, 3);
        assert_eq!(
            r.reason,
            "target tracking cpu: mean 92.4% over 3 warm replicas in the last 1 min vs target 80% -> ceil(3 × 92.4 / 80) = 4"
        );
        let r = recommend(&obs(Metric::Cpu, 10.0, 3, 0, 1), 80.0, 0.1, 4, 4);
        assert_eq!(
            r.reason,
            "target tracking cpu: mean 10.0% over 3 warm replicas in the last 1 min vs target 80% -> ceil(3 × 10.0 / 80) + 1 counted at target (1 warming up) = 2"
        );
        let r = recommend(&obs(Metric::P95Latency, 340.0, 3, 0, 0), 200.0, 0.1, 3, 3);
        assert_eq!(
            r.reason,
            "target tracking p95_latency: 340.0 ms over the last 1 min with 3 warm replicas vs target 200 ms -> ceil(3 × 340.0 / 200) = 6"
        );
        let r = recommend(&obs(Metric::ItemsPerReplica, 30.0, 4, 0, 0), 10.0, 0.1, 4, 4);
        assert_eq!(
            r.reason,
            "target tracking items_per_replica: 30.0 items/replica over the last 1 min with 4 warm replicas vs target 10 items/replica -> ceil(4 × 30.0 / 10) = 12"
        );
    }

    #[test]
    fn rate_limits_follow_the_hpa() {
        let out = RateLimit::DEFAULT_SCALE_OUT;
        assert_eq!(out.growth_limit(1), 5, "+4 beats ×2");
        assert_eq!(out.growth_limit(10), 20, "×2 beats +4");
        assert_eq!(out.growth_limit(0), 4);
        let percent_only = RateLimit { percent: 50.0, replicas: 0, period: Duration::from_secs(60) };
        assert_eq!(percent_only.growth_limit(0), 1, "always at least one");
        assert_eq!(percent_only.growth_limit(3), 5, "ceil(4.5)");
        assert_eq!(RateLimit::DEFAULT_SCALE_IN.shrink_limit(10), 0);
        let gentle = RateLimit { percent: 10.0, replicas: 1, period: Duration::from_secs(60) };
        assert_eq!(gentle.shrink_limit(20), 18, "-10% beats -1");
        assert_eq!(gentle.shrink_limit(3), 2, "at least one");
        assert_eq!(out.describe(true), "max(+100%, +4) per 15 s");
        assert_eq!(gentle.describe(false), "max(-10%, -1) per 1 min");
    }

    #[test]
    fn ceil_forgives_float_noise() {
        assert_eq!(ceil_count(3.0 * 80.0 / 80.0), 3);
        assert_eq!(ceil_count(0.1 + 0.2 + 2.7), 3);
        assert_eq!(ceil_count(3.01), 4);
        assert_eq!(ceil_count(f64::NAN), 0);
        assert_eq!(ceil_count(f64::INFINITY), u32::MAX);
    }
}
