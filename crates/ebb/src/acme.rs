//! ACME (RFC 8555) for `tls.acme`: ebb obtains and renews a listener's
//! certificate itself, proving each domain with an HTTP-01 challenge on its
//! own `http` address, or a TLS-ALPN-01 challenge (RFC 8737) on its TLS
//! address when it has no `http` address.
//!
//! - **Client**: `instant-acme` (ring, no aws-lc-rs) over ebb's own small
//!   HTTPS client ([`AcmeHttp`]: tokio-rustls with the ring provider, one
//!   HTTP/1.1 connection per request), trusting the compiled-in public roots
//!   or only `directory_ca`. instant-acme retries `badNonce` answers itself.
//! - **Challenges**: [`Challenges`] maps a token to its key authorization;
//!   the task fills it for an order and empties it after;
//!   `Front::answer_locally` serves `/.well-known/acme-challenge/TOKEN` from
//!   it on every listener's `http` address, before the redirect.
//! - **Which challenge**: a listener with an `http` address answers HTTP-01
//!   (TLS-ALPN-01 only if the CA offers no HTTP-01); one without answers
//!   TLS-ALPN-01 on its TLS address: per pending authorization a
//!   self-signed certificate for the domain with the critical
//!   `acmeIdentifier` extension (the SHA-256 of the key authorization) is
//!   installed in the listener's `TlsState` ([`TlsState::add_validation`])
//!   and served only to `acme-tls/1` handshakes, then removed when the
//!   order ends however it ends ([`Validations`]).
//! - **Storage** (`<state_dir>/acme/`): `accounts/<directory>.json` (the
//!   account's key and URL, one account per directory, mode 0600) and
//!   `<listener>/cert.pem` + `key.pem` (mode 0600). At start the stored
//!   certificate is served if it loads; it is ordered again only when it
//!   does not cover the configured domains or is within `renew_before` of
//!   its not-after, so a restart never orders again.
//! - **Before the first certificate** the listener accepts connections but
//!   has no certificate: the handshake fails with rustls's
//!   `access_denied` alert ("no server certificate chain resolved"), never
//!   a panic; plain HTTP on `http` already redirects.
//! - **Renewal** ([`AcmeListener::run`]): one task per ACME listener sleeps
//!   until `renew_before` the not-after (or a forced renewal); a failure is a
//!   `certificate_failed` event with the CA's own error, retried after 1
//!   minute, doubling to 1 hour, while the old certificate keeps being
//!   served. A new certificate is swapped into the listener's `TlsState`
//!   atomically: new handshakes get it, open connections keep theirs.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ebb_core::config::AcmeConfig;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use tokio::sync::{mpsc, oneshot};

use crate::events::{EventKind, EventLog, NewEvent};
use crate::tls::TlsState;

/// First retry after a failed order; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The problem type of a JWS signed by an account the CA does not know.
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
/// One HTTP exchange with the ACME server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the CA may take to validate and to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// HTTP-01 tokens and their key authorizations, shared by every `http`
/// address (the CA may reach any of them on port 80).
#[derive(Default, Debug)]
pub struct Challenges(RwLock<HashMap<String, String>>);

impl Challenges {
    /// The body for `/.well-known/acme-challenge/TOKEN`.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }
    pub(crate) fn insert(&self, token: String, key_authorization: String) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(token, key_authorization);
    }
    fn remove(&self, token: &str) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(token);
    }
}

/// Where a listener's ACME files are.
pub fn cert_dir(state_dir: &Path, listener: &str) -> PathBuf {
    state_dir.join("acme").join(listener)
}

