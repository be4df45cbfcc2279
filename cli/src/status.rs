//! The returns processor's pack-level commands (StatusService):
//! `serialctl decommission` and `serialctl undo`, bulk streams of scans
//! with per-item outcomes (run by `bulk.rs`), and `serialctl pack flag`.
//! Lot recall and product withdrawal are in `master_data.rs`.
//!
//! Items are sent as the scans they are (`PackIdentifier.encoded`) and
//! parsed by the server, so a malformed scan is refused with the field and
//! the rule it breaks, like any other item. Every EU outcome that is not
//! "applied" or "already set" is refused, with the pack's state and the EU
//! alert a national system would raise.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use proto::serial::v1::pack_identifier::Identifier;
use proto::serial::v1::status_service_client::StatusServiceClient;
use proto::serial::v1::{
    DecommissionOutcome, DecommissionReason, DecommissionRequest, DecommissionResponse,
    EuAlertCode, FlagPackRequest, PackFlagAction, PackIdentifier, PackState, UndoOutcome,
    UndoRequest, UndoResponse,
};
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codec::Streaming;

use crate::Connection;
use crate::bulk::{self, Answer, Classified, Job, Operation, Outcome, StreamArgs};
use crate::master_data::yes_no;
use crate::output::{code, timestamp, words};
use crate::rpc::{self, AuthArgs};

/// Items per group unless `--group-size` says otherwise: small enough for
/// several groups in flight and a steady progress bar, large enough that
/// the per-group commit is not the bottleneck.
const GROUP_SIZE_DEFAULT: u32 = 1_000;

/// Longest note or reason text the API accepts, in characters.
const TEXT_LENGTH_MAX: usize = 256;

/// Longest location or actor the API accepts, in characters.
const IDENTIFIER_LENGTH_MAX: usize = 64;

const DECOMMISSION_HELP: &str = "\
Outcomes: decommissioned, or already set (the same reason again: a double \
scan, nothing changed) are accepted; every other item is refused (already \
inactive, unknown product, unknown serial, not commissioned, unknown lot, \
lot mismatch, expiry mismatch, recalled, withdrawn, expired, permission \
denied, malformed) and written with its reason, the pack's state and the EU \
alert to the refused file (INPUT.refused unless --refused is given). \
A summary by outcome goes to standard output.

Re-running the same command on the same input sends the same groups with the \
same request ids, so the server answers with the outcomes it stored and \
nothing is applied twice: after a crash or a broken connection, simply run it \
again. A deliberate repeat (say, decommissioning again after an undo) needs \
another --request-id-prefix, or it only replays the first answers.

Exit status: 0 when every item was decommissioned or already set; 1 when any \
item was refused or malformed (every item is still answered); 2 on a usage \
error, an unreadable INPUT, or when the server cannot be reached or fails \
(after retries).";

const UNDO_HELP: &str = "\
EU FMD Art. 13: a pack returns to active only when the undo comes from the \
party that decommissioned it (today: the same --actor; once tokens are \
issued, the token's principal) at the same --location, within the server's \
undo window (10 days; no limit for locked), the pack is not expired, and \
neither the lot is recalled, the product withdrawn, nor the reason destroyed \
or stolen.

Outcomes: reactivated, or already active (nothing changed) are accepted; \
every other item is refused (undo window exceeded, different user, different \
location, not undoable, recalled, withdrawn, expired, reason mismatch, \
unknown product, unknown serial, not commissioned, unknown lot, lot \
mismatch, expiry mismatch, permission denied, malformed) and written with \
its reason, the pack's state and the EU alert to the refused file \
(INPUT.refused unless --refused is given). A summary by outcome goes to \
standard output.

Re-running the same command on the same input replays the stored answers \
(same request ids), so nothing is applied twice.

Exit status: 0 when every item was reactivated or already active; 1 when any \
item was refused or malformed (every item is still answered); 2 on a usage \
error, an unreadable INPUT, or when the server cannot be reached or fails \
(after retries).";

