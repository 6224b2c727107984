//! Pipeline assembly: turns a loaded config into running parts by asking each plugin
//! factory in the [`Registry`] to build its instance from its own options. Every
//! factory error is located in the file; all of them are reported together.

use std::sync::Arc;

use vadvisor_api::{
    Bus, CollectorBuildContext, CollectorPlugin, EventSource, Health, HttpRoutes, Hypervisor,
    LiveCollect, MetricDesc, Registry, Sink, SinkBuildContext,
};

use crate::config::{AgentConfig, ConfigErrors, Diagnostic, Instance};
use crate::scheduler::PolledInstance;

/// What the agent runs.
pub struct Pipeline {
    pub polled: Vec<PolledInstance>,
    pub sources: Vec<(Arc<str>, Box<dyn EventSource>)>,
    pub sinks: Vec<(Arc<str>, Box<dyn Sink>)>,
    pub routes: HttpRoutes,
}

/// Shared runtime pieces the factories may use.
pub struct BuildEnv {
    pub hypervisor: Arc<dyn Hypervisor>,
    pub bus: Bus,
    pub health: Arc<Health>,
    pub live: Arc<dyn LiveCollect>,
}

fn option_diagnostics(
    config: &AgentConfig,
    inst: &Instance,
    errors: Vec<vadvisor_api::OptionError>,
) -> Vec<Diagnostic> {
    errors
        .into_iter()
        .map(|e| {
            let mut message = e.message;
            if message.starts_with("unknown field")
                && inst.path.first().map(String::as_str) == Some("collectors")
            {
                message.push_str(&format!(
                    " (or one of the keys every collector takes: {})",
                    crate::config::collector_core_keys().join(", ")
                ));
            }
            config.diagnostic(&inst.path, &e.path, message)
        })
        .collect()
}

fn validate_metrics(
    config: &AgentConfig,
    inst: &Instance,
    metrics: &[MetricDesc],
    diags: &mut Vec<Diagnostic>,
) {
    for m in metrics {
        if let Err(e) = m.validate() {
            diags.push(config.diagnostic(
                &inst.path,
                &[],
                format!("plugin declares an invalid metric: {e}"),
            ));
        }
    }
}

/// Builds every plugin instance. On error, every problem of every instance is returned.
pub fn build(
    config: &AgentConfig,
    registry: &Registry,
    env: &BuildEnv,
) -> Result<Pipeline, ConfigErrors> {
    build_with(config, registry, env, Vec::new())
}

/// Builds every plugin instance, adding its problems to `diags` found earlier (from
/// [`crate::config::load_partial`]); fails when there is any. Disabled instances are
/// built to validate their options, then dropped.
pub fn build_with(
    config: &AgentConfig,
    registry: &Registry,
    env: &BuildEnv,
    mut diags: Vec<Diagnostic>,
) -> Result<Pipeline, ConfigErrors> {
    let mut pipeline = Pipeline {
        polled: Vec::new(),
        sources: Vec::new(),
        sinks: Vec::new(),
        routes: HttpRoutes::new(),
    };

    for inst in &config.collectors {
        let Some(factory) = registry.collector(&inst.kind) else {
            continue;
        };
        let id: Arc<str> = Arc::from(inst.id.as_str());
        let cx = CollectorBuildContext {
            id: id.clone(),
            hypervisor: env.hypervisor.clone(),
        };
        match factory.build(&inst.options, &cx) {
            Ok(_) if !inst.enabled => {}
            Ok(CollectorPlugin::Polled(collector)) => {
                let metrics: Arc<[MetricDesc]> = Arc::from(collector.metrics());
                validate_metrics(config, inst, &metrics, &mut diags);
                pipeline.polled.push(PolledInstance {
                    id,
                    collector,
                    metrics,
                    interval: inst.interval,
                    timeout: inst.timeout,
                });
            }
            Ok(CollectorPlugin::Push(source)) => {
                validate_metrics(config, inst, source.metrics(), &mut diags);
                pipeline.sources.push((id, source));
            }
            Err(errors) => diags.extend(option_diagnostics(config, inst, errors)),
        }
    }

    for inst in &config.sinks {
        let Some(factory) = registry.sink(&inst.kind) else {
            continue;
        };
        let id: Arc<str> = Arc::from(inst.id.as_str());
        // A disabled sink must not claim HTTP paths.
        let mut scratch_routes = HttpRoutes::new();
        let routes = if inst.enabled {
            &mut pipeline.routes
        } else {
            &mut scratch_routes
        };
        let mut cx = SinkBuildContext {
            id: id.clone(),
            hypervisor: env.hypervisor.clone(),
            http: routes,
            live: env.live.clone(),
            health: env.health.clone(),
            bus: env.bus.clone(),
        };
        match factory.build(&inst.options, &mut cx) {
            Ok(_) if !inst.enabled => {}
            Ok(sink) => pipeline.sinks.push((id, sink)),
            Err(errors) => diags.extend(option_diagnostics(config, inst, errors)),
        }
    }

    if !config.sinks.iter().any(|s| s.enabled) {
        tracing::warn!("no sink is enabled: nothing will be exported");
    }
    if diags.is_empty() {
        Ok(pipeline)
    } else {
        diags.sort_by_key(|d| (d.position.line, d.position.column));
        Err(ConfigErrors {
            file: config.file.clone(),
            diagnostics: diags,
        })
    }
}
