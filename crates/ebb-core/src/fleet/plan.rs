//! The reconcile step: from the facts about each replica to actions.

use super::{pick_for_scale_in, warm_pool, Counts, CrashLoop, ReplicaFacts, ReplicaPhase, ScaleInCandidate};
use crate::scaling::Time;
use std::fmt;
use std::time::Duration;

/// What the planner is asked about.
#[derive(Debug, Clone, Copy)]
pub struct FleetInput<'a> {
    pub now: Time,
    /// Desired capacity (what the autoscaler, `ebb scale` or a schedule set).
    pub desired: u32,
    /// The version new replicas run.
    pub current_version: u64,
    /// A deploy is running: its planner alone launches and retires.
    pub deploying: bool,
    pub replicas: &'a [ReplicaFacts<'a>],
    /// The warm pool's size (`[service.NAME.warm_pool] size`); 0: no pool.
    pub warm_pool: u32,
}

/// What the controller (or the simulator) should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetAction {
    /// Start `count` replicas of the current version.
    Launch { count: u32, reason: String },
    /// Take this replica out of the rotation, drain it, stop it.
    Retire { id: String, reason: RetireReason },
    /// `short` replicas are missing, but crash-loop backoff holds starts
    /// until `until`.
    HoldStarts { short: u32, until: Time },
    /// Resume this warm pool member: it leaves the pool and is capacity
    /// (and routable once resumed) at once, instead of a boot.
    TakeFromPool { id: String },
    /// Start `count` replicas of the current version into the warm pool.
    FillPool { count: u32 },
    /// This pool member passed its checks: suspend it.
    SuspendPooled { id: String },
}

/// Why a replica leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireReason {
    /// More capacity than desired; it was picked to go.
    ScaleIn,
    /// Under an interruption notice, and capacity in service is back
    /// without it.
    ReplacementInService,
    /// Under an interruption notice that ran out before its replacement
    /// was in service.
    NoticeRanOut,
    /// A warm pool member of a spec that is no longer current.
    PoolOldVersion,
    /// A warm pool member beyond the pool's size.
    PoolShrunk,
}

impl fmt::Display for RetireReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetireReason::ScaleIn => "scale-in",
            RetireReason::ReplacementInService => "interruption notice: replacement in service",
            RetireReason::NoticeRanOut => "interruption notice: out of time before the replacement was ready",
            RetireReason::PoolOldVersion => "warm pool: replaced by one of the current version",
            RetireReason::PoolShrunk => "warm pool: more members than its size",
        })
    }
}

/// Compares desired with the fleet and says what to do: release replicas
/// under an interruption notice whose time has come, then (when no deploy
/// runs) launch the missing capacity or retire the excess.
pub fn plan(input: &FleetInput, crash_loop: &CrashLoop) -> Vec<FleetAction> {
    let counts = Counts::of(input.replicas);
    let mut actions = release_interrupted(input, counts);
    if input.deploying {
        actions.extend(warm_pool::tend(input.replicas, input.current_version, input.warm_pool, &[]));
        return actions;
    }
    let mut taken = Vec::new();
    if counts.capacity < input.desired {
        let mut short = input.desired - counts.capacity;
        // The warm pool first: a resume instead of a boot.
        for id in warm_pool::takeable(input.replicas, input.current_version).into_iter().take(short as usize) {
            actions.push(FleetAction::TakeFromPool { id: id.to_string() });
            taken.push(id);
            short -= 1;
        }
        match crash_loop.holds_until(input.now) {
            _ if short == 0 => {}
            Some(until) => actions.push(FleetAction::HoldStarts { short, until }),
            None => actions.push(FleetAction::Launch {
                count: short,
                reason: format!("desired {}, {} starting or in service", input.desired, counts.capacity),
            }),
        }
    } else if counts.capacity > input.desired {
        let excess = (counts.capacity - input.desired) as usize;
        for id in pick_scale_in(input, excess) {
            actions.push(FleetAction::Retire { id, reason: RetireReason::ScaleIn });
        }
    }
    actions.extend(warm_pool::tend(input.replicas, input.current_version, input.warm_pool, &taken));
    let pool_short = warm_pool::short(input.replicas, input.current_version, input.warm_pool, &taken);
    if pool_short > 0 && crash_loop.holds_until(input.now).is_none() {
        actions.push(FleetAction::FillPool { count: pool_short });
    }
    actions
}

/// Replicas under a notice leave once capacity in service is back to
/// desired without them, or at their deadline.
fn release_interrupted(input: &FleetInput, counts: Counts) -> Vec<FleetAction> {
    let replacement_ready = counts.capacity_in_service >= input.desired;
    input
        .replicas
        .iter()
        .filter(|r| r.is_active())
        .filter_map(|r| {
            let deadline = r.interrupted_until?;
            let reason = if replacement_ready {
                RetireReason::ReplacementInService
            } else if input.now >= deadline {
                RetireReason::NoticeRanOut
            } else {
                return None;
            };
            Some(FleetAction::Retire { id: r.id.to_string(), reason })
        })
        .collect()
}

/// The `count` replicas that leave on scale-in, in order.
fn pick_scale_in(input: &FleetInput, count: usize) -> Vec<String> {
    let candidates: Vec<ScaleInCandidate> = input
        .replicas
        .iter()
        .filter(|r| r.is_capacity())
        .map(|r| ScaleInCandidate {
            id: r.id.to_string(),
            protected: r.protected,
            current_version: r.version == input.current_version,
            // An ejected replica is failing its requests: the first to go,
            // like one not yet serving.
            in_service: r.phase == ReplicaPhase::InService && !r.ejected,
            in_flight: r.in_flight,
            age: input.now.saturating_sub(r.started),
        })
        .collect();
    pick_for_scale_in(&candidates, count).into_iter().map(|c| c.id.clone()).collect()
}

/// The protected replicas that keep capacity above desired: scale-in waits
/// for them to be released. Empty when nothing waits.
pub fn scale_in_waits_for<'a>(replicas: &[ReplicaFacts<'a>], desired: u32) -> Vec<&'a str> {
    if Counts::of(replicas).capacity <= desired {
        return Vec::new();
    }
    replicas.iter().filter(|r| r.is_capacity() && r.protected).map(|r| r.id).collect()
}

/// When a replica given an interruption notice of `notice` at `now` must
/// start to leave: early enough to drain and stop before the notice runs out.
pub fn leave_by(now: Time, notice: Duration, drain_timeout: Duration, stop_timeout: Duration) -> Time {
    now + notice.saturating_sub(drain_timeout + stop_timeout)
}

/// Chaos: whether a random replica gets an interruption notice now, and
/// which. `chance` is the probability that one is due in this step
/// ([`crate::config::ChaosConfig::chance`]); `draw` is uniform in `[0, 1)`
/// and `pick` any number, both random. Only replicas in service that count
/// as capacity and are not protected are candidates.
pub fn chaos_victim<'a>(replicas: &[ReplicaFacts<'a>], chance: f64, draw: f64, pick: u64) -> Option<&'a str> {
    if draw >= chance {
        return None;
    }
    let candidates: Vec<&str> = replicas
        .iter()
        .filter(|r| r.is_capacity() && r.phase == ReplicaPhase::InService && !r.protected)
        .map(|r| r.id)
        .collect();
    match candidates.len() {
        0 => None,
        n => Some(candidates[(pick % n as u64) as usize]),
    }
}
