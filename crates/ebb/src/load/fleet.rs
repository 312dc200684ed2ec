//! Following an ebb fleet while the load runs: its desired and in-service
//! replicas, read once a second from the admin API (`GET /api/v1/status`),
//! so the scaling is visible next to the latency it answers, through the
//! same typed client as the CLI.
//!
//! The service behind the target is the one whose own `listen` is the
//! target's address, or, when the address is a `[listener.NAME]`, the one
//! its routes give the run's requests: the status lists each listener's
//! routes, rebuilt here as `ebb_core::routing` routes and matched in order,
//! as the listener does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebb_core::routing::{HostMatch, RequestFacts, Route};

use super::http::parse_url;
use crate::client::{AdminClient, AdminCredential};
use crate::wire::{FleetStatus, ListenerStatus, ReplicaState, RouteStatus, ServiceStatus};

/// Where the run's requests go and what a listener routes them by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aim {
    pub addr: SocketAddr,
    /// `Host`, as sent (port and case included).
    pub host: Option<String>,
    /// The path, without the query.
    pub path: String,
    pub method: String,
    /// Every header sent: (lower-case name, value).
    pub headers: Vec<(String, String)>,
}

impl Aim {
    /// A `GET path` with `Host: authority` and no other header that
    /// routes could look at.
    pub fn get(addr: SocketAddr, authority: &str, path: &str) -> Aim {
        Aim {
            addr,
            host: Some(authority.to_string()),
            path: path.split('?').next().unwrap_or("/").to_string(),
            method: "GET".into(),
            headers: Vec::new(),
        }
    }
}

/// What a loopback address is in a running ebb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behind {
    /// A service's balancer (its own `listen`, or a listener routing the
    /// requests to it).
    Balancer { service: String },
    /// One replica's own address.
    Replica { service: String, replica: String },
}

/// What the live view and the CSV show about the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSummary {
    /// The service behind the target, or `fleet` (all services summed) when
    /// no service listens on the target's address and no listener there
    /// routes the requests to one.
    pub label: String,
    pub desired: u32,
    pub in_service: u32,
}

/// A running ebb's admin API.
#[derive(Clone)]
pub struct Admin {
    pub url: String,
    /// Presents no token: `ebb load` only reads, which a loopback-only
    /// admin listener allows without one.
    client: AdminClient,
}

impl Admin {
    /// Parses and resolves `--ebb ADMIN_URL` (`http://127.0.0.1:9900`, or
    /// `https://…` trusting the public roots and `cacert`).
    pub async fn from_url(url: &str, cacert: Option<&Path>) -> Result<Admin, String> {
        let parsed = parse_url(url).map_err(|e| format!("--ebb: {e}"))?;
        let addr = tokio::net::lookup_host((parsed.host.as_str(), parsed.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("--ebb {url:?}: cannot resolve {}", parsed.host))?;
        let client = AdminClient::new(addr, AdminCredential::None);
        let client = match parsed.tls {
            true => {
                let tls = match cacert {
                    Some(cert) => crate::client::AdminTls::trusting(cert),
                    None => crate::client::AdminTls::roots_only(),
                };
                client.with_tls(tls.for_host(&parsed.host))
            }
            false => client,
        };
        Ok(Admin { url: format!("{}://{}", client.scheme(), parsed.authority), client })
    }

    /// The admin API at `addr`, over HTTPS trusting `cert` (`[admin] tls`).
    fn at(addr: SocketAddr, cert: Option<&Path>) -> Admin {
        let client = AdminClient::new(addr, AdminCredential::None);
        let client = match cert {
            Some(cert) => client.with_tls(crate::client::AdminTls::trusting(cert)),
            None => client,
        };
        Admin { url: format!("{}://{addr}", client.scheme()), client }
    }

    async fn status(&self, limit: Duration) -> Result<FleetStatus, String> {
        let status = self.client.clone().answer_within(limit).status().await;
        status.map_err(|e| format!("GET {}/api/v1/status: {e}", self.url))
    }

    /// The fleet as seen now.
    pub async fn view(&self, aim: &Aim) -> Result<FleetSummary, String> {
        Ok(view_of(&self.status(Duration::from_millis(900)).await?, aim))
    }

    /// Last second's CPU (% of the allotment) of what `behind` names: the
    /// mean over a service's replicas in service, or one replica's. `None`
    /// while ebb has no sample.
    pub async fn cpu(&self, behind: &Behind) -> Result<Option<f64>, String> {
        Ok(cpu_of(&self.status(Duration::from_millis(900)).await?.services, behind))
    }
}

fn cpu_of(services: &[ServiceStatus], behind: &Behind) -> Option<f64> {
    let (name, only) = match behind {
        Behind::Balancer { service } => (service, None),
        Behind::Replica { service, replica } => (service, Some(replica)),
    };
    let service = services.iter().find(|s| &s.name == name)?;
    let readings: Vec<f64> = service
        .replicas
        .iter()
        .filter(|r| only.map_or(r.state == ReplicaState::InService, |id| &r.id == id))
        .filter_map(|r| r.cpu)
        .collect();
    (!readings.is_empty()).then(|| readings.iter().sum::<f64>() / readings.len() as f64)
}

/// The balancer the requests reach (a service's own `listen`, or a
/// listener's route), else a replica whose port the target is.
fn behind_of(status: &FleetStatus, aim: &Aim) -> Option<Behind> {
    if let Some(s) = balancer_of(status, aim) {
        return Some(Behind::Balancer { service: s.name.clone() });
    }
    status.services.iter().find_map(|s| {
        let r = s.replicas.iter().find(|r| r.port == Some(aim.addr.port()))?;
        Some(Behind::Replica { service: s.name.clone(), replica: r.id.clone() })
    })
}

/// The service whose balancer the requests reach: the one listening on the
/// target's address, or the one a listener there routes them to.
fn balancer_of<'a>(status: &'a FleetStatus, aim: &Aim) -> Option<&'a ServiceStatus> {
    if let Some(s) = status.services.iter().find(|s| listens_on(&s.listen, aim.addr)) {
        return Some(s);
    }
    let listener = status.listeners.iter().find(|l| listens_on(&l.listen, aim.addr))?;
    let service = routed_to(listener, aim)?;
    status.services.iter().find(|s| s.name == service)
}

