//! Golden files for config errors: each `tests/config_errors/NAME.toml` must
//! fail to parse with exactly the text in `NAME.expected` (the rendered error,
//! file shown as `NAME.toml`, then a newline).
//!
//! A new case is two files; write the `.toml`, run with `UPDATE_GOLDEN=1` to
//! create the `.expected`, then read it: the caret must sit under the culprit
//! and the message must say the fix.
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p ebb-core --test config_errors
//! ```

use ebb_core::config::Config;
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn bad_configs_give_the_expected_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_errors");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/config_errors exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "expected at least 15 golden cases, found {}", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let source = fs::read_to_string(case).unwrap();
        let actual = match Config::parse(&source, Path::new(&name)) {
            Ok(_) => format!("{name} parsed without error, but every golden case must fail\n"),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = case.with_extension("expected");
        if update {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!("--- {name}\n{}", line_diff(&expected, &actual)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (- expected, + actual); rerun with UPDATE_GOLDEN=1 to accept:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Line-by-line comparison; enough for a few-line message.
fn line_diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => out += &format!("  {x}\n"),
            (x, y) => {
                if let Some(x) = x {
                    out += &format!("- {x}\n");
                }
                if let Some(y) = y {
                    out += &format!("+ {y}\n");
                }
            }
        }
    }
    out
}
