//! Process-level fault tests of serialsvc, in the spirit of Jepsen and of
//! RocksDB's crash tests: run the real code in a child process, inject a fault
//! (today: `kill -9` at seeded random moments), then check the promises on what
//! survives. Issue 10 extends this with power loss, disk full, torn WALs,
//! stalls and hostile clients against the full server.
//!
//! Randomised tests print their seed; set `CHAOS_SEED=<n>` to replay one.

/// The seed for a randomised test: `CHAOS_SEED` if set, else fresh, printed either way.
pub fn seed() -> u64 {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SEED={text:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    eprintln!("chaos seed: {seed} (replay with CHAOS_SEED={seed})");
    seed
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
}
