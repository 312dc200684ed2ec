//! The event log: every change to a fleet, with the reason that caused it.
//!
//! Events are kept in a bounded in-memory ring (and, through an
//! [`EventStore`], in the state file across restarts), broadcast to live
//! followers, and logged through `tracing`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// What happened. Serialized in snake_case (`replica_started`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Desired capacity changed (manual scale, policy).
    Scaled,
    ReplicaStarted,
    /// Found still running after ebb restarted, and taken over.
    ReplicaAdopted,
    ReplicaStartFailed,
    /// Passed enough health checks to join the rotation.
    ReplicaInService,
    /// Failed enough health checks to leave the rotation.
    ReplicaUnhealthy,
    /// Health checks could not run for ebb's own reason (out of file
    /// descriptors...): they are not counted, health holds.
    HealthCheckSkipped,
    /// Exited without ebb asking it to.
    ReplicaExited,
    /// Left the rotation and is finishing its in-flight requests.
    ReplicaDraining,
    ReplicaStopped,
    ReplicaProtected,
    ReplicaUnprotected,
    /// Received an interruption notice (`ebb interrupt`, chaos).
    ReplicaInterrupted,
    /// Failed the requests it got (outlier detection): out of the rotation
    /// for a while, still healthy and in service.
    ReplicaEjected,
    /// Its ejection is over: back in the rotation.
    ReplicaReturned,
    /// Fails like an outlier, but ejecting it would take too much of the
    /// fleet (`max_ejection_percent`, never the last replica): it stays.
    ReplicaOutlierSpared,
    /// The external metric source could not be read.
    MetricSourceFailed,
    DeployStarted,
    /// A step of a running deploy (launch, traffic switch, wait), with why.
    DeployStep,
    DeployRollingBack,
    DeploySucceeded,
    DeployRolledBack,
    /// Starts are being delayed because replicas keep failing.
    Backoff,
    /// Requests began to queue or be shed at the balancer, or stopped.
    Saturated,
    /// Scale-in froze (a 5xx spike, or traffic collapsed within seconds),
    /// or the freeze lifted.
    ScaleInFrozen,
    /// A shadow policy would have changed desired capacity; nothing was
    /// applied.
    Shadow,
    /// A predictive policy's forecast began, changed model, or started or
    /// stopped being trusted to act on.
    Forecast,
    /// ebb's host became full (more local replicas add no capacity), or
    /// has room again.
    HostFull,
    FleetStarting,
    FleetStopping,
    /// ebb exited and left the replicas running for the next `ebb up` to
    /// adopt (SIGTERM, or a takeover).
    FleetLeft,
    /// A new ebb took over from the running one (`ebb up --takeover`):
    /// sockets handed over, replicas adopted; `service` is `ebb`.
    EbbUpgraded,
    /// A listener got a certificate from ACME (first or renewed); `service`
    /// is `listener NAME`.
    CertificateObtained,
    /// An ACME order or renewal failed (the CA's error; retried with
    /// backoff), or certificate files changed but do not load; the
    /// previous certificate is still served.
    CertificateFailed,
    /// Changed certificate files were loaded (new connections get them).
    CertificateReloaded,
    /// Scale to zero: no request for `idle.after`; the replicas are
    /// stopped or suspended.
    Idle,
    /// A request is held at an idle service: a replica is started or the
    /// suspended ones resumed.
    Waking,
    /// A replica takes requests again after a wake (with how long the
    /// first held request waited).
    Woken,
    /// The woken replica failed before it served: held requests got 503,
    /// and no request wakes the service for a backoff.
    WakeFailed,
    /// A warm pool member passed its health checks and was suspended
    /// beside the fleet (with how full the pool is).
    WarmPoolFilled,
    /// A scale-out took a warm pool member instead of booting one (with
    /// how long its resume took).
    WarmReplicaUsed,
    /// `ebb apply` (or SIGHUP) changed this service or listener in place:
    /// the reason lists the keys; `service` is the service's name or
    /// `listener NAME`, or `ebb` for a service added or removed.
    ConfigApplied,
    /// `[cluster]`: the reserved CPU wants another node; `add_node` runs
    /// (`service` is `cluster`, the reason has the numbers).
    NodeAdding,
    /// The node `add_node` added joined the swarm (with how long it took).
    NodeAdded,
    /// A node ebb was draining is active again: the demand came back.
    NodeActivated,
    /// A node is being emptied, its replicas move to the other nodes:
    /// drained to be removed (`[cluster]`), or labelled `ebb.drain`.
    NodeDraining,
    /// `remove_node` removed a drained node that ran no ebb replica.
    NodeRemoved,
    /// A node a user labelled `ebb.drain` runs no ebb replica any more: it
    /// is set to drain (with how long its replicas took to move).
    NodeDrained,
    /// `add_node` or `remove_node` failed or timed out, or a drain was
    /// refused (with the command's output).
    NodeActionFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scaled => "scaled",
            EventKind::ReplicaStarted => "replica_started",
            EventKind::ReplicaAdopted => "replica_adopted",
            EventKind::ReplicaStartFailed => "replica_start_failed",
            EventKind::ReplicaInService => "replica_in_service",
            EventKind::ReplicaUnhealthy => "replica_unhealthy",
            EventKind::HealthCheckSkipped => "health_check_skipped",
            EventKind::ReplicaExited => "replica_exited",
            EventKind::ReplicaDraining => "replica_draining",
            EventKind::ReplicaStopped => "replica_stopped",
            EventKind::ReplicaProtected => "replica_protected",
            EventKind::ReplicaUnprotected => "replica_unprotected",
            EventKind::ReplicaInterrupted => "replica_interrupted",
            EventKind::ReplicaEjected => "replica_ejected",
            EventKind::ReplicaReturned => "replica_returned",
            EventKind::ReplicaOutlierSpared => "replica_outlier_spared",
            EventKind::Backoff => "backoff",
            EventKind::Saturated => "saturated",
            EventKind::ScaleInFrozen => "scale_in_frozen",
            EventKind::Shadow => "shadow",
            EventKind::Forecast => "forecast",
            EventKind::HostFull => "host_full",
            EventKind::MetricSourceFailed => "metric_source_failed",
            EventKind::DeployStarted => "deploy_started",
            EventKind::DeployStep => "deploy_step",
            EventKind::DeployRollingBack => "deploy_rolling_back",
            EventKind::DeploySucceeded => "deploy_succeeded",
            EventKind::DeployRolledBack => "deploy_rolled_back",
            EventKind::FleetStarting => "fleet_starting",
            EventKind::FleetStopping => "fleet_stopping",
            EventKind::FleetLeft => "fleet_left",
            EventKind::EbbUpgraded => "ebb_upgraded",
            EventKind::CertificateObtained => "certificate_obtained",
            EventKind::CertificateFailed => "certificate_failed",
            EventKind::CertificateReloaded => "certificate_reloaded",
            EventKind::ConfigApplied => "config_applied",
            EventKind::Idle => "idle",
            EventKind::Waking => "waking",
            EventKind::Woken => "woken",
            EventKind::WakeFailed => "wake_failed",
            EventKind::WarmPoolFilled => "warm_pool_filled",
            EventKind::WarmReplicaUsed => "warm_replica_used",
            EventKind::NodeAdding => "node_adding",
            EventKind::NodeAdded => "node_added",
            EventKind::NodeActivated => "node_activated",
            EventKind::NodeDraining => "node_draining",
            EventKind::NodeRemoved => "node_removed",
            EventKind::NodeDrained => "node_drained",
            EventKind::NodeActionFailed => "node_action_failed",
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic sequence number; continues across restarts.
    pub seq: u64,
    /// RFC 3339, UTC, millisecond precision.
    pub time: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub kind: EventKind,
    /// Desired capacity before and after, for `scaled` events.
    #[serde(default)]
    pub from: Option<u32>,
    #[serde(default)]
    pub to: Option<u32>,
    /// Why, with the numbers that decided it.
    pub reason: String,
}

