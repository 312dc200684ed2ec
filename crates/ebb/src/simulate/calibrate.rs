//! `ebb simulate --calibrate URL`: measure the fleet model's two numbers
//! instead of guessing them (docs/simulate.md#calibrating-the-model).
//!
//! - **Capacity**: a closed-model ramp with `ebb load`'s own client
//!   ([`crate::load::http`], [`crate::load::stats`]): 1 connection, then
//!   twice as many every step, each keeping one request in flight. The
//!   capacity is the highest rate of 2xx/3xx answers per second of a step
//!   whose p99 stayed within the `--slo` threshold; the ramp stops when
//!   two doublings in a row added less than 5 % (throughput stopped
//!   rising), when a step's p99 crossed the threshold, when more than 1 %
//!   of answers were errors, or when `--calibrate-duration` is spent.
//! - **Boot time** (with a config): starts one replica of the service with
//!   the [`ProcessDriver`], probes it with the health check code
//!   ([`probe::probe`]) every 20 ms until one passes, stops it, a few
//!   times; the median, placed on the service's own probe schedule (first
//!   probe after `min(interval, 200 ms)`, then every `interval`,
//!   `healthy_threshold` passes in a row), is the time to in service that
//!   `--boot` means.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ebb_core::config::{Config, ServiceConfig};
use serde::Serialize;
use tokio::time::Instant;

use super::output::num;
use super::SimulateArgs;
use crate::controller::probe;
use crate::driver::{Driver, ProcessDriver, ReplicaSpec, RunningReplica};
use crate::load::fleet::{Admin, Aim, Behind};
use crate::load::http::{exchange, get_once, parse_url, RequestSpec, Target, Timer};
use crate::load::stats::{Collector, Shards};

/// Exit status for bad input (a malformed URL, a bad flag), as elsewhere.
const EXIT_BAD_INPUT: u8 = 2;
/// `--calibrate-duration`'s default: the ramp and each boot.
const DEFAULT_DURATION: Duration = Duration::from_secs(20);
/// `--calibrate-starts`'s default.
const DEFAULT_STARTS: u32 = 3;
/// A doubling that adds less than this does not count as rising.
const RISE: f64 = 1.05;
/// Two doublings in a row without a rise: throughput stopped rising.
const FLAT_STEPS: usize = 2;
/// More than this share of errors (transport, 4xx, 5xx) ends the ramp.
const ERROR_SHARE: f64 = 0.01;
/// The ramp never opens more connections than this.
const MAX_CONNECTIONS: u32 = 1024;
/// How often a booting replica is probed.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// The live controller's first probe comes this soon after a start (or
/// after one interval, when that is shorter): `Fleet::watch` in `controller/lifecycle.rs`.
const FIRST_PROBE: Duration = Duration::from_millis(200);

/// One step of the ramp, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub connections: u32,
    /// The seconds measured (the step minus its settling time).
    pub seconds: f64,
    /// 2xx and 3xx answers per second.
    pub rps: f64,
    pub p99_ms: Option<f64>,
    /// Transport failures and answers of 400 or more.
    pub errors: u64,
    /// ebb's CPU sample of the replica (or the mean of the replicas behind
    /// the balancer) at the end of the step, % of the `cpu` allotment;
    /// `None` when the URL is not ebb's.
    pub cpu_percent: Option<f64>,
}

/// Why the ramp stopped, which says what the capacity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Two doublings in a row added less than 5 %.
    Throughput,
    /// A step's p99 crossed the bound.
    Latency,
    /// More than 1 % errors.
    Errors,
    /// `--calibrate-duration` ran out while throughput still rose.
    Duration,
    /// `MAX_CONNECTIONS` reached while throughput still rose.
    Connections,
}

impl Limit {
    /// Its name, as `capacity_limited_by` spells it.
    fn as_str(self) -> &'static str {
        match self {
            Limit::Throughput => "throughput",
            Limit::Latency => "latency",
            Limit::Errors => "errors",
            Limit::Duration => "duration",
            Limit::Connections => "connections",
        }
    }

    fn describe(self, bound: Duration) -> String {
        match self {
            Limit::Throughput => "throughput stopped rising (two doublings of the connections added less than 5 %)".into(),
            Limit::Latency => format!("the next step's p99 crossed the bound ({})", humantime::format_duration(bound)),
            Limit::Errors => "the next step had more than 1 % errors".into(),
            Limit::Duration => "--calibrate-duration ran out while throughput still rose: the capacity is at least this; give a longer --calibrate-duration".into(),
            Limit::Connections => format!("{MAX_CONNECTIONS} connections reached while throughput still rose: the capacity is at least this"),
        }
    }
}

