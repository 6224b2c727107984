//! Black-box tests of the agent against libvirt's in-process `test:///default` driver
//! (no daemon): the per-domain fallback path, the REST API's shape and errors.

mod common;

use std::time::Duration;

use common::{client, wait_for, Agent};

const CONFIG: &str = "libvirt:\n  uri: test:///default\nhttp:\n  listen: {listen}\ncollectors:\n  cpu:\n    interval: 1s\nsinks:\n  rest:\n    max_samples: 5\n";
const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

#[test]
fn stats_of_the_test_domain_in_vadvisor_shape() {
    let agent = Agent::start(CONFIG);
    let stats = wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/stats/");
        (v[TEST_UUID].as_array().map_or(0, Vec::len) >= 2).then_some(v)
    })
    .expect("two samples of the test domain within 10 s");
    let samples = stats[TEST_UUID].as_array().expect("array");
    let last = samples.last().expect("sample");
    assert_eq!(last["state"], "Running");
    assert_eq!(last["name"], "test");
    assert!(
        last["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{last}"
    );
    let cpu_time = last["cpu"]["usage"]["cpu_time"]
        .as_f64()
        .expect("cpu_time in ms");
    assert!(cpu_time > 0.0);
    assert!(last["cpu"]["usage"]["user_time"].is_number());
    assert!(last["cpu"]["usage"]["system_time"].is_number());
    let vcpus = last["cpu"]["per_cpu_usage"]
        .as_array()
        .expect("per_cpu_usage");
    assert!(!vcpus.is_empty());
    assert_eq!(vcpus[0]["index"], 0);
    assert!(vcpus[0]["vcpu_time"].is_number());
    assert!(vcpus[0]["state"].is_string());
    // oldest first
    let t0 = samples[0]["timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t1 = last["timestamp"].as_str().unwrap_or_default().to_string();
    assert!(t0 < t1, "{t0} < {t1}");

    // The history is capped at max_samples.
    std::thread::sleep(Duration::from_secs(6));
    let v = agent.get_json("/api/v1.0/stats/");
    assert_eq!(v[TEST_UUID].as_array().map(Vec::len), Some(5));

    let one = agent.get_json(&format!("/api/v1.0/stats/{TEST_UUID}"));
    assert_eq!(one.as_object().map(|o| o.len()), Some(1));
}

#[test]
fn rest_errors_redirects_and_live() {
    let agent = Agent::start(CONFIG);
    let http = client();

    // Before the first collection has delivered, a domain without samples is 503 with
    // `Retry-After` (it may exist); after it, an unknown one is 404.
    let early = http
        .get(format!("{}/api/v1.0/stats/{TEST_UUID}", agent.base))
        .send()
        .unwrap();
    assert!(
        matches!(early.status().as_u16(), 200 | 503),
        "a false 404 right after start: {}",
        early.status()
    );
    if early.status() == 503 {
        assert_eq!(early.headers()["retry-after"], "1");
    }
    wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/stats/");
        v.get(TEST_UUID).map(|_| ())
    })
    .expect("the first sample within 10 s");

    let r = http
        .get(format!(
            "{}/api/v1.0/stats/00000000-0000-0000-0000-000000000000",
            agent.base
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("00000000")),
        "{body}"
    );

    let r = http
        .get(format!("{}/api/v1.0/stats/?live=maybe", agent.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("live")),
        "{body}"
    );

    let r = http
        .get(format!("{}/api/v1.0/stats/?bogus=1", agent.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = http
        .get(format!("{}/api/v1.0/stats?live=true", agent.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/api/v1.0/stats/?live=true");

    let live = agent.get_json("/api/v1.0/stats/?live=true");
    assert_eq!(live[TEST_UUID].as_array().map(Vec::len), Some(1), "{live}");

    let r = http
        .get(format!("{}/no/such/path", agent.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<serde_json::Value>().is_ok());
    let r = http
        .post(format!("{}/api/v1.0/stats/", agent.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<serde_json::Value>().is_ok());

    // A client that does not decompress by itself, to see the encoding.
    let raw = reqwest::blocking::Client::builder()
        .no_gzip()
        .build()
        .unwrap();
    let r = raw
        .get(format!("{}/api/v1.0/stats/", agent.base))
        .header("accept-encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or("")),
        Some("gzip")
    );
}

#[test]
fn sigterm_exits_cleanly_and_quickly() {
    let mut agent = Agent::start(CONFIG);
    let (status, took) = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn keeps_running_without_libvirtd_and_says_so() {
    let agent = Agent::start(
        "libvirt:\n  uri: qemu+unix:///system?socket=/tmp/vadvisor-no-such.sock\nhttp:\n  listen: {listen}\ncollectors:\n  cpu: {}\nsinks:\n  rest: {}\n",
    );
    std::thread::sleep(Duration::from_secs(2));
    let health = agent.get_json("/healthz");
    assert_eq!(health["libvirt"]["connected"], false, "{health}");
    assert_eq!(agent.get_json("/api/v1.0/stats/"), serde_json::json!({}));
    let r = agent.get("/api/v1.0/stats/?live=true").unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not connected")),
        "{body}"
    );
    let health = agent.get_json("/healthz");
    assert_eq!(
        health["collectors"]["cpu"]["last_success"], false,
        "{health}"
    );
}
