//! Metrics: the catalogue (every name, type and help text), the Prometheus
//! recorder with explicit histogram buckets, handles for the hot paths, and the
//! poller that publishes storage, index and serial-space figures.
//!
//! Naming follows DESIGN.md §5: `serialsvc_<name>_<unit>[_total]`, base units,
//! bounded labels only (never a GTIN, lot or serial). Per-product figures are
//! folded into the worst value across products (highest guessing-rule ratio,
//! lowest remaining serial space).
//!
//! The request metrics of the gRPC and HTTP edges live in [`layers`].

pub(crate) mod layers;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use storage::Store;

/// Upper bounds of request and write latency buckets, seconds. 0.3 is the
/// verification objective (300 ms for 95 % of requests).
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of item-count buckets (write batches, pool sizes).
pub(crate) const COUNT_BUCKETS: [f64; 12] = [
    1.0,
    10.0,
    100.0,
    1_000.0,
    10_000.0,
    65_536.0,
    100_000.0,
    250_000.0,
    500_000.0,
    1_000_000.0,
    5_000_000.0,
    10_000_000.0,
];

/// How often storage, index and serial-space figures are refreshed.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Most products read per poll for the guessing-rule and serial-space figures;
/// beyond it the figures cover the first products in GTIN order (logged).
pub(crate) const PRODUCTS_SCANNED_MAX: usize = 1_000_000;

/// Products read per page while polling.
const PRODUCTS_PAGE: usize = 1_000;

