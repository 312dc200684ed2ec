//! Control groups for local replicas: each replica in a group of its own,
//! as ECS does for a task, so that
//! - its `memory` is a hard limit (and, with `cpu_quota = true`, its `cpu`
//!   allotment a CPU quota),
//! - its whole tree is accounted (a child that calls `setsid` or `setpgid`
//!   leaves the process group, never the control group), for CPU sampling
//!   and for stopping,
//! - an out-of-memory kill is known as such (the group's `oom_kill` count).
//!
//! cgroup v2 is used where its `cpu` and `memory` controllers are available
//! (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`); else the v1 hierarchies
//! (`cpu`, `cpuacct`, `memory`, `pids`), as on hosts that still mount them.
//! Without either (no permission, a container without cgroup access) ebb
//! says so once and replicas run in process groups only.
//!
//! Groups are named `ebb-<8 hex of the state dir>/<replica id>`, so two ebbs
//! never share one, and a restarted ebb finds its replicas' groups again.

use std::path::{Path, PathBuf};

/// The hierarchies ebb can use on this host.
#[derive(Debug, Clone)]
pub struct Cgroups {
    kind: Kind,
    /// `ebb-<hash>`: this state directory's parent group in each hierarchy.
    base: String,
    /// Removes the parent groups when the last copy goes (if empty: replicas
    /// left running for the next ebb keep theirs).
    _parents: std::sync::Arc<Parents>,
}

#[derive(Debug)]
struct Parents(Vec<PathBuf>);

impl Drop for Parents {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    V2 { root: PathBuf },
    V1 { cpu: PathBuf, cpuacct: PathBuf, memory: PathBuf, pids: Option<PathBuf> },
}

/// One replica's group (one directory per hierarchy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCgroup {
    v2: bool,
    /// Every directory of the group; the first one lists its processes.
    dirs: Vec<PathBuf>,
    /// Where CPU usage is read: `cpu.stat` (v2) or `cpuacct.usage` (v1).
    cpu_usage: PathBuf,
    /// The memory controller's directory.
    memory: PathBuf,
}

/// What a replica is limited to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Cores (`cpu` with `cpu_quota = true`): the quota per period; `None`:
    /// no CPU cap (usage is still accounted).
    pub cpus: Option<f64>,
    /// Bytes (`memory`), or no limit.
    pub memory: Option<u64>,
}

/// The CFS period. Short, so that a replica at its quota is paused for
/// milliseconds at a time rather than tens of them (the kernel's 100 ms
/// default stalls a web request for up to 75 ms at a quarter core); long
/// enough that the quota stays at least the kernel's minimum of 1 ms.
fn period_us(cpus: f64) -> u64 {
    ((1000.0 / cpus.max(0.001)).ceil() as u64).clamp(10_000, 100_000)
}

impl Cgroups {
    /// Finds usable hierarchies under `/sys/fs/cgroup` and makes this state
    /// directory's parent group; `Err` says why there are none.
    pub fn detect(state_dir: &Path) -> Result<Cgroups, String> {
        Self::detect_at(Path::new("/sys/fs/cgroup"), state_dir)
    }

    fn detect_at(mount: &Path, state_dir: &Path) -> Result<Cgroups, String> {
        let base = parent_name(state_dir);
        let v2_root = [mount.to_path_buf(), mount.join("unified")]
            .into_iter()
            .find(|root| controllers(root).is_some_and(|c| c.contains(&"cpu".into()) && c.contains(&"memory".into())));
        let kind = match v2_root {
            Some(root) => {
                let parent = root.join(&base);
                make_dir(&parent)?;
                // Children get the cpu and memory controllers.
                std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory")
                    .map_err(|e| format!("cannot enable cpu and memory in {}: {e}", parent.display()))?;
                Kind::V2 { root }
            }
            None => {
                let hierarchy = |name: &str| Some(mount.join(name)).filter(|p| p.join("cgroup.procs").exists());
                let (Some(cpu), Some(cpuacct), Some(memory)) =
                    (hierarchy("cpu"), hierarchy("cpuacct").or_else(|| hierarchy("cpu,cpuacct")), hierarchy("memory"))
                else {
                    return Err(format!("no cgroup v2 with cpu and memory controllers, and no cgroup v1 cpu, cpuacct and memory hierarchies under {}", mount.display()));
                };
                let pids = hierarchy("pids");
                for dir in [&cpu, &cpuacct, &memory].into_iter().chain(pids.as_ref()) {
                    make_dir(&dir.join(&base))?;
                }
                Kind::V1 { cpu, cpuacct, memory, pids }
            }
        };
        let parents = match &kind {
            Kind::V2 { root } => vec![root.join(&base)],
            Kind::V1 { cpu, cpuacct, memory, pids } => {
                [cpu, cpuacct, memory].into_iter().chain(pids.as_ref()).map(|h| h.join(&base)).collect()
            }
        };
        sweep_empty_groups(&parents);
        Ok(Cgroups { kind, base, _parents: std::sync::Arc::new(Parents(parents)) })
    }

