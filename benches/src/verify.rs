//! Verification load shared by `verify_e2e` and `peers`: prebuilt requests
//! encoded on every send without cloning, `VerifyStream` / `VerifyBatch`
//! callers and Redis `MGET` callers that check every answer, CPU accounting
//! around a run, and the open-loop fixed-rate latency test.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use proto::serial::v1 as pb;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::request_pool_response::Message as PoolMessage;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use crate::Channel;
use tonic::{Request, Status};

use crate::{MachineTicks, Process, cpu_ticks, machine_ticks};

/// Serials per Commission group.
pub const GROUP: usize = 10_000;
/// Largest pool one RequestPool may ask for (the server's default limit).
pub const POOL_MAX: u64 = 1_000_000;
pub const VERIFY: &str = "/serial.v1.VerificationService/Verify";
pub const VERIFY_BATCH: &str = "/serial.v1.VerificationService/VerifyBatch";
pub const VERIFY_STREAM: &str = "/serial.v1.VerificationService/VerifyStream";
/// The value of each Redis key: what a Redis-backed verifier needs to answer
/// the same question (state, lot and expiry of record).
pub const REDIS_VALUE: &[u8] = b"ACTIVE|LOT1|301231";
/// Failures printed in full; the rest are only counted.
const FAILURES_SHOWN: u64 = 5;

static FAILURES_PRINTED: AtomicU64 = AtomicU64::new(0);

/// Prints the first few failures of a run in full (`FAILURE: …`).
pub fn report_failure(what: &str) {
    if FAILURES_PRINTED.fetch_add(1, Ordering::Relaxed) < FAILURES_SHOWN {
        eprintln!("FAILURE: {what}");
    }
}

/// prost encoding of a message shared behind an `Arc`: the prebuilt requests
/// are encoded on every send, as by the generated client, but never cloned.
/// Answers are decoded by tonic-prost's own decoder.
#[derive(Debug)]
pub struct SharedCodec<T, U>(PhantomData<fn() -> (T, U)>);

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

/// The encoder of [`SharedCodec`].
#[derive(Debug)]
pub struct SharedEncoder<T>(PhantomData<fn() -> T>);

impl<T: Message> Encoder for SharedEncoder<T> {
    type Item = Arc<T>;
    type Error = Status;

    fn encode(&mut self, item: Arc<T>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

/// A pack identified by its fields: GTIN, serial, lot and expiry.
pub fn identifier(gtin: &str, serial: &str, lot: &str, expiry: &str) -> pb::PackIdentifier {
    pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
            gtin: gtin.into(),
            serial: serial.into(),
            lot: Some(lot.into()),
            expiry: Some(expiry.into()),
        })),
    }
}

/// The Redis key of a pack: GTIN followed by serial.
pub fn redis_key(gtin: &str, serial: &str) -> Vec<u8> {
    format!("{gtin}{serial}").into_bytes()
}

/// A channel to `endpoint`; panics when it cannot connect.
pub async fn connect(endpoint: &str) -> Channel {
    crate::authenticated(
        Endpoint::from_shared(endpoint.to_owned())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect"),
    )
}

/// A pool client with room for large chunks and groups.
pub fn pool_client(channel: Channel) -> PoolServiceClient<Channel> {
    PoolServiceClient::new(channel)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20)
}

/// Streams one pool of `count` serials (at most [`POOL_MAX`]) to the end,
/// checking the summary's count and XXH3 checksum; returns the serials.
pub async fn request_pool(
    pools: &mut PoolServiceClient<Channel>,
    request_id: &str,
    gtin: &str,
    line: &str,
    count: u64,
) -> Vec<String> {
    let request = pb::RequestPoolRequest {
        request_id: request_id.into(),
        gtin: gtin.into(),
        count,
        line_id: line.into(),
        ..Default::default()
    };
    let mut stream = pools
        .request_pool(request)
        .await
        .expect("RequestPool")
        .into_inner();
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    let (mut serials, mut summary) = (Vec::with_capacity(count as usize), None);
    while let Some(message) = stream.message().await.expect("pool stream") {
        match message.message {
            Some(PoolMessage::Chunk(chunk)) => {
                for serial in &chunk.serials {
                    checksum.update(serial.as_bytes());
                    checksum.update(b"\n");
                }
                serials.extend(chunk.serials);
            }
            Some(PoolMessage::Summary(s)) => summary = Some(s),
            _ => {}
        }
    }
    let summary = summary.expect("pool summary");
    assert_eq!(
        serials.len() as u64,
        count,
        "{request_id}: serials received"
    );
    assert_eq!(summary.serial_count, count, "{request_id}: summary count");
    assert_eq!(
        summary.serials_xxh3,
        checksum.digest(),
        "{request_id}: checksum"
    );
    serials
}

