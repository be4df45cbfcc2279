//! End-to-end issuance benchmark (issue 3): starts the real `serialsvc` on a
//! temporary data directory, then, five times each, streams a pool of
//! 1,000,000 `eu-fmd` serials to a client that only counts and checksums them
//! (nothing is buffered), and commissions 1,000,000 serials through the
//! bidirectional stream in groups of 10,000, then decommissions them
//! (issue 5: `StatusService.Decommission`, groups of 10,000, every group
//! durable before its answer). Prints medians, serials per second, the
//! server's CPU-seconds per phase and its peak resident memory.
//!
//! Build first, then run (the release profile shares the test build):
//!   cargo build --release --workspace
//!   cargo bench --profile release --workspace --bench pool_e2e
//! `POOL_E2E_COUNT` and `POOL_E2E_ROUNDS` shrink it for a smoke run;
//! `SERIALSVC_BINARY=path` runs another build of the server (A/B).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use benches::{env_number, median, peak_rss_bytes, register_product_and_lot, start};

use proto::serial::v1 as pb;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::request_pool_response::Message;
use proto::serial::v1::status_service_client::StatusServiceClient;

const GTIN: &str = "09520123456788";
const GROUP: usize = 10_000;

/// Streams one pool to the end; returns (serials, elapsed, first serials kept for commissioning).
async fn pool(
    client: &mut PoolServiceClient<benches::Channel>,
    id: &str,
    count: u64,
    keep: usize,
) -> (u64, Duration, Vec<String>) {
    let started = Instant::now();
    let request = pb::RequestPoolRequest {
        request_id: id.into(),
        gtin: GTIN.into(),
        count,
        line_id: "L1".into(),
        ..Default::default()
    };
    let mut stream = client
        .request_pool(request)
        .await
        .expect("pool")
        .into_inner();
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    let (mut received, mut kept) = (0u64, Vec::new());
    let mut summary = None;
    while let Some(message) = stream.message().await.expect("stream") {
        match message.message {
            Some(Message::Chunk(chunk)) => {
                for serial in &chunk.serials {
                    checksum.update(serial.as_bytes());
                    checksum.update(b"\n");
                }
                received += chunk.serials.len() as u64;
                if kept.len() < keep {
                    kept.extend(chunk.serials.into_iter().take(keep - kept.len()));
                }
            }
            Some(Message::Summary(s)) => summary = Some(s),
            _ => {}
        }
    }
    let summary = summary.expect("summary");
    assert_eq!(summary.serials_xxh3, checksum.digest(), "checksum");
    assert_eq!(received, count);
    (received, started.elapsed(), kept)
}

/// A group answer must be OK with every item applied: the harness measures
/// nothing but successful work.
fn every_item_applied(
    status: Option<pb::GroupStatus>,
    counts: Option<pb::ItemCounts>,
    items: usize,
) {
    assert_eq!(status.expect("status").code, 0);
    assert_eq!(counts.expect("counts").applied as usize, items);
}

async fn commission(
    client: &mut PoolServiceClient<benches::Channel>,
    round: usize,
    serials: Vec<String>,
) -> Duration {
    let started = Instant::now();
    let groups: Vec<pb::CommissionRequest> = serials
        .chunks(GROUP)
        .enumerate()
        .map(|(index, group)| pb::CommissionRequest {
            request_id: format!("c{round}-{index}"),
            gtin: GTIN.into(),
            lot: "LOT1".into(),
            serials: group.to_vec(),
            ..Default::default()
        })
        .collect();
    let expected = groups.len();
    let mut answers = client
        .commission(tokio_stream::iter(groups))
        .await
        .expect("commission")
        .into_inner();
    let mut seen = 0;
    while let Some(answer) = answers.message().await.expect("answers") {
        every_item_applied(answer.status, answer.counts, answer.results.len());
        seen += 1;
    }
    assert_eq!(seen, expected);
    started.elapsed()
}

