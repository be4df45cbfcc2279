//! The supervisor: runs the server as a child process, drives concurrent
//! clients, injects faults (through the scenario that calls it), restarts
//! the server, and checks the history against the promises.
//!
//! Each client owns the serials of the pools it was given, so the expected
//! state of every serial is exactly the last acknowledged change to it: the
//! checker can then be strict. A write whose outcome is unknown is retried
//! with the same request id until it resolves, before the client does
//! anything else, as a real client would.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::serial::v1 as pb;
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::auth::Channel;

use crate::Schedule;
use crate::history::{Counts, Entry, History, Outcome};
use crate::ops::{self, Answer, Op};
use crate::process::{Launch, ServerProcess, StartFailure};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The scenario's name (for the report).
    pub scenario: String,
    /// The seed of faults and client choices.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// GTINs the clients use.
    pub gtins: usize,
    /// Each client's deadline per attempt.
    pub deadline: Duration,
    /// Whether a few pools are big enough to stream in several chunks
    /// (16,384 serials each): for cuts in the middle of a stream.
    pub big_pools: bool,
    /// The bound within which the service must serve again (start-up) and
    /// every indeterminate operation must resolve once faults stop.
    pub recovery_bound: Duration,
}

impl Settings {
    /// Defaults for a scenario: 4 clients (`CHAOS_CLIENTS` to change), 2
    /// GTINs, 5 s deadlines, 30 s bound.
    pub fn new(scenario: &str, seed: u64) -> Self {
        Settings {
            scenario: scenario.into(),
            seed,
            clients: std::env::var("CHAOS_CLIENTS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(4),
            gtins: 2,
            big_pools: false,
            deadline: Duration::from_secs(5),
            recovery_bound: Duration::from_secs(30),
        }
    }
}

/// What a client expects of a serial it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allocated,
    Active,
    Decommissioned,
}

impl Expect {
    fn state(self) -> i32 {
        match self {
            Expect::Allocated => pb::PackState::Allocated as i32,
            Expect::Active => pb::PackState::Active as i32,
            Expect::Decommissioned => pb::PackState::Decommissioned as i32,
        }
    }
}

/// State shared by the supervisor and its clients.
#[derive(Debug)]
struct Shared {
    history: Mutex<History>,
    violations: Mutex<Vec<String>>,
    /// No new operations; resolve what is pending, then stop.
    draining: AtomicBool,
    /// Give up even on pending operations.
    abort: AtomicBool,
    /// Clients with an unresolved indeterminate write.
    pending: AtomicUsize,
    endpoint: watch::Receiver<Option<String>>,
    /// The server's data directory, where its admin token is.
    data_dir: std::path::PathBuf,
    gtins: Vec<String>,
    deadline: Duration,
    big_pools: bool,
}

impl Shared {
    fn violation(&self, text: String) {
        let mut violations = self.violations.lock().expect("violations");
        // The first ones tell the story; a broken control can make thousands.
        if violations.len() < 20 {
            eprintln!("VIOLATION: {text}");
        }
        violations.push(text);
    }
}

/// One client's serials: (GTIN index, serial) → expected state.
#[derive(Debug, Default)]
struct Owned {
    items: Vec<(usize, String, Expect)>,
    index: HashMap<(usize, String), usize>,
}

impl Owned {
    fn add(&mut self, gtin: usize, serial: &str) {
        let key = (gtin, serial.to_owned());
        if !self.index.contains_key(&key) {
            self.index.insert(key, self.items.len());
            self.items
                .push((gtin, serial.to_owned(), Expect::Allocated));
        }
    }

    fn get(&self, gtin: usize, serial: &str) -> Option<Expect> {
        let at = *self.index.get(&(gtin, serial.to_owned()))?;
        Some(self.items[at].2)
    }

    fn set(&mut self, gtin: usize, serial: &str, expect: Expect) {
        if let Some(&at) = self.index.get(&(gtin, serial.to_owned())) {
            self.items[at].2 = expect;
        }
    }

