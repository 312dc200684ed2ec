//! `[service.NAME.scaling]`: the raw tables and the checks that turn them
//! into a [`ScalingConfig`].
//!
//! The array elements (`[[service.web.scaling.target_tracking]]`, `step`,
//! `scheduled`, and each of a step policy's `steps`) are `Spanned`: toml
//! knows their span whether they are written as headers or inline, and a
//! missing key is reported at the policy it is missing from. Other tables
//! (`alarm`, `burst`, the rate limits) may be written with dotted keys, so
//! they are not spanned; errors point at one of their keys, or at the
//! policy or service around them.

mod predictive;

use super::{closest, Check};
use crate::config::value::{Dur, Int, Number};
use crate::config::{Bounds, ServiceConfig};
use crate::scaling::metrics::duration as human;
use crate::scaling::{
    check_steps, AdjustmentType, Alarm, Burst, Comparison, Cron, FreezeConfig, Metric, OnMissing, RateLimit,
    SaturationConfig, ScalingConfig, ScheduledAction, ShadowPolicies, Statistic, StepAdjustment, StepPolicy,
    TargetTracking,
};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a scaling table like [service.web.scaling]")]
pub(super) struct RawScaling {
    warmup: Option<Spanned<Dur>>,
    target_tracking: Option<Vec<Spanned<RawTargetTracking>>>,
    step: Option<Vec<Spanned<RawStep>>>,
    scheduled: Option<Vec<Spanned<RawScheduled>>>,
    predictive: Option<Vec<Spanned<predictive::RawPredictive>>>,
    burst: Option<RawBurst>,
    saturation: Option<RawSaturation>,
    freeze: Option<RawFreeze>,
    shadow: Option<RawShadow>,
}

