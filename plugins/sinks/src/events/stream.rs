//! Stream mode (`stream=true`): headers at once, then every new event passing the
//! filters, with a heartbeat while idle; NDJSON by default, Server-Sent Events when the
//! client accepts `text/event-stream`.
//!
//! With SSE, `Last-Event-ID` replays the stored events after that id before going live,
//! without gap or duplicate: the client subscribes to the live feed first, then the
//! history is replayed, then live events with an id not above the last replayed one
//! are skipped. A client that stops reading is disconnected once `client_buffer`
//! events wait for it (the response ends with an error); all streams end on shutdown.
//!
//! The stream is never compressed: `Content-Encoding: identity` makes the server's
//! gzip layer leave it alone (gzip would hold events back in its buffer).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use vadvisor_api::axum::body::{Body, Bytes};
use vadvisor_api::axum::http::{header, HeaderValue};
use vadvisor_api::axum::response::{IntoResponse, Response};

use super::db::EventDb;
use super::hub::{Hub, LiveEvent, Subscription};
use super::query::Filter;
use super::render;

/// Replayed events per database round trip.
const REPLAY_PAGE: usize = 500;
/// Live events sent in one chunk at most.
const CHUNK_EVENTS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Sse,
}

impl Format {
    fn heartbeat(self) -> &'static str {
        match self {
            Format::Ndjson => render::NDJSON_HEARTBEAT,
            Format::Sse => render::SSE_HEARTBEAT,
        }
    }

    fn render(self, id: Option<i64>, e: &vadvisor_api::LifecycleEvent) -> String {
        match self {
            Format::Ndjson => render::ndjson(e),
            Format::Sse => render::sse(id, e),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            // vAdvisor's content type, kept for compatibility; the body is NDJSON.
            Format::Ndjson => "application/json",
            Format::Sse => "text/event-stream",
        }
    }
}

/// What one stream needs.
pub struct StreamSpec {
    pub format: Format,
    pub filter: Filter,
    pub heartbeat: Duration,
    pub client_buffer: usize,
    /// SSE `Last-Event-ID`: replay stored events after it first.
    pub replay_after: Option<i64>,
}

struct State {
    sub: Subscription,
    db: Arc<EventDb>,
    spec: StreamSpec,
    /// Live events with an id up to this one were replayed already.
    skip_upto: i64,
    done: bool,
}

fn failure(message: &str) -> std::io::Error {
    std::io::Error::other(message.to_string())
}

/// The streaming response.
pub fn respond(hub: &Arc<Hub>, db: Arc<EventDb>, spec: StreamSpec) -> Response {
    let format = spec.format;
    let sub = hub.subscribe(spec.filter.clone(), spec.client_buffer);
    // Fused: body wrappers may poll again after the end.
    let body = Body::from_stream(
        events(State {
            sub,
            db,
            spec,
            skip_upto: i64::MIN,
            done: false,
        })
        .fuse(),
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    // Asks reverse proxies (nginx) not to buffer the stream either.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The body: replayed history first (SSE with `Last-Event-ID`), then live events.
fn events(state: State) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.sub.kicked() {
            st.done = true;
            return Some((Err(failure("stream client too slow: disconnected")), st));
        }
        if let Some(after) = st.spec.replay_after {
            match replay_page(&st, after).await {
                Ok(rows) => {
                    st.spec.replay_after =
                        (rows.len() == REPLAY_PAGE).then(|| rows.last().map_or(after, |r| r.id));
                    if let Some(last) = rows.last() {
                        st.skip_upto = st.skip_upto.max(last.id);
                        let chunk: String = rows
                            .iter()
                            .map(|r| st.spec.format.render(Some(r.id), &r.event))
                            .collect();
                        return Some((Ok(Bytes::from(chunk)), st));
                    }
                }
                Err(e) => {
                    st.done = true;
                    tracing::warn!(error = %e, "cannot replay the event history to a stream client");
                    return Some((Err(failure("event history unavailable")), st));
                }
            }
        }
        live_chunk(st).await
    })
}

async fn replay_page(st: &State, after: i64) -> Result<Vec<super::db::StoredEvent>, String> {
    let db = st.db.clone();
    let filter = st.spec.filter.clone();
    tokio::task::spawn_blocking(move || db.after_id(&filter, after, REPLAY_PAGE))
        .await
        .map_err(|e| e.to_string())?
}

/// The next live chunk, a heartbeat after `heartbeat` of silence, or the end.
async fn live_chunk(mut st: State) -> Option<(Result<Bytes, std::io::Error>, State)> {
    loop {
        let received = tokio::select! {
            e = st.sub.rx.recv() => e,
            _ = tokio::time::sleep(st.spec.heartbeat) => {
                let beat = st.spec.format.heartbeat();
                return Some((Ok(Bytes::from_static(beat.as_bytes())), st));
            }
        };
        let Some(first) = received else {
            // The hub let go of this client: shutdown, or too slow.
            st.done = true;
            return if st.sub.kicked() {
                Some((Err(failure("stream client too slow: disconnected")), st))
            } else {
                None
            };
        };
        let mut chunk = String::new();
        let mut push = |e: &LiveEvent, st: &State| {
            if e.id.is_none_or(|id| id > st.skip_upto) {
                chunk.push_str(&st.spec.format.render(e.id, &e.event));
            }
        };
        push(&first, &st);
        for _ in 1..CHUNK_EVENTS {
            match st.sub.rx.try_recv() {
                Ok(e) => push(&e, &st),
                Err(_) => break,
            }
        }
        if !chunk.is_empty() {
            return Some((Ok(Bytes::from(chunk)), st));
        }
    }
}

/// Whether the client asked for Server-Sent Events.
pub fn wants_sse(accept: Option<&HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|range| {
            range
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(wants_sse(h("text/event-stream").as_ref()));
        assert!(wants_sse(
            h("application/json, Text/Event-Stream;q=0.9").as_ref()
        ));
        assert!(!wants_sse(h("application/json").as_ref()));
        assert!(!wants_sse(h("*/*").as_ref()));
        assert!(!wants_sse(None));
    }
}
