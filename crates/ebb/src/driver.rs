//! Drivers: where replicas run.
//!
//! A [`Driver`] starts a replica from a [`ReplicaSpec`], tells when it exits,
//! and stops it (polite signal, `stop_timeout`, then force). The controller
//! only talks to this trait, so Docker and Swarm drivers slot in beside the
//! [`ProcessDriver`] without touching the rest.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use ebb_core::config::CommandSpec;
use tokio::sync::watch;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Driver>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a driver needs to start one replica.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub service: String,
    pub replica_id: String,
    /// Deploy version of the spec this replica runs.
    pub version: u64,
    pub command: CommandSpec,
    /// The service's `env`, before ebb adds `PORT`, `EBB_SERVICE`, `EBB_REPLICA_ID`.
    pub env: BTreeMap<String, String>,
    /// ebb's state directory (replicas may keep shared files there).
    pub state_dir: PathBuf,
    /// Where the replica's stdout and stderr go.
    pub log_path: PathBuf,
}

/// How a replica ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Exited on its own with a status code.
    Exited(i32),
    /// Killed by a signal (number), e.g. 9 for SIGKILL.
    Signaled(i32),
    /// The driver lost track of it (wait failed).
    Unknown(String),
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited with status {code}"),
            ExitReason::Signaled(sig) => {
                let name = nix::sys::signal::Signal::try_from(*sig).map(|s| s.as_str()).unwrap_or("unknown signal");
                write!(f, "killed by signal {sig} ({name})")
            }
            ExitReason::Unknown(why) => write!(f, "lost: {why}"),
        }
    }
}

/// A replica the driver started and is watching.
#[derive(Debug, Clone)]
pub struct RunningReplica {
    pub replica_id: String,
    /// Where the balancer and health checks reach it.
    pub addr: SocketAddr,
    /// OS process id (process driver), if any.
    pub pid: Option<u32>,
    /// Becomes `Some` once the replica has exited, for whatever reason.
    pub exit: watch::Receiver<Option<ExitReason>>,
}

impl RunningReplica {
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Resolves once the replica has exited.
    pub async fn exited(&self) -> ExitReason {
        let mut rx = self.exit.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone().unwrap_or_else(|| ExitReason::Unknown("watcher gone".into()));
            }
        }
    }
}

/// Why a driver could not do what was asked; carries the replica's identity.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("replica {replica}: could not start `{command}`: {source}")]
    Spawn { replica: String, command: String, source: std::io::Error },
    #[error("replica {replica}: no free port: {source}")]
    Port { replica: String, source: std::io::Error },
    #[error("replica {replica}: could not open log file {}: {source}", path.display())]
    Log { replica: String, path: PathBuf, source: std::io::Error },
    #[error("replica {replica}: could not signal process group {pgid}: {source}")]
    Signal { replica: String, pgid: u32, source: nix::Error },
}

/// Where replicas run. Implementations: [`ProcessDriver`] (local processes);
/// Docker and Swarm later.
pub trait Driver: Send + Sync {
    /// Short name for status and events ("process", "docker", ...).
    fn name(&self) -> &'static str;

    /// Starts one replica. Returns once it has been launched (not once it is
    /// healthy: health checks decide that).
    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<RunningReplica, DriverError>>;

    /// Stops a replica: polite signal, up to `timeout` to exit, then force.
    /// Resolves when it is gone. Stopping an exited replica is a no-op.
    fn stop<'a>(&'a self, replica: &'a RunningReplica, timeout: Duration) -> BoxFuture<'a, Result<ExitReason, DriverError>>;
}

/// Runs each replica as a local process in its own process group, listening
/// on a free loopback port passed in `PORT`.
#[derive(Debug, Clone)]
pub struct ProcessDriver {
    /// ebb's own executable, substituted for `{ebb}` in commands.
    ebb_executable: PathBuf,
    host: IpAddr,
}

impl ProcessDriver {
    pub fn new(ebb_executable: PathBuf) -> Self {
        Self { ebb_executable, host: IpAddr::V4(Ipv4Addr::LOCALHOST) }
    }

    fn command_for(&self, spec: &ReplicaSpec) -> (tokio::process::Command, String) {
        let ebb = self.ebb_executable.to_string_lossy();
        match &spec.command {
            CommandSpec::Shell(line) => {
                let line = line.replace("{ebb}", &shell_quote(&ebb));
                let mut cmd = tokio::process::Command::new("/bin/sh");
                cmd.arg("-c").arg(&line);
                (cmd, line)
            }
            CommandSpec::Argv(argv) => {
                let argv: Vec<String> = argv.iter().map(|a| a.replace("{ebb}", &ebb)).collect();
                let mut cmd = tokio::process::Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                (cmd, argv.join(" "))
            }
        }
    }
}

