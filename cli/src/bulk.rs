//! The bulk streams: `serialctl commission` and `serialctl pool return` for
//! the packaging line, `serialctl decommission` and `serialctl undo` for
//! returns processors (the operations of the last two are in `status.rs`).
//! Read items (serials or scans) from a file or standard input, send them
//! in groups with deterministic request ids over one bidirectional stream,
//! several groups in flight, tally the per-item outcomes and write the
//! items not accepted, with their reasons, to a file (`FILE.rejected`,
//! `FILE.refused`).
//!
//! Re-running the same command sends the same groups with the same request
//! ids, so the server answers with the outcomes it stored: running twice
//! never changes anything twice, and a broken stream is simply resumed by
//! resending the unanswered groups.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use indicatif::ProgressBar;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::{
    CommissionOutcome, CommissionRequest, CommissionResponse, FieldViolation, GroupStatus,
    ReturnOutcome, ReturnReason, ReturnSerialsRequest, ReturnSerialsResponse, ValidationRule,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::{Code, Status};
use xxhash_rust::xxh3::Xxh3Default;

use crate::output::{self, escape_control, note};
use crate::rpc;

/// Most items per group when the server publishes no limit (0).
const GROUP_SIZE_LIMIT_DEFAULT: u32 = 10_000;

/// Groups sent and not yet answered on one stream. The server reads ahead
/// a bounded number anyway; a few keep it busy while we read the file.
const GROUPS_IN_FLIGHT_MAX: usize = 4;

/// Longest request id prefix: the id is `PREFIX-INDEX`, at most 64 chars,
/// and the index has at most 20 digits.
const PREFIX_LENGTH_MAX: usize = rpc::REQUEST_ID_LENGTH_MAX - 21;

/// Longest input line considered; longer lines are rejected unread (no
/// encoding accepted by the parser is longer).
pub(crate) const LINE_BYTES_MAX: usize = gs1::INPUT_LENGTH_MAX;

/// Longest encoded identifier the API accepts (common.proto,
/// PackIdentifier.encoded); longer input is refused here, unsent.
pub(crate) const ENCODED_BYTES_MAX: usize = 512;

/// Most bytes read from standard input: it is read to its end before
/// anything is sent (its hash gives the request ids); larger inputs must be
/// given as a file.
pub(crate) const STDIN_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Rejected items echoed on standard error; the rest are only in the file.
const REJECTIONS_SHOWN_MAX: u64 = 20;

/// How long to wait for the server to close a finished stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments every bulk command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct StreamArgs {
    /// Request id of group N is PREFIX-N (1-43 printable ASCII). Default: derived from a
    /// hash of the input's content and the parameters, so re-running the same command on the
    /// same input is idempotent.
    #[arg(long, value_name = "P")]
    request_id_prefix: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments common to the packaging line's bulk commands.
#[derive(Debug, clap::Args)]
pub(crate) struct BulkArgs {
    /// GTIN of every serial in FILE.
    #[arg(long)]
    gtin: String,
    /// Only serials of this pool are accepted (others: NOT_IN_POOL).
    #[arg(long, value_name = "ID")]
    pool_id: Option<String>,
    /// Packaging line that applied (or did not use) the codes.
    #[arg(long, value_name = "L")]
    line: Option<String>,
    /// Site of the line: a GLN or a site code.
    #[arg(long, value_name = "LOC")]
    location: Option<String>,
    #[command(flatten)]
    stream: StreamArgs,
    /// Serials per group; at most (and by default) the server's limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    group_size: Option<u32>,
    /// One serial per line, or one scan per line (element string, bracketed, Digital Link,
    /// EPC URI) whose GTIN must be --gtin; blank lines are ignored. Items not accepted are
    /// written to FILE.rejected with their reasons. "-": standard input (read to its end
    /// first; not accepted items go to ./commission.rejected or ./return.rejected).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl BulkArgs {
    /// This run of `command` (`commission` or `return`), its input opened.
    pub(crate) fn job(&self, command: &str) -> anyhow::Result<Job<'_>> {
        Ok(Job {
            stream: &self.stream,
            input: Input::open(&self.file)?,
            group_size: self.group_size,
            refused: refused_path(&self.file, "rejected", command),
        })
    }
}

/// Arguments of `serialctl commission`.
#[derive(Debug, clap::Args)]
pub(crate) struct CommissionArgs {
    /// Lot the packs belong to (registered with `serialctl lot add`).
    #[arg(long)]
    lot: String,
    /// Expiry YYMMDD, checked against the lot's (optional).
    #[arg(long, value_name = "YYMMDD")]
    expiry: Option<String>,
    #[command(flatten)]
    common: BulkArgs,
}

impl CommissionArgs {
    pub(crate) fn common(&self) -> &BulkArgs {
        &self.common
    }
}

/// Arguments of `serialctl pool return`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReturnArgs {
    /// Why the serials come back (all end voided).
    #[arg(long, value_enum, default_value = "unused")]
    reason: Reason,
    #[command(flatten)]
    common: BulkArgs,
}

