//! Aggregation end to end: SSCC pools, packing units into cases and cases
//! into a pallet, conflicting packs refused, unpacking, the hierarchy with
//! counts by state, a decommission that cascades from the pallet in one
//! change, restart, concurrent packers racing for one child, and the EPCIS
//! export of packing validated against the official schema.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::Server;
use common::api::Channel;
use common::api::*;
use common::cli::{run_code, stdout};
use proto::serial::v1 as pb;
use proto::serial::v1::aggregation_service_client::AggregationServiceClient;
use proto::serial::v1::request_sscc_pool_response::Message;

const GTIN: &str = "09520123456788";
const PREFIX: &str = "9520123";
const SITE: &str = "4012345000009";

use pb::AggregationChildOutcome as O;

async fn sscc_pool(
    channel: &Channel,
    request_id: &str,
    count: u64,
    token: &str,
) -> Result<(pb::SsccPoolHeader, Vec<String>, pb::SsccPoolSummary), tonic::Status> {
    let mut stream = AggregationServiceClient::new(channel.clone())
        .request_sscc_pool(pb::RequestSsccPoolRequest {
            request_id: request_id.into(),
            extension_digit: 3,
            company_prefix: PREFIX.into(),
            count,
            line_id: "LINE-1".into(),
            location: SITE.into(),
            page_token: token.into(),
        })
        .await?
        .into_inner();
    let (mut header, mut ssccs, mut summary) = (None, Vec::new(), None);
    while let Some(message) = stream.message().await? {
        match message.message.unwrap() {
            Message::Header(h) => header = Some(h),
            Message::Chunk(c) => ssccs.extend(c.ssccs),
            Message::Summary(s) => summary = Some(s),
        }
    }
    Ok((header.unwrap(), ssccs, summary.unwrap()))
}

fn pack_child(serial: &str) -> pb::AggregationChild {
    pb::AggregationChild {
        child: Some(pb::aggregation_child::Child::Pack(item(GTIN, serial))),
    }
}

fn sscc_child(sscc: &str) -> pb::AggregationChild {
    pb::AggregationChild {
        child: Some(pb::aggregation_child::Child::Sscc(sscc.into())),
    }
}

async fn pack(
    channel: &Channel,
    request_id: &str,
    parent: &str,
    children: Vec<pb::AggregationChild>,
) -> Result<pb::PackResponse, tonic::Status> {
    AggregationServiceClient::new(channel.clone())
        .pack(pb::PackRequest {
            request_id: request_id.into(),
            parent_sscc: parent.into(),
            children,
            location: SITE.into(),
            actor: "packer-1".into(),
            event_time: None,
        })
        .await
        .map(|r| r.into_inner())
}

