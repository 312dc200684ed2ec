//! End to end: a shadow policy on a live fleet is evaluated every second,
//! logs `shadow` events and shows what it would run in status and in the
//! metrics history, and never changes desired; `ebb apply` changes it in
//! place.

mod support;

use std::time::Duration;

use support::*;

/// Active: requests per replica, target 1000 (far above the load, and min
/// is 2, so it holds). Shadow: target 2 req/s per replica, which the light
/// load below (about 50 req/s) exceeds many times over.
fn config(admin: std::net::SocketAddr, listen: std::net::SocketAddr, shadow_target: u32) -> String {
    let policies = format!(
        r#"
[[service.web.scaling.target_tracking]]
name = "rps-1000"
metric = "requests_per_replica"
target = 1000
window = "2s"

[[service.web.scaling.shadow.target_tracking]]
name = "rps-low"
metric = "requests_per_replica"
target = {shadow_target}
window = "2s"
scale_out_cooldown = "1s"
"#
    );
    fast_config(admin, listen, "{ min = 2, max = 6, desired = 2 }", "") + &policies
}

#[test]
fn a_shadow_policy_logs_what_it_would_do_and_never_changes_desired() {
    let ebb = Ebb::start(|admin, listen| config(admin, listen, 2));
    ebb.wait_in_service(2, Duration::from_secs(30));
    let load = Load::start(ebb.listen, 2, "/gtg", Duration::from_millis(40));

    let shadow = wait_for("shadow events", Duration::from_secs(20), || {
        let events: Vec<serde_json::Value> = ebb.events().into_iter().filter(|e| e["kind"] == "shadow").collect();
        events.iter().any(|e| e["to"].as_u64() == Some(6)).then_some(events)
    });
    let first = &shadow[0];
    assert_eq!((first["from"].as_u64(), first["service"].as_str()), (Some(2), Some("web")), "{first}");
    let reason = first["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("shadow rps-low would scale out 2 -> ") && reason.contains("vs target 2 req/s"),
        "{reason}"
    );

    // Status: the shadow's count beside the live one, which never moved.
    let status = ebb.status();
    let web = &status["services"][0];
    assert_eq!(web["desired"], 2, "{web}");
    assert_eq!(web["shadow"]["desired"], 6, "{web}");
    assert_eq!(web["shadow"]["policies"], serde_json::json!(["rps-low"]), "{web}");
    let text = String::from_utf8_lossy(&ebb.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("  shadow (rps-low): would run 6 (not applied)"), "{text}");
    // The dashboard's replica chart reads the shadow's count per second.
    let points = ebb.admin_call("GET", "/api/v1/metrics?service=web", None).json();
    let points = points.as_array().unwrap();
    assert!(points.iter().any(|p| p["shadow_desired"] == 6), "{points:?}");
    assert!(points.iter().all(|p| p["desired"] == 2), "desired never moved: {points:?}");
    let scaled: Vec<serde_json::Value> = ebb.events().into_iter().filter(|e| e["kind"] == "scaled").collect();
    assert!(scaled.is_empty(), "nothing was applied: {scaled:#?}");
    assert_eq!(ebb.replicas().len(), 2);

    // `ebb apply` removes the shadow in place: no deploy, status drops it.
    std::fs::write(&ebb.config, fast_config(ebb.admin, ebb.listen, "{ min = 2, max = 6, desired = 2 }", "")).unwrap();
    let out = ebb.cli(&["apply", "--yes"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("scaling.shadow.target_tracking[rps-low]") && said.contains("applied in place"), "{said}");
    wait_for("the shadow to leave status", Duration::from_secs(5), || {
        ebb.status()["services"][0]["shadow"].is_null().then_some(())
    });
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(ebb.status()["services"][0]["desired"], 2);
}
