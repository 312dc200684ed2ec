//! `mounts`, `networks`, `user`, `labels` and `placement` on container
//! services: what a file says is what the drivers get, and a change of any
//! of them is a new version (a rolling deploy), like a new image. The
//! refusals are golden cases in `tests/config_errors/container_*`.

use std::collections::BTreeMap;
use std::path::Path;

use ebb_core::config::plan::{plan, Effect};
use ebb_core::config::{Config, ContainerOptions, Mount, MountKind, Placement};

fn options(service: &str, path: &str) -> ContainerOptions {
    let config = Config::parse(service, Path::new(path)).unwrap_or_else(|e| panic!("should parse:\n{e}"));
    config.services["web"].container.as_ref().expect("a container service").options.clone()
}

const DOCKER: &str = r#"
[service.web]
driver = "docker"
image = "ebb-demo:latest"
listen = "127.0.0.1:8080"
"#;

fn mount(kind: MountKind, source: Option<&str>, target: &str, read_only: bool) -> Mount {
    Mount { kind, source: source.map(String::from), target: target.into(), read_only }
}

#[test]
fn mounts_networks_user_and_labels_reach_the_container_options() {
    let text = format!(
        r#"{DOCKER}mounts = [
  "/srv/shared:/data",
  "./store:/store:ro",
  "../up/./there:/up",
  "cache:/cache:rw",
  {{ type = "tmpfs", target = "/scratch" }},
  {{ type = "volume", source = "logs", target = "/logs", read_only = true }},
  {{ type = "bind", source = "/etc/app", target = "/etc/app", read_only = true }},
]
networks = ["backend", "metrics"]
user = "1000:1000"
labels = {{ team = "search", "com.example.tier" = "web" }}
"#
    );
    let o = options(&text, "/etc/ebb/ebb.toml");
    assert_eq!(
        o.mounts,
        [
            mount(MountKind::Bind, Some("/srv/shared"), "/data", false),
            // Relative bind sources: against the config file's directory.
            mount(MountKind::Bind, Some("/etc/ebb/store"), "/store", true),
            mount(MountKind::Bind, Some("/etc/up/there"), "/up", false),
            mount(MountKind::Volume, Some("cache"), "/cache", false),
            mount(MountKind::Tmpfs, None, "/scratch", false),
            mount(MountKind::Volume, Some("logs"), "/logs", true),
            mount(MountKind::Bind, Some("/etc/app"), "/etc/app", true),
        ]
    );
    assert_eq!(o.networks, ["backend", "metrics"]);
    assert_eq!(o.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        o.labels,
        BTreeMap::from([("team".to_string(), "search".to_string()), ("com.example.tier".into(), "web".into())])
    );
    assert_eq!(o.placement, Placement::default());

    // A file given by a relative path keeps a relative source (the ebb
    // crate makes it absolute against its working directory), cleaned.
    let o = options(&format!("{DOCKER}mounts = [\"./a/../b:/b\", \"../c:/c\"]\n"), "ebb.toml");
    assert_eq!(o.mounts[0].source.as_deref(), Some("b"));
    assert_eq!(o.mounts[1].source.as_deref(), Some("../c"));

    // None written: none.
    assert_eq!(options(DOCKER, "ebb.toml"), ContainerOptions::default());
}

#[test]
fn a_swarm_service_takes_placement() {
    let text = r#"
[service.web]
driver = "swarm"
image = "ebb-demo:latest"
listen = "127.0.0.1:8080"
placement = { spread = "node.labels.zone", constraints = ["node.role==worker", "node.labels.disk != hdd"] }
"#;
    let o = options(text, "ebb.toml");
    assert_eq!(o.placement.spread.as_deref(), Some("node.labels.zone"));
    assert_eq!(o.placement.constraints, ["node.role==worker", "node.labels.disk != hdd"]);
    // The table form too.
    let table = "[service.web]\ndriver = \"swarm\"\nimage = \"x:1\"\nlisten = \"127.0.0.1:8080\"\n[service.web.placement]\nspread = \"node.id\"\n";
    assert_eq!(options(table, "ebb.toml").placement.spread.as_deref(), Some("node.id"));
}

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("/etc/ebb/ebb.toml")).unwrap_or_else(|e| panic!("should parse:\n{e}"))
}

#[test]
fn a_changed_mount_network_user_label_or_placement_is_a_rolling_deploy() {
    let running = BTreeMap::from([("web".to_string(), 3)]);
    let swarm = DOCKER.replace("\"docker\"", "\"swarm\"");
    let base = parse(&format!("{swarm}mounts = [\"./data:/data\"]\n"));
    let changes = [
        "mounts = [\"./other:/data\"]\n",
        "mounts = [\"./data:/data\"]\nnetworks = [\"backend\"]\n",
        "mounts = [\"./data:/data\"]\nuser = \"1000\"\n",
        "mounts = [\"./data:/data\"]\nlabels = { team = \"search\" }\n",
        "mounts = [\"./data:/data\"]\nplacement = { constraints = [\"node.role==worker\"] }\n",
    ];
    for change in changes {
        let p = plan(&base, &parse(&format!("{swarm}{change}")), &running);
        assert_eq!(p.deploys(), ["web"], "{change}: {p}");
        assert!(p.changes.iter().all(|c| c.effect == Effect::RollingDeploy { replaced: 3 }), "{p}");
    }
    // The same mount written as a table: started the same way.
    let rewritten =
        parse(&format!("{swarm}mounts = [{{ type = \"bind\", source = \"/etc/ebb/data\", target = \"/data\" }}]\n"));
    let p = plan(&base, &rewritten, &running);
    assert!(!p.is_empty() && p.deploys().is_empty(), "{p}");
    assert!(p.changes.iter().all(|c| c.effect == Effect::InPlace), "{p}");
}
