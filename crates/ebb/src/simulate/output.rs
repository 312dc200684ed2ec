//! The text output (decision log and summary table), `--json` and `--csv`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use ebb_core::sim::{Run, SimEvent, Summary};
use serde::Serialize;

use super::Plan;

/// A number with at most `decimals` decimals, trailing zeros dropped:
/// `12`, `12.5`, `0.333`.
pub fn num(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// An event's time: RFC 3339 with milliseconds, as `ebb events` prints it,
/// when the trace's wall-clock start is known; else `+HH:MM:SS` from the
/// start of the trace.
pub fn event_time(plan: &Plan, at: u64) -> String {
    if plan.absolute_times {
        let unix = plan.options.start_unix.saturating_add(at as i64);
        let t =
            if unix >= 0 { SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64) } else { SystemTime::UNIX_EPOCH };
        humantime::format_rfc3339_millis(t).to_string()
    } else {
        format!("+{:02}:{:02}:{:02}", at / 3600, at % 3600 / 60, at % 60)
    }
}

/// One decision-log line, laid out exactly as `ebb events` lays out a live
/// event: `{time}  {service:<8} {kind:<20} {replica or -} {from}->{to}  {reason}`.
pub fn event_line(plan: &Plan, e: &SimEvent) -> String {
    let change = match (e.from, e.to) {
        (Some(from), Some(to)) => format!(" {from}->{to}"),
        _ => String::new(),
    };
    format!(
        "{}  {:<8} {:<20} {}{}  {}",
        event_time(plan, e.at),
        // The node pool's events are the cluster's, as live.
        if e.kind.starts_with("node_") { "cluster" } else { plan.service.as_str() },
        e.kind,
        e.replica.as_deref().unwrap_or("-"),
        change,
        e.reason
    )
}

/// A duration in ms for people: `460 ms`, `2.31 s`.
fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000.0 => format!("{} ms", num(ms, 0)),
        Some(ms) => format!("{} s", num(ms / 1000.0, 2)),
    }
}

type Cell = Box<dyn Fn(&Summary) -> String>;
type Key = Box<dyn Fn(&Summary) -> f64>;

/// One row of the summary: its label, how a run's cell reads, and, when
/// lower is better on it, the number that ranks the policies.
pub struct Measure {
    pub label: String,
    cell: Cell,
    lower_is_better: Option<Key>,
}

fn measure(label: impl Into<String>, cell: Cell, key: Option<Key>) -> Measure {
    Measure { label: label.into(), cell, lower_is_better: key }
}

