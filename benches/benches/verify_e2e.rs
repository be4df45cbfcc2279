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
//! `VERIFY_E2E_SECONDS`, on 4 connections. A pacing thread hands out intended
//! send times; latency is measured from the intended time, so a stall is
//! charged to every request it delays (no coordinated omission).
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
//! When `redis-server` is missing it is installed from Debian
//! (`apt-get install -y redis-server`); when that fails the peer is skipped.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::{
    clock_ticks_per_second, cpu_ticks, env_number, machine_busy_ticks, median, peak_rss_bytes,
    register_product_and_lot, start,
};
use prost::Message;
use proto::serial::v1 as pb;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::request_pool_response::Message as PoolMessage;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

const GTIN: &str = "09520123456788";
const LOT: &str = "LOT1";
const EXPIRY: &str = "301231";
/// Items per VerifyBatch / VerifyStream batch and per Redis MGET.
const BATCH: usize = 1024;
/// Serials per Commission group.
const GROUP: usize = 10_000;
/// Largest pool one RequestPool may ask for (the server's default limit).
const POOL_MAX: u64 = 1_000_000;
/// Connections the open-loop single-Verify load is spread over.
const LATENCY_CONNECTIONS: usize = 4;
/// Distinct single-Verify requests prebuilt (used round-robin).
const SINGLE_REQUESTS: usize = 100_000;
const VERIFY: &str = "/serial.v1.VerificationService/Verify";
const VERIFY_BATCH: &str = "/serial.v1.VerificationService/VerifyBatch";
const VERIFY_STREAM: &str = "/serial.v1.VerificationService/VerifyStream";
/// The value of each Redis key: what a Redis-backed verifier needs to answer
/// the same question (state, lot and expiry of record).
const REDIS_VALUE: &[u8] = b"ACTIVE|LOT1|301231";
/// Failures printed in full; the rest are only counted.
const FAILURES_SHOWN: u64 = 5;

static FAILURES_PRINTED: AtomicU64 = AtomicU64::new(0);

fn report_failure(what: &str) {
    if FAILURES_PRINTED.fetch_add(1, Ordering::Relaxed) < FAILURES_SHOWN {
        eprintln!("FAILURE: {what}");
    }
}

/// prost encoding of a message shared behind an `Arc`: the prebuilt requests
/// are encoded on every send, as by the generated client, but never cloned.
/// Answers are decoded by tonic-prost's own decoder.
#[derive(Debug)]
struct SharedCodec<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for SharedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SharedCodec<T, U>
where
    T: Message + Send + Sync + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = Arc<T>;
    type Decode = U;
    type Encoder = SharedEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SharedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[derive(Debug)]
struct SharedEncoder<T>(PhantomData<fn() -> T>);

impl<T: Message> Encoder for SharedEncoder<T> {
    type Item = Arc<T>;
    type Error = Status;

    fn encode(&mut self, item: Arc<T>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

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
}

impl Config {
    fn from_env() -> Self {
        let levels = std::env::var("VERIFY_E2E_STREAMS")
            .ok()
            .map(|text| {
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

fn identifier(serial: &str) -> pb::PackIdentifier {
    pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
            gtin: GTIN.into(),
            serial: serial.into(),
            lot: Some(LOT.into()),
            expiry: Some(EXPIRY.into()),
        })),
    }
}

fn redis_key(serial: &str) -> Vec<u8> {
    format!("{GTIN}{serial}").into_bytes()
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
                    items: chunk.iter().map(|s| identifier(s)).collect(),
                })
            })
            .collect();
        let batch = batches
            .iter()
            .map(|chunk| {
                Arc::new(pb::VerifyBatchRequest {
                    items: chunk.iter().map(|s| identifier(s)).collect(),
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
                    item: Some(identifier(s)),
                })
            })
            .collect();
        let redis = batches
            .iter()
            .map(|chunk| {
                let mut command = redis::cmd("MGET");
                for serial in *chunk {
                    command.arg(redis_key(serial));
                }
                command
            })
            .collect();
        let keys = batches
            .iter()
            .flat_map(|chunk| chunk.iter().map(|s| redis_key(s)))
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