impl ReturnArgs {
    pub(crate) fn common(&self) -> &BulkArgs {
        &self.common
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Reason {
    /// Never printed or never applied.
    Unused,
    /// Printed, but the label was scrapped.
    LabelScrapped,
    /// Printed and pulled as a label sample.
    LabelSampled,
}

/// One bulk rpc: how to read its items, build its groups and read its
/// answers.
pub(crate) trait Operation {
    type Request: Send + 'static;
    type Response;

    /// The rpc, for messages.
    const ACTION: &'static str;
    /// Summary label of items whose state changed.
    const APPLIED: &'static str;
    /// Summary label of items already in the state asked for.
    const UNCHANGED: &'static str;
    /// What the summary, the messages and the JSON keys call items not
    /// accepted ("rejected", "refused").
    const REFUSED: &'static str;
    /// First letters of the default request id prefix.
    const TAG: &'static str;
    /// Items per group unless asked otherwise, at most the server's limit
    /// (`u32::MAX`: the server's limit).
    const GROUP_SIZE: u32;

    /// What a line of input is: blank, an item to send, or refused here.
    fn classify(&self, line: &[u8], overlong: bool) -> Classified;
    /// Every group parameter besides the items, for the default prefix.
    fn identity(&self) -> String;
    fn request(&self, request_id: &str, items: Vec<String>) -> Self::Request;
    fn open(
        &self,
        requests: ReceiverStream<Self::Request>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, Status>>;
    fn answer(response: Self::Response) -> Answer;
}

/// One group's answer, independent of the rpc.
pub(crate) struct Answer {
    pub(crate) request_id: String,
    pub(crate) status: Option<GroupStatus>,
    pub(crate) outcomes: Vec<Outcome>,
}

/// One item's outcome, independent of the rpc.
pub(crate) enum Outcome {
    Applied,
    Unchanged,
    Rejected {
        code: String,
        detail: Option<String>,
    },
}

/// Group parameters shared by both rpcs.
struct Parameters {
    gtin: gs1::Gtin,
    pool_id: Option<String>,
    line: String,
    location: String,
}

impl Parameters {
    fn new(args: &BulkArgs) -> anyhow::Result<Self> {
        Ok(Self {
            gtin: rpc::parse_gtin("--gtin", &args.gtin)?,
            pool_id: args.pool_id.clone(),
            line: args.line.clone().unwrap_or_default(),
            location: args.location.clone().unwrap_or_default(),
        })
    }

    fn identity(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.gtin.as_str(),
            self.pool_id.as_deref().unwrap_or("-"),
            self.line,
            self.location
        )
    }
}

/// `serialctl commission`: the Commission rpc.
pub(crate) struct CommissionOperation {
    client: PoolServiceClient<rpc::Channel>,
    parameters: Parameters,
    lot: String,
    expiry: Option<String>,
}

impl CommissionOperation {
    pub(crate) fn new(
        client: PoolServiceClient<rpc::Channel>,
        args: &CommissionArgs,
    ) -> anyhow::Result<Self> {
        gs1::Lot::new(&args.lot).map_err(|error| anyhow!("--lot {:?}: lot: {error}", args.lot))?;
        if let Some(expiry) = &args.expiry {
            gs1::Expiry::new(expiry)
                .map_err(|error| anyhow!("--expiry {expiry:?}: expiry: {error}"))?;
        }
        Ok(Self {
            client,
            parameters: Parameters::new(&args.common)?,
            lot: args.lot.clone(),
            expiry: args.expiry.clone(),
        })
    }
}

impl Operation for CommissionOperation {
    type Request = CommissionRequest;
    type Response = CommissionResponse;
    const ACTION: &'static str = "commission";
    const APPLIED: &'static str = "commissioned";
    const UNCHANGED: &'static str = "already commissioned";
    const REFUSED: &'static str = "rejected";
    const TAG: &'static str = "c";
    const GROUP_SIZE: u32 = u32::MAX;

    fn classify(&self, line: &[u8], overlong: bool) -> Classified {
        classify_line(
            line,
            overlong,
            &self.parameters.gtin,
            Some((&self.lot, self.expiry.as_deref())),
        )
    }

    fn identity(&self) -> String {
        format!(
            "commission\n{}\n{}\n{}",
            self.parameters.identity(),
            self.lot,
            self.expiry.as_deref().unwrap_or("-")
        )
    }

    fn request(&self, request_id: &str, serials: Vec<String>) -> CommissionRequest {
        CommissionRequest {
            request_id: request_id.to_owned(),
            gtin: self.parameters.gtin.as_str().to_owned(),
            lot: self.lot.clone(),
            expiry: self.expiry.clone(),
            pool_id: self.parameters.pool_id.clone(),
            line_id: self.parameters.line.clone(),
            location: self.parameters.location.clone(),
            event_time: None,
            serials,
            items: Vec::new(),
        }
    }

    async fn open(
        &self,
        requests: ReceiverStream<CommissionRequest>,
    ) -> Result<Streaming<CommissionResponse>, Status> {
        let mut client = self.client.clone();
        Ok(client.commission(requests).await?.into_inner())
    }

    fn answer(response: CommissionResponse) -> Answer {
        let outcomes = response
            .results
            .iter()
            .map(|result| match result.outcome() {
                CommissionOutcome::Commissioned => Outcome::Applied,
                CommissionOutcome::AlreadyCommissioned => Outcome::Unchanged,
                CommissionOutcome::Malformed => malformed(result.error.as_ref()),
                other => Outcome::Rejected {
                    code: strip(other.as_str_name(), "COMMISSION_OUTCOME_"),
                    detail: None,
                },
            })
            .collect();
        Answer {
            request_id: response.request_id,
            status: response.status,
            outcomes,
        }
    }
}

/// `serialctl pool return`: the ReturnSerials rpc.
pub(crate) struct ReturnOperation {
    client: PoolServiceClient<rpc::Channel>,
    parameters: Parameters,
    reason: ReturnReason,
}

impl ReturnOperation {
    pub(crate) fn new(
        client: PoolServiceClient<rpc::Channel>,
        args: &ReturnArgs,
    ) -> anyhow::Result<Self> {
        let reason = match args.reason {
            Reason::Unused => ReturnReason::Unused,
            Reason::LabelScrapped => ReturnReason::LabelScrapped,
            Reason::LabelSampled => ReturnReason::LabelSampled,
        };
        Ok(Self {
            client,
            parameters: Parameters::new(&args.common)?,
            reason,
        })
    }
}

impl Operation for ReturnOperation {
    type Request = ReturnSerialsRequest;
    type Response = ReturnSerialsResponse;
    const ACTION: &'static str = "return serials";
    const APPLIED: &'static str = "voided";
    const UNCHANGED: &'static str = "already voided";
    const REFUSED: &'static str = "rejected";
    const TAG: &'static str = "r";
    const GROUP_SIZE: u32 = u32::MAX;

    fn classify(&self, line: &[u8], overlong: bool) -> Classified {
        classify_line(line, overlong, &self.parameters.gtin, None)
    }

    fn identity(&self) -> String {
        format!(
            "return\n{}\n{}",
            self.parameters.identity(),
            self.reason.as_str_name()
        )
    }

    fn request(&self, request_id: &str, serials: Vec<String>) -> ReturnSerialsRequest {
        ReturnSerialsRequest {
            request_id: request_id.to_owned(),
            gtin: self.parameters.gtin.as_str().to_owned(),
            pool_id: self.parameters.pool_id.clone(),
            line_id: self.parameters.line.clone(),
            location: self.parameters.location.clone(),
            reason: self.reason.into(),
            serials,
            items: Vec::new(),
        }
    }

    async fn open(
        &self,
        requests: ReceiverStream<ReturnSerialsRequest>,
    ) -> Result<Streaming<ReturnSerialsResponse>, Status> {
        let mut client = self.client.clone();
        Ok(client.return_serials(requests).await?.into_inner())
    }

    fn answer(response: ReturnSerialsResponse) -> Answer {
        let outcomes = response
            .results
            .iter()
            .map(|result| match result.outcome() {
                ReturnOutcome::Voided => Outcome::Applied,
                ReturnOutcome::AlreadyVoided => Outcome::Unchanged,
                ReturnOutcome::Malformed => malformed(result.error.as_ref()),
                other => Outcome::Rejected {
                    code: strip(other.as_str_name(), "RETURN_OUTCOME_"),
                    detail: None,
                },
            })
            .collect();
        Answer {
            request_id: response.request_id,
            status: response.status,
            outcomes,
        }
    }
}

/// The outcome of an item the server found malformed.
pub(crate) fn malformed(error: Option<&FieldViolation>) -> Outcome {
    Outcome::Rejected {
        code: "MALFORMED".to_owned(),
        detail: error.map(|violation| {
            if violation.field.is_empty() {
                violation.description.clone()
            } else {
                format!("{}: {}", violation.field, violation.description)
            }
        }),
    }
}

/// `NAME` of a protobuf enum value name `PREFIX_NAME`.
pub(crate) fn strip(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

/// An item read from the input (a serial or a scan, as sent), with the
/// line it came from.
struct Item {
    line: u64,
    text: String,
}

/// A group as sent (and resent, with the same request id).
struct Group {
    request_id: String,
    items: Vec<Item>,
    /// Sends refused in-band as transient (overload, indeterminate).
    attempts: u32,
}

/// One run of a bulk command: its input and how to send it.
pub(crate) struct Job<'a> {
    pub(crate) stream: &'a StreamArgs,
    pub(crate) input: Input,
    /// Items per group asked for; default: the operation's.
    pub(crate) group_size: Option<u32>,
    /// Where items not accepted are written, with their reasons.
    pub(crate) refused: PathBuf,
}

/// Runs a bulk command to the end: 0 when every item was accepted (or
/// already done), 1 when any was rejected.
pub(crate) async fn run<O: Operation>(
    operation: O,
    job: Job<'_>,
    group_size_limit: u32,
) -> anyhow::Result<ExitCode> {
    let limit = if group_size_limit == 0 {
        GROUP_SIZE_LIMIT_DEFAULT
    } else {
        group_size_limit
    };
    let group_size = job.group_size.unwrap_or(O::GROUP_SIZE).min(limit);
    let (line_count, content_hash) = job.input.scan()?;
    let prefix = match &job.stream.request_id_prefix {
        Some(prefix) => {
            rpc::check_request_id("--request-id-prefix", prefix, PREFIX_LENGTH_MAX)?;
            prefix.clone()
        }
        None => default_prefix::<O>(&operation, group_size, content_hash),
    };
    eprintln!(
        "{}: groups of at most {group_size} items, request ids {prefix}-0, {prefix}-1, …",
        O::ACTION
    );
    let bar = output::progress_bar(line_count, "lines");
    let mut tally = Tally::new(job.refused, O::REFUSED, bar.clone());
    let mut source = Source {
        lines: job.input.lines()?,
        group_size: usize::try_from(group_size).unwrap_or(usize::MAX),
        prefix,
        next_index: 0,
        exhausted: false,
    };
    let mut pending: VecDeque<Group> = VecDeque::new();
    let mut failures = 0;
    loop {
        let (sender, receiver) = mpsc::channel(GROUPS_IN_FLIGHT_MAX);
        for group in &pending {
            let _ = sender.try_send(operation.request(&group.request_id, items_of(group)));
        }
        source.fill(&mut pending, &sender, &operation, &mut tally)?;
        if pending.is_empty() {
            break;
        }
        let end = drive(
            &operation,
            receiver,
            sender,
            &mut pending,
            &mut source,
            &mut tally,
        )
        .await;
        let (status, progressed) = match end {
            Ok(()) => break,
            Err(StreamEnd::Fatal(error)) => {
                bar.abandon();
                return Err(error);
            }
            Err(StreamEnd::Status { status, progressed }) => (status, progressed),
        };
        if progressed {
            failures = 0;
        }
        if rpc::is_retryable(&status, true) && failures + 1 < rpc::STREAM_ATTEMPTS_MAX {
            let wait = rpc::backoff(failures);
            failures += 1;
            note(
                &bar,
                &format!(
                    "note: {} stream broken ({}); resending {} unanswered groups with the same request ids in {} ms (attempt {} of {})",
                    O::ACTION,
                    rpc::describe(&status),
                    pending.len(),
                    wait.as_millis(),
                    failures + 1,
                    rpc::STREAM_ATTEMPTS_MAX
                ),
            );
            tokio::time::sleep(wait).await;
            continue;
        }
        bar.abandon();
        if rpc::is_retryable(&status, true) {
            eprintln!(
                "re-run the same command to finish: the same groups get the same request ids, so nothing is applied twice"
            );
        }
        return Err(rpc::status_error(O::ACTION, &status));
    }
    bar.finish_and_clear();
    tally.finish::<O>(job.stream.json, &source.prefix, source.next_index)
}

/// Why one bulk stream stopped before every group was answered.
enum StreamEnd {
    /// The stream failed (maybe transiently); `progressed`: some group was
    /// answered on it.
    Status { status: Status, progressed: bool },
    /// A broken promise of the contract or local I/O: not retryable.
    Fatal(anyhow::Error),
}

/// One stream: reads answers in order, tallies them, refills the window
/// and ends once every group is answered.
async fn drive<O: Operation>(
    operation: &O,
    receiver: mpsc::Receiver<O::Request>,
    sender: mpsc::Sender<O::Request>,
    pending: &mut VecDeque<Group>,
    source: &mut Source,
    tally: &mut Tally,
) -> Result<(), StreamEnd> {
    let mut responses = operation
        .open(ReceiverStream::new(receiver))
        .await
        .map_err(|status| StreamEnd::Status {
            status,
            progressed: false,
        })?;
    let mut progressed = false;
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Err(StreamEnd::Status {
                    status: Status::unavailable(format!(
                        "the stream ended with {} groups unanswered",
                        pending.len()
                    )),
                    progressed,
                });
            }
            Err(status) => return Err(StreamEnd::Status { status, progressed }),
        };
        let answer = O::answer(response);
        let Some(mut group) = pending.pop_front() else {
            return Err(StreamEnd::Fatal(anyhow!(
                "{}: the server answered group {:?}, which was not sent",
                O::ACTION,
                answer.request_id
            )));
        };
        if answer.request_id != group.request_id {
            return Err(StreamEnd::Fatal(anyhow!(
                "{}: the server answered group {:?} where {:?} was expected",
                O::ACTION,
                answer.request_id,
                group.request_id
            )));
        }
        progressed = true;
        let status = answer.status.unwrap_or_default();
        let code = Code::from_i32(status.code);
        match code {
            Code::Ok => {
                if answer.outcomes.len() != group.items.len() {
                    return Err(StreamEnd::Fatal(anyhow!(
                        "{}: group {} has {} items but the answer {} results",
                        O::ACTION,
                        group.request_id,
                        group.items.len(),
                        answer.outcomes.len()
                    )));
                }
                for (item, outcome) in group.items.iter().zip(answer.outcomes) {
                    tally.record(item, outcome).map_err(StreamEnd::Fatal)?;
                }
            }
            Code::Unavailable | Code::ResourceExhausted
                if group.attempts + 1 < rpc::ATTEMPTS_MAX =>
            {
                let wait = rpc::backoff(group.attempts);
                group.attempts += 1;
                note(
                    &tally.bar,
                    &format!(
                        "note: group {} refused for now ({}: {}); resending it in {} ms (attempt {} of {})",
                        group.request_id,
                        rpc::code_name(code),
                        rpc::one_line(&status.message),
                        wait.as_millis(),
                        group.attempts + 1,
                        rpc::ATTEMPTS_MAX
                    ),
                );
                tokio::time::sleep(wait).await;
                let _ = sender.try_send(operation.request(&group.request_id, items_of(&group)));
                pending.push_back(group);
            }
            _ => {
                let detail = group_refusal(&group.request_id, &status);
                for item in &group.items {
                    tally
                        .reject(&item.text, rpc::code_name(code), item.line, Some(&detail))
                        .map_err(StreamEnd::Fatal)?;
                }
            }
        }
        source
            .fill(pending, &sender, operation, tally)
            .map_err(StreamEnd::Fatal)?;
        if pending.is_empty() {
            // Half-close, then let the server end the stream cleanly.
            drop(sender);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Ok(Some(_)) = responses.message().await {}
            })
            .await;
            return Ok(());
        }
    }
}

