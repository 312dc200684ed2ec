//! Probe results turned into health: each flip of a replica's health
//! tracker (in service, back in the rotation, failed), and the episodes in
//! which health checks cannot run for ebb's own reason. `probe.rs` does
//! the check itself.

use std::time::Instant;

use ebb_core::health::Health;

use super::lifecycle::Failure;
use super::replicas::ReplicaSet;
use super::{probe, Shared};
use crate::events::{EventKind, NewEvent};
use crate::status::ReplicaState;

/// What a probe result changed.
pub(super) enum Verdict {
    Unchanged,
    /// Healthy after its passing checks: in service, or back in the rotation.
    InService,
    /// Failed its checks: out of the rotation, to be replaced.
    Failed(Failure),
}

/// The health checks of one service's replicas.
#[derive(Debug, Default)]
pub(super) struct HealthChecks {
    /// Health checks are failing for ebb's own reason (out of file
    /// descriptors...): why, and how many were skipped. Said once per
    /// episode.
    probe_fault: Option<(String, u64)>,
}

impl HealthChecks {
    pub(super) fn on_probe(
        &mut self,
        ctx: &Shared,
        replicas: &mut ReplicaSet,
        id: &str,
        outcome: probe::ProbeOutcome,
    ) -> Verdict {
        let grace = ctx.config.health.grace_period;
        let Some(r) = replicas.get_mut(id) else { return Verdict::Unchanged };
        if !r.is_active() {
            return Verdict::Unchanged;
        }
        r.last_probe = Some(outcome.detail.clone());
        if outcome.ebb_fault {
            // Not the replica's failure: its health holds.
            let health = r.health.state();
            self.on_probe_fault(ctx, id, health, &outcome.detail);
            return Verdict::Unchanged;
        }
        if let Some((why, skipped)) = self.probe_fault.take() {
            tracing::info!(service = %ctx.name, skipped, last = %why, "Health checks run again.");
        }
        // Within the grace period a failing probe is not held against a
        // booting replica; passes still count so it can join early.
        if !outcome.passed && r.started_at.elapsed() < grace {
            return Verdict::Unchanged;
        }
        let Some(flip) = r.health.observe(outcome.passed) else { return Verdict::Unchanged };
        match flip.to {
            Health::Healthy => {
                let first = r.state == ReplicaState::Starting;
                r.state = ReplicaState::InService;
                r.ever_in_service = true;
                r.in_service_since.get_or_insert_with(Instant::now);
                let why = format!(
                    "{} after {} consecutive passing health checks ({}){}",
                    if first { "in service" } else { "healthy again, back in the rotation" },
                    flip.consecutive,
                    outcome.detail,
                    if first {
                        format!(", {:.1} s after start", r.started_at.elapsed().as_secs_f64())
                    } else {
                        String::new()
                    }
                );
                ctx.record(NewEvent::new(&ctx.name, EventKind::ReplicaInService, why).replica(id));
                Verdict::InService
            }
            Health::Unhealthy => {
                let why = format!(
                    "failed {} consecutive health checks (last: {}); out of the rotation and replaced",
                    flip.consecutive, outcome.detail
                );
                let never_served = !r.ever_in_service;
                r.state = ReplicaState::Failed;
                ctx.record(NewEvent::new(&ctx.name, EventKind::ReplicaUnhealthy, why.clone()).replica(id));
                Verdict::Failed(Failure { id: id.to_string(), cause: why, never_served })
            }
            Health::Unknown => Verdict::Unchanged,
        }
    }

    /// A health check that could not run for ebb's own reason: an event
    /// the first time (until checks run again), never counted against the
    /// replica.
    fn on_probe_fault(&mut self, ctx: &Shared, id: &str, health: Health, detail: &str) {
        match &mut self.probe_fault {
            // The event below said it (and is logged); one line per
            // skipped check would flood the log while the shortage lasts.
            Some((_, skipped)) => {
                *skipped += 1;
                tracing::debug!(service = %ctx.name, replica = %id, %detail, "Health check skipped.");
            }
            None => {
                self.probe_fault = Some((detail.to_string(), 1));
                ctx.record(
                    NewEvent::new(
                        &ctx.name,
                        EventKind::HealthCheckSkipped,
                        format!(
                            "health check could not run for ebb's own reason ({detail}); not counted against the replica, which stays {health}; see docs/balancer.md#file-descriptors"
                        ),
                    )
                    .replica(id),
                );
            }
        }
    }
}
