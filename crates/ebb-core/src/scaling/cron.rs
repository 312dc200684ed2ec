//! Five-field cron expressions for scheduled actions, evaluated in **UTC**
//! or in an IANA time zone ([`Cron::in_zone`]).
//!
//! `minute hour day-of-month month day-of-week`, as in crontab(5):
//!
//! | field        | values             | names            |
//! |--------------|--------------------|------------------|
//! | minute       | 0-59               |                  |
//! | hour         | 0-23               |                  |
//! | day of month | 1-31               |                  |
//! | month        | 1-12               | `JAN`-`DEC`      |
//! | day of week  | 0-7 (0 and 7 = Sun)| `SUN`-`SAT`      |
//!
//! Each field is `*` or a comma-separated list of items; an item is a value,
//! a range `a-b`, or either of those (or `*`) followed by a step `/n`
//! (`*/15`, `8-18/2`, `5/10` = from 5 to the end of the range every 10).
//! Names are case-insensitive and may be used in ranges (`MON-FRI`).
//!
//! As in Vixie cron, when both day-of-month and day-of-week are restricted
//! (neither starts with `*`), a day matches if **either** matches
//! (`0 0 1 * MON` = the 1st of the month and every Monday); otherwise both
//! must match (`0 0 */2 * FRI` = Fridays that fall on an odd day).
//!
//! UTC is the default. In a time zone (`timezone = "Europe/Berlin"`) the
//! fields are read on the zone's wall clock, with cron's rules across
//! daylight saving changes: a time the clocks skip (02:30 on the spring
//! day) fires at the instant 02:30 standard time would have been (03:30
//! summer time), and a time the clocks pass twice (02:30 on the autumn
//! day) fires once, the first time. The
//! zone database is compiled in (jiff's bundled tzdb): the core reads no
//! file and no clock; the caller passes Unix seconds.
//!
//! Why our own parser: five fields are a page of code, and the error can
//! point at the exact field that is wrong, which the config error needs.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    /// Bit n set = minute n matches.
    minutes: u64,
    hours: u32,
    /// Bit n set = day n (1-31) matches.
    days_of_month: u32,
    /// Bit n set = month n (1-12) matches.
    months: u16,
    /// Bit n set = weekday n (0 = Sunday .. 6 = Saturday) matches.
    days_of_week: u8,
    /// Day-of-month field did not start with `*` (Vixie's OR rule).
    dom_restricted: bool,
    dow_restricted: bool,
    /// The text as written, for messages.
    source: String,
    /// Read on this zone's wall clock; UTC when `None`.
    zone: Option<Zone>,
}

/// An IANA time zone, compared by name.
#[derive(Clone)]
struct Zone {
    name: String,
    tz: jiff::tz::TimeZone,
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

/// Why a cron expression does not parse, and where (a byte range of the
/// expression, so the config error can put its caret on the bad field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub message: String,
    pub at: Range<usize>,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CronError {}

/// How far back and forward [`Cron::latest_at_or_before`] and
/// [`Cron::next_after`] look: long enough for `0 0 29 2 *` (leap days
/// can be 8 years apart across 2100).
const SEARCH_DAYS: i64 = 366 * 9;

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// What a valid field looks like, for messages.
    example: &'static str,
}

const FIELDS: [Field; 5] = [
    Field { name: "minute", min: 0, max: 59, names: &[], example: "0, */15 or 0,30" },
    Field { name: "hour", min: 0, max: 23, names: &[], example: "8, 8-18 or */2" },
    Field { name: "day of month", min: 1, max: 31, names: &[], example: "1, 1-15 or *" },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
        example: "1-6, JAN or JAN-MAR",
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
        example: "MON-FRI, 1-5 or SAT,SUN",
    },
];