/// The reason detail of items of a group refused as a whole.
fn group_refusal(request_id: &str, status: &GroupStatus) -> String {
    let mut detail = format!("group {request_id} refused");
    let message = rpc::one_line(&status.message);
    if !message.is_empty() {
        detail.push_str(": ");
        detail.push_str(&message);
    }
    for violation in &status.violations {
        detail.push_str(&format!(
            "; {}: {}",
            violation.field,
            rpc::one_line(&violation.description)
        ));
    }
    detail
}

fn items_of(group: &Group) -> Vec<String> {
    group.items.iter().map(|item| item.text.clone()).collect()
}

/// The input, read line by line into groups.
struct Source {
    lines: Lines<Box<dyn BufRead + Send>>,
    group_size: usize,
    prefix: String,
    next_index: u64,
    exhausted: bool,
}

impl Source {
    /// Reads the next groups and sends them until the window is full or
    /// the input ends; malformed lines are rejected on the way.
    fn fill<O: Operation>(
        &mut self,
        pending: &mut VecDeque<Group>,
        sender: &mpsc::Sender<O::Request>,
        operation: &O,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        while pending.len() < GROUPS_IN_FLIGHT_MAX && !self.exhausted {
            let mut items = Vec::new();
            while items.len() < self.group_size {
                let Some(line) = self.lines.next_line()? else {
                    self.exhausted = true;
                    break;
                };
                match operation.classify(line.bytes, line.overlong) {
                    Classified::Blank => {}
                    Classified::Item(text) => items.push(Item {
                        line: line.number,
                        text,
                    }),
                    Classified::Rejected { code, detail } => {
                        let text = String::from_utf8_lossy(line.bytes).into_owned();
                        tally.reject(&text, code, line.number, Some(&detail))?;
                    }
                }
            }
            if items.is_empty() {
                break;
            }
            let group = Group {
                request_id: format!("{}-{}", self.prefix, self.next_index),
                items,
                attempts: 0,
            };
            self.next_index += 1;
            // The channel holds at most the groups pending, fewer than its
            // capacity; a closed channel means the stream failed, which the
            // answer side reports (and the group is resent from pending).
            let _ = sender.try_send(operation.request(&group.request_id, items_of(&group)));
            pending.push_back(group);
        }
        Ok(())
    }
}

