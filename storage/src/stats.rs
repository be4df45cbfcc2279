//! Figures about the open database for operators: RocksDB properties summed
//! over every column family, the commit and WAL-sync statistics RocksDB keeps
//! since open, and the free space of the file system holding the data.
//!
//! Reading them takes a few microseconds per family and no lock on the write
//! path; the server polls them every few seconds and publishes them as
//! metrics. Nothing here knows of any metrics crate.

use rocksdb::properties;
use rocksdb::statistics::{Histogram, Ticker};

use crate::{Family, StorageError, Store};

/// One reading of the database figures. Counters (`*_total`) count since the
/// store was opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreFigures {
    /// Estimated bytes of live data (`rocksdb.estimate-live-data-size`), all families.
    pub live_data_bytes: u64,
    /// Bytes of SST files (`rocksdb.total-sst-files-size`), all families.
    pub sst_files_bytes: u64,
    /// Bytes in memtables, active and immutable (`rocksdb.cur-size-all-mem-tables`).
    pub memtable_bytes: u64,
    /// Bytes compaction has still to rewrite (`rocksdb.estimate-pending-compaction-bytes`).
    pub pending_compaction_bytes: u64,
    /// Estimated keys (`rocksdb.estimate-num-keys`), all families.
    pub keys_estimate: u64,
    /// Whether RocksDB has stopped writes (`rocksdb.is-write-stopped`).
    pub write_stopped: bool,
    /// Write rate RocksDB currently throttles to, bytes per second; 0 = not delayed
    /// (`rocksdb.actual-delayed-write-rate`).
    pub delayed_write_rate_bytes: u64,
    /// Time writers spent stalled by RocksDB, microseconds (`rocksdb.stall.micros`).
    pub stall_micros_total: u64,
    /// Write batches committed (`rocksdb.db.write.micros` count).
    pub commits_total: u64,
    /// Time spent committing them, microseconds (`rocksdb.db.write.micros` sum).
    pub commit_micros_total: u64,
    /// Bytes they carried (`rocksdb.bytes.per.write` sum).
    pub commit_bytes_total: u64,
    /// WAL fsyncs (`rocksdb.wal.synced`); one fsync can cover a group of commits.
    pub wal_syncs_total: u64,
    /// Time spent in WAL fsyncs, microseconds (`rocksdb.wal.file.sync.micros` sum).
    pub wal_sync_micros_total: u64,
}

/// Free and total bytes of the file system holding the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes available to an unprivileged writer.
    pub available_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
}

/// Reads the database figures of `store`.
pub fn figures(store: &Store) -> Result<StoreFigures, StorageError> {
    let (db, options) = store.parts();
    let mut figures = StoreFigures::default();
    for family in Family::ALL {
        let Some(cf) = db.cf_handle(family.name()) else {
            continue;
        };
        let read = |name: &rocksdb::properties::PropName| -> Result<u64, StorageError> {
            Ok(db.property_int_value_cf(cf, name)?.unwrap_or(0))
        };
        figures.live_data_bytes += read(properties::ESTIMATE_LIVE_DATA_SIZE)?;
        figures.sst_files_bytes += read(properties::TOTAL_SST_FILES_SIZE)?;
        figures.memtable_bytes += read(properties::CUR_SIZE_ALL_MEM_TABLES)?;
        figures.pending_compaction_bytes += read(properties::ESTIMATE_PENDING_COMPACTION_BYTES)?;
        figures.keys_estimate += read(properties::ESTIMATE_NUM_KEYS)?;
    }
    figures.write_stopped = db
        .property_int_value(properties::IS_WRITE_STOPPED)?
        .unwrap_or(0)
        != 0;
    figures.delayed_write_rate_bytes = db
        .property_int_value(properties::ACTUAL_DELAYED_WRITE_RATE)?
        .unwrap_or(0);
    figures.stall_micros_total = options.get_ticker_count(Ticker::StallMicros);
    let writes = options.get_histogram_data(Histogram::DbWrite);
    figures.commits_total = writes.count();
    figures.commit_micros_total = writes.sum();
    figures.commit_bytes_total = options.get_histogram_data(Histogram::BytesPerWrite).sum();
    figures.wal_syncs_total = options.get_ticker_count(Ticker::WalFileSynced);
    figures.wal_sync_micros_total = options
        .get_histogram_data(Histogram::WalFileSyncMicros)
        .sum();
    Ok(figures)
}

/// Free and total bytes of the file system holding the store's data directory.
pub fn disk_space(store: &Store) -> std::io::Result<DiskSpace> {
    let stat = rustix::fs::statvfs(store.path())?;
    let block = stat.f_frsize;
    Ok(DiskSpace {
        available_bytes: stat.f_bavail.saturating_mul(block),
        total_bytes: stat.f_blocks.saturating_mul(block),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChangeSet;

    #[test]
    fn figures_follow_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let before = figures(&store).expect("figures");
        for index in 0..10u8 {
            let mut change = ChangeSet::new();
            change.put(Family::Meta, vec![b'x', index], vec![0; 1000]);
            change.event(vec![index]);
            store.commit(change).expect("commit");
        }
        let after = figures(&store).expect("figures");
        assert!(
            after.commits_total >= before.commits_total + 10,
            "{after:?}"
        );
        assert!(after.commit_bytes_total >= before.commit_bytes_total + 10_000);
        assert!(after.wal_syncs_total >= before.wal_syncs_total + 10);
        assert!(after.commit_micros_total > before.commit_micros_total);
        assert!(after.memtable_bytes > 0);
        assert!(!after.write_stopped);
        assert!(after.keys_estimate >= 10);
    }

    #[test]
    fn disk_space_is_plausible() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let space = disk_space(&store).expect("statvfs");
        assert!(space.total_bytes > 0);
        assert!(space.available_bytes <= space.total_bytes);
    }
}
