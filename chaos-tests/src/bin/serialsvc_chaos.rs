//! `serialsvc-chaos`: the `serialsvc` server built with the storage fail
//! points (feature `failpoints`), for the chaos tests only. It is the same
//! server (`serialsvc::run`) with two switches read from the environment:
//!
//! - `FAILPOINTS="name=action;…"`: fail crate actions, e.g.
//!   `storage.commit.before_write=delay(200)` (slow disk) or the negative
//!   controls `storage.wal.no_sync=return` and `storage.wal.skip=return`;
//! - `CHAOS_KILL_AT="name@N"`: SIGKILL this process the N-th time it passes
//!   fail point `name` (e.g. `storage.commit.after_write@7`: the write is
//!   durable, the answer never sent).
//!
//! Only `serve` is offered; flags and `SERIALSVC_*` variables are those of
//! `serialsvc serve`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Parser, Subcommand};
use serialsvc::config::Overrides;

/// serialsvc with fail points (chaos tests only).
#[derive(Debug, Parser)]
#[command(name = "serialsvc-chaos")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC, HTTP and metrics until SIGINT or SIGTERM.
    Serve(Overrides),
}

fn main() -> ExitCode {
    let Command::Serve(overrides) = Cli::parse().command;
    // Kept for the life of the process: the configured fail points stay on.
    let _scenario = fail::FailScenario::setup();
    if let Err(error) = install_kill_point() {
        eprintln!("error: CHAOS_KILL_AT: {error}");
        return ExitCode::from(2);
    }
    let config = match overrides.resolve() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
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
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        serialsvc::run(config.serve_config(), shutdown, |_| {}).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "serialsvc stopped");
            ExitCode::FAILURE
        }
    }
}

/// `CHAOS_KILL_AT=name@N`: SIGKILL at the N-th pass of fail point `name`.
fn install_kill_point() -> Result<(), String> {
    let Ok(spec) = std::env::var("CHAOS_KILL_AT") else {
        return Ok(());
    };
    let (name, count) = spec
        .split_once('@')
        .ok_or_else(|| format!("{spec:?} is not NAME@N"))?;
    let count: u64 = count
        .parse()
        .map_err(|_| format!("{count:?} is not a number"))?;
    let passes = AtomicU64::new(0);
    let point = name.to_owned();
    fail::cfg_callback(name, move || {
        if passes.fetch_add(1, Ordering::SeqCst) + 1 == count {
            eprintln!("chaos: SIGKILL at fail point {point} (pass {count})");
            let _ = chaos_tests::sys::signal(std::process::id(), libc::SIGKILL);
            // SIGKILL is delivered before kill(2) returns to this thread;
            // never go on past the point.
            loop {
                std::thread::park();
            }
        }
    })
}

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
