//! `ebb load`: the built-in HTTP load generator (docs/load.md).
//!
//! Two models, named as the load-testing literature names them:
//! - **closed** (`-c`, like ab and wrk; `-q` paces each worker like hey):
//!   `-c` workers each keep one request in flight on their own keep-alive
//!   connection and send the next when the last returns. Latency counts from
//!   the moment a request is sent.
//! - **open** (`--rate`, `--stages`, `--trace`, like wrk2 and vegeta):
//!   request `i` is due at `start + N⁻¹(i)` (for a constant rate,
//!   `start + i/rate`) whatever the server does. Latency counts from the
//!   *scheduled* time, so a server that stalls cannot hide the stall by
//!   slowing the generator down (coordinated omission). At most `-c`
//!   requests are in flight; a request that falls due while all `-c` are
//!   busy waits in a backlog of at most `-c` more (its latency clock already
//!   running); past that it is *dropped*, and counted.
//!
//! Layout:
//! - [`shape`]: rates over time (constant, `--stages`, `--trace`), pure.
//! - [`http`]: one worker's connection (hyper's low-level HTTP/1.1 client)
//!   and the request template.
//! - [`stats`]: sharded HdrHistograms and counters, merged once a second.
//! - [`report`]: live view, per-second CSV, the summary (text or JSON).
//! - [`fleet`]: desired/in-service replicas from a running ebb's admin API.
//! - [`tls`]: the TLS client and stream for an `https://` target.

pub mod fleet;
pub mod http;
pub mod report;
pub mod shape;
pub mod spelling;
pub mod stats;
pub mod tls;

use std::collections::VecDeque;
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::http::{exchange, parse_url, RequestSpec, Target, Timer};
use self::report::{Bound, Csv, Live, Summary};
use self::shape::{parse_duration, Shape};
use self::stats::{Collector, Shards};

/// Exit code for bad input (arguments, files), as elsewhere in ebb.
const EXIT_BAD_INPUT: u8 = 2;
/// hey's defaults: 200 requests, 50 workers.
const DEFAULT_REQUESTS: u64 = 200;
const DEFAULT_CONCURRENCY: u32 = 50;

/// Generate HTTP load: closed model (-c, like ab/wrk/hey) or open model
/// (--rate/--stages/--trace, like wrk2/vegeta), with a live view and a
/// summary like hey's.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  ebb load http://127.0.0.1:8080/                      # 200 requests, 50 workers (hey's defaults)
  ebb load -n 100000 -c 1000 http://127.0.0.1:8080/    # ab -n 100000 -c 1000
  ebb load -c 50 -z 30s http://127.0.0.1:8080/         # wrk -c50 -d30s
  ebb load -q 5 -c 10 -z 10m http://127.0.0.1:8080/    # hey -q 5 -c 10 -z 10m
  ebb load --rate 200 -z 2m http://127.0.0.1:8080/     # open model: 200 req/s for 2 minutes
  ebb load --stages '30s:0->200,2m:200,30s:200->0' --output-csv run.csv http://127.0.0.1:8080/
  ebb load --trace day.csv --ebb http://127.0.0.1:9900 http://127.0.0.1:8080/work

ok = a response with a status below 500; errors = transport failures + 5xx responses.
Exit status: 0 when requests were sent (whatever their answers), 1 when nothing could
be sent (the host is unreachable, no connection could be opened), 2 for bad input.")]
pub struct LoadArgs {
    /// The URL to load (plain http://), e.g. http://127.0.0.1:8080/api.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Total number of requests. Default 200 when nothing else (-z, --stages,
    /// --trace) bounds the run; with -z, whichever comes first ends it.
    #[arg(short = 'n', long = "requests", value_name = "N")]
    pub requests: Option<u64>,

    /// Closed model: workers, each with its own connection and one request in
    /// flight [default: 50]. Open model: the most requests in flight at once
    /// [default: one second's worth at the peak rate, between 50 and 1000].
    #[arg(short = 'c', long = "concurrency", value_name = "C")]
    pub concurrency: Option<u32>,

