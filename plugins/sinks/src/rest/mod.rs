//! The `rest` sink: vAdvisor's `/api/v1.0/stats` API over an in-memory history.
//! `GET /api/v1.0/stats/` returns `{uuid: [samples, oldest first]}`;
//! `GET /api/v1.0/stats/<uuid>` one domain; `?live=true` one fresh collection shared by
//! concurrent callers; `/api/v1.0/stats` redirects to the slash form keeping the query.
//! Also `/api/v1.0/specs`, from the `specs` collector's records ([`specs`]), and
//! `/api/v1.0/machine`, the host's facts ([`machine`]). Stored samples are kept as JSON
//! fragments ([`sample`], [`store`]) and responses stream from them ([`body`]).

mod body;
#[cfg(test)]
mod legacy;
pub mod machine;
mod sample;
pub mod specs;
mod store;
#[cfg(test)]
mod store_tests;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use vadvisor_api::axum::body::Body;
use vadvisor_api::axum::extract::{Path, RawQuery};
use vadvisor_api::axum::http::{header, StatusCode};
use vadvisor_api::axum::response::{IntoResponse, Redirect, Response};
use vadvisor_api::axum::routing::get;
use vadvisor_api::{async_trait, LiveCollect, OptionError, Record, Registry, Sink, SinkInput};

use crate::http_util::{json_error, parse_bool, parse_query};
pub use body::Snapshot;
pub use store::{HistoryStore, StoreFootprint};

/// Options of the `rest` sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestOptions {
    /// How long samples are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// At most this many samples per domain.
    pub max_samples: usize,
}

impl Default for RestOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(60),
            max_samples: 60,
        }
    }
}

pub fn register(registry: &mut Registry) {
    registry.add_sink_checked(
        "rest",
        "vAdvisor's REST API: /api/v1.0/stats with per-domain history",
        |o: &RestOptions| {
            if o.retention.is_zero() {
                return Err(OptionError::at(&["retention"], "must be greater than 0"));
            }
            if !(1..=100_000).contains(&o.max_samples) {
                return Err(OptionError::at(
                    &["max_samples"],
                    "must be between 1 and 100000",
                ));
            }
            Ok(())
        },
        |o: RestOptions, cx| {
            let state = Arc::new(RestState {
                store: HistoryStore::new(o.retention, o.max_samples).with_health(cx.health.clone()),
                live: cx.live.clone(),
            });
            let route = |r: Result<(), String>| r.map_err(OptionError::whole);
            let s = state.clone();
            route(cx.http.route(
                "/api/v1.0/stats/",
                get(move |q: RawQuery| stats_all(s.clone(), q)),
            ))?;
            let s = state.clone();
            route(cx.http.route(
                "/api/v1.0/stats/{uuid}",
                get(move |p: Path<String>, q: RawQuery| stats_one(s.clone(), p, q)),
            ))?;
            route(cx.http.route("/api/v1.0/stats", get(redirect_slash)))?;
            let m = Arc::new(machine::MachineCache::new(cx.hypervisor.clone()));
            route(cx.http.route(
                "/api/v1.0/machine",
                get(move || {
                    let m = m.clone();
                    async move { m.get().await }
                }),
            ))?;
            let specs = Arc::new(specs::SpecCache::default());
            route(specs::register_routes(
                cx.http,
                specs.clone(),
                cx.hypervisor.clone(),
            ))?;
            Ok(Box::new(RestSink { state, specs }))
        },
    );
}

struct RestState {
    store: HistoryStore,
    live: Arc<dyn LiveCollect>,
}

/// How long after a tick's last batch its snapshot is prepared (a tick's batches are
/// published together, microseconds apart).
const PREPARE_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// At most this many records are taken together for one ingest.
const MAX_RECORDS_TOGETHER: usize = 64;

struct RestSink {
    state: Arc<RestState>,
    specs: Arc<specs::SpecCache>,
}