async fn connect(endpoint: &str) -> Channel {
    Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// Registers the product and lot, issues `count` serials and commissions
/// them all; returns the serials in issue order.
async fn issue_and_commission(channel: Channel, count: u64) -> Vec<String> {
    register_product_and_lot(channel.clone(), GTIN, LOT, EXPIRY).await;
    let mut pools = PoolServiceClient::new(channel)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20);

    let started = Instant::now();
    let mut serials: Vec<String> = Vec::with_capacity(count as usize);
    let mut part = 0;
    while (serials.len() as u64) < count {
        let want = (count - serials.len() as u64).min(POOL_MAX);
        let request = pb::RequestPoolRequest {
            request_id: format!("verify-bench-{part}"),
            gtin: GTIN.into(),
            count: want,
            line_id: "L1".into(),
            ..Default::default()
        };
        let mut stream = pools
            .request_pool(request)
            .await
            .expect("RequestPool")
            .into_inner();
        let (mut received, mut summary) = (0u64, None);
        while let Some(message) = stream.message().await.expect("pool stream") {
            match message.message {
                Some(PoolMessage::Chunk(chunk)) => {
                    received += chunk.serials.len() as u64;
                    serials.extend(chunk.serials);
                }
                Some(PoolMessage::Summary(s)) => summary = Some(s),
                _ => {}
            }
        }
        assert_eq!(received, want, "pool {part}: serials received");
        assert_eq!(
            summary.expect("pool summary").serial_count,
            want,
            "pool {part}: summary count"
        );
        part += 1;
    }
    eprintln!(
        "issued {} serials in {:.2} s",
        serials.len(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let groups: Vec<pb::CommissionRequest> = serials
        .chunks(GROUP)
        .enumerate()
        .map(|(index, group)| pb::CommissionRequest {
            request_id: format!("verify-bench-c{index}"),
            gtin: GTIN.into(),
            lot: LOT.into(),
            serials: group.to_vec(),
            ..Default::default()
        })
        .collect();
    let expected = groups.len();
    let mut answers = pools
        .commission(tokio_stream::iter(groups))
        .await
        .expect("Commission")
        .into_inner();
    let (mut seen, mut applied) = (0, 0u64);
    while let Some(answer) = answers.message().await.expect("commission answers") {
        let status = answer.status.expect("status");
        assert_eq!(status.code, 0, "commission group refused: {status:?}");
        let counts = answer.counts.expect("counts");
        assert_eq!(counts.applied as usize, answer.results.len(), "{counts:?}");
        applied += u64::from(counts.applied);
        seen += 1;
    }
    assert_eq!(seen, expected, "commission answers");
    assert_eq!(applied, serials.len() as u64, "serials commissioned");
    eprintln!(
        "commissioned {applied} serials in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    serials
}

/// Checks one answered batch: `expected` results, each verified.
fn all_verified(results: &[pb::VerificationResult], expected: usize) -> Result<(), String> {
    if results.len() != expected {
        return Err(format!("{} results for {expected} items", results.len()));
    }
    match results
        .iter()
        .position(|r| !r.vrs.as_ref().is_some_and(|vrs| vrs.verified))
    {
        None => Ok(()),
        Some(index) => Err(format!("item {index} not verified: {:?}", results[index])),
    }
}

/// Items answered correctly, and failures (wrong answers, refused batches,
/// RPC errors), of one load run.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    items: u64,
    failures: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.items += other.items;
        self.failures += other.failures;
    }
}

/// One timed run: rate, and CPU of the server under test and of this client.
#[derive(Debug, Clone, Copy)]
struct Run {
    counts: Counts,
    seconds: f64,
    /// CPU seconds of the server under test (serialsvc or redis-server).
    server_cpu: f64,
    /// CPU seconds of this process (the load generator).
    client_cpu: f64,
    /// CPU seconds the rest of the machine used meanwhile (other load).
    others_cpu: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.counts.items as f64 / self.seconds
    }

    fn per_server_cpu_second(&self) -> f64 {
        if self.server_cpu > 0.0 {
            self.counts.items as f64 / self.server_cpu
        } else {
            f64::NAN
        }
    }
}

async fn measured<F>(server_pid: u32, ticks: f64, load: F) -> Run
where
    F: std::future::Future<Output = Counts>,
{
    let cpu = CpuMeter::start(server_pid, ticks);
    let started = Instant::now();
    let counts = load.await;
    let seconds = started.elapsed().as_secs_f64();
    let (server_cpu, client_cpu, others_cpu) = cpu.stop();
    Run {
        counts,
        seconds,
        server_cpu,
        client_cpu,
        others_cpu,
    }
}

