//! The typed client of a running ebb's admin API, for the CLI and `ebb load
//! --ebb`: one method per call, sending and returning [`crate::wire`]'s
//! types, so no caller builds JSON or knows a path or a status code.
//!
//! It sends the bearer token from `<state_dir>/admin.token` (written by
//! `ebb up`), or `EBB_TOKEN`, with every call; the token never appears in
//! its messages. [`AdminTarget`] says which ebb: the config file's, or
//! `--admin URL` from another directory or machine.
//!
//! When the config gives the admin API a certificate (`[admin] tls`), it
//! speaks HTTPS ([`AdminTls`]): it trusts the built-in public roots (Mozilla's)
//! and the certificate file named in the config itself, so a self-signed
//! admin certificate works: a server presenting exactly a certificate of
//! that file is trusted whatever names it holds (the CLI dials the address
//! from the same config, and the handshake proves the server holds its key);
//! any other certificate must chain to a trusted root (the file's
//! certificates count as roots) and name the address dialled (an IP SAN).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::events::Event;
use crate::metrics::history::ServicePoint;
use crate::wire::{
    DashboardLogin, DeployRequest, ErrorBody, FleetStatus, InterruptRequest, ProtectRequest, ReasonRequest,
    ReplicaOutcome, ScaleOutcome, ServiceStatus, SetDesiredRequest, ShutdownRequest, ShutdownView,
};

/// Talks to `ebb up`'s admin API.
#[derive(Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// HTTPS (`[admin] tls`): one connection per call.
    tls: Option<AdminTls>,
    token: AdminCredential,
    /// How long a call may take, answer included.
    answer_within: Duration,
}

/// The token the CLI presents, or why it has none.
#[derive(Clone)]
pub enum AdminCredential {
    Token(String),
    /// None, on purpose: for reads from a loopback-only admin listener
    /// (`ebb load --ebb`), which need no token.
    None,
    /// The token file could not be read: mutating calls will be refused,
    /// and the error says why.
    Unreadable {
        path: PathBuf,
        why: String,
    },
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminCredential::Token(_) => f.write_str("Token(<redacted>)"),
            AdminCredential::None => f.write_str("None"),
            AdminCredential::Unreadable { path, why } => write!(f, "Unreadable({}: {why})", path.display()),
        }
    }
}

/// Reads the admin token of the ebb whose state directory is `state_dir`.
pub fn read_token(state_dir: &Path) -> AdminCredential {
    read_token_file(&crate::admin::token_path(state_dir))
}

fn read_token_file(path: &Path) -> AdminCredential {
    let path = path.to_path_buf();
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => AdminCredential::Token(text.trim().to_string()),
        Ok(_) => AdminCredential::Unreadable { path, why: "the file is empty".into() },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            AdminCredential::Unreadable { path, why: "it does not exist (has `ebb up` run with this config?)".into() }
        }
        Err(e) => AdminCredential::Unreadable { path, why: e.to_string() },
    }
}

/// Where the CLI finds the running ebb: `--admin URL` (another directory,
/// another machine), else the config file's `[admin]`. The token comes from
/// `EBB_TOKEN`, else `--token-file`, else the config's state directory.
#[derive(Debug, Clone, Default)]
pub struct AdminTarget {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub url: Option<String>,
    /// A PEM certificate to trust for an `https` admin URL (a self-signed
    /// admin certificate), besides the built-in roots.
    pub ca: Option<PathBuf>,
    /// A file holding the admin token.
    pub token_file: Option<PathBuf>,
}

/// The environment variable holding an admin token.
pub const TOKEN_ENV: &str = "EBB_TOKEN";

impl AdminTarget {
    /// Whether commands talk to an ebb named by URL rather than by the
    /// config file.
    pub fn is_remote(&self) -> bool {
        self.url.is_some()
    }

