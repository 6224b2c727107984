//! The scrape: negotiates the format, renders the per-VM part from the sink's state (or
//! a fresh collection in live mode) and appends the self-metrics.

use std::sync::Arc;
use std::time::Instant;

use vadvisor_api::axum::body::{Body, Bytes};
use vadvisor_api::axum::http::{header, HeaderMap};
use vadvisor_api::axum::response::{IntoResponse, Response};

use super::body::Chunks;
use super::encode::{Encoder, Format};
use super::sink::Shared;

pub(super) async fn scrape(shared: Arc<Shared>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let fresh = match &shared.live {
        Some(live) => Some(live.collect_now().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "prometheus sink: live collection failed; exporting no VM data");
            Arc::from(Vec::new())
        })),
        None => None,
    };
    let collectors = shared.health.collectors();
    // A collector whose last run failed has its (older) batch withheld; in live mode
    // the fresh collection is all there is.
    let withheld: Vec<String> = match fresh {
        Some(_) => Vec::new(),
        None => collectors
            .iter()
            .filter(|(_, h)| !h.last_success)
            .map(|(id, _)| id.clone())
            .collect(),
    };
    let now = Instant::now();
    let (vm_part, batch_times) = {
        let mut state = shared.state();
        if let Some(batches) = &fresh {
            state.replace_all(batches, now);
        }
        (
            state.render(format, &withheld, now),
            state.batch_times(&withheld),
        )
    };

    let libvirt = shared.hypervisor.status();
    let mut tail = String::with_capacity(8 * 1024);
    let mut enc = Encoder::new(&mut tail, format);
    super::selfmetrics::render_agent(&shared.health, &libvirt, &batch_times, &mut enc);
    shared.process(now).render(&mut enc);
    enc.finish();

    let body = Body::new(Chunks::new([vm_part, Bytes::from(tail)]));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
