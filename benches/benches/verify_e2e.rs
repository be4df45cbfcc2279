//! End-to-end verification benchmark (issue 4) against its peer, Redis `MGET`,
//! in the same run (DESIGN.md §6).
//!
//! It starts the real `serialsvc` on a temporary data directory, registers an
//! `eu-fmd` product and a lot, issues `VERIFY_E2E_SERIALS` serials (default
//! 1,000,000) through `RequestPool` and commissions them all through the
//! `Commission` stream in groups of 10,000. It then builds, before any timing,
//! one request of 1,024 `PackIdentifier{fields: gtin, serial, lot, expiry}` per
//! 1,024 committed serials, and loads the same keys (GTIN + serial → state, lot
//! and expiry) into a Redis started on loopback with no persistence.
//!
//! Then, `VERIFY_E2E_ROUNDS` times (default 5), for each concurrency level of
//! `VERIFY_E2E_STREAMS` (default `2,4,8`), for `VERIFY_E2E_SECONDS` (default
//! 10) each, interleaved so that noise hits both alike:
//! - `VerifyStream`: that many bidirectional streams, one HTTP/2 connection
//!   each, `VERIFY_E2E_WINDOW` (default 8, the server's read-ahead) batches in
//!   flight per stream;
//! - `VerifyBatch`: that many connections, `VERIFY_E2E_WINDOW` unary calls in
//!   flight on each;
//! - Redis `MGET` of the same 1,024 keys: that many connections,
//!   `VERIFY_E2E_WINDOW` commands pipelined on each.
//!
//! Every answer is checked (each item `verified`, each Redis value present and
//! equal), so the rates cannot silently count errors. Requests are prebuilt and
//! shared behind an `Arc`; each send still encodes them with prost, and each
//! answer is decoded, as a real client would.
//!
//! After each round's throughput runs, single `Verify` calls at a fixed
//! open-loop rate of `VERIFY_E2E_RATE` per second (default 10,000) for
//! `VERIFY_E2E_SECONDS`, on `VERIFY_E2E_CONNECTIONS` (default 4) HTTP/2
//! connections. A timerfd on the load generator's own thread marks the
//! intended send times; latency is measured from the intended time, so a
//! stall is charged to every request it delays (no coordinated omission).
//! `OPEN_LOOP_DUMP=FILE` appends every call's send time and latencies to
//! FILE, for finding when the slow ones happened. `VERIFY_E2E_SINGLE` picks
//! the client of the single calls:
//! - `h2` (default): `verify::H2Unary`, a unary gRPC client on `h2` that
//!   writes each call's `HEADERS` and `DATA` at once;
//! - `tonic`: tonic's generic client, which writes them separately (about
//!   1.85 `writev`s per call against 0.43, and more client CPU);
//! - `lvm`: the GS1 Lightweight Verification Messaging responder (HTTP/1.1
//!   `GET` of a Digital Link, what verification routers call; pooled
//!   keep-alive connections).
//!
//! The machine is shared: CPU time of the server under test, of this client
//! and of everything else is read from `/proc` around every run, and a run
//! during which other processes used more than `VERIFY_E2E_MAX_OTHER` cores
//! (default 0.25) is run again, at most twice.
//!
//! Build first, then run (the release profile shares the test build):
//!   cargo build --release --workspace
//!   cargo bench --profile release --workspace --bench verify_e2e
//! Smoke run: `VERIFY_E2E_SERIALS=50000 VERIFY_E2E_SECONDS=2 VERIFY_E2E_ROUNDS=1`.
//! `VERIFY_E2E_STREAMS=none` runs only the latency phase (after a warm-up).
//! When `redis-server` is missing it is installed from Debian
//! (`apt-get install -y redis-server`); when that fails the peer is skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::Channel;
use benches::peers::{Redis, redis_server};
use benches::verify::{
    LVM_CONNECTIONS, Latency, Run, batch_caller, connect, h2_verify_open_loop, identifier,
    issue_and_commission, join_all, lvm_open_loop, measured, micros, offset, on_own_thread,
    one_stream, redis_caller, redis_key, round_robin_open_loop, thousands, verify_call,
};
use benches::{
    Process, Server, clock_ticks_per_second, cpu_ticks, env_number, median, peak_rss_bytes,
    register_product_and_lot,
};
use proto::serial::v1 as pb;

