//! ACME end to end against Pebble, the ACME test server (Debian package
//! `pebble`): real parts only, on 127.0.0.1.
//!
//! The test makes Pebble's own HTTPS certificate (rcgen, its own CA, given
//! to ebb as `directory_ca`), starts `pebble-challtestsrv` as the DNS server
//! answering 127.0.0.1 for every name, and Pebble with `httpPort` pointing
//! at ebb's listener's `http` address (Pebble's default `badNonce` rate is
//! kept: instant-acme must retry). Then `ebb up` with `tls.acme` for two
//! names: HTTPS over HTTP/1.1 and HTTP/2 with Pebble's root, each host to
//! its own service, the 308 on plain HTTP; `ebb down` + `ebb up` serves the
//! same serial and orders nothing; `ebb certs renew` under continuous HTTPS
//! load serves a new serial with no failed request; with Pebble stopped a
//! renewal fails with its error (an event) and the old certificate stays;
//! a new Pebble that forgot the account gets a new one and issues.
//!
//! A second test has no `http` address (Pebble's `httpPort` has no one
//! behind it): ebb proves the names by TLS-ALPN-01 on its TLS port
//! (Pebble's `tlsPort`), serves the certificate, renews it the same way,
//! and ordinary clients connecting all along (SNI of the domains, `h2`,
//! `http/1.1` or no ALPN) never see a validation certificate.
//!
//! Skipped (with a message) when Pebble is not installed, except under CI
//! (`CI` set), where that fails: `scripts/install-test-deps` installs it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use support::{free_port, wait_for, Ebb};

const SHOP: &str = "shop.ebb.test";
const API: &str = "api.ebb.test";

/// Processes started by the test, killed (and reaped) on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn installed(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

/// Pebble and its DNS server, with their ports.
struct Pebble {
    directory: String,
    management: SocketAddr,
    ca_pem: std::path::PathBuf,
    log: std::path::PathBuf,
    dir: std::path::PathBuf,
    /// pebble-challtestsrv's DNS and management ports.
    dns: (u16, u16),
    _procs: Procs,
}

fn start_pebble(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
    // Pebble's own HTTPS certificate, for "localhost", from a test CA.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "ebb test: Pebble's HTTPS CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let leaf = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let ca_pem = dir.join("pebble-ca.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();

    let (acme, management, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let log = dir.join("pebble.log");
    let mut pebble = Pebble {
        directory: format!("https://localhost:{acme}/dir"),
        management: ([127, 0, 0, 1], management).into(),
        ca_pem,
        log,
        dir: dir.to_path_buf(),
        dns: (dns, dns_mgmt),
        _procs: Procs(Vec::new()),
    };
    pebble.spawn();
    pebble
}

impl Pebble {
    /// Starts pebble-challtestsrv and Pebble (again, after [`Pebble::stop`]:
    /// same ports, nothing remembered) and waits until Pebble listens.
    fn spawn(&mut self) {
        let (dns, dns_mgmt) = self.dns;
        self._procs.0.push(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{dns_mgmt}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start pebble-challtestsrv"),
        );
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self._procs.0.push(
            Command::new("pebble")
                .arg("-config")
                .arg(self.dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start pebble"),
        );
        let acme: SocketAddr = self
            .directory
            .trim_start_matches("https://localhost:")
            .trim_end_matches("/dir")
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .unwrap();
        wait_for("Pebble to listen", Duration::from_secs(20), || std::net::TcpStream::connect(acme).ok().map(|_| ()));
    }

    /// Stops Pebble and its DNS server.
    fn stop(&mut self) {
        for mut c in self._procs.0.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pebble's current root (the issuer of what it signs), from its
    /// management API.
    fn root(&self) -> CertificateDer<'static> {
        let pem = run(async {
            let config = client_config(&[ca_der(&self.ca_pem)], Proto::Http1);
            let tls = tls_connect(self.management, "localhost", config).await.unwrap();
            let mut send = Sender::open(tls, Proto::Http1).await;
            send.get(&format!("localhost:{}", self.management.port()), "/roots/0").await.body
        });
        rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).expect("Pebble's root is a PEM certificate")
    }

    /// How many orders Pebble has made, from its log ("There are now N
    /// orders in the db" once per order; a POST refused for a bad nonce
    /// makes none).
    fn orders(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches(" orders in the db").count()
    }
}

fn ca_der(path: &Path) -> CertificateDer<'static> {
    rustls_pki_types::pem::PemObject::from_pem_file(path).unwrap()
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

// ------------------------------------------------------------ TLS client

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Http1,
    Http2,
}

