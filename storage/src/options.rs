//! The one place where RocksDB durability settings are chosen (DESIGN.md §3).
//!
//! A test below opens a real database and reads back what RocksDB applied, and
//! counts WAL syncs, so a careless edit here fails the build's tests.

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, DBRecoveryMode, Options, WriteOptions};

/// WAL recovery mode: a torn tail (a write that was never acknowledged because
/// its sync did not finish) is dropped; any other corruption refuses to open.
pub const WAL_RECOVERY_MODE: DBRecoveryMode = DBRecoveryMode::TolerateCorruptedTailRecords;

/// Every acknowledged write is fsynced to the WAL before the caller is answered.
pub const SYNC_ACKNOWLEDGED_WRITES: bool = true;

/// Bytes of the block cache shared by every column family.
pub const BLOCK_CACHE_BYTES: usize = 256 << 20;

/// Bytes of one memtable. Small on purpose: every serial key written goes
/// into a skip list whose search is a chain of cache misses, so its cost grows
/// with the memtable. With 128 MiB (about 1.5 million entries) commissioning
/// spent 2.7 µs per serial in its commit, with 8 MiB about 0.8 µs
/// (BENCHMARKS.md, issue 3). A full memtable is flushed by a background
/// thread; recent keys are then read from L0 files behind their bloom
/// filters. Its arena blocks (1 MiB) are mapped on their own
/// ([`crate::trim`]), so flushed memtables leave nothing resident.
pub const WRITE_BUFFER_BYTES: usize = 8 << 20;

/// Memtables of one family that may wait for their flush before writes stall.
pub const WRITE_BUFFERS_PER_FAMILY: i32 = 6;

/// L0 files that start a compaction into L1 (RocksDB's default is 4).
/// Serial keys are random, so every L0 file overlaps all of L1 and each
/// L0 → L1 compaction rewrites L1 whole: the more L0 files one compaction
/// takes, the fewer times L1 is rewritten. At 16, five rounds of pool_e2e
/// (15 M writes) cost 14.9–15.6 CPU-seconds of compaction; at 32, 10.9–11.8
/// (BENCHMARKS.md, issue 3, session 10). The cost is on point reads, which
/// probe each L0 file's bloom filter; the hot reads (verification, status
/// changes) are answered from the in-memory index, not from RocksDB.
pub const L0_COMPACTION_TRIGGER: i32 = 32;

/// L0 files at which writes are slowed down (RocksDB's default is 20).
pub const L0_SLOWDOWN_TRIGGER: i32 = 64;

/// L0 files at which writes stop until compaction catches up (default 36).
pub const L0_STOP_TRIGGER: i32 = 96;

/// Cap on all memtables of all column families together.
pub const WRITE_BUFFERS_TOTAL_BYTES: usize = 1 << 30;

/// Options for the database and every column family. `cache` is the block
/// cache shared by all of them.
pub fn db_options(cache: &Cache) -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Durability: WAL on (it is never disabled per write), flushed by RocksDB
    // itself on every write, recovered strictly.
    options.set_manual_wal_flush(false);
    options.set_paranoid_checks(true);
    options.set_wal_recovery_mode(WAL_RECOVERY_MODE);
    // Only LZ4 is compiled in (see the workspace Cargo.toml). The two top
    // levels stay uncompressed: they hold the hot, recently issued serials.
    options.set_compression_type(DBCompressionType::Lz4);
    let mut levels = [DBCompressionType::Lz4; 7];
    levels[0] = DBCompressionType::None;
    levels[1] = DBCompressionType::None;
    options.set_compression_per_level(&levels);
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options.set_max_write_buffer_number(WRITE_BUFFERS_PER_FAMILY);
    options.set_db_write_buffer_size(WRITE_BUFFERS_TOTAL_BYTES);
    options.set_max_background_jobs(2);
    // With small memtables and random serial keys every L0 file overlaps all
    // of L1, so each L0 → L1 compaction rewrites L1 whole: waiting for more
    // L0 files rewrites it less often (see L0_COMPACTION_TRIGGER).
    options.set_level_zero_file_num_compaction_trigger(L0_COMPACTION_TRIGGER);
    options.set_level_zero_slowdown_writes_trigger(L0_SLOWDOWN_TRIGGER);
    options.set_level_zero_stop_writes_trigger(L0_STOP_TRIGGER);
    options.set_bytes_per_sync(1 << 20);
    options.enable_statistics();
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_format_version(6);
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    options.set_block_based_table_factory(&table);
    options
}

/// Bytes of the key prefix under which the memtable keeps an insertion hint
/// in the serials family: the family tag and the GTIN ([`crate::keys::serial`]).
pub const SERIAL_HINT_PREFIX_BYTES: usize = 9;

