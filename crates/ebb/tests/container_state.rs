//! Containers with `mounts`, `networks`, `user`, `labels` and (Swarm)
//! `placement`, on a real Docker engine; and story S1 through ebb on docker
//! replicas that share one store through a mount.
//!
//! Every test prints `SKIP:` and returns when `docker info` fails. Images,
//! containers, networks, volumes and the swarm a test made are removed by
//! guards, also when it fails.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ebb::driver::{ContainerSpec, DockerDriver, Driver, Engine, ReplicaSpec, SwarmDriver};
use ebb_core::config::{CommandSpec, ContainerOptions, Mount, MountKind, Placement};
use support::*;

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes a network or a volume when dropped (declare it before the
/// containers' guard: it must go after them).
struct Removed {
    what: &'static str,
    name: String,
}

impl Removed {
    fn network(driver: &str, name: String) -> Removed {
        docker(&["network", "create", "--driver", driver, "--attachable", &name]);
        Removed { what: "network", name }
    }

    fn volume(name: String) -> Removed {
        Removed { what: "volume", name }
    }
}

impl Drop for Removed {
    fn drop(&mut self) {
        let args: &[&str] = match self.what {
            "volume" => &["volume", "rm", "-f", &self.name],
            _ => &["network", "rm", &self.name],
        };
        // A container Swarm is still removing holds it for a moment.
        for _ in 0..40 {
            let out = Command::new("docker").args(args).output();
            let gone = out.is_ok_and(|o| o.status.success() || String::from_utf8_lossy(&o.stderr).contains("No such"));
            if gone {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn spec(state: &Path, replica: &str, image: &str, options: ContainerOptions) -> ReplicaSpec {
    ReplicaSpec {
        service: "opts".into(),
        replica_id: replica.into(),
        version: 1,
        command: CommandSpec::Argv(Vec::new()),
        env: BTreeMap::new(),
        state_dir: state.to_path_buf(),
        log_path: state.join("logs").join(format!("{replica}.log")),
        container: Some(ContainerSpec {
            image: image.into(),
            container_port: 8080,
            cpus: None,
            memory: Some(256 << 20),
            stop_timeout: Duration::from_secs(2),
            options,
        }),
        ports: None,
        limits: None,
    }
}

fn mount(kind: MountKind, source: Option<&str>, target: &str, read_only: bool) -> Mount {
    Mount { kind, source: source.map(String::from), target: target.into(), read_only }
}

async fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = tokio::task::spawn_blocking(move || http(addr, "GET", "/gtg", None)).await.unwrap();
        if ok.is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never passed its health check");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `docker inspect` says of a container, as JSON.
fn inspect(kind: &str, id: &str) -> serde_json::Value {
    let text = docker(&[kind, "inspect", id]);
    serde_json::from_str::<serde_json::Value>(&text).unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_mounts_networks_user_and_labels_reach_the_container() {
    let Some(image) = TestImage::build() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().canonicalize().unwrap();
    let shared = state.join("shared");
    std::fs::create_dir(&shared).unwrap();
    let front = Removed::network("bridge", unique("ebb-test-front"));
    let back = Removed::network("bridge", unique("ebb-test-back"));
    let volume = Removed::volume(unique("ebb-test-vol"));
    let _containers = DockerLeftovers { state_dir: Some(state.clone()) };
    let options = ContainerOptions {
        mounts: vec![
            mount(MountKind::Bind, Some(shared.to_str().unwrap()), "/shared", true),
            mount(MountKind::Volume, Some(&volume.name), "/vol", false),
            mount(MountKind::Tmpfs, None, "/scratch", false),
        ],
        networks: vec![front.name.clone(), back.name.clone()],
        user: Some("1000:1000".into()),
        labels: BTreeMap::from([("app.team".into(), "search".into())]),
        placement: Placement::default(),
    };
    let driver = DockerDriver::new(Engine::connect().await.expect("the engine answers"));
    let replica = driver.start(&spec(&state, "opts-a", &image.tag, options)).await.expect("starts");
    // Published on loopback as without networks: the balancer reaches it.
    wait_healthy(replica.addr).await;

    let c = inspect("container", "ebb-opts-a");
    assert_eq!(c["Config"]["User"], "1000:1000");
    assert_eq!(c["Config"]["Labels"]["app.team"], "search");
    assert_eq!(c["Config"]["Labels"]["ebb.replica"], "opts-a", "ebb's own labels stay");
    let networks = c["NetworkSettings"]["Networks"].as_object().unwrap();
    let mut joined: Vec<&String> = networks.keys().collect();
    joined.sort();
    let mut wanted = vec![&front.name, &back.name];
    wanted.sort();
    assert_eq!(joined, wanted, "both networks, and not the default bridge");
    let mounts: Vec<(String, String, String, bool)> = c["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let source = match m["Type"].as_str() {
                Some("volume") => m["Name"].as_str().unwrap_or_default().to_string(),
                _ => m["Source"].as_str().unwrap_or_default().to_string(),
            };
            (m["Type"].as_str().unwrap().into(), source, m["Destination"].as_str().unwrap().into(), m["RW"] == true)
        })
        .collect();
    for wanted in [
        ("bind".to_string(), shared.display().to_string(), "/shared".to_string(), false),
        ("volume".into(), volume.name.clone(), "/vol".into(), true),
    ] {
        assert!(mounts.contains(&wanted), "{wanted:?} in {mounts:?}");
    }
    assert_eq!(c["HostConfig"]["Mounts"][2]["Type"], "tmpfs", "{}", c["HostConfig"]["Mounts"]);
    // The app really runs as 1000 (the engine's view of its processes).
    let top = docker(&["top", "ebb-opts-a", "-o", "pid,uid"]);
    let uids: Vec<&str> = top.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert!(!uids.is_empty() && uids.iter().all(|u| *u == "1000"), "{top}");

    driver.stop(&replica, Duration::from_secs(5)).await.expect("stops");
    assert!(containers_of(&state).is_empty(), "removed");
}

/// The engine's own refusals come back naming the service, the replica and
/// the cause, and leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_names_the_replica_for_a_missing_network_or_bind_source() {
    let Some(image) = TestImage::build() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().canonicalize().unwrap();
    let _containers = DockerLeftovers { state_dir: Some(state.clone()) };
    let driver = DockerDriver::new(Engine::connect().await.expect("the engine answers"));

    let options = ContainerOptions { networks: vec!["ebb-test-no-such-network".into()], ..Default::default() };
    let err = driver.start(&spec(&state, "opts-n", &image.tag, options)).await.expect_err("no network").to_string();
    assert!(
        err.contains("service opts, replica opts-n")
            && err.contains("ebb-test-no-such-network")
            && err.contains("not found")
            && err.contains("docker network create"),
        "{err}"
    );

    let missing = state.join("not-there");
    let options = ContainerOptions {
        mounts: vec![mount(MountKind::Bind, Some(missing.to_str().unwrap()), "/data", false)],
        ..Default::default()
    };
    let err = driver.start(&spec(&state, "opts-m", &image.tag, options)).await.expect_err("no source").to_string();
    assert!(err.contains("service opts, replica opts-m") && err.contains(&missing.display().to_string()), "{err}");
    assert!(containers_of(&state).is_empty(), "nothing half-started is left");
}

/// `ebb up` with a network that is not on the engine: refused before any
/// container starts, naming the service, the network and how to make it.
#[test]
fn up_with_a_missing_network_names_it_before_starting_anything() {
    let Some(image) = TestImage::build() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n[service.api]\ndriver = \"docker\"\nimage = \"{}\"\nnetworks = [\"ebb-test-no-such-net\"]\nlisten = \"127.0.0.1:{}\"\n",
            free_port(),
            image.tag,
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(EBB).arg("-f").arg(&config).arg("up").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("service api")
            && stderr.contains("network \"ebb-test-no-such-net\" is not on the Docker engine")
            && stderr.contains("docker network create ebb-test-no-such-net"),
        "{stderr}"
    );
    assert_eq!(containers_of(&dir.path().join("state").canonicalize().unwrap()), Vec::<String>::new());
}

/// Story S1's client through ebb, on two docker replicas that mount one
/// volume (`examples/docker/ebb.s1.toml`): each round runs the story's four
/// checks through ebb (good to go, insert, verification, candidate list),
/// and every candidate inserted is also read back from EACH container
/// directly (their addresses from the status API). Names are also POSTed to one
/// container and read from the other, both ways, so the check does not
/// depend on which container the balancer picks.
///
/// Checked to fail without the mount: with the `mounts` line removed from
/// the example, the first direct read from the other container answered
/// 404 (each container kept its own /tmp/ebb-demo.sqlite).
#[test]
fn s1_client_passes_through_ebb_against_docker_replicas_sharing_a_mount() {
    let Some(image) = TestImage::build() else { return };
    let volume = Removed::volume(unique("ebb-test-s1"));
    let mut ebb = Ebb::start(|admin, listen| {
        example_config("examples/docker/ebb.s1.toml", Some(&image.tag), admin, listen)
            .replace("\"ebb-demo-s1:/data\"", &format!("\"{}:/data\"", volume.name))
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _containers = DockerLeftovers { state_dir: Some(state.clone()) };
    let replicas = ebb.wait_in_service(2, Duration::from_secs(60));
    let direct: Vec<SocketAddr> = replicas
        .iter()
        .map(|r| SocketAddr::from(([127, 0, 0, 1], r["port"].as_u64().expect("a published port") as u16)))
        .collect();
    assert_ne!(direct[0], direct[1]);

    let log = || ebb.up_log();
    let read = |addr: SocketAddr, name: &str| support::s1::read_candidate(addr, name, &log);
    let (_, answered) = support::s1::client_rounds(ebb.listen, &direct, 20, &log);
    assert_eq!(answered.len(), 2, "both containers answered through ebb: {answered:?}");
    for (from, to) in [(direct[0], direct[1]), (direct[1], direct[0])] {
        let name = format!("direct-{}", from.port());
        assert_eq!(http(from, "POST", &format!("/candidate/{name}"), None).unwrap().status, 200);
        read(to, &name);
    }
    let all = http(ebb.listen, "GET", "/candidates", None).unwrap().json();
    assert_eq!(all.as_array().map(Vec::len), Some(22), "{all}");

    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "ebb down: {}", String::from_utf8_lossy(&out.stderr));
    ebb.wait_exit(Duration::from_secs(60));
    assert!(containers_of(&state).is_empty());
}

/// `ebb apply` with new labels and a new mount on a docker service: a
/// rolling deploy (a new version), after which every container is of v2
/// and carries them; the plan named it a deploy first.
#[test]
fn apply_with_new_labels_and_mounts_deploys_containers_that_carry_them() {
    let Some(image) = TestImage::build() else { return };
    let volume = Removed::volume(unique("ebb-test-apply"));
    let mut ebb = Ebb::start(|admin, listen| {
        format!(
            "state_dir = \"state\"\n[admin]\nlisten = \"{admin}\"\n[service.web]\ndriver = \"docker\"\nimage = \"{}\"\nlisten = \"{listen}\"\nreplicas = {{ min = 2, max = 2, desired = 2 }}\nstop_timeout = \"2s\"\ndrain_timeout = \"1s\"\n[service.web.health]\npath = \"/gtg\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nhealthy_threshold = 2\n",
            image.tag
        )
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let _containers = DockerLeftovers { state_dir: Some(state.clone()) };
    ebb.wait_in_service(2, Duration::from_secs(60));
    let text = std::fs::read_to_string(&ebb.config).unwrap().replace(
        "stop_timeout",
        &format!("labels = {{ team = \"search\" }}\nmounts = [\"{}:/data\"]\nstop_timeout", volume.name),
    );
    std::fs::write(&ebb.config, text).unwrap();
    let plan = ebb.cli(&["plan"]);
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains("~ web: labels.team (unset) -> \"search\" (rolling deploy, 2 replicas replaced)"),
        "{plan_text}"
    );
    let out = ebb.cli(&["apply", "--yes"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), ebb.up_log());
    wait_for("two v2 replicas in service", Duration::from_secs(60), || {
        let replicas = ebb.wait_in_service(2, Duration::from_secs(60));
        replicas.iter().all(|r| r["version"] == 2).then_some(())
    });
    wait_for("only v2 containers", Duration::from_secs(30), || (containers_of(&state).len() == 2).then_some(()));
    for id in containers_of(&state) {
        let c = inspect("container", &id);
        assert_eq!(c["Config"]["Labels"]["team"], "search");
        assert_eq!(c["Config"]["Labels"]["ebb.version"], "2");
        assert_eq!(c["Mounts"][0]["Name"], volume.name.as_str(), "{}", c["Mounts"]);
    }
    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "ebb down: {}", String::from_utf8_lossy(&out.stderr));
    ebb.wait_exit(Duration::from_secs(60));
}

/// The swarm driver puts mounts, networks, user, labels and placement in
/// each replica's Swarm service (on a single-node swarm this test joins
/// and leaves): the file's constraints, then the spread's pin to the
/// least-used value (the choice itself is unit-tested in driver/spread.rs);
/// a missing network is an error naming the service and replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_services_carry_mounts_networks_user_labels_and_placement() {
    let Some(image) = TestImage::build() else { return };
    let swarm = match SwarmMode::enter() {
        Ok(swarm) => swarm,
        Err(refused) => {
            println!("SKIP: this engine refuses swarm mode: {refused}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().canonicalize().unwrap();
    let overlay = Removed::network("overlay", unique("ebb-test-ovl"));
    let volume = Removed::volume(unique("ebb-test-svol"));
    let _services = SwarmServices { state_dir: state.clone() };
    // A zone label on this node: the spread pins the replica to its value.
    let zone = NodeLabel::add("ebbtestzone", "z1");
    let options = ContainerOptions {
        mounts: vec![mount(MountKind::Volume, Some(&volume.name), "/vol", true)],
        networks: vec![overlay.name.clone()],
        user: Some("1000".into()),
        labels: BTreeMap::from([("app.team".into(), "search".into())]),
        placement: Placement {
            spread: Some("node.labels.ebbtestzone".into()),
            constraints: vec!["node.role==manager".into()],
        },
    };
    let driver = SwarmDriver::new(Engine::connect().await.expect("the engine answers")).await.expect("a manager");
    let replica = driver.start(&spec(&state, "opts-s", &image.tag, options)).await.expect("starts");
    wait_healthy(replica.addr).await;
    let ebb::driver::ReplicaHandle::Swarm { service, .. } = &replica.handle else { panic!("{:?}", replica.handle) };
    let s = inspect("service", service);
    let task = &s["Spec"]["TaskTemplate"];
    // The file's constraint, then ebb's pin to the least-used zone.
    assert_eq!(
        task["Placement"]["Constraints"],
        serde_json::json!(["node.role==manager", "node.labels.ebbtestzone==z1"])
    );
    assert_eq!(task["Placement"]["Preferences"][0]["Spread"]["SpreadDescriptor"], "node.labels.ebbtestzone");
    assert_eq!(task["ContainerSpec"]["User"], "1000");
    assert_eq!(task["ContainerSpec"]["Labels"]["app.team"], "search");
    assert_eq!(task["ContainerSpec"]["Mounts"][0]["Source"], volume.name.as_str());
    assert_eq!(task["ContainerSpec"]["Mounts"][0]["ReadOnly"], true);
    let network_id = docker(&["network", "inspect", "-f", "{{.Id}}", &overlay.name]);
    let target = task["Networks"][0]["Target"].as_str().unwrap_or_default();
    assert!(target == network_id || target == overlay.name, "{}", task["Networks"]);
    assert_eq!(s["Spec"]["Labels"]["ebb.replica"], "opts-s");
    driver.stop(&replica, Duration::from_secs(5)).await.expect("stops");

    let options = ContainerOptions { networks: vec!["ebb-test-no-such-overlay".into()], ..Default::default() };
    let err = driver.start(&spec(&state, "opts-t", &image.tag, options)).await.expect_err("no network").to_string();
    assert!(err.contains("service opts, replica opts-t") && err.contains("ebb-test-no-such-overlay"), "{err}");
    drop(_services);
    drop(zone);
    drop(swarm);
}

/// A label on this engine's swarm node, removed when dropped.
struct NodeLabel {
    node: String,
    key: &'static str,
}

impl NodeLabel {
    fn add(key: &'static str, value: &str) -> NodeLabel {
        let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
        docker(&["node", "update", "--label-add", &format!("{key}={value}"), &node]);
        NodeLabel { node, key }
    }
}

impl Drop for NodeLabel {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["node", "update", "--label-rm", self.key, &self.node]).output();
    }
}

/// Removes every Swarm service labelled with a test's state dir.
struct SwarmServices {
    state_dir: std::path::PathBuf,
}

impl Drop for SwarmServices {
    fn drop(&mut self) {
        let filter = format!("label=ebb.state_dir={}", self.state_dir.display());
        let out = Command::new("docker").args(["service", "ls", "-q", "--filter", &filter]).output();
        let ids = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(["service", "rm"]).args(&ids).output();
        }
    }
}
