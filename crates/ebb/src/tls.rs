//! TLS termination for `[listener.NAME]`: certificate files, SNI, reload.
//!
//! - **Loading** ([`load`]): each `cert` is a PEM chain (leaf first), each
//!   `key` a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) that must match
//!   the leaf. The leaf's names (its DNS SANs, else its CN) and not-after
//!   date are read for SNI and status. Errors name the file and the fix;
//!   `ebb up` and `ebb validate` place them at the key in `ebb.toml`
//!   ([`check_config`]). An expired certificate is a warning, not an error
//!   (a renewed file may be on its way; clients will refuse it meanwhile).
//! - **SNI** ([`CertResolver`]): the certificate whose names hold the
//!   client's server name exactly, else one with a matching wildcard
//!   (`*.example.com` covers one label), else the first certificate of the
//!   listener (also for clients that send no SNI).
//! - **Reload** ([`watch`]): the files are polled every few seconds (their
//!   size, modification time and inode) and reloaded on change, and on
//!   SIGHUP. The new set replaces the old in one atomic swap: handshakes
//!   after it get the new certificates, connections already open keep
//!   theirs. A file that does not load keeps the old set in service and is
//!   logged as a warning naming the file and why.
//!
//! - **TLS-ALPN-01** (RFC 8737, ACME listeners only): while an order is
//!   pending, the ACME task installs a self-signed validation certificate
//!   per domain ([`TlsState::add_validation`]). It is served only to a
//!   ClientHello that offers ALPN `acme-tls/1` with that SNI; such a
//!   handshake negotiates `acme-tls/1` and the connection is closed right
//!   after it (`proxy/server.rs`). A hello offering `acme-tls/1` never gets
//!   the listener's ordinary certificate, and one without it never gets a
//!   validation certificate.
//!
//! rustls with the ring provider: TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1` (HTTP/2 to clients; replicas still get pooled HTTP/1.1), and
//! `acme-tls/1` first on ACME listeners.
//!
//! - **The admin API** (`[admin] tls`, [`Role::Admin`]): the same loading,
//!   checks (errors at `admin.tls.cert` / `.key`) and reload (its events
//!   are the `admin API`'s), ALPN `http/1.1` only; `admin/server.rs` accepts with
//!   it. [`check_config`] returns its state among the listeners'
//!   ([`admin_state`]); `state_of` never picks it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use ebb_core::config::{CertFiles, Config, ConfigError, ListenerConfig};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often certificate files are checked for changes, unless
/// `EBB_TLS_POLL_MS` says otherwise (tests).
const POLL: Duration = Duration::from_secs(3);

/// Whom the admin API's certificate events are about.
pub const ADMIN_SUBJECT: &str = "admin API";

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One certificate as loaded.
#[derive(Debug)]
pub struct LoadedCert {
    pub files: CertFiles,
    /// DNS names (lower case) it is valid for, wildcards as `*.example.com`.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    pub not_before: SystemTime,
    /// The leaf's serial number, hex (`0a:1b:…`).
    pub serial: String,
    /// The leaf's issuer (its distinguished name).
    pub issuer: String,
    key: Arc<CertifiedKey>,
}

impl LoadedCert {
    /// `2027-01-01T00:00:00Z`.
    pub fn not_after_text(&self) -> String {
        humantime::format_rfc3339_seconds(self.not_after).to_string()
    }
}

/// Why a certificate pair did not load: which file, and what to do.
#[derive(Debug)]
pub struct CertError {
    /// Index of the pair in the listener's list.
    pub index: usize,
    /// `"cert"` or `"key"`.
    pub which: &'static str,
    pub message: String,
}

/// Reads and checks one listener's certificate files.
pub fn load(files: &[CertFiles]) -> Result<Vec<LoadedCert>, CertError> {
    files.iter().enumerate().map(|(index, f)| load_one(index, f)).collect()
}

