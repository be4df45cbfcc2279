//! Benchmarks of serialsvc: see `benches/` for criterion benches and the
//! end-to-end harnesses. This library holds what the end-to-end harnesses
//! share: finding and starting the real `serialsvc` binary, and reading a
//! process's memory and CPU time from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A number from the environment, or `default` when unset or not a number.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `serialsvc` binary beside the running bench, in the release target
/// directory. Panics with the build command when it is missing.
pub fn server_binary() -> PathBuf {
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

/// Starts `serialsvc serve` on `dir` with every listener on a free loopback
/// port, waits until it logs that it is serving (status index rebuilt) and
/// returns the child and the gRPC endpoint (`http://127.0.0.1:PORT`). The
/// server's log goes to this process's standard error, prefixed
/// `[serialsvc]`; `log_env` names the variable that overrides its `RUST_LOG`
/// (default: warnings, plus the serve lines, which `start` needs). The
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
            std::env::var(log_env).unwrap_or("warn,serialsvc::serve=info".into()),
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
            return (child, format!("http://{address}"));
        }
    }
}

/// Peak resident memory (VmHWM) of a process, in bytes; 0 when unreadable.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
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

/// utime + stime of one `/proc/PID/stat` line; 0 when malformed.
fn stat_cpu_ticks(stat: &str) -> u64 {
    // The command name (field 2) may hold spaces: count from after its ')'.
    let Some(rest) = stat.rfind(')').map(|end| &stat[end + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// CPU time the whole machine has been busy so far (all cores, everything
/// but idle and iowait), in clock ticks (`/proc/stat`); 0 when unreadable.
/// Less the processes under test, it tells how much other load shared the
/// machine during a run.
pub fn machine_busy_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat").map_or(0, |stat| stat_busy_ticks(&stat))
}

fn stat_busy_ticks(stat: &str) -> u64 {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user and nice.
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// Deterministic, random-looking 12-character serials.
pub fn serial(n: u64) -> [u8; 12] {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut x = xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes());
    let mut out = [0u8; 12];
    for byte in out.iter_mut() {
        *byte = ALPHABET[(x & 31) as usize];
        x >>= 5;
    }
    out
}

/// Registers the benchmarked product `gtin` (company prefix of 7 digits,
/// EU FMD) and its lot `lot` expiring `expiry` (YYMMDD).
pub async fn register_product_and_lot(
    channel: tonic::transport::Channel,
    gtin: &str,
    lot: &str,
    expiry: &str,
) {
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
        assert!(clock_ticks_per_second() > 0.0);
    }

    #[test]
    fn busy_ticks_from_proc_stat() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n";
        assert_eq!(stat_busy_ticks(stat), 100 + 5 + 50 + 1 + 2 + 3);
    }
}
