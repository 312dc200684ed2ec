//! The fleet planner: what happens to a service's replicas, as data.
//!
//! **Architecture invariant:** every rule that decides what happens to a
//! replica lives here (or in [`crate::deploy`] while a deploy runs, and
//! [`crate::outlier`] for ejections), and `ebb up` and `ebb simulate` both
//! call it. Pure, like the autoscaler: `now` and the facts about each
//! replica are arguments, random numbers are passed in, and the answer is a
//! list of [`FleetAction`]s with a reason each. The live controller carries
//! them out (start a process or container, drain and stop one); the
//! simulator applies them to its modelled fleet in virtual time.
//!
//! ```text
//!   after every change (replica started / in service / failed / gone, a tick, a scale):
//!       facts   = one ReplicaFacts per replica the controller tracks
//!       actions = fleet::plan(&FleetInput { now, desired, current_version, deploying, replicas: &facts }, &crash_loop)
//!           Launch     → start `count` replicas of the current version
//!           Retire     → out of the rotation, drain, stop (reason: scale-in, interruption)
//!           HoldStarts → crash-loop backoff: nothing starts before `until`
//!       routable = the replicas for which fleet::routable(facts, routes) holds
//!   a replica failed before ever reaching service: crash_loop.failed_before_service(now)
//!   a replica reached service:                     crash_loop.reached_service()
//! ```
//!
//! # The rules
//!
//! - **Capacity** is what counts toward desired: replicas starting or in
//!   service that are not leaving and not under an interruption notice (the
//!   notice's replacement counts instead). Fewer than desired: launch the
//!   difference, unless crash-loop backoff holds starts. More: retire the
//!   excess, picked by [`pick_for_scale_in`] (never a protected replica).
//! - **While a deploy runs** its planner alone launches and retires; only
//!   interruption notices are acted on here.
//! - **Crash-loop backoff** ([`CrashLoop`]): when replicas fail in a row
//!   before any reaches service, the second failure holds starts for
//!   0.5 s, each further one doubles it, up to 30 s. One reaching service
//!   resets it.
//! - **Interruption notices** (spot-style, `ebb interrupt`, chaos): the
//!   replica keeps serving while its replacement starts, and leaves once
//!   capacity in service is back to desired without it, or at its deadline
//!   ([`leave_by`]), whichever comes first.
//! - **Routability** ([`routable`]): in service, not ejected by outlier
//!   detection, and of a version that takes traffic ([`Routes`]).
//! - **Idle** ([`idle`]): a web service with `[idle]` stops or suspends
//!   its replicas after `after` without activity, and wakes on a held
//!   request; [`idle::Idler::desired`] is the desired count the planner
//!   is given, and a suspended replica is capacity but not routable.
//! - **Warm pool** ([`warm_pool`]): pool members boot, pass their checks
//!   once and are suspended; they are not capacity, not in service, never
//!   routable. A short fleet takes them before it launches, and the pool
//!   refills.
//! - **Chaos** ([`chaos_victim`]): now and then a random replica in service
//!   gets an interruption notice.

mod crash_loop;
pub mod idle;
mod pick;
mod plan;
pub mod warm_pool;

pub use crash_loop::{Backoff, CrashLoop};
pub use pick::{pick_for_scale_in, ScaleInCandidate};
pub use plan::{chaos_victim, leave_by, plan, scale_in_waits_for, FleetAction, FleetInput, RetireReason};

use crate::scaling::Time;

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaPhase {
    /// Launched, not yet in service (booting, or not yet healthy).
    Starting,
    /// Passed its health checks; serving (or able to serve).
    InService,
    /// Crashed, or failed its health checks: being stopped. Not capacity.
    /// A failed replica of the new version rolls a deploy back.
    Failed,
    /// Asked to leave (out of the rotation, draining or stopping), or, as
    /// the deploy planner sees it, under an interruption notice: gone, as
    /// far as capacity goes.
    Leaving,
}

