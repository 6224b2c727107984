//! The `prometheus` sink: `GET <path>` (default `/metrics`) on the shared HTTP server,
//! OpenMetrics 1.0.0 when the scraper asks for it, else text format 0.0.4. A scrape
//! renders from what the loop kept and never waits on libvirt, except with `live: true`
//! (one fresh collection per scrape, shared by concurrent scrapes: vAdvisor's
//! behaviour). What a scrape contains is listed in `docs/metrics.md`.
//!
//! Layout: [`config`] options and validation; [`sink`] the loop (latest batches,
//! lifecycle counts) and the state it shares with [`handler`], the scrape; [`state`]
//! the snapshot, `vm_up` memory and the cached per-VM part; [`families`] collector
//! families, aliases and de-duplication; [`emit`] the output contract shared with the
//! `remote_write` sink; [`encode`] the two formats; [`events`]
//! `vm_lifecycle_events_total`; [`selfmetrics`] `vadvisor_*`; [`process`] `process_*`;
//! [`reference`] the list of those own families for `docs/metrics.md`; `body` the
//! zero-copy response body.

mod body;
pub mod config;
pub mod emit;
pub mod encode;
pub mod events;
pub mod families;
mod handler;
pub mod metadata;
pub mod process;
pub mod reference;
pub mod selfmetrics;
mod sink;
pub mod state;

use std::sync::{Arc, Mutex};

use vadvisor_api::axum::http::HeaderMap;
use vadvisor_api::axum::routing::get;
use vadvisor_api::{OptionError, Registry};

pub use config::PrometheusOptions;
use families::LabelOptions;
use sink::{PrometheusSink, Shared};
use state::{State, StateOptions};

pub fn register(registry: &mut Registry) {
    registry.add_sink_checked(
        "prometheus",
        "Prometheus exposition on /metrics (OpenMetrics or text 0.0.4), with vAdvisor's family names",
        PrometheusOptions::validate,
        |o: PrometheusOptions, cx| {
            let metadata = o.metadata_labels.compile()?;
            let shared = Arc::new(Shared {
                state: Mutex::new(State::new(StateOptions {
                    labels: LabelOptions { name_label: o.name_label, aliases: o.vadvisor_names },
                    grace: o.vm_up_grace,
                })),
                process: Mutex::new(None),
                live: o.live.then(|| cx.live.clone()),
                health: cx.health.clone(),
                hypervisor: cx.hypervisor.clone(),
                metadata,
            });
            let s = shared.clone();
            cx.http
                .route(&o.path, get(move |headers: HeaderMap| handler::scrape(s.clone(), headers)))
                .map_err(|e| OptionError::at(&["path"], e))?;
            Ok(Box::new(PrometheusSink { shared }))
        },
    );
}

#[cfg(test)]
mod tests;
