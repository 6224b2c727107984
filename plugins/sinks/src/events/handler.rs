//! `GET /api/v1.0/events`: parameters, then the history answer or a live stream (at
//! most `max_clients` streams at once; beyond, 503 with `Retry-After`).

use std::sync::Arc;
use std::time::SystemTime;

use vadvisor_api::axum::extract::RawQuery;
use vadvisor_api::axum::http::{HeaderMap, StatusCode};
use vadvisor_api::axum::response::Response;
use vadvisor_api::axum::routing::get;
use vadvisor_api::HttpRoutes;

use super::db::micros;
use super::stream::{self, Format, StreamSpec};
use super::{history, query, EventsState};
use crate::http_util::{json_error, parse_query};

/// The endpoint (vAdvisor's: no trailing slash).
pub const PATH: &str = "/api/v1.0/events";

/// Serves [`PATH`] from `state`.
pub fn add_routes(http: &mut HttpRoutes, state: &Arc<EventsState>) -> Result<(), String> {
    let s = state.clone();
    http.route(
        PATH,
        get(move |headers: HeaderMap, q: RawQuery| handle(s.clone(), headers, q)),
    )
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
        if !state.db.is_open() {
            let mut resp = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event database is not open (yet)",
            );
            resp.headers_mut().insert(
                "retry-after",
                vadvisor_api::axum::http::HeaderValue::from_static("1"),
            );
            return resp;
        }
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
    if state.hub.clients() >= state.options.max_clients {
        return too_many_streams(&state);
    }
    let spec = StreamSpec {
        format,
        filter: query.filter,
        heartbeat: state.options.heartbeat,
        client_buffer: state.options.client_buffer,
        replay_after,
    };
    stream::respond(&state.hub, state.db.clone(), spec)
}

/// 503 with `Retry-After` when `max_clients` streams are open; counted, and logged
/// once per minute at most.
fn too_many_streams(state: &EventsState) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    if let Some(h) = &state.health {
        h.record_limit_hit("event_streams", 1);
    }
    let now = micros(SystemTime::now()) as u64 / 1_000_000;
    let last = LAST_LOG.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            max_clients = state.options.max_clients,
            "event stream limit reached: refusing new streams with 503"
        );
    }
    let mut response = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "too many event streams open (max_clients: {}); retry later",
            state.options.max_clients
        ),
    );
    response.headers_mut().insert(
        vadvisor_api::axum::http::header::RETRY_AFTER,
        vadvisor_api::axum::http::HeaderValue::from_static("5"),
    );
    response
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
