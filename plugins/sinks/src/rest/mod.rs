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
pub use body::{JsonBody, Snapshot, CHUNK};
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

struct RestSink {
    state: Arc<RestState>,
    specs: Arc<specs::SpecCache>,
}

#[async_trait]
impl Sink for RestSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        loop {
            tokio::select! {
                _ = input.shutdown.cancelled() => return Ok(()),
                record = input.records.recv() => match record {
                    Some(Record::Batch(b)) => self.state.store.ingest(&b),
                    Some(Record::Spec(s)) => self.specs.ingest(&s),
                    Some(_) => {}
                    None => return Ok(()),
                },
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
        // Streamed from the stored fragments: no copy of the whole body is made.
        state.store.snapshot(only).map(|s| {
            let body = Body::new(JsonBody::new(s));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        })
    };
    match rendered {
        Some(r) => r,
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
