//! The replicas' lifecycle as the controller carries it out: launching,
//! watching (probe loop, exit), and retiring (out of the rotation, drain,
//! then stop), and what the driver reports back about each.
//!
//! **Architecture invariant:** nothing here waits for the driver. Starts,
//! drains and stops run as tasks that report back through the inbox.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_core::config::HealthConfig;
use ebb_core::health::{Health, HealthTracker};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deploy::VersionSpec;
use super::input::Input;
use super::publish::Published;
use super::replicas::{Replica, ReplicaSet};
use super::{probe, Shared};
use crate::driver::{ContainerSpec, Driver, DriverError, ExitReason, ReplicaSpec, RunningReplica};
use crate::events::{EventKind, NewEvent};
use crate::proxy::Backend;
use crate::status::ReplicaState;
use ebb_core::fleet::Routes;

/// The service's replicas and what launches, watches and retires them.
pub(super) struct Fleet {
    pub(super) replicas: ReplicaSet,
    /// The routable set last handed to the balancer: retiring changes it
    /// before anything else happens.
    pub(super) published: Published,
    driver: Arc<dyn Driver>,
    /// Where tasks report back to the controller's loop.
    inbox: mpsc::UnboundedSender<Input>,
    /// Starts, drains, stops and watches, waited for at shutdown.
    tasks: TaskTracker,
    state_dir: PathBuf,
    /// The admin API's base URL, given to replicas (`EBB_ADMIN_URL`).
    admin_url: String,
    /// The health check in force, watched by every probe loop (`ebb apply`
    /// changes it for the next probe).
    health: watch::Sender<HealthConfig>,
}

/// A replica that failed (exited on its own, or failed its health checks):
/// what the deploy and crash-loop backoff are told before it is replaced.
pub(super) struct Failure {
    pub(super) id: String,
    /// What happened to it, for a deploy's rollback reason.
    pub(super) cause: String,
    /// It never reached service: it counts toward crash-loop backoff.
    pub(super) never_served: bool,
}

impl Fleet {
    pub(super) fn new(
        origin: Instant,
        driver: Arc<dyn Driver>,
        inbox: mpsc::UnboundedSender<Input>,
        state_dir: PathBuf,
        admin_url: String,
        health: HealthConfig,
    ) -> Self {
        Fleet {
            health: watch::Sender::new(health),
            replicas: ReplicaSet::new(origin),
            published: Published::default(),
            driver,
            inbox,
            tasks: TaskTracker::new(),
            state_dir,
            admin_url,
        }
    }

    /// `ebb apply`: the next probe of every replica uses `health`, and
    /// every replica's tracker the new thresholds.
    pub(super) fn reconfigure_health(&mut self, health: &HealthConfig) {
        for replica in self.replicas.iter_mut() {
            replica.health.set_thresholds(health.healthy_threshold, health.unhealthy_threshold);
        }
        self.health.send_replace(health.clone());
    }

    pub(super) fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    pub(super) fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    pub(super) fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// Hands the balancer the routable set, when it changed.
    pub(super) fn publish(&mut self, ctx: &Shared, routes: Routes) {
        self.published.publish(&ctx.proxy, &self.replicas, &routes);
    }

    /// Suspends (`frozen`) or resumes every replica in service whose
    /// state differs (scale to zero's `suspend` mode); a replica still
    /// starting is frozen once in service. Out of the rotation before it
    /// is frozen; back in once the resume is asked for (a request sent
    /// meanwhile waits in its socket's backlog).
    pub(super) fn freeze(&mut self, ctx: &Shared, routes: Routes, frozen: bool) {
        let mut changed = Vec::new();
        for r in self.replicas.iter_mut() {
            // Warm pool members are frozen and thawed on their own rules.
            if r.pooled || r.suspended == frozen || r.stopping || r.state != ReplicaState::InService {
                continue;
            }
            let Some(running) = r.running.clone() else { continue };
            r.suspended = frozen;
            r.pause.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            changed.push((r.id.clone(), running));
        }
        if changed.is_empty() {
            return;
        }
        self.publish(ctx, routes);
        for (id, running) in changed {
            let driver = self.driver.clone();
            let inbox = self.inbox.clone();
            let (verb, service) = (if frozen { "suspended" } else { "resumed" }, ctx.name.clone());
            self.tasks.spawn(async move {
                let result = match frozen {
                    true => driver.suspend(&running).await,
                    false => driver.resume(&running).await,
                };
                match result {
                    Ok(()) => tracing::info!(service, replica = %id, pid = ?running.pid, "Replica {verb}."),
                    Err(error) => {
                        let _ = inbox.send(Input::FreezeFailed { replica: id, error });
                    }
                }
            });
        }
    }

