//! `serialctl verify`: ask the server whether packs are genuine
//! (VerificationService.VerifyBatch) and print one answer per pack: the
//! state, the DSCSA VRS view (verified, failure reason, additional info),
//! the EU alert and whether the lot and expiry match.
//!
//! Scans are sent as they were given (`PackIdentifier.encoded`) and parsed
//! by the server, so a malformed scan is answered with the field and rule it
//! breaks, like any other item. A scan file is read on its own thread and
//! sent in batches, a few in flight; answers are printed in input order,
//! one line per non-blank input line. Verification changes nothing, so a
//! batch whose call fails transiently is simply sent again.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use indicatif::ProgressBar;
use proto::serial::v1::pack_identifier::Identifier;
use proto::serial::v1::verification_service_client::VerificationServiceClient;
use proto::serial::v1::{
    AdditionalInfo, DecommissionReason, EuAlertCode, FieldMatch, FieldViolation, PackIdentifier,
    ValidationRule, VerificationFailureReason, VerificationResult, VerifyBatchRequest,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Connection;
use crate::bulk::{self, Lines};
use crate::output::{self, code, escape_control, note, words};
use crate::rpc;

/// Most items per batch, whatever larger limit the server publishes.
const BATCH_ITEMS_MAX: u32 = 1024;

/// Batches sent and not yet printed (besides the one being printed).
const BATCHES_IN_FLIGHT: usize = 4;

/// Lines read ahead of the batches being sent.
const LINES_READ_AHEAD: usize = 8192;

/// Bytes of an over-long input echoed in its answer.
const INPUT_SHOWN_MAX: usize = 64;

const EXIT_HELP: &str = "\
Exit status: 0 when every pack is verified (VRS verified: true); 1 when any \
pack is not verified or any input is malformed (every item is still answered); \
2 on a usage error, an unreadable FILE, or when the server cannot be reached \
or fails (after retries).";

/// Arguments of `serialctl verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub(crate) struct VerifyArgs {
    /// Scans to verify, each in any encoding `serialctl parse` accepts: an
    /// element string (real GS bytes, or <GS>, \x1d or {GS}), the bracketed
    /// form, a Digital Link URI (current or legacy) or an EPC URI. Lot and
    /// expiry, when the scan carries them, are checked against the record.
    #[arg(
        value_name = "INPUT",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    inputs: Vec<OsString>,
    /// Read the scans from FILE, one per line ("-": standard input). Blank
    /// lines are skipped, a trailing CR and surrounding spaces are dropped;
    /// every other line gets exactly one answer, in order, with its line
    /// number, and a summary goes to standard error.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print one JSON object per pack (one per line) instead of text.
    #[arg(long)]
    json: bool,
}

/// Where the scans come from.
enum Source {
    Arguments(Vec<OsString>),
    File(File),
    Stdin,
}

/// What the progress display knows of the input.
enum Progress {
    /// Arguments: too few to need one.
    None,
    /// The number of items (a regular file, counted first).
    Known(u64),
    /// A pipe or standard input, or a file not counted (no terminal).
    Unknown,
}

/// One input item, in input order.
struct Entry {
    /// Line number in the scan file (none for arguments).
    line: Option<u64>,
    /// The input as shown in answers (lossy UTF-8; over-long input cut).
    input: String,
    /// The text sent, or why it cannot be sent at all.
    item: Result<String, FieldViolation>,
}

/// A batch sent (or being sent) and the entries it answers.
struct Batch {
    entries: Vec<Entry>,
    results: JoinHandle<anyhow::Result<Vec<VerificationResult>>>,
}

