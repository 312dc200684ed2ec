//! [`Autoscaler`]: one per service; runs every policy and combines them.

use super::decision::{Cap, CapKind, Change, Decision, Hold, HoldKind, PolicyOutcome, Vote};
use super::freeze::{self, Trigger};
use super::metrics::{duration, Metric, MetricHistory, ServiceSample};
use super::predictive::{self, ForecastState};
use super::saturation::{HostFull, Saturation, HOST_WINDOW};
use super::scheduled::{self, Firing, Schedule};
use super::target::{recommend, Recommendation, TargetState};
use super::{Bounds, ChangeLog, Context, FleetView, ScalingConfig, Time};
use std::time::Duration;

/// The scaling brain of one service: its metric history, policy state and
/// cooldown clocks. Feed it samples with [`observe`](Self::observe), ask
/// it with [`decide`](Self::decide), tell it about `ebb scale` with
/// [`manual_scale`](Self::manual_scale).
#[derive(Debug, Clone)]
pub struct Autoscaler {
    config: ScalingConfig,
    history: MetricHistory,
    schedule: Schedule,
    /// One per target tracking policy, in config order.
    targets: Vec<TargetState>,
    log: ChangeLog,
    /// Burst mode is on until this time.
    burst_until: Option<Time>,
    /// A scheduled scale-in that fired while the fleet was saturated: it
    /// applies once the saturation guard lifts.
    deferred: Option<Firing>,
    /// What last froze scale-in, and the last second it held.
    frozen: Option<(Trigger, Time)>,
    /// One per predictive policy, in config order: what the caller last
    /// forecast for it.
    forecasts: Vec<ForecastState>,
    /// How long a replica takes to boot: a predictive policy's default
    /// `launch_ahead`.
    boot: Duration,
}

impl Autoscaler {
    pub fn new(config: &ScalingConfig, bounds: Bounds) -> Self {
        let rate_periods =
            config.target_tracking.iter().flat_map(|t| [t.scale_out_rate.period, t.scale_in_rate.period]);
        Self {
            history: MetricHistory::new(config.history_kept(), config.warmup),
            schedule: Schedule::new(bounds),
            targets: vec![TargetState::default(); config.target_tracking.len()],
            log: ChangeLog::new(rate_periods.max().unwrap_or(Duration::ZERO)),
            burst_until: None,
            deferred: None,
            frozen: None,
            forecasts: vec![ForecastState::NotYet; config.predictive.len()],
            boot: Self::DEFAULT_BOOT,
            config: config.clone(),
        }
    }

    /// A predictive policy's `launch_ahead` until the caller measures the
    /// service's boot time.
    pub const DEFAULT_BOOT: Duration = Duration::from_secs(60);

    /// The service's boot time (start to in service), measured live or
    /// the simulation model's: predictive policies launch this far ahead.
    pub fn set_boot_time(&mut self, boot: Duration) {
        self.boot = boot;
    }

    /// A new forecast for the predictive policy at `index` (config order).
    pub fn set_forecast(&mut self, index: usize, state: ForecastState) {
        if let Some(slot) = self.forecasts.get_mut(index) {
            *slot = state;
        }
    }

    /// `ebb apply`: new policies and bounds, keeping what was learnt —
    /// the metric history, the cooldown and rate-limit clocks, burst mode,
    /// and the state of every target tracking policy that keeps its name.
    /// The scheduled bounds are levelled again from the new `replicas`
    /// bounds and actions, as at start.
    pub fn reconfigure(&mut self, config: &ScalingConfig, bounds: Bounds) {
        let kept: Vec<TargetState> = config
            .target_tracking
            .iter()
            .map(|policy| {
                self.config
                    .target_tracking
                    .iter()
                    .position(|old| old.name == policy.name)
                    .map(|i| self.targets[i].clone())
                    .unwrap_or_default()
            })
            .collect();
        self.targets = kept;
        self.forecasts = config
            .predictive
            .iter()
            .map(|policy| {
                self.config
                    .predictive
                    .iter()
                    .position(|old| old.name == policy.name && old.metric == policy.metric)
                    .map(|i| self.forecasts[i].clone())
                    .unwrap_or_default()
            })
            .collect();
        self.history.reconfigure(config.history_kept(), config.warmup);
        let rate_periods =
            config.target_tracking.iter().flat_map(|t| [t.scale_out_rate.period, t.scale_in_rate.period]);
        self.log.keep = rate_periods.max().unwrap_or(Duration::ZERO);
        self.schedule = Schedule::new(bounds);
        self.config = config.clone();
    }