/// What a line of the input is.
#[derive(Debug, PartialEq)]
pub(crate) enum Classified {
    Blank,
    /// The text to send for it.
    Item(String),
    /// Refused before sending.
    Rejected {
        code: &'static str,
        detail: String,
    },
}

/// A line of the packaging line's commands: a scan when it parses as GS1
/// data with a GTIN (its GTIN, lot and expiry must then match the
/// command's); otherwise it must be a serial (1-20 chars of CSET 82).
fn classify_line(
    line: &[u8],
    overlong: bool,
    gtin: &gs1::Gtin,
    lot: Option<(&str, Option<&str>)>,
) -> Classified {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Classified::Blank;
    }
    if overlong {
        return Classified::Rejected {
            code: "MALFORMED",
            detail: format!("line longer than {LINE_BYTES_MAX} bytes"),
        };
    }
    let parsed = gs1::parse_any(line);
    if let Ok((data, form)) = &parsed
        && let Some(scanned) = data.gtin()
    {
        return classify_scan(data, *form, scanned, gtin, lot);
    }
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(_) => {
            return Classified::Rejected {
                code: "MALFORMED",
                detail: "not UTF-8 text".to_owned(),
            };
        }
    };
    match gs1::Serial::new(text) {
        Ok(serial) => Classified::Item(serial.as_str().to_owned()),
        Err(serial_error) => Classified::Rejected {
            code: "MALFORMED",
            detail: match parsed {
                // Looks like a scan that failed: its parse error says more.
                Err(parse_error) if looks_like_scan(line) => format!("scan: {parse_error}"),
                _ => format!("serial: {serial_error}"),
            },
        },
    }
}

