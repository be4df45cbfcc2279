//! The status index: every issued serial's state in memory, plus the product
//! and lot catalog the verification semantics need.
//!
//! Concurrency ("lock-light"):
//! - serial states live in one [`Table`] per partition (a partition = an
//!   issuer shard, so each has exactly one writer). Readers never lock a
//!   slot; see `table.rs`.
//! - a partition's current table sits behind a `parking_lot::RwLock` held
//!   only to clone an `Arc` (a few instructions); a reader takes it once per
//!   request or batch ([`StatusIndex::view`]). Growing builds a larger table
//!   and swaps the `Arc`; a view taken before the swap finishes on the old
//!   table, which is fine because its request started before any write the
//!   new table holds was answered.
//! - products and lots form a copy-on-write [`Catalog`], swapped the same
//!   way. Those changes are rare (a lot per production batch, a recall).
//!
//! Keys are hashed with xxh3-128 keyed by a secret drawn from the operating
//! system at start-up, so clients cannot aim collisions at the table; 80 of
//! its bits are stored and compared (see `table.rs` for the odds).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gs1::{CalendarDate, Expiry};
use parking_lot::{Mutex, RwLock};
use xxhash_rust::xxh3::xxh3_128_with_secret;

use crate::semantics::{Facts, Given, LotFacts, PackState, Purpose, Verdict, judge};
use crate::table::{KeyHash, SLOT_BYTES, SLOTS as SLOTS_PER_BUCKET, Table};

/// Largest load factor before a partition's table grows.
const LOAD_MAX: f64 = 0.85;
/// Growth factor: small steps keep memory per serial within
/// 16 / 0.85 ≈ 19 to 16 × 1.25 / 0.85 ≈ 24 bytes.
const GROWTH: f64 = 1.25;
/// Bytes of hashing secret (xxh3 needs at least 136).
const SECRET_BYTES: usize = 192;

/// Index of a lot in the catalog.
pub type LotId = u32;

/// Most lots the index holds (24-bit lot ids in the state word).
pub const LOTS_MAX: u32 = (1 << 24) - 1;

/// One serial's entry: state, decommission reason, flags and lot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialEntry {
    /// State.
    pub state: PackState,
    /// Decommission reason code (0 = none).
    pub reason: u8,
    /// Flag bits: 1 suspect, 2 illegitimate.
    pub flags: u8,
    /// Lot of record (commissioned packs).
    pub lot: Option<LotId>,
}

impl SerialEntry {
    /// An allocated (issued, not commissioned) serial.
    pub const ALLOCATED: SerialEntry = SerialEntry {
        state: PackState::Allocated,
        reason: 0,
        flags: 0,
        lot: None,
    };

    /// The packed 48-bit entry: state | reason << 8 | flags << 16 | (lot + 1) << 24.
    pub fn word(self) -> u64 {
        let lot = self.lot.map_or(0, |id| u64::from(id) + 1);
        u64::from(self.state as u8)
            | u64::from(self.reason) << 8
            | u64::from(self.flags) << 16
            | lot << 24
    }

    /// Unpacks a 48-bit entry.
    pub fn from_word(word: u64) -> SerialEntry {
        let lot = ((word >> 24) & 0xFF_FFFF) as u32;
        SerialEntry {
            state: PackState::from_code(word as u8).unwrap_or(PackState::Unknown),
            reason: (word >> 8) as u8,
            flags: (word >> 16) as u8,
            lot: lot.checked_sub(1),
        }
    }
}

/// A lot as the catalog holds it.
#[derive(Debug, Clone)]
pub struct LotEntry {
    /// GTIN value (14 digits as a number).
    pub gtin: u64,
    /// Lot text.
    pub lot: Box<str>,
    /// Expiry as registered.
    pub expiry: Expiry,
    /// Its effective date.
    pub effective_expiry: CalendarDate,
    /// Recalled.
    pub recalled: bool,
}

#[derive(Debug, Clone, Copy)]
struct ProductEntry {
    partition: u32,
    withdrawn: bool,
}

/// Hasher for GTIN values (product map). Keys are inserted only by
/// registration, never by readers, so a fast non-keyed mix is safe here.
#[derive(Default, Clone, Copy, Debug)]
struct GtinHasher(u64);

