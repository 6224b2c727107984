//! The [`Registry`] of plugin factories. `main` fills it with the built-ins; a
//! third-party plugin registers the same way, with a typed options struct and a build
//! function.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::collector::{Collector, EventSource};
use crate::health::Health;
use crate::hypervisor::Hypervisor;
use crate::options::{OptionError, PluginOptions};
use crate::sink::{Bus, HttpRoutes, LiveCollect, Sink};

/// A built collector: polled by the scheduler, or a push source.
pub enum CollectorPlugin {
    Polled(Arc<dyn Collector>),
    Push(Box<dyn EventSource>),
}

impl CollectorPlugin {
    pub fn polled(c: impl Collector) -> Self {
        Self::Polled(Arc::new(c))
    }

    pub fn push(s: impl EventSource) -> Self {
        Self::Push(Box::new(s))
    }
}

/// What a collector factory may use while building.
pub struct CollectorBuildContext {
    /// Instance id (`cpu`, `cpu/fast`).
    pub id: Arc<str>,
    pub hypervisor: Arc<dyn Hypervisor>,
}

/// What a sink factory may use while building.
pub struct SinkBuildContext<'a> {
    pub id: Arc<str>,
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Routes on the shared HTTP server.
    pub http: &'a mut HttpRoutes,
    /// One fresh collection on request, shared by concurrent callers.
    pub live: Arc<dyn LiveCollect>,
    pub health: Arc<Health>,
    /// To subscribe extra readers (e.g. streaming clients) to the record bus.
    pub bus: Bus,
}

pub trait CollectorFactory: Send + Sync + 'static {
    fn description(&self) -> &'static str;
    /// Builds an instance; every problem found in the options is returned.
    fn build(
        &self,
        options: &PluginOptions,
        cx: &CollectorBuildContext,
    ) -> Result<CollectorPlugin, Vec<OptionError>>;
}

pub trait SinkFactory: Send + Sync + 'static {
    fn description(&self) -> &'static str;
    /// Builds an instance; every problem found in the options is returned.
    fn build(
        &self,
        options: &PluginOptions,
        cx: &mut SinkBuildContext<'_>,
    ) -> Result<Box<dyn Sink>, Vec<OptionError>>;
}

struct TypedCollector<O, F> {
    description: &'static str,
    build: F,
    _options: std::marker::PhantomData<fn() -> O>,
}

impl<O, F> CollectorFactory for TypedCollector<O, F>
where
    O: DeserializeOwned + 'static,
    F: Fn(O, &CollectorBuildContext) -> Result<CollectorPlugin, OptionError>
        + Send
        + Sync
        + 'static,
{
    fn description(&self) -> &'static str {
        self.description
    }
    fn build(
        &self,
        options: &PluginOptions,
        cx: &CollectorBuildContext,
    ) -> Result<CollectorPlugin, Vec<OptionError>> {
        (self.build)(options.decode_all()?, cx).map_err(|e| vec![e])
    }
}

struct TypedSink<O, F> {
    description: &'static str,
    build: F,
    _options: std::marker::PhantomData<fn() -> O>,
}

impl<O, F> SinkFactory for TypedSink<O, F>
where
    O: DeserializeOwned + 'static,
    F: Fn(O, &mut SinkBuildContext<'_>) -> Result<Box<dyn Sink>, OptionError>
        + Send
        + Sync
        + 'static,
{
    fn description(&self) -> &'static str {
        self.description
    }
    fn build(
        &self,
        options: &PluginOptions,
        cx: &mut SinkBuildContext<'_>,
    ) -> Result<Box<dyn Sink>, Vec<OptionError>> {
        (self.build)(options.decode_all()?, cx).map_err(|e| vec![e])
    }
}

/// Plugin factories by type name.
#[derive(Default)]
pub struct Registry {
    collectors: BTreeMap<&'static str, Arc<dyn CollectorFactory>>,
    sinks: BTreeMap<&'static str, Arc<dyn SinkFactory>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a collector type whose options decode into `O`.
    ///
    /// ```
    /// # use vadvisor_api::*;
    /// # use vadvisor_api::collector::Collected;
    /// #[derive(serde::Deserialize, Default)]
    /// #[serde(deny_unknown_fields, default)]
    /// struct Opts { verbose: bool }
    /// struct Hello;
    /// #[async_trait]
    /// impl Collector for Hello {
    ///     fn metrics(&self) -> &[MetricDesc] { &[] }
    ///     async fn collect(&self, _: &CollectContext) -> Result<Collected, CollectError> {
    ///         Ok(Collected::default())
    ///     }
    /// }
    /// let mut r = Registry::new();
    /// r.add_collector("hello", "says hello", |_o: Opts, _cx| Ok(CollectorPlugin::polled(Hello)));
    /// assert!(r.collector("hello").is_some());
    /// ```
    pub fn add_collector<O, F>(&mut self, kind: &'static str, description: &'static str, build: F)
    where
        O: DeserializeOwned + 'static,
        F: Fn(O, &CollectorBuildContext) -> Result<CollectorPlugin, OptionError>
            + Send
            + Sync
            + 'static,
    {
        self.collectors.insert(
            kind,
            Arc::new(TypedCollector {
                description,
                build,
                _options: std::marker::PhantomData,
            }),
        );
    }

    /// Registers a sink type whose options decode into `O`.
    pub fn add_sink<O, F>(&mut self, kind: &'static str, description: &'static str, build: F)
    where
        O: DeserializeOwned + 'static,
        F: Fn(O, &mut SinkBuildContext<'_>) -> Result<Box<dyn Sink>, OptionError>
            + Send
            + Sync
            + 'static,
    {
        self.sinks.insert(
            kind,
            Arc::new(TypedSink {
                description,
                build,
                _options: std::marker::PhantomData,
            }),
        );
    }

    pub fn collector(&self, kind: &str) -> Option<Arc<dyn CollectorFactory>> {
        self.collectors.get(kind).cloned()
    }

    pub fn sink(&self, kind: &str) -> Option<Arc<dyn SinkFactory>> {
        self.sinks.get(kind).cloned()
    }

    pub fn collector_kinds(&self) -> Vec<&'static str> {
        self.collectors.keys().copied().collect()
    }

    pub fn sink_kinds(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }
}