/// The service the listener's routes give the request: the first route
/// that matches, with the core's matching rules. `None` when none matches,
/// or when a route before the match cannot be read (an older ebb that
/// describes its routes only in words).
fn routed_to<'a>(listener: &'a ListenerStatus, aim: &Aim) -> Option<&'a str> {
    let header = |name: &str, value: &str| aim.headers.iter().any(|(n, v)| n == name && v == value);
    let facts = RequestFacts { host: aim.host.as_deref(), path: &aim.path, method: &aim.method, header: &header };
    for status in &listener.routes {
        if route_of(status)?.matches(&facts) {
            return Some(&status.service);
        }
    }
    None
}

/// A route of the status document as the core's [`Route`], if its
/// conditions are all there.
fn route_of(status: &RouteStatus) -> Option<Route> {
    let host = match &status.host {
        Some(h) => Some(HostMatch::parse(h).ok()?),
        None => None,
    };
    let route = Route {
        service: status.service.clone(),
        host,
        path_prefix: status.path_prefix.clone(),
        methods: status.methods.clone(),
        headers: status.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect(),
    };
    // Conditions in words but none one by one: sent by an ebb that does not
    // list them; this route cannot be matched here.
    (route.is_default() == (status.rule == "default")).then_some(route)
}

fn listens_on(listen: &str, target: SocketAddr) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(listen) => listen == target || (listen.ip().is_unspecified() && listen.port() == target.port()),
        Err(_) => false,
    }
}

fn view_of(status: &FleetStatus, aim: &Aim) -> FleetSummary {
    let services = &status.services;
    match balancer_of(status, aim) {
        Some(s) => FleetSummary { label: s.name.clone(), desired: s.desired, in_service: s.in_service },
        None => FleetSummary {
            label: if services.len() == 1 { services[0].name.clone() } else { "fleet".into() },
            desired: services.iter().map(|s| s.desired).sum(),
            in_service: services.iter().map(|s| s.in_service).sum(),
        },
    }
}

/// Without `--ebb`: is the target one of a local ebb's balancers? Asks the
/// admin API named in `config` (`-f`, `./ebb.toml` by default) and the default one,
/// and answers only when a service listens on the target's address, or a
/// listener there routes the requests to one.
pub async fn detect(aim: &Aim, config: &Path) -> Option<Admin> {
    match what_is(aim, config).await? {
        (admin, Behind::Balancer { .. }) => Some(admin),
        (_, Behind::Replica { .. }) => None,
    }
}

