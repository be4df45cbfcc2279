//! The store: opening with the format check, committing change sets, reading.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, WriteBatch};

use crate::keys::{self, Family};
use crate::merge::MergeOperator;
use crate::value::{self, CHAIN_HASH_LENGTH, ChainHash, EventRecord};
use crate::{StorageError, options};

/// Storage format version written by this build. Bump it (and write a
/// migration) whenever a key or value encoding changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_VERSION_KEY: &str = "format_version";
const META_VALUE_VERSION: u8 = 1;

/// Histogram of the time one commit takes (the synced RocksDB write), seconds.
pub const COMMIT_SECONDS: &str = "serialsvc_storage_commit_seconds";
/// Histogram of the operations (puts, merges, deletes, events) in one commit.
pub const COMMIT_OPERATIONS: &str = "serialsvc_storage_commit_operations";

/// Bytes of a RocksDB write batch's header (sequence and count).
const WRITE_BATCH_HEADER_BYTES: usize = 12;

/// Bytes an event's record adds to its body: the record header, the key,
/// and the value's envelope, time and chain hash.
const EVENT_RECORD_OVERHEAD_BYTES: usize = 96;

/// Bytes of the chain-head record every commit writes, with its key.
const CHAIN_HEAD_RECORD_BYTES: usize = 96;

/// Limits on one change set, so a single request cannot build an unbounded batch.
pub const CHANGE_SET_OPERATIONS_MAX: usize = 4_000_000;

/// A set of puts and deletes plus the events that report them, committed
/// atomically by [`Store::commit`] in one synced `WriteBatch`.
///
/// Keys and values are copied into one buffer per kind of operation, so a
/// change of a million serials costs a few allocations, not two million.
#[derive(Debug, Default)]
pub struct ChangeSet {
    puts: Operations,
    merges: Operations,
    deletes: Operations,
    events: Vec<Vec<u8>>,
}

/// Operations of one kind, in the order they were added: each entry is the
/// family and where its key and value end in `bytes` (each starts where
/// the one before it ends).
#[derive(Debug, Default)]
struct Operations {
    entries: Vec<(Family, usize, usize)>,
    bytes: Vec<u8>,
}

