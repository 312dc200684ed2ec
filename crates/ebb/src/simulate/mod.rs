//! `ebb simulate`: replay traffic against a scaling policy in virtual time
//! (docs/simulate.md; the model and its fidelity in docs/simulation.md).
//!
//! The engine is pure and lives in the core ([`ebb_core::sim`]): it runs
//! the same `Autoscaler` the live controller runs. This module is the I/O
//! around it:
//! - [`input`]: traffic from a file (CSV, access log), a built-in shape,
//!   or a running ebb's recorded history (`GET /api/v1/metrics`);
//! - [`output`]: the decision log (worded as `ebb events` prints it), the
//!   summary table, `--json`, `--csv`;
//! - [`html`]: the `--report` page, hand-written SVG charts, no scripts;
//! - [`calibrate`]: `--calibrate URL`, which measures a replica's capacity
//!   (with `ebb load`'s client) and boot time (with the process driver and
//!   the health checks) instead of guessing them.

pub mod calibrate;
mod forecast_report;
pub mod html;
pub mod input;
pub mod output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ebb_core::config::{Bounds, Config, Replicas, ServiceConfig};
use ebb_core::sim::{self, FleetModel, Policy, Preset, SimOptions, Slo};

/// Exit code for bad input (config, arguments, trace), as elsewhere in ebb.
const EXIT_BAD_INPUT: u8 = 2;

/// Replay traffic against the service's scaling policy in virtual time: the
/// same autoscaler as `ebb up`, a model of the fleet, seconds per simulated day.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Traffic (one of):
  --trace FILE      CSV `second,rate` (one row per second), or an nginx/Apache combined or ALB access log
  --shape SHAPE     constant | step | spike | sawtooth | diurnal, with parameters:
                    step:base=50,peak=400,at=5m,hold=30m,duration=1h   diurnal:base=20,peak=200,peak_at=14h
  --history SINCE   what the running ebb recorded for the service (e.g. 2h, or 2026-01-05T08:00:00Z)

Or measure the model instead of simulating:
  --calibrate URL   ramp load against URL (one replica) for its capacity and, with -f ebb.toml,
                    start the service's replica a few times for its boot time; prints the flags

Examples:
  ebb simulate --shape step:base=50,peak=400,at=5m                  # what does my policy do on a step?
  ebb simulate --trace day.csv --preset aws --preset hpa --report day.html
  ebb simulate -f ebb.toml --trace access.log --compare tuned.toml --csv run.csv
  ebb simulate --shape diurnal:peak=40000 --max 1000 --json
  ebb simulate -f ebb.toml --calibrate http://127.0.0.1:8081/work?cpu_ms=10   # measure --capacity and --boot

Exit status: 0 when the simulation (or calibration) ran, 2 for bad input (config, arguments, trace),
1 when --calibrate could not measure (the URL does not answer, errors, a replica that does not boot).")]
pub struct SimulateArgs {
    /// The service whose policy to simulate (needed when the config has several).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// Traffic from a file: CSV `second,rate` rows, one per second with no
    /// gap, or an nginx/Apache combined or ALB access log (detected).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["shape", "history"])]
    pub trace: Option<PathBuf>,

    /// Traffic from a built-in shape: NAME[:key=value,…] (see below).
    #[arg(long, value_name = "SHAPE", conflicts_with = "history")]
    pub shape: Option<String>,

    /// Traffic the running ebb recorded for the service since SINCE: a
    /// duration ago (`2h`) or an RFC 3339 time.
    #[arg(long, value_name = "SINCE")]
    pub history: Option<String>,

    /// Requests per second one replica serves when saturated (at 100 % CPU).
    #[arg(long, value_name = "RPS_PER_REPLICA", default_value_t = 50.0)]
    pub capacity: f64,

    /// The CPU % a saturated replica reads: 100 unless it saturates before
    /// it uses its whole allotment (less), or uses more than it (more).
    #[arg(long, value_name = "PERCENT", default_value_t = 100.0)]
    pub saturation_cpu: f64,

