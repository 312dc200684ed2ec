//! `--report`: one self-contained HTML page with hand-written SVG charts
//! (load and capacity, replicas desired and in service with the scaling
//! events marked, CPU, latency against the SLO), the summary side by side,
//! and the decision logs. No script, no external resource: it opens from
//! a file, offline, and the same run always writes the same bytes.

use std::fmt::Write as _;

use ebb_core::sim::{Run, Second};

use super::output::{event_line, header, num, row_winners, summary_rows, verdict, BASELINES_NOTE};
use super::Plan;

/// Colours of the policies, in order (then again).
const COLOURS: [&str; 7] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 28.0;
/// At most this many x positions per series (each contributes its min and max).
const BUCKETS: usize = 800;
/// At most this many event markers per policy and chart.
const MAX_MARKERS: usize = 2000;
/// At most this many decision-log lines per policy on the page.
const MAX_LOG_LINES: usize = 5000;

pub fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// The baselines' colours: greys, so they read as references.
const BASELINE_COLOURS: [&str; 2] = ["#111827", "#9ca3af"];

/// Dash patterns of the policies, in order: where two policies' lines
/// coincide, the patterns (and the widths, widest first) keep both visible.
const DASHES: [Option<&str>; 6] = [None, Some("9 4"), Some("3 3"), Some("12 3 3 3"), Some("6 2"), Some("1 3")];

/// A run's colour: the policies' in order, then the baselines' greys.
fn run_colour(runs: &[Run], i: usize) -> &'static str {
    let policies = runs.iter().filter(|r| !r.baseline).count();
    if runs[i].baseline {
        BASELINE_COLOURS[(i - policies) % BASELINE_COLOURS.len()]
    } else {
        colour(i)
    }
}

/// A run's dash pattern and line width: the first policies widest.
fn run_stroke(runs: &[Run], i: usize) -> (Option<&'static str>, f64) {
    if runs[i].baseline {
        return (Some("2 4"), 1.4);
    }
    let policies = runs.iter().filter(|r| !r.baseline).count();
    (DASHES[i % DASHES.len()], 1.2 + 0.9 * (policies - 1 - i) as f64)
}

/// HTML-escapes text (also fine inside attributes and SVG `<title>`).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct Series {
    name: String,
    colour: &'static str,
    /// One value per second; NaN where there is none.
    values: Vec<f64>,
    dash: Option<&'static str>,
    width: f64,
    /// 1 for the main lines, less for a secondary one (in service).
    opacity: f64,
    /// Shown in the legend (the in-service twin of a series is not).
    legend: bool,
}

struct Marker {
    at: u64,
    value: f64,
    up: bool,
    colour: &'static str,
    title: String,
}

struct Chart<'a> {
    id: &'a str,
    heading: &'a str,
    title: String,
    unit: &'a str,
    series: Vec<Series>,
    markers: Vec<Marker>,
    /// A fixed top of the y axis (values above are drawn at the top).
    y_max: Option<f64>,
    /// A horizontal reference line and its label.
    line: Option<(f64, String)>,
}

/// The smallest 1, 2, 2.5 or 5 × 10^k at or above `x`.
fn nice(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= x * (1.0 - 1e-12) {
            return m * p;
        }
    }
    10.0 * p
}

fn tick_label(plan: &Plan, t: u64, step: u64) -> String {
    if plan.absolute_times {
        let unix = plan.options.start_unix + t as i64;
        let (h, m, s) = (unix.rem_euclid(86_400) / 3600, unix.rem_euclid(3600) / 60, unix.rem_euclid(60));
        if step < 60 {
            format!("{h:02}:{m:02}:{s:02}")
        } else {
            format!("{h:02}:{m:02}")
        }
    } else if step < 60 {
        format!("+{}:{:02}", t / 60, t % 60)
    } else {
        format!("+{}:{:02}", t / 3600, t % 3600 / 60)
    }
}