    /// Closed model: rate limit of each worker, in requests per second (hey's -q).
    #[arg(short = 'q', long = "worker-rate", value_name = "QPS", allow_negative_numbers = true)]
    pub worker_rate: Option<f64>,

    /// Open model: total arrival rate, in requests per second (wrk2's -R, vegeta's -rate).
    #[arg(long, value_name = "RPS", allow_negative_numbers = true, conflicts_with = "worker_rate")]
    pub rate: Option<f64>,

    /// How long to send requests, e.g. 30s, 10m (hey's -z, wrk's -d). Cuts
    /// --stages and --trace short when shorter.
    #[arg(short = 'z', long = "duration", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// HTTP method.
    #[arg(short = 'm', long = "method", default_value = "GET")]
    pub method: String,

    /// A request header, "Name: value"; repeat for several.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// Request body.
    #[arg(short = 'd', long = "body", value_name = "BODY", conflicts_with = "body_file")]
    pub body: Option<String>,

    /// Request body, read from a file.
    #[arg(short = 'D', long = "body-file", value_name = "FILE")]
    pub body_file: Option<PathBuf>,

    /// Content-Type of the request body, e.g. application/json.
    #[arg(short = 'T', long = "content-type", value_name = "TYPE")]
    pub content_type: Option<String>,

    /// Give up on a request after this long (counted as a "timeout" error);
    /// 0 waits forever.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Open a new connection for every request (and send `Connection: close`).
    #[arg(long)]
    pub disable_keepalive: bool,

    /// Open model: a traffic shape of ramps and holds, e.g. "30s:0->200,2m:200,30s:200->0".
    #[arg(long, value_name = "STAGES", conflicts_with_all = ["rate", "worker_rate", "trace"])]
    pub stages: Option<String>,

    /// Open model: replay a CSV of `second,rate` rows, one per second with no gap (as `ebb simulate --trace`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rate", "worker_rate"])]
    pub trace: Option<PathBuf>,

    /// Generator threads, each running its share of the workers (like wrk's
    /// -t) [default: one per core, or half the cores when the target is on
    /// this machine (loopback), leaving the rest to the server].
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// Write one row per second: time_s, sent, ok, errors, rps, p50_ms, p99_ms,
    /// in_service, desired, target_rps, dropped.
    #[arg(long, value_name = "FILE")]
    pub output_csv: Option<PathBuf>,

    /// A running ebb's admin API (e.g. http://127.0.0.1:9900): show the fleet's
    /// desired and in-service replicas while the load runs. Found by itself
    /// when the target is a local ebb balancer.
    #[arg(long = "ebb", value_name = "ADMIN_URL")]
    pub ebb: Option<String>,

    /// A PEM certificate to trust for an https:// target or --ebb URL (a
    /// private CA, or the server's own self-signed certificate), besides
    /// the built-in public roots. Certificates are always verified.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

/// How requests are generated.
#[derive(Debug, Clone)]
enum Model {
    Closed { workers: u32, worker_rate: Option<f64> },
    Open { shape: Shape, max_in_flight: u32 },
}

/// The checked arguments.
#[derive(Debug)]
struct Plan {
    target: Target,
    model: Model,
    /// `-n`.
    limit: Option<u64>,
    /// `-z` (already applied to open-model shapes).
    duration: Option<Duration>,
    /// Generator threads (0 until [`Plan::resolved`] when not given).
    threads: usize,
}

impl Plan {
    /// Points the plan at the resolved address. Without `--threads`: one
    /// generator thread per core, or half the cores when the server is on
    /// this machine (it needs CPU too).
    fn resolved(mut self, addr: std::net::SocketAddr) -> Plan {
        self.target.addr = addr;
        if self.threads == 0 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            self.threads = if addr.ip().is_loopback() { (cores / 2).max(1) } else { cores };
        }
        self
    }