/// Runs `serialctl verify`: 0 when every item is verified, 1 when any is
/// not (or is malformed); errors are reported by the caller (status 2).
pub(crate) async fn run(connection: Connection, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (source, progress) = open_source(&args)?;
    let channel = rpc::connect(&connection, &connection.auth).await?;
    let batch_size = batch_size(channel.clone()).await?;
    let client = VerificationServiceClient::new(channel);
    let bar = match progress {
        Progress::None => ProgressBar::hidden(),
        Progress::Known(length) => output::progress_bar(length, "packs"),
        Progress::Unknown => output::progress_counter("packs"),
    };

    let (line_sender, line_receiver) = mpsc::channel(LINES_READ_AHEAD);
    std::thread::spawn(move || read_source(source, &line_sender));
    let (batch_sender, mut batches) = mpsc::channel(BATCHES_IN_FLIGHT);
    tokio::spawn(dispatch(
        line_receiver,
        batch_sender,
        client,
        batch_size,
        bar.clone(),
    ));

    let mut tally = Tally::default();
    let mut stdout = io::stdout().lock();
    while let Some(batch) = batches.recv().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => return Err(stopped(&bar, &tally, error)),
        };
        let results = match batch.results.await {
            Ok(Ok(results)) => results,
            Ok(Err(error)) => return Err(stopped(&bar, &tally, error)),
            Err(error) => return Err(stopped(&bar, &tally, anyhow!("verify: {error}"))),
        };
        let mut text = String::new();
        let mut results = results.into_iter();
        for entry in &batch.entries {
            let answer = match &entry.item {
                Ok(_) => match results.next() {
                    Some(result) => Answer::Result(result),
                    None => {
                        return Err(stopped(
                            &bar,
                            &tally,
                            anyhow!("verify: the server answered fewer items than were sent"),
                        ));
                    }
                },
                Err(violation) => Answer::Malformed(violation.clone()),
            };
            tally.record(&answer);
            let line = if args.json {
                json_line(entry, &answer)
            } else {
                text_line(entry, &answer)
            };
            text.push_str(&line);
            text.push('\n');
        }
        let written = bar.suspend(|| {
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
        });
        if let Err(error) = written {
            bar.abandon();
            return Err(anyhow!("write standard output: {error}"));
        }
        bar.inc(batch.entries.len() as u64);
    }
    bar.finish_and_clear();
    if args.file.is_some() {
        eprint!("{}", tally.summary());
    }
    Ok(if tally.items == tally.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ends a run early: the bar goes, and what was answered is said.
fn stopped(bar: &ProgressBar, tally: &Tally, error: anyhow::Error) -> anyhow::Error {
    bar.abandon();
    eprintln!(
        "verify stopped after {} answered items ({} verified)",
        tally.items, tally.verified
    );
    error
}

/// Opens FILE (so a missing file is reported before connecting) and counts
/// its items for the progress bar when the bar is shown.
fn open_source(args: &VerifyArgs) -> anyhow::Result<(Source, Progress)> {
    let Some(path) = &args.file else {
        return Ok((Source::Arguments(args.inputs.clone()), Progress::None));
    };
    if path == Path::new("-") {
        return Ok((Source::Stdin, Progress::Unknown));
    }
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let regular = file.metadata().is_ok_and(|metadata| metadata.is_file());
    // Counting reads the file once more: only for a visible bar, and never
    // for a pipe, which would be consumed.
    let progress = if regular && io::stderr().is_terminal() {
        Progress::Known(count_items(path)?)
    } else {
        Progress::Unknown
    };
    Ok((Source::File(file), progress))
}

/// Non-blank lines of a file.
fn count_items(path: &Path) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut lines = Lines::new(BufReader::new(file));
    let mut count = 0;
    while let Some(line) = lines
        .next_line()
        .with_context(|| format!("read {}", path.display()))?
    {
        if !line.bytes.trim_ascii().is_empty() {
            count += 1;
        }
    }
    Ok(count)
}

/// Items per batch: the server's max_verify_batch_items, at most
/// [`BATCH_ITEMS_MAX`] (and that when the server publishes none).
async fn batch_size(channel: rpc::Channel) -> anyhow::Result<usize> {
    let published = rpc::server_limits(channel).await?.max_verify_batch_items;
    let size = if published == 0 {
        BATCH_ITEMS_MAX
    } else {
        published.min(BATCH_ITEMS_MAX)
    };
    Ok(usize::try_from(size).unwrap_or(1))
}

