//! Predictive scaling (`[[service.NAME.scaling.predictive]]`): raise the
//! **minimum** capacity ahead of a forecast load, by the time a replica
//! takes to boot. Scale-out only and never above `max`; the reactive
//! policies keep running beside it (the safest wins, as always).
//!
//! The forecast itself comes from [`super::forecast`], computed by the
//! caller from recorded history and handed to the autoscaler
//! ([`Autoscaler::set_forecast`](super::Autoscaler::set_forecast)); this
//! file turns a forecast into a vote and a floor. A policy in
//! `forecast_only` mode (the default) never acts: its forecast is
//! recorded and shown, and its vote says what it would keep. In
//! `forecast_and_scale` mode it acts only on a *trusted* forecast, one
//! that beat "same time yesterday" and "same time last week" in the
//! backtest ([`super::forecast::Skill::beats_baselines`]).

use super::decision::{Hold, HoldKind, PolicyOutcome, Vote};
use super::forecast::{Forecast, TooLittleHistory};
use super::metrics::duration;
use super::{Bounds, Metric};
use std::fmt;
use std::time::Duration;

/// One predictive policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictivePolicy {
    pub name: String,
    /// What is forecast: requests per second of the whole service
    /// (`requests_per_replica`) or its total CPU (`cpu`, the sum of the
    /// replicas' % of allotment); divided by `target` it is a count.
    pub metric: Metric,
    /// Per replica: requests/s, or CPU %.
    pub target: f64,
    pub mode: PredictiveMode,
    /// How long before a forecast load the capacity must be there; `None`:
    /// the service's boot time (measured live, the model's in simulation).
    pub launch_ahead: Option<Duration>,
}

impl PredictivePolicy {
    /// The metrics a forecast can be made of.
    pub const METRICS: [Metric; 2] = [Metric::RequestsPerReplica, Metric::Cpu];
}

/// `forecast_only` (records and shows) or `forecast_and_scale` (acts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PredictiveMode {
    #[default]
    ForecastOnly,
    ForecastAndScale,
}

impl PredictiveMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PredictiveMode::ForecastOnly => "forecast_only",
            PredictiveMode::ForecastAndScale => "forecast_and_scale",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [PredictiveMode::ForecastOnly, PredictiveMode::ForecastAndScale].into_iter().find(|m| m.as_str() == name)
    }
}

impl fmt::Display for PredictiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a policy has to go on: nothing yet, too little history, or a
/// forecast.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ForecastState {
    #[default]
    NotYet,
    TooLittleHistory(TooLittleHistory),
    Ready(Forecast),
}

impl From<Result<Forecast, TooLittleHistory>> for ForecastState {
    fn from(made: Result<Forecast, TooLittleHistory>) -> Self {
        match made {
            Ok(forecast) => ForecastState::Ready(forecast),
            Err(too_little) => ForecastState::TooLittleHistory(too_little),
        }
    }
}

/// A policy's vote, and the floor it puts under scale-in (0 for none).
pub(crate) fn vote(
    policy: &PredictivePolicy,
    state: &ForecastState,
    wall_unix_s: i64,
    boot: Duration,
    desired: u32,
    bounds: Bounds,
) -> (Vote, u32) {
    let name = &policy.name;
    // What a policy waits for shows in `holding` when nothing else holds;
    // a `forecast_only` policy waits for nothing that would act.
    let pending = |why: String| Vote {
        policy: name.clone(),
        outcome: match policy.mode {
            PredictiveMode::ForecastOnly => PolicyOutcome::Abstain,
            PredictiveMode::ForecastAndScale => PolicyOutcome::Pending(Hold {
                kind: HoldKind::LackOfData,
                policy: Some(name.clone()),
                why: why.clone(),
                remaining: None,
            }),
        },
        reason: why,
        capped: None,
    };
    let forecast = match state {
        ForecastState::NotYet => return (pending(format!("predictive {name}: no forecast yet")), 0),
        ForecastState::TooLittleHistory(t) => return (pending(format!("predictive {name}: {t}")), 0),
        ForecastState::Ready(f) => f,
    };
    let ahead = policy.launch_ahead.unwrap_or(boot);
    let Some((peak, at)) = forecast.peak(wall_unix_s, wall_unix_s + ahead.as_secs() as i64) else {
        return (
            pending(format!("predictive {name}: the forecast does not reach this far; it is made again hourly")),
            0,
        );
    };
    let wanted = (peak / policy.target - 1e-9).ceil().max(0.0) as u32;
    let floor = wanted.min(bounds.max);
    let unit = if policy.metric == Metric::Cpu { " % CPU" } else { " req/s" };
    let skill = forecast.skill_text();
    let mut reason = format!(
        "predictive {name}: forecast {peak:.0}{unit} at {} ({}; {skill}) / target {} per replica = at least {wanted}, {} ahead",
        clock(at),
        forecast.model,
        policy.target,
        duration(ahead)
    );
    if policy.mode == PredictiveMode::ForecastOnly {
        reason.push_str(" (forecast_only: not applied)");
        return (Vote { policy: name.clone(), outcome: PolicyOutcome::Abstain, reason, capped: None }, 0);
    }
    let vote = |outcome| Vote { policy: name.clone(), outcome, reason: reason.clone(), capped: None };
    if !forecast.trusted() {
        let why = format!("predictive {name}: not acting, the forecast does not beat the naive baselines: {skill}");
        let mut v = pending(why);
        v.reason = reason;
        return (v, 0);
    }
    if floor > desired {
        (vote(PolicyOutcome::Scale(floor)), floor)
    } else {
        (vote(PolicyOutcome::Abstain), floor)
    }
}

/// `14:05 UTC`.
fn clock(unix: i64) -> String {
    let s = unix.rem_euclid(86_400);
    format!("{:02}:{:02} UTC", s / 3600, s % 3600 / 60)
}
