//! Reading a worker service's external metric: the output of a command, or
//! a number inside an HTTP JSON answer (e.g. a queue's length).

use std::time::Duration;

use bytes::Bytes;
use ebb_core::config::{CommandSpec, MetricReading, MetricSource};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// One reading; the error says what went wrong in words.
pub async fn read(reading: &MetricReading) -> Result<f64, String> {
    match reading {
        MetricReading::Command(command) => {
            let mut cmd = match command {
                CommandSpec::Shell(line) => {
                    let mut c = tokio::process::Command::new("/bin/sh");
                    c.arg("-c").arg(line);
                    c
                }
                CommandSpec::Argv(argv) => {
                    let mut c = tokio::process::Command::new(&argv[0]);
                    c.args(&argv[1..]);
                    c
                }
            };
            let out = cmd
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("could not run the command: {e}"))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(format!("the command {}: {}", out.status, stderr.trim()));
            }
            MetricSource::parse_output(&String::from_utf8_lossy(&out.stdout))
        }
        MetricReading::Http { url, json_pointer } => {
            let body = get(url).await?;
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("GET {url}: the answer is not JSON: {e}"))?;
            let value = json.pointer(json_pointer).ok_or_else(|| format!("GET {url}: nothing at {json_pointer:?}"))?;
            match value.as_f64() {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(format!("GET {url}: {json_pointer:?} holds {value}, expected a number of 0 or more")),
            }
        }
    }
}

async fn get(url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("url {url} has no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("GET {url}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("GET {url}: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = http::Request::get(path)
        .header(http::header::HOST, uri.authority().map(|a| a.as_str()).unwrap_or(&host))
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| format!("GET {url}: no answer"))?
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: status {}", response.status()));
    }
    let body = response.into_body().collect().await.map_err(|e| format!("GET {url}: {e}"))?.to_bytes();
    conn.abort();
    Ok(body)
}
