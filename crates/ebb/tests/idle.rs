//! Scale to zero end to end (`[service.NAME.idle]`, docs/idle.md): demo-app
//! replicas go idle after `after`, a request wakes the service and is
//! served, `suspend` keeps the same process, a stream keeps it awake, and
//! the hold's own answers (timeout, overflow, a failed wake).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{fast_config, http, http_with_headers, pid_alive, wait_for, Ebb};

/// `fast_config` with `replicas` and an `[service.web.idle]` table of
/// `idle` (its keys, one a line).
fn idle_config(admin: SocketAddr, listen: SocketAddr, replicas: &str, extra: &str, idle: &str) -> String {
    format!("{}\n[service.web.idle]\n{idle}\n", fast_config(admin, listen, replicas, extra))
}

fn web(ebb: &Ebb) -> serde_json::Value {
    ebb.status()["services"][0].clone()
}

fn events_of(ebb: &Ebb, kind: &str) -> Vec<serde_json::Value> {
    ebb.events().into_iter().filter(|e| e["kind"] == kind).collect()
}

/// Waits until `ebb status` says the service is idle, with `what` in it.
fn wait_idle(ebb: &Ebb, what: &str, timeout: Duration) -> serde_json::Value {
    wait_for(&format!("the service idle ({what})"), timeout, || {
        let web = web(ebb);
        web["idle"].as_str().is_some_and(|s| s.starts_with("idle") && s.contains(what)).then_some(web)
    })
}