    /// `v2` or `v1`, for messages.
    pub fn version(&self) -> &'static str {
        match self.kind {
            Kind::V2 { .. } => "v2",
            Kind::V1 { .. } => "v1",
        }
    }

    /// The group of `replica` (made or not).
    pub fn group(&self, replica: &str) -> ReplicaCgroup {
        match &self.kind {
            Kind::V2 { root } => {
                let dir = root.join(&self.base).join(replica);
                ReplicaCgroup { v2: true, dirs: vec![dir.clone()], cpu_usage: dir.join("cpu.stat"), memory: dir }
            }
            Kind::V1 { cpu, cpuacct, memory, pids } => {
                let at = |h: &Path| h.join(&self.base).join(replica);
                let mut dirs = vec![at(memory), at(cpu)];
                if cpuacct != cpu {
                    dirs.push(at(cpuacct));
                }
                dirs.extend(pids.as_deref().map(at));
                ReplicaCgroup { v2: false, cpu_usage: at(cpuacct).join("cpuacct.usage"), memory: at(memory), dirs }
            }
        }
    }

    /// Makes `replica`'s group with `limits`.
    pub fn create(&self, replica: &str, limits: Limits) -> Result<ReplicaCgroup, String> {
        let group = self.group(replica);
        // The parent may have been removed while empty (another copy of
        // this driver went away): make it again.
        for parent in &self._parents.0 {
            make_dir(parent)?;
        }
        if let (true, Some(parent)) = (group.v2, self._parents.0.first()) {
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory");
        }
        for dir in &group.dirs {
            make_dir(dir)?;
        }
        let quota = limits.cpus.map(|cpus| {
            let period = period_us(cpus);
            (((cpus * period as f64).round() as u64).max(1000), period)
        });
        let set = |file: PathBuf, value: String| {
            std::fs::write(&file, &value).map_err(|e| format!("cannot write {value} to {}: {e}", file.display()))
        };
        if group.v2 {
            let dir = &group.dirs[0];
            if let Some((quota, period)) = quota {
                set(dir.join("cpu.max"), format!("{quota} {period}"))?;
            }
            if let Some(bytes) = limits.memory {
                set(dir.join("memory.max"), bytes.to_string())?;
                // No swap: the limit is the memory the replica may use.
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            }
        } else {
            let cpu = &group.dirs[1];
            if let Some((quota, period)) = quota {
                set(cpu.join("cpu.cfs_period_us"), period.to_string())?;
                set(cpu.join("cpu.cfs_quota_us"), quota.to_string())?;
            }
            if let Some(bytes) = limits.memory {
                set(group.memory.join("memory.limit_in_bytes"), bytes.to_string())?;
                let _ = std::fs::write(group.memory.join("memory.memsw.limit_in_bytes"), bytes.to_string());
            }
        }
        Ok(group)
    }
}

