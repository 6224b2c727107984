//! The `events` sink: vAdvisor's `GET /api/v1.0/events` over a persistent history.
//!
//! The sink's loop stores every `Record::Event` in SQLite ([`db`]; row ids become the
//! events' ids), then hands it with its id to the stream clients ([`hub`]), so live
//! Server-Sent Events carry the same ids as the history. A periodic purge enforces
//! `retention`. Requests: [`query`] parses the parameters, [`history`] answers from the
//! database, [`stream`] streams (NDJSON or SSE). [`names`] maps libvirt codes to
//! vAdvisor's `event_type`/`reason` strings for every sink.

pub mod db;
pub mod history;
pub mod hub;
pub mod names;
pub mod query;
pub mod render;
pub mod stream;
pub mod timeparse;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use serde::Deserialize;
use vadvisor_api::axum::extract::RawQuery;
use vadvisor_api::axum::http::{HeaderMap, StatusCode};
use vadvisor_api::axum::response::Response;
use vadvisor_api::axum::routing::get;
use vadvisor_api::{
    async_trait, HttpRoutes, LifecycleEvent, OptionError, Record, Registry, Sink, SinkInput,
};

use crate::http_util::{json_error, parse_query};
use db::{micros, EventDb};
use hub::{Hub, LiveEvent};
use stream::{Format, StreamSpec};

pub use query::normalize_uuid;

/// The endpoint (vAdvisor's: no trailing slash).
pub const PATH: &str = "/api/v1.0/events";
/// Events stored in one transaction at most.
const WRITE_BATCH: usize = 256;

/// Options of the `events` sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSinkOptions {
    /// SQLite database file (created with its directory); `:memory:` keeps nothing
    /// across restarts.
    pub path: String,
    /// How long events are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Keep-alive interval of idle streams.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Events queued per stream client; a client that falls this far behind is
    /// disconnected.
    pub client_buffer: usize,
}

impl Default for EventsSinkOptions {
    fn default() -> Self {
        Self {
            path: "/var/lib/vadvisor/events.db".into(),
            retention: Duration::from_secs(7 * 24 * 3600),
            heartbeat: Duration::from_secs(15),
            client_buffer: 256,
        }
    }
}

/// What the handlers and the loop share.
pub struct EventsState {
    pub db: Arc<EventDb>,
    pub hub: Arc<Hub>,
    pub options: EventsSinkOptions,
}

pub fn register(registry: &mut Registry) {
    registry.add_sink(
        "events",
        "vAdvisor's /api/v1.0/events: lifecycle event history (SQLite) and live streams (NDJSON or SSE)",
        |o: EventsSinkOptions, cx| {
            let state = Arc::new(build(o)?);
            add_routes(cx.http, &state).map_err(OptionError::whole)?;
            Ok(Box::new(EventsSink { state }))
        },
    );
}

/// Serves [`PATH`] from `state`.
pub fn add_routes(http: &mut HttpRoutes, state: &Arc<EventsState>) -> Result<(), String> {
    let s = state.clone();
    http.route(
        PATH,
        get(move |headers: HeaderMap, q: RawQuery| handle(s.clone(), headers, q)),
    )
}

/// Checks the options and opens the database.
pub fn build(o: EventsSinkOptions) -> Result<EventsState, OptionError> {
    if o.retention.is_zero() {
        return Err(OptionError::at(&["retention"], "must be greater than 0"));
    }
    if o.heartbeat < Duration::from_millis(100) {
        return Err(OptionError::at(&["heartbeat"], "must be at least 100ms"));
    }
    if o.client_buffer == 0 {
        return Err(OptionError::at(&["client_buffer"], "must be at least 1"));
    }
    if o.path.trim().is_empty() {
        return Err(OptionError::at(
            &["path"],
            "must not be empty (use `:memory:` for no file)",
        ));
    }
    let db = EventDb::open(&o.path)
        .map_err(|e| OptionError::at(&["path"], format!("cannot use the event database: {e}")))?;
    Ok(EventsState {
        db: Arc::new(db),
        hub: Hub::new(),
        options: o,
    })
}

