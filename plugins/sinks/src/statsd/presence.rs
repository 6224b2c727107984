//! VMs that vanished. A VM that was in the latest batches and no longer is (shut off,
//! undefined, migrated away, or its collector went stale) gets `up` 0 on the next
//! [`VANISHED_SENDS`] sends — more than once because UDP may lose a datagram, not
//! forever because StatsD daemons keep a gauge's last value anyway — and is then
//! forgotten.

use std::collections::HashMap;
use std::sync::Arc;

use vadvisor_api::DomainRef;

/// How many sends report `up` 0 for a vanished VM.
pub const VANISHED_SENDS: u8 = 3;

/// Known VMs by uuid, with the number of `up` 0 reports left once they are gone.
#[derive(Debug, Default)]
pub struct Presence {
    known: HashMap<Arc<str>, (DomainRef, u8)>,
}

impl Presence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the VMs of this send; returns the vanished ones to report as down.
    pub fn update<'a>(&mut self, seen: impl IntoIterator<Item = &'a DomainRef>) -> Vec<DomainRef> {
        let mut now_seen = std::collections::HashSet::new();
        for d in seen {
            now_seen.insert(d.uuid.clone());
            self.known
                .insert(d.uuid.clone(), (d.clone(), VANISHED_SENDS));
        }
        let mut gone = Vec::new();
        self.known.retain(|uuid, (domain, left)| {
            if now_seen.contains(uuid) {
                return true;
            }
            gone.push(domain.clone());
            *left -= 1;
            *left > 0
        });
        gone.sort();
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanished_vms_are_reported_down_a_few_times_then_forgotten() {
        let a = DomainRef::new("a", "alpha");
        let b = DomainRef::new("b", "beta");
        let mut p = Presence::new();
        assert!(p.update([&a, &b]).is_empty());
        for _ in 0..VANISHED_SENDS {
            assert_eq!(p.update([&a]), vec![b.clone()]);
        }
        assert!(
            p.update([&a]).is_empty(),
            "forgotten after {VANISHED_SENDS} sends"
        );
        // It comes back, then vanishes again: reported again.
        assert!(p.update([&a, &b]).is_empty());
        assert_eq!(p.update([]), vec![a.clone(), b.clone()]);
        assert_eq!(p.update([&a]), vec![b]);
    }
}