    fn describe(&self) -> String {
        let mut bounds = Vec::new();
        if let Some(n) = self.limit {
            bounds.push(format!("{n} requests"));
        }
        if let Some(d) = self.duration {
            bounds.push(humantime::format_duration(d).to_string());
        }
        let bound = bounds.join(" or ");
        let keepalive = if self.target.keepalive() { "" } else { ", no keep-alive" };
        match &self.model {
            Model::Closed { workers, worker_rate: None } => {
                format!(
                    "closed, {workers} worker{} (connections), {bound}{keepalive}",
                    if *workers == 1 { "" } else { "s" }
                )
            }
            Model::Closed { workers, worker_rate: Some(q) } => {
                format!("closed, {workers} workers at most {q} req/s each, {bound}{keepalive}")
            }
            Model::Open { shape, max_in_flight } => {
                let length = if shape.duration().is_finite() {
                    format!(" for {}", humantime::format_duration(Duration::from_secs_f64(shape.duration())))
                } else {
                    String::new()
                };
                let limit = self.limit.map(|n| format!(", at most {n} requests")).unwrap_or_default();
                format!("open, {}{length}{limit}, up to {max_in_flight} in flight{keepalive}", shape.describe())
            }
        }
    }
}

/// Bad input: a one-line message, exit 2.
struct BadInput(String);

impl<T: Into<String>> From<T> for BadInput {
    fn from(message: T) -> Self {
        BadInput(message.into())
    }
}

fn positive(flag: &str, value: Option<f64>) -> Result<Option<f64>, BadInput> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => {
            Err(format!("{flag} must be a number of requests per second > 0 (got {v})").into())
        }
        other => Ok(other),
    }
}