impl Cron {
    /// Parses a five-field expression.
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        // Fields with their byte ranges, so errors point at the field.
        let mut fields: Vec<(&str, Range<usize>)> = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    fields.push((&text[s..i], s..i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some((first, at)) = fields.first() {
            if first.starts_with('@') {
                return Err(CronError {
                    message: format!(
                        "{first} is not supported; write the five fields, e.g. \"0 0 * * *\" for every day at 00:00 UTC"
                    ),
                    at: at.clone(),
                });
            }
        }
        if fields.len() != 5 {
            return Err(CronError {
                message: format!(
                    "a cron expression has 5 fields (minute hour day-of-month month day-of-week), this one has {}; e.g. \"0 8 * * MON-FRI\" is 08:00 UTC on weekdays",
                    fields.len()
                ),
                at: 0..text.len(),
            });
        }
        let mut bits = [0u64; 5];
        for (i, (field_text, at)) in fields.iter().enumerate() {
            bits[i] = parse_field(field_text, &FIELDS[i]).map_err(|message| CronError { message, at: at.clone() })?;
        }
        // Day of week 7 is Sunday too.
        let mut dow = bits[4];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & 0x7f;
        }
        Ok(Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days_of_month: bits[2] as u32,
            months: bits[3] as u16,
            days_of_week: dow as u8,
            dom_restricted: !fields[2].0.starts_with('*'),
            dow_restricted: !fields[4].0.starts_with('*'),
            source: fields.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(" "),
            zone: None,
        })
    }

    /// The expression, with single spaces between fields.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The same schedule read on the wall clock of `zone`, an IANA name
    /// (`Europe/Berlin`, `America/New_York`; `UTC` is the default).
    pub fn in_zone(mut self, zone: &str) -> Result<Cron, String> {
        if zone == "UTC" {
            self.zone = None;
            return Ok(self);
        }
        let tz = jiff::tz::TimeZone::get(zone).map_err(|_| {
            format!("unknown time zone {zone:?}; use an IANA name like \"Europe/Berlin\" or \"America/New_York\" (UTC is the default)")
        })?;
        self.zone = Some(Zone { name: zone.to_string(), tz });
        Ok(self)
    }

    /// `UTC` or the zone's IANA name.
    pub fn zone_name(&self) -> &str {
        self.zone.as_ref().map_or("UTC", |z| z.name.as_str())
    }

    /// Whether the minute containing `unix_s` matches (on the zone's wall
    /// clock).
    pub fn matches(&self, unix_s: i64) -> bool {
        let t = match &self.zone {
            None => CivilTime::from_unix(unix_s),
            Some(zone) => match local(unix_s, &zone.tz) {
                Some(t) => t,
                None => return false,
            },
        };
        self.matches_day(&t) && self.hours & (1 << t.hour) != 0 && self.minutes & (1 << t.minute) != 0
    }

    fn matches_day(&self, t: &CivilTime) -> bool {
        if self.months & (1 << t.month) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << t.day) != 0;
        let dow = self.days_of_week & (1 << t.weekday) != 0;
        // Vixie cron: OR only when both fields are restricted; a field
        // starting with `*` (even `*/2`) makes it AND.
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first matching minute strictly after `unix_s`, as Unix seconds
    /// (a multiple of 60); `None` if there is none within nine years
    /// (`0 0 31 2 *` never matches).
    pub fn next_after(&self, unix_s: i64) -> Option<i64> {
        if let Some(zone) = &self.zone {
            return self.next_after_in(unix_s, &zone.tz);
        }
        let start_minute = unix_s.div_euclid(60) + 1;
        let first_day = start_minute.div_euclid(1440);
        for day in first_day..first_day + SEARCH_DAYS {
            if !self.matches_day(&CivilTime::from_unix(day * 86_400)) {
                continue;
            }
            let from = if day == first_day { start_minute.rem_euclid(1440) } else { 0 };
            if let Some(m) = (from..1440).find(|&m| self.matches_minute_of_day(m)) {
                return Some((day * 1440 + m) * 60);
            }
        }
        None
    }

    /// The last matching minute at or before `unix_s` (the start of that
    /// minute, as Unix seconds); `None` if none within nine years.
    pub fn latest_at_or_before(&self, unix_s: i64) -> Option<i64> {
        if let Some(zone) = &self.zone {
            return self.latest_at_or_before_in(unix_s, &zone.tz);
        }
        let last_minute = unix_s.div_euclid(60);
        let last_day = last_minute.div_euclid(1440);
        for day in (last_day - SEARCH_DAYS..=last_day).rev() {
            if !self.matches_day(&CivilTime::from_unix(day * 86_400)) {
                continue;
            }
            let to = if day == last_day { last_minute.rem_euclid(1440) } else { 1439 };
            if let Some(m) = (0..=to).rev().find(|&m| self.matches_minute_of_day(m)) {
                return Some((day * 1440 + m) * 60);
            }
        }
        None
    }

    /// [`next_after`](Self::next_after) on a zone's wall clock: local days
    /// and minutes in order, each matching one turned into its instant
    /// (a skipped time: the instant after the jump; a repeated one: the
    /// first), the first after `unix_s`.
    fn next_after_in(&self, unix_s: i64, tz: &jiff::tz::TimeZone) -> Option<i64> {
        let now = jiff::Timestamp::from_second(unix_s).ok()?.to_zoned(tz.clone()).datetime();
        let first_day = now.date();
        let start = i64::from(now.hour()) * 60 + i64::from(now.minute()) + 1;
        for offset in 0..SEARCH_DAYS {
            let date = first_day.checked_add(jiff::Span::new().days(offset)).ok()?;
            if !self.matches_day(&civil_day(date)) {
                continue;
            }
            let from = if offset == 0 { start } else { 0 };
            for m in (from..1440).filter(|&m| self.matches_minute_of_day(m)) {
                let at = instant(date, m, tz)?;
                if at > unix_s {
                    return Some(at);
                }
            }
        }
        None
    }

    /// [`latest_at_or_before`](Self::latest_at_or_before) on a zone's
    /// wall clock.
    fn latest_at_or_before_in(&self, unix_s: i64, tz: &jiff::tz::TimeZone) -> Option<i64> {
        let now = jiff::Timestamp::from_second(unix_s).ok()?.to_zoned(tz.clone()).datetime();
        let last_day = now.date();
        let last = i64::from(now.hour()) * 60 + i64::from(now.minute());
        for offset in 0..SEARCH_DAYS {
            let date = last_day.checked_sub(jiff::Span::new().days(offset)).ok()?;
            if !self.matches_day(&civil_day(date)) {
                continue;
            }
            let to = if offset == 0 { last } else { 1439 };
            for m in (0..=to).rev().filter(|&m| self.matches_minute_of_day(m)) {
                let at = instant(date, m, tz)?;
                if at <= unix_s {
                    return Some(at);
                }
            }
        }
        None
    }

    fn matches_minute_of_day(&self, m: i64) -> bool {
        self.hours & (1 << (m / 60)) != 0 && self.minutes & (1 << (m % 60)) != 0
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.source)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Cron {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Cron, CronError> {
        Cron::parse(s)
    }
}

