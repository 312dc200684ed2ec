//! The driver conformance suite: every driver (process, docker, swarm) must
//! start a replica, let it pass health checks, report its CPU, drain it on a
//! polite stop, let a new driver instance (a restarted ebb) discover and
//! adopt it, and observe a crash with a reason. One function,
//! [`conformance`], runs every step against each driver.
//!
//! The docker and swarm cases need a Docker engine: they print `SKIP:` and
//! return when `docker info` fails. Their image is built in the test from
//! this build's `ebb` (`examples/docker/build-image`, a unique tag) and
//! removed after, with every container the test made, even on failure
//! ([`DockerLeftovers`]).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb::driver::{
    ContainerSpec, DockerDriver, Driver, Engine, ExitReason, ProcessDriver, ReplicaHandle, ReplicaSpec, RunningReplica,
    SwarmDriver,
};
use ebb_core::config::CommandSpec;
use support::*;

/// Which driver a run of the suite is about.
#[derive(Clone)]
enum Kind {
    Process,
    Docker { image: String },
    Swarm { image: String },
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Process => "process",
            Kind::Docker { .. } => "docker",
            Kind::Swarm { .. } => "swarm",
        }
    }

    /// A fresh driver instance, as a (re)started ebb would make.
    async fn driver(&self) -> Arc<dyn Driver> {
        match self {
            Kind::Process => Arc::new(ProcessDriver::new(EBB.into())),
            Kind::Docker { .. } => Arc::new(DockerDriver::new(Engine::connect().await.expect("the engine answers"))),
            Kind::Swarm { .. } => Arc::new(
                SwarmDriver::new(Engine::connect().await.expect("the engine answers")).await.expect("a swarm manager"),
            ),
        }
    }

    fn spec(&self, dir: &Path, replica: &str) -> ReplicaSpec {
        let (command, container) = match self {
            Kind::Process => (CommandSpec::Argv(vec![EBB.into(), "demo-app".into()]), None),
            Kind::Docker { image } | Kind::Swarm { image } => (
                CommandSpec::Argv(Vec::new()),
                Some(ContainerSpec {
                    image: image.clone(),
                    container_port: 8080,
                    cpus: Some(1.0),
                    memory: Some(256 << 20),
                    stop_timeout: Duration::from_secs(5),
                    options: Default::default(),
                }),
            ),
        };
        ReplicaSpec {
            service: "conf".into(),
            replica_id: replica.into(),
            version: 1,
            command,
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            state_dir: dir.to_path_buf(),
            log_path: dir.join("logs").join(format!("{replica}.log")),
            container,
            ports: None,
            limits: None,
        }
    }

    /// Kills a replica behind the driver's back, as a crash would.
    fn crash(&self, replica: &RunningReplica) {
        match self {
            Kind::Process => {
                let pid = replica.pid.expect("a process replica has a pid") as i32;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
            }
            Kind::Docker { .. } | Kind::Swarm { .. } => {
                let id = container_id(replica);
                let out = Command::new("docker").args(["kill", &id]).output().unwrap();
                assert!(out.status.success(), "docker kill: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }

    /// Whether anything of the replica is left running (or, for a
    /// container, left at all: a stopped container must be removed).
    fn left_behind(&self, replica: &RunningReplica) -> bool {
        match self {
            Kind::Process => pid_alive(replica.pid.unwrap()),
            Kind::Docker { .. } | Kind::Swarm { .. } => {
                let exists = || {
                    let out = Command::new("docker")
                        .args(["ps", "-aq", "--no-trunc", "--filter", &format!("id={}", container_id(replica))])
                        .output()
                        .unwrap();
                    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
                };
                // Swarm removes a task's container itself, a moment after
                // the task is gone.
                let patience = if matches!(self, Kind::Swarm { .. }) { 60 } else { 0 };
                (0..patience).all(|_| {
                    exists() && {
                        std::thread::sleep(Duration::from_millis(250));
                        true
                    }
                }) && exists()
            }
        }
    }
}

fn container_id(replica: &RunningReplica) -> String {
    match &replica.handle {
        ReplicaHandle::Container { id } => id.clone(),
        ReplicaHandle::Swarm { container: Some(id), .. } => id.clone(),
        other => panic!("not a container: {other:?}"),
    }
}

/// One blocking HTTP GET, off the async runtime.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http(addr, "GET", &path, None)).await.unwrap()
}

/// Whether a `GET /gtg` to `addr` gets no answer within `within` (a
/// frozen replica: the connection may be accepted, nothing comes back).
async fn no_answer_within(addr: SocketAddr, within: Duration) -> bool {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, within) else { return true };
        stream.set_read_timeout(Some(within)).unwrap();
        if stream.write_all(b"GET /gtg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        !matches!(stream.read(&mut byte), Ok(1))
    })
    .await
    .unwrap()
}

