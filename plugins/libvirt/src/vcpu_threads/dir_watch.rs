//! Whether libvirt's status-file directory changed since a tick last asked: an inotify
//! watch on it (files created, deleted or renamed in or out: libvirt replaces a status
//! file by renaming a new one over it), read without blocking once per tick. A read that
//! finds nothing is one short system call; the directory's `stat` it replaces walked
//! the path each tick, about 10 µs on a host whose caches the guests keep cold. Where
//! the watch cannot be set up, or is lost (the directory removed or replaced, the event
//! queue overflowing), the directory's modification time answers, as before.

use std::fs;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use tracing::debug;

pub(super) struct DirWatch {
    path: PathBuf,
    /// `None`: not set up, or lost; the modification time answers.
    inotify: Option<OwnedFd>,
    /// The directory's modification time as last looked at (without a watch).
    modified: Option<SystemTime>,
    /// Whether nobody asked yet (the first answer is always yes).
    first: bool,
}

impl DirWatch {
    /// Watches `path` (a directory), with inotify where it can be.
    pub(super) fn new(path: &Path) -> Self {
        let inotify = watch(path)
            .inspect_err(|e| debug!(path = %path.display(), error = %e, "no inotify watch: the status directory's modification time is looked at each tick"))
            .ok();
        Self::with(path, inotify)
    }

    /// Looks at `path`'s modification time only (tests; a host without inotify).
    #[cfg(test)]
    pub(super) fn by_modification_time(path: &Path) -> Self {
        Self::with(path, None)
    }

    fn with(path: &Path, inotify: Option<OwnedFd>) -> Self {
        Self {
            path: path.to_path_buf(),
            inotify,
            modified: None,
            first: true,
        }
    }

    /// Whether the directory may have changed since the last call (yes at the first,
    /// and whenever it cannot tell).
    pub(super) fn changed(&mut self) -> bool {
        let first = std::mem::take(&mut self.first);
        if let Some(fd) = &self.inotify {
            match drain(fd) {
                Ok(Drained::Nothing) => return first,
                Ok(Drained::Events) => return true,
                Ok(Drained::WatchLost) => {
                    debug!(path = %self.path.display(), "the status directory's watch is lost: its modification time is looked at each tick");
                }
                Err(e) => {
                    debug!(path = %self.path.display(), error = %e, "the status directory's watch failed: its modification time is looked at each tick");
                }
            }
            self.inotify = None;
        }
        let modified = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let changed = modified.is_none() || modified != self.modified;
        self.modified = modified;
        changed || first
    }

    /// Whether the changes are told by the inotify watch (tests).
    #[cfg(test)]
    pub(super) fn watching(&self) -> bool {
        self.inotify.is_some()
    }
}

fn watch(path: &Path) -> rustix::io::Result<OwnedFd> {
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
    let events = WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
        | WatchFlags::ONLYDIR;
    inotify::add_watch(&fd, path, events)?;
    Ok(fd)
}

/// What reading the watch's queue found.
enum Drained {
    Nothing,
    Events,
    /// The directory went away or was moved, or events were dropped.
    WatchLost,
}

/// Reads every queued event without blocking.
fn drain(fd: &OwnedFd) -> rustix::io::Result<Drained> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut found = Drained::Nothing;
    loop {
        match reader.next() {
            Ok(event) => {
                let lost = ReadFlags::DELETE_SELF
                    | ReadFlags::MOVE_SELF
                    | ReadFlags::IGNORED
                    | ReadFlags::QUEUE_OVERFLOW;
                if event.events().intersects(lost) {
                    found = Drained::WatchLost;
                } else if matches!(found, Drained::Nothing) {
                    found = Drained::Events;
                }
            }
            Err(Errno::AGAIN) => return Ok(found),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks `watch` twice: whether it saw a change, then (nothing done between) whether
    /// it sees one again.
    fn changed_then_settled(watch: &mut DirWatch) -> (bool, bool) {
        (watch.changed(), watch.changed())
    }

    #[test]
    fn files_created_renamed_over_and_removed_are_changes_and_nothing_else_is() {
        for inotify in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut watch = if inotify {
                DirWatch::new(dir.path())
            } else {
                DirWatch::by_modification_time(dir.path())
            };
            // A modification time moves with the kernel's clock tick (a few ms): the
            // steps are that far apart for the watch without inotify to tell them.
            let tick = || std::thread::sleep(std::time::Duration::from_millis(20));
            assert_eq!(watch.watching(), inotify);
            assert_eq!(changed_then_settled(&mut watch), (true, false), "first");
            let file = dir.path().join("vm-1.xml");
            tick();
            fs::write(&file, "a").expect("write");
            assert_eq!(changed_then_settled(&mut watch), (true, false), "created");
            // As libvirt replaces a status file: a new one renamed over it.
            let new = dir.path().join("vm-1.xml.new");
            tick();
            fs::write(&new, "b").expect("write");
            fs::rename(&new, &file).expect("rename");
            assert_eq!(changed_then_settled(&mut watch), (true, false), "replaced");
            tick();
            fs::remove_file(&file).expect("remove");
            assert_eq!(changed_then_settled(&mut watch), (true, false), "removed");
            // A file read, or a file elsewhere, changes nothing here.
            let other = tempfile::tempdir().expect("tempdir");
            fs::write(other.path().join("vm-2.xml"), "c").expect("write");
            let _ = fs::read_dir(dir.path()).expect("list").count();
            assert!(!watch.changed(), "untouched");
            assert_eq!(watch.watching(), inotify);
        }
    }

    #[test]
    fn a_directory_removed_is_a_change_every_time_it_is_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qemu");
        fs::create_dir(&path).expect("mkdir");
        let mut watch = DirWatch::new(&path);
        assert!(watch.watching());
        assert_eq!(changed_then_settled(&mut watch), (true, false));
        fs::remove_dir(&path).expect("rmdir");
        // The watch is lost; the directory's time then answers: none, so always yes.
        assert_eq!(changed_then_settled(&mut watch), (true, true));
        assert!(!watch.watching());
        // Made again, it is looked at by its time.
        fs::create_dir(&path).expect("mkdir");
        assert_eq!(changed_then_settled(&mut watch), (true, false));
    }
}
