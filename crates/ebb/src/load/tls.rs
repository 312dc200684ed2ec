//! HTTPS targets: the TLS client a run's workers share, and the stream a
//! worker's connection runs on (plain TCP or TLS over it).
//!
//! rustls with ring, TLS 1.2 and 1.3, ALPN `http/1.1`. It trusts what the
//! admin client trusts (`client::client_config`): the built-in public roots,
//! plus `--cacert` (a private CA, or the server's own self-signed
//! certificate). There is no switch to skip verification.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What every TLS connection of a run is opened with.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    /// Sent as SNI and verified: the URL's host (an IP address when the
    /// URL has one).
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("name", &self.name).finish()
    }
}

impl TlsClient {
    /// For `host`, trusting the public roots and the certificates in
    /// `cacert`. Errors are one line for the user.
    pub fn new(host: &str, cacert: Option<&Path>) -> Result<TlsClient, String> {
        let pinned = match cacert {
            Some(path) => crate::client::read_certificates(path).map_err(|e| format!("--cacert: {e}"))?,
            None => Vec::new(),
        };
        let config = crate::client::client_config(pinned, vec![b"http/1.1".to_vec()]);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a name TLS can verify a certificate for"))?;
        Ok(TlsClient { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), name })
    }

    /// The handshake on a connected socket.
    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        let tls = self.connector.connect(self.name.clone(), tcp).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// One connection and handshake before the run starts, so that an
    /// untrusted certificate is one clear error rather than every request
    /// failing.
    pub async fn check(&self, addr: SocketAddr) -> Result<(), String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        match self.handshake(tcp).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let hint = match e.to_string().contains("certificate") {
                    true => " (pass --cacert FILE to trust the server's certificate or its CA)",
                    false => "",
                };
                Err(format!("TLS handshake with {addr} failed: {e}{hint}"))
            }
        }
    }
}

/// A worker's connection: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
