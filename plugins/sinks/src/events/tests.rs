//! Tests of the `events` sink through its HTTP route: options, history semantics
//! (type filter before the limit, oldest first, inclusive bounds, tz-aware times,
//! domain filter, vAdvisor's "no filter → nothing"), 400s, the sink loop storing what
//! the bus carries, persistence across a restart, and the retention purge.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use tower::ServiceExt;
use vadvisor_api::axum::body::Body;
use vadvisor_api::axum::http::{header, Request, StatusCode};
use vadvisor_api::axum::Router;
use vadvisor_api::{
    Bus, CancellationToken, DomainRef, FakeHypervisor, Health, HttpRoutes, LifecycleEvent,
    LiveCollect, PluginOptions, Record, Registry, SinkBuildContext, SinkHealth, SinkInput,
};

use super::sink::{purge_period, DbHealth};
use super::*;
use vadvisor_api::Sink;

pub(super) const U1: &str = "5ad0a0b0-0000-4000-8000-000000000001";
pub(super) const U2: &str = "5ad0a0b0-0000-4000-8000-000000000002";

pub(super) fn ev(secs: u64, uuid: &str, name: &str, event: u32, detail: u32) -> LifecycleEvent {
    LifecycleEvent {
        at: UNIX_EPOCH + Duration::from_secs(secs),
        domain: DomainRef::new(uuid, name),
        event,
        detail,
        reconciled: false,
    }
}

/// Options with a retention long enough for events of 2016 (the purge runs at start).
pub(super) fn options(path: &str) -> EventsSinkOptions {
    EventsSinkOptions {
        path: path.to_string(),
        retention: Duration::from_secs(100 * 365 * 86_400),
        ..EventsSinkOptions::default()
    }
}

/// A running sink with its router and bus.
pub(super) struct Harness {
    pub router: Router,
    pub bus: Bus,
    pub state: Arc<EventsState>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Harness {
    pub fn start(o: EventsSinkOptions) -> Harness {
        let state = Arc::new(build(o).expect("valid options"));
        let mut http = HttpRoutes::new();
        add_routes(&mut http, &state).unwrap();
        let bus = Bus::new(4096);
        let shutdown = CancellationToken::new();
        let input = SinkInput {
            id: "events".into(),
            records: bus.subscribe(Arc::new(SinkHealth::default())),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(Box::new(EventsSink::new(state.clone())).run(input));
        Harness {
            router: http.into_router(),
            bus,
            state,
            shutdown,
            task,
        }
    }

    pub fn publish(&self, e: LifecycleEvent) {
        self.bus.publish(Record::Event(Arc::new(e)));
    }

    /// Waits until the database holds `n` events.
    pub async fn stored(&self, n: i64) {
        for _ in 0..500 {
            if self.state.db.count().unwrap() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the sink did not store {n} events");
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, String, String) {
        let uri = uri.replace(' ', "%20");
        let resp = self
            .router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    /// `(event_type, reason, domain_name)` of each NDJSON line of a 200 answer.
    pub async fn lines(&self, uri: &str) -> Vec<(String, String, String)> {
        let (status, ct, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(ct, "application/json");
        body.lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                (s("event_type"), s("reason"), s("domain_name"))
            })
            .collect()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        assert!(matches!(self.task.await, Ok(Ok(()))));
    }
}

fn t(e: &str, r: &str, d: &str) -> (String, String, String) {
    (e.to_string(), r.to_string(), d.to_string())
}

/// Six events over a minute of 2016-06-20 (12:00:10 … 12:01:00 UTC).
async fn six() -> Harness {
    let h = Harness::start(options(":memory:"));
    let base = 1_466_424_000;
    for e in [
        ev(base + 10, U1, "one", 0, 0),
        ev(base + 20, U1, "one", 2, 0),
        ev(base + 30, U2, "two", 2, 0),
        ev(base + 40, U1, "one", 3, 6),
        ev(base + 50, U2, "two", 5, 1),
        ev(base + 60, U1, "one", 6, 1),
    ] {
        h.publish(e);
    }
    h.stored(6).await;
    h
}

#[tokio::test]
async fn no_type_filter_returns_nothing_like_vadvisor() {
    let h = six().await;
    let (status, ct, body) = h.get("/api/v1.0/events").await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (StatusCode::OK, "application/json", "")
    );
    h.stop().await;
}

#[tokio::test]
async fn all_events_oldest_first_with_vadvisor_fields() {
    let h = six().await;
    let (_, _, body) = h.get("/api/v1.0/events?all_events=true").await;
    let first: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"domain_name": "one", "domain_id": U1, "timestamp": "2016-06-20T12:00:10Z",
                           "event_type": "Defined", "reason": "Added"})
    );
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true").await,
        vec![
            t("Defined", "Added", "one"),
            t("Started", "Booted", "one"),
            t("Started", "Booted", "two"),
            t("Suspended", "API error", "one"),
            t("Stopped", "Destroyed", "two"),
            t("Shutdown", "On guest request", "one"),
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn type_filter_applies_before_the_limit() {
    let h = six().await;
    // vAdvisor answered nothing here: its limit counted the two oldest (not Stopped) events.
    assert_eq!(
        h.lines("/api/v1.0/events?stopped_events=true&max_events=2")
            .await,
        vec![t("Stopped", "Destroyed", "two")]
    );
    assert_eq!(
        h.lines("/api/v1.0/events?started_events=true&shutdown_events=true&max_events=2")
            .await,
        vec![t("Started", "Booted", "one"), t("Started", "Booted", "two")]
    );
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true&max_events=0")
            .await
            .len(),
        6
    );
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true&max_events=1")
            .await
            .len(),
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn default_limit_is_ten_oldest() {
    let h = Harness::start(options(":memory:"));
    for i in 0..25 {
        h.publish(ev(1000 + i, U1, "one", 2, 0));
    }
    h.stored(25).await;
    let (_, _, body) = h.get("/api/v1.0/events?all_events=true").await;
    let stamps: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(stamps.len(), 10);
    assert_eq!(stamps[0], "1970-01-01T00:16:40Z");
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true&max_events=0")
            .await
            .len(),
        25
    );
    h.stop().await;
}