impl Operations {
    fn push(&mut self, family: Family, key: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.entries.push((family, key_end, self.bytes.len()));
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// (family, key, value) in order.
    fn iter(&self) -> impl Iterator<Item = (Family, &[u8], &[u8])> {
        let mut start = 0;
        self.entries
            .iter()
            .map(move |&(family, key_end, value_end)| {
                let key = &self.bytes[start..key_end];
                let value = &self.bytes[key_end..value_end];
                start = value_end;
                (family, key, value)
            })
    }

    /// Bytes of a write batch holding these operations: a record is a tag,
    /// a family id and two length varints (at most 12 bytes) besides the
    /// key and value.
    fn batch_bytes(&self) -> usize {
        self.bytes.len() + 12 * self.entries.len()
    }
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` under `key` in `family`. `Family::Events` is refused at
    /// commit: events are added with [`ChangeSet::event`] so they get sequence numbers.
    pub fn put(&mut self, family: Family, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.puts.push(family, key.as_ref(), value.as_ref());
    }

    /// Records a merge operand (an enveloped value) for `key` in `family`,
    /// applied by the family's [`MergeOperator`] on read. The family must have
    /// one ([`Store::open_with`]).
    pub fn merge(&mut self, family: Family, key: impl AsRef<[u8]>, operand: impl AsRef<[u8]>) {
        self.merges.push(family, key.as_ref(), operand.as_ref());
    }

    /// Deletes `key` from `family`.
    pub fn delete(&mut self, family: Family, key: impl AsRef<[u8]>) {
        self.deletes.push(family, key.as_ref(), &[]);
    }

    /// Appends an event (the writer's encoding); it receives the next sequence number.
    pub fn event(&mut self, body: Vec<u8>) {
        self.events.push(body);
    }

    /// Moves every operation and event of `other` into this set, after its
    /// own (one commit for changes prepared apart, e.g. by several shards).
    pub fn append(&mut self, mut other: ChangeSet) {
        for (mine, theirs) in [
            (&mut self.puts, &other.puts),
            (&mut self.merges, &other.merges),
            (&mut self.deletes, &other.deletes),
        ] {
            for (family, key, value) in theirs.iter() {
                mine.push(family, key, value);
            }
        }
        self.events.append(&mut other.events);
    }

    /// Number of puts, merges, deletes and events.
    pub fn len(&self) -> usize {
        self.puts.len() + self.merges.len() + self.deletes.len() + self.events.len()
    }

    /// Forgets every operation and event but keeps the buffers, so that a
    /// writer building many large change sets one after another (a pool's
    /// segments) fills the same memory again instead of fresh pages.
    pub fn clear(&mut self) {
        for operations in [&mut self.puts, &mut self.merges, &mut self.deletes] {
            operations.entries.clear();
            operations.bytes.clear();
        }
        self.events.clear();
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
        let touches_events = [&self.puts, &self.merges, &self.deletes]
            .into_iter()
            .flat_map(|operations| &operations.entries)
            .any(|(family, ..)| *family == Family::Events);
        if touches_events {
            return Err(StorageError::InvalidChangeSet(
                "events are written only through ChangeSet::event",
            ));
        }
        Ok(())
    }
}

/// A [`ChangeSet`] checked and copied into a write batch by
/// [`Store::prepare`], waiting for [`Store::commit_prepared`]. Dropping it
/// writes nothing.
pub struct PreparedChange {
    batch: WriteBatch,
    events: Vec<Vec<u8>>,
    operations: usize,
}

impl PreparedChange {
    /// Number of puts, merges, deletes and events.
    pub fn len(&self) -> usize {
        self.operations
    }

    /// True when nothing would be written.
    pub fn is_empty(&self) -> bool {
        self.operations == 0
    }
}

impl std::fmt::Debug for PreparedChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedChange")
            .field("operations", &self.operations)
            .field("bytes", &self.batch.size_in_bytes())
            .finish_non_exhaustive()
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

#[derive(Debug, Clone, Copy)]
struct Head {
    next_sequence: u64,
    hash: ChainHash,
}

/// Meta key of the event chain's head: the last sequence and its chain hash,
/// written in every commit, so that altering the last event is detected too.
const CHAIN_HEAD_KEY: &str = "event_chain_head";

/// What [`Store::verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events read.
    pub events: u64,
    /// Events written before the chain existed (version 1), not checked.
    pub unchained: u64,
    /// The last sequence and its chain hash (0 and zeros when empty).
    pub head_sequence: u64,
    /// Chain hash of the last event.
    pub head_hash: ChainHash,
    /// The first break: the sequence where the chain no longer holds, and why.
    pub first_break: Option<(u64, String)>,
}

impl ChainReport {
    fn break_at(&mut self, sequence: u64, why: String) {
        if self.first_break.is_none() {
            self.first_break = Some((sequence, why));
        }
    }
}

/// An open serialsvc data directory.
pub struct Store {
    db: DB,
    path: PathBuf,
    options: rocksdb::Options,
    /// Next event sequence number and the chain hash of the last event; the
    /// lock also orders commits so that sequence order is commit order
    /// (gap-free for readers of the log).
    head: Mutex<Head>,
    /// Set on the first write error or detected corruption: writes stop.
    fail_stop: Mutex<Option<String>>,
    /// [`COMMIT_SECONDS`] and [`COMMIT_OPERATIONS`], created once.
    commit_seconds: metrics::Histogram,
    commit_operations: metrics::Histogram,
    /// When the store was opened: the origin of `last_commit_micros`.
    opened: std::time::Instant,
    /// Microseconds from `opened` to the end of the last durable commit
    /// (0: none yet), a monotonic clock.
    last_commit_micros: AtomicU64,
    /// The block cache shared by every family, emptied by the idle flush.
    cache: Mutex<rocksdb::Cache>,
    /// `last_commit_micros` as it was when the memtables were last flushed
    /// by [`Store::flush_if_idle`].
    flushed_commit_micros: AtomicU64,
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
        Self::open_with(path, &[])
    }

