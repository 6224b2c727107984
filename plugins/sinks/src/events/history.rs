//! History mode: the oldest `max_events` stored events with
//! `start_time ≤ timestamp ≤ end_time` that pass the type and domain filters, oldest
//! first, as NDJSON. The filters apply before the limit (vAdvisor applied the limit
//! first). The body is read from the database page by page, so `max_events=0`
//! (unlimited) never holds the whole history in memory.

use std::sync::Arc;

use vadvisor_api::axum::body::{Body, Bytes};
use vadvisor_api::axum::http::{header, HeaderValue, StatusCode};
use vadvisor_api::axum::response::{IntoResponse, Response};

use super::db::{micros, Cursor, EventDb, StoredEvent};
use super::query::EventQuery;
use super::render;
use crate::http_util::json_error;

/// Events per database round trip.
const PAGE: usize = 500;

struct Pages {
    db: Arc<EventDb>,
    query: EventQuery,
    cursor: Option<Cursor>,
    /// Events still allowed (`None`: unlimited).
    remaining: Option<u64>,
    done: bool,
}

impl Pages {
    fn next_size(&self) -> usize {
        self.remaining.map_or(PAGE, |r| r.min(PAGE as u64) as usize)
    }

    async fn fetch(&mut self) -> Result<Vec<StoredEvent>, String> {
        let size = self.next_size();
        if self.done || size == 0 {
            return Ok(Vec::new());
        }
        let db = self.db.clone();
        let (filter, start, end, cursor) = (
            self.query.filter.clone(),
            self.query.start_us,
            self.query.end_us,
            self.cursor,
        );
        let rows =
            tokio::task::spawn_blocking(move || db.history(&filter, start, end, cursor, size))
                .await
                .map_err(|e| e.to_string())??;
        self.done = rows.len() < size;
        if let Some(last) = rows.last() {
            self.cursor = Some(Cursor {
                at: micros(last.event.at),
                id: last.id,
            });
        }
        if let Some(r) = self.remaining.as_mut() {
            *r = r.saturating_sub(rows.len() as u64);
        }
        Ok(rows)
    }
}

fn chunk(rows: &[StoredEvent]) -> Bytes {
    Bytes::from(
        rows.iter()
            .map(|r| render::ndjson(&r.event))
            .collect::<String>(),
    )
}

fn ndjson_response(body: Body) -> Response {
    let mut response = body.into_response();
    // vAdvisor's content type, kept for compatibility; the body is NDJSON.
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub async fn respond(db: Arc<EventDb>, query: EventQuery) -> Response {
    // vAdvisor's rule: without a type parameter nothing is returned.
    if query.filter.types.is_empty() || query.start_us > query.end_us {
        return ndjson_response(Body::empty());
    }
    let mut pages = Pages {
        db,
        remaining: query.limit,
        query,
        cursor: None,
        done: false,
    };
    // The first page is read before answering, so a database failure is a clean 500.
    let first = match pages.fetch().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the event history");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the event history cannot be read right now",
            );
        }
    };
    let head =
        futures::stream::iter((!first.is_empty()).then(|| Ok::<_, std::io::Error>(chunk(&first))));
    let rest = futures::stream::unfold(pages, |mut pages| async move {
        match pages.fetch().await {
            Ok(rows) if rows.is_empty() => None,
            Ok(rows) => Some((Ok(chunk(&rows)), pages)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event history");
                pages.done = true;
                Some((Err(std::io::Error::other(e)), pages))
            }
        }
    });
    // Fused: body wrappers (the gzip layer) may poll again after the end.
    ndjson_response(Body::from_stream(futures::StreamExt::fuse(
        futures::StreamExt::chain(head, rest),
    )))
}
