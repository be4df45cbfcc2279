//! Start-up, the listeners and clean shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::drain::{Cut, CutListener, Cutoff};

use crate::{grpc, http, telemetry};

/// Everything `serialsvc serve` needs to start.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// RocksDB data directory (created if missing).
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address (`/healthz`, `/readyz`, later the GS1 verification responder).
    pub http_listen: SocketAddr,
    /// Prometheus metrics listen address (`/metrics`).
    pub metrics_listen: SocketAddr,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long a gRPC handler may take to answer (then CANCELLED).
    pub request_timeout: Duration,
    /// Quiet time after which the memtables are flushed (zero = never).
    pub idle_flush: Duration,
    /// Limits and shards of the write side.
    pub issuer: issuer::IssuerConfig,
    /// This responder's GLN, sent as `responderGLN` in VRS answers (13 digits
    /// with check digit; empty = not configured, answered as an empty string).
    pub responder_gln: String,
    /// TLS for every listener; `None` = plain text.
    pub tls: Option<crate::TlsFiles>,
    /// Plain text on a non-loopback address was allowed explicitly.
    pub insecure: bool,
    /// Per-principal verification limits.
    pub verify_limits: crate::VerifyLimits,
}

/// The addresses actually bound (useful when a port of 0 was asked for).
#[derive(Clone, Copy, Debug)]
pub struct BoundAddresses {
    /// gRPC listener.
    pub grpc: SocketAddr,
    /// HTTP listener.
    pub http: SocketAddr,
    /// Metrics listener.
    pub metrics: SocketAddr,
}

/// Flushes the memtables once the store has been quiet for `idle` (checked
/// every second), so an idle server holds no write buffers; never when
/// `idle` is zero.
async fn flush_when_idle(
    store: Arc<Store>,
    idle: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if idle.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let store = Arc::clone(&store);
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || store.flush_if_idle(idle)).await {
            Ok(Ok(true)) => tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "idle: memtables flushed"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "idle flush failed"),
            Err(error) => tracing::warn!(%error, "idle flush task failed"),
        }
    }
}

