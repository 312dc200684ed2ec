//! ebb's host as a level of capacity: how many CPUs ebb may use and how
//! busy they are, read once a second for every service whose replicas run
//! here (process and docker drivers).
//!
//! - **CPUs**: `available_parallelism`, which counts the CPUs ebb's
//!   affinity mask allows and a cgroup CPU quota.
//! - **Busy**: from `/proc/stat`, the per-CPU lines of the CPUs ebb may run
//!   on: user, nice, system, irq, softirq and steal (time a VM's CPU was
//!   taken by its host counts as busy: it was not ours to give), against
//!   the total. Every process counts, not only ebb's replicas: a
//!   neighbour's load fills the host all the same.
//! - **Pressure**: `/proc/pressure/cpu` "some avg10" where the kernel has
//!   it: the share of the last 10 s in which some runnable task waited for
//!   a CPU. Shown beside the busy figure; it says how contended the host is.

use std::sync::Mutex;
use std::time::Duration;

use ebb_core::scaling::HostSample;
use tokio_util::sync::CancellationToken;

/// The latest reading, shared by every controller that samples the host.
#[derive(Debug, Default)]
pub struct HostMonitor {
    latest: Mutex<Option<HostSample>>,
}

impl HostMonitor {
    /// The last second's reading; `None` until two readings exist or when
    /// `/proc/stat` cannot be read.
    pub fn latest(&self) -> Option<HostSample> {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the host once a second until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let allowed = allowed_cpus();
        let mut previous: Option<CpuTimes> = None;
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = std::fs::read_to_string("/proc/stat").ok().and_then(|s| CpuTimes::parse(&s, allowed.as_deref()));
            let sample = match (&previous, &now) {
                (Some(before), Some(after)) => after.busy_since(before).map(|share| HostSample {
                    cpus,
                    busy_cpus: share * cpus,
                    pressure: std::fs::read_to_string("/proc/pressure/cpu").ok().and_then(|s| pressure_some(&s)),
                }),
                _ => None,
            };
            *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = sample;
            previous = now;
        }
    }
}

/// Busy and total jiffies over the CPUs ebb may use.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Sums the `cpuN` lines of `/proc/stat` for the allowed CPUs (every
    /// CPU when the mask is unknown).
    fn parse(stat: &str, allowed: Option<&[usize]>) -> Option<CpuTimes> {
        let mut times = CpuTimes { busy: 0, total: 0 };
        let mut seen = false;
        for line in stat.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(n) = fields.next().and_then(|name| name.strip_prefix("cpu")).and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if allowed.is_some_and(|a| !a.contains(&n)) {
                continue;
            }
            // user nice system idle iowait irq softirq steal (guest is in user).
            let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
            if v.len() < 8 {
                continue;
            }
            times.busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
            times.total += v.iter().sum::<u64>();
            seen = true;
        }
        seen.then_some(times)
    }

    /// The busy share (0–1) between two readings.
    fn busy_since(&self, before: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let busy = self.busy.checked_sub(before.busy)?;
        (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// `Cpus_allowed_list` of `/proc/self/status`: `0-1,4`.
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim();
    parse_cpu_list(list)
}

fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse::<usize>().ok()?),
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// "some avg10=46.29 …" -> 0.4629.
fn pressure_some(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let avg10 = line.split_ascii_whitespace().find_map(|f| f.strip_prefix("avg10="))?;
    avg10.parse::<f64>().ok().map(|p| p / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  300 0 100 600 0 0 0 0 0 0\n\
cpu0 100 0 50 350 0 0 0 0 0 0\n\
cpu1 200 0 50 250 0 0 0 0 0 0\n\
intr 1 2 3\n";

    #[test]
    fn busy_counts_the_allowed_cpus_only() {
        let all = CpuTimes::parse(STAT, None).unwrap();
        assert_eq!(all, CpuTimes { busy: 400, total: 1000 });
        let one = CpuTimes::parse(STAT, Some(&[1])).unwrap();
        assert_eq!(one, CpuTimes { busy: 250, total: 500 });
        let later = CpuTimes { busy: 400 + 180, total: 1000 + 200 };
        assert_eq!(later.busy_since(&all), Some(0.9));
        assert_eq!(all.busy_since(&later), None, "a counter never goes back");
    }

    #[test]
    fn steal_is_busy() {
        let stat = "cpu0 10 0 10 50 0 0 0 30 0 0\n";
        assert_eq!(CpuTimes::parse(stat, None).unwrap(), CpuTimes { busy: 50, total: 100 });
    }

    #[test]
    fn cpu_lists_and_pressure_parse() {
        assert_eq!(parse_cpu_list("0-1,4"), Some(vec![0, 1, 4]));
        assert_eq!(parse_cpu_list("x"), None);
        let psi =
            "some avg10=46.29 avg60=16.39 avg300=6.47 total=29344068\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(pressure_some(psi), Some(0.4629));
    }
}
