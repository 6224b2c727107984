//! Shares libvirt's bulk statistics call between scheduled ticks and live collections.
//! Two bulk calls at once collide (libvirt skips a domain that is busy with the other
//! call), so a request that arrives while a call is in flight waits for that call's
//! result instead of starting its own; the groups that call lacks are fetched right
//! after it (never alongside it) and merged in per domain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use vadvisor_api::{
    async_trait, DomainStats, Hypervisor, HypervisorError, StatsGroups, StatsSource,
};

type Fetch = Shared<BoxFuture<'static, Result<Arc<[DomainStats]>, HypervisorError>>>;

struct InFlight {
    id: u64,
    groups: StatsGroups,
    fetch: Fetch,
}

/// The one way the scheduler and live collections fetch bulk statistics.
pub struct BulkCalls {
    hv: Arc<dyn Hypervisor>,
    inflight: Arc<Mutex<Option<InFlight>>>,
    next_id: AtomicU64,
}

impl BulkCalls {
    pub fn new(hv: Arc<dyn Hypervisor>) -> Arc<Self> {
        Arc::new(Self {
            hv,
            inflight: Arc::new(Mutex::new(None)),
            next_id: AtomicU64::new(0),
        })
    }

    pub fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.hv
    }

    /// Starts a call (the caller holds the slot). Spawned, so a caller that goes away
    /// does not cancel it for the others; it empties the slot when it ends.
    fn start(&self, slot: &mut Option<InFlight>, groups: StatsGroups) -> Fetch {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (hv, inflight) = (self.hv.clone(), self.inflight.clone());
        let handle = tokio::spawn(async move {
            let result = hv.domain_stats(groups).await.map(Arc::from);
            let mut slot = inflight.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_some_and(|f| f.id == id) {
                *slot = None;
            }
            result
        });
        let fetch: Fetch = async move {
            handle.await.unwrap_or_else(|e| {
                Err(HypervisorError::Call {
                    call: "virConnectGetAllDomainStats",
                    message: format!("the call's task ended abnormally: {e}"),
                })
            })
        }
        .boxed()
        .shared();
        *slot = Some(InFlight {
            id,
            groups,
            fetch: fetch.clone(),
        });
        fetch
    }
}

/// `first` with the parameters and errors of `more` added, per domain.
fn merge(first: &[DomainStats], more: &[DomainStats]) -> Arc<[DomainStats]> {
    let mut out: Vec<DomainStats> = first.to_vec();
    let index: HashMap<Arc<str>, usize> = out
        .iter()
        .enumerate()
        .map(|(i, d)| (d.domain.uuid.clone(), i))
        .collect();
    for d in more {
        match index.get(&d.domain.uuid) {
            Some(&i) => {
                let target = &mut out[i];
                for (k, v) in &d.params {
                    target.params.insert(k, v.clone());
                }
                target.errors.extend(d.errors.iter().cloned());
            }
            None => out.push(d.clone()),
        }
    }
    out.into()
}

#[async_trait]
impl StatsSource for BulkCalls {
    async fn domain_stats(
        &self,
        groups: StatsGroups,
    ) -> Result<Arc<[DomainStats]>, HypervisorError> {
        let mut wanted = groups | StatsGroups::STATE;
        let mut got: Option<Arc<[DomainStats]>> = None;
        // Each round waits for one call: the one in flight, or a new one when none is.
        loop {
            let (fetch, covered) = {
                let mut slot = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                match &*slot {
                    Some(f) => (f.fetch.clone(), f.groups),
                    None => (self.start(&mut slot, wanted), wanted),
                }
            };
            let stats = fetch.await?;
            got = Some(match got {
                Some(earlier) => merge(&earlier, &stats),
                None => stats,
            });
            wanted = wanted.without(covered);
            if wanted.is_empty() {
                return got.ok_or_else(|| HypervisorError::Disconnected("no statistics".into()));
            }
            wanted = wanted | StatsGroups::STATE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vadvisor_api::{FakeHypervisor, TypedValue};

    fn fake() -> Arc<FakeHypervisor> {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "one",
            &[
                ("state.state", TypedValue::Int(1)),
                ("cpu.time", TypedValue::ULLong(9)),
                ("block.count", TypedValue::UInt(1)),
            ],
        );
        hv.set_delay(Some(Duration::from_millis(200)));
        hv
    }

    #[tokio::test]
    async fn a_request_during_a_call_shares_it() {
        let hv = fake();
        let bulk = BulkCalls::new(hv.clone());
        let (a, b) = tokio::join!(
            bulk.domain_stats(StatsGroups::CPU_TOTAL | StatsGroups::BLOCK),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                bulk.domain_stats(StatsGroups::CPU_TOTAL).await
            }
        );
        assert_eq!(hv.calls(), 1, "one call for both");
        assert!(Arc::ptr_eq(&a.unwrap(), &b.unwrap()), "the same result");
        bulk.domain_stats(StatsGroups::CPU_TOTAL).await.unwrap();
        assert_eq!(hv.calls(), 2, "a later request gets a fresh call");
    }

    #[tokio::test]
    async fn missing_groups_are_fetched_after_the_call_in_flight_not_beside_it() {
        let hv = fake();
        let bulk = BulkCalls::new(hv.clone());
        let (a, b) = tokio::join!(bulk.domain_stats(StatsGroups::CPU_TOTAL), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            bulk.domain_stats(StatsGroups::CPU_TOTAL | StatsGroups::BLOCK)
                .await
        });
        assert!(a.unwrap()[0].get("block.count").is_none());
        let b = b.unwrap();
        assert_eq!(b[0].u64("cpu.time"), Some(9), "from the shared call");
        assert_eq!(b[0].u64("block.count"), Some(1), "from the follow-up call");
        assert_eq!(hv.calls(), 2);
        assert_eq!(hv.max_concurrent_calls(), 1, "never two calls at once");
    }
}
