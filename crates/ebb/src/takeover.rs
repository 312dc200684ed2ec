//! `ebb up --takeover`: a new ebb (typically a new binary) takes over from
//! the one running on the same state directory, without a refused
//! connection and without restarting a replica.
//!
//! The running ebb listens on `<state_dir>/takeover.sock` (mode 0600, only
//! peers of the same uid, checked with `SO_PEERCRED`). The exchange:
//!
//! 1. new → old: `{"pid": N, "version": "…"}\n`;
//! 2. old → new: `{"pid": N, "version": "…", "sockets": ["addr", …]}\n`
//!    with every listening socket (services' `listen`, listeners' `listen`
//!    and `http`, the admin API) attached in that order (`SCM_RIGHTS`);
//! 3. new → old: `ok\n` once it holds them.
//!
//! Only after the `ok` does the old ebb stop accepting. The sockets stay
//! open in the new process, so clients arriving meanwhile wait in the
//! backlog. The old ebb finishes its in-flight requests, saves its state
//! and exits *leaving the fleet running* (`controller::leave_fleet`); its
//! state writer releases `state.lock`. The new ebb waits for that lock,
//! opens the store, takes the passed sockets where `up.rs` takes sockets a
//! supervisor passes (`inherited_listeners`), adopts the replicas through
//! the ordinary adoption path and records `ebb_upgraded`.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The takeover socket's name inside the state directory.
pub const SOCKET_FILE: &str = "takeover.sock";
/// At most this many sockets are handed over (one `SCM_RIGHTS` message;
/// the kernel's limit is 253).
const MAX_SOCKETS: usize = 200;
/// How long either side waits for the other during the exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// This ebb's version, as both sides report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    pid: u32,
    version: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    pid: u32,
    version: String,
    /// The address of each attached socket, in order.
    sockets: Vec<SocketAddr>,
}

/// The listening sockets this process would hand over: a duplicate of each
/// socket `up.rs`'s `bind` returned, by address.
fn registry() -> &'static Mutex<Vec<(SocketAddr, OwnedFd)>> {
    static SOCKETS: Mutex<Vec<(SocketAddr, OwnedFd)>> = Mutex::new(Vec::new());
    &SOCKETS
}

/// Remembers a listening socket so that a takeover can hand it over (a
/// close-on-exec duplicate: replicas never inherit it). Called for every
/// socket `ebb up` binds or inherits.
pub fn keep(listener: &tokio::net::TcpListener) {
    let kept = listener.local_addr().and_then(|addr| Ok((addr, listener.as_fd().try_clone_to_owned()?)));
    match kept {
        Ok((addr, fd)) => {
            let mut sockets = registry().lock().unwrap_or_else(|p| p.into_inner());
            sockets.retain(|(a, _)| *a != addr);
            sockets.push((addr, fd));
        }
        Err(error) => tracing::warn!(%error, "Cannot keep a listening socket for a takeover; it would be bound anew."),
    }
}

/// Forgets the socket at `addr` (a listener that is closed for good while
/// ebb runs): a kept duplicate would keep its port listening.
pub fn forget(addr: SocketAddr) {
    registry().lock().unwrap_or_else(|p| p.into_inner()).retain(|(a, _)| *a != addr);
}

