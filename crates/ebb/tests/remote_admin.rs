//! `--admin URL` with `EBB_TOKEN` / `--token-file`: every command works
//! from a directory with no config file (another machine, in effect).

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{fast_config, Ebb, EBB};

fn ebb_elsewhere(dir: &std::path::Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(EBB);
    cmd.current_dir(dir).args(args).env_remove("EBB_CONFIG").env_remove("EBB_TOKEN").env_remove("EBB_ADMIN");
    if let Some(token) = token {
        cmd.env("EBB_TOKEN", token);
    }
    cmd.output().expect("run ebb")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn commands_reach_ebb_by_url_with_a_token_from_the_environment_or_a_file() {
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 3, desired = 1 }", ""));
    ebb.wait_in_service(1, Duration::from_secs(30));
    let elsewhere = tempfile::tempdir().unwrap();
    let url = format!("http://{}", ebb.admin);
    let token = ebb.token();

    let out = ebb_elsewhere(elsewhere.path(), &["--admin", &url, "status"], Some(&token));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("web"), "{}", text(&out));

    // A change without a token is refused, and says how to give one.
    let out = ebb_elsewhere(elsewhere.path(), &["--admin", &url, "scale", "web", "2"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("EBB_TOKEN"), "{}", text(&out));
    assert_eq!(ebb.status()["services"][0]["desired"], 1, "nothing changed");

    let out = ebb_elsewhere(elsewhere.path(), &["--admin", &url, "scale", "web", "2"], Some(&token));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("desired 1 -> 2"), "{}", text(&out));

    // A token file, and the URL from the environment.
    let file = elsewhere.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let mut cmd = Command::new(EBB);
    let out = cmd
        .current_dir(elsewhere.path())
        .args(["--token-file", file.to_str().unwrap(), "scale", "web", "1"])
        .env("EBB_ADMIN", &url)
        .env_remove("EBB_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ebb.status()["services"][0]["desired"], 1);

    // Bad input: exit 2 with the fix.
    let out = ebb_elsewhere(elsewhere.path(), &["--admin", "ftp://x:1", "status"], Some(&token));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("write it like http://127.0.0.1:9900"), "{}", text(&out));
    // Without --admin and without a config file: the missing file is named.
    let out = ebb_elsewhere(elsewhere.path(), &["status"], Some(&token));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ebb.toml"), "{}", text(&out));

    // `ebb down` by URL stops the fleet.
    let out = ebb_elsewhere(elsewhere.path(), &["--admin", &url, "down"], Some(&token));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ebb: stopped"), "{}", text(&out));
}
