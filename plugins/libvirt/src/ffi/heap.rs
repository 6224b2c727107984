//! The process's C heap (glibc's malloc, which Rust's global allocator and libvirt's
//! client both use): handing its free pages back to the kernel. Freed memory stays in
//! malloc's arenas, resident, until something asks for it again; after a burst of
//! large responses that is several MiB the agent would otherwise keep for good.
//! On targets without glibc this does nothing.

/// Returns the free pages of every malloc arena to the kernel (`malloc_trim(0)`, which
/// also releases whole free pages inside the heaps, not only at their tops). Returns
/// whether memory was released; `false` where the C library has no such call.
pub fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain integer (0: keep no padding), works under
        // malloc's own arena locks, and leaves every allocated block where it is: it
        // only advises the kernel that pages of free chunks are no longer needed.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> u64 {
        crate::ffi::own_status_kib("RssAnon:")
    }

    #[test]
    fn freed_small_blocks_go_back_to_the_kernel() {
        // 1024 blocks of 64 KiB (below malloc's mmap threshold, so they come from an
        // arena, one after the other), every other one freed: the freed ones cannot
        // merge into the free top of the heap (which malloc gives back by itself), so
        // their 32 MiB stay resident until trimmed. Other tests of this binary
        // allocate meanwhile, hence a wide margin.
        let blocks: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 64 * 1024]).collect();
        let (kept, freed): (Vec<_>, Vec<_>) = blocks
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        assert_eq!(
            freed.iter().map(|(_, b)| b[65535] as usize).sum::<usize>(),
            512
        );
        drop(freed);
        let before = rss_anon_kib();
        assert!(release_free_heap(), "malloc_trim released nothing");
        let after = rss_anon_kib();
        assert!(
            before.saturating_sub(after) >= 12 * 1024,
            "RssAnon {before} KiB -> {after} KiB after freeing 32 MiB"
        );
        assert_eq!(
            kept.iter().map(|(_, b)| b[65535] as usize).sum::<usize>(),
            512
        );
    }
}