/// One field: a list of items, each a value, range or `*`, with an
/// optional step. Returns the set of matching values as bits.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{} field {text:?} has an empty list item; e.g. {}", field.name, field.example));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                    format!("{} field {text:?}: the step after / must be a whole number above 0, e.g. */15", field.name)
                })?;
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, field, text)?, value(b, field, text)?);
            if a > b {
                return Err(format!(
                    "{} field {text:?}: range {range} runs backwards; write the smaller value first, e.g. {b}-{a}",
                    field.name
                ));
            }
            (a, b)
        } else {
            let a = value(range, field, text)?;
            // `5/10` means from 5 to the end of the range, every 10.
            (a, if item.contains('/') { field.max } else { a })
        };
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// One value: a number in the field's range, or a name (`MON`, `jan`).
fn value(s: &str, field: &Field, text: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        if n < field.min || n > field.max {
            return Err(format!(
                "{} field {text:?}: {n} is out of range; {} is {} to {}",
                field.name, field.name, field.min, field.max
            ));
        }
        return Ok(n);
    }
    if let Some(i) = field.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + field.min);
    }
    let names = if field.names.is_empty() {
        String::new()
    } else {
        format!(" or a name {}-{}", field.names[0], field.names[field.names.len() - 1])
    };
    Err(format!(
        "{} field {text:?}: {s:?} is not a number from {} to {}{names}; e.g. {}",
        field.name, field.min, field.max, field.example
    ))
}

