//! Other load tools' spellings on `ebb load`'s command line: mapped where
//! they mean an ebb option, refused with the ebb spelling where they do
//! not, so a habit from hey, wrk, wrk2 or ab never turns into a silent
//! misreading (hey's `-disable-keepalive` read as `-d isable-keepalive`, a
//! body on every GET; wrk's `-d 3s` read as a body `3s`).

/// Options of `ebb load` that take a value (their next token is not an
/// option, whatever it looks like).
const TAKES_VALUE: &[&str] = &[
    "-n",
    "-c",
    "-q",
    "-z",
    "-m",
    "-H",
    "-d",
    "-D",
    "-T",
    "--requests",
    "--concurrency",
    "--worker-rate",
    "--rate",
    "--duration",
    "--method",
    "--header",
    "--body",
    "--body-file",
    "--content-type",
    "--timeout",
    "--stages",
    "--trace",
    "--threads",
    "--output-csv",
    "--ebb",
    "-f",
    "--file",
    "--config",
    "--log-format",
];

/// `ebb load`'s long options, for "did you mean".
const LONG: &[&str] = &[
    "requests",
    "concurrency",
    "worker-rate",
    "rate",
    "duration",
    "method",
    "header",
    "body",
    "body-file",
    "content-type",
    "timeout",
    "disable-keepalive",
    "stages",
    "trace",
    "threads",
    "json",
    "output-csv",
    "ebb",
    "help",
];

/// The arguments after `load`, with other tools' spellings mapped, or the
/// first one refused with what to write instead.
pub fn translate(args: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let next = args.get(i + 1).cloned();
        let take_next = |out: &mut Vec<String>, as_: &str| -> Result<(), String> {
            let value = next.clone().ok_or_else(|| format!("{arg} needs a value"))?;
            out.push(as_.to_string());
            out.push(value);
            Ok(())
        };
        match arg {
            // hey
            "-disable-keepalive" => out.push("--disable-keepalive".into()),
            "-host" => {
                let host = next.clone().ok_or("-host needs a value")?;
                out.push("-H".into());
                out.push(format!("Host: {host}"));
                i += 1;
            }
            "-h2" => return Err("-h2 (hey): ebb load sends HTTP/1.1; it has no HTTP/2 client".into()),
            "-cpus" => return Err("-cpus (hey): write --threads N".into()),
            "-o" => {
                return Err("-o (hey): write --output-csv FILE for per-second rows, or --json for the summary".into())
            }
            "-x" => return Err("-x (hey's proxy): ebb load connects to the URL's host itself; not supported".into()),
            // wrk, wrk2
            "--latency" => {} // the latency distribution is always printed
            "-R" => {
                take_next(&mut out, "--rate")?;
                i += 1;
            }
            "-t" => {
                return Err(
                    "-t is wrk's threads and ab's time limit: write --threads N for the one, -z 30s for the other"
                        .into(),
                )
            }
            // ab
            "-k" => {} // keep-alive is the default (--disable-keepalive turns it off)
            "-p" => {
                take_next(&mut out, "-D")?;
                if !has_method(args) {
                    out.push("-m".into());
                    out.push("POST".into());
                }
                i += 1;
            }
            _ if TAKES_VALUE.contains(&arg)
                || TAKES_VALUE.iter().any(|o| o.starts_with("--") && arg.starts_with(&format!("{o}="))) =>
            {
                out.push(arg.to_string());
                if TAKES_VALUE.contains(&arg) {
                    if let Some(value) = next {
                        out.push(value);
                        i += 1;
                    }
                }
            }
            _ if arg.len() > 2
                && arg.starts_with('-')
                && !arg.starts_with("--")
                && arg[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && arg[1..].chars().filter(|c| c.is_ascii_alphabetic()).count() > 1 =>
            {
                let word = &arg[1..];
                let hint = match LONG.iter().find(|l| **l == word) {
                    Some(long) => format!("write --{long}"),
                    None => "see `ebb load --help`".to_string(),
                };
                return Err(format!(
                    "{arg} is not an ebb load option (one dash, several letters: another tool's spelling?); {hint}"
                ));
            }
            _ => out.push(arg.to_string()),
        }
        i += 1;
    }
    check_body_on_get(&out)?;
    Ok(out)
}

fn has_method(args: &[String]) -> bool {
    args.iter().any(|a| a == "-m" || a == "--method" || a.starts_with("--method="))
}

/// A body with no method given would go on a GET: almost always a flag
/// misread (wrk's `-d 3s` is a duration). An explicit `-m` sends it.
fn check_body_on_get(args: &[String]) -> Result<(), String> {
    if has_method(args) {
        return Ok(());
    }
    let body = args.iter().position(|a| a == "-d" || a == "--body").and_then(|i| args.get(i + 1));
    if let Some(value) = body {
        let duration = humantime::parse_duration(value).is_ok();
        return Err(match duration {
            true => format!("-d {value} would send {value:?} as the body of a GET; did you mean -z {value} (how long to run, wrk's -d)? To send that body, give the method: -m POST (or -m GET)"),
            false => format!("-d {value:?} would send a body on a GET; give the method to send it: -m POST (or -m GET)"),
        });
    }
    if args.iter().any(|a| a == "-D" || a == "--body-file") {
        return Err("-D sends a body file on a GET; give the method: -m POST (or -m GET)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::translate;

    fn t(args: &[&str]) -> Result<Vec<String>, String> {
        translate(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn other_tools_spellings_map_onto_ebb_options() {
        assert_eq!(t(&["-disable-keepalive", "http://x/"]).unwrap(), ["--disable-keepalive", "http://x/"]);
        assert_eq!(t(&["-host", "a.test", "http://x/"]).unwrap(), ["-H", "Host: a.test", "http://x/"]);
        assert_eq!(t(&["-R", "700", "--latency", "http://x/"]).unwrap(), ["--rate", "700", "http://x/"]);
        assert_eq!(t(&["-k", "-p", "post.json", "http://x/"]).unwrap(), ["-D", "post.json", "-m", "POST", "http://x/"]);
        assert_eq!(t(&["-c", "8", "-z", "30s", "http://x/"]).unwrap(), ["-c", "8", "-z", "30s", "http://x/"]);
        assert_eq!(
            t(&["-m", "POST", "-d", "-x", "http://x/"]).unwrap(),
            ["-m", "POST", "-d", "-x", "http://x/"],
            "a value is a value"
        );
    }

    #[test]
    fn misread_flags_are_refused_with_the_ebb_spelling() {
        let wrk = t(&["-d", "3s", "http://x/"]).unwrap_err();
        assert!(wrk.contains("did you mean -z 3s"), "{wrk}");
        assert!(t(&["-d", "{}", "http://x/"]).unwrap_err().contains("give the method"));
        assert!(t(&["-t", "4", "http://x/"]).unwrap_err().contains("--threads N"));
        assert!(t(&["-h2", "http://x/"]).unwrap_err().contains("HTTP/1.1"));
        assert!(t(&["-o", "csv", "http://x/"]).unwrap_err().contains("--output-csv"));
        assert!(t(&["-json", "http://x/"]).unwrap_err().contains("write --json"));
        assert_eq!(
            t(&["-m", "GET", "-d", "x", "http://x/"]).unwrap().len(),
            5,
            "an explicit GET with a body is allowed"
        );
    }
}
