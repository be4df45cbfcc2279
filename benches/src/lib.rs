//! Benchmarks of serialsvc: see `benches/` for criterion benches and the
//! end-to-end harnesses. This library holds what the end-to-end harnesses
//! share: finding and starting the real `serialsvc` binary, reading a
//! process's memory and CPU time from `/proc`, describing the machine, the
//! verification load ([`verify`]) and the peers ([`peers`]: Redis and
//! PostgreSQL).

pub mod noise;
pub mod peers;
pub mod verify;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A number from the environment, or `default` when unset or not a number.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `serialsvc` binary beside the running bench, in the release target
/// directory, or `SERIALSVC_BINARY` when set (an A/B comparison of two
/// builds). Panics with the build command when it is missing.
pub fn server_binary() -> PathBuf {
    // An A/B comparison points this at another build's binary.
    if let Some(binary) = std::env::var_os("SERIALSVC_BINARY") {
        return PathBuf::from(binary);
    }
    let exe = std::env::current_exe().expect("current exe");
    let release = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/release");
    let binary = release.join("serialsvc");
    assert!(
        binary.exists(),
        "{} missing: run `cargo build --release --workspace` first",
        binary.display()
    );
    binary
}

/// The bootstrap admin token of the server [`start`] started last: every
/// channel made by [`verify::connect`] carries it.
static ADMIN_TOKEN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// A Linux timerfd on the monotonic clock that first expires after `first`
/// (at least 1 ns: zero would disarm it), then every `period`: nanosecond
/// resolution and no timer slack. Reading it answers how many periods ended
/// since the last read. The open loop's clock and the noise measurement.
pub fn periodic_timer(
    first: Duration,
    period: Duration,
    flags: rustix::time::TimerfdFlags,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    let timespec = |d: Duration| {
        Timespec::try_from(d.max(Duration::from_nanos(1)))
            .map_err(|_| std::io::Error::other("duration out of range"))
    };
    let timer = timerfd_create(TimerfdClockId::Monotonic, flags | TimerfdFlags::CLOEXEC)?;
    let spec = Itimerspec {
        it_interval: timespec(period)?,
        it_value: timespec(first)?,
    };
    timerfd_settime(&timer, TimerfdTimerFlags::empty(), &spec)?;
    Ok(timer)
}

/// `127.0.0.1:PORT` of the HTTP listener of the last server [`start`] made.
static HTTP_ADDRESS: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The admin token of the last server [`start`] made.
pub fn admin_token() -> Option<String> {
    ADMIN_TOKEN.lock().map(|t| t.clone()).unwrap_or(None)
}

/// `127.0.0.1:PORT` of the HTTP listener (health, GS1 Lightweight
/// Verification Messaging) of the last server [`start`] made.
pub fn http_address() -> Option<String> {
    HTTP_ADDRESS.lock().map(|a| a.clone()).unwrap_or(None)
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Debug)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to serialsvc whose calls carry the admin token.
pub type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel` with the admin token of the server started last.
pub fn authenticated(channel: tonic::transport::Channel) -> Channel {
    let bearer = admin_token().and_then(|t| format!("Bearer {t}").parse().ok());
    tonic::service::interceptor::InterceptedService::new(channel, Bearer(bearer))
}

/// Starts `serialsvc serve` on `dir` with every listener on a free loopback
/// port, waits until it logs that it is serving (status index rebuilt) and
/// returns the child and the gRPC endpoint (`http://127.0.0.1:PORT`). The
/// server's log goes to this process's standard error, prefixed
/// `[serialsvc]`; `log_env` names the variable that overrides its `RUST_LOG`
/// (default: warnings; the serve lines, which `start` needs, are always
/// added). The
/// caller kills and waits for the child at the end of the run.
#[allow(clippy::zombie_processes)]
pub fn start(dir: &Path, log_env: &str) -> (Child, String) {
    let mut child = Command::new(server_binary())
        .args([
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env(
            "RUST_LOG",
            // The serve lines are always kept: `start` reads the address from them.
            match std::env::var(log_env) {
                Ok(filter) => format!("{filter},serialsvc::serve=info"),
                Err(_) => "warn,serialsvc::serve=info".into(),
            },
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serialsvc");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("server exited before serving")
            .expect("read log");
        // "listening … grpc=…" comes first, while the status index is rebuilt
        // (NOT_SERVING); the address is used once the "serving" line is out.
        if !line.contains(": serving ") {
            eprintln!("[serialsvc] {line}");
            continue;
        }
        if let Some(rest) = line.split(" grpc=").nth(1) {
            let address = rest.split_whitespace().next().expect("address").to_owned();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    eprintln!("[serialsvc] {line}");
                }
            });
            let token = std::fs::read_to_string(dir.join("admin.token"))
                .expect("the server's admin.token")
                .trim()
                .to_owned();
            *ADMIN_TOKEN.lock().expect("token lock") = Some(token);
            *HTTP_ADDRESS.lock().expect("address lock") = line
                .split(" http=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            return (child, format!("http://{address}"));
        }
    }
}