/// Closes the kept duplicates, when ebb begins to stop: a balancer that
/// stops accepting must let its port go (clients are refused rather than
/// queued for a process that is leaving), unless a successor holds it.
pub fn release_all() {
    registry().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The old side: `<state_dir>/takeover.sock`, answering one takeover.
pub struct Server {
    path: PathBuf,
    /// Cancelled once a new ebb holds the sockets: this one must leave.
    pub taken_over: CancellationToken,
    /// Who took over, for the exit lines.
    successor: std::sync::Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
}

impl Server {
    /// Opens the takeover socket (a stale one from a crashed run is
    /// replaced: the caller holds the state directory's lock). Failing to
    /// open it is not fatal: `ebb up --takeover` then says it finds no ebb.
    pub fn open(state_dir: &Path) -> Option<Server> {
        use std::os::unix::fs::PermissionsExt;
        let path = state_dir.join(SOCKET_FILE);
        let _ = std::fs::remove_file(&path);
        let listener = match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "Cannot open the takeover socket: `ebb up --takeover` cannot take over from this ebb.");
                return None;
            }
        };
        if let Err(error) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), %error, "Cannot make the takeover socket private.");
        }
        let server = Server {
            path: path.clone(),
            taken_over: CancellationToken::new(),
            successor: Default::default(),
            stop: CancellationToken::new(),
        };
        let (taken_over, successor, stop) = (server.taken_over.clone(), server.successor.clone(), server.stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            tracing::warn!(%error, "Takeover socket: accept failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let Ok(stream) = stream.into_std() else { continue };
                let stopping = stop.clone();
                let handed = tokio::task::spawn_blocking(move || hand_over(stream, &stopping)).await;
                match handed {
                    Ok(Ok(request)) => {
                        let who = format!("ebb {} (pid {})", request.version, request.pid);
                        tracing::info!(successor = %who, "Handed the listening sockets over; leaving the fleet to it.");
                        *successor.lock().unwrap_or_else(|p| p.into_inner()) = Some(who);
                        taken_over.cancel();
                        return;
                    }
                    Ok(Err(error)) => tracing::warn!("Takeover refused or failed; this ebb keeps running: {error:#}"),
                    Err(error) => tracing::warn!(%error, "Takeover task failed; this ebb keeps running."),
                }
            }
        });
        Some(server)
    }

    /// Stops answering and removes the socket file (before the state
    /// directory's lock is released: the next ebb makes its own). Returns
    /// who took over, if anyone did.
    pub fn close(self) -> Option<String> {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.path);
        let successor = self.successor.lock().unwrap_or_else(|p| p.into_inner()).clone();
        successor
    }
}

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> anyhow::Result<u32> {
    let creds = socket::getsockopt(stream, socket::sockopt::PeerCredentials).context("SO_PEERCRED")?;
    Ok(creds.uid())
}

fn same_user(stream: &UnixStream) -> anyhow::Result<()> {
    let (peer, me) = (peer_uid(stream)?, nix::unistd::geteuid().as_raw());
    if peer != me {
        bail!("the peer runs as uid {peer}, this ebb as uid {me}; only the same user may take over");
    }
    Ok(())
}

/// The old side of one exchange (blocking). Refused once this ebb has
/// begun to stop (`stopping`): it may be stopping the fleet.
fn hand_over(stream: std::os::unix::net::UnixStream, stopping: &CancellationToken) -> anyhow::Result<Request> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    same_user(&stream)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line).context("reading the takeover request")?;
    let request: Request = serde_json::from_str(line.trim()).context("a malformed takeover request")?;
    if stopping.is_cancelled() {
        bail!("this ebb is already stopping; the takeover by pid {} is refused", request.pid);
    }
    let sockets = registry().lock().unwrap_or_else(|p| p.into_inner());
    if sockets.len() > MAX_SOCKETS {
        bail!("{} listening sockets, more than the {MAX_SOCKETS} a takeover hands over", sockets.len());
    }
    let offer = Offer {
        pid: std::process::id(),
        version: VERSION.to_string(),
        sockets: sockets.iter().map(|(addr, _)| *addr).collect(),
    };
    let mut text = serde_json::to_vec(&offer)?;
    text.push(b'\n');
    let fds: Vec<RawFd> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = socket::sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(&text)], cmsgs, MsgFlags::empty(), None)
        .context("sending the listening sockets")?;
    drop(sockets);
    if sent < text.len() {
        (&stream).write_all(&text[sent..]).context("sending the socket list")?;
    }
    let mut ack = String::new();
    reader.read_line(&mut ack).context("waiting for the new ebb to confirm it holds the sockets")?;
    if ack.trim() != "ok" {
        bail!("the new ebb (pid {}) did not confirm the sockets: {:?}", request.pid, ack.trim());
    }
    Ok(request)
}

