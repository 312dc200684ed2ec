//! `ebb wait`: returns once the fleet is in service, so a script's load
//! never meets a fleet with no replica; fails with the reason otherwise.

mod support;

use std::time::{Duration, Instant};

use support::{fast_config, Ebb};

#[test]
fn wait_returns_once_every_replica_is_in_service() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 2, max = 3, desired = 2 }", ""));
    let started = Instant::now();
    let out = ebb.cli(&["wait", "--timeout", "60s"]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.trim_end().ends_with("web: 2/2 in service"), "{printed}");
    let status = ebb.status();
    assert_eq!(status["services"][0]["in_service"], 2, "in service when wait returned ({:?})", started.elapsed());
    // Load right after: every request answered by a replica.
    for _ in 0..20 {
        let r = support::http(ebb.listen, "GET", "/gtg", None).unwrap();
        assert_eq!(r.status, 200);
    }
    let metrics = support::http(ebb.admin, "GET", "/metrics", None).unwrap().body;
    for line in [
        r#"ebb_requests_total{service="web",source="replica",code_class="2xx",reason="answered"} 20"#,
        r#"ebb_requests_total{service="web",source="balancer",code_class="5xx",reason="no_replica"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let unknown = ebb.cli(&["wait", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(2), "an unknown service is bad input");
}

#[test]
fn wait_gives_up_with_the_reason() {
    // Replicas that never pass a health check (nothing listens).
    let ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "")
            .replace("command = \"{ebb} demo-app --port $PORT\"", "command = \"sleep 600\"")
    });
    let out = ebb.cli(&["wait", "--timeout", "3s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not ready after 3s"), "{stderr}");
    assert!(
        stderr.contains("web replica_started") || stderr.contains("web fleet_starting"),
        "the last events: {stderr}"
    );

    // Meanwhile the balancer answers 503 itself, and /metrics says why.
    for _ in 0..3 {
        assert_eq!(support::http(ebb.listen, "GET", "/", None).unwrap().status, 503);
    }
    let metrics = support::http(ebb.admin, "GET", "/metrics", None).unwrap().body;
    for line in [
        r#"ebb_service_balancer_answers_total{service="web",code_class="5xx",reason="no_replica"} 3"#,
        r#"ebb_requests_total{service="web",source="balancer",code_class="5xx",reason="no_replica"} 3"#,
        r#"ebb_requests_total{service="web",source="replica",code_class="2xx",reason="answered"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains(r#"ebb_service_retries_total{service="web"} 0"#), "{metrics}");
}

/// `ebb logs SERVICE`: every replica's output, each line prefixed with its
/// replica; `--tail`; `-f` keeps printing.
#[test]
fn logs_of_a_service_interleave_its_replicas_with_a_prefix() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 2, max = 2, desired = 2 }", ""));
    let ids: Vec<String> =
        ebb.wait_in_service(2, Duration::from_secs(60)).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let out = ebb.cli(&["logs", "web", "--tail", "1"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line of each replica: {text}");
    for id in &ids {
        assert_eq!(lines.iter().filter(|l| l.starts_with(&format!("{id} | "))).count(), 1, "{id}: {text}");
    }
    // One replica alone: no prefix.
    let one = ebb.cli(&["logs", &ids[0]]);
    let one = String::from_utf8_lossy(&one.stdout).to_string();
    assert!(one.contains("Demo app started") && !one.contains(" | "), "{one}");
    // Following: a new line written by a replica shows up, prefixed.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["-f"])
        .arg(&ebb.config)
        .args(["logs", "web", "--tail", "0", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let log = ebb.dir.path().join("state/logs").join(format!("{}.log", ids[1]));
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, b"a line written now\n").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let _ = follow.kill();
    let followed = follow.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout).to_string();
    assert!(followed.lines().any(|l| l == format!("{} | a line written now", ids[1])), "{followed}");
    assert!(followed.lines().all(|l| ids.iter().any(|id| l.starts_with(&format!("{id} | ")))), "{followed}");
}