#[async_trait]
impl Sink for RestSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        // While the history is read every tick, its next snapshot is prepared once the
        // tick's batches are in (PREPARE_AFTER after the last of them), and again when
        // the oldest sample expires between two ticks.
        let store = &self.state.store;
        let mut prepare_at: Option<tokio::time::Instant> = None;
        let mut expire_at: Option<tokio::time::Instant> = None;
        let mut pending = Vec::new();
        let at_or_never = |at: Option<tokio::time::Instant>| async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let expiry_instant = || {
            store.next_expiry().map(|at| {
                let wait = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                tokio::time::Instant::now() + wait + std::time::Duration::from_millis(1)
            })
        };
        loop {
            tokio::select! {
                _ = input.shutdown.cancelled() => return Ok(()),
                _ = at_or_never(prepare_at) => {
                    prepare_at = None;
                    if store.prepare() {
                        expire_at = expiry_instant();
                    }
                }
                _ = at_or_never(expire_at) => {
                    expire_at = None;
                    store.expire_now();
                    if store.prepare() {
                        expire_at = expiry_instant();
                    }
                }
                record = input.records.recv() => {
                    let Some(first) = record else { return Ok(()) };
                    // A tick's batches are published together: the records already
                    // here are taken with the first (a bounded number, so a flood never
                    // holds the history's lock for long) and ingested in one go.
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some(record) = next {
                        match record {
                            Record::Batch(b) => pending.push(b),
                            Record::Spec(s) => self.specs.ingest(&s),
                            _ => {}
                        }
                        taken += 1;
                        next = if taken < MAX_RECORDS_TOGETHER {
                            input.records.try_recv()
                        } else {
                            None
                        };
                    }
                    if !pending.is_empty() {
                        store.ingest_all(&pending);
                        pending.clear();
                        if store.wants_prepare() {
                            prepare_at = Some(tokio::time::Instant::now() + PREPARE_AFTER);
                        }
                    }
                }
            }
        }
    }
}

fn json_response(v: serde_json::Value) -> Response {
    let body = serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn render(state: &RestState, query: Option<String>, only: Option<&str>) -> Response {
    let params = match parse_query(query.as_deref(), &["live"]) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let live = match parse_bool("live", params.get("live")) {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    // Read before the history: if the first collection had delivered by then, a domain
    // missing from the history is really unknown.
    let first_collection_done = state.store.has_ingested();
    let rendered = if live {
        match state.live.collect_now().await {
            Ok(batches) => state.store.render_live(&batches, only).map(json_bytes),
            Err(e) => {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("live collection failed: {e}"),
                )
            }
        }
    } else {
        // The moment's text, written once and shared by every response of the moment.
        state.store.snapshot(only).map(|s| {
            let body = Body::from(s.body());
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        })
    };
    match rendered {
        Some(r) => r,
        None if !first_collection_done && !live => {
            // Right after start: not a false 404 for a domain that is there.
            let mut resp = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no samples for domain `{}` yet: no collection has delivered since start \
                     (the first collection is still running, or libvirt is not reachable: \
                     see /healthz); retry shortly",
                    only.unwrap_or_default()
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            resp
        }
        None => json_error(
            StatusCode::NOT_FOUND,
            format!("no samples for domain `{}`", only.unwrap_or_default()),
        ),
    }
}

async fn stats_all(state: Arc<RestState>, RawQuery(q): RawQuery) -> Response {
    render(&state, q, None).await
}

async fn stats_one(
    state: Arc<RestState>,
    Path(uuid): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    render(&state, q, Some(&uuid)).await
}

async fn redirect_slash(RawQuery(q): RawQuery) -> Response {
    let target = match q {
        Some(q) if !q.is_empty() => format!("/api/v1.0/stats/?{q}"),
        _ => "/api/v1.0/stats/".to_string(),
    };
    Redirect::permanent(&target).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::axum::body::to_bytes;
    use vadvisor_api::{Batch, DomainRef, DomainSamples, DomainState};

    struct NoLive;

    #[async_trait]
    impl LiveCollect for NoLive {
        async fn collect_now(&self) -> Result<Arc<[Arc<Batch>]>, String> {
            Err("not in this test".into())
        }
    }

    fn state() -> RestState {
        RestState {
            store: HistoryStore::new(Duration::from_secs(60), 60),
            live: Arc::new(NoLive),
        }
    }

    async fn get_one(state: &RestState, uuid: &str) -> (StatusCode, Option<String>, String) {
        let resp = render(state, None, Some(uuid)).await;
        let status = resp.status();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn before_the_first_collection_a_domain_is_503_with_retry_after_then_404_if_unknown() {
        let state = state();
        let (status, retry, body) = get_one(&state, "any").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body.contains("no collection has delivered"), "{body}");

        // The first collection delivers one domain: it is found, another one is 404.
        let known = DomainRef::new("5ad0a0b0-0000-4000-8000-000000000001", "vm1");
        let mut samples = DomainSamples::new(known.clone());
        samples.state = Some(DomainState::new(1, 1));
        let batch = Batch {
            collector: "cpu".into(),
            metrics: Vec::new().into(),
            at: std::time::SystemTime::now(),
            domains: vec![samples],
            host: Vec::new(),
        };
        state.store.ingest(&batch);
        let (status, _, body) = get_one(&state, &known.uuid).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, retry, body) = get_one(&state, "no-such-domain").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(retry, None);
    }
}
