//! The fleet rules of reconciliation, as plain functions over the replica
//! set: how many replicas to launch or retire to reach desired, crash-loop
//! backoff, the release of interrupted replicas, who leaves on scale-in,
//! which replicas are routable, and the chaos draw.
//!
//! They are kept together, apart from the I/O that carries them out,
//! because they are what moves next into the pure core's fleet planner
//! (`ebb_core`): the controller only executes what they decide.

use std::time::{Duration, Instant};

use ebb_core::config::ChaosConfig;
use ebb_core::fleet::{self, ScaleInCandidate};

use super::replicas::{Replica, ReplicaSet};
use super::SAMPLE_EVERY;
use crate::status::ReplicaState;

/// Crash-loop backoff bounds.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Counts toward desired capacity: starting or in service, not leaving,
/// and not under an interruption notice (its replacement counts instead).
pub(super) fn is_capacity(r: &Replica) -> bool {
    r.is_active() && !r.stopping && r.interrupt_deadline.is_none()
}

/// What reaching desired takes, outside a deploy.
#[derive(Debug, PartialEq)]
pub(super) enum ToDesired {
    Steady,
    Launch(u32),
    /// These leave on scale-in.
    Retire(Vec<String>),
}

/// How many to launch (unless crash-loop backoff holds starts) or which to
/// retire so that the capacity equals `desired`.
pub(super) fn to_desired(
    replicas: &ReplicaSet,
    desired: u32,
    current_version: u64,
    backoff: &Backoff,
    now: Instant,
) -> ToDesired {
    let active = replicas.iter().filter(|r| is_capacity(r)).count() as u32;
    if active < desired {
        if backoff.holds(now) {
            return ToDesired::Steady;
        }
        ToDesired::Launch(desired - active)
    } else if active > desired {
        ToDesired::Retire(pick_for_scale_in(replicas, current_version, (active - desired) as usize))
    } else {
        ToDesired::Steady
    }
}

/// Starts are held back for `delay` after `streak` failures in a row; its
/// `Display` is the event text.
#[derive(Debug, PartialEq)]
pub(super) struct BackingOff {
    pub(super) streak: u32,
    pub(super) delay: Duration,
}

impl std::fmt::Display for BackingOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} replicas in a row failed before reaching service; next start in {}",
            self.streak,
            humantime::format_duration(self.delay)
        )
    }
}

/// Crash-loop backoff: replicas that fail in a row without one reaching
/// service hold further starts back, longer each time.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// Replicas that failed in a row without one reaching service.
    failure_streak: u32,
    /// Starts are held back until then.
    hold_starts_until: Option<Instant>,
}

impl Backoff {
    /// A replica failed before ever serving: from the second in a row,
    /// further starts are held back, twice as long each time.
    pub(super) fn count_failure(&mut self, now: Instant) -> Option<BackingOff> {
        self.failure_streak += 1;
        if self.failure_streak < 2 {
            return None;
        }
        let factor = 1u32 << (self.failure_streak - 2).min(10);
        let delay = (BACKOFF_FIRST * factor).min(BACKOFF_MAX);
        self.hold_starts_until = Some(now + delay);
        Some(BackingOff { streak: self.failure_streak, delay })
    }

    /// A replica reached service: the crash loop, if any, is over.
    pub(super) fn reset(&mut self) {
        self.failure_streak = 0;
        self.hold_starts_until = None;
    }

    pub(super) fn holds(&self, now: Instant) -> bool {
        self.hold_starts_until.is_some_and(|t| now < t)
    }

    /// Why starts are held, for status.
    pub(super) fn holding(&self, now: Instant) -> Option<String> {
        self.hold_starts_until.filter(|t| *t > now).map(|t| {
            format!(
                "crash-loop backoff: {} replicas failed in a row, next start in {:.0} s",
                self.failure_streak,
                (t - now).as_secs_f64().ceil()
            )
        })
    }
}

/// Interrupted replicas leave once capacity is back without them, or at
/// their deadline, whichever comes first: the ids to retire, and why.
pub(super) fn release_interrupted(replicas: &ReplicaSet, desired: u32, now: Instant) -> Vec<(String, &'static str)> {
    let capacity_in_service = replicas.iter().filter(|r| is_capacity(r) && r.serving()).count() as u32;
    replicas
        .iter()
        .filter(|r| r.is_active() && !r.stopping)
        .filter_map(|r| {
            let deadline = r.interrupt_deadline?;
            if capacity_in_service >= desired {
                Some((r.id.clone(), "interruption notice: replacement in service"))
            } else if now >= deadline {
                Some((r.id.clone(), "interruption notice: out of time before the replacement was ready"))
            } else {
                None
            }
        })
        .collect()
}

/// The replicas that may leave on scale-in, as the core sees them.
pub(super) fn scale_in_candidates(replicas: &ReplicaSet, current_version: u64) -> Vec<ScaleInCandidate> {
    replicas
        .iter()
        .filter(|r| is_capacity(r))
        .map(|r| ScaleInCandidate {
            id: r.id.clone(),
            protected: r.protected,
            current_version: r.version == current_version,
            // An ejected replica is failing its requests: the first to
            // go, like one not yet serving.
            in_service: r.state == ReplicaState::InService && r.ejection.is_none(),
            in_flight: r.backend.as_ref().map(|b| b.in_flight()).unwrap_or(0),
            age: r.started_at.elapsed(),
        })
        .collect()
}

