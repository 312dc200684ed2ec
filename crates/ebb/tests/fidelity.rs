//! Fidelity of `ebb simulate`, as a test: one step-load trace replayed
//! live (real demo-app replicas behind ebb, `ebb load --trace`) and in
//! simulation (`ebb simulate --trace`, the same config and trace), and the
//! two timelines compared as the issue asks:
//!
//! - desired replicas within ±1 at every second outside a short window
//!   (`WINDOW`) after each change, live or simulated;
//! - the same sequence of decisions.
//!
//! `scripts/fidelity-simulate` does the same on the S2 example's CPU
//! policy, with a printout; this test uses a policy whose decisions do not
//! hinge on a few percent of noise (docs/simulation.md says why): requests
//! per replica, counted exactly by the balancer, a target whose fixed point
//! (4 replicas at the peak) sits mid-band, and rate limits of one replica
//! per decision, so the path up and down is 1→2→3→4→3→2→1 whatever the
//! controller's tick alignment. About 60 s.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

use support::*;

/// Seconds after each change (live or simulated) that are not compared.
const WINDOW: f64 = 5.0;
/// The step: `BASE` req/s for `LEAD` s, `PEAK` for `HOLD` s, `BASE` for `TAIL` s.
const BASE: u32 = 5;
const PEAK: u32 = 44;
const LEAD: u32 = 6;
const HOLD: u32 = 24;
const TAIL: u32 = 22;
/// Each request burns 5 ms of CPU on a replica capped at a quarter core:
/// 50 req/s per replica (what `--calibrate` measures on it).
const CPU_MS: u32 = 5;
const CAPACITY: &str = "50";

/// Target tracking on requests per replica at 12: at 44 req/s the fleet
/// holds at 4 (11 per replica, inside the ±10 % band; 3 would be 14.7,
/// 5 would be 8.8 → back to 4); one replica more or less per decision.
fn config(admin: std::net::SocketAddr, listen: std::net::SocketAddr) -> String {
    format!(
        r#"state_dir = "state"

[admin]
listen = "{admin}"

[service.api]
command = "{{ebb}} demo-app --port $PORT --cpu-budget 0.25"
listen = "{listen}"
replicas = {{ min = 1, max = 8, desired = 1 }}
cpu = 0.25
stop_timeout = "2s"
drain_timeout = "2s"

[service.api.health]
path = "/gtg"
interval = "300ms"
timeout = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2

[[service.api.scaling.target_tracking]]
name = "rps-12"
metric = "requests_per_replica"
target = 12
window = "2s"
scale_out_cooldown = "2500ms"
scale_in_cooldown = "2500ms"
scale_in_stabilization = "3500ms"
scale_out_rate = {{ percent = 0, replicas = 1, period = "1500ms" }}
scale_in_rate = {{ percent = 0, replicas = 1, period = "1500ms" }}

# The step down (44 -> 5 req/s) is an 89 % traffic drop: the scale-in
# freeze would hold the way down past the trace, live and simulated alike
# (its own tests: tests/scale_in_freeze.rs, ebb-core's safety_rules.rs).
[service.api.scaling.freeze]
traffic_drop = 1
"#
    )
}

/// One scaling decision: seconds from the trace's start, from, to.
type Decision = (f64, u64, u64);

fn sim_decisions(log: &str) -> Vec<Decision> {
    log.lines()
        .filter(|l| l.contains(" scaled "))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let t: Vec<f64> = fields[0].trim_start_matches('+').split(':').map(|x| x.parse().unwrap()).collect();
            let (from, to) = fields[4].split_once("->").unwrap();
            (t[0] * 3600.0 + t[1] * 60.0 + t[2], from.parse().unwrap(), to.parse().unwrap())
        })
        .collect()
}

/// `second -> desired` from a CSV with the given time and desired columns.
fn per_second(csv: &str, time: &str, desired: &str, offset: f64) -> BTreeMap<i64, i64> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col =
        |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    let (t, d) = (col(time), col(desired));
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let desired = f[d].parse().ok()?;
            Some(((f[t].parse::<f64>().unwrap() + offset).round() as i64, desired))
        })
        .collect()
}

