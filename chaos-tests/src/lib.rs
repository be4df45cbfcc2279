//! Process-level fault tests of serialsvc, in the spirit of Jepsen and of
//! RocksDB's crash tests. A [`supervisor::Supervisor`] runs the real server
//! (`serialsvc-chaos`, the server with fail points) as a child process on
//! loopback, drives concurrent clients that request pools, commission,
//! decommission and verify, records a [`history::History`] of every attempt,
//! and injects faults from a seeded [`Schedule`]: kill -9 at random moments
//! and at fail points, power loss on a loop-mounted ext4 image, corrupt WAL
//! and SST files, a full disk, stalls, and hostile clients. The checker then
//! proves the README's promises on what survives.
//!
//! This crate depends on `storage` with its `failpoints` feature; the README's
//! build of `serialsvc` (`-p serialsvc -p serialctl`) does not select this
//! crate and so has no fail points. Randomised tests print their seed; set
//! `TEST_SEED=<n>` (or `CHAOS_SEED`) to replay one.

pub mod auth;
pub mod history;
pub mod loopfs;
pub mod ops;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod supervisor;
pub mod sys;

/// The seed for a randomised test: `TEST_SEED` (or `CHAOS_SEED`) if set,
/// else fresh; printed either way.
pub fn seed() -> u64 {
    let set = std::env::var("TEST_SEED").or_else(|_| std::env::var("CHAOS_SEED"));
    let seed = match set {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("TEST_SEED={text:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    eprintln!("chaos seed: {seed} (replay with TEST_SEED={seed})");
    seed
}

/// The seed of the CI profile: `TEST_SEED` if set, else `fixed`.
pub fn seed_or(fixed: u64) -> u64 {
    let seed = std::env::var("TEST_SEED")
        .or_else(|_| std::env::var("CHAOS_SEED"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fixed);
    eprintln!("chaos seed: {seed} (replay with TEST_SEED={seed})");
    seed
}

/// The length of a scenario's fault phase: `CHAOS_DURATION` seconds (the long
/// profile, `scripts/chaos`) or `ci` (the short fixed-seed profile).
pub fn duration_or(ci: std::time::Duration) -> std::time::Duration {
    std::env::var("CHAOS_DURATION")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(ci)
}

/// Rounds of a round-based scenario: `ci` in the CI profile; in the long
/// profile (`CHAOS_DURATION` set) one per 30 s of it, at least `ci`.
pub fn rounds_or(ci: u64) -> u64 {
    std::env::var("CHAOS_DURATION")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(ci, |seconds| (seconds / 30).max(ci))
}

/// A small deterministic generator (SplitMix64) for fault schedules; not for serials.
#[derive(Debug, Clone)]
pub struct Schedule(u64);

impl Schedule {
    /// A schedule from a seed.
    pub fn new(seed: u64) -> Self {
        Schedule(seed)
    }

    /// The next value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }

    /// A duration uniformly in `low..high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> std::time::Duration {
        std::time::Duration::from_millis(low + self.below(high.saturating_sub(low).max(1)))
    }
}
