//! Step scaling with alarms (AWS EC2 Auto Scaling step and simple
//! policies, CloudWatch alarm semantics).
//!
//! An [`Alarm`] reduces a metric to one number per `period` with a
//! statistic, compares each of the last `evaluation_periods` numbers with a
//! threshold, and fires when at least `datapoints_to_alarm` of them breach.
//! Periods slide with `now` (evaluated every decision, not on clock-aligned
//! minutes), and while the alarm keeps firing the policy acts again as soon
//! as its cooldown allows, as AWS re-invokes a policy while its alarm stays
//! in ALARM.
//!
//! A period with no datapoint (or one that starts before the first sample)
//! is **missing**, and a missing period never breaches: no data never
//! scales the fleet in, and the decision says it held for lack of data
//! when the missing periods are what kept the alarm from deciding.
//!
//! When the alarm fires, the newest breaching value is matched against the
//! [`StepAdjustment`]s, whose bounds are relative to the threshold (AWS):
//! for an alarm above the threshold a step holds `lower <= value -
//! threshold < upper`; below it, `lower < value - threshold <= upper`.

use super::decision::{Hold, HoldKind, PolicyOutcome, Vote};
use super::metrics::{duration, number, number_trim, Metric, MetricHistory, OnMissing, Statistic};
use super::target::{remaining, scale_out_on_missing};
use super::Context;
use std::fmt;
use std::time::Duration;

/// One `[[service.NAME.scaling.step]]` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPolicy {
    /// Names the policy in events (`step-1` unless set).
    pub name: String,
    pub alarm: Alarm,
    pub adjustment_type: AdjustmentType,
    /// Sorted by bounds, contiguous, covering every breach ([`check_steps`]).
    pub steps: Vec<StepAdjustment>,
    /// With `percent_change_in_capacity`: change by at least this many.
    pub min_adjustment_magnitude: Option<u32>,
    /// The policy does not act within this long of the last change of
    /// desired capacity, whoever made it (AWS simple-scaling cooldown).
    pub cooldown: Duration,
    /// What no data in any of the alarm's periods does: hold, or scale out
    /// by one (the metric source may be down because of the load).
    pub on_missing_metrics: OnMissing,
}

impl StepPolicy {
    /// AWS's default cooldown.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

    /// The step a breaching value falls into.
    pub fn step_for(&self, value: f64) -> Option<&StepAdjustment> {
        let offset = value - self.alarm.threshold;
        let above = self.alarm.comparison.is_above();
        self.steps.iter().find(|s| s.contains(offset, above))
    }

    /// The count after applying `step` to `current`.
    pub fn apply(&self, step: &StepAdjustment, current: u32) -> u32 {
        adjust(self.adjustment_type, step.adjustment, current, self.min_adjustment_magnitude)
    }

