//! Built-in collector plugins. Each module owns one collector and exports
//! `register(&mut Registry)`; [`register_all`] registers every built-in.

pub mod block;
pub mod cpu;
mod devices;
pub mod dirtyrate;
pub mod events;
pub mod host;
pub mod jobs;
pub mod memory;
pub mod net;
mod params;
pub mod specs;

use vadvisor_api::Registry;

/// Registers every built-in collector.
pub fn register_all(registry: &mut Registry) {
    block::register(registry);
    cpu::register(registry);
    dirtyrate::register(registry);
    events::register(registry);
    host::register(registry);
    jobs::register(registry);
    memory::register(registry);
    net::register(registry);
    specs::register(registry);
}
