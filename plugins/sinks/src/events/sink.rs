//! The `events` sink's loop: stores events in batches, publishes them with their ids to
//! the stream clients, purges old ones; and [`build`], which opens the database.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use vadvisor_api::{async_trait, LifecycleEvent, OptionError, Record, Sink, SinkInput};

use super::config::EventsSinkOptions;
use super::db::{micros, EventDb};
use super::hub::{Hub, LiveEvent};

/// Events stored in one transaction at most.
const WRITE_BATCH: usize = 256;

/// What the handlers and the loop share.
pub struct EventsState {
    pub db: Arc<EventDb>,
    pub hub: Arc<Hub>,
    pub options: EventsSinkOptions,
    /// Where refused stream requests are counted (`event_streams` limit hits).
    pub health: Option<vadvisor_api::HealthView>,
}

impl EventsState {
    /// The sink's state, with its database not opened yet: no I/O.
    pub fn new(o: EventsSinkOptions) -> Result<Self, OptionError> {
        o.validate()?;
        Ok(EventsState {
            db: Arc::new(EventDb::new(&o.path)),
            hub: Hub::new(),
            options: o,
            health: None,
        })
    }

    /// Opens the database (creating the file and its directory if needed).
    pub fn open(&self) -> Result<(), OptionError> {
        self.db
            .ensure_open()
            .map_err(|e| OptionError::at(&["path"], format!("cannot use the event database: {e}")))
    }
}

/// Checks the options and opens the database.
pub fn build(o: EventsSinkOptions) -> Result<EventsState, OptionError> {
    let state = EventsState::new(o)?;
    state.open()?;
    Ok(state)
}

pub struct EventsSink {
    state: Arc<EventsState>,
}

impl EventsSink {
    pub fn new(state: Arc<EventsState>) -> Self {
        Self { state }
    }
}

/// Logs a failing database once per change between working and failing.
#[derive(Default)]
pub(super) struct DbHealth {
    failing: bool,
}

impl DbHealth {
    fn report(&mut self, what: &str, result: &Result<impl Sized, String>) {
        match result {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!("the event database works again");
            }
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "cannot {what} the event database; live streams go on without ids");
            }
            _ => {}
        }
    }
}

impl EventsSink {
    pub(super) async fn store(&self, events: Vec<Arc<LifecycleEvent>>, health: &mut DbHealth) {
        let db = self.state.db.clone();
        let batch = events.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let refs: Vec<&LifecycleEvent> = batch.iter().map(|e| &**e).collect();
            db.insert(&refs)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        health.report("write to", &stored);
        let ids = stored.ok();
        for (i, event) in events.into_iter().enumerate() {
            let id = ids.as_ref().and_then(|ids| ids.get(i).copied());
            self.state.hub.publish(&Arc::new(LiveEvent { id, event }));
        }
    }

    pub(super) async fn purge(&self, health: &mut DbHealth) {
        let db = self.state.db.clone();
        let cutoff = micros(SystemTime::now())
            - i64::try_from(self.state.options.retention.as_micros()).unwrap_or(i64::MAX);
        let result = tokio::task::spawn_blocking(move || db.purge_before(cutoff))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Ok(n) = result {
            if n > 0 {
                tracing::debug!(purged = n, "old lifecycle events purged");
            }
        }
        health.report("purge", &result);
    }
}

/// How often the retention purge runs.
pub(super) fn purge_period(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

#[async_trait]
impl Sink for EventsSink {
    async fn start(&mut self) -> Result<(), OptionError> {
        self.state.open()
    }

    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        // Normally opened by `start`; a sink run without it opens here.
        if let Err(e) = self.state.open() {
            tracing::warn!(error = %e.message, "the event database cannot be opened; live streams go on without ids");
        }
        let mut health = DbHealth::default();
        let mut purge = tokio::time::interval(purge_period(self.state.options.retention));
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let record = tokio::select! {
                _ = input.shutdown.cancelled() => break Ok(()),
                _ = purge.tick() => {
                    self.purge(&mut health).await;
                    continue;
                }
                r = input.records.recv() => r,
            };
            let first = match record {
                Some(Record::Event(e)) => e,
                Some(_) => continue,
                None => break Ok(()),
            };
            // Take whatever else is already waiting, to store it in one transaction.
            let mut batch = vec![first];
            while batch.len() < WRITE_BATCH {
                match input.records.recv().now_or_never() {
                    Some(Some(Record::Event(e))) => batch.push(e),
                    Some(Some(_)) => {}
                    _ => break,
                }
            }
            self.store(batch, &mut health).await;
        };
        self.state.hub.close();
        result
    }
}
