//! Issue 3 end to end over gRPC against the real server binary: master data,
//! pools (uniqueness under concurrency and across restarts, idempotent replay,
//! partial fulfilment, the guessing-rule boundary), commissioning and returns.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::Server;
use common::api::*;
use proto::serial::v1 as pb;
use proto::serial::v1::master_data_service_client::MasterDataServiceClient;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::request_pool_response::Message;

const GTIN: &str = "09520123456788";
const GTIN_B: &str = "04012345000009";

fn checksum(serials: &[String]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for serial in serials {
        hasher.update(serial.as_bytes());
        hasher.update(b"\n");
    }
    hasher.digest()
}

#[tokio::test]
async fn concurrent_pools_never_repeat_a_serial_within_or_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = HashSet::new();
    for round in 0..2 {
        let server = Server::start(dir.path());
        let channel = channel(&server).await;
        if round == 0 {
            add_product(&channel, GTIN, "eu-fmd", None, None).await;
            add_product(&channel, GTIN_B, "eu-fmd", None, None).await;
        }
        let mut tasks = Vec::new();
        for line in 0..8 {
            let channel = channel.clone();
            let gtin = if line % 2 == 0 { GTIN } else { GTIN_B };
            tasks.push(tokio::spawn(async move {
                let pool = request_pool(&channel, &format!("r{round}-line{line}"), gtin, 20_000)
                    .await
                    .expect("pool");
                (gtin, pool)
            }));
        }
        for task in tasks {
            let (gtin, pool) = task.await.unwrap();
            assert_eq!(pool.header.granted_count, 20_000);
            assert_eq!(pool.serials.len(), 20_000);
            assert_eq!(pool.summary.serials_xxh3, checksum(&pool.serials));
            for serial in pool.serials {
                gs1::Serial::new(&serial).expect("valid GS1 serial");
                assert!(
                    seen.insert((gtin, serial.clone())),
                    "duplicate ({gtin}, {serial}) in round {round}"
                );
            }
        }
        drop(server);
    }
    assert_eq!(seen.len(), 2 * 8 * 20_000);
}

#[tokio::test]
async fn a_replayed_request_id_returns_the_same_serials_before_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let server = Server::start(dir.path());
        let channel = channel(&server).await;
        add_product(&channel, GTIN, "eu-fmd", None, None).await;
        let first = request_pool(&channel, "replay-1", GTIN, 70_000)
            .await
            .unwrap();
        let again = request_pool(&channel, "replay-1", GTIN, 70_000)
            .await
            .unwrap();
        assert_eq!(first.serials, again.serials);
        assert_eq!(first.header.pool_id, again.header.pool_id);
        // Resuming from a page token continues exactly where the token points.
        let resumed = request_pool_from(&channel, "replay-1", GTIN, 70_000, "offset:50000")
            .await
            .unwrap();
        assert_eq!(resumed.serials, first.serials[50_000..]);
        assert_eq!(resumed.summary.serials_xxh3, first.summary.serials_xxh3);
        // The same id with other parameters is refused, naming the field.
        let status = request_pool(&channel, "replay-1", GTIN, 5)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("request_id:"),
            "{}",
            status.message()
        );
        first
    };
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let after = request_pool(&channel, "replay-1", GTIN, 70_000)
        .await
        .unwrap();
    assert_eq!(first.serials, after.serials);
    assert_eq!(first.header.pool_id, after.header.pool_id);
}

#[tokio::test]
async fn a_tiny_space_ends_in_partial_pools_then_exhaustion_never_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    // 3 characters, length 3: 27 serials in all; guessing rule off.
    add_product(&channel, GTIN, "custom", Some(("ABC", 3)), Some(false)).await;
    let first = request_pool(&channel, "tiny-1", GTIN, 20).await.unwrap();
    assert_eq!(first.serials.len(), 20);
    let second = request_pool(&channel, "tiny-2", GTIN, 20).await.unwrap();
    assert_eq!(second.header.granted_count, 7, "{:?}", second.header);
    assert_eq!(
        second.header.status,
        pb::PoolStatus::InsufficientSerialNumbers as i32
    );
    let all: HashSet<_> = first.serials.iter().chain(&second.serials).collect();
    assert_eq!(all.len(), 27, "every serial of the space exactly once");
    let status = request_pool(&channel, "tiny-3", GTIN, 1).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("issued 27"),
        "{}",
        status.message()
    );
}

