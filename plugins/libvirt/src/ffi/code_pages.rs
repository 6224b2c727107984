//! The process's read-only file mappings (the code and constants of the agent's binary
//! and of every library loaded, libvirt's client and its dependencies first): handing
//! their page-table entries back. Loading libvirt runs the initialisation code of some
//! thirty libraries, and the kernel maps each touched code page together with its
//! cached neighbours (fault-around, 64 KiB), so most of those libraries stay counted in
//! the agent's resident set though the agent never runs them again. Dropping the
//! entries of segments that are mapped read-only and were never written (not the
//! relocated RELRO data, not a writable segment, and of the rest only pages that
//! `/proc/self/pagemap` shows are still the file's own: not a page a debugger's
//! breakpoint or a uprobe wrote) changes nothing the agent can see: a page it runs again
//! is mapped again from the page cache, where the pages stay.
//! On targets other than 64-bit Linux with glibc this does nothing.

/// What [`release_code_pages`] did: how many segments, and how many bytes of address
/// space it handed back (resident or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodePagesReleased {
    pub segments: usize,
    pub bytes: usize,
}

/// Drops the page-table entries of every read-only, never-written segment of every
/// loaded object (the executable and its libraries; not the vDSO). The loader's lock is
/// held throughout, so no object is unloaded (and its range reused) meanwhile.
pub fn release_code_pages() -> CodePagesReleased {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        linux::release()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        CodePagesReleased::default()
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod linux {
    use super::CodePagesReleased;
    use std::ops::Range;

    /// The whole pages of `segment` outside every range of `written`, page-aligned
    /// inwards: a page shared with a neighbouring segment is never included.
    pub(super) fn releasable(
        segment: Range<usize>,
        written: &[Range<usize>],
        page: usize,
    ) -> Vec<Range<usize>> {
        let up = |a: usize| a.div_ceil(page) * page;
        let down = |a: usize| a / page * page;
        let end = down(segment.end);
        // What must be kept, rounded outwards, in address order.
        let mut kept: Vec<(usize, usize)> =
            written.iter().map(|w| (down(w.start), up(w.end))).collect();
        kept.sort_unstable();
        let mut parts = Vec::new();
        let mut at = up(segment.start);
        for (keep_start, keep_end) in kept {
            if keep_start >= end {
                break;
            }
            if keep_start > at {
                parts.push(at..keep_start);
            }
            at = at.max(keep_end);
        }
        if at < end {
            parts.push(at..end);
        }
        parts
    }

    struct Walk {
        page: usize,
        vdso: usize,
        pagemap: std::fs::File,
        done: CodePagesReleased,
    }

    /// `/proc/self/pagemap` entry bits.
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE_PAGE: u64 = 1 << 61;

    /// Whether a page with this pagemap entry may be dropped: mapped from the file, or
    /// not mapped at all. A private anonymous page (present but not a file page, or
    /// swapped out) holds bytes written since the load (a breakpoint, a uprobe, any
    /// patch): dropping it would bring the file's bytes back.
    pub(super) fn unwritten(entry: u64) -> bool {
        if entry & PRESENT != 0 {
            entry & FILE_PAGE != 0
        } else {
            entry & SWAPPED == 0
        }
    }

    /// The runs of pages of `r` (page-aligned) whose pagemap entries say [`unwritten`];
    /// nothing when the entries cannot be read.
    pub(super) fn unwritten_runs(
        pagemap: &std::fs::File,
        r: Range<usize>,
        page: usize,
    ) -> Vec<Range<usize>> {
        use std::os::unix::fs::FileExt;
        let pages = (r.end - r.start) / page;
        let mut raw = vec![0u8; pages * 8];
        let offset = (r.start / page) as u64 * 8;
        if pagemap.read_exact_at(&mut raw, offset).is_err() {
            return Vec::new();
        }
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (i, entry) in raw.chunks_exact(8).enumerate() {
            let entry = u64::from_ne_bytes(entry.try_into().unwrap_or([0xff; 8]));
            if !unwritten(entry) {
                continue;
            }
            let at = r.start + i * page;
            match runs.last_mut() {
                Some(last) if last.end == at => last.end = at + page,
                _ => runs.push(at..at + page),
            }
        }
        runs
    }

    /// Drops the page-table entries of the unwritten pages of `r`; returns the bytes.
    pub(super) fn release_unwritten(
        pagemap: &std::fs::File,
        r: Range<usize>,
        page: usize,
    ) -> usize {
        let mut bytes = 0;
        for run in unwritten_runs(pagemap, r, page) {
            // SAFETY: `run` is whole pages of a private file mapping whose pagemap
            // entries said they are the file's own pages (or not mapped): dropping them
            // loses nothing, the kernel maps the file's bytes again on the next access.
            let rc = unsafe {
                libc::madvise(
                    run.start as *mut libc::c_void,
                    run.end - run.start,
                    libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                bytes += run.end - run.start;
            }
        }
        bytes
    }

    pub(super) fn release() -> CodePagesReleased {
        // SAFETY: sysconf and getauxval read process constants.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: as above.
        let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
        let Ok(pagemap) = std::fs::File::open("/proc/self/pagemap") else {
            return CodePagesReleased::default();
        };
        let mut walk = Walk {
            page: page.max(1),
            vdso,
            pagemap,
            done: CodePagesReleased::default(),
        };
        // SAFETY: `each_object` matches the callback type, and `walk` outlives the call
        // (dl_iterate_phdr calls back synchronously, on this thread, under the loader's
        // lock).
        unsafe {
            libc::dl_iterate_phdr(
                Some(each_object),
                (&mut walk as *mut Walk).cast::<libc::c_void>(),
            );
        }
        walk.done
    }

    unsafe extern "C" fn each_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Walk` passed by `release`, alive and not aliased during
        // the walk; `info` points to the loader's description of one loaded object,
        // valid for this call.
        let (walk, info) = unsafe { (&mut *data.cast::<Walk>(), &*info) };
        let base = info.dlpi_addr as usize;
        if info.dlpi_phdr.is_null() || (walk.vdso != 0 && base == walk.vdso) {
            return 0;
        }
        // SAFETY: the loader's program-header table of this object has `dlpi_phnum`
        // entries, mapped for as long as the object is loaded (the lock is held).
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        let range = |h: &libc::Elf64_Phdr| {
            let start = base.wrapping_add(h.p_vaddr as usize);
            start..start.wrapping_add(h.p_memsz as usize)
        };
        let written: Vec<Range<usize>> = headers
            .iter()
            .filter(|h| {
                h.p_type == libc::PT_GNU_RELRO
                    || (h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W != 0)
            })
            .map(range)
            .collect();
        // An object whose code was patched when loaded (text relocations) keeps all.
        if headers.iter().any(|h| h.p_type == libc::PT_DYNAMIC)
            && has_text_relocations(base, headers)
        {
            return 0;
        }
        for h in headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0)
        {
            // A segment's file-backed part: the rest (if any) is anonymous zero-fill.
            let file_end = (h.p_vaddr as usize).wrapping_add(h.p_filesz as usize);
            let seg = range(h);
            let seg = seg.start..seg.end.min(base.wrapping_add(file_end));
            for r in releasable(seg, &written, walk.page) {
                let bytes = release_unwritten(&walk.pagemap, r, walk.page);
                if bytes > 0 {
                    walk.done.segments += 1;
                    walk.done.bytes += bytes;
                }
            }
        }
        0
    }

    /// Whether the object's dynamic section says its code was written when loaded
    /// (`DT_TEXTREL`, or `DF_TEXTREL` in `DT_FLAGS`).
    fn has_text_relocations(base: usize, headers: &[libc::Elf64_Phdr]) -> bool {
        let Some(dynamic) = headers.iter().find(|h| h.p_type == libc::PT_DYNAMIC) else {
            return false;
        };
        /// `Elf64_Dyn`.
        #[repr(C)]
        struct Dyn {
            d_tag: i64,
            d_un: u64,
        }
        let mut at = base.wrapping_add(dynamic.p_vaddr as usize) as *const Dyn;
        const DT_TEXTREL: i64 = 22;
        const DT_FLAGS: i64 = 30;
        const DF_TEXTREL: u64 = 4;
        loop {
            // SAFETY: the dynamic section is mapped with its object and ends with a
            // DT_NULL entry (the loader itself walked it to load the object).
            let entry = unsafe { std::ptr::read(at) };
            match entry.d_tag {
                0 => return false,
                DT_TEXTREL => return true,
                DT_FLAGS if entry.d_un & DF_TEXTREL != 0 => return true,
                _ => {}
            }
            // SAFETY: not past DT_NULL, which ends the section.
            at = unsafe { at.add(1) };
        }
    }
}

#[cfg(all(
    test,
    target_os = "linux",
    target_env = "gnu",
    target_pointer_width = "64"
))]
mod tests {
    use super::linux::{releasable, release_unwritten, unwritten};
    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn only_whole_pages_inside_the_segment_and_outside_written_ranges() {
        // A segment from mid-page to mid-page: its partial first and last pages (shared
        // with a neighbour) are kept.
        assert_eq!(
            releasable(100..10 * PAGE + 5, &[], PAGE),
            vec![PAGE..10 * PAGE]
        );
        // A written range (RELRO) inside: kept, rounded outwards to whole pages.
        assert_eq!(
            releasable(
                0..10 * PAGE,
                std::slice::from_ref(&(3 * PAGE + 8..4 * PAGE + 8)),
                PAGE
            ),
            vec![0..3 * PAGE, 5 * PAGE..10 * PAGE]
        );
        // Written ranges covering the start, the end, or all of it.
        assert_eq!(
            releasable(0..10 * PAGE, &[0..PAGE, 9 * PAGE + 1..12 * PAGE], PAGE),
            vec![PAGE..9 * PAGE]
        );
        assert!(releasable(PAGE..3 * PAGE, std::slice::from_ref(&(0..4 * PAGE)), PAGE).is_empty());
        // Less than a page, or written ranges elsewhere.
        assert!(releasable(PAGE + 1..2 * PAGE + 7, &[], PAGE).is_empty());
        assert_eq!(
            releasable(2 * PAGE..4 * PAGE, &[0..PAGE, 8 * PAGE..9 * PAGE], PAGE),
            vec![2 * PAGE..4 * PAGE]
        );
    }

    #[test]
    fn only_pages_still_the_files_own_are_dropped() {
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        const FILE: u64 = 1 << 61;
        assert!(unwritten(PRESENT | FILE | 0x1234), "mapped from the file");
        assert!(unwritten(0), "not mapped");
        assert!(!unwritten(PRESENT | 0x1234), "a private copy (written)");
        assert!(!unwritten(SWAPPED | 0x55), "a private copy, swapped out");
    }

    #[test]
    fn a_written_page_of_a_private_file_mapping_keeps_its_bytes() {
        use std::io::Write;
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&vec![7u8; 4 * PAGE]).expect("write");
        let len = 4 * PAGE;
        // SAFETY: a fresh private mapping of a file this test owns, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: `base` maps `len` readable and writable bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
        assert_eq!(bytes[0], 7, "page 0 read: the file's page");
        bytes[PAGE] = 42; // page 1: a private copy now
        assert_eq!(bytes[2 * PAGE], 7);
        let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        let start = base as usize;
        let released = release_unwritten(&pagemap, start..start + len, PAGE);
        assert_eq!(released, 3 * PAGE, "pages 0, 2 and 3: not page 1");
        assert_eq!(bytes[PAGE], 42, "the written byte stays");
        assert_eq!((bytes[0], bytes[2 * PAGE], bytes[3 * PAGE]), (7, 7, 7));
        // SAFETY: unmaps the mapping made above; `bytes` is not used after this.
        assert_eq!(unsafe { libc::munmap(base, len) }, 0);
    }

    fn rss_file_kib() -> u64 {
        crate::ffi::own_status_kib("RssFile:")
    }

    /// What a libvirt connection answers, to compare before and after the release
    /// (other tests add domains to the shared `test:///default`: only the one it starts
    /// with is looked for).
    fn libvirt_answers() -> (String, bool, u64) {
        let conn = crate::ffi::test_conn();
        let names = conn
            .list_all_domains(0)
            .expect("list")
            .iter()
            .any(|d| d.name().is_ok_and(|n| n == "test"));
        let hostname = conn.hostname().expect("hostname");
        let memory = conn.node_info().expect("node info").memory;
        (hostname, names, memory)
    }

    #[test]
    fn releasing_drops_resident_code_and_everything_still_runs() {
        // Loaded and run: libvirt's client (and its libraries' start-up code).
        let before_answers = libvirt_answers();
        let formatted = format!("{:?}", before_answers);
        let before = rss_file_kib();
        let done = release_code_pages();
        let after = rss_file_kib();
        assert!(
            done.segments >= 3 && done.bytes >= 1024 * 1024,
            "released {done:?}"
        );
        // Other tests of this binary run meanwhile and map pages again: a wide margin.
        assert!(
            after + 1024 <= before,
            "RssFile {before} KiB -> {after} KiB after releasing {done:?}"
        );
        // Code, constants, relocated data (vtables, GOT) and libvirt's own state all
        // still work, and give the same answers.
        assert_eq!(libvirt_answers(), before_answers);
        assert_eq!(format!("{:?}", before_answers), formatted);
        // A second release right away finds the same segments.
        assert_eq!(release_code_pages().segments, done.segments);
    }
}
