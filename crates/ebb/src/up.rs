//! `ebb up`: start every service's balancer and controller, the admin API,
//! and run until Ctrl-C or `ebb down` (drain and stop everything), or
//! SIGTERM or a takeover (stop ebb only, replicas keep running:
//! `shutdown.rs`, `takeover.rs`).
//!
//! Shutdown order keeps every request: balancers stop accepting and finish
//! their in-flight requests first; only then are replicas drained and stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ebb_core::config::{Config, DriverKind, ServiceConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::apply::{fill_connection_caps, Bound, Leftovers, Parts, Running};
use crate::driver::{DockerDriver, Driver, Engine, ProcessDriver, SwarmDriver};
use crate::events::EventLog;
use crate::metrics::host::HostMonitor;
use crate::state::StateStore;

/// How many events the in-memory log keeps.
const EVENT_LOG_CAPACITY: usize = 10_000;

/// Listening sockets handed over by a supervisor (systemd socket
/// activation: `LISTEN_PID`, `LISTEN_FDS`, fds from 3). The supervisor keeps
/// them open while ebb restarts, so clients queue in the backlog instead of
/// being refused. Each is used by the listener configured at its address.
pub(crate) fn inherited_listeners() -> &'static std::sync::Mutex<Vec<std::net::TcpListener>> {
    static INHERITED: std::sync::OnceLock<std::sync::Mutex<Vec<std::net::TcpListener>>> = std::sync::OnceLock::new();
    INHERITED.get_or_init(|| {
        let for_us = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
        let mut listeners = Vec::new();
        if for_us {
            for fd in 3..3 + count {
                use std::os::fd::FromRawFd;
                // SAFETY: the supervisor passed these fds to this process
                // (LISTEN_PID is ours) and nothing else in ebb uses them.
                let passed = unsafe { std::net::TcpListener::from_raw_fd(fd) };
                // A duplicate is close-on-exec, so replicas never inherit
                // the listening socket; the original fd is closed.
                match passed.try_clone().and_then(|l| l.local_addr().map(|addr| (l, addr))) {
                    Ok((listener, addr)) => {
                        tracing::info!(%addr, fd, "Using a listening socket passed by the supervisor.");
                        listeners.push(listener);
                    }
                    Err(error) => tracing::warn!(fd, %error, "Ignoring a passed fd that is not a TCP listener."),
                }
            }
        }
        std::sync::Mutex::new(listeners)
    })
}

/// Binds a listener (or takes the one the supervisor passed for that
/// address); a failure is a config error located at its `listen` key.
/// `owner` is `"admin"` or `"service.NAME"`.
async fn bind(config: &Config, addr: std::net::SocketAddr, owner: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let passed = {
        let mut inherited = inherited_listeners().lock().unwrap_or_else(|p| p.into_inner());
        inherited.iter().position(|l| l.local_addr().ok() == Some(addr)).map(|i| inherited.swap_remove(i))
    };
    if let Some(listener) = passed {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        crate::takeover::keep(&listener);
        return Ok(listener);
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; is ebb already running with this config (try `ebb status`)? Otherwise stop the program using it or change this address"
        } else {
            ""
        };
        anyhow::Error::new(config.listen_error(owner, format!("[{owner}] cannot listen on {addr}: {e}{fix}")))
    })?;
    crate::takeover::keep(&listener);
    Ok(listener)
}

/// Raises the open-file limit as far as it goes and says so; returns the
/// limit, from which each balancer without a `max_connections` gets its
/// share (see `fd_limit`, `apply::fill_connection_caps`).
fn raise_descriptor_limit() -> u64 {
    match crate::fd_limit::raise() {
        Ok(limit) => {
            if limit.soft > limit.inherited {
                tracing::info!(
                    from = limit.inherited,
                    to = limit.soft,
                    "Raised the open-file limit (RLIMIT_NOFILE) to its hard limit."
                );
            } else {
                tracing::info!(limit = limit.soft, "Open-file limit (RLIMIT_NOFILE).");
            }
            limit.soft
        }
        Err(error) => {
            tracing::warn!(%error, "Could not read or raise the open-file limit; assuming 1024.");
            1024
        }
    }
}

