//! Benchmarks of serialsvc: see `benches/` for criterion benches.
