use std::path::PathBuf;

/// Errors of the storage layer. Callers branch on the variant: `Io` and
/// `Corruption` mean "outcome indeterminate, the store is fail-stopped".
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data directory holds a format this build does not understand.
    #[error(
        "data directory {path} has storage format version {found}, this build supports version {supported}; refusing to open"
    )]
    UnsupportedFormatVersion {
        /// The data directory.
        path: PathBuf,
        /// The version recorded in the directory.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The data directory holds data but no format version: not ours, or damaged.
    #[error(
        "data directory {path} holds data but no storage format version; refusing to open (is it a serialsvc data directory?)"
    )]
    MissingFormatVersion {
        /// The data directory.
        path: PathBuf,
    },
    /// A stored value failed its checksum or could not be decoded.
    #[error("corrupt value in column family {family}: {detail}")]
    Corruption {
        /// The column family the value was read from.
        family: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A write was refused because an earlier I/O error or corruption fail-stopped the store.
    #[error("storage is fail-stopped after an earlier error ({0}); restart required")]
    FailStopped(String),
    /// The caller built an invalid change set (a programming error above this layer).
    #[error("invalid change set: {0}")]
    InvalidChangeSet(&'static str),
}
