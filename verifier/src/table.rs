//! A grow-only, open-addressing hash table of serial states for one partition.
//!
//! Readers never lock: every field of a slot is an `AtomicU64`, a slot's tag
//! never changes once published, and its state word (check bits + entry)
//! is one atomic store, so a reader sees either the old
//! or the new state, never a torn one. Exactly one writer (the partition's
//! owner, under the partition's writer mutex) inserts and updates.
//!
//! Layout: buckets of four 16-byte slots in one 64-byte cache line (four
//! 64-bit hash tags, then four state words whose top 16 bits hold more hash
//! bits), so a lookup costs one cache miss. A key's home bucket is
//! `fastrange(tag, buckets)`; collisions spill to the next bucket (linear
//! probing by bucket). Slots are never deleted, so a probe stops at the first
//! empty slot. Because the home bucket comes from a multiply-shift (not a
//! mask), the table can grow by any factor, which keeps memory per serial
//! within a narrow band (see `GROWTH` in `index.rs`).
//!
//! A key is 80 bits of a keyed hash (64-bit tag + 16 check bits). An
//! unknown serial reads as issued only if those 80 bits equal a stored
//! key's: about n / 2^80 per lookup (8 × 10^-18 with 10 million serials),
//! and a client cannot aim at it without the secret.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per bucket.
pub(crate) const SLOTS: usize = 4;

/// Bytes one slot costs (hash tag and state word).
pub(crate) const SLOT_BYTES: usize = 16;

/// Bits of the state word that carry the entry; the top 16 carry more hash.
pub(crate) const ENTRY_BITS: u32 = 48;
const ENTRY_MASK: u64 = (1 << ENTRY_BITS) - 1;

/// An 80-bit keyed hash of (GTIN, serial): a 64-bit tag (never 0: 0 marks
/// an empty slot) that also picks the home bucket, and 16 check bits kept
/// in the top of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyHash {
    pub(crate) tag: u64,
    pub(crate) check: u16,
}

impl KeyHash {
    pub(crate) fn from_u128(hash: u128) -> Self {
        let tag = (hash >> 64) as u64;
        KeyHash {
            // A zero tag would read as an empty slot.
            tag: if tag == 0 { 1 } else { tag },
            check: hash as u16,
        }
    }

    fn word(self, entry: u64) -> u64 {
        (u64::from(self.check) << ENTRY_BITS) | (entry & ENTRY_MASK)
    }
}

/// A hint to bring `value`'s cache line into L1. The only `unsafe` in the
/// workspace: `_mm_prefetch` is an `unsafe fn` only because it is a
/// target-feature intrinsic (SSE, which every x86-64 CPU has); the
/// instruction never faults, never writes and never changes what any load
/// returns, and the address comes from a live reference.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: see above; SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// One cache line: four tags, then four state words.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Bucket {
    tag: [AtomicU64; SLOTS],
    word: [AtomicU64; SLOTS],
}

/// One immutable-size table. Growing builds a new, larger table (see
/// `grow` in `index.rs`); the home bucket depends only on the stored tag,
/// so entries can move without the original key.
#[derive(Debug)]
pub(crate) struct Table {
    buckets: Box<[Bucket]>,
}

impl Table {
    /// A table with at least `slots` slots (at least one bucket).
    pub(crate) fn with_slots(slots: usize) -> Table {
        let buckets = slots.div_ceil(SLOTS).max(1);
        Table {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
        }
    }