    pub(super) fn vote(&self, ctx: &Context<'_>) -> Vote {
        let vote = |outcome, reason| Vote { policy: self.name.clone(), outcome, reason, capped: None };
        let alarm = &self.alarm;
        let state = alarm.evaluate(ctx.history, ctx.now);
        let periods: Vec<String> =
            state.periods.iter().map(|p| p.map_or_else(|| "missing".to_string(), |v| alarm.metric.show(v))).collect();
        let seen = format!(
            "{} of {} periods of {} breach {} (newest first: {})",
            state.breaching,
            alarm.evaluation_periods,
            duration(alarm.period),
            alarm,
            periods.join(", ")
        );
        if !state.firing {
            if self.on_missing_metrics == OnMissing::ScaleOut
                && state.missing == alarm.evaluation_periods
                && ctx.history.source_down(alarm.metric, ctx.now, alarm.span())
            {
                let missing = format!(
                    "alarm {}: no {} datapoints in any of its {} periods of {}",
                    self.name,
                    alarm.metric,
                    alarm.evaluation_periods,
                    duration(alarm.period)
                );
                return scale_out_on_missing(&self.name, &missing, self.cooldown, ctx.log.last_change(), ctx);
            }
            if state.missing > 0 && state.breaching + state.missing >= alarm.datapoints_to_alarm {
                let why = format!(
                    "held for lack of data: {} of {} periods of {} have no {} datapoints ({})",
                    state.missing,
                    alarm.evaluation_periods,
                    duration(alarm.period),
                    alarm.metric,
                    self.name
                );
                let hold = Hold { kind: HoldKind::LackOfData, policy: Some(self.name.clone()), why, remaining: None };
                return vote(PolicyOutcome::Stay(Some(hold)), format!("alarm {} undecided: {seen}", self.name));
            }
            if state.breaching > 0 {
                // Breached, but not in enough periods yet: say so, so a
                // replica at 120 % never shows a fleet with no reason.
                let why = format!(
                    "alarm {} breached in {} of {} periods of {} (fires at {}): {} {}",
                    self.name,
                    state.breaching,
                    alarm.evaluation_periods,
                    duration(alarm.period),
                    alarm.datapoints_to_alarm,
                    alarm.metric,
                    periods.first().map_or("missing", String::as_str)
                );
                let hold = Hold { kind: HoldKind::Window, policy: Some(self.name.clone()), why, remaining: None };
                return vote(PolicyOutcome::Pending(hold), format!("alarm {} pending: {seen}", self.name));
            }
            return vote(PolicyOutcome::Abstain, format!("alarm {} OK: {seen}", self.name));
        }
        let Some(value) = state.value else {
            return vote(PolicyOutcome::Abstain, format!("alarm {} has no breaching value: {seen}", self.name));
        };
        let Some(step) = self.step_for(value) else {
            return vote(
                PolicyOutcome::Abstain,
                format!("alarm {} fired but no step covers {value}: {seen}", self.name),
            );
        };
        let to = self.resize(step, ctx.desired, value);
        let reason = format!(
            "alarm {} fired: {seen} -> {} is {} from the threshold, step {}: {}",
            self.name,
            alarm.metric.show(value),
            signed(value - alarm.threshold),
            step.range(alarm.comparison.is_above()),
            self.describe_adjustment(step, ctx.desired, to, value)
        );
        if to == ctx.desired {
            return vote(PolicyOutcome::Stay(None), reason);
        }
        if let Some(left) = remaining(ctx.log.last_change(), self.cooldown, ctx.now) {
            let why = format!("cooldown of {}", self.name);
            let hold = Hold { kind: HoldKind::Cooldown, policy: Some(self.name.clone()), why, remaining: Some(left) };
            return vote(PolicyOutcome::Stay(Some(hold)), reason);
        }
        vote(PolicyOutcome::Scale(to), reason)
    }

    /// The count after a step fires on `value`: [`StepPolicy::apply`],
    /// or the proportional resize, which needs the value.
    pub fn resize(&self, step: &StepAdjustment, current: u32, value: f64) -> u32 {
        match self.adjustment_type {
            AdjustmentType::ProportionalToTarget(bits) => {
                let target = f64::from_bits(bits);
                if target > 0.0 && value.is_finite() {
                    super::target::ceil_count(f64::from(current) * value / target)
                } else {
                    current
                }
            }
            _ => self.apply(step, current),
        }
    }

    fn describe_adjustment(&self, step: &StepAdjustment, from: u32, to: u32, value: f64) -> String {
        let a = step.adjustment;
        match self.adjustment_type {
            AdjustmentType::ChangeInCapacity => format!("{from} {} {} = {to}", if a < 0 { '-' } else { '+' }, a.abs()),
            AdjustmentType::PercentChangeInCapacity => {
                let floor = self.min_adjustment_magnitude.map(|m| format!(", at least {m}")).unwrap_or_default();
                format!("{from} {}{}%{floor} = {to}", if a < 0 { '-' } else { '+' }, a.abs())
            }
            AdjustmentType::ExactCapacity => format!("exact capacity {a}"),
            AdjustmentType::ProportionalToTarget(bits) => {
                format!("ceil({from} × {} / {}) = {to}", number(value), number_trim(f64::from_bits(bits)))
            }
        }
    }
}

/// A CloudWatch-style alarm on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub metric: Metric,
    pub statistic: Statistic,
    pub comparison: Comparison,
    pub threshold: f64,
    /// The length of one evaluation period.
    pub period: Duration,
    /// How many recent periods are looked at.
    pub evaluation_periods: u32,
    /// How many of them must breach to fire ("M out of N").
    pub datapoints_to_alarm: u32,
}

