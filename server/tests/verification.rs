//! Issue 4 end to end against the real server binary: the verification
//! semantics table through gRPC and through the GS1 Lightweight Verification
//! Messaging HTTP responder, readers racing writers, and the index rebuilt
//! after a restart answering exactly as before.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::Server;
use common::api::Channel;
use common::api::*;
use proto::serial::v1 as pb;
use proto::serial::v1::status_service_client::StatusServiceClient;
use proto::serial::v1::verification_service_client::VerificationServiceClient;

const GTIN: &str = "09520123456788";
const UNKNOWN_GTIN: &str = "04012345000009";
const RESPONDER_GLN: &str = "0614141000005";
const REQUESTER_GLN: &str = "0614141000012";
/// A second product, withdrawn during setup.
const WITHDRAWN_GTIN: &str = "05012345678900";

/// The packs set up for the table, by role.
struct Packs {
    active: String,
    expired: String,
    voided: String,
    allocated: String,
    dispensed: String,
    recalled: String,
    suspect: String,
    illegitimate: String,
    withdrawn: String,
    /// Every serial of the pool.
    all: Vec<String>,
}

async fn setup(channel: &Channel) -> Packs {
    add_product(channel, GTIN, "eu-fmd", None, None).await;
    add_lot(channel, GTIN, "L1", "301231").await.unwrap();
    add_lot(channel, GTIN, "L2", "281231").await.unwrap();
    add_lot(channel, GTIN, "LOLD", "200131").await.unwrap();
    let pool = request_pool(channel, "pool-1", GTIN, 20).await.unwrap();
    let s = pool.serials;
    let answer = commission(channel, GTIN, "c-1", "L1", s[0..5].to_vec()).await;
    assert_eq!(answer.counts.unwrap().applied, 5);
    let answer = commission(channel, GTIN, "c-2", "LOLD", vec![s[5].clone()]).await;
    assert_eq!(answer.counts.unwrap().applied, 1);
    let answer = return_serials(channel, GTIN, "r-1", vec![s[6].clone()]).await;
    assert_eq!(answer.counts.unwrap().applied, 1);
    add_lot(channel, GTIN, "LREC", "301231").await.unwrap();
    let answer = commission(channel, GTIN, "c-3", "LREC", vec![s[8].clone()]).await;
    assert_eq!(answer.counts.unwrap().applied, 1);

    // Decommission s[1] (dispensed), recall LREC, flag s[2] and s[3].
    let answer = decommission(
        channel,
        "d-1",
        pb::DecommissionReason::Dispensed,
        &[fields(GTIN, &s[1], None, None)],
    )
    .await;
    assert_eq!(
        answer.results[0].outcome(),
        pb::DecommissionOutcome::Decommissioned
    );
    let mut status = StatusServiceClient::new(channel.clone());
    let recall = status
        .recall_lot(pb::RecallLotRequest {
            request_id: "recall-1".into(),
            gtin: GTIN.into(),
            lot: "LREC".into(),
            reason: "quality defect".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (recall.already_recalled, recall.active_packs_affected),
        (false, 1)
    );
    for (serial, action) in [
        (&s[2], pb::PackFlagAction::SetSuspect),
        (&s[3], pb::PackFlagAction::SetIllegitimate),
    ] {
        let flagged = status
            .flag_pack(pb::FlagPackRequest {
                request_id: format!("flag-{serial}"),
                item: Some(fields(GTIN, serial, None, None)),
                action: action as i32,
                reason: "investigation 42".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(flagged.suspect || flagged.illegitimate);
    }

    // A second product with one active pack, then withdrawn.
    add_product(channel, WITHDRAWN_GTIN, "eu-fmd", None, None).await;
    add_lot(channel, WITHDRAWN_GTIN, "W1", "301231")
        .await
        .unwrap();
    let w = request_pool(channel, "pool-w", WITHDRAWN_GTIN, 2)
        .await
        .unwrap()
        .serials;
    let answer = commission(channel, WITHDRAWN_GTIN, "c-w", "W1", vec![w[0].clone()]).await;
    assert_eq!(answer.counts.unwrap().applied, 1);
    let withdrawn = status
        .withdraw_product(pb::WithdrawProductRequest {
            request_id: "withdraw-1".into(),
            gtin: WITHDRAWN_GTIN.into(),
            reason: "marketing authorisation withdrawn".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (withdrawn.already_withdrawn, withdrawn.active_packs_affected),
        (false, 1)
    );
    Packs {
        active: s[0].clone(),
        expired: s[5].clone(),
        voided: s[6].clone(),
        allocated: s[7].clone(),
        dispensed: s[1].clone(),
        recalled: s[8].clone(),
        suspect: s[2].clone(),
        illegitimate: s[3].clone(),
        withdrawn: w[0].clone(),
        all: s,
    }
}

async fn decommission(
    channel: &Channel,
    request_id: &str,
    reason: pb::DecommissionReason,
    items: &[pb::PackIdentifier],
) -> pb::DecommissionResponse {
    let group = pb::DecommissionRequest {
        request_id: request_id.into(),
        reason: reason as i32,
        location: "0614141000012".into(),
        actor: "returns-desk-1".into(),
        items: items.to_vec(),
        ..Default::default()
    };
    let answer = decommission_group(channel, group).await;
    assert_eq!(answer.status.as_ref().unwrap().code, 0, "{answer:?}");
    answer
}

fn fields(gtin: &str, serial: &str, lot: Option<&str>, expiry: Option<&str>) -> pb::PackIdentifier {
    pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
            gtin: gtin.into(),
            serial: serial.into(),
            lot: lot.map(Into::into),
            expiry: expiry.map(Into::into),
        })),
    }
}

