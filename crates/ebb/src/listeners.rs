//! The `[listener.NAME]` tables as `ebb up` runs them, for status: each
//! listener's config and, with TLS, the certificates in service now (they
//! change on reload).

use std::sync::Arc;

use ebb_core::config::ListenerConfig;

use crate::proxy::Front;
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

    /// The status of each listener, in name order.
    pub fn status(&self) -> Vec<ListenerStatus> {
        self.entries.iter().map(|(config, tls, front)| listener_status(config, tls.as_deref(), front)).collect()
    }
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
            .map(|r| RouteStatus { rule: r.describe(), service: r.service.clone() })
            .collect(),
        unrouted: front.unrouted.load(std::sync::atomic::Ordering::Relaxed),
    }
}
