//! The shipped examples (`examples/*/*.toml`) parse, express their story
//! one-to-one, and their time-compressed variants keep the story's
//! thresholds and bounds.

use ebb_core::config::{CommandSpec, Config, ServiceConfig};
use ebb_core::scaling::{AdjustmentType, Comparison, Metric, Statistic, StepAdjustment};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn load(path: &Path) -> Config {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Config::parse(&text, path).unwrap_or_else(|e| panic!("{e}"))
}

fn service(example: &str, file: &str) -> ServiceConfig {
    load(&examples_dir().join(example).join(file)).services.into_values().next().unwrap()
}

#[test]
fn every_example_parses() {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(examples_dir()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        assert!(dir.join("README.md").is_file(), "{} has no README.md", dir.display());
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "toml") {
                files.push(file);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 6, "three stories, each with ebb.toml and ebb.fast.toml: {files:?}");

    // No two example files share a listen address or a state directory, so
    // any of them can run side by side (the tests and a demo at once).
    let mut listeners: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut state_dirs: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for file in &files {
        let config = load(file);
        let mut addrs = vec![config.admin.listen.to_string()];
        for service in config.services.values() {
            if !service.kind.has_balancer() {
                // A worker pool (S4's scraper) runs its own job, has no
                // listener, and may scale on a queue instead of CPU.
                assert!(!service.scaling.is_fixed(), "{}", file.display());
                continue;
            }
            if service.own_listen {
                addrs.push(service.listen.to_string());
            }
            // The demo app under a quarter-core budget: as a local process,
            // or inside the demo image (examples/docker; there it may say
            // where its database is, after the budget).
            match (service.driver.is_container(), &service.command) {
                (true, CommandSpec::Argv(argv)) => {
                    let budget = ["/ebb", "demo-app", "--host", "0.0.0.0", "--cpu-budget", "0.25"];
                    assert!(argv.starts_with(&budget.map(String::from)), "{argv:?}: {}", file.display());
                    let rest: Vec<&str> = argv[budget.len()..].iter().map(String::as_str).collect();
                    assert!(rest.is_empty() || rest.first() == Some(&"--db"), "{rest:?}: {}", file.display());
                }
                (_, command) => assert_eq!(
                    command,
                    &CommandSpec::Shell("{ebb} demo-app --port $PORT --cpu-budget 0.25".into()),
                    "{}",
                    file.display()
                ),
            }
            assert_eq!(service.cpu, 0.25, "CPU % is relative to the demo's budget: {}", file.display());
            assert!(!service.scaling.is_fixed(), "{}", file.display());
        }
        for listener in config.listeners.values() {
            addrs.push(listener.listen.to_string());
            addrs.extend(listener.http.map(|h| h.to_string()));
        }
        for addr in addrs {
            if let Some(other) = listeners.insert(addr.clone(), file.clone()) {
                panic!("{addr} is used by {} and {}", other.display(), file.display());
            }
        }
        if let Some(other) = state_dirs.insert(config.state_dir.clone(), file.clone()) {
            panic!("{} and {} share a state_dir", other.display(), file.display());
        }
    }
}

/// S1: +1 when mean CPU > 60 % for 2 × 30 s, −1 when < 60 % for 10 × 30 s,
/// cooldown 120 s, warm-up 60 s, min 2 / max 4 / desired 2, the ALB health
/// check.
#[test]
fn s1_is_the_story_one_to_one() {
    let web = service("s1-flask-asg", "ebb.toml");
    assert_eq!((web.replicas.bounds.min, web.replicas.bounds.max, web.replicas.desired), (2, 4, 2));
    let h = &web.health;
    assert_eq!((h.path.as_str(), h.interval, h.timeout), ("/gtg", Duration::from_secs(10), Duration::from_secs(5)));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold, h.matcher.as_str()), (3, 2, "200,300-310"));
    assert_eq!(h.grace_period, Duration::from_secs(30));
    let s = &web.scaling;
    assert_eq!(s.warmup, Duration::from_secs(60));
    assert!(s.target_tracking.is_empty() && s.scheduled.is_empty() && s.burst.is_none());
    let [high, low] = &s.step[..] else { panic!("two step policies") };
    for (policy, name, comparison, periods, step) in [
        (high, "cpu-high", Comparison::Greater, 2, StepAdjustment { lower: Some(0.0), upper: None, adjustment: 1 }),
        (low, "cpu-low", Comparison::Less, 10, StepAdjustment { lower: None, upper: Some(0.0), adjustment: -1 }),
    ] {
        assert_eq!(policy.name, name);
        let a = &policy.alarm;
        assert_eq!(
            (a.metric, a.statistic, a.comparison, a.threshold),
            (Metric::Cpu, Statistic::Average, comparison, 60.0)
        );
        assert_eq!(
            (a.period, a.evaluation_periods, a.datapoints_to_alarm),
            (Duration::from_secs(30), periods, periods)
        );
        assert_eq!(policy.adjustment_type, AdjustmentType::ChangeInCapacity);
        assert_eq!(policy.steps, [step]);
        assert_eq!(policy.cooldown, Duration::from_secs(120));
    }
}

#[test]
fn s2_and_s3_are_the_stories_one_to_one() {
    for (example, max) in [("s2-http-scale-out", 20), ("s3-ecs-django", 5)] {
        let svc = service(example, "ebb.toml");
        assert_eq!((svc.replicas.bounds.min, svc.replicas.bounds.max, svc.replicas.desired), (1, max, 1), "{example}");
        let [tt] = &svc.scaling.target_tracking[..] else { panic!("{example}: one target tracking policy") };
        assert_eq!((tt.metric, tt.target), (Metric::Cpu, 80.0), "{example}");
        assert!(svc.scaling.step.is_empty(), "{example}");
    }
    // S3's loosened health check.
    let h = service("s3-ecs-django", "ebb.toml").health;
    assert_eq!((h.unhealthy_threshold, h.timeout, h.interval), (5, Duration::from_secs(29), Duration::from_secs(30)));
}

