//! The domain lifecycle event callback (`virConnectDomainEventRegisterAny` for
//! `VIR_DOMAIN_EVENT_ID_LIFECYCLE`), whose `opaque` is a registry key, not a pointer.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virt::connect::Connect;
use virt::error::Error;
use virt::sys;

use super::params::c_array_to_string;

/// One lifecycle event as libvirt delivered it (`VIR_DOMAIN_EVENT_ID_LIFECYCLE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawLifecycle {
    /// Lower-case dashed UUID.
    pub uuid: String,
    pub name: String,
    /// `virDomainEventType` (0 defined … 8 crashed).
    pub event: i32,
    /// The event's detail code (`virDomainEvent<Type>DetailType`).
    pub detail: i32,
}

/// What a lifecycle registration shares with the libvirt callbacks.
pub struct LifecycleShared {
    sink: Box<dyn Fn(RawLifecycle) + Send + Sync>,
    /// libvirt called the free callback (it let go of the registration).
    released_by_libvirt: AtomicBool,
}

/// The live lifecycle registrations, by key. libvirt's `opaque` is the key, never a
/// pointer: the callbacks look the key up here, so a late or repeated callback (or free
/// callback) for a registration that is gone finds nothing and does nothing. Whoever
/// removes an entry first — libvirt's free callback, a failed registration, or `Drop` —
/// releases the shared state, exactly once; keys are never reused.
static LIFECYCLE_SINKS: Mutex<BTreeMap<usize, Arc<LifecycleShared>>> = Mutex::new(BTreeMap::new());
static NEXT_LIFECYCLE_KEY: AtomicUsize = AtomicUsize::new(1);

fn lifecycle_sinks() -> MutexGuard<'static, BTreeMap<usize, Arc<LifecycleShared>>> {
    LIFECYCLE_SINKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The UUID string and name of a domain handed to a callback (local calls, no RPC).
///
/// # Safety
///
/// `dom` must be a valid domain pointer for the duration of the call.
pub(super) unsafe fn domain_identity(dom: sys::virDomainPtr) -> Option<(String, String)> {
    let mut uuid_buf: [c_char; sys::VIR_UUID_STRING_BUFLEN as usize] =
        [0; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: the caller guarantees `dom` is valid; the buffer has the
    // VIR_UUID_STRING_BUFLEN bytes libvirt writes. The UUID is stored in the domain
    // object: no RPC.
    if unsafe { sys::virDomainGetUUIDString(dom, uuid_buf.as_mut_ptr()) } < 0 {
        return None;
    }
    // SAFETY: as above; the name is owned by the domain object (no RPC).
    let name_ptr = unsafe { sys::virDomainGetName(dom) };
    if name_ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, owned by the domain object, copied at once.
    let name = unsafe { CStr::from_ptr(name_ptr) }
        .to_string_lossy()
        .into_owned();
    Some((c_array_to_string(&uuid_buf), name))
}

/// The `virConnectDomainEventCallback` signature of lifecycle events.
type LifecycleCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int;

/// The generic signature `virConnectDomainEventRegisterAny` takes.
pub(super) type GenericCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);

unsafe extern "C" fn lifecycle_trampoline(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let Some(shared) = lifecycle_sinks().get(&opaque.addr()).cloned() else {
        return 0;
    };
    if dom.is_null() {
        return 0;
    }
    // SAFETY: libvirt passes a domain that stays valid for the duration of the callback.
    let Some((uuid, name)) = (unsafe { domain_identity(dom) }) else {
        return 0;
    };
    let raw = RawLifecycle {
        uuid,
        name,
        event,
        detail,
    };
    // Never unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (shared.sink)(raw)));
    0
}

unsafe extern "C" fn lifecycle_free(opaque: *mut c_void) {
    if let Some(shared) = lifecycle_sinks().remove(&opaque.addr()) {
        shared.released_by_libvirt.store(true, Ordering::SeqCst);
    }
}

/// What happened when a [`LifecycleRegistration`] was deregistered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deregistered {
    /// `virConnectDomainEventDeregisterAny` succeeded (it fails on a dead remote
    /// connection after the local part is done, which is harmless).
    pub accepted: bool,
    /// libvirt called the free callback before deregistration returned.
    pub released_by_libvirt: bool,
}

