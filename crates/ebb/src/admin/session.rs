//! How the dashboard signs in without ever being handed the admin token.
//!
//! Whoever holds the token (the CLI, reading `admin.token`) asks for a
//! one-time login link (`POST /api/v1/dashboard/login`, what
//! `ebb dashboard` prints). Opening it (`GET /login?ticket=…`) spends the
//! ticket and sets a session cookie (`HttpOnly; SameSite=Strict`), as
//! Jupyter does. The page's script never sees a credential, and nothing
//! is handed out to a request that carries none: a replica (same user, same
//! loopback) that fetches `/` gets the page and no secret.
//!
//! Tickets live [`TICKET_TTL`] and work once; sessions live
//! [`SESSION_TTL`]. Both are 256 random bits, kept in memory only (a
//! restarted ebb forgets them: run `ebb dashboard` again), bounded in
//! number. Time is an argument, so the rules are tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngCore;

/// How long a login link works (once).
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// How long a signed-in dashboard stays signed in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most tickets and sessions kept: the oldest go first beyond this.
const MAX_KEPT: usize = 256;

/// Open tickets and sessions, each secret with its expiry.
#[derive(Debug, Default)]
pub struct Sessions {
    tickets: HashMap<String, Instant>,
    sessions: HashMap<String, Instant>,
}

impl Sessions {
    /// A new one-time ticket.
    pub fn issue_ticket(&mut self, now: Instant) -> String {
        let ticket = random_secret();
        insert_bounded(&mut self.tickets, ticket.clone(), now + TICKET_TTL, now);
        ticket
    }

    /// Spends `ticket`: a new session's secret when it was open, `None`
    /// when it is unknown, used or expired.
    pub fn redeem(&mut self, ticket: &str, now: Instant) -> Option<String> {
        let expires = self.tickets.remove(ticket)?;
        if now >= expires {
            return None;
        }
        let session = random_secret();
        insert_bounded(&mut self.sessions, session.clone(), now + SESSION_TTL, now);
        Some(session)
    }

    /// Whether `session` is a live session.
    pub fn is_valid(&self, session: &str, now: Instant) -> bool {
        self.sessions.get(session).is_some_and(|expires| now < *expires)
    }
}

fn insert_bounded(map: &mut HashMap<String, Instant>, key: String, expires: Instant, now: Instant) {
    if map.len() >= MAX_KEPT {
        map.retain(|_, e| *e > now);
    }
    if map.len() >= MAX_KEPT {
        // Still full of live ones: forget the one closest to expiring.
        if let Some(oldest) = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone()) {
            map.remove(&oldest);
        }
    }
    map.insert(key, expires);
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session cookie's name for the admin listener on `port`: cookies are
/// per host, not per port, so two ebbs on one machine must not share one.
pub fn cookie_name(port: u16) -> String {
    format!("ebb_session_{port}")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once_and_only_in_time() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let ticket = s.issue_ticket(t0);
        assert_eq!(ticket.len(), 64);
        let session = s.redeem(&ticket, t0 + Duration::from_secs(5)).expect("a fresh ticket signs in");
        assert!(s.is_valid(&session, t0 + Duration::from_secs(6)));
        assert_eq!(s.redeem(&ticket, t0 + Duration::from_secs(6)), None, "used");
        let late = s.issue_ticket(t0);
        assert_eq!(s.redeem(&late, t0 + TICKET_TTL), None, "expired");
        assert_eq!(s.redeem("not a ticket", t0), None);
        assert!(!s.is_valid(&session, t0 + Duration::from_secs(5) + SESSION_TTL), "sessions end");
        assert!(!s.is_valid(&ticket, t0), "a ticket is not a session");
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        for _ in 0..1000 {
            let ticket = s.issue_ticket(t0);
            s.redeem(&ticket, t0);
        }
        assert!(s.tickets.len() <= MAX_KEPT && s.sessions.len() <= MAX_KEPT);
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; ebb_session_9900=abc ; ebb_session_99001=zzz";
        assert_eq!(cookie_value(h, &cookie_name(9900)), Some("abc"));
        assert_eq!(cookie_value(h, "b"), None);
    }
}