    pub fn config(&self) -> &ScalingConfig {
        &self.config
    }

    /// Adds one sample (normally one per second, in time order).
    pub fn observe(&mut self, sample: ServiceSample) {
        self.history.push(sample);
    }

    pub fn history(&self) -> &MetricHistory {
        &self.history
    }

    /// The bounds in force, as of the last [`decide`](Self::decide): the
    /// service's `replicas`, or what a scheduled action set.
    pub fn bounds(&self) -> Bounds {
        self.schedule.bounds
    }

    /// The next scheduled action after `wall_unix_s`: its name and when
    /// (Unix seconds), for status.
    pub fn next_scheduled(&self, wall_unix_s: i64) -> Option<(String, i64)> {
        scheduled::next_firing(&self.config.scheduled, wall_unix_s)
            .map(|(i, at)| (self.config.scheduled[i].name.clone(), at))
    }

    /// `ebb scale SERVICE N`: the count clamped to the bounds in force, as
    /// a change to record as an event. Like any change, it starts the
    /// cooldowns: the policies leave the operator's number alone for their
    /// cooldown, and then resume (to pin a count, set min and max).
    pub fn manual_scale(&mut self, now: Time, current: u32, requested: u32) -> Change {
        let bounds = self.schedule.bounds;
        let to = bounds.clamp(requested);
        let capped = if requested > to {
            Some(Cap::max(requested, to))
        } else if requested < to {
            Some(Cap::min(requested, to))
        } else {
            None
        };
        self.log.record(now, current, to);
        Change {
            from: current,
            to,
            policy: "manual".into(),
            reason: format!("ebb scale: {requested} requested"),
            capped,
        }
    }

