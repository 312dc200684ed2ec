//! Saturation: demand the fleet cannot serve, and a host that cannot give
//! more CPU.
//!
//! The balancer sees every request: how many arrive (the *offered* rate),
//! how many wait in its queue for a replica under `max_in_flight`, how many
//! it sheds. No CPU reading can say "requests are waiting"; these numbers
//! do. Three rules follow from them, all pure and shared by `ebb up` and
//! `ebb simulate`:
//!
//! 1. **The guard**: while requests queue or are shed, and for `settle`
//!    after, the fleet does not shrink, whatever a CPU, latency or schedule
//!    rule says. A host stall makes CPU readings fall exactly when requests
//!    pile up; that must never read as idle.
//! 2. **Demand sizing**: when requests have queued for `scale_out_after`,
//!    the fleet is sized from the demand the balancer sees and the larger
//!    of that and the policies' answer wins. With `max_in_flight` (a known
//!    concurrency per replica) the demand is concurrency, as in Knative:
//!    `ceil((in flight + queued) / max_in_flight)`, the fewest replicas
//!    that would hold every request without queueing. Without a limit it
//!    is the rate: `ceil(routable × offered / served)`. The smallest value
//!    over the window decides (a sustained need, not one spike), growth is
//!    at most `max(×2, +4)` per decision, and replicas still starting count
//!    as capacity.
//! 3. **The host is a level of capacity**: when ebb's own host is full
//!    (CPUs busy ≥ 90 % over 5 s), more *local* replicas add no capacity,
//!    so scale-out holds and says so; a CPU reading taken then is
//!    *contended* (a replica's share of a full host, not its need), so no
//!    CPU policy scales in on it. Replicas that run elsewhere (Swarm) are
//!    sampled without a host and are not limited by it.

use super::decision::{Hold, HoldKind, PolicyOutcome, Vote};
use super::metrics::{duration, number};
use super::target::ceil_count;
use super::target::plural;
use super::Time;
use std::fmt;
use std::time::Duration;

/// `[service.NAME.scaling.saturation]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaturationConfig {
    /// The guard: no scale-in while requests queue or are shed, nor for
    /// `settle` after. Off only when the config says `hold_scale_in = false`.
    pub hold_scale_in: bool,
    pub settle: Duration,
    /// Demand sizing: scale out from what the balancer sees when requests
    /// keep queueing, even while the CPU reads within its target.
    pub scale_out: bool,
    /// How long requests must keep queueing before demand sizing acts.
    pub scale_out_after: Duration,
}

impl SaturationConfig {
    pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);
    pub const DEFAULT_SCALE_OUT_AFTER: Duration = Duration::from_secs(3);
    /// The name demand sizing signs its changes with.
    pub const POLICY: &'static str = "saturation";

    /// The history the rules read: the longer of the two windows and the
    /// host window.
    pub fn history_needed(&self) -> Duration {
        self.settle.max(self.scale_out_after).max(HOST_WINDOW)
    }
}

impl Default for SaturationConfig {
    fn default() -> Self {
        Self {
            hold_scale_in: true,
            settle: Self::DEFAULT_SETTLE,
            scale_out: true,
            scale_out_after: Self::DEFAULT_SCALE_OUT_AFTER,
        }
    }
}

/// What the balancer saw of demand in one second.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Demand {
    /// Requests that arrived in the second, whatever became of them.
    pub offered_per_s: f64,
    /// Requests answered in the second (by a replica).
    pub served_per_s: f64,
    /// The most requests waiting in the balancer's queue at any instant of
    /// the second.
    pub queued: u32,
    /// Requests the balancer gave up on in the second: queue full, or
    /// waited past `queue_timeout` (503 with `Retry-After`).
    pub shed: u32,
    /// Requests in flight at replicas at the end of the second.
    pub in_flight: u32,
    /// Routable replicas, and how many of them were at their limit.
    pub routable: u32,
    pub at_limit: u32,
    /// `max_in_flight`, when the service sets one.
    pub limit: Option<u32>,
    /// Answers given in the second: by replicas (any status) and by the
    /// balancer on a replica's behalf (502, 504, 503 with none routable);
    /// not shed requests, which saturation accounts for.
    pub answered_per_s: f64,
    /// Of those, answers with a 5xx status (what the scale-in freeze reads).
    pub errors_per_s: f64,
}

impl Demand {
    /// Requests waited for a replica, or were turned away.
    pub fn is_saturated(&self) -> bool {
        self.queued > 0 || self.shed > 0
    }