/// Checks everything that can be checked without the network. The target's
/// address is filled in by [`Plan::resolved`].
fn plan(args: &LoadArgs) -> Result<Plan, BadInput> {
    let parsed = parse_url(&args.url)?;
    let worker_rate = positive("-q", args.worker_rate)?;
    let rate = positive("--rate", args.rate)?;
    if args.requests == Some(0) {
        return Err("-n must be at least 1".into());
    }
    if args.concurrency == Some(0) {
        return Err("-c must be at least 1".into());
    }
    if args.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err("-z must be longer than 0s".into());
    }
    let mut shape = match (rate, &args.stages, &args.trace) {
        (Some(rate), _, _) => Some(Shape::constant(rate, args.duration)),
        (None, Some(stages), _) => Some(Shape::parse_stages(stages).map_err(|e| format!("--stages {stages:?}: {e}"))?),
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--trace {}: cannot read the file: {e}", path.display()))?;
            let trace = ebb_core::sim::Trace::parse_csv(&text, &path.display().to_string())
                .map_err(|e| format!("--trace {e}"))?;
            Some(Shape::from_trace(&trace).map_err(|e| format!("--trace {e}"))?)
        }
        (None, None, None) => None,
    };
    if let (Some(s), Some(limit)) = (&shape, args.duration) {
        if (args.stages.is_some() || args.trace.is_some()) && limit.as_secs_f64() < s.duration() {
            shape = Some(s.truncate(limit));
        }
    }
    // A run is always bounded: by -n, -z or the shape's end; else hey's -n 200.
    let bounded_by_shape = shape.as_ref().is_some_and(|s| s.duration().is_finite());
    let limit = match args.requests {
        Some(n) => Some(n),
        None if args.duration.is_none() && !bounded_by_shape => Some(DEFAULT_REQUESTS),
        None => None,
    };
    let body = match (&args.body, &args.body_file) {
        (Some(text), _) => Bytes::from(text.clone().into_bytes()),
        (None, Some(path)) => {
            Bytes::from(std::fs::read(path).map_err(|e| format!("-D {}: cannot read the file: {e}", path.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    let https_admin = args.ebb.as_deref().is_some_and(|u| u.starts_with("https://"));
    if args.cacert.is_some() && !parsed.tls && !https_admin {
        return Err("--cacert is for an https:// target or --ebb URL".into());
    }
    let timeout = (!args.timeout.is_zero()).then_some(args.timeout);
    let spec = RequestSpec {
        method: &args.method,
        headers: &args.headers,
        body,
        content_type: args.content_type.as_deref(),
        keepalive: !args.disable_keepalive,
        timeout,
        cacert: args.cacert.as_deref(),
    };
    let unresolved = std::net::SocketAddr::from(([0, 0, 0, 0], parsed.port));
    let target = Target::new(&args.url, &parsed, unresolved, spec)?;
    let model = match shape {
        Some(shape) => {
            let default = (shape.peak().ceil() as u32).clamp(DEFAULT_CONCURRENCY, 1000);
            Model::Open { shape, max_in_flight: args.concurrency.unwrap_or(default) }
        }
        None => {
            let mut workers = args.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if let Some(n) = limit {
                workers = workers.min(u32::try_from(n).unwrap_or(u32::MAX));
            }
            Model::Closed { workers, worker_rate }
        }
    };
    Ok(Plan { target, model, limit, duration: args.duration, threads: args.threads.map_or(0, |n| n as usize) })
}

/// Runs `ebb load`; prints the summary. Errors that are the user's (bad
/// arguments, unreadable files) are reported here with exit code 2.
pub async fn run(args: LoadArgs, config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let bad = |message: String| {
        eprintln!("error: {message}");
        Ok(ExitCode::from(EXIT_BAD_INPUT))
    };
    // Everything but the network first, so bad input never waits on DNS.
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(BadInput(message)) => return bad(message),
    };
    let parsed = parse_url(&args.url).expect("checked by plan");
    let addr = match tokio::net::lookup_host((parsed.host.as_str(), parsed.port)).await {
        Ok(mut addrs) => match addrs.next() {
            Some(addr) => addr,
            None => return unreachable(&args.url, format!("{} has no address", parsed.host)),
        },
        Err(e) => return unreachable(&args.url, format!("cannot resolve {}: {e}", parsed.host)),
    };
    let plan = plan.resolved(addr);
    let mut csv = match args.output_csv.as_deref().map(Csv::create).transpose() {
        Ok(csv) => csv,
        Err(message) => return bad(message),
    };
    let admin = match &args.ebb {
        Some(url) => match fleet::Admin::from_url(url, args.cacert.as_deref()).await {
            Ok(admin) => Some(admin),
            Err(message) => return bad(message),
        },
        None => None,
    };

    // The target must at least accept a connection before the clock starts.
    let connect_limit = plan.target.timeout.unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(5));
    match tokio::time::timeout(connect_limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return unreachable(&args.url, format!("cannot connect to {addr}: {e}")),
        Err(_) => {
            return unreachable(&args.url, format!("cannot connect to {addr}: no answer within {connect_limit:?}"))
        }
    }
    if let Some(tls) = &plan.target.tls {
        let checked = tokio::time::timeout(connect_limit, tls.check(addr)).await;
        match checked.unwrap_or_else(|_| Err(format!("no TLS handshake with {addr} within {connect_limit:?}"))) {
            Ok(()) => {}
            Err(why) => return unreachable(&args.url, why),
        }
    }

    // A listener routes by host, path, method and headers: the service
    // behind it is the one the run's requests reach.
    let aim = plan.target.aim();
    let admin = match admin {
        Some(admin) => Some(admin),
        None => fleet::detect(&aim, config).await,
    };
    let mut notes = Vec::new();
    let poller = match admin {
        Some(admin) => {
            let first = match admin.view(&aim).await {
                Ok(view) => {
                    notes.push(format!("ebb load: following {} through ebb's admin API at {}", view.label, admin.url));
                    Some(view)
                }
                Err(e) => {
                    notes.push(format!(
                        "warning: ebb's admin API does not answer yet ({e}); fleet columns stay empty until it does"
                    ));
                    None
                }
            };
            Some(fleet::Poller::start(admin, aim.clone(), first))
        }
        None => None,
    };
    let fleet_now = || poller.as_ref().and_then(|p| p.get());

    let description = plan.describe();
    let terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let total_s = match (&plan.model, plan.duration) {
        (Model::Open { shape, .. }, _) => shape.duration(),
        (Model::Closed { .. }, Some(d)) => d.as_secs_f64(),
        (Model::Closed { .. }, None) => f64::INFINITY,
    };
    let bound = match plan.limit {
        Some(n) if !total_s.is_finite() => Bound::Requests(n),
        _ => Bound::Seconds(total_s),
    };
    eprintln!(
        "ebb load: {} -> {} ({addr}), {} generator thread{}",
        description,
        plan.target.url,
        plan.threads,
        if plan.threads == 1 { "" } else { "s" }
    );
    for note in &notes {
        eprintln!("{note}");
    }
    let live = Live::new(terminal, bound);

    let concurrency = match plan.model {
        Model::Closed { workers, .. } => workers,
        Model::Open { max_in_flight, .. } => max_in_flight,
    };
    let shards = Shards::new(concurrency as usize);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut collector = Collector::new(shards.clone(), dropped.clone());
    let target = Arc::new(plan.target.clone());
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut dispatcher = None;
    let started_engine = match &plan.model {
        Model::Closed { workers: count, worker_rate } => {
            let budget = Arc::new(Budget {
                limit: plan.limit,
                claimed: AtomicU64::new(0),
                deadline: plan.duration.map(|d| start + d),
                stop: stop.clone(),
            });
            let pacing = worker_rate.map(|q| Duration::from_secs_f64(1.0 / q));
            let (target, shards) = (target.clone(), shards.clone());
            Engine::start(plan.threads, *count as usize, move |id| {
                let (target, shards, budget) = (target.clone(), shards.clone(), budget.clone());
                async move { closed_worker(&target, shards.for_worker(id), &budget, pacing).await }
            })
        }
        Model::Open { shape, max_in_flight } => {
            let queue = Arc::new(OpenQueue::new(*max_in_flight as usize, dropped.clone()));
            let (shape_for_dispatch, limit, count) = (shape.clone(), plan.limit, *max_in_flight as usize);
            let for_dispatch = queue.clone();
            dispatcher =
                Some(tokio::spawn(
                    async move { dispatch(&shape_for_dispatch, limit, start, &for_dispatch, count).await },
                ));
            let (target, shards) = (target.clone(), shards.clone());
            Engine::start(plan.threads, *max_in_flight as usize, move |id| {
                let (target, shards, queue) = (target.clone(), shards.clone(), queue.clone());
                async move { open_worker(&target, shards.for_worker(id), &queue).await }
            })
        }
    };
    let mut engine = match started_engine {
        Ok(engine) => engine,
        Err(e) => anyhow::bail!("cannot start the load generator's threads: {e}"),
    };
    let target_rate: Box<dyn Fn(f64) -> Option<f64> + Send> = match &plan.model {
        Model::Closed { workers: count, worker_rate } => {
            let total = worker_rate.map(|q| q * *count as f64);
            Box::new(move |_| total)
        }
        Model::Open { shape, .. } => {
            let shape = shape.clone();
            Box::new(move |t| Some(shape.rate_at(t)))
        }
    };

    let mut interval = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal = crate::stop_signal();
    tokio::pin!(signal);
    let interrupted = loop {
        tokio::select! {
            _ = interval.tick() => {
                let now = start.elapsed().as_secs_f64();
                let tick = collector.tick(now);
                let fleet = fleet_now();
                let rate = target_rate(now - 0.5);
                live.update(&tick, rate, total_s, &fleet);
                if let Some(csv) = csv.as_mut() {
                    csv.row(&tick, rate, &fleet);
                }
            }
            _ = engine.finished() => break false,
            _ = &mut signal => break true,
        }
    };
    if interrupted {
        // Stop at once: requests in flight are abandoned, not counted.
        stop.store(true, Ordering::Relaxed);
        engine.cancel();
    }
    if let Some(d) = dispatcher {
        d.abort();
    }
    let elapsed = start.elapsed();
    tokio::task::spawn_blocking(move || engine.join()).await?;
    // The last (partial) second.
    let tick = collector.tick(elapsed.as_secs_f64());
    let fleet = fleet_now();
    if tick.length_s >= 0.25 || tick.sent + tick.ok + tick.errors + tick.dropped > 0 {
        let rate = target_rate((elapsed.as_secs_f64() - tick.length_s / 2.0).max(0.0));
        live.update(&tick, rate, total_s, &fleet);
        if let Some(csv) = csv.as_mut() {
            csv.row(&tick, rate, &fleet);
        }
    }
    live.finish();
    drop(poller);
    let totals = collector.totals();
    let summary = Summary {
        url: &plan.target.url,
        model: match plan.model {
            Model::Closed { .. } => "closed",
            Model::Open { .. } => "open",
        },
        description,
        concurrency,
        duration: elapsed,
        interrupted,
        totals: &totals,
        fleet,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    } else {
        print!("{}", summary.to_text());
    }
    // Exit 1 only when nothing could be sent: no response and every request
    // failed before it left (could not connect). Timeouts and 5xx are results.
    let sent_nothing = totals.responses() == 0 && totals.failures.iter().all(|(f, _)| f.before_sending());
    if sent_nothing {
        let why = totals.failures.first().map(|(f, _)| format!(": {}", f.label())).unwrap_or_default();
        eprintln!("error: no request to {} could be sent{why}", plan.target.url);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The target cannot be reached at all: one line, exit 1.
fn unreachable(url: &str, why: String) -> anyhow::Result<ExitCode> {
    eprintln!("error: {url}: {why}; nothing was sent (is the server running, and is the URL right?)");
    Ok(ExitCode::FAILURE)
}

/// Runs the workers on one OS thread per core, each with its own
/// single-threaded runtime (like wrk's `-t`): a request's tasks never cross
/// threads and no thread steals another's work. The main runtime keeps the
/// clock-driven parts (the open model's dispatcher, the live view).
struct Engine {
    cancel: CancellationToken,
    finished: tokio::sync::mpsc::UnboundedReceiver<()>,
    running: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Engine {
    fn start<F, Fut>(threads: usize, workers: usize, make: F) -> std::io::Result<Engine>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let count = threads.clamp(1, workers.max(1));
        let make = Arc::new(make);
        let cancel = CancellationToken::new();
        let (finished_tx, finished) = tokio::sync::mpsc::unbounded_channel();
        let mut threads = Vec::with_capacity(count);
        for t in 0..count {
            let (make, token, finished_tx) = (make.clone(), cancel.clone(), finished_tx.clone());
            let thread = std::thread::Builder::new().name(format!("ebb-load-{t}")).spawn(move || {
                /// Reports the thread's end even if a worker panicked.
                struct Finished(tokio::sync::mpsc::UnboundedSender<()>);
                impl Drop for Finished {
                    fn drop(&mut self) {
                        let _ = self.0.send(());
                    }
                }
                let _finished = Finished(finished_tx);
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        eprintln!("error: cannot start a load generator thread: {error}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let tasks: Vec<_> = (t..workers).step_by(count).map(|id| tokio::spawn(make(id))).collect();
                    let all = async {
                        for task in tasks {
                            let _ = task.await;
                        }
                    };
                    tokio::select! {
                        _ = all => {}
                        _ = token.cancelled() => {}
                    }
                });
                // Dropping the runtime drops every worker that is still running.
            });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    cancel.cancel();
                    return Err(error);
                }
            }
        }
        Ok(Engine { cancel, finished, running: count, threads })
    }

    /// Resolves when every worker has finished.
    async fn finished(&mut self) {
        while self.running > 0 {
            match self.finished.recv().await {
                Some(()) => self.running -= 1,
                None => self.running = 0,
            }
        }
    }

    /// Abandons every worker (Ctrl-C).
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the threads to exit (blocking).
    fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// The closed model's budget: `-n`, `-z`, Ctrl-C.
struct Budget {
    limit: Option<u64>,
    claimed: AtomicU64,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
}

impl Budget {
    /// Takes the right to send one more request.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match self.limit {
            Some(n) => self.claimed.fetch_add(1, Ordering::Relaxed) < n,
            None => true,
        }
    }
}

