//! `rivven-connect tap <topic>`: prints the batches of a topic of a running process as they
//! become durable, read through the process's Flight endpoint (`settings.flight`), one
//! `follow` stream per partition.

use super::args::TapFormat;
use arrow::array::RecordBatch;
use arrow_flight::decode::{DecodedPayload, FlightRecordBatchStream};
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures_util::future::ready;
use futures_util::stream::{self, BoxStream, StreamExt};
use std::io::Write;
use std::process::ExitCode;

/// Where `--from` starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum From {
    /// Only what arrives from now on.
    End,
    Offset(u64),
    TimeMs(i64),
}

fn parse_from(s: Option<&str>) -> Result<From, String> {
    let Some(s) = s else {
        return Ok(From::End);
    };
    if let Ok(o) = s.parse::<u64>() {
        return Ok(From::Offset(o));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| From::TimeMs(t.timestamp_millis()))
        .map_err(|_| format!("--from {s}: neither an offset nor an RFC 3339 time"))
}

/// The endpoint URL and token from the configuration's `settings.flight`.
fn endpoint(
    config: &std::path::Path,
) -> Result<(String, Option<String>, Option<std::path::PathBuf>), String> {
    let loaded = rivven_engine::config::load(config).map_err(|e| e.to_string())?;
    let f = &loaded.config.settings.flight;
    if !f.enabled {
        return Err(format!(
            "{}: settings.flight is not enabled; `tap` reads through the Flight endpoint",
            config.display()
        ));
    }
    let host = match f.host.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        h => h,
    };
    let scheme = if f.tls.is_some() { "https" } else { "http" };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok((
        format!("{scheme}://{host}:{}", f.port),
        f.token.as_ref().map(|t| t.expose().to_string()),
        f.tls.as_ref().map(|t| t.cert.clone()),
    ))
}

async fn client(
    url: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> Result<FlightClient, String> {
    let mut ep = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url}: {e}"))?;
    if url.starts_with("https://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls).map_err(|e| format!("{url}: {e}"))?;
    }
    let channel = ep.connect().await.map_err(|e| {
        format!("cannot reach {url} ({e}); is `rivven-connect run` running with settings.flight enabled?")
    })?;
    let mut c = FlightClient::new(channel);
    if let Some(t) = token {
        c.add_header("authorization", &format!("Bearer {t}"))
            .map_err(|e| e.to_string())?;
    }
    Ok(c)
}

fn print(batch: &RecordBatch, format: TapFormat) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match format {
        TapFormat::Table => {
            let table = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
                .map_err(|e| e.to_string())?;
            writeln!(out, "{table}").map_err(|e| e.to_string())
        }
        TapFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            w.write(batch).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())
        }
    }
}

pub async fn tap(
    config: &std::path::Path,
    target: &str,
    from: Option<String>,
    format: TapFormat,
    limit: Option<u64>,
    url: Option<String>,
) -> ExitCode {
    match run(config, target, from.as_deref(), format, limit, url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: &std::path::Path,
    target: &str,
    from: Option<&str>,
    format: TapFormat,
    limit: Option<u64>,
    url: Option<String>,
) -> Result<(), String> {
    let from = parse_from(from)?;
    let (url, token, ca) = match url {
        Some(u) => (u, None, None),
        None => endpoint(config)?,
    };
    let mut c = client(&url, token.as_deref(), ca.as_deref()).await?;
    let not_found = |e: &arrow_flight::error::FlightError| matches!(e, arrow_flight::error::FlightError::Tonic(s) if s.code() == tonic::Code::NotFound);
    let info = match c
        .get_flight_info(FlightDescriptor::new_path(vec![target.to_string()]))
        .await
    {
        Ok(info) => info,
        // Not a topic: a tap `pipeline.stage`, read live.
        Err(e) if not_found(&e) => {
            let tap = c
                .get_flight_info(FlightDescriptor::new_path(vec![
                    "tap".to_string(),
                    target.to_string(),
                ]))
                .await;
            match tap {
                Ok(_) if from != From::End => {
                    return Err(format!(
                        "{target} is a tap: it shows batches as they pass, --from does not apply"
                    ))
                }
                Ok(_) => {
                    let s = c
                        .do_get(Ticket::new(
                            serde_json::json!({ "tap": target }).to_string(),
                        ))
                        .await
                        .map_err(|e| e.to_string())?;
                    return print_stream(batches(s), format, limit).await;
                }
                Err(t) if not_found(&t) => {
                    return Err(format!(
                        "no topic or tap `{target}` (taps are `<pipeline>.<stage>`: source, \
                         transformed, sink, dead_letter)"
                    ))
                }
                Err(t) => return Err(t.to_string()),
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    // One follow stream per partition, from where --from says.
    let mut streams = Vec::new();
    for (partition, endpoint) in info.endpoint.iter().enumerate() {
        let spec: serde_json::Value = endpoint
            .ticket
            .as_ref()
            .and_then(|t| serde_json::from_slice(&t.ticket).ok())
            .unwrap_or_default();
        let mut ticket = serde_json::json!({
            "topic": target, "partition": partition, "follow": true,
        });
        match from {
            From::End => ticket["from"] = spec["to"].clone(),
            From::Offset(o) => ticket["from"] = o.into(),
            From::TimeMs(ms) => ticket["from_time_ms"] = ms.into(),
        }
        let s = c
            .do_get(Ticket::new(ticket.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        streams.push(batches(s));
    }
    print_stream(stream::select_all(streams).boxed(), format, limit).await
}

/// The batches of a Flight stream, following schema changes: a schema message mid-stream
/// starts batches of the new schema (arrow-flight's record-batch stream would refuse it).
fn batches(s: FlightRecordBatchStream) -> BoxStream<'static, Result<RecordBatch, String>> {
    s.into_inner()
        .filter_map(|d| {
            ready(match d {
                Ok(d) => match d.payload {
                    DecodedPayload::RecordBatch(b) => Some(Ok(b)),
                    DecodedPayload::Schema(_) | DecodedPayload::None => None,
                },
                Err(e) => Some(Err(e.to_string())),
            })
        })
        .boxed()
}

/// Print `batches` until `limit` rows (or the stream's end).
async fn print_stream(
    mut all: BoxStream<'static, Result<RecordBatch, String>>,
    format: TapFormat,
    limit: Option<u64>,
) -> Result<(), String> {
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let Some(batch) = all.next().await else {
            break;
        };
        let batch = batch?;
        let n = (batch.num_rows() as u64).min(left);
        print(&batch.slice(0, n as usize), format)?;
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_an_offset_or_a_time() {
        assert_eq!(parse_from(None).unwrap(), From::End);
        assert_eq!(parse_from(Some("42")).unwrap(), From::Offset(42));
        assert_eq!(
            parse_from(Some("2026-01-01T00:00:00Z")).unwrap(),
            From::TimeMs(1_767_225_600_000)
        );
        assert!(parse_from(Some("yesterday")).is_err());
    }
}
