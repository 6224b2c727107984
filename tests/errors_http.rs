//! Every HTTP error is a clear one, with a JSON body: a path that is not valid UTF-8,
//! requests hyper rejects before routing (bad request line, URI too long, header too
//! large), repeated or unknown query parameters; and `/api/v1.0/stats/<id>` accepts the
//! same ids as `/specs/` (any UUID spelling, or the domain's name).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Agent;

const CONFIG: &str = "libvirt:\n  uri: test:///default\nhttp:\n  listen: {listen}\n\
                      collectors:\n  cpu: {}\n  specs: {}\nsinks:\n  rest: {}\n  prometheus: {}\n";
/// The test driver's domain.
const UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

/// Sends raw bytes, returns (status, content-type, body) of the answer.
fn raw(agent: &Agent, request: &[u8]) -> (u16, String, String) {
    let addr = agent.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

fn json_error(agent: &Agent, path: &str) -> (u16, serde_json::Value) {
    let r = agent.get(path).expect("request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("application/json"), "{path}: {status} {ct}");
    (status, r.json().expect("JSON body"))
}

#[test]
fn parser_and_extractor_errors_have_json_bodies() {
    let agent = Agent::start(CONFIG);
    let (status, v) = json_error(&agent, "/api/v1.0/specs/%FF%FE");
    assert_eq!(status, 400);
    assert_eq!(v["status"], 400);
    assert!(v["message"].as_str().unwrap().contains("UTF-8"), "{v}");

    let (status, ct, body) = raw(&agent, b"GARBAGE\r\n\r\n");
    assert_eq!((status, ct.as_str()), (400, "application/json"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["status"], 400);

    let long = format!(
        "GET /api/v1.0/stats/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, ct, body) = raw(&agent, long.as_bytes());
    assert_eq!((status, ct.as_str()), (414, "application/json"), "{body}");

    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    let (status, ct, body) = raw(&agent, big.as_bytes());
    assert_eq!((status, ct.as_str()), (431, "application/json"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["status"], 431);

    // The agent keeps answering normally.
    assert!(agent.get("/healthz").unwrap().status().is_success());
}

#[test]
fn query_parameter_errors_name_the_parameter_and_the_choices() {
    let agent = Agent::start(CONFIG);
    let (status, v) = json_error(&agent, "/api/v1.0/stats/?live=true&live=false");
    assert_eq!(status, 400);
    assert_eq!(
        v["message"],
        "query parameter `live` is given more than once"
    );
    let (status, v) = json_error(&agent, "/api/v1.0/specs/?x=1");
    assert_eq!(status, 400);
    assert_eq!(
        v["message"],
        "unknown query parameter `x`; this endpoint takes no query parameters"
    );
    let (status, v) = json_error(&agent, "/api/v1.0/stats/?lve=1");
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .ends_with("valid parameters: live"),
        "{v}"
    );
    // `%+1` is not a percent escape: the value is `% 1`, an invalid boolean.
    let (status, v) = json_error(&agent, "/api/v1.0/stats/?live=%+1");
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("`% 1`"), "{v}");
}

#[test]
fn stats_of_one_domain_accepts_every_id_specs_accepts() {
    let agent = Agent::start(CONFIG);
    common::wait_for(Duration::from_secs(10), || {
        agent
            .get(&format!("/api/v1.0/stats/{UUID}"))
            .ok()
            .filter(|r| r.status().is_success())
    })
    .expect("history for the test domain");
    common::wait_for(Duration::from_secs(10), || {
        agent
            .get(&format!("/api/v1.0/specs/{UUID}"))
            .ok()
            .filter(|r| r.status().is_success())
    })
    .expect("specs of the test domain");
    let upper_undashed = UUID.replace('-', "").to_uppercase();
    for id in [UUID.to_uppercase(), upper_undashed, "test".to_string()] {
        for api in ["stats", "specs"] {
            let r = agent
                .get(&format!("/api/v1.0/{api}/{id}"))
                .expect("request");
            assert_eq!(r.status(), 200, "/{api}/{id}");
            let v: serde_json::Value = r.json().expect("JSON");
            if api == "stats" {
                assert!(v.get(UUID).is_some(), "/{api}/{id}: {v}");
            }
        }
    }
}