/// Decommissions `serials` (dispensed) through one Decommission stream.
async fn decommission(
    client: &mut StatusServiceClient<benches::Channel>,
    round: usize,
    serials: &[String],
) -> Duration {
    let groups = benches::decommission_groups(GTIN, &format!("d{round}-"), serials, GROUP);
    let expected = groups.len();
    let started = Instant::now();
    let mut answers = client
        .decommission(tokio_stream::iter(groups))
        .await
        .expect("decommission")
        .into_inner();
    let mut seen = 0;
    while let Some(answer) = answers.message().await.expect("answers") {
        every_item_applied(answer.status, answer.counts, answer.results.len());
        seen += 1;
    }
    assert_eq!(seen, expected);
    started.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count = env_number("POOL_E2E_COUNT", 1_000_000);
    let rounds = env_number("POOL_E2E_ROUNDS", 5) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, endpoint) = start(dir.path(), "POOL_E2E_LOG");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut pool_rates, mut commission_rates, mut decommission_rates) =
        (Vec::new(), Vec::new(), Vec::new());
    // Server CPU-seconds per phase: steadier than the rates on a shared
    // machine, and what an A/B comparison of two builds should look at.
    let (mut pool_cpu, mut commission_cpu, mut decommission_cpu) =
        (Vec::new(), Vec::new(), Vec::new());
    let pid = child.id();
    let ticks = benches::clock_ticks_per_second();
    let cpu_since = |before: u64| (benches::cpu_ticks(pid) - before) as f64 / ticks;
    runtime.block_on(async {
        let channel = benches::verify::connect(&endpoint).await;
        register_product_and_lot(channel.clone(), GTIN, "LOT1", "301231").await;
        let mut status = StatusServiceClient::new(channel.clone())
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20);
        let mut client = PoolServiceClient::new(channel)
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20);
        // Where each phase's CPU went: the server's threads by name, and this
        // client process.
        let me = std::process::id();
        let threads = |phase: &str, before: (BTreeMap<String, u64>, u64)| {
            eprintln!(
                "    {phase} CPU-seconds by thread: {}; client {:.2}",
                benches::thread_cpu_since(&before.0, &benches::thread_cpu_ticks(pid), ticks),
                (benches::cpu_ticks(me) - before.1) as f64 / ticks
            );
        };
        let reading = || (benches::thread_cpu_ticks(pid), benches::cpu_ticks(me));
        for round in 0..rounds {
            let cpu = benches::cpu_ticks(pid);
            let before = reading();
            let (received, elapsed, kept) = pool(&mut client, &format!("bench-{round}"), count, count as usize).await;
            pool_cpu.push(cpu_since(cpu));
            threads("pool", before);
            let rate = received as f64 / elapsed.as_secs_f64();
            let cpu = benches::cpu_ticks(pid);
            let before = reading();
            let commissioned = commission(&mut client, round, kept.clone()).await;
            commission_cpu.push(cpu_since(cpu));
            threads("commissioning", before);
            let cpu = benches::cpu_ticks(pid);
            let before = reading();
            let decommissioned = decommission(&mut status, round, &kept).await;
            decommission_cpu.push(cpu_since(cpu));
            threads("decommissioning", before);
            let decommission_rate = count as f64 / decommissioned.as_secs_f64();
            let commission_rate = count as f64 / commissioned.as_secs_f64();
            eprintln!(
                "round {round}: pool of {received} in {:.3} s = {rate:.0} serials/s; commissioning in {:.3} s = {commission_rate:.0} serials/s",
                elapsed.as_secs_f64(),
                commissioned.as_secs_f64()
            );
            eprintln!(
                "round {round}: decommissioning in {:.3} s = {decommission_rate:.0} serials/s",
                decommissioned.as_secs_f64()
            );
            eprintln!(
                "round {round}: server CPU-seconds: pool {:.2}, commissioning {:.2}, decommissioning {:.2}",
                pool_cpu[round], commission_cpu[round], decommission_cpu[round]
            );
            pool_rates.push(rate);
            commission_rates.push(commission_rate);
            decommission_rates.push(decommission_rate);
        }
    });
    let peak = peak_rss_bytes(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "pool of {count} eu-fmd serials, durable and streamed: median {:.0} serials/s over {rounds} rounds",
        median(&mut pool_rates)
    );
    println!(
        "commissioning {count} serials in groups of {GROUP}: median {:.0} serials/s",
        median(&mut commission_rates)
    );
    println!(
        "decommissioning {count} serials in groups of {GROUP}: median {:.0} serials/s",
        median(&mut decommission_rates)
    );
    println!(
        "server CPU-seconds, median: pool {:.2}, commissioning {:.2}, decommissioning {:.2}",
        median(&mut pool_cpu),
        median(&mut commission_cpu),
        median(&mut decommission_cpu)
    );
    println!(
        "server peak resident memory: {:.0} MiB",
        peak as f64 / (1 << 20) as f64
    );
}
