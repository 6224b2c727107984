//! The `specs` collector's state: which domains have a published spec, and which
//! failures were already logged (each is logged once when it starts and once when it
//! ends, never on every refresh).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use vadvisor_api::{
    Bus, DomainEntry, DomainRef, DomainSpec, Hypervisor, HypervisorError, LifecycleEvent, Record,
};

use super::xml_json;

/// libvirt's `VIR_DOMAIN_EVENT_UNDEFINED`.
const EVENT_UNDEFINED: u32 = 1;

enum Fetch {
    Spec(serde_json::Value),
    /// The domain vanished between the listing and the fetch.
    Gone,
    Failed(String),
}

pub(super) struct Refresher {
    id: Arc<str>,
    hv: Arc<dyn Hypervisor>,
    bus: Bus,
    concurrency: usize,
    /// Domains whose last published record carried a spec, by UUID.
    published: HashMap<Arc<str>, DomainRef>,
    /// Consecutive failed listings (the first is only a debug message: at start-up the
    /// connection may not be up yet).
    list_failures: u32,
    /// Domains whose spec cannot be fetched or converted right now.
    failing: HashMap<Arc<str>, String>,
}

impl Refresher {
    pub(super) fn new(id: Arc<str>, hv: Arc<dyn Hypervisor>, bus: Bus, concurrency: usize) -> Self {
        Self {
            id,
            hv,
            bus,
            concurrency: concurrency.max(1),
            published: HashMap::new(),
            list_failures: 0,
            failing: HashMap::new(),
        }
    }

    /// Lists the domains; `None` (after logging a new failure) when that fails.
    async fn list(&mut self) -> Option<Vec<DomainEntry>> {
        match self.hv.list_domains().await {
            Ok(list) => {
                if self.list_failures >= 2 {
                    tracing::info!(collector = %self.id, "listing domains works again");
                }
                self.list_failures = 0;
                Some(list)
            }
            Err(e) => {
                self.list_failures = self.list_failures.saturating_add(1);
                match self.list_failures {
                    1 => {
                        tracing::debug!(collector = %self.id, error = %e, "cannot list domains; retrying soon")
                    }
                    2 => tracing::warn!(collector = %self.id, error = %e,
                        "cannot list domains; specs are kept until it works again (logged once)"),
                    _ => {}
                }
                None
            }
        }
    }

    /// Fetches and publishes the spec of every domain; removes those no longer listed.
    /// False when the domains could not be listed.
    pub(super) async fn refresh_all(&mut self) -> bool {
        let Some(list) = self.list().await else {
            return false;
        };
        let listed: std::collections::HashSet<Arc<str>> =
            list.iter().map(|e| e.domain.uuid.clone()).collect();
        self.fetch_and_publish(list).await;
        let gone: Vec<DomainRef> = self
            .published
            .values()
            .filter(|d| !listed.contains(&d.uuid))
            .cloned()
            .collect();
        for domain in gone {
            self.remove(domain);
        }
        self.failing.retain(|uuid, _| listed.contains(uuid));
        true
    }

    /// Refreshes the domains the events name.
    pub(super) async fn refresh_domains(&mut self, events: &[LifecycleEvent]) {
        // The last event of each domain decides.
        let mut wanted: BTreeMap<Arc<str>, &LifecycleEvent> = BTreeMap::new();
        for e in events {
            wanted.insert(e.domain.uuid.clone(), e);
        }
        let Some(list) = self.list().await else {
            // Without a listing, an undefined domain is still known to be gone.
            for e in wanted.values().filter(|e| e.event == EVENT_UNDEFINED) {
                self.remove(e.domain.clone());
            }
            return;
        };
        let entries: Vec<DomainEntry> = list
            .into_iter()
            .filter(|e| wanted.contains_key(&e.domain.uuid))
            .collect();
        for (uuid, e) in &wanted {
            if !entries.iter().any(|entry| &entry.domain.uuid == uuid) {
                // Undefined, or a transient domain that stopped.
                self.remove(e.domain.clone());
            }
        }
        self.fetch_and_publish(entries).await;
    }

    async fn fetch_and_publish(&mut self, entries: Vec<DomainEntry>) {
        let hv = self.hv.clone();
        let mut results = futures::stream::iter(entries)
            .map(|entry| {
                let hv = hv.clone();
                async move {
                    let fetched = match hv.domain_xml(&entry.domain.uuid).await {
                        Ok(xml) => match xml_json::convert(&xml) {
                            Ok(spec) => Fetch::Spec(spec),
                            Err(e) => Fetch::Failed(e.to_string()),
                        },
                        Err(HypervisorError::NoDomain(_)) => Fetch::Gone,
                        Err(e) => Fetch::Failed(e.to_string()),
                    };
                    (entry, fetched)
                }
            })
            .buffer_unordered(self.concurrency);
        while let Some((entry, fetched)) = results.next().await {
            match fetched {
                Fetch::Spec(spec) => {
                    if let Some(previous) = self.failing.remove(&entry.domain.uuid) {
                        tracing::info!(collector = %self.id, domain = %entry.domain.name, %previous, "domain spec available again");
                    }
                    self.publish(entry.domain.clone(), entry.active, Some(spec));
                    self.published
                        .insert(entry.domain.uuid.clone(), entry.domain);
                }
                Fetch::Gone => {
                    self.failing.remove(&entry.domain.uuid);
                    self.remove(entry.domain);
                }
                Fetch::Failed(message) => {
                    if !self.failing.contains_key(&entry.domain.uuid) {
                        tracing::warn!(collector = %self.id, domain = %entry.domain.name, error = %message,
                            "cannot read the domain's spec; the last one is kept");
                    }
                    self.failing.insert(entry.domain.uuid.clone(), message);
                }
            }
        }
    }

    /// Publishes the removal of a domain whose spec was published.
    fn remove(&mut self, domain: DomainRef) {
        if let Some(known) = self.published.remove(&domain.uuid) {
            self.publish(known, false, None);
        }
    }

    fn publish(&self, domain: DomainRef, active: bool, spec: Option<serde_json::Value>) {
        let record = DomainSpec {
            at: SystemTime::now(),
            domain,
            active,
            spec,
        };
        self.bus.publish(Record::Spec(Arc::new(record)));
    }
}
