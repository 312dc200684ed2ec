//! A running ebb as one value, [`Running`], and changing it without a
//! restart: `ebb plan` ([`Running::plan`]), `ebb apply` and SIGHUP
//! ([`Running::apply`]).
//!
//! What the core's `config::plan` says can change in place does: a
//! service's controller takes its new config (`ControlCommand::Reconfigure`:
//! policies, bounds, health checks, balancer limits, timeouts; a new
//! command, env or image starts a deploy), a listener's front swaps its
//! routes, HSTS and connection settings, new services and listeners
//! start, removed ones drain. Applying is all-or-nothing up to the first
//! change: the file is parsed and checked (certificate files too), the
//! plan has no refused line, new sockets are bound and new drivers reached
//! before anything running is touched.

mod start;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ebb_core::config::plan::{plan, Effect, Plan, PlannedChange, Subject};
use ebb_core::config::{Config, DriverKind, ServiceConfig};
use ebb_core::replicas;

pub(crate) use start::{fill_connection_caps, Leftovers, LiveListener, LiveService, Parts};

use crate::controller::ServiceHandle;
use crate::events::{EventKind, NewEvent};
use crate::listeners::ListenerBoard;
use crate::proxy::{Routing, ServiceProxy};
use crate::tls::TlsState;
use crate::wire::{ApplyAnswer, PlanAnswer, PlanChange};

/// How long `ebb apply` waits for a new service to have a replica in
/// service before a listener routes to it.
const NEW_SERVICE_READY: Duration = Duration::from_secs(60);

/// The services the admin API sees: every running one, and removed ones
/// until their replicas have drained and stopped.
#[derive(Default)]
pub struct Services(ArcSwap<BTreeMap<String, ServiceHandle>>);

impl Services {
    pub fn get(&self, name: &str) -> Option<ServiceHandle> {
        self.0.load().get(name).cloned()
    }

    /// Every service, in name order.
    pub fn values(&self) -> Vec<ServiceHandle> {
        self.0.load().values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.0.load().keys().cloned().collect()
    }

    fn insert(&self, handle: ServiceHandle) {
        self.0.rcu(|map| {
            let mut map = BTreeMap::clone(map);
            map.insert(handle.name.clone(), handle.clone());
            map
        });
    }

    fn remove(&self, name: &str) {
        self.0.rcu(|map| {
            let mut map = BTreeMap::clone(map);
            map.remove(name);
            map
        });
    }
}

/// The sockets `ebb up` bound before starting anything.
pub(crate) struct Bound {
    /// A service's own `listen` (web services with the short form).
    pub services: BTreeMap<String, tokio::net::TcpListener>,
    /// A listener's `listen` and `http`.
    pub listeners: BTreeMap<String, (tokio::net::TcpListener, Option<tokio::net::TcpListener>)>,
    /// The TLS listeners' certificates, loaded and checked.
    pub tls: Vec<Arc<TlsState>>,
}

/// Why a plan or an apply changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The file does not parse or check: `file:line:col: error: …`.
    #[error("{0}")]
    Invalid(String),
    /// Some change cannot be applied to a running ebb (the plan's lines).
    #[error("cannot apply to a running ebb:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
    /// Checked, but something it needs could not be had (an address in use,
    /// a driver that does not answer, a deploy already running).
    #[error("{0}")]
    Unavailable(String),
}

/// What `ebb up` runs now; `ebb apply` changes it in place.
pub struct Running {
    inner: tokio::sync::Mutex<Inner>,
    /// For the admin API: status, commands.
    pub services: Arc<Services>,
    /// For the admin API: listeners' status, certificates, metrics.
    pub listeners: Arc<ArcSwap<ListenerBoard>>,
}

struct Inner {
    /// The config applied last (the file `ebb up` started with, then each
    /// file applied), and the path it came from.
    config: Config,
    parts: Parts,
    services: BTreeMap<String, LiveService>,
    listeners: BTreeMap<String, LiveListener>,
}

