//! Story S1 across Swarm nodes with a real database service
//! (`examples/docker/ebb.s1-swarm.toml`): on a local 2-node swarm
//! (`scripts/local-swarm up 2`), the test starts its own PostgreSQL server on
//! the host's address on the swarm's bridge, and `ebb up` runs two demo-app
//! replicas spread over the two nodes with `--db postgres://…`. Each round
//! runs the story's checks through ebb (good to go, insert, verification,
//! candidate list) and reads every inserted name back from EACH task
//! directly (on its node's address); names are also POSTed to one task and
//! read from the other, both ways. Then the fleet goes down to one replica
//! and back to two: the new task reads every name, also those written by the
//! task that is gone.
//!
//! Checked to fail with a store per task: with the example's `--db` pointed
//! at a SQLite path inside the container (`/tmp/candidates.sqlite`), the
//! first direct read from the other task answered 404.
//!
//! Needs root, dockerd and PostgreSQL's server binaries (Debian's
//! `postgresql`, scripts/install-test-deps): elsewhere it prints `SKIP:` and
//! returns. The guards (ebb, the database, the swarm) stop everything, also
//! when the test fails.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::local_swarm::{running_tasks, LocalSwarm};
use support::*;

const SUBNET: &str = "10.234.0";

/// The example's database URL, replaced by this test's server.
const EXAMPLE_DB: &str = "postgres://postgres:change-me@10.231.0.254:5432/postgres";

#[test]
fn s1_client_passes_through_ebb_against_swarm_replicas_on_two_nodes_sharing_postgres() {
    let (Some(bin), Some(ids)) = (postgres_bin(), postgres_ids()) else {
        println!("SKIP: no PostgreSQL server (/usr/lib/postgresql/*/bin, user postgres): scripts/install-test-deps");
        return;
    };
    let Some(swarm) = LocalSwarm::up(2, SUBNET) else { return };
    std::env::set_var("DOCKER_HOST", swarm.manager());
    std::env::set_var("EBB_SWARM_NODE_HOST", swarm.node_host());
    // On the bridge: the tasks' traffic leaves their node for the host there.
    let db = Postgres::start(&bin, ids, &format!("{SUBNET}.254"), free_port());
    let mut ebb = Ebb::start(|admin, listen| {
        let config = example_config("examples/docker/ebb.s1-swarm.toml", Some(&swarm.image), admin, listen);
        assert!(config.contains(EXAMPLE_DB), "the example's --db changed: update EXAMPLE_DB");
        // min 1: the test takes the fleet down to one replica and back; no
        // CPU alarms, so only the test changes the count.
        let config = config
            .replace(EXAMPLE_DB, &db.url)
            .replace("replicas = { min = 2, max = 4", "replicas = { min = 1, max = 4");
        config[..config.find("[service.web.scaling]").expect("the example's scaling")].to_string()
    });
    let state = ebb.dir.path().join("state").canonicalize().unwrap();
    let service = ebb::driver::swarm::swarm_service_name("web", 1, &state);
    ebb.wait_in_service(2, Duration::from_secs(90));
    let direct = direct_addresses(&ebb, &swarm, &state, &service, 2);
    let nodes: BTreeSet<&String> = direct.values().map(|(node, _)| node).collect();
    assert_eq!(nodes.len(), 2, "the two replicas run on one node: {direct:?}");
    println!("replicas: {direct:?}");
    let addrs: Vec<SocketAddr> = direct.values().map(|(_, addr)| *addr).collect();

    let log = || ebb.up_log();
    let read = |addr: SocketAddr, name: &str| support::s1::read_candidate(addr, name, &log);
    let (mut names, answered) = support::s1::client_rounds(ebb.listen, &addrs, 20, &log);
    assert_eq!(answered.len(), 2, "both tasks answered through ebb: {answered:?}");
    // One task writes, the task on the other node reads; both ways.
    let mut written_by = BTreeMap::new();
    for (id, (from, to)) in direct.keys().zip([(addrs[0], addrs[1]), (addrs[1], addrs[0])]) {
        let name = format!("direct-{id}");
        assert_eq!(http(from, "POST", &format!("/candidate/{name}"), None).unwrap().status, 200);
        read(to, &name);
        written_by.insert(id.clone(), name.clone());
        names.push(name);
    }
    let all = http(ebb.listen, "GET", "/candidates", None).unwrap().json();
    assert_eq!(all.as_array().map(Vec::len), Some(22), "{all}");

    // Down to one replica and back to two: the new task has never seen a
    // write, and the task that wrote one of the names is gone.
    let scale = |n: &str| {
        let out = ebb.cli(&["scale", "web", n]);
        assert!(out.status.success(), "ebb scale web {n}: {}", String::from_utf8_lossy(&out.stderr));
    };
    scale("1");
    let kept = ebb.wait_in_service(1, Duration::from_secs(60))[0]["id"].as_str().unwrap().to_string();
    let gone = direct.keys().find(|id| **id != kept).expect("a replica left").clone();
    wait_for("one running task", Duration::from_secs(30), || {
        (running_tasks(&swarm, &service).len() == 1).then_some(())
    });
    scale("2");
    ebb.wait_in_service(2, Duration::from_secs(90));
    let now = direct_addresses(&ebb, &swarm, &state, &service, 2);
    let (new_id, (new_node, new_addr)) = now.iter().find(|(id, _)| !direct.contains_key(*id)).expect("a new replica");
    assert!(!now.contains_key(&gone), "{gone} is still there: {now:?}");
    println!("{gone} (wrote {}) gone; {new_id} started on {new_node}", written_by[&gone]);
    for name in &names {
        read(*new_addr, name);
    }
    let all = http(*new_addr, "GET", "/candidates", None).unwrap().json();
    assert_eq!(all.as_array().map(Vec::len), Some(22), "{all}");

    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "ebb down: {}", String::from_utf8_lossy(&out.stderr));
    ebb.wait_exit(Duration::from_secs(60));
    let left = swarm.docker(&["service", "ls", "-q"]);
    assert!(left.trim().is_empty(), "Swarm services left after ebb down: {left}");
}

