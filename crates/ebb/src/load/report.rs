//! What `ebb load` shows: the live view (a progress bar on a terminal, one
//! line per second otherwise), the per-second CSV, and the final summary
//! (text like hey's, or one JSON object).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::fleet::FleetSummary;
use super::stats::{Tick, Totals};

/// Milliseconds with a precision that suits their size.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn fmt_secs(s: f64) -> String {
    if s.is_infinite() {
        "∞".into()
    } else if s < 120.0 {
        format!("{s:.0}s")
    } else {
        format!("{}m{:02}s", (s as u64) / 60, (s as u64) % 60)
    }
}

fn fleet_text(fleet: &Option<FleetSummary>) -> String {
    match fleet {
        Some(f) => format!("  {}: {} in service / {} desired", f.label, f.in_service, f.desired),
        None => String::new(),
    }
}

/// What bounds the run, for the progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Requests(u64),
    Seconds(f64),
}

/// The live view, updated once a second.
pub enum Live {
    /// indicatif's bar on stderr, when stdout and stderr are terminals.
    Bar { bar: ProgressBar, bound: Bound },
    /// One line per second on stderr.
    Lines,
}

impl Live {
    pub fn new(terminal: bool, bound: Bound) -> Live {
        if !terminal {
            return Live::Lines;
        }
        let length = match bound {
            Bound::Requests(n) => n,
            Bound::Seconds(s) => (s * 10.0).ceil() as u64,
        };
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{spinner:.green} [{bar:30.cyan/blue}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Live::Bar { bar, bound }
    }

    /// Shows a message above the bar (or as a line).
    pub fn note(&self, line: &str) {
        match self {
            Live::Bar { bar, .. } => bar.println(line),
            Live::Lines => eprintln!("{line}"),
        }
    }

    pub fn update(&self, tick: &Tick, target_rps: Option<f64>, total_s: f64, fleet: &Option<FleetSummary>) {
        let latency = match (tick.p50_ms, tick.p99_ms) {
            (Some(p50), Some(p99)) => format!("p50 {}  p99 {}", fmt_ms(p50), fmt_ms(p99)),
            _ => "p50 -  p99 -".into(),
        };
        let target = target_rps.map(|r| format!(" (target {r:.0}/s)")).unwrap_or_default();
        let dropped = if tick.dropped > 0 { format!("  dropped {}", tick.dropped) } else { String::new() };
        match self {
            Live::Bar { bar, bound } => {
                let progress = match bound {
                    Bound::Requests(n) => {
                        bar.set_position(tick.done_total.min(*n));
                        format!("{}/{} req  {}", tick.done_total, n, fmt_secs(tick.time_s.floor()))
                    }
                    Bound::Seconds(total) => {
                        bar.set_position((tick.time_s * 10.0) as u64);
                        format!("{}/{}", fmt_secs(tick.time_s.floor()), fmt_secs(*total))
                    }
                };
                bar.set_message(format!(
                    "{progress}  {:.0} req/s{target}  {latency}  errors {}{dropped}{}",
                    tick.rps(),
                    tick.errors,
                    fleet_text(fleet)
                ));
            }
            Live::Lines => {
                let of = if total_s.is_finite() { format!("/{}", fmt_secs(total_s)) } else { String::new() };
                eprintln!(
                    "[{:>5.1}s{of}] sent {}  ok {}  errors {}{dropped}  {:.0} req/s{target}  {latency}{}",
                    tick.time_s,
                    tick.sent,
                    tick.ok,
                    tick.errors,
                    tick.rps(),
                    fleet_text(fleet)
                );
            }
        }
    }

    pub fn finish(&self) {
        if let Live::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

/// `--output-csv`: one row per second, flushed as it is written so a plot
/// can follow the run.
pub struct Csv {
    file: std::io::BufWriter<std::fs::File>,
}

pub const CSV_HEADER: &str = "time_s,sent,ok,errors,rps,p50_ms,p99_ms,in_service,desired,target_rps,dropped";

impl Csv {
    pub fn create(path: &Path) -> Result<Csv, String> {
        let file = std::fs::File::create(path)
            .map_err(|e| format!("--output-csv {}: cannot create the file: {e}", path.display()))?;
        let mut csv = Csv { file: std::io::BufWriter::new(file) };
        csv.line(CSV_HEADER);
        Ok(csv)
    }

    fn line(&mut self, line: &str) {
        let _ = writeln!(self.file, "{line}");
        let _ = self.file.flush();
    }

    pub fn row(&mut self, tick: &Tick, target_rps: Option<f64>, fleet: &Option<FleetSummary>) {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let line = format!(
            "{:.3},{},{},{},{:.1},{},{},{},{},{},{}",
            tick.time_s,
            tick.sent,
            tick.ok,
            tick.errors,
            tick.rps(),
            opt(tick.p50_ms),
            opt(tick.p99_ms),
            fleet.as_ref().map(|f| f.in_service.to_string()).unwrap_or_default(),
            fleet.as_ref().map(|f| f.desired.to_string()).unwrap_or_default(),
            target_rps.map(|r| format!("{r:.1}")).unwrap_or_default(),
            tick.dropped,
        );
        self.line(&line);
    }
}

/// The facts of a finished run that the summary reports.
pub struct Summary<'a> {
    pub url: &'a str,
    /// `closed` or `open`.
    pub model: &'static str,
    /// One line: how the load was generated.
    pub description: String,
    pub concurrency: u32,
    pub duration: Duration,
    pub interrupted: bool,
    pub totals: &'a Totals,
    pub fleet: Option<FleetSummary>,
}

const QUANTILES: [(&str, &str, f64); 5] =
    [("p50", "50%", 0.50), ("p90", "90%", 0.90), ("p95", "95%", 0.95), ("p99", "99%", 0.99), ("p999", "99.9%", 0.999)];

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Summary<'_> {
    fn rps(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.totals.requests() as f64 / secs
        } else {
            0.0
        }
    }