async fn wait_healthy(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get(addr, "/gtg").await.is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} at {addr} never passed its health check");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica's usage. A reading may be missing now and then (the engine
/// answers stats slowly under load: the sample leaves it out), so retry.
async fn usage(driver: &dyn Driver, replica: &RunningReplica, name: &str) -> ebb::driver::GroupUsage {
    for _ in 0..20 {
        if let Some(u) = driver.usage(std::slice::from_ref(replica)).await.get(&replica.replica_id) {
            return *u;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{name}: no usage reading for {} in 20 tries", replica.replica_id)
}

/// Every step of the contract, against one driver.
async fn conformance(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().canonicalize().unwrap();
    let _cleanup = DockerLeftovers::for_state_dir(&kind, &state);
    let name = kind.name();
    let driver = kind.driver().await;
    assert_eq!(driver.name(), name);

    // Start, health.
    let a = driver.start(&kind.spec(&state, "conf-a")).await.unwrap_or_else(|e| panic!("{name}: start: {e}"));
    wait_healthy(a.addr, &format!("{name} replica conf-a")).await;
    let details = get(a.addr, "/gtg?details").await.unwrap().body;
    // (Swarm too: one Swarm service per replica.)
    assert!(details.contains("conf-a"), "{name}: the replica knows its id (EBB_REPLICA_ID): {details}");

    // Report CPU: 0.6 s of work shows in the cumulative reading.
    let before = usage(&*driver, &a, name).await.cpu_seconds;
    for _ in 0..2 {
        let r = get(a.addr, "/work?cpu_ms=300").await.unwrap();
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    let after = usage(&*driver, &a, name).await;
    assert!(
        // `/work` spins for wall time: on a busy machine it gets less CPU.
        after.cpu_seconds - before >= 0.15,
        "{name}: CPU went from {before} to {} s after 0.6 s of work",
        after.cpu_seconds
    );
    assert!(after.rss_bytes > 0, "{name}: memory is reported: {after:?}");

    // Suspend (scale to zero's `mode = "suspend"`): frozen in place, it
    // answers nothing; resumed, the same replica answers again.
    match kind {
        Kind::Swarm { .. } => {
            let err = driver.suspend(&a).await.expect_err("swarm cannot suspend").to_string();
            assert!(err.contains("swarm driver cannot suspend"), "{name}: {err}");
        }
        _ => {
            driver.suspend(&a).await.unwrap_or_else(|e| panic!("{name}: suspend: {e}"));
            assert!(no_answer_within(a.addr, Duration::from_secs(1)).await, "{name}: a suspended replica answers");
            driver.resume(&a).await.unwrap_or_else(|e| panic!("{name}: resume: {e}"));
            wait_healthy(a.addr, &format!("{name} replica conf-a, resumed")).await;
            assert_eq!(get(a.addr, "/gtg?details").await.unwrap().body, details, "{name}: the same replica, resumed");
            assert!(!a.has_exited(), "{name}: resumed, not restarted");
            driver.resume(&a).await.unwrap_or_else(|e| panic!("{name}: resuming a running replica: {e}"));
        }
    }

    // Drain: a polite stop lets the request in flight finish.
    let slow = {
        let addr = a.addr;
        tokio::task::spawn_blocking(move || http(addr, "GET", "/work?sleep_ms=1500", None))
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reason = driver.stop(&a, Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{name}: stop: {e}"));
    let slow = slow.await.unwrap().unwrap_or_else(|e| panic!("{name}: the request in flight was cut: {e}"));
    assert_eq!(slow.status, 200, "{name}: the request in flight finished");
    assert_eq!(reason, ExitReason::Exited(0), "{name}: the replica shut down cleanly on the stop signal");
    assert!(a.has_exited());
    // Another test's replica may get the freed port at once: what must not
    // answer there is this one.
    let after = get(a.addr, "/gtg?details").await;
    assert!(
        after.as_ref().map_or(true, |r| r.body != details),
        "{name}: conf-a still answers at {}: {after:?}",
        a.addr
    );
    assert!(!kind.left_behind(&a), "{name}: stop leaves nothing behind");
    assert!(
        std::fs::read_to_string(state.join("logs/conf-a.log")).unwrap().contains("listening on"),
        "{name}: output in the log"
    );

    // Adopt after a restart: a new driver instance finds the replica by the
    // state dir and service, takes it over, and stops it.
    let b = driver.start(&kind.spec(&state, "conf-b")).await.unwrap();
    wait_healthy(b.addr, &format!("{name} replica conf-b")).await;
    let restarted = kind.driver().await;
    let found = restarted.discover("conf", &state).await.unwrap();
    assert_eq!(found.len(), 1, "{name}: exactly the running replica is found: {found:?}");
    assert_eq!((found[0].replica_id.as_str(), found[0].version, found[0].addr), ("conf-b", 1, b.addr), "{name}");
    assert_eq!(found[0].handle, b.handle, "{name}");
    assert!(restarted.discover("other", &state).await.unwrap().is_empty(), "{name}: another service's are not ours");
    assert!(restarted.discover("conf", Path::new("/elsewhere")).await.unwrap().is_empty(), "{name}: nor another ebb's");
    let adopted = restarted.adopt(&found[0]).await.unwrap_or_else(|e| panic!("{name}: adopt: {e}"));
    assert_eq!(adopted.addr, b.addr);
    assert!(usage(&*restarted, &adopted, name).await.rss_bytes > 0, "{name}: usage of an adopted replica");
    let reason =
        restarted.stop(&adopted, Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{name}: stop adopted: {e}"));
    assert!(matches!(reason, ExitReason::Exited(0) | ExitReason::Unknown(_)), "{name}: {reason:?}");
    assert!(!kind.left_behind(&b), "{name}: the adopted replica is gone");
    let err = restarted.adopt(&found[0]).await.expect_err("a gone replica cannot be adopted").to_string();
    assert!(err.contains("conf-b"), "{name}: the error names the replica: {err}");

    // Survive a crash: the exit is observed with a reason, and stop still
    // cleans up.
    let c = driver.start(&kind.spec(&state, "conf-c")).await.unwrap();
    wait_healthy(c.addr, &format!("{name} replica conf-c")).await;
    kind.crash(&c);
    let reason = tokio::time::timeout(Duration::from_secs(15), c.exited())
        .await
        .unwrap_or_else(|_| panic!("{name}: crash not seen"));
    assert_eq!(reason, ExitReason::Signaled(9), "{name}: the crash is reported as SIGKILL");
    driver.stop(&c, Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("{name}: stop after a crash: {e}"));
    assert!(!kind.left_behind(&c), "{name}: the crashed replica is cleaned up");
    assert!(driver.usage(std::slice::from_ref(&c)).await.is_empty(), "{name}: no usage for a gone replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_driver_conforms() {
    conformance(Kind::Process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_driver_conforms() {
    let Some(image) = TestImage::build() else { return };
    conformance(Kind::Docker { image: image.tag.clone() }).await;
}

/// `ports = "A-B"` with the docker driver: each container is published on
/// a host port of the range (hosts whose firewall allows only some).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_publishes_on_a_configured_port_range() {
    let Some(image) = TestImage::build() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().canonicalize().unwrap();
    let kind = Kind::Docker { image: image.tag.clone() };
    let _cleanup = DockerLeftovers::for_state_dir(&kind, &state);
    let driver = kind.driver().await;
    let range = 24_310..=24_319;
    let mut started = Vec::new();
    for n in 0..2 {
        let mut spec = kind.spec(&state, &format!("conf-port{n}"));
        spec.ports = Some(range.clone());
        let replica = driver.start(&spec).await.expect("starts");
        assert!(range.contains(&replica.addr.port()), "{} published in {range:?}", replica.addr);
        wait_healthy(replica.addr, "a container on a configured port").await;
        started.push(replica);
    }
    assert_ne!(started[0].addr.port(), started[1].addr.port());
    for replica in &started {
        driver.stop(replica, Duration::from_secs(5)).await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_driver_names_the_service_and_replica_for_a_missing_image_and_leaves_nothing() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().canonicalize().unwrap();
    let kind = Kind::Docker { image: "ebb-test-no-such-image:never".into() };
    let _cleanup = DockerLeftovers::for_state_dir(&kind, &state);
    let driver = kind.driver().await;
    let err = driver.start(&kind.spec(&state, "conf-x")).await.expect_err("no such image").to_string();
    assert!(
        err.contains("service conf")
            && err.contains("replica conf-x")
            && err.contains("ebb-test-no-such-image:never")
            && err.contains("does not pull"),
        "{err}"
    );
    assert_eq!(containers_of(&state), Vec::<String>::new(), "nothing half-started is left");
}

/// Writes a config with one container service `api` (`driver`, `image`,
/// balancer on `listen`) and runs `ebb up` once with `env`: it must refuse.
/// Returns the test's directory (the state dir is `state` in it) and what
/// ebb printed on stderr.
fn refused_up(driver: &str, image: &str, listen: u16, env: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.toml");
    let admin = free_port();
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[service.api]\ndriver = \"{driver}\"\nimage = \"{image}\"\nlisten = \"127.0.0.1:{listen}\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(EBB).arg("-f").arg(&config).arg("up").envs(env.iter().copied()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    (dir, stderr)
}

/// `ebb up` with a docker service and no engine: a clear error naming the
/// service, before anything starts. Needs no engine at all.
#[test]
fn up_with_an_unreachable_engine_fails_before_starting_anything() {
    let nowhere = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/no-docker.sock", nowhere.path().display());
    let (dir, stderr) = refused_up("docker", "ebb-demo:latest", free_port(), &[("DOCKER_HOST", &host)]);
    assert!(
        stderr.contains("service api") && stderr.contains("needs Docker") && stderr.contains("is Docker running"),
        "{stderr}"
    );
    assert!(!dir.path().join("state/logs").read_dir().unwrap().any(|_| true), "no replica was started");
}

/// `ebb up` with a docker service whose balancer port is taken: the error
/// names the service and the cause at its `listen` key, before any
/// container starts. (Replicas' own ports are picked by the engine and
/// never clash.)
#[test]
fn up_with_a_port_clash_names_the_service_before_starting_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (dir, stderr) = refused_up("docker", "ebb-demo:latest", taken.local_addr().unwrap().port(), &[]);
    assert!(stderr.contains("[service.api] cannot listen on") && stderr.contains("ebb.toml:7:"), "{stderr}");
    if docker_available() {
        assert_eq!(containers_of(&dir.path().join("state").canonicalize().unwrap()), Vec::<String>::new());
    }
}

/// `ebb up` with a swarm service on an engine in no swarm: says how to make
/// one, before anything starts.
#[test]
fn up_with_a_swarm_service_and_no_swarm_says_to_init_one() {
    if !docker_available() {
        return;
    }
    let _swarm = SWARM.lock().unwrap_or_else(|p| p.into_inner());
    let state = Command::new("docker").args(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output().unwrap();
    if String::from_utf8_lossy(&state.stdout).trim() != "inactive" {
        println!("SKIP: this engine is in a swarm (or joining one); nothing to check here");
        return;
    }
    let (_dir, stderr) = refused_up("swarm", "ebb-demo:latest", free_port(), &[]);
    assert!(
        stderr.contains("service api (driver = \"swarm\") needs a swarm") && stderr.contains("docker swarm init"),
        "{stderr}"
    );
}

/// `ebb up` with a docker service whose image is not on the engine.
#[test]
fn up_with_a_missing_image_names_the_service_before_starting_anything() {
    if !docker_available() {
        return;
    }
    let (dir, stderr) = refused_up("docker", "ebb-test-no-such-image:never", free_port(), &[]);
    assert!(
        stderr.contains("service api")
            && stderr.contains("ebb-test-no-such-image:never")
            && stderr.contains("build-image"),
        "{stderr}"
    );
    assert_eq!(containers_of(&dir.path().join("state").canonicalize().unwrap()), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// End to end: story S2 on containers scales out under `ebb load` and back in.
// ---------------------------------------------------------------------------

/// The end-to-end runs keep the machine busy on purpose: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// S2's target tracking (CPU 80 % of `cpus = 0.25`) on the given example:
/// a rising `ebb load` adds replicas with no failed request; once the load
/// stops, the fleet shrinks back to one.
fn s2_scales_out_and_back_in(path: &str, image: &str, leftovers: impl Fn(&Path) -> Vec<String>) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut ebb = Ebb::start(|admin, listen| example_config(path, Some(image), admin, listen));
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _cleanup = DockerLeftovers { state_dir: Some(state.clone()) };
    ebb.wait_in_service(1, Duration::from_secs(60));
    let out = Command::new(EBB)
        .args(["load", &format!("http://{}/work?cpu_ms=5", ebb.listen)])
        .args(["--stages", "6s:5->120,16s:120", "--timeout", "10s", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"], 0, "no request failed: {summary}\n{}", ebb.up_log());
    let scaled: Vec<serde_json::Value> = ebb.events().into_iter().filter(|e| e["kind"] == "scaled").collect();
    let peak = scaled.iter().filter_map(|e| e["to"].as_u64()).max().unwrap_or(1);
    // 120 req/s × 5 ms is 0.6 cores: 3 replicas at 80 % of 0.25, when the
    // load generator gets its share of a busy 2-core machine; at least one
    // addition whatever the machine.
    assert!(peak >= 2, "the fleet grew under load: {scaled:#?}");
    assert!(scaled.iter().all(|e| e["reason"].as_str().unwrap_or("").contains("cpu-80")), "{scaled:#?}");
    // Scale-in waits for its stabilization window, so the grown fleet is
    // still there: one container (or task) per replica.
    let running = leftovers(&state);
    assert!(running.len() >= 2, "the replicas are containers: {running:?}");

    // Back in: the load is gone, CPU falls, and the fleet returns to min.
    wait_for("the fleet to scale back in to 1", Duration::from_secs(60), || {
        let status = ebb.status();
        (status["services"][0]["desired"] == 1 && ebb.replicas().len() == 1).then_some(())
    });
    let events = ebb.events();
    assert!(
        events.iter().any(|e| e["kind"] == "scaled" && e["to"].as_u64() < e["from"].as_u64()),
        "scale-in was an event"
    );
    wait_for("the retired replicas' containers to be removed", Duration::from_secs(30), || {
        (leftovers(&state).len() == 1).then_some(())
    });
    // A clean `ebb down`, waited for: on a busy machine Swarm may take a
    // while to settle before ebb deletes its service (the guard's drop
    // would SIGKILL ebb after 20 s and leave the service behind).
    stop_cleanly(&mut ebb);
    wait_for("ebb down to remove every container", Duration::from_secs(30), || {
        leftovers(&state).is_empty().then_some(())
    });
}

/// `ebb down`, then waits (up to a minute) for `ebb up` to exit.
fn stop_cleanly(ebb: &mut Ebb) {
    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "ebb down: {}", String::from_utf8_lossy(&out.stderr));
    ebb.wait_exit(Duration::from_secs(60));
}

#[test]
fn s2_on_the_docker_driver_scales_out_under_ebb_load_and_back_in() {
    let Some(image) = TestImage::build() else { return };
    s2_scales_out_and_back_in("examples/docker/ebb.fast.toml", &image.tag, containers_of);
}

/// After `kill -9` of `ebb up`, a new `ebb up` adopts the running
/// containers (same ids, nothing started twice) and keeps serving.
#[test]
fn after_kill_9_ebb_adopts_its_docker_containers() {
    let Some(image) = TestImage::build() else { return };
    adopts_after_kill_9("examples/docker/ebb.fast.toml", &image.tag, true);
}

/// Runs `path` with `image`, scales to 2, kills `ebb up` with SIGKILL,
/// starts it again: the same replicas and containers, adopted. With
/// `self_protecting`, a container protects itself before the kill and lifts
/// it after, through the replica gate.
fn adopts_after_kill_9(path: &str, image: &str, self_protecting: bool) {
    let mut ebb = Ebb::start(|admin, listen| example_config(path, Some(image), admin, listen));
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _cleanup = DockerLeftovers { state_dir: Some(state.clone()) };
    ebb.wait_in_service(1, Duration::from_secs(60));
    assert_eq!(ebb.admin_call("PUT", "/api/v1/services/api/desired", Some(r#"{"desired": 2}"#)).status, 200);
    let before = ebb.wait_in_service(2, Duration::from_secs(60));
    let mut containers = containers_of(&state);
    containers.sort();
    assert_eq!(containers.len(), 2, "{containers:?}");

    // A docker replica protects itself from inside its container, through
    // the replica gate its EBB_ADMIN_URL names.
    let first = before[0]["id"].as_str().unwrap().to_string();
    if self_protecting {
        assert_eq!(protect_from_inside(&first, &first, true), 200, "{}", ebb.up_log());
        assert_eq!(ebb.replicas().iter().find(|r| r["id"] == first.as_str()).unwrap()["protected"], true);
    }

    ebb.kill_up();
    ebb.restart_up();
    let after = ebb.wait_in_service(2, Duration::from_secs(60));
    let ids = |rs: &[serde_json::Value]| {
        let mut ids: Vec<String> = rs.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before), "the same replicas, adopted");
    let mut again = containers_of(&state);
    again.sort();
    assert_eq!(again, containers, "the same containers: none started, none left behind");
    let adopted = ebb.events().iter().filter(|e| e["kind"] == "replica_adopted").count();
    assert_eq!(adopted, 2, "{:#?}", ebb.events());
    for _ in 0..20 {
        assert_eq!(http(ebb.listen, "GET", "/gtg", None).unwrap().status, 200);
    }
    if self_protecting {
        // The protection survived the restart, and the adopted container's
        // URL still reaches the new ebb: it lifts its own protection.
        let protected = |id: &str| ebb.replicas().iter().find(|r| r["id"] == id).unwrap()["protected"].clone();
        assert_eq!(protected(&first), true);
        assert_eq!(protect_from_inside(&first, &first, false), 200, "{}", ebb.up_log());
        assert_eq!(protected(&first), false);
        // Its token protects nothing else, and the gate serves nothing else.
        let other = after.iter().map(|r| r["id"].as_str().unwrap()).find(|id| *id != first).unwrap().to_string();
        assert_eq!(protect_from_inside(&first, &other, true), 401);
        assert_eq!(protected(&other), false);
        let (url, _) = replica_admin_env(&first);
        assert!(!url.contains("127.0.0.1"), "a container cannot dial the host's loopback: {url}");
        let gate: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        let admin_token = format!("Bearer {}", ebb.token());
        let status =
            http_with_headers(gate, "GET", "/api/v1/status", None, &[("Authorization", &admin_token)]).unwrap();
        assert_eq!(status.status, 401, "the gate serves nothing else, not even to the admin token: {}", status.body);
        let body = r#"{"protected": true}"#;
        let path = format!("/api/v1/replicas/{other}/protect");
        let with_admin =
            http_with_headers(gate, "POST", &path, Some(body), &[("Authorization", &admin_token)]).unwrap();
        assert_eq!(with_admin.status, 401, "the admin token is no use at the gate: {}", with_admin.body);
    }
    stop_cleanly(&mut ebb);
    // Swarm removes a task's container on its own after ebb deletes the
    // service (the Docker driver removes it before `ebb down` returns).
    wait_for("ebb down to remove the adopted containers", Duration::from_secs(30), || {
        containers_of(&state).is_empty().then_some(())
    });
}

/// A container that died while ebb was down is reported, replaced, and
/// its stopped container removed: nothing is left behind.
#[test]
fn a_container_that_died_while_ebb_was_down_is_replaced_and_removed() {
    let Some(image) = TestImage::build() else { return };
    let mut ebb =
        Ebb::start(|admin, listen| example_config("examples/docker/ebb.fast.toml", Some(&image.tag), admin, listen));
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _cleanup = DockerLeftovers { state_dir: Some(state.clone()) };
    let before = ebb.wait_in_service(1, Duration::from_secs(60));
    let dead = before[0]["id"].as_str().unwrap().to_string();
    ebb.kill_up();
    let out = Command::new("docker").args(["kill", &format!("ebb-{dead}")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ebb.restart_up();
    let after = ebb.wait_in_service(1, Duration::from_secs(60));
    assert_ne!(after[0]["id"], dead.as_str(), "replaced");
    assert!(
        ebb.events().iter().any(|e| e["kind"] == "replica_exited" && e["replica"] == dead.as_str()),
        "{:#?}",
        ebb.events()
    );
    assert_eq!(containers_of(&state).len(), 1, "the dead container was removed, only the new one is left");
    stop_cleanly(&mut ebb);
    assert!(containers_of(&state).is_empty());
}

/// A deploy with a new image is a new version: a rolling deploy replaces
/// every container with one of the new tag, with no failed request.
#[test]
fn a_docker_deploy_with_a_new_image_replaces_every_container_with_no_failed_request() {
    let Some(image) = TestImage::build() else { return };
    deploy_with_a_new_image("docker", &image);
}

fn deploy_with_a_new_image(driver: &str, image: &TestImage) {
    let v2 = format!("{}-v2", image.tag.trim_end_matches(":latest")) + ":v2";
    let out = Command::new("docker").args(["tag", &image.tag, &v2]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _v2 = TestImage { tag: v2.clone() };
    let mut ebb = Ebb::start(|admin, listen| {
        format!(
            r#"state_dir = "state"
[admin]
listen = "{admin}"

[service.web]
driver = "{driver}"
image = "{}"
listen = "{listen}"
replicas = {{ min = 1, max = 4, desired = 2 }}
stop_timeout = "2s"
drain_timeout = "2s"

[service.web.health]
path = "/gtg"
interval = "200ms"
timeout = "150ms"
healthy_threshold = 2
unhealthy_threshold = 2

[service.web.deploy]
strategy = "rolling"
deploy_timeout = "30s"
bake_time = "1s"
"#,
            image.tag
        )
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _cleanup = DockerLeftovers { state_dir: Some(state.clone()) };
    ebb.wait_in_service(2, Duration::from_secs(60));
    let load = Load::start(ebb.listen, 2, "/gtg?details", Duration::from_millis(5));
    let out = ebb.cli(&["deploy", "web", "--image", &v2]);
    let (sent, failures) = load.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), ebb.up_log());
    assert!(stdout.contains("now on v2"), "{stdout}");
    assert!(sent > 20 && failures.is_empty(), "{} of {sent} requests failed: {failures:?}", failures.len());
    let replicas = ebb.wait_in_service(2, Duration::from_secs(30));
    assert!(replicas.iter().all(|r| r["version"] == 2), "{replicas:#?}");
    let out = Command::new("docker")
        .args(["ps", "--format", "{{.Image}} {{.Label \"ebb.version\"}}"])
        .args(["--filter", &format!("label=ebb.state_dir={}", state.display())])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&out.stdout);
    assert_eq!(running.lines().count(), 2, "{running}");
    assert!(
        running.lines().all(|l| l.starts_with(&v2) && l.ends_with(" 2")),
        "every container runs the new image as v2: {running}"
    );
    if driver == "swarm" {
        wait_for("only the v2 Swarm services to be left", Duration::from_secs(30), || {
            let out = Command::new("docker")
                .args(["service", "ls", "--format", "{{.Name}}"])
                .args(["--filter", &format!("label=ebb.state_dir={}", state.display())])
                .output()
                .unwrap();
            let names = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // One Swarm service per replica: two, both of v2.
            (names.lines().count() == 2 && names.lines().all(|n| n.starts_with("ebb-web-v2-"))).then_some(())
        });
    }
    // A bad image reference is refused, naming why.
    let refused = ebb.admin_call("POST", "/api/v1/services/web/deploy", Some(r#"{"image": "has space"}"#));
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("not an image reference"), "{}", refused.body);
    stop_cleanly(&mut ebb);
}

#[test]
fn deploy_image_is_refused_for_a_process_service() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ desired = 1 }", ""));
    ebb.wait_in_service(1, Duration::from_secs(30));
    let out = ebb.cli(&["deploy", "web", "--image", "ebb-demo:v2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--image applies to services with driver"), "{stderr}");
}

/// The swarm driver: the conformance suite and S2, on a single-node swarm
/// this test creates (`docker swarm init --advertise-addr 127.0.0.1`) and
/// leaves as it found it. One test, so the swarm is made and left once.
#[test]
fn swarm_driver_conforms_and_s2_scales_out_and_back_in_on_it() {
    let Some(image) = TestImage::build() else { return };
    let _swarm = SWARM.lock().unwrap_or_else(|p| p.into_inner());
    let swarm = match SwarmMode::enter() {
        Ok(swarm) => swarm,
        Err(refused) => {
            println!("SKIP: this engine refuses swarm mode: {refused}");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(conformance(Kind::Swarm { image: image.tag.clone() }));
    drop(runtime);
    // Swarm tasks share one environment: no per-replica token (docs/swarm.md).
    adopts_after_kill_9("examples/docker/ebb.swarm.toml", &image.tag, false);
    // A new image is a new version, hence a new Swarm service; the old
    // version's service goes once its last task has.
    deploy_with_a_new_image("swarm", &image);
    s2_scales_out_and_back_in("examples/docker/ebb.swarm.toml", &image.tag, containers_of);
    // Every Swarm service ebb made is gone.
    let out = Command::new("docker").args(["service", "ls", "-q", "--filter", "label=ebb.service"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "no Swarm service left behind");
    drop(swarm);
}

// ---------------------------------------------------------------------------
// Docker test fixtures.
// ---------------------------------------------------------------------------

/// A docker replica's `EBB_ADMIN_URL` and `EBB_REPLICA_TOKEN`, as its
/// container was created with them.
fn replica_admin_env(replica: &str) -> (String, String) {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Env}}", &format!("ebb-{replica}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    let var = |name: &str| {
        env.iter()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{name} in {env:?}"))
            .to_string()
    };
    (var("EBB_ADMIN_URL"), var("EBB_REPLICA_TOKEN"))
}

/// From inside replica `inside`'s container (its network, its environment's
/// URL and token), sets the protection of replica `target`; the HTTP status
/// ebb answered. The image has no curl: `ebb load -n 1` sends the call.
fn protect_from_inside(inside: &str, target: &str, protected: bool) -> u16 {
    let (url, token) = replica_admin_env(inside);
    let out = Command::new("docker")
        .args(["exec", &format!("ebb-{inside}"), "/ebb", "load", "-n", "1", "-c", "1", "--json", "-m", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}"), "-T", "application/json"])
        .args(["-d", &format!(r#"{{"protected": {protected}}}"#), &format!("{url}/api/v1/replicas/{target}/protect")])
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    let codes = summary["status_codes"].as_object().unwrap_or_else(|| panic!("no answer from {url}: {summary}"));
    assert_eq!(codes.len(), 1, "{summary}");
    codes.keys().next().unwrap().parse().unwrap()
}

impl DockerLeftovers {
    fn for_state_dir(kind: &Kind, state_dir: &Path) -> Self {
        Self { state_dir: (!matches!(kind, Kind::Process)).then(|| state_dir.to_path_buf()) }
    }
}

/// Scale to zero's `suspend` mode on containers: idle, the container is
/// paused (`docker pause`); a request thaws the same container and is
/// served, with `ebb-cold-start`.
#[test]
fn an_idle_docker_service_pauses_its_container_and_a_request_thaws_the_same_one() {
    let Some(image) = TestImage::build() else { return };
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut ebb = Ebb::start(|admin, listen| {
        let config = example_config("examples/docker/ebb.fast.toml", Some(&image.tag), admin, listen)
            .replace("replicas = { min = 1, max = 20, desired = 1 }", "replicas = { min = 0, max = 20, desired = 1 }");
        format!("{config}\n[service.api.idle]\nafter = \"2s\"\nmode = \"suspend\"\n")
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _cleanup = DockerLeftovers { state_dir: Some(state.clone()) };
    ebb.wait_in_service(1, Duration::from_secs(60));
    let containers = containers_of(&state);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let paused = |id: &str| {
        let out = Command::new("docker").args(["inspect", "-f", "{{.State.Paused}}", id]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    };
    wait_for("the container paused", Duration::from_secs(30), || paused(&containers[0]).then_some(()));
    let idle = ebb.status()["services"][0]["idle"].as_str().unwrap_or_default().to_string();
    assert!(idle.starts_with("idle (suspended 1 replicas"), "{idle}");

    let r = http(ebb.listen, "GET", "/api", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", ebb.up_log());
    assert!(r.header("ebb-cold-start").is_some(), "{r:?}");
    assert!(!paused(&containers[0]), "thawed");
    assert_eq!(containers_of(&state), containers, "the same container");
    let started = ebb.events().into_iter().filter(|e| e["kind"] == "replica_started").count();
    assert_eq!(started, 1, "never restarted");
    stop_cleanly(&mut ebb);
    assert!(containers_of(&state).is_empty(), "ebb down removes it");
}

/// The warm pool on containers: a member is a paused container beside the
/// fleet (never routed, not in service); `ebb scale` unpauses that same
/// container instead of starting one, and the pool refills with a new
/// paused container. `ebb down` removes them all, the paused one too.
#[test]
fn a_docker_warm_pool_member_is_a_paused_container_that_a_scale_out_unpauses() {
    let Some(image) = TestImage::build() else { return };
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut ebb = Ebb::start(|admin, listen| {
        let config = example_config("examples/docker/ebb.fast.toml", Some(&image.tag), admin, listen);
        format!("{config}\n[service.api.warm_pool]\nsize = 1\n")
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _cleanup = DockerLeftovers { state_dir: Some(state.clone()) };
    let paused = |id: &str| {
        let out = Command::new("docker").args(["inspect", "-f", "{{.State.Paused}}", id]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    };
    // One in service, one paused beside it.
    let settled = |fleet: usize, total: usize| {
        wait_for(&format!("{fleet} in service and a paused pool member"), Duration::from_secs(90), || {
            let service = ebb.status()["services"][0].clone();
            let containers = containers_of(&state);
            let frozen: Vec<String> = containers.iter().filter(|c| paused(c)).cloned().collect();
            (service["in_service"] == fleet
                && service["warm_pool"] == "warm pool: 1 suspended (size 1)"
                && containers.len() == total
                && frozen.len() == 1)
                .then(|| (containers.clone(), frozen[0].clone()))
        })
    };
    let (before, warm) = settled(1, 2);
    let member = ebb.replicas().into_iter().find(|r| r["pooled"] == true).expect("a pool member");

    let out = ebb.cli(&["scale", "api", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the pool member in service", Duration::from_secs(10), || {
        ebb.replicas().into_iter().find(|r| r["id"] == member["id"] && r["pooled"] == false && r["healthy"] == true)
    });
    assert!(!paused(&warm), "unpaused");
    let (after, refill) = settled(2, 3);
    assert!(before.iter().all(|c| after.contains(c)), "the same containers: {before:?} then {after:?}");
    assert_ne!(refill, warm, "the pool refilled with a new container");
    let started = ebb.events().into_iter().filter(|e| e["kind"] == "replica_started").count();
    assert_eq!(started, 3, "the fleet's, the pool's, the refill: none for the scale-out");
    stop_cleanly(&mut ebb);
    assert!(containers_of(&state).is_empty(), "ebb down removes every container, the paused one too");
}
