//! The bulk call's `vcpu` group without the QEMU monitor, for a local QEMU daemon whose
//! processes this agent sees.
//!
//! For each domain a bulk call asks `vcpu` of, libvirt takes the domain's job and sends
//! QEMU `query-stats-schemas` and `query-stats` (KVM's per-vCPU counters, which the
//! agent does not export): two of the seven monitor commands a tick sent each guest,
//! a fifth of what a tick cost the host (docs/performance.md, fourteenth pass). The
//! counters the agent does export libvirt reads from the vCPU threads' `/proc` files,
//! and the counts from the domain's definition. On the daemon's own host, in the same
//! PID namespace, the agent reads them itself ([`thread_files`]): the threads are the
//! ones libvirt's status file of the domain lists ([`status_file`]), read again when
//! libvirt replaces it (a vCPU plugged or unplugged, the domain restarted; an inotify
//! watch on the directory tells a tick whether it changed, [`dir_watch`], and only then
//! are the files looked at). The bulk call then leaves `vcpu` out.
//!
//! A running domain whose threads cannot be read (its status file unreadable, its
//! process in another PID namespace, a thread gone) gets the group from a bulk call of
//! its own, as before, until its status file changes. When no running domain's
//! threads can be read three calls in a row, the group goes back into the bulk call
//! for ten minutes.

mod dir_watch;
mod status_file;
mod thread_files;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info};

use dir_watch::DirWatch;
use vadvisor_api::{Room, StatsGroups, TypedValue};

use crate::ffi::RawRecord;
use crate::wire::{endpoint, DomainId, WireClient, WireError};
use status_file::DomainStatus;
use thread_files::{ReadBuffer, ThreadCounters, ThreadFiles};

/// Where a system QEMU daemon keeps its sockets and, under `qemu/`, its status files.
const SYSTEM_RUN_DIR: &str = "/run/libvirt";
/// The socket names of a system daemon serving QEMU: the monolithic libvirtd's and
/// the per-driver virtqemud's.
const QEMU_SOCKETS: &[&str] = &[
    "libvirt-sock",
    "libvirt-sock-ro",
    "virtqemud-sock",
    "virtqemud-sock-ro",
];
/// How long the group goes back into the bulk call when no domain's threads could be
/// read, and how often a URI that is not (yet) the local system daemon is looked at
/// again (`/run/libvirt` appears when the daemon first starts).
const RECHECK_AFTER: Duration = Duration::from_secs(600);
/// After this many calls in a row without one running domain's threads read (not
/// just a domain starting, whose status file does not list its threads yet), the group
/// goes back into the bulk call.
const UNREADABLE_CALLS: u32 = 3;
/// A domain not seen for this long is forgotten (its files closed).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The vCPU threads of a daemon's running domains, read from `/proc`.
pub(crate) struct VcpuThreads {
    /// The libvirt URI the agent reads.
    uri: String,
    /// The daemon's status-file directory, when its domains' threads are read here.
    state_dir: Option<PathBuf>,
    /// Whether `state_dir` changed since the last tick.
    dir_watch: Option<DirWatch>,
    /// When `state_dir` is looked for again.
    recheck_at: Instant,
    /// By UUID.
    domains: HashMap<String, Watched>,
    buf: Box<ReadBuffer>,
    counters: Vec<ThreadCounters>,
    /// Said once: the threads are read here, or why not.
    announced: bool,
    /// Calls in a row in which no running domain's threads could be read.
    unreadable_calls: u32,
}

/// One domain's status file as last read.
struct Watched {
    name: String,
    path: PathBuf,
    modified: Option<SystemTime>,
    /// `None`: its threads could not be read; not tried again before the file changes.
    threads: Option<Threads>,
    seen: Instant,
}

struct Threads {
    current: u32,
    maximum: u32,
    vcpus: Vec<Vcpu>,
}

struct Vcpu {
    /// `vcpu.N.delay`, `.state`, `.time`, `.wait` (key order): made once, not per tick.
    keys: [String; 4],
    files: ThreadFiles,
}

