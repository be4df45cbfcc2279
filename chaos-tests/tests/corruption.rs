//! Torn and garbage WAL tails, bit flips in the WAL and in SST files. After
//! work under concurrent clients and a kill -9, the data directory is damaged
//! offline and the server restarted. It must either recover everything
//! acknowledged (the checker runs on what it serves), or refuse to start with
//! an error that says the data is corrupt; it must never serve or issue from
//! corrupt state. A torn tail (what a crash leaves: the start of a record
//! that was never acknowledged) must be tolerated. Random bytes after the
//! last record are not what a crash leaves; RocksDB tolerates them when they
//! end inside the last WAL block and reports `bad record length` when they
//! cross into the next block, so for them a clear refusal is also right.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chaos_tests::Schedule;
use chaos_tests::process::Launch;
use chaos_tests::supervisor::{Settings, Supervisor};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serialsvc-chaos"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// A record header and half its payload appended: a write cut by the crash.
    TornTail,
    /// Random bytes appended after the last record.
    GarbageTail,
    /// One bit flipped inside the newest WAL's records.
    WalBitFlip,
    /// One bit flipped inside an SST file.
    SstBitFlip,
}

/// The files in `dir` with `extension`, sorted by name (RocksDB numbers them).
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the data directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

/// Applies `damage` to the data directory; returns what was done.
fn damage(dir: &Path, damage: Damage, schedule: &mut Schedule) -> String {
    use std::io::Write;
    let logs = files(dir, "log");
    let sizes: Vec<String> = logs
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let size = std::fs::metadata(p).map_or(0, |m| m.len());
            format!("{name} {size} B")
        })
        .collect();
    let wal = logs
        .iter()
        .rfind(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .cloned();
    match damage {
        Damage::TornTail | Damage::GarbageTail => {
            // Only the newest WAL can end in a write cut by a crash: the
            // older ones were complete (and synced) when RocksDB moved on,
            // so the tail goes there even when it is still empty (a memtable
            // switch just before the kill leaves a new, empty WAL).
            let wal = logs.last().cloned().expect("a WAL to damage");
            let mut tail = Vec::new();
            if damage == Damage::TornTail {
                // A record as RocksDB would have begun it, cut by the crash:
                // crc32 (wrong), length, type FULL, then half the payload.
                // RocksDB never lets a record cross a 32 KiB block: with
                // fewer than 7 bytes left it pads the block with zeros, and
                // a record's length fits what is left of its block (a length
                // reaching past the block is "bad record length", refused).
                const BLOCK: u64 = 32 * 1024;
                const HEADER: u64 = 7;
                let written = std::fs::metadata(&wal).map_or(0, |m| m.len());
                let mut left = BLOCK - written % BLOCK;
                if left < HEADER {
                    tail.extend(std::iter::repeat_n(0u8, left as usize));
                    left = BLOCK;
                }
                let length = (left - HEADER).min(1000);
                tail.extend_from_slice(&[0x5a, 0x5a, 0x5a, 0x5a]);
                tail.extend_from_slice(&(length as u16).to_le_bytes());
                tail.push(1);
                tail.extend((0..length.div_ceil(2)).map(|_| schedule.below(256) as u8));
            } else {
                let length = 1 + schedule.below(4096) as usize;
                tail.extend((0..length).map(|_| schedule.below(256) as u8));
            }
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&wal)
                .expect("open the WAL");
            file.write_all(&tail).expect("append to the WAL");
            file.sync_all().expect("sync the WAL");
            format!(
                "{:?}: {} bytes appended to {} (WALs: {})",
                damage,
                tail.len(),
                wal.display(),
                sizes.join(", ")
            )
        }
        Damage::WalBitFlip => {
            let wal = wal.expect("a non-empty WAL to damage");
            flip(&wal, schedule)
        }
        Damage::SstBitFlip => {
            let ssts = files(dir, "sst");
            assert!(!ssts.is_empty(), "no SST file to damage");
            let sst = &ssts[schedule.below(ssts.len() as u64) as usize];
            flip(sst, schedule)
        }
    }
}

fn flip(path: &Path, schedule: &mut Schedule) -> String {
    let mut bytes = std::fs::read(path).expect("read the file");
    let at = schedule.below(bytes.len() as u64) as usize;
    let bit = schedule.below(8) as u8;
    bytes[at] ^= 1 << bit;
    std::fs::write(path, &bytes).expect("write the file back");
    format!(
        "bit {bit} of byte {at} of {} ({} bytes) flipped",
        path.display(),
        bytes.len()
    )
}

