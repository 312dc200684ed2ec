//! [`LocalSwarm`]: a real multi-node Docker Swarm on this machine
//! (`scripts/local-swarm`), `down` when dropped, also on panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::EBB;

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/local-swarm")
}

/// A local swarm, `down` when dropped (also on panic), with the test's image.
pub struct LocalSwarm {
    pub dir: PathBuf,
    pub image: String,
    /// First three octets of the nodes' addresses (one per test binary:
    /// two swarms up at once must not share a subnet).
    pub subnet: String,
}

impl LocalSwarm {
    /// `None` (after `SKIP:`) where there is no root or no dockerd.
    pub fn up(nodes: usize, subnet: &str) -> Option<LocalSwarm> {
        let root = nix::unistd::Uid::effective().is_root();
        let dockerd = Command::new("sh").args(["-c", "command -v dockerd && docker info"]).output();
        if !root || !dockerd.map(|o| o.status.success()).unwrap_or(false) {
            println!("SKIP: a local multi-node swarm needs root and a running dockerd (scripts/local-swarm)");
            return None;
        }
        let pid = std::process::id();
        let image = format!("ebb-test-nodes-{pid}:latest");
        let dir = PathBuf::from(format!("/tmp/ebb-ls-{pid}"));
        let swarm = LocalSwarm { dir, image, subnet: subnet.to_string() };
        let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/docker/build-image");
        let out = Command::new(&build).arg(&swarm.image).arg(EBB).output().unwrap();
        assert!(out.status.success(), "build-image failed: {}", String::from_utf8_lossy(&out.stderr));
        let started = Instant::now();
        let out = swarm.run(&["up", &nodes.to_string()]);
        println!("local-swarm up {nodes}: {:.1} s\n{out}", started.elapsed().as_secs_f64());
        Some(swarm)
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(script());
        cmd.env("EBB_LOCAL_SWARM_DIR", &self.dir)
            .env("EBB_LOCAL_SWARM_SUBNET", &self.subnet)
            .env("EBB_LOCAL_SWARM_IMAGES", &self.image)
            .env_remove("DOCKER_HOST");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "local-swarm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn manager(&self) -> String {
        format!("unix://{}/node1.sock", self.dir.display())
    }

    pub fn node_host(&self) -> String {
        format!("unix://{}/{{hostname}}.sock", self.dir.display())
    }

    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker").arg("-H").arg(self.manager()).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for LocalSwarm {
    fn drop(&mut self) {
        let out = self.cmd().arg("down").output();
        // From this machine's engine, where build-image made it (the test
        // may have pointed DOCKER_HOST at the swarm's manager, gone now).
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).env_remove("DOCKER_HOST").output();
        // Every namespace, daemon and directory is gone.
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!("local-swarm down: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        if !std::thread::panicking() {
            assert!(!self.dir.exists(), "{} is left behind", self.dir.display());
        }
    }
}

/// Node hostname of each running task of the Swarm services whose names
/// start with `prefix` (one per replica), by task id.
pub fn running_tasks(swarm: &LocalSwarm, prefix: &str) -> BTreeMap<String, String> {
    let services = swarm.docker(&["service", "ls", "-q", "--filter", &format!("name={prefix}")]);
    let services: Vec<&str> = services.split_whitespace().collect();
    if services.is_empty() {
        return BTreeMap::new();
    }
    let mut args = vec!["service", "ps", "--no-trunc", "--format", "{{.ID}} {{.Node}} {{.CurrentState}}"];
    args.extend(services);
    swarm
        .docker(&args)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (id, node, state) = (words.next()?, words.next()?, words.next()?);
            (state == "Running").then(|| (id.to_string(), node.to_string()))
        })
        .collect()
}
