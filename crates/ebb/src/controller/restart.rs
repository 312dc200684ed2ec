//! Surviving ebb's own restart: what the controller saves to the state
//! store, and how it restores desired state and the versions at start.
//! Adopting the replicas an earlier run left running is in `adopt.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ebb_core::scaling::Bounds;
use tokio_util::sync::CancellationToken;

use super::deploy::{Deployer, VersionSpec};
use super::lifecycle::Fleet;
use super::replicas::ReplicaSet;
use super::{adopt, RestoredService, Shared};
use crate::events::{EventKind, NewEvent};
use crate::metrics::history;
use crate::state::{ReplicaRecord, ServiceRecord, StateStore};
use ebb_core::fleet::Routes;

/// What decides whether the service record must be rebuilt.
#[derive(Debug, Clone, PartialEq)]
struct ServiceFingerprint {
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

/// One service's side of the state store: what was restored at start, and
/// what was last written, to write only changes.
pub(super) struct Restorer {
    store: Option<StateStore>,
    /// One point a second for the last 24 h (shared with the handle).
    history: Arc<history::MetricsHistory>,
    /// What was last written to the store, to write only changes.
    saved_service: Option<ServiceRecord>,
    saved_fingerprint: Option<ServiceFingerprint>,
    saved_replicas: HashMap<String, ReplicaRecord>,
    /// Replica records from the store, consumed by adoption at start.
    restored_replicas: Vec<ReplicaRecord>,
    /// Set once `run` has restored and adopted: before that nothing is saved.
    restored: bool,
    /// Cancelled once adoption is done and the first routable set is out.
    done: CancellationToken,
}

impl Restorer {
    pub(super) fn new(store: Option<StateStore>) -> Self {
        Restorer {
            store,
            history: Arc::default(),
            saved_service: None,
            saved_fingerprint: None,
            saved_replicas: HashMap::new(),
            restored_replicas: Vec::new(),
            restored: false,
            done: CancellationToken::new(),
        }
    }

    pub(super) fn store(&self) -> Option<StateStore> {
        self.store.clone()
    }

    pub(super) fn history(&self) -> Arc<history::MetricsHistory> {
        self.history.clone()
    }

    pub(super) fn done(&self) -> CancellationToken {
        self.done.clone()
    }

    /// Applies what the store held: metric history, desired capacity, the
    /// versions and their specs. A config edited since the last run wins
    /// over the stored value, and says so.
    pub(super) fn restore(
        &mut self,
        ctx: &Shared,
        restored: RestoredService,
        bounds: Bounds,
        desired: &mut u32,
        deploy: &mut Deployer,
    ) {
        self.history.restore(restored.history);
        self.restored_replicas = restored.replicas;
        let Some(record) = restored.record else { return };
        if record.resumes_desired(ctx.config.replicas.desired) {
            *desired = bounds.clamp(record.desired);
        } else {
            ctx.record(NewEvent::new(
                &ctx.name,
                EventKind::Scaled,
                format!(
                    "ebb.toml's replicas.desired changed from {} to {} since the last run: desired {} (was {})",
                    record.config_desired, ctx.config.replicas.desired, desired, record.desired
                ),
            ));
        }
        let mut specs = BTreeMap::new();
        for (version, value) in &record.specs {
            match serde_json::from_value::<VersionSpec>(value.clone()) {
                Ok(spec) => {
                    specs.insert(*version, spec);
                }
                Err(error) => {
                    tracing::warn!(service = %ctx.name, version, %error, "Ignoring a stored spec ebb cannot read.")
                }
            }
        }
        if specs.contains_key(&record.version) {
            deploy.specs = specs;
            deploy.version = record.version;
        } else {
            tracing::warn!(service = %ctx.name, version = record.version, "The stored current version has no readable spec; starting from ebb.toml's.");
        }
        deploy.last = record.last_deploy.clone().and_then(|v| serde_json::from_value(v).ok());
        let config_spec = VersionSpec::from_config(&ctx.config);
        if spec_json(&config_spec) != record.config_spec && deploy.specs.get(&deploy.version) != Some(&config_spec) {
            ctx.record(NewEvent::new(
                &ctx.name,
                EventKind::DeployStep,
                format!(
                    "ebb.toml's command, env or image for {} changed since the last run; v{} keeps running. \
                     Roll the change out with `ebb deploy {}` (health-gated, rolled back on failure)",
                    ctx.name, deploy.version, ctx.name
                ),
            ));
        }
        self.saved_service = Some(record);
    }

