//! Black-box tests of `/api/v1.0/events` through the real agent and its shared HTTP
//! server (gzip layer included), against libvirt's `test:///default` driver — which
//! delivers no lifecycle events to another connection, so these check the plumbing:
//! strict parameters, an empty history, a stream whose headers come at once, never
//! gzipped, with heartbeats, and which does not hold up a SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client, Agent};

fn config(db: &std::path::Path) -> String {
    format!(
        "libvirt:\n  uri: test:///default\nhttp:\n  listen: {{listen}}\ncollectors:\n  events: {{}}\n\
         sinks:\n  events:\n    path: {}\n    heartbeat: 200ms\n",
        db.display()
    )
}

/// Sends a raw request and returns the socket (to read the streamed answer from).
fn raw_get(agent: &Agent, path_and_headers: &str) -> TcpStream {
    let addr = agent.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    write!(
        s,
        "GET {path_and_headers}\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    .expect("send");
    s
}

/// Reads until `needle` was seen (or panics after 2 s of silence).
fn read_until(s: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("no {:?} yet: {e}", String::from_utf8_lossy(needle)));
        assert!(
            n > 0,
            "connection closed before {:?}",
            String::from_utf8_lossy(needle)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn history_and_errors_through_the_real_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&config(&dir.path().join("events.db")));
    let r = agent.get("/api/v1.0/events?all_events=true").expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().expect("body"), "");

    let r = agent
        .get("/api/v1.0/events?all_events=true&max_events=abc")
        .expect("GET");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().expect("JSON error");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_events")),
        "{v}"
    );

    let r = agent.get("/api/v1.0/events?bogus=1").expect("GET");
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("body").contains("stopped_events"));

    // No trailing slash, as in vAdvisor.
    let r = agent.get("/api/v1.0/events/").expect("GET");
    assert_eq!(r.status(), 404);
    assert!(dir.path().join("events.db").exists());
}

#[test]
fn streams_start_at_once_uncompressed_with_heartbeats_and_end_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(&config(&dir.path().join("events.db")));

    let started = Instant::now();
    let mut ndjson = raw_get(
        &agent,
        "/api/v1.0/events?stream=true&all_events=true HTTP/1.1",
    );
    let mut seen = Vec::new();
    read_until(&mut ndjson, &mut seen, b"\r\n\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "headers took {:?}",
        started.elapsed()
    );
    let head = String::from_utf8_lossy(&seen).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        !head.contains("content-encoding: gzip"),
        "the stream must not be gzipped: {head}"
    );
    // Chunked: a heartbeat is the 1-byte chunk "\n".
    read_until(&mut ndjson, &mut seen, b"1\r\n\n\r\n");

    let mut sse = raw_get(
        &agent,
        "/api/v1.0/events?stream=true&all_events=true HTTP/1.1\r\nAccept: text/event-stream",
    );
    let mut seen_sse = Vec::new();
    read_until(&mut sse, &mut seen_sse, b": keepalive\n\n");
    let head = String::from_utf8_lossy(&seen_sse).to_lowercase();
    assert!(
        head.contains("content-type: text/event-stream") && !head.contains("gzip"),
        "{head}"
    );

    // Open streams do not hold the shutdown up.
    let (status, took) = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?} with open streams"
    );
    drop((ndjson, sse));
    // The history is still there for the next start (empty here, but readable).
    let agent = Agent::start(&config(&dir.path().join("events.db")));
    let r = client()
        .get(format!("{}/api/v1.0/events?all_events=true", agent.base))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
}

#[test]
fn stream_clients_are_capped_with_a_503_and_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&dir.path().join("events.db")).replace(
        "    heartbeat: 200ms\n",
        "    heartbeat: 200ms\n    max_clients: 2\n  prometheus: {}\n",
    );
    let agent = Agent::start(&config);
    // Two clients that read nothing while only heartbeats flow: never disconnected, so
    // only the cap bounds them.
    let stream = "/api/v1.0/events?stream=true&all_events=true HTTP/1.1";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = raw_get(&agent, stream);
        let mut seen = Vec::new();
        read_until(&mut s, &mut seen, b"\r\n\r\n");
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(600));
    let third = agent
        .get("/api/v1.0/events?stream=true&all_events=true")
        .expect("GET");
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "5");
    let v: serde_json::Value = third.json().expect("JSON body");
    assert_eq!(v["status"], 503);
    assert!(
        v["message"].as_str().unwrap().contains("max_clients: 2"),
        "{v}"
    );
    // History requests are not streams: still answered.
    assert_eq!(
        agent
            .get("/api/v1.0/events?all_events=true")
            .unwrap()
            .status(),
        200
    );
    let metrics = agent.get("/metrics").unwrap().text().unwrap();
    assert!(
        metrics.contains("vadvisor_http_limit_hits_total{limit=\"event_streams\"} 1"),
        "{metrics}"
    );
    // A closed stream frees its place.
    drop(held.pop());
    let ok = common::wait_for(Duration::from_secs(5), || {
        let mut s = raw_get(&agent, stream);
        let mut seen = Vec::new();
        read_until(&mut s, &mut seen, b"\r\n\r\n");
        String::from_utf8_lossy(&seen)
            .starts_with("HTTP/1.1 200")
            .then_some(s)
    });
    assert!(ok.is_some(), "a stream is accepted again after one closed");
}
