//! serialsvc against what users would build instead (issue 9): Redis as a
//! status cache and PostgreSQL as a table with a primary key, side by side
//! on the same machine, in the same run (DESIGN.md §6).
//!
//! Build first, then run (the release profile shares the test build):
//!   cargo build --release --workspace
//!   cargo bench --profile release --workspace --bench peers
//! Quick smoke run (what CI runs; figures not judged): `PEERS_QUICK=1`.
//!
//! The harness installs `redis-server` and `postgresql` from Debian when
//! they are missing, starts serialsvc, Redis (no persistence) and a
//! PostgreSQL cluster made by `initdb` in a temporary directory (fsync and
//! synchronous commit on; every setting is printed and recorded), all on
//! loopback, and stops all three at the end, also on failure (drop guards).
//! Scenarios, each run `PEERS_ROUNDS` times (default 5, quick 2), serialsvc
//! and its peer one after the other, the one going first alternating from
//! round to round:
//!
//! 1. batch verification: `VerifyStream` and `VerifyBatch`, in the field
//!    and in the packed encoding, against Redis `MGET` on the same keys,
//!    batches of 1, 64 and 1,024 items, the same connections and requests in
//!    flight (the target is judged on `VerifyStream` packed);
//! 2. single verifications, open loop at `PEERS_RATE` (10,000) per second:
//!    latency of `Verify` against Redis `GET`; the `Verify` calls go through
//!    `verify::H2Unary`, a unary gRPC client on `h2` that writes each call
//!    once (tonic's client writes twice and costs the shared machine more;
//!    `VERIFY_E2E_SINGLE=tonic` in `verify_e2e` measures with it); and the
//!    same packs over the GS1 Lightweight Verification Messaging responder
//!    (HTTP/1.1 `GET`s of Digital Links, pooled keep-alive connections),
//!    reported beside them (the target is judged on `Verify`);
//! 3. pool issuance of 10,000 / 100,000 / 1,000,000 serials, durable,
//!    against PostgreSQL inserting as many random eu-fmd serials with
//!    `INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING RETURNING serial`,
//!    regenerating the shortfall, in one committed transaction;
//! 4. commissioning and bulk decommission of the largest pool of each round:
//!    the `Commission` and `Decommission` streams against PostgreSQL batched
//!    `UPDATE`s, groups of 10,000, each group committed;
//! 5. concurrent issuance from 8 lines: 8 pool requests at once, on 8
//!    connections, against 8 PostgreSQL connections issuing at once;
//! 6. resident bytes per serial: serialsvc's resident memory over its empty
//!    baseline, just after loading and at rest (after its idle flush),
//!    against Redis `used_memory` for the same records.
//!
//! Every scenario records items per second and items per CPU-second of the
//! server under test (`/proc/PID/stat`; for PostgreSQL the postmaster and
//! all its processes). Results go to `PEERS_OUT` (default
//! `$CARGO_TARGET_DIR/peers`): `results.json` and `verification.svg`, the
//! throughput against batch size. The random serials of the PostgreSQL peer
//! and the order of verification requests come from a seed that is printed
//! and can be given back as `PEERS_SEED` (serialsvc draws its own serials).
//!
//! Knobs: `PEERS_QUICK`, `PEERS_SEED`, `PEERS_ROUNDS`, `PEERS_SECONDS`
//! (each throughput run, default 5), `PEERS_VERIFY_SERIALS` (1,000,000),
//! `PEERS_POOL_SIZES` (`10000,100000,1000000`), `PEERS_LINES` (8),
//! `PEERS_LINE_SERIALS` (serials per line, 125,000), `PEERS_CONNECTIONS`
//! (4), `PEERS_WINDOW` (8 in flight per connection), `PEERS_RATE` (10,000),
//! `PEERS_REST_SECONDS` (20: the wait, after loading the verification set,
//! for the server's idle flush before memory is measured at rest),
//! `PEERS_OUT`, `PEERS_LOG` (the server's `RUST_LOG`), `PEERS_NOISE_SECONDS`
//! (5, quick 1; 0 skips): each measurement of the machine's noise floor
//! (`benches::noise`: an idle thread's wake-up lateness, the round trip of
//! two threads waking each other across CPUs and on one, and the time taken
//! from a busy thread on each CPU, with the share more than 1 ms into a
//! gap), made before and after the scenarios, printed and kept in the JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::Channel;
use benches::peers::{
    POSTGRES_SETTINGS, Postgres, REDIS_SETTINGS, Redis, postgres_bin_dir, redis_server,
};
use benches::verify::{
    Counts, GROUP, Latency, Run, batch_caller, commission, connect, h2_verify_open_loop,
    identifier, join_all, lvm_open_loop, measured, micros, offset, on_own_thread, one_stream,
    packed_identifiers, pool_client, redis_caller, redis_get_call, redis_key, request_pool,
    round_robin_open_loop, thousands,
};
use benches::{
    EU_FMD_ALPHABET, Process, Server, clock_ticks_per_second, env_number, machine, median,
    peak_rss_bytes, register_product_and_lot, rss_bytes,
};
use proto::serial::v1 as pb;
use proto::serial::v1::status_service_client::StatusServiceClient;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};

const GTIN: &str = "09520123456788";
const LOT: &str = "LOT1";
const EXPIRY: &str = "301231";
/// Batch sizes of the verification scenario.
const BATCH_SIZES: [usize; 3] = [1, 64, 1024];
/// Most distinct requests prebuilt per batch size (used round-robin).
const MAX_REQUESTS: usize = 100_000;
/// Serials per PostgreSQL INSERT statement: serialsvc's segment size.
const INSERT_CHUNK: usize = 65_536;
/// Length of an eu-fmd serial.
const SERIAL_LENGTH: usize = 12;

const STREAM: &str = "serialsvc VerifyStream";
const BATCH: &str = "serialsvc VerifyBatch";
const STREAM_PACKED: &str = "serialsvc VerifyStream packed";
const BATCH_PACKED: &str = "serialsvc VerifyBatch packed";
const MGET: &str = "Redis MGET";
const VERIFY_SINGLE: &str = "serialsvc Verify";
/// The same single verifications over the GS1 Lightweight Verification
/// Messaging responder (HTTP/1.1), what verification routers call.
const LVM_SINGLE: &str = "serialsvc LVM GET";
const GET: &str = "Redis GET";
const POOL: &str = "serialsvc RequestPool";
const INSERT: &str = "PostgreSQL INSERT … ON CONFLICT DO NOTHING";
const COMMISSION: &str = "serialsvc Commission";
const DECOMMISSION: &str = "serialsvc Decommission";
const UPDATE: &str = "PostgreSQL batched UPDATE";

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    seed: u64,
    rounds: usize,
    seconds: f64,
    verify_serials: u64,
    pool_sizes: Vec<u64>,
    lines: usize,
    line_serials: u64,
    connections: usize,
    window: usize,
    rate: u64,
    /// Seconds to wait, after loading the verification set, for the idle
    /// flush before the memory is measured at rest.
    rest_seconds: u64,
    /// Seconds of each noise-floor measurement before and after the
    /// scenarios (`benches::noise`); 0 skips them.
    noise_seconds: u64,
    out: PathBuf,
}

