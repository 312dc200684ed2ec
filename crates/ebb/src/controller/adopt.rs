//! Adopting, at start, the replicas an earlier run left running.
//!
//! Adoption trusts nothing on its own: a replica is adopted only when the
//! driver finds it running (same state directory), its handle matches the
//! stored one (pid + start time, container id: a recycled pid never
//! matches), and, for a web service, it passes one health check. A replica
//! the driver finds but the store does not know is an orphan and is
//! stopped; a stored replica the driver cannot find died while ebb was
//! down and is replaced by the ordinary reconcile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ebb_core::health::HealthTracker;
use tokio_util::sync::CancellationToken;

use super::lifecycle::Fleet;
use super::replicas::Replica;
use super::{probe, Shared};
use crate::clock::unix_ms;
use crate::driver::{FoundReplica, RunningReplica};
use crate::events::{EventKind, NewEvent};
use crate::proxy::Backend;
use crate::state::ReplicaRecord;
use crate::status::ReplicaState;
use ebb_core::fleet::Routes;

/// `discover` is asked this many times, a second apart, before the
/// previous run's replicas are left to the next restart.
const DISCOVER_ATTEMPTS: u32 = 5;

/// Finds the replicas an earlier run left running and takes them over,
/// stops orphans, and reports the ones that died. `saved` becomes what the
/// store holds about replicas. Returns how many were adopted into service.
pub(super) async fn adopt_survivors(
    ctx: &Shared,
    fleet: &mut Fleet,
    routes: Routes,
    records: Vec<ReplicaRecord>,
    saved: &mut HashMap<String, ReplicaRecord>,
) -> usize {
    let mut known: HashMap<String, ReplicaRecord> = records.into_iter().map(|r| (r.id.clone(), r)).collect();
    // What the store holds is what is saved: replicas not adopted are
    // forgotten by the first `persist`.
    *saved = known.clone();
    let driver = fleet.driver().clone();
    let mut found = None;
    for attempt in 1..=DISCOVER_ATTEMPTS {
        match driver.discover(&ctx.name, fleet.state_dir()).await {
            Ok(list) => {
                found = Some(list);
                break;
            }
            Err(error) => {
                tracing::warn!(service = %ctx.name, %error, attempt, "Could not look for replicas left by the previous run.");
                if attempt < DISCOVER_ATTEMPTS {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
    let Some(found) = found else {
        // Nothing is known about them: not dead, not adopted. Their
        // records stay in the file for the next run to find them, and
        // the event says where to look.
        saved.clear();
        if !known.is_empty() {
            let mut ids: Vec<&str> = known.keys().map(String::as_str).collect();
            ids.sort();
            ctx.record(NewEvent::new(
                &ctx.name,
                EventKind::ReplicaExited,
                format!(
                    "could not list the replicas the previous run left ({} driver); {} may still be running ({}): new ones are started, and the next restart adopts or stops the old ones",
                    driver.name(),
                    ids.len(),
                    ids.join(", ")
                ),
            ));
        }
        return 0;
    };
    let mut candidates = Vec::new();
    for found in found {
        let record = known.remove(&found.replica_id);
        let matches =
            record.as_ref().is_some_and(|r| serde_json::to_value(&found.handle).ok().as_ref() == Some(&r.handle));
        match driver.adopt(&found).await {
            Ok(running) => candidates.push((found, record.filter(|_| matches), running)),
            Err(error) => {
                // Left running and not tracked in this run: keep its
                // record, so the next restart tries again.
                saved.remove(&found.replica_id);
                ctx.record(
                    NewEvent::new(
                        &ctx.name,
                        EventKind::ReplicaExited,
                        format!("found running ({}) but could not take it over: {error}; left as it is, the next restart tries again", found.addr),
                    )
                    .replica(&found.replica_id),
                );
            }
        }
    }
    // A replica the previous run suspended (scale to zero) is thawed
    // first, whatever the config says now: this run starts awake, and a
    // frozen replica fails its check. Resuming a running one does nothing.
    for (_, _, running) in &candidates {
        if let Err(error) = driver.resume(running).await {
            tracing::debug!(service = %ctx.name, %error, "Could not resume an adopted replica.");
        }
    }
    // One health check each, all at once: a replica that does not answer
    // is not adopted into the rotation.
    let health = ctx.config.health.clone();
    let web = ctx.config.kind.has_balancer();
    let mut checks = tokio::task::JoinSet::new();
    for (index, (_, record, running)) in candidates.iter().enumerate() {
        if record.is_some() && web {
            let (addr, health) = (running.addr, health.clone());
            checks
                .spawn(async move { (index, probe::probe(addr, &health.path, health.timeout, &health.matcher).await) });
        }
    }
    let mut outcomes = HashMap::new();
    while let Some(joined) = checks.join_next().await {
        if let Ok((index, outcome)) = joined {
            outcomes.insert(index, outcome);
        }
    }
    let mut adopted = 0;
    for (index, (found, record, running)) in candidates.into_iter().enumerate() {
        let id = found.replica_id.clone();
        match (record, outcomes.remove(&index)) {
            (None, _) => {
                take_over(ctx, fleet, &found, running, None, false);
                ctx.record(
                    NewEvent::new(
                        &ctx.name,
                        EventKind::ReplicaExited,
                        format!(
                            "found running ({}) but not in the state file (left by an earlier run, or its start was never saved); stopping it",
                            found.addr
                        ),
                    )
                    .replica(&id),
                );
                fleet.retire(ctx, routes, &id, "not in the state file");
            }
            // The check could not run for ebb's own reason (out of
            // descriptors): no verdict, so adopt it and let the probe
            // loop decide; it joins the rotation once it passes.
            (Some(record), Some(outcome)) if outcome.ebb_fault => {
                take_over(ctx, fleet, &found, running, Some(&record), false);
                ctx.record(
                    NewEvent::new(
                        &ctx.name,
                        EventKind::ReplicaAdopted,
                        format!(
                            "adopted from the previous run (v{}, {}); its health check could not run for ebb's own reason ({}): in the rotation once a check passes",
                            record.version, found.addr, outcome.detail
                        ),
                    )
                    .replica(&id),
                );
                adopted += 1;
            }
            (Some(record), Some(outcome)) if !outcome.passed => {
                take_over(ctx, fleet, &found, running, Some(&record), false);
                ctx.record(
                    NewEvent::new(
                        &ctx.name,
                        EventKind::ReplicaUnhealthy,
                        format!(
                            "still running after ebb restarted, but failed its health check ({}); replaced",
                            outcome.detail
                        ),
                    )
                    .replica(&id),
                );
                if let Some(r) = fleet.replicas.get_mut(&id) {
                    r.state = ReplicaState::Failed;
                }
                fleet.retire(ctx, routes, &id, "failed its health check after ebb restarted");
            }
            // A web replica whose check never answered (the probe task
            // failed) is not taken for healthy.
            (Some(record), None) if web => {
                take_over(ctx, fleet, &found, running, Some(&record), false);
                ctx.record(
                    NewEvent::new(
                        &ctx.name,
                        EventKind::ReplicaUnhealthy,
                        "still running after ebb restarted, but its health check could not run; replaced",
                    )
                    .replica(&id),
                );
                if let Some(r) = fleet.replicas.get_mut(&id) {
                    r.state = ReplicaState::Failed;
                }
                fleet.retire(ctx, routes, &id, "its health check could not run after ebb restarted");
            }
            (Some(record), outcome) => {
                take_over(ctx, fleet, &found, running, Some(&record), true);
                let check = outcome.map(|o| format!("; health check passed ({})", o.detail)).unwrap_or_default();
                ctx.record(
                    NewEvent::new(
                        &ctx.name,
                        EventKind::ReplicaAdopted,
                        format!(
                            "adopted from the previous run (v{}, {}){check}: in service",
                            record.version, found.addr
                        ),
                    )
                    .replica(&id),
                );
                adopted += 1;
            }
        }
    }
    for record in known.into_values() {
        ctx.record(
            NewEvent::new(
                &ctx.name,
                EventKind::ReplicaExited,
                format!(
                    "exited while ebb was not running (was v{} at {}); it is replaced",
                    record.version, record.addr
                ),
            )
            .replica(&record.id),
        );
    }
    adopted
}

/// Adds an adopted replica to the fleet, in service when `in_service`,
/// and starts watching it like one this run started.
fn take_over(
    ctx: &Shared,
    fleet: &mut Fleet,
    found: &FoundReplica,
    running: RunningReplica,
    record: Option<&ReplicaRecord>,
    in_service: bool,
) {
    let now_ms = unix_ms(SystemTime::now());
    let started_ms = record.map(|r| r.started_ms).unwrap_or(now_ms);
    let age = Duration::from_millis(now_ms.saturating_sub(started_ms));
    let started_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    let mut health = HealthTracker::new(ctx.config.health.healthy_threshold, ctx.config.health.unhealthy_threshold);
    if in_service {
        for _ in 0..ctx.config.health.healthy_threshold.max(1) {
            health.observe(true);
        }
    }
    let backend = ctx.config.kind.has_balancer().then(|| Arc::new(Backend::new(&found.replica_id, running.addr)));
    if let Some(token) = record.map(|r| r.token.clone()).filter(|t| !t.is_empty()) {
        fleet.replicas.set_token(&found.replica_id, token);
    }
    let watchers = CancellationToken::new();
    let version = record.map(|r| r.version).unwrap_or(found.version);
    fleet.replicas.push(Replica {
        state: if in_service { ReplicaState::InService } else { ReplicaState::Starting },
        running: Some(running.clone()),
        backend,
        in_service_since: in_service.then(Instant::now),
        watchers: watchers.clone(),
        protected: record.is_some_and(|r| r.protected),
        pooled: record.is_some_and(|r| r.pooled),
        ever_in_service: in_service,
        ..Replica::new(found.replica_id.clone(), version, started_at, started_ms, health)
    });
    fleet.watch(ctx, found.replica_id.clone(), running, watchers);
}