fn load_one(index: usize, files: &CertFiles) -> Result<LoadedCert, CertError> {
    let fail = |which, message: String| CertError { index, which, message };
    let read = |path: &Path, which| {
        std::fs::read(path).map_err(|e| fail(which, format!("cannot read {}: {e}", path.display())))
    };
    let pem = read(&files.cert, "cert")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| fail("cert", format!("{} is not a PEM certificate chain ({e})", files.cert.display())))?;
    if chain.is_empty() {
        return Err(fail(
            "cert",
            format!(
                "{} holds no certificate; it must be PEM with -----BEGIN CERTIFICATE----- blocks, the site's certificate first",
                files.cert.display()
            ),
        ));
    }
    let (names, (not_before, not_after), serial, issuer) = describe(&chain[0]).map_err(|why| {
        fail("cert", format!("{}: the first certificate cannot be read: {why}", files.cert.display()))
    })?;
    let key_pem = read(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        fail(
            "key",
            format!(
                "{} is not a PEM private key ({e}); it must hold a -----BEGIN PRIVATE KEY----- (or RSA / EC PRIVATE KEY) block",
                files.key.display()
            ),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => fail(
            "key",
            format!(
                "{} does not match the certificate in {}; give the key that was made with this certificate",
                files.key.display(),
                files.cert.display()
            ),
        ),
        e => fail("key", format!("{} cannot be used: {e}", files.key.display())),
    })?;
    Ok(LoadedCert { files: files.clone(), names, not_after, not_before, serial, issuer, key: Arc::new(certified) })
}

/// The leaf's DNS names, not-after date, serial and issuer.
#[allow(clippy::type_complexity)]
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, (SystemTime, SystemTime), String, String), String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(|s| s.to_ascii_lowercase()),
        );
    }
    let time = |seconds: i64| match u64::try_from(seconds) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    let validity = (time(cert.validity().not_before.timestamp()), time(cert.validity().not_after.timestamp()));
    Ok((names, validity, cert.raw_serial_as_string(), cert.issuer().to_string()))
}

/// Picks a certificate by SNI among the current set; answers TLS-ALPN-01
/// validation handshakes from its own map.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<Vec<LoadedCert>>,
    /// TLS-ALPN-01 validation certificates by domain (lower case), only
    /// while an order is pending.
    validation: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// The certificate for a hello with this SNI that does (`acme_tls`) or
    /// does not offer ALPN `acme-tls/1`.
    fn resolve_for(&self, server_name: Option<&str>, acme_tls: bool) -> Option<Arc<CertifiedKey>> {
        if !acme_tls {
            return self.choose(server_name);
        }
        // A validation handshake: its domain's validation certificate or
        // nothing (an alert), never an ordinary certificate.
        let name = server_name?.trim_end_matches('.').to_ascii_lowercase();
        self.validation.read().unwrap_or_else(|p| p.into_inner()).get(&name).cloned()
    }

    fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.current.load();
        let chosen = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()).and_then(|name| {
            let exact = certs.iter().find(|c| c.names.contains(&name));
            exact.or_else(|| {
                let (_, parent) = name.split_once('.')?;
                let wildcard = format!("*.{parent}");
                certs.iter().find(|c| c.names.contains(&wildcard))
            })
        });
        chosen.or(certs.first()).map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme_tls = hello.alpn().is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        self.resolve_for(hello.server_name(), acme_tls)
    }
}

/// Where a listener's certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The files named in `ebb.toml`.
    Files,
    /// ACME: files in the state directory that the ACME task writes.
    Acme,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Files => "file",
            Source::Acme => "acme",
        }
    }
}

/// What a [`TlsState`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `[listener.NAME]`: ALPN `h2` and `http/1.1`.
    Listener,
    /// The admin API and dashboard (`[admin] tls`): ALPN `http/1.1`.
    Admin,
}

/// A TLS listener's state: its files, the certificates in service, and the
/// rustls configuration (made once; the resolver swaps certificates).
pub struct TlsState {
    /// The listener's name (`admin` for the admin API).
    pub listener: String,
    pub role: Role,
    /// Where the certificates come from.
    pub source: Source,
    /// The certificate files (`ebb apply` may name others).
    files: RwLock<Vec<CertFiles>>,
    resolver: Arc<CertResolver>,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The last reload's error, if the files on disk do not load now.
    pub last_error: std::sync::Mutex<Option<String>>,
    /// The files' stamps as last loaded (or tried): whoever reloads
    /// (the file poll, SIGHUP, `ebb certs reload`) refreshes them, so the
    /// poll does not load the same change a second time.
    seen: std::sync::Mutex<Stamp>,
}

