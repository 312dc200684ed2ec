//! Passive outlier detection, live: the balancer's per-replica counts go to
//! the core's `OutlierDetector` once a second, and at once when the
//! balancer sees a failure streak reach a threshold
//! (`ServiceProxy::outlier_suspect`). What it decides is applied here: an
//! ejected replica leaves the routable set (it stays healthy and in
//! service), a returned one comes back with its streaks reset, and each is
//! an event with the numbers.

use ebb_core::outlier::{Outcomes, OutlierEvent};

use super::ServiceController;
use crate::events::{EventKind, NewEvent};

impl ServiceController {
    /// Feeds what the balancer saw since the last look to the detector and
    /// applies its decisions.
    pub(super) fn look_for_outliers(&mut self) {
        let now = self.now();
        // Every replica that could take requests but for an ejection: the
        // fleet the cap is a share of.
        let mut fleet: Vec<(String, Outcomes)> = Vec::new();
        for r in &mut self.replicas {
            if !r.serving() || r.stopping {
                continue;
            }
            let Some(backend) = &r.backend else { continue };
            let totals = backend.outcomes();
            let seen = std::mem::replace(&mut r.outcomes_seen, totals);
            fleet.push((
                r.id.clone(),
                Outcomes {
                    answered: totals.answered.saturating_sub(seen.answered),
                    server_errors: totals.server_errors.saturating_sub(seen.server_errors),
                    gateway_failures: totals.gateway_failures.saturating_sub(seen.gateway_failures),
                    ..totals
                },
            ));
        }
        let fleet: Vec<(String, Outcomes)> = fleet.into_iter().filter(|(id, _)| self.replica_routes(id)).collect();
        let view: Vec<(&str, Outcomes)> = fleet.iter().map(|(id, o)| (id.as_str(), *o)).collect();
        let events = self.outlier.step(now, &view);
        for r in &mut self.replicas {
            r.ejection = self.outlier.ejection(&r.id).cloned();
        }
        if events.is_empty() {
            return;
        }
        for event in &events {
            let kind = match event {
                OutlierEvent::Ejected { .. } => EventKind::ReplicaEjected,
                OutlierEvent::Returned { replica, .. } => {
                    if let Some(backend) =
                        self.replicas.iter().find(|r| &r.id == replica).and_then(|r| r.backend.as_ref())
                    {
                        backend.reset_streaks();
                    }
                    EventKind::ReplicaReturned
                }
                OutlierEvent::Spared { .. } => EventKind::ReplicaOutlierSpared,
            };
            self.record(NewEvent::new(&self.name, kind, event.to_string()).replica(event.replica()));
        }
        // Out of (or back in) the rotation now, not at the next reconcile.
        self.publish_routable();
    }

    /// Whether this replica's version takes requests now (blue-green).
    fn replica_routes(&self, id: &str) -> bool {
        self.replicas.iter().find(|r| r.id == id).is_some_and(|r| self.routes_version(r.version))
    }
}
