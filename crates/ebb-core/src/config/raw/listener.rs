//! `[listener.NAME]`: its raw tables (address, `http` redirect address,
//! `tls`, `hsts`, `[[listener.NAME.route]]`, `[listener.NAME.proxy]`) and
//! their checks. The routing table it produces lives in `crate::routing`.
//!
//! Only the shape and the references are checked here (a route's service
//! exists and has a balancer; TLS file paths are written): reading the
//! certificate files is I/O, done by the `ebb` crate at `ebb up` and
//! `ebb validate`, which locates its errors with `Config::key_error`.

use super::{Check, Listener, Owner, RawProxy, ServiceConfig};
use crate::config::value::{Addr, Dur};
use crate::config::{AcmeConfig, CertFiles, ListenerConfig, ProxyConfig, TlsConfig};
use crate::routing::{HostMatch, Route, RouteTable};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The `[listener.NAME]` tables, in file order, each with its name's span.
#[derive(Default)]
pub(super) struct Listeners(Vec<(Spanned<String>, RawListener)>);

impl<'de> Deserialize<'de> for Listeners {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenersVisitor;
        impl<'de> Visitor<'de> for ListenersVisitor {
            type Value = Listeners;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one [listener.NAME] table per listener, e.g. [listener.public]")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Listeners, A::Error> {
                let mut listeners = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<String>, RawListener>()? {
                    listeners.push(entry);
                }
                listeners.sort_by_key(|(name, _)| name.span().start);
                Ok(Listeners(listeners))
            }
        }
        deserializer.deserialize_map(ListenersVisitor)
    }
}

impl Listeners {
    /// Every service some route names (known or not).
    pub(super) fn routed_services(&self) -> BTreeSet<String> {
        self.0
            .iter()
            .flat_map(|(_, l)| l.route.iter().flatten())
            .filter_map(|r| r.service.as_ref().map(|s| s.get_ref().clone()))
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a listener table like [listener.public]")]
pub(super) struct RawListener {
    listen: Option<Spanned<Addr>>,
    http: Option<Spanned<Addr>>,
    tls: Option<RawTls>,
    hsts: Option<Spanned<Dur>>,
    route: Option<Vec<RawRoute>>,
    proxy: Option<RawProxy>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a TLS table like tls = { cert = "site.pem", key = "site.key" }, [[listener.NAME.tls.certs]] entries, or tls.acme = { domains = ["shop.example.com"] }"#
)]
struct RawTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    certs: Option<Vec<RawCert>>,
    acme: Option<Spanned<RawAcme>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"an ACME table like tls.acme = { domains = ["shop.example.com"], email = "ops@example.com" }"#
)]
struct RawAcme {
    domains: Option<Spanned<Vec<Spanned<String>>>>,
    email: Option<Spanned<String>>,
    directory: Option<Spanned<String>>,
    directory_ca: Option<Spanned<String>>,
    renew_before: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = r#"a certificate entry like { cert = "site.pem", key = "site.key" }"#)]
struct RawCert {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route table like [[listener.public.route]]")]
struct RawRoute {
    host: Option<Spanned<String>>,
    path_prefix: Option<Spanned<String>>,
    methods: Option<Vec<Spanned<String>>>,
    headers: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    service: Option<Spanned<String>>,
}

/// Where keys found while checking listeners were written, by name
/// (`listener.NAME.tls.0.cert`), for errors found after parsing.
type KeySpans = Vec<(String, Range<usize>)>;

impl Check<'_> {
    /// Checks every `[listener.NAME]`, adds its addresses to `addresses`
    /// (for the overlap check), and returns the listeners and the spans of
    /// their TLS file keys (`listener.NAME.tls.I.cert` / `.key`).
    pub(super) fn listener_tables(
        &mut self,
        raw: Listeners,
        services: &BTreeMap<String, ServiceConfig>,
        addresses: &mut Vec<Listener>,
    ) -> (BTreeMap<String, ListenerConfig>, KeySpans) {
        let mut listeners = BTreeMap::new();
        let mut spans = Vec::new();
        for (name, raw) in raw.0 {
            let listener = self.listener(&name, raw, services, addresses, &mut spans);
            listeners.insert(listener.name.clone(), listener);
        }
        (listeners, spans)
    }