/// The kind of a metric in the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric serialsvc exports: name, kind, unit and help text. The
/// README's metric table and the tests are checked against it.
pub(crate) const CATALOGUE: &[(&str, Kind, Unit, &str)] = &[
    // The edges.
    (
        "serialsvc_grpc_requests_total",
        Kind::Counter,
        Unit::Count,
        "gRPC calls finished, by method (Service/Method) and status code",
    ),
    (
        "serialsvc_grpc_request_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "gRPC call duration from request to final status (whole stream for streaming calls), by method",
    ),
    (
        "serialsvc_http_requests_total",
        Kind::Counter,
        Unit::Count,
        "HTTP requests answered, by route and status code",
    ),
    (
        "serialsvc_http_request_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "HTTP request duration until the response head, by route",
    ),
    // Domain outcomes.
    (
        "serialsvc_verifications_total",
        Kind::Counter,
        Unit::Count,
        "Identifiers verified (gRPC and HTTP), by result: verified, not_verified, unknown (product or serial not known), malformed",
    ),
    (
        issuer::telemetry::DECOMMISSIONS,
        Kind::Counter,
        Unit::Count,
        "Packs decommissioned (newly applied; parts answered from stored outcomes excluded), by reason",
    ),
    (
        issuer::telemetry::UNDOS,
        Kind::Counter,
        Unit::Count,
        "Decommissions undone (newly applied; parts answered from stored outcomes excluded)",
    ),
    (
        "serialsvc_serials_commissioned_total",
        Kind::Counter,
        Unit::Count,
        "Serials commissioned (newly applied, replays excluded)",
    ),
    (
        "serialsvc_serials_returned_total",
        Kind::Counter,
        Unit::Count,
        "Unused serials returned (voided; newly applied, replays excluded)",
    ),
    (
        "serialsvc_pool_requests_total",
        Kind::Counter,
        Unit::Count,
        "Pool requests answered (replays included), by what limited them: none, guessing_rule, serial_space",
    ),
    (
        "serialsvc_pool_size_serials",
        Kind::Histogram,
        Unit::Count,
        "Serials granted per answered pool request",
    ),
    (
        "serialsvc_serials_issued_total",
        Kind::Counter,
        Unit::Count,
        "Serials ever issued into pools, all products (read from storage every poll)",
    ),
    (
        "serialsvc_products",
        Kind::Gauge,
        Unit::Count,
        "Registered products",
    ),
    (
        "serialsvc_guessing_ratio_max",
        Kind::Gauge,
        Unit::Count,
        "Highest guessing-rule ratio (issued / serial space) across products",
    ),
    (
        "serialsvc_guessing_ratio_limit",
        Kind::Gauge,
        Unit::Count,
        "The guessing-rule limit on that ratio",
    ),
    (
        "serialsvc_serial_space_remaining_min_serials",
        Kind::Gauge,
        Unit::Count,
        "Fewest serials still issuable for any one product (guessing rule and serial space)",
    ),
    // The write side.
    (
        issuer::telemetry::WRITE_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Shard write duration from hand-off to answer (queue wait, synced commit, index update), by kind",
    ),
    (
        issuer::telemetry::WRITE_ITEMS,
        Kind::Histogram,
        Unit::Count,
        "Items per shard write, by kind",
    ),
    // Storage.
    (
        storage::COMMIT_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        "Time to commit one write batch (the synced RocksDB write), measured in Store::commit",
    ),
    (
        storage::COMMIT_OPERATIONS,
        Kind::Histogram,
        Unit::Count,
        "Operations (puts, merges, deletes, events) in one committed write batch",
    ),
    (
        "serialsvc_storage_commits_total",
        Kind::Counter,
        Unit::Count,
        "RocksDB write batches committed since start",
    ),
    (
        "serialsvc_storage_commit_bytes_total",
        Kind::Counter,
        Unit::Bytes,
        "Bytes of committed write batches, since start",
    ),
    (
        "serialsvc_storage_commit_mean_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Mean time to commit one write batch (RocksDB db.write, synced) over the last poll interval; 0 when none",
    ),
    (
        "serialsvc_storage_commit_mean_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Mean size of one committed write batch over the last poll interval; 0 when none",
    ),
    (
        "serialsvc_storage_wal_syncs_total",
        Kind::Counter,
        Unit::Count,
        "WAL fsyncs since start (one can cover a group of commits)",
    ),
    (
        "serialsvc_storage_wal_sync_mean_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Mean duration of one WAL fsync over the last poll interval; 0 when none",
    ),
    (
        "serialsvc_storage_fail_stopped",
        Kind::Gauge,
        Unit::Count,
        "1 when storage has fail-stopped (writes refused until restart), else 0",
    ),
    (
        "serialsvc_rocksdb_live_data_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Estimated live data, all column families",
    ),
    (
        "serialsvc_rocksdb_sst_files_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Size of all SST files, all column families",
    ),
    (
        "serialsvc_rocksdb_memtable_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Bytes in memtables (active and immutable), all column families",
    ),
    (
        "serialsvc_rocksdb_pending_compaction_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Estimated bytes compaction still has to rewrite",
    ),
    (
        "serialsvc_rocksdb_keys",
        Kind::Gauge,
        Unit::Count,
        "Estimated keys, all column families",
    ),
    (
        "serialsvc_rocksdb_write_stopped",
        Kind::Gauge,
        Unit::Count,
        "1 while RocksDB stops writes (too many L0 files or pending compaction), else 0",
    ),
    (
        "serialsvc_rocksdb_delayed_write_rate_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Write rate RocksDB throttles to, bytes per second; 0 when writes are not delayed",
    ),
    (
        "serialsvc_rocksdb_write_stall_seconds_total",
        Kind::Counter,
        Unit::Seconds,
        "Time writers spent stalled by RocksDB since start (whole seconds)",
    ),
    (
        "serialsvc_data_dir_available_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Free bytes of the file system holding the data directory",
    ),
    (
        "serialsvc_data_dir_size_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Size of the file system holding the data directory",
    ),
    // The status index.
    (
        "serialsvc_index_serials",
        Kind::Gauge,
        Unit::Count,
        "Serials held by the in-memory status index",
    ),
    (
        "serialsvc_index_table_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Bytes of the status index's serial tables",
    ),
    (
        "serialsvc_index_rebuilding",
        Kind::Gauge,
        Unit::Count,
        "1 while the status index is rebuilt from storage at start, else 0",
    ),
    (
        "serialsvc_index_rebuild_serials",
        Kind::Gauge,
        Unit::Count,
        "Serials loaded by the current (or last) index rebuild",
    ),
    (
        "serialsvc_index_rebuild_duration_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Time the current (or last) index rebuild has taken",
    ),
    // Access.
    (
        "serialsvc_verifications_refused_total",
        Kind::Counter,
        Unit::Count,
        "Verification calls refused by a per-principal limit, by principal (token name) and reason (rate, blocked)",
    ),
    (
        "serialsvc_enumeration_suspected_total",
        Kind::Counter,
        Unit::Count,
        "Times a principal's share of unknown-serial lookups reached enumeration_unknown_percent within a window, by principal",
    ),
    // The process.
    (
        "serialsvc_ready",
        Kind::Gauge,
        Unit::Count,
        "1 while the service is SERVING (gRPC health, /readyz), else 0",
    ),
    (
        "serialsvc_start_time_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Start time of the process, seconds since the Unix epoch",
    ),
    (
        "serialsvc_build_info",
        Kind::Gauge,
        Unit::Count,
        "Always 1; the version label names the build",
    ),
];

