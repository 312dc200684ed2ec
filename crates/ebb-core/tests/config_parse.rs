//! `ebb.toml` that should parse: defaults, the shipped default file, story
//! S1's settings, and a no-panic sweep over damaged input.

use ebb_core::config::{BalanceAlgorithm, Bounds, CommandSpec, Config, HealthConfig, ProxyConfig, Replicas};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEFAULT_CONFIG: &str = include_str!("../../../ebb.toml");

fn parse(source: &str) -> Config {
    Config::parse(source, Path::new("ebb.toml")).unwrap_or_else(|e| panic!("should parse:\n{e}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const MINIMAL: &str = r#"
[service.web]
command = "python app.py --port $PORT"
listen = "127.0.0.1:8080"
"#;

#[test]
fn the_shipped_default_config_parses() {
    let config = Config::parse(DEFAULT_CONFIG, Path::new("/srv/app/ebb.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.state_dir, PathBuf::from("/srv/app/.ebb"));
    assert_eq!(config.admin.listen, addr("127.0.0.1:9900"));
    let web = &config.services["web"];
    assert_eq!(web.name, "web");
    assert_eq!(web.command, CommandSpec::Shell("{ebb} demo-app --port $PORT".into()), "{{ebb}} is kept for the driver");
    assert_eq!(web.listen, addr("127.0.0.1:8080"));
    assert_eq!(web.replicas, Replicas { bounds: Bounds { min: 2, max: 4 }, desired: 2 });
    assert_eq!(web.env.get("GREETING").map(String::as_str), Some("hello"));
}

#[test]
fn story_s1_health_check_is_expressible_exactly() {
    // S1: path /gtg, interval 10 s, timeout 5 s, healthy 3, unhealthy 2,
    // matcher 200,300-310, grace 30 s.
    let config = parse(&format!(
        r#"{MINIMAL}
replicas = {{ min = 2, max = 4, desired = 2 }}
[service.web.health]
path = "/gtg"
interval = "10s"
timeout = "5s"
healthy_threshold = 3
unhealthy_threshold = 2
matcher = "200,300-310"
grace_period = "30s"
"#
    ));
    let h = &config.services["web"].health;
    assert_eq!(h.path, "/gtg");
    assert_eq!(h.interval, Duration::from_secs(10));
    assert_eq!(h.timeout, Duration::from_secs(5));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (3, 2));
    assert_eq!(h.matcher.as_str(), "200,300-310");
    assert!(h.matcher.matches(305) && !h.matcher.matches(201));
    assert_eq!(h.grace_period, Duration::from_secs(30));
}

#[test]
fn a_minimal_service_gets_every_default() {
    let config = parse(MINIMAL);
    assert_eq!(config.state_dir, PathBuf::from(".ebb"), "relative to a file in the current directory");
    assert_eq!(config.admin.listen, addr("127.0.0.1:9900"));
    let web = &config.services["web"];
    assert_eq!(web.replicas, Replicas { bounds: Bounds { min: 1, max: 1 }, desired: 1 });
    assert_eq!(web.cpu, 1.0);
    assert!(web.env.is_empty());
    assert_eq!(web.stop_timeout, Duration::from_secs(10));
    assert_eq!(web.drain_timeout, Duration::from_secs(30));
    assert_eq!(web.balance, BalanceAlgorithm::LeastOutstanding);

    // ALB target-group defaults.
    let h = &web.health;
    let alb = HealthConfig::default();
    assert_eq!(h.path, "/");
    assert_eq!(h.interval, Duration::from_secs(30));
    assert_eq!(h.timeout, Duration::from_secs(5));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (5, 2));
    assert_eq!(h.matcher.as_str(), "200");
    assert_eq!(h.grace_period, Duration::ZERO);
    assert_eq!(
        (h.path.as_str(), h.interval, h.healthy_threshold),
        (alb.path.as_str(), alb.interval, alb.healthy_threshold)
    );

    let p = &web.proxy;
    let d = ProxyConfig::default();
    assert_eq!(
        (
            p.header_read_timeout,
            p.idle_timeout,
            p.body_timeout,
            p.upstream_timeout,
            p.connect_timeout,
            p.max_header_bytes
        ),
        (
            d.header_read_timeout,
            d.idle_timeout,
            d.body_timeout,
            d.upstream_timeout,
            d.connect_timeout,
            d.max_header_bytes
        )
    );
    assert_eq!(p.send_timeout, d.send_timeout);
    assert!(p.trusted_proxies.is_empty());
}

#[test]
fn replica_bounds_fill_in_from_what_is_given() {
    for (replicas, want) in [
        ("{ min = 2, max = 4 }", (2, 4, 2)), // desired defaults to min
        ("{ desired = 3 }", (1, 3, 3)),      // min 1, max = max(min, desired)
        ("{ max = 5 }", (1, 5, 1)),
        ("{ min = 3 }", (3, 3, 3)),
        ("{}", (1, 1, 1)),
        ("{ min = 1000, max = 1000 }", (1000, 1000, 1000)),
    ] {
        let config = parse(&format!("{MINIMAL}replicas = {replicas}\n"));
        let r = config.services["web"].replicas;
        assert_eq!((r.bounds.min, r.bounds.max, r.desired), want, "replicas = {replicas}");
    }
}

#[test]
fn a_web_service_at_min_zero_has_an_idle_table_with_defaults() {
    let config = parse(&format!("{MINIMAL}replicas = {{ min = 0, max = 2 }}\n[service.web.idle]\nafter = \"5m\"\n"));
    let web = &config.services["web"];
    let r = web.replicas;
    assert_eq!((r.bounds.min, r.bounds.max, r.desired), (0, 2, 0), "may scale to zero");
    let idle = web.idle.as_ref().expect("idle is on");
    assert_eq!(idle.after, Duration::from_secs(300));
    assert_eq!(idle.mode, ebb_core::config::IdleMode::Stop);
    assert_eq!(idle.hold_timeout, Duration::from_secs(30));
    assert_eq!(idle.max_held, 1000);
    assert!(idle.ignore_user_agents.is_empty());
    assert!(parse(MINIMAL).services["web"].idle.is_none(), "no table, never idle");
}

#[test]
fn every_idle_key_is_read() {
    let config = parse(&format!(
        "{MINIMAL}replicas = {{ min = 0, max = 4, desired = 1 }}\n[service.web.idle]\nafter = \"2s\"\nmode = \"suspend\"\nhold_timeout = \"5s\"\nmax_held = 3\nignore_user_agents = [\"UptimeRobot\", \"kube-probe\"]\n"
    ));
    let idle = config.services["web"].idle.clone().unwrap();
    assert_eq!(idle.after, Duration::from_secs(2));
    assert_eq!(idle.mode, ebb_core::config::IdleMode::Suspend);
    assert_eq!(idle.hold_timeout, Duration::from_secs(5));
    assert_eq!(idle.max_held, 3);
    assert!(idle.ignores("Mozilla/5.0+(compatible; UptimeRobot/2.0)"), "a part of the agent, any case");
    assert!(idle.ignores("KUBE-PROBE/1.29"));
    assert!(!idle.ignores("curl/8.5"));
}

#[test]
fn dotted_keys_and_inline_tables_mean_the_same() {
    let dotted = parse(&format!("{MINIMAL}replicas.min = 2\nreplicas.max = 3\nhealth.path = \"/up\"\n"));
    let inline = parse(&format!("{MINIMAL}replicas = {{ min = 2, max = 3 }}\nhealth = {{ path = \"/up\" }}\n"));
    for config in [dotted, inline] {
        let web = &config.services["web"];
        assert_eq!(web.replicas, Replicas { bounds: Bounds { min: 2, max: 3 }, desired: 2 });
        assert_eq!(web.health.path, "/up");
    }
}

#[test]
fn every_key_can_be_set() {
    let config = parse(
        r#"
state_dir = "/var/lib/ebb"
[admin]
listen = "0.0.0.0:9000"

[service.api]
command = ["{ebb}", "demo-app", "--port", "$PORT"]
listen = "[::1]:8081"
replicas = { min = 1, max = 20, desired = 5 }
cpu = 0.5
env = { RUST_LOG = "info", EMPTY = "" }
stop_timeout = "500ms"
drain_timeout = "2m"
balance = "round_robin"

[service.api.health]
path = "/healthz?deep=1"
interval = "1s"
timeout = "900ms"
healthy_threshold = 1
unhealthy_threshold = 10
matcher = "200-299"
grace_period = "0s"

[service.api.proxy]
header_read_timeout = "3s"
idle_timeout = "90s"
body_timeout = "15s"
upstream_timeout = "29s"
send_timeout = "7s"
connect_timeout = "250ms"
max_header_bytes = 1024
trusted_proxies = ["127.0.0.1", "::1", "10.0.0.7"]
request_buffering = "64KiB"

[service.worker_2]
command = "sleep infinity"
listen = "127.0.0.1:0"
"#,
    );
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/ebb"), "absolute state_dir is kept");
    assert_eq!(config.admin.listen, addr("0.0.0.0:9000"));
    assert_eq!(config.services.keys().collect::<Vec<_>>(), ["api", "worker_2"]);
    let api = &config.services["api"];
    assert_eq!(
        api.command,
        CommandSpec::Argv(vec!["{ebb}".into(), "demo-app".into(), "--port".into(), "$PORT".into()])
    );
    assert_eq!(api.listen, addr("[::1]:8081"));
    assert_eq!(api.replicas, Replicas { bounds: Bounds { min: 1, max: 20 }, desired: 5 });
    assert_eq!(api.cpu, 0.5);
    assert_eq!(api.env.len(), 2);
    assert_eq!(api.stop_timeout, Duration::from_millis(500));
    assert_eq!(api.drain_timeout, Duration::from_secs(120));
    assert_eq!(api.balance, BalanceAlgorithm::RoundRobin);
    assert_eq!(api.health.timeout, Duration::from_millis(900));
    assert_eq!((api.health.healthy_threshold, api.health.unhealthy_threshold), (1, 10));
    assert!(api.health.matcher.matches(204));
    assert_eq!(api.proxy.body_timeout, Duration::from_secs(15));
    assert_eq!(api.proxy.upstream_timeout, Duration::from_secs(29));
    assert_eq!(api.proxy.send_timeout, Duration::from_secs(7));
    assert_eq!(api.proxy.connect_timeout, Duration::from_millis(250));
    assert_eq!(api.proxy.max_header_bytes, 1024);
    assert_eq!(api.proxy.trusted_proxies.len(), 3);
    assert_eq!(api.proxy.request_buffering, 64 * 1024);
    assert_eq!(config.services["worker_2"].proxy.request_buffering, 0, "off by default");
}

/// The reference page's examples are real: every complete file in it parses,
/// and the "complete example" spells out the defaults it claims to.
#[test]
fn the_examples_in_docs_config_md_parse() {
    let doc = include_str!("../../../docs/config.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .filter(|b| b.contains("command ="))
        .collect();
    assert!(blocks.len() >= 2, "expected the complete and the smallest example");
    for block in &blocks {
        parse(block);
    }
    let web = parse(blocks[0]).services.remove("web").unwrap();
    let minimal = parse(MINIMAL).services.remove("web").unwrap();
    assert_eq!(format!("{:?}", web.health), format!("{:?}", minimal.health), "health defaults as documented");
    assert_eq!(format!("{:?}", web.proxy), format!("{:?}", minimal.proxy), "proxy defaults as documented");
    assert_eq!(
        (web.cpu, web.stop_timeout, web.drain_timeout, web.balance),
        (minimal.cpu, minimal.stop_timeout, minimal.drain_timeout, minimal.balance)
    );
    assert_eq!(web.deploy, minimal.deploy, "deploy defaults as documented");
    assert_eq!((web.kind, web.chaos), (minimal.kind, minimal.chaos), "chaos is off in the complete example");

    // Scaling: the values the page calls defaults are the defaults.
    let s = &web.scaling;
    assert_eq!(s.warmup, minimal.scaling.warmup);
    assert_eq!(s.burst, Some(ebb_core::scaling::Burst::default()));
    assert_eq!(s.target_tracking[0], TargetTracking::new(Metric::Cpu, 80.0));
    let step = &s.step[0];
    let a = &step.alarm;
    assert_eq!(
        (a.statistic, a.period, a.evaluation_periods, a.datapoints_to_alarm),
        (Statistic::Average, ebb_core::scaling::Alarm::DEFAULT_PERIOD, 1, 1)
    );
    assert_eq!(
        (step.adjustment_type, step.cooldown),
        (AdjustmentType::ChangeInCapacity, ebb_core::scaling::StepPolicy::DEFAULT_COOLDOWN)
    );
    let minimal_tt = parse(&format!("{MINIMAL}[[service.web.scaling.step]]\nalarm = {{ metric = \"cpu\", comparison = \">\", threshold = 60 }}\nsteps = [{{ lower = 0, adjustment = 1 }}]\n"));
    let d = &minimal_tt.services["web"].scaling.step[0];
    assert_eq!(
        (d.alarm.statistic, d.alarm.period, d.adjustment_type, d.cooldown),
        (a.statistic, a.period, step.adjustment_type, step.cooldown)
    );
}

#[test]
fn story_s3_loosened_health_check_is_expressible() {
    // S3: unhealthy 5, timeout 29 s, interval 30 s.
    let config = parse(&format!(
        "{MINIMAL}[service.web.health]\nunhealthy_threshold = 5\ntimeout = \"29s\"\ninterval = \"30s\"\n"
    ));
    let h = &config.services["web"].health;
    assert_eq!((h.unhealthy_threshold, h.timeout, h.interval), (5, Duration::from_secs(29), Duration::from_secs(30)));
}

#[test]
fn state_dir_is_resolved_against_the_config_file() {
    for (file, state_dir, want) in [
        ("ebb.toml", None, ".ebb"),
        ("deploy/ebb.toml", None, "deploy/.ebb"),
        ("deploy/ebb.toml", Some("state"), "deploy/state"),
        ("/etc/ebb/ebb.toml", Some("../run"), "/etc/ebb/../run"),
        ("deploy/ebb.toml", Some("/abs"), "/abs"),
    ] {
        let source = match state_dir {
            Some(dir) => format!("state_dir = {dir:?}\n{MINIMAL}"),
            None => MINIMAL.to_string(),
        };
        let config = Config::parse(&source, Path::new(file)).unwrap();
        assert_eq!(config.state_dir, PathBuf::from(want), "{file} + {state_dir:?}");
        assert_eq!(config.path, PathBuf::from(file));
    }
}

#[test]
fn separate_ports_and_port_zero_never_clash() {
    parse(
        r#"
[service.a]
command = "a"
listen = "127.0.0.1:0"
[service.b]
command = "b"
listen = "127.0.0.1:0"
[service.c]
command = "c"
listen = "127.0.0.2:8080"
[service.d]
command = "d"
listen = "127.0.0.1:8080"
"#,
    );
}

/// Parsing must answer Ok or Err for any input, never panic: every prefix
/// of the default config (cut anywhere, including inside a string or a
/// header), and the default config with single characters replaced by the
/// ones most likely to confuse a parser.
#[test]
fn damaged_input_never_panics() {
    let path = Path::new("ebb.toml");
    let source = format!("{DEFAULT_CONFIG}\n[service.api]\ncommand = [\"x\"]\nlisten = \"127.0.0.1:8081\"\n[service.api.proxy]\ntrusted_proxies = [\"::1\"]\n# é ü 東京\n");
    let cuts = source.char_indices().map(|(i, _)| i).chain([source.len()]);
    for cut in cuts {
        let _ = Config::parse(&source[..cut], path);
    }
    let nasty = ['"', '\'', '[', ']', '{', '}', '=', '\n', '.', ',', '#', '\\', '0', '-', 'é', '東', '\0', ' '];
    // A fixed linear congruential sequence: reproducible, no dependency.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let chars: Vec<char> = source.chars().collect();
    for _ in 0..3000 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let at = (seed >> 33) as usize % chars.len();
        let with = nasty[(seed >> 20) as usize % nasty.len()];
        let mut damaged = chars.clone();
        damaged[at] = with;
        let damaged: String = damaged.into_iter().collect();
        if let Err(e) = Config::parse(&damaged, path) {
            let shown = e.to_string();
            assert!(shown.starts_with("ebb.toml"), "every error names the file: {shown}");
        }
    }
}

#[test]
fn errors_carry_line_and_column() {
    let err = Config::parse(&format!("{MINIMAL}replicas = {{ min = 2, max = 4, desired = 5 }}\n"), Path::new("x.toml"))
        .unwrap_err();
    assert_eq!((err.line, err.column), (5, 42));
    assert_eq!(err.message, "replicas.desired (5) is above replicas.max (4); raise max or lower desired");
    assert_eq!(err.file, PathBuf::from("x.toml"));
}

// ---------------------------------------------------------------------------
// [service.NAME.scaling]
// ---------------------------------------------------------------------------

use ebb_core::scaling::{AdjustmentType, Comparison, Metric, RateLimit, Statistic, StepAdjustment, TargetTracking};

#[test]
fn a_service_without_scaling_is_a_fixed_fleet() {
    let scaling = &parse(MINIMAL).services["web"].scaling;
    assert!(scaling.is_fixed());
    assert_eq!(scaling.warmup, Duration::ZERO);
    assert_eq!(scaling.burst, None);
    let empty = parse(&format!("{MINIMAL}[service.web.scaling]\n"));
    assert!(empty.services["web"].scaling.is_fixed());
}

#[test]
fn target_tracking_defaults_follow_the_hpa() {
    let config = parse(&format!("{MINIMAL}[[service.web.scaling.target_tracking]]\nmetric = \"cpu\"\ntarget = 80\n"));
    let tt = &config.services["web"].scaling.target_tracking[0];
    assert_eq!(tt, &TargetTracking::new(Metric::Cpu, 80.0));
    assert_eq!(tt.name, "target-cpu");
    assert_eq!(tt.tolerance, 0.1);
    assert_eq!(tt.window, Duration::from_secs(60));
    assert_eq!((tt.scale_out_cooldown, tt.scale_in_cooldown), (Duration::from_secs(60), Duration::from_secs(300)));
    assert_eq!(tt.scale_in_stabilization, Duration::from_secs(300));
    assert!(!tt.disable_scale_in);
    assert_eq!(tt.scale_out_rate, RateLimit { percent: 100.0, replicas: 4, period: Duration::from_secs(15) });
    assert_eq!(tt.scale_in_rate, RateLimit { percent: 100.0, replicas: 0, period: Duration::from_secs(15) });
}

#[test]
fn every_scaling_key_can_be_set() {
    let config = parse(&format!(
        r#"{MINIMAL}replicas = {{ min = 1, max = 20 }}

[service.web.scaling]
warmup = "45s"
burst = {{ window = "10s", threshold = 3, duration = "2m" }}

[[service.web.scaling.target_tracking]]
name = "latency"
metric = "p95_latency"
target = 250
tolerance = 0.05
window = "30s"
scale_out_cooldown = "10s"
scale_in_cooldown = "10m"
scale_in_stabilization = "15m"
disable_scale_in = true
scale_out_rate = {{ replicas = 2, period = "30s" }}
scale_in_rate = {{ percent = 10 }}

[[service.web.scaling.step]]
name = "queue"
alarm = {{ metric = "queue_time", statistic = "p99.9", comparison = "GreaterThanOrEqualToThreshold", threshold = 20.5, period = "10s", evaluation_periods = 5, datapoints_to_alarm = 3 }}
adjustment_type = "percent_change_in_capacity"
min_adjustment_magnitude = 2
steps = [{{ lower = 50, adjustment = 50 }}, {{ lower = 0, upper = 50, adjustment = 10 }}]
cooldown = "0s"

[[service.web.scaling.scheduled]]
name = "nightly"
cron = "30 22 * * *"
min = 0
max = 2
desired = 0
"#
    ));
    let s = &config.services["web"].scaling;
    assert_eq!(s.warmup, Duration::from_secs(45));
    let burst = s.burst.unwrap();
    assert_eq!(
        (burst.window, burst.threshold, burst.duration),
        (Duration::from_secs(10), 3.0, Duration::from_secs(120))
    );

    let tt = &s.target_tracking[0];
    assert_eq!((tt.name.as_str(), tt.metric, tt.target, tt.tolerance), ("latency", Metric::P95Latency, 250.0, 0.05));
    assert_eq!((tt.window, tt.scale_out_cooldown), (Duration::from_secs(30), Duration::from_secs(10)));
    assert_eq!((tt.scale_in_cooldown, tt.scale_in_stabilization), (Duration::from_secs(600), Duration::from_secs(900)));
    assert!(tt.disable_scale_in);
    assert_eq!(tt.scale_out_rate, RateLimit { percent: 0.0, replicas: 2, period: Duration::from_secs(30) });
    assert_eq!(tt.scale_in_rate, RateLimit { percent: 10.0, replicas: 0, period: Duration::from_secs(15) });

    let step = &s.step[0];
    assert_eq!(step.name, "queue");
    let a = &step.alarm;
    assert_eq!(
        (a.metric, a.statistic, a.comparison),
        (Metric::QueueTime, Statistic::Percentile(99.9), Comparison::GreaterOrEqual)
    );
    assert_eq!(
        (a.threshold, a.period, a.evaluation_periods, a.datapoints_to_alarm),
        (20.5, Duration::from_secs(10), 5, 3)
    );
    assert_eq!(step.adjustment_type, AdjustmentType::PercentChangeInCapacity);
    assert_eq!(step.min_adjustment_magnitude, Some(2));
    assert_eq!(
        step.steps,
        [
            StepAdjustment { lower: Some(0.0), upper: Some(50.0), adjustment: 10 },
            StepAdjustment { lower: Some(50.0), upper: None, adjustment: 50 },
        ],
        "sorted by bounds"
    );
    assert_eq!(step.cooldown, Duration::ZERO);

    let nightly = &s.scheduled[0];
    assert_eq!((nightly.name.as_str(), nightly.cron.as_str()), ("nightly", "30 22 * * *"));
    assert_eq!((nightly.min, nightly.max, nightly.desired), (Some(0), Some(2), Some(0)));
    assert_eq!(s.history_needed(), Duration::from_secs(50), "the alarm's 5 × 10 s is the longest span");
}

#[test]
fn scaling_tables_can_be_written_every_toml_way() {
    // Headers for the alarm and the steps, dotted keys for the rate limit.
    let headers = parse(&format!(
        r#"{MINIMAL}
[[service.web.scaling.step]]
name = "cpu-high"
cooldown = "2m"
[service.web.scaling.step.alarm]
metric = "cpu"
comparison = ">"
threshold = 60
[[service.web.scaling.step.steps]]
lower = 0
adjustment = 1

[[service.web.scaling.target_tracking]]
metric = "requests_per_replica"
target = 100
scale_out_rate.replicas = 1
"#
    ));
    // The same as inline tables and arrays.
    let inline = parse(&format!(
        r#"{MINIMAL}
[service.web.scaling]
step = [{{ name = "cpu-high", cooldown = "2m", alarm = {{ metric = "cpu", comparison = ">", threshold = 60 }}, steps = [{{ lower = 0, adjustment = 1 }}] }}]
target_tracking = [{{ metric = "requests_per_replica", target = 100, scale_out_rate = {{ replicas = 1 }} }}]
"#
    ));
    assert_eq!(headers.services["web"].scaling, inline.services["web"].scaling);
    let s = &headers.services["web"].scaling;
    assert_eq!(s.step[0].alarm.statistic, Statistic::Average, "the default statistic");
    assert_eq!((s.step[0].alarm.evaluation_periods, s.step[0].alarm.datapoints_to_alarm), (1, 1));
    assert_eq!(s.step[0].alarm.period, Duration::from_secs(60));
    assert_eq!(s.target_tracking[0].scale_out_rate.replicas, 1);
}

#[test]
fn policies_get_unique_default_names() {
    let config = parse(&format!(
        r#"{MINIMAL}
[[service.web.scaling.target_tracking]]
metric = "cpu"
target = 80
[[service.web.scaling.target_tracking]]
metric = "cpu"
target = 50
[[service.web.scaling.step]]
alarm = {{ metric = "cpu", comparison = "<", threshold = 10 }}
steps = [{{ upper = 0, adjustment = -1 }}]
[[service.web.scaling.scheduled]]
cron = "0 8 * * MON-FRI"
min = 1
"#
    ));
    let s = &config.services["web"].scaling;
    let names: Vec<&str> = s
        .target_tracking
        .iter()
        .map(|t| t.name.as_str())
        .chain(s.step.iter().map(|p| p.name.as_str()))
        .chain(s.scheduled.iter().map(|a| a.name.as_str()))
        .collect();
    assert_eq!(names, ["target-cpu", "target-cpu-2", "step-1", "scheduled-1"]);
}

// ---------------------------------------------------------------------------
// Lifecycle: kind, [service.NAME.deploy], metric_source, chaos
// ---------------------------------------------------------------------------

use ebb_core::config::{ChaosConfig, DeployConfig, DeployStrategy, MetricReading, MetricSource, ServiceKind};

#[test]
fn lifecycle_defaults() {
    let web = &parse(MINIMAL).services["web"];
    assert_eq!(web.kind, ServiceKind::Web);
    assert_eq!(web.deploy, DeployConfig::default());
    let d = &web.deploy;
    assert_eq!((d.strategy, d.max_surge, d.max_unavailable), (DeployStrategy::Rolling, 1, 0));
    assert_eq!(d.deploy_timeout, Duration::from_secs(600));
    assert_eq!(d.effective_bake_time(), Duration::ZERO, "rolling: no bake time unless asked");
    assert_eq!(d.clone().with_strategy(DeployStrategy::BlueGreen).effective_bake_time(), Duration::from_secs(300));
    assert_eq!(d.protected_wait, Duration::from_secs(300));
    assert_eq!(web.metric_source, None);
    assert_eq!(web.chaos, None);
    let empty = parse(&format!("{MINIMAL}[service.web.deploy]\n"));
    assert_eq!(empty.services["web"].deploy, DeployConfig::default());
}

#[test]
fn every_deploy_key_can_be_set() {
    let config = parse(&format!(
        r#"{MINIMAL}
[service.web.deploy]
strategy = "blue-green"
max_surge = 0
max_unavailable = 2
deploy_timeout = "3m"
bake_time = "0s"
protected_wait = "1h"
"#
    ));
    let d = &config.services["web"].deploy;
    assert_eq!(
        *d,
        DeployConfig {
            strategy: DeployStrategy::BlueGreen,
            max_surge: 0,
            max_unavailable: 2,
            deploy_timeout: Duration::from_secs(180),
            bake_time: Some(Duration::ZERO),
            protected_wait: Duration::from_secs(3600),
        }
    );
    assert_eq!(d.effective_bake_time(), Duration::ZERO, "an explicit 0 means no bake time");
    let blue_green = parse(&format!("{MINIMAL}deploy = {{ strategy = \"blue-green\" }}\n"));
    assert_eq!(blue_green.services["web"].deploy.effective_bake_time(), Duration::from_secs(300));
    // The health check decides how short deploy_timeout may be: 2 × 1 s here.
    let quick = parse(&format!(
        "{MINIMAL}health = {{ interval = \"1s\", timeout = \"500ms\", healthy_threshold = 3 }}\ndeploy.deploy_timeout = \"3s\"\n"
    ));
    assert_eq!(quick.services["web"].deploy.deploy_timeout, Duration::from_secs(3));
}

#[test]
fn a_worker_has_no_listen_and_scales_on_a_metric_source() {
    let config = parse(
        r#"
[service.web]
command = "python app.py --port $PORT"
listen = "127.0.0.1:8080"

[service.scraper]
kind = "worker"
command = "python scrape.py"
replicas = { min = 1, max = 8 }

[service.scraper.metric_source]
command = "redis-cli llen jobs"
interval = "5s"

[[service.scraper.scaling.target_tracking]]
metric = "items_per_replica"
target = 10

[service.feeder]
kind = "worker"
command = ["python", "feed.py"]
metric_source = { url = "http://127.0.0.1:9000/stats", json_pointer = "/queue/length" }

[[service.feeder.scaling.step]]
alarm = { metric = "items_per_replica", comparison = ">", threshold = 50 }
steps = [{ lower = 0, adjustment = 1 }]
"#,
    );
    let scraper = &config.services["scraper"];
    assert_eq!(scraper.kind, ServiceKind::Worker);
    assert!(!scraper.kind.has_balancer());
    assert_eq!(scraper.listen, addr("127.0.0.1:0"), "a worker's listen means nothing");
    assert_eq!(
        scraper.metric_source,
        Some(MetricSource {
            reading: MetricReading::Command(CommandSpec::Shell("redis-cli llen jobs".into())),
            interval: Duration::from_secs(5),
        })
    );
    assert_eq!(scraper.scaling.target_tracking[0].metric, Metric::ItemsPerReplica);
    assert_eq!(scraper.scaling.target_tracking[0].name, "target-items_per_replica");
    let feeder = &config.services["feeder"];
    assert_eq!(
        feeder.metric_source,
        Some(MetricSource {
            reading: MetricReading::Http {
                url: "http://127.0.0.1:9000/stats".into(),
                json_pointer: "/queue/length".into()
            },
            interval: MetricSource::DEFAULT_INTERVAL,
        })
    );
    // A web service may read an external number too.
    let web = parse(&format!(
        "{MINIMAL}metric_source = {{ url = \"http://10.0.0.5/len\" }}\n[[service.web.scaling.target_tracking]]\nmetric = \"items_per_replica\"\ntarget = 5\n"
    ));
    let source = web.services["web"].metric_source.clone().unwrap();
    assert_eq!(source.reading, MetricReading::Http { url: "http://10.0.0.5/len".into(), json_pointer: String::new() });
}

#[test]
fn metric_source_output_is_one_number() {
    assert_eq!(MetricSource::parse_output("42\n"), Ok(42.0));
    assert_eq!(MetricSource::parse_output("  3.5  "), Ok(3.5));
    assert_eq!(
        MetricSource::parse_output("(integer) 7\n").unwrap_err(),
        r#"the metric source printed "(integer) 7"; expected one number, like 42"#
    );
    assert!(MetricSource::parse_output("-1").unwrap_err().contains("0 or more"));
    assert!(MetricSource::parse_output("NaN").is_err());
}

#[test]
fn chaos_is_off_unless_asked_and_bounded() {
    let config = parse(&format!("{MINIMAL}[service.web.chaos]\ninterrupt_every = \"10m\"\n"));
    let chaos = config.services["web"].chaos.unwrap();
    assert_eq!(chaos, ChaosConfig { interrupt_every: Duration::from_secs(600), notice: Duration::from_secs(120) });
    // A Poisson process: over one mean interval, 1 - 1/e.
    assert!((chaos.chance(Duration::from_secs(600)) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    assert!((chaos.chance(Duration::from_secs(1)) - 1.0 / 600.0).abs() < 1e-5);
    assert_eq!(chaos.chance(Duration::ZERO), 0.0);
    let inline = parse(&format!("{MINIMAL}chaos = {{ interrupt_every = \"30s\", notice = \"10s\" }}\n"));
    assert_eq!(inline.services["web"].chaos.unwrap().notice, Duration::from_secs(10));
}

#[test]
fn container_drivers_take_image_port_cpus_and_memory() {
    let config = parse(
        r#"
[service.web]
driver = "docker"
image = "ebb-demo:latest"
container_port = 9000
cpus = 0.5
memory = "256MiB"
listen = "127.0.0.1:8080"

[service.swarmed]
driver = "swarm"
image = "ebb-demo:v2"
command = ["/ebb", "demo-app", "--host", "0.0.0.0"]
listen = "127.0.0.1:8081"
"#,
    );
    let web = &config.services["web"];
    assert_eq!(web.driver, ebb_core::config::DriverKind::Docker);
    let c = web.container.as_ref().unwrap();
    assert_eq!(
        (c.image.as_str(), c.container_port, c.cpus, c.memory),
        ("ebb-demo:latest", 9000, Some(0.5), Some(256 << 20))
    );
    assert_eq!(web.cpu, 0.5, "a container's allotment is its cpus limit");
    assert_eq!(web.command, ebb_core::config::CommandSpec::Argv(Vec::new()), "no command: the image's own");
    let swarmed = &config.services["swarmed"];
    assert_eq!(swarmed.driver, ebb_core::config::DriverKind::Swarm);
    let c = swarmed.container.as_ref().unwrap();
    assert_eq!((c.container_port, c.cpus, c.memory), (8080, None, None), "defaults");
    assert_eq!(swarmed.cpu, 1.0);
    assert_eq!(
        swarmed.command.clone(),
        ebb_core::config::CommandSpec::Argv(vec!["/ebb".into(), "demo-app".into(), "--host".into(), "0.0.0.0".into()])
    );
    // The process driver is the default and has no container.
    let plain = parse(MINIMAL);
    assert_eq!(plain.services["web"].driver, ebb_core::config::DriverKind::Process);
    assert!(plain.services["web"].container.is_none());
}

#[test]
fn outlier_detection_is_on_by_default_and_every_key_can_be_set() {
    let web = parse(MINIMAL).services.remove("web").unwrap();
    assert_eq!(web.proxy.outlier, ebb_core::outlier::OutlierConfig::default());
    assert!(web.proxy.outlier.enabled);

    let set = parse(&format!(
        "{MINIMAL}[service.web.proxy.outlier]\nenabled = false\nconsecutive_5xx = 3\nconsecutive_gateway_failures = 2\nfailure_percent = 25.5\nfailure_window = \"30s\"\nfailure_min_requests = 100\nbase_ejection_time = \"5s\"\nmax_ejection_time = \"1m\"\nmax_ejection_percent = 10\n"
    ));
    let o = &set.services["web"].proxy.outlier;
    assert_eq!(
        (o.enabled, o.consecutive_5xx, o.consecutive_gateway_failures, o.failure_percent, o.failure_min_requests),
        (false, 3, 2, 25.5, 100)
    );
    assert_eq!(
        (o.failure_window, o.base_ejection_time, o.max_ejection_time, o.max_ejection_percent),
        (Duration::from_secs(30), Duration::from_secs(5), Duration::from_secs(60), 10)
    );
    // Only what is written changes.
    let one = parse(&format!("{MINIMAL}proxy.outlier = {{ consecutive_5xx = 2 }}\n"));
    let one = &one.services["web"].proxy.outlier;
    assert_eq!((one.consecutive_5xx, one.base_ejection_time), (2, Duration::from_secs(30)));
}

#[test]
fn max_connections_is_derived_unless_set() {
    let web = parse(MINIMAL).services.remove("web").unwrap();
    assert_eq!(web.proxy.max_connections, None, "ebb up derives it from the open-file limit");
    let set = parse(&format!("{MINIMAL}proxy.max_connections = 5000\n"));
    assert_eq!(set.services["web"].proxy.max_connections, Some(5000));
}

#[test]
fn a_listener_routes_to_services_that_need_no_listen_of_their_own() {
    let config = Config::parse(
        r#"
[service.api]
command = "api --port $PORT"

[service.web]
command = "web --port $PORT"
listen = "127.0.0.1:8081"

[listener.public]
listen = "0.0.0.0:8443"
http = "0.0.0.0:8080"
tls = { cert = "certs/site.pem", key = "certs/site.key" }
hsts = "365d"

[listener.public.proxy]
idle_timeout = "20s"
max_connections = 500

[[listener.public.route]]
host = "API.example.com"
methods = ["GET", "POST"]
headers = { "X-Canary" = "1" }
service = "api"

[[listener.public.route]]
path_prefix = "/static/"
service = "web"

[[listener.public.route]]
service = "web"
"#,
        Path::new("/srv/app/ebb.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.services["api"].own_listen, "routed only: no listener of its own");
    assert!(config.services["web"].own_listen);
    let public = &config.listeners["public"];
    assert_eq!(public.listen, addr("0.0.0.0:8443"));
    assert_eq!(public.http, Some(addr("0.0.0.0:8080")));
    assert_eq!(public.hsts, Some(Duration::from_secs(365 * 86400)));
    let tls = public.tls.as_ref().unwrap();
    assert_eq!(tls.certs[0].cert, PathBuf::from("/srv/app/certs/site.pem"), "relative to the config file");
    assert_eq!(public.proxy.idle_timeout, Duration::from_secs(20));
    assert_eq!(public.proxy.max_connections, Some(500));
    let routes = &public.routes.routes;
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0].describe(), "host api.example.com, methods GET,POST, header x-canary: 1");
    assert!(routes[2].is_default());
    assert_eq!(public.routes.services(), ["api", "web"]);
}

#[test]
fn configs_without_listeners_have_none() {
    let config = parse(MINIMAL);
    assert!(config.listeners.is_empty());
    assert!(config.services["web"].own_listen);
}

#[test]
fn tls_acme_takes_domains_and_defaults_to_lets_encrypt_production() {
    let config = parse(
        r#"
[service.web]
command = "web --port $PORT"

[listener.public]
listen = "0.0.0.0:443"
http = "0.0.0.0:80"
tls.acme = { domains = ["Shop.Example.com.", "api.example.com"], email = "mailto:ops@example.com" }

[[listener.public.route]]
service = "web"
"#,
    );
    let tls = config.listeners["public"].tls.clone().unwrap();
    assert!(tls.certs.is_empty());
    let acme = tls.acme.unwrap();
    assert_eq!(acme.domains, ["shop.example.com", "api.example.com"], "lower case, no trailing dot");
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.directory, ebb_core::config::LETS_ENCRYPT_PRODUCTION);
    assert_eq!(acme.directory_ca, None);
    assert_eq!(acme.renew_before, std::time::Duration::from_secs(30 * 86_400));

    let private = parse(
        r#"
[service.web]
command = "web --port $PORT"

[listener.public]
listen = "0.0.0.0:443"
http = "0.0.0.0:80"

[listener.public.tls.acme]
domains = ["shop.example.com"]
directory = "https://acme.internal/dir"
directory_ca = "ca/root.pem"
renew_before = "10d"

[[listener.public.route]]
service = "web"
"#,
    );
    let acme = private.listeners["public"].tls.clone().unwrap().acme.unwrap();
    assert_eq!(acme.directory, "https://acme.internal/dir");
    assert_eq!(acme.directory_ca.as_deref(), Some(Path::new("ca/root.pem")));
    assert_eq!(acme.renew_before, std::time::Duration::from_secs(10 * 86_400));
}

#[test]
fn tls_acme_without_http_is_allowed_acme_answers_tls_alpn_01_on_listen() {
    let config = parse(
        r#"
[service.web]
command = "web --port $PORT"

[listener.public]
listen = "0.0.0.0:443"
tls.acme = { domains = ["shop.example.com"] }

[[listener.public.route]]
service = "web"
"#,
    );
    let listener = &config.listeners["public"];
    assert_eq!(listener.http, None);
    assert_eq!(listener.tls.clone().unwrap().acme.unwrap().domains, ["shop.example.com"]);
}
