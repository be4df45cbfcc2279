//! The event feed and the audit trail, end to end: `Watch` resumed at random
//! points while writes continue receives every event exactly once and in
//! order; the events say who, what, where and when; `serialctl audit verify`
//! finds an event altered offline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Server;
use common::api::*;
use common::cli::{run_code, stdout};
use proto::serial::v1 as pb;
use proto::serial::v1::event_service_client::EventServiceClient;
use proto::serial::v1::status_service_client::StatusServiceClient;

const GTIN: &str = "09520123456788";

/// A small deterministic generator for the test's random choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_resuming_at_random_points_gets_every_event_once_in_order() {
    let mut rng = Rng(common::test_seed() | 1);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;

    // Writes go on while the watcher comes and goes: 300 lots, one event each.
    const LOTS: usize = 300;
    let writer = {
        let channel = channel.clone();
        tokio::spawn(async move {
            for i in 0..LOTS {
                add_lot(&channel, GTIN, &format!("LOT{i}"), "301231")
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };

    let mut events = EventServiceClient::new(channel.clone());
    let mut seen: Vec<u64> = Vec::new();
    let mut lots_seen = 0;
    let mut reconnects = 0;
    // The bootstrap token (1), the product (1) and the lots.
    let total = 2 + LOTS as u64;
    while seen.len() < total as usize {
        let from = seen.last().map_or(1, |last| last + 1);
        let mut stream = events
            .watch(pb::WatchRequest {
                from_sequence: from,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        reconnects += 1;
        // Read a random number of messages, then drop the stream.
        let messages = 1 + rng.below(4);
        for _ in 0..messages {
            let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .unwrap()
            else {
                break;
            };
            for event in message.events {
                seen.push(event.sequence);
                if event.kind == pb::EventKind::LotAdded as i32 {
                    assert_eq!(event.gtin, GTIN);
                    assert_eq!(event.expiry.as_ref().unwrap().yymmdd, "301231");
                    assert_eq!(event.chain_hash.len(), 32);
                    lots_seen += 1;
                }
            }
            if seen.len() >= total as usize {
                break;
            }
        }
    }
    writer.await.unwrap();
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(seen, expected, "after {reconnects} connections");
    assert_eq!(lots_seen, LOTS);
    assert!(
        reconnects > 3,
        "the watcher resumed only {reconnects} times"
    );
}

#[tokio::test]
async fn events_record_who_where_when_and_filters_apply() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "301231").await.unwrap();
    let pool = request_pool(&channel, "pool-ev", GTIN, 3).await.unwrap();
    let commissioned = commission(&channel, GTIN, "c-ev", "L1", pool.serials.clone()).await;
    assert_eq!(commissioned.counts.unwrap().applied, 3);
    let event_time = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };
    let group = pb::DecommissionRequest {
        request_id: "d-ev".into(),
        reason: pb::DecommissionReason::Dispensed as i32,
        location: "4012345000009".into(),
        actor: "pharmacy-7".into(),
        note: "counter sale".into(),
        event_time: Some(event_time),
        items: vec![item(GTIN, &pool.serials[0])],
    };
    let answer = decommission_group(&channel, group.clone()).await;
    assert_eq!(answer.counts.unwrap().applied, 1);
    // An event time far in the future is refused, naming the field.
    let future = pb::DecommissionRequest {
        request_id: "d-future".into(),
        event_time: Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        }),
        ..group
    };
    let refused = decommission_group(&channel, future).await.status.unwrap();
    assert_eq!(refused.code, tonic::Code::InvalidArgument as i32);
    assert!(refused.message.contains("event_time"), "{refused:?}");

    let mut events = EventServiceClient::new(channel.clone());
    let mut stream = events
        .watch(pb::WatchRequest {
            from_sequence: 1,
            kinds: vec![
                pb::EventKind::Commissioned as i32,
                pb::EventKind::Decommissioned as i32,
            ],
            gtin: GTIN.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while got.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.extend(message.events);
    }
    let (commission, decommission) = (&got[0], &got[1]);
    assert_eq!(commission.kind, pb::EventKind::Commissioned as i32);
    assert_eq!(commission.request_id, "c-ev");
    assert_eq!(commission.lot, "L1");
    assert_eq!(commission.serials, pool.serials);
    assert_eq!(decommission.kind, pb::EventKind::Decommissioned as i32);
    assert_eq!(decommission.request_id, "d-ev");
    assert_eq!(decommission.actor, "pharmacy-7");
    assert_eq!(decommission.location, "4012345000009");
    assert_eq!(
        decommission.reason,
        pb::DecommissionReason::Dispensed as i32
    );
    assert_eq!(decommission.reason_text, "counter sale");
    assert_eq!(decommission.event_time, Some(event_time));
    assert_ne!(decommission.time, decommission.event_time);
    assert_eq!(decommission.serials, vec![pool.serials[0].clone()]);

    // Bad requests name the field.
    let error = events
        .watch(pb::WatchRequest {
            from_sequence: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::OutOfRange);
    let error = events
        .watch(pb::WatchRequest {
            kinds: vec![99],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("kinds"), "{error:?}");
}

/// Rewrites event `sequence` of a stopped server's data directory with a
/// forged body, keeping a valid envelope: an edit by someone who knows the format.
fn forge_event(dir: &std::path::Path, sequence: u64) {
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();

    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, &families).unwrap();
    let events = db.cf_handle("events").unwrap();
    let key = storage::keys::event(sequence);
    let stored = db.get_cf(events, &key).unwrap().unwrap();
    let event = storage::value::decode_event(sequence, &stored).unwrap();
    let mut body = event.body.clone();
    let last = body.len() - 1;
    body[last] ^= 1; // one character of the last serial
    let forged =
        storage::value::encode_event(event.time_micros, &event.previous_hash.unwrap(), &body);
    db.put_cf(events, &key, forged).unwrap();
}

#[tokio::test]
async fn audit_verify_finds_an_event_altered_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "301231").await.unwrap();
    let pool = request_pool(&channel, "pool-audit", GTIN, 5).await.unwrap();
    commission(&channel, GTIN, "c-audit", "L1", pool.serials.clone()).await;
    add_lot(&channel, GTIN, "L2", "301231").await.unwrap();
    let intact = run_code(&server, 0, &["audit", "verify"]);
    let text = stdout(&intact);
    // The bootstrap token's event, then the five writes.
    assert!(text.contains("events: 6\n"), "{text}");
    assert!(text.contains("chain intact"), "{text}");
    // Off the runtime's thread, so the client connections can answer the
    // server's GOAWAY while it shuts down.
    let (status, _) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());

    // Event 4 is the commissioning: flip one byte of a serial in it.
    forge_event(dir.path(), 4);
    let server = Server::start(dir.path());
    let broken = run_code(&server, 1, &["audit", "verify"]);
    let text = stdout(&broken);
    assert!(text.contains("chain BROKEN at sequence 5"), "{text}");
    assert!(text.contains("event 4"), "{text}");
}