fn client_config(roots: &[CertificateDer<'static>], proto: Proto) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = match proto {
        Proto::Http1 => vec![b"http/1.1".to_vec()],
        Proto::Http2 => vec![b"h2".to_vec()],
    };
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects to `addr` as if `sni` resolved to it (curl's `--resolve`).
async fn tls_connect(addr: SocketAddr, sni: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// The serial of the certificate the server presented, and its names.
fn served(tls: &Tls) -> (String, Vec<String>) {
    use x509_parser::prelude::*;
    let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    let names = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    (cert.raw_serial_as_string(), names)
}

struct Answer {
    status: u16,
    version: http::Version,
    body: String,
}

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

    async fn get(&mut self, host: &str, path: &str) -> Answer {
        self.try_get(host, path).await.unwrap()
    }

    async fn try_get(&mut self, host: &str, path: &str) -> Result<Answer, String> {
        let req = match self {
            Sender::H1(_) => http::Request::get(path).header("host", host),
            Sender::H2(_) => http::Request::get(format!("https://{host}{path}")),
        };
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let response = match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
        .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let version = response.version();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer { status, version, body: String::from_utf8_lossy(&body).into_owned() })
    }
}

/// One HTTPS GET on a new connection: the answer and the served serial.
async fn https_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    root: &CertificateDer<'static>,
    proto: Proto,
) -> Result<(Answer, String), String> {
    let tls = tls_connect(addr, host, client_config(std::slice::from_ref(root), proto))
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (serial, names) = served(&tls);
    assert!(names.iter().any(|n| n == host), "{host} not in {names:?}");
    let mut send = Sender::open(tls, proto).await;
    Ok((send.try_get(host, path).await?, serial))
}

// ------------------------------------------------------------ the test

const HEALTH: &str = r#"path = "/gtg"
interval = "200ms"
timeout = "150ms"
healthy_threshold = 2
unhealthy_threshold = 2
matcher = "200"
grace_period = "0s""#;

fn config(admin: SocketAddr, tls: SocketAddr, http: Option<SocketAddr>, pebble: &Pebble) -> String {
    let http = http.map(|http| format!("http = \"{http}\"\n")).unwrap_or_default();
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

[service.shop]
command = "{{ebb}} demo-app --port $PORT"
replicas = {{ min = 1, max = 1, desired = 1 }}
stop_timeout = "5s"
drain_timeout = "5s"
[service.shop.health]
{HEALTH}

[listener.public]
listen = "{tls}"
{http}
[listener.public.tls.acme]
domains = ["{SHOP}", "{API}"]
email = "ops@ebb.test"
directory = "{directory}"
directory_ca = "{ca}"

[[listener.public.route]]
host = "{API}"
service = "api"

[[listener.public.route]]
service = "shop"
"#,
        directory = pebble.directory,
        ca = pebble.ca_pem.display(),
    )
}

/// The instance id of the demo-app replica that answered `/gtg?details`.
fn replica(answer: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
    v["instance-id"].as_str().unwrap_or_default().to_string()
}