    /// Slots in the table.
    pub(crate) fn capacity(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    /// Bytes the slots take.
    pub(crate) fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    #[inline]
    fn home(&self, tag: u64) -> usize {
        ((u128::from(tag) * self.buckets.len() as u128) >> 64) as usize
    }

    /// Asks the CPU to start loading the key's home bucket (one cache line),
    /// so a `get` a little later finds it in cache. Batches issue these a
    /// few queries ahead, so many cache misses are in flight at once.
    #[inline]
    pub(crate) fn prefetch(&self, hash: KeyHash) {
        prefetch(&self.buckets[self.home(hash.tag)]);
    }

    /// The entry (low 48 bits of the state word) stored for `hash`, if any.
    #[inline]
    pub(crate) fn get(&self, hash: KeyHash) -> Option<u64> {
        let count = self.buckets.len();
        let mut index = self.home(hash.tag);
        for _ in 0..count {
            let bucket = &self.buckets[index];
            for slot in 0..SLOTS {
                let tag = bucket.tag[slot].load(Ordering::Acquire);
                if tag == 0 {
                    return None;
                }
                if tag == hash.tag {
                    let word = bucket.word[slot].load(Ordering::Acquire);
                    if (word >> ENTRY_BITS) as u16 == hash.check {
                        return Some(word & ENTRY_MASK);
                    }
                }
            }
            index += 1;
            if index == count {
                index = 0;
            }
        }
        None
    }

    /// Inserts or updates `entry` (48 bits). Returns true when a new slot was
    /// taken. The caller is the only writer and keeps the load factor below 1.
    pub(crate) fn put(&self, hash: KeyHash, entry: u64) -> bool {
        self.put_word(hash.tag, hash.word(entry), hash.check)
    }

    fn put_word(&self, tag: u64, word: u64, check: u16) -> bool {
        let count = self.buckets.len();
        let mut index = self.home(tag);
        for _ in 0..count {
            let bucket = &self.buckets[index];
            for slot in 0..SLOTS {
                let stored = bucket.tag[slot].load(Ordering::Relaxed);
                if stored == 0 {
                    bucket.word[slot].store(word, Ordering::Relaxed);
                    // Publishes the word with it (readers load tags with Acquire).
                    bucket.tag[slot].store(tag, Ordering::Release);
                    return true;
                }
                if stored == tag
                    && (bucket.word[slot].load(Ordering::Relaxed) >> ENTRY_BITS) as u16 == check
                {
                    bucket.word[slot].store(word, Ordering::Release);
                    return false;
                }
            }
            index += 1;
            if index == count {
                index = 0;
            }
        }
        // Unreachable while the owner keeps the load factor below 1; losing
        // an entry silently would be worse than stopping.
        panic!("status index table full ({} slots)", self.capacity());
    }

    /// Copies every entry into `other` (growing).
    pub(crate) fn copy_into(&self, other: &Table) {
        for bucket in self.buckets.iter() {
            for slot in 0..SLOTS {
                let tag = bucket.tag[slot].load(Ordering::Acquire);
                if tag != 0 {
                    let word = bucket.word[slot].load(Ordering::Acquire);
                    other.put_word(tag, word, (word >> ENTRY_BITS) as u16);
                }
            }
        }
    }

    /// Calls `visit` with the entry (48-bit state word) of every occupied slot.
    pub(crate) fn for_each_entry(&self, mut visit: impl FnMut(u64)) {
        for bucket in self.buckets.iter() {
            for slot in 0..SLOTS {
                if bucket.tag[slot].load(Ordering::Acquire) != 0 {
                    let word = bucket.word[slot].load(Ordering::Acquire);
                    visit(word & ((1 << ENTRY_BITS) - 1));
                }
            }
        }
    }

    /// Occupied slots (tests).
    #[cfg(test)]
    fn occupied(&self) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.tag.iter())
            .filter(|t| t.load(Ordering::Relaxed) != 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> KeyHash {
        KeyHash::from_u128(xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()))
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::size_of::<Bucket>(), SLOTS * SLOT_BYTES);
    }

    #[test]
    fn put_get_update_until_nearly_full() {
        let table = Table::with_slots(1000);
        let fill = table.capacity() * 95 / 100;
        for n in 0..fill as u64 {
            assert!(table.put(hash(n), n + 7));
        }
        for n in 0..fill as u64 {
            assert_eq!(table.get(hash(n)), Some(n + 7), "key {n}");
        }
        assert!(!table.put(hash(3), 99));
        assert_eq!(table.get(hash(3)), Some(99));
        for n in fill as u64..fill as u64 + 1000 {
            assert_eq!(table.get(hash(n)), None, "absent key {n}");
        }
        assert_eq!(table.occupied(), fill);
        let bigger = Table::with_slots(table.capacity() * 2);
        table.copy_into(&bigger);
        for n in 0..fill as u64 {
            assert_eq!(bigger.get(hash(n)), table.get(hash(n)), "key {n}");
        }
    }

    #[test]
    fn same_tag_different_check_bits_are_different_keys() {
        let table = Table::with_slots(8);
        let a = KeyHash { tag: 5, check: 1 };
        let b = KeyHash { tag: 5, check: 2 };
        table.put(a, 10);
        assert_eq!(table.get(b), None);
        table.put(b, 20);
        assert_eq!((table.get(a), table.get(b)), (Some(10), Some(20)));
    }

    #[test]
    fn zero_tag_is_stored_as_one() {
        let hash = KeyHash::from_u128(42);
        assert_eq!(hash, KeyHash { tag: 1, check: 42 });
    }
}
