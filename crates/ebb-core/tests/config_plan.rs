//! Golden files for `ebb plan`: each `tests/plan/NAME.toml` is planned
//! against `tests/plan/base.toml` (the running file; web runs 2 replicas,
//! api 2, old 3) and must print exactly `NAME.plan`.
//!
//! A new case is one file; write the `.toml`, run with `UPDATE_GOLDEN=1` to
//! create the `.plan`, then read it as a user would.
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p ebb-core --test config_plan
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use ebb_core::config::plan::{plan, Effect, Op, Subject};
use ebb_core::config::Config;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plan")
}

fn parse(name: &str) -> Config {
    let path = dir().join(name);
    Config::parse(&fs::read_to_string(&path).unwrap(), &path).unwrap_or_else(|e| panic!("{e}"))
}

fn running() -> BTreeMap<String, u32> {
    [("web", 2), ("api", 2), ("old", 3)].into_iter().map(|(n, c)| (n.to_string(), c)).collect()
}

#[test]
fn plans_read_as_the_golden_files_say() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0");
    let base = parse("base.toml");
    let mut cases: Vec<String> = fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml") && n != "base.toml")
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "expected at least 5 golden cases, found {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let actual = plan(&base, &parse(case), &running()).to_string();
        let golden = dir().join(case.replace(".toml", ".plan"));
        if update {
            fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            failures.push(format!("--- {case}\nexpected:\n{expected}\nactual:\n{actual}"));
        }
    }
    assert!(failures.is_empty(), "rerun with UPDATE_GOLDEN=1 to accept:\n{}", failures.join("\n"));
}

#[test]
fn the_same_file_plans_nothing_and_a_rewritten_one_too() {
    let base = parse("base.toml");
    assert!(plan(&base, &base, &running()).is_empty());
    let rewritten = plan(&base, &parse("unchanged.toml"), &running());
    assert!(rewritten.is_empty(), "{rewritten}");
}

#[test]
fn each_change_has_the_consequence_a_running_fleet_would_see() {
    let base = parse("base.toml");
    let in_place = plan(&base, &parse("in-place.toml"), &running());
    assert!(!in_place.is_empty());
    assert!(in_place.changes.iter().all(|c| c.effect == Effect::InPlace), "{in_place}");
    assert!(in_place.deploys().is_empty() && in_place.refused().next().is_none());

    let deploy = plan(&base, &parse("deploy.toml"), &running());
    assert_eq!(deploy.deploys(), ["api"]);
    assert!(deploy.changes.iter().all(|c| c.effect == Effect::RollingDeploy { replaced: 2 }), "{deploy}");

    let services = plan(&base, &parse("services.toml"), &running());
    let whole: Vec<(Op, &Subject, &Effect)> =
        services.changes.iter().filter(|c| c.key.is_none()).map(|c| (c.op, &c.subject, &c.effect)).collect();
    assert_eq!(
        whole,
        [
            (Op::Add, &Subject::Service("assets".into()), &Effect::StartService { replicas: 1 }),
            (Op::Remove, &Subject::Service("old".into()), &Effect::DrainService { replicas: 3 }),
        ]
    );
    assert!(services
        .to_string()
        .contains("~ listener public: route added: path /static/* -> assets (applied in place)"));

    let refused = plan(&base, &parse("refused.toml"), &running());
    let keys: Vec<&str> = refused.refused().filter_map(|c| c.key.as_deref()).collect();
    assert_eq!(keys, ["driver", "listen", "admin.listen"], "{refused}");
}

/// `[cluster]` is read when ebb starts: a change to it asks for a restart,
/// and says so (not the state directory's message).
#[test]
fn a_cluster_change_needs_a_restart() {
    let file = |target: u32| {
        let text = format!(
            "[service.api]\ndriver = \"swarm\"\nimage = \"api:1\"\nlisten = \"127.0.0.1:8080\"\n\n[cluster]\ntarget_reserved_cpu = {target}\nnodes = {{ min = 2, max = 5 }}\nadd_node = \"new-node\"\nremove_node = \"drop-node {{node}}\"\n"
        );
        Config::parse(&text, Path::new("ebb.toml")).unwrap_or_else(|e| panic!("{e}"))
    };
    let running = BTreeMap::from([("api".to_string(), 1)]);
    let planned = plan(&file(30), &file(40), &running);
    assert_eq!(planned.changes.len(), 1, "{planned:?}");
    let change = &planned.changes[0];
    assert_eq!((change.subject.clone(), change.key.as_deref()), (Subject::Ebb, Some("cluster.target_reserved_cpu")));
    assert_eq!((change.from.as_deref(), change.to.as_deref()), (Some("30"), Some("40")));
    match &change.effect {
        Effect::Refused { fix } => {
            assert!(fix.starts_with("the cluster task reads [cluster] when ebb starts"), "{fix}")
        }
        other => panic!("{other:?}"),
    }
    assert!(plan(&file(30), &file(30), &running).changes.is_empty());
}
