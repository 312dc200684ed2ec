//! `ebb simulate` end to end: the real binary on trace files, shapes,
//! presets and compared configs; its outputs (decision log, summary, JSON,
//! CSV, HTML report) and their determinism; bad input; `--calibrate`
//! against a demo-app. The live-vs-sim fidelity check is in fidelity.rs.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use support::*;

/// A service with a time-compressed CPU target tracking policy.
const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:19990"

[service.web]
command = "sleep 1000"
listen = "127.0.0.1:19991"
replicas = { min = 1, max = 20, desired = 2 }

[service.web.health]
interval = "1s"
timeout = "500ms"
healthy_threshold = 2

[[service.web.scaling.target_tracking]]
name = "cpu-80"
metric = "cpu"
target = 80
window = "30s"
scale_out_cooldown = "30s"
scale_in_cooldown = "60s"
scale_in_stabilization = "120s"
"#;

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let d = Dir { dir: tempfile::tempdir().unwrap() };
        d.write("ebb.toml", CONFIG);
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn simulate(&self, args: &[&str]) -> Output {
        Command::new(EBB).current_dir(self.dir.path()).arg("simulate").args(args).output().expect("run ebb simulate")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.simulate(args);
        assert!(
            out.status.success(),
            "ebb simulate {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects bad input (exit 2); returns stderr.
    fn bad(&self, args: &[&str]) -> String {
        let out = self.simulate(args);
        assert_eq!(out.status.code(), Some(2), "ebb simulate {args:?}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}

const STEP: &str = "step:base=60,peak=300,at=300,hold=900,duration=2400";

fn scaled_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.contains(" scaled ")).collect()
}

fn seconds_of(line: &str) -> u64 {
    let t = line.split_whitespace().next().unwrap().trim_start_matches('+');
    let p: Vec<u64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600 + p[1] * 60 + p[2]
}

#[test]
fn the_decision_log_reads_like_ebb_events() {
    let d = Dir::new();
    let out = d.ok(&["--shape", STEP]);
    let lines = scaled_lines(&out);
    assert!(!lines.is_empty(), "{out}");
    // `ebb events`: {time}  {service:<8} {kind:<20} {replica or -} {from}->{to}  {reason}
    let first = lines[0];
    let expected_prefix =
        format!("  {:<8} {:<20} - 2->3  scale out 2 -> 3 by cpu-80: target tracking cpu: mean ", "web", "scaled");
    assert_eq!(&first[9..9 + expected_prefix.len()], expected_prefix, "{first}");
    assert!(first.starts_with('+') && first.as_bytes()[3] == b':', "{first}");
    assert!(out.starts_with("ebb simulate: service web, shape step:"), "{out}");
    assert!(out.contains("boot 2s (2 health checks every 1s)"), "boot defaults to what the health checks need: {out}");
    for label in
        ["replica-hours", "cost", "over SLO p99<1s", "shed requests", "scaling actions", "flaps", "max replicas"]
    {
        assert!(out.contains(label), "summary has {label}: {out}");
    }
}

/// A step makes the fleet scale out within the policy's window after it
/// starts, and back in only after the stabilisation window once it ends.
#[test]
fn a_step_scales_out_after_the_window_and_in_after_the_stabilisation() {
    let d = Dir::new();
    let out = d.ok(&["--shape", STEP]);
    let lines = scaled_lines(&out);
    let first_out = lines.iter().find(|l| l.contains("scale out")).unwrap();
    let t = seconds_of(first_out);
    assert!(t > 300 && t <= 300 + 30, "within the 30 s window after the step at 300 s: {first_out}");
    let first_in = lines.iter().find(|l| l.contains("scale in") && seconds_of(l) > 1200).unwrap();
    let t = seconds_of(first_in);
    assert!(t >= 1200 + 120, "after the 120 s stabilisation once the step ends at 1200 s: {first_in}");
    d.ok(&["--shape", STEP, "--csv", "step.csv"]);
    let csv = d.read("step.csv");
    let desired_at = |s: usize| csv.lines().nth(1 + s).unwrap().split(',').nth(2).unwrap().to_string();
    assert_eq!(desired_at(1199), "8", "settled where 300 req/s is 40 req/s (80 % of 50) per replica");
    assert_eq!(desired_at(2399), "2", "back to what 60 req/s needs");
}

#[test]
fn json_has_the_summary_fields() {
    let d = Dir::new();
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--shape", STEP, "--json", "--price", "0.1"])).unwrap();
    for key in [
        "replica_hours",
        "cost",
        "slo_violation_seconds",
        "shed_requests",
        "scaling_actions",
        "max_replicas",
        "wall_ms",
        "flaps",
        "policy",
    ] {
        assert!(json.get(key).is_some(), "{key} missing in {json:#}");
    }
    let hours = json["replica_hours"].as_f64().unwrap();
    let cost = json["cost"].as_f64().unwrap();
    assert!(hours > 2.0 * 2400.0 / 3600.0 - 0.01, "at least 2 replicas the whole time: {hours}");
    assert!((cost - hours * 0.1).abs() < 0.001, "{cost} vs {hours}");
    assert_eq!(json["policy"], "ebb.toml");
    assert_eq!(json["seconds"], 2400);
}

#[test]
fn csv_has_a_header_and_a_row_per_second() {
    let d = Dir::new();
    d.ok(&["--shape", "constant:rate=70,duration=90", "--csv", "out.csv"]);
    let csv = d.read("out.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "second,rate,desired,in_service,cpu,p99_ms,queue_ms,shed");
    assert_eq!(lines.len(), 91);
    assert_eq!(lines[1], "0,70,2,2,70,307,0,0", "2 replicas at 70 %: p99 = 20 ms × ln 100 / 0.3");
    let last: Vec<&str> = lines[90].split(',').collect();
    assert_eq!((last[0], last[1]), ("89", "70"));
}

#[test]
fn presets_and_compare_run_side_by_side() {
    let d = Dir::new();
    d.write(
        "tuned.toml",
        &CONFIG.replace("target = 80", "target = 60").replace("name = \"cpu-80\"", "name = \"cpu-60\""),
    );
    let args = ["--shape", STEP, "--compare", "tuned.toml", "--preset", "aws", "--preset", "hpa", "--preset", "kpa"];
    let out = d.ok(&args);
    let table_header = out.lines().find(|l| l.starts_with("policy ")).unwrap();
    let names: Vec<&str> = table_header.split_whitespace().collect();
    assert_eq!(
        names,
        ["policy", "ebb.toml", "tuned.toml", "aws", "hpa", "kpa", "baseline:oracle", "baseline:static-peak"],
        "the policies, then the two baselines"
    );
    let winner = out.lines().find(|l| l.contains(" wins: the cheapest")).unwrap_or_else(|| panic!("{out}"));
    assert!(winner.contains("policy that meets the SLO p99<1s"), "{winner}");
    assert!(winner.contains("Perfect foresight (baseline:oracle) would have needed"), "{winner}");
    for heading in ["== ebb.toml (", "== tuned.toml (", "== aws (", "== hpa (", "== kpa ("] {
        assert!(out.contains(heading), "{heading}: {out}");
    }
    assert!(out.contains("by cpu-60: target tracking cpu"), "the compared config's own policy: {out}");
    assert!(out.contains("by aws-out: alarm aws-out fired: 3 of 3 periods of 1 min"), "{out}");

    let mut json_args = args.to_vec();
    json_args.extend(["--json", "--csv", "all.csv", "--report", "all.html"]);
    let json: serde_json::Value = serde_json::from_str(&d.ok(&json_args)).unwrap();
    let policies: Vec<(&str, bool)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["policy"].as_str().unwrap(), r["baseline"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        policies,
        [
            ("ebb.toml", false),
            ("tuned.toml", false),
            ("aws", false),
            ("hpa", false),
            ("kpa", false),
            ("baseline:oracle", true),
            ("baseline:static-peak", true)
        ]
    );
    let tuned = &json[1];
    assert!(
        tuned["max_desired"].as_u64() > json[0]["max_desired"].as_u64(),
        "a lower target needs more replicas: {json:#}"
    );
    let csv = d.read("all.csv");
    assert!(csv.starts_with("policy,second,rate,desired,in_service,cpu,p99_ms,queue_ms,shed\nebb.toml,0,60,"));
    assert_eq!(csv.lines().count(), 1 + 5 * 2400, "the policies' seconds, not the baselines'");
    assert!(csv.contains("\nkpa,2399,"));
    let html = d.read("all.html");
    for name in ["ebb.toml", "tuned.toml", "aws", "hpa", "kpa", "baseline:oracle", "baseline:static-peak"] {
        assert!(html.contains("<th style=\"color:") && html.contains(&format!(">{name}</th>")), "{name} in the table");
    }
    assert!(html.contains("<p class=\"verdict\">") && html.contains(" wins: the cheapest"), "the overall winner");
    assert!(html.contains("class=\"best\""), "the best cell of each row is marked");
    for term in ["<dt>flaps</dt>", "<dt>a_U</dt>", "<dt>a_O</dt>", "<dt>instability k</dt>", "<dt>jitter j</dt>"] {
        assert!(html.contains(term), "the legend defines {term}");
    }
    assert!(html.contains("stroke-dasharray=\"9 4\""), "the second policy's line has its own dashes");
    assert!(html.contains("white-space: pre-wrap"), "decision log lines wrap instead of being cut");
}

#[test]
fn every_run_is_scored_against_the_demand_and_the_baselines() {
    let d = Dir::new();
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--shape", STEP, "--json"])).unwrap();
    for key in [
        "under_provisioning_accuracy",
        "over_provisioning_accuracy",
        "under_provisioning_timeshare",
        "over_provisioning_timeshare",
        "instability",
        "jitter_per_hour",
    ] {
        assert!(json[key].is_number(), "{key} missing in {json:#}");
    }
    assert_eq!(json["baseline"], false);
    // The reactive policy is short while the step's replicas boot.
    assert!(json["under_provisioning_timeshare"].as_f64().unwrap() > 0.0, "{json:#}");
    let baselines = json["baselines"].as_array().unwrap();
    let (oracle, fixed) = (&baselines[0], &baselines[1]);
    assert_eq!(
        (oracle["policy"].as_str(), fixed["policy"].as_str()),
        (Some("baseline:oracle"), Some("baseline:static-peak"))
    );
    assert_eq!(oracle["slo_violation_seconds"], 0, "perfect foresight meets the SLO: {oracle:#}");
    assert_eq!(oracle["under_provisioning_timeshare"], 0.0);
    assert_eq!(fixed["scaling_actions"], 0);
    // Demand: 60 req/s needs 2 replicas (ρ ≤ 0.908 for p99 < 1 s at 20 ms
    // a request), 300 req/s needs 7; the static fleet of 7 is over the
    // demand in the 1500 s at 60 req/s: 62.5 % of 2400 s.
    assert_eq!(fixed["max_replicas"], 7, "{fixed:#}");
    assert_eq!(fixed["over_provisioning_timeshare"], 62.5, "{fixed:#}");
    let hours = |v: &serde_json::Value| v["replica_hours"].as_f64().unwrap();
    assert!(hours(oracle) < hours(fixed), "the oracle costs less than a fleet sized for the peak");
    let text = d.ok(&["--shape", STEP, "-q"]);
    for row in [
        "under-provisioning a_U",
        "over-provisioning a_O",
        "time short t_U",
        "time over t_O",
        "instability k",
        "jitter j",
    ] {
        assert!(text.lines().any(|l| l.starts_with(row)), "{row}: {text}");
    }
    assert!(text.contains("baselines (not policies, no autoscaler)"), "{text}");
    assert!(!text.contains("== baseline:"), "no decision log for the baselines: {text}");
}

#[test]
fn the_report_has_charts_markers_and_no_scripts() {
    let d = Dir::new();
    d.ok(&["--shape", STEP, "--preset", "hpa", "--report", "report.html"]);
    let html = d.read("report.html");
    assert!(html.starts_with("<!doctype html>"));
    assert_eq!(html.matches("<svg ").count(), 4, "load, replicas, CPU, latency");
    for id in ["id=\"load\"", "id=\"replicas\"", "id=\"cpu\"", "id=\"latency\""] {
        assert!(html.contains(id), "{id}");
    }
    let markers = html.matches("class=\"marker\"").count();
    let out = d.ok(&["--shape", STEP, "--preset", "hpa"]);
    assert_eq!(markers, scaled_lines(&out).len(), "one marker per scaling event");
    let marker = html.split("class=\"marker\"").nth(1).unwrap();
    let title = &marker[marker.find("<title>").unwrap() + 7..marker.find("</title>").unwrap()];
    assert!(
        title.starts_with("ebb.toml: +00:0")
            && title.contains("scaled")
            && title.contains("scale out 2 -&gt; 3 by cpu-80"),
        "{title}"
    );
    assert!(html.contains("SLO p99&lt;1s"), "the SLO line");
    assert!(!html.contains("<script"), "no scripts");
    let external = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!external.contains("http://") && !external.contains("https://"), "no external resources");
}

#[test]
fn same_inputs_and_seed_give_byte_identical_outputs() {
    let d = Dir::new();
    let run = |n: u32| {
        let (csv, html) = (format!("run{n}.csv"), format!("run{n}.html"));
        let args = [
            "--shape",
            "diurnal:base=40,peak=600,duration=3h,noise=0.2",
            "--failure-rate",
            "0.5",
            "--seed",
            "42",
            "--preset",
            "kpa",
            "--csv",
            &csv,
            "--report",
            &html,
        ];
        let text = d.ok(&args);
        let mut json_args = args.to_vec();
        json_args.push("--json");
        let mut json: serde_json::Value = serde_json::from_str(&d.ok(&json_args)).unwrap();
        for run in json.as_array_mut().unwrap() {
            run.as_object_mut().unwrap().remove("wall_ms").expect("wall_ms is there");
        }
        // The text output's last lines name the wall time and the files.
        let text: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("simulated ") && !l.starts_with("per-second CSV") && !l.starts_with("report:"))
            .map(String::from)
            .collect();
        (d.read(&csv), d.read(&html), json, text)
    };
    let a = run(1);
    let b = run(2);
    assert!(a.0 == b.0, "CSV differs");
    assert!(a.1 == b.1, "HTML differs");
    assert_eq!(a.2, b.2);
    assert_eq!(a.3, b.3);
    assert!(a.3.iter().any(|l| l.contains("replica_exited") && l.contains("simulated failure")), "failures were drawn");
    let other_seed = d.ok(&[
        "--shape",
        "diurnal:base=40,peak=600,duration=3h,noise=0.2",
        "--failure-rate",
        "0.5",
        "--seed",
        "43",
        "--csv",
        "run3.csv",
    ]);
    assert!(!other_seed.is_empty());
    assert_ne!(d.read("run3.csv"), a.0, "another seed, another run");
}

#[test]
fn spot_interruptions_with_a_notice_replace_before_they_leave() {
    let d = Dir::new();
    let args = ["--shape", "constant:rate=60,duration=2h", "--failure-rate", "2", "--boot", "20s", "--seed", "3"];
    let crashes = d.ok(&args);
    let mut with_notice = args.to_vec();
    with_notice.extend(["--interruption-notice", "2m", "--csv", "notice.csv"]);
    let notices = d.ok(&with_notice);
    assert!(notices.contains("2 failures per replica-hour (2m notice)"), "{notices}");
    assert!(crashes.contains(" replica_exited ") && !crashes.contains("replica_interrupted"), "{crashes}");
    let interrupted: Vec<&str> = notices.lines().filter(|l| l.contains(" replica_interrupted ")).collect();
    assert!(!interrupted.is_empty(), "{notices}");
    assert!(
        interrupted[0].contains("interruption notice (2m, simulated failure): starting a replacement"),
        "{notices}"
    );
    let released = notices.lines().filter(|l| l.contains("(interruption notice: replacement in service)")).count();
    assert_eq!(released, interrupted.len(), "each leaves once its replacement serves:\n{notices}");
    // Never below the 2 desired replicas in service (the header is skipped).
    let csv = d.read("notice.csv");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|h| *h == "in_service").expect("an in_service column");
    for row in csv.lines().skip(1) {
        let in_service: u32 = row.split(',').nth(column).unwrap().parse().unwrap();
        assert!(in_service >= 2, "{row}");
    }
}