/// Commissions `serials` into `lot` through one Commission stream in groups
/// of [`GROUP`]; every item must be applied. `prefix` makes the request ids.
pub async fn commission(
    pools: &mut PoolServiceClient<Channel>,
    prefix: &str,
    gtin: &str,
    lot: &str,
    serials: &[String],
) {
    let groups: Vec<pb::CommissionRequest> = serials
        .chunks(GROUP)
        .enumerate()
        .map(|(index, group)| pb::CommissionRequest {
            request_id: format!("{prefix}-c{index}"),
            gtin: gtin.into(),
            lot: lot.into(),
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
}

/// Issues `count` serials of the registered product `gtin` (pools of at
/// most [`POOL_MAX`]) and commissions them all into `lot`; returns the
/// serials in issue order.
pub async fn issue_and_commission(
    channel: Channel,
    prefix: &str,
    gtin: &str,
    lot: &str,
    count: u64,
) -> Vec<String> {
    let mut pools = pool_client(channel);
    let started = Instant::now();
    let mut serials: Vec<String> = Vec::with_capacity(count as usize);
    let mut part = 0;
    while (serials.len() as u64) < count {
        let want = (count - serials.len() as u64).min(POOL_MAX);
        let id = format!("{prefix}-{part}");
        serials.extend(request_pool(&mut pools, &id, gtin, "L1", want).await);
        part += 1;
    }
    eprintln!(
        "issued {} serials in {:.2} s",
        serials.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    commission(&mut pools, prefix, gtin, lot, &serials).await;
    eprintln!(
        "commissioned {} serials in {:.2} s",
        serials.len(),
        started.elapsed().as_secs_f64()
    );
    serials
}

/// Checks one answered batch: `expected` results, each verified.
pub fn all_verified(results: &[pb::VerificationResult], expected: usize) -> Result<(), String> {
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

/// The packed encoding (`packed_items`) of `serials` of one GTIN, lot and
/// expiry.
pub fn packed_identifiers(gtin: &str, serials: &[String], lot: &str, expiry: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(serials.len() * 40);
    for serial in serials {
        proto::packed::encode_item(&mut bytes, gtin, serial, Some(lot), Some(expiry));
    }
    bytes
}

/// Items in a packed batch (framed without collecting them).
pub fn packed_count(bytes: &[u8]) -> usize {
    proto::packed::items(bytes).count()
}

/// Checks one answered packed batch: `expected` results, each verified, no
/// malformed item.
pub fn packed_verified(
    results: &[u8],
    errors: &[pb::PackedItemError],
    expected: usize,
) -> Result<(), String> {
    if let Some(error) = errors.first() {
        return Err(format!("item refused: {error:?}"));
    }
    let Some(results) = proto::packed::decode_results(results) else {
        return Err(format!("{} bytes of packed results", results.len()));
    };
    if results.len() != expected {
        return Err(format!("{} results for {expected} items", results.len()));
    }
    match results
        .iter()
        .position(|r| !r.has(proto::packed::flag::VERIFIED))
    {
        None => Ok(()),
        Some(index) => Err(format!("item {index} not verified: {:?}", results[index])),
    }
}

/// Items answered correctly, and failures (wrong answers, refused batches,
/// RPC errors), of one load run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub items: u64,
    pub failures: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.items += other.items;
        self.failures += other.failures;
    }
}

/// One timed run: rate, and CPU of the server under test and of this client.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub counts: Counts,
    pub seconds: f64,
    /// CPU seconds of the server under test (serialsvc or the peer).
    pub server_cpu: f64,
    /// CPU seconds of this process (the load generator).
    pub client_cpu: f64,
    /// CPU seconds the rest of the machine used meanwhile (other load).
    pub others_cpu: f64,
    /// CPU seconds the host took from this machine's CPUs meanwhile (steal).
    pub stolen_cpu: f64,
}

impl Run {
    /// Items per second.
    pub fn rate(&self) -> f64 {
        self.counts.items as f64 / self.seconds
    }

    /// Items per CPU-second of the server under test (NaN when it used none).
    pub fn per_server_cpu_second(&self) -> f64 {
        if self.server_cpu > 0.0 {
            self.counts.items as f64 / self.server_cpu
        } else {
            f64::NAN
        }
    }
}

/// Runs `load`, timing it and reading the CPU time of `server`, of this
/// client and of the rest of the machine around it.
pub async fn measured<F>(server: Process, ticks: f64, load: F) -> Run
where
    F: std::future::Future<Output = Counts>,
{
    let cpu = CpuMeter::start(server, ticks);
    let started = Instant::now();
    let counts = load.await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    Run {
        counts,
        seconds,
        server_cpu: cpu.server,
        client_cpu: cpu.client,
        others_cpu: cpu.others,
        stolen_cpu: cpu.stolen,
    }
}

/// CPU time of the server under test, of this client, and of everything
/// else on the machine, between `start` and `stop`.
#[derive(Debug)]
pub struct CpuMeter {
    server: Process,
    ticks: f64,
    server_start: u64,
    client: u64,
    machine: MachineTicks,
}

impl CpuMeter {
    pub fn start(server: Process, ticks: f64) -> Self {
        Self {
            server,
            ticks,
            server_start: server.cpu_ticks(),
            client: cpu_ticks(std::process::id()),
            machine: machine_ticks(),
        }
    }

    /// The CPU seconds used since `start`.
    pub fn stop(&self) -> CpuSeconds {
        let server = self.server.cpu_ticks().saturating_sub(self.server_start);
        let client = cpu_ticks(std::process::id()).saturating_sub(self.client);
        let machine = machine_ticks();
        let busy = machine.busy.saturating_sub(self.machine.busy);
        let stolen = machine.stolen.saturating_sub(self.machine.stolen);
        let others = busy.saturating_sub(server + client);
        CpuSeconds {
            server: server as f64 / self.ticks,
            client: client as f64 / self.ticks,
            others: others as f64 / self.ticks,
            stolen: stolen as f64 / self.ticks,
        }
    }
}

/// What [`CpuMeter::stop`] measured, in CPU seconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuSeconds {
    /// The server under test.
    pub server: f64,
    /// This process (the load generator).
    pub client: f64,
    /// The rest of the machine (other load).
    pub others: f64,
    /// Taken by the host from this machine's CPUs (steal).
    pub stolen: f64,
}

