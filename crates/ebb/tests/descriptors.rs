//! End to end: file descriptors (issue 13, item 1). `ebb up` runs under a
//! low open-file limit (`prlimit --nofile=256:256`) while a client holds
//! more idle connections than that. Before: health checks failed with "Too
//! many open files", every healthy replica was stopped and could not be
//! replaced, and the service answered 503 long after the clients left.
//! Now: the balancer stops accepting at `max_connections` (derived from
//! the limit) so descriptors stay free; a probe that fails for ebb's own
//! reason holds health; nothing is restarted; service resumes at once.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

const BOOT: Duration = Duration::from_secs(30);
/// More than the limit ebb runs under.
const IDLE_CLIENTS: usize = 400;

fn start(extra: &str) -> Ebb {
    Ebb::start_under(&["prlimit", "--nofile=256:256"], |admin, listen| {
        fast_config(admin, listen, "{ min = 2, max = 2, desired = 2 }", extra)
    })
}

/// Opens `n` connections to `addr` and keeps them idle. Connections beyond
/// what ebb accepts complete in the kernel's listen backlog.
fn idle_clients(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()).collect()
}

fn pids(ebb: &Ebb) -> Vec<u64> {
    ebb.replicas().iter().map(|r| r["pid"].as_u64().unwrap()).collect()
}

/// Nothing went unhealthy, exited or was replaced.
fn assert_fleet_untouched(ebb: &Ebb, before: &[u64]) {
    let events = ebb.events();
    let bad: Vec<_> = events
        .iter()
        .filter(|e| {
            ["replica_unhealthy", "replica_exited", "replica_start_failed", "backoff"]
                .contains(&e["kind"].as_str().unwrap())
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(pids(ebb), before, "no replica was replaced");
    assert!(ebb.replicas().iter().all(|r| r["healthy"] == true), "{:#?}", ebb.replicas());
}

/// The log without its colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// Time until the balancer answers 200 again.
fn time_to_serve(ebb: &Ebb) -> Duration {
    let started = Instant::now();
    wait_for("the balancer to answer 200", Duration::from_secs(10), || {
        http(ebb.listen, "GET", "/gtg", None).ok().filter(|r| r.status == 200).map(|_| ())
    });
    started.elapsed()
}

#[test]
fn idle_clients_beyond_the_open_file_limit_never_take_the_fleet_down() {
    let ebb = start("");
    ebb.wait_in_service(2, BOOT);
    let before = pids(&ebb);
    // (256 − a reserve of 64) / 2: each client connection may need one to a replica.
    let log = plain(&ebb.up_log());
    assert!(log.contains("max_connections=96 open_file_limit=256"), "{log}");

    let clients = idle_clients(ebb.listen, IDLE_CLIENTS);
    assert!(clients.len() >= 200, "only {} connections opened", clients.len());
    // Many health-check rounds (200 ms apart, 2 failures make unhealthy).
    std::thread::sleep(Duration::from_secs(3));
    // The admin API still answers, and the fleet is as it was.
    assert_fleet_untouched(&ebb, &before);
    assert!(ebb.up_log().contains("Balancer reached max_connections"), "{}", ebb.up_log());

    drop(clients);
    let waited = time_to_serve(&ebb);
    println!(
        "descriptors: {IDLE_CLIENTS} idle clients under a limit of 256: served again {} ms after they left",
        waited.as_millis()
    );
    assert!(waited < Duration::from_secs(1), "served again only after {waited:?}");
    assert_fleet_untouched(&ebb, &before);
}

#[test]
fn a_health_check_that_fails_for_ebbs_own_reason_is_never_a_replica_failure() {
    // No cap: ebb itself runs out of descriptors, and its health checks
    // cannot open a socket.
    let ebb = start("[service.web.proxy]\nmax_connections = 1000000\n");
    ebb.wait_in_service(2, BOOT);
    let before = pids(&ebb);

    let clients = idle_clients(ebb.listen, IDLE_CLIENTS);
    std::thread::sleep(Duration::from_secs(3));
    drop(clients);
    let waited = time_to_serve(&ebb);
    assert!(waited < Duration::from_secs(2), "served again only after {waited:?}");

    let skipped: Vec<String> = ebb
        .events()
        .iter()
        .filter(|e| e["kind"] == "health_check_skipped")
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(!skipped.is_empty(), "the skipped checks are an event:\n{}", ebb.up_log());
    assert!(skipped[0].contains("Too many open files") && skipped[0].contains("which stays healthy"), "{}", skipped[0]);
    assert!(ebb.up_log().contains("backing off until it can"), "accept backs off:\n{}", ebb.up_log());
    assert_fleet_untouched(&ebb, &before);
}
