//! The `[listener.NAME]` tables as `ebb up` runs them, for status and
//! Prometheus: each listener's config, its own counters, and, with TLS, the
//! certificates in service now (they change on reload).

use std::sync::Arc;

use ebb_core::config::ListenerConfig;

use crate::proxy::{Front, ProxyStatsSnapshot};
use crate::tls::TlsState;
use crate::wire::{CertificateStatus, ListenerStatus, RouteStatus};

/// Every listener of a running ebb.
#[derive(Default)]
pub struct ListenerBoard {
    entries: Vec<(ListenerConfig, Option<Arc<TlsState>>, Arc<Front>)>,
    /// The listeners whose certificates ACME obtains.
    acme: Vec<Arc<crate::acme::AcmeListener>>,
    /// Each TLS listener's plain-HTTP `http` address (redirect, ACME
    /// HTTP-01), by listener name.
    redirects: Vec<(String, Arc<Front>)>,
}

impl ListenerBoard {
    pub fn add(&mut self, config: ListenerConfig, tls: Option<Arc<TlsState>>, front: Arc<Front>) {
        self.entries.push((config, tls, front));
    }

    /// The front of `listener`'s `http` address, counted in Prometheus
    /// beside its `listen` address.
    pub fn add_redirect(&mut self, listener: &str, front: Arc<Front>) {
        self.redirects.push((listener.to_string(), front));
    }

    /// Whether a listener of that name runs.
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(config, _, _)| config.name == name)
    }

    pub fn add_acme(&mut self, acme: Arc<crate::acme::AcmeListener>) {
        self.acme.push(acme);
    }

    /// The ACME listeners.
    pub fn acme(&self) -> &[Arc<crate::acme::AcmeListener>] {
        &self.acme
    }

    /// Every certificate in service, by listener (`ebb certs`).
    pub fn certs(&self) -> Vec<crate::wire::CertView> {
        let mut out = Vec::new();
        for (config, tls, _) in &self.entries {
            let Some(tls) = tls else { continue };
            let acme = self.acme.iter().find(|a| a.listener == config.name);
            let certs = tls.certs();
            if certs.is_empty() {
                if let Some(acme) = acme {
                    out.push(crate::wire::CertView {
                        listener: config.name.clone(),
                        domains: acme.config.domains.clone(),
                        issuer: None,
                        serial: None,
                        not_after: None,
                        expired: false,
                        renews_at: None,
                        source: "acme".into(),
                        file: None,
                        directory: Some(acme.config.directory.clone()),
                        error: acme.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                    });
                }
                continue;
            }
            out.extend(cert_views(&config.name, tls, acme));
        }
        out
    }

    /// Loads the certificate files of every file-TLS listener (or only
    /// `only`) again now, as SIGHUP does: each listener's new set, or its
    /// error (the previous set is still served). `None`: no such listener
    /// has certificate files. ACME listeners are left to their ACME task.
    pub fn reload_files(&self, only: Option<&str>) -> Option<Vec<crate::wire::ReloadOutcome>> {
        let now = std::time::SystemTime::now();
        let chosen: Vec<&Arc<TlsState>> = self
            .entries
            .iter()
            .filter(|(config, _, _)| only.is_none_or(|name| config.name == name))
            .filter_map(|(_, tls, _)| tls.as_ref())
            .filter(|tls| tls.source == crate::tls::Source::Files)
            .collect();
        if chosen.is_empty() {
            return None;
        }
        Some(chosen.into_iter().map(|tls| reload_named(&tls.listener, tls, now)).collect())
    }

    /// The names of the listeners with certificate files.
    pub fn file_tls_listeners(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, tls, _)| tls.as_ref().is_some_and(|t| t.source == crate::tls::Source::Files))
            .map(|(config, _, _)| config.name.clone())
            .collect()
    }

    /// Each listener's counters and certificates, read once (for
    /// Prometheus), in name order: its `listen` address, then its `http`
    /// address if it has one.
    pub fn readings(&self) -> Vec<ListenerReading> {
        let mut out = Vec::new();
        for (config, tls, front) in &self.entries {
            out.push(ListenerReading {
                name: config.name.clone(),
                address: Address::Listen,
                stats: front.stats().snapshot(),
                max_connections: front.config().max_connections,
                unrouted: front.unrouted.load(std::sync::atomic::Ordering::Relaxed),
                tls: tls.is_some(),
                certificates: tls
                    .as_ref()
                    .map(|t| {
                        t.certs().iter().map(|c| (c.names.first().cloned().unwrap_or_default(), c.not_after)).collect()
                    })
                    .unwrap_or_default(),
            });
            for (_, redirect) in self.redirects.iter().filter(|(name, _)| *name == config.name) {
                out.push(ListenerReading {
                    name: config.name.clone(),
                    address: Address::Http,
                    stats: redirect.stats().snapshot(),
                    max_connections: redirect.config().max_connections,
                    unrouted: 0,
                    tls: false,
                    certificates: Vec::new(),
                });
            }
        }
        out
    }

    /// The status of each listener, in name order.
    pub fn status(&self) -> Vec<ListenerStatus> {
        self.entries.iter().map(|(config, tls, front)| listener_status(config, tls.as_deref(), front)).collect()
    }
}