/// Reads every item of the source, in order, into the channel; a read
/// error ends it. Runs on its own thread: reading may block (a terminal, a
/// scanner on standard input) without holding back answers.
fn read_source(source: Source, sender: &mpsc::Sender<anyhow::Result<Entry>>) {
    match source {
        Source::Arguments(inputs) => {
            for input in inputs {
                let entry = entry(None, input.as_encoded_bytes(), false);
                if sender.blocking_send(Ok(entry)).is_err() {
                    return;
                }
            }
        }
        Source::File(file) => read_lines(BufReader::new(file), "the scan file", sender),
        Source::Stdin => read_lines(io::stdin().lock(), "standard input", sender),
    }
}

fn read_lines<R: BufRead>(reader: R, name: &str, sender: &mpsc::Sender<anyhow::Result<Entry>>) {
    let mut lines = Lines::new(reader);
    let mut last = 0;
    loop {
        let next = match lines.next_line() {
            Ok(Some(line)) => {
                last = line.number;
                let bytes = line.bytes.trim_ascii();
                if bytes.is_empty() {
                    continue;
                }
                Ok(entry(Some(line.number), bytes, line.overlong))
            }
            Ok(None) => return,
            Err(error) => Err(anyhow!("read {name} after line {last}: {error}")),
        };
        let failed = next.is_err();
        if sender.blocking_send(next).is_err() || failed {
            return;
        }
    }
}

/// An input item: sent as it is, unless it cannot be sent at all (too long
/// for the API, or not UTF-8), in which case it is answered here in the
/// server's terms (field `encoded`).
fn entry(line: Option<u64>, bytes: &[u8], overlong: bool) -> Entry {
    let item = bulk::encoded_item(bytes, overlong).map(str::to_owned);
    let input = match &item {
        Ok(text) => text.clone(),
        Err(violation) if violation.rule() == ValidationRule::Length => {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(INPUT_SHOWN_MAX)]);
            format!("{shown}…")
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    Entry { line, input, item }
}

/// Groups the items read into batches (as many as are ready, up to the
/// batch size, so a slow source still gets prompt answers), starts each
/// batch's call, and hands the batches on in order.
async fn dispatch(
    mut lines: mpsc::Receiver<anyhow::Result<Entry>>,
    batches: mpsc::Sender<anyhow::Result<Batch>>,
    client: VerificationServiceClient<rpc::Channel>,
    batch_size: usize,
    bar: ProgressBar,
) {
    while let Some(first) = lines.recv().await {
        let mut entries = Vec::with_capacity(batch_size);
        let mut failure = None;
        match first {
            Ok(entry) => entries.push(entry),
            Err(error) => failure = Some(error),
        }
        while failure.is_none() && entries.len() < batch_size {
            match lines.try_recv() {
                Ok(Ok(entry)) => entries.push(entry),
                Ok(Err(error)) => failure = Some(error),
                Err(_) => break,
            }
        }
        if !entries.is_empty() {
            let items: Vec<PackIdentifier> = entries
                .iter()
                .filter_map(|entry| entry.item.as_ref().ok())
                .map(|text| PackIdentifier {
                    identifier: Some(Identifier::Encoded(text.clone())),
                })
                .collect();
            let results = tokio::spawn(verify_batch(client.clone(), items, bar.clone()));
            if batches.send(Ok(Batch { entries, results })).await.is_err() {
                return;
            }
        }
        if let Some(error) = failure {
            let _ = batches.send(Err(error)).await;
            return;
        }
    }
}

/// One VerifyBatch call, sent again on a retryable failure (verification
/// changes nothing, so a resend is always safe). The n-th result answers
/// the n-th item.
async fn verify_batch(
    client: VerificationServiceClient<rpc::Channel>,
    items: Vec<PackIdentifier>,
    bar: ProgressBar,
) -> anyhow::Result<Vec<VerificationResult>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let count = items.len();
    let request = VerifyBatchRequest {
        items,
        ..Default::default()
    };
    let mut failures = 0;
    loop {
        let mut client = client.clone();
        match client.verify_batch(request.clone()).await {
            Ok(response) => {
                let results = response.into_inner().results;
                if results.len() != count {
                    return Err(anyhow!(
                        "verify: the server answered {} results for a batch of {count} items",
                        results.len()
                    ));
                }
                return Ok(results);
            }
            Err(status)
                if rpc::is_retryable(&status, true) && failures + 1 < rpc::STREAM_ATTEMPTS_MAX =>
            {
                let wait = rpc::backoff(failures);
                failures += 1;
                note(
                    &bar,
                    &format!(
                        "note: verify: {}; resending a batch of {count} items in {} ms (attempt {} of {})",
                        rpc::describe(&status),
                        wait.as_millis(),
                        failures + 1,
                        rpc::STREAM_ATTEMPTS_MAX
                    ),
                );
                tokio::time::sleep(wait).await;
            }
            Err(status) => return Err(rpc::status_error("verify", &status)),
        }
    }
}