/// What identifies each file's contents: (size, mtime, inode), `None` when
/// it cannot be read.
type Stamp = Vec<Option<(u64, SystemTime, u64)>>;

impl TlsState {
    /// Loads a listener's certificates; the error says which file failed.
    pub fn new(listener: &str, files: &[CertFiles]) -> Result<Arc<TlsState>, CertError> {
        Self::with_certs(listener, Source::Files, files, load(files)?)
    }

    /// The admin API's certificate (`[admin] tls`), loaded and reloaded as
    /// a listener's files are; it speaks HTTP/1.1 only.
    pub fn admin(files: &CertFiles) -> Result<Arc<TlsState>, CertError> {
        let files = std::slice::from_ref(files);
        let certs = load(files)?;
        Self::build("admin", Role::Admin, Source::Files, files, certs)
    }

    /// Who the events of this state are about: `listener NAME`, or
    /// [`ADMIN_SUBJECT`] (never a service's name: those have no space).
    pub fn subject(&self) -> String {
        match self.role {
            Role::Listener => format!("listener {}", self.listener),
            Role::Admin => ADMIN_SUBJECT.to_string(),
        }
    }

    /// An ACME listener's state: the stored certificate if there is one
    /// that loads, else none yet (handshakes fail until the ACME task has
    /// one).
    pub fn acme(listener: &str, dir: &Path) -> Result<Arc<TlsState>, CertError> {
        let files = [CertFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") }];
        let certs = match load(&files) {
            Ok(certs) => certs,
            Err(e) => {
                if files[0].cert.exists() {
                    tracing::warn!(%listener, error = %e.message, "The stored ACME certificate does not load; ordering a new one.");
                }
                Vec::new()
            }
        };
        Self::with_certs(listener, Source::Acme, &files, certs)
    }

    fn with_certs(
        listener: &str,
        source: Source,
        files: &[CertFiles],
        certs: Vec<LoadedCert>,
    ) -> Result<Arc<TlsState>, CertError> {
        Self::build(listener, Role::Listener, source, files, certs)
    }

    fn build(
        listener: &str,
        role: Role,
        source: Source,
        files: &[CertFiles],
        certs: Vec<LoadedCert>,
    ) -> Result<Arc<TlsState>, CertError> {
        let resolver = Arc::new(CertResolver { current: ArcSwap::from_pointee(certs), validation: RwLock::default() });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| CertError { index: 0, which: "cert", message: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = match role {
            Role::Listener => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Role::Admin => vec![b"http/1.1".to_vec()],
        };
        if source == Source::Acme {
            // First: rustls picks the first of its own list that the client
            // offers, so a hello offering acme-tls/1 (and thus given a
            // validation certificate) always negotiates it.
            config.alpn_protocols.insert(0, ACME_TLS_ALPN.to_vec());
        }
        Ok(Arc::new(TlsState {
            listener: listener.to_string(),
            role,
            source,
            files: RwLock::new(files.to_vec()),
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            last_error: std::sync::Mutex::new(None),
            seen: std::sync::Mutex::new(stamp(files)),
        }))
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// The certificates in service now.
    pub fn certs(&self) -> Arc<Vec<LoadedCert>> {
        self.resolver.current.load_full()
    }

    /// Serves `key` to TLS-ALPN-01 validation handshakes for `domain`.
    pub fn add_validation(&self, domain: &str, key: Arc<CertifiedKey>) {
        self.resolver.validation.write().unwrap_or_else(|p| p.into_inner()).insert(domain.to_ascii_lowercase(), key);
    }

    /// Whether a validation certificate for `domain` is being served.
    pub fn has_validation(&self, domain: &str) -> bool {
        self.resolver.validation.read().unwrap_or_else(|p| p.into_inner()).contains_key(&domain.to_ascii_lowercase())
    }

    /// Stops serving `domain`'s validation certificate.
    pub fn remove_validation(&self, domain: &str) {
        self.resolver.validation.write().unwrap_or_else(|p| p.into_inner()).remove(&domain.to_ascii_lowercase());
    }

    /// Loads the files again; on success the new certificates serve every
    /// handshake from now on, on failure the old ones stay.
    pub fn reload(&self) -> Result<(), String> {
        let files = self.files();
        // Stamped before reading: a change made while we read is seen by
        // the next poll.
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp(&files);
        match load(&files) {
            Ok(certs) => {
                for cert in certs.iter().filter(|c| c.not_after < SystemTime::now()) {
                    tracing::warn!(listener = %self.listener, file = %cert.files.cert.display(), not_after = %cert.not_after_text(), "Reloaded certificate has expired.");
                }
                self.resolver.current.store(Arc::new(certs));
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(listener = %self.listener, "Reloaded TLS certificates: new connections get them.");
                Ok(())
            }
            Err(error) => {
                let message = error.message;
                tracing::warn!(
                    listener = %self.listener,
                    error = %message,
                    "TLS certificate files changed but do not load; still serving the previous certificates."
                );
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                Err(message)
            }
        }
    }

    /// The certificate files in force.
    fn files(&self) -> Vec<CertFiles> {
        self.files.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `ebb apply` named other certificate files: they are loaded and
    /// served from the next handshake on, or, when they do not load, the
    /// current ones stay (files and certificates both).
    pub fn replace_files(&self, files: &[CertFiles]) -> Result<(), String> {
        if self.files() == files {
            return Ok(());
        }
        let seen = stamp(files);
        let certs = load(files).map_err(|e| e.message)?;
        *self.files.write().unwrap_or_else(|p| p.into_inner()) = files.to_vec();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        self.resolver.current.store(Arc::new(certs));
        tracing::info!(listener = %self.listener, "Serving the certificate files ebb apply named.");
        Ok(())
    }

    /// Whether the files changed since they were last loaded (by anyone).
    fn changed_on_disk(&self) -> bool {
        stamp(&self.files()) != *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The files' current stamps (size, mtime, inode).
fn stamp(files: &[CertFiles]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .flat_map(|f| [&f.cert, &f.key])
        .map(|p| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.ino())))
        .collect()
}

/// Reloads every TLS listener's certificates when their files change, and
/// on SIGHUP, until `stop`.
pub async fn watch(
    states: Vec<Arc<TlsState>>,
    events: Option<Arc<crate::events::EventLog>>,
    stop: tokio_util::sync::CancellationToken,
) {
    // ACME listeners' files are written and reloaded by their ACME task.
    let states: Vec<_> = states.into_iter().filter(|s| s.source == Source::Files).collect();
    if states.is_empty() {
        return;
    }
    let poll =
        std::env::var("EBB_TLS_POLL_MS").ok().and_then(|v| v.parse::<u64>().ok()).map_or(POLL, Duration::from_millis);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => false,
            _ = hangup => true,
        };
        if forced {
            tracing::info!("SIGHUP: reloading TLS certificate files.");
        }
        for state in &states {
            if forced || state.changed_on_disk() {
                let result = state.reload();
                if let Some(events) = &events {
                    use crate::events::{EventKind, NewEvent};
                    let subject = state.subject();
                    events.record(match result {
                        Ok(()) => NewEvent::new(&subject, EventKind::CertificateReloaded, format!("certificate files reloaded ({}): new connections get them", if forced { "SIGHUP" } else { "changed on disk" })),
                        Err(e) => NewEvent::new(&subject, EventKind::CertificateFailed, format!("certificate files changed but do not load: {e}; the previous certificates are still served")),
                    });
                }
            }
        }
    }
}

/// Loads every listener's certificate files, as `ebb up` and `ebb validate`
/// do before anything starts: the first failure is an error at its key in
/// the config file; expired certificates are warnings (rendered the same
/// way, as `warning:`).
pub fn check_config(config: &Config) -> Result<(Vec<Arc<TlsState>>, Vec<String>), ConfigError> {
    let mut states = Vec::new();
    let mut warnings = Vec::new();
    for listener in config.listeners.values() {
        let Some(tls) = &listener.tls else { continue };
        if let Some(acme) = &tls.acme {
            if let Some(ca) = &acme.directory_ca {
                crate::acme::read_ca(ca)
                    .map_err(|e| config.key_error(&format!("listener.{}.tls.acme.directory_ca", listener.name), e))?;
            }
            let dir = crate::acme::cert_dir(&config.state_dir, &listener.name);
            let state = TlsState::acme(&listener.name, &dir)
                .map_err(|e| config.key_error(&format!("listener.{}.tls.acme", listener.name), e.message))?;
            states.push(state);
            continue;
        }
        let state = TlsState::new(&listener.name, &tls.certs).map_err(|e| {
            config.key_error(&format!("listener.{}.tls.{}.{}", listener.name, e.index, e.which), e.message)
        })?;
        for (i, cert) in state.certs().iter().enumerate() {
            if cert.not_after < SystemTime::now() {
                warnings.push(config.key_warning(
                    &format!("listener.{}.tls.{i}.cert", listener.name),
                    format!(
                        "the certificate in {} expired on {}: clients will refuse it; put a renewed certificate in its place (ebb reloads it without a restart)",
                        cert.files.cert.display(),
                        cert.not_after_text()
                    ),
                ));
            }
        }
        states.push(state);
    }
    if let Some(files) = &config.admin.tls {
        let state =
            TlsState::admin(files).map_err(|e| config.key_error(&format!("admin.tls.{}", e.which), e.message))?;
        for cert in state.certs().iter().filter(|c| c.not_after < SystemTime::now()) {
            warnings.push(config.key_warning(
                "admin.tls.cert",
                format!(
                    "the certificate in {} expired on {}: clients (ebb status too) will refuse it; put a renewed certificate in its place (ebb reloads it without a restart)",
                    cert.files.cert.display(),
                    cert.not_after_text()
                ),
            ));
        }
        states.push(state);
    }
    Ok((states, warnings))
}

/// The admin API's state among `states` (`[admin] tls`).
pub fn admin_state(states: &[Arc<TlsState>]) -> Option<&Arc<TlsState>> {
    states.iter().find(|s| s.role == Role::Admin)
}

/// The state of `listener` among `states`.
pub fn state_of<'a>(states: &'a [Arc<TlsState>], listener: &ListenerConfig) -> Option<&'a Arc<TlsState>> {
    states.iter().find(|s| s.role == Role::Listener && s.listener == listener.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a self-signed certificate for `names` and its key into `dir`.
    fn pair(dir: &Path, file: &str, names: &[&str]) -> CertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CertFiles { cert: dir.join(format!("{file}.pem")), key: dir.join(format!("{file}.key")) };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn chosen(state: &TlsState, sni: Option<&str>) -> Vec<String> {
        let key = state.resolver.choose(sni).unwrap();
        let certs = state.certs();
        certs.iter().find(|c| Arc::ptr_eq(&c.key, &key)).unwrap().names.clone()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            pair(dir.path(), "www", &["www.example.test"]),
            pair(dir.path(), "wild", &["*.example.test"]),
            pair(dir.path(), "api", &["api.example.test"]),
        ];
        let state = TlsState::new("public", &files).unwrap();
        assert_eq!(chosen(&state, Some("API.example.test.")), ["api.example.test"]);
        assert_eq!(chosen(&state, Some("shop.example.test")), ["*.example.test"]);
        assert_eq!(chosen(&state, Some("a.shop.example.test")), ["www.example.test"], "one label only");
        assert_eq!(chosen(&state, Some("other.test")), ["www.example.test"]);
        assert_eq!(chosen(&state, None), ["www.example.test"]);
    }

