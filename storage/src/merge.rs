//! Merge operators: how a family's merge operands are applied to its values.
//!
//! A writer that already knows a change is valid (the issuer decides from its
//! in-memory status index) can record it with [`crate::ChangeSet::merge`]
//! instead of reading the stored value, changing it and writing it back.
//! RocksDB keeps the operand beside the value and applies it on every read,
//! iteration and compaction, through the operator registered here when the
//! store is opened. The layer that owns a family's value format supplies the
//! operator; this module only checks and writes the envelopes around it.
//!
//! A store opened without the operator of a family that holds operands cannot
//! read those keys: RocksDB answers an error, never a stale value.

use rocksdb::MergeOperands;

use crate::value;

/// Applies operands to a stored value. Every argument and the result are
/// `(envelope version, payload)`; the envelopes' checksums are checked and
/// written here.
pub type FullMergeFn =
    fn(existing: Option<(u8, &[u8])>, operands: &[(u8, &[u8])]) -> Result<(u8, Vec<u8>), String>;

/// Combines consecutive operands into one, or `None` to keep them apart.
pub type PartialMergeFn = fn(operands: &[(u8, &[u8])]) -> Option<(u8, Vec<u8>)>;

/// A family's merge operator.
#[derive(Clone, Copy, Debug)]
pub struct MergeOperator {
    /// Name recorded in RocksDB's OPTIONS file. Keep it stable: it names the
    /// operand format.
    pub name: &'static str,
    /// Applies operands, oldest first, to the value (or to nothing).
    pub full: FullMergeFn,
    /// Folds consecutive operands together where it can.
    pub partial: PartialMergeFn,
}

impl MergeOperator {
    /// Registers the operator on a family's options ([`crate::Store::open_with`]
    /// does it for the store; tools that open RocksDB directly must too).
    pub fn install(self, options: &mut rocksdb::Options) {
        let full = self.full;
        let partial = self.partial;
        let name = self.name;
        options.set_merge_operator(
            name,
            move |key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands| {
                full_merge(name, full, key, existing, operands)
            },
            move |key: &[u8], _existing: Option<&[u8]>, operands: &MergeOperands| {
                let opened = open_operands(name, key, operands).ok()?;
                let (version, payload) = partial(&opened)?;
                Some(value::encode(version, &payload))
            },
        );
    }
}

fn open_operands<'a>(
    name: &str,
    key: &[u8],
    operands: &'a MergeOperands,
) -> Result<Vec<(u8, &'a [u8])>, ()> {
    operands
        .iter()
        .map(|operand| {
            value::decode(operand).map_err(|error| {
                tracing::error!(operator = name, key = ?key, %error, "merge operand fails its envelope check");
            })
        })
        .collect()
}

fn full_merge(
    name: &str,
    full: FullMergeFn,
    key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    // `None` makes RocksDB answer a corruption error for the read, and fail
    // the compaction that met it: a bad value is never served or rewritten.
    let existing = match existing.map(value::decode).transpose() {
        Ok(existing) => existing,
        Err(error) => {
            tracing::error!(operator = name, key = ?key, %error, "merge base fails its envelope check");
            return None;
        }
    };
    let opened = open_operands(name, key, operands).ok()?;
    match full(existing, &opened) {
        Ok((version, payload)) => Some(value::encode(version, &payload)),
        Err(detail) => {
            tracing::error!(operator = name, key = ?key, detail, "merge failed");
            None
        }
    }
}
