//! Reconciliation end to end: pool rows (allocated is commissioned plus
//! returned plus outstanding), lot rows by state and reason, the anomalies,
//! the filters, and `serialctl reconcile`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use common::api::*;
use common::cli::{run_code, stdout};
use proto::serial::v1 as pb;
use proto::serial::v1::reconciliation_service_client::ReconciliationServiceClient;

const GTIN: &str = "09520123456788";

async fn decommission(
    channel: &common::api::Channel,
    id: &str,
    reason: pb::DecommissionReason,
    serials: &[String],
) {
    let group = pb::DecommissionRequest {
        request_id: id.into(),
        reason: reason as i32,
        location: "4012345000009".into(),
        actor: "desk-1".into(),
        items: serials.iter().map(|serial| item(GTIN, serial)).collect(),
        ..Default::default()
    };
    let answer = decommission_group(channel, group).await;
    assert_eq!(answer.counts.unwrap().applied as usize, serials.len());
}

#[tokio::test]
async fn pools_and_lots_add_up_and_anomalies_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "301231").await.unwrap();
    add_lot(&channel, GTIN, "OLD", "200131").await.unwrap();
    let a = request_pool(&channel, "pool-a", GTIN, 10).await.unwrap();
    let b = request_pool(&channel, "pool-b", GTIN, 4).await.unwrap();
    commission(&channel, GTIN, "c-a", "L1", a.serials[..6].to_vec()).await;
    commission(&channel, GTIN, "c-old", "OLD", b.serials[..2].to_vec()).await;
    return_serials(&channel, GTIN, "r-a", a.serials[6..8].to_vec()).await;
    decommission(
        &channel,
        "d-1",
        pb::DecommissionReason::Dispensed,
        &a.serials[..3],
    )
    .await;
    decommission(
        &channel,
        "d-2",
        pb::DecommissionReason::Destroyed,
        &a.serials[3..4],
    )
    .await;
    // Let the pools age past a one-second threshold.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let mut client = ReconciliationServiceClient::new(channel.clone());
    let report = client
        .reconcile(pb::ReconcileRequest {
            outstanding_age_threshold_seconds: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pools: Vec<(u64, u64, u64, u64)> = report
        .pools
        .iter()
        .map(|p| (p.allocated, p.commissioned, p.returned, p.outstanding))
        .collect();
    assert_eq!(pools, [(10, 6, 2, 2), (4, 2, 0, 2)]);
    let lots: Vec<(&str, u64, u64, u64)> = report
        .lots
        .iter()
        .map(|l| (l.lot.as_str(), l.commissioned, l.active, l.decommissioned))
        .collect();
    assert_eq!(lots, [("L1", 6, 2, 4), ("OLD", 2, 2, 0)]);
    let l1 = &report.lots[0];
    assert_eq!(
        l1.decommissioned_by_reason,
        [
            pb::ReasonCount {
                reason: pb::DecommissionReason::Dispensed as i32,
                count: 3
            },
            pb::ReasonCount {
                reason: pb::DecommissionReason::Destroyed as i32,
                count: 1
            },
        ]
    );
    let mut kinds: Vec<(i32, String, u64)> = report
        .anomalies
        .iter()
        .map(|a| (a.kind, format!("{}{}", a.pool_id, a.lot), a.count))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (
                pb::AnomalyKind::OutstandingSerialsAged as i32,
                a.header.pool_id.clone(),
                2
            ),
            (
                pb::AnomalyKind::OutstandingSerialsAged as i32,
                b.header.pool_id.clone(),
                2
            ),
            (
                pb::AnomalyKind::ExpiredLotActivePacks as i32,
                "OLD".into(),
                2
            ),
        ]
    );
    assert!(report.as_of_sequence >= 10);

    // Filters: by line (both pools are LINE-1), by GTIN and lot, and errors.
    let filtered = client
        .reconcile(pb::ReconcileRequest {
            gtin: GTIN.into(),
            lot: "L1".into(),
            line_id: "LINE-9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(filtered.pools.is_empty());
    assert_eq!(filtered.lots.len(), 1);
    let error = client
        .reconcile(pb::ReconcileRequest {
            lot: "L1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("lot"), "{error:?}");
    let error = client
        .reconcile(pb::ReconcileRequest {
            gtin: GTIN.into(),
            lot: "NOPE".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);

    // The CLI: a table, or JSON; exit 1 while there are anomalies.
    let printed = run_code(&server, 1, &["reconcile", "--outstanding-age", "1"]);
    let text = stdout(&printed);
    assert!(text.contains("OUTSTANDING"), "{text}");
    assert!(text.contains("dispensed 3, destroyed 1"), "{text}");
    assert!(text.contains("anomalies: 3"), "{text}");
    let printed = run_code(
        &server,
        0,
        &[
            "reconcile",
            "--gtin",
            GTIN,
            "--lot",
            "L1",
            "--line",
            "LINE-9",
            "--json",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&printed)).unwrap();
    assert_eq!(json["lots"][0]["active"], 2);
    assert_eq!(json["lots"][0]["decommissioned_by_reason"]["dispensed"], 3);
}
