//! The `ui` sink over real HTTP (libvirt's in-process test driver, no daemon): `/` is
//! the UI when the sink is on and the endpoint list when it is off; pages, scripts and
//! the vendored chart library are served from the binary with their types; bad options
//! are configuration errors.

mod common;

use common::{client, config_accepted, Agent};

const BASE: &str = "libvirt:\n  uri: test:///default\nhttp:\n  listen: {listen}\ncollectors:\n  cpu: {}\nsinks:\n  rest: {}\n";

fn text(agent: &Agent, path: &str) -> (u16, String, String) {
    let r = agent
        .get(path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, r.text().unwrap_or_default())
}

#[test]
fn root_is_the_ui_when_enabled() {
    let agent = Agent::start(&format!("{BASE}  ui: {{}}\n"));
    let (status, ctype, body) = text(&agent, "/");
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/html; charset=utf-8");
    assert!(
        body.contains("<title>Host overview · vadvisor</title>"),
        "{body}"
    );
    for (path, ctype, needle) in [
        (
            "/ui/vm?id=test",
            "text/html; charset=utf-8",
            "id=\"charts\"",
        ),
        ("/ui/events", "text/html; charset=utf-8", "id=\"events\""),
        (
            "/ui/assets/overview.js",
            "text/javascript; charset=utf-8",
            "overviewRow",
        ),
        (
            "/ui/assets/vendor/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
            "uPlot",
        ),
        (
            "/ui/assets/style.css",
            "text/css; charset=utf-8",
            "prefers-color-scheme: dark",
        ),
    ] {
        let (s, t, b) = text(&agent, path);
        assert_eq!((s, t.as_str()), (200, ctype), "{path}");
        assert!(b.contains(needle), "{path} lacks {needle}");
    }
    let r = agent.get("/ui/assets/style.css").expect("GET");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'self'"));
    let etag = r.headers()["etag"].clone();
    let again = client()
        .get(format!("{}/ui/assets/style.css", agent.base))
        .header("if-none-match", etag)
        .send()
        .expect("GET");
    assert_eq!(again.status().as_u16(), 304);
    let (s, t, b) = text(&agent, "/ui/assets/nope.js");
    assert_eq!((s, t.as_str()), (404, "application/json"), "{b}");
    let host = agent.get_json("/ui/api/host");
    assert!(host["host_cpus"].as_u64().is_some_and(|n| n >= 1), "{host}");
    // /healthz reports the sinks (shown in the UI's header).
    let health = agent.get_json("/healthz");
    assert_eq!(health["sinks"]["ui"]["dropped_records"], 0, "{health}");
}

#[test]
fn root_lists_the_endpoints_when_disabled() {
    let agent = Agent::start(&format!("{BASE}  ui:\n    enabled: false\n"));
    let (status, ctype, body) = text(&agent, "/");
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/plain; charset=utf-8");
    assert!(
        body.contains("Endpoints:") && body.contains("/api/v1.0/stats/"),
        "{body}"
    );
    assert!(!body.contains("/ui/"), "{body}");
    assert_eq!(text(&agent, "/ui/events").0, 404);
}

#[test]
fn unknown_ui_options_are_config_errors() {
    assert!(config_accepted(&format!("{BASE}  ui: {{}}\n")));
    assert!(!config_accepted(&format!("{BASE}  ui:\n    theme: dark\n")));
}