async fn handle(state: Arc<EventsState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let params = match parse_query(raw.as_deref(), query::ALLOWED) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let query = match query::parse(&params, micros(SystemTime::now())) {
        Ok(q) => q,
        Err(resp) => return *resp,
    };
    if !query.stream {
        return history::respond(state.db.clone(), query).await;
    }
    let format = if stream::wants_sse(headers.get("accept")) {
        Format::Sse
    } else {
        Format::Ndjson
    };
    let replay_after = match (format, last_event_id(&headers)) {
        (Format::Sse, Ok(id)) => id,
        (Format::Sse, Err(())) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid `Last-Event-ID` header: expected an event id (a non-negative integer)",
            )
        }
        (Format::Ndjson, _) => None,
    };
    let spec = StreamSpec {
        format,
        filter: query.filter,
        heartbeat: state.options.heartbeat,
        client_buffer: state.options.client_buffer,
        replay_after,
    };
    stream::respond(&state.hub, state.db.clone(), spec)
}

/// The SSE `Last-Event-ID` header: absent, an id, or invalid.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ()> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    id.filter(|n| *n >= 0).map(Some).ok_or(())
}

pub struct EventsSink {
    state: Arc<EventsState>,
}

impl EventsSink {
    pub fn new(state: Arc<EventsState>) -> Self {
        Self { state }
    }
}

/// Logs a failing database once per change between working and failing.
#[derive(Default)]
struct DbHealth {
    failing: bool,
}

impl DbHealth {
    fn report(&mut self, what: &str, result: &Result<impl Sized, String>) {
        match result {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!("the event database works again");
            }
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "cannot {what} the event database; live streams go on without ids");
            }
            _ => {}
        }
    }
}

impl EventsSink {
    async fn store(&self, events: Vec<Arc<LifecycleEvent>>, health: &mut DbHealth) {
        let db = self.state.db.clone();
        let batch = events.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let refs: Vec<&LifecycleEvent> = batch.iter().map(|e| &**e).collect();
            db.insert(&refs)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        health.report("write to", &stored);
        let ids = stored.ok();
        for (i, event) in events.into_iter().enumerate() {
            let id = ids.as_ref().and_then(|ids| ids.get(i).copied());
            self.state.hub.publish(&Arc::new(LiveEvent { id, event }));
        }
    }

    async fn purge(&self, health: &mut DbHealth) {
        let db = self.state.db.clone();
        let cutoff = micros(SystemTime::now())
            - i64::try_from(self.state.options.retention.as_micros()).unwrap_or(i64::MAX);
        let result = tokio::task::spawn_blocking(move || db.purge_before(cutoff))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Ok(n) = result {
            if n > 0 {
                tracing::debug!(purged = n, "old lifecycle events purged");
            }
        }
        health.report("purge", &result);
    }
}

/// How often the retention purge runs.
fn purge_period(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

#[async_trait]
impl Sink for EventsSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        let mut health = DbHealth::default();
        let mut purge = tokio::time::interval(purge_period(self.state.options.retention));
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let record = tokio::select! {
                _ = input.shutdown.cancelled() => break Ok(()),
                _ = purge.tick() => {
                    self.purge(&mut health).await;
                    continue;
                }
                r = input.records.recv() => r,
            };
            let first = match record {
                Some(Record::Event(e)) => e,
                Some(_) => continue,
                None => break Ok(()),
            };
            // Take whatever else is already waiting, to store it in one transaction.
            let mut batch = vec![first];
            while batch.len() < WRITE_BATCH {
                match input.records.recv().now_or_never() {
                    Some(Some(Record::Event(e))) => batch.push(e),
                    Some(Some(_)) => {}
                    _ => break,
                }
            }
            self.store(batch, &mut health).await;
        };
        self.state.hub.close();
        result
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
