//! The admin API's bearer token, its constant-time check, and the limiter
//! of failed attempts.
//!
//! The token is 256 random bits from the operating system (`OsRng`), stored
//! as 64 hex digits in `<state_dir>/admin.token`, created with mode 0600 in
//! the same `open(2)` call (never world-readable, not even for an instant).
//! It is never logged: [`AdminToken`]'s `Debug` prints `<redacted>`, and no
//! error message echoes what a client presented.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::RngCore;

/// The token file's name inside the state directory.
pub const TOKEN_FILE: &str = "admin.token";
/// 32 random bytes = 256 bits (the issue asks for at least 128).
const TOKEN_BYTES: usize = 32;

/// Where `ebb up` keeps the admin token for this state directory.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// The admin API's shared secret.
pub struct AdminToken {
    secret: String,
    path: PathBuf,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken").field("path", &self.path).field("secret", &"<redacted>").finish()
    }
}

/// Why the token could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot create the admin token file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot read the admin token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the admin token file {path} is accessible to other users (mode {mode:04o}); it may have leaked: \
         delete it (ebb makes a new one at the next start) or run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "the admin token file {path} does not hold a token (expected at least 32 hex digits); \
         delete it and ebb makes a new one at the next start"
    )]
    Malformed { path: PathBuf },
}