/// Demo apps started at once before their database server: each waits for
/// it, and all of them create the table at the same moment without failing.
#[test]
fn demo_apps_started_before_a_new_postgres_database_all_start_and_share_it() {
    let (Some(bin), Some(ids)) = (postgres_bin(), postgres_ids()) else {
        println!("SKIP: no PostgreSQL server (/usr/lib/postgresql/*/bin, user postgres): scripts/install-test-deps");
        return;
    };
    let port = free_port();
    let url = format!("postgres://postgres:not-shown@127.0.0.1:{port}/postgres");
    let mut apps = Apps(Vec::new());
    for i in 0..4 {
        let app = Command::new(EBB)
            .args(["demo-app", "--port", "0", "--replica-id", &format!("early-{i}"), "--db", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        apps.0.push(app);
    }
    std::thread::sleep(Duration::from_secs(1));
    let _db = Postgres::start(&bin, ids, "127.0.0.1", port);
    let addrs: Vec<SocketAddr> = apps
        .0
        .iter_mut()
        .map(|app| {
            let line = first_line(app);
            let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| {
                let _ = app.kill();
                let mut stderr = String::new();
                std::io::Read::read_to_string(app.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                panic!("a demo app did not start: {line:?}\n{stderr}")
            });
            addr.parse().unwrap()
        })
        .collect();
    assert_eq!(http(addrs[0], "POST", "/candidate/Ada", None).unwrap().status, 200);
    for addr in &addrs {
        let r = http(*addr, "GET", "/candidates", None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "[{\"CandidateName\":\"Ada\"}]"), "at {addr}");
    }
    // The start-up log names the database, password redacted.
    let first = &mut apps.0[0];
    let _ = first.kill();
    let _ = first.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains(&format!("db=postgres://postgres:***@127.0.0.1:{port}/postgres")), "{stderr}");
    assert!(!stderr.contains("not-shown"), "{stderr}");
}

/// Demo app processes, killed when dropped.
struct Apps(Vec<std::process::Child>);

impl Drop for Apps {
    fn drop(&mut self) {
        for app in &mut self.0 {
            let _ = app.kill();
            let _ = app.wait();
        }
    }
}

/// Each replica in service (by id): its node and its task's address there
/// (the node's address on the bridge, the port ebb reports).
fn direct_addresses(
    ebb: &Ebb,
    swarm: &LocalSwarm,
    state: &Path,
    service: &str,
    n: usize,
) -> BTreeMap<String, (String, SocketAddr)> {
    wait_for("each replica's task and node", Duration::from_secs(30), || {
        let tasks = running_tasks(swarm, service);
        let ids: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(state.join("swarm-replicas.json")).ok()?).ok()?;
        let mut direct = BTreeMap::new();
        for r in ebb.replicas().iter().filter(|r| r["state"] == "in_service") {
            let id = r["id"].as_str()?;
            let task = ids.iter().find(|(_, replica)| *replica == id)?.0;
            let node = tasks.get(task)?;
            let k = node.strip_prefix("node")?;
            let addr: SocketAddr = format!("{SUBNET}.{k}:{}", r["port"].as_u64()?).parse().ok()?;
            direct.insert(id.to_string(), (node.clone(), addr));
        }
        (direct.len() == n).then_some(direct)
    })
}

/// The newest PostgreSQL server's binaries (Debian's layout).
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let path = e.ok()?.path();
            let version = path.file_name()?.to_str()?.parse().ok()?;
            Some((version, path.join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A PostgreSQL server of this test's own, run as the `postgres` OS user
/// (it refuses root) from a temp dir, trusting the swarm's subnet only;
/// stopped when dropped, also on panic.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start(bin: &Path, (uid, gid): (u32, u32), host: &str, port: u16) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let as_postgres = |program: &str, args: &[&str]| {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join(program))
                .args(args)
                .output()
                .expect("runuser");
            assert!(
                out.status.success(),
                "{program} {args:?}: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let data_arg = data.to_str().unwrap();
        as_postgres("initdb", &["-D", data_arg, "-U", "postgres", "-A", "trust", "--no-sync"]);
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str(&format!("host all all {SUBNET}.0/24 trust\n"));
        std::fs::write(&hba, rules).unwrap();
        let options = format!(
            "-c listen_addresses={host} -p {port} -c unix_socket_directories={} -c fsync=off",
            dir.path().display()
        );
        let started = Instant::now();
        let server = Postgres {
            bin: bin.to_path_buf(),
            data: data.clone(),
            url: format!("postgres://postgres@{host}:{port}/postgres"),
            _dir: dir,
        };
        // -w: returns once the server accepts connections.
        as_postgres("pg_ctl", &["-D", data_arg, "-o", &options, "-l", log.to_str().unwrap(), "-w", "start"]);
        println!("PostgreSQL at {} in {:.1} s", server.url, started.elapsed().as_secs_f64());
        server
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "stop", "-m", "immediate"])
            .output();
    }
}

/// The `postgres` OS user (made by Debian's package): uid, gid.
fn postgres_ids() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}