    /// Like [`Store::open`], with a merge operator for each listed family.
    /// Every open of a data directory whose families hold merge operands
    /// must pass the same operators.
    pub fn open_with(
        path: &Path,
        merge_operators: &[(Family, MergeOperator)],
    ) -> Result<Self, StorageError> {
        crate::trim::fix_mmap_threshold();
        let cache = rocksdb::Cache::new_lru_cache(options::BLOCK_CACHE_BYTES);
        let options = options::db_options(&cache);
        let mut descriptors = Vec::with_capacity(Family::ALL.len());
        for family in Family::ALL {
            let mut options = options::db_options(&cache);
            if let Some((_, operator)) = merge_operators.iter().find(|(f, _)| *f == family) {
                operator.install(&mut options);
            }
            let options = options::finish_family_options(options, family)?;
            descriptors.push(ColumnFamilyDescriptor::new(family.name(), options));
        }
        let db = DB::open_cf_descriptors(&options, path, descriptors)?;
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            options,
            head: Mutex::new(Head {
                next_sequence: 1,
                hash: [0; CHAIN_HASH_LENGTH],
            }),
            fail_stop: Mutex::new(None),
            commit_seconds: metrics::histogram!(COMMIT_SECONDS),
            commit_operations: metrics::histogram!(COMMIT_OPERATIONS),
            opened: std::time::Instant::now(),
            last_commit_micros: AtomicU64::new(0),
            flushed_commit_micros: AtomicU64::new(0),
            cache: Mutex::new(cache),
        };
        store.check_format_version()?;
        let (last, hash) = store.last_event()?;
        *store.head.get_mut() = Head {
            next_sequence: last + 1,
            hash,
        };
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

    /// The last event's sequence and chain hash (0 and zeros when none).
    fn last_event(&self) -> Result<(u64, ChainHash), StorageError> {
        match self
            .db
            .iterator_cf(self.cf(Family::Events), IteratorMode::End)
            .next()
        {
            None => Ok((0, [0; CHAIN_HASH_LENGTH])),
            Some(item) => {
                let (key, stored) = item?;
                let sequence = keys::decode_event(&key)
                    .ok_or_else(|| self.corruption(Family::Events, "malformed event key"))?;
                let event = value::decode_event(sequence, &stored).map_err(|detail| {
                    self.corruption(Family::Events, format!("event {sequence}: {detail}"))
                })?;
                Ok((sequence, event.chain_hash()))
            }
        }
    }

    /// Walks the whole event log from the first event and checks the hash
    /// chain: each event must carry its predecessor's chain hash, the
    /// sequences must be gap-free, and the last must match the stored head.
    /// `progress` is called with the sequence reached, every 10,000 events.
    pub fn verify_chain(&self, mut progress: impl FnMut(u64)) -> Result<ChainReport, StorageError> {
        let mut report = ChainReport {
            events: 0,
            unchained: 0,
            head_sequence: 0,
            head_hash: [0; CHAIN_HASH_LENGTH],
            first_break: None,
        };
        for item in self
            .db
            .iterator_cf(self.cf(Family::Events), IteratorMode::Start)
        {
            let (key, stored) = item.map_err(|e| self.read_failed(Family::Events, e))?;
            let Some(sequence) = keys::decode_event(&key) else {
                report.break_at(report.head_sequence + 1, "malformed event key".into());
                continue;
            };
            if sequence != report.head_sequence + 1 {
                report.break_at(
                    sequence,
                    format!("sequence {sequence} follows {}", report.head_sequence),
                );
            }
            match value::decode_event(sequence, &stored) {
                Err(detail) => report.break_at(sequence, detail),
                Ok(event) => {
                    match event.previous_hash {
                        None => report.unchained += 1,
                        Some(previous) if previous != report.head_hash => report.break_at(
                            sequence,
                            format!(
                                "event {sequence} does not carry the chain hash of event {}: \
                                 that event or this one was altered",
                                report.head_sequence
                            ),
                        ),
                        Some(_) => {}
                    }
                    report.head_hash = event.chain_hash();
                }
            }
            report.head_sequence = sequence;
            report.events += 1;
            if report.events.is_multiple_of(10_000) {
                progress(sequence);
            }
        }
        if let Some(stored) = self
            .db
            .get_cf(self.cf(Family::Meta), keys::meta(CHAIN_HEAD_KEY))?
        {
            let matches = value::decode(&stored).ok().is_some_and(|(_, payload)| {
                payload.len() == 8 + CHAIN_HASH_LENGTH
                    && payload[..8] == report.head_sequence.to_be_bytes()
                    && payload[8..] == report.head_hash
            });
            if !matches {
                report.break_at(
                    report.head_sequence,
                    format!(
                        "the stored chain head does not match event {}: the last event was altered or events were removed",
                        report.head_sequence
                    ),
                );
            }
        }
        Ok(report)
    }