impl Running {
    /// Starts every service and listener of `config` on the sockets bound
    /// for them, printing one line for each.
    pub(crate) fn start(config: Config, mut parts: Parts, mut bound: Bound) -> Running {
        let mut services = BTreeMap::new();
        for service in config.services.values() {
            let live = parts.start_service(service, bound.services.remove(&service.name));
            let desired = parts.desired_at_start.get(&service.name);
            println!("ebb: service {} -> {}", service.name, front_text(&config, service, desired));
            services.insert(service.name.clone(), live);
        }
        let mut listeners = BTreeMap::new();
        for listener in config.listeners.values() {
            let Some(sockets) = bound.listeners.remove(&listener.name) else { continue };
            let tls = crate::tls::state_of(&bound.tls, listener).cloned();
            let live = parts.open_listener(listener, sockets, tls, &services);
            if let (Some(acme), Some(tls)) = (&live.acme, &live.tls) {
                let have = match tls.certs().first() {
                    Some(c) => format!("the stored certificate (not after {}) is served", c.not_after_text()),
                    None => "ordering one now (TLS handshakes fail until it arrives)".to_string(),
                };
                println!(
                    "ebb: listener {}: certificate for {} by ACME from {}: {have}",
                    listener.name,
                    acme.config.domains.join(", "),
                    acme.config.directory
                );
            }
            let scheme = if live.tls.is_some() { "https" } else { "http" };
            let redirect = listener.http.map(|h| format!(", http://{h} redirects to it")).unwrap_or_default();
            let routes = listener.routes.routes.len();
            println!(
                "ebb: listener {} -> {scheme}://{}{redirect} ({routes} route{} to {})",
                listener.name,
                listener.listen,
                if routes == 1 { "" } else { "s" },
                listener.routes.services().join(", ")
            );
            listeners.insert(listener.name.clone(), live);
        }
        let running = Running {
            services: Arc::new(Services::default()),
            listeners: Arc::new(ArcSwap::from_pointee(ListenerBoard::default())),
            inner: tokio::sync::Mutex::new(Inner { config, parts, services, listeners }),
        };
        let inner = running.inner.try_lock().expect("not shared yet");
        for live in inner.services.values() {
            running.services.insert(live.handle.clone());
        }
        running.listeners.store(Arc::new(board(&inner.listeners)));
        drop(inner);
        running
    }

    /// The longest `drain_timeout` of the services running now: how long
    /// shutdown lets balancers finish.
    /// Each service's `logs` settings, as applied last (for the tidying of
    /// replicas' log files).
    pub async fn log_policies(&self) -> BTreeMap<String, ebb_core::config::LogsConfig> {
        let inner = self.inner.lock().await;
        inner.config.services.values().map(|s| (s.name.clone(), s.logs)).collect()
    }

    pub async fn longest_drain(&self) -> Duration {
        let inner = self.inner.lock().await;
        inner.config.services.values().map(|s| s.drain_timeout).max().unwrap_or_default()
    }

    /// The trackers and stop tokens, for shutdown in order.
    pub async fn shutdown_handles(
        &self,
    ) -> (
        tokio_util::task::TaskTracker,
        tokio_util::sync::CancellationToken,
        tokio_util::task::TaskTracker,
        tokio_util::sync::CancellationToken,
    ) {
        let inner = self.inner.lock().await;
        let p = &inner.parts;
        (p.proxies.clone(), p.proxies_stop.clone(), p.controllers.clone(), p.controllers_stop.clone())
    }

    /// What applying the file would change, against the config applied
    /// last. Nothing changes.
    pub async fn plan(&self, path: &Path, text: &str) -> Result<PlanAnswer, ApplyError> {
        let new = parse(path, text)?;
        let inner = self.inner.lock().await;
        let plan = plan(&inner.config, &new, &self.running_counts());
        let refused = plan.refused().next().is_some();
        Ok(PlanAnswer { applied_from: inner.config.path.display().to_string(), refused, changes: wire_changes(&plan) })
    }

