//! The read side of serialsvc: the lock-light in-memory status index and the
//! verification semantics (EU alert codes, US VRS answers).
//!
//! Depends on `gs1` and `storage`; knows nothing of tonic or HTTP.
//!
//! Status: filled in by issue 4. Until then the server answers verification RPCs
//! with `UNIMPLEMENTED`.