/// A registered `virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
/// …)` for every domain of one connection. The sink runs on libvirt's event-loop thread
/// and must never block. Dropping the registration deregisters it (before the connection
/// it holds is released) and releases the sink exactly once, whatever the driver does:
///
/// - the test and remote drivers call the free callback from the deregistration itself,
///   or, when the deregistration races with an event being dispatched, right after that
///   dispatch (libvirt only marks the callback deleted while dispatching); a remote
///   deregistration on a dead connection does the local part (and the free callback)
///   and then fails its RPC (measured in the lab);
/// - `opaque` is a key into a registry, not a pointer, so a free callback that comes
///   late, never, or after our own release is harmless.
///
/// Unlike [`CloseCallback`], ownership cannot be decided from return codes: when the
/// remote driver's registration RPC fails, libvirt removes the callback without calling
/// the free callback — unless an event dispatch is in progress, in which case it only
/// marks it deleted and the purge after the dispatch does call it. Reclaiming an
/// `Arc::into_raw` pointer after a failed registration could therefore free it twice;
/// with a key, double release is impossible by construction.
pub struct LifecycleRegistration {
    conn: Connect,
    id: c_int,
    key: usize,
    shared: Arc<LifecycleShared>,
    done: bool,
}

impl LifecycleRegistration {
    /// Registers `sink` for the lifecycle events of every domain of `conn`. Events are
    /// delivered only while libvirt's event loop runs (`virEventRunDefaultImpl`). `sink`
    /// runs on the event-loop thread: it must not block and must not call libvirt.
    ///
    /// One registration per connection at a time: libvirt tracks a (callback, event)
    /// pair once per connection and refuses a second one ("event callback already
    /// tracked"); fan out from the one sink instead.
    pub fn register(
        conn: &Connect,
        sink: impl Fn(RawLifecycle) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        Self::register_event_id(conn, sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int, sink)
    }

    /// `register` with another event id, for the failure-path test only: the trampoline
    /// has the lifecycle signature, so libvirt must refuse `event_id`.
    fn register_event_id(
        conn: &Connect,
        event_id: c_int,
        sink: impl Fn(RawLifecycle) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let shared = Arc::new(LifecycleShared {
            sink: Box::new(sink),
            released_by_libvirt: AtomicBool::new(false),
        });
        let key = NEXT_LIFECYCLE_KEY.fetch_add(1, Ordering::Relaxed);
        lifecycle_sinks().insert(key, Arc::clone(&shared));
        let trampoline: LifecycleCallback = lifecycle_trampoline;
        // SAFETY: this is `VIR_DOMAIN_EVENT_CALLBACK(cb)`: both are plain C function
        // pointers of the same size, and libvirt casts the generic pointer back to
        // `virConnectDomainEventCallback` before calling it for
        // VIR_DOMAIN_EVENT_ID_LIFECYCLE, so it is only ever called with its real
        // signature.
        let generic =
            unsafe { std::mem::transmute::<LifecycleCallback, GenericCallback>(trampoline) };
        // SAFETY: the connection is alive for the call; a null domain means "all
        // domains"; the callbacks have the C ABI libvirt expects for lifecycle events
        // (the only id `register` passes; the test passes an id libvirt refuses); `opaque`
        // is an integer key that is never dereferenced.
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                ptr::null_mut(),
                event_id,
                Some(generic),
                ptr::without_provenance_mut(key),
                Some(lifecycle_free),
            )
        };
        if id < 0 {
            let err = Error::last_error();
            lifecycle_sinks().remove(&key);
            return Err(err);
        }
        Ok(Self {
            conn: conn.clone(),
            id,
            key,
            shared,
            done: false,
        })
    }

    /// The libvirt callback id (valid on this connection only).
    pub fn callback_id(&self) -> i32 {
        self.id
    }

    /// A weak handle on the shared sink, to check in tests that it is released.
    pub fn shared_weak(&self) -> std::sync::Weak<LifecycleShared> {
        Arc::downgrade(&self.shared)
    }

    /// Deregisters now and says how it went (dropping does the same, silently).
    pub fn deregister(mut self) -> Deregistered {
        self.release()
    }

    fn release(&mut self) -> Deregistered {
        if self.done {
            return Deregistered {
                accepted: true,
                released_by_libvirt: self.shared.released_by_libvirt.load(Ordering::SeqCst),
            };
        }
        self.done = true;
        // SAFETY: our `conn` clone keeps the connection object alive; `id` came from a
        // successful registration on this connection and is deregistered once (guarded
        // by `done`). On a dead remote connection this fails after the local part.
        let rc = unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.id) };
        let released_by_libvirt = self.shared.released_by_libvirt.load(Ordering::SeqCst);
        // Whatever libvirt did, the registration is dead for us: a late callback finds
        // no entry and does nothing.
        lifecycle_sinks().remove(&self.key);
        Deregistered {
            accepted: rc == 0,
            released_by_libvirt,
        }
    }
}

