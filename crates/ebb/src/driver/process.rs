//! [`ProcessDriver`]: each replica is a local process in its own process
//! group, listening on a free loopback port passed in `PORT`.
//!
//! A replica's environment (`EBB_STATE_DIR`, `EBB_SERVICE`,
//! `EBB_REPLICA_ID`, `EBB_VERSION`, `PORT`) is also how a restarted ebb
//! recognises it: `discover` scans `/proc` for group leaders whose
//! `environ` names this state dir and service. An adopted replica is not
//! ebb's child, so its exit is seen by polling `/proc/<pid>` and its exit
//! status is not known.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ebb_core::config::CommandSpec;
use tokio::sync::watch;

use super::cgroup::{Cgroups, ReplicaCgroup};
use super::{
    BoxFuture, Driver, DriverError, ExitReason, FoundReplica, GroupUsage, ReplicaHandle, ReplicaSpec, RunningReplica,
};
use crate::metrics::cpu;

/// How often an adopted replica's `/proc` entry is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(200);

/// Runs each replica as a local process in its own process group, listening
/// on a free loopback port passed in `PORT`.
#[derive(Debug, Clone)]
pub struct ProcessDriver {
    /// ebb's own executable, substituted for `{ebb}` in commands.
    ebb_executable: PathBuf,
    host: IpAddr,
    /// Control groups for replicas (see `cgroup.rs`), when usable here.
    cgroups: Option<Cgroups>,
}

impl ProcessDriver {
    pub fn new(ebb_executable: PathBuf) -> Self {
        Self { ebb_executable, host: IpAddr::V4(Ipv4Addr::LOCALHOST), cgroups: None }
    }

    /// The same driver, putting each replica in a control group of its own
    /// (limits, whole-tree accounting, OOM kills known as such). Without
    /// usable cgroups it says so once and replicas run in process groups.
    pub fn with_cgroups(mut self, state_dir: &Path) -> Self {
        // The same name for the same directory however ebb was started.
        let state_dir = state_dir.canonicalize().unwrap_or_else(|_| state_dir.to_path_buf());
        match Cgroups::detect(&state_dir) {
            Ok(cgroups) => {
                tracing::info!(version = cgroups.version(), "Local replicas run in control groups of their own.");
                self.cgroups = Some(cgroups);
            }
            Err(why) => {
                tracing::warn!(%why, "No control groups: local replicas run in process groups only; their cpu and memory are not enforced.");
                eprintln!("ebb: warning: cannot use control groups ({why}); local replicas' cpu and memory are not enforced, and a process that leaves its replica's process group is not tracked");
            }
        }
        self
    }

