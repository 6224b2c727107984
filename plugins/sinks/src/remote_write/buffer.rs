//! Where unsent samples wait: the [`Buffer`] contract shared by the bounded in-memory
//! queue ([`MemoryBuffer`]) and the on-disk segment log ([`super::disk::DiskBuffer`]).
//!
//! An [`Entry`] is one chunk of a snapshot: a snappy-compressed, protobuf-encoded
//! `WriteRequest` holding only series (at most `max_samples_per_send` samples), with a
//! sequence number. Entries leave the buffer in sequence order, only when the sender
//! acknowledges them (the receiver accepted them, or rejected them for good), so a
//! request that fails is sent again. When a bound is reached the oldest entries are
//! dropped and counted.

use std::collections::VecDeque;
use std::sync::Arc;

/// One chunk of series waiting to be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// Samples in the chunk.
    pub samples: u32,
    /// Timestamp (ms since the epoch) of its oldest sample.
    pub oldest_ms: i64,
    /// Snappy (raw block) of the protobuf `WriteRequest`.
    pub data: Arc<[u8]>,
}

/// What a buffer holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferStats {
    pub entries: u64,
    pub samples: u64,
    pub bytes: u64,
    /// Oldest unsent sample (ms since the epoch).
    pub oldest_ms: Option<i64>,
}

/// Samples a buffer lost, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Dropped to stay within the bound (oldest first).
    pub full: u64,
    /// Unreadable on disk (checksum mismatch, torn write).
    pub corrupt: u64,
    /// Could not be written to disk.
    pub write_error: u64,
}

pub trait Buffer: Send {
    /// Appends an entry (its `seq` is assigned here and returned). Once this returns
    /// the entry is as durable as the buffer makes it (on disk: synced).
    fn push(&mut self, samples: u32, oldest_ms: i64, data: Arc<[u8]>) -> u64;
    /// Up to `max_samples` samples' worth of the oldest entries (at least one entry
    /// when not empty).
    fn peek(&mut self, max_samples: usize) -> Vec<Entry>;
    /// Removes every entry with a sequence number up to `seq`.
    fn ack(&mut self, seq: u64);
    fn stats(&self) -> BufferStats;
    /// Samples lost so far (counters).
    fn lost(&self) -> Lost;
    /// The entries up to `last_seq` are about to be sent (the disk buffer records it).
    fn sending(&mut self, _last_seq: u64) {}
    /// The last I/O problem since the previous call, if any.
    fn take_error(&mut self) -> Option<String> {
        None
    }
}

/// The in-memory queue, bounded by a number of samples.
pub struct MemoryBuffer {
    entries: VecDeque<Entry>,
    capacity: u64,
    samples: u64,
    bytes: u64,
    next_seq: u64,
    lost: Lost,
}

impl MemoryBuffer {
    pub fn new(capacity_samples: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity_samples as u64,
            samples: 0,
            bytes: 0,
            next_seq: 1,
            lost: Lost::default(),
        }
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.samples -= u64::from(e.samples);
        self.bytes -= e.data.len() as u64;
        Some(e)
    }
}

impl Buffer for MemoryBuffer {
    fn push(&mut self, samples: u32, oldest_ms: i64, data: Arc<[u8]>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        while !self.entries.is_empty() && self.samples + u64::from(samples) > self.capacity {
            if let Some(e) = self.pop_front() {
                self.lost.full += u64::from(e.samples);
            }
        }
        self.samples += u64::from(samples);
        self.bytes += data.len() as u64;
        self.entries.push_back(Entry {
            seq,
            samples,
            oldest_ms,
            data,
        });
        seq
    }

    fn peek(&mut self, max_samples: usize) -> Vec<Entry> {
        take_up_to(self.entries.iter().cloned(), max_samples)
    }

    fn ack(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            self.pop_front();
        }
    }

    fn stats(&self) -> BufferStats {
        BufferStats {
            entries: self.entries.len() as u64,
            samples: self.samples,
            bytes: self.bytes,
            oldest_ms: self.entries.iter().map(|e| e.oldest_ms).min(),
        }
    }

    fn lost(&self) -> Lost {
        self.lost
    }
}

/// The first entries of `it` while their samples add up to at most `max_samples`
/// (always the first one).
pub fn take_up_to(it: impl Iterator<Item = Entry>, max_samples: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut n = 0usize;
    for e in it {
        if !out.is_empty() && n + e.samples as usize > max_samples {
            break;
        }
        n += e.samples as usize;
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Arc<[u8]> {
        vec![7u8; n].into()
    }

    #[test]
    fn fifo_ack_and_batching() {
        let mut b = MemoryBuffer::new(1000);
        for i in 0..5 {
            b.push(100, i, data(10));
        }
        let p = b.peek(250);
        assert_eq!(p.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        b.ack(2);
        assert_eq!(b.stats().samples, 300);
        assert_eq!(b.stats().oldest_ms, Some(2));
        // A single entry larger than the limit still goes out alone.
        assert_eq!(b.peek(10).len(), 1);
    }

    #[test]
    fn full_drops_oldest_and_counts() {
        let mut b = MemoryBuffer::new(250);
        for i in 0..5 {
            b.push(100, i, data(10));
        }
        assert_eq!(b.stats().samples, 200);
        assert_eq!(b.lost().full, 300);
        assert_eq!(b.peek(1000)[0].seq, 4);
        // Acking an entry that was dropped meanwhile is harmless.
        b.ack(2);
        assert_eq!(b.stats().entries, 2);
    }
}
