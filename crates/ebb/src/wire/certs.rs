//! `GET /api/v1/certs` and `POST /api/v1/certs/renew`: the certificates ebb
//! serves (`ebb certs`) and a forced ACME renewal (`ebb certs renew`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One certificate in service on a listener (or, for an ACME listener that
/// has none yet, what it is waiting for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CertView {
    pub listener: String,
    /// The DNS names it is valid for (for an ACME listener without a
    /// certificate yet: the configured domains).
    pub domains: Vec<String>,
    /// The issuer's distinguished name; `null` before the first certificate.
    pub issuer: Option<String>,
    /// The serial number, hex bytes separated by `:`.
    pub serial: Option<String>,
    /// RFC 3339, UTC.
    #[schema(example = "2027-03-01T12:00:00Z")]
    pub not_after: Option<String>,
    pub expired: bool,
    /// ACME only: when renewal starts (`not_after - renew_before`).
    pub renews_at: Option<String>,
    /// `file` (from `ebb.toml`) or `acme`.
    #[schema(example = "acme")]
    pub source: String,
    /// The certificate file (for ACME, in the state directory).
    pub file: Option<String>,
    /// ACME only: the directory URL.
    pub directory: Option<String>,
    /// The last failure to obtain, renew or reload it (the previous
    /// certificate is still served); `null` after a success.
    pub error: Option<String>,
}

/// `POST /api/v1/certs/renew`: which certificates to renew now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Renew the ACME certificate holding this domain; none: every ACME
    /// certificate.
    #[serde(default)]
    #[schema(example = "shop.example.com")]
    pub domain: Option<String>,
}

/// One renewal done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RenewOutcome {
    pub listener: String,
    pub domains: Vec<String>,
    /// The new certificate's serial.
    pub serial: String,
    pub not_after: String,
}

/// `POST /api/v1/certs/reload`: which listeners' certificate files to load
/// again now (what SIGHUP does).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Only this listener; none: every listener with certificate files.
    #[serde(default)]
    #[schema(example = "public")]
    pub listener: Option<String>,
}

/// What one listener's reload did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReloadOutcome {
    pub listener: String,
    /// Whether the files loaded and now serve new connections.
    pub reloaded: bool,
    /// The certificates in service after the reload (on failure: the
    /// previous ones, still served).
    pub certificates: Vec<super::CertificateStatus>,
    /// Why the files did not load.
    pub error: Option<String>,
}
