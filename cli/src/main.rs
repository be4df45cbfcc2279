//! `serialctl`: the command-line client of serialsvc. Argument parsing and
//! wiring only; each subcommand lives in its own module.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod audit;
mod bulk;
mod events;
mod health;
mod master_data;
mod output;
mod parse;
mod pool;
mod reconcile;
mod rpc;
mod sscc;
mod status;
mod token;
mod verify;

/// The exit status of a usage or connection error for the commands whose
/// status 1 means "some item was not accepted" (`verify`, `decommission`,
/// `undo`); clap's own usage errors exit with 2 too.
const EXIT_ERROR: u8 = 2;

/// Command-line client of serialsvc.
#[derive(Debug, Parser)]
#[command(name = "serialctl", version, about)]
struct Cli {
    /// gRPC endpoint of the server.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:50051",
        env = "SERIALCTL_ENDPOINT"
    )]
    endpoint: String,
    /// Seconds to wait for the server before giving up.
    #[arg(
        long,
        global = true,
        default_value_t = 10,
        env = "SERIALCTL_TIMEOUT_SECONDS"
    )]
    timeout_seconds: u64,
    /// CA certificate (PEM) that signed the server's TLS certificate; use
    /// with an https:// endpoint (default: the system's roots are not used).
    #[arg(long, global = true, env = "SERIALCTL_TLS_CA", value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that ask for one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "SERIALCTL_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "SERIALCTL_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    auth: rpc::AuthArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode a scan (element string, Digital Link or EPC URI) and print every field and encoding.
    Parse(parse::ParseArgs),
    /// Ask the server's gRPC health service; exit status 0 only when SERVING.
    Health(health::HealthArgs),
    /// Register, list and show products (GTINs).
    Product(master_data::ProductArgs),
    /// Register and list lots (batches).
    Lot(master_data::LotArgs),
    /// Report the EU guessing-rule figures per GTIN.
    Ratios(master_data::RatiosArgs),
    /// Request serial pools, return unused serials, show the pool limits.
    Pool(pool::PoolArgs),
    /// Commission the serials listed in FILE (applied to packs of one lot).
    Commission(pool::CommissionArgs),
    /// Verify packs (scans given as arguments, or a scan file): state, VRS answer, EU alert.
    Verify(verify::VerifyArgs),
    /// Decommission the packs scanned in INPUT (dispensed, destroyed, exported, …).
    Decommission(status::DecommissionArgs),
    /// Undo decommissions of the packs scanned in INPUT (EU FMD Art. 13).
    Undo(status::UndoArgs),
    /// Flag one pack suspect or illegitimate, or clear its flags.
    Pack(status::PackArgs),
    /// Check the audit trail: the hash chain of every event the server committed.
    Audit(audit::AuditArgs),
    /// Export the event log (EPCIS 2.0 JSON-LD or JSON Lines).
    Events(events::EventsArgs),
    /// Reconcile pools and lots: what was issued, commissioned, returned, decommissioned; anomalies.
    Reconcile(reconcile::ReconcileArgs),
    /// Cases and pallets: SSCC pools, pack, unpack, show the tree, decommission all below.
    Sscc(sscc::SsccArgs),
    /// API tokens: create (for a line, a router, a returns desk), list, revoke.
    Token(token::TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let connection = Connection {
        endpoint: cli.endpoint,
        timeout: Duration::from_secs(cli.timeout_seconds),
        tls_ca: cli.tls_ca,
        tls_identity: cli.tls_cert.zip(cli.tls_key),
        auth: cli.auth,
    };
    match cli.command {
        Command::Parse(args) => parse::run(&args),
        Command::Health(args) => run_async(health::run(connection, args)),
        Command::Product(args) => run_async(master_data::run_product(connection, args)),
        Command::Lot(args) => run_async(master_data::run_lot(connection, args)),
        Command::Ratios(args) => run_async(master_data::run_ratios(connection, args)),
        Command::Pool(args) => run_async(pool::run_pool(connection, args)),
        Command::Commission(args) => run_async(pool::run_commission(connection, args)),
        Command::Verify(args) => {
            run_async_or_exit(verify::run(connection, args), ExitCode::from(EXIT_ERROR))
        }
        Command::Decommission(args) => run_async_or_exit(
            status::run_decommission(connection, args),
            ExitCode::from(EXIT_ERROR),
        ),
        Command::Undo(args) => run_async_or_exit(
            status::run_undo(connection, args),
            ExitCode::from(EXIT_ERROR),
        ),
        Command::Pack(args) => run_async(status::run_pack(connection, args)),
        Command::Events(args) => run_async(events::run(connection, args)),
        Command::Reconcile(args) => {
            run_async_or_exit(reconcile::run(connection, args), ExitCode::from(EXIT_ERROR))
        }
        Command::Sscc(args) => run_async(sscc::run(connection, args)),
        Command::Token(args) => run_async(token::run(connection, args)),
        Command::Audit(args) => {
            run_async_or_exit(audit::run(connection, args), ExitCode::from(EXIT_ERROR))
        }
    }
}

/// Where and how patiently to reach the server.
#[derive(Clone, Debug)]
struct Connection {
    endpoint: String,
    timeout: Duration,
    /// CA of the server's certificate (TLS).
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (mutual TLS).
    tls_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The API token.
    auth: rpc::AuthArgs,
}

impl Connection {
    async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        use anyhow::Context;
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .with_context(|| format!("invalid endpoint {:?}", self.endpoint))?;
        if self.endpoint.starts_with("https://") || self.tls_ca.is_some() {
            let read = |path: &std::path::Path, flag: &str| {
                std::fs::read(path)
                    .with_context(|| format!("{flag}: cannot read {}", path.display()))
            };
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &self.tls_ca {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(
                    ca, "--tls-ca",
                )?));
            }
            if let Some((cert, key)) = &self.tls_identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read(cert, "--tls-cert")?,
                    read(key, "--tls-key")?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .context("TLS settings (--tls-ca, --tls-cert, --tls-key)")?;
        }
        endpoint
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.endpoint))
    }
}

/// Runs a network subcommand: prints `error: …` and exits 1 on failure.
fn run_async(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    run_async_or_exit(work, ExitCode::FAILURE)
}

/// Runs a network subcommand: prints `error: …` and exits with `failure`
/// on failure (for subcommands whose status 1 means something else).
fn run_async_or_exit(
    work: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
    failure: ExitCode,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return failure;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            failure
        }
    }
}