fn encoded(text: &str) -> pb::PackIdentifier {
    pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Encoded(text.into())),
    }
}

/// What a row expects of a VerificationResult.
#[derive(Debug, PartialEq, Clone, Copy)]
struct Expect {
    state: pb::PackState,
    verified: bool,
    failure: pb::VerificationFailureReason,
    info: pb::AdditionalInfo,
    alert: pb::EuAlertCode,
    lot: pb::FieldMatch,
    expiry: pb::FieldMatch,
}

fn observed(result: &pb::VerificationResult) -> Expect {
    let vrs = result.vrs.unwrap();
    Expect {
        state: result.state(),
        verified: vrs.verified,
        failure: vrs.verification_failure_reason(),
        info: vrs.additional_info(),
        alert: result.alert(),
        lot: result.lot_match(),
        expiry: result.expiry_match(),
    }
}

async fn verify_batch(
    channel: &Channel,
    items: Vec<pb::PackIdentifier>,
) -> Vec<pb::VerificationResult> {
    VerificationServiceClient::new(channel.clone())
        .verify_batch(pb::VerifyBatchRequest {
            items,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results
}

/// The semantics table: (name, item, expected).
fn table(p: &Packs) -> Vec<(&'static str, pb::PackIdentifier, Expect)> {
    use pb::AdditionalInfo as I;
    use pb::EuAlertCode as A;
    use pb::FieldMatch as M;
    use pb::PackState as S;
    use pb::VerificationFailureReason as F;
    let ok = |lot, expiry| Expect {
        state: S::Active,
        verified: true,
        failure: F::Unspecified,
        info: I::Unspecified,
        alert: A::Unspecified,
        lot,
        expiry,
    };
    let no_match = |state, lot, expiry, alert| Expect {
        state,
        verified: false,
        failure: F::NoMatchGtinSerial,
        info: I::Unspecified,
        alert,
        lot,
        expiry,
    };
    let mismatch = |failure, alert, lot, expiry| Expect {
        state: S::Active,
        verified: false,
        failure,
        info: I::Unspecified,
        alert,
        lot,
        expiry,
    };
    let a = p.active.as_str();
    vec![
        (
            "active, all match",
            fields(GTIN, a, Some("L1"), Some("301231")),
            ok(M::Matched, M::Matched),
        ),
        (
            "active, day 00 = last day",
            fields(GTIN, a, Some("L1"), Some("301200")),
            ok(M::Matched, M::Matched),
        ),
        (
            "active, GTIN+serial only",
            fields(GTIN, a, None, None),
            ok(M::NotProvided, M::NotProvided),
        ),
        (
            "active, element string",
            encoded(&format!("]d201{GTIN}17301231\u{1d}10L1\u{1d}21{a}")),
            ok(M::Matched, M::Matched),
        ),
        (
            "active, Digital Link",
            encoded(&format!(
                "https://id.example.com/01/{GTIN}/10/L1/21/{a}?17=301231"
            )),
            ok(M::Matched, M::Matched),
        ),
        (
            "batch does not match serial",
            fields(GTIN, a, Some("L2"), Some("301231")),
            mismatch(
                F::NoMatchGtinSerialLot,
                A::BatchDoesNotMatchSerial,
                M::Mismatched,
                M::Matched,
            ),
        ),
        (
            "unknown batch",
            fields(GTIN, a, Some("NOSUCH"), None),
            mismatch(
                F::NoMatchGtinSerialLot,
                A::UnknownBatch,
                M::Mismatched,
                M::NotProvided,
            ),
        ),
        (
            "expiry does not match batch",
            fields(GTIN, a, Some("L1"), Some("291231")),
            mismatch(
                F::NoMatchGtinSerialExpiry,
                A::ExpiryDoesNotMatchBatch,
                M::Matched,
                M::Mismatched,
            ),
        ),
        (
            "lot and expiry differ",
            fields(GTIN, a, Some("L2"), Some("281231")),
            mismatch(
                F::NoMatchGtinSerialLotExpiry,
                A::BatchDoesNotMatchSerial,
                M::Mismatched,
                M::Mismatched,
            ),
        ),
        (
            "expired",
            fields(GTIN, &p.expired, Some("LOLD"), Some("200131")),
            Expect {
                info: I::Expired,
                ..ok(M::Matched, M::Matched)
            },
        ),
        (
            "unknown serial",
            fields(GTIN, "ZZZZZZZZZZZZ", Some("L1"), Some("301231")),
            no_match(S::Unknown, M::NotChecked, M::NotChecked, A::UnknownSerial),
        ),
        (
            "allocated, never commissioned",
            fields(GTIN, &p.allocated, None, None),
            no_match(
                S::Allocated,
                M::NotProvided,
                M::NotProvided,
                A::UnknownSerial,
            ),
        ),
        (
            "voided",
            fields(GTIN, &p.voided, Some("L1"), None),
            no_match(S::Voided, M::NotChecked, M::NotProvided, A::UnknownSerial),
        ),
        (
            "unknown product",
            fields(UNKNOWN_GTIN, a, None, None),
            no_match(
                S::Unknown,
                M::NotProvided,
                M::NotProvided,
                A::UnknownProduct,
            ),
        ),
        (
            "decommissioned (dispensed): the identifier is genuine",
            fields(GTIN, &p.dispensed, Some("L1"), Some("301231")),
            Expect {
                state: S::Decommissioned,
                ..ok(M::Matched, M::Matched)
            },
        ),
        (
            "recalled lot",
            fields(GTIN, &p.recalled, Some("LREC"), None),
            Expect {
                info: I::Recalled,
                ..ok(M::Matched, M::NotProvided)
            },
        ),
        (
            "withdrawn product",
            fields(WITHDRAWN_GTIN, &p.withdrawn, Some("W1"), Some("301231")),
            Expect {
                info: I::Recalled,
                ..ok(M::Matched, M::Matched)
            },
        ),
        (
            "suspect",
            fields(GTIN, &p.suspect, None, None),
            Expect {
                info: I::Suspect,
                ..ok(M::NotProvided, M::NotProvided)
            },
        ),
        (
            "illegitimate",
            fields(GTIN, &p.illegitimate, None, None),
            Expect {
                info: I::Illegitimate,
                ..ok(M::NotProvided, M::NotProvided)
            },
        ),
    ]
}

#[tokio::test]
async fn the_semantics_table_through_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--responder-gln", RESPONDER_GLN]);
    let channel = channel(&server).await;
    let packs = setup(&channel).await;
    let rows = table(&packs);

    // One batch with every row and a malformed item in the middle.
    let mut items: Vec<pb::PackIdentifier> = rows.iter().map(|(_, item, _)| item.clone()).collect();
    items.insert(3, fields("09520123456789", "A", None, None));
    let results = verify_batch(&channel, items).await;
    assert_eq!(results.len(), rows.len() + 1);
    let error = results[3]
        .error
        .as_ref()
        .expect("malformed item answered with an error");
    assert_eq!(error.field, "fields.gtin");
    assert_eq!(error.rule(), pb::ValidationRule::CheckDigit);
    let results: Vec<_> = results
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, r)| r)
        .collect();
    for ((name, _, expect), result) in rows.iter().zip(&results) {
        assert_eq!(observed(result), *expect, "row {name}: {result:?}");
    }
    // Encoded items echo the identifier as understood; field items do not.
    assert_eq!(results[3].identifier.as_ref().unwrap().serial, packs.active);
    assert!(results[0].identifier.is_none());
    assert!(results[9].expired);
    let by_name = |name: &str| {
        &results[rows
            .iter()
            .position(|(n, _, _)| n.starts_with(name))
            .unwrap()]
    };
    assert_eq!(
        by_name("decommissioned").decommission_reason(),
        pb::DecommissionReason::Dispensed
    );
    assert!(by_name("recalled lot").recalled);
    assert!(by_name("withdrawn product").withdrawn);
    assert!(by_name("suspect").suspect);
    assert!(by_name("illegitimate").illegitimate);

    // Single Verify agrees with the batch, row by row.
    let mut client = VerificationServiceClient::new(channel.clone());
    for ((name, item, expect), batch) in rows.iter().zip(&results) {
        let single = client
            .verify(pb::VerifyRequest {
                item: Some(item.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(observed(&single), *expect, "single {name}");
        assert_eq!(&single, batch, "single and batch differ for {name}");
    }
    let malformed = client
        .verify(pb::VerifyRequest {
            item: Some(encoded("(01)09520123456788")),
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    assert!(
        malformed.message().contains("item.encoded"),
        "{malformed:?}"
    );

    // Streaming: batches answered in order with their ids; an oversized batch
    // is refused in-band and the stream goes on.
    let batches = vec![
        pb::VerifyStreamRequest {
            batch_id: 7,
            items: rows.iter().map(|(_, i, _)| i.clone()).collect(),
            ..Default::default()
        },
        pb::VerifyStreamRequest {
            batch_id: 8,
            items: vec![fields(GTIN, &packs.active, None, None); 5000],
            ..Default::default()
        },
        pb::VerifyStreamRequest {
            batch_id: 9,
            items: vec![fields(GTIN, &packs.active, None, None)],
            ..Default::default()
        },
    ];
    let mut answers = client
        .verify_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!(
        (first.batch_id, first.status.as_ref().unwrap().code),
        (7, 0)
    );
    assert_eq!(first.results, results);
    let second = answers.message().await.unwrap().unwrap();
    assert_eq!(second.batch_id, 8);
    assert_eq!(
        second.status.as_ref().unwrap().code,
        tonic::Code::InvalidArgument as i32
    );
    assert!(second.results.is_empty());
    let third = answers.message().await.unwrap().unwrap();
    assert_eq!((third.batch_id, third.results.len()), (9, 1));
    assert!(answers.message().await.unwrap().is_none());

    // An oversized VerifyBatch is refused as a whole.
    let too_many = VerificationServiceClient::new(channel.clone())
        .verify_batch(pb::VerifyBatchRequest {
            items: vec![fields(GTIN, "A", None, None); 4097],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn saleable_returns_through_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--responder-gln", RESPONDER_GLN]);
    let channel = channel(&server).await;
    let packs = setup(&channel).await;
    let mut client = VerificationServiceClient::new(channel.clone());
    let check = |item: pb::PackIdentifier| pb::CheckSaleableReturnRequest {
        item: Some(item),
        requester_gln: REQUESTER_GLN.into(),
        corr_uuid: "0b9d6f5e-1c2a-4e39-9b1e-3f1f1d2c9a77".into(),
    };
    let answer = client
        .check_saleable_return(check(fields(
            GTIN,
            &packs.active,
            Some("L1"),
            Some("301231"),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.responder_gln, RESPONDER_GLN);
    assert_eq!(answer.corr_uuid, "0b9d6f5e-1c2a-4e39-9b1e-3f1f1d2c9a77");
    assert!(answer.verification_timestamp.is_some());
    assert!(answer.data.unwrap().verified);

    let expired = client
        .check_saleable_return(check(fields(
            GTIN,
            &packs.expired,
            Some("LOLD"),
            Some("200131"),
        )))
        .await
        .unwrap()
        .into_inner()
        .data
        .unwrap();
    assert!(!expired.verified);
    assert_eq!(
        expired.verification_failure_reason(),
        pb::VerificationFailureReason::NotForRedistribution
    );
    assert_eq!(expired.additional_info(), pb::AdditionalInfo::Expired);

    let unknown = client
        .check_saleable_return(check(fields(
            GTIN,
            "ZZZZZZZZZZZZ",
            Some("L1"),
            Some("301231"),
        )))
        .await
        .unwrap()
        .into_inner()
        .data
        .unwrap();
    assert_eq!(
        unknown.verification_failure_reason(),
        pb::VerificationFailureReason::NoMatchGtinSerial
    );

    let not_here = client
        .check_saleable_return(check(fields(UNKNOWN_GTIN, "A", Some("L1"), Some("301231"))))
        .await
        .unwrap_err();
    assert_eq!(not_here.code(), tonic::Code::NotFound);
    let no_lot = client
        .check_saleable_return(check(fields(GTIN, &packs.active, None, Some("301231"))))
        .await
        .unwrap_err();
    assert_eq!(no_lot.code(), tonic::Code::InvalidArgument);
    assert!(no_lot.message().contains("item.lot"));
    let mut bad_gln = check(fields(GTIN, &packs.active, Some("L1"), Some("301231")));
    bad_gln.requester_gln = "0614141000013".into();
    let bad_gln = client.check_saleable_return(bad_gln).await.unwrap_err();
    assert_eq!(bad_gln.code(), tonic::Code::InvalidArgument);
    assert!(bad_gln.message().contains("requester_gln"));
}

/// The VRS JSON answer of an HTTP GET, or the status and error header.
fn vrs_get(server: &Server, path: &str) -> (u16, serde_json::Value, String) {
    let (status, headers, body) =
        common::http_get_with(server.http, path, Some(&server.admin_token()));
    let json = if status == 200 {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: bad JSON {body:?}: {e}"))
    } else {
        assert!(
            body.is_empty(),
            "{path}: only 200 carries a body, got {body:?}"
        );
        serde_json::Value::Null
    };
    let error = headers
        .lines()
        .find_map(|line| line.strip_prefix("x-verification-error: "))
        .unwrap_or("")
        .to_owned();
    (status, json, error)
}

#[tokio::test]
async fn the_semantics_table_through_the_vrs_http_responder() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--responder-gln", RESPONDER_GLN]);
    let channel = channel(&server).await;
    let packs = setup(&channel).await;
    let query = format!("linkType=verificationService&reqGLN={REQUESTER_GLN}&corrUUID=corr-1");
    let a = &packs.active;
    let e = &packs.expired;
    // (path, expected verified, failure reason, additional info)
    let rows: Vec<(String, bool, Option<&str>, Option<&str>)> = vec![
        (
            format!("/01/{GTIN}/10/L1/21/{a}?17=301231&{query}"),
            true,
            None,
            None,
        ),
        (
            format!("/gtin/{GTIN}/lot/L1/ser/{a}?exp=301231&{query}"),
            true,
            None,
            None,
        ),
        (
            format!("/01/{GTIN}/10/L1/21/{a}?17=301231&{query}&context=dscsaSaleableReturn"),
            true,
            None,
            None,
        ),
        (
            format!("/01/{GTIN}/10/L2/21/{a}?17=301231&{query}"),
            false,
            Some("No_match_GTIN_Serial_Lot"),
            None,
        ),
        (
            format!("/01/{GTIN}/10/L1/21/{a}?17=291231&{query}"),
            false,
            Some("No_match_GTIN_Serial_Expiry"),
            None,
        ),
        (
            format!("/gtin/{GTIN}/lot/L2/ser/{a}?exp=281231&{query}"),
            false,
            Some("No_match_GTIN_Serial_Lot_Expiry"),
            None,
        ),
        (
            format!("/01/{GTIN}/10/L1/21/ZZZZZZZZZZZZ?17=301231&{query}"),
            false,
            Some("No_match_GTIN_Serial"),
            None,
        ),
        (
            format!("/01/{GTIN}/21/{}?{query}", packs.allocated),
            false,
            Some("No_match_GTIN_Serial"),
            None,
        ),
        (
            format!("/01/{GTIN}/10/LOLD/21/{e}?17=200131&{query}"),
            true,
            None,
            Some("Expired"),
        ),
        (
            format!("/01/{GTIN}/10/LOLD/21/{e}?17=200131&{query}&context=dscsaSaleableReturn"),
            false,
            Some("Not_for_re-distribution"),
            Some("Expired"),
        ),
        (
            format!("/01/{GTIN}/10/L1/21/{}?17=301231&{query}", packs.dispensed),
            true,
            None,
            None,
        ),
        (
            format!(
                "/01/{GTIN}/10/L1/21/{}?17=301231&{query}&context=dscsaSaleableReturn",
                packs.dispensed
            ),
            false,
            Some("Not_for_re-distribution"),
            None,
        ),
        (
            format!("/01/{GTIN}/10/LREC/21/{}?17=301231&{query}", packs.recalled),
            true,
            None,
            Some("Recalled"),
        ),
        (
            format!(
                "/01/{GTIN}/10/LREC/21/{}?17=301231&{query}&context=dscsaSaleableReturn",
                packs.recalled
            ),
            false,
            Some("Not_for_re-distribution"),
            Some("Recalled"),
        ),
        (
            format!(
                "/01/{WITHDRAWN_GTIN}/10/W1/21/{}?17=301231&{query}",
                packs.withdrawn
            ),
            true,
            None,
            Some("Recalled"),
        ),
        (
            format!("/01/{GTIN}/10/L1/21/{}?17=301231&{query}", packs.suspect),
            true,
            None,
            Some("Suspect"),
        ),
        (
            format!(
                "/gtin/{GTIN}/lot/L1/ser/{}?exp=301231&{query}",
                packs.illegitimate
            ),
            true,
            None,
            Some("Illegitimate"),
        ),
    ];
    for (path, verified, reason, info) in rows {
        let (status, json, error) = vrs_get(&server, &path);
        assert_eq!(status, 200, "{path}: {error}");
        assert_eq!(json["responderGLN"], RESPONDER_GLN, "{path}");
        assert_eq!(json["corrUUID"], "corr-1", "{path}");
        let timestamp = json["verificationTimestamp"].as_str().unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.len() == 24,
            "{timestamp}"
        );
        assert_eq!(json["data"]["verified"], verified, "{path}: {json}");
        assert_eq!(
            json["data"]["verificationFailureReason"].as_str(),
            reason,
            "{path}: {json}"
        );
        assert_eq!(
            json["data"]["additionalInfo"].as_str(),
            info,
            "{path}: {json}"
        );
    }

    // Refusals: status code, no body, the reason in a header.
    let refusals: Vec<(String, u16, &str)> = vec![
        (
            format!("/01/{UNKNOWN_GTIN}/21/{a}?{query}"),
            404,
            "not served here",
        ),
        (
            format!("/01/09520123456789/21/{a}?{query}"),
            400,
            "check digit",
        ),
        (
            format!(
                "/01/{GTIN}/10/L1/21/{a}?17=301231&linkType=verificationService&reqGLN={REQUESTER_GLN}"
            ),
            400,
            "corrUUID",
        ),
        (
            format!("/01/{GTIN}/10/L1/21/{a}?17=301231&linkType=verificationService&corrUUID=x"),
            400,
            "reqGLN",
        ),
        (
            format!(
                "/01/{GTIN}/10/L1/21/{a}?17=301231&linkType=verificationService&reqGLN=0614141000013&corrUUID=x"
            ),
            400,
            "reqGLN",
        ),
        (
            format!(
                "/01/{GTIN}/10/L1/21/{a}?17=301231&linkType=pip&reqGLN={REQUESTER_GLN}&corrUUID=x"
            ),
            400,
            "linkType",
        ),
        (
            format!("/01/{GTIN}/21/{a}?{query}&context=dscsaSaleableReturn"),
            400,
            "dscsaSaleableReturn",
        ),
        (format!("/01/{GTIN}/10/L1?{query}"), 400, "serial"),
        (format!("/01/{GTIN}/10/L1/21/A%2?{query}"), 400, ""),
    ];
    for (path, expected, needle) in refusals {
        let (status, _, error) = vrs_get(&server, &path);
        assert_eq!(status, expected, "{path}: {error}");
        assert!(error.contains(needle), "{path}: {error:?} lacks {needle:?}");
    }

    // The connectivity check answers without looking a pack up.
    let (status, json, _) = vrs_get(
        &server,
        &format!(
            "/01/{GTIN}/21/X?linkType=checkConnectivity&reqGLN={REQUESTER_GLN}&corrUUID=ping-1"
        ),
    );
    assert_eq!(status, 200);
    assert_eq!(json["corrUUID"], "ping-1");
    assert_eq!(json["responderGLN"], RESPONDER_GLN);
    assert!(json.get("data").is_none(), "{json}");
}

#[tokio::test]
async fn after_a_restart_the_rebuilt_index_answers_exactly_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let packs = setup(&channel).await;
    let mut items: Vec<pb::PackIdentifier> =
        table(&packs).into_iter().map(|(_, item, _)| item).collect();
    for serial in &packs.all {
        items.push(fields(GTIN, serial, Some("L1"), Some("301231")));
    }
    let before = verify_batch(&channel, items.clone()).await;
    server.kill9();

    let server = Server::start(dir.path());
    let channel = common::api::channel(&server).await;
    let after = verify_batch(&channel, items.clone()).await;
    assert_eq!(before, after);
    // And a clean restart too.
    // Off the runtime's thread, so the client connections can answer the
    // server's GOAWAY while it shuts down.
    let (status, _) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());
    let server = Server::start(dir.path());
    let channel = common::api::channel(&server).await;
    assert_eq!(verify_batch(&channel, items).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_writers_never_see_a_torn_or_stale_after_ack_state() {
    let seed = common::test_seed();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "301231").await.unwrap();
    let serials = request_pool(&channel, "pool-race", GTIN, 4000)
        .await
        .unwrap()
        .serials;
    for (g, group) in serials.chunks(1000).enumerate() {
        let answer = commission(&channel, GTIN, &format!("race-c-{g}"), "L1", group.to_vec()).await;
        assert_eq!(answer.counts.unwrap().applied as usize, group.len());
    }
    // Decommission everything in seeded order, two writer streams at once:
    // even positions dispensed, odd ones destroyed.
    let mut order: Vec<usize> = (0..serials.len()).collect();
    let mut state = seed | 1;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let acked: Arc<Vec<AtomicBool>> =
        Arc::new((0..serials.len()).map(|_| AtomicBool::new(false)).collect());
    let done = Arc::new(AtomicBool::new(false));
    fn reason_of(n: usize) -> pb::DecommissionReason {
        if n.is_multiple_of(2) {
            pb::DecommissionReason::Dispensed
        } else {
            pb::DecommissionReason::Destroyed
        }
    }

    let mut readers = Vec::new();
    for _ in 0..3 {
        let channel = channel.clone();
        let serials = serials.clone();
        let acked = Arc::clone(&acked);
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let items: Vec<pb::PackIdentifier> = serials
                .iter()
                .map(|s| fields(GTIN, s, None, None))
                .collect();
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) || rounds == 0 {
                // What was acknowledged before this request was sent must be seen.
                let known: Vec<bool> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
                for (chunk, offset) in items.chunks(1000).zip((0..).step_by(1000)) {
                    let results = verify_batch(&channel, chunk.to_vec()).await;
                    for (i, result) in results.iter().enumerate() {
                        let n = offset + i;
                        match result.state() {
                            pb::PackState::Active => assert!(
                                !known[n],
                                "serial {n}: active after its decommission was acknowledged"
                            ),
                            pb::PackState::Decommissioned => assert_eq!(
                                result.decommission_reason(),
                                reason_of(n),
                                "serial {n}: torn reason"
                            ),
                            other => panic!("serial {n}: impossible state {other:?}"),
                        }
                    }
                }
                rounds += 1;
            }
            rounds
        }));
    }

    for (g, group) in order.chunks(80).enumerate() {
        let items = |parity: usize| -> Vec<pb::PackIdentifier> {
            group
                .iter()
                .filter(|n| *n % 2 == parity)
                .map(|n| fields(GTIN, &serials[*n], None, None))
                .collect()
        };
        let (even, odd) = (items(0), items(1));
        let (dispensed_id, destroyed_id) = (format!("race-d-{g}"), format!("race-x-{g}"));
        let (a, b) = tokio::join!(
            decommission(
                &channel,
                &dispensed_id,
                pb::DecommissionReason::Dispensed,
                &even
            ),
            decommission(
                &channel,
                &destroyed_id,
                pb::DecommissionReason::Destroyed,
                &odd
            ),
        );
        assert_eq!(a.counts.unwrap().applied as usize, even.len());
        assert_eq!(b.counts.unwrap().applied as usize, odd.len());
        for n in group {
            acked[*n].store(true, Ordering::Release);
        }
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        let rounds = reader.await.unwrap();
        assert!(rounds >= 1);
    }
}

/// The 8-byte packed record a field-encoded result corresponds to.
fn packed_of(result: &pb::VerificationResult) -> proto::packed::PackedResult {
    use proto::packed::flag;
    let vrs = result.vrs.unwrap();
    let mut flags = 0;
    for (set, bit) in [
        (result.product_known, flag::PRODUCT_KNOWN),
        (result.expired, flag::EXPIRED),
        (result.recalled, flag::RECALLED),
        (result.withdrawn, flag::WITHDRAWN),
        (result.suspect, flag::SUSPECT),
        (result.illegitimate, flag::ILLEGITIMATE),
        (vrs.verified, flag::VERIFIED),
    ] {
        if set {
            flags |= bit;
        }
    }
    let byte = |value: i32| u8::try_from(value).unwrap();
    proto::packed::PackedResult {
        state: byte(result.state),
        decommission_reason: byte(result.decommission_reason),
        lot_match: byte(result.lot_match),
        expiry_match: byte(result.expiry_match),
        flags,
        failure_reason: byte(vrs.verification_failure_reason),
        additional_info: byte(vrs.additional_info),
        alert: byte(result.alert),
    }
}

/// Appends a field-encoded item in the packed encoding.
fn pack(out: &mut Vec<u8>, item: &pb::PackIdentifier) {
    let Some(pb::pack_identifier::Identifier::Fields(f)) = &item.identifier else {
        panic!("only field items pack");
    };
    proto::packed::encode_item(
        out,
        &f.gtin,
        &f.serial,
        f.lot.as_deref(),
        f.expiry.as_deref(),
    );
}

/// Appends an item with raw field bytes (to break rules the encoder checks).
fn pack_raw(out: &mut Vec<u8>, gtin: &[u8], serial: &[u8], lot: &[u8], expiry: &[u8]) {
    out.extend_from_slice(gtin);
    out.push(u8::try_from(serial.len()).unwrap());
    out.extend_from_slice(serial);
    out.push(u8::try_from(lot.len()).unwrap());
    out.extend_from_slice(lot);
    out.extend_from_slice(expiry);
}

#[tokio::test]
async fn the_packed_encoding_answers_as_the_field_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--responder-gln", RESPONDER_GLN]);
    let channel = channel(&server).await;
    let packs = setup(&channel).await;
    let rows: Vec<_> = table(&packs)
        .into_iter()
        .filter(|(_, item, _)| {
            matches!(
                item.identifier,
                Some(pb::pack_identifier::Identifier::Fields(_))
            )
        })
        .collect();
    assert!(rows.len() >= 15, "the table has {} field rows", rows.len());
    let items: Vec<pb::PackIdentifier> = rows.iter().map(|(_, item, _)| item.clone()).collect();
    let by_fields = verify_batch(&channel, items.clone()).await;

    // Every row, with malformed items between them: each malformed item is
    // answered on its own, naming the field and the rule.
    let mut bytes = Vec::new();
    let mut expected: Vec<Option<proto::packed::PackedResult>> = Vec::new();
    // (gtin, serial, lot, expiry) as raw bytes, then the field and rule.
    type Bad<'a> = (
        &'a [u8],
        &'a [u8],
        &'a [u8],
        &'a [u8],
        &'a str,
        pb::ValidationRule,
    );
    let malformed: Vec<Bad<'_>> = vec![
        (
            b"09520123456789",
            b"A",
            b"",
            b"000000",
            "gtin",
            pb::ValidationRule::CheckDigit,
        ),
        (
            b"0952012345678X",
            b"A",
            b"",
            b"000000",
            "gtin",
            pb::ValidationRule::Charset,
        ),
        (
            GTIN.as_bytes(),
            b"A#",
            b"",
            b"000000",
            "serial",
            pb::ValidationRule::Charset,
        ),
        (
            GTIN.as_bytes(),
            b"",
            b"",
            b"000000",
            "serial",
            pb::ValidationRule::Required,
        ),
        (
            GTIN.as_bytes(),
            &[b'A'; 21],
            b"",
            b"000000",
            "serial",
            pb::ValidationRule::Length,
        ),
        (
            GTIN.as_bytes(),
            b"A\xff",
            b"",
            b"000000",
            "serial",
            pb::ValidationRule::Charset,
        ),
        (
            GTIN.as_bytes(),
            b"A",
            &[b'L'; 21],
            b"000000",
            "lot",
            pb::ValidationRule::Length,
        ),
        (
            GTIN.as_bytes(),
            b"A",
            b"",
            b"301399",
            "expiry",
            pb::ValidationRule::Date,
        ),
        (
            GTIN.as_bytes(),
            b"A",
            b"",
            b"30123X",
            "expiry",
            pb::ValidationRule::Charset,
        ),
    ];
    for (position, (item, result)) in items.iter().zip(&by_fields).enumerate() {
        pack(&mut bytes, item);
        expected.push(Some(packed_of(result)));
        if let Some((gtin, serial, lot, expiry, _, _)) = malformed.get(position) {
            pack_raw(&mut bytes, gtin, serial, lot, expiry);
            expected.push(None);
        }
    }
    let answer = VerificationServiceClient::new(channel.clone())
        .verify_batch(pb::VerifyBatchRequest {
            packed_items: bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.results.is_empty());
    let results = proto::packed::decode_results(&answer.packed_results).unwrap();
    assert_eq!(results.len(), expected.len());
    let mut errors = answer.packed_errors.iter();
    let mut bad = malformed.iter();
    for (position, (result, expect)) in results.iter().zip(&expected).enumerate() {
        match expect {
            Some(expect) => assert_eq!(result, expect, "item {position}"),
            None => {
                assert_eq!(*result, proto::packed::PackedResult::MALFORMED);
                let error = errors.next().expect("an error per malformed item");
                let (_, _, _, _, field, rule) = bad.next().unwrap();
                let violation = error.violation.as_ref().unwrap();
                assert_eq!(error.index as usize, position);
                assert_eq!(
                    (violation.field.as_str(), violation.rule()),
                    (*field, *rule),
                    "{violation:?}"
                );
            }
        }
    }
    assert!(errors.next().is_none() && bad.next().is_none());
    // The table's verdicts really differ: the comparison is not vacuous.
    let verified = results
        .iter()
        .filter(|r| r.has(proto::packed::flag::VERIFIED))
        .count();
    assert!(
        verified >= 3 && verified < rows.len(),
        "{verified} verified"
    );

    let mut client = VerificationServiceClient::new(channel.clone());
    // A batch that ends inside an item is refused naming where.
    let cut = client
        .verify_batch(pb::VerifyBatchRequest {
            packed_items: bytes[..bytes.len() - 3].to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(cut.code(), tonic::Code::InvalidArgument);
    assert!(cut.message().starts_with("packed_items: "), "{cut:?}");
    assert!(cut.message().contains("ends inside item"), "{cut:?}");
    // Both encodings at once are refused.
    let both = client
        .verify_batch(pb::VerifyBatchRequest {
            items: items[..1].to_vec(),
            packed_items: bytes.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), tonic::Code::InvalidArgument);
    assert!(both.message().contains("not both"), "{both:?}");
    // At most max_verify_batch_items items.
    let mut many = Vec::new();
    for _ in 0..4097 {
        pack(&mut many, &items[0]);
    }
    let too_many = client
        .verify_batch(pb::VerifyBatchRequest {
            packed_items: many.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert!(too_many.message().contains("at most 4096"), "{too_many:?}");

    // VerifyStream: packed and field batches on one stream, each answered in
    // its own encoding; a truncated packed batch is refused in-band.
    let batches = vec![
        pb::VerifyStreamRequest {
            batch_id: 1,
            packed_items: bytes.clone(),
            ..Default::default()
        },
        pb::VerifyStreamRequest {
            batch_id: 2,
            items: items.clone(),
            ..Default::default()
        },
        pb::VerifyStreamRequest {
            batch_id: 3,
            packed_items: bytes[..10].to_vec(),
            ..Default::default()
        },
        pb::VerifyStreamRequest {
            batch_id: 4,
            packed_items: many[..many.len() / 4097 * 4096].to_vec(),
            ..Default::default()
        },
    ];
    let mut answers = client
        .verify_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!(
        (first.batch_id, first.status.as_ref().unwrap().code),
        (1, 0)
    );
    assert_eq!(first.packed_results, answer.packed_results);
    assert_eq!(first.packed_errors, answer.packed_errors);
    let second = answers.message().await.unwrap().unwrap();
    assert_eq!(second.batch_id, 2);
    assert_eq!(second.results, by_fields);
    assert!(second.packed_results.is_empty());
    let third = answers.message().await.unwrap().unwrap();
    assert_eq!(third.batch_id, 3);
    assert_eq!(
        third.status.as_ref().unwrap().code,
        tonic::Code::InvalidArgument as i32
    );
    let fourth = answers.message().await.unwrap().unwrap();
    assert_eq!(fourth.batch_id, 4);
    let fourth = proto::packed::decode_results(&fourth.packed_results).unwrap();
    assert_eq!(fourth.len(), 4096);
    assert!(fourth.iter().all(|r| *r == expected[0].unwrap()));
    assert!(answers.message().await.unwrap().is_none());

    // A token scoped to another GTIN gets each item refused on its own.
    let scoped = {
        let secret =
            proto::serial::v1::access_service_client::AccessServiceClient::new(channel.clone())
                .create_token(pb::CreateTokenRequest {
                    request_id: "token-scoped".into(),
                    name: "scoped".into(),
                    role: pb::Role::Verifier as i32,
                    scope: Some(pb::TokenScope {
                        gtins: vec![WITHDRAWN_GTIN.into()],
                        ..Default::default()
                    }),
                    expires_at: None,
                })
                .await
                .unwrap()
                .into_inner()
                .secret;
        channel_with_token(&server, Some(&secret)).await
    };
    let mut two = Vec::new();
    pack(&mut two, &items[0]);
    pack(
        &mut two,
        &fields(WITHDRAWN_GTIN, &packs.withdrawn, None, None),
    );
    let answer = VerificationServiceClient::new(scoped)
        .verify_batch(pb::VerifyBatchRequest {
            packed_items: two,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let results = proto::packed::decode_results(&answer.packed_results).unwrap();
    assert_eq!(results[0], proto::packed::PackedResult::MALFORMED);
    assert!(results[1].has(proto::packed::flag::PRODUCT_KNOWN));
    assert_eq!(answer.packed_errors.len(), 1);
    let violation = answer.packed_errors[0].violation.as_ref().unwrap();
    assert_eq!(
        (answer.packed_errors[0].index, violation.field.as_str()),
        (0, "gtin")
    );
    assert!(
        violation.description.contains("outside the scope"),
        "{violation:?}"
    );
}
