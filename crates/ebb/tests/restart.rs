//! Surviving ebb's own death: after `kill -9` of `ebb up`, a new `ebb up`
//! on the same state directory adopts the replicas still running (no
//! duplicates, no orphans), restores desired capacity and protection,
//! replaces what died meanwhile, and continues the event log. A state file
//! it cannot read is refused and left untouched.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const BOOT: Duration = Duration::from_secs(30);

/// Replica process groups ebb started for this state directory: group
/// leaders whose environment names it (as the process driver sets it).
fn replica_groups(state_dir: &Path) -> Vec<u32> {
    let want = format!("EBB_STATE_DIR={}", state_dir.canonicalize().unwrap().display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if !environ.split(|b| *b == 0).any(|var| var == want.as_bytes()) {
            continue;
        }
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).map(|p| p.as_raw() as u32);
        if pgid == Ok(pid) && pid_alive(pid) {
            found.push(pid);
        }
    }
    found.sort();
    found
}

fn ids(replicas: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = replicas.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

fn web(ebb: &Ebb) -> serde_json::Value {
    ebb.status()["services"][0].clone()
}

#[test]
fn after_kill_9_a_new_ebb_adopts_every_replica_and_restores_desired_state() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 6, desired = 2 }", ""));
    ebb.wait_in_service(2, BOOT);
    let scaled = ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 3}"#));
    assert_eq!(scaled.status, 200, "{}", scaled.body);
    let before = ebb.wait_in_service(3, BOOT);
    let protected_id = before[0]["id"].as_str().unwrap().to_string();
    let protect =
        ebb.admin_call("POST", &format!("/api/v1/replicas/{protected_id}/protect"), Some(r#"{"protected": true}"#));
    assert_eq!(protect.status, 200, "{}", protect.body);
    let state_dir = ebb.dir.path().join("state");
    let groups_before = replica_groups(&state_dir);
    assert_eq!(groups_before.len(), 3, "three replica groups before the crash");
    let last_seq_before = ebb.events().iter().filter_map(|e| e["seq"].as_u64()).max().unwrap();

    ebb.kill_up();
    let killed_at = Instant::now();
    assert_eq!(replica_groups(&state_dir), groups_before, "replicas outlive ebb");
    assert!(http(ebb.listen, "GET", "/gtg", None).is_err(), "nobody listens while ebb is down");

    ebb.restart_up();
    // The restart gap: from the crash to the first request answered again.
    let served = wait_for("a request through the balancer", Duration::from_secs(20), || {
        http(ebb.listen, "GET", "/gtg", None).ok().filter(|r| r.status == 200)
    });
    eprintln!("restart gap (kill -9 to first answered request, restart included): {:?}", killed_at.elapsed());
    assert_eq!(served.status, 200);

    let after = ebb.wait_in_service(3, BOOT);
    assert_eq!(ids(&after), ids(&before), "the same replicas, adopted");
    assert_eq!(replica_groups(&state_dir), groups_before, "no duplicates, nothing restarted");
    let service = web(&ebb);
    assert_eq!(service["desired"], 3, "desired capacity survives: {service}");
    let protected: Vec<&str> =
        after.iter().filter(|r| r["protected"] == true).map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(protected, vec![protected_id.as_str()], "protection survives");
    let events = ebb.events();
    let adopted = events.iter().filter(|e| e["kind"] == "replica_adopted").count();
    assert_eq!(adopted, 3, "one adoption event per replica: {events:#?}");
    assert!(
        events.iter().any(|e| e["seq"].as_u64() == Some(last_seq_before)),
        "the event log from before the crash is still there"
    );
    assert!(
        events.iter().filter(|e| e["kind"] == "replica_adopted").all(|e| e["seq"].as_u64().unwrap() > last_seq_before),
        "sequence numbers continue"
    );
    // Prometheus counters count this run: the scale before the crash is in
    // the kept event log, not in this run's scaling_actions_total.
    let metrics = http(ebb.admin, "GET", "/metrics", None).unwrap().body;
    assert!(
        !metrics.lines().any(|l| l.starts_with("ebb_scaling_actions_total{")),
        "no scaling action in this run yet:\n{metrics}"
    );
    // Still a working fleet: requests are spread over the adopted replicas.
    for _ in 0..30 {
        assert_eq!(http(ebb.listen, "GET", "/gtg", None).unwrap().status, 200);
    }

    // A clean stop afterwards leaves nothing behind.
    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ebb.wait_exit(Duration::from_secs(30));
    assert!(replica_groups(&state_dir).is_empty(), "ebb down stopped the adopted replicas");
}

#[test]
fn a_replica_that_died_while_ebb_was_down_is_replaced_and_an_unknown_one_is_stopped() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 6, desired = 2 }", ""));
    let before = ebb.wait_in_service(2, BOOT);
    let state_dir = ebb.dir.path().join("state");
    ebb.kill_up();
    let dead = before[0]["id"].as_str().unwrap().to_string();
    let dead_pid = before[0]["pid"].as_u64().unwrap() as i32;
    // Its memory control group (where ebb could make one: root on this
    // machine kind), left behind empty once it dies with no ebb running.
    let dead_group = std::fs::read_to_string(format!("/proc/{dead_pid}/cgroup"))
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())))
        .filter(|p| p.contains("/ebb-"))
        .map(|p| Path::new("/sys/fs/cgroup/memory").join(p.trim_start_matches('/')));
    if dead_group.is_none() {
        println!(
            "SKIP (part): no cgroup v1 memory group for the replica; the sweep of dead replicas' groups is not checked"
        );
    }
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(dead_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("the killed replica to be gone", Duration::from_secs(5), || (!pid_alive(dead_pid as u32)).then_some(()));

    // An orphan: a replica process for this state directory that the state
    // file does not know (as if ebb died between starting it and saving it).
    let orphan = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["demo-app", "--port", &free_port().to_string()])
        .env("EBB_STATE_DIR", state_dir.canonicalize().unwrap())
        .env("EBB_SERVICE", "web")
        .env("EBB_REPLICA_ID", "web-0rphan")
        .env("EBB_VERSION", "1")
        .env("PORT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let orphan_pid = orphan.id();
    // Reaped by this test (its parent) once ebb has stopped it.
    let reaper = std::thread::spawn(move || {
        let mut orphan = orphan;
        orphan.wait()
    });

    ebb.restart_up();
    let after = wait_for("two replicas in service, the dead one replaced", BOOT, || {
        let replicas = ebb.replicas();
        let serving: Vec<_> =
            replicas.iter().filter(|r| r["state"] == "in_service" && r["healthy"] == true).cloned().collect();
        (serving.len() == 2 && replicas.len() == 2).then_some(serving)
    });
    let after_ids = ids(&after);
    assert!(!after_ids.contains(&dead), "the dead replica is not back: {after_ids:?}");
    if let Some(group) = &dead_group {
        assert!(!group.exists(), "the dead replica's empty group {} is swept at start", group.display());
    }
    assert!(
        after_ids.contains(&before[1]["id"].as_str().unwrap().to_string()),
        "the survivor is adopted: {after_ids:?}"
    );
    let events = ebb.events();
    assert!(
        events.iter().any(|e| e["kind"] == "replica_exited"
            && e["replica"] == dead.as_str()
            && e["reason"].as_str().unwrap().contains("while ebb was not running")),
        "{events:#?}"
    );
    wait_for("the orphan to be stopped", Duration::from_secs(15), || (!pid_alive(orphan_pid)).then_some(()));
    reaper.join().unwrap().unwrap();
    assert!(
        events.iter().chain(ebb.events().iter()).any(|e| e["replica"] == "web-0rphan"),
        "the orphan's stop is an event"
    );
    assert_eq!(replica_groups(&state_dir).len(), 2, "exactly the desired replicas run");
}