/// Runs the fleet described by `config` until a stop is requested.
pub async fn up(mut config: Config, options: crate::carry_over::UpOptions) -> anyhow::Result<()> {
    let open_file_limit = raise_descriptor_limit();
    fill_connection_caps(&mut config, open_file_limit);
    for service in config.services.values().filter(|s| s.kind.has_balancer() && s.own_listen) {
        let max = service.proxy.max_connections.unwrap_or_default();
        tracing::info!(service = %service.name, max_connections = max, open_file_limit, "Client connection cap.");
    }
    for listener in config.listeners.values() {
        let max = listener.proxy.max_connections.unwrap_or_default();
        tracing::info!(listener = %listener.name, max_connections = max, open_file_limit, "Client connection cap.");
    }
    prepare_state_dir(&config.state_dir)?;
    let state_dir = config.state_dir.canonicalize().unwrap_or_else(|_| config.state_dir.clone());

    // What survives restarts. A state file ebb cannot read is refused here,
    // before anything is bound or started, and left as it is.
    // `--takeover`: the running ebb's sockets first, then its lock.
    let handed = crate::takeover::before_store(&config, &state_dir, options.takeover).await?;
    let (store, mut restored) = StateStore::open(&state_dir, EVENT_LOG_CAPACITY)?;
    let desired_at_start = crate::carry_over::desired_at_start(&config, &mut restored, options.fresh);

    // The admin API's bearer token: created (mode 0600) at first start.
    let admin_token = Arc::new(admin::AdminToken::load_or_create(&state_dir)?);

    // Certificate files are read before anything is bound: a bad file is
    // an error at its key in ebb.toml, an expired one a warning.
    let (tls_states, tls_warnings) = crate::tls::check_config(&config)?;
    for warning in tls_warnings {
        tracing::warn!("{warning}");
        eprintln!("ebb: {warning}");
    }

    // Access log files are opened before anything is bound, too.
    crate::proxy::access_log::check(&config).map_err(anyhow::Error::msg)?;

    // Bind everything before starting anything: a clash is reported with
    // nothing half-started.
    let admin_listener = bind(&config, config.admin.listen, "admin").await?;
    let mut bound = Bound { services: BTreeMap::new(), listeners: BTreeMap::new(), tls: tls_states.clone() };
    for service in config.services.values() {
        // A worker pool has no balancer, so nothing to bind; a service
        // reached only through [listener.NAME] routes has no listen.
        if service.kind.has_balancer() && service.own_listen {
            let socket = bind(&config, service.listen, &format!("service.{}", service.name)).await?;
            bound.services.insert(service.name.clone(), socket);
        }
    }
    for listener in config.listeners.values() {
        let main = bind(&config, listener.listen, &format!("listener.{}", listener.name)).await?;
        let http = match listener.http {
            Some(addr) => Some(bind(&config, addr, &format!("listener.{}.http", listener.name)).await?),
            None => None,
        };
        bound.listeners.insert(listener.name.clone(), (main, http));
    }
    crate::takeover::close_unclaimed();

    for warning in host_warnings(&config) {
        tracing::warn!("{warning}");
        eprintln!("ebb: warning: {warning}");
    }

    let ebb_executable = std::env::current_exe().context("cannot find ebb's own executable for {ebb}")?;
    let (drivers, docker_gateway) = drivers_for(&config, ebb_executable).await?;
    // Containers cannot dial ebb's loopback admin address; they protect
    // themselves through the replica gate on the Docker bridge instead.
    let replica_gate = match docker_gateway {
        Some(gateway) => open_replica_gate(admin_listener.local_addr()?, gateway).await,
        None => {
            if config.services.values().any(|s| s.driver == DriverKind::Docker) {
                tracing::warn!(
                    "The Docker engine has no default bridge network with a gateway address: containers cannot reach ebb to protect themselves (`ebb protect` from the host still works)."
                );
            }
            None
        }
    };
    let events =
        Arc::new(EventLog::with_store(EVENT_LOG_CAPACITY, store.clone(), std::mem::take(&mut restored.events)));
    crate::takeover::record(&events, &handed);
    crate::carry_over::record_fresh(&events, &desired_at_start);
    let stop_requested = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let parts = Parts {
        state_dir: state_dir.clone(),
        store: store.clone(),
        events: events.clone(),
        host: Arc::new(HostMonitor::default()),
        drivers,
        replica_gate_url: replica_gate.as_ref().map(|g| match g.listener.is_none() && config.admin.tls.is_some() {
            // No gate of its own: the admin API answers, over TLS with [admin] tls.
            true => g.url.replacen("http://", "https://", 1),
            false => g.url.clone(),
        }),
        admin_url: format!("{}://{}", if config.admin.tls.is_some() { "https" } else { "http" }, config.admin.listen),
        challenges: Arc::new(crate::acme::Challenges::default()),
        proxies: TaskTracker::new(),
        proxies_stop: CancellationToken::new(),
        controllers: TaskTracker::new(),
        controllers_stop: CancellationToken::new(),
        restored: Leftovers { services: restored.services, replicas: restored.replicas, history: restored.history },
        open_file_limit,
        desired_at_start,
    };
    // One reading of the host a second, for every service whose replicas
    // run here.
    parts.controllers.spawn(parts.host.clone().run(parts.controllers_stop.clone()));
    let config_path = config.path.canonicalize().unwrap_or_else(|_| config.path.clone());
    // Plans name the file applied last by its full path.
    config.path = config_path.clone();
    let running = Arc::new(Running::start(config.clone(), parts, bound));
    warn_about_leftovers(&config, &running).await;

    let cluster_stop = CancellationToken::new();
    let cluster = start_cluster(&config, &state_dir, &events, &running.services, cluster_stop.clone()).await?;
    let node_drain = start_node_drain(&state_dir, &events, &running.services, cluster_stop.clone());
    let admin_addr = admin_listener.local_addr()?;
    let admin_state = AdminState {
        services: running.services.clone(),
        events: events.clone(),
        stop_requested: stop_requested.clone(),
        token: admin_token,
        config_path: config_path.clone(),
        store: store.clone(),
        listeners: running.listeners.clone(),
        running: running.clone(),
        cluster: cluster.as_ref().map(|(board, _)| board.clone()),
        tls: crate::tls::admin_state(&tls_states).cloned(),
    };
    let gate_task = replica_gate
        .and_then(|gate| gate.listener)
        .map(|listener| tokio::spawn(admin::serve_replica_gate(listener, admin_state.clone(), admin_stop.clone())));
    let admin_tls = admin_state.tls.clone();
    let admin_scheme = if admin_tls.is_some() { "https" } else { "http" };
    // The admin certificate's files are watched as a listener's are.
    let admin_watch =
        admin_tls.clone().map(|tls| tokio::spawn(crate::tls::watch(vec![tls], Some(events), admin_stop.clone())));
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, admin_tls, admin_stop.clone()));
    println!(
        "ebb: admin API and dashboard on {admin_scheme}://{admin_addr}/ (`ebb dashboard` prints a login link); state in {}",
        state_dir.display()
    );
    println!("ebb: `ebb status` shows the fleet, `ebb apply` changes it in place, `ebb down` (or Ctrl-C) drains and stops it; SIGTERM stops ebb only (replicas keep running for the next `ebb up`)");
    let reload = tokio::spawn(apply_on_sighup(running.clone(), config_path));
    let tidy_stop = tokio_util::sync::CancellationToken::new();
    let tidy = tokio::spawn(crate::replica_logs::keep_tidy(running.clone(), state_dir.clone(), tidy_stop.clone()));

    let takeover = crate::takeover::Server::open(&state_dir);
    let taken_over = takeover.as_ref().map(|t| t.taken_over.clone()).unwrap_or_default();
    let stop = crate::shutdown::wait(&stop_requested, &taken_over).await;
    reload.abort();
    cluster_stop.cancel();
    if let Some((_, task)) = cluster {
        let _ = task.await;
    }
    let _ = node_drain.await;
    tidy_stop.cancel();
    let _ = tidy.await;
    let successor = takeover.map(|t| t.close());
    stop.prepare();
    println!("{}", stop.announce());

    let longest_drain = running.longest_drain().await;
    let (proxies, proxies_stop, controllers, controllers_stop) = running.shutdown_handles().await;
    proxies_stop.cancel();
    proxies.close();
    if tokio::time::timeout(longest_drain + Duration::from_secs(1), proxies.wait()).await.is_err() {
        tracing::warn!(
            ?longest_drain,
            "Some client connections were still open after the drain timeout; closing them."
        );
    }
    controllers_stop.cancel();
    controllers.close();
    controllers.wait().await;
    admin_stop.cancel();
    let _ = admin_task.await;
    if let Some(task) = gate_task {
        let _ = task.await;
    }
    if let Some(task) = admin_watch {
        let _ = task.await;
    }
    store.close().await;
    crate::proxy::access_log::flush_all();
    println!("{}", stop.farewell(successor.flatten()));
    Ok(())
}

