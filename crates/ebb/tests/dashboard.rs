//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver) with fantoccini. It loads the page, sees
//! the replicas, sets desired to 3 through the page's control, sees the
//! third replica appear and the scaling marker on every graph, clicks a
//! marker and reads its reason in the list, then saturates the fleet
//! (`max_in_flight = 1`, more concurrent clients than replicas) and sees the
//! banner, offered vs served and the queue time, and the banner go away
//! once the load stops. It saves screenshots (taken while saturated) to
//! `target/ebb-dashboard.png` (laptop) and `target/ebb-dashboard-phone.png`
//! (a CI artifact).
//!
//! Prints a `SKIP:` line when chromium or chromedriver is missing
//! (`scripts/install-test-deps` installs both; CI runs that first).

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use support::*;

/// Finds a program on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// chromedriver on a loopback port, in its own process group: dropping the
/// guard kills it and every browser it started.
struct Chromedriver {
    child: Child,
    addr: SocketAddr,
}

impl Chromedriver {
    fn start(path: &Path, log: &Path) -> Chromedriver {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let driver = Chromedriver { child, addr };
        wait_for("chromedriver to listen", Duration::from_secs(20), || TcpStream::connect(addr).ok());
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // killpg, never `kill -TERM -PGID`: procps-ng's kill reads `-1234`
        // as signal options and signals process group 1 (or every process).
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Sends a little traffic through the balancer in the background (bounded:
/// it stops after `duration`), so the graphs have something to show.
fn traffic(listen: SocketAddr, duration: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let end = Instant::now() + duration;
        let mut n = 0u64;
        while Instant::now() < end {
            let path = if n & 3 == 0 { "/candidates" } else { "/api" };
            let _ = http(listen, "GET", path, None);
            n += 1;
            std::thread::sleep(Duration::from_millis(25));
        }
    })
}

/// Saturates the fleet (bounded: it stops after `duration`): `clients`
/// concurrent loops of slow requests against replicas that each take one
/// at a time, so requests queue at the balancer (and, past `max_queue`, are
/// shed).
fn saturate(listen: SocketAddr, clients: usize, duration: Duration) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    match http(listen, "GET", "/work?sleep_ms=150", None) {
                        Ok(r) if r.status == 200 => {}
                        _ => std::thread::sleep(Duration::from_millis(40)),
                    }
                }
            })
        })
        .collect()
}

/// A self-signed certificate for `name` that expires `left` from now.
fn certificate_expiring_in(dir: &Path, name: &str, left: Duration) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + (now - Duration::from_secs(86400));
    params.not_after = epoch + (now + left);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replica rows in the page's table that are in service.
async fn rows_in_service(client: &Client) -> usize {
    client
        .find_all(Locator::Css(r#"#replicas tbody tr[data-state="in_service"]"#))
        .await
        .map(|rows| rows.len())
        .unwrap_or(0)
}

#[test]
fn the_dashboard_scales_the_fleet_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        println!("SKIP: dashboard browser test: chromium and chromedriver are needed (Debian: chromium, chromium-driver; scripts/install-test-deps installs them)");
        return;
    };
    // One request at a time per replica, two may wait: a few concurrent
    // clients saturate the fleet at once (queued, then shed).
    let proxy = "\n[service.web.proxy]\nmax_in_flight = 1\nmax_queue = 2\nqueue_timeout = \"2s\"";
    // A TLS listener in front of it, with a certificate that has 10 days
    // left: its panel shows the route and the days left, highlighted.
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) =
        certificate_expiring_in(certs.path(), "shop.example.test", Duration::from_secs(10 * 86400 + 6 * 3600));
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "{proxy}\n\n[listener.public]\nlisten = \"{tls_addr}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[listener.public.route]]\nhost = \"shop.example.test\"\npath_prefix = \"/api\"\nservice = \"web\"\n",
        cert.display(),
        key.display()
    );
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 2 }", &extra));
    ebb.wait_in_service(2, Duration::from_secs(20));
    let load = traffic(ebb.listen, Duration::from_secs(25));

    let profile = tempfile::tempdir().unwrap();
    let driver = Chromedriver::start(&chromedriver, &ebb.dir.path().join("chromedriver.log"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Signed in as a user does: the one-time link `ebb dashboard` prints.
    let out = ebb.cli(&["dashboard"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let login = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("http://"))
        .expect("a login link")
        .to_string();
    let shots = target_dir();
    let result = runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium.to_str().unwrap(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--window-size=1400,1500",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{}", driver.addr))
            .await
            .expect("a WebDriver session with chromium");
        let outcome = drive(&client, &login, ebb.admin, ebb.listen, &shots).await;
        let _ = client.close().await;
        outcome
    });
    let _ = load.join();
    drop(driver);
    result.unwrap_or_else(|e| panic!("{e}\n--- ebb up ---\n{}", ebb.up_log()));
    // The page's scale is the fleet's scale (saturation may have added a
    // fourth replica since: demand sizing scales out on a queue).
    wait_for("3 or more replicas in service", Duration::from_secs(5), || {
        let n = ebb.replicas().iter().filter(|r| r["state"] == "in_service").count();
        (n >= 3).then_some(())
    });
    assert!(
        ebb.events()
            .iter()
            .any(|e| e["kind"] == "scaled" && e["to"] == 3 && e["reason"].as_str().unwrap_or("").contains("dashboard")),
        "the scale is recorded as coming from the dashboard"
    );
}

