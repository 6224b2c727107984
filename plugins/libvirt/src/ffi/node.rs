//! The host's own counters: `virNodeGetCPUStats` and `virNodeGetMemoryStats` for all
//! CPUs / all cells (no `virt` wrapper), as owned `(field, value)` pairs.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::c_int;
use std::ptr;

use virt::connect::Connect;
use virt::error::Error;
use virt::sys;

use super::params::c_array_to_string;

/// At most this many fields are read (libvirt 9 reports 4 of each).
const MAX_FIELDS: c_int = 64;

/// `virNodeGetCPUStats(conn, VIR_NODE_CPU_STATS_ALL_CPUS, …)`: CPU time of the whole
/// host by mode (`kernel`, `user`, `idle`, `iowait`, …) in nanoseconds.
pub fn node_cpu_stats(conn: &Connect) -> Result<Vec<(String, u64)>, Error> {
    let empty = sys::virNodeCPUStats {
        field: [0; sys::VIR_NODE_CPU_STATS_FIELD_LENGTH as usize],
        value: 0,
    };
    let entries = count_then_fill(empty, |buf, n| {
        // SAFETY: the connection is alive; `count_then_fill` passes either a null array
        // with *n == 0 (asks for the count) or an array of *n writable, initialised
        // entries, of which libvirt writes at most *n and stores how many in *n.
        unsafe {
            sys::virNodeGetCPUStats(conn.as_ptr(), sys::VIR_NODE_CPU_STATS_ALL_CPUS, buf, n, 0)
        }
    })?;
    Ok(entries
        .iter()
        .map(|p| (c_array_to_string(&p.field), p.value))
        .collect())
}

/// `virNodeGetMemoryStats(conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, …)`: `total`, `free`,
/// `buffers`, `cached` in KiB.
pub fn node_memory_stats(conn: &Connect) -> Result<Vec<(String, u64)>, Error> {
    let empty = sys::virNodeMemoryStats {
        field: [0; sys::VIR_NODE_MEMORY_STATS_FIELD_LENGTH as usize],
        value: 0,
    };
    let entries = count_then_fill(empty, |buf, n| {
        // SAFETY: as in `node_cpu_stats`: a null array with *n == 0, or *n writable,
        // initialised entries of which libvirt writes at most *n.
        unsafe {
            sys::virNodeGetMemoryStats(
                conn.as_ptr(),
                sys::VIR_NODE_MEMORY_STATS_ALL_CELLS,
                buf,
                n,
                0,
            )
        }
    })?;
    Ok(entries
        .iter()
        .map(|p| (c_array_to_string(&p.field), p.value))
        .collect())
}

/// libvirt's two-call pattern for node statistics: `call(null, &mut 0)` returns the
/// count, then `call(buf, &mut n)` fills at most `n` entries and stores how many.
fn count_then_fill<T: Clone>(
    empty: T,
    mut call: impl FnMut(*mut T, &mut c_int) -> c_int,
) -> Result<Vec<T>, Error> {
    let mut n: c_int = 0;
    if call(ptr::null_mut(), &mut n) < 0 {
        return Err(Error::last_error());
    }
    let n = n.clamp(0, MAX_FIELDS);
    let mut buf = vec![empty; usize::try_from(n).unwrap_or(0)];
    let mut filled = n;
    if call(buf.as_mut_ptr(), &mut filled) < 0 {
        return Err(Error::last_error());
    }
    buf.truncate(usize::try_from(filled.clamp(0, n)).unwrap_or(0));
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::super::test_conn;
    use super::*;

    #[test]
    fn node_counters_of_the_test_driver() {
        let conn = test_conn();
        let cpu = node_cpu_stats(&conn).expect("cpu stats");
        let names: Vec<&str> = cpu.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names.contains(&"kernel") && names.contains(&"idle"),
            "{names:?}"
        );
        assert!(cpu.iter().all(|(_, v)| *v > 0), "{cpu:?}");
        // The test driver has no memory statistics: the error comes back, no panic.
        let err = node_memory_stats(&conn).expect_err("unsupported by the test driver");
        assert!(err.message().contains("not supported"), "{}", err.message());
    }
}