/// A `serialsvc serve` this harness started on a temporary data directory
/// (see [`start`]); killed, and its directory removed, when dropped, also
/// when the harness panics.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` of its gRPC listener.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server on a new temporary data directory; `log_env` as in
    /// [`start`].
    pub fn start(log_env: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, endpoint) = start(dir.path(), log_env);
        Self {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/PID/status` size field (`VmHWM`, `VmRSS`, …) in bytes; 0 when
/// unreadable.
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident memory (VmHWM) of a process, in bytes; 0 when unreadable.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM")
}

/// Resident memory now (VmRSS) of a process, in bytes; 0 when unreadable.
pub fn rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// A process whose CPU time is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// One process, all its threads (serialsvc, redis-server).
    One(u32),
    /// A process and its children, including the children that have ended
    /// and been waited for (the PostgreSQL postmaster and its backends,
    /// WAL writer, checkpointer, …).
    Tree(u32),
}

impl Process {
    /// CPU time used so far, user plus system, in clock ticks.
    pub fn cpu_ticks(self) -> u64 {
        match self {
            Process::One(pid) => cpu_ticks(pid),
            Process::Tree(pid) => tree_cpu_ticks(pid),
        }
    }
}

/// utime + stime + cutime + cstime of `root`, plus utime + stime of each of
/// its living children.
fn tree_cpu_ticks(root: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if pid == root {
            total += stat_cpu_ticks(&stat) + stat_field(&stat, 16) + stat_field(&stat, 17);
        } else if stat_field(&stat, 4) == u64::from(root) {
            total += stat_cpu_ticks(&stat);
        }
    }
    total
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/PID/stat` line, from field
/// 3 on; 0 when missing.
fn stat_field(stat: &str, n: usize) -> u64 {
    // The command name (field 2) may hold spaces: count from after its ')'.
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().nth(n - 3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What the machine is: CPU model, cores, memory, kernel and OS, as
/// (name, value) pairs.
pub fn machine() -> Vec<(&'static str, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".into(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / (1u64 << 20) as f64)
        });
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or("unknown".into(), |n| n.trim_matches('"').to_owned());
    vec![
        ("cpu", model),
        ("cores", cores.to_string()),
        ("memory", memory),
        (
            "kernel",
            read("/proc/sys/kernel/osrelease").trim().to_owned(),
        ),
        ("os", os),
    ]
}

/// The median of `values` (the upper one for an even count); sorts them.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`,
/// 100 when that cannot be run).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// CPU time a process has used so far, user plus system, in clock ticks
/// (`/proc/PID/stat` fields 14 and 15, all threads); 0 when unreadable.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0, |stat| stat_cpu_ticks(&stat))
}

/// CPU ticks (utime + stime) of each living thread of `pid`, summed by
/// thread name without a trailing `-N` (`shard-writer-0` and
/// `shard-writer-1` count as `shard-writer`): where a server's CPU goes.
pub fn thread_cpu_ticks(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut threads = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        let name = name.trim();
        let name = match name.rsplit_once('-') {
            Some((stem, number)) if number.bytes().all(|b| b.is_ascii_digit()) => stem,
            _ => name,
        };
        *threads.entry(name.to_owned()).or_insert(0) += stat_cpu_ticks(&stat);
    }
    threads
}

