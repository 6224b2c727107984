//! Keeps the connection limit below the process' open-file limit, so that a flood of
//! connections can never take the descriptors the agent needs for itself (libvirt
//! connections, the event database, new normal clients).

/// Descriptors kept free for the agent itself.
const RESERVED: usize = 128;
const FLOOR: usize = 16;

/// The soft `Max open files` limit from a `/proc/<pid>/limits` text.
pub fn soft_nofile(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `configured`, lowered (with a warning) to fit below the open-file limit.
pub fn max_connections(configured: usize) -> usize {
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| soft_nofile(&t));
    fit(configured, nofile)
}

fn fit(configured: usize, nofile: Option<usize>) -> usize {
    let Some(nofile) = nofile else {
        return configured;
    };
    let ceiling = nofile.saturating_sub(RESERVED).max(FLOOR);
    if configured > ceiling {
        tracing::warn!(
            max_connections = configured,
            open_file_limit = nofile,
            using = ceiling,
            "http.max_connections does not fit the open-file limit (ulimit -n); using less"
        );
        ceiling
    } else {
        configured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit_and_fits_below_it() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(soft_nofile(text), Some(1024));
        assert_eq!(fit(512, Some(1024)), 512);
        assert_eq!(fit(4096, Some(1024)), 896);
        assert_eq!(fit(512, Some(100)), 16);
        assert_eq!(fit(512, None), 512);
        let own = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert!(soft_nofile(&own).is_some(), "{own}");
    }
}
