//! Starting and stopping the parts of a running ebb — a service (its
//! controller and, for the short form, its own balancer socket) and a
//! `[listener.NAME]` (its sockets, TLS and ACME) — the same way for `ebb
//! up` and for `ebb apply`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use ebb_core::config::{Config, DriverKind, ListenerConfig, ServiceConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acme::{AcmeListener, Challenges};
use crate::controller::{self, RestoredService, ServiceContext, ServiceHandle};
use crate::driver::Driver;
use crate::events::EventLog;
use crate::metrics::history::ServicePoint;
use crate::metrics::host::HostMonitor;
use crate::proxy::{self, Front, Routing, ServiceProxy};
use crate::state::{ReplicaRecord, ServiceRecord, StateStore};
use crate::tls::TlsState;

/// What every part started in this run shares, fixed for the run.
pub(crate) struct Parts {
    pub state_dir: PathBuf,
    pub store: StateStore,
    pub events: Arc<EventLog>,
    pub host: Arc<HostMonitor>,
    pub drivers: BTreeMap<DriverKind, Arc<dyn Driver>>,
    /// `EBB_ADMIN_URL` for docker replicas (the replica gate), if open.
    pub replica_gate_url: Option<String>,
    /// `EBB_ADMIN_URL` for every other replica (https with `[admin] tls`).
    pub admin_url: String,
    /// ACME HTTP-01 tokens, answered on every listener's http address.
    pub challenges: Arc<Challenges>,
    /// Balancer sockets and ACME tasks; stopped first at shutdown.
    pub proxies: TaskTracker,
    pub proxies_stop: CancellationToken,
    /// Controllers and their readers; stopped after the balancers.
    pub controllers: TaskTracker,
    pub controllers_stop: CancellationToken,
    /// What the state store held for services not started yet: a service
    /// put back by `ebb apply` adopts the replicas an earlier run left.
    pub restored: Leftovers,
    /// The open-file limit, for listeners' default `max_connections`.
    pub open_file_limit: u64,
    /// Each service's desired capacity at start and where it comes from
    /// (`carry_over.rs`), for its `ebb: service` line.
    pub desired_at_start: BTreeMap<String, crate::carry_over::Desired>,
}

/// The state store's records not yet claimed by a running service.
#[derive(Default)]
pub(crate) struct Leftovers {
    pub services: HashMap<String, ServiceRecord>,
    pub replicas: HashMap<String, Vec<ReplicaRecord>>,
    pub history: HashMap<String, Vec<ServicePoint>>,
}

impl Leftovers {
    fn take(&mut self, service: &str) -> RestoredService {
        RestoredService {
            record: self.services.remove(service),
            replicas: self.replicas.remove(service).unwrap_or_default(),
            history: self.history.remove(service).unwrap_or_default(),
        }
    }
}

/// One running service.
pub(crate) struct LiveService {
    pub handle: ServiceHandle,
    /// Its own balancer socket's front (the short form), if any.
    pub front: Option<Arc<Front>>,
    /// Stops its controller (drain and stop every replica).
    pub stop: CancellationToken,
    /// Stops its own balancer socket.
    pub serve_stop: CancellationToken,
}

/// One running `[listener.NAME]`.
pub(crate) struct LiveListener {
    pub config: ListenerConfig,
    pub front: Arc<Front>,
    /// The `http` address's redirect front.
    pub redirect: Option<Arc<Front>>,
    pub tls: Option<Arc<TlsState>>,
    pub acme: Option<Arc<AcmeListener>>,
    /// Stops its sockets and its ACME and certificate-file tasks.
    pub stop: CancellationToken,
}