    /// Decides desired capacity at `now`. `wall_unix_s` is the UTC wall
    /// clock, read only by scheduled actions. A returned change is assumed
    /// applied: its cooldowns start now.
    pub fn decide(&mut self, now: Time, wall_unix_s: i64, fleet: &FleetView) -> Decision {
        let desired = fleet.desired;
        let fired = self.schedule.advance(&self.config.scheduled, wall_unix_s);
        let bounds = self.schedule.bounds;
        let mut decision = Decision { at: now, desired, bounds, change: None, holding: None, votes: Vec::new() };

        // What the balancer and the host say (a fixed fleet has no policy
        // for them to temper).
        let scaling = !self.config.is_fixed();
        let sat_config = self.config.saturation;
        let saturation = scaling.then(|| {
            let demand = self.history.demand(now, sat_config.history_needed());
            Saturation::assess(&demand, now, &sat_config, self.log.last_increase())
        });
        let guard = saturation.as_ref().and_then(|s| s.guard(now, &sat_config));
        let freeze_hold = if scaling { self.freeze(now) } else { None };
        // A frozen scale-in defers a scheduled one like saturation does.
        let guard = guard.or(freeze_hold);
        let host_full = scaling.then(|| HostFull::assess(&self.history.host(now, HOST_WINDOW), now)).flatten();

        // 1. A scheduled desired capacity fired (or one deferred while
        //    saturated). A scheduled scale-in waits for the guard to lift.
        let mut objections = Vec::new();
        let firing = match fired {
            Some(firing) => {
                self.deferred = None; // a newer firing supersedes a deferred one
                Some(firing)
            }
            None => self.deferred.take(),
        };
        if let Some(firing) = firing {
            let action = &self.config.scheduled[firing.action];
            let want = action.desired.unwrap_or(desired);
            let to = bounds.clamp(want);
            match &guard {
                Some(hold) if to < desired => {
                    let mut hold = hold.clone();
                    hold.why =
                        format!("{} (scheduled action {} wants {to}, applied once it lifts)", hold.why, action.name);
                    objections.push(hold);
                    self.deferred = Some(firing);
                }
                _ if to != desired => {
                    let capped = (to != want).then(|| if want > to { Cap::max(want, to) } else { Cap::min(want, to) });
                    let reason = scheduled::describe(action, firing.at);
                    return self
                        .apply(decision, Change { from: desired, to, policy: action.name.clone(), reason, capped });
                }
                _ => {}
            }
        }

        // 2. Desired is outside the bounds in force (a scheduled action
        //    moved them, or the caller's count is out of date).
        if desired < bounds.min || desired > bounds.max {
            let to = bounds.clamp(desired);
            let (policy, source) = match &self.schedule.set_by {
                Some((name, what)) => (name.clone(), format!("set by scheduled action {what}")),
                None => ("bounds".to_string(), "the service's replicas bounds".to_string()),
            };
            let reason = if desired < bounds.min {
                format!("desired {desired} is below min {} ({source})", bounds.min)
            } else {
                format!("desired {desired} is above max {} ({source})", bounds.max)
            };
            let capped = None;
            return self.apply(decision, Change { from: desired, to, policy, reason, capped });
        }

        // 3. The policies vote, and demand sizing when requests queue.
        let capacity = desired.max(fleet.in_service.saturating_add(fleet.pending));
        let burst = self.burst(now, desired, capacity);
        let mut votes = Vec::with_capacity(self.config.target_tracking.len() + self.config.step.len() + 1);
        let mut metrics = Vec::with_capacity(votes.capacity());
        for (i, policy) in self.config.target_tracking.iter().enumerate() {
            let burst = burst.as_ref().map(|(recs, left)| (recs[i].clone(), *left));
            let ctx = Context { now, desired, capacity, history: &self.history, log: &self.log, burst };
            votes.push(self.targets[i].vote(policy, &ctx));
            metrics.push(Some(policy.metric));
        }
        for policy in &self.config.step {
            let ctx = Context { now, desired, capacity, history: &self.history, log: &self.log, burst: None };
            votes.push(policy.vote(&ctx));
            metrics.push(Some(policy.alarm.metric));
        }
        // Predictive floors: a trusted forecast raises the minimum.
        let mut floor: Option<(u32, String)> = None;
        for (policy, state) in self.config.predictive.iter().zip(&self.forecasts) {
            let (vote, n) = predictive::vote(policy, state, wall_unix_s, self.boot, desired, bounds);
            if n > bounds.min && floor.as_ref().is_none_or(|(f, _)| n > *f) {
                floor = Some((n, policy.name.clone()));
            }
            votes.push(vote);
            metrics.push(None);
        }
        if let Some(vote) = saturation.as_ref().and_then(|s| s.vote(&sat_config, desired, capacity)) {
            votes.push(vote);
            metrics.push(None);
        }

        // A full host: growing adds no capacity, and CPU readings are a
        // share of a full host, not headroom.
        if let Some(full) = &host_full {
            for (vote, metric) in votes.iter_mut().zip(&metrics) {
                match vote.outcome {
                    PolicyOutcome::Scale(n) if n > desired => {
                        vote.outcome = PolicyOutcome::Stay(Some(full.scale_out_hold(Some((&vote.policy, n)))));
                        vote.capped = None;
                    }
                    PolicyOutcome::Scale(n) if n < desired && *metric == Some(Metric::Cpu) => {
                        vote.outcome = PolicyOutcome::Stay(Some(full.contended_hold()));
                        vote.capped = None;
                    }
                    _ => {}
                }
            }
        }

        // Service-wide objections to scale-in.
        if let Some(hold) = guard.filter(|_| objections.is_empty()) {
            objections.push(hold);
        }
        if let Some((_, left)) = &burst {
            objections.push(Hold {
                kind: HoldKind::Burst,
                policy: None,
                why: "burst: no scale-in until it has passed".into(),
                remaining: Some(*left),
            });
        }
        if fleet.deploying {
            objections.push(Hold {
                kind: HoldKind::Deploying,
                policy: None,
                why: "deploy in progress: no scale-in until it ends".into(),
                remaining: None,
            });
        }

        let scale_in_bounds = floor.as_ref().map_or(bounds, |&(n, _)| Bounds { min: n.min(bounds.max), ..bounds });
        let (mut change, mut holding) = combine(&votes, desired, scale_in_bounds, objections);
        if let Some((n, name)) = &floor {
            // Say who raised the minimum, not "min reached".
            let note = format!("the forecast of predictive {name} keeps at least {n}");
            if let Some(cap) = change.as_mut().and_then(|c| c.capped.as_mut()).filter(|c| c.kind == CapKind::Min) {
                cap.note = format!("{note} (wanted {})", cap.wanted);
            }
            if let Some(hold) = holding.as_mut().filter(|h| h.kind == HoldKind::MinReached) {
                hold.why = hold.why.replace(&format!("min is {n}"), &note);
            }
        }
        // A full host is the most telling reason there is: say it even when
        // the policies are content (82 % "within the band" of an allotment
        // the host cannot give is not a calm fleet).
        if let Some(full) = host_full.filter(|_| holding.as_ref().is_none_or(|h| h.kind != HoldKind::HostFull)) {
            let mut hold = full.scale_out_hold(None);
            if let Some(other) = &holding {
                hold.why = format!("{}; {other}", hold.why);
            }
            holding = Some(hold);
        }
        decision.votes = votes;
        decision.holding = holding;
        match change {
            Some(change) => self.apply(decision, change),
            None => decision,
        }
    }

