//! `rivven-connect status`: asks a running process over HTTP.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rivven_engine::status::StatusReport;
use std::process::ExitCode;

/// GET `url` (plain HTTP), returning the body.
async fn get(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("URL {url} has no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot reach {host}:{port} ({e}); is `rivven-connect run` running with this configuration?"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let code = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !code.is_success() {
        return Err(format!("{url} answered {code}"));
    }
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

pub async fn status(config: &std::path::Path, url: Option<String>, json: bool) -> ExitCode {
    let url = match url {
        Some(u) => u,
        None => match rivven_engine::config::load(config) {
            Ok(l) => {
                let h = &l.config.settings.health;
                let host = if h.host == "0.0.0.0" {
                    "127.0.0.1"
                } else {
                    h.host.as_str()
                };
                format!("http://{host}:{}/status", h.port)
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    let body = match get(&url).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    let report: StatusReport = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: unexpected answer from {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("uptime {}s", report.uptime_secs);
    println!(
        "{:<20} {:<6} {:<12} {:<10} {:>12} {:>14} {:>10} {:>8}  LAST ERROR",
        "PIPELINE", "KIND", "CONNECTOR", "STATE", "EVENTS", "BYTES", "LAG", "RESTARTS"
    );
    for p in report.pipelines {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let state = serde_json::to_value(p.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "{:<20} {:<6} {:<12} {:<10} {:>12} {:>14} {:>10} {:>8}  {}",
            p.name,
            kind,
            p.connector,
            state,
            p.events,
            p.bytes,
            p.lag,
            p.restarts,
            match (&p.last_error, p.last_error_origin) {
                (Some(e), Some(origin)) => format!(
                    "({}) {e}",
                    serde_json::to_value(origin)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ),
                (Some(e), None) => e.clone(),
                (None, _) => "-".into(),
            }
        );
        if let Some(why) = &p.unhealthy {
            println!("  UNHEALTHY: {why}");
        }
        // Connector details (snapshot progress, replication slot, ...), one line each.
        if let Some(serde_json::Value::Object(details)) = &p.details {
            for (key, value) in details {
                println!("  {key}: {value}");
            }
        }
    }
    ExitCode::SUCCESS
}
