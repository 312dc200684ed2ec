//! The replicas of one service as the controller tracks them, and the
//! requests that act on one of them by id (protection, interruption).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_core::fleet::{self, Counts, ReplicaFacts, ReplicaPhase, Routes};
use ebb_core::scaling::Time;

use ebb_core::health::{Health, HealthTracker};
use ebb_core::outlier::{Ejection, Outcomes};
use tokio_util::sync::CancellationToken;

use super::command::{LifecycleError, ReplicaOutcome};
use super::handle::ReplicaTokens;
use super::Shared;
use crate::driver::RunningReplica;
use crate::events::{EventKind, NewEvent};
use crate::proxy::Backend;
use crate::status::ReplicaState;

/// One replica as the controller tracks it.
pub(super) struct Replica {
    pub(super) id: String,
    pub(super) version: u64,
    pub(super) started_at: Instant,
    /// Unix milliseconds at start, for the state file.
    pub(super) started_ms: u64,
    pub(super) state: ReplicaState,
    /// `None` while the driver is still launching it.
    pub(super) running: Option<RunningReplica>,
    pub(super) backend: Option<Arc<Backend>>,
    pub(super) health: HealthTracker,
    pub(super) last_probe: Option<String>,
    /// When it first passed its health checks (warm-up counts from here).
    pub(super) in_service_since: Option<Instant>,
    /// Last second's CPU (% of the allotment) and resident memory.
    pub(super) cpu_percent: Option<f64>,
    pub(super) rss_bytes: Option<u64>,
    /// `requests` counter at the last sample, for the per-second rate.
    pub(super) requests_at_last_sample: u64,
    /// The balancer's totals for it at the last outlier look.
    pub(super) outcomes_seen: Outcomes,
    /// Out of the rotation for failing its requests, until then (a copy
    /// of the outlier detector's verdict).
    pub(super) ejection: Option<Ejection>,
    /// Cancels the probe and exit-watch tasks when the replica leaves.
    pub(super) watchers: CancellationToken,
    /// ebb asked it to stop: its exit is expected, not a failure.
    pub(super) stopping: bool,
    /// It exited on its own (before any stop): its stop only cleans up.
    pub(super) exited: bool,
    /// Scale-in protection: never chosen to leave while set.
    pub(super) protected: bool,
    /// An interruption notice: replaced, then retired by this time (on the
    /// controller's clock) at the latest.
    pub(super) interrupt_deadline: Option<Time>,
    /// Reached in service at least once (for crash-loop accounting).
    pub(super) ever_in_service: bool,
    /// Frozen by the driver while the service is idle (`mode =
    /// "suspend"`): not routable, not probed.
    pub(super) suspended: bool,
    /// Bumped at each suspend and resume, odd while suspended: the probe
    /// loop skips a suspended replica and drops a probe that a suspend or
    /// resume overlapped.
    pub(super) pause: Arc<std::sync::atomic::AtomicU64>,
    /// A warm pool member: started ahead of need, suspended once in
    /// service, not capacity, never routed, until a scale-out takes it.
    pub(super) pooled: bool,
    /// Held while the driver suspends or resumes a pool member, so that a
    /// take right after a suspend resumes it only once the suspend is done.
    pub(super) freezing: Arc<tokio::sync::Mutex<()>>,
}

impl Replica {
    /// A replica being launched (`Starting`, nothing known about it yet);
    /// adoption fills in what it knows on top.
    pub(super) fn new(id: String, version: u64, started_at: Instant, started_ms: u64, health: HealthTracker) -> Self {
        Replica {
            id,
            version,
            started_at,
            started_ms,
            state: ReplicaState::Starting,
            running: None,
            backend: None,
            health,
            last_probe: None,
            in_service_since: None,
            cpu_percent: None,
            rss_bytes: None,
            requests_at_last_sample: 0,
            outcomes_seen: Outcomes::default(),
            ejection: None,
            watchers: CancellationToken::new(),
            stopping: false,
            exited: false,
            protected: false,
            interrupt_deadline: None,
            ever_in_service: false,
            suspended: false,
            pause: Default::default(),
            pooled: false,
            freezing: Default::default(),
        }
    }

    pub(super) fn is_active(&self) -> bool {
        matches!(self.state, ReplicaState::Starting | ReplicaState::InService)
    }

    /// In service and healthy, with a balancer backend: it would take
    /// requests but for an ejection.
    pub(super) fn serving(&self) -> bool {
        self.state == ReplicaState::InService && self.health.state() == Health::Healthy && self.backend.is_some()
    }

    /// What the fleet planner knows of it; `origin` is the controller's
    /// clock's zero.
    pub(super) fn facts(&self, origin: Instant) -> ReplicaFacts<'_> {
        let phase = match self.state {
            ReplicaState::Failed => ReplicaPhase::Failed,
            _ if self.stopping => ReplicaPhase::Leaving,
            ReplicaState::Starting => ReplicaPhase::Starting,
            ReplicaState::InService => ReplicaPhase::InService,
            ReplicaState::Draining | ReplicaState::Stopped => ReplicaPhase::Leaving,
        };
        ReplicaFacts {
            id: &self.id,
            version: self.version,
            phase,
            protected: self.protected,
            ejected: self.ejection.is_some(),
            interrupted_until: self.interrupt_deadline,
            in_flight: self.backend.as_ref().map(|b| b.in_flight()).unwrap_or(0),
            started: self.started_at.saturating_duration_since(origin),
            suspended: self.suspended,
            pooled: self.pooled,
        }
    }
}

