//! Story S1's client checks, shared by the tests that run S1 on containers
//! (one host, `container_state.rs`) and on several Swarm nodes
//! (`swarm_state.rs`).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::http;

/// `GET /candidate/NAME` at `addr` answers 200 with that name; `context`
/// (e.g. ebb's log) is printed when it does not.
pub fn read_candidate(addr: SocketAddr, name: &str, context: &dyn Fn() -> String) {
    let r = http(addr, "GET", &format!("/candidate/{name}"), None).unwrap();
    assert_eq!(r.status, 200, "GET /candidate/{name} at {addr}: {} {}\n{}", r.status, r.body, context());
    assert!(r.body.contains(&format!("\"CandidateName\":\"{name}\"")), "{}", r.body);
}

/// `rounds` rounds of S1's four checks through ebb at `listen` (good to
/// go, insert, verification, candidate list), each name also read from
/// every replica in `direct`. Returns the names inserted and the replicas
/// (`instance-id`) that answered through ebb.
pub fn client_rounds(
    listen: SocketAddr,
    direct: &[SocketAddr],
    rounds: usize,
    context: &dyn Fn() -> String,
) -> (Vec<String>, BTreeSet<String>) {
    let mut names = Vec::new();
    let mut answered = BTreeSet::new();
    for n in 0..rounds {
        let name = format!("ebb-{n}");
        let gtg = http(listen, "GET", "/gtg", None).unwrap();
        assert_eq!(gtg.status, 200, "good to go through ebb: {gtg:?}");
        let r = http(listen, "POST", &format!("/candidate/{name}"), None).unwrap();
        assert_eq!(r.status, 200, "POST through ebb: {r:?}");
        for addr in direct {
            read_candidate(*addr, &name, context);
        }
        read_candidate(listen, &name, context);
        let list = http(listen, "GET", "/candidates", None).unwrap();
        assert!(list.status == 200 && list.body.contains(&format!("\"{name}\"")), "{list:?}");
        let who = http(listen, "GET", "/gtg?details", None).unwrap().json();
        answered.insert(who["instance-id"].as_str().unwrap_or_default().to_string());
        names.push(name);
    }
    (names, answered)
}