fn classify_scan(
    data: &gs1::Gs1Data,
    form: gs1::InputForm,
    scanned: &gs1::Gtin,
    gtin: &gs1::Gtin,
    lot: Option<(&str, Option<&str>)>,
) -> Classified {
    if scanned != gtin {
        return Classified::Rejected {
            code: "GTIN_MISMATCH",
            detail: format!(
                "{form} has GTIN {}, not {}",
                scanned.as_str(),
                gtin.as_str()
            ),
        };
    }
    if let Some((lot, expiry)) = lot {
        if let Some(scanned_lot) = data.lot()
            && scanned_lot.as_str() != lot
        {
            return Classified::Rejected {
                code: "LOT_MISMATCH",
                detail: format!("{form} has lot {}, not {lot}", scanned_lot.as_str()),
            };
        }
        if let (Some(expiry), Some(scanned_expiry)) = (expiry, data.expiry())
            && scanned_expiry.to_string() != expiry
        {
            return Classified::Rejected {
                code: "EXPIRY_MISMATCH",
                detail: format!("{form} has expiry {scanned_expiry}, not {expiry}"),
            };
        }
    }
    match data.serial() {
        Some(serial) => Classified::Item(serial.as_str().to_owned()),
        None => Classified::Rejected {
            code: "MALFORMED",
            detail: format!("{form} has no serial (21)"),
        },
    }
}