    /// The fewest replicas that would have served this second's demand
    /// without queueing, and the arithmetic; `None` without a way to tell.
    pub fn replicas_needed(&self) -> Option<(u32, String)> {
        if let Some(limit) = self.limit.filter(|&l| l > 0) {
            let concurrency = self.in_flight + self.queued;
            let n = concurrency.div_ceil(limit);
            return Some((n, format!("ceil(({} in flight + {} queued) / {limit})", self.in_flight, self.queued)));
        }
        if self.served_per_s > 0.0 && self.routable > 0 {
            let n = ceil_count(f64::from(self.routable) * self.offered_per_s / self.served_per_s);
            let why = format!(
                "ceil({} × {} offered / {} served req/s)",
                self.routable,
                number(self.offered_per_s),
                number(self.served_per_s)
            );
            return Some((n, why));
        }
        None
    }
}

impl fmt::Display for Demand {
    /// `992 requests queued, 4 of 4 replicas at their limit of 8, 12 shed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} request{} queued", self.queued, plural(self.queued))?;
        if let Some(limit) = self.limit {
            write!(f, ", {} of {} replicas at their limit of {limit}", self.at_limit, self.routable)?;
        }
        if self.shed > 0 {
            write!(f, ", {} shed", self.shed)?;
        }
        Ok(())
    }
}

/// ebb's host in one second: how many CPUs ebb may use and how busy they
/// were (every process on them, ebb's replicas and anything else).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HostSample {
    pub cpus: f64,
    /// CPUs' worth of time busy in the second (user, system, irq, steal).
    pub busy_cpus: f64,
    /// Share of time (0–1) some runnable task waited for a CPU
    /// (`/proc/pressure/cpu` "some", over 10 s), where the kernel has it.
    pub pressure: Option<f64>,
}

/// Over this long the host's busy share is averaged.
pub const HOST_WINDOW: Duration = Duration::from_secs(5);
/// At or above this busy share the host is full.
pub const HOST_FULL_SHARE: f64 = 0.9;

/// The host, full, over [`HOST_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostFull {
    pub busy_cpus: f64,
    pub cpus: f64,
    pub pressure: Option<f64>,
}

impl HostFull {
    /// The mean over the window, when it is full. Needs a whole window of
    /// host samples: a few busy seconds at start prove nothing.
    pub fn assess(samples: &[(Time, HostSample)], now: Time) -> Option<HostFull> {
        let recent: Vec<&HostSample> =
            samples.iter().filter(|(at, _)| now.saturating_sub(*at) < HOST_WINDOW).map(|(_, h)| h).collect();
        if (recent.len() as u64) < HOST_WINDOW.as_secs() {
            return None;
        }
        let n = recent.len() as f64;
        let cpus = recent.iter().map(|h| h.cpus).sum::<f64>() / n;
        let busy = recent.iter().map(|h| h.busy_cpus).sum::<f64>() / n;
        let pressure = recent.last().and_then(|h| h.pressure);
        (cpus > 0.0 && busy >= HOST_FULL_SHARE * cpus).then_some(HostFull { busy_cpus: busy, cpus, pressure })
    }

    /// `host full: 2.0 of 2 CPUs busy (CPU pressure 46%)`.
    pub fn describe(&self) -> String {
        let mut s = format!("host full: {:.1} of {} CPUs busy", self.busy_cpus, number_cpus(self.cpus));
        if let Some(p) = self.pressure {
            s.push_str(&format!(" (CPU pressure {:.0}%)", p * 100.0));
        }
        s
    }

    /// The hold on scale-out: more local replicas would not add capacity.
    pub fn scale_out_hold(&self, wanted: Option<(&str, u32)>) -> Hold {
        let mut why = format!(
            "{}; more local replicas would not add capacity — lower cpu per replica, raise the host, or run on Swarm",
            self.describe()
        );
        if let Some((policy, n)) = wanted {
            why.push_str(&format!(" ({policy} wants {n})"));
        }
        Hold { kind: HoldKind::HostFull, policy: None, why, remaining: None }
    }

    /// The hold on CPU scale-in: the readings are contended.
    pub fn contended_hold(&self) -> Hold {
        let why = format!(
            "{}; CPU readings are contended (a replica's share of a full host, not its need), so no scale-in on cpu",
            self.describe()
        );
        Hold { kind: HoldKind::HostFull, policy: None, why, remaining: None }
    }
}

