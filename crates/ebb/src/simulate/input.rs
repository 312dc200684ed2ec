//! Where the simulated traffic comes from: a trace file, or the metric
//! history a running ebb recorded (`GET /api/v1/metrics`).

use std::path::Path;
use std::time::SystemTime;

use anyhow::{anyhow, bail};
use ebb_core::config::Config;
use ebb_core::sim::trace::parse_iso8601;
use ebb_core::sim::Trace;

use crate::client::{AdminClient, AdminCredential, ClientError};

use crate::metrics::history::ServicePoint;

/// Reads a trace file in any supported format; errors name the file and line.
pub fn read_trace(path: &Path) -> Result<Trace, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("error: cannot read the trace {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    Trace::parse(&text, &path.display().to_string()).map_err(|e| format!("error: {e}"))
}

/// `--start`: RFC 3339 (`2026-01-05T08:00:00Z`) or Unix seconds.
pub fn parse_start(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(unix) = text.parse::<i64>() {
        return Ok(unix);
    }
    parse_iso8601(text)
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 time (2026-01-05T08:00:00Z) or Unix seconds"))
}

/// `--history SINCE`: Unix milliseconds of a duration ago (`2h`) or of an
/// RFC 3339 time.
pub fn parse_since(text: &str, now: SystemTime) -> Result<u64, String> {
    let text = text.trim();
    if let Some(unix) = parse_iso8601(text) {
        return Ok(unix.max(0) as u64 * 1000);
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("--history {text:?}: expected a duration ago (2h, 30m) or an RFC 3339 time"))?;
    let at = now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(crate::clock::unix_ms(at))
}

/// The requests per second ebb recorded for `service` since `since`, one
/// rate per second: from the running ebb's admin API, or, when none
/// answers, from its state file (per second for 24 h, per minute beyond).
/// Seconds the history lacks (ebb was busy or stopped) repeat the rate
/// before them.
pub async fn history(config: &Config, service: &str, since: &str) -> anyhow::Result<Trace> {
    let since_ms = parse_since(since, SystemTime::now()).map_err(|e| anyhow!(e))?;
    let addr = config.admin.listen;
    // No token: reading the history needs none from a loopback-only admin listener.
    let client = AdminClient::for_config(config, AdminCredential::None);
    let points = match client.metrics(service, since_ms).await {
        Ok(points) => points,
        Err(ClientError::NotRunning(not_running)) => {
            // No ebb running: read what it kept in its state file.
            if let Some(points) = crate::state::read_history(&config.state_dir, service, since_ms)? {
                return trace_from_history(&points, service, since);
            }
            bail!(
                "--history reads the metrics ebb recorded, but nothing answers at http://{addr} ({}) and there is no state file in {}; start it with `ebb up`, or simulate a recorded trace with --trace",
                not_running.cause,
                config.state_dir.display()
            );
        }
        Err(ClientError::Refused(refused)) if refused.status == 404 => match refused.from_api {
            true => bail!("--history: {}", refused.message),
            false => bail!(
                "--history: the ebb at http://{addr} does not serve GET /api/v1/metrics (404): it keeps no metric history; use --trace with a recorded trace (e.g. `ebb load --output-csv`)"
            ),
        },
        Err(e) => return Err(anyhow::Error::new(e).context("--history")),
    };
    trace_from_history(&points, service, since)
}

/// One rate per second from recorded points (`time_ms` is the end of each
/// second). Missing seconds repeat the rate before them.
pub fn trace_from_history(points: &[ServicePoint], service: &str, since: &str) -> anyhow::Result<Trace> {
    let mut points: Vec<&ServicePoint> = points.iter().collect();
    points.sort_by_key(|p| p.time_ms);
    let Some(first) = points.first() else {
        bail!("--history: ebb recorded no metrics for service {service} since {since} (it keeps the last 24 hours while it runs)");
    };
    let first_ms = first.time_ms;
    let last = points.last().unwrap().time_ms;
    let len = ((last - first_ms + 500) / 1000 + 1) as usize;
    let mut rates: Vec<Option<f64>> = vec![None; len];
    for p in &points {
        let i = ((p.time_ms - first_ms + 500) / 1000) as usize;
        rates[i.min(len - 1)] = Some(p.requests_per_s.max(0.0));
    }
    let mut previous = 0.0;
    let rates = rates
        .into_iter()
        .map(|r| {
            previous = r.unwrap_or(previous);
            previous
        })
        .collect();
    let mut trace = Trace::new(rates, format!("history of {service} since {since}"));
    // The first point describes the second that ended at its time.
    trace.start_unix = Some((first_ms / 1000) as i64 - 1);
    Ok(trace)
}
