//! Passive outlier detection: take a replica that fails the requests it is
//! given out of the rotation for a while, as Envoy's outlier detection does.
//!
//! Health checks ask one path now and then; a replica can pass them and
//! still answer 500 to everything else. Worse, a replica that fails fast is
//! the one with the fewest requests outstanding, so least-outstanding
//! balancing sends it *more* than its share. The balancer already counts
//! what each replica did with the requests it got; [`OutlierDetector`] reads
//! those counts and decides.
//!
//! Three rules, any one ejects (checked in this order):
//! - `consecutive_5xx` responses with a 5xx status in a row;
//! - `consecutive_gateway_failures` in a row: connect errors, a connection
//!   closed before the answer, no answer within `upstream_timeout`;
//! - a failure ratio: at least `failure_percent` % of the requests of the
//!   last `failure_window` failed (5xx or gateway failure), once there were
//!   at least `failure_min_requests` of them.
//!
//! An ejection lasts `base_ejection_time × n`, where `n` counts this
//! replica's recent ejections (1 the first time), capped at
//! `max_ejection_time`. `n` falls by one for every `base_ejection_time` the
//! replica then spends back in the rotation without being ejected. After
//! the time is up the replica returns on its own: it gets requests again,
//! and is ejected again if it still fails.
//!
//! **Never the whole fleet.** At most `max_ejection_percent` % of the
//! replicas that could take requests (in service, healthy, not leaving) are
//! ejected at once, with a floor of one, and never the last one: a fleet
//! that fails everywhere keeps serving (health checks and deploys deal with
//! that), and ejecting everything would turn some errors into all errors.
//! When the fleet shrinks under an ejection (the others fail their health
//! checks or leave) so that none is left in the rotation, the ejection
//! that would end first is cut short.
//!
//! Ejection is not health: an ejected replica stays healthy and in service,
//! it is only out of the rotation. Its health checks go on, and if they
//! fail it is replaced as usual.
//!
//! Pure: the caller passes `now` and each replica's counts (the live
//! controller once a second and whenever the balancer sees a streak reach a
//! threshold); the detector returns [`OutlierEvent`]s whose `Display` is the
//! event text.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::scaling::metrics::duration as human;
use crate::scaling::Time;

/// `[service.NAME.proxy.outlier]`: when a replica is taken out of the
/// rotation for failing its requests. On by default.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// `false` turns passive outlier detection off.
    pub enabled: bool,
    /// Eject after this many 5xx responses in a row.
    pub consecutive_5xx: u32,
    /// Eject after this many gateway failures in a row (connect errors,
    /// connection closed before an answer, no answer in time).
    pub consecutive_gateway_failures: u32,
    /// Eject when at least this share (percent) of the requests of the
    /// last `failure_window` failed...
    pub failure_percent: f64,
    pub failure_window: Duration,
    /// ...and there were at least this many of them.
    pub failure_min_requests: u32,
    /// The first ejection lasts this long; the n-th, n times as long.
    pub base_ejection_time: Duration,
    /// No ejection lasts longer than this (nor less than `base_ejection_time`).
    pub max_ejection_time: Duration,
    /// At most this share (percent) of the replicas that could take requests
    /// are ejected at once; at least one may be, never the last one.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    /// Envoy's consecutive defaults (5 in a row, 30 s, capped at 300 s);
    /// a ratio rule that needs enough requests not to fire on a handful;
    /// half the fleet at most, so two replicas can lose one.
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_5xx: 5,
            consecutive_gateway_failures: 5,
            failure_percent: 50.0,
            failure_window: Duration::from_secs(10),
            failure_min_requests: 20,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Which in-a-row count the balancer keeps for a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streak {
    ServerErrors,
    GatewayFailures,
}

impl OutlierConfig {
    /// Off: never ejects.
    pub fn off() -> Self {
        Self { enabled: false, ..Self::default() }
    }

    fn threshold(&self, streak: Streak) -> u32 {
        match streak {
            Streak::ServerErrors => self.consecutive_5xx,
            Streak::GatewayFailures => self.consecutive_gateway_failures,
        }
    }

    /// Whether a streak that just grew to `count` should make the
    /// controller look now rather than at its next second: at the threshold
    /// and at each further multiple of it (so a replica spared by the cap
    /// is looked at again, but not on every failure).
    pub fn streak_worth_a_look(&self, streak: Streak, count: u32) -> bool {
        let threshold = self.threshold(streak).max(1);
        self.enabled && count >= threshold && count.is_multiple_of(threshold)
    }