    /// Suspends a warm pool member that passed its health checks: out of
    /// the probe loop's sight first; `Input::PoolFrozen` reports it done.
    pub(super) fn suspend_pooled(&mut self, id: &str) {
        let Some(r) = self.replicas.get_mut(id) else { return };
        let Some(running) = r.running.clone().filter(|_| r.pooled && !r.suspended && !r.stopping) else { return };
        // Taken here, not in the task, so that a take right after waits.
        let Ok(turn) = r.freezing.clone().try_lock_owned() else { return };
        r.suspended = true;
        r.pause.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (driver, inbox, replica) = (self.driver.clone(), self.inbox.clone(), id.to_string());
        self.tasks.spawn(async move {
            let _turn = turn;
            let begun = Instant::now();
            let _ = match driver.suspend(&running).await {
                Ok(()) => inbox.send(Input::PoolFrozen { replica, suspended: true, took: begun.elapsed() }),
                Err(error) => inbox.send(Input::FreezeFailed { replica, error }),
            };
        });
    }

    /// A scale-out takes a warm pool member: it leaves the pool and is
    /// capacity at once; a suspended one is resumed and back in the
    /// rotation as soon as the resume is asked for (a request sent
    /// meanwhile waits in its socket's backlog). Returns whether a resume
    /// was asked for (`Input::PoolFrozen` reports it done).
    pub(super) fn take_from_pool(&mut self, ctx: &Shared, routes: Routes, id: &str) -> bool {
        let Some(r) = self.replicas.get_mut(id) else { return false };
        if !r.pooled {
            return false;
        }
        r.pooled = false;
        let resume = match (r.suspended, r.running.clone()) {
            (true, Some(running)) => {
                r.suspended = false;
                r.pause.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(running)
            }
            _ => None,
        };
        // Taken now, in order: if its suspend is still under way, the
        // resume waits for it.
        let turn = r.freezing.clone().try_lock_owned();
        let lock = r.freezing.clone();
        self.publish(ctx, routes);
        let Some(running) = resume else { return false };
        let (driver, inbox, replica) = (self.driver.clone(), self.inbox.clone(), id.to_string());
        self.tasks.spawn(async move {
            let _turn = match turn {
                Ok(turn) => turn,
                Err(_) => lock.lock_owned().await,
            };
            let begun = Instant::now();
            let _ = match driver.resume(&running).await {
                Ok(()) => inbox.send(Input::PoolFrozen { replica, suspended: false, took: begun.elapsed() }),
                Err(error) => inbox.send(Input::FreezeFailed { replica, error }),
            };
        });
        true
    }

    /// Launches one replica of `version`, running `spec`; into the warm
    /// pool when `pooled`.
    pub(super) fn launch(&mut self, ctx: &Shared, version: u64, spec: &VersionSpec, pooled: bool) {
        let id = format!("{}-{}", ctx.name, random_suffix());
        let token = format!("{:032x}", rand::random::<u128>());
        let mut env = spec.env.clone();
        env.insert("EBB_ADMIN_URL".into(), self.admin_url.clone());
        env.insert("EBB_REPLICA_TOKEN".into(), token.clone());
        self.replicas.set_token(&id, token);
        let spec = ReplicaSpec {
            service: ctx.name.clone(),
            replica_id: id.clone(),
            version,
            command: spec.command.clone(),
            env,
            state_dir: self.state_dir.clone(),
            log_path: self.state_dir.join("logs").join(format!("{id}.log")),
            container: ContainerSpec::from_config(&ctx.config, spec.image.as_deref(), &spec.options),
            ports: ctx.config.ports.clone(),
            limits: Some(crate::driver::cgroup::Limits {
                cpus: ctx.config.cpu_quota.then_some(ctx.config.cpu),
                memory: ctx.config.memory,
            }),
        };
        let health = HealthTracker::new(ctx.config.health.healthy_threshold, ctx.config.health.unhealthy_threshold);
        self.replicas.push(Replica {
            pooled,
            ..Replica::new(
                id.clone(),
                version,
                Instant::now(),
                crate::clock::unix_ms(std::time::SystemTime::now()),
                health,
            )
        });
        let driver = self.driver.clone();
        let inbox = self.inbox.clone();
        self.tasks.spawn(async move {
            let result = driver.start(&spec).await;
            let _ = inbox.send(Input::Started { replica: id, result });
        });
    }