/// One VerifyStream until `deadline`, at most `window` batches in flight,
/// cycling through the prebuilt batches from `first`.
pub async fn one_stream(
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
                } else if sent.packed_items.is_empty() {
                    all_verified(&answer.results, sent.items.len()).map(|()| sent.items.len())
                } else {
                    let expected = packed_count(&sent.packed_items);
                    packed_verified(&answer.packed_results, &answer.packed_errors, expected)
                        .map(|()| expected)
                };
                match checked {
                    Ok(items) => counts.items += items as u64,
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
pub async fn batch_caller(
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
            let answer = r.into_inner();
            if sent.packed_items.is_empty() {
                all_verified(&answer.results, sent.items.len()).map(|()| sent.items.len())
            } else {
                let expected = packed_count(&sent.packed_items);
                packed_verified(&answer.packed_results, &answer.packed_errors, expected)
                    .map(|()| expected)
            }
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

/// Pipelined MGETs of `keys` keys each, one after another on a shared
/// connection until `deadline`; every value must be [`REDIS_VALUE`].
pub async fn redis_caller(
    mut connection: redis::aio::MultiplexedConnection,
    work: Arc<Vec<redis::Cmd>>,
    keys: usize,
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
            if values.len() != keys {
                return Err(format!("{} values for {keys} keys", values.len()));
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
pub fn offset(index: usize, callers: usize, len: usize) -> usize {
    index * len / callers.max(1)
}

/// Sums the counts of load tasks; a task that panicked counts as a failure.
pub async fn join_all(tasks: Vec<tokio::task::JoinHandle<Counts>>) -> Counts {
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

/// Latency figures of an open-loop run.
#[derive(Debug, Clone)]
pub struct Latency {
    pub target_rate: u64,
    pub achieved_rate: f64,
    pub completed: usize,
    pub failures: u64,
    /// From the intended send time (includes any lateness of the sender):
    /// p50, p99, p999, max.
    pub from_intended: [Duration; 4],
    /// From the actual send time.
    pub from_send: [Duration; 4],
    /// How late the pacer handed out requests: p99 and max.
    pub lag: [Duration; 2],
    pub server_cpu: f64,
    pub client_cpu: f64,
    pub others_cpu: f64,
    /// CPU seconds the host took from this machine's CPUs (steal).
    pub stolen_cpu: f64,
    pub seconds: f64,
}

/// p50, p99, p999 and max of `values` (sorts them).
pub fn percentiles(values: &mut [Duration]) -> [Duration; 4] {
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

/// Runs `work` to the end on a thread of its own, in a single-threaded tokio
/// runtime, and returns its result. An open-loop load generator belongs
/// there: its tasks, its connections' tasks and its timers then wake one
/// another without crossing threads, so the client spends less CPU per call
/// and puts one thread, not a pool of them, next to the server under test on
/// a small machine. Connections must be made inside `work` (a connection's
/// background task runs on the runtime that made it).
pub async fn on_own_thread<F, Fut, T>(work: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("load generator runtime")
            .block_on(work())
    })
    .await
    .expect("load generator thread")
}

/// The open loop's clock: a Linux timerfd that expires every `period` from
/// `begin`, read by the load generator's own runtime. It has nanosecond
/// resolution and no timer slack (tokio's timer wheel has 1 ms), and it
/// wakes the generator's thread itself: no second thread whose every tick
/// must wake the generator across cores (a pacing thread did this before,
/// and cost a quarter of a core at 10,000/s on a 2-core machine).
struct Pacer {
    timer: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl Pacer {
    /// Starts the timer. Its first expiry is never before `begin` (the
    /// delay is measured before the timer is set), so no request is sent
    /// before its intended time.
    fn start(begin: Instant, period: Duration) -> std::io::Result<Self> {
        let first = begin.saturating_duration_since(Instant::now());
        let timer = crate::periodic_timer(first, period, rustix::time::TimerfdFlags::NONBLOCK)?;
        Ok(Self {
            timer: Self::register(timer)?,
        })
    }

    /// Registers `timer` with the current tokio runtime's I/O driver.
    #[allow(unsafe_code)]
    fn register(
        timer: std::os::fd::OwnedFd,
    ) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
        // SAFETY: the AsyncFd owns the OwnedFd, which keeps the descriptor
        // open and unchanged until the AsyncFd is dropped, and whose
        // as_raw_fd always answers that same descriptor.
        unsafe { tokio::io::unix::AsyncFd::register(timer) }.map_err(std::io::Error::from)
    }

    /// Waits for the next expiry; answers how many periods have ended since
    /// the last call (more than one when the generator fell behind).
    async fn ticks(&self) -> std::io::Result<u64> {
        loop {
            let mut ready = self.timer.readable().await?;
            let mut count = [0u8; 8];
            match ready.try_io(|timer| {
                rustix::io::read(timer.get_ref(), &mut count).map_err(std::io::Error::from)
            }) {
                Ok(Ok(8)) => return Ok(u64::from_ne_bytes(count)),
                Ok(Ok(read)) => {
                    return Err(std::io::Error::other(format!(
                        "timerfd read {read} bytes, not 8"
                    )));
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Single calls at `rate` per second for `duration`, open loop: `call(n)`
/// makes the `n`th call, a future that answers when the call is done and
/// checked (or with what was wrong). A timer ([`Pacer`]) marks the intended
/// send times, and latency is measured from them, so a stall is charged to
/// every request it delays (no coordinated omission).
pub async fn open_loop<F, Fut>(
    rate: u64,
    duration: Duration,
    server: Process,
    ticks: f64,
    call: F,
) -> Latency
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Instant, String>> + Send + 'static,
{
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let begin = Instant::now() + Duration::from_millis(20);
    let pacer = match Pacer::start(begin, period) {
        Ok(pacer) => pacer,
        Err(error) => panic!("open loop: pacing timer: {error}"),
    };
    let cpu = CpuMeter::start(server, ticks);
    let mut tasks = tokio::task::JoinSet::new();
    let mut samples: Vec<(Duration, Duration, Duration)> = Vec::with_capacity(total as usize);
    let mut failures = 0u64;
    let mut last_done = begin;
    let mut starts: Vec<Duration> = Vec::with_capacity(total as usize);
    type Sample = Result<Result<(Instant, Instant, Instant), String>, tokio::task::JoinError>;
    let mut collect =
        |result: Sample, samples: &mut Vec<(Duration, Duration, Duration)>| match result {
            Ok(Ok((intended, sent, done))) => {
                last_done = last_done.max(done);
                samples.push((
                    done - intended,
                    done - sent,
                    sent.saturating_duration_since(intended),
                ));
                starts.push(intended.saturating_duration_since(begin));
            }
            Ok(Err(error)) => {
                report_failure(&error);
                failures += 1;
            }
            Err(error) => {
                report_failure(&format!("call task: {error}"));
                failures += 1;
            }
        };
    let mut index = 0u64;
    while index < total {
        let due = match pacer.ticks().await {
            Ok(due) => due,
            Err(error) => panic!("open loop: pacing timer: {error}"),
        };
        for _ in 0..due.min(total - index) {
            let intended = begin + period * index as u32;
            let pending = call(index);
            tasks.spawn(async move {
                let sent = Instant::now();
                let done = pending.await?;
                Ok((intended, sent, done))
            });
            index += 1;
        }
        while let Some(result) = tasks.try_join_next() {
            collect(result, &mut samples);
        }
    }
    while let Some(result) = tasks.join_next().await {
        collect(result, &mut samples);
    }
    let cpu = cpu.stop();
    dump_samples(&starts, &samples);
    let seconds = (last_done - begin).as_secs_f64().max(f64::MIN_POSITIVE);
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
        server_cpu: cpu.server,
        client_cpu: cpu.client,
        others_cpu: cpu.others,
        stolen_cpu: cpu.stolen,
        seconds,
    }
}

/// [`open_loop`] spreading its calls round robin: call `n` goes to
/// `clients[n % clients.len()]` with `items[n % items.len()]`.
pub async fn round_robin_open_loop<C, T, F, Fut>(
    rate: u64,
    duration: Duration,
    server: Process,
    ticks: f64,
    clients: &[C],
    items: &[Arc<T>],
    call: F,
) -> Latency
where
    C: Clone,
    F: Fn(C, Arc<T>) -> Fut,
    Fut: std::future::Future<Output = Result<Instant, String>> + Send + 'static,
{
    open_loop(rate, duration, server, ticks, |n| {
        call(
            clients[n as usize % clients.len()].clone(),
            Arc::clone(&items[n as usize % items.len()]),
        )
    })
    .await
}

/// When `OPEN_LOOP_DUMP` names a file, appends one line per call to it:
/// the intended send time from the start of the run, the latency from the
/// intended send, from the actual send, and the sender's lateness, in µs
/// (for finding when the slow calls happened; a run is separated from the
/// next by an empty line).
fn dump_samples(starts: &[Duration], samples: &[(Duration, Duration, Duration)]) {
    use std::io::Write;
    let Some(path) = std::env::var_os("OPEN_LOOP_DUMP") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    let mut out = match file {
        Ok(file) => std::io::BufWriter::new(file),
        Err(error) => {
            eprintln!("OPEN_LOOP_DUMP {}: {error}", path.to_string_lossy());
            return;
        }
    };
    let lines = starts.iter().zip(samples).try_for_each(|(start, sample)| {
        writeln!(
            out,
            "{} {} {} {}",
            start.as_micros(),
            sample.0.as_micros(),
            sample.1.as_micros(),
            sample.2.as_micros()
        )
    });
    if let Err(error) = lines
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush())
    {
        eprintln!("OPEN_LOOP_DUMP {}: {error}", path.to_string_lossy());
    }
}

/// One single `Verify` call on `client` for `request`, checked: the
/// future the open loop of serialsvc runs.
pub async fn verify_call(
    mut client: tonic::client::Grpc<Channel>,
    request: Arc<pb::VerifyRequest>,
) -> Result<Instant, String> {
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
        .map_err(|status| format!("Verify: {status}"))?;
    let done = Instant::now();
    let result = answer.into_inner().result.ok_or("Verify: no result")?;
    all_verified(std::slice::from_ref(&result), 1).map_err(|e| format!("Verify: {e}"))?;
    Ok(done)
}

/// A unary gRPC client written on `h2` directly, for the open-loop load
/// generator: one HTTP/2 connection (`TCP_NODELAY`), its driver spawned on
/// the caller's runtime. Each call queues its `HEADERS` and its one `DATA`
/// frame (with `END_STREAM`) before yielding, so the connection writes them
/// in one `writev`, as grpc-go and grpc-java do for a unary call; tonic's
/// client sends the body from a task of its own and writes twice per call.
/// The answer is checked as tonic would: HTTP 200, one length-prefixed
/// uncompressed message, then `grpc-status: 0` in the trailers.
#[derive(Clone, Debug)]
pub struct H2Unary {
    send: h2::client::SendRequest<bytes::Bytes>,
    uri: http::Uri,
    bearer: Option<http::HeaderValue>,
}

impl H2Unary {
    /// Connects to `endpoint` (`http://HOST:PORT`) for calls to `path`,
    /// with the admin token of the last server started, if any.
    pub async fn connect(endpoint: &str, path: &str) -> Result<Self, String> {
        let address = endpoint.trim_start_matches("http://");
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| format!("connect {address}: {error}"))?;
        tcp.set_nodelay(true)
            .map_err(|error| format!("TCP_NODELAY: {error}"))?;
        // hyper's client windows (2 MiB per stream, 5 MiB per connection),
        // as tonic's client has them. h2's own default (64 KiB) also sets
        // its budget for small DATA frames received but not yet read to
        // 32 KiB, about 33 answers: when the generator fell behind by that
        // many, h2 closed the connection ("too_many_data_frames").
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(2 << 20)
            .initial_connection_window_size(5 << 20)
            .handshake(tcp)
            .await
            .map_err(|error| format!("HTTP/2 handshake with {address}: {error}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                report_failure(&format!("HTTP/2 connection: {error}"));
            }
        });
        let uri = format!("{endpoint}{path}")
            .parse()
            .map_err(|error| format!("URI {endpoint}{path}: {error}"))?;
        let bearer = crate::admin_token().and_then(|t| format!("Bearer {t}").parse().ok());
        Ok(H2Unary { send, uri, bearer })
    }

    /// One unary call: `message` out, the decoded answer back.
    pub async fn call<T: Message, U: Message + Default>(&self, message: &T) -> Result<U, String> {
        let mut framed = bytes::BytesMut::with_capacity(5 + message.encoded_len());
        framed.extend_from_slice(&[0]);
        let length = u32::try_from(message.encoded_len()).map_err(|_| "message too large")?;
        framed.extend_from_slice(&length.to_be_bytes());
        message
            .encode(&mut framed)
            .map_err(|error| format!("encode: {error}"))?;
        let mut request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers");
        if let Some(bearer) = &self.bearer {
            request = request.header(http::header::AUTHORIZATION, bearer.clone());
        }
        let request = request
            .body(())
            .map_err(|error| format!("request: {error}"))?;
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|error| format!("connection not ready: {error}"))?;
        let (response, mut body_out) = send
            .send_request(request, false)
            .map_err(|error| format!("send: {error}"))?;
        body_out
            .send_data(framed.freeze(), true)
            .map_err(|error| format!("send body: {error}"))?;
        let response = response
            .await
            .map_err(|error| format!("response: {error}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", response.status()));
        }
        if let Some(status) = response.headers().get("grpc-status") {
            return Err(format!("trailers-only answer, grpc-status {status:?}"));
        }
        let mut body = response.into_body();
        let mut answer = bytes::BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|error| format!("body: {error}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            answer.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|error| format!("trailers: {error}"))?
            .ok_or("no trailers")?;
        let status = trailers.get("grpc-status");
        if status.map(|v| v.as_bytes()) != Some(b"0") {
            return Err(format!(
                "grpc-status {status:?}, grpc-message {:?}",
                trailers.get("grpc-message")
            ));
        }
        let (header, message) = answer
            .split_first_chunk::<5>()
            .ok_or("answer shorter than its 5-byte prefix")?;
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if header[0] != 0 || length != message.len() {
            return Err(format!(
                "answer framing: compressed flag {}, length {length}, {} bytes",
                header[0],
                message.len()
            ));
        }
        U::decode(message).map_err(|error| format!("decode: {error}"))
    }
}

/// One `Verify` through [`H2Unary`] (connected to [`VERIFY`]), checked like
/// [`verify_call`]: the pack verified.
pub async fn h2_verify_call(
    client: H2Unary,
    request: Arc<pb::VerifyRequest>,
) -> Result<Instant, String> {
    let answer: pb::VerifyResponse = client
        .call(request.as_ref())
        .await
        .map_err(|error| format!("Verify: {error}"))?;
    let done = Instant::now();
    let result = answer.result.ok_or("Verify: no result")?;
    all_verified(std::slice::from_ref(&result), 1).map_err(|e| format!("Verify: {e}"))?;
    Ok(done)
}

/// Keep-alive connections an [`LvmClient`] holds at most, and opens all of
/// in [`lvm_warm`].
pub const LVM_CONNECTIONS: usize = 32;

/// The client of the GS1 Lightweight Verification Messaging responder:
/// HTTP/1.1 with pooled keep-alive connections (`TCP_NODELAY`), one request
/// in flight on each, at most [`LVM_CONNECTIONS`] of them, as a verification
/// router would hold them. A call waits for a free connection when all are
/// busy (the wait counts in its latency). Without the cap, hyper-util's pool
/// opens a connection for every call that finds none idle, and under
/// overload a run turns into a storm of short-lived connections (seen:
/// 23,000 in `TIME_WAIT` after one 3 s run, then refused connects).
#[derive(Clone, Debug)]
pub struct LvmClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    connections: Arc<Semaphore>,
}

/// A new [`LvmClient`].
pub fn lvm_client() -> LvmClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    LvmClient {
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
        connections: Arc::new(Semaphore::new(LVM_CONNECTIONS)),
    }
}

/// Opens all [`LVM_CONNECTIONS`] keep-alive connections of `client`
/// (as many concurrent calls of `uri`), as a verification router holds them
/// before its traffic starts. Without it, the open loop's first calls each
/// open a connection while the previous ones are still connecting, and a
/// run can start with a storm of connections that it never recovers from.
pub async fn lvm_warm(
    client: &LvmClient,
    uri: &http::Uri,
    bearer: &http::HeaderValue,
) -> Result<(), String> {
    let calls: Vec<_> = (0..LVM_CONNECTIONS)
        .map(|_| tokio::spawn(lvm_call(client.clone(), uri.clone(), bearer.clone())))
        .collect();
    for call in calls {
        call.await.map_err(|error| format!("warm-up: {error}"))??;
    }
    Ok(())
}

/// The Digital Link URI with which a verification router asks the responder
/// at `address` about one pack (DOMAIN.md §4).
pub fn lvm_uri(address: &str, item: &pb::PackIdentifier, request: u64) -> http::Uri {
    let Some(pb::pack_identifier::Identifier::Fields(fields)) = &item.identifier else {
        panic!("lvm_uri: the item has no fields");
    };
    format!(
        "http://{address}/01/{}/10/{}/21/{}?17={}&linkType=verificationService&reqGLN=0614141000012&corrUUID=bench-{request}",
        fields.gtin,
        fields.lot.as_deref().unwrap_or_default(),
        fields.serial,
        fields.expiry.as_deref().unwrap_or_default(),
    )
    .parse()
    .expect("a Digital Link URI")
}

/// Single `Verify` calls of `requests` (round robin) at `rate` for
/// `duration` through [`H2Unary`] on `connections` HTTP/2 connections to
/// `endpoint`, open loop, on a thread of the load's own ([`on_own_thread`]);
/// `server`'s CPU is measured around the run.
pub async fn h2_verify_open_loop(
    endpoint: &str,
    connections: usize,
    requests: &Arc<Vec<Arc<pb::VerifyRequest>>>,
    rate: u64,
    duration: Duration,
    server: Process,
    ticks: f64,
) -> Latency {
    let endpoint = endpoint.to_owned();
    let requests = Arc::clone(requests);
    on_own_thread(move || async move {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            clients.push(
                H2Unary::connect(&endpoint, VERIFY)
                    .await
                    .expect("HTTP/2 connection"),
            );
        }
        round_robin_open_loop(
            rate,
            duration,
            server,
            ticks,
            &clients,
            &requests,
            h2_verify_call,
        )
        .await
    })
    .await
}

/// The same packs as `requests`, asked as Lightweight Verification Messaging
/// `GET`s of the responder of the last server started, at `rate` for
/// `duration`: open loop, on a thread of the load's own, through an
/// [`LvmClient`] warmed up first ([`lvm_warm`]); `server`'s CPU is measured
/// around the run.
pub async fn lvm_open_loop(
    requests: &[Arc<pb::VerifyRequest>],
    rate: u64,
    duration: Duration,
    server: Process,
    ticks: f64,
) -> Latency {
    let address = crate::http_address().expect("the server's HTTP address");
    let bearer: http::HeaderValue = format!(
        "Bearer {}",
        crate::admin_token().expect("the server's admin token")
    )
    .parse()
    .expect("token header");
    let uris: Arc<Vec<http::Uri>> = Arc::new(
        requests
            .iter()
            .enumerate()
            .map(|(n, request)| {
                lvm_uri(&address, request.item.as_ref().expect("an item"), n as u64)
            })
            .collect(),
    );
    on_own_thread(move || async move {
        let client = lvm_client();
        lvm_warm(&client, &uris[0], &bearer)
            .await
            .expect("LVM warm-up");
        open_loop(rate, duration, server, ticks, |n| {
            lvm_call(
                client.clone(),
                uris[n as usize % uris.len()].clone(),
                bearer.clone(),
            )
        })
        .await
    })
    .await
}

/// One Lightweight Verification Messaging `GET` of `uri` with `bearer` (the
/// whole `Authorization` value), checked: 200, and the pack verified. The
/// future the open loop of the responder runs.
pub async fn lvm_call(
    client: LvmClient,
    uri: http::Uri,
    bearer: http::HeaderValue,
) -> Result<Instant, String> {
    use http_body_util::BodyExt;
    let request = http::Request::get(uri)
        .header(http::header::AUTHORIZATION, bearer)
        .body(http_body_util::Empty::new())
        .map_err(|error| format!("LVM request: {error}"))?;
    let _connection = client
        .connections
        .acquire()
        .await
        .map_err(|error| format!("LVM connections: {error}"))?;
    let response = client
        .client
        .request(request)
        .await
        .map_err(|error| format!("LVM GET: {error}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("LVM body: {error}"))?
        .to_bytes();
    let done = Instant::now();
    let verified = body.windows(15).any(|w| w == b"\"verified\":true");
    if status == http::StatusCode::OK && verified {
        Ok(done)
    } else {
        Err(format!(
            "LVM GET: {status} {}",
            String::from_utf8_lossy(&body)
        ))
    }
}

/// One Redis `GET` of `key` on `connection`, checked against [`REDIS_VALUE`]:
/// the future the open loop of the Redis peer runs.
pub async fn redis_get_call(
    mut connection: redis::aio::MultiplexedConnection,
    key: Arc<Vec<u8>>,
) -> Result<Instant, String> {
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key.as_slice())
        .query_async(&mut connection)
        .await
        .map_err(|error| format!("Redis GET: {error}"))?;
    let done = Instant::now();
    if value.as_deref() == Some(REDIS_VALUE) {
        Ok(done)
    } else {
        Err(format!("Redis GET: {value:?}"))
    }
}

/// `d` in whole microseconds, with the unit.
pub fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// `value` rounded, with thousands separators; `—` when not finite.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    if value < -0.5 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lvm_uri_is_a_canonical_digital_link_with_the_verification_query() {
        let item = identifier("09520123456788", "ABC123", "LOT1", "301231");
        assert_eq!(
            lvm_uri("127.0.0.1:8080", &item, 7).to_string(),
            "http://127.0.0.1:8080/01/09520123456788/10/LOT1/21/ABC123?17=301231&linkType=verificationService&reqGLN=0614141000012&corrUUID=bench-7"
        );
    }

    /// The open loop's clock never ticks before an intended send time, and
    /// counts every period that ended, also those the caller slept through.
    /// Calls a test may leave unread in [`fake_grpc_server`]'s channel.
    const FAKE_CALLS: usize = 1024;

    /// A one-connection HTTP/2 server, on a thread and runtime of its own,
    /// answering each call with `answer` and `grpc-status: status`; returns
    /// its address and, per call, the request's headers and body.
    async fn fake_grpc_server(
        answer: pb::VerifyResponse,
        status: &'static str,
    ) -> (
        String,
        mpsc::Receiver<(http::HeaderMap, http::Uri, bytes::Bytes)>,
    ) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (seen, calls) = mpsc::channel(FAKE_CALLS);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let (tcp, _) = listener.accept().await.unwrap();
                let mut connection = h2::server::handshake(tcp).await.unwrap();
                // Each stream in a task of its own, so that the accept loop
                // keeps driving the connection meanwhile.
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let seen = seen.clone();
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let (parts, mut body) = request.into_parts();
                        let mut received = bytes::BytesMut::new();
                        while let Some(chunk) = body.data().await {
                            received.extend_from_slice(&chunk.unwrap());
                        }
                        seen.send((parts.headers, parts.uri, received.freeze()))
                            .await
                            .unwrap();
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut out = respond.send_response(response, false).unwrap();
                        let message = answer.encode_to_vec();
                        let mut framed = vec![0];
                        framed.extend_from_slice(
                            &u32::try_from(message.len()).unwrap().to_be_bytes(),
                        );
                        framed.extend_from_slice(&message);
                        out.send_data(framed.into(), false).unwrap();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static(status));
                        out.send_trailers(trailers).unwrap();
                    });
                }
            })
        });
        (address, calls)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_h2_client_keeps_its_connection_when_answers_wait_unread() {
        // With h2's default windows, about 167 small answers received but
        // not yet read exhaust its DATA-frame budget and it closes the
        // connection (`too_many_data_frames`); a load generator that falls
        // behind leaves that many.
        const CALLS: usize = 400;
        let answer = pb::VerifyResponse::default();
        let (address, mut seen) = fake_grpc_server(answer.clone(), "0").await;
        let client = H2Unary::connect(&format!("http://{address}"), VERIFY)
            .await
            .unwrap();
        let request = Arc::new(pb::VerifyRequest {
            item: Some(identifier("09520123456788", "ABC123", "LOT1", "301231")),
        });
        let calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let client = client.clone();
                let request = Arc::clone(&request);
                tokio::spawn(
                    async move { client.call::<_, pb::VerifyResponse>(request.as_ref()).await },
                )
            })
            .collect();
        for _ in 0..CALLS {
            seen.recv().await.unwrap();
        }
        // Every call has reached the server; hold this runtime's only thread
        // while the answers pile up unread.
        std::thread::sleep(Duration::from_millis(300));
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), answer);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_h2_client_frames_the_call_as_grpc_and_decodes_the_answer() {
        let answer = pb::VerifyResponse {
            result: Some(pb::VerificationResult {
                product_known: true,
                vrs: Some(pb::VrsAnswer {
                    verified: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let (address, mut calls) = fake_grpc_server(answer.clone(), "0").await;
        let client = H2Unary::connect(&format!("http://{address}"), VERIFY)
            .await
            .unwrap();
        let request = pb::VerifyRequest {
            item: Some(identifier("09520123456788", "ABC123", "LOT1", "301231")),
        };
        let got: pb::VerifyResponse = client.call(&request).await.unwrap();
        assert_eq!(got, answer);
        let (headers, uri, body) = calls.recv().await.unwrap();
        assert_eq!(uri.path(), VERIFY);
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(body[0], 0, "uncompressed");
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert_eq!(length, body.len() - 5);
        assert_eq!(pb::VerifyRequest::decode(&body[5..]).unwrap(), request);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_h2_client_reports_a_non_zero_grpc_status() {
        let (address, _calls) = fake_grpc_server(pb::VerifyResponse::default(), "5").await;
        let client = H2Unary::connect(&format!("http://{address}"), VERIFY)
            .await
            .unwrap();
        let request = pb::VerifyRequest::default();
        let error = client
            .call::<_, pb::VerifyResponse>(&request)
            .await
            .unwrap_err();
        assert!(error.contains("grpc-status Some(\"5\")"), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_pacer_is_never_early_and_counts_every_period() {
        let period = Duration::from_millis(2);
        let begin = Instant::now() + Duration::from_millis(5);
        let pacer = Pacer::start(begin, period).expect("timerfd");
        let mut ticks = 0u64;
        while ticks < 3 {
            ticks += pacer.ticks().await.expect("tick");
            let due = begin + period * (ticks - 1) as u32;
            assert!(Instant::now() >= due, "tick {ticks} before its time");
        }
        // Sleep through several periods: they are all counted at once.
        std::thread::sleep(period * 5);
        let behind = pacer.ticks().await.expect("tick");
        assert!(
            behind >= 4,
            "{behind} periods counted after sleeping through 5"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(thousands(-1_000.0), "-1,000");
        assert_eq!(thousands(f64::NAN), "—");
    }

    #[test]
    fn percentiles_by_rank() {
        let mut values: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let [p50, p99, p999, max] = percentiles(&mut values);
        assert_eq!(p50, Duration::from_micros(500));
        assert_eq!(p99, Duration::from_micros(990));
        assert_eq!(p999, Duration::from_micros(999));
        assert_eq!(max, Duration::from_micros(1000));
    }
}