/// Whether a line that failed to parse was meant as a scan rather than a
/// serial: the way each encoding starts, or a group separator.
fn looks_like_scan(line: &[u8]) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.starts_with(b"]")
        || lower.starts_with(b"(")
        || lower.starts_with(b"urn:epc:")
        || lower.starts_with(b"http://")
        || lower.starts_with(b"https://")
        || line.contains(&gs1::GROUP_SEPARATOR)
}

/// A line of the status commands: one encoded identifier (any encoding the
/// server parses), sent as it is; only what the API cannot carry (too long,
/// not UTF-8) is refused here, as the server would (field `encoded`).
pub(crate) fn classify_encoded(line: &[u8], overlong: bool) -> Classified {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Classified::Blank;
    }
    match encoded_item(line, overlong) {
        Ok(text) => Classified::Item(text.to_owned()),
        Err(violation) => Classified::Rejected {
            code: "MALFORMED",
            detail: format!("{}: {}", violation.field, violation.description),
        },
    }
}

/// The text to send as `PackIdentifier.encoded`, or why the API cannot
/// carry it: longer than [`ENCODED_BYTES_MAX`] (`overlong`: longer than
/// [`LINE_BYTES_MAX`], only its start read) or not UTF-8.
pub(crate) fn encoded_item(bytes: &[u8], overlong: bool) -> Result<&str, FieldViolation> {
    if overlong || bytes.len() > ENCODED_BYTES_MAX {
        let length = if overlong {
            format!("more than {LINE_BYTES_MAX} bytes")
        } else {
            format!("{} bytes", bytes.len())
        };
        return Err(FieldViolation {
            field: "encoded".to_owned(),
            rule: ValidationRule::Length as i32,
            description: format!("{length}; at most {ENCODED_BYTES_MAX}"),
        });
    }
    std::str::from_utf8(bytes).map_err(|error| FieldViolation {
        field: "encoded".to_owned(),
        rule: ValidationRule::Charset as i32,
        description: format!("not UTF-8 text (byte {})", error.valid_up_to()),
    })
}

/// A line of input: its 1-based number and bytes without the terminator.
pub(crate) struct Line<'a> {
    pub(crate) number: u64,
    pub(crate) bytes: &'a [u8],
    /// Longer than [`LINE_BYTES_MAX`]: `bytes` holds only its start.
    pub(crate) overlong: bool,
}

/// Reads lines of at most [`LINE_BYTES_MAX`] bytes; a longer line is
/// flagged and skipped without being held in memory.
pub(crate) struct Lines<R> {
    reader: R,
    buffer: Vec<u8>,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self {
            reader,
            buffer: Vec::new(),
            number: 0,
        }
    }

    /// The next line (LF or CRLF ended, or the last unterminated one), or
    /// `None` at the end of the input.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buffer.clear();
        let limit = u64::try_from(LINE_BYTES_MAX).unwrap_or(u64::MAX) + 2;
        let read = <&mut R as io::Read>::take(&mut self.reader, limit)
            .read_until(b'\n', &mut self.buffer)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        let ended = self.buffer.last() == Some(&b'\n');
        if ended {
            self.buffer.pop();
        }
        if self.buffer.last() == Some(&b'\r') {
            self.buffer.pop();
        }
        let overlong = self.buffer.len() > LINE_BYTES_MAX;
        if overlong && !ended {
            self.skip_rest_of_line()?;
        }
        Ok(Some(Line {
            number: self.number,
            bytes: &self.buffer,
            overlong,
        }))
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.reader.consume(end + 1);
                    return Ok(());
                }
                None => {
                    let length = available.len();
                    self.reader.consume(length);
                }
            }
        }
    }
}

/// Where a bulk command reads its lines: a file, read twice (first to
/// count and hash its lines, then to send them), or standard input, read
/// to its end first (at most [`STDIN_BYTES_MAX`] bytes).
pub(crate) enum Input {
    File(PathBuf),
    Stdin(Arc<[u8]>),
}

impl Input {
    /// Opens FILE ("-": reads standard input), so a missing file is
    /// reported before anything is sent.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        if path != Path::new("-") {
            File::open(path).with_context(|| format!("open {}", path.display()))?;
            return Ok(Self::File(path.to_owned()));
        }
        let limit = u64::try_from(STDIN_BYTES_MAX).unwrap_or(u64::MAX) + 1;
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("read standard input")?;
        if bytes.len() > STDIN_BYTES_MAX {
            return Err(anyhow!(
                "standard input is longer than {STDIN_BYTES_MAX} bytes: give it as a file"
            ));
        }
        Ok(Self::Stdin(bytes.into()))
    }

    fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Stdin(_) => "standard input".to_owned(),
        }
    }

    /// Its lines, from the start.
    fn lines(&self) -> anyhow::Result<Lines<Box<dyn BufRead + Send>>> {
        let reader: Box<dyn BufRead + Send> = match self {
            Self::File(path) => Box::new(BufReader::new(
                File::open(path).with_context(|| format!("open {}", path.display()))?,
            )),
            Self::Stdin(bytes) => Box::new(io::Cursor::new(Arc::clone(bytes))),
        };
        Ok(Lines::new(reader))
    }

    /// First pass: the non-blank lines (for the progress bar) and a hash
    /// of their content (for the default request id prefix).
    fn scan(&self) -> anyhow::Result<(u64, u128)> {
        let mut lines = self.lines()?;
        let mut hasher = Xxh3Default::new();
        let mut count = 0;
        while let Some(line) = lines
            .next_line()
            .with_context(|| format!("read {}", self.name()))?
        {
            let content = line.bytes.trim_ascii();
            if content.is_empty() {
                continue;
            }
            count += 1;
            hasher.update(content);
            hasher.update(b"\n");
        }
        Ok((count, hasher.digest128()))
    }
}