/// The account file of a directory: its URL made a file name.
fn account_file(state_dir: &Path, directory: &str) -> PathBuf {
    let name: String = directory
        .trim_start_matches("https://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    state_dir.join("acme").join("accounts").join(format!("{name}.json"))
}

/// A forced renewal's answer: the new certificate's serial and not-after,
/// or the CA's error.
pub type RenewReply = Result<(String, String), String>;

/// One ACME listener: its settings, its TLS state, and the renewal task's
/// mailbox.
pub struct AcmeListener {
    pub listener: String,
    pub config: AcmeConfig,
    pub tls: Arc<TlsState>,
    state_dir: PathBuf,
    challenges: Arc<Challenges>,
    /// The listener has an `http` address: HTTP-01 is answered there.
    http: bool,
    events: Arc<EventLog>,
    renew_tx: mpsc::Sender<oneshot::Sender<RenewReply>>,
    renew_rx: Mutex<Option<mpsc::Receiver<oneshot::Sender<RenewReply>>>>,
    /// The last failure (cleared by a success), for `ebb certs`.
    pub last_error: Mutex<Option<String>>,
    /// Orders made by this ebb since it started.
    pub orders: std::sync::atomic::AtomicU64,
}

impl AcmeListener {
    pub fn new(
        listener: &str,
        config: AcmeConfig,
        tls: Arc<TlsState>,
        state_dir: &Path,
        challenges: Arc<Challenges>,
        http: bool,
        events: Arc<EventLog>,
    ) -> Arc<AcmeListener> {
        let (renew_tx, renew_rx) = mpsc::channel(8);
        Arc::new(AcmeListener {
            listener: listener.to_string(),
            config,
            tls,
            state_dir: state_dir.to_path_buf(),
            challenges,
            http,
            events,
            renew_tx,
            renew_rx: Mutex::new(Some(renew_rx)),
            last_error: Mutex::new(None),
            orders: Default::default(),
        })
    }

    /// Asks the task for a renewal now; resolves when it is done.
    pub async fn renew(&self) -> RenewReply {
        let (tx, rx) = oneshot::channel();
        self.renew_tx.send(tx).await.map_err(|_| "ebb is stopping".to_string())?;
        rx.await.map_err(|_| "ebb is stopping".to_string())?
    }

    /// The event's `service` field: `listener NAME`.
    fn subject(&self) -> String {
        format!("listener {}", self.listener)
    }

    /// When the certificate in service should be renewed: now if there is
    /// none or it does not cover every domain.
    fn due(&self) -> SystemTime {
        let certs = self.tls.certs();
        match certs.first() {
            Some(c) if self.config.domains.iter().all(|d| c.names.contains(d)) => {
                renewal_time(c.not_before, c.not_after, self.config.renew_before)
            }
            _ => SystemTime::UNIX_EPOCH,
        }
    }

    /// Obtains a certificate when one is due, renews it `renew_before` its
    /// expiry, and on request; retries failures with backoff; until `stop`.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Some(mut renew_rx) = self.renew_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let mut account: Option<Account> = None;
        // EBB_ACME_RETRY_MS: a shorter first retry, for tests.
        let first_backoff = std::env::var("EBB_ACME_RETRY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(FIRST_BACKOFF, Duration::from_millis);
        let mut backoff = first_backoff;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let due = self.due();
            let wait = match retry_at {
                Some(at) => at.saturating_duration_since(tokio::time::Instant::now()),
                None => due.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO),
            };
            // Sleep at most a day at a time: the wall clock may jump.
            let wait = wait.min(Duration::from_secs(86_400));
            let mut waiting: Vec<oneshot::Sender<RenewReply>> = Vec::new();
            if !wait.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {
                        if retry_at.is_none() && self.due() > SystemTime::now() {
                            continue;
                        }
                    }
                    reply = renew_rx.recv() => match reply {
                        Some(reply) => waiting.push(reply),
                        None => return,
                    },
                }
            }
            while let Ok(reply) = renew_rx.try_recv() {
                waiting.push(reply);
            }
            let forced = !waiting.is_empty();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.order(&mut account, forced) => r,
            };
            match result {
                Ok((serial, not_after)) => {
                    backoff = first_backoff;
                    retry_at = None;
                    for reply in waiting {
                        let _ = reply.send(Ok((serial.clone(), not_after.clone())));
                    }
                }
                Err(error) => {
                    let reason = format!(
                        "could not obtain a certificate for {} from {}: {error}; {} retrying in {}",
                        self.config.domains.join(", "),
                        self.config.directory,
                        if self.tls.certs().is_empty() {
                            "no certificate is served yet (TLS handshakes fail);"
                        } else {
                            "the current certificate is still served;"
                        },
                        humantime::format_duration(backoff)
                    );
                    tracing::warn!(listener = %self.listener, "{reason}");
                    self.events.record(NewEvent::new(&self.subject(), EventKind::CertificateFailed, reason));
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    for reply in waiting {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// One order, start to finish: the certificate is stored and served.
    async fn order(&self, account: &mut Option<Account>, forced: bool) -> Result<(String, String), String> {
        if account.is_none() {
            *account = Some(self.account().await?);
        }
        let Some(acct) = account.as_ref() else { return Err("no ACME account".into()) };
        self.orders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let obtained = match obtain(acct, &self.config.domains, self.answerer()).await {
            // The CA no longer knows the stored account (a test CA
            // restarted, an account deactivated): set the file aside, make
            // a new account, and try once more.
            Err(error) if error.contains(ACCOUNT_DOES_NOT_EXIST) => {
                let file = account_file(&self.state_dir, &self.config.directory);
                let aside = file.with_extension("json.unknown");
                let _ = std::fs::rename(&file, &aside);
                tracing::warn!(listener = %self.listener, file = %aside.display(), %error, "The ACME server does not know the stored account; making a new one.");
                *account = Some(self.account().await?);
                let Some(acct) = account.as_ref() else { return Err("no ACME account".into()) };
                obtain(acct, &self.config.domains, self.answerer()).await
            }
            other => other,
        };
        let (chain, key, proofs) = obtained.inspect_err(|_| {
            // The account is read again (or made) at the next attempt.
            *account = None;
        })?;
        let dir = cert_dir(&self.state_dir, &self.listener);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        write_private(&dir.join("key.pem"), key.as_bytes())?;
        write_private(&dir.join("cert.pem"), chain.as_bytes())?;
        self.tls.reload().map_err(|e| format!("the new certificate does not load: {e}"))?;
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let certs = self.tls.certs();
        let cert = certs.first().ok_or("the new certificate is not in service")?;
        let (serial, not_after) = (cert.serial.clone(), cert.not_after_text());
        let reason = format!(
            "{} certificate for {} from {}{} (issuer {}, serial {serial}, not after {not_after}); renewal {} before",
            if forced { "renewed (asked for)" } else { "obtained" },
            self.config.domains.join(", "),
            self.config.directory,
            if proofs.is_empty() { String::new() } else { format!(" by {}", proofs.join(", ")) },
            cert.issuer,
            humantime::format_duration(self.config.renew_before),
        );
        tracing::info!(listener = %self.listener, "{reason}");
        self.events.record(NewEvent::new(&self.subject(), EventKind::CertificateObtained, reason));
        Ok((serial, not_after))
    }

    /// Where this listener answers challenges.
    fn answerer(&self) -> Answerer<'_> {
        Answerer { challenges: &self.challenges, tls: &self.tls, http: self.http }
    }

    /// The stored account for this directory, or a new one (then stored).
    async fn account(&self) -> Result<Account, String> {
        let http = AcmeHttp::new(self.config.directory_ca.as_deref())?;
        let file = account_file(&self.state_dir, &self.config.directory);
        if let Ok(text) = std::fs::read(&file) {
            let credentials: AccountCredentials = serde_json::from_slice(&text).map_err(|e| {
                format!("{} is not an ACME account file ({e}); remove it to make a new account", file.display())
            })?;
            return Account::builder_with_http(Box::new(http))
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("the stored account {} does not work: {e}", file.display()));
        }
        let contact = self.config.email.iter().map(|e| format!("mailto:{e}")).collect::<Vec<_>>();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = Account::builder_with_http(Box::new(http))
            .create(&new, self.config.directory.clone(), None)
            .await
            .map_err(|e| format!("cannot create an ACME account: {e}"))?;
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let json = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
        write_private(&file, &json)?;
        tracing::info!(listener = %self.listener, file = %file.display(), "Created an ACME account.");
        Ok(account)
    }
}