/// The text of the first element `css` finds, via textContent (WebDriver's
/// text is empty for SVG and for hidden elements).
async fn text_of(client: &Client, css: &str) -> Option<String> {
    let script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null";
    client.execute(script, vec![css.into()]).await.ok()?.as_str().map(str::to_string)
}

/// The banner: `Some((kind, text))` while it shows, `None` when hidden.
async fn banner(client: &Client) -> Result<Option<(String, String)>, String> {
    let script = "const b = document.getElementById('banner'); \
                  return b.hidden || b.offsetParent === null ? null : [b.dataset.kind, b.textContent]";
    let v = client.execute(script, vec![]).await.map_err(|e| e.to_string())?;
    Ok(v.as_array().map(|a| {
        (
            a[0].as_str().unwrap_or("").to_string(),
            a[1].as_str().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" "),
        )
    }))
}

/// Whether ebb's status says the host is full (the banner then shows for
/// that, rightly, on a busy test machine).
fn host_full(admin: SocketAddr) -> bool {
    http(admin, "GET", "/api/v1/status", None)
        .ok()
        .map(|r| r.json()["services"][0]["host"]["full"] == true)
        .unwrap_or(false)
}

/// The banner is hidden, or shows only that the host is full (and status
/// agrees).
async fn banner_quiet(client: &Client, admin: SocketAddr) -> Option<()> {
    match banner(client).await.ok()? {
        None => Some(()),
        Some((kind, _)) if kind == "host" && host_full(admin) => Some(()),
        Some(_) => None,
    }
}