/// `VIR_VCPU_RUNNING`: what libvirt reports for every online vCPU of a running domain.
const VCPU_RUNNING: i32 = 1;

impl VcpuThreads {
    /// For the daemon at `uri`: its domains' threads are read here when `uri` is the
    /// local system QEMU daemon (its socket in `/run/libvirt`, or a bind mount of it).
    pub(crate) fn for_uri(uri: &str) -> Mutex<Self> {
        Mutex::new(Self::new(uri))
    }

    /// Reads the status files in `dir`, whatever the URI (tests).
    #[cfg(test)]
    pub(crate) fn in_dir(dir: &Path) -> Mutex<Self> {
        let mut t = Self::new("qemu:///system");
        t.set_state_dir(Some(dir.to_path_buf()));
        Mutex::new(t)
    }

    fn new(uri: &str) -> Self {
        let mut t = Self {
            uri: uri.to_string(),
            state_dir: None,
            dir_watch: None,
            recheck_at: Instant::now(),
            domains: HashMap::new(),
            buf: Box::new([0; 8192]),
            counters: Vec::new(),
            announced: false,
            unreadable_calls: 0,
        };
        t.recheck(Instant::now());
        t
    }

    /// Looks again, when due, at whether the threads can be read here.
    fn recheck(&mut self, now: Instant) {
        if self.state_dir.is_some() || now < self.recheck_at {
            return;
        }
        self.recheck_at = now + RECHECK_AFTER;
        self.set_state_dir(system_state_dir(&self.uri, Path::new(SYSTEM_RUN_DIR)));
    }

    /// Reads the status files in `dir` from now on (`None`: none).
    fn set_state_dir(&mut self, dir: Option<PathBuf>) {
        self.dir_watch = dir.as_deref().map(DirWatch::new);
        self.state_dir = dir;
    }

    /// The room a record needs for the `vcpu` group as [`fill`](Self::fill) sets it:
    /// that of the domain with the most vCPUs read here.
    fn room(&self) -> Room {
        let keys = |t: &Threads| {
            let per_vcpu: usize = t.vcpus.iter().flat_map(|v| &v.keys).map(String::len).sum();
            per_vcpu + "vcpu.current".len() + "vcpu.maximum".len()
        };
        self.domains
            .values()
            .filter_map(|w| w.threads.as_ref())
            .max_by_key(|t| t.vcpus.len())
            .map_or(Room::default(), |t| Room {
                entries: 4 * t.vcpus.len() + 2,
                key_bytes: keys(t),
            })
    }

    /// Whether a bulk call leaves the `vcpu` group to [`fill`](Self::fill) now.
    fn in_use(&mut self, now: Instant) -> bool {
        self.recheck(now);
        self.state_dir.is_some()
    }

    /// Fills the `vcpu` group of each running domain of `records` from its threads;
    /// returns the indices of those it could not.
    fn fill_all(&mut self, records: &mut [RawRecord], now: Instant) -> Vec<usize> {
        let mut missing = Vec::new();
        let mut filled = 0;
        // libvirt replaces a status file (a new file renamed over it): the directory
        // changes with it, and only then are the files looked at one by one.
        let look = self.dir_watch.as_mut().is_none_or(DirWatch::changed);
        for (i, r) in records.iter_mut().enumerate().filter(|(_, r)| r.active) {
            if self.fill(&r.uuid, &r.name, &mut r.params, look, now) {
                filled += 1;
            } else {
                missing.push(i);
            }
        }
        self.domains
            .retain(|_, w| now.duration_since(w.seen) < FORGET_AFTER);
        self.unreadable_calls = if filled == 0 && !missing.is_empty() {
            self.unreadable_calls + 1
        } else {
            0
        };
        if self.unreadable_calls >= UNREADABLE_CALLS {
            self.unreadable_calls = 0;
            info!(uri = %self.uri, domains = missing.len(),
                "the domains' vCPU threads cannot be read here: vCPU counters come from libvirt's vcpu group (looked at again in 10 minutes)");
            self.set_state_dir(None);
            self.domains.clear();
            self.announced = true;
        } else if filled > 0 && !self.announced {
            info!(uri = %self.uri, "vCPU counters are read from the vCPU threads' /proc files, not through the QEMU monitor");
            self.announced = true;
        }
        missing
    }

