//! Built-in collector plugins. Each module owns one collector and exports
//! `register(&mut Registry)`; [`register_all`] registers every built-in.

pub mod block;
pub mod cpu;
mod devices;
pub mod memory;
pub mod net;
mod params;

use vadvisor_api::Registry;

/// Registers every built-in collector.
pub fn register_all(registry: &mut Registry) {
    block::register(registry);
    cpu::register(registry);
    memory::register(registry);
    net::register(registry);
}
