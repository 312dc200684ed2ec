//! Scale to zero (`[service.NAME.idle]`): when a web service goes idle,
//! when it wakes, and what a wake that fails costs.
//!
//! Pure like the rest of the planner: the controller passes `now` and what
//! the balancer saw ([`Activity`]); [`Idler::step`] answers with at most one
//! [`IdleChange`], and [`Idler::desired`] turns the desired count into the
//! one the fleet planner is given (0 while idle in `stop` mode).
//!
//! ```text
//!            no activity for `after`             a request is held
//!   Awake ─────────────────────────────► Idle ────────────────────► Waking
//!     ▲                                   ▲                           │
//!     │    a replica is routable          │  the woken replica failed │
//!     └───────────────────────────────────┼───────────────────────────┤
//!                                         └── (wake backoff) ◄────────┘
//! ```
//!
//! - **Activity** is a request that arrived or finished, a request in
//!   flight (an open WebSocket or SSE stream is one until it closes) or a
//!   request held waiting for a replica. Requests from
//!   `ignore_user_agents` are not activity.
//! - **Stop** mode: idle means desired 0 (the replicas drain and stop);
//!   waking means desired at least 1. **Suspend** mode: the replicas stay,
//!   frozen, and count as capacity; idle means suspended, waking means
//!   resumed.
//! - **Wake backoff**: a wake whose replica fails before it serves (exits,
//!   never passes its checks) fails the held requests, and no request
//!   wakes the service again for [`WAKE_BACKOFF_FIRST`], doubling with each
//!   failure in a row up to [`WAKE_BACKOFF_MAX`]: traffic cannot drive a
//!   crash loop.

use crate::scaling::Time;
use std::time::Duration;

/// The hold on wakes after the first failed wake; it doubles with each
/// further failure in a row.
pub const WAKE_BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// The longest hold on wakes.
pub const WAKE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// `[service.NAME.idle]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleConfig {
    /// No activity for this long: go idle.
    pub after: Duration,
    pub mode: IdleMode,
    /// How long a request may be held while the service wakes.
    pub hold_timeout: Duration,
    /// At most this many requests held at once; more get 503 at once.
    pub max_held: u32,
    /// Requests whose `User-Agent` contains one of these (case-insensitive)
    /// never wake the service and are not activity: while it is idle they
    /// get 503 with `Retry-After` and a JSON body saying it is idle; while
    /// it is awake they are served.
    pub ignore_user_agents: Vec<String>,
}

impl IdleConfig {
    pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_HELD: u32 = 1000;
    /// A shorter idle period is a service that never settles.
    pub const MIN_AFTER: Duration = Duration::from_secs(1);

    /// Whether a request with this `User-Agent` is ignored.
    pub fn ignores(&self, user_agent: &str) -> bool {
        !self.ignore_user_agents.is_empty() && {
            let agent = user_agent.to_ascii_lowercase();
            self.ignore_user_agents.iter().any(|i| agent.contains(&i.to_ascii_lowercase()))
        }
    }
}

/// What idle does to the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleMode {
    /// Drain and stop them; a wake boots one.
    #[default]
    Stop,
    /// Freeze them (SIGSTOP of the process group, `docker pause`); a wake
    /// thaws them.
    Suspend,
}

impl IdleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdleMode::Stop => "stop",
            IdleMode::Suspend => "suspend",
        }
    }

    pub fn from_name(name: &str) -> Option<IdleMode> {
        [IdleMode::Stop, IdleMode::Suspend].into_iter().find(|m| m.as_str() == name)
    }
}

/// What the balancer saw, as of `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// The last request that arrived or finished (not ignored), if any.
    pub last: Option<Time>,
    /// Requests in flight at the replicas, open streams included.
    pub in_flight: u64,
    /// Requests held, waiting for the service to wake.
    pub held: u64,
}

impl Activity {
    fn busy(&self) -> bool {
        self.in_flight > 0 || self.held > 0
    }
}

/// Where the service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleState {
    Awake,
    /// Idle since then.
    Idle {
        since: Time,
    },
    /// Asked to wake then; not yet serving.
    Waking {
        since: Time,
    },
}

/// A transition, for the controller to carry out and record.
#[derive(Debug, Clone, PartialEq)]
pub enum IdleChange {
    /// No activity for `after`: stop or suspend the replicas.
    GoIdle { mode: IdleMode, quiet_for: Duration },
    /// The operator scaled an awake service to 0 (`ebb scale web 0`):
    /// idle now, as after `after`.
    ScaledToZero { mode: IdleMode },
    /// A request is held: boot or resume a replica.
    Wake { mode: IdleMode, idle_for: Duration },
    /// A replica is routable again; the wake took `took`.
    Woken { took: Duration },
    /// The woken replica failed before it served: the held requests fail,
    /// and no wake before `until`.
    WakeFailed { failures: u32, until: Time },
}

/// The idle state machine of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Idler {
    state: IdleState,
    /// Activity seen last (the controller may have started after it).
    quiet_since: Time,
    /// Failed wakes in a row, and the hold they set.
    failures: u32,
    hold_until: Option<Time>,
}

impl Idler {
    /// Awake, and quiet since `now` (a fresh start counts as activity).
    pub fn new(now: Time) -> Self {
        Idler { state: IdleState::Awake, quiet_since: now, failures: 0, hold_until: None }
    }