    /// How long the `n`-th recent ejection lasts (`n` ≥ 1).
    pub fn ejection_time(&self, n: u32) -> Duration {
        let cap = self.max_ejection_time.max(self.base_ejection_time);
        self.base_ejection_time.saturating_mul(n.max(1)).min(cap)
    }

    /// How many of `fleet` replicas may be ejected at once: the percentage
    /// rounded down, at least one, and never all of them (0 for a fleet of
    /// one).
    pub fn max_ejected(&self, fleet: usize) -> usize {
        let share = fleet * self.max_ejection_percent as usize / 100;
        share.max(1).min(fleet.saturating_sub(1))
    }
}

/// What the balancer saw of one replica since the last [`OutlierDetector::step`],
/// and its streaks now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Responses from the replica, any status.
    pub answered: u64,
    /// Of those, with a 5xx status.
    pub server_errors: u64,
    /// Requests the replica never answered: connect errors, connection
    /// closed before the answer, timeouts.
    pub gateway_failures: u64,
    /// 5xx responses in a row, up to now.
    pub consecutive_5xx: u32,
    /// Gateway failures in a row, up to now.
    pub consecutive_gateway_failures: u32,
}

/// Why a replica was (or would be) ejected, with the numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Consecutive5xx { count: u32, threshold: u32 },
    ConsecutiveGatewayFailures { count: u32, threshold: u32 },
    FailureRatio { failed: u64, requests: u64, window: Duration, threshold_percent: f64, min_requests: u32 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Consecutive5xx { count, threshold } => {
                write!(f, "{count} consecutive 5xx responses (consecutive_5xx = {threshold})")
            }
            Reason::ConsecutiveGatewayFailures { count, threshold } => write!(
                f,
                "{count} consecutive gateway failures: connect errors, closed connections or timeouts (consecutive_gateway_failures = {threshold})"
            ),
            Reason::FailureRatio { failed, requests, window, threshold_percent, min_requests } => write!(
                f,
                "{failed} of {requests} requests failed in the last {} ({:.0} %; failure_percent = {threshold_percent} over at least {min_requests} requests)",
                human(*window),
                *failed as f64 * 100.0 / (*requests).max(1) as f64,
            ),
        }
    }
}

/// One ejection in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Ejection {
    pub since: Time,
    pub until: Time,
    pub reason: Reason,
    /// This replica's recent ejections, this one included (the multiplier).
    pub nth: u32,
    /// Replicas ejected once this one is, and the replicas that could take
    /// requests, when it was decided.
    pub ejected: usize,
    pub fleet: usize,
}

impl Ejection {
    pub fn length(&self) -> Duration {
        self.until.saturating_sub(self.since)
    }

    /// Time left at `now`.
    pub fn remaining(&self, now: Time) -> Duration {
        self.until.saturating_sub(now)
    }
}

/// What changed in one step.
#[derive(Debug, Clone, PartialEq)]
pub enum OutlierEvent {
    /// Out of the rotation until `ejection.until`.
    Ejected { replica: String, ejection: Ejection },
    /// Its ejection is over: back in the rotation. `cut_short` when it
    /// ended early because no other replica was left in the rotation.
    Returned { replica: String, ejection: Ejection, next: Duration, cut_short: Option<Duration> },
    /// It fails the rules but ejecting it would take more than
    /// `max_ejection_percent` of the fleet (or its last replica): it stays.
    /// Said once until it stops failing the rules.
    Spared { replica: String, reason: Reason, ejected: usize, fleet: usize, max: usize },
}

impl OutlierEvent {
    pub fn replica(&self) -> &str {
        match self {
            OutlierEvent::Ejected { replica, .. }
            | OutlierEvent::Returned { replica, .. }
            | OutlierEvent::Spared { replica, .. } => replica,
        }
    }
}

impl fmt::Display for OutlierEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutlierEvent::Ejected { replica, ejection: e } => write!(
                f,
                "{replica} ejected for {}: {} (ejection {} = base_ejection_time × {}; {} of {} replicas ejected)",
                human(e.length()),
                e.reason,
                ordinal(e.nth),
                e.nth,
                e.ejected,
                e.fleet,
            ),
            OutlierEvent::Returned { replica, ejection: e, next, cut_short: None } => write!(
                f,
                "{replica} back in the rotation after {} ejected for {}; ejected again, it would be out for {}",
                human(e.length()),
                short_reason(&e.reason),
                human(*next),
            ),
            OutlierEvent::Returned { replica, ejection: e, next, cut_short: Some(left) } => write!(
                f,
                "{replica} back in the rotation {} early (ejected for {}): no other replica is left in the rotation, and ejection never takes the last; ejected again, it would be out for {}",
                human(*left),
                short_reason(&e.reason),
                human(*next),
            ),
            OutlierEvent::Spared { replica, reason, ejected, fleet, max } => write!(
                f,
                "{replica} kept in the rotation although it fails: {reason}; {ejected} of {fleet} replicas are ejected already and at most {max} may be (max_ejection_percent, never the last)"
            ),
        }
    }
}