const GTIN: &str = "09520123456788";
const LOT: &str = "LOT1";
const EXPIRY: &str = "301231";
/// Items per VerifyBatch / VerifyStream batch and per Redis MGET.
const BATCH: usize = 1024;
/// Connections the open-loop single-Verify load is spread over, unless
/// `VERIFY_E2E_CONNECTIONS` says otherwise.
const LATENCY_CONNECTIONS: usize = 4;

/// Connections of the single-call load (`VERIFY_E2E_CONNECTIONS`).
fn latency_connections() -> usize {
    env_number("VERIFY_E2E_CONNECTIONS", LATENCY_CONNECTIONS as u64).max(1) as usize
}
/// Distinct single-Verify requests prebuilt (used round-robin).
const SINGLE_REQUESTS: usize = 100_000;

#[derive(Debug, Clone)]
struct Config {
    serials: u64,
    seconds: u64,
    rounds: usize,
    levels: Vec<usize>,
    window: usize,
    rate: u64,
    /// Cores other processes may use during a run before it is run again.
    max_other: f64,
    /// The client of the single calls (`VERIFY_E2E_SINGLE`).
    single: Single,
}

/// The client of the single calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Single {
    /// gRPC `Verify` through [`benches::verify::H2Unary`] (the default).
    H2,
    /// gRPC `Verify` through tonic's generic client.
    Tonic,
    /// The GS1 Lightweight Verification Messaging responder (HTTP/1.1).
    Lvm,
}

impl Single {
    fn from_env() -> Self {
        match std::env::var("VERIFY_E2E_SINGLE").as_deref() {
            Ok("lvm") => Single::Lvm,
            Ok("tonic") => Single::Tonic,
            Ok("h2") | Err(_) => Single::H2,
            Ok(other) => panic!("VERIFY_E2E_SINGLE={other}: expected h2, tonic or lvm"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Single::H2 => "Verify",
            Single::Tonic => "Verify (tonic client)",
            Single::Lvm => "LVM GET",
        }
    }
}

impl Config {
    fn from_env() -> Self {
        let levels = std::env::var("VERIFY_E2E_STREAMS")
            .ok()
            .map(|text| {
                if text.trim() == "none" {
                    // Only the latency phase (and a short warm-up).
                    return vec![0];
                }
                text.split(',')
                    .filter_map(|n| n.trim().parse::<usize>().ok())
                    .filter(|n| *n > 0)
                    .collect::<Vec<_>>()
            })
            .filter(|levels| !levels.is_empty())
            .unwrap_or_else(|| vec![2, 4, 8]);
        Self {
            serials: env_number("VERIFY_E2E_SERIALS", 1_000_000).max(BATCH as u64),
            seconds: env_number("VERIFY_E2E_SECONDS", 10).max(1),
            rounds: env_number("VERIFY_E2E_ROUNDS", 5).max(1) as usize,
            levels,
            window: env_number("VERIFY_E2E_WINDOW", 8).max(1) as usize,
            rate: env_number("VERIFY_E2E_RATE", 10_000).max(1),
            max_other: std::env::var("VERIFY_E2E_MAX_OTHER")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.25),
            single: Single::from_env(),
        }
    }
}

/// The prebuilt requests, each shared by every send of it.
struct Workload {
    stream: Arc<Vec<Arc<pb::VerifyStreamRequest>>>,
    batch: Arc<Vec<Arc<pb::VerifyBatchRequest>>>,
    single: Arc<Vec<Arc<pb::VerifyRequest>>>,
    redis: Arc<Vec<redis::Cmd>>,
    /// GTIN + serial of every item, for loading Redis.
    keys: Vec<Vec<u8>>,
}