    fn corruption(&self, family: Family, detail: impl Into<String>) -> StorageError {
        let error = StorageError::Corruption {
            family: family.name(),
            detail: detail.into(),
        };
        self.stop(&error.to_string());
        error
    }

    /// A RocksDB error on a read. Detected corruption (e.g. a block checksum
    /// mismatch in an SST file) or an I/O error fail-stops the store, as a
    /// bad value envelope does: writes must not go on from a store that
    /// cannot be read.
    fn read_failed(&self, family: Family, error: rocksdb::Error) -> StorageError {
        let kind = error.kind();
        if kind == rocksdb::ErrorKind::Corruption
            || (kind == rocksdb::ErrorKind::IOError && !is_disk_full(&error))
        {
            self.stop(&format!(
                "read from column family {}: {error}",
                family.name()
            ));
        }
        error.into()
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
        self.commit_prepared(self.prepare(change)?)
    }

    /// Checks `change` and turns it into a RocksDB write batch, without
    /// writing anything: the part of a commit that copies every key and
    /// value, and frees the change set. A writer that pipelines its commits
    /// prepares the next one on its own thread while another thread writes
    /// the last ([`Store::commit_prepared`]).
    pub fn prepare(&self, mut change: ChangeSet) -> Result<PreparedChange, StorageError> {
        self.prepare_from(&mut change)
    }

    /// [`Store::prepare`] that leaves `change` empty with its buffers kept
    /// ([`ChangeSet::clear`]), to be filled again; on a refusal `change` is
    /// left as it was.
    pub fn prepare_from(&self, change: &mut ChangeSet) -> Result<PreparedChange, StorageError> {
        change.validate()?;
        let bytes = change.puts.batch_bytes()
            + change.merges.batch_bytes()
            + change.deletes.batch_bytes()
            + change
                .events
                .iter()
                .map(|body| body.len() + EVENT_RECORD_OVERHEAD_BYTES)
                .sum::<usize>()
            + WRITE_BATCH_HEADER_BYTES
            + CHAIN_HEAD_RECORD_BYTES;
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for (family, key, value) in change.puts.iter() {
            batch.put_cf(self.cf(family), key, value);
        }
        for (family, key, operand) in change.merges.iter() {
            batch.merge_cf(self.cf(family), key, operand);
        }
        for (family, key, _) in change.deletes.iter() {
            batch.delete_cf(self.cf(family), key);
        }
        let operations = change.len();
        let events = std::mem::take(&mut change.events);
        change.clear();
        Ok(PreparedChange {
            batch,
            events,
            operations,
        })
    }

    /// Commits a change set [`Store::prepare`] made, atomically with its
    /// events, synced to the WAL before returning. On an I/O error other than
    /// a full disk the store fail-stops.
    pub fn commit_prepared(&self, prepared: PreparedChange) -> Result<CommitReceipt, StorageError> {
        if let Some(reason) = self.fail_stopped() {
            return Err(StorageError::FailStopped(reason));
        }
        let PreparedChange {
            mut batch,
            events,
            operations,
        } = prepared;
        let mut head = self.head.lock();
        let first_sequence = head.next_sequence;
        let time_micros = now_micros();
        let events_cf = self.cf(Family::Events);
        let mut sequence = first_sequence;
        let mut hash = head.hash;
        for body in &events {
            batch.put_cf(
                events_cf,
                keys::event(sequence),
                value::encode_event(time_micros, &hash, body),
            );
            hash = value::chain_hash(&hash, sequence, time_micros, body);
            sequence += 1;
        }
        let mut chain_head = Vec::with_capacity(8 + CHAIN_HASH_LENGTH);
        chain_head.extend_from_slice(&(sequence - 1).to_be_bytes());
        chain_head.extend_from_slice(&hash);
        batch.put_cf(
            self.cf(Family::Meta),
            keys::meta(CHAIN_HEAD_KEY),
            value::encode(META_VALUE_VERSION, &chain_head),
        );
        let started = std::time::Instant::now();
        #[cfg(feature = "failpoints")]
        fail::fail_point!("storage.commit.before_write");
        let written = self.db.write_opt(batch, &options::write_options());
        #[cfg(feature = "failpoints")]
        fail::fail_point!("storage.commit.after_write");
        self.commit_seconds.record(started.elapsed().as_secs_f64());
        self.commit_operations.record(operations as f64);
        if let Err(error) = written {
            if !is_disk_full(&error) {
                self.stop(error.as_ref());
            }
            return Err(error.into());
        }
        *head = Head {
            next_sequence: sequence,
            hash,
        };
        self.last_commit_micros
            .store(self.monotonic_micros().max(1), Ordering::Release);
        Ok(CommitReceipt {
            first_sequence,
            last_sequence: sequence - 1,
            time_micros,
        })
    }