/// The summary's measures, in table order. The elasticity scores are the
/// SPEC Research Group's (docs/simulation.md).
pub fn measures(runs: &[Run]) -> Vec<Measure> {
    let slo = runs.first().map(|r| r.summary.slo.to_string()).unwrap_or_default();
    let p = runs.first().map(|r| num(r.summary.slo.percentile, 3)).unwrap_or_default();
    let pct = |f: fn(&Summary) -> f64| -> Cell { Box::new(move |s| format!("{} %", num(f(s), 2))) };
    let key = |f: fn(&Summary) -> f64| -> Option<Key> { Some(Box::new(f)) };
    let mut rows = vec![
        measure("replica-hours", Box::new(|s| num(s.replica_hours, 2)), key(|s| s.replica_hours)),
        measure("cost", Box::new(|s| num(s.cost, 2)), key(|s| s.cost)),
        measure(
            format!("over SLO {slo}"),
            Box::new(|s| format!("{} s ({} %)", s.slo_violation_seconds, num(s.slo_violation_percent(), 2))),
            key(|s| s.slo_violation_seconds as f64),
        ),
        measure("shed requests", Box::new(|s| num(s.shed_requests.round(), 0)), key(|s| s.shed_requests.round())),
        measure(
            "scaling actions",
            Box::new(|s| format!("{} ({} out, {} in)", s.scaling_actions, s.scale_outs, s.scale_ins)),
            key(|s| f64::from(s.scaling_actions)),
        ),
        measure("flaps", Box::new(|s| s.flaps.to_string()), key(|s| f64::from(s.flaps))),
        measure("max replicas", Box::new(|s| s.max_replicas.to_string()), None),
        measure("mean cpu", Box::new(|s| format!("{} %", num(s.mean_cpu, 1))), None),
        measure(
            format!("worst p{p}"),
            Box::new(|s| latency(s.worst_latency_ms)),
            key(|s| s.worst_latency_ms.unwrap_or(0.0)),
        ),
        measure("failures", Box::new(|s| s.failures.to_string()), None),
        measure("under-provisioning a_U", pct(|s| s.scores.under_accuracy), key(|s| s.scores.under_accuracy)),
        measure("over-provisioning a_O", pct(|s| s.scores.over_accuracy), key(|s| s.scores.over_accuracy)),
        measure("time short t_U", pct(|s| s.scores.under_timeshare), key(|s| s.scores.under_timeshare)),
        measure("time over t_O", pct(|s| s.scores.over_timeshare), key(|s| s.scores.over_timeshare)),
        measure("instability k", pct(|s| s.scores.instability), key(|s| s.scores.instability)),
        measure(
            "jitter j",
            Box::new(|s| format!("{}/h", num(s.scores.jitter_per_hour, 1))),
            key(|s| s.scores.jitter_per_hour.abs()),
        ),
    ];
    // Frozen replicas (scale to zero's suspend, a warm pool): memory, no
    // CPU; shown only when a policy has them.
    if runs.iter().any(|r| r.summary.suspended_hours > 0.0) {
        rows.insert(1, measure("suspended replica-hours", Box::new(|s| num(s.suspended_hours, 2)), None));
    }
    rows
}

/// The summary as rows of cells: a header row with the policies (the
/// baselines last), then one row per measure.
pub fn summary_rows(runs: &[Run]) -> Vec<Vec<String>> {
    let mut table: Vec<Vec<String>> =
        vec![std::iter::once("policy".to_string()).chain(runs.iter().map(|r| r.policy.clone())).collect()];
    for m in measures(runs) {
        table.push(std::iter::once(m.label.clone()).chain(runs.iter().map(|r| (m.cell)(&r.summary))).collect());
    }
    table
}

/// A policy meets the SLO when at most this share of its seconds miss it
/// (or it misses no more than the best policy does).
pub const MEETS_SLO_PERCENT: f64 = 1.0;