impl Workload {
    /// One request per full batch of 1,024 serials.
    fn build(serials: &[String]) -> Self {
        let batches: Vec<&[String]> = serials
            .chunks(BATCH)
            .filter(|chunk| chunk.len() == BATCH)
            .collect();
        let stream = batches
            .iter()
            .enumerate()
            .map(|(index, chunk)| {
                Arc::new(pb::VerifyStreamRequest {
                    batch_id: index as u64,
                    items: chunk
                        .iter()
                        .map(|s| identifier(GTIN, s, LOT, EXPIRY))
                        .collect(),
                    ..Default::default()
                })
            })
            .collect();
        let batch = batches
            .iter()
            .map(|chunk| {
                Arc::new(pb::VerifyBatchRequest {
                    items: chunk
                        .iter()
                        .map(|s| identifier(GTIN, s, LOT, EXPIRY))
                        .collect(),
                    ..Default::default()
                })
            })
            .collect();
        let step = (serials.len() / SINGLE_REQUESTS).max(1);
        let single = serials
            .iter()
            .step_by(step)
            .take(SINGLE_REQUESTS)
            .map(|s| {
                Arc::new(pb::VerifyRequest {
                    item: Some(identifier(GTIN, s, LOT, EXPIRY)),
                })
            })
            .collect();
        let redis = batches
            .iter()
            .map(|chunk| {
                let mut command = redis::cmd("MGET");
                for serial in *chunk {
                    command.arg(redis_key(GTIN, serial));
                }
                command
            })
            .collect();
        let keys = batches
            .iter()
            .flat_map(|chunk| chunk.iter().map(|s| redis_key(GTIN, s)))
            .collect();
        Self {
            stream: Arc::new(stream),
            batch: Arc::new(batch),
            single: Arc::new(single),
            redis: Arc::new(redis),
            keys,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Batch,
    Redis,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Stream => "serialsvc VerifyStream",
            Mode::Batch => "serialsvc VerifyBatch",
            Mode::Redis => "Redis MGET",
        }
    }
}

/// The Redis peer and its connections.
struct Peer {
    redis: Redis,
    connections: Vec<redis::aio::MultiplexedConnection>,
}

/// Starts Redis, loads `keys` and opens `connections` connections; `None`
/// when the peer cannot be had.
async fn start_peer(connections: usize, keys: &[Vec<u8>]) -> Option<Peer> {
    let redis = Redis::start(&redis_server()?).await?;
    redis.load(keys).await;
    let mut all = Vec::new();
    for _ in 0..connections {
        all.push(redis.connection().await.expect("redis connection"));
    }
    Some(Peer {
        redis,
        connections: all,
    })
}

/// Single `Verify` calls at `rate` for `duration` on
/// [`latency_connections`] connections, open loop, on a thread of the load's
/// own (`on_own_thread`), through `client` (H2 or tonic).
async fn single_verify_latency(
    client: Single,
    endpoint: &str,
    work: &Arc<Vec<Arc<pb::VerifyRequest>>>,
    rate: u64,
    duration: Duration,
    server_pid: u32,
    ticks: f64,
) -> Latency {
    let server = Process::One(server_pid);
    if client == Single::H2 {
        let connections = latency_connections();
        return h2_verify_open_loop(endpoint, connections, work, rate, duration, server, ticks)
            .await;
    }
    let endpoint = endpoint.to_owned();
    let work = Arc::clone(work);
    on_own_thread(move || async move {
        let mut clients = Vec::new();
        for _ in 0..latency_connections() {
            clients.push(tonic::client::Grpc::new(connect(&endpoint).await));
        }
        round_robin_open_loop(rate, duration, server, ticks, &clients, &work, verify_call).await
    })
    .await
}

/// Everything one load run needs.
struct Bench {
    server_pid: u32,
    ticks: f64,
    channels: Vec<Channel>,
    work: Workload,
    window: usize,
}

impl Bench {
    async fn run(
        &self,
        mode: Mode,
        level: usize,
        peer: Option<&Peer>,
        duration: Duration,
    ) -> Option<Run> {
        let deadline = Instant::now() + duration;
        let mut tasks = Vec::new();
        let pid = match mode {
            Mode::Stream => {
                let len = self.work.stream.len();
                for index in 0..level {
                    tasks.push(tokio::spawn(one_stream(
                        self.channels[index].clone(),
                        Arc::clone(&self.work.stream),
                        offset(index, level, len),
                        self.window,
                        deadline,
                    )));
                }
                self.server_pid
            }
            Mode::Batch => {
                let (len, callers) = (self.work.batch.len(), level * self.window);
                for index in 0..callers {
                    tasks.push(tokio::spawn(batch_caller(
                        self.channels[index % level].clone(),
                        Arc::clone(&self.work.batch),
                        offset(index, callers, len),
                        deadline,
                    )));
                }
                self.server_pid
            }
            Mode::Redis => {
                let peer = peer?;
                let (len, callers) = (self.work.redis.len(), level * self.window);
                for index in 0..callers {
                    tasks.push(tokio::spawn(redis_caller(
                        peer.connections[index % level].clone(),
                        Arc::clone(&self.work.redis),
                        BATCH,
                        offset(index, callers, len),
                        deadline,
                    )));
                }
                peer.redis.pid()
            }
        };
        Some(measured(Process::One(pid), self.ticks, join_all(tasks)).await)
    }
}

