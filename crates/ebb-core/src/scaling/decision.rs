//! Decisions as data: what the autoscaler concluded and why.
//!
//! A [`Decision`] is the whole answer of one [`Autoscaler::decide`] call:
//! the change of desired capacity if there is one ([`Change`]), otherwise
//! what is holding it ([`Hold`]), and every policy's [`Vote`] with the
//! numbers behind it. The live controller turns a change into an event and
//! a hold into `ebb status`'s `holding`; the simulator prints the same
//! values. Both print them with these `Display` impls, so the words match.
//!
//! [`Autoscaler::decide`]: super::Autoscaler::decide

use super::metrics::duration;
use super::{Bounds, Time};
use std::fmt;
use std::time::Duration;

/// Which way desired capacity moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Out,
    In,
}

impl Direction {
    /// The direction from one count to another; `None` when equal.
    pub fn of(from: u32, to: u32) -> Option<Direction> {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => Some(Direction::Out),
            std::cmp::Ordering::Less => Some(Direction::In),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// `out` / `in`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of desired capacity, ready to become an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub from: u32,
    pub to: u32,
    /// Who decided: a policy name (`cpu-high`, `target-cpu`), a scheduled
    /// action's name, `manual` (`ebb scale`) or `bounds` (desired was
    /// outside min..max).
    pub policy: String,
    /// The metric values and thresholds that decided it, e.g. `target
    /// tracking cpu: mean 92.4% over 3 warm replicas in the last 1 min vs
    /// target 80% -> ceil(3 × 92.4 / 80) = 4`.
    pub reason: String,
    /// What made the change smaller than the policy asked, if anything.
    pub capped: Option<Cap>,
}

impl Change {
    pub fn direction(&self) -> Option<Direction> {
        Direction::of(self.from, self.to)
    }
}

impl fmt::Display for Change {
    /// `scale out 3 -> 4 by cpu-high: <reason>; capped: max 4 reached (wanted 6)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction() {
            Some(d) => write!(f, "scale {d} {} -> {} by {}: {}", self.from, self.to, self.policy, self.reason)?,
            None => write!(f, "stay at {} by {}: {}", self.to, self.policy, self.reason)?,
        }
        if let Some(cap) = &self.capped {
            write!(f, "; capped: {cap}")?;
        }
        Ok(())
    }
}

/// What limited a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapKind {
    /// The count a policy asked for is above `max` (or a scheduled max).
    Max,
    /// The count a policy asked for is below `min` (or a scheduled min).
    Min,
    /// Growth or shrinkage per period is limited (`scale_out_rate`,
    /// `scale_in_rate`).
    RateLimit,
}

/// A change that was made smaller than asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub kind: CapKind,
    /// What the policy asked for.
    pub wanted: u32,
    /// What it got.
    pub limit: u32,
    /// For people: `max 4 reached (wanted 6)`.
    pub note: String,
}

impl Cap {
    pub(super) fn max(wanted: u32, max: u32) -> Cap {
        Cap { kind: CapKind::Max, wanted, limit: max, note: format!("max {max} reached (wanted {wanted})") }
    }

    pub(super) fn min(wanted: u32, min: u32) -> Cap {
        Cap { kind: CapKind::Min, wanted, limit: min, note: format!("min {min} reached (wanted {wanted})") }
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.note)
    }
}

/// Why desired capacity is not changing although something might want it
/// to, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub kind: HoldKind,
    /// The policy holding, when it is one policy's reason.
    pub policy: Option<String>,
    /// Short, for `ebb status`: `scale-in cooldown of target-cpu`.
    pub why: String,
    /// How long until it lifts by itself; `None` when only different
    /// numbers will lift it (tolerance band, lack of data, max reached).
    pub remaining: Option<Duration>,
}

impl fmt::Display for Hold {
    /// `scale-in cooldown of target-cpu, 43 s left`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)?;
        if let Some(left) = self.remaining {
            write!(f, ", {} left", duration(left))?;
        }
        Ok(())
    }
}

