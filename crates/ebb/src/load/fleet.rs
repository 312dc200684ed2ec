//! Following an ebb fleet while the load runs: its desired and in-service
//! replicas, read once a second from the admin API (`GET /api/v1/status`),
//! so the scaling is visible next to the latency it answers, through the
//! same typed client as the CLI.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::parse_url;
use crate::client::{AdminClient, AdminCredential};
use crate::wire::{ReplicaState, ServiceStatus};

/// What a loopback address is in a running ebb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behind {
    /// A service's balancer.
    Balancer { service: String },
    /// One replica's own address.
    Replica { service: String, replica: String },
}

/// What the live view and the CSV show about the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSummary {
    /// The service behind the target, or `fleet` (all services summed) when
    /// none of them listens on the target's address.
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
    /// Parses and resolves `--ebb ADMIN_URL` (`http://127.0.0.1:9900`).
    pub async fn from_url(url: &str) -> Result<Admin, String> {
        let parsed = parse_url(url).map_err(|e| format!("--ebb: {e}"))?;
        let addr = tokio::net::lookup_host((parsed.host.as_str(), parsed.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("--ebb {url:?}: cannot resolve {}", parsed.host))?;
        Ok(Admin { url: format!("http://{}", parsed.authority), client: AdminClient::new(addr, AdminCredential::None) })
    }

    fn at(addr: SocketAddr) -> Admin {
        Admin { url: format!("http://{addr}"), client: AdminClient::new(addr, AdminCredential::None) }
    }

    async fn services(&self, limit: Duration) -> Result<Vec<ServiceStatus>, String> {
        let status = self.client.clone().answer_within(limit).status().await;
        Ok(status.map_err(|e| format!("GET {}/api/v1/status: {e}", self.url))?.services)
    }

    /// The fleet as seen now.
    pub async fn view(&self, target: SocketAddr) -> Result<FleetSummary, String> {
        Ok(view_of(&self.services(Duration::from_millis(900)).await?, target))
    }

    /// Last second's CPU (% of the allotment) of what `behind` names: the
    /// mean over a service's replicas in service, or one replica's. `None`
    /// while ebb has no sample.
    pub async fn cpu(&self, behind: &Behind) -> Result<Option<f64>, String> {
        Ok(cpu_of(&self.services(Duration::from_millis(900)).await?, behind))
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

/// A service listening on `target`, else a replica whose port it is.
fn behind_of(services: &[ServiceStatus], target: SocketAddr) -> Option<Behind> {
    if let Some(s) = services.iter().find(|s| listens_on(s, target)) {
        return Some(Behind::Balancer { service: s.name.clone() });
    }
    services.iter().find_map(|s| {
        let r = s.replicas.iter().find(|r| r.port == Some(target.port()))?;
        Some(Behind::Replica { service: s.name.clone(), replica: r.id.clone() })
    })
}

fn listens_on(service: &ServiceStatus, target: SocketAddr) -> bool {
    match service.listen.parse::<SocketAddr>() {
        Ok(listen) => listen == target || (listen.ip().is_unspecified() && listen.port() == target.port()),
        Err(_) => false,
    }
}

fn view_of(services: &[ServiceStatus], target: SocketAddr) -> FleetSummary {
    match services.iter().find(|s| listens_on(s, target)) {
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
/// and answers only when a service listens on the target's address.
pub async fn detect(target: SocketAddr, config: &Path) -> Option<Admin> {
    match what_is(target, config).await? {
        (admin, Behind::Balancer { .. }) => Some(admin),
        (_, Behind::Replica { .. }) => None,
    }
}

/// Whether a loopback `target` is one of a local ebb's balancers or
/// replicas, asking the admin API named in `config` (if it parses), then the
/// default one.
pub async fn what_is(target: SocketAddr, config: &Path) -> Option<(Admin, Behind)> {
    if !target.ip().is_loopback() {
        return None;
    }
    let mut candidates = Vec::new();
    if let Ok(text) = crate::config_file::read(config) {
        if let Ok(config) = ebb_core::config::Config::parse(&text, config) {
            candidates.push(config.admin.listen);
        }
    }
    let default = ebb_core::config::AdminConfig::default().listen;
    if !candidates.contains(&default) {
        candidates.push(default);
    }
    for addr in candidates {
        let admin = Admin::at(addr);
        if let Ok(services) = admin.services(Duration::from_millis(300)).await {
            if let Some(behind) = behind_of(&services, target) {
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
    pub fn start(admin: Admin, target: SocketAddr, first: Option<FleetSummary>) -> Poller {
        let latest = Arc::new(Mutex::new(first));
        let shared = latest.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let view = admin.view(target).await.ok();
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

    #[test]
    fn a_target_is_a_balancer_or_a_replica_and_cpu_is_read_for_it() {
        let mut web = svc("web", "127.0.0.1:8080", 3, 2);
        web.replicas = vec![
            replica("web-a", "in_service", 20001, Some(20.0)),
            replica("web-b", "in_service", 20002, Some(30.0)),
            replica("web-c", "starting", 20003, Some(90.0)),
        ];
        let services = [web];
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let balancer = Behind::Balancer { service: "web".into() };
        assert_eq!(behind_of(&services, at("127.0.0.1:8080")), Some(balancer.clone()));
        let one = Behind::Replica { service: "web".into(), replica: "web-b".into() };
        assert_eq!(behind_of(&services, at("127.0.0.1:20002")), Some(one.clone()));
        assert_eq!(behind_of(&services, at("127.0.0.1:9999")), None);
        // The balancer: the mean of the replicas in service (not starting).
        assert_eq!(cpu_of(&services, &balancer), Some(25.0));
        assert_eq!(cpu_of(&services, &one), Some(30.0));
        let unknown = Behind::Replica { service: "web".into(), replica: "web-z".into() };
        assert_eq!(cpu_of(&services, &unknown), None);
    }

    #[test]
    fn the_service_on_the_target_address_wins() {
        let target: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let services = [svc("api", "127.0.0.1:8081", 1, 1), svc("web", "127.0.0.1:8080", 4, 3)];
        assert_eq!(view_of(&services, target), FleetSummary { label: "web".into(), desired: 4, in_service: 3 });
        let any = [svc("web", "0.0.0.0:8080", 2, 2)];
        assert_eq!(view_of(&any, target).label, "web");
        let elsewhere: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(view_of(&services, elsewhere), FleetSummary { label: "fleet".into(), desired: 5, in_service: 4 });
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