/// Which of a listener's addresses a reading is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// `listen`: the routed (maybe TLS) address.
    Listen,
    /// `http`: a TLS listener's plain-HTTP address (308 redirect, ACME
    /// HTTP-01 answers).
    Http,
}

impl Address {
    /// The config key, which is the Prometheus label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Address::Listen => "listen",
            Address::Http => "http",
        }
    }
}

/// One listener address's counters at one instant.
#[derive(Debug, Clone)]
pub struct ListenerReading {
    pub name: String,
    pub address: Address,
    /// The address's own connection counters (open connections, the cap
    /// reached, HTTP/2 floods, send timeouts, TLS handshake failures) and
    /// its local answers (`requests`: unrouted requests on `listen`, every
    /// request on `http`); routed requests count at their service.
    pub stats: ProxyStatsSnapshot,
    /// `max_connections`, when set.
    pub max_connections: Option<u32>,
    /// Requests that matched no route (404).
    pub unrouted: u64,
    /// Whether it terminates TLS.
    pub tls: bool,
    /// Each certificate in service: its first name and its not-after date.
    pub certificates: Vec<(String, std::time::SystemTime)>,
}

/// What `ebb certs` shows of the certificates `tls` serves, under the name
/// `listener` (a listener's, or the admin API's).
pub fn cert_views(
    listener: &str,
    tls: &TlsState,
    acme: Option<&Arc<crate::acme::AcmeListener>>,
) -> Vec<crate::wire::CertView> {
    let now = std::time::SystemTime::now();
    tls.certs()
        .iter()
        .map(|c| crate::wire::CertView {
            listener: listener.to_string(),
            domains: c.names.clone(),
            issuer: Some(c.issuer.clone()),
            serial: Some(c.serial.clone()),
            not_after: Some(c.not_after_text()),
            expired: c.not_after < now,
            renews_at: acme.map(|a| {
                let t = crate::acme::renewal_time(c.not_before, c.not_after, a.config.renew_before);
                humantime::format_rfc3339_seconds(t).to_string()
            }),
            source: tls.source.as_str().into(),
            file: Some(c.files.cert.display().to_string()),
            directory: acme.map(|a| a.config.directory.clone()),
            error: match acme {
                Some(a) => a.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                None => tls.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            },
        })
        .collect()
}

/// Loads `tls`'s certificate files again, under the name `listener` (a
/// listener's, or the admin API's).
pub fn reload_named(listener: &str, tls: &TlsState, now: std::time::SystemTime) -> crate::wire::ReloadOutcome {
    let result = tls.reload();
    crate::wire::ReloadOutcome {
        listener: listener.to_string(),
        reloaded: result.is_ok(),
        certificates: certificate_statuses(tls, now),
        error: result.err(),
    }
}

/// The certificates a listener serves now.
fn certificate_statuses(tls: &TlsState, now: std::time::SystemTime) -> Vec<CertificateStatus> {
    tls.certs()
        .iter()
        .map(|c| CertificateStatus {
            names: c.names.clone(),
            not_after: c.not_after_text(),
            expired: c.not_after < now,
            file: c.files.cert.display().to_string(),
        })
        .collect()
}

fn listener_status(config: &ListenerConfig, tls: Option<&TlsState>, front: &Front) -> ListenerStatus {
    let now = std::time::SystemTime::now();
    let certificates = tls.map(|t| certificate_statuses(t, now)).unwrap_or_default();
    ListenerStatus {
        name: config.name.clone(),
        listen: config.listen.to_string(),
        http: config.http.map(|h| h.to_string()),
        tls: tls.is_some(),
        certificates,
        tls_error: tls.and_then(|t| t.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        routes: config
            .routes
            .routes
            .iter()
            .map(|r| RouteStatus {
                rule: r.describe(),
                service: r.service.clone(),
                host: r.host.as_ref().map(|h| h.to_string()),
                path_prefix: r.path_prefix.clone(),
                methods: r.methods.clone(),
                headers: r.headers.iter().cloned().collect(),
            })
            .collect(),
        unrouted: front.unrouted.load(std::sync::atomic::Ordering::Relaxed),
    }
}