impl std::hash::Hasher for GtinHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (value ^ (value >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 32;
    }
}

type GtinMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<GtinHasher>>;

/// Products and lots, replaced whole on every change (copy-on-write).
#[derive(Debug, Clone, Default)]
struct Catalog {
    products: GtinMap<ProductEntry>,
    lots: Vec<Arc<LotEntry>>,
    lot_ids: GtinMap<HashMap<Box<str>, LotId>>,
}

#[derive(Debug)]
struct Partition {
    table: RwLock<Arc<Table>>,
    /// Serialises this partition's writes (its owner is the only caller in
    /// the service; the mutex makes misuse safe rather than corrupting).
    writer: Mutex<()>,
    len: AtomicU64,
}

/// What the serials of one lot are now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LotCounts {
    /// Serials active now.
    pub active: u64,
    /// Serials decommissioned now, by reason code (index 0: no reason).
    pub decommissioned: [u64; 9],
}

/// Size figures of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Serials held.
    pub serials: u64,
    /// Slots allocated.
    pub slots: u64,
    /// Bytes of the serial tables.
    pub table_bytes: u64,
    /// Products held.
    pub products: u64,
    /// Lots held.
    pub lots: u64,
}

/// The in-memory status index. See the module documentation.
#[derive(Debug)]
pub struct StatusIndex {
    secret: Box<[u8]>,
    partitions: Box<[Partition]>,
    catalog: RwLock<Arc<Catalog>>,
    catalog_writer: Mutex<()>,
    ready: AtomicBool,
}

/// What went wrong when building the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The operating system could not supply the hashing secret.
    #[error("cannot draw the index hashing secret from the operating system: {0}")]
    Entropy(String),
    /// A serial was put for a GTIN the index does not hold.
    #[error("GTIN {0:014} is not in the status index")]
    UnknownProduct(u64),
    /// The catalog holds [`LOTS_MAX`] lots already.
    #[error("the status index holds its maximum of {LOTS_MAX} lots")]
    TooManyLots,
    /// A serial was put in a partition that does not own its GTIN.
    #[error("GTIN {gtin:014} belongs to partition {owner}, not {partition}")]
    WrongPartition {
        /// GTIN value.
        gtin: u64,
        /// Owning partition.
        owner: u32,
        /// Partition asked for.
        partition: usize,
    },
}