    /// Takes a replica out of the rotation, lets its in-flight requests
    /// finish (up to `drain_timeout`), then stops it. Idempotent.
    pub(super) fn retire(&mut self, ctx: &Shared, routes: Routes, id: &str, why: &str) {
        let drain_timeout = ctx.config.drain_timeout;
        let stop_timeout = ctx.config.stop_timeout;
        let Some(r) = self.replicas.get_mut(id) else { return };
        if r.stopping {
            return;
        }
        let Some(running) = r.running.clone() else {
            // Still launching: on_started will see it is no longer wanted.
            r.stopping = true;
            return;
        };
        r.stopping = true;
        if r.state != ReplicaState::Failed {
            r.state = ReplicaState::Draining;
        }
        let backend = r.backend.clone();
        let in_flight = backend.as_ref().map(|b| b.in_flight()).unwrap_or(0);
        let suspended = std::mem::replace(&mut r.suspended, false);
        ctx.record(
            NewEvent::new(
                &ctx.name,
                EventKind::ReplicaDraining,
                match backend.is_some() {
                    true => format!(
                        "leaving the rotation ({why}); {in_flight} requests in flight, drain timeout {}",
                        humantime::format_duration(drain_timeout)
                    ),
                    // A worker has no balancer: nothing to leave, only stop.
                    false => format!("stopping ({why})"),
                },
            )
            .replica(id),
        );
        // Out of the rotation before anything else happens.
        self.publish(ctx, routes);
        let driver = self.driver.clone();
        let inbox = self.inbox.clone();
        let replica = id.to_string();
        self.tasks.spawn(async move {
            if suspended {
                // Thawed first, so that it can take its stop signal.
                if let Err(error) = driver.resume(&running).await {
                    tracing::warn!(%error, "Could not resume a suspended replica before stopping it.");
                }
            }
            if let Some(backend) = backend {
                let deadline = Instant::now() + drain_timeout;
                while backend.in_flight() > 0 && Instant::now() < deadline && !running.has_exited() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Close the balancer's idle keep-alive connections to it
                // before it is signalled, rather than let it reset them.
                backend.close_idle();
            }
            let result = driver.stop(&running, stop_timeout).await;
            let _ = inbox.send(Input::Stopped { replica, result });
        });
    }

    /// The driver launched a replica (or could not: the error is handed
    /// back, the replica forgotten).
    pub(super) fn on_started(
        &mut self,
        ctx: &Shared,
        routes: Routes,
        id: &str,
        result: Result<RunningReplica, DriverError>,
    ) -> Option<DriverError> {
        let running = match result {
            Ok(running) => running,
            Err(error) => {
                self.replicas.forget(id);
                return Some(error);
            }
        };
        let Some(r) = self.replicas.get_mut(id) else { return None };
        if r.stopping {
            // Retired while it was launching: stop it now.
            r.running = Some(running);
            r.stopping = false;
            self.retire(ctx, routes, id, "no longer needed");
            return None;
        }
        let backend = Arc::new(Backend::new(id, running.addr));
        let detail = match running.pid {
            Some(pid) => format!("replica started (pid {pid}, {})", running.addr),
            None => format!("replica started ({})", running.addr),
        };
        r.backend = Some(backend);
        r.running = Some(running.clone());
        let watchers = r.watchers.clone();
        ctx.record(NewEvent::new(&ctx.name, EventKind::ReplicaStarted, detail).replica(id));
        self.watch(ctx, id.to_string(), running, watchers);
        None
    }

    /// A worker ran through its grace period. Returns whether it reached
    /// service.
    pub(super) fn on_worker_ready(&mut self, ctx: &Shared, id: &str) -> bool {
        let Some(r) = self.replicas.get_mut(id) else { return false };
        if r.state != ReplicaState::Starting || r.stopping {
            return false;
        }
        // No health checks for a worker: mark it healthy directly.
        while r.health.state() != Health::Healthy {
            r.health.observe(true);
        }
        r.state = ReplicaState::InService;
        r.ever_in_service = true;
        r.in_service_since = Some(Instant::now());
        let why = format!(
            "worker in service: still running after its {} grace period",
            humantime::format_duration(ctx.config.health.grace_period)
        );
        ctx.record(NewEvent::new(&ctx.name, EventKind::ReplicaInService, why).replica(id));
        true
    }

    /// A replica exited on its own: failed, to be replaced (unless ebb
    /// was stopping it anyway).
    pub(super) fn on_exited(&mut self, ctx: &Shared, id: &str, reason: ExitReason) -> Option<Failure> {
        let r = self.replicas.get_mut(id)?;
        if r.stopping {
            return None;
        }
        let never_served = !r.ever_in_service;
        let age = r.started_at.elapsed().as_secs_f64();
        r.state = ReplicaState::Failed;
        r.exited = true;
        ctx.record(
            NewEvent::new(
                &ctx.name,
                EventKind::ReplicaExited,
                format!("replica {reason} after {age:.1} s; replacing it"),
            )
            .replica(id),
        );
        Some(Failure { id: id.to_string(), cause: format!("{reason} after {age:.1} s"), never_served })
    }