/// The state letter of a process (`R`, `S`, `T` for stopped...).
fn process_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[test]
fn an_idle_service_stops_its_replicas_and_a_request_wakes_it() {
    let ebb = Ebb::start(|admin, listen| {
        idle_config(admin, listen, "{ min = 0, max = 2, desired = 1 }", "", "after = \"2s\"\nhold_timeout = \"30s\"")
    });
    ebb.wait_in_service(1, Duration::from_secs(20));
    assert!(web(&ebb)["idle"].is_null(), "awake: {}", web(&ebb));

    let idle = wait_idle(&ebb, "stopped", Duration::from_secs(30));
    wait_for("no replica left", Duration::from_secs(20), || ebb.replicas().is_empty().then_some(()));
    assert_eq!(idle["desired"], 0, "idle, stopped: desired 0: {idle}");
    let went_idle = events_of(&ebb, "idle");
    assert_eq!(went_idle.len(), 1, "{went_idle:?}");
    assert!(went_idle[0]["reason"].as_str().unwrap().contains("stopping the replicas"), "{went_idle:?}");

    // A request at zero is held, wakes the service, and is served.
    let started = Instant::now();
    let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", ebb.up_log());
    let cold: u64 = r.header("ebb-cold-start").expect("ebb-cold-start on a held request").parse().unwrap();
    assert!(cold as u128 <= started.elapsed().as_millis(), "{cold} ms held, {:?} in all", started.elapsed());
    let woken = wait_for("a woken event", Duration::from_secs(10), || events_of(&ebb, "woken").into_iter().next());
    assert!(woken["reason"].as_str().unwrap().contains("the first held request waited"), "{woken}");
    assert_eq!(events_of(&ebb, "waking").len(), 1);

    // Awake: the next request is not held.
    let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ebb-cold-start"), None, "not held: no header");
    assert!(web(&ebb)["idle"].is_null());

    // Quiet again: idle again.
    wait_idle(&ebb, "stopped", Duration::from_secs(30));
    let metrics = http(ebb.admin, "GET", "/metrics", None).unwrap().body;
    assert!(metrics.contains("ebb_service_cold_starts_total{service=\"web\"} 1"), "{metrics}");
    // The hold's wait as a histogram: the one released request, in the
    // bucket its `ebb-cold-start` falls in.
    assert!(metrics.contains("# TYPE ebb_service_hold_wait_seconds histogram"), "{metrics}");
    assert!(metrics.contains("ebb_service_hold_wait_seconds_count{service=\"web\"} 1\n"), "{metrics}");
    assert!(metrics.contains("ebb_service_hold_wait_seconds_bucket{service=\"web\",le=\"+Inf\"} 1\n"), "{metrics}");
    let cumulative = |le: &str| {
        let key = format!("ebb_service_hold_wait_seconds_bucket{{service=\"web\",le=\"{le}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(key.as_str())).and_then(|n| n.parse::<u64>().ok())
    };
    let bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300"];
    let first = bounds.iter().position(|b| cumulative(b) == Some(1)).expect("a bucket holds it");
    let bound: f64 = bounds[first].parse().unwrap();
    let below: f64 = if first == 0 { 0.0 } else { bounds[first - 1].parse().unwrap() };
    let waited = cold as f64 / 1000.0;
    assert!(waited <= bound + 0.001 && waited + 0.001 >= below, "{cold} ms in ({below}, {bound}]: {metrics}");
}

#[test]
fn suspend_freezes_the_same_process_and_a_request_thaws_it() {
    let ebb = Ebb::start(|admin, listen| {
        idle_config(admin, listen, "{ min = 0, max = 2, desired = 1 }", "", "after = \"2s\"\nmode = \"suspend\"")
    });
    let replicas = ebb.wait_in_service(1, Duration::from_secs(20));
    let pid = replicas[0]["pid"].as_u64().unwrap();
    let id = replicas[0]["id"].as_str().unwrap().to_string();

    wait_idle(&ebb, "suspended 1 replicas", Duration::from_secs(30));
    wait_for("the replica stopped by SIGSTOP", Duration::from_secs(10), || {
        (process_state(pid) == Some('T')).then_some(())
    });
    let frozen = ebb.replicas();
    assert_eq!(frozen.len(), 1, "suspended, not stopped: {frozen:?}");
    assert_eq!(frozen[0]["pid"].as_u64(), Some(pid));
    // Frozen for a few probe intervals: no health check failed it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ebb.replicas()[0]["id"], id.as_str(), "still the same replica");

    let r = http(ebb.listen, "GET", "/gtg?details", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", ebb.up_log());
    assert!(r.header("ebb-cold-start").is_some(), "{r:?}");
    assert_ne!(process_state(pid), Some('T'), "running again");
    assert!(pid_alive(pid as u32));
    let now = ebb.replicas();
    assert_eq!((now.len(), now[0]["pid"].as_u64(), now[0]["id"].as_str()), (1, Some(pid), Some(id.as_str())));
    assert_eq!(events_of(&ebb, "replica_started").len(), 1, "never restarted: {:?}", ebb.events());
    assert!(events_of(&ebb, "replica_exited").is_empty());
}

#[test]
fn an_open_stream_keeps_the_service_awake() {
    let ebb = Ebb::start(|admin, listen| {
        idle_config(admin, listen, "{ min = 0, max = 2, desired = 1 }", "", "after = \"2s\"")
    });
    ebb.wait_in_service(1, Duration::from_secs(20));
    let listen = ebb.listen;
    let stream = std::thread::spawn(move || http(listen, "GET", "/stream?ms=7000", None));
    // Three idle periods with the stream open.
    std::thread::sleep(Duration::from_secs(6));
    assert!(web(&ebb)["idle"].is_null(), "awake while the stream is open: {}", web(&ebb));
    assert!(events_of(&ebb, "idle").is_empty(), "{:?}", ebb.events());
    let r = stream.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.matches("data: ").count() >= 30, "the whole stream: {:?}", r.body);
    // Closed: quiet from now on, idle after `after`.
    wait_idle(&ebb, "stopped", Duration::from_secs(30));
}

#[test]
fn a_held_request_times_out_with_a_waking_answer_and_extra_ones_are_refused_at_once() {
    // Starts at zero; a replica takes 20 s to boot (its checks do not count
    // before then): every held request times out after 3 s.
    let ebb = Ebb::start(|admin, listen| {
        let config = idle_config(
            admin,
            listen,
            "{ min = 0, max = 1, desired = 0 }",
            "",
            "after = \"2s\"\nhold_timeout = \"3s\"\nmax_held = 2",
        );
        config
            .replace(
                "command = \"{ebb} demo-app --port $PORT\"",
                "command = \"sleep 20; exec {ebb} demo-app --port $PORT\"",
            )
            .replace("grace_period = \"0s\"", "grace_period = \"60s\"")
    });
    assert_eq!(web(&ebb)["idle"].as_str().map(|s| s.starts_with("idle (stopped")), Some(true), "{}", web(&ebb));
    assert!(ebb.replicas().is_empty(), "started at zero: nothing boots");

    let listen = ebb.listen;
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let sent = Instant::now();
                (http(listen, "GET", "/gtg", None).unwrap(), sent.elapsed())
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for (r, _) in &answers {
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)), "{r:?}");
        assert_eq!(r.json()["service"], "web");
    }
    let timed_out: Vec<_> = answers.iter().filter(|(r, _)| r.body.contains("hold_timeout")).collect();
    let overflow: Vec<_> = answers.iter().filter(|(r, _)| r.body.contains("max_held")).collect();
    assert_eq!((timed_out.len(), overflow.len()), (2, 4), "{answers:?}");
    for (r, waited) in &timed_out {
        assert!(r.json()["error"].as_str().unwrap().contains("waking"), "{r:?}");
        assert!(*waited >= Duration::from_millis(2900), "held for its hold_timeout: {waited:?}");
    }
    // The wake goes on: a replica is booting.
    let web = web(&ebb);
    assert!(web["idle"].as_str().is_some_and(|s| s.starts_with("waking")), "{web}");
    assert_eq!(web["desired"], 1, "{web}");
}