/// Arguments shared by `decommission` and `undo`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Where the change is made: a GLN (13 digits) or a site code, 1-64 characters of GS1
    /// CSET 82. An undo must give the location of the decommission.
    #[arg(long, value_name = "LOC", env = "SERIALCTL_LOCATION")]
    location: String,
    /// Who at the location: an operator or workstation id, 0-64 characters of GS1 CSET 82,
    /// recorded with the events. An undo must come from the actor who decommissioned.
    #[arg(long, value_name = "A", env = "SERIALCTL_ACTOR", default_value = "")]
    actor: String,
    /// Free text recorded with the events (destruction certificate, export destination, …),
    /// at most 256 characters.
    #[arg(long, value_name = "TEXT", default_value = "")]
    note: String,
    #[command(flatten)]
    stream: StreamArgs,
    /// Items per group, at most the server's max_items_per_group (GetServerInfo).
    #[arg(
        long,
        value_name = "N",
        default_value_t = GROUP_SIZE_DEFAULT,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    group_size: u32,
    /// Write the refused items, one per line (`INPUT<TAB>OUTCOME (line N): detail`), to FILE.
    /// Default: INPUT.refused beside INPUT, or ./decommission.refused (./undo.refused) for
    /// standard input. Created only when an item is refused; a run without refusals removes
    /// an earlier run's file.
    #[arg(long, value_name = "FILE")]
    refused: Option<PathBuf>,
    /// Scan file: one pack per line in any encoding `serialctl parse` accepts (element string
    /// with real GS bytes, <GS>, \x1d or {GS}; bracketed; Digital Link, current or legacy; EPC
    /// URI), of any GTINs. Lot and expiry, when a scan carries them, are checked against the
    /// pack. Blank lines are skipped. "-": standard input, read to its end first (at most
    /// 64 MiB).
    #[arg(value_name = "INPUT")]
    file: PathBuf,
}

impl StatusArgs {
    /// Checks the group parameters here, so a typo is a usage error rather
    /// than every group refused by the server.
    fn check(&self) -> anyhow::Result<()> {
        check_identifier("--location", &self.location, true)?;
        check_identifier("--actor", &self.actor, false)?;
        check_text("--note", &self.note, false)
    }

    /// This run of `command` (`decommission` or `undo`), its input opened.
    fn job(&self, command: &str) -> anyhow::Result<Job<'_>> {
        Ok(Job {
            stream: &self.stream,
            input: bulk::Input::open(&self.file)?,
            group_size: Some(self.group_size),
            refused: self
                .refused
                .clone()
                .unwrap_or_else(|| bulk::refused_path(&self.file, "refused", command)),
        })
    }

    /// Every group parameter shared by both rpcs, for the default request
    /// id prefix.
    fn identity(&self) -> String {
        format!("{}\n{}\n{}", self.location, self.actor, self.note)
    }
}

/// Arguments of `serialctl decommission`.
#[derive(Debug, clap::Args)]
#[command(after_help = DECOMMISSION_HELP)]
pub(crate) struct DecommissionArgs {
    /// The state to set (EU FMD). Destroyed and stolen cannot be undone.
    #[arg(long, value_enum, value_name = "R")]
    reason: Reason,
    #[command(flatten)]
    common: StatusArgs,
}

/// Arguments of `serialctl undo`.
#[derive(Debug, clap::Args)]
#[command(after_help = UNDO_HELP)]
pub(crate) struct UndoArgs {
    /// Undo only packs decommissioned with this reason (others: REASON_MISMATCH, unchanged),
    /// so a later decommission by someone else is not undone by mistake. Default: any.
    #[arg(long, value_enum, value_name = "R")]
    expected_reason: Option<Reason>,
    #[command(flatten)]
    common: StatusArgs,
}

