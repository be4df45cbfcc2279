//! `serialsvc serve` end to end: the real binary on loopback, talked to through
//! real clients (tonic health and reflection clients, `serialctl`, raw HTTP).

mod common;

use common::{Server, http_get, run_to_failure, serialctl};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// Every service of the contract; each must be registered, healthy and reflected.
const SERVICES: [&str; 9] = [
    "serial.v1.MasterDataService",
    "serial.v1.PoolService",
    "serial.v1.VerificationService",
    "serial.v1.StatusService",
    "serial.v1.AggregationService",
    "serial.v1.EventService",
    "serial.v1.ReconciliationService",
    "serial.v1.AccessService",
    "serial.v1.ServerInfoService",
];

async fn channel(server: &Server) -> common::api::Channel {
    common::api::channel(server).await
}

#[tokio::test]
async fn serves_health_for_the_server_and_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut health = HealthClient::new(channel(&server).await);
    for service in std::iter::once("").chain(SERVICES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut reflection = ServerReflectionClient::new(channel(&server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.expect("one response").unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES.iter().chain(&[
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]) {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }
}

#[test]
fn serialctl_health_reports_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let output = serialctl(&["--endpoint", &server.endpoint(), "health"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");
}

#[test]
fn serialctl_health_fails_clearly_without_a_server() {
    // Port 1 on loopback: nothing listens there.
    let output = serialctl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--timeout-seconds",
        "2",
        "health",
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: cannot connect to http://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn http_probes_and_metrics_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert_eq!(http_get(server.http, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(
        http_get(server.http, "/readyz"),
        (200, "ready\n".to_owned())
    );
    let (status, body) = http_get(server.metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("serialsvc_build_info"), "{body}");
}

#[test]
fn sigterm_stops_cleanly_and_the_data_directory_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status:?}; log: {log:#?}");
    assert!(log.iter().any(|l| l.contains("storage closed")), "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("stopped cleanly")),
        "{log:#?}"
    );
    let again = Server::start(dir.path());
    assert_eq!(http_get(again.http, "/readyz").0, 200);
}

/// A client that keeps its channel open, and connections that never sent a
/// byte (which hold hyper's graceful shutdown open, hyperium/hyper#4170), do
/// not keep the server from stopping once no call is left: it stops well
/// inside the 30 s grace period and still closes storage itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_on_idle_or_silent_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    let silent: Vec<std::net::TcpStream> = [server.grpc, server.http, server.metrics]
        .into_iter()
        .map(|address| std::net::TcpStream::connect(address).unwrap())
        .collect();
    let started = std::time::Instant::now();
    let (status, log) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}; log: {log:#?}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "took {took:?} to stop; log: {log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("no call in flight; closing the connections left open")),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("storage closed")), "{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains("still referenced")),
        "{log:#?}"
    );
    drop((channel, silent));
}

#[test]
fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start(dir.path());
    let (status, stderr) = run_to_failure(dir.path());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("open storage in") && stderr.contains("LOCK"),
        "{stderr}"
    );
}

#[tokio::test]
async fn server_info_publishes_limits_and_profiles() {
    use proto::serial::v1::server_info_service_client::ServerInfoServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = ServerInfoServiceClient::new(channel(&server).await);
    let info = client
        .get_server_info(proto::serial::v1::GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.api, "serial.v1");
    let limits = info.limits.unwrap();
    assert_eq!(limits.max_serials_requestable, 1_000_000);
    assert_eq!(limits.pool_chunk_size, 16_384);
    assert_eq!(limits.max_verify_batch_items, 4096);
    assert_eq!(limits.max_groups_in_flight, 4);
    assert_eq!(limits.max_aggregation_children, 10_000);
    assert_eq!(limits.max_hierarchy_depth, 4);
    assert_eq!(limits.max_hierarchy_nodes, 10_000);
    assert_eq!(limits.max_ssccs_requestable, 100_000);
    assert_eq!(limits.max_hierarchy_packs, 200_000);
    assert_eq!(info.undo_window_seconds, 10 * 24 * 3600);
    let names: Vec<_> = info
        .market_profiles
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "eu-fmd",
            "us-dscsa",
            "ru-chestny-znak",
            "br-anvisa",
            "sgtin-96",
            "custom"
        ]
    );
    assert!((info.guessing_ratio_limit - 0.0001).abs() < 1e-12);
}

/// The `serialsvc_rocksdb_memtable_bytes` gauge as exposed.
fn memtable_bytes(server: &Server) -> f64 {
    let (status, body) = http_get(server.metrics, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix("serialsvc_rocksdb_memtable_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the memtable gauge")
}

#[tokio::test]
async fn an_idle_server_flushes_its_memtables_and_keeps_every_serial() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // The first flushes after 1 s without a commit; the second, the
    // control, never does.
    let idle = Server::start_with(dirs[0].path(), &["--idle-flush-seconds", "1"]);
    let never = Server::start_with(dirs[1].path(), &["--idle-flush-seconds", "0"]);
    let mut pools = Vec::new();
    for server in [&idle, &never] {
        let channel = channel(server).await;
        common::api::add_product(&channel, "09520123456788", "eu-fmd", None, None).await;
        let pool = common::api::request_pool(&channel, "idle-1", "09520123456788", 50_000)
            .await
            .unwrap();
        pools.push((channel, pool));
    }
    let written = std::time::Instant::now();
    // The poller publishes every 5 s.
    let deadline = written + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let bytes = memtable_bytes(&idle);
        seen.push(bytes);
        if bytes < 1_048_576.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "memtables not flushed within 30 s: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // The control still holds the pool in its memtables after a poll.
    let published = written + std::time::Duration::from_secs(6);
    tokio::time::sleep(published.saturating_duration_since(std::time::Instant::now())).await;
    let control = memtable_bytes(&never);
    assert!(control > 1_048_576.0, "control memtables {control} bytes");
    // Flushed data reads back: the same request id replays the same pool.
    for (channel, pool) in &pools {
        let replay = common::api::request_pool(channel, "idle-1", "09520123456788", 50_000)
            .await
            .unwrap();
        assert_eq!(replay.serials.len(), 50_000);
        assert_eq!(&replay.serials, &pool.serials);
    }
}
