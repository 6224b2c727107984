//! A `{uuid: [samples oldest first]}` response assembled from stored sample
//! fragments: a [`Snapshot`] holds references to the fragments of one moment (no copy of
//! the history), and its text is written once, on the first read of that moment, into
//! one buffer that every response of the moment sends ([`Snapshot::body`]). A new tick
//! replaces the snapshot; its buffer is freed when the last response using it is sent.
//! (Streaming each response in chunks copied the whole text once per response, and 200
//! concurrent clients held up to 400 KiB of queued chunks each.)
//!
//! The all-domains text is written into a buffer kept from the moment before
//! ([`BodyPool`]): while someone reads every tick, the ~1.4 MB buffer stays resident and
//! is written over, instead of being freed each tick and its pages faulted in again;
//! the store drops the spare once a moment goes unread.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use vadvisor_api::axum::body::Bytes;

use super::sample::Fragment;
use crate::json_write::write_str;

/// One domain's history as of the snapshot.
pub struct DomainSnapshot {
    /// `"uuid":[`
    head: Box<[u8]>,
    /// The name as a JSON string.
    name: Box<[u8]>,
    samples: Vec<Fragment>,
}

impl DomainSnapshot {
    pub fn new(uuid: &str, name: &str, samples: Vec<Fragment>) -> Self {
        let mut head = Vec::with_capacity(uuid.len() + 4);
        write_str(&mut head, uuid);
        head.extend_from_slice(b":[");
        let mut quoted = Vec::with_capacity(name.len() + 2);
        write_str(&mut quoted, name);
        Self {
            head: head.into(),
            name: quoted.into(),
            samples,
        }
    }
}

/// One spare text buffer, handed back by the moment whose text it held once its last
/// response is sent, and written over by the next moment's text.
#[derive(Default)]
pub struct BodyPool {
    spare: Mutex<Option<Vec<u8>>>,
}

impl BodyPool {
    /// An empty buffer with room for `len` bytes: the spare if it has the room and is
    /// not more than twice as large, else a new one with an eighth more (the next
    /// moment's text is a little longer or shorter).
    fn take(&self, len: usize) -> Vec<u8> {
        let spare = self.lock().take();
        match spare {
            Some(mut buf) if buf.capacity() >= len && buf.capacity() / 2 <= len.max(64 * 1024) => {
                buf.clear();
                buf
            }
            _ => Vec::with_capacity(len + len / 8),
        }
    }

    /// Keeps `buf` as the spare unless there is one already.
    fn put(&self, buf: Vec<u8>) {
        let mut spare = self.lock();
        if spare.is_none() {
            *spare = Some(buf);
        }
    }

    /// Frees the spare (nobody reads every moment any more).
    pub fn clear(&self) {
        let spare = self.lock().take();
        drop(spare);
    }

    /// Bytes held by the spare.
    pub fn spare_bytes(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::capacity)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A text buffer that goes back to its pool when the last response using it is sent.
struct Pooled {
    buf: Vec<u8>,
    pool: Weak<BodyPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(std::mem::take(&mut self.buf));
        }
    }
}

/// Every listed domain's samples at one moment, ready to be written.
pub struct Snapshot {
    domains: Vec<DomainSnapshot>,
    len: usize,
    /// The text, written on the first read.
    body: OnceLock<Bytes>,
    /// Where the text's buffer comes from and goes back to (the all-domains moments).
    pool: Option<Arc<BodyPool>>,
}

/// Where writing a snapshot stands: the unit being written and how much of it is out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Open,
    Head(usize),
    Sample(usize, usize),
    Close(usize),
    End,
    Done,
}

impl Snapshot {
    /// `domains` in the order they are written (callers sort them by UUID).
    pub fn new(domains: Vec<DomainSnapshot>) -> Self {
        Self::with_pool(domains, None)
    }

    /// As [`new`](Self::new), with the text written into `pool`'s spare buffer.
    pub fn with_pool(domains: Vec<DomainSnapshot>, pool: Option<Arc<BodyPool>>) -> Self {
        let mut s = Self {
            domains,
            len: 0,
            body: OnceLock::new(),
            pool,
        };
        let mut unit = Unit::Open;
        while unit != Unit::Done {
            s.len += s.pieces(unit).iter().map(|p| p.len()).sum::<usize>();
            unit = s.next(unit);
        }
        s
    }