/// The EU FMD decommission reasons, as the command line names them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Reason {
    /// Supplied or dispensed to the public.
    Dispensed,
    /// Destroyed (cannot be undone).
    Destroyed,
    /// Exported outside the market.
    Exported,
    /// Stolen (cannot be undone).
    Stolen,
    /// Taken as a sample by the authorities.
    Sample,
    /// Supplied as a free sample.
    FreeSample,
    /// Locked, e.g. under investigation (undo has no time limit).
    Locked,
    /// Checked out, e.g. supplied to a hospital or an institution.
    CheckedOut,
}

impl Reason {
    pub(crate) fn message(self) -> DecommissionReason {
        match self {
            Reason::Dispensed => DecommissionReason::Dispensed,
            Reason::Destroyed => DecommissionReason::Destroyed,
            Reason::Exported => DecommissionReason::Exported,
            Reason::Stolen => DecommissionReason::Stolen,
            Reason::Sample => DecommissionReason::Sample,
            Reason::FreeSample => DecommissionReason::FreeSample,
            Reason::Locked => DecommissionReason::Locked,
            Reason::CheckedOut => DecommissionReason::CheckedOut,
        }
    }
}

type Client = StatusServiceClient<rpc::Channel>;

/// Runs `serialctl decommission`.
pub(crate) async fn run_decommission(
    connection: Connection,
    args: DecommissionArgs,
) -> anyhow::Result<ExitCode> {
    args.common.check()?;
    let job = args.common.job("decommission")?;
    let channel = rpc::connect(&connection, &connection.auth).await?;
    let limit = rpc::server_limits(channel.clone())
        .await?
        .max_items_per_group;
    let operation = DecommissionOperation {
        client: StatusServiceClient::new(channel),
        args: &args,
    };
    bulk::run(operation, job, limit).await
}

/// Runs `serialctl undo`.
pub(crate) async fn run_undo(connection: Connection, args: UndoArgs) -> anyhow::Result<ExitCode> {
    args.common.check()?;
    let job = args.common.job("undo")?;
    let channel = rpc::connect(&connection, &connection.auth).await?;
    let limit = rpc::server_limits(channel.clone())
        .await?
        .max_items_per_group;
    let operation = UndoOperation {
        client: StatusServiceClient::new(channel),
        args: &args,
    };
    bulk::run(operation, job, limit).await
}

fn encoded(items: Vec<String>) -> Vec<PackIdentifier> {
    items
        .into_iter()
        .map(|text| PackIdentifier {
            identifier: Some(Identifier::Encoded(text)),
        })
        .collect()
}

/// `serialctl decommission`: the Decommission rpc.
struct DecommissionOperation<'a> {
    client: Client,
    args: &'a DecommissionArgs,
}

impl Operation for DecommissionOperation<'_> {
    type Request = DecommissionRequest;
    type Response = DecommissionResponse;
    const ACTION: &'static str = "decommission";
    const APPLIED: &'static str = "decommissioned";
    const UNCHANGED: &'static str = "already set";
    const REFUSED: &'static str = "refused";
    const TAG: &'static str = "d";
    const GROUP_SIZE: u32 = GROUP_SIZE_DEFAULT;

    fn classify(&self, line: &[u8], overlong: bool) -> Classified {
        bulk::classify_encoded(line, overlong)
    }

    fn identity(&self) -> String {
        format!(
            "decommission\n{}\n{}",
            self.args.reason.message().as_str_name(),
            self.args.common.identity()
        )
    }

    fn request(&self, request_id: &str, items: Vec<String>) -> DecommissionRequest {
        let common = &self.args.common;
        DecommissionRequest {
            request_id: request_id.to_owned(),
            reason: self.args.reason.message().into(),
            location: common.location.clone(),
            actor: common.actor.clone(),
            items: encoded(items),
            event_time: None,
            note: common.note.clone(),
        }
    }

    async fn open(
        &self,
        requests: ReceiverStream<DecommissionRequest>,
    ) -> Result<Streaming<DecommissionResponse>, Status> {
        let mut client = self.client.clone();
        Ok(client.decommission(requests).await?.into_inner())
    }

    fn answer(response: DecommissionResponse) -> Answer {
        let outcomes = response
            .results
            .iter()
            .map(|result| match result.outcome() {
                DecommissionOutcome::Decommissioned => Outcome::Applied,
                DecommissionOutcome::AlreadySet => Outcome::Unchanged,
                DecommissionOutcome::Malformed => bulk::malformed(result.error.as_ref()),
                other => refusal(
                    bulk::strip(other.as_str_name(), "DECOMMISSION_OUTCOME_"),
                    result.state(),
                    result.current_reason(),
                    result.alert(),
                    None,
                ),
            })
            .collect();
        Answer {
            request_id: response.request_id,
            status: response.status,
            outcomes,
        }
    }
}