/// The ramp's verdict.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub steps: Vec<Step>,
    /// Requests per second: the best step within the bounds.
    pub rps: f64,
    pub connections: u32,
    pub limit: Limit,
    /// The CPU ebb read at that step: what a saturated replica reads
    /// (`--saturation-cpu`), when the URL is ebb's.
    pub saturation_cpu: Option<f64>,
}

/// Picks the capacity from the steps measured so far (the index of the
/// best step within the bounds, `None` when no step was), or says the ramp
/// must go on (`None`).
pub fn verdict(steps: &[Step], bound_ms: f64, elapsed_out: bool, at_max: bool) -> Option<(Option<usize>, Limit)> {
    let ok = |s: &Step| {
        let finished = s.rps * s.seconds + s.errors as f64;
        s.p99_ms.is_some_and(|p| p <= bound_ms) && s.errors as f64 <= ERROR_SHARE * finished.max(1.0)
    };
    let best_of = |steps: &[Step]| -> Option<usize> {
        // The best throughput; of equal ones, the first (fewest connections).
        steps.iter().enumerate().filter(|(_, s)| ok(s)).rev().max_by(|a, b| a.1.rps.total_cmp(&b.1.rps)).map(|(i, _)| i)
    };
    let last = steps.last()?;
    if !ok(last) {
        let limit = if last.p99_ms.is_some_and(|p| p > bound_ms) { Limit::Latency } else { Limit::Errors };
        return Some((best_of(&steps[..steps.len() - 1]), limit));
    }
    // Throughput stopped rising: the last FLAT_STEPS steps each added less
    // than 5 % over the best before them.
    if steps.len() > FLAT_STEPS {
        let flat = (steps.len() - FLAT_STEPS..steps.len()).all(|i| {
            let before = steps[..i].iter().filter(|s| ok(s)).map(|s| s.rps).fold(0.0, f64::max);
            steps[i].rps < before * RISE
        });
        if flat {
            return Some((best_of(steps), Limit::Throughput));
        }
    }
    if elapsed_out || at_max {
        let limit = if at_max { Limit::Connections } else { Limit::Duration };
        return Some((best_of(steps), limit));
    }
    None
}

/// The measured boot.
#[derive(Debug, Clone)]
pub struct Boot {
    pub service: String,
    /// Start to the first passing health check, each start.
    pub ready: Vec<Duration>,
    pub ready_median: Duration,
    /// Start to in service with the service's health checks.
    pub in_service: Duration,
    pub health: ebb_core::config::HealthConfig,
}

/// When a replica ready `ready` after its start is in service, with ebb's
/// probe schedule: the first probe `min(interval, 200 ms)` after the start,
/// then one per `interval`, and `healthy_threshold` passes in a row.
pub fn in_service_after(ready: Duration, interval: Duration, healthy_threshold: u32) -> Duration {
    let first = interval.min(FIRST_PROBE);
    let waits = if ready <= first || interval.is_zero() {
        0
    } else {
        ((ready - first).as_secs_f64() / interval.as_secs_f64()).ceil() as u32
    };
    first + interval * waits + interval * healthy_threshold.saturating_sub(1)
}

/// A duration as `--boot` takes it: `520ms`, `2s`, `95s`.
pub fn boot_flag(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 10_000 {
        format!("{}s", (d.as_secs_f64()).round() as u64)
    } else {
        let ms = ((ms + 5) / 10 * 10).max(10);
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }
}

/// `2.5 s`, `1 s`.
fn seconds(d: Duration) -> String {
    format!("{} s", num(d.as_secs_f64(), 2))
}

fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

fn capacity_flag(rps: f64) -> String {
    num((rps * 10.0).round() / 10.0, 1)
}

fn ms(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", num(d.as_secs_f64(), 1))
    }
}

