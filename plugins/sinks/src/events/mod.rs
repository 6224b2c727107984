//! The `events` sink: vAdvisor's `GET /api/v1.0/events` over a persistent history.
//!
//! Layout: [`config`] the options and their validation, [`sink`] the loop (stores every
//! `Record::Event` in SQLite ([`db`], row ids become event ids), then hands it to the
//! stream clients ([`hub`]), so live streams carry the same ids as the history; a
//! periodic purge enforces `retention`), [`handler`] the HTTP endpoint ([`query`]
//! parses, [`history`] answers from the database, [`stream`] streams NDJSON or SSE).
//! Event names come from the contract crate (`vadvisor_api::event_names`).

pub mod config;
pub mod db;
pub mod handler;
pub mod history;
pub mod hub;
pub mod query;
pub mod render;
pub mod sink;
pub mod stream;
pub mod timeparse;

use std::sync::Arc;

use vadvisor_api::{OptionError, Registry};

pub use config::EventsSinkOptions;
pub use handler::{add_routes, PATH};
pub use sink::{build, EventsSink, EventsState};

pub fn register(registry: &mut Registry) {
    registry.add_sink_checked(
        "events",
        "vAdvisor's /api/v1.0/events: lifecycle event history (SQLite) and live streams (NDJSON or SSE)",
        EventsSinkOptions::validate,
        |o: EventsSinkOptions, cx| {
            // The database is opened by the sink's `start`, not here.
            let mut state = EventsState::new(o)?;
            state.health = Some(cx.health.clone());
            let state = Arc::new(state);
            add_routes(cx.http, &state).map_err(OptionError::whole)?;
            Ok(Box::new(EventsSink::new(state)))
        },
    );
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
