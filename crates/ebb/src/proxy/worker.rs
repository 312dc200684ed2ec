//! Which balancer worker thread runs the caller, and how many there are.
//! A leaf: `server.rs` starts the workers and `upstream.rs` shards its
//! connection pools by worker, and neither imports the other for it.

use std::cell::Cell;

/// Upper bound on balancer worker threads; per-worker structures (the
/// upstream pool's shards) have this many slots.
pub(crate) const MAX_WORKERS: usize = 64;

thread_local! {
    /// Which balancer worker thread this is (0 outside them).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the balancer worker thread running the caller.
pub(crate) fn index() -> usize {
    WORKER.with(|w| w.get())
}

/// Marks the calling thread as worker `index`; once, as the worker starts.
pub(super) fn set_index(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// One worker thread per core, unless `EBB_PROXY_THREADS` says otherwise;
/// at most `MAX_WORKERS`.
pub(super) fn count() -> usize {
    if let Some(n) = std::env::var("EBB_PROXY_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        if n > 0 {
            return n.min(MAX_WORKERS);
        }
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_WORKERS)
}