fn env_list(name: &str) -> Option<Vec<u64>> {
    let list: Vec<u64> = std::env::var(name)
        .ok()?
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    (!list.is_empty()).then_some(list)
}

impl Config {
    fn from_env() -> Self {
        let quick = std::env::var("PEERS_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let seed = std::env::var("PEERS_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                xxhash_rust::xxh3::xxh3_64(&now.as_nanos().to_le_bytes())
            });
        let (rounds, seconds, verify, pools, line) = if quick {
            (2, 1, 20_000, vec![10_000], 5_000)
        } else {
            (5, 5, 1_000_000, vec![10_000, 100_000, 1_000_000], 125_000)
        };
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_owned()))
                    .unwrap_or_else(|| PathBuf::from("target"))
            });
        Self {
            quick,
            seed,
            rounds: env_number("PEERS_ROUNDS", rounds).max(1) as usize,
            seconds: env_number("PEERS_SECONDS", seconds).max(1) as f64,
            verify_serials: env_number("PEERS_VERIFY_SERIALS", verify).max(1024),
            pool_sizes: env_list("PEERS_POOL_SIZES").unwrap_or(pools),
            lines: env_number("PEERS_LINES", 8).max(1) as usize,
            line_serials: env_number("PEERS_LINE_SERIALS", line).max(1),
            connections: env_number("PEERS_CONNECTIONS", 4).max(1) as usize,
            window: env_number("PEERS_WINDOW", 8).max(1) as usize,
            rate: env_number("PEERS_RATE", 10_000).max(1),
            rest_seconds: env_number("PEERS_REST_SECONDS", 20),
            noise_seconds: env_number("PEERS_NOISE_SECONDS", if quick { 1 } else { 5 }),
            out: std::env::var("PEERS_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|_| target.join("peers")),
        }
    }

    fn json(&self) -> Value {
        json!({
            "quick": self.quick,
            "seed": self.seed,
            "rounds": self.rounds,
            "seconds_per_throughput_run": self.seconds,
            "verification_serials": self.verify_serials,
            "pool_sizes": self.pool_sizes,
            "lines": self.lines,
            "serials_per_line": self.line_serials,
            "connections": self.connections,
            "in_flight_per_connection": self.window,
            "single_verification_rate": self.rate,
            "noise_seconds_each": self.noise_seconds,
        })
    }
}

/// One measured run of one system in one scenario.
#[derive(Debug, Clone)]
struct Record {
    scenario: &'static str,
    /// Batch size, pool size, … as text.
    variant: String,
    system: &'static str,
    round: usize,
    run: Run,
}

/// Which of the pair goes first in `round`: serialsvc in even rounds.
fn serialsvc_first(round: usize) -> bool {
    round.is_multiple_of(2)
}

/// Random eu-fmd serials: 12 characters of the 32-character alphabet, five
/// bits each from the generator.
fn random_serials(rng: &mut ChaCha20Rng, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let mut bits = rng.next_u64();
            let mut serial = String::with_capacity(SERIAL_LENGTH);
            for _ in 0..SERIAL_LENGTH {
                serial.push(char::from(EU_FMD_ALPHABET[(bits & 31) as usize]));
                bits >>= 5;
            }
            serial
        })
        .collect()
}

/// The PostgreSQL issuer: `count` fresh random serials inserted into the
/// primary-keyed table in one transaction, chunks of [`INSERT_CHUNK`],
/// duplicates skipped by `ON CONFLICT DO NOTHING` and regenerated; returns
/// the serials inserted (from `RETURNING`), durable once it returns.
async fn postgres_issue(
    client: &mut tokio_postgres::Client,
    rng: &mut ChaCha20Rng,
    count: usize,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let insert = transaction
        .prepare(
            "INSERT INTO serials (gtin, serial) SELECT $1::text, s FROM unnest($2::text[]) AS s \
             ON CONFLICT DO NOTHING RETURNING serial",
        )
        .await?;
    let mut issued: Vec<String> = Vec::with_capacity(count);
    let mut generated = 0;
    while issued.len() < count {
        let want = (count - issued.len()).min(INSERT_CHUNK);
        generated += want;
        let serials = random_serials(rng, want);
        let rows = transaction.query(&insert, &[&GTIN, &serials]).await?;
        issued.extend(rows.iter().map(|row| row.get::<_, String>(0)));
    }
    transaction.commit().await?;
    if generated > count {
        eprintln!(
            "PostgreSQL: {} serials regenerated after conflicts",
            generated - count
        );
    }
    Ok(issued)
}

/// Sets `state` (and the lot) of `serials` in groups of [`GROUP`], each
/// group its own committed transaction; every row must be in state `from`.
async fn postgres_update(
    client: &tokio_postgres::Client,
    serials: &[String],
    from: i16,
    to: i16,
) -> Result<(), String> {
    let update = client
        .prepare(
            // `= ANY`, not a join with `unnest`: its cost grows with the
            // array, so the planner keeps the primary-key index scan even
            // when its statistics say no row is in state `from` yet (with
            // the join it chose a scan of the whole table per group).
            "UPDATE serials SET state = $3, lot = $4 \
             WHERE gtin = $1 AND serial = ANY($2::text[]) AND state = $5",
        )
        .await
        .map_err(|e| e.to_string())?;
    for group in serials.chunks(GROUP) {
        let group: Vec<&str> = group.iter().map(String::as_str).collect();
        let changed = client
            .execute(&update, &[&GTIN, &group, &to, &LOT, &from])
            .await
            .map_err(|e| e.to_string())?;
        if changed != group.len() as u64 {
            return Err(format!("{changed} rows updated of {}", group.len()));
        }
    }
    Ok(())
}

/// The prebuilt verification requests of one batch size.
struct Workload {
    size: usize,
    stream: Arc<Vec<Arc<pb::VerifyStreamRequest>>>,
    batch: Arc<Vec<Arc<pb::VerifyBatchRequest>>>,
    /// The same batches in the packed encoding.
    stream_packed: Arc<Vec<Arc<pb::VerifyStreamRequest>>>,
    batch_packed: Arc<Vec<Arc<pb::VerifyBatchRequest>>>,
    redis: Arc<Vec<redis::Cmd>>,
}