/// `renew_before` the not-after; but for a certificate that lives no longer
/// than `renew_before` (a short-lived profile), at two thirds of its life,
/// so that it is not renewed over and over.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime, renew_before: Duration) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or(Duration::ZERO);
    if life <= renew_before {
        return not_before + life * 2 / 3;
    }
    not_after.checked_sub(renew_before).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Where one listener answers challenges: HTTP-01 tokens on the `http`
/// addresses, TLS-ALPN-01 validation certificates in its own TLS state.
struct Answerer<'a> {
    challenges: &'a Challenges,
    tls: &'a TlsState,
    /// HTTP-01 can be answered (the listener has an `http` address).
    http: bool,
}

/// Orders a certificate for `domains`, answering HTTP-01 or TLS-ALPN-01
/// challenges; returns the PEM chain, the PEM private key, and the
/// challenge types answered (none when every authorization was still
/// valid).
async fn obtain(
    account: &Account,
    domains: &[String],
    answerer: Answerer<'_>,
) -> Result<(String, String, Vec<&'static str>), String> {
    let ids: Vec<Identifier> = domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| format!("new order: {e}"))?;
    let mut tokens = Tokens { challenges: answerer.challenges, tokens: Vec::new() };
    let mut validations = Validations { tls: answerer.tls, domains: Vec::new() };
    let mut proofs: Vec<&'static str> = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(format!("an authorization is {other:?}")),
        }
        let offers = |kind: ChallengeType| authorization.challenges.iter().any(|c| c.r#type == kind);
        let kind = if answerer.http && offers(ChallengeType::Http01) {
            ChallengeType::Http01
        } else if offers(ChallengeType::TlsAlpn01) {
            ChallengeType::TlsAlpn01
        } else if answerer.http {
            return Err(
                "the ACME server offers neither an http-01 nor a tls-alpn-01 challenge (ebb answers only those)".into(),
            );
        } else {
            return Err("the ACME server offers no tls-alpn-01 challenge, and the listener has no http address for http-01; add http = \"0.0.0.0:80\"".into());
        };
        let mut challenge = authorization.challenge(kind.clone()).ok_or("the offered challenge is gone")?;
        let key_authorization = challenge.key_authorization();
        let proof = if kind == ChallengeType::Http01 { "http-01" } else { "tls-alpn-01" };
        if !proofs.contains(&proof) {
            proofs.push(proof);
        }
        if kind == ChallengeType::Http01 {
            tokens.add(challenge.token.clone(), key_authorization.as_str().to_string());
        } else {
            let Identifier::Dns(domain) = challenge.identifier().identifier else {
                return Err("tls-alpn-01 for an identifier that is not a DNS name".into());
            };
            let domain = domain.clone();
            let key = validation_cert(&domain, key_authorization.digest().as_ref())?;
            validations.add(&domain, key);
        }
        challenge.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
    }
    let retry = RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retry).await.map_err(|e| format!("waiting for validation: {e}"))?;
    if status != OrderStatus::Ready {
        let mut why = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_default();
        // The CA's reason is on the failed challenge.
        let mut authorizations = order.authorizations();
        while let Some(Ok(a)) = authorizations.next().await {
            for c in &a.challenges {
                if let Some(e) = &c.error {
                    why = format!("{why}{}{e}", if why.is_empty() { "" } else { "; " });
                }
            }
        }
        return Err(format!("the order is {status:?}: {why}"));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(domains.to_vec()).map_err(|e| format!("CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| format!("CSR: {e}"))?;
    order.finalize_csr(csr.der()).await.map_err(|e| format!("finalize: {e}"))?;
    let chain = order.poll_certificate(&retry).await.map_err(|e| format!("waiting for the certificate: {e}"))?;
    drop(tokens);
    drop(validations);
    Ok((chain, key.serialize_pem(), proofs))
}

/// A TLS-ALPN-01 validation certificate (RFC 8737 section 3): self-signed,
/// for `domain` only, with the critical `acmeIdentifier` extension holding
/// `digest`, the SHA-256 of the key authorization.
fn validation_cert(domain: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("validation key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| format!("validation certificate: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| format!("validation certificate: {e}"))?;
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its consistency check parses the
    // certificate with webpki, which refuses the critical acmeIdentifier.
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| format!("validation key: {e}"))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// The TLS-ALPN-01 validation certificates of one order, taken out of the
/// listener's TLS state when it ends however it ends.
struct Validations<'a> {
    tls: &'a TlsState,
    domains: Vec<String>,
}

impl Validations<'_> {
    fn add(&mut self, domain: &str, key: Arc<rustls::sign::CertifiedKey>) {
        self.tls.add_validation(domain, key);
        self.domains.push(domain.to_string());
    }
}

