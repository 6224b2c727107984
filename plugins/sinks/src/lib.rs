//! Built-in sink plugins. Each module owns one sink and exports `register(&mut Registry)`;
//! [`register_all`] registers every built-in.

pub mod events;
pub mod http_util;
pub mod json_render;
pub mod json_write;
pub mod prometheus;
pub mod remote_write;
pub mod rest;
pub mod statsd;
pub mod timefmt;
pub mod ui;

use vadvisor_api::Registry;

/// Registers every built-in sink.
pub fn register_all(registry: &mut Registry) {
    rest::register(registry);
    events::register(registry);
    prometheus::register(registry);
    statsd::register(registry);
    remote_write::register(registry);
    ui::register(registry);
}