    /// Fills one running domain's `vcpu` group; `false` when its threads cannot be read.
    /// `look`: whether its status file may have changed since it was last read.
    fn fill(
        &mut self,
        uuid: &str,
        name: &str,
        params: &mut vadvisor_api::Params,
        look: bool,
        now: Instant,
    ) -> bool {
        let Some(dir) = &self.state_dir else {
            return false;
        };
        // `Some(modified)`: the status file must be read (again); `None`: as last read.
        let reread = match self.domains.get(uuid) {
            Some(w) if w.name == name && !look => None,
            Some(w) if w.name == name => {
                let modified = modified_time(&w.path);
                (modified.is_none() || modified != w.modified).then_some(modified)
            }
            _ => Some(None),
        };
        if let Some(modified) = reread {
            let path = dir.join(format!("{name}.xml"));
            let modified = modified.or_else(|| modified_time(&path));
            // A file still missing was said already.
            let said = modified.is_none()
                && self
                    .domains
                    .get(uuid)
                    .is_some_and(|w| w.modified.is_none() && w.threads.is_none());
            let threads = discover(&path, uuid)
                .map_err(|e| {
                    if !said {
                        debug!(domain = name, error = %e, "vCPU counters from libvirt's vcpu group");
                    }
                })
                .ok();
            let watched = Watched {
                name: name.to_string(),
                path,
                modified,
                threads,
                seen: now,
            };
            self.domains.insert(uuid.to_string(), watched);
        }
        let Some(watched) = self.domains.get_mut(uuid) else {
            return false;
        };
        watched.seen = now;
        let Some(threads) = &watched.threads else {
            return false;
        };
        self.counters.clear();
        for vcpu in &threads.vcpus {
            match vcpu.files.read(&mut self.buf) {
                Ok(c) => self.counters.push(c),
                Err(e) => {
                    debug!(domain = name, error = %e, "a vCPU thread could not be read: vCPU counters from libvirt's vcpu group");
                    watched.threads = None;
                    return false;
                }
            }
        }
        // In key order (`vcpu` sorts after the bulk call's groups): appended.
        for (vcpu, c) in threads.vcpus.iter().zip(&self.counters) {
            let [delay, state, time, wait] = &vcpu.keys;
            params.insert(delay, TypedValue::ULLong(c.delay));
            params.insert(state, TypedValue::Int(VCPU_RUNNING));
            params.insert(time, TypedValue::ULLong(c.time));
            params.insert(wait, TypedValue::ULLong(c.wait));
        }
        params.insert("vcpu.current", TypedValue::UInt(threads.current));
        params.insert("vcpu.maximum", TypedValue::UInt(threads.maximum));
        true
    }
}

/// When the file at `path` was last modified; `None` when it cannot be read.
fn modified_time(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The threads of the domain `uuid` from its status file at `path`.
fn discover(path: &Path, uuid: &str) -> Result<Threads, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let DomainStatus {
        uuid: found,
        pid,
        current,
        maximum,
        vcpus,
        ..
    } = status_file::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if found != uuid {
        return Err(format!("{} is domain {found}", path.display()));
    }
    let vcpus = vcpus
        .into_iter()
        .map(|(n, tid)| {
            let files = ThreadFiles::open(pid, tid).map_err(|e| e.to_string())?;
            let keys = ["delay", "state", "time", "wait"].map(|f| format!("vcpu.{n}.{f}"));
            Ok(Vcpu { keys, files })
        })
        .collect::<Result<_, String>>()?;
    Ok(Threads {
        current,
        maximum,
        vcpus,
    })
}