    /// Updates the scale-in freeze at `now`; the hold while it lasts.
    fn freeze(&mut self, now: Time) -> Option<Hold> {
        let config = self.config.freeze;
        let demand = self.history.demand(now, config.history_needed());
        if let Some(trigger) = freeze::assess(&demand, now, &config) {
            // Within one freeze, say its worst second: that is what froze it.
            let ongoing = self.frozen_hold(now).is_some();
            let worst = match &self.frozen {
                Some((seen, _)) if ongoing && seen.severity() > trigger.severity() => seen.clone(),
                _ => trigger,
            };
            self.frozen = Some((worst, now));
        }
        self.frozen_hold(now)
    }

    /// The scale-in freeze in force at `now`, as of the last
    /// [`decide`](Self::decide): `scale-in frozen: 5xx at 35% of answers
    /// over 30 s (freeze above 20%), 5 min left`. For status and events.
    pub fn frozen_hold(&self, now: Time) -> Option<Hold> {
        let (trigger, last) = self.frozen.as_ref()?;
        let until = *last + self.config.freeze.hold;
        if until <= now || !self.config.freeze.enabled {
            return None;
        }
        let why = if *last == now {
            format!("scale-in frozen: {trigger}")
        } else {
            format!("scale-in frozen: {trigger} until {} ago", duration(now - *last))
        };
        Some(Hold { kind: HoldKind::Frozen, policy: None, why, remaining: Some(until - now) })
    }

    /// Records a change and puts it in the decision.
    fn apply(&mut self, mut decision: Decision, change: Change) -> Decision {
        self.log.record(decision.at, change.from, change.to);
        decision.holding = None;
        decision.change = Some(change);
        decision
    }

    /// Updates burst mode; while it is on, each target tracking policy's
    /// recommendation on the burst window, and how long burst lasts.
    fn burst(&mut self, now: Time, desired: u32, capacity: u32) -> Option<(Vec<Option<Recommendation>>, Duration)> {
        let burst = self.config.burst?;
        let mut recs = Vec::with_capacity(self.config.target_tracking.len());
        for policy in &self.config.target_tracking {
            let obs = self.history.observe(policy.metric, now, burst.window).ok();
            if obs.as_ref().is_some_and(|o| o.value >= burst.threshold * policy.target) {
                self.burst_until = Some(now + burst.duration);
            }
            recs.push(obs.map(|o| {
                let mut rec = recommend(&o, policy.target, policy.tolerance, desired, capacity);
                rec.reason = format!("{} (burst window {})", rec.reason, duration(burst.window));
                rec
            }));
        }
        let left = self.burst_until.filter(|&until| until > now).map(|until| until - now)?;
        Some((recs, left))
    }
}

