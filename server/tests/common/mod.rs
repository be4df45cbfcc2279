//! Starts the real `serialsvc` binary on loopback for integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod api;
pub mod cli;
pub mod epcis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to start before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `serialsvc serve` child process and the addresses it bound.
pub struct Server {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts the server on ephemeral loopback ports and waits for its "serving" log line.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Starts the server with extra `serve` arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_until(data_dir, extra, " serving ")
    }

    /// Starts the server and returns as soon as it listens, before the
    /// status index is rebuilt (its "listening" log line); `wait_serving`
    /// then waits for the "serving" line.
    pub fn start_listening(data_dir: &Path) -> Server {
        Self::start_until(data_dir, &[], " listening ")
    }

    /// Starts the server and returns at the first log line containing
    /// `marker` (which names the listeners' addresses).
    fn start_until(data_dir: &Path, extra: &[&str], marker: &str) -> Server {
        let mut child = spawn(data_dir, extra);
        let stderr = child.stderr.take().expect("stderr piped");
        let (sender, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serialsvc] {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = log.recv_timeout(remaining).unwrap_or_else(|_| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not log {marker:?} within {START_TIMEOUT:?}")
            });
            if line.contains(marker) {
                return Server {
                    grpc: field(&line, "grpc"),
                    http: field(&line, "http"),
                    metrics: field(&line, "metrics"),
                    child,
                    data_dir: data_dir.to_path_buf(),
                    log,
                };
            }
        }
    }

    /// Waits for the "serving" log line (after [`Server::start_listening`]).
    pub fn wait_serving(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = self.log.recv_timeout(remaining).unwrap_or_else(|_| {
                panic!("server did not log 'serving' within {START_TIMEOUT:?}")
            });
            if line.contains(" serving ") {
                return;
            }
        }
    }

    /// The bootstrap admin token the server wrote to its data directory.
    pub fn admin_token(&self) -> String {
        let path = self.data_dir.join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status (panics after 60 s).
    pub fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                let lines = drain(&self.log);
                return (status, lines);
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server expected to fail; returns its exit status and standard error.
pub fn run_to_failure(data_dir: &Path) -> (ExitStatus, String) {
    let mut child = spawn(data_dir, &[]);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (child.wait().expect("wait for server"), stderr)
}

fn spawn(data_dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_serialsvc"))
        .args([
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serialsvc")
}

fn drain(log: &mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = log.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    lines
}

/// Reads `name=ADDR` from a text log line.
fn field(line: &str, name: &str) -> SocketAddr {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        + name.len()
        + 2;
    let value = line[start..].split_whitespace().next().expect("value");
    value
        .parse()
        .unwrap_or_else(|e| panic!("bad {name} address {value:?}: {e}"))
}

/// A minimal HTTP/1.0 GET: returns (status code, body).
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_full(address, path);
    (status, body)
}

/// A minimal HTTP/1.0 GET: returns (status code, header block, body).
pub fn http_get_full(address: SocketAddr, path: &str) -> (u16, String, String) {
    http_get_with(address, path, None)
}

/// As [`http_get_full`], with `Authorization: Bearer <token>` when given.
pub fn http_get_with(
    address: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\n{authorization}\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let (headers, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or_default();
    (status, headers, body)
}

/// Runs the real `serialctl` binary, built by cargo for the workspace.
pub fn serialctl(args: &[&str]) -> std::process::Output {
    // serialctl is another package's binary: cargo puts it beside serialsvc
    // when the workspace is tested together (`cargo test --workspace`).
    let binary = Path::new(env!("CARGO_BIN_EXE_serialsvc")).with_file_name("serialctl");
    assert!(
        binary.exists(),
        "{} missing: run the tests with `cargo test --workspace`",
        binary.display()
    );
    Command::new(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
}

/// The seed of a randomised test: `TEST_SEED` when set, else the clock;
/// printed so a failure can be replayed.
pub fn test_seed() -> u64 {
    let seed: u64 = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("TEST_SEED={seed} (set TEST_SEED to replay this run)");
    seed
}
