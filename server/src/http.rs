//! The HTTP edge: liveness and readiness probes, and the metrics listener.
//! (The GS1 Lightweight Verification Messaging responder is in `vrs.rs`.)

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::grpc::Readiness;

/// `/healthz` (the process answers) and `/readyz` (it may be sent traffic).
pub(crate) fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, String) {
    match readiness.not_serving_reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// `/metrics` in the Prometheus text format.
pub(crate) fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new().route("/metrics", get(move || std::future::ready(handle.render())))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
        (status, body.unwrap_or_default())
    }

    #[tokio::test]
    async fn readyz_follows_readiness_and_healthz_always_answers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(storage::Store::open(dir.path()).expect("open"));
        let (reporter, _service) = tonic_health::server::health_reporter();
        let readiness = Readiness::new(reporter, store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(axum::serve(listener, router(readiness.clone())).into_future());

        let starting = (503, "not ready: starting or shutting down\n".to_owned());
        assert_eq!(get(address, "/readyz").await, starting, "before serving");
        assert_eq!(get(address, "/healthz").await, (200, "ok\n".to_owned()));
        readiness.set_serving().await;
        assert_eq!(get(address, "/readyz").await, (200, "ready\n".to_owned()));
        readiness.set_not_serving().await;
        assert_eq!(get(address, "/readyz").await, starting, "shutting down");
        assert_eq!(get(address, "/healthz").await, (200, "ok\n".to_owned()));
    }
}