/// Installs the global Prometheus recorder with explicit buckets for every
/// histogram and registers the help texts. Call once, before anything records.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    use anyhow::Context;
    let mut builder = PrometheusBuilder::new();
    for (name, kind, unit, _) in CATALOGUE {
        if *kind != Kind::Histogram {
            continue;
        }
        let buckets: &[f64] = if *unit == Unit::Seconds {
            &LATENCY_BUCKETS_SECONDS
        } else {
            &COUNT_BUCKETS
        };
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            .with_context(|| format!("set the buckets of {name}"))?;
    }
    let handle = builder
        .install_recorder()
        .context("install the Prometheus metrics recorder")?;
    for (name, kind, unit, help) in CATALOGUE {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *unit, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *unit, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *unit, *help),
        }
    }
    metrics::gauge!("serialsvc_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("serialsvc_start_time_seconds").set(now);
    // Create the hot-path handles now, from the installed recorder, so their
    // series exist (at zero) from the first scrape.
    let _ = handles();
    issuer::telemetry::register();
    let _ = layers::grpc_methods();
    Ok(handle)
}

/// The result label of a verified identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VerificationResult {
    /// GTIN, serial and the given lot and expiry match.
    Verified = 0,
    /// The pack is known but did not verify (mismatch, not for redistribution).
    NotVerified = 1,
    /// The product or the serial is not known here.
    Unknown = 2,
    /// The identifier could not be read.
    Malformed = 3,
}

const VERIFICATION_RESULTS: [&str; 4] = ["verified", "not_verified", "unknown", "malformed"];
const POOL_LIMITS: [&str; 3] = ["none", "guessing_rule", "serial_space"];

/// Handles for the domain counters, created once.
#[derive(Debug)]
pub(crate) struct Handles {
    verifications: Vec<Counter>,
    pub(crate) commissioned: Counter,
    pub(crate) returned: Counter,
    pool_requests: Vec<Counter>,
    pub(crate) pool_size: Histogram,
    ready: Gauge,
}

/// The domain handles (created from the installed recorder on first use).
pub(crate) fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        verifications: VERIFICATION_RESULTS
            .iter()
            .map(|result| metrics::counter!("serialsvc_verifications_total", "result" => *result))
            .collect(),
        commissioned: metrics::counter!("serialsvc_serials_commissioned_total"),
        returned: metrics::counter!("serialsvc_serials_returned_total"),
        pool_requests: POOL_LIMITS
            .iter()
            .map(|limit| metrics::counter!("serialsvc_pool_requests_total", "limit" => *limit))
            .collect(),
        pool_size: metrics::histogram!("serialsvc_pool_size_serials"),
        ready: metrics::gauge!("serialsvc_ready"),
    })
}

impl Handles {
    /// Counts `count` identifiers verified with `result`.
    pub(crate) fn verified(&self, result: VerificationResult, count: u64) {
        if count > 0 {
            self.verifications[result as usize].increment(count);
        }
    }

    /// Counts an answered pool request of `granted` serials.
    pub(crate) fn pool_answered(&self, limit: issuer::PoolLimit, granted: u64) {
        let slot = match limit {
            issuer::PoolLimit::None => 0,
            issuer::PoolLimit::GuessingRule => 1,
            issuer::PoolLimit::SerialSpace => 2,
        };
        self.pool_requests[slot].increment(1);
        self.pool_size.record(granted as f64);
    }

    /// Counts a verification call refused by a per-principal limit.
    pub(crate) fn verify_refused(&self, principal: &str, reason: &'static str) {
        metrics::counter!(
            "serialsvc_verifications_refused_total",
            "principal" => principal.to_owned(),
            "reason" => reason
        )
        .increment(1);
    }

    /// Counts a principal caught with a high share of unknown-serial lookups.
    pub(crate) fn enumeration_suspected(&self, principal: &str) {
        metrics::counter!(
            "serialsvc_enumeration_suspected_total",
            "principal" => principal.to_owned()
        )
        .increment(1);
    }