/// A fast variant changes only time: the same policies, metrics,
/// thresholds, targets, steps and bounds; every duration shorter or equal.
#[test]
fn fast_variants_only_compress_time() {
    for example in ["s1-flask-asg", "s2-http-scale-out", "s3-ecs-django", "s5-spot-fleet"] {
        let (slow, fast) = (service(example, "ebb.toml"), service(example, "ebb.fast.toml"));
        assert_eq!(slow.replicas, fast.replicas, "{example}");
        assert_eq!(slow.health.path, fast.health.path, "{example}");
        assert!(fast.health.interval <= Duration::from_millis(500), "{example}: health interval ~200-500 ms");
        let (s, f) = (&slow.scaling, &fast.scaling);
        assert!(f.warmup <= s.warmup, "{example}");
        assert_eq!(s.step.len(), f.step.len(), "{example}");
        for (s, f) in s.step.iter().zip(&f.step) {
            assert_eq!(
                (&s.name, s.alarm.metric, s.alarm.comparison, s.alarm.threshold),
                (&f.name, f.alarm.metric, f.alarm.comparison, f.alarm.threshold)
            );
            assert_eq!(
                (s.alarm.evaluation_periods, s.alarm.datapoints_to_alarm),
                (f.alarm.evaluation_periods, f.alarm.datapoints_to_alarm)
            );
            assert_eq!(f.alarm.period, Duration::from_secs(1), "{example}: periods of 1 s");
            assert_eq!(s.steps, f.steps);
            assert!(f.cooldown < s.cooldown);
        }
        assert_eq!(s.target_tracking.len(), f.target_tracking.len(), "{example}");
        for (s, f) in s.target_tracking.iter().zip(&f.target_tracking) {
            assert_eq!((&s.name, s.metric, s.target, s.tolerance), (&f.name, f.metric, f.target, f.tolerance));
            assert!(f.window <= Duration::from_secs(2), "{example}: a window of ~1-2 s");
            assert!(f.scale_out_cooldown < s.scale_out_cooldown && f.scale_in_cooldown < s.scale_in_cooldown);
            assert!(f.scale_in_stabilization < s.scale_in_stabilization);
        }
    }
}

/// S5: one ebb holds the certificate (ACME, HTTP-01 on `http`, stored in a
/// state directory that outlives the instance), one replica with room for
/// one more, interruptions rehearsed with AWS's two-minute notice, deploys
/// that surge one new replica and then retire the old one, and scaling on
/// the SLO (p99 < 1 s) only. The laptop variants keep the fleet and swap
/// the certificate's source (files; a local Pebble).
#[test]
fn s5_is_the_story_one_to_one() {
    let dir = examples_dir().join("s5-spot-fleet");
    let config = load(&dir.join("ebb.toml"));
    assert_eq!(config.state_dir, Path::new("/var/lib/ebb"), "state on a volume that outlives the instance");
    let public = &config.listeners["public"];
    assert_eq!((public.listen.port(), public.http.map(|h| h.port())), (443, Some(80)));
    let acme = public.tls.as_ref().and_then(|t| t.acme.as_ref()).expect("the certificate comes from ACME");
    assert_eq!(acme.domains, ["example.com", "www.example.com"]);
    assert!(public.routes.routes.iter().all(|r| r.service == "web"));
    let web = &config.services["web"];
    assert!(!web.own_listen, "reached through the listener only");
    assert_eq!((web.replicas.bounds.min, web.replicas.bounds.max, web.replicas.desired), (1, 2, 1));
    let chaos = web.chaos.as_ref().expect("interruptions rehearsed");
    assert_eq!((chaos.interrupt_every, chaos.notice), (Duration::from_secs(86400), Duration::from_secs(120)));
    assert_eq!((web.deploy.max_surge, web.deploy.max_unavailable), (1, 0), "surge, then retire");
    let alarms: Vec<_> = web.scaling.step.iter().map(|s| (s.alarm.metric, s.alarm.threshold)).collect();
    assert_eq!(alarms, [(Metric::P99Latency, 1000.0), (Metric::P99Latency, 300.0)], "scaled on the SLO only");
    assert!(web.scaling.target_tracking.is_empty());

    let fast = load(&dir.join("ebb.fast.toml"));
    let tls = fast.listeners["public"].tls.as_ref().unwrap();
    assert!(tls.acme.is_none() && tls.certs.len() == 1, "file certificates on a laptop");
    assert!(fast.services["web"].chaos.is_some());
    let pebble = load(&dir.join("ebb.pebble.toml"));
    let acme = pebble.listeners["public"].tls.as_ref().and_then(|t| t.acme.as_ref()).unwrap();
    assert!(acme.directory.starts_with("https://127.0.0.1:14000/") && acme.directory_ca.is_some());
}

/// The listener example: one address, host and path routes to `api`, the
/// default to `web`; `api` is reached through the listener only.
#[test]
fn listener_routes_example_routes_by_host_and_path() {
    let config = load(&examples_dir().join("listener-routes/ebb.toml"));
    let public = &config.listeners["public"];
    let rules: Vec<(String, &str)> = public.routes.routes.iter().map(|r| (r.describe(), r.service.as_str())).collect();
    assert_eq!(
        rules,
        [("host api.localhost".to_string(), "api"), ("path /api/*".to_string(), "api"), ("default".to_string(), "web")]
    );
    assert!(!config.services["api"].own_listen && !config.services["web"].own_listen);
    assert!(public.tls.is_none(), "the shipped file runs without certificate files; README.md shows TLS");
}