/// Opens storage, binds the listeners, serves until `shutdown` completes, lets
/// in-flight requests finish (up to `shutdown_grace`), then closes storage.
/// `on_bound` is called once the listeners are bound and the service is SERVING.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(BoundAddresses) + Send,
) -> anyhow::Result<()> {
    let metrics = crate::telemetry::install()?;
    let tls = config.tls.as_ref().map(crate::tls::load).transpose()?;
    if tls.is_none() {
        for (what, address) in [
            ("gRPC", config.grpc_listen),
            ("HTTP", config.http_listen),
            ("metrics", config.metrics_listen),
        ] {
            if !address.ip().is_loopback() {
                if !config.insecure {
                    anyhow::bail!(
                        "{what} listen address {address} is not loopback: give tls_cert and tls_key, or insecure = true"
                    );
                }
                tracing::warn!(
                    %address,
                    listener = what,
                    "serving PLAIN TEXT on a non-loopback address (insecure = true): tokens and data cross the network unencrypted"
                );
            }
        }
    }

    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    let store = tokio::task::spawn_blocking(move || issuer::open_store(&data_dir))
        .await
        .context("join the storage opener")?
        .with_context(|| format!("open storage in {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let access = {
        let store = Arc::clone(&store);
        let data_dir = config.data_dir.clone();
        let limits = config.verify_limits;
        Arc::new(
            tokio::task::spawn_blocking(move || {
                crate::access::AccessControl::open(store, &data_dir, limits)
            })
            .await
            .context("join the token loader")?
            .context("load the API tokens")?,
        )
    };
    let index = Arc::new(
        verifier::StatusIndex::new(config.issuer.shards.max(1))
            .context("create the status index")?,
    );
    let issuer = Arc::new(
        issuer::Issuer::start(Arc::clone(&store), config.issuer, Arc::clone(&index))
            .context("start the shard writers")?,
    );

    let grpc_listener = bind(config.grpc_listen, "gRPC").await?;
    let http_listener = bind(config.http_listen, "HTTP").await?;
    let metrics_listener = bind(config.metrics_listen, "metrics").await?;
    let bound = BoundAddresses {
        grpc: grpc_listener.local_addr()?,
        http: http_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
    };

    // One shutdown signal fanned out to every listener.
    let (stop_sender, stop) = watch::channel(false);
    // Cancelled once no call is left (or the grace period is over): every
    // connection still open is then cut, so its task lets go of the services.
    let cut = Cutoff::new();
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = grpc::Readiness::new(health_reporter, Arc::clone(&store));
    readiness.set_not_serving().await;

    let grpc_server = grpc::router(
        Arc::clone(&issuer),
        Arc::clone(&store),
        Arc::clone(&access),
        config.responder_gln.clone(),
        health_service,
        tls.as_ref().map(|tls| tls.grpc.clone()),
        config.request_timeout,
    )?
    .serve_with_incoming_shutdown(no_delay(grpc_listener, &cut), stopped(stop.clone()));
    let responder = crate::vrs::Responder {
        index: Arc::clone(&index),
        responder_gln: config.responder_gln.clone(),
        access: Arc::clone(&access),
    };
    let http_router = http::router(readiness.clone())
        .merge(crate::vrs::router(responder))
        .route_layer(axum::middleware::from_fn(telemetry::layers::http_metrics));
    let metrics_router = http::metrics_router(metrics.clone());
    type Served = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;
    let (http_server, metrics_server): (Served, Served) = match &tls {
        None => (
            Box::pin(
                axum::serve(CutListener::new(http_listener, &cut), http_router)
                    .with_graceful_shutdown(stopped(stop.clone()))
                    .into_future(),
            ),
            Box::pin(
                axum::serve(CutListener::new(metrics_listener, &cut), metrics_router)
                    .with_graceful_shutdown(stopped(stop.clone()))
                    .into_future(),
            ),
        ),
        Some(tls) => (
            Box::pin(
                axum::serve(
                    CutListener::new(
                        crate::tls::TlsListener::new(http_listener, Arc::clone(&tls.http))?,
                        &cut,
                    ),
                    http_router,
                )
                .with_graceful_shutdown(stopped(stop.clone()))
                .into_future(),
            ),
            Box::pin(
                axum::serve(
                    CutListener::new(
                        crate::tls::TlsListener::new(metrics_listener, Arc::clone(&tls.http))?,
                        &cut,
                    ),
                    metrics_router,
                )
                .with_graceful_shutdown(stopped(stop.clone()))
                .into_future(),
            ),
        ),
    };
    let poller = tokio::spawn(telemetry::poll(
        metrics,
        Arc::clone(&store),
        Arc::clone(&issuer),
        stop.clone(),
    ));
    let flusher = tokio::spawn(flush_when_idle(
        Arc::clone(&store),
        config.idle_flush,
        stop.clone(),
    ));

    // Boxed, so that it can be dropped (closing every connection left) before
    // the shard writers and storage are closed.
    let mut servers = Box::pin(async {
        tokio::try_join!(
            async { grpc_server.await.context("gRPC server") },
            async { http_server.await.context("HTTP server") },
            async { metrics_server.await.context("metrics server") }
        )
    });
    tokio::pin!(shutdown);

    // Rebuild the status index while the listeners answer NOT_SERVING.
    tracing::info!(grpc = %bound.grpc, http = %bound.http, metrics = %bound.metrics, "listening (NOT_SERVING until the status index is rebuilt)");
    telemetry::rebuild_progress(0, Duration::ZERO, false);
    let rebuild = {
        let store = Arc::clone(&store);
        let index = Arc::clone(&index);
        tokio::task::spawn_blocking(move || rebuild_index(&store, &index))
    };
    let rebuilt = tokio::select! {
        result = &mut servers => { result?; None }
        result = rebuild => Some(result.context("join the index rebuild")?.context("rebuild the status index")?),
        () = &mut shutdown => None,
    };
    if rebuilt.is_some() {
        readiness.set_serving().await;
        tracing::info!(grpc = %bound.grpc, http = %bound.http, metrics = %bound.metrics, data_dir = %config.data_dir.display(), "serving");
        on_bound(bound);
    }
    let watcher = tokio::spawn(readiness.clone().watch_fail_stop(stop.clone()));

    tokio::select! {
        result = &mut servers, if rebuilt.is_some() => { result?; }
        () = &mut shutdown, if rebuilt.is_some() => {
            tracing::info!(grace_seconds = config.shutdown_grace.as_secs_f64(), "shutdown requested: finishing in-flight requests");
            readiness.set_not_serving().await;
            let started = std::time::Instant::now();
            let open = crate::drain::wait(config.shutdown_grace).await;
            tracing::info!(open_streams = open, waited_ms = started.elapsed().as_millis() as u64, "response streams drained");
            let _ = stop_sender.send(true);
            finish_calls(servers.as_mut(), started + config.shutdown_grace).await?;
        }
        () = std::future::ready(()), if rebuilt.is_none() => {
            tracing::info!("shutdown requested during the index rebuild");
        }
    }
    let _ = stop_sender.send(true);
    cut.cancel();
    drop(servers);
    watcher.abort();
    poller.abort();
    let _ = poller.await;
    flusher.abort();
    let _ = flusher.await;
    drop(readiness);
    // The token table holds the store too.
    drop(access);
    stop_issuer(issuer).await;
    close_store(store).await
}

/// Accepted gRPC connections with Nagle's algorithm off: with an incoming
/// stream tonic does not set `TCP_NODELAY` itself, and small answers (one
/// `Verify`) would otherwise wait for the peer's delayed ACK.
/// Each is wrapped in a [`Cut`] so shutdown can close it.
fn no_delay(
    listener: TcpListener,
    cut: &Cutoff,
) -> impl tokio_stream::Stream<Item = std::io::Result<Cut<tokio::net::TcpStream>>> + use<> {
    use tokio_stream::StreamExt;
    let cut = cut.clone();
    TcpListenerStream::new(listener).map(move |accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY on a gRPC connection");
        }
        Ok(Cut::new(stream, &cut))
    })
}

