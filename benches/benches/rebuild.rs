//! Rebuilding the status index from RocksDB (issue 4, target ≥ 2,000,000
//! serials/s): writes `REBUILD_SERIALS` (default 10,000,000) serial records
//! straight into a fresh store (8 GTINs, 90 % commissioned with a lot, 10 %
//! allocated), reopens it, then times `issuer::rebuild_index` against its
//! floor in the same run: a bare scan of the same records (RocksDB iteration
//! and the envelope check, nothing else).
//!
//! Run: `cargo bench --profile release --workspace --bench rebuild`

use std::time::{Duration, Instant};

use benches::serial;
use issuer::records::{
    LotRecord, LotStatus, ProductRecord, SerialRecord, SerialState, StoredFormat,
};
use storage::{ChangeSet, Family, Store, keys, value};

const GTINS: u64 = 8;
const ROUNDS: usize = 3;
const COMMIT_SERIALS: u64 = 200_000;

fn gtin(n: u64) -> u64 {
    // Valid GTIN-14 values are not needed here: keys only carry the number.
    9_520_123_456_000 + (n % GTINS)
}

fn fill(store: &Store, count: u64) {
    let mut change = ChangeSet::new();
    for g in 0..GTINS {
        let product = ProductRecord {
            name: "bench".into(),
            company_prefix_length: 7,
            format: StoredFormat {
                profile: "eu-fmd".into(),
                alphabet: "23456789ABCDEFGHJKLMNPQRSTUVWXYZ".into(),
                length: 12,
            },
            ndc: None,
            guessing_rule_enforced: false,
            created_micros: 0,
            issued: count / GTINS,
            withdrawn: false,
            withdrawn_micros: 0,
            withdrawal_reason: String::new(),
        };
        change.put(Family::Products, keys::product(gtin(g)), product.stored());
        let lot = LotRecord {
            expiry: "301231".into(),
            status: LotStatus::Active,
            created_micros: 0,
            recalled_micros: 0,
            recall_reason: String::new(),
        };
        change.put(Family::Lots, keys::lot(gtin(g), b"LOT1"), lot.stored());
    }
    change.event(b"bench master data".to_vec());
    store.commit(change).expect("commit master data");
    let serial_envelope = |record: SerialRecord| {
        value::encode(issuer::records::SERIAL_RECORD_VERSION, &record.encode())
    };
    let active = serial_envelope(SerialRecord {
        state: SerialState::Active,
        pool_id: 1,
        lot: "LOT1".into(),
        ..SerialRecord::default()
    });
    let allocated = serial_envelope(SerialRecord {
        state: SerialState::Allocated,
        pool_id: 1,
        ..SerialRecord::default()
    });
    let mut n = 0;
    while n < count {
        let mut change = ChangeSet::new();
        let end = count.min(n + COMMIT_SERIALS);
        let mut batch: Vec<(Vec<u8>, bool)> = (n..end)
            .map(|i| (keys::serial(gtin(i), &serial(i)), i % 10 != 0))
            .collect();
        batch.sort_unstable();
        for (key, is_active) in batch {
            let value = if is_active {
                active.clone()
            } else {
                allocated.clone()
            };
            change.put(Family::Serials, key, value);
        }
        change.event(b"bench serials".to_vec());
        store.commit(change).expect("commit serials");
        n = end;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let count: u64 = std::env::var("REBUILD_SERIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    {
        let store = issuer::open_store(dir.path()).expect("open store");
        fill(&store, count);
        store.close().expect("close store");
    }
    eprintln!(
        "rebuild: wrote {count} serial records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let store = issuer::open_store(dir.path()).expect("reopen store");

    let mut scan_rates = Vec::new();
    let mut rebuild_rates = Vec::new();
    let mut bytes_per_serial = 0.0;
    for round in 0..ROUNDS {
        let started = Instant::now();
        let mut seen = 0u64;
        let prefix = [Family::Serials.prefix()];
        store
            .scan_prefix(Family::Serials, &prefix, &prefix, |_, _, payload| {
                seen += u64::from(!payload.is_empty());
                true
            })
            .expect("scan");
        let scan = started.elapsed();
        assert_eq!(seen, count);
        scan_rates.push(count as f64 / scan.as_secs_f64());

        let index = verifier::StatusIndex::new(4).expect("index");
        let started = Instant::now();
        let report = issuer::rebuild_index(&store, &index, |_| {}).expect("rebuild");
        let rebuild: Duration = started.elapsed();
        assert_eq!(report.serials, count);
        let stats = index.stats();
        bytes_per_serial = stats.table_bytes as f64 / stats.serials as f64;
        rebuild_rates.push(count as f64 / rebuild.as_secs_f64());
        eprintln!(
            "round {round}: bare scan {:.2} s, rebuild {:.2} s",
            scan.as_secs_f64(),
            rebuild.as_secs_f64()
        );
    }
    let scan = median(scan_rates);
    let rebuild = median(rebuild_rates);
    println!("serials                      {count}");
    println!("bare RocksDB scan (floor)    {scan:>12.0} serials/s");
    println!("index rebuild                {rebuild:>12.0} serials/s  (target 2,000,000)");
    println!("rebuild / bare scan          {:>12.2}", rebuild / scan);
    println!("index table bytes per serial {bytes_per_serial:>12.1}");
}