    /// Idle from `now`: a service that starts at zero (`desired = 0` in
    /// the file) boots nothing until its first request.
    pub fn asleep(now: Time) -> Self {
        Idler { state: IdleState::Idle { since: now }, quiet_since: now, failures: 0, hold_until: None }
    }

    pub fn state(&self) -> IdleState {
        self.state
    }

    /// Whether the replicas should be stopped or frozen now.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, IdleState::Idle { .. })
    }

    /// Until when wakes are held after a failed wake, if they are at `now`.
    pub fn wake_held_until(&self, now: Time) -> Option<Time> {
        self.hold_until.filter(|until| now < *until)
    }

    /// The desired count the fleet planner is given: 0 while idle in stop
    /// mode; at least 1 while awake or waking (a service may be at
    /// `min = 0` only by being idle).
    pub fn desired(&self, mode: IdleMode, desired: u32) -> u32 {
        match self.state {
            IdleState::Idle { .. } if mode == IdleMode::Stop => 0,
            IdleState::Idle { .. } => desired.max(1),
            IdleState::Awake | IdleState::Waking { .. } => desired.max(1),
        }
    }

    /// One step: `routable` is whether a replica takes requests now.
    pub fn step(&mut self, now: Time, config: &IdleConfig, activity: Activity, routable: bool) -> Option<IdleChange> {
        if activity.busy() {
            self.quiet_since = now;
        } else if let Some(last) = activity.last {
            self.quiet_since = self.quiet_since.max(last);
        }
        match self.state {
            IdleState::Awake => {
                let quiet_for = now.saturating_sub(self.quiet_since);
                (!activity.busy() && quiet_for >= config.after).then(|| {
                    self.state = IdleState::Idle { since: now };
                    IdleChange::GoIdle { mode: config.mode, quiet_for }
                })
            }
            IdleState::Idle { since } => (activity.held > 0 && self.wake_held_until(now).is_none()).then(|| {
                self.state = IdleState::Waking { since: now };
                IdleChange::Wake { mode: config.mode, idle_for: now.saturating_sub(since) }
            }),
            IdleState::Waking { since } => routable.then(|| {
                self.state = IdleState::Awake;
                self.failures = 0;
                self.hold_until = None;
                self.quiet_since = now;
                IdleChange::Woken { took: now.saturating_sub(since) }
            }),
        }
    }

    /// A replica failed before it served. While waking, the wake failed:
    /// back to idle, and wakes are held for a backoff. Otherwise nothing
    /// (crash-loop backoff covers an awake service).
    pub fn replica_failed(&mut self, now: Time) -> Option<IdleChange> {
        let IdleState::Waking { .. } = self.state else { return None };
        self.failures += 1;
        let factor = 1u32 << (self.failures - 1).min(10);
        let until = now + (WAKE_BACKOFF_FIRST * factor).min(WAKE_BACKOFF_MAX);
        self.hold_until = Some(until);
        self.state = IdleState::Idle { since: now };
        Some(IdleChange::WakeFailed { failures: self.failures, until })
    }

    /// The operator set desired to 0 (`ebb scale web 0`; `min = 0`): an
    /// awake service goes idle now, whatever its activity (requests in
    /// flight drain as in any scale-in; the next request wakes it). While
    /// idle or waking nothing changes: held requests still need a replica.
    pub fn scaled_to_zero(&mut self, now: Time, config: &IdleConfig) -> Option<IdleChange> {
        (self.state == IdleState::Awake).then(|| {
            self.state = IdleState::Idle { since: now };
            IdleChange::ScaledToZero { mode: config.mode }
        })
    }

    /// `ebb apply` removed `[idle]`, or the operator asked for replicas:
    /// awake, quiet from now.
    pub fn wake_up(&mut self, now: Time) {
        self.state = IdleState::Awake;
        self.quiet_since = now;
    }
}

impl std::fmt::Display for IdleChange {
    /// The event text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let human = |d: &Duration| crate::scaling::metrics::duration(*d);
        match self {
            IdleChange::GoIdle { mode: IdleMode::Stop, quiet_for } => {
                write!(f, "idle: no request for {}; stopping the replicas", human(quiet_for))
            }
            IdleChange::GoIdle { mode: IdleMode::Suspend, quiet_for } => {
                write!(f, "idle: no request for {}; suspending the replicas", human(quiet_for))
            }
            IdleChange::ScaledToZero { mode: IdleMode::Stop } => {
                f.write_str("idle: scaled to 0 (desired 0); stopping the replicas until the next request")
            }
            IdleChange::ScaledToZero { mode: IdleMode::Suspend } => {
                f.write_str("idle: scaled to 0 (desired 0); suspending the replicas until the next request")
            }
            IdleChange::Wake { mode: IdleMode::Stop, idle_for } => {
                write!(f, "waking after {} idle: a request is held; starting a replica", human(idle_for))
            }
            IdleChange::Wake { mode: IdleMode::Suspend, idle_for } => {
                write!(f, "waking after {} idle: a request is held; resuming the replicas", human(idle_for))
            }
            IdleChange::Woken { took } => write!(f, "woken: a replica takes requests after {}", human(took)),
            IdleChange::WakeFailed { failures, .. } => {
                write!(f, "the wake failed ({failures} in a row): held requests get 503, no wake for a while")
            }
        }
    }
}