    /// Publishes whether the service is SERVING.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(if ready { 1.0 } else { 0.0 });
    }
}

/// Publishes index-rebuild progress (called about once a second while it runs).
pub(crate) fn rebuild_progress(serials: u64, elapsed: Duration, finished: bool) {
    metrics::gauge!("serialsvc_index_rebuilding").set(if finished { 0.0 } else { 1.0 });
    metrics::gauge!("serialsvc_index_rebuild_serials").set(serials as f64);
    metrics::gauge!("serialsvc_index_rebuild_duration_seconds").set(elapsed.as_secs_f64());
}

/// Publishes the storage, index and serial-space figures every
/// [`POLL_INTERVAL`] until `stop` turns true. Also runs the recorder's upkeep.
pub(crate) async fn poll(
    handle: PrometheusHandle,
    store: Arc<Store>,
    issuer: Arc<issuer::Issuer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut gauges = PolledGauges::new();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_products = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        handle.run_upkeep();
        let started = Instant::now();
        let store_for_read = Arc::clone(&store);
        let read = tokio::task::spawn_blocking(move || {
            (
                storage::stats::figures(&store_for_read),
                storage::stats::disk_space(&store_for_read),
                store_for_read.fail_stopped().is_some(),
            )
        })
        .await;
        match read {
            Ok((figures, disk, fail_stopped)) => {
                match figures {
                    Ok(figures) => gauges.store(&figures),
                    Err(error) => tracing::warn!(%error, "cannot read the RocksDB figures"),
                }
                match disk {
                    Ok(disk) => gauges.disk(disk),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the data directory's free space")
                    }
                }
                gauges
                    .fail_stopped
                    .set(if fail_stopped { 1.0 } else { 0.0 });
            }
            Err(error) => tracing::warn!(%error, "the storage figures reader panicked"),
        }
        let index = issuer.index().stats();
        gauges.index_serials.set(index.serials as f64);
        gauges.index_table_bytes.set(index.table_bytes as f64);
        match space_figures(&issuer).await {
            Ok(space) => {
                if space.truncated && !warned_products {
                    warned_products = true;
                    tracing::warn!(
                        products_scanned_max = PRODUCTS_SCANNED_MAX,
                        "more products than the metrics poller reads: the guessing-rule and serial-space figures cover the first ones only"
                    );
                }
                gauges.space(&space);
            }
            Err(error) => tracing::debug!(%error, "cannot read the serial-space figures"),
        }
        tracing::trace!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "metrics polled"
        );
    }
}

/// Gauges and counters refreshed by the poller.
struct PolledGauges {
    live_data: Gauge,
    sst_files: Gauge,
    memtable: Gauge,
    pending_compaction: Gauge,
    keys: Gauge,
    write_stopped: Gauge,
    delayed_write_rate: Gauge,
    stall_seconds: Counter,
    commits: Counter,
    commit_bytes: Counter,
    commit_mean_seconds: Gauge,
    commit_mean_bytes: Gauge,
    wal_syncs: Counter,
    wal_sync_mean_seconds: Gauge,
    previous: storage::stats::StoreFigures,
    fail_stopped: Gauge,
    disk_available: Gauge,
    disk_size: Gauge,
    index_serials: Gauge,
    index_table_bytes: Gauge,
    products: Gauge,
    issued: Counter,
    ratio_max: Gauge,
    ratio_limit: Gauge,
    remaining_min: Gauge,
}

