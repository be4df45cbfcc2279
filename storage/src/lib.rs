//! RocksDB storage for serialsvc: the durable options, the column families, the
//! key and value encodings, the format-version check and the one way to change
//! state (a [`ChangeSet`] committed as a single synced `WriteBatch`).
//!
//! This crate knows RocksDB and nothing of tonic, HTTP or the GS1 parsers: keys
//! take plain integers and bytes, so the layers above decide what they mean.
//!
//! Invariants kept here:
//! - every acknowledged commit is in the WAL and fsynced before [`Store::commit`]
//!   returns (see [`options`]);
//! - every commit carries at least one event, written in the same batch with a
//!   gap-free, increasing sequence number;
//! - every value carries a version byte and a CRC-32C checksum, verified on read;
//! - an I/O error while writing, or detected corruption, fail-stops the store:
//!   later writes are refused until restart ([`Store::fail_stopped`]).

mod error;
pub mod keys;
pub mod merge;
pub mod options;
pub mod stats;
mod store;
mod trim;
pub mod value;

pub use error::StorageError;
pub use keys::Family;
pub use merge::MergeOperator;
pub use store::{
    CHANGE_SET_OPERATIONS_MAX, COMMIT_OPERATIONS, COMMIT_SECONDS, ChainReport, ChangeSet,
    CommitReceipt, FORMAT_VERSION, PreparedChange, Store, Versioned,
};
