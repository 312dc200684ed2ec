//! End to end with real processes: the time-compressed story examples scale
//! a fleet of demo-app replicas under `/work` load, and every change is an
//! event that explains itself.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use support::*;

/// These scenarios each keep most of a 2-core machine busy on purpose (the
/// load *is* the test), so they run one at a time, not side by side.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn scaled_events(ebb: &Ebb) -> Vec<serde_json::Value> {
    ebb.events().into_iter().filter(|e| e["kind"] == "scaled").collect()
}

fn time_of(event: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(event["time"].as_str().unwrap()).unwrap()
}

#[test]
fn s1_step_scaling_grows_to_max_one_step_per_cooldown_under_load_and_shrinks_back_after() {
    let _serial = one_at_a_time();
    let ebb = Ebb::start(|admin, listen| example_config("examples/s1-flask-asg/ebb.fast.toml", None, admin, listen));
    ebb.wait_in_service(2, Duration::from_secs(30));

    // Enough /work to keep every replica's quarter-core budget busy, from
    // `ebb load` (closed model, like the story's load test), for 40 s.
    let load_started = Instant::now();
    let load = std::process::Command::new(EBB)
        .args(["load", &format!("http://{}/work?cpu_ms=20", ebb.listen)])
        .args(["-c", "12", "-z", "40s", "--timeout", "20s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the fleet to reach max (4) under load", Duration::from_secs(38), || {
        (ebb.status()["services"][0]["desired"] == 4).then_some(())
    });
    let reaction = load_started.elapsed();
    ebb.wait_in_service(4, Duration::from_secs(20));
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = summary["requests"].as_u64().unwrap();
    assert_eq!(summary["errors"], 0, "no request failed under load: {summary}");
    assert!(sent > 100, "{summary}");

    // Back to min once the load is gone (cpu-low: 10 periods below 60 %).
    wait_for("the fleet to shrink back to 2", Duration::from_secs(90), || {
        (ebb.status()["services"][0]["desired"] == 2).then_some(())
    });
    ebb.wait_in_service(2, Duration::from_secs(30));

    let scaled = scaled_events(&ebb);
    let steps: Vec<(u64, u64)> =
        scaled.iter().map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap())).collect();
    assert_eq!(steps, vec![(2, 3), (3, 4), (4, 3), (3, 2)], "one step at a time: {scaled:#?}");
    for e in &scaled[..2] {
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.contains("cpu-high") && reason.contains("60"),
            "scale-out names its alarm and threshold: {reason}"
        );
    }
    for e in &scaled[2..] {
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.contains("cpu-low"), "scale-in names its alarm: {reason}");
    }
    // The 4 s cooldown separates the steps in each direction.
    for pair in [(&scaled[0], &scaled[1]), (&scaled[2], &scaled[3])] {
        let gap = time_of(pair.1).duration_since(time_of(pair.0)).unwrap();
        assert!(gap >= Duration::from_millis(3900), "steps {gap:?} apart, cooldown is 4 s");
    }
    // Scale-in drained replicas out of the rotation before stopping them.
    let events = ebb.events();
    let scale_in_drains = events
        .iter()
        .filter(|e| e["kind"] == "replica_draining" && e["reason"].as_str().unwrap_or("").contains("(scale-in)"))
        .count();
    assert_eq!(scale_in_drains, 2, "{events:#?}");
    eprintln!("s1: load step to max desired in {reaction:?}; {sent} requests from ebb load, 0 failed");
}

#[test]
fn a_fleet_without_policies_holds_its_size_and_reports_cpu() {
    let _serial = one_at_a_time();
    let ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 1, max = 3, desired = 2 }", "cpu = 0.5")
            .replace("{ebb} demo-app --port $PORT", "{ebb} demo-app --port $PORT --cpu-budget 0.25")
    });
    ebb.wait_in_service(2, Duration::from_secs(30));
    let load = Load::start(ebb.listen, 6, "/work?cpu_ms=10", Duration::ZERO);
    // CPU is measured per replica, relative to its 0.5-core allotment: a
    // replica capped at a quarter core reads about 50 %.
    let cpu = wait_for("CPU readings under load", Duration::from_secs(20), || {
        let replicas = ebb.replicas();
        let cpus: Vec<f64> = replicas.iter().filter_map(|r| r["cpu"].as_f64()).collect();
        (cpus.len() == 2 && cpus.iter().all(|c| *c > 30.0)).then_some(cpus)
    });
    assert!(cpu.iter().all(|c| *c < 75.0), "the budget caps each replica near 50 % of its allotment: {cpu:?}");
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(ebb.status()["services"][0]["desired"], 2);
    assert!(scaled_events(&ebb).is_empty());
}

/// One row of `ebb load --output-csv`.
#[derive(Debug)]
struct Row {
    time_s: f64,
    errors: u64,
    p99_ms: Option<f64>,
    in_service: Option<u64>,
}

fn read_csv(path: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (t, e, p, s) = (col("time_s"), col("errors"), col("p99_ms"), col("in_service"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                time_s: f[t].parse().unwrap(),
                errors: f[e].parse().unwrap(),
                p99_ms: f[p].parse().ok(),
                in_service: f[s].parse().ok(),
            }
        })
        .collect()
}