/// For each measure row, the runs (indexes) that are best on it among the
/// policies (baselines are references, never winners); empty where lower
/// is not better (max replicas, mean CPU, failures) or with one policy.
pub fn row_winners(runs: &[Run]) -> Vec<Vec<usize>> {
    let policies: Vec<usize> = (0..runs.len()).filter(|&i| !runs[i].baseline).collect();
    measures(runs)
        .iter()
        .map(|m| match (&m.lower_is_better, policies.len() > 1) {
            (Some(key), true) => {
                let best = policies.iter().map(|&i| key(&runs[i].summary)).fold(f64::INFINITY, f64::min);
                policies.iter().copied().filter(|&i| key(&runs[i].summary) <= best + 1e-9).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// The policy that wins overall: the cheapest (cost, then replica-hours)
/// of those that meet the SLO, i.e. miss it in at most
/// [`MEETS_SLO_PERCENT`] of the seconds, or no more often than the best
/// policy. `None` without a policy.
pub fn overall_winner(runs: &[Run]) -> Option<usize> {
    let policies: Vec<usize> = (0..runs.len()).filter(|&i| !runs[i].baseline).collect();
    let best = policies.iter().map(|&i| runs[i].summary.slo_violation_percent()).fold(f64::INFINITY, f64::min);
    let bar = best.max(MEETS_SLO_PERCENT);
    let rank = |i: &usize| (runs[*i].summary.cost, runs[*i].summary.replica_hours);
    policies
        .into_iter()
        .filter(|&i| runs[i].summary.slo_violation_percent() <= bar + 1e-9)
        .min_by(|a, b| rank(a).partial_cmp(&rank(b)).unwrap_or(std::cmp::Ordering::Equal))
}

/// The sentence naming the overall winner and why (with one policy:
/// whether it meets the SLO), and what the oracle would have spent.
pub fn verdict(runs: &[Run]) -> Option<String> {
    let policies = runs.iter().filter(|r| !r.baseline).count();
    let i = overall_winner(runs)?;
    let s = &runs[i].summary;
    let violation = num(s.slo_violation_percent(), 2);
    let mut text = if policies > 1 {
        let best = runs
            .iter()
            .filter(|r| !r.baseline)
            .map(|r| r.summary.slo_violation_percent())
            .fold(f64::INFINITY, f64::min);
        format!(
            "{} wins: the cheapest policy that meets the SLO {} (over it in at most {} % of the seconds, or no more often than the best policy, here {} %): {} replica-hours, cost {}, over the SLO in {violation} %.",
            runs[i].policy,
            s.slo,
            num(MEETS_SLO_PERCENT, 2),
            num(best, 2),
            num(s.replica_hours, 2),
            num(s.cost, 2),
        )
    } else {
        let meets = if s.slo_violation_percent() <= MEETS_SLO_PERCENT { "meets it" } else { "misses it" };
        format!(
            "{}: over the SLO {} in {violation} % of the seconds ({meets}: the bar is {} %).",
            runs[i].policy,
            s.slo,
            num(MEETS_SLO_PERCENT, 2)
        )
    };
    if let Some(oracle) = runs.iter().find(|r| r.baseline && r.policy == ebb_core::sim::baseline::ORACLE) {
        let hours = oracle.summary.replica_hours;
        if s.replica_hours > 0.0 {
            text.push_str(&format!(
                " Perfect foresight (baseline:oracle) would have needed {} replica-hours, {} % of these.",
                num(hours, 2),
                num(hours * 100.0 / s.replica_hours, 0)
            ));
        }
    }
    Some(text)
}

/// What the two baselines are, for under the tables.
pub const BASELINES_NOTE: &str = "baselines (not policies, no autoscaler): baseline:oracle runs, each second, the demand of the next boot time (perfect foresight); baseline:static-peak runs the peak demand all along. Demand = the fewest replicas that meet the SLO that second.";

/// The summary, one column per policy, one row per measure.
pub fn summary_table(runs: &[Run]) -> String {
    let table = summary_rows(runs);
    let columns = table[0].len();
    let widths: Vec<usize> =
        (0..columns).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("   ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// With a node pool: how many nodes a run used, and how long replicas
/// waited for room.
fn node_line(run: &Run) -> String {
    let peak = run.seconds.iter().map(|s| s.nodes).max().unwrap_or(0);
    let node_hours = run.seconds.iter().map(|s| f64::from(s.nodes)).sum::<f64>() / 3600.0;
    let waited = run.seconds.iter().filter(|s| s.pending > 0).count();
    let added = run.events.iter().filter(|e| e.kind == "node_added").count();
    let removed = run.events.iter().filter(|e| e.kind == "node_removed").count();
    format!(
        "{}: nodes peak {peak}, {} node-hours, {added} added, {removed} removed; {waited} s with a replica booting or waiting for room",
        run.policy,
        num(node_hours, 2)
    )
}

/// One line about the inputs.
pub fn header(plan: &Plan) -> String {
    let t = &plan.trace;
    let m = &plan.model;
    let mut failures = String::new();
    if m.saturation_cpu != 100.0 {
        failures = format!(", {} % CPU when saturated", num(m.saturation_cpu, 1));
    }
    if m.failure_rate > 0.0 {
        failures.push_str(&format!(", {} failures per replica-hour", num(m.failure_rate, 4)));
        if !m.interruption_notice.is_zero() {
            failures.push_str(&format!(" ({} notice)", humantime::format_duration(m.interruption_notice)));
        }
    }
    if let Some(pool) = &plan.options.node_pool {
        failures.push_str(&format!(
            ", node pool: {}-{} nodes of {} CPUs ({} per replica, {} replicas per node), node boot {}, target {} % reserved",
            pool.cluster.nodes.min,
            pool.cluster.nodes.max,
            num(pool.cpus, 2),
            num(pool.replica_cpus, 2),
            pool.slots(),
            humantime::format_duration(pool.boot),
            num(pool.cluster.target_reserved_cpu, 1)
        ));
    }
    format!(
        "ebb simulate: service {}, {} ({} s, peak {} req/s, {} requests); {} req/s per replica, boot {} ({}), queue limit {}{}, seed {}",
        plan.service,
        t.source,
        t.len(),
        num(t.peak(), 1),
        num(t.total().round(), 0),
        num(m.capacity, 3),
        humantime::format_duration(m.boot),
        plan.boot_note,
        humantime::format_duration(m.queue_limit),
        failures,
        m.seed
    )
}

/// The default output: the header, each policy's decision log, the summary.
pub fn write_text(out: &mut impl Write, plan: &Plan, runs: &[Run], log: bool, wall_ms: f64) -> std::io::Result<()> {
    writeln!(out, "{}", header(plan))?;
    if log {
        for run in runs.iter().filter(|r| !r.baseline) {
            writeln!(out)?;
            writeln!(out, "== {} ({} events) ==", run.policy, run.events.len())?;
            for e in &run.events {
                writeln!(out, "{}", event_line(plan, e))?;
            }
        }
    }
    writeln!(out)?;
    write!(out, "{}", summary_table(runs))?;
    if plan.options.node_pool.is_some() {
        for run in runs.iter().filter(|r| !r.baseline) {
            writeln!(out, "{}", node_line(run))?;
        }
    }
    if runs.iter().any(|r| r.baseline) {
        writeln!(out, "{BASELINES_NOTE}")?;
    }
    if let Some(verdict) = verdict(runs) {
        writeln!(out, "{verdict}")?;
    }
    let policies = runs.iter().filter(|r| !r.baseline).count();
    write!(out, "{}", super::forecast_report::text(runs))?;
    writeln!(
        out,
        "simulated {} s × {} polic{} in {} ms",
        plan.trace.len(),
        policies,
        if policies == 1 { "y" } else { "ies" },
        num(wall_ms, 0)
    )?;
    Ok(())
}

/// `--json`: one object per policy.
#[derive(Debug, Serialize)]
pub struct JsonSummary {
    pub policy: String,
    pub service: String,
    pub seconds: u64,
    pub requests: f64,
    pub replica_hours: f64,
    /// Replicas frozen (scale to zero's suspend, warm pool members) ×
    /// hours; not in `replica_hours` nor `cost`.
    pub suspended_replica_hours: f64,
    pub cost: f64,
    pub slo: String,
    pub slo_violation_seconds: u64,
    pub slo_violation_percent: f64,
    pub shed_requests: f64,
    pub scaling_actions: u32,
    pub scale_outs: u32,
    pub scale_ins: u32,
    pub flaps: u32,
    pub max_replicas: u32,
    pub max_desired: u32,
    pub failures: u32,
    pub mean_cpu: f64,
    pub worst_latency_ms: Option<f64>,
    /// A baseline (oracle, static peak), not a policy.
    pub baseline: bool,
    /// SPEC elasticity scores against the demand (docs/simulation.md):
    /// `a_U`, `a_O`, `t_U`, `t_O`, `k` in %, jitter in adaptations per hour.
    pub under_provisioning_accuracy: f64,
    pub over_provisioning_accuracy: f64,
    pub under_provisioning_timeshare: f64,
    pub over_provisioning_timeshare: f64,
    pub instability: f64,
    pub jitter_per_hour: f64,
    /// Wall time of this policy's run (not part of the simulated outcome).
    pub wall_ms: f64,
    /// How its predictive policy's forecasts did, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<super::forecast_report::JsonForecast>,
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

pub fn json_summary(plan: &Plan, run: &Run, wall_ms: f64) -> JsonSummary {
    let s = &run.summary;
    JsonSummary {
        policy: run.policy.clone(),
        service: plan.service.clone(),
        seconds: s.seconds,
        requests: round(s.offered_requests, 0),
        replica_hours: round(s.replica_hours, 4),
        suspended_replica_hours: round(s.suspended_hours, 4),
        cost: round(s.cost, 4),
        slo: s.slo.to_string(),
        slo_violation_seconds: s.slo_violation_seconds,
        slo_violation_percent: round(s.slo_violation_percent(), 3),
        shed_requests: round(s.shed_requests, 0),
        scaling_actions: s.scaling_actions,
        scale_outs: s.scale_outs,
        scale_ins: s.scale_ins,
        flaps: s.flaps,
        max_replicas: s.max_replicas,
        max_desired: s.max_desired,
        failures: s.failures,
        mean_cpu: round(s.mean_cpu, 2),
        worst_latency_ms: s.worst_latency_ms.map(|v| round(v, 1)),
        baseline: run.baseline,
        under_provisioning_accuracy: round(s.scores.under_accuracy, 3),
        over_provisioning_accuracy: round(s.scores.over_accuracy, 3),
        under_provisioning_timeshare: round(s.scores.under_timeshare, 3),
        over_provisioning_timeshare: round(s.scores.over_timeshare, 3),
        instability: round(s.scores.instability, 3),
        jitter_per_hour: round(s.scores.jitter_per_hour, 3),
        wall_ms: round(wall_ms, 1),
        forecast: run.forecast.as_ref().map(super::forecast_report::json),
    }
}

/// An object for one policy, with the baselines in its `baselines`; an
/// array (in the order of the policies: the config, then `--compare`, then
/// `--preset`, then the baselines, `"baseline": true`) for several.
pub fn write_json(out: &mut impl Write, plan: &Plan, runs: &[Run], wall_ms: &[f64]) -> anyhow::Result<()> {
    let all: Vec<JsonSummary> = runs.iter().zip(wall_ms).map(|(r, &ms)| json_summary(plan, r, ms)).collect();
    let (policies, baselines): (Vec<_>, Vec<_>) = all.into_iter().partition(|s| !s.baseline);
    if policies.len() == 1 {
        /// The policy's fields, in order, then its baselines.
        #[derive(Serialize)]
        struct One<'a> {
            #[serde(flatten)]
            policy: &'a JsonSummary,
            baselines: &'a [JsonSummary],
        }
        serde_json::to_writer_pretty(&mut *out, &One { policy: &policies[0], baselines: &baselines })?;
    } else {
        let all: Vec<&JsonSummary> = policies.iter().chain(&baselines).collect();
        serde_json::to_writer_pretty(&mut *out, &all)?;
    }
    writeln!(out)?;
    Ok(())
}

/// `--csv`: `second,rate,desired,in_service,cpu,p99_ms,queue_ms,shed`, one
/// row per second; with several policies a first `policy` column, the
/// policies one after the other.
pub fn write_csv(out: &mut impl Write, runs: &[Run]) -> std::io::Result<()> {
    let runs: Vec<&Run> = runs.iter().filter(|r| !r.baseline).collect();
    let several = runs.len() > 1;
    if several {
        write!(out, "policy,")?;
    }
    writeln!(out, "second,rate,desired,in_service,cpu,p99_ms,queue_ms,shed")?;
    for run in runs {
        let policy = csv_field(&run.policy);
        for s in &run.seconds {
            if several {
                write!(out, "{policy},")?;
            }
            writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                s.second,
                num(s.rate, 3),
                s.desired,
                s.in_service,
                num(s.cpu, 1),
                s.p99_ms.map(|v| num(v, 1)).unwrap_or_default(),
                num(s.queue_ms, 1),
                num(s.shed, 3)
            )?;
        }
    }
    Ok(())
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