/// CPU time of the server under test, of this client, and of everything
/// else on the machine, between `start` and `stop`.
struct CpuMeter {
    server_pid: u32,
    ticks: f64,
    server: u64,
    client: u64,
    machine: u64,
}

impl CpuMeter {
    fn start(server_pid: u32, ticks: f64) -> Self {
        Self {
            server_pid,
            ticks,
            server: cpu_ticks(server_pid),
            client: cpu_ticks(std::process::id()),
            machine: machine_busy_ticks(),
        }
    }

    /// (server, client, others) CPU seconds since `start`.
    fn stop(&self) -> (f64, f64, f64) {
        let server = cpu_ticks(self.server_pid).saturating_sub(self.server);
        let client = cpu_ticks(std::process::id()).saturating_sub(self.client);
        let machine = machine_busy_ticks().saturating_sub(self.machine);
        let others = machine.saturating_sub(server + client);
        (
            server as f64 / self.ticks,
            client as f64 / self.ticks,
            others as f64 / self.ticks,
        )
    }
}

/// One VerifyStream until `deadline`, at most `window` batches in flight,
/// cycling through the prebuilt batches from `first`.
async fn one_stream(
    channel: Channel,
    work: Arc<Vec<Arc<pb::VerifyStreamRequest>>>,
    first: usize,
    window: usize,
    deadline: Instant,
) -> Counts {
    let permits = Arc::new(Semaphore::new(window));
    let (sender, receiver) = mpsc::channel::<Arc<pb::VerifyStreamRequest>>(window);
    let producer = {
        let (permits, work) = (Arc::clone(&permits), Arc::clone(&work));
        tokio::spawn(async move {
            let mut next = first;
            while Instant::now() < deadline {
                let Ok(permit) = permits.acquire().await else {
                    break;
                };
                permit.forget();
                if sender
                    .send(Arc::clone(&work[next % work.len()]))
                    .await
                    .is_err()
                {
                    break;
                }
                next += 1;
            }
        })
    };
    let mut counts = Counts::default();
    let mut grpc = tonic::client::Grpc::new(channel);
    let opened = match grpc.ready().await {
        Ok(()) => grpc
            .streaming(
                Request::new(ReceiverStream::new(receiver)),
                PathAndQuery::from_static(VERIFY_STREAM),
                SharedCodec::<pb::VerifyStreamRequest, pb::VerifyStreamResponse>::default(),
            )
            .await
            .map_err(|status| format!("VerifyStream: {status}")),
        Err(error) => Err(format!("channel not ready: {error}")),
    };
    let mut answers = match opened {
        Ok(response) => response.into_inner(),
        Err(error) => {
            report_failure(&error);
            producer.abort();
            counts.failures += 1;
            return counts;
        }
    };
    let mut expected = first;
    loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                let sent = &work[expected % work.len()];
                let code = answer.status.as_ref().map_or(-1, |s| s.code);
                let checked = if answer.batch_id != sent.batch_id {
                    Err(format!(
                        "batch_id {} answered, {} expected",
                        answer.batch_id, sent.batch_id
                    ))
                } else if code != 0 {
                    Err(format!("batch refused: {:?}", answer.status))
                } else {
                    all_verified(&answer.results, sent.items.len())
                };
                match checked {
                    Ok(()) => counts.items += answer.results.len() as u64,
                    Err(error) => {
                        report_failure(&format!("VerifyStream: {error}"));
                        counts.failures += 1;
                    }
                }
                expected += 1;
                permits.add_permits(1);
            }
            Ok(None) => break,
            Err(status) => {
                report_failure(&format!("VerifyStream ended: {status}"));
                counts.failures += 1;
                break;
            }
        }
    }
    producer.abort();
    counts
}