impl PolledGauges {
    fn new() -> Self {
        PolledGauges {
            live_data: metrics::gauge!("serialsvc_rocksdb_live_data_bytes"),
            sst_files: metrics::gauge!("serialsvc_rocksdb_sst_files_bytes"),
            memtable: metrics::gauge!("serialsvc_rocksdb_memtable_bytes"),
            pending_compaction: metrics::gauge!("serialsvc_rocksdb_pending_compaction_bytes"),
            keys: metrics::gauge!("serialsvc_rocksdb_keys"),
            write_stopped: metrics::gauge!("serialsvc_rocksdb_write_stopped"),
            delayed_write_rate: metrics::gauge!("serialsvc_rocksdb_delayed_write_rate_bytes"),
            stall_seconds: metrics::counter!("serialsvc_rocksdb_write_stall_seconds_total"),
            commits: metrics::counter!("serialsvc_storage_commits_total"),
            commit_bytes: metrics::counter!("serialsvc_storage_commit_bytes_total"),
            commit_mean_seconds: metrics::gauge!("serialsvc_storage_commit_mean_seconds"),
            commit_mean_bytes: metrics::gauge!("serialsvc_storage_commit_mean_bytes"),
            wal_syncs: metrics::counter!("serialsvc_storage_wal_syncs_total"),
            wal_sync_mean_seconds: metrics::gauge!("serialsvc_storage_wal_sync_mean_seconds"),
            previous: storage::stats::StoreFigures::default(),
            fail_stopped: metrics::gauge!("serialsvc_storage_fail_stopped"),
            disk_available: metrics::gauge!("serialsvc_data_dir_available_bytes"),
            disk_size: metrics::gauge!("serialsvc_data_dir_size_bytes"),
            index_serials: metrics::gauge!("serialsvc_index_serials"),
            index_table_bytes: metrics::gauge!("serialsvc_index_table_bytes"),
            products: metrics::gauge!("serialsvc_products"),
            issued: metrics::counter!("serialsvc_serials_issued_total"),
            ratio_max: metrics::gauge!("serialsvc_guessing_ratio_max"),
            ratio_limit: metrics::gauge!("serialsvc_guessing_ratio_limit"),
            remaining_min: metrics::gauge!("serialsvc_serial_space_remaining_min_serials"),
        }
    }

    fn store(&mut self, figures: &storage::stats::StoreFigures) {
        self.live_data.set(figures.live_data_bytes as f64);
        self.sst_files.set(figures.sst_files_bytes as f64);
        self.memtable.set(figures.memtable_bytes as f64);
        self.pending_compaction
            .set(figures.pending_compaction_bytes as f64);
        self.keys.set(figures.keys_estimate as f64);
        self.write_stopped
            .set(if figures.write_stopped { 1.0 } else { 0.0 });
        self.delayed_write_rate
            .set(figures.delayed_write_rate_bytes as f64);
        // RocksDB keeps sums since open; the means over the last interval
        // are what an operator can act on (the metrics crate's counters are
        // integers, so sub-second sums cannot be published as counters).
        let window = Window::between(&self.previous, figures);
        self.commit_mean_seconds.set(window.commit_mean_seconds);
        self.commit_mean_bytes.set(window.commit_mean_bytes);
        self.wal_sync_mean_seconds.set(window.wal_sync_mean_seconds);
        self.stall_seconds
            .absolute(figures.stall_micros_total / 1_000_000);
        self.commits.absolute(figures.commits_total);
        self.commit_bytes.absolute(figures.commit_bytes_total);
        self.wal_syncs.absolute(figures.wal_syncs_total);
        self.previous = figures.clone();
    }

    fn disk(&self, disk: storage::stats::DiskSpace) {
        self.disk_available.set(disk.available_bytes as f64);
        self.disk_size.set(disk.total_bytes as f64);
    }

    fn space(&self, space: &SpaceFigures) {
        self.products.set(space.products as f64);
        self.issued.absolute(space.issued);
        self.ratio_max.set(space.ratio_max);
        self.ratio_limit.set(space.ratio_limit);
        self.remaining_min.set(space.remaining_min as f64);
    }
}

/// Means over one poll interval, from two readings of the RocksDB sums.
#[derive(Debug, Default, PartialEq)]
struct Window {
    commit_mean_seconds: f64,
    commit_mean_bytes: f64,
    wal_sync_mean_seconds: f64,
}

impl Window {
    fn between(
        before: &storage::stats::StoreFigures,
        after: &storage::stats::StoreFigures,
    ) -> Self {
        let mean = |sum_after: u64, sum_before: u64, count: u64| {
            if count == 0 {
                0.0
            } else {
                sum_after.saturating_sub(sum_before) as f64 / count as f64
            }
        };
        let commits = after.commits_total.saturating_sub(before.commits_total);
        let syncs = after.wal_syncs_total.saturating_sub(before.wal_syncs_total);
        Window {
            commit_mean_seconds: mean(
                after.commit_micros_total,
                before.commit_micros_total,
                commits,
            ) / 1e6,
            commit_mean_bytes: mean(after.commit_bytes_total, before.commit_bytes_total, commits),
            wal_sync_mean_seconds: mean(
                after.wal_sync_micros_total,
                before.wal_sync_micros_total,
                syncs,
            ) / 1e6,
        }
    }
}