/// A closed-model worker: one connection, one request in flight, the next
/// sent when the last returns (no sooner than `pacing` after the last one
/// started, for `-q`).
async fn closed_worker(target: &Target, shard: &stats::Shard, budget: &Budget, pacing: Option<Duration>) {
    let (mut conn, mut timer) = (None, Timer::default());
    let mut next = Instant::now();
    loop {
        if let Some(period) = pacing {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next).await;
            }
            // Like hey's ticker: a late request does not cause a burst.
            next = (next + period).max(Instant::now());
        }
        if !budget.claim() {
            break;
        }
        shard.sent();
        let started = Instant::now();
        let outcome = exchange(target, &mut conn, &mut timer, target.timeout.map(|t| started + t)).await;
        shard.record(outcome, started.elapsed());
    }
}

/// The open model's backlog: requests that are due, waiting for a free
/// worker. Bounded: when it is full, a due request is dropped and counted.
struct OpenQueue {
    /// Due times; `None` tells a worker the run is over.
    items: Mutex<VecDeque<Option<Instant>>>,
    ready: Semaphore,
    capacity: usize,
    dropped: Arc<AtomicU64>,
}

impl OpenQueue {
    fn new(capacity: usize, dropped: Arc<AtomicU64>) -> OpenQueue {
        OpenQueue { items: Mutex::new(VecDeque::with_capacity(capacity)), ready: Semaphore::new(0), capacity, dropped }
    }

