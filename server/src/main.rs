//! `serialsvc`: argument parsing and wiring only; the server lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serialsvc::config::{Config, LogFormat, Overrides};

/// The binary's allocator for everything Rust allocates: jemalloc. Against
/// glibc's malloc it served batch verification with 13–28 % more items per
/// server CPU-second (BENCHMARKS.md, session 13). RocksDB's C++ code keeps
/// glibc's malloc, which `storage` tunes and trims on its own.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Serial number issuance and verification service for pharmaceutical serialization.
///
/// Configuration: defaults < TOML file (--config) < SERIALSVC_* environment
/// variables < flags. ops/config-template.toml lists every key.
#[derive(Debug, Parser)]
#[command(name = "serialsvc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC, HTTP and metrics until SIGINT or SIGTERM.
    Serve(Overrides),
    /// Print the effective configuration as TOML and exit (non-zero, naming
    /// the key and the rule, when it is invalid).
    CheckConfig(Overrides),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (overrides, serve) = match cli.command {
        Command::Serve(overrides) => (overrides, true),
        Command::CheckConfig(overrides) => (overrides, false),
    };
    // Logging is configured by the configuration itself, so its errors go
    // to standard error directly.
    let config = match overrides.resolve() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if !serve {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);
    if let Err(error) = start_allocator_purging() {
        tracing::warn!(%error, "jemalloc's background purging thread did not start: freed memory is returned only when the threads that freed it allocate again");
    }
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
    match runtime.block_on(run(config, overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "serialsvc stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, overrides: Overrides) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config_file = overrides.config.as_ref().map(|p| p.display().to_string()),
        effective = %config.to_toml().trim_end().replace('\n', "; "),
        "starting with the effective configuration"
    );
    serialsvc::run(config.serve_config(), shutdown_signal()?, |_| {}).await?;
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

/// Starts jemalloc's background thread, which returns freed pages to the
/// operating system after its decay time (10 s) even when the server is
/// idle. Without it jemalloc purges only inside allocation calls, so a server
/// at rest would keep what a burst of requests freed (about 70 bytes a
/// serial more at rest after commissioning 1,000,000).
fn start_allocator_purging() -> Result<(), String> {
    let setting = "jemalloc background_thread";
    tikv_jemalloc_ctl::background_thread::write(true).map_err(|e| format!("{setting}: {e}"))?;
    match tikv_jemalloc_ctl::background_thread::read() {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{setting}: still off after it was set")),
        Err(e) => Err(format!("{setting}: {e}")),
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_is_jemalloc_with_its_background_purging_thread() {
        assert_eq!(super::start_allocator_purging(), Ok(()));
        assert_eq!(tikv_jemalloc_ctl::background_thread::read(), Ok(true));
        // What Rust allocates is counted by jemalloc: it is the allocator.
        let allocated = || {
            tikv_jemalloc_ctl::epoch::advance().unwrap();
            tikv_jemalloc_ctl::stats::allocated::read().unwrap()
        };
        let before = allocated();
        let block = vec![1u8; 64 << 20];
        let during = allocated();
        drop(block);
        assert!(
            during >= before + (64 << 20),
            "jemalloc counted {before} bytes before a 64 MiB vector and {during} with it"
        );
    }
}