/// Where an [`EventLog`] keeps its events across restarts: the state store
/// (`state::StateStore` implements it). A trait so that the log needs
/// nothing from `state`, which needs `Event` from here.
pub trait EventStore: Send + Sync {
    /// Queues `event` for writing; called in order, under the log's lock.
    fn record_event(&self, event: &Event);
}

/// Bounded, shared event log.
pub struct EventLog {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Event>,
    capacity: usize,
    /// Where events are kept across restarts, if anywhere.
    store: Option<Box<dyn EventStore>>,
    /// The last sequence number of an earlier run (0 for none): counters
    /// of this run start after it.
    resumed_after: u64,
}

struct Ring {
    next_seq: u64,
    events: VecDeque<Event>,
}

/// What to record; the log adds sequence number and time.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub service: String,
    pub replica: Option<String>,
    pub kind: EventKind,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub reason: String,
}

impl NewEvent {
    pub fn new(service: &str, kind: EventKind, reason: impl Into<String>) -> Self {
        Self { service: service.to_string(), replica: None, kind, from: None, to: None, reason: reason.into() }
    }

    pub fn replica(mut self, replica: &str) -> Self {
        self.replica = Some(replica.to_string());
        self
    }

    pub fn change(mut self, from: u32, to: u32) -> Self {
        self.from = Some(from);
        self.to = Some(to);
        self
    }
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            ring: Mutex::new(Ring { next_seq: 1, events: VecDeque::new() }),
            live,
            capacity: capacity.max(1),
            store: None,
            resumed_after: 0,
        }
    }

    /// A log that continues `restored` (oldest first, from the state store)
    /// and writes every new event there too.
    pub fn with_store(capacity: usize, store: impl EventStore + 'static, restored: Vec<Event>) -> Self {
        let mut log = Self::new(capacity);
        {
            let ring = log.ring.get_mut().unwrap_or_else(|p| p.into_inner());
            ring.next_seq = restored.last().map(|e| e.seq + 1).unwrap_or(1);
            log.resumed_after = ring.next_seq - 1;
            let skip = restored.len().saturating_sub(log.capacity);
            ring.events.extend(restored.into_iter().skip(skip));
        }
        log.store = Some(Box::new(store));
        log
    }

    pub fn record(&self, new: NewEvent) -> Event {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let event = {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            let event = Event {
                seq: ring.next_seq,
                time,
                service: new.service,
                replica: new.replica,
                kind: new.kind,
                from: new.from,
                to: new.to,
                // Stored escaped: a reason that quotes outside text (a
                // command, a probe's answer) cannot forge a line of
                // `ebb events` or send a terminal escape.
                reason: escape_controls(&new.reason).into_owned(),
            };
            ring.next_seq += 1;
            if ring.events.len() == self.capacity {
                ring.events.pop_front();
            }
            ring.events.push_back(event.clone());
            // Queued under the lock, so the store sees events in order.
            if let Some(store) = &self.store {
                store.record_event(&event);
            }
            event
        };
        tracing::info!(
            service = %event.service,
            replica = event.replica.as_deref().unwrap_or("-"),
            kind = event.kind.as_str(),
            "{}",
            event.reason
        );
        // No receivers is normal (nobody following).
        let _ = self.live.send(event.clone());
        event
    }

    /// Events after `after_seq` (0 for all kept), optionally for one service.
    pub fn list(&self, service: Option<&str>, after_seq: u64) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.events.iter().filter(|e| e.seq > after_seq && service.is_none_or(|s| e.service == s)).cloned().collect()
    }

    /// The last sequence number an earlier run recorded (0 for none).
    pub fn resumed_after(&self) -> u64 {
        self.resumed_after
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

/// `text` with every control character (C0, DEL, C1) written as an escape
/// (`\n`, `\t`, `\r`, `\u{1b}`), so it prints on one line and inert.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stored_with_control_characters_escaped() {
        let log = EventLog::new(4);
        let forged = "deploy v2\n2026-01-01T00:00:00.000Z  web      scaled  - 2->0  \u{1b}[2Jowned\0";
        let e = log.record(NewEvent::new("web", EventKind::Scaled, forged));
        assert_eq!(e.reason, "deploy v2\\n2026-01-01T00:00:00.000Z  web      scaled  - 2->0  \\u{1b}[2Jowned\\u{0}");
        assert!(!log.list(None, 0)[0].reason.chars().any(char::is_control));
        assert_eq!(escape_controls("plain ✓ text"), std::borrow::Cow::Borrowed("plain ✓ text"));
    }

    #[test]
    fn the_ring_is_bounded_and_keeps_the_newest() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.record(NewEvent::new("web", EventKind::Scaled, format!("step {i}")).change(i, i + 1));
        }
        let kept = log.list(None, 0);
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(kept[2].reason, "step 4");
        assert_eq!(log.list(None, 4).len(), 1);
        assert!(log.list(Some("api"), 0).is_empty());
    }

    #[test]
    fn events_serialize_with_the_documented_field_names() {
        let log = EventLog::new(10);
        let e = log.record(NewEvent::new("web", EventKind::Scaled, "manual").change(2, 3));
        let json = serde_json::to_value(&e).unwrap();
        for key in ["time", "service", "kind", "from", "to", "reason"] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["kind"], "scaled");
    }
}