#[test]
fn trace_files_and_their_errors() {
    let d = Dir::new();
    let mut csv = String::from("second,rate\n");
    for s in 0..600 {
        csv.push_str(&format!("{s},{}\n", if s < 120 { 50 } else { 200 }));
    }
    d.write("day.csv", &csv);
    let out = d.ok(&["--trace", "day.csv"]);
    assert!(out.contains("ebb simulate: service web, day.csv (600 s, peak 200 req/s"), "{out}");

    d.write("bad.csv", "second,rate\n0,10\n1,10,3\n");
    let err = d.bad(&["--trace", "bad.csv"]);
    assert_eq!(err.trim(), "error: bad.csv:3: malformed line: expected two columns `second,rate`, found \"1,10,3\"");
    d.write("gap.csv", "0,10\n1,10\n2,10\n9,10\n");
    let err = d.bad(&["--trace", "gap.csv"]);
    assert!(
        err.contains("gap.csv:4: gap in the trace: second 9 follows second 2 (seconds 3 to 8 are missing)"),
        "{err}"
    );
    d.write("neg.csv", "0,10\n1,-5\n");
    let err = d.bad(&["--trace", "neg.csv"]);
    assert!(err.contains("neg.csv:2: negative rate -5"), "{err}");
    let err = d.bad(&["--trace", "missing.csv"]);
    assert!(err.starts_with("error: cannot read the trace missing.csv:"), "{err}");
}