    /// Up to `max` distinct serials of `gtin` (in state `wanted`, if given),
    /// found by random probes.
    fn sample(
        &self,
        gtin: usize,
        wanted: Option<Expect>,
        max: usize,
        schedule: &mut Schedule,
    ) -> Vec<String> {
        let mut chosen = std::collections::BTreeSet::new();
        if self.items.is_empty() {
            return Vec::new();
        }
        for _ in 0..(16 * max + 64) {
            let at = schedule.below(self.items.len() as u64) as usize;
            let (g, _, e) = &self.items[at];
            if *g == gtin && wanted.is_none_or(|w| w == *e) {
                chosen.insert(at);
                if chosen.len() == max {
                    break;
                }
            }
        }
        chosen
            .into_iter()
            .map(|at| self.items[at].1.clone())
            .collect()
    }
}

/// Runs a scenario: the server, the clients and the checker.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    launch: Launch,
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    endpoint: watch::Sender<Option<String>>,
    server: Option<ServerProcess>,
    clients: Vec<tokio::task::JoinHandle<Owned>>,
    faults: BTreeMap<String, u64>,
    timeline: Vec<(Instant, String)>,
    begun: Instant,
    starts: Vec<(Instant, Duration)>,
    /// The schedule of faults (clients have their own, derived from the seed).
    pub schedule: Schedule,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Attempts by outcome.
    pub counts: Counts,
    /// Writes whose first outcome was indeterminate, all retried.
    pub indeterminate_writes: u64,
    /// Serials checked at the end (state after the final restart).
    pub serials_checked: u64,
    /// Server starts.
    pub starts: u64,
    /// The slowest start (spawn to SERVING).
    pub slowest_start: Duration,
    /// Failed and indeterminate attempts by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Promises broken.
    pub violations: Vec<String>,
    /// The ERROR lines and last lines of the last server's log.
    pub final_log: String,
    /// How long the clean shutdown (SIGTERM) at the end took; `None` if it
    /// failed. It waits for every open response stream: a stream leaked by a
    /// cut client would hold it for the whole grace period.
    pub clean_shutdown: Option<Duration>,
}

impl Report {
    /// One line for the log and CHAOS.md.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "scenario {} seed {}: faults [{}]; attempts {} (ok {}, failed {}, indeterminate {}; errors [{}]); \
             writes first indeterminate (then retried) {}; serials checked {}; starts {} (slowest {:.2} s); violations {}",
            self.scenario,
            self.seed,
            faults.join(", "),
            self.counts.attempts,
            self.counts.ok,
            self.counts.failed,
            self.counts.indeterminate,
            errors.join(", "),
            self.indeterminate_writes,
            self.serials_checked,
            self.starts,
            self.slowest_start.as_secs_f64(),
            self.violations.len()
        )
    }

    /// Prints the summary (and appends it to `$CHAOS_REPORT` when set), then
    /// panics if any promise was broken.
    pub fn assert_clean(&self) {
        self.publish();
        assert!(
            self.violations.is_empty(),
            "{} violations (replay with TEST_SEED={}), the first ones:\n{}",
            self.violations.len(),
            self.seed,
            self.violations[..self.violations.len().min(20)].join("\n")
        );
        assert!(
            self.counts.ok > 0,
            "no operation succeeded: the run proved nothing"
        );
    }

    /// Like [`Report::assert_clean`], for a run without clients.
    pub fn assert_clean_or_idle(&self) {
        self.publish();
        assert!(
            self.violations.is_empty(),
            "{} violations (replay with TEST_SEED={}):\n{}",
            self.violations.len(),
            self.seed,
            self.violations[..self.violations.len().min(20)].join("\n")
        );
    }

    /// For a negative control: panics unless a promise was found broken.
    pub fn assert_caught(&self) {
        self.publish();
        assert!(
            !self.violations.is_empty(),
            "negative control {}: the checker found nothing, so the test does not test (seed {})",
            self.scenario,
            self.seed
        );
        eprintln!(
            "negative control {} caught, first violation: {}",
            self.scenario, self.violations[0]
        );
    }

    /// Prints the summary and appends it to `$CHAOS_REPORT` when set.
    pub fn publish(&self) {
        let line = self.summary();
        eprintln!("{line}");
        if let Ok(path) = std::env::var("CHAOS_REPORT") {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(file, "{line}");
            }
        }
    }
}

