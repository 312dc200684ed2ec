//! docs/cli.md is every command's `--help`, as the binary prints it: this
//! test fails when they drift apart. `EBB_WRITE_CLI_DOCS=1 cargo test -p
//! ebb --test cli_docs` writes the page again from the binary.

use std::process::Command;

const EBB: &str = env!("CARGO_BIN_EXE_ebb");
const COMMANDS: &[&str] = &[
    "up",
    "down",
    "status",
    "plan",
    "apply",
    "wait",
    "scale",
    "deploy",
    "rollback",
    "protect",
    "interrupt",
    "dashboard",
    "certs",
    "events",
    "logs",
    "validate",
    "completions",
    "man",
    "demo-app",
    "proxy",
    "load",
    "simulate",
];

/// Commands of commands, each after its parent.
const SUBCOMMANDS: &[&str] = &["certs renew", "certs reload"];

fn help(args: &[&str]) -> String {
    let out = Command::new(EBB).args(args).arg("--help").output().expect("run ebb --help");
    assert!(out.status.success(), "ebb {args:?} --help: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_string()
}

fn page() -> String {
    let mut page = String::from(
        "# Command reference\n\n\
         Every command's `--help`, exactly as `ebb` prints it (a test keeps this page and the binary in step).\n\
         The pages on each capability explain the why: [config.md](config.md), [policies.md](policies.md),\n\
         [deploys.md](deploys.md), [drivers.md](drivers.md), [load.md](load.md), [simulate.md](simulate.md),\n\
         [events.md](events.md), [api.md](api.md), [state.md](state.md), [apply.md](apply.md).\n\n",
    );
    page.push_str(&format!("## ebb\n\n```text\n{}\n```\n", help(&[])));
    for command in COMMANDS {
        page.push_str(&format!("\n## ebb {command}\n\n```text\n{}\n```\n", help(&[command])));
        for sub in SUBCOMMANDS.iter().filter(|s| s.split(' ').next() == Some(command)) {
            let args: Vec<&str> = sub.split(' ').collect();
            page.push_str(&format!("\n## ebb {sub}\n\n```text\n{}\n```\n", help(&args)));
        }
    }
    page
}

#[test]
fn docs_cli_md_is_every_commands_help() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let expected = page();
    if std::env::var_os("EBB_WRITE_CLI_DOCS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/cli.md is not what `ebb --help` prints now; write it again with:\n  EBB_WRITE_CLI_DOCS=1 cargo test -p ebb --test cli_docs"
    );
}

#[test]
fn every_command_is_in_the_reference() {
    let top = help(&[]);
    let listed: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert_eq!(listed, COMMANDS, "a new command needs its place in docs/cli.md (COMMANDS above)");
}
