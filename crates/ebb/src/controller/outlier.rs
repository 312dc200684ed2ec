//! Passive outlier detection, live: the balancer's per-replica counts go to
//! the core's `OutlierDetector` once a second, and at once when the
//! balancer sees a failure streak reach a threshold
//! (`ServiceProxy::outlier_suspect`). What it decides is applied here: an
//! ejected replica leaves the routable set (it stays healthy and in
//! service), a returned one comes back with its streaks reset, and each is
//! an event with the numbers.

use ebb_core::config::ServiceConfig;
use ebb_core::outlier::{Outcomes, OutlierConfig, OutlierDetector, OutlierEvent};

use super::lifecycle::Fleet;
use super::Shared;
use crate::events::{EventKind, NewEvent};
use ebb_core::fleet::Routes;

/// Outlier detection for one service.
pub(super) struct Outliers {
    /// Passive outlier detection (pure); fed the balancer's counts.
    detector: OutlierDetector,
}

impl Outliers {
    /// Off for a service without a balancer (a worker pool).
    pub(super) fn new(config: &ServiceConfig) -> Self {
        let outlier = match config.kind.has_balancer() {
            true => config.proxy.outlier.clone(),
            false => OutlierConfig::off(),
        };
        Outliers { detector: OutlierDetector::new(outlier) }
    }

    /// `ebb apply`: the new rules (see `OutlierDetector::reconfigure`).
    pub(super) fn reconfigure(&mut self, config: &ServiceConfig) {
        let rules = Self::new(config).detector.config().clone();
        self.detector.reconfigure(rules);
    }

    /// Feeds what the balancer saw since the last look to the detector and
    /// applies its decisions.
    pub(super) fn look(&mut self, ctx: &Shared, fleet: &mut Fleet, routes: Routes) {
        let now = ctx.now();
        // Every replica that could take requests but for an ejection: the
        // fleet the cap is a share of.
        let mut seen_by_balancer: Vec<(String, Outcomes)> = Vec::new();
        for r in fleet.replicas.iter_mut() {
            if !r.serving() || r.stopping {
                continue;
            }
            let Some(backend) = &r.backend else { continue };
            let totals = backend.outcomes();
            let seen = std::mem::replace(&mut r.outcomes_seen, totals);
            seen_by_balancer.push((
                r.id.clone(),
                Outcomes {
                    answered: totals.answered.saturating_sub(seen.answered),
                    server_errors: totals.server_errors.saturating_sub(seen.server_errors),
                    gateway_failures: totals.gateway_failures.saturating_sub(seen.gateway_failures),
                    ..totals
                },
            ));
        }
        // Only the versions that take requests now (blue-green).
        let view: Vec<(&str, Outcomes)> = seen_by_balancer
            .iter()
            .filter(|(id, _)| fleet.replicas.may_route(id, &routes))
            .map(|(id, o)| (id.as_str(), *o))
            .collect();
        let events = self.detector.step(now, &view);
        for r in fleet.replicas.iter_mut() {
            r.ejection = self.detector.ejection(&r.id).cloned();
        }
        if events.is_empty() {
            return;
        }
        for event in &events {
            let kind = match event {
                OutlierEvent::Ejected { .. } => EventKind::ReplicaEjected,
                OutlierEvent::Returned { replica, .. } => {
                    if let Some(backend) = fleet.replicas.get(replica).and_then(|r| r.backend.as_ref()) {
                        backend.reset_streaks();
                    }
                    EventKind::ReplicaReturned
                }
                OutlierEvent::Spared { .. } => EventKind::ReplicaOutlierSpared,
            };
            ctx.record(NewEvent::new(&ctx.name, kind, event.to_string()).replica(event.replica()));
        }
        // Out of (or back in) the rotation now, not at the next reconcile.
        fleet.publish(ctx, routes);
    }
}