/// The service's replicas, and the token each was given
/// (`EBB_REPLICA_TOKEN`, shared with the service's handle).
pub(super) struct ReplicaSet {
    list: Vec<Replica>,
    tokens: ReplicaTokens,
    /// The controller's clock's zero (`Shared::origin`), for the facts.
    origin: Instant,
}

impl ReplicaSet {
    pub(super) fn new(origin: Instant) -> Self {
        ReplicaSet { list: Vec::new(), tokens: ReplicaTokens::default(), origin }
    }

    /// What the fleet planner knows of each replica.
    pub(super) fn facts(&self) -> Vec<ReplicaFacts<'_>> {
        self.list.iter().map(|r| r.facts(self.origin)).collect()
    }

    /// In service, starting, capacity, as the core counts them.
    pub(super) fn counts(&self) -> Counts {
        Counts::of(&self.facts())
    }

    /// The replicas in the rotation (the core's one definition).
    pub(super) fn routable(&self, routes: &Routes) -> Vec<&Replica> {
        self.list.iter().filter(|r| fleet::routable(&r.facts(self.origin), routes)).collect()
    }

    /// The balancer entries of replicas whose unanswered requests it gives
    /// up on (`fleet::abandons_requests`).
    pub(super) fn abandoned_backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.list.iter().filter(|r| fleet::abandons_requests(&r.facts(self.origin))).filter_map(|r| r.backend.as_ref())
    }

    /// Whether this replica would be in the rotation but for an ejection:
    /// the fleet outlier detection weighs.
    pub(super) fn may_route(&self, id: &str, routes: &Routes) -> bool {
        self.get(id).is_some_and(|r| fleet::routable(&ReplicaFacts { ejected: false, ..r.facts(self.origin) }, routes))
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, Replica> {
        self.list.iter()
    }

    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, Replica> {
        self.list.iter_mut()
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn get(&self, id: &str) -> Option<&Replica> {
        self.list.iter().find(|r| r.id == id)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Replica> {
        self.list.iter_mut().find(|r| r.id == id)
    }

    pub(super) fn push(&mut self, replica: Replica) {
        self.list.push(replica);
    }

    /// Drops a replica that is gone for good, and its token.
    pub(super) fn forget(&mut self, id: &str) {
        self.list.retain(|r| r.id != id);
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The token map, for the service's handle to check a replica's token.
    pub(super) fn tokens(&self) -> ReplicaTokens {
        self.tokens.clone()
    }

    pub(super) fn set_token(&self, id: &str, token: String) {
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), token);
    }

    pub(super) fn token(&self, id: &str) -> Option<String> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// A replica by id that is still active (not leaving), or why not.
    fn active_mut(&mut self, service: &str, id: &str) -> Result<&mut Replica, LifecycleError> {
        let r = self
            .get_mut(id)
            .ok_or_else(|| LifecycleError::NoSuchReplica { service: service.to_string(), replica: id.to_string() })?;
        if !r.is_active() || r.stopping {
            let state = if r.stopping { "draining".to_string() } else { r.state.as_str().to_string() };
            return Err(LifecycleError::Leaving { service: service.to_string(), replica: id.to_string(), state });
        }
        Ok(r)
    }

    pub(super) fn protect(
        &mut self,
        ctx: &Shared,
        id: &str,
        protected: bool,
    ) -> Result<ReplicaOutcome, LifecycleError> {
        let r = self.active_mut(&ctx.name, id)?;
        let was = std::mem::replace(&mut r.protected, protected);
        let message = match (was, protected) {
            (false, true) => "scale-in protection on: never chosen to leave until released",
            (true, false) => "scale-in protection off: may leave on scale-in again",
            (true, true) => "already protected",
            (false, false) => "already unprotected",
        };
        if was != protected {
            let kind = if protected { EventKind::ReplicaProtected } else { EventKind::ReplicaUnprotected };
            ctx.record(NewEvent::new(&ctx.name, kind, message).replica(id));
        }
        Ok(ReplicaOutcome { service: ctx.name.clone(), replica: id.to_string(), message: message.to_string() })
    }

    pub(super) fn interrupt(
        &mut self,
        ctx: &Shared,
        id: &str,
        notice: Duration,
    ) -> Result<ReplicaOutcome, LifecycleError> {
        // Leave early enough to drain and stop before the notice runs out.
        let (drain, stop) = (ctx.config.drain_timeout, ctx.config.stop_timeout);
        let now = ctx.now();
        let leave_by = fleet::leave_by(now, notice, drain, stop);
        let leave_after = leave_by - now;
        let r = self.active_mut(&ctx.name, id)?;
        if r.interrupt_deadline.is_some() {
            return Err(LifecycleError::Leaving {
                service: ctx.name.clone(),
                replica: id.to_string(),
                state: "already interrupted".into(),
            });
        }
        r.interrupt_deadline = Some(leave_by);
        let message = format!(
            "interruption notice ({}): starting a replacement; this replica leaves once it is in service, or in {} at the latest",
            humantime::format_duration(notice),
            humantime::format_duration(leave_after)
        );
        ctx.record(NewEvent::new(&ctx.name, EventKind::ReplicaInterrupted, message.clone()).replica(id));
        Ok(ReplicaOutcome { service: ctx.name.clone(), replica: id.to_string(), message })
    }
}
