//! Surviving ebb's own restart: what the controller saves to the state
//! store, how it restores desired state, and how it adopts the replicas an
//! earlier run left running.
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

use super::{probe, Replica, RestoredService, ServiceController, VersionSpec};
use crate::clock::unix_ms;
use crate::driver::{FoundReplica, RunningReplica};
use crate::events::{EventKind, NewEvent};
use crate::metrics::history;
use crate::proxy::Backend;
use crate::state::{ReplicaRecord, ServiceRecord};
use crate::status::ReplicaState;

/// `discover` is asked this many times, a second apart, before the
/// previous run's replicas are left to the next restart.
const DISCOVER_ATTEMPTS: u32 = 5;

/// What decides whether the service record must be rebuilt.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ServiceFingerprint {
    desired: u32,
    version: u64,
    versions: usize,
    newest: Option<u64>,
    last_deploy: Option<crate::status::DeployStatus>,
}

/// How many versions' specs are kept (for rollback and version numbering).
const KEEP_VERSIONS: usize = 10;

/// `CommandSpec` as JSON: `{"shell": "..."}` or `{"argv": [...]}`.
pub(super) mod command_serde {
    use ebb_core::config::CommandSpec;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Stored {
        Shell(String),
        Argv(Vec<String>),
    }

    pub fn serialize<S: Serializer>(command: &CommandSpec, s: S) -> Result<S::Ok, S::Error> {
        match command {
            CommandSpec::Shell(line) => Stored::Shell(line.clone()),
            CommandSpec::Argv(argv) => Stored::Argv(argv.clone()),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CommandSpec, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::Shell(line) => CommandSpec::Shell(line),
            Stored::Argv(argv) => CommandSpec::Argv(argv),
        })
    }
}

fn spec_json(spec: &VersionSpec) -> serde_json::Value {
    serde_json::to_value(spec).expect("a version spec serialises")
}

impl ServiceController {
    /// The config's own spec (what `ebb.toml` says now).
    fn config_spec(&self) -> VersionSpec {
        VersionSpec::from_config(&self.config)
    }

    /// Applies what the store held: metric history, desired capacity, the
    /// versions and their specs. A config edited since the last run wins
    /// over the stored value, and says so.
    pub(super) fn with_restored(mut self, restored: RestoredService) -> Self {
        self.history.restore(restored.history);
        self.restored_replicas = restored.replicas;
        let Some(record) = restored.record else { return self };
        let bounds = self.autoscaler.bounds();
        if record.config_desired == self.config.replicas.desired {
            self.desired = bounds.clamp(record.desired);
        } else {
            self.record(NewEvent::new(
                &self.name,
                EventKind::Scaled,
                format!(
                    "ebb.toml's replicas.desired changed from {} to {} since the last run: desired {} (was {})",
                    record.config_desired, self.config.replicas.desired, self.desired, record.desired
                ),
            ));
        }
        let mut specs = std::collections::BTreeMap::new();
        for (version, value) in &record.specs {
            match serde_json::from_value::<VersionSpec>(value.clone()) {
                Ok(spec) => {
                    specs.insert(*version, spec);
                }
                Err(error) => {
                    tracing::warn!(service = %self.name, version, %error, "Ignoring a stored spec ebb cannot read.")
                }
            }
        }
        if specs.contains_key(&record.version) {
            self.specs = specs;
            self.version = record.version;
        } else {
            tracing::warn!(service = %self.name, version = record.version, "The stored current version has no readable spec; starting from ebb.toml's.");
        }
        self.last_deploy = record.last_deploy.clone().and_then(|v| serde_json::from_value(v).ok());
        if spec_json(&self.config_spec()) != record.config_spec
            && self.specs.get(&self.version) != Some(&self.config_spec())
        {
            self.record(NewEvent::new(
                &self.name,
                EventKind::DeployStep,
                format!(
                    "ebb.toml's command, env or image for {} changed since the last run; v{} keeps running. \
                     Roll the change out with `ebb deploy {}` (health-gated, rolled back on failure)",
                    self.name, self.version, self.name
                ),
            ));
        }
        self.saved_service = Some(record);
        self
    }

    fn service_record(&self) -> ServiceRecord {
        let first_kept = self.specs.keys().rev().nth(KEEP_VERSIONS - 1).copied().unwrap_or(0);
        ServiceRecord {
            name: self.name.clone(),
            desired: self.desired,
            version: self.version,
            config_desired: self.config.replicas.desired,
            // The newest versions, and always the current one (after many
            // rolled-back deploys it is older than all of them).
            specs: self
                .specs
                .iter()
                .filter(|(v, _)| **v >= first_kept || **v == self.version)
                .map(|(v, spec)| (*v, spec_json(spec)))
                .collect(),
            config_spec: spec_json(&self.config_spec()),
            last_deploy: self.last_deploy.as_ref().and_then(|d| serde_json::to_value(d).ok()),
        }
    }