#[test]
fn an_acknowledged_scale_survives_an_immediate_kill_9() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 6, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    let r = ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 4}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    // Killed the moment the answer arrived: the answer means it is on disk.
    ebb.kill_up();
    ebb.restart_up();
    assert_eq!(web(&ebb)["desired"], 4);
    ebb.wait_in_service(4, BOOT);
}

#[test]
fn desired_capacity_survives_a_clean_restart_too() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 6, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    assert_eq!(ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 2}"#)).status, 200);
    ebb.wait_in_service(2, BOOT);
    assert!(ebb.cli(&["down"]).status.success());
    ebb.wait_exit(Duration::from_secs(30));
    ebb.restart_up();
    ebb.wait_in_service(2, BOOT);
    assert_eq!(web(&ebb)["desired"], 2);
}

#[test]
fn an_unreadable_state_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, listen) = (free_port(), free_port());
    let config = dir.path().join("ebb.toml");
    std::fs::write(
        &config,
        fast_config(
            format!("127.0.0.1:{admin}").parse().unwrap(),
            format!("127.0.0.1:{listen}").parse().unwrap(),
            "{ min = 1, max = 2, desired = 1 }",
            "",
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let state_file = dir.path().join("state/state.db");
    let garbage = b"not a database\n".repeat(500);
    std::fs::write(&state_file, &garbage).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebb")).arg("-f").arg(&config).arg("up").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ebb up must refuse: {stderr}");
    assert!(stderr.contains("state.db") && stderr.contains("will not overwrite"), "{stderr}");
    assert!(std::fs::read(&state_file).unwrap() == garbage, "the file is untouched");
    assert!(replica_groups(&dir.path().join("state")).is_empty(), "nothing was started");
}

