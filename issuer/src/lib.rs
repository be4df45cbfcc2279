//! The write side of serialsvc: serial generators and market templates, pools,
//! commissioning, decommission and undo, aggregation.
//!
//! Depends on `gs1` and `storage`; knows nothing of tonic or HTTP. Every state
//! change goes through the single writer of the GTIN's shard.
//!
//! Status: filled in by issue 3 (pools) and issue 5 (decommissioning). Until then
//! the server answers the corresponding RPCs with `UNIMPLEMENTED`.