fn number_cpus(cpus: f64) -> String {
    if (cpus - cpus.round()).abs() < 1e-9 {
        format!("{cpus:.0}")
    } else {
        format!("{cpus:.1}")
    }
}

/// The saturation state at a decision, from the recent demand samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Saturation {
    /// The latest saturated second and when it was, if within `settle`.
    pub last: Option<(Time, Demand)>,
    /// Every second of the last `scale_out_after` was saturated (none of
    /// them before `since`, the last scale-out): demand sizing may act.
    pub sustained: bool,
    /// The smallest need over that window, with its arithmetic.
    pub needed: Option<(u32, String)>,
}

impl Saturation {
    /// Reads `samples` (time, demand), oldest first. `since`: the last
    /// increase of desired capacity; seconds before it do not count toward
    /// a sustained saturation (new capacity gets a window to act).
    pub fn assess(samples: &[(Time, Demand)], now: Time, config: &SaturationConfig, since: Option<Time>) -> Self {
        let last = samples
            .iter()
            .rev()
            .find(|(at, d)| d.is_saturated() && now.saturating_sub(*at) < config.settle.max(Duration::from_secs(1)))
            .copied();
        let window: Vec<&(Time, Demand)> =
            samples.iter().filter(|(at, _)| now.saturating_sub(*at) < config.scale_out_after).collect();
        let whole = window.len() as u64 >= config.scale_out_after.as_secs().max(1);
        let after_change = window.iter().all(|(at, _)| since.is_none_or(|s| *at > s));
        let sustained = whole && after_change && window.iter().all(|(_, d)| d.is_saturated());
        let needed = if sustained {
            window.iter().filter_map(|(_, d)| d.replicas_needed()).min_by_key(|(n, _)| *n)
        } else {
            None
        };
        Saturation { last, sustained, needed }
    }

    /// The guard's objection to scale-in, if it holds now.
    pub fn guard(&self, now: Time, config: &SaturationConfig) -> Option<Hold> {
        if !config.hold_scale_in {
            return None;
        }
        let (at, demand) = self.last?;
        let ago = now.saturating_sub(at);
        let (why, remaining) = if ago < Duration::from_secs(1) {
            (format!("saturated — {demand}"), None)
        } else {
            let settle = config.settle.saturating_sub(ago);
            (format!("settling after saturation ({demand}, {} ago)", duration(ago)), Some(settle))
        };
        Some(Hold { kind: HoldKind::Saturated, policy: None, why, remaining })
    }