/// The difference of two [`thread_cpu_ticks`] readings in seconds, largest
/// first, as `name 1.23` parts joined by commas (threads that used under
/// 0.01 s left out).
pub fn thread_cpu_since(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    ticks_per_second: f64,
) -> String {
    let mut used: Vec<(&String, f64)> = after
        .iter()
        .map(|(name, &ticks)| {
            let earlier = before.get(name).copied().unwrap_or(0);
            (
                name,
                ticks.saturating_sub(earlier) as f64 / ticks_per_second,
            )
        })
        .filter(|(_, seconds)| *seconds >= 0.01)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used.iter()
        .map(|(name, seconds)| format!("{name} {seconds:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// utime + stime of one `/proc/PID/stat` line; 0 when malformed.
fn stat_cpu_ticks(stat: &str) -> u64 {
    // utime is field 14, stime field 15.
    stat_field(stat, 14) + stat_field(stat, 15)
}

/// CPU time of the whole machine so far, all cores, in clock ticks
/// (`/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Everything but idle, iowait and steal. Less the processes under
    /// test, it tells how much other load shared the machine during a run.
    pub busy: u64,
    /// Steal: time a virtual CPU of this machine was ready to run while the
    /// host ran something else. Nothing inside the machine can use it, and
    /// every thread that was due on that CPU waited.
    pub stolen: u64,
}

/// The machine's [`MachineTicks`] so far; zero when `/proc/stat` is
/// unreadable.
pub fn machine_ticks() -> MachineTicks {
    std::fs::read_to_string("/proc/stat")
        .map_or(MachineTicks::default(), |stat| stat_machine_ticks(&stat))
}

fn stat_machine_ticks(stat: &str) -> MachineTicks {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return MachineTicks::default();
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user and nice.
    MachineTicks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        stolen: at(7),
    }
}

/// The eu-fmd serial alphabet (issuer/src/profile.rs): 32 characters, no
/// 0/O and 1/I.
pub const EU_FMD_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Deterministic, random-looking 12-character serials.
pub fn serial(n: u64) -> [u8; 12] {
    const ALPHABET: &[u8] = EU_FMD_ALPHABET;
    let mut x = xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes());
    let mut out = [0u8; 12];
    for byte in out.iter_mut() {
        *byte = ALPHABET[(x & 31) as usize];
        x >>= 5;
    }
    out
}

/// Decommission groups (dispensed, by the bench actor) of `serials` of
/// `gtin`, `group` items each, with request ids `{prefix}{index}`.
pub fn decommission_groups(
    gtin: &str,
    prefix: &str,
    serials: &[String],
    group: usize,
) -> Vec<proto::serial::v1::DecommissionRequest> {
    use proto::serial::v1 as pb;
    serials
        .chunks(group)
        .enumerate()
        .map(|(index, group)| pb::DecommissionRequest {
            request_id: format!("{prefix}{index}"),
            reason: pb::DecommissionReason::Dispensed as i32,
            location: "0614141000012".into(),
            actor: "bench".into(),
            items: group
                .iter()
                .map(|serial| pb::PackIdentifier {
                    identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
                        gtin: gtin.into(),
                        serial: serial.clone(),
                        lot: None,
                        expiry: None,
                    })),
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// Registers the benchmarked product `gtin` (company prefix of 7 digits,
/// EU FMD) and its lot `lot` expiring `expiry` (YYMMDD).
pub async fn register_product_and_lot(channel: Channel, gtin: &str, lot: &str, expiry: &str) {
    use proto::serial::v1 as pb;
    use proto::serial::v1::master_data_service_client::MasterDataServiceClient;

    let mut master = MasterDataServiceClient::new(channel);
    let product = pb::AddProductRequest {
        request_id: "p".into(),
        gtin: gtin.into(),
        name: "bench".into(),
        company_prefix_length: 7,
        market_profile: "eu-fmd".into(),
        ..Default::default()
    };
    master.add_product(product).await.expect("AddProduct");
    let lot = pb::AddLotRequest {
        request_id: "l".into(),
        gtin: gtin.into(),
        lot: lot.into(),
        expiry: expiry.into(),
    };
    master.add_lot(lot).await.expect("AddLot");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
    }

    #[test]
    fn cpu_ticks_from_a_stat_line() {
        let line = "4242 (tokio a) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 37 0 0 20 0 3 0 1 2 3";
        assert_eq!(stat_cpu_ticks(line), 287);
        assert_eq!(stat_cpu_ticks("garbage"), 0);
        assert_eq!(stat_field(line, 4), 1);
        assert_eq!(stat_field(line, 16), 0);
        assert!(Process::Tree(std::process::id()).cpu_ticks() >= cpu_ticks(std::process::id()));
        assert!(clock_ticks_per_second() > 0.0);
    }

    #[test]
    fn busy_and_stolen_ticks_from_proc_stat() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n";
        assert_eq!(
            stat_machine_ticks(stat),
            MachineTicks {
                busy: 100 + 5 + 50 + 1 + 2,
                stolen: 3
            }
        );
        assert_eq!(stat_machine_ticks("garbage"), MachineTicks::default());
        assert_eq!(
            stat_machine_ticks("cpu  1 2 3\n"),
            MachineTicks { busy: 6, stolen: 0 }
        );
    }
}
