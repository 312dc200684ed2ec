//! Traffic for the simulator: one offered rate (requests per second) per
//! second of virtual time, read from text. Parsing is pure; the caller
//! reads the file.
//!
//! Three formats, told apart by their first non-blank line:
//!
//! - **CSV** `second,rate`: one row per second, in order, with no gap; an
//!   optional header line; blank lines and `#` comments are skipped.
//!   Seconds count from the first row. `parse_csv` is also the reader of
//!   `ebb load --trace`, so one file means the same load to both commands.
//!   A gap is refused rather than filled: a missing second may mean "no
//!   requests" as well as "the same rate", and a wrong guess would be silent.
//! - **Access log**, nginx/Apache *combined* (or common) format:
//!   `… [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" …`: each line is one
//!   request, counted in the second of its time stamp.
//! - **Access log**, AWS ALB format: `http 2026-07-02T22:23:00.186641Z
//!   app/my-lb/… …`: the second field is the time.
//!
//! Every error names the input and the line: `day.csv:57: …`.

/// Offered load, one rate per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Requests per second offered during second `i` (the second `[i, i+1)`).
    pub rates: Vec<f64>,
    /// The Unix time of the first second, when the input says (an access
    /// log, a recorded history).
    pub start_unix: Option<i64>,
    /// Where it came from, for reports: `day.csv`, `shape step:peak=400`.
    pub source: String,
}

/// The longest span an access log may cover: beyond this, its lines are
/// more likely from unrelated days than one trace.
const MAX_LOG_SPAN_S: i64 = 31 * 86_400;

impl Trace {
    pub fn new(rates: Vec<f64>, source: impl Into<String>) -> Trace {
        Trace { rates, start_unix: None, source: source.into() }
    }

