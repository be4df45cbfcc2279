//! `serialctl sscc`: cases and pallets (AggregationService). `pool` requests
//! SSCCs, `pack` and `unpack` put children (pack scans or SSCCs) into a
//! parent or take them out, `show` prints the tree below an SSCC with its
//! packs counted by state, and `decommission` decommissions every pack
//! below an SSCC in one durable change.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use proto::serial::v1 as pb;
use proto::serial::v1::aggregation_service_client::AggregationServiceClient;

use crate::Connection;
use crate::output::{code, words};
use crate::rpc;
use crate::status::Reason;

#[derive(Debug, clap::Args)]
pub(crate) struct SsccArgs {
    #[command(subcommand)]
    command: SsccCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SsccCommand {
    /// Request a pool of randomised SSCCs; prints them one per line.
    Pool(PoolArgs),
    /// Put children (pack scans or SSCCs) into a case or pallet, all or nothing.
    Pack(AggregateArgs),
    /// Take children out of a case or pallet (all of them when none are given).
    Unpack(AggregateArgs),
    /// Print the tree below an SSCC with its packs counted by state.
    Show(ShowArgs),
    /// Decommission every pack below an SSCC in one durable change.
    Decommission(CascadeArgs),
}

#[derive(Debug, clap::Args)]
struct PoolArgs {
    /// GS1 company prefix (6-12 digits) of a registered product.
    #[arg(long, value_name = "DIGITS")]
    company_prefix: String,
    /// SSCC extension digit (0-9).
    #[arg(long, value_name = "D", default_value_t = 0)]
    extension_digit: u32,
    /// SSCCs wanted (at most the server's max_ssccs_requestable).
    #[arg(long, value_name = "N")]
    count: u64,
    /// Packaging line the SSCCs are for.
    #[arg(long, value_name = "LINE")]
    line: String,
    /// GLN or site code.
    #[arg(long, value_name = "LOC", default_value = "")]
    location: String,
    /// Idempotency key: the same id gives the same SSCCs again. Default: a fresh id.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Write the SSCCs to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct AggregateArgs {
    /// The case or pallet (18 digits, or `(00)` and 18 digits).
    #[arg(long, value_name = "SSCC")]
    parent: String,
    /// Where: a GLN or a site code.
    #[arg(long, value_name = "LOC", env = "SERIALCTL_LOCATION")]
    location: String,
    /// Operator or workstation id, recorded with the events.
    #[arg(long, value_name = "A", env = "SERIALCTL_ACTOR", default_value = "")]
    actor: String,
    /// Idempotency key. Default: derived from the request, so re-running the
    /// same command replays the stored answer.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Read more children from FILE, one per line.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Children: pack scans (element string, Digital Link, EPC URI) or SSCCs.
    children: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The SSCC.
    sscc: String,
    /// Levels to print below it (0 = the server's maximum).
    #[arg(long, default_value_t = 0)]
    depth: u32,
    /// Nodes to print at most (0 = the server's maximum).
    #[arg(long, default_value_t = 0)]
    nodes: u32,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CascadeArgs {
    /// The case or pallet.
    sscc: String,
    /// The state to set for every pack below it.
    #[arg(long, value_enum, value_name = "R")]
    reason: Reason,
    /// Where: a GLN or a site code (an undo must give the same).
    #[arg(long, value_name = "LOC", env = "SERIALCTL_LOCATION")]
    location: String,
    /// Who (an undo must come from the same actor).
    #[arg(long, value_name = "A", env = "SERIALCTL_ACTOR", default_value = "")]
    actor: String,
    /// Free text recorded with the events.
    #[arg(long, value_name = "TEXT", default_value = "")]
    note: String,
    /// Idempotency key. Default: derived from the request.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

/// An SSCC given as 18 digits or with its AI `(00)` / `00` in front.
fn sscc_text(text: &str) -> Option<String> {
    let digits = text
        .strip_prefix("(00)")
        .or_else(|| {
            (text.len() == 20)
                .then(|| text.strip_prefix("00"))
                .flatten()
        })
        .unwrap_or(text);
    (digits.len() == 18 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.to_owned())
}

fn child(text: &str) -> pb::AggregationChild {
    let child = match sscc_text(text) {
        Some(sscc) => pb::aggregation_child::Child::Sscc(sscc),
        None => pb::aggregation_child::Child::Pack(pb::PackIdentifier {
            identifier: Some(pb::pack_identifier::Identifier::Encoded(text.to_owned())),
        }),
    };
    pb::AggregationChild { child: Some(child) }
}

fn children(args: &AggregateArgs) -> anyhow::Result<Vec<String>> {
    let mut list = args.children.clone();
    if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        list.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(list)
}

fn parent(text: &str) -> anyhow::Result<String> {
    sscc_text(text).ok_or_else(|| anyhow!("--parent: {text:?} is not an SSCC of 18 digits"))
}

/// Runs `serialctl sscc …`.
pub(crate) async fn run(connection: Connection, args: SsccArgs) -> anyhow::Result<ExitCode> {
    let channel = rpc::connect(&connection, &connection.auth).await?;
    let mut client = AggregationServiceClient::new(channel);
    match args.command {
        SsccCommand::Pool(pool) => run_pool(&mut client, pool).await,
        SsccCommand::Pack(pack) => run_aggregate(&mut client, pack, true).await,
        SsccCommand::Unpack(unpack) => run_aggregate(&mut client, unpack, false).await,
        SsccCommand::Show(show) => run_show(&mut client, show).await,
        SsccCommand::Decommission(cascade) => run_cascade(&mut client, cascade).await,
    }
}

type Client = AggregationServiceClient<rpc::Channel>;

async fn run_pool(client: &mut Client, args: PoolArgs) -> anyhow::Result<ExitCode> {
    let request = pb::RequestSsccPoolRequest {
        request_id: rpc::request_id_or_fresh(args.request_id.as_deref())?,
        extension_digit: args.extension_digit,
        company_prefix: args.company_prefix.clone(),
        count: args.count,
        line_id: args.line.clone(),
        location: args.location.clone(),
        page_token: String::new(),
    };
    let mut ssccs = Vec::new();
    let (mut header, mut summary) = (None, None);
    let mut token = String::new();
    // A broken stream resumes from its last page token.
    for attempt in 0..rpc::ATTEMPTS_MAX {
        let mut resumed = request.clone();
        resumed.page_token = token.clone();
        let result: Result<(), tonic::Status> = async {
            let mut stream = client.request_sscc_pool(resumed).await?.into_inner();
            while let Some(message) = stream.message().await? {
                match message.message {
                    Some(pb::request_sscc_pool_response::Message::Header(h)) => header = Some(h),
                    Some(pb::request_sscc_pool_response::Message::Chunk(c)) => {
                        ssccs.extend(c.ssccs);
                        token = c.next_page_token;
                    }
                    Some(pb::request_sscc_pool_response::Message::Summary(s)) => summary = Some(s),
                    None => {}
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => break,
            Err(status) if rpc::is_retryable(&status, true) && attempt + 1 < rpc::ATTEMPTS_MAX => {
                eprintln!("note: SSCC pool: {}; resuming", rpc::describe(&status));
                tokio::time::sleep(rpc::backoff(attempt)).await;
            }
            Err(status) => return Err(rpc::status_error("SSCC pool", &status)),
        }
    }
    let header = header.ok_or_else(|| anyhow!("the server sent no pool header"))?;
    let summary = summary.ok_or_else(|| anyhow!("the server sent no pool summary"))?;
    let mut checksum = xxhash_rust::xxh3::Xxh3Default::new();
    for sscc in &ssccs {
        checksum.update(sscc.as_bytes());
        checksum.update(b"\n");
    }
    if ssccs.len() as u64 != summary.sscc_count || checksum.digest() != summary.ssccs_xxh3 {
        return Err(anyhow!(
            "the SSCCs received do not match the pool's summary (count or checksum); run again with --request-id {}",
            request.request_id
        ));
    }
    let mut text = ssccs.join("\n");
    text.push('\n');
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    eprintln!(
        "pool {}: {} of {} SSCCs granted ({} left for extension digit {} and prefix {}); request id {}",
        header.pool_id,
        header.granted_count,
        header.requested_count,
        header.remaining,
        header.extension_digit,
        header.company_prefix,
        request.request_id
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_aggregate(
    client: &mut Client,
    args: AggregateArgs,
    packing: bool,
) -> anyhow::Result<ExitCode> {
    let parent = parent(&args.parent)?;
    let list = children(&args)?;
    if packing && list.is_empty() {
        return Err(anyhow!("give the children to pack (arguments or --file)"));
    }
    let tag = if packing { "pack" } else { "unpack" };
    let request_id = match &args.request_id {
        Some(id) => rpc::request_id_or_fresh(Some(id))?,
        None => {
            let mut parts = vec![parent.as_str(), args.location.as_str(), args.actor.as_str()];
            parts.extend(list.iter().map(String::as_str));
            rpc::derived_request_id(tag, &parts)
        }
    };
    let wire: Vec<pb::AggregationChild> = list.iter().map(|c| child(c)).collect();
    let (applied, results, child_count, unpacked) = if packing {
        let request = pb::PackRequest {
            request_id: request_id.clone(),
            parent_sscc: parent.clone(),
            children: wire,
            location: args.location.clone(),
            actor: args.actor.clone(),
            event_time: None,
        };
        let answer = rpc::call_with_retry("pack", || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.pack(request).await }
        })
        .await?;
        (answer.applied, answer.results, answer.child_count, 0)
    } else {
        let request = pb::UnpackRequest {
            request_id: request_id.clone(),
            parent_sscc: parent.clone(),
            children: wire,
            location: args.location.clone(),
            actor: args.actor.clone(),
            event_time: None,
        };
        let answer = rpc::call_with_retry("unpack", || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.unpack(request).await }
        })
        .await?;
        (
            answer.applied,
            answer.results,
            answer.child_count,
            answer.unpacked_count,
        )
    };
    for (text, result) in list.iter().zip(&results) {
        let outcome = pb::AggregationChildOutcome::try_from(result.outcome)
            .unwrap_or(pb::AggregationChildOutcome::Unspecified);
        if matches!(
            outcome,
            pb::AggregationChildOutcome::Accepted | pb::AggregationChildOutcome::Unchanged
        ) {
            continue;
        }
        let mut line = format!(
            "refused\t{text}\t{}",
            words(&code(outcome.as_str_name(), "AGGREGATION_CHILD_OUTCOME_"))
        );
        if !result.current_parent_sscc.is_empty() {
            line.push_str(&format!(" (in {})", result.current_parent_sscc));
        }
        if let Some(error) = &result.error {
            line.push_str(&format!(": {}: {}", error.field, error.description));
        }
        println!("{line}");
    }
    if applied {
        if packing {
            println!(
                "packed into {parent}: {} children now (request id {request_id})",
                child_count
            );
        } else {
            println!(
                "unpacked {unpacked} from {parent}: {child_count} children left (request id {request_id})"
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!("nothing {tag}ed: every child must be accepted (request id {request_id})");
        Ok(ExitCode::FAILURE)
    }
}

fn state_name(state: i32, reason: i32) -> String {
    let state = pb::PackState::try_from(state).unwrap_or(pb::PackState::Unknown);
    let mut name = words(&code(state.as_str_name(), "PACK_STATE_"));
    if state == pb::PackState::Decommissioned
        && let Ok(reason) = pb::DecommissionReason::try_from(reason)
    {
        name.push_str(&format!(
            " ({})",
            words(&code(reason.as_str_name(), "DECOMMISSION_REASON_"))
        ));
    }
    name
}

fn print_node(node: &pb::HierarchyNode, indent: usize) {
    let pad = "  ".repeat(indent);
    match &node.node {
        Some(pb::hierarchy_node::Node::Sscc(sscc)) => {
            let counts: Vec<String> = node
                .pack_counts
                .iter()
                .map(|c| format!("{} {}", c.count, state_name(c.state, c.reason)))
                .collect();
            let counts = if counts.is_empty() {
                "no packs".to_owned()
            } else {
                counts.join(", ")
            };
            println!(
                "{pad}SSCC {sscc}: {} direct children; packs below: {counts}",
                node.child_count
            );
        }
        Some(pb::hierarchy_node::Node::Pack(pack)) => println!(
            "{pad}pack {} {} lot {}: {}",
            pack.gtin,
            pack.serial,
            pack.lot.as_deref().unwrap_or("-"),
            state_name(node.state, node.decommission_reason)
        ),
        None => {}
    }
    for child in &node.children {
        print_node(child, indent + 1);
    }
}

fn node_json(node: &pb::HierarchyNode) -> serde_json::Value {
    let mut value = serde_json::Map::new();
    match &node.node {
        Some(pb::hierarchy_node::Node::Sscc(sscc)) => {
            value.insert("sscc".into(), sscc.clone().into());
            value.insert("child_count".into(), node.child_count.into());
            value.insert(
                "pack_counts".into(),
                node.pack_counts
                    .iter()
                    .map(|c| serde_json::json!({"state": state_name(c.state, c.reason), "count": c.count}))
                    .collect(),
            );
        }
        Some(pb::hierarchy_node::Node::Pack(pack)) => {
            value.insert("gtin".into(), pack.gtin.clone().into());
            value.insert("serial".into(), pack.serial.clone().into());
            value.insert("lot".into(), pack.lot.clone().into());
            value.insert(
                "state".into(),
                state_name(node.state, node.decommission_reason).into(),
            );
        }
        None => {}
    }
    if !node.children.is_empty() {
        value.insert(
            "children".into(),
            node.children.iter().map(node_json).collect(),
        );
    }
    value.into()
}

async fn run_show(client: &mut Client, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let sscc = sscc_text(&args.sscc)
        .ok_or_else(|| anyhow!("SSCC: {:?} is not an SSCC of 18 digits", args.sscc))?;
    let request = pb::GetHierarchyRequest {
        sscc,
        max_depth: args.depth,
        max_nodes: args.nodes,
    };
    let answer = rpc::call_with_retry("hierarchy", || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.get_hierarchy(request).await }
    })
    .await?;
    let root = answer
        .root
        .ok_or_else(|| anyhow!("the server sent no tree"))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ancestors": answer.ancestor_ssccs,
                "truncated": answer.truncated,
                "root": node_json(&root),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !answer.ancestor_ssccs.is_empty() {
        println!("inside: {}", answer.ancestor_ssccs.join(" < "));
    }
    print_node(&root, 0);
    if answer.truncated {
        println!("(cut at --depth/--nodes or the server's limits)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_cascade(client: &mut Client, args: CascadeArgs) -> anyhow::Result<ExitCode> {
    let sscc = sscc_text(&args.sscc)
        .ok_or_else(|| anyhow!("SSCC: {:?} is not an SSCC of 18 digits", args.sscc))?;
    let reason = args.reason.message();
    let request_id = match &args.request_id {
        Some(id) => rpc::request_id_or_fresh(Some(id))?,
        None => rpc::derived_request_id(
            "cascade",
            &[
                &sscc,
                reason.as_str_name(),
                &args.location,
                &args.actor,
                &args.note,
            ],
        ),
    };
    let request = pb::DecommissionHierarchyRequest {
        request_id: request_id.clone(),
        sscc: sscc.clone(),
        reason: reason.into(),
        location: args.location.clone(),
        actor: args.actor.clone(),
        event_time: None,
        note: args.note.clone(),
    };
    let answer = rpc::call_with_retry("decommission", || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.decommission_hierarchy(request).await }
    })
    .await?;
    println!(
        "{sscc}: {} packs below, {} decommissioned now{} (request id {request_id})",
        answer.pack_count,
        answer.decommissioned,
        if answer.replayed { ", replayed" } else { "" }
    );
    for count in &answer.outcomes {
        let outcome = pb::DecommissionOutcome::try_from(count.outcome)
            .unwrap_or(pb::DecommissionOutcome::Unspecified);
        println!(
            "  {:>8}  {}",
            count.count,
            words(&code(outcome.as_str_name(), "DECOMMISSION_OUTCOME_"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssccs_are_told_from_pack_scans() {
        let sscc = "106141412345678908";
        assert_eq!(sscc_text(sscc).as_deref(), Some(sscc));
        assert_eq!(sscc_text("(00)106141412345678908").as_deref(), Some(sscc));
        assert_eq!(sscc_text("00106141412345678908").as_deref(), Some(sscc));
        assert_eq!(sscc_text("(01)09520123456788(21)X"), None);
        assert!(matches!(
            child("(01)09520123456788(21)X").child,
            Some(pb::aggregation_child::Child::Pack(_))
        ));
    }
}