/// Whether a start-up failure says plainly that the data is corrupt.
fn names_corruption(log: &str) -> bool {
    let log = log.to_lowercase();
    log.contains("corrupt") || log.contains("checksum")
}

fn damage_run(kind: Damage, seed: u64) {
    let dir = tempfile::tempdir().expect("data dir");
    let name = format!("corruption: {kind:?}");
    let mut supervisor = Supervisor::new(
        Settings::new(&name, seed),
        Launch::new(binary(), dir.path()),
    );
    supervisor.start().expect("the first start");
    supervisor.start_clients();
    // Two lives: the restart flushes the first life's WAL into SST files,
    // the second life leaves a WAL of its own.
    for _ in 0..2 {
        let run = supervisor.schedule.millis(700, 1500);
        supervisor.run_for(run);
        supervisor.kill9();
        supervisor.fault("kill -9");
        if !supervisor.start_or_violation() {
            break;
        }
    }
    supervisor.run_for(Duration::from_millis(800));
    supervisor.kill9();
    let mut schedule = Schedule::new(seed ^ 0x00c0_ffee);
    let what = damage(dir.path(), kind, &mut schedule);
    eprintln!("{what}");
    supervisor.fault(&format!("{kind:?}"));
    match supervisor.start() {
        Ok(()) => {
            // It serves: then everything acknowledged must be there and
            // right, unless a read met the damage later and the store
            // fail-stopped (writes refused, NOT_SERVING): then pending writes
            // cannot resolve, but nothing served may contradict the history.
            supervisor.run_for(Duration::from_millis(800));
            let report = supervisor.finish();
            if report.violations.is_empty() {
                report.assert_clean();
                eprintln!("{kind:?}: the server started and recovered ({what})");
                return;
            }
            report.publish();
            assert!(
                report.final_log.contains("fail-stopped") && names_corruption(&report.final_log),
                "violations without a fail-stop on corruption ({what}):\n{}\nlog:\n{}",
                report.violations.join("\n"),
                report.final_log
            );
            let wrong: Vec<&String> = report
                .violations
                .iter()
                .filter(|v| {
                    // Refusing to read the damage (a checksum error) is
                    // right; only an answer that contradicts the history is wrong.
                    !(v.contains("did not resolve")
                        || v.contains("never resolved")
                        || v.starts_with("replay of")
                        || names_corruption(v))
                })
                .collect();
            assert!(
                wrong.is_empty(),
                "after the fail-stop, answers contradicting the history ({what}): {wrong:?}"
            );
            eprintln!(
                "{kind:?}: the server started, met the damage on a read and fail-stopped ({what})"
            );
        }
        Err(failure) => {
            let tail_damage = kind == Damage::TornTail;
            let report = supervisor.abandon();
            report.assert_clean();
            assert!(
                !tail_damage,
                "a torn WAL tail (an unacknowledged write cut by a crash) must be \
                 tolerated, but the server refused to start ({what}): {failure}"
            );
            assert!(
                names_corruption(&failure.log),
                "the server refused to start without saying the data is corrupt ({what}): {failure}"
            );
            eprintln!("{kind:?}: the server refused to start, naming the corruption ({what})");
        }
    }
}

#[test]
fn a_torn_wal_tail_is_tolerated_and_nothing_acknowledged_is_lost() {
    let seed = chaos_tests::seed_or(3030);
    for round in 0..chaos_tests::rounds_or(1) {
        damage_run(Damage::TornTail, seed.wrapping_add(round));
    }
}

#[test]
fn a_garbage_wal_tail_is_tolerated_or_refused_clearly() {
    let seed = chaos_tests::seed_or(3031);
    for round in 0..chaos_tests::rounds_or(1) {
        damage_run(Damage::GarbageTail, seed.wrapping_add(round));
    }
}

#[test]
fn a_bit_flip_in_the_wal_is_recovered_from_or_refused_clearly() {
    let seed = chaos_tests::seed_or(3032);
    // Several positions: each must end one of the two acceptable ways.
    for round in 0..chaos_tests::rounds_or(3) {
        damage_run(Damage::WalBitFlip, seed.wrapping_add(round));
    }
}

#[test]
fn a_bit_flip_in_an_sst_file_is_recovered_from_or_refused_clearly() {
    let seed = chaos_tests::seed_or(3033);
    for round in 0..chaos_tests::rounds_or(3) {
        damage_run(Damage::SstBitFlip, seed.wrapping_add(round));
    }
}