/// A progress line on stderr: rewritten in place on a terminal.
struct Progress {
    terminal: bool,
    open: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress { terminal: std::io::stderr().is_terminal(), open: false }
    }

    fn show(&mut self, line: &str) {
        if self.terminal {
            eprint!("\r\x1b[K{line}");
            self.open = true;
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&mut self) {
        if self.open {
            eprintln!();
            self.open = false;
        }
    }
}

/// A failure that ends the calibration: printed as is, with its exit status.
struct Fail(u8, String);

fn bad(message: String) -> Fail {
    Fail(EXIT_BAD_INPUT, message)
}

fn failed(message: String) -> Fail {
    Fail(1, message)
}

/// `ebb simulate --calibrate URL`.
pub async fn run(args: &SimulateArgs, url: &str, config_path: &Path) -> anyhow::Result<ExitCode> {
    match calibrate(args, url, config_path).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(Fail(code, message)) => {
            eprintln!("{message}");
            Ok(ExitCode::from(code))
        }
    }
}

async fn calibrate(args: &SimulateArgs, url: &str, config_path: &Path) -> Result<(), Fail> {
    let started = Instant::now();
    let parsed = parse_url(url).map_err(|e| bad(format!("error: --calibrate: {e}")))?;
    if parsed.tls {
        // Replicas speak plain HTTP behind the balancer; time them there.
        return Err(bad(format!("error: --calibrate {url:?}: give a replica's or balancer's http:// address")));
    }
    let slo = ebb_core::sim::Slo::parse(&args.slo).map_err(|e| bad(format!("error: {e}")))?;
    let duration = args.calibrate_duration.unwrap_or(DEFAULT_DURATION);
    let starts = args.calibrate_starts.unwrap_or(DEFAULT_STARTS);
    if duration < Duration::from_secs(2) || duration > Duration::from_secs(600) {
        return Err(bad("error: --calibrate-duration must be between 2s and 10m".into()));
    }
    // The service whose boot to time: only with a config (nothing is
    // started without one), and never a worker pool (no health checks).
    let service = if starts > 0 { boot_service(args, config_path)? } else { None };

    let addr = match tokio::net::lookup_host((parsed.host.as_str(), parsed.port)).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| {
            failed(format!("error: --calibrate {url}: {} has no address; nothing was measured", parsed.host))
        })?,
        Err(e) => {
            return Err(failed(format!(
                "error: --calibrate {url}: cannot resolve {}: {e}; nothing was measured",
                parsed.host
            )))
        }
    };
    let path = parsed.path.to_string();
    match get_once(addr, &parsed.authority, &path, Duration::from_secs(5)).await {
        Err(e) => {
            return Err(failed(format!(
                "error: --calibrate {url}: cannot reach {addr}: {e}; nothing was measured (is the service running, and is the URL right?)"
            )))
        }
        Ok((status, _)) if status >= 400 => {
            return Err(failed(format!(
                "error: --calibrate {url}: GET {path} answered {status}; calibrate against an endpoint that answers 2xx with the work you want to model (e.g. the demo app's /work?cpu_ms=10)"
            )))
        }
        Ok(_) => {}
    }

    // A balancer or a replica of a running ebb: its CPU samples give the
    // saturation CPU. Through a balancer the ramp measures the whole fleet:
    // the capacity per replica is that divided by the replicas in service.
    // Through a listener, the service its routes give `GET path`.
    let aim = Aim::get(addr, &parsed.authority, &path);
    let known = crate::load::fleet::what_is(&aim, config_path).await;
    let balancer = match &known {
        Some((admin, Behind::Balancer { .. })) => {
            admin.view(&aim).await.ok().filter(|v| v.in_service > 0).map(|v| (admin.clone(), v))
        }
        _ => None,
    };

    let bound = slo.threshold;
    let step_length = (duration / 8).clamp(Duration::from_secs(2), Duration::from_secs(5));
    let mut progress = Progress::new();
    progress.show(&format!(
        "calibrate: GET {url}, 1 connection then twice as many every {}, at most {}",
        seconds(step_length),
        humantime::format_duration(duration)
    ));
    let target = Target::new(
        url,
        &parsed,
        addr,
        RequestSpec {
            method: "GET",
            headers: &[],
            body: Bytes::new(),
            content_type: None,
            keepalive: true,
            timeout: Some(bound.max(Duration::from_secs(1)) * 10),
            cacert: None,
        },
    )
    .map_err(|e| bad(format!("error: --calibrate: {e}")))?;
    let capacity = ramp(target, step_length, duration, bound, known.as_ref(), &mut progress).await;
    progress.done();
    let mut capacity = capacity.map_err(failed)?;
    let through = match &balancer {
        Some((admin, before)) => {
            let after = admin.view(&aim).await.map(|v| v.in_service).unwrap_or(before.in_service);
            // The fleet may have scaled during the ramp: dividing by the
            // larger count keeps the per-replica figure on the safe side.
            let replicas = before.in_service.max(after);
            let through = Through {
                service: before.label.clone(),
                in_service_before: before.in_service,
                in_service_after: after,
                total_rps: round(capacity.rps, 1),
            };
            capacity.rps /= f64::from(replicas);
            Some(through)
        }
        None => None,
    };

    // Boot time is timed with the process driver; a container service's
    // boot includes the engine's and is not measured here.
    let containerised = service
        .as_ref()
        .is_some_and(|(config, name)| config.services[name.as_str()].driver != ebb_core::config::DriverKind::Process);
    let boot = match &service {
        Some((config, name)) if starts > 0 && !containerised => {
            // Interrupted (Ctrl-C, SIGTERM): dropping the measurement
            // kills the replica it started and removes its scratch directory.
            let measured = tokio::select! {
                measured = measure_boot(config, name, starts, duration, &mut progress) => measured,
                _ = crate::stop_signal() => Err("interrupted: the replica being timed was stopped".to_string()),
            };
            progress.done();
            Some(measured.map_err(failed)?)
        }
        _ => None,
    };
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut flags = format!("--capacity {}", capacity_flag(capacity.rps));
    // Only a saturated replica's CPU is its saturation CPU: a ramp cut
    // short by time, connections, latency or errors may not have got there.
    let saturation_cpu = capacity.saturation_cpu.filter(|_| capacity.limit == Limit::Throughput);
    if let Some(cpu) = saturation_cpu {
        flags.push_str(&format!(" --saturation-cpu {}", num(cpu.max(0.1), 1)));
    }
    if let Some(b) = &boot {
        flags.push_str(&format!(" --boot {}", boot_flag(b.in_service)));
    }
    let note = match (&service, &boot) {
        (_, None) if starts == 0 => Some("boot time not measured (--calibrate-starts 0)".to_string()),
        (_, None) if containerised => Some(
            "boot time not measured: --calibrate times process-driver services only; for a container service give --boot from `ebb events` (replica_started to replica_in_service)"
                .to_string(),
        ),
        (None, _) if !config_path.exists() => Some(format!(
            "boot time not measured: no config at {} (give -f ebb.toml [--service NAME] to start one replica and time it)",
            config_path.display()
        )),
        _ => None,
    };
    let cpu_note = match (&known, saturation_cpu) {
        (_, Some(_)) => None,
        (None, None) => Some(
            "saturation cpu not measured: the URL is not a balancer or replica of a running ebb (read the CPU `ebb status` shows for a saturated replica)"
                .to_string(),
        ),
        (Some(_), None) => Some(format!(
            "saturation cpu not measured: the capacity was limited by {}, not by a saturated replica",
            capacity.limit.as_str()
        )),
    };
    let note = match (note, cpu_note) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };

    if args.json {
        let json = Json {
            url,
            capacity: (capacity.rps * 10.0).round() / 10.0,
            capacity_limited_by: capacity.limit,
            capacity_connections: capacity.connections,
            saturation_cpu,
            through_balancer: through.as_ref(),
            p99_bound_ms: bound.as_secs_f64() * 1000.0,
            steps: &capacity.steps,
            boot_ms: boot.as_ref().map(|b| b.in_service.as_millis() as u64),
            boot: boot.as_ref().map(|b| BootJson {
                service: &b.service,
                starts: b.ready.len(),
                ready_ms: b.ready.iter().map(|d| d.as_millis() as u64).collect(),
                ready_median_ms: b.ready_median.as_millis() as u64,
                in_service_ms: b.in_service.as_millis() as u64,
                health_checks: health_note(&b.health),
            }),
            note: note.clone(),
            flags: flags.clone(),
            wall_ms: (wall_ms * 10.0).round() / 10.0,
        };
        println!("{}", serde_json::to_string_pretty(&json).expect("plain data"));
        return Ok(());
    }
    let mut out = String::new();
    out.push_str(&format!(
        "ebb simulate --calibrate: GET {url}, closed-model ramp (connections doubling every {}), p99 bound {} (--slo)\n\n",
        seconds(step_length),
        humantime::format_duration(bound)
    ));
    // The CPU column only when ebb's samples were read.
    let with_cpu = capacity.steps.iter().any(|s| s.cpu_percent.is_some());
    let cpu_column = |v: String| if with_cpu { format!("  {v:>6}") } else { String::new() };
    out.push_str(&format!(
        "{:>11}  {:>9}  {:>10}  {:>6}{}\n",
        "connections",
        "req/s",
        "p99",
        "errors",
        cpu_column("cpu".into())
    ));
    for s in &capacity.steps {
        let p99 = s.p99_ms.map(|p| ms(Duration::from_secs_f64(p / 1000.0))).unwrap_or_else(|| "-".into());
        let cpu = cpu_column(s.cpu_percent.map(|c| format!("{} %", num(c, 0))).unwrap_or_else(|| "-".into()));
        out.push_str(&format!("{:>11}  {:>9}  {:>10}  {:>6}{cpu}\n", s.connections, num(s.rps, 1), p99, s.errors));
    }
    out.push('\n');
    out.push_str(&format!(
        "capacity   {} req/s per replica, at {} connection{}: {}\n",
        capacity_flag(capacity.rps),
        capacity.connections,
        if capacity.connections == 1 { "" } else { "s" },
        capacity.limit.describe(bound)
    ));
    if let Some(t) = &through {
        let replicas = t.in_service_before.max(t.in_service_after);
        out.push_str(&format!(
            "           the URL is service {}'s balancer: {} req/s for the fleet / {} replica{} in service{}\n",
            t.service,
            capacity_flag(t.total_rps),
            replicas,
            if replicas == 1 { "" } else { "s" },
            if t.in_service_before != t.in_service_after {
                format!(
                    " (the fleet scaled from {} to {} during the ramp: the figure is approximate; calibrate against one replica's own address for an exact one)",
                    t.in_service_before, t.in_service_after
                )
            } else {
                String::new()
            }
        ));
    }
    if let Some(cpu) = saturation_cpu {
        out.push_str(&format!(
            "cpu        a saturated replica reads {} % of its cpu allotment (ebb's own sample at that step)\n",
            num(cpu, 1)
        ));
    }
    if let Some(b) = &boot {
        let each: Vec<String> = b.ready.iter().map(|d| ms(*d)).collect();
        out.push_str(&format!(
            "boot       service {}: first passing health check {} after start (median of {}: {}); in service after {} with its health checks ({})\n",
            b.service,
            ms(b.ready_median),
            b.ready.len(),
            each.join(", "),
            ms(b.in_service),
            health_note(&b.health)
        ));
    }
    if let Some(note) = &note {
        out.push_str(&format!("note       {note}\n"));
    }
    out.push_str(&format!("\nsimulate with: {flags}\n"));
    print!("{out}");
    Ok(())
}