    /// Writes what changed since the last write (service and replicas).
    /// Nothing is written before restoring and adoption are done.
    pub(super) fn persist(&mut self) {
        if !self.restored || self.store.is_none() {
            return;
        }
        // Cheap to compare on every input; the record is built (and its
        // specs serialised) only when one of these changed.
        let fingerprint = ServiceFingerprint {
            desired: self.desired,
            version: self.version,
            versions: self.specs.len(),
            newest: self.specs.keys().next_back().copied(),
            last_deploy: self.last_deploy.clone(),
        };
        if self.saved_fingerprint.as_ref() != Some(&fingerprint) {
            let record = self.service_record();
            if self.saved_service.as_ref() != Some(&record) {
                if let Some(store) = &self.store {
                    store.save_service(record.clone());
                }
                self.saved_service = Some(record);
            }
            self.saved_fingerprint = Some(fingerprint);
        }
        self.persist_replicas();
    }

    /// Writes replica records that changed and forgets those that left.
    pub(super) fn persist_replicas(&mut self) {
        let Some(store) = self.store.clone() else { return };
        if !self.restored {
            return;
        }
        let tokens = self.replica_tokens.read().unwrap_or_else(|p| p.into_inner());
        let current: HashMap<String, ReplicaRecord> = self
            .replicas
            .iter()
            .filter_map(|r| {
                let running = r.running.as_ref()?;
                // Unchanged since saved: reuse it rather than serialise the
                // handle again (this runs after every input).
                if let Some(saved) = self.saved_replicas.get(&r.id) {
                    if saved.version == r.version && saved.protected == r.protected && saved.addr == running.addr {
                        return Some((r.id.clone(), saved.clone()));
                    }
                }
                let record = ReplicaRecord {
                    id: r.id.clone(),
                    service: self.name.clone(),
                    version: r.version,
                    handle: serde_json::to_value(&running.handle).ok()?,
                    addr: running.addr,
                    protected: r.protected,
                    started_ms: r.started_ms,
                    token: tokens.get(&r.id).cloned().unwrap_or_default(),
                };
                Some((r.id.clone(), record))
            })
            .collect();
        drop(tokens);
        for (id, record) in &current {
            if self.saved_replicas.get(id) != Some(record) {
                store.save_replica(record.clone());
            }
        }
        for id in self.saved_replicas.keys() {
            if !current.contains_key(id) {
                store.forget_replica(id);
            }
        }
        self.saved_replicas = current;
    }

    /// Keeps one second of history in memory and in the store.
    pub(super) fn push_history(&self, point: history::ServicePoint) {
        if let Some(store) = &self.store {
            store.record_point(&self.name, &point);
        }
        self.history.push(point);
    }