    /// Applies the file: see the module's doc for the order. On an error
    /// nothing has changed.
    pub async fn apply(&self, path: &Path, text: &str) -> Result<ApplyAnswer, ApplyError> {
        let mut new = parse(path, text)?;
        let (tls_states, warnings) = crate::tls::check_config(&new).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let mut inner = self.inner.lock().await;
        fill_connection_caps(&mut new, inner.parts.open_file_limit);
        let plan = plan(&inner.config, &new, &self.running_counts());
        let refused: Vec<String> = plan.refused().map(|c| c.to_string()).collect();
        if !refused.is_empty() {
            return Err(ApplyError::Refused(refused));
        }
        let changes = wire_changes(&plan);
        if plan.is_empty() {
            inner.config = new;
            return Ok(ApplyAnswer { changes, steps: Vec::new(), deploying: Vec::new(), draining: Vec::new() });
        }
        let added: Vec<&ServiceConfig> =
            new.services.values().filter(|s| !inner.config.services.contains_key(&s.name)).collect();
        let removed: Vec<String> =
            inner.config.services.keys().filter(|n| !new.services.contains_key(*n)).cloned().collect();
        self.check_can_apply(&inner, &plan, &added)?;
        crate::proxy::access_log::check(&new).map_err(ApplyError::Unavailable)?;
        let mut sockets = bind_new(&inner, &new).await?;
        ensure_drivers(&mut inner.parts, &added).await?;

        let mut steps = Vec::new();
        // 1. New services start (their replicas boot while the rest goes on).
        for service in &added {
            let live = inner.parts.start_service(service, sockets.services.remove(&service.name));
            self.services.insert(live.handle.clone());
            record(&inner, &service.name, format!("ebb apply: service added ({})", replicas(service.replicas.desired)));
            steps.push(format!("+ service {}: started -> {}", service.name, front_text(&new, service, None)));
            inner.services.insert(service.name.clone(), live);
        }
        // 2. Changed services take their new config in place.
        let mut deploying = Vec::new();
        for service in new.services.values().filter(|s| inner.config.services.contains_key(&s.name)) {
            let lines: Vec<String> = plan
                .changes
                .iter()
                .filter(|c| c.subject == Subject::Service(service.name.clone()))
                .map(|c| c.to_string().trim_start_matches("~ ").to_string())
                .collect();
            if lines.is_empty() {
                continue;
            }
            let live = &inner.services[&service.name];
            if let Some(front) = &live.front {
                front.reconfigure_connections(service.proxy.clone());
            }
            match live.handle.reconfigure(service.clone(), lines.clone()).await {
                Ok(done) => {
                    steps.push(format!("~ service {}: applied in place (desired {})", service.name, done.desired));
                    if let Some(deploy) = done.deploy {
                        steps.push(format!(
                            "~ service {}: deploy v{} -> v{} started ({})",
                            service.name, deploy.from_version, deploy.to_version, deploy.strategy
                        ));
                        deploying.push(service.name.clone());
                    }
                }
                Err(error) => steps.push(format!("! service {}: {error}", service.name)),
            }
        }
        // 3. A listener routes to a new service once it has a replica in
        // service (bounded), so the switch answers no 503.
        let routed_new: Vec<&str> = added
            .iter()
            .filter(|s| new.listeners.values().any(|l| l.routes.services().contains(&s.name.as_str())))
            .map(|s| s.name.as_str())
            .collect();
        for name in routed_new {
            let handle = inner.services[name].handle.clone();
            match wait_in_service(&handle, NEW_SERVICE_READY).await {
                true => steps.push(format!("+ service {name}: in service")),
                false => steps.push(format!(
                    "! service {name}: no replica in service after {}s; routing to it anyway (its requests get 503 until one is)",
                    NEW_SERVICE_READY.as_secs()
                )),
            }
        }
        // 4. Listeners: routes switched, new ones opened, removed ones closed.
        let proxies: BTreeMap<String, Arc<ServiceProxy>> =
            inner.services.iter().map(|(n, s)| (n.clone(), s.handle.proxy.clone())).collect();
        for listener in new.listeners.values() {
            let lines: Vec<String> = plan
                .changes
                .iter()
                .filter(|c| c.subject == Subject::Listener(listener.name.clone()) && c.key.is_some())
                .map(|c| c.to_string())
                .collect();
            match inner.listeners.get_mut(&listener.name) {
                Some(live) if !lines.is_empty() => {
                    let routing = Routing::new(&listener.routes, &proxies).map_err(|missing| {
                        ApplyError::Unavailable(format!("listener {}: no running service {missing}", listener.name))
                    })?;
                    live.front.reconfigure_listener(listener, routing);
                    if let Some(redirect) = &live.redirect {
                        redirect.reconfigure_connections(listener.proxy.clone());
                    }
                    if let (Some(tls), Some(files)) = (&live.tls, listener.tls.as_ref().map(|t| &t.certs)) {
                        if !files.is_empty() {
                            tls.replace_files(files)
                                .map_err(|e| ApplyError::Unavailable(format!("listener {}: {e}", listener.name)))?;
                        }
                    }
                    live.config = listener.clone();
                    record(&inner, &format!("listener {}", listener.name), format!("ebb apply: {}", lines.join("; ")));
                    steps.push(format!("~ listener {}: applied in place", listener.name));
                }
                Some(_) => {}
                None => {
                    let Some(bound) = sockets.listeners.remove(&listener.name) else { continue };
                    let tls = crate::tls::state_of(&tls_states, listener).cloned();
                    let services = std::mem::take(&mut inner.services);
                    let live = inner.parts.open_listener(listener, bound, tls, &services);
                    inner.services = services;
                    record(
                        &inner,
                        &format!("listener {}", listener.name),
                        format!("ebb apply: listener opened on {}", listener.listen),
                    );
                    steps.push(format!("+ listener {}: opened on {}", listener.name, listener.listen));
                    inner.listeners.insert(listener.name.clone(), live);
                }
            }
        }
        let closed: Vec<String> = inner.listeners.keys().filter(|n| !new.listeners.contains_key(*n)).cloned().collect();
        for name in closed {
            if let Some(live) = inner.listeners.remove(&name) {
                live.stop.cancel();
                // Closed for good: no takeover may hand it over.
                crate::takeover::forget(live.config.listen);
                live.config.http.into_iter().for_each(crate::takeover::forget);
                record(
                    &inner,
                    &format!("listener {name}"),
                    "ebb apply: listener removed: stops accepting; open connections finish",
                );
                steps.push(format!("- listener {name}: stops accepting; open connections finish"));
            }
        }
        self.listeners.store(Arc::new(board(&inner.listeners)));
        // 5. Removed services: no route reaches them any more; they drain.
        for name in &removed {
            let Some(live) = inner.services.remove(name) else { continue };
            let count = live.handle.status().replicas.len();
            live.serve_stop.cancel();
            if let Some(old) = inner.config.services.get(name).filter(|s| s.kind.has_balancer() && s.own_listen) {
                crate::takeover::forget(old.listen);
            }
            live.stop.cancel();
            record(
                &inner,
                name,
                format!("ebb apply: service removed: draining and stopping {}", replicas(count as u32)),
            );
            steps.push(format!("- service {name}: draining and stopping {}", replicas(count as u32)));
            let (services, store, handle) = (self.services.clone(), inner.parts.store.clone(), live.handle.clone());
            tokio::spawn(async move {
                handle.stopped().await;
                store.forget_service(&handle.name);
                services.remove(&handle.name);
            });
        }
        inner.config = new;
        Ok(ApplyAnswer { changes, steps, deploying, draining: removed })
    }

