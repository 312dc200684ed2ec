//! What one listening socket serves: a [`Front`].
//!
//! - a service's own `listen` (the short form): every request goes to that
//!   service, and the connection settings and counters are the service's;
//! - a `[listener.NAME]`: each request is routed by the listener's rules
//!   (`ebb_core::routing`) to one service's balancer, with the listener's
//!   connection settings (deadlines, header size, `max_connections`,
//!   trusted proxies) and the service's per-request ones (admission,
//!   retries, upstream timeouts, outlier detection); optionally over TLS;
//! - a TLS listener's `http` address: every request is redirected (308) to
//!   the same host and path over HTTPS, except ACME HTTP-01 challenges
//!   (`/.well-known/acme-challenge/TOKEN`), answered here from
//!   [`Challenges`] before the redirect: see [`Front::answer_locally`].
//!
//! Connection-level counters (open connections, the cap, HTTP/2 floods,
//! send timeouts) go to the service of a short-form listener, and to the
//! listener's own [`ProxyStats`] otherwise; everything about a routed
//! request counts at its service, whichever listener it came through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use ebb_core::config::ProxyConfig;
use ebb_core::routing::{RequestFacts, RouteTable};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::access_log::AccessLog;
use super::body::ProxyBody;
use super::{ProxyStats, ServiceProxy};
use crate::acme::Challenges;
use crate::tls::TlsState;

/// One listening socket's configuration and targets.
pub struct Front {
    /// `listener NAME`, `listener NAME (http)` or `service NAME`, for logs.
    pub label: String,
    /// The listener's (or service's) name, for answers' JSON.
    pub name: String,
    /// The connection settings (the service's own for the short form);
    /// `ebb apply` swaps them for connections accepted from then on.
    config: ArcSwap<ProxyConfig>,
    targets: Targets,
    /// Certificates, when this front speaks TLS.
    pub(crate) tls: Option<Arc<TlsState>>,
    /// `Strict-Transport-Security` for every answer, on a TLS front.
    hsts: ArcSwap<Option<HeaderValue>>,
    /// Connection counters of a listener (unused for the short form).
    own_stats: ProxyStats,
    /// Requests that matched no route (answered 404).
    pub unrouted: AtomicU64,
    /// `proxy.access_log` of the connection settings, opened.
    access_log: arc_swap::ArcSwapOption<AccessLog>,
}

enum Targets {
    /// A service's own listen.
    One(Arc<ServiceProxy>),
    /// A listener's routes (swapped whole by `ebb apply`).
    Routes { name: String, routing: ArcSwap<Routing> },
    /// A TLS listener's plain-HTTP address: 308 to HTTPS on `https_port`,
    /// after the ACME challenges in progress.
    Redirect { https_port: u16, challenges: Arc<Challenges> },
}

/// A listener's rules and the balancer of each: `services[i]` serves
/// `table.routes[i]`.
pub struct Routing {
    table: RouteTable,
    services: Vec<Arc<ServiceProxy>>,
}

