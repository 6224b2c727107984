//! One vCPU thread's counters, read from the host's `/proc` the way libvirt reads them
//! for the `vcpu` group: the run-queue delay from `schedstat` (its second field), the
//! scheduler's wait sum from `sched` (kernels with schedstats only; libvirt reports 0
//! without it). The run time is `schedstat`'s first field, the thread's exact run time
//! in nanoseconds; libvirt reads `stat`'s user and system clock ticks (10 ms steps) for
//! it, so the two agree to within a tick.
//!
//! The files stay open while the thread lives: a tick reads each with one `pread`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// A vCPU thread's open counter files.
#[derive(Debug)]
pub struct ThreadFiles {
    schedstat: File,
    /// Open only when the kernel shows the wait sum.
    sched: Option<File>,
}

/// A vCPU thread's counters, in nanoseconds, keyed as the `vcpu` group keys them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCounters {
    /// `vcpu.N.time`.
    pub time: u64,
    /// `vcpu.N.wait`.
    pub wait: u64,
    /// `vcpu.N.delay`.
    pub delay: u64,
}

/// The buffer a tick reads the files into: `schedstat` is one short line, `sched` a
/// couple of kilobytes.
pub type ReadBuffer = [u8; 8192];

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl ThreadFiles {
    /// Opens thread `tid` of process `pid` in `/proc`, when it is a
    /// QEMU vCPU thread: named `CPU N/…` (libvirt starts QEMU with `debug-threads=on`).
    /// Another name means the process is not what the status file says (a process of
    /// another PID namespace, a reused id).
    pub fn open(pid: i32, tid: i32) -> io::Result<Self> {
        let dir = PathBuf::from(format!("/proc/{pid}/task/{tid}"));
        let comm = std::fs::read_to_string(dir.join("comm"))?;
        if !(comm.starts_with("CPU ") && comm.contains('/')) {
            return Err(invalid(format!(
                "thread {tid} of process {pid} is `{}`, not a vCPU",
                comm.trim_end()
            )));
        }
        let schedstat = File::open(dir.join("schedstat"))?;
        let sched = File::open(dir.join("sched"))
            .ok()
            .filter(|f| read_to(f, &mut [0; 8192]).is_ok_and(|t| wait_sum(t).is_some()));
        let files = Self { schedstat, sched };
        files.read(&mut [0; 8192])?;
        Ok(files)
    }

    /// The thread's counters now. An error when the thread is gone (or its files
    /// changed shape).
    pub fn read(&self, buf: &mut ReadBuffer) -> io::Result<ThreadCounters> {
        let (time, delay) = run_time_and_delay(read_to(&self.schedstat, buf)?)
            .ok_or_else(|| invalid("unexpected schedstat".into()))?;
        let wait = match &self.sched {
            Some(f) => wait_sum(read_to(f, buf)?).ok_or_else(|| invalid("no wait_sum".into()))?,
            None => 0,
        };
        Ok(ThreadCounters { time, wait, delay })
    }
}

/// Reads `file` from its start into `buf`: the text, as far as it fits.
fn read_to<'b>(file: &File, buf: &'b mut [u8]) -> io::Result<&'b str> {
    let n = file.read_at(buf, 0)?;
    std::str::from_utf8(&buf[..n]).map_err(|e| invalid(e.to_string()))
}

/// `schedstat`: run time (ns), time waiting on a run queue (ns), time slices.
fn run_time_and_delay(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// `sched`'s `se.statistics.wait_sum` (`se.wait_sum` on older kernels), milliseconds
/// with a fraction, in nanoseconds as libvirt converts it.
fn wait_sum(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("se.statistics.wait_sum") || l.starts_with("se.wait_sum"))?;
    let ms: f64 = line.split_once(':')?.1.trim().parse().ok()?;
    Some((ms * 1_000_000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_the_run_time_and_the_delay() {
        assert_eq!(
            run_time_and_delay("12408524777 65489509815 21357\n"),
            Some((12408524777, 65489509815))
        );
        assert_eq!(run_time_and_delay("12408524777\n"), None);
        assert_eq!(run_time_and_delay("x 1 2\n"), None);
    }

    #[test]
    fn the_wait_sum_is_read_in_nanoseconds_under_either_name() {
        let sched = "CPU 0/KVM (6253, #threads: 7)\n\
            -------------------------------------------------------------------\n\
            se.exec_start                                :      50884584.538573\n\
            se.statistics.wait_sum                       :          1234.500000\n\
            se.nr_migrations                             :                   12\n";
        assert_eq!(wait_sum(sched), Some(1_234_500_000));
        let older = sched.replace("se.statistics.wait_sum", "se.wait_sum");
        assert_eq!(wait_sum(&older), Some(1_234_500_000));
        // Without schedstats the kernel leaves the line out.
        assert_eq!(wait_sum("se.exec_start : 1.0\nse.vruntime : 2.0\n"), None);
    }
}
