//! Access logs and `X-Request-Id`, seen as an operator sees them: real
//! `curl` requests through ebb, then the lines in the files.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{free_port, wait_for, Ebb};

/// A replica that answers every GET with the `X-Request-Id` it received.
const ECHO_REPLICA: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("id=%s\n" % self.headers.get("X-Request-Id")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn curl(url: &str, headers: &[&str]) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-D", "-", "--max-time", "10", url]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().expect("curl runs");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    (head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no {name} in {head}"))
}

fn lines(path: &Path, at_least: usize) -> Vec<String> {
    wait_for(&format!("{at_least} lines in {}", path.display()), Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        (lines.len() >= at_least).then_some(lines)
    })
}

#[test]
fn requests_are_logged_with_their_id_replica_and_bytes() {
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("echo.py");
    std::fs::write(&script, ECHO_REPLICA).unwrap();
    let public_port = free_port();
    let ebb = Ebb::start(|admin, listen| {
        format!(
            r#"state_dir = "state"
[admin]
listen = "{admin}"

[service.web]
command = ["python3", "{script}"]
listen = "{listen}"
replicas = {{ min = 2, max = 2, desired = 2 }}
[service.web.health]
path = "/"
interval = "200ms"
timeout = "150ms"
healthy_threshold = 1
[service.web.proxy]
access_log = "web-access.log"

[listener.public]
listen = "127.0.0.1:{public_port}"
[[listener.public.route]]
path_prefix = "/app/"
service = "web"
[listener.public.proxy]
access_log = {{ path = "public.json", format = "json" }}
"#,
            script = script.display()
        )
    });
    let replicas = ebb.wait_in_service(2, Duration::from_secs(30));
    let replica_ids: Vec<String> = replicas.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let dir = ebb.dir.path();

    // The service's own address, combined format: a client's id is kept
    // and reaches the replica; without one, ebb makes one.
    let url = format!("http://{}/hello?x=1", ebb.listen);
    let (head, body) =
        curl(&url, &["X-Request-Id: order-42", "User-Agent: the \"quoted\" agent", "Referer: http://r/"]);
    assert_eq!(header(&head, "x-request-id"), "order-42");
    assert_eq!(body, "id=order-42\n", "the replica got the client's id");
    let (head, body) = curl(&url, &[]);
    let made = header(&head, "x-request-id").to_string();
    assert_eq!(made.len(), 32, "a generated id: {made}");
    assert_eq!(body, format!("id={made}\n"), "the replica got the generated id");

    let log = lines(&dir.join("web-access.log"), 2);
    let first = &log[0];
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(first.contains(r#"] "GET /hello?x=1 HTTP/1.1" 200 12 "http://r/" "the \x22quoted\x22 agent""#), "{first}");
    assert!(first.contains(" request_id=order-42 "), "{first}");
    assert!(first.contains(r#" front="service web" service=web replica=web-"#), "{first}");
    let replica = first.split(" replica=").nth(1).unwrap().split(' ').next().unwrap();
    assert!(replica_ids.iter().any(|id| id == replica), "{replica} is one of {replica_ids:?}");
    assert!(first.contains(" upstream_time=0.") && first.contains(" request_time=0."), "{first}");
    assert!(log[1].contains(&format!(" request_id={made} ")), "{}", log[1]);
    assert!(log[1].contains(&format!("200 {} ", body.len())), "{}", log[1]);

    // The listener, JSON: a routed request and one that matches no route.
    let (head, body) = curl(&format!("http://127.0.0.1:{public_port}/app/x"), &[]);
    let routed_id = header(&head, "x-request-id").to_string();
    let (head, _) = curl(&format!("http://127.0.0.1:{public_port}/elsewhere"), &[]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let unrouted_id = header(&head, "x-request-id").to_string();
    let json = lines(&dir.join("public.json"), 2);
    let routed: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(routed["request_id"], routed_id.as_str());
    assert_eq!(routed["status"], 200);
    assert_eq!(routed["bytes"], body.len());
    assert_eq!(routed["path"], "/app/x");
    assert_eq!(routed["service"], "web");
    assert_eq!(routed["front"], "listener public");
    assert!(replica_ids.iter().any(|id| routed["replica"] == id.as_str()), "{routed}");
    assert!(routed["upstream_seconds"].as_f64().unwrap() <= routed["request_seconds"].as_f64().unwrap());
    let unrouted: serde_json::Value = serde_json::from_str(&json[1]).unwrap();
    assert_eq!(unrouted["request_id"], unrouted_id.as_str());
    assert_eq!(unrouted["status"], 404);
    assert!(unrouted["service"].is_null() && unrouted["replica"].is_null(), "{unrouted}");
    // An upgrade request the replica answers without switching (it goes
    // through the upgrade path): its line names the replica too.
    let (head, _) =
        curl(&format!("http://127.0.0.1:{public_port}/app/ws"), &["Connection: Upgrade", "Upgrade: websocket"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let json = lines(&dir.join("public.json"), 3);
    let upgrade: serde_json::Value = serde_json::from_str(&json[2]).unwrap();
    assert_eq!(upgrade["path"], "/app/ws");
    assert!(replica_ids.iter().any(|id| upgrade["replica"] == id.as_str()), "{upgrade}");
    assert!(upgrade["upstream_seconds"].as_f64().is_some(), "{upgrade}");
    // The web service's own log has only what came to its own address.
    assert_eq!(std::fs::read_to_string(dir.join("web-access.log")).unwrap().lines().count(), 2);

    // logrotate moves the file away: the next lines go to a new file.
    std::fs::rename(dir.join("web-access.log"), dir.join("web-access.log.1")).unwrap();
    curl(&url, &["X-Request-Id: after-rotation"]);
    let log = lines(&dir.join("web-access.log"), 1);
    assert!(log[0].contains(" request_id=after-rotation "), "{log:?}");
    assert_eq!(std::fs::read_to_string(dir.join("web-access.log.1")).unwrap().lines().count(), 2);
}

#[test]
fn an_access_log_that_cannot_be_opened_stops_ebb_up_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "state"
[admin]
listen = "{admin}"
[service.web]
command = "{{ebb}} demo-app --port $PORT"
listen = "{listen}"
[service.web.proxy]
access_log = "no/such/dir/access.log"
"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["-f", config.to_str().unwrap(), "up"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("service.web.proxy.access_log") && stderr.contains("no/such/dir/access.log"), "{stderr}");
    assert!(std::net::TcpStream::connect(&listen).is_err(), "nothing was bound");
}
