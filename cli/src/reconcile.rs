//! `serialctl reconcile`: what each pool handed out and what became of it,
//! what each lot holds, and the anomalies, as tables or JSON.

use std::process::ExitCode;

use proto::serial::v1 as pb;
use proto::serial::v1::reconciliation_service_client::ReconciliationServiceClient;
use serde_json::{Value, json};

use crate::Connection;
use crate::output::{Table, code, timestamp};

#[derive(Debug, clap::Args)]
pub(crate) struct ReconcileArgs {
    /// Only this GTIN.
    #[arg(long)]
    gtin: Option<String>,
    /// Only this lot (needs --gtin).
    #[arg(long)]
    lot: Option<String>,
    /// Only pools of this packaging line.
    #[arg(long)]
    line: Option<String>,
    /// Only pools created at or after this time (seconds since the epoch).
    #[arg(long)]
    from: Option<i64>,
    /// Only pools created before this time (seconds since the epoch).
    #[arg(long)]
    until: Option<i64>,
    /// Report pools with serials still allocated after this many seconds
    /// (default: the server's, 3 days).
    #[arg(long)]
    outstanding_age: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn at(seconds: Option<i64>) -> Option<prost_types::Timestamp> {
    seconds.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 })
}

/// Prints the report; exit status 0 with no anomaly, 1 with any.
pub(crate) async fn run(connection: Connection, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let mut client =
        ReconciliationServiceClient::new(crate::rpc::connect(&connection, &connection.auth).await?);
    let report = client
        .reconcile(pb::ReconcileRequest {
            gtin: args.gtin.clone().unwrap_or_default(),
            lot: args.lot.clone().unwrap_or_default(),
            line_id: args.line.clone().unwrap_or_default(),
            from_time: at(args.from),
            until_time: at(args.until),
            outstanding_age_threshold_seconds: args.outstanding_age.unwrap_or(0),
        })
        .await
        .map_err(|s| anyhow::anyhow!("reconcile failed: {}: {}", s.code(), s.message()))?
        .into_inner();
    let reason_name = |reason: i32| {
        pb::DecommissionReason::try_from(reason).map_or("UNKNOWN".to_owned(), |r| {
            code(r.as_str_name(), "DECOMMISSION_REASON_")
        })
    };
    let anomaly_name = |kind: i32| {
        pb::AnomalyKind::try_from(kind).map_or("UNKNOWN".to_owned(), |k| {
            code(k.as_str_name(), "ANOMALY_KIND_")
        })
    };
    if args.json {
        let value = json!({
            "as_of_sequence": report.as_of_sequence,
            "truncated": report.truncated,
            "pools": report.pools.iter().map(|p| json!({
                "pool_id": p.pool_id, "gtin": p.gtin, "line_id": p.line_id, "location": p.location,
                "created": p.created_at.map(|t| t.seconds), "requested": p.requested,
                "allocated": p.allocated, "commissioned": p.commissioned,
                "returned": p.returned, "outstanding": p.outstanding,
            })).collect::<Vec<Value>>(),
            "lots": report.lots.iter().map(|l| json!({
                "gtin": l.gtin, "lot": l.lot,
                "expiry": l.expiry.as_ref().map(|e| e.iso_date.clone()),
                "recalled": l.status == pb::LotStatus::Recalled as i32,
                "commissioned": l.commissioned, "active": l.active, "decommissioned": l.decommissioned,
                "decommissioned_by_reason": l.decommissioned_by_reason.iter()
                    .map(|r| (reason_name(r.reason), json!(r.count)))
                    .collect::<serde_json::Map<String, Value>>(),
            })).collect::<Vec<Value>>(),
            "anomalies": report.anomalies.iter().map(|a| json!({
                "kind": anomaly_name(a.kind), "pool_id": a.pool_id, "gtin": a.gtin, "lot": a.lot,
                "count": a.count, "detail": a.detail,
            })).collect::<Vec<Value>>(),
        });
        println!("{value}");
    } else {
        let mut pools = Table::new(&[
            "POOL",
            "GTIN",
            "LINE",
            "CREATED",
            "ALLOCATED",
            "COMMISSIONED",
            "RETURNED",
            "OUTSTANDING",
        ]);
        for p in &report.pools {
            pools.push(vec![
                p.pool_id.clone(),
                p.gtin.clone(),
                p.line_id.clone(),
                timestamp(p.created_at.map(|t| t.seconds)),
                p.allocated.to_string(),
                p.commissioned.to_string(),
                p.returned.to_string(),
                p.outstanding.to_string(),
            ]);
        }
        let mut lots = Table::new(&[
            "GTIN",
            "LOT",
            "EXPIRY",
            "STATUS",
            "COMMISSIONED",
            "ACTIVE",
            "DECOMMISSIONED",
            "BY REASON",
        ]);
        for l in &report.lots {
            let by_reason: Vec<String> = l
                .decommissioned_by_reason
                .iter()
                .map(|r| format!("{} {}", reason_name(r.reason), r.count))
                .collect();
            lots.push(vec![
                l.gtin.clone(),
                l.lot.clone(),
                l.expiry
                    .as_ref()
                    .map(|e| e.iso_date.clone())
                    .unwrap_or_default(),
                if l.status == pb::LotStatus::Recalled as i32 {
                    "recalled"
                } else {
                    "active"
                }
                .to_owned(),
                l.commissioned.to_string(),
                l.active.to_string(),
                l.decommissioned.to_string(),
                by_reason.join(", "),
            ]);
        }
        println!("pools ({}):\n{}", report.pools.len(), pools.render());
        println!("lots ({}):\n{}", report.lots.len(), lots.render());
        println!("anomalies: {}", report.anomalies.len());
        for a in &report.anomalies {
            let subject = [&a.pool_id, &a.gtin, &a.lot]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            println!("  {} {subject}: {}", anomaly_name(a.kind), a.detail);
        }
        if report.truncated {
            println!("(truncated: narrow the filters)");
        }
        println!("as of event sequence {}", report.as_of_sequence);
    }
    Ok(if report.anomalies.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
