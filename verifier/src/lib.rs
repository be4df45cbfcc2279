//! The read side of serialsvc: the lock-light in-memory status index and the
//! verification semantics (EU alert codes, US VRS answers).
//!
//! Depends on `gs1` only; knows nothing of RocksDB, tonic or HTTP. The
//! issuer's shard writers feed the index after every durable commit (and the
//! issuer rebuilds it from storage at start-up); the server's gRPC and HTTP
//! edges read it.

mod index;
pub mod semantics;
mod table;

pub use index::{
    IndexError, IndexStats, LOTS_MAX, LotCounts, LotEntry, LotId, Query, SerialEntry, StatusIndex,
    View, today_utc,
};
pub use semantics::{
    AdditionalInfo, DecommissionReason, EuAlert, FailureReason, FieldMatch, Given, PackState,
    Purpose, Verdict,
};

/// Bytes one serial slot takes in the index (before load factor).
pub const SLOT_BYTES: usize = table::SLOT_BYTES;
