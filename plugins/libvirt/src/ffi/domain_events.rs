//! The domain event callbacks besides lifecycle (`virConnectDomainEventRegisterAny` for
//! `VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION`, `…_JOB_COMPLETED` and
//! `…_METADATA_CHANGE`), with the same ownership rule as the lifecycle one: `opaque` is
//! a key into a registry, never a pointer, so late, repeated or missing free callbacks
//! are harmless and the sink is released exactly once.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virt::connect::Connect;
use virt::error::Error;
use virt::sys;

use super::lifecycle::{domain_identity, GenericCallback};

/// The events this module registers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainEventKind {
    /// A migration's memory copy started an iteration (the first one when it starts).
    MigrationIteration,
    /// A job (migration, save, dump, backup, …) finished, well or not.
    JobCompleted,
    /// The domain's `<metadata>`, `<title>` or `<description>` changed.
    MetadataChange,
}

impl DomainEventKind {
    fn event_id(self) -> c_int {
        let id = match self {
            Self::MigrationIteration => sys::VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
            Self::JobCompleted => sys::VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
            Self::MetadataChange => sys::VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
        };
        id as c_int
    }
}

/// One event as libvirt delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDomainEvent {
    /// Lower-case dashed UUID.
    pub uuid: String,
    pub name: String,
    pub kind: DomainEventKind,
    /// The iteration (migration iteration), or the `virDomainMetadataType` (metadata
    /// change: 0 description, 1 title, 2 element); 0 for a completed job.
    pub detail: i32,
    /// The namespace URI of a changed `<metadata>` element, if any.
    pub nsuri: Option<String>,
}

struct Shared {
    sink: Box<dyn Fn(RawDomainEvent) + Send + Sync>,
    kind: DomainEventKind,
}

static SINKS: Mutex<BTreeMap<usize, Arc<Shared>>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicUsize = AtomicUsize::new(1);

fn sinks() -> MutexGuard<'static, BTreeMap<usize, Arc<Shared>>> {
    SINKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Looks the registration up and hands it the event (never unwinding into C).
///
/// # Safety
///
/// `dom` must be null or a domain pointer valid for the duration of the call.
unsafe fn dispatch(
    dom: sys::virDomainPtr,
    opaque: *mut c_void,
    detail: i32,
    nsuri: Option<String>,
) {
    let Some(shared) = sinks().get(&opaque.addr()).cloned() else {
        return;
    };
    if dom.is_null() {
        return;
    }
    // SAFETY: libvirt passes a domain that stays valid for the duration of the callback.
    let Some((uuid, name)) = (unsafe { domain_identity(dom) }) else {
        return;
    };
    let raw = RawDomainEvent {
        uuid,
        name,
        kind: shared.kind,
        detail,
        nsuri,
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (shared.sink)(raw)));
}

type IterationCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, *mut c_void);
type JobCompletedCallback = unsafe extern "C" fn(
    sys::virConnectPtr,
    sys::virDomainPtr,
    sys::virTypedParameterPtr,
    c_int,
    *mut c_void,
);
type MetadataCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, *const c_char, *mut c_void);

unsafe extern "C" fn iteration_trampoline(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    iteration: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: libvirt's domain is valid for the callback.
    unsafe { dispatch(dom, opaque, iteration, None) }
}

unsafe extern "C" fn job_completed_trampoline(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _params: sys::virTypedParameterPtr,
    _nparams: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: libvirt's domain is valid for the callback; the parameters (owned by
    // libvirt) are not read.
    unsafe { dispatch(dom, opaque, 0, None) }
}