#[test]
fn access_logs_become_traces_with_their_own_clock() {
    let d = Dir::new();
    let mut log = String::new();
    for s in 0..300u32 {
        let n = if s < 60 { 20 } else { 150 };
        for _ in 0..n {
            log.push_str(&format!(
                "10.0.0.1 - - [05/Jan/2026:{:02}:{:02}:{:02} +0000] \"GET /api HTTP/1.1\" 200 12 \"-\" \"hey/0.0.1\"\n",
                8 + s / 3600,
                s % 3600 / 60,
                s % 60
            ));
        }
    }
    d.write("access.log", &log);
    let out = d.ok(&["--trace", "access.log"]);
    assert!(out.contains("access.log (access log) (300 s, peak 150 req/s"), "{out}");
    let line = scaled_lines(&out)[0];
    assert!(line.starts_with("2026-01-05T08:0") && line.contains(".000Z  web "), "times are the log's: {line}");
}

#[test]
fn bad_arguments_get_clear_answers() {
    let d = Dir::new();
    let err = d.bad(&[]);
    assert!(
        err.contains("no traffic to simulate: give --trace FILE, --shape NAME[:params] or --history SINCE"),
        "{err}"
    );
    let err = d.bad(&["--shape", "square"]);
    assert!(err.contains("unknown shape \"square\""), "{err}");
    let err = d.bad(&["--shape", "constant", "--slo", "fast"]);
    assert!(err.contains("--slo \"fast\": expected pNN<DURATION"), "{err}");
    let err = d.bad(&["--shape", "constant", "--capacity", "0"]);
    assert!(err.contains("--capacity must be"), "{err}");
    let err = d.bad(&["--shape", "constant", "--service", "api"]);
    assert!(err.contains("has no service \"api\" (it has: web)"), "{err}");
    let err = d.bad(&["--shape", "constant", "--compare", "nope.toml"]);
    assert!(err.contains("nope.toml: error: cannot read the config file"), "{err}");
    d.write("two.toml", &format!("{CONFIG}\n[service.api]\ncommand = \"x\"\nlisten = \"127.0.0.1:19992\"\n"));
    let err = d.bad(&["-f", "two.toml", "--shape", "constant"]);
    assert!(err.contains("has 2 services (api, web); choose one with --service NAME"), "{err}");
    // Nothing listens on the config's admin address.
    let err = d.bad(&["--history", "1h"]);
    assert!(
        err.contains("--history reads the metrics ebb recorded, but nothing answers at http://127.0.0.1:19990"),
        "{err}"
    );
    assert!(err.contains("and there is no state file in"), "{err}");
}

