//! The scaling brain: metrics in, a decision about desired capacity out.
//!
//! **Architecture invariant:** pure code. No I/O, no threads, no clock:
//! `now` (a [`Time`], i.e. a `Duration` since an arbitrary origin, the
//! same origin for every call) and the UTC wall clock (Unix seconds, used
//! only by scheduled actions) are arguments. The live controller calls it
//! once a second with real samples; the simulator calls the very same
//! functions in virtual time; both get the same decisions from the same
//! inputs.
//!
//! ```text
//!   every second:  autoscaler.observe(ServiceSample { at: now, replicas, … })
//!                  let d = autoscaler.decide(now, wall_unix_s, &FleetView { desired, … })
//!                  if let Some(change) = &d.change { set desired = change.to; record an event }
//!                  status.holding = d.holding (Display: "scale-in cooldown of target-cpu, 43 s left")
//!   ebb scale N:   let change = autoscaler.manual_scale(now, desired, N)  (clamped; an event)
//!   scale-in:      pick_for_scale_in(&candidates, desired - to)
//! ```
//!
//! Layout (metric source, strategy and target apart, as in
//! nomad-autoscaler):
//!
//! - [`metrics`]: samples, the bounded history, warm-up, aggregation.
//! - [`target`]: target tracking (HPA's replica calculator + time).
//! - [`step`]: alarms and step scaling (AWS / CloudWatch semantics).
//! - [`scheduled`] and [`cron`]: scheduled min / max / desired, in UTC.
//! - [`Autoscaler`] (`autoscaler.rs`): one per service; runs the policies
//!   and combines their votes: clamp to `[min, max]`, scale out if any
//!   policy asks for more, scale in only when none objects, and then to the
//!   largest count asked for (the safest wins).
//! - [`decision`]: the answer as data (`Decision`, `Change`, `Hold`, `Vote`).
//!
//! Conventions shared by every policy:
//!
//! - **One change per decision**, and the autoscaler assumes it is applied:
//!   the cooldowns start when the decision is made.
//! - **Every change of desired capacity starts the cooldowns**, whoever
//!   made it (a policy, a scheduled action, `ebb scale`, the bounds).
//!   A scale-in cooldown and a step policy's cooldown count from the last
//!   change in either direction; a scale-out cooldown from the last
//!   increase only, so shrinking never delays growing back.
//! - **Missing data is never zero load**: it blocks scale-in, and the hold
//!   says "held for lack of data". A policy with `on_missing_metrics =
//!   "scale_out"` adds one replica per cooldown while its metric's source
//!   is down for its whole window (see [`MetricHistory::source_down`]).
//! - **Low numbers can lie**: while 5xx answers spike or traffic collapses
//!   within seconds, and for a while after, nothing scales in
//!   ([`freeze`]).

pub mod cron;
pub mod decision;
pub mod forecast;
pub mod freeze;
pub mod metrics;
pub mod predictive;
pub mod saturation;
pub mod scheduled;
pub mod shadow;
pub mod step;
pub mod target;

mod autoscaler;

pub use autoscaler::Autoscaler;
pub use cron::{CivilTime, Cron, CronError};
pub use decision::{Cap, CapKind, Change, Decision, Direction, Hold, HoldKind, PolicyOutcome, Vote};
pub use forecast::{Forecast, Series, Skill, TooLittleHistory};
pub use freeze::FreezeConfig;
pub use metrics::{
    Metric, MetricHistory, NoData, Observation, OnMissing, ReplicaSample, Reporting, ServiceSample, Statistic,
};
pub use predictive::{ForecastState, PredictiveMode, PredictivePolicy};
pub use saturation::{Demand, HostFull, HostSample, Saturation, SaturationConfig};
pub use scheduled::ScheduledAction;
pub use shadow::{Shadow, ShadowPolicies};
pub use step::{check_steps, AdjustmentType, Alarm, AlarmState, Comparison, StepAdjustment, StepPolicy};
pub use target::{RateLimit, Recommendation, TargetTracking};

use std::collections::VecDeque;
use std::time::Duration;

/// A moment, as a duration since an origin the caller picks (the
/// controller's start, the simulation's start). Only differences matter.
pub type Time = Duration;