    fn listener(
        &mut self,
        name: &Spanned<String>,
        raw: RawListener,
        services: &BTreeMap<String, ServiceConfig>,
        addresses: &mut Vec<Listener>,
        spans: &mut Vec<(String, Range<usize>)>,
    ) -> ListenerConfig {
        let n = name.get_ref().clone();
        self.listener_name(name);
        let listen = match raw.listen {
            Some(listen) => {
                addresses.push(Listener {
                    addr: listen.get_ref().0,
                    span: Some(listen.span()),
                    owner: Owner::Listener(n.clone()),
                });
                listen.into_inner().0
            }
            None => {
                self.problem(
                    name.span(),
                    format!(r#"listener `{n}` has no listen address; add one, e.g. listen = "0.0.0.0:443""#),
                );
                std::net::SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        // A tls table with errors is reported on its own: not again as "no tls".
        let has_tls = raw.tls.is_some();
        let tls = raw.tls.and_then(|t| self.tls(&n, name, t, spans));
        // tls.acme without http: ACME answers TLS-ALPN-01 on listen.
        let http = raw.http.map(|http| {
            if !has_tls {
                self.problem(
                    http.span(),
                    format!(r#"http is the plain-HTTP address that redirects to listener `{n}`'s HTTPS, but the listener has no tls; add tls = {{ cert = "site.pem", key = "site.key" }}, or remove http (a plain listener needs listen only)"#),
                );
            }
            addresses.push(Listener { addr: http.get_ref().0, span: Some(http.span()), owner: Owner::Redirect(n.clone()) });
            spans.push((format!("listener.{n}.http"), http.span()));
            http.into_inner().0
        });
        let hsts = raw.hsts.map(|hsts| {
            if !has_tls {
                self.problem(
                    hsts.span(),
                    format!(r#"hsts tells browsers to use HTTPS only, but listener `{n}` has no tls; add tls = {{ cert = "site.pem", key = "site.key" }}, or remove hsts"#),
                );
            } else if hsts.get_ref().0.as_secs() == 0 {
                self.problem(hsts.span(), r#"hsts must be at least 1s, e.g. hsts = "365d"; remove it to send no Strict-Transport-Security"#);
            }
            hsts.into_inner().0
        });
        let routes = self.routes(name, raw.route.unwrap_or_default(), services);
        let proxy = self.listener_proxy(name, raw.proxy);
        ListenerConfig { name: n, listen, http, tls, hsts, routes, proxy }
    }

    fn listener_name(&mut self, name: &Spanned<String>) {
        let n = name.get_ref();
        let valid = n.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && n.len() <= 63;
        if !valid {
            self.problem(
                name.span(),
                format!("listener name {n:?} is not allowed: use up to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit"),
            );
        }
    }

    fn tls(
        &mut self,
        listener: &str,
        name: &Spanned<String>,
        raw: RawTls,
        spans: &mut Vec<(String, Range<usize>)>,
    ) -> Option<TlsConfig> {
        if let Some(acme) = raw.acme {
            if let Some(other) = raw.cert.as_ref().or(raw.key.as_ref()).map(|s| s.span()) {
                self.problem(
                    other,
                    format!("listener `{listener}` has both tls.acme and certificate files; use one: remove tls.cert/tls.key to let ACME obtain the certificate, or remove tls.acme to serve the files"),
                );
                return None;
            }
            if raw.certs.is_some() {
                self.problem(
                    acme.span(),
                    format!("listener `{listener}` has both tls.acme and [[listener.{listener}.tls.certs]]; use one: remove the certs entries to let ACME obtain the certificate, or remove tls.acme to serve the files"),
                );
                return None;
            }
            let span = acme.span();
            return self
                .acme(listener, span, acme.into_inner(), spans)
                .map(|acme| TlsConfig { certs: Vec::new(), acme: Some(acme) });
        }
        let mut pairs = Vec::new();
        match (raw.cert.is_some() || raw.key.is_some(), raw.certs) {
            (true, Some(_)) => {
                let span = raw.cert.as_ref().or(raw.key.as_ref()).map(|s| s.span()).unwrap_or(name.span());
                self.problem(
                    span,
                    format!("listener `{listener}` has both tls.cert/tls.key and [[listener.{listener}.tls.certs]]; use one form: move this pair into a certs entry (the first entry is the default certificate)"),
                );
                return None;
            }
            (true, None) => pairs.push((raw.cert, raw.key)),
            (false, Some(certs)) => pairs.extend(certs.into_iter().map(|c| (c.cert, c.key))),
            (false, None) => {}
        }
        if pairs.is_empty() {
            self.problem(
                name.span(),
                format!(r#"listener `{listener}` has a tls table with no certificate; add tls = {{ cert = "site.pem", key = "site.key" }}"#),
            );
            return None;
        }
        let mut certs = Vec::new();
        for (i, (cert, key)) in pairs.into_iter().enumerate() {
            let cert = self.tls_path(
                listener,
                name,
                i,
                "cert",
                cert,
                "the certificate chain, e.g. cert = \"site.pem\"",
                spans,
            );
            let key = self.tls_path(listener, name, i, "key", key, "its private key, e.g. key = \"site.key\"", spans);
            if let (Some(cert), Some(key)) = (cert, key) {
                certs.push(CertFiles { cert, key });
            }
        }
        (!certs.is_empty()).then_some(TlsConfig { certs, acme: None })
    }

    /// `tls.acme`: domains that ACME can prove with HTTP-01 or TLS-ALPN-01 (DNS names, no
    /// wildcard, no IP address), a directory URL, its CA file.
    fn acme(
        &mut self,
        listener: &str,
        span: Range<usize>,
        raw: RawAcme,
        spans: &mut Vec<(String, Range<usize>)>,
    ) -> Option<AcmeConfig> {
        let example = r#"e.g. domains = ["shop.example.com", "api.example.com"]"#;
        let mut domains: Vec<String> = Vec::new();
        let mut ok = true;
        match raw.domains {
            None => {
                self.problem(span, format!("listener `{listener}`: tls.acme has no domains; add the names the certificate is for, {example}"));
                return None;
            }
            Some(list) if list.get_ref().is_empty() => {
                self.problem(list.span(), format!("tls.acme.domains is empty; name at least one domain, {example}"));
                return None;
            }
            Some(list) => {
                for d in list.into_inner() {
                    let text = d.get_ref().trim_end_matches('.').to_ascii_lowercase();
                    if text.starts_with("*.") {
                        self.problem(
                            d.span(),
                            format!("{:?} is a wildcard: ACME issues wildcards only with DNS-01 challenges, which ebb does not do (it answers HTTP-01 and TLS-ALPN-01); list each name, e.g. \"shop.{}\", or serve a wildcard certificate from files (tls = {{ cert = …, key = … }})", d.get_ref(), text.trim_start_matches("*.")),
                        );
                        ok = false;
                    } else if let Err(why) = dns_name(&text) {
                        self.problem(
                            d.span(),
                            format!("{:?} is not a DNS name ACME can issue for: {why}; {example}", d.get_ref()),
                        );
                        ok = false;
                    } else if domains.contains(&text) {
                        self.problem(
                            d.span(),
                            format!("{:?} is listed twice in tls.acme.domains; remove one", d.get_ref()),
                        );
                        ok = false;
                    } else {
                        domains.push(text);
                    }
                }
            }
        }
        let email = raw.email.and_then(|e| {
            let text = e.get_ref().trim().trim_start_matches("mailto:");
            let valid = text.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
                && !text.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',');
            if !valid {
                self.problem(e.span(), format!(r#"{:?} is not an email address; e.g. email = "ops@example.com" (the CA sends expiry notices there), or remove it"#, e.get_ref()));
                ok = false;
                return None;
            }
            Some(text.to_string())
        });
        let directory = match raw.directory {
            None => crate::config::LETS_ENCRYPT_PRODUCTION.to_string(),
            Some(d) => {
                let text = d.get_ref().trim();
                let host = text.strip_prefix("https://").map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
                if host.is_none_or(|h| h.is_empty()) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.problem(
                        d.span(),
                        r#"tls.acme.directory must be an https:// URL of an ACME directory, e.g. directory = "https://acme-staging-v02.api.letsencrypt.org/directory" (Let's Encrypt staging); remove it for Let's Encrypt production"#,
                    );
                    ok = false;
                }
                text.to_string()
            }
        };
        let directory_ca = raw.directory_ca.and_then(|ca| {
            if ca.get_ref().trim().is_empty() || ca.get_ref().contains('\0') {
                self.problem(ca.span(), "tls.acme.directory_ca is empty; name a PEM file of the CA certificates that sign the ACME directory's HTTPS certificate, or remove it");
                ok = false;
                return None;
            }
            spans.push((format!("listener.{listener}.tls.acme.directory_ca"), ca.span()));
            Some(self.file.parent().unwrap_or(Path::new("")).join(ca.get_ref()))
        });
        let renew_before = match raw.renew_before {
            None => std::time::Duration::from_secs(30 * 86_400),
            Some(r) => {
                if r.get_ref().0.is_zero() {
                    self.problem(r.span(), r#"tls.acme.renew_before must be more than 0, e.g. renew_before = "30d" (renewal starts that long before the certificate expires)"#);
                    ok = false;
                }
                r.into_inner().0
            }
        };
        spans.push((format!("listener.{listener}.tls.acme"), span));
        ok.then_some(AcmeConfig { domains, email, directory, directory_ca, renew_before })
    }

    #[allow(clippy::too_many_arguments)]
    fn tls_path(
        &mut self,
        listener: &str,
        name: &Spanned<String>,
        index: usize,
        key: &str,
        raw: Option<Spanned<String>>,
        what: &str,
        spans: &mut Vec<(String, Range<usize>)>,
    ) -> Option<PathBuf> {
        let Some(raw) = raw else {
            self.problem(
                name.span(),
                format!("listener `{listener}`: tls certificate {} has no {key}; add {what}", index + 1),
            );
            return None;
        };
        if raw.get_ref().trim().is_empty() || raw.get_ref().contains('\0') {
            self.problem(raw.span(), format!("tls {key} is empty; name a PEM file, {what}"));
            return None;
        }
        spans.push((format!("listener.{listener}.tls.{index}.{key}"), raw.span()));
        // Relative to the config file, as state_dir is.
        Some(self.file.parent().unwrap_or(Path::new("")).join(raw.get_ref()))
    }

    fn routes(
        &mut self,
        listener: &Spanned<String>,
        raw: Vec<RawRoute>,
        services: &BTreeMap<String, ServiceConfig>,
    ) -> RouteTable {
        let l = listener.get_ref();
        if raw.is_empty() {
            self.problem(
                listener.span(),
                format!(r#"listener `{l}` has no routes; add at least one, e.g. [[listener.{l}.route]] with service = "web" (a route with no host or path_prefix is the default)"#),
            );
        }
        let mut routes = Vec::new();
        // The first default route, by the line of its service key.
        let mut default_at: Option<usize> = None;
        for (i, raw) in raw.into_iter().enumerate() {
            let Some(service) = raw.service else {
                self.problem(
                    listener.span(),
                    format!(r#"route {} of listener `{l}` has no service; add service = "NAME" naming a [service.NAME] table"#, i + 1),
                );
                continue;
            };
            let s = service.get_ref();
            match services.get(s) {
                None => {
                    let known: Vec<&str> = services.values().filter(|s| s.kind.has_balancer()).map(|s| s.name.as_str()).collect();
                    let hint = match super::closest(s, &known) {
                        Some(near) => format!("did you mean `{near}`? "),
                        None => String::new(),
                    };
                    self.problem(
                        service.span(),
                        format!("unknown service `{s}`; {hint}a route names a [service.NAME] table of this file (web services here: {})", list(&known)),
                    );
                }
                Some(found) if !found.kind.has_balancer() => self.problem(
                    service.span(),
                    format!("service `{s}` is a worker: it has no load balancer, so no route can reach it; route to a web service"),
                ),
                Some(_) => {}
            }
            let host = raw.host.and_then(|h| match HostMatch::parse(h.get_ref()) {
                Ok(host) => Some(host),
                Err(why) => {
                    self.problem(
                        h.span(),
                        format!("host {:?} {why}; e.g. host = \"api.example.com\" or \"*.example.com\"", h.get_ref()),
                    );
                    None
                }
            });
            let path_prefix = raw.path_prefix.and_then(|p| {
                if !p.get_ref().starts_with('/') {
                    self.problem(
                        p.span(),
                        format!(
                            r#"path_prefix must start with "/", e.g. path_prefix = "/{}""#,
                            p.get_ref().trim_start_matches('/')
                        ),
                    );
                    return None;
                }
                Some(p.into_inner())
            });
            let mut methods = Vec::new();
            for m in raw.methods.unwrap_or_default() {
                let text = m.get_ref();
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') {
                    self.problem(m.span(), format!(r#"{text:?} is not an HTTP method; write methods in upper case, e.g. methods = ["GET", "HEAD"]"#));
                } else {
                    methods.push(text.clone());
                }
            }
            let mut headers = Vec::new();
            for (name, value) in raw.headers.unwrap_or_default() {
                let n = name.get_ref();
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if n.is_empty() || !n.bytes().all(token) {
                    self.problem(
                        name.span(),
                        format!(r#"{n:?} is not a header name; e.g. headers = {{ "x-canary" = "1" }}"#),
                    );
                } else if value.get_ref().bytes().any(|b| b.is_ascii_control()) {
                    self.problem(value.span(), "a header value cannot hold control characters");
                } else {
                    headers.push((n.to_ascii_lowercase(), value.get_ref().clone()));
                }
            }
            let route = Route { service: s.clone(), host, path_prefix, methods, headers };
            if let Some(at) = &default_at {
                self.problem(
                    service.span(),
                    format!("this route is never used: the default route of listener `{l}` (line {at}, no host or path_prefix) comes before it and matches every request; move the default route last"),
                );
            } else if route.is_default() {
                default_at = Some(self.line_of(&service.span()));
            }
            routes.push(route);
        }
        RouteTable { routes }
    }

    /// `[listener.NAME.proxy]`: the connection settings, with a service's
    /// defaults; per-request keys are refused with where they belong.
    fn listener_proxy(&mut self, name: &Spanned<String>, raw: Option<RawProxy>) -> ProxyConfig {
        let Some(raw) = raw else { return ProxyConfig::default() };
        let per_service = [
            ("upstream_timeout", raw.upstream_timeout.as_ref().map(|v| v.span())),
            ("connect_timeout", raw.connect_timeout.as_ref().map(|v| v.span())),
            ("max_in_flight", raw.max_in_flight.as_ref().map(|v| v.span())),
            ("max_queue", raw.max_queue.as_ref().map(|v| v.span())),
            ("queue_timeout", raw.queue_timeout.as_ref().map(|v| v.span())),
            ("request_buffering", raw.request_buffering.as_ref().map(|v| v.span())),
            ("slow_start", raw.slow_start.as_ref().map(|v| v.span())),
        ];
        for (key, span) in per_service {
            if let Some(span) = span {
                self.problem(
                    span,
                    format!("proxy.{key} is a per-service setting: put it in [service.NAME.proxy] of the routed services; a listener's proxy table takes the connection settings only (header_read_timeout, idle_timeout, body_timeout, send_timeout, max_header_bytes, trusted_proxies, max_connections, access_log)"),
                );
            }
        }
        if raw.outlier.is_some() {
            self.problem(
                name.span(),
                format!("listener `{}` has a [proxy.outlier] table, but outlier detection is per service: move it to [service.NAME.proxy.outlier] of the routed services", name.get_ref()),
            );
        }
        self.proxy(raw)
    }
}

/// Why `name` (lower case) is not a DNS name a public ACME CA can issue
/// for: labels of letters, digits and '-', at least two, no IP address.
fn dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("it is an IP address (ebb's ACME proves names only)".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("it has a single label; give the full name, e.g. shop.example.com".into());
    }
    for label in &labels {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row)".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!(
                "{c:?} is not allowed (letters, digits and '-' only; write international names in their xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    if labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit())) {
        return Err("its last label is a number".into());
    }
    Ok(())
}

/// `a, b and c`, or `none`.
fn list(names: &[&str]) -> String {
    match names {
        [] => "none".into(),
        [one] => format!("`{one}`"),
        [rest @ .., last] => {
            format!("{} and `{last}`", rest.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
        }
    }
}
