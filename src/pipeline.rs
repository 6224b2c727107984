//! Pipeline assembly, in two steps kept apart so that checking a config creates
//! nothing: [`validate`] asks each plugin factory to check its instance's options (pure;
//! every instance, enabled or not), [`build`] builds the enabled instances once —
//! collectors first, then the live collector over them, then the sinks. Files and
//! sockets are opened later, by [`start_sinks`] and the plugins' `run`. Every problem is
//! located in the file; all of them are reported together.

use std::sync::Arc;

use vadvisor_api::{
    CollectorBuildContext, CollectorPlugin, EventSource, Health, HealthView, HttpRoutes,
    Hypervisor, MetricDesc, Registry, Sink, SinkBuildContext,
};

use crate::config::{AgentConfig, ConfigErrors, Diagnostic, Instance};
use crate::scheduler::{LiveCollector, PolledInstance};

/// What the agent runs.
pub struct Pipeline {
    pub polled: Vec<PolledInstance>,
    pub sources: Vec<(Arc<str>, Box<dyn EventSource>)>,
    pub sinks: Vec<(Arc<str>, Box<dyn Sink>)>,
    pub routes: HttpRoutes,
    /// One fresh collection of `polled` on request (live mode of the HTTP sinks).
    pub live: Arc<LiveCollector>,
}

/// Shared runtime pieces the factories may use.
pub struct BuildEnv {
    pub hypervisor: Arc<dyn Hypervisor>,
    pub health: Arc<Health>,
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

fn fail(config: &AgentConfig, mut diags: Vec<Diagnostic>) -> ConfigErrors {
    diags.sort_by_key(|d| (d.position.line, d.position.column));
    ConfigErrors {
        file: config.file.clone(),
        diagnostics: diags,
    }
}

/// Checks the options of every instance, enabled or not, without building anything.
pub fn validate(config: &AgentConfig, registry: &Registry) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for inst in &config.collectors {
        if let Some(factory) = registry.collector(&inst.kind) {
            if let Err(errors) = factory.validate(&inst.options) {
                diags.extend(option_diagnostics(config, inst, errors));
            }
        }
    }
    for inst in &config.sinks {
        if let Some(factory) = registry.sink(&inst.kind) {
            if let Err(errors) = factory.validate(&inst.options) {
                diags.extend(option_diagnostics(config, inst, errors));
            }
        }
    }
    diags
}

/// A built collector instance.
pub enum BuiltCollector {
    Polled(PolledInstance),
    Push(Box<dyn EventSource>),
}

/// Builds one collector instance (no I/O); problems go to `diags`.
pub fn build_collector(
    config: &AgentConfig,
    registry: &Registry,
    env: &BuildEnv,
    inst: &Instance,
    diags: &mut Vec<Diagnostic>,
) -> Option<BuiltCollector> {
    let factory = registry.collector(&inst.kind)?;
    let id: Arc<str> = Arc::from(inst.id.as_str());
    let cx = CollectorBuildContext {
        id: id.clone(),
        hypervisor: env.hypervisor.clone(),
    };
    match factory.build(&inst.options, &cx) {
        Ok(CollectorPlugin::Polled(collector)) => {
            let metrics: Arc<[MetricDesc]> = Arc::from(collector.metrics());
            validate_metrics(config, inst, &metrics, diags);
            Some(BuiltCollector::Polled(PolledInstance {
                id,
                collector,
                metrics,
                interval: inst.interval,
                timeout: inst.timeout,
            }))
        }
        Ok(CollectorPlugin::Push(source)) => {
            validate_metrics(config, inst, source.metrics(), diags);
            Some(BuiltCollector::Push(source))
        }
        Err(errors) => {
            diags.extend(option_diagnostics(config, inst, errors));
            None
        }
    }
}

/// Builds one sink instance with its own routes (no I/O); problems go to `diags`.
pub fn build_sink(
    config: &AgentConfig,
    registry: &Registry,
    env: &BuildEnv,
    inst: &Instance,
    live: Arc<LiveCollector>,
    diags: &mut Vec<Diagnostic>,
) -> Option<(Box<dyn Sink>, HttpRoutes)> {
    let factory = registry.sink(&inst.kind)?;
    let mut routes = HttpRoutes::new();
    let mut cx = SinkBuildContext {
        id: Arc::from(inst.id.as_str()),
        hypervisor: env.hypervisor.clone(),
        http: &mut routes,
        live,
        health: HealthView::new(env.health.clone()),
    };
    match factory.build(&inst.options, &mut cx) {
        Ok(sink) => Some((sink, routes)),
        Err(errors) => {
            diags.extend(option_diagnostics(config, inst, errors));
            None
        }
    }
}

/// `diags` as the config's errors, in file order.
pub fn errors(config: &AgentConfig, diags: Vec<Diagnostic>) -> ConfigErrors {
    fail(config, diags)
}

/// Builds every enabled instance, once (no I/O). On error, every problem of every
/// instance is returned.
pub fn build(
    config: &AgentConfig,
    registry: &Registry,
    env: &BuildEnv,
) -> Result<Pipeline, ConfigErrors> {
    let mut diags = Vec::new();
    let mut polled = Vec::new();
    let mut sources = Vec::new();
    for inst in config.collectors.iter().filter(|i| i.enabled) {
        match build_collector(config, registry, env, inst, &mut diags) {
            Some(BuiltCollector::Polled(p)) => polled.push(p),
            Some(BuiltCollector::Push(s)) => sources.push((Arc::from(inst.id.as_str()), s)),
            None => {}
        }
    }

    let live = LiveCollector::new(env.hypervisor.clone(), polled.clone());
    let mut routes = HttpRoutes::new();
    let mut sinks = Vec::new();
    for inst in config.sinks.iter().filter(|i| i.enabled) {
        if let Some((sink, own)) = build_sink(config, registry, env, inst, live.clone(), &mut diags)
        {
            if let Err(e) = routes.merge(own) {
                diags.push(config.diagnostic(&inst.path, &[], e));
            }
            sinks.push((Arc::from(inst.id.as_str()), sink));
        }
    }

    if !config.sinks.iter().any(|s| s.enabled) {
        tracing::warn!("no sink is enabled: nothing will be exported");
    }
    if !diags.is_empty() {
        return Err(fail(config, diags));
    }
    Ok(Pipeline {
        polled,
        sources,
        sinks,
        routes,
        live,
    })
}

/// Runs every sink's `start` (opening its files); every failure is located at the
/// sink's options.
pub async fn start_sinks(
    config: &AgentConfig,
    pipeline: &mut Pipeline,
) -> Result<(), ConfigErrors> {
    let mut diags = Vec::new();
    for (id, sink) in &mut pipeline.sinks {
        if let Err(e) = sink.start().await {
            match config.sinks.iter().find(|i| *i.id == **id) {
                Some(inst) => diags.push(config.diagnostic(&inst.path, &e.path, e.message)),
                None => {
                    diags.push(config.diagnostic(&[], &[], format!("sink `{id}`: {}", e.message)))
                }
            }
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(fail(config, diags))
    }
}