    #[test]
    fn a_reload_that_fails_keeps_the_certificates_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let files = [pair(dir.path(), "site", &["site.test"])];
        let state = TlsState::new("public", &files).unwrap();
        let before = state.certs()[0].key.clone();
        std::fs::write(&files[0].key, "garbage").unwrap();
        let error = state.reload().unwrap_err();
        assert!(error.contains("site.key is not a PEM private key"), "{error}");
        assert!(Arc::ptr_eq(&state.certs()[0].key, &before));
        assert_eq!(state.last_error.lock().unwrap().as_deref(), Some(error.as_str()));
        // A good pair again: served, and the error is gone.
        pair(dir.path(), "site", &["renewed.test"]);
        state.reload().unwrap();
        assert_eq!(state.certs()[0].names, ["renewed.test"]);
        assert!(state.last_error.lock().unwrap().is_none());
    }

    #[test]
    fn a_reload_by_anyone_is_not_repeated_by_the_file_poll() {
        let dir = tempfile::tempdir().unwrap();
        let files = [pair(dir.path(), "site", &["site.test"])];
        let state = TlsState::new("public", &files).unwrap();
        assert!(!state.changed_on_disk());
        pair(dir.path(), "site", &["renewed.test"]);
        assert!(state.changed_on_disk(), "the poll sees the new files");
        // `ebb certs reload` (or SIGHUP) got there first: nothing left to poll.
        state.reload().unwrap();
        assert!(!state.changed_on_disk(), "the poll must not reload the same change again");
        // A change that does not load is seen once too.
        std::fs::write(&files[0].key, "garbage").unwrap();
        assert!(state.changed_on_disk());
        state.reload().unwrap_err();
        assert!(!state.changed_on_disk());
    }

    #[test]
    fn an_acme_listener_without_a_certificate_yet_offers_none() {
        let dir = tempfile::tempdir().unwrap();
        let state = TlsState::acme("public", dir.path()).unwrap();
        assert_eq!(state.source, Source::Acme);
        assert!(state.certs().is_empty());
        assert!(state.resolver.choose(Some("shop.test")).is_none(), "the handshake fails with an alert");
        // Once the ACME task has written the pair, a reload serves it.
        let files = pair(dir.path(), "cert", &["shop.test"]);
        std::fs::rename(&files.key, dir.path().join("key.pem")).unwrap();
        state.reload().unwrap();
        assert_eq!(chosen(&state, Some("shop.test")), ["shop.test"]);
        assert!(state.certs()[0].issuer.contains("rcgen"), "{}", state.certs()[0].issuer);
    }

    /// A self-signed key for `name`, as the ACME task makes for TLS-ALPN-01.
    fn validation_key(name: &str) -> Arc<CertifiedKey> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&[7; 32])];
        let cert = params.self_signed(&key).unwrap();
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing))
    }

    #[test]
    fn validation_certificates_go_only_to_acme_tls_hellos_for_their_domain() {
        let dir = tempfile::tempdir().unwrap();
        let state = TlsState::acme("public", dir.path()).unwrap();
        let validation = validation_key("shop.test");
        state.add_validation("Shop.Test", validation.clone());
        let r = &state.resolver;
        // Before the first certificate: acme-tls/1 gets the validation
        // certificate, an ordinary hello gets none (an alert).
        assert!(Arc::ptr_eq(&r.resolve_for(Some("shop.test"), true).unwrap(), &validation));
        assert!(Arc::ptr_eq(&r.resolve_for(Some("SHOP.test."), true).unwrap(), &validation));
        assert!(r.resolve_for(Some("shop.test"), false).is_none());
        assert!(r.resolve_for(Some("other.test"), true).is_none(), "no validation certificate for it");
        assert!(r.resolve_for(None, true).is_none(), "no SNI: no validation");
        // With a certificate in service (a renewal): ordinary hellos get it.
        let files = pair(dir.path(), "cert", &["shop.test"]);
        std::fs::rename(&files.key, dir.path().join("key.pem")).unwrap();
        state.reload().unwrap();
        let ordinary = r.resolve_for(Some("shop.test"), false).unwrap();
        assert!(Arc::ptr_eq(&ordinary, &state.certs()[0].key));
        assert!(Arc::ptr_eq(&r.resolve_for(Some("shop.test"), true).unwrap(), &validation));
        assert!(r.resolve_for(Some("other.test"), true).is_none(), "acme-tls/1 never gets the ordinary one");
        // Removed when the order ends: acme-tls/1 hellos get nothing.
        state.remove_validation("shop.test");
        assert!(r.resolve_for(Some("shop.test"), true).is_none());
        assert!(Arc::ptr_eq(&r.resolve_for(Some("shop.test"), false).unwrap(), &ordinary));
    }

    /// Accepts any server certificate: the test looks at what was served.
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            // webpki refuses the critical acmeIdentifier (as a CA's own
            // TLS-ALPN-01 client would not): not what this test checks.
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            // webpki refuses the critical acmeIdentifier (as a CA's own
            // TLS-ALPN-01 client would not): not what this test checks.
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A real handshake with `state`'s acceptor: the negotiated ALPN and the
    /// served leaf, or the error.
    async fn handshake(
        state: &TlsState,
        sni: &str,
        alpn: &[&[u8]],
    ) -> Result<(Vec<u8>, CertificateDer<'static>), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let acceptor = state.acceptor();
        let server = tokio::spawn(async move { acceptor.accept(server).await.map(|_| ()) });
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let connected = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, client).await;
        let _ = server.await;
        let tls = connected.map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        Ok((conn.alpn_protocol().unwrap_or_default().to_vec(), conn.peer_certificates().unwrap()[0].clone()))
    }

    #[tokio::test]
    async fn an_acme_tls_handshake_negotiates_acme_tls_and_gets_the_validation_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "cert", &["shop.test"]);
        std::fs::rename(&files.key, dir.path().join("key.pem")).unwrap();
        let state = TlsState::acme("public", dir.path()).unwrap();
        let ordinary = state.certs()[0].key.cert[0].clone();
        let validation = validation_key("shop.test");
        state.add_validation("shop.test", validation.clone());
        // As a CA validates: acme-tls/1 only.
        let (alpn, leaf) = handshake(&state, "shop.test", &[ACME_TLS_ALPN]).await.unwrap();
        assert_eq!((alpn.as_slice(), &leaf), (ACME_TLS_ALPN, &validation.cert[0]));
        // Offered alongside h2, acme-tls/1 still wins: never h2 on a
        // validation certificate.
        let (alpn, leaf) = handshake(&state, "shop.test", &[b"h2", ACME_TLS_ALPN]).await.unwrap();
        assert_eq!((alpn.as_slice(), &leaf), (ACME_TLS_ALPN, &validation.cert[0]));
        // Ordinary clients, same SNI, during the validation.
        let ordinary_alpns: [&[&[u8]]; 3] = [&[b"h2", b"http/1.1"], &[b"http/1.1"], &[]];
        for alpn in ordinary_alpns {
            let (_, leaf) = handshake(&state, "shop.test", alpn).await.unwrap();
            assert_eq!(leaf, ordinary, "{alpn:?}");
        }
        // After the order: acme-tls/1 gets an alert.
        state.remove_validation("shop.test");
        assert!(handshake(&state, "shop.test", &[ACME_TLS_ALPN]).await.is_err());
        // A listener with certificate files does not speak acme-tls/1.
        let files = [pair(dir.path(), "site", &["site.test"])];
        let plain = TlsState::new("files", &files).unwrap();
        let error = handshake(&plain, "site.test", &[ACME_TLS_ALPN]).await.unwrap_err();
        assert!(error.contains("AccessDenied"), "{error}");
    }

    #[test]
    fn load_errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.test"]);
        let b = pair(dir.path(), "b", &["b.test"]);
        let mixed = CertFiles { cert: a.cert.clone(), key: b.key.clone() };
        let e = load(&[a.clone(), mixed]).unwrap_err();
        assert_eq!((e.index, e.which), (1, "key"));
        assert!(e.message.contains("b.key does not match the certificate in"), "{}", e.message);
        let missing = CertFiles { cert: dir.path().join("none.pem"), key: a.key.clone() };
        let e = load(&[missing]).unwrap_err();
        assert_eq!((e.index, e.which), (0, "cert"));
        assert!(e.message.starts_with("cannot read"), "{}", e.message);
    }
}