/// `[service.NAME.scaling]`: how a service's desired capacity follows its
/// load. The default has no policies: a fixed fleet that only `ebb scale`
/// and the `replicas` bounds change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScalingConfig {
    /// A replica's metrics are left out of every aggregate until it has
    /// been in service this long; it counts as capacity from its start
    /// (AWS instance warm-up).
    pub warmup: Duration,
    pub target_tracking: Vec<TargetTracking>,
    pub step: Vec<StepPolicy>,
    pub scheduled: Vec<ScheduledAction>,
    /// Predictive policies: a floor under capacity from a forecast of the
    /// load ([`predictive`]).
    pub predictive: Vec<PredictivePolicy>,
    /// Burst (panic) mode for the target tracking policies; off when `None`.
    pub burst: Option<Burst>,
    /// What the balancer's view of demand does: the scale-in guard and
    /// demand sizing (see [`saturation`]).
    pub saturation: SaturationConfig,
    /// The scale-in freeze on a 5xx spike or a traffic collapse (see
    /// [`freeze`]).
    pub freeze: FreezeConfig,
    /// Policies evaluated beside these but never applied (see [`shadow`]).
    pub shadow: Option<ShadowPolicies>,
}

impl ScalingConfig {
    /// The most metric history a policy may look at: an alarm's `period ×
    /// evaluation_periods`, a target tracking `window`. An hour of one
    /// sample per second per replica is a few MB; longer belongs to a
    /// metrics database, not to a control loop.
    pub const MAX_HISTORY: Duration = Duration::from_secs(3600);

    /// No policies: the fleet stays where `replicas` and `ebb scale` put it.
    /// Shadow policies and `forecast_only` predictive ones never act, so
    /// they do not count (nor do they turn on the saturation rules).
    pub fn is_fixed(&self) -> bool {
        self.target_tracking.is_empty()
            && self.step.is_empty()
            && self.scheduled.is_empty()
            && self.predictive.iter().all(|p| p.mode == PredictiveMode::ForecastOnly)
    }

    /// The configuration the shadow runs: this one with its target tracking
    /// and step policies replaced by the shadow's and no predictive policy
    /// (warm-up, scheduled actions, saturation and freeze rules as they
    /// are); `None` without shadow policies.
    pub fn shadow_config(&self) -> Option<ScalingConfig> {
        let shadow = self.shadow.as_ref().filter(|s| !s.is_empty())?;
        Some(ScalingConfig {
            target_tracking: shadow.target_tracking.clone(),
            step: shadow.step.clone(),
            burst: self.burst.filter(|_| !shadow.target_tracking.is_empty()),
            // Forecasts are fed to the live autoscaler only; a shadow is
            // about the reactive policies it names.
            predictive: Vec::new(),
            shadow: None,
            ..self.clone()
        })
    }

    /// How much metric history the policies read: the longest window or
    /// alarm span. [`MetricHistory`] keeps exactly this much.
    pub fn history_needed(&self) -> Duration {
        let windows = self.target_tracking.iter().map(|t| t.window);
        let alarms = self.step.iter().map(|s| s.alarm.span());
        let burst = self.burst.iter().map(|b| b.window);
        windows.chain(alarms).chain(burst).max().unwrap_or(Duration::ZERO)
    }

    /// What [`MetricHistory`] keeps: the policies' spans, and at least
    /// what the saturation rules read (status shows a full host even for a
    /// fixed fleet).
    fn history_kept(&self) -> Duration {
        self.history_needed().max(self.saturation.history_needed()).max(self.freeze.history_needed())
    }
}

/// Burst (panic) mode, after Knative: when a target tracking metric
/// averaged over the short `window` reaches `threshold` × its target, scale
/// out at once (no scale-out cooldown, sized on the short window) and do
/// not scale in until `duration` has passed since the last such second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    pub window: Duration,
    /// As a multiple of the target: 2.0 = twice the target.
    pub threshold: f64,
    pub duration: Duration,
}

impl Default for Burst {
    /// Knative's panic window (6 s = 10 % of its 60 s stable window) and
    /// threshold (200 %); burst lasts one default target tracking window.
    fn default() -> Self {
        Self { window: Duration::from_secs(6), threshold: 2.0, duration: Duration::from_secs(60) }
    }
}

