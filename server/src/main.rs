//! `serialsvc`: argument parsing and wiring only; the server lives in the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Serial number issuance and verification service for pharmaceutical serialization.
#[derive(Debug, Parser)]
#[command(name = "serialsvc", version, about)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SERIALSVC_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC, HTTP and metrics until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// RocksDB data directory (created if missing).
    #[arg(long, default_value = "data", env = "SERIALSVC_DATA_DIR")]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051", env = "SERIALSVC_GRPC_LISTEN")]
    grpc_listen: SocketAddr,
    /// HTTP listen address (/healthz, /readyz, GS1 verification responder).
    #[arg(long, default_value = "127.0.0.1:8080", env = "SERIALSVC_HTTP_LISTEN")]
    http_listen: SocketAddr,
    /// Prometheus metrics listen address (/metrics).
    #[arg(
        long,
        default_value = "127.0.0.1:9464",
        env = "SERIALSVC_METRICS_LISTEN"
    )]
    metrics_listen: SocketAddr,
    /// Seconds in-flight requests may run after SIGINT/SIGTERM before storage is closed.
    #[arg(long, default_value_t = 30, env = "SERIALSVC_SHUTDOWN_GRACE_SECONDS")]
    shutdown_grace_seconds: u64,
    /// Shard writers: a GTIN always belongs to the same shard.
    #[arg(long, default_value_t = 4, env = "SERIALSVC_SHARDS", value_parser = clap::value_parser!(u16).range(1..=256))]
    shards: u16,
    /// Largest count of one pool request (OPEN-SCS MaxSNRequestable).
    #[arg(long, default_value_t = 1_000_000, env = "SERIALSVC_POOL_COUNT_MAX", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pool_count_max: u64,
    /// This responder's GLN (13 digits with check digit), sent as
    /// `responderGLN` in GS1 Lightweight Verification Messaging answers.
    #[arg(long, default_value = "", env = "SERIALSVC_RESPONDER_GLN")]
    responder_gln: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "serialsvc stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if !args.responder_gln.is_empty() {
        serialsvc::check_gln("--responder-gln", &args.responder_gln).map_err(anyhow::Error::msg)?;
    }
    let config = serialsvc::ServeConfig {
        data_dir: args.data_dir,
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
        metrics_listen: args.metrics_listen,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        issuer: serialsvc::IssuerConfig {
            shards: usize::from(args.shards),
            pool_count_max: args.pool_count_max,
            ..serialsvc::IssuerConfig::default()
        },
        responder_gln: args.responder_gln,
    };
    tracing::info!(?config, version = env!("CARGO_PKG_VERSION"), "starting");
    serialsvc::run(config, shutdown_signal()?, |_| {}).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now, before anything is served,
/// so that a signal arriving at any time after start-up triggers the clean
/// shutdown; the returned future completes on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use anyhow::Context;
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "signal received"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
