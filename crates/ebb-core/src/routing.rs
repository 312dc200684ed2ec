//! A listener's routing rules: which service a request goes to.
//!
//! Like an ALB listener's rules: each [`Route`] has conditions (host, path
//! prefix, methods, headers) and names a service; the first route whose
//! conditions all hold wins, in file order. A route with no condition is
//! the default. Pure: the data plane passes in what it read off the request
//! and gets back the index of the route that matched.
//!
//! - **Host**: exact (`api.example.com`) or a one-level wildcard
//!   (`*.example.com` matches `a.example.com`, not `example.com` nor
//!   `a.b.example.com`); compared without case, the request's port and a
//!   trailing dot removed.
//! - **Path prefix**: the request's path (without the query) starts with it,
//!   byte for byte, as sent (not decoded, not normalised). `/api` also
//!   matches `/apix`; write `/api/` to stop at the segment.
//! - **Methods**: the request's method is one of them (exact, upper case as
//!   HTTP methods are).
//! - **Headers**: each named header is present with exactly that value
//!   (names without case; any of a repeated header's values counts).

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The service the matching requests go to.
    pub service: String,
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    /// Empty: any method.
    pub methods: Vec<String>,
    /// `(lower-case name, value)`; every pair must be present.
    pub headers: Vec<(String, String)>,
}

impl Route {
    /// A route with no condition: it matches every request.
    pub fn is_default(&self) -> bool {
        self.host.is_none() && self.path_prefix.is_none() && self.methods.is_empty() && self.headers.is_empty()
    }