fn short_reason(reason: &Reason) -> &'static str {
    match reason {
        Reason::Consecutive5xx { .. } => "consecutive 5xx",
        Reason::ConsecutiveGatewayFailures { .. } => "consecutive gateway failures",
        Reason::FailureRatio { .. } => "its failure ratio",
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// What the detector remembers of one replica.
#[derive(Debug, Clone, Default)]
struct Tracked {
    /// (when, requests, failed) per step, within `failure_window`.
    window: VecDeque<(Time, u64, u64)>,
    /// Recent ejections: the multiplier of the next one, minus one.
    ejections: u32,
    /// When `ejections` last changed (an ejection ended or decayed).
    settled_since: Time,
    ejected: Option<Ejection>,
    /// A `Spared` event was given for the current streak of failures.
    spared: bool,
}

/// The outlier detector of one service.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    replicas: BTreeMap<String, Tracked>,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig) -> Self {
        Self { config, replicas: BTreeMap::new() }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// New rules (`ebb apply`): ejections in progress run out as they were
    /// decided; streaks and windows are judged by the new rules from now on.
    pub fn reconfigure(&mut self, config: OutlierConfig) {
        self.config = config;
    }

    /// The ejection in progress for `replica`, if any.
    pub fn ejection(&self, replica: &str) -> Option<&Ejection> {
        self.replicas.get(replica).and_then(|t| t.ejected.as_ref())
    }

    pub fn is_ejected(&self, replica: &str) -> bool {
        self.ejection(replica).is_some()
    }

    /// One look at the fleet at `now`. `fleet` is every replica that could
    /// take requests but for an ejection (in service, healthy, not leaving),
    /// ejected ones included, with what the balancer saw of it since the
    /// last step. Replicas not listed are forgotten (they left, or failed
    /// their health checks). Returns what changed: returns first (their
    /// time is up, which also frees room under the cap), then ejections.
    pub fn step(&mut self, now: Time, fleet: &[(&str, Outcomes)]) -> Vec<OutlierEvent> {
        self.replicas.retain(|id, _| fleet.iter().any(|(r, _)| r == id));
        if !self.config.enabled {
            self.replicas.clear();
            return Vec::new();
        }
        let config = &self.config;
        let mut events = Vec::new();

        for (id, outcomes) in fleet {
            let tracked = self
                .replicas
                .entry(id.to_string())
                .or_insert_with(|| Tracked { settled_since: now, ..Tracked::default() });
            let failed = outcomes.server_errors + outcomes.gateway_failures;
            let requests = outcomes.answered + outcomes.gateway_failures;
            if requests > 0 && tracked.ejected.is_none() {
                tracked.window.push_back((now, requests, failed));
            }
            while tracked.window.front().is_some_and(|(t, ..)| now.saturating_sub(*t) >= config.failure_window) {
                tracked.window.pop_front();
            }
            // Time is up: back in the rotation, with a clean slate of
            // counts (what it did before its ejection is judged already).
            if tracked.ejected.as_ref().is_some_and(|e| now >= e.until) {
                let ejection = tracked.ejected.take().expect("checked above");
                tracked.settled_since = now;
                tracked.window.clear();
                tracked.spared = false;
                events.push(OutlierEvent::Returned {
                    replica: id.to_string(),
                    ejection,
                    next: config.ejection_time(tracked.ejections + 1),
                    cut_short: None,
                });
            }
            // A replica that behaves for a whole base ejection time earns
            // one step of its multiplier back.
            if tracked.ejected.is_none() && tracked.ejections > 0 && !config.base_ejection_time.is_zero() {
                while tracked.ejections > 0 && now.saturating_sub(tracked.settled_since) >= config.base_ejection_time {
                    tracked.ejections -= 1;
                    tracked.settled_since += config.base_ejection_time;
                }
            }
        }

        // Never the last: if the fleet shrank under the ejected (a replica
        // left, or failed its health checks) and none is left in the
        // rotation, the ejection that would end first ends now.
        let still_ejected = self.replicas.values().filter(|t| t.ejected.is_some()).count();
        if !fleet.is_empty() && still_ejected >= fleet.len() {
            let first = self
                .replicas
                .iter()
                .filter_map(|(id, t)| t.ejected.as_ref().map(|e| (e.until, id.clone())))
                .min()
                .map(|(_, id)| id);
            if let Some(id) = first {
                let tracked = self.replicas.get_mut(&id).expect("found above");
                let ejection = tracked.ejected.take().expect("ejected");
                tracked.settled_since = now;
                tracked.window.clear();
                tracked.spared = false;
                events.push(OutlierEvent::Returned {
                    replica: id,
                    cut_short: Some(ejection.remaining(now)),
                    ejection,
                    next: config.ejection_time(tracked.ejections + 1),
                });
            }
        }

        let max = config.max_ejected(fleet.len());
        let mut ejected = self.replicas.values().filter(|t| t.ejected.is_some()).count();
        for (id, outcomes) in fleet {
            let tracked = self.replicas.get_mut(*id).expect("tracked above");
            if tracked.ejected.is_some() {
                continue;
            }
            // A returned replica's streaks are reset by the caller; counts
            // from before a return must not eject it again at once.
            let just_returned =
                events.iter().any(|e| matches!(e, OutlierEvent::Returned { replica, .. } if replica == id));
            let Some(reason) = (!just_returned).then(|| trips(config, outcomes, &tracked.window)).flatten() else {
                tracked.spared = false;
                continue;
            };
            if ejected >= max {
                if !tracked.spared {
                    tracked.spared = true;
                    events.push(OutlierEvent::Spared {
                        replica: id.to_string(),
                        reason,
                        ejected,
                        fleet: fleet.len(),
                        max,
                    });
                }
                continue;
            }
            ejected += 1;
            tracked.ejections = tracked.ejections.saturating_add(1);
            tracked.window.clear();
            tracked.spared = false;
            let ejection = Ejection {
                since: now,
                until: now + config.ejection_time(tracked.ejections),
                reason,
                nth: tracked.ejections,
                ejected,
                fleet: fleet.len(),
            };
            tracked.ejected = Some(ejection.clone());
            events.push(OutlierEvent::Ejected { replica: id.to_string(), ejection });
        }
        events
    }
}

