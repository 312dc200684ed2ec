//! `ebb plan` and `ebb apply` against a running ebb, under continuous load
//! from real clients (every request counted): policies, health checks,
//! bounds, a new service, a route, a removed service and a new spec, one
//! at a time; replicas of what did not change keep their pids; a file with
//! an error changes nothing.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{free_port, http_raw, pid_alive, wait_for, Ebb, Load};

struct Ports {
    public: SocketAddr,
    old: SocketAddr,
}

/// The fleet in its steps. `web` has its own listen; `api` (and `assets`
/// once added) are reached through the `public` listener by host; `old`
/// has its own listen until it is removed.
#[derive(Clone)]
struct Fleet {
    target: u32,
    interval: &'static str,
    max: u32,
    assets: bool,
    api_host: &'static str,
    old: bool,
    api_greeting: Option<&'static str>,
}

impl Fleet {
    fn first() -> Fleet {
        Fleet {
            target: 80,
            interval: "200ms",
            max: 4,
            assets: false,
            api_host: "api.test",
            old: true,
            api_greeting: None,
        }
    }

    fn config(&self, admin: SocketAddr, web: SocketAddr, ports: &Ports) -> String {
        let health = |interval: &str| {
            format!(
                "path = \"/gtg\"\ninterval = \"{interval}\"\ntimeout = \"150ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\ngrace_period = \"0s\"\n"
            )
        };
        let mut text = format!(
            r#"state_dir = "state"

[admin]
listen = "{admin}"

[service.web]
command = "{{ebb}} demo-app --port $PORT"
listen = "{web}"
replicas = {{ min = 2, max = {max}, desired = 2 }}
stop_timeout = "5s"
drain_timeout = "5s"

[service.web.health]
{web_health}
[[service.web.scaling.target_tracking]]
name = "cpu"
metric = "cpu"
target = {target}

[service.api]
command = "{{ebb}} demo-app --port $PORT"
replicas = {{ min = 1, max = 2, desired = 1 }}
stop_timeout = "5s"
drain_timeout = "5s"
{greeting}
[service.api.health]
{api_health}
"#,
            max = self.max,
            target = self.target,
            web_health = health(self.interval),
            api_health = health("200ms"),
            greeting = self.api_greeting.map(|g| format!("env = {{ GREETING = \"{g}\" }}\n")).unwrap_or_default(),
        );
        if self.assets {
            text.push_str(&format!(
                "\n[service.assets]\ncommand = \"{{ebb}} demo-app --port $PORT\"\nreplicas = {{ min = 1, max = 1, desired = 1 }}\nstop_timeout = \"5s\"\ndrain_timeout = \"5s\"\n[service.assets.health]\n{}",
                health("200ms")
            ));
        }
        if self.old {
            text.push_str(&format!(
                "\n[service.old]\ncommand = \"{{ebb}} demo-app --port $PORT\"\nlisten = \"{}\"\nreplicas = {{ min = 1, max = 2, desired = 2 }}\nstop_timeout = \"5s\"\ndrain_timeout = \"5s\"\n[service.old.health]\n{}",
                ports.old,
                health("200ms")
            ));
        }
        text.push_str(&format!("\n[listener.public]\nlisten = \"{}\"\n", ports.public));
        text.push_str(&format!("\n[[listener.public.route]]\nhost = \"{}\"\nservice = \"api\"\n", self.api_host));
        if self.assets {
            text.push_str("\n[[listener.public.route]]\nhost = \"assets.test\"\nservice = \"assets\"\n");
        }
        text.push_str("\n[[listener.public.route]]\nservice = \"web\"\n");
        text
    }
}

/// Who answered `GET /gtg?details` on the listener for `host`.
fn answered_by(listener: SocketAddr, host: &str) -> (u16, String) {
    let raw = format!("GET /gtg?details HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let r = http_raw(listener, &raw).unwrap();
    let who = if r.status == 200 { r.json()["instance-id"].as_str().unwrap_or_default().to_string() } else { r.body };
    (r.status, who)
}

/// Each service's replica pids.
fn pids(ebb: &Ebb) -> BTreeMap<String, Vec<u64>> {
    let status = ebb.status();
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut pids: Vec<u64> =
                s["replicas"].as_array().unwrap().iter().filter_map(|r| r["pid"].as_u64()).collect();
            pids.sort();
            (s["name"].as_str().unwrap().to_string(), pids)
        })
        .collect()
}

/// Everything the status says about the fleet's shape (not its counters).
fn shape(ebb: &Ebb) -> serde_json::Value {
    let mut status = ebb.status();
    for service in status["services"].as_array_mut().unwrap() {
        let object = service.as_object_mut().unwrap();
        object.retain(|k, _| ["name", "desired", "min", "max", "version", "listen"].contains(&k.as_str()));
        let ids: Vec<serde_json::Value> =
            service_ids(&ebb.status(), object["name"].as_str().unwrap()).into_iter().map(Into::into).collect();
        object.insert("replicas".into(), ids.into());
    }
    let listeners = status["listeners"].clone();
    serde_json::json!({ "services": status["services"], "listeners": listeners })
}