impl Alarm {
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

    /// How far back the alarm looks: `period × evaluation_periods`.
    pub fn span(&self) -> Duration {
        self.period.saturating_mul(self.evaluation_periods)
    }

    pub fn breaches(&self, value: f64) -> bool {
        self.comparison.holds(value, self.threshold)
    }

    /// The alarm's state at `now`.
    pub fn evaluate(&self, history: &MetricHistory, now: super::Time) -> AlarmState {
        let mut state = AlarmState::default();
        for k in 0..self.evaluation_periods {
            let end = now.checked_sub(self.period.saturating_mul(k));
            let value = end.and_then(|end| history.period_value(self.metric, self.statistic, end, self.period));
            match value {
                None => state.missing += 1,
                Some(v) if self.breaches(v) => {
                    state.breaching += 1;
                    state.value.get_or_insert(v);
                }
                Some(_) => {}
            }
            state.periods.push(value);
        }
        // At least one breaching period, even if datapoints_to_alarm is 0.
        state.firing = state.breaching > 0 && state.breaching >= self.datapoints_to_alarm;
        state
    }
}

impl fmt::Display for Alarm {
    /// `average cpu > 60%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.statistic,
            self.metric,
            self.comparison.as_str(),
            self.metric.show_target(self.threshold)
        )
    }
}

/// An alarm's view of the last `evaluation_periods` periods.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlarmState {
    /// Each period's statistic, newest first; `None` = missing.
    pub periods: Vec<Option<f64>>,
    pub breaching: u32,
    pub missing: u32,
    pub firing: bool,
    /// The newest breaching value: what the steps are matched against.
    pub value: Option<f64>,
}

/// How an alarm compares its statistic with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Comparison {
    /// `>`, `>=`, `<`, `<=`, or CloudWatch's names
    /// (`GreaterThanThreshold`...), so an alarm can be copied from AWS.
    pub fn from_name(name: &str) -> Option<Comparison> {
        match name {
            ">" | "GreaterThanThreshold" => Some(Comparison::Greater),
            ">=" | "GreaterThanOrEqualToThreshold" => Some(Comparison::GreaterOrEqual),
            "<" | "LessThanThreshold" => Some(Comparison::Less),
            "<=" | "LessThanOrEqualToThreshold" => Some(Comparison::LessOrEqual),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
        }
    }

    /// Whether the alarm fires above the threshold (as opposed to below).
    pub fn is_above(self) -> bool {
        matches!(self, Comparison::Greater | Comparison::GreaterOrEqual)
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
        }
    }
}

/// How a step's `adjustment` changes desired capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjustmentType {
    /// Add (or with a negative number, remove) this many replicas.
    ChangeInCapacity,
    /// Add or remove this percentage of the current count, rounded as AWS
    /// does (see [`adjust`]).
    PercentChangeInCapacity,
    /// Set desired capacity to this count.
    ExactCapacity,
    /// Resize in proportion to the breaching value, AWS target tracking's
    /// arithmetic: `ceil(n × value / target)`, the target given as
    /// `f64::to_bits` (see [`AdjustmentType::proportional`]). The `aws`
    /// preset's; not a config option. Steps' `adjustment` is unused.
    ProportionalToTarget(u64),
}

impl AdjustmentType {
    pub const ALL: [AdjustmentType; 3] =
        [AdjustmentType::ChangeInCapacity, AdjustmentType::PercentChangeInCapacity, AdjustmentType::ExactCapacity];

    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentType::ChangeInCapacity => "change_in_capacity",
            AdjustmentType::PercentChangeInCapacity => "percent_change_in_capacity",
            AdjustmentType::ExactCapacity => "exact_capacity",
            AdjustmentType::ProportionalToTarget(_) => "proportional_to_target",
        }
    }

    /// `ceil(n × value / target)`.
    pub fn proportional(target: f64) -> AdjustmentType {
        AdjustmentType::ProportionalToTarget(target.to_bits())
    }

    pub fn from_name(name: &str) -> Option<AdjustmentType> {
        AdjustmentType::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// One step: a range of the breach (value minus threshold) and what to do
/// in it. `None` bounds are infinite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepAdjustment {
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub adjustment: i64,
}

