//! Bounded property tests of `ebb_core::routing`: random tables and
//! requests (a fixed-seed xorshift, so every run is the same), checked
//! against what the rules say in words.

use ebb_core::routing::{normalize_host, HostMatch, RequestFacts, Route, RouteTable};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const HOSTS: &[&str] = &["a.example.com", "b.example.com", "example.com", "x.a.example.com", "other.org"];
const PATTERNS: &[&str] = &["a.example.com", "*.example.com", "example.com", "*.a.example.com", "other.org"];
const PATHS: &[&str] = &["/", "/api", "/api/", "/api/v1", "/static/x.css", "/apix"];
const PREFIXES: &[&str] = &["/", "/api", "/api/", "/static/"];
const METHODS: &[&str] = &["GET", "POST", "PUT"];

fn random_route(rng: &mut Rng, i: usize) -> Route {
    Route {
        service: format!("s{i}"),
        host: rng.chance(50).then(|| HostMatch::parse(rng.pick(PATTERNS)).unwrap()),
        path_prefix: rng.chance(50).then(|| rng.pick(PREFIXES).to_string()),
        methods: if rng.chance(20) { vec![rng.pick(METHODS).to_string()] } else { Vec::new() },
        headers: if rng.chance(20) { vec![("x-canary".into(), "1".into())] } else { Vec::new() },
    }
}

/// The rules in words, written independently of `Route::matches`.
fn holds(route: &Route, host: Option<&str>, path: &str, method: &str, canary: bool) -> bool {
    let host_ok = match &route.host {
        None => true,
        Some(pattern) => host.is_some_and(|h| {
            let h = normalize_host(h);
            match pattern {
                HostMatch::Exact(name) => &h == name,
                HostMatch::Wildcard(suffix) => {
                    h.ends_with(&format!(".{suffix}")) && !h[..h.len() - suffix.len() - 1].contains('.')
                }
            }
        }),
    };
    host_ok
        && route.path_prefix.as_ref().is_none_or(|p| path.starts_with(p.as_str()))
        && (route.methods.is_empty() || route.methods.iter().any(|m| m == method))
        && (route.headers.is_empty() || canary)
}

#[test]
fn the_first_route_whose_conditions_all_hold_wins() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..3000 {
        let n = (rng.next() % 6) as usize;
        let table = RouteTable { routes: (0..n).map(|i| random_route(&mut rng, i)).collect() };
        for _ in 0..10 {
            let mut host = rng.chance(90).then(|| rng.pick(HOSTS).to_string());
            // Case and port never change the answer.
            if let Some(h) = host.as_mut().filter(|_| rng.chance(30)) {
                *h = h.to_ascii_uppercase();
            }
            if let Some(h) = host.as_mut().filter(|_| rng.chance(30)) {
                h.push_str(":8443");
            }
            let path = rng.pick(PATHS);
            let method = rng.pick(METHODS);
            let canary = rng.chance(50);
            let header = move |name: &str, value: &str| canary && name == "x-canary" && value == "1";
            let req = RequestFacts { host: host.as_deref(), path, method, header: &header };
            let found = table.find(&req);
            let expected = table.routes.iter().position(|r| holds(r, host.as_deref(), path, method, canary));
            assert_eq!(found, expected, "{table:#?}\nhost {host:?} path {path} method {method} canary {canary}");
            // With a default route, every request is routed.
            if table.routes.iter().any(Route::is_default) {
                assert!(found.is_some());
            }
        }
    }
}
