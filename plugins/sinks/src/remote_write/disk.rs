//! The on-disk buffer: a crash-safe append-only segment log with checksums.
//!
//! Layout of `path`: `seg-<first seq, 20 digits>.log` segment files and `acked` (the
//! sequence number of the last entry the receiver took, and the last one of the request
//! in flight, with a CRC-32: after a crash the first request is the same as the one that
//! may have reached the receiver, so a receiver that refuses duplicates refuses only it). A record is
//! `len u32 | crc32 u32 | seq u64 | samples u32 | oldest_ms i64 | payload` (little
//! endian; the CRC covers everything after itself). Every push is written and
//! `fdatasync`ed before it returns, so an entry the buffer took survives SIGKILL and a
//! power cut. On start the segments are scanned: a torn or corrupt record ends its
//! segment (the file is cut there) and entries up to `acked` are skipped. The log is
//! kept within `max_size` by deleting whole segments, oldest first (unsent samples in
//! them are counted as lost), and segments that are wholly acknowledged are deleted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::buffer::{Buffer, BufferStats, Entry, Lost};

const HEADER: usize = 28;
const ACKED: &str = "acked";

struct Rec {
    seq: u64,
    offset: u64,
    len: u32,
    samples: u32,
    oldest_ms: i64,
}

struct Segment {
    path: PathBuf,
    bytes: u64,
    recs: VecDeque<Rec>,
}

pub struct DiskBuffer {
    dir: PathBuf,
    max_size: u64,
    segment_size: u64,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending.
    active: Option<File>,
    acked: u64,
    /// Last entry of the request in flight (recorded before it is sent).
    inflight: u64,
    /// After a restart: the first request ends where the one in flight at the crash did.
    resume_until: Option<u64>,
    next_seq: u64,
    lost: Lost,
    /// Last write error, for the caller to log once.
    pub last_error: Option<String>,
}