impl StatusIndex {
    /// An empty index with `partitions` partitions (one per issuer shard) and
    /// a secret drawn from the operating system.
    pub fn new(partitions: usize) -> Result<StatusIndex, IndexError> {
        let mut secret = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| IndexError::Entropy(e.to_string()))?;
        Ok(Self::with_secret(partitions, secret))
    }

    /// An empty index with a given secret, for tests and benchmarks. The
    /// secret must be random-looking: xxh3 XORs pairs of secret words, so a
    /// secret of equal bytes hashes like no secret at all.
    pub fn with_secret(partitions: usize, mut secret: Vec<u8>) -> StatusIndex {
        secret.resize(SECRET_BYTES.max(secret.len()), 0x5a);
        StatusIndex {
            secret: secret.into_boxed_slice(),
            partitions: (0..partitions.max(1))
                .map(|_| Partition {
                    table: RwLock::new(Arc::new(Table::with_slots(1024))),
                    writer: Mutex::new(()),
                    len: AtomicU64::new(0),
                })
                .collect(),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            catalog_writer: Mutex::new(()),
            ready: AtomicBool::new(false),
        }
    }

    /// Partitions (equal to the issuer's shards).
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// Marks the index complete (rebuilt from storage).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the index is complete; verification must not answer before.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn hash(&self, gtin: u64, serial: &[u8]) -> KeyHash {
        let mut key = [0u8; 8 + 32];
        let length = serial.len().min(32);
        key[..8].copy_from_slice(&gtin.to_be_bytes());
        key[8..8 + length].copy_from_slice(&serial[..length]);
        if serial.len() > 32 {
            // Serials are at most 20 characters; never truncate silently.
            let mut long = gtin.to_be_bytes().to_vec();
            long.extend_from_slice(serial);
            return KeyHash::from_u128(xxh3_128_with_secret(&long, &self.secret));
        }
        KeyHash::from_u128(xxh3_128_with_secret(&key[..8 + length], &self.secret))
    }

    fn update_catalog(&self, change: impl FnOnce(&mut Catalog)) {
        let _writer = self.catalog_writer.lock();
        let mut next = Catalog::clone(&self.catalog.read());
        change(&mut next);
        *self.catalog.write() = Arc::new(next);
    }

    /// Lots held (at most [`LOTS_MAX`]).
    pub fn lots(&self) -> u32 {
        self.catalog.read().lots.len() as u32
    }

    /// Adds (or updates) a product owned by `partition`.
    pub fn put_product(&self, gtin: u64, partition: usize, withdrawn: bool) {
        self.update_catalog(|catalog| {
            catalog.products.insert(
                gtin,
                ProductEntry {
                    partition: partition as u32,
                    withdrawn,
                },
            );
        });
    }

    /// Marks a product withdrawn (issue 5). Unknown GTINs are ignored.
    pub fn set_product_withdrawn(&self, gtin: u64) {
        self.update_catalog(|catalog| {
            if let Some(product) = catalog.products.get_mut(&gtin) {
                product.withdrawn = true;
            }
        });
    }

    /// Adds a lot (or updates its recall flag) and answers its id.
    pub fn put_lot(
        &self,
        gtin: u64,
        lot: &str,
        expiry: Expiry,
        recalled: bool,
    ) -> Result<LotId, IndexError> {
        let ids = self.put_lots([(gtin, lot, expiry, recalled)])?;
        ids.first().copied().ok_or(IndexError::TooManyLots)
    }

    /// Adds many lots in one catalog swap (start-up). Refuses all of them if
    /// the catalog would pass [`LOTS_MAX`].
    pub fn put_lots<'a>(
        &self,
        lots: impl IntoIterator<Item = (u64, &'a str, Expiry, bool)>,
    ) -> Result<Vec<LotId>, IndexError> {
        let today = today_utc();
        let mut ids = Vec::new();
        let mut full = false;
        self.update_catalog(|catalog| {
            for (gtin, lot, expiry, recalled) in lots {
                let entry = LotEntry {
                    gtin,
                    lot: lot.into(),
                    expiry,
                    effective_expiry: expiry.effective_date(today),
                    recalled,
                };
                let existing = catalog.lot_ids.get(&gtin).and_then(|m| m.get(lot)).copied();
                let id = match existing {
                    Some(id) => {
                        catalog.lots[id as usize] = Arc::new(entry);
                        id
                    }
                    None if catalog.lots.len() >= LOTS_MAX as usize => {
                        full = true;
                        return;
                    }
                    None => {
                        let id = catalog.lots.len() as LotId;
                        catalog.lots.push(Arc::new(entry));
                        catalog
                            .lot_ids
                            .entry(gtin)
                            .or_default()
                            .insert(lot.into(), id);
                        id
                    }
                };
                ids.push(id);
            }
        });
        if full {
            return Err(IndexError::TooManyLots);
        }
        Ok(ids)
    }

    /// Marks a lot recalled (issue 5). Unknown lots are ignored.
    pub fn set_lot_recalled(&self, gtin: u64, lot: &str) {
        self.update_catalog(|catalog| {
            if let Some(id) = catalog.lot_ids.get(&gtin).and_then(|m| m.get(lot)).copied() {
                let mut entry = LotEntry::clone(&catalog.lots[id as usize]);
                entry.recalled = true;
                catalog.lots[id as usize] = Arc::new(entry);
            }
        });
    }

    /// The id of a registered lot.
    pub fn lot_id(&self, gtin: u64, lot: &str) -> Option<LotId> {
        self.catalog
            .read()
            .lot_ids
            .get(&gtin)
            .and_then(|m| m.get(lot))
            .copied()
    }

    /// Puts serial entries of one GTIN. Call after the durable commit and
    /// before answering. Fails if the GTIN is unknown or owned by another
    /// partition.
    pub fn put_serials<'a>(
        &self,
        gtin: u64,
        entries: impl IntoIterator<Item = (&'a [u8], SerialEntry)>,
    ) -> Result<(), IndexError> {
        let partition = self
            .catalog
            .read()
            .products
            .get(&gtin)
            .map(|p| p.partition)
            .ok_or(IndexError::UnknownProduct(gtin))?;
        let partition_index = partition as usize;
        let Some(part) = self.partitions.get(partition_index) else {
            return Err(IndexError::WrongPartition {
                gtin,
                owner: partition,
                partition: partition_index,
            });
        };
        // Hash everything first, then insert with the slots prefetched a few
        // entries ahead (inserts into a large table are cache misses too).
        let hashed: Vec<(KeyHash, u64)> = entries
            .into_iter()
            .map(|(serial, entry)| (self.hash(gtin, serial), entry.word()))
            .collect();
        let _writer = part.writer.lock();
        let mut table = Arc::clone(&part.table.read());
        let mut len = part.len.load(Ordering::Relaxed);
        for (hash, _) in hashed.iter().take(PREFETCH_DISTANCE) {
            table.prefetch(*hash);
        }
        for (i, (hash, word)) in hashed.iter().enumerate() {
            if let Some((ahead, _)) = hashed.get(i + PREFETCH_DISTANCE) {
                table.prefetch(*ahead);
            }
            if (len + 1) as f64 > table.capacity() as f64 * LOAD_MAX {
                table = grow(part, &table);
            }
            if table.put(*hash, *word) {
                len += 1;
                part.len.store(len, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Grows the table of `gtin`'s partition, if needed, to hold `more`
    /// serials besides those it holds, in one step: a writer about to index
    /// a large pool copies the table once instead of at every growth by
    /// `GROWTH` on the way. Does nothing for an unknown GTIN.
    pub fn reserve_more(&self, gtin: u64, more: u64) {
        let Some(partition) = self.catalog.read().products.get(&gtin).map(|p| p.partition) else {
            return;
        };
        let Some(part) = self.partitions.get(partition as usize) else {
            return;
        };
        let len = part.len.load(Ordering::Relaxed);
        self.reserve(partition as usize, len.saturating_add(more));
    }

    /// Grows `partition`'s table, if needed, to hold `serials` without
    /// growing again (start-up, where the count is known from storage).
    pub fn reserve(&self, partition: usize, serials: u64) {
        let Some(part) = self.partitions.get(partition) else {
            return;
        };
        let _writer = part.writer.lock();
        let table = Arc::clone(&part.table.read());
        let slots = (serials as f64 / LOAD_MAX).ceil() as usize + SLOTS_PER_BUCKET;
        if slots > table.capacity() {
            let bigger = Table::with_slots(slots);
            table.copy_into(&bigger);
            *part.table.write() = Arc::new(bigger);
        }
    }

    /// A consistent view for one request or batch.
    pub fn view(&self) -> View<'_> {
        View {
            index: self,
            catalog: Arc::clone(&self.catalog.read()),
            tables: self
                .partitions
                .iter()
                .map(|part| Arc::clone(&part.table.read()))
                .collect(),
        }
    }

    /// Every lot of the catalog with its id, in id order.
    pub fn lot_entries(&self) -> Vec<(LotId, Arc<LotEntry>)> {
        let catalog = self.catalog.read();
        catalog
            .lots
            .iter()
            .enumerate()
            .map(|(id, lot)| (id as LotId, Arc::clone(lot)))
            .collect()
    }

    /// Counts every commissioned serial by lot and state, in one pass over
    /// all tables (about 0.1 s per 10 million serials). Serials are read one
    /// by one while writers go on, so the counts are not a snapshot of one
    /// instant; each serial is counted once, in the state it had when read.
    pub fn lot_counts(&self) -> HashMap<LotId, LotCounts> {
        let mut counts: HashMap<LotId, LotCounts> = HashMap::new();
        for part in self.partitions.iter() {
            let table = Arc::clone(&part.table.read());
            table.for_each_entry(|word| {
                let entry = SerialEntry::from_word(word);
                let Some(lot) = entry.lot else {
                    return;
                };
                let lot = counts.entry(lot).or_default();
                match entry.state {
                    PackState::Active => lot.active += 1,
                    PackState::Decommissioned => {
                        lot.decommissioned[usize::from(entry.reason).min(8)] += 1;
                    }
                    _ => {}
                }
            });
        }
        counts
    }

    /// Size figures.
    pub fn stats(&self) -> IndexStats {
        let catalog = self.catalog.read();
        let mut stats = IndexStats {
            serials: 0,
            slots: 0,
            table_bytes: 0,
            products: catalog.products.len() as u64,
            lots: catalog.lots.len() as u64,
        };
        for part in self.partitions.iter() {
            let table = part.table.read();
            stats.serials += part.len.load(Ordering::Relaxed);
            stats.slots += table.capacity() as u64;
            stats.table_bytes += table.bytes() as u64;
        }
        stats
    }
}

fn grow(part: &Partition, table: &Table) -> Arc<Table> {
    let slots = ((table.capacity() as f64 * GROWTH) as usize).max(table.capacity() + 4);
    let bigger = Table::with_slots(slots);
    table.copy_into(&bigger);
    debug_assert_eq!(bigger.bytes() / SLOT_BYTES, bigger.capacity());
    let bigger = Arc::new(bigger);
    *part.table.write() = Arc::clone(&bigger);
    bigger
}

/// Today's date in UTC (1970-01-01 if the clock is before it).
pub fn today_utc() -> CalendarDate {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0);
    CalendarDate::from_days_since_epoch(days).unwrap_or(CalendarDate::UNIX_EPOCH)
}

/// One pack to verify: GTIN (14 digits as a number), serial, and the lot and
/// expiry if given.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// GTIN value.
    pub gtin: u64,
    /// Serial bytes (CSET 82, case-sensitive).
    pub serial: &'a [u8],
    /// Lot and expiry given.
    pub given: Given<'a>,
}

