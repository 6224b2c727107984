//! Tests of stream mode: NDJSON and SSE framing and headers, heartbeats, filters, the
//! `Last-Event-ID` replay without gap or duplicate, a non-reading client disconnected
//! over real TCP with bounded memory, and streams ending on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use vadvisor_api::axum::body::Body;
use vadvisor_api::axum::http::{header, Request, Response, StatusCode};
use vadvisor_api::LifecycleEvent;

use super::hub::LiveEvent;
use super::query::Filter;
use super::stream::{self, Format, StreamSpec};
use super::tests::{ev, options, Harness, U1, U2};

fn fast(path: &str, client_buffer: usize) -> super::EventsSinkOptions {
    let mut o = options(path);
    o.heartbeat = Duration::from_millis(150);
    o.client_buffer = client_buffer;
    o
}

async fn open(h: &Harness, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    h.router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// The next data frame of a streaming body as text (`None`: ended; panics on timeout).
async fn next_text(body: &mut Body) -> Option<Result<String, String>> {
    let frame = tokio::time::timeout(Duration::from_secs(3), body.frame())
        .await
        .expect("a frame within 3 s");
    match frame? {
        Ok(f) => Some(Ok(f
            .into_data()
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .unwrap_or_default())),
        Err(e) => Some(Err(e.to_string())),
    }
}

/// Reads frames, skipping heartbeats, until `n` events arrived; returns the raw text.
async fn events_text(body: &mut Body, heartbeat: &str, n: usize, separator: &str) -> String {
    let mut text = String::new();
    while text.matches(separator).count() < n {
        match next_text(body).await {
            Some(Ok(t)) if t == heartbeat => {}
            Some(Ok(t)) => text.push_str(&t),
            other => panic!("stream ended early: {other:?} after {text:?}"),
        }
    }
    text
}

fn now_ev(uuid: &str, name: &str, event: u32, detail: u32) -> LifecycleEvent {
    LifecycleEvent {
        at: SystemTime::now(),
        ..ev(0, uuid, name, event, detail)
    }
}

#[tokio::test]
async fn ndjson_stream_sends_filtered_events_and_heartbeats() {
    let h = Harness::start(fast(":memory:", 16));
    let resp = open(
        &h,
        "/api/v1.0/events?stream=true&started_events=true&stopped_events=true",
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let hv = |k: header::HeaderName| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        hv(header::CONTENT_TYPE).as_deref(),
        Some("application/json")
    );
    assert_eq!(hv(header::CONTENT_ENCODING).as_deref(), Some("identity"));
    assert_eq!(hv(header::CACHE_CONTROL).as_deref(), Some("no-cache"));
    let mut body = resp.into_body();
    // Idle: a heartbeat (an empty line).
    assert_eq!(next_text(&mut body).await, Some(Ok("\n".to_string())));
    h.publish(now_ev(U1, "one", 3, 0)); // Suspended: filtered out
    h.publish(now_ev(U1, "one", 2, 0));
    h.publish(now_ev(U2, "two", 5, 1));
    let text = events_text(&mut body, "\n", 2, "\n").await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        (lines[0]["event_type"].as_str(), lines[0]["reason"].as_str()),
        (Some("Started"), Some("Booted"))
    );
    assert_eq!(
        (
            lines[1]["domain_name"].as_str(),
            lines[1]["reason"].as_str()
        ),
        (Some("two"), Some("Destroyed"))
    );
    h.stop().await;
}