/// What the new ebb received.
#[derive(Debug)]
pub struct Handed {
    pub old_pid: u32,
    pub old_version: String,
    pub sockets: Vec<SocketAddr>,
}

impl Handed {
    /// The `ebb_upgraded` event's reason.
    pub fn reason(&self) -> String {
        format!(
            "ebb {} (pid {}) took over from ebb {} (pid {}): {} listening socket{} handed over ({}), replicas adopted without a restart",
            VERSION,
            std::process::id(),
            self.old_version,
            self.old_pid,
            self.sockets.len(),
            if self.sockets.len() == 1 { "" } else { "s" },
            self.sockets.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        )
    }
}

/// The new side: asks the ebb running on `state_dir` for its sockets.
/// `Ok(None)` when none runs there (no socket, or nobody answers on it).
/// The sockets go where `up.rs` finds sockets passed by a supervisor.
pub async fn request(state_dir: &Path) -> anyhow::Result<Option<Handed>> {
    let path = state_dir.join(SOCKET_FILE);
    let stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("--takeover: cannot connect to {}", path.display())),
    };
    let shown = path.display().to_string();
    let handed = tokio::task::spawn_blocking(move || receive(stream))
        .await
        .context("--takeover: the exchange task failed")?
        .with_context(|| format!("--takeover: taking over through {shown} failed; the running ebb keeps running"))?;
    let mut inherited = crate::up::inherited_listeners().lock().unwrap_or_else(|p| p.into_inner());
    inherited.extend(handed.1);
    Ok(Some(handed.0))
}

/// The new side of one exchange (blocking): the offer and its sockets.
fn receive(stream: UnixStream) -> anyhow::Result<(Handed, Vec<std::net::TcpListener>)> {
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    same_user(&stream)?;
    let request = Request { pid: std::process::id(), version: VERSION.to_string() };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    (&stream).write_all(&line).context("sending the takeover request")?;

    let mut buffer = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let mut fds: Vec<OwnedFd> = Vec::new();
    let received = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let msg = socket::recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .context("receiving the listening sockets")?;
        for c in msg.cmsgs().context("reading the passed sockets")? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these fds in this
                // process for this message; nothing else owns them.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            bail!("the passed sockets did not fit (control message truncated)");
        }
        msg.bytes
    };
    let mut text = buffer[..received].to_vec();
    // The rest of the line, if the kernel split it.
    let mut stream_reader = &stream;
    while !text.contains(&b'\n') {
        let mut more = [0u8; 4096];
        let n = stream_reader.read(&mut more).context("reading the socket list")?;
        if n == 0 {
            bail!("the running ebb closed the connection before sending its sockets (is it already stopping?)");
        }
        text.extend_from_slice(&more[..n]);
    }
    let end = text.iter().position(|b| *b == b'\n').unwrap_or(text.len());
    let offer: Offer = serde_json::from_slice(&text[..end]).context("a malformed answer from the running ebb")?;
    if offer.sockets.len() != fds.len() {
        bail!("the running ebb listed {} sockets but passed {}", offer.sockets.len(), fds.len());
    }
    let mut listeners = Vec::new();
    for (addr, fd) in offer.sockets.iter().zip(fds) {
        let listener = std::net::TcpListener::from(fd);
        match listener.local_addr() {
            Ok(local) if local == *addr => listeners.push(listener),
            Ok(local) => bail!("the socket passed for {addr} listens on {local}"),
            Err(error) => bail!("the socket passed for {addr} is not a TCP listener: {error}"),
        }
    }
    (&stream).write_all(b"ok\n").context("confirming the sockets")?;
    Ok((Handed { old_pid: offer.pid, old_version: offer.version, sockets: offer.sockets }, listeners))
}