/// `options` (from [`db_options`]) finished for `family`. The serials family
/// gets a memtable insertion hint per GTIN: RocksDB remembers where the last
/// key of each prefix went into the skip list and starts the next search
/// there, walking up only as far as needed (O(log d) for a key d entries
/// away, instead of O(log n) from the top). Pools, commissioning and
/// decommissioning write their serial keys sorted, so consecutive keys are
/// close. The option has no setter of its own in the Rust bindings; it is set
/// through RocksDB's options string, which keeps everything else of `options`.
pub fn finish_family_options(
    options: Options,
    family: crate::Family,
) -> Result<Options, rocksdb::Error> {
    if family != crate::Family::Serials {
        return Ok(options);
    }
    let mut options = options;
    options.get_options_from_string(format!(
        "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.{SERIAL_HINT_PREFIX_BYTES}"
    ))
}

/// Write options for every acknowledged write: synced WAL, WAL never disabled.
pub fn write_options() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(SYNC_ACKNOWLEDGED_WRITES);
    options.disable_wal(false);
    #[cfg(feature = "failpoints")]
    negative_controls(&mut options);
    options
}

/// The chaos tests' negative controls, compiled only with the `failpoints`
/// feature: fail point `storage.wal.no_sync` (action `return`) acknowledges
/// writes without syncing the WAL, `storage.wal.skip` acknowledges them
/// before anything is durable (the WAL is not written at all). Each must
/// make the power-loss or kill -9 tests fail.
#[cfg(feature = "failpoints")]
fn negative_controls(options: &mut WriteOptions) {
    if fail::eval("storage.wal.no_sync", |_| ()).is_some() {
        options.set_sync(false);
    }
    if fail::eval("storage.wal.skip", |_| ()).is_some() {
        // RocksDB refuses a synced write without the WAL.
        options.set_sync(false);
        options.disable_wal(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangeSet, Family, Store};

    /// Reads the newest OPTIONS file RocksDB wrote, i.e. what it really applied.
    fn applied_options(dir: &std::path::Path) -> String {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("OPTIONS-"))
            })
            .collect();
        files.sort();
        std::fs::read_to_string(files.last().expect("an OPTIONS file")).unwrap()
    }

    /// What RocksDB applied when a new store was opened (and closed again).
    fn options_of_a_new_store() -> String {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let applied = applied_options(dir.path());
        drop(store);
        applied
    }

    #[test]
    fn rocksdb_applies_the_durable_settings() {
        let applied = options_of_a_new_store();
        for expected in [
            "paranoid_checks=true",
            "manual_wal_flush=false",
            "wal_recovery_mode=kTolerateCorruptedTailRecords",
        ] {
            assert!(applied.contains(expected), "OPTIONS lacks {expected}");
        }
    }

    #[test]
    fn every_family_waits_for_sixteen_l0_files_before_compacting() {
        let applied = options_of_a_new_store();
        let families = applied.matches("[CFOptions ").count();
        assert!(families >= Family::ALL.len(), "{applied}");
        for (key, value) in [
            ("level0_file_num_compaction_trigger", L0_COMPACTION_TRIGGER),
            ("level0_slowdown_writes_trigger", L0_SLOWDOWN_TRIGGER),
            ("level0_stop_writes_trigger", L0_STOP_TRIGGER),
        ] {
            let setting = format!("{key}={value}");
            assert!(
                applied.matches(&setting).count() >= Family::ALL.len(),
                "not every family has {setting}"
            );
        }
    }

    #[test]
    fn the_serials_family_keeps_an_insertion_hint_per_gtin() {
        let applied = options_of_a_new_store();
        let expected = format!(
            "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.{SERIAL_HINT_PREFIX_BYTES}"
        );
        let sections: Vec<&str> = applied.split("[CFOptions ").collect();
        let serials = sections
            .iter()
            .find(|s| s.starts_with("\"serials\""))
            .expect("a serials section");
        assert!(serials.contains(&expected), "serials lacks {expected}");
        let meta = sections
            .iter()
            .find(|s| s.starts_with("\"meta\""))
            .expect("a meta section");
        assert!(
            !meta.contains(&expected),
            "only the serials family has the hint"
        );
    }

    #[test]
    fn every_commit_syncs_the_wal() {
        const { assert!(SYNC_ACKNOWLEDGED_WRITES) };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let before = store.wal_syncs();
        for i in 0..3u8 {
            let mut change = ChangeSet::new();
            change.put(Family::Meta, vec![b'M', b't', i], vec![i]);
            change.event(vec![i]);
            store.commit(change).unwrap();
        }
        assert!(
            store.wal_syncs() >= before + 3,
            "expected one WAL sync per commit, saw {} -> {}",
            before,
            store.wal_syncs()
        );
    }
}
