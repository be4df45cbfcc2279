//! Serial generation, the hot path of pool requests: a pool of a million
//! serials must cost well under a second on one core. Run:
//! `cargo bench --profile release --workspace --bench generator`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use issuer::generator::SerialGenerator;
use issuer::profile::{MarketProfile, SerialFormat};
use std::hint::black_box;

/// Serials per measured iteration: large enough that refilling the 4 KiB
/// random block is amortised as it is in a real pool.
const BATCH: u64 = 10_000;

fn generation(c: &mut Criterion) {
    let formats = [
        ("eu-fmd", MarketProfile::EuFmd.default_format()),
        ("br-anvisa", MarketProfile::BrAnvisa.default_format()),
        ("sgtin-96", Some(SerialFormat::Sgtin96)),
        ("custom-abc-20", SerialFormat::custom("ABC", 20).ok()),
    ];
    let mut group = c.benchmark_group("serial_generator");
    group.throughput(Throughput::Elements(BATCH));
    for (name, format) in formats {
        let format = format.expect("built-in format");
        // Seeded so runs are comparable; the server seeds from the OS.
        let mut generator = SerialGenerator::from_seed([42; 32]);
        let mut out = Vec::with_capacity(BATCH as usize * 20);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..BATCH {
                    generator.generate(black_box(&format), &mut out);
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, generation);
criterion_main!(benches);