/// The answer for one item.
enum Answer {
    Result(VerificationResult),
    /// Could not be sent (too long, not UTF-8).
    Malformed(FieldViolation),
}

impl Answer {
    /// The field violation of a malformed item.
    fn error(&self) -> Option<&FieldViolation> {
        match self {
            Answer::Result(result) => result.error.as_ref(),
            Answer::Malformed(violation) => Some(violation),
        }
    }

    /// The verdict of a well-formed item.
    fn result(&self) -> Option<&VerificationResult> {
        match self {
            Answer::Result(result) if result.error.is_none() => Some(result),
            _ => None,
        }
    }
}

fn state_code(result: &VerificationResult) -> String {
    code(result.state().as_str_name(), "PACK_STATE_")
}

fn reason_code(result: &VerificationResult) -> Option<String> {
    (result.decommission_reason() != DecommissionReason::Unspecified).then(|| {
        code(
            result.decommission_reason().as_str_name(),
            "DECOMMISSION_REASON_",
        )
    })
}

fn alert_code(result: &VerificationResult) -> Option<String> {
    match result.alert() {
        EuAlertCode::Unspecified => None,
        alert => Some(code(alert.as_str_name(), "EU_ALERT_CODE_")),
    }
}

fn match_code(value: FieldMatch) -> String {
    code(value.as_str_name(), "FIELD_MATCH_")
}

fn rule_code(violation: &FieldViolation) -> String {
    code(violation.rule().as_str_name(), "VALIDATION_RULE_")
}

/// The VRS `verificationFailureReason` text (DOMAIN.md §4).
fn failure_text(reason: VerificationFailureReason) -> Option<&'static str> {
    use VerificationFailureReason as R;
    match reason {
        R::Unspecified => None,
        R::NoMatchGtinSerial => Some("No_match_GTIN_Serial"),
        R::NoMatchGtinSerialLotExpiry => Some("No_match_GTIN_Serial_Lot_Expiry"),
        R::NoMatchGtinSerialLot => Some("No_match_GTIN_Serial_Lot"),
        R::NoMatchGtinSerialExpiry => Some("No_match_GTIN_Serial_Expiry"),
        R::NoReasonProvided => Some("No_reason_provided"),
        R::ManufacturerPolicy => Some("Manufacturer_policy"),
        R::NotForRedistribution => Some("Not_for_re-distribution"),
    }
}

/// The VRS `additionalInfo` text (DOMAIN.md §4).
fn info_text(info: AdditionalInfo) -> Option<&'static str> {
    match info {
        AdditionalInfo::Unspecified => None,
        AdditionalInfo::Expired => Some("Expired"),
        AdditionalInfo::ExpirationExtended => Some("ExpirationExtended"),
        AdditionalInfo::Recalled => Some("Recalled"),
        AdditionalInfo::Suspect => Some("Suspect"),
        AdditionalInfo::Illegitimate => Some("Illegitimate"),
    }
}

fn verified(result: &VerificationResult) -> bool {
    result.vrs.as_ref().is_some_and(|vrs| vrs.verified)
}

fn failure(result: &VerificationResult) -> Option<&'static str> {
    result
        .vrs
        .as_ref()
        .and_then(|vrs| failure_text(vrs.verification_failure_reason()))
}

fn info(result: &VerificationResult) -> Option<&'static str> {
    result
        .vrs
        .as_ref()
        .and_then(|vrs| info_text(vrs.additional_info()))
}