/// `serialctl undo`: the Undo rpc.
struct UndoOperation<'a> {
    client: Client,
    args: &'a UndoArgs,
}

impl UndoOperation<'_> {
    fn expected_reason(&self) -> DecommissionReason {
        self.args
            .expected_reason
            .map_or(DecommissionReason::Unspecified, Reason::message)
    }
}

impl Operation for UndoOperation<'_> {
    type Request = UndoRequest;
    type Response = UndoResponse;
    const ACTION: &'static str = "undo";
    const APPLIED: &'static str = "reactivated";
    const UNCHANGED: &'static str = "already active";
    const REFUSED: &'static str = "refused";
    const TAG: &'static str = "u";
    const GROUP_SIZE: u32 = GROUP_SIZE_DEFAULT;

    fn classify(&self, line: &[u8], overlong: bool) -> Classified {
        bulk::classify_encoded(line, overlong)
    }

    fn identity(&self) -> String {
        format!(
            "undo\n{}\n{}",
            self.expected_reason().as_str_name(),
            self.args.common.identity()
        )
    }

    fn request(&self, request_id: &str, items: Vec<String>) -> UndoRequest {
        let common = &self.args.common;
        UndoRequest {
            request_id: request_id.to_owned(),
            expected_reason: self.expected_reason().into(),
            location: common.location.clone(),
            actor: common.actor.clone(),
            items: encoded(items),
            note: common.note.clone(),
        }
    }

    async fn open(
        &self,
        requests: ReceiverStream<UndoRequest>,
    ) -> Result<Streaming<UndoResponse>, Status> {
        let mut client = self.client.clone();
        Ok(client.undo(requests).await?.into_inner())
    }

    fn answer(response: UndoResponse) -> Answer {
        let outcomes = response
            .results
            .iter()
            .map(|result| match result.outcome() {
                UndoOutcome::Reactivated => Outcome::Applied,
                UndoOutcome::AlreadyActive => Outcome::Unchanged,
                UndoOutcome::Malformed => bulk::malformed(result.error.as_ref()),
                other => refusal(
                    bulk::strip(other.as_str_name(), "UNDO_OUTCOME_"),
                    result.state(),
                    result.current_reason(),
                    result.alert(),
                    result.decommissioned_at.as_ref().map(|at| at.seconds),
                ),
            })
            .collect();
        Answer {
            request_id: response.request_id,
            status: response.status,
            outcomes,
        }
    }
}

