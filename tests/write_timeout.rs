//! A client that stops reading is disconnected: it pipelines many requests and never
//! reads, the agent's writes stall on the full socket, and after `http.write_timeout`
//! the agent closes the connection (instead of holding it until it exits).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{wait_for, Agent};

const CONFIG: &str =
    "libvirt:\n  uri: test:///default\nhttp:\n  listen: {listen}\n  write_timeout: 1s\n\
                      collectors:\n  cpu: {}\nsinks:\n  rest: {}\n";

#[test]
fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let agent = Agent::start(CONFIG);
    let one = wait_for(Duration::from_secs(10), || {
        let r = agent.get("/api/v1.0/stats/").ok()?;
        let body = r.bytes().ok()?;
        (body.len() > 1000).then_some(body.len())
    })
    .expect("some history");
    let addr = agent.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let request = format!("GET /api/v1.0/stats/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    // Enough responses to fill every buffer between the agent and this socket (32 MiB),
    // sent from a thread: once the agent stops reading, this write blocks too.
    let requests = (32 << 20) / one + 1;
    let mut writer = stream.try_clone().expect("clone");
    let payload = request.repeat(requests);
    std::thread::spawn(move || {
        let _ = writer.write_all(payload.as_bytes());
    });
    // Do not read for a while: the agent's writes stall.
    std::thread::sleep(Duration::from_secs(4));
    // Now read: what was buffered arrives, then the connection must end (the agent closed
    // it), well before all responses could have been sent.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("the connection was not closed: {e} after {total} bytes"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still reading after 30 s: {total} bytes"
        );
    };
    assert!(ended);
    assert!(
        total < one * requests / 2,
        "received {total} bytes: the agent kept writing"
    );
    // The agent is fine.
    assert!(agent
        .get("/healthz")
        .map(|r| r.status().is_success())
        .unwrap_or(false));
}