    /// Takes over the replicas the previous run left (see `adopt.rs`).
    /// Returns how many were adopted into service.
    pub(super) async fn adopt(&mut self, ctx: &Shared, fleet: &mut Fleet, routes: Routes) -> usize {
        let records = std::mem::take(&mut self.restored_replicas);
        adopt::adopt_survivors(ctx, fleet, routes, records, &mut self.saved_replicas).await
    }

    /// Restoring and adoption are done: from now on changes are saved.
    pub(super) fn start_saving(&mut self) {
        self.restored = true;
    }

    fn service_record(ctx: &Shared, desired: u32, deploy: &Deployer) -> ServiceRecord {
        let first_kept = deploy.specs.keys().rev().nth(KEEP_VERSIONS - 1).copied().unwrap_or(0);
        ServiceRecord {
            name: ctx.name.clone(),
            desired,
            version: deploy.version,
            config_desired: ctx.config.replicas.desired,
            // The newest versions, and always the current one (after many
            // rolled-back deploys it is older than all of them).
            specs: deploy
                .specs
                .iter()
                .filter(|(v, _)| **v >= first_kept || **v == deploy.version)
                .map(|(v, spec)| (*v, spec_json(spec)))
                .collect(),
            config_spec: spec_json(&VersionSpec::from_config(&ctx.config)),
            last_deploy: deploy.last.as_ref().and_then(|d| serde_json::to_value(d).ok()),
        }
    }

    /// Writes what changed since the last write (service and replicas).
    /// Nothing is written before restoring and adoption are done.
    pub(super) fn persist(&mut self, ctx: &Shared, desired: u32, deploy: &Deployer, replicas: &ReplicaSet) {
        if !self.restored || self.store.is_none() {
            return;
        }
        // Cheap to compare on every input; the record is built (and its
        // specs serialised) only when one of these changed.
        let fingerprint = ServiceFingerprint {
            desired,
            version: deploy.version,
            versions: deploy.specs.len(),
            newest: deploy.specs.keys().next_back().copied(),
            last_deploy: deploy.last.clone(),
        };
        if self.saved_fingerprint.as_ref() != Some(&fingerprint) {
            let record = Self::service_record(ctx, desired, deploy);
            if self.saved_service.as_ref() != Some(&record) {
                if let Some(store) = &self.store {
                    store.save_service(record.clone());
                }
                self.saved_service = Some(record);
            }
            self.saved_fingerprint = Some(fingerprint);
        }
        self.persist_replicas(ctx, replicas);
    }

    /// Writes replica records that changed and forgets those that left.
    pub(super) fn persist_replicas(&mut self, ctx: &Shared, replicas: &ReplicaSet) {
        let Some(store) = self.store.clone() else { return };
        if !self.restored {
            return;
        }
        let current: HashMap<String, ReplicaRecord> = replicas
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
                    service: ctx.name.clone(),
                    version: r.version,
                    handle: serde_json::to_value(&running.handle).ok()?,
                    addr: running.addr,
                    protected: r.protected,
                    started_ms: r.started_ms,
                    token: replicas.token(&r.id).unwrap_or_default(),
                    pooled: r.pooled,
                };
                Some((r.id.clone(), record))
            })
            .collect();
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
    pub(super) fn push_history(&self, ctx: &Shared, point: history::ServicePoint) {
        if let Some(store) = &self.store {
            store.record_point(&ctx.name, &point);
        }
        self.history.push(point);
    }
}