/// Combines the votes: scale out if any policy asks for more (to the most
/// asked for); scale in only when some policy asks for fewer and none
/// objects (to the largest count asked for); clamp to the bounds. Returns
/// the change, or what holds.
fn combine(votes: &[Vote], desired: u32, bounds: Bounds, objections: Vec<Hold>) -> (Option<Change>, Option<Hold>) {
    let change = |vote: &Vote, to: u32, capped: Option<Cap>| Change {
        from: desired,
        to,
        policy: vote.policy.clone(),
        reason: vote.reason.clone(),
        capped: capped.or_else(|| vote.capped.clone()),
    };
    let wants = |v: &Vote| match v.outcome {
        PolicyOutcome::Scale(n) => Some(n),
        _ => None,
    };
    // The first vote with the largest count, so ties go to config order.
    let largest = |pick: &dyn Fn(u32) -> bool| {
        votes.iter().filter_map(|v| wants(v).filter(|&n| pick(n)).map(|n| (n, v))).fold(
            None,
            |best: Option<(u32, &Vote)>, (n, v)| match best {
                Some((b, _)) if b >= n => best,
                _ => Some((n, v)),
            },
        )
    };

    if let Some((n, vote)) = largest(&|n| n > desired) {
        let to = n.min(bounds.max);
        if to > desired {
            return (Some(change(vote, to, (to < n).then(|| Cap::max(n, to)))), None);
        }
        let why = format!("max reached: {} wants {n}, max is {}", vote.policy, bounds.max);
        return (
            None,
            Some(Hold { kind: HoldKind::MaxReached, policy: Some(vote.policy.clone()), why, remaining: None }),
        );
    }

    let mut holds: Vec<Hold> = objections;
    let mut objectors = holds.len();
    for v in votes {
        if let PolicyOutcome::Stay(hold) = &v.outcome {
            objectors += 1;
            holds.extend(hold.clone());
        }
    }
    if let Some((n, vote)) = largest(&|n| n < desired) {
        if objectors == 0 {
            let to = n.max(bounds.min);
            if to < desired {
                return (Some(change(vote, to, (to > n).then(|| Cap::min(n, to)))), None);
            }
            let why = format!("min reached: {} wants {n}, min is {}", vote.policy, bounds.min);
            let hold = Hold { kind: HoldKind::MinReached, policy: Some(vote.policy.clone()), why, remaining: None };
            return (None, Some(hold));
        }
        if holds.is_empty() {
            // Objected to by a policy content with the count as it is.
            let objector = votes.iter().find(|v| matches!(v.outcome, PolicyOutcome::Stay(None)));
            let name = objector.map_or("another policy", |v| v.policy.as_str());
            let why = format!("{} wants {n}, but {name} wants to stay at {desired}", vote.policy);
            let policy = objector.map(|v| v.policy.clone());
            return (None, Some(Hold { kind: HoldKind::Objection, policy, why, remaining: None }));
        }
        // Say which scale-in is being held, not only why.
        let mut hold = most_telling(holds).expect("objectors with holds");
        hold.why = format!("{} ({} wants {n})", hold.why, vote.policy);
        return (None, Some(hold));
    }
    // Nothing holds a change: say what a policy is still waiting for, if any.
    let pending = votes.iter().filter_map(|v| match &v.outcome {
        PolicyOutcome::Pending(hold) => Some(hold.clone()),
        _ => None,
    });
    (None, most_telling(holds).or_else(|| most_telling(pending.collect())))
}