/// The status-file directory of the daemon at `uri` when it is the local system QEMU
/// daemon, whose run directory is `run_dir`: the URI's socket is one of that daemon's
/// sockets in that directory (or in a bind mount of it).
fn system_state_dir(uri: &str, run_dir: &Path) -> Option<PathBuf> {
    let ep = endpoint(uri, |_| true)?;
    if ep.name != "qemu:///system" {
        return None;
    }
    let file = ep.socket.file_name()?.to_str()?;
    if !QEMU_SOCKETS.contains(&file) {
        return None;
    }
    let same_dir = |a: &Path, b: &Path| match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if !same_dir(ep.socket.parent()?, run_dir) {
        return None;
    }
    let state_dir = run_dir.join("qemu");
    state_dir.is_dir().then_some(state_dir)
}

/// `doms`' statistics for `stats` (every domain when empty) with `flags`, as
/// `cpu_totals::domain_stats_async` gives them, the `vcpu` group read from the vCPU
/// threads when `threads` can (see the module). `calls` counts the daemon calls made.
pub(crate) async fn domain_stats_async(
    client: &mut WireClient,
    threads: &Mutex<VcpuThreads>,
    doms: &[DomainId],
    stats: u32,
    flags: u32,
    calls: &(dyn Fn(u64) + Sync),
) -> Result<Vec<RawRecord>, WireError> {
    let vcpu = StatsGroups::VCPU.0;
    let lock = || threads.lock().unwrap_or_else(|e| e.into_inner());
    if stats & vcpu == 0 || !lock().in_use(Instant::now()) {
        return crate::cpu_totals::domain_stats_async(client, doms, stats, flags, calls).await;
    }
    let room = lock().room();
    let mut records = crate::cpu_totals::domain_stats_with_room_async(
        client,
        doms,
        stats & !vcpu,
        flags,
        room,
        calls,
    )
    .await?;
    let missing = lock().fill_all(&mut records, Instant::now());
    if missing.is_empty() {
        return Ok(records);
    }
    calls(1);
    crate::cpu_totals::group_from_bulk_call(client, &mut records, &missing, vcpu, "vcpu.", flags)
        .await?;
    Ok(records)
}