impl AdminToken {
    /// Loads `<state_dir>/admin.token`, or creates it (mode 0600) with a
    /// fresh random token when it does not exist or is empty (a crash
    /// between create and write).
    pub fn load_or_create(state_dir: &Path) -> Result<AdminToken, TokenError> {
        let path = token_path(state_dir);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(TokenError::Read { path, source }),
            Ok(meta) if meta.len() == 0 && meta.is_file() => {
                std::fs::remove_file(&path).map_err(|source| TokenError::Create { path: path.clone(), source })?;
                Self::create(path)
            }
            Ok(_) => Self::load(path),
        }
    }

    fn create(path: PathBuf) -> Result<AdminToken, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = hex(&bytes);
        let err = |source| TokenError::Create { path: path.clone(), source };
        // create_new + mode: the file is born 0600 (umask can only remove
        // bits) and an attacker's pre-placed file or symlink makes us fail
        // instead of writing the secret somewhere else.
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(err)?;
        file.write_all(secret.as_bytes()).map_err(err)?;
        file.write_all(b"\n").map_err(err)?;
        file.sync_all().map_err(err)?;
        Ok(AdminToken { secret, path })
    }

    fn load(path: PathBuf) -> Result<AdminToken, TokenError> {
        let meta = std::fs::metadata(&path).map_err(|source| TokenError::Read { path: path.clone(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::TooOpen { path, mode });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| TokenError::Read { path: path.clone(), source })?;
        let secret = text.trim().to_string();
        if secret.len() < 32 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed { path });
        }
        Ok(AdminToken { secret, path })
    }

    /// A token held in memory only (tests).
    pub fn from_secret(secret: impl Into<String>) -> AdminToken {
        AdminToken { secret: secret.into(), path: PathBuf::new() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `presented` is the token, in time independent of where they
    /// differ.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), presented.as_bytes())
    }

    /// The secret itself, for tests. Never log it, never serve it.
    #[cfg(test)]
    pub(crate) fn reveal(&self) -> &str {
        &self.secret
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time that does not depend on where they
/// differ (`subtle`); only their lengths are public (a token's is fixed).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The token carried by an `Authorization: Bearer <token>` header value;
/// `None` for any other scheme or shape.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Failed attempts per client address: after [`FailureLimiter::MAX_FAILURES`]
/// wrong tokens within [`FailureLimiter::WINDOW`], that address gets 429 for
/// every wrong token for [`FailureLimiter::LOCKOUT`], answered after
/// [`FailureLimiter::LOCKED_OUT_DELAY`]. The guard consults it
/// only for a wrong token: the right one is always served, so no local
/// process can lock the operator out.
///
/// Time is an argument, so the behaviour is tested without sleeping.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    clients: HashMap<IpAddr, Client>,
    /// Wrong tokens since start, all clients (for `/metrics`).
    pub total_failures: u64,
    /// Requests refused because their client was locked out.
    pub total_lockouts: u64,
}

#[derive(Debug, Default)]
struct Client {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl FailureLimiter {
    pub const MAX_FAILURES: usize = 10;
    pub const WINDOW: Duration = Duration::from_secs(60);
    pub const LOCKOUT: Duration = Duration::from_secs(60);
    /// How long a wrong token waits for its 429 while its address is locked
    /// out (a tarpit: each guess costs the guesser a second).
    pub const LOCKED_OUT_DELAY: Duration = Duration::from_secs(1);
    /// Clients remembered at most (bounded memory under a spray of sources).
    const MAX_CLIENTS: usize = 4096;

    /// `Err(retry_after)` while `ip` is locked out.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(client) = self.clients.get_mut(&ip) else { return Ok(()) };
        match client.locked_until {
            Some(until) if now < until => {
                self.total_lockouts += 1;
                Err(until - now)
            }
            Some(_) => {
                client.locked_until = None;
                client.failures.clear();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a wrong token from `ip`; returns the lockout if this one
    /// started it.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.total_failures += 1;
        if self.clients.len() >= Self::MAX_CLIENTS && !self.clients.contains_key(&ip) {
            self.prune(now);
        }
        let client = self.clients.entry(ip).or_default();
        while client.failures.front().is_some_and(|t| now.saturating_duration_since(*t) > Self::WINDOW) {
            client.failures.pop_front();
        }
        client.failures.push_back(now);
        if client.failures.len() >= Self::MAX_FAILURES {
            client.locked_until = Some(now + Self::LOCKOUT);
            return Some(Self::LOCKOUT);
        }
        None
    }

    fn prune(&mut self, now: Instant) {
        self.clients.retain(|_, c| {
            c.locked_until.is_some_and(|t| t > now)
                || c.failures.back().is_some_and(|t| now.saturating_duration_since(*t) <= Self::WINDOW)
        });
        if self.clients.len() >= Self::MAX_CLIENTS {
            // Still full of live entries: forget the ones that are not locked.
            self.clients.retain(|_, c| c.locked_until.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"abc123", b"abc123"));
        assert!(!constant_time_eq(b"abc123", b"abc124"));
        assert!(!constant_time_eq(b"abc", b"abc123"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn token_file_is_created_0600_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let token = AdminToken::load_or_create(dir.path()).unwrap();
        let meta = std::fs::metadata(token_path(dir.path())).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(token.reveal().len(), 64);
        assert!(token.reveal().bytes().all(|b| b.is_ascii_hexdigit()));
        let again = AdminToken::load_or_create(dir.path()).unwrap();
        assert_eq!(again.reveal(), token.reveal());
        assert!(!format!("{token:?}").contains(token.reveal()), "Debug must not show the secret");
    }

    #[test]
    fn a_readable_or_malformed_token_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(dir.path());
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = AdminToken::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(AdminToken::load_or_create(dir.path()).is_ok());
        std::fs::write(&path, "not a token").unwrap();
        let err = AdminToken::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not hold a token"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a token", "never overwritten");
    }

    #[test]
    fn an_empty_token_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(token_path(dir.path()), "").unwrap();
        let token = AdminToken::load_or_create(dir.path()).unwrap();
        assert_eq!(token.reveal().len(), 64);
    }

    #[test]
    fn comparison_and_bearer_parsing() {
        let token = AdminToken::from_secret("abcdef0123456789abcdef0123456789");
        assert!(token.matches("abcdef0123456789abcdef0123456789"));
        for wrong in [
            "",
            "abcdef0123456789abcdef012345678",
            "abcdef0123456789abcdef01234567890",
            "Abcdef0123456789abcdef0123456789",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn ten_failures_in_a_minute_lock_the_client_out_for_a_minute() {
        let mut limiter = FailureLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..9 {
            assert_eq!(limiter.fail(ip, t0 + Duration::from_secs(i)), None);
            assert!(limiter.check(ip, t0 + Duration::from_secs(i)).is_ok());
        }
        assert_eq!(limiter.fail(ip, t0 + Duration::from_secs(9)), Some(FailureLimiter::LOCKOUT));
        let retry = limiter.check(ip, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(retry, Duration::from_secs(59));
        assert!(limiter.check(other, t0 + Duration::from_secs(10)).is_ok(), "other clients are not affected");
        assert!(limiter.check(ip, t0 + Duration::from_secs(70)).is_ok(), "the lockout lifts");
        // Failures spread over more than a minute never lock.
        let mut slow = FailureLimiter::default();
        for i in 0..30 {
            assert_eq!(slow.fail(ip, t0 + Duration::from_secs(i * 7)), None);
        }
    }
}
