//! The process's C heap (glibc's malloc, which Rust's global allocator and libvirt's
//! client both use): handing its free pages back to the kernel. Freed memory stays in
//! malloc's arenas, resident, until something asks for it again; after a burst of
//! large responses that is several MiB the agent would otherwise keep for good.
//! On targets without glibc this does nothing.
//!
//! It also fixes malloc's two thresholds at start ([`keep_free_heap_small`]): glibc
//! raises them by itself once a large block it had mapped apart is freed (a ~1.4 MB
//! response body at 22 domains), after which a thread arena keeps up to twice that
//! block's size of free memory at its top, resident, and `malloc_trim` does not give
//! back the top of a thread's arena. 200 clients left ~4 MiB that way on the lab.

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

/// Free memory a thread arena keeps at its top; more is handed back on the spot.
pub const TRIM_THRESHOLD: usize = 128 * 1024;

/// Blocks at least this large are mapped apart (and unmapped when freed): a response
/// body of up to this size comes from an arena and its pages go back by the trim
/// threshold when it is freed.
pub const MMAP_THRESHOLD: usize = 4 * 1024 * 1024;

/// Whether the user set malloc's thresholds in the environment (`GLIBC_TUNABLES` or the
/// older `MALLOC_*_` variables): then theirs stand.
pub fn thresholds_set_by_user(env: impl Fn(&str) -> Option<String>) -> bool {
    env("GLIBC_TUNABLES").is_some_and(|t| {
        t.contains("glibc.malloc.trim_threshold") || t.contains("glibc.malloc.mmap_threshold")
    }) || env("MALLOC_TRIM_THRESHOLD_").is_some()
        || env("MALLOC_MMAP_THRESHOLD_").is_some()
}

/// Fixes malloc's trim threshold at [`TRIM_THRESHOLD`] and its mmap threshold at
/// [`MMAP_THRESHOLD`] (setting either stops glibc's own adjustment of both), unless the
/// user set them in the environment. Call before threads are started. Returns whether
/// they were set.
pub fn keep_free_heap_small() -> bool {
    if thresholds_set_by_user(|k| std::env::var(k).ok()) {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two plain integers and only changes malloc's parameters,
        // under malloc's own lock; both values fit an `int`.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod threshold_tests {
    use super::thresholds_set_by_user;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_user_s_malloc_thresholds_stand() {
        let cases: &[(&'static [(&'static str, &'static str)], bool)] = &[
            (&[], false),
            (&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")], false),
            (
                &[(
                    "GLIBC_TUNABLES",
                    "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=1048576",
                )],
                true,
            ),
            (
                &[("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")],
                true,
            ),
            (&[("MALLOC_TRIM_THRESHOLD_", "0")], true),
            (&[("MALLOC_MMAP_THRESHOLD_", "0")], true),
        ];
        for (env, set) in cases {
            assert_eq!(thresholds_set_by_user(env_of(env)), *set, "{env:?}");
        }
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