#[test]
fn a_replica_that_crashes_while_waking_fails_the_held_requests_and_is_not_woken_again_at_once() {
    let ebb = Ebb::start(|admin, listen| {
        let config = idle_config(
            admin,
            listen,
            "{ min = 0, max = 1, desired = 0 }",
            "",
            "after = \"2s\"\nhold_timeout = \"20s\"",
        );
        config.replace("command = \"{ebb} demo-app --port $PORT\"", "command = \"exit 3\"")
    });
    let sent = Instant::now();
    let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
    let waited = sent.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("could not wake") && error.contains("exited with status 3"), "{error}");
    assert!(waited < Duration::from_secs(15), "failed at the exit, not at hold_timeout: {waited:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");

    // Within the backoff: answered at once, nothing started.
    let sent = Instant::now();
    let again = http(ebb.listen, "GET", "/gtg", None).unwrap();
    assert_eq!(again.status, 503, "{again:?}");
    assert!(again.json()["error"].as_str().unwrap().contains("not waking again"), "{again:?}");
    assert!(sent.elapsed() < Duration::from_secs(2), "at once: {:?}", sent.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(events_of(&ebb, "replica_started").len(), 1, "one wake, one replica: {:?}", ebb.events());
    let failed = events_of(&ebb, "wake_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(web(&ebb)["idle"].as_str().is_some_and(|s| s.starts_with("idle (stopped")), "{}", web(&ebb));
}

#[test]
fn an_ignored_user_agent_does_not_wake_an_idle_service() {
    let ebb = Ebb::start(|admin, listen| {
        idle_config(
            admin,
            listen,
            "{ min = 0, max = 1, desired = 0 }",
            "",
            "after = \"2s\"\nignore_user_agents = [\"UptimeRobot\"]",
        )
    });
    let agent = [("User-Agent", "Mozilla/5.0+(compatible; UptimeRobot/2.0)")];
    let r = http_with_headers(ebb.listen, "GET", "/gtg", None, &agent).unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("idle"), "{r:?}");
    assert!(r.header("retry-after").is_some());
    std::thread::sleep(Duration::from_secs(1));
    assert!(ebb.replicas().is_empty(), "not woken");
    assert!(events_of(&ebb, "waking").is_empty());

    // Awake, it is served like anyone, and does not keep the service awake.
    assert_eq!(http(ebb.listen, "GET", "/gtg", None).unwrap().status, 200);
    let served = http_with_headers(ebb.listen, "GET", "/gtg", None, &agent).unwrap();
    assert_eq!(served.status, 200, "{served:?}");
    let listen = ebb.listen;
    let pinger = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let _ = http_with_headers(listen, "GET", "/gtg", None, &agent);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    wait_idle(&ebb, "stopped", Duration::from_secs(30));
    pinger.join().unwrap();
}

#[test]
fn ebb_apply_turns_idle_on_and_off_in_place() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", ""));
    let pid = ebb.wait_in_service(1, Duration::from_secs(20))[0]["pid"].as_u64().unwrap();
    let plain = std::fs::read_to_string(&ebb.config).unwrap();

    // On: suspend after 2 s, applied to the running replica.
    let idle = format!(
        "{}\n[service.web.idle]\nafter = \"2s\"\nmode = \"suspend\"\n",
        plain.replace("replicas = { min = 1, max = 2, desired = 1 }", "replicas = { min = 0, max = 2, desired = 1 }")
    );
    std::fs::write(&ebb.config, idle).unwrap();
    let out = ebb.cli(&["apply", "--yes"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    wait_idle(&ebb, "suspended 1 replicas", Duration::from_secs(30));
    assert_eq!(ebb.replicas()[0]["pid"].as_u64(), Some(pid), "the same replica, frozen");

    // Off: awake for good, the same process thawed.
    std::fs::write(&ebb.config, &plain).unwrap();
    let out = ebb.cli(&["apply", "--yes"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    wait_for("awake", Duration::from_secs(10), || web(&ebb)["idle"].is_null().then_some(()));
    let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("ebb-cold-start"), None);
    assert_ne!(process_state(pid), Some('T'));
    assert_eq!(ebb.replicas()[0]["pid"].as_u64(), Some(pid));
    std::thread::sleep(Duration::from_secs(4));
    assert!(web(&ebb)["idle"].is_null(), "no [idle]: never idle again");
}

/// The kernel sends SIGHUP, then SIGCONT, to a stopped process group that
/// loses its parent (POSIX's orphaned process group): a suspended process
/// replica does not outlive a crash of ebb (docs/idle.md). Nothing frozen
/// is left behind, and the restarted ebb serves again.
#[test]
fn a_crash_of_ebb_leaves_no_frozen_replica_and_the_restarted_ebb_serves() {
    let mut ebb = Ebb::start(|admin, listen| {
        idle_config(admin, listen, "{ min = 0, max = 2, desired = 1 }", "", "after = \"2s\"\nmode = \"suspend\"")
    });
    let pid = ebb.wait_in_service(1, Duration::from_secs(20))[0]["pid"].as_u64().unwrap();
    wait_idle(&ebb, "suspended 1 replicas", Duration::from_secs(30));
    wait_for("SIGSTOPped", Duration::from_secs(10), || (process_state(pid) == Some('T')).then_some(()));
    ebb.kill_up();
    wait_for("the frozen replica gone", Duration::from_secs(10), || (!pid_alive(pid as u32)).then_some(()));
    ebb.restart_up();
    let replicas = ebb.wait_in_service(1, Duration::from_secs(30));
    let new_pid = replicas[0]["pid"].as_u64().unwrap();
    assert_ne!(process_state(new_pid), Some('T'), "a fresh replica, running");
    let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}

/// SIGTERM leaves the fleet running for the next ebb: a suspended replica
/// is thawed first (a frozen one would get the kernel's SIGHUP), and the
/// next `ebb up` adopts the same process.
#[test]
fn sigterm_thaws_suspended_replicas_before_leaving_them_to_the_next_ebb() {
    let mut ebb = Ebb::start(|admin, listen| {
        idle_config(admin, listen, "{ min = 0, max = 2, desired = 1 }", "", "after = \"2s\"\nmode = \"suspend\"")
    });
    let pid = ebb.wait_in_service(1, Duration::from_secs(20))[0]["pid"].as_u64().unwrap();
    wait_idle(&ebb, "suspended 1 replicas", Duration::from_secs(30));
    wait_for("SIGSTOPped", Duration::from_secs(10), || (process_state(pid) == Some('T')).then_some(()));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ebb.up_pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    ebb.wait_exit(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert!(pid_alive(pid as u32), "left running\n{}", ebb.up_log());
    assert_ne!(process_state(pid), Some('T'), "thawed before ebb left");
    ebb.restart_up();
    let replicas = ebb.wait_in_service(1, Duration::from_secs(30));
    assert_eq!(replicas[0]["pid"].as_u64(), Some(pid), "adopted: {replicas:?}");
    assert_eq!(http(ebb.listen, "GET", "/gtg", None).unwrap().status, 200);
}

/// A deploy while the service is idle (stopped) boots nothing: the spec
/// changes, the deploy succeeds at once, and the next wake runs it.
#[test]
fn a_deploy_while_idle_boots_nothing_and_the_next_wake_runs_the_new_spec() {
    let ebb = Ebb::start(|admin, listen| {
        idle_config(admin, listen, "{ min = 0, max = 2, desired = 1 }", "", "after = \"2s\"")
    });
    ebb.wait_in_service(1, Duration::from_secs(20));
    wait_idle(&ebb, "stopped", Duration::from_secs(30));
    wait_for("no replica left", Duration::from_secs(20), || ebb.replicas().is_empty().then_some(()));
    let started = events_of(&ebb, "replica_started").len();

    let out = ebb.cli(&["deploy", "web", "--env", "RELEASE=2"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(events_of(&ebb, "deploy_succeeded").len() == 1, "{:?}", ebb.events());
    std::thread::sleep(Duration::from_secs(1));
    assert!(ebb.replicas().is_empty(), "nothing booted: {:?}", ebb.replicas());
    assert_eq!(events_of(&ebb, "replica_started").len(), started, "{:?}", ebb.events());
    let status = web(&ebb);
    assert_eq!(status["version"], 2, "{status}");
    assert!(status["idle"].as_str().unwrap().starts_with("idle (stopped"), "still idle: {status}");

    // The next request wakes the service on the new version.
    let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", ebb.up_log());
    let replicas = ebb.replicas();
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    assert_eq!(replicas[0]["version"], 2, "{replicas:?}");
}

/// `ebb scale web 0` on an awake service with min = 0 and [idle]: idle at
/// once (stop mode: its replica stops), and a request wakes it again.
#[test]
fn scaling_an_awake_service_to_zero_makes_it_idle() {
    let ebb = Ebb::start(|admin, listen| {
        idle_config(admin, listen, "{ min = 0, max = 2, desired = 2 }", "", "after = \"5m\"")
    });
    ebb.wait_in_service(2, Duration::from_secs(20));
    let out = ebb.cli(&["scale", "web", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = wait_idle(&ebb, "stopped", Duration::from_secs(5));
    assert_eq!(status["desired"], 0, "{status}");
    wait_for("no replica left", Duration::from_secs(20), || ebb.replicas().is_empty().then_some(()));
    let went_idle = events_of(&ebb, "idle");
    assert_eq!(went_idle.len(), 1, "{went_idle:?}");
    assert!(went_idle[0]["reason"].as_str().unwrap().contains("scaled to 0"), "{went_idle:?}");

    let r = http(ebb.listen, "GET", "/gtg", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("ebb-cold-start").is_some(), "held while it woke: {r:?}");
    assert_eq!(ebb.wait_in_service(1, Duration::from_secs(20)).len(), 1);
}
