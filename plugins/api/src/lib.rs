//! # vadvisor-api — the plugin contract
//!
//! Everything a collector or sink plugin needs, and nothing else: the data model
//! ([`model`]), metric declarations ([`metric`]), the [`Collector`], [`EventSource`] and
//! [`Sink`] traits, the [`Registry`] of plugin factories with typed options, the
//! [`Hypervisor`] trait that hides libvirt, and [`FakeHypervisor`], an in-memory
//! implementation for tests. A third-party plugin depends on this crate alone.

pub mod collector;
pub mod event_names;
pub mod fake;
pub mod health;
pub mod host;
pub mod hypervisor;
pub mod metric;
pub mod model;
pub mod options;
pub mod params;
pub mod registry;
pub mod sink;
pub mod typed_value;
pub mod uuid;

pub use async_trait::async_trait;
/// The web framework of [`HttpRoutes`] (feature `http`; collectors do without).
#[cfg(feature = "http")]
pub use axum;
pub use collector::{
    CollectContext, CollectError, Collected, Collector, EventSource, SourceContext, StatsSource,
};
pub use fake::FakeHypervisor;
pub use health::{
    CollectorHealth, DomainHealth, Health, HealthView, SinkFigure, SinkHealth, SinkReport,
};
pub use host::{version_string, JobStats, Machine, NodeInfo, NodeStats};
pub use hypervisor::{
    ConnectionStatus, DomainEntry, DomainStats, Hypervisor, HypervisorError, IndexedKey, Params,
    Room, Section, SortMemo, StatsGroups, TypedValue,
};
pub use metric::{JsonPath, MetricDesc, MetricKind, Unit};
pub use model::{
    Batch, DomainRef, DomainSamples, DomainSpec, DomainState, Labels, LifecycleEvent, Record,
    Sample,
};
pub use options::{InstanceOverride, OptionError, PluginOptions};
pub use registry::{
    CollectorBuildContext, CollectorFactory, CollectorPlugin, Registry, SinkBuildContext,
    SinkFactory,
};
#[cfg(feature = "http")]
pub use sink::HttpRoutes;
pub use sink::{is_core_path, Bus, LiveCollect, RecordStream, Sink, SinkInput};
pub use tokio_util::sync::CancellationToken;
pub use uuid::normalize_uuid;