/// The first hold of the kind that tells most (see [`HoldKind`]).
fn most_telling(mut holds: Vec<Hold>) -> Option<Hold> {
    let best = holds.iter().enumerate().min_by_key(|(i, h)| (h.kind, *i)).map(|(i, _)| i)?;
    Some(holds.swap_remove(best))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(policy: &str, outcome: PolicyOutcome) -> Vote {
        Vote { policy: policy.into(), outcome, reason: format!("{policy} says so"), capped: None }
    }

    fn hold(kind: HoldKind, why: &str) -> Hold {
        Hold { kind, policy: None, why: why.into(), remaining: None }
    }

    const BOUNDS: Bounds = Bounds { min: 2, max: 10 };

    #[test]
    fn scale_out_if_any_asks_for_more() {
        let votes = [
            vote("a", PolicyOutcome::Scale(5)),
            vote("b", PolicyOutcome::Scale(7)),
            vote("c", PolicyOutcome::Scale(2)),
        ];
        let (change, hold) = combine(&votes, 4, BOUNDS, vec![]);
        let change = change.unwrap();
        assert_eq!((change.to, change.policy.as_str(), hold), (7, "b", None));
    }

    #[test]
    fn scale_in_only_when_none_objects() {
        let votes = [vote("a", PolicyOutcome::Scale(3)), vote("b", PolicyOutcome::Stay(None))];
        let (change, held) = combine(&votes, 4, BOUNDS, vec![]);
        assert_eq!(change, None);
        let held = held.unwrap();
        assert_eq!((held.kind, held.why.as_str()), (HoldKind::Objection, "a wants 3, but b wants to stay at 4"));

        let votes =
            [vote("a", PolicyOutcome::Scale(3)), vote("b", PolicyOutcome::Abstain), vote("c", PolicyOutcome::Scale(2))];
        let change = combine(&votes, 4, BOUNDS, vec![]).0.unwrap();
        assert_eq!((change.to, change.policy.as_str()), (3, "a"), "the largest count wins");

        let objection = hold(HoldKind::Deploying, "deploy in progress");
        let (change, held) = combine(&votes, 4, BOUNDS, vec![objection]);
        let held = held.unwrap();
        assert_eq!((change, held.kind), (None, HoldKind::Deploying));
        assert_eq!(held.why, "deploy in progress (a wants 3)", "says which scale-in is held");
    }

    #[test]
    fn clamps_say_what_capped() {
        let change = combine(&[vote("a", PolicyOutcome::Scale(40))], 4, BOUNDS, vec![]).0.unwrap();
        assert_eq!((change.to, change.capped.unwrap().note.as_str()), (10, "max 10 reached (wanted 40)"));
        let (change, hold) = combine(&[vote("a", PolicyOutcome::Scale(40))], 10, BOUNDS, vec![]);
        assert_eq!(change, None);
        assert_eq!(hold.unwrap().to_string(), "max reached: a wants 40, max is 10");
        let change = combine(&[vote("a", PolicyOutcome::Scale(0))], 4, BOUNDS, vec![]).0.unwrap();
        assert_eq!((change.to, change.capped.unwrap().kind), (2, super::super::CapKind::Min));
        let hold = combine(&[vote("a", PolicyOutcome::Scale(1))], 2, BOUNDS, vec![]).1.unwrap();
        assert_eq!(hold.kind, HoldKind::MinReached);
    }

    #[test]
    fn the_most_telling_hold_is_reported() {
        let votes = [
            vote("a", PolicyOutcome::Stay(Some(hold(HoldKind::Tolerance, "within tolerance")))),
            vote("b", PolicyOutcome::Stay(Some(hold(HoldKind::Cooldown, "cooldown of b")))),
            vote("c", PolicyOutcome::Stay(Some(hold(HoldKind::Stabilization, "stabilisation")))),
        ];
        assert_eq!(combine(&votes, 4, BOUNDS, vec![]).1.unwrap().why, "cooldown of b");
        assert_eq!(combine(&[vote("a", PolicyOutcome::Abstain)], 4, BOUNDS, vec![]), (None, None), "steady");
    }
}
