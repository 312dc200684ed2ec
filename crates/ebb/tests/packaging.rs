//! What ships: the version names its commit, the licence is the one the
//! workspace declares, and the declared `rust-version` is what the
//! dependency tree really needs.

use std::path::{Path, PathBuf};
use std::process::Command;

const EBB: &str = env!("CARGO_BIN_EXE_ebb");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(EBB).arg("--version").output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let expected_version = env!("CARGO_PKG_VERSION");
    assert!(printed.starts_with(&format!("ebb {expected_version} (")), "{printed}");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=9", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match commit {
        // Built in this checkout: the commit is the one checked out (a
        // build made before the last commit would name the one before).
        Some(commit) => assert!(printed.contains(&commit), "{printed} should name commit {commit}"),
        None => println!("SKIP: not a git checkout; the version says {printed}"),
    }
}

#[test]
fn the_licence_file_is_the_declared_one() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"Apache-2.0\""));
    let licence = std::fs::read_to_string(root().join("LICENSE")).expect("a LICENSE file at the root");
    assert!(licence.contains("Apache License") && licence.contains("Version 2.0, January 2004"));
}

fn parse_version(v: &str) -> (u32, u32) {
    let mut parts = v.trim().trim_matches('"').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Every locked package whose manifest is in the local registry (those
/// built for this platform) needs at most the workspace's rust-version.
#[test]
fn rust_version_covers_every_dependency() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .map(parse_version)
        .expect("rust-version in the workspace");
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let registries: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    let mut checked = 0;
    let mut too_new = Vec::new();
    let mut name = "";
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = n.trim_matches('"');
        } else if let Some(version) = line.strip_prefix("version = ") {
            let dir = format!("{name}-{}", version.trim_matches('"'));
            let Some(toml) = registries.iter().map(|r| r.join(&dir).join("Cargo.toml")).find(|p| p.exists()) else {
                continue;
            };
            let text = std::fs::read_to_string(toml).unwrap();
            checked += 1;
            if let Some(needed) = text.lines().find_map(|l| l.trim().strip_prefix("rust-version = ")) {
                if parse_version(needed) > declared {
                    too_new.push(format!("{dir} needs {}", needed.trim_matches('"')));
                }
            }
        }
    }
    if checked == 0 {
        println!("SKIP: no registry sources under {} to read", home.display());
        return;
    }
    assert!(checked > 100, "only {checked} manifests found");
    assert!(too_new.is_empty(), "rust-version {declared:?} is older than: {too_new:?}");
}