#[test]
fn s2_target_tracking_adds_replicas_as_an_ebb_load_ramp_rises_and_p99_recovers_after_each() {
    let _serial = one_at_a_time();
    let ebb =
        Ebb::start(|admin, listen| example_config("examples/s2-http-scale-out/ebb.fast.toml", None, admin, listen));
    ebb.wait_in_service(1, Duration::from_secs(30));
    let csv = ebb.dir.path().join("s2.csv");
    // 5 ms of CPU per request on quarter-core replicas: ~50 req/s each at
    // 100 % CPU, so 120 req/s needs 3 replicas at the 80 % target.
    let out = std::process::Command::new(EBB)
        .args(["load", &format!("http://{}/work?cpu_ms=5", ebb.listen)])
        .args(["--stages", "8s:5->120,22s:120", "--timeout", "10s", "--json"])
        .args(["--ebb", &format!("http://{}", ebb.admin)])
        .arg("--output-csv")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"], 0, "no request failed: {summary}");

    let rows = read_csv(&csv);
    let fleet: Vec<u64> = rows.iter().filter_map(|r| r.in_service).collect();
    let peak = *fleet.iter().max().unwrap();
    assert!(peak >= 3, "the fleet grew with the load: {fleet:?}");
    assert!(fleet.windows(2).any(|w| w[1] > w[0]), "replicas were added during the run: {fleet:?}");
    let scaled = scaled_events(&ebb);
    // The CPU policy, or demand sizing when requests queued at the balancer.
    assert!(
        scaled
            .iter()
            .all(|e| ["by cpu-80:", "by saturation:"].iter().any(|p| e["reason"].as_str().unwrap().contains(p))),
        "{scaled:#?}"
    );
    assert!(scaled.iter().any(|e| e["to"].as_u64() > e["from"].as_u64()));

    // After each addition (plus boot and settling), p99 is back under 1 s
    // until the next addition or the end of the run.
    let additions: Vec<f64> =
        rows.windows(2).filter(|w| w[1].in_service > w[0].in_service).map(|w| w[1].time_s).collect();
    let mut checked = 0;
    for (k, t) in additions.iter().enumerate() {
        let until = additions.get(k + 1).copied().unwrap_or(f64::MAX);
        let settled: Vec<f64> =
            rows.iter().filter(|r| r.time_s > t + 4.0 && r.time_s <= until).filter_map(|r| r.p99_ms).collect();
        assert!(
            settled.iter().all(|p| *p < 1000.0),
            "p99 recovered under 1 s after the addition at {t} s: {settled:?}"
        );
        checked += settled.len();
    }
    assert!(checked >= 5, "the run went on long enough after additions to see p99 settle: {rows:?}");
    assert!(rows.iter().all(|r| r.errors == 0));
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn s3_a_closed_burst_scales_out_without_killing_busy_replicas_and_sheds_fast() {
    let _serial = one_at_a_time();
    let ebb = Ebb::start(|admin, listen| example_config("examples/s3-ecs-django/ebb.fast.toml", None, admin, listen));
    ebb.wait_in_service(1, Duration::from_secs(30));
    let up_pid = ebb.up_pid();
    // An ab-style closed burst: far more concurrency than one quarter-core
    // replica (max_in_flight 8) can take.
    let started = Instant::now();
    let out = std::process::Command::new(EBB)
        .args(["load", &format!("http://{}/work?cpu_ms=5", ebb.listen)])
        .args(["-c", "300", "-z", "15s", "--timeout", "20s", "--json"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rss = rss_kb(up_pid);

    // Every request either succeeded or got a fast 503 (never a hang, never
    // another error): 503s come within the 5 s queue timeout.
    let codes = summary["status_codes"].as_object().unwrap();
    assert!(codes.keys().all(|c| c == "200" || c == "503"), "{codes:?}");
    assert!(codes["200"].as_u64().unwrap() > 100, "{summary}");
    assert!(summary["error_kinds"].as_object().is_none_or(|k| k.is_empty()), "no transport errors: {summary}");
    assert!(
        summary["latency_ms"]["max"].as_f64().unwrap() < 5_000.0 + 2_000.0,
        "nothing waited much past the queue timeout: {summary}"
    );
    assert!(took < Duration::from_secs(30));

    // The fleet scaled out, and no replica was replaced for being busy.
    let events = ebb.events();
    assert!(events.iter().any(|e| e["kind"] == "scaled" && e["to"].as_u64() > e["from"].as_u64()), "{events:#?}");
    for kind in ["replica_unhealthy", "replica_exited"] {
        assert!(!events.iter().any(|e| e["kind"] == kind), "a busy replica was {kind}: {events:#?}");
    }
    // ebb's memory stayed bounded under 300 open connections and a queue.
    assert!(rss > 0 && rss < 200 * 1024, "ebb up RSS {rss} kB");
    eprintln!("s3: {summary}\ns3: ebb up RSS {rss} kB");
}
