//! The `remote_write` sink: pushes every series of the `prometheus` sink's `/metrics`
//! (same families, names, labels and values, produced by the same code through
//! [`crate::prometheus::emit::Emit`]) plus `external_labels` to a Prometheus
//! remote-write 1.0 receiver (Prometheus, Thanos Receive, Mimir, Cortex,
//! VictoriaMetrics). Several instances may run (`remote_write/primary`, …).
//!
//! Flow: the sink's loop keeps the latest batches (as the Prometheus sink does); after
//! each collection round (or every `send_interval`) it takes a snapshot, keeps the
//! samples not sent yet (per-series timestamp order, [`series::Dedup`]), cuts them into
//! compressed chunks of at most `max_samples_per_send` samples and appends them to the
//! [`buffer`] (memory, or the crash-safe [`disk`] log). The [`send`] loop drains the
//! buffer in order with retries. Nothing here waits on the receiver, so a slow or dead
//! receiver never holds up collectors or other sinks. [`stats`] are exported in
//! `/metrics` and `/healthz`.
//!
//! Module map: [`config`] options, [`proto`] wire messages, [`series`] snapshot to
//! series, [`buffer`]/[`disk`] where unsent samples wait, [`send`] delivery, [`stats`]
//! self-metrics.

pub mod buffer;
pub mod config;
pub mod disk;
pub mod proto;
pub mod send;
pub mod series;
pub mod stats;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost::Message;
use tokio::sync::Notify;
use vadvisor_api::{
    async_trait, HealthView, Hypervisor, OptionError, Record, Registry, Sink, SinkInput,
};

use crate::prometheus::families::LabelOptions;
use crate::prometheus::process::ProcessStats;
use crate::prometheus::selfmetrics::render_agent;
use crate::prometheus::state::{State, StateOptions};
use buffer::{Buffer, MemoryBuffer};
use config::{BufferKind, RemoteWriteOptions};
use disk::DiskBuffer;
use proto::{MetricMetadata, WriteRequest};
use send::{with_buffer, Sender, SharedBuffer, Target};
use series::{Dedup, SeriesBuilder};
use stats::Stats;

/// How long after the first batch of a round the snapshot waits for the others.
const SETTLE: Duration = Duration::from_millis(250);
/// How long the sink tries to deliver what waits when the agent stops.
const EXIT_FLUSH: Duration = Duration::from_millis(1500);

pub fn register(registry: &mut Registry) {
    registry.add_sink(
        "remote_write",
        "Prometheus remote-write 1.0 push of the /metrics series, with a memory or crash-safe disk buffer",
        |o: RemoteWriteOptions, cx| {
            let url = o.check()?;
            let client = send::client(&o).map_err(|e| OptionError::at(&["tls_config"], e))?;
            let mut endpoint = url.clone();
            endpoint.set_query(None);
            endpoint.set_fragment(None);
            let stats = Arc::new(Stats {
                endpoint: endpoint.to_string(),
                buffer_kind: match o.buffer.kind {
                    BufferKind::Memory => "memory",
                    BufferKind::Disk => "disk",
                },
                ..Stats::default()
            });
            // The buffer is opened and the figures registered when the sink runs (a
            // disabled instance is built only to check its options).
            Ok(Box::new(RemoteWriteSink {
                target: Target::new(url, &o),
                client,
                stats,
                health: cx.health.clone(),
                hypervisor: cx.hypervisor.clone(),
                external: o.external_labels(),
                opts: o,
            }))
        },
    );
}

struct RemoteWriteSink {
    opts: RemoteWriteOptions,
    target: Target,
    client: reqwest::Client,
    stats: Arc<Stats>,
    health: HealthView,
    hypervisor: Arc<dyn Hypervisor>,
    external: Vec<(String, String)>,
}

/// The producer half: snapshots into the buffer.
struct Producer {
    id: Arc<str>,
    state: State,
    dedup: Dedup,
    external: Vec<(String, String)>,
    max_samples: usize,
    buffer: SharedBuffer,
    stats: Arc<Stats>,
    health: HealthView,
    hypervisor: Arc<dyn Hypervisor>,
    metadata: Arc<Mutex<Arc<[MetricMetadata]>>>,
    wake: Arc<Notify>,
    last_disk_error: Option<String>,
}