fn health_note(h: &ebb_core::config::HealthConfig) -> String {
    format!(
        "{} passing in a row, every {}, the first {} after start",
        h.healthy_threshold,
        humantime::format_duration(h.interval),
        humantime::format_duration(h.interval.min(FIRST_PROBE))
    )
}

/// The URL was one of ebb's balancers: the ramp measured the fleet.
#[derive(Debug, Serialize)]
struct Through {
    service: String,
    in_service_before: u32,
    in_service_after: u32,
    /// What the ramp measured, for the whole fleet.
    total_rps: f64,
}

#[derive(Serialize)]
struct Json<'a> {
    url: &'a str,
    /// Requests per second one replica serves (the flag's value).
    capacity: f64,
    capacity_limited_by: Limit,
    capacity_connections: u32,
    /// The CPU % ebb read at the capacity step (`--saturation-cpu`), when
    /// the URL is ebb's and the ramp ended on a saturated replica.
    saturation_cpu: Option<f64>,
    /// Set when the URL is one of ebb's balancers: `capacity` is then the
    /// fleet's rate divided by its replicas in service.
    through_balancer: Option<&'a Through>,
    p99_bound_ms: f64,
    steps: &'a [Step],
    /// Start to in service (the flag's value), when measured.
    boot_ms: Option<u64>,
    boot: Option<BootJson<'a>>,
    note: Option<String>,
    flags: String,
    wall_ms: f64,
}

