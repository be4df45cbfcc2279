//! Issue 5 end to end against the real server binary: bulk decommission
//! streams (a million items with malformed and unknown ones mixed in), undo
//! with the Art. 13 party and location rules, group-level refusals in-band,
//! and idempotent replay of a group after kill -9.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use common::api::Channel;
use common::api::*;
use proto::serial::v1 as pb;
use proto::serial::v1::status_service_client::StatusServiceClient;
use proto::serial::v1::verification_service_client::VerificationServiceClient;

const GTIN: &str = "09520123456788";
const LOCATION: &str = "0614141000012";
const GROUP: usize = 10_000;

fn decommission_request(
    request_id: &str,
    reason: pb::DecommissionReason,
    actor: &str,
    items: Vec<pb::PackIdentifier>,
) -> pb::DecommissionRequest {
    pb::DecommissionRequest {
        request_id: request_id.into(),
        reason: reason as i32,
        location: LOCATION.into(),
        actor: actor.into(),
        items,
        ..Default::default()
    }
}

async fn decommission_stream(
    channel: &Channel,
    groups: Vec<pb::DecommissionRequest>,
) -> Vec<pb::DecommissionResponse> {
    let expected = groups.len();
    let mut answers = StatusServiceClient::new(channel.clone())
        .decommission(tokio_stream::iter(groups))
        .await
        .unwrap()
        .into_inner();
    let mut all = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        all.push(answer);
    }
    assert_eq!(all.len(), expected, "one answer per group");
    all
}

async fn undo(
    channel: &Channel,
    request_id: &str,
    actor: &str,
    location: &str,
    items: Vec<pb::PackIdentifier>,
) -> pb::UndoResponse {
    let group = pb::UndoRequest {
        request_id: request_id.into(),
        location: location.into(),
        actor: actor.into(),
        items,
        ..Default::default()
    };
    let mut answers = StatusServiceClient::new(channel.clone())
        .undo(tokio_stream::iter([group]))
        .await
        .unwrap()
        .into_inner();
    answers.message().await.unwrap().expect("one answer")
}