/// Spawns `ebb up` as systemd would with socket activation: the balancer's
/// listening socket, owned by the caller, passed as fd 3.
fn spawn_socket_activated(dir: &Path, config: &Path, listener: &std::net::TcpListener) -> std::process::Child {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("ebb-up.log")).unwrap();
    let mut command = std::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -f "$1" up"#)
        .arg(env!("CARGO_BIN_EXE_ebb"))
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            if fd != 3 {
                nix::unistd::dup2(fd, 3)?;
            }
            // dup2 clears close-on-exec, but not when the fd already is 3.
            fcntl(3, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    command.spawn().unwrap()
}

#[test]
fn with_socket_activation_clients_arriving_during_a_restart_are_queued_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The supervisor's socket: it stays open while ebb dies and restarts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = listener.local_addr().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("ebb.toml");
    std::fs::write(&config, fast_config(admin, listen, "{ min = 1, max = 4, desired = 2 }", "")).unwrap();
    let state_dir = dir.path().join("state");

    let mut up = spawn_socket_activated(dir.path(), &config, &listener);
    let in_service = || {
        let status = http(admin, "GET", "/api/v1/status", None).ok().filter(|r| r.status == 200)?.json();
        (status["services"][0]["in_service"] == 2).then_some(())
    };
    wait_for("two replicas in service", BOOT, || {
        assert!(up.try_wait().unwrap().is_none(), "ebb up exited:\n{}", read(&dir.path().join("ebb-up.log")));
        in_service()
    });
    assert_eq!(http(listen, "GET", "/gtg", None).unwrap().status, 200, "served through the passed socket");

    up.kill().unwrap();
    up.wait().unwrap();
    // Clients keep arriving while ebb is down: they connect (the socket is
    // still listening) and wait in its backlog.
    let load = Load::start(listen, 4, "/gtg", Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(500));
    let mut up = spawn_socket_activated(dir.path(), &config, &listener);
    wait_for("the restarted ebb to adopt both replicas", BOOT, in_service);
    std::thread::sleep(Duration::from_millis(500));
    let (sent, failures) = load.finish();
    eprintln!("socket activation: {sent} requests during and after the restart, {} failed", failures.len());
    assert!(sent >= 4, "clients were sending ({sent})");
    assert!(failures.is_empty(), "{} of {sent} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);

    // Clean up like `ebb down` would.
    let down =
        std::process::Command::new(env!("CARGO_BIN_EXE_ebb")).arg("-f").arg(&config).arg("down").output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = up.kill();
    let _ = up.wait();
    assert!(replica_groups(&state_dir).is_empty(), "nothing left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_older_than_a_day_is_served_per_minute_from_the_state_file() {
    use ebb::metrics::history::ServicePoint;
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 2, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    ebb.kill_up();
    // Two days ago, ten minutes of per-second points, written while ebb is
    // down (as if it had run then).
    let state_dir = ebb.dir.path().join("state");
    let now = ebb::clock::unix_ms(std::time::SystemTime::now());
    let start = (now - 2 * 24 * 3600 * 1000) / 60_000 * 60_000;
    {
        let (store, _) = ebb::state::StateStore::open(&state_dir, 100).unwrap();
        for s in 0..600u64 {
            store.record_point(
                "web",
                &ServicePoint {
                    time_ms: start + s * 1000,
                    desired: 1 + (s / 300) as u32,
                    in_service: 1,
                    pending: 0,
                    requests_per_s: 10.0,
                    in_flight: 0,
                    p50_ms: Some(1.0),
                    p99_ms: Some(2.0),
                    cpu_mean: Some(5.0),
                    replica_cpu: vec![],
                    traffic: None,
                    shadow_desired: None,
                },
            );
        }
        store.close().await;
    }
    ebb.restart_up();
    // The restarted ebb folds points older than 24 h into minutes.
    let since = start - 1;
    let points = wait_for("ten per-minute points from two days ago", Duration::from_secs(20), || {
        let r = ebb.admin_call("GET", &format!("/api/v1/metrics?service=web&since={since}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let points = r.json().as_array().unwrap().clone();
        let old: Vec<_> = points.into_iter().filter(|p| p["time_ms"].as_u64().unwrap() < start + 600_000).collect();
        (old.len() == 10).then_some(old)
    });
    let times: Vec<u64> = points.iter().map(|p| p["time_ms"].as_u64().unwrap()).collect();
    assert_eq!(times, (0..10).map(|m| start + m * 60_000).collect::<Vec<_>>(), "one point per minute");
    assert_eq!(points[4]["desired"], 1);
    assert_eq!(points[5]["desired"], 2, "each minute keeps what it needed");
}

/// A service removed from the config while ebb was down: its replicas are
/// left running (ebb does not know how they should end), named in a
/// warning, and adopted again once the service is back.
#[test]
fn replicas_of_a_service_removed_from_the_config_are_left_running_and_named() {
    let worker = "\n[service.batch]\nkind = \"worker\"\ncommand = \"sleep 600\"\nreplicas = { min = 1, max = 1, desired = 1 }\nstop_timeout = \"1s\"\n";
    let mut ebb =
        Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "") + worker);
    let batch = wait_for("the batch worker", BOOT, || {
        let status = ebb.status();
        let s = status["services"].as_array().unwrap().iter().find(|s| s["name"] == "batch").cloned()?;
        // A replica still starting has no pid yet: wait for it.
        let r = s["replicas"].as_array()?.first()?;
        Some((r["id"].as_str()?.to_string(), r["pid"].as_u64()? as u32))
    });
    ebb.kill_up();
    let with_both = std::fs::read_to_string(&ebb.config).unwrap();
    std::fs::write(&ebb.config, with_both.replace(worker, "")).unwrap();
    ebb.restart_up();
    wait_for("the warning", BOOT, || ebb.up_log().contains("service batch is no longer in").then_some(()));
    assert!(ebb.up_log().contains(&batch.0), "the warning names the replica: {}", ebb.up_log());
    assert!(pid_alive(batch.1), "left running");

    // Back in the config: adopted, not started twice.
    ebb.kill_up();
    std::fs::write(&ebb.config, &with_both).unwrap();
    ebb.restart_up();
    let adopted = wait_for("the batch worker to be adopted", BOOT, || {
        ebb.events().into_iter().find(|e| e["kind"] == "replica_adopted" && e["replica"] == batch.0.as_str())
    });
    assert_eq!(adopted["service"], "batch");
}

/// Makes files immutable (`chattr +i`: the one thing that stops root from
/// writing them) until dropped.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    /// `None` when this machine cannot (not root, or a file system without
    /// the attribute, such as tmpfs).
    fn set(paths: Vec<std::path::PathBuf>) -> Option<Immutable> {
        let mut guard = Immutable(Vec::new());
        for path in paths {
            let ok = std::process::Command::new("chattr").arg("+i").arg(&path).status().is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            guard.0.push(path);
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}

/// A state directory that fails under a running ebb (issue 13, item 3):
/// the state file, its WAL and `logs/` become unwritable, dirty pages are
/// flushed, then the fleet is scaled. ebb neither crashes (SIGBUS from a
/// memory-mapped WAL index, as before) nor stops serving: the change is
/// applied, the API answers 503 "could not be saved", and the new replica
/// starts although it cannot get a log file.
#[test]
fn a_state_directory_that_fails_under_ebb_neither_crashes_it_nor_stops_serving() {
    let mut ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 3, desired = 1 }", ""));
    ebb.wait_in_service(1, BOOT);
    let state = ebb.dir.path().join("state");
    let paths: Vec<_> = ["state.db", "state.db-wal", "state.db-shm", "logs"]
        .iter()
        .map(|name| state.join(name))
        .filter(|p| p.exists())
        .collect();
    let Some(immutable) = Immutable::set(paths) else {
        println!("SKIP: cannot make files immutable here (needs root and a file system with chattr +i)");
        return;
    };
    // Clean pages of a memory-mapped file fault on their next write: that
    // is where the SIGBUS came from.
    assert!(std::process::Command::new("sync").status().unwrap().success());

    let r = ebb.admin_call("PUT", "/api/v1/services/web/desired", Some(r#"{"desired": 2, "reason": "disk test"}"#));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("could not be saved"), "{}", r.body);
    // Applied, and serving: the new replica starts without its log file.
    assert_eq!(web(&ebb)["desired"], 2);
    ebb.wait_in_service(2, BOOT);
    for _ in 0..20 {
        assert_eq!(http(ebb.listen, "GET", "/gtg", None).unwrap().status, 200);
    }
    assert!(ebb.up_log().contains("output goes to ebb's own stderr"), "{}", ebb.up_log());
    if let Some(status) = ebb.exit_status() {
        panic!("ebb up died ({status}):\n{}", ebb.up_log());
    }
    drop(immutable);
    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