    /// `replica`'s control group, if it has one.
    fn group_of(&self, replica: &str) -> Option<ReplicaCgroup> {
        self.cgroups.as_ref().map(|c| c.group(replica)).filter(ReplicaCgroup::exists)
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

/// Replica ports come from here, as Nomad's dynamic ports do: below Linux's
/// ephemeral range (32768+). A port from that range, free when checked, can
/// be taken as the local port of any outgoing connection (ebb's balancer
/// opens them by the thousand) before the replica binds it; the replica
/// would then fail to start, and a deploy would roll back for nothing.
pub const REPLICA_PORTS: std::ops::RangeInclusive<u16> = 20_000..=32_000;

/// Finds a free port for a replica by binding and releasing it, starting at
/// a random place in `range` ([`REPLICA_PORTS`] unless the service sets
/// `ports`); the replica binds it a moment later. When the whole range is
/// taken, any free port the kernel gives — except for a configured range,
/// which a host's port rules may require: that is an error.
pub(super) fn free_port(host: IpAddr, range: &std::ops::RangeInclusive<u16>) -> std::io::Result<u16> {
    let (first, span) = (u32::from(*range.start()), u32::from(range.end() - range.start()) + 1);
    let start = rand::random::<u32>() % span;
    for n in 0..span {
        let port = (first + (start + n) % span) as u16;
        if std::net::TcpListener::bind(SocketAddr::new(host, port)).is_ok() {
            return Ok(port);
        }
    }
    if *range != REPLICA_PORTS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("every port in the service's ports range {}-{} is in use", range.start(), range.end()),
        ));
    }
    let listener = std::net::TcpListener::bind(SocketAddr::new(host, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A replica's log file: created `0640` (its output may hold secrets; the
/// directory is created `0700`).
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

/// Where a replica's stdout and stderr go: its log file, or, when that
/// cannot be opened (a full disk, a read-only or broken `logs/`), ebb's own
/// stderr, so the replica still starts and its output is not lost (it lands
/// in the terminal or the journal beside ebb's log). A warning names the
/// replica, the file and the reason.
fn replica_output(spec: &ReplicaSpec) -> Result<(Stdio, Stdio), DriverError> {
    let log_error = |source| DriverError::Log { replica: spec.replica_id.clone(), path: spec.log_path.clone(), source };
    let file = match open_log(&spec.log_path) {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(
                replica = %spec.replica_id,
                log = %spec.log_path.display(),
                %error,
                "Cannot open the replica's log file; its output goes to ebb's own stderr instead (`ebb logs` has nothing for it)."
            );
            use std::os::fd::AsFd;
            let stderr = std::io::stderr().as_fd().try_clone_to_owned().map_err(log_error)?;
            let stderr_too = stderr.try_clone().map_err(log_error)?;
            return Ok((Stdio::from(stderr), Stdio::from(stderr_too)));
        }
    };
    let file_too = file.try_clone().map_err(log_error)?;
    Ok((Stdio::from(file), Stdio::from(file_too)))
}

/// In the forked child, before exec: writes its own pid into each
/// `cgroup.procs`, so that the replica and all it starts are in its group
/// from its first instruction.
fn join_cgroups(procs: &[std::ffi::CString]) -> std::io::Result<()> {
    use nix::libc;
    // The pid in decimal, on the stack.
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for path in procs {
        // SAFETY: plain system calls on a valid C string and a stack buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
            libc::close(fd);
            if written < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The replica's leader has exited: an OOM kill is named as such, and
/// whatever it left in its control group is killed and the group removed.
fn settle_group(group: &ReplicaCgroup, reason: ExitReason) -> ExitReason {
    let reason = match reason {
        // The killed process may be a child of the leader (`sh -c` exits
        // 137 after it): any failing exit of a group the kernel OOM-killed in.
        ExitReason::Exited(0) => ExitReason::Exited(0),
        _ if group.oom_kills() > 0 => ExitReason::OutOfMemory { limit: group.memory_limit() },
        other => other,
    };
    group.kill_all();
    group.remove();
    reason
}

/// Sends `sig` to a replica's process group (its pid leads it); a group
/// already gone is not an error.
fn signal_group(replica: &RunningReplica, sig: nix::sys::signal::Signal) -> Result<(), DriverError> {
    let Some(pid) = replica.pid else { return Ok(()) };
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(DriverError::Signal { replica: replica.replica_id.clone(), pgid: pid, source }),
    }
}

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start<'a>(&'a self, spec: &'a ReplicaSpec) -> BoxFuture<'a, Result<RunningReplica, DriverError>> {
        Box::pin(async move {
            let replica = spec.replica_id.clone();
            let range = spec.ports.clone().unwrap_or(REPLICA_PORTS);
            let port = free_port(self.host, &range)
                .map_err(|source| DriverError::Port { replica: replica.clone(), source })?;
            let (stdout, stderr) = replica_output(spec)?;
            let (mut cmd, shown) = self.command_for(spec);
            cmd.envs(&spec.env)
                .env("PORT", port.to_string())
                .env("EBB_SERVICE", &spec.service)
                .env("EBB_REPLICA_ID", &spec.replica_id)
                .env("EBB_VERSION", spec.version.to_string())
                .env("EBB_STATE_DIR", &spec.state_dir)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                // Own process group: a terminal's Ctrl-C reaches ebb only (ebb
                // drains replicas itself), and stop signals the whole group,
                // including anything `sh -c` started.
                .process_group(0)
                .kill_on_drop(false);
            let group = match (&self.cgroups, spec.limits) {
                (Some(cgroups), Some(limits)) => match cgroups.create(&replica, limits) {
                    Ok(group) => Some(group),
                    Err(why) => {
                        tracing::warn!(replica = %replica, %why, "No control group for the replica; it runs in its process group only.");
                        None
                    }
                },
                _ => None,
            };
            if let Some(group) = &group {
                let procs = group.procs_files();
                // SAFETY: runs in the forked child before exec, and only
                // makes raw system calls (open, write, close) on memory
                // prepared before the fork: no allocation, no lock.
                unsafe {
                    cmd.pre_exec(move || join_cgroups(&procs));
                }
            }
            let mut child = cmd.spawn().map_err(|source| DriverError::Spawn {
                replica: replica.clone(),
                command: shown,
                source,
            })?;
            let pid = child.id();
            // Read at once: the process exists (unreaped) until we wait() it.
            let start_ticks = pid.and_then(proc_stat).map(|st| st.start_ticks).unwrap_or(0);
            let handle = ReplicaHandle::Process { pid: pid.unwrap_or(0), start_ticks };
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
                let reason = match group {
                    Some(group) => tokio::task::spawn_blocking(move || settle_group(&group, reason))
                        .await
                        .unwrap_or_else(|e| ExitReason::Unknown(e.to_string())),
                    None => reason,
                };
                let _ = tx.send(Some(reason));
            });
            Ok(RunningReplica { replica_id: replica, addr: SocketAddr::new(self.host, port), pid, handle, exit: rx })
        })
    }

    /// SIGSTOP to the replica's process group.
    fn suspend<'a>(&'a self, replica: &'a RunningReplica) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move { signal_group(replica, nix::sys::signal::Signal::SIGSTOP) })
    }

    /// SIGCONT to the replica's process group.
    fn resume<'a>(&'a self, replica: &'a RunningReplica) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move { signal_group(replica, nix::sys::signal::Signal::SIGCONT) })
    }

    fn stop<'a>(
        &'a self,
        replica: &'a RunningReplica,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExitReason, DriverError>> {
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
                // A suspended (SIGSTOPped) group takes SIGTERM only once it
                // runs again; to a running one SIGCONT is nothing.
                signal_group(nix::sys::signal::Signal::SIGCONT)?;
            }
            let reason = match tokio::time::timeout(timeout, replica.exited()).await {
                Ok(reason) => reason,
                Err(_) => {
                    tracing::warn!(replica = %replica.replica_id, ?timeout, "Replica ignored SIGTERM; sending SIGKILL.");
                    signal_group(nix::sys::signal::Signal::SIGKILL)?;
                    // Bounded: a process in uninterruptible sleep (D state)
                    // must not hold `ebb down` for ever.
                    match tokio::time::timeout(Duration::from_secs(10), replica.exited()).await {
                        Ok(reason) => reason,
                        Err(_) => {
                            ExitReason::Unknown("still not gone 10 s after SIGKILL (stuck in the kernel?)".into())
                        }
                    }
                }
            };
            // The group leader is gone; make sure nothing it started lingers
            // (e.g. a child of `sh -c` that ignored SIGTERM). Safe after the
            // leader is reaped: Linux never hands out a pid that is still
            // some group's id, and an empty group answers ESRCH.
            signal_group(nix::sys::signal::Signal::SIGKILL)?;
            // And what left the process group (`setsid`, `setpgid`) but not
            // the control group.
            if let Some(group) = self.group_of(&replica.replica_id) {
                let _ = tokio::task::spawn_blocking(move || {
                    group.kill_all();
                    group.remove();
                })
                .await;
            }
            Ok(reason)
        })
    }

    fn discover<'a>(
        &'a self,
        service: &'a str,
        state_dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<FoundReplica>, DriverError>> {
        Box::pin(async move {
            let (name, dir, host) = (service.to_string(), state_dir.to_path_buf(), self.host);
            tokio::task::spawn_blocking(move || scan_for_replicas(&name, &dir, host))
                .await
                .map_err(|e| DriverError::Discover { service: service.to_string(), why: e.to_string() })
        })
    }

    fn adopt<'a>(&'a self, found: &'a FoundReplica) -> BoxFuture<'a, Result<RunningReplica, DriverError>> {
        Box::pin(async move {
            let adopt_error = |why: String| DriverError::Adopt { replica: found.replica_id.clone(), why };
            let ReplicaHandle::Process { pid, start_ticks } = found.handle.clone() else {
                return Err(adopt_error(format!("the process driver cannot adopt {:?}", found.handle)));
            };
            if !is_alive(pid, start_ticks) {
                return Err(adopt_error(format!("process {pid} (started at tick {start_ticks}) is no longer running")));
            }
            let (tx, rx) = watch::channel(None);
            tokio::spawn(async move {
                // Not our child: poll until the process is gone (or a zombie
                // waiting for its new parent), or nobody watches any more.
                loop {
                    tokio::time::sleep(ADOPTED_POLL).await;
                    if tx.is_closed() {
                        return;
                    }
                    if !is_alive(pid, start_ticks) {
                        let why = format!(
                            "process {pid} is gone; its exit status is unknown (adopted from an earlier ebb run)"
                        );
                        let _ = tx.send(Some(ExitReason::Unknown(why)));
                        return;
                    }
                }
            });
            Ok(RunningReplica::adopted(found, Some(pid), rx))
        })
    }

    fn usage<'a>(&'a self, replicas: &'a [RunningReplica]) -> BoxFuture<'a, HashMap<String, GroupUsage>> {
        Box::pin(async move {
            // A replica with a control group: its whole tree, from the group.
            let cgroups: Vec<(String, ReplicaCgroup)> =
                replicas.iter().filter_map(|r| Some((r.replica_id.clone(), self.group_of(&r.replica_id)?))).collect();
            let mut from_groups: HashMap<String, GroupUsage> = tokio::task::spawn_blocking(move || {
                cgroups
                    .into_iter()
                    .filter_map(|(id, group)| {
                        let usage = GroupUsage {
                            cpu_seconds: group.cpu_seconds()?,
                            rss_bytes: group.memory_bytes().unwrap_or(0),
                            processes: group.pids().len() as u32,
                        };
                        Some((id, usage))
                    })
                    .collect()
            })
            .await
            .unwrap_or_default();
            let replicas: Vec<&RunningReplica> =
                replicas.iter().filter(|r| !from_groups.contains_key(&r.replica_id)).collect();
            let groups: Vec<(i32, String)> = replicas
                .iter()
                .filter_map(|r| match r.handle {
                    ReplicaHandle::Process { pid, .. } if pid != 0 => Some((pid as i32, r.replica_id.clone())),
                    _ => None,
                })
                .collect();
            if groups.is_empty() {
                return from_groups;
            }
            let pgids: Vec<i32> = groups.iter().map(|(pgid, _)| *pgid).collect();
            let read = tokio::task::spawn_blocking(move || cpu::read_groups(&pgids)).await.unwrap_or_default();
            from_groups.extend(groups.into_iter().filter_map(|(pgid, id)| read.get(&pgid).map(|u| (id, *u))));
            from_groups
        })
    }
}