fn service_ids(status: &serde_json::Value, name: &str) -> Vec<String> {
    let service = status["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap();
    let mut ids: Vec<String> =
        service["replicas"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// Waits until every service has its desired count in service and healthy.
fn wait_all_up(ebb: &Ebb) {
    wait_for("every replica in service", Duration::from_secs(30), || {
        let status = ebb.status();
        let up = status["services"].as_array().unwrap().iter().all(|s| {
            let replicas = s["replicas"].as_array().unwrap();
            replicas.len() as u64 == s["desired"].as_u64().unwrap()
                && replicas.iter().all(|r| r["state"] == "in_service" && r["healthy"] == true)
        });
        up.then_some(())
    });
}

fn write(ebb: &Ebb, fleet: &Fleet, ports: &Ports) {
    std::fs::write(&ebb.config, fleet.config(ebb.admin, ebb.listen, ports)).unwrap();
}

fn run(ebb: &Ebb, args: &[&str]) -> (i32, String) {
    let out = ebb.cli(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Applies `fleet` with load running on web's own listen and on the
/// listener; returns what `ebb apply --yes` printed.
fn apply_under_load(ebb: &Ebb, fleet: &Fleet, ports: &Ports, what: &str) -> String {
    write(ebb, fleet, ports);
    let (code, plan) = run(ebb, &["plan"]);
    assert_eq!(code, 2, "{what}: `ebb plan` exits 2 when there are changes:\n{plan}");
    let web_load = Load::start(ebb.listen, 4, "/gtg", Duration::from_millis(5));
    let listener_load = Load::start(ports.public, 4, "/gtg", Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (code, out) = run(ebb, &["apply", "--yes"]);
    std::thread::sleep(Duration::from_millis(500));
    let (web_sent, web_failed) = web_load.finish();
    let (listener_sent, listener_failed) = listener_load.finish();
    eprintln!(
        "{what}: applied in {:?}; {web_sent} requests to web and {listener_sent} through the listener, {} and {} failed",
        started.elapsed(),
        web_failed.len(),
        listener_failed.len()
    );
    assert_eq!(code, 0, "{what}: ebb apply failed:\n{out}\n{}", ebb.up_log());
    assert!(web_sent > 20 && listener_sent > 20, "{what}: the load ran ({web_sent}, {listener_sent})");
    assert!(web_failed.is_empty(), "{what}: requests to web failed: {:?}", &web_failed[..web_failed.len().min(5)]);
    assert!(
        listener_failed.is_empty(),
        "{what}: requests through the listener failed: {:?}",
        &listener_failed[..listener_failed.len().min(5)]
    );
    let (code, plan) = run(ebb, &["plan"]);
    assert_eq!(code, 0, "{what}: after apply, `ebb plan` has nothing left:\n{plan}");
    out
}

#[test]
fn apply_changes_a_running_fleet_one_edit_at_a_time_without_failing_a_request() {
    let ports = Ports {
        public: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        old: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    };
    let mut fleet = Fleet::first();
    let first = fleet.clone();
    let ebb = Ebb::start(|admin, web| first.config(admin, web, &ports));
    wait_all_up(&ebb);
    let before = pids(&ebb);
    assert_eq!(before["web"].len(), 2);
    let (code, out) = run(&ebb, &["plan"]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("No changes: the running ebb already runs what {} says.", ebb.config.display()).as_str())
    );

    // 1. A policy: in place.
    fleet.target = 70;
    let out = apply_under_load(&ebb, &fleet, &ports, "policy");
    assert!(out.contains("~ web: scaling.target_tracking[cpu].target 80 -> 70 (applied in place)"), "{out}");
    assert_eq!(pids(&ebb), before, "a policy change restarts no replica");

    // 2. A health check: in place, and the probes follow it.
    fleet.interval = "300ms";
    let out = apply_under_load(&ebb, &fleet, &ports, "health check");
    assert!(out.contains("~ web: health.interval \"200ms\" -> \"300ms\" (applied in place)"), "{out}");
    assert_eq!(pids(&ebb), before, "a health-check change restarts no replica");

    // 3. Bounds: in place, shown in the status.
    fleet.max = 5;
    apply_under_load(&ebb, &fleet, &ports, "bounds");
    let web = ebb.status()["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap().clone();
    assert_eq!(web["max"], 5);
    assert_eq!(pids(&ebb), before, "a bounds change restarts no replica");

    // 4. A new service, routed by host: it answers once applied.
    fleet.assets = true;
    let out = apply_under_load(&ebb, &fleet, &ports, "new service");
    assert!(out.contains("+ service assets (1 replica)"), "{out}");
    let (status, who) = answered_by(ports.public, "assets.test");
    assert_eq!(status, 200, "{who}");
    assert!(who.starts_with("assets-"), "the new service answers its route: {who}");
    let mut expected = before.clone();
    expected.insert("assets".into(), pids(&ebb)["assets"].clone());
    assert_eq!(pids(&ebb), expected, "adding a service restarts nothing else");

    // 5. A route: the old host no longer reaches api, the new one does.
    fleet.api_host = "v2.api.test";
    let out = apply_under_load(&ebb, &fleet, &ports, "route");
    assert!(out.contains("route added: host v2.api.test -> api"), "{out}");
    assert!(answered_by(ports.public, "v2.api.test").1.starts_with("api-"));
    assert!(answered_by(ports.public, "api.test").1.starts_with("web-"), "the old host falls to the default route");
    assert_eq!(pids(&ebb), expected, "a route change restarts no replica");

    // 6. A removed service: drained, stopped, gone from the status.
    let old_pids = expected.remove("old").unwrap();
    fleet.old = false;
    let out = apply_under_load(&ebb, &fleet, &ports, "removed service");
    assert!(out.contains("- service old (drained, 2 replicas stopped)"), "{out}");
    wait_for("old gone", Duration::from_secs(20), || {
        (!ebb.status()["services"].as_array().unwrap().iter().any(|s| s["name"] == "old")).then_some(())
    });
    for pid in old_pids {
        assert!(!pid_alive(pid as u32), "old's replica {pid} was stopped");
    }
    assert_eq!(pids(&ebb), expected, "removing a service restarts nothing else");
    let stopped = ebb.events().iter().filter(|e| e["service"] == "old" && e["kind"] == "replica_stopped").count();
    assert_eq!(stopped, 2, "both replicas of old were drained and stopped");

    // 7. A file with an error: nothing changes.
    let shape_before = shape(&ebb);
    let mut broken = fleet.config(ebb.admin, ebb.listen, &ports);
    broken = broken.replace("target = 70", "target = \"seventy\"");
    std::fs::write(&ebb.config, &broken).unwrap();
    let (code, out) = run(&ebb, &["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ebb.toml:") && out.contains("error:"), "the error names file:line:col: {out}");
    assert_eq!(shape(&ebb), shape_before, "a file with an error changes nothing");
    assert_eq!(pids(&ebb), expected);

    // 8. A change a running ebb cannot take: refused, nothing changes.
    let moved = fleet
        .config(ebb.admin, ebb.listen, &ports)
        .replace(&ebb.listen.to_string(), &format!("127.0.0.1:{}", free_port()));
    std::fs::write(&ebb.config, &moved).unwrap();
    let (code, out) = run(&ebb, &["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot be applied to a running ebb"), "{out}");
    assert_eq!(shape(&ebb), shape_before, "a refused apply changes nothing");

    // 9. A new spec: a rolling deploy of api alone, under load.
    fleet.api_greeting = Some("hello");
    let api_before = expected.remove("api").unwrap();
    let out = apply_under_load(&ebb, &fleet, &ports, "new spec");
    assert!(out.contains("~ api: env.GREETING (unset) -> \"hello\" (rolling deploy, 1 replica replaced)"), "{out}");
    assert!(out.contains("api: now on v2"), "apply follows the deploy: {out}");
    let after = pids(&ebb);
    assert_ne!(after["api"], api_before, "api's replica was replaced");
    expected.insert("api".into(), after["api"].clone());
    assert_eq!(after, expected, "only api's replicas were replaced");
    let applied = ebb.events().iter().filter(|e| e["kind"] == "config_applied").count();
    assert!(applied >= 7, "each apply is in the event log ({applied})");
}

#[test]
fn sighup_applies_the_file_ebb_was_started_with() {
    let ports = Ports {
        public: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        old: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    };
    let mut fleet = Fleet::first();
    fleet.old = false;
    let first = fleet.clone();
    let ebb = Ebb::start(|admin, web| first.config(admin, web, &ports));
    wait_all_up(&ebb);
    let before = pids(&ebb);
    fleet.max = 6;
    write(&ebb, &fleet, &ports);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ebb.up_pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("max 6 after SIGHUP", Duration::from_secs(10), || {
        let status = ebb.status();
        let web = status["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap().clone();
        (web["max"] == 6).then_some(())
    });
    assert_eq!(pids(&ebb), before, "SIGHUP restarts no replica");
    // Printed once the apply returns (the status shows it a moment before).
    wait_for("the SIGHUP lines in ebb's output", Duration::from_secs(10), || {
        ebb.up_log().contains("SIGHUP: ~ web: replicas.max 4 -> 6 (applied in place)").then_some(())
    });
}