/// `[cluster]`: the task that adds and removes Swarm nodes, and the board
/// its snapshots go to (for status).
async fn start_cluster(
    config: &Config,
    state_dir: &std::path::Path,
    events: &Arc<EventLog>,
    services: &Arc<crate::apply::Services>,
    stop: CancellationToken,
) -> anyhow::Result<Option<(Arc<crate::cluster::ClusterBoard>, tokio::task::JoinHandle<()>)>> {
    let Some(cluster) = config.cluster.clone() else { return Ok(None) };
    let engine =
        Engine::connect().await.map_err(|e| anyhow::anyhow!("[cluster] needs the swarm's manager, but {e}"))?;
    let board = Arc::new(crate::cluster::ClusterBoard::default());
    let workdir = config.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let task = crate::cluster::ClusterTask {
        config: cluster,
        docker: engine.docker,
        state_dir: state_dir.to_path_buf(),
        workdir: workdir.to_path_buf(),
        events: events.clone(),
        board: board.clone(),
        services: services.clone(),
    };
    Ok(Some((board, tokio::spawn(task.run(stop)))))
}

/// The task that empties Swarm nodes labelled `ebb.drain`, replacement
/// first (`cluster/node_drain.rs`); idle while no Swarm service runs.
fn start_node_drain(
    state_dir: &std::path::Path,
    events: &Arc<EventLog>,
    services: &Arc<crate::apply::Services>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let task = crate::cluster::node_drain::NodeDrainTask {
        state_dir: state_dir.to_path_buf(),
        events: events.clone(),
        services: services.clone(),
    };
    tokio::spawn(task.run(stop))
}