unsafe extern "C" fn metadata_trampoline(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    kind: c_int,
    nsuri: *const c_char,
    opaque: *mut c_void,
) {
    let nsuri = if nsuri.is_null() {
        None
    } else {
        // SAFETY: non-null, NUL-terminated, valid for the callback; copied at once.
        Some(
            unsafe { CStr::from_ptr(nsuri) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    // SAFETY: libvirt's domain is valid for the callback.
    unsafe { dispatch(dom, opaque, kind, nsuri) }
}

unsafe extern "C" fn free_trampoline(opaque: *mut c_void) {
    sinks().remove(&opaque.addr());
}

/// A registered domain event callback for every domain of one connection. The sink
/// runs on libvirt's event-loop thread: it must not block and must not call libvirt.
/// Dropping deregisters it (before the connection it holds is released).
pub struct DomainEventRegistration {
    conn: Connect,
    id: c_int,
    key: usize,
    done: bool,
}

impl DomainEventRegistration {
    pub fn register(
        conn: &Connect,
        kind: DomainEventKind,
        sink: impl Fn(RawDomainEvent) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        sinks().insert(
            key,
            Arc::new(Shared {
                sink: Box::new(sink),
                kind,
            }),
        );
        // SAFETY: `VIR_DOMAIN_EVENT_CALLBACK(cb)`: plain C function pointers of the same
        // size; libvirt casts the generic pointer back to the signature of the event id
        // it was registered for, and each trampoline is registered only for its own id
        // (the match below pairs them).
        let generic = unsafe {
            match kind {
                DomainEventKind::MigrationIteration => {
                    let f: IterationCallback = iteration_trampoline;
                    std::mem::transmute::<IterationCallback, GenericCallback>(f)
                }
                DomainEventKind::JobCompleted => {
                    let f: JobCompletedCallback = job_completed_trampoline;
                    std::mem::transmute::<JobCompletedCallback, GenericCallback>(f)
                }
                DomainEventKind::MetadataChange => {
                    let f: MetadataCallback = metadata_trampoline;
                    std::mem::transmute::<MetadataCallback, GenericCallback>(f)
                }
            }
        };
        // SAFETY: the connection is alive for the call; a null domain means every
        // domain; the callback matches the event id (above); `opaque` is an integer key
        // that is never dereferenced.
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                ptr::null_mut(),
                kind.event_id(),
                Some(generic),
                ptr::without_provenance_mut(key),
                Some(free_trampoline),
            )
        };
        if id < 0 {
            let err = Error::last_error();
            sinks().remove(&key);
            return Err(err);
        }
        Ok(Self {
            conn: conn.clone(),
            id,
            key,
            done: false,
        })
    }
}

impl Drop for DomainEventRegistration {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        // SAFETY: our `conn` clone keeps the connection alive; `id` came from a
        // successful registration on it and is deregistered once (guarded by `done`).
        let _ = unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.id) };
        sinks().remove(&self.key);
    }
}

impl fmt::Debug for DomainEventRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainEventRegistration")
            .field("callback_id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How many of these registrations are alive in this process (for leak tests).
pub fn live_domain_event_registrations() -> usize {
    sinks().len()
}

#[cfg(test)]
mod tests {
    use super::super::test_conn;
    use super::*;

    const FFI_DOMAIN: &str = "<domain type='test'><name>ffi-metadata</name>\
        <uuid>33333333-0000-4000-8000-000000000002</uuid>\
        <memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>";

    #[test]
    fn metadata_change_events_and_release() {
        crate::event_loop::init_libvirt();
        let ro = test_conn();
        let rw = Connect::open(Some("test:///default")).expect("read-write test:///default");
        let (tx, rx) = std::sync::mpsc::channel();
        let before = live_domain_event_registrations();
        let reg =
            DomainEventRegistration::register(&ro, DomainEventKind::MetadataChange, move |e| {
                if e.name == "ffi-metadata" {
                    let _ = tx.send(e);
                }
            })
            .expect("registered");
        // The other kinds register too (nothing triggers them on the test driver).
        let it =
            DomainEventRegistration::register(&ro, DomainEventKind::MigrationIteration, |_| {})
                .expect("iteration");
        let jc = DomainEventRegistration::register(&ro, DomainEventKind::JobCompleted, |_| {})
            .expect("job completed");
        assert_eq!(live_domain_event_registrations(), before + 3);
        let dom = rw.define_domain_xml(FFI_DOMAIN).expect("define");
        dom.set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some("<tag>v</tag>"),
            Some("x"),
            Some("urn:vadv"),
            0,
        )
        .expect("set metadata");
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(2))
            .expect("metadata event within 2 s");
        assert_eq!(e.kind, DomainEventKind::MetadataChange);
        assert_eq!(e.uuid, "33333333-0000-4000-8000-000000000002");
        assert_eq!(e.detail, sys::VIR_DOMAIN_METADATA_ELEMENT as i32);
        assert_eq!(e.nsuri.as_deref(), Some("urn:vadv"));
        dom.undefine().expect("undefine");
        drop((reg, it, jc));
        assert_eq!(live_domain_event_registrations(), before);
    }
}