#[test]
fn completions_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(EBB).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["up", "status", "plan", "apply", "deploy", "certs", "simulate"] {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
    }
    let bad = Command::new(EBB).args(["completions", "cmd.exe"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(EBB).args(["man", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["ebb.1", "ebb-up.1", "ebb-apply.1", "ebb-plan.1", "ebb-certs.1", "ebb-certs-renew.1", "ebb-load.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is a man page: {}",
            &text[..text.len().min(200)]
        );
    }
    let apply = std::fs::read_to_string(dir.path().join("ebb-apply.1")).unwrap();
    assert!(apply.contains("without a restart"), "the page carries the command's help");
}

/// ebb's own log: one JSON object per line with `--log-format json`; plain
/// text without colour codes when stderr is not a terminal.
#[test]
fn logs_are_json_on_request_and_never_coloured_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["json", "text"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(EBB)
            .args(["--log-format", format, "demo-app", "--port", &port.to_string()])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8(out.stderr).unwrap();
        let first = log.lines().next().unwrap_or_else(|| panic!("{format}: no log line"));
        assert!(!log.contains('\u{1b}'), "{format}: no ANSI escape in a pipe: {log:?}");
        match format {
            "json" => {
                let line: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
                assert_eq!(line["level"], "INFO");
                assert_eq!(line["fields"]["message"], "Demo app started.");
            }
            _ => assert!(first.contains("INFO Demo app started."), "{first}"),
        }
    }
}

/// `scripts/build-deb` makes a package that dpkg installs (into a root of
/// the test's own, so the machine's /usr is untouched), and the installed
/// binary runs, with its units, config and man pages where Debian expects.
#[test]
fn the_debian_package_installs_and_its_ebb_runs() {
    for tool in ["dpkg", "dpkg-deb"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIP: {tool} is not installed (not a Debian system)");
            return;
        }
    }
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new(root().join("scripts/build-deb")).arg(EBB).arg(out_dir.path()).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let package = String::from_utf8(built.stdout).unwrap().trim().to_string();
    assert!(package.ends_with(".deb") && Path::new(&package).exists(), "{package}");

    let info = Command::new("dpkg-deb").args(["--field", &package, "Package", "Version"]).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(
        info.contains("Package: ebb") && info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );

    // A dpkg database of the test's own: a real install, into this root.
    let target = tempfile::tempdir().unwrap();
    let admin = target.path().join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::write(admin.join("status"), "").unwrap();
    let installed = Command::new("dpkg")
        .arg(format!("--root={}", target.path().display()))
        .args(["--force-not-root", "--force-depends", "--force-script-chrootless", "--install", &package])
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "{}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let status = std::fs::read_to_string(admin.join("status")).unwrap();
    assert!(status.contains("Package: ebb") && status.contains("Status: install ok installed"), "{status}");

    let installed_ebb = target.path().join("usr/bin/ebb");
    let version = Command::new(&installed_ebb).arg("--version").output().unwrap();
    let printed = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(version.status.success() && printed.starts_with("ebb "), "{printed}");
    for file in [
        "lib/systemd/system/ebb.service",
        "lib/systemd/system/ebb.socket",
        "usr/share/man/man1/ebb.1.gz",
        "usr/share/man/man1/ebb-up.1.gz",
        "usr/share/doc/ebb/copyright",
    ] {
        assert!(target.path().join(file).exists(), "{file} installed");
    }
    let unit = std::fs::read_to_string(target.path().join("lib/systemd/system/ebb.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ebb -f /etc/ebb/ebb.toml up"), "{unit}");
    // The packaged config is valid, and keeps its state in /var/lib/ebb.
    let config = target.path().join("etc/ebb/ebb.toml");
    let checked = Command::new(&installed_ebb).arg("validate").arg(&config).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(std::fs::read_to_string(&config).unwrap().contains("state_dir = \"/var/lib/ebb\""));
    let conffiles = std::fs::read_to_string(admin.join("info/ebb.conffiles")).unwrap_or_default();
    assert!(conffiles.contains("/etc/ebb/ebb.toml"), "the config is a conffile: {conffiles:?}");
}

/// Removes the test's container and image, also when the test fails.
struct DockerCleanup {
    container: String,
    image: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.container]).output();
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).output();
    }
}

/// `scripts/build-image` makes an image of ebb itself, built without a
/// registry; run with a mounted config it serves a fleet.
#[test]
fn the_container_image_of_ebb_runs_a_fleet() {
    if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: no Docker engine answers (`docker info`)");
        return;
    }
    let suffix = format!("{:08x}", rand_u32());
    let cleanup =
        DockerCleanup { container: format!("ebb-image-test-{suffix}"), image: format!("ebb-image-test:{suffix}") };
    let built = Command::new(root().join("scripts/build-image")).arg(&cleanup.image).arg(EBB).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));

    let config_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        config_dir.path().join("ebb.toml"),
        r#"state_dir = "/var/lib/ebb"
[admin]
listen = "0.0.0.0:9900"
[service.web]
command = ["{ebb}", "demo-app", "--host", "127.0.0.1"]
listen = "0.0.0.0:8080"
replicas = { min = 2, max = 2, desired = 2 }
[service.web.health]
path = "/gtg"
interval = "200ms"
timeout = "150ms"
healthy_threshold = 1
"#,
    )
    .unwrap();
    let run = Command::new("docker")
        .args(["run", "-d", "--stop-signal", "SIGINT", "--name", &cleanup.container, "-p", "127.0.0.1::8080", "-v"])
        .arg(format!("{}:/etc/ebb:ro", config_dir.path().display()))
        .arg(&cleanup.image)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let port = Command::new("docker").args(["port", &cleanup.container, "8080/tcp"]).output().unwrap();
    let addr = String::from_utf8_lossy(&port.stdout).lines().next().unwrap_or_default().trim().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answered = loop {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "2", &format!("http://{addr}/gtg?details")])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if body.contains("instance-id") {
            break body;
        }
        if std::time::Instant::now() > deadline {
            let logs = Command::new("docker").args(["logs", &cleanup.container]).output().unwrap();
            panic!(
                "no answer at {addr}: {body}\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(answered.contains("web-"), "a replica of web answered: {answered}");
    // `docker stop` (SIGINT) drains and stops the fleet: ebb exits 0.
    let stopped = Command::new("docker").args(["stop", "-t", "30", &cleanup.container]).output().unwrap();
    assert!(stopped.status.success());
    let code =
        Command::new("docker").args(["inspect", "-f", "{{.State.ExitCode}}", &cleanup.container]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0");
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}