    /// Whether a request matches all of this route's conditions.
    pub fn matches(&self, req: &RequestFacts<'_>) -> bool {
        if let Some(host) = &self.host {
            match req.host.map(normalize_host) {
                Some(h) if host.matches(&h) => {}
                _ => return false,
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !req.path.starts_with(prefix.as_str()) {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        self.headers.iter().all(|(name, value)| (req.header)(name, value))
    }

    /// The conditions in words, for status and messages:
    /// `host api.example.com, path /v1/`, or `default`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(prefix) = &self.path_prefix {
            parts.push(format!("path {prefix}*"));
        }
        if !self.methods.is_empty() {
            parts.push(format!("methods {}", self.methods.join(",")));
        }
        for (name, value) in &self.headers {
            parts.push(format!("header {name}: {value}"));
        }
        if parts.is_empty() {
            "default".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// A `host` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// This name exactly (stored lower case, no trailing dot).
    Exact(String),
    /// `*.SUFFIX`: one more label in front of the suffix (stored lower
    /// case, without the `*.`).
    Wildcard(String),
}

impl HostMatch {
    /// Reads `api.example.com` or `*.example.com`; the error says what is
    /// wrong with it, for a config message.
    pub fn parse(text: &str) -> Result<HostMatch, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.is_empty() {
            return Err("is empty".into());
        }
        if name.contains('*') {
            return Err("may have one `*` only, as its whole first label (`*.example.com`)".into());
        }
        if name.contains(':') {
            return Err("has a port; routes match the host name only (the port is ignored)".into());
        }
        if let Some(label) = name.split('.').find(|l| l.is_empty() || l.len() > 63) {
            return Err(match label.is_empty() {
                true => "has an empty label (two dots in a row)".into(),
                false => "has a label longer than 63 characters".into(),
            });
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_')) {
            return Err(format!("has {c:?}; use letters, digits, '-' and '.' (punycode for other scripts)"));
        }
        if wildcard && !name.contains('.') {
            return Err("is a wildcard over a top-level domain; name at least two labels after `*.`".into());
        }
        Ok(match wildcard {
            true => HostMatch::Wildcard(name.to_string()),
            false => HostMatch::Exact(name.to_string()),
        })
    }

    /// Whether an already normalised host (see [`normalize_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(name) => host == name,
            HostMatch::Wildcard(suffix) => match host.split_once('.') {
                Some((first, rest)) => !first.is_empty() && rest == suffix,
                None => false,
            },
        }
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(name) => f.write_str(name),
            HostMatch::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// A request's `Host` (or `:authority`) as routes compare it: lower case,
/// without the port and without a trailing dot. `[::1]:8080` -> `[::1]`.
pub fn normalize_host(host: &str) -> String {
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// What routing reads off one request.
pub struct RequestFacts<'a> {
    /// `Host` or `:authority`, as sent (port and case included).
    pub host: Option<&'a str>,
    /// The path, without the query.
    pub path: &'a str,
    pub method: &'a str,
    /// `header(name, value)`: whether the request has header `name` (lower
    /// case) with exactly `value`.
    pub header: &'a dyn Fn(&str, &str) -> bool,
}

/// A listener's routes, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// The index of the first route that matches, or `None` (no route and
    /// no default: the listener answers 404).
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<usize> {
        self.routes.iter().position(|r| r.matches(req))
    }

    /// The services routed to, each once, in first-route order.
    pub fn services(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for route in &self.routes {
            if !seen.contains(&route.service.as_str()) {
                seen.push(&route.service);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, host: Option<&str>, path: Option<&str>) -> Route {
        Route {
            service: service.into(),
            host: host.map(|h| HostMatch::parse(h).unwrap()),
            path_prefix: path.map(String::from),
            methods: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn find(table: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        let no_headers = |_: &str, _: &str| false;
        let req = RequestFacts { host, path, method: "GET", header: &no_headers };
        table.find(&req).map(|i| table.routes[i].service.clone())
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("API.Example.com:8443"), "api.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn host_patterns_parse_or_say_why_not() {
        assert_eq!(HostMatch::parse("API.example.com.").unwrap(), HostMatch::Exact("api.example.com".into()));
        assert_eq!(HostMatch::parse("*.Example.com").unwrap(), HostMatch::Wildcard("example.com".into()));
        assert!(HostMatch::parse("").unwrap_err().contains("empty"));
        assert!(HostMatch::parse("a.*.com").unwrap_err().contains("one `*`"));
        assert!(HostMatch::parse("*.com").unwrap_err().contains("top-level"));
        assert!(HostMatch::parse("a..com").unwrap_err().contains("empty label"));
        assert!(HostMatch::parse("a.com:443").unwrap_err().contains("port"));
        assert!(HostMatch::parse("a b.com").unwrap_err().contains("' '"));
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let w = HostMatch::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("a.b.example.com"));
        assert!(!w.matches(".example.com"));
        assert!(!w.matches("aexample.com"));
    }

    #[test]
    fn first_match_wins_in_file_order() {
        let table = RouteTable {
            routes: vec![
                route("api", Some("api.example.com"), None),
                route("assets", None, Some("/static/")),
                route("shop", Some("*.shop.example.com"), Some("/cart")),
                route("web", None, None),
            ],
        };
        let cases: &[(Option<&str>, &str, &str)] = &[
            (Some("api.example.com"), "/", "api"),
            (Some("API.EXAMPLE.COM:443"), "/static/x.css", "api"), // host rule comes first
            (Some("www.example.com"), "/static/x.css", "assets"),
            (None, "/static/", "assets"),
            (Some("eu.shop.example.com"), "/cart/1", "shop"),
            (Some("eu.shop.example.com"), "/home", "web"),
            (Some("shop.example.com"), "/cart", "web"),
            (Some("www.example.com"), "/static", "web"), // prefix is "/static/"
            (None, "/", "web"),
        ];
        for (host, path, want) in cases {
            assert_eq!(find(&table, *host, path).as_deref(), Some(*want), "{host:?} {path}");
        }
    }

    #[test]
    fn no_match_and_no_default_is_none() {
        let table = RouteTable { routes: vec![route("api", Some("api.example.com"), None)] };
        assert_eq!(find(&table, Some("other.example.com"), "/"), None);
        assert_eq!(find(&table, None, "/"), None);
        assert_eq!(find(&RouteTable::default(), Some("a"), "/"), None);
    }

    #[test]
    fn methods_and_headers_narrow_a_route() {
        let mut canary = route("canary", None, Some("/"));
        canary.headers = vec![("x-canary".into(), "1".into())];
        let mut writes = route("writer", None, Some("/api/"));
        writes.methods = vec!["POST".into(), "PUT".into()];
        let table = RouteTable { routes: vec![canary, writes, route("web", None, None)] };
        let facts = |method: &'static str, canary: bool| {
            let header = move |name: &str, value: &str| canary && name == "x-canary" && value == "1";
            let req = RequestFacts { host: None, path: "/api/x", method, header: &header };
            table.routes[table.find(&req).unwrap()].service.clone()
        };
        assert_eq!(facts("GET", true), "canary");
        assert_eq!(facts("POST", false), "writer");
        assert_eq!(facts("GET", false), "web");
        assert!(!table.routes[0].is_default());
        assert!(table.routes[2].is_default());
    }

    #[test]
    fn describe_reads_like_the_config() {
        assert_eq!(route("web", None, None).describe(), "default");
        assert_eq!(route("a", Some("*.x.com"), Some("/v1/")).describe(), "host *.x.com, path /v1/*");
    }
}