/// The bounds of desired capacity: the service's `replicas` (config,
/// simulator), or what a scheduled action set (in force). The one bounds
/// type of the core, with the one clamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

impl Bounds {
    /// Clamps a requested count into `[min, max]`. Config validation keeps
    /// `min <= max`; should bounds ever cross anyway, `min` wins rather
    /// than a panic (`u32::clamp` panics when max < min).
    pub fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min, self.max.max(self.min))
    }
}

/// The fleet as the controller sees it at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetView {
    /// Desired capacity now (what the reconciler converges to).
    pub desired: u32,
    /// Replicas in the rotation (healthy, not leaving).
    pub in_service: u32,
    /// Replicas started but not yet in service. With `in_service` they
    /// count as capacity: a booting fleet does not scale out again.
    pub pending: u32,
    /// A deploy is running: its extra replicas are not spare capacity, so
    /// scale-in waits until it ends. Scale-out still happens.
    pub deploying: bool,
}

/// Recent changes of desired capacity: what cooldowns and rate limits
/// count from.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeLog {
    /// (when, from, to), within the longest rate-limit period.
    recent: VecDeque<(Time, u32, u32)>,
    keep: Duration,
    last_increase: Option<Time>,
    last_decrease: Option<Time>,
}

impl ChangeLog {
    fn new(keep: Duration) -> Self {
        Self { keep, ..Default::default() }
    }

    fn record(&mut self, now: Time, from: u32, to: u32) {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => self.last_increase = Some(now),
            std::cmp::Ordering::Less => self.last_decrease = Some(now),
            std::cmp::Ordering::Equal => return,
        }
        self.recent.push_back((now, from, to));
        while self.recent.front().is_some_and(|&(t, ..)| now.saturating_sub(t) > self.keep) {
            self.recent.pop_front();
        }
    }

    pub fn last_increase(&self) -> Option<Time> {
        self.last_increase
    }

    /// The last change in either direction.
    pub fn last_change(&self) -> Option<Time> {
        self.last_increase.max(self.last_decrease)
    }

    fn within(&self, now: Time, period: Duration) -> impl Iterator<Item = &(Time, u32, u32)> {
        self.recent.iter().filter(move |&&(t, ..)| now.saturating_sub(t) < period)
    }

    /// Replicas added within the last `period`.
    pub fn added_within(&self, now: Time, period: Duration) -> u32 {
        self.within(now, period).map(|&(_, from, to)| to.saturating_sub(from)).sum()
    }

    /// Replicas removed within the last `period`.
    pub fn removed_within(&self, now: Time, period: Duration) -> u32 {
        self.within(now, period).map(|&(_, from, to)| from.saturating_sub(to)).sum()
    }

    pub fn first_increase_within(&self, now: Time, period: Duration) -> Option<Time> {
        self.within(now, period).find(|&&(_, from, to)| to > from).map(|&(t, ..)| t)
    }

    pub fn first_decrease_within(&self, now: Time, period: Duration) -> Option<Time> {
        self.within(now, period).find(|&&(_, from, to)| to < from).map(|&(t, ..)| t)
    }
}

/// What every policy's vote reads.
pub(crate) struct Context<'a> {
    pub now: Time,
    pub desired: u32,
    /// Replicas that count toward capacity: at least `desired`.
    pub capacity: u32,
    pub history: &'a MetricHistory,
    pub log: &'a ChangeLog,
    /// While burst mode is on (target tracking only): this policy's
    /// recommendation on the burst window, and how long burst lasts.
    pub burst: Option<(Option<Recommendation>, Duration)>,
}

#[cfg(test)]
mod tests {
    use super::Bounds;

    #[test]
    fn bounds_clamp_and_never_panic() {
        let b = Bounds { min: 2, max: 5 };
        assert_eq!((b.clamp(0), b.clamp(3), b.clamp(9)), (2, 3, 5));
        // Crossed bounds (validation forbids them) give min, not a panic.
        assert_eq!(Bounds { min: 4, max: 1 }.clamp(9), 4);
    }
}
