//! `serialctl events export`: writes a range of the event log to a file, as
//! an EPCIS 2.0 JSON-LD document or as JSON Lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use proto::serial::v1 as pb;
use proto::serial::v1::event_service_client::EventServiceClient;

use crate::Connection;

#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EventsCommand {
    /// Export events (sequences SINCE up to, not including, UNTIL) to a file.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// First sequence to include (sequences start at 1).
    #[arg(long, default_value_t = 1)]
    since: u64,
    /// First sequence not to include; default: up to the newest event.
    #[arg(long)]
    until: Option<u64>,
    /// `epcis` (EPCIS 2.0 JSON-LD document) or `jsonl` (one event per line, every kind).
    #[arg(long, value_parser = ["epcis", "jsonl"])]
    format: String,
    /// Only events of this GTIN.
    #[arg(long)]
    gtin: Option<String>,
    /// File to write; written under a temporary name and renamed when complete.
    #[arg(long)]
    out: PathBuf,
}

/// Streams the export into `--out` and prints what it holds.
pub(crate) async fn run(connection: Connection, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let auth = connection.auth.clone();
    let EventsCommand::Export(args) = args.command;
    let mut client = EventServiceClient::new(crate::rpc::connect(&connection, &auth).await?);
    let format = if args.format == "epcis" {
        pb::ExportFormat::EpcisJsonLd
    } else {
        pb::ExportFormat::Jsonl
    };
    let mut stream = client
        .export(pb::ExportRequest {
            since_sequence: args.since,
            until_sequence: args.until.unwrap_or(0),
            format: format as i32,
            gtin: args.gtin.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("export refused: {}: {}", s.code(), s.message()))?
        .into_inner();
    let partial = args.out.with_extension("partial");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&partial).with_context(|| format!("create {}", partial.display()))?,
    );
    let mut summary = None;
    while let Some(message) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("export failed: {}: {}", s.code(), s.message()))?
    {
        match message.message {
            Some(pb::export_response::Message::Chunk(bytes)) => file
                .write_all(&bytes)
                .with_context(|| format!("write {}", partial.display()))?,
            Some(pb::export_response::Message::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    let summary = summary.context("the export ended without its summary: nothing was kept")?;
    file.flush()
        .and_then(|()| file.get_ref().sync_all())
        .with_context(|| format!("write {}", partial.display()))?;
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("rename {} to {}", partial.display(), args.out.display()))?;
    println!(
        "events: {} (sequences {}–{})\nbytes: {}\nnext: {}\nwritten: {}",
        summary.event_count,
        summary.first_sequence,
        summary.last_sequence,
        summary.byte_count,
        summary.next_sequence,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
