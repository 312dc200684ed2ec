//! Predictive scaling, live: a `forecast_only` policy learns the days the
//! state file recorded, shows its forecast in the API, and never changes
//! desired capacity; without enough history it says how much it has.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

const BOOT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
[[service.web.scaling.predictive]]
name = "daily"
metric = "requests_per_replica"
target = 40
"#;

fn forecast(ebb: &Ebb) -> serde_json::Value {
    let answer = ebb.admin_call("GET", "/api/v1/services/web/forecast", None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

/// Eight days of per-minute history ending an hour ago: 300 req/s from
/// two hours after now's time of day for two hours, 30 otherwise.
fn seed_history(state_dir: &std::path::Path, now_s: i64) -> i64 {
    let peak_from = (now_s + 2 * 3600).rem_euclid(86_400);
    let conn = rusqlite::Connection::open(state_dir.join("state.db")).unwrap();
    let end = now_s - 3600;
    let tx = conn.unchecked_transaction().unwrap();
    for m in 0..8 * 1440 {
        let t = end - (8 * 1440 - m) * 60;
        let tod = t.rem_euclid(86_400);
        let rate = if (tod - peak_from).rem_euclid(86_400) < 7200 { 300.0 } else { 30.0 };
        let minute_ms = (t * 1000) as u64;
        let point = serde_json::json!({
            "time_ms": minute_ms + 60_000, "desired": 1, "in_service": 1, "pending": 0,
            "requests_per_s": rate, "in_flight": 1, "p50_ms": 5.0, "p99_ms": 9.0, "cpu_mean": 20.0,
            "replica_cpu": [], "traffic": null,
        });
        tx.execute(
            "INSERT OR REPLACE INTO history_minute (service, minute_ms, point) VALUES ('web', ?1, ?2)",
            rusqlite::params![minute_ms as i64, point.to_string()],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    peak_from
}

#[test]
fn a_forecast_only_policy_learns_the_recorded_days_shows_its_forecast_and_never_scales() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 6, desired = 1 }", POLICY));
    ebb.wait_in_service(1, BOOT);

    // A new service has no history to learn from, and says so.
    let first = wait_for("the first forecast attempt", Duration::from_secs(20), || {
        let f = forecast(&ebb);
        f.as_array().filter(|a| !a.is_empty()).map(|a| a[0].clone())
    });
    assert_eq!(first["state"], "too_little_history", "{first}");
    assert!(first["detail"].as_str().unwrap().ends_with("needs 24 h to forecast"), "{first}");
    assert_eq!(first["policies"][0]["mode"], "forecast_only");
    // The controller tells it in the event log on its next second; wait for
    // that before the kill below, or the kill can beat it.
    wait_for("the too-little-history event", Duration::from_secs(10), || {
        ebb.events()
            .iter()
            .any(|e| e["kind"] == "forecast" && e["reason"].as_str().unwrap().contains("needs 24 h to forecast"))
            .then_some(())
    });
    // The state writer commits what it is handed within milliseconds.
    std::thread::sleep(Duration::from_millis(300));

    // Eight recorded days, as if ebb had run for a week.
    ebb.kill_up();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let peak_from = seed_history(&ebb.dir.path().join("state"), now_s);
    ebb.restart_up();
    let f = wait_for("a forecast from the recorded days", Duration::from_secs(30), || {
        let f = forecast(&ebb)[0].clone();
        (f["state"] == "ready").then_some(f)
    });
    assert!(f["model"].as_str().unwrap().starts_with("Holt-Winters"), "{f}");
    assert!(f["history_s"].as_u64().unwrap() >= 8 * 86_400 - 3600, "{f}");
    assert!(f["skill"]["days"].as_u64().unwrap() >= 1, "{f}");
    let values: Vec<f64> = f["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(values.len(), 576, "48 h of 5-minute buckets");
    // The forecast knows the daily peak: around 300 req/s an hour into it,
    // around 30 in the quiet hours.
    let start_s = f["start_ms"].as_i64().unwrap() / 1000;
    let at = |t: i64| values[((t - start_s) / 300) as usize];
    let today_peak = now_s - now_s.rem_euclid(86_400) + peak_from;
    let peak = if today_peak + 3600 > start_s { today_peak + 3600 } else { today_peak + 86_400 + 3600 };
    assert!((at(peak) - 300.0).abs() < 60.0, "at the peak: {}\n{f}", at(peak));
    assert!((at(peak + 6 * 3600) - 30.0).abs() < 20.0, "quiet: {}", at(peak + 6 * 3600));

    // Each forecast state is told once in the event log.
    let told: Vec<String> = ebb
        .events()
        .iter()
        .filter(|e| e["kind"] == "forecast")
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(told.iter().any(|t| t.contains("needs 24 h to forecast")), "{told:?}");
    assert!(
        told.iter().any(|t| t.starts_with("predictive daily (requests_per_replica): Holt-Winters")
            && t.ends_with("forecast_only: recorded and shown, not acted on")),
        "{told:?}"
    );

    // `ebb status` says what the forecast asks for, and that it is not
    // applied (the controller reads the forecast on its next second).
    wait_for("ebb status to show the forecast", Duration::from_secs(10), || {
        let status = ebb.cli(&["status"]);
        let text = String::from_utf8_lossy(&status.stdout).to_string();
        let line = text.lines().find(|l| l.starts_with("  predictive daily: forecast "))?.to_string();
        assert!(line.ends_with("(forecast_only: not applied)"), "{text}");
        assert!(!text.contains("holding: predictive"), "a forecast_only policy holds nothing: {text}");
        Some(line)
    });

    // forecast_only: it never acts.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ebb.status()["services"][0]["desired"], 1);
    assert!(!ebb.events().iter().any(|e| e["kind"] == "scaled"));

    // Switched to forecast_and_scale, it says at once whether it will act.
    // This history repeats exactly, so "same time last week" is perfect
    // and no model beats it: it does not act, and says so.
    let text = std::fs::read_to_string(&ebb.config).unwrap();
    std::fs::write(&ebb.config, text.replace("target = 40\n", "target = 40\nmode = \"forecast_and_scale\"\n")).unwrap();
    let out = ebb.cli(&["apply", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let warned = wait_for("a forecast event after the switch", Duration::from_secs(15), || {
        ebb.events()
            .into_iter()
            .filter(|e| e["kind"] == "forecast")
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .find(|t| t.contains("acting on it"))
    });
    assert!(warned.ends_with("NOT acting on it: the forecast has not beaten the naive baselines"), "{warned}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ebb.status()["services"][0]["desired"], 1);
}