    fn push(&self, due: Instant) {
        {
            let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
            if items.len() >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            items.push_back(Some(due));
        }
        self.ready.add_permits(1);
    }

    /// After the last request: every worker finishes the backlog, then stops.
    fn finish(&self, workers: usize) {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).extend(std::iter::repeat_n(None, workers));
        self.ready.add_permits(workers);
    }

    async fn pop(&self) -> Option<Instant> {
        self.ready.acquire().await.ok()?.forget();
        self.items.lock().unwrap_or_else(|p| p.into_inner()).pop_front().flatten()
    }
}

/// Releases each request into the backlog when it falls due.
async fn dispatch(shape: &Shape, limit: Option<u64>, start: Instant, queue: &OpenQueue, workers: usize) {
    // Released this early, a request leaves on time despite the timer's 1 ms
    // granularity; a worker never counts its latency from before it sent it.
    const LOOKAHEAD: Duration = Duration::from_millis(1);
    let mut i = 0u64;
    let mut limited = false;
    loop {
        if limit.is_some_and(|n| i >= n) {
            limited = true;
            break;
        }
        let Some(offset) = shape.due(i) else { break };
        let due = start + Duration::from_secs_f64(offset);
        if due > Instant::now() + LOOKAHEAD {
            tokio::time::sleep_until(due - LOOKAHEAD).await;
        }
        queue.push(due);
        i += 1;
    }
    // A shape's duration is the run's, even when its last request comes early.
    let end = shape.duration();
    if !limited && end.is_finite() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(end)).await;
    }
    queue.finish(workers);
}

