//! Traffic inputs of the simulator: CSV traces, access logs, their errors.

use ebb_core::sim::Trace;

#[test]
fn csv_rows_become_one_rate_per_second() {
    let t = Trace::parse("second,rate\n0,10\n1,12.5\n\n# a comment\n2,0\n", "day.csv").unwrap();
    assert_eq!(t.rates, vec![10.0, 12.5, 0.0]);
    assert_eq!((t.start_unix, t.source.as_str()), (None, "day.csv"));
    // Without a header, and counted from the first row whatever its number.
    let t = Trace::parse("100,1\n101,2\n", "t.csv").unwrap();
    assert_eq!(t.rates, vec![1.0, 2.0]);
}

#[test]
fn a_malformed_line_is_reported_with_its_number() {
    let err = |text: &str| Trace::parse(text, "day.csv").unwrap_err();
    assert_eq!(
        err("second,rate\n0,10\n1,2,3\n"),
        "day.csv:3: malformed line: expected two columns `second,rate`, found \"1,2,3\""
    );
    assert_eq!(err("0,10\nx,1\n"), "day.csv:2: malformed line: second \"x\" is not a whole number ≥ 0");
    assert_eq!(err("0,10\n1,lots\n"), "day.csv:2: malformed line: rate \"lots\" is not a number (requests per second)");
    assert_eq!(err("0,10\n1.5,3\n"), "day.csv:2: malformed line: second \"1.5\" is not a whole number ≥ 0");
    assert_eq!(err("0,10\n1\n"), "day.csv:2: malformed line: expected two columns `second,rate`, found \"1\"");
    assert_eq!(err("# nothing\n"), "day.csv: no `second,rate` rows");
    assert_eq!(err("0,inf\n"), "day.csv:1: rate \"inf\" is not a finite number");
}

#[test]
fn gaps_and_negative_rates_are_rejected() {
    let err = |text: &str| Trace::parse(text, "day.csv").unwrap_err();
    assert_eq!(err("0,10\n1,-3\n"), "day.csv:2: negative rate -3: a trace gives requests per second, 0 or more");
    assert_eq!(
        err("0,10\n1,10\n5,10\n"),
        "day.csv:3: gap in the trace: second 5 follows second 1 (seconds 2 to 4 are missing); give one row per second, with rate 0 where there were no requests"
    );
    assert!(err("0,10\n2,10\n").contains("(second 1 is missing)"));
    assert_eq!(
        err("0,10\n1,1\n1,1\n"),
        "day.csv:3: second 1 does not come after the previous row's 1 (one row per second, in increasing order)"
    );
}

#[test]
fn combined_access_logs_are_counted_per_second() {
    let log = r#"127.0.0.1 - - [05/Jan/2026:08:00:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8"
127.0.0.1 - - [05/Jan/2026:08:00:00 +0000] "GET /api HTTP/1.1" 200 12 "-" "curl/8"
10.0.0.2 - bob [05/Jan/2026:09:00:03 +0100] "POST /x HTTP/1.1" 500 0 "-" "-"
127.0.0.1 - - [05/Jan/2026:08:00:01 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8"
"#;
    let t = Trace::parse(log, "access.log").unwrap();
    assert_eq!(t.rates, vec![2.0, 1.0, 0.0, 1.0], "lines may come out of order; empty seconds are 0");
    assert_eq!(t.start_unix, Some(1_767_571_200 + 8 * 3600));
    assert_eq!(t.source, "access.log (access log)");

    let bad = "127.0.0.1 - - [05/Jan/2026:08:00:00 +0000] \"GET /\" 200 1\nnot a log line\n";
    assert_eq!(
        Trace::parse(bad, "access.log").unwrap_err(),
        "access.log:2: malformed line: not an access log line in combined format (no `[day/Mon/year:hh:mm:ss zone]` time): \"not a log line\""
    );
}

#[test]
fn alb_access_logs_are_counted_per_second() {
    let log = "\
http 2026-01-05T08:00:00.186641Z app/my-lb/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/7.46.0\" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 \"Root=1-58337262-36d228ad5d99923122bbe354\" \"-\" \"-\" 0 2026-01-05T08:00:00.185000Z \"forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\"
https 2026-01-05T08:00:02.5Z app/my-lb/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.086 0.048 0.037 200 200 0 57 \"GET https://www.example.com:443/ HTTP/1.1\" \"curl/7.46.0\" - -
";
    let t = Trace::parse(log, "alb.log").unwrap();
    assert_eq!(t.rates, vec![1.0, 0.0, 1.0]);
    assert_eq!(t.start_unix, Some(1_767_571_200 + 8 * 3600));
    let bad = format!("{log}h2 yesterday app/x\n");
    assert!(Trace::parse(&bad, "alb.log")
        .unwrap_err()
        .starts_with("alb.log:3: malformed line: not an ALB access log line"));
}
