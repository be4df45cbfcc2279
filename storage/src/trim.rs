//! Gives the memory the allocator holds free back to the operating system.
//!
//! RocksDB allocates each memtable in 16 MiB arena blocks. glibc's malloc
//! raises its mmap threshold to the size of the first such block freed, so
//! later blocks come from the heap, and freeing them after a flush leaves
//! the pages resident. `malloc_trim(0)` returns every whole free page of
//! every arena (`madvise(MADV_DONTNEED)`). It is called only after an idle
//! flush, never on a request path.

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