impl Routing {
    /// `services` holds the proxy of every service the routes name; `None`
    /// names the first one missing.
    pub fn new(
        table: &RouteTable,
        services: &std::collections::BTreeMap<String, Arc<ServiceProxy>>,
    ) -> Result<Routing, String> {
        let proxies = table
            .routes
            .iter()
            .map(|r| services.get(&r.service).cloned().ok_or_else(|| r.service.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Routing { table: table.clone(), services: proxies })
    }
}

/// Where a request goes.
pub(crate) enum Target {
    Service(Arc<ServiceProxy>),
    /// Answered by the front itself (no route, a redirect).
    Local(Box<Response<ProxyBody>>),
}

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Front {
    /// The short form: `[service.NAME] listen = …`.
    pub fn service(proxy: Arc<ServiceProxy>) -> Arc<Front> {
        let config = proxy.peek().config.clone();
        Front::new(format!("service {}", proxy.service), proxy.service.clone(), config, Targets::One(proxy), None, None)
    }

    /// One service over TLS (`ebb proxy --tls-cert`).
    pub fn service_over_tls(proxy: Arc<ServiceProxy>, tls: Arc<TlsState>) -> Arc<Front> {
        let config = proxy.peek().config.clone();
        let (label, name) = (format!("service {}", proxy.service), proxy.service.clone());
        Front::new(label, name, config, Targets::One(proxy), Some(tls), None)
    }

    /// A `[listener.NAME]` serving `routing` (see [`Routing::new`]).
    pub fn listener(
        listener: &ebb_core::config::ListenerConfig,
        routing: Routing,
        tls: Option<Arc<TlsState>>,
    ) -> Arc<Front> {
        let hsts = hsts_header(listener, tls.is_some());
        let targets = Targets::Routes { name: listener.name.clone(), routing: ArcSwap::from_pointee(routing) };
        let label = format!("listener {}", listener.name);
        Front::new(label, listener.name.clone(), listener.proxy.clone(), targets, tls, hsts)
    }

    /// A TLS listener's `http` address; `challenges` are the ACME HTTP-01
    /// tokens it answers (shared by every listener).
    pub fn redirect(listener: &ebb_core::config::ListenerConfig, challenges: Arc<Challenges>) -> Arc<Front> {
        let targets = Targets::Redirect { https_port: listener.listen.port(), challenges };
        let label = format!("listener {} (http)", listener.name);
        Front::new(label, listener.name.clone(), listener.proxy.clone(), targets, None, None)
    }

    fn new(
        label: String,
        name: String,
        config: ProxyConfig,
        targets: Targets,
        tls: Option<Arc<TlsState>>,
        hsts: Option<HeaderValue>,
    ) -> Arc<Front> {
        let front = Front {
            label,
            name,
            config: ArcSwap::from_pointee(ProxyConfig::default()),
            targets,
            tls,
            hsts: ArcSwap::from_pointee(hsts),
            own_stats: ProxyStats::default(),
            unrouted: AtomicU64::new(0),
            access_log: arc_swap::ArcSwapOption::empty(),
        };
        front.set_config(config);
        Arc::new(front)
    }

    /// Takes connection settings (and opens their access log). A log that
    /// cannot be opened was already refused by `access_log::check` before
    /// anything started; here it is only said.
    fn set_config(&self, config: ProxyConfig) {
        let log = config.access_log.as_ref().and_then(|log| match AccessLog::open(log, &self.label) {
            Ok(log) => Some(log),
            Err(error) => {
                tracing::error!(front = %self.label, %error, "No access log.");
                None
            }
        });
        self.access_log.store(log);
        self.config.store(Arc::new(config));
    }

    /// This address's access log, if it has one.
    pub(crate) fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.access_log.load_full()
    }

    /// Whether this address logs its requests (cheaper than `access_log`).
    pub(crate) fn logs_access(&self) -> bool {
        self.access_log.load().is_some()
    }

    /// The connection settings in force: read once per connection.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.config.load_full()
    }

    /// `ebb apply` to a short-form listener: its service's settings, for
    /// connections accepted from now on.
    pub fn reconfigure_connections(&self, config: ProxyConfig) {
        self.set_config(config);
    }

    /// `ebb apply` to a `[listener.NAME]`: its connection settings and HSTS
    /// for what comes next, and its routes for every request from now on
    /// (a request already routed finishes where it went).
    pub fn reconfigure_listener(&self, listener: &ebb_core::config::ListenerConfig, routing: Routing) {
        self.set_config(listener.proxy.clone());
        self.hsts.store(Arc::new(hsts_header(listener, self.tls.is_some())));
        if let Targets::Routes { routing: current, .. } = &self.targets {
            current.store(Arc::new(routing));
        }
    }

    /// Where connection-level counters go.
    pub fn stats(&self) -> &ProxyStats {
        match &self.targets {
            Targets::One(proxy) => &proxy.stats,
            _ => &self.own_stats,
        }
    }

    /// Every service this front can send requests to.
    pub(crate) fn services(&self) -> Vec<Arc<ServiceProxy>> {
        match &self.targets {
            Targets::One(proxy) => vec![proxy.clone()],
            Targets::Routes { routing, .. } => routing.load().services.clone(),
            Targets::Redirect { .. } => Vec::new(),
        }
    }

    /// The service a request goes to, or the answer the front gives itself.
    pub(crate) fn route<B>(&self, req: &Request<B>) -> Target {
        match &self.targets {
            Targets::One(proxy) => Target::Service(proxy.clone()),
            Targets::Routes { name, routing } => {
                let routing = routing.load();
                let host = request_host(req);
                let headers = req.headers();
                let header =
                    |name: &str, value: &str| headers.get_all(name).iter().any(|v| v.as_bytes() == value.as_bytes());
                let facts =
                    RequestFacts { host, path: req.uri().path(), method: req.method().as_str(), header: &header };
                match routing.table.find(&facts) {
                    Some(i) => Target::Service(routing.services[i].clone()),
                    None => {
                        self.own_stats.requests.fetch_add(1, Ordering::Relaxed);
                        self.unrouted.fetch_add(1, Ordering::Relaxed);
                        let message = format!(
                            "no route on listener {name} for host {} path {}",
                            host.unwrap_or("(none)"),
                            req.uri().path()
                        );
                        Target::Local(Box::new(json_answer(
                            StatusCode::NOT_FOUND,
                            serde_json::json!({ "error": message, "listener": name }),
                        )))
                    }
                }
            }
            Targets::Redirect { https_port, challenges } => {
                self.own_stats.requests.fetch_add(1, Ordering::Relaxed);
                Target::Local(Box::new(self.answer_locally(req, *https_port, challenges)))
            }
        }
    }

    /// The plain-HTTP address's answer: an ACME HTTP-01 challenge in
    /// progress (`GET /.well-known/acme-challenge/TOKEN`: the key
    /// authorization, `text/plain`; an unknown token is a 404, never a
    /// redirect), else a 308 to the same host, path and query over HTTPS.
    fn answer_locally<B>(&self, req: &Request<B>, https_port: u16, challenges: &Challenges) -> Response<ProxyBody> {
        if let Some(token) = req.uri().path().strip_prefix("/.well-known/acme-challenge/") {
            let mut response = match challenges.answer(token) {
                Some(key_authorization) => Response::new(ProxyBody::full(Bytes::from(key_authorization))),
                None => {
                    let mut r = Response::new(ProxyBody::full(Bytes::from_static(b"no such ACME challenge\n")));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                }
            };
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return response;
        }
        let Some(host) = request_host(req) else {
            return json_answer(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "no Host header: cannot redirect to https" }),
            );
        };
        let name = ebb_core::routing::normalize_host(host);
        let authority = match https_port {
            443 => name,
            port => format!("{name}:{port}"),
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{authority}{path}");
        match HeaderValue::from_str(&location) {
            Ok(location) => {
                let mut response = Response::new(ProxyBody::empty());
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                response.headers_mut().insert(header::LOCATION, location);
                response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                response
            }
            Err(_) => json_answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": "bad Host header" })),
        }
    }

    /// Adds what this front adds to every answer (HSTS over TLS).
    pub(crate) fn finish(&self, response: &mut Response<ProxyBody>) {
        if let Some(hsts) = self.hsts.load().as_ref() {
            response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
}

/// `Strict-Transport-Security` for a TLS listener with `hsts`.
fn hsts_header(listener: &ebb_core::config::ListenerConfig, tls: bool) -> Option<HeaderValue> {
    listener.hsts.filter(|_| tls).and_then(|d| HeaderValue::from_str(&format!("max-age={}", d.as_secs())).ok())
}

/// `:authority` (HTTP/2, absolute-form) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
}

