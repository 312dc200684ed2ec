//! Per-replica concurrency limits and the balancer's queue (story S3).
//!
//! With `proxy.max_in_flight` set, a request goes to a replica only while
//! that replica has fewer requests in flight than the limit (HAProxy's
//! `maxconn`). When every replica is at its limit the request waits in the
//! balancer — bounded by `max_queue` waiting requests and `queue_timeout` —
//! and then gets a fast 503 with `Retry-After` instead of hanging. A busy
//! replica is never overloaded into failing its health checks, and the time
//! spent waiting is the `queue_time` metric the autoscaler can scale on.
//!
//! The limit is soft by a hair: two requests admitted at the same instant
//! may both see the last free slot. Waiters are woken when a request ends
//! or the routable set changes; a woken waiter re-checks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, ServiceProxy};

/// What the queue decided for one request.
pub(crate) enum Admission {
    Admitted(Arc<Backend>),
    /// No replica is routable at all (and the request was not queued).
    NoReplica,
    /// Waited too long, or the queue is full.
    Shed {
        why: &'static str,
    },
}

/// Counts a waiting request for as long as it waits (even if the client
/// goes away and the future is dropped).
struct Waiting<'a>(&'a ServiceProxy);

impl<'a> Waiting<'a> {
    fn enter(proxy: &'a ServiceProxy) -> Option<Self> {
        let max = proxy.peek().config.max_queue as u64;
        let mut now = proxy.queued.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match proxy.queued.compare_exchange_weak(now, now + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    proxy.queued_peak.fetch_max(now + 1, Ordering::Relaxed);
                    return Some(Waiting(proxy));
                }
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The least loaded routable replica under `limit`, if any.
fn under_limit(proxy: &ServiceProxy, limit: u64) -> Option<Arc<Backend>> {
    let set = proxy.routable();
    let chosen = super::balancing::least_costly(proxy, set.iter().map(|b| &**b).filter(|b| b.in_flight() < limit))?;
    set.iter().find(|b| std::ptr::eq(&***b, chosen)).cloned()
}

/// Admits a request to a replica, waiting in the queue if all are full.
/// Only called when `max_in_flight` is set.
pub(crate) async fn admit(proxy: &ServiceProxy, limit: u32) -> Admission {
    let limit = limit as u64;
    if let Some(backend) = under_limit(proxy, limit) {
        return Admission::Admitted(backend);
    }
    if proxy.routable().is_empty() {
        return Admission::NoReplica;
    }
    let Some(_waiting) = Waiting::enter(proxy) else {
        proxy.stats.shed.fetch_add(1, Ordering::Relaxed);
        return Admission::Shed { why: "every replica is at its limit and the queue is full" };
    };
    let deadline = tokio::time::Instant::now() + proxy.peek().config.queue_timeout;
    loop {
        // Register for a wake-up before checking, so none is missed.
        let notified = proxy.slot_freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(backend) = under_limit(proxy, limit) {
            return Admission::Admitted(backend);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {
                proxy.stats.shed.fetch_add(1, Ordering::Relaxed);
                return Admission::Shed { why: "waited for a replica longer than the queue timeout" };
            }
        }
    }
}

/// Seconds a shed client should wait before trying again.
pub(crate) fn retry_after(queue_timeout: Duration) -> u64 {
    queue_timeout.as_secs().clamp(1, 30)
}
