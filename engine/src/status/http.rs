//! The HTTP endpoint: `/health`, `/ready`, `/status`, `/metrics`, and the status page at
//! `/` (one HTML file embedded in the binary, updating itself from `/status`).

use super::StatusRegistry;
use std::sync::Arc;

/// The status page: plain HTML, CSS and JavaScript, no external assets.
const PAGE: &str = include_str!("page.html");

/// Record every pipeline's counters every [`super::SAMPLE_INTERVAL`] until `shutdown`,
/// for the rates and the throughput history in `/status`.
async fn sample(status: Arc<StatusRegistry>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(super::SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => status.sample(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Serve the status page at `/`, `/health`, `/ready`, `/status` and `/metrics` on
/// `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<StatusRegistry>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let s1 = status.clone();
    let s2 = status.clone();
    let s3 = status.clone();
    tokio::spawn(sample(status.clone(), shutdown.clone()));
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [
                        (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (axum::http::header::CACHE_CONTROL, "no-cache"),
                    ],
                    PAGE,
                )
            }),
        )
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/ready",
            get(move || async move {
                let reasons = s3.not_ready();
                let code = if reasons.is_empty() {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                };
                let body = if reasons.is_empty() {
                    serde_json::json!({"status": "ready"})
                } else {
                    serde_json::json!({"status": "not_ready", "reasons": reasons})
                };
                (code, axum::Json(body))
            }),
        )
        .route(
            "/status",
            get(move || async move { axum::Json(s1.report()) }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    s2.prometheus(),
                )
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PipelineKind, PipelineState};

    /// `GET path` over a raw connection: (status code, body).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (code, body)
    }

    #[tokio::test]
    async fn ready_answers_503_naming_failed_and_unhealthy_pipelines() {
        let reg = Arc::new(StatusRegistry::default());
        let a = reg.add("a", PipelineKind::Source, "postgres-cdc");
        let b = reg.add("b", PipelineKind::Sink, "stdout");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve(listener, reg.clone(), stop.clone()));

        assert_eq!(
            get(addr, "/ready").await,
            (200, r#"{"status":"ready"}"#.into())
        );
        a.set_unhealthy(Some("slot s lags 400 s"));
        b.record_error(&crate::Error::io(
            "append",
            std::io::Error::other("disk full"),
        ));
        b.set_state(PipelineState::Failed);
        let (code, body) = get(addr, "/ready").await;
        assert_eq!(code, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["reasons"],
            serde_json::json!([
                "a: unhealthy: slot s lags 400 s",
                "b: failed: append: disk full"
            ])
        );
        // Liveness is unaffected; /status carries the reason; the gauge drops to 0.
        assert_eq!(get(addr, "/health").await.0, 200);
        let (_, status) = get(addr, "/status").await;
        assert!(
            status.contains(r#""unhealthy":"slot s lags 400 s""#),
            "{status}"
        );
        assert!(
            status.contains(r#""last_error_origin":"external""#),
            "{status}"
        );
        assert!(reg
            .prometheus()
            .contains(r#"rivven_connect_pipeline_healthy{connector="postgres-cdc",kind="source",pipeline="a"} 0"#));

        a.set_unhealthy(None);
        b.set_state(PipelineState::Running);
        assert_eq!(get(addr, "/ready").await.0, 200);
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