/// The wall-clock time of `unix_s` in `tz`.
fn local(unix_s: i64, tz: &jiff::tz::TimeZone) -> Option<CivilTime> {
    let t = jiff::Timestamp::from_second(unix_s).ok()?.to_zoned(tz.clone()).datetime();
    let mut civil = civil_day(t.date());
    civil.hour = t.hour() as u32;
    civil.minute = t.minute() as u32;
    Some(civil)
}

/// A local date as a [`CivilTime`] at 00:00, for the day fields.
fn civil_day(date: jiff::civil::Date) -> CivilTime {
    CivilTime {
        year: i64::from(date.year()),
        month: date.month() as u32,
        day: date.day() as u32,
        hour: 0,
        minute: 0,
        weekday: date.weekday().to_sunday_zero_offset() as u32,
    }
}

/// The instant of local minute `m` of `date` in `tz`: a time the clocks
/// skip is the instant after the jump, a time they pass twice the first
/// (jiff's "compatible" rule, which is cron's).
fn instant(date: jiff::civil::Date, m: i64, tz: &jiff::tz::TimeZone) -> Option<i64> {
    let time = date.at((m / 60) as i8, (m % 60) as i8, 0, 0);
    Some(time.to_zoned(tz.clone()).ok()?.timestamp().as_second())
}

/// A UTC calendar time, at minute resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    /// 0 = Sunday .. 6 = Saturday.
    pub weekday: u32,
}

impl CivilTime {
    /// Howard Hinnant's `civil_from_days`, on Unix seconds.
    pub fn from_unix(unix_s: i64) -> CivilTime {
        let days = unix_s.div_euclid(86_400);
        let secs = unix_s.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        CivilTime {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs % 3600 / 60) as u32,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

impl fmt::Display for CivilTime {
    /// `2026-11-02 08:00 UTC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02} {:02}:{:02} UTC", self.year, self.month, self.day, self.hour, self.minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-02 00:00 UTC, a Monday.
    const MONDAY: i64 = 1_793_577_600;

    fn at(days: i64, hour: i64, minute: i64) -> i64 {
        MONDAY + days * 86_400 + hour * 3600 + minute * 60
    }

    #[test]
    fn civil_time_matches_known_dates() {
        let t = CivilTime::from_unix(MONDAY);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2026, 11, 2, 1));
        assert_eq!(CivilTime::from_unix(0).to_string(), "1970-01-01 00:00 UTC");
        assert_eq!(CivilTime::from_unix(951_782_400).to_string(), "2000-02-29 00:00 UTC");
        assert_eq!(CivilTime::from_unix(-1).to_string(), "1969-12-31 23:59 UTC");
        assert_eq!(CivilTime::from_unix(at(5, 8, 30)).weekday, 6, "Saturday");
    }