/// A pool of a whole space larger than one draw batch (4,096 candidates):
/// duplicates within a batch and against earlier batches are all redrawn,
/// and the pool takes (nearly) the whole space without a duplicate.
#[tokio::test]
async fn a_pool_of_a_whole_space_spans_many_draw_batches_without_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    // 3^9 = 19,683 serials; drawing all of them takes about 200,000
    // candidates, within the bound of 16 redraws per serial.
    add_product(&channel, GTIN, "custom", Some(("ABC", 9)), Some(false)).await;
    let pool = request_pool(&channel, "whole", GTIN, 19_683).await.unwrap();
    let distinct: HashSet<_> = pool.serials.iter().collect();
    assert_eq!(distinct.len(), pool.serials.len(), "a duplicate was issued");
    assert_eq!(pool.header.granted_count as usize, pool.serials.len());
    // Only the last few serials of the space can be missed, by bad luck
    // (each is found with probability 1/19,683 per candidate).
    assert!(pool.serials.len() >= 19_600, "{:?}", pool.header);
    assert!(
        pool.serials
            .iter()
            .all(|s| s.len() == 9 && s.bytes().all(|b| b"ABC".contains(&b)))
    );
}

#[tokio::test]
async fn the_guessing_rule_is_enforced_at_the_exact_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    // 10 digits, length 5: space 100,000; issued ÷ space must stay below 1/10,000,
    // so 9 serials may be issued and the 10th may not.
    add_product(
        &channel,
        GTIN,
        "custom",
        Some(("0123456789", 5)),
        Some(true),
    )
    .await;
    let first = request_pool(&channel, "g-1", GTIN, 8).await.unwrap();
    assert_eq!(first.header.granted_count, 8);
    let second = request_pool(&channel, "g-2", GTIN, 5).await.unwrap();
    assert_eq!(second.header.granted_count, 1);
    assert_eq!(
        second.header.limiting_factor,
        pb::SerialLimit::GuessingRule as i32
    );
    let ratio = second.header.ratio_after.expect("ratio");
    assert_eq!(
        (
            ratio.issued,
            ratio.space_size.as_str(),
            ratio.issuable_remaining
        ),
        (9, "100000", 0)
    );
    let status = request_pool(&channel, "g-3", GTIN, 1).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("guessing rule"),
        "{}",
        status.message()
    );
    let mut master = MasterDataServiceClient::new(channel.clone());
    let ratios = master
        .get_guessing_ratios(pb::GetGuessingRatiosRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ratios.ratios.len(), 1);
    assert_eq!(ratios.ratios[0].issued, 9);
    assert!((ratios.ratios[0].ratio - 0.00009).abs() < 1e-12);
}

#[tokio::test]
async fn master_data_is_validated_and_lot_expiry_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    let mut master = MasterDataServiceClient::new(channel.clone());
    let bad = pb::AddProductRequest {
        request_id: "p".into(),
        gtin: "09520123456789".into(),
        name: "x".into(),
        company_prefix_length: 7,
        market_profile: "eu-fmd".into(),
        ..Default::default()
    };
    let status = master.add_product(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("gtin:") && status.message().contains("check digit"),
        "{}",
        status.message()
    );
    let unknown_lot = add_lot(&channel, GTIN, "L1", "251231").await.unwrap_err();
    assert_eq!(unknown_lot.code(), tonic::Code::FailedPrecondition);
    let unknown_pool = request_pool(&channel, "u", GTIN, 1).await.unwrap_err();
    assert_eq!(
        unknown_pool.code(),
        tonic::Code::FailedPrecondition,
        "issuance for an unknown GTIN is refused"
    );
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "251231").await.unwrap();
    add_lot(&channel, GTIN, "L1", "251231")
        .await
        .expect("the same registration again is fine");
    let conflict = add_lot(&channel, GTIN, "L1", "261231").await.unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
    assert!(
        conflict.message().contains("251231") && conflict.message().contains("261231"),
        "{}",
        conflict.message()
    );
    let bad_expiry = add_lot(&channel, GTIN, "L2", "251332").await.unwrap_err();
    assert!(
        bad_expiry.message().starts_with("expiry:"),
        "{}",
        bad_expiry.message()
    );
    let products = master
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(products.products.len(), 1);
    assert_eq!(products.products[0].company_prefix, "9520123");
    let lots = master
        .list_lots(pb::ListLotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lots.lots.len(), 1);
    assert_eq!(lots.lots[0].expiry.as_ref().unwrap().iso_date, "2025-12-31");
}