    /// The client for the running ebb; `config` is the config file when one
    /// was read. Errors are bad input (an unusable URL, no config).
    pub fn client(&self, config: Option<&ebb_core::config::Config>) -> Result<AdminClient, String> {
        let token = self.credential(config.map(|c| c.state_dir.as_path()));
        match (&self.url, config) {
            (Some(url), _) => AdminClient::for_url(url, token, self.ca.as_deref()),
            (None, Some(config)) => Ok(AdminClient::for_config(config, token)),
            (None, None) => Err("no config file and no --admin URL: say which ebb to talk to".into()),
        }
    }

    fn credential(&self, state_dir: Option<&Path>) -> AdminCredential {
        if let Ok(token) = std::env::var(TOKEN_ENV) {
            if !token.trim().is_empty() {
                return AdminCredential::Token(token.trim().to_string());
            }
        }
        match (&self.token_file, state_dir) {
            (Some(file), _) => read_token_file(file),
            (None, Some(dir)) if self.url.is_none() => read_token(dir),
            _ => AdminCredential::Unreadable {
                path: PathBuf::from(format!("${TOKEN_ENV}")),
                why: format!(
                    "not set: with --admin, set {TOKEN_ENV} (or --token-file) to the contents of the remote ebb's <state_dir>/admin.token"
                ),
            },
        }
    }
}

/// A failure to reach ebb at all (as opposed to an error answer).
#[derive(Debug, thiserror::Error)]
#[error("ebb is not running for this config: nothing answers at {scheme}://{addr} ({cause}); start it with `ebb up`")]
pub struct NotRunning {
    pub addr: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub cause: String,
}

/// An error answer from the admin API (4xx/5xx with a JSON message): the
/// request was refused and changed nothing.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
    /// The message is the API's own (`{"error": ...}`); false when
    /// something else answered, e.g. an older ebb without that route.
    pub from_api: bool,
}