/// A status file of this process naming thread `tid` as the domain `uuid`'s one vCPU
/// (tests).
#[cfg(test)]
pub(crate) fn status_xml_for_tests(uuid: &str, tid: i32) -> String {
    let pid = std::process::id() as i32;
    status_file::tests::status_xml(pid, uuid, "<vcpu>1</vcpu>", &[(0, tid)])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use status_file::tests::status_xml;

    const UUID: &str = "5ad0a0b0-0000-4000-8000-000000000001";

    /// A thread of this process named as QEMU names a vCPU thread, spinning until
    /// dropped; its thread id. Each test names its threads apart (tests run at once).
    pub(crate) struct FakeVcpu {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        handle: Option<std::thread::JoinHandle<()>>,
        pub(crate) tid: i32,
    }

    impl FakeVcpu {
        pub(crate) fn start(name: &str) -> Self {
            use std::sync::atomic::{AtomicBool, Ordering};
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let s = std::sync::Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
                .expect("spawn");
            let tid = (0..500)
                .find_map(|_| {
                    let found = thread_named(name);
                    if found.is_none() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    found
                })
                .expect("the thread's id");
            Self {
                stop,
                handle: Some(handle),
                tid,
            }
        }
    }

    impl Drop for FakeVcpu {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn thread_named(name: &str) -> Option<i32> {
        fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find_map(|e| {
                let comm = fs::read_to_string(e.path().join("comm")).ok()?;
                (comm.trim_end() == name).then(|| e.file_name().to_str()?.parse().ok())?
            })
    }

    /// A schedstat field of thread `tid` of this process.
    fn schedstat(tid: i32, field: usize) -> u64 {
        let text =
            fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).expect("schedstat");
        text.split_whitespace()
            .nth(field)
            .expect("field")
            .parse()
            .expect("number")
    }

    fn threads_in(dir: &Path) -> VcpuThreads {
        VcpuThreads::in_dir(dir)
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn record(name: &str, uuid: &str) -> RawRecord {
        RawRecord {
            uuid: uuid.into(),
            name: name.into(),
            params: vadvisor_api::Params::from_unsorted([("state.state", TypedValue::Int(1))]),
            domain: None,
            active: true,
        }
    }

    fn u64_of(r: &RawRecord, key: &str) -> u64 {
        match r.params.get(key) {
            Some(TypedValue::ULLong(v)) => *v,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn a_domain_s_vcpu_group_is_read_from_the_threads_its_status_file_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vcpu = FakeVcpu::start("CPU 1/KVM-a");
        let pid = std::process::id() as i32;
        let xml = status_xml(pid, UUID, "<vcpu current='1'>2</vcpu>", &[(1, vcpu.tid)]);
        fs::write(dir.path().join("vadv-lab-1.xml"), xml).expect("write");
        let mut threads = threads_in(dir.path());
        let mut records = vec![record("vadv-lab-1", UUID)];
        let before = (schedstat(vcpu.tid, 0), schedstat(vcpu.tid, 1));
        assert_eq!(threads.room(), Room::default(), "nothing read yet");
        let missing = threads.fill_all(&mut records, Instant::now());
        let after = (schedstat(vcpu.tid, 0), schedstat(vcpu.tid, 1));
        assert!(missing.is_empty());
        let r = &records[0];
        // The room a record leaves for the group is exactly what the group took.
        let added: Vec<&str> = r.params.keys().filter(|k| k.starts_with("vcpu.")).collect();
        assert_eq!(
            threads.room(),
            Room {
                entries: added.len(),
                key_bytes: added.iter().map(|k| k.len()).sum(),
            }
        );
        assert_eq!(r.params.get("vcpu.current"), Some(&TypedValue::UInt(1)));
        assert_eq!(r.params.get("vcpu.maximum"), Some(&TypedValue::UInt(2)));
        assert_eq!(r.params.get("vcpu.1.state"), Some(&TypedValue::Int(1)));
        let time = u64_of(r, "vcpu.1.time");
        assert!(
            before.0 <= time && time <= after.0,
            "{before:?} {time} {after:?}"
        );
        let delay = u64_of(r, "vcpu.1.delay");
        assert!(
            before.1 <= delay && delay <= after.1,
            "{before:?} {delay} {after:?}"
        );
        let wait = u64_of(r, "vcpu.1.wait");
        let has_wait_sum = fs::read_to_string(format!("/proc/self/task/{}/sched", vcpu.tid))
            .is_ok_and(|s| s.contains("wait_sum"));
        assert!(has_wait_sum || wait == 0, "{wait}");
        assert!(!r.params.contains_key("vcpu.0.time"));
        // The thread runs on: a later tick reads it again (within 2 s on a busy
        // machine: the spinning thread needs a turn on a CPU).
        let grew = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            threads.fill_all(&mut records, Instant::now());
            u64_of(&records[0], "vcpu.1.time") > time
        });
        assert!(grew, "the run time stayed at {time}");
    }

    #[test]
    fn threads_that_are_not_vcpus_or_a_file_of_another_domain_are_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = FakeVcpu::start("not-a-vcpu-b");
        let vcpu = FakeVcpu::start("CPU 0/TCG-b");
        let pid = std::process::id() as i32;
        let other_uuid = "5ad0a0b0-0000-4000-8000-000000000002";
        let files = [
            ("a", UUID, other.tid),
            ("b", other_uuid, vcpu.tid),
            ("c", UUID, i32::MAX),
        ];
        for (name, uuid, tid) in files {
            let xml = status_xml(pid, uuid, "<vcpu>1</vcpu>", &[(0, tid)]);
            fs::write(dir.path().join(format!("{name}.xml")), xml).expect("write");
        }
        let mut threads = threads_in(dir.path());
        let mut records = vec![
            record("a", UUID),
            record("b", UUID),
            record("c", UUID),
            record("missing", UUID),
        ];
        records.push(RawRecord {
            active: false,
            ..record("b", other_uuid)
        });
        for call in 1..=UNREADABLE_CALLS {
            assert!(threads.in_use(Instant::now()), "call {call}");
            let missing = threads.fill_all(&mut records, Instant::now());
            assert_eq!(missing, vec![0, 1, 2, 3]);
            assert!(records.iter().all(|r| !r.params.has_group("vcpu")));
        }
        // None could be read three calls in a row: the group goes back into the bulk call.
        assert!(!threads.in_use(Instant::now()));
    }

    #[test]
    fn a_thread_gone_is_not_read_again_before_the_status_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = std::process::id() as i32;
        let path = dir.path().join("d.xml");
        let first = FakeVcpu::start("CPU 0/KVM-c");
        let keep = FakeVcpu::start("CPU 1/KVM-c");
        // As libvirt replaces it: a new file renamed over the old one.
        let write = |tid: i32, t: SystemTime| {
            let xml = status_xml(pid, UUID, "<vcpu>2</vcpu>", &[(0, tid), (1, keep.tid)]);
            let new = path.with_extension("xml.new");
            fs::write(&new, xml).expect("write");
            fs::File::options()
                .write(true)
                .open(&new)
                .and_then(|f| f.set_modified(t))
                .expect("mtime");
            fs::rename(&new, &path).expect("rename");
        };
        let t0 = SystemTime::now() - Duration::from_secs(100);
        write(first.tid, t0);
        let mut threads = threads_in(dir.path());
        // A second domain keeps the reader in use.
        let other = FakeVcpu::start("CPU 0/TCG-c");
        let other_uuid = "5ad0a0b0-0000-4000-8000-000000000002";
        let xml = status_xml(pid, other_uuid, "<vcpu>1</vcpu>", &[(0, other.tid)]);
        fs::write(dir.path().join("e.xml"), xml).expect("write");
        let mut records = vec![record("d", UUID), record("e", other_uuid)];
        assert!(threads.fill_all(&mut records, Instant::now()).is_empty());
        drop(first);
        let mut records = vec![record("d", UUID), record("e", other_uuid)];
        assert_eq!(threads.fill_all(&mut records, Instant::now()), vec![0]);
        assert_eq!(threads.fill_all(&mut records, Instant::now()), vec![0]);
        // libvirt rewrites the file (a vCPU replugged): read again.
        let again = FakeVcpu::start("CPU 0/KVM-d");
        write(again.tid, t0 + Duration::from_secs(1));
        // The kernel adds a running thread's time up at its scheduler ticks.
        std::thread::sleep(Duration::from_millis(50));
        let mut records = vec![record("d", UUID), record("e", other_uuid)];
        assert!(threads.fill_all(&mut records, Instant::now()).is_empty());
        assert!(u64_of(&records[0], "vcpu.0.time") > 0);
        assert!(threads.in_use(Instant::now()));
    }

    #[test]
    fn only_the_local_system_qemu_daemon_s_sockets_have_their_threads_read_here() {
        let run = tempfile::tempdir().expect("tempdir");
        fs::create_dir(run.path().join("qemu")).expect("qemu dir");
        let bind_like = run.path().to_path_buf();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let uri =
            |dir: &Path, sock: &str| format!("qemu:///system?socket={}/{sock}", dir.display());
        let expected = Some(run.path().join("qemu"));
        assert_eq!(
            system_state_dir(&uri(&bind_like, "libvirt-sock"), run.path()),
            expected
        );
        assert_eq!(
            system_state_dir(&uri(&bind_like, "virtqemud-sock-ro"), run.path()),
            expected
        );
        assert_eq!(
            system_state_dir(&uri(elsewhere.path(), "libvirt-sock"), run.path()),
            None
        );
        assert_eq!(
            system_state_dir(&uri(&bind_like, "other-sock"), run.path()),
            None
        );
        assert_eq!(system_state_dir("lxc:///system", run.path()), None);
        assert_eq!(system_state_dir("qemu+ssh://host/system", run.path()), None);
        // A run directory without status files: not a QEMU daemon's.
        fs::remove_dir(run.path().join("qemu")).expect("rm");
        assert_eq!(
            system_state_dir(&uri(&bind_like, "libvirt-sock"), run.path()),
            None
        );
    }
}