impl Workload {
    /// Requests of `size` items from `serials` (already shuffled), at most
    /// [`MAX_REQUESTS`].
    fn build(serials: &[String], size: usize) -> Self {
        let batches: Vec<&[String]> = serials
            .chunks(size)
            .filter(|chunk| chunk.len() == size)
            .take(MAX_REQUESTS)
            .collect();
        let items = |chunk: &[String]| -> Vec<pb::PackIdentifier> {
            chunk
                .iter()
                .map(|s| identifier(GTIN, s, LOT, EXPIRY))
                .collect()
        };
        Self {
            size,
            stream: Arc::new(
                batches
                    .iter()
                    .enumerate()
                    .map(|(index, chunk)| {
                        Arc::new(pb::VerifyStreamRequest {
                            batch_id: index as u64,
                            items: items(chunk),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            batch: Arc::new(
                batches
                    .iter()
                    .map(|chunk| {
                        Arc::new(pb::VerifyBatchRequest {
                            items: items(chunk),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            stream_packed: Arc::new(
                batches
                    .iter()
                    .enumerate()
                    .map(|(index, chunk)| {
                        Arc::new(pb::VerifyStreamRequest {
                            batch_id: index as u64,
                            packed_items: packed_identifiers(GTIN, chunk, LOT, EXPIRY),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            batch_packed: Arc::new(
                batches
                    .iter()
                    .map(|chunk| {
                        Arc::new(pb::VerifyBatchRequest {
                            packed_items: packed_identifiers(GTIN, chunk, LOT, EXPIRY),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            redis: Arc::new(
                batches
                    .iter()
                    .map(|chunk| {
                        let mut command = redis::cmd("MGET");
                        for serial in *chunk {
                            command.arg(redis_key(GTIN, serial));
                        }
                        command
                    })
                    .collect(),
            ),
        }
    }
}

/// Everything the scenarios share.
struct Harness {
    config: Config,
    ticks: f64,
    server: Server,
    redis: Option<Redis>,
    postgres: Option<Postgres>,
    records: Vec<Record>,
    latencies: Vec<(&'static str, usize, Latency)>,
    memory: Value,
}

impl Harness {
    fn serialsvc(&self) -> Process {
        Process::One(self.server.pid())
    }

    fn record(
        &mut self,
        scenario: &'static str,
        variant: String,
        system: &'static str,
        round: usize,
        run: Run,
    ) {
        eprintln!(
            "round {round} {scenario} [{variant}] {system:<44}: {:>12} items/s, {:>12} per server CPU-s; cores: server {:.2}, client {:.2}, other load {:.2}, stolen by the host {:.2}; {:.2} s{}",
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
            }
        );
        self.records.push(Record {
            scenario,
            variant,
            system,
            round,
            run,
        });
    }

    /// Scenario 1: batch verification, every batch size, rounds inside.
    async fn verification(&mut self, serials: &[String], channels: &[Channel]) {
        let redis_connections = match &self.redis {
            Some(redis) => {
                let mut all = Vec::new();
                for _ in 0..self.config.connections {
                    all.push(redis.connection().await.expect("redis connection"));
                }
                all
            }
            None => Vec::new(),
        };
        let duration = Duration::from_secs_f64(self.config.seconds);
        let workloads: Vec<Workload> = BATCH_SIZES
            .iter()
            .map(|&size| Workload::build(serials, size))
            .collect();
        // Warm-up, not recorded.
        for work in &workloads {
            for system in [STREAM, BATCH, STREAM_PACKED, BATCH_PACKED, MGET] {
                let _ = self
                    .verify_run(
                        system,
                        work,
                        channels,
                        &redis_connections,
                        Duration::from_millis(500),
                    )
                    .await;
            }
        }
        for round in 0..self.config.rounds {
            for work in &workloads {
                let systems = if serialsvc_first(round) {
                    [STREAM, BATCH, STREAM_PACKED, BATCH_PACKED, MGET]
                } else {
                    [MGET, STREAM_PACKED, BATCH_PACKED, STREAM, BATCH]
                };
                for system in systems {
                    if let Some(run) = self
                        .verify_run(system, work, channels, &redis_connections, duration)
                        .await
                    {
                        self.record(
                            "batch verification",
                            work.size.to_string(),
                            system,
                            round,
                            run,
                        );
                    }
                }
            }
        }
    }

    async fn verify_run(
        &self,
        system: &'static str,
        work: &Workload,
        channels: &[Channel],
        redis_connections: &[redis::aio::MultiplexedConnection],
        duration: Duration,
    ) -> Option<Run> {
        let deadline = Instant::now() + duration;
        let (level, window) = (channels.len(), self.config.window);
        let mut tasks = Vec::new();
        let server = match system {
            STREAM | STREAM_PACKED => {
                let stream = if system == STREAM {
                    &work.stream
                } else {
                    &work.stream_packed
                };
                for (index, channel) in channels.iter().enumerate() {
                    tasks.push(tokio::spawn(one_stream(
                        channel.clone(),
                        Arc::clone(stream),
                        offset(index, level, work.stream.len()),
                        window,
                        deadline,
                    )));
                }
                self.serialsvc()
            }
            BATCH | BATCH_PACKED => {
                let batch = if system == BATCH {
                    &work.batch
                } else {
                    &work.batch_packed
                };
                let callers = level * window;
                for index in 0..callers {
                    tasks.push(tokio::spawn(batch_caller(
                        channels[index % level].clone(),
                        Arc::clone(batch),
                        offset(index, callers, work.batch.len()),
                        deadline,
                    )));
                }
                self.serialsvc()
            }
            _ => {
                let redis = self.redis.as_ref()?;
                let callers = level * window;
                for index in 0..callers {
                    tasks.push(tokio::spawn(redis_caller(
                        redis_connections[index % redis_connections.len()].clone(),
                        Arc::clone(&work.redis),
                        work.size,
                        offset(index, callers, work.redis.len()),
                        deadline,
                    )));
                }
                Process::One(redis.pid())
            }
        };
        Some(measured(server, self.ticks, join_all(tasks)).await)
    }

    /// Scenario 2: single verifications at a fixed rate, open loop.
    async fn latency(&mut self, serials: &[String]) {
        let duration = Duration::from_secs_f64(self.config.seconds);
        let requests: Arc<Vec<Arc<pb::VerifyRequest>>> = Arc::new(
            serials
                .iter()
                .take(MAX_REQUESTS)
                .map(|s| {
                    Arc::new(pb::VerifyRequest {
                        item: Some(identifier(GTIN, s, LOT, EXPIRY)),
                    })
                })
                .collect(),
        );
        let keys: Arc<Vec<Arc<Vec<u8>>>> = Arc::new(
            serials
                .iter()
                .take(MAX_REQUESTS)
                .map(|s| Arc::new(redis_key(GTIN, s)))
                .collect(),
        );
        let (rate, connections, ticks) = (self.config.rate, self.config.connections, self.ticks);
        for round in 0..self.config.rounds {
            // Each system goes first, second and last in turn.
            let mut systems = [VERIFY_SINGLE, GET, LVM_SINGLE];
            let turns = round % systems.len();
            systems.rotate_left(turns);
            for system in systems {
                // Each system's load runs on a thread of its own with a
                // single-threaded runtime (see `on_own_thread`), its
                // connections made there, so the client's own wake-ups
                // between threads do not count against either system.
                let latency = if system == VERIFY_SINGLE {
                    let endpoint = self.server.endpoint.clone();
                    h2_verify_open_loop(
                        &endpoint,
                        connections,
                        &requests,
                        rate,
                        duration,
                        self.serialsvc(),
                        ticks,
                    )
                    .await
                } else if system == LVM_SINGLE {
                    lvm_open_loop(&requests, rate, duration, self.serialsvc(), ticks).await
                } else {
                    let Some(redis) = &self.redis else { continue };
                    let client = redis.client.clone();
                    let server = Process::One(redis.pid());
                    let keys = Arc::clone(&keys);
                    on_own_thread(move || async move {
                        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                        let mut redis_connections = Vec::new();
                        for _ in 0..connections {
                            redis_connections.push(
                                client
                                    .get_multiplexed_async_connection_with_config(&config)
                                    .await
                                    .expect("redis connection"),
                            );
                        }
                        round_robin_open_loop(
                            rate,
                            duration,
                            server,
                            ticks,
                            &redis_connections,
                            &keys,
                            redis_get_call,
                        )
                        .await
                    })
                    .await
                };
                eprintln!(
                    "round {round} single verification {system:<20} at {}/s: {} calls, achieved {}/s; from intended send p50 {} p99 {} p999 {}; cores: server {:.2}, client {:.2}, other load {:.2}, stolen by the host {:.2}{}",
                    thousands(latency.target_rate as f64),
                    thousands(latency.completed as f64),
                    thousands(latency.achieved_rate),
                    micros(latency.from_intended[0]),
                    micros(latency.from_intended[1]),
                    micros(latency.from_intended[2]),
                    latency.server_cpu / latency.seconds,
                    latency.client_cpu / latency.seconds,
                    latency.others_cpu / latency.seconds,
                    latency.stolen_cpu / latency.seconds,
                    if latency.failures > 0 {
                        format!(", {} FAILURES", latency.failures)
                    } else {
                        String::new()
                    }
                );
                self.latencies.push((system, round, latency));
            }
        }
    }

    /// Scenarios 3 and 4: pools of every size, then commissioning and
    /// decommissioning of the largest pool of the round.
    async fn issuance(&mut self, channel: &Channel, pg: Option<&mut tokio_postgres::Client>) {
        let mut pools = pool_client(channel.clone());
        let mut status = StatusServiceClient::new(channel.clone())
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20);
        let mut rng = ChaCha20Rng::seed_from_u64(self.config.seed);
        let mut pg = pg;
        let largest = self.config.pool_sizes.iter().copied().max().unwrap_or(0);
        for round in 0..self.config.rounds {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for &size in &self.config.pool_sizes.clone() {
                for serialsvc in order(round) {
                    if serialsvc {
                        let id = format!("peers-pool-{round}-{size}");
                        let mut got = Vec::new();
                        let run = measured(self.serialsvc(), self.ticks, async {
                            got = request_pool(&mut pools, &id, GTIN, "L1", size).await;
                            Counts {
                                items: got.len() as u64,
                                failures: 0,
                            }
                        })
                        .await;
                        self.record("pool issuance", size.to_string(), POOL, round, run);
                        if size == largest {
                            ours = got;
                        }
                    } else if let (Some(client), Some(postgres)) =
                        (pg.as_deref_mut(), &self.postgres)
                    {
                        let mut got = Vec::new();
                        let run = measured(Process::Tree(postgres.pid()), self.ticks, async {
                            got = postgres_issue(client, &mut rng, size as usize)
                                .await
                                .expect("PostgreSQL issuance");
                            Counts {
                                items: got.len() as u64,
                                failures: 0,
                            }
                        })
                        .await;
                        assert_eq!(got.len() as u64, size, "PostgreSQL serials issued");
                        self.record("pool issuance", size.to_string(), INSERT, round, run);
                        if size == largest {
                            theirs = got;
                        }
                    }
                }
            }
            let variant = largest.to_string();
            for (step, ours_name, from, to) in [
                ("commissioning", COMMISSION, 0i16, 1i16),
                ("bulk decommission", DECOMMISSION, 1, 2),
            ] {
                for serialsvc in order(round) {
                    if serialsvc {
                        let run = measured(self.serialsvc(), self.ticks, async {
                            if from == 0 {
                                commission(&mut pools, &format!("peers-{round}"), GTIN, LOT, &ours)
                                    .await;
                            } else {
                                decommission(&mut status, round, &ours).await;
                            }
                            Counts {
                                items: ours.len() as u64,
                                failures: 0,
                            }
                        })
                        .await;
                        self.record(step, variant.clone(), ours_name, round, run);
                    } else if let (Some(client), Some(postgres)) =
                        (pg.as_deref_mut(), &self.postgres)
                    {
                        let run = measured(Process::Tree(postgres.pid()), self.ticks, async {
                            postgres_update(client, &theirs, from, to)
                                .await
                                .expect("PostgreSQL UPDATE");
                            Counts {
                                items: theirs.len() as u64,
                                failures: 0,
                            }
                        })
                        .await;
                        self.record(step, variant.clone(), UPDATE, round, run);
                    }
                }
            }
        }
    }

    /// Scenario 5: `lines` requesters at once.
    async fn concurrent_issuance(&mut self, pg: &mut Vec<tokio_postgres::Client>) {
        let (lines, per_line) = (self.config.lines, self.config.line_serials);
        let mut channels = Vec::new();
        for _ in 0..lines {
            channels.push(connect(&self.server.endpoint).await);
        }
        let variant = format!("{lines} lines × {per_line}");
        for round in 0..self.config.rounds {
            for serialsvc in order(round) {
                if serialsvc {
                    let tasks: Vec<_> = channels
                        .iter()
                        .enumerate()
                        .map(|(line, channel)| {
                            let mut pools = pool_client(channel.clone());
                            tokio::spawn(async move {
                                let id = format!("peers-lines-{round}-{line}");
                                let got = request_pool(
                                    &mut pools,
                                    &id,
                                    GTIN,
                                    &format!("L{line}"),
                                    per_line,
                                )
                                .await;
                                Counts {
                                    items: got.len() as u64,
                                    failures: 0,
                                }
                            })
                        })
                        .collect();
                    let run = measured(self.serialsvc(), self.ticks, join_all(tasks)).await;
                    assert_eq!(run.counts.failures, 0, "concurrent pools failed");
                    self.record("concurrent issuance", variant.clone(), POOL, round, run);
                } else if let Some(postgres) = &self.postgres {
                    let pid = postgres.pid();
                    let seed = self.config.seed;
                    let clients = std::mem::take(pg);
                    let mut returned = Vec::new();
                    let run = measured(Process::Tree(pid), self.ticks, async {
                        // One task per line, as serialsvc's lines.
                        let tasks: Vec<_> = clients
                            .into_iter()
                            .take(lines)
                            .enumerate()
                            .map(|(line, mut client)| {
                                let stream = ((round * lines + line + 1) as u64) << 32;
                                let mut rng = ChaCha20Rng::seed_from_u64(seed ^ stream);
                                tokio::spawn(async move {
                                    let got =
                                        postgres_issue(&mut client, &mut rng, per_line as usize)
                                            .await;
                                    (client, got.map(|serials| serials.len()))
                                })
                            })
                            .collect();
                        let mut total = Counts::default();
                        for task in tasks {
                            let (client, got) = task.await.expect("PostgreSQL line task");
                            total.items += got.expect("PostgreSQL concurrent issuance") as u64;
                            returned.push(client);
                        }
                        total
                    })
                    .await;
                    *pg = returned;
                    self.record("concurrent issuance", variant.clone(), INSERT, round, run);
                }
            }
        }
    }
}

/// serialsvc first (`true`) or the peer first, alternating by round.
fn order(round: usize) -> [bool; 2] {
    if serialsvc_first(round) {
        [true, false]
    } else {
        [false, true]
    }
}

/// Decommissions `serials` (dispensed) through one Decommission stream in
/// groups of [`GROUP`]; every item must be applied.
async fn decommission(client: &mut StatusServiceClient<Channel>, round: usize, serials: &[String]) {
    let groups = benches::decommission_groups(GTIN, &format!("peers-d{round}-"), serials, GROUP);
    let expected = groups.len();
    let mut answers = client
        .decommission(tokio_stream::iter(groups))
        .await
        .expect("Decommission")
        .into_inner();
    let mut seen = 0;
    while let Some(answer) = answers.message().await.expect("decommission answers") {
        let status = answer.status.expect("status");
        assert_eq!(status.code, 0, "decommission group refused: {status:?}");
        let counts = answer.counts.expect("counts");
        assert_eq!(counts.applied as usize, answer.results.len(), "{counts:?}");
        seen += 1;
    }
    assert_eq!(seen, expected, "decommission answers");
}

/// Shuffles `values` with the seeded generator (Fisher–Yates).
fn shuffle<T>(values: &mut [T], rng: &mut ChaCha20Rng) {
    for i in (1..values.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        values.swap(i, j);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let config = Config::from_env();
    let started = Instant::now();
    println!(
        "peers harness (issue 9){}: seed {} (give it back as PEERS_SEED={} to repeat the peer's serials and the request order)",
        if config.quick {
            ", QUICK mode: figures not comparable"
        } else {
            ""
        },
        config.seed,
        config.seed
    );
    let machine = machine();
    for (name, value) in &machine {
        println!("machine {name}: {value}");
    }
    let redis_binary = redis_server();
    let postgres_bin = postgres_bin_dir();
    let noise_before = noise_floor(&config, "before the scenarios");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = Server::start("PEERS_LOG");
    let mut harness = Harness {
        ticks: clock_ticks_per_second(),
        server,
        redis: None,
        postgres: None,
        records: Vec::new(),
        latencies: Vec::new(),
        memory: Value::Null,
        config: config.clone(),
    };
    runtime.block_on(async {
        let channel = connect(&harness.server.endpoint).await;
        register_product_and_lot(channel.clone(), GTIN, LOT, EXPIRY).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = rss_bytes(harness.server.pid());

        // Peers.
        if let Some(binary) = &redis_binary {
            harness.redis = Redis::start(binary).await;
        }
        if let Some(bin) = &postgres_bin {
            match Postgres::start(bin).await {
                Ok(postgres) => harness.postgres = Some(postgres),
                Err(error) => eprintln!("SKIPPING THE POSTGRESQL PEER: {error}"),
            }
        }
        let redis_baseline = match &harness.redis {
            Some(redis) => redis.memory("used_memory").await,
            None => 0,
        };
        if let Some(redis) = &harness.redis {
            println!("Redis: {} on 127.0.0.1:{}; settings: {}", redis.version, redis.port,
                REDIS_SETTINGS.iter().map(|(n, v)| format!("{n} {v}")).collect::<Vec<_>>().join(", "));
        }
        if let Some(postgres) = &harness.postgres {
            println!(
                "PostgreSQL {} on 127.0.0.1:{}; as reported by SHOW: {}",
                postgres.setting("server_version"),
                postgres.port,
                postgres.settings.iter().filter(|(n, _)| n != "server_version").map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", ")
            );
        }

        // The verification set: issued, commissioned, and the same records in Redis.
        let mut serials = benches::verify::issue_and_commission(
            channel.clone(),
            "peers-verify",
            GTIN,
            LOT,
            harness.config.verify_serials,
        )
        .await;
        let keys: Vec<Vec<u8>> = serials.iter().map(|s| redis_key(GTIN, s)).collect();
        if let Some(redis) = &harness.redis {
            redis.load(&keys).await;
        }
        drop(keys);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resident = rss_bytes(harness.server.pid());
        let count = serials.len() as f64;
        let ours = resident.saturating_sub(baseline) as f64 / count;
        let redis_used = match &harness.redis {
            Some(redis) => Some(redis.memory("used_memory").await),
            None => None,
        };
        let theirs = redis_used.map(|used| used.saturating_sub(redis_baseline) as f64 / count);
        println!(
            "resident bytes per serial, {} commissioned serials: serialsvc {:.1} (RSS {} MiB over an empty baseline of {} MiB); Redis used_memory {}",
            thousands(count),
            ours,
            resident >> 20,
            baseline >> 20,
            theirs.map_or("— (no peer)".into(), |t| format!("{t:.1} ({} MiB over {} MiB empty)", redis_used.unwrap_or(0) >> 20, redis_baseline >> 20)),
        );
        // At rest: once the server has been idle for its idle_flush_seconds
        // (10 by default) it flushes its write buffers (RocksDB memtables),
        // which hold what was just written whatever the number of serials.
        tokio::time::sleep(Duration::from_secs(harness.config.rest_seconds)).await;
        let at_rest = rss_bytes(harness.server.pid());
        let ours_at_rest = at_rest.saturating_sub(baseline) as f64 / count;
        println!(
            "resident bytes per serial at rest ({} s later, after the idle flush): serialsvc {:.1} (RSS {} MiB){}",
            harness.config.rest_seconds,
            ours_at_rest,
            at_rest >> 20,
            theirs.map_or(String::new(), |t| format!("; ratio to Redis used_memory {:.2} (just after loading: {:.2})", ours_at_rest / t, ours / t)),
        );
        harness.memory = json!({
            "serials": serials.len(),
            "serialsvc_baseline_rss_bytes": baseline,
            "serialsvc_rss_bytes_after_load": resident,
            "serialsvc_bytes_per_serial_after_load": ours,
            "rest_seconds": harness.config.rest_seconds,
            "serialsvc_rss_bytes": at_rest,
            "serialsvc_bytes_per_serial": ours_at_rest,
            "redis_baseline_used_memory": redis_baseline,
            "redis_used_memory": redis_used,
            "redis_bytes_per_serial": theirs,
            "ratio_after_load": theirs.map(|t| ours / t),
            "ratio": theirs.map(|t| ours_at_rest / t),
        });

        // Scenario 1 and 2.
        let mut rng = ChaCha20Rng::seed_from_u64(harness.config.seed ^ 0x5eed);
        shuffle(&mut serials, &mut rng);
        let mut channels = Vec::new();
        for _ in 0..harness.config.connections {
            channels.push(connect(&harness.server.endpoint).await);
        }
        harness.verification(&serials, &channels).await;
        harness.latency(&serials).await;
        drop(serials);
        drop(channels);

        // Scenarios 3 to 5.
        let mut pg_clients = Vec::new();
        if let Some(postgres) = &harness.postgres {
            for _ in 0..harness.config.lines.max(1) {
                pg_clients.push(postgres.connect().await.expect("PostgreSQL connection"));
            }
            pg_clients[0]
                .batch_execute(
                    "CREATE TABLE serials (gtin text NOT NULL, serial text NOT NULL, \
                     state smallint NOT NULL DEFAULT 0, lot text, PRIMARY KEY (gtin, serial))",
                )
                .await
                .expect("CREATE TABLE");
        }
        harness.issuance(&channel, pg_clients.first_mut()).await;
        harness.concurrent_issuance(&mut pg_clients).await;
    });
    let peak = peak_rss_bytes(harness.server.pid());
    // Every serial the server now holds: the verification set and every pool.
    let held = harness.config.verify_serials
        + harness
            .records
            .iter()
            .filter(|r| r.system == POOL)
            .map(|r| r.run.counts.items)
            .sum::<u64>();
    let end_rss = rss_bytes(harness.server.pid());
    let baseline = harness.memory["serialsvc_baseline_rss_bytes"]
        .as_u64()
        .unwrap_or(0);
    let end_per_serial = end_rss.saturating_sub(baseline) as f64 / held as f64;
    println!(
        "serialsvc at the end of the run: {} serials held (issued, commissioned or decommissioned), resident {} MiB: {end_per_serial:.1} bytes per serial over the empty baseline (Redis was not given these)",
        thousands(held as f64),
        end_rss >> 20
    );
    harness.memory["end_of_run"] = json!({
        "serials_held": held,
        "serialsvc_rss_bytes": end_rss,
        "serialsvc_bytes_per_serial": end_per_serial,
    });
    let noise_after = noise_floor(&config, "after the scenarios");
    let mut report = report(&harness, &machine, peak, started.elapsed());
    report["noise"] = json!({ "before": noise_before, "after": noise_after });
    drop(harness);
    write_outputs(&config, &report);
}

/// The machine's noise floor (`benches::noise`), printed and as JSON; null
/// when `PEERS_NOISE_SECONDS` is 0.
fn noise_floor(config: &Config, when: &str) -> Value {
    if config.noise_seconds == 0 {
        return Value::Null;
    }
    let noise = benches::noise::measure(Duration::from_secs(config.noise_seconds));
    for line in noise.lines() {
        println!("noise floor {when}: {line}");
    }
    noise.json()
}

/// Median rate, median items per server CPU-second and the rounds of one
/// system in one scenario.
struct Summary {
    scenario: &'static str,
    variant: String,
    system: &'static str,
    rates: Vec<f64>,
    median: f64,
    per_cpu: f64,
    server_cores: f64,
    other_load: f64,
    stolen: f64,
    failures: u64,
}

fn summaries(records: &[Record]) -> Vec<Summary> {
    let mut keys: Vec<(&'static str, String, &'static str)> = Vec::new();
    for r in records {
        let key = (r.scenario, r.variant.clone(), r.system);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(scenario, variant, system)| {
            let runs: Vec<&Run> = records
                .iter()
                .filter(|r| r.scenario == scenario && r.variant == variant && r.system == system)
                .map(|r| &r.run)
                .collect();
            let rates: Vec<f64> = runs.iter().map(|r| r.rate()).collect();
            let mut sorted = rates.clone();
            let mut per_cpu: Vec<f64> = runs.iter().map(|r| r.per_server_cpu_second()).collect();
            let mut cores: Vec<f64> = runs.iter().map(|r| r.server_cpu / r.seconds).collect();
            let mut other: Vec<f64> = runs.iter().map(|r| r.others_cpu / r.seconds).collect();
            let mut stolen: Vec<f64> = runs.iter().map(|r| r.stolen_cpu / r.seconds).collect();
            Summary {
                scenario,
                variant,
                system,
                median: median(&mut sorted),
                rates,
                per_cpu: median(&mut per_cpu),
                server_cores: median(&mut cores),
                other_load: median(&mut other),
                stolen: median(&mut stolen),
                failures: runs.iter().map(|r| r.counts.failures).sum(),
            }
        })
        .collect()
}

/// Median over rounds of serialsvc's rate over the peer's, pairing runs of
/// the same round.
fn round_ratio(
    records: &[Record],
    scenario: &str,
    variant: &str,
    ours: &str,
    peer: &str,
) -> Option<f64> {
    let rate = |system: &str, round: usize| {
        records
            .iter()
            .find(|r| {
                r.scenario == scenario
                    && r.variant == variant
                    && r.system == system
                    && r.round == round
            })
            .map(|r| r.run.rate())
    };
    let rounds = records.iter().map(|r| r.round).max()?;
    let mut ratios: Vec<f64> = (0..=rounds)
        .filter_map(|round| Some(rate(ours, round)? / rate(peer, round)?))
        .collect();
    (!ratios.is_empty()).then(|| median(&mut ratios))
}

/// The peer of a serialsvc system in a scenario.
fn peer_of(scenario: &str) -> &'static str {
    match scenario {
        "batch verification" => MGET,
        "pool issuance" | "concurrent issuance" => INSERT,
        _ => UPDATE,
    }
}

fn report(
    harness: &Harness,
    machine: &[(&'static str, String)],
    peak: u64,
    elapsed: Duration,
) -> Value {
    let config = &harness.config;
    let records = &harness.records;
    let summaries = summaries(records);
    let find = |scenario: &str, variant: &str, system: &str| {
        summaries
            .iter()
            .find(|s| s.scenario == scenario && s.variant == variant && s.system == system)
    };
    println!();
    println!(
        "== serialsvc and its peers, {} rounds{}; medians; ratio = median over rounds of serialsvc / peer (> 1: serialsvc faster) ==",
        config.rounds,
        if config.quick { ", QUICK mode" } else { "" }
    );
    println!();
    println!(
        "| scenario | size | serialsvc | items/s | per server CPU-s | peer | items/s | per server CPU-s | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut comparisons = Vec::new();
    for ours in summaries
        .iter()
        .filter(|s| s.system.starts_with("serialsvc"))
    {
        let peer_name = peer_of(ours.scenario);
        let peer = find(ours.scenario, &ours.variant, peer_name);
        let ratio = round_ratio(
            records,
            ours.scenario,
            &ours.variant,
            ours.system,
            peer_name,
        );
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ours.scenario,
            ours.variant,
            ours.system.trim_start_matches("serialsvc "),
            thousands(ours.median),
            thousands(ours.per_cpu),
            peer.map_or("— (no peer)", |p| p.system),
            peer.map_or("—".into(), |p| thousands(p.median)),
            peer.map_or("—".into(), |p| thousands(p.per_cpu)),
            ratio.map_or("—".into(), |r| format!("**{r:.2}×**")),
        );
        comparisons.push(json!({
            "scenario": ours.scenario,
            "variant": ours.variant,
            "serialsvc": ours.system,
            "peer": peer.map(|p| p.system),
            "serialsvc_median_items_per_s": ours.median,
            "peer_median_items_per_s": peer.map(|p| p.median),
            "ratio_median_of_rounds": ratio,
            "ratio_of_medians": peer.map(|p| ours.median / p.median),
        }));
    }
    println!();
    println!(
        "rounds (items/s), server cores, other load and the cores stolen by the host during the runs (medians):"
    );
    for s in &summaries {
        println!(
            "  {} [{}] {}: {}; server {:.2} cores, other load {:.2} cores, stolen {:.2} cores{}",
            s.scenario,
            s.variant,
            s.system,
            s.rates
                .iter()
                .map(|r| thousands(*r))
                .collect::<Vec<_>>()
                .join(" · "),
            s.server_cores,
            s.other_load,
            s.stolen,
            if s.failures > 0 {
                format!(", {} FAILURES", s.failures)
            } else {
                String::new()
            }
        );
    }

    // Latency.
    println!();
    println!(
        "single verifications, open loop at {}/s for {} s on {} connections (latency from the intended send time; medians over rounds):",
        thousands(config.rate as f64),
        config.seconds,
        config.connections
    );
    println!(
        "| system | achieved/s | p50 | p99 | p999 | server cores | stolen cores | rounds p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut latency_json = Vec::new();
    let mut p99_of = |system: &'static str| -> Option<(f64, f64)> {
        let runs: Vec<&Latency> = harness
            .latencies
            .iter()
            .filter(|(s, _, _)| *s == system)
            .map(|(_, _, l)| l)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let med = |f: &dyn Fn(&Latency) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(|l| f(l)).collect();
            median(&mut values)
        };
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let (p50, p99, p999) = (
            med(&|l| us(l.from_intended[0])),
            med(&|l| us(l.from_intended[1])),
            med(&|l| us(l.from_intended[2])),
        );
        let achieved = med(&|l| l.achieved_rate);
        println!(
            "| {system} | {} | {p50:.0} µs | {p99:.0} µs | {p999:.0} µs | {:.2} | {:.2} | {} |",
            thousands(achieved),
            med(&|l| l.server_cpu / l.seconds),
            med(&|l| l.stolen_cpu / l.seconds),
            runs.iter()
                .map(|l| micros(l.from_intended[1]))
                .collect::<Vec<_>>()
                .join(" · ")
        );
        latency_json.push(json!({
            "system": system,
            "target_rate": config.rate,
            "achieved_rate": achieved,
            "p50_us": p50, "p99_us": p99, "p999_us": p999,
            "p99_us_rounds": runs.iter().map(|l| us(l.from_intended[1])).collect::<Vec<_>>(),
            "failures": runs.iter().map(|l| l.failures).sum::<u64>(),
            "server_cores": med(&|l| l.server_cpu / l.seconds),
            "client_cores": med(&|l| l.client_cpu / l.seconds),
            "other_load_cores": med(&|l| l.others_cpu / l.seconds),
            "stolen_cores": med(&|l| l.stolen_cpu / l.seconds),
            "stolen_cores_rounds": runs.iter().map(|l| l.stolen_cpu / l.seconds).collect::<Vec<_>>(),
            "calls_per_server_cpu_second": med(&|l| l.completed as f64 / l.server_cpu.max(f64::MIN_POSITIVE)),
        }));
        Some((p99, achieved))
    };
    let ours_latency = p99_of(VERIFY_SINGLE);
    let redis_latency = p99_of(GET);
    let lvm_latency = p99_of(LVM_SINGLE);

    // Targets.
    println!();
    let mut targets = Vec::new();
    let mut target = |name: &str, measured: Option<f64>, goal: &str, met: Option<bool>| {
        let verdict = match met {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "not measured",
        };
        println!(
            "target: {name} {goal}: {} → {verdict}",
            measured.map_or("—".into(), |m| format!("{m:.2}"))
        );
        targets
            .push(json!({"target": name, "goal": goal, "measured": measured, "verdict": verdict}));
    };
    let batch = round_ratio(records, "batch verification", "1024", STREAM_PACKED, MGET);
    target(
        "batch verification / Redis MGET at 1,024 (VerifyStream, packed)",
        batch,
        "≥ 2×",
        batch.map(|r| r >= 2.0),
    );
    if let Some(fields) = round_ratio(records, "batch verification", "1024", STREAM, MGET) {
        println!(
            "batch verification / Redis MGET at 1,024 (VerifyStream, field encoding): {fields:.2}"
        );
    }
    let pool = round_ratio(records, "pool issuance", "1000000", POOL, INSERT);
    target(
        "pool issuance / PostgreSQL at 1,000,000",
        pool,
        "≥ 3×",
        pool.map(|r| r >= 3.0),
    );
    let memory = harness.memory.get("ratio").and_then(Value::as_f64);
    target(
        "resident bytes per serial at rest / Redis used_memory",
        memory,
        "≤ 0.5×",
        memory.map(|r| r <= 0.5),
    );
    let p99 = ours_latency.map(|(p99, _)| p99 / 1000.0);
    target(
        &format!(
            "single verification p99 at {}/s (ms)",
            thousands(config.rate as f64)
        ),
        p99,
        "≤ 1 ms",
        ours_latency.map(|(p99, achieved)| p99 <= 1000.0 && achieved >= 0.99 * config.rate as f64),
    );
    if let (Some((ours, _)), Some((theirs, _))) = (ours_latency, redis_latency) {
        println!(
            "single verification p99: serialsvc / Redis GET = {:.2}",
            ours / theirs
        );
    }
    // The target is judged on gRPC Verify, the interface it was set on; the
    // same calls over the LVM responder are reported beside it.
    if let Some((lvm, achieved)) = lvm_latency {
        println!(
            "single verification p99 over GS1 LVM (HTTP/1.1) at {}/s: {:.2} ms ({} 1 ms; not the judged target){}",
            thousands(config.rate as f64),
            lvm / 1000.0,
            if lvm <= 1000.0 && achieved >= 0.99 * config.rate as f64 {
                "within"
            } else {
                "over"
            },
            redis_latency.map_or(String::new(), |(theirs, _)| format!(
                "; / Redis GET = {:.2}",
                lvm / theirs
            ))
        );
    }
    let failures: u64 = records.iter().map(|r| r.run.counts.failures).sum::<u64>()
        + harness
            .latencies
            .iter()
            .map(|(_, _, l)| l.failures)
            .sum::<u64>();
    if failures > 0 {
        println!(
            "WARNING: {failures} FAILED batches or calls (see FAILURE lines): the figures above exclude them"
        );
    } else {
        println!(
            "all answers checked: every item verified, every Redis value present, every PostgreSQL row written"
        );
    }
    println!(
        "serialsvc peak resident memory {} MiB; run took {:.0} s",
        peak >> 20,
        elapsed.as_secs_f64()
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "harness": "peers (issue 9)",
        "command": "cargo bench --profile release --workspace --bench peers",
        "unix_time": now,
        "elapsed_seconds": elapsed.as_secs_f64(),
        "machine": machine.iter().map(|(n, v)| (n.to_string(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "config": config.json(),
        "peers": {
            "redis": harness.redis.as_ref().map(|r| json!({
                "version": r.version,
                "settings": REDIS_SETTINGS.iter().map(|(n, v)| (n.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            })),
            "postgresql": harness.postgres.as_ref().map(|p| json!({
                "command_line_settings": POSTGRES_SETTINGS.iter().map(|(n, v)| (n.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
                "show": p.settings.iter().map(|(n, v)| (n.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
            })),
        },
        "comparisons": comparisons,
        "summaries": summaries.iter().map(|s| json!({
            "scenario": s.scenario, "variant": s.variant, "system": s.system,
            "median_items_per_s": s.median, "rounds_items_per_s": s.rates,
            "items_per_server_cpu_second": s.per_cpu, "server_cores": s.server_cores,
            "other_load_cores": s.other_load, "stolen_cores": s.stolen, "failures": s.failures,
        })).collect::<Vec<_>>(),
        "runs": records.iter().map(|r| json!({
            "scenario": r.scenario, "variant": r.variant, "system": r.system, "round": r.round,
            "items": r.run.counts.items, "failures": r.run.counts.failures, "seconds": r.run.seconds,
            "server_cpu_seconds": r.run.server_cpu, "client_cpu_seconds": r.run.client_cpu,
            "other_cpu_seconds": r.run.others_cpu, "stolen_cpu_seconds": r.run.stolen_cpu,
        })).collect::<Vec<_>>(),
        "single_verification": latency_json,
        "memory": harness.memory,
        "targets": targets,
        "serialsvc_peak_rss_bytes": peak,
    })
}

/// Writes `results.json` and the chart to `config.out`, and prints where.
fn write_outputs(config: &Config, report: &Value) {
    if let Err(error) = std::fs::create_dir_all(&config.out) {
        eprintln!("cannot create {}: {error}", config.out.display());
        return;
    }
    let json_path = config.out.join("results.json");
    match serde_json::to_string_pretty(report) {
        Ok(text) => match std::fs::write(&json_path, text + "\n") {
            Ok(()) => println!("results: {}", json_path.display()),
            Err(error) => eprintln!("cannot write {}: {error}", json_path.display()),
        },
        Err(error) => eprintln!("cannot encode the results: {error}"),
    }
    let chart_path = config.out.join("verification.svg");
    match chart(report, &chart_path, config.quick) {
        Ok(()) => println!("chart: {}", chart_path.display()),
        Err(error) => eprintln!("cannot draw {}: {error}", chart_path.display()),
    }
}

/// Throughput against batch size for the verification scenario, log-log.
fn chart(report: &Value, path: &std::path::Path, quick: bool) -> Result<(), String> {
    use plotters::prelude::*;
    // (system, colour, (batch size, median items/s) points)
    type Series = (&'static str, RGBColor, Vec<(f64, f64)>);
    let series: Vec<Series> = [
        (STREAM_PACKED, RGBColor(0, 158, 115)),
        (BATCH_PACKED, RGBColor(240, 228, 66)),
        (STREAM, RGBColor(0, 114, 178)),
        (BATCH, RGBColor(86, 180, 233)),
        (MGET, RGBColor(213, 94, 0)),
    ]
    .into_iter()
    .map(|(system, color)| {
        let points: Vec<(f64, f64)> = report["summaries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["scenario"] == "batch verification" && s["system"] == system)
            .filter_map(|s| {
                Some((
                    s["variant"].as_str()?.parse::<f64>().ok()?,
                    s["median_items_per_s"].as_f64()?,
                ))
            })
            .collect();
        (system, color, points)
    })
    .filter(|entry| !entry.2.is_empty())
    .collect();
    let values = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y));
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if series.is_empty() || !low.is_finite() || low <= 0.0 {
        return Err("no verification figures".into());
    }
    let error = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(error)?;
    let machine = report["machine"]["cpu"].as_str().unwrap_or("?");
    let caption = format!(
        "Verification throughput against batch size{} ({} cores, {})",
        if quick { " — QUICK run" } else { "" },
        report["machine"]["cores"].as_str().unwrap_or("?"),
        machine
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0.7f64..1500f64).log_scale(),
            ((low / 2.0)..(high * 2.0)).log_scale(),
        )
        .map_err(error)?;
    chart
        .configure_mesh()
        .x_desc("items per request (batch size)")
        .y_desc("items verified per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| thousands(*y))
        .draw()
        .map_err(error)?;
    for (system, color, points) in &series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(error)?
            .label(*system)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(error)?;
    root.present().map_err(error)?;
    Ok(())
}