    /// From start to in service [default: the health checks' interval ×
    /// healthy_threshold].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub boot: Option<Duration>,

    /// From a thaw to serving: a suspended replica resumed (scale to
    /// zero's `suspend` wake, a warm pool member taken by a scale-out).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub resume: Duration,

    /// Replica failures (crashes, spot interruptions) per replica-hour,
    /// e.g. 0.04 for about one a day; each failed replica is replaced.
    #[arg(long, value_name = "PER_REPLICA_HOUR", default_value_t = 0.0)]
    pub failure_rate: f64,

    /// The notice each failure gives, as a spot interruption does (e.g.
    /// 2m): the replica keeps serving until its replacement is in service
    /// or the notice runs out [default: 0, failures are crashes].
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub interruption_notice: Duration,

    /// A request waits at most this long for a replica; beyond, it is shed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub queue_limit: Duration,

    /// Price of one replica-hour, for the cost.
    #[arg(long, value_name = "PER_REPLICA_HOUR", default_value_t = 0.05)]
    pub price: f64,

    /// The latency objective each second is held to: pNN<DURATION.
    #[arg(long, value_name = "pNN<DURATION", default_value = "p99<1s")]
    pub slo: String,

    /// Seed of the random draws (failures, shape noise): same inputs and
    /// seed, byte-identical outputs.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Wall-clock time of the trace's first second (RFC 3339 or Unix
    /// seconds), seen by scheduled actions and printed in the log
    /// [default: the time the trace recorded, else 2026-01-05T00:00:00Z
    /// (a Monday) with times printed as +HH:MM:SS].
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,

    /// Also run this config's policy for the same service (repeatable).
    #[arg(long, value_name = "OTHER.toml")]
    pub compare: Vec<PathBuf>,

    /// Also run a built-in policy modelling AWS target tracking (aws),
    /// the Kubernetes HPA (hpa) or Knative's KPA (kpa) (repeatable).
    #[arg(long, value_name = "NAME", value_parser = ["aws", "hpa", "kpa"])]
    pub preset: Vec<String>,

    /// What-if: replace the service's replicas.max (may exceed the config's
    /// limit of 1000).
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,

    /// What-if: replace the service's replicas.min.
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,

    /// Model the swarm's nodes with the file's `[cluster]`: boot=DURATION
    /// (add_node to a ready node), cpus=N per node, optionally
    /// replica_cpus=N [default: the service's cpus]. Replicas with no room
    /// wait until a node boots.
    #[arg(long, value_name = "boot=90s,cpus=2")]
    pub node_pool: Option<String>,

    /// Two scaling actions in opposite directions this close count as a flap.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub flap_window: Duration,

    /// Write an HTML report with SVG charts (load, replicas, CPU, latency
    /// vs the SLO, scaling events).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write one row per second (and per policy): second, rate, desired,
    /// in_service, cpu, p99_ms, queue_ms, shed.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Print the summary as JSON (an array with --compare or --preset).
    #[arg(long)]
    pub json: bool,

    /// Print only the summary, not the decision log.
    #[arg(short, long)]
    pub quiet: bool,

    /// Measure instead of simulating: ramp load against URL (one replica,
    /// e.g. http://127.0.0.1:8081/work) with ebb load's client, doubling the
    /// connections until throughput stops rising or p99 crosses the --slo
    /// threshold, for --capacity; and with a config (-f, --service), start
    /// one replica a few times and time it to its first passing health
    /// check, for --boot. Prints the flags to paste (--json: an object).
    #[arg(long, value_name = "URL", conflicts_with_all = ["trace", "shape", "history", "compare", "preset", "report", "csv", "quiet"])]
    pub calibrate: Option<String>,

    /// With --calibrate: the longest the load ramp may run (it stops
    /// sooner once throughput stops rising), and the longest one replica
    /// may take to pass a health check [default: 20s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub calibrate_duration: Option<Duration>,