fn render_chart(out: &mut String, plan: &Plan, chart: &Chart<'_>) {
    let seconds = plan.trace.len().max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let data_max =
        chart.series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let y_max = chart.y_max.unwrap_or_else(|| nice(data_max.max(chart.line.as_ref().map_or(0.0, |l| l.0)) * 1.05));
    let x = |t: f64| LEFT + t / seconds * plot_w;
    let y = |v: f64| TOP + plot_h - v.clamp(0.0, y_max) / y_max * plot_h;

    let _ = writeln!(
        out,
        "<figure id=\"{}\"><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        chart.id,
        esc(&chart.title)
    );
    let _ = writeln!(out, "<text class=\"title\" x=\"{LEFT}\" y=\"16\">{}</text>", esc(&chart.title));
    // Legend: one row under the title, wrapping if it must.
    let (mut lx, mut ly) = (LEFT, 32.0);
    for s in chart.series.iter().filter(|s| s.legend) {
        let w = 26.0 + 6.2 * s.name.chars().count() as f64;
        if lx + w > WIDTH - RIGHT && lx > LEFT {
            (lx, ly) = (LEFT, ly + 13.0);
        }
        let dash = s.dash.map(|d| format!(" stroke-dasharray=\"{d}\"")).unwrap_or_default();
        let _ = writeln!(
            out,
            "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"2\"{dash}/><text class=\"legend\" x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            ly - 4.0,
            lx + 14.0,
            ly - 4.0,
            s.colour,
            lx + 18.0,
            esc(&s.name)
        );
        lx += w;
    }
    // Grid and y labels.
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\"/><text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            num(v, 2),
            if i == 4 { chart.unit } else { "" }
        );
    }
    // Time ticks.
    let steps = [
        1u64, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800,
        604_800,
    ];
    let step = steps.iter().copied().find(|&s| seconds / s as f64 <= 8.0).unwrap_or(604_800);
    let mut t = 0;
    while (t as f64) <= seconds {
        let xx = x(t as f64);
        let _ = writeln!(
            out,
            "<line class=\"tick\" x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\"/><text class=\"axis\" x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 4.0,
            HEIGHT - 8.0,
            tick_label(plan, t, step)
        );
        t += step;
    }
    if let Some((v, label)) = &chart.line {
        let yy = y(*v);
        let _ = writeln!(
            out,
            "<line class=\"slo\" x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\"><title>{}</title></line><text class=\"slo-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            esc(label),
            WIDTH - RIGHT - 4.0,
            yy - 4.0,
            esc(label)
        );
    }
    // Series: each bucket's min and max, in the order they occurred; a
    // bucket without values breaks the line.
    for s in &chart.series {
        let n = s.values.len();
        let per = n.div_ceil(BUCKETS).max(1);
        let mut d = String::new();
        let mut pen_down = false;
        for start in (0..n).step_by(per) {
            let bucket = &s.values[start..(start + per).min(n)];
            let mut lo: Option<(usize, f64)> = None;
            let mut hi: Option<(usize, f64)> = None;
            for (i, &v) in bucket.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                if lo.is_none_or(|(_, l)| v < l) {
                    lo = Some((i, v));
                }
                if hi.is_none_or(|(_, h)| v > h) {
                    hi = Some((i, v));
                }
            }
            let (Some(lo), Some(hi)) = (lo, hi) else {
                pen_down = false;
                continue;
            };
            let mut points = vec![lo, hi];
            points.sort_by_key(|p| p.0);
            points.dedup_by_key(|p| p.0);
            for (i, v) in points {
                let cmd = if pen_down { 'L' } else { 'M' };
                let _ = write!(d, "{cmd}{:.1} {:.1}", x((start + i) as f64), y(v));
                pen_down = true;
            }
        }
        let dash = s.dash.map(|d| format!(" stroke-dasharray=\"{d}\"")).unwrap_or_default();
        let opacity = if s.opacity < 1.0 { format!(" stroke-opacity=\"{}\"", s.opacity) } else { String::new() };
        let _ = writeln!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{dash}{opacity}><title>{}</title></path>",
            s.colour,
            num(s.width, 1),
            esc(&s.name)
        );
    }
    for m in &chart.markers {
        let (xx, yy) = (x(m.at as f64), y(m.value));
        let d = if m.up {
            format!("M{xx:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z", yy - 6.0, xx - 4.5, yy + 2.0, xx + 4.5, yy + 2.0)
        } else {
            format!("M{xx:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z", yy + 6.0, xx - 4.5, yy - 2.0, xx + 4.5, yy - 2.0)
        };
        let _ = writeln!(
            out,
            "<path class=\"marker\" d=\"{d}\" fill=\"{}\"><title>{}</title></path>",
            m.colour,
            esc(&m.title)
        );
    }
    let _ = writeln!(out, "</svg></figure>");
}