/// Unary VerifyBatch calls one after another on `channel` until `deadline`.
async fn batch_caller(
    channel: Channel,
    work: Arc<Vec<Arc<pb::VerifyBatchRequest>>>,
    first: usize,
    deadline: Instant,
) -> Counts {
    let mut counts = Counts::default();
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut next = first;
    while Instant::now() < deadline {
        if let Err(error) = grpc.ready().await {
            report_failure(&format!("channel not ready: {error}"));
            counts.failures += 1;
            break;
        }
        let sent = &work[next % work.len()];
        let answer = grpc
            .unary(
                Request::new(Arc::clone(sent)),
                PathAndQuery::from_static(VERIFY_BATCH),
                SharedCodec::<pb::VerifyBatchRequest, pb::VerifyBatchResponse>::default(),
            )
            .await;
        match answer.map_err(|status| status.to_string()).and_then(|r| {
            let results = r.into_inner().results;
            all_verified(&results, sent.items.len()).map(|()| results.len())
        }) {
            Ok(n) => counts.items += n as u64,
            Err(error) => {
                report_failure(&format!("VerifyBatch: {error}"));
                counts.failures += 1;
            }
        }
        next += 1;
    }
    counts
}

/// Pipelined MGETs one after another on a shared connection until `deadline`.
async fn redis_caller(
    mut connection: redis::aio::MultiplexedConnection,
    work: Arc<Vec<redis::Cmd>>,
    first: usize,
    deadline: Instant,
) -> Counts {
    let mut counts = Counts::default();
    let mut next = first;
    while Instant::now() < deadline {
        let command = &work[next % work.len()];
        let answer: redis::RedisResult<Vec<Option<Vec<u8>>>> =
            command.query_async(&mut connection).await;
        let checked = answer.map_err(|e| e.to_string()).and_then(|values| {
            if values.len() != BATCH {
                return Err(format!("{} values for {BATCH} keys", values.len()));
            }
            match values
                .iter()
                .position(|v| v.as_deref() != Some(REDIS_VALUE))
            {
                None => Ok(values.len()),
                Some(index) => Err(format!("key {index}: {:?}", values[index])),
            }
        });
        match checked {
            Ok(n) => counts.items += n as u64,
            Err(error) => {
                report_failure(&format!("Redis MGET: {error}"));
                counts.failures += 1;
            }
        }
        next += 1;
    }
    counts
}

/// Where caller `index` of `callers` starts in a workload of `len` batches, so
/// that concurrent callers look up different keys.
fn offset(index: usize, callers: usize, len: usize) -> usize {
    index * len / callers.max(1)
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Counts>>) -> Counts {
    let mut total = Counts::default();
    for task in tasks {
        match task.await {
            Ok(counts) => total += counts,
            Err(error) => {
                report_failure(&format!("load task: {error}"));
                total.failures += 1;
            }
        }
    }
    total
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

struct Peer {
    child: Child,
    connections: Vec<redis::aio::MultiplexedConnection>,
    _dir: tempfile::TempDir,
}

/// `redis-server` on the PATH, installed from Debian when missing; `None`
/// (with the reason printed) when it cannot be had.
fn redis_server() -> Option<PathBuf> {
    let find = || {
        Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|path| PathBuf::from(path.trim()))
            .filter(|path| path.exists())
    };
    if let Some(path) = find() {
        return Some(path);
    }
    eprintln!(
        "redis-server missing: installing Debian's package (apt-get install -y redis-server)"
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    let found = find();
    if found.is_none() {
        eprintln!(
            "SKIPPING THE REDIS PEER: redis-server could not be installed \
             (`apt-get install -y redis-server` failed); serialsvc is measured alone"
        );
    }
    found
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free loopback port")
}

/// Starts Redis on loopback with no persistence, opens `connections`
/// connections and loads every key with pipelined MSETs of 1,024 keys.
#[allow(clippy::zombie_processes)] // killed and waited for in `stop`
async fn start_redis(binary: PathBuf, connections: usize, keys: &[Vec<u8>]) -> Option<Peer> {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_loopback_port();
    let mut child = match Command::new(&binary)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .args(["--loglevel", "warning", "--logfile", ""])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "SKIPPING THE REDIS PEER: cannot start {}: {error}",
                binary.display()
            );
            return None;
        }
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("redis url");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let started = Instant::now();
    let first = loop {
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(connection) => break connection,
            Err(error) if started.elapsed() < Duration::from_secs(10) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => {
                eprintln!("SKIPPING THE REDIS PEER: no connection to redis-server: {error}");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let mut all = vec![first];
    for _ in 1..connections {
        all.push(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .expect("redis connection"),
        );
    }
    let loading = Instant::now();
    let mut connection = all[0].clone();
    for chunk in keys.chunks(BATCH * 64) {
        let mut pipe = redis::pipe();
        for part in chunk.chunks(BATCH) {
            let mut mset = redis::cmd("MSET");
            for key in part {
                mset.arg(key).arg(REDIS_VALUE);
            }
            pipe.add_command(mset).ignore();
        }
        let () = pipe.query_async(&mut connection).await.expect("load Redis");
    }
    let size: u64 = redis::cmd("DBSIZE")
        .query_async(&mut connection)
        .await
        .expect("DBSIZE");
    assert_eq!(size, keys.len() as u64, "keys in Redis");
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default();
    eprintln!(
        "Redis ({}) on 127.0.0.1:{port}: loaded {size} keys in {:.2} s",
        version.trim(),
        loading.elapsed().as_secs_f64()
    );
    Some(Peer {
        child,
        connections: all,
        _dir: dir,
    })
}

impl Peer {
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
                        offset(index, callers, len),
                        deadline,
                    )));
                }
                peer.child.id()
            }
        };
        Some(measured(pid, self.ticks, join_all(tasks)).await)
    }
}