/// Rebuilds the status index from storage, logging progress about once a second.
fn rebuild_index(
    store: &Store,
    index: &verifier::StatusIndex,
) -> Result<issuer::RebuildProgress, issuer::IssuerError> {
    let report = |p: issuer::RebuildProgress| {
        let seconds = p.elapsed.as_secs_f64().max(1e-9);
        let rate = p.serials as f64 / seconds;
        telemetry::rebuild_progress(p.serials, p.elapsed, p.finished);
        if p.finished {
            let stats = index.stats();
            metrics::gauge!("serialsvc_index_serials").set(stats.serials as f64);
            metrics::gauge!("serialsvc_index_table_bytes").set(stats.table_bytes as f64);
            tracing::info!(
                products = p.products,
                lots = p.lots,
                serials = p.serials,
                seconds,
                serials_per_second = rate as u64,
                table_bytes = stats.table_bytes,
                "status index rebuilt"
            );
        } else {
            tracing::info!(
                products = p.products,
                lots = p.lots,
                serials = p.serials,
                seconds,
                serials_per_second = rate as u64,
                "rebuilding the status index"
            );
        }
    };
    issuer::rebuild_index(store, index, report)
}

/// After the listeners were told to stop: waits until the servers end by
/// themselves, or no call has been in flight for [`SETTLE`], or `deadline`
/// passes. Connections still open then are closed by dropping the servers;
/// none of them has a call that was answered or could still be.
async fn finish_calls(
    mut servers: std::pin::Pin<&mut impl Future<Output = anyhow::Result<((), (), ())>>>,
    deadline: std::time::Instant,
) -> anyhow::Result<()> {
    const SETTLE: Duration = Duration::from_millis(200);
    const TICK: Duration = Duration::from_millis(20);
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            result = &mut servers => { result?; return Ok(()); }
            () = tokio::time::sleep(TICK) => {}
        }
        let now = std::time::Instant::now();
        if crate::drain::idle() {
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) >= SETTLE {
                tracing::info!("no call in flight; closing the connections left open");
                return Ok(());
            }
        } else {
            idle_since = None;
        }
        if now >= deadline {
            tracing::warn!(
                "in-flight requests still running after the grace period; closing anyway"
            );
            return Ok(());
        }
    }
}

/// Lets the shard writers finish what they queued, then stops them.
async fn stop_issuer(issuer: Arc<issuer::Issuer>) {
    for _ in 0..250 {
        if Arc::strong_count(&issuer) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match Arc::try_unwrap(issuer) {
        Ok(issuer) => {
            let _ = tokio::task::spawn_blocking(move || issuer.shutdown()).await;
        }
        Err(_) => tracing::warn!(
            "shard writers still referenced at shutdown; their queued work is in the WAL or was never acknowledged"
        ),
    }
}

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("bind the {what} listener on {address}"))
}

/// Closes storage once every other holder is gone; RocksDB's own drop is the
/// fallback if a holder leaked (still consistent: every commit is in the WAL).
async fn close_store(store: Arc<Store>) -> anyhow::Result<()> {
    for _ in 0..50 {
        if Arc::strong_count(&store) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match Arc::try_unwrap(store) {
        Ok(store) => tokio::task::spawn_blocking(move || store.close())
            .await
            .context("join the storage closer")?
            .context("close storage"),
        Err(store) => {
            tracing::warn!(
                holders = Arc::strong_count(&store),
                "storage still referenced at shutdown; relying on the WAL"
            );
            Ok(())
        }
    }
}