/// The kinds of hold, most telling first: when several policies hold, the
/// decision reports the first kind in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HoldKind {
    /// ebb's host is full: more local replicas would not add capacity, and
    /// CPU readings are contended.
    HostFull,
    /// A policy wants more but `max` is reached.
    MaxReached,
    /// Requests are queued or shed (or were, within the settle time): no
    /// scale-in.
    Saturated,
    /// The scale-in freeze: a 5xx spike or a traffic collapse, or within
    /// `hold` after one.
    Frozen,
    /// A policy wants fewer but `min` is reached.
    MinReached,
    /// Metrics are missing; missing is never counted as zero load.
    LackOfData,
    /// A cooldown after the last change.
    Cooldown,
    /// The growth or shrink rate limit for the period is used up.
    RateLimit,
    /// Scale-in stabilisation: a higher recommendation within the window.
    Stabilization,
    /// Burst (panic) mode blocks scale-in until the burst has passed.
    Burst,
    /// A deploy is in progress; its extra replicas are not spare capacity.
    Deploying,
    /// Replicas still warming up already cover what the metric asks for.
    WarmingUp,
    /// `disable_scale_in = true`.
    ScaleInDisabled,
    /// The metric is within the tolerance band around its target.
    Tolerance,
    /// The metric is off target, but the policy's window (or rounding)
    /// says the count is right: the numbers that decide, shown.
    Window,
    /// A policy asks to scale in, another wants to keep the count.
    Objection,
}

impl HoldKind {
    /// A stable name for JSON and filters: `lack_of_data`, `cooldown`...
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::HostFull => "host_full",
            HoldKind::MaxReached => "max_reached",
            HoldKind::Saturated => "saturated",
            HoldKind::Frozen => "frozen",
            HoldKind::MinReached => "min_reached",
            HoldKind::LackOfData => "lack_of_data",
            HoldKind::Cooldown => "cooldown",
            HoldKind::RateLimit => "rate_limit",
            HoldKind::Stabilization => "stabilization",
            HoldKind::Burst => "burst",
            HoldKind::Deploying => "deploying",
            HoldKind::WarmingUp => "warming_up",
            HoldKind::ScaleInDisabled => "scale_in_disabled",
            HoldKind::Tolerance => "tolerance",
            HoldKind::Window => "window",
            HoldKind::Objection => "objection",
        }
    }
}

/// What one policy wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// Move desired capacity to this count now.
    Scale(u32),
    /// Keep the current count (this objects to a scale-in), with why when
    /// there is something to say.
    Stay(Option<Hold>),
    /// No opinion: a step policy whose alarm is not firing.
    Abstain,
    /// No opinion yet, with what it waits for: an alarm whose threshold is
    /// breached in some periods but not yet in enough to fire. Not an
    /// objection to scale-in; shown when nothing else holds.
    Pending(Hold),
}

/// One policy's verdict on one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub policy: String,
    pub outcome: PolicyOutcome,
    /// The numbers behind it.
    pub reason: String,
    /// When the policy itself limited its count (rate limit).
    pub capped: Option<Cap>,
}

impl fmt::Display for Vote {
    /// `target-cpu: scale to 4: <reason>` / `cpu-low: stay (cooldown of cpu-low, 43 s left): <reason>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            PolicyOutcome::Scale(n) => write!(f, "{}: scale to {n}: {}", self.policy, self.reason)?,
            PolicyOutcome::Stay(Some(hold)) => write!(f, "{}: stay ({hold}): {}", self.policy, self.reason)?,
            PolicyOutcome::Stay(None) => write!(f, "{}: stay: {}", self.policy, self.reason)?,
            PolicyOutcome::Abstain => write!(f, "{}: no opinion: {}", self.policy, self.reason)?,
            PolicyOutcome::Pending(hold) => write!(f, "{}: waiting ({hold}): {}", self.policy, self.reason)?,
        }
        if let Some(cap) = &self.capped {
            write!(f, "; capped: {cap}")?;
        }
        Ok(())
    }
}

/// The answer of one `decide` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub at: Time,
    /// Desired capacity before this decision.
    pub desired: u32,
    /// The bounds in force (the service's, or a scheduled action's).
    pub bounds: Bounds,
    /// The change to apply, if any. The autoscaler assumes it is applied:
    /// its cooldowns start now.
    pub change: Option<Change>,
    /// Why nothing changes, when there is a reason worth showing. `None`
    /// with no change means steady (or no policies).
    pub holding: Option<Hold>,
    /// Every policy's verdict, in config order (target tracking, step).
    pub votes: Vec<Vote>,
}

impl Decision {
    /// Desired capacity after this decision.
    pub fn to(&self) -> u32 {
        self.change.as_ref().map_or(self.desired, |c| c.to)
    }

    pub fn direction(&self) -> Option<Direction> {
        self.change.as_ref().and_then(Change::direction)
    }
}

impl fmt::Display for Decision {
    /// One line: the change, else `holding at 3: <hold>`, else `steady at 3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.change, &self.holding) {
            (Some(change), _) => write!(f, "{change}"),
            (None, Some(hold)) => write!(f, "holding at {}: {hold}", self.desired),
            (None, None) => write!(f, "steady at {}", self.desired),
        }
    }
}