/// SIGHUP: `ebb apply --yes` of the file ebb was started with. What it
/// did, or why it changed nothing, goes to the log and stdout.
async fn apply_on_sighup(running: Arc<Running>, path: std::path::PathBuf) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    while hangups.recv().await.is_some() {
        tracing::info!(file = %path.display(), "SIGHUP: applying the config file.");
        let text = match crate::config_file::read(&path) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(%error, "SIGHUP: cannot read the config file; nothing changed.");
                eprintln!("ebb: SIGHUP: {error}; nothing changed");
                continue;
            }
        };
        match running.apply(&path, &text).await {
            Ok(answer) if answer.changes.is_empty() => {
                println!("ebb: SIGHUP: {} has no changes to apply", path.display())
            }
            Ok(answer) => {
                for change in &answer.changes {
                    println!("ebb: SIGHUP: {}", change.text);
                }
                for step in &answer.steps {
                    println!("ebb: SIGHUP: {step}");
                }
            }
            Err(error) => {
                tracing::error!(%error, "SIGHUP: the config file was not applied; nothing changed.");
                eprintln!("ebb: SIGHUP: not applied, nothing changed: {error}");
            }
        }
    }
}

/// Replicas of services no longer in the config: ebb does not know how
/// they should end, so it leaves them running, keeps their records (put
/// the service back — `ebb apply` — and they are adopted), and says where
/// they are.
async fn warn_about_leftovers(config: &Config, running: &Running) {
    for (name, replicas) in running.leftover_replicas().await {
        let list: Vec<String> = replicas.iter().map(|r| format!("{} ({}, {})", r.id, r.addr, r.handle)).collect();
        tracing::warn!(service = %name, replicas = %list.join(", "),
            "The previous run left replicas of a service that is no longer in the config; they are left running. Put the service back to adopt them, or stop them by hand.");
        eprintln!(
            "ebb: warning: service {name} is no longer in {}, but the previous run left {} replica{} of it running: {}; they are left as they are (put the service back and `ebb apply` to adopt them, or stop them by hand)",
            config.path.display(),
            replicas.len(),
            if replicas.len() == 1 { "" } else { "s" },
            list.join(", ")
        );
    }
}

/// What `ebb up` and `ebb validate` warn about this host: worker pools
/// that crowd the web tier, web services that cannot scale to their max.
pub fn host_warnings(config: &Config) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut warnings: Vec<String> = crowded_cores(config, cores).into_iter().collect();
    warnings.extend(web_services_beyond_the_host(config, cores));
    warnings
}

