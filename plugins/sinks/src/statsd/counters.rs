//! Delta state for `counters: delta`: the last cumulative value of every counter series,
//! turned into the whole-unit increase since the previous send. The first value of a
//! series only sets the baseline; a value that went down (the VM restarted, a device was
//! replaced) resets it; both send nothing. Increases are computed on whole units
//! (`floor(now) - floor(before)`), so fractional milliseconds are never lost: the sum of
//! the deltas sent always equals the growth of the total.

use std::collections::HashMap;

use super::naming::SeriesId;

/// A series not seen for this many sends is forgotten (its next value is a new baseline).
pub const FORGET_AFTER: u64 = 3;

#[derive(Debug)]
struct Last {
    value: f64,
    seen: u64,
}

/// Last values per series.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    last: HashMap<SeriesId, Last>,
    generation: u64,
}

impl DeltaTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The increase of `series` since the previous send, or `None` when nothing is to be
    /// sent (first value, reset, not a finite value).
    pub fn delta(&mut self, series: &SeriesId, value: f64) -> Option<i64> {
        if !value.is_finite() {
            return None;
        }
        let generation = self.generation;
        match self.last.get_mut(series) {
            Some(last) => {
                let before = last.value;
                last.value = value;
                last.seen = generation;
                if value < before {
                    return None;
                }
                let delta = value.floor() - before.floor();
                // Saturates for absurd values instead of wrapping.
                Some(delta as i64)
            }
            None => {
                self.last.insert(
                    series.clone(),
                    Last {
                        value,
                        seen: generation,
                    },
                );
                None
            }
        }
    }

    /// Ends one send: forgets series not seen for [`FORGET_AFTER`] sends.
    pub fn end_send(&mut self) {
        let generation = self.generation;
        self.last.retain(|_, l| generation - l.seen < FORGET_AFTER);
        self.generation += 1;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: &str) -> SeriesId {
        SeriesId {
            key: k.into(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn first_send_increase_and_reset() {
        let mut t = DeltaTracker::new();
        let a = id("a");
        assert_eq!(t.delta(&a, 1000.0), None, "first value is a baseline");
        t.end_send();
        assert_eq!(t.delta(&a, 1500.0), Some(500));
        t.end_send();
        assert_eq!(t.delta(&a, 1500.0), Some(0), "no change is a zero delta");
        t.end_send();
        assert_eq!(
            t.delta(&a, 20.0),
            None,
            "a value that went down resets the baseline"
        );
        t.end_send();
        assert_eq!(t.delta(&a, 25.0), Some(5));
        assert_eq!(t.delta(&id("b"), f64::NAN), None);
    }

    #[test]
    fn fractional_values_never_lose_units() {
        let mut t = DeltaTracker::new();
        let a = id("cpu");
        let values = [100.4, 100.9, 101.3, 102.8, 103.1];
        let mut sum = 0;
        for v in values {
            sum += t.delta(&a, v).unwrap_or(0);
            t.end_send();
        }
        assert_eq!(sum, 103 - 100);
    }

    #[test]
    fn series_are_kept_apart_and_forgotten_when_gone() {
        let mut t = DeltaTracker::new();
        let with_tag = SeriesId {
            key: "a".into(),
            tags: vec![("uuid", "1".into())],
        };
        assert_eq!(t.delta(&id("a"), 10.0), None);
        assert_eq!(t.delta(&with_tag, 50.0), None);
        t.end_send();
        assert_eq!(t.delta(&id("a"), 12.0), Some(2));
        assert_eq!(t.delta(&with_tag, 55.0), Some(5));
        t.end_send();
        for _ in 0..FORGET_AFTER {
            assert_eq!(t.delta(&id("a"), 12.0), Some(0));
            t.end_send();
        }
        assert_eq!(
            t.len(),
            1,
            "the series not seen for {FORGET_AFTER} sends is forgotten"
        );
        assert_eq!(
            t.delta(&with_tag, 60.0),
            None,
            "and starts again from a baseline"
        );
    }
}