/// `TAG-<hash>`: the same file, parameters and group size give the same
/// prefix, hence the same request ids; anything else gives other ids.
fn default_prefix<O: Operation>(operation: &O, group_size: u32, content_hash: u128) -> String {
    rpc::derived_request_id(
        O::TAG,
        &[
            &operation.identity(),
            &group_size.to_string(),
            &format!("{content_hash:032x}"),
        ],
    )
}

/// `FILE.EXTENSION` beside FILE, or `STDIN_STEM.EXTENSION` in the current
/// directory when FILE is "-" (standard input).
pub(crate) fn refused_path(file: &Path, extension: &str, stdin_stem: &str) -> PathBuf {
    if file == Path::new("-") {
        return PathBuf::from(format!("{stdin_stem}.{extension}"));
    }
    let mut name = OsString::from(file.as_os_str());
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

/// Counts of outcomes and the rejected-items file, written as we go.
struct Tally {
    applied: u64,
    unchanged: u64,
    rejected: BTreeMap<String, u64>,
    rejected_total: u64,
    /// What items not accepted are called ([`Operation::REFUSED`]).
    word: &'static str,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    bar: ProgressBar,
}

impl Tally {
    fn new(path: PathBuf, word: &'static str, bar: ProgressBar) -> Self {
        Self {
            applied: 0,
            unchanged: 0,
            rejected: BTreeMap::new(),
            rejected_total: 0,
            word,
            path,
            file: None,
            bar,
        }
    }

    fn record(&mut self, item: &Item, outcome: Outcome) -> anyhow::Result<()> {
        match outcome {
            Outcome::Applied => {
                self.applied += 1;
                self.bar.inc(1);
            }
            Outcome::Unchanged => {
                self.unchanged += 1;
                self.bar.inc(1);
            }
            Outcome::Rejected { code, detail } => {
                self.reject(&item.text, &code, item.line, detail.as_deref())?;
            }
        }
        Ok(())
    }

    /// Records one rejected item: `subject<TAB>CODE (line N)[: detail]`.
    fn reject(
        &mut self,
        subject: &str,
        code: &str,
        line: u64,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut reason = format!("{code} (line {line})");
        if let Some(detail) = detail {
            reason.push_str(": ");
            reason.push_str(&escape_control(detail));
        }
        let subject = escape_control(subject);
        if self.file.is_none() {
            let file = File::create(&self.path)
                .with_context(|| format!("create {}", self.path.display()))?;
            self.file = Some(BufWriter::new(file));
        }
        if let Some(file) = self.file.as_mut() {
            writeln!(file, "{subject}\t{reason}")
                .with_context(|| format!("write {}", self.path.display()))?;
        }
        self.rejected_total += 1;
        *self.rejected.entry(code.to_owned()).or_default() += 1;
        if self.rejected_total <= REJECTIONS_SHOWN_MAX {
            note(&self.bar, &format!("{}: {subject}: {reason}", self.word));
        } else if self.rejected_total == REJECTIONS_SHOWN_MAX + 1 {
            note(
                &self.bar,
                &format!(
                    "(further {} items only in {})",
                    self.word,
                    self.path.display()
                ),
            );
        }
        self.bar.inc(1);
        Ok(())
    }

    /// Prints the summary on standard output; 1 if anything was rejected.
    /// The JSON keys of items not accepted are named after [`Self::word`]
    /// (`rejected`, `rejected_by_reason`, `rejected_file` or `refused`, …).
    fn finish<O: Operation>(
        mut self,
        json: bool,
        prefix: &str,
        groups: u64,
    ) -> anyhow::Result<ExitCode> {
        if let Some(mut file) = self.file.take() {
            file.flush()
                .with_context(|| format!("write {}", self.path.display()))?;
        } else if self.path.exists() {
            // A clean run must not leave an earlier run's rejections behind.
            std::fs::remove_file(&self.path)
                .with_context(|| format!("remove stale {}", self.path.display()))?;
        }
        let rejected_file = (self.rejected_total > 0).then(|| self.path.display().to_string());
        let word = self.word;
        if json {
            let mut summary = Map::new();
            summary.insert("accepted".to_owned(), json!(self.applied));
            summary.insert("already_done".to_owned(), json!(self.unchanged));
            summary.insert(word.to_owned(), json!(self.rejected_total));
            summary.insert(format!("{word}_by_reason"), json!(self.rejected));
            summary.insert(format!("{word}_file"), json!(rejected_file));
            summary.insert("groups".to_owned(), json!(groups));
            summary.insert("request_id_prefix".to_owned(), json!(prefix));
            println!("{}", Value::Object(summary));
        } else {
            println!("{}: {}", O::APPLIED, self.applied);
            println!("{}: {}", O::UNCHANGED, self.unchanged);
            println!("{word}: {}", self.rejected_total);
            for (code, count) in &self.rejected {
                println!("  {code}: {count}");
            }
        }
        match rejected_file {
            Some(path) => {
                eprintln!("{} {word} items written to {path}", self.rejected_total);
                Ok(ExitCode::FAILURE)
            }
            None => Ok(ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtin() -> gs1::Gtin {
        gs1::Gtin::new("09520123456788").unwrap()
    }

    fn check(line: &str, lot: Option<(&str, Option<&str>)>, expected: Classified) {
        assert_eq!(
            classify_line(line.as_bytes(), false, &gtin(), lot),
            expected,
            "line {line:?}"
        );
    }

    fn rejected(code: &'static str, detail: &str) -> Classified {
        Classified::Rejected {
            code,
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn classifies_lines() {
        let lot = Some(("ABC", Some("251231")));
        check("", None, Classified::Blank);
        check("  \t", None, Classified::Blank);
        check("XYZ123", None, Classified::Item("XYZ123".to_owned()));
        check(" XYZ123 ", None, Classified::Item("XYZ123".to_owned()));
        check(
            "(01)09520123456788(17)251231(10)ABC(21)XYZ",
            lot,
            Classified::Item("XYZ".to_owned()),
        );
        check(
            "https://id.gs1.org/01/09520123456788/21/S1",
            None,
            Classified::Item("S1".to_owned()),
        );
        check(
            "(01)09520123456788(10)OTHER(21)XYZ",
            lot,
            rejected("LOT_MISMATCH", "bracketed has lot OTHER, not ABC"),
        );
        check(
            "(01)09520123456788(17)260101(21)XYZ",
            lot,
            rejected("EXPIRY_MISMATCH", "bracketed has expiry 260101, not 251231"),
        );
        check(
            "(01)00012345600012(21)XYZ",
            None,
            rejected(
                "GTIN_MISMATCH",
                "bracketed has GTIN 00012345600012, not 09520123456788",
            ),
        );
        check(
            "(01)09520123456788(10)ABC",
            None,
            rejected("MALFORMED", "bracketed has no serial (21)"),
        );
        let Classified::Rejected { code, detail } =
            classify_line(b"bad serial!", false, &gtin(), None)
        else {
            panic!("accepted a serial with a space");
        };
        assert_eq!(code, "MALFORMED");
        assert!(detail.starts_with("serial: "), "{detail}");
        let Classified::Rejected { detail, .. } =
            classify_line(b"(01)09520123456789(21)XYZ", false, &gtin(), None)
        else {
            panic!("accepted a scan with a bad check digit");
        };
        assert!(detail.starts_with("scan: "), "{detail}");
    }

    #[test]
    fn reads_bounded_lines() {
        let long = "x".repeat(LINE_BYTES_MAX + 10);
        let input = format!("a\r\n\n{long}\nb");
        let mut lines = Lines {
            reader: io::Cursor::new(input.into_bytes()),
            buffer: Vec::new(),
            number: 0,
        };
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            seen.push((
                line.number,
                String::from_utf8_lossy(line.bytes)
                    .chars()
                    .take(3)
                    .collect::<String>(),
                line.overlong,
            ));
        }
        assert_eq!(
            seen,
            vec![
                (1, "a".to_owned(), false),
                (2, String::new(), false),
                (3, "xxx".to_owned(), true),
                (4, "b".to_owned(), false),
            ]
        );
    }

    #[test]
    fn refused_path_is_beside_the_file() {
        assert_eq!(
            refused_path(Path::new("/tmp/serials.txt"), "rejected", "commission"),
            PathBuf::from("/tmp/serials.txt.rejected")
        );
        assert_eq!(
            refused_path(Path::new("-"), "refused", "undo"),
            PathBuf::from("undo.refused")
        );
    }

    #[test]
    fn classifies_encoded_lines() {
        assert_eq!(classify_encoded(b" \t", false), Classified::Blank);
        assert_eq!(
            classify_encoded(b" ]d2010952012345678821X\x1d10L \r", false),
            Classified::Item("]d2010952012345678821X\u{1d}10L".to_owned())
        );
        // Not parsed here: the server answers a bad scan with its violation.
        assert_eq!(
            classify_encoded(b"(01)0952012345678", false),
            Classified::Item("(01)0952012345678".to_owned())
        );
        let long = "9".repeat(ENCODED_BYTES_MAX + 1);
        assert_eq!(
            classify_encoded(long.as_bytes(), false),
            rejected("MALFORMED", "encoded: 513 bytes; at most 512")
        );
        let Classified::Rejected { code, detail } = classify_encoded(b"(01)\xff", false) else {
            panic!("non-UTF-8 input was accepted");
        };
        assert_eq!(code, "MALFORMED");
        assert_eq!(detail, "encoded: not UTF-8 text (byte 4)");
    }

    #[test]
    fn stdin_input_is_read_from_memory() {
        let input = Input::Stdin(Arc::from(&b"a\n\n b \r\n"[..]));
        let (count, hash) = input.scan().unwrap();
        assert_eq!(count, 2);
        let file = Input::Stdin(Arc::from(&b"a\nb\n"[..]));
        assert_eq!(file.scan().unwrap(), (2, hash));
    }

    #[test]
    fn default_prefix_is_stable() {
        // The hash input is the identity, the group size and the content
        // hash, joined by line feeds: ids of earlier runs stay valid.
        let mut hasher = Xxh3Default::new();
        hasher.update(b"identity\n400\n");
        hasher.update(format!("{:032x}", 7u128).as_bytes());
        assert_eq!(
            rpc::derived_request_id("c", &["identity", "400", &format!("{:032x}", 7u128)]),
            format!("c-{:032x}", hasher.digest128())
        );
    }
}
