//! `serialctl audit verify`: asks the server to walk the event log's hash
//! chain (the audit trail) and reports the first break.

use std::process::ExitCode;

use proto::serial::v1 as pb;
use proto::serial::v1::event_service_client::EventServiceClient;

use crate::Connection;

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Check the whole event log's hash chain; exit status 1 when it is broken.
    Verify,
}

/// Prints what the check found: exit status 0 when the chain holds, 1 when
/// it is broken (errors reaching the server exit 2).
pub(crate) async fn run(connection: Connection, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify = args.command;
    let mut client =
        EventServiceClient::new(crate::rpc::connect(&connection, &connection.auth).await?);
    let report = client
        .verify_audit_trail(pb::VerifyAuditTrailRequest {})
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "audit verify failed: {}: {}",
                status.code(),
                status.message()
            )
        })?
        .into_inner();
    let hash: String = report
        .head_hash
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("events: {}", report.events);
    if report.unchained > 0 {
        println!(
            "unchained (written before the chain existed): {}",
            report.unchained
        );
    }
    println!("head: sequence {} chain hash {hash}", report.head_sequence);
    if report.break_sequence == 0 {
        println!("chain intact");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "chain BROKEN at sequence {}: {}",
            report.break_sequence, report.break_reason
        );
        Ok(ExitCode::FAILURE)
    }
}
