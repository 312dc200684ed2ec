//! Access logs: one line per request answered on an address that has
//! `proxy.access_log`, written when the response body ends (so the line
//! has the bytes sent and the whole time).
//!
//! A line is formatted on the request's own task into its file's buffer (a
//! mutex held for a copy); a thread per file writes the buffer out every
//! 200 ms, so no request ever waits on a disk. The buffer is bounded: past
//! [`MAX_PENDING`] unwritten bytes (a stuck disk) lines are dropped, and
//! counted in a warning. Before each write the path is checked: a file
//! moved away (logrotate) gets its successor opened at the configured path,
//! so no signal or copytruncate is needed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use ebb_core::config::{AccessLogConfig, AccessLogFormat, AccessLogTarget};
use http::{header, HeaderValue, Method, Request, Response, Uri, Version};

/// How often buffered lines are written out.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Unwritten bytes beyond which new lines are dropped.
const MAX_PENDING: usize = 4 << 20;

/// One address's access log: a format and the file (shared by every
/// address that names the same file).
pub(crate) struct AccessLog {
    format: AccessLogFormat,
    sink: Arc<Sink>,
    /// The address's label (`service web`, `listener public`), in each line.
    front: Arc<str>,
}

impl AccessLog {
    /// Opens (or joins) the log `config` names. Fails when the file cannot
    /// be opened for appending, with the path in the message.
    pub(crate) fn open(config: &AccessLogConfig, front: &str) -> io::Result<Arc<AccessLog>> {
        Ok(Arc::new(AccessLog { format: config.format, sink: Sink::open(&config.target)?, front: front.into() }))
    }
}

/// Where lines of one file (or stdout) collect before they are written.
struct Sink {
    target: AccessLogTarget,
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    /// The open file (`None` for stdout); touched only when writing.
    file: Mutex<Option<File>>,
}

/// Every open sink, so two addresses logging to one file share one writer
/// (and [`flush_all`] reaches them at shutdown).
static SINKS: Mutex<Vec<Weak<Sink>>> = Mutex::new(Vec::new());

impl Sink {
    fn open(target: &AccessLogTarget) -> io::Result<Arc<Sink>> {
        let mut sinks = SINKS.lock().unwrap_or_else(|p| p.into_inner());
        sinks.retain(|s| s.strong_count() > 0);
        if let Some(sink) = sinks.iter().filter_map(Weak::upgrade).find(|s| &s.target == target) {
            return Ok(sink);
        }
        let file = match target {
            AccessLogTarget::Stdout => None,
            AccessLogTarget::File(path) => Some(open_file(path)?),
        };
        let sink = Arc::new(Sink {
            target: target.clone(),
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            dropped: AtomicU64::new(0),
            file: Mutex::new(file),
        });
        sinks.push(Arc::downgrade(&sink));
        let weak = Arc::downgrade(&sink);
        std::thread::Builder::new().name("ebb-access-log".into()).spawn(move || flush_loop(weak))?;
        Ok(sink)
    }

    fn push(&self, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() + line.len() > MAX_PENDING {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.extend_from_slice(line);
    }

    /// Writes out what is pending, first reopening the file if its path no
    /// longer names it (one `stat` per write, at most 5 a second).
    fn flush(&self) {
        let lines = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                None
            } else {
                Some(std::mem::replace(&mut *pending, Vec::with_capacity(64 * 1024)))
            }
        };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(log = %self.describe(), dropped, "Access log could not keep up; lines were dropped.");
        }
        let Some(lines) = lines else { return };
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let AccessLogTarget::File(path) = &self.target {
            if moved_away(file.as_ref(), path) {
                match open_file(path) {
                    Ok(new) => *file = Some(new),
                    Err(error) => tracing::warn!(log = %path.display(), %error, "Could not reopen the access log."),
                }
            }
        }
        let written = match file.as_mut() {
            Some(file) => file.write_all(&lines),
            None => io::stdout().lock().write_all(&lines),
        };
        if let Err(error) = written {
            tracing::warn!(log = %self.describe(), %error, "Could not write the access log.");
        }
    }

    fn describe(&self) -> String {
        match &self.target {
            AccessLogTarget::Stdout => "stdout".into(),
            AccessLogTarget::File(path) => path.display().to_string(),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.flush();
    }
}

fn open_file(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open access log {}: {e}", path.display())))
}

/// Whether `path` no longer names the open file (moved or deleted).
fn moved_away(file: Option<&File>, path: &std::path::Path) -> bool {
    let Some(open) = file.and_then(|f| f.metadata().ok()) else { return true };
    match std::fs::metadata(path) {
        Ok(now) => now.ino() != open.ino() || now.dev() != open.dev(),
        Err(_) => true,
    }
}

fn flush_loop(sink: Weak<Sink>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(sink) = sink.upgrade() else { return };
        sink.flush();
    }
}

/// Opens every access log file `config` names, so one that cannot be
/// written is refused before anything starts (`ebb up`, `ebb apply`),
/// naming the address it belongs to.
pub fn check(config: &ebb_core::config::Config) -> Result<(), String> {
    let services = config
        .services
        .values()
        .filter(|s| s.own_listen && s.kind.has_balancer())
        .map(|s| (format!("service.{}.proxy.access_log", s.name), &s.proxy));
    let listeners = config.listeners.values().map(|l| (format!("listener.{}.proxy.access_log", l.name), &l.proxy));
    for (key, proxy) in services.chain(listeners) {
        if let Some(AccessLogTarget::File(path)) = proxy.access_log.as_ref().map(|l| &l.target) {
            open_file(path).map_err(|e| format!("{}: {key}: {e}", config.path.display()))?;
        }
    }
    Ok(())
}

