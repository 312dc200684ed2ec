//! The warm pool (`[service.NAME.warm_pool]`): replicas started ahead of
//! need, kept beside the fleet, so that a scale-out resumes one instead of
//! booting one (like an AWS Auto Scaling warm pool in the `Hibernated`
//! state).
//!
//! A pool member is a replica with [`ReplicaFacts::pooled`] set. It boots
//! like any replica, passes its health checks once (it is initialised),
//! then is suspended (SIGSTOP of its process group, `docker pause`). It is
//! not capacity, not counted in service, never routable.
//!
//! ```text
//!   fill (pool short of size)   ──► Starting, pooled
//!   passed its checks           ──► InService, pooled ──► SuspendPooled ──► frozen
//!   the fleet is short          ──► TakeFromPool: resumed, leaves the pool, capacity at once
//!   the spec changed (deploy)   ──► pool members of the old version retire; the pool refills
//! ```
//!
//! # The rules (carried out by [`super::plan`])
//!
//! - **Take before launch**: when capacity is short of desired, pool
//!   members of the current version are taken first (in service before
//!   starting, oldest first); only what the pool cannot cover boots.
//! - **Refill**: while the pool (members of the current version, not
//!   leaving) is smaller than `size`, launch the difference as pool
//!   members, in the same step as a take; not while a deploy runs (its
//!   planner alone launches) and not while crash-loop backoff holds starts.
//! - **Suspend** a pool member once it is in service.
//! - **Replace on deploy**: a pool member of another version than the
//!   current one retires (thawed, then stopped).
//! - **Shrink**: more members than `size` (`ebb apply` lowered it): the
//!   youngest go first.
//! - **Scale-in** stops the replica, as without a pool; it does not go
//!   back to the pool (AWS's `reuse_on_scale_in = false`): a replica that
//!   served carries state a fresh one does not, and the pool refills from
//!   a fresh boot when it is short.

use super::{FleetAction, ReplicaFacts, ReplicaPhase, RetireReason};

/// `[service.NAME.warm_pool]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmPoolConfig {
    /// How many suspended replicas to keep beside the fleet.
    pub size: u32,
}

impl WarmPoolConfig {
    /// A guard against typos; a pool is never larger than `replicas.max`.
    pub const MAX_SIZE: u32 = 100;
}

/// A pool member of any version that is starting or in service.
fn is_member(r: &ReplicaFacts) -> bool {
    r.pooled && r.is_active()
}

/// The pool members a short fleet takes, in order: in service (ready)
/// before starting, oldest first.
pub fn takeable<'a>(replicas: &[ReplicaFacts<'a>], current_version: u64) -> Vec<&'a str> {
    let mut members: Vec<&ReplicaFacts> =
        replicas.iter().filter(|r| is_member(r) && r.version == current_version).collect();
    members.sort_by_key(|r| (r.phase != ReplicaPhase::InService, r.started, r.id));
    members.into_iter().map(|r| r.id).collect()
}

/// Retire pool members of an old version or beyond `size`; suspend the
/// ones in service that are not yet frozen. Runs during a deploy too.
pub(super) fn tend(replicas: &[ReplicaFacts], current_version: u64, size: u32, taken: &[&str]) -> Vec<FleetAction> {
    let mut actions = Vec::new();
    let mut current: Vec<&ReplicaFacts> = Vec::new();
    for r in replicas.iter().filter(|r| is_member(r) && !taken.contains(&r.id)) {
        if r.version != current_version {
            actions.push(FleetAction::Retire { id: r.id.to_string(), reason: RetireReason::PoolOldVersion });
        } else {
            current.push(r);
        }
    }
    // Oldest (and in service) first: the youngest beyond `size` go.
    current.sort_by_key(|r| (r.phase != ReplicaPhase::InService, r.started, r.id));
    for (i, r) in current.iter().enumerate() {
        if i as u32 >= size {
            actions.push(FleetAction::Retire { id: r.id.to_string(), reason: RetireReason::PoolShrunk });
        } else if r.phase == ReplicaPhase::InService && !r.suspended {
            actions.push(FleetAction::SuspendPooled { id: r.id.to_string() });
        }
    }
    actions
}

/// How many pool members to launch: `size` less the current-version
/// members that stay in the pool.
pub(super) fn short(replicas: &[ReplicaFacts], current_version: u64, size: u32, taken: &[&str]) -> u32 {
    let members =
        replicas.iter().filter(|r| is_member(r) && r.version == current_version && !taken.contains(&r.id)).count()
            as u32;
    size.saturating_sub(members)
}