fn json_answer(status: StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, APPLICATION_JSON.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(https_port: u16) -> Front {
        Front {
            label: "listener public (http)".into(),
            name: "public".into(),
            config: ArcSwap::from_pointee(ProxyConfig::default()),
            targets: Targets::Redirect { https_port, challenges: Arc::new(Challenges::default()) },
            tls: None,
            hsts: ArcSwap::from_pointee(None),
            own_stats: ProxyStats::default(),
            unrouted: AtomicU64::new(0),
            access_log: arc_swap::ArcSwapOption::empty(),
        }
    }

    fn location(front: &Front, req: Request<()>) -> (u16, Option<String>) {
        let Target::Local(answer) = front.route(&req) else { panic!("a redirect front answers itself") };
        let location = answer.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_string());
        (answer.status().as_u16(), location)
    }

    #[test]
    fn plain_http_is_redirected_to_the_same_host_and_path_over_https() {
        let get = |host: Option<&str>, uri: &str| {
            let mut req = Request::get(uri);
            if let Some(host) = host {
                req = req.header(header::HOST, host);
            }
            req.body(()).unwrap()
        };
        let on_443 = redirect(443);
        assert_eq!(
            location(&on_443, get(Some("Shop.Example.com:80"), "/a/b?c=d&e")),
            (308, Some("https://shop.example.com/a/b?c=d&e".into())),
            "host without its port, the default HTTPS port left out, the query kept"
        );
        assert_eq!(
            location(&redirect(8443), get(Some("shop.test"), "/")),
            (308, Some("https://shop.test:8443/".into()))
        );
        assert_eq!(location(&on_443, get(None, "/")).0, 400, "no Host: nowhere to redirect to");
        assert_eq!(on_443.stats().requests.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn acme_challenges_are_answered_before_the_redirect() {
        let challenges = Arc::new(Challenges::default());
        challenges.insert("tok-1".into(), "tok-1.thumbprint".into());
        let front = Front { targets: Targets::Redirect { https_port: 443, challenges }, ..redirect(443) };
        let get = |uri: &str| Request::get(uri).header(header::HOST, "shop.test").body(()).unwrap();
        let Target::Local(answer) = front.route(&get("/.well-known/acme-challenge/tok-1")) else { panic!() };
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "text/plain");
        let Target::Local(unknown) = front.route(&get("/.well-known/acme-challenge/other")) else { panic!() };
        assert_eq!(unknown.status(), 404, "an unknown token is not redirected");
        assert_eq!(location(&front, get("/.well-known/other")).0, 308);
    }
}
