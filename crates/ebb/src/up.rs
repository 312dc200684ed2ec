//! `ebb up`: start every service's balancer and controller, the admin API,
//! and run until Ctrl-C, SIGTERM or `ebb down`; then drain and stop.
//!
//! Shutdown order keeps every request: balancers stop accepting and finish
//! their in-flight requests first; only then are replicas drained and stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ebb_core::config::Config;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::controller::{self, ServiceContext};
use crate::driver::{Driver, ProcessDriver};
use crate::events::EventLog;
use crate::proxy::{self, ServiceProxy};

/// How many events the in-memory log keeps.
const EVENT_LOG_CAPACITY: usize = 10_000;

/// Binds a listener; a failure is a config error located at its `listen` key.
/// `owner` is `"admin"` or `"service.NAME"`.
async fn bind(config: &Config, addr: std::net::SocketAddr, owner: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; is ebb already running with this config (try `ebb status`)? Otherwise stop the program using it or change this address"
        } else {
            ""
        };
        anyhow::Error::new(config.listen_error(owner, format!("[{owner}] cannot listen on {addr}: {e}{fix}")))
    })
}

/// Runs the fleet described by `config` until a stop is requested.
pub async fn up(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(config.state_dir.join("logs"))
        .with_context(|| format!("cannot create the state directory {}", config.state_dir.display()))?;
    let state_dir = config.state_dir.canonicalize().unwrap_or_else(|_| config.state_dir.clone());

    // The admin API's bearer token: created (mode 0600) at first start.
    let admin_token = Arc::new(admin::AdminToken::load_or_create(&state_dir)?);

    // Bind everything before starting anything: a clash is reported with
    // nothing half-started.
    let admin_listener = bind(&config, config.admin.listen, "admin").await?;
    let mut service_listeners = Vec::new();
    for service in config.services.values() {
        // A worker pool has no balancer, so nothing to bind.
        let listener = match service.kind.has_balancer() {
            true => Some(bind(&config, service.listen, &format!("service.{}", service.name)).await?),
            false => None,
        };
        service_listeners.push((service.clone(), listener));
    }

    let ebb_executable = std::env::current_exe().context("cannot find ebb's own executable for {ebb}")?;
    let driver: Arc<dyn Driver> = Arc::new(ProcessDriver::new(ebb_executable));
    let events = Arc::new(EventLog::new(EVENT_LOG_CAPACITY));
    let stop_requested = CancellationToken::new();
    let proxies_stop = CancellationToken::new();
    let controllers_stop = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let proxies = TaskTracker::new();
    let controllers = TaskTracker::new();

    let mut services = BTreeMap::new();
    let mut longest_drain = Duration::ZERO;
    for (service, listener) in service_listeners {
        longest_drain = longest_drain.max(service.drain_timeout);
        let proxy = ServiceProxy::new(&service.name, service.balance, service.proxy.clone());
        if let Some(listener) = listener {
            let name = service.name.clone();
            let serving = proxy.clone();
            let stop = proxies_stop.clone();
            proxies.spawn(async move {
                if let Err(error) = proxy::serve(listener, serving, stop).await {
                    tracing::error!(service = %name, %error, "Balancer stopped with an error.");
                }
            });
        }
        let handle = controller::spawn_service(
            ServiceContext {
                config: service.clone(),
                driver: driver.clone(),
                proxy,
                events: events.clone(),
                state_dir: state_dir.clone(),
                admin_url: format!("http://{}", config.admin.listen),
            },
            controllers_stop.clone(),
            &controllers,
        );
        let front = match service.kind.has_balancer() {
            true => format!("http://{}", service.listen),
            false => "worker pool, no balancer".to_string(),
        };
        println!(
            "ebb: service {} -> {front} ({} replicas, min {}, max {})",
            service.name, service.replicas.desired, service.replicas.min, service.replicas.max
        );
        services.insert(service.name.clone(), handle);
    }
    proxies.close();
    controllers.close();

    let admin_addr = admin_listener.local_addr()?;
    let admin_state = AdminState { services: Arc::new(services), events, stop_requested: stop_requested.clone(), token: admin_token };
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, admin_stop.clone()));
    println!("ebb: admin API and dashboard on http://{admin_addr}/; state in {}", state_dir.display());
    println!("ebb: `ebb status` shows the fleet, `ebb down` (or Ctrl-C) drains and stops it");

    wait_for_stop(&stop_requested).await;
    println!("ebb: stopping: balancers finish in-flight requests, then replicas drain and stop");

    proxies_stop.cancel();
    if tokio::time::timeout(longest_drain + Duration::from_secs(1), proxies.wait()).await.is_err() {
        tracing::warn!(?longest_drain, "Some client connections were still open after the drain timeout; closing them.");
    }
    controllers_stop.cancel();
    controllers.wait().await;
    admin_stop.cancel();
    let _ = admin_task.await;
    println!("ebb: stopped");
    Ok(())
}

async fn wait_for_stop(stop_requested: &CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop_requested.cancelled() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
