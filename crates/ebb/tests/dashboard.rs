//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver) with fantoccini. It loads the page, sees
//! the replicas, sets desired to 3 through the page's control, sees the
//! third replica appear, and saves screenshots to `target/ebb-dashboard.png`
//! (laptop) and `target/ebb-dashboard-phone.png` (a CI artifact).
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
    let ebb = Ebb::start(|admin, listen| fast_config(admin, listen, "{ min = 1, max = 4, desired = 2 }", ""));
    ebb.wait_in_service(2, Duration::from_secs(20));
    let load = traffic(ebb.listen, Duration::from_secs(25));

    let profile = tempfile::tempdir().unwrap();
    let driver = Chromedriver::start(&chromedriver, &ebb.dir.path().join("chromedriver.log"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let admin = ebb.admin;
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
        let outcome = drive(&client, admin, &shots).await;
        let _ = client.close().await;
        outcome
    });
    let _ = load.join();
    drop(driver);
    result.unwrap_or_else(|e| panic!("{e}\n--- ebb up ---\n{}", ebb.up_log()));
    // The page's scale is the fleet's scale.
    ebb.wait_in_service(3, Duration::from_secs(5));
    assert!(
        ebb.events()
            .iter()
            .any(|e| e["kind"] == "scaled" && e["to"] == 3 && e["reason"].as_str().unwrap_or("").contains("dashboard")),
        "the scale is recorded as coming from the dashboard"
    );
}

async fn drive(client: &Client, admin: SocketAddr, shots: &Path) -> Result<(), String> {
    client.goto(&format!("http://{admin}/")).await.map_err(|e| e.to_string())?;
    assert_eq!(client.title().await.map_err(|e| e.to_string())?, "ebb");

    // The replicas are there, and the controls are unlocked (the page got
    // the token because this browser runs as the token file's owner).
    eventually("two replicas in service in the table", Duration::from_secs(20), || async {
        (rows_in_service(client).await == 2).then_some(())
    })
    .await;
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

    // Let the graphs fill a little, then take the pictures.
    eventually("request-rate points on the graph", Duration::from_secs(15), || async {
        let path = client.find(Locator::Css("#c-rps path.line")).await.ok()?;
        let d = path.attr("d").await.ok()??;
        (d.matches('L').count() >= 8).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::create_dir_all(shots).map_err(|e| e.to_string())?;
    let laptop = shots.join("ebb-dashboard.png");
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    std::fs::write(&laptop, &png).map_err(|e| e.to_string())?;
    client.set_window_size(390, 1800).await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let phone = shots.join("ebb-dashboard-phone.png");
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    std::fs::write(&phone, &png).map_err(|e| e.to_string())?;
    println!("screenshots: {} and {}", laptop.display(), phone.display());
    Ok(())
}