impl Supervisor {
    /// A supervisor for `launch` (nothing started yet).
    pub fn new(settings: Settings, launch: Launch) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("client runtime");
        let (endpoint, receiver) = watch::channel(None);
        let shared = Arc::new(Shared {
            history: Mutex::new(History::default()),
            violations: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            endpoint: receiver,
            data_dir: launch.data_dir.clone(),
            gtins: (0..settings.gtins as u32).map(ops::gtin).collect(),
            deadline: settings.deadline,
            big_pools: settings.big_pools,
        });
        Supervisor {
            schedule: Schedule::new(settings.seed),
            settings,
            launch,
            runtime,
            shared,
            endpoint,
            server: None,
            clients: Vec::new(),
            faults: BTreeMap::new(),
            timeline: Vec::new(),
            begun: Instant::now(),
            starts: Vec::new(),
        }
    }

    /// The launch settings (scenarios adjust `env` between restarts).
    pub fn launch_mut(&mut self) -> &mut Launch {
        &mut self.launch
    }

    /// Counts one injected fault of `kind`.
    pub fn fault(&mut self, kind: &str) {
        *self.faults.entry(kind.into()).or_default() += 1;
        self.timeline.push((Instant::now(), kind.into()));
    }

    /// Records a broken promise found by the scenario itself.
    pub fn violation(&self, text: String) {
        self.shared.violation(text);
    }

    /// The running server, if any.
    pub fn server(&self) -> Option<&ServerProcess> {
        self.server.as_ref()
    }

    /// Starts the server and points the clients at it. A server that does
    /// not start is a violation (returned too, for scenarios that expect it).
    pub fn start(&mut self) -> Result<(), StartFailure> {
        assert!(self.server.is_none(), "a server is already running");
        match ServerProcess::start(&self.launch) {
            Ok(server) => {
                if server.start_duration > self.settings.recovery_bound {
                    self.violation(format!(
                        "start took {:.1} s, over the {:?} bound",
                        server.start_duration.as_secs_f64(),
                        self.settings.recovery_bound
                    ));
                }
                self.starts.push((Instant::now(), server.start_duration));
                self.timeline.push((Instant::now(), "serving".into()));
                self.endpoint.send_replace(Some(server.endpoint()));
                self.server = Some(server);
                Ok(())
            }
            Err(failure) => Err(failure),
        }
    }

    /// Starts the server; failure to start is a violation.
    pub fn start_or_violation(&mut self) -> bool {
        match self.start() {
            Ok(()) => true,
            Err(failure) => {
                self.violation(format!("the server did not serve again: {failure}"));
                false
            }
        }
    }

    /// Points the clients at `endpoint` (e.g. a proxy) instead of the server.
    pub fn publish_endpoint(&self, endpoint: String) {
        self.endpoint.send_replace(Some(endpoint));
    }

    /// Takes the server out (clients see it gone) without stopping it.
    pub fn take_server(&mut self) -> Option<ServerProcess> {
        self.endpoint.send_replace(None);
        self.server.take()
    }

    /// Waits up to `timeout` for the server to exit by itself (a kill at a
    /// fail point); true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let exited = self
            .server
            .as_mut()
            .is_some_and(|server| server.wait_exit(timeout).is_some());
        if exited {
            self.take_server();
        }
        exited
    }

    /// kill -9 the server (a fault) and reap it.
    pub fn kill9(&mut self) {
        if let Some(server) = self.take_server() {
            server.kill9();
        }
    }

    /// Registers the products and starts the clients (the server must run).
    pub fn start_clients(&mut self) {
        let channel = self.channel().expect("a server to set up");
        for gtin in &self.shared.gtins {
            let setup = self.runtime.block_on(async {
                let mut last = None;
                for _ in 0..50 {
                    match ops::setup_product(&channel, gtin).await {
                        Ok(()) => return Ok(()),
                        Err(status) => last = Some(status),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(last)
            });
            if let Err(status) = setup {
                panic!("register {gtin}: {status:?}");
            }
        }
        for client in 0..self.settings.clients {
            let shared = Arc::clone(&self.shared);
            let seed = self
                .settings
                .seed
                .wrapping_mul(31)
                .wrapping_add(client as u64 + 1);
            self.clients
                .push(self.runtime.spawn(run_client(client, seed, shared)));
        }
    }

    /// Lets the clients work for `duration`.
    pub fn run_for(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    /// A channel to the running server.
    pub fn channel(&self) -> Option<Channel> {
        let server = self.server.as_ref()?;
        let _guard = self.runtime.enter();
        Endpoint::from_shared(server.endpoint()).ok().map(|e| {
            crate::auth::authenticated(
                e.connect_timeout(Duration::from_secs(2)).connect_lazy(),
                &self.launch.data_dir,
            )
        })
    }

    /// Runs a future on the clients' runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Reads the history so far.
    pub fn with_history<R>(&self, read: impl FnOnce(&History) -> R) -> R {
        read(&self.shared.history.lock().expect("history"))
    }

    /// Attempts so far that completed with an OK answer.
    pub fn ok_count(&self) -> u64 {
        self.shared.history.lock().expect("history").counts().ok
    }

    /// Ends the run: the server must be running (faults stopped). Clients stop
    /// sending new work, every pending write must resolve within the recovery
    /// bound, then the checker runs and the server is stopped.
    pub fn finish(mut self) -> Report {
        self.shared.draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.settings.recovery_bound;
        while self.clients.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let unresolved = self.shared.pending.load(Ordering::SeqCst);
        if unresolved > 0 {
            self.violation(format!(
                "{unresolved} indeterminate writes did not resolve within {:?} after faults stopped",
                self.settings.recovery_bound
            ));
        }
        self.shared.abort.store(true, Ordering::SeqCst);
        let mut owned: Vec<Owned> = Vec::new();
        for client in std::mem::take(&mut self.clients) {
            match self.runtime.block_on(client) {
                Ok(serials) => owned.push(serials),
                Err(error) => self.violation(format!("a client task failed: {error}")),
            }
        }
        let serials_checked = match self.channel() {
            Some(channel) => self.check(&channel, &owned),
            None => {
                self.violation("no server running at the end: nothing could be checked".into());
                0
            }
        };
        if std::env::var_os("CHAOS_DUMP").is_some() {
            self.dump();
        }
        let final_log = self
            .server
            .as_ref()
            .map(|s| s.log_tail())
            .unwrap_or_default();
        let mut clean_shutdown = None;
        if let Some(server) = self.take_server() {
            let asked = Instant::now();
            if server
                .terminate(Duration::from_secs(40))
                .is_some_and(|status| status.success())
            {
                clean_shutdown = Some(asked.elapsed());
            }
        }
        Report {
            final_log,
            clean_shutdown,
            ..self.report(serials_checked)
        }
    }

    /// Prints, for the first serials named by violations, every attempt that
    /// touched them, between the faults (set `CHAOS_DUMP` to get it).
    fn dump(&self) {
        let violations = self.shared.violations.lock().expect("violations").clone();
        let history = self.shared.history.lock().expect("history");
        let at = |t: Instant| t.saturating_duration_since(self.begun).as_secs_f64();
        let mut serials: Vec<String> = violations
            .iter()
            .filter_map(|v| {
                let start = v.find(", ")? + 2;
                let end = start + v[start..].find(')')?;
                Some(v[start..end].to_owned())
            })
            .collect();
        serials.dedup();
        for serial in serials.iter().take(3) {
            eprintln!("--- history of serial {serial}");
            let mut lines: Vec<(f64, String)> = self
                .timeline
                .iter()
                .map(|(t, what)| (at(*t), format!("FAULT/EVENT {what}")))
                .collect();
            for entry in &history.entries {
                let touches = match &entry.op {
                    Op::Pool { .. } => {
                        matches!(&entry.outcome, Outcome::Ok(Answer::Pool(s)) if s.contains(serial))
                    }
                    Op::Commission { serials, .. }
                    | Op::Decommission { serials, .. }
                    | Op::Verify { serials, .. } => serials.contains(serial),
                };
                if touches {
                    lines.push((
                        at(entry.invoked),
                        format!(
                            "client {} {} {:?} attempt {} -> {:.3}: {:?}",
                            entry.client,
                            entry.op.kind(),
                            entry.op.request_id(),
                            entry.attempt,
                            at(entry.completed),
                            match &entry.outcome {
                                Outcome::Ok(Answer::Group(o)) => format!("ok {o:?}"),
                                Outcome::Ok(Answer::States(o)) => format!("ok states {o:?}"),
                                Outcome::Ok(Answer::Pool(o)) => format!("ok pool of {}", o.len()),
                                other => format!("{other:?}"),
                            }
                        ),
                    ));
                }
            }
            lines.sort_by(|a, b| a.0.total_cmp(&b.0));
            let first = lines
                .iter()
                .position(|l| !l.1.starts_with("FAULT"))
                .unwrap_or(0);
            for (t, line) in lines.iter().skip(first.saturating_sub(2)) {
                eprintln!("{t:9.3} {line}");
            }
        }
    }

    /// Ends a run whose server refused to start (as a scenario expected):
    /// clients stop, nothing can be checked; the report has the history and
    /// any violation found so far.
    pub fn abandon(mut self) -> Report {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.abort.store(true, Ordering::SeqCst);
        for client in std::mem::take(&mut self.clients) {
            let _ = self.runtime.block_on(client);
        }
        if let Some(server) = self.take_server() {
            server.kill9();
        }
        self.report(0)
    }

    fn report(&self, serials_checked: u64) -> Report {
        let history = self.shared.history.lock().expect("history");
        let indeterminate_writes = history
            .entries
            .iter()
            .filter(|e| {
                e.attempt == 0
                    && e.op.request_id().is_some()
                    && matches!(e.outcome, Outcome::Indeterminate(_))
            })
            .count() as u64;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for entry in &history.entries {
            if let Outcome::Failed(text) | Outcome::Indeterminate(text) = &entry.outcome {
                let code = text.split(':').next().unwrap_or_default().to_owned();
                *errors.entry(code).or_default() += 1;
            }
        }
        Report {
            scenario: self.settings.scenario.clone(),
            seed: self.settings.seed,
            faults: self.faults.clone(),
            counts: history.counts(),
            indeterminate_writes,
            serials_checked,
            starts: self.starts.len() as u64,
            slowest_start: self.starts.iter().map(|s| s.1).max().unwrap_or_default(),
            errors,
            violations: self.shared.violations.lock().expect("violations").clone(),
            final_log: String::new(),
            clean_shutdown: None,
        }
    }

    /// The final checks, against the server that runs after the last fault.
    fn check(&self, channel: &Channel, owned: &[Owned]) -> u64 {
        let entries = self.shared.history.lock().expect("history").entries.clone();
        // 1. Uniqueness and idempotency of pools.
        let mut by_request: HashMap<&str, &Vec<String>> = HashMap::new();
        let mut holder: HashMap<(&str, &str), &str> = HashMap::new();
        for entry in &entries {
            let (
                Op::Pool {
                    request_id, gtin, ..
                },
                Outcome::Ok(Answer::Pool(serials)),
            ) = (&entry.op, &entry.outcome)
            else {
                continue;
            };
            if let Some(earlier) = by_request.insert(request_id, serials) {
                if earlier != serials {
                    self.violation(format!(
                        "pool {request_id} answered twice with different serials"
                    ));
                }
                continue;
            }
            for serial in serials {
                if let Some(other) = holder.insert((gtin, serial), request_id) {
                    self.violation(format!(
                        "({gtin}, {serial}) handed out twice: pools {other} and {request_id}"
                    ));
                }
            }
        }
        // 2. Every indeterminate write resolved to one outcome, and a replay
        //    now gives that same outcome.
        let mut resolved: HashMap<&str, &Answer> = HashMap::new();
        let mut uncertain: Vec<&Op> = Vec::new();
        for entry in &entries {
            let Some(request_id) = entry.op.request_id() else {
                continue;
            };
            match &entry.outcome {
                Outcome::Ok(answer) => {
                    resolved.insert(request_id, answer);
                }
                Outcome::Indeterminate(_) if entry.attempt == 0 => uncertain.push(&entry.op),
                _ => {}
            }
        }
        for op in uncertain {
            let request_id = op.request_id().unwrap_or_default();
            let Some(answer) = resolved.get(request_id) else {
                self.violation(format!(
                    "indeterminate {} {request_id} never resolved",
                    op.kind()
                ));
                continue;
            };
            match self.block_on(ops::execute(channel, op, self.settings.deadline)) {
                Ok(again) if &again == *answer => {}
                Ok(again) => self.violation(format!(
                    "replay of {} {request_id} answered {again:?}, first resolved as {answer:?}",
                    op.kind()
                )),
                Err(status) => self.violation(format!(
                    "replay of {} {request_id} failed: {status}",
                    op.kind()
                )),
            }
        }
        // 3. Every acknowledged serial and state change is there, and every
        //    verification agrees with it.
        let mut checked = 0u64;
        for serials in owned {
            for (gtin_index, chunk) in group_by_gtin(serials) {
                let gtin = &self.shared.gtins[gtin_index];
                for part in chunk.chunks(1000) {
                    let op = Op::Verify {
                        gtin: gtin.clone(),
                        serials: part.iter().map(|(s, _)| s.clone()).collect(),
                    };
                    match self.block_on(ops::execute(channel, &op, Duration::from_secs(30))) {
                        Ok(Answer::States(states)) => {
                            for ((serial, expect), state) in part.iter().zip(&states) {
                                checked += 1;
                                if *state != expect.state() {
                                    self.violation(format!(
                                        "after the final restart ({gtin}, {serial}) is {}, acknowledged as {expect:?}",
                                        state_name(*state)
                                    ));
                                }
                            }
                        }
                        other => self.violation(format!("final verification failed: {other:?}")),
                    }
                }
            }
        }
        // 4. The audit trail's hash chain holds.
        match self.block_on(ops::audit_trail(channel)) {
            Ok(Ok(_)) => {}
            Ok(Err(broken)) => self.violation(format!("audit trail: {broken}")),
            Err(status) => self.violation(format!("audit trail check failed: {status}")),
        }
        checked
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shared.abort.store(true, Ordering::SeqCst);
        self.shared.draining.store(true, Ordering::SeqCst);
    }
}

fn group_by_gtin(serials: &Owned) -> BTreeMap<usize, Vec<(String, Expect)>> {
    let mut groups: BTreeMap<usize, Vec<(String, Expect)>> = BTreeMap::new();
    for (gtin, serial, expect) in &serials.items {
        groups
            .entry(*gtin)
            .or_default()
            .push((serial.clone(), *expect));
    }
    groups
}

fn state_name(state: i32) -> String {
    pb::PackState::try_from(state)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("state {state}"))
}

/// One client: sends operations one at a time until told to drain; an
/// indeterminate write is retried with its request id until it resolves.
async fn run_client(client: usize, seed: u64, shared: Arc<Shared>) -> Owned {
    let mut schedule = Schedule::new(seed);
    let mut owned = Owned::default();
    let mut pending: Option<(Op, u32)> = None;
    let mut endpoint = shared.endpoint.clone();
    let mut connection: Option<(String, Channel)> = None;
    let mut sequence = 0u64;
    loop {
        if shared.abort.load(Ordering::SeqCst)
            || (pending.is_none() && shared.draining.load(Ordering::SeqCst))
        {
            break;
        }
        let address = endpoint.borrow_and_update().clone();
        let Some(address) = address else {
            let _ = tokio::time::timeout(Duration::from_millis(50), endpoint.changed()).await;
            continue;
        };
        if connection.as_ref().is_none_or(|(a, _)| *a != address) {
            let Ok(built) = Endpoint::from_shared(address.clone()) else {
                break;
            };
            connection = Some((
                address.clone(),
                crate::auth::authenticated(
                    built
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true)
                        .connect_lazy(),
                    &shared.data_dir,
                ),
            ));
        }
        let channel = connection
            .as_ref()
            .map(|(_, c)| c.clone())
            .expect("connected");
        let (op, attempt) = match pending.take() {
            Some((op, attempt)) => (op, attempt),
            None => {
                sequence += 1;
                (choose(client, sequence, &mut schedule, &owned, &shared), 0)
            }
        };
        let invoked = Instant::now();
        let result = ops::execute(&channel, &op, shared.deadline).await;
        let completed = Instant::now();
        let outcome = match result {
            Ok(answer) => {
                apply(&shared, &op, &answer, &mut owned);
                if attempt > 0 {
                    shared.pending.fetch_sub(1, Ordering::SeqCst);
                }
                Outcome::Ok(answer)
            }
            Err(status)
                if op.request_id().is_some()
                    && (ops::indeterminate(&status)
                        || (attempt > 0 && status.code() == tonic::Code::ResourceExhausted)) =>
            {
                if attempt == 0 {
                    shared.pending.fetch_add(1, Ordering::SeqCst);
                }
                pending = Some((op.clone(), attempt + 1));
                let backoff = Duration::from_millis(20 + schedule.below(100));
                tokio::time::sleep(backoff).await;
                Outcome::Indeterminate(format!("{:?}: {}", status.code(), status.message()))
            }
            Err(status) => {
                if attempt > 0 {
                    shared.pending.fetch_sub(1, Ordering::SeqCst);
                    shared.violation(format!(
                        "indeterminate {} {} resolved to a failure: {status}",
                        op.kind(),
                        op.request_id().unwrap_or_default()
                    ));
                }
                if status.code() == tonic::Code::ResourceExhausted {
                    // Overloaded: back off as a real client would.
                    tokio::time::sleep(Duration::from_millis(10 + schedule.below(40))).await;
                }
                if ops::indeterminate(&status) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Outcome::Indeterminate(format!("{:?}: {}", status.code(), status.message()))
                } else {
                    Outcome::Failed(format!("{:?}: {}", status.code(), status.message()))
                }
            }
        };
        shared.history.lock().expect("history").entries.push(Entry {
            client,
            op,
            attempt,
            invoked,
            completed,
            outcome,
        });
    }
    owned
}

