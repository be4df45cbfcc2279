//! The gRPC edge: every `serial.v1` service, plus health checking and reflection.

use std::sync::Arc;
use std::time::Duration;

use proto::serial::v1::{
    access_service_server::AccessServiceServer,
    aggregation_service_server::AggregationServiceServer, event_service_server::EventServiceServer,
    master_data_service_server::MasterDataServiceServer, pool_service_server::PoolServiceServer,
    reconciliation_service_server::ReconciliationServiceServer,
    server_info_service_server::ServerInfoServiceServer,
    status_service_server::StatusServiceServer,
    verification_service_server::VerificationServiceServer,
};
use storage::Store;
use tonic::server::NamedService;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Largest gRPC message accepted or sent, in bytes. Bulk work streams many
/// messages instead of growing one.
pub(crate) const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Concurrent HTTP/2 streams per connection before new ones wait.
const STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// Every service name we register, for health reporting.
const SERVICE_NAMES: [&str; 9] = [
    MasterDataServiceServer::<Api>::NAME,
    PoolServiceServer::<Api>::NAME,
    VerificationServiceServer::<Api>::NAME,
    StatusServiceServer::<Api>::NAME,
    AggregationServiceServer::<Api>::NAME,
    EventServiceServer::<Api>::NAME,
    ReconciliationServiceServer::<Api>::NAME,
    AccessServiceServer::<Api>::NAME,
    ServerInfoServiceServer::<Api>::NAME,
];

/// The implementation behind every `serial.v1` service.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    pub(crate) issuer: Arc<issuer::Issuer>,
    pub(crate) store: Arc<Store>,
    /// Start time, microseconds since the Unix epoch (GetServerInfo).
    pub(crate) started_micros: u64,
    /// This responder's GLN (VRS responderGLN); empty when not configured.
    pub(crate) responder_gln: String,
    /// Tokens, scopes and the per-principal verification limits.
    pub(crate) access: Arc<crate::access::AccessControl>,
}

macro_rules! limited {
    ($server:ident, $api:expr) => {
        $server::new($api.clone())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    };
}

/// The gRPC router type: every service behind the request-metrics layer
/// (outermost) and the authentication layer.
pub(crate) type MeteredRouter = Router<
    tower_layer::Stack<
        crate::access::AuthLayer,
        tower_layer::Stack<crate::telemetry::layers::GrpcMetricsLayer, tower_layer::Identity>,
    >,
>;

/// Builds the gRPC router with every service, health and reflection, each
/// call counted and timed by method and status code.
pub(crate) fn router(
    issuer: Arc<issuer::Issuer>,
    store: Arc<Store>,
    access: Arc<crate::access::AccessControl>,
    responder_gln: String,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    tls: Option<tonic::transport::ServerTlsConfig>,
    request_timeout: Duration,
) -> anyhow::Result<MeteredRouter> {
    let started_micros = crate::convert::now_micros();
    let api = Api {
        issuer,
        store,
        started_micros,
        responder_gln,
        access: Arc::clone(&access),
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| anyhow::anyhow!("tls_cert, tls_key, tls_client_ca: {e}"))?;
    }
    Ok(builder
        // A handler slower than this is answered CANCELLED; the work it
        // handed to a writer goes on, so a retry with its request id answers.
        .timeout(request_timeout)
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(crate::telemetry::layers::GrpcMetricsLayer::new())
        // Inside the metrics layer, so refused calls are counted by code.
        .layer(crate::access::AuthLayer::new(access))
        .add_service(health)
        .add_service(reflection)
        .add_service(limited!(MasterDataServiceServer, api))
        .add_service(limited!(PoolServiceServer, api))
        .add_service(limited!(VerificationServiceServer, api))
        .add_service(limited!(StatusServiceServer, api))
        .add_service(limited!(AggregationServiceServer, api))
        .add_service(limited!(EventServiceServer, api))
        .add_service(limited!(ReconciliationServiceServer, api))
        .add_service(limited!(AccessServiceServer, api))
        .add_service(limited!(ServerInfoServiceServer, api)))
}

/// Whether the service may be used, reported through gRPC health and `/readyz`.
#[derive(Clone)]
pub(crate) struct Readiness {
    reporter: HealthReporter,
    store: Arc<Store>,
    serving: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl Readiness {
    pub(crate) fn new(reporter: HealthReporter, store: Arc<Store>) -> Self {
        Self {
            reporter,
            store,
            serving: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// True while SERVING: started, not shutting down, storage not fail-stopped.
    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why the service is not serving, if it is not.
    pub(crate) fn not_serving_reason(&self) -> Option<String> {
        if let Some(reason) = self.store.fail_stopped() {
            return Some(format!("storage fail-stopped: {reason}"));
        }
        (!self.is_serving()).then(|| "starting or shutting down".to_owned())
    }

    pub(crate) async fn set_serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    pub(crate) async fn set_not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        self.serving.store(
            status == ServingStatus::Serving,
            std::sync::atomic::Ordering::Release,
        );
        crate::telemetry::handles().set_ready(status == ServingStatus::Serving);
        self.reporter.set_service_status("", status).await;
        for name in SERVICE_NAMES {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Turns health NOT_SERVING as soon as storage fail-stops (DESIGN.md promise 5).
    pub(crate) async fn watch_fail_stop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if self.is_serving() && self.store.fail_stopped().is_some() {
                self.set_not_serving().await;
            }
        }
    }
}
