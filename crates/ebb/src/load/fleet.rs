//! Following an ebb fleet while the load runs: its desired and in-service
//! replicas, read once a second from the admin API (`GET /api/v1/status`),
//! so the scaling is visible next to the latency it answers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::http::{get_once, parse_url};

/// The part of the status document `ebb load` reads. Only these fields, each
/// with a default where it may be missing, so a newer ebb still works.
#[derive(Debug, Deserialize)]
struct StatusDoc {
    services: Vec<ServiceDoc>,
}

#[derive(Debug, Deserialize)]
struct ServiceDoc {
    name: String,
    #[serde(default)]
    listen: String,
    #[serde(default)]
    desired: u32,
    #[serde(default)]
    in_service: u32,
}

/// What the live view and the CSV show about the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetView {
    /// The service behind the target, or `fleet` (all services summed) when
    /// none of them listens on the target's address.
    pub label: String,
    pub desired: u32,
    pub in_service: u32,
}

/// A running ebb's admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    pub url: String,
    addr: SocketAddr,
    authority: String,
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
        Ok(Admin { url: format!("http://{}", parsed.authority), addr, authority: parsed.authority })
    }

    fn at(addr: SocketAddr) -> Admin {
        Admin { url: format!("http://{addr}"), addr, authority: addr.to_string() }
    }

    async fn services(&self, limit: Duration) -> Result<Vec<ServiceDoc>, String> {
        let (status, body) = get_once(self.addr, &self.authority, "/api/v1/status", limit).await?;
        if status != 200 {
            return Err(format!("GET {}/api/v1/status answered {status}", self.url));
        }
        let doc: StatusDoc = serde_json::from_slice(&body).map_err(|e| format!("{}/api/v1/status: not an ebb status document ({e})", self.url))?;
        Ok(doc.services)
    }

    /// The fleet as seen now.
    pub async fn view(&self, target: SocketAddr) -> Result<FleetView, String> {
        Ok(view_of(&self.services(Duration::from_millis(900)).await?, target))
    }
}

fn listens_on(service: &ServiceDoc, target: SocketAddr) -> bool {
    match service.listen.parse::<SocketAddr>() {
        Ok(listen) => listen == target || (listen.ip().is_unspecified() && listen.port() == target.port()),
        Err(_) => false,
    }
}

fn view_of(services: &[ServiceDoc], target: SocketAddr) -> FleetView {
    match services.iter().find(|s| listens_on(s, target)) {
        Some(s) => FleetView { label: s.name.clone(), desired: s.desired, in_service: s.in_service },
        None => FleetView {
            label: if services.len() == 1 { services[0].name.clone() } else { "fleet".into() },
            desired: services.iter().map(|s| s.desired).sum(),
            in_service: services.iter().map(|s| s.in_service).sum(),
        },
    }
}

/// Without `--ebb`: is the target one of a local ebb's balancers? Asks the
/// admin API named in `./ebb.toml` (if there is one) and the default one,
/// and answers only when a service listens on the target's address.
pub async fn detect(target: SocketAddr) -> Option<Admin> {
    detect_with(target, Path::new("ebb.toml")).await
}

/// [`detect`], asking the admin API named in `config` (if it parses).
pub async fn detect_with(target: SocketAddr, config: &Path) -> Option<Admin> {
    if !target.ip().is_loopback() {
        return None;
    }
    let mut candidates = Vec::new();
    if let Ok(text) = std::fs::read_to_string(config) {
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
            if services.iter().any(|s| listens_on(s, target)) {
                return Some(admin);
            }
        }
    }
    None
}

/// Polls the admin API once a second until dropped; `latest` holds the
/// last answer (`None` while the admin API does not answer).
pub struct Poller {
    pub latest: Arc<Mutex<Option<FleetView>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    pub fn start(admin: Admin, target: SocketAddr, first: Option<FleetView>) -> Poller {
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

    pub fn get(&self) -> Option<FleetView> {
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

    fn svc(name: &str, listen: &str, desired: u32, in_service: u32) -> ServiceDoc {
        ServiceDoc { name: name.into(), listen: listen.into(), desired, in_service }
    }

    #[test]
    fn the_service_on_the_target_address_wins() {
        let target: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let services = [svc("api", "127.0.0.1:8081", 1, 1), svc("web", "127.0.0.1:8080", 4, 3)];
        assert_eq!(view_of(&services, target), FleetView { label: "web".into(), desired: 4, in_service: 3 });
        let any = [svc("web", "0.0.0.0:8080", 2, 2)];
        assert_eq!(view_of(&any, target).label, "web");
        let elsewhere: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(view_of(&services, elsewhere), FleetView { label: "fleet".into(), desired: 5, in_service: 4 });
    }

    #[test]
    fn the_status_document_is_read_leniently() {
        let doc: StatusDoc = serde_json::from_str(
            r#"{"services":[{"name":"web","listen":"127.0.0.1:8080","desired":2,"in_service":1,"pending":1,"replicas":[]}],"extra":true}"#,
        )
        .unwrap();
        assert_eq!(doc.services[0].in_service, 1);
    }
}