    /// Reads the value under `key` in `family`, checking its envelope.
    /// Returns `(version, payload)`.
    pub fn get(&self, family: Family, key: &[u8]) -> Result<Option<(u8, Vec<u8>)>, StorageError> {
        let Some(stored) = self
            .db
            .get_pinned_cf(self.cf(family), key)
            .map_err(|e| self.read_failed(family, e))?
        else {
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
            match value.map_err(|e| self.read_failed(family, e))? {
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
            let (key, stored) = item.map_err(|e| self.read_failed(family, e))?;
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
            Some(item) => Ok(Some(
                item.map_err(|e| self.read_failed(family, e))?.0.to_vec(),
            )),
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
            let (key, stored) = item.map_err(|e| self.read_failed(Family::Events, e))?;
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
        self.head.lock().next_sequence
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

    fn monotonic_micros(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Flushes every memtable to table files when nothing was committed for
    /// `idle` and the memtables hold commits not flushed yet, empties the
    /// block cache, then gives the freed memory back to the operating
    /// system; answers whether it flushed. Durability does not depend on it (every commit is in the
    /// synced WAL): a quiet store gives back its write buffers' memory and a
    /// restart replays no WAL.
    pub fn flush_if_idle(&self, idle: std::time::Duration) -> Result<bool, StorageError> {
        let last = self.last_commit_micros.load(Ordering::Acquire);
        if last == 0 || last == self.flushed_commit_micros.load(Ordering::Acquire) {
            return Ok(false);
        }
        let quiet = self.monotonic_micros().saturating_sub(last);
        if u128::from(quiet) < idle.as_micros() {
            return Ok(false);
        }
        self.flush_all()?;
        // A commit during the flush leaves `last_commit_micros` newer, so the
        // next call flushes again.
        self.flushed_commit_micros.store(last, Ordering::Release);
        // Empty the block cache too: the blocks in it were read by the write
        // path (commissioning's pool checks, decommissioning), which has
        // stopped; verification never reads RocksDB. Blocks in use stay.
        {
            let mut cache = self.cache.lock();
            cache.set_capacity(0);
            cache.set_capacity(options::BLOCK_CACHE_BYTES);
        }
        // The memtables' arenas and the cached blocks are freed now; give
        // their pages back.
        crate::trim::release_free_memory();
        Ok(true)
    }

    /// Flushes the memtables of every family and waits for it.
    fn flush_all(&self) -> Result<(), StorageError> {
        let families: Vec<_> = Family::ALL.iter().map(|f| self.cf(*f)).collect();
        self.db
            .flush_cfs_opt(&families, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    /// Flushes memtables so the next open replays no WAL, then closes.
    pub fn close(self) -> Result<(), StorageError> {
        self.flush_all()?;
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
        change.put(Family::Serials, key, value::encode(1, b"state"));
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

    /// Operations keep their order, families, keys and values (empty ones
    /// too) in the shared buffer, also when appended from another set.
    #[test]
    fn a_change_set_keeps_every_operation_in_order() {
        let mut change = ChangeSet::new();
        change.put(Family::Serials, b"k1", b"v1");
        change.put(Family::Lots, Vec::new(), b"v2");
        change.delete(Family::Serials, b"k3");
        change.merge(Family::Serials, b"k4", b"");
        let mut other = ChangeSet::new();
        other.put(Family::Pools, b"k5", b"v5");
        other.delete(Family::Lots, b"k6");
        other.event(b"e".to_vec());
        change.append(other);
        assert_eq!(change.len(), 7);
        let puts: Vec<_> = change.puts.iter().collect();
        assert_eq!(
            puts,
            vec![
                (Family::Serials, &b"k1"[..], &b"v1"[..]),
                (Family::Lots, &b""[..], &b"v2"[..]),
                (Family::Pools, &b"k5"[..], &b"v5"[..]),
            ]
        );
        let deletes: Vec<_> = change.deletes.iter().map(|(f, k, _)| (f, k)).collect();
        assert_eq!(
            deletes,
            vec![(Family::Serials, &b"k3"[..]), (Family::Lots, &b"k6"[..])]
        );
        let merges: Vec<_> = change.merges.iter().collect();
        assert_eq!(merges, vec![(Family::Serials, &b"k4"[..], &b""[..])]);
    }

    /// A prepared change writes nothing until it is committed, gets its
    /// event sequence numbers at commit (not when prepared), and a dropped
    /// one is simply gone.
    #[test]
    fn a_prepared_change_is_written_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.prepare(change(b"S1", b"e1")).unwrap();
        let dropped = store.prepare(change(b"S9", b"e9")).unwrap();
        let mut two = change(b"S2", b"e2");
        two.event(b"e3".to_vec());
        let second = store.prepare(two).unwrap();
        assert_eq!((first.len(), second.len()), (2, 3));
        assert_eq!(store.get(Family::Serials, b"S1").unwrap(), None);
        // Committed in another order than prepared: sequences follow commits.
        let receipt = store.commit_prepared(second).unwrap();
        assert_eq!((receipt.first_sequence, receipt.last_sequence), (1, 2));
        let receipt = store.commit_prepared(first).unwrap();
        assert_eq!((receipt.first_sequence, receipt.last_sequence), (3, 3));
        drop(dropped);
        assert_eq!(store.get(Family::Serials, b"S9").unwrap(), None);
        assert_eq!(
            store.get(Family::Serials, b"S1").unwrap(),
            Some((1, b"state".to_vec()))
        );
        assert_eq!(store.next_event_sequence(), 4);
        let report = store.verify_chain(|_| {}).unwrap();
        assert_eq!((report.events, report.first_break), (3, None));
        // An invalid change set is refused when prepared.
        assert!(matches!(
            store.prepare(ChangeSet::new()),
            Err(StorageError::InvalidChangeSet(_))
        ));
    }

    #[test]
    fn a_change_set_prepared_from_is_emptied_and_filled_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut change = change(b"S1", b"e1");
        change.put(Family::Serials, b"S0", value::encode(1, b"zero"));
        let first = store.prepare_from(&mut change).unwrap();
        assert_eq!(first.len(), 3);
        assert!(change.is_empty(), "prepared operations stay in the set");
        let kept = change.puts.bytes.capacity();
        assert!(kept > 0, "the buffers were freed");
        // Filled again in the same buffers: only the new operations commit.
        change.put(Family::Serials, b"S2", value::encode(1, b"state2"));
        change.event(b"e2".to_vec());
        let second = store.prepare_from(&mut change).unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(change.puts.bytes.capacity(), kept);
        store.commit_prepared(first).unwrap();
        store.commit_prepared(second).unwrap();
        assert_eq!(
            store.get(Family::Serials, b"S2").unwrap(),
            Some((1, b"state2".to_vec()))
        );
        assert_eq!(store.next_event_sequence(), 3);
        // A refused set is left as it was.
        let mut no_event = ChangeSet::new();
        no_event.put(Family::Serials, b"S3", b"x");
        assert!(store.prepare_from(&mut no_event).is_err());
        assert_eq!(no_event.len(), 1);
    }

    #[test]
    fn an_idle_store_flushes_its_memtables_once() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Nothing committed yet: nothing to flush.
        assert!(!store.flush_if_idle(Duration::ZERO).unwrap());
        // Enough to outgrow a memtable's first arena block.
        let mut big = change(b"S1", b"e1");
        for i in 0..2_000u32 {
            big.put(Family::Serials, i.to_be_bytes(), vec![7; 200]);
        }
        store.commit(big).unwrap();
        let memtables = || crate::stats::figures(&store).unwrap().memtable_bytes;
        let before = memtables();
        // Not idle long enough.
        assert!(!store.flush_if_idle(Duration::from_secs(3600)).unwrap());
        assert!(store.flush_if_idle(Duration::ZERO).unwrap());
        assert!(
            memtables() < before,
            "memtables {before} → {} bytes",
            memtables()
        );
        // Flushed already: no second flush until the next commit.
        assert!(!store.flush_if_idle(Duration::ZERO).unwrap());
        // Reads from the table files fill the block cache …
        for i in (0..2_000u32).step_by(7) {
            let serials = store.cf(Family::Serials);
            let read = store.db.get_pinned_cf(serials, i.to_be_bytes()).unwrap();
            assert!(read.is_some(), "key {i} was committed");
        }
        let cached = store.cache.lock().get_usage();
        assert!(cached > 64 << 10, "block cache holds {cached} bytes");
        store.commit(change(b"S2", b"e2")).unwrap();
        assert!(store.flush_if_idle(Duration::ZERO).unwrap());
        // … and the idle flush empties it (index and filter blocks of open
        // files may stay).
        let after = store.cache.lock().get_usage();
        assert!(after < cached / 4, "block cache {cached} → {after} bytes");
        assert_eq!(
            store.get(Family::Serials, b"S2").unwrap(),
            Some((1, b"state".to_vec()))
        );
        store.close().unwrap();
    }

    #[test]
    fn refuses_change_sets_without_events_or_writing_events_directly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut no_event = ChangeSet::new();
        no_event.put(Family::Serials, b"S1", vec![]);
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
        bad.put(Family::Serials, b"S1", damaged);
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
    fn a_block_checksum_mismatch_on_read_fail_stops_writes() {
        // Found by chaos-tests (corruption.rs): RocksDB's own corruption
        // errors on reads were returned without fail-stopping the store.
        let dir = tempfile::tempdir().unwrap();
        let marker = b"chaos-marker-0123456789";
        {
            let store = Store::open(dir.path()).unwrap();
            let mut put = ChangeSet::new();
            put.put(Family::Serials, b"S1", value::encode(1, marker));
            put.event(b"e".to_vec());
            store.commit(put).unwrap();
            store.close().unwrap();
        }
        // Flip a bit of the value inside its (uncompressed L0) data block.
        let mut flipped = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sst") {
                let mut bytes = std::fs::read(&path).unwrap();
                if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) {
                    bytes[at + 3] ^= 0x10;
                    std::fs::write(&path, bytes).unwrap();
                    flipped += 1;
                }
            }
        }
        assert_eq!(flipped, 1, "the value is in exactly one SST file");
        let store = Store::open(dir.path()).unwrap();
        let read = store.get(Family::Serials, b"S1");
        assert!(matches!(read, Err(StorageError::Rocks(_))), "{read:?}");
        assert!(store.fail_stopped().is_some());
        assert!(matches!(
            store.commit(change(b"S2", b"e")),
            Err(StorageError::FailStopped(_))
        ));
    }

    /// Concatenates payloads; an operand `!` is refused.
    const APPEND: MergeOperator = MergeOperator {
        name: "test.append",
        full: |existing, operands| {
            let mut out = existing.map_or_else(Vec::new, |(_, p)| p.to_vec());
            for (_, operand) in operands {
                if *operand == b"!" {
                    return Err("refused operand".into());
                }
                out.extend_from_slice(operand);
            }
            Ok((1, out))
        },
        partial: |operands| {
            if operands.iter().any(|(_, o)| *o == b"!") {
                return None;
            }
            Some((
                1,
                operands
                    .iter()
                    .flat_map(|(_, o)| o.iter().copied())
                    .collect(),
            ))
        },
    };

    fn merge(key: &[u8], operand: &[u8]) -> ChangeSet {
        let mut change = ChangeSet::new();
        change.merge(Family::Serials, key, value::encode(1, operand));
        change.event(b"m".to_vec());
        change
    }

    #[test]
    fn merge_operands_apply_on_read_after_reopen_and_after_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let operators = [(Family::Serials, APPEND)];
        {
            let store = Store::open_with(dir.path(), &operators).unwrap();
            store.commit(change(b"S1", b"e")).unwrap();
            store.commit(merge(b"S1", b"+b")).unwrap();
            store.commit(merge(b"S1", b"+c")).unwrap();
            assert_eq!(
                store.get(Family::Serials, b"S1").unwrap(),
                Some((1, b"state+b+c".to_vec()))
            );
            // Dropped without close: the operands come back from the WAL.
        }
        let store = Store::open_with(dir.path(), &operators).unwrap();
        store.commit(merge(b"S1", b"+d")).unwrap();
        let expected = Some((1, b"state+b+c+d".to_vec()));
        assert_eq!(store.get(Family::Serials, b"S1").unwrap(), expected);
        assert_eq!(
            store.multi_get(Family::Serials, &[b"S1".to_vec()]).unwrap(),
            vec![expected.clone()]
        );
        let mut scanned = Vec::new();
        store
            .scan_prefix(Family::Serials, b"S", b"S", |_, version, payload| {
                scanned.push((version, payload.to_vec()));
                true
            })
            .unwrap();
        assert_eq!(scanned, vec![expected.clone().unwrap()]);
        store
            .db
            .compact_range_cf(store.cf(Family::Serials), None::<&[u8]>, None::<&[u8]>);
        assert_eq!(store.get(Family::Serials, b"S1").unwrap(), expected);
    }