#[tokio::test]
async fn stream_with_domain_filter() {
    let h = Harness::start(fast(":memory:", 16));
    let resp = open(
        &h,
        "/api/v1.0/events?stream=true&all_events=true&domain=two",
        &[],
    )
    .await;
    let mut body = resp.into_body();
    h.publish(now_ev(U1, "one", 2, 0));
    h.publish(now_ev(U2, "two", 2, 0));
    let text = events_text(&mut body, "\n", 1, "\n").await;
    assert!(
        text.contains("\"domain_name\":\"two\"") && !text.contains("\"one\""),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn sse_frames_carry_the_history_ids_and_keepalives() {
    let h = Harness::start(fast(":memory:", 16));
    h.publish(now_ev(U1, "one", 0, 0));
    h.stored(1).await;
    let resp = open(
        &h,
        "/api/v1.0/events?stream=true&all_events=true",
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let mut body = resp.into_body();
    assert_eq!(
        next_text(&mut body).await,
        Some(Ok(": keepalive\n\n".to_string()))
    );
    h.publish(now_ev(U1, "one", 2, 0));
    let text = events_text(&mut body, ": keepalive\n\n", 1, "\n\n").await;
    assert!(
        text.starts_with("id: 2\nevent: lifecycle\ndata: {"),
        "{text}"
    );
    assert!(text.contains("\"event_type\":\"Started\""), "{text}");
    h.stop().await;
}

fn ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[tokio::test]
async fn last_event_id_replays_then_goes_live() {
    let h = Harness::start(fast(":memory:", 16));
    for i in 0..5 {
        h.publish(now_ev(U1, "one", 2, i % 5));
    }
    h.stored(5).await;
    let resp = open(
        &h,
        "/api/v1.0/events?stream=true&all_events=true",
        &[("accept", "text/event-stream"), ("last-event-id", "2")],
    )
    .await;
    let mut body = resp.into_body();
    let replayed = events_text(&mut body, ": keepalive\n\n", 3, "\n\n").await;
    assert_eq!(ids(&replayed), vec![3, 4, 5]);
    h.publish(now_ev(U1, "one", 5, 0));
    h.publish(now_ev(U1, "one", 0, 1));
    let live = events_text(&mut body, ": keepalive\n\n", 2, "\n\n").await;
    assert_eq!(ids(&live), vec![6, 7]);
    h.stop().await;
}

#[tokio::test]
async fn replay_and_live_overlap_gives_no_gap_and_no_duplicate() {
    // Drives the hub and the database by hand to hit the race: an event stored and
    // published after the client subscribed but before its replay query ran is both
    // in the replay and in the live queue; it must be sent once.
    let state = Arc::new(super::build(options(":memory:")).unwrap());
    let store = |e: LifecycleEvent| {
        let id = state.db.insert(&[&e]).unwrap()[0];
        (id, Arc::new(e))
    };
    for i in 0..3 {
        store(now_ev(U1, "one", 2, i));
    }
    let spec = StreamSpec {
        format: Format::Sse,
        filter: Filter::all(),
        heartbeat: Duration::from_secs(30),
        client_buffer: 16,
        replay_after: Some(1),
    };
    let mut body = stream::respond(&state.hub, state.db.clone(), spec).into_body();
    // Subscribed; now event 4 is stored and fanned out before the body is first polled.
    let (id, event) = store(now_ev(U1, "one", 3, 0));
    state.hub.publish(&Arc::new(LiveEvent {
        id: Some(id),
        event,
    }));
    let replayed = events_text(&mut body, "", 3, "\n\n").await;
    assert_eq!(ids(&replayed), vec![2, 3, 4]);
    let (id, event) = store(now_ev(U1, "one", 4, 0));
    state.hub.publish(&Arc::new(LiveEvent {
        id: Some(id),
        event,
    }));
    let live = events_text(&mut body, "", 1, "\n\n").await;
    assert_eq!(ids(&live), vec![5], "event 4 is not sent twice");
}

#[tokio::test]
async fn bad_last_event_id_is_a_400() {
    let h = Harness::start(fast(":memory:", 16));
    let resp = open(
        &h,
        "/api/v1.0/events?stream=true&all_events=true",
        &[("accept", "text/event-stream"), ("last-event-id", "abc")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_with_an_error() {
    let h = Harness::start(fast(":memory:", 4));
    let resp = open(&h, "/api/v1.0/events?stream=true&all_events=true", &[]).await;
    assert_eq!(h.state.hub.clients(), 1);
    for i in 0..10 {
        h.publish(now_ev(U1, "one", 2, i % 5));
    }
    h.stored(10).await;
    assert_eq!(h.state.hub.clients(), 0);
    assert_eq!(h.state.hub.kicked_total(), 1);
    let mut body = resp.into_body();
    assert!(
        matches!(next_text(&mut body).await, Some(Err(_))),
        "the stream ends with an error"
    );
    h.stop().await;
}

#[tokio::test]
async fn streams_end_on_shutdown() {
    let h = Harness::start(fast(":memory:", 16));
    let mut ndjson = open(&h, "/api/v1.0/events?stream=true&all_events=true", &[])
        .await
        .into_body();
    let mut sse = open(
        &h,
        "/api/v1.0/events?stream=true",
        &[("accept", "text/event-stream")],
    )
    .await
    .into_body();
    h.stop().await;
    assert_eq!(next_text(&mut ndjson).await, None);
    assert_eq!(next_text(&mut sse).await, None);
}

/// Over real TCP: headers arrive before any event, and a client that stops reading is
/// disconnected once the socket buffers and its queue are full — the server's memory
/// stays bounded by `client_buffer` events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_tcp_client_gets_headers_at_once_then_is_disconnected() {
    let h = Harness::start(fast(":memory:", 64));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = h.router.clone();
    let server = tokio::spawn(async move { vadvisor_api::axum::serve(listener, router).await });

    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /api/v1.0/events?stream=true&all_events=true HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf))
            .await
            .expect("headers within 1 s")
            .unwrap();
        assert!(n > 0, "connection closed early");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-encoding: identity") && !head.contains("gzip"),
        "{head}"
    );
    assert_eq!(h.state.hub.clients(), 1);

    // Stop reading; publish straight into the hub (as the sink loop does) until the
    // client is dropped.
    let big = Arc::new(now_ev(U1, &"x".repeat(900), 2, 0));
    let mut published = 0u64;
    while h.state.hub.clients() > 0 {
        assert!(
            published < 200_000,
            "the non-reading client was never disconnected"
        );
        for _ in 0..500 {
            h.state.hub.publish(&Arc::new(LiveEvent {
                id: None,
                event: big.clone(),
            }));
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(h.state.hub.kicked_total(), 1);
    drop(socket);
    server.abort();
    h.stop().await;
}
