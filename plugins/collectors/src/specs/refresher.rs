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
    /// A new document, and the hash of the XML it was converted from.
    Spec(serde_json::Value, u64),
    /// The XML is the one the last published spec was converted from.
    Unchanged(Converted),
    /// The domain vanished between the listing and the fetch.
    Gone,
    Failed(String),
}

/// A published spec and the hash of the XML it was converted from.
type Converted = (u64, Arc<DomainSpec>);

pub(super) struct Refresher {
    id: Arc<str>,
    hv: Arc<dyn Hypervisor>,
    bus: Bus,
    concurrency: usize,
    /// Each domain whose last published record carried a spec, by UUID: that record
    /// and the hash of the XML it was converted from. A refresh that reads
    /// the same XML republishes it instead of converting the XML again (a conversion
    /// is about a million instructions; the full refresh reads every domain's XML).
    converted: HashMap<Arc<str>, Converted>,
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
            converted: HashMap::new(),
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
            .converted
            .values()
            .map(|(_, spec)| &spec.domain)
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
        let entries: Vec<(DomainEntry, Option<Converted>)> = entries
            .into_iter()
            .map(|e| {
                let last = self.converted.get(&e.domain.uuid).cloned();
                (e, last)
            })
            .collect();
        let mut results = futures::stream::iter(entries)
            .map(|(entry, last)| {
                let hv = hv.clone();
                async move {
                    let fetched = match hv.domain_xml(&entry.domain.uuid).await {
                        Ok(xml) => {
                            let hash = xml_hash(&xml);
                            match last {
                                Some((h, spec)) if h == hash => Fetch::Unchanged((h, spec)),
                                _ => match xml_json::convert(&xml) {
                                    Ok(spec) => Fetch::Spec(spec, hash),
                                    Err(e) => Fetch::Failed(e.to_string()),
                                },
                            }
                        }
                        Err(HypervisorError::NoDomain(_)) => Fetch::Gone,
                        Err(e) => Fetch::Failed(e.to_string()),
                    };
                    (entry, fetched)
                }
            })
            .buffer_unordered(self.concurrency);
        while let Some((entry, fetched)) = results.next().await {
            match fetched {
                Fetch::Spec(..) | Fetch::Unchanged(_) => {
                    if let Some(previous) = self.failing.remove(&entry.domain.uuid) {
                        tracing::info!(collector = %self.id, domain = %entry.domain.name, %previous, "domain spec available again");
                    }
                    let (record, hash) = match fetched {
                        Fetch::Unchanged((hash, last))
                            if last.active == entry.active && last.domain == entry.domain =>
                        {
                            (last, hash)
                        }
                        Fetch::Unchanged((hash, last)) => {
                            let record = DomainSpec {
                                spec: last.spec.clone(),
                                ..self.record(entry.domain.clone(), entry.active)
                            };
                            (Arc::new(record), hash)
                        }
                        Fetch::Spec(spec, hash) => {
                            let record = DomainSpec {
                                spec: Some(spec),
                                ..self.record(entry.domain.clone(), entry.active)
                            };
                            (Arc::new(record), hash)
                        }
                        Fetch::Gone | Fetch::Failed(_) => continue,
                    };
                    self.converted
                        .insert(entry.domain.uuid.clone(), (hash, record.clone()));
                    self.bus.publish(Record::Spec(record));
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
        if let Some((_, known)) = self.converted.remove(&domain.uuid) {
            self.publish(known.domain.clone(), false, None);
        }
    }

    fn publish(&self, domain: DomainRef, active: bool, spec: Option<serde_json::Value>) {
        let record = DomainSpec {
            spec,
            ..self.record(domain, active)
        };
        self.bus.publish(Record::Spec(Arc::new(record)));
    }

    /// A record of `domain` without a spec, stamped now.
    fn record(&self, domain: DomainRef, active: bool) -> DomainSpec {
        DomainSpec {
            at: SystemTime::now(),
            domain,
            active,
            spec: None,
        }
    }
}

/// A 64-bit hash of a domain's XML: equal hashes mean the same XML (a collision would
/// keep the previous spec until the XML changes again).
fn xml_hash(xml: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    xml.hash(&mut h);
    h.finish()
}