/// Whether a loopback `target` is one of a local ebb's balancers or
/// replicas, asking the admin API named in `config` (if it parses), then the
/// default one.
pub async fn what_is(aim: &Aim, config: &Path) -> Option<(Admin, Behind)> {
    if !aim.addr.ip().is_loopback() {
        return None;
    }
    let mut candidates = Vec::new();
    if let Ok(text) = crate::config_file::read(config) {
        if let Ok(config) = ebb_core::config::Config::parse(&text, config) {
            candidates.push((config.admin.listen, config.admin.tls.map(|t| t.cert)));
        }
    }
    let default = ebb_core::config::AdminConfig::default().listen;
    if !candidates.iter().any(|(addr, _)| *addr == default) {
        candidates.push((default, None));
    }
    for (addr, cert) in candidates {
        let admin = Admin::at(addr, cert.as_deref());
        if let Ok(status) = admin.status(Duration::from_millis(300)).await {
            if let Some(behind) = behind_of(&status, aim) {
                return Some((admin, behind));
            }
        }
    }
    None
}

/// Polls the admin API once a second until dropped; `latest` holds the
/// last answer (`None` while the admin API does not answer).
pub struct Poller {
    pub latest: Arc<Mutex<Option<FleetSummary>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    pub fn start(admin: Admin, aim: Aim, first: Option<FleetSummary>) -> Poller {
        let latest = Arc::new(Mutex::new(first));
        let shared = latest.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let view = admin.view(&aim).await.ok();
                *shared.lock().unwrap_or_else(|p| p.into_inner()) = view;
            }
        });
        Poller { latest, task }
    }

    pub fn get(&self) -> Option<FleetSummary> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, listen: &str, desired: u32, in_service: u32) -> ServiceStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "listen": listen, "driver": "process", "desired": desired, "min": 0, "max": 9,
            "in_service": in_service, "pending": 0, "version": 1, "replicas": []
        }))
        .unwrap()
    }

    fn replica(id: &str, state: &str, port: u16, cpu: Option<f64>) -> crate::wire::ReplicaStatus {
        serde_json::from_value(serde_json::json!({
            "id": id, "state": state, "healthy": true, "health": "healthy", "pid": null, "port": port,
            "version": 1, "in_flight": 0, "requests": 0, "cpu": cpu, "rss_bytes": null, "age_s": 1.0
        }))
        .unwrap()
    }

    fn fleet(services: &[ServiceStatus]) -> FleetStatus {
        FleetStatus { services: services.to_vec(), listeners: Vec::new() }
    }

    /// `GET /` to `addr` with `Host: addr`.
    fn aim(addr: &str) -> Aim {
        Aim::get(addr.parse().unwrap(), addr, "/")
    }

    #[test]
    fn a_target_is_a_balancer_or_a_replica_and_cpu_is_read_for_it() {
        let mut web = svc("web", "127.0.0.1:8080", 3, 2);
        web.replicas = vec![
            replica("web-a", "in_service", 20001, Some(20.0)),
            replica("web-b", "in_service", 20002, Some(30.0)),
            replica("web-c", "starting", 20003, Some(90.0)),
        ];
        let services = [web];
        let status = fleet(&services);
        let balancer = Behind::Balancer { service: "web".into() };
        assert_eq!(behind_of(&status, &aim("127.0.0.1:8080")), Some(balancer.clone()));
        let one = Behind::Replica { service: "web".into(), replica: "web-b".into() };
        assert_eq!(behind_of(&status, &aim("127.0.0.1:20002")), Some(one.clone()));
        assert_eq!(behind_of(&status, &aim("127.0.0.1:9999")), None);
        // The balancer: the mean of the replicas in service (not starting).
        assert_eq!(cpu_of(&services, &balancer), Some(25.0));
        assert_eq!(cpu_of(&services, &one), Some(30.0));
        let unknown = Behind::Replica { service: "web".into(), replica: "web-z".into() };
        assert_eq!(cpu_of(&services, &unknown), None);
    }

    #[test]
    fn the_service_on_the_target_address_wins() {
        let target = aim("127.0.0.1:8080");
        let services = fleet(&[svc("api", "127.0.0.1:8081", 1, 1), svc("web", "127.0.0.1:8080", 4, 3)]);
        assert_eq!(view_of(&services, &target), FleetSummary { label: "web".into(), desired: 4, in_service: 3 });
        let any = fleet(&[svc("web", "0.0.0.0:8080", 2, 2)]);
        assert_eq!(view_of(&any, &target).label, "web");
        let elsewhere = aim("127.0.0.1:9999");
        assert_eq!(view_of(&services, &elsewhere), FleetSummary { label: "fleet".into(), desired: 5, in_service: 4 });
    }

    fn route(service: &str, conditions: serde_json::Value) -> RouteStatus {
        let mut json = serde_json::json!({ "rule": "host or path", "service": service });
        json.as_object_mut().unwrap().extend(conditions.as_object().unwrap().clone());
        if conditions.as_object().unwrap().is_empty() {
            json["rule"] = "default".into();
        }
        serde_json::from_value(json).unwrap()
    }

    /// A listener's address: its routes pick the service, in order, with
    /// the core's rules (host without case and port, wildcard, path prefix,
    /// method, header); no match is no service.
    #[test]
    fn a_listener_address_is_followed_to_the_service_its_routes_give() {
        let mut status = fleet(&[
            svc("api", "127.0.0.1:0", 2, 2),
            svc("web", "127.0.0.1:8080", 3, 3),
            svc("shop", "127.0.0.1:0", 5, 4),
        ]);
        let listener = |listen: &str, routes: Vec<RouteStatus>| -> ListenerStatus {
            serde_json::from_value(serde_json::json!({
                "name": "public", "listen": listen, "http": null, "tls": false, "certificates": [],
                "tls_error": null, "routes": routes, "unrouted": 0
            }))
            .unwrap()
        };
        status.listeners = vec![listener(
            "0.0.0.0:9000",
            vec![
                route("api", serde_json::json!({ "host": "api.example.test" })),
                route("api", serde_json::json!({ "path_prefix": "/v1/", "methods": ["POST"] })),
                route("shop", serde_json::json!({ "host": "*.shop.test", "headers": { "x-canary": "1" } })),
                route("web", serde_json::json!({})),
            ],
        )];
        let to = |status: &FleetStatus, host: &str, path: &str, method: &str, headers: &[(&str, &str)]| {
            let aim = Aim {
                addr: "127.0.0.1:9000".parse().unwrap(),
                host: Some(host.into()),
                path: path.into(),
                method: method.into(),
                headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            };
            (view_of(status, &aim).label, behind_of(status, &aim))
        };
        let balancer = |s: &str| Some(Behind::Balancer { service: s.into() });
        assert_eq!(to(&status, "API.Example.TEST:9000", "/", "GET", &[]), ("api".into(), balancer("api")));
        assert_eq!(to(&status, "127.0.0.1:9000", "/v1/x", "POST", &[]), ("api".into(), balancer("api")));
        assert_eq!(to(&status, "127.0.0.1:9000", "/v1/x", "GET", &[]).0, "web", "methods");
        assert_eq!(to(&status, "a.shop.test", "/", "GET", &[("x-canary", "1")]).0, "shop");
        assert_eq!(to(&status, "a.shop.test", "/", "GET", &[]).0, "web", "header");
        let view = view_of(&status, &Aim::get("127.0.0.1:9000".parse().unwrap(), "127.0.0.1:9000", "/?q=1"));
        assert_eq!(view, FleetSummary { label: "web".into(), desired: 3, in_service: 3 });

        // No default route: no service, the whole fleet.
        status.listeners[0].routes.pop();
        assert_eq!(to(&status, "other.test", "/", "GET", &[]).0, "fleet");
        assert_eq!(to(&status, "other.test", "/", "GET", &[]).1, None);
        // An older ebb lists the rules in words only: not guessed at.
        let words: RouteStatus =
            serde_json::from_value(serde_json::json!({ "rule": "host api.example.test", "service": "api" })).unwrap();
        status.listeners[0].routes = vec![words, route("web", serde_json::json!({}))];
        assert_eq!(to(&status, "www.example.test", "/", "GET", &[]).0, "fleet");
    }

    /// What another version of ebb adds is ignored, and what it leaves out
    /// reads as a default.
    #[test]
    fn the_status_document_is_read_leniently() {
        let doc: crate::wire::FleetStatus = serde_json::from_str(
            r#"{"services":[{"name":"web","listen":"127.0.0.1:8080","desired":2,"in_service":1,"pending":1,"replicas":[]}],"extra":true}"#,
        )
        .unwrap();
        assert_eq!(doc.services[0].in_service, 1);
    }
}