/// Server CPU used while nothing is asked of it (background compaction).
fn idle_cpu_share(pid: u32, ticks: f64) -> f64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    cpu_ticks(pid).saturating_sub(before) as f64 / ticks
}

/// Retries a run while other processes used more than `max_other` cores
/// during it (at most `ATTEMPTS` tries; the last one is kept whatever it saw).
const ATTEMPTS: usize = 3;

fn noisy(others_cpu: f64, seconds: f64, max_other: f64) -> bool {
    others_cpu / seconds > max_other
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let config = Config::from_env();
    let ticks = clock_ticks_per_second();
    let server = Server::start("VERIFY_E2E_LOG");
    let (server_pid, endpoint) = (server.pid(), server.endpoint.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let duration = Duration::from_secs(config.seconds);
    let modes = [Mode::Stream, Mode::Batch, Mode::Redis];
    let mut results = Results {
        runs: vec![vec![Vec::new(); config.levels.len()]; modes.len()],
        latencies: Vec::new(),
        retried: 0,
        peer_present: false,
        batches: 0,
        peak: 0,
    };
    runtime.block_on(async {
        let setup = connect(&endpoint).await;
        register_product_and_lot(setup.clone(), GTIN, LOT, EXPIRY).await;
        let serials =
            issue_and_commission(setup, "verify-bench", GTIN, LOT, config.serials).await;
        let built = Instant::now();
        let work = Workload::build(&serials);
        drop(serials);
        results.batches = work.stream.len();
        eprintln!(
            "prebuilt {} batches of {BATCH} items in {:.2} s",
            results.batches,
            built.elapsed().as_secs_f64()
        );
        let most = config.levels.iter().copied().max().unwrap_or(1).max(1);
        let mut channels = Vec::new();
        for _ in 0..most {
            channels.push(connect(&endpoint).await);
        }
        let peer = start_peer(most, &work.keys).await;
        results.peer_present = peer.is_some();
        let bench = Bench {
            server_pid,
            ticks,
            channels,
            work,
            window: config.window,
        };
        eprintln!(
            "serialsvc CPU while idle after loading: {:.0} % of one core",
            idle_cpu_share(server_pid, ticks) * 100.0
        );
        // Warm-up, not recorded.
        let warm = Duration::from_secs(2);
        for mode in modes {
            let _ = bench.run(mode, most, peer.as_ref(), warm).await;
        }
        for round in 0..config.rounds {
            for (l, &level) in config.levels.iter().enumerate().filter(|(_, n)| **n > 0) {
                for (m, &mode) in modes.iter().enumerate() {
                    for attempt in 1..=ATTEMPTS {
                        let Some(run) = bench.run(mode, level, peer.as_ref(), duration).await
                        else {
                            break;
                        };
                        let retry = attempt < ATTEMPTS
                            && noisy(run.others_cpu, run.seconds, config.max_other);
                        eprintln!(
                            "round {round} {:<24} ×{level}: {:>12} items/s, {:>12} per server CPU-s; cores: server {:.2}, client {:.2}, other load {:.2}, stolen by the host {:.2}; {:.2} s{}{}",
                            mode.name(),
                            thousands(run.rate()),
                            thousands(run.per_server_cpu_second()),
                            run.server_cpu / run.seconds,
                            run.client_cpu / run.seconds,
                            run.others_cpu / run.seconds,
                            run.stolen_cpu / run.seconds,
                            run.seconds,
                            if run.counts.failures > 0 {
                                format!(", {} FAILURES", run.counts.failures)
                            } else {
                                String::new()
                            },
                            if retry { " (other load: run again)" } else { "" },
                        );
                        if retry {
                            results.retried += 1;
                            continue;
                        }
                        results.runs[m][l].push(run);
                        break;
                    }
                }
            }
            for attempt in 1..=ATTEMPTS {
                let latency = if config.single == Single::Lvm {
                    let server = Process::One(server_pid);
                    lvm_open_loop(&bench.work.single, config.rate, duration, server, ticks).await
                } else {
                    single_verify_latency(
                        config.single,
                        &endpoint,
                        &bench.work.single,
                        config.rate,
                        duration,
                        server_pid,
                        ticks,
                    )
                    .await
                };
                let retry = attempt < ATTEMPTS
                    && noisy(latency.others_cpu, latency.seconds, config.max_other);
                eprintln!(
                    "round {round} single {} at {}/s: {} calls, achieved {}/s; from intended send p50 {} p99 {} p999 {}; from actual send p99 {}; cores: server {:.2}, client {:.2}, other load {:.2}, stolen by the host {:.2}{}",
                    config.single.name(),
                    thousands(latency.target_rate as f64),
                    thousands(latency.completed as f64),
                    thousands(latency.achieved_rate),
                    micros(latency.from_intended[0]),
                    micros(latency.from_intended[1]),
                    micros(latency.from_intended[2]),
                    micros(latency.from_send[1]),
                    latency.server_cpu / latency.seconds,
                    latency.client_cpu / latency.seconds,
                    latency.others_cpu / latency.seconds,
                    latency.stolen_cpu / latency.seconds,
                    if retry { " (other load: run again)" } else { "" },
                );
                if retry {
                    results.retried += 1;
                    continue;
                }
                results.latencies.push(latency);
                break;
            }
        }
        drop(peer);
    });
    results.peak = peak_rss_bytes(server_pid);
    drop(server);
    summary(&config, &modes, &results);
}

/// Everything measured, for the summary.
struct Results {
    /// runs[mode][level]: one Run per round.
    runs: Vec<Vec<Vec<Run>>>,
    /// One open-loop run per round.
    latencies: Vec<Latency>,
    /// Runs repeated because of other load.
    retried: usize,
    peer_present: bool,
    batches: usize,
    /// serialsvc peak resident memory, bytes.
    peak: u64,
}

fn summary(config: &Config, modes: &[Mode], results: &Results) {
    let runs = &results.runs;
    let failures: u64 = runs
        .iter()
        .flatten()
        .flatten()
        .map(|r| r.counts.failures)
        .sum::<u64>()
        + results.latencies.iter().map(|l| l.failures).sum::<u64>();
    println!();
    println!(
        "== verification end to end: {} committed serials in {} batches of {BATCH}; {} s × {} rounds; {} batches in flight per connection ==",
        thousands((results.batches * BATCH) as f64),
        results.batches,
        config.seconds,
        config.rounds,
        config.window
    );
    println!(
        "{:<24} {:>5} {:>14} {:>16} {:>12} {:>12} {:>12}   rounds (items/s)",
        "mode",
        "conns",
        "median items/s",
        "per server CPU-s",
        "server cores",
        "client cores",
        "other load"
    );
    // medians[mode][level]
    let mut medians = vec![vec![f64::NAN; config.levels.len()]; modes.len()];
    for (m, mode) in modes.iter().enumerate() {
        for (l, level) in config.levels.iter().enumerate() {
            let list = &runs[m][l];
            if list.is_empty() {
                continue;
            }
            let mut rates: Vec<f64> = list.iter().map(Run::rate).collect();
            let all = rates
                .iter()
                .map(|r| thousands(*r))
                .collect::<Vec<_>>()
                .join(" · ");
            let rate = median(&mut rates);
            let mut per_cpu: Vec<f64> = list.iter().map(Run::per_server_cpu_second).collect();
            let mut server: Vec<f64> = list.iter().map(|r| r.server_cpu / r.seconds).collect();
            let mut client: Vec<f64> = list.iter().map(|r| r.client_cpu / r.seconds).collect();
            let mut others: Vec<f64> = list.iter().map(|r| r.others_cpu / r.seconds).collect();
            medians[m][l] = rate;
            println!(
                "{:<24} {:>5} {:>14} {:>16} {:>12.2} {:>12.2} {:>12.2}   {all}",
                mode.name(),
                level,
                thousands(rate),
                thousands(median(&mut per_cpu)),
                median(&mut server),
                median(&mut client),
                median(&mut others),
            );
        }
    }
    let best = |m: usize| {
        medians[m]
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_finite())
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(l, r)| (config.levels[l], *r))
    };
    println!();
    for (m, mode) in modes.iter().enumerate() {
        if let Some((level, rate)) = best(m) {
            println!(
                "best {:<24} {:>12} items/s at {level} connections",
                mode.name(),
                thousands(rate)
            );
        }
    }
    let target = 2_000_000.0;
    if let Some((level, rate)) = best(0) {
        println!(
            "target ≥ 2,000,000 verifications/s (VerifyStream, batches of {BATCH}): {} ({:.2}× at {level} streams)",
            if rate >= target { "MET" } else { "NOT MET" },
            rate / target
        );
    }
    if results.peer_present {
        for (m, mode) in modes.iter().enumerate().take(2) {
            let per_level: Vec<String> = config
                .levels
                .iter()
                .enumerate()
                .map(|(l, level)| {
                    let mut ratios: Vec<f64> = runs[m][l]
                        .iter()
                        .zip(&runs[2][l])
                        .map(|(ours, redis)| ours.rate() / redis.rate())
                        .collect();
                    if ratios.is_empty() {
                        format!("×{level}: —")
                    } else {
                        format!("×{level}: {:.2}", median(&mut ratios))
                    }
                })
                .collect();
            let best_ratio = match (best(m), best(2)) {
                (Some((_, ours)), Some((_, redis))) => format!("{:.2}", ours / redis),
                _ => "—".into(),
            };
            println!(
                "ratio {} / Redis MGET: best/best {best_ratio}; per level (median of per-round ratios) {}",
                mode.name(),
                per_level.join(", ")
            );
        }
    } else {
        println!("Redis peer skipped: no ratio");
    }
    println!();
    let latencies = &results.latencies;
    if !latencies.is_empty() {
        let med = |f: &dyn Fn(&Latency) -> f64| {
            let mut values: Vec<f64> = latencies.iter().map(f).collect();
            median(&mut values)
        };
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let p50 = med(&|l| us(l.from_intended[0]));
        let p99 = med(&|l| us(l.from_intended[1]));
        let p999 = med(&|l| us(l.from_intended[2]));
        let achieved = med(&|l| l.achieved_rate);
        println!(
            "single {}, open loop at {}/s for {} s on {}, medians over {} rounds: achieved {}/s",
            match config.single {
                Single::Lvm => "Lightweight Verification Messaging GET (HTTP/1.1)",
                Single::H2 => "Verify (h2 client)",
                Single::Tonic => "Verify (tonic client)",
            },
            thousands(config.rate as f64),
            config.seconds,
            if config.single == Single::Lvm {
                format!("at most {LVM_CONNECTIONS} keep-alive connections")
            } else {
                format!("{} connections", latency_connections())
            },
            latencies.len(),
            thousands(achieved)
        );
        println!(
            "  latency from intended send: p50 {p50:.0} µs  p99 {p99:.0} µs  p999 {p999:.0} µs  (p99 per round: {})",
            latencies
                .iter()
                .map(|l| micros(l.from_intended[1]))
                .collect::<Vec<_>>()
                .join(" · ")
        );
        println!(
            "  latency from actual send:   p50 {:.0} µs  p99 {:.0} µs  p999 {:.0} µs",
            med(&|l| us(l.from_send[0])),
            med(&|l| us(l.from_send[1])),
            med(&|l| us(l.from_send[2])),
        );
        println!(
            "  sender lateness p99 {:.0} µs;  cores: server {:.2}, client {:.2}, other load {:.2}, stolen by the host {:.2}",
            med(&|l| us(l.lag[0])),
            med(&|l| l.server_cpu / l.seconds),
            med(&|l| l.client_cpu / l.seconds),
            med(&|l| l.others_cpu / l.seconds),
            med(&|l| l.stolen_cpu / l.seconds),
        );
        println!(
            "  target p99 < 1 ms at {}/s: {}",
            thousands(config.rate as f64),
            if p99 < 1000.0 && achieved >= 0.99 * config.rate as f64 {
                "MET"
            } else {
                "NOT MET"
            }
        );
        println!();
    }
    println!(
        "serialsvc peak resident memory: {:.0} MiB; runs repeated for other load (> {:.2} cores): {}",
        results.peak as f64 / (1 << 20) as f64,
        config.max_other,
        results.retried
    );
    if failures > 0 {
        println!(
            "WARNING: {failures} FAILED batches or calls (see FAILURE lines): the figures above exclude them"
        );
    } else {
        println!("all answers checked: every item verified, every Redis value present");
    }
}