/// What the planner knows about one replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaFacts<'a> {
    pub id: &'a str,
    /// The service version (spec) it runs.
    pub version: u64,
    pub phase: ReplicaPhase,
    /// Scale-in protection: never chosen to leave while set.
    pub protected: bool,
    /// Out of the rotation for failing its requests (outlier detection):
    /// still capacity, but not routable, and the first to go on scale-in.
    pub ejected: bool,
    /// Under an interruption notice: it leaves by then at the latest.
    pub interrupted_until: Option<Time>,
    pub in_flight: u64,
    /// When it was launched.
    pub started: Time,
    /// Frozen while its service is idle (`mode = "suspend"`): still
    /// capacity, not routable.
    pub suspended: bool,
    /// A warm pool member ([`warm_pool`]): not capacity, not in service,
    /// never routable, until a scale-out takes it.
    pub pooled: bool,
}

impl<'a> ReplicaFacts<'a> {
    /// A replica with no notice, protection, ejection or requests.
    pub fn new(id: &'a str, version: u64, phase: ReplicaPhase, started: Time) -> Self {
        ReplicaFacts {
            id,
            version,
            phase,
            protected: false,
            ejected: false,
            interrupted_until: None,
            in_flight: 0,
            started,
            suspended: false,
            pooled: false,
        }
    }

    /// Counts toward desired capacity: starting or in service, and not
    /// under an interruption notice (its replacement counts instead), and
    /// not in the warm pool.
    pub fn is_capacity(&self) -> bool {
        self.is_active() && self.interrupted_until.is_none() && !self.pooled
    }

    /// Starting or in service: not leaving, not failed.
    pub fn is_active(&self) -> bool {
        matches!(self.phase, ReplicaPhase::Starting | ReplicaPhase::InService)
    }
}

/// Which versions take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    /// The version the service runs now.
    pub current_version: u64,
    /// A deploy is running: every version serves (rolling), unless it said
    /// otherwise with `only`.
    pub deploying: bool,
    /// A blue-green switch: only this version serves.
    pub only: Option<u64>,
}

impl Routes {
    /// During a blue-green switch the deploy says; during a rolling deploy
    /// every version; otherwise only the current one (a protected replica
    /// left on an old version by a deploy finishes its work but gets no new
    /// requests).
    pub fn admit(&self, version: u64) -> bool {
        match (self.only, self.deploying) {
            (Some(only), _) => version == only,
            (None, true) => true,
            (None, false) => version == self.current_version,
        }
    }
}

/// Whether a replica is in the rotation: in service, not ejected, not
/// suspended, not in the warm pool, and of a version that takes traffic. The one definition, for the balancer's
/// routable set and everything that asks.
pub fn routable(replica: &ReplicaFacts, routes: &Routes) -> bool {
    replica.phase == ReplicaPhase::InService
        && !replica.ejected
        && !replica.suspended
        && !replica.pooled
        && routes.admit(replica.version)
}

/// Whether the balancer gives up on what a replica holds: a failed replica
/// (crashed, lost with its node, failing its checks) will not answer, so
/// its requests still waiting for a response head end at once, and the
/// idempotent ones are sent again elsewhere, instead of waiting out
/// `upstream_timeout`. A replica leaving in good order (draining), ejected
/// (it answers, badly) or suspended finishes what it holds.
pub fn abandons_requests(replica: &ReplicaFacts) -> bool {
    replica.phase == ReplicaPhase::Failed
}

/// The fleet as the autoscaler and status count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// In service, ejected or not: an ejection is a pause in the rotation,
    /// not a loss of capacity to replace.
    pub in_service: u32,
    /// Starting: not yet in service.
    pub pending: u32,
    /// Starting or in service, not leaving, no interruption notice.
    pub capacity: u32,
    /// Capacity that is in service.
    pub capacity_in_service: u32,
}

impl Counts {
    pub fn of(replicas: &[ReplicaFacts]) -> Counts {
        let mut counts = Counts::default();
        // The warm pool is beside the fleet: none of its members count.
        for r in replicas.iter().filter(|r| !r.pooled) {
            let in_service = r.phase == ReplicaPhase::InService;
            counts.in_service += u32::from(in_service);
            counts.pending += u32::from(r.phase == ReplicaPhase::Starting);
            if r.is_capacity() {
                counts.capacity += 1;
                counts.capacity_in_service += u32::from(in_service);
            }
        }
        counts
    }
}
