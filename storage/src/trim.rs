//! Keeps the allocator from holding freed memory.
//!
//! RocksDB allocates each memtable in arena blocks (1 MiB with 8 MiB
//! memtables). glibc's malloc raises its mmap threshold to the size of the
//! first mapped block freed, so later blocks come from the heap, where
//! freeing them after a flush leaves the pages resident and the heap
//! fragmented. [`fix_mmap_threshold`], called when a store opens, fixes the
//! threshold at 1 MiB so every such block is mapped on its own and unmapped
//! when freed: 1,000,000 commissioned serials at rest went from about 58–70
//! to 36–42 resident bytes each (BENCHMARKS.md, issue 9).
//! [`release_free_memory`] (`malloc_trim(0)`) returns every whole free page
//! of every arena (`madvise(MADV_DONTNEED)`); it is called only after an idle
//! flush, never on a request path.
//!
//! Both act on glibc's malloc, which is what RocksDB's C++ code allocates
//! with. The `serialsvc` binary gives Rust's own allocations to jemalloc,
//! whose background thread returns them; a program without such an
//! allocator (the tests, `serialsvc_chaos`) has glibc for both.

/// Returns free heap pages to the operating system; answers whether any
/// memory was released. A no-op (false) where the C library is not glibc.
#[allow(unsafe_code)]
pub(crate) fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes no pointer and touches only the
        // allocator's own free lists, under each arena's lock; it is safe to
        // call from any thread at any time.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Bytes from which glibc serves an allocation with its own `mmap`, fixed
/// (see [`fix_mmap_threshold`]).
pub(crate) const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`], so that
/// RocksDB's memtable arena blocks and other large buffers are always mapped
/// on their own and unmapped when freed, instead of being carved from the
/// heap once the dynamic threshold has risen (where they fragment it).
/// Answers whether the allocator took it; a no-op (false) off glibc.
#[allow(unsafe_code)]
pub(crate) fn fix_mmap_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` takes two integers and only changes the
        // allocator's tuning parameters under its own lock.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_fixed_threshold_and_the_trim() {
        assert!(
            super::fix_mmap_threshold(),
            "mallopt refused M_MMAP_THRESHOLD"
        );
        // A freed block above the threshold was unmapped, not kept: the
        // call must still work (its answer depends on the heap's state).
        drop(vec![1u8; 4 << 20]);
        let _ = super::release_free_memory();
    }
}
