//! In-process kernels: GS1 parsing of each input form, and the storage key and
//! value encodings. Run: `cargo bench -p benches --bench codecs`.

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

fn gs1_parsing(c: &mut Criterion) {
    let inputs: [(&str, &[u8]); 4] = [
        (
            "element_string",
            b"]d201095201234567881725123110ABC123\x1d21XYZ",
        ),
        (
            "bracketed",
            b"(01)09520123456788(17)251231(10)ABC123(21)XYZ",
        ),
        (
            "digital_link",
            b"https://id.gs1.org/01/09520123456788/10/ABC123/21/XYZ?17=251231",
        ),
        ("epc_uri", b"urn:epc:id:sgtin:0614141.812345.6789"),
    ];
    let mut group = c.benchmark_group("gs1_parse_any");
    group.throughput(Throughput::Elements(1));
    for (name, input) in inputs {
        assert!(gs1::parse_any(input).is_ok(), "{name} must parse");
        group.bench_function(name, |b| b.iter(|| gs1::parse_any(black_box(input))));
    }
    group.finish();
}

criterion_group!(benches, gs1_parsing, storage_codecs);
criterion_main!(benches);
