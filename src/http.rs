//! The one HTTP server every HTTP sink shares: the sinks' routes plus the core's own
//! (`/`, `/healthz`), JSON bodies for 404, 405 and extractor rejections, and gzip when the client
//! accepts it (served by [`crate::server`]).

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::compression::CompressionLayer;
use vadvisor_api::{Health, HttpRoutes, Hypervisor};

fn json_error(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({
        "error": status.canonical_reason().unwrap_or("error"),
        "message": message,
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

/// Error responses that axum's extractors answer in plain text (e.g. a path that is not
/// valid UTF-8 after percent-decoding) get the API's JSON error body instead.
async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    json_error(status, message)
}

/// Builds the full router from the sinks' routes and `core`, the agent's own routes
/// under `/-/` (behind the same authentication).
pub fn router(
    routes: HttpRoutes,
    hv: Arc<dyn Hypervisor>,
    health: Arc<Health>,
    auth: Option<Arc<crate::auth::BasicAuth>>,
    core: Router,
) -> Router {
    let paths: Vec<String> = routes.paths().map(str::to_string).collect();
    let index = {
        let listing = paths.iter().map(|p| format!("  {p}\n")).collect::<String>();
        format!(
            "vadvisor {}\n\nEndpoints:\n  /healthz\n{listing}",
            env!("CARGO_PKG_VERSION")
        )
    };
    let mut router = routes.into_router();
    if !paths.iter().any(|p| p == "/") {
        router =
            router.route(
                "/",
                get(move || async move {
                    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], index)
                }),
            );
    }
    // No sink may claim /healthz (`HttpRoutes::route` refuses it).
    router = router.route(
        "/healthz",
        get(
            move |brief: Option<axum::Extension<crate::auth::BriefHealth>>| {
                healthz(hv.clone(), health.clone(), brief.is_some())
            },
        ),
    );
    let router = router
        .merge(core)
        .fallback(|uri: axum::http::Uri| async move {
            json_error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not allowed here; use GET"),
            )
        })
        .layer(axum::middleware::map_response(json_rejections))
        .layer(CompressionLayer::new().gzip(true));
    match auth {
        Some(auth) => router.layer(axum::middleware::from_fn(move |req, next| {
            crate::auth::require(auth.clone(), req, next)
        })),
        None => router,
    }
}

/// The agent's health: up/down only for a client that did not authenticate (when
/// basic auth is on), else with the inventory (libvirt, collectors, domains).
async fn healthz(hv: Arc<dyn Hypervisor>, health: Arc<Health>, brief: bool) -> Response {
    if brief {
        return Json(serde_json::json!({"status": "ok"})).into_response();
    }
    let status = hv.status();
    let collectors: serde_json::Map<String, serde_json::Value> = health
        .collectors()
        .into_iter()
        .map(|(id, h)| {
            (id, serde_json::json!({"last_success": h.last_success, "runs": h.runs, "errors": h.errors,
                "last_duration_seconds": h.last_duration.as_secs_f64(), "last_tick_libvirt_calls": h.last_tick_libvirt_calls}))
        })
        .collect();
    let now = std::time::SystemTime::now();
    let domains: serde_json::Map<String, serde_json::Value> = health
        .domains()
        .into_iter()
        .map(|(uuid, d)| {
            let age = |t: Option<std::time::SystemTime>| {
                t.and_then(|t| now.duration_since(t).ok())
                    .map(|a| a.as_secs_f64())
            };
            let complete_age = age(d.last_complete);
            // Stale: no complete sample for 10 s (e.g. its QEMU does not answer).
            let stale = complete_age.is_none_or(|a| a > 10.0);
            (
                uuid,
                serde_json::json!({"name": d.name, "collection_errors": d.errors,
                "last_sample_age_seconds": age(d.last_sample),
                "last_complete_sample_age_seconds": complete_age, "stale": stale}),
            )
        })
        .collect();
    // Per sink: records lost to lag, and what the sink reports about itself (e.g.
    // remote-write delivery; never secrets).
    let mut sinks: serde_json::Map<String, serde_json::Value> = health
        .sinks()
        .into_iter()
        .map(|(id, dropped)| (id, serde_json::json!({"dropped_records": dropped})))
        .collect();
    for (id, report) in health.reports() {
        let entry = sinks.entry(id).or_insert_with(|| serde_json::json!({}));
        if let (Some(obj), serde_json::Value::Object(extra)) =
            (entry.as_object_mut(), report.health())
        {
            obj.extend(extra);
        }
    }
    // The agent is healthy while it runs; libvirt's state is reported, not judged, so a
    // libvirtd restart does not get the container killed.
    Json(serde_json::json!({
        "status": "ok",
        "libvirt": {"connected": status.connected, "reconnects": status.reconnects, "calls": status.calls,
                    "native_calls": status.native_calls, "last_error": status.last_error},
        "collectors": collectors,
        "domains": domains,
        "sinks": sinks,
    }))
    .into_response()
}