    /// With --calibrate and a config: how many times to start a replica
    /// to time its boot (the median counts); 0 does not start any
    /// [default: 3].
    #[arg(long, value_name = "N")]
    pub calibrate_starts: Option<u32>,
}

/// A duration: `5m`, `1h30m`, `500ms`, or bare seconds (`300`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (e.g. 30s, 5m, 1h30m)"))
}

/// Bad input: printed as is, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

fn bad(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// Everything a run was asked for, checked.
pub struct Plan {
    pub service: String,
    pub trace: sim::Trace,
    pub model: FleetModel,
    pub options: SimOptions,
    pub policies: Vec<Policy>,
    /// One line per policy for the report (`ebb.toml`, a preset's model).
    pub descriptions: Vec<String>,
    /// Print wall-clock times (RFC 3339) rather than `+HH:MM:SS`.
    pub absolute_times: bool,
    /// How the boot time was chosen, for the header.
    pub boot_note: String,
}

/// `ebb simulate`.
pub async fn run(args: SimulateArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.calibrate {
        return calibrate::run(&args, url, config_path).await;
    }
    if args.calibrate_duration.is_some() || args.calibrate_starts.is_some() {
        eprintln!("error: --calibrate-duration and --calibrate-starts go with --calibrate URL");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let plan = match plan(&args, config_path).await {
        Ok(plan) => plan,
        Err(error) => {
            return match error.downcast::<BadInput>() {
                Ok(BadInput(message)) => {
                    eprintln!("{message}");
                    Ok(ExitCode::from(EXIT_BAD_INPUT))
                }
                Err(error) => Err(error),
            }
        }
    };
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut wall_ms = Vec::new();
    // The demand depends on the trace and the model only: once for all.
    let demand = sim::elasticity::demand(&plan.trace, &plan.model, &plan.options.slo);
    for policy in &plan.policies {
        let t = Instant::now();
        runs.push(sim::simulate_against(policy, &plan.model, &plan.trace, &plan.options, &demand));
        wall_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // The baselines keep the main policy's bounds.
    let t = Instant::now();
    let bounds = plan.policies[0].replicas.bounds;
    let baselines = sim::baselines(&demand, bounds, &plan.model, &plan.trace, &plan.options);
    let baseline_ms = t.elapsed().as_secs_f64() * 1000.0 / 2.0;
    for run in baselines {
        runs.push(run);
        wall_ms.push(baseline_ms);
    }
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;

    if let Some(path) = &args.csv {
        let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        output::write_csv(&mut w, &runs)?;
        std::io::Write::flush(&mut w).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        let page = html::render(&plan, &runs);
        std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        output::write_json(&mut out, &plan, &runs, &wall_ms)?;
    } else {
        output::write_text(&mut out, &plan, &runs, !args.quiet, total_ms)?;
        if let Some(path) = &args.csv {
            std::io::Write::write_fmt(&mut out, format_args!("per-second CSV: {}\n", path.display()))?;
        }
        if let Some(path) = &args.report {
            std::io::Write::write_fmt(&mut out, format_args!("report: {}\n", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The service to simulate (or calibrate): `--service`, or the config's
/// only one.
fn choose_service(config: &Config, service: Option<&str>, config_path: &Path) -> anyhow::Result<String> {
    let name = match service {
        Some(name) => name.to_string(),
        None if config.services.len() == 1 => config.services.keys().next().unwrap().clone(),
        None => {
            return Err(bad(format!(
                "error: {} has {} services ({}); choose one with --service NAME",
                config_path.display(),
                config.services.len(),
                config.services.keys().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    if !config.services.contains_key(&name) {
        return Err(bad(format!(
            "error: {} has no service {name:?} (it has: {})",
            config_path.display(),
            config.services.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(name)
}

/// `--node-pool boot=90s,cpus=2[,replica_cpus=0.5]` with the file's `[cluster]`.
fn node_pool(spec: &str, config: &Config, service: &ServiceConfig) -> Result<sim::NodePoolModel, String> {
    let Some(cluster) = config.cluster.clone() else {
        return Err(format!(
            "{} has no [cluster] table (target_reserved_cpu, nodes, add_node, remove_node): the node pool follows it; see docs/swarm.md",
            config.path.display()
        ));
    };
    let (mut boot, mut cpus, mut replica_cpus) = (None, None, service.container.as_ref().and_then(|c| c.cpus));
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("{part:?} is not key=value (boot=90s,cpus=2)"));
        };
        let number = |v: &str| match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
            _ => Err(format!("{key}={v}: a number of CPUs above 0")),
        };
        match key {
            "boot" => boot = Some(parse_duration(value).map_err(|e| format!("boot={value}: {e}"))?),
            "cpus" => cpus = Some(number(value)?),
            "replica_cpus" => replica_cpus = Some(number(value)?),
            other => return Err(format!("unknown key {other:?}; the keys are boot, cpus and replica_cpus")),
        }
    }
    let boot = boot.ok_or("give boot=DURATION, how long add_node takes to a ready node (e.g. boot=90s)")?;
    let cpus = cpus.ok_or("give cpus=N, the CPUs of a node (e.g. cpus=2)")?;
    let replica_cpus = replica_cpus
        .ok_or("the service has no cpus (what a replica reserves): set cpus in the file, or give replica_cpus=N")?;
    if replica_cpus > cpus {
        return Err(format!(
            "a replica reserves {replica_cpus} CPUs, more than a node's {cpus}: it would never be placed"
        ));
    }
    Ok(sim::NodePoolModel { cluster, boot, cpus, replica_cpus })
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    let source = crate::config_file::read(path).map_err(|e| bad(e.to_string()))?;
    Config::parse(&source, path).map_err(|e| bad(e.to_string()))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Checks the arguments and reads every input; nothing runs before all of
/// it is known good.
pub async fn plan(args: &SimulateArgs, config_path: &Path) -> anyhow::Result<Plan> {
    let config = load_config(config_path)?;
    let service_name = choose_service(&config, args.service.as_deref(), config_path)?;
    let service = &config.services[&service_name];

    let slo = Slo::parse(&args.slo).map_err(|e| bad(format!("error: {e}")))?;
    if !(args.capacity.is_finite() && args.capacity > 0.0) {
        return Err(bad("error: --capacity must be a number of requests per second above 0"));
    }
    if !(args.saturation_cpu.is_finite() && args.saturation_cpu > 0.0 && args.saturation_cpu <= 1000.0) {
        return Err(bad("error: --saturation-cpu must be a percentage above 0 (at most 1000)"));
    }
    if !(args.failure_rate.is_finite() && args.failure_rate >= 0.0) {
        return Err(bad("error: --failure-rate must be 0 or more failures per replica-hour"));
    }
    if !(args.price.is_finite() && args.price >= 0.0) {
        return Err(bad("error: --price must be 0 or more per replica-hour"));
    }

    let trace = match (&args.trace, &args.shape, &args.history) {
        (Some(path), None, None) => input::read_trace(path).map_err(bad)?,
        (None, Some(spec), None) => {
            sim::parse_shape(spec, args.seed).map_err(|e| bad(format!("error: --shape: {e}")))?
        }
        (None, None, Some(since)) => {
            input::history(&config, &service_name, since).await.map_err(|e| bad(format!("error: {e:#}")))?
        }
        (None, None, None) => {
            return Err(bad(
                "error: no traffic to simulate: give --trace FILE, --shape NAME[:params] or --history SINCE",
            ))
        }
        _ => return Err(bad("error: give only one of --trace, --shape and --history")),
    };

    let (start_unix, absolute_times) = match &args.start {
        Some(text) => (input::parse_start(text).map_err(|e| bad(format!("error: --start: {e}")))?, true),
        None => match trace.start_unix {
            Some(t) => (t, true),
            None => (sim::engine::DEFAULT_START_UNIX, false),
        },
    };

    let (boot, boot_note) = match args.boot {
        Some(b) => (b, "--boot".to_string()),
        None => {
            let h = &service.health;
            (
                h.interval.saturating_mul(h.healthy_threshold),
                format!("{} health checks every {}", h.healthy_threshold, humantime::format_duration(h.interval)),
            )
        }
    };
    let model = FleetModel {
        capacity: args.capacity,
        saturation_cpu: args.saturation_cpu,
        boot,
        resume: args.resume,
        failure_rate: args.failure_rate,
        interruption_notice: args.interruption_notice,
        queue_limit: args.queue_limit,
        seed: args.seed,
        max_in_flight: service.proxy.max_in_flight,
    };
    let node_pool = match &args.node_pool {
        None => None,
        Some(spec) => Some(node_pool(spec, &config, service).map_err(|e| bad(format!("error: --node-pool: {e}")))?),
    };
    let options = SimOptions {
        service: service_name.clone(),
        start_unix,
        slo,
        price: args.price,
        flap_window: args.flap_window,
        node_pool,
    };

    let bounds = |b: Replicas| -> anyhow::Result<Replicas> {
        let min = args.min.unwrap_or(b.bounds.min);
        let max = args.max.unwrap_or(b.bounds.max);
        if min > max {
            return Err(bad(format!("error: replicas min {min} is above max {max} (--min/--max)")));
        }
        let bounds = Bounds { min, max };
        Ok(Replicas { bounds, desired: bounds.clamp(b.desired) })
    };
    let mut policies = Vec::new();
    let mut descriptions = Vec::new();
    let name_of = |base: String, policies: &Vec<Policy>| {
        let mut name = base.clone();
        let mut n = 2;
        while policies.iter().any(|p: &Policy| p.name == name) {
            name = format!("{base} #{n}");
            n += 1;
        }
        name
    };
    let describe = |scaling: &ebb_core::config::ScalingConfig| {
        let mut parts: Vec<String> = scaling
            .target_tracking
            .iter()
            .map(|t| format!("{} (target tracking {} {})", t.name, t.metric, t.metric.show_target(t.target)))
            .collect();
        parts.extend(scaling.step.iter().map(|s| format!("{} (step: {})", s.name, s.alarm)));
        parts.extend(scaling.scheduled.iter().map(|s| format!("{} (scheduled `{}`)", s.name, s.cron)));
        if parts.is_empty() {
            "no policies: a fixed fleet".to_string()
        } else {
            parts.join(", ")
        }
    };
    let main_name = name_of(file_name(config_path), &policies);
    descriptions.push(format!("{}: {}", config_path.display(), describe(&service.scaling)));
    policies.push(Policy {
        name: main_name,
        scaling: service.scaling.clone(),
        replicas: bounds(service.replicas)?,
        idle: service.idle.clone(),
        warm_pool: service.warm_pool,
    });
    for path in &args.compare {
        let other = load_config(path)?;
        let Some(svc) = other.services.get(&service_name) else {
            return Err(bad(format!(
                "error: --compare {}: no service {service_name:?} in it (it has: {}); compare configs of the same service",
                path.display(),
                other.services.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let name = name_of(file_name(path), &policies);
        descriptions.push(format!("{}: {}", path.display(), describe(&svc.scaling)));
        policies.push(Policy {
            name,
            scaling: svc.scaling.clone(),
            replicas: bounds(svc.replicas)?,
            idle: svc.idle.clone(),
            warm_pool: svc.warm_pool,
        });
    }
    for preset in &args.preset {
        let preset = Preset::from_name(preset).expect("clap checked the name");
        let name = name_of(preset.name().to_string(), &policies);
        let (metric, target) = Preset::tracked(&service.scaling);
        descriptions.push(format!(
            "{}: {} (on {metric} {})",
            preset.name(),
            preset.describe(),
            metric.show_target(target)
        ));
        policies.push(Policy {
            name,
            scaling: preset.scaling(&service.scaling),
            replicas: bounds(service.replicas)?,
            idle: service.idle.clone(),
            warm_pool: service.warm_pool,
        });
    }

    Ok(Plan { service: service_name, trace, model, options, policies, descriptions, absolute_times, boot_note })
}