/// `[service.NAME.scaling.shadow]`: the same policy tables as the active
/// ones, evaluated beside them and never applied.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "shadow policies like [[service.web.scaling.shadow.target_tracking]] or [[service.web.scaling.shadow.step]]"
)]
struct RawShadow {
    target_tracking: Option<Vec<Spanned<RawTargetTracking>>>,
    step: Option<Vec<Spanned<RawStep>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a freeze table like { error_ratio = 0.2, traffic_drop = 0.5, window = "30s", hold = "5m" }"#
)]
struct RawFreeze {
    enabled: Option<bool>,
    error_ratio: Option<Spanned<Number>>,
    traffic_drop: Option<Spanned<Number>>,
    window: Option<Spanned<Dur>>,
    hold: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a saturation table like { hold_scale_in = true, settle = "5s", scale_out = true, scale_out_after = "3s" }"#
)]
struct RawSaturation {
    hold_scale_in: Option<bool>,
    settle: Option<Spanned<Dur>>,
    scale_out: Option<bool>,
    scale_out_after: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a target tracking policy like [[service.web.scaling.target_tracking]] with metric = "cpu" and target = 80"#
)]
struct RawTargetTracking {
    name: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
    target: Option<Spanned<Number>>,
    tolerance: Option<Spanned<Number>>,
    window: Option<Spanned<Dur>>,
    scale_out_cooldown: Option<Spanned<Dur>>,
    scale_in_cooldown: Option<Spanned<Dur>>,
    scale_in_stabilization: Option<Spanned<Dur>>,
    disable_scale_in: Option<Spanned<bool>>,
    scale_out_rate: Option<RawRate>,
    scale_in_rate: Option<RawRate>,
    on_missing_metrics: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a rate limit like { percent = 100, replicas = 4, period = "15s" }"#)]
struct RawRate {
    percent: Option<Spanned<Number>>,
    replicas: Option<Spanned<Int>>,
    period: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a step scaling policy like [[service.web.scaling.step]]")]
struct RawStep {
    name: Option<Spanned<String>>,
    alarm: Option<RawAlarm>,
    adjustment_type: Option<Spanned<String>>,
    steps: Option<Spanned<Vec<Spanned<RawStepAdjustment>>>>,
    min_adjustment_magnitude: Option<Spanned<Int>>,
    cooldown: Option<Spanned<Dur>>,
    on_missing_metrics: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"an alarm like { metric = "cpu", comparison = ">", threshold = 60, period = "30s", evaluation_periods = 2 }"#
)]
struct RawAlarm {
    metric: Option<Spanned<String>>,
    statistic: Option<Spanned<String>>,
    comparison: Option<Spanned<String>>,
    threshold: Option<Spanned<Number>>,
    period: Option<Spanned<Dur>>,
    evaluation_periods: Option<Spanned<Int>>,
    datapoints_to_alarm: Option<Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a step like { lower = 0, upper = 20, adjustment = 1 }")]
struct RawStepAdjustment {
    lower: Option<Spanned<Number>>,
    upper: Option<Spanned<Number>>,
    adjustment: Option<Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a scheduled action like { cron = "0 8 * * MON-FRI", min = 4 }"#)]
struct RawScheduled {
    name: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    /// An IANA zone whose wall clock the cron is read on; UTC by default.
    timezone: Option<Spanned<String>>,
    min: Option<Spanned<Int>>,
    max: Option<Spanned<Int>>,
    desired: Option<Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a burst table like { window = "6s", threshold = 2.0, duration = "60s" }"#)]
struct RawBurst {
    window: Option<Spanned<Dur>>,
    threshold: Option<Spanned<Number>>,
    duration: Option<Spanned<Dur>>,
}

/// Names the autoscaler uses itself in events.
const RESERVED_NAMES: [&str; 3] = ["manual", "bounds", SaturationConfig::POLICY];

fn metric_list() -> String {
    Metric::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

impl Check<'_> {
    /// `[service.NAME.scaling]`, checked against the service's bounds.
    pub(super) fn scaling(
        &mut self,
        service: &Spanned<String>,
        raw: Option<RawScaling>,
        bounds: Bounds,
    ) -> ScalingConfig {
        let Some(raw) = raw else { return ScalingConfig::default() };
        let mut names = Names::default();
        let target_tracking: Vec<TargetTracking> = raw
            .target_tracking
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.target_tracking(i, p, &mut names))
            .collect();
        let step =
            raw.step.unwrap_or_default().into_iter().enumerate().map(|(i, p)| self.step(i, p, &mut names)).collect();
        let scheduled = raw
            .scheduled
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, a)| self.scheduled(i, a, bounds, &mut names))
            .collect();
        let predictive = raw
            .predictive
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.predictive(i, p, &mut names))
            .collect();
        let burst = raw.burst.map(|b| self.burst(service, b, target_tracking.is_empty()));
        let saturation = raw.saturation.map_or_else(SaturationConfig::default, |s| self.saturation(s));
        let freeze = raw.freeze.map_or_else(FreezeConfig::default, |f| self.freeze(f));
        // Checked like active policies (a shadow with an error is refused);
        // their names are their own, as the events say `shadow NAME`.
        let shadow = raw.shadow.map(|raw| {
            let mut names = Names::default();
            let target_tracking = (raw.target_tracking.unwrap_or_default().into_iter().enumerate())
                .map(|(i, p)| self.target_tracking(i, p, &mut names))
                .collect();
            let step = (raw.step.unwrap_or_default().into_iter().enumerate())
                .map(|(i, p)| self.step(i, p, &mut names))
                .collect();
            ShadowPolicies { target_tracking, step }
        });
        ScalingConfig {
            warmup: raw.warmup.map(|w| w.into_inner().0).unwrap_or(Duration::ZERO),
            target_tracking,
            step,
            scheduled,
            predictive,
            burst,
            saturation,
            freeze,
            shadow,
        }
    }