impl Drop for LifecycleRegistration {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for LifecycleRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleRegistration")
            .field("callback_id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How many lifecycle registrations are alive in this process (for leak tests).
pub fn live_lifecycle_registrations() -> usize {
    lifecycle_sinks().len()
}

#[cfg(test)]
mod tests {
    use super::super::test_conn;
    use super::*;

    /// A domain of its own in `test:///default`, whose state is shared by every
    /// connection of this process: other unit tests read the `test` domain concurrently,
    /// so this one never touches it.
    const FFI_DOMAIN: &str = "<domain type='test'><name>ffi-lifecycle</name>\
        <uuid>33333333-0000-4000-8000-000000000001</uuid>\
        <memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>";

    #[test]
    fn lifecycle_events_on_the_test_driver_and_release() {
        crate::event_loop::init_libvirt();
        // The backend's connection is read-only; state changes need a read-write one.
        // test:///default's state and event queue are shared by all connections of the
        // process, so the read-only connection's callback sees them.
        let ro = test_conn();
        let rw = Connect::open(Some("test:///default")).expect("read-write test:///default");
        let (tx, rx) = std::sync::mpsc::channel();
        let reg = LifecycleRegistration::register(&ro, move |e| {
            if e.name == "ffi-lifecycle" {
                let _ = tx.send(e);
            }
        })
        .expect("registered on a read-only connection");
        let weak = reg.shared_weak();
        let live_before = live_lifecycle_registrations();
        assert!(live_before >= 1);

        let next = || {
            rx.recv_timeout(std::time::Duration::from_secs(2))
                .expect("event within 2 s")
        };
        let dom = rw.define_domain_xml(FFI_DOMAIN).expect("define");
        let defined = next();
        assert_eq!((defined.event, defined.detail), (0, 0));
        assert_eq!(defined.uuid, "33333333-0000-4000-8000-000000000001");
        dom.create().expect("start");
        let e = next();
        assert_eq!((e.event, e.detail), (2, 0));
        dom.suspend().expect("suspend");
        let e = next();
        assert_eq!((e.event, e.detail), (3, 0));
        dom.resume().expect("resume");
        let e = next();
        assert_eq!((e.event, e.detail), (4, 0));
        dom.destroy().expect("destroy");
        let e = next();
        assert_eq!((e.event, e.detail), (5, 1));
        dom.undefine().expect("undefine");
        let e = next();
        assert_eq!((e.event, e.detail), (1, 0));
        assert_eq!(e.name, "ffi-lifecycle");

        // The test driver calls the free callback from the deregistration itself, or,
        // when another test's event is being dispatched at that moment (test:///default's
        // event queue is shared by the whole process), right after that dispatch, which
        // may hold our sink until it ends. Either way the registration is accepted and
        // the sink is released at once or when that dispatch returns.
        let outcome = reg.deregister();
        assert!(outcome.accepted, "deregistration accepted: {outcome:?}");
        let released_by = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while weak.upgrade().is_some() && std::time::Instant::now() < released_by {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(weak.upgrade().is_none(), "sink released within 2 s");
        // No event reaches a deregistered sink (the channel's sender is gone with it).
        let dom = rw.define_domain_xml(FFI_DOMAIN).expect("define again");
        dom.undefine().expect("undefine again");
        assert!(matches!(
            rx.recv_timeout(std::time::Duration::from_millis(300)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        ));

        // Registering again on the same connection works; dropping releases it too. A
        // second registration while one is active is refused (libvirt tracks a callback
        // once per connection), and its sink is released at once.
        let again = LifecycleRegistration::register(&ro, |_| {}).expect("register again");
        let token = Arc::new(());
        let held = Arc::clone(&token);
        let refused = LifecycleRegistration::register(&ro, move |_| drop(Arc::clone(&held)));
        assert!(refused.is_err());
        assert_eq!(Arc::strong_count(&token), 1);
        // Another connection of the same process may register its own.
        let other = test_conn();
        let second = LifecycleRegistration::register(&other, |_| {}).expect("other connection");
        drop(second);
        let weak = again.shared_weak();
        drop(again);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn lifecycle_registration_failure_releases_the_sink() {
        let conn = test_conn();
        let token = Arc::new(());
        let held = Arc::clone(&token);
        // An event id libvirt does not know: refused before anything is stored.
        let err = LifecycleRegistration::register_event_id(&conn, 9999, move |_| {
            let _ = &held;
        })
        .expect_err("unknown event id is refused");
        assert!(!err.message().is_empty());
        assert_eq!(Arc::strong_count(&token), 1, "the sink was released");
    }
}
