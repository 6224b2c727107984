//! Built-in collector plugins. Each module owns one collector and exports
//! `register(&mut Registry)`; [`register_all`] registers every built-in.

pub mod cpu;
mod params;

use vadvisor_api::Registry;

/// Registers every built-in collector.
pub fn register_all(registry: &mut Registry) {
    cpu::register(registry);
}
