//! kill -9 against the full server under concurrent clients: at random
//! moments, and at precise points just before and just after the RocksDB
//! write of a commit (fail points). Then the negative control: with writes
//! acknowledged before they are durable (`storage.wal.skip`), the same test
//! must find lost acknowledgements.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chaos_tests::process::Launch;
use chaos_tests::supervisor::{Report, Settings, Supervisor};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serialsvc-chaos"))
}

/// The fail points a precise kill stops at: before the write (nothing
/// durable, nothing answered) and after it (durable, never answered).
const POINTS: [&str; 2] = ["storage.commit.before_write", "storage.commit.after_write"];

fn kill_run(
    name: &str,
    seed: u64,
    faults_env: &[(&str, &str)],
    duration: Duration,
    rounds_min: u32,
) -> Report {
    let dir = tempfile::tempdir().expect("data dir");
    let base: Vec<(String, String)> = faults_env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut launch = Launch::new(binary(), dir.path());
    launch.env = base.clone();
    let mut supervisor = Supervisor::new(Settings::new(name, seed), launch);
    supervisor.start().expect("the first start");
    supervisor.start_clients();
    let end = Instant::now() + duration;
    let mut round = 0;
    while round < rounds_min || Instant::now() < end {
        round += 1;
        if round > 1 {
            // The server was killed in the round before: start it again,
            // with a kill point half of the time.
            let mode = supervisor.schedule.below(3);
            let mut env = base.clone();
            if mode > 0 {
                let point = POINTS[(mode - 1) as usize];
                let pass = 1 + supervisor.schedule.below(60);
                env.push(("CHAOS_KILL_AT".into(), format!("{point}@{pass}")));
            }
            supervisor.launch_mut().env = env;
            if !supervisor.start_or_violation() {
                break;
            }
            // A kill point not reached in time (few commits) becomes a kill
            // at a random moment.
            if mode > 0 && supervisor.wait_exit(Duration::from_secs(10)) {
                supervisor.fault(&format!("kill -9 at {}", POINTS[(mode - 1) as usize]));
                continue;
            }
        }
        let run = supervisor.schedule.millis(200, 1500);
        supervisor.run_for(run);
        supervisor.kill9();
        supervisor.fault("kill -9 at a random moment");
    }
    supervisor.launch_mut().env = base;
    if supervisor.start_or_violation() {
        supervisor.run_for(Duration::from_millis(300));
    }
    supervisor.finish()
}

#[test]
fn acknowledged_work_survives_kill_9_at_random_moments_and_at_commit_points() {
    let seed = chaos_tests::seed_or(1010);
    let duration = chaos_tests::duration_or(Duration::from_secs(20));
    kill_run("kill -9", seed, &[], duration, 6).assert_clean();
}

#[test]
fn negative_control_acknowledging_before_durable_is_caught_by_the_kill_test() {
    let seed = chaos_tests::seed_or(1011);
    kill_run(
        "kill -9, negative control: ack before durable (storage.wal.skip)",
        seed,
        &[("FAILPOINTS", "storage.wal.skip=return")],
        Duration::from_secs(2),
        2,
    )
    .assert_caught();
}