    #[test]
    fn business_hours() {
        let c = Cron::parse("0 8 * * MON-FRI").unwrap();
        assert!(c.matches(at(0, 8, 0)));
        assert!(c.matches(at(0, 8, 0) + 59), "the whole minute matches");
        assert!(!c.matches(at(0, 8, 1)));
        assert!(c.matches(at(4, 8, 0)), "Friday");
        assert!(!c.matches(at(5, 8, 0)), "Saturday");
        assert!(!c.matches(at(6, 8, 0)), "Sunday");
        assert_eq!(c.next_after(at(0, 8, 0)), Some(at(1, 8, 0)));
        assert_eq!(c.next_after(at(4, 9, 0)), Some(at(7, 8, 0)), "Friday evening -> Monday");
        assert_eq!(c.latest_at_or_before(at(6, 12, 0)), Some(at(4, 8, 0)), "Sunday -> last Friday");
        assert_eq!(c.latest_at_or_before(at(0, 8, 0) + 30), Some(at(0, 8, 0)));
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        let c = Cron::parse("*/15 8-18/2 * jan,Mar-may 0,6").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(c.hours, (8..=18).step_by(2).fold(0, |b, h| b | 1 << h));
        assert_eq!(c.months, 1 << 1 | 1 << 3 | 1 << 4 | 1 << 5);
        assert_eq!(c.days_of_week, 1 | 1 << 6);
        assert_eq!(Cron::parse("5/20 * * * *").unwrap().minutes, 1 << 5 | 1 << 25 | 1 << 45);
        assert_eq!(Cron::parse("0 0 * * 7").unwrap().days_of_week, 1, "7 is Sunday");
        assert_eq!(Cron::parse("0 0 * * 5-7").unwrap().days_of_week, 1 | 1 << 5 | 1 << 6);
        assert_eq!(Cron::parse("  0   0 *  * *  ").unwrap().as_str(), "0 0 * * *");
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        let c = Cron::parse("0 0 13 * FRI").unwrap();
        assert!(c.matches(at(4, 0, 0)), "a Friday that is not the 13th");
        assert!(c.matches(at(11, 0, 0)), "Friday 13 Nov");
        assert!(!c.matches(at(3, 0, 0)));
        let c = Cron::parse("0 0 */2 * FRI").unwrap();
        assert!(!c.matches(at(4, 0, 0)), "a field starting with * makes it AND: Friday 6 Nov is not odd");
        assert!(c.matches(at(11, 0, 0)), "Friday 13 Nov is odd");
    }

    #[test]
    fn impossible_dates_give_none() {
        let c = Cron::parse("0 0 31 2 *").unwrap();
        assert_eq!(c.next_after(MONDAY), None);
        assert_eq!(c.latest_at_or_before(MONDAY), None);
        let leap = Cron::parse("0 0 29 2 *").unwrap();
        assert_eq!(CivilTime::from_unix(leap.next_after(MONDAY).unwrap()).to_string(), "2028-02-29 00:00 UTC");
    }

    #[test]
    fn errors_say_which_field_and_where() {
        let e = Cron::parse("0 25 * * *").unwrap_err();
        assert_eq!(e.at, 2..4);
        assert!(e.message.starts_with("hour field \"25\": 25 is out of range"), "{}", e.message);
        let e = Cron::parse("0 8 * * MON-FRY").unwrap_err();
        assert_eq!(e.at, 8..15);
        assert!(e.message.contains("\"FRY\" is not a number from 0 to 7 or a name SUN-SAT"), "{}", e.message);
        let e = Cron::parse("0 8 * *").unwrap_err();
        assert!(e.message.contains("has 5 fields") && e.message.contains("this one has 4"), "{}", e.message);
        assert!(Cron::parse("@daily").unwrap_err().message.contains("not supported"));
        assert!(Cron::parse("*/0 * * * *").unwrap_err().message.contains("step"));
        assert!(Cron::parse("0 18-8 * * *").unwrap_err().message.contains("backwards"));
        assert!(Cron::parse("0,,5 * * * *").unwrap_err().message.contains("empty"));
        assert!(Cron::parse("0 0 0 * *").unwrap_err().message.contains("out of range"));
    }
}