/// The fields of `/proc/<pid>/stat` adoption needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    state: char,
    pgrp: i32,
    /// Field 22: when the process started, in clock ticks since boot.
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` (fields counted after the last `)`: the
/// command name may contain spaces and parentheses).
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        pgrp: field(5)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
    })
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is still the process that started at `start_ticks`, and
/// has not exited (a zombie has).
fn is_alive(pid: u32, start_ticks: u64) -> bool {
    proc_stat(pid).is_some_and(|st| st.start_ticks == start_ticks && !matches!(st.state, 'Z' | 'X' | 'x'))
}

/// The `NAME=value` pairs of `/proc/<pid>/environ`.
fn proc_environ(pid: u32) -> Option<HashMap<String, String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// Group leaders (pgid == pid) whose environment says they are replicas of
/// `service` started by an ebb with this state dir.
fn scan_for_replicas(service: &str, state_dir: &Path, host: IpAddr) -> Vec<FoundReplica> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return found };
    let state_dir = state_dir.to_string_lossy();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Some(stat) = proc_stat(pid) else { continue };
        if stat.pgrp != pid as i32 || matches!(stat.state, 'Z' | 'X' | 'x') {
            continue;
        }
        // Other users' processes cannot be read: they are not ours anyway.
        let Some(env) = proc_environ(pid) else { continue };
        if env.get("EBB_STATE_DIR").map(String::as_str) != Some(&*state_dir)
            || env.get("EBB_SERVICE").map(String::as_str) != Some(service)
        {
            continue;
        }
        let (Some(replica_id), Some(version), Some(port)) = (
            env.get("EBB_REPLICA_ID").cloned(),
            env.get("EBB_VERSION").and_then(|v| v.parse::<u64>().ok()),
            env.get("PORT").and_then(|p| p.parse::<u16>().ok()),
        ) else {
            continue;
        };
        found.push(FoundReplica {
            service: service.to_string(),
            replica_id,
            version,
            addr: SocketAddr::new(host, port),
            handle: ReplicaHandle::Process { pid, start_ticks: stat.start_ticks },
        });
    }
    found.sort_by(|a, b| a.replica_id.cmp(&b.replica_id));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ports_stay_below_the_ephemeral_range() {
        let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768);
        assert!(*REPLICA_PORTS.end() < ephemeral_start);
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let ports: Vec<u16> = (0..20).map(|_| free_port(host, &REPLICA_PORTS).unwrap()).collect();
        assert!(ports.iter().all(|p| REPLICA_PORTS.contains(p)), "{ports:?}");
        // Random starts: twenty picks are not all the same port.
        assert!(ports.iter().any(|p| *p != ports[0]), "{ports:?}");
        for port in ports {
            std::net::TcpListener::bind((host, port)).expect("the picked port is free");
        }
    }
    use std::collections::BTreeMap;

    #[test]
    fn parses_proc_stat_start_ticks_and_group() {
        let line = "4242 (my (weird) app) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 1000000 321 18446744073709551615";
        let stat = parse_proc_stat(line).unwrap();
        assert_eq!(stat, ProcStat { state: 'S', pgrp: 4240, start_ticks: 12345 });
    }

    #[test]
    fn handles_serialise_with_a_kind_tag() {
        let h = ReplicaHandle::Process { pid: 42, start_ticks: 7 };
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"kind":"process","pid":42,"start_ticks":7}"#);
        assert_eq!(serde_json::from_str::<ReplicaHandle>(&json).unwrap(), h);
        let c = ReplicaHandle::Container { id: "abc".into() };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"kind":"container","id":"abc"}"#);
    }

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
            container: None,
            ports: None,
            limits: None,
        }
    }

    #[tokio::test]
    async fn process_driver_passes_env_and_logs_output() {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new("/bin/echo".into());
        let spec =
            spec(dir.path(), CommandSpec::Shell("{ebb} \"$GREETING $EBB_SERVICE $EBB_REPLICA_ID port=$PORT\"".into()));
        let replica = driver.start(&spec).await.unwrap();
        assert_eq!(replica.exited().await, ExitReason::Exited(0));
        let log = std::fs::read_to_string(&spec.log_path).unwrap();
        assert_eq!(log, format!("hi web web-test port={}\n", replica.addr.port()));
    }

    #[tokio::test]
    async fn logs_are_private_to_ebb_and_its_group() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new("/bin/echo".into());
        let spec = spec(dir.path(), CommandSpec::Shell("{ebb} hello".into()));
        let replica = driver.start(&spec).await.unwrap();
        assert_eq!(replica.exited().await, ExitReason::Exited(0));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spec.log_path), 0o640, "log file");
        assert_eq!(mode(&dir.path().join("logs")), 0o700, "log directory");
    }

    #[tokio::test]
    async fn a_replica_starts_when_its_log_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        // `logs` is a file, not a directory: no log file can be made there
        // (for root too, whom file modes do not stop).
        std::fs::write(dir.path().join("logs"), "not a directory").unwrap();
        let driver = ProcessDriver::new("/bin/echo".into());
        let spec = spec(dir.path(), CommandSpec::Shell("{ebb} to stderr instead".into()));
        let replica = driver.start(&spec).await.expect("the replica starts without its log file");
        assert_eq!(replica.exited().await, ExitReason::Exited(0));
        assert_eq!(std::fs::read_to_string(dir.path().join("logs")).unwrap(), "not a directory");
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new("/bin/true".into());
        let spec =
            spec(dir.path(), CommandSpec::Shell("trap '' TERM; echo ready; while true; do sleep 0.05; done".into()));
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

    #[tokio::test]
    async fn a_new_driver_discovers_adopts_and_stops_a_replica() {
        let dir = tempfile::tempdir().unwrap();
        let first = ProcessDriver::new("/bin/true".into());
        let spec = spec(dir.path(), CommandSpec::Shell("exec sleep 30".into()));
        let started = first.start(&spec).await.unwrap();
        let second = ProcessDriver::new("/bin/true".into());
        // Until the child has exec'd, its environ is still the parent's.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = second.discover("web", dir.path()).await.unwrap();
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].replica_id.as_str(), found[0].version, found[0].addr), ("web-test", 1, started.addr));
        assert_eq!(found[0].handle, started.handle);
        assert!(second.discover("other", dir.path()).await.unwrap().is_empty());
        assert!(second.discover("web", Path::new("/elsewhere")).await.unwrap().is_empty());
        let adopted = second.adopt(&found[0]).await.unwrap();
        let usage = second.usage(std::slice::from_ref(&adopted)).await;
        assert!(usage.get("web-test").is_some_and(|u| u.rss_bytes > 0), "{usage:?}");
        let reason = second.stop(&adopted, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(reason, ExitReason::Unknown(_)), "{reason:?}");
        assert_eq!(started.exited().await, ExitReason::Signaled(15));
        // Gone: adopting it again is refused, naming the replica.
        let err = second.adopt(&found[0]).await.unwrap_err().to_string();
        assert!(err.contains("replica web-test"), "{err}");
    }
}