    #[test]
    fn a_refused_merge_is_an_error_not_a_stale_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), &[(Family::Serials, APPEND)]).unwrap();
        store.commit(change(b"S1", b"e")).unwrap();
        store.commit(merge(b"S1", b"!")).unwrap();
        assert!(store.get(Family::Serials, b"S1").is_err());
        assert!(store.multi_get(Family::Serials, &[b"S1".to_vec()]).is_err());
    }

    /// Rewrites event `sequence` with `body`, with a valid envelope and its
    /// stored previous hash kept: what an offline edit that knows the format does.
    fn tamper(store: &Store, sequence: u64, body: &[u8]) {
        let stored = store
            .db
            .get_cf(store.cf(Family::Events), keys::event(sequence))
            .unwrap()
            .unwrap();
        let event = value::decode_event(sequence, &stored).unwrap();
        let forged = value::encode_event(event.time_micros, &event.previous_hash.unwrap(), body);
        store
            .db
            .put_cf(store.cf(Family::Events), keys::event(sequence), forged)
            .unwrap();
    }

    #[test]
    fn the_event_chain_holds_across_reopen_and_names_the_first_altered_event() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for i in 0..5u8 {
                store.commit(change(&[b'S', i], &[b'e', i])).unwrap();
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let mut two = change(b"S9", b"e5");
        two.event(b"e6".to_vec());
        store.commit(two).unwrap();
        let report = store.verify_chain(|_| {}).unwrap();
        assert_eq!(
            (report.events, report.head_sequence, report.unchained),
            (7, 7, 0)
        );
        assert_eq!(report.first_break, None);
        let head = report.head_hash;

        tamper(&store, 3, b"forged");
        let report = store.verify_chain(|_| {}).unwrap();
        let (sequence, why) = report.first_break.unwrap();
        assert_eq!(sequence, 4, "{why}");
        assert!(why.contains("event 3"), "{why}");
        // Later events still carry the original hashes: the head is unchanged.
        assert_eq!(report.head_hash, head);
    }

    #[test]
    fn altering_or_removing_the_last_event_is_detected() {
        // A store with three committed events (the directory lives with it).
        let three_events = || {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            for i in 0..3u8 {
                store.commit(change(&[b'S', i], &[b'e', i])).unwrap();
            }
            (dir, store)
        };
        let (_dir, store) = three_events();
        tamper(&store, 3, b"forged");
        let (sequence, why) = store.verify_chain(|_| {}).unwrap().first_break.unwrap();
        assert_eq!(sequence, 3);
        assert!(why.contains("chain head"), "{why}");

        let (_dir, store) = three_events();
        store
            .db
            .delete_cf(store.cf(Family::Events), keys::event(3))
            .unwrap();
        let (sequence, why) = store.verify_chain(|_| {}).unwrap().first_break.unwrap();
        assert_eq!(sequence, 2);
        assert!(why.contains("removed"), "{why}");
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains("LOCK"), "{error}");
    }
}
