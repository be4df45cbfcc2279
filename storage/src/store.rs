//! The store: opening with the format check, committing change sets, reading.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, WriteBatch};

use crate::keys::{self, Family};
use crate::value::{self, EventRecord};
use crate::{StorageError, options};

/// Storage format version written by this build. Bump it (and write a
/// migration) whenever a key or value encoding changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_VERSION_KEY: &str = "format_version";
const META_VALUE_VERSION: u8 = 1;

/// Limits on one change set, so a single request cannot build an unbounded batch.
pub const CHANGE_SET_OPERATIONS_MAX: usize = 4_000_000;

/// A set of puts and deletes plus the events that report them, committed
/// atomically by [`Store::commit`] in one synced `WriteBatch`.
#[derive(Debug, Default)]
pub struct ChangeSet {
    puts: Vec<(Family, Vec<u8>, Vec<u8>)>,
    deletes: Vec<(Family, Vec<u8>)>,
    events: Vec<Vec<u8>>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` under `key` in `family`. `Family::Events` is refused at
    /// commit: events are added with [`ChangeSet::event`] so they get sequence numbers.
    pub fn put(&mut self, family: Family, key: Vec<u8>, value: Vec<u8>) {
        self.puts.push((family, key, value));
    }

    /// Deletes `key` from `family`.
    pub fn delete(&mut self, family: Family, key: Vec<u8>) {
        self.deletes.push((family, key));
    }

    /// Appends an event (the writer's encoding); it receives the next sequence number.
    pub fn event(&mut self, body: Vec<u8>) {
        self.events.push(body);
    }

    /// Number of puts, deletes and events.
    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len() + self.events.len()
    }

    /// True when nothing would be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn validate(&self) -> Result<(), StorageError> {
        if self.events.is_empty() {
            return Err(StorageError::InvalidChangeSet(
                "every state change must carry at least one event",
            ));
        }
        if self.len() > CHANGE_SET_OPERATIONS_MAX {
            return Err(StorageError::InvalidChangeSet(
                "change set exceeds its operation limit",
            ));
        }
        let touches_events = self
            .puts
            .iter()
            .map(|(f, ..)| f)
            .chain(self.deletes.iter().map(|(f, _)| f));
        if touches_events.into_iter().any(|f| *f == Family::Events) {
            return Err(StorageError::InvalidChangeSet(
                "events are written only through ChangeSet::event",
            ));
        }
        Ok(())
    }
}

/// A stored payload with its envelope version.
pub type Versioned = (u8, Vec<u8>);

/// What a successful commit assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitReceipt {
    /// Sequence number of the first event of the change set.
    pub first_sequence: u64,
    /// Sequence number of the last event of the change set.
    pub last_sequence: u64,
    /// Commit time recorded in the events, microseconds since the Unix epoch.
    pub time_micros: u64,
}

/// An open serialsvc data directory.
pub struct Store {
    db: DB,
    path: PathBuf,
    options: rocksdb::Options,
    /// Next event sequence number; the lock also orders commits so that
    /// sequence order is commit order (gap-free for readers of the log).
    next_sequence: Mutex<u64>,
    /// Set on the first write error or detected corruption: writes stop.
    fail_stop: Mutex<Option<String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the data directory at `path`, checks its
    /// format version and recovers the event sequence.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let cache = rocksdb::Cache::new_lru_cache(options::BLOCK_CACHE_BYTES);
        let options = options::db_options(&cache);
        let descriptors = Family::ALL
            .iter()
            .map(|f| ColumnFamilyDescriptor::new(f.name(), options::db_options(&cache)));
        let db = DB::open_cf_descriptors(&options, path, descriptors)?;
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            options,
            next_sequence: Mutex::new(1),
            fail_stop: Mutex::new(None),
        };
        store.check_format_version()?;
        let last = store.last_event_sequence()?;
        *store.next_sequence.get_mut() = last + 1;
        tracing::info!(path = %path.display(), format_version = FORMAT_VERSION, last_event_sequence = last, "storage opened");
        Ok(store)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, family: Family) -> &rocksdb::ColumnFamily {
        // Every family is opened in `open`; a missing handle is a bug here.
        self.db
            .cf_handle(family.name())
            .unwrap_or_else(|| unreachable!("column family {} opened at start", family.name()))
    }

    fn check_format_version(&self) -> Result<(), StorageError> {
        let key = keys::meta(FORMAT_VERSION_KEY);
        match self.db.get_cf(self.cf(Family::Meta), &key)? {
            Some(stored) => {
                let found = decode_format_version(&stored)?;
                if found != FORMAT_VERSION {
                    return Err(StorageError::UnsupportedFormatVersion {
                        path: self.path.clone(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                Ok(())
            }
            None if self.holds_any_data()? => Err(StorageError::MissingFormatVersion {
                path: self.path.clone(),
            }),
            None => {
                let value = value::encode(META_VALUE_VERSION, &FORMAT_VERSION.to_be_bytes());
                self.db
                    .put_cf_opt(self.cf(Family::Meta), key, value, &options::write_options())?;
                Ok(())
            }
        }
    }

    fn holds_any_data(&self) -> Result<bool, StorageError> {
        for family in Family::ALL {
            if let Some(item) = self
                .db
                .iterator_cf(self.cf(family), IteratorMode::Start)
                .next()
            {
                item?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn last_event_sequence(&self) -> Result<u64, StorageError> {
        match self
            .db
            .iterator_cf(self.cf(Family::Events), IteratorMode::End)
            .next()
        {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item?;
                keys::decode_event(&key)
                    .ok_or_else(|| self.corruption(Family::Events, "malformed event key"))
            }
        }
    }

    fn corruption(&self, family: Family, detail: impl Into<String>) -> StorageError {
        let error = StorageError::Corruption {
            family: family.name(),
            detail: detail.into(),
        };
        self.stop(&error.to_string());
        error
    }

    fn stop(&self, reason: &str) {
        let mut fail_stop = self.fail_stop.lock();
        if fail_stop.is_none() {
            tracing::error!(reason, "storage fail-stopped: writes refused until restart");
            *fail_stop = Some(reason.to_owned());
        }
    }

    /// `Some(reason)` once the store has fail-stopped; it then refuses writes.
    pub fn fail_stopped(&self) -> Option<String> {
        self.fail_stop.lock().clone()
    }

    /// Commits `change` atomically with its events, synced to the WAL before
    /// returning. On an I/O error other than a full disk the store fail-stops.
    pub fn commit(&self, change: ChangeSet) -> Result<CommitReceipt, StorageError> {
        change.validate()?;
        if let Some(reason) = self.fail_stopped() {
            return Err(StorageError::FailStopped(reason));
        }
        let mut next_sequence = self.next_sequence.lock();
        let first_sequence = *next_sequence;
        let time_micros = now_micros();
        let mut batch = WriteBatch::default();
        for (family, key, value) in &change.puts {
            batch.put_cf(self.cf(*family), key, value);
        }
        for (family, key) in &change.deletes {
            batch.delete_cf(self.cf(*family), key);
        }
        let events_cf = self.cf(Family::Events);
        let mut sequence = first_sequence;
        for body in &change.events {
            batch.put_cf(
                events_cf,
                keys::event(sequence),
                value::encode_event(time_micros, body),
            );
            sequence += 1;
        }
        if let Err(error) = self.db.write_opt(batch, &options::write_options()) {
            if !is_disk_full(&error) {
                self.stop(error.as_ref());
            }
            return Err(error.into());
        }
        *next_sequence = sequence;
        Ok(CommitReceipt {
            first_sequence,
            last_sequence: sequence - 1,
            time_micros,
        })
    }

    /// Reads the value under `key` in `family`, checking its envelope.
    /// Returns `(version, payload)`.
    pub fn get(&self, family: Family, key: &[u8]) -> Result<Option<(u8, Vec<u8>)>, StorageError> {
        let Some(stored) = self.db.get_pinned_cf(self.cf(family), key)? else {
            return Ok(None);
        };
        match value::decode(&stored) {
            Ok((version, payload)) => Ok(Some((version, payload.to_vec()))),
            Err(error) => Err(self.corruption(family, format!("key {key:02x?}: {error}"))),
        }
    }

    /// Reads many keys of one family at once (sorted internally, faster than
    /// single gets), checking each envelope. Results are in the order of `keys`.
    pub fn multi_get(
        &self,
        family: Family,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Versioned>>, StorageError> {
        let cf = self.cf(family);
        let values = self.db.batched_multi_get_cf(cf, keys.iter(), false);
        let mut results = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            match value? {
                None => results.push(None),
                Some(stored) => match value::decode(&stored) {
                    Ok((version, payload)) => results.push(Some((version, payload.to_vec()))),
                    Err(error) => {
                        return Err(self.corruption(family, format!("key {key:02x?}: {error}")));
                    }
                },
            }
        }
        Ok(results)
    }

    /// Visits, in key order, the entries of `family` whose key starts with
    /// `prefix`, beginning at `start` (which must itself start with `prefix`),
    /// with checked envelopes; `visit` returns false to stop early.
    pub fn scan_prefix(
        &self,
        family: Family,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], u8, &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        debug_assert!(start.starts_with(prefix));
        let iterator = self.db.iterator_cf(
            self.cf(family),
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iterator {
            let (key, stored) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            let (version, payload) = value::decode(&stored)
                .map_err(|error| self.corruption(family, format!("key {key:02x?}: {error}")))?;
            if !visit(&key, version, payload) {
                break;
            }
        }
        Ok(())
    }

    /// The greatest key in `family`, if any.
    pub fn last_key(&self, family: Family) -> Result<Option<Vec<u8>>, StorageError> {
        match self
            .db
            .iterator_cf(self.cf(family), IteratorMode::End)
            .next()
        {
            None => Ok(None),
            Some(item) => Ok(Some(item?.0.to_vec())),
        }
    }

    /// Up to `limit` events with sequence ≥ `from`, in order.
    pub fn events_from(&self, from: u64, limit: usize) -> Result<Vec<EventRecord>, StorageError> {
        let start = keys::event(from);
        let mut events = Vec::new();
        for item in self
            .db
            .iterator_cf(
                self.cf(Family::Events),
                IteratorMode::From(&start, Direction::Forward),
            )
            .take(limit)
        {
            let (key, stored) = item?;
            let sequence = keys::decode_event(&key)
                .ok_or_else(|| self.corruption(Family::Events, "malformed event key"))?;
            let event = value::decode_event(sequence, &stored).map_err(|detail| {
                self.corruption(Family::Events, format!("event {sequence}: {detail}"))
            })?;
            events.push(event);
        }
        Ok(events)
    }

    /// Sequence number the next committed event will receive.
    pub fn next_event_sequence(&self) -> u64 {
        *self.next_sequence.lock()
    }

    /// How many WAL syncs RocksDB has performed since open (from its statistics).
    pub fn wal_syncs(&self) -> u64 {
        self.options
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }

    /// The open database and its options (statistics), for [`crate::stats`].
    pub(crate) fn parts(&self) -> (&DB, &rocksdb::Options) {
        (&self.db, &self.options)
    }

    /// Flushes memtables so the next open replays no WAL, then closes.
    pub fn close(self) -> Result<(), StorageError> {
        let families: Vec<_> = Family::ALL.iter().map(|f| self.cf(*f)).collect();
        self.db
            .flush_cfs_opt(&families, &rocksdb::FlushOptions::default())?;
        self.db.cancel_all_background_work(true);
        tracing::info!(path = %self.path.display(), "storage closed");
        Ok(())
    }
}

fn decode_format_version(stored: &[u8]) -> Result<u32, StorageError> {
    let corrupt = |detail: String| StorageError::Corruption {
        family: Family::Meta.name(),
        detail,
    };
    let (version, payload) =
        value::decode(stored).map_err(|e| corrupt(format!("format version: {e}")))?;
    let bytes: [u8; 4] = payload
        .try_into()
        .map_err(|_| corrupt(format!("format version payload of {} bytes", payload.len())))?;
    if version != META_VALUE_VERSION {
        return Err(corrupt(format!("format version record version {version}")));
    }
    Ok(u32::from_be_bytes(bytes))
}

fn is_disk_full(error: &rocksdb::Error) -> bool {
    error.kind() == rocksdb::ErrorKind::IOError
        && error.to_string().contains("No space left on device")
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &[u8], event: &[u8]) -> ChangeSet {
        let mut change = ChangeSet::new();
        change.put(Family::Serials, key.to_vec(), value::encode(1, b"state"));
        change.event(event.to_vec());
        change
    }

    #[test]
    fn commits_survive_reopen_with_gap_free_sequences() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let receipt = store.commit(change(b"S1", b"e1")).unwrap();
            assert_eq!((receipt.first_sequence, receipt.last_sequence), (1, 1));
            let mut two = change(b"S2", b"e2");
            two.event(b"e3".to_vec());
            let receipt = store.commit(two).unwrap();
            assert_eq!((receipt.first_sequence, receipt.last_sequence), (2, 3));
            // Dropped without close: recovery comes from the WAL.
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_event_sequence(), 4);
        assert_eq!(
            store.get(Family::Serials, b"S2").unwrap(),
            Some((1, b"state".to_vec()))
        );
        let bodies: Vec<_> = store
            .events_from(1, 10)
            .unwrap()
            .into_iter()
            .map(|e| (e.sequence, e.body))
            .collect();
        assert_eq!(
            bodies,
            vec![
                (1, b"e1".to_vec()),
                (2, b"e2".to_vec()),
                (3, b"e3".to_vec())
            ]
        );
        store.close().unwrap();
    }

    #[test]
    fn refuses_change_sets_without_events_or_writing_events_directly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut no_event = ChangeSet::new();
        no_event.put(Family::Serials, b"S1".to_vec(), vec![]);
        assert!(matches!(
            store.commit(no_event),
            Err(StorageError::InvalidChangeSet(_))
        ));
        let mut direct = change(b"S1", b"e");
        direct.put(Family::Events, keys::event(99), vec![]);
        assert!(matches!(
            store.commit(direct),
            Err(StorageError::InvalidChangeSet(_))
        ));
        assert_eq!(
            store.next_event_sequence(),
            1,
            "refused change sets consume no sequence"
        );
        assert_eq!(
            store.get(Family::Serials, b"S1").unwrap(),
            None,
            "nothing partial is written"
        );
    }

    #[test]
    fn refuses_an_unknown_format_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut bump = ChangeSet::new();
            bump.put(
                Family::Meta,
                keys::meta(FORMAT_VERSION_KEY),
                value::encode(META_VALUE_VERSION, &99u32.to_be_bytes()),
            );
            bump.event(b"test: format bump".to_vec());
            store.commit(bump).unwrap();
        }
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(
            error,
            StorageError::UnsupportedFormatVersion {
                found: 99,
                supported: FORMAT_VERSION,
                ..
            }
        ));
        assert!(error.to_string().contains("format version 99"), "{error}");
    }

    #[test]
    fn refuses_data_without_a_format_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut remove = change(b"S1", b"e");
            remove.delete(Family::Meta, keys::meta(FORMAT_VERSION_KEY));
            store.commit(remove).unwrap();
        }
        let error = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, StorageError::MissingFormatVersion { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_corrupt_value_is_reported_and_fail_stops_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut bad = ChangeSet::new();
        let mut damaged = value::encode(1, b"state");
        damaged[6] ^= 0x01;
        bad.put(Family::Serials, b"S1".to_vec(), damaged);
        bad.event(b"e".to_vec());
        store.commit(bad).unwrap();
        assert!(matches!(
            store.get(Family::Serials, b"S1"),
            Err(StorageError::Corruption {
                family: "serials",
                ..
            })
        ));
        assert!(store.fail_stopped().is_some());
        assert!(matches!(
            store.commit(change(b"S2", b"e")),
            Err(StorageError::FailStopped(_))
        ));
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains("LOCK"), "{error}");
    }
}
