//! In-process kernels: storage key and value encodings (gs1 parsing joins when
//! the parsers land). Run: `cargo bench -p benches --bench codecs`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn storage_codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(1));
    group.bench_function("serial_key", |b| {
        b.iter(|| {
            storage::keys::serial(black_box(9_520_123_456_788), black_box(b"A1B2C3D4E5F6G7H8"))
        })
    });
    let value = storage::value::encode(1, &[7u8; 48]);
    group.bench_function("value_envelope_decode_48B", |b| {
        b.iter(|| storage::value::decode(black_box(&value)))
    });
    group.finish();
}

criterion_group!(benches, storage_codecs);
criterion_main!(benches);
