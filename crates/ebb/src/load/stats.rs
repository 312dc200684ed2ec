//! Counting: workers record into sharded histograms; once a second the
//! collector merges the shards into that second's row and the run's totals.
//!
//! A worker records into its shard under an uncontended mutex (a few
//! workers share one shard, so memory stays bounded with thousands of
//! workers). Latencies are microseconds in HdrHistograms (3 significant
//! digits, growing as needed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::http::{Failure, RequestOutcome};

/// Response status codes are counted in a table indexed by code.
const STATUS_SLOTS: usize = 600;

/// Microseconds, 3 significant digits; sized for a minute and growing
/// beyond that when needed (so recording never allocates in practice).
fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

/// What one shard has seen. Counters are cumulative; the histogram holds
/// the latencies recorded since the collector last took it.
struct ShardData {
    second: Histogram<u64>,
    ok: u64,
    errors: u64,
    bytes: u64,
    status: Box<[u64; STATUS_SLOTS]>,
    failures: [u64; Failure::ALL.len()],
}

/// One shard of the counters, shared by a few workers (aligned so two
/// shards never share a cache line).
#[repr(align(128))]
pub struct Shard {
    data: Mutex<ShardData>,
    /// Requests started (counted when they leave, not when they return).
    sent: AtomicU64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            data: Mutex::new(ShardData {
                second: new_histogram(),
                ok: 0,
                errors: 0,
                bytes: 0,
                status: Box::new([0; STATUS_SLOTS]),
                failures: [0; Failure::ALL.len()],
            }),
            sent: AtomicU64::new(0),
        }
    }

    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished request. `latency` counts from the request's start
    /// (in the open model, its scheduled start). "ok" is a response with a
    /// status below 500; errors are transport failures and 5xx responses.
    pub fn record(&self, outcome: RequestOutcome, latency: Duration) {
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            RequestOutcome::Response { status, bytes } => {
                let micros = (latency.as_micros() as u64).max(1);
                if d.second.record(micros).is_err() {
                    d.second.saturating_record(micros);
                }
                d.status[(status as usize).min(STATUS_SLOTS - 1)] += 1;
                d.bytes += bytes;
                if status < 500 {
                    d.ok += 1;
                } else {
                    d.errors += 1;
                }
            }
            RequestOutcome::Failed(failure) => {
                d.failures[failure.index()] += 1;
                d.errors += 1;
            }
        }
    }
}

/// All shards, handed out to workers round-robin.
pub struct Shards(Vec<Shard>);

impl Shards {
    pub fn new(workers: usize) -> Arc<Shards> {
        let count = workers.clamp(1, 32);
        Arc::new(Shards((0..count).map(|_| Shard::new()).collect()))
    }

    pub fn for_worker(&self, worker: usize) -> &Shard {
        &self.0[worker % self.0.len()]
    }
}

/// One second (or the last, partial one) of the run.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// Seconds since the start, at the end of this interval.
    pub time_s: f64,
    /// Length of the interval (1 s, except the last).
    pub length_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Open model: requests due in this interval that were not sent.
    pub dropped: u64,
    /// Latency percentiles of this interval's responses, in ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Cumulative requests finished (responses and failures).
    pub done_total: u64,
}

impl Tick {
    /// Finished requests per second in this interval.
    pub fn rps(&self) -> f64 {
        if self.length_s > 0.0 {
            (self.ok + self.errors) as f64 / self.length_s
        } else {
            0.0
        }
    }
}

/// Everything the run counted, for the summary.
#[derive(Debug, Clone)]
pub struct Totals {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    pub bytes: u64,
    pub latency: Histogram<u64>,
    /// (status, count), by status.
    pub status: Vec<(u16, u64)>,
    /// (failure, count), most frequent first.
    pub failures: Vec<(Failure, u64)>,
}

impl Totals {
    /// Requests finished: with a response or a transport failure.
    pub fn requests(&self) -> u64 {
        self.ok + self.errors
    }

    pub fn responses(&self) -> u64 {
        self.status.iter().map(|(_, n)| n).sum()
    }
}

/// Merges the shards once per tick; owned by the reporter.
pub struct Collector {
    shards: Arc<Shards>,
    dropped: Arc<AtomicU64>,
    total: Histogram<u64>,
    scratch: Histogram<u64>,
    last_sent: u64,
    last_ok: u64,
    last_errors: u64,
    last_dropped: u64,
    last_time: f64,
}