/// Quotes a path for `sh -c` so `{ebb}` survives spaces in the install path.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Finds a free loopback port by binding port 0 and releasing it. The replica
/// binds it a moment later; a clash shows up as a failed start and is retried.
fn free_port(host: IpAddr) -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::new(host, 0))?;
    Ok(listener.local_addr()?.port())
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<RunningReplica, DriverError>> {
        Box::pin(async move {
            let replica = spec.replica_id.clone();
            let port = free_port(self.host).map_err(|source| DriverError::Port { replica: replica.clone(), source })?;
            let log = open_log(&spec.log_path)
                .map_err(|source| DriverError::Log { replica: replica.clone(), path: spec.log_path.clone(), source })?;
            let log_err = log
                .try_clone()
                .map_err(|source| DriverError::Log { replica: replica.clone(), path: spec.log_path.clone(), source })?;
            let (mut cmd, shown) = self.command_for(spec);
            cmd.envs(&spec.env)
                .env("PORT", port.to_string())
                .env("EBB_SERVICE", &spec.service)
                .env("EBB_REPLICA_ID", &spec.replica_id)
                .env("EBB_VERSION", spec.version.to_string())
                .env("EBB_STATE_DIR", &spec.state_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err))
                // Own process group: a terminal's Ctrl-C reaches ebb only (ebb
                // drains replicas itself), and stop signals the whole group,
                // including anything `sh -c` started.
                .process_group(0)
                .kill_on_drop(false);
            let mut child =
                cmd.spawn().map_err(|source| DriverError::Spawn { replica: replica.clone(), command: shown, source })?;
            let pid = child.id();
            let (tx, rx) = watch::channel(None);
            tokio::spawn(async move {
                let reason = match child.wait().await {
                    Ok(status) => {
                        use std::os::unix::process::ExitStatusExt;
                        match (status.code(), status.signal()) {
                            (Some(code), _) => ExitReason::Exited(code),
                            (None, Some(sig)) => ExitReason::Signaled(sig),
                            _ => ExitReason::Unknown(format!("{status}")),
                        }
                    }
                    Err(e) => ExitReason::Unknown(e.to_string()),
                };
                let _ = tx.send(Some(reason));
            });
            Ok(RunningReplica { replica_id: replica, addr: SocketAddr::new(self.host, port), pid, exit: rx })
        })
    }

    fn stop<'a>(&'a self, replica: &'a RunningReplica, timeout: Duration) -> BoxFuture<'a, Result<ExitReason, DriverError>> {
        Box::pin(async move {
            let Some(pid) = replica.pid else {
                return Ok(replica.exited().await);
            };
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let signal_group = |sig| match nix::sys::signal::killpg(group, sig) {
                // ESRCH: the group is already gone — that is what we wanted.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                Err(source) => Err(DriverError::Signal { replica: replica.replica_id.clone(), pgid: pid, source }),
            };
            if !replica.has_exited() {
                signal_group(nix::sys::signal::Signal::SIGTERM)?;
            }
            let reason = match tokio::time::timeout(timeout, replica.exited()).await {
                Ok(reason) => reason,
                Err(_) => {
                    tracing::warn!(replica = %replica.replica_id, ?timeout, "Replica ignored SIGTERM; sending SIGKILL.");
                    signal_group(nix::sys::signal::Signal::SIGKILL)?;
                    replica.exited().await
                }
            };
            // The group leader is gone; make sure nothing it started lingers
            // (e.g. a child of `sh -c` that ignored SIGTERM).
            signal_group(nix::sys::signal::Signal::SIGKILL)?;
            Ok(reason)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/usr/bin/ebb"), "/usr/bin/ebb");
        assert_eq!(shell_quote("/opt/my apps/ebb"), "'/opt/my apps/ebb'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }

    fn spec(dir: &Path, command: CommandSpec) -> ReplicaSpec {
        ReplicaSpec {
            service: "web".into(),
            replica_id: "web-test".into(),
            version: 1,
            command,
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            state_dir: dir.to_path_buf(),
            log_path: dir.join("logs/web-test.log"),
        }
    }

    #[tokio::test]
    async fn process_driver_passes_env_and_logs_output() {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new("/bin/echo".into());
        let spec = spec(dir.path(), CommandSpec::Shell("{ebb} \"$GREETING $EBB_SERVICE $EBB_REPLICA_ID port=$PORT\"".into()));
        let replica = driver.start(&spec).await.unwrap();
        assert_eq!(replica.exited().await, ExitReason::Exited(0));
        let log = std::fs::read_to_string(&spec.log_path).unwrap();
        assert_eq!(log, format!("hi web web-test port={}\n", replica.addr.port()));
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new("/bin/true".into());
        let spec = spec(dir.path(), CommandSpec::Shell("trap '' TERM; echo ready; while true; do sleep 0.05; done".into()));
        let replica = driver.start(&spec).await.unwrap();
        // Wait until the trap is installed.
        for _ in 0..100 {
            if std::fs::read_to_string(&spec.log_path).unwrap_or_default().contains("ready") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reason = driver.stop(&replica, Duration::from_millis(300)).await.unwrap();
        assert_eq!(reason, ExitReason::Signaled(9));
    }

    #[tokio::test]
    async fn stop_is_polite_first() {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new("/bin/true".into());
        let spec = spec(dir.path(), CommandSpec::Argv(vec!["sleep".into(), "30".into()]));
        let replica = driver.start(&spec).await.unwrap();
        let reason = driver.stop(&replica, Duration::from_secs(5)).await.unwrap();
        assert_eq!(reason, ExitReason::Signaled(15));
    }

    #[tokio::test]
    async fn a_missing_program_names_the_replica() {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new("/bin/true".into());
        let spec = spec(dir.path(), CommandSpec::Argv(vec!["/nonexistent/program".into()]));
        let err = driver.start(&spec).await.unwrap_err().to_string();
        assert!(err.contains("replica web-test") && err.contains("/nonexistent/program"), "{err}");
    }
}
