//! `kill -9` against a process committing to the store: every commit it
//! acknowledged (printed after `Store::commit` returned) must be present after
//! reopening, and the event log must stay gap-free.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chaos_tests::Schedule;
use storage::{Family, Store};

const ROUNDS: u64 = 6;

fn writer_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chaos-writer"))
}

fn key(n: u64) -> Vec<u8> {
    storage::keys::serial(n % 1000, format!("N{n}").as_bytes())
}

/// Runs the writer until it has acknowledged at least `min_acks` commits, waits
/// a random extra time, kills it with SIGKILL and returns the highest number it
/// acknowledged.
fn run_and_kill(dir: &Path, start: u64, min_acks: u64, extra: Duration) -> Option<u64> {
    let mut child = Command::new(writer_binary())
        .arg(dir)
        .arg(start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chaos-writer");
    let stdout = child.stdout.take().expect("piped");
    let (acks, acked) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let ack = line
                .strip_prefix("ack ")
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = ack
                && acks.send(n).is_err()
            {
                break;
            }
        }
    });
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while last.is_none_or(|n| n + 1 < start + min_acks) && Instant::now() < deadline {
        if let Ok(n) = acked.recv_timeout(Duration::from_millis(100)) {
            last = Some(n);
        }
    }
    std::thread::sleep(extra);
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    // Acks printed before the kill are still in the pipe: read them all.
    while let Ok(n) = acked.recv_timeout(Duration::from_millis(500)) {
        last = Some(n);
    }
    last
}

#[test]
fn every_acknowledged_commit_survives_kill_9() {
    let mut schedule = Schedule::new(chaos_tests::seed_or(1000));
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let extra = Duration::from_millis(schedule.below(200));
        let min_acks = 1 + schedule.below(300);
        let acked = run_and_kill(dir.path(), next, min_acks, extra);
        let store = Store::open(dir.path()).expect("reopen after kill -9");
        if let Some(last) = acked {
            for n in next..=last {
                let stored = store.get(Family::Serials, &key(n)).expect("read");
                assert_eq!(
                    stored,
                    Some((1, n.to_be_bytes().to_vec())),
                    "round {round}: acknowledged commit {n} lost"
                );
            }
        }
        // Gap-free event log from 1 to its end, whatever was cut.
        let events = store.events_from(1, usize::MAX).expect("read events");
        for (index, event) in events.iter().enumerate() {
            assert_eq!(
                event.sequence,
                index as u64 + 1,
                "round {round}: gap in the event log"
            );
        }
        assert_eq!(store.next_event_sequence(), events.len() as u64 + 1);
        // Continue after the last durable record so keys never repeat.
        next = events.len() as u64;
        drop(store);
    }
}
