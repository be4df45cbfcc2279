//! The server under test as a child process: `serialsvc-chaos serve` on
//! loopback ports, its log kept in a bounded ring for diagnostics.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Log lines kept per server process for diagnostics.
const LOG_LINES_KEPT: usize = 200;

/// How one server process is started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `serialsvc-chaos` binary.
    pub binary: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Extra environment: `FAILPOINTS` (fail crate actions) and
    /// `CHAOS_KILL_AT` (`NAME@N`: SIGKILL at the N-th pass of a fail point).
    pub env: Vec<(String, String)>,
    /// Extra `serve` flags.
    pub args: Vec<String>,
    /// How long start-up (open, index rebuild) may take.
    pub start_timeout: Duration,
}

impl Launch {
    /// A launch of `binary` on `data_dir` without faults.
    pub fn new(binary: impl Into<PathBuf>, data_dir: &Path) -> Self {
        Launch {
            binary: binary.into(),
            data_dir: data_dir.to_path_buf(),
            env: Vec::new(),
            args: Vec::new(),
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a server did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit status when it exited, `None` when it hung.
    pub status: Option<ExitStatus>,
    /// Its last log lines.
    pub log: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "server exited ({status}) before serving")?,
            None => write!(f, "server did not serve in time")?,
        }
        write!(f, "; last log lines:\n{}", self.log)
    }
}

/// A running `serialsvc-chaos serve`.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// How long it took from spawn to SERVING.
    pub start_duration: Duration,
    log: Arc<Mutex<Log>>,
}

/// What is kept of a server's log: its first ERROR lines and its last lines.
#[derive(Debug, Default)]
struct Log {
    errors: Vec<String>,
    last: VecDeque<String>,
}

/// ERROR lines kept per server process.
const ERROR_LINES_KEPT: usize = 50;

impl ServerProcess {
    /// Spawns the server and waits until it logs "serving" (index rebuilt).
    pub fn start(launch: &Launch) -> Result<ServerProcess, StartFailure> {
        let started = Instant::now();
        let mut child = Command::new(&launch.binary)
            .args(["serve", "--grpc-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&launch.data_dir)
            .args(&launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| StartFailure {
                status: None,
                log: format!("spawn {}: {error}", launch.binary.display()),
            })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Log::default()));
        let (serving, serving_rx) = mpsc::channel();
        let ring = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" serving ") || line.contains(" serving\"") {
                    let _ = serving.send(line.clone());
                }
                if std::env::var_os("CHAOS_VERBOSE").is_some() {
                    eprintln!("[serialsvc] {line}");
                }
                let mut ring = ring.lock().expect("log ring");
                if (line.contains(" ERROR ") || line.contains("panicked"))
                    && ring.errors.len() < ERROR_LINES_KEPT
                {
                    ring.errors.push(line.clone());
                }
                if ring.last.len() == LOG_LINES_KEPT {
                    ring.last.pop_front();
                }
                ring.last.push_back(line);
            }
        });
        let deadline = started + launch.start_timeout;
        loop {
            match serving_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    return Ok(ServerProcess {
                        grpc: address(&line, "grpc")
                            .map_err(|log| StartFailure { status: None, log })?,
                        start_duration: started.elapsed(),
                        child,
                        log,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(StartFailure {
                    status: Some(status),
                    log: tail(&log),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure {
                    status: None,
                    log: tail(&log),
                });
            }
        }
    }

    /// The gRPC endpoint URI.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself (e.g. a
    /// fail point that kills it); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGSTOP (a stall: the process stops answering, its sockets stay open).
    pub fn pause(&self) -> std::io::Result<()> {
        crate::sys::signal(self.pid(), libc::SIGSTOP)
    }

    /// Stops the process (SIGSTOP) and waits until every one of its threads
    /// is stopped, so that it runs no more user code: nothing it has not sent
    /// yet will be sent. Returns whether all threads stopped within 2 s.
    pub fn freeze(&self) -> bool {
        if self.pause().is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let stopped = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
                .map(|tasks| {
                    tasks.filter_map(Result::ok).all(|task| {
                        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                            // The state follows the command name in parentheses.
                            stat.rsplit_once(") ").is_some_and(|(_, rest)| {
                                rest.starts_with('T') || rest.starts_with('t')
                            })
                        })
                    })
                })
                .unwrap_or(false);
            if stopped {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Sends SIGCONT.
    pub fn resume(&self) -> std::io::Result<()> {
        crate::sys::signal(self.pid(), libc::SIGCONT)
    }

    /// Sends SIGTERM and waits up to `timeout` for the clean exit.
    pub fn terminate(mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = crate::sys::signal(self.pid(), libc::SIGTERM);
        let status = self.wait_exit(timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }

    /// The last log lines, joined.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Resident memory of the process in bytes (from /proc), if readable.
    pub fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Established TCP connections to the server's gRPC port (server side),
    /// from /proc/net/tcp and tcp6.
    pub fn grpc_connections(&self) -> u64 {
        let port = format!(":{:04X}", self.grpc.port());
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|table| {
                table
                    .lines()
                    .skip(1)
                    .filter(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        // local_address ends with the port; state 01 = ESTABLISHED.
                        fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "01"
                    })
                    .count() as u64
            })
            .sum()
    }

    /// Open file descriptors of the process (sockets included), if readable.
    pub fn open_files(&self) -> Option<u64> {
        let entries = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).ok()?;
        Some(entries.count() as u64)
    }

    /// Threads of the process (from /proc), if readable.
    pub fn threads(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("Threads:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGCONT first: a stopped process cannot be reaped promptly otherwise.
        let _ = crate::sys::signal(self.child.id(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ERROR lines, then the last 40 lines.
fn tail(log: &Mutex<Log>) -> String {
    let ring = log.lock().expect("log ring");
    let skip = ring.last.len().saturating_sub(40);
    let mut lines = ring.errors.clone();
    lines.extend(ring.last.iter().skip(skip).cloned());
    lines.join("\n")
}

/// Reads `name=ADDR` from a text log line.
fn address(line: &str, name: &str) -> Result<SocketAddr, String> {
    let key = format!(" {name}=");
    let start = line
        .find(&key)
        .ok_or_else(|| format!("no {name}= in {line:?}"))?
        + key.len();
    let value = line[start..].split_whitespace().next().unwrap_or_default();
    value
        .parse()
        .map_err(|e| format!("bad {name} address {value:?}: {e}"))
}