/// The worst serial-space figures across products.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SpaceFigures {
    pub(crate) products: u64,
    pub(crate) issued: u64,
    pub(crate) ratio_max: f64,
    pub(crate) ratio_limit: f64,
    pub(crate) remaining_min: u64,
    pub(crate) truncated: bool,
}

impl SpaceFigures {
    fn add(&mut self, figures: &issuer::GuessingFigures) {
        if self.products == 0 {
            self.remaining_min = figures.issuable_remaining;
        }
        self.products += 1;
        self.issued = self.issued.saturating_add(figures.issued);
        self.ratio_max = self.ratio_max.max(figures.ratio);
        self.ratio_limit = figures.ratio_limit;
        self.remaining_min = self.remaining_min.min(figures.issuable_remaining);
    }
}

async fn space_figures(issuer: &issuer::Issuer) -> Result<SpaceFigures, issuer::IssuerError> {
    let mut space = SpaceFigures {
        ratio_limit: issuer.config().guessing_rule.ratio_limit(),
        ..SpaceFigures::default()
    };
    let mut after = None;
    loop {
        let page = issuer.products(after.clone(), PRODUCTS_PAGE).await?;
        for product in &page {
            space.add(&issuer.figures(product));
        }
        if page.len() < PRODUCTS_PAGE {
            return Ok(space);
        }
        if space.products as usize >= PRODUCTS_SCANNED_MAX {
            space.truncated = true;
            return Ok(space);
        }
        after = page.last().map(|product| product.gtin.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_follows_the_naming_rules() {
        let mut names = std::collections::BTreeSet::new();
        for (name, kind, unit, help) in CATALOGUE {
            assert!(names.insert(*name), "{name} listed twice");
            assert!(name.starts_with("serialsvc_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(!help.is_empty(), "{name} has no help");
            assert_eq!(
                name.ends_with("_total"),
                *kind == Kind::Counter,
                "{name}: counters, and only counters, end in _total"
            );
            match unit {
                Unit::Seconds => assert!(
                    name.ends_with("_seconds") || name.ends_with("_seconds_total"),
                    "{name}"
                ),
                Unit::Bytes => assert!(
                    name.ends_with("_bytes") || name.ends_with("_bytes_total"),
                    "{name}"
                ),
                _ => assert!(
                    !name.contains("_seconds") && !name.contains("_bytes"),
                    "{name}"
                ),
            }
        }
    }

    #[test]
    fn buckets_are_increasing_and_hold_the_objective() {
        assert!(LATENCY_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
        assert!(COUNT_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(
            LATENCY_BUCKETS_SECONDS.contains(&0.3),
            "the 300 ms objective"
        );
    }

    #[test]
    fn window_means_cover_only_the_interval() {
        let before = storage::stats::StoreFigures {
            commits_total: 10,
            commit_micros_total: 10_000,
            commit_bytes_total: 5_000,
            wal_syncs_total: 4,
            wal_sync_micros_total: 4_000,
            ..Default::default()
        };
        let after = storage::stats::StoreFigures {
            commits_total: 14,
            commit_micros_total: 18_000,
            commit_bytes_total: 9_000,
            wal_syncs_total: 6,
            wal_sync_micros_total: 10_000,
            ..Default::default()
        };
        assert_eq!(
            Window::between(&before, &after),
            Window {
                commit_mean_seconds: 0.002,
                commit_mean_bytes: 1_000.0,
                wal_sync_mean_seconds: 0.003,
            }
        );
        assert_eq!(Window::between(&after, &after), Window::default());
    }

    fn figures(issued: u64, ratio: f64, remaining: u64) -> issuer::GuessingFigures {
        issuer::GuessingFigures {
            gtin: gs1::Gtin::new("09506000134352").expect("gtin"),
            issued,
            space_size: 1_000_000,
            ratio,
            ratio_limit: 1e-4,
            enforced: true,
            issuable_remaining: remaining,
        }
    }

    #[test]
    fn space_figures_keep_the_worst_product() {
        let mut space = SpaceFigures::default();
        space.add(&figures(10, 0.2, 500));
        space.add(&figures(5, 0.7, 900));
        space.add(&figures(1, 0.1, 40));
        assert_eq!(
            space,
            SpaceFigures {
                products: 3,
                issued: 16,
                ratio_max: 0.7,
                ratio_limit: 1e-4,
                remaining_min: 40,
                truncated: false,
            }
        );
    }
}
