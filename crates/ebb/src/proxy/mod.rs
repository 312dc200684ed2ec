//! The data plane: one HTTP load balancer per service.
//!
//! **Architecture invariant:** the request path takes no lock and never waits
//! for the control plane. It reads the routable set from an [`ArcSwap`]
//! snapshot that the controller replaces whole, and counts per replica with
//! atomics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ebb_core::config::{BalanceAlgorithm, ProxyConfig};

/// One replica as the balancer sees it. Created by the controller when the
/// replica starts and kept (with its counters) until it is gone; it is routable
/// only while it is in the current snapshot.
#[derive(Debug)]
pub struct Backend {
    pub replica_id: String,
    pub addr: SocketAddr,
    /// Requests sent to this replica and not yet answered (or failed).
    pub in_flight: AtomicU64,
    /// Requests this replica has answered, any status.
    pub requests: AtomicU64,
    /// Responses with a 5xx status from this replica.
    pub server_errors: AtomicU64,
    /// Connection attempts that failed (refused, reset, timed out).
    pub connect_failures: AtomicU64,
}

impl Backend {
    pub fn new(replica_id: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            replica_id: replica_id.into(),
            addr,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The balancer of one service.
pub struct ServiceProxy {
    pub service: String,
    pub balance: BalanceAlgorithm,
    pub config: ProxyConfig,
    routable: ArcSwap<Vec<Arc<Backend>>>,
}

impl ServiceProxy {
    pub fn new(service: impl Into<String>, balance: BalanceAlgorithm, config: ProxyConfig) -> Arc<Self> {
        Arc::new(Self {
            service: service.into(),
            balance,
            config,
            routable: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// Replaces the routable set in one atomic swap.
    pub fn set_routable(&self, backends: Vec<Arc<Backend>>) {
        self.routable.store(Arc::new(backends));
    }

    /// The current routable set.
    pub fn routable(&self) -> Arc<Vec<Arc<Backend>>> {
        self.routable.load_full()
    }
}

/// `ebb proxy`: a balancer in front of a fixed list of backends, with no
/// fleet management (benchmarks, or putting ebb's balancer in front of
/// servers it does not run).
#[derive(Debug, Clone, clap::Args)]
pub struct StaticProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A backend address; repeat for several.
    #[arg(long = "to", required = true)]
    pub backends: Vec<SocketAddr>,
}

/// Runs a static balancer until Ctrl-C / SIGTERM.
pub async fn run_static(_args: StaticProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// Serves the balancer on an already-bound listener until `shutdown` fires,
/// then stops accepting and lets in-flight requests finish.
pub async fn serve(
    _listener: tokio::net::TcpListener,
    _proxy: Arc<ServiceProxy>,
    _shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    Ok(())
}