/// Writes every access log's pending lines now (ebb is stopping).
pub fn flush_all() {
    let sinks: Vec<Arc<Sink>> =
        SINKS.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
    for sink in sinks {
        sink.flush();
    }
}

/// What served a request, put on the response by the balancer (only when
/// the address logs) for the access log line.
#[derive(Clone)]
pub(crate) struct Served {
    pub backend: std::sync::Arc<super::Backend>,
    /// From sending the request to the replica until its response head.
    pub upstream: Duration,
}

/// One request's line, written when it is dropped (with the response
/// body, or at once for a response that has none).
pub(crate) struct AccessRecord {
    log: Arc<AccessLog>,
    started: Instant,
    at: SystemTime,
    client: HeaderValue,
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    request_id: HeaderValue,
    service: Option<String>,
    status: u16,
    served: Option<Served>,
    pub(crate) bytes: u64,
}

impl AccessRecord {
    /// Taken when the request arrives, before it is changed for upstream.
    pub(crate) fn start<B>(
        log: Arc<AccessLog>,
        req: &Request<B>,
        client: &HeaderValue,
        request_id: &HeaderValue,
    ) -> Box<AccessRecord> {
        let headers = req.headers();
        Box::new(AccessRecord {
            log,
            started: Instant::now(),
            at: SystemTime::now(),
            client: client.clone(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: headers.get(header::HOST).cloned(),
            referer: headers.get(header::REFERER).cloned(),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            request_id: request_id.clone(),
            service: None,
            status: 0,
            served: None,
            bytes: 0,
        })
    }

    /// The answer's head is known: its status and who served it.
    pub(crate) fn answered<B>(&mut self, response: &Response<B>, service: Option<String>) {
        self.status = response.status().as_u16();
        self.service = service;
        self.served = response.extensions().get::<Served>().cloned();
    }

    fn line(&self) -> Vec<u8> {
        let total = self.started.elapsed().as_secs_f64();
        let mut out = Vec::with_capacity(320);
        let target = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let replica = self.served.as_ref().map(|s| s.backend.replica_id.as_str());
        let upstream = self.served.as_ref().map(|s| s.upstream.as_secs_f64());
        match self.log.format {
            AccessLogFormat::Combined => {
                // Written piece by piece into one buffer: no allocation but
                // the line's own.
                out.extend_from_slice(self.client.as_bytes());
                out.extend_from_slice(b" - - [");
                clf_time(self.at, &mut out);
                out.extend_from_slice(b"] \"");
                quoted(&mut out, self.method.as_str().as_bytes());
                out.push(b' ');
                quoted(&mut out, target.as_bytes());
                let _ = write!(out, " {:?}\" {} ", self.version, self.status);
                match self.bytes {
                    0 => out.push(b'-'),
                    n => {
                        let _ = write!(out, "{n}");
                    }
                }
                out.extend_from_slice(b" \"");
                quoted(&mut out, self.referer.as_ref().map_or(b"-", |v| v.as_bytes()));
                out.extend_from_slice(b"\" \"");
                quoted(&mut out, self.user_agent.as_ref().map_or(b"-", |v| v.as_bytes()));
                out.extend_from_slice(b"\" request_id=");
                quoted(&mut out, self.request_id.as_bytes());
                let _ = write!(
                    out,
                    " front=\"{}\" service={} replica={} upstream_time=",
                    self.log.front,
                    self.service.as_deref().unwrap_or("-"),
                    replica.unwrap_or("-"),
                );
                match upstream {
                    Some(seconds) => {
                        let _ = write!(out, "{seconds:.3}");
                    }
                    None => out.push(b'-'),
                }
                let _ = writeln!(out, " request_time={total:.3}");
            }
            AccessLogFormat::Json => {
                let text =
                    |v: &Option<HeaderValue>| v.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let line = serde_json::json!({
                    "time": humantime::format_rfc3339_millis(self.at).to_string(),
                    "client": String::from_utf8_lossy(self.client.as_bytes()),
                    "method": self.method.as_str(),
                    "path": target,
                    "protocol": format!("{:?}", self.version),
                    "host": text(&self.host),
                    "status": self.status,
                    "bytes": self.bytes,
                    "referer": text(&self.referer),
                    "user_agent": text(&self.user_agent),
                    "request_id": String::from_utf8_lossy(self.request_id.as_bytes()),
                    "front": &*self.log.front,
                    "service": self.service,
                    "replica": replica,
                    "upstream_seconds": upstream.map(round_ms),
                    "request_seconds": round_ms(total),
                });
                let _ = serde_json::to_writer(&mut out, &line);
                out.push(b'\n');
            }
        }
        out
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let line = self.line();
        self.log.sink.push(&line);
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Bytes from the client, made safe inside a quoted log field: `"`, `\`
/// and anything not printable ASCII become `\xHH` (as nginx does), so no
/// request can forge a line or a field.
fn quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// `10/Oct/2000:13:55:36 +0000`, cached per second per thread.
fn clf_time(at: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != seconds {
            let text = jiff::Timestamp::from_second(seconds as i64)
                .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).strftime("%d/%b/%Y:%H:%M:%S +0000").to_string())
                .unwrap_or_else(|_| "-".into());
            *last = (seconds, text);
        }
        out.extend_from_slice(last.1.as_bytes());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_bytes_cannot_break_a_quoted_field() {
        let mut out = Vec::new();
        quoted(&mut out, b"evil\" \\ \n\x7f ok");
        assert_eq!(String::from_utf8(out).unwrap(), r#"evil\x22 \x5C \x0A\x7F ok"#);
    }

    #[test]
    fn clf_time_is_apache_shaped() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(971_186_136);
        let mut out = Vec::new();
        clf_time(at, &mut out);
        assert_eq!(out, b"10/Oct/2000:13:55:36 +0000");
    }
}
