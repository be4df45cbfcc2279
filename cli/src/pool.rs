//! `serialctl pool …` and `serialctl commission`: the packaging-line side
//! of serial pools (PoolService, after OPC UA OPEN-SCS): request a pool
//! and store it as it streams in, commission the serials applied to packs,
//! return the unused ones.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use indicatif::ProgressBar;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::request_pool_response::Message;
use proto::serial::v1::{
    GetLimitsRequest, GetLimitsResponse, PoolHeader, PoolStatus, PoolSummary, RequestPoolRequest,
    SerialChunk, SerialLimit,
};
use tonic::Status;
use xxhash_rust::xxh3::Xxh3Default;

use crate::Connection;
use crate::bulk::{self, CommissionOperation, ReturnOperation};
use crate::output::{self, note, shell_quote};
use crate::rpc::{self, AuthArgs};

/// Serials are written through a buffer of this size and flushed after
/// every chunk, so the file grows as the pool arrives.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Arguments of `serialctl pool`.
#[derive(Debug, clap::Args)]
pub(crate) struct PoolArgs {
    #[command(subcommand)]
    command: PoolCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PoolCommand {
    /// Allocate a pool of new serials for a GTIN and write them, one per line, as they stream in.
    Request(RequestArgs),
    /// Return unused serials (listed in FILE) so they are voided and never handed out again.
    Return(bulk::ReturnArgs),
    /// Show the server's pool limits (MaxSNRequestable, MaxSNReturnable, chunk and group sizes).
    Limits,
}

#[derive(Debug, clap::Args)]
struct RequestArgs {
    /// GTIN of a registered product.
    #[arg(long)]
    gtin: String,
    /// Serials wanted, 1 to the server's max_serials_requestable.
    #[arg(long, value_name = "N")]
    count: u64,
    /// Packaging line the pool is for.
    #[arg(long, value_name = "L")]
    line: String,
    /// Site of the line: a GLN or a site code.
    #[arg(long, value_name = "LOC")]
    location: Option<String>,
    /// Idempotency key (1-64 printable ASCII). The same id streams the same pool again.
    /// Default: a fresh one, printed on standard error.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Write the serials to FILE (created or truncated) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Arguments of `serialctl commission`.
pub(crate) type CommissionArgs = bulk::CommissionArgs;

/// Runs `serialctl pool …`.
pub(crate) async fn run_pool(connection: Connection, args: PoolArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PoolCommand::Request(request) => run_request(&connection, &connection.auth, request).await,
        PoolCommand::Return(return_args) => {
            let job = return_args.common().job("return")?;
            let client = PoolServiceClient::new(rpc::connect(&connection, &connection.auth).await?);
            let limits = limits(&client).await?;
            let operation = ReturnOperation::new(client, &return_args)?;
            bulk::run(operation, job, limits.max_serials_returnable).await
        }
        PoolCommand::Limits => {
            let client = PoolServiceClient::new(rpc::connect(&connection, &connection.auth).await?);
            let limits = limits(&client).await?;
            println!(
                "max serials requestable: {}",
                limits.max_serials_requestable
            );
            println!("max serials returnable: {}", limits.max_serials_returnable);
            println!("chunk size: {}", limits.chunk_size);
            println!("max items per group: {}", limits.max_items_per_group);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `serialctl commission`.
pub(crate) async fn run_commission(
    connection: Connection,
    args: CommissionArgs,
) -> anyhow::Result<ExitCode> {
    let job = args.common().job("commission")?;
    let client = PoolServiceClient::new(rpc::connect(&connection, &connection.auth).await?);
    let limits = limits(&client).await?;
    let operation = CommissionOperation::new(client, &args)?;
    bulk::run(operation, job, limits.max_items_per_group).await
}

/// The server's pool limits (GetLimits).
async fn limits(client: &PoolServiceClient<rpc::Channel>) -> anyhow::Result<GetLimitsResponse> {
    rpc::call_with_retry("get pool limits", || {
        let mut client = client.clone();
        async move { client.get_limits(GetLimitsRequest {}).await }
    })
    .await
}

/// What has arrived of a pool so far, across resumed streams.
struct Received {
    header: Option<PoolHeader>,
    /// Serials written, which is also the pool offset of the next one.
    written: u64,
    /// XXH3-64 (seed 0) over every serial written, each followed by LF.
    hasher: Xxh3Default,
    /// Resume token of the last chunk written.
    page_token: String,
    summary: Option<PoolSummary>,
    chunks: u64,
}

/// Why one RequestPool stream stopped.
enum StreamEnd {
    /// A gRPC status (maybe a broken connection): maybe retryable.
    Status(Status),
    /// Local I/O or a broken promise of the contract: not retryable.
    Fatal(anyhow::Error),
}

impl From<Status> for StreamEnd {
    fn from(status: Status) -> Self {
        StreamEnd::Status(status)
    }
}

async fn run_request(
    connection: &Connection,
    auth: &AuthArgs,
    args: RequestArgs,
) -> anyhow::Result<ExitCode> {
    let gtin = rpc::parse_gtin("--gtin", &args.gtin)?;
    let request_id = match &args.request_id {
        Some(id) => rpc::request_id_or_fresh(Some(id))?,
        None => {
            let id = rpc::fresh_request_id();
            eprintln!("request id: {id} (pass --request-id {id} to fetch this pool again)");
            id
        }
    };
    let resume_hint = resume_command(connection, &args, &request_id);
    let mut client = PoolServiceClient::new(rpc::connect(connection, auth).await?);
    let mut received = Received {
        header: None,
        written: 0,
        hasher: Xxh3Default::new(),
        page_token: String::new(),
        summary: None,
        chunks: 0,
    };
    let mut sink: Option<BufWriter<Box<dyn Write>>> = None;
    let mut bar = ProgressBar::hidden();
    let mut failures = 0;
    loop {
        let request = RequestPoolRequest {
            request_id: request_id.clone(),
            gtin: gtin.as_str().to_owned(),
            count: args.count,
            line_id: args.line.clone(),
            location: args.location.clone().unwrap_or_default(),
            page_token: received.page_token.clone(),
            ..Default::default()
        };
        let written_before = received.written;
        let had_header = received.header.is_some();
        let end = stream_pool(
            &mut client,
            request,
            &args,
            &mut received,
            &mut sink,
            &mut bar,
        )
        .await;
        let status = match end {
            Ok(()) => break,
            Err(StreamEnd::Fatal(error)) => {
                bar.abandon();
                eprintln!("{resume_hint}");
                return Err(error);
            }
            Err(StreamEnd::Status(status)) => status,
        };
        if received.written > written_before || (!had_header && received.header.is_some()) {
            failures = 0;
        }
        // Before the header, RESOURCE_EXHAUSTED may mean "no serial can be
        // issued at all", which no retry fixes; after it, only overload.
        if rpc::is_retryable(&status, received.header.is_some())
            && failures + 1 < rpc::STREAM_ATTEMPTS_MAX
        {
            let wait = rpc::backoff(failures);
            failures += 1;
            note(
                &bar,
                &format!(
                    "note: pool stream broken ({}) after {} serials; resuming in {} ms (attempt {} of {})",
                    rpc::describe(&status),
                    received.written,
                    wait.as_millis(),
                    failures + 1,
                    rpc::STREAM_ATTEMPTS_MAX
                ),
            );
            tokio::time::sleep(wait).await;
            continue;
        }
        bar.abandon();
        if received.header.is_some() {
            eprintln!(
                "the pool is incomplete: {} serials written; {resume_hint}",
                received.written
            );
        } else if rpc::is_retryable(&status, false) {
            eprintln!("{resume_hint}");
        }
        return Err(rpc::status_error("request pool", &status));
    }
    bar.finish_and_clear();
    finish(&received, &args)
}

/// Streams one RequestPool call into the sink, resuming where `received`
/// stands.
async fn stream_pool(
    client: &mut PoolServiceClient<rpc::Channel>,
    request: RequestPoolRequest,
    args: &RequestArgs,
    received: &mut Received,
    sink: &mut Option<BufWriter<Box<dyn Write>>>,
    bar: &mut ProgressBar,
) -> Result<(), StreamEnd> {
    let mut stream = client.request_pool(request).await?.into_inner();
    while let Some(response) = stream.message().await? {
        match response.message {
            Some(Message::Header(header)) => {
                if let Some(first) = &received.header {
                    if first.pool_id != header.pool_id
                        || first.granted_count != header.granted_count
                    {
                        return Err(StreamEnd::Fatal(anyhow!(
                            "request pool: the resumed stream is for pool {} ({} serials), not pool {} ({} serials)",
                            header.pool_id,
                            header.granted_count,
                            first.pool_id,
                            first.granted_count
                        )));
                    }
                    continue;
                }
                eprintln!("{}", header_text(&header));
                *bar = output::progress_bar(header.granted_count, "serials");
                *sink = Some(open_sink(args).map_err(StreamEnd::Fatal)?);
                received.header = Some(header);
            }
            Some(Message::Chunk(chunk)) => {
                let Some(out) = sink.as_mut() else {
                    return Err(StreamEnd::Fatal(anyhow!(
                        "request pool: the server sent serials before the pool header"
                    )));
                };
                write_chunk(&chunk, received, out).map_err(StreamEnd::Fatal)?;
                bar.set_position(received.written);
            }
            Some(Message::Summary(summary)) => {
                received.summary = Some(summary);
            }
            None => {}
        }
    }
    if received.summary.is_none() {
        // A stream that ends cleanly but early is as broken as a reset one.
        return Err(StreamEnd::Status(Status::unavailable(
            "the stream ended before the pool summary",
        )));
    }
    Ok(())
}

/// Appends the chunk's serials not written yet (a resumed stream may
/// repeat some) and flushes them, then remembers its resume token.
fn write_chunk(
    chunk: &SerialChunk,
    received: &mut Received,
    out: &mut BufWriter<Box<dyn Write>>,
) -> anyhow::Result<()> {
    if chunk.offset > received.written {
        return Err(anyhow!(
            "request pool: serials missing: chunk at offset {} after {} serials",
            chunk.offset,
            received.written
        ));
    }
    let granted = received.header.as_ref().map_or(0, |h| h.granted_count);
    let overlap = usize::try_from(received.written - chunk.offset).unwrap_or(usize::MAX);
    for serial in chunk.serials.iter().skip(overlap) {
        if received.written >= granted {
            return Err(anyhow!(
                "request pool: the server sent more than the {granted} serials granted"
            ));
        }
        gs1::Serial::new(serial).map_err(|error| {
            anyhow!(
                "request pool: invalid serial {:?} at offset {}: {error}",
                output::escape_control(serial),
                received.written
            )
        })?;
        out.write_all(serial.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .context("write serials")?;
        received.hasher.update(serial.as_bytes());
        received.hasher.update(b"\n");
        received.written += 1;
    }
    out.flush().context("write serials")?;
    received.chunks += 1;
    if !chunk.next_page_token.is_empty() {
        received.page_token = chunk.next_page_token.clone();
    }
    Ok(())
}

fn open_sink(args: &RequestArgs) -> anyhow::Result<BufWriter<Box<dyn Write>>> {
    let out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    Ok(BufWriter::with_capacity(WRITE_BUFFER_BYTES, out))
}

/// Checks the pool is complete and intact and prints the summary.
fn finish(received: &Received, args: &RequestArgs) -> anyhow::Result<ExitCode> {
    let (Some(header), Some(summary)) = (&received.header, &received.summary) else {
        return Err(anyhow!(
            "request pool: the stream ended without header or summary"
        ));
    };
    if summary.serial_count != received.written || header.granted_count != received.written {
        return Err(anyhow!(
            "request pool: incomplete pool: {} serials written, header granted {}, summary counts {}",
            received.written,
            header.granted_count,
            summary.serial_count
        ));
    }
    let destination = args
        .out
        .as_ref()
        .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    let digest = received.hasher.digest();
    let checksum = if summary.serials_xxh3 == 0 {
        "no checksum in the summary".to_owned()
    } else if summary.serials_xxh3 == digest {
        format!("XXH3 {digest:016x} verified")
    } else {
        return Err(anyhow!(
            "request pool: checksum mismatch: the summary says XXH3 {:016x}, the {} serials written hash to {digest:016x}",
            summary.serials_xxh3,
            received.written
        ));
    };
    eprintln!(
        "pool {}: granted {}, written {} to {destination}, {checksum}",
        summary.pool_id, header.granted_count, received.written
    );
    Ok(ExitCode::SUCCESS)
}

/// One line about the pool header: the status and, for a partial pool,
/// the figures that limited it.
fn header_text(header: &PoolHeader) -> String {
    let format = crate::master_data::format_text(header.format.as_ref());
    let mut text = format!(
        "pool {} for GTIN {}: {}: {} of {} serials granted (profile {}, {format})",
        header.pool_id,
        header.gtin,
        pool_status(header.status()),
        header.granted_count,
        header.requested_count,
        header.market_profile
    );
    if header.status() != PoolStatus::Ok {
        let limit = match header.limiting_factor() {
            SerialLimit::GuessingRule => "the EU guessing rule",
            SerialLimit::SerialSpace => "the serial space",
            SerialLimit::Unspecified => "an unspecified limit",
        };
        text.push_str(&format!("; limited by {limit}"));
        if let Some(ratio) = &header.ratio_after {
            text.push_str(&format!(
                ": issued {} of a space of {}, ratio {:.3e}, limit {:.3e} ({}), {} more issuable",
                ratio.issued,
                ratio.space_size,
                ratio.ratio,
                ratio.ratio_limit,
                if ratio.enforced {
                    "enforced"
                } else {
                    "not enforced"
                },
                ratio.issuable_remaining
            ));
        }
    }
    text
}

fn pool_status(status: PoolStatus) -> &'static str {
    match status {
        PoolStatus::Ok => "OK",
        PoolStatus::InsufficientSerialNumbers => "INSUFFICIENT_SERIAL_NUMBERS",
        PoolStatus::Unspecified => "UNSPECIFIED",
    }
}

/// The exact command that fetches the same pool again (same request id;
/// the server streams the stored pool, it allocates nothing new).
fn resume_command(connection: &Connection, args: &RequestArgs, request_id: &str) -> String {
    let mut words = vec![
        "serialctl".to_owned(),
        "--endpoint".to_owned(),
        connection.endpoint.clone(),
        "pool".to_owned(),
        "request".to_owned(),
        "--gtin".to_owned(),
        args.gtin.clone(),
        "--count".to_owned(),
        args.count.to_string(),
        "--line".to_owned(),
        args.line.clone(),
    ];
    if let Some(location) = &args.location {
        words.extend(["--location".to_owned(), location.clone()]);
    }
    words.extend(["--request-id".to_owned(), request_id.to_owned()]);
    if let Some(out) = &args.out {
        words.extend(["--out".to_owned(), out.display().to_string()]);
    }
    let command: Vec<String> = words.iter().map(|word| shell_quote(word)).collect();
    format!(
        "to fetch the whole pool again (nothing new is allocated), run: {}",
        command.join(" ")
    )
}