async fn states(channel: &Channel, serials: &[String]) -> Vec<pb::PackState> {
    let mut client = VerificationServiceClient::new(channel.clone());
    let mut all = Vec::new();
    for chunk in serials.chunks(4096) {
        let results = client
            .verify_batch(pb::VerifyBatchRequest {
                items: chunk.iter().map(|s| item(GTIN, s)).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        all.extend(results.iter().map(|r| r.state()));
    }
    all
}

async fn setup(channel: &Channel, count: u64) -> Vec<String> {
    add_product(channel, GTIN, "eu-fmd", None, None).await;
    add_lot(channel, GTIN, "L1", "301231").await.unwrap();
    let serials = request_pool(channel, "pool-1", GTIN, count)
        .await
        .unwrap()
        .serials;
    for (g, group) in serials.chunks(GROUP).enumerate() {
        let answer = commission(channel, GTIN, &format!("c-{g}"), "L1", group.to_vec()).await;
        assert_eq!(answer.counts.unwrap().applied as usize, group.len());
    }
    serials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_item_stream_answers_every_item_and_commits_only_the_good_ones() {
    let total: usize = std::env::var("STATUS_STREAM_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let serials = setup(&channel, total as u64).await;

    // Item n: every 100th (n % 100 == 7) malformed, every 100th (n % 100 ==
    // 42) unknown, the rest the next unused issued serial. The issued serials
    // left over stay ACTIVE and must not change.
    let mut next = 0;
    let mut good = Vec::new();
    let mut kinds = Vec::with_capacity(total);
    let items: Vec<pb::PackIdentifier> = (0..total)
        .map(|n| match n % 100 {
            7 => {
                kinds.push('m');
                item("09520123456789", "A") // wrong check digit
            }
            42 => {
                kinds.push('u');
                item(GTIN, &format!("UNKNOWN{n}"))
            }
            _ => {
                kinds.push('g');
                next += 1;
                good.push(serials[next - 1].clone());
                item(GTIN, &serials[next - 1])
            }
        })
        .collect();
    let untouched = serials[next..].to_vec();
    let groups: Vec<pb::DecommissionRequest> = items
        .chunks(GROUP)
        .enumerate()
        .map(|(g, chunk)| {
            decommission_request(
                &format!("d-{g}"),
                pb::DecommissionReason::Dispensed,
                "pharmacy-1",
                chunk.to_vec(),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let answers = decommission_stream(&channel, groups).await;
    eprintln!(
        "decommissioned {total} items in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let results: Vec<&pb::DecommissionResult> =
        answers.iter().flat_map(|a| a.results.iter()).collect();
    assert_eq!(results.len(), total, "every item answered");
    for (n, (result, kind)) in results.iter().zip(&kinds).enumerate() {
        let expected = match kind {
            'm' => pb::DecommissionOutcome::Malformed,
            'u' => pb::DecommissionOutcome::UnknownSerial,
            _ => pb::DecommissionOutcome::Decommissioned,
        };
        assert_eq!(result.outcome(), expected, "item {n}");
        if *kind == 'm' {
            let error = result.error.as_ref().unwrap();
            assert_eq!(
                (error.field.as_str(), error.rule()),
                ("fields.gtin", pb::ValidationRule::CheckDigit)
            );
        }
    }
    let applied: u32 = answers.iter().map(|a| a.counts.unwrap().applied).sum();
    assert_eq!(applied as usize, good.len());

    let after = states(&channel, &good).await;
    assert!(after.iter().all(|s| *s == pb::PackState::Decommissioned));
    let after = states(&channel, &untouched).await;
    assert!(after.iter().all(|s| *s == pb::PackState::Active));
}

#[tokio::test]
async fn undo_follows_the_party_and_location_rules() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let s = setup(&channel, 10).await;
    // The party Art. 13 compares is the token's principal.
    let one = common::api::principal_channel(&server, "pharmacy-1", pb::Role::Returns).await;
    let two = common::api::principal_channel(&server, "pharmacy-2", pb::Role::Returns).await;
    let groups = vec![
        decommission_request(
            "d-1",
            pb::DecommissionReason::Dispensed,
            "pharmacy-1",
            vec![item(GTIN, &s[0]), item(GTIN, &s[1]), item(GTIN, &s[2])],
        ),
        decommission_request(
            "d-2",
            pb::DecommissionReason::Destroyed,
            "pharmacy-1",
            vec![item(GTIN, &s[3])],
        ),
        // A double scan by the same party: already set; by another: inactive.
        decommission_request(
            "d-3",
            pb::DecommissionReason::Dispensed,
            "pharmacy-1",
            vec![item(GTIN, &s[0])],
        ),
        // A group refused as a whole is answered in-band; the stream goes on.
        pb::DecommissionRequest {
            reason: 0,
            ..decommission_request("d-5", pb::DecommissionReason::Dispensed, "x", vec![])
        },
    ];
    let mut answers = decommission_stream(&one, groups).await;
    let by_two = vec![decommission_request(
        "d-4",
        pb::DecommissionReason::Dispensed,
        "till-2",
        vec![item(GTIN, &s[0]), item(GTIN, &s[9])],
    )];
    answers.insert(3, decommission_stream(&two, by_two).await.remove(0));
    assert_eq!(answers[0].counts.unwrap().applied, 3);
    assert_eq!(
        answers[2].results[0].outcome(),
        pb::DecommissionOutcome::AlreadySet
    );
    assert_eq!(
        answers[2].results[0].alert(),
        pb::EuAlertCode::StatusAlreadySet
    );
    assert_eq!(
        answers[3].results[0].outcome(),
        pb::DecommissionOutcome::AlreadyInactive
    );
    assert_eq!(
        answers[3].results[1].outcome(),
        pb::DecommissionOutcome::Decommissioned
    );
    let refused = answers[4].status.as_ref().unwrap();
    assert_eq!(refused.code, tonic::Code::InvalidArgument as i32);
    assert!(refused.message.contains("reason"), "{refused:?}");

    let other_user = undo(&two, "u-1", "pharmacy-2", LOCATION, vec![item(GTIN, &s[0])]).await;
    assert_eq!(
        other_user.results[0].outcome(),
        pb::UndoOutcome::DifferentUser
    );
    assert_eq!(
        other_user.results[0].alert(),
        pb::EuAlertCode::UndoByDifferentUser
    );
    let other_place = undo(
        &one,
        "u-2",
        "pharmacy-1",
        "0614141000029",
        vec![item(GTIN, &s[0])],
    )
    .await;
    assert_eq!(
        other_place.results[0].outcome(),
        pb::UndoOutcome::DifferentLocation
    );
    let undone = undo(
        &one,
        "u-3",
        "pharmacy-1",
        LOCATION,
        vec![
            item(GTIN, &s[0]),
            item(GTIN, &s[3]),
            item(GTIN, &s[4]),
            item(GTIN, "NOSUCHSERIAL"),
        ],
    )
    .await;
    let outcomes: Vec<pb::UndoOutcome> = undone.results.iter().map(|r| r.outcome()).collect();
    assert_eq!(
        outcomes,
        [
            pb::UndoOutcome::Reactivated,
            pb::UndoOutcome::NotUndoable,
            pb::UndoOutcome::AlreadyActive,
            pb::UndoOutcome::UnknownSerial,
        ]
    );
    assert!(undone.results[1].decommissioned_at.is_some());
    let now = states(&channel, &s[..5]).await;
    assert_eq!(
        now,
        [
            pb::PackState::Active,
            pb::PackState::Decommissioned,
            pb::PackState::Decommissioned,
            pb::PackState::Decommissioned,
            pb::PackState::Active,
        ]
    );
}

#[tokio::test]
async fn a_group_replayed_after_kill_9_gets_the_same_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let s = setup(&channel, 20).await;
    let group = || {
        decommission_request(
            "d-replay",
            pb::DecommissionReason::Exported,
            "wholesaler-1",
            vec![
                item(GTIN, &s[0]),
                item(GTIN, &s[1]),
                item(GTIN, "NOSUCHSERIAL"),
                item("09520123456789", "A"),
                item(GTIN, &s[0]),
            ],
        )
    };
    let first = decommission_stream(&channel, vec![group()]).await;
    let outcomes = |answer: &pb::DecommissionResponse| -> Vec<pb::DecommissionOutcome> {
        answer.results.iter().map(|r| r.outcome()).collect()
    };
    assert_eq!(
        outcomes(&first[0]),
        [
            pb::DecommissionOutcome::Decommissioned,
            pb::DecommissionOutcome::Decommissioned,
            pb::DecommissionOutcome::UnknownSerial,
            pb::DecommissionOutcome::Malformed,
            // The same pack again in the group sees its own change.
            pb::DecommissionOutcome::AlreadySet,
        ]
    );
    server.kill9();

    let server = Server::start(dir.path());
    let channel = common::api::channel(&server).await;
    let replay = decommission_stream(&channel, vec![group()]).await;
    assert_eq!(replay[0].results, first[0].results);
    assert_eq!(replay[0].counts, first[0].counts);
    // The same id with other items is refused in-band.
    let mut other = group();
    other.items.pop();
    let refused = decommission_stream(&channel, vec![other]).await;
    let status = refused[0].status.as_ref().unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(status.message.contains("request_id"), "{status:?}");
}

#[tokio::test]
async fn recall_withdraw_and_flags_are_idempotent_and_refuse_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let s = setup(&channel, 4).await;
    let mut client = StatusServiceClient::new(channel.clone());
    let recall = |request_id: &str, lot: &str| pb::RecallLotRequest {
        request_id: request_id.into(),
        gtin: GTIN.into(),
        lot: lot.into(),
        reason: "contamination".into(),
    };
    let first = client
        .recall_lot(recall("r-1", "L1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (first.already_recalled, first.active_packs_affected),
        (false, 4)
    );
    let lot = first.lot.unwrap();
    assert_eq!(lot.status(), pb::LotStatus::Recalled);
    assert_eq!(lot.recall_reason, "contamination");
    assert!(lot.recalled_at.is_some());
    let again = client
        .recall_lot(recall("r-1", "L1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.already_recalled, again.active_packs_affected),
        (false, 4)
    );
    let other_id = client
        .recall_lot(recall("r-2", "L1"))
        .await
        .unwrap()
        .into_inner();
    assert!(other_id.already_recalled);
    let missing = client.recall_lot(recall("r-3", "NOLOT")).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A recalled pack can no longer be decommissioned.
    let answers = decommission_stream(
        &channel,
        vec![decommission_request(
            "d-1",
            pb::DecommissionReason::Dispensed,
            "p",
            vec![item(GTIN, &s[0])],
        )],
    )
    .await;
    assert_eq!(
        answers[0].results[0].outcome(),
        pb::DecommissionOutcome::Recalled
    );

    let flag = |request_id: &str, action: pb::PackFlagAction| pb::FlagPackRequest {
        request_id: request_id.into(),
        item: Some(item(GTIN, &s[1])),
        action: action as i32,
        reason: "case 7".into(),
    };
    let set = client
        .flag_pack(flag("f-1", pb::PackFlagAction::SetSuspect))
        .await
        .unwrap()
        .into_inner();
    assert!(set.suspect && !set.unchanged);
    let same = client
        .flag_pack(flag("f-2", pb::PackFlagAction::SetSuspect))
        .await
        .unwrap()
        .into_inner();
    assert!(same.suspect && same.unchanged);
    let cleared = client
        .flag_pack(flag("f-3", pb::PackFlagAction::Clear))
        .await
        .unwrap()
        .into_inner();
    assert!(!cleared.suspect && !cleared.illegitimate);
    let unknown = client
        .flag_pack(pb::FlagPackRequest {
            item: Some(item(GTIN, "NOSUCHSERIAL")),
            ..flag("f-4", pb::PackFlagAction::SetSuspect)
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let withdraw = pb::WithdrawProductRequest {
        request_id: "w-1".into(),
        gtin: GTIN.into(),
        reason: "withdrawn from market".into(),
    };
    let withdrawn = client
        .withdraw_product(withdraw.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!withdrawn.already_withdrawn);
    let product = withdrawn.product.unwrap();
    assert!(product.withdrawn && product.withdrawn_at.is_some());
    assert_eq!(product.withdrawal_reason, "withdrawn from market");
    // No new lots or pools for a withdrawn product.
    let lot = add_lot(&channel, GTIN, "L2", "301231").await.unwrap_err();
    assert_eq!(lot.code(), tonic::Code::FailedPrecondition);
    let pool = request_pool(&channel, "pool-2", GTIN, 5).await.unwrap_err();
    assert_eq!(pool.code(), tonic::Code::FailedPrecondition);
}
