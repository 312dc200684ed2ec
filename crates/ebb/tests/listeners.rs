//! `[listener.NAME]`: routing and TLS, with real parts only.
//!
//! - End to end: the real `ebb up` with two demo-app services behind one
//!   listener (plain and TLS), certificates made by the test (rcgen, its
//!   own CA), clients built on hyper + tokio-rustls trusting that CA: each
//!   host and path reaches its own service, the default route, the 404
//!   JSON, HTTP/1.1 and HTTP/2 over TLS, SNI among two certificates, an
//!   unknown SNI and garbage instead of a ClientHello, the 308 redirect,
//!   HSTS, a certificate replaced on disk (and a broken one) while a
//!   connection stays open, and `ebb validate` on bad certificate files.
//! - In process: the balancer's library API behind a TLS listener with an
//!   echo backend: `X-Forwarded-Proto: https` reaches the replica, and the
//!   proxy hygiene attack table (`support/attack.rs`) gets the same answers
//!   over TLS as over plain TCP.

mod support;

#[path = "support/attack.rs"]
#[allow(dead_code)]
mod attack;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use support::{free_port, wait_for, Ebb, EBB};

// ------------------------------------------------------------ certificates

/// A test CA and what it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "ebb test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes `NAME.pem` (the leaf) and `NAME.key` into `dir` for these DNS
    /// names; `expired` sets a not-after in the past.
    fn issue(&self, dir: &Path, name: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

// ------------------------------------------------------------ TLS client

/// Accepts any server certificate: for looking at what an unknown SNI gets.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a test client speaks TLS.
#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Http1,
    Http2,
}

