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
}

impl ListenerBoard {
    pub fn add(&mut self, config: ListenerConfig, tls: Option<Arc<TlsState>>, front: Arc<Front>) {
        self.entries.push((config, tls, front));
    }

    /// Each listener's counters and certificates, read once (for
    /// Prometheus), in name order.
    pub fn readings(&self) -> Vec<ListenerReading> {
        self.entries
            .iter()
            .map(|(config, tls, front)| ListenerReading {
                name: config.name.clone(),
                stats: front.stats().snapshot(),
                max_connections: front.config.max_connections,
                unrouted: front.unrouted.load(std::sync::atomic::Ordering::Relaxed),
                tls: tls.is_some(),
                certificates: tls
                    .as_ref()
                    .map(|t| {
                        t.certs().iter().map(|c| (c.names.first().cloned().unwrap_or_default(), c.not_after)).collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The status of each listener, in name order.
    pub fn status(&self) -> Vec<ListenerStatus> {
        self.entries.iter().map(|(config, tls, front)| listener_status(config, tls.as_deref(), front)).collect()
    }
}

/// One listener's counters at one instant.
#[derive(Debug, Clone)]
pub struct ListenerReading {
    pub name: String,
    /// The listener's own connection counters (open connections, the cap
    /// reached, HTTP/2 floods, send timeouts, TLS handshake failures) and
    /// its local answers (unrouted requests); routed requests count at
    /// their service.
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

fn listener_status(config: &ListenerConfig, tls: Option<&TlsState>, front: &Front) -> ListenerStatus {
    let now = std::time::SystemTime::now();
    let certificates = tls
        .map(|t| {
            t.certs()
                .iter()
                .map(|c| CertificateStatus {
                    names: c.names.clone(),
                    not_after: c.not_after_text(),
                    expired: c.not_after < now,
                    file: c.files.cert.display().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
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
