//! CPU and memory of a replica: [`read_groups`] reads a process group's
//! totals from `/proc` (the process driver's `usage`), and [`CpuMeter`]
//! turns any driver's cumulative readings into utilisation.
//!
//! A process-driver replica is a process group, so its CPU is the sum over
//! every process whose pgrp is the replica's pgid: `sh -c` wrappers, workers
//! and all. Utilisation is the CPU time used between two samples over the
//! wall time between them, relative to the replica's allotment (`cpu` in the
//! config), like AWS's `CPUUtilization`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One reading of a replica's totals (a process group's, or a container's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupUsage {
    /// utime + stime of every live process in the group, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory of the group, in bytes.
    pub rss_bytes: u64,
    /// Processes found in the group (or in the container).
    pub processes: u32,
}

/// Fields of `/proc/<pid>/stat` that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    pgrp: i32,
    utime_ticks: u64,
    stime_ticks: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' : state(3) ppid(4) pgrp(5) ... utime(14) stime(15) ... rss(24)
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        pgrp: field(5)?.parse().ok()?,
        utime_ticks: field(14)?.parse().ok()?,
        stime_ticks: field(15)?.parse().ok()?,
        rss_pages: field(24)?.parse().ok()?,
    })
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map(|v| v as f64).unwrap_or(100.0)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map(|v| v as u64).unwrap_or(4096)
}

/// Reads the usage of every requested process group in one pass over `/proc`.
pub fn read_groups(pgids: &[i32]) -> HashMap<i32, GroupUsage> {
    let mut out: HashMap<i32, GroupUsage> = HashMap::new();
    if pgids.is_empty() {
        return out;
    }
    let ticks = clock_ticks_per_second();
    let page = page_size();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        // Processes come and go between read_dir and read: skip the gone.
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(stat) = parse_stat(&text) else { continue };
        if !pgids.contains(&stat.pgrp) {
            continue;
        }
        let usage = out.entry(stat.pgrp).or_insert(GroupUsage { cpu_seconds: 0.0, rss_bytes: 0, processes: 0 });
        usage.cpu_seconds += (stat.utime_ticks + stat.stime_ticks) as f64 / ticks;
        usage.rss_bytes += stat.rss_pages * page;
        usage.processes += 1;
    }
    out
}

/// Turns successive readings into utilisation percentages, per replica id.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: HashMap<String, (Instant, f64)>,
}

impl CpuMeter {
    /// Utilisation of the replica since the previous call, as a percentage
    /// of `allotment_cores` (100 % = the whole allotment busy). `None` on the
    /// first reading or when no time has passed: there is no rate yet.
    pub fn utilisation(
        &mut self,
        replica: &str,
        now: Instant,
        usage: &GroupUsage,
        allotment_cores: f64,
    ) -> Option<f64> {
        let previous = self.last.insert(replica.to_string(), (now, usage.cpu_seconds));
        let (then, cpu_then) = previous?;
        let wall = now.checked_duration_since(then).unwrap_or(Duration::ZERO).as_secs_f64();
        if wall <= 0.0 || allotment_cores <= 0.0 {
            return None;
        }
        // A process that exited takes its ticks with it: never go negative.
        let used = (usage.cpu_seconds - cpu_then).max(0.0);
        Some(used / wall / allotment_cores * 100.0)
    }

    /// Forgets replicas that are no longer watched.
    pub fn retain(&mut self, live: &[String]) {
        self.last.retain(|id, _| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_the_name() {
        let line = "4242 (my (weird) app) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 1000000 321 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat, Stat { pgrp: 4240, utime_ticks: 250, stime_ticks: 50, rss_pages: 321 });
    }

    #[test]
    fn utilisation_is_relative_to_the_allotment() {
        let mut meter = CpuMeter::default();
        let t0 = Instant::now();
        let usage = |s| GroupUsage { cpu_seconds: s, rss_bytes: 0, processes: 1 };
        assert_eq!(meter.utilisation("web-1", t0, &usage(10.0), 0.5), None, "no rate from one reading");
        // 0.25 s of CPU in 1 s on half a core = 50 %.
        let u = meter.utilisation("web-1", t0 + Duration::from_secs(1), &usage(10.25), 0.5).unwrap();
        assert!((u - 50.0).abs() < 1e-9, "{u}");
        // A process left the group: usage never goes negative.
        let u = meter.utilisation("web-1", t0 + Duration::from_secs(2), &usage(9.0), 0.5).unwrap();
        assert_eq!(u, 0.0);
    }

    #[test]
    fn reads_this_test_process_group() {
        let pgid = nix::unistd::getpgrp().as_raw();
        // Burn a little CPU so the reading is not zero.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let groups = read_groups(&[pgid]);
        let usage = groups.get(&pgid).expect("our own group is visible");
        assert!(usage.processes >= 1);
        assert!(usage.cpu_seconds > 0.0);
        assert!(usage.rss_bytes > 0);
    }
}
