//! The status index in process: lookups per second with 10,000,000 serials
//! loaded (one thread and every core), bytes per serial, and build rate;
//! compared in the same run with two peers on the same keys and batches:
//! what a user would assemble from the standard library, a std
//! `HashMap<(u64, String), u64>` behind a `parking_lot::RwLock`; and the
//! plain baseline of issue 9, a `hashbrown::HashMap<(u64, [u8; 12]), u64>`
//! (foldhash, no lock, no allocation per lookup, judging nothing), read by
//! every thread at once.
//!
//! Run: `cargo bench --profile release --workspace --bench index`
//! (`INDEX_SERIALS=N` changes the 10,000,000).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::serial;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gs1::Expiry;
use verifier::{Given, PackState, Purpose, Query, SerialEntry, StatusIndex, today_utc};

const GTINS: u64 = 8;
const BATCH: usize = 1024;

fn serial_count() -> usize {
    std::env::var("INDEX_SERIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn gtin(n: u64) -> u64 {
    9_520_123_456_000 + (n % GTINS)
}

struct Loaded {
    index: StatusIndex,
    serials: Vec<[u8; 12]>,
}

fn load(count: usize) -> (Loaded, Duration) {
    let secret: Vec<u8> = (0..192u32).map(|i| (i * 31 + 17) as u8).collect();
    let index = StatusIndex::with_secret(4, secret);
    let mut lots = Vec::new();
    for g in 0..GTINS {
        index.put_product(gtin(g), (g % 4) as usize, false);
        lots.push(
            index
                .put_lot(
                    gtin(g),
                    "LOT1",
                    Expiry::new("301231").unwrap_or_else(|_| unreachable!()),
                    false,
                )
                .unwrap_or_else(|_| unreachable!()),
        );
    }
    let serials: Vec<[u8; 12]> = (0..count as u64).map(serial).collect();
    let started = Instant::now();
    for g in 0..GTINS {
        let entry = SerialEntry {
            state: PackState::Active,
            reason: 0,
            flags: 0,
            lot: Some(lots[g as usize]),
        };
        let _ = index.put_serials(
            gtin(g),
            serials
                .iter()
                .enumerate()
                .filter(|(n, _)| *n as u64 % GTINS == g)
                .map(|(_, s)| (&s[..], entry)),
        );
    }
    (Loaded { index, serials }, started.elapsed())
}

fn queries(serials: &[[u8; 12]], seed: u64, count: usize) -> Vec<(u64, [u8; 12])> {
    (0..count as u64)
        .map(|i| {
            let n = xxhash_rust::xxh3::xxh3_64(&(i ^ seed).to_le_bytes()) % serials.len() as u64;
            (gtin(n), serials[n as usize])
        })
        .collect()
}

fn run_batches(
    index: &StatusIndex,
    keys: &[(u64, [u8; 12])],
    out: &mut Vec<verifier::Verdict>,
) -> usize {
    let today = today_utc();
    let mut found = 0;
    for batch in keys.chunks(BATCH) {
        let queries: Vec<Query<'_>> = batch
            .iter()
            .map(|(gtin, serial)| Query {
                gtin: *gtin,
                serial,
                given: Given {
                    lot: Some("LOT1"),
                    expiry: None,
                },
            })
            .collect();
        out.clear();
        index
            .view()
            .verify_many(&queries, today, Purpose::Verify, out);
        found += out.iter().filter(|v| v.verified).count();
    }
    found
}

fn index_bench(c: &mut Criterion) {
    let count = serial_count();
    let (loaded, build) = load(count);
    let stats = loaded.index.stats();
    eprintln!(
        "index: {} serials built in {:.2} s ({:.0} serials/s); {} slots, {:.1} bytes per serial (tables)",
        stats.serials,
        build.as_secs_f64(),
        stats.serials as f64 / build.as_secs_f64(),
        stats.slots,
        stats.table_bytes as f64 / stats.serials as f64
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let keys = queries(&loaded.serials, 1, 1 << 20);

    let mut group = c.benchmark_group("index_lookup");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("verify_many_1024_one_thread", |b| {
        let mut out = Vec::with_capacity(BATCH);
        let mut offset = 0;
        b.iter(|| {
            let batch = &keys[offset..offset + BATCH];
            offset = (offset + BATCH) % (keys.len() - BATCH);
            black_box(run_batches(&loaded.index, batch, &mut out))
        })
    });
    group.bench_function(format!("verify_many_1024_{threads}_threads"), |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let keys = &keys;
                    let index = &loaded.index;
                    scope.spawn(move || {
                        let mut out = Vec::with_capacity(BATCH);
                        // Each thread does `iters / threads` batches: the
                        // time is for `iters` batches across all threads.
                        let per = (iters as usize).div_ceil(threads);
                        for i in 0..per {
                            let offset = ((i * threads + t) * BATCH) % (keys.len() - BATCH);
                            black_box(run_batches(index, &keys[offset..offset + BATCH], &mut out));
                        }
                    });
                }
            });
            started.elapsed()
        })
    });

    // The peer: what a user would assemble from the standard library.
    let peer_started = Instant::now();
    let mut map: HashMap<(u64, String), u64> = HashMap::with_capacity(count);
    for (n, s) in loaded.serials.iter().enumerate() {
        map.insert((gtin(n as u64), String::from_utf8_lossy(s).into_owned()), 2);
    }
    let peer_build = peer_started.elapsed();
    eprintln!(
        "peer HashMap: built in {:.2} s ({:.0} serials/s)",
        peer_build.as_secs_f64(),
        count as f64 / peer_build.as_secs_f64()
    );
    let peer = parking_lot::RwLock::new(map);
    group.bench_function(format!("peer_rwlock_hashmap_1024_{threads}_threads"), |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let keys = &keys;
                    let peer = &peer;
                    scope.spawn(move || {
                        let per = (iters as usize).div_ceil(threads);
                        let mut found = 0usize;
                        for i in 0..per {
                            let offset = ((i * threads + t) * BATCH) % (keys.len() - BATCH);
                            let map = peer.read();
                            for (gtin, serial) in &keys[offset..offset + BATCH] {
                                let key = (*gtin, String::from_utf8_lossy(serial).into_owned());
                                found += usize::from(map.get(&key).is_some());
                            }
                        }
                        black_box(found);
                    });
                }
            });
            started.elapsed()
        })
    });

    // The plain baseline: hashbrown with its default hasher, fixed-size keys.
    drop(peer);
    let plain_started = Instant::now();
    let mut plain: hashbrown::HashMap<(u64, [u8; 12]), u64> =
        hashbrown::HashMap::with_capacity(count);
    for (n, s) in loaded.serials.iter().enumerate() {
        plain.insert((gtin(n as u64), *s), 2);
    }
    let plain_build = plain_started.elapsed();
    eprintln!(
        "peer hashbrown: built in {:.2} s ({:.0} serials/s), {:.1} bytes per serial (capacity {} × {} bytes + control)",
        plain_build.as_secs_f64(),
        count as f64 / plain_build.as_secs_f64(),
        (plain.capacity() * (std::mem::size_of::<((u64, [u8; 12]), u64)>() + 1)) as f64
            / count as f64,
        plain.capacity(),
        std::mem::size_of::<((u64, [u8; 12]), u64)>()
    );
    let plain = &plain;
    group.bench_function("peer_hashbrown_1024_one_thread", |b| {
        let mut offset = 0;
        b.iter(|| {
            let batch = &keys[offset..offset + BATCH];
            offset = (offset + BATCH) % (keys.len() - BATCH);
            black_box(batch.iter().filter(|key| plain.contains_key(*key)).count())
        })
    });
    group.bench_function(format!("peer_hashbrown_1024_{threads}_threads"), |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let keys = &keys;
                    scope.spawn(move || {
                        let per = (iters as usize).div_ceil(threads);
                        let mut found = 0usize;
                        for i in 0..per {
                            let offset = ((i * threads + t) * BATCH) % (keys.len() - BATCH);
                            for key in &keys[offset..offset + BATCH] {
                                found += usize::from(plain.get(key).is_some());
                            }
                        }
                        black_box(found);
                    });
                }
            });
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, index_bench);
criterion_main!(benches);