#[tokio::test]
async fn history_is_read_from_the_state_file_when_ebb_is_not_running() {
    use ebb::metrics::history::ServicePoint;
    let d = Dir::new();
    let state_dir = d.path(".ebb");
    std::fs::create_dir_all(&state_dir).unwrap();
    let (store, _) = ebb::state::StateStore::open(&state_dir, 100).unwrap();
    let now = ebb::clock::unix_ms(std::time::SystemTime::now());
    for s in 0..120u64 {
        let rate = if s < 60 { 30.0 } else { 90.0 };
        store.record_point(
            "web",
            &ServicePoint {
                time_ms: now - (120 - s) * 1000,
                desired: 2,
                in_service: 2,
                pending: 0,
                requests_per_s: rate,
                in_flight: 1,
                p50_ms: None,
                p99_ms: None,
                cpu_mean: None,
                replica_cpu: vec![],
                traffic: None,
                shadow_desired: None,
            },
        );
    }
    store.close().await;
    let out = d.ok(&["--history", "10m"]);
    assert!(out.contains("120 s, peak 90 req/s"), "the recorded two minutes are replayed: {out}");
}

#[test]
fn what_if_bounds_go_beyond_the_config_limit() {
    let d = Dir::new();
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["--shape", "constant:rate=60000,duration=20m", "--max", "2000", "--json"]))
            .unwrap();
    assert!(json["max_desired"].as_u64().unwrap() > 1000, "{json:#}");
    let err = d.bad(&["--shape", "constant", "--min", "5", "--max", "3"]);
    assert!(err.contains("replicas min 5 is above max 3"), "{err}");
}

