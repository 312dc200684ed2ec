//! ebb's own process, for Prometheus's standard `process_*` metrics: CPU
//! seconds, resident and virtual memory, open and allowed descriptors, and
//! the start time — read from `/proc/self` at each scrape.

/// One reading of ebb's process; `None` fields could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessReading {
    /// User plus system CPU time since start.
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// The soft limit (`RLIMIT_NOFILE`).
    pub max_fds: Option<u64>,
    /// When the process started, in Unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessReading {
    pub fn now() -> ProcessReading {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        // Fields after the command name (which may hold spaces): field 3
        // (state) is index 0 here.
        let fields: Vec<&str> = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok()));
        ProcessReading {
            // utime (14) + stime (15), in clock ticks.
            cpu_seconds: field(14).zip(field(15)).map(|(u, s)| (u + s) as f64 / ticks),
            // rss (24) in pages, vsize (23) in bytes.
            resident_bytes: field(24).map(|pages| pages * page),
            virtual_bytes: field(23),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft),
            // starttime (22) in ticks after boot.
            start_time_seconds: boot.zip(field(22)).map(|(boot, start)| boot as f64 + start as f64 / ticks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProcessReading;

    #[test]
    fn this_process_reads_as_itself() {
        let r = ProcessReading::now();
        assert!(r.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(r.resident_bytes.is_some_and(|b| b > 1024 * 1024), "{r:?}");
        assert!(r.virtual_bytes >= r.resident_bytes);
        assert!(r.open_fds.is_some_and(|n| n >= 3));
        assert!(r.max_fds >= r.open_fds);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(r.start_time_seconds.is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0 * 30.0), "{r:?}");
    }
}
