//! Real CPU work for `/work`, optionally behind a CPU budget.
//!
//! Autoscaling only becomes visible when a replica saturates, and on a 2-core
//! laptop a replica that may use a whole core never does before the machine
//! does. `--cpu-budget F` therefore models a *small instance*: the burns of
//! all `/work` requests go through "budgeted CPUs" that each run at most
//! `F / n` of a core (`n = ceil(F)` of them, so `F = 0.25` is one quarter-core
//! and `F = 2` two full cores).
//!
//! Each budgeted CPU is a dedicated OS thread with a virtual timeline: it burns
//! in slices of [`SLICE`], and a slice that started at `t` keeps that CPU busy
//! until `t + slice / fraction`; the next slice (of this request or the next
//! one) starts no earlier. Requests wait in one FIFO queue until a budgeted
//! CPU is free, and that wait is reported as `queued_ms`, so an overloaded
//! replica shows growing latency and a busy CPU, like the real thing.
//!
//! Burns are real busy loops on threads that are not the async workers, so
//! `/gtg` keeps answering while `/work` saturates the budget.
//!
//! Work that nobody waits for any more (the client went away, so the handler
//! future was dropped) is abandoned at the next slice: it would only burn CPU
//! for no one and delay shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Granularity of a burn: small enough that queueing looks smooth and an
/// abandoned request stops quickly, large enough that the bookkeeping is
/// negligible next to the busy loop.
pub const SLICE: Duration = Duration::from_millis(5);

/// The largest accepted `--cpu-budget`: one thread per budgeted core, and no
/// machine running the demo has more than this.
pub const MAX_BUDGET: f64 = 64.0;

/// What a burn did, as measured (not as requested).
#[derive(Debug, Clone, Copy)]
pub struct BurnReport {
    /// Time between asking for CPU and the first slice starting.
    pub queued: Duration,
}

/// Where `/work` burns its CPU.
pub enum Cpu {
    /// No budget: burn on tokio's blocking pool, as much as the machine gives.
    Unlimited,
    /// A FIFO queue served by budgeted CPU threads.
    Budgeted {
        /// Jobs for the budgeted CPUs; dropping it stops their threads.
        jobs: mpsc::Sender<Job>,
    },
}

/// One request's worth of CPU, waiting for a budgeted CPU.
pub struct Job {
    cpu: Duration,
    enqueued: Instant,
    abandoned: Arc<AtomicBool>,
    done: oneshot::Sender<BurnReport>,
}

impl Cpu {
    /// Starts the budgeted CPU threads. `budget` is a fraction of one core
    /// (`None` = unlimited) in `(0, MAX_BUDGET]`.
    pub fn new(budget: Option<f64>) -> anyhow::Result<Cpu> {
        let Some(budget) = budget else { return Ok(Cpu::Unlimited) };
        anyhow::ensure!(
            budget.is_finite() && budget > 0.0 && budget <= MAX_BUDGET,
            "--cpu-budget must be a fraction of one core in (0, {MAX_BUDGET}], e.g. 0.25; got {budget}"
        );
        let threads = budget.ceil() as usize;
        let fraction = budget / threads as f64;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("budgeted-cpu-{i}"))
                .spawn(move || budgeted_cpu(&queue, fraction))?;
        }
        Ok(Cpu::Budgeted { jobs })
    }

    /// Burns `cpu` of CPU time and returns once it is done. Dropping the
    /// returned future abandons the remaining work.
    pub async fn burn(&self, cpu: Duration) -> anyhow::Result<BurnReport> {
        let asked = Instant::now();
        if cpu.is_zero() {
            return Ok(BurnReport { queued: Duration::ZERO });
        }
        let abandoned = AbandonOnDrop::default();
        match self {
            Cpu::Unlimited => {
                let flag = Arc::clone(&abandoned.0);
                let report = tokio::task::spawn_blocking(move || {
                    let queued = asked.elapsed();
                    burn_slices(cpu, &flag, |_| {});
                    BurnReport { queued }
                })
                .await?;
                Ok(report)
            }
            Cpu::Budgeted { jobs } => {
                let (done, report) = oneshot::channel();
                let job = Job { cpu, enqueued: asked, abandoned: Arc::clone(&abandoned.0), done };
                jobs.send(job).map_err(|_| anyhow::anyhow!("the budgeted CPU threads have stopped"))?;
                report.await.map_err(|_| anyhow::anyhow!("a budgeted CPU thread dropped the work"))
            }
        }
    }
}

/// Marks work as abandoned when the request handler that wanted it is
/// dropped before the work is done.
#[derive(Default)]
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The loop of one budgeted CPU thread. Exits when the [`Cpu`] is dropped.
fn budgeted_cpu(queue: &Mutex<mpsc::Receiver<Job>>, fraction: f64) {
    // When this CPU may run its next slice. Carried across jobs: a burst of
    // short requests may not use more than the budget either.
    let mut next_slot = Instant::now();
    loop {
        // Owe the idle time of the last slice *before* taking a job, so that
        // with several budgeted CPUs a job goes to one that can start it.
        sleep_until(next_slot);
        let job = {
            let queue = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match queue.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => return,
            }
        };
        if job.abandoned.load(Ordering::Relaxed) {
            continue;
        }
        let queued = job.enqueued.elapsed();
        burn_slices(job.cpu, &job.abandoned, |slice| {
            sleep_until(next_slot);
            // Never catch up: a slice that starts late (the machine is busy)
            // still keeps this CPU for slice / fraction from its real start.
            next_slot = Instant::now() + slice.div_f64(fraction);
        });
        // The handler may be gone; then nobody needs the report.
        let _ = job.done.send(BurnReport { queued });
    }
}

/// Busy-loops for `total`, in slices; `before_slice` runs ahead of each one
/// (the budgeted CPU waits for its turn there). Stops early when abandoned.
fn burn_slices(total: Duration, abandoned: &AtomicBool, mut before_slice: impl FnMut(Duration)) {
    let mut remaining = total;
    while !remaining.is_zero() && !abandoned.load(Ordering::Relaxed) {
        let slice = remaining.min(SLICE);
        before_slice(slice);
        spin_for(slice);
        remaining -= slice;
    }
}

/// Keeps this thread on the CPU for `duration` of wall time.
fn spin_for(duration: Duration) {
    let deadline = Instant::now() + duration;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while Instant::now() < deadline {
        for _ in 0..256 {
            // xorshift: real arithmetic the optimiser cannot remove.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}