#[test]
fn recorded_history_becomes_one_rate_per_second() {
    use ebb::metrics::history::ServicePoint;
    use ebb::simulate::input::{parse_since, parse_start, trace_from_history};
    use std::time::{Duration, SystemTime};
    let point = |time_ms: u64, requests_per_s: f64| ServicePoint {
        time_ms,
        desired: 1,
        in_service: 1,
        pending: 0,
        requests_per_s,
        in_flight: 0,
        p50_ms: None,
        p99_ms: None,
        cpu_mean: None,
        replica_cpu: vec![],
        traffic: None,
        shadow_desired: None,
    };
    let points = [point(10_000, 5.0), point(11_010, 6.0), point(13_000, 8.0)];
    let t = trace_from_history(&points, "web", "1h").unwrap();
    assert_eq!(t.rates, vec![5.0, 6.0, 6.0, 8.0], "the missing second repeats the one before");
    assert_eq!(t.start_unix, Some(9));
    assert!(trace_from_history(&[], "web", "1h").unwrap_err().to_string().contains("no metrics"));

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
    assert_eq!(parse_since("1h", now), Ok(6_400_000));
    assert_eq!(parse_since("1970-01-01T00:00:10Z", now), Ok(10_000));
    assert!(parse_since("yesterday", now).is_err());
    assert_eq!(parse_start("2026-01-05T00:00:00Z"), Ok(1_767_571_200));
    assert_eq!(parse_start("12"), Ok(12));
}