/// The status index decides commissioning and returns; a group that names
/// a pool checks each serial's pool from its stored record; another lot for an
/// active pack is a conflict, and the pools' counts follow the serials' states.
#[tokio::test]
async fn a_named_pool_is_checked_per_item_and_a_second_lot_conflicts() {
    use pb::CommissionOutcome as C;
    use pb::ReturnOutcome as R;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "LOT1", "281231").await.unwrap();
    add_lot(&channel, GTIN, "LOT2", "281231").await.unwrap();
    let a = request_pool(&channel, "pool-a", GTIN, 4).await.unwrap();
    let b = request_pool(&channel, "pool-b", GTIN, 4).await.unwrap();
    let (a_id, b_id) = (a.header.pool_id.clone(), b.header.pool_id.clone());
    let answer = commission_group(
        &channel,
        pb::CommissionRequest {
            request_id: "c-a".into(),
            gtin: GTIN.into(),
            lot: "LOT1".into(),
            pool_id: Some(a_id.clone()),
            serials: vec![
                a.serials[0].clone(),
                b.serials[0].clone(),
                a.serials[1].clone(),
            ],
            ..Default::default()
        },
    )
    .await;
    let outcomes: Vec<i32> = answer.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [C::Commissioned, C::NotInPool, C::Commissioned].map(|o| o as i32)
    );
    let other_lot = commission(&channel, GTIN, "c-lot2", "LOT2", vec![a.serials[0].clone()]).await;
    assert_eq!(other_lot.results[0].outcome, C::LotConflict as i32);
    let returned = return_group(
        &channel,
        pb::ReturnSerialsRequest {
            request_id: "r-b".into(),
            gtin: GTIN.into(),
            pool_id: Some(b_id.clone()),
            serials: vec![
                b.serials[1].clone(),
                a.serials[2].clone(),
                b.serials[1].clone(),
            ],
            ..Default::default()
        },
    )
    .await;
    let outcomes: Vec<i32> = returned.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [R::Voided, R::NotInPool, R::AlreadyVoided].map(|o| o as i32)
    );
    let mut pools = PoolServiceClient::new(channel.clone());
    for (id, expected) in [(a_id, (2, 0, 2)), (b_id, (0, 1, 3))] {
        let info = pools
            .get_pool(pb::GetPoolRequest { pool_id: id })
            .await
            .unwrap()
            .into_inner()
            .pool
            .unwrap();
        assert_eq!(
            (
                info.commissioned_count,
                info.returned_count,
                info.outstanding_count
            ),
            expected
        );
    }
}

