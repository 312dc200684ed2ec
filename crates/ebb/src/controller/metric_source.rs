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
        MetricReading::Prometheus { server, query } => {
            let encoded = percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
            let url = format!("{server}/api/v1/query?query={encoded}");
            let body = get(&url).await?;
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("GET {url}: the answer is not JSON: {e}"))?;
            prometheus_value(query, &json)
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

/// The number in a Prometheus instant query's answer: a vector of exactly
/// one series, or a scalar; Prometheus writes the value as a string
/// (`[1700000000.123, "42"]`). The error says what came back.
pub fn prometheus_value(query: &str, answer: &serde_json::Value) -> Result<f64, String> {
    if answer["status"] != "success" {
        let error = answer["error"].as_str().unwrap_or("no status \"success\"");
        return Err(format!("Prometheus refused the query {query:?}: {error}"));
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some([]) => return Err(format!("the query {query:?} returned no series (is the metric scraped?)")),
            Some(many) => {
                return Err(format!(
                    "the query {query:?} returned {} series; aggregate them to one, e.g. sum({query})",
                    many.len()
                ))
            }
            None => return Err(format!("the answer to {query:?} has no result list")),
        },
        other => {
            return Err(format!(
                "the query {query:?} returned a {}, expected a vector of one series or a scalar",
                other.unwrap_or("nothing")
            ))
        }
    };
    let text = sample[1].as_str().ok_or_else(|| format!("the answer to {query:?} has no [time, \"value\"] sample"))?;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("the query {query:?} returned {text:?}, expected a number of 0 or more")),
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

#[cfg(test)]
mod tests {
    use super::prometheus_value;
    use serde_json::json;

    #[test]
    fn a_prometheus_answer_gives_its_one_sample() {
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1733238000.5, "42"]}]}});
        assert_eq!(prometheus_value("sum(q)", &vector), Ok(42.0));
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1733238000.5, "3.5"]}});
        assert_eq!(prometheus_value("scalar(q)", &scalar), Ok(3.5));
    }

    #[test]
    fn a_prometheus_answer_that_is_not_one_number_says_why() {
        let none = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(prometheus_value("q", &none).unwrap_err().contains("no series"));
        let two = json!({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]}});
        assert!(prometheus_value("q", &two).unwrap_err().contains("2 series; aggregate them to one, e.g. sum(q)"));
        let error = json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"});
        assert!(prometheus_value("q{", &error).unwrap_err().contains("parse error at char 3"));
        let nan = json!({"status": "success", "data": {"resultType": "scalar", "result": [1, "NaN"]}});
        assert!(prometheus_value("q", &nan).unwrap_err().contains("expected a number of 0 or more"));
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(prometheus_value("q[5m]", &matrix).unwrap_err().contains("returned a matrix"));
    }
}
