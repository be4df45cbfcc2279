//! Disk full: the data directory is on a small loop-mounted ext4 file
//! system that a filler file fills up while clients work. Requests must fail
//! cleanly (no crash, no OK answer that is lost), and once the filler is
//! removed the service must recover by itself: pending writes resolve within
//! the bound, without a restart. Needs root and loop devices; fails with a
//! clear message without them.

use std::path::PathBuf;
use std::time::Duration;

use chaos_tests::loopfs::LoopFs;
use chaos_tests::process::Launch;
use chaos_tests::supervisor::{Settings, Supervisor};

/// How soon after space returns the service must answer OK again.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serialsvc-chaos"))
}

/// Fills the file system at `dir` with `filler`, leaving about `leave` bytes.
fn fill(dir: &std::path::Path, filler: &std::path::Path, leave: u64) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(filler).expect("create the filler");
    let block = vec![0xa5u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let free = available(dir);
        if free <= leave {
            break;
        }
        let chunk = (free - leave).min(block.len() as u64) as usize;
        match file.write_all(&block[..chunk]) {
            Ok(()) => written += chunk as u64,
            Err(_) => break,
        }
        let _ = file.sync_data();
    }
    written
}

fn available(dir: &std::path::Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Releases the preallocated blocks past the end of every WAL in `data`;
/// returns how many bytes that released.
fn release_wal_preallocation(data: &std::path::Path) -> u64 {
    let before = available(data);
    for entry in std::fs::read_dir(data).expect("read the data directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let size = std::fs::metadata(&path).expect("stat the WAL").len();
        // ext4 drops the blocks past the end on a truncate to the same size.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(size))
            .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
    }
    available(data).saturating_sub(before)
}

#[test]
fn a_full_disk_fails_requests_cleanly_and_the_service_recovers_when_space_returns() {
    let seed = chaos_tests::seed_or(4040);
    let fs = LoopFs::require(256);
    let data = fs.path().join("data");
    let filler = fs.path().join("filler");
    let mut supervisor = Supervisor::new(
        Settings::new("disk full", seed),
        Launch::new(binary(), &data),
    );
    supervisor.start().expect("the first start");
    supervisor.start_clients();
    let rounds = chaos_tests::rounds_or(2);
    for _ in 0..rounds {
        let run = supervisor.schedule.millis(500, 1500);
        supervisor.run_for(run);
        // RocksDB preallocates each WAL (fallocate, up to 1.1 × the 128 MiB
        // memtable), so a full disk would reach the commits only after that
        // much WAL. With the server stopped (SIGSTOP: no write in flight),
        // give the WAL's unwritten preallocation back, fill
        // the disk, and let the server go on.
        let server = supervisor.server().expect("a running server");
        server.pause().expect("SIGSTOP");
        let released = release_wal_preallocation(&data);
        let leave = supervisor.schedule.below(512) << 10;
        let written = fill(fs.path(), &filler, leave);
        let server = supervisor.server().expect("a running server");
        server.resume().expect("SIGCONT");
        supervisor.fault("disk full");
        eprintln!(
            "disk filled: {released} bytes of WAL preallocation released, {written} bytes of filler, {} bytes left",
            available(fs.path())
        );
        let ok_before = supervisor.ok_count();
        supervisor.run_for(Duration::from_secs(3));
        let ok_full = supervisor.ok_count() - ok_before;
        if let Some(server) = supervisor.server() {
            eprintln!(
                "while full: {ok_full} answers OK, {} bytes left",
                available(fs.path())
            );
            assert!(
                server.resident_bytes().is_some(),
                "the server died on a full disk:\n{}",
                server.log_tail()
            );
        }
        std::fs::remove_file(&filler).expect("remove the filler");
        // Space is back: the service must serve again by itself, within the bound.
        let returned = std::time::Instant::now();
        let ok_before = supervisor.ok_count();
        while supervisor.ok_count() == ok_before && returned.elapsed() < RECOVERY_BOUND {
            std::thread::sleep(Duration::from_millis(20));
        }
        let recovery = returned.elapsed();
        eprintln!(
            "after space returned: first OK answer after {:.2} s",
            recovery.as_secs_f64()
        );
        if recovery >= RECOVERY_BOUND {
            supervisor.violation(format!(
                "no OK answer within {RECOVERY_BOUND:?} after space returned"
            ));
        }
        supervisor.run_for(Duration::from_secs(1));
    }
    let report = supervisor.finish();
    drop(fs);
    report.assert_clean();
}