/// Why an admin API call failed; typed until a caller makes it a message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    #[error("ebb at {scheme}://{addr} did not answer within {}", in_words(*.limit))]
    NoAnswer { addr: SocketAddr, scheme: &'static str, limit: Duration },
    /// Something answers, but the TLS handshake failed (an untrusted
    /// certificate, or plain HTTP on the port).
    #[error("no TLS with the admin API at https://{addr}: {message}")]
    Tls { addr: SocketAddr, message: String },
    /// An error answer (the API's `{"error": ...}` body).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A 401 while the token file could not be read: that is the reason.
    #[error("{message} (cannot read the admin token {}: {why})", path.display())]
    NoToken { message: String, path: PathBuf, why: String },
    #[error("cannot send {path} to the admin API: {message}")]
    Request { path: String, message: String },
    #[error("reading the admin API's answer: {0}")]
    Read(String),
    #[error("unexpected answer from the admin API at {path}")]
    Unexpected {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The API's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&Refused> {
        match self {
            ClientError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

type Answer<T> = Result<T, ClientError>;

/// `30 s`, `900 ms`.
fn in_words(limit: Duration) -> String {
    match limit.subsec_millis() {
        0 => format!("{} s", limit.as_secs()),
        _ => format!("{} ms", limit.as_millis()),
    }
}

impl AdminClient {
    /// A client for the admin API at `addr`, presenting `token` (see
    /// [`read_token`]).
    pub fn new(addr: SocketAddr, token: AdminCredential) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Self { addr, http, tls: None, token, answer_within: Duration::from_secs(30) }
    }

    /// A client for the admin API of `config` (HTTPS with `[admin] tls`),
    /// presenting `token`.
    pub fn for_config(config: &ebb_core::config::Config, token: AdminCredential) -> Self {
        let client = Self::new(config.admin.listen, token);
        match &config.admin.tls {
            Some(files) => client.with_tls(AdminTls::trusting(&files.cert)),
            None => client,
        }
    }

    /// A client for `--admin URL`: `http://HOST:PORT` or `https://HOST:PORT`
    /// (HTTPS trusting the built-in roots and `ca`, with HOST as the name
    /// the certificate must hold unless it is exactly one of `ca`'s).
    pub fn for_url(url: &str, token: AdminCredential, ca: Option<&Path>) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("--admin {url:?}: {why}; write it like http://127.0.0.1:9900 or https://ebb.example.com:9900")
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty()) {
            return Err(bad("give only the scheme, host and port, no path"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| bad(&format!("{host} has no address")))?;
        let client = Self::new(addr, token);
        if !tls {
            return Ok(client);
        }
        let admin_tls = match ca {
            Some(file) => AdminTls::trusting(file),
            None => AdminTls::roots_only(),
        };
        Ok(client.with_tls(admin_tls.for_host(&host)))
    }

    /// The same client, speaking HTTPS.
    pub fn with_tls(mut self, tls: AdminTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The same client, giving up on a call after `limit` (30 s by default).
    pub fn answer_within(mut self, limit: Duration) -> Self {
        self.answer_within = limit;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET /api/v1/status`: every service and its replicas.
    pub async fn status(&self) -> Answer<FleetStatus> {
        self.get("/api/v1/status").await
    }

    /// `GET /api/v1/services/{name}`.
    pub async fn service(&self, name: &str) -> Answer<ServiceStatus> {
        self.get(&format!("/api/v1/services/{name}")).await
    }

    /// `PUT /api/v1/services/{name}/desired`.
    pub async fn scale(&self, name: &str, desired: u32, reason: &str) -> Answer<ScaleOutcome> {
        let body = SetDesiredRequest { desired, reason: Some(reason.to_string()) };
        self.send(Method::PUT, &format!("/api/v1/services/{name}/desired"), &body).await
    }

    /// `POST /api/v1/services/{name}/deploy`: answers once the deploy has started.
    pub async fn deploy(&self, name: &str, request: &DeployRequest) -> Answer<ServiceStatus> {
        self.send(Method::POST, &format!("/api/v1/services/{name}/deploy"), request).await
    }

    /// `POST /api/v1/services/{name}/rollback`.
    pub async fn rollback(&self, name: &str, reason: Option<&str>) -> Answer<ServiceStatus> {
        let body = ReasonRequest { reason: reason.map(str::to_string) };
        self.send(Method::POST, &format!("/api/v1/services/{name}/rollback"), &body).await
    }

    /// `POST /api/v1/replicas/{id}/protect`.
    pub async fn protect(&self, replica: &str, protected: bool) -> Answer<ReplicaOutcome> {
        self.send(Method::POST, &format!("/api/v1/replicas/{replica}/protect"), &ProtectRequest { protected }).await
    }

    /// `POST /api/v1/replicas/{id}/interrupt`, with `notice` in whole seconds.
    pub async fn interrupt(&self, replica: &str, notice: Duration) -> Answer<ReplicaOutcome> {
        let body = InterruptRequest { notice_s: Some(notice.as_secs()) };
        self.send(Method::POST, &format!("/api/v1/replicas/{replica}/interrupt"), &body).await
    }

    /// `GET /api/v1/events`: events after sequence number `after`, oldest
    /// first, of one service or all. Read as the event log's own type (the
    /// API serves the same JSON), so they print as the log keeps them.
    pub async fn events(&self, service: Option<&str>, after: u64) -> Answer<Vec<Event>> {
        let mut path = format!("/api/v1/events?after={after}");
        if let Some(s) = service {
            // Percent-encoded: a listener's events are `listener NAME`.
            let s = percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC);
            path.push_str(&format!("&service={s}"));
        }
        self.get(&path).await
    }

    /// `GET /api/v1/metrics`: one service's points since `since_ms` (Unix
    /// milliseconds), oldest first.
    pub async fn metrics(&self, service: &str, since_ms: u64) -> Answer<Vec<ServicePoint>> {
        let service = percent_encoding::utf8_percent_encode(service, percent_encoding::NON_ALPHANUMERIC);
        self.get(&format!("/api/v1/metrics?service={service}&since={since_ms}")).await
    }

    /// `GET /api/v1/certs`: the certificates every TLS listener serves.
    pub async fn certs(&self) -> Answer<Vec<crate::wire::CertView>> {
        self.get("/api/v1/certs").await
    }

    /// `POST /api/v1/certs/renew`: renews the ACME certificate holding
    /// `domain` (or every one) and answers once the new one is served.
    pub async fn renew_certs(&self, domain: Option<&str>) -> Answer<Vec<crate::wire::RenewOutcome>> {
        let body = crate::wire::RenewRequest { domain: domain.map(str::to_string) };
        self.send(Method::POST, "/api/v1/certs/renew", &body).await
    }

    /// `POST /api/v1/certs/reload`: loads the certificate files of every
    /// file-TLS listener (or only `listener`) again now.
    pub async fn reload_certs(&self, listener: Option<&str>) -> Answer<Vec<crate::wire::ReloadOutcome>> {
        let body = crate::wire::ReloadRequest { listener: listener.map(str::to_string) };
        self.send(Method::POST, "/api/v1/certs/reload", &body).await
    }

    /// `POST /api/v1/plan`: what applying the config file (its path and
    /// text) would change on the running ebb.
    pub async fn plan(&self, path: &str, text: &str) -> Answer<crate::wire::PlanAnswer> {
        let body = crate::wire::ConfigFileRequest { path: path.to_string(), text: text.to_string() };
        self.send(Method::POST, "/api/v1/plan", &body).await
    }

    /// `POST /api/v1/apply`: applies the config file; answers once every
    /// change is made or started (deploys and drains go on).
    pub async fn apply(&self, path: &str, text: &str) -> Answer<crate::wire::ApplyAnswer> {
        let body = crate::wire::ConfigFileRequest { path: path.to_string(), text: text.to_string() };
        self.send(Method::POST, "/api/v1/apply", &body).await
    }

    /// `POST /api/v1/shutdown`: ebb drains and stops everything.
    pub async fn shutdown(&self) -> Answer<ShutdownView> {
        self.send(Method::POST, "/api/v1/shutdown", &ShutdownRequest {}).await
    }

    /// `POST /api/v1/dashboard/login`: a one-time link for a browser.
    pub async fn dashboard_login(&self) -> Answer<DashboardLogin> {
        self.send(Method::POST, "/api/v1/dashboard/login", &ShutdownRequest {}).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Answer<T> {
        self.json(Method::GET, path, None).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(&self, method: Method, path: &str, body: &B) -> Answer<T> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::Request { path: path.to_string(), message: e.to_string() })?;
        self.json(method, path, Some(body)).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Answer<(StatusCode, Bytes)> {
        let mut request = match self.tls {
            None => http::Request::builder().method(method).uri(format!("http://{}{path}", self.addr)),
            // One connection of our own: the path, and the Host.
            Some(_) => {
                http::Request::builder().method(method).uri(path).header(http::header::HOST, self.addr.to_string())
            }
        };
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let AdminCredential::Token(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Request { path: path.to_string(), message: e.to_string() })?;
        let limit = self.answer_within;
        let (addr, scheme) = (self.addr, self.scheme());
        let answer = async {
            let response = match &self.tls {
                None => self.http.request(request).await.map_err(|e| {
                    let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
                    ClientError::NotRunning(NotRunning { addr, scheme, cause })
                })?,
                Some(tls) => tls.request(addr, request).await?,
            };
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| ClientError::Read(e.to_string()))?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(limit, answer).await.map_err(|_| ClientError::NoAnswer { addr, scheme, limit })?
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Answer<T> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !status.is_success() {
            let (message, from_api) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (body.error, true),
                Err(_) => (String::from_utf8_lossy(&bytes).into_owned(), false),
            };
            if status == StatusCode::UNAUTHORIZED {
                if let AdminCredential::Unreadable { path, why } = &self.token {
                    return Err(ClientError::NoToken { message, path: path.clone(), why: why.clone() });
                }
            }
            return Err(ClientError::Refused(Refused { status: status.as_u16(), message, from_api }));
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Unexpected { path: path.to_string(), source })
    }
}

/// How the CLI speaks HTTPS to an admin API with `[admin] tls`: the
/// built-in roots, plus the configured certificate file (see the module
/// docs).
#[derive(Clone)]
pub struct AdminTls {
    connector: tokio_rustls::TlsConnector,
    /// The DNS name to ask for and verify (`--admin https://NAME:PORT`);
    /// `None`: the IP address dialled.
    server_name: Option<String>,
    /// Why the configured certificate file could not be read, if it could
    /// not (said when the handshake then fails).
    unreadable: Option<String>,
}

impl AdminTls {
    /// Trusts the built-in roots and the certificates in `cert_file`.
    pub fn trusting(cert_file: &Path) -> AdminTls {
        let (pinned, unreadable) = match read_certificates(cert_file) {
            Ok(pinned) => (pinned, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let config = client_config(pinned, vec![b"http/1.1".to_vec()]);
        AdminTls { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name: None, unreadable }
    }

    /// Trusts the built-in roots only (`https://` with no certificate file).
    pub fn roots_only() -> AdminTls {
        let config = client_config(Vec::new(), vec![b"http/1.1".to_vec()]);
        AdminTls { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name: None, unreadable: None }
    }

    /// Asks for and verifies `host` (a DNS name; an IP address is what is
    /// dialled anyway).
    pub fn for_host(mut self, host: &str) -> AdminTls {
        if host.parse::<std::net::IpAddr>().is_err() {
            self.server_name = Some(host.to_string());
        }
        self
    }

    /// One request on a connection of its own.
    async fn request(
        &self,
        addr: SocketAddr,
        request: http::Request<Full<Bytes>>,
    ) -> Answer<http::Response<hyper::body::Incoming>> {
        let not_running = |cause: String| ClientError::NotRunning(NotRunning { addr, scheme: "https", cause });
        let tcp = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| not_running("connection timed out".into()))?
            .map_err(|e| not_running(e.to_string()))?;
        let name = match self.server_name.as_deref().map(rustls_pki_types::ServerName::try_from) {
            Some(Ok(name)) => name.to_owned(),
            _ => rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
        };
        let stream = self.connector.connect(name, tcp).await.map_err(|e| {
            let mut message = e.to_string();
            if let Some(why) = &self.unreadable {
                message.push_str(&format!(" (the CLI trusts [admin] tls.cert, but {why})"));
            }
            ClientError::Tls { addr, message }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Tls { addr, message: e.to_string() })?;
        tokio::spawn(conn);
        let path = request.uri().to_string();
        sender.send_request(request).await.map_err(|e| ClientError::Request { path, message: e.to_string() })
    }
}

/// The certificates in a PEM file, or why they cannot be read.
pub fn read_certificates(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A TLS client (ring, TLS 1.2 and 1.3) that trusts the built-in WebPKI
/// roots, the CA certificates among `pinned`, and a server presenting
/// exactly one of `pinned` (a self-signed certificate).
pub fn client_config(
    pinned: Vec<rustls_pki_types::CertificateDer<'static>>,
    alpn: Vec<Vec<u8>>,
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    roots.add_parsable_certificates(pinned.iter().cloned());
    let verifier = PinnedOrRoots {
        pinned,
        roots: rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok(),
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    config
}

/// Trusts a server presenting exactly one of the configured certificates;
/// anything else must pass ordinary WebPKI checks against the roots.
#[derive(Debug)]
struct PinnedOrRoots {
    pinned: Vec<rustls_pki_types::CertificateDer<'static>>,
    roots: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrRoots {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            // The handshake's signature (checked below) proves the key.
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match &self.roots {
            Some(roots) => roots.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