async fn drive(
    client: &Client,
    login: &str,
    admin: SocketAddr,
    listen: SocketAddr,
    shots: &Path,
) -> Result<(), String> {
    // The link sets the session cookie and leads to the dashboard.
    client.goto(login).await.map_err(|e| e.to_string())?;
    assert_eq!(client.title().await.map_err(|e| e.to_string())?, "ebb");
    let at = client.current_url().await.map_err(|e| e.to_string())?;
    assert_eq!(at.path(), "/", "the login link leads to the dashboard: {at}");

    // The replicas are there, and the controls are unlocked (by the session
    // cookie: the page itself never holds the token).
    eventually("two replicas in service in the table", Duration::from_secs(20), || async {
        (rows_in_service(client).await == 2).then_some(())
    })
    .await;
    // The listener's panel: its address, TLS, its route and the
    // certificate with its days left, highlighted (under 14 days).
    let panel = r#"#listener-panels .listener[data-listener="public"]"#;
    let text = eventually("the listener panel with its certificate", Duration::from_secs(15), || async {
        let text = text_of(client, panel).await?;
        text.contains("days left").then_some(text)
    })
    .await;
    println!("listener panel: {text}");
    assert!(text.contains("TLS") && !text.contains("no TLS"), "TLS on: {text}");
    assert!(text.contains("host shop.example.test") && text.contains("path /api*"), "the route: {text}");
    assert!(text.contains("→ web"), "the route's service: {text}");
    assert!(text.contains("shop.example.test") && text.contains("file"), "the certificate and its source: {text}");
    assert!(text.contains("10 days left"), "the days left: {text}");
    let soon = format!("{panel} li.cert.soon");
    assert!(client.find(Locator::Css(&soon)).await.is_ok(), "a certificate under 14 days is highlighted");

    // Nothing queues: no banner.
    eventually("no banner on a calm fleet", Duration::from_secs(10), || banner_quiet(client, admin)).await;
    let set = client.find(Locator::Id("desired-set")).await.map_err(|e| e.to_string())?;
    assert!(set.is_enabled().await.map_err(|e| e.to_string())?, "the controls should be unlocked");

    // Set desired to 3 through the page.
    let input = client.find(Locator::Id("desired-input")).await.map_err(|e| e.to_string())?;
    input.clear().await.map_err(|e| e.to_string())?;
    input.send_keys("3").await.map_err(|e| e.to_string())?;
    set.click().await.map_err(|e| e.to_string())?;
    let msg = eventually("the page to confirm the change", Duration::from_secs(10), || async {
        let text = client.find(Locator::Id("action-msg")).await.ok()?.text().await.ok()?;
        text.contains("→ 3").then_some(text)
    })
    .await;
    println!("the page says: {msg}");

    // The third replica appears in the table, the event in the log, and a
    // scaling marker (with its reason as tooltip) on the replicas graph.
    eventually("three replicas in service in the table", Duration::from_secs(30), || async {
        (rows_in_service(client).await == 3).then_some(())
    })
    .await;
    eventually("the scaled event in the event log", Duration::from_secs(10), || async {
        let items = client.find_all(Locator::Css(r#"#events li[data-kind="scaled"]"#)).await.ok()?;
        (!items.is_empty()).then_some(())
    })
    .await;
    let tooltip = eventually("a scaling marker on the replicas graph", Duration::from_secs(10), || async {
        let marker = client.find(Locator::Css("#c-replicas polygon.marker title")).await.ok()?;
        let text =
            client.execute("return arguments[0].textContent", vec![serde_json::to_value(&marker).ok()?]).await.ok()?;
        text.as_str().filter(|t| t.contains("2 → 3")).map(str::to_string)
    })
    .await;
    assert!(tooltip.contains("dashboard"), "the marker explains the change: {tooltip}");

    // The same marker is on every graph, not only the replicas one.
    let seq = eventually("the 2 → 3 marker on every graph", Duration::from_secs(10), || async {
        let script = "const m = [...document.querySelectorAll('#c-replicas polygon.marker')]\
                        .find((m) => m.textContent.includes('2 → 3')); \
                      if (!m) return null; const seq = m.getAttribute('data-seq'); \
                      const charts = ['c-rps', 'c-latency', 'c-cpu', 'c-replicas'] \
                        .filter((id) => document.querySelector(`#${id} polygon.marker[data-seq=\"${seq}\"]`)); \
                      return charts.length === 4 ? seq : null";
        client.execute(script, vec![]).await.ok()?.as_str().map(str::to_string)
    })
    .await;

    // Click it on the request graph: its event is picked in the list under
    // the graphs, with the whole reason.
    let marker_css = format!(r#"#c-rps polygon.marker[data-seq="{seq}"]"#);
    let picked = format!(r#"#scaling-events li.selected[data-seq="{seq}"]"#);
    let reason = eventually("the clicked marker's event picked in the list", Duration::from_secs(10), || async {
        if let Ok(marker) = client.find(Locator::Css(&marker_css)).await {
            let _ = marker.click().await; // may go stale as the graph redraws; try again
        }
        text_of(client, &picked).await
    })
    .await;
    println!("clicked marker {seq}: {reason}");
    assert!(reason.contains("2 → 3") && reason.contains("dashboard"), "the list shows the reason: {reason}");

    // Saturate the fleet: three replicas taking one request at a time, eight
    // clients. The banner says so with the numbers; the request graph shows
    // offered beside served, the latency graph the queue time.
    let load = saturate(listen, 8, Duration::from_secs(12));
    let (kind, text) = eventually("the saturation banner", Duration::from_secs(10), || async {
        banner(client).await.ok()?.filter(|(kind, _)| kind == "saturated")
    })
    .await;
    println!("banner ({kind}): {text}");
    assert!(text.contains("Saturated") && text.contains("queued"), "the banner gives the numbers: {text}");
    assert!(text.contains("offered") && text.contains("served"), "the banner gives the rates: {text}");
    for (chart, series) in [("c-rps", "served"), ("c-rps", "offered"), ("c-rps", "queued"), ("c-latency", "queue")] {
        eventually(&format!("the {series} series on #{chart}"), Duration::from_secs(10), || async {
            let path =
                client.find(Locator::Css(&format!(r#"#{chart} path.line[data-series="{series}"]"#))).await.ok()?;
            path.attr("d").await.ok()?.filter(|d| d.contains('L')).map(|_| ())
        })
        .await;
    }
    eventually("a saturated band on the graphs", Duration::from_secs(10), || async {
        client.find(Locator::Css("#c-rps rect.band.sat")).await.ok().map(|_| ())
    })
    .await;
    let cards = text_of(client, ".summary").await.unwrap_or_default();
    assert!(cards.matches("10 s avg").count() >= 3, "the cards say they average 10 s: {cards}");

    // Take the pictures while it is saturated: that is the story to read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::create_dir_all(shots).map_err(|e| e.to_string())?;
    let laptop = shots.join("ebb-dashboard.png");
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    std::fs::write(&laptop, &png).map_err(|e| e.to_string())?;
    client.set_window_size(390, 2600).await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let phone = shots.join("ebb-dashboard-phone.png");
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    std::fs::write(&phone, &png).map_err(|e| e.to_string())?;
    println!("screenshots: {} and {}", laptop.display(), phone.display());

    // Once the load stops and the settle time has passed, the banner goes.
    for worker in load {
        let _ = worker.join();
    }
    eventually("the banner to go once the queue is gone", Duration::from_secs(20), || banner_quiet(client, admin))
        .await;
    Ok(())
}