fn client_config(ca: Option<&CertificateDer<'static>>, proto: Proto) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let mut config = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).unwrap();
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider))).with_no_client_auth(),
    };
    config.alpn_protocols = match proto {
        Proto::Http1 => vec![b"http/1.1".to_vec()],
        Proto::Http2 => vec![b"h2".to_vec()],
    };
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(addr: SocketAddr, sni: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// The DNS names of the certificate the server presented.
fn served_names(tls: &Tls) -> Vec<String> {
    use x509_parser::prelude::*;
    let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// The demo-app replica that answered `/gtg?details` (`api-1a2b3c`).
    fn replica(&self) -> String {
        self.json()["instance-id"].as_str().unwrap_or_default().to_string()
    }
}

/// One request on a connection, HTTP/1.1 or HTTP/2 (as `proto`).
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn open(tls: Tls, proto: Proto) -> Sender {
        let io = TokioIo::new(tls);
        match proto {
            Proto::Http1 => {
                let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                Sender::H1(send)
            }
            Proto::Http2 => {
                let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(conn);
                Sender::H2(send)
            }
        }
    }

    async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = http::Request::get(match self {
            Sender::H1(_) => path.to_string(),
            Sender::H2(_) => format!("https://{host}{path}"),
        });
        if let Sender::H1(_) = self {
            req = req.header("host", host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let response = match self {
            Sender::H1(s) => s.send_request(req).await.unwrap(),
            Sender::H2(s) => s.send_request(req).await.unwrap(),
        };
        assert_eq!(
            response.version(),
            match self {
                Sender::H1(_) => http::Version::HTTP_11,
                Sender::H2(_) => http::Version::HTTP_2,
            }
        );
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }
}

// ------------------------------------------------------------ end to end

const HEALTH: &str = r#"path = "/gtg"
interval = "200ms"
timeout = "150ms"
healthy_threshold = 2
unhealthy_threshold = 2
matcher = "200"
grace_period = "0s""#;

struct Ports {
    plain: SocketAddr,
    strict: SocketAddr,
    tls: SocketAddr,
    redirect: SocketAddr,
}

fn config(admin: SocketAddr, web: SocketAddr, ports: &Ports, certs: &Path) -> String {
    let c = |name: &str| certs.join(name).display().to_string();
    format!(
        r#"state_dir = "state"

[admin]
listen = "{admin}"

[service.api]
command = "{{ebb}} demo-app --port $PORT"
replicas = {{ min = 1, max = 1, desired = 1 }}
stop_timeout = "5s"
drain_timeout = "5s"
[service.api.health]
{HEALTH}

[service.web]
command = "{{ebb}} demo-app --port $PORT"
listen = "{web}"
replicas = {{ min = 1, max = 1, desired = 1 }}
stop_timeout = "5s"
drain_timeout = "5s"
[service.web.health]
{HEALTH}

[listener.plain]
listen = "{plain}"

[[listener.plain.route]]
host = "api.example.test"
service = "api"

[[listener.plain.route]]
path_prefix = "/gtg/api"
service = "api"

[[listener.plain.route]]
headers = {{ "x-canary" = "1" }}
service = "api"

[[listener.plain.route]]
service = "web"

[listener.strict]
listen = "{strict}"

[[listener.strict.route]]
host = "*.example.test"
methods = ["GET"]
service = "web"

[listener.public]
listen = "{tls}"
http = "{redirect}"
hsts = "365d"

[[listener.public.tls.certs]]
cert = "{site_pem}"
key = "{site_key}"

[[listener.public.tls.certs]]
cert = "{api_pem}"
key = "{api_key}"

[[listener.public.route]]
host = "api.example.test"
service = "api"

[[listener.public.route]]
service = "web"
"#,
        plain = ports.plain,
        strict = ports.strict,
        tls = ports.tls,
        redirect = ports.redirect,
        site_pem = c("site.pem"),
        site_key = c("site.key"),
        api_pem = c("api.pem"),
        api_key = c("api.key"),
    )
}

fn http_get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> support::Response {
    let mut all = vec![("Host", host)];
    all.extend_from_slice(headers);
    let mut raw = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in all {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    support::http_raw(addr, &raw).unwrap()
}

fn replica_of(r: &support::Response) -> String {
    r.json()["instance-id"].as_str().unwrap_or_default().to_string()
}

#[test]
fn two_services_behind_plain_and_tls_listeners() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(certs.path(), "site", &["www.example.test", "*.example.test"], false);
    ca.issue(certs.path(), "api", &["api.example.test"], false);
    let port = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
    let ports = Ports { plain: port(), strict: port(), tls: port(), redirect: port() };
    let ebb = Ebb::start_under(&["env", "EBB_TLS_POLL_MS=200"], |admin, web| config(admin, web, &ports, certs.path()));
    wait_for("both services in service", Duration::from_secs(30), || {
        let status = ebb.status();
        let ready = status["services"].as_array()?.iter().all(|s| s["in_service"] == 1);
        ready.then_some(())
    });

    // --- plain listener: host, path, header, default
    wait_for("the plain listener", Duration::from_secs(10), || {
        support::http(ports.plain, "GET", "/gtg", None).ok().filter(|r| r.status == 200)
    });
    let via =
        |host: &str, path: &str, headers: &[(&str, &str)]| replica_of(&http_get(ports.plain, host, path, headers));
    assert!(via("api.example.test", "/gtg?details", &[]).starts_with("api-"), "host route");
    assert!(via("API.Example.TEST:8080", "/gtg?details", &[]).starts_with("api-"), "case and port ignored");
    assert!(via("www.example.test", "/gtg?details", &[("x-canary", "1")]).starts_with("api-"), "header route");
    assert!(via("www.example.test", "/gtg?details", &[("x-canary", "2")]).starts_with("web-"), "default route");
    assert!(via("other", "/gtg?details", &[]).starts_with("web-"), "default route");
    // The short form still serves web alone.
    assert!(replica_of(&http_get(ebb.listen, "api.example.test", "/gtg?details", &[])).starts_with("web-"));
    // A path route: the demo app answers 404 for /gtg/api, but it is api's.
    let api_requests = |ebb: &Ebb| {
        ebb.status()["services"].as_array().unwrap().iter().find(|s| s["name"] == "api").unwrap()["replicas"][0]
            ["requests"]
            .as_u64()
            .unwrap()
    };
    let before = api_requests(&ebb);
    assert_eq!(http_get(ports.plain, "www.example.test", "/gtg/api/x", &[]).status, 404);
    wait_for("api to count the path-routed request", Duration::from_secs(5), || {
        (api_requests(&ebb) > before).then_some(())
    });

    // --- no default route: 404 JSON naming the listener; methods
    let r = http_get(ports.strict, "nothing.test", "/x", &[]);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"], "no route on listener strict for host nothing.test path /x");
    assert_eq!(r.json()["listener"], "strict");
    assert_eq!(http_get(ports.strict, "a.example.test", "/gtg", &[]).status, 200);
    let post = support::http_raw(
        ports.strict,
        "POST /gtg HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(post.status, 404, "methods = [\"GET\"] only");

    // --- plain http beside TLS: 308 to https, query kept
    let r = http_get(ports.redirect, "shop.example.test:80", "/a/b?c=d&e", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location").unwrap(), format!("https://shop.example.test:{}/a/b?c=d&e", ports.tls.port()));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let ca_der = ca.der();
        // --- TLS: HTTP/1.1 and HTTP/2, SNI, HSTS
        for proto in [Proto::Http1, Proto::Http2] {
            let tls = tls_connect(ports.tls, "api.example.test", client_config(Some(&ca_der), proto)).await.unwrap();
            assert_eq!(served_names(&tls), ["api.example.test"], "SNI picks the api certificate");
            let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
            assert_eq!(alpn, Some(if proto == Proto::Http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }));
            let mut send = Sender::open(tls, proto).await;
            let a = send.get("api.example.test", "/gtg?details", &[]).await;
            assert_eq!(a.status, 200);
            assert!(a.replica().starts_with("api-"));
            assert_eq!(a.headers["strict-transport-security"], "max-age=31536000");

            let tls = tls_connect(ports.tls, "www.example.test", client_config(Some(&ca_der), proto)).await.unwrap();
            assert_eq!(served_names(&tls), ["www.example.test", "*.example.test"]);
            let mut send = Sender::open(tls, proto).await;
            assert!(send.get("www.example.test", "/gtg?details", &[]).await.replica().starts_with("web-"));
            // A wildcard name gets the wildcard certificate.
            let tls = tls_connect(ports.tls, "shop.example.test", client_config(Some(&ca_der), proto)).await.unwrap();
            assert_eq!(served_names(&tls)[1], "*.example.test");
        }
        // An unknown SNI gets the first (default) certificate.
        let tls = tls_connect(ports.tls, "unknown.other", client_config(None, Proto::Http1)).await.unwrap();
        assert_eq!(served_names(&tls)[0], "www.example.test");
        let mut send = Sender::open(tls, Proto::Http1).await;
        let a = send.get("unknown.other", "/gtg?details", &[]).await;
        assert!(a.replica().starts_with("web-"), "routed by Host to the default route");

        // Garbage instead of a ClientHello: the connection just fails.
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(ports.tls).await.unwrap();
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
            assert!(read.is_ok(), "the connection was closed");
            assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
        }

        // --- the certificate replaced on disk: the next connection gets
        // it, an open one keeps working.
        let tls = tls_connect(ports.tls, "api.example.test", client_config(Some(&ca_der), Proto::Http1)).await.unwrap();
        let old = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let mut open = Sender::open(tls, Proto::Http1).await;
        assert_eq!(open.get("api.example.test", "/gtg", &[]).await.status, 200);
        ca.issue(certs.path(), "api", &["api.example.test"], false);
        let fresh = wait_for_async("the new certificate", || async {
            let tls =
                tls_connect(ports.tls, "api.example.test", client_config(Some(&ca_der), Proto::Http1)).await.ok()?;
            let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            (served != old).then_some(served)
        })
        .await;
        assert_eq!(open.get("api.example.test", "/gtg", &[]).await.status, 200, "the open connection still works");

        // A broken file: the previous certificate stays, the error is shown.
        std::fs::write(certs.path().join("api.pem"), "not a certificate\n").unwrap();
        let status = wait_for_async("the reload error in status", || async {
            let status = ebb.status();
            let error = status["listeners"].as_array()?.iter().find(|l| l["name"] == "public")?["tls_error"]
                .as_str()?
                .to_string();
            Some(error)
        })
        .await;
        assert!(status.contains("api.pem") && status.contains("no certificate"), "{status}");
        let tls = tls_connect(ports.tls, "api.example.test", client_config(Some(&ca_der), Proto::Http1)).await.unwrap();
        assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], fresh, "still the last good certificate");
    });

    // --- status shows the listeners, TLS and routes
    let status = ebb.status();
    let public = status["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "public").unwrap().clone();
    assert_eq!(public["tls"], true);
    assert_eq!(public["certificates"].as_array().unwrap().len(), 2);
    assert_eq!(public["routes"][0]["rule"], "host api.example.test");
    assert_eq!(public["routes"][1]["rule"], "default");
    let text = String::from_utf8(ebb.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("service api  via listener plain, public"), "{text}");
    assert!(text.contains(&format!("listener public  https://{}", ports.tls)), "{text}");
    assert!(text.contains("route 1  host api.example.test -> api"), "{text}");
    assert!(text.contains("certificate www.example.test, *.example.test  not after"), "{text}");

    // --- the reloads are events of the listener; `ebb certs` lists the files
    let kinds: Vec<String> = ebb
        .events()
        .iter()
        .filter(|e| e["service"] == "listener public")
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "certificate_reloaded"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "certificate_failed"), "{kinds:?}");
    let certs = String::from_utf8(ebb.cli(&["certs"]).stdout).unwrap();
    assert!(certs.starts_with("LISTENER"), "{certs}");
    let line = certs.lines().find(|l| l.contains("www.example.test")).unwrap_or_else(|| panic!("{certs}"));
    assert!(line.starts_with("public") && line.contains("ebb test CA") && line.ends_with("file"), "{certs}");
    assert!(certs.contains("last error: "), "the broken api.pem: {certs}");

    // --- /metrics: each listener's own counters, and certificate expiry
    let metrics = support::http(ebb.admin, "GET", "/metrics", None).unwrap();
    assert_eq!(metrics.status, 200);
    let sample = |name: &str, labels: &str| -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        metrics.body.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    };
    let unrouted = "ebb_listener_unrouted_requests_total";
    let strict = r#"listener="strict",address="listen""#;
    assert_eq!(sample(unrouted, strict), Some(2.0), "GET nothing.test, POST:\n{}", metrics.body);
    assert_eq!(sample(unrouted, r#"listener="plain",address="listen""#), Some(0.0), "plain has a default route");
    assert!(sample("ebb_listener_max_connections", r#"listener="plain",address="listen""#).is_some_and(|m| m > 0.0));
    // The TLS listener's two addresses, told apart by `address`.
    for address in ["listen", "http"] {
        let labels = format!(r#"listener="public",address="{address}""#);
        for name in [
            "ebb_listener_client_connections",
            "ebb_listener_connection_cap_reached_total",
            "ebb_listener_max_connections",
            "ebb_listener_local_answers_total",
        ] {
            assert!(sample(name, &labels).is_some(), "missing {name}{{{labels}}}:\n{}", metrics.body);
        }
    }
    let redirected = sample("ebb_listener_local_answers_total", r#"listener="public",address="http""#);
    assert_eq!(redirected, Some(1.0), "the one request redirected to https:\n{}", metrics.body);
    assert_eq!(sample(unrouted, r#"listener="public",address="http""#), None, "http does not route");
    let handshakes = sample("ebb_listener_tls_handshake_failures_total", r#"listener="public",address="listen""#);
    assert!(handshakes.is_some_and(|n| n >= 1.0), "the garbage ClientHello: {handshakes:?}\n{}", metrics.body);
    assert_eq!(sample("ebb_listener_tls_handshake_failures_total", r#"listener="plain",address="listen""#), None);
    for cert in public["certificates"].as_array().unwrap() {
        let first = cert["names"][0].as_str().unwrap();
        let not_after = humantime::parse_rfc3339(cert["not_after"].as_str().unwrap()).unwrap();
        let unix = not_after.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as f64;
        let labels = format!(r#"listener="public",certificate="{first}""#);
        assert_eq!(sample("ebb_listener_certificate_not_after_seconds", &labels), Some(unix), "{}", metrics.body);
    }
    // And a real parser takes them.
    match support::python_with("prometheus_client") {
        Err(why) => println!("SKIP: parsing /metrics with a real Prometheus parser: {why}"),
        Ok(()) => {
            let parsed = support::parse_with_python(&metrics.body, false, ebb.dir.path())
                .unwrap_or_else(|e| panic!("the Prometheus parser refused /metrics: {e}\n{}", metrics.body));
            // The value of `type name{labels}` (the parser prints 2 or 2.0).
            let value = |sample: &str| -> Option<f64> {
                parsed.iter().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            };
            assert_eq!(
                value("counter ebb_listener_unrouted_requests_total{address=listen,listener=strict}"),
                Some(2.0),
                "{parsed:#?}"
            );
            assert_eq!(
                value("counter ebb_listener_local_answers_total{address=http,listener=public}"),
                Some(1.0),
                "{parsed:#?}"
            );
            let expiry =
                "gauge ebb_listener_certificate_not_after_seconds{certificate=api.example.test,listener=public}";
            assert!(value(expiry).is_some_and(|s| s > 1.7e9), "{parsed:#?}");
        }
    }

    // --- ebb load follows the service a listener's routes give its requests
    let load = |args: &[&str]| {
        let out = ebb.cli(&[&["load", "-n", "10", "--json"], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (json["fleet"]["service"].as_str().unwrap_or("(none)").to_string(), stderr)
    };
    let admin = format!("http://{}", ebb.admin);
    let plain = format!("http://{}/gtg", ports.plain);
    let (service, stderr) = load(&["--ebb", &admin, "-H", "Host: api.example.test", &plain]);
    assert_eq!(service, "api", "host route: {stderr}");
    assert!(stderr.contains("following api through ebb's admin API"), "{stderr}");
    assert_eq!(load(&["--ebb", &admin, &plain]).0, "web", "the default route");
    let canary = load(&["--ebb", &admin, "-H", "X-Canary: 1", &plain]).0;
    assert_eq!(canary, "api", "header route");
    // Found without --ebb too (the admin API named in the config).
    assert_eq!(load(&["-H", "Host: api.example.test", &plain]).0, "api");
    assert_eq!(load(&[&format!("http://{}/gtg/api/x", ports.plain)]).0, "api", "path route");
}

async fn wait_for_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------ ebb certs reload

/// `ebb certs reload` loads replaced certificate files at once (the file
/// poll is set to an hour, so only the command can have done it); a broken
/// file is refused with its error and the previous certificate stays.
#[test]
fn ebb_certs_reload_serves_a_replaced_certificate_at_once() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (pem, key) = ca.issue(certs.path(), "site", &["www.example.test"], false);
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listener = format!(
        "\n[listener.public]\nlisten = \"{tls_addr}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[listener.public.route]]\nservice = \"web\"\n",
        pem.display(),
        key.display()
    );
    let ebb = Ebb::start_under(&["env", "EBB_TLS_POLL_MS=3600000"], |admin, listen| {
        support::fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", &listener)
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ca_der = ca.der();
    let served = || {
        runtime.block_on(async {
            let tls = wait_for_async("a TLS handshake", || async {
                tls_connect(tls_addr, "www.example.test", client_config(Some(&ca_der), Proto::Http1)).await.ok()
            })
            .await;
            tls.get_ref().1.peer_certificates().unwrap()[0].clone()
        })
    };
    let old = served();

    // Replaced on disk: with the poll at an hour, still the old one...
    ca.issue(certs.path(), "site", &["www.example.test"], false);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served(), old, "no reload without the command (EBB_TLS_POLL_MS is an hour)");
    // ... until `ebb certs reload`.
    let out = ebb.cli(&["certs", "reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("listener public: reloaded: www.example.test (not after "), "{stdout}");
    let new = served();
    assert_ne!(new, old, "the next connection gets the new certificate");
    let events = ebb.events();
    assert!(
        events.iter().any(|e| e["kind"] == "certificate_reloaded"
            && e["service"] == "listener public"
            && e["reason"].as_str().unwrap_or("").contains("ebb certs reload")),
        "{events:?}"
    );

    // A broken file: refused with its error, exit 1, the new one still served.
    std::fs::write(&pem, "not a certificate\n").unwrap();
    let out = ebb.cli(&["certs", "reload", "public"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("listener public: not reloaded:") && stdout.contains("previous certificates"), "{stdout}");
    assert_eq!(served(), new, "the previous certificate stays in service");

    // A listener without certificate files: 404, exit 2.
    let out = ebb.cli(&["certs", "reload", "nosuch"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("listener nosuch does not serve certificate files; listeners that do: public"), "{stderr}");
}

/// One `certificate_reloaded` event per `ebb certs reload`: the file poll
/// (every 300 ms here) does not load the same change again afterwards. If
/// the poll happens to see a change before the command does, its event
/// comes first; never after the command's.
#[test]
fn ebb_certs_reload_is_one_reload_not_two() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (pem, key) = ca.issue(certs.path(), "site", &["www.example.test"], false);
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listener = format!(
        "\n[listener.public]\nlisten = \"{tls_addr}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[listener.public.route]]\nservice = \"web\"\n",
        pem.display(),
        key.display()
    );
    let ebb = Ebb::start_under(&["env", "EBB_TLS_POLL_MS=300"], |admin, listen| {
        support::fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", &listener)
    });
    let reloads = || -> Vec<String> {
        ebb.events()
            .iter()
            .filter(|e| e["service"] == "listener public" && e["kind"] == "certificate_reloaded")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    for round in 1..=3 {
        let before = reloads().len();
        ca.issue(certs.path(), "site", &["www.example.test"], false);
        let out = ebb.cli(&["certs", "reload"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Several polls later: nothing more.
        std::thread::sleep(Duration::from_millis(1500));
        let now = reloads();
        let new = &now[before..];
        let by_command = new.iter().filter(|r| r.contains("ebb certs reload")).count();
        assert_eq!(by_command, 1, "round {round}: {new:?}");
        assert!(
            new.last().is_some_and(|r| r.contains("ebb certs reload")),
            "round {round}: the poll reloaded the same change again after the command: {new:?}"
        );
        assert!(new.len() <= 2, "round {round}: {new:?}");
    }
}

// ------------------------------------------------------------ [admin] tls

/// `[admin] tls`: the admin API speaks HTTPS only, with a certificate
/// named relative to ebb.toml. `ebb status` reaches it (the CLI trusts the
/// configured certificate), plain HTTP gets no answer, a client trusting
/// the CA reads `/api/v1/status`, `ebb dashboard` prints an https link, and
/// a certificate replaced on disk is served without a restart.
#[test]
fn the_admin_api_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(certs.path(), "admin", &["localhost"], false);
    // Relative to ebb.toml (both are directories of the temp directory).
    let relative = Path::new("..").join(certs.path().file_name().unwrap());
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        relative.join("admin.pem").display(),
        relative.join("admin.key").display()
    );
    let status_json = |ebb: &Ebb| -> Option<serde_json::Value> {
        let out = ebb.cli(&["status", "--json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    let ebb = Ebb::start_until(
        &["env", "EBB_TLS_POLL_MS=200"],
        |admin, listen| {
            let config = support::fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "");
            config.replacen(&format!("listen = \"{admin}\"\n"), &format!("listen = \"{admin}\"\n{tls}"), 1)
        },
        |ebb| status_json(ebb).is_some(),
    );
    // `ebb status` over HTTPS.
    let status = status_json(&ebb).unwrap();
    ebb.note_pids(&status);
    assert_eq!(status["services"][0]["name"], "web", "{status}");
    assert!(ebb.up_log().contains(&format!("admin API and dashboard on https://{}/", ebb.admin)), "{}", ebb.up_log());

    // `ebb certs` lists the admin API's own certificate beside the
    // listeners' (there are none here), and reloads it.
    let out = ebb.cli(&["certs", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let admin_cert = listed.as_array().unwrap().iter().find(|c| c["listener"] == "admin API").cloned();
    let admin_cert = admin_cert.unwrap_or_else(|| panic!("no admin API certificate in {listed}"));
    assert_eq!(admin_cert["domains"], serde_json::json!(["localhost"]), "{admin_cert}");
    assert_eq!(admin_cert["source"], "file", "{admin_cert}");
    assert!(admin_cert["file"].as_str().unwrap().ends_with("admin.pem"), "{admin_cert}");
    let out = ebb.cli(&["certs"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.lines().any(|l| l.starts_with("admin API") && l.contains("localhost") && l.contains("file")),
        "{table}"
    );
    let out = ebb.cli(&["certs", "reload"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("admin API"), "{text}");

    // Plain HTTP: no answer at all.
    let plain = support::http(ebb.admin, "GET", "/api/v1/status", None);
    assert!(plain.is_err(), "plain HTTP must not be answered: {plain:?}");

    // `ebb dashboard`: an https login link.
    let out = ebb.cli(&["dashboard"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("https://{}/login?ticket=", ebb.admin)), "{stdout}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ca_der = ca.der();
    let token = ebb.token();
    let bearer = format!("Bearer {token}");
    // An HTTPS client of its own, trusting the test CA.
    let get = |path: &str| -> (Answer, CertificateDer<'static>) {
        runtime.block_on(async {
            let tls = tls_connect(ebb.admin, "localhost", client_config(Some(&ca_der), Proto::Http1)).await.unwrap();
            let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            let mut send = Sender::open(tls, Proto::Http1).await;
            (send.get("localhost", path, &[("authorization", &bearer)]).await, served)
        })
    };
    let (answer, old) = get("/api/v1/status");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["services"][0]["name"], "web");
    // HTTP/2 is not offered on the admin API.
    let h2 = runtime.block_on(tls_connect(ebb.admin, "localhost", client_config(Some(&ca_der), Proto::Http2)));
    assert!(h2.is_err(), "an h2-only client gets no common protocol");

    // The certificate replaced on disk: served without a restart, once.
    ca.issue(certs.path(), "admin", &["localhost"], false);
    wait_for("the new admin certificate", Duration::from_secs(20), || (get("/api/v1/status").1 != old).then_some(()));
    let (events, _) = get("/api/v1/events");
    let reloads: Vec<_> = events
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["service"] == "admin API" && e["kind"] == "certificate_reloaded")
        .filter(|e| e["reason"].as_str().unwrap().contains("changed on disk"))
        .cloned()
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    // The CLI trusts the new file as it trusted the old, and sees the event.
    let out = ebb.cli(&["events", "admin API"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("certificate_reloaded"), "{stdout}");
    // `ebb down` over HTTPS: asks, then sees the admin API go away.
    let out = ebb.cli(&["down"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ebb: stopped"), "{stdout}");
}

/// A missing `[admin] tls` file is an error at its key, with the line and a
/// caret, before anything starts.
#[test]
fn a_missing_admin_certificate_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    Ca::new().issue(dir.path(), "admin", &["localhost"], false);
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:{}\"\ntls = {{ cert = \"missing.pem\", key = \"admin.key\" }}\n\n\
         [service.web]\ncommand = \"web --port $PORT\"\nlisten = \"127.0.0.1:{}\"\n",
        free_port(),
        free_port()
    );
    let (code, err) = validate(dir.path(), &text);
    let config = dir.path().join("ebb.toml");
    let missing = dir.path().join("missing.pem");
    let expected = format!(
        "{}:3:16: error: cannot read {}: No such file or directory (os error 2)\n   |\n  3| tls = {{ cert = \"missing.pem\", key = \"admin.key\" }}\n   |                ^^^^^^^^^^^^^\n",
        config.display(),
        missing.display()
    );
    assert_eq!((code, err.as_str()), (2, expected.as_str()));
    // `ebb up` refuses the same way, binding nothing.
    let out = std::process::Command::new(EBB).arg("-f").arg(&config).arg("up").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&expected), "{stderr}");
}

// ------------------------------------------------------------ ebb validate

fn validate(dir: &Path, text: &str) -> (i32, String) {
    let path = dir.join("ebb.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(EBB).arg("validate").arg(&path).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tls_config(cert: &str, key: &str) -> String {
    format!(
        r#"[service.web]
command = "web --port $PORT"

[listener.public]
listen = "127.0.0.1:{}"
tls = {{ cert = "{cert}", key = "{key}" }}

[[listener.public.route]]
service = "web"
"#,
        free_port()
    )
}

#[test]
fn bad_certificate_files_get_a_located_error_and_an_expired_one_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(dir.path(), "good", &["good.test"], false);
    ca.issue(dir.path(), "other", &["other.test"], false);
    ca.issue(dir.path(), "old", &["old.test"], true);
    std::fs::write(dir.path().join("junk.pem"), "hello\n").unwrap();

    let (code, err) = validate(dir.path(), &tls_config("good.pem", "good.key"));
    assert_eq!((code, err.as_str()), (0, ""), "a good pair validates quietly");

    let (code, err) = validate(dir.path(), &tls_config("missing.pem", "good.key"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ebb.toml:6:16: error: cannot read") && err.contains("missing.pem"), "{err}");
    assert!(err.contains("^^^^^^^^^^^^^"), "a caret under the cert value: {err}");

    let (code, err) = validate(dir.path(), &tls_config("junk.pem", "good.key"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no certificate") && err.contains("BEGIN CERTIFICATE"), "{err}");

    let (code, err) = validate(dir.path(), &tls_config("good.pem", "junk.pem"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a PEM private key"), "{err}");

    let (code, err) = validate(dir.path(), &tls_config("good.pem", "other.key"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("other.key does not match the certificate in"), "{err}");
    let col = err.split(':').nth(2).unwrap().to_string();
    assert!(col.parse::<u32>().unwrap() > 30, "points at the key, not the cert: {err}");

    let (code, err) = validate(dir.path(), &tls_config("old.pem", "old.key"));
    assert_eq!(code, 0, "expired is a warning: {err}");
    assert!(err.contains("warning: the certificate in") && err.contains("expired on 2020-01-01"), "{err}");
}

// ------------------------------------------------------------ in process

/// What the echo backend saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    /// Requests whose body broke off.
    broken: AtomicUsize,
}

/// A backend that answers every request with the headers it received.
async fn echo_backend() -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let s = s.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                        for (k, v) in req.headers() {
                            headers
                                .entry(k.to_string())
                                .or_default()
                                .push(String::from_utf8_lossy(v.as_bytes()).into());
                        }
                        if req.into_body().collect().await.is_err() {
                            s.broken.fetch_add(1, Ordering::SeqCst);
                        }
                        let body = serde_json::json!({ "headers": headers }).to_string();
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    (addr, seen)
}

/// A TLS listener routing everything to one service with one echo replica.
async fn tls_front(dir: &Path, backend: SocketAddr) -> (SocketAddr, Arc<ebb::proxy::ServiceProxy>) {
    let text = r#"[service.web]
command = "web"

[listener.public]
listen = "127.0.0.1:0"
tls = { cert = "site.pem", key = "site.key" }

[[listener.public.route]]
service = "web"
"#;
    let config = ebb_core::config::Config::parse(text, &dir.join("ebb.toml")).unwrap();
    let listener = &config.listeners["public"];
    let tls = ebb::tls::TlsState::new("public", &listener.tls.as_ref().unwrap().certs).unwrap();
    let proxy = ebb::proxy::ServiceProxy::new(
        "web",
        ebb_core::config::BalanceAlgorithm::LeastOutstanding,
        ebb_core::config::ProxyConfig::default(),
    );
    proxy.set_routable(vec![Arc::new(ebb::proxy::Backend::new("web-1", backend))]);
    let services = BTreeMap::from([("web".to_string(), proxy.clone())]);
    let routing = ebb::proxy::Routing::new(&listener.routes, &services).unwrap();
    let front = ebb::proxy::Front::listener(listener, routing, Some(tls));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(ebb::proxy::serve_front(socket, front, tokio_util::sync::CancellationToken::new()));
    (addr, proxy)
}

#[tokio::test]
async fn x_forwarded_proto_is_https_and_the_attack_table_holds_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(dir.path(), "site", &["web.test"], false);
    let (backend, seen) = echo_backend().await;
    let (addr, proxy) = tls_front(dir.path(), backend).await;
    let config = client_config(Some(&ca.der()), Proto::Http1);

    // A client's own claim is replaced: the balancer knows it is TLS.
    let tls = tls_connect(addr, "web.test", config.clone()).await.unwrap();
    let mut send = Sender::open(tls, Proto::Http1).await;
    let a = send.get("web.test", "/", &[("x-forwarded-proto", "http")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["headers"]["x-forwarded-proto"], serde_json::json!(["https"]));
    assert!(a.json()["headers"]["forwarded"][0].as_str().unwrap().ends_with("proto=https"));

    let connect = || {
        let config = config.clone();
        async move { tls_connect(addr, "web.test", config).await.expect("TLS handshake") }
    };
    let whole = || seen.requests.load(Ordering::SeqCst) - seen.broken.load(Ordering::SeqCst);
    let failures = attack::run_on(connect, attack::CASES, || seen.requests.load(Ordering::SeqCst), whole).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed over TLS:\n{}",
        failures.len(),
        attack::CASES.len(),
        failures.join("\n")
    );
    let stats = proxy.stats.snapshot();
    assert_eq!((stats.upstream_errors, stats.upstream_timeouts), (0, 0), "{stats:?}");
}

/// `ebb load` against an HTTPS listener: a certificate it cannot verify is
/// one clear error before anything is sent; with `--cacert` the run goes
/// through TLS, and follows the fleet over an HTTPS admin API (`--ebb`).
#[test]
fn ebb_load_drives_an_https_listener_and_verifies_its_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (pem, key) = ca.issue(certs.path(), "local", &["127.0.0.1"], false);
    let ca_pem = certs.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
    let secure: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let files = format!("tls = {{ cert = \"{}\", key = \"{}\" }}\n", pem.display(), key.display());
    let ebb = Ebb::start_until(
        &[],
        |admin, listen| {
            let config = support::fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "");
            let mut config =
                config.replacen(&format!("listen = \"{admin}\"\n"), &format!("listen = \"{admin}\"\n{files}"), 1);
            config.push_str(&format!(
                "\n[listener.secure]\nlisten = \"{secure}\"\n{files}\n[[listener.secure.route]]\nservice = \"web\"\n"
            ));
            config
        },
        |ebb| {
            let out = ebb.cli(&["--admin-ca", ca_pem.to_str().unwrap(), "status", "--json"]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["services"][0]["in_service"] == 1
        },
    );
    let url = format!("https://{secure}/gtg?details");

    // Not trusted: refused up front, naming the fix.
    let out = ebb.cli(&["load", &url, "-n", "20"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("TLS handshake") && stderr.contains("--cacert") && stderr.contains("nothing was sent"),
        "{stderr}"
    );

    // Trusted through the CA: every request answered over TLS, and the
    // fleet followed over the HTTPS admin API.
    let admin_url = format!("https://{}", ebb.admin);
    let out = ebb.cli(&[
        "load",
        &url,
        "-n",
        "300",
        "-c",
        "4",
        "--cacert",
        ca_pem.to_str().unwrap(),
        "--ebb",
        &admin_url,
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["ok"].as_u64(), summary["errors"].as_u64()), (Some(300), Some(0)), "{summary}");
    assert!(stderr.contains(&format!("following web through ebb's admin API at {admin_url}")), "{stderr}");
    // The listener's service counted them.
    let out = ebb.cli(&["--admin-ca", ca_pem.to_str().unwrap(), "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["services"][0]["replicas"][0]["requests"].as_u64().unwrap() >= 300, "{status}");

    // --cacert is for https only.
    let out = ebb.cli(&["load", &format!("http://{}/gtg", ebb.listen), "--cacert", ca_pem.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cacert is for an https:// target"));
}
