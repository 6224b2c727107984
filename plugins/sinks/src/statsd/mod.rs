//! The `statsd` sink: every `interval`, pushes the latest values of every collector to a
//! StatsD server over UDP, with vAdvisor's names (`vm.<uuid>[.<device>].<metric>`) —
//! cumulative counters as gauges (default) or as deltas (`|c`), never vAdvisor's
//! meaningless cumulative `|c`; `up` per VM, and `up` 0 for VMs that vanished;
//! optional DogStatsD tags. Lines are batched into datagrams of at most
//! `max_packet_size` bytes. A server that is down or does not resolve is logged once
//! and retried every interval; on shutdown one last send is made.
//!
//! Modules: `cli` (vAdvisor's `--statsd-*` flags), `options` (options and validation), `naming` (series names),
//! `render` (batches → points), `counters` (delta state), `presence` (vanished
//! VMs), `latest` (latest batch per collector), `report` (one send's lines),
//! `encode` (line format and packing), `transport` (UDP and error logging).

pub mod cli;
mod counters;
mod encode;
mod latest;
mod naming;
mod options;
mod presence;
mod render;
mod report;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use vadvisor_api::{async_trait, Record, Registry, Sink, SinkInput};

pub use naming::TagStyle;
pub use options::{CounterMode, StatsdOptions};
use report::Reporter;
use transport::Transport;

/// Longest wait for DNS during an ordinary send (and never longer than the interval).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for DNS during the last send at shutdown.
const FINAL_RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

pub fn register(registry: &mut Registry) {
    registry.add_sink_checked(
        "statsd",
        "Pushes the latest values to a StatsD server over UDP (vAdvisor's names, counters as gauges or deltas, optional DogStatsD tags)",
        StatsdOptions::validate,
        |o: StatsdOptions, cx| Ok(Box::new(StatsdSink { id: cx.id.clone(), options: o })),
    );
}

struct StatsdSink {
    id: Arc<str>,
    options: StatsdOptions,
}

#[async_trait]
impl Sink for StatsdSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        let o = self.options;
        let mut state = SendState {
            reporter: Reporter::new(&o),
            transport: Transport::new(self.id.clone(), o.bare_host(), o.port, o.interval),
            max_packet_size: o.max_packet_size,
            warned_oversize: false,
            sink: self.id.clone(),
        };
        tracing::info!(
            sink = %self.id,
            "will push metrics to the StatsD server {} every {}",
            state.transport.target(),
            humantime_serde::re::humantime::format_duration(o.interval),
        );
        let resolve_timeout = RESOLVE_TIMEOUT.min(o.interval);
        let mut ticker = tokio::time::interval_at(Instant::now() + o.interval, o.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = input.shutdown.cancelled() => break,
                record = input.records.recv() => match record {
                    Some(Record::Batch(b)) => state.reporter.ingest(b, std::time::Instant::now()),
                    Some(_) => {}
                    None => break,
                },
                _ = ticker.tick() => {
                    tokio::select! {
                        _ = state.send(resolve_timeout) => {}
                        _ = input.shutdown.cancelled() => break,
                    }
                }
            }
        }
        state.send(FINAL_RESOLVE_TIMEOUT).await;
        Ok(())
    }
}

struct SendState {
    reporter: Reporter,
    transport: Transport,
    max_packet_size: usize,
    warned_oversize: bool,
    sink: Arc<str>,
}

impl SendState {
    async fn send(&mut self, resolve_timeout: Duration) {
        let entries = self.reporter.entries(std::time::Instant::now());
        let packed = encode::pack(&entries, self.max_packet_size);
        if packed.oversize > 0 && !std::mem::replace(&mut self.warned_oversize, true) {
            tracing::warn!(
                sink = %self.sink,
                dropped = packed.oversize,
                "StatsD lines longer than max_packet_size ({} bytes) are not sent; raise it (logged once)",
                self.max_packet_size,
            );
        }
        self.transport
            .send_and_log(&packed.datagrams, resolve_timeout)
            .await;
    }
}

#[cfg(test)]
mod tests;