/// The flags set on a pack, by name.
fn flags(result: &VerificationResult) -> Vec<&'static str> {
    [
        ("expired", result.expired),
        ("recalled", result.recalled),
        ("withdrawn", result.withdrawn),
        ("suspect", result.suspect),
        ("illegitimate", result.illegitimate),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// The identifier as the server understood it, in bracketed form, or the
/// input when it was not understood.
fn identifier_text(entry: &Entry, answer: &Answer) -> String {
    if let Some(fields) = answer.result().and_then(|r| r.identifier.as_ref()) {
        let mut text = format!("(01){}", fields.gtin);
        if let Some(expiry) = &fields.expiry {
            let _ = write!(text, "(17){expiry}");
        }
        if let Some(lot) = &fields.lot {
            let _ = write!(text, "(10){lot}");
        }
        let _ = write!(text, "(21){}", fields.serial);
        return escape_control(&text);
    }
    if entry.input.is_empty() {
        "\"\"".to_owned()
    } else {
        escape_control(&entry.input)
    }
}

/// One line of text:
/// `[line N: ]IDENTIFIER: verified: yes|no [(REASON)]; state: S; …`.
fn text_line(entry: &Entry, answer: &Answer) -> String {
    let mut text = String::new();
    if let Some(line) = entry.line {
        let _ = write!(text, "line {line}: ");
    }
    text.push_str(&identifier_text(entry, answer));
    if let Some(violation) = answer.error() {
        let _ = write!(
            text,
            ": malformed: {}: {}: {}",
            violation.field,
            words(&rule_code(violation)),
            rpc::one_line(&escape_control(&violation.description))
        );
        return text;
    }
    let Some(result) = answer.result() else {
        return text;
    };
    text.push_str(if verified(result) {
        ": verified: yes"
    } else {
        ": verified: no"
    });
    if let Some(reason) = failure(result) {
        let _ = write!(text, " ({reason})");
    }
    let _ = write!(text, "; state: {}", state_code(result));
    if let Some(reason) = reason_code(result) {
        let _ = write!(text, " ({})", words(&reason));
    }
    if let Some(info) = info(result) {
        let _ = write!(text, "; info: {info}");
    }
    if let Some(alert) = alert_code(result) {
        let _ = write!(text, "; alert: {}", words(&alert));
    }
    let _ = write!(
        text,
        "; lot: {}; expiry: {}",
        words(&match_code(result.lot_match())),
        words(&match_code(result.expiry_match()))
    );
    let flags = flags(result);
    if !flags.is_empty() {
        let _ = write!(text, "; flags: {}", flags.join(", "));
    }
    text
}

/// One answer as JSON. Every key is always present, in this order (null
/// when it does not apply); codes are lower-case snake case, VRS texts as
/// GS1 Lightweight Verification Messaging writes them.
#[derive(Debug, Serialize)]
struct JsonAnswer<'a> {
    line: Option<u64>,
    input: &'a str,
    gtin: Option<&'a str>,
    serial: Option<&'a str>,
    lot: Option<&'a str>,
    expiry: Option<&'a str>,
    verified: bool,
    verification_failure_reason: Option<&'static str>,
    additional_info: Option<&'static str>,
    product_known: Option<bool>,
    state: Option<String>,
    decommission_reason: Option<String>,
    alert: Option<String>,
    lot_match: Option<String>,
    expiry_match: Option<String>,
    expired: Option<bool>,
    recalled: Option<bool>,
    withdrawn: Option<bool>,
    suspect: Option<bool>,
    illegitimate: Option<bool>,
    error: Option<JsonError<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonError<'a> {
    field: &'a str,
    rule: String,
    description: &'a str,
}

/// One JSON object on one line.
fn json_line(entry: &Entry, answer: &Answer) -> String {
    let result = answer.result();
    let fields = result.and_then(|r| r.identifier.as_ref());
    let json = JsonAnswer {
        line: entry.line,
        input: &entry.input,
        gtin: fields.map(|f| f.gtin.as_str()),
        serial: fields.map(|f| f.serial.as_str()),
        lot: fields.and_then(|f| f.lot.as_deref()),
        expiry: fields.and_then(|f| f.expiry.as_deref()),
        verified: result.is_some_and(verified),
        verification_failure_reason: result.and_then(failure),
        additional_info: result.and_then(info),
        product_known: result.map(|r| r.product_known),
        state: result.map(state_code),
        decommission_reason: result.and_then(reason_code),
        alert: result.and_then(alert_code),
        lot_match: result.map(|r| match_code(r.lot_match())),
        expiry_match: result.map(|r| match_code(r.expiry_match())),
        expired: result.map(|r| r.expired),
        recalled: result.map(|r| r.recalled),
        withdrawn: result.map(|r| r.withdrawn),
        suspect: result.map(|r| r.suspect),
        illegitimate: result.map(|r| r.illegitimate),
        error: answer.error().map(|violation| JsonError {
            field: &violation.field,
            rule: rule_code(violation),
            description: &violation.description,
        }),
    };
    // Strings, numbers and booleans always serialise.
    serde_json::to_string(&json).unwrap_or_default()
}