/// The next operation of a client, from its own serials.
fn choose(
    client: usize,
    sequence: u64,
    schedule: &mut Schedule,
    owned: &Owned,
    shared: &Shared,
) -> Op {
    let request_id = format!("chaos-c{client}-{sequence}");
    let roll = schedule.below(100);
    let gtin_index = schedule.below(shared.gtins.len() as u64) as usize;
    let gtin = shared.gtins[gtin_index].clone();
    let (wanted, max) = match roll {
        0..30 => (None, 20),
        30..55 => (Some(Expect::Allocated), 20),
        55..70 => (Some(Expect::Active), 10),
        _ => (None, 0),
    };
    let serials = if max > 0 {
        owned.sample(gtin_index, wanted, max, schedule)
    } else {
        Vec::new()
    };
    if !serials.is_empty() {
        return match wanted {
            None => Op::Verify { gtin, serials },
            Some(Expect::Allocated) => Op::Commission {
                request_id,
                gtin,
                serials,
            },
            Some(_) => Op::Decommission {
                request_id,
                gtin,
                serials,
            },
        };
    }
    let count = if shared.big_pools && schedule.below(100) < 1 {
        16_385 + schedule.below(8_000)
    } else {
        1 + schedule.below(40)
    };
    Op::Pool {
        request_id,
        gtin,
        count,
    }
}