/// The first rule `outcomes` and the window break, if any.
fn trips(config: &OutlierConfig, outcomes: &Outcomes, window: &VecDeque<(Time, u64, u64)>) -> Option<Reason> {
    if outcomes.consecutive_5xx >= config.consecutive_5xx {
        return Some(Reason::Consecutive5xx { count: outcomes.consecutive_5xx, threshold: config.consecutive_5xx });
    }
    if outcomes.consecutive_gateway_failures >= config.consecutive_gateway_failures {
        return Some(Reason::ConsecutiveGatewayFailures {
            count: outcomes.consecutive_gateway_failures,
            threshold: config.consecutive_gateway_failures,
        });
    }
    let (requests, failed) = window.iter().fold((0, 0), |(r, f), (_, wr, wf)| (r + wr, f + wf));
    let enough = requests >= u64::from(config.failure_min_requests.max(1));
    (enough && failed as f64 * 100.0 >= config.failure_percent * requests as f64).then_some(Reason::FailureRatio {
        failed,
        requests,
        window: config.failure_window,
        threshold_percent: config.failure_percent,
        min_requests: config.failure_min_requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let c = OutlierConfig::default();
        let secs: Vec<u64> = (1..=12).map(|n| c.ejection_time(n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]);
        let short = OutlierConfig { max_ejection_time: Duration::from_secs(1), ..c };
        assert_eq!(short.ejection_time(3), Duration::from_secs(30), "never shorter than the base");
    }

    #[test]
    fn the_cap_allows_one_and_never_the_last() {
        let c = OutlierConfig::default();
        let max: Vec<usize> = (0..=6).map(|n| c.max_ejected(n)).collect();
        assert_eq!(max, [0, 0, 1, 1, 2, 2, 3]);
        let ten = OutlierConfig { max_ejection_percent: 10, ..OutlierConfig::default() };
        assert_eq!([ten.max_ejected(2), ten.max_ejected(25)], [1, 2]);
        let all = OutlierConfig { max_ejection_percent: 100, ..OutlierConfig::default() };
        assert_eq!([all.max_ejected(1), all.max_ejected(3)], [0, 2]);
    }

    #[test]
    fn a_streak_is_worth_a_look_at_each_multiple_of_its_threshold() {
        let c = OutlierConfig::default();
        let looks: Vec<u32> = (1..=16).filter(|&n| c.streak_worth_a_look(Streak::ServerErrors, n)).collect();
        assert_eq!(looks, [5, 10, 15]);
        assert!(!OutlierConfig::off().streak_worth_a_look(Streak::GatewayFailures, 5));
    }

    #[test]
    fn ordinals_read_as_english() {
        let words: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22].into_iter().map(ordinal).collect();
        assert_eq!(words, ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"]);
    }
}