impl Drop for Validations<'_> {
    fn drop(&mut self) {
        for domain in &self.domains {
            self.tls.remove_validation(domain);
        }
    }
}

/// The tokens of one order, taken out of the map when it ends however it
/// ends.
struct Tokens<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
}

impl Tokens<'_> {
    fn add(&mut self, token: String, key_authorization: String) {
        self.challenges.insert(token.clone(), key_authorization);
        self.tokens.push(token);
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove(token);
        }
    }
}

/// Writes a file readable by its owner only, whole: a temporary file
/// renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads `directory_ca`: the CA certificates to trust for the directory.
pub fn read_ca(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate; it must be PEM with -----BEGIN CERTIFICATE----- blocks (the CA that signs the ACME directory's HTTPS certificate)",
            path.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| format!("{}: a certificate cannot be trusted: {e}", path.display()))?;
    }
    Ok(roots)
}

/// instant-acme's HTTP client: HTTPS only, rustls with ring, one HTTP/1.1
/// connection per request (an order makes a few dozen).
struct AcmeHttp {
    tls: tokio_rustls::TlsConnector,
}

impl AcmeHttp {
    fn new(directory_ca: Option<&Path>) -> Result<AcmeHttp, String> {
        let roots = match directory_ca {
            Some(path) => read_ca(path)?,
            None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(AcmeHttp { tls: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }
}

fn other(e: impl std::fmt::Display) -> instant_acme::Error {
    instant_acme::Error::Other(e.to_string().into())
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let exchange = async move {
                let (mut parts, body) = req.into_parts();
                if parts.uri.scheme_str() != Some("https") {
                    return Err(other(format!("{}: the ACME server must be reached over https", parts.uri)));
                }
                let host = parts.uri.host().ok_or_else(|| other(format!("{}: no host", parts.uri)))?.to_string();
                let port = parts.uri.port_u16().unwrap_or(443);
                let authority = parts.uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
                let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
                    .await
                    .map_err(|e| other(format!("cannot connect to {authority}: {e}")))?;
                let name = rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| other(format!("{host}: {e}")))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| other(format!("TLS with {authority}: {e}")))?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(other)?;
                tokio::spawn(conn);
                parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(&authority).map_err(other)?);
                parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(other)?;
                let response = sender.send_request(http::Request::from_parts(parts, body)).await.map_err(other)?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map_err(other)?.to_bytes();
                Ok(BytesResponse { parts, body: Box::new(body) })
            };
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| Err(other("the ACME server did not answer within 30s")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_files_are_named_after_their_directory() {
        let f = account_file(Path::new("/s"), "https://acme-v02.api.letsencrypt.org/directory");
        assert_eq!(f, Path::new("/s/acme/accounts/acme-v02.api.letsencrypt.org_directory.json"));
        let f = account_file(Path::new("/s"), "https://localhost:14000/dir");
        assert_eq!(f, Path::new("/s/acme/accounts/localhost_14000_dir.json"));
    }

    #[test]
    fn renewal_starts_renew_before_the_end_or_at_two_thirds_of_a_short_life() {
        let day = Duration::from_secs(86_400);
        let start = SystemTime::UNIX_EPOCH + 1000 * day;
        // 90 days, renew 30 days before: on day 60.
        assert_eq!(renewal_time(start, start + 90 * day, 30 * day), start + 60 * day);
        // 6 days (short-lived): on day 4, not at once forever.
        assert_eq!(renewal_time(start, start + 6 * day, 30 * day), start + 4 * day);
    }

    #[test]
    fn tokens_leave_the_map_when_an_order_ends() {
        let challenges = Challenges::default();
        {
            let mut tokens = Tokens { challenges: &challenges, tokens: Vec::new() };
            tokens.add("t1".into(), "t1.thumb".into());
            assert_eq!(challenges.answer("t1").as_deref(), Some("t1.thumb"));
        }
        assert_eq!(challenges.answer("t1"), None);
    }

    #[test]
    fn a_validation_certificate_names_the_domain_and_holds_the_digest_in_a_critical_acme_identifier() {
        use x509_parser::prelude::*;
        let digest = [0xab_u8; 32];
        let key = validation_cert("shop.test", &digest).unwrap();
        let (_, cert) = X509Certificate::from_der(key.cert[0].as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names, [GeneralName::DNSName("shop.test")]);
        let oid = x509_parser::der_parser::oid!(1.3.6 .1 .5 .5 .7 .1 .31);
        let ext = cert.extensions().iter().find(|e| e.oid == oid).expect("acmeIdentifier");
        assert!(ext.critical);
        // An OCTET STRING of the 32-byte SHA-256.
        assert_eq!(ext.value, [&[0x04, 32][..], &digest].concat());
    }

    #[test]
    fn validation_certificates_leave_the_tls_state_when_an_order_ends() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsState::acme("public", dir.path()).unwrap();
        {
            let mut validations = Validations { tls: &tls, domains: Vec::new() };
            validations.add("shop.test", validation_cert("shop.test", &[1; 32]).unwrap());
            assert!(tls.has_validation("shop.test"));
        }
        assert!(!tls.has_validation("shop.test"));
    }

    #[test]
    fn private_files_are_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
