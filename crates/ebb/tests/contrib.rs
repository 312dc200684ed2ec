//! What `contrib/` ships for Prometheus and Grafana: the alert rules and
//! every dashboard query pass `promtool check rules`, and every metric they
//! name is one ebb exports (docs/metrics.md lists each).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `ebb_*` and `process_*` metric names in a text, without the histogram
/// series suffixes.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = text[i..].starts_with("ebb_") || text[i..].starts_with("process_");
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts && boundary {
            let end = text[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |e| i + e);
            let mut name = text[i..end].to_string();
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base.to_string();
                }
            }
            if !names.contains(&name) {
                names.push(name);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

fn promtool(file: &Path) -> Option<(bool, String)> {
    let out = Command::new("promtool").args(["check", "rules"]).arg(file).output().ok()?;
    Some((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

#[test]
fn alert_rules_and_dashboard_queries_are_valid_promql_on_exported_metrics() {
    let rules_path = root().join("contrib/prometheus/ebb-alerts.yml");
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("contrib/grafana/ebb.json")).unwrap()).unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(queries.len() >= 9, "{queries:?}");

    // Every metric named is documented (and so exported).
    let documented = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let mut named = metric_names(&rules);
    named.extend(queries.iter().flat_map(|q| metric_names(q)));
    for name in &named {
        assert!(documented.contains(&format!("`{name}`")), "{name} is not a metric docs/metrics.md lists");
    }
    assert!(named.len() >= 10, "{named:?}");

    // promtool: the rules as they are, and the dashboard's queries as
    // recording rules (Grafana's $service variable as a regex).
    let Some((ok, out)) = promtool(&rules_path) else {
        println!("SKIP: promtool is not installed (scripts/install-test-deps installs Debian's prometheus)");
        return;
    };
    assert!(ok && out.contains("SUCCESS: 7 rules found"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let expr = query.replace("$service", ".*");
        recording.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, recording).unwrap();
    let (ok, out) = promtool(&file).unwrap();
    assert!(ok, "a dashboard query does not parse:\n{out}");
}