/// Web services on this host (process and docker drivers) whose `max ×
/// cpu` is more than its CPUs: past the host, more replicas add no
/// capacity. A warning, not an error: the user may mean it (a max for
/// another host, cpu as a share rather than a reservation).
fn web_services_beyond_the_host(config: &Config, cores: usize) -> Vec<String> {
    config
        .services
        .values()
        .filter(|s| s.driver != DriverKind::Swarm && s.kind.has_balancer())
        .filter(|s| f64::from(s.replicas.bounds.max) * s.cpu > cores as f64 + 1e-9)
        .map(|s| {
            let fits = ((cores as f64 / s.cpu) + 1e-9).floor().max(1.0) as u32;
            format!(
                "service {} may ask for {} CPUs at max (replicas.max {} × cpu {}) on this host of {cores}: past about {fits} replicas, more local replicas add no capacity, and ebb holds scale-out when the host is full. Lower max to {fits}, lower cpu per replica, or run it on Swarm (docs/policies.md, \"The host is a level of capacity\")",
                s.name,
                f64::from(s.replicas.bounds.max) * s.cpu,
                s.replicas.bounds.max,
                s.cpu,
            )
        })
        .collect()
}

/// Creates the state directory and its `logs/` private (`0700`): they hold
/// the admin token, the replicas' own tokens and every replica's output.
/// A directory that exists is not changed, but one that other users may
/// enter is reported. A `logs/` ebb cannot write is not fatal: replicas
/// then write to ebb's stderr (the process driver says so).
fn prepare_state_dir(state_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let mode = std::fs::metadata(state_dir).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o700);
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %state_dir.display(),
            mode = format!("{mode:04o}"),
            "The state directory is open to other users; `chmod 700` it (ebb creates it 0700)."
        );
    }
    let logs = state_dir.join("logs");
    if let Err(error) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&logs) {
        tracing::warn!(dir = %logs.display(), %error, "Cannot create the replicas' log directory.");
    }
    Ok(())
}

/// Worker pools that can keep every core of this machine busy while a web
/// service runs beside them on it: even at idle CPU priority that
/// multiplies the web tier's p99 (docs/benchmarks.md, S4). `None` when the
/// fleet leaves a core free, or has no web service on this machine.
fn crowded_cores(config: &Config, cores: usize) -> Option<String> {
    let local = |s: &&ServiceConfig| s.driver != DriverKind::Swarm;
    let web = config.services.values().filter(local).any(|s| s.kind.has_balancer());
    let pools: Vec<&ServiceConfig> =
        config.services.values().filter(local).filter(|s| !s.kind.has_balancer()).collect();
    let cpu: f64 = pools.iter().map(|s| f64::from(s.replicas.bounds.max) * s.cpu).sum();
    if !web || pools.is_empty() || cpu < cores as f64 {
        return None;
    }
    let names: Vec<&str> = pools.iter().map(|s| s.name.as_str()).collect();
    Some(format!(
        "worker pool{} {} may use {} cores at max (replicas.max × cpu) on this machine of {cores}; when every core is busy, the web services' p99 grows several-fold even at idle priority. Keep the pools' max below {cores} cores to leave one to the web tier (docs/benchmarks.md, S4)",
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        cpu
    ))
}

/// Where containers reach ebb to protect themselves.
struct ReplicaGate {
    /// `EBB_ADMIN_URL` for a docker replica.
    url: String,
    /// The gate's own listener; `None` when the admin API itself already
    /// listens on every address (containers reach it directly).
    listener: Option<tokio::net::TcpListener>,
}

/// Binds the replica gate on the Docker bridge's gateway address, at the
/// admin API's port so the URL stays the same across restarts (adopted
/// containers keep the environment they were created with). Failing to
/// bind is not fatal: the fleet runs, only self-protection from inside a
/// container does not, and the log says so.
async fn open_replica_gate(admin: std::net::SocketAddr, gateway: std::net::IpAddr) -> Option<ReplicaGate> {
    let at = std::net::SocketAddr::new(gateway, admin.port());
    let url = format!("http://{at}");
    if admin.ip().is_unspecified() {
        return Some(ReplicaGate { url, listener: None });
    }
    match tokio::net::TcpListener::bind(at).await {
        Ok(listener) => {
            tracing::info!(%at, "Replica gate for containers: POST /api/v1/replicas/{{id}}/protect with the replica's own token.");
            Some(ReplicaGate { url, listener: Some(listener) })
        }
        Err(error) => {
            tracing::warn!(
                %at, %error,
                "Cannot open the replica gate: containers cannot protect themselves (`ebb protect` from the host still works)."
            );
            None
        }
    }
}