    /// Length in seconds.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// The highest rate.
    pub fn peak(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    /// Every request of the trace.
    pub fn total(&self) -> f64 {
        self.rates.iter().sum()
    }

    /// Reads a trace in any of the supported formats (see the module
    /// docs). `name` prefixes error messages.
    pub fn parse(text: &str, name: &str) -> Result<Trace, String> {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
        match first {
            Some(line) if combined_time(line).is_some() => Self::parse_access_log(text, name, LogFormat::Combined),
            Some(line) if alb_time(line).is_some() => Self::parse_access_log(text, name, LogFormat::Alb),
            _ => Self::parse_csv(text, name),
        }
    }

    /// `second,rate` rows: one per second, consecutive, rates ≥ 0.
    pub fn parse_csv(text: &str, name: &str) -> Result<Trace, String> {
        let mut rates = Vec::new();
        let mut previous: Option<u64> = None;
        let mut first_line = true;
        for (number, raw) in text.lines().enumerate() {
            let line_no = number + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let header =
                std::mem::replace(&mut first_line, false) && fields.first().is_some_and(|f| f.parse::<f64>().is_err());
            if header {
                continue; // `second,rate`
            }
            if fields.len() != 2 {
                return Err(format!(
                    "{name}:{line_no}: malformed line: expected two columns `second,rate`, found {line:?}"
                ));
            }
            let second: u64 = match fields[0].parse::<u64>() {
                Ok(s) => s,
                Err(_) => {
                    return Err(format!(
                        "{name}:{line_no}: malformed line: second {:?} is not a whole number ≥ 0",
                        fields[0]
                    ))
                }
            };
            let rate: f64 = fields[1].parse().map_err(|_| {
                format!("{name}:{line_no}: malformed line: rate {:?} is not a number (requests per second)", fields[1])
            })?;
            if !rate.is_finite() {
                return Err(format!("{name}:{line_no}: rate {:?} is not a finite number", fields[1]));
            }
            if rate < 0.0 {
                return Err(format!(
                    "{name}:{line_no}: negative rate {}: a trace gives requests per second, 0 or more",
                    fields[1]
                ));
            }
            if let Some(prev) = previous {
                if second <= prev {
                    return Err(format!(
                        "{name}:{line_no}: second {second} does not come after the previous row's {prev} (one row per second, in increasing order)"
                    ));
                }
                if second > prev + 1 {
                    let missing = if second == prev + 2 {
                        format!("second {} is missing", prev + 1)
                    } else {
                        format!("seconds {} to {} are missing", prev + 1, second - 1)
                    };
                    return Err(format!(
                        "{name}:{line_no}: gap in the trace: second {second} follows second {prev} ({missing}); give one row per second, with rate 0 where there were no requests"
                    ));
                }
            }
            previous = Some(second);
            rates.push(rate);
        }
        if rates.is_empty() {
            return Err(format!("{name}: no `second,rate` rows"));
        }
        Ok(Trace::new(rates, name))
    }

    fn parse_access_log(text: &str, name: &str, format: LogFormat) -> Result<Trace, String> {
        let mut times = Vec::new();
        for (number, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let time = match format {
                LogFormat::Combined => combined_time(line).ok_or_else(|| {
                    format!(
                        "{name}:{}: malformed line: not an access log line in combined format (no `[day/Mon/year:hh:mm:ss zone]` time): {:?}",
                        number + 1,
                        clip(line)
                    )
                })?,
                LogFormat::Alb => alb_time(line).ok_or_else(|| {
                    format!(
                        "{name}:{}: malformed line: not an ALB access log line (`type time elb …`): {:?}",
                        number + 1,
                        clip(line)
                    )
                })?,
            };
            times.push(time);
        }
        let (Some(&first), Some(&last)) = (times.iter().min(), times.iter().max()) else {
            return Err(format!("{name}: no requests in the access log"));
        };
        if last - first > MAX_LOG_SPAN_S {
            return Err(format!(
                "{name}: the log spans {} days; the simulator takes at most 31 days at once (split the log)",
                (last - first) / 86_400
            ));
        }
        let mut rates = vec![0.0; (last - first + 1) as usize];
        for t in times {
            rates[(t - first) as usize] += 1.0;
        }
        let kind = match format {
            LogFormat::Combined => "access log",
            LogFormat::Alb => "ALB access log",
        };
        Ok(Trace { rates, start_unix: Some(first), source: format!("{name} ({kind})") })
    }
}

#[derive(Debug, Clone, Copy)]
enum LogFormat {
    Combined,
    Alb,
}

fn clip(line: &str) -> String {
    line.chars().take(80).collect()
}

/// The time of a combined/common log line: `[10/Oct/2000:13:55:36 -0700]`,
/// as Unix seconds.
fn combined_time(line: &str) -> Option<i64> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let stamp = &line[open + 1..close];
    let (date_time, zone) = stamp.split_once(' ')?;
    let (date, clock) = date_time.split_once(':')?;
    let mut d = date.split('/');
    let day: u32 = d.next()?.parse().ok()?;
    let month = month_number(d.next()?)?;
    let year: i64 = d.next()?.parse().ok()?;
    let (h, m, s) = hms(clock)?;
    let zone = zone.trim();
    if zone.len() != 5 {
        return None;
    }
    let sign = match &zone[..1] {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let local = unix_from_civil(year, month, day)? + h * 3600 + m * 60 + s;
    Some(local - sign * (zh * 3600 + zm * 60))
}

/// The time of an ALB log line: the second field, `2026-07-02T22:23:00.186641Z`.
fn alb_time(line: &str) -> Option<i64> {
    let mut fields = line.split(' ');
    let kind = fields.next()?;
    if !matches!(kind, "http" | "https" | "h2" | "grpcs" | "ws" | "wss") {
        return None;
    }
    parse_iso8601(fields.next()?)
}

/// `2026-07-02T22:23:00Z`, `2026-07-02T22:23:00.186641Z` or with a
/// `+hh:mm` offset, as Unix seconds (fractions dropped).
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if d.next().is_some() {
        return None;
    }
    let (clock, offset) = if let Some(c) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = zone[1..].split_once(':')?;
        (c, sign * (zh.parse::<i64>().ok()? * 3600 + zm.parse::<i64>().ok()? * 60))
    };
    let clock = clock.split('.').next()?;
    let (h, m, s) = hms(clock)?;
    Some(unix_from_civil(year, month, day)? + h * 3600 + m * 60 + s - offset)
}

fn hms(clock: &str) -> Option<(i64, i64, i64)> {
    let mut c = clock.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let m: i64 = c.next()?.parse().ok()?;
    let s: i64 = c.next()?.parse().ok()?;
    (c.next().is_none() && h < 24 && m < 60 && s < 61).then_some((h, m, s))
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name)).map(|i| i as u32 + 1)
}

/// Unix seconds at 00:00 UTC of a calendar day (Howard Hinnant's
/// `days_from_civil`); `None` for an impossible date.
pub fn unix_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

/// `2026-01-05T00:00:00Z` for Unix seconds (UTC).
pub fn format_rfc3339(unix_s: i64) -> String {
    let c = crate::scaling::CivilTime::from_unix(unix_s);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", c.year, c.month, c.day, c.hour, c.minute, unix_s.rem_euclid(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(unix_from_civil(1970, 1, 1), Some(0));
        assert_eq!(unix_from_civil(2026, 1, 5), Some(1_767_571_200));
        assert_eq!(format_rfc3339(1_767_571_200 + 3661), "2026-01-05T01:01:01Z");
        assert_eq!(parse_iso8601("2026-01-05T01:01:01Z"), Some(1_767_571_200 + 3661));
        assert_eq!(parse_iso8601("2026-01-05T02:01:01.5+01:00"), Some(1_767_571_200 + 3661));
        assert_eq!(combined_time("x [05/Jan/2026:01:01:01 +0000] \"GET /\""), Some(1_767_571_200 + 3661));
        assert_eq!(combined_time("x [04/Jan/2026:17:01:01 -0800] \"GET /\""), Some(1_767_571_200 + 3661));
    }
}