impl Producer {
    /// One snapshot of every series, the new samples of which go to the buffer.
    async fn snapshot(&mut self) {
        let collectors = self.health.collectors();
        let withheld: Vec<String> = collectors
            .iter()
            .filter(|(_, h)| !h.last_success)
            .map(|(id, _)| id.clone())
            .collect();
        let now = SystemTime::now();
        let mut b = SeriesBuilder::new(&self.external, now);
        self.state.emit(&mut b, &withheld, Instant::now());
        let batch_times = self.state.batch_times(&withheld);
        let libvirt = self.hypervisor.status();
        render_agent(&self.health, &libvirt, &batch_times, &mut b);
        ProcessStats::read().render(&mut b);
        *self.metadata.lock().unwrap_or_else(|e| e.into_inner()) =
            Arc::from(std::mem::take(&mut b.metadata));

        let fresh = self.dedup.filter(std::mem::take(&mut b.series));
        self.stats.series_tracked.store(
            self.dedup.tracked() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if fresh.is_empty() {
            return;
        }
        let chunks: Vec<(u32, i64, Arc<[u8]>)> = fresh
            .chunks(self.max_samples)
            .filter_map(|chunk| {
                let oldest = chunk
                    .iter()
                    .flat_map(|t| t.samples.iter().map(|s| s.timestamp))
                    .min()?;
                let raw = WriteRequest {
                    timeseries: chunk.to_vec(),
                    metadata: Vec::new(),
                }
                .encode_to_vec();
                let data = snap::raw::Encoder::new().compress_vec(&raw).ok()?;
                Some((chunk.len() as u32, oldest, Arc::from(data)))
            })
            .collect();
        let error = with_buffer(&self.buffer, &self.stats, move |b| {
            for (n, oldest, data) in chunks {
                b.push(n, oldest, data);
            }
            b.take_error()
        })
        .await;
        if error.is_some() && error != self.last_disk_error {
            if let Some(e) = &error {
                tracing::error!(sink = %self.id, error = %e, "remote_write: disk buffer error; samples are lost (counted as write_error)");
            }
        }
        if error.is_some() {
            self.stats.set_error(error.clone());
        }
        self.last_disk_error = error;
        self.wake.notify_one();
    }
}

#[async_trait]
impl Sink for RemoteWriteSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        let o = &self.opts;
        let buffer: Box<dyn Buffer> = match (o.buffer.kind, &o.buffer.path) {
            (BufferKind::Disk, Some(path)) => {
                let (path, max) = (path.clone(), o.buffer.max_size);
                let opened = tokio::task::spawn_blocking(move || DiskBuffer::open(&path, max))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                match opened {
                    Ok(b) => Box::new(b),
                    Err(e) => {
                        return Err(format!(
                            "remote_write: cannot open the disk buffer in {}: {e}",
                            o.buffer
                                .path
                                .as_deref()
                                .unwrap_or(std::path::Path::new(""))
                                .display()
                        ))
                    }
                }
            }
            _ => Box::new(MemoryBuffer::new(o.queue_config.capacity)),
        };
        let restored = buffer.stats();
        if restored.samples > 0 {
            tracing::info!(sink = %input.id, samples = restored.samples, bytes = restored.bytes,
                "remote_write: unsent samples found in the disk buffer; sending them first");
        }
        self.stats.set_buffer(restored, buffer.lost());
        self.health.add_report(&input.id, self.stats.clone());
        let buffer: SharedBuffer = Arc::new(Mutex::new(buffer));
        let wake = Arc::new(Notify::new());
        let metadata: Arc<Mutex<Arc<[MetricMetadata]>>> =
            Arc::new(Mutex::new(Arc::from(Vec::new())));
        // Not a child of the shutdown token: the sender outlives the loop briefly to flush.
        let stop = vadvisor_api::CancellationToken::new();
        let flush = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = Sender {
            id: input.id.clone(),
            client: self.client.clone(),
            target: self.target,
            buffer: buffer.clone(),
            stats: self.stats.clone(),
            wake: wake.clone(),
            metadata: metadata.clone(),
            max_samples: o.queue_config.max_samples_per_send,
            deadline: o.queue_config.batch_send_deadline,
            min_backoff: o.queue_config.min_backoff,
            max_backoff: o.queue_config.max_backoff,
            flush: flush.clone(),
        };
        let sending = tokio::spawn(sender.run(stop.clone()));
        let mut p = Producer {
            id: input.id.clone(),
            state: State::new(StateOptions {
                labels: LabelOptions {
                    name_label: o.name_label,
                    aliases: o.vadvisor_names,
                },
                grace: o.vm_up_grace,
            }),
            dedup: Dedup::default(),
            external: self.external.clone(),
            max_samples: o.queue_config.max_samples_per_send,
            buffer: buffer.clone(),
            stats: self.stats.clone(),
            health: self.health.clone(),
            hypervisor: self.hypervisor.clone(),
            metadata,
            wake,
            last_disk_error: None,
        };
        let mut ticker = o.send_interval.map(|d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut due: Option<tokio::time::Instant> = None;
        let mut changed = false;
        loop {
            let settle = async {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = input.shutdown.cancelled() => break,
                _ = settle => {
                    due = None;
                    p.snapshot().await;
                    changed = false;
                }
                _ = tick => {
                    if changed {
                        p.snapshot().await;
                        changed = false;
                    }
                }
                record = input.records.recv() => match record {
                    Some(Record::Batch(b)) => {
                        p.state.ingest(b, Instant::now());
                        changed = true;
                        if ticker.is_none() && due.is_none() {
                            due = Some(tokio::time::Instant::now() + SETTLE);
                        }
                    }
                    Some(Record::Event(e)) => p.state.count_event(&e),
                    Some(_) => {}
                    None => break,
                },
            }
        }
        // What was collected last still goes into the buffer (on disk it survives).
        if changed {
            p.snapshot().await;
        }
        // Give the sender a moment to deliver what waits (the agent's exit drain is short).
        flush.store(true, std::sync::atomic::Ordering::Relaxed);
        p.wake.notify_one();
        let drained = async {
            while self
                .stats
                .buffer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .samples
                > 0
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(EXIT_FLUSH, drained).await;
        stop.cancel();
        let _ = sending.await;
        let left = self
            .stats
            .buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if left.samples > 0 {
            match o.buffer.kind {
                BufferKind::Disk => tracing::info!(sink = %input.id, samples = left.samples,
                    "remote_write: unsent samples stay in the disk buffer for the next start"),
                BufferKind::Memory => tracing::warn!(sink = %input.id, samples = left.samples,
                    "remote_write: unsent samples in the memory buffer are lost at exit (use buffer type disk to keep them)"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
