//! File descriptors: ebb's budget of open files.
//!
//! Every client connection, every connection to a replica, every health
//! check, every replica's log file and the state store take a descriptor.
//! Under systemd the soft limit is 1,024 by default, which 1,200 idle
//! keep-alive clients used up (issue 13): health checks then failed with
//! "Too many open files" and new replicas could not get a port. So `ebb up`
//! raises the soft limit to the hard one at start, and each balancer caps
//! its client connections (`proxy.max_connections`) so that a reserve
//! stays free for everything else.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The open-file limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit ebb inherited.
    pub inherited: u64,
    /// The soft limit now (the hard limit, unless raising failed).
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unprivileged
/// process may, and nothing is lost by it).
pub fn raise() -> Result<FdLimit, nix::Error> {
    let (inherited, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if inherited < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(FdLimit { inherited, soft, hard })
}

/// Descriptors kept back from client connections: health checks, replicas
/// starting (a port probe and a log file each), the state store, the admin
/// API, the event stream, Docker. A quarter of the limit, at least 32 and
/// at most 1,024.
pub fn reserve(limit: u64) -> u64 {
    (limit / 4).clamp(32, 1024)
}

/// The default `max_connections` of each of `listeners` balancers: what is
/// left after the reserve, halved because each client connection may hold a
/// connection to a replica too, and shared between the listeners. At least
/// 16, at most 1,000,000.
///
/// For example a limit of 1,024 with one service: (1024 − 256) / 2 = 384.
pub fn default_max_connections(limit: u64, listeners: usize) -> u32 {
    let per_listener = limit.saturating_sub(reserve(limit)) / 2 / listeners.max(1) as u64;
    per_listener.clamp(16, 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_a_reserve_and_splits_the_rest() {
        assert_eq!(default_max_connections(1024, 1), 384);
        assert_eq!(default_max_connections(1024, 2), 192);
        assert_eq!(default_max_connections(256, 1), 96);
        assert_eq!(default_max_connections(64, 1), 16, "never below 16");
        assert_eq!(default_max_connections(1 << 20, 1), 523_776);
        assert_eq!(default_max_connections(u64::MAX, 1), 1_000_000);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let limit = raise().unwrap();
        assert_eq!((limit.inherited, limit.hard), (soft, hard));
        assert_eq!(limit.soft, hard);
    }
}