    /// A stop finished: the replica is gone for good.
    pub(super) fn on_stopped(&mut self, ctx: &Shared, id: &str, result: Result<ExitReason, DriverError>) {
        let exited = self.replicas.get(id).is_some_and(|r| r.exited);
        let detail = match result {
            // Its own exit was reported when it happened.
            Ok(reason) if exited => reason.to_string(),
            Ok(reason) => stop_detail(&reason, ctx.config.stop_timeout),
            Err(error) => format!("stop failed: {error}"),
        };
        if let Some(r) = self.replicas.get_mut(id) {
            r.watchers.cancel();
        }
        self.replicas.forget(id);
        ctx.record(
            NewEvent::new(&ctx.name, EventKind::ReplicaStopped, format!("replica stopped ({detail})")).replica(id),
        );
    }

    /// Starts the probe loop and the exit watcher of a launched replica.
    /// A worker has no balancer and need not listen: it is in service once
    /// it has run for its grace period, and leaves when it exits.
    pub(super) fn watch(&self, ctx: &Shared, id: String, running: RunningReplica, watchers: CancellationToken) {
        if !ctx.config.kind.has_balancer() {
            let inbox = self.inbox.clone();
            let grace = ctx.config.health.grace_period;
            let (probe_id, stop) = (id.clone(), watchers.clone());
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(grace) => {
                        let _ = inbox.send(Input::WorkerReady { replica: probe_id });
                    }
                }
            });
            self.watch_exit(id, running, watchers);
            return;
        }
        let mut health_config = self.health.subscribe();
        let inbox = self.inbox.clone();
        let addr = running.addr;
        let pause = self.replicas.get(&id).map(|r| r.pause.clone()).unwrap_or_default();
        let probe_id = id.clone();
        let probe_stop = watchers.clone();
        self.tasks.spawn(async move {
            // A short first delay lets the replica bind its port; then one
            // probe per interval, as a load balancer target group does.
            let mut delay = health_config.borrow().interval.min(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = probe_stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                let health = health_config.borrow_and_update().clone();
                delay = health.interval;
                // A suspended replica cannot answer: no probe, and none
                // that a suspend or resume overlapped.
                let generation = pause.load(std::sync::atomic::Ordering::Relaxed);
                if generation % 2 == 1 {
                    continue;
                }
                let outcome = tokio::select! {
                    _ = probe_stop.cancelled() => return,
                    outcome = probe::probe(addr, &health.path, health.timeout, &health.matcher) => outcome,
                };
                if pause.load(std::sync::atomic::Ordering::Relaxed) != generation {
                    continue;
                }
                if inbox.send(Input::Probe { replica: probe_id.clone(), outcome }).is_err() {
                    return;
                }
            }
        });
        self.watch_exit(id, running, watchers);
    }

    fn watch_exit(&self, id: String, running: RunningReplica, watchers: CancellationToken) {
        let inbox = self.inbox.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = watchers.cancelled() => {}
                reason = running.exited() => {
                    let _ = inbox.send(Input::Exited { replica: id, reason });
                }
            }
        });
    }

    /// Waits for every start, drain, stop and watch task to finish.
    pub(super) async fn wait_for_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Six hex digits: short enough to type in `ebb logs`, unique enough per run.
fn random_suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// How a replica that ebb stopped ended, in the words of a stop: SIGTERM is
/// what ebb sent, so dying of it is the expected end (a `sh -c` wrapper
/// does); SIGKILL means it outlived `stop_timeout`.
fn stop_detail(reason: &ExitReason, stop_timeout: Duration) -> String {
    match reason {
        ExitReason::Signaled(15) => "ended by SIGTERM, as asked".to_string(),
        ExitReason::Signaled(9) => format!(
            "killed with SIGKILL: still running {} after SIGTERM (stop_timeout)",
            humantime::format_duration(stop_timeout)
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_says_how_the_replica_ended_in_the_words_of_a_stop() {
        let timeout = Duration::from_secs(10);
        assert_eq!(stop_detail(&ExitReason::Signaled(15), timeout), "ended by SIGTERM, as asked");
        assert_eq!(
            stop_detail(&ExitReason::Signaled(9), timeout),
            "killed with SIGKILL: still running 10s after SIGTERM (stop_timeout)"
        );
        assert_eq!(stop_detail(&ExitReason::Exited(0), timeout), "exited with status 0");
        assert_eq!(stop_detail(&ExitReason::Signaled(6), timeout), "killed by signal 6 (SIGABRT)");
    }
}