/// An open-model worker: takes the next due request, sends it, and counts
/// its latency from when it was due (or from when it left, if that was
/// earlier).
async fn open_worker(target: &Target, shard: &stats::Shard, queue: &OpenQueue) {
    let (mut conn, mut timer) = (None, Timer::default());
    while let Some(due) = queue.pop().await {
        shard.sent();
        let now = Instant::now();
        let outcome = exchange(target, &mut conn, &mut timer, target.timeout.map(|t| now + t)).await;
        shard.record(outcome, due.min(now).elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn args(line: &str) -> LoadArgs {
        Cli::try_parse_from(std::iter::once("ebb-load").chain(line.split_whitespace())).unwrap().load
    }

    fn plan_of(line: &str) -> Result<Plan, String> {
        plan(&args(line)).map_err(|BadInput(m)| m)
    }

    #[test]
    fn defaults_are_heys() {
        let p = plan_of("http://127.0.0.1:1/").unwrap();
        assert_eq!(p.limit, Some(200));
        assert!(matches!(p.model, Model::Closed { workers: 50, worker_rate: None }));
        let p = plan_of("-n 10 http://127.0.0.1:1/").unwrap();
        assert!(matches!(p.model, Model::Closed { workers: 10, .. }), "never more workers than requests");
        let p = plan_of("-z 5s http://127.0.0.1:1/").unwrap();
        assert_eq!(p.limit, None);
        assert_eq!(p.describe(), "closed, 50 workers (connections), 5s");
    }

    #[test]
    fn open_model_defaults_to_a_seconds_worth_in_flight() {
        let p = plan_of("--rate 200 -z 2s http://127.0.0.1:1/").unwrap();
        assert_eq!(p.limit, None);
        let Model::Open { shape, max_in_flight } = &p.model else { panic!() };
        assert_eq!((shape.expected_requests(), *max_in_flight), (400.0, 200));
        assert_eq!(p.describe(), "open, 200 req/s for 2s, up to 200 in flight");
        let p = plan_of("--rate 5 http://127.0.0.1:1/").unwrap();
        assert_eq!(p.limit, Some(200), "a rate alone is bounded by hey's -n 200");
        let p = plan_of("--stages 10s:0->100,10s:100 -z 5s -c 7 http://127.0.0.1:1/").unwrap();
        let Model::Open { shape, max_in_flight: 7 } = &p.model else { panic!() };
        assert_eq!(shape.duration(), 5.0);
        assert_eq!(p.limit, None);
    }

    #[test]
    fn a_local_server_keeps_half_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let local = plan_of("http://127.0.0.1:1/").unwrap().resolved("127.0.0.1:1".parse().unwrap());
        assert_eq!(local.threads, (cores / 2).max(1));
        assert_eq!(local.target.addr, "127.0.0.1:1".parse().unwrap());
        let remote = plan_of("http://192.0.2.1:1/").unwrap().resolved("192.0.2.1:1".parse().unwrap());
        assert_eq!(remote.threads, cores);
        let chosen = plan_of("--threads 3 http://127.0.0.1:1/").unwrap().resolved("127.0.0.1:1".parse().unwrap());
        assert_eq!(chosen.threads, 3);
        assert_eq!(plan_of("--threads 0 http://127.0.0.1:1/").unwrap_err(), "--threads must be at least 1");
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        assert!(plan_of("--rate -5 http://127.0.0.1:1/")
            .unwrap_err()
            .starts_with("--rate must be a number of requests per second > 0 (got -5)"));
        assert!(plan_of("--rate 0 http://127.0.0.1:1/").unwrap_err().starts_with("--rate must be"));
        assert!(plan_of("-q 0 http://127.0.0.1:1/").unwrap_err().starts_with("-q must be"));
        assert_eq!(plan_of("-n 0 http://127.0.0.1:1/").unwrap_err(), "-n must be at least 1");
        assert_eq!(plan_of("-c 0 http://127.0.0.1:1/").unwrap_err(), "-c must be at least 1");
        assert_eq!(plan_of("-z 0s http://127.0.0.1:1/").unwrap_err(), "-z must be longer than 0s");
        assert!(plan_of("http://").unwrap_err().starts_with("malformed URL"));
        assert!(plan_of("--stages 10s:x http://127.0.0.1:1/").unwrap_err().starts_with("--stages \"10s:x\": stage 1"));
        assert!(plan_of("--trace /nonexistent/trace.csv http://127.0.0.1:1/")
            .unwrap_err()
            .starts_with("--trace /nonexistent/trace.csv: cannot read"));
        assert!(plan_of("-D /nonexistent/body http://127.0.0.1:1/")
            .unwrap_err()
            .starts_with("-D /nonexistent/body: cannot read"));
        assert!(plan_of("-m BAD\u{7f} http://127.0.0.1:1/").is_err());
    }

    #[test]
    fn clap_rejects_mixed_models() {
        let parse = |line: &str| Cli::try_parse_from(std::iter::once("x").chain(line.split_whitespace())).map(|_| ());
        assert!(parse("--rate 5 -q 5 http://x/").is_err());
        assert!(parse("--rate 5 --stages 1s:1 http://x/").is_err());
        assert!(parse("--trace f --stages 1s:1 http://x/").is_err());
        assert!(parse("-d a -D b http://x/").is_err());
        assert!(parse("-H A:1 -H B:2 -z 1m30s http://x/").is_ok());
    }
}