    /// Length of the JSON text.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pieces(&self, unit: Unit) -> [&[u8]; 4] {
        let comma = |first: bool| if first { &b""[..] } else { &b","[..] };
        match unit {
            Unit::Open => [b"{", &[], &[], &[]],
            Unit::Head(d) => [comma(d == 0), &self.domains[d].head, &[], &[]],
            Unit::Sample(d, i) => {
                let domain = &self.domains[d];
                let [a, b, c] = domain.samples[i].pieces(&domain.name);
                [comma(i == 0), a, b, c]
            }
            Unit::Close(_) => [b"]", &[], &[], &[]],
            Unit::End => [b"}", &[], &[], &[]],
            Unit::Done => [&[], &[], &[], &[]],
        }
    }

    fn next(&self, unit: Unit) -> Unit {
        let head_or_end = |d: usize| {
            if d < self.domains.len() {
                Unit::Head(d)
            } else {
                Unit::End
            }
        };
        let sample_or_close = |d: usize, i: usize| {
            if i < self.domains[d].samples.len() {
                Unit::Sample(d, i)
            } else {
                Unit::Close(d)
            }
        };
        match unit {
            Unit::Open => head_or_end(0),
            Unit::Head(d) => sample_or_close(d, 0),
            Unit::Sample(d, i) => sample_or_close(d, i + 1),
            Unit::Close(d) => head_or_end(d + 1),
            Unit::End | Unit::Done => Unit::Done,
        }
    }

    /// The text, shared by every caller (written on the first call).
    pub fn body(&self) -> Bytes {
        self.body
            .get_or_init(|| {
                let mut out = match &self.pool {
                    Some(pool) => pool.take(self.len),
                    None => Vec::with_capacity(self.len),
                };
                let mut unit = Unit::Open;
                while unit != Unit::Done {
                    for piece in self.pieces(unit) {
                        out.extend_from_slice(piece);
                    }
                    unit = self.next(unit);
                }
                match &self.pool {
                    Some(pool) => Bytes::from_owner(Pooled {
                        buf: out,
                        pool: Arc::downgrade(pool),
                    }),
                    None => Bytes::from(out),
                }
            })
            .clone()
    }

    /// The text in a buffer of its own.
    pub fn to_vec(&self) -> Vec<u8> {
        self.body().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn fragment(text: &str) -> Fragment {
        Fragment::for_test(text)
    }

    fn snapshot() -> Arc<Snapshot> {
        let big = format!("{{\"name\":,\"x\":\"{}\"}}", "y".repeat(50_000));
        Arc::new(Snapshot::new(vec![
            DomainSnapshot::new("a", "n\"a", vec![fragment("{\"name\":}"), fragment(&big)]),
            DomainSnapshot::new("b", "nb", vec![]),
            DomainSnapshot::new("c", "nc", vec![fragment("{\"k\":1}")]),
        ]))
    }

    #[test]
    fn the_text_is_written_once_and_shared() {
        let snap = snapshot();
        let whole = snap.body();
        assert_eq!(whole.len(), snap.len(), "the announced length");
        let text = String::from_utf8(whole.to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert_eq!(v["a"][0]["name"], "n\"a", "the name goes into its place");
        assert_eq!(v["a"][1]["x"].as_str().unwrap().len(), 50_000);
        assert_eq!(v["b"], serde_json::json!([]));
        assert_eq!(v["c"], serde_json::json!([{"k": 1}]));
        // A second read sends the same buffer: no copy per response.
        assert_eq!(snap.body().as_ptr(), whole.as_ptr());
        assert_eq!(snap.to_vec(), whole.to_vec());
        assert_eq!(Snapshot::new(vec![]).to_vec(), b"{}");
    }

    fn pooled(pool: &Arc<BodyPool>) -> Snapshot {
        let big = format!("{{\"x\":\"{}\"}}", "y".repeat(100_000));
        Snapshot::with_pool(
            vec![DomainSnapshot::new("a", "na", vec![fragment(&big)])],
            Some(pool.clone()),
        )
    }

    #[test]
    fn the_next_moment_writes_over_the_buffer_the_last_one_sent() {
        let pool = Arc::new(BodyPool::default());
        let first = pooled(&pool);
        let sent = first.body();
        let at = sent.as_ptr();
        drop(first);
        assert_eq!(pool.spare_bytes(), 0, "a response still sends it");
        drop(sent);
        assert!(
            pool.spare_bytes() >= 100_000,
            "back once its last response is sent"
        );
        let second = pooled(&pool);
        let text = second.body();
        assert_eq!(text.as_ptr(), at, "written over, not allocated anew");
        assert_eq!(pool.spare_bytes(), 0, "taken");
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["a"][0]["x"].as_str().unwrap().len(), 100_000);
        // A spare too small for the next text, or more than twice its size, is not used.
        drop((second, text));
        assert_eq!(pool.take(1_000_000).capacity(), 1_125_000);
        pool.put(Vec::with_capacity(1_000_000));
        assert_eq!(pool.take(10_000).capacity(), 11_250);
        // Cleared: the spare is freed.
        pool.put(Vec::with_capacity(1_000));
        pool.clear();
        assert_eq!(pool.spare_bytes(), 0);
    }
}
