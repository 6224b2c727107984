//! The [`Registry`] of plugin factories. `main` fills it with the built-ins; a
//! third-party plugin registers the same way, with a typed options struct, an optional
//! pure check of the options, and a build function.
//!
//! Two steps, kept apart so that validating a config creates nothing:
//! - `validate`: decode the options and run the check — no I/O. Every instance is
//!   validated, enabled or not.
//! - `build`: make the running object (for a sink: also add its HTTP routes) — still
//!   no I/O; files, sockets and connections are opened by `Sink::start` or in `run`.
//!   Only enabled instances are built, once.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::collector::{Collector, EventSource};
use crate::health::HealthView;
use crate::hypervisor::Hypervisor;
use crate::options::{OptionError, PluginOptions};
#[cfg(feature = "http")]
use crate::sink::HttpRoutes;
use crate::sink::{LiveCollect, Sink};

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
    #[cfg(feature = "http")]
    pub http: &'a mut HttpRoutes,
    /// One fresh collection of the configured collectors on request, shared by
    /// concurrent callers.
    pub live: Arc<dyn LiveCollect>,
    /// The agent's health figures, read-only.
    pub health: HealthView,
    #[cfg(not(feature = "http"))]
    pub _lifetime: std::marker::PhantomData<&'a ()>,
}

/// A pure check of decoded options (no I/O).
type Check<O> = Box<dyn Fn(&O) -> Result<(), OptionError> + Send + Sync>;

pub trait CollectorFactory: Send + Sync + 'static {
    fn description(&self) -> &'static str;
    /// Checks the options without building anything (no I/O); every problem found is
    /// returned.
    fn validate(&self, options: &PluginOptions) -> Result<(), Vec<OptionError>>;
    /// Builds an instance; every problem found in the options is returned.
    fn build(
        &self,
        options: &PluginOptions,
        cx: &CollectorBuildContext,
    ) -> Result<CollectorPlugin, Vec<OptionError>>;
}

pub trait SinkFactory: Send + Sync + 'static {
    fn description(&self) -> &'static str;
    /// Checks the options without building anything (no I/O); every problem found is
    /// returned.
    fn validate(&self, options: &PluginOptions) -> Result<(), Vec<OptionError>>;
    /// Builds an instance; every problem found in the options is returned.
    fn build(
        &self,
        options: &PluginOptions,
        cx: &mut SinkBuildContext<'_>,
    ) -> Result<Box<dyn Sink>, Vec<OptionError>>;
}

struct TypedCollector<O, F> {
    description: &'static str,
    check: Check<O>,
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
    fn validate(&self, options: &PluginOptions) -> Result<(), Vec<OptionError>> {
        (self.check)(&options.decode_all::<O>()?).map_err(|e| vec![e])
    }
    fn build(
        &self,
        options: &PluginOptions,
        cx: &CollectorBuildContext,
    ) -> Result<CollectorPlugin, Vec<OptionError>> {
        let options: O = options.decode_all()?;
        (self.check)(&options).map_err(|e| vec![e])?;
        (self.build)(options, cx).map_err(|e| vec![e])
    }
}

struct TypedSink<O, F> {
    description: &'static str,
    check: Check<O>,
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
    fn validate(&self, options: &PluginOptions) -> Result<(), Vec<OptionError>> {
        (self.check)(&options.decode_all::<O>()?).map_err(|e| vec![e])
    }
    fn build(
        &self,
        options: &PluginOptions,
        cx: &mut SinkBuildContext<'_>,
    ) -> Result<Box<dyn Sink>, Vec<OptionError>> {
        let options: O = options.decode_all()?;
        (self.check)(&options).map_err(|e| vec![e])?;
        (self.build)(options, cx).map_err(|e| vec![e])
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
        self.add_collector_checked(kind, description, |_: &O| Ok(()), build);
    }

    /// Like [`Registry::add_collector`], with `check`, a pure check of the decoded
    /// options run when a config is validated (also for disabled instances) and
    /// before every build.
    pub fn add_collector_checked<O, C, F>(
        &mut self,
        kind: &'static str,
        description: &'static str,
        check: C,
        build: F,
    ) where
        O: DeserializeOwned + 'static,
        C: Fn(&O) -> Result<(), OptionError> + Send + Sync + 'static,
        F: Fn(O, &CollectorBuildContext) -> Result<CollectorPlugin, OptionError>
            + Send
            + Sync
            + 'static,
    {
        self.collectors.insert(
            kind,
            Arc::new(TypedCollector {
                description,
                check: Box::new(check),
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
        self.add_sink_checked(kind, description, |_: &O| Ok(()), build);
    }

    /// Like [`Registry::add_sink`], with `check`, a pure check of the decoded options
    /// run when a config is validated (also for disabled instances) and before every
    /// build.
    pub fn add_sink_checked<O, C, F>(
        &mut self,
        kind: &'static str,
        description: &'static str,
        check: C,
        build: F,
    ) where
        O: DeserializeOwned + 'static,
        C: Fn(&O) -> Result<(), OptionError> + Send + Sync + 'static,
        F: Fn(O, &mut SinkBuildContext<'_>) -> Result<Box<dyn Sink>, OptionError>
            + Send
            + Sync
            + 'static,
    {
        self.sinks.insert(
            kind,
            Arc::new(TypedSink {
                description,
                check: Box::new(check),
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