#[tokio::test]
async fn time_bounds_are_inclusive_and_take_every_format() {
    let h = six().await;
    for (start, end) in [
        ("2016-06-20T12:00:20Z", "2016-06-20T12:00:40Z"),
        ("2016-06-20T14:00:20%2B02:00", "2016-06-20T12:00:40.000000Z"),
        ("2016-06-20 12:00:20", "2016-06-20T12:00:40"),
        ("2016-06-20T14:00:20+02:00", "2016-06-20T12:00:40"),
    ] {
        let got = h
            .lines(&format!(
                "/api/v1.0/events?all_events=true&start_time={start}&end_time={end}"
            ))
            .await;
        assert_eq!(got.len(), 3, "{start} .. {end}: {got:?}");
        assert_eq!(got[0], t("Started", "Booted", "one"));
    }
    // A date alone is midnight UTC.
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true&start_time=2016-06-21")
            .await
            .len(),
        0
    );
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true&end_time=2016-06-21")
            .await
            .len(),
        6
    );
    // start after end: nothing.
    assert!(h
        .lines("/api/v1.0/events?all_events=true&start_time=2016-06-21&end_time=2016-06-20")
        .await
        .is_empty());
    h.stop().await;
}

#[tokio::test]
async fn domain_filter_by_uuid_or_name() {
    let h = six().await;
    let two = vec![
        t("Started", "Booted", "two"),
        t("Stopped", "Destroyed", "two"),
    ];
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true&domain=two").await,
        two
    );
    assert_eq!(
        h.lines(&format!(
            "/api/v1.0/events?all_events=true&domain={}",
            U2.to_uppercase()
        ))
        .await,
        two
    );
    assert!(h
        .lines("/api/v1.0/events?all_events=true&domain=three")
        .await
        .is_empty());
    h.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400_json_naming_the_parameter() {
    let h = six().await;
    for (query, names) in [
        ("all_events=true&max_events=abc", "max_events"),
        ("all_events=true&max_events=-1", "max_events"),
        ("all_events=true&start_time=yesterday", "start_time"),
        ("all_events=true&end_time=2016-13-01", "end_time"),
        ("stream=maybe", "stream"),
        ("started_events=yes", "started_events"),
        ("all_events=true&domain=", "domain"),
        ("all_events=true&rebooted_events=true", "valid parameters"),
    ] {
        let (status, ct, body) = h.get(&format!("/api/v1.0/events?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains(names),
            "{query}: {body}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn unknown_codes_are_stored_and_reported_as_unknown() {
    let h = Harness::start(options(":memory:"));
    let mut e = ev(5, U1, "one", 42, 9);
    e.reconciled = true;
    h.publish(e);
    h.stored(1).await;
    let (_, _, body) = h.get("/api/v1.0/events?all_events=true").await;
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(
        (v["event_type"].as_str(), v["reason"].as_str()),
        (Some("Unknown"), Some("Unknown"))
    );
    assert_eq!(v["reconciled"], serde_json::json!(true));
    // A type filter does not let unknown types through.
    assert!(h
        .lines("/api/v1.0/events?started_events=true")
        .await
        .is_empty());
    h.stop().await;
}

#[tokio::test]
async fn history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db/events.db");
    let path = path.to_str().unwrap();
    let h = Harness::start(options(path));
    h.publish(ev(10, U1, "one", 2, 0));
    h.publish(ev(20, U1, "one", 5, 0));
    h.stored(2).await;
    h.stop().await;
    let h = Harness::start(options(path));
    assert_eq!(
        h.lines("/api/v1.0/events?all_events=true").await,
        vec![
            t("Started", "Booted", "one"),
            t("Stopped", "Shutdown", "one")
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn purge_enforces_retention() {
    let mut o = options(":memory:");
    o.retention = Duration::from_secs(3600);
    let state = Arc::new(build(o).unwrap());
    let sink = EventsSink::new(state.clone());
    let now = SystemTime::now();
    let mut old = ev(0, U1, "one", 2, 0);
    old.at = now - Duration::from_secs(7200);
    let mut recent = ev(0, U1, "one", 5, 0);
    recent.at = now - Duration::from_secs(60);
    sink.store(
        vec![Arc::new(old), Arc::new(recent)],
        &mut DbHealth::default(),
    )
    .await;
    assert_eq!(state.db.count().unwrap(), 2);
    sink.purge(&mut DbHealth::default()).await;
    assert_eq!(state.db.count().unwrap(), 1);
    assert_eq!(
        purge_period(Duration::from_secs(7 * 86400)),
        Duration::from_secs(600)
    );
    assert_eq!(purge_period(Duration::from_secs(2)), Duration::from_secs(1));
}

struct NoLive;

#[vadvisor_api::async_trait]
impl LiveCollect for NoLive {
    async fn collect_now(&self) -> Result<Arc<[Arc<vadvisor_api::Batch>]>, String> {
        Err("none".into())
    }
}

/// Validates, builds and starts an `events` sink as the agent does; checks that the
/// first two steps create nothing.
async fn build_via_registry(
    v: serde_json::Value,
) -> Result<HttpRoutes, Vec<vadvisor_api::OptionError>> {
    let mut registry = Registry::new();
    register(&mut registry);
    let factory = registry.sink("events").expect("registered");
    let mut http = HttpRoutes::new();
    let mut cx = SinkBuildContext {
        id: "events".into(),
        hypervisor: Arc::new(FakeHypervisor::new()),
        http: &mut http,
        live: Arc::new(NoLive),
        health: Health::new().into(),
    };
    let options = PluginOptions::new(v.clone());
    factory.validate(&options)?;
    let mut sink = factory.build(&options, &mut cx)?;
    if let Some(path) = v.get("path").and_then(|p| p.as_str()) {
        if path != ":memory:" && !path.is_empty() {
            let p = std::path::Path::new(path);
            assert!(
                !p.exists(),
                "validating and building must not create {path}"
            );
            if let Some(parent) = p.parent().filter(|d| d.file_name() == Some("sub".as_ref())) {
                assert!(!parent.exists(), "nor its directory");
            }
        }
    }
    sink.start().await.map_err(|e| vec![e])?;
    Ok(http)
}

#[tokio::test]
async fn options_are_checked_and_errors_point_at_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("sub/events.db");
    let http = build_via_registry(
        serde_json::json!({"path": ok.to_str().unwrap(), "retention": "1d",
        "heartbeat": "5s", "client_buffer": 16}),
    )
    .await
    .unwrap();
    assert_eq!(http.paths().collect::<Vec<_>>(), vec![PATH]);
    assert!(
        ok.exists(),
        "starting the sink creates the database and its directory"
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for (v, key) in [
        (
            serde_json::json!({"path": ":memory:", "retention": "0s"}),
            "retention",
        ),
        (
            serde_json::json!({"path": ":memory:", "heartbeat": "0s"}),
            "heartbeat",
        ),
        (
            serde_json::json!({"path": ":memory:", "client_buffer": 0}),
            "client_buffer",
        ),
        (serde_json::json!({"path": ""}), "path"),
        (
            serde_json::json!({"path": file.join("events.db").to_str().unwrap()}),
            "path",
        ),
        (
            serde_json::json!({"path": ":memory:", "retention": "soon"}),
            "retention",
        ),
        (
            serde_json::json!({"path": ":memory:", "max_age": "1d"}),
            "max_age",
        ),
    ] {
        let errs = build_via_registry(v.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("{v} accepted"));
        assert_eq!(errs[0].path, vec![key.to_string()], "{v}: {errs:?}");
    }
    let defaults = EventsSinkOptions::default();
    assert_eq!(defaults.path, "/var/lib/vadvisor/events.db");
    assert_eq!(
        (
            defaults.retention.as_secs(),
            defaults.heartbeat.as_secs(),
            defaults.client_buffer
        ),
        (604_800, 15, 256)
    );
}