/// Applies an acknowledged answer to the client's model; an answer that
/// contradicts the model is a violation.
fn apply(shared: &Shared, op: &Op, answer: &Answer, owned: &mut Owned) {
    let gtin_index = |gtin: &str| shared.gtins.iter().position(|g| g == gtin).unwrap_or(0);
    match (op, answer) {
        (Op::Pool { gtin, .. }, Answer::Pool(serials)) => {
            let index = gtin_index(gtin);
            for serial in serials {
                owned.add(index, serial);
            }
        }
        (
            Op::Commission {
                request_id,
                gtin,
                serials,
            },
            Answer::Group(outcomes),
        ) => transition(
            shared,
            owned,
            gtin_index(gtin),
            serials,
            outcomes,
            pb::CommissionOutcome::Commissioned as i32,
            Expect::Active,
            request_id,
        ),
        (
            Op::Decommission {
                request_id,
                gtin,
                serials,
            },
            Answer::Group(outcomes),
        ) => transition(
            shared,
            owned,
            gtin_index(gtin),
            serials,
            outcomes,
            pb::DecommissionOutcome::Decommissioned as i32,
            Expect::Decommissioned,
            request_id,
        ),
        (Op::Verify { gtin, serials }, Answer::States(states)) => {
            let index = gtin_index(gtin);
            for (serial, state) in serials.iter().zip(states) {
                let expected = owned.get(index, serial);
                if let Some(expect) = expected
                    && expect.state() != *state
                {
                    shared.violation(format!(
                        "verification of ({gtin}, {serial}) saw {}, acknowledged as {expect:?}",
                        state_name(*state)
                    ));
                }
            }
        }
        _ => shared.violation(format!("answer {answer:?} does not fit {op:?}")),
    }
}

#[allow(clippy::too_many_arguments)]
fn transition(
    shared: &Shared,
    owned: &mut Owned,
    gtin_index: usize,
    serials: &[String],
    outcomes: &[i32],
    wanted: i32,
    to: Expect,
    request_id: &str,
) {
    if outcomes.len() != serials.len() {
        shared.violation(format!(
            "{request_id}: {} outcomes for {} items",
            outcomes.len(),
            serials.len()
        ));
        return;
    }
    for (serial, outcome) in serials.iter().zip(outcomes) {
        if *outcome != wanted {
            shared.violation(format!(
                "{request_id}: ({}, {serial}) got outcome {outcome}, wanted {wanted}",
                shared.gtins[gtin_index]
            ));
            continue;
        }
        owned.set(gtin_index, serial, to);
    }
}