/// Latency figures of the open-loop single-Verify run.
#[derive(Debug)]
struct Latency {
    target_rate: u64,
    achieved_rate: f64,
    completed: usize,
    failures: u64,
    /// From the intended send time (includes any lateness of the sender).
    from_intended: [Duration; 4],
    /// From the actual send time.
    from_send: [Duration; 4],
    /// How late the pacer handed out requests: p99 and max.
    lag: [Duration; 2],
    server_cpu: f64,
    client_cpu: f64,
    others_cpu: f64,
    seconds: f64,
}

fn percentiles(values: &mut [Duration]) -> [Duration; 4] {
    values.sort_unstable();
    let at = |p: f64| {
        if values.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    [at(0.50), at(0.99), at(0.999), at(1.0)]
}

/// Single Verify RPCs at `rate` per second for `duration`, open loop.
async fn open_loop(
    endpoint: &str,
    work: &Arc<Vec<Arc<pb::VerifyRequest>>>,
    rate: u64,
    duration: Duration,
    server_pid: u32,
    ticks: f64,
) -> Latency {
    let mut clients = Vec::new();
    for _ in 0..LATENCY_CONNECTIONS {
        clients.push(tonic::client::Grpc::new(connect(endpoint).await));
    }
    let total = rate * duration.as_secs();
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let (sender, mut receiver) = mpsc::unbounded_channel::<(u64, Instant)>();
    let begin = Instant::now() + Duration::from_millis(20);
    // A thread, not a tokio timer: tokio's timer wheel has 1 ms resolution,
    // which alone would be a whole millisecond of latency at 10,000/s.
    let pacer = std::thread::spawn(move || {
        for index in 0..total {
            let intended = begin + period * index as u32;
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if sender.send((index, intended)).is_err() {
                break;
            }
        }
    });
    let cpu = CpuMeter::start(server_pid, ticks);
    let mut tasks = tokio::task::JoinSet::new();
    let mut samples: Vec<(Duration, Duration, Duration)> = Vec::with_capacity(total as usize);
    let mut failures = 0u64;
    let mut last_done = begin;
    let mut collect =
        |result: Result<Result<(Instant, Instant, Instant), String>, tokio::task::JoinError>,
         samples: &mut Vec<(Duration, Duration, Duration)>| {
            match result {
                Ok(Ok((intended, sent, done))) => {
                    last_done = last_done.max(done);
                    samples.push((
                        done - intended,
                        done - sent,
                        sent.saturating_duration_since(intended),
                    ));
                }
                Ok(Err(error)) => {
                    report_failure(&format!("Verify: {error}"));
                    failures += 1;
                }
                Err(error) => {
                    report_failure(&format!("Verify task: {error}"));
                    failures += 1;
                }
            }
        };
    while let Some((index, intended)) = receiver.recv().await {
        let mut client = clients[index as usize % clients.len()].clone();
        let request = Arc::clone(&work[index as usize % work.len()]);
        tasks.spawn(async move {
            let sent = Instant::now();
            client
                .ready()
                .await
                .map_err(|error| format!("channel not ready: {error}"))?;
            let answer = client
                .unary(
                    Request::new(request),
                    PathAndQuery::from_static(VERIFY),
                    SharedCodec::<pb::VerifyRequest, pb::VerifyResponse>::default(),
                )
                .await
                .map_err(|status| status.to_string())?;
            let done = Instant::now();
            let result = answer.into_inner().result.ok_or("no result")?;
            all_verified(std::slice::from_ref(&result), 1)?;
            Ok((intended, sent, done))
        });
        while let Some(result) = tasks.try_join_next() {
            collect(result, &mut samples);
        }
    }
    while let Some(result) = tasks.join_next().await {
        collect(result, &mut samples);
    }
    let _ = pacer.join();
    let (server_cpu, client_cpu, others_cpu) = cpu.stop();
    let seconds = (last_done - begin).as_secs_f64();
    let mut from_intended: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut from_send: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    let mut lag: Vec<Duration> = samples.iter().map(|s| s.2).collect();
    let lag = percentiles(&mut lag);
    Latency {
        target_rate: rate,
        achieved_rate: samples.len() as f64 / seconds,
        completed: samples.len(),
        failures,
        from_intended: percentiles(&mut from_intended),
        from_send: percentiles(&mut from_send),
        lag: [lag[1], lag[3]],
        server_cpu,
        client_cpu,
        others_cpu,
        seconds,
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
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
    let redis_binary = redis_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, endpoint) = start(dir.path(), "VERIFY_E2E_LOG");
    let server_pid = child.id();
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
        let serials = issue_and_commission(setup, config.serials).await;
        let built = Instant::now();
        let work = Workload::build(&serials);
        drop(serials);
        results.batches = work.stream.len();
        eprintln!(
            "prebuilt {} batches of {BATCH} items in {:.2} s",
            results.batches,
            built.elapsed().as_secs_f64()
        );
        let most = config.levels.iter().copied().max().unwrap_or(1);
        let mut channels = Vec::new();
        for _ in 0..most {
            channels.push(connect(&endpoint).await);
        }
        let peer = match redis_binary {
            Some(binary) => start_redis(binary, most, &work.keys).await,
            None => None,
        };
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
            for (l, &level) in config.levels.iter().enumerate() {
                for (m, &mode) in modes.iter().enumerate() {
                    for attempt in 1..=ATTEMPTS {
                        let Some(run) = bench.run(mode, level, peer.as_ref(), duration).await
                        else {
                            break;
                        };
                        let retry = attempt < ATTEMPTS
                            && noisy(run.others_cpu, run.seconds, config.max_other);
                        eprintln!(
                            "round {round} {:<24} ×{level}: {:>12} items/s, {:>12} per server CPU-s; cores: server {:.2}, client {:.2}, other load {:.2}; {:.2} s{}{}",
                            mode.name(),
                            thousands(run.rate()),
                            thousands(run.per_server_cpu_second()),
                            run.server_cpu / run.seconds,
                            run.client_cpu / run.seconds,
                            run.others_cpu / run.seconds,
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
                let latency = open_loop(
                    &endpoint,
                    &bench.work.single,
                    config.rate,
                    duration,
                    server_pid,
                    ticks,
                )
                .await;
                let retry = attempt < ATTEMPTS
                    && noisy(latency.others_cpu, latency.seconds, config.max_other);
                eprintln!(
                    "round {round} single Verify at {}/s: {} calls, achieved {}/s; from intended send p50 {} p99 {} p999 {}; from actual send p99 {}; cores: server {:.2}, client {:.2}, other load {:.2}{}",
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
        if let Some(peer) = peer {
            peer.stop();
        }
    });
    results.peak = peak_rss_bytes(server_pid);
    let _ = child.kill();
    let _ = child.wait();
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
            "single Verify, open loop at {}/s for {} s on {LATENCY_CONNECTIONS} connections, medians over {} rounds: achieved {}/s",
            thousands(config.rate as f64),
            config.seconds,
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
            "  sender lateness p99 {:.0} µs;  cores: server {:.2}, client {:.2}, other load {:.2}",
            med(&|l| us(l.lag[0])),
            med(&|l| l.server_cpu / l.seconds),
            med(&|l| l.client_cpu / l.seconds),
            med(&|l| l.others_cpu / l.seconds),
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