async fn unpack(
    channel: &Channel,
    request_id: &str,
    parent: &str,
    children: Vec<pb::AggregationChild>,
) -> pb::UnpackResponse {
    AggregationServiceClient::new(channel.clone())
        .unpack(pb::UnpackRequest {
            request_id: request_id.into(),
            parent_sscc: parent.into(),
            children,
            location: SITE.into(),
            actor: "packer-1".into(),
            event_time: None,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn hierarchy(channel: &Channel, sscc: &str) -> pb::GetHierarchyResponse {
    AggregationServiceClient::new(channel.clone())
        .get_hierarchy(pb::GetHierarchyRequest {
            sscc: sscc.into(),
            max_depth: 0,
            max_nodes: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

fn outcomes(results: &[pb::AggregationChildResult]) -> Vec<O> {
    results
        .iter()
        .map(|r| O::try_from(r.outcome).unwrap())
        .collect()
}

/// (state, reason, count) of a node's pack counts.
fn counts(node: &pb::HierarchyNode) -> Vec<(pb::PackState, i32, u64)> {
    node.pack_counts
        .iter()
        .map(|c| (pb::PackState::try_from(c.state).unwrap(), c.reason, c.count))
        .collect()
}

/// A product, a lot and `commissioned` active packs (plus two serials left
/// allocated, returned as the last two).
async fn packs(channel: &Channel, commissioned: usize) -> Vec<String> {
    add_product(channel, GTIN, "eu-fmd", None, None).await;
    add_lot(channel, GTIN, "L1", "301231").await.unwrap();
    let pool = request_pool(channel, "pool-1", GTIN, commissioned as u64 + 2)
        .await
        .unwrap();
    commission(
        channel,
        GTIN,
        "c-1",
        "L1",
        pool.serials[..commissioned].to_vec(),
    )
    .await;
    pool.serials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pack_unpack_and_cascade_across_three_levels_with_conflicts_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let serials = packs(&channel, 12).await;
    let allocated = serials[12].clone();

    // SSCCs: 18 digits, valid check digit, extension digit and prefix, distinct.
    let (header, ssccs, summary) = sscc_pool(&channel, "sscc-pool-1", 12, "").await.unwrap();
    assert_eq!((header.granted_count, summary.sscc_count), (12, 12));
    assert_eq!(ssccs.iter().collect::<HashSet<_>>().len(), 12);
    for sscc in &ssccs {
        gs1::Sscc::new(sscc).unwrap();
        assert!(sscc.starts_with(&format!("3{PREFIX}")), "{sscc}");
    }
    // Idempotent, and resumable from a page token.
    let (_, again, _) = sscc_pool(&channel, "sscc-pool-1", 12, "").await.unwrap();
    assert_eq!(again, ssccs);
    let (_, tail, _) = sscc_pool(&channel, "sscc-pool-1", 12, "offset:5")
        .await
        .unwrap();
    assert_eq!(tail, ssccs[5..]);
    // A second pool of the same space: new SSCCs, the space's count goes down.
    let (second, more, _) = sscc_pool(&channel, "sscc-pool-3", 2, "").await.unwrap();
    assert_eq!(second.remaining, header.remaining - 2);
    assert!(more.iter().all(|s| !ssccs.contains(s)));
    let other = sscc_pool(&channel, "sscc-pool-1", 11, "")
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::InvalidArgument);
    assert!(
        other.message().contains("request_id"),
        "{}",
        other.message()
    );
    let unknown_prefix = AggregationServiceClient::new(channel.clone())
        .request_sscc_pool(pb::RequestSsccPoolRequest {
            request_id: "sscc-pool-2".into(),
            company_prefix: "1234567".into(),
            count: 1,
            line_id: "LINE-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_prefix.code(), tonic::Code::FailedPrecondition);

    let (case1, case2, pallet, pallet2) = (&ssccs[0], &ssccs[1], &ssccs[2], &ssccs[3]);
    let case1_packs: Vec<_> = serials[..6].iter().map(|s| pack_child(s)).collect();
    let answer = pack(&channel, "pack-c1", case1, case1_packs.clone())
        .await
        .unwrap();
    assert!(answer.applied);
    assert_eq!(answer.child_count, 6);
    assert_eq!(outcomes(&answer.results), vec![O::Accepted; 6]);
    // A replay answers the same; packing the same again is UNCHANGED.
    let replay = pack(&channel, "pack-c1", case1, case1_packs.clone())
        .await
        .unwrap();
    assert_eq!(outcomes(&replay.results), vec![O::Accepted; 6]);
    let same = pack(&channel, "pack-c1-again", case1, case1_packs[..2].to_vec())
        .await
        .unwrap();
    assert!(same.applied);
    assert_eq!(outcomes(&same.results), vec![O::Unchanged; 2]);

    // Conflicts: one refused child and nothing is packed.
    let conflict = pack(
        &channel,
        "pack-c2-bad",
        case2,
        serials[5..12].iter().map(|s| pack_child(s)).collect(),
    )
    .await
    .unwrap();
    assert!(!conflict.applied);
    assert_eq!(conflict.results[0].outcome, O::InOtherParent as i32);
    assert_eq!(&conflict.results[0].current_parent_sscc, case1);
    assert_eq!(conflict.child_count, 0);
    let mut bad = vec![
        pack_child(&serials[6]),
        pack_child(&allocated),
        pack_child("NEVERISSUED1"),
        pack_child(&serials[6]),
        pb::AggregationChild {
            child: Some(pb::aggregation_child::Child::Pack(item("123", "X"))),
        },
        sscc_child("106141412345678908"),
    ];
    let refused = pack(&channel, "pack-c2-bad-2", case2, bad.clone())
        .await
        .unwrap();
    assert!(!refused.applied);
    assert_eq!(
        outcomes(&refused.results),
        [
            O::Accepted,
            O::NotActive,
            O::UnknownSerial,
            O::Duplicate,
            O::Malformed,
            O::UnknownSscc
        ]
    );
    assert!(refused.results[4].error.is_some());
    assert_eq!(
        hierarchy(&channel, case2).await.root.unwrap().child_count,
        0
    );
    bad.truncate(1);
    bad.extend(serials[7..12].iter().map(|s| pack_child(s)));
    assert!(pack(&channel, "pack-c2", case2, bad).await.unwrap().applied);

    // Cases into the pallet: three levels.
    let answer = pack(
        &channel,
        "pack-p",
        pallet,
        vec![sscc_child(case1), sscc_child(case2)],
    )
    .await
    .unwrap();
    assert!(answer.applied, "{answer:?}");
    // Cycles and second parents are refused.
    let cycle = pack(&channel, "cycle", case1, vec![sscc_child(pallet)])
        .await
        .unwrap();
    assert_eq!(outcomes(&cycle.results), [O::Cycle]);
    let itself = pack(&channel, "itself", pallet, vec![sscc_child(pallet)])
        .await
        .unwrap();
    assert_eq!(outcomes(&itself.results), [O::Cycle]);
    let second = pack(&channel, "second", pallet2, vec![sscc_child(case1)])
        .await
        .unwrap();
    assert_eq!(outcomes(&second.results), [O::InOtherParent]);
    assert_eq!(&second.results[0].current_parent_sscc, pallet);
    let not_issued = pack(
        &channel,
        "nope",
        "106141412345678908",
        vec![sscc_child(case1)],
    )
    .await
    .unwrap_err();
    assert_eq!(not_issued.code(), tonic::Code::FailedPrecondition);

    // The tree and its counts.
    let tree = hierarchy(&channel, pallet).await;
    let root = tree.root.unwrap();
    assert_eq!(root.child_count, 2);
    assert_eq!(counts(&root), [(pb::PackState::Active, 0, 12)]);
    assert_eq!(root.children.len(), 2);
    assert_eq!(root.children[0].children.len(), 6);
    assert!(!tree.truncated);
    assert_eq!(
        hierarchy(&channel, case1).await.ancestor_ssccs,
        std::slice::from_ref(pallet)
    );
    let cut = AggregationServiceClient::new(channel.clone())
        .get_hierarchy(pb::GetHierarchyRequest {
            sscc: pallet.clone(),
            max_depth: 1,
            max_nodes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cut.truncated);
    assert!(cut.root.unwrap().children[0].children.is_empty());

    // One pack dispensed on its own, then the pallet destroyed: one change.
    let single = decommission_group(
        &channel,
        pb::DecommissionRequest {
            request_id: "d-single".into(),
            reason: pb::DecommissionReason::Dispensed as i32,
            location: SITE.into(),
            items: vec![item(GTIN, &serials[0])],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(single.counts.unwrap().applied, 1);
    let syncs_before = wal_syncs(&server);
    let cascade = destroy(&channel, pallet).await;
    assert_eq!((cascade.pack_count, cascade.decommissioned), (12, 11));
    assert!(cascade.outcomes.contains(&pb::DecommissionOutcomeCount {
        outcome: pb::DecommissionOutcome::AlreadyInactive as i32,
        count: 1
    }));
    assert_eq!(wal_syncs(&server) - syncs_before, 1, "one durable change");
    let root = hierarchy(&channel, pallet).await.root.unwrap();
    assert_eq!(
        counts(&root),
        [
            (
                pb::PackState::Decommissioned,
                pb::DecommissionReason::Dispensed as i32,
                1
            ),
            (
                pb::PackState::Decommissioned,
                pb::DecommissionReason::Destroyed as i32,
                11
            ),
        ]
    );
    let replay = destroy(&channel, pallet).await;
    assert!(replay.replayed);
    assert_eq!(replay.outcomes, cascade.outcomes);
    // Verification sees the cascade.
    let verified = verify(&channel, &serials[11]).await;
    assert_eq!(verified, pb::PackState::Decommissioned as i32);

    // Depth is limited (4 levels below the top).
    let chain = &ssccs[4..9];
    for (i, pair) in chain.windows(2).take(3).enumerate() {
        let answer = pack(
            &channel,
            &format!("chain-{i}"),
            &pair[0],
            vec![sscc_child(&pair[1])],
        )
        .await
        .unwrap();
        assert!(answer.applied, "{answer:?}");
    }
    // chain[3] is at level 3; chain[4] holding a pack would put it at 5.
    let spare = request_pool(&channel, "pool-2", GTIN, 1).await.unwrap();
    commission(&channel, GTIN, "c-2", "L1", spare.serials.clone()).await;
    assert!(
        pack(
            &channel,
            "leaf",
            &chain[4],
            vec![pack_child(&spare.serials[0])]
        )
        .await
        .unwrap()
        .applied
    );
    let deep = pack(&channel, "too-deep", &chain[3], vec![sscc_child(&chain[4])])
        .await
        .unwrap();
    assert_eq!(outcomes(&deep.results), [O::TooDeep]);

    // Unpacking: a listed case, then all of a case.
    let out = unpack(&channel, "unpack-c2", pallet, vec![sscc_child(case2)]).await;
    assert!(out.applied);
    assert_eq!((out.unpacked_count, out.child_count), (1, 1));
    let not_in = unpack(&channel, "unpack-wrong", pallet2, vec![sscc_child(case1)]).await;
    assert!(!not_in.applied);
    assert_eq!(outcomes(&not_in.results), [O::NotInParent]);
    let all = unpack(&channel, "unpack-all", case2, Vec::new()).await;
    assert_eq!((all.unpacked_count, all.child_count), (6, 0));
    let root = hierarchy(&channel, pallet).await.root.unwrap();
    assert_eq!(root.child_count, 1);
    assert_eq!(root.pack_counts.iter().map(|c| c.count).sum::<u64>(), 6);
    // A destroyed pack out of its case cannot be packed again; the emptied
    // case can go onto another pallet.
    let destroyed = pack(&channel, "repack", pallet2, vec![pack_child(&serials[8])])
        .await
        .unwrap();
    assert_eq!(outcomes(&destroyed.results), [O::NotActive]);
    assert!(
        pack(&channel, "move-case", pallet2, vec![sscc_child(case2)])
            .await
            .unwrap()
            .applied
    );

    // Everything survives a restart.
    let before = hierarchy(&channel, pallet).await;
    drop(channel);
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let server = Server::start(dir.path());
    let channel = common::api::channel(&server).await;
    let after = hierarchy(&channel, pallet).await;
    assert_eq!(after, before);
    assert_eq!(
        hierarchy(&channel, pallet2).await.root.unwrap().child_count,
        1
    );
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}

/// Destroys everything below `pallet` (the same request each time).
async fn destroy(channel: &Channel, pallet: &str) -> pb::DecommissionHierarchyResponse {
    AggregationServiceClient::new(channel.clone())
        .decommission_hierarchy(pb::DecommissionHierarchyRequest {
            request_id: "destroy-pallet".into(),
            sscc: pallet.into(),
            reason: pb::DecommissionReason::Destroyed as i32,
            location: SITE.into(),
            actor: "qa".into(),
            note: "water damage".into(),
            event_time: None,
        })
        .await
        .unwrap()
        .into_inner()
}

fn wal_syncs(server: &Server) -> u64 {
    let (_, body) = common::http_get(server.metrics, "/metrics");
    body.lines()
        .find(|l| l.starts_with("serialsvc_storage_commit_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .map(|v| v.parse::<f64>().unwrap() as u64)
        .expect("commit count metric")
}

async fn verify(channel: &Channel, serial: &str) -> i32 {
    let answer = proto::serial::v1::verification_service_client::VerificationServiceClient::new(
        channel.clone(),
    )
    .verify(pb::VerifyRequest {
        item: Some(item(GTIN, serial)),
    })
    .await
    .unwrap()
    .into_inner();
    answer.result.unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_packers_give_a_child_exactly_one_parent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let serials = packs(&channel, 4).await;
    let (_, ssccs, _) = sscc_pool(&channel, "ssccs", 16, "").await.unwrap();
    let mut tasks = Vec::new();
    for (i, parent) in ssccs.iter().enumerate() {
        let channel = channel.clone();
        let parent = parent.clone();
        let children = serials[..4].iter().map(|s| pack_child(s)).collect();
        tasks.push(tokio::spawn(async move {
            pack(&channel, &format!("race-{i}"), &parent, children)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        if answer.applied {
            winners += 1;
            assert_eq!(outcomes(&answer.results), vec![O::Accepted; 4]);
        } else {
            assert_eq!(outcomes(&answer.results), vec![O::InOtherParent; 4]);
        }
    }
    assert_eq!(winners, 1);
    let total: u32 = {
        let mut total = 0;
        for sscc in &ssccs {
            total += hierarchy(&channel, sscc).await.root.unwrap().child_count;
        }
        total
    };
    assert_eq!(total, 4);
}

#[tokio::test]
async fn packing_exports_as_epcis_aggregation_events_that_validate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let serials = packs(&channel, 3).await;
    let (_, ssccs, _) = sscc_pool(&channel, "ssccs", 2, "").await.unwrap();
    let children = serials[..3].iter().map(|s| pack_child(s)).collect();
    assert!(
        pack(&channel, "p-1", &ssccs[0], children)
            .await
            .unwrap()
            .applied
    );
    assert!(
        pack(&channel, "p-2", &ssccs[1], vec![sscc_child(&ssccs[0])])
            .await
            .unwrap()
            .applied
    );
    assert!(
        unpack(&channel, "u-1", &ssccs[0], vec![pack_child(&serials[0])])
            .await
            .applied
    );
    let answer = AggregationServiceClient::new(channel.clone())
        .decommission_hierarchy(pb::DecommissionHierarchyRequest {
            request_id: "export-it".into(),
            sscc: ssccs[1].clone(),
            reason: pb::DecommissionReason::Exported as i32,
            location: SITE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decommissioned, 2);

    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("events.json");
    let printed = run_code(
        &server,
        0,
        &[
            "events",
            "export",
            "--format",
            "epcis",
            "--out",
            path.to_str().unwrap(),
        ],
    );
    // Commissioning, three aggregation events, the cascade's decommissioning.
    assert!(
        stdout(&printed).contains("events: 5 "),
        "{}",
        stdout(&printed)
    );
    let validator = common::epcis::validator();
    let document = common::epcis::read_valid(&validator, &path);
    let events = document["epcisBody"]["eventList"].as_array().unwrap();
    let packing = &events[1];
    assert_eq!(packing["type"], "AggregationEvent");
    assert_eq!(
        (&packing["action"], &packing["bizStep"]),
        (&"ADD".into(), &"packing".into())
    );
    // Extension digit, then the serial reference (after the 7-digit prefix).
    let case_uri = format!(
        "urn:epc:id:sscc:{PREFIX}.{}{}",
        &ssccs[0][..1],
        &ssccs[0][8..17]
    );
    assert_eq!(packing["parentID"], case_uri.as_str());
    assert_eq!(packing["childEPCs"].as_array().unwrap().len(), 3);
    assert!(
        packing["childEPCs"][0]
            .as_str()
            .unwrap()
            .starts_with("urn:epc:id:sgtin:9520123.045678.")
    );
    assert_eq!(events[2]["childEPCs"][0], case_uri.as_str());
    assert_eq!(
        (&events[3]["action"], &events[3]["bizStep"]),
        (&"DELETE".into(), &"unpacking".into())
    );
    assert_eq!(events[4]["serialsvc:sscc"], ssccs[1].as_str());
    assert_eq!(events[4]["epcList"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn serialctl_sscc_pools_packs_shows_and_decommissions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let serials = packs(&channel, 3).await;
    let pool = run_code(
        &server,
        0,
        &[
            "sscc",
            "pool",
            "--company-prefix",
            PREFIX,
            "--extension-digit",
            "1",
            "--count",
            "2",
            "--line",
            "LINE-1",
            "--request-id",
            "cli-ssccs",
        ],
    );
    let ssccs: Vec<String> = stdout(&pool).lines().map(str::to_owned).collect();
    assert_eq!(ssccs.len(), 2, "{}", stdout(&pool));
    assert!(common::cli::stderr(&pool).contains("2 of 2 SSCCs granted"));
    // Packs by scan (element string), the case by SSCC with its AI.
    let scans: Vec<String> = serials[..3]
        .iter()
        .map(|s| format!("(01){GTIN}(21){s}"))
        .collect();
    let mut args = vec!["sscc", "pack", "--parent", &ssccs[0], "--location", SITE];
    args.extend(scans.iter().map(String::as_str));
    let packed = run_code(&server, 0, &args);
    assert!(
        stdout(&packed).contains("3 children now"),
        "{}",
        stdout(&packed)
    );
    let case = format!("(00){}", ssccs[0]);
    run_code(
        &server,
        0,
        &[
            "sscc",
            "pack",
            "--parent",
            &ssccs[1],
            "--location",
            SITE,
            &case,
        ],
    );
    // A pack already in a case is refused with where it is; exit status 1.
    let refused = run_code(
        &server,
        1,
        &[
            "sscc",
            "pack",
            "--parent",
            &ssccs[1],
            "--location",
            SITE,
            &scans[0],
        ],
    );
    assert!(
        stdout(&refused).contains("in other parent"),
        "{}",
        stdout(&refused)
    );
    assert!(stdout(&refused).contains(&ssccs[0]));
    let shown = run_code(&server, 0, &["sscc", "show", &ssccs[1]]);
    let text = stdout(&shown);
    assert!(text.contains("packs below: 3 active"), "{text}");
    assert!(text.contains(&serials[2]), "{text}");
    let cascade = run_code(
        &server,
        0,
        &[
            "sscc",
            "decommission",
            &ssccs[1],
            "--reason",
            "exported",
            "--location",
            SITE,
        ],
    );
    assert!(
        stdout(&cascade).contains("3 packs below, 3 decommissioned now"),
        "{}",
        stdout(&cascade)
    );
    let json = run_code(&server, 0, &["sscc", "show", &ssccs[1], "--json"]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(
        value["root"]["pack_counts"][0]["state"],
        "decommissioned (exported)"
    );
    let unpacked = run_code(
        &server,
        0,
        &["sscc", "unpack", "--parent", &ssccs[0], "--location", SITE],
    );
    assert!(
        stdout(&unpacked).contains("unpacked 3"),
        "{}",
        stdout(&unpacked)
    );
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}

/// Builds a pallet of `CASES` cases of `PER_CASE` active packs (names made
/// unique by `tag`) and returns its SSCC.
async fn pallet_of_packs(channel: &Channel, tag: &str) -> String {
    let pool = request_pool(
        channel,
        &format!("{tag}-pool"),
        GTIN,
        (CASES * PER_CASE) as u64,
    )
    .await
    .unwrap();
    for (i, group) in pool.serials.chunks(10_000).enumerate() {
        let answer = commission(channel, GTIN, &format!("{tag}-c-{i}"), "L1", group.to_vec()).await;
        assert_eq!(answer.counts.unwrap().applied as usize, group.len());
    }
    let (_, ssccs, _) = sscc_pool(channel, &format!("{tag}-ssccs"), CASES as u64 + 1, "")
        .await
        .unwrap();
    for (i, serials) in pool.serials.chunks(PER_CASE).enumerate() {
        let children = serials.iter().map(|s| pack_child(s)).collect();
        let answer = pack(channel, &format!("{tag}-case-{i}"), &ssccs[i], children).await;
        assert!(answer.unwrap().applied);
    }
    let cases = ssccs[..CASES].iter().map(|s| sscc_child(s)).collect();
    let pallet = ssccs[CASES].clone();
    assert!(
        pack(channel, &format!("{tag}-pallet"), &pallet, cases)
            .await
            .unwrap()
            .applied
    );
    pallet
}

const CASES: usize = 5;
const PER_CASE: usize = 4_000;

/// Pallets of 5 cases of 4,000 packs; in each round `kill -9` lands at a
/// seeded random moment 0–120 ms after the pallet's cascade is sent (the
/// commit itself takes tens of milliseconds, so rounds land before, during
/// and after it). After each restart the pallet's packs are all
/// decommissioned or all active (one batch), and the retried request
/// settles them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cascade_cut_by_kill_9_is_all_or_nothing() {
    let seed = common::test_seed();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let mut channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "301231").await.unwrap();
    let total = (CASES * PER_CASE) as u64;
    let destroyed = [(
        pb::PackState::Decommissioned,
        pb::DecommissionReason::Destroyed as i32,
        total,
    )];
    for round in 0..4u64 {
        let pallet = pallet_of_packs(&channel, &format!("r{round}")).await;
        let spread = (seed ^ round).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        let delay = std::time::Duration::from_micros(spread % 120_000);
        let sending = tokio::spawn({
            let channel = channel.clone();
            let pallet = pallet.clone();
            async move {
                // The answer may never come: the server is killed.
                AggregationServiceClient::new(channel)
                    .decommission_hierarchy(pb::DecommissionHierarchyRequest {
                        request_id: format!("destroy-pallet-{round}"),
                        sscc: pallet,
                        reason: pb::DecommissionReason::Destroyed as i32,
                        location: SITE.into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
            }
        });
        tokio::time::sleep(delay).await;
        tokio::task::spawn_blocking(move || server.kill9())
            .await
            .unwrap();
        let answered = sending.await.unwrap();

        server = Server::start(dir.path());
        channel = common::api::channel(&server).await;
        let states = counts(&hierarchy(&channel, &pallet).await.root.unwrap());
        eprintln!(
            "seed {seed} round {round}: killed {delay:?} after sending (answered: {answered}): {states:?}"
        );
        assert!(
            states == [(pb::PackState::Active, 0, total)] || states == destroyed,
            "seed {seed} round {round}: a cascade was applied in part: {states:?}"
        );
        if answered {
            assert_eq!(
                states, destroyed,
                "seed {seed}: an answered cascade was lost"
            );
        }
        // The retry (same request id) settles it: applied now or replayed.
        let retried = AggregationServiceClient::new(channel.clone())
            .decommission_hierarchy(pb::DecommissionHierarchyRequest {
                request_id: format!("destroy-pallet-{round}"),
                sscc: pallet.clone(),
                reason: pb::DecommissionReason::Destroyed as i32,
                location: SITE.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(retried.pack_count, total);
        let states = counts(&hierarchy(&channel, &pallet).await.root.unwrap());
        assert_eq!(states, destroyed, "seed {seed} round {round}");
    }
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}