/// A snapshot of the catalog plus the partitions' current tables, for one
/// request or batch. Serial states are read live from the tables.
#[derive(Debug)]
pub struct View<'a> {
    index: &'a StatusIndex,
    catalog: Arc<Catalog>,
    tables: Vec<Arc<Table>>,
}

/// How many queries ahead [`View::verify_many`] prefetches: enough cache
/// misses in flight to cover memory latency while earlier queries are judged.
pub(crate) const PREFETCH_DISTANCE: usize = 16;

impl View<'_> {
    /// The raw entry of (GTIN, serial), if the serial was ever issued.
    pub fn entry(&self, gtin: u64, serial: &[u8]) -> Option<SerialEntry> {
        let partition = self.catalog.products.get(&gtin)?.partition;
        let hash = self.index.hash(gtin, serial);
        self.tables
            .get(partition as usize)?
            .get(hash)
            .map(SerialEntry::from_word)
    }

    /// The id of a registered lot, in this view's catalog.
    pub fn lot_id(&self, gtin: u64, lot: &str) -> Option<LotId> {
        self.catalog.lot_ids.get(&gtin)?.get(lot).copied()
    }

    /// The catalog's lot `id`.
    pub fn lot(&self, id: LotId) -> Option<&LotEntry> {
        self.catalog.lots.get(id as usize).map(|lot| &**lot)
    }

    /// Verifies one pack.
    pub fn verify(&mut self, query: &Query<'_>, today: CalendarDate, purpose: Purpose) -> Verdict {
        let entry = self.entry(query.gtin, query.serial);
        let product = self.catalog.products.get(&query.gtin).copied();
        self.judge_entry(query, product, entry, today, purpose)
    }

    fn judge_entry(
        &mut self,
        query: &Query<'_>,
        product: Option<ProductEntry>,
        entry: Option<SerialEntry>,
        today: CalendarDate,
        purpose: Purpose,
    ) -> Verdict {
        let entry = entry.unwrap_or(SerialEntry {
            state: PackState::Unknown,
            reason: 0,
            flags: 0,
            lot: None,
        });
        // A lot added after this view's catalog was taken: refresh once.
        if entry
            .lot
            .is_some_and(|id| id as usize >= self.catalog.lots.len())
        {
            self.catalog = Arc::clone(&self.index.catalog.read());
        }
        let catalog = &self.catalog;
        let lot = entry
            .lot
            .and_then(|id| catalog.lots.get(id as usize))
            .map(|lot| LotFacts {
                lot: &lot.lot,
                effective_expiry: lot.effective_expiry,
                recalled: lot.recalled,
            });
        // Only asked when a given lot differs from the record (EU "unknown
        // batch" versus "batch does not match serial").
        let given_lot_registered = match (query.given.lot, lot) {
            (Some(given), Some(record)) if given != record.lot => catalog
                .lot_ids
                .get(&query.gtin)
                .is_some_and(|lots| lots.contains_key(given)),
            _ => false,
        };
        let facts = Facts {
            product_withdrawn: product.map(|p| p.withdrawn),
            state: entry.state,
            reason: entry.reason,
            flags: entry.flags,
            lot,
            given_lot_registered,
        };
        judge(query.given, facts, today, purpose)
    }

    /// Verifies many packs; `out` receives one verdict per query, in order.
    /// All keys are hashed first; then each query's home bucket is
    /// prefetched [`PREFETCH_DISTANCE`] queries ahead of its lookup, so many
    /// cache misses are in flight while earlier queries are judged.
    pub fn verify_many(
        &mut self,
        queries: &[Query<'_>],
        today: CalendarDate,
        purpose: Purpose,
        out: &mut Vec<Verdict>,
    ) {
        // The product is looked up once per query, here.
        let hashes: Vec<(Option<ProductEntry>, KeyHash)> = queries
            .iter()
            .map(|query| {
                let product = self.catalog.products.get(&query.gtin).copied();
                let hash = match product {
                    Some(_) => self.index.hash(query.gtin, query.serial),
                    None => KeyHash { tag: 0, check: 0 },
                };
                (product, hash)
            })
            .collect();
        // Cloned (a few Arc increments per batch) so judging may refresh the catalog.
        let tables = self.tables.clone();
        let table_of =
            |product: Option<ProductEntry>| product.and_then(|p| tables.get(p.partition as usize));
        for (product, hash) in hashes.iter().take(PREFETCH_DISTANCE) {
            if let Some(table) = table_of(*product) {
                table.prefetch(*hash);
            }
        }
        for (i, query) in queries.iter().enumerate() {
            if let Some((product, hash)) = hashes.get(i + PREFETCH_DISTANCE)
                && let Some(table) = table_of(*product)
            {
                table.prefetch(*hash);
            }
            let (product, hash) = hashes[i];
            let entry = table_of(product)
                .and_then(|table| table.get(hash))
                .map(SerialEntry::from_word);
            let verdict = self.judge_entry(query, product, entry, today, purpose);
            out.push(verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semantics::{EuAlert, FailureReason};

    fn index() -> StatusIndex {
        StatusIndex::with_secret(2, (0..192).map(|i| (i * 13 + 1) as u8).collect())
    }

    fn today() -> CalendarDate {
        "2026-11-21".parse().unwrap()
    }

    fn expiry(text: &str) -> Expiry {
        Expiry::new(text).unwrap()
    }

    #[test]
    fn word_round_trip() {
        for entry in [
            SerialEntry::ALLOCATED,
            SerialEntry {
                state: PackState::Decommissioned,
                reason: 8,
                flags: 3,
                lot: Some(LOTS_MAX - 1),
            },
            SerialEntry {
                state: PackState::Active,
                reason: 0,
                flags: 0,
                lot: Some(0),
            },
        ] {
            assert_eq!(SerialEntry::from_word(entry.word()), entry);
        }
    }

    #[test]
    fn lot_counts_count_each_commissioned_serial_by_state_and_reason() {
        let index = index();
        let gtin = 9_520_123_456_788;
        index.put_product(gtin, 1, false);
        let l1 = index.put_lot(gtin, "L1", expiry("271231"), false).unwrap();
        let l2 = index.put_lot(gtin, "L2", expiry("271231"), false).unwrap();
        let entry = |state, reason, lot| SerialEntry {
            state,
            reason,
            flags: 0,
            lot: Some(lot),
        };
        let serials: Vec<String> = (0..10).map(|n| format!("S{n}")).collect();
        let entries = [
            entry(PackState::Active, 0, l1),
            entry(PackState::Active, 0, l1),
            entry(PackState::Decommissioned, 1, l1),
            entry(PackState::Decommissioned, 2, l2),
            entry(PackState::Decommissioned, 2, l2),
            SerialEntry::ALLOCATED,
        ];
        index
            .put_serials(
                gtin,
                serials
                    .iter()
                    .map(|s| s.as_bytes())
                    .zip(entries.iter().copied()),
            )
            .unwrap();
        let counts = index.lot_counts();
        assert_eq!(counts[&l1].active, 2);
        assert_eq!(counts[&l1].decommissioned[1], 1);
        assert_eq!(counts[&l2].active, 0);
        assert_eq!(counts[&l2].decommissioned[2], 2);
        assert_eq!(counts.len(), 2);
        let entries = index.lot_entries();
        let lots: Vec<&str> = entries.iter().map(|(_, l)| &*l.lot).collect();
        assert_eq!(lots, ["L1", "L2"]);
    }

    #[test]
    fn reserve_more_grows_once_for_what_is_coming() {
        let index = index();
        let gtin = 9_520_123_456_788;
        index.put_product(gtin, 1, false);
        let serials: Vec<String> = (0..60_000).map(|n| format!("S{n:08}")).collect();
        let put = |range: std::ops::Range<usize>| {
            index
                .put_serials(
                    gtin,
                    serials[range]
                        .iter()
                        .map(|s| (s.as_bytes(), SerialEntry::ALLOCATED)),
                )
                .unwrap();
        };
        put(0..10_000);
        index.reserve_more(gtin, 50_000);
        let slots = index.stats().slots;
        assert!(slots as f64 * LOAD_MAX >= 60_000.0, "{slots} slots");
        put(10_000..60_000);
        let stats = index.stats();
        assert_eq!(stats.slots, slots, "the table grew again");
        assert_eq!(stats.serials, 60_000);
        // An unknown GTIN reserves nothing.
        index.reserve_more(4_012_345_000_009, 1_000_000);
        assert_eq!(index.stats().slots, slots);
    }

    #[test]
    fn put_and_verify_through_growth() {
        let index = index();
        index.put_product(9_520_123_456_788, 1, false);
        let lot = index
            .put_lot(9_520_123_456_788, "L1", expiry("271231"), false)
            .unwrap();
        let serials: Vec<String> = (0..50_000).map(|n| format!("S{n:08}")).collect();
        index
            .put_serials(
                9_520_123_456_788,
                serials
                    .iter()
                    .map(|s| (s.as_bytes(), SerialEntry::ALLOCATED)),
            )
            .unwrap();
        let active = SerialEntry {
            state: PackState::Active,
            reason: 0,
            flags: 0,
            lot: Some(lot),
        };
        index
            .put_serials(
                9_520_123_456_788,
                serials[..100].iter().map(|s| (s.as_bytes(), active)),
            )
            .unwrap();
        let stats = index.stats();
        assert_eq!(stats.serials, 50_000);
        assert!(stats.slots as f64 * LOAD_MAX >= 50_000.0);
        let mut view = index.view();
        let queries: Vec<Query<'_>> = serials
            .iter()
            .map(|s| Query {
                gtin: 9_520_123_456_788,
                serial: s.as_bytes(),
                given: Given {
                    lot: Some("L1"),
                    expiry: Some(expiry("271231")),
                },
            })
            .collect();
        let mut out = Vec::new();
        view.verify_many(&queries, today(), Purpose::Verify, &mut out);
        assert_eq!(out.len(), 50_000);
        assert!(
            out[..100]
                .iter()
                .all(|v| v.verified && v.state == PackState::Active)
        );
        assert!(
            out[100..]
                .iter()
                .all(|v| !v.verified && v.state == PackState::Allocated)
        );
        let single = view.verify(&queries[7], today(), Purpose::Verify);
        assert_eq!(single, out[7]);
    }

    #[test]
    fn unknown_product_unknown_serial_and_unknown_batch() {
        let index = index();
        index.put_product(12, 0, false);
        let lot = index.put_lot(12, "L1", expiry("271231"), false).unwrap();
        index.put_lot(12, "L2", expiry("281231"), false).unwrap();
        let entry = SerialEntry {
            state: PackState::Active,
            reason: 0,
            flags: 0,
            lot: Some(lot),
        };
        index.put_serials(12, [(&b"A"[..], entry)]).unwrap();
        let mut view = index.view();
        let ask = |view: &mut View<'_>, gtin, serial: &'static [u8], lot| {
            view.verify(
                &Query {
                    gtin,
                    serial,
                    given: Given { lot, expiry: None },
                },
                today(),
                Purpose::Verify,
            )
        };
        assert_eq!(
            ask(&mut view, 13, b"A", None).alert,
            Some(EuAlert::UnknownProduct)
        );
        assert_eq!(
            ask(&mut view, 12, b"B", None).alert,
            Some(EuAlert::UnknownSerial)
        );
        assert_eq!(
            ask(&mut view, 12, b"A", Some("L2")).alert,
            Some(EuAlert::BatchDoesNotMatchSerial)
        );
        let v = ask(&mut view, 12, b"A", Some("L3"));
        assert_eq!(v.alert, Some(EuAlert::UnknownBatch));
        assert_eq!(v.failure, Some(FailureReason::NoMatchGtinSerialLot));
        assert!(ask(&mut view, 12, b"A", Some("L1")).verified);
    }

    #[test]
    fn recall_and_withdraw_are_seen_by_new_views() {
        let index = index();
        index.put_product(12, 0, false);
        let lot = index.put_lot(12, "L1", expiry("271231"), false).unwrap();
        let entry = SerialEntry {
            state: PackState::Active,
            reason: 0,
            flags: 0,
            lot: Some(lot),
        };
        index.put_serials(12, [(&b"A"[..], entry)]).unwrap();
        let query = Query {
            gtin: 12,
            serial: b"A",
            given: Given::default(),
        };
        assert!(
            !index
                .view()
                .verify(&query, today(), Purpose::Verify)
                .recalled
        );
        index.set_lot_recalled(12, "L1");
        assert!(
            index
                .view()
                .verify(&query, today(), Purpose::Verify)
                .recalled
        );
        index.set_product_withdrawn(12);
        assert!(
            index
                .view()
                .verify(&query, today(), Purpose::Verify)
                .withdrawn
        );
    }

    #[test]
    fn a_lot_newer_than_the_view_is_found() {
        let index = index();
        index.put_product(12, 0, false);
        let mut view = index.view();
        let lot = index.put_lot(12, "L1", expiry("271231"), false).unwrap();
        let entry = SerialEntry {
            state: PackState::Active,
            reason: 0,
            flags: 0,
            lot: Some(lot),
        };
        index.put_serials(12, [(&b"A"[..], entry)]).unwrap();
        // The view was taken before the lot existed and before the product's
        // serial table grew: it still answers the live state.
        let verdict = view.verify(
            &Query {
                gtin: 12,
                serial: b"A",
                given: Given {
                    lot: Some("L1"),
                    expiry: None,
                },
            },
            today(),
            Purpose::Verify,
        );
        assert!(verdict.verified, "{verdict:?}");
    }

    #[test]
    fn serials_of_unknown_products_are_refused() {
        let index = index();
        assert!(matches!(
            index.put_serials(5, [(&b"A"[..], SerialEntry::ALLOCATED)]),
            Err(IndexError::UnknownProduct(5))
        ));
    }

    #[test]
    fn different_secrets_hash_differently() {
        // (A secret of equal bytes would not do: xxh3 XORs secret words.)
        let a = StatusIndex::with_secret(1, (0..192).map(|i| i as u8).collect());
        let b = StatusIndex::with_secret(1, (0..192).map(|i| (i * 7 + 3) as u8).collect());
        assert_ne!(a.hash(1, b"X"), b.hash(1, b"X"));
        assert_eq!(a.hash(1, b"X"), a.hash(1, b"X"));
        assert_ne!(a.hash(1, b"X"), a.hash(2, b"X"));
    }
}
