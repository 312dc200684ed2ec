//! Scale to zero as the controller carries it out: the core's `Idler`
//! asked after every input (what the balancer saw is its activity), its
//! changes recorded as events and told to the balancer, the desired count
//! the fleet planner is given, and (in `suspend` mode) the replicas frozen
//! and thawed through the driver.

use std::time::{Duration, SystemTime};

use ebb_core::config::IdleMode;
use ebb_core::fleet::idle::{Activity, IdleChange, IdleState, Idler};

use super::lifecycle::Fleet;
use super::Shared;
use crate::events::{EventKind, NewEvent};
use crate::proxy::hold::IdlePhase;
use crate::proxy::ServiceProxy;

/// The idle state of one service.
pub(super) struct Idling {
    idler: Idler,
    /// When it went idle (wall clock, for status).
    idle_since: Option<SystemTime>,
}

impl Idling {
    /// At the controller's start (`origin`, the zero of its clock): awake,
    /// or idle when the file starts the service at zero (`desired = 0`).
    pub(super) fn new_at(
        origin: std::time::Instant,
        config: &ebb_core::config::ServiceConfig,
        proxy: &ServiceProxy,
    ) -> Self {
        let now = origin.elapsed();
        match config.idle.is_some() && config.replicas.desired == 0 {
            true => {
                proxy.hold.set_phase(IdlePhase::Idle);
                Idling { idler: Idler::asleep(now), idle_since: Some(SystemTime::now()) }
            }
            false => Idling { idler: Idler::new(now), idle_since: None },
        }
    }

    /// The desired count the fleet planner is given.
    pub(super) fn desired(&self, ctx: &Shared, desired: u32) -> u32 {
        match &ctx.config.idle {
            Some(idle) => self.idler.desired(idle.mode, desired),
            None => desired,
        }
    }

    /// Whether the replicas should be frozen now (suspend mode, idle).
    pub(super) fn frozen(&self, ctx: &Shared) -> bool {
        self.idler.is_idle() && ctx.config.idle.as_ref().is_some_and(|i| i.mode == IdleMode::Suspend)
    }

    /// One step of the core's rule with what the balancer saw; records
    /// the change (the fleet follows `desired` and `frozen`).
    pub(super) fn step(&mut self, ctx: &Shared) {
        let Some(idle) = ctx.config.idle.as_ref() else { return };
        let now = ctx.now();
        let hold = &ctx.proxy.hold;
        let activity = Activity {
            last: hold.quiet_for().map(|q| now.saturating_sub(q)),
            in_flight: hold.active(),
            held: hold.held(),
        };
        let routable = !ctx.proxy.routable().is_empty();
        let Some(change) = self.idler.step(now, idle, activity, routable) else { return };
        self.record(ctx, change);
    }

    /// The operator set desired to 0 (`ebb scale web 0`): an awake
    /// service with `[idle]` goes idle now (the core's rule).
    pub(super) fn scaled_to_zero(&mut self, ctx: &Shared) {
        let Some(idle) = ctx.config.idle.as_ref() else { return };
        if let Some(change) = self.idler.scaled_to_zero(ctx.now(), idle) {
            self.record(ctx, change);
        }
    }

    /// Tells the balancer and the event log about a change.
    fn record(&mut self, ctx: &Shared, change: IdleChange) {
        let hold = &ctx.proxy.hold;
        let kind = match &change {
            IdleChange::GoIdle { .. } | IdleChange::ScaledToZero { .. } => {
                self.idle_since = Some(SystemTime::now());
                hold.set_phase(IdlePhase::Idle);
                EventKind::Idle
            }
            IdleChange::Wake { .. } => {
                hold.set_phase(IdlePhase::Waking);
                // Forget the waits of requests held while awake.
                hold.take_first_wait();
                EventKind::Waking
            }
            IdleChange::Woken { .. } => {
                self.idle_since = None;
                hold.set_phase(IdlePhase::Awake);
                hold.cold_starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                EventKind::Woken
            }
            IdleChange::WakeFailed { .. } => EventKind::WakeFailed,
        };
        let mut reason = change.to_string();
        if let (IdleChange::Woken { .. }, Some(waited)) = (&change, hold.take_first_wait()) {
            reason.push_str(&format!("; the first held request waited {} ms", waited.as_millis()));
        }
        tracing::info!(service = %ctx.name, "{reason}");
        ctx.record(NewEvent::new(&ctx.name, kind, reason));
    }

    /// A replica failed before it served (`cause` says how): while
    /// waking, the wake failed, the held requests fail with the cause, and
    /// wakes are held for a backoff.
    pub(super) fn replica_failed(&mut self, ctx: &Shared, id: &str, cause: &str) {
        if ctx.config.idle.is_none() {
            return;
        }
        let now = ctx.now();
        let Some(change) = self.idler.replica_failed(now) else { return };
        let IdleChange::WakeFailed { until, .. } = change else { return };
        let backoff = until.saturating_sub(now);
        self.idle_since = Some(SystemTime::now());
        let message = format!("the service could not wake: replica {id} {cause}");
        ctx.proxy.hold.set_phase(IdlePhase::Idle);
        ctx.proxy.hold.fail_wake(&ctx.proxy, message.clone(), backoff);
        ctx.record(
            NewEvent::new(
                &ctx.name,
                EventKind::WakeFailed,
                format!(
                    "{change}; {message}; next wake in {}",
                    ebb_core::scaling::metrics::duration(Duration::from_secs(backoff.as_secs().max(1)))
                ),
            )
            .replica(id),
        );
    }

    /// `ebb apply`: with `[idle]` removed the service is awake for good.
    pub(super) fn reconfigure(&mut self, ctx: &Shared) {
        if ctx.config.idle.is_none() && self.idler.state() != IdleState::Awake {
            self.idler.wake_up(ctx.now());
            self.idle_since = None;
            ctx.proxy.hold.set_phase(IdlePhase::Awake);
        }
    }

    /// For `ebb status`: `idle (stopped, since …)` / `idle (suspended 2
    /// replicas, since …)` / `waking`; `None` while awake.
    pub(super) fn describe(&self, ctx: &Shared, fleet: &Fleet) -> Option<String> {
        let idle = ctx.config.idle.as_ref()?;
        let since = |t: Option<SystemTime>| {
            t.and_then(|t| t.elapsed().ok())
                .map(|d| format!(", for {}", ebb_core::scaling::metrics::duration(Duration::from_secs(d.as_secs()))))
                .unwrap_or_default()
        };
        match self.idler.state() {
            IdleState::Awake => None,
            IdleState::Waking { .. } => Some(format!("waking ({} requests held)", ctx.proxy.hold.held())),
            IdleState::Idle { .. } => Some(match idle.mode {
                IdleMode::Stop => format!("idle (stopped{})", since(self.idle_since)),
                IdleMode::Suspend => {
                    let n = fleet.replicas.iter().filter(|r| r.suspended && !r.pooled).count();
                    format!("idle (suspended {n} replicas{})", since(self.idle_since))
                }
            }),
        }
    }
}