#[tokio::test]
async fn commissioning_and_returns_answer_each_item_and_replay_identically() {
    use pb::CommissionOutcome as C;
    use pb::ReturnOutcome as R;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "LOT1", "281231").await.unwrap();
    let pool = request_pool(&channel, "c-pool", GTIN, 10).await.unwrap();
    let s = &pool.serials;

    let items = vec![
        s[0].clone(),
        s[1].clone(),
        "BAD#SERIAL".into(),
        "NEVERISSUED1".into(),
        s[0].clone(),
    ];
    let answer = commission(&channel, GTIN, "c-1", "LOT1", items.clone()).await;
    assert_eq!(answer.status.as_ref().unwrap().code, 0);
    let outcomes: Vec<i32> = answer.results.iter().map(|r| r.outcome).collect();
    let expected = [
        C::Commissioned,
        C::Commissioned,
        C::Malformed,
        C::UnknownSerial,
        C::AlreadyCommissioned,
    ];
    assert_eq!(outcomes, expected.map(|o| o as i32));
    assert_eq!(
        answer.results[2].error.as_ref().unwrap().field,
        "serials[2]"
    );
    assert_eq!(
        answer.counts.unwrap(),
        pb::ItemCounts {
            applied: 2,
            unchanged: 1,
            refused: 2
        }
    );
    // The same request id replays the stored answer, even though the state changed.
    let replay = commission(&channel, GTIN, "c-1", "LOT1", items).await;
    assert_eq!(replay.results, answer.results);

    let returned = return_serials(
        &channel,
        GTIN,
        "r-1",
        vec![s[0].clone(), s[2].clone(), s[3].clone()],
    )
    .await;
    let outcomes: Vec<i32> = returned.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [R::Commissioned, R::Voided, R::Voided].map(|o| o as i32)
    );
    // A returned serial can never be commissioned.
    let late = commission(&channel, GTIN, "c-2", "LOT1", vec![s[2].clone()]).await;
    assert_eq!(late.results[0].outcome, C::Voided as i32);
    // An unknown lot refuses the group, not the stream.
    let unknown = commission(&channel, GTIN, "c-3", "NOLOT", vec![s[4].clone()]).await;
    assert_eq!(
        unknown.status.unwrap().code,
        tonic::Code::FailedPrecondition as i32
    );

    let mut pools = PoolServiceClient::new(channel.clone());
    let info = pools
        .get_pool(pb::GetPoolRequest {
            pool_id: pool.header.pool_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .pool
        .unwrap();
    assert_eq!(
        (
            info.commissioned_count,
            info.returned_count,
            info.outstanding_count
        ),
        (2, 2, 6)
    );
    let limits = pools
        .get_limits(pb::GetLimitsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(limits.max_serials_requestable, 1_000_000);
}

/// A per-pool format override: 13 digits (allowed by eu-fmd's rule).
fn digits13() -> Option<pb::SerialFormat> {
    Some(pb::SerialFormat {
        alphabet: "0123456789".into(),
        length: 13,
    })
}

#[tokio::test]
async fn a_pool_cut_short_by_kill_9_is_completed_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    // Ask for a big pool and kill the server while its writer is (most likely)
    // between segment commits: nothing has been sent yet, since the header
    // only goes out once the whole pool is durable.
    let request = tokio::spawn({
        let channel = channel.clone();
        async move { request_pool_with(&channel, "crash-1", GTIN, 1_000_000, "", digits13()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    server.kill9();
    // Usually this fails (killed mid-commit); on a fast machine the pool may
    // have been answered in full first. The replay below must hold either way.
    let _ = request.await.unwrap();

    let server = Server::start(dir.path());
    let channel = self::channel(&server).await;
    let replay = request_pool_with(&channel, "crash-1", GTIN, 1_000_000, "", digits13())
        .await
        .expect("replay after kill -9");
    assert_eq!(replay.header.granted_count, 1_000_000);
    // Completed in the pool's own (overridden) format, not the product's.
    assert!(
        replay
            .serials
            .iter()
            .all(|s| s.len() == 13 && s.bytes().all(|b| b.is_ascii_digit()))
    );
    let distinct: HashSet<_> = replay.serials.iter().collect();
    assert_eq!(distinct.len(), 1_000_000);
    assert_eq!(replay.summary.serials_xxh3, checksum(&replay.serials));
    let again = request_pool_with(&channel, "crash-1", GTIN, 1_000_000, "", digits13())
        .await
        .unwrap();
    assert_eq!(again.serials, replay.serials);
    // The GTIN's counter matches what was committed, once.
    let mut master = MasterDataServiceClient::new(channel.clone());
    let request = pb::GetGuessingRatiosRequest {
        gtins: vec![GTIN.into()],
        ..Default::default()
    };
    let ratios = master
        .get_guessing_ratios(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ratios.ratios[0].issued, 1_000_000);
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_pool_stream_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    // Open the stream and wait for its first message, so the request is
    // surely in flight, then ask the server to stop.
    let mut client = PoolServiceClient::new(channel.clone());
    let request = pb::RequestPoolRequest {
        request_id: "drain-1".into(),
        gtin: GTIN.into(),
        count: 500_000,
        line_id: "LINE-1".into(),
        ..Default::default()
    };
    let mut stream = client.request_pool(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a first message");
    let terminated = tokio::task::spawn_blocking(move || server.terminate());
    let mut serials = Vec::new();
    let mut summary = None;
    let mut next = Some(first);
    loop {
        let message = match next.take() {
            Some(message) => message,
            None => match stream
                .message()
                .await
                .expect("the in-flight pool completes despite SIGTERM")
            {
                Some(message) => message,
                None => break,
            },
        };
        match message.message.expect("message") {
            Message::Header(_) => {}
            Message::Chunk(chunk) => serials.extend(chunk.serials),
            Message::Summary(s) => summary = Some(s),
        }
    }
    let (status, log) = terminated.await.unwrap();
    assert_eq!(serials.len(), 500_000);
    assert_eq!(summary.unwrap().serials_xxh3, checksum(&serials));
    assert!(status.success(), "exit status {status:?}; log: {log:#?}");
    assert!(log.iter().any(|l| l.contains("storage closed")), "{log:#?}");
}

/// A Commission stream and a ReturnSerials stream of many groups sent at
/// once: the server hands several groups to the writer before the first is
/// answered, yet answers them in the order sent and applies them in that
/// order (a later group sees what an earlier one changed), and a refused
/// group between them loses nothing of the others.
#[tokio::test]
async fn groups_of_one_stream_are_applied_and_answered_in_the_order_sent() {
    use pb::CommissionOutcome as C;
    use pb::ReturnOutcome as R;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "LOT1", "281231").await.unwrap();
    add_lot(&channel, GTIN, "LOT2", "281231").await.unwrap();
    let pool = request_pool(&channel, "order-pool", GTIN, 40)
        .await
        .unwrap();
    let s = &pool.serials;
    let group = |n: usize, lot: &str, serials: &[String]| pb::CommissionRequest {
        request_id: format!("order-c-{n}"),
        gtin: GTIN.into(),
        lot: lot.into(),
        serials: serials.to_vec(),
        ..Default::default()
    };
    // Group k commissions s[2k] and s[2k+1] with LOT1 and repeats s[2k-1]
    // with LOT2: already commissioned by group k-1 with LOT1, so a lot
    // conflict, but only if group k-1 was applied first.
    let mut groups = Vec::new();
    for k in 0..12 {
        let mut serials = vec![s[2 * k].clone(), s[2 * k + 1].clone()];
        let mut lot = "LOT1";
        if k > 0 {
            serials = vec![s[2 * k - 1].clone()];
            lot = "LOT2";
        }
        groups.push(group(
            2 * k,
            "LOT1",
            &[s[2 * k].clone(), s[2 * k + 1].clone()],
        ));
        groups.push(group(2 * k + 1, lot, &serials));
    }
    // One group refused whole (an unknown lot), in the middle.
    groups.insert(7, group(99, "NOLOT", &[s[30].clone()]));
    let sent: Vec<String> = groups.iter().map(|g| g.request_id.clone()).collect();
    let mut client = PoolServiceClient::new(channel.clone());
    let mut answers = client
        .commission(tokio_stream::iter(groups))
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        received.push(answer);
    }
    let ids: Vec<String> = received.iter().map(|a| a.request_id.clone()).collect();
    assert_eq!(ids, sent, "answered out of order");
    for answer in &received {
        let n: usize = answer.request_id["order-c-".len()..].parse().unwrap();
        let outcomes: Vec<i32> = answer.results.iter().map(|r| r.outcome).collect();
        if n == 99 {
            assert_eq!(
                answer.status.as_ref().unwrap().code,
                tonic::Code::FailedPrecondition as i32
            );
        } else if n.is_multiple_of(2) {
            assert_eq!(outcomes, [C::Commissioned as i32; 2], "{answer:?}");
        } else if n == 1 {
            // Group 1 repeats group 0's serials with LOT1: already done.
            assert_eq!(outcomes, [C::AlreadyCommissioned as i32; 2], "{answer:?}");
        } else {
            assert_eq!(outcomes, [C::LotConflict as i32], "{answer:?}");
        }
    }

    // Returns: group k returns s[24 + k] twice over two groups; the second
    // sees the first's return.
    let mut returns = Vec::new();
    for k in 0..8 {
        for attempt in 0..2 {
            returns.push(pb::ReturnSerialsRequest {
                request_id: format!("order-r-{k}-{attempt}"),
                gtin: GTIN.into(),
                serials: vec![s[24 + k].clone()],
                ..Default::default()
            });
        }
    }
    let mut answers = client
        .return_serials(tokio_stream::iter(returns))
        .await
        .unwrap()
        .into_inner();
    let mut count: usize = 0;
    while let Some(answer) = answers.message().await.unwrap() {
        let expected = if count.is_multiple_of(2) {
            R::Voided
        } else {
            R::AlreadyVoided
        };
        assert_eq!(
            answer.request_id,
            format!("order-r-{}-{}", count / 2, count % 2)
        );
        assert_eq!(answer.results[0].outcome, expected as i32, "{answer:?}");
        count += 1;
    }
    assert_eq!(count, 16);
}
