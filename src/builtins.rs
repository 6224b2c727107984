//! Registration of the built-in plugins.

use vadvisor_api::Registry;

/// A registry holding every built-in collector and sink.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    vadvisor_collectors::register_all(&mut registry);
    vadvisor_sinks::register_all(&mut registry);
    registry
}
