//! RocksDB storage.
