//! Docker fixtures shared by the container tests: the engine check, the
//! demo image built from this build's `ebb`, the guards that remove what a
//! test made (containers, the image, the swarm it joined).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::EBB;

/// Whether a Docker engine answers; prints `SKIP:` when not.
pub fn docker_available() -> bool {
    let ok = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIP: `docker info` fails: no Docker engine to test against");
    }
    ok
}

/// Every container (running or not) labelled with this state dir.
pub fn containers_of(state_dir: &Path) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=ebb.state_dir={}", state_dir.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

/// Removes every container labelled with a test's state dir when dropped.
pub struct DockerLeftovers {
    pub state_dir: Option<PathBuf>,
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        if let Some(dir) = &self.state_dir {
            let ids = containers_of(dir);
            if !ids.is_empty() {
                let _ = Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
    }
}

/// The demo image built from this build's `ebb`, under a tag of its own;
/// removed when dropped.
pub struct TestImage {
    pub tag: String,
}

impl TestImage {
    /// `None` (after printing `SKIP:`) when there is no engine.
    pub fn build() -> Option<TestImage> {
        if !docker_available() {
            return None;
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let tag = format!("ebb-test-{}-{nanos:x}:latest", std::process::id());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/docker/build-image");
        let out = Command::new(&script).arg(&tag).arg(EBB).output().unwrap();
        assert!(out.status.success(), "build-image failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(TestImage { tag })
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.tag]).output();
    }
}

/// Held by the tests that make a swarm or need there to be none.
pub static SWARM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Swarm mode for a test: joins (inits) a single-node swarm when the engine
/// is in none, and leaves it when dropped; an engine already in a swarm is
/// left in it.
pub struct SwarmMode {
    initialised_here: bool,
}

impl SwarmMode {
    pub fn enter() -> Result<SwarmMode, String> {
        let out = Command::new("docker").args(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output().unwrap();
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "active" {
            return Ok(SwarmMode { initialised_here: false });
        }
        let out = Command::new("docker").args(["swarm", "init", "--advertise-addr", "127.0.0.1"]).output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SwarmMode { initialised_here: true })
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        if self.initialised_here {
            let _ = Command::new("docker").args(["swarm", "leave", "--force"]).output();
        }
    }
}