/// What every row of the summary means.
fn legend(out: &mut String, plan: &Plan) {
    let slo = plan.options.slo;
    let flap = humantime::format_duration(plan.options.flap_window);
    let rows: [(&str, String); 18] = [
        ("★", "best on the row among the policies (lower is better; baselines are references and never win). No star on max replicas, mean cpu and failures, where lower is not better.".into()),
        ("wins", format!("the cheapest policy (cost, then replica-hours) that meets the SLO: over it in at most {} % of the seconds, or no more often than the best policy", num(super::output::MEETS_SLO_PERCENT, 2))),
        ("replica-hours", "replicas running (booting or in service) × hours; frozen ones are counted apart".into()),
        ("cost", "replica-hours × --price".into()),
        ("over SLO", format!("seconds whose p{} latency was over {} or that shed a request, and their share", num(slo.percentile, 3), humantime::format_duration(slo.threshold))),
        ("shed requests", format!("requests given up on: waiting longer than the queue limit ({}), or no replica in service", humantime::format_duration(plan.model.queue_limit))),
        ("scaling actions", "changes of desired capacity, outwards and inwards".into()),
        ("flaps", format!("scaling actions that reverse the direction of the previous one within the flap window ({flap}, --flap-window)")),
        ("max replicas", "the most replicas running at once".into()),
        ("mean cpu", "mean CPU of the replicas in service, over the seconds with some".into()),
        ("worst pNN", "the worst second's SLO percentile".into()),
        ("failures", "simulated replica failures (--failure-rate)".into()),
        ("a_U", "under-provisioning accuracy: mean over the seconds of the shortfall (demand − supply, when positive) relative to the demand, % (SPEC RG; Ilyushkin et al., ICPE 2017). Demand = the fewest replicas that meet the SLO that second; supply = replicas in service".into()),
        ("a_O", "over-provisioning accuracy: mean of the excess (supply − demand, when positive) relative to the demand (at least 1 replica), %".into()),
        ("t_U / t_O", "under- / over-provisioning timeshare: % of the seconds with supply below / above the demand".into()),
        ("instability k", "% of the one-second steps where supply and demand did not move the same way (one moved and the other did not, or they moved apart)".into()),
        ("jitter j", "supply's adaptations minus demand's, per hour: negative, the policy adapts less often than the demand changes (smooths or lags); positive, it oscillates".into()),
        ("baselines", BASELINES_NOTE.into()),
    ];
    let _ = writeln!(out, "<dl class=\"legend\">");
    for (term, text) in rows {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(&text));
    }
    let _ = writeln!(out, "</dl>");
}

fn values(run: &Run, f: impl Fn(&Second) -> f64) -> Vec<f64> {
    run.seconds.iter().map(f).collect()
}

