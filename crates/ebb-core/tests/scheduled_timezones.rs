//! Scheduled actions in a time zone, across the two daylight saving
//! changes of a year (Europe/Berlin 2026: clocks go 02:00 -> 03:00 on
//! 29 March and 03:00 -> 02:00 on 25 October; America/New_York 2026: 8
//! March and 1 November). Each case reads as a sentence.

use ebb_core::scaling::cron::Cron;

fn t(utc: &str) -> i64 {
    utc.parse::<jiff::Timestamp>().unwrap().as_second()
}

fn show(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s).unwrap().to_string()
}

fn cron(expr: &str, zone: &str) -> Cron {
    Cron::parse(expr).unwrap().in_zone(zone).unwrap()
}

#[test]
fn eight_every_morning_in_berlin_follows_the_wall_clock_across_both_changes() {
    let daily = cron("0 8 * * *", "Europe/Berlin");
    // 08:00 CET is 07:00 UTC; from the spring change on, 08:00 CEST is 06:00 UTC.
    assert_eq!(show(daily.next_after(t("2026-03-28T00:00:00Z")).unwrap()), "2026-03-28T07:00:00Z");
    assert_eq!(show(daily.next_after(t("2026-03-28T07:00:00Z")).unwrap()), "2026-03-29T06:00:00Z");
    // In autumn it goes back to 07:00 UTC on the day of the change.
    assert_eq!(show(daily.next_after(t("2026-10-24T07:00:00Z")).unwrap()), "2026-10-25T07:00:00Z");
    assert_eq!(daily.zone_name(), "Europe/Berlin");
}

#[test]
fn a_time_the_spring_change_skips_fires_once_at_the_instant_it_would_have_been() {
    let half_past_two = cron("30 2 * * *", "Europe/Berlin");
    // 02:30 does not exist on 29 March: it fires at 03:30 CEST (01:30 UTC),
    // once, and the next day at 02:30 CEST (00:30 UTC) again.
    let first = half_past_two.next_after(t("2026-03-28T12:00:00Z")).unwrap();
    assert_eq!(show(first), "2026-03-29T01:30:00Z");
    assert_eq!(show(half_past_two.next_after(first).unwrap()), "2026-03-30T00:30:00Z");
}

#[test]
fn a_time_the_autumn_change_repeats_fires_once_the_first_time() {
    let half_past_two = cron("30 2 * * *", "Europe/Berlin");
    // 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
    let first = half_past_two.next_after(t("2026-10-24T12:00:00Z")).unwrap();
    assert_eq!(show(first), "2026-10-25T00:30:00Z");
    // Not again an hour later: the next is the next day's 02:30 CET.
    assert_eq!(show(half_past_two.next_after(first).unwrap()), "2026-10-26T01:30:00Z");
    // Asked during the repeated hour, the latest firing is the first 02:30.
    assert_eq!(show(half_past_two.latest_at_or_before(t("2026-10-25T01:45:00Z")).unwrap()), "2026-10-25T00:30:00Z");
}

#[test]
fn weekdays_at_nine_in_new_york_across_both_us_changes() {
    let business = cron("0 9 * * MON-FRI", "America/New_York");
    // Friday 6 March 2026, 09:00 EST = 14:00 UTC; Monday 9 March, 09:00 EDT = 13:00 UTC.
    let friday = business.next_after(t("2026-03-06T00:00:00Z")).unwrap();
    assert_eq!(show(friday), "2026-03-06T14:00:00Z");
    assert_eq!(show(business.next_after(friday).unwrap()), "2026-03-09T13:00:00Z");
    // Friday 30 October, 09:00 EDT = 13:00 UTC; Monday 2 November, 09:00 EST = 14:00 UTC.
    let before = business.next_after(t("2026-10-30T00:00:00Z")).unwrap();
    assert_eq!(show(before), "2026-10-30T13:00:00Z");
    assert_eq!(show(business.next_after(before).unwrap()), "2026-11-02T14:00:00Z");
}

#[test]
fn utc_stays_the_default_and_an_unknown_zone_says_what_to_write() {
    let plain = Cron::parse("0 8 * * *").unwrap();
    assert_eq!(plain.zone_name(), "UTC");
    assert_eq!(show(plain.next_after(t("2026-03-28T00:00:00Z")).unwrap()), "2026-03-28T08:00:00Z");
    assert_eq!(Cron::parse("0 8 * * *").unwrap().in_zone("UTC").unwrap(), plain);
    let error = Cron::parse("0 8 * * *").unwrap().in_zone("Europe/Berlim").unwrap_err();
    assert!(error.contains("unknown time zone \"Europe/Berlim\"") && error.contains("Europe/Berlin"), "{error}");
}
