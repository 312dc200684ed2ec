//! The CLI's client for the admin API of a running ebb.
//!
//! It sends the bearer token from `<state_dir>/admin.token` (written by
//! `ebb up`) with every call; the token never appears in its messages.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Talks to `ebb up`'s admin API.
pub struct AdminClient {
    addr: SocketAddr,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    token: AdminCredential,
}

/// The token the CLI presents, or why it has none.
#[derive(Clone)]
pub enum AdminCredential {
    Token(String),
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
            AdminCredential::Unreadable { path, why } => write!(f, "Unreadable({}: {why})", path.display()),
        }
    }
}

/// Reads the admin token of the ebb whose state directory is `state_dir`.
pub fn read_token(state_dir: &Path) -> AdminCredential {
    let path = crate::admin::token_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => AdminCredential::Token(text.trim().to_string()),
        Ok(_) => AdminCredential::Unreadable { path, why: "the file is empty".into() },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            AdminCredential::Unreadable { path, why: "it does not exist (has `ebb up` run with this config?)".into() }
        }
        Err(e) => AdminCredential::Unreadable { path, why: e.to_string() },
    }
}

/// A failure to reach ebb at all (as opposed to an error answer).
#[derive(Debug, thiserror::Error)]
#[error("ebb is not running for this config: nothing answers at http://{addr} ({cause}); start it with `ebb up`")]
pub struct NotRunning {
    pub addr: SocketAddr,
    pub cause: String,
}

/// An error answer from the admin API (4xx/5xx with a JSON message): the
/// request was refused and changed nothing.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl AdminClient {
    /// A client for the admin API at `addr`, presenting `token` (see
    /// [`read_token`]).
    pub fn new(addr: SocketAddr, token: AdminCredential) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Self { addr, http: Client::builder(TokioExecutor::new()).build(connector), token }
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let mut request = http::Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let AdminCredential::Token(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request))
            .await
            .map_err(|_| anyhow!("ebb at http://{} did not answer within 30 s", self.addr))?
            .map_err(|e| {
                let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
                anyhow::Error::new(NotRunning { addr: self.addr, cause })
            })?;
        let status = response.status();
        let body = response.into_body().collect().await.context("reading the admin API's answer")?.to_bytes();
        Ok((status, body))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            if status == http::StatusCode::UNAUTHORIZED {
                if let AdminCredential::Unreadable { path, why } = &self.token {
                    bail!("{message} (cannot read the admin token {}: {why})", path.display());
                }
            }
            return Err(anyhow::Error::new(Refused { status: status.as_u16(), message }));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from the admin API at {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(http::Method::GET, path, None).await
    }

    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.json(method, path, Some(serde_json::to_vec(body)?)).await
    }
}
