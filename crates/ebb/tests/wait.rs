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
    // --json: one object per line, naming the replica.
    let out = ebb.cli(&["logs", "web", "--tail", "1", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let objects: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 2, "{text}");
    for id in &ids {
        assert_eq!(
            objects.iter().filter(|o| o["replica"] == id.as_str() && o["line"].is_string()).count(),
            1,
            "{text}"
        );
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

/// Stops a detached `ebb up` (and its replicas) when the test ends, also
/// when it fails.
struct Detached {
    config: std::path::PathBuf,
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = std::process::Command::new(support::EBB)
            .arg("-f")
            .arg(&self.config)
            .args(["down", "--timeout", "30s"])
            .output();
    }
}

/// `ebb up --wait`: starts in the background and returns once the fleet is
/// in service, so a script's next line can send load.
#[test]
fn up_wait_returns_with_the_fleet_in_service_and_ebb_running_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let config = dir.path().join("ebb.toml");
    std::fs::write(&config, fast_config(admin, listen, "{ min = 2, max = 2, desired = 2 }", "")).unwrap();
    let _guard = Detached { config: config.clone() };
    let started = Instant::now();
    let out = std::process::Command::new(support::EBB)
        .arg("-f")
        .arg(&config)
        .args(["up", "--wait", "--wait-timeout", "60s"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("running in the background (pid"), "{printed}");
    assert!(printed.trim_end().ends_with("web: 2/2 in service"), "{printed}");
    // Load right after: every request answered by a replica.
    for _ in 0..10 {
        assert_eq!(support::http(listen, "GET", "/gtg", None).unwrap().status, 200);
    }
    let log = std::fs::read_to_string(dir.path().join("state/ebb.log")).unwrap();
    assert!(log.contains("ebb: service web"), "ebb's own output is in its log: {log}");
    eprintln!("ebb up --wait returned after {:?}", started.elapsed());

    // A second `ebb up --wait` on the same state: the error, not a hang.
    let again = std::process::Command::new(support::EBB)
        .arg("-f")
        .arg(&config)
        .args(["up", "--detach"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr).to_string();
    assert_eq!(again.status.code(), Some(1), "{said}");
    assert!(said.contains("another ebb"), "{said}");
}