impl StepAdjustment {
    /// Whether a breach of `offset` (value minus threshold) falls in this
    /// step: `[lower, upper)` above the threshold, `(lower, upper]` below.
    pub fn contains(&self, offset: f64, above: bool) -> bool {
        let lower = self.lower.unwrap_or(f64::NEG_INFINITY);
        let upper = self.upper.unwrap_or(f64::INFINITY);
        if above {
            lower <= offset && offset < upper
        } else {
            lower < offset && offset <= upper
        }
    }

    /// `[0, +inf)`, `(-inf, 0]`, `[10, 20)`.
    pub fn range(&self, above: bool) -> String {
        let lower = self.lower.map_or("-inf".to_string(), number_trim);
        let upper = self.upper.map_or("+inf".to_string(), number_trim);
        if above {
            format!("[{lower}, {upper})")
        } else {
            format!("({lower}, {upper}]")
        }
    }
}

/// Checks that steps neither overlap nor leave gaps, and cover every
/// breach of an alarm with this comparison (`[0, +inf)` above the
/// threshold, `(-inf, 0]` below). Returns the steps sorted, or the index
/// (in the given order) of the culprit and what is wrong; `name(i)` names
/// step `i` in messages (`the step on line 12`).
pub fn check_steps(
    steps: &[StepAdjustment],
    comparison: Comparison,
    name: impl Fn(usize) -> String,
) -> Result<Vec<StepAdjustment>, (usize, String)> {
    if steps.is_empty() {
        return Err((0, "steps is empty; add at least one, e.g. steps = [{ lower = 0, adjustment = 1 }]".into()));
    }
    for (i, s) in steps.iter().enumerate() {
        if let (Some(l), Some(u)) = (s.lower, s.upper) {
            if l >= u {
                return Err((
                    i,
                    format!(
                        "this step's lower ({}) is not below its upper ({}); swap them",
                        number_trim(l),
                        number_trim(u)
                    ),
                ));
            }
        }
    }
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| steps[i].lower.unwrap_or(f64::NEG_INFINITY);
        key(a).total_cmp(&key(b)).then(a.cmp(&b))
    });
    for pair in order.windows(2) {
        let (p, n) = (pair[0], pair[1]);
        let (prev, next) = (&steps[p], &steps[n]);
        let culprit = p.max(n);
        let other = name(p.min(n));
        match (prev.upper, next.lower) {
            (None, _) | (_, None) => {
                return Err((
                    culprit,
                    format!(
                        "this step overlaps {other}: both reach {}; only one step may leave that bound out",
                        if prev.upper.is_none() { "+inf (no upper)" } else { "-inf (no lower)" }
                    ),
                ))
            }
            (Some(u), Some(l)) if u > l => {
                return Err((
                    culprit,
                    format!(
                        "steps overlap: {} runs to {} but {} starts at {}; make each step's lower equal the previous step's upper",
                        name(p),
                        number_trim(u),
                        name(n),
                        number_trim(l)
                    ),
                ))
            }
            (Some(u), Some(l)) if u < l => {
                return Err((
                    culprit,
                    format!(
                        "gap between steps: {} ends at {} and {} starts at {}, so a breach in between would not scale; set lower = {} on {}",
                        name(p),
                        number_trim(u),
                        name(n),
                        number_trim(l),
                        number_trim(u),
                        name(n)
                    ),
                ))
            }
            _ => {}
        }
    }
    let (first, last) = (order[0], order[order.len() - 1]);
    // A step on the wrong side of the threshold is the likelier mistake
    // (bounds are relative to the threshold), so it is reported first.
    if comparison.is_above() {
        if let Some(i) = order.iter().copied().find(|&i| steps[i].upper.is_some_and(|u| u <= 0.0)) {
            return Err((
                i,
                format!(
                    "this step covers only values below the threshold, where a `{}` alarm never fires; bounds are relative to the threshold, so start the steps at lower = 0",
                    comparison.as_str()
                ),
            ));
        }
        if let Some(l) = steps[first].lower.filter(|&l| l > 0.0) {
            return Err((
                first,
                format!(
                    "no step covers breaches from 0 to {} above the threshold; start the first step at lower = 0",
                    number_trim(l)
                ),
            ));
        }
        if let Some(u) = steps[last].upper {
            return Err((
                last,
                format!(
                    "no step covers breaches of {} or more above the threshold; leave upper out on the last step",
                    number_trim(u)
                ),
            ));
        }
    } else {
        if let Some(i) = order.iter().copied().find(|&i| steps[i].lower.is_some_and(|l| l >= 0.0)) {
            return Err((
                i,
                format!(
                    "this step covers only values above the threshold, where a `{}` alarm never fires; bounds are relative to the threshold and negative below it, e.g. {{ upper = 0, adjustment = -1 }}",
                    comparison.as_str()
                ),
            ));
        }
        if let Some(u) = steps[last].upper.filter(|&u| u < 0.0) {
            return Err((
                last,
                format!(
                    "no step covers breaches from {} to 0 below the threshold; end the last step at upper = 0",
                    number_trim(u)
                ),
            ));
        }
        if let Some(l) = steps[first].lower {
            return Err((
                first,
                format!(
                    "no step covers breaches of {} or more below the threshold; leave lower out on the first step",
                    number_trim(-l)
                ),
            ));
        }
    }
    Ok(order.into_iter().map(|i| steps[i]).collect())
}

