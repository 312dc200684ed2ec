//! What the controller shows the rest of ebb: the routable set it hands
//! the balancer, and the status snapshot it hands the admin API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::deploy::Deployer;
use super::lifecycle::Fleet;
use super::replicas::ReplicaSet;
use super::sampler::Sampler;
use super::Shared;
use crate::driver::RunningReplica;
use crate::proxy::{Backend, ServiceProxy};
use crate::status::{ReplicaStatus, ServiceStatus};
use ebb_core::fleet::{self, CrashLoop, Routes};

/// A point-in-time view of a service for the admin API.
#[derive(Clone)]
pub(super) struct Snapshot {
    pub(super) service: ServiceStatus,
    /// Live counters, read when the status is asked for.
    pub(super) backends: BTreeMap<String, Arc<Backend>>,
    /// The replicas the driver runs, for the usage sampler.
    pub(super) running: Vec<RunningReplica>,
}

impl Snapshot {
    pub(super) fn to_status(&self) -> ServiceStatus {
        let mut status = self.service.clone();
        for replica in &mut status.replicas {
            if let Some(backend) = self.backends.get(&replica.id) {
                replica.in_flight = backend.in_flight();
                replica.requests = backend.requests();
            }
        }
        status
    }
}

/// The routable set as last handed to the balancer.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Routable ids last published, to swap the snapshot only on change.
    published: Vec<String>,
}

impl Published {
    /// Hands the balancer the routable replicas, when they changed, and
    /// tells it which failed replicas will never answer what they hold.
    pub(super) fn publish(&mut self, proxy: &ServiceProxy, replicas: &ReplicaSet, routes: &Routes) {
        for backend in replicas.abandoned_backends() {
            backend.abandon();
        }
        let routable = replicas.routable(routes);
        let ids: Vec<String> = routable.iter().map(|r| r.id.clone()).collect();
        if ids != self.published {
            let backends = routable.iter().filter_map(|r| r.backend.clone()).collect();
            proxy.set_routable(backends);
            self.published = ids;
        }
    }

    /// Forces the next publish (the routes filter changed).
    pub(super) fn invalidate(&mut self) {
        self.published.clear();
    }
}

/// The service's status as it is now.
pub(super) fn snapshot(
    ctx: &Shared,
    idle: Option<String>,
    desired: u32,
    fleet: &Fleet,
    crash_loop: &CrashLoop,
    deploy: &Deployer,
    sampler: &Sampler,
) -> Snapshot {
    let now = Instant::now();
    let replicas = &fleet.replicas;
    let backoff = crash_loop.describe(ctx.now());
    let facts = replicas.facts();
    let counts = fleet::Counts::of(&facts);
    // Scale-in that cannot happen because the extra replicas are protected.
    let protected = fleet::scale_in_waits_for(&facts, desired);
    let protected_wait = (!protected.is_empty())
        .then(|| format!("scale-in waits for protected replicas ({}) to be released", protected.join(", ")));
    let holding: Vec<String> =
        [backoff, protected_wait, sampler.policy_hold().map(str::to_string)].into_iter().flatten().collect();
    let holding = (!holding.is_empty()).then(|| holding.join("; "));
    let bounds = sampler.bounds();
    let statuses = replicas
        .iter()
        .map(|r| ReplicaStatus {
            id: r.id.clone(),
            state: r.state,
            healthy: r.serving() && !r.stopping,
            ejected: r.ejection.is_some(),
            ejection: r.ejection.as_ref().map(|e| {
                format!(
                    "ejected for {}: {}; back in {:.0} s",
                    ebb_core::scaling::metrics::duration(e.length()),
                    e.reason,
                    e.remaining(ctx.now()).as_secs_f64().ceil()
                )
            }),
            health: r.health.state().to_string(),
            last_probe: r.last_probe.clone(),
            pid: r.running.as_ref().and_then(|x| x.pid),
            port: r.running.as_ref().map(|x| x.addr.port()),
            version: r.version,
            in_flight: 0,
            requests: 0,
            cpu: r.cpu_percent.map(|c| (c * 10.0).round() / 10.0),
            protected: r.protected,
            rss_bytes: r.rss_bytes,
            age_s: (now - r.started_at).as_secs_f64(),
            pooled: r.pooled,
        })
        .collect();
    let service = ServiceStatus {
        name: ctx.name.clone(),
        listen: ctx.config.listen.to_string(),
        driver: fleet.driver_name().to_string(),
        desired,
        min: bounds.min,
        max: bounds.max,
        in_service: counts.in_service,
        pending: counts.pending,
        version: deploy.version,
        holding,
        deploy: deploy.status(replicas),
        last_deploy: deploy.last.clone(),
        replicas: statuses,
        saturation: sampler.last_demand().cloned(),
        host: sampler.last_host().cloned(),
        idle,
        warm_pool: warm_pool_line(ctx, replicas),
        shadow: sampler.shadow_status(),
        predictive: sampler.predictive_lines().to_vec(),
    };
    let backends = replicas.iter().filter_map(|r| r.backend.clone().map(|b| (r.id.clone(), b))).collect();
    let running = replicas.iter().filter(|r| !r.stopping).filter_map(|r| r.running.clone()).collect();
    Snapshot { service, backends, running }
}

/// `warm pool: 2 suspended (size 2)`; `None` without a pool.
fn warm_pool_line(ctx: &Shared, replicas: &ReplicaSet) -> Option<String> {
    let size = ctx.config.warm_pool?.size;
    let members: Vec<_> = replicas.iter().filter(|r| r.pooled && !r.stopping && r.is_active()).collect();
    let suspended = members.iter().filter(|r| r.suspended).count();
    let starting = members.len() - suspended;
    Some(match starting {
        0 => format!("warm pool: {suspended} suspended (size {size})"),
        n => format!("warm pool: {suspended} suspended, {n} starting (size {size})"),
    })
}