#[test]
fn live_and_simulated_timelines_agree_on_a_step() {
    let ebb = Ebb::start(config);
    ebb.wait_in_service(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2)); // a few idle samples, as the simulation's first seconds

    let mut trace = String::from("second,rate\n");
    for s in 0..LEAD + HOLD + TAIL {
        let rate = if (LEAD..LEAD + HOLD).contains(&s) { PEAK } else { BASE };
        trace.push_str(&format!("{s},{rate}\n"));
    }
    let dir = ebb.dir.path();
    std::fs::write(dir.join("step.csv"), trace).unwrap();

    // Live.
    let load_start = SystemTime::now();
    let out = Command::new(EBB)
        .current_dir(dir)
        .args(["load", "--trace", "step.csv", "-c", "500", "--timeout", "30s", "--json", "--output-csv", "live.csv"])
        .args(["--ebb", &format!("http://{}", ebb.admin)])
        .arg(format!("http://{}/work?cpu_ms={CPU_MS}", ebb.listen))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"], 0, "every request was served live: {summary}");
    let live_csv = std::fs::read_to_string(dir.join("live.csv")).unwrap();
    // Row `time_s` ends its second: second s ends at s + 1.
    let live = per_second(&live_csv, "time_s", "desired", -1.0);
    let start_s = load_start.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let live_changes: Vec<Decision> = ebb
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "scaled")
        .map(|e| {
            let at = humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
            let at = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64() - start_s;
            (at, e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap())
        })
        .collect();

    // Simulated: the same config and trace, the capacity the budget gives,
    // the boot time the health checks give (2 × 300 ms).
    let sim = Command::new(EBB)
        .current_dir(dir)
        .args(["-f", "ebb.toml", "simulate", "--trace", "step.csv", "--capacity", CAPACITY])
        .args(["--queue-limit", "30s", "--csv", "sim.csv"])
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stderr));
    let sim_log = String::from_utf8(sim.stdout).unwrap();
    let sim_changes = sim_decisions(&sim_log);
    let simulated = per_second(&std::fs::read_to_string(dir.join("sim.csv")).unwrap(), "second", "desired", 0.0);

    // Compare.
    let changes: Vec<f64> = live_changes.iter().chain(&sim_changes).map(|c| c.0).collect();
    let (mut compared, mut equal, mut worst, mut off) = (0, 0, 0, Vec::new());
    let mut table = String::from("second  live  sim\n");
    for (s, sim_desired) in &simulated {
        let Some(live_desired) = live.get(s) else { continue };
        let diff = (live_desired - sim_desired).abs();
        equal += (diff == 0) as u32;
        let near = changes.iter().any(|t| (0.0..WINDOW).contains(&(*s as f64 + 1.0 - t)));
        table.push_str(&format!(
            "{s:6}  {live_desired:4}  {sim_desired:3}{}\n",
            if near { "  (after a change)" } else { "" }
        ));
        if !near {
            compared += 1;
            worst = worst.max(diff);
            if diff > 1 {
                off.push(*s);
            }
        }
    }
    let seq = |c: &[Decision]| c.iter().map(|d| (d.1, d.2)).collect::<Vec<_>>();
    let lags: Vec<String> = live_changes.iter().zip(&sim_changes).map(|(l, s)| format!("{:+.1}", l.0 - s.0)).collect();
    let report = format!(
        "live decisions: {live_changes:?}\nsimulated decisions: {sim_changes:?}\n{table}\
         fidelity: {compared} s compared (outside {WINDOW} s after each change), largest difference {worst}, \
         {} equal of {} s; live minus simulated time of each decision: {} s; load average {}",
        equal,
        simulated.keys().filter(|s| live.contains_key(s)).count(),
        lags.join(", "),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    eprintln!("{report}");

    let expected = [(1, 2), (2, 3), (3, 4), (4, 3), (3, 2), (2, 1)];
    assert_eq!(seq(&sim_changes), expected, "the simulated path up and down\n{sim_log}");
    assert!(compared >= 20, "enough seconds outside the windows to compare\n{report}");
    assert!(
        off.is_empty(),
        "desired differs by more than 1 at seconds {off:?} outside the windows after changes\n{report}"
    );
    assert_eq!(seq(&live_changes), seq(&sim_changes), "the same decision sequence live and simulated\n{report}");
}
