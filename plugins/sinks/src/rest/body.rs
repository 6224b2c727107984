//! A `{uuid: [samples oldest first]}` response assembled from stored sample
//! fragments: a [`Snapshot`] holds references to the fragments of one moment (no copy of
//! the history), and its text is written once, on the first read of that moment, into
//! one buffer that every response of the moment sends ([`Snapshot::body`]). A new tick
//! replaces the snapshot; its buffer is freed when the last response using it is sent.
//! (Streaming each response in chunks copied the whole text once per response, and 200
//! concurrent clients held up to 400 KiB of queued chunks each.)

use std::sync::OnceLock;

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

/// Every listed domain's samples at one moment, ready to be written.
pub struct Snapshot {
    domains: Vec<DomainSnapshot>,
    len: usize,
    /// The text, written on the first read.
    body: OnceLock<Bytes>,
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
        let mut s = Self {
            domains,
            len: 0,
            body: OnceLock::new(),
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
                let mut out = Vec::with_capacity(self.len);
                let mut unit = Unit::Open;
                while unit != Unit::Done {
                    for piece in self.pieces(unit) {
                        out.extend_from_slice(piece);
                    }
                    unit = self.next(unit);
                }
                Bytes::from(out)
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
}
