//! The `specs` collector: every defined domain's XML converted to vAdvisor's JSON
//! ([`xml_json`]), published as `Record::Spec` for the REST sink's `/api/v1.0/specs`.
//!
//! A push source (so it can react to events): on start and every `refresh` it lists the
//! domains, fetches each one's XML (at most `concurrency` at once) and publishes its
//! spec; a domain no longer listed is published as removed (`spec: None`). Every
//! lifecycle event, and every metadata-change event (labels from `<metadata>` follow at
//! once), refreshes just the domains it names (events that arrive together
//! share one listing); a domain gone from the listing (undefined, or a transient domain
//! that stopped) is published as removed. A failed listing (libvirt not connected yet)
//! is retried after 1 s, doubling up to `refresh`. Errors are logged once per change of
//! state.

mod refresher;
pub mod xml_json;

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio::time::Instant;
use vadvisor_api::{
    async_trait, CollectError, CollectorPlugin, DomainRef, EventSource, LifecycleEvent,
    OptionError, Registry, SourceContext,
};

use refresher::Refresher;

/// Events handled in one go at most (the rest waits for the next round).
const EVENT_BATCH: usize = 1024;
/// First retry after a failed listing (doubling up to `refresh`).
const RETRY_MIN: Duration = Duration::from_secs(1);

/// Options of the `specs` collector.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpecsOptions {
    /// How often every domain's spec is fetched again (besides on lifecycle events).
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// At most this many XML fetches at once.
    pub concurrency: usize,
}

impl Default for SpecsOptions {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(60),
            concurrency: 4,
        }
    }
}

pub struct SpecsCollector {
    options: SpecsOptions,
}

impl SpecsCollector {
    pub fn new(options: SpecsOptions) -> Self {
        Self { options }
    }
}

pub fn register(registry: &mut Registry) {
    registry.add_collector_checked(
        "specs",
        "Domain XML as vAdvisor's JSON specs (for /api/v1.0/specs), refreshed periodically and on lifecycle events",
        |o: &SpecsOptions| {
            if o.refresh < Duration::from_millis(100) {
                return Err(OptionError::at(&["refresh"], "must be at least 100ms"));
            }
            if !(1..=64).contains(&o.concurrency) {
                return Err(OptionError::at(&["concurrency"], "must be between 1 and 64"));
            }
            Ok(())
        },
        |o: SpecsOptions, _cx| Ok(CollectorPlugin::push(SpecsCollector::new(o))),
    );
}

/// What the event subscription produced in one round.
enum Wake {
    Events(Vec<LifecycleEvent>),
    /// Events were lost: only a full refresh is correct.
    Lagged,
    Closed,
}

async fn next_events(rx: &mut Option<Receiver<LifecycleEvent>>) -> Wake {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    let first = match r.recv().await {
        Ok(e) => e,
        Err(RecvError::Lagged(_)) => return Wake::Lagged,
        Err(RecvError::Closed) => return Wake::Closed,
    };
    let mut events = vec![first];
    while events.len() < EVENT_BATCH {
        match r.try_recv() {
            Ok(e) => events.push(e),
            Err(TryRecvError::Lagged(_)) => return Wake::Lagged,
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    Wake::Events(events)
}

/// The next metadata change, as an internal "definition updated" event for the refresher.
async fn next_metadata(rx: &mut Option<Receiver<DomainRef>>) -> Wake {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    match r.recv().await {
        Ok(domain) => Wake::Events(vec![LifecycleEvent {
            at: std::time::SystemTime::now(),
            domain,
            event: 0,
            detail: 1,
            reconciled: false,
        }]),
        Err(RecvError::Lagged(_)) => Wake::Lagged,
        Err(RecvError::Closed) => {
            *rx = None;
            std::future::pending().await
        }
    }
}

#[async_trait]
impl EventSource for SpecsCollector {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), CollectError> {
        // Subscribe before the first listing so no change falls between the two.
        let mut events = cx.hypervisor.lifecycle_events();
        let mut metadata = cx.hypervisor.metadata_changes();
        if events.is_none() {
            tracing::info!(collector = %cx.id, "the hypervisor delivers no lifecycle events; specs are refreshed every {:?} only", self.options.refresh);
        }
        let mut refresher = Refresher::new(
            cx.id.clone(),
            cx.hypervisor.clone(),
            cx.bus.clone(),
            self.options.concurrency,
        );
        let refresh = self.options.refresh;
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a failed listing: when to try again, and the current backoff.
        let mut retry: Option<(Instant, Duration)> = None;
        loop {
            let retry_at = retry.map_or_else(Instant::now, |(at, _)| at);
            let work = tokio::select! {
                _ = cx.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => None,
                _ = tokio::time::sleep_until(retry_at), if retry.is_some() => None,
                wake = next_events(&mut events) => Some(wake),
                wake = next_metadata(&mut metadata) => Some(wake),
            };
            let round = async {
                match work {
                    None | Some(Wake::Lagged) => {
                        retry = if refresher.refresh_all().await {
                            None
                        } else {
                            let backoff = retry.map_or(RETRY_MIN, |(_, b)| (b * 2).min(refresh));
                            Some((Instant::now() + backoff, backoff))
                        };
                    }
                    Some(Wake::Events(list)) => refresher.refresh_domains(&list).await,
                    Some(Wake::Closed) => {
                        tracing::info!(collector = %cx.id, "lifecycle events ended; specs are refreshed every {refresh:?} only");
                        events = None;
                    }
                }
            };
            tokio::select! {
                _ = cx.shutdown.cancelled() => return Ok(()),
                _ = round => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