/// One driver per kind the config uses, and the Docker bridge's gateway
/// address when a service runs on the docker driver. A container driver
/// needs the Docker engine to answer and every image to be there: checked
/// here, after the listeners are bound and before any replica starts, so a
/// missing engine or image is reported with nothing half-started.
async fn drivers_for(
    config: &Config,
    ebb_executable: std::path::PathBuf,
) -> anyhow::Result<(BTreeMap<DriverKind, Arc<dyn Driver>>, Option<std::net::IpAddr>)> {
    let mut drivers: BTreeMap<DriverKind, Arc<dyn Driver>> = BTreeMap::new();
    let process = ProcessDriver::new(ebb_executable);
    // Control groups only when some service runs local processes.
    let process = match config.services.values().any(|s| s.driver == DriverKind::Process) {
        true => process.with_cgroups(&config.state_dir),
        false => process,
    };
    drivers.insert(DriverKind::Process, Arc::new(process));
    let containers: Vec<&ServiceConfig> = config.services.values().filter(|s| s.driver.is_container()).collect();
    if containers.is_empty() {
        return Ok((drivers, None));
    }
    let names = |services: &[&ServiceConfig]| {
        services
            .iter()
            .map(|s| format!("{} (driver = \"{}\")", s.name, s.driver.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let engine =
        Engine::connect().await.map_err(|e| anyhow::anyhow!("service {} needs Docker, but {e}", names(&containers)))?;
    // Swarm first: without a swarm, whether the image is here is moot.
    let swarmed: Vec<&ServiceConfig> = containers.iter().copied().filter(|s| s.driver == DriverKind::Swarm).collect();
    if !swarmed.is_empty() {
        let swarm = SwarmDriver::new(engine.clone())
            .await
            .map_err(|e| anyhow::anyhow!("service {} needs a swarm, but {e}", names(&swarmed)))?;
        drivers.insert(DriverKind::Swarm, Arc::new(swarm));
    }
    // The image on this engine: for a swarm, a task may run on another
    // node, which must have it too (Swarm's rejection says so per task).
    for service in &containers {
        if let Some(container) = &service.container {
            engine.check_image(&container.image).await.map_err(|e| anyhow::anyhow!("service {}: {e}", service.name))?;
            engine
                .check_networks(&container.options.networks)
                .await
                .map_err(|e| anyhow::anyhow!("service {}: {e}", service.name))?;
        }
    }
    let mut gateway = None;
    if containers.iter().any(|s| s.driver == DriverKind::Docker) {
        gateway = engine.bridge_gateway().await;
        drivers.insert(DriverKind::Docker, Arc::new(DockerDriver::new(engine)));
    }
    Ok((drivers, gateway))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(worker_max: u32, worker_cpu: &str, with_web: bool) -> Config {
        let web = if with_web { "[service.web]\ncommand = \"true\"\nlisten = \"127.0.0.1:18999\"\n" } else { "" };
        let text = format!(
            "{web}[service.scraper]\nkind = \"worker\"\ncommand = \"true\"\ncpu = {worker_cpu}\nreplicas = {{ min = 1, max = {worker_max}, desired = 1 }}\n"
        );
        Config::parse(&text, std::path::Path::new("ebb.toml")).unwrap()
    }

    #[test]
    fn a_worker_pool_that_can_fill_every_core_beside_a_web_tier_is_flagged() {
        let warning = crowded_cores(&config(3, "1.0", true), 2).expect("3 cores of work on 2");
        assert!(
            warning.contains("worker pool scraper may use 3 cores") && warning.contains("machine of 2"),
            "{warning}"
        );
        assert!(crowded_cores(&config(2, "1.0", true), 2).is_some(), "every core busy");
        // A core left free, or no web tier to protect: nothing to say.
        assert_eq!(crowded_cores(&config(1, "1.0", true), 2), None);
        assert_eq!(crowded_cores(&config(3, "0.5", true), 2), None);
        assert_eq!(crowded_cores(&config(8, "1.0", false), 2), None);
    }

    #[test]
    fn a_web_service_that_can_outgrow_the_host_is_flagged_with_the_numbers() {
        let text = "[service.api]\ncommand = \"app\"\nlisten = \"127.0.0.1:18081\"\ncpu = 0.25\nreplicas = { min = 1, max = 20, desired = 1 }\n";
        let config = Config::parse(text, std::path::Path::new("ebb.toml")).unwrap();
        let warnings = web_services_beyond_the_host(&config, 2);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("service api may ask for 5 CPUs at max (replicas.max 20 × cpu 0.25) on this host of 2: past about 8 replicas"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("Lower max to 8"), "{}", warnings[0]);
        assert!(web_services_beyond_the_host(&config, 8).is_empty(), "5 CPUs fit on 8");
    }
}
