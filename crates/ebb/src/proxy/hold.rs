//! Scale to zero at the balancer: requests held while the service wakes.
//!
//! With `[service.NAME.idle]`, a request that finds no routable replica is
//! held (at most `max_held` at once, each at most `hold_timeout`) and the
//! controller is woken at once (`Hold::wake`, like `outlier_suspect`). The
//! routable-set swap notifies `slot_freed`, which releases the held
//! requests; each then goes through the ordinary path (and the
//! `max_in_flight` queue, so a woken replica never gets more than its
//! limit). Answers of its own, each a 503 with `Retry-After` and a JSON
//! body: more than `max_held` held (at once), held past `hold_timeout`
//! ("waking"), the wake failed (naming what happened to the replica, and
//! at once for as long as the wake backoff lasts), and an ignored user
//! agent while the service is idle.
//!
//! Activity, for the controller's idle rule: the last request (not from an
//! ignored agent) that arrived or finished, as one atomic timestamp, and
//! the count of such requests at a replica now (`active`: from dispatch
//! until the response body, stream or tunnel ends).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ebb_core::config::IdleConfig;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use super::{ProxyBody, ServiceProxy};

/// The service as the balancer needs to know it (set by the controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IdlePhase {
    Awake = 0,
    Idle = 1,
    Waking = 2,
}

/// The balancer's side of scale to zero, one per service.
#[derive(Debug)]
pub struct Hold {
    /// `[service.NAME.idle]` is set (a fast check on the request path).
    pub(crate) enabled: AtomicBool,
    /// Zero of the timestamps below.
    epoch: Instant,
    /// Milliseconds since `epoch` + 1 of the last activity; 0: none yet.
    last_activity: AtomicU64,
    /// Milliseconds since `epoch` + 1 when the oldest request now held
    /// arrived (set when the held count leaves 0).
    oldest_held: AtomicU64,
    /// Requests at a replica now that count as activity (not from an
    /// ignored agent): open streams and tunnels included.
    active: AtomicU64,
    /// Requests held now, and the most at once since the last take.
    held: AtomicU64,
    held_peak: AtomicU64,
    /// Requests ever held; held and released to a replica, with the sum of
    /// their waits in microseconds; answered 503 by the hold (overflow,
    /// timeout, failed wake, backoff, ignored agent while idle).
    pub held_total: AtomicU64,
    pub released: AtomicU64,
    pub hold_micros: AtomicU64,
    /// The released requests' waits by [`HOLD_WAIT_BUCKETS_S`] (each
    /// bucket counts its own, the last is `+Inf`): the hold-wait histogram.
    hold_wait_buckets: [AtomicU64; HOLD_WAIT_BUCKETS_S.len() + 1],
    /// The longest wait of a released request since the last take (the
    /// first held request's, for the `woken` event).
    longest_release: AtomicU64,
    pub refused: AtomicU64,
    /// Wakes that ended with a replica routable (set by the controller).
    pub cold_starts: AtomicU64,
    phase: AtomicU8,
    /// Failed wakes so far: a held request that sees it change fails.
    failures: AtomicU64,
    /// Until when (ms since `epoch`) a failed wake holds new wakes, and why.
    backoff_until: AtomicU64,
    failure: std::sync::Mutex<String>,
    /// Wakes the controller: a request is held.
    pub wake: tokio::sync::Notify,
}