    /// `[service.NAME.scaling.freeze]`: on unless `enabled = false`.
    fn freeze(&mut self, raw: RawFreeze) -> FreezeConfig {
        let d = FreezeConfig::default();
        let share = |key: &str, raw: Option<Spanned<Number>>, default: f64, example: &str, this: &mut Self| {
            let Some(v) = raw else { return default };
            let x = v.get_ref().0;
            if !(x.is_finite() && x > 0.0 && x <= 1.0) {
                this.problem(
                    v.span(),
                    format!("freeze.{key} is a share above 0 and at most 1 (1 turns this rule off), e.g. {key} = {example}, not {x}"),
                );
                return default;
            }
            x
        };
        let error_ratio = share("error_ratio", raw.error_ratio, d.error_ratio, "0.2 for 20% of answers", self);
        let traffic_drop = share("traffic_drop", raw.traffic_drop, d.traffic_drop, "0.5 for half", self);
        let mut window = self.history_span(
            "freeze.window",
            raw.window.as_ref(),
            d.window,
            "the 5xx ratio and traffic are read over it",
        );
        let min = 2 * crate::scaling::freeze::RECENT;
        if let Some(w) = raw.window.as_ref().filter(|_| window < min) {
            self.problem(
                w.span(),
                format!(
                    "freeze.window must be at least {} (the last {} of traffic is compared with the rest of the window), e.g. window = \"30s\"",
                    human(min),
                    human(crate::scaling::freeze::RECENT)
                ),
            );
            window = d.window;
        }
        FreezeConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            error_ratio,
            traffic_drop,
            window,
            hold: raw.hold.map_or(d.hold, |h| h.into_inner().0),
        }
    }

    /// `on_missing_metrics` of a policy: `hold` (the default) or `scale_out`.
    fn on_missing(&mut self, raw: Option<Spanned<String>>) -> OnMissing {
        let Some(raw) = raw else { return OnMissing::Hold };
        OnMissing::from_name(raw.get_ref()).unwrap_or_else(|| {
            let known: Vec<&str> = OnMissing::ALL.iter().map(|m| m.as_str()).collect();
            let hint = closest(raw.get_ref(), &known).map(|k| format!("did you mean {k:?}? ")).unwrap_or_default();
            self.problem(
                raw.span(),
                format!(
                    "unknown on_missing_metrics {:?}; {hint}expected \"hold\" (missing data changes nothing, the default) or \"scale_out\" (one more replica per cooldown while the metric's source is down)",
                    raw.get_ref()
                ),
            );
            OnMissing::Hold
        })
    }

    /// `[service.NAME.scaling.saturation]`: the guard is on unless the
    /// table turns it off by name (`hold_scale_in = false`).
    fn saturation(&mut self, raw: RawSaturation) -> SaturationConfig {
        let d = SaturationConfig::default();
        let settle = match raw.settle {
            None => d.settle,
            Some(v) => {
                let settle = v.get_ref().0;
                if settle > ScalingConfig::MAX_HISTORY {
                    self.problem(
                        v.span(),
                        format!(
                            "saturation.settle ({}) is longer than the {} of metric history ebb keeps; shorten it",
                            human(settle),
                            human(ScalingConfig::MAX_HISTORY)
                        ),
                    );
                    d.settle
                } else {
                    settle
                }
            }
        };
        let scale_out_after = self.history_span(
            "saturation.scale_out_after",
            raw.scale_out_after.as_ref(),
            d.scale_out_after,
            "demand sizing waits that long for requests to keep queueing",
        );
        SaturationConfig {
            hold_scale_in: raw.hold_scale_in.unwrap_or(d.hold_scale_in),
            settle,
            scale_out: raw.scale_out.unwrap_or(d.scale_out),
            scale_out_after,
        }
    }

    fn target_tracking(&mut self, i: usize, raw: Spanned<RawTargetTracking>, names: &mut Names) -> TargetTracking {
        let at = raw.span();
        let raw = raw.into_inner();
        let metric = self.metric("target_tracking", raw.metric.as_ref(), &at, "a target tracking policy");
        let d = TargetTracking::new(metric, 1.0);
        let name = self.name(raw.name, names, || format!("target-{metric}"), i);
        let target = match raw.target {
            None => {
                self.problem(
                    at.clone(),
                    format!(
                        "target tracking policy `{name}` has no target; add the value to hold {metric} at, e.g. target = {}",
                        example_target(metric)
                    ),
                );
                1.0
            }
            Some(t) => self.above_zero("target", &t, &format!("e.g. target = {}", example_target(metric))),
        };
        let tolerance = match raw.tolerance {
            None => d.tolerance,
            Some(t) => {
                let v = t.get_ref().0;
                if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                    self.problem(
                        t.span(),
                        format!("tolerance is a fraction of the target from 0 to below 1, e.g. 0.1 for ±10%, not {v}"),
                    );
                    d.tolerance
                } else {
                    v
                }
            }
        };
        let window = self.history_span("window", raw.window.as_ref(), d.window, "the metric is averaged over it");
        TargetTracking {
            name,
            metric,
            target,
            tolerance,
            window,
            scale_out_cooldown: raw.scale_out_cooldown.map_or(d.scale_out_cooldown, |v| v.into_inner().0),
            scale_in_cooldown: raw.scale_in_cooldown.map_or(d.scale_in_cooldown, |v| v.into_inner().0),
            scale_in_stabilization: raw.scale_in_stabilization.map_or(d.scale_in_stabilization, |v| v.into_inner().0),
            disable_scale_in: raw.disable_scale_in.is_some_and(|v| v.into_inner()),
            scale_out_rate: self.rate("scale_out_rate", raw.scale_out_rate, d.scale_out_rate, &at),
            scale_in_rate: self.rate("scale_in_rate", raw.scale_in_rate, d.scale_in_rate, &at),
            on_missing_metrics: self.on_missing(raw.on_missing_metrics),
        }
    }

    fn rate(&mut self, key: &str, raw: Option<RawRate>, default: RateLimit, policy: &Range<usize>) -> RateLimit {
        let Some(raw) = raw else { return default };
        let mut rate = RateLimit { percent: 0.0, replicas: 0, period: RateLimit::DEFAULT_SCALE_OUT.period };
        if let Some(p) = &raw.percent {
            let v = p.get_ref().0;
            if !(v.is_finite() && v >= 0.0) {
                self.problem(p.span(), format!("{key}.percent must be 0 or more, e.g. 100 to allow doubling, not {v}"));
            } else {
                rate.percent = v;
            }
        }
        if let Some(n) = &raw.replicas {
            let v = n.get_ref().0;
            if !(0..=i64::from(ServiceConfig::MAX_REPLICAS)).contains(&v) {
                self.problem(
                    n.span(),
                    format!("{key}.replicas must be from 0 to {}, not {v}", ServiceConfig::MAX_REPLICAS),
                );
            } else {
                rate.replicas = v as u32;
            }
        }
        if let Some(p) = &raw.period {
            if p.get_ref().0.is_zero() {
                self.problem(p.span(), format!("{key}.period must be longer than 0, e.g. \"15s\""));
            } else {
                rate.period = p.get_ref().0;
            }
        }
        let written = raw.percent.as_ref().map(|p| p.get_ref().0).unwrap_or(0.0) > 0.0
            || raw.replicas.as_ref().is_some_and(|n| n.get_ref().0 > 0);
        if !written {
            let span = raw
                .percent
                .as_ref()
                .map(|p| p.span())
                .or(raw.replicas.as_ref().map(|r| r.span()))
                .or(raw.period.as_ref().map(|p| p.span()))
                .unwrap_or(policy.clone());
            self.problem(
                span,
                format!(
                    "{key} allows no change at all; give percent or replicas above 0, e.g. {key} = {{ percent = 100, replicas = 4, period = \"15s\" }}"
                ),
            );
            return default;
        }
        rate
    }

    fn step(&mut self, i: usize, raw: Spanned<RawStep>, names: &mut Names) -> StepPolicy {
        let at = raw.span();
        let raw = raw.into_inner();
        let name = self.name(raw.name, names, || format!("step-{}", i + 1), i);
        let alarm = match raw.alarm {
            Some(alarm) => self.alarm(&name, alarm, &at),
            None => {
                self.problem(
                    at.clone(),
                    format!(
                        r#"step policy `{name}` has no alarm; add one, e.g. alarm = {{ metric = "cpu", comparison = ">", threshold = 60, period = "30s", evaluation_periods = 2 }}"#
                    ),
                );
                Alarm {
                    metric: Metric::Cpu,
                    statistic: Statistic::Average,
                    comparison: Comparison::Greater,
                    threshold: 1.0,
                    period: Alarm::DEFAULT_PERIOD,
                    evaluation_periods: 1,
                    datapoints_to_alarm: 1,
                }
            }
        };
        let adjustment_type = match &raw.adjustment_type {
            None => AdjustmentType::ChangeInCapacity,
            Some(t) => AdjustmentType::from_name(t.get_ref()).unwrap_or_else(|| {
                let known: Vec<&str> = AdjustmentType::ALL.iter().map(|a| a.as_str()).collect();
                let hint = closest(t.get_ref(), &known).map(|k| format!("did you mean {k:?}? ")).unwrap_or_default();
                self.problem(
                    t.span(),
                    format!("unknown adjustment_type {:?}; {hint}expected one of {}", t.get_ref(), known.join(", ")),
                );
                AdjustmentType::ChangeInCapacity
            }),
        };
        let min_adjustment_magnitude = match raw.min_adjustment_magnitude {
            None => None,
            Some(m) if adjustment_type != AdjustmentType::PercentChangeInCapacity => {
                self.problem(
                    m.span(),
                    format!(
                        "min_adjustment_magnitude only applies with adjustment_type = \"percent_change_in_capacity\" (this policy uses {:?}); remove it",
                        adjustment_type.as_str()
                    ),
                );
                None
            }
            Some(m) => {
                let v = m.get_ref().0;
                if !(1..=i64::from(ServiceConfig::MAX_REPLICAS)).contains(&v) {
                    self.problem(m.span(), format!("min_adjustment_magnitude must be 1 or more, not {v}"));
                    None
                } else {
                    Some(v as u32)
                }
            }
        };
        let steps = match raw.steps {
            None => {
                self.problem(
                    at.clone(),
                    format!(
                        "step policy `{name}` has no steps; add them, e.g. steps = [{{ lower = 0, adjustment = 1 }}]"
                    ),
                );
                Vec::new()
            }
            Some(steps) => self.steps(&name, steps, adjustment_type, alarm.comparison),
        };
        StepPolicy {
            name,
            alarm,
            adjustment_type,
            steps,
            min_adjustment_magnitude,
            cooldown: raw.cooldown.map_or(StepPolicy::DEFAULT_COOLDOWN, |c| c.into_inner().0),
            on_missing_metrics: self.on_missing(raw.on_missing_metrics),
        }
    }

    fn alarm(&mut self, policy: &str, raw: RawAlarm, at: &Range<usize>) -> Alarm {
        let what = format!("the alarm of step policy `{policy}`");
        let metric = self.metric("alarm", raw.metric.as_ref(), at, &what);
        let statistic = match &raw.statistic {
            None => Statistic::Average,
            Some(s) => Statistic::from_name(s.get_ref()).unwrap_or_else(|| {
                let name = s.get_ref();
                let hint = if name == "median" {
                    "use p50; ".to_string()
                } else if let Some(p) = name.strip_prefix('p').and_then(|p| p.parse::<f64>().ok()) {
                    format!("a percentile is above 0 and below 100, not {p}; ")
                } else {
                    closest(name, &["average", "min", "max", "sum"])
                        .map(|k| format!("did you mean {k:?}? "))
                        .unwrap_or_default()
                };
                self.problem(
                    s.span(),
                    format!(
                        "unknown statistic {name:?}; {hint}expected average, min, max, sum or a percentile like p90"
                    ),
                );
                Statistic::Average
            }),
        };
        let comparison = match &raw.comparison {
            None => {
                self.problem(
                    raw.metric.as_ref().map_or(at.clone(), |m| m.span()),
                    format!(r#"{what} has no comparison; add comparison = ">" (or ">=", "<", "<=")"#),
                );
                Comparison::Greater
            }
            Some(c) => Comparison::from_name(c.get_ref()).unwrap_or_else(|| {
                self.problem(
                    c.span(),
                    format!(
                        r#"unknown comparison {:?}; expected ">", ">=", "<" or "<=" (or CloudWatch's GreaterThanThreshold, GreaterThanOrEqualToThreshold, LessThanThreshold, LessThanOrEqualToThreshold)"#,
                        c.get_ref()
                    ),
                );
                Comparison::Greater
            }),
        };
        let threshold = match &raw.threshold {
            None => {
                self.problem(
                    raw.metric.as_ref().map_or(at.clone(), |m| m.span()),
                    format!("{what} has no threshold; add one, e.g. threshold = {}", example_target(metric)),
                );
                1.0
            }
            Some(t) => self.above_zero("threshold", t, &format!("e.g. threshold = {}", example_target(metric))),
        };
        let period = match &raw.period {
            None => Alarm::DEFAULT_PERIOD,
            Some(p) if p.get_ref().0 < Duration::from_secs(1) => {
                self.problem(
                    p.span(),
                    "alarm period must be at least 1s: metrics are sampled once a second, so a shorter period has no datapoint",
                );
                Alarm::DEFAULT_PERIOD
            }
            Some(p) => p.get_ref().0,
        };
        let evaluation_periods = self.count("evaluation_periods", raw.evaluation_periods.as_ref(), 1);
        let datapoints_to_alarm = match &raw.datapoints_to_alarm {
            None => evaluation_periods,
            Some(d) => {
                let n = self.count("datapoints_to_alarm", Some(d), evaluation_periods);
                if n > evaluation_periods {
                    self.problem(
                        d.span(),
                        format!(
                            "datapoints_to_alarm ({n}) is more than evaluation_periods ({evaluation_periods}{}); it counts breaching periods among those, so lower it or raise evaluation_periods",
                            if raw.evaluation_periods.is_none() { ", the default" } else { "" }
                        ),
                    );
                    evaluation_periods
                } else {
                    n
                }
            }
        };
        let alarm = Alarm { metric, statistic, comparison, threshold, period, evaluation_periods, datapoints_to_alarm };
        if alarm.span() > ScalingConfig::MAX_HISTORY {
            let span = raw
                .evaluation_periods
                .as_ref()
                .map(|e| e.span())
                .or(raw.period.as_ref().map(|p| p.span()))
                .unwrap_or(at.clone());
            self.problem(
                span,
                format!(
                    "the alarm looks at {evaluation_periods} × {} = {} of metrics, longer than the {} of history ebb keeps; shorten period or evaluation_periods",
                    human(period),
                    human(alarm.span()),
                    human(ScalingConfig::MAX_HISTORY)
                ),
            );
        }
        alarm
    }

    fn steps(
        &mut self,
        policy: &str,
        raw: Spanned<Vec<Spanned<RawStepAdjustment>>>,
        adjustment_type: AdjustmentType,
        comparison: Comparison,
    ) -> Vec<StepAdjustment> {
        let whole = raw.span();
        let raw = raw.into_inner();
        let spans: Vec<Range<usize>> = raw.iter().map(|s| s.span()).collect();
        let mut steps = Vec::new();
        let mut ok = true;
        for s in raw {
            let at = s.span();
            let s = s.into_inner();
            let bound = |b: &Option<Spanned<Number>>, this: &mut Self| match b {
                Some(v) if !v.get_ref().0.is_finite() => {
                    this.problem(v.span(), "a step bound must be a finite number; leave it out for infinity");
                    None
                }
                Some(v) => Some(v.get_ref().0),
                None => None,
            };
            let (lower, upper) = (bound(&s.lower, self), bound(&s.upper, self));
            let adjustment = match &s.adjustment {
                None => {
                    self.problem(
                        at,
                        format!(
                            "this step of `{policy}` has no adjustment; add one, e.g. {{ lower = 0, adjustment = 1 }}"
                        ),
                    );
                    ok = false;
                    0
                }
                Some(a) => {
                    let v = a.get_ref().0;
                    let max = i64::from(ServiceConfig::MAX_REPLICAS);
                    let problem = match adjustment_type {
                        AdjustmentType::ExactCapacity if !(0..=max).contains(&v) => Some(format!(
                            "with exact_capacity the adjustment is the new count, from 0 to {max}, not {v}"
                        )),
                        AdjustmentType::PercentChangeInCapacity if v < -100 => {
                            Some(format!("a percent change cannot remove more than 100%, not {v}"))
                        }
                        AdjustmentType::ChangeInCapacity if v.abs() > max => {
                            Some(format!("an adjustment of {v} replicas is beyond the limit of {max}"))
                        }
                        _ => None,
                    };
                    if let Some(p) = problem {
                        self.problem(a.span(), p);
                        ok = false;
                    }
                    v
                }
            };
            steps.push(StepAdjustment { lower, upper, adjustment });
        }
        if !ok {
            return steps;
        }
        if steps.is_empty() {
            self.problem(
                whole,
                format!("step policy `{policy}` has an empty steps list; add e.g. {{ lower = 0, adjustment = 1 }}"),
            );
            return steps;
        }
        let name = |i: usize| format!("the step on line {}", self.line_of(&spans[i]));
        match check_steps(&steps, comparison, name) {
            Ok(sorted) => sorted,
            Err((i, message)) => {
                self.problem(spans[i].clone(), message);
                steps
            }
        }
    }

    fn scheduled(
        &mut self,
        i: usize,
        raw: Spanned<RawScheduled>,
        bounds: Bounds,
        names: &mut Names,
    ) -> ScheduledAction {
        let at = raw.span();
        let raw = raw.into_inner();
        let name = self.name(raw.name, names, || format!("scheduled-{}", i + 1), i);
        let cron = match &raw.cron {
            None => {
                self.problem(
                    at.clone(),
                    format!(r#"scheduled action `{name}` has no cron; add one, e.g. cron = "0 8 * * MON-FRI" (08:00 UTC on weekdays)"#),
                );
                None
            }
            Some(c) => match Cron::parse(c.get_ref()) {
                Ok(cron) => match &raw.timezone {
                    None => Some(cron),
                    Some(zone) => match cron.in_zone(zone.get_ref()) {
                        Ok(cron) => Some(cron),
                        Err(e) => {
                            self.problem(zone.span(), format!("timezone: {e}"));
                            None
                        }
                    },
                },
                Err(e) => {
                    // Point at the bad field when the string is written
                    // plainly (no escapes), else at the whole string.
                    let span = c.span();
                    let quoted = self.source.get(span.clone()).unwrap_or("");
                    let plain =
                        quoted.len() == c.get_ref().len() + 2 && quoted.get(1..quoted.len() - 1) == Some(c.get_ref());
                    let field = if plain { span.start + 1 + e.at.start..span.start + 1 + e.at.end } else { span };
                    let zone = raw.timezone.as_ref().map_or("UTC", |z| z.get_ref().as_str());
                    self.problem(field, format!("cron: {} (times are {zone})", e.message));
                    None
                }
            },
        };
        let max_allowed = i64::from(ServiceConfig::MAX_REPLICAS);
        let value = |key: &str, v: &Option<Spanned<Int>>, this: &mut Self| {
            let v = v.as_ref()?;
            let n = v.get_ref().0;
            if !(0..=max_allowed).contains(&n) {
                this.problem(v.span(), format!("scheduled {key} must be from 0 to {max_allowed}, not {n}"));
                return None;
            }
            Some(n as u32)
        };
        let (min, max, desired) =
            (value("min", &raw.min, self), value("max", &raw.max, self), value("desired", &raw.desired, self));
        if raw.min.is_none() && raw.max.is_none() && raw.desired.is_none() {
            self.problem(
                at.clone(),
                format!("scheduled action `{name}` sets nothing; give it min, max and/or desired, e.g. min = 4"),
            );
        }
        // On its own, against the service's bounds for what it leaves out.
        let (lo, hi) = (min.unwrap_or(bounds.min), max.unwrap_or(bounds.max));
        let whose = |set: bool, key: &str| if set { String::new() } else { format!(", the service's replicas.{key}") };
        if lo > hi {
            let span = raw.min.as_ref().or(raw.max.as_ref()).map_or(at.clone(), |s| s.span());
            let fix = if max.is_none() { "set max too, or lower min" } else { "lower min or raise max" };
            self.problem(
                span,
                format!(
                    "scheduled min ({lo}{}) is above max ({hi}{}); {fix}",
                    whose(min.is_some(), "min"),
                    whose(max.is_some(), "max")
                ),
            );
        } else if let (Some(d), Some(span)) = (desired, raw.desired.as_ref().map(|d| d.span())) {
            if d < lo || d > hi {
                self.problem(
                    span,
                    format!(
                        "scheduled desired ({d}) is outside min..max ({lo}{}..{hi}{}); set desired within them, or set min/max on this action too",
                        whose(min.is_some(), "min"),
                        whose(max.is_some(), "max")
                    ),
                );
            }
        }
        ScheduledAction {
            name,
            cron: cron.unwrap_or_else(|| Cron::parse("0 0 1 1 *").expect("a valid cron")),
            min,
            max,
            desired,
        }
    }

    fn burst(&mut self, service: &Spanned<String>, raw: RawBurst, no_target_tracking: bool) -> Burst {
        let d = Burst::default();
        let first_key = [
            raw.window.as_ref().map(|w| w.span()),
            raw.threshold.as_ref().map(|t| t.span()),
            raw.duration.as_ref().map(|t| t.span()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start);
        if no_target_tracking {
            self.problem(
                first_key.unwrap_or(service.span()),
                format!(
                    "burst needs a target tracking policy in service `{}`: it scales on their metrics and targets; add a [[service.{}.scaling.target_tracking]] or remove burst",
                    service.get_ref(),
                    service.get_ref()
                ),
            );
        }
        let window = self.history_span("burst.window", raw.window.as_ref(), d.window, "burst mode looks at it");
        let threshold = match raw.threshold {
            None => d.threshold,
            Some(t) => {
                let v = t.get_ref().0;
                if !(v.is_finite() && v > 1.0) {
                    self.problem(
                        t.span(),
                        format!("burst.threshold is a multiple of the target above 1, e.g. 2.0 for twice the target, not {v}"),
                    );
                    d.threshold
                } else {
                    v
                }
            }
        };
        Burst { window, threshold, duration: raw.duration.map_or(d.duration, |v| v.into_inner().0) }
    }

    /// `metric` of a target tracking policy or an alarm: required, known.
    fn metric(&mut self, table: &str, raw: Option<&Spanned<String>>, at: &Range<usize>, what: &str) -> Metric {
        let Some(raw) = raw else {
            self.problem(
                at.clone(),
                format!("{what} has no metric; add one, e.g. metric = \"cpu\" (one of {})", metric_list()),
            );
            return Metric::Cpu;
        };
        let metric = Metric::from_name(raw.get_ref()).unwrap_or_else(|| {
            let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            let hint = match raw.get_ref().as_str() {
                "cpu_utilization" | "CPUUtilization" | "ECSServiceAverageCPUUtilization" => "use \"cpu\"; ".to_string(),
                "ALBRequestCountPerTarget" | "requests" => "use \"requests_per_replica\"; ".to_string(),
                "concurrency" => "use \"concurrency_per_replica\"; ".to_string(),
                "queue" | "queue_length" | "backlog" | "items" | "backlog_per_instance" => {
                    "use \"items_per_replica\" with a metric_source; ".to_string()
                }
                other => closest(other, &known).map(|k| format!("did you mean {k:?}? ")).unwrap_or_default(),
            };
            self.problem(
                raw.span(),
                format!("unknown metric {:?} in {table}; {hint}expected one of {}", raw.get_ref(), metric_list()),
            );
            Metric::Cpu
        });
        if let Some(misfit) = self.metric_misfit(metric) {
            self.problem(raw.span(), misfit);
        }
        metric
    }

    fn above_zero(&mut self, key: &str, raw: &Spanned<Number>, example: &str) -> f64 {
        let v = raw.get_ref().0;
        if !(v.is_finite() && v > 0.0) {
            self.problem(raw.span(), format!("{key} must be above 0, not {v}; {example}"));
            return 1.0;
        }
        v
    }

    fn count(&mut self, key: &str, raw: Option<&Spanned<Int>>, default: u32) -> u32 {
        let Some(raw) = raw else { return default };
        let n = raw.get_ref().0;
        if !(1..=86_400).contains(&n) {
            self.problem(raw.span(), format!("{key} must be a whole number of periods, 1 or more, not {n}"));
            return default;
        }
        n as u32
    }

    /// A span of metric history a policy reads: above 0, at most what the
    /// history keeps.
    fn history_span(&mut self, key: &str, raw: Option<&Spanned<Dur>>, default: Duration, why: &str) -> Duration {
        let Some(raw) = raw else { return default };
        let d = raw.get_ref().0;
        if d < Duration::from_secs(1) {
            self.problem(
                raw.span(),
                format!(
                    "{key} must be at least 1s ({why}, and metrics are sampled once a second); the default is {}",
                    human(default)
                ),
            );
            return default;
        }
        if d > ScalingConfig::MAX_HISTORY {
            self.problem(
                raw.span(),
                format!(
                    "{key} ({}) is longer than the {} of metric history ebb keeps; shorten it",
                    human(d),
                    human(ScalingConfig::MAX_HISTORY)
                ),
            );
            return default;
        }
        d
    }

    /// A policy's name: given (checked) or made up; unique in the service.
    fn name(
        &mut self,
        raw: Option<Spanned<String>>,
        names: &mut Names,
        default: impl Fn() -> String,
        index: usize,
    ) -> String {
        let Some(raw) = raw else {
            let mut name = default();
            if names.0.contains_key(&name) {
                name = format!("{name}-{}", index + 1);
            }
            names.0.entry(name.clone()).or_insert(None);
            return name;
        };
        let n = raw.get_ref().trim();
        if n.is_empty() || n.chars().any(char::is_control) {
            self.problem(raw.span(), "a policy name must be a non-empty line of text, e.g. name = \"cpu-high\"");
        } else if RESERVED_NAMES.contains(&n) {
            self.problem(
                raw.span(),
                format!("the name {n:?} is used by ebb itself in events (manual scale, bounds); pick another"),
            );
        } else if let Some(first) = names.0.get(n) {
            let other = match first {
                Some(span) => format!("line {}", self.line_of(span)),
                None => "a policy without a name".to_string(),
            };
            self.problem(
                raw.span(),
                format!("two policies of this service are named {n:?} (the other: {other}); events name the policy, so names must differ"),
            );
        }
        names.0.insert(n.to_string(), Some(raw.span()));
        n.to_string()
    }
}

/// Policy names seen in a service, with where they were written.
#[derive(Default)]
struct Names(BTreeMap<String, Option<Range<usize>>>);

/// A plausible target or threshold for a metric, for messages.
fn example_target(metric: Metric) -> &'static str {
    match metric {
        Metric::Cpu => "80",
        Metric::RequestsPerReplica => "100",
        Metric::ConcurrencyPerReplica => "10",
        Metric::P95Latency | Metric::P99Latency => "500",
        Metric::QueueTime => "50",
        Metric::ItemsPerReplica => "10",
    }
}