impl Parts {
    /// Starts a service's controller and, with `socket`, its own balancer,
    /// which accepts once the controller has adopted what an earlier run
    /// left (clients wait in the backlog meanwhile).
    pub fn start_service(&mut self, service: &ServiceConfig, socket: Option<tokio::net::TcpListener>) -> LiveService {
        let proxy = ServiceProxy::new(&service.name, service.balance, service.proxy.clone());
        let stop = self.controllers_stop.child_token();
        let handle = controller::spawn_service(
            ServiceContext {
                config: service.clone(),
                driver: self.drivers[&service.driver].clone(),
                proxy: proxy.clone(),
                events: self.events.clone(),
                state_dir: self.state_dir.clone(),
                admin_url: match (&self.replica_gate_url, service.driver) {
                    (Some(gate), DriverKind::Docker) => gate.clone(),
                    _ => self.admin_url.clone(),
                },
                store: Some(self.store.clone()),
                restored: self.restored.take(&service.name),
                host: (service.driver != DriverKind::Swarm).then(|| self.host.clone()),
            },
            stop.clone(),
            &self.controllers,
        );
        let serve_stop = self.proxies_stop.child_token();
        let front = socket.map(|socket| {
            let front = Front::service(proxy.clone());
            let (name, stop, restored, served) =
                (service.name.clone(), serve_stop.clone(), handle.clone(), front.clone());
            self.proxies.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = restored.restored() => {}
                }
                if let Err(error) = proxy::serve_front(socket, served, stop).await {
                    tracing::error!(service = %name, %error, "Balancer stopped with an error.");
                }
            });
            front
        });
        LiveService { handle, front, stop, serve_stop }
    }

    /// Opens a `[listener.NAME]` on its bound sockets: routes to the
    /// services in `services` (which must hold every service it names),
    /// accepting once each has adopted what an earlier run left; its ACME
    /// task, and the watch of its certificate files.
    pub fn open_listener(
        &mut self,
        listener: &ListenerConfig,
        sockets: (tokio::net::TcpListener, Option<tokio::net::TcpListener>),
        tls: Option<Arc<TlsState>>,
        services: &BTreeMap<String, LiveService>,
    ) -> LiveListener {
        let stop = self.proxies_stop.child_token();
        let proxies: BTreeMap<String, Arc<ServiceProxy>> =
            services.iter().map(|(name, s)| (name.clone(), s.handle.proxy.clone())).collect();
        let routing = Routing::new(&listener.routes, &proxies).expect("a validated config routes to known services");
        let front = Front::listener(listener, routing, tls.clone());
        let routed: Vec<ServiceHandle> =
            listener.routes.services().iter().map(|s| services[*s].handle.clone()).collect();
        let (main, http) = sockets;
        let redirect = http.as_ref().map(|_| Front::redirect(listener, self.challenges.clone()));
        let mut serving = vec![(main, front.clone())];
        if let (Some(http), Some(redirect)) = (http, &redirect) {
            serving.push((http, redirect.clone()));
        }
        let acme = match (listener.tls.as_ref().and_then(|t| t.acme.clone()), tls.as_ref()) {
            (Some(acme), Some(tls)) => {
                let acme = AcmeListener::new(
                    &listener.name,
                    acme,
                    tls.clone(),
                    &self.state_dir,
                    self.challenges.clone(),
                    listener.http.is_some(),
                    self.events.clone(),
                );
                self.proxies.spawn(acme.clone().run(stop.clone()));
                Some(acme)
            }
            _ => None,
        };
        for (socket, front) in serving {
            let (stop, routed) = (stop.clone(), routed.clone());
            self.proxies.spawn(async move {
                for handle in &routed {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = handle.restored() => {}
                    }
                }
                let label = front.label.clone();
                if let Err(error) = proxy::serve_front(socket, front, stop).await {
                    tracing::error!(front = %label, %error, "Balancer stopped with an error.");
                }
            });
        }
        if let Some(tls) = &tls {
            self.proxies.spawn(crate::tls::watch(vec![tls.clone()], Some(self.events.clone()), stop.clone()));
        }
        LiveListener { config: listener.clone(), front, redirect, tls, acme, stop }
    }
}

/// Gives each balancer without a `max_connections` its share of the
/// descriptors `limit` leaves after a reserve (see `fd_limit`), for `ebb
/// up` and again for each file `ebb apply` takes.
pub(crate) fn fill_connection_caps(config: &mut Config, limit: u64) -> u32 {
    let listeners = config.services.values().filter(|s| s.kind.has_balancer() && s.own_listen).count()
        + config.listeners.values().map(|l| 1 + usize::from(l.http.is_some())).sum::<usize>();
    let default = crate::fd_limit::default_max_connections(limit, listeners.max(1));
    for service in config.services.values_mut().filter(|s| s.kind.has_balancer()) {
        service.proxy.max_connections.get_or_insert(default);
    }
    for listener in config.listeners.values_mut() {
        listener.proxy.max_connections.get_or_insert(default);
    }
    default
}
