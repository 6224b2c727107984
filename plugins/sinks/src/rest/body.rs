//! A `{uuid: [samples oldest first]}` response assembled from stored sample
//! fragments: a [`Snapshot`] holds references to the fragments of one moment (no copy of
//! the history), and [`JsonBody`] streams it in chunks of at most [`CHUNK`] bytes, so a
//! response never needs the whole body in memory and concurrent responses share the
//! fragments instead of each holding a copy.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use vadvisor_api::axum::body::Bytes;

use super::sample::Fragment;
use crate::json_write::write_str;

/// Largest chunk a response body hands to the HTTP layer at once.
pub const CHUNK: usize = 16 * 1024;

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
        let mut s = Self { domains, len: 0 };
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

    /// The whole text in one buffer (small responses, tests).
    pub fn to_vec(self: &Arc<Self>) -> Vec<u8> {
        let mut body = JsonBody::new(self.clone());
        let mut out = Vec::with_capacity(self.len);
        body.fill(&mut out, self.len);
        out
    }
}

/// Streams a [`Snapshot`] as an HTTP body, [`CHUNK`] bytes at a time, with its exact
/// length announced.
pub struct JsonBody {
    snapshot: Arc<Snapshot>,
    unit: Unit,
    /// Bytes of the current unit already written.
    offset: usize,
    remaining: usize,
}

impl JsonBody {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            remaining: snapshot.len,
            snapshot,
            unit: Unit::Open,
            offset: 0,
        }
    }

    /// Appends up to `max` bytes of what is left.
    fn fill(&mut self, out: &mut Vec<u8>, max: usize) {
        let start = out.len();
        let limit = start + max.min(self.remaining);
        while out.len() < limit && self.unit != Unit::Done {
            let mut skip = self.offset;
            let mut complete = true;
            for piece in self.snapshot.pieces(self.unit) {
                if skip >= piece.len() {
                    skip -= piece.len();
                    continue;
                }
                let piece = &piece[skip..];
                skip = 0;
                let room = limit - out.len();
                if piece.len() > room {
                    out.extend_from_slice(&piece[..room]);
                    self.offset += room;
                    complete = false;
                    break;
                }
                out.extend_from_slice(piece);
                self.offset += piece.len();
            }
            if complete {
                self.unit = self.snapshot.next(self.unit);
                self.offset = 0;
            }
        }
        self.remaining -= out.len() - start;
    }
}

impl http_body::Body for JsonBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let mut chunk = Vec::with_capacity(CHUNK.min(self.remaining));
        self.fill(&mut chunk, CHUNK);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn fragment(text: &str) -> Fragment {
        Fragment::for_test(text)
    }

    fn snapshot() -> Arc<Snapshot> {
        let big = format!("{{\"name\":,\"x\":\"{}\"}}", "y".repeat(3 * CHUNK));
        Arc::new(Snapshot::new(vec![
            DomainSnapshot::new("a", "n\"a", vec![fragment("{\"name\":}"), fragment(&big)]),
            DomainSnapshot::new("b", "nb", vec![]),
            DomainSnapshot::new("c", "nc", vec![fragment("{\"k\":1}")]),
        ]))
    }

    #[tokio::test]
    async fn streams_in_bounded_chunks_with_the_exact_length() {
        let snap = snapshot();
        let whole = snap.to_vec();
        assert_eq!(whole.len(), snap.len());
        let text = String::from_utf8(whole.clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert_eq!(v["a"][0]["name"], "n\"a", "the name goes into its place");
        assert_eq!(v["a"][1]["x"].as_str().unwrap().len(), 3 * CHUNK);
        assert_eq!(v["b"], serde_json::json!([]));
        assert_eq!(v["c"], serde_json::json!([{"k": 1}]));

        let mut body = JsonBody::new(snap.clone());
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some(whole.len() as u64)
        );
        let mut streamed = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(!data.is_empty() && data.len() <= CHUNK, "{}", data.len());
            streamed.extend_from_slice(&data);
            frames += 1;
        }
        assert_eq!(streamed, whole);
        assert_eq!(
            frames,
            whole.len().div_ceil(CHUNK),
            "full chunks but the last"
        );
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(Arc::new(Snapshot::new(vec![])).to_vec(), b"{}");
    }
}