#[derive(Serialize)]
struct BootJson<'a> {
    service: &'a str,
    starts: usize,
    ready_ms: Vec<u64>,
    ready_median_ms: u64,
    in_service_ms: u64,
    health_checks: String,
}

/// The config and service to time, when there is a config to read.
fn boot_service(args: &SimulateArgs, config_path: &Path) -> Result<Option<(Config, String)>, Fail> {
    if !config_path.exists() {
        return match &args.service {
            Some(_) => Err(bad(format!(
                "{}: error: cannot read the config file: it does not exist; --service needs the config that defines it (-f FILE)",
                config_path.display()
            ))),
            None => Ok(None),
        };
    }
    let config = super::load_config(config_path).map_err(|e| bad(e.to_string()))?;
    let name = super::choose_service(&config, args.service.as_deref(), config_path).map_err(|e| bad(e.to_string()))?;
    if !config.services[&name].kind.has_balancer() {
        return Err(bad(format!(
            "error: service {name} is a worker pool: it has no health checks, and its boot time is its grace period; --calibrate times web services"
        )));
    }
    Ok(Some((config, name)))
}

/// The closed-model ramp.
async fn ramp(
    target: Target,
    step: Duration,
    duration: Duration,
    bound: Duration,
    cpu_from: Option<&(Admin, Behind)>,
    progress: &mut Progress,
) -> Result<Capacity, String> {
    let target = Arc::new(target);
    let shards = Shards::new(MAX_CONNECTIONS as usize);
    let mut collector = Collector::new(shards.clone(), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    let start = Instant::now();
    let settle = (step / 5).max(Duration::from_millis(200));
    let mut steps: Vec<Step> = Vec::new();
    let mut connections = 0u32;
    // 2xx/3xx answers and 4xx answers so far (5xx and failures are errors
    // in the collector's count already).
    let good_and_4xx = |c: &Collector| {
        let totals = c.totals();
        let good: u64 = totals.status.iter().filter(|(s, _)| (200..400).contains(s)).map(|(_, n)| n).sum();
        let client: u64 = totals.status.iter().filter(|(s, _)| (400..500).contains(s)).map(|(_, n)| n).sum();
        (good, client)
    };
    let result = loop {
        let next = if connections == 0 { 1 } else { (connections * 2).min(MAX_CONNECTIONS) };
        for id in connections..next {
            let (target, shards, stop) = (target.clone(), shards.clone(), stop.clone());
            workers.spawn(async move {
                let (mut conn, mut timer) = (None, Timer::default());
                let shard = shards.for_worker(id as usize);
                while !stop.load(Ordering::Relaxed) {
                    shard.sent();
                    let sent = Instant::now();
                    let outcome = exchange(&target, &mut conn, &mut timer, target.timeout.map(|t| sent + t)).await;
                    shard.record(outcome, sent.elapsed());
                    if let crate::load::http::RequestOutcome::Failed(_) = outcome {
                        // Do not spin on a dead server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        }
        connections = next;
        progress.show(&format!("calibrate: {connections} connection{} ...", if connections == 1 { "" } else { "s" }));
        let step_start = Instant::now();
        tokio::time::sleep(settle).await;
        collector.tick(start.elapsed().as_secs_f64());
        let (good_before, client_before) = good_and_4xx(&collector);
        tokio::time::sleep_until(step_start + step).await;
        let tick = collector.tick(start.elapsed().as_secs_f64());
        let (good_after, client_after) = good_and_4xx(&collector);
        let good = good_after - good_before;
        // ebb samples CPU once a second: the newest sample is from this
        // step's loaded part (a step lasts 2 s or more, a fifth settling).
        let cpu = match cpu_from {
            Some((admin, behind)) => admin.cpu(behind).await.ok().flatten().map(|c| round(c, 1)),
            None => None,
        };
        let s = Step {
            connections,
            seconds: round(tick.length_s, 3),
            rps: round(good as f64 / tick.length_s.max(1e-9), 2),
            p99_ms: tick.p99_ms.map(|p| round(p, 1)),
            errors: tick.errors + (client_after - client_before),
            cpu_percent: cpu,
        };
        progress.show(&format!(
            "calibrate: {} connection{}: {} req/s, p99 {}, {} errors",
            s.connections,
            if s.connections == 1 { "" } else { "s" },
            num(s.rps, 1),
            s.p99_ms.map(|p| format!("{} ms", num(p, 0))).unwrap_or_else(|| "-".into()),
            s.errors
        ));
        steps.push(s);
        let elapsed_out = start.elapsed() + step > duration;
        if let Some((best, limit)) =
            verdict(&steps, bound.as_secs_f64() * 1000.0, elapsed_out, connections >= MAX_CONNECTIONS)
        {
            break (best, limit);
        }
    };
    stop.store(true, Ordering::Relaxed);
    // Requests in flight are abandoned: the measurement is over.
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    let (best, limit) = result;
    let Some(best) = best else {
        let first = &steps[0];
        let totals = collector.totals();
        let answers = totals
            .status
            .iter()
            .map(|(s, n)| format!("{n} × {s}"))
            .chain(totals.failures.iter().map(|(f, n)| format!("{n} × {}", f.label())));
        let seen = answers.collect::<Vec<_>>().join(", ");
        return Err(match (limit, first.p99_ms) {
            (Limit::Latency, Some(p99)) => format!(
                "error: --calibrate {}: even one connection's p99 was {} ms, over the bound of {} (--slo): the service misses the objective at any load; raise --slo or look at the service first",
                target.url,
                num(p99, 0),
                humantime::format_duration(bound)
            ),
            _ => format!(
                "error: --calibrate {}: {} errors on one connection (answers: {seen}); nothing to measure a capacity from: fix the service or the URL first",
                target.url, first.errors
            ),
        });
    };
    let chosen = &steps[best];
    Ok(Capacity { rps: chosen.rps, connections: chosen.connections, limit, saturation_cpu: chosen.cpu_percent, steps })
}

/// Stops (SIGKILL to its process group) a replica that was started and
/// not stopped, e.g. when ebb is interrupted mid-measurement.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A scratch state directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `starts` replicas of the service one after the other and times
/// each to its first passing health check.
async fn measure_boot(
    config: &Config,
    name: &str,
    starts: u32,
    limit: Duration,
    progress: &mut Progress,
) -> Result<Boot, String> {
    let service: &ServiceConfig = &config.services[name];
    let executable =
        std::env::current_exe().map_err(|e| format!("error: cannot find ebb's own executable for {{ebb}}: {e}"))?;
    let driver = ProcessDriver::new(executable);
    let health = &service.health;
    let mut ready = Vec::new();
    for n in 1..=starts {
        progress.show(&format!("calibrate: starting replica {n} of {starts} of service {name} to time its boot ..."));
        let scratch = Scratch(std::env::temp_dir().join(format!(
            "ebb-calibrate-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )));
        std::fs::create_dir_all(&scratch.0)
            .map_err(|e| format!("error: cannot create {}: {e}", scratch.0.display()))?;
        let id = format!("{name}-calibrate-{n}");
        let spec = ReplicaSpec {
            service: name.to_string(),
            replica_id: id.clone(),
            version: 1,
            command: service.command.clone(),
            env: service.env.clone(),
            state_dir: scratch.0.clone(),
            log_path: scratch.0.join("logs").join(format!("{id}.log")),
            container: None,
            ports: service.ports.clone(),
            limits: None,
        };
        let t0 = Instant::now();
        let running = driver.start(&spec).await.map_err(|e| format!("error: --calibrate: {e}"))?;
        let mut guard = KillOnDrop(running.pid);
        let outcome = first_pass(&running, health, t0, limit).await;
        let stopped = driver.stop(&running, service.stop_timeout).await;
        guard.0 = None;
        let took = outcome.map_err(|why| {
            let log = tail(&spec.log_path, 10);
            format!(
                "error: --calibrate: replica {id} of service {name} ({}) {why}{}",
                match &service.command {
                    ebb_core::config::CommandSpec::Shell(line) => format!("`{line}`"),
                    ebb_core::config::CommandSpec::Argv(argv) => format!("`{}`", argv.join(" ")),
                },
                if log.is_empty() { String::new() } else { format!("; the end of its output:\n{log}") }
            )
        })?;
        stopped.map_err(|e| format!("error: --calibrate: {e}"))?;
        progress
            .show(&format!("calibrate: replica {n} of {starts}: first passing health check {} after start", ms(took)));
        ready.push(took);
    }
    let mut sorted = ready.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    Ok(Boot {
        service: name.to_string(),
        ready,
        ready_median: median,
        in_service: in_service_after(median, health.interval, health.healthy_threshold),
        health: health.clone(),
    })
}

/// Probes a booting replica every 20 ms; the time from `t0` to the end of
/// the first passing probe.
async fn first_pass(
    running: &RunningReplica,
    health: &ebb_core::config::HealthConfig,
    t0: Instant,
    limit: Duration,
) -> Result<Duration, String> {
    let addr: SocketAddr = running.addr;
    let mut last = String::from("no health check answered yet");
    loop {
        if running.has_exited() {
            let reason = running.exited().await;
            return Err(format!("{reason} before it passed a health check (last: {last})"));
        }
        let outcome = probe::probe(addr, &health.path, health.timeout, &health.matcher).await;
        if outcome.passed {
            return Ok(t0.elapsed());
        }
        last = outcome.detail;
        if t0.elapsed() > limit {
            return Err(format!(
                "did not pass a health check within {} (--calibrate-duration; last: {last})",
                humantime::format_duration(limit)
            ));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(connections: u32, rps: f64, p99_ms: f64) -> Step {
        Step { connections, seconds: 2.0, rps, p99_ms: Some(p99_ms), errors: 0, cpu_percent: None }
    }

    #[test]
    fn the_ramp_stops_when_throughput_stops_rising() {
        let mut steps = vec![step(1, 24.0, 42.0), step(2, 25.0, 81.0)];
        assert_eq!(verdict(&steps, 1000.0, false, false), None, "one flat doubling is not enough");
        steps.push(step(4, 25.1, 160.0));
        assert_eq!(verdict(&steps, 1000.0, false, false), Some((Some(2), Limit::Throughput)));
        let rising = [step(1, 10.0, 5.0), step(2, 20.0, 5.0), step(4, 40.0, 5.0)];
        assert_eq!(verdict(&rising, 1000.0, false, false), None);
        assert_eq!(verdict(&rising, 1000.0, true, false), Some((Some(2), Limit::Duration)));
        assert_eq!(verdict(&rising, 1000.0, false, true), Some((Some(2), Limit::Connections)));
    }

    #[test]
    fn a_step_over_the_latency_bound_or_with_errors_does_not_count() {
        let steps = [step(1, 10.0, 100.0), step(2, 20.0, 300.0), step(4, 30.0, 1500.0)];
        assert_eq!(verdict(&steps, 1000.0, false, false), Some((Some(1), Limit::Latency)));
        assert_eq!(verdict(&[step(1, 1.0, 1500.0)], 1000.0, false, false), Some((None, Limit::Latency)));
        let mut errors = step(4, 30.0, 200.0);
        errors.errors = 10;
        assert_eq!(verdict(&[step(1, 10.0, 100.0), errors], 1000.0, false, false), Some((Some(0), Limit::Errors)));
    }

    #[test]
    fn boot_follows_the_probe_schedule() {
        let ms = Duration::from_millis;
        // Ready at 40 ms: passes at the first probe (200 ms) and the next (500 ms).
        assert_eq!(in_service_after(ms(40), ms(300), 2), ms(500));
        // Ready at 250 ms: first pass at 500 ms, second at 800 ms.
        assert_eq!(in_service_after(ms(250), ms(300), 2), ms(800));
        // ALB defaults: 30 s interval, 5 passes; first probe after 200 ms.
        assert_eq!(in_service_after(ms(3000), Duration::from_secs(30), 5), ms(200 + 30_000 * 5));
        assert_eq!(in_service_after(ms(10), ms(100), 1), ms(100));
        assert_eq!(boot_flag(ms(500)), "500ms");
        assert_eq!(boot_flag(ms(2004)), "2s");
        assert_eq!(boot_flag(ms(1234)), "1230ms");
        assert_eq!(boot_flag(ms(95_400)), "95s");
        assert_eq!(boot_flag(ms(1)), "10ms");
    }
}