/// Bucket bounds of the hold-wait histogram (`ebb_service_hold_wait_seconds`),
/// seconds: a thaw's milliseconds up to a slow boot and `hold_timeout`'s
/// longest.
pub const HOLD_WAIT_BUCKETS_S: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Hold {
    fn observe_wait(&self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        let slot = HOLD_WAIT_BUCKETS_S.iter().position(|b| seconds <= *b).unwrap_or(HOLD_WAIT_BUCKETS_S.len());
        self.hold_wait_buckets[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The hold-wait histogram: sum (seconds), count, and (upper bound,
    /// observations in that bucket only) ascending, the last `+Inf`. The
    /// count is the buckets' total, so the three agree however requests
    /// race the read.
    pub fn hold_wait_histogram(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = HOLD_WAIT_BUCKETS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.hold_wait_buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        (self.hold_micros.load(Ordering::Relaxed) as f64 / 1e6, count, buckets)
    }
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            enabled: AtomicBool::new(false),
            epoch: Instant::now(),
            last_activity: AtomicU64::new(0),
            oldest_held: AtomicU64::new(0),
            active: AtomicU64::new(0),
            held: AtomicU64::new(0),
            held_peak: AtomicU64::new(0),
            held_total: AtomicU64::new(0),
            released: AtomicU64::new(0),
            hold_micros: AtomicU64::new(0),
            hold_wait_buckets: Default::default(),
            longest_release: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            phase: AtomicU8::new(IdlePhase::Awake as u8),
            failures: AtomicU64::new(0),
            backoff_until: AtomicU64::new(0),
            failure: std::sync::Mutex::new(String::new()),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Hold {
    fn ms_now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A request arrived or finished.
    pub(crate) fn touch(&self) {
        self.last_activity.fetch_max(self.ms_now(), Ordering::Relaxed);
    }

    pub(crate) fn active_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// An active request ended: that is activity too.
    pub(crate) fn active_ended(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// Requests at a replica now that count as activity.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// How long since the last activity; `None`: none since start.
    pub fn quiet_for(&self) -> Option<Duration> {
        match self.last_activity.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(self.ms_now().saturating_sub(at))),
        }
    }

    /// Requests held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The most requests held at once since the last call (at least those
    /// held now).
    pub fn take_held_peak(&self) -> u64 {
        let now = self.held();
        self.held_peak.swap(now, Ordering::Relaxed).max(now)
    }

    /// How long the oldest request held now has waited.
    pub fn oldest_wait(&self) -> Option<Duration> {
        match (self.held(), self.oldest_held.load(Ordering::Relaxed)) {
            (0, _) | (_, 0) => None,
            (_, at) => Some(Duration::from_millis(self.ms_now().saturating_sub(at))),
        }
    }

    /// How long the first held request waited, as of now: the oldest held
    /// now, or the longest wait released since the last call. Resets.
    pub fn take_first_wait(&self) -> Option<Duration> {
        let released = Duration::from_micros(self.longest_release.swap(0, Ordering::Relaxed));
        match self.oldest_wait() {
            Some(held) => Some(held.max(released)),
            None => (!released.is_zero()).then_some(released),
        }
    }

    pub fn phase(&self) -> IdlePhase {
        match self.phase.load(Ordering::Relaxed) {
            1 => IdlePhase::Idle,
            2 => IdlePhase::Waking,
            _ => IdlePhase::Awake,
        }
    }

    pub fn set_phase(&self, phase: IdlePhase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The wake failed: every request held now fails with `message`, and
    /// new ones are refused at once for `backoff`.
    pub fn fail_wake(&self, proxy: &ServiceProxy, message: String, backoff: Duration) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = message;
        self.backoff_until.store(self.ms_now() + backoff.as_millis() as u64, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        proxy.slot_freed.notify_waiters();
    }

    fn failure(&self) -> String {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// While a failed wake's backoff lasts: its time left.
    fn backoff_left(&self) -> Option<Duration> {
        let until = self.backoff_until.load(Ordering::Relaxed);
        let now = self.ms_now();
        (until > now).then(|| Duration::from_millis(until - now))
    }
}

/// Counts a held request for as long as it is held.
struct Holding<'a>(&'a Hold);

impl<'a> Holding<'a> {
    fn enter(hold: &'a Hold, max: u64) -> Option<Self> {
        let mut now = hold.held.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match hold.held.compare_exchange_weak(now, now + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    if now == 0 {
                        hold.oldest_held.store(hold.ms_now(), Ordering::Relaxed);
                    }
                    hold.held_peak.fetch_max(now + 1, Ordering::Relaxed);
                    hold.held_total.fetch_add(1, Ordering::Relaxed);
                    return Some(Holding(hold));
                }
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What holding a request came to.
pub(crate) enum Held {
    /// A replica is routable; the request waited this long.
    Released(Duration),
    /// The balancer's own answer.
    Refused(Response<ProxyBody>),
}

/// `ebb-cold-start`: the milliseconds a request was held.
pub(crate) const COLD_START_HEADER: &str = "ebb-cold-start";

/// Holds a request until a replica is routable (see the module's doc).
pub(crate) async fn hold(proxy: &ServiceProxy, idle: &IdleConfig) -> Held {
    let hold = &proxy.hold;
    let retry = super::admission::retry_after(idle.hold_timeout);
    if let Some(left) = hold.backoff_left() {
        let message = format!("{}; not waking again for {} s", hold.failure(), left.as_secs().max(1));
        return Held::Refused(refuse(proxy, &message, left.as_secs().clamp(1, 300)));
    }
    let Some(_holding) = Holding::enter(hold, u64::from(idle.max_held)) else {
        return Held::Refused(refuse(proxy, "the service is waking and too many requests are held (max_held)", retry));
    };
    let arrived = Instant::now();
    let failures_at = hold.failures.load(Ordering::Relaxed);
    hold.wake.notify_one();
    let deadline = tokio::time::Instant::now() + idle.hold_timeout;
    loop {
        // Register for a wake-up before checking, so none is missed.
        let notified = proxy.slot_freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !proxy.routable().is_empty() {
            let waited = arrived.elapsed();
            hold.released.fetch_add(1, Ordering::Relaxed);
            hold.hold_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            hold.observe_wait(waited);
            hold.longest_release.fetch_max(waited.as_micros() as u64, Ordering::Relaxed);
            return Held::Released(waited);
        }
        if hold.failures.load(Ordering::Relaxed) != failures_at {
            let left = hold.backoff_left().unwrap_or_default().as_secs().clamp(1, 300);
            return Held::Refused(refuse(proxy, &hold.failure(), left));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {
                let message = format!(
                    "the service is waking and no replica was ready within hold_timeout ({})",
                    ebb_core::scaling::metrics::duration(idle.hold_timeout)
                );
                return Held::Refused(refuse(proxy, &message, retry));
            }
        }
    }
}

/// A request from an ignored user agent while the service is idle.
pub(crate) fn idle_answer(proxy: &ServiceProxy, idle: &IdleConfig) -> Response<ProxyBody> {
    let message = "the service is idle; requests from this user agent do not wake it";
    refuse(proxy, message, super::admission::retry_after(idle.hold_timeout))
}

fn refuse(proxy: &ServiceProxy, message: &str, retry_after: u64) -> Response<ProxyBody> {
    // Not `shed`: that is the max_in_flight queue, which the autoscaler
    // reads as saturation.
    proxy.hold.refused.fetch_add(1, Ordering::Relaxed);
    let mut response = super::forward::local_error(proxy, StatusCode::SERVICE_UNAVAILABLE, message, false);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after));
    response
}
