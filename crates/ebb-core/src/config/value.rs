//! Leaf values of `ebb.toml` whose serde defaults would give cryptic errors.
//!
//! Each type here deserializes from TOML and, when the value is wrong, fails
//! with a message that says what a right value looks like. toml attaches the
//! value's byte span to the error, so the caller only has to render it: the
//! user sees `ebb.toml:9:10: error: ... expected an address like
//! "127.0.0.1:8080"` under the offending value.
//!
//! Only *shape* is checked here (is it a duration, an address, a whole
//! number?). Ranges and cross-field rules need the surrounding table and live
//! in `raw.rs`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_spanned::Spanned;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What every duration error ends with.
pub(super) const DURATION_HINT: &str = r#"expected a duration like "30s" or "500ms""#;
/// What every address error ends with.
pub(super) const ADDRESS_HINT: &str = r#"expected an address like "127.0.0.1:8080""#;

/// Implements `Deserialize` for a type with a one-off visitor: the visitor's
/// `expecting` text is what serde prints after "invalid type: ..., expected".
macro_rules! deserialize_with {
    ($ty:ty, $visitor:ident, $method:ident) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.$method($visitor)
            }
        }
    };
}

/// A humantime duration: `"500ms"`, `"30s"`, `"2m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dur(pub Duration);

struct DurVisitor;