/// The count after an adjustment, never below 0.
///
/// `percent_change_in_capacity` rounds as AWS does: a change above 1 is
/// rounded down (12.7 -> 12), between 0 and 1 becomes 1, between -1 and 0
/// becomes -1, below -1 is rounded up (-6.67 -> -6); then
/// `min_adjustment_magnitude` raises a smaller change to that many.
pub fn adjust(kind: AdjustmentType, adjustment: i64, current: u32, min_magnitude: Option<u32>) -> u32 {
    let change = match kind {
        AdjustmentType::ExactCapacity => return adjustment.clamp(0, i64::from(u32::MAX)) as u32,
        AdjustmentType::ChangeInCapacity => adjustment,
        // Needs the breaching value: see `StepPolicy::resize`.
        AdjustmentType::ProportionalToTarget(_) => 0,
        AdjustmentType::PercentChangeInCapacity => {
            let raw = f64::from(current) * adjustment as f64 / 100.0;
            let mut change = if raw >= 1.0 {
                raw.floor()
            } else if raw > 0.0 {
                1.0
            } else if raw == 0.0 {
                0.0
            } else if raw > -1.0 {
                -1.0
            } else {
                raw.ceil()
            } as i64;
            if let Some(m) = min_magnitude {
                if adjustment != 0 && change.unsigned_abs() < u64::from(m) {
                    change = adjustment.signum() * i64::from(m);
                }
            }
            change
        }
    };
    (i64::from(current) + change).clamp(0, i64::from(u32::MAX)) as u32
}

fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", number(v))
    } else {
        number(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(lower: Option<f64>, upper: Option<f64>, adjustment: i64) -> StepAdjustment {
        StepAdjustment { lower, upper, adjustment }
    }

    fn name(i: usize) -> String {
        format!("step {}", i + 1)
    }

    #[test]
    fn aws_percent_rounding() {
        use AdjustmentType::*;
        let cases = [
            // (kind, adjustment, current, min magnitude, want)
            (ChangeInCapacity, 1, 2, None, 3),
            (ChangeInCapacity, -1, 2, None, 1),
            (ChangeInCapacity, -5, 2, None, 0),
            (PercentChangeInCapacity, 50, 25, None, 37),    // +12.5 -> +12
            (PercentChangeInCapacity, 10, 5, None, 6),      // +0.5 -> +1
            (PercentChangeInCapacity, -10, 5, None, 4),     // -0.5 -> -1
            (PercentChangeInCapacity, -25, 27, None, 21),   // -6.75 -> -6
            (PercentChangeInCapacity, 10, 20, Some(5), 25), // +2 raised to +5
            (PercentChangeInCapacity, -10, 20, Some(5), 15),
            (PercentChangeInCapacity, 100, 0, None, 0), // nothing to grow from
            (PercentChangeInCapacity, 100, 0, Some(1), 1),
            (ExactCapacity, 7, 2, None, 7),
        ];
        for (kind, adjustment, current, min, want) in cases {
            assert_eq!(adjust(kind, adjustment, current, min), want, "{kind:?} {adjustment} of {current}");
        }
    }

    #[test]
    fn steps_match_aws_bounds() {
        // Above: [lower, upper).
        let s = step(Some(0.0), Some(10.0), 1);
        assert!(s.contains(0.0, true) && s.contains(9.9, true) && !s.contains(10.0, true));
        // Below: (lower, upper].
        let s = step(Some(-10.0), Some(0.0), -1);
        assert!(s.contains(0.0, false) && !s.contains(-10.0, false));
        assert_eq!(step(None, Some(0.0), -1).range(false), "(-inf, 0]");
        assert_eq!(step(Some(0.0), None, 1).range(true), "[0, +inf)");
    }

    #[test]
    fn well_formed_steps_are_sorted() {
        let steps = [step(Some(20.0), None, 3), step(Some(0.0), Some(10.0), 1), step(Some(10.0), Some(20.0), 2)];
        let sorted = check_steps(&steps, Comparison::Greater, name).unwrap();
        assert_eq!(sorted.iter().map(|s| s.adjustment).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(check_steps(&[step(None, None, 1)], Comparison::Greater, name).is_ok());
        assert!(check_steps(&[step(None, Some(0.0), -1)], Comparison::Less, name).is_ok());
        assert!(check_steps(&[step(None, None, -1)], Comparison::LessOrEqual, name).is_ok());
        assert!(
            check_steps(&[step(None, Some(-10.0), -2), step(Some(-10.0), None, -1)], Comparison::Less, name).is_ok()
        );
    }

    #[test]
    fn bad_steps_say_which_and_why() {
        let err = |steps: &[StepAdjustment], c| check_steps(steps, c, name).unwrap_err();
        let (i, m) = err(&[step(Some(0.0), Some(20.0), 1), step(Some(10.0), None, 2)], Comparison::Greater);
        assert_eq!(i, 1);
        assert!(m.starts_with("steps overlap: step 1 runs to 20 but step 2 starts at 10"), "{m}");
        let (i, m) = err(&[step(Some(0.0), Some(10.0), 1), step(Some(15.0), None, 2)], Comparison::Greater);
        assert_eq!(i, 1);
        assert!(m.starts_with("gap between steps: step 1 ends at 10 and step 2 starts at 15"), "{m}");
        let (_, m) = err(&[step(Some(5.0), None, 1)], Comparison::Greater);
        assert!(m.contains("from 0 to 5"), "{m}");
        let (_, m) = err(&[step(Some(0.0), Some(50.0), 1)], Comparison::Greater);
        assert!(m.contains("leave upper out"), "{m}");
        let (_, m) = err(&[step(Some(0.0), None, 1)], Comparison::Less);
        assert!(m.contains("never fires"), "{m}");
        let (_, m) = err(&[step(Some(-20.0), Some(0.0), -1)], Comparison::Less);
        assert!(m.contains("leave lower out"), "{m}");
        let (_, m) = err(&[step(Some(10.0), Some(5.0), 1)], Comparison::Greater);
        assert!(m.contains("not below its upper"), "{m}");
        let (_, m) = err(&[], Comparison::Greater);
        assert!(m.contains("empty"), "{m}");
        let (_, m) = err(&[step(None, Some(0.0), 0), step(Some(0.0), None, 1)], Comparison::Greater);
        assert!(m.contains("never fires"), "{m}");
        let (_, m) = err(&[step(None, None, 1), step(Some(0.0), None, 1)], Comparison::Greater);
        assert!(m.contains("overlaps"), "{m}");
    }

    #[test]
    fn comparisons_accept_cloudwatch_names() {
        assert_eq!(Comparison::from_name("GreaterThanOrEqualToThreshold"), Some(Comparison::GreaterOrEqual));
        assert_eq!(Comparison::from_name("<"), Some(Comparison::Less));
        assert_eq!(Comparison::from_name("=>"), None);
        assert!(Comparison::GreaterOrEqual.holds(60.0, 60.0) && !Comparison::Greater.holds(60.0, 60.0));
    }
}