/// Which replicas leave on scale-in (the core decides: never a protected
/// one; those not yet serving first, then old versions, then the fewest
/// in flight, then the youngest).
pub(super) fn pick_for_scale_in(replicas: &ReplicaSet, current_version: u64, count: usize) -> Vec<String> {
    let candidates = scale_in_candidates(replicas, current_version);
    fleet::pick_for_scale_in(&candidates, count).into_iter().map(|c| c.id.clone()).collect()
}

/// Which version(s) may take traffic: during a blue-green switch the
/// deploy says; during a rolling deploy every version; otherwise only the
/// current one (a protected replica left on an old version by a deploy
/// finishes its work but gets no new requests).
#[derive(Debug, Clone, Copy)]
pub(super) struct Routing {
    pub(super) current: u64,
    /// Blue-green: only this version is routable.
    pub(super) only: Option<u64>,
    pub(super) deploying: bool,
}

impl Routing {
    pub(super) fn routes_version(&self, version: u64) -> bool {
        match (self.only, self.deploying) {
            (Some(only), _) => version == only,
            (None, true) => true,
            (None, false) => version == self.current,
        }
    }
}

/// Would take requests but for an ejection: serving, not leaving, and of a
/// version that routes (the fleet outlier detection looks at).
pub(super) fn may_route(r: &Replica, routing: Routing) -> bool {
    r.serving() && !r.stopping && routing.routes_version(r.version)
}

/// In the rotation: may route and is not ejected by outlier detection.
pub(super) fn is_routable(r: &Replica, routing: Routing) -> bool {
    may_route(r, routing) && r.ejection.is_none()
}

/// `[service.NAME.chaos]`: now and then, a random replica in service gets
/// an interruption notice, as a spot instance would (about once per
/// `interrupt_every`, checked once a second). The victim and its notice.
pub(super) fn maybe_interrupt_at_random(
    replicas: &ReplicaSet,
    chaos: Option<ChaosConfig>,
) -> Option<(String, Duration)> {
    let chaos = chaos?;
    if rand::random::<f64>() >= chaos.chance(SAMPLE_EVERY) {
        return None;
    }
    let candidates: Vec<String> = replicas
        .iter()
        .filter(|r| is_capacity(r) && r.state == ReplicaState::InService && !r.protected)
        .map(|r| r.id.clone())
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let victim = candidates[rand::random::<usize>() % candidates.len()].clone();
    Some((victim, chaos.notice))
}

#[cfg(test)]
mod tests {
    use ebb_core::health::HealthTracker;

    use super::*;

    fn replica(id: &str, version: u64, state: ReplicaState) -> Replica {
        let mut r = Replica::new(id.into(), version, Instant::now(), 0, HealthTracker::new(1, 1));
        r.state = state;
        r
    }

    fn set(replicas: Vec<Replica>) -> ReplicaSet {
        let mut set = ReplicaSet::default();
        for r in replicas {
            set.push(r);
        }
        set
    }

    #[test]
    fn backoff_starts_at_the_second_failure_in_a_row_and_doubles_up_to_its_bound() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert_eq!(backoff.count_failure(now), None, "one failure is not a loop");
        assert!(!backoff.holds(now));
        let delays: Vec<Duration> = (0..9).map(|_| backoff.count_failure(now).unwrap().delay).collect();
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert!(backoff.holds(now));
        assert_eq!(
            BackingOff { streak: 3, delay: Duration::from_secs(1) }.to_string(),
            "3 replicas in a row failed before reaching service; next start in 1s"
        );
        backoff.reset();
        assert!(!backoff.holds(now));
        assert_eq!(backoff.count_failure(now), None, "reaching service ends the streak");
    }

    #[test]
    fn to_desired_counts_capacity_and_holds_starts_during_backoff() {
        let now = Instant::now();
        let mut leaving = replica("web-3", 1, ReplicaState::InService);
        leaving.stopping = true;
        let mut interrupted = replica("web-4", 1, ReplicaState::InService);
        interrupted.interrupt_deadline = Some(now);
        let replicas = set(vec![
            replica("web-1", 1, ReplicaState::InService),
            replica("web-2", 1, ReplicaState::Starting),
            leaving,
            interrupted,
        ]);
        let steady = Backoff::default();
        assert_eq!(to_desired(&replicas, 2, 1, &steady, now), ToDesired::Steady, "leaving or interrupted do not count");
        assert_eq!(to_desired(&replicas, 5, 1, &steady, now), ToDesired::Launch(3));
        assert_eq!(
            to_desired(&replicas, 1, 1, &steady, now),
            ToDesired::Retire(vec!["web-2".into()]),
            "not yet serving first"
        );
        let mut held = Backoff::default();
        held.count_failure(now);
        held.count_failure(now);
        assert_eq!(to_desired(&replicas, 5, 1, &held, now), ToDesired::Steady);
    }

    #[test]
    fn routing_follows_the_deploy_blue_green_first() {
        let idle = Routing { current: 2, only: None, deploying: false };
        assert!(idle.routes_version(2) && !idle.routes_version(1));
        let rolling = Routing { current: 2, only: None, deploying: true };
        assert!(rolling.routes_version(1) && rolling.routes_version(3));
        let switched = Routing { current: 2, only: Some(3), deploying: true };
        assert!(switched.routes_version(3) && !switched.routes_version(2));
    }
}