    /// Demand sizing's vote, when requests have kept queueing.
    /// `capacity`: replicas counted as capacity now (in service and
    /// starting, at least desired).
    pub fn vote(&self, config: &SaturationConfig, desired: u32, capacity: u32) -> Option<Vote> {
        if !config.scale_out || !self.sustained {
            return None;
        }
        let (needed, formula) = self.needed.clone()?;
        let (_, demand) = self.last?;
        let lasted = duration(config.scale_out_after);
        let reason = format!("saturation: requests queued for {lasted} ({demand}) -> {formula} = {needed}");
        let policy = SaturationConfig::POLICY.to_string();
        if needed <= capacity {
            let why =
                format!("saturated, but the {capacity} replicas starting or in service cover the demand ({needed})");
            let hold = Hold { kind: HoldKind::WarmingUp, policy: Some(policy.clone()), why, remaining: None };
            return Some(Vote { policy, outcome: PolicyOutcome::Stay(Some(hold)), reason, capped: None });
        }
        // Growth per decision: max(×2, +4), as HPA's default behaviour.
        let limit = capacity.saturating_mul(2).max(capacity.saturating_add(4)).max(desired + 1);
        let capped = (needed > limit).then(|| super::decision::Cap {
            kind: super::decision::CapKind::RateLimit,
            wanted: needed,
            limit,
            note: format!("demand sizing grows at most max(×2, +4) from {capacity}: {limit} (wanted {needed})"),
        });
        Some(Vote { policy, outcome: PolicyOutcome::Scale(needed.min(limit)), reason, capped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Time {
        Duration::from_secs(n)
    }

    fn queued(q: u32, in_flight: u32) -> Demand {
        Demand {
            offered_per_s: 100.0,
            served_per_s: 40.0,
            queued: q,
            shed: 0,
            in_flight,
            routable: in_flight / 8,
            at_limit: in_flight / 8,
            limit: Some(8),
            ..Default::default()
        }
    }

    const CONFIG: SaturationConfig = SaturationConfig {
        hold_scale_in: true,
        settle: Duration::from_secs(5),
        scale_out: true,
        scale_out_after: Duration::from_secs(3),
    };

    #[test]
    fn a_queue_is_saturation_and_says_how_much() {
        let d = queued(992, 32);
        assert!(d.is_saturated());
        assert_eq!(d.to_string(), "992 requests queued, 4 of 4 replicas at their limit of 8");
        assert!(
            !Demand { in_flight: 32, routable: 4, at_limit: 4, limit: Some(8), ..Default::default() }.is_saturated()
        );
        assert!(Demand { shed: 1, ..Default::default() }.is_saturated(), "a shed request is saturation too");
    }

    #[test]
    fn demand_is_concurrency_over_the_limit_or_offered_over_served() {
        assert_eq!(queued(68, 32).replicas_needed().unwrap().0, 13, "ceil(100 / 8)");
        let no_limit =
            Demand { offered_per_s: 250.0, served_per_s: 100.0, routable: 4, queued: 30, ..Default::default() };
        let (n, why) = no_limit.replicas_needed().unwrap();
        assert_eq!((n, why.as_str()), (10, "ceil(4 × 250.0 offered / 100.0 served req/s)"));
        assert_eq!(Demand::default().replicas_needed(), None, "nothing served, no limit: no way to tell");
    }

    #[test]
    fn the_guard_holds_while_saturated_and_for_settle_after() {
        let samples = [(s(9), queued(0, 8)), (s(10), queued(50, 32))];
        let sat = Saturation::assess(&samples, s(10), &CONFIG, None);
        let hold = sat.guard(s(10), &CONFIG).unwrap();
        assert_eq!(hold.to_string(), "saturated — 50 requests queued, 4 of 4 replicas at their limit of 8");
        let sat = Saturation::assess(&samples, s(13), &CONFIG, None);
        assert_eq!(sat.guard(s(13), &CONFIG).unwrap().remaining, Some(s(2)), "settling: 2 s left of 5");
        let sat = Saturation::assess(&samples, s(15), &CONFIG, None);
        assert_eq!(sat.guard(s(15), &CONFIG), None, "5 s after the last queued second: lifted");
        let off = SaturationConfig { hold_scale_in: false, ..CONFIG };
        assert_eq!(Saturation::assess(&samples, s(10), &off, None).guard(s(10), &off), None);
    }

    #[test]
    fn demand_sizing_needs_a_whole_window_after_the_last_scale_out() {
        let samples: Vec<(Time, Demand)> = (1..=4).map(|t| (s(t), queued(68, 32))).collect();
        let sat = Saturation::assess(&samples[..2], s(2), &CONFIG, None);
        assert!(!sat.sustained, "2 s of 3");
        let sat = Saturation::assess(&samples, s(4), &CONFIG, None);
        let vote = sat.vote(&CONFIG, 4, 4).unwrap();
        assert_eq!(vote.outcome, PolicyOutcome::Scale(8), "13 needed, at most max(×2, +4) from 4");
        assert!(vote.reason.starts_with("saturation: requests queued for 3 s"), "{}", vote.reason);
        let sat = Saturation::assess(&samples, s(4), &CONFIG, Some(s(2)));
        assert!(!sat.sustained, "the scale-out at 2 s gets a whole window to act");
        let sat = Saturation::assess(&samples, s(4), &CONFIG, None);
        assert!(
            matches!(sat.vote(&CONFIG, 4, 13).unwrap().outcome, PolicyOutcome::Stay(Some(_))),
            "starting replicas cover it"
        );
    }

    #[test]
    fn the_host_is_full_only_over_a_whole_window() {
        let busy = HostSample { cpus: 2.0, busy_cpus: 1.96, pressure: Some(0.46) };
        let samples: Vec<(Time, HostSample)> = (1..=5).map(|t| (s(t), busy)).collect();
        assert_eq!(HostFull::assess(&samples[..4], s(4)), None, "4 s of 5");
        let full = HostFull::assess(&samples, s(5)).unwrap();
        assert_eq!(full.describe(), "host full: 2.0 of 2 CPUs busy (CPU pressure 46%)");
        let mut calm = samples.clone();
        calm[4].1.busy_cpus = 0.5;
        assert_eq!(HostFull::assess(&calm, s(5)), None, "mean 1.66 of 2 is below 90%");
    }
}