    /// Finds the replicas an earlier run left running and takes them over,
    /// stops orphans, and reports the ones that died. Returns how many were
    /// adopted into service.
    pub(super) async fn adopt_survivors(&mut self) -> usize {
        let records = std::mem::take(&mut self.restored_replicas);
        let mut known: HashMap<String, ReplicaRecord> = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        // What the store holds is what is saved: replicas not adopted are
        // forgotten by the first `persist`.
        self.saved_replicas = known.clone();
        let mut found = None;
        for attempt in 1..=DISCOVER_ATTEMPTS {
            match self.driver.discover(&self.name, &self.state_dir).await {
                Ok(list) => {
                    found = Some(list);
                    break;
                }
                Err(error) => {
                    tracing::warn!(service = %self.name, %error, attempt, "Could not look for replicas left by the previous run.");
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
            self.saved_replicas.clear();
            if !known.is_empty() {
                let mut ids: Vec<&str> = known.keys().map(String::as_str).collect();
                ids.sort();
                self.record(NewEvent::new(
                    &self.name,
                    EventKind::ReplicaExited,
                    format!(
                        "could not list the replicas the previous run left ({} driver); {} may still be running ({}): new ones are started, and the next restart adopts or stops the old ones",
                        self.driver.name(),
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
            match self.driver.adopt(&found).await {
                Ok(running) => candidates.push((found, record.filter(|_| matches), running)),
                Err(error) => {
                    // Left running and not tracked in this run: keep its
                    // record, so the next restart tries again.
                    self.saved_replicas.remove(&found.replica_id);
                    self.record(
                        NewEvent::new(
                            &self.name,
                            EventKind::ReplicaExited,
                            format!("found running ({}) but could not take it over: {error}; left as it is, the next restart tries again", found.addr),
                        )
                        .replica(&found.replica_id),
                    );
                }
            }
        }
        // One health check each, all at once: a replica that does not answer
        // is not adopted into the rotation.
        let health = self.config.health.clone();
        let web = self.config.kind.has_balancer();
        let mut checks = tokio::task::JoinSet::new();
        for (index, (_, record, running)) in candidates.iter().enumerate() {
            if record.is_some() && web {
                let (addr, health) = (running.addr, health.clone());
                checks.spawn(async move {
                    (index, probe::probe(addr, &health.path, health.timeout, &health.matcher).await)
                });
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
                    self.take_over(&found, running, None, false);
                    self.record(
                        NewEvent::new(
                            &self.name,
                            EventKind::ReplicaExited,
                            format!(
                                "found running ({}) but not in the state file (left by an earlier run, or its start was never saved); stopping it",
                                found.addr
                            ),
                        )
                        .replica(&id),
                    );
                    self.retire(&id, "not in the state file");
                }
                // The check could not run for ebb's own reason (out of
                // descriptors): no verdict, so adopt it and let the probe
                // loop decide; it joins the rotation once it passes.
                (Some(record), Some(outcome)) if outcome.ebb_fault => {
                    self.take_over(&found, running, Some(&record), false);
                    self.record(
                        NewEvent::new(
                            &self.name,
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
                    self.take_over(&found, running, Some(&record), false);
                    self.record(
                        NewEvent::new(
                            &self.name,
                            EventKind::ReplicaUnhealthy,
                            format!(
                                "still running after ebb restarted, but failed its health check ({}); replaced",
                                outcome.detail
                            ),
                        )
                        .replica(&id),
                    );
                    if let Some(r) = self.replica_mut(&id) {
                        r.state = ReplicaState::Failed;
                    }
                    self.retire(&id, "failed its health check after ebb restarted");
                }
                // A web replica whose check never answered (the probe task
                // failed) is not taken for healthy.
                (Some(record), None) if web => {
                    self.take_over(&found, running, Some(&record), false);
                    self.record(
                        NewEvent::new(
                            &self.name,
                            EventKind::ReplicaUnhealthy,
                            "still running after ebb restarted, but its health check could not run; replaced",
                        )
                        .replica(&id),
                    );
                    if let Some(r) = self.replica_mut(&id) {
                        r.state = ReplicaState::Failed;
                    }
                    self.retire(&id, "its health check could not run after ebb restarted");
                }
                (Some(record), outcome) => {
                    self.take_over(&found, running, Some(&record), true);
                    let check = outcome.map(|o| format!("; health check passed ({})", o.detail)).unwrap_or_default();
                    self.record(
                        NewEvent::new(
                            &self.name,
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
            self.record(
                NewEvent::new(
                    &self.name,
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
        &mut self,
        found: &FoundReplica,
        running: RunningReplica,
        record: Option<&ReplicaRecord>,
        in_service: bool,
    ) {
        let now_ms = unix_ms(SystemTime::now());
        let started_ms = record.map(|r| r.started_ms).unwrap_or(now_ms);
        let age = Duration::from_millis(now_ms.saturating_sub(started_ms));
        let started_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let mut health =
            HealthTracker::new(self.config.health.healthy_threshold, self.config.health.unhealthy_threshold);
        if in_service {
            for _ in 0..self.config.health.healthy_threshold.max(1) {
                health.observe(true);
            }
        }
        let backend = self.config.kind.has_balancer().then(|| Arc::new(Backend::new(&found.replica_id, running.addr)));
        if let Some(token) = record.map(|r| r.token.clone()).filter(|t| !t.is_empty()) {
            self.replica_tokens.write().unwrap_or_else(|p| p.into_inner()).insert(found.replica_id.clone(), token);
        }
        let watchers = CancellationToken::new();
        let version = record.map(|r| r.version).unwrap_or(found.version);
        self.replicas.push(Replica {
            state: if in_service { ReplicaState::InService } else { ReplicaState::Starting },
            running: Some(running.clone()),
            backend,
            in_service_since: in_service.then(Instant::now),
            watchers: watchers.clone(),
            protected: record.is_some_and(|r| r.protected),
            ever_in_service: in_service,
            ..Replica::new(found.replica_id.clone(), version, started_at, started_ms, health)
        });
        self.watch_replica(found.replica_id.clone(), running, watchers);
    }
}