#[test]
fn output_helpers() {
    use ebb::simulate::html::esc;
    use ebb::simulate::output::num;
    assert_eq!(num(12.0, 3), "12");
    assert_eq!(num(12.50, 3), "12.5");
    assert_eq!(num(-0.0001, 2), "0");
    assert_eq!(num(1234.0, 0), "1234");
    assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
}

/// A demo-app started by a test, killed when dropped.
struct DemoApp {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl DemoApp {
    fn start(cpu_budget: &str) -> DemoApp {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(EBB)
            .args(["demo-app", "--port", "0", "--cpu-budget", cpu_budget, "--db"])
            .arg(dir.path().join("demo.sqlite"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
        DemoApp { child, addr, _dir: dir }
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose environment names a replica of `service`.
fn replicas_of(service: &str) -> Vec<u32> {
    let needle = format!("EBB_SERVICE={service}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pid_alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

/// `--calibrate` against a demo-app whose `/work` is capped at a quarter
/// core: 10 ms of CPU per request makes 25 req/s. The boot is timed on
/// replicas of the config's service, started and stopped by the command.
/// The calibration tests measure real capacity: one at a time, so they do
/// not share the two cores with each other.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn calibrate_measures_capacity_and_boot_of_a_demo_app() {
    let _serial = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    let app = DemoApp::start("0.25");
    let d = Dir::new();
    let service = format!("calib{}", std::process::id());
    d.write(
        "app.toml",
        &format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n[service.{service}]\ncommand = \"{{ebb}} demo-app --port $PORT --cpu-budget 0.25\"\nlisten = \"127.0.0.1:{}\"\nstop_timeout = \"2s\"\n[service.{service}.health]\npath = \"/gtg\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nhealthy_threshold = 2\n",
            free_port(),
            free_port()
        ),
    );
    let url = format!("http://{}/work?cpu_ms=10", app.addr);
    let started = std::time::Instant::now();
    let out = d.simulate(&["-f", "app.toml", "--calibrate", &url, "--calibrate-duration", "12s", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let capacity = json["capacity"].as_f64().unwrap();
    assert!((18.0..=28.0).contains(&capacity), "a quarter core at 10 ms a request serves about 25 req/s: {json:#}");
    assert_eq!(json["capacity_limited_by"], "throughput", "{json:#}");
    let steps = json["steps"].as_array().unwrap();
    assert!(steps.len() >= 3 && steps[0]["connections"] == 1, "{json:#}");
    let boot = &json["boot"];
    assert_eq!(boot["starts"], 3, "{json:#}");
    let ready = boot["ready_median_ms"].as_u64().unwrap();
    assert!(ready > 0 && ready < 2000, "a demo-app answers its health check within 2 s: {json:#}");
    // On the service's probe schedule (first after 200 ms, then every
    // 300 ms, 2 passes): at least 500 ms.
    let boot_ms = json["boot_ms"].as_u64().unwrap();
    assert!((500..3000).contains(&boot_ms), "{json:#}");
    let flags = json["flags"].as_str().unwrap();
    let words: Vec<&str> = flags.split_whitespace().collect();
    assert_eq!((words[0], words[2]), ("--capacity", "--boot"), "{flags}");
    assert_eq!(words[1].parse::<f64>().unwrap(), capacity, "{flags}");
    // Not ebb's replica: no CPU samples to read, and the note says so.
    assert_eq!(json["saturation_cpu"], serde_json::Value::Null, "{json:#}");
    assert!(json["note"].as_str().unwrap_or("").contains("saturation cpu not measured"), "{json:#}");
    assert!(took < std::time::Duration::from_secs(40), "bounded in time: {took:?}");
    assert!(replicas_of(&service).is_empty(), "every replica it started is gone");

    // The text output: the table, the verdict and the flags, which
    // `ebb simulate` then takes as they are.
    let out =
        d.simulate(&["-f", "app.toml", "--calibrate", &url, "--calibrate-duration", "6s", "--calibrate-starts", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("connections") && text.contains("capacity ") && text.contains("boot "), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("calibrate: 1 connection"), "a progress line");
    let flags = text.lines().find_map(|l| l.strip_prefix("simulate with: ")).unwrap_or_else(|| panic!("{text}"));
    let mut args = vec!["-f", "app.toml", "--shape", "constant:rate=40,duration=60", "-q"];
    args.extend(flags.split_whitespace());
    d.ok(&args);
    assert!(replicas_of(&service).is_empty());
}

/// Pointed at one of ebb's balancers, calibrate measures the whole fleet
/// and divides by its replicas in service: the flag is still per replica.
#[test]
fn calibrate_through_a_balancer_gives_the_capacity_per_replica() {
    let _serial = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    let ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 2, max = 2, desired = 2 }", "")
            .replace("demo-app --port $PORT", "demo-app --port $PORT --cpu-budget 0.25")
    });
    ebb.wait_in_service(2, std::time::Duration::from_secs(20));
    let url = format!("http://{}/work?cpu_ms=10", ebb.listen);
    let out = Command::new(EBB)
        .current_dir(ebb.dir.path())
        .args([
            "simulate",
            "-f",
            "ebb.toml",
            "--calibrate",
            &url,
            "--calibrate-duration",
            "12s",
            "--calibrate-starts",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let through = &json["through_balancer"];
    assert_eq!(through["service"], "web", "{json:#}");
    assert_eq!(
        (through["in_service_before"].as_u64(), through["in_service_after"].as_u64()),
        (Some(2), Some(2)),
        "{json:#}"
    );
    let (total, each) = (through["total_rps"].as_f64().unwrap(), json["capacity"].as_f64().unwrap());
    assert!((each - total / 2.0).abs() <= 0.1, "per replica is the fleet's rate / 2: {json:#}");
    assert!(
        (18.0..=28.0).contains(&each),
        "a quarter core at 10 ms a request serves about 25 req/s per replica: {json:#}"
    );
    // ebb's own CPU samples: a replica capped at a quarter core saturates
    // at about 25 % of its allotment (cpu = 1), which a CPU policy must know.
    let saturation = json["saturation_cpu"].as_f64().unwrap_or_else(|| panic!("{json:#}"));
    assert!((12.0..=40.0).contains(&saturation), "{json:#}");
    let flags = json["flags"].as_str().unwrap();
    let flag = flags.split("--saturation-cpu ").nth(1).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    assert_eq!(flag, Some(saturation), "{flags}");
}

/// Pointed at a `[listener.NAME]`, calibrate follows the listener's routes
/// to the service they give `GET URL` (here a path route to a service
/// with no address of its own), and measures through its balancer.
#[test]
fn calibrate_through_a_listener_follows_its_route() {
    let _serial = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    let front = format!("127.0.0.1:{}", free_port());
    let ebb = Ebb::start(|admin, listen| {
        let web = fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "");
        let api = web.split("[service.web]").nth(1).unwrap().replace("[service.web.health]", "[service.api.health]");
        let api = api.replace(&format!("listen = \"{listen}\"\n"), "");
        format!(
            "{web}\n[service.api]{api}\n[listener.front]\nlisten = \"{front}\"\n\n\
             [[listener.front.route]]\npath_prefix = \"/work\"\nservice = \"api\"\n\n\
             [[listener.front.route]]\nservice = \"web\"\n"
        )
    });
    wait_for("both services in service", std::time::Duration::from_secs(20), || {
        let status = ebb.status();
        status["services"].as_array()?.iter().all(|s| s["in_service"] == 1).then_some(())
    });
    let url = format!("http://{front}/work?cpu_ms=1");
    let out = Command::new(EBB)
        .current_dir(ebb.dir.path())
        .args([
            "simulate",
            "-f",
            "ebb.toml",
            "--calibrate",
            &url,
            "--calibrate-duration",
            "4s",
            "--calibrate-starts",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["through_balancer"]["service"], "api", "the path route's service: {json:#}");
    assert_eq!(json["through_balancer"]["in_service_before"], 1, "{json:#}");
}

#[test]
fn calibrate_says_clearly_what_it_cannot_measure() {
    let d = Dir::new();
    let port = free_port();
    let out = d.simulate(&["--calibrate", &format!("http://127.0.0.1:{port}/work")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach 127.0.0.1:{port}")) && err.contains("nothing was measured"), "{err}");

    let err = d.bad(&["--calibrate", "ftp://example.com/"]);
    assert!(err.contains("error: --calibrate: \"ftp://example.com/\": unsupported scheme"), "{err}");
    let err = d.bad(&["--calibrate", &format!("http://127.0.0.1:{port}/"), "--calibrate-duration", "1s"]);
    assert!(err.contains("--calibrate-duration must be between 2s and 10m"), "{err}");
    let err = d.bad(&["--shape", "constant", "--calibrate-starts", "1"]);
    assert!(err.contains("go with --calibrate URL"), "{err}");

    let app = DemoApp::start("0.25");
    let out = d.simulate(&["--calibrate", &format!("http://{}/nowhere", app.addr)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GET /nowhere answered 404"), "{err}");
}

/// A warm pool in `ebb simulate`: the same planner as live takes its
/// members on a scale-out (a resume, `--resume`, instead of a boot), and
/// the pool shows as suspended replica-hours.
#[test]
fn a_warm_pool_shows_as_resumes_and_suspended_replica_hours() {
    let d = Dir::new();
    d.write("pool.toml", &format!("{CONFIG}\n[service.web.warm_pool]\nsize = 2\n"));
    let args = ["--shape", STEP, "--boot", "60s", "--resume", "100ms", "--compare", "pool.toml"];
    let out = d.ok(&args);
    assert!(out.contains("warm_replica_used"), "{out}");
    assert!(out.contains("taken from the warm pool: resumed in 100 ms instead of a boot"), "{out}");
    let row = out.lines().find(|l| l.starts_with("suspended replica-hours")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.split_whitespace().nth(2), Some("0"), "none without a pool: {row}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&json_args)).unwrap();
    assert_eq!(json[0]["suspended_replica_hours"], 0.0);
    let pooled = json[1]["suspended_replica_hours"].as_f64().unwrap();
    assert!(pooled >= 2.0 * 2400.0 / 3600.0 * 0.9, "about 2 members the whole time: {pooled}");
    assert!(
        json[1]["slo_violation_seconds"].as_u64() < json[0]["slo_violation_seconds"].as_u64(),
        "a resume instead of a 60 s boot: {json:#}"
    );
}

/// `--node-pool` with the file's `[cluster]`: replicas of 0.5 CPUs on
/// nodes of 2 (4 per node), target 50 %: the step wants more nodes, each
/// ready a node boot (60 s) after its decision, and the extra nodes are
/// drained and removed after the load; the events are the cluster's.
#[test]
fn a_node_pool_adds_nodes_a_node_boot_after_the_decision_and_removes_them_after() {
    let d = Dir::new();
    let swarm = CONFIG.replace("command = \"sleep 1000\"", "driver = \"swarm\"\nimage = \"web:1\"\ncpus = 0.5");
    let cluster = "\n[cluster]\ntarget_reserved_cpu = 50\nnodes = { min = 2, max = 5 }\nadd_node = \"add\"\nremove_node = \"remove {node}\"\nscale_out_cooldown = \"10s\"\nscale_in_cooldown = \"1m\"\n";
    d.write("swarm.toml", &format!("{swarm}{cluster}"));
    let out = d.ok(&["-f", "swarm.toml", "--shape", STEP, "--boot", "10s", "--node-pool", "boot=60s,cpus=2"]);
    assert!(
        out.contains(
            "node pool: 2-5 nodes of 2 CPUs (0.5 per replica, 4 replicas per node), node boot 1m, target 50 % reserved"
        ),
        "{out}"
    );
    let adding: Vec<&str> = out.lines().filter(|l| l.contains(" node_adding ")).collect();
    let added: Vec<&str> = out.lines().filter(|l| l.contains(" node_added ")).collect();
    assert!(!adding.is_empty() && adding.len() == added.len(), "{out}");
    assert!(adding[0].contains("  cluster  ") && adding[0].contains("> target 50 %: adding a node"), "{}", adding[0]);
    assert_eq!(seconds_of(added[0]), seconds_of(adding[0]) + 60, "{out}");
    assert!(added[0].contains("node node3 joined the swarm: added 60.0 s after the decision"), "{}", added[0]);
    let removed = out.lines().filter(|l| l.contains(" node_removed ")).count();
    assert_eq!(removed, added.len(), "every added node removed after the load: {out}");
    let summary =
        out.lines().find(|l| l.starts_with("ebb.toml: nodes peak") || l.starts_with("swarm.toml: nodes peak"));
    let summary = summary.unwrap_or_else(|| panic!("{out}"));
    assert!(summary.contains(&format!("{} added, {removed} removed", added.len())), "{summary}");

    // Bad input: no [cluster], a missing key, a replica larger than a node.
    let err = d.bad(&["--shape", STEP, "--node-pool", "boot=60s,cpus=2"]);
    assert!(err.contains("--node-pool: ") && err.contains("has no [cluster] table"), "{err}");
    let err = d.bad(&["-f", "swarm.toml", "--shape", STEP, "--node-pool", "cpus=2"]);
    assert!(err.contains("give boot=DURATION"), "{err}");
    let err = d.bad(&["-f", "swarm.toml", "--shape", STEP, "--node-pool", "boot=1m,cpus=0.25"]);
    assert!(err.contains("a replica reserves 0.5 CPUs, more than a node's 0.25"), "{err}");
}