/// A refused item, its detail saying what the pack is and what a national
/// system would raise: `state: decommissioned (destroyed); EU alert: pack
/// already inactive[; decommissioned at: …]`.
fn refusal(
    code_name: String,
    state: PackState,
    reason: DecommissionReason,
    alert: EuAlertCode,
    decommissioned_at: Option<i64>,
) -> Outcome {
    let mut parts = Vec::new();
    if state != PackState::Unspecified {
        let mut text = format!("state: {}", code(state.as_str_name(), "PACK_STATE_"));
        if reason != DecommissionReason::Unspecified {
            text.push_str(&format!(
                " ({})",
                words(&code(reason.as_str_name(), "DECOMMISSION_REASON_"))
            ));
        }
        parts.push(text);
    }
    if alert != EuAlertCode::Unspecified {
        parts.push(format!(
            "EU alert: {}",
            words(&code(alert.as_str_name(), "EU_ALERT_CODE_"))
        ));
    }
    if decommissioned_at.is_some() {
        parts.push(format!(
            "decommissioned at: {}",
            timestamp(decommissioned_at)
        ));
    }
    Outcome::Rejected {
        code: code_name,
        detail: (!parts.is_empty()).then(|| parts.join("; ")),
    }
}

/// A location or actor: at most 64 characters of GS1 CSET 82.
fn check_identifier(flag: &str, value: &str, required: bool) -> anyhow::Result<()> {
    if value.is_empty() {
        return if required {
            Err(anyhow!("{flag}: required"))
        } else {
            Ok(())
        };
    }
    if value.len() > IDENTIFIER_LENGTH_MAX {
        return Err(anyhow!(
            "{flag} {value:?}: {} characters, at most {IDENTIFIER_LENGTH_MAX}",
            value.chars().count()
        ));
    }
    if let Some((position, found)) = value
        .char_indices()
        .find(|(_, c)| !u8::try_from(*c).is_ok_and(gs1::is_cset82))
    {
        return Err(anyhow!(
            "{flag} {value:?}: character {found:?} at position {position} is not in GS1 CSET 82"
        ));
    }
    Ok(())
}

/// A note or reason: at most 256 printable characters.
pub(crate) fn check_text(flag: &str, value: &str, required: bool) -> anyhow::Result<()> {
    let count = value.chars().count();
    if required && count == 0 {
        return Err(anyhow!("{flag}: required"));
    }
    if count > TEXT_LENGTH_MAX {
        return Err(anyhow!(
            "{flag}: {count} characters, at most {TEXT_LENGTH_MAX}"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(anyhow!("{flag}: control characters are not allowed"));
    }
    Ok(())
}

/// Arguments of `serialctl pack`.
#[derive(Debug, clap::Args)]
pub(crate) struct PackArgs {
    #[command(subcommand)]
    command: PackCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PackCommand {
    /// Mark one pack suspect or illegitimate (reported by verification), or clear both marks.
    Flag(FlagArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["suspect", "illegitimate", "clear"])))]
struct FlagArgs {
    /// Mark the pack suspect (VRS additionalInfo "Suspect").
    #[arg(long)]
    suspect: bool,
    /// Mark the pack illegitimate (VRS additionalInfo "Illegitimate").
    #[arg(long)]
    illegitimate: bool,
    /// Clear both marks.
    #[arg(long)]
    clear: bool,
    /// Why (an investigation reference), 1-256 characters.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Idempotency key (1-64 printable ASCII); default: a fresh one. (Marks can be set and
    /// cleared again, so a key derived from the arguments would replay an earlier answer.)
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,
    /// The pack, in any encoding `serialctl parse` accepts (GTIN and serial required).
    #[arg(value_name = "ITEM")]
    item: String,
}

/// Connects to the status service and sends `request` by `call` (with a
/// fresh client and a copy of the request on every attempt), retried as
/// [`rpc::call_with_retry`] retries; `action` names the call in messages.
pub(crate) async fn call_status<R, T, F, Fut>(
    connection: &Connection,
    auth: &AuthArgs,
    action: &str,
    request: &R,
    call: F,
) -> anyhow::Result<T>
where
    R: Clone,
    F: Fn(StatusServiceClient<rpc::Channel>, R) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let client = StatusServiceClient::new(rpc::connect(connection, auth).await?);
    rpc::call_with_retry(action, || call(client.clone(), request.clone())).await
}