#[tokio::test]
async fn exports_are_valid_epcis_and_complete_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "301231").await.unwrap();
    let pool = request_pool(&channel, "pool-x", GTIN, 6).await.unwrap();
    commission(&channel, GTIN, "c-x", "L1", pool.serials[..5].to_vec()).await;
    return_serials(&channel, GTIN, "r-x", vec![pool.serials[5].clone()]).await;
    for (id, reason, serial) in [
        ("d-1", pb::DecommissionReason::Dispensed, &pool.serials[0]),
        ("d-2", pb::DecommissionReason::Destroyed, &pool.serials[1]),
        ("d-3", pb::DecommissionReason::Exported, &pool.serials[2]),
    ] {
        let group = pb::DecommissionRequest {
            request_id: id.into(),
            reason: reason as i32,
            location: "4012345000009".into(),
            actor: "wholesaler-1".into(),
            items: vec![item(GTIN, serial)],
            ..Default::default()
        };
        let answer = decommission_group(&channel, group).await;
        assert_eq!(answer.counts.unwrap().applied, 1);
    }
    StatusServiceClient::new(channel.clone())
        .recall_lot(pb::RecallLotRequest {
            request_id: "recall-1".into(),
            gtin: GTIN.into(),
            lot: "L1".into(),
            reason: "notice 17".into(),
        })
        .await
        .unwrap();

    let out = tempfile::tempdir().unwrap();
    let epcis_path = out.path().join("events.json");
    let jsonl_path = out.path().join("events.jsonl");
    let epcis_path_text = epcis_path.to_str().unwrap();
    let jsonl_path_text = jsonl_path.to_str().unwrap();
    let printed = run_code(
        &server,
        0,
        &[
            "events",
            "export",
            "--format",
            "epcis",
            "--out",
            epcis_path_text,
        ],
    );
    // Commissioning, return, three decommissions, the recall; not the
    // product, lot and pool events.
    assert!(
        stdout(&printed).contains("events: 6 "),
        "{}",
        stdout(&printed)
    );
    run_code(
        &server,
        0,
        &[
            "events",
            "export",
            "--format",
            "jsonl",
            "--out",
            jsonl_path_text,
        ],
    );

    let validator = common::epcis::validator();
    let document = common::epcis::read_valid(&validator, &epcis_path);
    // The validator is live: an event without its time zone is refused.
    let mut broken = document.clone();
    broken["epcisBody"]["eventList"][0]
        .as_object_mut()
        .unwrap()
        .remove("eventTimeZoneOffset");
    assert!(!validator.is_valid(&broken));
    let events = document["epcisBody"]["eventList"].as_array().unwrap();
    let steps: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["bizStep"].as_str().unwrap(),
                e["disposition"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("commissioning", "active"),
            ("decommissioning", "inactive"),
            ("dispensing", "dispensed"),
            ("destroying", "destroyed"),
            ("decommissioning", "inactive"),
            ("holding", "recalled"),
        ]
    );
    let commissioning = &events[0];
    assert_eq!(commissioning["action"], "ADD");
    assert_eq!(commissioning["epcList"].as_array().unwrap().len(), 5);
    assert!(
        commissioning["epcList"][0]
            .as_str()
            .unwrap()
            .starts_with("urn:epc:id:sgtin:9520123.045678.")
    );
    assert_eq!(commissioning["ilmd"]["cbvmda:lotNumber"], "L1");
    assert_eq!(
        commissioning["ilmd"]["cbvmda:itemExpirationDate"],
        "2030-12-31"
    );
    assert_eq!(
        events[2]["readPoint"]["id"],
        "https://id.gs1.org/414/4012345000009"
    );

    // JSON Lines: every event, every kind, in order.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl_path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let sequences: Vec<String> = lines
        .iter()
        .map(|l| l["sequence"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (1..=10).map(|n: u64| n.to_string()).collect();
    assert_eq!(sequences, expected);
    assert_eq!(lines[0]["kind"], "EVENT_KIND_TOKEN_CREATED");
    assert_eq!(lines[0]["tokenId"], "tok-1");
    assert_eq!(lines[1]["kind"], "EVENT_KIND_PRODUCT_ADDED");
    assert_eq!(lines[1]["principal"], "admin");
    assert_eq!(lines[6]["kind"], "EVENT_KIND_DECOMMISSIONED");
    assert_eq!(lines[6]["reason"], "DECOMMISSION_REASON_DISPENSED");
    assert_eq!(lines[6]["actor"], "wholesaler-1");
    assert_eq!(lines[6]["principal"], "admin");
}