fn acme_events(ebb: &Ebb, kind: &str) -> Vec<serde_json::Value> {
    ebb.events().into_iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn a_certificate_from_pebble_is_served_kept_across_restarts_and_renewed_under_load() {
    if !installed("pebble") || !installed("pebble-challtestsrv") {
        assert!(
            std::env::var_os("CI").is_none(),
            "pebble and pebble-challtestsrv are not installed: scripts/install-test-deps installs them"
        );
        eprintln!(
            "SKIPPED: pebble and pebble-challtestsrv are not installed (scripts/install-test-deps installs them)"
        );
        return;
    }
    // A failed order is retried after 2 s instead of 1 min: Pebble refuses
    // 5 % of nonces, and a client gives up after 3 in a row.
    std::env::set_var("EBB_ACME_RETRY_MS", "2000");
    let work = tempfile::tempdir().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut pebble = start_pebble(work.path(), http.port(), tls.port());
    let mut ebb = Ebb::start(|admin, _| config(admin, tls, Some(http), &pebble));
    let started = Instant::now();

    // The certificate arrives (two names, one order, HTTP-01 on `http`:
    // preferred when the listener has one).
    let obtained = wait_for("a certificate_obtained event", Duration::from_secs(60), || {
        let failed = acme_events(&ebb, "certificate_failed");
        if let Some(failed) = failed.iter().find(|e| !e["reason"].as_str().unwrap_or_default().contains("badNonce")) {
            panic!("ACME failed: {failed}\nebb log:\n{}\npebble log:\n{}", ebb.up_log(), support::read(&pebble.log));
        }
        acme_events(&ebb, "certificate_obtained").first().cloned()
    });
    eprintln!("obtained in {:?}: {}", started.elapsed(), obtained["reason"]);
    assert_eq!(obtained["service"], "listener public");
    let reason = obtained["reason"].as_str().unwrap();
    assert!(reason.contains(" by http-01 ("), "HTTP-01 is preferred with an http address: {reason}");
    // One order for both names (more only if one was refused and retried).
    let orders = pebble.orders();
    assert!(orders >= 1, "Pebble saw the order");
    let root = pebble.root();

    // HTTPS: HTTP/1.1 and HTTP/2, each host to its own service.
    ebb.wait_in_service_named(&["api", "shop"]);
    let (serial, replicas) = run(async {
        let mut serial = String::new();
        let mut replicas = Vec::new();
        for proto in [Proto::Http1, Proto::Http2] {
            for host in [SHOP, API] {
                let (answer, s) = https_get(tls, host, "/gtg?details", &root, proto).await.unwrap();
                assert_eq!(answer.status, 200, "{host}: {}", answer.body);
                let want = if proto == Proto::Http1 { http::Version::HTTP_11 } else { http::Version::HTTP_2 };
                assert_eq!(answer.version, want);
                serial = s;
                replicas.push((host, replica(&answer)));
            }
        }
        (serial, replicas)
    });
    for (host, replica) in &replicas {
        let service = if *host == API { "api-" } else { "shop-" };
        assert!(replica.starts_with(service), "{host} reached {replica}, not service {service}");
    }

    // Plain HTTP: 308 to https (and a challenge path no order uses: 404).
    let plain =
        support::http_raw(http, &format!("GET /a?b=c HTTP/1.1\r\nHost: {SHOP}\r\nConnection: close\r\n\r\n")).unwrap();
    assert_eq!(plain.status, 308);
    assert_eq!(plain.header("location"), Some(format!("https://{SHOP}:{}/a?b=c", tls.port()).as_str()));
    let stale = support::http_raw(
        http,
        &format!("GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: {SHOP}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(stale.status, 404);

    // Stored with mode 0600; `ebb certs` lists it.
    use std::os::unix::fs::PermissionsExt;
    let state = ebb.dir.path().join("state");
    for file in ["acme/public/key.pem", "acme/public/cert.pem"] {
        let mode = std::fs::metadata(state.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let accounts: Vec<_> = std::fs::read_dir(state.join("acme/accounts")).unwrap().collect();
    assert_eq!(accounts.len(), 1);
    let certs = ebb.cli(&["certs"]);
    let table = String::from_utf8_lossy(&certs.stdout);
    assert!(certs.status.success(), "{table}{}", String::from_utf8_lossy(&certs.stderr));
    assert!(table.contains("public") && table.contains(SHOP) && table.contains("acme"), "{table}");
    assert!(table.contains("Pebble"), "issuer: {table}");

    // `ebb down` + `ebb up`: the same certificate, no new order.
    let down = ebb.cli(&["down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    ebb.wait_exit(Duration::from_secs(30)).expect("ebb up exits after ebb down");
    ebb.restart_up();
    ebb.wait_in_service_named(&["api", "shop"]);
    let again = run(async { https_get(tls, SHOP, "/gtg", &root, Proto::Http1).await.unwrap().1 });
    assert_eq!(again, serial, "the stored certificate is served after a restart");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pebble.orders(), orders, "no new order after a restart");
    assert_eq!(acme_events(&ebb, "certificate_obtained").len(), 1, "no new certificate after a restart");

    // `ebb certs renew` under continuous HTTPS load (new connections, both
    // protocols): a new serial, no failed request.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let serials = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let load = {
        let (stop, ok, failed, serials, root) =
            (stop.clone(), ok.clone(), failed.clone(), serials.clone(), root.clone());
        std::thread::spawn(move || {
            run(async move {
                let mut errors = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (host, proto) = if i & 1 == 0 { (SHOP, Proto::Http1) } else { (API, Proto::Http2) };
                    match tokio::time::timeout(Duration::from_secs(10), https_get(tls, host, "/gtg", &root, proto))
                        .await
                    {
                        Ok(Ok((answer, serial))) if answer.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            serials.lock().unwrap().insert(serial);
                        }
                        Ok(Ok((answer, _))) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{host}: {} {}", answer.status, answer.body));
                        }
                        Ok(Err(e)) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{host}: {e}"));
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{host}: no answer in 10s"));
                        }
                    }
                }
                errors
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut renew = ebb.cli(&["certs", "renew", SHOP]);
    if String::from_utf8_lossy(&renew.stderr).contains("badNonce") {
        renew = ebb.cli(&["certs", "renew", SHOP]); // three refused nonces in a row: rare, retried
    }
    let said = String::from_utf8_lossy(&renew.stdout).into_owned();
    assert!(renew.status.success(), "{said}{}", String::from_utf8_lossy(&renew.stderr));
    assert!(said.contains("listener public: renewed"), "{said}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("renewal under load: {ok} requests answered, {failed} failed");
    assert_eq!(failed, 0, "failed requests during renewal: {errors:?}");
    assert!(ok > 5, "the load ran ({ok} requests)");
    let renewed = run(async { https_get(tls, API, "/gtg", &root, Proto::Http2).await.unwrap().1 });
    assert_ne!(renewed, serial, "a new certificate after ebb certs renew");
    assert!(said.contains(&renewed), "ebb certs renew names the new serial {renewed}: {said}");
    let seen = serials.lock().unwrap().clone();
    assert!(seen.contains(&serial) && seen.contains(&renewed), "the load saw both certificates: {seen:?}");
    assert!(pebble.orders() > orders, "a new order for the renewal");

    // The listener's events, by their subject.
    let events = ebb.cli(&["events", "listener public"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert_eq!(events.matches("certificate_obtained").count(), 2, "{events}");

    // The CA is gone: a renewal fails with its error, as an event, and the
    // certificate in service stays.
    pebble.stop();
    let failed = ebb.cli(&["certs", "renew"]);
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        err.contains("cannot connect to localhost") && err.contains("previous certificate is still served"),
        "{err}"
    );
    let event = acme_events(&ebb, "certificate_failed").pop().expect("a certificate_failed event");
    let reason = event["reason"].as_str().unwrap();
    assert!(reason.contains("current certificate is still served; retrying in 2s"), "{reason}");
    let still = run(async { https_get(tls, SHOP, "/gtg", &root, Proto::Http1).await.unwrap().1 });
    assert_eq!(still, renewed);
    let listed = ebb.cli(&["certs"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("last error: "), "ebb certs shows the failure");

    // A new Pebble on the same address knows neither the account nor the
    // old root: the stored account is set aside, a new one made, and the
    // renewal goes through.
    pebble.spawn();
    let renew = ebb.cli(&["certs", "renew"]);
    let said = String::from_utf8_lossy(&renew.stdout).into_owned();
    assert!(renew.status.success(), "{said}{}\n{}", String::from_utf8_lossy(&renew.stderr), ebb.up_log());
    let accounts = state.join("acme/accounts");
    let mut files: Vec<String> =
        std::fs::read_dir(&accounts).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "the new account and the old one set aside: {files:?}");
    assert!(files[1].ends_with(".json.unknown"), "{files:?}");
    let new_root = pebble.root();
    let fresh = run(async { https_get(tls, SHOP, "/gtg", &new_root, Proto::Http1).await.unwrap().1 });
    assert!(said.contains(&fresh), "{said}");

    // An unknown domain is refused, naming the ACME domains.
    let unknown = ebb.cli(&["certs", "renew", "other.ebb.test"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("no ACME certificate holds other.ebb.test") && err.contains(SHOP), "{err}");
    assert!(started.elapsed() < Duration::from_secs(170), "bounded: {:?}", started.elapsed());
}

/// The OID of the `acmeIdentifier` extension of TLS-ALPN-01 (RFC 8737).
const ACME_IDENTIFIER: &str = "1.3.6.1.5.5.7.1.31";

/// Records every leaf a server presents and accepts it: the test looks at
/// what was served, whatever it is.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<CertificateDer<'static>>>);

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        leaf: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.0.lock().unwrap().push(leaf.clone().into_owned());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A client that offers `alpn` and records what it is served.
fn recording_config(recorder: Arc<Recorder>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn has_acme_identifier(der: &CertificateDer<'_>) -> bool {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    cert.extensions().iter().any(|e| e.oid.to_id_string() == ACME_IDENTIFIER)
}

#[test]
fn without_an_http_address_the_certificate_comes_by_tls_alpn_01_on_the_tls_port() {
    if !installed("pebble") || !installed("pebble-challtestsrv") {
        assert!(
            std::env::var_os("CI").is_none(),
            "pebble and pebble-challtestsrv are not installed: scripts/install-test-deps installs them"
        );
        eprintln!(
            "SKIPPED: pebble and pebble-challtestsrv are not installed (scripts/install-test-deps installs them)"
        );
        return;
    }
    std::env::set_var("EBB_ACME_RETRY_MS", "2000");
    let work = tempfile::tempdir().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Pebble's httpPort: nothing listens there, so only TLS-ALPN-01 on the
    // TLS port can succeed.
    let nobody = free_port();
    let pebble = start_pebble(work.path(), nobody, tls.port());
    let ebb = Ebb::start(|admin, _| config(admin, tls, None, &pebble));

    // Ordinary clients (SNI of the domain, h2 / http/1.1 / no ALPN) keep
    // connecting while the validation runs: none may see a validation
    // certificate.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            run(async move {
                let recorder = Arc::new(Recorder::default());
                let alpns: [&[&[u8]]; 3] = [&[b"h2", b"http/1.1"], &[b"http/1.1"], &[]];
                let mut handshakes = 0u64;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let config = recording_config(recorder.clone(), alpns[i % 3]);
                    let host = [SHOP, API][i % 2];
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_secs(5), tls_connect(tls, host, config)).await
                    {
                        handshakes += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let served = recorder.0.lock().unwrap().clone();
                (handshakes, served)
            })
        })
    };

    let obtained = wait_for("a certificate_obtained event", Duration::from_secs(60), || {
        let failed = acme_events(&ebb, "certificate_failed");
        if let Some(failed) = failed.iter().find(|e| !e["reason"].as_str().unwrap_or_default().contains("badNonce")) {
            panic!("ACME failed: {failed}\nebb log:\n{}\npebble log:\n{}", ebb.up_log(), support::read(&pebble.log));
        }
        acme_events(&ebb, "certificate_obtained").first().cloned()
    });
    eprintln!("obtained: {}", obtained["reason"]);

    // Proved by TLS-ALPN-01 (Pebble's httpPort has no one).
    let reason = obtained["reason"].as_str().unwrap();
    assert!(reason.contains(" by tls-alpn-01 ("), "{reason}");

    // HTTPS with Pebble's root, both names, both protocols.
    let root = pebble.root();
    ebb.wait_in_service_named(&["api", "shop"]);
    let serial = run(async {
        let mut serial = String::new();
        for proto in [Proto::Http1, Proto::Http2] {
            for host in [SHOP, API] {
                let (answer, s) = https_get(tls, host, "/gtg", &root, proto).await.unwrap();
                assert_eq!(answer.status, 200, "{host}: {}", answer.body);
                serial = s;
            }
        }
        serial
    });

    // A renewal while the ordinary clients keep connecting (their
    // handshakes now succeed during the validation): a new certificate.
    let mut renew = ebb.cli(&["certs", "renew"]);
    if String::from_utf8_lossy(&renew.stderr).contains("badNonce") {
        renew = ebb.cli(&["certs", "renew"]); // three refused nonces in a row: rare, retried
    }
    let said = String::from_utf8_lossy(&renew.stdout).into_owned();
    assert!(renew.status.success(), "{said}{}\n{}", String::from_utf8_lossy(&renew.stderr), ebb.up_log());
    let renewed = run(async { https_get(tls, SHOP, "/gtg", &root, Proto::Http1).await.unwrap().1 });
    assert_ne!(renewed, serial);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (handshakes, served) = prober.join().unwrap();
    eprintln!("ordinary clients during the orders: {} certificates served, {handshakes} handshakes", served.len());
    assert!(served.iter().all(|c| !has_acme_identifier(c)), "an ordinary client got a validation certificate");
    assert!(handshakes > 0, "the ordinary clients got the certificate once it came");

    // The order is over: an acme-tls/1 handshake gets no certificate (an
    // alert), neither the validation one nor the ordinary one.
    let recorder = Arc::new(Recorder::default());
    let refused = run(tls_connect(tls, SHOP, recording_config(recorder.clone(), &[b"acme-tls/1"])));
    assert!(refused.is_err(), "acme-tls/1 after the order");
    assert!(recorder.0.lock().unwrap().is_empty());
}

/// The test's Ebb helpers for several named services.
trait Services {
    fn wait_in_service_named(&self, services: &[&str]);
}

impl Services for Ebb {
    fn wait_in_service_named(&self, services: &[&str]) {
        wait_for("every service in service", Duration::from_secs(30), || {
            let status = self.status();
            let all = services.iter().all(|name| {
                status["services"].as_array().unwrap().iter().any(|s| {
                    s["name"] == *name
                        && s["replicas"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r["state"] == "in_service" && r["healthy"] == true)
                })
            });
            all.then_some(())
        });
    }
}
