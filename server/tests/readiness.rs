//! Readiness and liveness end to end: while the status index is rebuilt at
//! start-up, and after a fail-stop, gRPC health and `/readyz` say NOT_SERVING
//! (with the reason) while `/healthz` still answers, and the metrics say so too.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, http_get};
use proto::serial::v1 as pb;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use storage::{ChangeSet, Family, Store, keys};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The value of an unlabelled series in an exposition.
fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_fail_stop_turns_health_readyz_and_the_metrics_not_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (status, log) = Server::start(dir.path()).terminate();
    assert!(status.success(), "exit status {status:?}; log: {log:#?}");
    // A pool record that fails its checksum: read only on demand (GetPool),
    // so the server starts and fail-stops when it reads it.
    {
        let store = Store::open(dir.path()).unwrap();
        let mut change = ChangeSet::new();
        change.put(Family::Pools, keys::pool(77), b"not an envelope");
        change.event(b"test: corrupt pool".to_vec());
        store.commit(change).unwrap();
        store.close().unwrap();
    }
    let server = Server::start(dir.path());
    assert_eq!(
        http_get(server.http, "/readyz"),
        (200, "ready\n".to_owned())
    );
    let (_, exposition) = http_get(server.metrics, "/metrics");
    assert_eq!(metric(&exposition, "serialsvc_ready"), Some(1.0));

    let channel = common::api::channel(&server).await;
    let error = PoolServiceClient::new(channel.clone())
        .get_pool(pb::GetPoolRequest {
            pool_id: "77".into(),
        })
        .await
        .unwrap_err();
    assert_ne!(error.code(), tonic::Code::Ok);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(server.http, "/readyz");
        let (_, exposition) = http_get(server.metrics, "/metrics");
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: "serial.v1.PoolService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == 503
            && health == ServingStatus::NotServing
            && metric(&exposition, "serialsvc_storage_fail_stopped") == Some(1.0)
        {
            assert!(
                body.starts_with("not ready: storage fail-stopped: "),
                "{body}"
            );
            assert_eq!(metric(&exposition, "serialsvc_ready"), Some(0.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not NOT_SERVING 15 s after the fail-stop: /readyz {status} {body:?}, health {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Liveness is not readiness: the process still answers.
    assert_eq!(http_get(server.http, "/healthz"), (200, "ok\n".to_owned()));
}

#[tokio::test]
async fn while_the_index_is_rebuilt_the_server_is_live_but_not_ready() {
    // Two million serials: a rebuild of a few hundred milliseconds.
    let dir = tempfile::tempdir().unwrap();
    {
        let server = Server::start(dir.path());
        let channel = common::api::channel(&server).await;
        common::api::add_product(&channel, "09520123456788", "eu-fmd", None, None).await;
        for round in 0..2 {
            let pool = common::api::request_pool(
                &channel,
                &format!("rebuild-{round}"),
                "09520123456788",
                1_000_000,
            )
            .await
            .unwrap();
            assert_eq!(pool.serials.len(), 1_000_000);
        }
        server.kill9();
    }
    let server = Server::start_listening(dir.path());
    let mut saw_starting = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(server.http, "/readyz");
        if status == 503 {
            assert!(body.starts_with("not ready: "), "{body}");
            assert_eq!(http_get(server.http, "/healthz"), (200, "ok\n".to_owned()));
            let channel = common::api::channel(&server).await;
            let health = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            // The rebuild may end between the two questions.
            if health == ServingStatus::NotServing {
                saw_starting = true;
            }
        } else {
            assert_eq!((status, body.as_str()), (200, "ready\n"));
            break;
        }
        assert!(Instant::now() < deadline, "not ready 60 s after start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        saw_starting,
        "never saw NOT_SERVING during the rebuild of two million serials"
    );
    server.wait_serving();
    let (_, exposition) = http_get(server.metrics, "/metrics");
    assert_eq!(metric(&exposition, "serialsvc_ready"), Some(1.0));
}