/// The whole page.
pub fn render(plan: &Plan, runs: &[Run]) -> String {
    let mut out = String::new();
    let slo = plan.options.slo;
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>ebb simulate: {}</title>\n<style>\n{}</style>\n</head>\n<body>\n",
        esc(&plan.service),
        STYLE
    );
    let _ = writeln!(out, "<h1>ebb simulate: service {}</h1>", esc(&plan.service));
    let _ = writeln!(out, "<p class=\"inputs\">{}</p>", esc(&header(plan)));
    let _ = writeln!(out, "<ul class=\"policies\">");
    for (i, d) in plan.descriptions.iter().enumerate() {
        let _ = writeln!(out, "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>", colour(i), esc(d));
    }
    for (i, run) in runs.iter().enumerate().filter(|(_, r)| r.baseline) {
        let _ = writeln!(
            out,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}: a baseline, not a policy (see the legend)</li>",
            run_colour(runs, i),
            esc(&run.policy)
        );
    }
    let _ = writeln!(out, "</ul>");

    let _ = writeln!(out, "<h2>Summary</h2>");
    if let Some(verdict) = verdict(runs) {
        let _ = writeln!(out, "<p class=\"verdict\">{}</p>", esc(&verdict));
    }
    let _ = writeln!(out, "<table>");
    let winners = row_winners(runs);
    for (r, row) in summary_rows(runs).iter().enumerate() {
        let _ = write!(out, "<tr>");
        for (c, cell) in row.iter().enumerate() {
            let tag = if r == 0 || c == 0 { "th" } else { "td" };
            let mut attrs = String::new();
            if r == 0 && c > 0 {
                attrs = format!(" style=\"color:{}\"", run_colour(runs, c - 1));
            }
            let baseline = c > 0 && runs[c - 1].baseline;
            let best = r > 0 && c > 0 && winners[r - 1].contains(&(c - 1));
            let class = match (best, baseline) {
                (true, _) => " class=\"best\"",
                (false, true) => " class=\"baseline\"",
                _ => "",
            };
            let mark = if best { " ★" } else { "" };
            let _ = write!(out, "<{tag}{attrs}{class}>{}{mark}</{tag}>", esc(cell));
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
    legend(&mut out, plan);

    let capacity = plan.model.capacity;
    let mut load = Chart {
        id: "load",
        heading: "Load",
        title: "Load: requests per second offered (grey) and the capacity in service of each policy and baseline"
            .into(),
        unit: " req/s",
        series: vec![Series {
            name: "offered".into(),
            colour: "#111827",
            values: plan.trace.rates.clone(),
            dash: None,
            width: 1.5,
            opacity: 0.35,
            legend: true,
        }],
        markers: vec![],
        y_max: None,
        line: None,
    };
    let mut replicas = Chart {
        id: "replicas",
        heading: "Replicas",
        title: "Replicas: desired (full line), in service (faint line), scaling events ▲▼ (hover for the reason)"
            .into(),
        unit: "",
        series: vec![],
        markers: vec![],
        y_max: None,
        line: None,
    };
    let mut cpu = Chart {
        id: "cpu",
        heading: "CPU",
        title: "CPU of the replicas in service".into(),
        unit: " %",
        series: vec![],
        markers: vec![],
        y_max: Some(100.0),
        line: None,
    };
    let slo_ms = slo.threshold_ms();
    let mut latency = Chart {
        id: "latency",
        heading: "Latency",
        title: format!("Latency p{} vs the SLO (drawn up to 3 × the SLO)", num(slo.percentile, 3)),
        unit: " ms",
        series: vec![],
        markers: vec![],
        y_max: Some(slo_ms * 3.0),
        line: Some((slo_ms, format!("SLO {slo}"))),
    };
    for (i, run) in runs.iter().enumerate() {
        let c = run_colour(runs, i);
        let (dash, width) = run_stroke(runs, i);
        let name = &run.policy;
        let line = |name: String, values: Vec<f64>| Series {
            name,
            colour: c,
            values,
            dash,
            width,
            opacity: 1.0,
            legend: true,
        };
        load.series.push(line(name.clone(), values(run, |s| f64::from(s.in_service) * capacity)));
        replicas.series.push(line(name.clone(), values(run, |s| f64::from(s.desired))));
        replicas.series.push(Series {
            name: format!("in service ({name})"),
            width: 1.0,
            opacity: 0.45,
            legend: false,
            ..line(String::new(), values(run, |s| f64::from(s.in_service)))
        });
        if run.baseline {
            // The baselines' CPU and latency would hide the policies'.
            continue;
        }
        cpu.series.push(line(name.clone(), values(run, |s| if s.in_service > 0 { s.cpu } else { f64::NAN })));
        latency.series.push(line(
            name.clone(),
            values(run, |s| s.slo_ms.unwrap_or(if s.shed > 0.0 { f64::INFINITY } else { f64::NAN })),
        ));
        for e in run.events.iter().filter(|e| e.kind == "scaled").take(MAX_MARKERS) {
            let (Some(from), Some(to)) = (e.from, e.to) else { continue };
            replicas.markers.push(Marker {
                at: e.at,
                value: f64::from(to),
                up: to > from,
                colour: c,
                title: format!("{name}: {}", event_line(plan, e)),
            });
        }
    }
    // Every second without a latency because everything was shed is drawn
    // at the top of the latency chart.
    for s in &mut latency.series {
        for v in &mut s.values {
            if *v == f64::INFINITY {
                *v = slo_ms * 3.0;
            }
        }
    }
    for chart in [&load, &replicas, &cpu, &latency] {
        let _ = writeln!(out, "<h2>{}</h2>", chart.heading);
        render_chart(&mut out, plan, chart);
    }

    let _ = writeln!(out, "<h2>Decision log</h2>");
    for (i, run) in runs.iter().enumerate().filter(|(_, r)| !r.baseline) {
        let _ = writeln!(
            out,
            "<details{}><summary><span class=\"swatch\" style=\"background:{}\"></span>{} ({} events)</summary>\n<pre>",
            if i == 0 { " open" } else { "" },
            colour(i),
            esc(&run.policy),
            run.events.len()
        );
        for e in run.events.iter().take(MAX_LOG_LINES) {
            let _ = writeln!(out, "{}", esc(&event_line(plan, e)));
        }
        if run.events.len() > MAX_LOG_LINES {
            let _ = writeln!(out, "… {} more (see `ebb simulate` without --quiet)", run.events.len() - MAX_LOG_LINES);
        }
        let _ = writeln!(out, "</pre></details>");
    }
    let _ = writeln!(
        out,
        "<h2>Model</h2>\n<p class=\"model\">{}</p>\n</body>\n</html>",
        esc(&format!(
            "Each second, the offered requests plus any backlog are served up to {} req/s per replica in service; the rest wait (at most {}) or are shed. \
             CPU = served / capacity. Latency p = (1/μ) × ln(1/(1−p)) / (1 − ρ) + queue time (M/M/1 per replica, ρ capped at 0.95). \
             A replica serves {} after it starts; leaving replicas drain at once. The policies are ebb's own autoscaler, run in virtual time. \
             See docs/simulation.md for the model's limits and its measured fidelity.",
            num(capacity, 3),
            humantime::format_duration(plan.model.queue_limit),
            humantime::format_duration(plan.model.boot)
        ))
    );
    out
}

const STYLE: &str = "\
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #111827; margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 16px; margin: 22px 0 6px; }
.inputs, .model { color: #4b5563; }
ul.policies { padding-left: 0; list-style: none; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
table { border-collapse: collapse; }
th, td { padding: 3px 12px; border-bottom: 1px solid #e5e7eb; text-align: right; font-variant-numeric: tabular-nums; }
tr th:first-child { text-align: left; font-weight: 500; }
figure { margin: 0; }
svg text { font: 11px system-ui, sans-serif; fill: #4b5563; }
svg text.title { font-size: 12px; fill: #111827; }
.grid { stroke: #e5e7eb; }
.tick { stroke: #9ca3af; }
.slo { stroke: #dc2626; stroke-dasharray: 6 4; stroke-width: 1.2; }
svg text.slo-label { fill: #dc2626; }
.marker { stroke: #fff; stroke-width: 0.5; }
pre { font-size: 12px; white-space: pre-wrap; overflow-wrap: anywhere; background: #f9fafb; padding: 8px; }
td.best { font-weight: 600; background: #ecfdf5; }
td.baseline { color: #6b7280; font-style: italic; }
.verdict { font-weight: 600; }
dl.legend { color: #374151; font-size: 13px; display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
dl.legend dt { font-weight: 600; }
dl.legend dd { margin: 0; }
summary { cursor: pointer; }
";