/// Waits until the old ebb has released `<state_dir>/state.lock` (it has
/// saved its state and is exiting), at most `timeout`.
pub async fn wait_for_release(state_dir: &Path, handed: &Handed, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while crate::state::state_dir_in_use(state_dir) {
        if started.elapsed() > timeout {
            bail!(
                "--takeover: ebb pid {} handed over its sockets but still holds {} after {}; it may still be finishing requests \
                 (`ps -p {}`). This ebb gives up; once that one has exited, start `ebb up` again (the sockets are bound anew)",
                handed.old_pid,
                state_dir.join(crate::state::LOCK_FILE).display(),
                humantime::format_duration(timeout),
                handed.old_pid
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::info!(
        waited_ms = started.elapsed().as_millis() as u64,
        old_pid = handed.old_pid,
        "The previous ebb released the state directory."
    );
    Ok(())
}

/// `ebb up`'s step before it opens the state store: with `--takeover`,
/// take the running ebb's sockets and wait until it has left the state
/// directory. `Ok(None)` without `--takeover`, or when no ebb runs there
/// (then `ebb up` starts as usual, and says so).
pub async fn before_store(
    config: &ebb_core::config::Config,
    state_dir: &Path,
    takeover: bool,
) -> anyhow::Result<Option<Handed>> {
    if !takeover {
        return Ok(None);
    }
    // Once the sockets are handed over the old ebb leaves: what this one
    // can check without them is checked first (the config was parsed and
    // validated before `up`; certificate files are read here).
    crate::tls::check_config(config).context("--takeover: not asked; this config's certificates do not load")?;
    let Some(handed) = request(state_dir).await? else {
        if crate::state::state_dir_in_use(state_dir) {
            let lock = state_dir.join(crate::state::LOCK_FILE);
            let holder = std::fs::read_to_string(&lock).unwrap_or_default();
            bail!(
                "--takeover: an ebb (pid {}) holds {} but does not answer on {} (an ebb without takeover, or one still starting); \
                 stop it with SIGTERM (`kill {}`: its replicas keep running), then run `ebb up`: it adopts them",
                holder.trim(),
                lock.display(),
                state_dir.join(SOCKET_FILE).display(),
                holder.trim()
            );
        }
        println!(
            "ebb: --takeover: no ebb is running on {} (no answer on {}); starting normally",
            state_dir.display(),
            state_dir.join(SOCKET_FILE).display()
        );
        return Ok(None);
    };
    println!(
        "ebb: --takeover: ebb {} (pid {}) handed over {} listening socket{}; waiting for it to finish its requests, save and exit (its replicas keep running)",
        handed.old_version,
        handed.old_pid,
        handed.sockets.len(),
        if handed.sockets.len() == 1 { "" } else { "s" }
    );
    // The old ebb drains its balancers (up to the longest drain_timeout),
    // lets starts and stops settle (10 s at most), then saves.
    let longest_drain = config.services.values().map(|s| s.drain_timeout).max().unwrap_or_default();
    wait_for_release(state_dir, &handed, longest_drain + Duration::from_secs(30)).await?;
    Ok(Some(handed))
}

/// Records `ebb_upgraded` in the (continued) event log.
pub fn record(events: &crate::events::EventLog, handed: &Option<Handed>) {
    if let Some(handed) = handed {
        let reason = handed.reason();
        println!("ebb: {reason}");
        events.record(crate::events::NewEvent::new("ebb", crate::events::EventKind::EbbUpgraded, reason));
    }
}

/// Closes the passed sockets no listener took (one removed from the config,
/// or whose address changed): left open, clients would queue on them with
/// nobody to accept.
pub fn close_unclaimed() {
    let mut inherited = crate::up::inherited_listeners().lock().unwrap_or_else(|p| p.into_inner());
    for listener in inherited.drain(..) {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        tracing::warn!(%addr, "Closing a passed listening socket that no address in the config uses.");
    }
}
