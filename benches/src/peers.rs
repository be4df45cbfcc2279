//! The peers serialsvc is measured against (DESIGN.md §6): Redis and
//! PostgreSQL from Debian's packages, installed when missing, started on
//! loopback in temporary directories, and stopped when their guard is
//! dropped (also when the harness panics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::verify::REDIS_VALUE;

/// A free TCP port on 127.0.0.1 (free when asked; bound by the caller soon
/// after).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free loopback port")
}

/// Whether this process runs as root (`Uid:` of `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Runs `apt-get install -y PACKAGES` (after `apt-get update` when the first
/// try fails); whether it succeeded.
pub fn apt_install(packages: &[&str]) -> bool {
    eprintln!(
        "installing Debian's packages: apt-get install -y {}",
        packages.join(" ")
    );
    let sudo = if running_as_root() {
        None
    } else {
        Some("sudo")
    };
    let apt = |args: &[&str]| {
        let mut command = match sudo {
            Some(sudo) => {
                let mut command = Command::new(sudo);
                command.arg("apt-get");
                command
            }
            None => Command::new("apt-get"),
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let install: Vec<&str> = ["install", "-y", "-q"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    if apt(&install) {
        return true;
    }
    let _ = apt(&["update", "-q"]);
    apt(&install)
}

/// `redis-server` on the PATH, installed from Debian when missing; `None`
/// (with the reason printed) when it cannot be had.
pub fn redis_server() -> Option<PathBuf> {
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
    eprintln!("redis-server missing");
    apt_install(&["redis-server"]);
    let found = find();
    if found.is_none() {
        eprintln!(
            "SKIPPING THE REDIS PEER: redis-server could not be installed \
             (`apt-get install -y redis-server` failed)"
        );
    }
    found
}

/// A Redis server this harness started; killed when dropped.
#[derive(Debug)]
pub struct Redis {
    child: Child,
    pub port: u16,
    pub version: String,
    pub client: redis::Client,
    _dir: tempfile::TempDir,
}

/// The settings Redis is started with (recorded in the results).
pub const REDIS_SETTINGS: &[(&str, &str)] = &[
    ("bind", "127.0.0.1"),
    ("save", "\"\" (no snapshots)"),
    ("appendonly", "no"),
    ("protected-mode", "yes"),
];

impl Redis {
    /// Starts `binary` on a free loopback port with no persistence and waits
    /// until it answers; `None` (reason printed) when it cannot.
    pub async fn start(binary: &Path) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_loopback_port();
        let child = match Command::new(binary)
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
        let version = Command::new(binary)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .unwrap_or_default()
            .trim()
            .to_owned();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("redis url");
        let redis = Self {
            child,
            port,
            version,
            client,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            match redis.connection().await {
                Ok(_) => return Some(redis),
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => {
                    eprintln!("SKIPPING THE REDIS PEER: no connection to redis-server: {error}");
                    return None;
                }
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new multiplexed connection with no response timeout.
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Sets every key to [`REDIS_VALUE`] with pipelined MSETs of 1,024 keys,
    /// then checks `DBSIZE`.
    pub async fn load(&self, keys: &[Vec<u8>]) {
        let mut connection = self.connection().await.expect("redis connection");
        let loading = Instant::now();
        for chunk in keys.chunks(1024 * 64) {
            let mut pipe = redis::pipe();
            for part in chunk.chunks(1024) {
                let mut mset = redis::cmd("MSET");
                for key in part {
                    mset.arg(key).arg(REDIS_VALUE);
                }
                pipe.add_command(mset).ignore();
            }
            let () = pipe.query_async(&mut connection).await.expect("load Redis");
        }
        let size = self.dbsize().await;
        assert_eq!(size, keys.len() as u64, "keys in Redis");
        eprintln!(
            "Redis ({}) on 127.0.0.1:{}: loaded {size} keys in {:.2} s",
            self.version,
            self.port,
            loading.elapsed().as_secs_f64()
        );
    }

    /// Keys in the database.
    pub async fn dbsize(&self) -> u64 {
        let mut connection = self.connection().await.expect("redis connection");
        redis::cmd("DBSIZE")
            .query_async(&mut connection)
            .await
            .expect("DBSIZE")
    }

    /// A field of `INFO memory` (e.g. `used_memory`), in bytes.
    pub async fn memory(&self, field: &str) -> u64 {
        let mut connection = self.connection().await.expect("redis connection");
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut connection)
            .await
            .expect("INFO memory");
        info_field(&info, field).unwrap_or(0)
    }
}

/// A numeric field of Redis `INFO` output.
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
    })
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` holding `initdb` and
/// `postgres`, with `postgresql` installed from Debian when there is none;
/// `None` (reason printed) when it cannot be had.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let find = || {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                (bin.join("initdb").exists() && bin.join("postgres").exists())
                    .then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    };
    if let Some(bin) = find() {
        return Some(bin);
    }
    eprintln!("PostgreSQL missing");
    apt_install(&["postgresql"]);
    let found = find();
    if found.is_none() {
        eprintln!(
            "SKIPPING THE POSTGRESQL PEER: PostgreSQL could not be installed \
             (`apt-get install -y postgresql` failed)"
        );
    }
    found
}

/// uid and gid of the `postgres` account (created by Debian's package).
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// The settings the PostgreSQL peer is started with (`-c NAME=VALUE`):
/// durable commits as the issue asks, buffers the size of serialsvc's block
/// cache, and WAL room so that no checkpoint is forced by WAL size.
pub const POSTGRES_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("shared_buffers", "256MB"),
    ("max_wal_size", "4GB"),
    ("max_connections", "40"),
    // A bound on any one statement, so that a bad plan cannot hang the run.
    ("statement_timeout", "300s"),
];

/// A PostgreSQL cluster this harness created with `initdb` in a temporary
/// directory and started; stopped (`pg_ctl stop -m fast`, then killed) when
/// dropped.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    bin: PathBuf,
    data: PathBuf,
    account: Option<(u32, u32)>,
    pub port: u16,
    /// `SHOW` of the settings that matter, as the running server reports them.
    pub settings: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// A command that runs as the `postgres` account when this process is
    /// root (PostgreSQL refuses to run as root).
    fn command(bin: &Path, program: &str, account: Option<(u32, u32)>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(bin.join(program));
        if let Some((uid, gid)) = account {
            // The harness's own directory may be closed to that account.
            command
                .uid(uid)
                .gid(gid)
                .env("HOME", std::env::temp_dir())
                .current_dir(std::env::temp_dir());
        }
        command
    }

    /// Creates a cluster in a temporary directory (`initdb`, locale C,
    /// UTF-8, trust on loopback), starts it on a free loopback port with
    /// [`POSTGRES_SETTINGS`] and waits until it accepts connections.
    pub async fn start(bin: &Path) -> Result<Self, String> {
        let account = if running_as_root() {
            Some(postgres_account().ok_or("no postgres account in /etc/passwd")?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("serialsvc-peers-pg")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let init = Self::command(bin, "initdb", account)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !init.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr)
            ));
        }
        let port = free_loopback_port();
        let log_path = dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
        if let Some((uid, gid)) = account {
            let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
        }
        let mut command = Self::command(bin, "postgres", account);
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path());
        for (name, value) in POSTGRES_SETTINGS {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let mut postgres = Self {
            child,
            bin: bin.to_owned(),
            data,
            account,
            port,
            settings: Vec::new(),
            _dir: dir,
        };
        let started = Instant::now();
        let client = loop {
            match postgres.connect().await {
                Ok(client) => break client,
                Err(_) if started.elapsed() < Duration::from_secs(30) => {
                    if let Ok(Some(status)) = postgres.child.try_wait() {
                        return Err(format!(
                            "postgres exited ({status}): {}",
                            std::fs::read_to_string(&log_path).unwrap_or_default()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(format!("no connection to PostgreSQL: {error}")),
            }
        };
        for name in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "wal_level",
            "shared_buffers",
            "max_wal_size",
            "lc_collate",
        ] {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map_err(|e| format!("SHOW {name}: {e}"))?;
            postgres
                .settings
                .push((name.to_owned(), row.get::<_, String>(0)));
        }
        Ok(postgres)
    }

    /// The postmaster's process id (its backends are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A setting as the server reported it at start.
    pub fn setting(&self, name: &str) -> &str {
        self.settings
            .iter()
            .find(|(n, _)| n == name)
            .map_or("?", |(_, v)| v.as_str())
    }

    /// A new connection to the `postgres` database over loopback TCP; its
    /// connection task runs on the current tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("PostgreSQL connection: {error}");
            }
        });
        Ok(client)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = Self::command(&self.bin, "pg_ctl", self.account)
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_info_fields() {
        let info =
            "# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\nused_memory_rss:4096\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1024));
        assert_eq!(info_field(info, "used_memory_rss"), Some(4096));
        assert_eq!(info_field(info, "missing"), None);
    }
}