impl ReplicaCgroup {
    /// The `cgroup.procs` files a new replica writes its own pid into
    /// before it runs its command (see the process driver's `pre_exec`).
    pub fn procs_files(&self) -> Vec<std::ffi::CString> {
        self.dirs
            .iter()
            .filter_map(|d| std::ffi::CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes()).ok())
            .collect()
    }

    pub fn exists(&self) -> bool {
        self.dirs[0].exists()
    }

    /// Every process in the group now.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dirs[0].join("cgroup.procs"))
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// CPU time used by the whole group, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let text = std::fs::read_to_string(&self.cpu_usage).ok()?;
        if self.v2 {
            let usec: u64 = text.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())?;
            Some(usec as f64 / 1e6)
        } else {
            Some(text.trim().parse::<u64>().ok()? as f64 / 1e9)
        }
    }

    /// Memory charged to the group now, in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        let file = if self.v2 { "memory.current" } else { "memory.usage_in_bytes" };
        std::fs::read_to_string(self.memory.join(file)).ok()?.trim().parse().ok()
    }

    /// The group's memory limit, if it has one.
    pub fn memory_limit(&self) -> Option<u64> {
        let file = if self.v2 { "memory.max" } else { "memory.limit_in_bytes" };
        let value: u64 = std::fs::read_to_string(self.memory.join(file)).ok()?.trim().parse().ok()?;
        // v1 says "no limit" with a huge number.
        (value < (1 << 62)).then_some(value)
    }

    /// How many times the kernel killed a process of the group for memory.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        std::fs::read_to_string(self.memory.join(file))
            .ok()
            .and_then(|text| text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// SIGKILL to every process left in the group (those that left the
    /// process group included), until it is empty; bounded.
    pub fn kill_all(&self) -> usize {
        let mut killed = 0;
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok() {
                    killed += 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        killed
    }

    /// Removes the group's directories (it must be empty).
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The controllers a v2 group offers its children (`cgroup.controllers`).
/// The parent group's name for a state directory (canonical, as the
/// process driver gives it): `ebb-` and 32 bits of a hash of its path.
pub fn parent_name(state_dir: &Path) -> String {
    format!("ebb-{:08x}", fnv(state_dir.to_string_lossy().as_bytes()) as u32)
}

/// Removes the groups of this state directory's replicas that died while
/// no ebb watched them (ebb was killed, then they were): the kernel
/// refuses to remove a group that still holds a process or a group, so a
/// replica that lives on for adoption keeps its own. Returns how many went.
fn sweep_empty_groups(parents: &[PathBuf]) -> usize {
    let mut removed = 0;
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(parent) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        tracing::debug!(removed, "Removed the empty control groups of replicas that died while ebb was not running.");
    }
    removed
}

fn controllers(root: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    Some(text.split_whitespace().map(String::from).collect())
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

/// FNV-1a: a stable, dependency-free name for a state directory.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v1 mount: files as the kernel shows them.
    #[test]
    fn v1_groups_are_laid_out_per_hierarchy_and_read_back() {
        let mount = tempfile::tempdir().unwrap();
        for h in ["cpu", "cpuacct", "memory", "pids"] {
            std::fs::create_dir(mount.path().join(h)).unwrap();
            std::fs::write(mount.path().join(h).join("cgroup.procs"), "").unwrap();
        }
        let cgroups = Cgroups::detect_at(mount.path(), Path::new("/srv/shop/.ebb")).unwrap();
        assert_eq!(cgroups.version(), "v1");
        let group = cgroups.create("web-abc123", Limits { cpus: Some(0.5), memory: Some(64 << 20) }).unwrap();
        let base = &cgroups.base;
        let cpu = mount.path().join("cpu").join(base).join("web-abc123");
        assert_eq!(std::fs::read_to_string(cpu.join("cpu.cfs_period_us")).unwrap(), "10000");
        assert_eq!(std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(), "5000");
        let memory = mount.path().join("memory").join(base).join("web-abc123");
        assert_eq!(std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(), (64u64 << 20).to_string());
        std::fs::write(memory.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert_eq!(group.oom_kills(), 1);
        assert_eq!(group.memory_limit(), Some(64 << 20));
        std::fs::write(mount.path().join("cpuacct").join(base).join("web-abc123/cpuacct.usage"), "2500000000\n")
            .unwrap();
        assert_eq!(group.cpu_seconds(), Some(2.5));
        assert_eq!(group.procs_files().len(), 4, "memory, cpu, cpuacct, pids");
        // Another state directory: another parent group.
        let other = Cgroups::detect_at(mount.path(), Path::new("/srv/blog/.ebb")).unwrap();
        assert_ne!(other.base, cgroups.base);
    }

    #[test]
    fn v2_is_preferred_when_it_has_cpu_and_memory() {
        let mount = tempfile::tempdir().unwrap();
        let unified = mount.path().join("unified");
        std::fs::create_dir(&unified).unwrap();
        std::fs::write(unified.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let cgroups = Cgroups::detect_at(mount.path(), Path::new("/x")).unwrap();
        assert_eq!(cgroups.version(), "v2");
        let group = cgroups.create("web-abc123", Limits { cpus: Some(2.0), memory: None }).unwrap();
        let dir = unified.join(&cgroups.base).join("web-abc123");
        assert_eq!(std::fs::read_to_string(dir.join("cpu.max")).unwrap(), "20000 10000");
        // A tiny allotment: a longer period keeps the quota at 1 ms or more.
        assert_eq!(period_us(0.05), 20_000);
        assert_eq!(period_us(0.001), 100_000);
        std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(group.oom_kills(), 1);
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").unwrap();
        assert_eq!(group.cpu_seconds(), Some(1.5));
    }

    /// Groups left by replicas that died while no ebb ran are removed at
    /// start; one that still holds something (a live replica, here a
    /// file standing for its processes) stays.
    #[test]
    fn empty_groups_left_behind_are_swept_at_start() {
        let mount = tempfile::tempdir().unwrap();
        for h in ["cpu", "cpuacct", "memory"] {
            std::fs::create_dir_all(mount.path().join(h)).unwrap();
            std::fs::write(mount.path().join(h).join("cgroup.procs"), "").unwrap();
        }
        let state = Path::new("/var/lib/ebb-sweep");
        let first = Cgroups::detect_at(mount.path(), state).unwrap();
        let (dead, live) = (first.group("web-dead"), first.group("web-live"));
        for dir in dead.dirs.iter().chain(&live.dirs) {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(live.dirs[0].join("cgroup.procs"), "4242\n").unwrap();
        std::mem::forget(first); // killed: its parents stay
        let _again = Cgroups::detect_at(mount.path(), state).unwrap();
        assert!(dead.dirs.iter().all(|d| !d.exists()), "the dead replica's groups are gone");
        assert!(live.dirs[0].exists(), "a group with a process stays");
    }

    #[test]
    fn nothing_usable_says_why() {
        let mount = tempfile::tempdir().unwrap();
        let why = Cgroups::detect_at(mount.path(), Path::new("/x")).unwrap_err();
        assert!(why.contains("no cgroup v2"), "{why}");
    }
}
