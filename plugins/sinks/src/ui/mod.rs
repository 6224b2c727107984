//! The `ui` sink: a built-in web UI on the shared HTTP server — a host overview at `/`,
//! a page per VM (`/ui/vm?id=<uuid>`) and a live events page (`/ui/events`). The pages
//! read the agent's own JSON APIs (`/api/v1.0/stats/`, `/api/v1.0/events`,
//! `/api/v1.0/specs/`, `/healthz`); every file they need is compiled into the binary
//! ([`assets`]), so the UI works without internet access. [`host`] serves the few host
//! facts the pages need (CPU count for "% of host").

pub mod assets;
pub mod host;

use serde::Deserialize;
use vadvisor_api::axum::extract::Path;
use vadvisor_api::axum::http::HeaderMap;
use vadvisor_api::axum::routing::get;
use vadvisor_api::{async_trait, OptionError, Registry, Sink, SinkInput};

/// Options of the `ui` sink (none besides `enabled`, which every sink takes).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiOptions {}

/// Page routes and the file each serves.
pub const PAGES: &[(&str, &str)] = &[
    ("/", "index.html"),
    ("/ui/", "index.html"),
    ("/ui/vm", "vm.html"),
    ("/ui/events", "events.html"),
];

pub fn register(registry: &mut Registry) {
    registry.add_sink(
        "ui",
        "Built-in web UI: host overview at /, per-VM live charts, events",
        |_: UiOptions, cx| {
            let route = |r: Result<(), String>| r.map_err(OptionError::whole);
            for (path, file) in PAGES {
                let file: &'static str = file;
                route(cx.http.route(
                    path,
                    get(move |h: HeaderMap| async move { assets::serve(file, &h) }),
                ))?;
            }
            route(cx.http.route(
                "/ui/assets/{*file}",
                get(|p: Path<String>, h: HeaderMap| async move { assets::serve(&p.0, &h) }),
            ))?;
            route(cx.http.route("/ui/api/host", get(host::handler)))?;
            Ok(Box::new(UiSink))
        },
    );
}

/// The UI keeps no state of its own and reads no records: it unsubscribes from the bus
/// at once (so publishing never wakes it) and waits for shutdown.
struct UiSink;

#[async_trait]
impl Sink for UiSink {
    async fn run(self: Box<Self>, input: SinkInput) -> Result<(), String> {
        let SinkInput {
            records, shutdown, ..
        } = input;
        drop(records);
        shutdown.cancelled().await;
        Ok(())
    }
}