    /// What must hold before anything changes: a removed service has
    /// finished draining before it comes back; a new spec waits for a
    /// running deploy.
    fn check_can_apply(&self, inner: &Inner, plan: &Plan, added: &[&ServiceConfig]) -> Result<(), ApplyError> {
        for service in added {
            if self.services.get(&service.name).is_some() {
                return Err(ApplyError::Unavailable(format!(
                    "service {} is still draining after it was removed; apply again once `ebb status` no longer lists it",
                    service.name
                )));
            }
        }
        for name in plan.deploys() {
            if let Some(live) = inner.services.get(name) {
                if live.handle.status().deploy.is_some() {
                    return Err(ApplyError::Unavailable(format!(
                        "service {name}: a deploy is running; wait for it (or `ebb rollback {name}`), then apply again"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Replicas an earlier run left of services not running now.
    pub(crate) async fn leftover_replicas(&self) -> Vec<(String, Vec<crate::state::ReplicaRecord>)> {
        let inner = self.inner.lock().await;
        let mut left: Vec<_> = inner
            .parts
            .restored
            .replicas
            .iter()
            .filter(|(_, replicas)| !replicas.is_empty())
            .map(|(name, replicas)| (name.clone(), replicas.clone()))
            .collect();
        left.sort_by(|a, b| a.0.cmp(&b.0));
        left
    }

    /// Each service's replica count now.
    fn running_counts(&self) -> BTreeMap<String, u32> {
        self.services.values().into_iter().map(|h| (h.name.clone(), h.status().replicas.len() as u32)).collect()
    }
}

fn parse(path: &Path, text: &str) -> Result<Config, ApplyError> {
    Config::parse(text, path).map_err(|e| ApplyError::Invalid(e.to_string()))
}

/// Binds what the new file adds (new services' own `listen`, new
/// listeners) before anything changes; an address in use is an error at
/// its key in the file.
async fn bind_new(inner: &Inner, new: &Config) -> Result<Bound, ApplyError> {
    let mut bound = Bound { services: BTreeMap::new(), listeners: BTreeMap::new(), tls: Vec::new() };
    let bind = |addr: std::net::SocketAddr, owner: String| async move {
        let socket = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            ApplyError::Unavailable(
                new.listen_error(&owner, format!("[{owner}] cannot listen on {addr}: {e}")).to_string(),
            )
        })?;
        // Handed over by a takeover, as the sockets `ebb up` bound.
        crate::takeover::keep(&socket);
        Ok(socket)
    };
    for service in new.services.values() {
        if inner.config.services.contains_key(&service.name) || !(service.kind.has_balancer() && service.own_listen) {
            continue;
        }
        let socket = bind(service.listen, format!("service.{}", service.name)).await?;
        bound.services.insert(service.name.clone(), socket);
    }
    for listener in new.listeners.values() {
        if inner.config.listeners.contains_key(&listener.name) {
            continue;
        }
        let main = bind(listener.listen, format!("listener.{}", listener.name)).await?;
        let http = match listener.http {
            Some(addr) => Some(bind(addr, format!("listener.{}.http", listener.name)).await?),
            None => None,
        };
        bound.listeners.insert(listener.name.clone(), (main, http));
    }
    Ok(bound)
}

/// A new service may need a driver this ebb has not used yet.
async fn ensure_drivers(parts: &mut Parts, added: &[&ServiceConfig]) -> Result<(), ApplyError> {
    for service in added {
        if let Some(container) = &service.container {
            let engine = crate::driver::Engine::connect()
                .await
                .map_err(|e| ApplyError::Unavailable(format!("service {} needs Docker, but {e}", service.name)))?;
            engine
                .check_image(&container.image)
                .await
                .map_err(|e| ApplyError::Unavailable(format!("service {}: {e}", service.name)))?;
            engine
                .check_networks(&container.options.networks)
                .await
                .map_err(|e| ApplyError::Unavailable(format!("service {}: {e}", service.name)))?;
            if !parts.drivers.contains_key(&service.driver) {
                let driver: Arc<dyn crate::driver::Driver> = match service.driver {
                    DriverKind::Swarm => Arc::new(crate::driver::SwarmDriver::new(engine).await.map_err(|e| {
                        ApplyError::Unavailable(format!("service {} needs a swarm, but {e}", service.name))
                    })?),
                    _ => Arc::new(crate::driver::DockerDriver::new(engine)),
                };
                parts.drivers.insert(service.driver, driver);
            }
        }
    }
    Ok(())
}

/// Whether the service has a replica in service (or wants none) within
/// `limit`.
async fn wait_in_service(handle: &ServiceHandle, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let status = handle.status();
        if status.desired == 0 || status.in_service > 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record(inner: &Inner, subject: &str, reason: impl Into<String>) {
    inner.parts.events.record(NewEvent::new(subject, EventKind::ConfigApplied, reason));
}

fn board(listeners: &BTreeMap<String, LiveListener>) -> ListenerBoard {
    let mut board = ListenerBoard::default();
    for live in listeners.values() {
        board.add(live.config.clone(), live.tls.clone(), live.front.clone());
        if let Some(redirect) = &live.redirect {
            board.add_redirect(&live.config.name, redirect.clone());
        }
        if let Some(acme) = &live.acme {
            board.add_acme(acme.clone());
        }
    }
    board
}

fn front_text(config: &Config, service: &ServiceConfig, desired: Option<&crate::carry_over::Desired>) -> String {
    let routed: Vec<&str> = config
        .listeners
        .values()
        .filter(|l| l.routes.routes.iter().any(|r| r.service == service.name))
        .map(|l| l.name.as_str())
        .collect();
    let front = match (service.kind.has_balancer(), service.own_listen) {
        (true, true) => format!("http://{}", service.listen),
        (true, false) => format!("listener {}", routed.join(", ")),
        (false, _) => "worker pool, no balancer".to_string(),
    };
    let desired = desired.map_or_else(|| replicas(service.replicas.desired), |d| d.to_string());
    format!("{front} ({desired}, min {}, max {})", service.replicas.bounds.min, service.replicas.bounds.max)
}

fn wire_changes(plan: &Plan) -> Vec<PlanChange> {
    plan.changes.iter().map(wire_change).collect()
}

fn wire_change(change: &PlannedChange) -> PlanChange {
    let (kind, name) = match &change.subject {
        Subject::Service(name) => ("service", name.clone()),
        Subject::Listener(name) => ("listener", name.clone()),
        Subject::Ebb => ("ebb", "ebb".to_string()),
    };
    let effect = match change.effect {
        Effect::InPlace => "in_place",
        Effect::NewReplicas => "new_replicas",
        Effect::RollingDeploy { .. } => "rolling_deploy",
        Effect::StartService { .. } => "start_service",
        Effect::DrainService { .. } => "drain_service",
        Effect::OpenListener => "open_listener",
        Effect::CloseListener => "close_listener",
        Effect::Refused { .. } => "refused",
    };
    PlanChange {
        op: change.op.symbol().to_string(),
        kind: kind.into(),
        name,
        key: change.key.clone(),
        from: change.from.clone(),
        to: change.to.clone(),
        effect: effect.into(),
        text: change.to_string(),
    }
}