impl Visitor<'_> for DurVisitor {
    type Value = Dur;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a duration like "30s" or "500ms""#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| E::custom(format!("{s:?} is not a duration ({e}); {DURATION_HINT}")))
    }

    /// A bare number is the most common mistake; whether `30` meant seconds
    /// or milliseconds is exactly what we refuse to guess.
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
        Err(E::custom(format!(r#"a duration needs a unit: write "{n}s" or "{n}ms", not {n}"#)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
        Err(E::custom(format!(r#"a duration needs a unit: write "{n}s" or "{n}ms", not {n}"#)))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Dur, E> {
        Err(E::custom(format!(r#"a duration needs a unit and quotes: write "{n}s", not {n}"#)))
    }
}

deserialize_with!(Dur, DurVisitor, deserialize_any);

/// A socket address: an IP address and a port. Host names are refused: the
/// core does no I/O, and a name that resolves differently tomorrow would
/// silently move the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Addr(pub SocketAddr);

struct AddrVisitor;

impl Visitor<'_> for AddrVisitor {
    type Value = Addr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an address like "127.0.0.1:8080""#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Addr, E> {
        if let Ok(addr) = s.trim().parse::<SocketAddr>() {
            return Ok(Addr(addr));
        }
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            let example = SocketAddr::new(ip, 8080);
            return Err(E::custom(format!("{s:?} has no port; add one, e.g. \"{example}\"")));
        }
        if let Some((host, port)) = s.rsplit_once(':') {
            if !host.is_empty() && port.parse::<u16>().is_ok() && !host.contains(':') {
                return Err(E::custom(format!(
                    "{s:?}: host names are not looked up; use an IP address, e.g. \"127.0.0.1:{port}\""
                )));
            }
        }
        Err(E::custom(format!("{s:?} is not an IP address and port; {ADDRESS_HINT}")))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Addr, E> {
        Err(E::custom(format!(r#"a port alone is not an address; write "127.0.0.1:{n}""#)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Addr, E> {
        self.visit_i64(n as i64)
    }
}

deserialize_with!(Addr, AddrVisitor, deserialize_any);

/// One IP address (no port, no range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ip(pub IpAddr);

struct IpVisitor;

impl Visitor<'_> for IpVisitor {
    type Value = Ip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an IP address like "127.0.0.1" or "::1""#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Ip, E> {
        if let Ok(ip) = s.trim().parse::<IpAddr>() {
            return Ok(Ip(ip));
        }
        if s.contains('/') {
            return Err(E::custom(format!(
                "{s:?}: address ranges (CIDR) are not supported; list each proxy's IP address"
            )));
        }
        if let Ok(addr) = s.trim().parse::<SocketAddr>() {
            return Err(E::custom(format!("{s:?}: leave out the port; write \"{}\"", addr.ip())));
        }
        Err(E::custom(format!(r#"{s:?} is not an IP address; expected one like "127.0.0.1" or "::1""#)))
    }
}

deserialize_with!(Ip, IpVisitor, deserialize_any);

/// A list of IP addresses, e.g. `trusted_proxies = ["127.0.0.1"]`.
#[derive(Debug, Clone, Default)]
pub(super) struct IpList(pub Vec<IpAddr>);

struct IpListVisitor;

impl<'de> Visitor<'de> for IpListVisitor {
    type Value = IpList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a list of IP addresses like ["127.0.0.1"]"#)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IpList, A::Error> {
        let mut ips = Vec::new();
        while let Some(Ip(ip)) = seq.next_element()? {
            ips.push(ip);
        }
        Ok(IpList(ips))
    }
}

deserialize_with!(IpList, IpListVisitor, deserialize_seq);

/// A whole number, kept signed so that `-1` reaches the range check (and
/// its message) instead of failing as "expected u32".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Int(pub i64);

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = Int;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number like 3")
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Int, E> {
        Ok(Int(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Int, E> {
        i64::try_from(n).map(Int).map_err(|_| E::custom(format!("{n} is too large")))
    }
}

deserialize_with!(Int, IntVisitor, deserialize_any);

/// A number; integers are accepted too (`cpu = 1` means `1.0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Number(pub f64);

struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number like 1.0 or 0.5")
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Number, E> {
        Ok(Number(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Number, E> {
        Ok(Number(n as f64))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Number, E> {
        Ok(Number(n as f64))
    }
}

deserialize_with!(Number, NumberVisitor, deserialize_any);

/// `command`: a string (run through `sh -c`) or an argv array. Emptiness is
/// checked by the caller, which knows the span of the whole value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    Shell(String),
    Argv(Vec<String>),
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a command: a string like "python app.py --port $PORT" or an array like ["python", "app.py"]"#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Command, E> {
        Ok(Command::Shell(s.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
        let mut argv = Vec::new();
        while let Some(CommandArg(arg)) = seq.next_element()? {
            argv.push(arg);
        }
        Ok(Command::Argv(argv))
    }
}

deserialize_with!(Command, CommandVisitor, deserialize_any);

/// One element of an argv `command`.
struct CommandArg(String);

struct CommandArgVisitor;

impl Visitor<'_> for CommandArgVisitor {
    type Value = CommandArg;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string (every argument of an argv command is quoted, e.g. "8080")"#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<CommandArg, E> {
        Ok(CommandArg(s.to_string()))
    }
}

deserialize_with!(CommandArg, CommandArgVisitor, deserialize_any);

/// `env`: variable names (spanned, for the name checks) to string values.
/// Kept in file order; the caller turns it into a map.
#[derive(Debug, Clone, Default)]
pub(super) struct EnvTable(pub Vec<(Spanned<String>, String)>);

struct EnvTableVisitor;

impl<'de> Visitor<'de> for EnvTableVisitor {
    type Value = EnvTable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a table of environment variables like { GREETING = "hello" }"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvTable, A::Error> {
        let mut vars = Vec::new();
        while let Some((name, EnvValue(value))) = map.next_entry::<Spanned<String>, EnvValue>()? {
            vars.push((name, value));
        }
        Ok(EnvTable(vars))
    }
}

deserialize_with!(EnvTable, EnvTableVisitor, deserialize_map);

/// One environment value. Only strings: a process environment holds text,
/// and silently turning `true` into `"true"` hides typos.
struct EnvValue(String);

struct EnvValueVisitor;

impl Visitor<'_> for EnvValueVisitor {
    type Value = EnvValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string (environment values are text; quote numbers and booleans, e.g. "1")"#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<EnvValue, E> {
        Ok(EnvValue(s.to_string()))
    }
}

deserialize_with!(EnvValue, EnvValueVisitor, deserialize_any);

/// `balance`: how a service spreads requests over its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Balance(pub crate::balance::BalanceAlgorithm);

struct BalanceVisitor;

impl Visitor<'_> for BalanceVisitor {
    type Value = Balance;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#""least_outstanding", "round_robin" or "peak_ewma""#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Balance, E> {
        crate::balance::BalanceAlgorithm::ALL.into_iter().find(|a| a.as_str() == s).map(Balance).ok_or_else(|| {
            E::custom(format!(r#"unknown balance {s:?}; expected "least_outstanding", "round_robin" or "peak_ewma""#))
        })
    }
}

deserialize_with!(Balance, BalanceVisitor, deserialize_any);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;

    fn from_str<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, String> {
        let d: StrDeserializer<'_, Error> = s.into_deserializer();
        T::deserialize(d).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_take_humantime_units() {
        assert_eq!(from_str::<Dur>("500ms").unwrap().0, Duration::from_millis(500));
        assert_eq!(from_str::<Dur>("2m").unwrap().0, Duration::from_secs(120));
        assert_eq!(from_str::<Dur>("1h 30m").unwrap().0, Duration::from_secs(5400));
        let err = from_str::<Dur>("10").unwrap_err();
        assert!(err.contains("time unit needed") && err.ends_with(DURATION_HINT), "{err}");
    }

    #[test]
    fn addresses_explain_what_is_missing() {
        assert_eq!(from_str::<Addr>("[::1]:80").unwrap().0, "[::1]:80".parse().unwrap());
        assert!(from_str::<Addr>("127.0.0.1").unwrap_err().contains(r#"e.g. "127.0.0.1:8080""#));
        assert!(from_str::<Addr>("::1").unwrap_err().contains(r#""[::1]:8080""#));
        assert!(from_str::<Addr>("localhost:8080").unwrap_err().contains("host names are not looked up"));
        assert!(from_str::<Addr>("nonsense").unwrap_err().ends_with(ADDRESS_HINT));
    }

    #[test]
    fn ip_addresses_refuse_ranges_and_ports() {
        assert!(from_str::<Ip>("10.0.0.0/8").unwrap_err().contains("CIDR"));
        assert!(from_str::<Ip>("10.0.0.1:80").unwrap_err().contains("leave out the port"));
        assert!(from_str::<Ip>("::1").is_ok());
    }

    #[test]
    fn balance_names_match_the_algorithm_names() {
        assert_eq!(from_str::<Balance>("round_robin").unwrap().0.as_str(), "round_robin");
        assert!(from_str::<Balance>("random").unwrap_err().contains("least_outstanding"));
    }
}

/// A size in bytes: a whole number of bytes, or a string with a unit:
/// `"512MiB"`, `"1GiB"`, `"256m"`, `"1g"` (k/m/g are binary units, as in
/// `docker run --memory`), `"500MB"` (decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bytes(pub u64);

/// What every size error ends with.
pub(super) const BYTES_HINT: &str = r#"expected a size like "512MiB", "1GiB" or "256m""#;

struct BytesVisitor;

impl BytesVisitor {
    fn parse(text: &str) -> Option<u64> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let number: f64 = number.parse().ok()?;
        let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" => 1024.0,
            "m" | "mib" => 1024.0 * 1024.0,
            "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            _ => return None,
        };
        let bytes = number * factor;
        (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
    }
}

impl Visitor<'_> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a size like "512MiB" or "1GiB""#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Bytes, E> {
        Self::parse(s).map(Bytes).ok_or_else(|| E::custom(format!("{s:?} is not a size; {BYTES_HINT}")))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Bytes, E> {
        u64::try_from(n).map(Bytes).map_err(|_| E::custom(format!("a size must be 0 or more, not {n}; {BYTES_HINT}")))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Bytes, E> {
        Ok(Bytes(n))
    }
}

deserialize_with!(Bytes, BytesVisitor, deserialize_any);

#[cfg(test)]
mod bytes_tests {
    use super::BytesVisitor;

    #[test]
    fn sizes_with_units() {
        assert_eq!(BytesVisitor::parse("512MiB"), Some(512 << 20));
        assert_eq!(BytesVisitor::parse("256m"), Some(256 << 20));
        assert_eq!(BytesVisitor::parse("1g"), Some(1 << 30));
        assert_eq!(BytesVisitor::parse("1.5GiB"), Some(3 << 29));
        assert_eq!(BytesVisitor::parse("500MB"), Some(500_000_000));
        assert_eq!(BytesVisitor::parse("4096"), Some(4096));
        assert_eq!(BytesVisitor::parse("lots"), None);
        assert_eq!(BytesVisitor::parse("12 parsecs"), None);
    }
}

/// `access_log = "PATH"` (combined format, `"-"` for stdout) or
/// `access_log = { path = "PATH", format = "combined" | "json" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawAccessLog {
    pub path: String,
    pub format: Option<String>,
}

struct AccessLogVisitor;

impl<'de> Visitor<'de> for AccessLogVisitor {
    type Value = RawAccessLog;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a file like "/var/log/ebb/web.log" ("-" for stdout) or a table like { path = "web.log", format = "json" }"#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<RawAccessLog, E> {
        Ok(RawAccessLog { path: s.to_string(), format: None })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawAccessLog, A::Error> {
        let (mut path, mut format) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "path" => path = Some(map.next_value::<String>()?),
                "format" => format = Some(map.next_value::<String>()?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in access_log; it takes `path` and `format`"
                    )))
                }
            }
        }
        let path = path.ok_or_else(|| de::Error::custom(r#"access_log needs a `path` (a file, or "-" for stdout)"#))?;
        Ok(RawAccessLog { path, format })
    }
}

deserialize_with!(RawAccessLog, AccessLogVisitor, deserialize_any);