/// Counts of outcomes, for the summary.
#[derive(Debug, Default)]
struct Tally {
    items: u64,
    verified: u64,
    not_verified: u64,
    malformed: u64,
    by_reason: BTreeMap<String, u64>,
    by_rule: BTreeMap<String, u64>,
    by_alert: BTreeMap<String, u64>,
    by_info: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, answer: &Answer) {
        self.items += 1;
        if let Some(violation) = answer.error() {
            self.malformed += 1;
            let key = format!("{}: {}", violation.field, words(&rule_code(violation)));
            *self.by_rule.entry(key).or_default() += 1;
            return;
        }
        let Some(result) = answer.result() else {
            return;
        };
        if verified(result) {
            self.verified += 1;
        } else {
            self.not_verified += 1;
            let reason = failure(result).unwrap_or("(no reason given)");
            *self.by_reason.entry(reason.to_owned()).or_default() += 1;
        }
        if let Some(alert) = alert_code(result) {
            *self.by_alert.entry(words(&alert)).or_default() += 1;
        }
        if let Some(info) = info(result) {
            *self.by_info.entry(info.to_owned()).or_default() += 1;
        }
    }

    fn summary(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "items: {}", self.items);
        let _ = writeln!(text, "verified: {}", self.verified);
        let _ = writeln!(text, "not verified: {}", self.not_verified);
        for (reason, count) in &self.by_reason {
            let _ = writeln!(text, "  {reason}: {count}");
        }
        let _ = writeln!(text, "malformed: {}", self.malformed);
        for (rule, count) in &self.by_rule {
            let _ = writeln!(text, "  {rule}: {count}");
        }
        if !self.by_alert.is_empty() {
            let _ = writeln!(text, "EU alerts:");
            for (alert, count) in &self.by_alert {
                let _ = writeln!(text, "  {alert}: {count}");
            }
        }
        if !self.by_info.is_empty() {
            let _ = writeln!(text, "additional info:");
            for (info, count) in &self.by_info {
                let _ = writeln!(text, "  {info}: {count}");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::serial::v1::{PackFields, PackState, VrsAnswer};

    fn scan(input: &str) -> Entry {
        entry(Some(7), input.as_bytes(), false)
    }

    #[test]
    fn inputs_that_cannot_be_sent_are_answered_here() {
        let long = "9".repeat(bulk::ENCODED_BYTES_MAX + 1);
        let Err(violation) = entry(None, long.as_bytes(), false).item else {
            panic!("a {}-byte input was accepted", long.len());
        };
        assert_eq!(
            (violation.field.as_str(), violation.rule()),
            ("encoded", ValidationRule::Length)
        );
        let Err(violation) = entry(None, b"(01)\xff", false).item else {
            panic!("non-UTF-8 input was accepted");
        };
        assert_eq!(violation.rule(), ValidationRule::Charset);
        assert!(violation.description.contains("byte 4"), "{violation:?}");
        assert_eq!(
            scan("]d2010952012345678821X\u{1d}10L").item.ok().as_deref(),
            Some("]d2010952012345678821X\u{1d}10L")
        );
    }

    fn active() -> VerificationResult {
        VerificationResult {
            identifier: Some(PackFields {
                gtin: "09520123456788".to_owned(),
                serial: "ABC".to_owned(),
                lot: Some("L1".to_owned()),
                expiry: None,
            }),
            product_known: true,
            state: PackState::Active as i32,
            lot_match: FieldMatch::Matched as i32,
            expiry_match: FieldMatch::NotProvided as i32,
            vrs: Some(VrsAnswer {
                verified: true,
                verification_failure_reason: 0,
                additional_info: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn text_lines() {
        let entry = scan("(01)09520123456788(10)L1(21)ABC");
        assert_eq!(
            text_line(&entry, &Answer::Result(active())),
            "line 7: (01)09520123456788(10)L1(21)ABC: verified: yes; state: active; lot: matched; expiry: not provided"
        );
        let mut recalled = active();
        recalled.state = PackState::Decommissioned as i32;
        recalled.decommission_reason = DecommissionReason::CheckedOut as i32;
        recalled.recalled = true;
        recalled.vrs = Some(VrsAnswer {
            verified: true,
            verification_failure_reason: 0,
            additional_info: AdditionalInfo::Recalled as i32,
        });
        let line = text_line(&entry, &Answer::Result(recalled));
        assert!(
            line.ends_with(
                ": verified: yes; state: decommissioned (checked out); info: Recalled; lot: matched; expiry: not provided; flags: recalled"
            ),
            "{line}"
        );
        let mut mismatch = active();
        mismatch.lot_match = FieldMatch::Mismatched as i32;
        mismatch.alert = EuAlertCode::BatchDoesNotMatchSerial as i32;
        mismatch.vrs = Some(VrsAnswer {
            verified: false,
            verification_failure_reason: VerificationFailureReason::NoMatchGtinSerialLot as i32,
            additional_info: 0,
        });
        let line = text_line(&entry, &Answer::Result(mismatch));
        assert!(
            line.contains(": verified: no (No_match_GTIN_Serial_Lot); state: active; alert: batch does not match serial; lot: mismatched;"),
            "{line}"
        );
        let malformed = Answer::Result(VerificationResult {
            error: Some(FieldViolation {
                field: "encoded".to_owned(),
                rule: ValidationRule::CheckDigit as i32,
                description: "bad check digit".to_owned(),
            }),
            ..Default::default()
        });
        let control = super::entry(None, b"X\x1dY", false);
        assert_eq!(
            text_line(&control, &malformed),
            "X\\x1dY: malformed: encoded: check digit: bad check digit"
        );
    }

    #[test]
    fn json_lines_have_every_key() {
        let entry = scan("(01)09520123456788(10)L1(21)ABC");
        let good: serde_json::Value =
            serde_json::from_str(&json_line(&entry, &Answer::Result(active()))).unwrap();
        let bad: serde_json::Value = serde_json::from_str(&json_line(
            &entry,
            &Answer::Malformed(FieldViolation {
                field: "encoded".to_owned(),
                rule: ValidationRule::Length as i32,
                description: "too long".to_owned(),
            }),
        ))
        .unwrap();
        let keys = |value: &serde_json::Value| {
            value
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&good), keys(&bad));
        assert_eq!(good["state"], "active");
        assert_eq!(good["lot_match"], "matched");
        assert_eq!(good["verified"], true);
        assert_eq!(good["line"], 7);
        assert_eq!(bad["verified"], false);
        assert_eq!(bad["error"]["rule"], "length");
        assert!(bad["state"].is_null());
    }

    #[test]
    fn summary_counts_by_outcome() {
        let mut tally = Tally::default();
        tally.record(&Answer::Result(active()));
        let mut unknown = active();
        unknown.state = PackState::Unknown as i32;
        unknown.alert = EuAlertCode::UnknownProduct as i32;
        unknown.vrs = Some(VrsAnswer {
            verified: false,
            verification_failure_reason: VerificationFailureReason::NoMatchGtinSerial as i32,
            additional_info: 0,
        });
        tally.record(&Answer::Result(unknown));
        tally.record(&Answer::Malformed(FieldViolation {
            field: "encoded".to_owned(),
            rule: ValidationRule::Syntax as i32,
            description: String::new(),
        }));
        assert_eq!(
            tally.summary(),
            "items: 3\nverified: 1\nnot verified: 1\n  No_match_GTIN_Serial: 1\nmalformed: 1\n  encoded: syntax: 1\nEU alerts:\n  unknown product: 1\n"
        );
    }
}