    /// The `--json` object.
    pub fn to_json(&self) -> serde_json::Value {
        let t = self.totals;
        let h = &t.latency;
        let mut latency = serde_json::Map::new();
        for (key, _, q) in QUANTILES {
            latency.insert(key.into(), json!(round3(if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(q)) })));
        }
        latency.insert("max".into(), json!(round3(if h.is_empty() { 0.0 } else { ms(h.max()) })));
        latency.insert("min".into(), json!(round3(if h.is_empty() { 0.0 } else { ms(h.min()) })));
        latency.insert("mean".into(), json!(round3(if h.is_empty() { 0.0 } else { h.mean() / 1000.0 })));
        let status: serde_json::Map<String, serde_json::Value> =
            t.status.iter().map(|(code, n)| (code.to_string(), json!(n))).collect();
        let failures: serde_json::Map<String, serde_json::Value> =
            t.failures.iter().map(|(f, n)| (f.label().to_string(), json!(n))).collect();
        json!({
            "url": self.url,
            "model": self.model,
            "description": self.description,
            "concurrency": self.concurrency,
            "requests": t.requests(),
            "ok": t.ok,
            "errors": t.errors,
            "sent": t.sent,
            "dropped": t.dropped,
            "duration_s": round3(self.duration.as_secs_f64()),
            "rps": round3(self.rps()),
            "interrupted": self.interrupted,
            "bytes_received": t.bytes,
            "latency_ms": latency,
            "status_codes": status,
            "non_2xx": t.status.iter().filter(|(c, _)| !(200..300).contains(c)).map(|(_, n)| n).sum::<u64>(),
            "error_kinds": failures,
            "fleet": self.fleet.as_ref().map(|f| json!({"service": f.label, "desired": f.desired, "in_service": f.in_service})),
        })
    }

    /// The text summary, in hey's layout.
    pub fn to_text(&self) -> String {
        let t = self.totals;
        let h = &t.latency;
        let mut out = String::new();
        let _ =
            writeln!(out, "\nSummary:{}", if self.interrupted { " (interrupted: what ran before Ctrl-C)" } else { "" });
        let _ = writeln!(out, "  Target:       {}", self.url);
        let _ = writeln!(out, "  Model:        {}", self.description);
        let _ = writeln!(out, "  Total:        {:.4} secs", self.duration.as_secs_f64());
        let _ = writeln!(out, "  Requests:     {} (ok {}, errors {})", t.requests(), t.ok, t.errors);
        if t.dropped > 0 {
            let _ = writeln!(
                out,
                "  Dropped:      {} due but not sent: -c {} requests were already outstanding (raise -c)",
                t.dropped, self.concurrency
            );
        }
        let non_2xx: u64 = t.status.iter().filter(|(c, _)| !(200..300).contains(c)).map(|(_, n)| n).sum();
        if non_2xx > 0 {
            // As ab says it: answered, but not with success.
            let _ = writeln!(out, "  Non-2xx responses: {non_2xx}");
        }
        let _ = writeln!(out, "  Requests/sec: {:.2}", self.rps());
        if !h.is_empty() {
            let _ = writeln!(out, "  Slowest:      {}", fmt_ms(ms(h.max())));
            let _ = writeln!(out, "  Fastest:      {}", fmt_ms(ms(h.min())));
            let _ = writeln!(out, "  Average:      {}", fmt_ms(h.mean() / 1000.0));
        }
        let _ = writeln!(out, "  Total data:   {} bytes", t.bytes);
        if !h.is_empty() {
            let _ = writeln!(out, "\nResponse time histogram (ms):");
            out.push_str(&render_histogram(h));
            let _ = writeln!(out, "\nLatency distribution:");
            for (_, label, q) in QUANTILES {
                let _ = writeln!(out, "  {label:>6} in {}", fmt_ms(ms(h.value_at_quantile(q))));
            }
            let _ = writeln!(out, "  {:>6} in {}", "max", fmt_ms(ms(h.max())));
        }
        if !t.status.is_empty() {
            let _ = writeln!(out, "\nStatus code distribution:");
            for (code, n) in &t.status {
                let _ = writeln!(out, "  [{code}] {n} response{}", if *n == 1 { "" } else { "s" });
            }
        }
        if t.errors > 0 {
            let _ = writeln!(out, "\nError distribution:");
            let fivexx: u64 = t.status.iter().filter(|(c, _)| *c >= 500).map(|(_, n)| n).sum();
            if fivexx > 0 {
                let _ = writeln!(out, "  [{fivexx}] 5xx responses");
            }
            for (failure, n) in &t.failures {
                let _ = writeln!(out, "  [{n}] {}", failure.label());
            }
        }
        if let Some(f) = &self.fleet {
            let _ =
                writeln!(out, "\nFleet at the end ({}): {} in service, {} desired", f.label, f.in_service, f.desired);
        }
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// hey's histogram: ten equal buckets from the fastest to the slowest.
fn render_histogram(h: &Histogram<u64>) -> String {
    const BUCKETS: usize = 10;
    let (low, high) = (h.min(), h.max());
    let marks: Vec<u64> = (0..=BUCKETS).map(|i| low + (high - low) * i as u64 / BUCKETS as u64).collect();
    let mut counts = [0u64; BUCKETS + 1];
    for v in h.iter_recorded() {
        let value = h.highest_equivalent(v.value_iterated_to()).min(high);
        let bucket = marks.partition_point(|m| *m < value).min(BUCKETS);
        counts[bucket] += v.count_at_value();
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1);
    let width = counts.iter().map(|c| c.to_string().len()).max().unwrap_or(1) + 2;
    let mut out = String::new();
    for (mark, count) in marks.iter().zip(counts) {
        let bar = "■".repeat((count * 40).div_ceil(max) as usize);
        let _ = writeln!(out, "  {:>9.3} {:<width$} |{bar}", ms(*mark), format!("[{count}]"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_cover_every_value() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [1000, 1000, 2000, 5000, 10000] {
            h.record(v).unwrap();
        }
        let text = render_histogram(&h);
        let total: u64 =
            text.lines().map(|l| l.split('[').nth(1).unwrap().split(']').next().unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(total, 5, "{text}");
        assert_eq!(text.lines().count(), 11);
    }

    #[test]
    fn milliseconds_are_readable() {
        assert_eq!(fmt_ms(0.1234), "0.12ms");
        assert_eq!(fmt_ms(12.34), "12.3ms");
        assert_eq!(fmt_ms(1234.4), "1234ms");
    }
}