/// Runs `serialctl pack …`.
pub(crate) async fn run_pack(connection: Connection, args: PackArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PackCommand::Flag(flag) => pack_flag(&connection, &connection.auth, flag).await,
    }
}

async fn pack_flag(
    connection: &Connection,
    auth: &AuthArgs,
    args: FlagArgs,
) -> anyhow::Result<ExitCode> {
    check_text("--reason", &args.reason, true)?;
    let action = if args.suspect {
        PackFlagAction::SetSuspect
    } else if args.illegitimate {
        PackFlagAction::SetIllegitimate
    } else {
        PackFlagAction::Clear
    };
    let request = FlagPackRequest {
        request_id: rpc::request_id_or_fresh(args.request_id.as_deref())?,
        item: Some(PackIdentifier {
            identifier: Some(Identifier::Encoded(args.item.clone())),
        }),
        action: action.into(),
        reason: args.reason.clone(),
    };
    let response = call_status(
        connection,
        auth,
        "flag pack",
        &request,
        |mut client, request| async move { client.flag_pack(request).await },
    )
    .await?;
    let state = code(response.state().as_str_name(), "PACK_STATE_");
    if args.json {
        println!(
            "{}",
            json!({
                "state": state,
                "suspect": response.suspect,
                "illegitimate": response.illegitimate,
                "unchanged": response.unchanged,
                "request_id": request.request_id,
            })
        );
    } else {
        println!("state: {state}");
        println!("suspect: {}", yes_no(response.suspect));
        println!("illegitimate: {}", yes_no(response.illegitimate));
        println!("unchanged: {}", yes_no(response.unchanged));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_state_reason_and_alert() {
        let Outcome::Rejected { code, detail } = refusal(
            "ALREADY_INACTIVE".to_owned(),
            PackState::Decommissioned,
            DecommissionReason::FreeSample,
            EuAlertCode::PackAlreadyInactive,
            None,
        ) else {
            panic!("not a refusal");
        };
        assert_eq!(code, "ALREADY_INACTIVE");
        assert_eq!(
            detail.as_deref(),
            Some("state: decommissioned (free sample); EU alert: pack already inactive")
        );
        let Outcome::Rejected { detail, .. } = refusal(
            "UNDO_WINDOW_EXCEEDED".to_owned(),
            PackState::Decommissioned,
            DecommissionReason::Dispensed,
            EuAlertCode::UndoWindowExceeded,
            Some(1_709_164_800),
        ) else {
            panic!("not a refusal");
        };
        assert_eq!(
            detail.as_deref(),
            Some(
                "state: decommissioned (dispensed); EU alert: undo window exceeded; decommissioned at: 2024-02-29T00:00:00Z"
            )
        );
        let Outcome::Rejected { detail, .. } = refusal(
            "PERMISSION_DENIED".to_owned(),
            PackState::Unspecified,
            DecommissionReason::Unspecified,
            EuAlertCode::Unspecified,
            None,
        ) else {
            panic!("not a refusal");
        };
        assert_eq!(detail, None);
    }

    #[test]
    fn group_parameters_are_checked_here() {
        assert!(check_identifier("--location", "0614141000005", true).is_ok());
        assert!(check_identifier("--location", "SITE-7/dock_2", true).is_ok());
        assert!(check_identifier("--location", "", true).is_err());
        assert!(check_identifier("--actor", "", false).is_ok());
        let error = check_identifier("--actor", "Jane Doe", false).unwrap_err();
        assert!(error.to_string().contains("position 4"), "{error}");
        assert!(check_identifier("--location", &"9".repeat(65), true).is_err());
        assert!(check_text("--note", "certificate #42, incinerated", false).is_ok());
        assert!(check_text("--reason", "", true).is_err());
        assert!(check_text("--note", "a\tb", false).is_err());
        assert!(check_text("--note", &"x".repeat(257), false).is_err());
    }
}