fn crc(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

fn encode(seq: u64, samples: u32, oldest_ms: i64, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.extend_from_slice(&samples.to_le_bytes());
    rec.extend_from_slice(&oldest_ms.to_le_bytes());
    rec.extend_from_slice(payload);
    let c = crc(&rec[8..]);
    rec[4..8].copy_from_slice(&c.to_le_bytes());
    rec
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Scans a segment's bytes: its valid records and the length of the valid prefix.
fn scan(bytes: &[u8]) -> (VecDeque<Rec>, u64) {
    let mut recs = VecDeque::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let len = le_u32(&bytes[at..]) as usize;
        let Some(end) = (at + HEADER).checked_add(len).filter(|e| *e <= bytes.len()) else {
            break;
        };
        if le_u32(&bytes[at + 4..]) != crc(&bytes[at + 8..end]) {
            break;
        }
        recs.push_back(Rec {
            seq: le_u64(&bytes[at + 8..]),
            offset: at as u64,
            len: len as u32,
            samples: le_u32(&bytes[at + 16..]),
            oldest_ms: le_u64(&bytes[at + 20..]) as i64,
        });
        at = end;
    }
    (recs, at as u64)
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

impl DiskBuffer {
    /// Opens (or creates) the log in `dir`, recovering what a crash left.
    pub fn open(dir: &Path, max_size: u64) -> io::Result<DiskBuffer> {
        std::fs::create_dir_all(dir)?;
        let (acked, inflight) = match std::fs::read(dir.join(ACKED)) {
            Ok(b) if b.len() == 20 && le_u32(&b[16..]) == crc(&b[..16]) => {
                (le_u64(&b), le_u64(&b[8..]))
            }
            _ => (0, 0),
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
            })
            .collect();
        names.sort();
        let mut buf = DiskBuffer {
            dir: dir.to_path_buf(),
            max_size,
            segment_size: (max_size / 8).clamp(64 << 10, 64 << 20),
            segments: VecDeque::new(),
            active: None,
            acked,
            inflight,
            resume_until: (inflight > acked).then_some(inflight),
            next_seq: acked + 1,
            lost: Lost::default(),
            last_error: None,
        };
        let count = names.len();
        for (i, path) in names.into_iter().enumerate() {
            let bytes = std::fs::read(&path)?;
            let (recs, valid) = scan(&bytes);
            if valid < bytes.len() as u64 {
                tracing::warn!(segment = %path.display(), valid_bytes = valid, file_bytes = bytes.len(),
                    "remote_write disk buffer: torn or corrupt record; the segment is cut there");
                buf.lost.corrupt += 1;
                OpenOptions::new().write(true).open(&path)?.set_len(valid)?;
            }
            if let Some(last) = recs.back() {
                buf.next_seq = buf.next_seq.max(last.seq + 1);
            }
            if recs.iter().all(|r| r.seq <= acked) && i + 1 < count {
                std::fs::remove_file(&path)?;
                continue;
            }
            buf.segments.push_back(Segment {
                path,
                bytes: valid,
                recs,
            });
        }
        Ok(buf)
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn unacked(&self) -> impl Iterator<Item = (&Segment, &Rec)> {
        let acked = self.acked;
        self.segments
            .iter()
            .flat_map(|s| s.recs.iter().map(move |r| (s, r)))
            .filter(move |(_, r)| r.seq > acked)
    }

    fn open_new_segment(&mut self, first_seq: u64) -> io::Result<()> {
        let path = self.dir.join(segment_name(first_seq));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        self.segments.push_back(Segment {
            path,
            bytes,
            recs: VecDeque::new(),
        });
        self.active = Some(file);
        Ok(())
    }

    fn append(&mut self, seq: u64, samples: u32, oldest_ms: i64, payload: &[u8]) -> io::Result<()> {
        let needs_new = match (self.segments.back(), &self.active) {
            (Some(s), Some(_)) => s.bytes >= self.segment_size,
            _ => true,
        };
        if needs_new {
            self.active = None;
            self.open_new_segment(seq)?;
        }
        let rec = encode(seq, samples, oldest_ms, payload);
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no active segment"));
        };
        let offset = seg.bytes;
        let written = file.write_all(&rec).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut a partial record so later ones stay readable; else start afresh.
            if file.set_len(offset).is_err() {
                self.active = None;
            }
            return Err(e);
        }
        seg.bytes += rec.len() as u64;
        seg.recs.push_back(Rec {
            seq,
            offset,
            len: payload.len() as u32,
            samples,
            oldest_ms,
        });
        Ok(())
    }

    /// Deletes wholly acknowledged segments (not the active one) and, beyond
    /// `max_size`, the oldest segments.
    fn trim(&mut self) {
        while self.segments.len() > 1 {
            let front = &self.segments[0];
            let done = front.recs.iter().all(|r| r.seq <= self.acked);
            let over = self.total_bytes() > self.max_size;
            if !done && !over {
                break;
            }
            if let Some(seg) = self.segments.pop_front() {
                if !done {
                    self.lost.full += seg
                        .recs
                        .iter()
                        .filter(|r| r.seq > self.acked)
                        .map(|r| u64::from(r.samples))
                        .sum::<u64>();
                }
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    self.last_error = Some(format!("cannot delete {}: {e}", seg.path.display()));
                }
            }
        }
    }

    fn persist_ack(&self) -> io::Result<()> {
        let mut b = self.acked.to_le_bytes().to_vec();
        b.extend_from_slice(&self.inflight.to_le_bytes());
        let c = crc(&b);
        b.extend_from_slice(&c.to_le_bytes());
        let tmp = self.dir.join("acked.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_data()?;
        std::fs::rename(&tmp, self.dir.join(ACKED))
    }
}

impl Buffer for DiskBuffer {
    fn push(&mut self, samples: u32, oldest_ms: i64, data: Arc<[u8]>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Err(e) = self.append(seq, samples, oldest_ms, &data) {
            self.lost.write_error += u64::from(samples);
            self.last_error = Some(format!("cannot write to {}: {e}", self.dir.display()));
        }
        self.trim();
        seq
    }

    fn peek(&mut self, max_samples: usize) -> Vec<Entry> {
        loop {
            let mut picked: Vec<(PathBuf, u64, u32, u64, u32, i64)> = Vec::new();
            let mut n = 0usize;
            let until = self.resume_until.unwrap_or(u64::MAX);
            for (s, r) in self.unacked() {
                if r.seq > until || (!picked.is_empty() && n + r.samples as usize > max_samples) {
                    break;
                }
                n += r.samples as usize;
                picked.push((
                    s.path.clone(),
                    r.offset,
                    r.len,
                    r.seq,
                    r.samples,
                    r.oldest_ms,
                ));
            }
            let mut out = Vec::with_capacity(picked.len());
            let mut bad = None;
            for (path, offset, len, seq, samples, oldest_ms) in picked {
                let mut rec = vec![0u8; HEADER + len as usize];
                let ok = File::open(&path)
                    .and_then(|f| f.read_exact_at(&mut rec, offset))
                    .is_ok()
                    && le_u32(&rec[4..]) == crc(&rec[8..])
                    && le_u64(&rec[8..]) == seq;
                if !ok {
                    bad = Some((seq, samples));
                    break;
                }
                out.push(Entry {
                    seq,
                    samples,
                    oldest_ms,
                    data: Arc::from(&rec[HEADER..]),
                });
            }
            let Some((seq, samples)) = bad else {
                return out;
            };
            // Unreadable: counted, forgotten, and the batch is picked again without it.
            self.lost.corrupt += u64::from(samples);
            for s in &mut self.segments {
                s.recs.retain(|r| r.seq != seq);
            }
        }
    }

    fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        if self.resume_until.is_some_and(|u| u <= seq) {
            self.resume_until = None;
        }
        if let Err(e) = self.persist_ack() {
            self.last_error = Some(format!(
                "cannot record progress in {}: {e}",
                self.dir.display()
            ));
        }
        self.trim();
    }

    fn stats(&self) -> BufferStats {
        let mut s = BufferStats {
            bytes: self.total_bytes(),
            ..BufferStats::default()
        };
        for (_, r) in self.unacked() {
            s.entries += 1;
            s.samples += u64::from(r.samples);
            s.oldest_ms = Some(s.oldest_ms.map_or(r.oldest_ms, |o| o.min(r.oldest_ms)));
        }
        s
    }

    fn lost(&self) -> Lost {
        self.lost
    }

    fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    fn sending(&mut self, last_seq: u64) {
        if last_seq > self.inflight {
            self.inflight = last_seq;
            if let Err(e) = self.persist_ack() {
                self.last_error = Some(format!(
                    "cannot record progress in {}: {e}",
                    self.dir.display()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, fill: u8) -> Arc<[u8]> {
        vec![fill; n].into()
    }

    #[test]
    fn survives_reopen_and_resumes_after_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        for i in 0..10u8 {
            b.push(10, i64::from(i), data(100, i));
        }
        let p = b.peek(35);
        assert_eq!(p.len(), 3);
        assert_eq!(&*p[2].data, &[2u8; 100][..]);
        b.ack(p[2].seq);
        drop(b); // as after SIGKILL: nothing else is written on the way out
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.stats().samples, 70);
        let p = b.peek(1000);
        assert_eq!(p[0].seq, 4);
        assert_eq!(&*p[0].data, &[3u8; 100][..]);
        let seq = b.push(1, 99, data(5, 0xee));
        assert_eq!(seq, 11, "sequence numbers continue");
    }

    #[test]
    fn after_a_crash_the_first_request_is_the_one_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        for i in 0..4 {
            b.push(10, i, data(10, 0));
        }
        let p = b.peek(25);
        assert_eq!(p.len(), 2);
        b.sending(p[1].seq);
        drop(b); // killed while the request was in flight
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.push(10, 9, data(10, 0));
        let again = b.peek(1000);
        assert_eq!(
            again.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2],
            "the same request"
        );
        b.ack(2);
        assert_eq!(b.peek(1000).len(), 3, "then everything else");
    }

    #[test]
    fn torn_tail_is_cut_and_later_writes_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.push(1, 1, data(50, 1));
        b.push(1, 2, data(50, 2));
        let seg = b.segments[0].path.clone();
        drop(b);
        // A crash in the middle of the second record's write.
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.stats().entries, 1);
        b.push(1, 3, data(50, 3));
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        let p = b.peek(100);
        assert_eq!(
            p.iter().map(|e| e.oldest_ms).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn corrupt_record_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        b.push(4, 1, data(50, 1));
        b.push(5, 2, data(50, 2));
        // Flip a payload byte of the first record behind the buffer's back.
        let seg = b.segments[0].path.clone();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[0xff], (HEADER + 10) as u64).unwrap();
        let p = b.peek(100);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].oldest_ms, 2);
        assert_eq!(b.lost().corrupt, 4);
    }

    #[test]
    fn stays_within_max_size_dropping_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let max = 1 << 20;
        let mut b = DiskBuffer::open(dir.path(), max).unwrap();
        for i in 0..400i64 {
            b.push(10, i, data(10_000, 0));
        }
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= max + (64 << 10), "{on_disk} bytes on disk");
        let s = b.stats();
        assert_eq!(
            s.samples + b.lost().full,
            4000,
            "every sample kept or counted"
        );
        assert!(b.lost().full > 0);
        // What is left is the newest data.
        assert_eq!(b.peek(usize::MAX).last().unwrap().oldest_ms, 399);
    }

    #[test]
    fn acked_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        let mut last = 0;
        for i in 0..100i64 {
            last = b.push(10, i, data(10_000, 0));
        }
        b.ack(last);
        assert_eq!(b.segments.len(), 1, "only the active segment is kept");
        assert_eq!(b.stats().samples, 0);
    }
}