impl Collector {
    pub fn new(shards: Arc<Shards>, dropped: Arc<AtomicU64>) -> Collector {
        Collector {
            shards,
            dropped,
            total: new_histogram(),
            scratch: new_histogram(),
            last_sent: 0,
            last_ok: 0,
            last_errors: 0,
            last_dropped: 0,
            last_time: 0.0,
        }
    }

    /// Takes what happened since the last call (`now_s` seconds after the start).
    pub fn tick(&mut self, now_s: f64) -> Tick {
        self.scratch.reset();
        let (mut sent, mut ok, mut errors) = (0, 0, 0);
        for shard in &self.shards.0 {
            sent += shard.sent.load(Ordering::Relaxed);
            let mut d = shard.data.lock().unwrap_or_else(|p| p.into_inner());
            let _ = self.scratch.add(&d.second);
            d.second.reset();
            ok += d.ok;
            errors += d.errors;
        }
        let _ = self.total.add(&self.scratch);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let percentile = |q: f64| (!self.scratch.is_empty()).then(|| self.scratch.value_at_quantile(q) as f64 / 1000.0);
        let tick = Tick {
            time_s: now_s,
            length_s: now_s - self.last_time,
            sent: sent - self.last_sent,
            ok: ok - self.last_ok,
            errors: errors - self.last_errors,
            dropped: dropped - self.last_dropped,
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
            done_total: ok + errors,
        };
        (self.last_sent, self.last_ok, self.last_errors, self.last_dropped, self.last_time) =
            (sent, ok, errors, dropped, now_s);
        tick
    }

    /// The run's totals (call after a final [`Collector::tick`]).
    pub fn totals(&self) -> Totals {
        let mut status = vec![0u64; STATUS_SLOTS];
        let mut failures = [0u64; Failure::ALL.len()];
        let mut bytes = 0;
        for shard in &self.shards.0 {
            let d = shard.data.lock().unwrap_or_else(|p| p.into_inner());
            for (sum, n) in status.iter_mut().zip(d.status.iter()) {
                *sum += n;
            }
            for (sum, n) in failures.iter_mut().zip(d.failures.iter()) {
                *sum += n;
            }
            bytes += d.bytes;
        }
        let mut failures: Vec<(Failure, u64)> =
            Failure::ALL.iter().copied().zip(failures).filter(|(_, n)| *n > 0).collect();
        failures.sort_by(|a, b| b.1.cmp(&a.1));
        Totals {
            sent: self.last_sent,
            ok: self.last_ok,
            errors: self.last_errors,
            dropped: self.last_dropped,
            bytes,
            latency: self.total.clone(),
            status: status.iter().enumerate().filter(|(_, n)| **n > 0).map(|(code, n)| (code as u16, *n)).collect(),
            failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_deltas_and_totals_add_up() {
        let shards = Shards::new(4);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut c = Collector::new(shards.clone(), dropped.clone());
        for w in 0..4 {
            let s = shards.for_worker(w);
            s.sent();
            s.record(RequestOutcome::Response { status: 200, bytes: 10 }, Duration::from_millis(2));
        }
        shards.for_worker(0).sent();
        shards.for_worker(0).record(RequestOutcome::Response { status: 503, bytes: 0 }, Duration::from_millis(100));
        let t1 = c.tick(1.0);
        assert_eq!((t1.sent, t1.ok, t1.errors, t1.done_total), (5, 4, 1, 5));
        assert!((1.99..=2.01).contains(&t1.p50_ms.unwrap()));
        assert!((99.0..=101.0).contains(&t1.p99_ms.unwrap()));
        shards.for_worker(1).sent();
        shards.for_worker(1).record(RequestOutcome::Failed(Failure::Timeout), Duration::from_secs(1));
        dropped.store(3, Ordering::Relaxed);
        let t2 = c.tick(1.5);
        assert_eq!((t2.sent, t2.ok, t2.errors, t2.dropped, t2.p50_ms), (1, 0, 1, 3, None));
        assert_eq!(t2.rps(), 2.0);
        let totals = c.totals();
        assert_eq!((totals.sent, totals.ok, totals.errors, totals.dropped, totals.bytes), (6, 4, 2, 3, 40));
        assert_eq!(totals.status, vec![(200, 4), (503, 1)]);
        assert_eq!(totals.failures, vec![(Failure::Timeout, 1)]);
        assert_eq!(totals.latency.len(), 5);
        assert_eq!(totals.requests(), 6);
        assert_eq!(totals.responses(), 5);
    }
}
